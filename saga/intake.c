/*
 * Intake: what the events stream means to the sagas.  A flow's trigger
 * starts a saga (a row of es_saga_work); an event a saga waits for (an
 * awaited type, a cancellation) goes to its inbox and wakes it.  One
 * transaction per batch records all of that with the new checkpoint, so a
 * crash replays the batch and the primary keys make the replay a no-op.
 * An event that should start or reach a saga but cannot (its id is
 * missing) becomes a dead letter, never a silent skip.
 */
#include "intake.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "uuid.h"

#define CHECKPOINT "intake"

static bool
in_category(const es_feed_event *e, const char *category)
{
    size_t n = strlen(category);

    return e->category_end && (size_t)(e->category_end - e->stream) == n &&
           strncmp(e->stream, category, n) == 0;
}

static bool
exec_ok(PGconn *c, const char *sql, int n, const char *const *p)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

    if (!ok)
        es_log(ES_LOG_WARNING, "intake: %s", PQerrorMessage(c));
    PQclear(r);
    return ok;
}

static bool
dead(PGconn *c, const es_feed_event *e, const char *flow, const char *reason)
{
    char *payload = e->root_ ? json_dumps(e->root_, JSON_COMPACT) : NULL;
    char seq[32];
    const char *p[6] = {flow, e->event_id, e->type, payload ? payload : "{}", reason, seq};
    bool ok;

    snprintf(seq, sizeof seq, "%" PRIu64, e->seq);
    if (e->event_id && !es_uuid_valid(e->event_id))
        p[1] = NULL;
    ok = exec_ok(c, "INSERT INTO es_saga_dead_letters (flow, event_id, event_type, payload, reason, "
                    "attempts) VALUES ($1, $2::uuid, $3, $4::jsonb, $5 || ' (feed sequence ' || $6 || ')', 1) "
                    "ON CONFLICT DO NOTHING",
                 6, p);
    free(payload);
    return ok;
}

/* The flow's id in e's data: 1..200 bytes without NUL, or NULL. */
static const char *
flow_id(const sg_flow *f, const es_feed_event *e)
{
    json_t *v = json_object_get(e->data, f->id_field);
    /* the saga's stream "saga-<type>-<id>" must be a valid stream id */
    size_t max = ES_STREAM_ID_MAX - strlen("saga-") - strlen(f->type) - 1;

    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v))
        return NULL;
    return json_string_value(v);
}


/* Routes one event; false on a database error. */
static bool
route(PGconn *c, const es_feed_event *e, int *woken)
{
    size_t i, k;

    for (i = 0; i < sg_flow_count; i++) {
        const sg_flow *f = sg_flows[i];
        bool trigger, awaited = false;
        const char *id;
        char saga_id[300], seq[32], delay[24];

        if (!in_category(e, f->trigger_category))
            continue;
        trigger = strcmp(e->type, f->trigger_type) == 0;
        if (f->cancel_type && strcmp(e->type, f->cancel_type) == 0)
            awaited = true;
        for (k = 0; k < f->nsteps; k++)
            if (f->steps[k].await_type && strcmp(e->type, f->steps[k].await_type) == 0)
                awaited = true;
        if (!trigger && !awaited)
            continue;
        if ((id = flow_id(f, e)) == NULL) {
            char why[200];
            snprintf(why, sizeof why, "%s without a usable %s for the %s saga", e->type,
                     f->id_field, f->type);
            if (!dead(c, e, f->type, why))
                return false;
            continue;
        }
        snprintf(saga_id, sizeof saga_id, "%s-%s", f->type, id);
        snprintf(seq, sizeof seq, "%" PRIu64, e->seq);
        snprintf(delay, sizeof delay, "%ld", sg_setting_ms("START_DELAY", f, NULL, f->start_delay_ms, 0));
        if (trigger) {
            char *input = json_dumps(e->data, JSON_COMPACT);
            const char *p[4] = {saga_id, f->type, input ? input : "{}", delay};
            bool ok = exec_ok(c, "INSERT INTO es_saga_work (saga_id, flow, input, due_at) "
                                 "VALUES ($1, $2, $3::jsonb, now() + $4::int * interval '1 ms') "
                                 "ON CONFLICT (saga_id) DO NOTHING", 4, p);
            free(input);
            if (!ok)
                return false;
        } else {
            char *data = json_dumps(e->data, JSON_COMPACT);
            const char *p[5] = {saga_id, e->event_id, e->type, data ? data : "{}", seq};
            bool ok = exec_ok(c, "INSERT INTO es_saga_inbox (saga_id, event_id, type, data, seq) "
                                 "VALUES ($1, $2::uuid, $3, $4::jsonb, $5::bigint) "
                                 "ON CONFLICT DO NOTHING", 5, p) &&
                      exec_ok(c, "UPDATE es_saga_work SET due_at = now(), wakes = wakes + 1 "
                                    "WHERE saga_id = $1", 1, p);
            free(data);
            if (!ok)
                return false;
        }
        (*woken)++;
    }
    return true;
}

es_status
sg_intake_checkpoint(PGconn *c, uint64_t *seq, es_error *err)
{
    PGresult *r = PQexec(c, "SELECT seq FROM es_saga_checkpoint WHERE name = '" CHECKPOINT "'");

    *seq = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                     "could not read the saga checkpoint: %s", PQerrorMessage(c));
        PQclear(r);
        return ES_EUNAVAILABLE;
    }
    if (PQntuples(r) == 1)
        *seq = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return ES_OK;
}

es_status
sg_intake_apply(PGconn *c, const es_feed_batch *b, uint64_t *seq, int *woken, es_error *err)
{
    uint64_t at = *seq;
    char pos[ES_POSITION_TEXT_MAX] = "", seqtext[32];
    size_t i;

    *woken = 0;
    if (!exec_ok(c, "BEGIN", 0, NULL))
        goto fail;
    for (i = 0; i < b->n; i++) {
        const es_feed_event *e = &b->ev[i];

        if (e->seq <= at)
            continue;                       /* redelivered: done already */
        if (e->seq != at + 1) {
            exec_ok(c, "ROLLBACK", 0, NULL);
            return es_error_set(err, ES_EUNAVAILABLE, "stream_gap", NULL,
                                "the stream jumped from %" PRIu64 " to %" PRIu64, at, e->seq);
        }
        if (b->bad[i]) {
            if (!dead(c, e, NULL, b->bad[i]))
                goto fail;
        } else if (!route(c, e, woken)) {
            goto fail;
        }
        at = e->seq;
        snprintf(pos, sizeof pos, "%s", e->position[0] ? e->position : "0-0");
    }
    if (at != *seq) {
        const char *p[2] = {seqtext, pos};
        snprintf(seqtext, sizeof seqtext, "%" PRIu64, at);
        if (!exec_ok(c, "INSERT INTO es_saga_checkpoint (name, seq, position) "
                        "VALUES ('" CHECKPOINT "', $1::bigint, $2) ON CONFLICT (name) "
                        "DO UPDATE SET seq = excluded.seq, position = excluded.position", 2, p))
            goto fail;
    }
    if (!exec_ok(c, "COMMIT", 0, NULL))
        goto fail;
    *seq = at;
    return ES_OK;
fail:
    exec_ok(c, "ROLLBACK", 0, NULL);
    return es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                        "could not record the saga intake: %s", PQerrorMessage(c));
}
