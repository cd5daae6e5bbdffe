/*
 * The saga manager's gateways: the circuit breaker's round trip (closed,
 * open, one half-open probe, closed or open again), what each transport
 * leaves behind (a JSON line per message in a file, an entry per message
 * in the Redis stream gateway:<name> of the tests' database, nothing for
 * null), the settings the environment may hold, the metrics, and that the
 * injected latency is slept without the gateway's lock.
 */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gateway.h"
#include "harness.h"
#include "readmodel.h"

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0)
        ;
}

static sg_gateway *
make(const char *name)
{
    sg_gateway *g;
    es_error err;

    ck_assert_msg(sg_gateway_create(&g, name, &err) == ES_OK, "%s", err.message);
    ck_assert_ptr_nonnull(g);
    return g;
}

/* Sends one message and checks its status and error code ("" for ES_OK). */
static void
send_expect(sg_gateway *g, const char *id, const char *body, es_status want, const char *code)
{
    es_error err;
    es_status st = sg_gateway_send(g, id, body, &err);

    ck_assert_msg(st == want, "send %s: got %s (%s), want %s", id, es_status_code(st),
                  st == ES_OK ? "" : err.message, es_status_code(want));
    if (st != ES_OK)
        ck_assert_str_eq(err.code, code);
}

/* The metrics of the gateways as text; the caller frees it. */
static char *
metrics(sg_gateway *const *gs, size_t n)
{
    es_buf b = ES_BUF_INIT;

    sg_gateway_metrics_all(gs, n, &b);
    ck_assert(!es_buf_failed(&b));
    return b.data;
}

static void
has_metric(sg_gateway *g, const char *line)
{
    char *text = metrics(&g, 1);

    ck_assert_msg(strstr(text, line) != NULL, "no \"%s\" in:\n%s", line, text);
    free(text);
}

static int
occurrences(const char *text, const char *s)
{
    int n = 0;

    for (const char *p = text; (p = strstr(p, s)) != NULL; p += strlen(s))
        n++;
    return n;
}

typedef struct call {
    sg_gateway *g;
    const char *id;
    es_status st;
    es_error err;
    double ms;
} call;

static void *
call_main(void *arg)
{
    call *c = arg;
    double t0 = now_ms();

    c->st = sg_gateway_send(c->g, c->id, "{\"k\":1}", &c->err);
    c->ms = now_ms() - t0;
    return NULL;
}

/* ---- the breaker ---------------------------------------------------------- */

START_TEST(breaker_opens_after_n_failures_then_rejects_fast)
{
    sg_gateway *g;
    es_error err;
    double t0;

    setenv("ES_GATEWAY_FLAKY_TRANSPORT", "null", 1);
    setenv("ES_GATEWAY_FLAKY_FAILURE_RATE", "1", 1);
    setenv("ES_GATEWAY_FLAKY_BREAKER_FAILURES", "3", 1);
    setenv("ES_GATEWAY_FLAKY_BREAKER_OPEN_MS", "200", 1);
    setenv("ES_GATEWAY_FLAKY_LATENCY_MS", "60", 1);    /* a refusal does not wait */
    g = make("flaky");
    ck_assert_str_eq(sg_gateway_name(g), "flaky");
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_CLOSED);
        send_expect(g, "m", "{}", ES_EUNAVAILABLE, "gateway_failed");
    }
    ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_OPEN);

    t0 = now_ms();
    ck_assert_int_eq(sg_gateway_send(g, "m", "{}", &err), ES_EUNAVAILABLE);
    ck_assert_double_lt(now_ms() - t0, 40);
    ck_assert_str_eq(err.code, "circuit_open");
    ck_assert_msg(strstr(err.message, "gateway \"flaky\"") != NULL, "%s", err.message);

    has_metric(g, "es_saga_gateway_calls_total{gateway=\"flaky\",result=\"ok\"} 0\n");
    has_metric(g, "es_saga_gateway_calls_total{gateway=\"flaky\",result=\"failed\"} 3\n");
    has_metric(g, "es_saga_gateway_calls_total{gateway=\"flaky\",result=\"rejected\"} 1\n");
    has_metric(g, "es_saga_gateway_breaker_state{gateway=\"flaky\"} 1\n");
    has_metric(g, "es_saga_gateway_breaker_opened_total{gateway=\"flaky\"} 1\n");
    sg_gateway_destroy(g);
}
END_TEST

