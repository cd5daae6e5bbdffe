/*
 * es-relay: copies the event store's gap-free feed into one file-backed
 * JetStream stream, exactly once and in feed order, so that the stream's
 * sequence numbers are a dense copy of store order.
 *
 *   standby --take_lock()--> resume() --publish()--> following
 *      ^                        ^                       |
 *      |  lock lost             |  wrong last sequence  | page empty:
 *      +------------------------+-----------------------+ wait for a wake
 *                                                         (es.wake) or poll
 *
 * - One active instance: a PostgreSQL session advisory lock, held on a
 *   connection of its own; a standby retries every second.
 * - Exactly once: every message carries Nats-Msg-Id = event id (dedup
 *   window 10 min) and is published with ExpectLastSeq = the sequence the
 *   relay last saw, so even two relays that both think they are active
 *   cannot reorder or duplicate the stream.
 * - Resume: the stream's last message carries the store position of its
 *   event (header Es-Position); the relay continues the feed after it.
 *   After a NATS crash that lost the stream's tail, the relay republishes
 *   from the store in the same order, so sequence n names the same event.
 * - Woken by a message on ES_RELAY_WAKE_SUBJECT (es-command publishes one
 *   after appends), with a poll every ES_RELAY_POLL_MS as the fallback.
 */
#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "daemon.h"
#include "env.h"
#include "feed.h"
#include "http.h"
#include "lock.h"
#include "log.h"
#include "store.h"

#define RELAY_LOCK_KEY 7316405522       /* advisory lock of the active relay */
#define DEDUP_WINDOW_NS (600LL * 1000 * 1000 * 1000)

typedef struct relay {
    char conninfo[512], nats_url[256], stream[64], prefix[64], wake_subject[64];
    int batch, poll_ms;
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *wake_sub;
    es_lock *lock;
    es_store *store;
    pthread_mutex_t mu;
    pthread_cond_t woken;
    bool wake;
    atomic_bool active;
    atomic_bool pg_ok;          /* PostgreSQL answered the last request */
    atomic_ullong published, last_seq;
} relay;

static relay R;

static void
on_wake(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    relay *r = closure;

    (void)nc;
    (void)sub;
    natsMsg_Destroy(msg);
    pthread_mutex_lock(&r->mu);
    r->wake = true;
    pthread_cond_signal(&r->woken);
    pthread_mutex_unlock(&r->mu);
}

/* Sleeps until woken or ms pass. */
static void
wait_wake(relay *r, int ms)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)ms * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&r->mu);
    while (!r->wake && !es_daemon_stopping())
        if (pthread_cond_timedwait(&r->woken, &r->mu, &until) == ETIMEDOUT)
            break;
    r->wake = false;
    pthread_mutex_unlock(&r->mu);
}

/* Takes the active relay's lock; false when another holds it or PG is down. */
static bool
take_lock(relay *r)
{
    es_error err;
    bool held;

    atomic_store(&r->pg_ok, es_lock_try(r->lock, &held, &err) == ES_OK);
    return held;
}

/* True while the lock's connection is alive (the lock dies with it). */
static bool
still_locked(relay *r)
{
    es_error err;
    bool ok = es_lock_check(r->lock, &err) == ES_OK;

    atomic_store(&r->pg_ok, ok);
    return ok;
}

static bool
ensure_stream(relay *r)
{
    jsStreamInfo *si = NULL;
    jsStreamConfig cfg;
    jsErrCode jerr = 0;
    char subjects[80];
    const char *subj[1] = {subjects};
    natsStatus s = js_GetStreamInfo(&si, r->js, r->stream, NULL, &jerr);

    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return true;
    }
    jsStreamConfig_Init(&cfg);
    snprintf(subjects, sizeof subjects, "%s.>", r->prefix);
    cfg.Name = r->stream;
    cfg.Subjects = subj;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Duplicates = DEDUP_WINDOW_NS;
    s = js_AddStream(&si, r->js, &cfg, NULL, &jerr);
    if (s != NATS_OK) {
        es_log(ES_LOG_WARNING, "could not create stream %s: %s (%d)", r->stream,
               natsStatus_GetText(s), (int)jerr);
        return false;
    }
    jsStreamInfo_Destroy(si);
    return true;
}

