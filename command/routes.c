/*
 * The command service's HTTP API (shared/API.md, command part): the event
 * store used directly, the domain commands, health and metrics.  Every
 * POST honours Idempotency-Key: the key becomes the command id (so the
 * effect happens once, whatever the race) and the first response is kept
 * and replayed byte for byte.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app.h"
#include "codec.h"
#include "contexts.h"
#include "idem.h"
#include "log.h"
#include "schema.h"
#include "subscriptions.h"

#define PAGE_DEFAULT 100
#define PAGE_MAX 1000

/* ---- per-thread environments ------------------------------------------- */

static __thread cmd_env *tl_env;

cmd_env *
app_env_new(app *a, es_error *err)
{
    cmd_env *env;

    if ((env = calloc(1, sizeof *env)) == NULL) {
        es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        return NULL;
    }
    if (es_store_create(&env->store, a->conninfo, err) != ES_OK) {
        free(env);
        return NULL;
    }
    env->committer = a->committer;
    env->cfg = &a->cfg;
    pthread_mutex_lock(&a->envs_mu);
    if (a->nenvs == a->capenvs) {
        size_t cap = a->capenvs ? a->capenvs * 2 : 64;
        cmd_env **grown = realloc(a->envs, cap * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&a->envs_mu);
            es_store_close(env->store);
            free(env);
            es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
            return NULL;
        }
        a->envs = grown;
        a->capenvs = cap;
    }
    a->envs[a->nenvs++] = env;
    pthread_mutex_unlock(&a->envs_mu);
    return env;
}

cmd_env *
app_env(app *a, es_error *err)
{
    if (tl_env == NULL)
        tl_env = app_env_new(a, err);
    return tl_env;
}

void
app_envs_close(app *a)
{
    for (size_t i = 0; i < a->nenvs; i++) {
        es_store_close(a->envs[i]->store);
        free(a->envs[i]);
    }
    free(a->envs);
    a->envs = NULL;
    a->nenvs = a->capenvs = 0;
}

bool
app_serves(const app *a, const char *name)
{
    char context[64];

    snprintf(context, sizeof context, "%.*s", (int)strcspn(name, "."), name);
    return a->contexts[0] == '\0' || es_list_contains(a->contexts, context);
}

void
app_count(app *a, const cmd_out *out)
{
    if (out->status == ES_OK)
        atomic_fetch_add(&a->commands_ok, 1);
    else if (out->status == ES_ERULE || out->status == ES_EINVALID ||
             out->status == ES_ECONFLICT || out->status == ES_ENOTFOUND)
        atomic_fetch_add(&a->commands_rejected, 1);
    else
        atomic_fetch_add(&a->commands_failed, 1);
}

/* ---- helpers ------------------------------------------------------------ */

static bool
has_prefix(const char *s, const char *prefix, const char **rest)
{
    size_t n = strlen(prefix);

    if (strncmp(s, prefix, n) != 0)
        return false;
    *rest = s + n;
    return true;
}

/* Whether path is /v1/streams/{stream}/events: APPEND_PATH with the
 * stream copied into name when it fits in size bytes, APPEND_TOO_LONG
 * when it does not (a 400 naming the stream, not an unknown route). */
enum { NOT_APPEND, APPEND_PATH, APPEND_TOO_LONG };

static int
append_path(const char *path, char *name, size_t size)
{
    const char *stream;
    size_t n;

    if (!has_prefix(path, "/v1/streams/", &stream) || (n = strlen(stream)) <= 7 ||
        strcmp(stream + n - 7, "/events") != 0)
        return NOT_APPEND;
    if (n - 7 >= size)
        return APPEND_TOO_LONG;
    memcpy(name, stream, n - 7);
    name[n - 7] = '\0';
    return APPEND_PATH;
}

/* Parses an integer query argument into [min, max]; false (res set) if bad. */
static bool
query_int(const es_http_req *req, es_http_res *res, const char *name, int64_t min, int64_t max,
          int64_t *out)
{
    const char *v = es_http_query(req, name);
    char *end;
    long long n;

    if (v == NULL)
        return true;
    n = strtoll(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n < min || n > max) {
        es_http_res_error(res, 400, "query_invalid", name, NULL,
                          "%s must be an integer from %" PRId64 " to %" PRId64, name, min, max);
        return false;
    }
    *out = n;
    return true;
}

