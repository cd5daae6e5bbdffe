/*
 * es-projector: keeps the read models of projections.c in Redis.
 *
 *   es-projector                 follows the JetStream events stream and
 *                                applies each event to every projection
 *   es-projector rebuild <name>  builds a new version of one projection from
 *                                PostgreSQL, hands over to the stream and
 *                                switches the alias (rebuild.c)
 *   es-projector rebuild <name> --dry-run
 *                                times a replay into scratch keys
 *   es-projector status          prints versions, checkpoints and lag
 *
 * The live loop reads the stream with an ordered push consumer starting
 * after the lowest checkpoint, decodes each message once and, per
 * projection, sends the events past its checkpoint as one batch (one Lua
 * call: atomic with the checkpoint; at-or-below is skipped, a gap refused).
 * A projection that cannot apply an event stops there and says why (log,
 * /metrics, /healthz, the hash rm:<name>:stopped); the others go on.  It is
 * retried when the process restarts, never skipped.
 */
#include "projector.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http.h"

typedef struct proj_state {
    const pj_projection *p;
    uint64_t seq;                       /* checkpoint of the active version */
    char position[RM_POSITION_MAX];
    char version[24];
    bool stopped;
    char reason[400];
    uint64_t applied;                   /* events applied by this process */
} proj_state;

typedef struct live {
    pj_nats nats;
    redisContext *rc;
    natsSubscription *sub;
    proj_state st[16];
    size_t n;
    int batch;
    uint64_t stream_last;
    es_http_server *http;
    pthread_mutex_t mu;                 /* st[] and stream_last, for /metrics */
} live;

static live L;

void
pj_say(const char *fmt, ...)
{
    va_list ap;

    fputs("es-projector: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

atomic_bool pj_stop;

static void *
signal_thread(void *arg)
{
    sigset_t *set = arg;
    int sig;

    while (sigwait(set, &sig) != 0)
        ;
    atomic_store(&pj_stop, true);
    return NULL;
}

const char *
pj_env(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

void
pj_sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&t, &t) != 0 && errno == EINTR && !atomic_load(&pj_stop))
        ;
}

/* ---- NATS ------------------------------------------------------------- */

es_status
pj_nats_open(pj_nats *n, es_error *err)
{
    natsOptions *opts = NULL;
    natsStatus s;

    memset(n, 0, sizeof *n);
    snprintf(n->stream, sizeof n->stream, "%s", pj_env("ES_RELAY_STREAM", "EVENTS"));
    snprintf(n->subjects, sizeof n->subjects, "%s.>", pj_env("ES_RELAY_SUBJECT_PREFIX", "es.events"));
    if (natsOptions_Create(&opts) != NATS_OK ||
        natsOptions_SetURL(opts, pj_env("ES_NATS_URL", "nats://127.0.0.1:54222")) != NATS_OK ||
        natsOptions_SetMaxReconnect(opts, -1) != NATS_OK ||
        natsOptions_SetRetryOnFailedConnect(opts, true, NULL, NULL) != NATS_OK) {
        natsOptions_Destroy(opts);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not set up the NATS options");
    }
    s = natsConnection_Connect(&n->nc, opts);
    natsOptions_Destroy(opts);
    if ((s != NATS_OK && s != NATS_NOT_YET_CONNECTED) ||
        natsConnection_JetStream(&n->js, n->nc, NULL) != NATS_OK) {
        pj_nats_close(n);
        return es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                            "could not connect to NATS: %s", natsStatus_GetText(s));
    }
    return ES_OK;
}

void
pj_nats_close(pj_nats *n)
{
    jsCtx_Destroy(n->js);
    if (n->nc) {
        natsConnection_Close(n->nc);
        natsConnection_Destroy(n->nc);
    }
    memset(n, 0, sizeof *n);
}

es_status
pj_nats_subscribe(pj_nats *n, uint64_t from, natsSubscription **out, es_error *err)
{
    jsSubOptions so;
    jsErrCode jerr = 0;
    natsStatus s;

    *out = NULL;
    jsSubOptions_Init(&so);
    so.Stream = n->stream;
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = from;
    s = js_SubscribeSync(out, n->js, n->subjects, NULL, &so, &jerr);
    if (s != NATS_OK) {
        *out = NULL;
        return es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                            "could not subscribe to stream %s from %" PRIu64 ": %s (%d)",
                            n->stream, from, natsStatus_GetText(s), (int)jerr);
    }
    /* The projector applies in batches: let the library queue plenty. */
    natsSubscription_SetPendingLimits(*out, 200000, 256 * 1024 * 1024);
    return ES_OK;
}