/* Where to continue: the stream's last sequence and its event's position. */
static bool
resume(relay *r, uint64_t *seq, es_position *after)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsMsg *m = NULL;
    const char *pos = NULL;

    after->txid = 0;
    after->gpos = 0;
    if (js_GetStreamInfo(&si, r->js, r->stream, NULL, &jerr) != NATS_OK)
        return false;
    *seq = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    if (*seq == 0)
        return true;
    if (js_GetMsg(&m, r->js, r->stream, *seq, NULL, &jerr) != NATS_OK)
        return false;
    if (natsMsgHeader_Get(m, ES_POSITION_HEADER, &pos) != NATS_OK || !es_position_parse(pos, after)) {
        es_log(ES_LOG_ERROR, "the last message of %s (seq %" PRIu64 ") has no %s header", r->stream,
               *seq, ES_POSITION_HEADER);
        natsMsg_Destroy(m);
        return false;
    }
    natsMsg_Destroy(m);
    return true;
}

/* Subject token: letters, digits, '-' and '_' kept, the rest '_'. */
static void
token(char *out, size_t size, const char *in)
{
    size_t i = 0;

    for (; *in && i + 1 < size; in++)
        out[i++] = (char)((*in >= 'a' && *in <= 'z') || (*in >= 'A' && *in <= 'Z') ||
                                  (*in >= '0' && *in <= '9') || *in == '-' || *in == '_'
                              ? *in : '_');
    out[i] = '\0';
    if (i == 0)
        snprintf(out, size, "_");
}

typedef enum { PUB_OK, PUB_RESYNC, PUB_FAIL } pub_result;

static pub_result
publish(relay *r, const es_event *e, uint64_t *seq, es_buf *body)
{
    char subject[300], cat[80], type[120], pos[ES_POSITION_TEXT_MAX];
    const char *dash = strchr(e->stream_id, '-');
    natsMsg *m = NULL;
    jsPubOptions opts;
    jsPubAck *ack = NULL;
    jsErrCode jerr = 0;
    natsStatus s;
    pub_result out = PUB_FAIL;

    if (!es_nats_up(r->nc))            /* a publish would wait for its timeout */
        return PUB_FAIL;
    snprintf(cat, sizeof cat, "%.*s", dash ? (int)(dash - e->stream_id) : 79, e->stream_id);
    token(cat, sizeof cat, cat);
    token(type, sizeof type, e->type);
    snprintf(subject, sizeof subject, "%s.%s.%s", r->prefix, cat, type);
    es_position_format(e->position, pos);
    es_buf_reset(body);
    es_event_encode(body, e, true);
    if (es_buf_failed(body) ||
        natsMsg_Create(&m, subject, NULL, body->data, (int)body->len) != NATS_OK ||
        natsMsgHeader_Set(m, ES_POSITION_HEADER, pos) != NATS_OK)
        goto done;
    jsPubOptions_Init(&opts);
    opts.MsgId = e->event_id;
    opts.ExpectLastSeq = *seq;
    s = js_PublishMsg(&ack, r->js, m, &opts, &jerr);
    if (s == NATS_OK) {
        if (!ack->Duplicate)
            *seq = ack->Sequence;
        else            /* published before, acknowledged now: stay in step */
            *seq = ack->Sequence > *seq ? ack->Sequence : *seq;
        out = PUB_OK;
    } else if (jerr == JSStreamWrongLastSequenceErr) {
        out = PUB_RESYNC;
    } else {
        es_log(ES_LOG_WARNING, "could not publish event %s: %s (%d)", e->event_id,
               natsStatus_GetText(s), (int)jerr);
    }
done:
    jsPubAck_Destroy(ack);
    natsMsg_Destroy(m);
    return out;
}

