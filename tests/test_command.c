/*
 * Integration tests of the command service over real HTTP and real NATS:
 * every endpoint of shared/API.md's command part and every error status,
 * idempotency keys, and the NATS commands the saga manager uses.  The
 * daemon runs on a free port against the test database, with its own
 * NATS subject prefix so no other instance takes its commands.
 */
#include <jansson.h>
#include <libpq-fe.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "store.h"
#include "uuid.h"

static th_daemon cmd, dead, open_cmd;
static char prefix[48], pgenv[600], prefixenv[96], natsenv[300];
static const char *JSON = "Content-Type: application/json\r\n";

/* POST with a JSON body; returns the parsed body (caller decrefs). */
static json_t *
post(const char *path, const char *body, int expect)
{
    th_response r;
    json_t *j;

    th_http(cmd.port, "POST", path, JSON, body, &r);
    ck_assert_msg(r.status == expect, "POST %s: %d, expected %d: %s", path, r.status, expect,
                  r.body ? r.body : "");
    j = json_loads(r.body, 0, NULL);
    ck_assert_ptr_nonnull(j);
    th_response_free(&r);
    return j;
}

/* GET; parses the body with jansson flags (JSON_DECODE_INT_AS_REAL for
 * pages that may hold integers past 64 bits, which events may). */
static json_t *
get_with(const char *path, int expect, size_t flags)
{
    th_response r;
    json_t *j;

    th_http(cmd.port, "GET", path, NULL, NULL, &r);
    ck_assert_msg(r.status == expect, "GET %s: %d, expected %d: %s", path, r.status, expect,
                  r.body ? r.body : "");
    j = json_loads(r.body, flags, NULL);
    th_response_free(&r);
    return j;
}

static json_t *
get(const char *path, int expect)
{
    return get_with(path, expect, 0);
}

static const char *
str(const json_t *j, const char *path)
{
    const json_t *v = j;
    char key[64];

    while (*path) {
        size_t n = strcspn(path, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, path);
        v = json_object_get(v, key);
        path += n + (path[n] == '.');
    }
    return json_string_value(v);
}

static json_int_t
num(const json_t *j, const char *key)
{
    return json_integer_value(json_object_get(j, key));
}

/* ---- the store endpoints ----------------------------------------------- */

START_TEST(append_read_and_conflicts)
{
    char stream[64], path[128], body[512], id[40];
    json_t *j;

    th_unique(stream, sizeof stream, "http");
    snprintf(path, sizeof path, "/v1/streams/%s/events", stream);
    ck_assert(es_uuid_random(id));
    snprintf(body, sizeof body,
             "{\"expected_version\":\"no_stream\",\"events\":[{\"event_id\":\"%s\",\"type\":\"A\","
             "\"data\":{\"n\":1},\"metadata\":{\"correlation_id\":\"c\"}},{\"type\":\"B\",\"data\":{}}]}",
             id);
    j = post(path, body, 201);
    ck_assert_str_eq(str(j, "stream"), stream);
    ck_assert_int_eq(num(j, "first_version"), 0);
    ck_assert_int_eq(num(j, "last_version"), 1);
    ck_assert_ptr_nonnull(str(j, "position"));
    ck_assert_ptr_nonnull(strchr(str(j, "position"), '-'));
    json_decref(j);

    /* the answer names a stream that needs escaping in JSON */
    {
        char odd[96], odd_path[160];

        snprintf(odd, sizeof odd, "%s\"q\\", stream);
        snprintf(odd_path, sizeof odd_path, "/v1/streams/%s%%22q%%5C/events", stream);
        j = post(odd_path, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"A\",\"data\":{}}]}", 201);
        ck_assert_str_eq(str(j, "stream"), odd);
        json_decref(j);
    }

    /* version conflict: 409 with the actual version */
    j = post(path, "{\"expected_version\":0,\"events\":[{\"type\":\"C\",\"data\":{}}]}", 409);
    ck_assert_str_eq(str(j, "error.code"), "version_conflict");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "error"), "actual_version")), 1);
    json_decref(j);
    j = post(path, "{\"expected_version\":1,\"events\":[{\"type\":\"C\",\"data\":{}}]}", 201);
    json_decref(j);

    /* read forward, backward, past the end */
    snprintf(path, sizeof path, "/v1/streams/%s?from=1&limit=1", stream);
    j = get(path, 200);
    ck_assert_int_eq(num(j, "version"), 2);
    ck_assert_int_eq(json_array_size(json_object_get(j, "events")), 1);
    ck_assert_str_eq(str(json_array_get(json_object_get(j, "events"), 0), "type"), "B");
    json_decref(j);
    snprintf(path, sizeof path, "/v1/streams/%s?direction=backward&limit=2", stream);
    j = get(path, 200);
    ck_assert_str_eq(str(json_array_get(json_object_get(j, "events"), 0), "type"), "C");
    json_decref(j);
    snprintf(path, sizeof path, "/v1/streams/%s", stream);
    j = get(path, 200);
    ck_assert_str_eq(str(json_array_get(json_object_get(j, "events"), 0), "metadata.correlation_id"), "c");
    ck_assert_int_eq(num(json_array_get(json_object_get(j, "events"), 0), "version"), 0);
    json_decref(j);

    j = get("/v1/streams/no-such-stream-here", 404);
    ck_assert_str_eq(str(j, "error.code"), "stream_not_found");
    json_decref(j);
    snprintf(path, sizeof path, "/v1/streams/%s?limit=0", stream);
    j = get(path, 400);
    ck_assert_str_eq(str(j, "error.field"), "limit");
    json_decref(j);
    snprintf(path, sizeof path, "/v1/streams/%s?direction=sideways", stream);
    json_decref(get(path, 400));
}
END_TEST

