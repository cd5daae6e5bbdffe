/*
 * The read models of shared/API.md's query part, one projection each
 * (orders also keeps each customer's order list), plus the dashboard
 * counters.  The key layout of each is in projector/README.md.
 */
#include "projections.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "saga.h"

/* The bounds of the schemas (events/schema.c) this file relies on; the
 * projections must apply every event its schema lets in
 * (tests/test_schema.c checks it at the bounds). */
#define ID_MAX 200
#define EMAIL_MAX 254
#define NUM_MAX 1000000000000000LL     /* 10^15 */

/* ---- helpers for handlers --------------------------------------------- */

static es_status
bad(es_error *err, const char *field, const char *why)
{
    return es_error_set(err, ES_EINVALID, "event_invalid", field, "%s %s", field, why);
}


static bool
is(const es_feed_event *e, const char *category, const char *type)
{
    size_t n = strlen(category);

    return e->category_end && (size_t)(e->category_end - e->stream) == n &&
           strncmp(e->stream, category, n) == 0 && strcmp(e->type, type) == 0;
}

static bool
in(const es_feed_event *e, const char *category)
{
    size_t n = strlen(category);

    return e->category_end && (size_t)(e->category_end - e->stream) == n &&
           strncmp(e->stream, category, n) == 0;
}

/* A required non-empty string of at most max bytes. */
static es_status
str_max(const es_feed_event *e, const char *field, size_t max, const char **out, es_error *err)
{
    es_feed_value v;
    char path[64];

    snprintf(path, sizeof path, "data.%s", field);
    if (es_feed_get(e, field, &v) != ES_FEED_STRING)
        return bad(err, path, "is missing or not a string");
    if (v.len == 0 || v.len > max || strlen(v.str) != v.len)
        return es_error_set(err, ES_EINVALID, "event_invalid", path,
                            "%s must have 1 to %zu bytes and no NUL", path, max);
    *out = v.str;
    return ES_OK;
}

/* An id: what the schemas allow (events/schema.c), 1 to ID_MAX bytes. */
static es_status
str(const es_feed_event *e, const char *field, const char **out, es_error *err)
{
    return str_max(e, field, ID_MAX, out, err);
}

/* As str, limited to letters, digits, '_', '.' and '-' (no ':'). */
static es_status
ident(const es_feed_event *e, const char *field, const char **out, es_error *err)
{
    es_status st = str(e, field, out, err);
    const char *p;

    if (st != ES_OK)
        return st;
    for (p = *out; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '-')) {
            char path[64];
            snprintf(path, sizeof path, "data.%s", field);
            return bad(err, path, "must be letters, digits, '_', '.' or '-'");
        }
    return ES_OK;
}

static es_status
num(const es_feed_event *e, const char *field, long long *out, es_error *err)
{
    es_feed_value v;
    char path[64];

    snprintf(path, sizeof path, "data.%s", field);
    if (es_feed_get(e, field, &v) != ES_FEED_INTEGER)
        return bad(err, path, "is missing or not an integer");
    *out = v.num;
    /* Amounts and counts are added up in Redis (HINCRBY), which refuses to
     * overflow 64 bits mid-batch; the command service caps them far lower
     * (10^12), so a bigger one is not an event this projection applies. */
    if (*out > NUM_MAX || *out < -NUM_MAX)
        return bad(err, path, "is out of range (|n| <= 10^15)");
    return ES_OK;
}

/* An optional string (NULL when absent or not a string). */
static const char *
opt(const es_feed_event *e, const char *field)
{
    es_feed_value v;

    return es_feed_get(e, field, &v) == ES_FEED_STRING ? v.str : NULL;
}

/* A structured member (object or array) as the next argument, compact
 * JSON as es_rm_arg_json writes it. */
static void
arg_value(es_rm_batch *b, const es_feed_value *v)
{
    if (v->json != NULL)
        es_rm_arg_str(b, v->json);
    else
        es_rm_arg_json(b, v->tree);
}

#define TRY(x)                      \
    do {                            \
        es_status st_ = (x);        \
        if (st_ != ES_OK)           \
            return st_;             \
    } while (0)

void
pj_email_key(const char *email, char *out, size_t size)
{
    size_t i;

    for (i = 0; email[i] && i + 1 < size; i++)
        out[i] = (char)(email[i] >= 'A' && email[i] <= 'Z' ? email[i] + 32 : email[i]);
    out[i] = '\0';
}

