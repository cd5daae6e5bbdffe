/*
 * es-command, the command service: validates commands against aggregate
 * state rebuilt from the event store and appends the resulting events,
 * over HTTP (routes.c) and over NATS request/reply (bus.c).  Appends from
 * all threads are group-committed by one es_committer.  Configuration is
 * read from the environment (command/README.md); it runs until SIGINT or
 * SIGTERM.
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "env.h"
#include "log.h"
#include "subscriptions.h"

void
app_committed(void *arg)
{
    app *a = arg;

    if (a->bus != NULL)
        bus_wake(a->bus);
    if (a->subs != NULL)
        subs_wake(a->subs);
}

int
main(void)
{
    static app a;
    es_http_config http = {0};
    es_error err;
    es_status st;
    int rc = 1;
    const char *scheme;
    const char *nats_url = es_nats_url();
    char shown[256];

    snprintf(a.conninfo, sizeof a.conninfo, "%s", es_pg_conninfo());
    snprintf(a.contexts, sizeof a.contexts, "%s", es_env_str("ES_COMMAND_CONTEXTS", ""));
    snprintf(a.subject_prefix, sizeof a.subject_prefix, "%s", es_env_str("ES_COMMAND_SUBJECT_PREFIX", "cmd"));
    a.cfg.snapshot_every = (int)es_env_long("es-command", "ES_SNAPSHOT_EVERY", 50, 1, 1000000);
    a.cfg.conflict_retries = (int)es_env_long("es-command", "ES_CONFLICT_RETRIES", 10, 0, 1000);
    a.cfg.fraud_domain_limit = (int)es_env_long("es-command", "ES_FRAUD_DOMAIN_LIMIT", 1000, 1, 1000000000);
    a.cfg.fraud_window_seconds = (int)es_env_long("es-command", "ES_FRAUD_WINDOW_SECONDS", 3600, 1, 86400 * 365);
    snprintf(a.cfg.fraud_blocked_domains, sizeof a.cfg.fraud_blocked_domains, "%s",
             es_env_str("ES_FRAUD_BLOCKED_DOMAINS", "fraud.test,blocked.example"));
    snprintf(a.cfg.shipping_unsupported, sizeof a.cfg.shipping_unsupported, "%s",
             es_env_str("ES_SHIPPING_UNSUPPORTED", "XX,ZZ"));
    pthread_mutex_init(&a.envs_mu, NULL);

    http.bind = es_env_str("ES_COMMAND_BIND", "127.0.0.1");
    http.port = (unsigned)es_env_long("es-command", "ES_COMMAND_PORT", 8080, 1, 65535);
    http.threads = (unsigned)es_env_long("es-command", "ES_HTTP_THREADS", 2, 1, 1024);
    http.workers = (unsigned)es_env_long("es-command", "ES_HTTP_WORKERS", 32, 0, 1024);
    http.quick = routes_quick;
    http.guard = routes_guard;
    http.body_max = (size_t)es_env_long("es-command", "ES_BODY_MAX", 1024 * 1024, 1024, 64L * 1024 * 1024);
    scheme = es_daemon_http_tls(&http);

    routes_daemon(&a);
    if (es_daemon_start(&a.daemon, &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    if ((st = subs_start(&a.subs, a.conninfo, &err)) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    if (es_committer_create(&a.committer, a.conninfo,
                            (int)es_env_long("es-command", "ES_COMMIT_CONNECTIONS", 1, 1, 64),
                            256, &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    if (es_auth_start(&a.auth, a.conninfo, strcmp(nats_url, "off") != 0 ? nats_url : NULL,
                      &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    if (!es_auth_enabled(a.auth))
        es_log(ES_LOG_WARNING, "access control is off (ES_AUTH=off): every request is let through");
    /* The bus first: HTTP threads read a.bus (readiness), so it is set
     * before any of them starts. */
    if (strcmp(nats_url, "off") != 0 &&
        bus_start(&a.bus, &a, nats_url, (int)es_env_long("es-command", "ES_NATS_SUBSCRIBERS", 16, 1, 32), &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    es_committer_set_queue_max(a.committer,
                               (size_t)es_env_long("es-command", "ES_COMMIT_QUEUE_MAX",
                                                   ES_COMMIT_QUEUE_DEFAULT, 1, 1000000));
    es_committer_on_commit(a.committer, app_committed, &a);
    if (es_http_start(&a.http, &http, routes_handle, &a, &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    es_log(ES_LOG_INFO, "listening on %s://%s:%u, commands on %s.* at %s", scheme, http.bind,
           http.port, a.subject_prefix,
           a.bus ? es_url_redact(nats_url, shown, sizeof shown) : "no NATS");
    es_daemon_wait();
    rc = 0;
done:
    /* the subscriptions first: each stream gets its last message (cut,
     * shutting_down) before the HTTP server ends what is left */
    subs_stop(a.subs);
    es_http_stop(a.http);
    bus_stop(a.bus);
    es_committer_destroy(a.committer);     /* drains; may still wake the relay */
    bus_free(a.bus);
    subs_free(a.subs);
    app_envs_close(&a);
    es_auth_stop(a.auth);
    es_daemon_stop();
    nats_Close();
    return rc;
}
