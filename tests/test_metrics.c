/*
 * /metrics of all five daemons, read by Prometheus's own checker: each
 * daemon runs on real servers with a little traffic behind it, and
 * `promtool check metrics` must accept its page without a single
 * complaint (format errors and lint warnings alike: a counter without
 * _total, a family without # HELP, a unit not in base units).
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "store.h"

static th_daemon cmd, query, relay, proj, saga;
static char dbname[64], conninfo[512], tag[40], stream_name[64];
static char envs[8][700];

/* Runs promtool on text; its exit status, with what it said in out. */
static int
promtool_check(const char *text, char *out, size_t size)
{
    char path[] = "/tmp/es-metrics-XXXXXX", cmdline[200];
    FILE *p;
    size_t n = 0;
    int fd = mkstemp(path), st;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    snprintf(cmdline, sizeof cmdline, "promtool check metrics < %s 2>&1", path);
    ck_assert_ptr_nonnull(p = popen(cmdline, "r"));
    while (n + 1 < size && !feof(p)) {
        size_t got = fread(out + n, 1, size - 1 - n, p);
        if (got == 0)
            break;
        n += got;
    }
    out[n] = '\0';
    st = pclose(p);
    unlink(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void
check_daemon(const char *name, const th_daemon *d, const char *must_have)
{
    th_response r;
    char said[4096], type[128];
    int rc;

    ck_assert_int_eq(th_http(d->port, "GET", "/metrics", NULL, NULL, &r), 200);
    ck_assert_ptr_nonnull(th_header(&r, "Content-Type", type, sizeof type));
    ck_assert_msg(strncmp(type, "text/plain; version=0.0.4", 25) == 0, "%s: Content-Type %s",
                  name, type);
    ck_assert_msg(strstr(r.body, must_have) != NULL, "%s: no %s in\n%s", name, must_have, r.body);
    rc = promtool_check(r.body, said, sizeof said);
    ck_assert_msg(rc == 0 && said[0] == '\0',
                  "promtool check metrics on %s's /metrics: exit %d:\n%s\n--- the page:\n%s",
                  name, rc, said, r.body);
    th_response_free(&r);
}

START_TEST(promtool_accepts_every_daemons_metrics)
{
    es_store *s;
    es_error err;
    th_response r;
    bool active = false;

    /* promtool is a dependency (scripts/deps.sh): its absence is a failure */
    ck_assert_msg(system("command -v promtool >/dev/null 2>&1") == 0,
                  "promtool is not installed (scripts/deps.sh installs it)");

    /* some traffic, so that the counters and histograms have values */
    ck_assert_int_eq(es_store_open(&s, conninfo, &err), ES_OK);
    for (int i = 0; i < 5; i++) {
        es_new_event e = {NULL, "MetricsProbed", 1, "{}", NULL};
        es_append_req req = {"metricsprobe-1", ES_EXPECT_ANY, &e, 1};
        es_append_result res;

        ck_assert_int_eq(es_store_append(s, &req, &res), ES_OK);
    }
    es_store_close(s);
    for (int i = 0; i < 100 && !active; i++) {
        ck_assert_int_eq(th_http(relay.port, "GET", "/metrics", NULL, NULL, &r), 200);
        active = strstr(r.body, "es_relay_active 1") != NULL;
        th_response_free(&r);
        if (!active)
            usleep(100 * 1000);
    }
    ck_assert_msg(active, "the relay did not become active");
    ck_assert_int_eq(th_http(cmd.port, "GET", "/v1/streams/metricsprobe-1", NULL, NULL, &r), 200);
    th_response_free(&r);
    ck_assert_int_eq(th_http(query.port, "GET", "/v1/nothing-here", NULL, NULL, &r), 404);
    th_response_free(&r);

    check_daemon("es-command", &cmd, "es_command_commands_total{outcome=\"ok\"}");
    check_daemon("es-query", &query, "es_query_http_request_duration_seconds_count");
    check_daemon("es-relay", &relay, "es_relay_published_total");
    check_daemon("es-projector", &proj, "es_projector_applied_total{projection=");
    check_daemon("es-saga", &saga, "es_saga_gateway_calls_total{gateway=");
}
END_TEST

int
main(void)
{
    Suite *su = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    const char *env[9];
    int rc;

    th_db_create(dbname, sizeof dbname, conninfo, sizeof conninfo);
    th_redis_flush();
    th_unique(tag, sizeof tag, "mx");
    th_unique(stream_name, sizeof stream_name, "MX");
    for (char *c = stream_name; *c; c++)
        if (*c == '-')
            *c = '_';
    snprintf(envs[0], sizeof envs[0], "ES_PG_CONNINFO=%s", conninfo);
    snprintf(envs[1], sizeof envs[1], "ES_NATS_URL=%s", getenv("ES_NATS_URL"));
    snprintf(envs[2], sizeof envs[2], "ES_RELAY_STREAM=%s", stream_name);
    snprintf(envs[3], sizeof envs[3], "ES_RELAY_SUBJECT_PREFIX=%s.events", tag);
    snprintf(envs[4], sizeof envs[4], "ES_RELAY_WAKE_SUBJECT=%s.wake", tag);
    snprintf(envs[5], sizeof envs[5], "ES_COMMAND_SUBJECT_PREFIX=%s.cmd", tag);
    snprintf(envs[6], sizeof envs[6], "ES_GATEWAY_NOTIFICATION_TRANSPORT=null");
    snprintf(envs[7], sizeof envs[7], "ES_RELAY_POLL_MS=20");
    for (int i = 0; i < 8; i++)
        env[i] = envs[i];
    env[8] = NULL;
    th_daemon_start(&cmd, "es-command", "ES_COMMAND_PORT", env);
    th_daemon_start(&relay, "es-relay", "ES_RELAY_PORT", env);
    th_daemon_start(&proj, "es-projector", "ES_PROJECTOR_PORT", env);
    th_daemon_start(&query, "es-query", "ES_QUERY_PORT", env);
    th_daemon_start(&saga, "es-saga", "ES_SAGA_PORT", env);

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, promtool_accepts_every_daemons_metrics);
    suite_add_tcase(su, tc);
    rc = th_run(su);
    rc |= th_daemon_stop(&saga);
    rc |= th_daemon_stop(&query);
    rc |= th_daemon_stop(&proj);
    rc |= th_daemon_stop(&relay);
    rc |= th_daemon_stop(&cmd);
    th_stream_delete(stream_name);
    nats_Close();
    th_db_drop(dbname);
    return rc;
}
