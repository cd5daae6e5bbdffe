/*
 * Unit tests of query/doc.c: the order documents es-query writes without
 * jansson must be byte for byte what jansson's tree gave (views.c's jstr,
 * jint and jtext dumped with JSON_COMPACT), for the texts the projections
 * write (copied as they are) and for any other text (left to jansson).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "../query/doc.h"
#include "event.h"
#include "harness.h"

/* The old rendering of a value, as views.c built it with jansson. */
static json_t *
ref_str(const char *s)
{
    json_t *v;
    char *copy;

    if (s == NULL)
        return json_null();
    if ((v = json_string(s)) != NULL)
        return v;
    copy = strdup(s);
    es_text_make_utf8(copy);
    v = json_string(copy);
    free(copy);
    return v;
}

static json_t *
ref_text(const char *s)
{
    json_t *v;

    if (s == NULL)
        return json_null();
    v = json_loads(s, JSON_DECODE_ANY, NULL);
    return v ? v : ref_str(s);
}

static json_t *
ref_int(const char *s)
{
    char *end;
    long long n;

    if (s == NULL || *s == '\0')
        return json_null();
    n = strtoll(s, &end, 10);
    return *end == '\0' ? json_integer((json_int_t)n) : ref_str(s);
}

static char *
dump(json_t *v)
{
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    json_decref(v);
    return t;
}

/* doc_fn's output for s equals ref's dump. */
static void
same(void (*doc_fn)(es_buf *, const char *), json_t *(*ref)(const char *), const char *s)
{
    es_buf b = ES_BUF_INIT;
    char *want = dump(ref(s));

    doc_fn(&b, s);
    ck_assert(!es_buf_failed(&b));
    ck_assert_msg(want != NULL && strcmp(b.data, want) == 0, "for [%s]: wrote [%s], jansson [%s]",
                  s ? s : "(null)", b.data, want ? want : "(null)");
    free(want);
    es_buf_free(&b);
}

static const char *const texts[] = {
    /* as the projections write them */
    "[{\"sku\":\"sku-1\",\"quantity\":2,\"unit_price\":1999}]",
    "{\"status\":\"pending\"}",
    "{\"zip\":\"10115\",\"city\":\"Berlin\",\"country\":\"DE\"}",
    "{\"type\":\"OrderPlaced\",\"at\":\"2026-12-07T16:29:41.697221Z\",\"position\":\"816-3\","
    "\"total\":3998}",
    "{}", "[]", "[[]]", "{\"a\":{}}", "0", "-1", "123456789012345678", "-123456789012345678",
    "true", "false", "null", "\"\"", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"", "\"a\\\"b\\\\c\\n\\t\"",
    "{\"a\":[1,\"x\",null,true,{\"b\":-2}]}", "\"\x7f\"", "\"a/b\"",
    /* not in jansson's form: parsed and dumped */
    "{ \"a\": 1 }", " 1", "1 ", "[1, 2]", "1.5", "1e3", "1E3", "-0", "0.0", "1.0",
    "1234567890123456789", "-9223372036854775808", "9223372036854775807",
    "9223372036854775808", "{\"a\":1,\"a\":2}", "{\"a\":1,\"b\":2,\"a\":3}", "\"\\/\"",
    "\"\\u00e9\"", "\"\\u0041\"", "\"\\u001f\"", "\"\\ud83d\\ude00\"", "\"\\u0000\"",
    /* not JSON at all: a string */
    "", "pending", "{", "[1,]", "01", "+1", "tru", "nul", "{\"a\"}", "\"abc", "\"a\nb\"",
    "\"\xff\"", "\xff", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "{'a':1}", "[1]]", "{}{}", "\"\\x\"",
    "abc\x01" "def", "vt\x0b" "us\x1f", "tab\there", "quote\"back\\slash",
};

START_TEST(text_as_jansson)
{
    size_t i;

    for (i = 0; i < sizeof texts / sizeof texts[0]; i++)
        same(doc_text, ref_text, texts[i]);
    same(doc_text, ref_text, NULL);
}
END_TEST

