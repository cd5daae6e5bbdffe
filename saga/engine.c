/*
 * The saga engine.  A saga's state is the fold of its stream saga-<id>,
 * whose event types saga.h defines: sg_state_fold derives where the saga
 * is (sg_state), apply() below what the engine needs of its steps.  The
 * states and who moves a saga between them are drawn above act().
 *
 * Each run claims a due work row (saga.h: FOR UPDATE SKIP LOCKED),
 * reads the stream and the saga's inbox, and takes actions until it must
 * wait (a retry's backoff, an awaited event's deadline) or the saga ends.
 * Every action is appended before it is acted on, with the stream's exact
 * expected version, and every command carries an id derived from the saga
 * and the step ("<saga>/<step>", "<saga>/<step>/undo"): a run cut short by
 * a crash resends the same command, which the command service answers with
 * its first outcome.  Nothing is charged, reserved or refunded twice.
 */
#include "engine.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event.h"
#include "log.h"
#include "pg.h"
#include "saga.h"
#include "uuid.h"

#define ACTIONS_MAX 64              /* per claim, then the row is released */
#define UNDO_TIMEOUT_MS 5000        /* a compensation's answer */

enum { S_NONE, S_RUNNING, S_OK, S_RETRY, S_FAILED };

typedef struct step_st {
    int st, attempts;
    bool refused;               /* failed by a refusal: nothing was done */
    int64_t retry_at, deadline;
    int cst, cattempts, crefusals;
    int64_t cretry_at;
} step_st;

/* Started, and not known to have done nothing: it may have taken effect
 * (a lost answer, a crash before the outcome was recorded). */
static bool
in_doubt(const step_st *st)
{
    return st->attempts > 0 && st->st != S_OK && !(st->st == S_FAILED && st->refused);
}

typedef struct saga {
    char id[256], stream[300];
    const sg_flow *flow;
    int64_t version;                /* -1: no stream yet */
    bool started;
    sg_state state;
    json_t *ctx, *inbox;
    json_t *pending;                /* [{type, data}] decided, not yet written */
    step_st steps[SG_STEPS_MAX + 1];    /* [nsteps]: the trigger's own */
    char error[320];
} saga;

enum { ACT_AGAIN, ACT_WAIT, ACT_DONE, ACT_DEAD };

static const char *const phase_names[SG_PHASES] = {
    [SG_PH_CLAIM] = "claim", [SG_PH_STREAM] = "stream_read", [SG_PH_INBOX] = "inbox_read",
    [SG_PH_APPEND] = "append", [SG_PH_COMMAND] = "command", [SG_PH_GATEWAY] = "gateway",
    [SG_PH_RENEW] = "renew", [SG_PH_RELEASE] = "release", [SG_PH_CONN_WAIT] = "conn_wait",
};

const char *
sg_phase_name(int phase)
{
    return phase >= 0 && phase < SG_PHASES ? phase_names[phase] : "unknown";
}

static int64_t
mono_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Counts a call of phase that began at t0 (mono_ns). */
static void
timed(sg_worker *w, int phase, int64_t t0)
{
    atomic_fetch_add(&w->counters->phase_calls[phase], 1);
    atomic_fetch_add(&w->counters->phase_ns[phase], (unsigned long long)(mono_ns() - t0));
}

/* Takes a connection pair of the pool for one round trip (w->pg,
 * w->store); give_back() right after it, before anything else is taken. */
static void
borrow(sg_worker *w)
{
    int64_t t0 = mono_ns();

    w->conn = sg_pool_take(w->pool);
    timed(w, SG_PH_CONN_WAIT, t0);
    w->pg = w->conn->pg;
    w->store = w->conn->store;
}

static void
give_back(sg_worker *w)
{
    w->conn->pg = w->pg;        /* the next take connects it again if it broke */
    sg_pool_give(w->pool, w->conn);
    w->conn = NULL;
    w->pg = NULL;
    w->store = NULL;
}

int64_t
sg_now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int64_t
sg_backoff_ms(const sg_config *cfg, int attempt)
{
    double d = cfg->retry_base_ms;
    int i;

    for (i = 1; i < attempt && d < cfg->retry_max_ms; i++)
        d *= 2;
    if (d > cfg->retry_max_ms)
        d = cfg->retry_max_ms;
    d *= 0.75 + 0.5 * ((double)rand() / RAND_MAX);     /* jitter: no herds */
    return (int64_t)d;
}

/* ---- state ------------------------------------------------------------ */

static int
step_index(const saga *s, const char *name)
{
    size_t i;

    if (name == NULL)
        return -1;
    for (i = 0; i < s->flow->nsteps; i++)
        if (strcmp(s->flow->steps[i].name, name) == 0)
            return (int)i;
    if (strcmp(s->flow->trigger_step, name) == 0)
        return (int)s->flow->nsteps;
    return -1;
}

static int64_t
jint(const json_t *o, const char *k)
{
    return (int64_t)json_integer_value(json_object_get(o, k));
}

/* Folds one event of the saga's stream into s. */
static void
apply(saga *s, const char *type, const json_t *d)
{
    int i = step_index(s, json_string_value(json_object_get(d, "step")));
    step_st *st = i >= 0 ? &s->steps[i] : NULL;

    (void)sg_state_fold(&s->state, type, d);    /* the state; the steps are the engine's */
    if (strcmp(type, SG_EV_STARTED) == 0) {
        s->started = true;
        json_decref(s->ctx);
        s->ctx = json_deep_copy(json_object_get(d, "data"));
        if (!json_is_object(s->ctx)) {
            json_decref(s->ctx);
            s->ctx = json_object();
        }
    } else if (strcmp(type, SG_EV_REPLAYED) == 0) {
        size_t k;
        for (k = 0; k <= SG_STEPS_MAX; k++) {
            /* an operator's retry starts afresh: no backoff, no refusals */
            s->steps[k].crefusals = 0;
            s->steps[k].retry_at = s->steps[k].cretry_at = 0;
        }
    } else if (strcmp(type, SG_EV_STATE_CHANGED) == 0) {
        size_t k;
        for (k = 0; k <= SG_STEPS_MAX; k++)
            s->steps[k].crefusals = 0;      /* an operator's replay starts afresh */
        if (json_is_string(json_object_get(d, "error")))
            snprintf(s->error, sizeof s->error, "%s", json_string_value(json_object_get(d, "error")));
    } else if (st == NULL) {
        return;
    } else if (strcmp(type, SG_EV_STEP_STARTED) == 0) {
        st->st = S_RUNNING;
        st->attempts = (int)jint(d, "attempt");
        st->deadline = jint(d, "deadline_ms");
    } else if (strcmp(type, SG_EV_STEP_SUCCEEDED) == 0) {
        st->st = S_OK;
        if (json_is_object(json_object_get(d, "result")))
            json_object_update_missing(s->ctx, json_object_get(d, "result"));
    } else if (strcmp(type, SG_EV_STEP_FAILED) == 0) {
        st->st = json_is_true(json_object_get(d, "will_retry")) ? S_RETRY : S_FAILED;
        st->refused = json_is_true(json_object_get(d, "refused"));
        st->retry_at = jint(d, "retry_at_ms");
    } else if (strcmp(type, SG_EV_COMPENSATION_STARTED) == 0) {
        st->cst = S_RUNNING;
        st->cattempts = (int)jint(d, "attempt");
    } else if (strcmp(type, SG_EV_COMPENSATION_SUCCEEDED) == 0) {
        st->cst = S_OK;
    } else if (strcmp(type, SG_EV_COMPENSATION_FAILED) == 0) {
        st->cst = S_RETRY;
        st->cretry_at = jint(d, "retry_at_ms");
        if (json_is_true(json_object_get(d, "refused")))
            st->crefusals++;
    }
}