/* ---- users ------------------------------------------------------------ */

/*
 * user:<user_id>   hash user_id, email, name, status, profile (JSON),
 *                  created_at, updated_at
 * email:<email>    the user_id that registered it last (lower case)
 */
static es_status
users(es_rm_batch *b, const es_feed_event *e, es_error *err)
{
    const char *id, *email, *name, *result;
    long long level;

    if (is(e, "user", "UserRegistered")) {
        char key[EMAIL_MAX + 1];

        TRY(str(e, "user_id", &id, err));
        TRY(str_max(e, "email", EMAIL_MAX, &email, err));
        TRY(str(e, "name", &name, err));
        es_rm_cmd(b, "HSET", PJ_KEY_USER, id);
        es_rm_arg_str(b, "user_id"), es_rm_arg_str(b, id);
        es_rm_arg_str(b, "email"), es_rm_arg_str(b, email);
        es_rm_arg_str(b, "name"), es_rm_arg_str(b, name);
        es_rm_arg_str(b, "status"), es_rm_arg_str(b, "pending_verification");
        es_rm_arg_str(b, "profile"), es_rm_arg_str(b, "{}");
        es_rm_arg_str(b, "created_at"), es_rm_arg_str(b, e->recorded_at);
        es_rm_arg_str(b, "updated_at"), es_rm_arg_str(b, e->recorded_at);
        pj_email_key(email, key, sizeof key);
        es_rm_cmd(b, "SET", PJ_KEY_EMAIL, key);
        es_rm_arg_str(b, id);
    } else if (is(e, "user", "UserVerificationRecorded")) {
        TRY(str(e, "user_id", &id, err));
        TRY(str(e, "result", &result, err));
        TRY(num(e, "level", &level, err));
        es_rm_cmd(b, "HSET", PJ_KEY_USER, id);
        es_rm_arg_str(b, "status");
        es_rm_arg_str(b, level >= 100 ? "verified" : "verification_failed");
        es_rm_arg_str(b, "updated_at"), es_rm_arg_str(b, e->recorded_at);
    } else if (is(e, "user", "UserRejected")) {
        TRY(str(e, "user_id", &id, err));
        es_rm_cmd(b, "HSET", PJ_KEY_USER, id);
        es_rm_arg_str(b, "status"), es_rm_arg_str(b, "rejected");
        if (opt(e, "reason"))
            es_rm_arg_str(b, "reason"), es_rm_arg_str(b, opt(e, "reason"));
        es_rm_arg_str(b, "updated_at"), es_rm_arg_str(b, e->recorded_at);
    } else if (is(e, "profile", "ProfileCreated") || is(e, "profile", "ProfileDeleted")) {
        es_feed_value settings;
        bool created = strcmp(e->type, "ProfileCreated") == 0;

        TRY(str(e, "user_id", &id, err));
        if (created && es_feed_get(e, "settings", &settings) != ES_FEED_OBJECT)
            return bad(err, "data.settings", "is missing or not an object");
        es_rm_cmd(b, "HSET", PJ_KEY_USER, id);
        es_rm_arg_str(b, "profile");
        if (created)
            arg_value(b, &settings);
        else
            es_rm_arg_str(b, "{}");
        es_rm_arg_str(b, "updated_at"), es_rm_arg_str(b, e->recorded_at);
    }
    return ES_OK;
}

/* ---- orders ----------------------------------------------------------- */

/*
 * order:<order_id>       hash order_id, customer_id, items, total, status,
 *                        payment, inventory, shipment (JSON), reason,
 *                        seq, created_at, updated_at
 * orderhist:<order_id>   list of {"type", "at", "position", ...} (JSON)
 * custorders:<customer>  zset order_id by seq of its OrderPlaced
 */
/* Adds "key": to h after a comma. */
static void
member(es_buf *h, const char *k)
{
    es_buf_puts(h, ",\"");
    es_buf_puts(h, k);
    es_buf_puts(h, "\":");
}

/* A string member as json_dumps writes it. */
static void
member_str(es_buf *h, const char *k, const char *v)
{
    member(h, k);
    es_buf_json_string_upper(h, v);
}

