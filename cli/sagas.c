/*
 * esctl saga list|show|retry|compensate and dead-letters list|replay.
 *
 * A saga's stream (saga-<id>) is its truth, so what an operator does to a
 * saga is an event appended to it at its exact version, which the engine
 * folds like its own: SagaReplayed (retry: backoffs and refusal counts
 * start afresh) or SagaStateChanged to compensating.  Then the saga's
 * work row is made due, so a worker takes it up at once.  A running
 * worker that had decided otherwise meanwhile finds the stream moved (a
 * version conflict) and reads it again.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "store.h"

static int
run_list(cli *c, int argc, char **argv)
{
    const char *state = "", *type = "", *limit_s = "100";
    cli_opt opts[] = {{"--state", &state, NULL}, {"--type", &type, NULL},
                      {"--limit", &limit_s, NULL}, {NULL, NULL, NULL}};
    const char *cols[] = {"saga_id", "type", "state", "correlation_id", "started_at", NULL};
    char *pos[1];
    int npos;
    long long limit;
    PGconn *pg;
    json_t *rows;

    if (!cli_parse(c, argc, argv, opts, pos, 0, 0, &npos) ||
        !cli_number(c, "--limit", limit_s, 1, 10000, &limit))
        return CLI_USAGE;
    if ((pg = cli_pg(c)) == NULL)
        return CLI_UNAVAILABLE;
    {
        const char *p[3] = {state, type, limit_s};
        rows = cli_query(c, pg,
            "SELECT * FROM (SELECT s.data->>'saga_id' AS saga_id, s.data->>'type' AS type, "
            CLI_SAGA_STATE_SQL " AS state, s.data->>'correlation_id' AS correlation_id, "
            "to_char(s.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') "
            "AS started_at FROM es_events s WHERE s.category = 'saga' AND s.type = 'SagaStarted' "
            "AND ($2 = '' OR s.data->>'type' = $2)) x WHERE ($1 = '' OR state = $1) "
            "ORDER BY started_at DESC LIMIT $3::int", 3, p);
    }
    PQfinish(pg);
    if (rows == NULL)
        return CLI_FAILED;
    return cli_print(c, json_pack("{s:o}", "sagas", rows), rows, cols);
}

/* The saga's summary, work row and open dead letter, or NULL with *rc
 * (CLI_NOT_FOUND if it has no stream, said only when must_exist). */
static json_t *
saga_head(cli *c, PGconn *pg, const char *saga_id, bool must_exist, int *rc)
{
    const char *p[1] = {saga_id};
    json_t *rows = cli_query(c, pg,
        "SELECT s.data->>'saga_id' AS saga_id, s.data->>'type' AS type, " CLI_SAGA_STATE_SQL
        " AS state, s.data->>'correlation_id' AS correlation_id, "
        "(SELECT max(version) FROM es_events e WHERE e.stream_id = s.stream_id) AS version, "
        "(SELECT to_jsonb(w) - 'input' FROM es_saga_work w WHERE w.saga_id = $1) AS work, "
        "(SELECT min(d.id) FROM es_saga_dead_letters d WHERE d.saga_id = $1 "
        "AND d.replayed_at IS NULL) AS dead_letter "
        "FROM es_events s WHERE s.stream_id = 'saga-' || $1 AND s.version = 0", 1, p);
    json_t *head;

    if (rows == NULL) {
        *rc = CLI_FAILED;
        return NULL;
    }
    head = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    *rc = CLI_OK;
    if (head == NULL && !must_exist) {
        *rc = CLI_NOT_FOUND;
    } else if (head == NULL) {
        es_error err;
        es_error_set(&err, ES_ENOTFOUND, "saga_not_found", "saga_id", "there is no saga %s",
                     saga_id);
        *rc = cli_fail(c, &err);
    }
    return head;
}

