/*
 * The traceparent parser and the trace members of event metadata
 * (events/trace.c): every rule of the W3C header, and the metadata reader
 * the relay uses on what clients may have written.
 */
#include <check.h>
#include <string.h>

#include "harness.h"
#include "trace.h"

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define SID "00f067aa0ba902b7"

static bool
parses(const char *v, es_trace *t)
{
    return es_traceparent_parse(v, strlen(v), t);
}

START_TEST(valid_header_parses)
{
    es_trace t;
    char out[ES_TRACEPARENT_LEN + 1];

    ck_assert(parses("00-" TID "-" SID "-01", &t));
    ck_assert_str_eq(t.trace_id, TID);
    ck_assert_str_eq(t.parent_id, SID);
    ck_assert_str_eq(t.span_id, "");
    ck_assert_uint_eq(t.flags, 1);
    /* white space around it (HTTP's optional white space) */
    ck_assert(parses(" \t00-" TID "-" SID "-00 ", &t));
    ck_assert_uint_eq(t.flags, 0);
    memcpy(t.span_id, SID, sizeof t.span_id);
    es_traceparent_format(&t, out);
    ck_assert_str_eq(out, "00-" TID "-" SID "-00");
}
END_TEST

START_TEST(malformed_headers_are_refused)
{
    static const char *const bad[] = {
        "",
        "00",
        "00-" TID "-" SID "-0",                    /* short flags */
        "00-" TID "-" SID "-01-",                  /* version 00 takes nothing more */
        "00-" TID "-" SID "-010",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" SID "-01",     /* upper case */
        "00-" TID "-00F067AA0BA902B7-01",
        "00-" TID "-" SID "-0A",
        "00-00000000000000000000000000000000-" SID "-01",     /* zero trace id */
        "00-" TID "-0000000000000000-01",          /* zero parent id */
        "ff-" TID "-" SID "-01",                   /* the forbidden version */
        "0g-" TID "-" SID "-01",
        "00_" TID "-" SID "-01",
        "00-" TID "_" SID "-01",
        "00-" TID "-" SID "_01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-" SID "-011",     /* 31 digits */
        "01-" TID "-" SID "-01x",                  /* a later version: more only after '-' */
        "00-" TID "-" SID "-0\x01",
    };
    es_trace t;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&t, 0x41, sizeof t);
        ck_assert_msg(!parses(bad[i], &t), "accepted \"%s\"", bad[i]);
        ck_assert_int_eq(t.trace_id[0], 0x41);  /* untouched */
    }
    ck_assert(!es_traceparent_parse(NULL, 0, &t));
}
END_TEST

START_TEST(later_versions_are_read_as_00)
{
    es_trace t;

    ck_assert(parses("01-" TID "-" SID "-03", &t));
    ck_assert_uint_eq(t.flags, 3);
    ck_assert(parses("cc-" TID "-" SID "-01-what-comes-next", &t));
    ck_assert_str_eq(t.trace_id, TID);
}
END_TEST

START_TEST(length_is_respected)
{
    /* a value that is not NUL-terminated where it ends */
    const char v[] = "00-" TID "-" SID "-01" "garbage";
    es_trace t;

    ck_assert(es_traceparent_parse(v, ES_TRACEPARENT_LEN, &t));
    ck_assert(!es_traceparent_parse(v, ES_TRACEPARENT_LEN - 1, &t));
}
END_TEST

START_TEST(begin_continues_or_starts)
{
    es_trace a, b;
    char tp[ES_TRACEPARENT_LEN + 1];

    ck_assert(es_trace_begin(&a, "00-" TID "-" SID "-01"));
    ck_assert_str_eq(a.trace_id, TID);
    ck_assert_str_eq(a.parent_id, SID);
    ck_assert_uint_eq(strlen(a.span_id), ES_SPAN_ID_LEN);
    ck_assert_str_ne(a.span_id, SID);
    ck_assert_int_gt(a.accepted_us, 0);
    es_traceparent_format(&a, tp);
    ck_assert(parses(tp, &b));
    ck_assert_str_eq(b.parent_id, a.span_id);

    /* malformed or absent: a new trace, never an error */
    ck_assert(!es_trace_begin(&a, "00-" TID "-" SID "-1"));
    ck_assert(es_trace_id_valid(a.trace_id));
    ck_assert_str_ne(a.trace_id, TID);
    ck_assert_str_eq(a.parent_id, "");
    ck_assert_uint_eq(a.flags, 1);
    ck_assert(!es_trace_begin(&b, NULL));
    ck_assert(es_trace_id_valid(b.trace_id));
    ck_assert_str_ne(a.trace_id, b.trace_id);
}
END_TEST

