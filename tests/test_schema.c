/*
 * The event schemas (events/schema.c): that every protected category
 * declares them, that an event breaking one is refused naming the field,
 * that the raw text check refuses numbers no stage could read and types
 * a closed category does not list, that an older version passes through
 * its upcaster, and above all that the projections apply every event its
 * schema lets in: each schema's events at its bounds, and with each
 * member removed, retyped or pushed past its bounds, are given to every
 * projection, and whatever the schema accepts, every projection applies.
 * No server is needed: the projections only build batches here.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "harness.h"
#include "projections.h"
#include "schema.h"

/* ---- building events from a schema ---------------------------------------- */

typedef enum { AT_MIN, AT_MAX } bound;

static json_t *build_fields(const es_schema_field *fields, bound b, bool optional);

static json_t *
text_of(size_t n)
{
    char *s = malloc(n + 1);
    json_t *v;

    memset(s, 'a', n);
    s[n] = '\0';
    v = json_string(s);
    free(s);
    return v;
}

static json_t *
build_value(const es_schema_field *f, bound b)
{
    int64_t n = b == AT_MIN ? f->min : f->max;
    json_t *arr;

    switch (f->kind) {
    case ES_SCHEMA_STRING:
    case ES_SCHEMA_TEXT:
    case ES_SCHEMA_IDENT:
        return text_of((size_t)n);
    case ES_SCHEMA_INTEGER:
        return json_integer(n);
    case ES_SCHEMA_BOOLEAN:
        return json_boolean(b == AT_MAX);
    case ES_SCHEMA_OBJECT:
        return f->fields ? build_fields(f->fields, b, b == AT_MAX) : json_pack("{s:i}", "k", 1);
    case ES_SCHEMA_ARRAY:
        arr = json_array();
        for (int64_t i = 0; i < n && i < 200; i++)
            json_array_append_new(arr, f->fields ? build_fields(f->fields, b, b == AT_MAX)
                                                 : json_string("x"));
        return arr;
    }
    return json_null();
}

/* The required members (and the optional ones too with optional). */
static json_t *
build_fields(const es_schema_field *fields, bound b, bool optional)
{
    json_t *o = json_object();

    for (const es_schema_field *f = fields; f->name; f++)
        if (f->required || optional)
            json_object_set_new(o, f->name, build_value(f, b));
    return o;
}

static es_feed_event
feed_event(const es_schema *s, json_t *data)
{
    static char stream[64];
    es_feed_event e;

    memset(&e, 0, sizeof e);
    snprintf(stream, sizeof stream, "%s-x", s->category);
    e.seq = 7;
    snprintf(e.position, sizeof e.position, "100-7");
    e.stream = stream;
    e.type = s->type;
    e.event_id = "00000000-0000-4000-8000-000000000007";
    e.recorded_at = "2026-11-22T00:00:00.000000Z";
    e.category_end = strchr(stream, '-');
    e.data = data;
    return e;
}

/* Whether every projection applies data as an event of s; if not, why. */
static bool
every_projection_applies(const es_schema *s, json_t *data, char *why, size_t size)
{
    es_feed_event e = feed_event(s, data);

    for (size_t i = 0; i < pj_projection_count; i++) {
        es_rm_batch b;
        es_error err;
        es_status st;

        es_rm_batch_init(&b, pj_projections[i].name, NULL);
        st = pj_add(&b, &pj_projections[i], &e, &err);
        es_rm_batch_free(&b);
        if (st != ES_OK) {
            snprintf(why, size, "%s: %s", pj_projections[i].name, err.message);
            return false;
        }
    }
    return true;
}

/* ---- tests ------------------------------------------------------------------ */

