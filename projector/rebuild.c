/*
 * esctl projection rebuild <name>: a new version of one projection, built
 * without stopping queries; pj_rebuild() draws its steps.
 *
 * Interrupted (Ctrl-C), it stops cleanly; run again, it resumes from B's
 * checkpoint.  An event it cannot apply fails the rebuild and names it,
 * unless an operator parked it for this projection (park.h): then, as in
 * the live projector, the checkpoint passes it without a write.
 * With --dry-run it only replays into a scratch version, reports the rate
 * and deletes the scratch keys (what `make bench` measures); esctl verify
 * compares such a scratch version with the live one (pj_scratch).
 */
#include "projector.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "park.h"
#include "store.h"

#define DEPTH 4                 /* batches in flight to Redis */

static double
now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

typedef struct progress {
    bool tty;
    double start, shown;
    uint64_t from, total;       /* total 0: unknown */
    const pj_rebuild_hooks *hooks;  /* a caller of its own told instead of stderr */
    const char *version;
} progress;

/* Tells the caller's hook, when there is one, where the rebuild is. */
static void
tell(const progress *pg, const char *phase, uint64_t done)
{
    if (pg->hooks && pg->hooks->progress)
        pg->hooks->progress(pg->hooks->ctx, phase, pg->version ? pg->version : "", done,
                            pg->total);
}

static void
show(progress *pg, uint64_t done, bool last)
{
    double t = now_s(), el = t - pg->start, rate;
    uint64_t n = done - pg->from;

    if (pg->hooks) {
        tell(pg, "replay", done);
        return;
    }
    if (!last && t - pg->shown < (pg->tty ? 0.2 : 5.0))
        return;
    pg->shown = t;
    rate = el > 0 ? (double)n / el : 0;
    if (pg->tty && pg->total > pg->from) {
        uint64_t span = pg->total - pg->from;
        double f = (double)(n > span ? span : n) / (double)span;
        int w = 30, k = (int)(f * w), i;
        char bar[32];

        for (i = 0; i < w; i++)
            bar[i] = i < k ? '#' : '.';
        bar[w] = '\0';
        fprintf(stderr, "\r[%s] %3.0f%% %" PRIu64 "/%" PRIu64 " events %.0f/s ETA %.0fs   ", bar,
                f * 100, done, pg->total, rate,
                rate > 0 && span > n ? (double)(span - n) / rate : 0.0);
    } else {
        fprintf(stderr, "%s%" PRIu64 " events replayed, %.0f/s%s", pg->tty ? "\r" : "", done,
                rate, pg->tty ? "   " : "\n");
    }
    if (last && pg->tty)
        fputc('\n', stderr);
}

/* This thread's token while it holds the rebuild lock (es_rm_lock_take),
 * "" otherwise: per thread, since es-query runs one rebuild per
 * projection on threads of its own. */
static _Thread_local char lock_token[64];

/* Picks the version to build: the unfinished one, or a new number above
 * every version used so far (recorded as building unless it is a scratch
 * version for a dry run, which nobody else will look at). */
static es_status
pick_version(redisContext *rc, const char *name, bool dry_run, char *out, size_t size,
             bool *resumed, es_error *err)
{
    es_rm_state s;

    if (es_rm_state_get(rc, name, &s, err) != ES_OK)
        return err->status;
    *resumed = !dry_run && s.building[0] != '\0';
    if (*resumed) {
        snprintf(out, size, "%s", s.building);
        return ES_OK;
    }
    if (es_rm_version_new(rc, name, out, size, err) != ES_OK)
        return err->status;
    if (dry_run)
        return ES_OK;
    return es_rm_building_set(rc, name, out, err);
}

/* A Redis error answer to a write that is not one that passes is a
 * refusal: the version may hold part of an event, so it must not be
 * resumed (*torn; the code says redis_refused). */
static es_status
refused(es_status st, es_error *err, bool *torn)
{
    if (st == ES_EINTERNAL && !err->transient) {
        char why[sizeof err->message];
        snprintf(why, sizeof why, "%s", err->message);
        es_error_set(err, st, "redis_refused", NULL, "%s", why);
        *torn = true;
    }
    return st;
}

/* Replays the store into version ver up to head, or its upto-th event
 * when upto is not 0; *seq and *pos are the checkpoint on entry and on
 * return.  *torn is set when Redis refused a write (see refused()). */
