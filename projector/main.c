/*
 * es-projector: keeps the read models of projections.c in Redis.  It
 * follows the JetStream events stream and applies each event to every
 * projection; rebuilding one and its status are esctl's (rebuild.c).
 *
 * The live loop pulls the stream in batches it asks for (a pull consumer
 * starting after the lowest checkpoint: it holds one batch however far
 * behind it is), decodes each message once and, per projection, sends the
 * events past its checkpoint as one batch (one Lua call: atomic with the
 * checkpoint; at-or-below is skipped, a gap refused); the calls of all
 * projections go in one pipelined round trip.
 * A projection that cannot apply an event stops there and says why (log,
 * /metrics, /healthz, its stop report in Redis); the others go on.  It is
 * retried when the process restarts, and skipped only when an operator
 * parks that event for that projection (esctl projection park, park.h):
 * the decisions are read from the store at start and each second by a
 * thread of their own (the park reader), a stopped projection whose
 * stopping event is parked resumes at once, and a parked event advances
 * the checkpoint without a write (as a rebuild does, so the two agree).
 * The loop never waits on PostgreSQL: while the store does not answer
 * (a failover, a frozen server) it applies events and renews its leases
 * with the decisions read so far (see park_reader below for why that
 * keeps a parked event skipped).
 *
 * Several instances share the projections through leases (readmodel.h,
 * "the projector's leases"): an instance applies only the projections
 * whose lease it holds, renews them every third of ES_PROJECTOR_LEASE_MS
 * and takes any lease nobody holds, so the projections of an instance
 * that died move to a survivor once its leases run out.  Every batch
 * carries the lease's token and Redis refuses it, in the same script as
 * the writes, unless that token still holds the lease: an instance that
 * stalled past its lease (paused, swapped out, cut off) writes nothing
 * when it wakes, and learns from the refusal that it no longer owns the
 * projection.
 */
#include "projector.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "uuid.h"

#include "daemon.h"
#include "http.h"
#include "log.h"
#include "park.h"
#include "pg.h"
#include "trace.h"

typedef struct proj_state {
    const pj_projection *p;
    uint64_t seq;                       /* checkpoint of the active version */
    char position[ES_RM_POSITION_MAX];
    char version[24];
    bool stopped;
    char reason[400];
    uint64_t stopped_seq;               /* the event it stopped at */
    char stopped_position[ES_RM_POSITION_MAX];
    uint64_t applied;                   /* events applied by this process */
    pj_parks parks;                     /* the operator's park decisions */
    bool owned;                         /* this instance holds the lease */
    char lease[ES_RM_LEASE_MAX];        /* its token while owned */
    char holder[ES_RM_LEASE_MAX];       /* the lease's holder as last seen ("" none) */
    bool free_seen;                     /* the lease was free, left for another */
    uint64_t taken, lost, fenced;       /* leases taken, lost; batches refused */
    uint64_t by_transaction, by_script; /* batches applied each way (es_rm_apply_all) */
    uint64_t handed;                    /* leases handed over to a preferred one */
} proj_state;

/*
 * The park reader: a thread that reads the park decisions from the store
 * once a second, on a PostgreSQL connection of its own, and hands the new
 * ones to the main loop (pub, under mu; the loop copies them into each
 * proj_state's parks, which only it reads).  A read that hangs (up to the
 * connect timeout, ES_PG_CONNECT_TIMEOUT_S, or this thread's answer
 * limit, 5 s: PARK_ANSWER_MS) holds up this thread only: the loop goes on applying events and renewing leases.
 *
 * Why the decisions read so far suffice while the store does not answer:
 * decisions only accrue (the store is append-only), so the set the loop
 * has is every decision recorded before the last complete read began;
 * only those recorded later can be missing, and
 * - a projection stopped at an event (the case parking is for) does not
 *   apply it until a decision for it is read: it waits, stopped, alone;
 *   the other projections and every lease go on;
 * - a decision for an event the projection has not reached yet was
 *   already honoured only if read before the projection got there (the
 *   reads were a second apart); while the store does not answer that
 *   read comes when it answers again.  A store that cannot be read is
 *   mostly one that cannot record a decision either (a frozen server);
 *   in a failover, a decision recorded on the new primary is read as soon
 *   as this thread's connection gives the old one up (5 s at most after
 *   the old one stopped answering).  /readyz ("parks")
 *   and /metrics (es_projector_parks_readable, ..._age_seconds) show how
 *   old the set is.
 * Before the first read ended (read or failed), the loop takes no lease,
 * as before this thread: a starting instance whose first read succeeds
 * applies nothing without the decisions the store had.  One whose first
 * read fails (the store refusing connections) goes on without them, as
 * it did before: a projection stopped at an event stays stopped, but a
 * decision for an event ahead of it is not known until a read succeeds.
 */
typedef struct park_reader {
    pthread_t thread;
    bool started;
    es_store *store;                    /* the thread's own */
    pj_parks mine[16];                  /* the thread's own: decisions read so far */
    pthread_mutex_t mu;                 /* what follows */
    pthread_cond_t cv;
    bool stopping;
    pj_parks pub[16];                   /* handed over to the loop */
    bool tried;                         /* a first read ended (read or failed) */
    bool ok;                            /* the last read got every projection's */
    int64_t read_at;                    /* ms: when the last complete read began
                                           (the process' start before any) */
    uint64_t failures;                  /* reads that failed */
    char error[sizeof ((es_error *)0)->message]; /* why the last one failed */
    atomic_ullong published;            /* bumped whenever pub grew */
} park_reader;

typedef struct live {
    es_jetstream nats;
    redisContext *rc;
    natsSubscription *sub;
    proj_state st[16];
    size_t n;
    int batch;
    int trace_ttl;                      /* ES_TRACE_TTL: seconds; 0: no stage record */
    unsigned char *wrote;               /* [message * 16 + projection]: it wrote
                                           something for that message (trace_ttl > 0) */
    es_rm_batch batches[16];            /* each projection's, reused batch after batch */
    es_rm_trace_stage *traces;          /* stages not yet recorded (record_traces) */
    size_t ntraces;
    uint64_t next;                      /* the stream sequence the consumer gives next */
    bool fresh;                         /* nothing fetched since it was made */
    int64_t idle_since;                 /* ms: since when the stream has had messages
                                           past next and fetches gave none (0: not) */
    uint64_t missing;                   /* the stream lacks this message (0: no) */
    uint64_t stream_last;
    es_feed_batch ahead;                /* the batch after this one, fetched while Redis
                                           applied this one (fetch_ahead) */
    uint64_t ahead_jump;                /* its jump (es_jetstream_fetch) */
    bool ahead_ok;                      /* ahead holds a batch of sub's, not yet applied */
    bool may_fetch_ahead;               /* this batch was full and without a jump */
    bool transactions;                  /* ES_PROJECTOR_APPLY=transaction */
    atomic_bool redis_ok;               /* connected, and the last ping answered */
    park_reader parks;                  /* reads the park decisions (its thread) */
    unsigned long long parks_seen;      /* parks.published as last copied */
    time_t parks_checked;
    char instance[128];                 /* this instance's name in its leases */
    long lease_ms;                      /* ES_PROJECTOR_LEASE_MS */
    int64_t lease_due;                  /* when the leases are next renewed (ms) */
    pthread_mutex_t mu;                 /* st[] and stream_last, for /metrics */
} live;