START_TEST(every_protected_category_declares_schemas)
{
    for (const char *const *c = es_protected_categories; *c; c++)
        ck_assert_msg(es_schema_category_declared(*c, strlen(*c)),
                      "protected category %s has no schema", *c);
    /* each (category, type) once, each with members */
    for (size_t i = 0; i < es_schema_count; i++) {
        ck_assert_ptr_nonnull(es_schemas[i].fields);
        ck_assert_int_ge(es_schemas[i].version, 1);
        for (size_t k = i + 1; k < es_schema_count; k++)
            ck_assert(strcmp(es_schemas[i].category, es_schemas[k].category) != 0 ||
                      strcmp(es_schemas[i].type, es_schemas[k].type) != 0);
    }
    ck_assert(!es_schema_category_declared("audit", 5));
}
END_TEST

/* The case: what stopped the users projection is refused. */
START_TEST(a_user_registered_without_data_is_refused_naming_the_field)
{
    es_error err;
    const es_schema *s = es_schema_find("user-x", "UserRegistered");
    json_t *empty = json_object();
    char why[400];

    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(es_schema_check(s, empty, "data", &err), ES_ERULE);
    ck_assert_str_eq(err.code, ES_CODE_SCHEMA_VIOLATION);
    ck_assert_str_eq(err.field, "data.user_id");
    ck_assert_ptr_nonnull(strstr(err.message, "data.user_id is required"));
    /* and it is an event the users projection cannot apply */
    ck_assert(!every_projection_applies(s, empty, why, sizeof why));
    ck_assert_ptr_nonnull(strstr(why, "users"));
    json_decref(empty);

    ck_assert_int_eq(es_schema_check_text("user-x", "UserRegistered", 1, "{}", NULL, "events[0]",
                                          &err), ES_ERULE);
    ck_assert_str_eq(err.field, "events[0].data.user_id");
    ck_assert_int_eq(es_schema_check_text("user-x", "UserRegistered", 1,
                                          "{\"user_id\":\"u\",\"email\":\"a@b.c\",\"name\":7}",
                                          NULL, "events[0]", &err), ES_ERULE);
    ck_assert_str_eq(err.field, "events[0].data.name");
    ck_assert_ptr_nonnull(strstr(err.message, "must be a string"));
    ck_assert_int_eq(es_schema_check_text("user-x", "UserRegistered", 1,
                                          "{\"user_id\":\"u\",\"email\":\"a@b.c\",\"name\":\"N\"}",
                                          NULL, "events[0]", &err), ES_OK);
}
END_TEST

/* Whatever a schema accepts, every projection applies: at the bounds,
 * and with each member missing, null, of another type or past a bound. */