static es_status
replay(es_store *store, redisContext *rc, const pj_projection *p, const pj_parks *parks,
       const char *ver, es_position head, uint64_t upto, uint64_t *seq, char *pos,
       progress *pg, bool *torn, es_error *err)
{
    int batch = atoi(es_env_str("ES_REBUILD_BATCH", "1000"));
    int page_size = atoi(es_env_str("ES_REBUILD_PAGE", "5000"));
    es_position after = {0, 0};
    size_t pending[DEPTH];      /* replies owed per batch in flight, a ring */
    int inflight = 0, head_i = 0;
    double renewed = now_s();
    es_rm_batch b;
    es_status st = ES_OK;
    bool done = false;

    if (batch < 1)
        batch = 1000;
    if (page_size < 1)
        page_size = 5000;
    if (pos[0] && !es_position_parse(pos, &after))
        return es_error_set(err, ES_EINTERNAL, NULL, NULL,
                            "version %s of %s has a bad checkpoint position \"%s\"", ver, p->name,
                            pos);
    es_rm_batch_init(&b, p->name, ver);
    while (!done && !es_daemon_stopping()) {
        es_page *page = NULL;
        size_t i;

        if ((st = es_store_read_feed(store, after, (size_t)page_size, &page, err)) != ES_OK)
            break;
        if (page->count == 0)
            done = true;
        for (i = 0; i < page->count; i++) {
            const es_event *e = &page->events[i];
            es_feed_event pe;

            if (es_position_cmp(e->position, head) > 0 || (upto != 0 && *seq >= upto)) {
                done = true;
                break;
            }
            if (pj_parks_find(parks, *seq + 1) != NULL) {
                char where[ES_POSITION_TEXT_MAX];
                es_position_format(e->position, where);
                es_rm_batch_event(&b, *seq + 1, where);     /* parked: passed, not applied */
                st = ES_OK;
            } else {
                if ((st = es_feed_event_from_store(e, *seq + 1, &pe, err)) == ES_OK)
                    st = pj_add(&b, p, &pe, err);
                es_feed_event_free(&pe);
            }
            if (st != ES_OK) {
                char where[ES_POSITION_TEXT_MAX], why[sizeof err->message];
                es_position_format(e->position, where);
                snprintf(why, sizeof why, "%s", err->message);
                es_error_set(err, st, NULL, NULL,
                             "cannot apply event %" PRIu64 " (%s %s, position %s): %s", *seq + 1,
                             e->type, e->event_id, where, why);
                break;
            }
            (*seq)++;
            es_position_format(e->position, pos);
            after = e->position;
            if ((int)b.events >= batch) {
                if (inflight == DEPTH) {
                    st = refused(es_rm_write_recv(rc, pending[head_i], err), err, torn);
                    head_i = (head_i + 1) % DEPTH;      /* read, whatever it said */
                    inflight--;
                    if (st != ES_OK)
                        break;
                }
                /* every few seconds the pipeline drains and the lease is
                 * renewed, checking that this rebuild still holds it */
                if (lock_token[0] && now_s() - renewed > 5) {
                    for (; inflight > 0 && st == ES_OK; inflight--, head_i = (head_i + 1) % DEPTH)
                        st = refused(es_rm_write_recv(rc, pending[head_i], err), err, torn);
                    if (st != ES_OK ||
                        (st = es_rm_lock_renew(rc, p->name, lock_token, err)) != ES_OK)
                        break;
                    renewed = now_s();
                }
                if ((st = es_rm_write_send(rc, &b, &pending[(head_i + inflight) % DEPTH], err)) !=
                    ES_OK)
                    break;
                inflight++;
                es_rm_batch_reset(&b, p->name, ver);
            }
        }
        es_page_destroy(page);
        if (st != ES_OK)
            break;
        show(pg, *seq, false);
    }
    if (st == ES_OK && b.events > 0 && inflight == DEPTH) {
        st = refused(es_rm_write_recv(rc, pending[head_i], err), err, torn);
        head_i = (head_i + 1) % DEPTH;
        inflight--;
    }
    if (st == ES_OK && b.events > 0) {
        if ((st = es_rm_write_send(rc, &b, &pending[(head_i + inflight) % DEPTH], err)) == ES_OK)
            inflight++;
    }
    es_rm_batch_free(&b);
    /* Every answer is read, also after a failure, so the connection stays
     * usable; the first failure is the one reported. */
    for (; inflight > 0; inflight--, head_i = (head_i + 1) % DEPTH) {
        es_error e2;
        es_status got;

        if (st == ES_OK)
            got = st = refused(es_rm_write_recv(rc, pending[head_i], err), err, torn);
        else
            got = es_rm_write_recv(rc, pending[head_i], &e2);
        if (got != ES_OK && rc->err)
            break;
    }
    return st;
}

