/*
 * es-relay: copies the event store's gap-free feed into one file-backed
 * JetStream stream, exactly once and in feed order, so that the stream's
 * sequence numbers are a dense copy of store order (its states: run()).
 *
 * - One active instance: a PostgreSQL session advisory lock, held on a
 *   connection of its own; a standby retries every second.  The lock's
 *   session ends after ES_RELAY_LOCK_LEASE_MS idle (es_lock_set_lease),
 *   so a relay that stalls holding it (SIGSTOP, swapped out) loses it to
 *   the standby; when it wakes, its in-flight publishes are refused by
 *   ExpectLastSeq (below) and its next lock check sends it back to
 *   standby.
 * - Exactly once: every message carries Nats-Msg-Id = event id (dedup
 *   window 10 min) and is published with ExpectLastSeq = the sequence of
 *   the message before it, so even two relays that both think they are
 *   active cannot reorder or duplicate the stream.
 * - Pipelined: up to ES_RELAY_WINDOW publishes are in flight at once
 *   (window.c).  Each names the sequence it must follow, so the stream
 *   only ever takes a prefix of what was sent; on any failure the relay
 *   drops the rest and resumes as after a restart.
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
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "audit.h"
#include "daemon.h"
#include "env.h"
#include "feed.h"
#include "http.h"
#include "lock.h"
#include "log.h"
#include "store.h"
#include "trace.h"
#include "window.h"

#define RELAY_LOCK_KEY 7316405522       /* advisory lock of the active relay */
#define DEDUP_WINDOW_NS (600LL * 1000 * 1000 * 1000)

/* Why the relay does not publish although it holds the lock. */
typedef enum relay_problem {
    RELAY_OK,
    RELAY_NOT_A_COPY,           /* the stream's last message is not the feed's event of
                                   its sequence: a foreign publish; never followed */
    RELAY_STUCK                 /* an event failed STUCK_AFTER times in a row */
} relay_problem;

#define STUCK_AFTER 5

typedef struct relay {
    char conninfo[512], nats_url[256], stream[64], prefix[64], wake_subject[64];
    char nats_shown[256];       /* nats_url without its password, for the log */
    int batch, poll_ms;
    int window_size;            /* publishes in flight at most */
    long window_bytes;          /* and their bodies' bytes at most */
    int publish_wait_ms;        /* for each acknowledgement */
    natsConnection *nc;
    jsCtx *js;                  /* its acknowledgements go to window */
    rl_window *window;
    natsSubscription *wake_sub;
    es_lock *lock;
    es_store *store;
    pthread_mutex_t mu;
    pthread_cond_t woken;
    bool wake;
    atomic_bool active;
    atomic_bool pg_ok;          /* PostgreSQL answered the last request */
    atomic_ullong published, last_seq;
    /* What stops the relay, for /readyz, /metrics and the log (under
     * problem_mu): nothing is skipped while it stands. */
    pthread_mutex_t problem_mu;
    relay_problem problem;
    char problem_why[400];
    es_position failing;        /* the event a publish failed on last */
    int failures;               /* in a row, on that event */
    atomic_ullong publish_failures, repairs;
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
    if (!atomic_load(&r->pg_ok))
        es_log(ES_LOG_DEBUG, "take_lock: %s", err.message);
    return held;
}

/* True while the lock's connection is alive (the lock dies with it). */
static bool
still_locked(relay *r)
{
    es_error err;
    bool ok = es_lock_check(r->lock, &err) == ES_OK;
    if (!ok)
        es_log(ES_LOG_DEBUG, "still_locked: %s", err.message);

    atomic_store(&r->pg_ok, ok);
    return ok;
}

/* Records what stops the relay, logging it when it is news. */
static void
problem_set(relay *r, relay_problem kind, const char *fmt, ...)
{
    char why[sizeof r->problem_why];
    bool news;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&r->problem_mu);
    news = r->problem != kind || strcmp(r->problem_why, why) != 0;
    r->problem = kind;
    snprintf(r->problem_why, sizeof r->problem_why, "%s", why);
    pthread_mutex_unlock(&r->problem_mu);
    if (news)
        es_log(ES_LOG_ERROR, "%s", why);
}

