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
#include "core_int.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "env.h"
#include "pg.h"
#include "store_int.h"
#include "uuid.h"

/* Appends sent in one pipeline at most: keeps the replies well inside the
 * socket buffers, so a blocking pipeline cannot deadlock. */
#define BATCH_MAX 256

/* A server session: its process and when it started (a process id alone
 * may be reused by a later session).  A lost batch's session is ended
 * before its outcome is looked up (see resolve_unknown). */
typedef struct session {
    int pid;                    /* 0: not known */
    char start[48];             /* backend_start as the session prints it */
} session;

struct es_store {
    PGconn *conn;
    char *conninfo;
    bool ready;                 /* connected and statements prepared */
    size_t max_event_size;
    const es_upcasters *upcasters;
    es_buf params;              /* es_store_append_atomic's events */
    es__append_batch *own;      /* es_store_append_many's, made on first use */
    int inflight;               /* pipelines sent and not yet read */
    unsigned gen;               /* counts connections: a pipeline sent on an
                                   earlier one has no results to read */
    session sess;               /* the server session of conn */
    session lost;               /* the last one given up with appends in doubt */
    int answer_ms;              /* the client's answer limit (pg.h); < 0: configured */
    bool timed_out;             /* the connection was given up for no answer */
    bool standby;               /* the server refused a write as a standby:
                                 * the session is replaced before the next call */
    size_t read_budget;         /* bytes of event text a read page stops at; 0: none */
    bool row_mode_left;         /* libpq keeps single-row mode set after a read
                                   until a query is sent outside a pipeline */
};

typedef struct page_storage {
    PGresult **res;             /* the rows: one result, or one per row */
    size_t nres;
    char (*times)[ES_TIME_TEXT_MAX];    /* recorded_at of each event, RFC 3339 */
    char **owned;               /* upcast data, freed with the page */
    size_t nowned;
} page_storage;

/* recorded_at comes in the session's ISO style in UTC (see ensure_ready)
 * and is put in RFC 3339 form by the client: to_char on the server cost a
 * quarter of a whole-log read. */
#define EVENT_COLUMNS ES__EVENT_COLUMNS

#define HORIZON ES__HORIZON

#define INSERT_EVENTS                                                       \
    "INSERT INTO es_events (stream_id, category, version, event_id, type, " \
    "schema_version, data, metadata, append_index, append_size) "
#define EVENT_FIELDS                                                        \
    "(t.e->>'event_id')::uuid, t.e->>'type', "                              \
    "coalesce((t.e->>'schema_version')::int, 1), t.e->'data', "             \
    "coalesce(t.e->'metadata', '{}'), t.o - 1, "
/* A retry (its first event id stored) writes nothing on a fast path and
 * goes through es_append, which answers duplicate; without this guard it
 * would raise unique_violation and roll back the whole batch.  An append
 * whose ids the store made itself cannot be a retry: "fresh" (true) skips
 * the probe, an index lookup per append (a null key ends the index scan
 * before it reads a page; kept as one NOT EXISTS so that it stays an
 * anti-join on the index). */
#define NOT_STORED(fresh, id)                                               \
    "NOT EXISTS (SELECT 1 FROM es_events WHERE event_id = "                 \
    "CASE WHEN " fresh " THEN NULL ELSE " id " END) "

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
     "WHERE stream_id = $1 AND version = $2::bigint AND " NOT_STORED("$8::bool", "$3::uuid")
     "RETURNING version), "
     "ins AS (" INSERT_EVENTS "SELECT $1, split_part($1, '-', 1), s.version, $3::uuid, $4, "
     "$5::int, $6::jsonb, coalesce($7::jsonb, '{}'), 0, 1 FROM s "
     "RETURNING version, global_position) "
     FAST_RESULT},
    {"es_fast1_new",
     "WITH s AS (INSERT INTO es_streams (stream_id, version) SELECT $1, 0 "
     "WHERE " NOT_STORED("$7::bool", "$2::uuid") "ON CONFLICT (stream_id) DO NOTHING RETURNING version), "
     "ins AS (" INSERT_EVENTS "SELECT $1, split_part($1, '-', 1), s.version, $2::uuid, $3, "
     "$4::int, $5::jsonb, coalesce($6::jsonb, '{}'), 0, 1 FROM s "
     "RETURNING version, global_position) "
     FAST_RESULT},
    {"es_fastn_exact",
     "WITH p AS (SELECT jsonb_array_length($3::jsonb) AS n), "
     "s AS (UPDATE es_streams SET version = version + p.n FROM p "
     "WHERE stream_id = $1 AND version = $2::bigint AND "
     NOT_STORED("$4::bool", "($3::jsonb->0->>'event_id')::uuid") "RETURNING version), "
     "ins AS (" INSERT_EVENTS "SELECT $1, split_part($1, '-', 1), "
     "s.version - p.n + t.o, " EVENT_FIELDS
     "p.n FROM s, p, jsonb_array_elements($3::jsonb) WITH ORDINALITY AS t(e, o) "
     "RETURNING version, global_position) " FAST_RESULT},
    {"es_fastn_new",
     "WITH p AS (SELECT jsonb_array_length($2::jsonb) AS n), "
     "s AS (INSERT INTO es_streams (stream_id, version) "
     "SELECT $1, p.n - 1 FROM p "
     "WHERE " NOT_STORED("$3::bool", "($2::jsonb->0->>'event_id')::uuid")
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
    /* A stream read from its aggregate's snapshot on (es_snapshot_read):
     * the snapshot taken by code $3, if any, and the events after it, in
     * one round trip; the state rides on the first row only. */
    {"es_stream_snap",
     "SELECT s.version, e.*, n.version, "
     "CASE WHEN e.version IS NULL OR e.version = n.version + 1 THEN n.state::text END "
     "FROM es_streams s LEFT JOIN es_snapshots n "
     "ON n.stream_id = s.stream_id AND n.state_version = $3::int "
     "LEFT JOIN LATERAL ("
     "SELECT " EVENT_COLUMNS " FROM es_events WHERE stream_id = s.stream_id "
     "AND version > coalesce(n.version, -1) ORDER BY version LIMIT $2) e ON true "
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
    /* Many appends to distinct streams, exact or "no stream", in one
     * statement: one executor run for the whole group instead of one per
     * append.  Per append: stream, expected version, first event id,
     * event count, fresh; per event (in append order): its append's
     * place among them (from 1), its place in the append (from 0), id,
     * type, schema version, data, metadata.  Answers a row per append
     * written, with its last version; the others found another version
     * and go through es_append.  Events are inserted in append order, so
     * their global positions follow their versions. */
    {"es_fast_batch",
     "WITH req AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::int[], "
     "$5::bool[]) WITH ORDINALITY AS r(s, x, id, n, fresh, ord)), "
     "upd AS (UPDATE es_streams v SET version = v.version + r.n FROM req r "
     "WHERE r.x >= 0 AND v.stream_id = r.s AND v.version = r.x AND " NOT_STORED("r.fresh", "r.id")
     "RETURNING r.ord, v.version), "
     "ins AS (INSERT INTO es_streams AS v (stream_id, version) "
     "SELECT r.s, r.n - 1 FROM req r WHERE r.x = -1 AND " NOT_STORED("r.fresh", "r.id")
     "ORDER BY r.s COLLATE \"C\" ON CONFLICT (stream_id) DO NOTHING RETURNING v.stream_id, v.version), "
     "ok AS (SELECT ord, version FROM upd UNION ALL "
     "SELECT r.ord, i.version FROM ins i JOIN req r ON r.s = i.stream_id AND r.x = -1), "
     /* the per-event arrays side by side, each taken apart once ("$11 ->
      * i" per row re-read the whole parameter under a generic plan,
      * quadratic in the batch; a join per array cost a sort and a merge) */
     "e AS (SELECT * FROM ROWS FROM (unnest($6::int[]), unnest($7::int[]), unnest($8::uuid[]), "
     "unnest($9::text[]), unnest($10::int[]), jsonb_array_elements($11::jsonb), "
     "jsonb_array_elements($12::jsonb)) WITH ORDINALITY AS e(a, k, id, type, sv, j, mj, o)), "
     "ev AS (" INSERT_EVENTS "SELECT r.s, split_part(r.s, '-', 1), ok.version - r.n + 1 + e.k, "
     "e.id, e.type, e.sv, e.j, coalesce(nullif(e.mj, 'null'::jsonb), '{}'), e.k, r.n "
     "FROM ok JOIN req r USING (ord) JOIN e ON e.a = r.ord ORDER BY e.o "
     "RETURNING stream_id, version, global_position) "
     "SELECT r.ord, max(ev.version), max(ev.global_position), pg_current_xact_id() "
     "FROM ev JOIN req r ON r.s = ev.stream_id GROUP BY r.ord"},
    /* es_fast_batch for the common case, when every append of the batch
     * names the exact version and comes without event ids (so it cannot
     * be a retry): no "no stream" insert, no check for stored ids and no
     * join, the work that does not grow with the batch being what bounds
     * a busy store.  Per append ($1-$3): stream, expected version, event
     * count; per event ($4-$13): its append's place, its place in the
     * append, id, type, schema version, its append's stream, its version
     * if written and its append's event count (so that the events of the
     * appends whose stream row moved are only filtered), data, metadata.
     * The arrays go in binary (build_exact).  Answers a row per event;
     * the append is told by its stream, once in a batch. */
    {"es_fast_exact",
     "WITH u AS (UPDATE es_streams v SET version = v.version + r.n "
     "FROM unnest($1::text[], $2::bigint[], $3::int[]) WITH ORDINALITY AS r(s, x, n, ord) "
     "WHERE v.stream_id = r.s AND v.version = r.x RETURNING r.ord) "
     INSERT_EVENTS "SELECT e.s, split_part(e.s, '-', 1), e.v, "
     "e.id, e.type, e.sv, e.j, coalesce(nullif(e.mj, 'null'::jsonb), '{}'), e.k, e.n "
     "FROM ROWS FROM (unnest($4::int[]), unnest($5::int[]), unnest($6::uuid[]), "
     "unnest($7::text[]), unnest($8::int[]), unnest($9::text[]), unnest($10::bigint[]), "
     "unnest($11::int[]), jsonb_array_elements($12::jsonb), jsonb_array_elements($13::jsonb)) "
     "WITH ORDINALITY AS e(a, k, id, type, sv, s, v, n, j, mj, o) "
     "WHERE e.a = ANY (ARRAY(SELECT ord FROM u)) ORDER BY e.o "
     "RETURNING stream_id, version, global_position, transaction_id"},
    {"es_event_by_id",
     "SELECT " EVENT_COLUMNS " FROM es_events WHERE event_id = $1::uuid"},
    {"es_head",
     "SELECT transaction_id, global_position FROM es_events "
     "WHERE transaction_id < " HORIZON " "
     "ORDER BY transaction_id DESC, global_position DESC LIMIT 1"},
};

/* The answer limit of s in milliseconds (0: none). */
static int
answer_ms(const es_store *s)
{
    return s->answer_ms >= 0 ? s->answer_ms : es_pg_timeouts_get()->answer_ms;
}

/* The next result of what was sent, waiting at most the answer limit. */
static PGresult *
get_result(es_store *s)
{
    bool late = false;
    PGresult *r = es_pg_result(s->conn, answer_ms(s), &late);

    s->timed_out |= late;
    return r;
}

/* The last result of what was just sent (NULL if it could not be sent). */
static PGresult *
last_result(es_store *s, int sent)
{
    bool late = false;
    PGresult *r;

    if (sent != 1)
        return NULL;
    s->row_mode_left = false;   /* sent outside a pipeline: reset by libpq */
    r = es_pg_last_result(s->conn, answer_ms(s), &late);
    s->timed_out |= late;
    return r;
}

/* PQexecPrepared and PQexec with the answer limit. */
static PGresult *
exec_prepared(es_store *s, const char *stmt, int nparams, const char *const *values)
{
    return last_result(s, PQsendQueryPrepared(s->conn, stmt, nparams, values, NULL, NULL, 0));
}

static PGresult *
exec_sql(es_store *s, const char *sql)
{
    return last_result(s, PQsendQuery(s->conn, sql));
}

static PGresult *
exec_params(es_store *s, const char *sql, int nparams, const char *const *values)
{
    return last_result(s, PQsendQueryParams(s->conn, sql, nparams, NULL, values, NULL, NULL, 0));
}

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

    if (s->timed_out) {
        s->ready = false;
        return es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                            "could not %s: the event store did not answer within %d ms "
                            "(ES_PG_ANSWER_TIMEOUT_MS)", what, answer_ms(s));
    }
    if (PQstatus(s->conn) != CONNECTION_OK || state == NULL ||
        strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strncmp(state, "53", 2) == 0) {
        s->ready = false;
        return es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                            "could not %s: %s", what, text);
    }
    /* read_only_sql_transaction: the server is a standby, as a balancer
     * may route to one in the second before its health check sees a
     * failover.  The statement failed (nothing was written); the session
     * is replaced at the next call, which reaches the primary. */
    if (strcmp(state, "25006") == 0) {
        s->standby = true;
        return es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                            "could not %s: the server is a standby (%s)", what, text);
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