/* The stream's message seq must carry the position the replay gave it. */
static es_status
check_handover(es_jetstream *n, redisContext *rc, const char *name, uint64_t seq, const char *pos,
               es_error *err)
{
    uint64_t last = 0;
    double until = now_s() + 120;
    es_position at;
    char text[ES_POSITION_TEXT_MAX];

    if (seq == 0)
        return ES_OK;
    while (!es_daemon_stopping()) {
        if (es_jetstream_last_seq(n, &last, err) != ES_OK)
            return err->status;
        if (last >= seq)
            break;
        if (lock_token[0] && es_rm_lock_renew(rc, name, lock_token, err) != ES_OK)
            return err->status;
        if (now_s() > until)
            return es_error_set(err, ES_EUNAVAILABLE, "relay_behind", NULL,
                                "the events stream has %" PRIu64 " messages, the store %" PRIu64
                                " events: is es-relay running?", last, seq);
        es_daemon_sleep_ms(200);
    }
    if (es_jetstream_position_at(n, seq, &at, err) != ES_OK)
        return err->status;
    es_position_format(at, text);
    if (strcmp(text, pos) != 0)
        return es_error_set(err, ES_EINTERNAL, "stream_mismatch", NULL,
                            "message %" PRIu64 " of %s is at position %s, but the store's event %"
                            PRIu64 " is at %s: the stream is not a copy of the feed",
                            seq, n->stream, text, seq, pos);
    return ES_OK;
}

/* Follows the stream into version ver until it can take over; *torn as
 * for replay(). */
static es_status
follow_and_switch(es_jetstream *n, redisContext *rc, const pj_projection *p,
                  const pj_parks *parks, const char *ver, uint64_t *seq, bool *switched,
                  bool *torn, es_error *err)
{
    natsSubscription *sub = NULL;
    es_status st;

    *switched = false;
    if ((st = es_jetstream_subscribe(n, *seq + 1, &sub, err)) != ES_OK)
        return st;
    while (!es_daemon_stopping()) {
        es_feed_batch msgs;
        es_rm_batch b;
        es_rm_applied a;
        const pj_park *k;
        size_t i;

        if ((st = es_rm_switch(rc, p->name, ver, switched, err)) != ES_OK || *switched)
            break;
        if ((st = es_rm_lock_renew(rc, p->name, lock_token, err)) != ES_OK)
            break;
        if ((st = es_jetstream_take(sub, 1000, 200, &msgs, err)) != ES_OK)
            break;
        if (msgs.n == 0) {
            /* Idle: the active version must be reachable at all. */
            es_rm_state s;
            uint64_t last;
            if ((st = es_rm_state_get(rc, p->name, &s, err)) != ES_OK ||
                (st = es_jetstream_last_seq(n, &last, err)) != ES_OK) {
                es_feed_batch_free(&msgs);
                break;
            }
            if (s.seq > last) {
                st = es_error_set(err, ES_EINTERNAL, "active_ahead_of_stream", NULL,
                                  "the active version %s of %s is at event %" PRIu64
                                  " but the stream ends at %" PRIu64
                                  ": if es-relay is still republishing what NATS lost, run "
                                  "the rebuild again when it has caught up", s.active, p->name,
                                  s.seq, last);
                es_feed_batch_free(&msgs);
                break;
            }
        }
        es_rm_batch_init(&b, p->name, ver);
        for (i = 0; i < msgs.n && st == ES_OK; i++) {
            if (msgs.ev[i].seq <= *seq)
                continue;
            if ((k = pj_parks_find(parks, msgs.ev[i].seq)) != NULL)
                es_rm_batch_event(&b, msgs.ev[i].seq,
                                  msgs.ev[i].position[0] ? msgs.ev[i].position : k->position);
            else if (msgs.bad[i])
                st = es_error_set(err, ES_EINVALID, "event_invalid", NULL,
                                  "cannot decode message %" PRIu64 ": %s", msgs.ev[i].seq,
                                  msgs.bad[i]);
            else if ((st = pj_add(&b, p, &msgs.ev[i], err)) != ES_OK) {
                char why[sizeof err->message];
                snprintf(why, sizeof why, "%s", err->message);
                es_error_set(err, st, NULL, NULL, "cannot apply event %" PRIu64 " (%s %s): %s",
                             msgs.ev[i].seq, msgs.ev[i].type, msgs.ev[i].event_id, why);
            }
        }
        if (st == ES_OK && b.events > 0 && (st = es_rm_apply(rc, &b, &a, err)) == ES_OK) {
            *seq = a.seq;
            if (a.failed_seq != 0) {
                st = es_error_set(err, ES_EINTERNAL,
                                  a.failed_partial ? "redis_refused" : "redis_error", NULL,
                                  "redis refused event %" PRIu64 ": %s", a.failed_seq,
                                  a.failed_why);
                *torn = a.failed_partial;
            }
            else if (a.gap)
                st = es_error_set(err, ES_EINTERNAL, NULL, NULL,
                                  "the stream skipped past %" PRIu64, a.seq);
        }
        es_rm_batch_free(&b);
        es_feed_batch_free(&msgs);
        if (st != ES_OK)
            break;
    }
    es_jetstream_unsubscribe(n, sub);
    return st;
}

