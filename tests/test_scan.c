/*
 * Unit tests of events/scan.c: es-projector's decoder without a jansson
 * tree must give what es_feed_event_decode (jansson) gives, for every
 * message: the same refusal with the same reason, or the same event, on
 * which every projection writes the same batch byte for byte (so the read
 * models stay what a rebuild, which decodes with jansson, builds).  Fixed
 * cases, then random events and random damage to them.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "feed.h"
#include "harness.h"
#include "projections.h"
#include "readmodel.h"

static int scanned;     /* messages es_feed_event_scan decoded itself */

static void
same_str(const char *a, const char *b, const char *what, const char *body)
{
    if (a == NULL || b == NULL)
        ck_assert_msg(a == b, "%s: %s against %s in %s", what, a ? a : "NULL", b ? b : "NULL",
                      body);
    else
        ck_assert_msg(strcmp(a, b) == 0, "%s: \"%s\" against \"%s\" in %s", what, a, b, body);
}

static void
same_batch(const es_rm_batch *a, const es_rm_batch *b, const char *body)
{
    size_t i;

    ck_assert_msg(a->n == b->n, "args: %zu against %zu in %s", a->n, b->n, body);
    ck_assert_msg(a->arena.len == b->arena.len &&
                      memcmp(a->arena.data, b->arena.data, a->arena.len) == 0,
                  "batches differ: %.*s against %.*s in %s", (int)a->arena.len, a->arena.data,
                  (int)b->arena.len, b->arena.data, body);
    for (i = 0; i < a->n; i++)
        ck_assert_msg(a->args[i].off == b->args[i].off && a->args[i].len == b->args[i].len &&
                          a->args[i].num == b->args[i].num &&
                          a->args[i].is_num == b->args[i].is_num,
                      "arg %zu differs in %s", i, body);
    ck_assert_uint_eq(a->events, b->events);
    ck_assert_uint_eq(a->last_seq, b->last_seq);
}

/* Decodes body both ways and checks that they agree in everything a
 * projection or the projector reads. */
static void
compare(const char *body, size_t len)
{
    es_feed_event s, j;
    es_error serr, jerr;
    es_status ss, js;
    size_t i;

    ss = es_feed_event_scan(body, len, 42, &s, &serr);
    js = es_feed_event_decode(body, len, 42, &j, &jerr);
    ck_assert_msg(ss == js, "status %d against %d for %.*s", ss, js, (int)len, body);
    if (ss != ES_OK) {
        same_str(serr.message, jerr.message, "reason", body);
        ck_assert_ptr_null(s.arena_);
        goto done;
    }
    if (s.data == NULL)
        scanned++;
    ck_assert_uint_eq(s.seq, j.seq);
    same_str(s.position, j.position, "position", body);
    same_str(s.stream, j.stream, "stream", body);
    same_str(s.type, j.type, "type", body);
    same_str(s.event_id, j.event_id, "event_id", body);
    same_str(s.recorded_at, j.recorded_at, "recorded_at", body);
    same_str(s.trace_id, j.trace_id, "trace_id", body);
    ck_assert_msg((s.category_end ? s.category_end - s.stream : -1) ==
                      (j.category_end ? j.category_end - j.stream : -1),
                  "category in %s", body);
    for (i = 0; i < pj_projection_count; i++) {
        es_rm_batch a, b;
        es_error aerr, berr;
        es_status as, bs;

        es_rm_batch_init(&a, pj_projections[i].name, NULL);
        es_rm_batch_init(&b, pj_projections[i].name, NULL);
        as = pj_add(&a, &pj_projections[i], &s, &aerr);
        bs = pj_add(&b, &pj_projections[i], &j, &berr);
        ck_assert_msg(as == bs, "%s: %d against %d for %s", pj_projections[i].name, as, bs,
                      body);
        if (as != ES_OK)
            same_str(aerr.message, berr.message, pj_projections[i].name, body);
        same_batch(&a, &b, body);
        es_rm_batch_free(&a);
        es_rm_batch_free(&b);
    }
done:
    es_feed_event_free(&s);
    es_feed_event_free(&j);
}

static void
compare_str(const char *body)
{
    compare(body, strlen(body));
}

/* A message of the stream as the relay writes it (jsonb's spacing in
 * data and metadata). */