/* A string member of the event's data, when it has one. */
static void
member_opt(es_buf *h, const es_feed_event *e, const char *k)
{
    const char *v = opt(e, k);

    if (v != NULL)
        member_str(h, k, v);
}

/*
 * Appends {"type", "at", "position"} and the members of extra (compact
 * JSON members after a comma each, or empty) to the order's history.
 * Written by hand: building and dumping a JSON object per event was a
 * good part of a rebuild's time, and then of the live projector's.
 */
static void
history(es_rm_batch *b, const es_feed_event *e, const char *order_id, const es_buf *extra)
{
    es_buf h = ES_BUF_INIT;

    es_buf_puts(&h, "{\"type\":");
    es_buf_json_string(&h, e->type);
    es_buf_puts(&h, ",\"at\":");
    es_buf_json_string(&h, e->recorded_at);
    es_buf_puts(&h, ",\"position\":");
    es_buf_json_string(&h, e->position);
    if (extra != NULL && extra->len > 0)
        es_buf_append(&h, extra->data, extra->len);
    es_buf_puts(&h, "}");
    es_rm_cmd(b, "RPUSH", PJ_KEY_ORDER_HISTORY, order_id);
    if (es_buf_failed(&h) || (extra != NULL && es_buf_failed(extra)))
        b->failed = true;
    else
        es_rm_arg_str(b, h.data);
    es_buf_free(&h);
}

/* Sets one JSON field of the order to the object of members (compact
 * JSON members, each after a comma: ',"status":"charged"') and records
 * the event with them in its history; frees members. */
static void
order_part(es_rm_batch *b, const es_feed_event *e, const char *order_id, const char *part,
           es_buf *members)
{
    es_buf v = ES_BUF_INIT;

    es_buf_puts(&v, "{");
    if (members->len > 0)
        es_buf_append(&v, members->data + 1, members->len - 1);
    es_buf_puts(&v, "}");
    es_rm_cmd(b, "HSET", PJ_KEY_ORDER, order_id);
    es_rm_arg_str(b, part);
    if (es_buf_failed(&v) || es_buf_failed(members))
        b->failed = true;
    else
        es_rm_arg_str(b, v.data);
    es_rm_arg_str(b, "updated_at"), es_rm_arg_str(b, e->recorded_at);
    history(b, e, order_id, members);
    es_buf_free(&v);
    es_buf_free(members);
}