static void
problem_clear(relay *r, relay_problem kind)
{
    pthread_mutex_lock(&r->problem_mu);
    if (r->problem == kind) {
        r->problem = RELAY_OK;
        r->problem_why[0] = '\0';
        es_log(ES_LOG_INFO, "%s", kind == RELAY_STUCK ? "publishing again"
                                                      : "the stream is a copy of the feed again");
    }
    pthread_mutex_unlock(&r->problem_mu);
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
    /* a NATS cluster keeps ES_NATS_REPLICAS copies (3 in make cluster-up) */
    cfg.Replicas = es_env_long(NULL, "ES_NATS_REPLICAS", 1, 1, 5);
    s = js_AddStream(&si, r->js, &cfg, NULL, &jerr);
    if (s != NATS_OK) {
        es_log(ES_LOG_WARNING, "could not create stream %s: %s (%d)", r->stream,
               natsStatus_GetText(s), (int)jerr);
        return false;
    }
    jsStreamInfo_Destroy(si);
    return true;
}

/*
 * A purged stream (or one with messages deleted) keeps its last sequence,
 * so the missing events could never again get the sequences that name
 * them: the stream is deleted and made anew, and follow() republishes the
 * feed from its first event with the same ids, so sequence n names the
 * feed's n-th event again.  The stream has no limits, so a first
 * sequence above 1 or fewer messages than the last sequence means that.
 */
static bool
damaged(const jsStreamInfo *si)
{
    const jsStreamConfig *cfg = si->Config;

    /* A stream someone gave limits drops messages by design: repairing
     * it would delete and republish it over and over, so it is left as
     * it is (the feed's copy is then only its tail, which the operator
     * chose). */
    if (cfg != NULL && (cfg->MaxMsgs > 0 || cfg->MaxBytes > 0 || cfg->MaxAge > 0))
        return false;
    return si->State.LastSeq > 0 &&
           (si->State.FirstSeq != 1 || si->State.Msgs != si->State.LastSeq);
}

static bool
repair(relay *r, uint64_t last)
{
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteStream(r->js, r->stream, NULL, &jerr);

    if (s != NATS_OK && jerr != JSStreamNotFoundErr) {
        es_log(ES_LOG_WARNING, "could not delete the purged stream %s: %s (%d)", r->stream,
               natsStatus_GetText(s), (int)jerr);
        return false;
    }
    atomic_fetch_add(&r->repairs, 1);
    es_log(ES_LOG_WARNING, "stream %s lost messages (purged or deleted; last sequence %" PRIu64
           "): made it anew, republishing the feed from its start", r->stream, last);
    return ensure_stream(r);
}

/*
 * Where to continue: the stream's last sequence and its event's position,
 * once the last message is checked to be the feed's event of that
 * sequence (same id, same place in feed order).  A message that is not
 * (published by someone else into the stream's subjects) stops the relay
 * as RELAY_NOT_A_COPY: resuming after its position could skip events, and
 * publishing after it would shift every sequence.  False to try again
 * later.
 */