es_status
pj_nats_last_seq(pj_nats *n, uint64_t *last, es_error *err)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, n->js, n->stream, NULL, &jerr);

    if (s != NATS_OK)
        return es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                            "could not read stream %s: %s (%d)", n->stream, natsStatus_GetText(s),
                            (int)jerr);
    *last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return ES_OK;
}

void
pj_msgs_free(pj_msgs *m)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        pj_event_free(&m->ev[i]);
        free(m->bad[i]);
    }
    free(m->ev);
    free(m->bad);
    memset(m, 0, sizeof *m);
}

/*
 * Takes up to max messages: waits up to wait_ms for the first, then takes
 * what is already queued.  Each is decoded; one that cannot be is kept
 * with its reason in bad[i], so projections stop exactly there.
 * ES_EUNAVAILABLE when the subscription broke (resubscribe).
 */
es_status
pj_nats_take(natsSubscription *sub, int max, int wait_ms, pj_msgs *out, es_error *err)
{
    natsMsg *m = NULL;
    natsStatus s;
    int pending = 0;

    memset(out, 0, sizeof *out);
    if ((out->ev = calloc((size_t)max, sizeof *out->ev)) == NULL ||
        (out->bad = calloc((size_t)max, sizeof *out->bad)) == NULL) {
        pj_msgs_free(out);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    }
    s = natsSubscription_NextMsg(&m, sub, wait_ms);
    while (s == NATS_OK) {
        jsMsgMetaData *meta = NULL;
        pj_event *e = &out->ev[out->n];
        es_error derr;

        if (natsMsg_GetMetaData(&meta, m) != NATS_OK) {
            natsMsg_Destroy(m);
            pj_msgs_free(out);
            return es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                                "a message of the events stream has no JetStream metadata");
        }
        if (pj_event_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m),
                            meta->Sequence.Stream, e, &derr) != ES_OK) {
            pj_event_free(e);
            e->seq = meta->Sequence.Stream;
            out->bad[out->n] = strdup(derr.message);
            if (out->bad[out->n] == NULL)
                out->bad[out->n] = strdup("?");
        }
        jsMsgMetaData_Destroy(meta);
        natsMsg_Destroy(m);
        m = NULL;
        out->n++;
        if ((int)out->n == max)
            break;
        if (pending <= 0 && (natsSubscription_GetPending(sub, &pending, NULL) != NATS_OK ||
                             pending <= 0))
            break;
        pending--;
        s = natsSubscription_NextMsg(&m, sub, 1000);
    }
    if (s == NATS_OK || s == NATS_TIMEOUT || out->n > 0)
        return ES_OK;
    pj_msgs_free(out);
    return es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                        "reading the events stream failed: %s", natsStatus_GetText(s));
}

/* ---- the live projector ----------------------------------------------- */

static void
stop_projection(live *l, proj_state *ps, const pj_event *e, const char *why)
{
    redisReply *r;

    pthread_mutex_lock(&l->mu);
    ps->stopped = true;
    snprintf(ps->reason, sizeof ps->reason, "event %" PRIu64 " (%s %s): %s", e->seq,
             e->type ? e->type : "?", e->event_id ? e->event_id : "?", why);
    pthread_mutex_unlock(&l->mu);
    pj_say("projection %s stopped at %s", ps->p->name, ps->reason);
    r = redisCommand(l->rc, "HSET rm:%s:stopped seq %" PRIu64 " position %s reason %s",
                     ps->p->name, e->seq, e->position[0] ? e->position : "-", ps->reason);
    freeReplyObject(r);
}

/* Reads every projection's checkpoint; clears old stop reports (a restart
 * is the operator's way to retry). */
static es_status
load_states(live *l, es_error *err)
{
    size_t i;

    for (i = 0; i < l->n; i++) {
        rm_state s;
        proj_state *ps = &l->st[i];

        if (rm_state_get(l->rc, ps->p->name, &s, err) != ES_OK)
            return err->status;
        pthread_mutex_lock(&l->mu);
        ps->seq = s.seq;
        snprintf(ps->position, sizeof ps->position, "%s", s.position);
        snprintf(ps->version, sizeof ps->version, "%s", s.active);
        pthread_mutex_unlock(&l->mu);
        freeReplyObject(redisCommand(l->rc, "DEL rm:%s:stopped", ps->p->name));
    }
    return ES_OK;
}

/* Applies msgs to one projection; false when Redis failed or refused a
 * gap (then the caller resubscribes). */
