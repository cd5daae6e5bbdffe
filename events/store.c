/*
 * The event store client (see store.h and docs/ARCHITECTURE.md).
 *
 * Every append goes through the SQL function es_append (migrations/), one
 * statement per append, which checks the expected version with a
 * conditional update of the stream's row and answers a status instead of
 * raising.  A batch of appends is sent in libpq pipeline mode between
 * BEGIN and COMMIT: one round trip and one commit (one WAL flush) for all
 * of them.  If the batch fails as a whole (an error no status covers, such
 * as an event id used in another stream), it was rolled back and each
 * append is retried on its own, so one bad append never fails the others.
 *
 * Reads return pages whose strings point into the PGresult, so reading
 * the feed copies nothing but the row pointers.
 */
#include "store.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "store_int.h"

/* Appends sent in one pipeline at most: keeps the replies well inside the
 * socket buffers, so a blocking pipeline cannot deadlock. */
#define BATCH_MAX 256

struct es_store {
    PGconn *conn;
    char *conninfo;
    bool ready;                 /* connected and statements prepared */
    size_t max_event_size;
    const es_upcasters *upcasters;
    es_buf params;              /* reused for the events parameter */
    es_buf batch[7];            /* reused for es_fast_batch's arrays */
};

typedef struct page_storage {
    PGresult *res;
    char (*times)[ES_TIME_TEXT_MAX];    /* recorded_at of each event, RFC 3339 */
    char **owned;               /* upcast data, freed with the page */
    size_t nowned;
} page_storage;

/* recorded_at comes in the session's ISO style in UTC (see ensure_ready)
 * and is put in RFC 3339 form by the client: to_char on the server cost a
 * quarter of a whole-log read. */
#define EVENT_COLUMNS                                                       \
    "stream_id, version, event_id, type, schema_version, data, "            \
    "metadata, recorded_at, transaction_id, global_position"

#define HORIZON "pg_snapshot_xmin(pg_current_snapshot())"

#define INSERT_EVENTS                                                       \
    "INSERT INTO es_events (stream_id, category, version, event_id, type, " \
    "schema_version, data, metadata, append_index, append_size) "
#define EVENT_FIELDS                                                        \
    "(t.e->>'event_id')::uuid, t.e->>'type', "                              \
    "coalesce((t.e->>'schema_version')::int, 1), t.e->'data', "             \
    "coalesce(t.e->'metadata', '{}'), t.o - 1, "
/* A retry (its first event id stored) writes nothing on a fast path and
 * goes through es_append, which answers duplicate; without this guard it
 * would raise unique_violation and roll back the whole batch. */
#define NOT_STORED(id) "NOT EXISTS (SELECT 1 FROM es_events WHERE event_id = " id ") "

#define FAST_RESULT                                                         \
    "SELECT max(version), max(global_position), pg_current_xact_id(), "     \
    "count(*) FROM ins"

