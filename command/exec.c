/*
 * The machinery every command shares (see cmd.h): outcomes, aggregates
 * with snapshots, appends with ids derived from the command id, and the
 * argument decoders.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "schema.h"
#include "snapshot.h"

void
cmd_out_init(cmd_out *out)
{
    out->status = ES_OK;
    out->http_status = 200;
    out->body = NULL;
    es_error_clear(&out->err);
}

void
cmd_out_free(cmd_out *out)
{
    json_decref(out->body);
    out->body = NULL;
}

es_status
cmd_fail(cmd_out *out, es_status st, const char *code, const char *field, const char *fmt, ...)
{
    va_list ap;
    char message[sizeof out->err.message];

    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    json_decref(out->body);
    out->body = NULL;
    out->status = es_error_set(&out->err, st, code, field, "%s", message);
    out->http_status = 0;
    return st;
}

void
cmd_fail_with(cmd_out *out, const es_error *err)
{
    json_decref(out->body);
    out->body = NULL;
    out->err = *err;
    out->status = err->status == ES_OK ? ES_EINTERNAL : err->status;
    out->http_status = 0;
}

void
cmd_ok(cmd_out *out, int http_status, json_t *body, es_position position)
{
    char pos[ES_POSITION_TEXT_MAX];

    es_position_format(position, pos);
    json_object_set_new(body, "position", json_string(pos));
    if (out->body != body)
        json_decref(out->body);
    out->body = body;
    out->status = ES_OK;
    out->http_status = http_status;
}

/* ---- aggregates ------------------------------------------------------ */

json_t *
cmd_event_data(const es_event *e)
{
    json_t *d = json_loads(e->data, 0, NULL);
    return d ? d : json_object();
}

void
agg_free(agg *a)
{
    json_decref(a->state);
    a->state = NULL;
}

es_status
agg_load(cmd_env *env, const agg_type *t, const char *stream, agg *a, es_error *err)
{
    return agg_load_until(env, t, stream, INT64_MAX, a, err);
}

es_status
agg_load_until(cmd_env *env, const agg_type *t, const char *stream, int64_t until, agg *a,
               es_error *err)
{
    es_page *p = NULL;
    es_status st;
    int64_t from;

    a->state = NULL;
    a->version = -1;
    a->position.txid = 0;
    a->position.gpos = 0;
    snprintf(a->stream, sizeof a->stream, "%s", stream);
    if (until == INT64_MAX) {
        /* the snapshot and the events after it in one round trip */
        st = es_snapshot_read(env->store, stream, t->state_version, 500, &a->state, &a->version,
                              &p, err);
    } else {
        st = es_snapshot_load(env->store, stream, t->state_version, &a->state, &a->version,
                              err);
        if (st == ES_OK && a->version > until) {
            json_decref(a->state);      /* taken later than asked: from the start */
            a->state = NULL;
            st = ES_ENOTFOUND;
        }
        if (st == ES_ENOTFOUND)
            st = ES_OK;
    }
    if (st == ES_ENOTFOUND) {
        a->state = t->initial();        /* no stream: the initial state */
        return ES_OK;
    }
    if (st != ES_OK)
        return st;
    if (a->state == NULL) {
        a->state = t->initial();
        a->version = -1;
    }
    from = a->version + 1;
    for (;;) {
        if (p == NULL) {
            st = es_store_read_stream(env->store, stream, from, 500, ES_FORWARD, &p, err);
            if (st == ES_ENOTFOUND)
                return ES_OK;           /* no stream: the initial state */
            if (st != ES_OK) {
                agg_free(a);
                return st;
            }
        }
        for (size_t i = 0; i < p->count && p->events[i].version <= until; i++) {
            json_t *data = cmd_event_data(&p->events[i]);
            t->apply(a->state, p->events[i].type, data);
            json_decref(data);
            a->version = p->events[i].version;
            a->position = p->events[i].position;
        }
        from = a->version + 1;
        if ((p->count < 500 && !p->truncated) || a->version >= until) {
            es_page_destroy(p);
            return ES_OK;
        }
        es_page_destroy(p);
        p = NULL;
    }
}

void
agg_advance(cmd_env *env, const agg_type *t, agg *a, const char **types, json_t **datas,
            size_t n)
{
    int64_t before = a->version;
    int every = env->cfg->snapshot_every > 0 ? env->cfg->snapshot_every : 50;
    es_error err;

    for (size_t i = 0; i < n; i++)
        t->apply(a->state, types[i], datas[i]);
    a->version += (int64_t)n;
    /* Best effort: a lost snapshot costs a longer rebuild, nothing else. */
    if ((before + 1) / every != (a->version + 1) / every)
        (void)es_snapshot_save(env->store, a->stream, t->state_version, a->state, a->version,
                               &err);
}