/* Records which server session the new connection is (see session). */
static void
session_learn(es_store *s)
{
    PGresult *r = exec_sql(s, "SELECT backend_start FROM pg_stat_activity "
                              "WHERE pid = pg_backend_pid()");

    s->sess.pid = PQbackendPID(s->conn);
    s->sess.start[0] = '\0';
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        snprintf(s->sess.start, sizeof s->sess.start, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

static es_status
ensure_ready(es_store *s, es_error *err)
{
    PGresult *r;
    size_t i;

    /* A session the server ended while this connection was idle (a
     * failover, a restart) is replaced before use, rather than failing
     * the next call: a daemon keeps a connection per thread, and each
     * would otherwise fail one request (or one readiness probe) after a
     * failover.  Nothing was sent on it, so nothing is in doubt. */
    if (s->ready && PQstatus(s->conn) == CONNECTION_OK &&
        (s->inflight > 0 || PQisBusy(s->conn) ||
         (!s->standby && !es_pg_idle_closed(s->conn))))
        return ES_OK;
    s->ready = false;
    s->timed_out = false;
    s->standby = false;
    s->row_mode_left = false;
    s->inflight = 0;
    s->gen++;
    if (s->conn != NULL)
        PQfinish(s->conn);
    s->conn = es_pg_connect(s->conninfo, false);
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
     * as the table grows, making each append cost the whole table.  The
     * plans do not depend on the values, so they are made once: left to
     * choose, the server plans es_fast_batch anew at every run.
     */
    r = exec_sql(s, "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET enable_seqscan = off; "
                    "SET plan_cache_mode = force_generic_plan");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        es_status st = pg_failure(s, r, "set up the store's session", err);
        PQclear(r);
        return st;
    }
    PQclear(r);
    for (i = 0; i < sizeof statements / sizeof statements[0]; i++) {
        es_status st;

        r = last_result(s, PQsendPrepare(s->conn, statements[i].name, statements[i].sql, 0, NULL));
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            st = pg_failure(s, r, "prepare the store's statements", err);
            PQclear(r);
            return st;
        }
        PQclear(r);
    }
    session_learn(s);
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

PGresult *
es__store_exec(es_store *s, const char *sql, int nparams, const char *const *values)
{
    return exec_params(s, sql, nparams, values);
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
    s->answer_ms = -1;
    s->read_budget = 0;
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
    es__append_batch_free(s->own);
    free(s->conninfo);
    free(s);
}

void
es_store_set_max_event_size(es_store *s, size_t bytes)
{
    s->max_event_size = bytes;
}

void
es_store_set_read_budget(es_store *s, size_t bytes)
{
    s->read_budget = bytes;
}

size_t
es_store_read_budget_configured(void)
{
    return (size_t)es_env_long(NULL, "ES_READ_MAX_BYTES", ES_READ_BUDGET_DEFAULT, 0, 1L << 30);
}

void
es_store_set_answer_timeout(es_store *s, int ms)
{
    s->answer_ms = ms;
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
    es_buf *jbuf;               /* where its jsonb events are built */
    size_t json;                /* their offset in jbuf, or NO_JSON */
    bool full;                  /* must go through es_append */
    bool retry;                 /* the fast statement wrote nothing */
    bool batched;               /* sent in es_fast_batch */
    bool fresh;                 /* every event id made here: not a retry */
    bool unknown;               /* sent, then the connection went: written or not */
    unsigned short run;         /* batched, first of its run: the run's length */
    char id[ES_UUID_LEN + 1];   /* its first event's id (as last sent) */
    char expected[ES_INT_TEXT_MAX];
    char schema[ES_INT_TEXT_MAX];
} slot;

#define NO_JSON ((size_t)-1)

/* Copies an event id (valid ones are ES_UUID_LEN long) into its slot. */
static void
copy_id(char dst[ES_UUID_LEN + 1], const char *src)
{
    size_t n = strnlen(src, ES_UUID_LEN);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Fixes the ids of a one-event append; the jsonb form is built on demand. */
static es_status
slot_init(slot *sl, const es_append_req *req, es_append_result *res, size_t index,
          es_buf *jbuf, es_error *err)
{
    const es_new_event *ev = &req->events[0];

    sl->req = req;
    sl->jbuf = jbuf;
    sl->res = res;
    sl->index = index;
    sl->json = NO_JSON;
    sl->retry = false;
    sl->unknown = false;
    sl->batched = false;
    sl->run = 0;
    sl->full = req->expected == ES_EXPECT_ANY || req->expected == ES_EXPECT_EXISTS;
    es_int_text(sl->expected, req->expected);
    es_int_text(sl->schema, ev->schema_version > 0 ? ev->schema_version : 1);
    sl->id[0] = '\0';
    sl->fresh = true;
    for (size_t i = 0; i < req->count; i++)
        if (req->events[i].event_id != NULL && req->events[i].event_id[0] != '\0')
            sl->fresh = false;
    if (req->count == 1) {
        if (ev->event_id != NULL && ev->event_id[0] != '\0')
            copy_id(sl->id, ev->event_id);
        else if (!es_uuid_v7(sl->id))
            return es_error_set(err, ES_EINTERNAL, NULL, NULL,
                                "could not read random bytes for an event id");
    }
    return ES_OK;
}

/* Builds the slot's events as the jsonb array es_append takes, once. */
static es_status
slot_json(slot *sl, es_error *err)
{
    const es_append_req *req = sl->req;
    es_buf *b = sl->jbuf;
    size_t off = b->len;

    if (sl->json != NO_JSON)
        return ES_OK;
    for (size_t i = 0; i < req->count; i++) {
        const es_new_event *ev = &req->events[i];
        char id[ES_UUID_LEN + 1];

        if (req->count == 1) {
            copy_id(id, sl->id);
        } else if (ev->event_id != NULL && ev->event_id[0] != '\0') {
            copy_id(id, ev->event_id);
        } else if (!es_uuid_v7(id)) {
            return es_error_set(err, ES_EINTERNAL, NULL, NULL,
                                "could not read random bytes for an event id");
        }
        es_buf_puts(b, i == 0 ? "[{\"event_id\":\"" : ",{\"event_id\":\"");
        es_buf_puts(b, id);
        es_buf_puts(b, "\",\"type\":");
        es_buf_json_string(b, ev->type);
        if (ev->schema_version > 1)
            es_buf_printf(b, ",\"schema_version\":%d", ev->schema_version);
        es_buf_puts(b, ",\"data\":");
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

/* The statement and parameters (at most SLOT_PARAMS) that carry the slot. */
#define SLOT_PARAMS 8
static const char *
slot_statement(slot *sl, const char **values, int *nparams)
{
    const es_append_req *req = sl->req;
    const es_new_event *ev = &req->events[0];
    bool exact = req->expected >= 0;
    int n = 0;

    values[n++] = req->stream;
    if (sl->full || exact)
        values[n++] = sl->expected;
    if (sl->full || req->count > 1) {
        values[n++] = sl->jbuf->data + sl->json;
        /* what a lost append's outcome is looked up by (slot_json's text
         * begins with the first event's id) */
        if (req->count > 1)
            copy_id(sl->id, sl->jbuf->data + sl->json + strlen("[{\"event_id\":\""));
        if (!sl->full)
            values[n++] = sl->fresh ? "t" : "f";
        *nparams = n;
        return sl->full ? "es_append" : exact ? "es_fastn_exact" : "es_fastn_new";
    }
    values[n++] = sl->id;
    values[n++] = ev->type;
    values[n++] = sl->schema;
    values[n++] = ev->data;
    values[n++] = ev->metadata;         /* NULL: SQL NULL, stored as {} */
    values[n++] = sl->fresh ? "t" : "f";
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
    const char *values[SLOT_PARAMS], *stmt;
    int nparams = 0;
    PGresult *r;

    result_reset(sl->res);
    sl->full = true;
    sl->retry = false;
    if (slot_json(sl, &sl->res->err) != ES_OK)
        return sl->res->status = sl->res->err.status;
    stmt = slot_statement(sl, values, &nparams);
    for (int attempt = 0; attempt < 2; attempt++) {
        const char *state;

        r = exec_prepared(s, stmt, nparams, values);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            read_full_row(r, sl);
            PQclear(r);
            break;
        }
        sl->res->status = pg_failure(s, r, "append", &sl->res->err);
        if (!s->ready) {
            /* sent, and the connection went: it may have committed */
            sl->unknown = true;
            s->lost = s->sess;
        }
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

/*
 * Stream order (bytes, as strcmp and the C collation compare), then the
 * caller's order.  Every transaction of appends touches its streams' rows
 * in this one global order, statement after statement (see mark_batch),
 * so two of them, on any connections, cannot deadlock on those rows.
 */
static int
cmp_slots(const void *a, const void *b)
{
    const slot *x = a, *y = b;
    int c = strcmp(x->req->stream, y->req->stream);

    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Events an append may have to go in es_fast_batch: keeps its arrays of
 * a sensible size (a larger append has a statement of its own). */
#define BATCH_EVENTS_MAX 100

/* Runs one pipeline may hold: each has its own parameter buffers. */
#define RUNS_MAX 8

/* What kind of batch statement may carry an append: the exact versions
 * and the new streams never share one (es_fast_batch would lock every
 * exact stream before any new one, out of stream order). */
enum { RUN_NONE, RUN_EXACT, RUN_NEW };

static int
run_kind(const slot *sl, const slot *prev)
{
    const es_append_req *req = sl->req;

    if (sl->full || !(req->count == 1 || (sl->fresh && req->count <= BATCH_EVENTS_MAX)))
        return RUN_NONE;
    /* a later append to the same stream runs after the one before and
     * sees its version */
    if (prev != NULL && strcmp(prev->req->stream, req->stream) == 0)
        return RUN_NONE;
    return req->expected >= 0 ? RUN_EXACT : RUN_NEW;
}

/*
 * Groups the slots (sorted by stream) into the statements that carry
 * them, sent in slot order: a run of two or more consecutive appends of
 * one kind goes in one batch statement (es_fast_exact or es_fast_batch:
 * one executor run for the whole run), the others each in their own.
 * A run is consecutive in stream order, so the locks the pipeline takes
 * follow the stream order across its statements (a batch statement
 * locks its rows in the order of its arrays: its plan is a nested loop
 * driven by them).  Marks the runs' slots batched, their first with the
 * run's length; returns how many slots are batched.
 */
static size_t
mark_batch(slot *slots, size_t n)
{
    size_t count = 0, runs = 0, i = 0;

    for (i = 0; i < n; i++) {
        slots[i].batched = false;
        slots[i].run = 0;
    }
    for (i = 0; i < n && runs < RUNS_MAX;) {
        int kind = run_kind(&slots[i], i > 0 ? &slots[i - 1] : NULL);
        size_t j = i + 1;

        if (kind == RUN_NONE) {
            i++;
            continue;
        }
        while (j < n && run_kind(&slots[j], &slots[j - 1]) == kind) {
            /* two appends naming one event id would make the statement raise */
            bool clash = false;

            for (size_t k = i; k < j && !slots[j].fresh; k++)
                clash |= !slots[k].fresh && strcmp(slots[k].id, slots[j].id) == 0;
            if (clash)
                break;
            j++;
        }
        if (j - i >= 2) {
            for (size_t k = i; k < j; k++)
                slots[k].batched = true;
            slots[i].run = (unsigned short)(j - i);
            count += j - i;
            runs++;
        }
        i = j;
    }
    return count;
}

/* How many slots the statement that starts with slots[i] carries. */
static size_t
unit_len(const slot *slots, size_t i)
{
    return slots[i].batched ? slots[i].run : 1;
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

#define BATCH_PARAMS 12         /* es_fast_batch's */
#define EXACT_PARAMS 13         /* es_fast_exact's */
#define PARAMS_MAX 13           /* the larger */

/* Appends v to a list, after a comma unless it is the first item. */
static void
list_item(es_buf *b, bool first, const char *v)
{
    if (!first)
        es_buf_append(b, ",", 1);
    es_buf_puts(b, v);
}

/* Appends the number v to a list. */
static void
list_int(es_buf *b, bool first, long long v)
{
    if (!first)
        es_buf_append(b, ",", 1);
    es_buf_int(b, v);
}

/* Whether the batched slots can go in es_fast_exact: every one names
 * its exact version and comes without event ids. */
static bool
batch_exact(const slot *slots, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (slots[i].batched && (slots[i].req->expected < 0 || !slots[i].fresh))
            return false;
    return true;
}

/* Type oids of the binary arrays (pg_type.dat; fixed across versions). */
enum { OID_INT8 = 20, OID_INT4 = 23, OID_TEXT = 25, OID_UUID = 2950 };

/* Appends v in network byte order. */
static void
bin_u32(es_buf *b, uint32_t v)
{
    char x[4] = {(char)(v >> 24), (char)(v >> 16), (char)(v >> 8), (char)v};

    es_buf_append(b, x, sizeof x);
}

/* Starts b as a binary one-dimensional array of count elements of type
 * oid, without nulls (the format of the server's array_recv). */
static void
bin_array(es_buf *b, uint32_t oid, size_t count)
{
    es_buf_reset(b);
    bin_u32(b, 1);              /* dimensions */
    bin_u32(b, 0);              /* no nulls */
    bin_u32(b, oid);
    bin_u32(b, (uint32_t)count);
    bin_u32(b, 1);              /* lower bound */
}

static void
bin_text(es_buf *b, const char *v)
{
    size_t n = strlen(v);

    bin_u32(b, (uint32_t)n);
    es_buf_append(b, v, n);
}

static void
bin_int4(es_buf *b, int32_t v)
{
    bin_u32(b, 4);
    bin_u32(b, (uint32_t)v);
}

static void
bin_int8(es_buf *b, int64_t v)
{
    bin_u32(b, 8);
    bin_u32(b, (uint32_t)((uint64_t)v >> 32));
    bin_u32(b, (uint32_t)v);
}

static void
bin_uuid(es_buf *b, const char *id)
{
    unsigned char u[16];

    es__uuid_bytes(id, u);
    bin_u32(b, sizeof u);
    es_buf_append(b, (const char *)u, sizeof u);
}

/*
 * Builds es_fast_exact's parameters from the batched slots: arrays in
 * binary form, which the server takes without parsing text (array_in and
 * its elements' parsers were a tenth of the statement's input work),
 * and the events' data and metadata as jsonb text.
 */
static bool
build_exact(es_buf *b, slot *slots, size_t n, const char **values, int *lengths,
            int *formats)
{
    size_t appends = 0, events = 0, i, k;
    int p, ord = 0;
    bool metadata = false;

    for (i = 0; i < n; i++) {
        if (slots[i].batched) {
            appends++;
            events += slots[i].req->count;
        }
    }
    bin_array(&b[0], OID_TEXT, appends);
    bin_array(&b[1], OID_INT8, appends);
    bin_array(&b[2], OID_INT4, appends);
    bin_array(&b[3], OID_INT4, events);
    bin_array(&b[4], OID_INT4, events);
    bin_array(&b[5], OID_UUID, events);
    bin_array(&b[6], OID_TEXT, events);
    bin_array(&b[7], OID_INT4, events);
    bin_array(&b[8], OID_TEXT, events);
    bin_array(&b[9], OID_INT8, events);
    bin_array(&b[10], OID_INT4, events);
    for (p = 11; p < EXACT_PARAMS; p++) {
        es_buf_reset(&b[p]);
        es_buf_puts(&b[p], "[");
    }
    for (i = 0; i < n; i++) {
        const es_append_req *req = slots[i].req;

        if (!slots[i].batched)
            continue;
        ord++;
        bin_text(&b[0], req->stream);
        bin_int8(&b[1], req->expected);
        bin_int4(&b[2], (int32_t)req->count);
        for (k = 0; k < req->count; k++) {
            const es_new_event *ev = &req->events[k];
            char id[ES_UUID_LEN + 1];

            if (req->count == 1)
                copy_id(id, slots[i].id);
            else if (!es_uuid_v7(id))
                return false;
            else if (k == 0)
                copy_id(slots[i].id, id);
            bin_int4(&b[3], ord);
            bin_int4(&b[4], (int32_t)k);
            bin_uuid(&b[5], id);
            bin_text(&b[6], ev->type);
            bin_int4(&b[7], ev->schema_version > 0 ? ev->schema_version : 1);
            bin_text(&b[8], req->stream);
            bin_int8(&b[9], req->expected + 1 + (int64_t)k);
            bin_int4(&b[10], (int32_t)req->count);
            list_item(&b[11], b[11].len == 1, ev->data);
            list_item(&b[12], b[12].len == 1, ev->metadata ? ev->metadata : "null");
            metadata |= ev->metadata != NULL;
        }
    }
    for (p = 0; p < EXACT_PARAMS; p++) {
        bool binary = p < 11;           /* the jsonb go as text */

        if (!binary)
            es_buf_puts(&b[p], "]");
        if (es_buf_failed(&b[p]))
            return false;
        values[p] = b[p].data;
        lengths[p] = (int)b[p].len;
        formats[p] = binary;
    }
    /* Without any metadata, none is sent: ROWS FROM pads the missing
     * elements with nulls, stored as {}. */
    if (!metadata)
        values[12] = NULL;
    return true;
}

/* Builds es_fast_batch's parameters from the batched slots: arrays
 * 0-4 per append, 5-11 per event (see the statement). */
static bool
build_batch(es_buf *b, slot *slots, size_t n, const char **values)
{
    size_t i, k;
    int p, ord = 0;

    for (p = 0; p < BATCH_PARAMS; p++) {
        es_buf_reset(&b[p]);
        es_buf_puts(&b[p], p < 10 ? "{" : "[");
    }
    for (i = 0; i < n; i++) {
        const es_append_req *req = slots[i].req;
        bool first = b[1].len == 1;

        if (!slots[i].batched)
            continue;
        ord++;
        array_text(&b[0], req->stream);
        list_item(&b[1], first, slots[i].expected);
        list_int(&b[3], first, (long long)req->count);
        list_item(&b[4], first, slots[i].fresh ? "t" : "f");
        for (k = 0; k < req->count; k++) {
            const es_new_event *ev = &req->events[k];
            bool efirst = b[5].len == 1;
            char id[ES_UUID_LEN + 1];

            if (req->count == 1)
                copy_id(id, slots[i].id);
            else if (!es_uuid_v7(id))
                return false;
            else if (k == 0)
                copy_id(slots[i].id, id);
            if (k == 0)
                list_item(&b[2], first, id);
            list_int(&b[5], efirst, ord);
            list_int(&b[6], efirst, (long long)k);
            list_item(&b[7], efirst, id);
            array_text(&b[8], ev->type);
            list_int(&b[9], efirst, ev->schema_version > 0 ? ev->schema_version : 1);
            list_item(&b[10], efirst, ev->data);
            list_item(&b[11], efirst, ev->metadata ? ev->metadata : "null");
        }
    }
    for (p = 0; p < BATCH_PARAMS; p++) {
        es_buf_puts(&b[p], p < 10 ? "}" : "]");
        if (es_buf_failed(&b[p]))
            return false;
        values[p] = b[p].data;
    }
    return true;
}

static int
cmp_stream(const void *key, const void *elem)
{
    return strcmp(key, (*(slot *const *)elem)->req->stream);
}

/* Answers the batched slots from es_fast_exact's rows, one per event:
 * order holds the m batched slots, in stream order. */
static void
read_exact_rows(const PGresult *r, slot **order, size_t m)
{
    for (int row = 0; row < PQntuples(r); row++) {
        slot **found = bsearch(PQgetvalue(r, row, 0), order, m, sizeof *order, cmp_stream);
        slot *sl;
        int64_t version = get_i64(r, row, 1), gpos = get_i64(r, row, 2);

        if (found == NULL)
            continue;
        sl = *found;
        if (sl->full) {         /* its first row (read_batch_rows set full) */
            sl->full = false;
            sl->retry = false;
            es_error_clear(&sl->res->err);
            sl->res->status = ES_OK;
            sl->res->duplicate = false;
            sl->res->last_version = version;
            sl->res->position.gpos = gpos;
            sl->res->position.txid = get_u64(r, row, 3);
        } else {
            if (version > sl->res->last_version)
                sl->res->last_version = version;
            if (gpos > sl->res->position.gpos)
                sl->res->position.gpos = gpos;
        }
        sl->res->first_version = sl->res->last_version - (int64_t)sl->req->count + 1;
    }
}

/* Answers the batched slots from es_fast_batch's rows (ord is the place
 * among the batched slots, from 1) or es_fast_exact's; the others are
 * marked for es_append. */
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
    if (batch_exact(slots, n)) {
        read_exact_rows(r, order, m);
        return;
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
        sl->res->last_version = get_i64(r, row, 1);
        sl->res->first_version = sl->res->last_version - (int64_t)sl->req->count + 1;
        sl->res->position.gpos = get_i64(r, row, 2);
        sl->res->position.txid = get_u64(r, row, 3);
    }
}

/* The parameters of a pipeline's batch statements, a set per run. */
typedef es_buf run_arrays[PARAMS_MAX];

/* The appends of one pipeline and the buffers their parameters are built
 * in: they stay valid until the pipeline's second pass is done. */
struct es__append_batch {
    slot slots[BATCH_MAX];
    size_t n;                   /* slots sent */
    size_t nbatch;              /* of them, in batch statements */
    unsigned gen;               /* connection it was sent on */
    session sess;               /* and its server session */
    bool sent;
    bool early;                 /* results asked for before the commit */
    es_status st;               /* of the pipeline, once read */
    es_error err;               /* why it failed, when it did */
    es_buf params;              /* the slots' jsonb events */
    run_arrays arrays[RUNS_MAX];        /* the batch statements' parameters */
};

es__append_batch *
es__append_batch_new(void)
{
    return calloc(1, sizeof(es__append_batch));
}

void
es__append_batch_free(es__append_batch *b)
{
    if (b == NULL)
        return;
    es_buf_free(&b->params);
    for (size_t r = 0; r < RUNS_MAX; r++)
        for (size_t i = 0; i < PARAMS_MAX; i++)
            es_buf_free(&b->arrays[r][i]);
    free(b);
}

/*
 * Marks every slot unavailable with err, on a connection that went.  on:
 * the session the slots were sent on, when the connection went after
 * they were (then the server may have run them, and committed them: the
 * slots are unknown until resolve_unknown asks); NULL when they were not
 * written.
 */
static void
slots_lost(es_store *s, slot *slots, size_t n, es_error *err, const session *on)
{
    (void)pg_failure(s, NULL, "append a batch", err);
    s->ready = false;
    s->inflight = 0;
    if (on != NULL)
        s->lost = *on;
    for (size_t i = 0; i < n; i++) {
        slots[i].res->status = ES_EUNAVAILABLE;
        slots[i].res->err = *err;
        slots[i].unknown = on != NULL;
    }
}

/*
 * Sends the n slots as one pipeline ending in a sync: the server runs them
 * as one implicit transaction, committed at the sync (one WAL flush), or
 * rolled back as a whole after the first error.  The statements go in
 * slot order (stream order), a run of batched slots as one statement
 * (see mark_batch).  Other pipelines may be in flight on the connection
 * before it: the server runs them in order.  Returns ES_OK, or
 * ES_EUNAVAILABLE with the slots answered.
 */
static es_status
send_slots(es_store *s, slot *slots, size_t n, run_arrays *arrays, bool early)
{
    const char *values[RUNS_MAX][PARAMS_MAX];
    int lengths[RUNS_MAX][PARAMS_MAX], formats[RUNS_MAX][PARAMS_MAX];
    bool exact[RUNS_MAX];
    es_error err;
    size_t i, r;

    /* Built before anything is sent: failing here leaves the connection,
     * and any pipeline in flight on it, as it was. */
    for (i = r = 0; i < n; i += unit_len(slots, i)) {
        size_t len = unit_len(slots, i);

        if (!slots[i].batched)
            continue;
        exact[r] = batch_exact(&slots[i], len);
        if (!(exact[r] ? build_exact(arrays[r], &slots[i], len, values[r], lengths[r], formats[r])
                       : build_batch(arrays[r], &slots[i], len, values[r]))) {
            for (i = 0; i < n; i++)
                slots[i].res->status = es_error_set(&slots[i].res->err, ES_ENOMEM, NULL, NULL,
                                                    "could not build a batch of appends");
            return ES_ENOMEM;
        }
        r++;
    }
    if (PQpipelineStatus(s->conn) == PQ_PIPELINE_OFF && s->row_mode_left) {
        /* a pipeline would run in the single-row mode a read left set
         * (libpq resets it only for a query sent outside one) */
        PGresult *empty = exec_sql(s, "");
        bool ok = PQresultStatus(empty) == PGRES_EMPTY_QUERY;
        PQclear(empty);
        if (!ok)
            goto lost;
    }
    if (PQpipelineStatus(s->conn) == PQ_PIPELINE_OFF && PQenterPipelineMode(s->conn) != 1)
        goto lost;
    for (i = r = 0; i < n; i += unit_len(slots, i)) {
        const char *params[SLOT_PARAMS];
        int nparams, ok;
        const char *stmt;

        if (slots[i].batched) {
            ok = exact[r] ? PQsendQueryPrepared(s->conn, "es_fast_exact", EXACT_PARAMS, values[r],
                                                lengths[r], formats[r], 0)
                          : PQsendQueryPrepared(s->conn, "es_fast_batch", BATCH_PARAMS, values[r],
                                                NULL, NULL, 0);
            r++;
        } else {
            stmt = slot_statement(&slots[i], params, &nparams);
            ok = PQsendQueryPrepared(s->conn, stmt, nparams, params, NULL, NULL, 0);
        }
        if (ok != 1)
            goto lost;
    }
    /* early: the server sends the results once the statements ran, before
     * the commit and its WAL flush (see es__append_recv). */
    if ((early && PQsendFlushRequest(s->conn) != 1) || PQpipelineSync(s->conn) != 1)
        goto lost;
    s->inflight++;
    return ES_OK;

lost:
    /* Nothing was synced: the server rolls back whatever part arrived. */
    slots_lost(s, slots, n, &err, NULL);
    return ES_EUNAVAILABLE;
}

/* Whether a failed statement's error rolled its transaction back on a
 * connection that stays usable, for a reason that would only come again
 * if its appends were retried now, one after the other: a cancel or a
 * statement or lock timeout (a deadlock or serialization failure is
 * retried: it depended on the moment). */
static bool
busy_not_retried(const PGresult *r)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

    return state != NULL && (strcmp(state, "57014") == 0 || strcmp(state, "55P03") == 0);
}

/*
 * Reads the results of the oldest pipeline in flight, whose n slots
 * send_slots sent.  Returns ES_OK with every full slot answered and every
 * fast slot answered or marked retry; ES_EINTERNAL when the transaction
 * failed and was rolled back, for its appends to be retried one by one;
 * ES_EUNAVAILABLE when every slot is answered so: the transaction was
 * rolled back (cancelled, timed out) on a connection that stays usable,
 * or the connection went, before it ended (the slots are then unknown:
 * they may have committed) or after.
 */
static es_status
recv_slots(es_store *s, slot *slots, size_t n, es_error *err, void (*ran)(void *), void *ctx)
{
    PGresult *r;
    es_status st = ES_OK;
    bool busy = false;
    size_t i, len;

    /* Each statement: a result then NULL; then the sync. */
    for (i = 0; i < n; i += len) {
        len = unit_len(slots, i);
        if ((r = get_result(s)) == NULL)
            goto lost;
        if (slots[i].batched && PQresultStatus(r) == PGRES_TUPLES_OK) {
            read_batch_rows(r, &slots[i], len);
        } else if (!slots[i].batched && PQresultStatus(r) == PGRES_TUPLES_OK &&
                   PQntuples(r) == 1) {
            read_slot_row(r, &slots[i], slots[i].full);
        } else if (PQresultStatus(r) == PGRES_PIPELINE_ABORTED) {
            if (st == ES_OK)            /* skipped after an earlier error */
                st = ES_EINTERNAL;
        } else {
            es_error e;
            es_status fail = pg_failure(s, r, "append a batch", &e);

            if (!s->ready) {            /* the connection's error */
                if (st != ES_EUNAVAILABLE)
                    *err = e;
                st = ES_EUNAVAILABLE;
            } else if (st == ES_OK) {   /* the first: it rolls the transaction back */
                *err = e;
                st = ES_EINTERNAL;
                busy = fail == ES_EUNAVAILABLE && busy_not_retried(r);
            }
        }
        PQclear(r);
        if ((r = get_result(s)) != NULL) {              /* must end the query */
            PQclear(r);
            goto lost;
        }
    }
    /* what goes out behind needs a connection that stays */
    if (ran != NULL && s->ready)
        ran(ctx);
    r = get_result(s);
    if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        PQclear(r);
        goto lost;
    }
    PQclear(r);
    /* Answered in full: what follows cannot change these results. */
    if (--s->inflight == 0 && PQexitPipelineMode(s->conn) != 1) {
        s->ready = false;
        s->inflight = 0;
    }
    if (st == ES_EUNAVAILABLE) {
        /* the sync came: rolled back, then the connection was given up */
        slots_lost(s, slots, n, err, NULL);
    } else if (st != ES_OK) {
        /* The transaction failed: the sync rolled it back, nothing of it
         * was written, whatever rows came back before the error. */
        for (i = 0; i < n; i++) {
            result_reset(slots[i].res);
            slots[i].retry = false;
            if (busy) {
                slots[i].res->status = ES_EUNAVAILABLE;
                slots[i].res->err = *err;
            }
        }
        if (busy)
            st = ES_EUNAVAILABLE;
    }
    return st;

lost:
    slots_lost(s, slots, n, err, &s->sess);
    return ES_EUNAVAILABLE;
}

/*
 * Groups the slots into runs (mark_batch), then builds the jsonb events of the other slots that need them; drops
 * (answered) the ones that could not be built.  Sets *n to how many are
 * left and returns how many are batched.
 */
static size_t
slots_prepare(slot *slots, size_t *n)
{
    size_t nbatch = mark_batch(slots, *n), i;

    for (i = 0; i < *n; i++)
        if (!slots[i].batched && (slots[i].full || slots[i].req->count > 1) &&
            slot_json(&slots[i], &slots[i].res->err) != ES_OK) {
            slots[i].res->status = slots[i].res->err.status;
            memmove(&slots[i], &slots[i + 1], (*n - i - 1) * sizeof *slots);
            (*n)--;
            i--;
        }
    return nbatch;
}

static es_status run_slots(es_store *s, slot *slots, size_t n, run_arrays *arrays);

/*
 * The second pass of a pipeline whose results were read with status st:
 * a rolled-back one again one append per transaction, and the fast
 * statements that found another version through es_append, which tells a
 * conflict from a retry.  Returns ES_OK or ES_EUNAVAILABLE.
 */
static es_status
second_pass(es_store *s, slot *slots, size_t n, run_arrays *arrays, es_status st)
{
    size_t i, m;
    es_error err;

    if (st == ES_EUNAVAILABLE)
        return st;
    for (i = m = 0; i < n && st == ES_OK; i++)
        m += slots[i].retry;
    if (st == ES_OK && m == 0)
        return ES_OK;
    /* The connection may have gone since the pipeline was read. */
    if (ensure_ready(s, &err) != ES_OK) {
        for (i = 0; i < n; i++)
            if (st != ES_OK || slots[i].retry)
                slots[i].res->err = err;
        return ES_EUNAVAILABLE;
    }
    if (st != ES_OK) {
        for (i = 0; i < n; i++)
            if (append_one(s, &slots[i]) == ES_EUNAVAILABLE)
                return ES_EUNAVAILABLE;
        return ES_OK;
    }
    for (i = m = 0; i < n; i++) {
        if (slots[i].retry) {
            slots[i].retry = false;
            slots[m++] = slots[i];
        }
    }
    return m > 0 ? run_slots(s, slots, m, arrays) : ES_OK;
}

/*
 * Runs slots as one transaction (pipelined when more than one), then the
 * second pass.  Returns ES_OK or ES_EUNAVAILABLE; the appends it did not
 * answer keep their "did not run" result.
 */
static es_status
run_slots(es_store *s, slot *slots, size_t n, run_arrays *arrays)
{
    es_error err;
    es_status st;

    slots_prepare(slots, &n);
    if (n == 0)
        return ES_OK;
    if (n == 1 && slots[0].full)
        return append_one(s, &slots[0]) == ES_EUNAVAILABLE ? ES_EUNAVAILABLE : ES_OK;
    if ((st = send_slots(s, slots, n, arrays, false)) != ES_OK)
        return st == ES_EUNAVAILABLE ? st : ES_OK;
    st = recv_slots(s, slots, n, &err, NULL, NULL);
    return second_pass(s, slots, n, arrays, st);
}

/*
 * Validates reqs[from..n) into b's slots until it holds BATCH_MAX, in
 * stream order; invalid requests are answered now.  Returns the index
 * after the last request taken.
 */
static size_t
batch_fill(es_store *s, es__append_batch *b, const es_append_req *reqs, size_t from,
           size_t n, es_append_result *res)
{
    size_t done;

    b->n = 0;
    b->sent = false;
    es_buf_reset(&b->params);
    for (done = from; done < n && b->n < BATCH_MAX; done++) {
        es_status st = check_request(s, &reqs[done], &res[done].err);

        if (st == ES_OK)
            st = slot_init(&b->slots[b->n], &reqs[done], &res[done], done, &b->params,
                           &res[done].err);
        if (st != ES_OK) {
            res[done].status = st;
            continue;
        }
        b->n++;
    }
    qsort(b->slots, b->n, sizeof *b->slots, cmp_slots);
    return done;
}

/* Attempts to learn a lost batch's outcome, and the pause before each
 * attempt after the first (doubled each time). */
#define RESOLVE_ATTEMPTS 4
#define RESOLVE_PAUSE_MS 100
/* How long the session that was lost may take to end once told to. */
#define FENCE_WAIT_MS "5000"

/*
 * Ends the server session s->lost if it still runs (a connection the
 * client gave up on may still be running its last batch, and commit it
 * later), and waits until it has ended: then whatever it had sent is
 * committed or rolled back for good.  The session is matched by its
 * process and start time, so a later session that reuses the process id
 * is left alone.  ES_OK once it is gone.
 */
static es_status
fence(es_store *s, es_error *err)
{
    char pid[ES_INT_TEXT_MAX];
    const char *values[2] = {pid, s->lost.start};
    static const char *const sql[2] = {
        "SELECT pg_terminate_backend(pid, " FENCE_WAIT_MS ") FROM pg_stat_activity "
        "WHERE pid = $1::int AND pid <> pg_backend_pid() AND ($2 = '' OR backend_start::text = $2)",
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE pid = $1::int AND pid <> pg_backend_pid() AND ($2 = '' OR backend_start::text = $2)",
    };
    es_status st = ES_OK;

    if (s->lost.pid == 0)
        return ES_OK;
    es_int_text(pid, s->lost.pid);
    for (int i = 0; i < 2 && st == ES_OK; i++) {
        PGresult *r = exec_params(s, sql[i], 2, values);

        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            st = pg_failure(s, r, "end the lost session", err);
        else if (i == 1 && strcmp(PQgetvalue(r, 0, 0), "0") != 0)
            st = es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                              "the lost session %d has not ended", s->lost.pid);
        PQclear(r);
    }
    if (st == ES_OK)
        s->lost.pid = 0;        /* gone: nothing of it can commit any more */
    return st;
}

/*
 * Answers the unknown slots from the store: an append whose first event
 * id is stored was committed (all its events were, in one transaction),
 * and is answered as written, with its versions and position; one whose
 * id is not was not, and stays unavailable, now known not written.
 */
static es_status
lookup(es_store *s, slot *slots, size_t n, es_error *err)
{
    static const char sql[] =
        "SELECT f.event_id::text, f.stream_id, f.version - f.append_index, f.append_size, "
        "l.global_position, l.transaction_id FROM es_events f "
        "JOIN es_events l ON l.stream_id = f.stream_id "
        "AND l.version = f.version - f.append_index + f.append_size - 1 "
        "WHERE f.event_id = ANY ($1::uuid[])";
    es_buf ids = ES_BUF_INIT;
    const char *values[1];
    PGresult *r;
    size_t i;

    es_buf_puts(&ids, "{");
    for (i = 0; i < n; i++) {
        if (slots[i].unknown) {
            es_buf_puts(&ids, ids.len > 1 ? "," : "");
            es_buf_puts(&ids, slots[i].id);
        }
    }
    es_buf_puts(&ids, "}");
    if (es_buf_failed(&ids)) {
        es_buf_free(&ids);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not look up a lost batch");
    }
    values[0] = ids.data;
    r = exec_params(s, sql, 1, values);
    es_buf_free(&ids);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        es_status st = pg_failure(s, r, "look up a lost batch", err);

        PQclear(r);
        return st;
    }
    for (i = 0; i < n; i++) {
        slot *sl = &slots[i];
        es_append_result *res = sl->res;
        int row;

        if (!sl->unknown)
            continue;
        sl->unknown = false;
        for (row = 0; row < PQntuples(r); row++)
            if (strcasecmp(PQgetvalue(r, row, 0), sl->id) == 0)
                break;
        es_error_clear(&res->err);
        if (row == PQntuples(r)) {
            res->status = es_error_set(&res->err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                                       "could not append to stream \"%.60s\": the store "
                                       "connection was lost and the append was not written",
                                       sl->req->stream);
        } else if (strcmp(PQgetvalue(r, row, 1), sl->req->stream) != 0 ||
                   get_i64(r, row, 3) != (int64_t)sl->req->count) {
            res->status = es_error_set(&res->err, ES_EIDCLASH, "event_id_clash", "events",
                                       "could not append to stream \"%s\": some of its event "
                                       "ids were written by a different append", sl->req->stream);
        } else {
            res->status = ES_OK;
            res->duplicate = false;
            res->first_version = get_i64(r, row, 2);
            res->last_version = res->first_version + (int64_t)sl->req->count - 1;
            res->position.gpos = get_i64(r, row, 4);
            res->position.txid = get_u64(r, row, 5);
        }
    }
    PQclear(r);
    return ES_OK;
}

/*
 * The appends sent on a connection that went before their results came
 * (the unknown slots) may or may not be committed.  Learns which, on a
 * new connection, once the lost session has ended: each is then answered
 * as written or as not written, never "unavailable" while it is stored
 * (a client would retry it with new ids and append it twice).  When the
 * store cannot be asked, they are answered append_outcome_unknown.
 */
static void
resolve_unknown(es_store *s, slot *slots, size_t n)
{
    es_error err;
    size_t i, m = 0;

    for (i = 0; i < n; i++)
        m += slots[i].unknown;
    if (m == 0)
        return;
    for (int attempt = 0; attempt < RESOLVE_ATTEMPTS; attempt++) {
        if (attempt > 0) {
            long ms = (long)RESOLVE_PAUSE_MS << (attempt - 1);
            struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};

            nanosleep(&pause, NULL);
        }
        if (ensure_ready(s, &err) == ES_OK && fence(s, &err) == ES_OK &&
            lookup(s, slots, n, &err) == ES_OK)
            return;
    }
    for (i = 0; i < n; i++) {
        if (!slots[i].unknown)
            continue;
        slots[i].unknown = false;
        es_error_clear(&slots[i].res->err);
        slots[i].res->status = es_error_set(
            &slots[i].res->err, ES_EUNAVAILABLE, "append_outcome_unknown", NULL,
            "could not append to stream \"%.60s\": the store connection was lost while the "
            "append was committed, and whether it was is not known: retry it with the same "
            "event ids (or Idempotency-Key), which answers the first result if it was",
            slots[i].req->stream);
    }
}

/* Names the stream in the message of every append the store could not
 * answer: it did not run (or, if the connection went during the commit,
 * may have: resolve_unknown tells). */
static void
unavailable_messages(es_store *s, const es_append_req *reqs, size_t n, es_append_result *res)
{
    char why[256];

    snprintf(why, sizeof why, "%s", s->conn ? PQerrorMessage(s->conn) : "");
    why[strcspn(why, "\n")] = '\0';
    for (size_t i = 0; i < n; i++)
        if (res[i].status == ES_EUNAVAILABLE && why[0] != '\0')
            snprintf(res[i].err.message, sizeof res[i].err.message,
                     "could not append to stream \"%.60s\": %.200s", reqs[i].stream, why);
}

es_status
es__append_send(es_store *s, es__append_batch *b, const es_append_req *reqs, size_t n,
                es_append_result *res, bool early)
{
    es_error err;

    for (size_t i = 0; i < n; i++)
        result_reset(&res[i]);
    b->st = ES_OK;
    batch_fill(s, b, reqs, 0, n, res);
    b->nbatch = slots_prepare(b->slots, &b->n);
    if (b->n == 0)
        return ES_OK;
    if (s->inflight == 0 && ensure_ready(s, &err) != ES_OK) {
        for (size_t i = 0; i < b->n; i++)
            b->slots[i].res->err = err;
        b->st = ES_EUNAVAILABLE;
        unavailable_messages(s, reqs, n, res);
        return ES_EUNAVAILABLE;
    }
    if (!s->ready || send_slots(s, b->slots, b->n, b->arrays, early) != ES_OK) {
        b->st = ES_EUNAVAILABLE;    /* answered: no second pass */
        unavailable_messages(s, reqs, n, res);
        return ES_EUNAVAILABLE;
    }
    b->sent = true;
    b->early = early;
    b->gen = s->gen;
    b->sess = s->sess;
    return ES_OK;
}

bool
es__append_recv(es_store *s, es__append_batch *b, void (*ran)(void *), void *ctx)
{
    if (!b->sent)
        return false;
    b->sent = false;
    if (b->gen != s->gen || !s->ready) {
        /* the connection went after it was sent: the server may have
         * run and committed it */
        slots_lost(s, b->slots, b->n, &b->err, &b->sess);
        b->st = ES_EUNAVAILABLE;
        return false;
    }
    b->st = recv_slots(s, b->slots, b->n, &b->err, b->early ? ran : NULL, ctx);
    if (b->st != ES_OK)
        return b->st == ES_EINTERNAL;
    for (size_t i = 0; i < b->n; i++)
        if (b->slots[i].retry)
            return true;
    return false;
}

void
es__append_finish(es_store *s, es__append_batch *b, const es_append_req *reqs, size_t n,
                  es_append_result *res)
{
    if (b->st == ES_EUNAVAILABLE ||
        second_pass(s, b->slots, b->n, b->arrays, b->st) == ES_EUNAVAILABLE) {
        unavailable_messages(s, reqs, n, res);
        resolve_unknown(s, b->slots, b->n);
    }
    b->n = 0;
}

es_status
es_store_append_many(es_store *s, const es_append_req *reqs, size_t n,
                     es_append_result *res)
{
    es__append_batch *b;
    size_t i, done = 0;
    es_error err;

    for (i = 0; i < n; i++)
        result_reset(&res[i]);
    if (s->own == NULL && (s->own = es__append_batch_new()) == NULL) {
        for (i = 0; i < n; i++)
            res[i].status = es_error_set(&res[i].err, ES_ENOMEM, NULL, NULL,
                                         "could not allocate a batch");
        return ES_ENOMEM;
    }
    b = s->own;
    while (done < n) {
        done = batch_fill(s, b, reqs, done, n, res);
        if (b->n == 0)
            continue;
        if (ensure_ready(s, &err) != ES_OK) {
            for (i = 0; i < b->n; i++)
                b->slots[i].res->err = err;
            goto unavailable;
        }
        if (run_slots(s, b->slots, b->n, b->arrays) == ES_EUNAVAILABLE)
            goto unavailable;
    }
    return ES_OK;

unavailable:
    unavailable_messages(s, reqs, n, res);
    resolve_unknown(s, b->slots, b->n);
    return ES_EUNAVAILABLE;
}

es_status
es_store_append(es_store *s, const es_append_req *req, es_append_result *res)
{
    es_store_append_many(s, req, 1, res);
    return res->status;
}

static es_status run_read(es_store *s, const char *stmt, const char *sql, int nparams,
                          const char *const *values, size_t limit, es_position after,
                          es_page **out, es_error *err);

static es_status
exec_simple(es_store *s, const char *stmt, es_error *err)
{
    PGresult *r = exec_prepared(s, stmt, 0, NULL);
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
            st = slot_init(&slots[i], &reqs[i], &res[i], i, &s->params, &res[i].err);
        if (st == ES_OK) {
            slots[i].full = true;
            st = slot_json(&slots[i], &res[i].err);
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
        const char *values[SLOT_PARAMS], *stmt;
        int nparams = 0;
        PGresult *r;

        stmt = slot_statement(&slots[i], values, &nparams);
        r = exec_prepared(s, stmt, nparams, values);
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
                PGresult *rb = exec_sql(s, "ROLLBACK");
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
        bool lost = !s->ready;  /* during the COMMIT: it may have committed */

        if (PQstatus(s->conn) == CONNECTION_OK && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
            PQclear(exec_sql(s, "ROLLBACK"));
        for (i = 0; i < n; i++) {
            res[i].status = st;
            res[i].err = err;
            slots[i].unknown = lost;
        }
        if (lost) {
            s->lost = s->sess;
            resolve_unknown(s, slots, n);
            for (i = 0, st = ES_OK; i < n && st == ES_OK; i++)
                if ((st = res[i].status) != ES_OK)
                    *failed = i;
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
    st = run_read(s, "es_event_by_id", NULL, 1, &event_id, 1, none, out, err);
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
 * in the nres results rs into a page that takes ownership of rs and of
 * every result in it (also on failure).
 */
static es_status
make_page(es_store *s, PGresult **rs, size_t nres, bool with_version, es_position after,
          es_page **out, es_error *err)
{
    es_page *p = NULL;
    page_storage *ps = NULL;
    size_t rows = 0, n = 0, k;
    es_status st = ES_OK;

    for (k = 0; k < nres; k++)
        rows += (size_t)PQntuples(rs[k]);
    if ((p = calloc(1, sizeof *p)) == NULL || (ps = calloc(1, sizeof *ps)) == NULL) {
        for (k = 0; k < nres; k++)
            PQclear(rs[k]);
        free(rs);
        free(p);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a page");
    }
    ps->res = rs;               /* from here on the page owns them */
    ps->nres = nres;
    p->priv_ = ps;
    if (rows > 0 && ((p->events = calloc(rows, sizeof *p->events)) == NULL ||
                     (ps->times = malloc(rows * sizeof *ps->times)) == NULL)) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a page of %zu events",
                          rows);
        goto fail;
    }
    p->next = after;
    /* Stream reads lead with the stream's version; the others do not. */
    p->stream_version = rows > 0 && with_version ? get_i64(rs[0], 0, 0) : -1;
    for (k = 0; k < nres; k++) {
        PGresult *r = rs[k];

        for (int i = 0; i < PQntuples(r); i++) {
            es_event *e = &p->events[n];
            int c = with_version ? 1 : 0;

            if (PQgetisnull(r, i, c))   /* a stream with no event in range */
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
    }
    p->count = n;
    *out = p;
    return ES_OK;

fail:
    es_page_destroy(p);         /* clears the results too */
    return st;
}

es_status
es__store_page(es_store *s, PGresult *r, es_page **out, es_error *err)
{
    es_position none = {0, 0};
    PGresult **rs = malloc(sizeof *rs);

    *out = NULL;
    if (rs == NULL) {
        PQclear(r);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a page");
    }
    rs[0] = r;
    return make_page(s, rs, 1, false, none, out, err);
}

/* The bytes a row of r takes in a page: its values and a little more. */
static size_t
row_bytes(const PGresult *r)
{
    size_t n = 64;

    for (int c = 0; c < PQnfields(r); c++)
        n += (size_t)PQgetlength(r, 0, c) + 1;
    return n;
}

/*
 * Runs a read, the prepared statement stmt or else the text sql (audit.c's
 * reads), and turns its rows into a page.  With a read
 * budget B the rows come one at a time (libpq's single-row mode) and the
 * page stops, once it holds B/2 bytes, at the first row after which the
 * rest of the row limit (estimated from the mean row) would take it past
 * B: so a page holds at most B and one row, one row at least (a reader
 * always moves on), and a page that would end a little after B/2 is not
 * cut short only to read its last rows again.  The truncated flag says
 * it stopped.  Rows the page does not take are read and dropped one at a
 * time; when they would be many bytes, the query is cancelled instead.
 */
static es_status
run_read(es_store *s, const char *stmt, const char *sql, int nparams, const char *const *values,
         size_t limit, es_position after, es_page **out, es_error *err)
{
    PGresult **rs = NULL, *r, *failed = NULL;
    size_t n = 0, cap = 0, bytes = 0, left;
    bool single, stopped = false;
    es_status st;

    *out = NULL;
    if ((st = ensure_ready(s, err)) != ES_OK)
        return st;
    if ((stmt != NULL ? PQsendQueryPrepared(s->conn, stmt, nparams, values, NULL, NULL, 0)
                      : PQsendQueryParams(s->conn, sql, nparams, NULL, values, NULL, NULL, 0)) != 1)
        return pg_failure(s, NULL, "read events", err);
    single = s->read_budget > 0 && PQsetSingleRowMode(s->conn) == 1;
    s->row_mode_left = single;
    while ((r = get_result(s)) != NULL) {
        ExecStatusType rst = PQresultStatus(r);

        if (rst != PGRES_SINGLE_TUPLE && rst != PGRES_TUPLES_OK) {
            /* our cancel, once the page was full, is no failure */
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            if (stopped && state != NULL && strcmp(state, "57014") == 0)
                PQclear(r);
            else if (failed == NULL)
                failed = r;
            else
                PQclear(r);
            continue;
        }
        if (stopped || failed != NULL || (rst == PGRES_TUPLES_OK && single)) {
            PQclear(r);         /* past the budget, or the end of the rows */
            continue;
        }
        if (n == cap) {
            size_t grown_cap = cap ? cap * 2 : 16;
            PGresult **grown = realloc(rs, grown_cap * sizeof *grown);
            if (grown == NULL) {
                PQclear(r);
                failed = NULL;
                st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a page");
                stopped = true;
                continue;
            }
            rs = grown;
            cap = grown_cap;
        }
        rs[n++] = r;
        if (!single)
            continue;
        bytes += row_bytes(r);
        left = n < limit ? (limit - n) * (bytes / n) : 0;
        if (left > 0 && bytes >= s->read_budget / 2 && bytes + left > s->read_budget) {
            PGcancel *cancel;
            char why[256];

            stopped = true;
            if (left > s->read_budget / 4 && (cancel = PQgetCancel(s->conn)) != NULL) {
                (void)PQcancel(cancel, why, sizeof why);
                PQfreeCancel(cancel);
            }
        }
    }
    if (failed != NULL || st != ES_OK || s->timed_out || PQstatus(s->conn) != CONNECTION_OK) {
        if (st == ES_OK)
            st = pg_failure(s, failed, "read events", err);
        PQclear(failed);
        while (n > 0)
            PQclear(rs[--n]);
        free(rs);
        return st;
    }
    if ((st = make_page(s, rs, n, stmt != NULL && strncmp(stmt, "es_stream_", 10) == 0, after,
                        out, err)) == ES_OK)
        (*out)->truncated = stopped;
    return st;
}

/* A stream read's answer: a page without the stream's row means the
 * stream does not exist (ES_ENOTFOUND, the page destroyed). */
static es_status
stream_page(es_status st, const char *stream, es_page **out, es_error *err)
{
    if (st == ES_OK && (*out)->stream_version < 0) {
        es_page_destroy(*out);
        *out = NULL;
        return es_error_set(err, ES_ENOTFOUND, "stream_not_found", "stream",
                            "stream \"%s\" does not exist", stream);
    }
    return st;
}

es_status
es__store_read_snapshot(es_store *s, const char *stream, int state_version, size_t limit,
                        es_page **out, const char **snap_version, const char **snap_state,
                        es_error *err)
{
    char vlimit[24], vstate[16];
    const char *values[3] = {stream, vlimit, vstate};
    es_position none = {0, 0};
    const page_storage *ps;
    es_status st;

    *out = NULL;
    *snap_version = *snap_state = NULL;
    es_error_clear(err);
    if ((st = es_stream_id_check(stream, "stream", err)) != ES_OK)
        return st;
    snprintf(vlimit, sizeof vlimit, "%zu", limit);
    snprintf(vstate, sizeof vstate, "%d", state_version);
    st = stream_page(run_read(s, "es_stream_snap", NULL, 3, values, limit, none, out, err),
                     stream, out, err);
    if (st != ES_OK)
        return st;
    /* the snapshot's columns follow the event's, on the first row */
    ps = (*out)->priv_;
    if (ps->nres > 0 && PQntuples(ps->res[0]) > 0 && !PQgetisnull(ps->res[0], 0, 11)) {
        *snap_version = PQgetvalue(ps->res[0], 0, 11);
        if (!PQgetisnull(ps->res[0], 0, 12))
            *snap_state = PQgetvalue(ps->res[0], 0, 12);
    }
    return ES_OK;
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
    st = run_read(s, dir == ES_FORWARD ? "es_stream_fwd" : "es_stream_bwd", NULL, 3, values, limit,
                  none, out, err);
    return stream_page(st, stream, out, err);
}

es_status
es__store_read(es_store *s, const char *sql, int nparams, const char *const *values,
               size_t limit, es_position after, es_page **out, es_error *err)
{
    es_error_clear(err);
    return run_read(s, NULL, sql, nparams, values, limit, after, out, err);
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
    return run_read(s, category ? "es_category" : "es_feed", NULL, category ? 4 : 3, values, limit,
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
    r = exec_prepared(s, "es_head", 0, NULL);
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

es_status
es_store_ping(es_store *s, int timeout_ms, es_error *err)
{
    int saved = s->answer_ms;
    es_position head;
    es_status st;

    s->answer_ms = timeout_ms;
    st = es_store_feed_head(s, &head, err);
    s->answer_ms = saved;
    return st;
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
        for (size_t i = 0; i < ps->nres; i++)
            PQclear(ps->res[i]);
        free(ps->res);
        free(ps);
    }
    free(p->events);
    free(p);
}