static bool
resume(relay *r, uint64_t *seq, es_position *after)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsMsg *m = NULL;
    const char *pos = NULL, *id = NULL;
    char stored_id[ES_UUID_LEN + 1];
    int64_t ordinal;
    es_error err;
    es_status st;
    bool ok = false, broken;

    after->txid = 0;
    after->gpos = 0;
    if (js_GetStreamInfo(&si, r->js, r->stream, NULL, &jerr) != NATS_OK)
        return false;
    *seq = si->State.LastSeq;
    broken = damaged(si);
    jsStreamInfo_Destroy(si);
    if (broken && !repair(r, *seq))
        return false;
    if (broken || *seq == 0) {
        es_log(ES_LOG_DEBUG, "resuming at the start of %s", r->stream);
        *seq = 0;
        problem_clear(r, RELAY_NOT_A_COPY);
        return true;
    }
    if (js_GetMsg(&m, r->js, r->stream, *seq, NULL, &jerr) != NATS_OK)
        return false;
    if (natsMsgHeader_Get(m, ES_POSITION_HEADER, &pos) != NATS_OK ||
        !es_position_parse(pos, after) || natsMsgHeader_Get(m, "Nats-Msg-Id", &id) != NATS_OK) {
        problem_set(r, RELAY_NOT_A_COPY, "message %" PRIu64 " of %s (subject %s) lacks the %s or "
                    "Nats-Msg-Id header: the relay did not publish it; not following it",
                    *seq, r->stream, natsMsg_GetSubject(m), ES_POSITION_HEADER);
        goto done;
    }
    st = es_audit_feed_locate(r->store, *after, &ordinal, stored_id, &err);
    if (st == ES_ENOTFOUND) {
        problem_set(r, RELAY_NOT_A_COPY, "message %" PRIu64 " of %s names position %s, where the "
                    "store has no event: the relay did not publish it; not following it",
                    *seq, r->stream, pos);
        goto done;
    }
    if (st != ES_OK) {
        atomic_store(&r->pg_ok, false);
        es_log(ES_LOG_WARNING, "%s", err.message);
        goto done;
    }
    if (strcmp(stored_id, id) != 0 || (uint64_t)ordinal != *seq) {
        problem_set(r, RELAY_NOT_A_COPY, "message %" PRIu64 " of %s is event %.40s at position %s, "
                    "but the feed's event %" PRIu64 " is %s (event %" PRId64 " of the feed is at "
                    "that position): not following it", *seq, r->stream, id, pos, *seq,
                    stored_id, ordinal);
        goto done;
    }
    problem_clear(r, RELAY_NOT_A_COPY);
    es_log(ES_LOG_DEBUG, "resuming after message %" PRIu64 " of %s, event %s at position %s",
           *seq, r->stream, id, pos);
    ok = true;
done:
    natsMsg_Destroy(m);
    return ok;
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

/* Counts a failed publish of the event at position (text pos); the same
 * event failing STUCK_AFTER times in a row stops the relay as
 * RELAY_STUCK, with its position, until it goes through (it is retried,
 * never skipped). */
static void
failed(relay *r, const rl_failure *f)
{
    char pos[ES_POSITION_TEXT_MAX];
    bool same;

    es_position_format(f->position, pos);
    atomic_fetch_add(&r->publish_failures, 1);
    pthread_mutex_lock(&r->problem_mu);
    same = r->failing.txid == f->position.txid && r->failing.gpos == f->position.gpos;
    r->failing = f->position;
    r->failures = same ? r->failures + 1 : 1;
    same = r->failures >= STUCK_AFTER;
    pthread_mutex_unlock(&r->problem_mu);
    if (same)
        problem_set(r, RELAY_STUCK, "event %s at position %s (stream %s) could not be published "
                    "after %d tries: %s (%d); retrying it, nothing after it is published",
                    f->event_id, pos, f->stream_id, STUCK_AFTER, f->why, (int)f->jerr);
    else
        es_log(ES_LOG_WARNING, "could not publish event %s at position %s: %s (%d)", f->event_id,
               pos, f->why, (int)f->jerr);
}

/* The message of event e: subject <prefix>.<category>.<type>, body the
 * event as the API shows it, header Es-Position (rl_window_publish adds
 * Nats-Msg-Id and the expected last sequence).  NULL when out of memory. */
static natsMsg *
message(relay *r, const es_event *e, es_buf *body)
{
    char subject[300], cat[80], type[120], pos[ES_POSITION_TEXT_MAX];
    const char *dash = strchr(e->stream_id, '-');
    natsMsg *m = NULL;
    es_trace t;

    snprintf(cat, sizeof cat, "%.*s", dash ? (int)(dash - e->stream_id) : 79, e->stream_id);
    token(cat, sizeof cat, cat);
    token(type, sizeof type, e->type);
    snprintf(subject, sizeof subject, "%s.%s.%s", r->prefix, cat, type);
    es_position_format(e->position, pos);
    es_buf_reset(body);
    es_event_encode(body, e, true);
    if (es_buf_failed(body) ||
        natsMsg_Create(&m, subject, NULL, body->data, (int)body->len) != NATS_OK)
        return NULL;
    if (natsMsgHeader_Set(m, ES_POSITION_HEADER, pos) != NATS_OK) {
        natsMsg_Destroy(m);
        return NULL;
    }
    /* the trace of the command that wrote it (its metadata's trace_id and
     * span_id, events/trace.h) as a W3C traceparent, for consumers */
    if (e->metadata != NULL && es_trace_from_metadata(e->metadata, strlen(e->metadata), &t)) {
        char tp[ES_TRACEPARENT_LEN + 1];

        es_traceparent_format(&t, tp);
        if (natsMsgHeader_Set(m, ES_TRACEPARENT_HEADER, tp) != NATS_OK) {
            natsMsg_Destroy(m);
            return NULL;
        }
    }
    return m;
}

