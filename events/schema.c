/*
 * The schema table and its checks (see schema.h).  The table is the one
 * place an event type's shape is written down: command/README.md and
 * docs/API.md describe it, GET /v1/schemas shows it, and the bounds here
 * are the ones the projections were written against (a projection adds
 * amounts with HINCRBY, so no amount or count may pass 10^15).
 */
#include "schema.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "json.h"

#define ID_MAX 200              /* an id's bytes: a stream id holds it */
#define N15 1000000000000000LL  /* 10^15: what a projection adds up */
#define MONEY 1000000000000LL   /* 10^12 minor units: one amount */
#define F_END {NULL, 0, false, 0, 0, NULL}

#define S(name, req, lo, hi) {name, ES_SCHEMA_STRING, req, lo, hi, NULL}
#define T(name, req, lo, hi) {name, ES_SCHEMA_TEXT, req, lo, hi, NULL}
#define I(name, req, lo, hi) {name, ES_SCHEMA_INTEGER, req, lo, hi, NULL}
#define K(name, req, lo, hi) {name, ES_SCHEMA_IDENT, req, lo, hi, NULL}
#define B(name, req) {name, ES_SCHEMA_BOOLEAN, req, 0, 0, NULL}
#define O(name, req, sub) {name, ES_SCHEMA_OBJECT, req, 0, 0, sub}
#define A(name, req, lo, hi, sub) {name, ES_SCHEMA_ARRAY, req, lo, hi, sub}

/* ---- the table ---------------------------------------------------------- */

static const es_schema_field user_email[] = {S("user_id", true, 1, ID_MAX), S("email", true, 1, 254),
                                             F_END};
static const es_schema_field user_registered[] = {
    S("user_id", true, 1, ID_MAX), S("email", true, 1, 254), S("name", true, 1, 200), F_END};
static const es_schema_field user_verification[] = {
    S("user_id", true, 1, ID_MAX), S("result", true, 1, 10), I("level", true, 0, 100), F_END};
static const es_schema_field user_reason[] = {S("user_id", true, 1, ID_MAX),
                                              S("reason", false, 1, 500), F_END};
static const es_schema_field user_only[] = {S("user_id", true, 1, ID_MAX), F_END};
static const es_schema_field profile_created[] = {S("user_id", true, 1, ID_MAX),
                                                  O("settings", true, NULL), F_END};
static const es_schema_field domain_counted[] = {S("user_id", true, 1, ID_MAX),
                                                 S("domain", true, 1, 254), F_END};
static const es_schema_field order_line[] = {
    S("sku", true, 1, ID_MAX), I("quantity", true, 1, 1000000), I("unit_price", true, 0, MONEY), F_END};
static const es_schema_field ship_to[] = {S("country", true, 1, 3), F_END};
static const es_schema_field order_placed[] = {
    S("order_id", true, 1, ID_MAX), S("customer_id", true, 1, ID_MAX), A("items", true, 1, 100, order_line),
    I("total", true, 0, N15), O("ship_to", false, ship_to), F_END};
static const es_schema_field order_moved[] = {S("order_id", true, 1, ID_MAX),
                                              S("reason", false, 1, 500), F_END};
static const es_schema_field funds_deposited[] = {S("customer_id", true, 1, ID_MAX),
                                                  I("amount", true, 1, MONEY), F_END};
static const es_schema_field payment[] = {S("customer_id", true, 1, ID_MAX), S("order_id", true, 1, ID_MAX),
                                          I("amount", true, 0, MONEY), F_END};
static const es_schema_field payment_declined[] = {
    S("customer_id", true, 1, ID_MAX), S("order_id", true, 1, ID_MAX), I("amount", true, 0, MONEY),
    I("balance", true, INT64_MIN, INT64_MAX), F_END};
static const es_schema_field stock_restocked[] = {S("sku", true, 1, ID_MAX),
                                                  I("quantity", true, 1, N15), F_END};