static es_status
orders(es_rm_batch *b, const es_feed_event *e, es_error *err)
{
    const char *id, *customer, *s;
    long long total, amount;
    es_feed_value items, ship_to;
    es_buf m = ES_BUF_INIT;

    if (is(e, "order", "OrderPlaced")) {
        TRY(str(e, "order_id", &id, err));
        TRY(str(e, "customer_id", &customer, err));
        TRY(num(e, "total", &total, err));
        if (es_feed_get(e, "items", &items) != ES_FEED_ARRAY)
            return bad(err, "data.items", "is missing or not an array");
        es_rm_cmd(b, "HSET", PJ_KEY_ORDER, id);
        es_rm_arg_str(b, "order_id"), es_rm_arg_str(b, id);
        es_rm_arg_str(b, "customer_id"), es_rm_arg_str(b, customer);
        es_rm_arg_str(b, "items"), arg_value(b, &items);
        es_rm_arg_str(b, "total"), es_rm_arg_int(b, total);
        es_rm_arg_str(b, "status"), es_rm_arg_str(b, "pending");
        es_rm_arg_str(b, "payment"), es_rm_arg_str(b, "{\"status\":\"pending\"}");
        es_rm_arg_str(b, "inventory"), es_rm_arg_str(b, "{\"status\":\"pending\"}");
        es_rm_arg_str(b, "shipment"), es_rm_arg_str(b, "{\"status\":\"pending\"}");
        es_rm_arg_str(b, "seq"), es_rm_arg_int(b, (long long)e->seq);
        es_rm_arg_str(b, "created_at"), es_rm_arg_str(b, e->recorded_at);
        es_rm_arg_str(b, "updated_at"), es_rm_arg_str(b, e->recorded_at);
        if (es_feed_get(e, "ship_to", &ship_to) == ES_FEED_OBJECT)
            es_rm_arg_str(b, "ship_to"), arg_value(b, &ship_to);
        es_rm_cmd(b, "ZADD", PJ_KEY_CUSTOMER_ORDERS, customer);
        es_rm_arg_int(b, (long long)e->seq);
        es_rm_arg_str(b, id);
        member(&m, "total");
        es_buf_int(&m, total);
        history(b, e, id, &m);
    } else if (in(e, "order") && (strcmp(e->type, "OrderConfirmed") == 0 ||
                                  strcmp(e->type, "OrderCancelled") == 0 ||
                                  strcmp(e->type, "OrderFailed") == 0)) {
        const char *status = e->type[5] == 'C' ? (e->type[6] == 'o' ? "confirmed" : "cancelled")
                                               : "failed";
        TRY(str(e, "order_id", &id, err));
        es_rm_cmd(b, "HSET", PJ_KEY_ORDER, id);
        es_rm_arg_str(b, "status"), es_rm_arg_str(b, status);
        if ((s = opt(e, "reason")) != NULL)
            es_rm_arg_str(b, "reason"), es_rm_arg_str(b, s);
        es_rm_arg_str(b, "updated_at"), es_rm_arg_str(b, e->recorded_at);
        if (s != NULL)
            member_str(&m, "reason", s);
        history(b, e, id, &m);
    } else if (in(e, "account") && (strcmp(e->type, "PaymentCharged") == 0 ||
                                    strcmp(e->type, "PaymentDeclined") == 0 ||
                                    strcmp(e->type, "PaymentRefunded") == 0)) {
        TRY(str(e, "order_id", &id, err));
        TRY(num(e, "amount", &amount, err));
        s = e->type[7] == 'C' ? "charged" : e->type[7] == 'D' ? "declined" : "refunded";
        member_str(&m, "status", s);
        member(&m, "amount");
        es_buf_int(&m, amount);
        order_part(b, e, id, "payment", &m);
    } else if (is(e, "reservation", "ReservationMade")) {
        TRY(str(e, "order_id", &id, err));
        if (es_feed_get(e, "items", &items) != ES_FEED_ARRAY)
            return bad(err, "data.items", "is missing or not an array");
        member_str(&m, "status", "reserved");
        member(&m, "items");
        if (!es_feed_value_json(&items, &m))
            b->failed = true;
        order_part(b, e, id, "inventory", &m);
    } else if (is(e, "reservation", "ReservationRejected")) {
        TRY(str(e, "order_id", &id, err));
        member_str(&m, "status", "rejected");
        member_opt(&m, e, "sku");
        order_part(b, e, id, "inventory", &m);
    } else if (is(e, "reservation", "ReservationReleased")) {
        TRY(str(e, "order_id", &id, err));
        member_str(&m, "status", "released");
        order_part(b, e, id, "inventory", &m);
    } else if (in(e, "shipment") && (strcmp(e->type, "ShipmentCreated") == 0 ||
                                     strcmp(e->type, "ShipmentRejected") == 0 ||
                                     strcmp(e->type, "ShipmentCancelled") == 0)) {
        TRY(str(e, "order_id", &id, err));
        s = e->type[8] == 'C' && e->type[9] == 'r' ? "created"
            : e->type[8] == 'R'                    ? "rejected" : "cancelled";
        member_str(&m, "status", s);
        member_opt(&m, e, "tracking_id");
        member_opt(&m, e, "country");
        member_opt(&m, e, "reason");
        order_part(b, e, id, "shipment", &m);
    }
    es_buf_free(&m);
    return ES_OK;
}

/* ---- accounts --------------------------------------------------------- */

/* account:<customer_id>  hash customer_id, balance, updated_at */
static es_status
accounts(es_rm_batch *b, const es_feed_event *e, es_error *err)
{
    const char *customer;
    long long amount, sign;

    if (!in(e, "account"))
        return ES_OK;
    if (strcmp(e->type, "FundsDeposited") == 0 || strcmp(e->type, "PaymentRefunded") == 0)
        sign = 1;
    else if (strcmp(e->type, "PaymentCharged") == 0)
        sign = -1;
    else
        return ES_OK;
    TRY(str(e, "customer_id", &customer, err));
    TRY(num(e, "amount", &amount, err));
    if (amount < 0)
        return bad(err, "data.amount", "must not be negative");
    es_rm_cmd(b, "HSET", PJ_KEY_ACCOUNT, customer);
    es_rm_arg_str(b, "customer_id"), es_rm_arg_str(b, customer);
    es_rm_arg_str(b, "updated_at"), es_rm_arg_str(b, e->recorded_at);
    es_rm_cmd(b, "HINCRBY", PJ_KEY_ACCOUNT, customer);
    es_rm_arg_str(b, "balance");
    es_rm_arg_int(b, sign * amount);
    return ES_OK;
}