static void
outcome_to_res(const cmd_out *out, es_http_res *res)
{
    if (out->status == ES_OK)
        es_http_res_json(res, out->http_status ? out->http_status : 200, json_incref(out->body));
    else
        es_http_res_from_error(res, &out->err);
}

/* ---- the event store, used directly ------------------------------------ */

/* An append on its way: the decoded body and what the committer answers. */
typedef struct append_job {
    es_append_body body;
    char (*ids)[ES_UUID_LEN + 1];
    es_append_req areq;
    es_append_result r;
    es_http_pending *pending;       /* answered when done (quick path) */
    char *meta_plain;               /* {"principal": ..., "trace_id": ...}, shared by events
                                       without metadata */
    char **metas;                   /* per event, those that brought their own */
    char stream[ES_STREAM_ID_MAX + 8];
    char traceparent[ES_TRACEPARENT_LEN + 1];   /* answered in the header */
} append_job;

static void
append_job_free(append_job *j)
{
    if (j->metas != NULL)
        for (size_t i = 0; i < j->body.count; i++)
            free(j->metas[i]);
    free(j->metas);
    free(j->meta_plain);
    es_append_body_free(&j->body);
    free(j->ids);
    free(j);
}

/*
 * Sets metadata.principal of every event of j to principal (unless ""),
 * and the trace's members (trace_id, span_id, parent_span_id,
 * accepted_at; events/trace.h), over any value the client sent.  Events without metadata share one text made
 * once per request.  Those with metadata (an object, as the decoder
 * checked) get the member appended last, as text: jsonb keeps the last
 * of duplicate keys, however the client spelled its own ("princ\u0069pal"
 * included), and nothing of the client's text is parsed or re-encoded, so
 * numbers no parser here could hold (1e400) stay as sent.  false on OOM.
 */
static bool
stamp(append_job *j, const char *principal, const es_trace *trace)
{
    es_buf member = ES_BUF_INIT;
    bool ok = false;

    if (principal[0] == '\0' && trace->trace_id[0] == '\0')
        return true;
    if (principal[0] != '\0') {
        es_buf_puts(&member, "\"principal\":");
        es_buf_json_string(&member, principal);
    }
    es_trace_metadata(&member, trace, principal[0] == '\0');
    es_buf_puts(&member, "}");
    if (es_buf_failed(&member) || asprintf(&j->meta_plain, "{%s", member.data) < 0) {
        j->meta_plain = NULL;
        goto done;
    }
    for (size_t i = 0; i < j->body.count; i++) {
        es_new_event *ev = &j->body.events[i];
        size_t end, open;

        if (ev->metadata == NULL) {
            ev->metadata = j->meta_plain;
            continue;
        }
        if (j->metas == NULL && (j->metas = calloc(j->body.count, sizeof *j->metas)) == NULL)
            goto done;
        /* the text up to its closing brace; empty when only white space
         * stands between the braces */
        end = strlen(ev->metadata);
        while (end > 0 && ev->metadata[end - 1] != '}')
            end--;
        if (end == 0)
            goto done;          /* not an object: the decoder refuses those */
        end--;
        open = strspn(ev->metadata, " \t\r\n") + 1;
        if (asprintf(&j->metas[i], "%.*s%s%s", (int)end, ev->metadata,
                     strspn(ev->metadata + open, " \t\r\n") == end - open ? "" : ",",
                     member.data) < 0) {
            j->metas[i] = NULL;
            goto done;
        }
        ev->metadata = j->metas[i];
    }
    ok = true;
done:
    es_buf_free(&member);
    return ok;
}

/*
 * Decodes the body into a new job (NULL, res set, on failure).  With an
 * Idempotency-Key (fresh false), events sent without an id get one
 * derived from the key, so two racing twins append once.
 */