/* False (after repairing it) when the stream lost messages; true when it
 * is whole or NATS cannot tell now (a publish then fails and says so). */
static bool
stream_whole(relay *r)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    uint64_t last;
    bool broken;

    if (js_GetStreamInfo(&si, r->js, r->stream, NULL, &jerr) != NATS_OK)
        return true;
    broken = damaged(si);
    last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    if (broken)
        repair(r, last);
    return !broken;
}

/* Counts what the window saw acknowledged: es_relay_published_total,
 * es_relay_last_sequence; an event that goes through ends RELAY_STUCK. */
static void
progress(relay *r)
{
    es_position pos;
    uint64_t seq, n = rl_window_acked(r->window, &seq, &pos);

    if (n > 0) {
        atomic_fetch_add(&r->published, n);
        problem_clear(r, RELAY_STUCK);
    }
    atomic_store(&r->last_seq, seq);
}

/* After the window failed: its first failure is counted against its
 * event (or only noted, when it means the stream's last sequence moved),
 * and everything still in flight is dropped. */
static void
window_failed(relay *r)
{
    rl_failure f;
    char pos[ES_POSITION_TEXT_MAX];

    rl_window_drain(r->window, r->publish_wait_ms);     /* settles up to the first failure */
    rl_window_failure(r->window, &f);
    progress(r);
    rl_window_abandon(r->window, r->js);
    if (f.resync) {
        es_position_format(f.position, pos);
        es_log(ES_LOG_INFO, "event %s at position %s: %s; resuming from the stream's last message",
               f.event_id, pos, f.why);
    } else {
        failed(r, &f);
    }
}

/*
 * Follows the feed while this relay holds the lock: reads a page after
 * the last event sent, sends its events into the window (which waits
 * while r->window_size are unacknowledged), and waits for every
 * acknowledgement only when the page was not full (caught up) or
 * something went wrong.  Any failure ends the call with nothing in
 * flight; run() calls it again, and resume() finds where the stream
 * really stands from its last message.
 */
static void
follow(relay *r)
{
    es_buf body = ES_BUF_INIT;
    es_position after;          /* the last event sent */
    uint64_t seq;
    es_error err;
    time_t checked = time(NULL);

    if (!es_nats_up(r->nc) || !ensure_stream(r) || !resume(r, &seq, &after)) {
        wait_wake(r, 1000);
        return;
    }
    rl_window_reset(r->window, seq, after);
    atomic_store(&r->active, true);
    atomic_store(&r->last_seq, seq);
    while (!es_daemon_stopping()) {
        es_page *p = NULL;
        size_t i, count;
        bool nats_up = es_nats_up(r->nc);      /* else a publish waits for its timeout */

        if (es_store_read_feed(r->store, after, (size_t)r->batch, &p, &err) != ES_OK) {
            atomic_store(&r->pg_ok, false);
            es_log(ES_LOG_WARNING, "%s", err.message);
            wait_wake(r, 1000);
            break;
        }
        for (i = 0; nats_up && i < p->count && !es_daemon_stopping(); i++) {
            natsMsg *m = message(r, &p->events[i], &body);
            bool sent = m != NULL &&
                        rl_window_publish(r->window, r->js, &m, &p->events[i], r->publish_wait_ms);

            natsMsg_Destroy(m);         /* NULL once nats.c took it */
            if (!sent)
                break;
            after = p->events[i].position;
        }
        count = p->count;
        es_page_destroy(p);
        if (i < count && !es_daemon_stopping()) {
            /* the window failed, NATS is down, or out of memory: start
             * over (a publish that failed counts against its event) */
            if (nats_up && !rl_window_drain(r->window, r->publish_wait_ms))
                window_failed(r);
            wait_wake(r, 200);
            break;
        }
        /* Caught up: what the page published goes to the server now.
         * Left to the library's writer thread it would wait 1 ms for more
         * first, a fixed part of every event's way to the read models; a
         * full page needs no push (the next one follows at once).  The
         * flush waits for the server's PONG, which it sends after taking
         * the publishes, before their acknowledgements that the drain
         * below waits for anyway; a failure is the drain's to find. */
        if (count > 0 && count < (size_t)r->batch)
            natsConnection_FlushTimeout(r->nc, r->publish_wait_ms);
        if (count < (size_t)r->batch && !rl_window_drain(r->window, r->publish_wait_ms)) {
            window_failed(r);           /* caught up, but not everything went through */
            wait_wake(r, 200);
            break;
        }
        progress(r);
        /* once a second: the lock still ours, the stream still whole */
        if (time(NULL) != checked) {
            checked = time(NULL);
            if (!still_locked(r) || !stream_whole(r))
                break;
        }
        if (count == 0)
            wait_wake(r, r->poll_ms);
    }
    /* stopping, or starting over: what is still in flight may or may not
     * be stored; resume() will tell */
    rl_window_drain(r->window, es_daemon_stopping() ? 1000 : 0);
    progress(r);
    rl_window_abandon(r->window, r->js);
    atomic_store(&r->active, false);
    es_buf_free(&body);
}