/* ---- inventory -------------------------------------------------------- */

/* stock:<sku>  hash sku, on_hand, reserved, updated_at */
static es_status
inventory(es_rm_batch *b, const es_feed_event *e, es_error *err)
{
    const char *sku, *field;
    long long qty, sign = 1;

    if (!in(e, "stock"))
        return ES_OK;
    if (strcmp(e->type, "StockRestocked") == 0)
        field = "on_hand";
    else if (strcmp(e->type, "StockReserved") == 0)
        field = "reserved";
    else if (strcmp(e->type, "StockReleased") == 0)
        field = "reserved", sign = -1;
    else
        return ES_OK;
    TRY(str(e, "sku", &sku, err));
    TRY(num(e, "quantity", &qty, err));
    if (qty < 0)
        return bad(err, "data.quantity", "must not be negative");
    es_rm_cmd(b, "HSET", PJ_KEY_STOCK, sku);
    es_rm_arg_str(b, "sku"), es_rm_arg_str(b, sku);
    es_rm_arg_str(b, "updated_at"), es_rm_arg_str(b, e->recorded_at);
    es_rm_cmd(b, "HINCRBY", PJ_KEY_STOCK, sku);
    es_rm_arg_str(b, field);
    es_rm_arg_int(b, sign * qty);
    es_rm_cmd(b, "HINCRBY", PJ_KEY_STOCK, sku);
    es_rm_arg_str(b, strcmp(field, "on_hand") == 0 ? "reserved" : "on_hand");
    es_rm_arg_int(b, 0);       /* both fields always exist */
    return ES_OK;
}

/* ---- sagas ------------------------------------------------------------ */

/*
 * saga:<id>                   hash saga_id, type, state, correlation_id,
 *                             seq, started_at, updated_at, error
 * sagasteps:<id>              list of step names, in first-start order
 * sagastep:<id>:<step>        hash name, status, attempts, started_at,
 *                             finished_at, error
 * sagacomps:<id>, sagacomp:<id>:<step>   the same for compensations
 * sagaall:, sagatype:<type>  zsets of saga ids by the seq of SagaStarted
 * sagastate:<state>, sagatypestate:<type>:<state>
 *                             zsets of saga ids by the seq of the event
 *                             that brought the saga into that state
 */
static void
saga_index(es_rm_batch *b, const char *op, const char *type, const char *state,
           long long seq, const char *id)
{
    bool add = strcmp(op, "ZADD") == 0;

    es_rm_cmd(b, op, PJ_KEY_SAGAS_BY_STATE, state);
    if (add)
        es_rm_arg_int(b, seq);
    es_rm_arg_str(b, id);
    es_rm_cmd(b, op, PJ_KEY_SAGAS_BY_TYPE_STATE, type, state);
    if (add)
        es_rm_arg_int(b, seq);
    es_rm_arg_str(b, id);
}