static const es_schema_field stock_moved[] = {S("sku", true, 1, ID_MAX), S("order_id", true, 1, ID_MAX),
                                              I("quantity", true, 1, N15), F_END};
static const es_schema_field reserved_line[] = {S("sku", true, 1, ID_MAX), I("quantity", true, 1, N15),
                                                F_END};
static const es_schema_field reservation_made[] = {S("order_id", true, 1, ID_MAX),
                                                   A("items", true, 1, 15, reserved_line), F_END};
static const es_schema_field reservation_rejected[] = {
    S("order_id", true, 1, ID_MAX), S("sku", true, 1, ID_MAX), I("requested", true, 1, N15),
    I("available", true, -N15, N15), F_END};
static const es_schema_field order_only[] = {S("order_id", true, 1, ID_MAX), F_END};
static const es_schema_field shipment_created[] = {
    S("order_id", true, 1, ID_MAX), S("country", true, 1, 3), S("tracking_id", true, 1, ID_MAX), F_END};
static const es_schema_field shipment_rejected[] = {
    S("order_id", true, 1, ID_MAX), S("country", true, 1, 3), S("reason", true, 1, 500), F_END};
static const es_schema_field recorded[] = {S("user_id", true, 1, ID_MAX), S("kind", true, 1, 100),
                                           S("status", true, 1, 20), S("detail", false, 1, 1000),
                                           F_END};
/* the saga manager's own (saga/engine.c); errors are texts a context or a
 * gateway gave, so any text */
static const es_schema_field saga_started[] = {
    S("saga_id", true, 1, ID_MAX), K("type", true, 1, 100), T("correlation_id", false, 0, 200),
    O("data", false, NULL), F_END};
static const es_schema_field saga_state[] = {
    S("saga_id", true, 1, ID_MAX), K("type", true, 1, 100), K("from", true, 1, 100),
    K("to", true, 1, 100), T("error", false, 0, 4000), F_END};
static const es_schema_field saga_step[] = {
    S("saga_id", true, 1, ID_MAX), K("step", true, 1, 100), I("attempt", true, 0, 1000000000),
    T("error", false, 0, 4000), B("will_retry", false), B("refused", false),
    I("retry_at_ms", false, 0, INT64_MAX), O("result", false, NULL), F_END};
static const es_schema_field saga_compensation[] = {
    S("saga_id", true, 1, ID_MAX), K("step", true, 1, 100), I("attempt", false, 0, 1000000000),
    T("error", false, 0, 4000), T("note", false, 0, 500), F_END};
static const es_schema_field saga_replayed[] = {S("saga_id", true, 1, ID_MAX), T("note", false, 0, 4000),
                                                F_END};
static const es_schema_field token_created[] = {
    S("name", true, 1, 64), A("scopes", true, 0, 64, NULL), F_END};
static const es_schema_field token_revoked[] = {S("name", true, 1, 64), F_END};
/* esctl projection park (cli/projections.c) */
static const es_schema_field projection_parked[] = {
    K("projection", true, 1, 64), I("seq", true, 1, INT64_MAX),
    S("position", false, 0, ES_POSITION_TEXT_MAX), S("reason", true, 1, 500),
    S("by", true, 1, 200), F_END};

