/* Unit tests of events/status.c. */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "harness.h"
#include "status.h"

START_TEST(texts_and_codes)
{
    ck_assert_str_eq(es_status_code(ES_ECONFLICT), "version_conflict");
    ck_assert_str_eq(es_status_text(ES_OK), "success");
    ck_assert_str_eq(es_status_code((es_status)999), "unknown");
    ck_assert_str_eq(es_status_text((es_status)-1), "unknown status");
    for (int st = ES_OK; st <= ES_EINTERNAL; st++) {
        ck_assert_ptr_nonnull(es_status_text((es_status)st));
        ck_assert_int_gt((int)strlen(es_status_code((es_status)st)), 0);
    }
}
END_TEST

START_TEST(error_set_and_clear)
{
    es_error err;

    es_error_clear(&err);
    ck_assert_int_eq(err.status, ES_OK);
    ck_assert_int_eq(err.actual_version, -1);
    ck_assert_int_eq(es_error_set(&err, ES_EINVALID, NULL, "events[0].type",
                                  "type of event %d is empty", 0), ES_EINVALID);
    ck_assert_str_eq(err.code, "invalid_input");
    ck_assert_str_eq(err.field, "events[0].type");
    ck_assert_str_eq(err.message, "type of event 0 is empty");
    ck_assert_int_eq(es_error_set(NULL, ES_ENOMEM, NULL, NULL, "x"), ES_ENOMEM);
    es_error_clear(NULL);
}
END_TEST

/* Whether to retry is data on the error, and so is its machine code. */
START_TEST(error_kind_is_data)
{
    es_error err;

    es_error_clear(&err);
    ck_assert(!err.transient);
    ck_assert(!es_error_is(&err, ES_CODE_VERSION_CONFLICT));
    es_error_set(&err, ES_EUNAVAILABLE, "store_unavailable", NULL, "could not connect");
    ck_assert(err.transient);
    es_error_set(&err, ES_EINVALID, NULL, NULL, "bad");
    ck_assert(!err.transient);
    es_error_set(&err, ES_ECONFLICT, NULL, NULL, "expected version 3, found 4");
    ck_assert(es_error_is(&err, ES_CODE_VERSION_CONFLICT));
    es_error_set(&err, ES_ECONFLICT, "email_taken", "email", "version_conflict");
    ck_assert(!es_error_is(&err, ES_CODE_VERSION_CONFLICT));
    ck_assert(!es_error_is(NULL, ES_CODE_VERSION_CONFLICT));
}
END_TEST

static char *
error_json_text(const es_error *err)
{
    json_t *j = es_error_to_json(err);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);

    json_decref(j);
    return text;
}

START_TEST(error_to_json)
{
    es_error err;
    char *t;

    es_error_clear(&err);
    es_error_set(&err, ES_ECONFLICT, NULL, NULL, "could not append to stream \"a\"");
    err.actual_version = 4;
    t = error_json_text(&err);
    ck_assert_str_eq(t, "{\"actual_version\":4,\"code\":\"version_conflict\","
                        "\"message\":\"could not append to stream \\\"a\\\"\"}");
    free(t);
    es_error_set(&err, ES_EINVALID, "not_a_number", "items[0].quantity", "quantity is a string");
    t = error_json_text(&err);
    ck_assert_str_eq(t, "{\"code\":\"not_a_number\",\"field\":\"items[0].quantity\","
                        "\"message\":\"quantity is a string\"}");
    free(t);
    es_error_set(&err, ES_EUNAVAILABLE, NULL, NULL, "%s", "");
    t = error_json_text(&err);
    ck_assert_str_eq(t, "{\"code\":\"unavailable\",\"message\":\"server unavailable\"}");
    free(t);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("status");
    TCase *tc = tcase_create("status");

    tcase_add_test(tc, texts_and_codes);
    tcase_add_test(tc, error_set_and_clear);
    tcase_add_test(tc, error_kind_is_data);
    tcase_add_test(tc, error_to_json);
    suite_add_tcase(s, tc);
    return th_run(s);
}