START_TEST(a_success_resets_the_failure_count)
{
    sg_gateway *g;

    setenv("ES_GATEWAY_FLAKY_TRANSPORT", "null", 1);
    setenv("ES_GATEWAY_FLAKY_BREAKER_FAILURES", "3", 1);
    g = make("flaky");
    sg_gateway_set_failure_rate(g, 1);
    send_expect(g, "m", "{}", ES_EUNAVAILABLE, "gateway_failed");
    send_expect(g, "m", "{}", ES_EUNAVAILABLE, "gateway_failed");
    sg_gateway_set_failure_rate(g, 0);
    send_expect(g, "m", "{}", ES_OK, "");
    sg_gateway_set_failure_rate(g, 1);
    send_expect(g, "m", "{}", ES_EUNAVAILABLE, "gateway_failed");
    send_expect(g, "m", "{}", ES_EUNAVAILABLE, "gateway_failed");
    ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_CLOSED);
    send_expect(g, "m", "{}", ES_EUNAVAILABLE, "gateway_failed");
    ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_OPEN);
    sg_gateway_destroy(g);
}
END_TEST

START_TEST(one_half_open_probe_and_its_success_closes)
{
    sg_gateway *g;
    call probe;
    pthread_t t;
    es_error err;
    double t0;

    setenv("ES_GATEWAY_FLAKY_TRANSPORT", "null", 1);
    setenv("ES_GATEWAY_FLAKY_FAILURE_RATE", "1", 1);
    setenv("ES_GATEWAY_FLAKY_BREAKER_FAILURES", "2", 1);
    setenv("ES_GATEWAY_FLAKY_BREAKER_OPEN_MS", "200", 1);
    g = make("flaky");
    send_expect(g, "m", "{}", ES_EUNAVAILABLE, "gateway_failed");
    send_expect(g, "m", "{}", ES_EUNAVAILABLE, "gateway_failed");
    ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_OPEN);
    send_expect(g, "m", "{}", ES_EUNAVAILABLE, "circuit_open");

    /* the receiver recovers, slowly: the probe stays in flight a while */
    sleep_ms(250);
    sg_gateway_set_failure_rate(g, 0);
    sg_gateway_set_latency_ms(g, 150);
    probe = (call){.g = g, .id = "probe"};
    ck_assert_int_eq(pthread_create(&t, NULL, call_main, &probe), 0);
    sleep_ms(50);
    ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_HALF_OPEN);
    has_metric(g, "es_saga_gateway_breaker_state{gateway=\"flaky\"} 2\n");
    t0 = now_ms();
    ck_assert_int_eq(sg_gateway_send(g, "other", "{}", &err), ES_EUNAVAILABLE);
    ck_assert_double_lt(now_ms() - t0, 40);
    ck_assert_str_eq(err.code, "circuit_open");
    ck_assert_msg(strstr(err.message, "half-open") != NULL, "%s", err.message);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_msg(probe.st == ES_OK, "%s", probe.err.message);
    ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_CLOSED);

    sg_gateway_set_latency_ms(g, 0);
    send_expect(g, "m", "{}", ES_OK, "");
    has_metric(g, "es_saga_gateway_calls_total{gateway=\"flaky\",result=\"ok\"} 2\n");
    has_metric(g, "es_saga_gateway_calls_total{gateway=\"flaky\",result=\"failed\"} 2\n");
    has_metric(g, "es_saga_gateway_calls_total{gateway=\"flaky\",result=\"rejected\"} 2\n");
    has_metric(g, "es_saga_gateway_breaker_state{gateway=\"flaky\"} 0\n");
    has_metric(g, "es_saga_gateway_breaker_opened_total{gateway=\"flaky\"} 1\n");
    sg_gateway_destroy(g);
}
END_TEST

START_TEST(a_failed_probe_reopens_for_a_new_cool_down)
{
    sg_gateway *g;

    setenv("ES_GATEWAY_FLAKY_TRANSPORT", "null", 1);
    setenv("ES_GATEWAY_FLAKY_FAILURE_RATE", "1", 1);
    setenv("ES_GATEWAY_FLAKY_BREAKER_FAILURES", "1", 1);
    setenv("ES_GATEWAY_FLAKY_BREAKER_OPEN_MS", "200", 1);
    g = make("flaky");
    send_expect(g, "m", "{}", ES_EUNAVAILABLE, "gateway_failed");
    ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_OPEN);
    sleep_ms(250);
    /* the probe goes through to the receiver, which still fails */
    send_expect(g, "m", "{}", ES_EUNAVAILABLE, "gateway_failed");
    ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_OPEN);
    has_metric(g, "es_saga_gateway_breaker_opened_total{gateway=\"flaky\"} 2\n");
    send_expect(g, "m", "{}", ES_EUNAVAILABLE, "circuit_open");

    sleep_ms(250);
    sg_gateway_set_failure_rate(g, 0);
    send_expect(g, "m", "{}", ES_OK, "");
    ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_CLOSED);
    sg_gateway_destroy(g);
}
END_TEST