static void
saga_free(saga *s)
{
    json_decref(s->ctx);
    json_decref(s->inbox);
    json_decref(s->pending);
    memset(s, 0, sizeof *s);
}

/* Reads the saga's stream and, if anything was ever delivered to it
 * (inbox), its inbox. */
static es_status
load(sg_worker *w, const char *saga_id, const sg_flow *flow, bool inbox, saga *s, es_error *err)
{
    int64_t from = 0, t0 = mono_ns();
    es_status st;

    memset(s, 0, sizeof *s);
    snprintf(s->id, sizeof s->id, "%s", saga_id);
    sg_saga_stream(s->stream, sizeof s->stream, saga_id);
    s->flow = flow;
    s->version = -1;
    s->ctx = json_object();
    s->inbox = json_array();
    s->pending = json_array();
    borrow(w);
    for (;;) {
        es_page *p = NULL;
        size_t k;
        bool more;

        st = es_store_read_stream(w->store, s->stream, from, 500, ES_FORWARD, &p, err);

        if (st == ES_ENOTFOUND)
            break;
        if (st != ES_OK) {
            give_back(w);
            return st;
        }
        for (k = 0; k < p->count; k++) {
            json_t *d = json_loads(p->events[k].data, 0, NULL);
            apply(s, p->events[k].type, d);
            json_decref(d);
            s->version = p->events[k].version;
        }
        from = s->version + 1;
        /* a page cut by the read budget is not the stream's end */
        more = p->count == 500 || p->truncated;
        es_page_destroy(p);
        if (!more)
            break;
    }
    give_back(w);
    timed(w, SG_PH_STREAM, t0);
    if (!inbox)
        return ES_OK;           /* nothing was ever delivered: the inbox is empty */
    json_decref(s->inbox);
    s->inbox = NULL;
    borrow(w);
    t0 = mono_ns();
    st = sg_inbox_read(w->pg, saga_id, &s->inbox, err);
    timed(w, SG_PH_INBOX, t0);
    give_back(w);
    return st;
}

/* The first inbox event of type, or NULL. */
static const json_t *
inbox_find(const saga *s, const char *type)
{
    size_t i;
    json_t *e;

    if (type == NULL)
        return NULL;
    json_array_foreach(s->inbox, i, e)
        if (strcmp(json_string_value(json_object_get(e, "type")), type) == 0)
            return json_object_get(e, "data");
    return NULL;
}

/*
 * Decides one event of the saga (data stolen): folded in at once, written
 * by the next flush.  Events decided together are written in one append
 * (the outcome of a step with the start of the next), and flush() runs
 * before anything leaves the process, so an action is always recorded
 * before it is taken.
 */
static es_status
emit(sg_worker *w, saga *s, const char *type, json_t *data, es_error *err)
{
    (void)w;
    json_object_set_new(data, "saga_id", json_string(s->id));
    if (strcmp(type, SG_EV_STATE_CHANGED) == 0 || strcmp(type, SG_EV_STARTED) == 0)
        json_object_set_new(data, "type", json_string(s->flow->type));
    apply(s, type, data);
    if (json_array_append_new(s->pending, json_pack("{s:s, s:o}", "type", type, "data", data)) != 0)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    return ES_OK;
}

/*
 * Makes sure the worker's claim on the saga still holds for a while (a
 * quarter of the lease: the time to record or send one thing) before
 * anything is recorded or sent.  The heartbeat (sg_heartbeat) renews the
 * claim every third of the lease while the saga runs, its command or
 * gateway call included, so this is a check on this process's monotonic
 * clock; only when the heartbeat fell behind (or found the claim gone) is
 * the claim renewed here, fenced by its token.  Once another worker has
 * claimed the saga (the claim ran out: this process died or stalled for
 * longer than the lease) this one neither records nor sends again:
 * ES_ECONFLICT (claim_lost) with w->lost set.  Appends are fenced besides
 * by the successor's SagaTakenOver (run_claimed()).
 */
static es_status
hold(sg_worker *w, es_error *err)
{
    int64_t t0 = mono_ns(), lease = w->cfg->lease_ms;
    es_status st;
    bool held;

    if (w->lost)
        return es_error_set(err, ES_ECONFLICT, "claim_lost", NULL,
                            "the claim on %s is another worker's now", w->saga_id);
    if (w->saga_id == NULL)
        return ES_OK;
    pthread_mutex_lock(&w->mu);
    if (t0 / 1000000 + lease / 4 <= w->held_until) {
        pthread_mutex_unlock(&w->mu);
        return ES_OK;
    }
    borrow(w);
    st = sg_work_renew(w->pg, w->saga_id, w->claim, sizeof w->claim, lease, &held, err);
    give_back(w);
    if (st == ES_OK && held)
        w->held_until = t0 / 1000000 + lease;
    else if (st == ES_OK)
        w->lost = true;     /* under the lock: the heartbeat reads it */
    pthread_mutex_unlock(&w->mu);
    timed(w, SG_PH_RENEW, t0);
    if (st != ES_OK)
        return st;
    if (!held) {
        atomic_fetch_add(&w->counters->claims_lost, 1);
        return es_error_set(err, ES_ECONFLICT, "claim_lost", NULL,
                            "the claim on %s ran out and another worker took it", w->saga_id);
    }
    return ES_OK;
}

void
sg_worker_init(sg_worker *w, sg_config *cfg, sg_pool *pool)
{
    memset(w, 0, sizeof *w);
    w->cfg = cfg;
    w->counters = cfg;
    w->pool = pool;
    pthread_mutex_init(&w->mu, NULL);
}