static void
message(es_buf *b, const char *stream, const char *type, const char *data, const char *meta)
{
    es_buf_reset(b);
    es_buf_printf(b,
                  "{\"event_id\":\"00000000-0000-4000-8000-000000000001\",\"type\":\"%s\","
                  "\"version\":3,\"position\":\"100-7\",\"data\":%s,\"metadata\":%s,"
                  "\"recorded_at\":\"2026-11-22T00:00:00.000000Z\",\"stream\":\"%s\"}",
                  type, data, meta, stream);
}

static const struct {
    const char *stream, *type, *data;
} events[] = {
    {"order-o1", "OrderPlaced",
     "{\"items\": [{\"sku\": \"sku-1\", \"quantity\": 2, \"unit_price\": 1999}], \"total\": 3998, "
     "\"ship_to\": {\"zip\": \"10115\", \"city\": \"Berlin\", \"country\": \"DE\"}, "
     "\"order_id\": \"o1\", \"customer_id\": \"c-1\"}"},
    {"order-o1", "OrderPlaced",
     "{\"order_id\": \"o\\\"1\\\\\", \"customer_id\": \"c\\n\\t\\u00e9\", \"total\": -0, "
     "\"items\": []}"},
    {"order-o1", "OrderPlaced",
     "{\"order_id\": \"o1\", \"customer_id\": \"c\", \"total\": 1.5, \"items\": [1.25]}"},
    {"order-o1", "OrderPlaced",
     "{\"order_id\": \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\", \"customer_id\": \"c\", \"total\": "
     "999999999999999999, \"items\": [{\"a\": [true, false, null, \"\\b\\f\\r\"]}]}"},
    {"order-o1", "OrderPlaced",
     "{\"order_id\": \"o1\", \"customer_id\": \"c\", \"total\": 1000000000000001, \"items\": []}"},
    {"order-o1", "OrderPlaced", "{\"order_id\": \"o1\", \"customer_id\": \"c\", \"total\": 5}"},
    {"order-o1", "OrderPlaced",
     "{\"order_id\": \"\", \"customer_id\": \"c\", \"total\": 5, \"items\": {}}"},
    {"order-o1", "OrderConfirmed", "{\"order_id\": \"o1\"}"},
    {"order-o1", "OrderCancelled", "{\"order_id\": \"o1\", \"reason\": \"a \\\"b\\\"\\u001f\"}"},
    {"order-o1", "OrderFailed", "{\"order_id\": \"o1\", \"reason\": \"x\\ty\"}"},
    {"account-c1", "PaymentCharged", "{\"order_id\": \"o1\", \"customer_id\": \"c1\", "
                                     "\"amount\": 250}"},
    {"account-c1", "PaymentRefunded", "{\"order_id\": \"o1\", \"customer_id\": \"c1\", "
                                      "\"amount\": 50}"},
    {"account-c1", "PaymentDeclined", "{\"order_id\": \"o1\", \"amount\": 7}"},
    {"account-c1", "FundsDeposited", "{\"customer_id\": \"c1\", \"amount\": -3}"},
    {"reservation-r1", "ReservationMade",
     "{\"order_id\": \"o1\", \"items\": [{\"sku\": \"s\\\\1\", \"quantity\": 3}]}"},
    {"reservation-r1", "ReservationRejected", "{\"order_id\": \"o1\", \"sku\": \"s\\n\"}"},
    {"reservation-r1", "ReservationReleased", "{\"order_id\": \"o1\"}"},
    {"shipment-s1", "ShipmentCreated",
     "{\"order_id\": \"o1\", \"tracking_id\": \"t\", \"country\": \"DE\"}"},
    {"shipment-s1", "ShipmentRejected", "{\"order_id\": \"o1\", \"reason\": \"no\"}"},
    {"shipment-s1", "ShipmentCancelled", "{\"order_id\": \"o1\"}"},
    {"stock-sku1", "StockRestocked", "{\"sku\": \"sku1\", \"quantity\": 10}"},
    {"stock-sku1", "StockReserved", "{\"sku\": \"sku1\", \"quantity\": 2}"},
    {"stock-sku1", "StockReleased", "{\"sku\": \"sku1\", \"quantity\": 1}"},
    {"user-u1", "UserRegistered",
     "{\"user_id\": \"u1\", \"email\": \"A@Example.COM\", \"name\": \"Ann\"}"},
    {"user-u1", "UserVerificationRecorded",
     "{\"user_id\": \"u1\", \"result\": \"ok\", \"level\": 100}"},
    {"user-u1", "UserRejected", "{\"user_id\": \"u1\", \"reason\": 5}"},
    {"profile-u1", "ProfileCreated",
     "{\"user_id\": \"u1\", \"settings\": {\"theme\": \"dark\", \"n\": [1, {}]}}"},
    {"profile-u1", "ProfileCreated", "{\"user_id\": \"u1\", \"settings\": []}"},
    {"profile-u1", "ProfileDeleted", "{\"user_id\": \"u1\"}"},
    {"saga-g1", "SagaStarted",
     "{\"saga_id\": \"g1\", \"type\": \"order\", \"correlation_id\": \"o1\"}"},
    {"saga-g1", "SagaStepStarted", "{\"saga_id\": \"g1\", \"step\": \"pay\", \"attempt\": 1}"},
    {"saga-g1", "SagaStepFailed", "{\"saga_id\": \"g1\", \"step\": \"pay\", \"attempt\": 2, "
                                  "\"error\": \"e\", \"will_retry\": true}"},
    {"saga-g1", "SagaStepSucceeded", "{\"saga_id\": \"g1\", \"step\": \"pay\", \"attempt\": 2}"},
    {"saga-g1", "SagaCompensationStarted",
     "{\"saga_id\": \"g1\", \"step\": \"pay\", \"attempt\": null}"},
    {"saga-g1", "SagaCompensationFailed", "{\"saga_id\": \"g1\", \"step\": \"p:y\"}"},
    {"saga-g1", "SagaStateChanged",
     "{\"saga_id\": \"g1\", \"type\": \"order\", \"from\": \"running\", \"to\": \"done\", "
     "\"error\": \"x\"}"},
    {"other-1", "Whatever", "{}"},
    {"nodash", "OrderPlaced", "{\"order_id\": \"o1\"}"},
};