static live L;

static bool ready(void *ctx, json_t **body);
static int64_t now_us(void);

/* The trace id of e's metadata (events/trace.h), or NULL. */
static const char *
trace_of(const es_feed_event *e)
{
    const char *tid = e->trace_id;

    return tid != NULL && es_trace_id_valid(tid) ? tid : NULL;
}
static void metrics(void *ctx, es_buf *out);

static es_daemon projector_daemon = {
    .name = "es-projector", .metrics_prefix = "es_projector", .ready = ready,
    .metrics = metrics, .ctx = &L, .health_detail = true,
};

/* ---- the live projector ----------------------------------------------- */

static void
stop_projection(live *l, proj_state *ps, const es_feed_event *e, const char *why)
{
    es_error err;           /* the log says it stopped; Redis' copy is best effort */

    char where[ES_POSITION_TEXT_MAX] = "";
    es_position at;

    /* a message that could not be decoded has no position of its own:
     * the stream's copy of it says where it is (its header) */
    if (e->position[0] != '\0')
        snprintf(where, sizeof where, "%s", e->position);
    else if (es_jetstream_position_at(&l->nats, e->seq, &at, &err) == ES_OK)
        es_position_format(at, where);
    pthread_mutex_lock(&l->mu);
    ps->stopped = true;
    ps->stopped_seq = e->seq;
    snprintf(ps->stopped_position, sizeof ps->stopped_position, "%s", where);
    snprintf(ps->reason, sizeof ps->reason, "event %" PRIu64 " (%s %s): %s", e->seq,
             e->type ? e->type : "?", e->event_id ? e->event_id : "?", why);
    pthread_mutex_unlock(&l->mu);
    es_log_trace(ES_LOG_ERROR, trace_of(e), "projection %s stopped at %s", ps->p->name,
                 ps->reason);
    es_rm_stopped_set(l->rc, ps->p->name, e->seq, where, ps->reason, &err);
}

static int64_t now_ms(void);

/* The park reader's answer limit: 5 s, or ES_PG_ANSWER_TIMEOUT_MS when
 * that is shorter (0 there means none: then 5 s too). */
#define PARK_ANSWER_MS 5000
static int
park_answer_ms(void)
{
    int configured = es_pg_timeouts_get()->answer_ms;

    return configured > 0 && configured < PARK_ANSWER_MS ? configured : PARK_ANSWER_MS;
}

/* The park reader's thread (park_reader above): a read each second until
 * told to stop. */
static void *
park_reader_run(void *arg)
{
    live *l = arg;
    park_reader *r = &l->parks;

    for (;;) {
        int64_t began = now_ms();
        struct timespec until;
        es_error err;
        bool ok = true, was;
        size_t i, added;

        memset(&err, 0, sizeof err);
        if (r->store == NULL && es_store_create(&r->store, es_pg_conninfo(), &err) != ES_OK) {
            r->store = NULL;
            ok = false;
        } else if (r->store != NULL) {
            /* a read of a few pages: a server that has not answered it in
             * PARK_ANSWER_MS is given up on (a new connection next pass),
             * so a failover's new primary is read soon, and a stop waits
             * for no longer */
            es_store_set_answer_timeout(r->store, park_answer_ms());
        }
        for (i = 0; ok && i < l->n; i++) {
            es_status st;
            bool behind;

            /* a load that failed part way keeps the pages it read: they
             * are published too, and so is anything an earlier pass read
             * but could not publish (published is what pub lacks, not
             * what this load added) */
            if (pj_parks_load(r->store, l->st[i].p->name, &r->mine[i], &added, &err) != ES_OK)
                ok = false;
            pthread_mutex_lock(&r->mu);
            behind = r->mine[i].n > r->pub[i].n;
            st = behind ? pj_parks_sync(&r->pub[i], &r->mine[i], &added, ok ? &err : &(es_error){0})
                        : ES_OK;
            pthread_mutex_unlock(&r->mu);
            if (st != ES_OK)
                ok = false;
            if (behind && st == ES_OK)
                atomic_fetch_add(&r->published, 1);
        }
        pthread_mutex_lock(&r->mu);
        was = r->ok || !r->tried;
        r->tried = true;
        r->ok = ok;
        if (ok) {
            r->read_at = began;
        } else {
            r->failures++;
            snprintf(r->error, sizeof r->error, "%s", err.message);
        }
        pthread_mutex_unlock(&r->mu);
        if (!ok)
            es_log(ES_LOG_WARNING, "park decisions cannot be read (the projections go on with "
                   "those read before): %s", err.message);
        else if (!was)
            es_log(ES_LOG_INFO, "park decisions can be read again");
        clock_gettime(CLOCK_MONOTONIC, &until);     /* the condition's clock */
        until.tv_sec += 1;
        pthread_mutex_lock(&r->mu);
        while (!r->stopping && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0)
            ;
        if (r->stopping) {
            pthread_mutex_unlock(&r->mu);
            return NULL;
        }
        pthread_mutex_unlock(&r->mu);
    }
}

static es_status
park_reader_start(live *l, es_error *err)
{
    park_reader *r = &l->parks;

    if (pthread_create(&r->thread, NULL, park_reader_run, l) != 0)
        return es_error_set(err, ES_EINTERNAL, NULL, NULL,
                            "could not start the park decisions' thread");
    r->started = true;
    return ES_OK;
}

/* Stops the thread (after the read under way, which its timeouts
 * bound) and frees what it read. */
