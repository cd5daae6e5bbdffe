/*
 * /metrics of es-query (see metrics.h).  Checkpoints come from Redis
 * through the calling thread's connection; the stream's last sequence and
 * message times come from JetStream through one NATS connection, made on
 * the first scrape and shared by every thread.  The lock guards only the
 * making of that connection: libnats is thread-safe, so the reads (a
 * scrape's, the age cursor's search of ~25 single-message reads) run side
 * by side, and a client repeating /v1/console/age-cursor cannot hold
 * /metrics up.
 */
#include "metrics.h"

#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "env.h"
#include "log.h"
#include "projections.h"
#include "query.h"
#include "read.h"

#define NATS_TIMEOUT_MS 500     /* connect and JetStream requests: a scrape must stay quick */

struct metrics {
    pthread_mutex_t mu;         /* guards tried, opts, nc and js while they are made */
    long read_delay_ms;         /* tests only: ES_QUERY_TEST_AGE_READ_DELAY_MS */
    char url[256], stream[64];
    char shown[256];            /* url without its password, for the log */
    bool tried;                 /* the one connection attempt was made */
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
};

/* One projection's figures. */
typedef struct proj_figures {
    bool known;                 /* Redis answered */
    uint64_t seq;
    bool stopped;
    bool lag_known, lag_secs_known;
    uint64_t lag;
    double lag_secs;
} proj_figures;

es_status
metrics_create(metrics **out, const char *nats_url, const char *stream, es_error *err)
{
    metrics *m = calloc(1, sizeof *m);

    *out = NULL;
    if (m == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    pthread_mutex_init(&m->mu, NULL);
    /* a test's slow stream: each read of the age cursor's search waits
     * this long first (never set in production) */
    m->read_delay_ms = es_env_long("es-query", "ES_QUERY_TEST_AGE_READ_DELAY_MS", 0, 0, 60000);
    snprintf(m->url, sizeof m->url, "%s", nats_url);
    es_url_redact(m->url, m->shown, sizeof m->shown);
    snprintf(m->stream, sizeof m->stream, "%s", stream);
    *out = m;
    return ES_OK;
}

bool
metrics_destroy(metrics *m)
{
    bool made;

    if (m == NULL)
        return false;
    made = m->tried;        /* the NATS library was opened */
    jsCtx_Destroy(m->js);
    if (m->nc) {
        natsConnection_Close(m->nc);
        natsConnection_Destroy(m->nc);
    }
    natsOptions_Destroy(m->opts);
    pthread_mutex_destroy(&m->mu);
    free(m);
    return made;
}

/* Makes the connection on the first call; m->mu held. */
static void
connect_once(metrics *m)
{
    jsOptions jo;
    natsStatus s;
    es_error err;

    if (m->tried)
        return;
    m->tried = true;
    if (es_nats_options_create(&m->opts, m->url, "es-query", &err) != ES_OK ||
        natsOptions_SetTimeout(m->opts, NATS_TIMEOUT_MS) != NATS_OK) {
        es_log(ES_LOG_WARNING, "%s (%s): projection lag is not reported",
               m->opts == NULL ? err.message : "could not set the NATS timeout", m->shown);
        return;
    }
    s = natsConnection_Connect(&m->nc, m->opts);
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
        es_log(ES_LOG_WARNING, "could not connect to NATS at %s: %s: projection lag is not reported",
               m->shown, natsStatus_GetText(s));
        natsConnection_Destroy(m->nc);
        m->nc = NULL;
        return;
    }
    jsOptions_Init(&jo);
    jo.Wait = NATS_TIMEOUT_MS;
    if (natsConnection_JetStream(&m->js, m->nc, &jo) != NATS_OK) {
        es_log(ES_LOG_WARNING, "could not set up JetStream on %s: projection lag is not reported",
               m->shown);
        m->js = NULL;
    }
}

/* The JetStream context of the shared connection, made on the first
 * call; NULL when there is none or NATS is not connected.  Once made,
 * nc and js stay until metrics_destroy (after the HTTP server stopped),
 * so the caller uses js without the lock. */
static jsCtx *
stream_ctx(metrics *m)
{
    jsCtx *js;

    pthread_mutex_lock(&m->mu);
    connect_once(m);
    js = m->js != NULL && es_nats_up(m->nc) ? m->js : NULL;
    pthread_mutex_unlock(&m->mu);
    return js;
}

/* Fills the lag figures of every projection whose checkpoint is known;
 * leaves them unknown when NATS or the stream does not answer. */