static const struct {
    const char *name;
    const char *sql;
} statements[] = {
    {"es_begin", "BEGIN"},
    {"es_commit", "COMMIT"},
    {"es_append",
     "SELECT status, first_version, last_version, txid, last_position, "
     "actual_version FROM es_append($1, $2::bigint, $3::jsonb)"},
    /* The fast paths: one statement, no function call, for an append with
     * an exact or "no stream" expected version.  They write nothing and
     * answer count 0 when the version does not match; the append then
     * goes through es_append, which tells a conflict from a retry. */
    {"es_fast1_exact",
     "WITH s AS (UPDATE es_streams SET version = version + 1 "
     "WHERE stream_id = $1 AND version = $2::bigint AND " NOT_STORED("$3::uuid")
     "RETURNING version), "
     "ins AS (" INSERT_EVENTS "SELECT $1, split_part($1, '-', 1), s.version, $3::uuid, $4, "
     "$5::int, $6::jsonb, coalesce($7::jsonb, '{}'), 0, 1 FROM s "
     "RETURNING version, global_position) "
     FAST_RESULT},
    {"es_fast1_new",
     "WITH s AS (INSERT INTO es_streams (stream_id, version) SELECT $1, 0 "
     "WHERE " NOT_STORED("$2::uuid") "ON CONFLICT (stream_id) DO NOTHING RETURNING version), "
     "ins AS (" INSERT_EVENTS "SELECT $1, split_part($1, '-', 1), s.version, $2::uuid, $3, "
     "$4::int, $5::jsonb, coalesce($6::jsonb, '{}'), 0, 1 FROM s "
     "RETURNING version, global_position) "
     FAST_RESULT},
    {"es_fastn_exact",
     "WITH p AS (SELECT jsonb_array_length($3::jsonb) AS n), "
     "s AS (UPDATE es_streams SET version = version + p.n FROM p "
     "WHERE stream_id = $1 AND version = $2::bigint AND "
     NOT_STORED("($3::jsonb->0->>'event_id')::uuid") "RETURNING version), "
     "ins AS (" INSERT_EVENTS "SELECT $1, split_part($1, '-', 1), "
     "s.version - p.n + t.o, " EVENT_FIELDS
     "p.n FROM s, p, jsonb_array_elements($3::jsonb) WITH ORDINALITY AS t(e, o) "
     "RETURNING version, global_position) " FAST_RESULT},
    {"es_fastn_new",
     "WITH p AS (SELECT jsonb_array_length($2::jsonb) AS n), "
     "s AS (INSERT INTO es_streams (stream_id, version) "
     "SELECT $1, p.n - 1 FROM p "
     "WHERE " NOT_STORED("($2::jsonb->0->>'event_id')::uuid")
     "ON CONFLICT (stream_id) DO NOTHING RETURNING version), "
     "ins AS (" INSERT_EVENTS "SELECT $1, split_part($1, '-', 1), "
     "s.version - p.n + t.o, " EVENT_FIELDS
     "p.n FROM s, p, jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(e, o) "
     "RETURNING version, global_position) " FAST_RESULT},
    {"es_stream_fwd",
     "SELECT s.version, e.* FROM es_streams s LEFT JOIN LATERAL ("
     "SELECT " EVENT_COLUMNS " FROM es_events WHERE stream_id = s.stream_id "
     "AND version >= $2 ORDER BY version LIMIT $3) e ON true "
     "WHERE s.stream_id = $1"},
    {"es_stream_bwd",
     "SELECT s.version, e.* FROM es_streams s LEFT JOIN LATERAL ("
     "SELECT " EVENT_COLUMNS " FROM es_events WHERE stream_id = s.stream_id "
     "AND version <= (CASE WHEN $2::bigint < 0 THEN s.version ELSE $2 END) "
     "ORDER BY version DESC LIMIT $3) e ON true WHERE s.stream_id = $1"},
    {"es_feed",
     "SELECT " EVENT_COLUMNS " FROM es_events "
     "WHERE (transaction_id, global_position) > ($1::xid8, $2::bigint) "
     "AND transaction_id < " HORIZON " "
     "ORDER BY transaction_id, global_position LIMIT $3"},
    {"es_category",
     "SELECT " EVENT_COLUMNS " FROM es_events "
     "WHERE category = $4 "
     "AND (transaction_id, global_position) > ($1::xid8, $2::bigint) "
     "AND transaction_id < " HORIZON " "
     "ORDER BY transaction_id, global_position LIMIT $3"},
    /* Many one-event appends to distinct streams, exact or "no stream",
     * in one statement: one executor run for the whole group instead of
     * one per append.  Answers a row per append written; the others found
     * another version and go through es_append. */
    {"es_fast_batch",
     "WITH req AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], "
     "$5::int[]) WITH ORDINALITY AS r(s, x, id, type, sv, ord)), "
     "upd AS (UPDATE es_streams v SET version = v.version + 1 FROM req r "
     "WHERE r.x >= 0 AND v.stream_id = r.s AND v.version = r.x AND " NOT_STORED("r.id")
     "RETURNING r.ord, v.version), "
     "ins AS (INSERT INTO es_streams AS v (stream_id, version) "
     "SELECT r.s, 0 FROM req r WHERE r.x = -1 AND " NOT_STORED("r.id") "ORDER BY r.s "
     "ON CONFLICT (stream_id) DO NOTHING RETURNING v.stream_id, v.version), "
     "ok AS (SELECT ord, version FROM upd UNION ALL "
     "SELECT r.ord, i.version FROM ins i JOIN req r ON r.s = i.stream_id AND r.x = -1), "
     /* each array taken apart once: "$6 -> i" per row re-read the whole
      * parameter under a generic plan, quadratic in the batch */
     "d AS (SELECT o, j FROM jsonb_array_elements($6::jsonb) WITH ORDINALITY AS t(j, o)), "
     "m AS (SELECT o, j FROM jsonb_array_elements($7::jsonb) WITH ORDINALITY AS t(j, o)), "
     "ev AS (" INSERT_EVENTS "SELECT r.s, split_part(r.s, '-', 1), ok.version, r.id, r.type, "
     "r.sv, d.j, coalesce(nullif(m.j, 'null'::jsonb), '{}'), 0, 1 "
     "FROM ok JOIN req r USING (ord) JOIN d ON d.o = r.ord JOIN m ON m.o = r.ord "
     "RETURNING stream_id, version, global_position) "
     "SELECT r.ord, ev.version, ev.global_position, pg_current_xact_id() "
     "FROM ev JOIN req r ON r.s = ev.stream_id"},
    {"es_event_by_id",
     "SELECT " EVENT_COLUMNS " FROM es_events WHERE event_id = $1::uuid"},
    {"es_head",
     "SELECT transaction_id, global_position FROM es_events "
     "WHERE transaction_id < " HORIZON " "
     "ORDER BY transaction_id DESC, global_position DESC LIMIT 1"},
};

/* es_append's status column, see migrations/001_event_store.sql. */
enum { APPEND_WRITTEN = 0, APPEND_DUPLICATE = 1, APPEND_CONFLICT = 2, APPEND_CLASH = 3 };

/* Maps a failed result (or a dead connection) to a status. */
static es_status
pg_failure(es_store *s, const PGresult *r, const char *what, es_error *err)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorMessage(r) : "";
    char text[256];
    size_t n;

    if (msg == NULL || msg[0] == '\0')
        msg = PQerrorMessage(s->conn);
    snprintf(text, sizeof text, "%s", msg);
    n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' '))
        text[--n] = '\0';

    if (PQstatus(s->conn) != CONNECTION_OK || state == NULL ||
        strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strncmp(state, "53", 2) == 0) {
        s->ready = false;
        return es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                            "could not %s: %s", what, text);
    }
    /* Transient: deadlock, serialization failure, timeouts. Retry later. */
    if (strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0 ||
        strcmp(state, "57014") == 0 || strcmp(state, "55P03") == 0)
        return es_error_set(err, ES_EUNAVAILABLE, "store_busy", NULL,
                            "could not %s: %s", what, text);
    if (strcmp(state, "23505") == 0)
        return es_error_set(err, ES_EIDCLASH, "event_id_clash", NULL,
                            "could not %s: an event id is already stored", what);
    if (strncmp(state, "22", 2) == 0)
        return es_error_set(err, ES_EINVALID, "invalid_input", NULL,
                            "could not %s: %s", what, text);
    return es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not %s: %s", what, text);
}

static es_status
ensure_ready(es_store *s, es_error *err)
{
    PGresult *r;
    size_t i;

    if (s->ready && PQstatus(s->conn) == CONNECTION_OK)
        return ES_OK;
    s->ready = false;
    if (s->conn != NULL)
        PQfinish(s->conn);
    s->conn = PQconnectdb(s->conninfo);
    if (s->conn == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a connection");
    if (PQstatus(s->conn) != CONNECTION_OK) {
        char text[256];
        snprintf(text, sizeof text, "%s", PQerrorMessage(s->conn));
        text[strcspn(text, "\n")] = '\0';
        return es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                            "could not connect to the event store: %s", text);
    }
    /*
     * Every statement of a store session has an index to use; plans are
     * cached, and one made while es_events was empty (a new store, before
     * autovacuum's first ANALYZE) would otherwise keep a sequential scan
     * as the table grows, making each append cost the whole table.
     */
    r = PQexec(s->conn, "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET enable_seqscan = off");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        es_status st = pg_failure(s, r, "set up the store's session", err);
        PQclear(r);
        return st;
    }
    PQclear(r);
    for (i = 0; i < sizeof statements / sizeof statements[0]; i++) {
        es_status st;

        r = PQprepare(s->conn, statements[i].name, statements[i].sql, 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            st = pg_failure(s, r, "prepare the store's statements", err);
            PQclear(r);
            return st;
        }
        PQclear(r);
    }
    s->ready = true;
    return ES_OK;
}