const es_schema es_schemas[] = {
    {"user", "UserRegistered", 1, "user.register", user_registered},
    {"user", "UserVerificationRecorded", 1, "user.verify", user_verification},
    {"user", "UserRejected", 1, "user.reject", user_reason},
    {"useremail", "EmailReserved", 1, "user.register", user_email},
    {"useremail", "EmailReleased", 1, "user.reject", user_email},
    {"profile", "ProfileCreated", 1, "profile.create", profile_created},
    {"profile", "ProfileDeleted", 1, "profile.delete", user_only},
    {"fraud", "FraudCheckPassed", 1, "fraud.check", user_only},
    {"fraud", "FraudCheckFailed", 1, "fraud.check", user_reason},
    {"frauddomain", "DomainRegistrationCounted", 1, "fraud.check", domain_counted},
    {"order", "OrderPlaced", 1, "order.place", order_placed},
    {"order", "OrderConfirmed", 1, "order.confirm", order_moved},
    {"order", "OrderCancelled", 1, "order.cancel", order_moved},
    {"order", "OrderFailed", 1, "order.fail", order_moved},
    {"account", "FundsDeposited", 1, "payment.deposit", funds_deposited},
    {"account", "PaymentCharged", 1, "payment.charge", payment},
    {"account", "PaymentDeclined", 1, "payment.charge", payment_declined},
    {"account", "PaymentRefunded", 1, "payment.refund", payment},
    {"stock", "StockRestocked", 1, "inventory.restock", stock_restocked},
    {"stock", "StockReserved", 1, "inventory.reserve", stock_moved},
    {"stock", "StockReleased", 1, "inventory.release", stock_moved},
    {"reservation", "ReservationMade", 1, "inventory.reserve", reservation_made},
    {"reservation", "ReservationRejected", 1, "inventory.reserve", reservation_rejected},
    {"reservation", "ReservationReleased", 1, "inventory.release", order_only},
    {"shipment", "ShipmentCreated", 1, "shipping.create", shipment_created},
    {"shipment", "ShipmentRejected", 1, "shipping.create", shipment_rejected},
    {"shipment", "ShipmentCancelled", 1, "shipping.cancel", order_only},
    {"notification", "NotificationRecorded", 1, "notification.send", recorded},
    {"email", "EmailRecorded", 1, "email.send", recorded},
    {"analytics", "AnalyticsRecorded", 1, "analytics.record", recorded},
    {"saga", "SagaStarted", 1, "es-saga", saga_started},
    {"saga", "SagaStateChanged", 1, "es-saga", saga_state},
    {"saga", "SagaReplayed", 1, "esctl saga retry", saga_replayed},
    {"saga", "SagaTakenOver", 1, "es-saga", saga_replayed},
    {"saga", "SagaStepStarted", 1, "es-saga", saga_step},
    {"saga", "SagaStepSucceeded", 1, "es-saga", saga_step},
    {"saga", "SagaStepFailed", 1, "es-saga", saga_step},
    {"saga", "SagaCompensationStarted", 1, "es-saga", saga_compensation},
    {"saga", "SagaCompensationSucceeded", 1, "es-saga", saga_compensation},
    {"saga", "SagaCompensationFailed", 1, "es-saga", saga_compensation},
    {"token", "TokenCreated", 1, "esctl token create", token_created},
    {"token", "TokenRevoked", 1, "esctl token revoke", token_revoked},
    {"projection", "ProjectionEventParked", 1, "esctl projection park", projection_parked},
};
const size_t es_schema_count = sizeof es_schemas / sizeof es_schemas[0];

/* ---- lookup ------------------------------------------------------------- */

/* Whether c is the n bytes of category: on every raw append, so the first
 * byte decides most (a schemaless category costs a few nanoseconds). */
static bool
same_category(const char *c, const char *category, size_t n)
{
    return n > 0 && c[0] == category[0] && strncmp(c, category, n) == 0 && c[n] == '\0';
}

bool
es_schema_category_declared(const char *category, size_t n)
{
    for (size_t i = 0; i < es_schema_count; i++)
        if (same_category(es_schemas[i].category, category, n))
            return true;
    return false;
}

const es_schema *
es_schema_find(const char *stream, const char *type)
{
    size_t n = strcspn(stream, "-");

    for (size_t i = 0; i < es_schema_count; i++)
        if (same_category(es_schemas[i].category, stream, n) && strcmp(es_schemas[i].type, type) == 0)
            return &es_schemas[i];
    return NULL;
}