/* ---- appends --------------------------------------------------------- */

void
cmd_events_free(cmd_event *evs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_decref(evs[i].data);
        evs[i].data = NULL;
    }
}

bool
cmd_stream(char *out, size_t size, const char *prefix, const char *id)
{
    int n = snprintf(out, size, "%s-%s", prefix, id);

    return n > 0 && (size_t)n < size && es_stream_id_check(out, NULL, NULL) == ES_OK;
}

void
cmd_new_id(const char *command_id, unsigned salt, char *out)
{
    es_uuid_derive(command_id, 100000u + salt, out);
}

/* Metadata of every event a command writes: its ids, the principal and
 * the command's trace (trace_id, span_id, parent_span_id, accepted_at). */
static char *
metadata(const char *command_id, const json_t *args, const char *principal,
         const es_trace *trace)
{
    json_t *m = json_object();
    const json_t *corr = args ? json_object_get(args, "correlation_id") : NULL;
    const json_t *cause = args ? json_object_get(args, "causation_id") : NULL;
    char *text;

    json_object_set_new(m, "command_id", json_string(command_id));
    json_object_set_new(m, "correlation_id",
                        json_is_string(corr) ? json_copy((json_t *)corr) : json_string(command_id));
    if (json_is_string(cause))
        json_object_set_new(m, "causation_id", json_copy((json_t *)cause));
    if (principal != NULL && principal[0] != '\0')
        json_object_set_new(m, "principal", json_string(principal));
    text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    if (text != NULL && trace != NULL && trace->trace_id[0] != '\0') {
        es_buf b = ES_BUF_INIT;
        size_t n = strlen(text);

        /* the members are plain ASCII: written after the object's text */
        es_buf_append(&b, text, n - 1);
        es_trace_metadata(&b, trace, n == 2);
        es_buf_puts(&b, "}");
        free(text);
        text = es_buf_failed(&b) ? NULL : strdup(b.data);
        es_buf_free(&b);
    }
    return text;
}

/*
 * Encodes a's events (ids, data texts) into evs/ids/texts after checking
 * each against its schema (events/schema.h): an event a context emits
 * that its schema refuses is a bug of that context, never stored, and
 * answered as one (ES_EINTERNAL, code event_schema_violation, 500).
 * ES_ENOMEM when out of memory; err says which.
 */
static es_status
encode(const char *command_id, const cmd_append *a, const char *meta, es_new_event *evs,
       char (*ids)[ES_UUID_LEN + 1], char **texts, es_error *err)
{
    for (size_t i = 0; i < a->count; i++) {
        const es_schema *s = es_schema_find(a->stream, a->events[i].type);
        es_error serr;

        es_error_clear(&serr);
        if (s == NULL)
            return es_error_set(err, ES_EINTERNAL, "event_schema_violation", NULL,
                                "bug: a command emitted %s to \"%s\", a type without a schema",
                                a->events[i].type, a->stream);
        if (es_schema_check(s, a->events[i].data, "data", &serr) != ES_OK)
            return es_error_set(err, ES_EINTERNAL, "event_schema_violation", NULL,
                                "bug: a command emitted %s to \"%s\" against its schema: %s",
                                a->events[i].type, a->stream, serr.message);
        es_uuid_derive(command_id, a->id_base + (unsigned)i, ids[i]);
        if ((texts[i] = json_dumps(a->events[i].data, JSON_COMPACT)) == NULL)
            return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not encode events");
        evs[i] = (es_new_event){ids[i], a->events[i].type, s->version, texts[i], meta};
    }
    return ES_OK;
}

#define CMD_EVENTS_MAX 64

es_status
cmd_append_one(cmd_env *env, const char *command_id, const json_t *args, const cmd_append *a,
               es_append_result *res)
{
    return cmd_append_all(env, command_id, args, a, 1, res, &(size_t){0});
}