static bool
apply_one(live *l, proj_state *ps, const pj_msgs *msgs)
{
    rm_batch b;
    rm_applied a;
    es_error err;
    const pj_event *stop_at = NULL;
    const char *why = NULL;
    size_t i;
    bool ok = true;

    rm_batch_init(&b, ps->p->name, NULL);
    for (i = 0; i < msgs->n; i++) {
        const pj_event *e = &msgs->ev[i];

        if (e->seq <= ps->seq)
            continue;
        if (msgs->bad[i]) {
            stop_at = e, why = msgs->bad[i];
            break;
        }
        if (pj_add(&b, ps->p, e, &err) != ES_OK) {
            stop_at = e, why = err.message;
            break;
        }
    }
    if (b.events > 0) {
        if (rm_apply(l->rc, &b, &a, &err) != ES_OK) {
            pj_say("projection %s: %s", ps->p->name, err.message);
            rm_batch_free(&b);
            return false;
        }
        pthread_mutex_lock(&l->mu);
        ps->applied += a.applied;
        ps->seq = a.seq;
        snprintf(ps->position, sizeof ps->position, "%s", a.position);
        snprintf(ps->version, sizeof ps->version, "%s", a.version);
        pthread_mutex_unlock(&l->mu);
        if (a.gap) {
            pj_say("projection %s: the stream skipped past checkpoint %" PRIu64 "; resubscribing",
                   ps->p->name, a.seq);
            ok = false;
        }
    }
    rm_batch_free(&b);
    if (ok && stop_at && stop_at->seq == ps->seq + 1) {
        /* everything before it is applied: stop exactly there */
        char why_copy[320];
        snprintf(why_copy, sizeof why_copy, "%s", why);
        stop_projection(l, ps, stop_at, why_copy);
    }
    return ok;
}

static void
run_live(live *l)
{
    es_error err;
    uint64_t from = 0;
    time_t checked = 0;

    while (!atomic_load(&pj_stop)) {
        pj_msgs msgs;
        size_t i;
        bool ok = true, any = false;

        if (l->rc == NULL) {
            if ((l->rc = rm_connect(&err)) == NULL || load_states(l, &err) != ES_OK) {
                pj_say("%s", err.message);
                if (l->rc)
                    redisFree(l->rc);
                l->rc = NULL;
                pj_sleep_ms(1000);
                continue;
            }
            if (l->sub) {
                natsSubscription_Destroy(l->sub);
                l->sub = NULL;
            }
        }
        if (l->sub == NULL) {
            from = UINT64_MAX;
            for (i = 0; i < l->n; i++)
                if (!l->st[i].stopped && l->st[i].seq + 1 < from)
                    from = l->st[i].seq + 1;
            if (from == UINT64_MAX) {       /* every projection stopped */
                pj_sleep_ms(1000);
                continue;
            }
            if (pj_nats_subscribe(&l->nats, from, &l->sub, &err) != ES_OK) {
                pj_say("%s", err.message);
                pj_sleep_ms(1000);
                continue;
            }
        }
        if (time(NULL) != checked) {
            uint64_t last;
            checked = time(NULL);
            if (pj_nats_last_seq(&l->nats, &last, &err) == ES_OK) {
                pthread_mutex_lock(&l->mu);
                l->stream_last = last;
                pthread_mutex_unlock(&l->mu);
            }
        }
        if (pj_nats_take(l->sub, l->batch, 200, &msgs, &err) != ES_OK) {
            pj_say("%s", err.message);
            natsSubscription_Destroy(l->sub);
            l->sub = NULL;
            pj_sleep_ms(200);
            continue;
        }
        for (i = 0; i < l->n && ok; i++)
            if (!l->st[i].stopped) {
                ok = apply_one(l, &l->st[i], &msgs);
                any = true;
            }
        pj_msgs_free(&msgs);
        if (!ok) {
            /* Redis failed or a gap: start again from the checkpoints. */
            redisFree(l->rc);
            l->rc = NULL;
            pj_sleep_ms(100);
        }
        (void)any;
    }
}

