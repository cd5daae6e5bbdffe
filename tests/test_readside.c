/*
 * The read side end to end, on real servers with every daemon running
 * (es-command, es-relay, es-projector, es-query) over a database of its
 * own:
 *   - read-your-writes: a command's position, passed to a query, is seen;
 *   - crashes: the relay and the projector are killed with SIGKILL at
 *     random moments while commands flow; afterwards every acknowledged
 *     deposit is counted exactly once, and every read model equals, key by
 *     key, a fresh rebuild from the store;
 *   - a rebuild while commands flow, with queries answering throughout.
 */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "projections.h"
#include "readmodel.h"
#include "store.h"

static th_daemon cmd, relay, proj, query;
static char dbname[64], conninfo[512], envs[8][700], tag[40];
static const char *env[9];

/* ---- helpers ------------------------------------------------------------ */

static json_t *
call(unsigned port, const char *method, const char *path, const char *body, int want,
     char *position_out)
{
    th_response r;
    json_t *j;
    int st = th_http(port, method, path, body ? "Content-Type: application/json\r\n" : NULL, body,
                     &r);

    ck_assert_msg(st == want, "%s %s: %d, wanted %d: %s", method, path, st, want,
                  r.body ? r.body : "");
    j = json_loads(r.body, 0, NULL);
    if (position_out) {
        const char *p = json_string_value(json_object_get(j, "position"));
        snprintf(position_out, 64, "%s", p ? p : "");
    }
    th_response_free(&r);
    return j;
}

static void
start_relay(void)
{
    th_daemon_start(&relay, "es-relay", "ES_RELAY_PORT", env);
}

static void
start_projector(void)
{
    th_daemon_start(&proj, "es-projector", "ES_PROJECTOR_PORT", env);
}

/* Waits until every projection has applied the whole stream (= feed). */
static void
wait_caught_up(void)
{
    redisContext *rc;
    es_error err;
    uint64_t want = 0;

    ck_assert_ptr_nonnull(rc = es_rm_connect(&err));
    for (int i = 0; i < 600; i++) {
        th_response r;
        size_t k, behind = 0;
        uint64_t seen;

        /* the relay's own count of what it published is the target */
        ck_assert_int_eq(th_http(relay.port, "GET", "/metrics", NULL, NULL, &r), 200);
        seen = strtoull(strstr(r.body, "\nes_relay_last_sequence ") + 24, NULL, 10);
        th_response_free(&r);
        if (seen > want)
            want = seen;
        for (k = 0; k < pj_projection_count; k++) {
            es_rm_state s;
            ck_assert_int_eq(es_rm_state_get(rc, pj_projections[k].name, &s, &err), ES_OK);
            if (s.seq < want || want == 0)
                behind++;
        }
        if (behind == 0 && i > 3)
            break;
        usleep(100 * 1000);
        ck_assert_msg(i < 599, "the projections are still behind after 60 s (stream at %llu)",
                      (unsigned long long)want);
    }
    redisFree(rc);
}

/* Every key of the active version of projection name (es_rm_dump). */
static char **
dump(const char *name, size_t *n, char *version)
{
    redisContext *rc;
    es_error err;
    es_rm_state s;
    char **lines;

    ck_assert_ptr_nonnull(rc = es_rm_connect(&err));
    ck_assert_int_eq(es_rm_state_get(rc, name, &s, &err), ES_OK);
    snprintf(version, 24, "%s", s.active);
    ck_assert_int_eq(es_rm_dump(rc, name, s.active, &lines, n, &err), ES_OK);
    redisFree(rc);
    return lines;
}

static int rebuild(const char *name);

/* The active version of projection name equals, key by key, a fresh
 * rebuild from the store (run while nothing is written). */