void
sg_worker_destroy(sg_worker *w)
{
    pthread_mutex_destroy(&w->mu);
}

es_status
sg_heartbeat(sg_worker *ws, size_t n, es_error *err)
{
    sg_worker **mine = calloc(n ? n : 1, sizeof *mine);
    const char **ids = calloc(n ? n : 1, sizeof *ids);
    char (*claims)[SG_CLAIM_MAX] = calloc(n ? n : 1, sizeof *claims);
    bool *held = calloc(n ? n : 1, sizeof *held);
    size_t i, k = 0;
    es_status st = ES_OK;
    sg_conn *c;
    int64_t t0;

    if (mine == NULL || ids == NULL || claims == NULL || held == NULL) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        goto done;
    }
    if (n == 0)
        goto done;
    /* the connection first: a worker holding its lock may be waiting for
     * one, and is skipped rather than waited for */
    c = sg_pool_take(ws[0].pool);
    for (i = 0; i < n; i++) {
        if (pthread_mutex_trylock(&ws[i].mu) != 0)
            continue;
        if (ws[i].saga_id == NULL || ws[i].lost) {
            pthread_mutex_unlock(&ws[i].mu);
            continue;
        }
        mine[k] = &ws[i];
        ids[k] = ws[i].saga_id;
        snprintf(claims[k], SG_CLAIM_MAX, "%s", ws[i].claim);
        k++;
    }
    t0 = mono_ns();
    if (k > 0) {
        st = sg_work_renew_many(c->pg, k, ids, claims, ws[0].cfg->lease_ms, held, err);
        atomic_fetch_add(&ws[0].counters->heartbeats, 1);
    }
    for (i = 0; i < k; i++) {
        if (st == ES_OK && held[i]) {
            snprintf(mine[i]->claim, sizeof mine[i]->claim, "%s", claims[i]);
            mine[i]->held_until = t0 / 1000000 + ws[0].cfg->lease_ms;
        } else if (st == ES_OK) {
            mine[i]->held_until = 0;    /* gone: its next hold() finds out */
        }
        pthread_mutex_unlock(&mine[i]->mu);
    }
    sg_pool_give(ws[0].pool, c);
done:
    free(mine);
    free(ids);
    free(claims);
    free(held);
    return st;
}

/* Writes the decided events with the stream's exact expected version,
 * while the claim holds.  ES_ECONFLICT: someone else moved the saga;
 * reload (nothing was acted on yet); or the claim was lost (w->lost). */
static es_status
flush(sg_worker *w, saga *s, es_error *err)
{
    size_t n = json_array_size(s->pending), i;
    es_new_event *evs;
    char **texts, meta[400];
    es_append_req req = {s->stream, s->version < 0 ? ES_EXPECT_NO_STREAM : s->version, NULL, n};
    es_append_result res;
    const char *corr = json_string_value(json_object_get(s->ctx, s->flow->id_field));
    es_status st = ES_OK;
    int64_t t0;

    if (hold(w, err) != ES_OK)
        return err->status;
    if (n == 0)
        return ES_OK;
    /* ids here are plain; a quote or backslash would need escaping */
    snprintf(meta, sizeof meta, "{\"correlation_id\":\"%s\"}",
             corr && !strpbrk(corr, "\"\\") ? corr : "");
    evs = calloc(n, sizeof *evs);
    texts = calloc(n, sizeof *texts);
    if (evs == NULL || texts == NULL) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        goto done;
    }
    for (i = 0; i < n; i++) {
        json_t *e = json_array_get(s->pending, i);
        texts[i] = json_dumps(json_object_get(e, "data"), JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (texts[i] == NULL) {
            st = es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not encode an event of %s",
                              s->id);
            goto done;
        }
        evs[i] = (es_new_event){NULL, json_string_value(json_object_get(e, "type")), 1, texts[i],
                                meta};
    }
    req.events = evs;
    /* group-committed with the other workers' appends: one transaction
     * for all of them, each with its own expected version and result */
    t0 = mono_ns();
    es_committer_append(sg_pool_committer(w->pool), &req, &res);
    timed(w, SG_PH_APPEND, t0);
    if (res.status != ES_OK) {
        *err = res.err;
        st = res.status;
        goto done;
    }
    s->version = res.last_version;
    json_array_clear(s->pending);
done:
    for (i = 0; texts && i < n; i++)
        free(texts[i]);
    free(texts);
    free(evs);
    return st;
}

/* flush(), then makes sure the claim still holds (the append may have
 * taken a while): run before anything leaves the process.  The heartbeat
 * keeps the claim while the call runs, however long it takes. */
static es_status
flush_for(sg_worker *w, saga *s, es_error *err)
{
    if (flush(w, s, err) != ES_OK)
        return err->status;
    return hold(w, err);
}

/* ---- commands --------------------------------------------------------- */

typedef enum { OUT_OK, OUT_REFUSED, OUT_TRANSIENT } outcome;

/*
 * Sends command with args (borrowed) and command_id over NATS request /
 * reply.  OUT_OK: *result is the answer's result (new reference).
 * OUT_REFUSED: a 4xx; OUT_TRANSIENT: a 5xx, a timeout, no responder.
 * code/why describe a failure.
 */
static outcome
call(sg_worker *w, const char *command, const json_t *args, const char *command_id,
     int timeout_ms, json_t **result, char *code, size_t code_size, char *why, size_t why_size)
{
    const sg_config *cfg = w->cfg;
    int64_t t0 = mono_ns();
    char subject[160];
    json_t *body = json_deep_copy(args), *reply = NULL;
    char *text;
    natsMsg *msg = NULL, *req = NULL;
    natsStatus s;
    outcome out = OUT_TRANSIENT;

    *result = NULL;
    code[0] = why[0] = '\0';
    json_object_set_new(body, "command_id", json_string(command_id));
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    snprintf(subject, sizeof subject, "%s.%s", cfg->subject_prefix, command);
    s = text ? natsMsg_Create(&req, subject, NULL, text, (int)strlen(text)) : NATS_NO_MEMORY;
    if (s == NATS_OK && cfg->principal[0] != '\0')
        s = natsMsgHeader_Set(req, "Es-Principal", cfg->principal);
    /* the saga's trace: es-command continues it (command/bus.c) */
    if (s == NATS_OK && w->traceparent[0] != '\0')
        s = natsMsgHeader_Set(req, "traceparent", w->traceparent);
    if (s == NATS_OK)
        s = natsConnection_RequestMsg(&msg, cfg->nc, req, timeout_ms);
    timed(w, SG_PH_COMMAND, t0);
    natsMsg_Destroy(req);
    free(text);
    if (s != NATS_OK) {
        snprintf(code, code_size, "%s", s == NATS_TIMEOUT ? "timeout" : "unavailable");
        snprintf(why, why_size, "%s: %s", command, natsStatus_GetText(s));
        goto done;
    }
    reply = json_loadb(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg), 0, NULL);
    if (json_is_true(json_object_get(reply, "ok"))) {
        *result = json_incref(json_object_get(reply, "result"));
        out = OUT_OK;
    } else {
        json_t *e = json_object_get(reply, "error");
        int status = (int)json_integer_value(json_object_get(reply, "status"));

        snprintf(code, code_size, "%s",
                 json_string_value(json_object_get(e, "code")) ? json_string_value(json_object_get(e, "code"))
                                                                : "bad_reply");
        snprintf(why, why_size, "%s: %s", command,
                 json_string_value(json_object_get(e, "message"))
                     ? json_string_value(json_object_get(e, "message")) : "unreadable reply");
        out = status >= 400 && status < 500 ? OUT_REFUSED : OUT_TRANSIENT;
    }