static es_status
drop_retired(redisContext *rc, const char *name, es_error *err)
{
    char **versions;
    size_t n, i;
    es_status st;

    if ((st = es_rm_retired_list(rc, name, &versions, &n, err)) != ES_OK)
        return st;
    for (i = 0; i < n && st == ES_OK; i++) {
        st = es_rm_drop_version(rc, name, versions[i], err);
        if (st == ES_OK)
            es_log(ES_LOG_INFO, "deleted version %s of %s", versions[i], name);
    }
    es_rm_list_free(versions, n);
    return st;
}

/*
 * A rebuild of projection B's new version, step by step:
 *
 *   pick_version() --> replay() --------------> check_handover() --> follow_and_switch()
 *   B: resumed, or     the store's feed from      the stream's         the stream from B's
 *   above all used     B's checkpoint to the      message at B's       checkpoint + 1 until B
 *                      head read at the start,    checkpoint names     reaches the active one;
 *                      pipelined (event k gets    the replayed event   es_rm_switch() in one
 *                      sequence k = its stream                         script
 *                      sequence)                                            |
 *                                                      drop_retired() <-----+
 *                                                      after the grace for reads
 *                                                      pinned to the old version
 *
 * Ctrl-C after any step returns with rep->interrupted; the next run
 * resumes from B's checkpoint.  A refused write (torn) deletes B instead,
 * so that nothing resumes past half an event.  --dry-run stops after
 * replay() and deletes B.
 */
es_status
pj_rebuild(const char *name, bool dry_run, pj_rebuild_report *rep, es_error *err)
{
    return pj_rebuild_with(name, dry_run, NULL, rep, err);
}