START_TEST(trace_id_valid)
{
    ck_assert(es_trace_id_valid(TID));
    ck_assert(!es_trace_id_valid("00000000000000000000000000000000"));
    ck_assert(!es_trace_id_valid(TID "0"));
    ck_assert(!es_trace_id_valid("4BF92F3577B34DA6A3CE929D0E0E4736"));
    ck_assert(!es_trace_id_valid(NULL));
}
END_TEST

START_TEST(metadata_members_round_trip)
{
    es_trace t, r;
    es_buf b = ES_BUF_INIT;

    ck_assert(es_trace_begin(&t, "00-" TID "-" SID "-01"));
    es_buf_puts(&b, "{\"command_id\":\"c\"");
    es_trace_metadata(&b, &t, false);
    es_buf_puts(&b, "}");
    ck_assert_ptr_nonnull(strstr(b.data, "\"parent_span_id\":\"" SID "\""));
    ck_assert_ptr_nonnull(strstr(b.data, "\"accepted_at\":\"20"));
    ck_assert(es_trace_from_metadata(b.data, b.len, &r));
    ck_assert_str_eq(r.trace_id, TID);
    ck_assert_str_eq(r.span_id, t.span_id);
    es_buf_free(&b);
}
END_TEST

START_TEST(metadata_reader_sees_only_top_level_members)
{
    es_trace t;
    const char *jsonb = "{\"span_id\": \"" SID "\", \"trace_id\": \"" TID "\"}";
    const char *nested = "{\"x\": {\"trace_id\": \"" TID "\", \"span_id\": \"" SID "\"}}";
    const char *in_text = "{\"a\": \"\\\"trace_id\\\": \\\"" TID "\\\"\", \"span_id\": \"" SID "\"}";
    const char *in_array = "{\"a\": [\"trace_id\", \"" TID "\"], \"span_id\": \"" SID "\"}";
    const char *bad_id = "{\"trace_id\": \"" TID "x\", \"span_id\": \"" SID "\"}";
    const char *cut = "{\"trace_id\": \"" TID "\", \"span_id\": \"00f067";

    ck_assert(es_trace_from_metadata(jsonb, strlen(jsonb), &t));
    ck_assert_str_eq(t.trace_id, TID);
    ck_assert_str_eq(t.span_id, SID);
    ck_assert(!es_trace_from_metadata(nested, strlen(nested), &t));
    ck_assert_str_eq(t.trace_id, "");
    ck_assert(!es_trace_from_metadata(in_text, strlen(in_text), &t));
    ck_assert(!es_trace_from_metadata(in_array, strlen(in_array), &t));
    ck_assert(!es_trace_from_metadata(bad_id, strlen(bad_id), &t));
    ck_assert(!es_trace_from_metadata(cut, strlen(cut), &t));
    ck_assert(!es_trace_from_metadata("{}", 2, &t));
    ck_assert(!es_trace_from_metadata(NULL, 0, &t));
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("trace");
    TCase *tc = tcase_create("trace");

    tcase_add_test(tc, valid_header_parses);
    tcase_add_test(tc, malformed_headers_are_refused);
    tcase_add_test(tc, later_versions_are_read_as_00);
    tcase_add_test(tc, length_is_respected);
    tcase_add_test(tc, begin_continues_or_starts);
    tcase_add_test(tc, trace_id_valid);
    tcase_add_test(tc, metadata_members_round_trip);
    tcase_add_test(tc, metadata_reader_sees_only_top_level_members);
    suite_add_tcase(s, tc);
    return th_run(s);
}
