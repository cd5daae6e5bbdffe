/*
 * Integration tests of events/store.c on the real PostgreSQL: expected
 * versions, conflicts, idempotent retries, id clashes, reads, group
 * commit, upcasting on read, validation, and behaviour when the
 * connection is lost.
 */
#include <jansson.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "json.h"
#include "pg.h"
#include "snapshot.h"
#include "store.h"
#include "store_int.h"

static es_store *
open_store(void)
{
    es_store *s = NULL;
    es_error err;

    ck_assert_msg(es_store_open(&s, th_conninfo(), &err) == ES_OK, "open: %s", err.message);
    return s;
}

static es_append_result
append(es_store *s, const char *stream, int64_t expected, const es_new_event *evs, size_t n)
{
    es_append_req req = {stream, expected, evs, n};
    es_append_result res;

    es_store_append(s, &req, &res);
    return res;
}

static es_new_event
ev(const char *id, const char *type, const char *data)
{
    es_new_event e = {id, type, 1, data, NULL};
    return e;
}

START_TEST(expected_versions)
{
    es_store *s = open_store();
    char stream[64];
    es_new_event e = ev(NULL, "Happened", "{\"n\":1}");
    es_new_event two[2] = {ev(NULL, "A", "{}"), ev(NULL, "B", "{}")};
    es_append_result r;

    th_unique(stream, sizeof stream, "exp");
    r = append(s, stream, ES_EXPECT_EXISTS, &e, 1);
    ck_assert_int_eq(r.status, ES_ECONFLICT);
    ck_assert_int_eq(r.err.actual_version, -1);
    r = append(s, stream, 0, &e, 1);
    ck_assert_int_eq(r.status, ES_ECONFLICT);
    ck_assert_int_eq(r.err.actual_version, -1);

    r = append(s, stream, ES_EXPECT_NO_STREAM, &e, 1);
    ck_assert_int_eq(r.status, ES_OK);
    ck_assert(!r.duplicate);
    ck_assert_int_eq(r.first_version, 0);
    ck_assert_int_eq(r.last_version, 0);
    ck_assert_int_gt(r.position.gpos, 0);
    ck_assert(r.position.txid > 0);

    r = append(s, stream, ES_EXPECT_NO_STREAM, &e, 1);
    ck_assert_int_eq(r.status, ES_ECONFLICT);
    ck_assert_int_eq(r.err.actual_version, 0);
    ck_assert_str_eq(r.err.code, "version_conflict");

    r = append(s, stream, 0, two, 2);
    ck_assert_int_eq(r.status, ES_OK);
    ck_assert_int_eq(r.first_version, 1);
    ck_assert_int_eq(r.last_version, 2);

    r = append(s, stream, 1, &e, 1);
    ck_assert_int_eq(r.status, ES_ECONFLICT);
    ck_assert_int_eq(r.err.actual_version, 2);

    r = append(s, stream, ES_EXPECT_EXISTS, &e, 1);
    ck_assert_int_eq(r.status, ES_OK);
    ck_assert_int_eq(r.last_version, 3);
    r = append(s, stream, ES_EXPECT_ANY, &e, 1);
    ck_assert_int_eq(r.status, ES_OK);
    ck_assert_int_eq(r.last_version, 4);

    th_unique(stream, sizeof stream, "any");
    r = append(s, stream, ES_EXPECT_ANY, two, 2);
    ck_assert_int_eq(r.status, ES_OK);
    ck_assert_int_eq(r.first_version, 0);
    ck_assert_int_eq(r.last_version, 1);
    es_store_close(s);
}
END_TEST