/* Many threads at once: every call is counted exactly once, whatever the
 * breaker did meanwhile. */
enum { THREADS = 8, CALLS = 200 };

static void *
many_main(void *arg)
{
    es_error err;

    for (int i = 0; i < CALLS; i++) {
        es_status st = sg_gateway_send(arg, "m", "{}", &err);

        if (st != ES_OK && st != ES_EUNAVAILABLE)
            return arg;         /* any other answer is wrong */
    }
    return NULL;
}

/* The value of the sample whose line starts with prefix. */
static unsigned long long
sample(const char *text, const char *prefix)
{
    const char *p = strstr(text, prefix);

    ck_assert_msg(p != NULL, "no \"%s\" in:\n%s", prefix, text);
    return strtoull(p + strlen(prefix), NULL, 10);
}

START_TEST(concurrent_sends_are_all_counted)
{
    sg_gateway *gs[2];
    pthread_t t[THREADS];

    setenv("ES_GATEWAY_STEADY_TRANSPORT", "null", 1);
    setenv("ES_GATEWAY_STEADY_FAILURE_RATE", "0.3", 1);
    setenv("ES_GATEWAY_STEADY_BREAKER_FAILURES", "1000000", 1);
    setenv("ES_GATEWAY_CHURN_TRANSPORT", "null", 1);
    setenv("ES_GATEWAY_CHURN_FAILURE_RATE", "0.5", 1);
    setenv("ES_GATEWAY_CHURN_BREAKER_FAILURES", "2", 1);
    setenv("ES_GATEWAY_CHURN_BREAKER_OPEN_MS", "0", 1);
    gs[0] = make("steady");
    gs[1] = make("churn");
    for (int k = 0; k < 2; k++) {
        unsigned long long ok, failed, rejected;
        char prefix[96], *text;

        for (int i = 0; i < THREADS; i++)
            ck_assert_int_eq(pthread_create(&t[i], NULL, many_main, gs[k]), 0);
        for (int i = 0; i < THREADS; i++) {
            void *bad;

            ck_assert_int_eq(pthread_join(t[i], &bad), 0);
            ck_assert_ptr_null(bad);
        }
        text = metrics(&gs[k], 1);
        snprintf(prefix, sizeof prefix, "{gateway=\"%s\",result=\"ok\"} ", sg_gateway_name(gs[k]));
        ok = sample(text, prefix);
        snprintf(prefix, sizeof prefix, "{gateway=\"%s\",result=\"failed\"} ", sg_gateway_name(gs[k]));
        failed = sample(text, prefix);
        snprintf(prefix, sizeof prefix, "{gateway=\"%s\",result=\"rejected\"} ",
                 sg_gateway_name(gs[k]));
        rejected = sample(text, prefix);
        free(text);
        ck_assert_uint_eq(ok + failed + rejected, THREADS * CALLS);
        ck_assert_uint_gt(ok, 0);
        ck_assert_uint_gt(failed, 0);
        if (k == 0)
            ck_assert_uint_eq(rejected, 0);
        /* no call may be left in flight: a half-open breaker would mean a
         * probe whose outcome was lost */
        ck_assert_int_ne(sg_gateway_breaker(gs[k]), SG_BREAKER_HALF_OPEN);
    }
    sg_gateway_destroy(gs[0]);
    sg_gateway_destroy(gs[1]);
}
END_TEST

/* ---- transports ----------------------------------------------------------- */

