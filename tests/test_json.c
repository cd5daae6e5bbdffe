/* Unit tests of events/json.c, the JSON checker of the append path. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "json.h"

static es_json_kind
check(const char *s)
{
    return es_json_check(s, strlen(s), NULL, NULL);
}

START_TEST(accepts_valid)
{
    ck_assert_int_eq(check("{}"), ES_JSON_OBJECT);
    ck_assert_int_eq(check(" { \"a\" : [1, -2.5e+3, 0, 0.1, 1E-2, true, false, null, \"x\"] } \n"),
                     ES_JSON_OBJECT);
    ck_assert_int_eq(check("[]"), ES_JSON_ARRAY);
    ck_assert_int_eq(check("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\""), ES_JSON_STRING);
    ck_assert_int_eq(check("\"caf\xc3\xa9 \xf0\x9f\x98\x80\""), ES_JSON_STRING);
    ck_assert_int_eq(check("-0"), ES_JSON_NUMBER);
    /* the edges of PostgreSQL numeric's range, as PostgreSQL 15 takes them */
    ck_assert_int_eq(check("1e131071"), ES_JSON_NUMBER);
    ck_assert_int_eq(check("-1e131071"), ES_JSON_NUMBER);
    ck_assert_int_eq(check("1e-16383"), ES_JSON_NUMBER);
    ck_assert_int_eq(check("0e200000"), ES_JSON_NUMBER);
    ck_assert_int_eq(check("0e1073741822"), ES_JSON_NUMBER);
    ck_assert_int_eq(check("0.001e131074"), ES_JSON_NUMBER);
    ck_assert_int_eq(check("100e131069"), ES_JSON_NUMBER);
    ck_assert_int_eq(check("1e-0"), ES_JSON_NUMBER);
    ck_assert_int_eq(check("1E+2"), ES_JSON_NUMBER);
    ck_assert_int_eq(check("null"), ES_JSON_LITERAL);
    ck_assert_int_eq(check("{\"a\":1,\"a\":2}"), ES_JSON_OBJECT);   /* jsonb keeps the last */
}
END_TEST

START_TEST(rejects_invalid_with_offset)
{
    static const struct {
        const char *text;
        size_t offset;
    } bad[] = {
        {"", 0}, {"   ", 3}, {"{", 1}, {"{\"a\"}", 4}, {"{\"a\":}", 5}, {"{\"a\":1,}", 7},
        {"[1,]", 3}, {"[1 2]", 3}, {"01", 1}, {"1.", 0}, {".5", 0}, {"+1", 0},
        {"1e", 0}, {"--1", 0}, {"tru", 0}, {"nul", 0}, {"\"abc", 4}, {"\"a\nb\"", 2},
        {"\"\\x\"", 1}, {"\"\\u12\"", 1}, {"\"\\u0000\"", 1}, {"\"\\udc00\"", 1},
        {"\"\\ud800\"", 1}, {"\"\\ud800\\u0041\"", 1}, {"\"\xff\"", 1}, {"\"\xc3\"", 1},
        {"\"\xc0\xaf\"", 1}, {"\"\xed\xa0\x80\"", 1}, {"{} x", 3}, {"{}{}", 2},
        {"{'a':1}", 1}, {"[1]]", 3},
        {"1e131072", 0}, {"1e-16384", 0}, {"1.5e-16383", 0}, {"0.5e-16383", 0},
        {"10e-16384", 0}, {"0e-16384", 0}, {"0.0e-16383", 0}, {"0.001e131075", 0},
        {"100e131070", 0}, {"0e1073741823", 0}, {"0e99999999999999999999", 0}, {"1e99999999999999999999", 0}, {"[1, 2e-99999]", 4},
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t off = 999;
        const char *reason = NULL;
        ck_assert_msg(es_json_check(bad[i].text, strlen(bad[i].text), &off, &reason) ==
                          ES_JSON_INVALID, "accepted %s", bad[i].text);
        ck_assert_ptr_nonnull(reason);
        ck_assert_msg(off == bad[i].offset, "%s: offset %zu, expected %zu (%s)", bad[i].text,
                      off, bad[i].offset, reason);
    }
}
END_TEST

START_TEST(depth_is_bounded)
{
    size_t n = ES_JSON_DEPTH_MAX + 1;
    char *deep = malloc(2 * n + 1);

    memset(deep, '[', n);
    memset(deep + n, ']', n);
    deep[2 * n] = '\0';
    ck_assert_int_eq(check(deep), ES_JSON_INVALID);
    deep[n - 1] = ' ';
    deep[n] = ' ';
    ck_assert_int_eq(check(deep), ES_JSON_ARRAY);
    free(deep);
}
END_TEST

START_TEST(embedded_nul_is_not_the_end)
{
    ck_assert_int_eq(es_json_check("{}\0x", 4, NULL, NULL), ES_JSON_INVALID);
    ck_assert_int_eq(es_json_check("\"a\0b\"", 5, NULL, NULL), ES_JSON_INVALID);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("json");

    tcase_add_test(tc, accepts_valid);
    tcase_add_test(tc, rejects_invalid_with_offset);
    tcase_add_test(tc, depth_is_bounded);
    tcase_add_test(tc, embedded_nul_is_not_the_end);
    suite_add_tcase(s, tc);
    return th_run(s);
}