static int
run_show(cli *c, int argc, char **argv)
{
    const char *cols[] = {"version", "recorded_at", "type", "step", "attempt", "error", NULL};
    char *pos[1];
    int npos, rc = CLI_OK;
    PGconn *pg;
    json_t *head, *timeline;

    if (!cli_parse(c, argc, argv, NULL, pos, 1, 1, &npos))
        return CLI_USAGE;
    if ((pg = cli_pg(c)) == NULL)
        return CLI_UNAVAILABLE;
    if ((head = saga_head(c, pg, pos[0], true, &rc)) == NULL) {
        PQfinish(pg);
        return rc;
    }
    {
        const char *p[1] = {pos[0]};
        timeline = cli_query(c, pg,
            "SELECT version, to_char(recorded_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS recorded_at, type, "
            "coalesce(data->>'step', data->>'to') AS step, (data->>'attempt')::int AS attempt, "
            "data->>'error' AS error, data FROM es_events WHERE stream_id = 'saga-' || $1 "
            "ORDER BY version", 1, p);
    }
    PQfinish(pg);
    if (timeline == NULL) {
        json_decref(head);
        return CLI_FAILED;
    }
    if (!c->json) {
        json_t *w = json_object_get(head, "work");
        printf("saga %s (%s, correlation %s): %s\n", pos[0],
               json_string_value(json_object_get(head, "type")),
               json_string_value(json_object_get(head, "correlation_id")),
               json_string_value(json_object_get(head, "state")));
        if (json_is_object(w))
            printf("work: due %s, %lld failed runs%s%s\n",
                   json_string_value(json_object_get(w, "due_at")),
                   (long long)json_integer_value(json_object_get(w, "failures")),
                   json_is_string(json_object_get(w, "last_error")) ? ", last error: " : "",
                   json_is_string(json_object_get(w, "last_error"))
                       ? json_string_value(json_object_get(w, "last_error")) : "");
        if (json_is_integer(json_object_get(head, "dead_letter")))
            printf("dead letter %lld (esctl dead-letters replay %lld)\n",
                   (long long)json_integer_value(json_object_get(head, "dead_letter")),
                   (long long)json_integer_value(json_object_get(head, "dead_letter")));
        putchar('\n');
    }
    json_object_set_new(head, "timeline", timeline);
    return cli_print(c, head, timeline, cols);
}

/* ---- acting on a saga ------------------------------------------------- */