PGconn *
es__store_conn(es_store *s, es_error *err)
{
    return ensure_ready(s, err) == ES_OK ? s->conn : NULL;
}

es_status
es__store_failure(es_store *s, const PGresult *r, const char *what, es_error *err)
{
    return pg_failure(s, r, what, err);
}

es_status
es_store_create(es_store **out, const char *conninfo, es_error *err)
{
    es_store *s;

    *out = NULL;
    es_error_clear(err);
    if ((s = calloc(1, sizeof *s)) == NULL || (s->conninfo = strdup(conninfo)) == NULL) {
        free(s);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a store");
    }
    s->max_event_size = ES_EVENT_SIZE_MAX_DEFAULT;
    *out = s;
    return ES_OK;
}

es_status
es_store_open(es_store **out, const char *conninfo, es_error *err)
{
    es_status st;

    if ((st = es_store_create(out, conninfo, err)) != ES_OK)
        return st;
    if ((st = ensure_ready(*out, err)) != ES_OK) {
        es_store_close(*out);
        *out = NULL;
    }
    return st;
}

void
es_store_close(es_store *s)
{
    if (s == NULL)
        return;
    if (s->conn)
        PQfinish(s->conn);
    es_buf_free(&s->params);
    for (size_t i = 0; i < sizeof s->batch / sizeof s->batch[0]; i++)
        es_buf_free(&s->batch[i]);
    free(s->conninfo);
    free(s);
}

void
es_store_set_max_event_size(es_store *s, size_t bytes)
{
    s->max_event_size = bytes;
}

void
es_store_set_upcasters(es_store *s, const es_upcasters *u)
{
    s->upcasters = u;
}

/* ---- appends ---------------------------------------------------------- */

/* A result starts as "did not run": whatever is not answered later (the
 * connection went first) says so. */
static void
result_reset(es_append_result *res)
{
    res->duplicate = false;
    res->first_version = res->last_version = -1;
    res->position.txid = 0;
    res->position.gpos = 0;
    es_error_clear(&res->err);
    res->status = es_error_set(&res->err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                               "the append was not run: the store connection was lost");
}

static es_status
check_request(const es_store *s, const es_append_req *req, es_error *err)
{
    size_t total = 0;
    es_status st;

    if ((st = es_stream_id_check(req->stream, "stream", err)) != ES_OK)
        return st;
    if (req->expected < ES_EXPECT_EXISTS)
        return es_error_set(err, ES_EINVALID, "expected_version_invalid",
                            "expected_version", "expected version %" PRId64 " is not valid",
                            req->expected);
    if (req->count == 0 || req->events == NULL)
        return es_error_set(err, ES_EINVALID, "events_empty", "events",
                            "an append needs at least one event");
    if (req->count > ES_APPEND_EVENTS_MAX)
        return es_error_set(err, ES_ETOOLARGE, "too_many_events", "events",
                            "an append holds at most %d events, this one has %zu",
                            ES_APPEND_EVENTS_MAX, req->count);
    for (size_t i = 0; i < req->count; i++) {
        const es_new_event *e = &req->events[i];

        if ((st = es_new_event_check(e, i, s->max_event_size, err)) != ES_OK)
            return st;
        total += strlen(e->type) + strlen(e->data) + (e->metadata ? strlen(e->metadata) : 0);
    }
    if (total > ES_APPEND_SIZE_MAX)
        return es_error_set(err, ES_ETOOLARGE, "append_too_large", "events",
                            "the events of one append are %zu bytes, the limit is %d",
                            total, ES_APPEND_SIZE_MAX);
    return ES_OK;
}

/*
 * One append of a batch.  The events' ids are fixed once here, so the fast
 * statement and a later es_append of the same append write the same ids.
 */
typedef struct slot {
    const es_append_req *req;
    es_append_result *res;
    size_t index;               /* in the caller's array: keeps its order */
    size_t json;                /* offset of the jsonb events in s->params,
                                   or NO_JSON until built */
    bool full;                  /* must go through es_append */
    bool retry;                 /* the fast statement wrote nothing */
    bool batched;               /* sent in es_fast_batch */
    char id[ES_UUID_LEN + 1];   /* with one event: its id */
    char expected[24];
    char schema[12];
} slot;

#define NO_JSON ((size_t)-1)

/* Fixes the ids of a one-event append; the jsonb form is built on demand. */
static es_status
slot_init(slot *sl, const es_append_req *req, es_append_result *res, size_t index,
          es_error *err)
{
    const es_new_event *ev = &req->events[0];

    sl->req = req;
    sl->res = res;
    sl->index = index;
    sl->json = NO_JSON;
    sl->retry = false;
    sl->full = req->expected == ES_EXPECT_ANY || req->expected == ES_EXPECT_EXISTS;
    snprintf(sl->expected, sizeof sl->expected, "%" PRId64, req->expected);
    snprintf(sl->schema, sizeof sl->schema, "%d", ev->schema_version > 0 ? ev->schema_version : 1);
    sl->id[0] = '\0';
    if (req->count == 1) {
        if (ev->event_id != NULL && ev->event_id[0] != '\0')
            snprintf(sl->id, sizeof sl->id, "%s", ev->event_id);
        else if (!es_uuid_v7(sl->id))
            return es_error_set(err, ES_EINTERNAL, NULL, NULL,
                                "could not read random bytes for an event id");
    }
    return ES_OK;
}