es_status
cmd_append_all(cmd_env *env, const char *command_id, const json_t *args, const cmd_append *as,
               size_t n, es_append_result *res, size_t *failed)
{
    es_new_event evs[CMD_EVENTS_MAX];
    char ids[CMD_EVENTS_MAX][ES_UUID_LEN + 1];
    char *texts[CMD_EVENTS_MAX] = {0};
    es_append_req reqs[16];
    char *meta = metadata(command_id, args, env->principal, env->trace);
    size_t used = 0, i;
    es_status st;

    *failed = 0;
    if (meta == NULL || n > 16) {
        st = es_error_set(&res[0].err, ES_ENOMEM, NULL, NULL, "could not encode events");
        res[0].status = st;
        goto done;
    }
    for (i = 0; i < n; i++) {
        if (used + as[i].count > CMD_EVENTS_MAX) {
            st = es_error_set(&res[i].err, ES_EINTERNAL, NULL, NULL,
                              "bug: a command emitted more than %d events", CMD_EVENTS_MAX);
            res[i].status = st;
            *failed = i;
            goto done;
        }
        if ((st = encode(command_id, &as[i], meta, evs + used, ids + used, texts + used,
                         &res[i].err)) != ES_OK) {
            res[i].status = st;
            *failed = i;
            goto done;
        }
        reqs[i] = (es_append_req){as[i].stream, as[i].expected, evs + used, as[i].count};
        used += as[i].count;
    }
    if (n == 1)
        st = es_committer_append(env->committer, &reqs[0], &res[0]);
    else
        st = es_store_append_atomic(env->store, reqs, n, res, failed);
done:
    for (i = 0; i < CMD_EVENTS_MAX; i++)
        free(texts[i]);
    free(meta);
    return st;
}

es_status
cmd_prior(cmd_env *env, const char *command_id, unsigned id_base, es_page **page, es_error *err)
{
    char id[ES_UUID_LEN + 1];

    es_uuid_derive(command_id, id_base, id);
    return es_store_read_event(env->store, id, page, err);
}

/* ---- argument decoding ------------------------------------------------ */

es_status
dec_string(const json_t *obj, const char *name, bool required, size_t max, const char **out,
           es_error *err)
{
    const json_t *v = json_object_get(obj, name);
    const char *s;
    size_t n;

    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        if (!required)
            return ES_OK;
        return es_error_set(err, ES_EINVALID, "field_missing", name, "%s is required", name);
    }
    if (!json_is_string(v))
        return es_error_set(err, ES_EINVALID, "field_type", name, "%s must be a string", name);
    s = json_string_value(v);
    n = json_string_length(v);
    if (n == 0)
        return es_error_set(err, ES_EINVALID, "field_empty", name, "%s is empty", name);
    if (n > max)
        return es_error_set(err, ES_EINVALID, "field_too_long", name,
                            "%s is %zu bytes long, at most %zu are allowed", name, n, max);
    if (strlen(s) != n || !es_text_printable(s, n))
        return es_error_set(err, ES_EINVALID, "field_invalid", name,
                            "%s contains a control character", name);
    *out = s;
    return ES_OK;
}

es_status
dec_int(const json_t *obj, const char *name, bool required, int64_t min, int64_t max,
        int64_t *out, es_error *err)
{
    const json_t *v = json_object_get(obj, name);

    if (v == NULL || json_is_null(v)) {
        if (!required)
            return ES_OK;
        return es_error_set(err, ES_EINVALID, "field_missing", name, "%s is required", name);
    }
    if (!json_is_integer(v))
        return es_error_set(err, ES_EINVALID, "field_type", name, "%s must be an integer", name);
    if (json_integer_value(v) < min || json_integer_value(v) > max)
        return es_error_set(err, ES_EINVALID, "field_range", name,
                            "%s must be between %" PRId64 " and %" PRId64 ", not %" JSON_INTEGER_FORMAT,
                            name, min, max, json_integer_value(v));
    *out = json_integer_value(v);
    return ES_OK;
}

es_status
dec_id(const json_t *obj, const char *name, const char **out, es_error *err)
{
    es_status st = dec_string(obj, name, true, 100, out, err);

    if (st == ES_OK && strchr(*out, '/') != NULL) {
        *out = NULL;
        return es_error_set(err, ES_EINVALID, "field_invalid", name, "%s must not contain '/'", name);
    }
    return st;
}

/* ---- the usual shape of a command ---------------------------------------- */

#define DECIDE_EVENTS_MAX 16

es_position
cmd_head(cmd_env *env)
{
    es_position head = {0, 0};
    es_error err;

    (void)es_store_feed_head(env->store, &head, &err);
    return head;
}

es_position
cmd_noop_position(cmd_env *env, const agg *a)
{
    es_position head = cmd_head(env);

    return es_position_cmp(a->position, head) > 0 ? a->position : head;
}

