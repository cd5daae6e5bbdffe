/* Unit tests of events/status.c. */
#include <string.h>

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

int
main(void)
{
    Suite *s = suite_create("status");
    TCase *tc = tcase_create("status");

    tcase_add_test(tc, texts_and_codes);
    tcase_add_test(tc, error_set_and_clear);
    suite_add_tcase(s, tc);
    return th_run(s);
}
