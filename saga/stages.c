/*
 * The stages of one command's trace (stages.h), for `esctl trace` and the
 * console's trace view, with their times, so the slowest stage of a slow
 * order shows.  The stages come from where each process already left
 * them, so nothing on the hot paths writes for this alone:
 *
 *   accepted    metadata.accepted_at of the command's events (es-command)
 *   committed   the event's recorded_at (the store)
 *   published   when JetStream stored the relay's message (its timestamp)
 *   projected   rm:trace:<id>, written once per batch by es-projector
 *               (events/readmodel.h), which also lists the trace's events
 *   saga        the saga's own stream (saga.c's timeline)
 *
 * The clocks are those of es-command, PostgreSQL, nats-server, es-projector
 * and es-saga: on several machines their skew shows in the gaps.
 */
#include "stages.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "feed.h"
#include "flow.h"
#include "readmodel.h"
#include "saga.h"
#include "trace.h"

/* Stage kinds in the order they follow one another for one event. */
enum { ST_ACCEPTED, ST_COMMITTED, ST_PUBLISHED, ST_PROJECTED, ST_SAGA };
static const char *const stage_names[] = {"accepted", "committed", "published", "projected",
                                          "saga"};

typedef struct tr {
    char trace_id[ES_TRACE_ID_LEN + 1];
    char saga_id[300];
    json_t *stages;             /* rows, unsorted until the end */
    json_t *commands;           /* command_id -> true: its accepted stage is in */
    bool recorded;              /* the projector's record was found */
} tr;

/* "2026-11-22T00:05:01.500000Z" (or fewer fraction digits) as Unix
 * microseconds; 0 when it is not such a text. */
