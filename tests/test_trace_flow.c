/*
 * One trace per command, end to end (es-command, es-relay, es-projector
 * and es-saga over a database and a stream of their own): an order placed
 * with a caller's traceparent keeps that trace id in the answer, in the
 * metadata of its events, in the relay's message headers, in the
 * projector's record and in every command its saga sends; `esctl trace`
 * of the trace id, the order id and the saga id lists every stage in
 * order (accepted <= committed <= published <= projected; the saga's
 * steps; the events the saga's commands caused), with the slowest marked.
 * A malformed traceparent starts a new trace instead of failing.
 */
#include <jansson.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "feed.h"
#include "harness.h"
#include "store.h"
#include "trace.h"

#define TID "0af7651916cd43dd8448eb211c80319c"
#define PARENT "b7ad6b7169203331"

static th_daemon cmd, relay, proj, saga;
static char dbname[64], conninfo[512], tag[40], stream_name[64];
static char envs[8][700];
static const char *env[9];
static es_store *store;

static json_t *
post(const char *path, const char *headers, const char *body, int want, char *traceparent)
{
    th_response r;
    char h[512];
    json_t *j;
    int st;

    snprintf(h, sizeof h, "Content-Type: application/json\r\n%s", headers ? headers : "");
    st = th_http(cmd.port, "POST", path, h, body, &r);
    ck_assert_msg(st == want, "POST %s: %d: %s", path, st, r.body ? r.body : "");
    if (traceparent != NULL &&
        th_header(&r, "traceparent", traceparent, ES_TRACEPARENT_LEN + 1) == NULL)
        traceparent[0] = '\0';
    j = json_loads(r.body, 0, NULL);
    th_response_free(&r);
    return j;
}

/* The saga's state: waits until it is completed (or gives up). */
static void
wait_completed(const char *saga_id)
{
    char s[300];

    snprintf(s, sizeof s, "saga-%s", saga_id);
    for (int i = 0; i < 600; i++) {
        es_page *p = NULL;
        es_error err;
        bool done = false;

        if (es_store_read_stream(store, s, 0, 1000, ES_FORWARD, &p, &err) == ES_OK) {
            for (size_t k = 0; k < p->count; k++)
                if (strcmp(p->events[k].type, "SagaStateChanged") == 0 &&
                    strstr(p->events[k].data, "\"completed\"") != NULL)
                    done = true;
            es_page_destroy(p);
        }
        if (done)
            return;
        usleep(100 * 1000);
    }
    ck_abort_msg("saga %s did not complete", saga_id);
}

/* esctl --json trace arg, parsed. */
static json_t *
esctl_trace(const char *arg)
{
    const char *argv[] = {"esctl", "--json", "trace", arg, NULL};
    const char *e[] = {envs[0], envs[1], envs[2], NULL};
    static char out[1 << 20];
    json_t *j;
    int rc = th_program_output(argv, e, out, sizeof out);

    ck_assert_msg(rc == 0, "esctl trace %s: %d: %s", arg, rc, out);
    j = json_loads(out, 0, NULL);
    ck_assert_msg(j != NULL, "esctl trace %s printed no JSON: %s", arg, out);
    return j;
}

/* The first stage of kind stage (and type / projection, when given). */
static const json_t *
find(const json_t *stages, const char *stage, const char *type, const char *projection)
{
    size_t i;
    const json_t *r;

    json_array_foreach(stages, i, r) {
        const char *t = json_string_value(json_object_get(r, "type"));
        const char *p = json_string_value(json_object_get(r, "projection"));

        if (strcmp(json_string_value(json_object_get(r, "stage")), stage) == 0 &&
            (type == NULL || (t && strcmp(t, type) == 0)) &&
            (projection == NULL || (p && strcmp(p, projection) == 0)))
            return r;
    }
    return NULL;
}

static json_int_t
at(const json_t *r)
{
    return json_integer_value(json_object_get(r, "at_us"));
}