static es_status
saga_step(es_rm_batch *b, const es_feed_event *e, const char *id, bool comp, es_error *err)
{
    const char *step, *kind = e->type + strlen(comp ? SG_EV_COMPENSATION_PREFIX
                                                    : SG_EV_STEP_PREFIX);
    long long attempt = 1;

    es_feed_value given, retry;

    TRY(ident(e, "step", &step, err));
    es_feed_get(e, "attempt", &given);
    if (!comp || (given.kind != ES_FEED_ABSENT && given.kind != ES_FEED_NULL))
        TRY(num(e, "attempt", &attempt, err));      /* a compensation's is optional */
    if (strcmp(kind, "Started") == 0) {
        if (attempt == 1) {
            es_rm_cmd(b, "RPUSH", comp ? PJ_KEY_SAGA_COMPS : PJ_KEY_SAGA_STEPS, id);
            es_rm_arg_str(b, step);
        }
        es_rm_cmd(b, "HSET", comp ? PJ_KEY_SAGA_COMP : PJ_KEY_SAGA_STEP, id, step);
        es_rm_arg_str(b, "name"), es_rm_arg_str(b, step);
        es_rm_arg_str(b, "status"), es_rm_arg_str(b, "running");
        es_rm_arg_str(b, "attempts"), es_rm_arg_int(b, attempt);
        if (attempt == 1)
            es_rm_arg_str(b, "started_at"), es_rm_arg_str(b, e->recorded_at);
    } else if (strcmp(kind, "Succeeded") == 0 || strcmp(kind, "Failed") == 0) {
        bool ok = kind[0] == 'S';
        bool again = es_feed_get(e, "will_retry", &retry) == ES_FEED_TRUE;

        es_rm_cmd(b, "HSET", comp ? PJ_KEY_SAGA_COMP : PJ_KEY_SAGA_STEP, id, step);
        es_rm_arg_str(b, "status");
        es_rm_arg_str(b, ok ? "succeeded" : again ? "retrying" : "failed");
        if (ok || !again)
            es_rm_arg_str(b, "finished_at"), es_rm_arg_str(b, e->recorded_at);
        if (!ok)
            es_rm_arg_str(b, "error"), es_rm_arg_str(b, opt(e, "error") ? opt(e, "error") : "");
    } else {
        return ES_OK;       /* a later kind of step event: nothing to show yet */
    }
    es_rm_cmd(b, "HSET", PJ_KEY_SAGA, id);
    es_rm_arg_str(b, "updated_at"), es_rm_arg_str(b, e->recorded_at);
    return ES_OK;
}

static es_status
sagas(es_rm_batch *b, const es_feed_event *e, es_error *err)
{
    const char *id, *type, *state, *from, *corr;

    if (!in(e, SG_CATEGORY))
        return ES_OK;
    if (strcmp(e->type, SG_EV_STARTED) == 0) {
        TRY(str(e, "saga_id", &id, err));
        TRY(ident(e, "type", &type, err));
        corr = opt(e, "correlation_id");
        es_rm_cmd(b, "HSET", PJ_KEY_SAGA, id);
        es_rm_arg_str(b, "saga_id"), es_rm_arg_str(b, id);
        es_rm_arg_str(b, "type"), es_rm_arg_str(b, type);
        es_rm_arg_str(b, "state"), es_rm_arg_str(b, "running");
        es_rm_arg_str(b, "correlation_id"), es_rm_arg_str(b, corr ? corr : "");
        es_rm_arg_str(b, "seq"), es_rm_arg_int(b, (long long)e->seq);
        es_rm_arg_str(b, "started_at"), es_rm_arg_str(b, e->recorded_at);
        es_rm_arg_str(b, "updated_at"), es_rm_arg_str(b, e->recorded_at);
        es_rm_cmd(b, "ZADD", PJ_KEY_SAGAS_ALL);
        es_rm_arg_int(b, (long long)e->seq);
        es_rm_arg_str(b, id);
        es_rm_cmd(b, "ZADD", PJ_KEY_SAGAS_BY_TYPE, type);
        es_rm_arg_int(b, (long long)e->seq);
        es_rm_arg_str(b, id);
        saga_index(b, "ZADD", type, "running", (long long)e->seq, id);
    } else if (strcmp(e->type, SG_EV_STATE_CHANGED) == 0) {
        TRY(str(e, "saga_id", &id, err));
        TRY(ident(e, "type", &type, err));
        TRY(ident(e, "from", &from, err));
        TRY(ident(e, "to", &state, err));
        es_rm_cmd(b, "HSET", PJ_KEY_SAGA, id);
        es_rm_arg_str(b, "state"), es_rm_arg_str(b, state);
        if (opt(e, "error"))
            es_rm_arg_str(b, "error"), es_rm_arg_str(b, opt(e, "error"));
        es_rm_arg_str(b, "updated_at"), es_rm_arg_str(b, e->recorded_at);
        saga_index(b, "ZREM", type, from, 0, id);
        saga_index(b, "ZADD", type, state, (long long)e->seq, id);
    } else if (strncmp(e->type, SG_EV_STEP_PREFIX, strlen(SG_EV_STEP_PREFIX)) == 0) {
        TRY(str(e, "saga_id", &id, err));
        return saga_step(b, e, id, false, err);
    } else if (strncmp(e->type, SG_EV_COMPENSATION_PREFIX,
                       strlen(SG_EV_COMPENSATION_PREFIX)) == 0) {
        TRY(str(e, "saga_id", &id, err));
        return saga_step(b, e, id, true, err);
    }
    return ES_OK;
}

