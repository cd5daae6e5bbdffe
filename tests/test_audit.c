/*
 * Tests of events/audit.c on the real PostgreSQL, in a database of their
 * own so that counts are exact: counting events (all, and after a
 * position), tallies by type grouped by a data field and by stream, their
 * order, refused queries, and hostile names that must stay values.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "harness.h"
#include "store.h"

static char dbname[64], conninfo[512];

static es_store *
open_store(void)
{
    es_store *s = NULL;
    es_error err;

    ck_assert_msg(es_store_open(&s, conninfo, &err) == ES_OK, "open: %s", err.message);
    return s;
}

/* A category no other test uses: "<prefix>_<hex>" (no '-'). */
static void
category(char *out, size_t size, const char *prefix)
{
    th_unique(out, size, prefix);
    for (char *c = out; *c; c++)
        if (*c == '-')
            *c = '_';
}

static es_append_result
append(es_store *s, const char *cat, const char *id, const char *type, const char *data)
{
    char stream[128];
    es_new_event e = {NULL, type, 1, data, NULL};
    es_append_req req = {stream, ES_EXPECT_ANY, &e, 1};
    es_append_result res;

    snprintf(stream, sizeof stream, "%s-%s", cat, id);
    es_store_append(s, &req, &res);
    ck_assert_msg(res.status == ES_OK, "append to %s: %s", stream, res.err.message);
    return res;
}

static int64_t
count(es_store *s)
{
    int64_t n = -1;
    es_error err;

    ck_assert_msg(es_audit_count(s, &n, &err) == ES_OK, "count: %s", err.message);
    return n;
}

static int64_t
count_after(es_store *s, es_position at)
{
    int64_t n = -1;
    es_error err;

    ck_assert_msg(es_audit_count_after(s, at, &n, &err) == ES_OK, "count after: %s",
                  err.message);
    return n;
}

static es_audit_tally *
tally(es_store *s, const es_audit_query *q)
{
    es_audit_tally *t = NULL;
    es_error err;

    ck_assert_msg(es_audit_tally_read(s, q, &t, &err) == ES_OK, "tally: %s", err.message);
    ck_assert_ptr_nonnull(t);
    return t;
}

#define ck_assert_text_eq(a, b)                                                              \
    do {                                                                                     \
        const char *a_ = (a), *b_ = (b);                                                     \
        if (b_ == NULL)                                                                      \
            ck_assert_ptr_null(a_);                                                          \
        else                                                                                 \
            ck_assert_str_eq(a_ ? a_ : "(null)", b_);                                        \
    } while (0)

/* Group g of t is (stream, key) with these counts and sums of two types. */
static void
group_is(const es_audit_tally *t, size_t g, const char *stream, const char *key, int64_t n0,
         int64_t s0, int64_t n1, int64_t s1)
{
    const es_audit_group *e;

    ck_assert_uint_lt(g, t->count);
    e = &t->groups[g];
    ck_assert_text_eq(e->stream, stream);
    ck_assert_text_eq(e->key, key);
    ck_assert_int_eq(e->count[0], n0);
    ck_assert_int_eq(e->sum[0], s0);
    ck_assert_int_eq(e->count[1], n1);
    ck_assert_int_eq(e->sum[1], s1);
}

START_TEST(counts_every_event_and_those_after_a_position)
{
    es_store *s = open_store();
    char cat[64];
    es_append_result first, last;
    es_position none = {0, 0};
    int64_t before = count(s);

    category(cat, sizeof cat, "cnt");
    first = append(s, cat, "1", "Happened", "{}");
    append(s, cat, "2", "Happened", "{}");
    last = append(s, cat, "1", "Happened", "{}");
    ck_assert_int_eq(count(s), before + 3);
    ck_assert_int_eq(count_after(s, none), before + 3);
    ck_assert_int_eq(count_after(s, first.position), 2);
    ck_assert_int_eq(count_after(s, last.position), 0);
    es_store_close(s);
}
END_TEST