static void
equals_a_fresh_rebuild(const char *name)
{
    char v1[24], v2[24];
    size_t n1, n2;
    char **a = dump(name, &n1, v1), **b;

    ck_assert_int_eq(rebuild(name), 0);
    b = dump(name, &n2, v2);
    ck_assert_str_ne(v1, v2);
    ck_assert_msg(n1 == n2, "%s: %zu keys live, %zu rebuilt", name, n1, n2);
    for (size_t i = 0; i < n1; i++)
        ck_assert_msg(strcmp(a[i], b[i]) == 0, "%s: live %s\nrebuilt %s", name, a[i], b[i]);
    es_rm_dump_free(a, n1);
    es_rm_dump_free(b, n2);
}

static int
rebuild(const char *name)
{
    const char *argv[] = {"esctl", "projection", "rebuild", name, NULL};
    char log[600];

    snprintf(log, sizeof log, "%s/rebuild-%s.log", getenv("ES_TEST_BUILD"), tag);
    return th_program(argv, env, log);
}

/* ---- load ---------------------------------------------------------------- */

typedef struct load {
    atomic_bool stop;
    atomic_long deposited;      /* acknowledged amounts, customer <tag>-rich */
    atomic_long commands, errors;
    char customer[64];
} load;

static void *
writer(void *arg)
{
    load *l = arg;
    long i = 0;

    while (!atomic_load(&l->stop)) {
        char path[160], body[300];
        th_response r;
        int st;

        if (i % 3 == 0) {
            /* A deposit whose outcome is unknown (the store went away
             * mid-commit) is retried with its key until it has an answer,
             * as a client must: then it counts exactly once. */
            char hdr[200];
            snprintf(path, sizeof path, "/v1/customers/%s/deposits", l->customer);
            snprintf(hdr, sizeof hdr,
                     "Content-Type: application/json\r\nIdempotency-Key: %s-%ld\r\n",
                     l->customer, i);
            for (int tries = 0;; tries++) {
                st = th_http(cmd.port, "POST", path, hdr, "{\"amount\":7}", &r);
                if (st == 201 || st == 200 || tries == 300)
                    break;
                th_response_free(&r);
                usleep(100 * 1000);
            }
            if (st == 201 || st == 200) {
                atomic_fetch_add(&l->deposited, 7);
                st = 201;
            }
        } else if (i % 3 == 1) {
            snprintf(body, sizeof body,
                     "{\"customer_id\":\"%s-c%ld\",\"items\":[{\"sku\":\"%s-s%ld\",\"quantity\":1,"
                     "\"unit_price\":%ld}]}", tag, i % 5, tag, i % 4, 100 + i);
            st = th_http(cmd.port, "POST", "/v1/orders", "Content-Type: application/json\r\n", body,
                         &r);
        } else {
            snprintf(path, sizeof path, "/v1/inventory/%s-s%ld/restock", tag, i % 4);
            st = th_http(cmd.port, "POST", path, "Content-Type: application/json\r\n",
                         "{\"quantity\":3}", &r);
        }
        th_response_free(&r);
        atomic_fetch_add(&l->commands, 1);
        if (st != 201)
            atomic_fetch_add(&l->errors, 1);
        i++;
        usleep(2000);
    }
    return NULL;
}

/* ---- tests --------------------------------------------------------------- */