static append_job *
append_prepare(const char *stream, const es_http_req *req, const char *command_id, bool fresh,
               const es_trace *trace, es_http_res *res)
{
    append_job *j = calloc(1, sizeof *j);
    es_error err;

    if (j == NULL) {
        es_http_res_error(res, 500, "out_of_memory", NULL, NULL, "out of memory");
        return NULL;
    }
    snprintf(j->stream, sizeof j->stream, "%s", stream);
    if (es_append_body_decode(req->body, req->body_len, &j->body, &err) != ES_OK) {
        es_http_res_from_error(res, &err);
        free(j);
        return NULL;
    }
    /* a category that declares schemas takes only events that pass them
     * (events/schema.h): 422 naming the field, nothing written */
    for (size_t i = 0; i < j->body.count; i++) {
        const es_new_event *ev = &j->body.events[i];
        char prefix[32];

        snprintf(prefix, sizeof prefix, "events[%zu]", i);
        if (es_schema_check_text(stream, ev->type, ev->schema_version, ev->data, NULL, prefix,
                                 &err) != ES_OK) {
            es_http_res_from_error(res, &err);
            append_job_free(j);
            return NULL;
        }
    }
    if (!fresh) {
        if ((j->ids = calloc(j->body.count, sizeof *j->ids)) == NULL) {
            append_job_free(j);
            es_http_res_error(res, 500, "out_of_memory", NULL, NULL, "out of memory");
            return NULL;
        }
        for (size_t i = 0; i < j->body.count; i++) {
            if (j->body.events[i].event_id == NULL || j->body.events[i].event_id[0] == '\0') {
                es_uuid_derive(command_id, (unsigned)i, j->ids[i]);
                j->body.events[i].event_id = j->ids[i];
            }
        }
    }
    es_traceparent_format(trace, j->traceparent);
    if (!stamp(j, req->principal, trace)) {
        append_job_free(j);
        es_http_res_error(res, 500, "out_of_memory", NULL, NULL, "out of memory");
        return NULL;
    }
    j->areq = (es_append_req){j->stream, j->body.expected, j->body.events, j->body.count};
    return j;
}

/* The answer to a finished append. */
static void
append_answer(const append_job *j, es_http_res *res)
{
    char pos[ES_POSITION_TEXT_MAX];

    if (j->r.status != ES_OK) {
        es_http_res_from_error(res, &j->r.err);
        return;
    }
    /* Written straight into the body: the hottest answer of the service,
     * and building it as a jansson object cost a dozen allocations. */
    es_position_format(j->r.position, pos);
    res->status = j->r.duplicate ? 200 : 201;
    es_buf_reset(&res->body);
    es_buf_puts(&res->body, "{\"stream\":");
    es_buf_json_string(&res->body, j->stream);
    es_buf_puts(&res->body, ",\"first_version\":");
    es_buf_int(&res->body, j->r.first_version);
    es_buf_puts(&res->body, ",\"last_version\":");
    es_buf_int(&res->body, j->r.last_version);
    es_buf_puts(&res->body, ",\"position\":\"");
    es_buf_puts(&res->body, pos);
    es_buf_puts(&res->body, "\"}");
    if (es_buf_failed(&res->body))
        es_http_res_error(res, 500, "out_of_memory", NULL, NULL, "out of memory");
}

/* Appends and waits (a pool thread, with an Idempotency-Key to store). */
static void
append_events(app *a, const char *stream, const es_http_req *req, const char *command_id,
              bool fresh, const es_trace *trace, es_http_res *res)
{
    append_job *j = append_prepare(stream, req, command_id, fresh, trace, res);

    if (j == NULL)
        return;
    es_committer_append(a->committer, &j->areq, &j->r);
    append_answer(j, res);
    append_job_free(j);
}

/* The committer's callback for a quick append: answers it. */
static void
append_done(void *ctx)
{
    append_job *j = ctx;
    es_http_res res = {.status = 200};

    append_answer(j, &res);
    if (j->traceparent[0] != '\0')
        es_http_res_header(&res, ES_TRACEPARENT_HEADER, j->traceparent);
    es_http_answer(j->pending, &res);
    append_job_free(j);
}

static void
encode_page(es_buf *b, const es_page *p, bool with_stream)
{
    es_buf_puts(b, "\"events\":[");
    for (size_t i = 0; i < p->count; i++) {
        if (i > 0)
            es_buf_puts(b, ",");
        es_event_encode(b, &p->events[i], with_stream);
    }
    es_buf_puts(b, "]");
}