START_TEST(the_projections_apply_whatever_the_schemas_accept)
{
    size_t accepted = 0, refused = 0;

    for (size_t i = 0; i < es_schema_count; i++) {
        const es_schema *s = &es_schemas[i];
        char why[400];
        es_error err;

        for (int b = AT_MIN; b <= AT_MAX; b++)
            for (int opt = 0; opt < 2; opt++) {
                json_t *d = build_fields(s->fields, (bound)b, opt == 1);
                ck_assert_msg(es_schema_check(s, d, "data", &err) == ES_OK, "%s %s: %s",
                              s->category, s->type, err.message);
                ck_assert_msg(every_projection_applies(s, d, why, sizeof why),
                              "%s %s at its %s bounds: %s", s->category, s->type,
                              b == AT_MIN ? "lower" : "upper", why);
                json_decref(d);
            }
        for (const es_schema_field *f = s->fields; f->name; f++) {
            json_t *variants[] = {NULL, json_null(), json_string("x"), json_integer(1),
                                  json_integer(-1), json_true(), json_object(), json_array(),
                                  json_real(1.5), text_of(0), NULL, NULL, NULL, NULL};
            size_t nv = 10;

            if (f->kind == ES_SCHEMA_INTEGER) {
                if (f->max < INT64_MAX)
                    variants[nv++] = json_integer(f->max + 1);
                if (f->min > INT64_MIN)
                    variants[nv++] = json_integer(f->min - 1);
            } else if (f->kind <= ES_SCHEMA_IDENT) {
                variants[nv++] = text_of((size_t)f->max + 1);
                variants[nv++] = json_string("a:b\n");
            } else if (f->kind == ES_SCHEMA_ARRAY) {
                json_t *big = json_array();
                for (int64_t k = 0; k <= f->max; k++)
                    json_array_append_new(big, json_integer(1));
                variants[nv++] = big;
            }
            for (size_t v = 0; v < nv; v++) {
                json_t *d = build_fields(s->fields, AT_MAX, true);

                if (v == 0)
                    json_object_del(d, f->name);
                else
                    json_object_set(d, f->name, variants[v]);
                if (es_schema_check(s, d, "data", &err) == ES_OK) {
                    accepted++;
                    ck_assert_msg(every_projection_applies(s, d, why, sizeof why),
                                  "%s %s with %s = variant %zu passes its schema: %s",
                                  s->category, s->type, f->name, v, why);
                } else {
                    refused++;
                    ck_assert_str_eq(err.code, ES_CODE_SCHEMA_VIOLATION);
                    ck_assert_msg(strncmp(err.field, "data.", 5) == 0 &&
                                  strstr(err.field, f->name) != NULL,
                                  "%s %s: field %s named for %s", s->category, s->type, err.field,
                                  f->name);
                }
                json_decref(d);
            }
            for (size_t v = 1; v < nv; v++)
                json_decref(variants[v]);
        }
    }
    ck_assert_uint_gt(accepted, 0);
    ck_assert_uint_gt(refused, accepted);
}
END_TEST

START_TEST(nested_members_are_named_by_their_path)
{
    es_error err;

    ck_assert_int_eq(
        es_schema_check_text("order-1", "OrderPlaced", 1,
                             "{\"order_id\":\"o\",\"customer_id\":\"c\",\"total\":1,\"items\":"
                             "[{\"sku\":\"s\",\"quantity\":1,\"unit_price\":1},{\"sku\":\"\","
                             "\"quantity\":1,\"unit_price\":1}]}", NULL, "events[3]", &err),
        ES_ERULE);
    ck_assert_str_eq(err.field, "events[3].data.items[1].sku");
    ck_assert_int_eq(
        es_schema_check_text("order-1", "OrderPlaced", 1,
                             "{\"order_id\":\"o\",\"customer_id\":\"c\",\"total\":1000000000000001,"
                             "\"items\":[{\"sku\":\"s\",\"quantity\":1,\"unit_price\":1}]}", NULL,
                             "events[0]", &err),
        ES_ERULE);
    ck_assert_str_eq(err.field, "events[0].data.total");
    ck_assert_int_eq(
        es_schema_check_text("order-1", "OrderPlaced", 1,
                             "{\"order_id\":\"o\",\"customer_id\":\"c\",\"total\":1,\"items\":[],"
                             "\"ship_to\":{\"country\":\"DE\"}}", NULL, "events[0]", &err),
        ES_ERULE);
    ck_assert_str_eq(err.field, "events[0].data.items");
}
END_TEST