static int64_t
parse_time(const char *s)
{
    struct tm tm = {0};
    const char *rest;
    int64_t us = 0, scale = 100000;

    if (s == NULL || (rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
        return 0;
    if (*rest == '.')
        for (rest++; *rest >= '0' && *rest <= '9'; rest++, scale /= 10)
            us += scale > 0 ? (*rest - '0') * scale : 0;
    return (int64_t)timegm(&tm) * 1000000 + us;
}

static json_t *
iso(int64_t us)
{
    char text[48], at[32];
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(text, sizeof text, "%s.%06dZ", at, (int)(us % 1000000));
    return json_string(text);
}

/* Adds a stage; row (stolen) carries the details, key the event it
 * belongs to (its feed sequence, or 0). */
static void
add(tr *t, int kind, int64_t at_us, json_t *row)
{
    if (at_us <= 0) {
        json_decref(row);
        return;
    }
    json_object_set_new(row, "stage", json_string(stage_names[kind]));
    json_object_set_new(row, "kind", json_integer(kind));
    json_object_set_new(row, "at", iso(at_us));
    json_object_set_new(row, "at_us", json_integer(at_us));
    json_array_append_new(t->stages, row);
}

/* The saga a flow's trigger event starts: "<flow type>-<id>" (saga/flow.h). */
static void
saga_of(tr *t, const char *stream, const char *type, const json_t *data)
{
    for (size_t i = 0; t->saga_id[0] == '\0' && i < sg_flow_count; i++) {
        const sg_flow *f = sg_flows[i];
        size_t n = strlen(f->trigger_category);
        const char *id = json_string_value(json_object_get(data, f->id_field));

        if (strncmp(stream, f->trigger_category, n) == 0 && stream[n] == '-' &&
            strcmp(type, f->trigger_type) == 0 && id != NULL)
            snprintf(t->saga_id, sizeof t->saga_id, "%s-%s", f->type, id);
    }
}

/* The accepted, committed and (at published_us, unless 0) published stages
 * of one event of the trace. */
static void
event_stages(tr *t, uint64_t seq, const char *stream, int64_t version, const char *type,
             const char *position, const char *recorded_at, const json_t *meta,
             int64_t published_us)
{
    const char *command_id = json_string_value(json_object_get(meta, "command_id"));
    const char *accepted = json_string_value(json_object_get(meta, "accepted_at"));
    char what[600];

    snprintf(what, sizeof what, "%s %s@%" PRId64, type, stream, version);
    if (command_id != NULL && accepted != NULL && json_object_get(t->commands, command_id) == NULL) {
        json_object_set_new(t->commands, command_id, json_true());
        add(t, ST_ACCEPTED, parse_time(accepted),
            json_pack("{s:s, s:s, s:s?}", "command_id", command_id, "detail", command_id,
                      "span_id", json_string_value(json_object_get(meta, "span_id"))));
    }
    add(t, ST_COMMITTED, parse_time(recorded_at),
        json_pack("{s:s, s:I, s:s, s:s, s:I, s:s?, s:s}", "stream", stream, "version",
                  (json_int_t)version, "type", type, "position", position, "seq",
                  (json_int_t)seq, "command_id", command_id, "detail", what));
    if (published_us > 0)
        add(t, ST_PUBLISHED, published_us,
            json_pack("{s:s, s:I, s:s, s:I, s:s}", "stream", stream, "version",
                      (json_int_t)version, "type", type, "seq", (json_int_t)seq, "detail", what));
}

/* Every event the projector recorded for the trace, from the stream, and
 * their projected stages. */
static es_status
from_record(tr *t, redisContext *rc, es_jetstream *js, es_error *err)
{
    es_rm_trace_stage *s = NULL;
    size_t n = 0, i;
    uint64_t last = 0;
    es_status st;

    if ((st = es_rm_trace_get(rc, t->trace_id, &s, &n, err)) != ES_OK)
        return st;
    t->recorded = n > 0;
    /* by sequence: one read of each message */
    for (i = 1; i < n; i++)
        for (size_t k = i; k > 0 && s[k - 1].seq > s[k].seq; k--) {
            es_rm_trace_stage x = s[k];
            s[k] = s[k - 1], s[k - 1] = x;
        }
    for (i = 0; i < n; i++) {
        es_feed_event e;
        int64_t published = 0;
        const json_t *whole;
        char what[400];

        if (s[i].seq != last) {
            last = s[i].seq;
            if (es_jetstream_message_at(js, s[i].seq, &e, &published, err) != ES_OK) {
                es_feed_event_free(&e);
                if (err->status == ES_ENOTFOUND)
                    continue;       /* the stream's limits removed it */
                free(s);
                return err->status;
            }
            whole = es_feed_event_json(&e);
            event_stages(t, e.seq, e.stream, json_integer_value(json_object_get(whole, "version")),
                         e.type, e.position, e.recorded_at, json_object_get(whole, "metadata"),
                         published);
            saga_of(t, e.stream, e.type, e.data);
            es_feed_event_free(&e);
        }
        if (s[i].projection[0] == '\0')
            continue;
        snprintf(what, sizeof what, "%s applied event %" PRIu64, s[i].projection, s[i].seq);
        add(t, ST_PROJECTED, s[i].at_us,
            json_pack("{s:s, s:I, s:s}", "projection", s[i].projection, "seq",
                      (json_int_t)s[i].seq, "detail", what));
    }
    free(s);
    return ES_OK;
}

/* Without the projector's record (expired, or not projected yet): the
 * events of stream that carry the trace, from the store. */
static es_status
from_stream(tr *t, es_store *store, const char *stream, es_error *err)
{
    es_page *p = NULL;
    es_status st = es_store_read_stream(store, stream, 0, 1000, ES_FORWARD, &p, err);

    if (st == ES_ENOTFOUND)
        return ES_OK;
    if (st != ES_OK)
        return st;
    for (size_t i = 0; i < p->count; i++) {
        const es_event *e = &p->events[i];
        es_trace x;
        json_t *meta, *data;
        char pos[ES_POSITION_TEXT_MAX];

        if (!es_trace_from_metadata(e->metadata, strlen(e->metadata), &x) ||
            strcmp(x.trace_id, t->trace_id) != 0)
            continue;
        meta = json_loads(e->metadata, 0, NULL);
        data = json_loads(e->data, 0, NULL);
        es_position_format(e->position, pos);
        event_stages(t, 0, e->stream_id, e->version, e->type, pos, e->recorded_at, meta, 0);
        saga_of(t, e->stream_id, e->type, data);
        json_decref(meta);
        json_decref(data);
    }
    es_page_destroy(p);
    return ES_OK;
}

/* The saga's steps from its stream. */
static es_status
from_saga(tr *t, es_store *store, es_error *err)
{
    json_t *rows = NULL, *r;
    size_t i;

    if (t->saga_id[0] == '\0')
        return ES_OK;
    if (sg_saga_timeline(store, t->saga_id, &rows, err) != ES_OK)
        return err->status;
    json_array_foreach(rows, i, r) {
        const char *type = json_string_value(json_object_get(r, "type"));
        const char *step = json_string_value(json_object_get(r, "step"));
        const char *error = json_string_value(json_object_get(r, "error"));
        char what[700];

        snprintf(what, sizeof what, "%s%s%s%s%s", type ? type : "?", step ? " " : "",
                 step ? step : "", error ? ": " : "", error ? error : "");
        add(t, ST_SAGA, parse_time(json_string_value(json_object_get(r, "recorded_at"))),
            json_pack("{s:s, s:s?, s:s?, s:O?, s:O?, s:s?, s:s}", "saga_id", t->saga_id, "type",
                      type, "step", step, "attempt", json_object_get(r, "attempt"), "version",
                      json_object_get(r, "version"), "error", error, "detail", what));
    }
    json_decref(rows);
    return ES_OK;
}

/* The trace id of a saga (its input's traceparent, saga/intake.c) or of
 * a flow's trigger stream "<category>-<id>"; "" when neither has one. */
static es_status
resolve(tr *t, es_store *store, const char *arg, es_error *err)
{
    json_t *rows = NULL, *first;
    es_trace x;
    const char *tp;
    char id[ES_STREAM_ID_MAX + 1];

    if (es_trace_id_valid(arg)) {
        snprintf(t->trace_id, sizeof t->trace_id, "%s", arg);
        return ES_OK;
    }
    if (sg_saga_timeline(store, arg, &rows, err) != ES_OK)
        return err->status;
    if ((first = json_array_get(rows, 0)) != NULL) {
        const json_t *d = json_object_get(first, "data");

        snprintf(t->saga_id, sizeof t->saga_id, "%s", arg);
        tp = json_string_value(json_object_get(json_object_get(d, "data"), "traceparent"));
        if (tp != NULL && es_traceparent_parse(tp, strlen(tp), &x)) {
            snprintf(t->trace_id, sizeof t->trace_id, "%s", x.trace_id);
            json_decref(rows);
            return ES_OK;
        }
        /* an older saga: its trigger's stream says (the id copied: rows
         * is freed before the last use of arg) */
        tp = json_string_value(json_object_get(d, "correlation_id"));
        if (tp != NULL)
            snprintf(id, sizeof id, "%s", tp);
        arg = tp != NULL ? id : NULL;
    }
    for (size_t i = 0; arg != NULL && t->trace_id[0] == '\0' && i < sg_flow_count; i++) {
        char stream[ES_STREAM_ID_MAX + 1];
        es_page *p = NULL;

        if (snprintf(stream, sizeof stream, "%s-%s", sg_flows[i]->trigger_category, arg) >=
                (int)sizeof stream ||
            es_store_read_stream(store, stream, 0, 1, ES_FORWARD, &p, err) != ES_OK) {
            if (err->status != ES_ENOTFOUND && err->status != ES_EINVALID) {
                json_decref(rows);
                return err->status;
            }
            continue;
        }
        if (p->count > 0 &&
            es_trace_from_metadata(p->events[0].metadata, strlen(p->events[0].metadata), &x)) {
            snprintf(t->trace_id, sizeof t->trace_id, "%s", x.trace_id);
            if (t->saga_id[0] == '\0')
                snprintf(t->saga_id, sizeof t->saga_id, "%s-%s", sg_flows[i]->type, arg);
        }
        es_page_destroy(p);
    }
    json_decref(rows);
    if (t->trace_id[0] == '\0')
        return es_error_set(err, ES_ENOTFOUND, "trace_not_found", NULL,
                            "\"%s\" is no trace id, and no saga or %s stream of that id has a "
                            "trace", arg ? arg : "?", "order or user");
    return ES_OK;
}

static int
by_time(const void *a, const void *b)
{
    const json_t *x = *(const json_t *const *)a, *y = *(const json_t *const *)b;
    json_int_t tx = json_integer_value(json_object_get(x, "at_us"));
    json_int_t ty = json_integer_value(json_object_get(y, "at_us"));
    json_int_t kx = json_integer_value(json_object_get(x, "kind"));
    json_int_t ky = json_integer_value(json_object_get(y, "kind"));

    return tx != ty ? (tx < ty ? -1 : 1) : kx != ky ? (kx < ky ? -1 : 1) : 0;
}

/*
 * Sorts the stages by time and gives each the time it took: from the
 * stage it follows for its own event (committed after its command's
 * accepted, published after committed, projected after published), else
 * from the stage before it.  The longest is the slowest.
 */
static json_t *
finish(tr *t, size_t *slowest)
{
    size_t n = json_array_size(t->stages), i;
    json_t **v = calloc(n ? n : 1, sizeof *v), *out = json_array();
    json_int_t best = -1;

    *slowest = SIZE_MAX;
    for (i = 0; v && i < n; i++)
        v[i] = json_array_get(t->stages, i);
    if (v)
        qsort(v, n, sizeof *v, by_time);
    for (i = 0; v && i < n; i++) {
        json_t *r = v[i];
        json_int_t kind = json_integer_value(json_object_get(r, "kind"));
        json_int_t at = json_integer_value(json_object_get(r, "at_us")), from = -1;
        const char *after = NULL;

        for (size_t k = i; k-- > 0 && from < 0;) {
            const json_t *q = v[k];
            json_int_t qk = json_integer_value(json_object_get(q, "kind"));
            bool same_seq = json_integer_value(json_object_get(q, "seq")) ==
                                json_integer_value(json_object_get(r, "seq")) &&
                            json_object_get(r, "seq") != NULL;
            const char *cq = json_string_value(json_object_get(q, "command_id"));
            const char *cr = json_string_value(json_object_get(r, "command_id"));

            if ((kind == ST_COMMITTED && qk == ST_ACCEPTED && cq && cr && strcmp(cq, cr) == 0) ||
                (kind == ST_PUBLISHED && qk == ST_COMMITTED && same_seq) ||
                (kind == ST_PROJECTED && qk == ST_PUBLISHED && same_seq))
                from = json_integer_value(json_object_get(q, "at_us")), after = stage_names[qk];
        }
        if (from < 0 && i > 0) {
            from = json_integer_value(json_object_get(v[i - 1], "at_us"));
            after = "previous";
        }
        json_object_set_new(r, "took_ms", from < 0 ? json_null()
                                                   : json_real((double)(at - from) / 1000.0));
        json_object_set_new(r, "after", after ? json_string(after) : json_null());
        json_object_set_new(r, "slowest", json_false());
        json_object_del(r, "kind");
        if (from >= 0 && at - from > best)
            best = at - from, *slowest = i;
        json_array_append(out, r);
    }
    if (*slowest != SIZE_MAX)
        json_object_set_new(json_array_get(out, *slowest), "slowest", json_true());
    free(v);
    return out;
}

es_status
sg_stages_collect(es_store *store, const char *arg, json_t **doc, es_error *err)
{
    tr t = {{0}, {0}, json_array(), json_object(), false};
    redisContext *rc = NULL;
    es_jetstream js = {0};
    bool js_open = false;
    json_t *stages = NULL;
    size_t slowest;
    es_status st = ES_OK;

    *doc = NULL;
    if (resolve(&t, store, arg, err) != ES_OK || (rc = es_rm_connect(err)) == NULL ||
        !(js_open = es_jetstream_open(&js, err) == ES_OK) ||
        from_record(&t, rc, &js, err) != ES_OK)
        goto fail;
    if (!t.recorded) {
        /* the record expired (ES_TRACE_TTL) or is not written yet: what
         * the trigger's stream still says */
        for (size_t f = 0; f < sg_flow_count && t.saga_id[0] != '\0'; f++) {
            size_t n = strlen(sg_flows[f]->type);
            char stream[ES_STREAM_ID_MAX + 1];

            if (strncmp(t.saga_id, sg_flows[f]->type, n) == 0 && t.saga_id[n] == '-' &&
                snprintf(stream, sizeof stream, "%s%s", sg_flows[f]->trigger_category,
                         t.saga_id + n) < (int)sizeof stream &&
                from_stream(&t, store, stream, err) != ES_OK)
                goto fail;
        }
    }
    if (from_saga(&t, store, err) != ES_OK)
        goto fail;
    if (json_array_size(t.stages) == 0) {
        es_error_set(err, ES_ENOTFOUND, "trace_not_found", NULL,
                     "no stage of trace %s is known (the projector keeps its record "
                     "ES_TRACE_TTL seconds)", t.trace_id);
        goto fail;
    }
    stages = finish(&t, &slowest);
    *doc = json_pack("{s:s, s:s?, s:b, s:O, s:O}", "trace_id", t.trace_id, "saga_id",
                     t.saga_id[0] ? t.saga_id : NULL, "recorded", t.recorded, "stages", stages,
                     "slowest", slowest == SIZE_MAX ? json_null()
                                                    : json_array_get(stages, slowest));
    if (*doc == NULL) {
        es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        goto fail;
    }
    goto done;
fail:
    st = err->status;
done:
    json_decref(stages);
    json_decref(t.stages);
    json_decref(t.commands);
    if (js_open)
        es_jetstream_close(&js);
    if (rc)
        redisFree(rc);
    return st;
}
