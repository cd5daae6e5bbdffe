/* Unit tests of events/event.c: validation of writers' input and the
 * feed position's text form. */
#include <string.h>

#include "event.h"
#include "harness.h"

START_TEST(stream_ids)
{
    char big[ES_STREAM_ID_MAX + 2];
    es_error err;

    ck_assert_int_eq(es_stream_id_check("order-17", "stream", &err), ES_OK);
    ck_assert_int_eq(es_stream_id_check("", "stream", &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "stream_id_empty");
    ck_assert_str_eq(err.field, "stream");
    ck_assert_int_eq(es_stream_id_check(NULL, "stream", &err), ES_EINVALID);
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ck_assert_int_eq(es_stream_id_check(big, "stream", &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "stream_id_too_long");
    big[ES_STREAM_ID_MAX] = '\0';
    ck_assert_int_eq(es_stream_id_check(big, "stream", &err), ES_OK);
    ck_assert_int_eq(es_stream_id_check("a\nb", "stream", &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "stream_id_invalid");
    ck_assert_int_eq(es_stream_id_check("a\x7f", "stream", &err), ES_EINVALID);
    ck_assert_int_eq(es_stream_id_check("caf\xc3\xa9-1", "stream", &err), ES_OK);
}
END_TEST

START_TEST(printable_utf8)
{
    ck_assert(es_text_printable("abc", 3));
    ck_assert(es_text_printable("\xe2\x82\xac", 3));          /* euro sign */
    ck_assert(es_text_printable("\xf0\x9f\x98\x80", 4));      /* emoji */
    ck_assert(!es_text_printable("\xc3", 1));                 /* truncated */
    ck_assert(!es_text_printable("\xc0\xaf", 2));             /* overlong */
    ck_assert(!es_text_printable("\xe0\x80\xaf", 3));         /* overlong */
    ck_assert(!es_text_printable("\xed\xa0\x80", 3));         /* surrogate */
    ck_assert(!es_text_printable("\xf4\x90\x80\x80", 4));     /* > U+10FFFF */
    ck_assert(!es_text_printable("\xc2\x85", 2));             /* C1 control */
    ck_assert(!es_text_printable("\xff", 1));
    ck_assert(!es_text_printable("a\tb", 3));
}
END_TEST

static es_new_event
ev(const char *type, const char *data)
{
    es_new_event e = {NULL, type, 0, data, NULL};
    return e;
}

START_TEST(events)
{
    es_new_event e = ev("OrderPlaced", "{\"a\":1}");
    es_error err;
    char big[300];

    ck_assert_int_eq(es_new_event_check(&e, 0, 1024, &err), ES_OK);

    e = ev("", "{}");
    ck_assert_int_eq(es_new_event_check(&e, 2, 1024, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "type_empty");
    ck_assert_str_eq(err.field, "events[2].type");

    e = ev("T", "[1,2]");
    ck_assert_int_eq(es_new_event_check(&e, 0, 1024, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "not_an_object");
    ck_assert_str_eq(err.field, "events[0].data");

    e = ev("T", "{\"a\":");
    ck_assert_int_eq(es_new_event_check(&e, 0, 1024, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "invalid_json");

    e = ev("T", "{\"a\":\"\\u0000\"}");             /* jsonb refuses NUL */
    ck_assert_int_eq(es_new_event_check(&e, 0, 1024, &err), ES_EINVALID);

    e = ev("T", NULL);
    ck_assert_int_eq(es_new_event_check(&e, 0, 1024, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "data_missing");

    e = ev("T", "{}");
    e.metadata = "\"x\"";
    ck_assert_int_eq(es_new_event_check(&e, 1, 1024, &err), ES_EINVALID);
    ck_assert_str_eq(err.field, "events[1].metadata");

    e = ev("T", "{}");
    e.event_id = "not-a-uuid";
    ck_assert_int_eq(es_new_event_check(&e, 0, 1024, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "event_id_invalid");
    e.event_id = "";
    ck_assert_int_eq(es_new_event_check(&e, 0, 1024, &err), ES_OK);

    e.schema_version = -1;
    ck_assert_int_eq(es_new_event_check(&e, 0, 1024, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "schema_version_invalid");

    /* the limit is on the event as stored: white space does not count,
     * a string's bytes do */
    memset(big, ' ', sizeof big);
    big[0] = '{';
    big[sizeof big - 2] = '}';
    big[sizeof big - 1] = '\0';
    e = ev("T", big);
    ck_assert_int_eq(es_new_event_check(&e, 0, 200, &err), ES_OK);
    memset(big, 'x', sizeof big);
    memcpy(big, "{\"k\":\"", 6);
    memcpy(big + sizeof big - 3, "\"}", 3);
    e = ev("T", big);
    ck_assert_int_eq(es_new_event_check(&e, 0, 200, &err), ES_ETOOLARGE);
    ck_assert_str_eq(err.code, "event_too_large");
    ck_assert_int_eq(es_new_event_check(&e, 0, 400, &err), ES_OK);
}
END_TEST

START_TEST(positions)
{
    es_position p = {123, 456}, q;
    char text[ES_POSITION_TEXT_MAX];

    es_position_format(p, text);
    ck_assert_str_eq(text, "123-456");
    ck_assert(es_position_parse(text, &q));
    ck_assert_int_eq(es_position_cmp(p, q), 0);
    ck_assert(es_position_parse("18446744073709551615-9223372036854775807", &q));
    ck_assert(q.txid == UINT64_MAX);
    ck_assert(!es_position_parse("18446744073709551616-1", &q));
    ck_assert(!es_position_parse("1-9223372036854775808", &q));
    ck_assert(!es_position_parse("", &q));
    ck_assert(!es_position_parse("12", &q));
    ck_assert(!es_position_parse("-12", &q));
    ck_assert(!es_position_parse("1-", &q));
    ck_assert(!es_position_parse("1-2-3", &q));
    ck_assert(!es_position_parse("1-+2", &q));
    ck_assert_int_lt(es_position_cmp((es_position){1, 9}, (es_position){2, 1}), 0);
    ck_assert_int_gt(es_position_cmp((es_position){2, 9}, (es_position){2, 1}), 0);
}
END_TEST

START_TEST(lists)
{
    ck_assert(es_list_contains("fraud.test,blocked.example", "fraud.test"));
    ck_assert(es_list_contains("fraud.test,blocked.example", "BLOCKED.example"));
    ck_assert(!es_list_contains("fraud.test,blocked.example", "fraud"));
    ck_assert(!es_list_contains("fraud.test,blocked.example", "test,blocked"));
    ck_assert(!es_list_contains("", "x"));
    ck_assert(es_list_contains("a,,b", "b"));
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("event");
    TCase *tc = tcase_create("event");

    tcase_add_test(tc, stream_ids);
    tcase_add_test(tc, printable_utf8);
    tcase_add_test(tc, events);
    tcase_add_test(tc, positions);
    tcase_add_test(tc, lists);
    suite_add_tcase(s, tc);
    return th_run(s);
}