/* Event data is stored as sent: no rounding, no 64-bit limit. */
START_TEST(append_keeps_numbers_exact)
{
    char stream[64], path[128];
    th_response r;

    th_unique(stream, sizeof stream, "exact");
    snprintf(path, sizeof path, "/v1/streams/%s/events", stream);
    json_decref(post(path, "{\"expected_version\":\"no_stream\",\"events\":[{\"type\":\"N\\u00e9\","
                           "\"data\":{\"x\":1.000000000000000000001,\"big\":9223372036854775807,"
                           "\"long\":123456789012345678901234567890.5}}]}",
                     201));
    snprintf(path, sizeof path, "/v1/streams/%s", stream);
    th_http(cmd.port, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "1.000000000000000000001"));
    ck_assert_ptr_nonnull(strstr(r.body, "9223372036854775807"));
    ck_assert_ptr_nonnull(strstr(r.body, "123456789012345678901234567890.5"));
    ck_assert_ptr_nonnull(strstr(r.body, "\"type\":\"N\xc3\xa9\""));     /* escapes decoded */
    th_response_free(&r);
    /* an integer beyond 64 bits is refused: no reader could decode it */
    snprintf(path, sizeof path, "/v1/streams/%s/events", stream);
    json_decref(post(path, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"N\","
                           "\"data\":{\"big\":123456789012345678901234567890}}]}",
                     400));
    /* a member twice is refused */
    json_decref(post(path, "{\"expected_version\":0,\"expected_version\":0,\"events\":[{\"type\":\"A\",\"data\":{}}]}", 400));
}
END_TEST

START_TEST(append_retry_is_200_with_original)
{
    char stream[64], path[128], body[512], id[ES_UUID_LEN + 1];
    json_t *a, *b;

    th_unique(stream, sizeof stream, "retry");
    snprintf(path, sizeof path, "/v1/streams/%s/events", stream);
    ck_assert(es_uuid_random(id));
    snprintf(body, sizeof body,
             "{\"expected_version\":\"any\",\"events\":[{\"event_id\":\"%s\",\"type\":\"A\",\"data\":{}}]}",
             id);
    a = post(path, body, 201);
    b = post(path, body, 200);
    ck_assert_str_eq(str(a, "position"), str(b, "position"));
    ck_assert_int_eq(num(a, "last_version"), num(b, "last_version"));
    json_decref(a);
    json_decref(b);
}
END_TEST

START_TEST(bad_requests)
{
    th_response r;
    json_t *j;
    char big[70000], allow[64];

    /* malformed JSON: 400 with the byte offset */
    j = post("/v1/streams/x-1/events", "{\"expected_version\": 0, \"events\": [", 400);
    ck_assert_str_eq(str(j, "error.code"), "invalid_json");
    ck_assert_ptr_nonnull(strstr(str(j, "error.message"), "at byte"));
    json_decref(j);
    /* missing and mistyped fields, named */
    j = post("/v1/streams/x-1/events", "{\"events\":[{\"type\":\"A\",\"data\":{}}]}", 400);
    ck_assert_str_eq(str(j, "error.field"), "expected_version");
    json_decref(j);
    j = post("/v1/streams/x-1/events", "{\"expected_version\":\"any\",\"events\":[{\"type\":7,\"data\":{}}]}", 400);
    ck_assert_str_eq(str(j, "error.field"), "events[0].type");
    json_decref(j);
    j = post("/v1/streams/x-1/events", "{\"expected_version\":\"any\",\"events\":[{\"type\":\"A\",\"data\":[]}]}", 400);
    ck_assert_str_eq(str(j, "error.field"), "events[0].data");
    json_decref(j);
    j = post("/v1/streams/x-1/events", "{\"expected_version\":\"any\",\"events\":[]}", 400);
    ck_assert_str_eq(str(j, "error.field"), "events");
    json_decref(j);
    j = post("/v1/orders", "{\"customer_id\":\"c\",\"items\":[{\"sku\":\"s\",\"quantity\":\"2\",\"unit_price\":1}]}", 400);
    ck_assert_str_eq(str(j, "error.field"), "items[0].quantity");
    json_decref(j);
    j = post("/v1/users", "[1]", 400);
    ck_assert_str_eq(str(j, "error.code"), "not_an_object");
    json_decref(j);
    /* an id over 200 bytes in the path is a bad id, not an unknown route */
    {
        char path[400], id[260];

        memset(id, 'k', sizeof id - 1);
        id[sizeof id - 1] = '\0';
        snprintf(path, sizeof path, "/v1/streams/x-%s/events", id);
        j = post(path, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"A\",\"data\":{}}]}", 400);
        ck_assert_str_eq(str(j, "error.code"), "stream_id_too_long");
        json_decref(j);
        snprintf(path, sizeof path, "/v1/customers/%s/deposits", id);
        j = post(path, "{\"amount\":5}", 400);
        ck_assert_str_eq(str(j, "error.code"), "id_too_long");
        ck_assert_str_eq(str(j, "error.field"), "customer_id");
        json_decref(j);
    }

    /* 415 wrong content type */
    th_http(cmd.port, "POST", "/v1/users", "Content-Type: text/plain\r\n", "{}", &r);
    ck_assert_int_eq(r.status, 415);
    th_response_free(&r);
    /* 413 past the body cap (64 KiB in this test) */
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    th_http(cmd.port, "POST", "/v1/users", JSON, big, &r);
    ck_assert_int_eq(r.status, 413);
    th_response_free(&r);
    /* 404 unknown route, 405 wrong method with Allow */
    json_decref(get("/v1/nothing", 404));
    th_http(cmd.port, "DELETE", "/v1/users", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_ptr_nonnull(th_header(&r, "Allow", allow, sizeof allow));
    ck_assert_str_eq(allow, "POST");
    th_response_free(&r);
    th_http(cmd.port, "GET", "/v1/orders", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 405);
    th_response_free(&r);
}
END_TEST

START_TEST(feed_pages)
{
    char stream[64], path[160];
    json_t *j, *evs;
    const char *next;
    char after[64];

    th_unique(stream, sizeof stream, "feed");
    snprintf(path, sizeof path, "/v1/streams/%s/events", stream);
    json_decref(post(path, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"A\",\"data\":{}},{\"type\":\"B\",\"data\":{}}]}", 201));
    j = get_with("/v1/feed?limit=1000", 200, JSON_DECODE_INT_AS_REAL);
    evs = json_object_get(j, "events");
    ck_assert_int_gt(json_array_size(evs), 1);
    ck_assert_ptr_nonnull(str(json_array_get(evs, 0), "stream"));
    next = str(j, "next");
    snprintf(after, sizeof after, "%s", next);
    json_decref(j);
    /* to the end of the feed (other tests of this database wrote more) */
    for (;;) {
        snprintf(path, sizeof path, "/v1/feed?after=%s&limit=1000", after);
        j = get_with(path, 200, JSON_DECODE_INT_AS_REAL);
        if (json_array_size(json_object_get(j, "events")) == 0) {
            json_decref(j);
            break;
        }
        snprintf(after, sizeof after, "%s", str(j, "next"));
        json_decref(j);
    }
    snprintf(path, sizeof path, "/v1/feed?after=%s&limit=5", after);
    j = get_with(path, 200, JSON_DECODE_INT_AS_REAL);
    ck_assert_str_eq(str(j, "next"), after);    /* nothing after: next stays */
    json_decref(j);
    json_decref(get("/v1/feed?after=nonsense", 400));
    json_decref(get("/v1/feed?limit=5000", 400));
}
END_TEST

/* ---- domain commands over HTTP ------------------------------------------- */

START_TEST(users_and_email_uniqueness)
{
    char email[96], body[256], upper[96];
    json_t *j;

    th_unique(email, sizeof email, "ann");
    strcat(email, "@example.com");
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Ann\"}", email);
    j = post("/v1/users", body, 201);
    ck_assert_ptr_nonnull(str(j, "user_id"));
    ck_assert_ptr_nonnull(str(j, "position"));
    json_decref(j);
    for (size_t i = 0; i <= strlen(email); i++)
        upper[i] = (char)(email[i] >= 'a' && email[i] <= 'z' ? email[i] - 32 : email[i]);
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Other\"}", upper);
    j = post("/v1/users", body, 409);
    ck_assert_str_eq(str(j, "error.code"), "email_taken");
    json_decref(j);
    j = post("/v1/users", "{\"email\":\"not-an-email\",\"name\":\"X\"}", 400);
    ck_assert_str_eq(str(j, "error.field"), "email");
    json_decref(j);
    j = post("/v1/users", "{\"email\":\"x@y.z\"}", 400);
    ck_assert_str_eq(str(j, "error.field"), "name");
    json_decref(j);
}
END_TEST