/* Follows the feed while this relay holds the lock. */
static void
follow(relay *r)
{
    es_buf body = ES_BUF_INIT;
    es_position after;
    uint64_t seq;
    es_error err;
    time_t checked = time(NULL);

    if (!es_nats_up(r->nc) || !ensure_stream(r) || !resume(r, &seq, &after)) {
        wait_wake(r, 1000);
        return;
    }
    atomic_store(&r->active, true);
    atomic_store(&r->last_seq, seq);
    while (!es_daemon_stopping()) {
        es_page *p = NULL;
        size_t i;

        if (es_store_read_feed(r->store, after, (size_t)r->batch, &p, &err) != ES_OK) {
            atomic_store(&r->pg_ok, false);
            es_log(ES_LOG_WARNING, "%s", err.message);
            wait_wake(r, 1000);
            break;
        }
        for (i = 0; i < p->count && !es_daemon_stopping(); i++) {
            pub_result pr = publish(r, &p->events[i], &seq, &body);
            if (pr != PUB_OK)
                break;
            after = p->events[i].position;
            atomic_fetch_add(&r->published, 1);
            atomic_store(&r->last_seq, seq);
        }
        if (i < p->count) {             /* resync or failure: start over */
            es_page_destroy(p);
            wait_wake(r, 200);
            break;
        }
        if (p->count == 0) {
            es_page_destroy(p);
            if (time(NULL) != checked) {
                checked = time(NULL);
                if (!still_locked(r))
                    break;
            }
            wait_wake(r, r->poll_ms);
            continue;
        }
        es_page_destroy(p);
    }
    atomic_store(&r->active, false);
    es_buf_free(&body);
}

static bool
ready(void *ctx, json_t **body)
{
    relay *r = ctx;
    bool nats = es_nats_up(r->nc);
    bool pg = atomic_load(&r->pg_ok), ok = nats && pg;

    *body = json_pack("{s:s, s:s, s:s, s:b}", "status", ok ? "ready" : "unavailable", "postgres",
                      pg ? "ok" : "unavailable", "nats", nats ? "ok" : "unavailable", "active",
                      atomic_load(&r->active));
    return ok;
}

static void
metrics(void *ctx, es_buf *out)
{
    relay *r = ctx;

    es_buf_printf(out,
                  "# HELP es_relay_published_total events this process published to the stream\n"
                  "# TYPE es_relay_published_total counter\n"
                  "es_relay_published_total %llu\n"
                  "# HELP es_relay_last_sequence stream sequence of the last message the relay "
                  "published or found\n"
                  "# TYPE es_relay_last_sequence gauge\n"
                  "es_relay_last_sequence %llu\n"
                  "# HELP es_relay_active whether this relay holds the lock and publishes (1) or "
                  "stands by (0)\n"
                  "# TYPE es_relay_active gauge\n"
                  "es_relay_active %d\n",
                  (unsigned long long)atomic_load(&r->published),
                  (unsigned long long)atomic_load(&r->last_seq), atomic_load(&r->active) ? 1 : 0);
}

/* Wakes wait_wake when the process starts stopping. */
static void
on_stop(void *arg)
{
    relay *r = arg;

    pthread_mutex_lock(&r->mu);
    pthread_cond_signal(&r->woken);
    pthread_mutex_unlock(&r->mu);
}

static es_daemon relay_daemon = {
    .name = "es-relay", .metrics_prefix = "es_relay", .ready = ready, .metrics = metrics,
    .ctx = &R,
};