START_TEST(idempotent_retry)
{
    es_store *s = open_store();
    char stream[64], id0[ES_UUID_LEN + 1], id1[ES_UUID_LEN + 1], cmd[64];
    es_new_event evs[2];
    es_append_result first, again;
    es_page *p;
    es_error err;

    th_unique(stream, sizeof stream, "idem");
    th_unique(cmd, sizeof cmd, "cmd");
    es_uuid_derive(cmd, 0, id0);
    es_uuid_derive(cmd, 1, id1);
    evs[0] = ev(id0, "A", "{\"x\":1}");
    evs[1] = ev(id1, "B", "{\"x\":2}");
    first = append(s, stream, ES_EXPECT_NO_STREAM, evs, 2);
    ck_assert_int_eq(first.status, ES_OK);

    /* The reply was "lost": the client sends the same append again. */
    again = append(s, stream, ES_EXPECT_NO_STREAM, evs, 2);
    ck_assert_int_eq(again.status, ES_OK);
    ck_assert(again.duplicate);
    ck_assert_int_eq(again.first_version, first.first_version);
    ck_assert_int_eq(again.last_version, first.last_version);
    ck_assert_int_eq(es_position_cmp(again.position, first.position), 0);
    /* Whatever expected version the retry states. */
    again = append(s, stream, 7, evs, 2);
    ck_assert_int_eq(again.status, ES_OK);
    ck_assert(again.duplicate);

    ck_assert_int_eq(es_store_read_stream(s, stream, 0, 100, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 2);
    ck_assert_int_eq(p->stream_version, 1);
    ck_assert_str_eq(p->events[0].event_id, id0);
    es_page_destroy(p);

    /* Only some of the ids again, or in another order: a clash. */
    again = append(s, stream, ES_EXPECT_ANY, evs, 1);
    ck_assert_int_eq(again.status, ES_EIDCLASH);    /* a part of one append */
    again = append(s, stream, 1, evs, 1);
    ck_assert_int_eq(again.status, ES_EIDCLASH);
    {
        es_new_event swapped[2] = {evs[1], evs[0]};
        again = append(s, stream, ES_EXPECT_ANY, swapped, 2);
        ck_assert_int_eq(again.status, ES_EIDCLASH);
    }
    {
        char fresh[ES_UUID_LEN + 1];
        es_new_event mixed[2];
        es_uuid_derive(cmd, 2, fresh);
        mixed[0] = evs[1];
        mixed[1] = ev(fresh, "C", "{}");
        again = append(s, stream, ES_EXPECT_ANY, mixed, 2);
        ck_assert_int_eq(again.status, ES_EIDCLASH);
        ck_assert_str_eq(again.err.code, "event_id_clash");
    }
    /* The same ids to another stream: a clash, nothing written there. */
    {
        char other[64];
        th_unique(other, sizeof other, "idem-other");
        again = append(s, other, ES_EXPECT_ANY, evs, 2);
        ck_assert_int_eq(again.status, ES_EIDCLASH);
        ck_assert_int_eq(es_store_read_stream(s, other, 0, 10, ES_FORWARD, &p, &err),
                         ES_ENOTFOUND);
        ck_assert_ptr_null(p);
    }
    es_store_close(s);
}
END_TEST

START_TEST(read_stream_both_ways)
{
    es_store *s = open_store();
    char stream[64], data[32];
    es_new_event evs[10];
    char datas[10][32];
    es_page *p;
    es_error err;

    th_unique(stream, sizeof stream, "read");
    for (int i = 0; i < 10; i++) {
        snprintf(datas[i], sizeof datas[i], "{\"i\": %d}", i);
        evs[i] = ev(NULL, "Step", datas[i]);
    }
    evs[3].metadata = "{\"correlation_id\":\"c-1\",\"causation_id\":\"x\",\"command_id\":\"k\"}";
    ck_assert_int_eq(append(s, stream, ES_EXPECT_NO_STREAM, evs, 10).status, ES_OK);

    ck_assert_int_eq(es_store_read_stream(s, stream, 2, 3, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 3);
    ck_assert_int_eq(p->stream_version, 9);
    for (int i = 0; i < 3; i++) {
        snprintf(data, sizeof data, "{\"i\": %d}", i + 2);
        ck_assert_int_eq(p->events[i].version, i + 2);
        ck_assert_str_eq(p->events[i].data, data);
        ck_assert_str_eq(p->events[i].type, "Step");
        ck_assert_str_eq(p->events[i].stream_id, stream);
        ck_assert_int_eq(p->events[i].schema_version, 1);
        ck_assert_int_eq((int)strlen(p->events[i].recorded_at), 27);
        ck_assert_int_eq(p->events[i].recorded_at[26], 'Z');
    }
    ck_assert_str_eq(p->events[1].metadata,
                     "{\"command_id\": \"k\", \"causation_id\": \"x\", \"correlation_id\": \"c-1\"}");
    ck_assert_str_eq(p->events[0].metadata, "{}");
    es_page_destroy(p);

    ck_assert_int_eq(es_store_read_stream(s, stream, -1, 4, ES_BACKWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 4);
    ck_assert_int_eq(p->events[0].version, 9);
    ck_assert_int_eq(p->events[3].version, 6);
    es_page_destroy(p);

    ck_assert_int_eq(es_store_read_stream(s, stream, 1, 100, ES_BACKWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 2);
    ck_assert_int_eq(p->events[1].version, 0);
    es_page_destroy(p);

    /* Past the end: an existing stream with no events in range. */
    ck_assert_int_eq(es_store_read_stream(s, stream, 50, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 0);
    ck_assert_int_eq(p->stream_version, 9);
    es_page_destroy(p);

    ck_assert_int_eq(es_store_read_stream(s, "no-such-stream-at-all", 0, 10, ES_FORWARD, &p, &err),
                     ES_ENOTFOUND);
    ck_assert_str_eq(err.code, "stream_not_found");
    ck_assert_int_eq(es_store_read_stream(s, "", 0, 10, ES_FORWARD, &p, &err), ES_EINVALID);
    es_store_close(s);
}
END_TEST

/* es_snapshot_read: the snapshot of the asked code and the events after
 * it, in one statement; none, another code's or a missing stream as
 * es_snapshot_load and es_store_read_stream answer them. */
START_TEST(snapshot_and_the_events_after_it)
{
    es_store *s = open_store();
    char stream[64], datas[6][32];
    es_new_event evs[6];
    json_t *state, *saved = json_pack("{s:i}", "n", 3);
    int64_t version;
    es_page *p;
    es_error err;

    th_unique(stream, sizeof stream, "snapread");
    for (int i = 0; i < 6; i++) {
        snprintf(datas[i], sizeof datas[i], "{\"i\": %d}", i);
        evs[i] = ev(NULL, "Step", datas[i]);
    }
    ck_assert_int_eq(append(s, stream, ES_EXPECT_NO_STREAM, evs, 6).status, ES_OK);

    /* none yet: the whole stream */
    ck_assert_int_eq(es_snapshot_read(s, stream, 1, 100, &state, &version, &p, &err), ES_OK);
    ck_assert_ptr_null(state);
    ck_assert_int_eq(version, -1);
    ck_assert_uint_eq(p->count, 6);
    ck_assert_int_eq(p->stream_version, 5);
    ck_assert_int_eq(p->events[0].version, 0);
    es_page_destroy(p);

    /* taken at 2: its state and the events 3..5 */
    ck_assert_int_eq(es_snapshot_save(s, stream, 1, saved, 2, &err), ES_OK);
    ck_assert_int_eq(es_snapshot_read(s, stream, 1, 100, &state, &version, &p, &err), ES_OK);
    ck_assert_ptr_nonnull(state);
    ck_assert_int_eq(json_integer_value(json_object_get(state, "n")), 3);
    ck_assert_int_eq(version, 2);
    ck_assert_uint_eq(p->count, 3);
    ck_assert_int_eq(p->events[0].version, 3);
    ck_assert_str_eq(p->events[0].data, "{\"i\": 3}");
    ck_assert_int_eq(p->events[2].version, 5);
    json_decref(state);
    es_page_destroy(p);

    /* a page of one after it */
    ck_assert_int_eq(es_snapshot_read(s, stream, 1, 1, &state, &version, &p, &err), ES_OK);
    ck_assert_int_eq(version, 2);
    ck_assert_uint_eq(p->count, 1);
    ck_assert_int_eq(p->events[0].version, 3);
    json_decref(state);
    es_page_destroy(p);

    /* another code's snapshot is none */
    ck_assert_int_eq(es_snapshot_read(s, stream, 2, 100, &state, &version, &p, &err), ES_OK);
    ck_assert_ptr_null(state);
    ck_assert_int_eq(version, -1);
    ck_assert_uint_eq(p->count, 6);
    es_page_destroy(p);

    /* taken at the last event: the state and no event */
    ck_assert_int_eq(es_snapshot_save(s, stream, 1, saved, 5, &err), ES_OK);
    ck_assert_int_eq(es_snapshot_read(s, stream, 1, 100, &state, &version, &p, &err), ES_OK);
    ck_assert_ptr_nonnull(state);
    ck_assert_int_eq(version, 5);
    ck_assert_uint_eq(p->count, 0);
    ck_assert_int_eq(p->stream_version, 5);
    json_decref(state);
    es_page_destroy(p);

    ck_assert_int_eq(es_snapshot_read(s, "no-such-stream-at-all", 1, 10, &state, &version, &p,
                                      &err), ES_ENOTFOUND);
    ck_assert_str_eq(err.code, "stream_not_found");
    ck_assert_ptr_null(state);
    ck_assert_int_eq(es_snapshot_read(s, "", 1, 10, &state, &version, &p, &err), ES_EINVALID);
    json_decref(saved);
    es_store_close(s);
}
END_TEST

/* es_pg_exec_cached: prepared at the first run on a connection, reused
 * after; again after a PQreset; kept through a rolled-back transaction;
 * an error answered as PQexecParams answers it, nothing remembered. */
static long
prepared_count(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'es\\_%'");
    long n;

    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

START_TEST(statements_prepared_once_per_connection)
{
    PGconn *c = es_pg_connect(th_conninfo(), false);
    const char *two[1] = {"2"}, *three[1] = {"3"};
    const char *sql = "SELECT $1::int * 10";
    PGresult *r;

    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    ck_assert_int_eq(prepared_count(c), 0);
    r = es_pg_exec_cached(c, sql, 1, two);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "20");
    PQclear(r);
    ck_assert_int_eq(prepared_count(c), 1);
    r = es_pg_exec_cached(c, sql, 1, three);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "30");
    PQclear(r);
    ck_assert_int_eq(prepared_count(c), 1);     /* the same statement */

    /* a statement prepared in a transaction that rolls back stays */
    PQclear(PQexec(c, "BEGIN"));
    r = es_pg_exec_cached(c, "SELECT $1::int + 1", 1, two);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "3");
    PQclear(r);
    PQclear(PQexec(c, "ROLLBACK"));
    ck_assert_int_eq(prepared_count(c), 2);
    r = es_pg_exec_cached(c, "SELECT $1::int + 1", 1, three);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "4");
    PQclear(r);

    /* an error is the caller's to see, and is not remembered */
    r = es_pg_exec_cached(c, "SELEKT 1", 0, NULL);
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    r = es_pg_exec_cached(c, "SELEKT 1", 0, NULL);
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);

    /* a session that lost it (DEALLOCATE ALL, as a pooler's reset does):
     * the call fails once, the next prepares it again */
    PQclear(PQexec(c, "DEALLOCATE ALL"));
    r = es_pg_exec_cached(c, sql, 1, two);
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    r = es_pg_exec_cached(c, sql, 1, two);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "20");
    PQclear(r);

    /* a new session knows none: prepared again */
    PQreset(c);
    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    ck_assert_int_eq(prepared_count(c), 0);
    r = es_pg_exec_cached(c, sql, 1, three);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "30");
    PQclear(r);
    ck_assert_int_eq(prepared_count(c), 1);
    PQfinish(c);
}
END_TEST

START_TEST(feed_and_category)
{
    es_store *s = open_store();
    char cat[40], a[80], b[80], other[80];
    es_new_event e = ev(NULL, "T", "{}");
    es_position start, pos;
    es_page *p;
    es_error err;
    size_t seen = 0;

    th_unique(cat, sizeof cat, "cat");
    for (char *c = cat; *c; c++)
        if (*c == '-')
            *c = '_';       /* the category is what comes before the first '-' */
    snprintf(a, sizeof a, "%s-1", cat);
    snprintf(b, sizeof b, "%s-2", cat);
    th_unique(other, sizeof other, "othercat");

    ck_assert_int_eq(es_store_feed_head(s, &start, &err), ES_OK);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(append(s, a, ES_EXPECT_ANY, &e, 1).status, ES_OK);
        ck_assert_int_eq(append(s, other, ES_EXPECT_ANY, &e, 1).status, ES_OK);
        ck_assert_int_eq(append(s, b, ES_EXPECT_ANY, &e, 1).status, ES_OK);
    }

    /* The category, two at a time. */
    pos = start;
    for (;;) {
        ck_assert_int_eq(es_store_read_category(s, cat, pos, 2, &p, &err), ES_OK);
        if (p->count == 0) {
            ck_assert_int_eq(es_position_cmp(p->next, pos), 0);
            es_page_destroy(p);
            break;
        }
        for (size_t i = 0; i < p->count; i++) {
            ck_assert(strcmp(p->events[i].stream_id, a) == 0 ||
                      strcmp(p->events[i].stream_id, b) == 0);
            ck_assert_int_gt(es_position_cmp(p->events[i].position, pos), 0);
        }
        pos = p->next;
        seen += p->count;
        es_page_destroy(p);
    }
    ck_assert_uint_eq(seen, 10);

    /* The whole feed after start holds all 15, in position order. */
    ck_assert_int_eq(es_store_read_feed(s, start, 1000, &p, &err), ES_OK);
    seen = 0;
    for (size_t i = 0; i < p->count; i++) {
        if (i > 0)
            ck_assert_int_lt(es_position_cmp(p->events[i - 1].position, p->events[i].position), 0);
        if (strncmp(p->events[i].stream_id, cat, strlen(cat)) == 0 ||
            strcmp(p->events[i].stream_id, other) == 0)
            seen++;
    }
    ck_assert_uint_eq(seen, 15);
    ck_assert_int_eq(es_position_cmp(p->next, p->events[p->count - 1].position), 0);
    es_page_destroy(p);

    ck_assert_int_eq(es_store_feed_head(s, &pos, &err), ES_OK);
    ck_assert_int_gt(es_position_cmp(pos, start), 0);
    es_store_close(s);
}
END_TEST

