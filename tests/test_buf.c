/* Unit tests of events/buf.c. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "harness.h"

START_TEST(append_and_grow)
{
    es_buf b = ES_BUF_INIT;

    for (int i = 0; i < 1000; i++)
        es_buf_printf(&b, "%d,", i % 10);
    ck_assert_uint_eq(b.len, 2000);
    ck_assert(!es_buf_failed(&b));
    ck_assert_int_eq(strncmp(b.data, "0,1,2,", 6), 0);
    es_buf_reset(&b);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_str_eq(b.data, "");
    es_buf_puts(&b, "x");
    ck_assert_str_eq(b.data, "x");
    es_buf_free(&b);
    ck_assert_ptr_null(b.data);
}
END_TEST

START_TEST(json_string_escapes)
{
    es_buf b = ES_BUF_INIT;

    es_buf_json_string(&b, "a\"b\\c\n\t\x01\x7f\xc3\xa9");
    ck_assert_str_eq(b.data, "\"a\\\"b\\\\c\\n\\t\\u0001\x7f\xc3\xa9\"");
    es_buf_reset(&b);
    es_buf_json_string(&b, "");
    ck_assert_str_eq(b.data, "\"\"");
    /* the two differ only in the case of the hex digits */
    es_buf_reset(&b);
    es_buf_json_string(&b, "\x1f\x1b/");
    ck_assert_str_eq(b.data, "\"\\u001f\\u001b/\"");
    es_buf_reset(&b);
    es_buf_json_string_upper(&b, "\x1f\x1b/\b");
    ck_assert_str_eq(b.data, "\"\\u001F\\u001B/\\b\"");
    es_buf_free(&b);
}
END_TEST

START_TEST(int_matches_printf)
{
    static const long long cases[] = {0, 7, -7, 10, 99, -100, 1999, 123456789012LL,
                                      LLONG_MAX, LLONG_MIN, LLONG_MIN + 1};
    es_buf b = ES_BUF_INIT;
    char want[512] = "", one[32];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        es_buf_int(&b, cases[i]);
        es_buf_append(&b, ";", 1);
        snprintf(one, sizeof one, "%lld;", cases[i]);
        strcat(want, one);
    }
    ck_assert(!es_buf_failed(&b));
    ck_assert_str_eq(b.data, want);
    es_buf_free(&b);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("buf");
    TCase *tc = tcase_create("buf");

    tcase_add_test(tc, append_and_grow);
    tcase_add_test(tc, json_string_escapes);
    tcase_add_test(tc, int_matches_printf);
    suite_add_tcase(s, tc);
    return th_run(s);
}