START_TEST(deposits_restock_orders_cancel)
{
    char cust[64], sku[64], path[160], body[512], order[64];
    json_t *j;

    th_unique(cust, sizeof cust, "cust");
    th_unique(sku, sizeof sku, "sku");
    snprintf(path, sizeof path, "/v1/customers/%s/deposits", cust);
    j = post(path, "{\"amount\":5000}", 201);
    ck_assert_int_eq(num(j, "balance"), 5000);
    json_decref(j);
    j = post(path, "{\"amount\":250}", 201);
    ck_assert_int_eq(num(j, "balance"), 5250);
    json_decref(j);
    json_decref(post(path, "{\"amount\":0}", 400));
    json_decref(post(path, "{\"amount\":\"10\"}", 400));

    snprintf(path, sizeof path, "/v1/inventory/%s/restock", sku);
    j = post(path, "{\"quantity\":7}", 201);
    ck_assert_int_eq(num(j, "available"), 7);
    json_decref(j);
    json_decref(post(path, "{\"quantity\":-1}", 400));

    snprintf(body, sizeof body,
             "{\"customer_id\":\"%s\",\"items\":[{\"sku\":\"%s\",\"quantity\":2,\"unit_price\":1999},"
             "{\"sku\":\"%s\",\"quantity\":1,\"unit_price\":1}]}", cust, sku, sku);
    j = post("/v1/orders", body, 201);
    ck_assert_int_eq(num(j, "total"), 3999);
    ck_assert_str_eq(str(j, "status"), "pending");
    snprintf(order, sizeof order, "%s", str(j, "order_id"));
    json_decref(j);
    /* total overflow is refused */
    json_decref(post("/v1/orders", "{\"customer_id\":\"c\",\"items\":["
                                   "{\"sku\":\"a\",\"quantity\":1000000,\"unit_price\":1000000000000},"
                                   "{\"sku\":\"b\",\"quantity\":1000000,\"unit_price\":1000000000000},"
                                   "{\"sku\":\"c\",\"quantity\":1000000,\"unit_price\":1000000000000},"
                                   "{\"sku\":\"d\",\"quantity\":1000000,\"unit_price\":1000000000000},"
                                   "{\"sku\":\"e\",\"quantity\":1000000,\"unit_price\":1000000000000},"
                                   "{\"sku\":\"f\",\"quantity\":1000000,\"unit_price\":1000000000000},"
                                   "{\"sku\":\"g\",\"quantity\":1000000,\"unit_price\":1000000000000},"
                                   "{\"sku\":\"h\",\"quantity\":1000000,\"unit_price\":1000000000000},"
                                   "{\"sku\":\"i\",\"quantity\":1000000,\"unit_price\":1000000000000},"
                                   "{\"sku\":\"j\",\"quantity\":1000000,\"unit_price\":1000000000000}]}", 400));

    snprintf(path, sizeof path, "/v1/orders/%s/cancel", order);
    j = post(path, NULL, 200);
    ck_assert_str_eq(str(j, "status"), "cancelled");
    json_decref(j);
    json_decref(post(path, NULL, 200));         /* again: still cancelled */
    json_decref(post("/v1/orders/no-such-order/cancel", NULL, 404));
}
END_TEST

