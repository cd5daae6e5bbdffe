/*
 * Intake: what the events stream means to the sagas.  A flow's trigger
 * starts a saga (a work row, saga.h); an event a saga waits for (an
 * awaited type, a cancellation) goes to its inbox and wakes it.  One
 * transaction per batch records all of that with the new checkpoint, so a
 * crash replays the batch and the primary keys make the replay a no-op.
 * A batch that only starts sagas is one statement (the starts and the
 * checkpoint), the usual case under load.
 * An event that should start or reach a saga but cannot (its id is
 * missing) becomes a dead letter, never a silent skip.
 */
#include "intake.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga.h"
#include "trace.h"

static bool
in_category(const es_feed_event *e, const char *category)
{
    size_t n = strlen(category);

    return e->category_end && (size_t)(e->category_end - e->stream) == n &&
           strncmp(e->stream, category, n) == 0;
}

static bool
exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;

    PQclear(r);
    return ok;
}

/* An event that cannot start or reach a saga of flow (NULL: any). */
static es_status
dead(PGconn *c, const es_feed_event *e, const char *flow, const char *reason, es_error *err)
{
    const json_t *whole = es_feed_event_json(e);
    char *payload = whole ? json_dumps(whole, JSON_COMPACT) : NULL;
    char why[400];
    es_status st;

    snprintf(why, sizeof why, "%s (feed sequence %" PRIu64 ")", reason, e->seq);
    st = sg_dead_letter_event(c, flow, e->event_id, e->type, payload ? payload : "{}", why, err);
    free(payload);
    return st;
}

/* The flow's id in e's data: 1..200 bytes without NUL, or NULL. */
static const char *
flow_id(const sg_flow *f, const es_feed_event *e)
{
    json_t *v = json_object_get(e->data, f->id_field);
    /* the saga's stream "saga-<type>-<id>" must be a valid stream id */
    size_t max = ES_STREAM_ID_MAX - strlen(SG_STREAM_PREFIX) - strlen(f->type) - 1;

    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v))
        return NULL;
    return json_string_value(v);
}


/*
 * A saga's input: the trigger's data, plus the trigger's trace as a
 * "traceparent" member when its metadata has one (events/trace.h), so the
 * saga's commands continue the trace of the command that started it.
 * malloc'd JSON text, or NULL when out of memory.
 */
static char *
trigger_input(const es_feed_event *e)
{
    const json_t *meta = json_object_get(es_feed_event_json(e), "metadata");
    const char *tid = json_string_value(json_object_get(meta, "trace_id"));
    const char *sid = json_string_value(json_object_get(meta, "span_id"));
    char tp[ES_TRACEPARENT_LEN + 1];
    es_trace t;
    json_t *in;
    char *text;

    if (tid == NULL || sid == NULL ||
        snprintf(tp, sizeof tp, "00-%s-%s-01", tid, sid) != ES_TRACEPARENT_LEN ||
        !es_traceparent_parse(tp, ES_TRACEPARENT_LEN, &t))
        return json_dumps(e->data, JSON_COMPACT);
    if ((in = json_copy(e->data)) == NULL)
        return NULL;
    json_object_set_new(in, ES_TRACEPARENT_HEADER, json_string(tp));
    text = json_dumps(in, JSON_COMPACT);
    json_decref(in);
    return text;
}

/*
 * A batch being recorded.  The sagas it starts go in one statement with
 * the checkpoint at the end (no transaction of their own); a delivery or
 * a dead letter needs statements of its own, so the first one opens a
 * transaction and sends the starts before it, keeping the events' order
 * (a delivery wakes a saga the same batch started).
 */
typedef struct intake {
    PGconn *c;
    bool in_tx;                 /* BEGIN sent */
    sg_start *starts;
    char **owned;               /* the starts' saga ids and inputs */
    size_t n, cap;
    size_t bytes;               /* of the owned texts */
} intake;

/* The starts' texts one statement carries at most: past it they go in a
 * transaction, in several statements (a batch of large triggers would
 * otherwise make one statement of up to a gigabyte, which the server
 * refuses: the intake would stop on that batch for good). */
#define INTAKE_STATEMENT_BYTES (16u << 20)

static void
intake_free(intake *in)
{
    for (size_t i = 0; i < in->n * 2; i++)
        free(in->owned[i]);
    free(in->starts);
    free(in->owned);
}

