/* Unit tests of events/upcast.c: a chain of steps applied on read. */
#include <string.h>

#include "harness.h"
#include "upcast.h"

/* v1 -> v2: rename "qty" to "quantity". */
static es_status
rename_qty(json_t *data, void *ctx, es_error *err)
{
    json_t *q = json_object_get(data, "qty");

    (void)ctx;
    (void)err;
    if (q) {
        json_object_set(data, "quantity", q);
        json_object_del(data, "qty");
    }
    return ES_OK;
}

/* v2 -> v3: add a currency defaulting to ctx. */
static es_status
add_currency(json_t *data, void *ctx, es_error *err)
{
    (void)err;
    json_object_set_new(data, "currency", json_string(ctx));
    return ES_OK;
}

static es_status
refuse(json_t *data, void *ctx, es_error *err)
{
    (void)data;
    (void)ctx;
    return es_error_set(err, ES_EINVALID, "cannot_upcast", NULL, "cannot upcast");
}

static char eur[] = "EUR";

START_TEST(chain_applies_in_order)
{
    es_upcasters *u;
    char *out = NULL;
    int v = 1;
    es_error err;

    ck_assert_int_eq(es_upcasters_create(&u), ES_OK);
    ck_assert(!es_upcasters_needed(u, "ItemAdded", 1));
    ck_assert_int_eq(es_upcasters_register(u, "ItemAdded", 1, rename_qty, NULL), ES_OK);
    ck_assert_int_eq(es_upcasters_register(u, "ItemAdded", 2, add_currency, eur), ES_OK);
    ck_assert_int_eq(es_upcasters_register(u, "ItemAdded", 2, add_currency, eur), ES_EINVALID);
    ck_assert_int_eq(es_upcasters_register(u, "ItemAdded", 0, add_currency, eur), ES_EINVALID);
    ck_assert(es_upcasters_needed(u, "ItemAdded", 1));
    ck_assert(es_upcasters_needed(u, "ItemAdded", 2));
    ck_assert(!es_upcasters_needed(u, "ItemAdded", 3));
    ck_assert(!es_upcasters_needed(u, "Other", 1));

    ck_assert_int_eq(es_upcasters_apply(u, "ItemAdded", &v, "{\"qty\":2}", &out, &err), ES_OK);
    ck_assert_int_eq(v, 3);
    ck_assert_str_eq(out, "{\"quantity\":2,\"currency\":\"EUR\"}");
    free(out);

    v = 2;
    ck_assert_int_eq(es_upcasters_apply(u, "ItemAdded", &v, "{\"quantity\":5}", &out, &err), ES_OK);
    ck_assert_int_eq(v, 3);
    ck_assert_str_eq(out, "{\"quantity\":5,\"currency\":\"EUR\"}");
    free(out);
    es_upcasters_destroy(u);
}
END_TEST

START_TEST(failures_are_reported)
{
    es_upcasters *u;
    char *out = (char *)1;
    int v = 1;
    es_error err;

    ck_assert_int_eq(es_upcasters_create(&u), ES_OK);
    ck_assert_int_eq(es_upcasters_register(u, "Bad", 1, refuse, NULL), ES_OK);
    ck_assert_int_eq(es_upcasters_apply(u, "Bad", &v, "{}", &out, &err), ES_EINVALID);
    ck_assert_ptr_null(out);
    ck_assert_int_eq(v, 1);
    ck_assert_str_eq(err.code, "cannot_upcast");
    ck_assert_int_eq(es_upcasters_apply(u, "Bad", &v, "{not json", &out, &err), ES_EINTERNAL);
    ck_assert_str_eq(err.code, "stored_event_invalid");
    es_upcasters_destroy(u);
    es_upcasters_destroy(NULL);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("upcast");
    TCase *tc = tcase_create("upcast");

    tcase_add_test(tc, chain_applies_in_order);
    tcase_add_test(tc, failures_are_reported);
    suite_add_tcase(s, tc);
    return th_run(s);
}