START_TEST(idempotency_keys)
{
    char cust[64], path[160], key[120];
    th_response a, b, c;
    char hdr[200], replayed[16];

    th_unique(cust, sizeof cust, "idem");
    th_unique(key, sizeof key, "key");
    snprintf(path, sizeof path, "/v1/customers/%s/deposits", cust);
    snprintf(hdr, sizeof hdr, "Content-Type: application/json\r\nIdempotency-Key: %s\r\n", key);
    th_http(cmd.port, "POST", path, hdr, "{\"amount\":100}", &a);
    th_http(cmd.port, "POST", path, hdr, "{\"amount\":100}", &b);
    ck_assert_int_eq(a.status, 201);
    ck_assert_int_eq(b.status, 201);
    ck_assert_str_eq(a.body, b.body);
    ck_assert_ptr_nonnull(th_header(&b, "Idempotent-Replayed", replayed, sizeof replayed));
    /* deposited once */
    th_http(cmd.port, "POST", path, JSON, "{\"amount\":1}", &c);
    ck_assert_ptr_nonnull(strstr(c.body, "\"balance\":101"));
    th_response_free(&c);
    /* the same key with another body */
    th_http(cmd.port, "POST", path, hdr, "{\"amount\":999}", &c);
    ck_assert_int_eq(c.status, 422);
    ck_assert_ptr_nonnull(strstr(c.body, "idempotency_key_reused"));
    th_response_free(&a);
    th_response_free(&b);
    th_response_free(&c);
}
END_TEST

START_TEST(health_metrics_unavailable)
{
    th_response r;
    json_t *j;
    char retry[16];

    json_decref(get("/healthz", 200));
    j = get("/readyz", 200);
    ck_assert_str_eq(str(j, "postgres"), "ok");
    json_decref(j);
    th_http(cmd.port, "GET", "/metrics", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "es_command_http_requests_total{class=\"2xx\"}"));
    th_response_free(&r);
    /* a service whose PostgreSQL is down answers 503 with Retry-After */
    th_http(dead.port, "POST", "/v1/users", JSON, "{\"email\":\"a@b.cd\",\"name\":\"A\"}", &r);
    ck_assert_int_eq(r.status, 503);
    ck_assert_ptr_nonnull(th_header(&r, "Retry-After", retry, sizeof retry));
    th_response_free(&r);
    /* and so does a plain append, answered from the committer's callback */
    th_http(dead.port, "POST", "/v1/streams/down-1/events", JSON,
            "{\"expected_version\":\"any\",\"events\":[{\"type\":\"A\",\"data\":{}}]}", &r);
    ck_assert_int_eq(r.status, 503);
    ck_assert_ptr_nonnull(th_header(&r, "Retry-After", retry, sizeof retry));
    ck_assert_ptr_nonnull(strstr(r.body, "\"store_unavailable\""));
    th_response_free(&r);
    th_http(dead.port, "GET", "/readyz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 503);
    th_response_free(&r);
}
END_TEST

/* ---- commands over NATS ---------------------------------------------------- */

static natsConnection *
nats(void)
{
    natsConnection *nc = NULL;
    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    return nc;
}

/* Sends cmd.<name> with body; returns the parsed reply. */
static json_t *
request(natsConnection *nc, const char *name, const char *body)
{
    char subject[128];
    natsMsg *m = NULL;
    json_t *j;

    snprintf(subject, sizeof subject, "%s.%s", prefix, name);
    ck_assert_int_eq(natsConnection_RequestString(&m, nc, subject, body, 5000), NATS_OK);
    j = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
    ck_assert_ptr_nonnull(j);
    natsMsg_Destroy(m);
    return j;
}

static int
status_of(const json_t *j)
{
    return (int)json_integer_value(json_object_get(j, "status"));
}

START_TEST(nats_payment_once_per_command)
{
    natsConnection *nc = nats();
    char cust[64], path[160], body[512], cmd1[64], order[64];
    json_t *j;

    th_unique(cust, sizeof cust, "pay");
    th_unique(cmd1, sizeof cmd1, "cmd");
    th_unique(order, sizeof order, "ord");
    snprintf(path, sizeof path, "/v1/customers/%s/deposits", cust);
    json_decref(post(path, "{\"amount\":100}", 201));

    /* declined: not covered */
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"customer_id\":\"%s\",\"order_id\":\"%s\",\"amount\":150}",
             cmd1, cust, order);
    j = request(nc, "payment.charge", body);
    ck_assert_int_eq(status_of(j), 422);
    ck_assert_str_eq(str(j, "error.code"), "insufficient_funds");
    json_decref(j);
    /* funds arrive, but the same command answers its first outcome */
    json_decref(post(path, "{\"amount\":100}", 201));
    j = request(nc, "payment.charge", body);
    ck_assert_int_eq(status_of(j), 422);
    json_decref(j);
    /* a new command charges, and only once per order */
    th_unique(cmd1, sizeof cmd1, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"customer_id\":\"%s\",\"order_id\":\"%s\",\"amount\":150}",
             cmd1, cust, order);
    j = request(nc, "payment.charge", body);
    ck_assert_int_eq(status_of(j), 201);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "result"), "balance")), 50);
    json_decref(j);
    th_unique(cmd1, sizeof cmd1, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"customer_id\":\"%s\",\"order_id\":\"%s\",\"amount\":150}",
             cmd1, cust, order);
    j = request(nc, "payment.charge", body);
    ck_assert_int_eq(status_of(j), 200);        /* charged already */
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "result"), "balance")), 50);
    json_decref(j);
    /* refund once */
    for (int i = 0; i < 2; i++) {
        th_unique(cmd1, sizeof cmd1, "cmd");
        snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"customer_id\":\"%s\",\"order_id\":\"%s\"}",
                 cmd1, cust, order);
        j = request(nc, "payment.refund", body);
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "result"), "balance")), 200);
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "result"), "refunded")),
                         i == 0 ? 150 : 0);
        json_decref(j);
    }
    /* missing command id */
    j = request(nc, "payment.refund", "{\"customer_id\":\"x\",\"order_id\":\"y\"}");
    ck_assert_int_eq(status_of(j), 400);
    ck_assert_str_eq(str(j, "error.field"), "command_id");
    json_decref(j);
    natsConnection_Destroy(nc);
}
END_TEST