static void
feed_lag(metrics *m, proj_figures *f)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    jsCtx *js = stream_ctx(m);
    uint64_t last;
    struct timespec now;
    size_t i;

    if (js == NULL || js_GetStreamInfo(&si, js, m->stream, NULL, &jerr) != NATS_OK)
        goto done;
    last = si->State.LastSeq;
    clock_gettime(CLOCK_REALTIME, &now);
    for (i = 0; i < pj_projection_count; i++) {
        natsMsg *msg = NULL;

        if (!f[i].known)
            continue;
        f[i].lag_known = true;
        f[i].lag = last > f[i].seq ? last - f[i].seq : 0;
        if (f[i].lag == 0) {
            f[i].lag_secs_known = true;
            continue;
        }
        /* how long the oldest event it has not applied has been waiting;
         * natsMsg_GetTime is in nanoseconds since the epoch */
        if (js_GetMsg(&msg, js, m->stream, f[i].seq + 1, NULL, &jerr) == NATS_OK) {
            double t = (double)natsMsg_GetTime(msg) / 1e9;
            double n = (double)now.tv_sec + (double)now.tv_nsec / 1e9;

            f[i].lag_secs = n > t ? n - t : 0;
            f[i].lag_secs_known = true;
        }
        natsMsg_Destroy(msg);
    }
done:
    jsStreamInfo_Destroy(si);
}

/* The publish time of stream message seq, in ns since the epoch: 1; 0
 * when the stream has no such message (deleted); -1 when the stream did
 * not answer. */
static int
msg_time(metrics *m, jsCtx *js, uint64_t seq, int64_t *ns)
{
    natsMsg *msg = NULL;
    jsErrCode jerr = 0;
    natsStatus s;

    if (m->read_delay_ms > 0) {
        struct timespec d = {m->read_delay_ms / 1000, (m->read_delay_ms % 1000) * 1000000L};

        nanosleep(&d, NULL);
    }
    s = js_GetMsg(&msg, js, m->stream, seq, NULL, &jerr);

    if (s == NATS_OK)
        *ns = natsMsg_GetTime(msg);
    natsMsg_Destroy(msg);
    if (s == NATS_OK)
        return 1;
    return s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr ? 0 : -1;
}

es_status
metrics_seq_after(metrics *m, int64_t before_ns, uint64_t *seq, es_error *err)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    jsCtx *js = stream_ctx(m);
    uint64_t lo, hi;
    int64_t t;
    es_status st = ES_OK;

    if (js == NULL || js_GetStreamInfo(&si, js, m->stream, NULL, &jerr) != NATS_OK) {
        st = es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                          "the events stream %s did not answer", m->stream);
        goto done;
    }
    /* The first message published after before_ns, in [first, last + 1]
     * (last + 1: none is).  Publish times follow the sequence (one relay
     * publishes in order); a message the stream lacks (deleted) counts as
     * older, which at worst moves the answer by the messages it hides; a
     * stream that does not answer fails the search, rather than answer
     * "none is" for every message it could not read. */
    lo = si->State.FirstSeq ? si->State.FirstSeq : 1;
    hi = si->State.LastSeq + 1;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int got = msg_time(m, js, mid, &t);

        if (got < 0) {
            st = es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                              "the events stream %s did not answer", m->stream);
            goto done;
        }
        if (got > 0 && t > before_ns)
            hi = mid;
        else
            lo = mid + 1;
    }
    *seq = lo;
done:
    jsStreamInfo_Destroy(si);
    return st;
}

/* Checkpoints and stop marks of every projection (ctx: the figures). */
static es_status
redis_figures_on(redisContext *c, void *ctx, es_error *err)
{
    proj_figures *f = ctx;
    size_t i;

    for (i = 0; i < pj_projection_count; i++) {
        redisReply *rd;
        es_status st = es_rm_read(c, pj_projections[i].name, NULL, NULL, 0, &rd, err);

        if (st != ES_OK)
            return st;
        f[i].seq = (uint64_t)rd->element[1]->integer;
        freeReplyObject(rd);
        st = es_rm_stopped_get(c, pj_projections[i].name, &f[i].stopped, NULL, 0, err);
        if (st != ES_OK)
            return st;
        f[i].known = true;
    }
    return ES_OK;
}

/* False when Redis did not answer (the figures stay unknown). */
static bool
redis_figures(proj_figures *f)
{
    es_error err;

    if (read_run(redis_figures_on, f, &err) == ES_OK)
        return true;
    memset(f, 0, pj_projection_count * sizeof *f);
    return false;
}