static void
handle(void *ctx, const es_http_req *req, es_http_res *res)
{
    live *l = ctx;
    size_t i;

    if (strcmp(req->path, "/healthz") == 0 || strcmp(req->path, "/readyz") == 0) {
        json_t *list = json_array();
        bool stopped = false;

        pthread_mutex_lock(&l->mu);
        for (i = 0; i < l->n; i++) {
            proj_state *ps = &l->st[i];
            json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s}", "name", ps->p->name, "state",
                                  ps->stopped ? "stopped" : "running", "version", ps->version,
                                  "checkpoint", (json_int_t)ps->seq, "position", ps->position);
            if (ps->stopped)
                json_object_set_new(o, "reason", json_string(ps->reason));
            stopped |= ps->stopped;
            json_array_append_new(list, o);
        }
        pthread_mutex_unlock(&l->mu);
        /* /healthz: the process is alive (and says what is stopped);
         * /readyz: every projection is following the stream. */
        es_http_res_json(res, strcmp(req->path, "/readyz") == 0 && stopped ? 503 : 200,
                         json_pack("{s:s, s:o}", "status", stopped ? "degraded" : "ok",
                                   "projections", list));
    } else if (strcmp(req->path, "/metrics") == 0) {
        es_http_metrics(l->http, "es_projector", &res->body);
        es_buf_puts(&res->body, "# TYPE es_projector_applied_total counter\n"
                                "# TYPE es_projector_checkpoint gauge\n"
                                "# TYPE es_projector_lag_events gauge\n"
                                "# TYPE es_projector_stopped gauge\n");
        pthread_mutex_lock(&l->mu);
        for (i = 0; i < l->n; i++) {
            proj_state *ps = &l->st[i];
            const char *nm = ps->p->name;
            es_buf_printf(&res->body,
                          "es_projector_applied_total{projection=\"%s\"} %" PRIu64 "\n"
                          "es_projector_checkpoint{projection=\"%s\"} %" PRIu64 "\n"
                          "es_projector_lag_events{projection=\"%s\"} %" PRIu64 "\n"
                          "es_projector_stopped{projection=\"%s\"} %d\n",
                          nm, ps->applied, nm, ps->seq, nm,
                          l->stream_last > ps->seq ? l->stream_last - ps->seq : 0, nm,
                          ps->stopped ? 1 : 0);
        }
        pthread_mutex_unlock(&l->mu);
        res->content_type = "text/plain; version=0.0.4";
    } else {
        es_http_res_error(res, 404, "route_not_found", NULL, NULL, "no route %s", req->path);
    }
}

static int
main_live(void)
{
    live *l = &L;
    es_http_config http = {pj_env("ES_PROJECTOR_BIND", "127.0.0.1"),
                           (unsigned)atoi(pj_env("ES_PROJECTOR_PORT", "8083")), 2, 4096};
    const char *only = pj_env("ES_PROJECTIONS", "all");
    es_error err;
    size_t i;
    int rc = 1;

    pthread_mutex_init(&l->mu, NULL);
    l->batch = atoi(pj_env("ES_PROJECTOR_BATCH", "500"));
    if (l->batch < 1 || l->batch > 100000) {
        pj_say("ES_PROJECTOR_BATCH must be 1..100000");
        return 2;
    }
    for (i = 0; i < pj_projection_count && l->n < sizeof l->st / sizeof l->st[0]; i++)
        if (strcmp(only, "all") == 0 || es_list_contains(only, pj_projections[i].name))
            l->st[l->n++].p = &pj_projections[i];
    if (l->n == 0) {
        pj_say("ES_PROJECTIONS names no projection (%s)", only);
        return 2;
    }
    if (pj_nats_open(&l->nats, &err) != ES_OK ||
        es_http_start(&l->http, &http, handle, l, &err) != ES_OK) {
        pj_say("%s", err.message);
        goto done;
    }
    pj_say("%zu projections from stream %s, health on http://%s:%u", l->n, l->nats.stream,
           http.bind, http.port);
    run_live(l);
    rc = 0;
done:
    es_http_stop(l->http);
    if (l->sub)
        natsSubscription_Destroy(l->sub);
    pj_nats_close(&l->nats);
    if (l->rc)
        redisFree(l->rc);
    pthread_mutex_destroy(&l->mu);
    return rc;
}

static int
usage(void)
{
    fprintf(stderr, "usage: es-projector                 run the live projector\n"
                    "       es-projector rebuild <name> [--dry-run]\n"
                    "                                    rebuild one projection (or only\n"
                    "                                    time a replay into scratch keys)\n"
                    "       es-projector status          versions, checkpoints, lag\n"
                    "projections:");
    for (size_t i = 0; i < pj_projection_count; i++)
        fprintf(stderr, " %s", pj_projections[i].name);
    fputc('\n', stderr);
    return 2;
}

int
main(int argc, char **argv)
{
    sigset_t sigs;
    pthread_t sigth;
    int rc;

    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_create(&sigth, NULL, signal_thread, &sigs);

    if (argc == 1)
        rc = main_live();
    else if (argc == 3 && strcmp(argv[1], "rebuild") == 0)
        rc = pj_rebuild_main(argv[2], false);
    else if (argc == 4 && strcmp(argv[1], "rebuild") == 0 && strcmp(argv[3], "--dry-run") == 0)
        rc = pj_rebuild_main(argv[2], true);
    else if (argc == 2 && strcmp(argv[1], "status") == 0)
        rc = pj_status_main();
    else
        rc = usage();

    pthread_kill(sigth, SIGTERM);
    pthread_join(sigth, NULL);
    nats_Close();
    return rc;
}