START_TEST(a_query_with_the_commands_position_sees_it)
{
    char pos[64], path[300], body[200];
    json_t *j, *q;

    snprintf(body, sizeof body, "{\"email\":\"Ann.%s@Example.org\",\"name\":\"Ann\"}", tag);
    j = call(cmd.port, "POST", "/v1/users", body, 201, pos);
    snprintf(path, sizeof path, "/v1/users/%s?consistent_with=%s&wait_ms=5000",
             json_string_value(json_object_get(j, "user_id")), pos);
    q = call(query.port, "GET", path, NULL, 200, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(q, "name")), "Ann");
    ck_assert_str_eq(json_string_value(json_object_get(q, "status")), "pending_verification");
    json_decref(q);
    snprintf(path, sizeof path, "/v1/users?email=ann.%s%%40example.org&consistent_with=%s", tag,
             pos);
    q = call(query.port, "GET", path, NULL, 200, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(q, "user_id")),
                     json_string_value(json_object_get(j, "user_id")));
    json_decref(q);
    json_decref(j);

    snprintf(path, sizeof path, "/v1/customers/%s-c/deposits", tag);
    json_decref(call(cmd.port, "POST", path, "{\"amount\":250}", 201, pos));
    snprintf(path, sizeof path, "/v1/customers/%s-c/account?consistent_with=%s", tag, pos);
    q = call(query.port, "GET", path, NULL, 200, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(q, "balance")), 250);
    json_decref(q);

    snprintf(body, sizeof body,
             "{\"customer_id\":\"%s-c\",\"items\":[{\"sku\":\"k\",\"quantity\":3,\"unit_price\":5}]}",
             tag);
    j = call(cmd.port, "POST", "/v1/orders", body, 201, pos);
    snprintf(path, sizeof path, "/v1/orders/%s?consistent_with=%s",
             json_string_value(json_object_get(j, "order_id")), pos);
    q = call(query.port, "GET", path, NULL, 200, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(q, "total")), 15);
    ck_assert_str_eq(json_string_value(json_object_get(q, "status")), "pending");
    ck_assert_int_eq(json_array_size(json_object_get(q, "history")), 1);
    json_decref(q);
    snprintf(path, sizeof path, "/v1/customers/%s-c/orders?consistent_with=%s", tag, pos);
    q = call(query.port, "GET", path, NULL, 200, NULL);
    ck_assert_int_eq(json_array_size(json_object_get(q, "orders")), 1);
    json_decref(q);
    json_decref(j);
}
END_TEST

/* Batches the projector applied as transactions, all projections. */
static long
transaction_batches(void)
{
    th_response r;
    long n = 0;

    ck_assert_int_eq(th_http(proj.port, "GET", "/metrics", NULL, NULL, &r), 200);
    for (const char *p = r.body; (p = strstr(p, "es_projector_batches_total{")) != NULL; p++) {
        const char *end = strchr(p, '\n');

        if (end != NULL && memmem(p, (size_t)(end - p), "way=\"transaction\"", 17) != NULL)
            n += atol(memchr(p, '}', (size_t)(end - p)) + 2);
    }
    th_response_free(&r);
    return n;
}

START_TEST(killed_relay_and_projector_lose_and_double_nothing)
{
    load l = {0};
    pthread_t th;
    char path[200];
    json_t *q;
    unsigned seed = (unsigned)time(NULL);

    snprintf(l.customer, sizeof l.customer, "%s-rich", tag);
    pthread_create(&th, NULL, writer, &l);
    for (int round = 0; round < 6; round++) {
        usleep((useconds_t)(200 + rand_r(&seed) % 600) * 1000);
        if (round % 2 == 0) {
            th_daemon_kill(&relay);
            usleep((useconds_t)(rand_r(&seed) % 300) * 1000);
            start_relay();
        } else {
            th_daemon_kill(&proj);
            usleep((useconds_t)(rand_r(&seed) % 300) * 1000);
            start_projector();
        }
    }
    usleep(300 * 1000);
    atomic_store(&l.stop, true);
    pthread_join(th, NULL);
    ck_assert_int_eq(atomic_load(&l.errors), 0);
    ck_assert_int_gt(atomic_load(&l.commands), 50);
    wait_caught_up();

    /* acknowledged deposits: each counted exactly once */
    snprintf(path, sizeof path, "/v1/customers/%s/account", l.customer);
    q = call(query.port, "GET", path, NULL, 200, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(q, "balance")), atomic_load(&l.deposited));
    json_decref(q);

    /* every read model equals a fresh rebuild, key by key */
    for (size_t k = 0; k < pj_projection_count; k++)
        equals_a_fresh_rebuild(pj_projections[k].name);
    /* and the batches went the transaction's way (es_rm_apply_all), not
     * only the scripts': this test checks that way too */
    ck_assert_int_gt(transaction_batches(), 0);
}
END_TEST