/* Sessions open in the database under application_name name. */
static int
sessions_named(const char *name)
{
    PGconn *c = PQconnectdb(th_conninfo());
    const char *params[] = {name};
    PGresult *r;
    int n;

    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    r = PQexecParams(c, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", 1,
                     NULL, params, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    n = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return n;
}

/* Declined charges (the customer has nothing), one after another: each
 * reads the customer's stream on a store session of the NATS front door. */
static void
charges(natsConnection *nc, const char *prefix_of, int n)
{
    for (int i = 0; i < n; i++) {
        char subject[160], body[300], id[64];
        natsMsg *m = NULL;

        th_unique(id, sizeof id, "cmd");
        snprintf(subject, sizeof subject, "%s.payment.charge", prefix_of);
        snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"customer_id\":\"%s-nobody\","
                 "\"order_id\":\"%s\",\"amount\":5}", id, id, id);
        ck_assert_int_eq(natsConnection_RequestString(&m, nc, subject, body, 5000), NATS_OK);
        ck_assert_ptr_nonnull(strstr(natsMsg_GetData(m), "\"status\":422"));
        natsMsg_Destroy(m);
    }
}

/* The NATS front door's subscription threads (16 here) share store
 * sessions instead of opening one each: a few are opened at start
 * (ES_NATS_SESSIONS_WARM), so the first burst of commands does not wait
 * for sessions to open, and commands one at a time reuse one session
 * rather than opening one per thread they land on. */
START_TEST(nats_commands_share_warm_sessions)
{
    static char conn_warm[700], conn_cold[700], pre_warm[80], pre_cold[80];
    const char *warm_env[] = {conn_warm, pre_warm, natsenv, "ES_NATS_SUBSCRIBERS=16",
                              "ES_NATS_SESSIONS_WARM=4", NULL};
    const char *cold_env[] = {conn_cold, pre_cold, natsenv, "ES_NATS_SUBSCRIBERS=16",
                              "ES_NATS_SESSIONS_WARM=0", NULL};
    th_daemon warm, cold;
    natsConnection *nc = nats();
    int w0 = 0, c0, w1, c1;

    snprintf(conn_warm, sizeof conn_warm, "ES_PG_CONNINFO=%s application_name=cmd_warm",
             th_conninfo());
    snprintf(conn_cold, sizeof conn_cold, "ES_PG_CONNINFO=%s application_name=cmd_cold",
             th_conninfo());
    snprintf(pre_warm, sizeof pre_warm, "ES_COMMAND_SUBJECT_PREFIX=%s.w", prefix);
    snprintf(pre_cold, sizeof pre_cold, "ES_COMMAND_SUBJECT_PREFIX=%s.c", prefix);
    th_daemon_start(&warm, "es-command", "ES_COMMAND_PORT", warm_env);
    th_daemon_start(&cold, "es-command", "ES_COMMAND_PORT", cold_env);
    /* the same daemon but for the warm sessions: 4 more, before any
     * command arrives */
    c0 = sessions_named("cmd_cold");
    for (int i = 0; i < 500 && (w0 = sessions_named("cmd_warm")) < c0 + 4; i++)
        usleep(20 * 1000);
    ck_assert_int_eq(w0, c0 + 4);
    ck_assert_int_eq(th_metric(warm.port, "es_command_nats_sessions", "state=\"idle\""), 4);
    ck_assert_int_eq(th_metric(warm.port, "es_command_nats_sessions", "state=\"lent\""), 0);
    ck_assert_int_eq(th_metric(cold.port, "es_command_nats_sessions", "state=\"idle\""), 0);
    /* one at a time, over 16 threads: after the first (which may open
     * what the daemon opens lazily, such as the committer's session),
     * the one at hand serves them all */
    charges(nc, pre_warm + strlen("ES_COMMAND_SUBJECT_PREFIX="), 1);
    charges(nc, pre_cold + strlen("ES_COMMAND_SUBJECT_PREFIX="), 1);
    w0 = sessions_named("cmd_warm");
    c0 = sessions_named("cmd_cold");
    charges(nc, pre_warm + strlen("ES_COMMAND_SUBJECT_PREFIX="), 40);
    charges(nc, pre_cold + strlen("ES_COMMAND_SUBJECT_PREFIX="), 40);
    w1 = sessions_named("cmd_warm");
    c1 = sessions_named("cmd_cold");
    ck_assert_int_eq(w1, w0);
    ck_assert_int_eq(c1, c0);
    /* and es-command counts them so: all given back */
    ck_assert_int_eq(th_metric(warm.port, "es_command_nats_sessions", "state=\"idle\""), 4);
    ck_assert_int_eq(th_metric(cold.port, "es_command_nats_sessions", "state=\"idle\""), 1);
    ck_assert_int_eq(th_metric(cold.port, "es_command_nats_sessions", "state=\"lent\""), 0);
    natsConnection_Destroy(nc);
    ck_assert_int_eq(th_daemon_stop(&warm), 0);
    ck_assert_int_eq(th_daemon_stop(&cold), 0);
}
END_TEST