START_TEST(the_file_transport_appends_one_json_line_per_message)
{
    char dir[] = "/tmp/es_gateway_XXXXXX", path[128], env[160], line[1024];
    const char *bodies[] = {"{\n  \"to\": \"ann@example.org\",\n  \"text\": \"a b\\n c\"\n}",
                            " [1, 2, {\"x\" : null}] "};
    const char *ids[] = {"m-1", "m-2 \"quoted\""};
    sg_gateway *g;
    FILE *f;
    int n = 0;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/out.jsonl", dir);
    snprintf(env, sizeof env, "file:%s", path);
    setenv("ES_GATEWAY_NOTIFY_TRANSPORT", env, 1);
    g = make("notify");
    /* nothing is opened before the first send */
    ck_assert_int_ne(access(path, F_OK), 0);
    send_expect(g, ids[0], bodies[0], ES_OK, "");
    send_expect(g, ids[1], bodies[1], ES_OK, "");
    sg_gateway_destroy(g);

    ck_assert_ptr_nonnull(f = fopen(path, "r"));
    while (fgets(line, sizeof line, f) != NULL) {
        json_error_t jerr;
        json_t *j, *want;

        ck_assert_int_lt(n, 2);
        ck_assert_msg(line[strlen(line) - 1] == '\n', "line cut: %s", line);
        j = json_loads(line, 0, &jerr);
        ck_assert_msg(j != NULL, "%s: %s", jerr.text, line);
        want = json_loads(bodies[n], JSON_DECODE_ANY, &jerr);
        ck_assert_ptr_nonnull(want);
        ck_assert_str_eq(json_string_value(json_object_get(j, "gateway")), "notify");
        ck_assert_str_eq(json_string_value(json_object_get(j, "id")), ids[n]);
        ck_assert_msg(json_equal(json_object_get(j, "body"), want), "body differs: %s", line);
        json_decref(want);
        json_decref(j);
        n++;
    }
    fclose(f);
    ck_assert_int_eq(n, 2);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(a_file_that_cannot_be_written_is_a_gateway_failure)
{
    sg_gateway *g;
    es_error err;

    setenv("ES_GATEWAY_NOTIFY_TRANSPORT", "file:/nonexistent-es-gateway-dir/out.jsonl", 1);
    setenv("ES_GATEWAY_NOTIFY_BREAKER_FAILURES", "2", 1);
    g = make("notify");
    ck_assert_int_eq(sg_gateway_send(g, "m-1", "{}", &err), ES_EUNAVAILABLE);
    ck_assert_str_eq(err.code, "gateway_failed");
    ck_assert_msg(strstr(err.message, "could not open file \"/nonexistent-es-gateway-dir/") != NULL,
                  "%s", err.message);
    send_expect(g, "m-1", "{}", ES_EUNAVAILABLE, "gateway_failed");
    ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_OPEN);
    sg_gateway_destroy(g);
}
END_TEST

static long long
xlen(redisContext *rc, const char *key)
{
    redisReply *r = redisCommand(rc, "XLEN %s", key);
    long long n;

    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_INTEGER);
    n = r->integer;
    freeReplyObject(r);
    return n;
}

START_TEST(the_redis_transport_appends_to_the_gateway_stream)
{
    const char *body = "{\"to\": \"ann@example.org\", \"n\": [1, 2]}";
    redisContext *rc;
    redisReply *r, *fields;
    sg_gateway *g;
    es_error err;

    th_redis_flush();
    ck_assert_ptr_nonnull(rc = es_rm_connect(&err));
    g = make("mail");               /* transport unset: redis */
    send_expect(g, "m-1", body, ES_OK, "");
    send_expect(g, "m-2", "[]", ES_OK, "");
    ck_assert_int_eq(xlen(rc, "gateway:mail"), 2);

    r = redisCommand(rc, "XRANGE gateway:mail - +");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
    ck_assert_uint_eq(r->elements, 2);
    fields = r->element[0]->element[1];
    ck_assert_uint_eq(fields->elements, 4);
    ck_assert_str_eq(fields->element[0]->str, "id");
    ck_assert_str_eq(fields->element[1]->str, "m-1");
    ck_assert_str_eq(fields->element[2]->str, "body");
    ck_assert_str_eq(fields->element[3]->str, body);      /* byte for byte */
    ck_assert_str_eq(r->element[1]->element[1]->element[1]->str, "m-2");
    freeReplyObject(r);

    /* an error answer fails the call but keeps the connection */
    freeReplyObject(redisCommand(rc, "DEL gateway:mail"));
    freeReplyObject(redisCommand(rc, "SET gateway:mail x"));
    ck_assert_int_eq(sg_gateway_send(g, "m-3", "{}", &err), ES_EUNAVAILABLE);
    ck_assert_str_eq(err.code, "gateway_failed");
    ck_assert_msg(strstr(err.message, "WRONGTYPE") != NULL, "%s", err.message);
    freeReplyObject(redisCommand(rc, "DEL gateway:mail"));
    send_expect(g, "m-3", "{}", ES_OK, "");
    ck_assert_int_eq(xlen(rc, "gateway:mail"), 1);
    has_metric(g, "es_saga_gateway_calls_total{gateway=\"mail\",result=\"ok\"} 3\n");
    has_metric(g, "es_saga_gateway_calls_total{gateway=\"mail\",result=\"failed\"} 1\n");

    sg_gateway_destroy(g);
    redisFree(rc);
}
END_TEST