static char stream_name[64];

START_TEST(the_read_side_survives_restarts_of_nats_and_postgresql)
{
    load l = {0};
    pthread_t th;
    char path[200];
    json_t *q;

    snprintf(l.customer, sizeof l.customer, "%s-restarts", tag);
    pthread_create(&th, NULL, writer, &l);
    usleep(500 * 1000);
    ck_assert_int_eq(th_servers("restart", "nats"), 0);
    usleep(500 * 1000);
    ck_assert_int_eq(th_servers("restart", "pg"), 0);
    usleep(1000 * 1000);
    atomic_store(&l.stop, true);
    pthread_join(th, NULL);
    /* during the PostgreSQL restart commands may fail (503); the others
     * must all be there, once */
    ck_assert_int_lt(atomic_load(&l.errors), atomic_load(&l.commands));
    th_assert_stream_is_feed(conninfo, stream_name);
    wait_caught_up();
    snprintf(path, sizeof path, "/v1/customers/%s/account", l.customer);
    q = call(query.port, "GET", path, NULL, 200, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(q, "balance")), atomic_load(&l.deposited));
    json_decref(q);
}
END_TEST

/* The projector's consumer lives in the server's memory: a server that
 * forgets it (restarted, or the consumer deleted) must not leave the
 * projector waiting on fetches that only time out.  Its consumers are
 * deleted under it, then deposits must still reach the read models. */
START_TEST(the_projector_replaces_a_consumer_the_server_forgot)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsConsumerNamesList *names = NULL;
    jsErrCode jerr = 0;
    char path[200];
    json_t *q;

    snprintf(path, sizeof path, "/v1/customers/%s-forgot/deposits", tag);
    json_decref(call(cmd.port, "POST", path, "{\"amount\":7}", 201, NULL));
    wait_caught_up();
    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    ck_assert_int_eq(js_ConsumerNames(&names, js, stream_name, NULL, &jerr), NATS_OK);
    ck_assert_int_ge(names->Count, 1);
    for (int i = 0; i < names->Count; i++)
        ck_assert_int_eq(js_DeleteConsumer(js, stream_name, names->List[i], NULL, &jerr), NATS_OK);
    jsConsumerNamesList_Destroy(names);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    for (int i = 0; i < 3; i++)
        json_decref(call(cmd.port, "POST", path, "{\"amount\":7}", 201, NULL));
    wait_caught_up();
    snprintf(path, sizeof path, "/v1/customers/%s-forgot/account", tag);
    q = call(query.port, "GET", path, NULL, 200, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(q, "balance")), 28);
    json_decref(q);
}
END_TEST

/* A daemon's /readyz status within seconds, once it is want. */
static int
ready_becomes(const th_daemon *d, int want, int seconds)
{
    int st = 0;

    for (int i = 0; i < seconds * 10; i++) {
        th_response r;
        st = th_http(d->port, "GET", "/readyz", NULL, NULL, &r);
        th_response_free(&r);
        if (st == want)
            break;
        usleep(100 * 1000);
    }
    return st;
}

/* d is ready, not ready while server (pg, redis or nats) is stopped, and
 * ready again once it is back. */
static void
not_ready_while_down(th_daemon *d, const char *server)
{
    char line[128];

    ck_assert_int_eq(ready_becomes(d, 200, 10), 200);
    snprintf(line, sizeof line, "scripts/servers.sh stop %s >/dev/null 2>&1", server);
    ck_assert_int_eq(system(line), 0);
    ck_assert_int_eq(ready_becomes(d, 503, 10), 503);
    snprintf(line, sizeof line, "scripts/servers.sh start %s >/dev/null 2>&1", server);
    ck_assert_int_eq(system(line), 0);
    ck_assert_int_eq(ready_becomes(d, 200, 20), 200);
}

