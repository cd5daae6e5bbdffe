/*
 * The saga as it is persisted, in one place: its stream and event types,
 * its state and the fold that derives it, the saga manager's tables, and
 * what an operator may do to a saga.  es-saga (engine.c, intake.c) and
 * esctl (cli/sagas.c, cli/verify.c) link this file, so the SQL of
 * es_saga_work, es_saga_inbox, es_saga_dead_letters and
 * es_saga_checkpoint is written here only.  A saga's stream is read and
 * appended to through the event store's client (store.h, audit.h): no
 * SQL here touches the event store's own tables.
 *
 * The engine and the intake get ES_EUNAVAILABLE for any database failure
 * (they wait it out); the operator's reads and operations get
 * postgres_unavailable or postgres_error as esctl reports them for the
 * manager's tables, and the store's errors for its streams.
 */
#include "saga.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "buf.h"
#include "pg.h"
#include "uuid.h"

#define CHECKPOINT "intake"     /* the intake's row of es_saga_checkpoint */

/* ---- the stream and the state ------------------------------------------------ */

static const char *const state_texts[SG_STATE_COUNT] = {
    [SG_RUNNING] = "running",
    [SG_COMPLETED] = "completed",
    [SG_COMPENSATING] = "compensating",
    [SG_COMPENSATED] = "compensated",
    [SG_FAILED] = "failed",
};

void
sg_saga_stream(char *buf, size_t size, const char *saga_id)
{
    snprintf(buf, size, SG_STREAM_PREFIX "%s", saga_id);
}

const char *
sg_state_text(sg_state s)
{
    return (unsigned)s < SG_STATE_COUNT ? state_texts[s] : "unknown";
}

bool
sg_state_parse(const char *text, sg_state *out)
{
    int i;

    for (i = 0; text && i < SG_STATE_COUNT; i++)
        if (strcmp(text, state_texts[i]) == 0) {
            *out = (sg_state)i;
            return true;
        }
    return false;
}

bool
sg_state_fold(sg_state *state, const char *type, const json_t *data)
{
    if (strcmp(type, SG_EV_STARTED) == 0)
        *state = SG_RUNNING;
    else if (strcmp(type, SG_EV_STATE_CHANGED) == 0)
        return sg_state_parse(json_string_value(json_object_get(data, "to")), state);
    return true;
}

/* ---- running SQL -------------------------------------------------------------- */

/* The first line of pg's error message. */
static const char *
pg_why(PGconn *pg, char *buf, size_t size)
{
    snprintf(buf, size, "%s", PQerrorMessage(pg));
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

/* A failure of the engine's or the intake's SQL: they wait it out. */
static es_status
unavailable(PGconn *pg, es_error *err, const char *what)
{
    char why[256];

    return es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL, "%s: %s", what,
                        pg_why(pg, why, sizeof why));
}

/* A failure of an operator's SQL, as esctl reports it. */
static es_status
pg_failed(PGconn *pg, es_error *err)
{
    char why[256];
    bool down = PQstatus(pg) != CONNECTION_OK;

    return es_error_set(err, down ? ES_EUNAVAILABLE : ES_EINTERNAL,
                        down ? "postgres_unavailable" : "postgres_error", NULL, "%s",
                        pg_why(pg, why, sizeof why));
}

/* r when it succeeded (PQclear it), else NULL (r cleared). */
static PGresult *
succeeded(PGresult *r)
{
    if (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK)
        return r;
    PQclear(r);
    return NULL;
}

/* Runs sql; its result when it succeeded (PQclear it), else NULL. */
static PGresult *
run(PGconn *pg, const char *sql, int n, const char *const *p)
{
    return succeeded(PQexecParams(pg, sql, n, NULL, p, NULL, NULL, 0));
}

/* As run, for the statements every saga runs: prepared once per
 * connection (never a transaction's BEGIN, COMMIT or ROLLBACK: preparing
 * fails in an aborted transaction). */
static PGresult *
run_hot(PGconn *pg, const char *sql, int n, const char *const *p)
{
    return succeeded(es_pg_exec_cached(pg, sql, n, p));
}

/* Whether r (run's or run_hot's) succeeded; clears it. */
static bool
ran(PGresult *r)
{
    PQclear(r);
    return r != NULL;
}

static bool
run_hot_ok(PGconn *pg, const char *sql, int n, const char *const *p)
{
    return ran(run_hot(pg, sql, n, p));
}

static bool
run_ok(PGconn *pg, const char *sql, int n, const char *const *p)
{
    return ran(run(pg, sql, n, p));
}

/* A count of one row and column into *n. */
static es_status
count(PGconn *pg, const char *sql, long long *n, es_error *err)
{
    PGresult *r = run(pg, sql, 0, NULL);

    *n = -1;
    if (r == NULL || PQntuples(r) != 1) {
        PQclear(r);
        return pg_failed(pg, err);
    }
    *n = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return ES_OK;
}

/* A query returning one JSON text (or NULL for []) into *out. */
static es_status
json_rows(PGconn *pg, const char *sql, int n, const char *const *p, json_t **out,
          es_error *err)
{
    PGresult *r = run(pg, sql, n, p);

    *out = NULL;
    if (r == NULL)
        return pg_failed(pg, err);
    *out = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)
               ? json_loads(PQgetvalue(r, 0, 0), JSON_DECODE_ANY, NULL) : json_array();
    PQclear(r);
    if (*out == NULL)
        return es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not decode the rows");
    return ES_OK;
}