/* Builds the slot's events as the jsonb array es_append takes, once. */
static es_status
slot_json(es_store *s, slot *sl, es_error *err)
{
    const es_append_req *req = sl->req;
    es_buf *b = &s->params;
    size_t off = b->len;

    if (sl->json != NO_JSON)
        return ES_OK;
    for (size_t i = 0; i < req->count; i++) {
        const es_new_event *ev = &req->events[i];
        char id[ES_UUID_LEN + 1];

        if (req->count == 1) {
            snprintf(id, sizeof id, "%s", sl->id);
        } else if (ev->event_id != NULL && ev->event_id[0] != '\0') {
            snprintf(id, sizeof id, "%s", ev->event_id);
        } else if (!es_uuid_v7(id)) {
            return es_error_set(err, ES_EINTERNAL, NULL, NULL,
                                "could not read random bytes for an event id");
        }
        es_buf_puts(b, i == 0 ? "[{\"event_id\":\"" : ",{\"event_id\":\"");
        es_buf_puts(b, id);
        es_buf_puts(b, "\",\"type\":");
        es_buf_json_string(b, ev->type);
        es_buf_printf(b, ",\"schema_version\":%d,\"data\":",
                      ev->schema_version > 0 ? ev->schema_version : 1);
        es_buf_puts(b, ev->data);
        if (ev->metadata != NULL) {
            es_buf_puts(b, ",\"metadata\":");
            es_buf_puts(b, ev->metadata);
        }
        es_buf_puts(b, "}");
    }
    es_buf_append(b, "]", 2);       /* with the NUL: parameters are C strings */
    if (es_buf_failed(b)) {
        /* keep what earlier slots built; this append fails alone */
        b->len = off;
        b->failed = false;
        if (b->data)
            b->data[off] = '\0';
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not build an append");
    }
    sl->json = off;
    return ES_OK;
}

static int64_t
get_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? -1 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static uint64_t
get_u64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoull(PQgetvalue(r, row, col), NULL, 10);
}

/* Fills the slot's result from one row of es_append. */
static void
read_full_row(const PGresult *r, slot *sl)
{
    const es_append_req *req = sl->req;
    es_append_result *res = sl->res;
    int code = (int)get_i64(r, 0, 0);
    int64_t actual = get_i64(r, 0, 5);

    switch (code) {
    case APPEND_WRITTEN:
    case APPEND_DUPLICATE:
        es_error_clear(&res->err);
        res->status = ES_OK;
        res->duplicate = code == APPEND_DUPLICATE;
        res->first_version = get_i64(r, 0, 1);
        res->last_version = get_i64(r, 0, 2);
        res->position.txid = get_u64(r, 0, 3);
        res->position.gpos = get_i64(r, 0, 4);
        break;
    case APPEND_CONFLICT:
        res->status = es_error_set(&res->err, ES_ECONFLICT, "version_conflict",
                                   "expected_version",
                                   "could not append to stream \"%s\": expected version %"
                                   PRId64 ", found %" PRId64, req->stream, req->expected,
                                   actual);
        res->err.actual_version = actual;
        break;
    default:
        res->status = es_error_set(&res->err, ES_EIDCLASH, "event_id_clash", "events",
                                   "could not append to stream \"%s\": some of its event ids "
                                   "were written by a different append", req->stream);
        res->err.actual_version = actual;
        break;
    }
}

/* Fills the slot's result from a fast statement's row, or marks it for
 * es_append when the statement wrote nothing. */
static void
read_fast_row(const PGresult *r, slot *sl)
{
    es_append_result *res = sl->res;

    if (get_i64(r, 0, 3) <= 0) {
        sl->full = true;
        sl->retry = true;
        return;
    }
    es_error_clear(&res->err);
    res->status = ES_OK;
    res->duplicate = false;
    res->last_version = get_i64(r, 0, 0);
    res->first_version = res->last_version - (int64_t)sl->req->count + 1;
    res->position.gpos = get_i64(r, 0, 1);
    res->position.txid = get_u64(r, 0, 2);
}

/* The statement and parameters that carry the slot. */
static const char *
slot_statement(es_store *s, slot *sl, const char **values, int *nparams)
{
    const es_append_req *req = sl->req;
    const es_new_event *ev = &req->events[0];
    bool exact = req->expected >= 0;
    int n = 0;

    values[n++] = req->stream;
    if (sl->full || exact)
        values[n++] = sl->expected;
    if (sl->full || req->count > 1) {
        values[n++] = s->params.data + sl->json;
        *nparams = n;
        return sl->full ? "es_append" : exact ? "es_fastn_exact" : "es_fastn_new";
    }
    values[n++] = sl->id;
    values[n++] = ev->type;
    values[n++] = sl->schema;
    values[n++] = ev->data;
    values[n++] = ev->metadata;         /* NULL: SQL NULL, stored as {} */
    *nparams = n;
    return exact ? "es_fast1_exact" : "es_fast1_new";
}

static void
read_slot_row(const PGresult *r, slot *sl, bool full)
{
    if (full)
        read_full_row(r, sl);
    else
        read_fast_row(r, sl);
}

/* Runs one append in its own transaction, through es_append. */
static es_status
append_one(es_store *s, slot *sl)
{
    const char *values[7], *stmt;
    int nparams = 0;
    PGresult *r;

    result_reset(sl->res);
    sl->full = true;
    sl->retry = false;
    if (slot_json(s, sl, &sl->res->err) != ES_OK)
        return sl->res->status = sl->res->err.status;
    stmt = slot_statement(s, sl, values, &nparams);
    for (int attempt = 0; attempt < 2; attempt++) {
        const char *state;

        r = PQexecPrepared(s->conn, stmt, nparams, values, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            read_full_row(r, sl);
            PQclear(r);
            break;
        }
        sl->res->status = pg_failure(s, r, "append", &sl->res->err);
        state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        /* unique_violation: an identical append committed while this one
         * waited for the stream row ("any"/"exists" wait there after the
         * probe).  Once more, and the probe sees it. */
        if (attempt == 0 && state != NULL && strcmp(state, "23505") == 0) {
            PQclear(r);
            result_reset(sl->res);
            continue;
        }
        PQclear(r);
        break;
    }
    return sl->res->status;
}

