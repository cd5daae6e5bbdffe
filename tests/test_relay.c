/*
 * Integration and crash test of es-relay on real PostgreSQL and NATS: two
 * relays run (one active, one standby) while events are appended; the
 * active one is killed with SIGKILL mid-stream, the standby takes over,
 * and in the end the JetStream stream must be exactly the store's feed:
 * message n is the feed's n-th event (same id, same position), none
 * missing, none twice.
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "store.h"

static th_daemon relays[2];
static char stream_name[64], prefix[64], envs[5][700];

static bool
active(const th_daemon *d)
{
    th_response r;
    bool yes = th_http(d->port, "GET", "/metrics", NULL, NULL, &r) == 200 &&
               strstr(r.body, "es_relay_active 1") != NULL;

    th_response_free(&r);
    return yes;
}

static void
append_some(es_store *s, const char *tag, int n)
{
    for (int i = 0; i < n; i++) {
        char stream[80], data[64];
        es_new_event e = {NULL, "Relayed", 1, data, NULL};
        es_append_req req = {stream, ES_EXPECT_ANY, &e, 1};
        es_append_result res;

        snprintf(stream, sizeof stream, "relay%s-%d", tag, i % 7);
        snprintf(data, sizeof data, "{\"i\":%d}", i);
        ck_assert_int_eq(es_store_append(s, &req, &res), ES_OK);
        if (i % 25 == 0)
            usleep(10 * 1000);
    }
}

START_TEST(stream_is_the_feed_after_a_crash)
{
    es_store *s;
    es_error err;
    int a, waited;

    ck_assert_int_eq(es_store_open(&s, th_conninfo(), &err), ES_OK);

    append_some(s, "a", 150);
    /* exactly one relay is active */
    for (waited = 0; waited < 100 && !active(&relays[0]) && !active(&relays[1]); waited++)
        usleep(100 * 1000);
    a = active(&relays[0]) ? 0 : 1;
    ck_assert(active(&relays[a]));
    ck_assert(!active(&relays[1 - a]));

    /* kill the active one in the middle of a burst */
    append_some(s, "b", 100);
    th_daemon_kill(&relays[a]);
    append_some(s, "c", 150);

    /* the standby takes over and catches up: message n is the feed's
     * n-th event, none missing, none twice */
    th_assert_stream_is_feed(th_conninfo(), stream_name);
    ck_assert(active(&relays[1 - a]));
    th_stream_delete(stream_name);
    es_store_close(s);
}
END_TEST

int
main(void)
{
    Suite *su = suite_create("relay");
    TCase *tc = tcase_create("relay");
    const char *env[] = {envs[0], envs[1], envs[2], envs[3], "ES_RELAY_POLL_MS=20", NULL};
    int rc;

    th_unique(stream_name, sizeof stream_name, "T");
    for (char *c = stream_name; *c; c++)
        if (*c == '-')
            *c = '_';
    th_unique(prefix, sizeof prefix, "t");
    snprintf(envs[0], sizeof envs[0], "ES_PG_CONNINFO=%s", th_conninfo());
    snprintf(envs[1], sizeof envs[1], "ES_NATS_URL=%s", getenv("ES_NATS_URL"));
    snprintf(envs[2], sizeof envs[2], "ES_RELAY_STREAM=%s", stream_name);
    snprintf(envs[3], sizeof envs[3], "ES_RELAY_SUBJECT_PREFIX=%s.events", prefix);
    th_daemon_start(&relays[0], "es-relay", "ES_RELAY_PORT", env);
    th_daemon_start(&relays[1], "es-relay", "ES_RELAY_PORT", env);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, stream_is_the_feed_after_a_crash);
    suite_add_tcase(su, tc);
    rc = th_run_nofork(su);     /* the test kills a daemon it owns */
    rc |= th_daemon_stop(&relays[0]);
    rc |= th_daemon_stop(&relays[1]);
    nats_Close();
    return rc;
}