/* Appends one event to saga-<id> at version expected. */
static es_status
saga_append(const char *saga_id, int64_t expected, const char *type, json_t *data, es_error *err)
{
    char stream[300], *text = json_dumps(data, JSON_COMPACT);
    es_store *st = NULL;
    es_new_event ev = {NULL, type, 1, text, NULL};
    es_append_req req = {stream, expected, &ev, 1};
    es_append_result res;

    json_decref(data);
    snprintf(stream, sizeof stream, "saga-%s", saga_id);
    if (text == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    if (es_store_open(&st, es_pg_conninfo(), err) != ES_OK) {
        free(text);
        return err->status;
    }
    es_store_append(st, &req, &res);
    es_store_close(st);
    free(text);
    if (res.status != ES_OK)
        *err = res.err;
    return res.status;
}

static bool
exec_ok(cli *c, PGconn *pg, const char *sql, int n, const char *const *p)
{
    PGresult *r = PQexecParams(pg, sql, n, NULL, p, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

    if (!ok) {
        es_error err;
        es_error_set(&err, PQstatus(pg) == CONNECTION_OK ? ES_EINTERNAL : ES_EUNAVAILABLE,
                     "postgres_error", NULL, "%s", PQerrorMessage(pg));
        cli_fail(c, &err);
    }
    PQclear(r);
    return ok;
}

/*
 * Hands dead letter id back: its saga goes back to the work queue,
 * reopened as compensating if it had failed (its stream keeps the
 * history).  An event that could not start a saga cannot be replayed as
 * it is: its cause (the reason) must be fixed by appending a corrected
 * event.
 */
static int
replay(cli *c, PGconn *pg, const char *id)
{
    const char *p[1] = {id};
    json_t *rows, *dl, *head = NULL;
    const char *saga_id;
    int rc = CLI_FAILED;
    es_error err;

    if (!exec_ok(c, pg, "BEGIN", 0, NULL))
        return CLI_FAILED;
    rows = cli_query(c, pg, "SELECT saga_id, flow, payload::text AS payload, replayed_at "
                            "FROM es_saga_dead_letters WHERE id = $1::bigint FOR UPDATE", 1, p);
    if (rows == NULL)
        goto done;
    dl = json_array_get(rows, 0);
    if (dl == NULL || !json_is_null(json_object_get(dl, "replayed_at"))) {
        es_error_set(&err, dl ? ES_ECONFLICT : ES_ENOTFOUND,
                     dl ? "replayed_already" : "dead_letter_not_found", "id",
                     dl ? "dead letter %s was replayed already" : "there is no dead letter %s", id);
        rc = cli_fail(c, &err);
        goto done;
    }
    if (!json_is_string(json_object_get(dl, "saga_id"))) {
        es_error_set(&err, ES_ECONFLICT, "not_replayable", "id",
                     "dead letter %s is an event that could not reach a saga: fix its cause "
                     "(see its reason) and append a corrected event", id);
        rc = cli_fail(c, &err);
        goto done;
    }
    saga_id = json_string_value(json_object_get(dl, "saga_id"));
    head = saga_head(c, pg, saga_id, false, &rc);
    if (head == NULL && rc != CLI_NOT_FOUND)
        goto done;
    rc = CLI_FAILED;
    if (head) {
        /* A marker the engine folds: refusals are counted afresh, and a
         * failed saga is reopened as compensating. */
        const char *state = json_string_value(json_object_get(head, "state"));
        bool failed = strcmp(state, "failed") == 0;
        json_t *d = failed ? json_pack("{s:s, s:O, s:s, s:s, s:s}", "saga_id", saga_id, "type",
                                       json_object_get(head, "type"), "from", "failed", "to",
                                       "compensating", "error", "replayed by an operator")
                           : json_pack("{s:s, s:s}", "saga_id", saga_id, "note",
                                       "replayed by an operator");
        if (saga_append(saga_id, json_integer_value(json_object_get(head, "version")),
                        failed ? "SagaStateChanged" : "SagaReplayed", d, &err) != ES_OK) {
            rc = cli_fail(c, &err);
            goto done;
        }
    }
    {
        const char *q[3] = {saga_id, json_string_value(json_object_get(dl, "flow")),
                            json_string_value(json_object_get(dl, "payload"))};
        if (!exec_ok(c, pg, "INSERT INTO es_saga_work (saga_id, flow, input) "
                            "VALUES ($1, $2, $3::jsonb) ON CONFLICT (saga_id) "
                            "DO UPDATE SET due_at = now(), failures = 0, wakes = "
                            "es_saga_work.wakes + 1", 3, q) ||
            !exec_ok(c, pg, "UPDATE es_saga_dead_letters SET replayed_at = now() "
                            "WHERE id = $1::bigint", 1, p) ||
            !exec_ok(c, pg, "COMMIT", 0, NULL))
            goto done;
    }
    rc = cli_say(c, json_pack("{s:s, s:s, s:b}", "dead_letter", id, "saga_id", saga_id,
                              "reopened", head != NULL),
                 "saga %s is back in the work queue%s", saga_id,
                 head && strcmp(json_string_value(json_object_get(head, "state")), "failed") == 0
                     ? ", reopened as compensating" : "");
done:
    if (rc != CLI_OK)
        PQclear(PQexec(pg, "ROLLBACK"));
    json_decref(head);
    json_decref(rows);
    return rc;
}

/* Makes a saga's work row due now; false if it has none. */
static bool
wake(cli *c, PGconn *pg, const char *saga_id, bool *found)
{
    const char *p[1] = {saga_id};
    json_t *rows = cli_query(c, pg, "UPDATE es_saga_work SET due_at = now(), failures = 0, "
                                    "wakes = wakes + 1 WHERE saga_id = $1 RETURNING saga_id",
                             1, p);

    if (rows == NULL)
        return false;
    *found = json_array_size(rows) == 1;
    json_decref(rows);
    return true;
}

/* retry (compensate false) or compensate one saga. */
static int
act(cli *c, const char *saga_id, bool compensate, const char *reason)
{
    PGconn *pg = cli_pg(c);
    json_t *head;
    const char *state;
    int rc = CLI_OK;
    bool found = false;
    es_error err;

    if (pg == NULL)
        return CLI_UNAVAILABLE;
    if ((head = saga_head(c, pg, saga_id, true, &rc)) == NULL) {
        PQfinish(pg);
        return rc;
    }
    state = json_string_value(json_object_get(head, "state"));
    if (strcmp(state, "failed") == 0 && json_is_integer(json_object_get(head, "dead_letter"))) {
        /* a failed saga is a dead letter: replaying it reopens it as compensating */
        char id[32];
        snprintf(id, sizeof id, "%lld",
                 (long long)json_integer_value(json_object_get(head, "dead_letter")));
        rc = replay(c, pg, id);
        goto done;
    }
    if (strcmp(state, "running") != 0 && strcmp(state, "compensating") != 0) {
        es_error_set(&err, ES_ECONFLICT, "saga_ended", "saga_id",
                     "saga %s has ended (%s): there is nothing to %s%s", saga_id, state,
                     compensate ? "compensate" : "retry",
                     compensate && strcmp(state, "completed") == 0
                         ? "; a completed saga is final (what it did is undone by new "
                           "commands, not by compensation)" : "");
        rc = cli_fail(c, &err);
        goto done;
    }
    if (compensate && strcmp(state, "compensating") == 0) {
        rc = cli_say(c, json_pack("{s:s, s:s}", "saga_id", saga_id, "state", state),
                     "saga %s is compensating already", saga_id);
        goto done;
    }
    {
        char why[400];
        json_t *d;
        snprintf(why, sizeof why, "%s by an operator%s%s",
                 compensate ? "compensation requested" : "retried", reason ? ": " : "",
                 reason ? reason : "");
        d = compensate ? json_pack("{s:s, s:O, s:s, s:s, s:s}", "saga_id", saga_id, "type",
                                   json_object_get(head, "type"), "from", state, "to",
                                   "compensating", "error", why)
                       : json_pack("{s:s, s:s}", "saga_id", saga_id, "note", why);
        if (saga_append(saga_id, json_integer_value(json_object_get(head, "version")),
                        compensate ? "SagaStateChanged" : "SagaReplayed", d, &err) != ES_OK) {
            rc = cli_fail(c, &err);
            goto done;
        }
    }
    if (!wake(c, pg, saga_id, &found)) {
        rc = CLI_FAILED;
        goto done;
    }
    rc = cli_say(c, json_pack("{s:s, s:s, s:b}", "saga_id", saga_id, "state",
                              compensate ? "compensating" : state, "queued", found),
                 "saga %s %s%s", saga_id,
                 compensate ? "is compensating now" : "will retry now",
                 found ? "" : " (it has no work row: is it dead-lettered? see esctl saga show)");
done:
    json_decref(head);
    PQfinish(pg);
    return rc;
}

static int
run_retry(cli *c, int argc, char **argv)
{
    char *pos[1];
    int npos;

    if (!cli_parse(c, argc, argv, NULL, pos, 1, 1, &npos))
        return CLI_USAGE;
    return act(c, pos[0], false, NULL);
}

static int
run_compensate(cli *c, int argc, char **argv)
{
    const char *reason = NULL;
    cli_opt opts[] = {{"--reason", &reason, NULL}, {NULL, NULL, NULL}};
    char *pos[1];
    int npos;

    if (!cli_parse(c, argc, argv, opts, pos, 1, 1, &npos))
        return CLI_USAGE;
    return act(c, pos[0], true, reason);
}

static int
run_dl_list(cli *c, int argc, char **argv)
{
    bool all = false;
    cli_opt opts[] = {{"--all", NULL, &all}, {NULL, NULL, NULL}};
    const char *cols[] = {"id", "created_at", "saga_id", "flow", "event_type", "attempts",
                          "reason", "replayed_at", NULL};
    char *pos[1];
    int npos;
    PGconn *pg;
    json_t *rows;

    if (!cli_parse(c, argc, argv, opts, pos, 0, 0, &npos))
        return CLI_USAGE;
    if ((pg = cli_pg(c)) == NULL)
        return CLI_UNAVAILABLE;
    {
        const char *p[1] = {all ? "t" : "f"};
        rows = cli_query(c, pg, "SELECT id, to_char(created_at AT TIME ZONE 'UTC', "
                                "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at, saga_id, flow, "
                                "event_type, attempts, reason, to_char(replayed_at AT TIME ZONE "
                                "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS replayed_at, "
                                "payload FROM es_saga_dead_letters "
                                "WHERE $1::bool OR replayed_at IS NULL ORDER BY id", 1, p);
    }
    PQfinish(pg);
    if (rows == NULL)
        return CLI_FAILED;
    return cli_print(c, json_pack("{s:o}", "dead_letters", rows), rows, cols);
}

static int
run_dl_replay(cli *c, int argc, char **argv)
{
    char *pos[1];
    int npos, rc;
    long long id;
    PGconn *pg;

    if (!cli_parse(c, argc, argv, NULL, pos, 1, 1, &npos) ||
        !cli_number(c, "<id>", pos[0], 1, INT64_MAX, &id))
        return CLI_USAGE;
    if ((pg = cli_pg(c)) == NULL)
        return CLI_UNAVAILABLE;
    rc = replay(c, pg, pos[0]);
    PQfinish(pg);
    return rc;
}

const cli_cmd cli_saga_cmds[] = {
    {"saga", "list", "[--state S] [--type T] [--limit N]", "list sagas, newest first",
     "Sagas as their streams record them: saga_id, type (order, registration,\n"
     "verification), state (running, completed, compensating, compensated, failed),\n"
     "correlation_id (the order or user id) and when it started.  --state and --type\n"
     "filter; at most N rows (default 100).\n",
     run_list},
    {"saga", "show", "<saga_id>", "one saga's state and timeline",
     "The saga's state, its pending work (when it is due next, failed runs, the last\n"
     "error), its dead letter if any, and its timeline: every event of its stream\n"
     "(steps started, succeeded, failed and retried, compensations, state changes).\n"
     "Exit code 4 when there is no such saga.\n",
     run_show},
    {"saga", "retry", "<saga_id>", "run a waiting or failed saga again now",
     "A running or compensating saga waiting for a retry's backoff runs again now,\n"
     "with its backoffs and refusal counts started afresh.  A failed saga (one moved to\n"
     "the dead letters) is replayed: reopened as compensating.  Exit code 5 when the\n"
     "saga has ended (completed or compensated).\n",
     run_retry},
    {"saga", "compensate", "<saga_id> [--reason TEXT]", "undo what a saga has done",
     "Moves a running saga to compensating: it stops taking steps and undoes those it\n"
     "took, newest first (a step whose outcome is unknown is resolved first).  A failed\n"
     "saga is reopened as compensating.  Exit code 5 when it has ended: a completed saga\n"
     "is final.\n",
     run_compensate},
    {"dead-letters", "list", "[--all]", "what the saga manager could not handle",
     "Sagas whose engine kept failing or whose compensation kept being refused, and\n"
     "events that could not start or reach a saga, with the reason and attempts.  Only\n"
     "those not replayed yet, unless --all.\n",
     run_dl_list},
    {"dead-letters", "replay", "<id>", "hand a dead letter back to the saga manager",
     "Puts the dead letter's saga back in the work queue (a failed saga is reopened\n"
     "as compensating; its stream keeps the history) and marks the dead letter\n"
     "replayed.  An event that could not reach a saga cannot be replayed as it is\n"
     "(exit 5): fix its cause and append a corrected event.\n",
     run_dl_replay},
    {NULL, NULL, NULL, NULL, NULL, NULL}};