START_TEST(events_as_jansson)
{
    es_buf b = ES_BUF_INIT;
    size_t i;

    for (i = 0; i < sizeof events / sizeof events[0]; i++) {
        message(&b, events[i].stream, events[i].type, events[i].data,
                "{\"trace_id\": \"0af7651916cd43dd8448eb211c80319c\", \"x\": [1]}");
        compare(b.data, b.len);
        message(&b, events[i].stream, events[i].type, events[i].data, "{}");
        compare(b.data, b.len);
    }
    /* the messages of the projector's own workload are its own to decode */
    ck_assert_int_ge(scanned, 60);
    es_buf_free(&b);
}
END_TEST

START_TEST(the_common_event_is_scanned)
{
    es_buf b = ES_BUF_INIT;
    es_feed_event e;
    es_feed_value v;
    es_error err;

    message(&b, "order-o1", "OrderPlaced", events[0].data,
            "{\"trace_id\": \"t\\\"1\", \"trace_id2\": 3}");
    ck_assert_int_eq(es_feed_event_scan(b.data, b.len, 9, &e, &err), ES_OK);
    ck_assert_ptr_null(e.data);
    ck_assert_ptr_null(es_feed_event_json(&e));
    ck_assert_str_eq(e.trace_id, "t\"1");
    ck_assert_str_eq(e.position, "100-7");
    ck_assert_int_eq(es_feed_get(&e, "items", &v), ES_FEED_ARRAY);
    ck_assert_str_eq(v.json, "[{\"sku\":\"sku-1\",\"quantity\":2,\"unit_price\":1999}]");
    ck_assert_int_eq(es_feed_get(&e, "ship_to", &v), ES_FEED_OBJECT);
    ck_assert_str_eq(v.json, "{\"zip\":\"10115\",\"city\":\"Berlin\",\"country\":\"DE\"}");
    ck_assert_int_eq(es_feed_get(&e, "total", &v), ES_FEED_INTEGER);
    ck_assert_int_eq(v.num, 3998);
    ck_assert_int_eq(es_feed_get(&e, "customer_id", &v), ES_FEED_STRING);
    ck_assert_str_eq(v.str, "c-1");
    ck_assert_uint_eq(v.len, 3);
    ck_assert_int_eq(es_feed_get(&e, "nothing", &v), ES_FEED_ABSENT);
    es_feed_event_free(&e);
    es_buf_free(&b);
}
END_TEST

/* What it leaves to jansson: reals, \u escapes, repeated keys, depth,
 * width, big integers; and what neither takes. */