/*
 * The relay's states, until the process stops:
 *
 *   standby --take_lock()--> resume() --rl_window_publish()--> following
 *      ^                        ^                                  |
 *      |  lock lost             |  a publish in the window failed  | page empty:
 *      +------------------------+----------------------------------+ wait for a wake
 *        (still_locked())         (window_failed(), follow()         (es.wake) or poll
 *                                  returns)
 *
 * A standby retries the lock every second; follow() publishes while the
 * lock holds and returns to start over on any doubt, with nothing left
 * in flight.
 */
static void
run(relay *r)
{
    while (!es_daemon_stopping()) {
        if (!take_lock(r)) {
            wait_wake(r, 1000);         /* standby */
            continue;
        }
        es_log(ES_LOG_INFO, "active");
        follow(r);
        es_lock_release(r->lock);
    }
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
    pthread_mutex_lock(&r->problem_mu);
    if (r->problem != RELAY_OK) {
        ok = false;
        json_object_set_new(*body, "status", json_string("unavailable"));
        json_object_set_new(*body, "problem", json_string(r->problem == RELAY_STUCK
                                                              ? "publish_stuck"
                                                              : "stream_not_a_copy"));
        json_object_set_new(*body, "reason", json_string(r->problem_why));
    }
    pthread_mutex_unlock(&r->problem_mu);
    return ok;
}