/* ---- dashboard -------------------------------------------------------- */

/* counters  hash of totals: events, users_*, orders_*, revenue, sagas_* */
static es_status
dashboard(es_rm_batch *b, const es_feed_event *e, es_error *err)
{
    static const struct {
        const char *category, *type, *counter;
    } rules[] = {
        {"user", "UserRegistered", "users_registered"},
        {"user", "UserRejected", "users_rejected"},
        {"order", "OrderPlaced", "orders_placed"},
        {"order", "OrderConfirmed", "orders_confirmed"},
        {"order", "OrderCancelled", "orders_cancelled"},
        {"order", "OrderFailed", "orders_failed"},
        {"account", "FundsDeposited", "deposits"},
        {"account", "PaymentCharged", "payments_charged"},
        {"account", "PaymentDeclined", "payments_declined"},
        {"account", "PaymentRefunded", "payments_refunded"},
        {"shipment", "ShipmentCreated", "shipments_created"},
        {SG_CATEGORY, SG_EV_STARTED, "sagas_started"},
    };
    size_t i;
    long long amount;

    es_rm_cmd(b, "HINCRBY", PJ_KEY_COUNTERS);
    es_rm_arg_str(b, "events");
    es_rm_arg_int(b, 1);
    for (i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (is(e, rules[i].category, rules[i].type)) {
            es_rm_cmd(b, "HINCRBY", PJ_KEY_COUNTERS);
            es_rm_arg_str(b, rules[i].counter);
            es_rm_arg_int(b, 1);
        }
    if (is(e, "account", "PaymentCharged") || is(e, "account", "PaymentRefunded")) {
        TRY(num(e, "amount", &amount, err));
        es_rm_cmd(b, "HINCRBY", PJ_KEY_COUNTERS);
        es_rm_arg_str(b, "revenue");
        es_rm_arg_int(b, e->type[7] == 'C' ? amount : -amount);
    }
    if (is(e, "user", "UserVerificationRecorded")) {
        TRY(num(e, "level", &amount, err));
        if (amount >= 100) {
            es_rm_cmd(b, "HINCRBY", PJ_KEY_COUNTERS);
            es_rm_arg_str(b, "users_verified");
            es_rm_arg_int(b, 1);
        }
    }
    if (is(e, SG_CATEGORY, SG_EV_STATE_CHANGED)) {
        const char *to;
        TRY(ident(e, "to", &to, err));
        es_rm_cmd(b, "HINCRBY", PJ_KEY_COUNTERS);
        es_rm_arg_fmt(b, "sagas_%s", to);
        es_rm_arg_int(b, 1);
    }
    return ES_OK;
}

/* ---- the table -------------------------------------------------------- */

const pj_projection pj_projections[] = {
    {"users", "users by id and by e-mail, with profile and status", users},
    {"orders", "orders with payment, stock and shipment state and history; "
               "each customer's orders newest first", orders},
    {"accounts", "customer account balances", accounts},
    {"inventory", "stock per SKU: on hand, reserved, available", inventory},
    {"sagas", "saga state and step timeline, indexed by state and type", sagas},
    {"dashboard", "counters for a dashboard", dashboard},
};
const size_t pj_projection_count = sizeof pj_projections / sizeof pj_projections[0];

const pj_projection *
pj_find(const char *name)
{
    size_t i;

    for (i = 0; i < pj_projection_count; i++)
        if (strcmp(pj_projections[i].name, name) == 0)
            return &pj_projections[i];
    return NULL;
}

es_status
pj_add(es_rm_batch *b, const pj_projection *p, const es_feed_event *e, es_error *err)
{
    es_rm_mark m = es_rm_batch_mark(b);
    es_status st;

    es_rm_batch_event(b, e->seq, e->position);
    st = p->apply(b, e, err);
    if (st == ES_OK && b->failed)
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory building a batch");
    if (st != ES_OK)
        es_rm_batch_rewind(b, m);
    return st;
}