/* ---- work ----------------------------------------------------------------------- */

/* A claim's token is its claimed_until as the database wrote it: a later
 * claim of the same row writes a later one (it is made only once the
 * earlier has run out, and a lease is positive), so a worker whose claim
 * was taken over no longer matches, and what it does to the row (renew,
 * release, defer, finish) is a no-op. */
#define FENCE "saga_id = $1 AND claimed_until = $2::timestamptz"

/* Runs an UPDATE or DELETE fenced by a claim; *held false when it matched
 * no row (the claim is another worker's now, or the row is gone). */
static es_status
fenced(PGconn *pg, const char *sql, int n, const char *const *p, bool *held, es_error *err,
       const char *what)
{
    PGresult *r = run_hot(pg, sql, n, p);

    if (r == NULL)
        return unavailable(pg, err, what);
    *held = atoi(PQcmdTuples(r)) > 0;
    PQclear(r);
    return ES_OK;
}

static void
take_row(PGresult *r, int i, sg_work *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->saga_id, sizeof out->saga_id, "%s", PQgetvalue(r, i, 0));
    snprintf(out->flow, sizeof out->flow, "%s", PQgetvalue(r, i, 1));
    out->input = strdup(PQgetvalue(r, i, 2));
    out->failures = atoi(PQgetvalue(r, i, 3));
    out->wakes = atoi(PQgetvalue(r, i, 4));
    snprintf(out->claim, sizeof out->claim, "%s", PQgetvalue(r, i, 5));
    out->taken_over = PQgetvalue(r, i, 6)[0] == 't';
}

es_status
sg_work_claim_many(PGconn *pg, int lease_ms, int max, sg_work *out, int *n, es_error *err)
{
    char lease[16], sql[640];
    const char *p[1] = {lease};
    PGresult *r;
    int i;

    *n = 0;
    snprintf(lease, sizeof lease, "%d", lease_ms);
    /* a statement of its own: no transaction stays open while they run */
    /* a row whose claim ran out without being released ('-infinity') is
     * taken over from a worker that died or stalled */
    /* The limit is written into the text (one prepared statement per
     * limit, ES_SAGA_CLAIM_BATCH at most): as a parameter, the plan the server keeps for
     * the prepared statement guessed a tenth of the table for it and
     * joined a scan of the whole work table to the claimed rows, instead
     * of looking each claimed row up by its key (saga/README.md,
     * "Statements per saga, ranked"). */
    snprintf(sql, sizeof sql,
             "UPDATE es_saga_work w SET claimed_until = now() + $1::int * interval '1 ms' "
             "FROM (SELECT saga_id, claimed_until AS prev FROM es_saga_work "
             "WHERE due_at <= now() AND claimed_until <= now() ORDER BY due_at "
             "LIMIT %d FOR UPDATE SKIP LOCKED) o WHERE w.saga_id = o.saga_id "
             "RETURNING w.saga_id, w.flow, w.input::text, w.failures, w.wakes, "
             "w.claimed_until::text, o.prev <> '-infinity'",
             max < 1 ? 1 : max);
    r = run_hot(pg, sql, 1, p);
    if (r == NULL)
        return unavailable(pg, err, "could not claim work");
    for (i = 0; i < PQntuples(r) && i < max; i++)
        take_row(r, i, &out[i]);
    *n = i;
    PQclear(r);
    return ES_OK;
}

es_status
sg_work_claim(PGconn *pg, int lease_ms, sg_work *out, bool *found, es_error *err)
{
    int n = 0;
    es_status st;

    memset(out, 0, sizeof *out);
    st = sg_work_claim_many(pg, lease_ms, 1, out, &n, err);
    *found = n == 1;
    return st;
}