static void
read_stream(app *a, const char *stream, const es_http_req *req, es_http_res *res)
{
    const char *dir = es_http_query(req, "direction");
    int64_t from = -1, limit = PAGE_DEFAULT;
    es_direction d = ES_FORWARD;
    cmd_env *env;
    es_page *p;
    es_error err;
    es_status st;

    if (dir != NULL && strcmp(dir, "forward") != 0 && strcmp(dir, "backward") != 0) {
        es_http_res_error(res, 400, "query_invalid", "direction", NULL,
                          "direction must be forward or backward");
        return;
    }
    if (dir != NULL && strcmp(dir, "backward") == 0)
        d = ES_BACKWARD;
    if (!query_int(req, res, "from", 0, INT64_MAX, &from) ||
        !query_int(req, res, "limit", 1, PAGE_MAX, &limit))
        return;
    if ((env = app_env(a, &err)) == NULL) {
        es_http_res_from_error(res, &err);
        return;
    }
    /* a client's page is bounded in bytes too (this thread's store) */
    es_store_set_read_budget(env->store, es_store_read_budget_configured());
    st = es_store_read_stream(env->store, stream, from, (size_t)limit, d, &p, &err);
    es_store_set_read_budget(env->store, 0);
    if (st != ES_OK) {
        es_http_res_from_error(res, &err);
        return;
    }
    es_buf_puts(&res->body, "{\"stream\":");
    es_buf_json_string(&res->body, stream);
    es_buf_printf(&res->body, ",\"version\":%" PRId64 ",", p->stream_version);
    encode_page(&res->body, p, false);
    /* where the next page starts, while the stream goes on past this
     * one (the row limit, or the read budget, ended it) */
    if (p->count > 0) {
        int64_t last = p->events[p->count - 1].version;
        if (d == ES_FORWARD && last < p->stream_version)
            es_buf_printf(&res->body, ",\"next_from\":%" PRId64, last + 1);
        else if (d == ES_BACKWARD && last > 0)
            es_buf_printf(&res->body, ",\"next_from\":%" PRId64, last - 1);
    }
    es_buf_puts(&res->body, "}");
    res->status = 200;
    es_page_destroy(p);
}

static void
read_feed(app *a, const es_http_req *req, es_http_res *res)
{
    const char *after_text = es_http_query(req, "after");
    es_position after = {0, 0};
    int64_t limit = PAGE_DEFAULT;
    char next[ES_POSITION_TEXT_MAX];
    cmd_env *env;
    es_page *p;
    es_error err;
    es_status st;

    if (after_text != NULL && !es_position_parse(after_text, &after)) {
        es_http_res_error(res, 400, "query_invalid", "after", NULL,
                          "after must be a position returned by this service");
        return;
    }
    if (!query_int(req, res, "limit", 1, PAGE_MAX, &limit))
        return;
    if ((env = app_env(a, &err)) == NULL) {
        es_http_res_from_error(res, &err);
        return;
    }
    es_store_set_read_budget(env->store, es_store_read_budget_configured());
    st = es_store_read_feed(env->store, after, (size_t)limit, &p, &err);
    es_store_set_read_budget(env->store, 0);
    if (st != ES_OK) {
        es_http_res_from_error(res, &err);
        return;
    }
    es_position_format(p->next, next);
    es_buf_puts(&res->body, "{");
    encode_page(&res->body, p, true);
    es_buf_printf(&res->body, ",\"next\":\"%s\"}", next);
    res->status = 200;
    es_page_destroy(p);
}

/* ---- domain commands ----------------------------------------------------- */

/* Runs command name with args (stolen) from the body plus path members. */
static void
run_command(app *a, const char *name, json_t *args, const char *command_id, bool fresh,
            const char *principal, const es_trace *trace, es_http_res *res)
{
    const cmd_def *def = cmd_find(name);
    cmd_env *env;
    cmd_out out;
    es_error err;

    cmd_out_init(&out);
    if (def == NULL || !app_serves(a, name)) {
        es_http_res_error(res, 404, "route_not_found", NULL, NULL,
                          "this process does not serve %s", name);
    } else if ((env = app_env(a, &err)) == NULL) {
        es_http_res_from_error(res, &err);
    } else {
        env->principal = principal;
        env->trace = trace;
        def->fn(env, command_id, fresh, args, &out);
        env->principal = NULL;
        env->trace = NULL;
        app_count(a, &out);
        if (es_log_enabled(out.status == ES_OK || out.http_status < 500 ? ES_LOG_DEBUG
                                                                        : ES_LOG_WARNING))
            es_log_trace(out.status == ES_OK ? ES_LOG_DEBUG : ES_LOG_WARNING, trace->trace_id,
                         "command %s (%s): %s", name, command_id,
                         out.status == ES_OK ? "done" : out.err.message);
        outcome_to_res(&out, res);
    }
    cmd_out_free(&out);
    json_decref(args);
}