START_TEST(nats_inventory_reserve_release)
{
    natsConnection *nc = nats();
    char sku[64], path[160], body[512], c[64], order[64];
    json_t *j;

    th_unique(sku, sizeof sku, "stock");
    th_unique(order, sizeof order, "ord");
    snprintf(path, sizeof path, "/v1/inventory/%s/restock", sku);
    json_decref(post(path, "{\"quantity\":5}", 201));

    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"order_id\":\"%s\",\"items\":[{\"sku\":\"%s\",\"quantity\":9}]}",
             c, order, sku);
    j = request(nc, "inventory.reserve", body);
    ck_assert_int_eq(status_of(j), 422);
    ck_assert_str_eq(str(j, "error.code"), "insufficient_stock");
    json_decref(j);

    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"order_id\":\"%s\",\"items\":[{\"sku\":\"%s\",\"quantity\":2},{\"sku\":\"%s\",\"quantity\":1}]}",
             c, order, sku, sku);
    j = request(nc, "inventory.reserve", body);
    ck_assert_int_eq(status_of(j), 201);
    json_decref(j);
    j = request(nc, "inventory.reserve", body);      /* the same command again */
    ck_assert_int_eq(status_of(j), 200);
    json_decref(j);
    j = post(path, "{\"quantity\":1}", 201);
    ck_assert_int_eq(num(j, "reserved"), 3);
    ck_assert_int_eq(num(j, "available"), 3);
    json_decref(j);
    for (int i = 0; i < 2; i++) {       /* released once, whatever repeats */
        th_unique(c, sizeof c, "cmd");
        snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"order_id\":\"%s\"}", c, order);
        j = request(nc, "inventory.release", body);
        ck_assert_int_eq(status_of(j), 200);
        json_decref(j);
    }
    j = post(path, "{\"quantity\":1}", 201);
    ck_assert_int_eq(num(j, "reserved"), 0);
    ck_assert_int_eq(num(j, "available"), 7);
    json_decref(j);
    natsConnection_Destroy(nc);
}
END_TEST

START_TEST(nats_registration_steps)
{
    natsConnection *nc = nats();
    char email[96], body[512], c[64], user[64], cpath[160], order[64];
    json_t *j;

    th_unique(email, sizeof email, "bob");
    strcat(email, "@fraud.test");
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Bob\"}", email);
    j = post("/v1/users", body, 201);
    snprintf(user, sizeof user, "%s", str(j, "user_id"));
    json_decref(j);

    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"user_id\":\"%s\"}", c, user);
    j = request(nc, "profile.create", body);
    ck_assert_int_eq(status_of(j), 201);
    json_decref(j);

    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"user_id\":\"%s\",\"email\":\"%s\"}", c, user, email);
    j = request(nc, "fraud.check", body);
    ck_assert_int_eq(status_of(j), 422);
    ck_assert_str_eq(str(j, "error.code"), "fraud_check_failed");
    json_decref(j);

    /* verification only moves forward */
    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"user_id\":\"%s\",\"result\":\"passed\"}", c, user);
    j = request(nc, "user.verify", body);
    ck_assert_str_eq(str(j, "result.status"), "verified");
    json_decref(j);
    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"user_id\":\"%s\",\"result\":\"failed\"}", c, user);
    j = request(nc, "user.verify", body);
    ck_assert_str_eq(str(j, "result.status"), "verified");
    json_decref(j);

    /* compensation: profile deleted, user rejected, email free again */
    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"user_id\":\"%s\"}", c, user);
    j = request(nc, "profile.delete", body);
    ck_assert_str_eq(str(j, "result.status"), "deleted");
    json_decref(j);
    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"user_id\":\"%s\",\"reason\":\"fraud\"}", c, user);
    j = request(nc, "user.reject", body);
    ck_assert_str_eq(str(j, "result.status"), "rejected");
    json_decref(j);
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Bob again\"}", email);
    json_decref(post("/v1/users", body, 201));

    /* shipping refuses unsupported destinations; orders confirm once */
    th_unique(order, sizeof order, "ord");
    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"order_id\":\"%s\",\"country\":\"XX\"}", c, order);
    j = request(nc, "shipping.create", body);
    ck_assert_int_eq(status_of(j), 422);
    ck_assert_str_eq(str(j, "error.code"), "unsupported_destination");
    json_decref(j);
    j = post("/v1/orders", "{\"customer_id\":\"c9\",\"items\":[{\"sku\":\"s\",\"quantity\":1,\"unit_price\":5}]}", 201);
    snprintf(order, sizeof order, "%s", str(j, "order_id"));
    json_decref(j);
    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"order_id\":\"%s\"}", c, order);
    j = request(nc, "order.confirm", body);
    ck_assert_str_eq(str(j, "result.status"), "confirmed");
    json_decref(j);
    snprintf(cpath, sizeof cpath, "/v1/orders/%s/cancel", order);
    j = post(cpath, NULL, 422);
    ck_assert_str_eq(str(j, "error.code"), "order_not_cancellable");
    json_decref(j);
    /* side-effect records */
    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"user_id\":\"%s\",\"kind\":\"welcome\"}", c, user);
    j = request(nc, "notification.send", body);
    ck_assert_int_eq(status_of(j), 201);
    json_decref(j);
    j = request(nc, "order.explode", body);     /* a context's unknown action */
    ck_assert_int_eq(status_of(j), 404);
    json_decref(j);
    natsConnection_Destroy(nc);
}
END_TEST