START_TEST(the_text_check_refuses_what_no_stage_could_read)
{
    static const char *const bad_numbers[] = {"1e400", "1e20", "1E2", "99999999999999999999",
                                              "-9223372036854775809",
                                              "1234567890123456789.5", "0.1234567890123456789012345678901"};
    const char *ok = "{\"customer_id\":\"c\",\"amount\":5,\"note\":%s}";
    char data[256];
    es_error err;

    for (size_t i = 0; i < sizeof bad_numbers / sizeof bad_numbers[0]; i++) {
        snprintf(data, sizeof data, ok, bad_numbers[i]);
        ck_assert_msg(es_schema_check_text("account-c", "FundsDeposited", 1, data, NULL,
                                           "events[0]", &err) == ES_ERULE, "%s", data);
        ck_assert_str_eq(err.field, "events[0].data");
        ck_assert_ptr_nonnull(strstr(err.message, "number"));
    }
    /* nested too */
    ck_assert_int_eq(es_schema_check_text("account-c", "FundsDeposited", 1,
                                          "{\"customer_id\":\"c\",\"amount\":5,\"x\":[{\"y\":1e400}]}",
                                          NULL, "events[0]", &err), ES_ERULE);
    snprintf(data, sizeof data, ok, "[1.5, -0.25, 9223372036854775807, {\"k\": -12}]");
    ck_assert_int_eq(es_schema_check_text("account-c", "FundsDeposited", 1, data, NULL,
                                          "events[0]", &err), ES_OK);
    /* an integer field holds integers, not 5.0 */
    ck_assert_int_eq(es_schema_check_text("account-c", "FundsDeposited", 1,
                                          "{\"customer_id\":\"c\",\"amount\":5.0}", NULL,
                                          "events[0]", &err), ES_ERULE);
    ck_assert_str_eq(err.field, "events[0].data.amount");
    /* the last of a repeated key is the one stored (jsonb) and checked */
    ck_assert_int_eq(es_schema_check_text("account-c", "FundsDeposited", 1,
                                          "{\"customer_id\":\"c\",\"amount\":5,\"amount\":\"5\"}",
                                          NULL, "events[0]", &err), ES_ERULE);
    ck_assert_str_eq(err.field, "events[0].data.amount");
    ck_assert_int_eq(es_schema_check_text("account-c", "FundsDeposited", 1,
                                          "{\"customer_id\":\"c\",\"amount\":\"5\",\"am\\u006funt\":5}",
                                          NULL, "events[0]", &err), ES_OK);
    /* a closed category: a type it does not list */
    ck_assert_int_eq(es_schema_check_text("account-c", "FundsStolen", 1, "{}", NULL, "events[1]",
                                          &err), ES_ERULE);
    ck_assert_str_eq(err.code, ES_CODE_EVENT_TYPE_UNKNOWN);
    ck_assert_str_eq(err.field, "events[1].type");
    /* a category without schemas takes anything */
    ck_assert_int_eq(es_schema_check_text("audit-c", "FundsStolen", 1, "{\"n\":1e400}", NULL,
                                          "events[0]", &err), ES_OK);
    ck_assert_int_eq(es_schema_check_text("accounting-c", "X", 1, "{}", NULL, "events[0]", &err),
                     ES_OK);
    /* a version this server does not know */
    ck_assert_int_eq(es_schema_check_text("account-c", "FundsDeposited", 2,
                                          "{\"customer_id\":\"c\",\"amount\":5}", NULL,
                                          "events[0]", &err), ES_ERULE);
    ck_assert_str_eq(err.code, ES_CODE_SCHEMA_VERSION);
    ck_assert_str_eq(err.field, "events[0].schema_version");
}
END_TEST

/* version 1 had "qty"; version 2 calls it "quantity" */
static es_status
rename_qty(json_t *data, void *ctx, es_error *err)
{
    json_t *q = json_object_get(data, "qty");

    (void)ctx;
    if (q == NULL)
        return es_error_set(err, ES_EINVALID, NULL, "data.qty", "version 1 has qty");
    json_object_set(data, "quantity", q);
    json_object_del(data, "qty");
    return ES_OK;
}