/* A POST route: matched path -> command name and the path's member. */
typedef struct post_route {
    const char *name;
    const char *member;         /* set from the path, or NULL */
    char value[ES_STREAM_ID_MAX + 1];
    size_t value_len;           /* > ES_STREAM_ID_MAX: too long, value is "" */
} post_route;

static bool
match_post(const char *path, post_route *r)
{
    const char *rest;
    size_t n;

    r->member = NULL;
    if (strcmp(path, "/v1/users") == 0) {
        r->name = "user.register";
        return true;
    }
    if (strcmp(path, "/v1/orders") == 0) {
        r->name = "order.place";
        return true;
    }
    if (has_prefix(path, "/v1/customers/", &rest) && (n = strcspn(rest, "/")) > 0 &&
        strcmp(rest + n, "/deposits") == 0) {
        r->name = "payment.deposit";
        r->member = "customer_id";
    } else if (has_prefix(path, "/v1/inventory/", &rest) && (n = strcspn(rest, "/")) > 0 &&
               strcmp(rest + n, "/restock") == 0) {
        r->name = "inventory.restock";
        r->member = "sku";
    } else if (has_prefix(path, "/v1/orders/", &rest) && (n = strcspn(rest, "/")) > 0 &&
               strcmp(rest + n, "/cancel") == 0) {
        r->name = "order.cancel";
        r->member = "order_id";
    } else {
        return false;
    }
    /* an over-long id still names this route: post() refuses it (400) */
    r->value_len = n;
    if (n >= sizeof r->value)
        n = 0;
    memcpy(r->value, rest, n);
    r->value[n] = '\0';
    return true;
}

/* The POST itself, once idempotency is settled. */
static void
post(app *a, const es_http_req *req, const char *command_id, bool fresh, const es_trace *trace,
     es_http_res *res)
{
    char stream[ES_STREAM_ID_MAX + 8];
    post_route r;
    json_t *args;
    es_error err;

    switch (append_path(req->path, stream, sizeof stream)) {
    case APPEND_PATH:
        append_events(a, stream, req, command_id, fresh, trace, res);
        return;
    case APPEND_TOO_LONG:
        es_http_res_error(res, 400, "stream_id_too_long", "stream", NULL,
                          "the stream id is longer than %d bytes", ES_STREAM_ID_MAX);
        return;
    }
    if (!match_post(req->path, &r)) {
        es_http_res_error(res, 404, "route_not_found", NULL, NULL, "no route for POST %s", req->path);
        return;
    }
    if (r.member != NULL && r.value_len > ES_STREAM_ID_MAX) {
        es_http_res_error(res, 400, "id_too_long", r.member, NULL,
                          "%s is %zu bytes long, at most %d are allowed", r.member, r.value_len,
                          ES_STREAM_ID_MAX);
        return;
    }
    if (req->body_len == 0 && r.member != NULL) {
        args = json_object();       /* cancel takes no body */
    } else if (es_json_parse_object(req->body, req->body_len, &args, &err) != ES_OK) {
        es_http_res_from_error(res, &err);
        return;
    }
    if (r.member != NULL)
        json_object_set_new(args, r.member, json_string(r.value));
    run_command(a, r.name, args, command_id, fresh, req->principal, trace, res);
}