es_status
sg_work_renew(PGconn *pg, const char *saga_id, char *claim, size_t size, int64_t lease_ms,
              bool *held, es_error *err)
{
    char lease[32];
    const char *p[3] = {saga_id, claim, lease};
    PGresult *r;

    snprintf(lease, sizeof lease, "%" PRId64, lease_ms);
    r = run_hot(pg, "UPDATE es_saga_work SET claimed_until = now() + $3::bigint * interval '1 ms' "
                "WHERE " FENCE " RETURNING claimed_until::text", 3, p);
    if (r == NULL)
        return unavailable(pg, err, "could not renew a claim");
    *held = PQntuples(r) == 1;
    if (*held)
        snprintf(claim, size, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return ES_OK;
}

/* Appends text to b, an array literal being built, as a quoted element. */
static void
array_add(es_buf *b, const char *text)
{
    es_buf_puts(b, b->len > 1 ? ",\"" : "\"");
    for (const char *c = text; *c; c++) {
        if (*c == '"' || *c == '\\')
            es_buf_append(b, "\\", 1);
        es_buf_append(b, c, 1);
    }
    es_buf_append(b, "\"", 1);
}

es_status
sg_work_renew_many(PGconn *pg, size_t n, const char *const *saga_ids,
                   char (*claims)[SG_CLAIM_MAX], int64_t lease_ms, bool *held, es_error *err)
{
    es_buf ids = {0}, toks = {0};
    char lease[32];
    const char *p[3];
    PGresult *r = NULL;
    size_t i;
    int k;

    es_buf_puts(&ids, "{");
    es_buf_puts(&toks, "{");
    for (i = 0; i < n; i++) {
        held[i] = false;
        array_add(&ids, saga_ids[i]);
        array_add(&toks, claims[i]);
    }
    es_buf_puts(&ids, "}");
    es_buf_puts(&toks, "}");
    if (es_buf_failed(&ids) || es_buf_failed(&toks)) {
        es_buf_free(&ids);
        es_buf_free(&toks);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    }
    snprintf(lease, sizeof lease, "%" PRId64, lease_ms);
    p[0] = ids.data, p[1] = toks.data, p[2] = lease;
    r = run_hot(pg, "UPDATE es_saga_work w SET claimed_until = now() + $3::bigint * interval '1 ms' "
                "FROM unnest($1::text[], $2::timestamptz[]) AS h(saga_id, claim) "
                "WHERE w.saga_id = h.saga_id AND w.claimed_until = h.claim "
                "RETURNING w.saga_id, w.claimed_until::text", 3, p);
    es_buf_free(&ids);
    es_buf_free(&toks);
    if (r == NULL)
        return unavailable(pg, err, "could not renew the claims");
    for (k = 0; k < PQntuples(r); k++)
        for (i = 0; i < n; i++)
            if (!held[i] && strcmp(saga_ids[i], PQgetvalue(r, k, 0)) == 0) {
                held[i] = true;
                snprintf(claims[i], SG_CLAIM_MAX, "%s", PQgetvalue(r, k, 1));
                break;
            }
    PQclear(r);
    return ES_OK;
}

es_status
sg_work_release(PGconn *pg, const char *saga_id, const char *claim, int64_t due_ms, int wakes,
                bool *held, es_error *err)
{
    char due[32], n[16];
    const char *p[4] = {saga_id, claim, due, n};

    snprintf(due, sizeof due, "%" PRId64, due_ms);
    snprintf(n, sizeof n, "%d", wakes);
    return fenced(pg, "UPDATE es_saga_work SET due_at = CASE WHEN wakes = $4::int "
                      "THEN to_timestamp($3::bigint / 1000.0) ELSE now() END, "
                      "claimed_until = '-infinity', failures = 0, last_error = NULL "
                      "WHERE " FENCE, 4, p, held, err, "could not release work");
}

es_status
sg_work_release_now(PGconn *pg, const char *saga_id, const char *claim, bool *held,
                    es_error *err)
{
    const char *p[2] = {saga_id, claim};

    return fenced(pg, "UPDATE es_saga_work SET due_at = now(), claimed_until = '-infinity' "
                      "WHERE " FENCE, 2, p, held, err, "could not release work");
}

es_status
sg_work_defer(PGconn *pg, const char *saga_id, const char *claim, int64_t delay_ms,
              const char *error, int failures, bool *held, es_error *err)
{
    char delay[32], n[16];
    const char *p[5] = {saga_id, claim, delay, error, n};

    snprintf(delay, sizeof delay, "%" PRId64, delay_ms);
    snprintf(n, sizeof n, "%d", failures);
    return fenced(pg, "UPDATE es_saga_work SET due_at = now() + $3::bigint * interval '1 ms', "
                      "claimed_until = '-infinity', last_error = $4, failures = $5::int "
                      "WHERE " FENCE, 5, p, held, err, "could not defer work");
}

es_status
sg_work_finish(PGconn *pg, const char *saga_id, const char *claim, bool *held, es_error *err)
{
    const char *p[2] = {saga_id, claim};

    return fenced(pg, "DELETE FROM es_saga_work WHERE " FENCE, 2, p, held, err,
                  "could not remove work");
}

es_status
sg_work_start_many(PGconn *pg, const sg_start *starts, size_t n, uint64_t seq,
                   const char *position, es_error *err)
{
    es_buf ids = {0}, flows = {0}, inputs = {0}, delays = {0};
    char cp[32];
    const char *p[6];
    bool ok;

    es_buf_puts(&ids, "{");
    es_buf_puts(&flows, "{");
    es_buf_puts(&inputs, "{");
    es_buf_puts(&delays, "{");
    for (size_t i = 0; i < n; i++) {
        array_add(&ids, starts[i].saga_id);
        array_add(&flows, starts[i].flow);
        array_add(&inputs, starts[i].input);
        es_buf_printf(&delays, i > 0 ? ",%ld" : "%ld", starts[i].delay_ms);
    }
    es_buf_puts(&ids, "}");
    es_buf_puts(&flows, "}");
    es_buf_puts(&inputs, "}");
    es_buf_puts(&delays, "}");
    snprintf(cp, sizeof cp, "%" PRIu64, seq);
    p[0] = ids.data, p[1] = flows.data, p[2] = inputs.data, p[3] = delays.data;
    p[4] = cp, p[5] = position ? position : "";
    ok = !es_buf_failed(&ids) && !es_buf_failed(&flows) && !es_buf_failed(&inputs) &&
         !es_buf_failed(&delays);
    if (ok)
        ok = run_hot_ok(pg, "WITH w AS (INSERT INTO es_saga_work (saga_id, flow, input, due_at) "
                            "SELECT s, f, i::jsonb, now() + d * interval '1 ms' "
                            "FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) "
                            "AS t(s, f, i, d) ON CONFLICT (saga_id) DO NOTHING) "
                            "INSERT INTO es_saga_checkpoint (name, seq, position) "
                            "SELECT '" CHECKPOINT "', $5::bigint, $6 WHERE $5::bigint > 0 "
                            "ON CONFLICT (name) "
                            "DO UPDATE SET seq = excluded.seq, position = excluded.position",
                        6, p);
    es_buf_free(&ids);
    es_buf_free(&flows);
    es_buf_free(&inputs);
    es_buf_free(&delays);
    if (!ok)
        return unavailable(pg, err, "could not start sagas");
    return ES_OK;
}

int
sg_work_next_due_ms(PGconn *pg, int max_ms)
{
    PGresult *r;
    int ms = max_ms;

    if (pg == NULL || PQstatus(pg) != CONNECTION_OK)
        return max_ms;
    /* a claimed row is not due before its claim runs out: counting it would
     * make every idle worker poll in a loop while the sagas run */
    r = run_hot(pg, "SELECT (extract(epoch FROM min(greatest(due_at, claimed_until)) - now()) "
                "* 1000)::bigint FROM es_saga_work", 0, NULL);
    if (r && !PQgetisnull(r, 0, 0)) {
        long long v = atoll(PQgetvalue(r, 0, 0));
        ms = v < 0 ? 0 : v < max_ms ? (int)v : max_ms;
    }
    PQclear(r);
    return ms;
}

es_status
sg_work_count(PGconn *pg, long long *n, es_error *err)
{
    return count(pg, "SELECT count(*) FROM es_saga_work", n, err);
}

/* ---- inbox -------------------------------------------------------------------- */

es_status
sg_inbox_deliver(PGconn *pg, const char *saga_id, const char *event_id, const char *type,
                 const char *data, uint64_t seq, es_error *err)
{
    char n[32];
    const char *p[5] = {saga_id, event_id, type, data, n};

    snprintf(n, sizeof n, "%" PRIu64, seq);
    if (!run_hot_ok(pg, "INSERT INTO es_saga_inbox (saga_id, event_id, type, data, seq) "
                    "VALUES ($1, $2::uuid, $3, $4::jsonb, $5::bigint) ON CONFLICT DO NOTHING",
                5, p) ||
        !run_hot_ok(pg, "UPDATE es_saga_work SET due_at = now(), wakes = wakes + 1 "
                    "WHERE saga_id = $1", 1, p))
        return unavailable(pg, err, "could not deliver to an inbox");
    return ES_OK;
}

es_status
sg_inbox_read(PGconn *pg, const char *saga_id, json_t **events, es_error *err)
{
    const char *p[1] = {saga_id};
    PGresult *r = run_hot(pg, "SELECT type, data::text FROM es_saga_inbox WHERE saga_id = $1 "
                          "ORDER BY seq", 1, p);
    int i;

    *events = NULL;
    if (r == NULL) {
        char what[320];
        snprintf(what, sizeof what, "could not read the inbox of %s", saga_id);
        return unavailable(pg, err, what);
    }
    *events = json_array();
    for (i = 0; i < PQntuples(r); i++)
        json_array_append_new(*events, json_pack("{s:s, s:o}", "type", PQgetvalue(r, i, 0),
                                                 "data", json_loads(PQgetvalue(r, i, 1), 0, NULL)));
    PQclear(r);
    return ES_OK;
}

/* ---- checkpoint --------------------------------------------------------------- */

es_status
sg_checkpoint_read(PGconn *pg, uint64_t *seq, es_error *err)
{
    PGresult *r = run_hot(pg, "SELECT seq FROM es_saga_checkpoint WHERE name = '" CHECKPOINT "'",
                      0, NULL);

    *seq = 0;
    if (r == NULL)
        return unavailable(pg, err, "could not read the saga checkpoint");
    if (PQntuples(r) == 1)
        *seq = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return ES_OK;
}

/* ---- dead letters ------------------------------------------------------------- */

es_status
sg_dead_letter_saga(PGconn *pg, const char *saga_id, const char *claim, const char *flow,
                    const char *input, const char *reason, int attempts, bool *held,
                    es_error *err)
{
    char n[16];
    const char *p[6] = {saga_id, claim, flow, input, reason, n};
    PGresult *r = NULL;

    snprintf(n, sizeof n, "%d", attempts);
    *held = false;
    /* one step: no more work and a dead letter, or neither; only while the
     * claim is still this worker's */
    if (!run_ok(pg, "BEGIN", 0, NULL) ||
        (r = run(pg, "DELETE FROM es_saga_work WHERE " FENCE, 2, p)) == NULL)
        goto fail;
    *held = atoi(PQcmdTuples(r)) > 0;
    PQclear(r);
    if (!*held)
        return run_ok(pg, "ROLLBACK", 0, NULL) ? ES_OK
                                               : unavailable(pg, err, "could not roll back");
    if (!run_ok(pg, "INSERT INTO es_saga_dead_letters (saga_id, flow, payload, reason, attempts) "
                    "VALUES ($1, $2, $3::jsonb, $4, $5::int)", 5,
                (const char *const[]){saga_id, flow, input, reason, n}) ||
        !run_ok(pg, "COMMIT", 0, NULL))
        goto fail;
    return ES_OK;
fail:
    {
        es_status st = unavailable(pg, err, "could not record a dead letter");
        *held = false;
        run_ok(pg, "ROLLBACK", 0, NULL);
        return st;
    }
}

es_status
sg_dead_letter_event(PGconn *pg, const char *flow, const char *event_id,
                     const char *event_type, const char *payload, const char *reason,
                     es_error *err)
{
    const char *p[5] = {flow, event_id, event_type, payload, reason};

    if (event_id && !es_uuid_valid(event_id))
        p[1] = NULL;
    if (!run_ok(pg, "INSERT INTO es_saga_dead_letters (flow, event_id, event_type, payload, "
                    "reason, attempts) VALUES ($1, $2::uuid, $3, $4::jsonb, $5, 1) "
                    "ON CONFLICT DO NOTHING", 5, p))
        return unavailable(pg, err, "could not record a dead letter");
    return ES_OK;
}

es_status
sg_dead_letter_open_count(PGconn *pg, long long *n, es_error *err)
{
    return count(pg, "SELECT count(*) FROM es_saga_dead_letters WHERE replayed_at IS NULL", n,
                 err);
}

es_status
sg_dead_letter_list(PGconn *pg, bool all, json_t **rows, es_error *err)
{
    const char *p[1] = {all ? "t" : "f"};

    return json_rows(pg,
        "SELECT json_agg(json_build_object('id', id, 'created_at', to_char(created_at AT TIME "
        "ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'saga_id', saga_id, 'flow', flow, "
        "'event_type', event_type, 'attempts', attempts, 'reason', reason, 'replayed_at', "
        "to_char(replayed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
        "'payload', payload) ORDER BY id) FROM es_saga_dead_letters "
        "WHERE $1::bool OR replayed_at IS NULL", 1, p, rows, err);
}

/* ---- reading sagas ------------------------------------------------------------- */

/*
 * A saga's events come from the event store's reads (store.h, audit.h);
 * only the manager's own tables are read here with SQL.  What the
 * listing and the timeline show of an event's data is what data->>key
 * shows: data_text.
 */

/* Events of a stream read at a time. */
#define STREAM_PAGE 500

/* What data->>key gives: a string's value, any other value as jsonb
 * prints it (jansson without JSON_COMPACT puts ", " and ": " between
 * items as jsonb does), NULL when absent or null.  *owned (free it) holds
 * a printed value. */
static const char *
data_text(const json_t *data, const char *key, char **owned)
{
    const json_t *v = json_object_get(data, key);

    *owned = NULL;
    if (v == NULL || json_is_null(v))
        return NULL;
    if (json_is_string(v))
        return json_string_value(v);
    return *owned = json_dumps(v, JSON_ENCODE_ANY);
}

/* An event's recorded_at (RFC 3339, microseconds) to milliseconds, as
 * the listing and the timeline show it: "2026-11-22T00:05:01.500Z". */
static void
ms_time(const char *rfc3339, char out[ES_TIME_TEXT_MAX])
{
    size_t n = strlen(rfc3339);

    if (n == 27 && rfc3339[19] == '.' && rfc3339[26] == 'Z')
        snprintf(out, ES_TIME_TEXT_MAX, "%.23sZ", rfc3339);
    else
        snprintf(out, ES_TIME_TEXT_MAX, "%s", rfc3339);
}

/* Calls each for every event of saga_id's stream (data parsed, borrowed),
 * oldest first, and sets *version to the stream's.  ES_ENOTFOUND
 * (saga_not_found) when it has none, also when no stream can be named
 * after saga_id. */
static es_status
stream_each(es_store *store, const char *saga_id, int64_t *version,
            void (*each)(const es_event *ev, const json_t *data, void *arg), void *arg,
            es_error *err)
{
    char stream[sizeof SG_STREAM_PREFIX + ES_STREAM_ID_MAX];
    int64_t from = 0;
    es_page *page = NULL;
    es_status st;
    size_t i;

    if (strlen(saga_id) > ES_STREAM_ID_MAX)
        goto none;
    sg_saga_stream(stream, sizeof stream, saga_id);
    if (es_stream_id_check(stream, "saga_id", err) != ES_OK)
        goto none;
    do {
        es_page_destroy(page);
        st = es_store_read_stream(store, stream, from, STREAM_PAGE, ES_FORWARD, &page, err);
        if (st == ES_ENOTFOUND)
            goto none;
        if (st != ES_OK)
            return st;
        *version = page->stream_version;
        for (i = 0; i < page->count; i++) {
            json_t *data = json_loads(page->events[i].data, 0, NULL);
            each(&page->events[i], data, arg);
            json_decref(data);
        }
        if (page->count > 0)
            from = page->events[page->count - 1].version + 1;
    } while (page->count == STREAM_PAGE || (page->truncated && page->count > 0));
    es_page_destroy(page);
    return ES_OK;
none:
    return es_error_set(err, ES_ENOTFOUND, "saga_not_found", "saga_id", "there is no saga %s",
                        saga_id);
}

/* stream_each's visit for sg_saga_read: the head from the first event,
 * the state folded from all. */
static void
read_event(const es_event *ev, const json_t *data, void *arg)
{
    sg_saga_info *out = arg;

    if (ev->version == 0) {
        char *o1, *o2, *o3;
        const char *id = data_text(data, "saga_id", &o1), *type = data_text(data, "type", &o2),
                   *corr = data_text(data, "correlation_id", &o3);

        snprintf(out->saga_id, sizeof out->saga_id, "%s", id ? id : "");
        snprintf(out->type, sizeof out->type, "%s", type ? type : "");
        snprintf(out->correlation_id, sizeof out->correlation_id, "%s", corr ? corr : "");
        free(o1);
        free(o2);
        free(o3);
    }
    (void)sg_state_fold(&out->state, ev->type, data);
}

es_status
sg_saga_read(PGconn *pg, es_store *store, const char *saga_id, sg_saga_info *out,
             es_error *err)
{
    const char *p[1] = {saga_id};
    PGresult *r;
    es_status st;

    memset(out, 0, sizeof *out);
    out->state = SG_RUNNING;
    if ((st = stream_each(store, saga_id, &out->version, read_event, out, err)) != ES_OK)
        return st;
    r = run(pg, "SELECT (SELECT to_jsonb(w) - 'input' FROM es_saga_work w "
                "WHERE w.saga_id = $1)::text, "
                "(SELECT min(d.id) FROM es_saga_dead_letters d WHERE d.saga_id = $1 "
                "AND d.replayed_at IS NULL)", 1, p);
    if (r == NULL)
        return pg_failed(pg, err);
    if (!PQgetisnull(r, 0, 0))
        out->work = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
    out->dead_letter = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    return ES_OK;
}

void
sg_saga_info_clear(sg_saga_info *info)
{
    json_decref(info->work);
    info->work = NULL;
}

/* (data->>'attempt')::int: an integer, or text that is one; else null. */
static json_t *
attempt_of(const json_t *data)
{
    const json_t *v = json_object_get(data, "attempt");
    const char *t = json_string_value(v);
    char *end;
    long n;

    if (json_is_integer(v))
        return json_integer(json_integer_value(v));
    if (t == NULL)
        return json_null();
    n = strtol(t, &end, 10);
    while (*end == ' ')
        end++;
    return end != t && *end == '\0' ? json_integer(n) : json_null();
}

/* stream_each's visit for sg_saga_timeline: one row per event. */
static void
timeline_event(const es_event *ev, const json_t *data, void *arg)
{
    char at[ES_TIME_TEXT_MAX], *o1, *o2, *o3;
    const char *step = data_text(data, "step", &o1), *error = data_text(data, "error", &o3);

    if (step == NULL)
        step = data_text(data, "to", &o2);
    else
        o2 = NULL;
    ms_time(ev->recorded_at, at);
    json_array_append_new(arg, json_pack("{s:I, s:s, s:s, s:s?, s:o, s:s?, s:O?}", "version",
                                         (json_int_t)ev->version, "recorded_at", at, "type",
                                         ev->type, "step", step, "attempt", attempt_of(data),
                                         "error", error, "data", data));
    free(o1);
    free(o2);
    free(o3);
}

es_status
sg_saga_timeline(es_store *store, const char *saga_id, json_t **rows, es_error *err)
{
    int64_t version;
    es_status st;

    if ((*rows = json_array()) == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    st = stream_each(store, saga_id, &version, timeline_event, *rows, err);
    if (st == ES_ENOTFOUND)
        return ES_OK;           /* no stream: no events */
    if (st != ES_OK) {
        json_decref(*rows);
        *rows = NULL;
    }
    return st;
}

/* A saga's stream and the state folded from it. */
typedef struct folded {
    const char *stream;         /* borrowed from the page of state events */
    sg_state state;
} folded;

static int
folded_cmp(const void *a, const void *b)
{
    return strcmp(((const folded *)a)->stream, ((const folded *)b)->stream);
}

/* The state of each stream of page (a saga stream's events next to each
 * other, oldest first) into *out (free it), sorted by stream. */
static es_status
fold_streams(const es_page *page, folded **out, size_t *n, es_error *err)
{
    folded *f = NULL;
    size_t i;

    *n = 0;
    if (page->count > 0 && (f = calloc(page->count, sizeof *f)) == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not fold %zu events",
                            page->count);
    for (i = 0; i < page->count; i++) {
        const es_event *ev = &page->events[i];
        json_t *data;

        if (*n == 0 || strcmp(f[*n - 1].stream, ev->stream_id) != 0)
            f[(*n)++] = (folded){ev->stream_id, SG_RUNNING};
        data = json_loads(ev->data, 0, NULL);
        (void)sg_state_fold(&f[*n - 1].state, ev->type, data);
        json_decref(data);
    }
    if (*n > 1)
        qsort(f, *n, sizeof *f, folded_cmp);
    *out = f;
    return ES_OK;
}

es_status
sg_saga_list(es_store *store, const sg_saga_filter *f,
             bool (*visit)(const sg_saga_summary *s, void *arg), void *arg, es_error *err)
{
    static const char *const started_types[] = {SG_EV_STARTED};
    static const char *const state_types[] = {SG_EV_STARTED, SG_EV_STATE_CHANGED};
    bool by_type = f->type && f->type[0];
    /* a state filter is applied after the fold, so only without one can
     * the store stop at the limit */
    bool limited = !f->by_state && f->limit > 0;
    es_audit_select started = {SG_CATEGORY, started_types, 1, by_type ? "type" : NULL,
                               by_type ? f->type : NULL, NULL, 0, ES_AUDIT_NEWEST_FIRST,
                               limited ? (size_t)f->limit : 0};
    es_audit_select changes = {SG_CATEGORY, state_types, 2, NULL, NULL, NULL, 0,
                               ES_AUDIT_BY_STREAM, 0};
    es_page *heads = NULL, *states = NULL;
    const char **streams = NULL;
    folded *fs = NULL;
    size_t nfs = 0, i;
    long seen = 0;
    es_status st;

    if ((st = es_audit_events_read(store, &started, &heads, err)) != ES_OK ||
        heads->count == 0)
        goto done;
    if (limited) {
        /* the states of the sagas listed, not of every saga */
        if ((streams = calloc(heads->count, sizeof *streams)) == NULL) {
            st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
            goto done;
        }
        for (i = 0; i < heads->count; i++)
            streams[i] = heads->events[i].stream_id;
        changes.streams = streams;
        changes.nstreams = heads->count;
    }
    if ((st = es_audit_events_read(store, &changes, &states, err)) != ES_OK ||
        (st = fold_streams(states, &fs, &nfs, err)) != ES_OK)
        goto done;
    for (i = 0; i < heads->count && (f->limit <= 0 || seen < f->limit); i++) {
        const es_event *ev = &heads->events[i];
        json_t *data = json_loads(ev->data, 0, NULL);
        folded key = {ev->stream_id, SG_RUNNING}, *hit;
        char at[ES_TIME_TEXT_MAX], *o1, *o2, *o3;
        sg_saga_summary s;
        bool more;

        hit = nfs > 0 ? bsearch(&key, fs, nfs, sizeof *fs, folded_cmp) : NULL;
        s.state = hit ? hit->state : SG_RUNNING;
        if (f->by_state && s.state != f->state) {
            json_decref(data);
            continue;
        }
        ms_time(ev->recorded_at, at);
        s.saga_id = data_text(data, "saga_id", &o1);
        s.type = data_text(data, "type", &o2);
        s.correlation_id = data_text(data, "correlation_id", &o3);
        s.started_at = at;
        seen++;
        more = visit(&s, arg);
        free(o1);
        free(o2);
        free(o3);
        json_decref(data);
        if (!more)
            break;
    }
done:
    free(fs);
    free(streams);
    es_page_destroy(states);
    es_page_destroy(heads);
    return st;
}

/* ---- what an operator does ------------------------------------------------------- */

/* Appends one event (data stolen) to the saga's stream at version expected. */
static es_status
append(es_store *store, const char *saga_id, int64_t expected, const char *type, json_t *data,
       es_error *err)
{
    char stream[300], *text = json_dumps(data, JSON_COMPACT);
    es_new_event ev = {NULL, type, 1, text, NULL};
    es_append_req req = {stream, expected, &ev, 1};
    es_append_result res;

    json_decref(data);
    sg_saga_stream(stream, sizeof stream, saga_id);
    if (text == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    es_store_append(store, &req, &res);
    free(text);
    if (res.status != ES_OK)
        *err = res.err;
    return res.status;
}

/* The data of saga_id's SagaStateChanged to compensating, from state from. */
static json_t *
to_compensating(const char *saga_id, const sg_saga_info *s, sg_state from, const char *why)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "saga_id", saga_id, "type", s->type,
                     "from", sg_state_text(from), "to", sg_state_text(SG_COMPENSATING),
                     "error", why);
}

es_status
sg_dead_letter_replay(PGconn *pg, es_store *store, const char *id, sg_saga_op *out,
                      es_error *err)
{
    const char *p[1] = {id};
    PGresult *r = NULL;
    sg_saga_info head = {0};
    es_status st;

    memset(out, 0, sizeof *out);
    snprintf(out->dead_letter, sizeof out->dead_letter, "%s", id);
    if (!run_ok(pg, "BEGIN", 0, NULL))
        return pg_failed(pg, err);
    r = run(pg, "SELECT saga_id, flow, payload::text, replayed_at IS NOT NULL "
                "FROM es_saga_dead_letters WHERE id = $1::bigint FOR UPDATE", 1, p);
    if (r == NULL) {
        st = pg_failed(pg, err);
        goto done;
    }
    if (PQntuples(r) == 0) {
        st = es_error_set(err, ES_ENOTFOUND, "dead_letter_not_found", "id",
                          "there is no dead letter %s", id);
        goto done;
    }
    if (PQgetvalue(r, 0, 3)[0] == 't') {
        st = es_error_set(err, ES_ECONFLICT, "replayed_already", "id",
                          "dead letter %s was replayed already", id);
        goto done;
    }
    if (PQgetisnull(r, 0, 0)) {
        st = es_error_set(err, ES_ECONFLICT, "not_replayable", "id",
                          "dead letter %s is an event that could not reach a saga: fix its "
                          "cause (see its reason) and append a corrected event", id);
        goto done;
    }
    snprintf(out->saga_id, sizeof out->saga_id, "%s", PQgetvalue(r, 0, 0));
    st = sg_saga_read(pg, store, out->saga_id, &head, err);
    if (st != ES_OK && st != ES_ENOTFOUND)
        goto done;
    if (st == ES_OK) {
        /* A marker the engine folds: refusals are counted afresh, and a
         * failed saga is reopened as compensating. */
        json_t *d;

        out->was_failed = head.state == SG_FAILED;
        out->reopened = true;
        out->state = out->was_failed ? SG_COMPENSATING : head.state;
        d = out->was_failed
                ? to_compensating(out->saga_id, &head, SG_FAILED, "replayed by an operator")
                : json_pack("{s:s, s:s}", "saga_id", out->saga_id, "note",
                            "replayed by an operator");
        st = append(store, out->saga_id, head.version,
                    out->was_failed ? SG_EV_STATE_CHANGED : SG_EV_REPLAYED, d, err);
        if (st != ES_OK)
            goto done;
    }
    {
        const char *q[3] = {out->saga_id, PQgetisnull(r, 0, 1) ? NULL : PQgetvalue(r, 0, 1),
                            PQgetvalue(r, 0, 2)};
        if (!run_ok(pg, "INSERT INTO es_saga_work (saga_id, flow, input) "
                        "VALUES ($1, $2, $3::jsonb) ON CONFLICT (saga_id) "
                        "DO UPDATE SET due_at = now(), failures = 0, wakes = "
                        "es_saga_work.wakes + 1", 3, q) ||
            !run_ok(pg, "UPDATE es_saga_dead_letters SET replayed_at = now() "
                        "WHERE id = $1::bigint", 1, p) ||
            !run_ok(pg, "COMMIT", 0, NULL)) {
            st = pg_failed(pg, err);
            goto done;
        }
    }
    out->queued = true;
    st = ES_OK;
done:
    if (st != ES_OK)
        PQclear(PQexec(pg, "ROLLBACK"));
    sg_saga_info_clear(&head);
    PQclear(r);
    return st;
}

/* Makes a saga's work row due now; *found false if it has none. */
static es_status
wake(PGconn *pg, const char *saga_id, bool *found, es_error *err)
{
    const char *p[1] = {saga_id};
    PGresult *r = run(pg, "UPDATE es_saga_work SET due_at = now(), failures = 0, "
                          "wakes = wakes + 1 WHERE saga_id = $1 RETURNING saga_id", 1, p);

    if (r == NULL)
        return pg_failed(pg, err);
    *found = PQntuples(r) == 1;
    PQclear(r);
    return ES_OK;
}

/* retry (compensate false) or compensate one saga. */
static es_status
operate(PGconn *pg, es_store *store, const char *saga_id, bool compensate, const char *reason,
        sg_saga_op *out, es_error *err)
{
    sg_saga_info head;
    es_status st;
    char why[400];

    memset(out, 0, sizeof *out);
    snprintf(out->saga_id, sizeof out->saga_id, "%s", saga_id);
    if ((st = sg_saga_read(pg, store, saga_id, &head, err)) != ES_OK)
        goto done;
    out->state = head.state;
    if (head.state == SG_FAILED && head.dead_letter > 0) {
        /* a failed saga is a dead letter: replaying it reopens it as compensating */
        char id[24];
        snprintf(id, sizeof id, "%" PRId64, head.dead_letter);
        st = sg_dead_letter_replay(pg, store, id, out, err);
        goto done;
    }
    if (head.state != SG_RUNNING && head.state != SG_COMPENSATING) {
        st = es_error_set(err, ES_ECONFLICT, "saga_ended", "saga_id",
                          "saga %s has ended (%s): there is nothing to %s%s", saga_id,
                          sg_state_text(head.state), compensate ? "compensate" : "retry",
                          compensate && head.state == SG_COMPLETED
                              ? "; a completed saga is final (what it did is undone by new "
                                "commands, not by compensation)" : "");
        goto done;
    }
    if (compensate && head.state == SG_COMPENSATING) {
        out->unchanged = true;
        goto done;
    }
    snprintf(why, sizeof why, "%s by an operator%s%s",
             compensate ? "compensation requested" : "retried", reason ? ": " : "",
             reason ? reason : "");
    st = append(store, saga_id, head.version, compensate ? SG_EV_STATE_CHANGED : SG_EV_REPLAYED,
                compensate ? to_compensating(saga_id, &head, head.state, why)
                           : json_pack("{s:s, s:s}", "saga_id", saga_id, "note", why),
                err);
    if (st != ES_OK)
        goto done;
    if (compensate)
        out->state = SG_COMPENSATING;
    st = wake(pg, saga_id, &out->queued, err);
done:
    sg_saga_info_clear(&head);
    return st;
}

es_status
sg_saga_retry(PGconn *pg, es_store *store, const char *saga_id, sg_saga_op *out, es_error *err)
{
    return operate(pg, store, saga_id, false, NULL, out, err);
}

es_status
sg_saga_compensate(PGconn *pg, es_store *store, const char *saga_id, const char *reason,
                   sg_saga_op *out, es_error *err)
{
    return operate(pg, store, saga_id, true, reason, out, err);
}