START_TEST(the_rest_goes_to_jansson)
{
    static const char *const datas[] = {
        "{\"a\": 1.0}", "{\"a\": \"\\u0041\"}", "{\"a\": \"\\/\"}", "{\"a\": 1, \"a\": 2}",
        "{\"a\": {\"b\": 1, \"b\": 1}}", "{\"a\": 1234567890123456789}",
        "{\"a\": 12345678901234567890}", "{\"a\": -0}", "{\"a\\n\": 1}", "{\"a\": 1e5}",
        "{\"a\": \"\\u0000\"}",
        "{\"order_id\": \"o\", \"customer_id\": \"c\", \"total\": 1, \"items\": [-0]}",
        "{\"order_id\": \"o\", \"customer_id\": \"c\", \"total\": 1, \"items\": [\"\\/\"]}",
        "{\"order_id\": \"o\", \"customer_id\": \"c\", \"total\": 1, \"items\": [\"\\u0041\"]}",
        "{\"order_id\": \"o\", \"customer_id\": \"c\", \"total\": 1, \"items\": [1.0]}",
        "{\"order_id\": \"o\", \"customer_id\": \"c\", \"total\": 1, \"items\": [{\"k\": 1, "
        "\"k\": 2}]}",
        "{\"a\": \"\xc0\xaf\"}", "{\"a\": \"\xed\xa0\x80\"}",
        "{\"a\": 01}", "{\"a\": -}", "{\"a\": tru}", "{\"a\": [1,]}", "{\"a\": nul}",
        "{\"a\": 1,}", "{\"a\": {\"b\": 1,}}", "{,}", "{\"a\": [,]}",
        "[]", "1", "\"x\"", "{\"a\": \"\x01\"}",
    };
    es_buf b = ES_BUF_INIT, d = ES_BUF_INIT;
    size_t i;
    int k;

    for (i = 0; i < sizeof datas / sizeof datas[0]; i++) {
        message(&b, "order-o1", "OrderPlaced", datas[i], "{}");
        compare(b.data, b.len);
        message(&b, "order-o1", "OrderPlaced", "{}", datas[i]);
        compare(b.data, b.len);
    }
    /* deeper than the scanner goes, wider than it keeps */
    es_buf_puts(&d, "{\"order_id\": \"o\", \"items\": ");
    for (k = 0; k < 40; k++)
        es_buf_puts(&d, "[");
    for (k = 0; k < 40; k++)
        es_buf_puts(&d, "]");
    es_buf_puts(&d, "}");
    message(&b, "order-o1", "OrderPlaced", d.data, "{}");
    compare(b.data, b.len);
    es_buf_reset(&d);
    es_buf_puts(&d, "{\"order_id\": \"o\"");
    for (k = 0; k < 40; k++)
        es_buf_printf(&d, ", \"k%d\": %d", k, k);
    es_buf_puts(&d, ", \"customer_id\": \"c\", \"total\": 1, \"items\": []}");
    message(&b, "order-o1", "OrderPlaced", d.data, "{}");
    compare(b.data, b.len);
    /* the envelope's own faults */
    compare_str("");
    compare_str("{");
    compare_str("{}");
    compare_str("[]");
    compare_str("{\"stream\": \"a-b\"}");
    compare_str("{\"stream\":\"a-b\",\"type\":\"T\",\"event_id\":\"e\",\"recorded_at\":\"r\","
                "\"position\":\"1-2\",\"data\":{}} x");
    compare_str("{\"stream\":\"a-b\",\"type\":\"T\",\"event_id\":\"e\",\"recorded_at\":\"r\","
                "\"position\":\"1-2\",\"data\":[]}");
    compare_str("{\"stream\":\"a-b\",\"type\":\"T\",\"event_id\":\"e\",\"recorded_at\":\"r\","
                "\"position\":\"nope\",\"data\":{}}");
    compare_str("{\"stream\":\"a-b\",\"type\":\"T\",\"event_id\":\"e\",\"recorded_at\":\"r\","
                "\"position\":\"1-2\",\"data\":{},\"stream\":\"a-b\"}");
    /* a trailing comma after the envelope's last member (the scan took
     * it once, while jansson refuses it) */
    compare_str("{\"event_id\":\"00000000-0000-4000-8000-000000000001\",\"position\":\"10-1\","
                "\"recorded_at\":\"2026-11-22T00:00:00.000000Z\",\"stream\":\"order-o1\","
                "\"type\":\"OrderPlaced\",\"data\":{\"order_id\":\"o1\"},}");
    compare_str("{\"stream\":\"a-b\",\"type\":7,\"event_id\":\"e\",\"recorded_at\":\"r\","
                "\"position\":\"1-2\",\"data\":{}}");
    compare_str("{\"stream\":\"a-b\",\"type\":\"T\",\"event_id\":\"e\",\"recorded_at\":\"r\","
                "\"position\":\"1-2\",\"data\":{},\"metadata\":\"m\"}");
    compare_str("{\"stream\":\"a-b\",\"type\":\"T\",\"event_id\":\"e\",\"recorded_at\":\"r\","
                "\"position\":\"1-2\",\"data\":{},\"metadata\":{\"trace_id\":5}}");
    {
        static const char nul[] = "{\"stream\":\"a-b\",\"type\":\"T\",\"event_id\":\"e\","
                                  "\"recorded_at\":\"r\",\"position\":\"1-2\",\"data\":{}}\0";

        compare(nul, sizeof nul - 1);
        compare(nul, sizeof nul - 2);
    }
    es_buf_free(&b);
    es_buf_free(&d);
}
END_TEST