/* Stream order, then the caller's order: batches lock stream rows in one
 * global order, so two concurrent batches cannot deadlock on them. */
static int
cmp_slots(const void *a, const void *b)
{
    const slot *x = a, *y = b;
    int c = strcmp(x->req->stream, y->req->stream);

    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/*
 * Marks the slots es_fast_batch takes: one event, exact or "no stream",
 * and the first of its stream (slots are sorted by stream, so a later
 * append to the same stream runs after the batch and sees its version).
 * Returns how many.
 */
static size_t
mark_batch(slot *slots, size_t n)
{
    size_t count = 0;

    for (size_t i = 0; i < n; i++) {
        slots[i].batched = !slots[i].full && slots[i].req->count == 1 &&
                           (i == 0 || strcmp(slots[i - 1].req->stream, slots[i].req->stream) != 0);
        /* two appends naming one event id would make the statement raise */
        for (size_t j = 0; j < i && slots[i].batched; j++)
            if (slots[j].batched && strcmp(slots[j].id, slots[i].id) == 0)
                slots[i].batched = false;
        count += slots[i].batched;
    }
    return count;
}

/* Appends s as an element of a text[] literal. */
static void
array_text(es_buf *b, const char *s)
{
    const char *run = s;

    es_buf_append(b, b->len > 1 ? ",\"" : "\"", b->len > 1 ? 2 : 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            es_buf_append(b, run, (size_t)(s - run));
            es_buf_append(b, "\\", 1);
            run = s;
        }
    }
    es_buf_append(b, run, (size_t)(s - run));
    es_buf_append(b, "\"", 1);
}

/* Builds es_fast_batch's seven parameters from the batched slots. */
static bool
build_batch(es_store *s, const slot *slots, size_t n, const char **values)
{
    es_buf *b = s->batch;
    size_t i;
    int k;

    for (k = 0; k < 7; k++) {
        es_buf_reset(&b[k]);
        es_buf_puts(&b[k], k < 5 ? "{" : "[");
    }
    for (i = 0; i < n; i++) {
        const es_new_event *ev;
        bool first = b[1].len == 1;

        if (!slots[i].batched)
            continue;
        ev = &slots[i].req->events[0];
        array_text(&b[0], slots[i].req->stream);
        es_buf_printf(&b[1], "%s%s", first ? "" : ",", slots[i].expected);
        es_buf_printf(&b[2], "%s%s", first ? "" : ",", slots[i].id);
        array_text(&b[3], ev->type);
        es_buf_printf(&b[4], "%s%s", first ? "" : ",", slots[i].schema);
        es_buf_puts(&b[5], first ? "" : ",");
        es_buf_puts(&b[5], ev->data);
        es_buf_puts(&b[6], first ? "" : ",");
        es_buf_puts(&b[6], ev->metadata ? ev->metadata : "null");
    }
    for (k = 0; k < 7; k++) {
        es_buf_puts(&b[k], k < 5 ? "}" : "]");
        if (es_buf_failed(&b[k]))
            return false;
        values[k] = b[k].data;
    }
    return true;
}

/* Answers the batched slots from es_fast_batch's rows (ord is the place
 * among the batched slots, from 1); the others are marked for es_append. */
static void
read_batch_rows(const PGresult *r, slot *slots, size_t n)
{
    slot *order[BATCH_MAX];
    size_t m = 0, i;

    for (i = 0; i < n; i++) {
        if (slots[i].batched) {
            order[m++] = &slots[i];
            slots[i].full = true;       /* unless a row says it was written */
            slots[i].retry = true;
        }
    }
    for (int row = 0; row < PQntuples(r); row++) {
        int64_t ord = get_i64(r, row, 0);
        slot *sl;

        if (ord < 1 || (size_t)ord > m)
            continue;
        sl = order[ord - 1];
        sl->full = false;
        sl->retry = false;
        es_error_clear(&sl->res->err);
        sl->res->status = ES_OK;
        sl->res->duplicate = false;
        sl->res->first_version = sl->res->last_version = get_i64(r, row, 1);
        sl->res->position.gpos = get_i64(r, row, 2);
        sl->res->position.txid = get_u64(r, row, 3);
    }
}

/*
 * Sends the n slots in one pipelined transaction (BEGIN, one statement
 * each, COMMIT).  Returns ES_OK with every full slot answered and every
 * fast slot answered or marked retry; ES_EINTERNAL when the transaction
 * failed and was rolled back; ES_EUNAVAILABLE when the connection went.
 */