static es_status
intake_add(intake *in, const char *saga_id, const char *flow, char *input, long delay_ms,
           es_error *err)
{
    char *id = strdup(saga_id);

    if (in->n == in->cap) {
        size_t cap = in->cap ? in->cap * 2 : 64;
        sg_start *starts = realloc(in->starts, cap * sizeof *starts);
        char **owned = starts ? realloc(in->owned, cap * 2 * sizeof *owned) : NULL;

        if (starts)
            in->starts = starts;
        if (owned == NULL) {
            free(id);
            free(input);
            return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        }
        in->owned = owned;
        in->cap = cap;
    }
    if (id == NULL || input == NULL) {
        free(id);
        free(input);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    }
    in->owned[in->n * 2] = id;
    in->owned[in->n * 2 + 1] = input;
    in->bytes += strlen(id) + strlen(input);
    in->starts[in->n++] = (sg_start){id, flow, input, delay_ms};
    return ES_OK;
}

/* Sends the starts so far (and, when seq > 0, the checkpoint). */
static es_status
intake_flush(intake *in, uint64_t seq, const char *pos, es_error *err)
{
    es_status st;

    if (in->n == 0 && seq == 0)
        return ES_OK;
    st = sg_work_start_many(in->c, in->starts, in->n, seq, pos, err);
    for (size_t i = 0; i < in->n * 2; i++)
        free(in->owned[i]);
    in->n = 0;
    in->bytes = 0;
    return st;
}

/* Before a statement of its own: the transaction, and the starts before. */
static es_status
intake_own(intake *in, es_error *err)
{
    if (!in->in_tx) {
        if (!exec_ok(in->c, "BEGIN"))
            return es_error_set(err, ES_EUNAVAILABLE, NULL, NULL, "%s", PQerrorMessage(in->c));
        in->in_tx = true;
    }
    return intake_flush(in, 0, NULL, err);
}

/* Routes one event. */
static es_status
route(intake *in, const es_feed_event *e, int *woken, es_error *err)
{
    size_t i, k;

    for (i = 0; i < sg_flow_count; i++) {
        const sg_flow *f = sg_flows[i];
        bool trigger, awaited = false;
        const char *id;
        char saga_id[300];
        char *data;
        es_status st;

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
            if (intake_own(in, err) != ES_OK || dead(in->c, e, f->type, why, err) != ES_OK)
                return err->status;
            continue;
        }
        snprintf(saga_id, sizeof saga_id, "%s-%s", f->type, id);
        data = trigger ? trigger_input(e) : json_dumps(e->data, JSON_COMPACT);
        if (trigger) {
            st = intake_add(in, saga_id, f->type, data ? data : strdup("{}"),
                            sg_setting_ms("START_DELAY", f, NULL, f->start_delay_ms, 0), err);
            if (st == ES_OK && in->bytes > INTAKE_STATEMENT_BYTES)
                st = intake_own(in, err);       /* sent now, in a transaction */
        } else {
            st = intake_own(in, err);
            if (st == ES_OK)
                st = sg_inbox_deliver(in->c, saga_id, e->event_id, e->type,
                                      data ? data : "{}", e->seq, err);
            free(data);
        }
        if (st != ES_OK)
            return st;
        (*woken)++;
    }
    return ES_OK;
}

es_status
sg_intake_checkpoint(PGconn *c, uint64_t *seq, es_error *err)
{
    return sg_checkpoint_read(c, seq, err);
}

es_status
sg_intake_apply(PGconn *c, const es_feed_batch *b, uint64_t *seq, int *woken, es_error *err)
{
    uint64_t at = *seq;
    char pos[ES_POSITION_TEXT_MAX] = "";
    intake in = {.c = c};
    size_t i;
    es_error why;

    *woken = 0;
    for (i = 0; i < b->n; i++) {
        const es_feed_event *e = &b->ev[i];

        if (e->seq <= at)
            continue;                       /* redelivered: done already */
        if (e->seq != at + 1) {
            if (in.in_tx)
                exec_ok(c, "ROLLBACK");
            intake_free(&in);
            return es_error_set(err, ES_EUNAVAILABLE, "stream_gap", NULL,
                                "the stream jumped from %" PRIu64 " to %" PRIu64, at, e->seq);
        }
        if (b->bad[i]) {
            if (intake_own(&in, &why) != ES_OK || dead(c, e, NULL, b->bad[i], &why) != ES_OK)
                goto fail;
        } else if (route(&in, e, woken, &why) != ES_OK) {
            goto fail;
        }
        at = e->seq;
        snprintf(pos, sizeof pos, "%s", e->position[0] ? e->position : "0-0");
    }
    /* the starts and the checkpoint: one statement, in the transaction if any */
    if (intake_flush(&in, at != *seq ? at : 0, pos, &why) != ES_OK)
        goto fail;
    if (in.in_tx && !exec_ok(c, "COMMIT")) {
        es_error_set(&why, ES_EUNAVAILABLE, NULL, NULL, "%s", PQerrorMessage(c));
        goto fail;
    }
    intake_free(&in);
    *seq = at;
    return ES_OK;
fail:
    if (in.in_tx)
        exec_ok(c, "ROLLBACK");
    intake_free(&in);
    return es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                        "could not record the saga intake: %s", why.message);
}