static void
gauge(es_buf *out, const char *name, const char *help)
{
    es_buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

void
metrics_write(metrics *m, struct query_app *a, es_buf *out)
{
    proj_figures *f = calloc(pj_projection_count, sizeof *f);
    size_t i, n = pj_projection_count;
    bool redis_up, any_lag = false, any_secs = false;

    es_buf_printf(out,
                  "# HELP es_query_consistency_waits_total queries that waited for consistent_with\n"
                  "# TYPE es_query_consistency_waits_total counter\n"
                  "es_query_consistency_waits_total %llu\n"
                  "# HELP es_query_consistency_timeouts_total waits that ended not_yet_consistent\n"
                  "# TYPE es_query_consistency_timeouts_total counter\n"
                  "es_query_consistency_timeouts_total %llu\n",
                  (unsigned long long)atomic_load(&a->waits),
                  (unsigned long long)atomic_load(&a->wait_timeouts));
    es_buf_printf(out,
                  "# HELP es_query_consistency_waits_refused_total waits refused 503 "
                  "too_many_waits (ES_QUERY_WAITS_MAX)\n"
                  "# TYPE es_query_consistency_waits_refused_total counter\n"
                  "es_query_consistency_waits_refused_total %llu\n",
                  (unsigned long long)atomic_load(&a->waits_refused));
    es_buf_printf(out,
                  "# HELP es_query_replica_reads_total reads tried on the Redis replica "
                  "(ES_QUERY_READ_REPLICA) by outcome: served, behind consistent_with or "
                  "failed (both then read the primary)\n"
                  "# TYPE es_query_replica_reads_total counter\n"
                  "es_query_replica_reads_total{outcome=\"served\"} %llu\n"
                  "es_query_replica_reads_total{outcome=\"behind\"} %llu\n"
                  "es_query_replica_reads_total{outcome=\"failed\"} %llu\n",
                  read_replica_counted(READ_REPLICA_SERVED),
                  read_replica_counted(READ_REPLICA_BEHIND),
                  read_replica_counted(READ_REPLICA_FAILED));
    gauge(out, "es_query_consistency_waits_open", "waits parked now, their connections suspended");
    es_buf_printf(out, "es_query_consistency_waits_open %zu\n", watch_parked_count(a->watch));
    gauge(out, "es_query_announcements_up",
          "whether subscribed to the projections' applied channels (1) or not (0)");
    es_buf_printf(out, "es_query_announcements_up %d\n", watch_connected(a->watch) ? 1 : 0);
    if (f == NULL) {
        es_buf_puts(out, "# out of memory: projection figures left out\n");
        return;
    }
    redis_up = redis_figures(f);
    gauge(out, "es_query_redis_up", "1 when Redis answered this scrape");
    es_buf_printf(out, "es_query_redis_up %d\n", redis_up ? 1 : 0);
    feed_lag(m, f);

    gauge(out, "es_projection_position", "feed sequence of the last event the active version applied");
    for (i = 0; i < n; i++)
        if (f[i].known)
            es_buf_printf(out, "es_projection_position{projection=\"%s\"} %" PRIu64 "\n",
                          pj_projections[i].name, f[i].seq);
    for (i = 0; i < n; i++) {
        any_lag |= f[i].lag_known;
        any_secs |= f[i].lag_secs_known;
    }
    if (any_lag) {
        gauge(out, "es_projection_lag_events", "events in the stream the projection has not applied");
        for (i = 0; i < n; i++)
            if (f[i].lag_known)
                es_buf_printf(out, "es_projection_lag_events{projection=\"%s\"} %" PRIu64 "\n",
                              pj_projections[i].name, f[i].lag);
    }
    if (any_secs) {
        gauge(out, "es_projection_lag_seconds",
              "age of the oldest event the projection has not applied (0 when caught up)");
        for (i = 0; i < n; i++)
            if (f[i].lag_secs_known)
                es_buf_printf(out, "es_projection_lag_seconds{projection=\"%s\"} %.3f\n",
                              pj_projections[i].name, f[i].lag_secs);
    }
    gauge(out, "es_projection_stopped", "1 when the live projection stopped on an event it could not apply");
    for (i = 0; i < n; i++)
        if (f[i].known)
            es_buf_printf(out, "es_projection_stopped{projection=\"%s\"} %d\n",
                          pj_projections[i].name, f[i].stopped ? 1 : 0);
    free(f);
}