static void
collect(void *ctx, const char *msg_id, const char *body)
{
    char *seen = ctx;

    strcat(seen, msg_id);
    strcat(seen, "=");
    strcat(seen, body);
    strcat(seen, ";");
}

/* At least once, and the receiver drops the repeats: the same message id
 * sent twice (a saga's step sent again by the manager that took the saga
 * over, while the deposed one completed its own call) is handled once,
 * also by a receiver that reads the stream again from its start. */
START_TEST(the_receiver_handles_each_message_id_once)
{
    char after[80] = "0", seen[512] = "";
    int handled, dropped;
    sg_gateway *g;
    es_error err;

    th_redis_flush();
    g = make("recv");
    send_expect(g, "saga-1/welcome", "{\"n\":1}", ES_OK, "");
    send_expect(g, "saga-1/welcome", "{\"n\":1}", ES_OK, "");     /* the successor's copy */
    send_expect(g, "saga-2/welcome", "{\"n\":2}", ES_OK, "");
    ck_assert_int_eq(sg_gateway_receive("recv", after, sizeof after, 100, 60, collect, seen,
                                        &handled, &dropped, &err), ES_OK);
    ck_assert_int_eq(handled, 2);
    ck_assert_int_eq(dropped, 1);
    ck_assert_str_eq(seen, "saga-1/welcome={\"n\":1};saga-2/welcome={\"n\":2};");
    /* nothing new: nothing handled; a late copy after that: dropped too */
    ck_assert_int_eq(sg_gateway_receive("recv", after, sizeof after, 100, 60, collect, seen,
                                        &handled, &dropped, &err), ES_OK);
    ck_assert_int_eq(handled + dropped, 0);
    send_expect(g, "saga-1/welcome", "{\"n\":1}", ES_OK, "");
    send_expect(g, "saga-3/welcome", "{\"n\":3}", ES_OK, "");
    ck_assert_int_eq(sg_gateway_receive("recv", after, sizeof after, 1, 60, collect, seen,
                                        &handled, &dropped, &err), ES_OK);
    ck_assert_int_eq(dropped, 1);       /* one at a time (max 1): the copy */
    ck_assert_int_eq(handled, 0);
    ck_assert_int_eq(sg_gateway_receive("recv", after, sizeof after, 100, 60, collect, seen,
                                        &handled, &dropped, &err), ES_OK);
    ck_assert_int_eq(handled, 1);
    ck_assert_int_eq(dropped, 0);
    /* a receiver that starts again from the stream's start handles nothing twice */
    snprintf(after, sizeof after, "0");
    ck_assert_int_eq(sg_gateway_receive("recv", after, sizeof after, 100, 60, collect, seen,
                                        &handled, &dropped, &err), ES_OK);
    ck_assert_int_eq(handled, 0);
    ck_assert_int_eq(dropped, 5);
    ck_assert_str_eq(seen, "saga-1/welcome={\"n\":1};saga-2/welcome={\"n\":2};"
                           "saga-3/welcome={\"n\":3};");
    ck_assert_int_eq(sg_gateway_receive("Bad Name", after, sizeof after, 100, 60, NULL, NULL,
                                        &handled, &dropped, &err), ES_EINVALID);
    ck_assert_str_eq(err.field, "name");
    sg_gateway_destroy(g);
}
END_TEST

START_TEST(the_redis_connection_is_made_on_first_send_and_remade)
{
    char port[32];
    const char *p = getenv("ES_REDIS_PORT");
    redisContext *rc;
    sg_gateway *g;
    es_error err;

    th_redis_flush();
    snprintf(port, sizeof port, "%s", p ? p : "16379");
    setenv("ES_REDIS_PORT", "1", 1);    /* nothing listens there */
    g = make("mail");
    ck_assert_int_eq(sg_gateway_send(g, "m-1", "{}", &err), ES_EUNAVAILABLE);
    ck_assert_str_eq(err.code, "gateway_failed");
    ck_assert_msg(strstr(err.message, "could not connect to redis") != NULL, "%s", err.message);

    setenv("ES_REDIS_PORT", port, 1);
    send_expect(g, "m-1", "{}", ES_OK, "");
    send_expect(g, "m-2", "{}", ES_OK, "");
    ck_assert_ptr_nonnull(rc = es_rm_connect(&err));
    ck_assert_int_eq(xlen(rc, "gateway:mail"), 2);
    redisFree(rc);
    sg_gateway_destroy(g);
}
END_TEST