START_TEST(tallies_types_by_field_and_by_stream)
{
    es_store *s = open_store();
    char cat[64], other[64], sa[96], sb[96];
    const char *types[2] = {"Deposited", "Charged"};
    es_audit_query q = {cat, types, 2, "who", false, "amount"};
    es_audit_tally *t;

    category(cat, sizeof cat, "led");
    category(other, sizeof other, "led");
    snprintf(sa, sizeof sa, "%s-a", cat);
    snprintf(sb, sizeof sb, "%s-b", cat);
    append(s, cat, "a", "Deposited", "{\"who\": \"x\", \"amount\": 5}");
    append(s, cat, "b", "Deposited", "{\"who\": \"x\", \"amount\": 7}");
    append(s, cat, "a", "Charged", "{\"who\": \"x\", \"amount\": 3}");
    append(s, cat, "a", "Deposited", "{\"who\": \"y\", \"amount\": 1}");
    append(s, cat, "b", "Charged", "{\"amount\": 2}");
    append(s, cat, "b", "Deposited", "{\"who\": \"y\"}");
    append(s, cat, "a", "Other", "{\"who\": \"x\", \"amount\": 100}");
    append(s, other, "a", "Deposited", "{\"who\": \"x\", \"amount\": 1000}");

    /* by field: x, y, then the events without one */
    t = tally(s, &q);
    ck_assert_uint_eq(t->count, 3);
    group_is(t, 0, NULL, "x", 2, 12, 1, 3);
    group_is(t, 1, NULL, "y", 2, 1, 0, 0);
    group_is(t, 2, NULL, NULL, 0, 0, 1, 2);
    es_audit_tally_destroy(t);

    /* by stream and field */
    q.by_stream = true;
    t = tally(s, &q);
    ck_assert_uint_eq(t->count, 5);
    group_is(t, 0, sa, "x", 1, 5, 1, 3);
    group_is(t, 1, sa, "y", 1, 1, 0, 0);
    group_is(t, 2, sb, "x", 1, 7, 0, 0);
    group_is(t, 3, sb, "y", 1, 0, 0, 0);
    group_is(t, 4, sb, NULL, 0, 0, 1, 2);
    es_audit_tally_destroy(t);

    /* counts only, one group */
    q.by_stream = false;
    q.group_field = NULL;
    q.sum_field = NULL;
    t = tally(s, &q);
    ck_assert_uint_eq(t->count, 1);
    group_is(t, 0, NULL, NULL, 4, 0, 2, 0);
    es_audit_tally_destroy(t);

    /* nothing of those types */
    types[0] = "Nothing";
    q.ntypes = 1;
    t = tally(s, &q);
    ck_assert_uint_eq(t->count, 0);
    es_audit_tally_destroy(t);
    es_store_close(s);
}
END_TEST

START_TEST(groups_come_in_byte_order)
{
    es_store *s = open_store();
    char cat[64];
    const char *types[1] = {"Seen"};
    const char *keys[] = {"b", "B", "a", "\xc3\xa9", "A", "ab", ""};
    const char *order[] = {"", "A", "B", "a", "ab", "b", "\xc3\xa9"};
    es_audit_query q = {cat, types, 1, "k", false, NULL};
    es_audit_tally *t;
    size_t i;

    category(cat, sizeof cat, "ord");
    for (i = 0; i < sizeof keys / sizeof *keys; i++) {
        char data[64];
        snprintf(data, sizeof data, "{\"k\": \"%s\"}", keys[i]);
        append(s, cat, "1", "Seen", data);
    }
    t = tally(s, &q);
    ck_assert_uint_eq(t->count, sizeof order / sizeof *order);
    for (i = 0; i < t->count; i++) {
        ck_assert_str_eq(t->groups[i].key, order[i]);
        ck_assert_int_eq(t->groups[i].count[0], 1);
    }
    es_audit_tally_destroy(t);
    es_store_close(s);
}
END_TEST