int
main(void)
{
    relay *r = &R;
    natsOptions *opts = NULL;
    const char *bind = es_env_str("ES_RELAY_BIND", "127.0.0.1");
    unsigned port = (unsigned)atoi(es_env_str("ES_RELAY_PORT", "8082"));
    es_daemon_server *health = NULL;
    es_auth *auth = NULL;
    es_error err;
    int rc = 1;

    snprintf(r->conninfo, sizeof r->conninfo, "%s", es_pg_conninfo());
    snprintf(r->nats_url, sizeof r->nats_url, "%s", es_env_str("ES_NATS_URL", "nats://127.0.0.1:54222"));
    snprintf(r->stream, sizeof r->stream, "%s", es_env_str("ES_RELAY_STREAM", "EVENTS"));
    snprintf(r->prefix, sizeof r->prefix, "%s", es_env_str("ES_RELAY_SUBJECT_PREFIX", "es.events"));
    snprintf(r->wake_subject, sizeof r->wake_subject, "%s", es_env_str("ES_RELAY_WAKE_SUBJECT", "es.wake"));
    r->batch = atoi(es_env_str("ES_RELAY_BATCH", "500"));
    r->poll_ms = atoi(es_env_str("ES_RELAY_POLL_MS", "100"));
    if (r->batch < 1 || r->poll_ms < 1) {
        es_log(ES_LOG_ERROR, "ES_RELAY_BATCH and ES_RELAY_POLL_MS must be positive");
        return 2;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->woken, NULL);
    es_daemon_on_stop(on_stop, r);
    if (es_daemon_start(&relay_daemon, &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    /* /metrics needs a token with the metrics scope (es_daemon_server) */
    if (es_auth_start(&auth, r->conninfo, es_env_str("ES_NATS_URL", "nats://127.0.0.1:54222"),
                      &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    relay_daemon.auth = auth;
    if (es_store_create(&r->store, r->conninfo, &err) != ES_OK ||
        es_lock_create(&r->lock, r->conninfo, RELAY_LOCK_KEY, &err) != ES_OK ||
        es_daemon_server_start(&health, &relay_daemon, bind, port, &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    if (natsOptions_Create(&opts) != NATS_OK || natsOptions_SetURL(opts, r->nats_url) != NATS_OK ||
        natsOptions_SetMaxReconnect(opts, -1) != NATS_OK ||
        natsOptions_SetRetryOnFailedConnect(opts, true, es_nats_connected, NULL) != NATS_OK) {
        es_log(ES_LOG_ERROR, "could not set up the NATS options");
        goto done;
    }
    {
        natsStatus s = natsConnection_Connect(&r->nc, opts);
        if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
            es_log(ES_LOG_ERROR, "could not connect to %s: %s", r->nats_url,
                   natsStatus_GetText(s));
            goto done;
        }
    }
    if (natsConnection_JetStream(&r->js, r->nc, NULL) != NATS_OK ||
        natsConnection_Subscribe(&r->wake_sub, r->nc, r->wake_subject, on_wake, r) != NATS_OK) {
        es_log(ES_LOG_ERROR, "could not set up JetStream on %s", r->nats_url);
        goto done;
    }
    es_log(ES_LOG_INFO, "stream %s (%s.>) from %s, health on http://%s:%u", r->stream, r->prefix,
           r->nats_url, bind, port);
    while (!es_daemon_stopping()) {
        if (!take_lock(r)) {
            wait_wake(r, 1000);         /* standby */
            continue;
        }
        es_log(ES_LOG_INFO, "active");
        follow(r);
        es_lock_release(r->lock);
    }
    rc = 0;
done:
    es_daemon_stop();
    if (r->wake_sub) {
        natsSubscription_Unsubscribe(r->wake_sub);
        natsSubscription_Destroy(r->wake_sub);
    }
    jsCtx_Destroy(r->js);
    if (r->nc) {
        natsConnection_Close(r->nc);
        natsConnection_Destroy(r->nc);
    }
    natsOptions_Destroy(opts);
    es_daemon_server_stop(health);
    es_auth_stop(auth);
    es_store_close(r->store);
    es_lock_destroy(r->lock);
    nats_Close();
    return rc;
}