static es_status
run_pipelined(es_store *s, slot *slots, size_t n)
{
    PGresult *r;
    es_status st = ES_OK;
    es_error err;
    size_t i, k, nbatch, nres;

    if (PQenterPipelineMode(s->conn) != 1)
        return pg_failure(s, NULL, "enter pipeline mode", &err);
    nbatch = mark_batch(slots, n);
    if (PQsendQueryPrepared(s->conn, "es_begin", 0, NULL, NULL, NULL, 0) != 1)
        goto lost;
    if (nbatch > 1) {
        const char *values[7];

        if (!build_batch(s, slots, n, values))
            goto lost;
        if (PQsendQueryPrepared(s->conn, "es_fast_batch", 7, values, NULL, NULL, 0) != 1)
            goto lost;
    }
    for (i = 0; i < n; i++) {
        const char *values[7];
        int nparams;
        const char *stmt;

        if (nbatch > 1 && slots[i].batched)
            continue;
        stmt = slot_statement(s, &slots[i], values, &nparams);
        if (PQsendQueryPrepared(s->conn, stmt, nparams, values, NULL, NULL, 0) != 1)
            goto lost;
    }
    if (PQsendQueryPrepared(s->conn, "es_commit", 0, NULL, NULL, NULL, 0) != 1 ||
        PQpipelineSync(s->conn) != 1)
        goto lost;

    /* BEGIN, the batch, the other statements, COMMIT: each a result then
     * NULL; then the sync.  k walks the slots the results belong to. */
    nres = 2 + (nbatch > 1 ? 1 + n - nbatch : n);
    for (i = 0, k = 0; i < nres; i++) {
        bool batch_result = nbatch > 1 && i == 1;

        if ((r = PQgetResult(s->conn)) == NULL)
            goto lost;
        if (!batch_result && i >= 1 && i < nres - 1) {
            while (nbatch > 1 && slots[k].batched)
                k++;
        }
        if (batch_result && PQresultStatus(r) == PGRES_TUPLES_OK) {
            read_batch_rows(r, slots, n);
        } else if (!batch_result && i >= 1 && i < nres - 1 &&
                   PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            read_slot_row(r, &slots[k], slots[k].full);
        } else if (PQresultStatus(r) == PGRES_PIPELINE_ABORTED) {
            if (st == ES_OK)            /* skipped after an earlier error */
                st = ES_EINTERNAL;
        } else if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            es_status fail = pg_failure(s, r, "append a batch", &err);
            if (st == ES_OK || fail == ES_EUNAVAILABLE)
                st = fail == ES_EUNAVAILABLE ? fail : ES_EINTERNAL;
        }
        PQclear(r);
        if (!batch_result && i >= 1 && i < nres - 1)
            k++;
        if ((r = PQgetResult(s->conn)) != NULL) {       /* must end the query */
            PQclear(r);
            goto lost;
        }
    }
    r = PQgetResult(s->conn);
    if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        PQclear(r);
        goto lost;
    }
    PQclear(r);
    if (PQexitPipelineMode(s->conn) != 1)
        goto lost;
    if (st == ES_OK)
        return ES_OK;
    /*
     * The transaction failed: nothing of it was written, whatever rows
     * came back before the error.  An explicit transaction block stays
     * aborted after the sync, so end it here.
     */
    if (PQtransactionStatus(s->conn) == PQTRANS_INERROR) {
        r = PQexec(s->conn, "ROLLBACK");
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            s->ready = false;
        PQclear(r);
    }
    for (i = 0; i < n; i++) {
        result_reset(slots[i].res);
        slots[i].retry = false;
        if (st == ES_EUNAVAILABLE)
            slots[i].res->err = err;
    }
    return st;

lost:
    (void)pg_failure(s, NULL, "append a batch", &err);
    s->ready = false;
    for (i = 0; i < n; i++) {
        slots[i].res->status = ES_EUNAVAILABLE;
        slots[i].res->err = err;
    }
    return ES_EUNAVAILABLE;
}

/*
 * Runs slots as one transaction (pipelined when more than one), then the
 * fast ones that wrote nothing through es_append.  A batch the server
 * rolled back is run again one append per transaction.  Returns ES_OK or
 * ES_EUNAVAILABLE; the appends it did not answer keep their "did not run"
 * result.
 */
static es_status
run_slots(es_store *s, slot *slots, size_t n)
{
    es_status st;
    size_t i, m;

    for (i = 0; i < n; i++)
        if ((slots[i].full || slots[i].req->count > 1) &&
            slot_json(s, &slots[i], &slots[i].res->err) != ES_OK) {
            slots[i].res->status = slots[i].res->err.status;
            memmove(&slots[i], &slots[i + 1], (n - i - 1) * sizeof *slots);
            n--;
            i--;
        }
    if (n == 0)
        return ES_OK;
    if (n == 1 && slots[0].full)
        return append_one(s, &slots[0]) == ES_EUNAVAILABLE ? ES_EUNAVAILABLE : ES_OK;
    st = run_pipelined(s, slots, n);
    if (st == ES_EUNAVAILABLE)
        return st;
    if (st != ES_OK) {
        /* Rolled back as a whole: give each append its own answer. */
        for (i = 0; i < n; i++)
            if (append_one(s, &slots[i]) == ES_EUNAVAILABLE)
                return ES_EUNAVAILABLE;
        return ES_OK;
    }
    /* Fast statements that found another version: es_append decides. */
    for (i = m = 0; i < n; i++) {
        if (slots[i].retry) {
            slots[i].retry = false;
            slots[m++] = slots[i];
        }
    }
    return m > 0 ? run_slots(s, slots, m) : ES_OK;
}

es_status
es_store_append_many(es_store *s, const es_append_req *reqs, size_t n,
                     es_append_result *res)
{
    slot slots[BATCH_MAX];
    size_t i, k, done = 0;
    es_error err;
    es_status st;

    for (i = 0; i < n; i++)
        result_reset(&res[i]);
    while (done < n) {
        /* Validate the next chunk; invalid requests answer now. */
        es_buf_reset(&s->params);
        for (k = 0; done < n && k < BATCH_MAX; done++) {
            st = check_request(s, &reqs[done], &res[done].err);
            if (st == ES_OK)
                st = slot_init(&slots[k], &reqs[done], &res[done], done, &res[done].err);
            if (st != ES_OK) {
                res[done].status = st;
                continue;
            }
            k++;
        }
        if (k == 0)
            continue;
        if ((st = ensure_ready(s, &err)) != ES_OK)
            goto unavailable;
        qsort(slots, k, sizeof *slots, cmp_slots);
        if (run_slots(s, slots, k) == ES_EUNAVAILABLE) {
            err.status = ES_EUNAVAILABLE;
            snprintf(err.code, sizeof err.code, "store_unavailable");
            snprintf(err.message, sizeof err.message, "%s", PQerrorMessage(s->conn));
            err.message[strcspn(err.message, "\n")] = '\0';
            goto unavailable;
        }
    }
    return ES_OK;

unavailable:
    /* What did not get an answer did not run (or, if the connection went
     * during COMMIT, may have: a retry with the same ids tells). */
    for (i = 0; i < n; i++)
        if (res[i].status == ES_EUNAVAILABLE && err.message[0] != '\0')
            snprintf(res[i].err.message, sizeof res[i].err.message,
                     "could not append to stream \"%.60s\": %.200s", reqs[i].stream,
                     err.message);
    return ES_EUNAVAILABLE;
}

es_status
es_store_append(es_store *s, const es_append_req *req, es_append_result *res)
{
    es_store_append_many(s, req, 1, res);
    return res->status;
}