static bool
is_json(const char *ct)
{
    size_t n = strlen("application/json");

    return ct != NULL && strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/*
 * The trace of a command or append: the caller's traceparent continued,
 * or a new trace when it sent none or a malformed one (ignored, as the
 * W3C recommendation says: never an error).  The answer's traceparent
 * header names this service's span, every status included.
 */
static void
trace_begin(const es_http_req *req, es_trace *t, es_http_res *res)
{
    char tp[ES_TRACEPARENT_LEN + 1];

    es_trace_begin(t, es_http_header(req, ES_TRACEPARENT_HEADER));
    es_traceparent_format(t, tp);
    if (tp[0] != '\0')
        es_http_res_header(res, ES_TRACEPARENT_HEADER, tp);
}

/* POST with Idempotency-Key handling around it. */
static void
handle_post(app *a, const es_http_req *req, es_http_res *res)
{
    const char *key = es_http_header(req, "Idempotency-Key");
    char command_id[ES_IDEM_KEY_MAX + 8], hash[41];
    es_idem_record rec = {{0}, 0, NULL};
    cmd_env *env;
    es_error err;
    es_trace trace;

    trace_begin(req, &trace, res);

    if (req->body_len > 0 && !is_json(es_http_header(req, "Content-Type"))) {
        es_http_res_error(res, 415, "unsupported_media_type", NULL, NULL,
                          "request bodies must be application/json");
        return;
    }
    if (key == NULL) {
        if (!es_uuid_random(command_id)) {
            es_http_res_error(res, 500, "internal", NULL, NULL, "no random source");
            return;
        }
        post(a, req, command_id, true, &trace, res);
        return;
    }
    if (key[0] == '\0' || strlen(key) > ES_IDEM_KEY_MAX || !es_text_printable(key, strlen(key))) {
        es_http_res_error(res, 400, "idempotency_key_invalid", "Idempotency-Key", NULL,
                          "Idempotency-Key must be 1 to %d printable bytes", ES_IDEM_KEY_MAX);
        return;
    }
    if ((env = app_env(a, &err)) == NULL) {
        es_http_res_from_error(res, &err);
        return;
    }
    es_idem_hash(req->method, req->path, req->body, req->body_len, hash);
    if (es_idem_get(env->store, key, &rec, &err) == ES_OK) {
        goto replay;
    } else if (err.status != ES_ENOTFOUND) {
        es_http_res_from_error(res, &err);
        return;
    }
    snprintf(command_id, sizeof command_id, "idem:%s", key);
    post(a, req, command_id, false, &trace, res);
    if (res->status >= 500 || es_buf_failed(&res->body))
        return;             /* not an answer to keep: a retry may do better */
    if (es_idem_put(env->store, key, hash, res->status, res->body.data ? res->body.data : "",
                    &rec, &err) == ES_ECONFLICT)
        goto replay;        /* a concurrent twin stored first: answer as it did */
    return;
replay:
    if (strcmp(rec.request_hash, hash) != 0) {
        es_http_res_error(res, 422, "idempotency_key_reused", "Idempotency-Key", NULL,
                          "Idempotency-Key %s was used with a different request", key);
    } else {
        es_buf_reset(&res->body);
        es_buf_puts(&res->body, rec.body);
        res->status = rec.status;
        es_http_res_header(res, "Idempotent-Replayed", "true");
    }
    es_idem_record_free(&rec);
}

/* ---- health and metrics -------------------------------------------------- */

/* /readyz: PostgreSQL answers (within READY_PROBE_MS, or the connection
 * is given up: a hung server is "unavailable" at once rather than a
 * probe that never returns), and NATS when the bus is on. */
#define READY_PROBE_MS 2000
static atomic_int ready_was;        /* 0 ready; 1 PostgreSQL, 2 NATS not */
static bool
ready(void *ctx, json_t **body)
{
    app *a = ctx;
    es_error err;
    cmd_env *env = app_env(a, &err);
    bool pg = env != NULL && es_store_ping(env->store, READY_PROBE_MS, &err) == ES_OK;
    bool nats = a->bus == NULL || bus_connected(a->bus);

    /* a change is said in the log: a balancer's checks are its only
     * other trace */
    int now = (pg ? 0 : 1) | (nats ? 0 : 2), was = atomic_exchange(&ready_was, now);

    if (now != was) {
        if (now == 0)
            es_log(ES_LOG_INFO, "ready again");
        else
            es_log(ES_LOG_WARNING, "not ready:%s%s%s", pg ? "" : " PostgreSQL ",
                   pg ? "" : err.message, nats ? "" : " NATS not connected");
    }
    *body = json_pack("{s:s, s:s, s:s}", "status", pg && nats ? "ready" : "unavailable",
                      "postgres", pg ? "ok" : "unavailable", "nats",
                      a->bus == NULL ? "off" : nats ? "ok" : "unavailable");
    return pg && nats;
}

static void
metrics(void *ctx, es_buf *out)
{
    app *a = ctx;
    int idle, lent;

    bus_sessions(a->bus, &idle, &lent);
    es_buf_printf(out,
                  "# HELP es_command_nats_sessions PostgreSQL sessions of the commands over "
                  "NATS, idle or lent to a command being handled\n"
                  "# TYPE es_command_nats_sessions gauge\n"
                  "es_command_nats_sessions{state=\"idle\"} %d\n"
                  "es_command_nats_sessions{state=\"lent\"} %d\n",
                  idle, lent);
    es_buf_printf(out,
                  "# HELP es_command_commands_total domain commands by outcome\n"
                  "# TYPE es_command_commands_total counter\n"
                  "es_command_commands_total{outcome=\"ok\"} %llu\n"
                  "es_command_commands_total{outcome=\"rejected\"} %llu\n"
                  "es_command_commands_total{outcome=\"failed\"} %llu\n"
                  "# HELP es_command_nats_requests_refused_total NATS requests dropped unhandled "
                  "because their reply subject was not an inbox\n"
                  "# TYPE es_command_nats_requests_refused_total counter\n"
                  "es_command_nats_requests_refused_total %llu\n",
                  (unsigned long long)atomic_load(&a->commands_ok),
                  (unsigned long long)atomic_load(&a->commands_rejected),
                  (unsigned long long)atomic_load(&a->commands_failed),
                  bus_refused_replies(a->bus));
    es_auth_metrics(a->auth, "es_command", out);
    if (a->subs != NULL)
        subs_metrics(a->subs, "es_command", out);
}

void
routes_daemon(app *a)
{
    a->daemon = (es_daemon){.name = "es-command", .metrics_prefix = "es_command", .ready = ready,
                            .metrics = metrics, .ctx = a, .ready_retry_after = true};
}

/* ---- dispatch ------------------------------------------------------------ */

/* The methods a known path takes, or NULL for an unknown path. */
static const char *
allowed(const char *path)
{
    const char *rest;
    post_route r;

    if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0 ||
        strcmp(path, "/metrics") == 0 || strcmp(path, "/v1/feed") == 0 ||
        strcmp(path, "/v1/schemas") == 0 || strcmp(path, "/v1/subscriptions/feed") == 0)
        return "GET";
    if (has_prefix(path, "/v1/streams/", &rest) && rest[0] != '\0') {
        size_t n = strlen(rest);
        return n > 7 && strcmp(rest + n - 7, "/events") == 0 ? "GET, POST" : "GET";
    }
    if (match_post(path, &r))
        return "POST";
    return NULL;
}