done:
    json_decref(reply);
    natsMsg_Destroy(msg);
    return out;
}

static sg_gateway *
gateway(const sg_config *cfg, const char *name)
{
    size_t i;

    for (i = 0; i < cfg->ngateways; i++)
        if (strcmp(sg_gateway_name(cfg->gateways[i]), name) == 0)
            return cfg->gateways[i];
    return NULL;
}

/* ---- the flow --------------------------------------------------------- */

/* ES_SAGA_INJECT_FAILURE="flow.step,..." (and "flow.step.undo" for a
 * compensation): refused without being sent; ES_SAGA_INJECT_TIMEOUT: lost
 * answers (transient) without being sent.  So tests and demos can make any
 * step fail either way. */
static bool
injected_as(const char *var, const sg_flow *f, const char *step)
{
    const char *list = getenv(var);
    char name[160];

    if (list == NULL || list[0] == '\0')
        return false;
    snprintf(name, sizeof name, "%s.%s", f->type, step);
    return es_list_contains(list, name);
}

static bool
injected(const sg_flow *f, const char *step)
{
    return injected_as("ES_SAGA_INJECT_FAILURE", f, step);
}

static json_t *
step_data(const char *step, int attempt)
{
    return json_pack("{s:s, s:i}", "step", step, "attempt", attempt);
}

/* Records a failed attempt: retried later, or final; refused says the
 * context refused it (so it did nothing). */
static es_status
fail_step(sg_worker *w, saga *s, int i, const char *why, bool retry, bool refused, es_error *err)
{
    const sg_step *step = &s->flow->steps[i];
    json_t *d = step_data(step->name, s->steps[i].attempts);

    json_object_set_new(d, "error", json_string(why));
    json_object_set_new(d, "will_retry", json_boolean(retry));
    if (refused)
        json_object_set_new(d, "refused", json_true());
    if (retry) {
        json_object_set_new(d, "retry_at_ms",
                            json_integer(sg_now_ms() + sg_backoff_ms(w->cfg, s->steps[i].attempts)));
        atomic_fetch_add(&w->counters->retries, 1);
    }
    return emit(w, s, SG_EV_STEP_FAILED, d, err);
}

static es_status
to_state(sg_worker *w, saga *s, sg_state to, const char *why, es_error *err)
{
    json_t *d = json_pack("{s:s, s:s}", "from", sg_state_text(s->state), "to", sg_state_text(to));

    if (why)
        json_object_set_new(d, "error", json_string(why));
    return emit(w, s, SG_EV_STATE_CHANGED, d, err);
}

/* A command or gateway step's attempt, once SagaStepStarted is recorded. */
static es_status
run_attempt(sg_worker *w, saga *s, int i, es_error *err)
{
    const sg_step *step = &s->flow->steps[i];
    step_st *st = &s->steps[i];
    char command_id[400], code[64], why[400];
    const char *missing;
    json_t *args = sg_call_args(&step->call, s->ctx, &missing), *result = NULL;
    bool more = st->attempts < step->max_attempts;
    outcome o;
    es_status rc;

    if (args == NULL) {
        snprintf(why, sizeof why, "the saga has no %s for %s", missing, step->call.command);
        return fail_step(w, s, i, why, false, true, err);
    }
    snprintf(command_id, sizeof command_id, "%s/%s", s->id, step->name);
    if (injected(s->flow, step->name)) {
        json_decref(args);
        return fail_step(w, s, i, "injected failure (ES_SAGA_INJECT_FAILURE)", false, true, err);
    }
    if (step->kind == SG_GATEWAY) {
        sg_gateway *g = gateway(w->cfg, step->gateway);
        char *body;
        es_error gerr;
        bool sent;

        /* the gateway's call, then the command that records it */
        if (flush_for(w, s, err) != ES_OK) {
            json_decref(args);
            return err->status;
        }
        body = json_dumps(args, JSON_COMPACT | JSON_SORT_KEYS);
        {
            int64_t t0 = mono_ns();
            sent = g && body && sg_gateway_send(g, command_id, body, &gerr) == ES_OK;
            timed(w, SG_PH_GATEWAY, t0);
        }

        free(body);
        /* a stall during the call may have cost the claim: the successor
         * records the call, not this worker */
        if (hold(w, err) != ES_OK) {
            json_decref(args);
            return err->status;
        }
        if (!sent) {
            snprintf(why, sizeof why, "%s gateway: %s", step->gateway,
                     g ? gerr.message : "not configured");
            if (more) {
                json_decref(args);
                return fail_step(w, s, i, why, true, false, err);
            }
            /* out of tries: the failure is recorded, the flow goes on */
            json_object_set_new(args, "status", json_string("failed"));
            json_object_set_new(args, "detail", json_string(why));
        } else {
            json_object_set_new(args, "status", json_string("sent"));
        }
        o = call(w, step->call.command, args, command_id, step->timeout_ms, &result, code,
                 sizeof code, why, sizeof why);
        if (o == OUT_OK && !sent) {
            json_decref(args);
            json_decref(result);
            snprintf(why, sizeof why, "%s gateway: %s", step->gateway,
                     g ? gerr.message : "not configured");
            return fail_step(w, s, i, why, false, false, err);
        }
    } else {
        if (flush_for(w, s, err) != ES_OK) {
            json_decref(args);
            return err->status;
        }
        if (injected_as("ES_SAGA_INJECT_TIMEOUT", s->flow, step->name)) {
            o = OUT_TRANSIENT;
            snprintf(why, sizeof why, "%s: injected timeout (ES_SAGA_INJECT_TIMEOUT)",
                     step->call.command);
        } else {
            o = call(w, step->call.command, args, command_id, step->timeout_ms, &result,
                     code, sizeof code, why, sizeof why);
        }
    }
    json_decref(args);
    atomic_fetch_add(&w->counters->steps, 1);
    if (o == OUT_OK || (o == OUT_REFUSED && sg_call_done_code(&step->call, code))) {
        json_t *d = step_data(step->name, st->attempts);
        json_object_set_new(d, "result", result ? result : json_object());
        return emit(w, s, SG_EV_STEP_SUCCEEDED, d, err);
    }
    json_decref(result);
    /* A critical step whose outcome is unknown is tried again until it is
     * known: giving up would leave an effect that may have happened. */
    rc = fail_step(w, s, i, why,
                   o == OUT_TRANSIENT && (more || step->critical || step->kind == SG_GATEWAY),
                   o == OUT_REFUSED, err);
    return rc;
}