/* Rebuilds the state before the command's events and decides again. */
static void
replay_decision(cmd_env *env, const agg_type *t, const char *stream, cmd_decide_fn decide,
                void *ctx, const es_append_result *res, cmd_out *out)
{
    cmd_event evs[DECIDE_EVENTS_MAX];
    size_t n = 0;
    agg a;
    es_error err;

    cmd_out_free(out);
    cmd_out_init(out);
    if (agg_load_until(env, t, stream, res->first_version - 1, &a, &err) != ES_OK) {
        cmd_fail_with(out, &err);
        return;
    }
    decide(env, ctx, &a, evs, &n, out);
    cmd_events_free(evs, n);
    agg_free(&a);
    if (out->status == ES_OK)
        cmd_ok(out, 200, out->body ? out->body : json_object(), res->position);
}

void
cmd_run(cmd_env *env, const char *command_id, const json_t *args, const agg_type *t,
        const char *stream, unsigned id_base, cmd_decide_fn decide, void *ctx, cmd_out *out)
{
    int tries = env->cfg->conflict_retries > 0 ? env->cfg->conflict_retries : 10;

    for (int attempt = 0;; attempt++) {
        cmd_event evs[DECIDE_EVENTS_MAX];
        const char *types[DECIDE_EVENTS_MAX];
        json_t *datas[DECIDE_EVENTS_MAX];
        es_append_result res;
        size_t n = 0;
        agg a;
        es_error err;

        cmd_out_free(out);
        cmd_out_init(out);
        if (agg_load(env, t, stream, &a, &err) != ES_OK) {
            cmd_fail_with(out, &err);
            return;
        }
        decide(env, ctx, &a, evs, &n, out);
        if (n == 0) {
            if (out->status == ES_OK)
                cmd_ok(out, out->http_status, out->body ? out->body : json_object(),
                       cmd_noop_position(env, &a));
            agg_free(&a);
            return;
        }
        {
            cmd_append ap = {stream, a.version, evs, n, id_base};
            cmd_append_one(env, command_id, args, &ap, &res);
        }
        if (res.status == ES_ECONFLICT && attempt < tries) {
            cmd_events_free(evs, n);
            agg_free(&a);
            continue;
        }
        if (res.status == ES_OK && res.duplicate) {
            /* This command ran before: answer as it did, deciding again on
             * the state it saw (decisions are deterministic). */
            cmd_events_free(evs, n);
            agg_free(&a);
            replay_decision(env, t, stream, decide, ctx, &res, out);
            return;
        }
        if (res.status != ES_OK) {
            cmd_fail_with(out, &res.err);
        } else {
            for (size_t i = 0; i < n; i++) {
                types[i] = evs[i].type;
                datas[i] = evs[i].data;
            }
            agg_advance(env, t, &a, types, datas, n);
            if (out->status == ES_OK)
                cmd_ok(out, res.duplicate ? 200 : out->http_status,
                       out->body ? out->body : json_object(), res.position);
        }
        cmd_events_free(evs, n);
        agg_free(&a);
        return;
    }
}

bool
cmd_replay(cmd_env *env, const char *command_id, bool fresh, unsigned id_base,
           cmd_replay_fn map, cmd_out *out)
{
    es_page *p = NULL;
    es_error err;
    json_t *data;

    if (fresh)
        return false;
    if (cmd_prior(env, command_id, id_base, &p, &err) != ES_OK) {
        if (err.status != ES_ENOTFOUND) {
            cmd_fail_with(out, &err);
            return true;
        }
        return false;
    }
    data = cmd_event_data(&p->events[0]);
    cmd_out_free(out);
    cmd_out_init(out);
    map(&p->events[0], data, out);
    if (out->status == ES_OK)
        cmd_ok(out, 200, out->body ? out->body : json_object(), p->events[0].position);
    json_decref(data);
    es_page_destroy(p);
    return true;
}

bool
cmd_stream_arg(const json_t *in, const char *field, const char *prefix, char *stream,
               const char **id, cmd_out *out)
{
    es_error err;

    if (dec_id(in, field, id, &err) != ES_OK) {
        cmd_fail_with(out, &err);
        return false;
    }
    if (!cmd_stream(stream, ES_STREAM_ID_MAX + 1, prefix, *id)) {
        cmd_fail(out, ES_EINVALID, "field_invalid", field, "%s is not usable as an id", field);
        return false;
    }
    return true;
}