/*
 * The scope each route needs: the service's one table of access rules,
 * next to the router, consulted by routes_guard before any handler (the
 * quick path's included).  NULL: a public route.  A path or method the
 * router does not serve needs admin, so that without a token every
 * route answers alike (401) and only an admin learns of a 404 or 405.
 *
 *   GET  /healthz, /readyz                    public
 *   GET  /metrics                             metrics
 *   GET  /v1/feed, /v1/streams/{stream}       read:streams
 *   GET  /v1/subscriptions/feed               read:streams (the feed, streamed)
 *   GET  /v1/schemas                          read:streams (the shapes of what
 *                                             that scope reads; no data)
 *   POST /v1/streams/{stream}/events          append:<category of stream>
 *   POST /v1/users                            command:user
 *   POST /v1/customers/{id}/deposits          command:payment
 *   POST /v1/inventory/{sku}/restock          command:inventory
 *   POST /v1/orders, /v1/orders/{id}/cancel   command:order
 *   anything else                             admin
 */
static const char *
route_scope(const es_http_req *req, char *buf, size_t size)
{
    char stream[ES_STREAM_ID_MAX + 8];
    const char *methods = allowed(req->path);
    post_route r;

    if (methods == NULL)
        return "admin";
    if (strcmp(req->method, "GET") == 0) {
        if (strcmp(req->path, "/healthz") == 0 || strcmp(req->path, "/readyz") == 0)
            return NULL;
        if (strcmp(req->path, "/metrics") == 0)
            return "metrics";
        if (strcmp(req->path, "/v1/feed") == 0 || strncmp(req->path, "/v1/streams/", 12) == 0 ||
            strcmp(req->path, "/v1/schemas") == 0 ||
            strcmp(req->path, "/v1/subscriptions/feed") == 0)
            return "read:streams";
        return "admin";
    }
    if (strcmp(req->method, "POST") != 0)
        return "admin";
    switch (append_path(req->path, stream, sizeof stream)) {
    case APPEND_PATH:
        snprintf(buf, size, "append:%.*s", (int)strcspn(stream, "-"), stream);
        return buf;
    case APPEND_TOO_LONG: {     /* refused as such once the token passes */
        size_t cat = strcspn(req->path + 12, "-/");
        snprintf(buf, size, "append:%.*s", (int)(cat < 64 ? cat : 64), req->path + 12);
        return buf;
    }
    }
    if (match_post(req->path, &r)) {
        /* the command's context: "payment.deposit" -> command:payment */
        snprintf(buf, size, "command:%.*s", (int)strcspn(r.name, "."), r.name);
        return buf;
    }
    return "admin";
}

