/*
 * Tests of events/audit.c on the real PostgreSQL, in a database of their
 * own so that counts are exact: counting events (all, and after a
 * position), tallies by type grouped by a data field and by stream, their
 * order, selections of events by type, data field and stream in either
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

/* ---- es_audit_events_read ---------------------------------------------------- */

static es_page *
select_events(es_store *s, const es_audit_select *q)
{
    es_page *p = NULL;
    es_error err;

    ck_assert_msg(es_audit_events_read(s, q, &p, &err) == ES_OK, "select: %s", err.message);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* Event i of p is of stream "<cat>-<id>", at version, of type. */
static void
event_is(const es_page *p, size_t i, const char *cat, const char *id, int64_t version,
         const char *type)
{
    char stream[128];

    snprintf(stream, sizeof stream, "%s-%s", cat, id);
    ck_assert_uint_lt(i, p->count);
    ck_assert_str_eq(p->events[i].stream_id, stream);
    ck_assert_int_eq(p->events[i].version, version);
    ck_assert_str_eq(p->events[i].type, type);
}

START_TEST(selects_by_type_field_and_stream_in_stream_order)
{
    es_store *s = open_store();
    char cat[64], other[64], sb[128], sc[128];
    const char *types[2] = {"Started", "Changed"};
    const char *streams[2] = {sc, NULL};
    es_audit_select q = {NULL, types, 2, NULL, NULL, NULL, 0, ES_AUDIT_BY_STREAM, 0};
    es_page *p, *one;
    es_error err;

    category(cat, sizeof cat, "sel");
    category(other, sizeof other, "seo");
    append(s, cat, "b", "Started", "{\"type\": \"x\", \"n\": 1}");
    append(s, cat, "a", "Started", "{\"type\": \"y\"}");
    append(s, cat, "b", "Noise", "{\"type\": \"x\"}");
    append(s, cat, "b", "Changed", "{\"type\": \"x\", \"to\": \"done\"}");
    append(s, cat, "c", "Started", "{\"type\": \"x\"}");
    append(s, cat, "a", "Changed", "{\"type\": \"y\", \"to\": \"done\"}");
    append(s, other, "a", "Started", "{\"type\": \"x\"}");
    snprintf(sb, sizeof sb, "%s-b", cat);
    snprintf(sc, sizeof sc, "%s-c", cat);

    /* the category's events of those types, a stream's together, oldest first */
    q.category = cat;
    p = select_events(s, &q);
    ck_assert_uint_eq(p->count, 5);
    event_is(p, 0, cat, "a", 0, "Started");
    event_is(p, 1, cat, "a", 1, "Changed");
    event_is(p, 2, cat, "b", 0, "Started");
    event_is(p, 3, cat, "b", 2, "Changed");
    event_is(p, 4, cat, "c", 0, "Started");
    ck_assert_int_eq(p->stream_version, -1);
    /* each event as the stream read gives it */
    ck_assert_int_eq(es_store_read_stream(s, sb, 0, 1, ES_FORWARD, &one, &err), ES_OK);
    ck_assert_str_eq(p->events[2].event_id, one->events[0].event_id);
    ck_assert_str_eq(p->events[2].data, one->events[0].data);
    ck_assert_str_eq(p->events[2].recorded_at, one->events[0].recorded_at);
    ck_assert_int_eq(p->events[2].position.gpos, one->events[0].position.gpos);
    es_page_destroy(one);
    es_page_destroy(p);

    /* a data field's value */
    q.match_field = "type";
    q.match_value = "x";
    p = select_events(s, &q);
    ck_assert_uint_eq(p->count, 3);
    event_is(p, 0, cat, "b", 0, "Started");
    event_is(p, 1, cat, "b", 2, "Changed");
    event_is(p, 2, cat, "c", 0, "Started");
    es_page_destroy(p);
    q.match_value = "X";
    p = select_events(s, &q);
    ck_assert_uint_eq(p->count, 0);
    es_page_destroy(p);

    /* some streams only, and a limit */
    q.match_field = q.match_value = NULL;
    streams[1] = sb;
    q.streams = streams;
    q.nstreams = 2;
    q.limit = 2;
    p = select_events(s, &q);
    ck_assert_uint_eq(p->count, 2);
    event_is(p, 0, cat, "b", 0, "Started");
    event_is(p, 1, cat, "b", 2, "Changed");
    es_page_destroy(p);
    q.limit = 0;
    p = select_events(s, &q);
    ck_assert_uint_eq(p->count, 3);
    event_is(p, 2, cat, "c", 0, "Started");
    es_page_destroy(p);
    /* a stream of another category is not the category's */
    snprintf(sb, sizeof sb, "%s-a", other);
    q.nstreams = 1;
    q.streams = (const char *const[]){sb};
    p = select_events(s, &q);
    ck_assert_uint_eq(p->count, 0);
    es_page_destroy(p);
    es_store_close(s);
}
END_TEST

START_TEST(selects_newest_first_up_to_a_limit)
{
    es_store *s = open_store();
    char cat[64];
    const char *types[1] = {"Started"};
    es_audit_select q = {cat, types, 1, NULL, NULL, NULL, 0, ES_AUDIT_NEWEST_FIRST, 0};
    es_page *p;

    category(cat, sizeof cat, "new");
    append(s, cat, "1", "Started", "{}");
    append(s, cat, "2", "Started", "{}");
    append(s, cat, "1", "Other", "{}");
    append(s, cat, "3", "Started", "{}");
    p = select_events(s, &q);
    ck_assert_uint_eq(p->count, 3);
    event_is(p, 0, cat, "3", 0, "Started");
    event_is(p, 1, cat, "2", 0, "Started");
    event_is(p, 2, cat, "1", 0, "Started");
    ck_assert_int_ge(strcmp(p->events[0].recorded_at, p->events[1].recorded_at), 0);
    es_page_destroy(p);
    q.limit = 2;
    p = select_events(s, &q);
    ck_assert_uint_eq(p->count, 2);
    event_is(p, 1, cat, "2", 0, "Started");
    es_page_destroy(p);
    es_store_close(s);
}
END_TEST

START_TEST(refuses_malformed_selects)
{
    es_store *s = open_store();
    char cat[64];
    const char *types[ES_AUDIT_TYPES_MAX + 1] = {"A", "B", "C", "D", "E", "F", "G", "H", "I"};
    const char *twice[2] = {"A", "A"};
    const char *missing[2] = {"A", NULL};
    const char *bad_utf8[1] = {"\xff"};
    es_audit_select q = {cat, types, 1, NULL, NULL, NULL, 0, ES_AUDIT_BY_STREAM, 0};
    es_page dummy, *p = &dummy;                 /* a failed read sets it to NULL */
    es_error err;

#define REFUSED(code_)                                                                       \
    do {                                                                                     \
        p = &dummy;                                                                          \
        ck_assert_int_eq(es_audit_events_read(s, &q, &p, &err), ES_EINVALID);                \
        ck_assert_ptr_null(p);                                                               \
        ck_assert_str_eq(err.code, code_);                                                   \
    } while (0)

    category(cat, sizeof cat, "bads");
    append(s, cat, "1", "A", "{}");
    q.category = NULL;
    REFUSED("audit_category_missing");
    q.category = cat;
    q.ntypes = 0;
    REFUSED("audit_types_count");
    q.ntypes = ES_AUDIT_TYPES_MAX + 1;
    REFUSED("audit_types_count");
    q.types = NULL;
    q.ntypes = 1;
    REFUSED("audit_types_count");
    q.types = twice;
    q.ntypes = 2;
    REFUSED("audit_type_repeated");
    q.types = missing;
    REFUSED("audit_type_missing");
    q.types = bad_utf8;
    q.ntypes = 1;
    REFUSED("audit_type_invalid");
    q.types = types;
    q.match_field = "n";
    REFUSED("audit_match_incomplete");
    q.match_field = NULL;
    q.match_value = "1";
    REFUSED("audit_match_incomplete");
    q.match_value = NULL;
    q.nstreams = 1;
    REFUSED("audit_stream_missing");
    q.streams = missing + 1;
    REFUSED("audit_stream_missing");
    q.streams = bad_utf8;
    REFUSED("audit_stream_invalid");
    q.streams = NULL;
    q.nstreams = 0;
    q.order = (es_audit_order)7;
    REFUSED("audit_order_invalid");
#undef REFUSED
    /* and the store goes on answering */
    q.order = ES_AUDIT_NEWEST_FIRST;
    p = select_events(s, &q);
    ck_assert_uint_eq(p->count, 1);
    es_page_destroy(p);
    es_store_close(s);
}
END_TEST

START_TEST(hostile_selects_are_only_values)
{
    es_store *s = open_store();
    char cat[64], stream[128];
    const char *hostile[] = {
        "'; DROP TABLE es_events; --",
        "x' OR '1'='1",
        "\") OR true --",
        "$1",
        "a\\b",
        "[\"Started\"]",
        "it's",
        "%s%n",
    };
    const char *types[2] = {"it's \"quoted\"", NULL};
    const char *streams[1] = {stream};
    es_audit_select q = {NULL, types, 1, "who's", "o'brien", NULL, 0, ES_AUDIT_BY_STREAM, 0};
    es_page *p;
    int64_t before;
    size_t i;

    /* names with quotes in them, stored for real, are found as they are */
    category(cat, sizeof cat, "o'hara");
    append(s, cat, "it's", "it's \"quoted\"", "{\"who's\": \"o'brien\"}");
    append(s, cat, "it's", "it's \"quoted\"", "{\"who's\": \"o'neil\"}");
    append(s, cat, "2", "it's \"quoted\"", "{\"who's\": \"o'brien\"}");
    snprintf(stream, sizeof stream, "%s-it's", cat);
    before = count(s);
    q.category = cat;
    p = select_events(s, &q);
    ck_assert_uint_eq(p->count, 2);
    q.streams = streams;
    q.nstreams = 1;
    es_page_destroy(p);
    p = select_events(s, &q);
    ck_assert_uint_eq(p->count, 1);
    ck_assert_str_eq(p->events[0].stream_id, stream);
    ck_assert_str_eq(p->events[0].data, "{\"who's\": \"o'brien\"}");
    es_page_destroy(p);

    /* hostile text in every place matches nothing and harms nothing */
    for (i = 0; i < sizeof hostile / sizeof *hostile; i++) {
        const char *h[1] = {hostile[i]};
        es_audit_select all = {hostile[i], h, 1, hostile[i], hostile[i], h, 1,
                               i % 2 ? ES_AUDIT_BY_STREAM : ES_AUDIT_NEWEST_FIRST, i};

        p = select_events(s, &all);
        ck_assert_msg(p->count == 0, "%s: %zu events", hostile[i], p->count);
        es_page_destroy(p);
        /* against the real category, each place on its own is only a value too */
        q.category = cat;
        q.types = h;
        q.streams = NULL;
        q.nstreams = 0;
        p = select_events(s, &q);
        ck_assert_msg(p->count == 0, "type %s: %zu events", hostile[i], p->count);
        es_page_destroy(p);
        q.types = types;
        q.match_field = hostile[i];
        p = select_events(s, &q);
        ck_assert_msg(p->count == 0, "field %s: %zu events", hostile[i], p->count);
        es_page_destroy(p);
        q.match_field = "who's";
        q.match_value = hostile[i];
        p = select_events(s, &q);
        ck_assert_msg(p->count == 0, "value %s: %zu events", hostile[i], p->count);
        es_page_destroy(p);
        q.match_value = "o'brien";
        q.streams = h;
        q.nstreams = 1;
        p = select_events(s, &q);
        ck_assert_msg(p->count == 0, "stream %s: %zu events", hostile[i], p->count);
        es_page_destroy(p);
    }
    ck_assert_int_eq(count(s), before);
    es_store_close(s);
}
END_TEST

/* ---- browsing ------------------------------------------------------------ */

typedef struct listed {
    char names[16][128];
    int64_t versions[16];
    int n;
} listed;

static bool
collect(const es_audit_stream *st, void *arg)
{
    listed *l = arg;

    ck_assert_int_lt(l->n, 16);
    snprintf(l->names[l->n], sizeof l->names[0], "%s", st->stream);
    l->versions[l->n++] = st->version;
    return true;
}

static listed
list(es_store *s, const char *prefix, const char *after, size_t limit)
{
    listed l = {.n = 0};
    es_error err;

    ck_assert_msg(es_audit_streams_list(s, prefix, after, limit, collect, &l, &err) == ES_OK,
                  "list %s: %s", prefix, err.message);
    return l;
}

START_TEST(lists_the_streams_of_a_prefix_in_pages)
{
    es_store *s = open_store();
    char cat[64], prefix[80], next[80];
    listed l;

    category(cat, sizeof cat, "brw");
    append(s, cat, "b2", "Seen", "{}");
    append(s, cat, "a1", "Seen", "{}");
    append(s, cat, "b1", "Seen", "{}");
    append(s, cat, "b1", "Seen", "{}");
    append(s, cat, "b%", "Seen", "{}");     /* LIKE's wildcards are plain bytes here */
    snprintf(next, sizeof next, "%sx", cat); /* a category sorting right after */
    append(s, next, "b1", "Seen", "{}");

    snprintf(prefix, sizeof prefix, "%s-b", cat);
    l = list(s, prefix, NULL, 2);
    ck_assert_int_eq(l.n, 2);
    snprintf(next, sizeof next, "%s-b%%", cat);
    ck_assert_str_eq(l.names[0], next);
    snprintf(next, sizeof next, "%s-b1", cat);
    ck_assert_str_eq(l.names[1], next);
    ck_assert_int_eq(l.versions[1], 1);
    /* the next page starts after the last one shown and ends with the prefix */
    l = list(s, prefix, l.names[1], 2);
    ck_assert_int_eq(l.n, 1);
    snprintf(next, sizeof next, "%s-b2", cat);
    ck_assert_str_eq(l.names[0], next);
    l = list(s, prefix, l.names[0], 2);
    ck_assert_int_eq(l.n, 0);
    /* the category's whole prefix, and a prefix that matches nothing */
    snprintf(prefix, sizeof prefix, "%s-", cat);
    ck_assert_int_eq(list(s, prefix, NULL, 10).n, 4);
    snprintf(prefix, sizeof prefix, "%s-c", cat);
    ck_assert_int_eq(list(s, prefix, NULL, 10).n, 0);
    es_store_close(s);
}
END_TEST

START_TEST(refuses_malformed_listings)
{
    es_store *s = open_store();
    char long_prefix[300];
    listed l = {.n = 0};
    es_error err;

    memset(long_prefix, 'a', sizeof long_prefix - 1);
    long_prefix[sizeof long_prefix - 1] = '\0';
    ck_assert_int_eq(es_audit_streams_list(s, long_prefix, NULL, 5, collect, &l, &err),
                     ES_EINVALID);
    ck_assert_str_eq(err.field, "prefix");
    ck_assert_int_eq(es_audit_streams_list(s, "\xff\xfe", NULL, 5, collect, &l, &err),
                     ES_EINVALID);
    ck_assert_int_eq(es_audit_streams_list(s, "a", "\xc3", 5, collect, &l, &err), ES_EINVALID);
    ck_assert_str_eq(err.field, "after");
    ck_assert_int_eq(es_audit_streams_list(s, "a", NULL, 0, collect, &l, &err), ES_EINVALID);
    ck_assert_int_eq(es_audit_streams_list(s, "a", NULL, ES_AUDIT_STREAMS_MAX + 1, collect, &l,
                                           &err), ES_EINVALID);
    ck_assert_str_eq(err.field, "limit");
    ck_assert_int_eq(l.n, 0);
    es_store_close(s);
}
END_TEST

START_TEST(reads_the_event_at_a_position)
{
    es_store *s = open_store();
    char cat[64], stream[80];
    es_append_result a;
    es_position nowhere;
    es_page *p = NULL;
    es_error err;

    category(cat, sizeof cat, "at");
    append(s, cat, "1", "First", "{\"n\": 1}");
    a = append(s, cat, "1", "Second", "{\"n\": 2}");
    ck_assert_msg(es_audit_event_at(s, a.position, &p, &err) == ES_OK, "%s", err.message);
    ck_assert_uint_eq(p->count, 1);
    snprintf(stream, sizeof stream, "%s-1", cat);
    ck_assert_str_eq(p->events[0].stream_id, stream);
    ck_assert_str_eq(p->events[0].type, "Second");
    ck_assert_int_eq(p->events[0].version, 1);
    ck_assert_int_eq(es_position_cmp(p->events[0].position, a.position), 0);
    es_page_destroy(p);
    nowhere = a.position;
    nowhere.gpos += 1000000;
    ck_assert_int_eq(es_audit_event_at(s, nowhere, &p, &err), ES_ENOTFOUND);
    ck_assert_ptr_null(p);
    ck_assert_str_eq(err.code, "position_not_found");
    es_store_close(s);
}
END_TEST

/* The events of one correlation id, in feed order, a page at a time;
 * another correlation's events and bad arguments stay out. */
START_TEST(reads_the_events_of_a_correlation_in_pages)
{
    es_store *s = open_store();
    char cat[64], corr[64], other[80], meta[200], meta_other[200], stream[128];
    es_new_event e = {NULL, "Happened", 1, "{}", meta};
    es_new_event o = {NULL, "Other", 1, "{}", meta_other};
    es_append_req req = {stream, ES_EXPECT_ANY, &e, 1};
    es_append_req req_o = {stream, ES_EXPECT_ANY, &o, 1};
    es_append_result res;
    es_position from = {0, 0};
    es_page *p = NULL;
    es_error err;
    int seen = 0;

    category(cat, sizeof cat, "corr");
    th_unique(corr, sizeof corr, "corr");
    snprintf(other, sizeof other, "%s-other", corr);
    snprintf(meta, sizeof meta, "{\"correlation_id\": \"%s\"}", corr);
    snprintf(meta_other, sizeof meta_other, "{\"correlation_id\": \"%s\"}", other);
    for (int i = 0; i < 5; i++) {
        snprintf(stream, sizeof stream, "%s-%d", cat, i);
        es_store_append(s, &req, &res);
        ck_assert_msg(res.status == ES_OK, "%s", res.err.message);
        es_store_append(s, &req_o, &res);
        ck_assert_msg(res.status == ES_OK, "%s", res.err.message);
    }
    {
        /* a client's correlation id past what a btree key may hold
         * (2,704 bytes; random, so it does not compress) is still
         * appended: the index keys a prefix */
        static char big_meta[4000];
        int n = snprintf(big_meta, sizeof big_meta, "{\"correlation_id\": \"");

        for (int i = 0; i < 3200; i++)
            big_meta[n + i] = "0123456789abcdef"[(unsigned)rand() % 16];
        snprintf(big_meta + n + 3200, sizeof big_meta - (size_t)n - 3200, "\"}");
        o.metadata = big_meta;
        snprintf(stream, sizeof stream, "%s-big", cat);
        es_store_append(s, &req_o, &res);
        ck_assert_msg(res.status == ES_OK, "%s", res.err.message);
        o.metadata = meta_other;
    }
    for (int page = 0; page < 3; page++) {
        ck_assert_msg(es_audit_correlated(s, corr, from, 2, &p, &err) == ES_OK, "%s",
                      err.message);
        ck_assert_uint_eq(p->count, page < 2 ? 2 : 1);
        for (size_t i = 0; i < p->count; i++, seen++) {
            snprintf(stream, sizeof stream, "%s-%d", cat, seen);
            ck_assert_str_eq(p->events[i].stream_id, stream);
            ck_assert_str_eq(p->events[i].type, "Happened");
            ck_assert_int_gt(es_position_cmp(p->events[i].position, from), 0);
            from = p->events[i].position;
        }
        es_page_destroy(p);
    }
    ck_assert_int_eq(seen, 5);
    ck_assert_int_eq(es_audit_correlated(s, corr, from, 2, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 0);
    es_page_destroy(p);
    ck_assert_int_eq(es_audit_correlated(s, "", from, 2, &p, &err), ES_EINVALID);
    ck_assert_ptr_null(p);
    ck_assert_str_eq(err.field, "correlation_id");
    ck_assert_int_eq(es_audit_correlated(s, "\xff", from, 2, &p, &err), ES_EINVALID);
    ck_assert_int_eq(es_audit_correlated(s, corr, from, 0, &p, &err), ES_EINVALID);
    ck_assert_str_eq(err.field, "limit");
    es_store_close(s);
}
END_TEST

/* A page of a correlation stops at the store's read budget as the feed's
 * pages do: 40 events of ~64 KiB each under a 256 KiB budget come in
 * pages of a few, each marked truncated, and paging from each page's last
 * event gives every one of them once, in order.  Without the budget a
 * client asking for 500 events of 1 MiB each made es-query hold 0.5 GB. */
START_TEST(a_correlation_page_stops_at_the_read_budget)
{
    es_store *s = open_store();
    enum { EVENTS = 40, DATA = 64 * 1024 };
    static char data[DATA + 64];
    char cat[64], corr[64], meta[200], stream[128];
    es_new_event e = {NULL, "Big", 1, data, meta};
    es_append_req req = {stream, ES_EXPECT_ANY, &e, 1};
    es_append_result res;
    es_position from = {0, 0};
    es_page *p = NULL;
    es_error err;
    int seen = 0, pages = 0;

    category(cat, sizeof cat, "corrbig");
    th_unique(corr, sizeof corr, "corrbig");
    snprintf(meta, sizeof meta, "{\"correlation_id\": \"%s\"}", corr);
    {
        int n = snprintf(data, sizeof data, "{\"blob\": \"");

        memset(data + n, 'x', DATA);
        snprintf(data + n + DATA, sizeof data - (size_t)n - DATA, "\"}");
    }
    for (int i = 0; i < EVENTS; i++) {
        snprintf(stream, sizeof stream, "%s-%d", cat, i);
        es_store_append(s, &req, &res);
        ck_assert_msg(res.status == ES_OK, "%s", res.err.message);
    }
    es_store_set_read_budget(s, 256 * 1024);
    for (;;) {
        ck_assert_msg(es_audit_correlated(s, corr, from, 500, &p, &err) == ES_OK, "%s",
                      err.message);
        if (p->count == 0) {
            ck_assert(!p->truncated);
            es_page_destroy(p);
            break;
        }
        pages++;
        /* at most the budget and one event (one at least) */
        ck_assert_uint_le(p->count, 256 / 64 + 1);
        ck_assert_msg(p->truncated || seen + (int)p->count == EVENTS,
                      "a page of %zu events of %d stopped without its truncated flag",
                      p->count, EVENTS - seen);
        for (size_t i = 0; i < p->count; i++, seen++) {
            snprintf(stream, sizeof stream, "%s-%d", cat, seen);
            ck_assert_str_eq(p->events[i].stream_id, stream);
            ck_assert_int_gt(es_position_cmp(p->events[i].position, from), 0);
            from = p->events[i].position;
        }
        es_page_destroy(p);
        ck_assert_int_le(pages, EVENTS);
    }
    ck_assert_int_eq(seen, EVENTS);
    ck_assert_int_ge(pages, EVENTS / 5);
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
    tcase_add_test(tc, selects_by_type_field_and_stream_in_stream_order);
    tcase_add_test(tc, selects_newest_first_up_to_a_limit);
    tcase_add_test(tc, refuses_malformed_selects);
    tcase_add_test(tc, hostile_selects_are_only_values);
    tcase_add_test(tc, lists_the_streams_of_a_prefix_in_pages);
    tcase_add_test(tc, refuses_malformed_listings);
    tcase_add_test(tc, reads_the_event_at_a_position);
    tcase_add_test(tc, reads_the_events_of_a_correlation_in_pages);
    tcase_add_test(tc, a_correlation_page_stops_at_the_read_budget);
    suite_add_tcase(s, tc);
    rc = th_run(s);
    th_db_drop(dbname);
    return rc;
}