START_TEST(the_null_transport_accepts_everything)
{
    sg_gateway *g;

    setenv("ES_GATEWAY_VOID_TRANSPORT", "null", 1);
    setenv("ES_REDIS_PORT", "1", 1);    /* proves Redis is not asked */
    g = make("void");
    for (int i = 0; i < 3; i++)
        send_expect(g, "m", "{\"a\":1}", ES_OK, "");
    has_metric(g, "es_saga_gateway_calls_total{gateway=\"void\",result=\"ok\"} 3\n");
    ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_CLOSED);
    sg_gateway_destroy(g);
}
END_TEST

/* Senders at once through one gateway: each message arrives whole, as one
 * line of the file and one entry of the stream. */
static void *
burst_main(void *arg)
{
    es_error err;

    for (int i = 0; i < 50; i++)
        if (sg_gateway_send(arg, "burst", "{\"text\": \"a somewhat longer body, to give a "
                                          "write room to be cut\"}", &err) != ES_OK)
            return arg;
    return NULL;
}

START_TEST(concurrent_sends_arrive_whole)
{
    char dir[] = "/tmp/es_gateway_XXXXXX", path[128], env[160], line[1024];
    sg_gateway *gs[2];
    redisContext *rc;
    pthread_t t[4];
    es_error err;
    FILE *f;
    int n = 0;

    th_redis_flush();
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/out.jsonl", dir);
    snprintf(env, sizeof env, "file:%s", path);
    setenv("ES_GATEWAY_NOTIFY_TRANSPORT", env, 1);
    gs[0] = make("notify");
    gs[1] = make("mail");
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 4; i++)
            ck_assert_int_eq(pthread_create(&t[i], NULL, burst_main, gs[k]), 0);
        for (int i = 0; i < 4; i++) {
            void *bad;

            ck_assert_int_eq(pthread_join(t[i], &bad), 0);
            ck_assert_ptr_null(bad);
        }
    }
    sg_gateway_destroy(gs[0]);
    sg_gateway_destroy(gs[1]);

    ck_assert_ptr_nonnull(f = fopen(path, "r"));
    while (fgets(line, sizeof line, f) != NULL) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);

        ck_assert_msg(j != NULL, "%s: %s", jerr.text, line);
        ck_assert_str_eq(json_string_value(json_object_get(j, "id")), "burst");
        json_decref(j);
        n++;
    }
    fclose(f);
    ck_assert_int_eq(n, 200);
    unlink(path);
    rmdir(dir);
    ck_assert_ptr_nonnull(rc = es_rm_connect(&err));
    ck_assert_int_eq(xlen(rc, "gateway:mail"), 200);
    redisFree(rc);
}
END_TEST

/* ---- settings and input --------------------------------------------------- */