/* ---- random events ------------------------------------------------------ */

static unsigned seed;

static unsigned
rnd(unsigned n)
{
    seed = seed * 1103515245u + 12345u;
    return (seed >> 16) % n;
}

static void
space(es_buf *b)
{
    static const char *const ws[] = {"", "", "", " ", " ", "\n", "\t ", "\r"};

    es_buf_puts(b, ws[rnd(8)]);
}

static void
rand_string(es_buf *b)
{
    static const char *const pieces[] = {
        "a", "o1", "c-7", "sku", " ", "\\\"", "\\\\", "\\n", "\\t", "\\b", "\\f", "\\r",
        "\\/", "\\u0041", "\\u001b", "\\ud83d\\ude00", "\\u0000", "\xc3\xa9", "\xe2\x82\xac",
        "\xf0\x9f\x98\x80", "\x7f", "-", ":", "\xc3", "\x01", "\xff",
    };
    int n = (int)rnd(5), i;

    es_buf_puts(b, "\"");
    for (i = 0; i < n; i++)
        es_buf_puts(b, pieces[rnd(rnd(8) == 0 ? 26 : 21)]);
    es_buf_puts(b, "\"");
}

static void rand_value(es_buf *b, int depth);

static void
rand_number(es_buf *b)
{
    static const char *const nums[] = {
        "0", "1", "-1", "3998", "100", "99", "1000000000000000", "-1000000000000000",
        "1000000000000001", "999999999999999999", "1234567890123456789",
        "99999999999999999999", "-0", "1.5", "2.0", "1e3", "-2.5E-3", "0.1", "1e400",
    };

    es_buf_puts(b, nums[rnd(sizeof nums / sizeof nums[0])]);
}

static void
rand_container(es_buf *b, int depth, bool obj)
{
    static const char *const keys[] = {"sku", "quantity", "unit_price", "a", "b", "c", "x\\n"};
    int n = (int)rnd(4), i;

    es_buf_puts(b, obj ? "{" : "[");
    space(b);
    for (i = 0; i < n; i++) {
        if (i > 0)
            es_buf_puts(b, ","), space(b);
        if (obj) {
            es_buf_printf(b, "\"%s\"", keys[rnd(rnd(6) == 0 ? 7 : 6)]);
            space(b);
            es_buf_puts(b, ":");
            space(b);
        }
        rand_value(b, depth + 1);
        space(b);
    }
    es_buf_puts(b, obj ? "}" : "]");
}

static void
rand_value(es_buf *b, int depth)
{
    switch (rnd(depth > 3 ? 6 : 8)) {
    case 0:
    case 1: rand_string(b); break;
    case 2:
    case 3: rand_number(b); break;
    case 4: es_buf_puts(b, rnd(2) ? "true" : "false"); break;
    case 5: es_buf_puts(b, "null"); break;
    case 6: rand_container(b, depth, true); break;
    default: rand_container(b, depth, false); break;
    }
}

/* An event some projection handles, with the members they read (or
 * others, or of other types) in any order. */