/* Review findings, kept as regression tests. */
START_TEST(repeated_command_keeps_the_aggregate_sound)
{
    natsConnection *nc = nats();
    char cust[64], c[64], body[256];
    json_t *j;

    th_unique(cust, sizeof cust, "dup");
    /* with snapshots every 3 events, repeats used to corrupt one */
    for (int i = 0; i < 4; i++) {
        th_unique(c, sizeof c, "cmd");
        snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"customer_id\":\"%s\",\"amount\":100}", c, cust);
        j = request(nc, "payment.deposit", body);
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "result"), "balance")), 100 * (i + 1));
        json_decref(j);
        j = request(nc, "payment.deposit", body);       /* the same command again */
        ck_assert_int_eq(status_of(j), 200);
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "result"), "balance")), 100 * (i + 1));
        json_decref(j);
    }
    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"customer_id\":\"%s\",\"amount\":1}", c, cust);
    j = request(nc, "payment.deposit", body);
    ck_assert_int_eq(status_of(j), 201);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "result"), "balance")), 401);
    json_decref(j);
    natsConnection_Destroy(nc);
}
END_TEST

/* Writes one event straight into the store: the categories the commands
 * own are closed to the raw append API, and these tests need events
 * there that no command would write. */
static void
store_append(const char *stream, const char *type, const char *data)
{
    es_new_event ev = {NULL, type, 1, data, NULL};
    es_append_req req = {stream, ES_EXPECT_NO_STREAM, &ev, 1};
    es_append_result res;
    es_store *st;
    es_error err;

    ck_assert_int_eq(es_store_open(&st, th_conninfo(), &err), ES_OK);
    ck_assert_int_eq(es_store_append(st, &req, &res), ES_OK);
    es_store_close(st);
}

START_TEST(foreign_events_do_not_crash)
{
    natsConnection *nc = nats();
    char order[64], path[128], body[2048], c[64], user[64];
    json_t *j;
    int n;

    /* a reservation with more lines than a reservation can hold */
    th_unique(order, sizeof order, "big");
    snprintf(path, sizeof path, "reservation-%s", order);
    n = snprintf(body, sizeof body, "{\"items\":[");
    for (int i = 0; i < 20; i++)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s{\"sku\":\"s%d\",\"quantity\":1}", i ? "," : "", i);
    snprintf(body + n, sizeof body - (size_t)n, "]}");
    store_append(path, "ReservationMade", body);
    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"order_id\":\"%s\"}", c, order);
    j = request(nc, "inventory.release", body);
    ck_assert_int_eq(status_of(j), 500);
    json_decref(j);
    /* a user registered without an email */
    th_unique(user, sizeof user, "u");
    snprintf(path, sizeof path, "user-%s", user);
    store_append(path, "UserRegistered", "{}");
    th_unique(c, sizeof c, "cmd");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\",\"user_id\":\"%s\"}", c, user);
    j = request(nc, "user.reject", body);
    ck_assert_int_eq(status_of(j), 500);
    json_decref(j);
    /* invalid UTF-8 echoed in an error still gets an answer */
    j = request(nc, "order.\xc3\xa9\xff", "{}");
    ck_assert_int_eq(status_of(j), 404);
    json_decref(j);
    j = get("/v1/x%FF", 404);
    ck_assert_ptr_nonnull(str(j, "error.message"));
    json_decref(j);
    natsConnection_Destroy(nc);
}
END_TEST

/* An order's total is added up by the read models (<= 10^15, OrderPlaced's
 * schema): one past it used to be placed and then stop the orders
 * projection; now the command refuses it. */
START_TEST(an_order_total_past_what_read_models_add_is_refused)
{
    json_t *j = post("/v1/orders",
                     "{\"customer_id\":\"c-total\",\"items\":[{\"sku\":\"s1\",\"quantity\":1000,"
                     "\"unit_price\":1000000000000},{\"sku\":\"s2\",\"quantity\":1,"
                     "\"unit_price\":1}]}", 400);

    ck_assert_str_eq(str(j, "error.code"), "total_overflow");
    json_decref(j);
    j = post("/v1/orders",
             "{\"customer_id\":\"c-total\",\"items\":[{\"sku\":\"s1\",\"quantity\":1000,"
             "\"unit_price\":1000000000000}]}", 201);
    json_decref(j);
}
END_TEST

/* POST to port; returns the parsed body (caller decrefs). */
static json_t *
post_to(unsigned port, const char *path, const char *body, int expect)
{
    th_response r;
    json_t *j;

    th_http(port, "POST", path, JSON, body, &r);
    ck_assert_msg(r.status == expect, "POST %s: %d, expected %d: %s", path, r.status, expect,
                  r.body ? r.body : "");
    j = json_loads(r.body, 0, NULL);
    ck_assert_ptr_nonnull(j);
    th_response_free(&r);
    return j;
}

/*
 * The case: {"type":"UserRegistered","data":{}} appended to
 * user-x (access control off, so the raw API reaches a command category)
 * was stored, and stopped the users projection for good.  Now every
 * category that declares schemas takes only events that pass them.
 */