es_status
pj_rebuild_with(const char *name, bool dry_run, const pj_rebuild_hooks *hooks,
                pj_rebuild_report *rep, es_error *err)
{
    const pj_projection *p = pj_find(name);
    es_store *store = NULL;
    redisContext *rc = NULL;
    es_jetstream nats = {0};
    progress pg = {hooks == NULL && isatty(2) != 0, now_s(), now_s(), 0, 0, hooks, rep->version};
    es_position head;
    char pos[ES_RM_POSITION_MAX] = "";
    uint64_t seq = 0, replayed_from;
    double t0;
    bool switched = false, locked = false, torn = false;
    char token[64];
    pj_parks parks = PJ_PARKS_INIT;
    size_t nparks;
    es_status st = ES_OK;

    memset(rep, 0, sizeof *rep);
    rep->dry_run = dry_run;
    if (p == NULL)
        return es_error_set(err, ES_ENOTFOUND, "unknown_projection", "name",
                            "there is no projection \"%s\"", name);
    snprintf(token, sizeof token, "%d-%ld", (int)getpid(), (long)time(NULL));
    if (es_store_create(&store, hooks && hooks->conninfo ? hooks->conninfo : es_pg_conninfo(),
                        err) != ES_OK ||
        (rc = es_rm_connect(err)) == NULL ||
        pj_parks_load(store, name, &parks, &nparks, err) != ES_OK)
        goto fail;
    if (!dry_run) {
        if (es_rm_lock_take(rc, name, token, err) != ES_OK)
            goto fail;
        locked = true;
        snprintf(lock_token, sizeof lock_token, "%s", token);
    }
    if (es_jetstream_open(&nats, err) != ES_OK ||
        pick_version(rc, name, dry_run, rep->version, sizeof rep->version, &rep->resumed,
                     err) != ES_OK ||
        es_rm_checkpoint(rc, name, rep->version, &seq, pos, err) != ES_OK ||
        es_store_feed_head(store, &head, err) != ES_OK)
        goto fail;
    replayed_from = pg.from = seq;
    if (es_jetstream_last_seq(&nats, &pg.total, err) != ES_OK)
        pg.total = 0;
    es_log(ES_LOG_INFO, "%s version %s of %s from event %" PRIu64,
           rep->resumed ? "resuming" : "building", rep->version, name, seq);
    t0 = now_s();
    if (replay(store, rc, p, &parks, rep->version, head, 0, &seq, pos, &pg, &torn, err) != ES_OK)
        goto fail;
    rep->seconds = now_s() - t0;
    rep->replayed = seq - replayed_from;
    rep->seq = seq;
    rep->rate = rep->seconds > 0 ? (double)rep->replayed / rep->seconds : 0.0;
    show(&pg, seq, true);
    if (es_daemon_stopping())
        goto interrupted;
    if (dry_run) {
        /* A measurement: how fast the store replays into Redis. */
        if (es_rm_drop_version(rc, name, rep->version, err) != ES_OK)
            goto fail;
        goto done;
    }
    tell(&pg, "handover", seq);
    if (check_handover(&nats, rc, name, seq, pos, err) != ES_OK)
        goto fail;
    tell(&pg, "follow", seq);
    if (follow_and_switch(&nats, rc, p, &parks, rep->version, &seq, &switched, &torn, err) !=
        ES_OK)
        goto fail;
    if (!switched)
        goto interrupted;
    rep->seq = seq;
    es_log(ES_LOG_INFO, "version %s of %s is active at event %" PRIu64, rep->version, name, seq);
    tell(&pg, "switched", seq);
    /* the grace is for readers of the retired version: Ctrl-C does not cut it */
    usleep((useconds_t)atoi(es_env_str("ES_REBUILD_GRACE_MS", "2000")) * 1000);
    if (drop_retired(rc, name, err) != ES_OK)
        goto fail;
    goto done;
interrupted:
    es_log(ES_LOG_INFO,
           "interrupted at event %" PRIu64 " of version %s; run the same command to resume", seq,
           rep->version);
    rep->interrupted = true;
    goto done;
fail:
    st = err->status;
    if (pg.tty)
        fputc('\n', stderr);
    if (rc && rep->version[0] && !dry_run && !switched && torn) {
        /* Redis refused a write: the version may hold part of an event and
         * a checkpoint past it, so nothing may resume from it.  The marker
         * goes first, so a half-finished deletion is never resumed. */
        es_rm_state now;
        es_error e2;
        if (es_rm_state_get(rc, name, &now, &e2) == ES_OK && strcmp(now.active, rep->version) != 0) {
            es_rm_building_clear(rc, name, &e2);
            if (es_rm_drop_version(rc, name, rep->version, &e2) == ES_OK)
                es_log(ES_LOG_INFO, "version %s of %s is deleted; the next rebuild starts afresh",
                       rep->version, name);
        }
    }
done:
    if (locked)
        es_rm_lock_release(rc, name, token);
    lock_token[0] = '\0';
    es_jetstream_close(&nats);
    if (rc)
        redisFree(rc);
    es_store_close(store);
    pj_parks_free(&parks);
    return st;
}