START_TEST(an_old_version_passes_through_its_upcaster)
{
    static const es_schema_field fields[] = {
        {"sku", ES_SCHEMA_STRING, true, 1, 200, NULL},
        {"quantity", ES_SCHEMA_INTEGER, true, 1, 100, NULL},
        {NULL, 0, false, 0, 0, NULL}};
    const es_schema v2 = {"tcat", "ItemAdded", 2, "a test", fields};
    es_upcasters *u;
    es_error err;

    ck_assert_int_eq(es_upcasters_create(&u), ES_OK);
    /* without the upcaster, version 1 is not readable as the current one */
    ck_assert_int_eq(es_schema_check_data_text(&v2, 1, "{\"sku\":\"s\",\"qty\":3}", u, "events[0]",
                                               &err), ES_ERULE);
    ck_assert_str_eq(err.code, ES_CODE_SCHEMA_VERSION);
    ck_assert_int_eq(es_upcasters_register(u, "ItemAdded", 1, rename_qty, NULL), ES_OK);
    ck_assert_int_eq(es_schema_check_data_text(&v2, 1, "{\"sku\":\"s\",\"qty\":3}", u, "events[0]",
                                               &err), ES_OK);
    /* the schema judges the upcast event: qty 300 is quantity 300 */
    ck_assert_int_eq(es_schema_check_data_text(&v2, 1, "{\"sku\":\"s\",\"qty\":300}", u,
                                               "events[0]", &err), ES_ERULE);
    ck_assert_str_eq(err.field, "events[0].data.quantity");
    /* an upcaster that refuses */
    ck_assert_int_eq(es_schema_check_data_text(&v2, 1, "{\"sku\":\"s\"}", u, "events[0]", &err),
                     ES_ERULE);
    ck_assert_str_eq(err.field, "events[0].schema_version");
    /* the current version is checked as it is */
    ck_assert_int_eq(es_schema_check_data_text(&v2, 2, "{\"sku\":\"s\",\"quantity\":3}", u,
                                               "events[0]", &err), ES_OK);
    ck_assert_int_eq(es_schema_check_data_text(&v2, 2, "{\"sku\":\"s\",\"qty\":3}", u, "events[0]",
                                               &err), ES_ERULE);
    es_upcasters_destroy(u);
}
END_TEST

START_TEST(the_listing_has_every_schema)
{
    json_t *l = es_schema_list_json(), *s = json_object_get(l, "schemas"), *f;
    char *text;

    ck_assert_uint_eq(json_array_size(s), es_schema_count);
    text = json_dumps(json_array_get(s, 0), JSON_COMPACT | JSON_SORT_KEYS);
    ck_assert_str_eq(text,
                     "{\"category\":\"user\",\"fields\":["
                     "{\"max_length\":200,\"min_length\":1,\"name\":\"user_id\",\"required\":true,"
                     "\"type\":\"string\"},"
                     "{\"max_length\":254,\"min_length\":1,\"name\":\"email\",\"required\":true,"
                     "\"type\":\"string\"},"
                     "{\"max_length\":200,\"min_length\":1,\"name\":\"name\",\"required\":true,"
                     "\"type\":\"string\"}],"
                     "\"type\":\"UserRegistered\",\"version\":1,\"written_by\":\"user.register\"}");
    free(text);
    for (size_t i = 0; i < json_array_size(s); i++)
        if (strcmp(json_string_value(json_object_get(json_array_get(s, i), "type")),
                   "OrderPlaced") == 0) {
            f = json_array_get(json_object_get(json_array_get(s, i), "fields"), 2);
            ck_assert_str_eq(json_string_value(json_object_get(f, "name")), "items");
            ck_assert_int_eq(json_integer_value(json_object_get(f, "max_items")), 100);
            ck_assert_uint_eq(json_array_size(json_object_get(f, "fields")), 3);
        }
    json_decref(l);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("schema");
    TCase *tc = tcase_create("schema");

    tcase_add_test(tc, every_protected_category_declares_schemas);
    tcase_add_test(tc, a_user_registered_without_data_is_refused_naming_the_field);
    tcase_add_test(tc, the_projections_apply_whatever_the_schemas_accept);
    tcase_add_test(tc, nested_members_are_named_by_their_path);
    tcase_add_test(tc, the_text_check_refuses_what_no_stage_could_read);
    tcase_add_test(tc, an_old_version_passes_through_its_upcaster);
    tcase_add_test(tc, the_listing_has_every_schema);
    suite_add_tcase(s, tc);
    return th_run(s);
}