/* The fast path is taken for what the projections write, and only there. */
START_TEST(canonical_is_copied)
{
    ck_assert(doc_canonical("[{\"sku\":\"sku-1\",\"quantity\":2,\"unit_price\":1999}]"));
    ck_assert(doc_canonical("{\"zip\":\"10115\",\"city\":\"Berlin\",\"country\":\"DE\"}"));
    ck_assert(doc_canonical("\"caf\xc3\xa9\\n\""));
    ck_assert(doc_canonical("-123456789012345678"));
    ck_assert(!doc_canonical("{ \"a\": 1 }"));
    ck_assert(!doc_canonical("1.5"));
    ck_assert(!doc_canonical("-0"));
    ck_assert(!doc_canonical("1234567890123456789"));
    ck_assert(!doc_canonical("{\"a\":1,\"a\":2}"));
    ck_assert(!doc_canonical("\"\\u0041\""));
    ck_assert(!doc_canonical("\"\\/\""));
    ck_assert(!doc_canonical("\"\xed\xa0\x80\""));
    ck_assert(!doc_canonical(""));
}
END_TEST

START_TEST(depth_and_keys_bounded)
{
    char deep[200] = "", wide[1024] = "{";
    int i;

    for (i = 0; i < 40; i++)
        strcat(deep, "[");
    for (i = 0; i < 40; i++)
        strcat(deep, "]");
    ck_assert(!doc_canonical(deep));
    same(doc_text, ref_text, deep);
    for (i = 0; i < 40; i++)
        snprintf(wide + strlen(wide), sizeof wide - strlen(wide), "%s\"k%d\":%d", i ? "," : "",
                 i, i);
    strcat(wide, "}");
    ck_assert(!doc_canonical(wide));
    same(doc_text, ref_text, wide);
}
END_TEST

START_TEST(str_and_int_as_jansson)
{
    static const char *const ints[] = {"0", "3998", "-5", " 7", "+7", "12a", "1.5", "",
                                       "99999999999999999999", "x", "\xff"};
    size_t i;

    for (i = 0; i < sizeof texts / sizeof texts[0]; i++)
        same(doc_str, ref_str, texts[i]);
    same(doc_str, ref_str, NULL);
    for (i = 0; i < sizeof ints / sizeof ints[0]; i++)
        same(doc_int, ref_int, ints[i]);
    same(doc_int, ref_int, NULL);
}
END_TEST

/* Random texts from JSON's pieces: whatever doc_canonical decides, the
 * output is jansson's. */
START_TEST(random_texts_as_jansson)
{
    static const char *const pieces[] = {
        "{", "}", "[", "]", ",", ":", "\"a\"", "\"b\"", "\"", "\\", "\\n", "\\u0041", "0",
        "1", "-", "12", ".", "e", "true", "null", " ", "\xc3\xa9", "\xc3", "\x01", "x",
    };
    unsigned seed = 12345;
    int n;

    for (n = 0; n < 20000; n++) {
        char text[64] = "";
        int k, len = 1 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 10;

        for (k = 0; k < len; k++) {
            seed = seed * 1103515245u + 12345u;
            strcat(text, pieces[(seed >> 16) % (sizeof pieces / sizeof pieces[0])]);
        }
        same(doc_text, ref_text, text);
    }
}
END_TEST

START_TEST(object_members)
{
    es_buf b = ES_BUF_INIT;
    doc_obj o;

    doc_begin(&o, &b);
    doc_end(&o);
    doc_begin(&o, &b);
    doc_key(&o, "a");
    doc_int(&b, "1");
    doc_key(&o, "b");
    doc_str(&b, NULL);
    doc_end(&o);
    ck_assert_str_eq(b.data, "{}{\"a\":1,\"b\":null}");
    es_buf_free(&b);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("qdoc");
    TCase *tc = tcase_create("qdoc");

    tcase_add_test(tc, text_as_jansson);
    tcase_add_test(tc, canonical_is_copied);
    tcase_add_test(tc, depth_and_keys_bounded);
    tcase_add_test(tc, str_and_int_as_jansson);
    tcase_add_test(tc, random_texts_as_jansson);
    tcase_add_test(tc, object_members);
    suite_add_tcase(s, tc);
    return th_run(s);
}