static int
run_step(sg_worker *w, saga *s, int i, int64_t *due, es_error *err)
{
    const sg_step *step = &s->flow->steps[i];
    step_st *st = &s->steps[i];
    int64_t now = sg_now_ms();

    if (st->st == S_RETRY && now < st->retry_at) {
        *due = st->retry_at;
        return ACT_WAIT;
    }
    if (st->st == S_NONE || st->st == S_RETRY) {
        json_t *d = step_data(step->name, st->attempts + 1);
        if (step->kind == SG_AWAIT)
            json_object_set_new(d, "deadline_ms",
                                json_integer(now + sg_setting_ms("TIMEOUT", s->flow, step->name,
                                                                 step->timeout_ms, 1)));
        if (emit(w, s, SG_EV_STEP_STARTED, d, err) != ES_OK)
            return -1;
    }
    if (step->kind == SG_AWAIT) {
        const json_t *ev = inbox_find(s, step->await_type);
        json_t *d;

        if (injected(s->flow, step->name)) {
            d = step_data(step->name, st->attempts);
            json_object_set_new(d, "error", json_string("injected failure (ES_SAGA_INJECT_FAILURE)"));
            json_object_set_new(d, "will_retry", json_false());
            return emit(w, s, SG_EV_STEP_FAILED, d, err) == ES_OK ? ACT_AGAIN : -1;
        }
        if (ev == NULL && now < st->deadline) {
            *due = st->deadline;
            return ACT_WAIT;
        }
        d = step_data(step->name, st->attempts);
        if (ev && strcmp(json_string_value(json_object_get(ev, "result")) ?
                             json_string_value(json_object_get(ev, "result")) : "", "passed") == 0) {
            json_object_set_new(d, "result", json_pack("{s:s}", step->name, "passed"));
            return emit(w, s, SG_EV_STEP_SUCCEEDED, d, err) == ES_OK ? ACT_AGAIN : -1;
        }
        json_object_set_new(d, "error", json_string(ev ? "the verdict is failed" : "timed out"));
        json_object_set_new(d, "will_retry", json_false());
        return emit(w, s, SG_EV_STEP_FAILED, d, err) == ES_OK ? ACT_AGAIN : -1;
    }
    return run_attempt(w, s, i, err) == ES_OK ? ACT_AGAIN : -1;
}

/* Compensation i (nsteps: the trigger's own), retried until it succeeds. */
static int
run_compensation(sg_worker *w, saga *s, int i, int64_t *due, es_error *err)
{
    bool trigger = (size_t)i == s->flow->nsteps;
    const sg_call *c = trigger ? &s->flow->undo_trigger : &s->flow->steps[i].compensation;
    const char *name = trigger ? s->flow->trigger_step : s->flow->steps[i].name;
    step_st *st = &s->steps[i];
    int64_t now = sg_now_ms();
    char command_id[400], code[64], why[400];
    const char *missing;
    json_t *args, *result = NULL, *d;
    outcome o;

    if (st->cst == S_RETRY && now < st->cretry_at) {
        *due = st->cretry_at;
        return ACT_WAIT;
    }
    if (st->cst == S_NONE || st->cst == S_RETRY) {
        if (st->crefusals >= w->cfg->compensation_refusals) {
            snprintf(s->error, sizeof s->error, "compensation %s was refused %d times", name,
                     st->crefusals);
            return ACT_DEAD;
        }
        if (emit(w, s, SG_EV_COMPENSATION_STARTED, step_data(name, st->cattempts + 1), err) !=
            ES_OK)
            return -1;
    }
    if (!trigger && in_doubt(st)) {
        /* Whether the step took effect is unknown: send it again with its
         * own id, which answers its first outcome (or performs it now, and
         * a late copy of it is then a duplicate), and undo what is known. */
        const sg_step *step = &s->flow->steps[i];
        json_t *sargs = sg_call_args(&step->call, s->ctx, &missing);

        snprintf(command_id, sizeof command_id, "%s/%s", s->id, step->name);
        if (sargs == NULL)
            return emit(w, s, SG_EV_STEP_FAILED,
                        json_pack("{s:s, s:i, s:s, s:b, s:b}", "step", step->name, "attempt",
                                  st->attempts, "error", "nothing was sent", "will_retry", 0,
                                  "refused", 1), err) == ES_OK ? ACT_AGAIN : -1;
        if (flush_for(w, s, err) != ES_OK) {
            json_decref(sargs);
            return -1;
        }
        o = call(w, step->call.command, sargs, command_id, step->timeout_ms, &result, code,
                 sizeof code, why, sizeof why);
        json_decref(sargs);
        if (o == OUT_OK) {
            d = step_data(step->name, st->attempts);
            json_object_set_new(d, "result", result ? result : json_object());
            return emit(w, s, SG_EV_STEP_SUCCEEDED, d, err) == ES_OK ? ACT_AGAIN : -1;
        }
        json_decref(result);
        result = NULL;
        if (o == OUT_REFUSED) {
            d = step_data(step->name, st->attempts);
            json_object_set_new(d, "error", json_string(why));
            json_object_set_new(d, "will_retry", json_false());
            json_object_set_new(d, "refused", json_true());
            if (emit(w, s, SG_EV_STEP_FAILED, d, err) != ES_OK)
                return -1;
            return emit(w, s, SG_EV_COMPENSATION_SUCCEEDED,
                        json_pack("{s:s, s:s}", "step", name, "note", "nothing to undo"), err) == ES_OK
                       ? ACT_AGAIN : -1;
        }
        d = step_data(name, st->cattempts);
        json_object_set_new(d, "error", json_string(why));
        json_object_set_new(d, "will_retry", json_true());
        json_object_set_new(d, "retry_at_ms", json_integer(now + sg_backoff_ms(w->cfg, st->cattempts)));
        atomic_fetch_add(&w->counters->retries, 1);
        return emit(w, s, SG_EV_COMPENSATION_FAILED, d, err) == ES_OK ? ACT_AGAIN : -1;
    }
    if ((args = sg_call_args(c, s->ctx, &missing)) == NULL) {
        snprintf(s->error, sizeof s->error, "compensation %s: the saga has no %s", name, missing);
        return ACT_DEAD;
    }
    snprintf(command_id, sizeof command_id, "%s/%s/undo", s->id, name);
    if (flush_for(w, s, err) != ES_OK) {
        json_decref(args);
        return -1;
    }
    {
        char undo[120];
        snprintf(undo, sizeof undo, "%s.undo", name);
        if (injected_as("ES_SAGA_INJECT_FAILURE", s->flow, undo)) {
            o = OUT_REFUSED;
            snprintf(code, sizeof code, "injected_failure");
            snprintf(why, sizeof why, "%s: injected failure (ES_SAGA_INJECT_FAILURE)", c->command);
        } else {
            o = call(w, c->command, args, command_id, UNDO_TIMEOUT_MS, &result, code,
                     sizeof code, why, sizeof why);
        }
    }
    json_decref(args);
    json_decref(result);
    atomic_fetch_add(&w->counters->steps, 1);
    if (o == OUT_OK || (o == OUT_REFUSED && sg_call_done_code(c, code)))
        return emit(w, s, SG_EV_COMPENSATION_SUCCEEDED, json_pack("{s:s}", "step", name),
                    err) == ES_OK ? ACT_AGAIN : -1;
    d = step_data(name, st->cattempts);
    json_object_set_new(d, "error", json_string(why));
    json_object_set_new(d, "will_retry", json_true());
    if (o == OUT_REFUSED)
        json_object_set_new(d, "refused", json_true());     /* counts towards a dead letter */
    json_object_set_new(d, "retry_at_ms", json_integer(now + sg_backoff_ms(w->cfg, st->cattempts)));
    atomic_fetch_add(&w->counters->retries, 1);
    return emit(w, s, SG_EV_COMPENSATION_FAILED, d, err) == ES_OK ? ACT_AGAIN : -1;
}