static void
rand_event(es_buf *b)
{
    static const char *const fields[] = {
        "order_id", "customer_id", "total", "items", "ship_to", "amount", "reason", "sku",
        "tracking_id", "country", "quantity", "user_id", "email", "name", "result", "level",
        "settings", "saga_id", "type", "step", "attempt", "error", "will_retry", "from", "to",
        "correlation_id", "zzz",
    };
    size_t ev = rnd(sizeof events / sizeof events[0]), i, n = 1 + rnd(8);
    es_buf data = ES_BUF_INIT, meta = ES_BUF_INIT;

    if (rnd(3) == 0) {
        /* a known event, one member's value replaced (the k-th ':') */
        const char *d = events[ev].data, *colon = strchr(d, ':');
        unsigned k = rnd(6);

        while (colon != NULL && k-- > 0 && strchr(colon + 1, ':') != NULL)
            colon = strchr(colon + 1, ':');
        if (colon != NULL && rnd(4)) {
            const char *end = strstr(colon, ", \"");

            es_buf_append(&data, d, (size_t)(colon - d + 1));
            space(&data);
            rand_value(&data, 1);
            es_buf_puts(&data, end ? end : "}");
        } else {
            es_buf_puts(&data, d);
        }
    } else if (rnd(2) == 0) {
        /* an event whose structured members are written back */
        static const char *const shaped[] = {"OrderPlaced", "ReservationMade", "ProfileCreated"};
        const char *type = shaped[rnd(3)];

        for (ev = 0; strcmp(events[ev].type, type) != 0; ev++)
            ;
        if (type[0] == 'P') {
            es_buf_puts(&data, "{\"user_id\": \"u1\", \"settings\": ");
            rand_container(&data, 1, true);
        } else {
            es_buf_puts(&data, "{\"order_id\": \"o1\", \"items\": ");
            rand_container(&data, 1, false);
            if (type[0] == 'O') {
                es_buf_puts(&data, ", \"customer_id\": \"c\", \"total\": 7, \"ship_to\": ");
                rand_container(&data, 1, true);
            }
        }
        es_buf_puts(&data, "}");
    } else {
        es_buf_puts(&data, "{");
        for (i = 0; i < n; i++) {
            const char *f = fields[rnd(sizeof fields / sizeof fields[0])];

            if (i > 0)
                es_buf_puts(&data, ",");
            space(&data);
            es_buf_printf(&data, "\"%s\"", f);
            space(&data);
            es_buf_puts(&data, ":");
            space(&data);
            if (strcmp(f, "items") == 0 && rnd(2))
                rand_container(&data, 1, false);
            else if ((strcmp(f, "ship_to") == 0 || strcmp(f, "settings") == 0) && rnd(2))
                rand_container(&data, 1, true);
            else if (rnd(3) && strcmp(f, "total") && strcmp(f, "amount") && strcmp(f, "level") &&
                     strcmp(f, "quantity") && strcmp(f, "attempt"))
                es_buf_printf(&data, "\"%s%u\"", f, rnd(3));
            else
                rand_value(&data, 1);
            space(&data);
        }
        es_buf_puts(&data, "}");
    }
    es_buf_puts(&meta, "{");
    if (rnd(2)) {
        es_buf_puts(&meta, "\"trace_id\":");
        space(&meta);
        if (rnd(4))
            es_buf_puts(&meta, "\"0af7651916cd43dd8448eb211c80319c\"");
        else
            rand_value(&meta, 1);
    }
    es_buf_puts(&meta, "}");
    message(b, events[ev].stream, events[ev].type, data.data, meta.data);
    es_buf_free(&data);
    es_buf_free(&meta);
}

START_TEST(random_events_as_jansson)
{
    es_buf b = ES_BUF_INIT;
    int n, first = 0;

    seed = 20261207;
    scanned = 0;
    for (n = 0; n < 30000; n++) {
        rand_event(&b);
        if (n % 4 == 3 && b.len > 0) {
            /* damage: a byte changed, dropped or cut off */
            size_t at = rnd((unsigned)b.len);
            static const char bytes[] = "{}[],:\" \\0-.e\x01\xc3";

            switch (rnd(3)) {
            case 0: b.data[at] = bytes[rnd(sizeof bytes - 1)]; break;
            case 1: memmove(b.data + at, b.data + at + 1, b.len - at), b.len--; break;
            default: b.len = at; break;
            }
        }
        compare(b.data, b.len);
        if (n == 9999)
            first = scanned;
    }
    /* both ways were taken often enough for the comparison to mean
     * something */
    ck_assert_int_ge(first, 2000);
    ck_assert_int_le(scanned, 27000);
    es_buf_free(&b);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("scan");
    TCase *tc = tcase_create("scan");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, events_as_jansson);
    tcase_add_test(tc, the_common_event_is_scanned);
    tcase_add_test(tc, the_rest_goes_to_jansson);
    tcase_add_test(tc, random_events_as_jansson);
    suite_add_tcase(s, tc);
    return th_run(s);
}