/* Waits until the projector's record holds a projected stage of type. */
static json_t *
trace_when_projected(const char *arg, const char *type)
{
    for (int i = 0; i < 300; i++) {
        json_t *j = esctl_trace(arg);
        const json_t *st = json_object_get(j, "stages");
        size_t k;
        const json_t *r;
        bool seen = false;

        json_array_foreach(st, k, r) {
            const json_t *seq = json_object_get(r, "seq");
            const json_t *q;
            size_t m;

            if (strcmp(json_string_value(json_object_get(r, "stage")), "published") != 0 ||
                strcmp(json_string_value(json_object_get(r, "type")), type) != 0)
                continue;
            json_array_foreach(st, m, q)
                if (strcmp(json_string_value(json_object_get(q, "stage")), "projected") == 0 &&
                    json_integer_value(json_object_get(q, "seq")) == json_integer_value(seq))
                    seen = true;
        }
        if (seen)
            return j;
        json_decref(j);
        usleep(100 * 1000);
    }
    ck_abort_msg("no projected stage of %s in the trace of %s", type, arg);
    return NULL;
}

START_TEST(an_order_is_one_trace_from_command_to_saga)
{
    char customer[80], sku[80], path[200], body[400], tp[ES_TRACEPARENT_LEN + 1];
    char saga_id[200], stream[200];
    json_t *j, *t;
    const json_t *stages, *acc, *com, *pub, *prj, *r;
    const char *order;
    es_trace got;
    es_page *p = NULL;
    es_error err;
    size_t i;
    int slowest = 0;

    th_unique(customer, sizeof customer, "tc");
    th_unique(sku, sizeof sku, "ts");
    snprintf(path, sizeof path, "/v1/customers/%s/deposits", customer);
    json_decref(post(path, NULL, "{\"amount\":100000}", 201, NULL));
    snprintf(path, sizeof path, "/v1/inventory/%s/restock", sku);
    json_decref(post(path, NULL, "{\"quantity\":10}", 201, NULL));

    snprintf(body, sizeof body,
             "{\"customer_id\":\"%s\",\"items\":[{\"sku\":\"%s\",\"quantity\":2,"
             "\"unit_price\":100}]}", customer, sku);
    j = post("/v1/orders", "traceparent: 00-" TID "-" PARENT "-01\r\n", body, 201, tp);
    order = json_string_value(json_object_get(j, "order_id"));
    ck_assert_ptr_nonnull(order);

    /* the answer continues the caller's trace with a span of its own */
    ck_assert_msg(es_traceparent_parse(tp, strlen(tp), &got), "answered traceparent \"%s\"", tp);
    ck_assert_str_eq(got.trace_id, TID);
    ck_assert_str_ne(got.parent_id, PARENT);

    /* the event's metadata: the trace, this span, the caller's span */
    snprintf(stream, sizeof stream, "order-%s", order);
    ck_assert_int_eq(es_store_read_stream(store, stream, 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_ptr_nonnull(strstr(p->events[0].metadata, "\"trace_id\": \"" TID "\""));
    ck_assert_ptr_nonnull(strstr(p->events[0].metadata, "\"parent_span_id\": \"" PARENT "\""));
    ck_assert_ptr_nonnull(strstr(p->events[0].metadata, got.parent_id));
    ck_assert_ptr_nonnull(strstr(p->events[0].metadata, "\"accepted_at\""));
    es_page_destroy(p);

    snprintf(saga_id, sizeof saga_id, "order-%s", order);
    wait_completed(saga_id);
    t = trace_when_projected(TID, "OrderConfirmed");
    ck_assert_str_eq(json_string_value(json_object_get(t, "trace_id")), TID);
    ck_assert_str_eq(json_string_value(json_object_get(t, "saga_id")), saga_id);
    ck_assert(json_is_true(json_object_get(t, "recorded")));
    stages = json_object_get(t, "stages");

    /* the order's own stages, in order */
    acc = find(stages, "accepted", NULL, NULL);
    com = find(stages, "committed", "OrderPlaced", NULL);
    pub = find(stages, "published", "OrderPlaced", NULL);
    prj = find(stages, "projected", NULL, "orders");
    ck_assert_ptr_nonnull(acc);
    ck_assert_ptr_nonnull(com);
    ck_assert_ptr_nonnull(pub);
    ck_assert_ptr_nonnull(prj);
    ck_assert_int_le(at(acc), at(com));
    ck_assert_int_le(at(com), at(pub));
    for (i = 0; i < json_array_size(stages); i++) {
        r = json_array_get(stages, i);
        if (i > 0)      /* sorted by time */
            ck_assert_int_le(at(json_array_get(stages, i - 1)), at(r));
        if (strcmp(json_string_value(json_object_get(r, "stage")), "projected") == 0 &&
            json_integer_value(json_object_get(r, "seq")) ==
                json_integer_value(json_object_get(pub, "seq")))
            ck_assert_int_le(at(pub), at(r));
        slowest += json_is_true(json_object_get(r, "slowest"));
    }
    ck_assert_int_eq(slowest, 1);
    ck_assert(json_is_object(json_object_get(t, "slowest")));

    /* the saga's steps and what its commands caused share the trace */
    ck_assert_ptr_nonnull(find(stages, "saga", "SagaStarted", NULL));
    ck_assert_ptr_nonnull(find(stages, "saga", "SagaStepStarted", NULL));
    ck_assert_ptr_nonnull(find(stages, "saga", "SagaStepSucceeded", NULL));
    ck_assert_ptr_nonnull(find(stages, "committed", "PaymentCharged", NULL));
    ck_assert_ptr_nonnull(find(stages, "published", "ShipmentCreated", NULL));
    ck_assert_ptr_nonnull(find(stages, "committed", "OrderConfirmed", NULL));
    ck_assert_ptr_nonnull(find(stages, "accepted", NULL, NULL));
    {
        /* the saga's commands were accepted as commands of their own */
        int commands = 0;
        json_array_foreach(stages, i, r)
            commands += strcmp(json_string_value(json_object_get(r, "stage")), "accepted") == 0;
        ck_assert_int_ge(commands, 4);      /* the order, payment, stock, shipment, ... */
    }
    json_decref(t);

    /* the table for people: every stage, the slowest marked */
    {
        const char *argv[] = {"esctl", "trace", TID, NULL};
        const char *e[] = {envs[0], envs[1], envs[2], NULL};
        static char out[1 << 18];

        ck_assert_int_eq(th_program_output(argv, e, out, sizeof out), 0);
        ck_assert_ptr_nonnull(strstr(out, "trace " TID ", saga order-"));
        ck_assert_ptr_nonnull(strstr(out, " accepted "));
        ck_assert_ptr_nonnull(strstr(out, " projected "));
        ck_assert_ptr_nonnull(strstr(out, "<- slowest"));
        if (getenv("TRACE_SHOW"))
            fputs(out, stderr);
    }

    /* the order id and the saga id find the same trace */
    t = esctl_trace(order);
    ck_assert_str_eq(json_string_value(json_object_get(t, "trace_id")), TID);
    json_decref(t);
    t = esctl_trace(saga_id);
    ck_assert_str_eq(json_string_value(json_object_get(t, "trace_id")), TID);
    json_decref(t);
    json_decref(j);
}
END_TEST

START_TEST(the_relay_sends_the_trace_in_a_header)
{
    es_jetstream n = {0};
    char prefix[80];
    uint64_t last = 0;
    int traced = 0;
    es_error err;

    /* each message of an event with a trace carries it as traceparent:
     * the trace id and the span of the command that wrote the event */
    setenv("ES_RELAY_STREAM", stream_name, 1);
    snprintf(prefix, sizeof prefix, "%s.events", tag);
    setenv("ES_RELAY_SUBJECT_PREFIX", prefix, 1);
    ck_assert_int_eq(es_jetstream_open(&n, &err), ES_OK);
    ck_assert_int_eq(es_jetstream_last_seq(&n, &last, &err), ES_OK);
    ck_assert_uint_gt(last, 0);
    for (uint64_t seq = 1; seq <= last; seq++) {
        natsMsg *m = NULL;
        jsErrCode jerr = 0;
        const char *h = NULL;
        json_t *body, *meta;
        es_trace t;

        ck_assert_int_eq(js_GetMsg(&m, n.js, n.stream, seq, NULL, &jerr), NATS_OK);
        body = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
        meta = json_object_get(body, "metadata");
        if (json_object_get(meta, "trace_id") != NULL) {
            ck_assert_int_eq(natsMsgHeader_Get(m, "traceparent", &h), NATS_OK);
            ck_assert_msg(es_traceparent_parse(h, strlen(h), &t), "header \"%s\"", h);
            ck_assert_str_eq(t.trace_id, json_string_value(json_object_get(meta, "trace_id")));
            ck_assert_str_eq(t.parent_id, json_string_value(json_object_get(meta, "span_id")));
            traced++;
        } else {
            ck_assert_int_eq(natsMsgHeader_Get(m, "traceparent", &h), NATS_NOT_FOUND);
        }
        json_decref(body);
        natsMsg_Destroy(m);
    }
    ck_assert_int_gt(traced, 0);
    es_jetstream_close(&n);
}
END_TEST

START_TEST(a_malformed_traceparent_starts_a_new_trace)
{
    static const char *const bad[] = {
        "traceparent: 00-" TID "-" PARENT "-1\r\n",
        "traceparent: 00-00000000000000000000000000000000-" PARENT "-01\r\n",
        "traceparent: zz\r\n",
        "",
    };
    char sku[80], path[200], tp[ES_TRACEPARENT_LEN + 1];
    es_trace got;

    th_unique(sku, sizeof sku, "tm");
    snprintf(path, sizeof path, "/v1/inventory/%s/restock", sku);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_decref(post(path, bad[i], "{\"quantity\":1}", 201, tp));
        ck_assert_msg(es_traceparent_parse(tp, strlen(tp), &got), "answered \"%s\"", tp);
        ck_assert_str_ne(got.trace_id, TID);
    }
    /* the raw append takes it too (the event-loop path) */
    json_decref(post("/v1/streams/tracetest-1/events",
                     "traceparent: 00-" TID "-" PARENT "-01\r\n",
                     "{\"expected_version\":\"any\",\"events\":[{\"type\":\"Noted\",\"data\":{},\"metadata\":{\"k\":1}}]}", 201,
                     tp));
    ck_assert(es_traceparent_parse(tp, strlen(tp), &got));
    ck_assert_str_eq(got.trace_id, TID);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("trace_flow");
    TCase *tc = tcase_create("trace_flow");
    es_error err;
    int rc;

    th_db_create(dbname, sizeof dbname, conninfo, sizeof conninfo);
    th_redis_flush();
    th_unique(tag, sizeof tag, "tf");
    th_unique(stream_name, sizeof stream_name, "TF");
    for (char *c = stream_name; *c; c++)
        if (*c == '-')
            *c = '_';
    snprintf(envs[0], sizeof envs[0], "ES_PG_CONNINFO=%s", conninfo);
    snprintf(envs[1], sizeof envs[1], "ES_RELAY_STREAM=%s", stream_name);
    snprintf(envs[2], sizeof envs[2], "ES_NATS_URL=%s", getenv("ES_NATS_URL"));
    snprintf(envs[3], sizeof envs[3], "ES_RELAY_SUBJECT_PREFIX=%s.events", tag);
    snprintf(envs[4], sizeof envs[4], "ES_RELAY_WAKE_SUBJECT=%s.wake", tag);
    snprintf(envs[5], sizeof envs[5], "ES_COMMAND_SUBJECT_PREFIX=%s.cmd", tag);
    snprintf(envs[6], sizeof envs[6], "ES_SAGA_RETRY_BASE_MS=50");
    snprintf(envs[7], sizeof envs[7], "ES_GATEWAY_NOTIFICATION_TRANSPORT=null");
    for (int i = 0; i < 8; i++)
        env[i] = envs[i];
    env[8] = NULL;
    if (es_store_open(&store, conninfo, &err) != ES_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 2;
    }
    th_daemon_start(&cmd, "es-command", "ES_COMMAND_PORT", env);
    th_daemon_start(&relay, "es-relay", "ES_RELAY_PORT", env);
    th_daemon_start(&proj, "es-projector", "ES_PROJECTOR_PORT", env);
    th_daemon_start(&saga, "es-saga", "ES_SAGA_PORT", env);

    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, an_order_is_one_trace_from_command_to_saga);
    tcase_add_test(tc, the_relay_sends_the_trace_in_a_header);
    tcase_add_test(tc, a_malformed_traceparent_starts_a_new_trace);
    suite_add_tcase(s, tc);
    rc = th_run_nofork(s);
    rc |= th_daemon_stop(&saga);
    rc |= th_daemon_stop(&proj);
    rc |= th_daemon_stop(&relay);
    rc |= th_daemon_stop(&cmd);
    es_store_close(store);
    th_stream_delete(stream_name);
    nats_Close();
    th_db_drop(dbname);
    return rc;
}