/* The flow's pivot step (flow.h), or -1. */
static int
pivot_index(const saga *s)
{
    int i = s->flow->pivot ? step_index(s, s->flow->pivot) : -1;

    return i >= 0 && (size_t)i < s->flow->nsteps ? i : -1;
}

/* Nothing has been undone yet, nor tried. */
static bool
nothing_undone(const saga *s)
{
    for (size_t i = 0; i <= s->flow->nsteps; i++)
        if (s->steps[i].cst != S_NONE)
            return false;
    return true;
}

/* The pivot step p is in doubt while the saga would compensate: it is
 * sent again with its own id, which answers its first outcome (or
 * performs it now: it was decided, and a late copy of the first send is
 * then a duplicate).  Took effect: the saga goes on (act()); refused: it
 * did nothing, and the compensation goes on; no answer: tried again. */
static int
resolve_pivot(sg_worker *w, saga *s, int p, int64_t *due, es_error *err)
{
    step_st *st = &s->steps[p];

    if (st->st == S_RETRY && sg_now_ms() < st->retry_at) {
        *due = st->retry_at;
        return ACT_WAIT;
    }
    return run_attempt(w, s, p, err) == ES_OK ? ACT_AGAIN : -1;
}

/*
 * One action; -1 with err set on an infrastructure error.  act() drives
 * the saga's state machine; each arrow is a change of state appended by
 * the function named on it (to_state() writes it for act() and
 * dead_letter(); esctl's operations are saga.c's):
 *
 *          act(): SagaStarted
 *                 |
 *                 v
 *            +---------+  act(): every step done       +-----------+
 *            | RUNNING |------------------------------>| COMPLETED |
 *            +---------+  (non-critical ones may fail) +-----------+
 *              |     |
 *              |     |  dead_letter(): the engine kept failing
 *              |     +------------------------------------+
 *              |                                          |
 *              | act(): a critical step failed, or        |
 *              |   the flow's cancellation reached it;    |
 *              | sg_saga_compensate() (esctl)             |
 *              v                                          v
 *       +--------------+  dead_letter(): a compensation  +--------+
 *       | COMPENSATING |-------------------------------->| FAILED |
 *       +--------------+  refused too often, or the      +--------+
 *         |       ^       engine kept failing                 |
 *         |       |                                           |
 *         |       +-------------------------------------------+
 *         |         sg_dead_letter_replay() (esctl dead-letters replay,
 *         |         or saga retry / compensate of a failed saga)
 *         |
 *         | act(): every compensation done
 *         v
 *       +-------------+
 *       | COMPENSATED |
 *       +-------------+
 *
 * One more arrow, COMPENSATING -> RUNNING (act()): the flow's pivot step
 * (the order's confirmation) turns out to have taken effect before
 * anything was undone; it cannot be undone, so the saga completes.
 *
 * COMPLETED and COMPENSATED are final: act() answers ACT_DONE and the
 * saga's work row goes (sg_work_finish).
 */