/* ---- checks of a decoded event ------------------------------------------ */

static es_status
violation(es_error *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static es_status
violation(es_error *err, const char *path, const char *fmt, ...)
{
    char what[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return es_error_set(err, ES_ERULE, ES_CODE_SCHEMA_VIOLATION, path, "%s %s", path, what);
}

static bool
ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

static es_status check_fields(const es_schema_field *fields, const json_t *obj, const char *path,
                              es_error *err);

static es_status
check_value(const es_schema_field *f, const json_t *v, const char *path, es_error *err)
{
    const char *s;
    size_t n;

    switch (f->kind) {
    case ES_SCHEMA_STRING:
    case ES_SCHEMA_TEXT:
    case ES_SCHEMA_IDENT:
        if (!json_is_string(v))
            return violation(err, path, "must be a string");
        s = json_string_value(v);
        n = json_string_length(v);
        if (strlen(s) != n)
            return violation(err, path, "must not contain NUL");
        if ((int64_t)n < f->min || (int64_t)n > f->max)
            return violation(err, path, "must have %" PRId64 " to %" PRId64 " bytes, not %zu",
                             f->min, f->max, n);
        if (f->kind == ES_SCHEMA_STRING && !es_text_printable(s, n))
            return violation(err, path, "must not contain a control character");
        if (f->kind == ES_SCHEMA_IDENT)
            for (size_t i = 0; i < n; i++)
                if (!ident_char(s[i]))
                    return violation(err, path, "must be letters, digits, '_', '.' or '-'");
        return ES_OK;
    case ES_SCHEMA_INTEGER:
        if (!json_is_integer(v))
            return violation(err, path, "must be an integer");
        if (json_integer_value(v) < f->min || json_integer_value(v) > f->max)
            return violation(err, path, "must be from %" PRId64 " to %" PRId64 ", not %" JSON_INTEGER_FORMAT,
                             f->min, f->max, json_integer_value(v));
        return ES_OK;
    case ES_SCHEMA_BOOLEAN:
        return json_is_boolean(v) ? ES_OK : violation(err, path, "must be true or false");
    case ES_SCHEMA_OBJECT:
        if (!json_is_object(v))
            return violation(err, path, "must be an object");
        return f->fields ? check_fields(f->fields, v, path, err) : ES_OK;
    case ES_SCHEMA_ARRAY:
        if (!json_is_array(v))
            return violation(err, path, "must be an array");
        n = json_array_size(v);
        if ((int64_t)n < f->min || (int64_t)n > f->max)
            return violation(err, path, "must have %" PRId64 " to %" PRId64 " elements, not %zu",
                             f->min, f->max, n);
        if (f->fields != NULL)
            for (size_t i = 0; i < n; i++) {
                char sub[sizeof err->field];
                const json_t *el = json_array_get(v, i);
                if (snprintf(sub, sizeof sub, "%s[%zu]", path, i) >= (int)sizeof sub)
                    sub[sizeof sub - 1] = '\0';   /* es_error keeps that much anyway */
                if (!json_is_object(el))
                    return violation(err, sub, "must be an object");
                if (check_fields(f->fields, el, sub, err) != ES_OK)
                    return err->status;
            }
        return ES_OK;
    }
    return violation(err, path, "has a kind this build does not know");
}

static es_status
check_fields(const es_schema_field *fields, const json_t *obj, const char *path, es_error *err)
{
    for (const es_schema_field *f = fields; f->name != NULL; f++) {
        const json_t *v = json_object_get(obj, f->name);
        char sub[sizeof err->field];

        if (snprintf(sub, sizeof sub, "%s.%s", path, f->name) >= (int)sizeof sub)
            sub[sizeof sub - 1] = '\0';
        if (v == NULL || json_is_null(v)) {
            if (f->required)
                return violation(err, sub, "is required");
            continue;
        }
        if (check_value(f, v, sub, err) != ES_OK)
            return err->status;
    }
    return ES_OK;
}

es_status
es_schema_check(const es_schema *s, const json_t *data, const char *prefix, es_error *err)
{
    if (!json_is_object(data))
        return violation(err, prefix, "must be an object");
    if (check_fields(s->fields, data, prefix, err) != ES_OK) {
        /* say which schema, after what is wrong */
        size_t n = strlen(err->message);
        snprintf(err->message + n, sizeof err->message - n, " (schema of %s %s, version %d)",
                 s->category, s->type, s->version);
        return err->status;
    }
    return ES_OK;
}

/* ---- checks of an event's text ------------------------------------------ */

typedef struct walk {
    const char *path;
    bool bad;
    char number[48];
} walk;

/* Whether the number text (len bytes, as es_json_check accepted it) is
 * one every stage reads alike: the stored jsonb text spells an exponent
 * out (1e20 is 21 digits), so only plain forms pass: an integer within 64
 * bits, or a decimal with at most 18 digits before its point and 30
 * after (no exponent), which a double holds without overflow. */
static bool
portable_number(const char *text, size_t len)
{
    const char *p = text, *end = text + len, *dot;
    char buf[24];

    if (memchr(text, 'e', len) || memchr(text, 'E', len))
        return false;
    if ((dot = memchr(text, '.', len)) != NULL) {
        size_t before = (size_t)(dot - p) - (*p == '-');
        return before <= 18 && (size_t)(end - dot - 1) <= 30;
    }
    if (len >= sizeof buf)
        return false;
    memcpy(buf, text, len);
    buf[len] = '\0';
    errno = 0;
    (void)strtoll(buf, NULL, 10);
    return errno == 0;
}

static bool walk_value(walk *w, es_json_slice v);

static bool
walk_member(void *ctx, size_t index, es_json_slice key, es_json_slice v)
{
    (void)index;
    (void)key;
    return walk_value(ctx, v);
}

static bool
walk_value(walk *w, es_json_slice v)
{
    switch (v.text[0]) {
    case '{':
        return es_json_members(v.text, v.len, walk_member, w);
    case '[':
        return es_json_elements(v.text, v.len, walk_member, w);
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        if (!portable_number(v.text, v.len)) {
            w->bad = true;
            snprintf(w->number, sizeof w->number, "%.*s%s", (int)(v.len > 40 ? 40 : v.len),
                     v.text, v.len > 40 ? "..." : "");
            return false;
        }
        return true;
    default:
        return true;
    }
}

es_status
es_schema_check_text(const char *stream, const char *type, int schema_version, const char *data,
                     const es_upcasters *up, const char *prefix, es_error *err)
{
    char path[sizeof err->field];
    const es_schema *s;
    size_t n = strcspn(stream, "-");

    if (!es_schema_category_declared(stream, n))
        return ES_OK;
    snprintf(path, sizeof path, "%s.type", prefix);
    if ((s = es_schema_find(stream, type)) == NULL)
        return es_error_set(err, ES_ERULE, ES_CODE_EVENT_TYPE_UNKNOWN, path,
                            "category \"%.*s\" declares no event type \"%s\" (GET /v1/schemas "
                            "lists its types)", (int)n, stream, type);
    return es_schema_check_data_text(s, schema_version, data, up, prefix, err);
}

es_status
es_schema_check_data_text(const es_schema *s, int schema_version, const char *data,
                          const es_upcasters *up, const char *prefix, es_error *err)
{
    char path[sizeof err->field];
    const char *type = s->type;
    json_error_t jerr;
    json_t *v = NULL;
    char *upcast = NULL;
    int version = schema_version > 0 ? schema_version : 1;
    size_t len = strlen(data);
    walk w = {NULL, false, ""};
    es_status st;

    snprintf(path, sizeof path, "%s.data", prefix);
    if (es_json_check(data, len, NULL, NULL) != ES_JSON_OBJECT)
        return violation(err, path, "must be a JSON object");
    if (!walk_value(&w, (es_json_slice){data, len}) && w.bad)
        return violation(err, path, "holds the number %s: only integers within 64 bits and "
                         "decimals without exponent are allowed", w.number);
    if (version > s->version || (version < s->version && !es_upcasters_needed(up, type, version))) {
        snprintf(path, sizeof path, "%s.schema_version", prefix);
        return es_error_set(err, ES_ERULE, ES_CODE_SCHEMA_VERSION, path,
                            "%s %s has schema version %d; version %d is not %s", s->category,
                            s->type, s->version, version,
                            version > s->version ? "known yet" : "upcast by this server");
    }
    if (version < s->version) {
        es_error uerr;
        es_error_clear(&uerr);
        if (es_upcasters_apply(up, type, &version, data, &upcast, &uerr) != ES_OK ||
            version != s->version) {
            snprintf(path, sizeof path, "%s.schema_version", prefix);
            st = es_error_set(err, ES_ERULE, ES_CODE_SCHEMA_VERSION, path,
                              "%s %s version %d could not be upcast to version %d%s%s",
                              s->category, s->type, schema_version, s->version,
                              uerr.message[0] ? ": " : "", uerr.message);
            goto done;
        }
        data = upcast;
    }
    if ((v = json_loads(data, JSON_DECODE_ANY, &jerr)) == NULL) {
        st = violation(err, path, "cannot be read: %s", jerr.text);
        goto done;
    }
    st = es_schema_check(s, v, path, err);
done:
    json_decref(v);
    free(upcast);
    return st;
}

/* ---- the listing ---------------------------------------------------------- */

static const char *
kind_name(es_schema_kind k)
{
    switch (k) {
    case ES_SCHEMA_STRING: return "string";
    case ES_SCHEMA_TEXT: return "text";
    case ES_SCHEMA_IDENT: return "identifier";
    case ES_SCHEMA_INTEGER: return "integer";
    case ES_SCHEMA_BOOLEAN: return "boolean";
    case ES_SCHEMA_OBJECT: return "object";
    case ES_SCHEMA_ARRAY: return "array";
    }
    return "unknown";
}

static json_t *
fields_json(const es_schema_field *fields)
{
    json_t *list = json_array();

    for (const es_schema_field *f = fields; f->name != NULL; f++) {
        json_t *o = json_pack("{s:s, s:s, s:b}", "name", f->name, "type", kind_name(f->kind),
                              "required", f->required);
        switch (f->kind) {
        case ES_SCHEMA_STRING:
        case ES_SCHEMA_TEXT:
        case ES_SCHEMA_IDENT:
            json_object_set_new(o, "min_length", json_integer(f->min));
            json_object_set_new(o, "max_length", json_integer(f->max));
            break;
        case ES_SCHEMA_INTEGER:
            json_object_set_new(o, "minimum", json_integer(f->min));
            json_object_set_new(o, "maximum", json_integer(f->max));
            break;
        case ES_SCHEMA_ARRAY:
            json_object_set_new(o, "min_items", json_integer(f->min));
            json_object_set_new(o, "max_items", json_integer(f->max));
            break;
        default:
            break;
        }
        if (f->fields != NULL)
            json_object_set_new(o, "fields", fields_json(f->fields));
        json_array_append_new(list, o);
    }
    return list;
}

json_t *
es_schema_list_json(void)
{
    json_t *list = json_array();

    for (size_t i = 0; i < es_schema_count; i++) {
        const es_schema *s = &es_schemas[i];
        json_array_append_new(list, json_pack("{s:s, s:s, s:i, s:s, s:o}", "category", s->category,
                                              "type", s->type, "version", s->version, "written_by",
                                              s->written_by, "fields", fields_json(s->fields)));
    }
    return json_pack("{s:o}", "schemas", list);
}