START_TEST(validation_writes_nothing)
{
    es_store *s = open_store();
    char stream[64], big[300];
    es_new_event good = ev(NULL, "T", "{}"), bad[2];
    es_append_result r;
    es_page *p;
    es_error err;

    th_unique(stream, sizeof stream, "valid");
    r = append(s, "", ES_EXPECT_ANY, &good, 1);
    ck_assert_int_eq(r.status, ES_EINVALID);
    ck_assert_str_eq(r.err.code, "stream_id_empty");
    r = append(s, "bad\x01stream", ES_EXPECT_ANY, &good, 1);
    ck_assert_str_eq(r.err.code, "stream_id_invalid");
    r = append(s, stream, ES_EXPECT_ANY, &good, 0);
    ck_assert_str_eq(r.err.code, "events_empty");
    r = append(s, stream, -4, &good, 1);
    ck_assert_str_eq(r.err.code, "expected_version_invalid");

    /* One bad event fails the whole append: nothing of it is written. */
    bad[0] = good;
    bad[1] = ev(NULL, "T", "[]");
    r = append(s, stream, ES_EXPECT_ANY, bad, 2);
    ck_assert_int_eq(r.status, ES_EINVALID);
    ck_assert_str_eq(r.err.field, "events[1].data");
    ck_assert_int_eq(es_store_read_stream(s, stream, 0, 10, ES_FORWARD, &p, &err), ES_ENOTFOUND);

    memset(big, 'x', sizeof big);
    memcpy(big, "{\"k\":\"", 6);
    memcpy(big + sizeof big - 3, "\"}", 3);
    es_store_set_max_event_size(s, 200);
    bad[1] = ev(NULL, "T", big);
    r = append(s, stream, ES_EXPECT_ANY, bad, 2);
    ck_assert_int_eq(r.status, ES_ETOOLARGE);
    ck_assert_int_eq(es_store_read_stream(s, stream, 0, 10, ES_FORWARD, &p, &err), ES_ENOTFOUND);

    /* The limit is on what the store holds: {"a": "x...x"} with 190 x is
     * 1 + 199 = 200 bytes with its type, at the limit; one more is over,
     * and so is a 14-byte number whose stored text is 201 digits. */
    {
        char at[300];
        es_new_event one;

        snprintf(at, sizeof at, "{ \"a\" :\"%0190d\" }", 0);
        one = ev(NULL, "T", at);
        r = append(s, stream, ES_EXPECT_NO_STREAM, &one, 1);
        ck_assert_int_eq(r.status, ES_OK);
        snprintf(at, sizeof at, "{\"a\":\"%0191d\"}", 0);
        one = ev(NULL, "T", at);
        r = append(s, stream, ES_EXPECT_ANY, &one, 1);
        ck_assert_int_eq(r.status, ES_ETOOLARGE);
        ck_assert_str_eq(r.err.code, "event_too_large");
        one = ev(NULL, "T", "{\"a\":1e-200}");    /* stored as 0.000...1: 202 bytes */
        r = append(s, stream, ES_EXPECT_ANY, &one, 1);
        ck_assert_int_eq(r.status, ES_ETOOLARGE);
        ck_assert_int_eq(es_store_read_stream(s, stream, 0, 10, ES_FORWARD, &p, &err), ES_OK);
        ck_assert_uint_eq(p->count, 1);
        ck_assert_uint_eq(strlen(p->events[0].data) + 1, 200);
        es_page_destroy(p);
    }
    es_store_close(s);
}
END_TEST