es_status
pj_scratch(es_store *store, redisContext *rc, const pj_projection *p, uint64_t upto, char *ver,
           size_t size, uint64_t *seq, es_error *err)
{
    progress pg = {false, now_s(), now_s() + 1e9, 0, 0, NULL, NULL};   /* silent */
    es_position head = {UINT64_MAX, INT64_MAX};
    char pos[ES_RM_POSITION_MAX] = "";
    bool resumed, torn = false;
    pj_parks parks = PJ_PARKS_INIT;
    size_t nparks;

    *seq = 0;
    if (pj_parks_load(store, p->name, &parks, &nparks, err) != ES_OK)
        return err->status;
    if (pick_version(rc, p->name, true, ver, size, &resumed, err) != ES_OK) {
        pj_parks_free(&parks);
        return err->status;
    }
    if (replay(store, rc, p, &parks, ver, head, upto, seq, pos, &pg, &torn, err) != ES_OK) {
        es_error e2;
        es_rm_drop_version(rc, p->name, ver, &e2);
        pj_parks_free(&parks);
        return err->status;
    }
    pj_parks_free(&parks);
    return ES_OK;
}

/* The park decisions of projection name as [{seq, position, reason, by,
 * at}], or null when the store does not answer. */
static json_t *
parked_json(es_store *store, const char *name)
{
    pj_parks parks = PJ_PARKS_INIT;
    size_t n;
    es_error err;
    json_t *list;

    if (store == NULL || pj_parks_load(store, name, &parks, &n, &err) != ES_OK) {
        pj_parks_free(&parks);
        return json_null();
    }
    list = json_array();
    for (size_t i = 0; i < parks.n; i++) {
        const pj_park *k = &parks.v[i];
        json_array_append_new(list, json_pack("{s:I, s:s?, s:s, s:s, s:s}", "seq",
                                              (json_int_t)k->seq, "position",
                                              k->position[0] ? k->position : NULL, "reason",
                                              k->reason, "by", k->by, "at", k->at));
    }
    pj_parks_free(&parks);
    return list;
}

json_t *
pj_status(uint64_t *stream_last, bool *have_last, es_error *err)
{
    redisContext *rc;
    es_jetstream nats = {0};
    es_store *store = NULL;
    json_t *rows = json_array();
    size_t i;

    *stream_last = 0;
    if ((rc = es_rm_connect(err)) == NULL) {
        json_decref(rows);
        return NULL;
    }
    *have_last = es_jetstream_open(&nats, err) == ES_OK &&
                 es_jetstream_last_seq(&nats, stream_last, err) == ES_OK;
    {
        es_error e2;
        if (es_store_create(&store, es_pg_conninfo(), &e2) != ES_OK)
            store = NULL;       /* the park decisions then show as null */
    }
    for (i = 0; i < pj_projection_count; i++) {
        const char *name = pj_projections[i].name;
        es_rm_state s;
        es_error e2;
        char reason[512], owner[ES_RM_LEASE_MAX];
        bool stopped;

        if (es_rm_state_get(rc, name, &s, err) != ES_OK) {
            json_decref(rows);
            rows = NULL;
            break;
        }
        if (es_rm_stopped_get(rc, name, &stopped, reason, sizeof reason, &e2) != ES_OK)
            stopped = false;    /* a report that cannot be read shows as running */
        if (es_rm_lease_get(rc, name, owner, sizeof owner, &e2) != ES_OK)
            owner[0] = '\0';   /* shown as none */
        json_array_append_new(rows, json_pack(
            "{s:s, s:s?, s:s?, s:I, s:o, s:s, s:s?}", "projection", name,
            "active", s.active[0] ? s.active : NULL, "building", s.building[0] ? s.building : NULL,
            "checkpoint", (json_int_t)s.seq,
            "lag", *have_last ? json_integer((json_int_t)(*stream_last > s.seq ? *stream_last - s.seq : 0))
                              : json_null(),
            "state", stopped ? "stopped" : "running", "reason", stopped ? reason : NULL));
        json_object_set_new(json_array_get(rows, i), "parked", parked_json(store, name));
        /* the es-projector instance applying it: "<epoch> <instance>" */
        json_object_set_new(json_array_get(rows, i), "owner",
                            owner[0] ? json_string(owner) : json_null());
    }
    es_jetstream_close(&nats);
    es_store_close(store);
    redisFree(rc);
    return rows;
}
