/*
 * esctl saga list|show|retry|compensate and dead-letters list|replay: the
 * arguments and the output.  What a saga is and what an operator may do
 * to it (an event appended to its stream at its exact version, then its
 * work row made due) is the saga module's (saga/saga.h), which es-saga's
 * engine links too.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "saga.h"
#include "store.h"

typedef struct listing {
    json_t *rows;
} listing;

static bool
list_row(const sg_saga_summary *s, void *arg)
{
    listing *l = arg;

    json_array_append_new(l->rows, json_pack("{s:s?, s:s?, s:s, s:s?, s:s}", "saga_id",
                                             s->saga_id, "type", s->type, "state",
                                             sg_state_text(s->state), "correlation_id",
                                             s->correlation_id, "started_at", s->started_at));
    return true;
}

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
    sg_saga_filter f = {NULL, false, SG_RUNNING, 0};
    listing l = {NULL};
    es_store *store = NULL;
    es_error err;
    es_status st;

    if (!cli_parse(c, argc, argv, opts, pos, 0, 0, &npos) ||
        !cli_number(c, "--limit", limit_s, 1, 10000, &limit))
        return CLI_USAGE;
    f.type = type;
    f.limit = (long)limit;
    if ((st = es_store_open(&store, es_pg_conninfo(), &err)) != ES_OK)
        return cli_fail(c, &err);
    l.rows = json_array();
    /* a state that is none of a saga's has no sagas */
    if (state[0] == '\0' || (f.by_state = sg_state_parse(state, &f.state)))
        st = sg_saga_list(store, &f, list_row, &l, &err);
    es_store_close(store);
    if (st != ES_OK) {
        json_decref(l.rows);
        return cli_fail(c, &err);
    }
    return cli_print(c, json_pack("{s:o}", "sagas", l.rows), l.rows, cols);
}

static int
run_show(cli *c, int argc, char **argv)
{
    const char *cols[] = {"version", "recorded_at", "type", "step", "attempt", "error", NULL};
    char *pos[1];
    int npos;
    PGconn *pg;
    es_store *store = NULL;
    sg_saga_info s = {0};
    json_t *head, *timeline = NULL;
    es_error err;

    if (!cli_parse(c, argc, argv, NULL, pos, 1, 1, &npos))
        return CLI_USAGE;
    if ((pg = cli_pg(c)) == NULL)
        return CLI_UNAVAILABLE;
    if (es_store_create(&store, es_pg_conninfo(), &err) != ES_OK ||
        sg_saga_read(pg, store, pos[0], &s, &err) != ES_OK ||
        sg_saga_timeline(store, pos[0], &timeline, &err) != ES_OK) {
        es_store_close(store);
        PQfinish(pg);
        sg_saga_info_clear(&s);
        return cli_fail(c, &err);
    }
    es_store_close(store);
    PQfinish(pg);
    head = json_pack("{s:s, s:s, s:s, s:s, s:I, s:O?, s:o}", "saga_id", s.saga_id, "type",
                     s.type, "state", sg_state_text(s.state), "correlation_id", s.correlation_id,
                     "version", (json_int_t)s.version, "work", s.work, "dead_letter",
                     s.dead_letter > 0 ? json_integer(s.dead_letter) : json_null());
    if (!c->json) {
        json_t *w = s.work;
        printf("saga %s (%s, correlation %s): %s\n", pos[0], s.type, s.correlation_id,
               sg_state_text(s.state));
        if (json_is_object(w))
            printf("work: due %s, %lld failed runs%s%s\n",
                   json_string_value(json_object_get(w, "due_at")),
                   (long long)json_integer_value(json_object_get(w, "failures")),
                   json_is_string(json_object_get(w, "last_error")) ? ", last error: " : "",
                   json_is_string(json_object_get(w, "last_error"))
                       ? json_string_value(json_object_get(w, "last_error")) : "");
        if (s.dead_letter > 0)
            printf("dead letter %" PRId64 " (esctl dead-letters replay %" PRId64 ")\n",
                   s.dead_letter, s.dead_letter);
        putchar('\n');
    }
    sg_saga_info_clear(&s);
    json_object_set_new(head, "timeline", timeline);
    return cli_print(c, head, timeline, cols);
}

/* ---- acting on a saga ------------------------------------------------- */

/* What a replay of a dead letter says. */
static int
say_replayed(cli *c, const sg_saga_op *op)
{
    return cli_say(c, json_pack("{s:s, s:s, s:b}", "dead_letter", op->dead_letter, "saga_id",
                                op->saga_id, "reopened", op->reopened),
                   "saga %s is back in the work queue%s", op->saga_id,
                   op->was_failed ? ", reopened as compensating" : "");
}

/* retry (compensate false) or compensate one saga. */
static int
act(cli *c, const char *saga_id, bool compensate, const char *reason)
{
    PGconn *pg = cli_pg(c);
    es_store *store = NULL;
    sg_saga_op op;
    es_error err;
    es_status st;
    int rc;

    if (pg == NULL)
        return CLI_UNAVAILABLE;
    if (es_store_create(&store, es_pg_conninfo(), &err) != ES_OK) {
        rc = cli_fail(c, &err);
        goto done;
    }
    st = compensate ? sg_saga_compensate(pg, store, saga_id, reason, &op, &err)
                    : sg_saga_retry(pg, store, saga_id, &op, &err);
    if (st != ES_OK)
        rc = cli_fail(c, &err);
    else if (op.dead_letter[0])
        rc = say_replayed(c, &op);       /* a failed saga: its dead letter was replayed */
    else if (op.unchanged)
        rc = cli_say(c, json_pack("{s:s, s:s}", "saga_id", saga_id, "state",
                                  sg_state_text(op.state)),
                     "saga %s is compensating already", saga_id);
    else
        rc = cli_say(c, json_pack("{s:s, s:s, s:b}", "saga_id", saga_id, "state",
                                  sg_state_text(op.state), "queued", op.queued),
                     "saga %s %s%s", saga_id,
                     compensate ? "is compensating now" : "will retry now",
                     op.queued ? "" : " (it has no work row: is it dead-lettered? see esctl saga "
                                      "show)");
done:
    es_store_close(store);
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
    es_error err;
    es_status st;

    if (!cli_parse(c, argc, argv, opts, pos, 0, 0, &npos))
        return CLI_USAGE;
    if ((pg = cli_pg(c)) == NULL)
        return CLI_UNAVAILABLE;
    st = sg_dead_letter_list(pg, all, &rows, &err);
    PQfinish(pg);
    if (st != ES_OK)
        return cli_fail(c, &err);
    return cli_print(c, json_pack("{s:o}", "dead_letters", rows), rows, cols);
}

static int
run_dl_replay(cli *c, int argc, char **argv)
{
    char *pos[1];
    int npos, rc;
    long long id;
    PGconn *pg;
    es_store *store = NULL;
    sg_saga_op op;
    es_error err;

    if (!cli_parse(c, argc, argv, NULL, pos, 1, 1, &npos) ||
        !cli_number(c, "<id>", pos[0], 1, INT64_MAX, &id))
        return CLI_USAGE;
    if ((pg = cli_pg(c)) == NULL)
        return CLI_UNAVAILABLE;
    if (es_store_create(&store, es_pg_conninfo(), &err) != ES_OK ||
        sg_dead_letter_replay(pg, store, pos[0], &op, &err) != ES_OK)
        rc = cli_fail(c, &err);
    else
        rc = say_replayed(c, &op);
    es_store_close(store);
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