static void
park_reader_stop(live *l)
{
    park_reader *r = &l->parks;
    size_t i;

    if (r->started) {
        pthread_mutex_lock(&r->mu);
        r->stopping = true;
        pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
        r->started = false;
    }
    es_store_close(r->store);
    r->store = NULL;
    for (i = 0; i < sizeof r->mine / sizeof r->mine[0]; i++) {
        pj_parks_free(&r->mine[i]);
        pj_parks_free(&r->pub[i]);
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
}

/*
 * Whether the decisions the loop has are current: the last read got them
 * all and began less than PARKS_STALE_MS ago (a read that hangs makes
 * them stale before its timeout ends it).  *age_ms: since that read
 * began; why (size bytes) says what is wrong when they are not.
 */
#define PARKS_STALE_MS 3000

static bool
parks_current(live *l, int64_t *age_ms, char *why, size_t size)
{
    park_reader *r = &l->parks;
    bool ok;

    pthread_mutex_lock(&r->mu);
    *age_ms = now_ms() - r->read_at;
    ok = r->tried && r->ok && *age_ms < PARKS_STALE_MS;
    if (ok)
        why[0] = '\0';
    else if (!r->tried)
        snprintf(why, size, "not read yet");
    else if (!r->ok)
        snprintf(why, size, "%s", r->error);
    else
        snprintf(why, size, "no complete read for %lld ms: the store does not answer",
                 (long long)*age_ms);
    pthread_mutex_unlock(&r->mu);
    return ok;
}

/* Whether the park reader's first read ended (read or failed). */
static bool
parks_tried(live *l)
{
    bool tried;

    pthread_mutex_lock(&l->parks.mu);
    tried = l->parks.tried;
    pthread_mutex_unlock(&l->parks.mu);
    return tried;
}

/*
 * Takes the park decisions the reader thread handed over (never waits on
 * the store).  A stopped projection whose stopping event is now parked
 * runs again: its report goes, and *resubscribe tells the caller to read
 * the stream again from the lowest checkpoint.
 */
static void
take_parks(live *l, bool *resubscribe)
{
    unsigned long long gen = atomic_load(&l->parks.published);
    bool fresh = gen != l->parks_seen, all = true;
    size_t i, added;

    if (!fresh && time(NULL) == l->parks_checked)
        return;
    l->parks_checked = time(NULL);
    for (i = 0; i < l->n; i++) {
        proj_state *ps = &l->st[i];
        const pj_park *k;

        if (fresh) {
            es_error err;
            es_status st;

            /* l->mu before parks.mu, as /metrics takes them */
            pthread_mutex_lock(&l->mu);
            pthread_mutex_lock(&l->parks.mu);
            st = pj_parks_sync(&ps->parks, &l->parks.pub[i], &added, &err);
            pthread_mutex_unlock(&l->parks.mu);
            pthread_mutex_unlock(&l->mu);
            if (st != ES_OK) {
                es_log(ES_LOG_WARNING, "park decisions of %s: %s", ps->p->name, err.message);
                all = false;    /* tried again next turn */
            } else if (added > 0) {
                es_log(ES_LOG_INFO, "projection %s: %zu park decision%s read", ps->p->name,
                       added, added == 1 ? "" : "s");
            }
        }
        if (ps->stopped && ps->stopped_seq != 0 &&
            (k = pj_parks_find(&ps->parks, ps->stopped_seq)) != NULL) {
            es_error e2;
            es_log(ES_LOG_INFO, "projection %s resumes: event %" PRIu64 " was parked by %s: %s",
                   ps->p->name, k->seq, k->by, k->reason);
            pthread_mutex_lock(&l->mu);
            ps->stopped = false;
            ps->reason[0] = '\0';
            ps->stopped_seq = 0;
            ps->stopped_position[0] = '\0';
            pthread_mutex_unlock(&l->mu);
            if (l->rc != NULL)
                es_rm_stopped_clear(l->rc, ps->p->name, &e2);
            *resubscribe = true;
        }
    }
    if (all)
        l->parks_seen = gen;
}

/* Reads every projection's checkpoint; puts back the stop reports of the
 * projections this instance owns. */
static es_status
load_states(live *l, es_error *err)
{
    size_t i;

    for (i = 0; i < l->n; i++) {
        es_rm_state s;
        es_error e2;            /* stop reports are best effort, as the log has them */
        proj_state *ps = &l->st[i];

        if (es_rm_state_get(l->rc, ps->p->name, &s, err) != ES_OK)
            return err->status;
        pthread_mutex_lock(&l->mu);
        ps->seq = s.seq;
        snprintf(ps->position, sizeof ps->position, "%s", s.position);
        snprintf(ps->version, sizeof ps->version, "%s", s.active);
        pthread_mutex_unlock(&l->mu);
        /* a restart is the operator's way to retry: the old report goes
         * when an instance takes the lease (hold_leases), not on a mere
         * reconnect */
        if (ps->owned && ps->stopped)
            es_rm_stopped_set(l->rc, ps->p->name, 0, NULL, ps->reason, &e2);
    }
    return ES_OK;
}

static int64_t
now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* This instance no longer owns ps (its lease went to holder, or ran out). */
static void
lease_lost(live *l, proj_state *ps, const char *holder, bool fenced)
{
    pthread_mutex_lock(&l->mu);
    if (ps->owned)
        ps->lost++;
    if (fenced)
        ps->fenced++;
    ps->owned = false;
    ps->lease[0] = '\0';
    snprintf(ps->holder, sizeof ps->holder, "%s", holder);
    /* its owner reports whether it is stopped */
    ps->stopped = false;
    ps->reason[0] = '\0';
    ps->stopped_seq = 0;
    ps->stopped_position[0] = '\0';
    pthread_mutex_unlock(&l->mu);
}

/*
 * Renews the leases this instance holds and takes those nobody holds.  A
 * lease taken means another owner may have moved the checkpoint: it is
 * read again, the old stop report goes (a new owner retries the event,
 * as a restart does) and *resubscribe tells the caller to read the stream
 * again from the lowest checkpoint.  False when Redis failed.
 */
static bool
hold_leases(live *l, bool *resubscribe)
{
    es_rm_lease_ask asks[sizeof l->st / sizeof l->st[0]];
    es_error err;
    size_t i;

    /* all at once: this thread applies the stream, and every round trip
     * here delays the events that arrive meanwhile */
    for (i = 0; i < l->n; i++) {
        memset(&asks[i], 0, sizeof asks[i]);
        asks[i].name = l->st[i].p->name;
        asks[i].waited = l->st[i].free_seen;
        snprintf(asks[i].token, sizeof asks[i].token, "%s", l->st[i].lease);
    }
    if (es_rm_leases_hold(l->rc, l->instance, l->lease_ms, asks, l->n, &err) != ES_OK) {
        es_log(ES_LOG_WARNING, "projections' leases: %s", err.message);
        return false;
    }
    for (i = 0; i < l->n; i++) {
        proj_state *ps = &l->st[i];
        const char *token = asks[i].token, *holder = asks[i].holder;
        es_rm_lease_outcome oc = asks[i].outcome;
        const es_rm_state s = asks[i].state;
        bool was = ps->owned;

        ps->free_seen = oc == ES_RM_LEASE_FREE;
        if (oc == ES_RM_LEASE_HANDED_OVER) {
            es_log(ES_LOG_INFO, "projection %s: lease handed over to %s (preferred owner)",
                   ps->p->name, holder);
            pthread_mutex_lock(&l->mu);
            ps->handed++;
            ps->owned = false;  /* not deposed: lease_lost would count it */
            pthread_mutex_unlock(&l->mu);
            lease_lost(l, ps, "", false);
        } else if (oc == ES_RM_LEASE_OTHER || oc == ES_RM_LEASE_FREE) {
            if (was)
                es_log(ES_LOG_WARNING,
                       "projection %s: lease lost (now %s%s); this instance no longer writes it",
                       ps->p->name, oc == ES_RM_LEASE_FREE ? "free, preferred: " : "held by ",
                       holder);
            lease_lost(l, ps, oc == ES_RM_LEASE_FREE ? "" : holder, false);
        }
        pthread_mutex_lock(&l->mu);
        if (oc == ES_RM_LEASE_TAKEN) {
            ps->owned = true;
            ps->taken++;
            snprintf(ps->lease, sizeof ps->lease, "%s", token);
            ps->stopped = false;
            ps->reason[0] = '\0';
            ps->stopped_seq = 0;
            ps->stopped_position[0] = '\0';
        }
        snprintf(ps->holder, sizeof ps->holder, "%s", holder);
        ps->seq = s.seq;
        snprintf(ps->position, sizeof ps->position, "%s", s.position);
        snprintf(ps->version, sizeof ps->version, "%s", s.active);
        pthread_mutex_unlock(&l->mu);
        if (oc == ES_RM_LEASE_TAKEN) {
            es_error e2;        /* the report is best effort, as the log has it */

            es_log(ES_LOG_INFO, "projection %s: lease taken (token %s), from checkpoint %" PRIu64,
                   ps->p->name, token, s.seq);
            es_rm_stopped_clear(l->rc, ps->p->name, &e2);
            *resubscribe = true;
        }
    }
    return true;
}

/*
 * Builds ps's batch of msgs into b: the events past its checkpoint, up to
 * one it cannot apply (*stop_at, with *why: it stops there once the
 * events before it are in).  Marks in l->wrote which events it writes.
 */
static void
build_one(live *l, proj_state *ps, const es_feed_batch *msgs, es_rm_batch *b,
          const es_feed_event **stop_at, const char **why, es_error *err)
{
    const pj_park *k;
    size_t i;

    *stop_at = NULL;
    *why = NULL;
    es_rm_batch_reset(b, ps->p->name, NULL);
    for (i = 0; i < msgs->n; i++) {
        const es_feed_event *e = &msgs->ev[i];

        if (e->seq <= ps->seq)
            continue;
        if ((k = pj_parks_find(&ps->parks, e->seq)) != NULL) {
            /* parked: the checkpoint passes it, nothing is written */
            es_rm_batch_event(b, e->seq, e->position[0] ? e->position
                                         : k->position[0] ? k->position : ps->position);
            continue;
        }
        if (msgs->bad[i]) {
            *stop_at = e, *why = msgs->bad[i];
            break;
        }
        if (pj_add(b, ps->p, e, err) != ES_OK) {
            *stop_at = e, *why = err->message;
            break;
        }
        if (l->wrote != NULL)
            l->wrote[i * 16 + (size_t)(ps - l->st)] = es_rm_batch_event_cmds(b) > 0;
    }
}

/* What became of ps's batch j (sent when it had events) built from msgs:
 * the state moves, the projection stops or loses its lease.  False when
 * Redis failed or refused a gap (then the caller resubscribes). */
static bool
finish_one(live *l, proj_state *ps, const es_feed_batch *msgs, const es_rm_apply_job *j,
           const es_feed_event *stop_at, const char *why)
{
    const es_rm_applied *a = &j->out;
    size_t i;
    bool ok = true;

    if (j->batch->events > 0) {
        if (j->status != ES_OK) {
            const es_error *err = &j->err;

            if (err->status == ES_ECONFLICT && strcmp(err->code, "lease_lost") == 0) {
                /* fenced: another instance owns it now; nothing was written */
                es_log(ES_LOG_WARNING, "%s; this instance no longer writes it", err->message);
                lease_lost(l, ps, "", true);
                return true;
            }
            es_log(ES_LOG_WARNING, "projection %s: %s", ps->p->name, err->message);
            if (err->status == ES_EINTERNAL && !err->transient) {
                /* Redis answered, and refused the batch: trying the same
                 * again would not help, so the projection stops there. */
                for (i = 0; i < msgs->n; i++)
                    if (msgs->ev[i].seq == ps->seq + 1) {
                        stop_projection(l, ps, &msgs->ev[i], err->message);
                        break;
                    }
                return true;
            }
            return false;
        }
        pthread_mutex_lock(&l->mu);
        if (j->transaction)
            ps->by_transaction++;
        else if (j->batch != NULL && j->batch->events > 0)
            ps->by_script++;
        ps->applied += a->applied;
        ps->seq = a->seq;
        snprintf(ps->position, sizeof ps->position, "%s", a->position);
        snprintf(ps->version, sizeof ps->version, "%s", a->version);
        pthread_mutex_unlock(&l->mu);
        if (a->failed_seq != 0 && !a->failed_partial && !a->failed_passed &&
            a->failed_transient) {
            /* nothing of that event was written and the error passes: the
             * events before it are in, the rest is tried again later */
            es_log(ES_LOG_WARNING, "projection %s: event %" PRIu64 ": %s; retrying", ps->p->name,
                   a->failed_seq, a->failed_why);
            return false;
        }
        if (a->failed_seq != 0) {
            char refused[320];
            snprintf(refused, sizeof refused,
                     a->failed_passed ? "redis refused it (%s) while the batch's other events "
                                        "were applied and the checkpoint passed it: fix the "
                                        "cause, then rebuild the projection"
                     : a->failed_partial ? "redis refused it (%s) after applying part of it: "
                                           "fix the cause, then rebuild the projection"
                                         : "redis refused it (%s); nothing of it was applied: "
                                           "fix the cause and restart the projector",
                     a->failed_why);
            for (i = 0; i < msgs->n; i++)
                if (msgs->ev[i].seq == a->failed_seq) {
                    stop_projection(l, ps, &msgs->ev[i], refused);
                    break;
                }
            return true;
        }
        if (a->gap) {
            es_log(ES_LOG_WARNING,
                   "projection %s: the stream skipped past checkpoint %" PRIu64 "; resubscribing",
                   ps->p->name, a->seq);
            ok = false;
        }
    }
    if (ok && stop_at && stop_at->seq == ps->seq + 1) {
        /* everything before it is applied: stop exactly there */
        char why_copy[320];
        snprintf(why_copy, sizeof why_copy, "%s", why);
        stop_projection(l, ps, stop_at, why_copy);
    }
    return ok;
}

/* Leaves the consumer, and the batch fetched ahead from it. */
static void
drop_sub(live *l)
{
    if (l->sub != NULL)
        es_jetstream_unsubscribe(&l->nats, l->sub);
    l->sub = NULL;
    if (l->ahead_ok)
        es_feed_batch_free(&l->ahead);
    l->ahead_ok = false;
}

/*
 * While Redis applies a full batch, the next one is fetched and decoded
 * (without waiting: only what the server has now), so that NATS, the
 * decoding and Redis work at once rather than in turn.  It is the batch
 * the next turn would have fetched first, from the same consumer and the
 * same next sequence; it is dropped with the consumer (drop_sub).  A
 * failure here is left for that next fetch to meet and report.
 */
static void
fetch_ahead(void *arg)
{
    live *l = arg;
    es_error err;

    if (!l->may_fetch_ahead || l->sub == NULL || l->ahead_ok)
        return;
    if (es_jetstream_fetch(l->sub, l->next, l->batch, 0, &l->ahead, &l->ahead_jump, &err) !=
        ES_OK)
        return;
    if (l->ahead.n == 0 && l->ahead_jump == 0) {
        es_feed_batch_free(&l->ahead);
        return;
    }
    l->ahead_ok = true;
}

/*
 * Applies msgs to every projection this instance owns and runs: one
 * batch each, all sent in one pipelined round trip together with the
 * trace stages of the previous batch (l->traces).  *at: when the answers
 * came.  False when Redis failed or refused a gap (start again from the
 * checkpoints).
 */
static bool
apply_all(live *l, const es_feed_batch *msgs, int64_t *at)
{
    es_rm_apply_job jobs[sizeof l->st / sizeof l->st[0]];
    const es_feed_event *stop_at[sizeof l->st / sizeof l->st[0]];
    const char *why[sizeof l->st / sizeof l->st[0]];
    char whys[sizeof l->st / sizeof l->st[0]][320];
    size_t idx[sizeof l->st / sizeof l->st[0]];
    size_t i, n = 0, k;
    es_error err, terr;
    bool ok = true;

    for (i = 0; i < l->n; i++) {
        proj_state *ps = &l->st[i];

        if (!ps->owned || ps->stopped)
            continue;
        build_one(l, ps, msgs, &l->batches[i], &stop_at[i], &why[i], &err);
        if (why[i] != NULL) {
            /* err is reused by the next projection: keep the reason */
            snprintf(whys[i], sizeof whys[i], "%s", why[i]);
            why[i] = whys[i];
        }
        if (l->batches[i].events > 0) {
            memset(&jobs[n], 0, sizeof jobs[n]);
            jobs[n].batch = &l->batches[i];
            jobs[n].lease = ps->lease;
            if (l->transactions) {
                /* what this instance last saw: the transaction's way when
                 * Redis still has just that (es_rm_apply_all) */
                jobs[n].version = ps->version;
                jobs[n].seq = ps->seq;
            }
            idx[n++] = i;
        }
    }
    if (n > 0 || l->ntraces > 0) {
        memset(&terr, 0, sizeof terr);
        es_rm_apply_all(l->rc, jobs, n, l->traces, l->ntraces, l->trace_ttl, &terr,
                        fetch_ahead, l);
        if (l->ntraces > 0 && terr.status != ES_OK)
            es_log(ES_LOG_WARNING, "could not record trace stages: %s", terr.message);
        l->ntraces = 0;
    }
    *at = now_us();
    for (i = 0, k = 0; i < l->n; i++) {
        proj_state *ps = &l->st[i];
        es_rm_apply_job none;

        if (!ps->owned || ps->stopped)
            continue;
        if (k < n && idx[k] == i) {
            ok &= finish_one(l, ps, msgs, &jobs[k], stop_at[i], why[i]);
            k++;
        } else {
            memset(&none, 0, sizeof none);
            none.batch = &l->batches[i];
            ok &= finish_one(l, ps, msgs, &none, stop_at[i], why[i]);
        }
    }
    return ok;
}

static int64_t
now_us(void)
{
    struct timespec t;

    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/*
 * Collects in l->traces, for `esctl trace`, when each projection applied
 * each traced event of msgs that it wrote something for: those past
 * before[p] up to its new checkpoint, at at (rm:trace:<id>,
 * events/readmodel.h).  They go with the next batch's round trip
 * (apply_all), or at once by flush_traces when no next batch is near.
 */
static void
record_traces(live *l, const es_feed_batch *msgs, const uint64_t *before, int64_t at)
{
    es_rm_trace_stage *s = l->traces;
    size_t n = 0, i, p;

    for (i = 0; i < msgs->n; i++) {
        const es_feed_event *e = &msgs->ev[i];
        const char *tid = msgs->bad[i] ? NULL : trace_of(e);
        size_t first = n;

        for (p = 0; tid != NULL && p < l->n; p++)
            if (e->seq > before[p] && e->seq <= l->st[p].seq && l->wrote[i * 16 + p]) {
                memcpy(s[n].trace_id, tid, sizeof s[n].trace_id);
                s[n].seq = e->seq;
                snprintf(s[n].projection, sizeof s[n].projection, "%s", l->st[p].p->name);
                s[n].at_us = at;
                n++;
            }
        if (tid != NULL && n == first) {
            /* no projection wrote it: still an event of the trace */
            memcpy(s[n].trace_id, tid, sizeof s[n].trace_id);
            s[n].seq = e->seq;
            s[n].projection[0] = '\0';
            s[n].at_us = 0;
            n++;
        }
    }
    l->ntraces = n;
}

/* Records the trace stages collected (a round trip of their own); a
 * failure is logged and costs nothing else. */
static void
flush_traces(live *l)
{
    es_error err;

    if (l->ntraces > 0 && l->rc != NULL &&
        es_rm_trace_put(l->rc, l->traces, l->ntraces, l->trace_ttl, &err) != ES_OK)
        es_log(ES_LOG_WARNING, "could not record trace stages: %s", err.message);
    l->ntraces = 0;
}

static void
run_live(live *l)
{
    es_error err;
    uint64_t from = 0;
    time_t checked = 0;

    /* no lease before the decisions the store has are known (or it
     * failed to give them, as before the reader had a thread) */
    while (!es_daemon_stopping() && !parks_tried(l))
        es_daemon_sleep_ms(20);
    while (!es_daemon_stopping()) {
        es_feed_batch msgs;
        size_t i;
        bool ok = true, any = false, resubscribe = false;
        uint64_t before[sizeof l->st / sizeof l->st[0]];
        int64_t at = 0;
        uint64_t jump = 0;

        take_parks(l, &resubscribe);

        if (l->rc == NULL) {
            if ((l->rc = es_rm_connect(&err)) == NULL || load_states(l, &err) != ES_OK) {
                es_log(ES_LOG_WARNING, "%s", err.message);
                if (l->rc)
                    redisFree(l->rc);
                l->rc = NULL;
                atomic_store(&l->redis_ok, false);
                es_daemon_sleep_ms(1000);
                continue;
            }
            atomic_store(&l->redis_ok, true);
            l->lease_due = 0;
            drop_sub(l);
        }
        if (now_ms() >= l->lease_due) {
            if (!hold_leases(l, &resubscribe)) {
                redisFree(l->rc);
                l->rc = NULL;
                atomic_store(&l->redis_ok, false);
                es_daemon_sleep_ms(500);
                continue;
            }
            l->lease_due = now_ms() + l->lease_ms / 3;
        }
        for (i = 0, any = false; i < l->n; i++)
            any |= l->st[i].owned && !l->st[i].stopped;
        if (resubscribe || !any)
            drop_sub(l);
        if (l->sub == NULL) {
            from = UINT64_MAX;
            for (i = 0; i < l->n; i++)
                if (l->st[i].owned && !l->st[i].stopped && l->st[i].seq + 1 < from)
                    from = l->st[i].seq + 1;
            if (from == UINT64_MAX) {
                /* nothing to apply: every projection is another
                 * instance's, or stopped; the leases are still renewed */
                es_daemon_sleep_ms(200);
                continue;
            }
            if (es_jetstream_pull(&l->nats, from, &l->sub, &err) != ES_OK) {
                es_log(ES_LOG_WARNING, "%s", err.message);
                es_daemon_sleep_ms(1000);
                continue;
            }
            l->next = from;
            l->fresh = true;
            l->idle_since = 0;
        }
        if (time(NULL) != checked) {
            uint64_t last;
            redisReply *pong = redisCommand(l->rc, "PING");
            bool alive = pong != NULL && pong->type != REDIS_REPLY_ERROR;

            freeReplyObject(pong);
            checked = time(NULL);
            if (!alive) {
                /* Redis went while the feed was quiet: say so in /readyz
                 * and connect again. */
                es_log(ES_LOG_WARNING, "redis does not answer; connecting again");
                redisFree(l->rc);
                l->rc = NULL;
                atomic_store(&l->redis_ok, false);
                continue;
            }
            if (es_jetstream_last_seq(&l->nats, &last, &err) == ES_OK) {
                pthread_mutex_lock(&l->mu);
                l->stream_last = last;
                pthread_mutex_unlock(&l->mu);
            }
        }
        if (l->ahead_ok) {
            msgs = l->ahead;
            jump = l->ahead_jump;
            l->ahead_ok = false;
        } else if (es_jetstream_fetch(l->sub, l->next, l->batch, 200, &msgs, &jump, &err) !=
                   ES_OK) {
            es_log(ES_LOG_WARNING, "%s", err.message);
            drop_sub(l);
            es_daemon_sleep_ms(200);
            continue;
        }
        if (jump != 0 && msgs.n == 0 && l->fresh) {
            /* A consumer made to start at next gave a later message
             * first: the stream lacks message next, so it is not a copy
             * of the feed (the relay makes such a stream anew and
             * republishes it).  Nothing is applied past the hole; /readyz
             * says so until the stream has it. */
            if (l->missing != l->next)
                es_log(ES_LOG_ERROR, "the stream %s lacks message %" PRIu64 " (the next is %"
                       PRIu64 "): it is not a copy of the feed; waiting for the relay to "
                       "republish it", l->nats.stream, l->next, jump);
            pthread_mutex_lock(&l->mu);
            l->missing = l->next;
            pthread_mutex_unlock(&l->mu);
            es_feed_batch_free(&msgs);
            drop_sub(l);
            es_daemon_sleep_ms(1000);
            continue;
        }
        if (msgs.n == 0 && jump == 0) {
            uint64_t last;

            pthread_mutex_lock(&l->mu);
            last = l->stream_last;
            pthread_mutex_unlock(&l->mu);
            if (last < l->next) {
                l->idle_since = 0;          /* caught up: nothing to give */
            } else if (l->idle_since == 0) {
                l->idle_since = now_ms();
            } else if (now_ms() - l->idle_since > 3000) {
                /* The stream has messages past next, and the consumer
                 * gives none: it is gone (an ephemeral pull consumer
                 * lives in the server's memory, and a restarted server
                 * forgets it, while a fetch from it only times out).
                 * A new one from next. */
                es_log(ES_LOG_WARNING, "the stream %s has messages up to %" PRIu64 " but its "
                       "consumer gave none from %" PRIu64 " for 3 s; making a new one",
                       l->nats.stream, last, l->next);
                drop_sub(l);
                l->idle_since = 0;
                es_feed_batch_free(&msgs);
                continue;
            }
        }
        if (msgs.n > 0) {
            l->fresh = false;
            l->idle_since = 0;
            l->next = msgs.ev[msgs.n - 1].seq + 1;
            if (l->missing != 0) {
                es_log(ES_LOG_INFO, "the stream %s has message %" PRIu64 " again",
                       l->nats.stream, l->missing);
                pthread_mutex_lock(&l->mu);
                l->missing = 0;
                pthread_mutex_unlock(&l->mu);
            }
        }
        for (i = 0; i < l->n; i++)
            before[i] = l->st[i].seq;
        if (l->wrote != NULL)
            memset(l->wrote, 0, msgs.n * 16);
        l->may_fetch_ahead = jump == 0 && (int)msgs.n == l->batch;
        if (msgs.n > 0 || l->ntraces > 0)
            ok = apply_all(l, &msgs, &at);
        if (ok && l->trace_ttl > 0 && msgs.n > 0) {
            record_traces(l, &msgs, before, at);
            /* a full batch: more follow at once, and these stages go
             * with the next one's round trip; else now */
            if ((int)msgs.n < l->batch)
                flush_traces(l);
        }
        if (jump != 0 && ok) {
            /* the consumer skipped (messages lost on the way): read
             * again from the checkpoints */
            es_log(ES_LOG_WARNING, "the stream gave message %" PRIu64 " where %" PRIu64
                   " was expected; reading again from the checkpoints", jump, l->next);
            drop_sub(l);
        }
        es_feed_batch_free(&msgs);
        if (!ok) {
            /* Redis failed or a gap: start again from the checkpoints. */
            redisFree(l->rc);
            l->rc = NULL;
            atomic_store(&l->redis_ok, false);
            es_daemon_sleep_ms(500);
        }
    }
}

/*
 * /healthz and /readyz answer the same body: /healthz says the process is
 * alive (and what is stopped or unreachable); /readyz is 503 unless every
 * projection follows the stream with NATS and Redis both reachable.
 */
static bool
ready(void *ctx, json_t **body)
{
    live *l = ctx;
    json_t *list = json_array();
    bool stopped = false, nats, redis, ok, parks_ok;
    uint64_t missing;
    int64_t parks_age;
    char parks_error[sizeof l->parks.error + 40];
    size_t i;

    pthread_mutex_lock(&l->mu);
    for (i = 0; i < l->n; i++) {
        proj_state *ps = &l->st[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s}", "name", ps->p->name, "state",
                              ps->stopped ? "stopped" : "running", "version", ps->version,
                              "checkpoint", (json_int_t)ps->seq, "position", ps->position);
        if (ps->stopped) {
            json_object_set_new(o, "reason", json_string(ps->reason));
            json_object_set_new(o, "stopped_at", json_integer((json_int_t)ps->stopped_seq));
            json_object_set_new(o, "stopped_position", json_string(ps->stopped_position));
        }
        json_object_set_new(o, "parked", json_integer((json_int_t)ps->parks.n));
        json_object_set_new(o, "lease", json_string(ps->owned ? "owned" : "standby"));
        json_object_set_new(o, "lease_holder", json_string(ps->holder));
        json_object_set_new(o, "leases_taken", json_integer((json_int_t)ps->taken));
        json_object_set_new(o, "leases_lost", json_integer((json_int_t)ps->lost));
        json_object_set_new(o, "leases_handed_over", json_integer((json_int_t)ps->handed));
        json_object_set_new(o, "fenced_batches", json_integer((json_int_t)ps->fenced));
        stopped |= ps->stopped;
        json_array_append_new(list, o);
    }
    missing = l->missing;
    pthread_mutex_unlock(&l->mu);
    parks_ok = parks_current(l, &parks_age, parks_error, sizeof parks_error);
    nats = es_nats_up(l->nats.nc);
    redis = atomic_load(&l->redis_ok);
    ok = !stopped && missing == 0 && nats && redis;
    *body = json_pack("{s:s, s:s, s:s, s:s, s:o}", "status",
                      ok ? "ok" : stopped || missing ? "degraded" : "unavailable",
                      "nats", nats ? "ok" : "unavailable",
                      "redis", redis ? "ok" : "unavailable", "instance", l->instance,
                      "projections", list);
    /* the park decisions' store is the operator's path, not the stream's:
     * while it does not answer the projections run (with the decisions
     * read so far) and readiness does not change; this says how old they
     * are */
    json_object_set_new(*body, "parks", json_string(parks_ok ? "ok" : "unavailable"));
    json_object_set_new(*body, "parks_age_ms", json_integer((json_int_t)parks_age));
    if (!parks_ok)
        json_object_set_new(*body, "parks_reason", json_string(parks_error));
    if (missing != 0) {
        char why[200];

        snprintf(why, sizeof why, "the stream lacks message %" PRIu64 ": it is not a copy of "
                 "the feed (nothing past it is applied until the relay republishes it)", missing);
        json_object_set_new(*body, "stream_missing", json_integer((json_int_t)missing));
        json_object_set_new(*body, "reason", json_string(why));
    }
    return ok;
}

static void
family(es_buf *out, const char *name, const char *type, const char *help)
{
    es_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label's value: \\, \" and \n escaped, control characters dropped,
 * cut at 200 bytes. */
static void
label_value(es_buf *out, const char *s)
{
    for (size_t n = 0; *s && n < 200; s++, n++) {
        if (*s == '\\' || *s == '"')
            es_buf_printf(out, "\\%c", *s);
        else if (*s == '\n')
            es_buf_puts(out, "\\n");
        else if ((unsigned char)*s >= 0x20)
            es_buf_printf(out, "%c", *s);
    }
}

static void
metrics(void *ctx, es_buf *out)
{
    live *l = ctx;
    size_t i;

    pthread_mutex_lock(&l->mu);
    family(out, "es_projector_applied_total", "counter",
           "events this process applied to the projection");
    for (i = 0; i < l->n; i++)
        es_buf_printf(out, "es_projector_applied_total{projection=\"%s\"} %" PRIu64 "\n",
                      l->st[i].p->name, l->st[i].applied);
    family(out, "es_projector_checkpoint", "gauge",
           "stream sequence of the last event the active version applied");
    for (i = 0; i < l->n; i++)
        es_buf_printf(out, "es_projector_checkpoint{projection=\"%s\"} %" PRIu64 "\n",
                      l->st[i].p->name, l->st[i].seq);
    family(out, "es_projector_lag_events", "gauge",
           "events in the stream the projection has not applied");
    for (i = 0; i < l->n; i++)
        es_buf_printf(out, "es_projector_lag_events{projection=\"%s\"} %" PRIu64 "\n",
                      l->st[i].p->name,
                      l->stream_last > l->st[i].seq ? l->stream_last - l->st[i].seq : 0);
    family(out, "es_projector_stopped", "gauge",
           "whether the projection stopped on an event it could not apply (1) or runs (0)");
    for (i = 0; i < l->n; i++)
        es_buf_printf(out, "es_projector_stopped{projection=\"%s\"} %d\n", l->st[i].p->name,
                      l->st[i].stopped ? 1 : 0);
    family(out, "es_projector_stopped_at", "gauge",
           "the event a stopped projection stopped at (its feed sequence), with its position "
           "and the reason as labels");
    for (i = 0; i < l->n; i++)
        if (l->st[i].stopped) {
            es_buf_printf(out, "es_projector_stopped_at{projection=\"%s\",position=\"%s\","
                               "reason=\"", l->st[i].p->name, l->st[i].stopped_position);
            label_value(out, l->st[i].reason);
            es_buf_printf(out, "\"} %" PRIu64 "\n", l->st[i].stopped_seq);
        }
    family(out, "es_projector_lease_owned", "gauge",
           "whether this instance holds the projection's lease and writes it (1) or stands "
           "by (0)");
    for (i = 0; i < l->n; i++)
        es_buf_printf(out, "es_projector_lease_owned{projection=\"%s\"} %d\n",
                      l->st[i].p->name, l->st[i].owned ? 1 : 0);
    family(out, "es_projector_leases_taken_total", "counter",
           "times this instance took the projection's lease");
    for (i = 0; i < l->n; i++)
        es_buf_printf(out, "es_projector_leases_taken_total{projection=\"%s\"} %" PRIu64 "\n",
                      l->st[i].p->name, l->st[i].taken);
    family(out, "es_projector_leases_lost_total", "counter",
           "times this instance found the projection's lease gone to another (deposed)");
    for (i = 0; i < l->n; i++)
        es_buf_printf(out, "es_projector_leases_lost_total{projection=\"%s\"} %" PRIu64 "\n",
                      l->st[i].p->name, l->st[i].lost);
    family(out, "es_projector_leases_handed_over_total", "counter",
           "times this instance dropped the projection's lease for a preferred instance "
           "(rebalancing)");
    for (i = 0; i < l->n; i++)
        es_buf_printf(out, "es_projector_leases_handed_over_total{projection=\"%s\"} %" PRIu64
                      "\n", l->st[i].p->name, l->st[i].handed);
    family(out, "es_projector_fenced_batches_total", "counter",
           "batches Redis refused because this instance's lease token no longer held the "
           "projection (nothing of them was written)");
    for (i = 0; i < l->n; i++)
        es_buf_printf(out, "es_projector_fenced_batches_total{projection=\"%s\"} %" PRIu64 "\n",
                      l->st[i].p->name, l->st[i].fenced);
    family(out, "es_projector_batches_total", "counter",
           "batches applied, by way: a transaction of plain commands (Redis had the version "
           "and checkpoint this instance last saw) or the apply script (ES_PROJECTOR_APPLY)");
    for (i = 0; i < l->n; i++)
        es_buf_printf(out, "es_projector_batches_total{projection=\"%s\",way=\"transaction\"} %"
                      PRIu64 "\nes_projector_batches_total{projection=\"%s\",way=\"script\"} %"
                      PRIu64 "\n", l->st[i].p->name, l->st[i].by_transaction, l->st[i].p->name,
                      l->st[i].by_script);
    {
        int64_t age;
        char why[sizeof l->parks.error + 40];
        bool current = parks_current(l, &age, why, sizeof why);

        family(out, "es_projector_parks_readable", "gauge",
               "whether the park decisions are current: the last read from the store got "
               "them all, less than 3 s ago (1), or not (0: the projections go on with those "
               "read before)");
        es_buf_printf(out, "es_projector_parks_readable %d\n", current ? 1 : 0);
        family(out, "es_projector_parks_age_seconds", "gauge",
               "seconds since the last complete read of the park decisions began (since the "
               "process started when none did)");
        es_buf_printf(out, "es_projector_parks_age_seconds %.3f\n", (double)age / 1000.0);
    }
    pthread_mutex_lock(&l->parks.mu);
    family(out, "es_projector_parks_read_failures_total", "counter",
           "reads of the park decisions that failed (the store did not answer in time)");
    es_buf_printf(out, "es_projector_parks_read_failures_total %" PRIu64 "\n",
                  l->parks.failures);
    pthread_mutex_unlock(&l->parks.mu);
    family(out, "es_projector_parked_events", "gauge",
           "events an operator parked for the projection (esctl projection park)");
    for (i = 0; i < l->n; i++)
        es_buf_printf(out, "es_projector_parked_events{projection=\"%s\"} %zu\n",
                      l->st[i].p->name, l->st[i].parks.n);
    pthread_mutex_unlock(&l->mu);
}

static int
main_live(void)
{
    live *l = &L;
    const char *bind = es_env_str("ES_PROJECTOR_BIND", "127.0.0.1");
    unsigned port = (unsigned)atoi(es_env_str("ES_PROJECTOR_PORT", "8083"));
    es_daemon_server *health = NULL;
    es_auth *auth = NULL;
    const char *only = es_env_str("ES_PROJECTIONS", "all");
    es_error err;
    size_t i;
    int rc = 1;

    pthread_mutex_init(&l->mu, NULL);
    /* before /readyz and /metrics can ask */
    pthread_mutex_init(&l->parks.mu, NULL);
    {
        pthread_condattr_t ca;

        /* a step of the wall clock must not stretch the reader's wait */
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&l->parks.cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    l->parks.read_at = now_ms();
    l->batch = atoi(es_env_str("ES_PROJECTOR_BATCH", "1000"));
    if (l->batch < 1 || l->batch > 100000) {
        es_log(ES_LOG_ERROR, "ES_PROJECTOR_BATCH must be 1..100000");
        return 2;
    }
    {
        const char *how = es_env_str("ES_PROJECTOR_APPLY", "transaction");

        if (strcmp(how, "transaction") != 0 && strcmp(how, "script") != 0) {
            es_log(ES_LOG_ERROR, "ES_PROJECTOR_APPLY must be transaction or script, not '%s'",
                   how);
            return 2;
        }
        l->transactions = strcmp(how, "transaction") == 0;
    }
    l->trace_ttl = atoi(es_env_str("ES_TRACE_TTL", "86400"));
    if (l->trace_ttl < 0 || l->trace_ttl > 30 * 86400) {
        es_log(ES_LOG_ERROR, "ES_TRACE_TTL must be 0..2592000 seconds");
        return 2;
    }
    if (l->trace_ttl > 0 && (l->wrote = calloc((size_t)l->batch, 16)) == NULL) {
        es_log(ES_LOG_ERROR, "out of memory for batches of %d", l->batch);
        return 2;
    }
    for (i = 0; i < pj_projection_count && l->n < sizeof l->st / sizeof l->st[0]; i++)
        if (strcmp(only, "all") == 0 || es_list_contains(only, pj_projections[i].name))
            l->st[l->n++].p = &pj_projections[i];
    if (l->n == 0) {
        es_log(ES_LOG_ERROR, "ES_PROJECTIONS names no projection (%s)", only);
        return 2;
    }
    for (i = 0; i < l->n; i++)
        es_rm_batch_init(&l->batches[i], l->st[i].p->name, NULL);
    if (l->trace_ttl > 0 &&
        (l->traces = calloc((size_t)l->batch * (l->n + 1), sizeof *l->traces)) == NULL) {
        es_log(ES_LOG_ERROR, "out of memory for batches of %d", l->batch);
        return 2;
    }
    l->lease_ms = es_env_long("es-projector", "ES_PROJECTOR_LEASE_MS", 3000, 300, 600000);
    {
        char host[64] = "", rnd[40] = "";
        const char *inst = es_env_str("ES_PROJECTOR_INSTANCE", "");

        if (inst[0] != '\0' && (strlen(inst) >= 100 || strchr(inst, ' ') != NULL)) {
            es_log(ES_LOG_ERROR, "ES_PROJECTOR_INSTANCE must have at most 99 bytes and no space");
            return 2;
        }
        gethostname(host, sizeof host - 1);
        if (!es_uuid_random(rnd))
            snprintf(rnd, sizeof rnd, "%lld", (long long)now_ms());
        /* the random part makes every run's tokens its own, even under a
         * name an operator reuses */
        snprintf(l->instance, sizeof l->instance, "%s/%.8s",
                 inst[0] ? inst : host[0] ? host : "projector", rnd);
        if (inst[0] == '\0')
            snprintf(l->instance, sizeof l->instance, "%.40s:%d/%.8s", host[0] ? host : "projector",
                     (int)getpid(), rnd);
    }
    /* /metrics needs a token with the metrics scope (es_daemon_server) */
    if (es_auth_start(&auth, es_pg_conninfo(), es_nats_url(),
                      &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    projector_daemon.auth = auth;
    if (es_jetstream_open(&l->nats, &err) != ES_OK ||
        es_daemon_server_start(&health, &projector_daemon, bind, port, &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    es_log(ES_LOG_INFO, "%zu projections from stream %s, health on %s://%s:%u; instance %s, "
           "leases of %ld ms", l->n, l->nats.stream, es_daemon_http_scheme(), bind, port,
           l->instance, l->lease_ms);
    if (park_reader_start(l, &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    run_live(l);
    rc = 0;
    /* a clean stop hands the projections over at once */
    for (i = 0; l->rc != NULL && i < l->n; i++)
        if (l->st[i].owned)
            es_rm_lease_release(l->rc, l->st[i].p->name, l->st[i].lease);
done:
    es_daemon_server_stop(health);
    es_auth_stop(auth);
    drop_sub(l);
    es_jetstream_close(&l->nats);
    if (l->rc)
        redisFree(l->rc);
    park_reader_stop(l);
    for (i = 0; i < l->n; i++) {
        pj_parks_free(&l->st[i].parks);
        es_rm_batch_free(&l->batches[i]);
    }
    free(l->wrote);
    free(l->traces);
    pthread_mutex_destroy(&l->mu);
    return rc;
}

int
main(int argc, char **argv)
{
    es_error err;
    int rc;

    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: es-projector (no arguments; see esctl projection --help for "
                        "status and rebuilds)\n");
        return 2;
    }
    if (es_daemon_start(&projector_daemon, &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        return 1;
    }
    rc = main_live();
    es_daemon_stop();
    nats_Close();
    return rc;
}