static es_status run_read(es_store *s, const char *stmt, int nparams,
                          const char *const *values, es_position after, es_page **out,
                          es_error *err);

static es_status
exec_simple(es_store *s, const char *stmt, es_error *err)
{
    PGresult *r = PQexecPrepared(s->conn, stmt, 0, NULL, NULL, NULL, 0);
    es_status st = ES_OK;

    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        st = pg_failure(s, r, stmt, err);
    PQclear(r);
    return st;
}

es_status
es_store_append_atomic(es_store *s, const es_append_req *reqs, size_t n,
                       es_append_result *res, size_t *failed)
{
    slot slots[BATCH_MAX];
    es_error err;
    es_status st = ES_OK;
    size_t i;

    *failed = 0;
    if (n == 0 || n > BATCH_MAX)
        return es_error_set(&res[0].err, ES_EINVALID, "batch_size", NULL,
                            "an atomic append takes 1 to %d appends", BATCH_MAX);
    es_buf_reset(&s->params);
    for (i = 0; i < n; i++) {
        result_reset(&res[i]);
        st = check_request(s, &reqs[i], &res[i].err);
        if (st == ES_OK)
            st = slot_init(&slots[i], &reqs[i], &res[i], i, &res[i].err);
        if (st == ES_OK) {
            slots[i].full = true;
            st = slot_json(s, &slots[i], &res[i].err);
        }
        if (st != ES_OK) {
            res[i].status = st;
            *failed = i;
            return st;
        }
    }
    if ((st = ensure_ready(s, &err)) != ES_OK) {
        res[0].err = err;
        return res[0].status = st;
    }
    /* Same lock order as batches: by stream. */
    qsort(slots, n, sizeof *slots, cmp_slots);
    if ((st = exec_simple(s, "es_begin", &err)) != ES_OK) {
        res[0].err = err;
        return res[0].status = st;
    }
    for (i = 0; i < n; i++) {
        const char *values[7], *stmt;
        int nparams = 0;
        PGresult *r;

        stmt = slot_statement(s, &slots[i], values, &nparams);
        r = PQexecPrepared(s->conn, stmt, nparams, values, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            read_full_row(r, &slots[i]);
        else
            slots[i].res->status = pg_failure(s, r, "append", &slots[i].res->err);
        PQclear(r);
        if (slots[i].res->status == ES_OK && i > 0 &&
            slots[i].res->duplicate != slots[0].res->duplicate) {
            /* Part of the set was written before and part not: not a
             * retry of the same decision.  Nothing of it is kept. */
            slots[i].res->status = es_error_set(&slots[i].res->err, ES_EIDCLASH, "event_id_clash",
                                                "events", "could not append to stream \"%s\": "
                                                "part of this set of appends was written before",
                                                slots[i].req->stream);
        }
        if (slots[i].res->status != ES_OK) {
            st = slots[i].res->status;
            *failed = slots[i].index;
            if (PQstatus(s->conn) == CONNECTION_OK && PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
                PGresult *rb = PQexec(s->conn, "ROLLBACK");
                if (PQresultStatus(rb) != PGRES_COMMAND_OK)
                    s->ready = false;
                PQclear(rb);
            }
            for (size_t j = 0; j < n; j++)
                if (j != slots[i].index)
                    res[j].status = es_error_set(&res[j].err, ES_ECONFLICT, "not_applied", NULL,
                                                 "not appended: another append of the set failed");
            return st;
        }
    }
    if ((st = exec_simple(s, "es_commit", &err)) != ES_OK) {
        if (PQstatus(s->conn) == CONNECTION_OK && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
            PQclear(PQexec(s->conn, "ROLLBACK"));
        for (i = 0; i < n; i++) {
            res[i].status = st;
            res[i].err = err;
        }
        return st;
    }
    return ES_OK;
}

es_status
es_store_read_event(es_store *s, const char *event_id, es_page **out, es_error *err)
{
    es_position none = {0, 0};
    es_status st;

    *out = NULL;
    es_error_clear(err);
    if (event_id == NULL || !es_uuid_valid(event_id))
        return es_error_set(err, ES_EINVALID, "event_id_invalid", "event_id",
                            "event id is not a UUID");
    st = run_read(s, "es_event_by_id", 1, &event_id, none, out, err);
    if (st == ES_OK && (*out)->count == 0) {
        es_page_destroy(*out);
        *out = NULL;
        return es_error_set(err, ES_ENOTFOUND, "event_not_found", "event_id",
                            "event %s does not exist", event_id);
    }
    return st;
}

/* ---- reads ------------------------------------------------------------ */

/*
 * Rewrites PostgreSQL's ISO output in UTC ("2026-11-22 00:05:01.5+00")
 * as RFC 3339 with microseconds ("2026-11-22T00:05:01.500000Z") into out.
 * Anything else (a year past 9999) is copied as it is.
 */
static const char *
format_time(const char *in, char *out)
{
    size_t n = strlen(in), i = 19, o;

    if (n < 22 || in[10] != ' ' || in[n - 3] != '+' || in[n - 2] != '0' || in[n - 1] != '0') {
        snprintf(out, ES_TIME_TEXT_MAX, "%s", in);
        return out;
    }
    memcpy(out, in, 19);
    out[10] = 'T';
    out[19] = '.';
    o = 20;
    if (in[19] == '.')
        for (i = 20; i < n - 3 && o < 26; i++)
            out[o++] = in[i];
    while (o < 26)
        out[o++] = '0';
    out[26] = 'Z';
    out[27] = '\0';
    return out;
}

/*
 * Turns rows (EVENT_COLUMNS, after the stream's version when with_version)
 * into a page that takes ownership of r.
 */
static es_status
make_page(es_store *s, PGresult *r, bool with_version, es_position after, es_page **out,
          es_error *err)
{
    es_page *p = NULL;
    page_storage *ps = NULL;
    int rows = PQntuples(r), i, n = 0;
    es_status st = ES_OK;

    if ((p = calloc(1, sizeof *p)) == NULL || (ps = calloc(1, sizeof *ps)) == NULL) {
        PQclear(r);
        free(p);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a page");
    }
    ps->res = r;                /* from here on the page owns r */
    p->priv_ = ps;
    if (rows > 0 && ((p->events = calloc((size_t)rows, sizeof *p->events)) == NULL ||
                     (ps->times = malloc((size_t)rows * sizeof *ps->times)) == NULL)) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a page of %d events", rows);
        goto fail;
    }
    p->next = after;
    /* Stream reads lead with the stream's version; the others do not. */
    p->stream_version = rows > 0 && with_version ? get_i64(r, 0, 0) : -1;
    for (i = 0; i < rows; i++) {
        es_event *e = &p->events[n];
        int c = with_version ? 1 : 0;

        if (PQgetisnull(r, i, c))       /* a stream with no event in range */
            continue;
        e->stream_id = PQgetvalue(r, i, c);
        e->version = strtoll(PQgetvalue(r, i, c + 1), NULL, 10);
        e->event_id = PQgetvalue(r, i, c + 2);
        e->type = PQgetvalue(r, i, c + 3);
        e->schema_version = (int)strtol(PQgetvalue(r, i, c + 4), NULL, 10);
        e->data = PQgetvalue(r, i, c + 5);
        e->metadata = PQgetvalue(r, i, c + 6);
        e->recorded_at = format_time(PQgetvalue(r, i, c + 7), ps->times[n]);
        e->position.txid = strtoull(PQgetvalue(r, i, c + 8), NULL, 10);
        e->position.gpos = strtoll(PQgetvalue(r, i, c + 9), NULL, 10);
        if (es_upcasters_needed(s->upcasters, e->type, e->schema_version)) {
            char *data, **owned;

            owned = realloc(ps->owned, (ps->nowned + 1) * sizeof *owned);
            if (owned == NULL) {
                st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not upcast an event");
                goto fail;
            }
            ps->owned = owned;
            if ((st = es_upcasters_apply(s->upcasters, e->type, &e->schema_version,
                                         e->data, &data, err)) != ES_OK)
                goto fail;
            ps->owned[ps->nowned++] = data;
            e->data = data;
        }
        p->next = e->position;
        n++;
    }
    p->count = (size_t)n;
    *out = p;
    return ES_OK;

fail:
    es_page_destroy(p);         /* clears r too */
    return st;
}

/* Runs a prepared read and turns its rows into a page. */
static es_status
run_read(es_store *s, const char *stmt, int nparams, const char *const *values,
         es_position after, es_page **out, es_error *err)
{
    PGresult *r;
    es_status st;

    *out = NULL;
    if ((st = ensure_ready(s, err)) != ES_OK)
        return st;
    r = PQexecPrepared(s->conn, stmt, nparams, values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = pg_failure(s, r, "read events", err);
        PQclear(r);
        return st;
    }
    return make_page(s, r, strncmp(stmt, "es_stream_", 10) == 0, after, out, err);
}

es_status
es_store_read_stream(es_store *s, const char *stream, int64_t from, size_t limit,
                     es_direction dir, es_page **out, es_error *err)
{
    char vfrom[24], vlimit[24];
    const char *values[3] = {stream, vfrom, vlimit};
    es_position none = {0, 0};
    es_status st;

    *out = NULL;
    es_error_clear(err);
    if ((st = es_stream_id_check(stream, "stream", err)) != ES_OK)
        return st;
    if (dir == ES_FORWARD && from < 0)
        from = 0;
    snprintf(vfrom, sizeof vfrom, "%" PRId64, from);
    snprintf(vlimit, sizeof vlimit, "%zu", limit);
    st = run_read(s, dir == ES_FORWARD ? "es_stream_fwd" : "es_stream_bwd", 3, values,
                  none, out, err);
    if (st == ES_OK && (*out)->stream_version < 0) {
        es_page_destroy(*out);
        *out = NULL;
        return es_error_set(err, ES_ENOTFOUND, "stream_not_found", "stream",
                            "stream \"%s\" does not exist", stream);
    }
    return st;
}

static es_status
read_feed(es_store *s, const char *category, es_position after, size_t limit,
          es_page **out, es_error *err)
{
    char vtx[24], vpos[24], vlimit[24];
    const char *values[4] = {vtx, vpos, vlimit, category};

    snprintf(vtx, sizeof vtx, "%" PRIu64, after.txid);
    snprintf(vpos, sizeof vpos, "%" PRId64, after.gpos);
    snprintf(vlimit, sizeof vlimit, "%zu", limit);
    return run_read(s, category ? "es_category" : "es_feed", category ? 4 : 3, values,
                    after, out, err);
}

es_status
es_store_read_feed(es_store *s, es_position after, size_t limit, es_page **out,
                   es_error *err)
{
    *out = NULL;
    es_error_clear(err);
    return read_feed(s, NULL, after, limit, out, err);
}

es_status
es_store_read_category(es_store *s, const char *category, es_position after,
                       size_t limit, es_page **out, es_error *err)
{
    es_status st;

    *out = NULL;
    es_error_clear(err);
    if ((st = es_stream_id_check(category, "category", err)) != ES_OK)
        return st;
    return read_feed(s, category, after, limit, out, err);
}

es_status
es_store_feed_head(es_store *s, es_position *head, es_error *err)
{
    PGresult *r;
    es_status st;

    es_error_clear(err);
    head->txid = 0;
    head->gpos = 0;
    if ((st = ensure_ready(s, err)) != ES_OK)
        return st;
    r = PQexecPrepared(s->conn, "es_head", 0, NULL, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = pg_failure(s, r, "read the feed head", err);
        PQclear(r);
        return st;
    }
    if (PQntuples(r) == 1) {
        head->txid = get_u64(r, 0, 0);
        head->gpos = get_i64(r, 0, 1);
    }
    PQclear(r);
    return ES_OK;
}

void
es_page_destroy(es_page *p)
{
    page_storage *ps;

    if (p == NULL)
        return;
    ps = p->priv_;
    if (ps != NULL) {
        for (size_t i = 0; i < ps->nowned; i++)
            free(ps->owned[i]);
        free(ps->owned);
        free(ps->times);
        PQclear(ps->res);
        free(ps);
    }
    free(p->events);
    free(p);
}