bool
routes_guard(void *ctx, es_http_req *req, es_http_res *res)
{
    app *a = ctx;
    char scope[ES_STREAM_ID_MAX + 16];

    return es_auth_http(a->auth, req, route_scope(req, scope, sizeof scope), res);
}

/*
 * On the event loop: an append without an Idempotency-Key needs nothing
 * but the committer, so it is handed to it from here and answered from
 * its callback, without a pool thread to wake and wait.  Everything else
 * goes to routes_handle on the pool.
 */
bool
routes_quick(void *ctx, const es_http_req *req, es_http_res *res)
{
    app *a = ctx;
    char name[ES_STREAM_ID_MAX + 8];
    append_job *j;
    es_trace trace;

    if (strcmp(req->method, "POST") != 0 ||
        append_path(req->path, name, sizeof name) != APPEND_PATH ||
        req->body_len == 0 || !is_json(es_http_header(req, "Content-Type")) ||
        es_http_header(req, "Idempotency-Key") != NULL)
        return false;
    trace_begin(req, &trace, res);
    if ((j = append_prepare(name, req, NULL, true, &trace, res)) == NULL)
        return true;
    j->pending = es_http_defer(req);
    if (es_committer_submit(a->committer, &j->areq, &j->r, append_done, j) != ES_OK)
        append_done(j);
    return true;
}

void
routes_handle(void *ctx, const es_http_req *req, es_http_res *res)
{
    app *a = ctx;
    const char *methods = allowed(req->path), *rest;
    bool get = strcmp(req->method, "GET") == 0, is_post = strcmp(req->method, "POST") == 0;

    if (methods == NULL) {
        es_http_res_error(res, 404, "route_not_found", NULL, NULL, "no route for %s %s",
                          req->method, req->path);
        return;
    }
    if ((get && strstr(methods, "GET") == NULL) || (is_post && strstr(methods, "POST") == NULL) ||
        (!get && !is_post)) {
        es_http_res_header(res, "Allow", methods);
        es_http_res_error(res, 405, "method_not_allowed", NULL, NULL,
                          "%s %s is not allowed; use %s", req->method, req->path, methods);
        return;
    }
    if (is_post) {
        handle_post(a, req, res);
    } else if (es_daemon_http(&a->daemon, a->http, req, res)) {
        /* /healthz, /readyz, /metrics */
    } else if (strcmp(req->path, "/v1/feed") == 0) {
        read_feed(a, req, res);
    } else if (strcmp(req->path, "/v1/subscriptions/feed") == 0) {
        if (a->subs != NULL)
            subs_serve(a->subs, req, res);
        else
            es_http_res_error(res, 503, "shutting_down", NULL, NULL,
                              "subscriptions are not served now");
    } else if (strcmp(req->path, "/v1/schemas") == 0) {
        es_http_res_json(res, 200, es_schema_list_json());
    } else if (has_prefix(req->path, "/v1/streams/", &rest)) {
        read_stream(a, rest, req, res);
    }
}