START_TEST(group_commit_isolates_failures)
{
    es_store *s = open_store();
    char st[6][64], idc[ES_UUID_LEN + 1];
    es_new_event e = ev(NULL, "T", "{\"v\":1}"), bad = ev(NULL, "T", "1"), clash;
    es_append_req reqs[6];
    es_append_result res[6];
    es_page *p;
    es_error err;

    for (int i = 0; i < 6; i++)
        th_unique(st[i], sizeof st[i], "batch");
    /* An event id already used in another stream makes the server raise:
     * the batch falls back to one transaction per append. */
    ck_assert(es_uuid_random(idc));
    clash = ev(idc, "T", "{}");
    ck_assert_int_eq(append(s, st[5], ES_EXPECT_NO_STREAM, &clash, 1).status, ES_OK);
    ck_assert_int_eq(append(s, st[1], ES_EXPECT_NO_STREAM, &e, 1).status, ES_OK);

    reqs[0] = (es_append_req){st[0], ES_EXPECT_NO_STREAM, &e, 1};
    reqs[1] = (es_append_req){st[1], ES_EXPECT_NO_STREAM, &e, 1};  /* conflict */
    reqs[2] = (es_append_req){st[2], ES_EXPECT_ANY, &bad, 1};       /* invalid */
    reqs[3] = (es_append_req){st[3], ES_EXPECT_NO_STREAM, &e, 1};
    reqs[4] = (es_append_req){st[3], 0, &e, 1};                     /* same stream, in order */
    ck_assert_int_eq(es_store_append_many(s, reqs, 5, res), ES_OK);
    ck_assert_int_eq(res[0].status, ES_OK);
    ck_assert_int_eq(res[1].status, ES_ECONFLICT);
    ck_assert_int_eq(res[1].err.actual_version, 0);
    ck_assert_int_eq(res[2].status, ES_EINVALID);
    ck_assert_int_eq(res[3].status, ES_OK);
    ck_assert_int_eq(res[4].status, ES_OK);
    ck_assert_int_eq(res[4].last_version, 1);
    /* One commit: the written appends share a transaction. */
    ck_assert(res[0].position.txid == res[3].position.txid);
    ck_assert(res[3].position.txid == res[4].position.txid);

    reqs[0] = (es_append_req){st[4], ES_EXPECT_NO_STREAM, &e, 1};
    reqs[1] = (es_append_req){st[0], ES_EXPECT_ANY, &clash, 1};    /* raises */
    reqs[2] = (es_append_req){st[2], ES_EXPECT_NO_STREAM, &e, 1};
    ck_assert_int_eq(es_store_append_many(s, reqs, 3, res), ES_OK);
    ck_assert_int_eq(res[0].status, ES_OK);
    ck_assert_int_eq(res[1].status, ES_EIDCLASH);
    ck_assert_int_eq(res[2].status, ES_OK);
    ck_assert_int_eq(es_store_read_stream(s, st[0], 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 1);
    es_page_destroy(p);
    es_store_close(s);
}
END_TEST

/*
 * Appends of several events whose ids the store makes go together in one
 * statement: each gets its own versions, the events keep their order in
 * the feed, and a stale one still reports its conflict.
 */
START_TEST(batch_of_multi_event_appends)
{
    es_store *s = open_store();
    char st[4][64];
    es_new_event one = ev(NULL, "T", "{\"v\":0}"), evs[3];
    es_append_req reqs[5];
    es_append_result res[5];
    es_page *p;
    es_error err;
    int64_t want_last[5] = {2, 1, 3, 5, -1};

    for (int i = 0; i < 4; i++)
        th_unique(st[i], sizeof st[i], "multi");
    evs[0] = ev(NULL, "A", "{\"k\":0}");
    evs[1] = ev(NULL, "B", "{\"k\":1}");
    evs[2] = ev(NULL, "C", "{\"k\":2}");
    ck_assert_int_eq(append(s, st[2], ES_EXPECT_NO_STREAM, &one, 1).status, ES_OK);
    ck_assert_int_eq(append(s, st[3], ES_EXPECT_NO_STREAM, &one, 1).status, ES_OK);

    reqs[0] = (es_append_req){st[0], ES_EXPECT_NO_STREAM, evs, 3};
    reqs[1] = (es_append_req){st[1], ES_EXPECT_NO_STREAM, evs, 2};
    reqs[2] = (es_append_req){st[2], 0, evs, 3};
    reqs[3] = (es_append_req){st[2], 3, evs, 2};    /* same stream: after the batch */
    reqs[4] = (es_append_req){st[3], 4, evs, 2};    /* stale */
    ck_assert_int_eq(es_store_append_many(s, reqs, 5, res), ES_OK);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(res[i].status, ES_OK);
        ck_assert(!res[i].duplicate);
        ck_assert_int_eq(res[i].last_version, want_last[i]);
        ck_assert_int_eq(res[i].first_version, want_last[i] - (int64_t)reqs[i].count + 1);
        ck_assert(res[i].position.txid == res[0].position.txid);
    }
    ck_assert_int_eq(res[4].status, ES_ECONFLICT);
    ck_assert_int_eq(res[4].err.actual_version, 0);

    /* Stream st[2]: the first event, then A B C, then A B, in version and
     * in feed order, each with its own id. */
    ck_assert_int_eq(es_store_read_stream(s, st[2], 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 6);
    {
        const char *types[6] = {"T", "A", "B", "C", "A", "B"};

        for (size_t i = 0; i < p->count; i++) {
            ck_assert_int_eq(p->events[i].version, (int64_t)i);
            ck_assert_str_eq(p->events[i].type, types[i]);
            if (i > 0) {
                ck_assert(es_position_cmp(p->events[i - 1].position, p->events[i].position) < 0);
                ck_assert_str_ne(p->events[i - 1].event_id, p->events[i].event_id);
            }
        }
        ck_assert_str_eq(p->events[3].data, "{\"k\": 2}");
    }
    es_page_destroy(p);
    ck_assert_int_eq(es_store_read_stream(s, st[3], 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 1);
    es_page_destroy(p);
    es_store_close(s);
}
END_TEST

/*
 * A batch whose appends all name their exact version takes the lean
 * statement (es_fast_exact), which answers a row per
 * event: versions, positions and the shared transaction come out right
 * for one- and many-event appends, and a stale one reports its conflict.
 */
START_TEST(batch_of_exact_appends)
{
    es_store *s = open_store();
    char st[4][64];
    es_new_event one = ev(NULL, "T", "{\"v\":0}"), evs[3];
    es_append_req reqs[4];
    es_append_result res[4];
    es_page *p;
    es_error err;
    int64_t want_last[3] = {1, 3, 2};

    for (int i = 0; i < 4; i++) {
        th_unique(st[i], sizeof st[i], "exact");
        ck_assert_int_eq(append(s, st[i], ES_EXPECT_NO_STREAM, &one, 1).status, ES_OK);
    }
    /* st[2] is at version 1, st[3] at 0 */
    ck_assert_int_eq(append(s, st[2], 0, &one, 1).status, ES_OK);
    evs[0] = ev(NULL, "A", "{\"k\":0}");
    evs[1] = ev(NULL, "B", "{\"k\":1}");
    evs[1].metadata = "{\"m\":1}";
    evs[2] = ev(NULL, "C", "{\"k\":2}");

    reqs[0] = (es_append_req){st[0], 0, evs, 1};
    reqs[1] = (es_append_req){st[1], 0, evs, 3};
    reqs[2] = (es_append_req){st[2], 1, evs + 1, 1};
    reqs[3] = (es_append_req){st[3], 5, evs, 2};    /* stale */
    ck_assert_int_eq(es_store_append_many(s, reqs, 4, res), ES_OK);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(res[i].status, ES_OK);
        ck_assert(!res[i].duplicate);
        ck_assert_int_eq(res[i].last_version, want_last[i]);
        ck_assert_int_eq(res[i].first_version, want_last[i] - (int64_t)reqs[i].count + 1);
        ck_assert(res[i].position.txid == res[0].position.txid);
        if (i > 0)
            ck_assert(es_position_cmp(res[i - 1].position, res[i].position) != 0);
    }
    ck_assert_int_eq(res[3].status, ES_ECONFLICT);
    ck_assert_int_eq(res[3].err.actual_version, 0);

    /* st[1]: the first event, then A B C, in version and feed order; the
     * append's position is that of its last event. */
    ck_assert_int_eq(es_store_read_stream(s, st[1], 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 4);
    for (size_t i = 1; i < p->count; i++) {
        static const char *const types[] = {"A", "B", "C"};

        ck_assert_int_eq(p->events[i].version, (int64_t)i);
        ck_assert_str_eq(p->events[i].type, types[i - 1]);
        ck_assert(es_position_cmp(p->events[i - 1].position, p->events[i].position) < 0);
    }
    ck_assert(es_position_cmp(p->events[3].position, res[1].position) == 0);
    ck_assert_str_eq(p->events[1].metadata, "{}");
    ck_assert_str_eq(p->events[2].metadata, "{\"m\": 1}");
    ck_assert_str_eq(p->events[2].data, "{\"k\": 1}");
    es_page_destroy(p);
    /* Each event's place in its append and the append's size, which
     * tell a retry from a new append (es_classify_retry). */
    {
        PGconn *c = PQconnectdb(th_conninfo());
        const char *values[1] = {st[1]};
        PGresult *r = PQexecParams(c, "SELECT string_agg(append_index || '/' || append_size, ' ' "
                                      "ORDER BY version) FROM es_events WHERE stream_id = $1",
                                   1, NULL, values, NULL, NULL, 0);

        ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
        ck_assert_str_eq(PQgetvalue(r, 0, 0), "0/1 0/3 1/3 2/3");
        PQclear(r);
        PQfinish(c);
    }
    ck_assert_int_eq(es_store_read_stream(s, st[3], 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 1);
    es_page_destroy(p);

    /* A batch without any metadata sends none: stored as {}. */
    reqs[0] = (es_append_req){st[0], 1, evs + 2, 1};
    reqs[1] = (es_append_req){st[3], 0, evs + 2, 1};
    ck_assert_int_eq(es_store_append_many(s, reqs, 2, res), ES_OK);
    ck_assert_int_eq(res[0].status, ES_OK);
    ck_assert_int_eq(res[1].status, ES_OK);
    ck_assert_int_eq(es_store_read_stream(s, st[3], 1, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 1);
    ck_assert_str_eq(p->events[0].type, "C");
    ck_assert_str_eq(p->events[0].metadata, "{}");
    es_page_destroy(p);
    es_store_close(s);
}
END_TEST

/* v1 {"qty"} -> v2 {"quantity"} */
static es_status
up_qty(json_t *data, void *ctx, es_error *err)
{
    (void)ctx;
    (void)err;
    json_object_set(data, "quantity", json_object_get(data, "qty"));
    json_object_del(data, "qty");
    return ES_OK;
}

START_TEST(upcast_on_read)
{
    es_store *s = open_store();
    es_upcasters *u;
    char stream[64];
    es_new_event evs[2] = {ev(NULL, "ItemAdded", "{\"qty\":3}"), ev(NULL, "ItemAdded", "{\"quantity\":4}")};
    es_page *p;
    es_error err;

    evs[1].schema_version = 2;
    th_unique(stream, sizeof stream, "up");
    ck_assert_int_eq(append(s, stream, ES_EXPECT_NO_STREAM, evs, 2).status, ES_OK);
    ck_assert_int_eq(es_upcasters_create(&u), ES_OK);
    ck_assert_int_eq(es_upcasters_register(u, "ItemAdded", 1, up_qty, NULL), ES_OK);
    es_store_set_upcasters(s, u);
    ck_assert_int_eq(es_store_read_stream(s, stream, 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_str_eq(p->events[0].data, "{\"quantity\":3}");
    ck_assert_int_eq(p->events[0].schema_version, 2);
    ck_assert_str_eq(p->events[1].data, "{\"quantity\": 4}");
    es_page_destroy(p);
    es_store_set_upcasters(s, NULL);
    /* The stored event was not rewritten. */
    ck_assert_int_eq(es_store_read_stream(s, stream, 0, 1, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_str_eq(p->events[0].data, "{\"qty\": 3}");
    ck_assert_int_eq(p->events[0].schema_version, 1);
    es_page_destroy(p);
    es_upcasters_destroy(u);
    es_store_close(s);
}
END_TEST

/* Ends the server session of s's connection (waiting until its process
 * is gone) and waits until its close has reached the client's socket, as
 * after a crash or a failover.  The connection itself is left as it is. */
static void
end_session(es_store *s)
{
    es_error err;
    PGconn *victim = es__store_conn(s, &err), *admin = PQconnectdb(th_conninfo());
    struct pollfd pfd = {.fd = PQsocket(victim), .events = POLLRDHUP};
    char pid[16];
    PGresult *res;

    ck_assert_int_eq(PQstatus(admin), CONNECTION_OK);
    snprintf(pid, sizeof pid, "%d", PQbackendPID(victim));
    res = PQexecParams(admin, "SELECT pg_terminate_backend($1::int, 10000)", 1, NULL,
                       (const char *const[]){pid}, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    PQfinish(admin);
    ck_assert_int_eq(poll(&pfd, 1, 10000), 1);
}

START_TEST(unavailable_then_reconnects)
{
    es_store *s = NULL, *victim = open_store();
    es_error err;
    char stream[64];
    es_new_event e = ev(NULL, "T", "{}");
    es_append_result r;
    es_page *p;

    /* Nobody listens there. */
    ck_assert_int_eq(es_store_open(&s, "host=127.0.0.1 port=1 connect_timeout=2", &err),
                     ES_EUNAVAILABLE);
    ck_assert_ptr_null(s);
    ck_assert_str_eq(err.code, "store_unavailable");

    th_unique(stream, sizeof stream, "lost");
    ck_assert_int_eq(append(victim, stream, ES_EXPECT_ANY, &e, 1).status, ES_OK);

    /* Kill the victim's server process, as a crash or failover would. */
    end_session(victim);

    /* The session ended while the connection was idle: the next call
     * sees it closed and reconnects before sending anything, instead of
     * failing once (after a failover every thread's connection would
     * fail one request, and /readyz stayed 503 until each had). */
    r = append(victim, stream, ES_EXPECT_ANY, &e, 1);
    ck_assert_msg(r.status == ES_OK, "append after the session ended: %s %s",
                  es_status_text(r.status), r.err.message);
    ck_assert_int_eq(r.last_version, 1);
    ck_assert_int_eq(es_store_read_stream(victim, stream, 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 2);
    es_page_destroy(p);

    /* The same for a readiness probe (es-command's /readyz) and a read. */
    end_session(victim);
    ck_assert_msg(es_store_ping(victim, 2000, &err) == ES_OK, "ping after the session ended: %s",
                  err.message);
    es_store_close(victim);
}
END_TEST

/* A balancer may route to a standby for the second before its health
 * check sees a failover: the write is refused as store_unavailable (a
 * 503, not an internal error), nothing is in doubt, and the next call
 * makes a new session (here on a database made writable meanwhile). */
static void
set_read_only(const char *db, bool on)
{
    PGconn *admin = PQconnectdb(th_admin_conninfo());
    char sql[160];
    PGresult *res;

    ck_assert_int_eq(PQstatus(admin), CONNECTION_OK);
    snprintf(sql, sizeof sql, "ALTER DATABASE %s %s default_transaction_read_only%s", db,
             on ? "SET" : "RESET", on ? " = on" : "");
    res = PQexec(admin, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQerrorMessage(admin));
    PQclear(res);
    PQfinish(admin);
}

START_TEST(a_standby_refuses_then_the_next_call_reconnects)
{
    char db[64], conninfo[512], stream[64];
    es_store *s = NULL;
    es_error err;
    es_new_event e = ev(NULL, "T", "{}");
    es_append_req reqs[2];
    es_append_result one, many[2];
    es_page *p;

    th_db_create(db, sizeof db, conninfo, sizeof conninfo);
    set_read_only(db, true);
    ck_assert_msg(es_store_open(&s, conninfo, &err) == ES_OK, "open: %s", err.message);
    th_unique(stream, sizeof stream, "standby");

    one = append(s, stream, ES_EXPECT_ANY, &e, 1);
    ck_assert_int_eq(one.status, ES_EUNAVAILABLE);
    ck_assert_str_eq(one.err.code, "store_unavailable");
    ck_assert_msg(strstr(one.err.message, "standby") != NULL, "%s", one.err.message);
    reqs[0] = (es_append_req){stream, ES_EXPECT_ANY, &e, 1};
    reqs[1] = (es_append_req){stream, ES_EXPECT_ANY, &e, 1};
    es_store_append_many(s, reqs, 2, many);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(many[i].status, ES_EUNAVAILABLE);
        ck_assert_str_eq(many[i].err.code, "store_unavailable");
    }

    set_read_only(db, false);
    one = append(s, stream, ES_EXPECT_ANY, &e, 1);
    ck_assert_msg(one.status == ES_OK, "append after the refusal: %s %s",
                  es_status_text(one.status), one.err.message);
    /* nothing of the refused appends was written */
    ck_assert_int_eq(one.last_version, 0);
    ck_assert_int_eq(es_store_read_stream(s, stream, 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 1);
    es_page_destroy(p);
    es_store_close(s);
    th_db_drop(db);
}
END_TEST

/* A client killed in the middle of a large batch leaves nothing half
 * written: each append is all there or not there at all. */
START_TEST(killed_client_leaves_nothing_partial)
{
    enum { APPENDS = 200, PER = 20 };
    char prefix[40];
    pid_t pid;
    int status, written = 0;
    es_store *s;
    es_error err;

    th_unique(prefix, sizeof prefix, "kill");
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        es_store *c = NULL;
        static es_append_req reqs[APPENDS];
        static es_append_result res[APPENDS];
        static char names[APPENDS][64];
        static es_new_event evs[PER];

        if (es_store_open(&c, th_conninfo(), &err) != ES_OK)
            _exit(3);
        for (int i = 0; i < PER; i++)
            evs[i] = ev(NULL, "Chunk", "{\"payload\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}");
        for (;;) {      /* batches until killed */
            for (int i = 0; i < APPENDS; i++) {
                snprintf(names[i], sizeof names[i], "%s-%d", prefix, i);
                reqs[i] = (es_append_req){names[i], ES_EXPECT_ANY, evs, PER};
            }
            es_store_append_many(c, reqs, APPENDS, res);
        }
    }
    /* Kill it mid-work once it has committed something: a fixed sleep was
     * not always enough for a first commit under ASan on a busy machine. */
    s = open_store();
    for (int tries = 0; tries < 3000 && written == 0; tries++) {
        for (int i = 0; i < APPENDS && written == 0; i++) {
            char name[64];
            es_page *p;
            snprintf(name, sizeof name, "%s-%d", prefix, i);
            if (es_store_read_stream(s, name, 0, 1, ES_FORWARD, &p, &err) == ES_OK) {
                written = 1;
                es_page_destroy(p);
            }
        }
        if (written == 0)
            usleep(10 * 1000);
    }
    usleep(50 * 1000);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    ck_assert(WIFSIGNALED(status));
    written = 0;

    for (int i = 0; i < APPENDS; i++) {
        char name[64];
        es_page *p;
        snprintf(name, sizeof name, "%s-%d", prefix, i);
        if (es_store_read_stream(s, name, 0, 100000, ES_FORWARD, &p, &err) == ES_ENOTFOUND)
            continue;
        written++;
        ck_assert_uint_eq(p->count % PER, 0);
        ck_assert_int_eq(p->stream_version + 1, (int64_t)p->count);
        es_page_destroy(p);
    }
    ck_assert_int_gt(written, 0);       /* the child did get to write */
    es_store_close(s);
}
END_TEST

/* The append path's JSON checker takes exactly what jsonb takes, so a
 * checked event never fails inside a batch. */
START_TEST(checker_agrees_with_jsonb)
{
    static const char *texts[] = {
        "{}", "1e131071", "1e131072", "1e-16383", "1e-16384", "0e200000", "0.001e131074",
        "0.001e131075", "100e131069", "100e131070", "-0", "01", "1.", "\"\\u0000\"",
        "\"\\ud800\"", "\"\\udc00\"", "\"\\ud83d\\ude00\"", "\"\xed\xa0\x80\"",
        "\"\xf4\x90\x80\x80\"", "\"\xc2\x85\"", "{\"a\":1,\"a\":2}", "[1,]", "\"\\/\"",
        " {} ", "{}\n", "\"\t\"", "\"\x7f\"", "1E+2", "-", "[-1.5e-3]", "true", "nul",
        "0e1073741822", "0e1073741823", "0e99999999999999999999",
        "\"\\u00e9\\n\\/\\\"\\\\x\\u0001\\u001f\\u0022\\u005c\"", "\"\xc3\xa9\xe2\x82\xac\x7f\"",
        "[1.5e1,1e-2,100e-1,-0,-0.0,0.000e2,1E+2,12.340,-7,0.001e3,5e0]",
        "{\"k\":{\"x\":[true,false,null,\"\",[],{}]},\"b\" : [ 1 , 2 ]}", "1e300",
        "-1.25e-5",
    };
    PGconn *c = PQconnectdb(th_conninfo());
    char big[20000];
    size_t stored;

    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0] + 2; i++) {
        const char *t = i < sizeof texts / sizeof texts[0] ? texts[i] : big;
        bool ours, theirs;
        PGresult *r;

        if (i == sizeof texts / sizeof texts[0]) {          /* 16383 fraction digits */
            memcpy(big, "0.", 2);
            memset(big + 2, '1', 16383);
            big[16385] = '\0';
        } else if (i > sizeof texts / sizeof texts[0]) {    /* one more */
            big[16385] = '1';
            big[16386] = '\0';
        }
        ours = es_json_check_stored(t, strlen(t), &stored, NULL, NULL) != ES_JSON_INVALID;
        r = PQexecParams(c, "SELECT octet_length($1::jsonb::text)", 1, NULL, &t, NULL, NULL, 0);
        theirs = PQresultStatus(r) == PGRES_TUPLES_OK;
        ck_assert_msg(ours == theirs, "text %zu (%.40s): checker %d, jsonb %d", i, t, ours, theirs);
        /* the size the store will hold: exact, or more when a key repeats */
        if (ours && strstr(t, "\"a\":1,\"a\"") == NULL)
            ck_assert_msg(stored == (size_t)atol(PQgetvalue(r, 0, 0)),
                          "text %zu (%.40s): %zu bytes stored, jsonb says %s", i, t, stored,
                          PQgetvalue(r, 0, 0));
        else if (ours)
            ck_assert_uint_ge(stored, (size_t)atol(PQgetvalue(r, 0, 0)));
        PQclear(r);
    }
    PQfinish(c);
}
END_TEST

/* An event's numbers are ones the readers decode as the store gives them
 * back: jsonb drops exponents, so 1e30 returns as a 31-digit integer,
 * which jansson refuses, and the projection reading it would stop.  What
 * the event check takes, jansson reads from jsonb's text; what it refuses
 * here, jansson refuses too (but the last: refused to be safe at the
 * double's edge, where jansson rounds down). */
START_TEST(event_numbers_are_readable)
{
    static const struct {
        const char *text;
        bool ours;
    } cases[] = {
        {"9223372036854775807", true}, {"-9223372036854775808", true},
        {"9.223372036854775807e18", true}, {"1e18", true}, {"922337203685477580.7e1", true},
        {"92233720368547758070e-1", true}, {"1e-400", true}, {"0e999", true},
        {"-1.25e-5", true}, {"123456789012345678901234567890.5", true},
        {"9223372036854775808", false}, {"-9223372036854775809", false},
        {"9.223372036854775808e18", false}, {"1e19", false}, {"1e200", false},
        {"1e400", false}, {"1.7976931348623157e308", false}, {"[1, {\"a\": 1e30}]", false},
        {NULL, true},   /* 17976931348623156, 292 zeros, .5: just below the largest double */
        {NULL, false},  /* 17976931348623159, 292 zeros, .5: overflows */
        {NULL, false},  /* 17976931348623157, 291 zeros, 1.5: rounds down to it, refused */
    };
    PGconn *c = PQconnectdb(th_conninfo());
    char gen[400];

    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *t = cases[i].text;
        bool ours, theirs, expect = cases[i].ours;
        size_t k = i - (sizeof cases / sizeof cases[0] - 3);
        PGresult *r;
        json_t *j;

        if (t == NULL) {
            memcpy(gen, k == 0 ? "17976931348623156" : k == 1 ? "17976931348623159"
                                                              : "17976931348623157", 17);
            memset(gen + 17, '0', k == 2 ? 291 : 292);
            strcpy(gen + (k == 2 ? 308 : 309), k == 2 ? "1.5" : ".5");
            t = gen;
        }
        ours = es_json_check_event(t, strlen(t), NULL, NULL, NULL) != ES_JSON_INVALID;
        ck_assert_msg(ours == expect, "case %zu (%.40s): check %d, expected %d", i, t, ours, expect);
        ck_assert(es_json_check_stored(t, strlen(t), NULL, NULL, NULL) != ES_JSON_INVALID);
        r = PQexecParams(c, "SELECT $1::jsonb::text", 1, NULL, &t, NULL, NULL, 0);
        ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
        j = json_loads(PQgetvalue(r, 0, 0), JSON_DECODE_ANY, NULL);
        theirs = j != NULL;
        json_decref(j);
        PQclear(r);
        if (ours)
            ck_assert_msg(theirs, "case %zu (%.40s): taken, but jansson cannot read it", i, t);
        else if (k != 2)
            ck_assert_msg(!theirs, "case %zu (%.40s): refused, but jansson reads it", i, t);
    }
    PQfinish(c);
}
END_TEST

/* An append whose id is stored in another stream fails alone, whether
 * the fast path sees it (first id) or the insert raises (a later id). */
START_TEST(raised_error_fails_only_its_append)
{
    es_store *s = open_store();
    char st[4][64], used[ES_UUID_LEN + 1];
    es_new_event e = ev(NULL, "T", "{}"), reuse;
    es_append_req reqs[3];
    es_append_result res[3];
    es_page *p;
    es_error err;

    for (int i = 0; i < 4; i++)
        th_unique(st[i], sizeof st[i], "raise");
    ck_assert(es_uuid_random(used));
    reuse = ev(used, "T", "{}");
    ck_assert_int_eq(append(s, st[3], ES_EXPECT_NO_STREAM, &reuse, 1).status, ES_OK);

    /* the used id second: the fast path probes only the first, so the
     * insert raises and the batch is rolled back and rerun one by one */
    {
        char fresh[ES_UUID_LEN + 1];
        static es_new_event two[2];
        ck_assert(es_uuid_random(fresh));
        two[0] = ev(NULL, "T", "{}");
        two[0].event_id = strdup(fresh);
        two[1] = reuse;
        reqs[2] = (es_append_req){st[2], ES_EXPECT_NO_STREAM, two, 2};
    }
    reqs[0] = (es_append_req){st[0], ES_EXPECT_NO_STREAM, &e, 1};
    reqs[1] = (es_append_req){st[1], ES_EXPECT_NO_STREAM, &e, 1};
    ck_assert_int_eq(es_store_append_many(s, reqs, 3, res), ES_OK);
    ck_assert_int_eq(res[0].status, ES_OK);
    ck_assert_int_eq(res[1].status, ES_OK);
    ck_assert_int_eq(res[2].status, ES_EIDCLASH);
    ck_assert_int_eq(es_store_read_stream(s, st[0], 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 1);
    es_page_destroy(p);
    ck_assert_int_eq(es_store_read_stream(s, st[2], 0, 10, ES_FORWARD, &p, &err), ES_ENOTFOUND);
    free((char *)reqs[2].events[0].event_id);

    /* alone, too */
    ck_assert_int_eq(append(s, st[2], ES_EXPECT_NO_STREAM, &reuse, 1).status, ES_EIDCLASH);
    /* and the connection still works */
    ck_assert_int_eq(append(s, st[1], 0, &e, 1).status, ES_OK);
    es_store_close(s);
}
END_TEST

/* A retry is a duplicate only of exactly one earlier append. */
START_TEST(duplicate_means_exactly_one_append)
{
    es_store *s = open_store();
    char stream[64], x[ES_UUID_LEN + 1], y[ES_UUID_LEN + 1];
    es_new_event xy[2], yx[2];
    es_append_result r;

    th_unique(stream, sizeof stream, "exact");
    ck_assert(es_uuid_random(x) && es_uuid_random(y));
    xy[0] = ev(x, "T", "{}");
    xy[1] = ev(y, "T", "{}");
    yx[0] = xy[1];
    yx[1] = xy[0];
    /* [X] and [Y] as two appends, then retried as one [X, Y]: a clash */
    ck_assert_int_eq(append(s, stream, ES_EXPECT_NO_STREAM, &xy[0], 1).status, ES_OK);
    ck_assert_int_eq(append(s, stream, 0, &xy[1], 1).status, ES_OK);
    r = append(s, stream, ES_EXPECT_NO_STREAM, xy, 2);
    ck_assert_int_eq(r.status, ES_EIDCLASH);
    r = append(s, stream, ES_EXPECT_ANY, yx, 2);
    ck_assert_int_eq(r.status, ES_EIDCLASH);
    /* each single append again: duplicates with their own versions */
    r = append(s, stream, ES_EXPECT_ANY, &xy[1], 1);
    ck_assert_int_eq(r.status, ES_OK);
    ck_assert(r.duplicate);
    ck_assert_int_eq(r.first_version, 1);
    es_store_close(s);
}
END_TEST

typedef struct racer {
    const char *stream;
    es_new_event *evs;
    es_append_result res;
} racer;

static void *
race_append(void *arg)
{
    racer *r = arg;
    es_store *s = open_store();

    r->res = append(s, r->stream, ES_EXPECT_ANY, r->evs, 1);
    es_store_close(s);
    return NULL;
}

/* An identical "any" append that waits for the first one's stream row
 * answers duplicate, not clash. */
START_TEST(concurrent_identical_any_is_duplicate)
{
    es_store *s = open_store();
    char stream[64], id[ES_UUID_LEN + 1], events[200];
    es_new_event e;
    racer rc;
    pthread_t th;
    PGconn *c = PQconnectdb(th_conninfo());
    PGresult *res;
    const char *values[2];

    th_unique(stream, sizeof stream, "race");
    ck_assert(es_uuid_random(id));
    e = ev(id, "T", "{}");
    ck_assert_int_eq(append(s, stream, ES_EXPECT_NO_STREAM, &(es_new_event){NULL, "T", 1, "{}", NULL}, 1).status, ES_OK);
    /* the first attempt: written, not yet committed */
    snprintf(events, sizeof events, "[{\"event_id\":\"%s\",\"type\":\"T\",\"data\":{}}]", id);
    values[0] = stream;
    values[1] = events;
    PQclear(PQexec(c, "BEGIN"));
    res = PQexecParams(c, "SELECT status FROM es_append($1, -2, $2::jsonb)", 2, NULL, values,
                       NULL, NULL, 0);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "0");
    PQclear(res);
    /* the retry starts and waits for the stream row */
    rc = (racer){stream, &e, {0}};
    ck_assert_int_eq(pthread_create(&th, NULL, race_append, &rc), 0);
    usleep(300 * 1000);
    PQclear(PQexec(c, "COMMIT"));
    pthread_join(th, NULL);
    ck_assert_int_eq(rc.res.status, ES_OK);
    ck_assert(rc.res.duplicate);
    ck_assert_int_eq(rc.res.last_version, 1);
    PQfinish(c);
    es_store_close(s);
}
END_TEST

/* An atomic set of appends that was partly written before (the same ids,
 * another decision) writes nothing and says so. */
START_TEST(atomic_partial_duplicate_is_refused)
{
    es_store *s = open_store();
    char a[64], b[64], id0[ES_UUID_LEN + 1], id1[ES_UUID_LEN + 1];
    es_new_event rejected, made, other;
    es_append_req reqs[2];
    es_append_result res[2];
    size_t failed;
    es_page *p;
    es_error err;

    th_unique(a, sizeof a, "atom");
    th_unique(b, sizeof b, "atom");
    ck_assert(es_uuid_random(id0) && es_uuid_random(id1));
    rejected = ev(id0, "ReservationRejected", "{}");
    made = ev(id0, "ReservationMade", "{}");
    other = ev(id1, "StockReserved", "{}");
    ck_assert_int_eq(append(s, a, ES_EXPECT_NO_STREAM, &rejected, 1).status, ES_OK);
    /* same id, another type: not a retry */
    reqs[0] = (es_append_req){a, ES_EXPECT_ANY, &made, 1};
    reqs[1] = (es_append_req){b, ES_EXPECT_NO_STREAM, &other, 1};
    ck_assert_int_eq(es_store_append_atomic(s, reqs, 2, res, &failed), ES_EIDCLASH);
    ck_assert_int_eq(es_store_read_stream(s, b, 0, 10, ES_FORWARD, &p, &err), ES_ENOTFOUND);
    /* same id and type, but the other append is new: refused too */
    reqs[0] = (es_append_req){a, ES_EXPECT_ANY, &rejected, 1};
    ck_assert_int_eq(es_store_append_atomic(s, reqs, 2, res, &failed), ES_EIDCLASH);
    ck_assert_int_eq(es_store_read_stream(s, b, 0, 10, ES_FORWARD, &p, &err), ES_ENOTFOUND);
    /* and the connection is usable afterwards */
    ck_assert_int_eq(append(s, b, ES_EXPECT_NO_STREAM, &other, 1).status, ES_OK);
    es_store_close(s);
}
END_TEST

/* A retry whose expected version still matches is a duplicate and does
 * not disturb the batch it shares. */
START_TEST(matching_retry_in_a_batch_is_duplicate)
{
    es_store *s = open_store();
    char a[64], b[64], id[ES_UUID_LEN + 1];
    es_new_event x, y = ev(NULL, "T", "{}");
    es_append_req reqs[2];
    es_append_result res[2];

    th_unique(a, sizeof a, "rb");
    th_unique(b, sizeof b, "rb");
    ck_assert(es_uuid_random(id));
    x = ev(id, "T", "{}");
    ck_assert_int_eq(append(s, a, ES_EXPECT_NO_STREAM, &x, 1).status, ES_OK);
    reqs[0] = (es_append_req){a, 0, &x, 1};     /* version 0 is still current */
    reqs[1] = (es_append_req){b, ES_EXPECT_NO_STREAM, &y, 1};
    ck_assert_int_eq(es_store_append_many(s, reqs, 2, res), ES_OK);
    ck_assert_int_eq(res[0].status, ES_OK);
    ck_assert(res[0].duplicate);
    ck_assert_int_eq(res[0].last_version, 0);
    ck_assert_int_eq(res[1].status, ES_OK);
    ck_assert(!res[1].duplicate);
    es_store_close(s);
}
END_TEST

/*
 * A run of exact-version appends with the caller's ids (a command's) goes
 * in es_fast_exact, which does not probe for stored ids: a retry (its
 * stream moved past the version it names) still answers duplicate with
 * the first result, one whose id another stream holds still answers an
 * id clash, and the other appends of the batch are written.
 */
START_TEST(exact_appends_with_ids_in_a_batch)
{
    es_store *s = open_store();
    char st[4][64], ids[4][ES_UUID_LEN + 1];
    es_new_event evs[4], first = ev(NULL, "T", "{}");
    es_append_req reqs[4];
    es_append_result res[4], before;
    es_page *p;
    es_error err;

    for (int i = 0; i < 4; i++) {
        th_unique(st[i], sizeof st[i], "exid");
        ck_assert(es_uuid_random(ids[i]));
        evs[i] = ev(ids[i], "T", "{\"i\":1}");
        ck_assert_int_eq(append(s, st[i], ES_EXPECT_NO_STREAM, &first, 1).status, ES_OK);
    }
    /* st[1] got evs[1] at version 1 before: the batch retries it */
    before = append(s, st[1], 0, &evs[1], 1);
    ck_assert_int_eq(before.status, ES_OK);
    ck_assert(!before.duplicate);
    /* evs[3]'s id is stored in st[0] (at version 1 now, the batch
     * appends to st[0] at version 1): a clash in st[3] */
    ck_assert_int_eq(append(s, st[0], 0, &evs[3], 1).status, ES_OK);
    reqs[0] = (es_append_req){st[0], 1, &evs[0], 1};
    reqs[1] = (es_append_req){st[1], 0, &evs[1], 1};   /* the retry */
    reqs[2] = (es_append_req){st[2], 0, &evs[2], 1};
    reqs[3] = (es_append_req){st[3], 0, &evs[3], 1};   /* the clash */
    ck_assert_int_eq(es_store_append_many(s, reqs, 4, res), ES_OK);
    ck_assert_int_eq(res[0].status, ES_OK);
    ck_assert(!res[0].duplicate);
    ck_assert_int_eq(res[0].last_version, 2);
    ck_assert_int_eq(res[1].status, ES_OK);
    ck_assert(res[1].duplicate);
    ck_assert_int_eq(res[1].last_version, before.last_version);
    ck_assert(es_position_cmp(res[1].position, before.position) == 0);
    ck_assert_int_eq(res[2].status, ES_OK);
    ck_assert(!res[2].duplicate);
    ck_assert_int_eq(res[2].last_version, 1);
    ck_assert_int_eq(res[3].status, ES_EIDCLASH);
    /* nothing written twice, nothing written for the clash */
    ck_assert_int_eq(es_store_read_stream(s, st[1], 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 2);
    es_page_destroy(p);
    ck_assert_int_eq(es_store_read_stream(s, st[3], 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 1);
    es_page_destroy(p);
    /* the same batch again: every one written before answers duplicate */
    ck_assert_int_eq(es_store_append_many(s, reqs, 3, res), ES_OK);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(res[i].status, ES_OK);
        ck_assert(res[i].duplicate);
    }
    es_store_close(s);
}
END_TEST

/* Binary reads format times and ids as the server would. */
START_TEST(times_formatted_from_binary)
{
    static const char *in[] = {"2024-02-29 23:59:59.000001+00", "1999-12-31 23:59:59.5+00",
                               "2000-01-01 00:00:00+00", "2100-03-01 12:34:56.789+00"};
    static const char *want[] = {"2024-02-29T23:59:59.000001Z", "1999-12-31T23:59:59.500000Z",
                                 "2000-01-01T00:00:00.000000Z", "2100-03-01T12:34:56.789000Z"};
    es_store *s = open_store();
    PGconn *c = PQconnectdb(th_conninfo());
    char stream[64], sql[512];
    es_page *p;
    es_error err;

    th_unique(stream, sizeof stream, "times");
    for (int i = 0; i < 4; i++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO es_events (stream_id, category, version, event_id, type, data, recorded_at) "
                 "VALUES ('%s', 'times', %d, gen_random_uuid(), 'T', '{}', '%s')", stream, i, in[i]);
        PQclear(PQexec(c, sql));
    }
    snprintf(sql, sizeof sql, "INSERT INTO es_streams VALUES ('%s', 3)", stream);
    PQclear(PQexec(c, sql));
    ck_assert_int_eq(es_store_read_stream(s, stream, 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_uint_eq(p->count, 4);
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(p->events[i].recorded_at, want[i]);
        ck_assert(es_uuid_valid(p->events[i].event_id));
        ck_assert_int_eq(p->events[i].version, i);
    }
    es_page_destroy(p);
    PQfinish(c);
    es_store_close(s);
}
END_TEST

/* ---- lock order --------------------------------------------------------- */

static void
sql_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);

    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
                  "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

/* Waits until n sessions named app wait for a lock. */
static void
wait_lock_waiters(PGconn *c, const char *app, int n)
{
    char sql[256];

    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                              "'%s' AND wait_event_type = 'Lock'", app);
    for (int tries = 0; tries < 6000; tries++) {
        PGresult *r = PQexec(c, sql);
        int got = PQresultStatus(r) == PGRES_TUPLES_OK ? atoi(PQgetvalue(r, 0, 0)) : -1;

        PQclear(r);
        if (got >= n)
            return;
        usleep(10 * 1000);
    }
    ck_abort_msg("%d sessions of %s never waited for a lock", n, app);
}

/* A batch of appends on a store of its own, in a thread. */
typedef struct many_job {
    es_store *s;
    es_append_req reqs[3];
    es_append_result res[3];
    size_t n;
} many_job;

static void *
run_many(void *arg)
{
    many_job *j = arg;

    es_store_append_many(j->s, j->reqs, j->n, j->res);
    return NULL;
}

static es_store *
open_named(const char *app)
{
    char conninfo[512];
    es_store *s = NULL;
    es_error err;

    snprintf(conninfo, sizeof conninfo, "%s application_name=%s", th_conninfo(), app);
    ck_assert_msg(es_store_open(&s, conninfo, &err) == ES_OK, "open: %s", err.message);
    return s;
}

/*
 * Two batches touch streams a and b in opposite orders: one writes a (an
 * exact version, in the batch statement) and then b ("any", a statement
 * of its own), the other b and then a.  Each first waits for a row held
 * by another session (c, d), so both are in the middle when it lets go.
 * Locks taken in one global order make one wait for the other instead of
 * a deadlock: every append is answered written or a version conflict,
 * never "busy" or "unavailable".
 */
START_TEST(opposite_orders_do_not_deadlock)
{
    static many_job j1, j2;
    char app[40], names[4][64], sql[256];
    es_new_event e = ev(NULL, "T", "{}");
    es_store *s = open_store();
    PGconn *l = PQconnectdb(th_conninfo()), *q = PQconnectdb(th_conninfo());
    pthread_t t1, t2;

    th_unique(app, sizeof app, "order");
    for (int i = 0; i < 4; i++) {
        snprintf(names[i], sizeof names[i], "%s-%c", app, 'a' + i);
        ck_assert_int_eq(append(s, names[i], ES_EXPECT_NO_STREAM, &e, 1).status, ES_OK);
    }
    sql_ok(l, "BEGIN");
    for (int i = 2; i < 4; i++) {
        snprintf(sql, sizeof sql, "SELECT 1 FROM es_streams WHERE stream_id = '%s' FOR UPDATE",
                 names[i]);
        sql_ok(l, sql);
    }
    j1 = (many_job){open_named(app), {{names[0], 0, &e, 1}, {names[2], 0, &e, 1},
                                      {names[1], ES_EXPECT_ANY, &e, 1}}, {{0}}, 3};
    j2 = (many_job){open_named(app), {{names[1], 0, &e, 1}, {names[3], 0, &e, 1},
                                      {names[0], ES_EXPECT_ANY, &e, 1}}, {{0}}, 3};
    ck_assert_int_eq(pthread_create(&t1, NULL, run_many, &j1), 0);
    ck_assert_int_eq(pthread_create(&t2, NULL, run_many, &j2), 0);
    wait_lock_waiters(q, app, 2);
    sql_ok(l, "COMMIT");
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(j1.res[i].status == ES_OK || j1.res[i].status == ES_ECONFLICT,
                      "first batch, append %d: %s", i, j1.res[i].err.message);
        ck_assert_msg(j2.res[i].status == ES_OK || j2.res[i].status == ES_ECONFLICT,
                      "second batch, append %d: %s", i, j2.res[i].err.message);
    }
    /* Neither was a deadlock's victim, retried append by append: what
     * each wrote, it wrote in one transaction. */
    for (int b = 0; b < 2; b++) {
        const many_job *j = b == 0 ? &j1 : &j2;
        uint64_t txid = 0;

        for (int i = 0; i < 3; i++) {
            if (j->res[i].status != ES_OK)
                continue;
            ck_assert_msg(txid == 0 || j->res[i].position.txid == txid,
                          "batch %d was rolled back and retried: a deadlock", b + 1);
            txid = j->res[i].position.txid;
        }
    }
    es_store_close(j1.s);
    es_store_close(j2.s);
    es_store_close(s);
    PQfinish(l);
    PQfinish(q);
}
END_TEST

/*
 * A deadlock with a session outside the store (it holds b, the batch holds
 * a and waits for b, then it asks for a) rolls the batch back; its appends
 * are retried one by one and written, and no client sees the deadlock.
 */
START_TEST(deadlock_victim_is_retried)
{
    static many_job j;
    char app[40], names[2][64], sql[256];
    es_new_event e = ev(NULL, "T", "{}");
    es_store *s = open_store();
    PGconn *l = PQconnectdb(th_conninfo()), *q = PQconnectdb(th_conninfo());
    pthread_t t;

    th_unique(app, sizeof app, "victim");
    for (int i = 0; i < 2; i++) {
        snprintf(names[i], sizeof names[i], "%s-%c", app, 'a' + i);
        ck_assert_int_eq(append(s, names[i], ES_EXPECT_NO_STREAM, &e, 1).status, ES_OK);
    }
    sql_ok(l, "BEGIN");
    snprintf(sql, sizeof sql, "SELECT 1 FROM es_streams WHERE stream_id = '%s' FOR UPDATE",
             names[1]);
    sql_ok(l, sql);
    j = (many_job){open_named(app), {{names[0], 0, &e, 1}, {names[1], 0, &e, 1}}, {{0}}, 2};
    ck_assert_int_eq(pthread_create(&t, NULL, run_many, &j), 0);
    wait_lock_waiters(q, app, 1);
    /* the batch waited first: its deadlock check runs first and ends it */
    snprintf(sql, sizeof sql, "SELECT 1 FROM es_streams WHERE stream_id = '%s' FOR UPDATE",
             names[0]);
    sql_ok(l, sql);
    sql_ok(l, "ROLLBACK");
    pthread_join(t, NULL);
    for (int i = 0; i < 2; i++) {
        ck_assert_msg(j.res[i].status == ES_OK, "append %d: %s", i, j.res[i].err.message);
        ck_assert_int_eq(j.res[i].last_version, 1);
    }
    es_store_close(j.s);
    es_store_close(s);
    PQfinish(l);
    PQfinish(q);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, expected_versions);
    tcase_add_test(tc, idempotent_retry);
    tcase_add_test(tc, read_stream_both_ways);
    tcase_add_test(tc, snapshot_and_the_events_after_it);
    tcase_add_test(tc, statements_prepared_once_per_connection);
    tcase_add_test(tc, feed_and_category);
    tcase_add_test(tc, validation_writes_nothing);
    tcase_add_test(tc, group_commit_isolates_failures);
    tcase_add_test(tc, batch_of_multi_event_appends);
    tcase_add_test(tc, batch_of_exact_appends);
    tcase_add_test(tc, upcast_on_read);
    tcase_add_test(tc, unavailable_then_reconnects);
    tcase_add_test(tc, a_standby_refuses_then_the_next_call_reconnects);
    tcase_add_test(tc, killed_client_leaves_nothing_partial);
    tcase_add_test(tc, checker_agrees_with_jsonb);
    tcase_add_test(tc, event_numbers_are_readable);
    tcase_add_test(tc, raised_error_fails_only_its_append);
    tcase_add_test(tc, duplicate_means_exactly_one_append);
    tcase_add_test(tc, concurrent_identical_any_is_duplicate);
    tcase_add_test(tc, atomic_partial_duplicate_is_refused);
    tcase_add_test(tc, matching_retry_in_a_batch_is_duplicate);
    tcase_add_test(tc, exact_appends_with_ids_in_a_batch);
    tcase_add_test(tc, times_formatted_from_binary);
    tcase_add_test(tc, opposite_orders_do_not_deadlock);
    tcase_add_test(tc, deadlock_victim_is_retried);
    suite_add_tcase(s, tc);
    return th_run(s);
}