START_TEST(refuses_malformed_queries)
{
    es_store *s = open_store();
    char cat[64];
    const char *types[ES_AUDIT_TYPES_MAX + 1] = {"A", "B", "C", "D", "E", "F", "G", "H", "I"};
    const char *twice[2] = {"A", "A"};
    const char *missing[2] = {"A", NULL};
    const char *bad_utf8[1] = {"\xff"};
    es_audit_query q = {cat, types, 1, NULL, false, "n"};
    es_audit_tally dummy, *t = &dummy;         /* a failed read sets it to NULL */
    es_error err;

    category(cat, sizeof cat, "bad");
    append(s, cat, "1", "A", "{\"n\": \"seven\"}");

    q.category = NULL;
    ck_assert_int_eq(es_audit_tally_read(s, &q, &t, &err), ES_EINVALID);
    ck_assert_ptr_null(t);
    ck_assert_str_eq(err.code, "audit_category_missing");
    q.category = cat;
    q.ntypes = 0;
    ck_assert_int_eq(es_audit_tally_read(s, &q, &t, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "audit_types_count");
    q.ntypes = ES_AUDIT_TYPES_MAX + 1;
    ck_assert_int_eq(es_audit_tally_read(s, &q, &t, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "audit_types_count");
    q.types = twice;
    q.ntypes = 2;
    ck_assert_int_eq(es_audit_tally_read(s, &q, &t, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "audit_type_repeated");
    q.types = missing;
    ck_assert_int_eq(es_audit_tally_read(s, &q, &t, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "audit_type_missing");
    q.types = bad_utf8;
    q.ntypes = 1;
    ck_assert_int_eq(es_audit_tally_read(s, &q, &t, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "audit_type_invalid");
    ck_assert_ptr_null(t);

    /* a sum over a field that is not an integer fails on the server */
    q.types = types;
    ck_assert_int_eq(es_audit_tally_read(s, &q, &t, &err), ES_EINVALID);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err.message, "could not tally the events") == err.message, "%s",
                  err.message);
    /* and the store goes on answering */
    q.sum_field = NULL;
    t = tally(s, &q);
    ck_assert_uint_eq(t->count, 1);
    ck_assert_int_eq(t->groups[0].count[0], 1);
    es_audit_tally_destroy(t);
    es_store_close(s);
}
END_TEST

START_TEST(hostile_names_are_only_values)
{
    es_store *s = open_store();
    char cat[64], stream[128];
    const char *hostile[] = {
        "'; DROP TABLE es_events; --",
        "x' OR '1'='1",
        "\") OR true --",
        "$1",
        "a\\b",
        "{\"Deposited\"}",
        "it's",
    };
    const char *types[2] = {"Deposited", NULL};
    es_audit_query q = {NULL, types, 1, NULL, false, NULL};
    es_audit_tally *t;
    int64_t before;
    size_t i;

    /* names with quotes in them, stored for real, are found as they are */
    category(cat, sizeof cat, "o'hara");
    append(s, cat, "1", "it's \"quoted\"",
           "{\"who's\": \"o'brien\", \"a\\\"b\": 4, \"'; DROP TABLE es_events; --\": 6}");
    append(s, cat, "1", "it's \"quoted\"", "{\"who's\": \"o'brien\", \"a\\\"b\": 5}");
    before = count(s);

    types[0] = "it's \"quoted\"";
    q.category = cat;
    q.group_field = "who's";
    q.sum_field = "a\"b";
    t = tally(s, &q);
    snprintf(stream, sizeof stream, "%s-1", cat);
    ck_assert_uint_eq(t->count, 1);
    group_is(t, 0, NULL, "o'brien", 2, 9, 0, 0);
    es_audit_tally_destroy(t);
    q.by_stream = true;
    q.sum_field = "'; DROP TABLE es_events; --";
    t = tally(s, &q);
    ck_assert_uint_eq(t->count, 1);
    group_is(t, 0, stream, "o'brien", 2, 6, 0, 0);
    es_audit_tally_destroy(t);

    /* hostile text in every place matches nothing and harms nothing */
    for (i = 0; i < sizeof hostile / sizeof *hostile; i++) {
        es_audit_query h = {hostile[i], types, 2, hostile[i], i % 2 == 0, hostile[i]};
        types[0] = hostile[i];
        types[1] = "Deposited";
        t = tally(s, &h);
        ck_assert_msg(t->count == 0, "%s: %zu groups", hostile[i], t->count);
        es_audit_tally_destroy(t);
        /* a hostile type or field against a real category is only a value too */
        h.category = cat;
        h.types = types;
        h.ntypes = 1;
        t = tally(s, &h);
        ck_assert_msg(t->count == 0, "%s: %zu groups", hostile[i], t->count);
        es_audit_tally_destroy(t);
    }
    ck_assert_int_eq(count(s), before);
    es_store_close(s);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("audit");
    TCase *tc = tcase_create("audit");
    int rc;

    th_db_create(dbname, sizeof dbname, conninfo, sizeof conninfo);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, counts_every_event_and_those_after_a_position);
    tcase_add_test(tc, tallies_types_by_field_and_by_stream);
    tcase_add_test(tc, groups_come_in_byte_order);
    tcase_add_test(tc, refuses_malformed_queries);
    tcase_add_test(tc, hostile_names_are_only_values);
    suite_add_tcase(s, tc);
    rc = th_run(s);
    th_db_drop(dbname);
    return rc;
}