START_TEST(bad_settings_are_refused_naming_the_variable)
{
    static const struct {
        const char *var, *value;
    } bad[] = {
        {"ES_GATEWAY_EMAIL_TRANSPORT", "smtp"},
        {"ES_GATEWAY_EMAIL_TRANSPORT", "file:"},
        {"ES_GATEWAY_EMAIL_TRANSPORT", "Redis"},
        {"ES_GATEWAY_EMAIL_LATENCY_MS", "-1"},
        {"ES_GATEWAY_EMAIL_LATENCY_MS", "10ms"},
        {"ES_GATEWAY_EMAIL_LATENCY_MS", " 10"},
        {"ES_GATEWAY_EMAIL_LATENCY_MS", "60001"},
        {"ES_GATEWAY_EMAIL_LATENCY_MS", "99999999999999999999999"},
        {"ES_GATEWAY_EMAIL_FAILURE_RATE", "1.5"},
        {"ES_GATEWAY_EMAIL_FAILURE_RATE", "-0.1"},
        {"ES_GATEWAY_EMAIL_FAILURE_RATE", "nan"},
        {"ES_GATEWAY_EMAIL_FAILURE_RATE", "half"},
        {"ES_GATEWAY_EMAIL_FAILURE_RATE", "0.5x"},
        {"ES_GATEWAY_EMAIL_BREAKER_FAILURES", "0"},
        {"ES_GATEWAY_EMAIL_BREAKER_FAILURES", "three"},
        {"ES_GATEWAY_EMAIL_BREAKER_OPEN_MS", "5s"},
        {"ES_GATEWAY_EMAIL_BREAKER_OPEN_MS", "-5"},
    };
    static const char *bad_names[] = {"", "Email", "e-mail", "email ",
                                      "a23456789012345678901234567890123"};
    sg_gateway *g;
    es_error err;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv(bad[i].var, bad[i].value, 1);
        g = (sg_gateway *)&err;     /* must be reset */
        ck_assert_int_eq(sg_gateway_create(&g, "email", &err), ES_EINVALID);
        ck_assert_ptr_null(g);
        ck_assert_str_eq(err.field, bad[i].var);
        ck_assert_msg(strstr(err.message, bad[i].var) != NULL, "%s", err.message);
        unsetenv(bad[i].var);
    }
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        ck_assert_int_eq(sg_gateway_create(&g, bad_names[i], &err), ES_EINVALID);
        ck_assert_ptr_null(g);
        ck_assert_str_eq(err.field, "name");
    }
    ck_assert_int_eq(sg_gateway_create(&g, NULL, &err), ES_EINVALID);

    /* the edges that are fine; an empty variable counts as unset */
    setenv("ES_GATEWAY_A234567890123456789012345678901_TRANSPORT", "null", 1);
    sg_gateway_destroy(make("a234567890123456789012345678901"));
    setenv("ES_GATEWAY_EMAIL_TRANSPORT", "", 1);
    setenv("ES_GATEWAY_EMAIL_LATENCY_MS", "", 1);
    setenv("ES_GATEWAY_EMAIL_FAILURE_RATE", ".25", 1);
    setenv("ES_GATEWAY_EMAIL_BREAKER_FAILURES", "1", 1);
    setenv("ES_GATEWAY_EMAIL_BREAKER_OPEN_MS", "0", 1);
    sg_gateway_destroy(make("email"));
    sg_gateway_destroy(NULL);
}
END_TEST

START_TEST(malformed_messages_are_refused_and_not_counted)
{
    char long_id[202];
    sg_gateway *g;

    setenv("ES_GATEWAY_VOID_TRANSPORT", "null", 1);
    setenv("ES_GATEWAY_VOID_FAILURE_RATE", "1", 1);
    setenv("ES_GATEWAY_VOID_BREAKER_FAILURES", "1", 1);
    g = make("void");
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    send_expect(g, long_id, "{}", ES_EINVALID, "invalid_msg_id");
    send_expect(g, "", "{}", ES_EINVALID, "invalid_msg_id");
    send_expect(g, NULL, "{}", ES_EINVALID, "invalid_msg_id");
    send_expect(g, "a\nb", "{}", ES_EINVALID, "invalid_msg_id");
    send_expect(g, "\xff", "{}", ES_EINVALID, "invalid_msg_id");
    send_expect(g, "m", "{", ES_EINVALID, "invalid_body");
    send_expect(g, "m", "", ES_EINVALID, "invalid_body");
    send_expect(g, "m", NULL, ES_EINVALID, "invalid_body");
    send_expect(g, "m", "{} {}", ES_EINVALID, "invalid_body");
    ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_CLOSED);
    has_metric(g, "result=\"failed\"} 0\n");
    has_metric(g, "result=\"rejected\"} 0\n");

    sg_gateway_set_failure_rate(g, 0);
    long_id[200] = '\0';
    send_expect(g, long_id, "\"a JSON string is a body too\"", ES_OK, "");
    sg_gateway_destroy(g);
}
END_TEST