static void
metrics(void *ctx, es_buf *out)
{
    relay *r = ctx;
    relay_problem problem;

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
    pthread_mutex_lock(&r->problem_mu);
    problem = r->problem;
    pthread_mutex_unlock(&r->problem_mu);
    es_buf_printf(out,
                  "# HELP es_relay_stream_mismatch whether the stream's last message is not the "
                  "feed's event of its sequence (1), which stops the relay, or is (0)\n"
                  "# TYPE es_relay_stream_mismatch gauge\n"
                  "es_relay_stream_mismatch %d\n"
                  "# HELP es_relay_publish_stuck whether one event has failed to publish %d "
                  "times in a row (1), which holds back every later one, or not (0)\n"
                  "# TYPE es_relay_publish_stuck gauge\n"
                  "es_relay_publish_stuck %d\n"
                  "# HELP es_relay_publish_failures_total publishes that failed (each is retried)\n"
                  "# TYPE es_relay_publish_failures_total counter\n"
                  "es_relay_publish_failures_total %llu\n"
                  "# HELP es_relay_stream_repairs_total times a purged stream was made anew and "
                  "republished from the store\n"
                  "# TYPE es_relay_stream_repairs_total counter\n"
                  "es_relay_stream_repairs_total %llu\n",
                  problem == RELAY_NOT_A_COPY, STUCK_AFTER, problem == RELAY_STUCK,
                  (unsigned long long)atomic_load(&r->publish_failures),
                  (unsigned long long)atomic_load(&r->repairs));
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
    jsOptions jopts;
    const char *bind = es_env_str("ES_RELAY_BIND", "127.0.0.1");
    unsigned port = (unsigned)atoi(es_env_str("ES_RELAY_PORT", "8082"));
    es_daemon_server *health = NULL;
    es_auth *auth = NULL;
    es_error err;
    long lock_lease_ms;
    int rc = 1;

    snprintf(r->conninfo, sizeof r->conninfo, "%s", es_pg_conninfo());
    snprintf(r->nats_url, sizeof r->nats_url, "%s", es_nats_url());
    es_url_redact(r->nats_url, r->nats_shown, sizeof r->nats_shown);
    snprintf(r->stream, sizeof r->stream, "%s", es_env_str("ES_RELAY_STREAM", "EVENTS"));
    snprintf(r->prefix, sizeof r->prefix, "%s", es_env_str("ES_RELAY_SUBJECT_PREFIX", "es.events"));
    snprintf(r->wake_subject, sizeof r->wake_subject, "%s", es_env_str("ES_RELAY_WAKE_SUBJECT", "es.wake"));
    r->batch = atoi(es_env_str("ES_RELAY_BATCH", "500"));
    r->poll_ms = atoi(es_env_str("ES_RELAY_POLL_MS", "100"));
    r->window_size = atoi(es_env_str("ES_RELAY_WINDOW", "1024"));
    r->window_bytes = atol(es_env_str("ES_RELAY_WINDOW_BYTES", "8388608"));
    r->publish_wait_ms = 5000;
    lock_lease_ms = es_env_long("es-relay", "ES_RELAY_LOCK_LEASE_MS", 6000, 0, 3600000);
    if (lock_lease_ms > 0 && lock_lease_ms < 2000) {
        es_log(ES_LOG_ERROR, "ES_RELAY_LOCK_LEASE_MS must be 0 (no lease) or at least 2000");
        return 2;
    }
    if (r->batch < 1 || r->poll_ms < 1 || r->window_size < 1 || r->window_bytes < 1) {
        es_log(ES_LOG_ERROR, "ES_RELAY_BATCH, ES_RELAY_POLL_MS, ES_RELAY_WINDOW and "
               "ES_RELAY_WINDOW_BYTES must be positive");
        return 2;
    }
    if (!rl_window_create(&r->window, (size_t)r->window_size, (size_t)r->window_bytes)) {
        es_log(ES_LOG_ERROR, "out of memory for a window of %d publishes", r->window_size);
        return 1;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->problem_mu, NULL);
    pthread_cond_init(&r->woken, NULL);
    es_daemon_on_stop(on_stop, r);
    if (es_daemon_start(&relay_daemon, &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    /* /metrics needs a token with the metrics scope (es_daemon_server) */
    if (es_auth_start(&auth, r->conninfo, r->nats_url,
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
    /* the holder touches the lock's session at least once a second while
     * it follows; a publish may wait publish_wait_ms for NATS */
    es_lock_set_lease(r->lock, lock_lease_ms);
    if (es_nats_options_create(&opts, r->nats_url, "es-relay", &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    {
        natsStatus s = natsConnection_Connect(&r->nc, opts);
        if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
            es_log(ES_LOG_ERROR, "could not connect to %s: %s", r->nats_shown,
                   natsStatus_GetText(s));
            goto done;
        }
    }
    jsOptions_Init(&jopts);
    jopts.PublishAsync.AckHandler = rl_window_on_ack;
    jopts.PublishAsync.AckHandlerClosure = r->window;
    if (natsConnection_JetStream(&r->js, r->nc, &jopts) != NATS_OK ||
        natsConnection_Subscribe(&r->wake_sub, r->nc, r->wake_subject, on_wake, r) != NATS_OK) {
        es_log(ES_LOG_ERROR, "could not set up JetStream on %s", r->nats_shown);
        goto done;
    }
    es_log(ES_LOG_INFO, "stream %s (%s.>) from %s, health on %s://%s:%u", r->stream, r->prefix,
           r->nats_shown, es_daemon_http_scheme(), bind, port);
    run(r);
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
    rl_window_destroy(r->window);       /* no acknowledgement can come any more */
    return rc;
}
