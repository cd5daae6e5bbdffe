/*
 * es-command, the command service: validates commands against aggregate
 * state rebuilt from the event store and appends the resulting events,
 * over HTTP (routes.c) and over NATS request/reply (bus.c).  Appends from
 * all threads are group-committed by one es_committer.  Configuration is
 * read from the environment (command/README.md); it runs until SIGINT or
 * SIGTERM.
 */
#include <errno.h>
#include <nats/nats.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"

static const char *
env_str(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

static long
env_long(const char *name, long def, long min, long max)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (v == NULL || v[0] == '\0')
        return def;
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || n < min || n > max) {
        fprintf(stderr, "es-command: %s=\"%s\" is not a number from %ld to %ld\n", name, v, min, max);
        exit(2);
    }
    return n;
}

int
main(void)
{
    static app a;
    es_http_config http;
    es_error err;
    sigset_t sigs;
    int sig, rc = 1;
    const char *nats_url = env_str("ES_NATS_URL", "nats://127.0.0.1:54222");

    snprintf(a.conninfo, sizeof a.conninfo, "%s",
             env_str("ES_PG_CONNINFO", "host=127.0.0.1 port=55432 user=postgres dbname=es"));
    snprintf(a.contexts, sizeof a.contexts, "%s", env_str("ES_COMMAND_CONTEXTS", ""));
    snprintf(a.subject_prefix, sizeof a.subject_prefix, "%s", env_str("ES_COMMAND_SUBJECT_PREFIX", "cmd"));
    a.cfg.snapshot_every = (int)env_long("ES_SNAPSHOT_EVERY", 50, 1, 1000000);
    a.cfg.conflict_retries = (int)env_long("ES_CONFLICT_RETRIES", 10, 0, 1000);
    a.cfg.fraud_domain_limit = (int)env_long("ES_FRAUD_DOMAIN_LIMIT", 1000, 1, 1000000000);
    a.cfg.fraud_window_seconds = (int)env_long("ES_FRAUD_WINDOW_SECONDS", 3600, 1, 86400 * 365);
    snprintf(a.cfg.fraud_blocked_domains, sizeof a.cfg.fraud_blocked_domains, "%s",
             env_str("ES_FRAUD_BLOCKED_DOMAINS", "fraud.test,blocked.example"));
    snprintf(a.cfg.shipping_unsupported, sizeof a.cfg.shipping_unsupported, "%s",
             env_str("ES_SHIPPING_UNSUPPORTED", "XX,ZZ"));
    pthread_mutex_init(&a.envs_mu, NULL);

    http.bind = env_str("ES_COMMAND_BIND", "127.0.0.1");
    http.port = (unsigned)env_long("ES_COMMAND_PORT", 8080, 1, 65535);
    http.threads = (unsigned)env_long("ES_HTTP_THREADS", 32, 1, 1024);
    http.body_max = (size_t)env_long("ES_BODY_MAX", 1024 * 1024, 1024, 64L * 1024 * 1024);

    /* Signals are taken by sigwait below, not by whichever thread. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (es_committer_create(&a.committer, a.conninfo,
                            (int)env_long("ES_COMMIT_CONNECTIONS", 2, 1, 64), 256, &err) != ES_OK) {
        fprintf(stderr, "es-command: %s\n", err.message);
        goto done;
    }
    if (es_http_start(&a.http, &http, routes_handle, &a, &err) != ES_OK) {
        fprintf(stderr, "es-command: %s\n", err.message);
        goto done;
    }
    if (strcmp(nats_url, "off") != 0 &&
        bus_start(&a.bus, &a, nats_url, (int)env_long("ES_NATS_SUBSCRIBERS", 4, 1, 32), &err) != ES_OK) {
        fprintf(stderr, "es-command: %s\n", err.message);
        goto done;
    }
    if (a.bus != NULL)
        es_committer_on_commit(a.committer, bus_wake, a.bus);
    fprintf(stderr, "es-command: listening on http://%s:%u, commands on %s.* at %s\n", http.bind,
            http.port, a.subject_prefix, a.bus ? nats_url : "no NATS");
    while (sigwait(&sigs, &sig) != 0)
        ;
    fprintf(stderr, "es-command: stopping on signal %d\n", sig);
    rc = 0;
done:
    es_http_stop(a.http);
    bus_stop(a.bus);
    es_committer_destroy(a.committer);     /* drains; may still wake the relay */
    bus_free(a.bus);
    app_envs_close(&a);
    nats_Close();
    return rc;
}