/* PostgreSQL down, the relay is not ready (it cannot copy anything), and
 * ready again once PostgreSQL is back. */
START_TEST(the_relay_is_not_ready_while_postgresql_is_down)
{
    not_ready_while_down(&relay, "pg");
}
END_TEST

/* The projector is not ready while NATS or Redis is down, even with no
 * event coming (it pings Redis), and ready again once they are back. */
START_TEST(the_projector_is_not_ready_while_nats_or_redis_is_down)
{
    not_ready_while_down(&proj, "nats");
    not_ready_while_down(&proj, "redis");
}
END_TEST

/* Seconds th_daemon_stop took to stop d (which must end cleanly). */
static double
stop_seconds(th_daemon *d)
{
    struct timespec a, b;

    clock_gettime(CLOCK_MONOTONIC, &a);
    ck_assert_int_eq(th_daemon_stop(d), 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
}

/* With NATS down, SIGTERM still stops the daemons that use it at once
 * (they used to wait for JetStream requests and drains to time out, 8 to
 * 15 s), and they start again once it is back. */
START_TEST(daemons_stop_promptly_while_nats_is_down)
{
    int relay_down, proj_down;
    double cmd_s, relay_s, proj_s;

    ck_assert_int_eq(th_servers("stop", "nats"), 0);
    relay_down = ready_becomes(&relay, 503, 10);
    proj_down = ready_becomes(&proj, 503, 10);
    cmd_s = stop_seconds(&cmd);
    relay_s = stop_seconds(&relay);
    proj_s = stop_seconds(&proj);
    /* NATS back before anything is asserted: a failure here must not
     * leave the tests after this one without their server */
    ck_assert_int_eq(th_servers("start", "nats"), 0);
    ck_assert_int_eq(relay_down, 503);
    ck_assert_int_eq(proj_down, 503);
    ck_assert_double_lt(cmd_s, 5.0);
    /* a publish in flight waits up to 5 s for its acknowledgement
     * (relay/README.md): the stop may end that wait, not shorten it */
    ck_assert_double_lt(relay_s, 8.0);
    ck_assert_double_lt(proj_s, 5.0);
    th_daemon_start(&cmd, "es-command", "ES_COMMAND_PORT", env);
    start_relay();
    start_projector();
    ck_assert_int_eq(ready_becomes(&relay, 200, 20), 200);
    ck_assert_int_eq(ready_becomes(&proj, 200, 20), 200);
}
END_TEST

typedef struct reader {
    atomic_bool stop;
    atomic_long reads, errors;
    char order_path[200], list_path[200];
} reader;

static void *
read_loop(void *arg)
{
    reader *r = arg;

    while (!atomic_load(&r->stop)) {
        th_response a = {0}, b = {0};
        if (th_http(query.port, "GET", r->order_path, NULL, NULL, &a) != 200 ||
            th_http(query.port, "GET", r->list_path, NULL, NULL, &b) != 200 ||
            strstr(b.body, "\"orders\":[{") == NULL)
            atomic_fetch_add(&r->errors, 1);
        th_response_free(&a);
        th_response_free(&b);
        atomic_fetch_add(&r->reads, 2);
    }
    return NULL;
}

START_TEST(a_rebuild_under_load_keeps_queries_answering)
{
    load l = {0};
    reader rd = {0};
    pthread_t tw, tr;
    char pos[64], body[200], before[24], after[24];
    size_t n;
    json_t *j;

    snprintf(body, sizeof body,
             "{\"customer_id\":\"%s-r\",\"items\":[{\"sku\":\"k\",\"quantity\":1,\"unit_price\":9}]}",
             tag);
    j = call(cmd.port, "POST", "/v1/orders", body, 201, pos);
    snprintf(rd.order_path, sizeof rd.order_path, "/v1/orders/%s?consistent_with=%s",
             json_string_value(json_object_get(j, "order_id")), pos);
    snprintf(rd.list_path, sizeof rd.list_path, "/v1/customers/%s-r/orders?limit=5", tag);
    json_decref(j);
    {
        char **lines = dump("orders", &n, before);
        es_rm_dump_free(lines, n);
    }

    snprintf(l.customer, sizeof l.customer, "%s-busy", tag);
    pthread_create(&tw, NULL, writer, &l);
    pthread_create(&tr, NULL, read_loop, &rd);
    ck_assert_int_eq(rebuild("orders"), 0);
    usleep(300 * 1000);
    atomic_store(&rd.stop, true);
    atomic_store(&l.stop, true);
    pthread_join(tr, NULL);
    pthread_join(tw, NULL);
    ck_assert_int_gt(atomic_load(&rd.reads), 10);
    ck_assert_int_eq(atomic_load(&rd.errors), 0);
    ck_assert_int_eq(atomic_load(&l.errors), 0);
    {
        char **lines = dump("orders", &n, after);
        es_rm_dump_free(lines, n);
    }
    ck_assert_str_ne(before, after);
    /* what the rebuild handed over to the live feed under load is exact */
    wait_caught_up();
    equals_a_fresh_rebuild("orders");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("readside");
    TCase *tc = tcase_create("readside");
    char *stream = stream_name;
    int rc;

    th_db_create(dbname, sizeof dbname, conninfo, sizeof conninfo);
    th_redis_flush();
    th_unique(tag, sizeof tag, "rs");
    th_unique(stream, sizeof stream_name, "RS");
    for (char *c = stream; *c; c++)
        if (*c == '-')
            *c = '_';
    snprintf(envs[0], sizeof envs[0], "ES_PG_CONNINFO=%s", conninfo);
    snprintf(envs[1], sizeof envs[1], "ES_NATS_URL=%s", getenv("ES_NATS_URL"));
    snprintf(envs[2], sizeof envs[2], "ES_RELAY_STREAM=%s", stream);
    snprintf(envs[3], sizeof envs[3], "ES_RELAY_SUBJECT_PREFIX=%s.events", tag);
    snprintf(envs[4], sizeof envs[4], "ES_RELAY_WAKE_SUBJECT=%s.wake", tag);
    snprintf(envs[5], sizeof envs[5], "ES_COMMAND_SUBJECT_PREFIX=%s.cmd", tag);
    snprintf(envs[6], sizeof envs[6], "ES_REBUILD_GRACE_MS=100");
    snprintf(envs[7], sizeof envs[7], "ES_HTTP_WORKERS=8");
    for (int i = 0; i < 8; i++)
        env[i] = envs[i];
    env[8] = NULL;
    th_daemon_start(&cmd, "es-command", "ES_COMMAND_PORT", env);
    start_relay();
    start_projector();
    th_daemon_start(&query, "es-query", "ES_QUERY_PORT", env);

    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, a_query_with_the_commands_position_sees_it);
    tcase_add_test(tc, killed_relay_and_projector_lose_and_double_nothing);
    tcase_add_test(tc, a_rebuild_under_load_keeps_queries_answering);
    tcase_add_test(tc, the_read_side_survives_restarts_of_nats_and_postgresql);
    tcase_add_test(tc, the_projector_replaces_a_consumer_the_server_forgot);
    tcase_add_test(tc, the_relay_is_not_ready_while_postgresql_is_down);
    tcase_add_test(tc, the_projector_is_not_ready_while_nats_or_redis_is_down);
    tcase_add_test(tc, daemons_stop_promptly_while_nats_is_down);
    suite_add_tcase(s, tc);
    rc = th_run_nofork(s);      /* the tests kill daemons they own */
    rc |= th_daemon_stop(&query);
    rc |= th_daemon_stop(&proj);
    rc |= th_daemon_stop(&relay);
    rc |= th_daemon_stop(&cmd);
    th_stream_delete(stream);
    nats_Close();
    th_db_drop(dbname);
    return rc;
}