static int
act(sg_worker *w, saga *s, const json_t *input, int64_t *due, es_error *err)
{
    const sg_flow *f = s->flow;
    int p = pivot_index(s);
    size_t i;

    if (!s->started) {
        json_t *ctx = json_deep_copy(input);
        if (f->prepare)
            f->prepare(ctx);
        atomic_fetch_add(&w->counters->started, 1);
        return emit(w, s, SG_EV_STARTED,
                    json_pack("{s:s, s:o}", "correlation_id",
                              json_string_value(json_object_get(input, f->id_field)) ?
                                  json_string_value(json_object_get(input, f->id_field)) : "",
                              "data", ctx), err) == ES_OK ? ACT_AGAIN : -1;
    }
    if (s->state == SG_RUNNING) {
        const json_t *cancel = inbox_find(s, f->cancel_type);
        /* past the pivot there is nothing to cancel (the order's
         * cancellation is refused once it is confirmed) */
        if (cancel && !(p >= 0 && s->steps[p].st == S_OK)) {
            char why[300];
            snprintf(why, sizeof why, "%s: %s", f->cancel_type,
                     json_string_value(json_object_get(cancel, "reason")) ?
                         json_string_value(json_object_get(cancel, "reason")) : "requested");
            return to_state(w, s, SG_COMPENSATING, why, err) == ES_OK ? ACT_AGAIN : -1;
        }
        for (i = 0; i < f->nsteps; i++) {
            step_st *st = &s->steps[i];
            if (st->st == S_OK || (st->st == S_FAILED && !f->steps[i].critical))
                continue;
            if (st->st == S_FAILED) {
                char why[300];
                snprintf(why, sizeof why, "step %s failed", f->steps[i].name);
                return to_state(w, s, SG_COMPENSATING, why, err) == ES_OK ? ACT_AGAIN : -1;
            }
            return run_step(w, s, (int)i, due, err);
        }
        atomic_fetch_add(&w->counters->completed, 1);
        return to_state(w, s, SG_COMPLETED, NULL, err) == ES_OK ? ACT_AGAIN : -1;
    }
    if (s->state == SG_COMPENSATING) {
        /* What cannot be undone is never compensated: a pivot whose outcome
         * is unknown is resolved before anything is undone, and one that
         * took effect sends the saga on to complete. */
        if (p >= 0 && nothing_undone(s)) {
            if (in_doubt(&s->steps[p]))
                return resolve_pivot(w, s, p, due, err);
            if (s->steps[p].st == S_OK) {
                char why[300];
                snprintf(why, sizeof why, "step %s took effect: it cannot be undone",
                         f->steps[p].name);
                return to_state(w, s, SG_RUNNING, why, err) == ES_OK ? ACT_AGAIN : -1;
            }
        }
        for (i = f->nsteps; i-- > 0;)
            if ((s->steps[i].st == S_OK || in_doubt(&s->steps[i])) &&
                f->steps[i].compensation.command && s->steps[i].cst != S_OK)
                return run_compensation(w, s, (int)i, due, err);
        if (f->undo_trigger.command && s->steps[f->nsteps].cst != S_OK)
            return run_compensation(w, s, (int)f->nsteps, due, err);
        atomic_fetch_add(&w->counters->compensated, 1);
        return to_state(w, s, SG_COMPENSATED, NULL, err) == ES_OK ? ACT_AGAIN : -1;
    }
    return ACT_DONE;        /* completed, compensated or failed */
}

/* ---- work rows -------------------------------------------------------- */

/* Moves a saga that cannot go on to the dead letters, and says so in its
 * stream (state failed); nothing if the claim is another worker's now. */
static void
dead_letter(sg_worker *w, saga *s, const sg_work *work, const char *reason, int attempts)
{
    es_error err;
    es_status st;
    bool held;

    /* the claim holds long enough to say so in the stream, too */
    if (hold(w, &err) != ES_OK)
        return;
    pthread_mutex_lock(&w->mu);     /* the heartbeat may renew the token meanwhile */
    borrow(w);
    st = sg_dead_letter_saga(w->pg, work->saga_id, w->claim, work->flow,
                             work->input ? work->input : "{}", reason, attempts, &held, &err);
    give_back(w);
    pthread_mutex_unlock(&w->mu);
    if (st != ES_OK || !held)
        return;             /* the work row stays; the next run tries again */
    if (s && s->flow && s->started && s->state != SG_FAILED &&
        to_state(w, s, SG_FAILED, reason, &err) == ES_OK)
        (void)flush(w, s, &err);
    atomic_fetch_add(&w->counters->dead_letters, 1);
    atomic_fetch_add(&w->counters->failed, 1);
    es_log(ES_LOG_WARNING, "saga %s moved to the dead letters: %s", work->saga_id, reason);
}

/* A statement on the worker's claim, under its lock: the heartbeat does
 * not renew the token meanwhile. */
#define FENCED(w, stmt)                                                         \
    do {                                                                        \
        pthread_mutex_lock(&(w)->mu);                                           \
        borrow(w);                                                              \
        (void)(stmt);                                                           \
        give_back(w);                                                           \
        pthread_mutex_unlock(&(w)->mu);                                         \
    } while (0)

/* Runs one claimed saga (claimed at claimed_ms, monotonic, before its
 * claim was made) as far as it can go now, then says when its work row
 * is due again (or removes it), unless the claim was lost meanwhile.  A
 * saga taken over from a claim that ran out gets a SagaTakenOver first:
 * the deposed worker, if it still runs, then meets a version conflict at
 * its next append, whenever it resumes. */