START_TEST(raw_appends_meet_the_schemas)
{
    char user[64], path[160], body[512];
    th_response r;
    json_t *j;

    th_unique(user, sizeof user, "user");
    snprintf(path, sizeof path, "/v1/streams/%s/events", user);
    j = post_to(open_cmd.port, path,
                "{\"expected_version\":\"any\",\"events\":[{\"type\":\"UserRegistered\","
                "\"data\":{}}]}", 422);
    ck_assert_str_eq(str(j, "error.code"), "schema_violation");
    ck_assert_str_eq(str(j, "error.field"), "events[0].data.user_id");
    ck_assert_ptr_nonnull(strstr(str(j, "error.message"), "user_id is required"));
    json_decref(j);
    /* nothing of the append is written, also when a later event fails */
    j = post_to(open_cmd.port, path,
                "{\"expected_version\":\"any\",\"events\":[{\"type\":\"UserRegistered\","
                "\"data\":{\"user_id\":\"u\",\"email\":\"a@b.cd\",\"name\":\"A\"}},"
                "{\"type\":\"UserRejected\",\"data\":{\"user_id\":\"u\",\"reason\":5}}]}", 422);
    ck_assert_str_eq(str(j, "error.field"), "events[1].data.reason");
    json_decref(j);
    snprintf(body, sizeof body, "/v1/streams/%s", user);
    th_http(open_cmd.port, "GET", body, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 404);
    th_response_free(&r);
    /* a type the category does not list; a number no reader holds */
    j = post_to(open_cmd.port, path,
                "{\"expected_version\":\"any\",\"events\":[{\"type\":\"UserDeleted\","
                "\"data\":{\"user_id\":\"u\"}}]}", 422);
    ck_assert_str_eq(str(j, "error.code"), "event_type_unknown");
    ck_assert_str_eq(str(j, "error.field"), "events[0].type");
    json_decref(j);
    j = post_to(open_cmd.port, path,
                "{\"expected_version\":\"any\",\"events\":[{\"type\":\"UserRegistered\","
                "\"data\":{\"user_id\":\"u\",\"email\":\"a@b.cd\",\"name\":\"A\",\"n\":1e400}}]}",
                422);
    ck_assert_str_eq(str(j, "error.field"), "events[0].data");
    json_decref(j);
    /* the Idempotency-Key path as the quick one */
    th_http(open_cmd.port, "POST", path,
            "Content-Type: application/json\r\nIdempotency-Key: schema-1\r\n",
            "{\"expected_version\":\"any\",\"events\":[{\"type\":\"UserRegistered\",\"data\":{}}]}",
            &r);
    ck_assert_int_eq(r.status, 422);
    th_response_free(&r);
    /* what passes is stored */
    j = post_to(open_cmd.port, path,
                "{\"expected_version\":\"no_stream\",\"events\":[{\"type\":\"UserRegistered\","
                "\"data\":{\"user_id\":\"u\",\"email\":\"a@b.cd\",\"name\":\"A\",\"extra\":1.5}}]}",
                201);
    json_decref(j);
    /* a category without schemas takes any shape, but no number that
     * would come back from the store beyond what the readers decode */
    th_unique(user, sizeof user, "schemaless");
    snprintf(path, sizeof path, "/v1/streams/%s/events", user);
    j = post_to(open_cmd.port, path,
                "{\"expected_version\":\"any\",\"events\":[{\"type\":\"UserRegistered\","
                "\"data\":{\"n\":1e-400,\"m\":[{}]}}]}", 201);
    json_decref(j);
    j = post_to(open_cmd.port, path,
                "{\"expected_version\":\"any\",\"events\":[{\"type\":\"UserRegistered\","
                "\"data\":{\"n\":1e400}}]}", 400);
    ck_assert_str_eq(str(j, "error.code"), "invalid_json");
    ck_assert_str_eq(str(j, "error.field"), "events[0].data");
    json_decref(j);
    /* the list, on the service with access control */
    j = get("/v1/schemas", 200);
    ck_assert_uint_gt(json_array_size(json_object_get(j, "schemas")), 30);
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(j, "schemas"), 0), "type")),
                     "UserRegistered");
    json_decref(j);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("command");
    TCase *tc = tcase_create("command");
    const char *env[] = {pgenv, prefixenv, natsenv, "ES_BODY_MAX=65536", "ES_HTTP_WORKERS=8",
                         "ES_SNAPSHOT_EVERY=3", NULL};
    /* access control off: with PostgreSQL down from the start it would
     * answer 503 auth_unavailable before the paths these tests check
     * (test_auth.c checks that answer) */
    const char *dead_env[] = {"ES_PG_CONNINFO=host=127.0.0.1 port=1 connect_timeout=1",
                              "ES_NATS_URL=off", "ES_AUTH=off", NULL};
    int rc;

    th_unique(prefix, sizeof prefix, "test");
    strcat(prefix, ".cmd");
    snprintf(pgenv, sizeof pgenv, "ES_PG_CONNINFO=%s", th_conninfo());
    snprintf(prefixenv, sizeof prefixenv, "ES_COMMAND_SUBJECT_PREFIX=%s", prefix);
    snprintf(natsenv, sizeof natsenv, "ES_NATS_URL=%s", getenv("ES_NATS_URL") ? getenv("ES_NATS_URL") : "");
    th_daemon_start(&cmd, "es-command", "ES_COMMAND_PORT", env);
    th_daemon_start(&dead, "es-command", "ES_COMMAND_PORT", dead_env);
    {
        const char *open_env[] = {pgenv, "ES_NATS_URL=off", "ES_AUTH=off", NULL};
        th_daemon_start(&open_cmd, "es-command", "ES_COMMAND_PORT", open_env);
    }
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, append_read_and_conflicts);
    tcase_add_test(tc, append_retry_is_200_with_original);
    tcase_add_test(tc, append_keeps_numbers_exact);
    tcase_add_test(tc, bad_requests);
    tcase_add_test(tc, feed_pages);
    tcase_add_test(tc, users_and_email_uniqueness);
    tcase_add_test(tc, deposits_restock_orders_cancel);
    tcase_add_test(tc, idempotency_keys);
    tcase_add_test(tc, health_metrics_unavailable);
    tcase_add_test(tc, nats_payment_once_per_command);
    tcase_add_test(tc, nats_inventory_reserve_release);
    tcase_add_test(tc, nats_registration_steps);
    tcase_add_test(tc, nats_commands_share_warm_sessions);
    tcase_add_test(tc, repeated_command_keeps_the_aggregate_sound);
    tcase_add_test(tc, foreign_events_do_not_crash);
    tcase_add_test(tc, raw_appends_meet_the_schemas);
    tcase_add_test(tc, an_order_total_past_what_read_models_add_is_refused);
    suite_add_tcase(s, tc);
    rc = th_run(s);
    rc |= th_daemon_stop(&cmd);
    rc |= th_daemon_stop(&dead);
    rc |= th_daemon_stop(&open_cmd);
    nats_Close();
    return rc;
}