START_TEST(metrics_group_every_gateway_under_one_type_line)
{
    sg_gateway *gs[2];
    char *text;

    setenv("ES_GATEWAY_ALPHA_TRANSPORT", "null", 1);
    setenv("ES_GATEWAY_ALPHA_BREAKER_FAILURES", "1", 1);
    setenv("ES_GATEWAY_BETA_TRANSPORT", "null", 1);
    gs[0] = make("alpha");
    gs[1] = make("beta");
    sg_gateway_set_failure_rate(gs[0], 1);
    send_expect(gs[0], "m", "{}", ES_EUNAVAILABLE, "gateway_failed");
    send_expect(gs[0], "m", "{}", ES_EUNAVAILABLE, "circuit_open");
    send_expect(gs[1], "m", "{}", ES_OK, "");

    text = metrics(gs, 2);
    ck_assert_int_eq(occurrences(text, "# TYPE es_saga_gateway_calls_total counter\n"), 1);
    ck_assert_int_eq(occurrences(text, "# TYPE es_saga_gateway_breaker_state gauge\n"), 1);
    ck_assert_int_eq(occurrences(text, "# TYPE es_saga_gateway_breaker_opened_total counter\n"),
                     1);
    ck_assert_int_eq(occurrences(text, "# TYPE "), 3);
    ck_assert_ptr_nonnull(strstr(text, "es_saga_gateway_calls_total{gateway=\"alpha\","
                                       "result=\"failed\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "es_saga_gateway_calls_total{gateway=\"alpha\","
                                       "result=\"rejected\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "es_saga_gateway_calls_total{gateway=\"beta\","
                                       "result=\"ok\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "es_saga_gateway_breaker_state{gateway=\"alpha\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "es_saga_gateway_breaker_state{gateway=\"beta\"} 0\n"));
    ck_assert_ptr_nonnull(strstr(text, "es_saga_gateway_breaker_opened_total{gateway=\"alpha\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "es_saga_gateway_breaker_opened_total{gateway=\"beta\"} 0\n"));
    /* every sample line is "name{labels} value" */
    for (char *line = text, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        ck_assert_ptr_nonnull(nl);
        if (line[0] != '#')
            ck_assert_msg(strncmp(line, "es_saga_gateway_", 16) == 0 && memchr(line, '}', nl - line),
                          "odd line: %.*s", (int)(nl - line), line);
    }
    free(text);

    ck_assert_str_eq(sg_breaker_name(SG_BREAKER_CLOSED), "closed");
    ck_assert_str_eq(sg_breaker_name(SG_BREAKER_OPEN), "open");
    ck_assert_str_eq(sg_breaker_name(SG_BREAKER_HALF_OPEN), "half_open");
    sg_gateway_destroy(gs[0]);
    sg_gateway_destroy(gs[1]);
}
END_TEST

/* ---- latency --------------------------------------------------------------- */

START_TEST(latency_is_slept_without_the_lock)
{
    call c[2];
    pthread_t t[2];
    sg_gateway *g;
    double t0, ms;

    setenv("ES_GATEWAY_SLOW_TRANSPORT", "null", 1);
    setenv("ES_GATEWAY_SLOW_LATENCY_MS", "50", 1);
    g = make("slow");
    t0 = now_ms();
    send_expect(g, "m", "{}", ES_OK, "");
    ck_assert_double_ge(now_ms() - t0, 50);

    /* two calls at once overlap their sleeps, and the breaker and the
     * metrics answer meanwhile */
    sg_gateway_set_latency_ms(g, 100);
    t0 = now_ms();
    for (int i = 0; i < 2; i++) {
        c[i] = (call){.g = g, .id = "m"};
        ck_assert_int_eq(pthread_create(&t[i], NULL, call_main, &c[i]), 0);
    }
    sleep_ms(20);
    ms = now_ms();
    ck_assert_int_eq(sg_gateway_breaker(g), SG_BREAKER_CLOSED);
    has_metric(g, "result=\"ok\"} 1\n");
    ck_assert_double_lt(now_ms() - ms, 40);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
        ck_assert_int_eq(c[i].st, ES_OK);
        ck_assert_double_ge(c[i].ms, 100);
    }
    ms = now_ms() - t0;
    ck_assert_double_ge(ms, 100);
    ck_assert_double_lt(ms, 180);
    sg_gateway_destroy(g);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("gateway");
    TCase *tc = tcase_create("gateway");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, breaker_opens_after_n_failures_then_rejects_fast);
    tcase_add_test(tc, a_success_resets_the_failure_count);
    tcase_add_test(tc, one_half_open_probe_and_its_success_closes);
    tcase_add_test(tc, a_failed_probe_reopens_for_a_new_cool_down);
    tcase_add_test(tc, concurrent_sends_are_all_counted);
    tcase_add_test(tc, the_file_transport_appends_one_json_line_per_message);
    tcase_add_test(tc, a_file_that_cannot_be_written_is_a_gateway_failure);
    tcase_add_test(tc, the_redis_transport_appends_to_the_gateway_stream);
    tcase_add_test(tc, the_redis_connection_is_made_on_first_send_and_remade);
    tcase_add_test(tc, the_receiver_handles_each_message_id_once);
    tcase_add_test(tc, concurrent_sends_arrive_whole);
    tcase_add_test(tc, the_null_transport_accepts_everything);
    tcase_add_test(tc, bad_settings_are_refused_naming_the_variable);
    tcase_add_test(tc, malformed_messages_are_refused_and_not_counted);
    tcase_add_test(tc, metrics_group_every_gateway_under_one_type_line);
    tcase_add_test(tc, latency_is_slept_without_the_lock);
    suite_add_tcase(s, tc);
    return th_run(s);
}