static es_status
run_claimed(sg_worker *w, sg_work *work, int64_t claimed_ms, es_error *err)
{
    const sg_flow *flow = sg_flow_find(work->flow);
    json_t *input = work->input ? json_loads(work->input, 0, NULL) : NULL;
    saga s = {0};
    int64_t due = 0, t0;
    int n, a = ACT_AGAIN;
    es_status st = ES_OK;
    es_error ignored;
    bool held, fence = work->taken_over;
    int64_t loaded = -1;

    pthread_mutex_lock(&w->mu);
    w->saga_id = work->saga_id;
    snprintf(w->claim, sizeof w->claim, "%s", work->claim);
    w->held_until = claimed_ms + w->cfg->lease_ms;
    w->lost = false;
    pthread_mutex_unlock(&w->mu);
    snprintf(w->traceparent, sizeof w->traceparent, "%s",
             json_string_value(json_object_get(input, "traceparent")) ?
                 json_string_value(json_object_get(input, "traceparent")) : "");
    if (flow == NULL || !json_is_object(input)) {
        dead_letter(w, NULL, work, flow ? "the work's input is not an object" : "no such flow",
                    work->failures + 1);
        goto done;
    }
    for (n = 0; n < ACTIONS_MAX && !atomic_load(w->cfg->stop); n++) {
        if (n == 0 || st == ES_ECONFLICT) {
            saga_free(&s);
            /* the inbox is read if anything was ever delivered, or on a reload */
            if ((st = load(w, work->saga_id, flow, n > 0 || work->wakes > 0, &s, err)) != ES_OK)
                break;
            loaded = s.version;
            if (fence && s.started && s.state != SG_RUNNING && s.state != SG_COMPENSATING)
                fence = false;      /* ended: nothing more is appended */
            if (fence && s.started) {
                /* the fence: written at the version just read, before
                 * anything else, so nothing the deposed worker appends
                 * from now on fits */
                st = emit(w, &s, SG_EV_TAKEN_OVER,
                          json_pack("{s:s}", "note", "its claim ran out: taken over"), err);
                if (st == ES_OK)
                    st = flush(w, &s, err);
                if (st == ES_ECONFLICT && !w->lost)
                    continue;       /* it wrote meanwhile: read again, fence again */
                if (st != ES_OK)
                    break;
                fence = false;
                atomic_fetch_add(&w->counters->takeovers, 1);
                es_log(ES_LOG_INFO, "saga %s taken over: its claim ran out", work->saga_id);
            }
        }
        a = act(w, &s, input, &due, err);
        if (a == -1) {
            st = err->status;
            if (st == ES_ECONFLICT && !w->lost)
                continue;
            break;
        }
        if (a != ACT_AGAIN)
            break;
    }
    /* what was decided last is written before the row says when to come back */
    if ((st == ES_OK || st == ES_ECONFLICT) && !w->lost && s.flow && flush(w, &s, err) != ES_OK)
        st = err->status;
    if (fence && s.flow && s.version > loaded)
        fence = false;      /* its own first append (SagaStarted) was the fence */
    t0 = mono_ns();
    if (w->lost) {
        /* another worker holds the saga: its row is that worker's to move */
        es_log(ES_LOG_INFO, "saga %s: %s", work->saga_id, err->message);
        st = ES_OK;
    } else if (fence) {
        /* taken over, but the fence is not written yet: the row is left
         * as it is, so its claim runs out and the next claim is a
         * takeover again, which writes the fence first */
        es_log(ES_LOG_INFO, "saga %s: taken over, not fenced yet: %s", work->saga_id,
               st != ES_OK ? err->message : "out of actions");
        st = ES_OK;
    } else if (st == ES_ECONFLICT) {
        /* moved by someone else meanwhile: look again soon */
        FENCED(w, sg_work_release_now(w->pg, work->saga_id, w->claim, &held, &ignored));
        st = ES_OK;
    } else if (st != ES_OK) {
        /* Infrastructure trouble (a server down) is waited out; anything
         * else counts towards a dead letter. */
        bool counts = st != ES_EUNAVAILABLE;

        if (counts && work->failures + 1 >= w->cfg->max_failures) {
            dead_letter(w, &s, work, err->message, work->failures + 1);
            st = ES_OK;
            goto done;
        }
        FENCED(w, sg_work_defer(w->pg, work->saga_id, w->claim,
                                sg_backoff_ms(w->cfg, work->failures + 1), err->message,
                                counts ? work->failures + 1 : work->failures, &held, &ignored));
        st = ES_OK;     /* handled: the row waits */
    } else if (a == ACT_DEAD) {
        dead_letter(w, &s, work, s.error, work->failures + 1);
    } else if (a == ACT_DONE) {
        FENCED(w, sg_work_finish(w->pg, work->saga_id, w->claim, &held, &ignored));
    } else {
        /* waiting, or out of actions for this claim: come back when due,
         * or now if an event reached the inbox meanwhile */
        FENCED(w, sg_work_release(w->pg, work->saga_id, w->claim,
                                  a == ACT_WAIT ? due : sg_now_ms(), work->wakes, &held,
                                  &ignored));
    }
    timed(w, SG_PH_RELEASE, t0);
done:
    pthread_mutex_lock(&w->mu);
    w->saga_id = NULL;
    w->lost = false;
    pthread_mutex_unlock(&w->mu);
    saga_free(&s);
    json_decref(input);
    return st;
}

/* Sagas claimed in one statement at most. */
#define CLAIM_BATCH_MAX 16

es_status
sg_work_once(sg_worker *w, bool *did, es_error *err)
{
    sg_work work[CLAIM_BATCH_MAX];
    int64_t t0, claimed_ms;
    int n = 0, want, room, waiters, i;
    es_status st;

    *did = false;
    if (!sg_pool_pop(w->pool, &work[0], &claimed_ms)) {
        bool counted;

        /* The claim is a lease: its own short statement moves the rows'
         * claims ahead.  No transaction stays open while the sagas run (an
         * open one would hold back the feed's horizon for every reader);
         * a claim is renewed before anything is recorded or sent once it
         * may run out (hold()), and what a worker does with the row is
         * fenced by the claim's token.  Another worker takes a saga over
         * only when its claim runs out (its worker died or stalled), and
         * that one then stops.  One worker of the process claims at a
         * time, in one statement for itself, the workers waiting to claim
         * and the idle ones; the others take theirs from the pool's
         * queue, so they do not race for the same rows and find nothing. */
        sg_pool_claim_enter(w->pool, &counted);
        if (sg_pool_pop(w->pool, &work[0], &claimed_ms)) {
            sg_pool_claim_leave(w->pool);
            goto run;
        }
        if (counted) {
            /* a claim made for this worker too found nothing more due */
            sg_pool_claim_leave(w->pool);
            return ES_OK;
        }
        waiters = sg_pool_claim_start(w->pool);
        want = 1 + waiters + atomic_load(&w->cfg->idle);
        room = 1 + sg_pool_room(w->pool);
        if (want > room)
            want = room;
        if (want > w->cfg->claim_max)
            want = w->cfg->claim_max;
        if (want > CLAIM_BATCH_MAX)
            want = CLAIM_BATCH_MAX;
        if (want < 1)
            want = 1;
        borrow(w);
        t0 = mono_ns();
        if (PQstatus(w->pg) != CONNECTION_OK)
            st = es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                              "could not connect to PostgreSQL: %s", PQerrorMessage(w->pg));
        else
            st = sg_work_claim_many(w->pg, w->cfg->lease_ms, want, work, &n, err);
        give_back(w);
        sg_pool_claim_drained(w->pool, st == ES_OK && n < want);
        if (st != ES_OK) {
            sg_pool_claim_leave(w->pool);
            return st;
        }
        timed(w, SG_PH_CLAIM, t0);
        if (n == 0) {
            sg_pool_claim_leave(w->pool);
            atomic_fetch_add(&w->counters->claims_empty, 1);
            return ES_OK;
        }
        /* counted from before the claim was made: it holds at least that long */
        claimed_ms = t0 / 1000000;
        for (i = 1; i < n; i++)
            if (!sg_pool_push(w->pool, &work[i], claimed_ms)) {
                es_error ignored;
                bool held;

                borrow(w);
                (void)sg_work_release_now(w->pg, work[i].saga_id, work[i].claim, &held,
                                          &ignored);
                give_back(w);
                free(work[i].input);
            }
        sg_pool_claim_leave(w->pool);
        /* the workers that waited take theirs at once; wake the idle */
        if (n - 1 > waiters && w->cfg->wake)
            w->cfg->wake(n - 1 - waiters);
    }
run:
    *did = true;
    st = run_claimed(w, &work[0], claimed_ms, err);
    free(work[0].input);
    return st;
}

int
sg_next_due_ms(sg_worker *w, int max_ms)
{
    int ms;

    borrow(w);
    ms = sg_work_next_due_ms(w->pg, max_ms);
    give_back(w);
    return ms;
}
