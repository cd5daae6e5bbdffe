/*
 * The saga engine: runs any flow of flow.h over a saga's own event stream
 * (saga-<saga_id>), which is its state, its outbox (a step is recorded as
 * started before its command is sent) and its timeline.  Work rows are
 * claimed through saga.h (FOR UPDATE SKIP LOCKED); intake.c creates the
 * work and the inbox from the events stream.
 */
#ifndef SG_ENGINE_H
#define SG_ENGINE_H

#include <libpq-fe.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "flow.h"
#include "gateway.h"
#include "pool.h"
#include "status.h"
#include "store.h"

/* The phases of a run timed in sg_config (sg_phase_name: their names). */
enum {
    SG_PH_CLAIM,        /* claiming due work */
    SG_PH_STREAM,       /* reading the saga's stream */
    SG_PH_INBOX,        /* reading its inbox */
    SG_PH_APPEND,       /* appending what was decided */
    SG_PH_COMMAND,      /* a command's request and reply over NATS */
    SG_PH_GATEWAY,      /* an external gateway's call */
    SG_PH_RENEW,        /* renewing a claim */
    SG_PH_RELEASE,      /* releasing, finishing or deferring the work row */
    SG_PH_CONN_WAIT,    /* waiting for a free connection of the pool */
    SG_PHASES
};
const char *sg_phase_name(int phase);

typedef struct sg_config {
    char conninfo[512];
    char subject_prefix[64];    /* commands: <prefix>.<context>.<action> */
    /* sent with each command in the Es-Principal header (command/bus.c):
     * metadata.principal of the events the command writes */
    char principal[72];
    natsConnection *nc;         /* shared (thread-safe) */
    sg_gateway *gateways[4];
    size_t ngateways;
    int retry_base_ms, retry_max_ms;
    int max_failures;           /* engine failures on one saga before a dead letter */
    int compensation_refusals;  /* refusals of one compensation before a dead letter */
    int lease_ms;               /* a claim's hold on a saga (ES_SAGA_CLAIM_MS) */
    atomic_bool *stop;
    /* counters for /metrics */
    atomic_ullong started, completed, compensated, failed, steps, retries, dead_letters;
    atomic_ullong claims_lost;  /* runs cut short: another worker holds the saga now */
    atomic_ullong claims_empty; /* claims that found nothing due */
    atomic_ullong takeovers;    /* sagas taken over from a claim that ran out */
    atomic_ullong heartbeats;   /* heartbeat statements (renewing every claim held) */
    /* where a worker's time goes, per phase: calls and nanoseconds */
    atomic_ullong phase_calls[SG_PHASES], phase_ns[SG_PHASES];
    /* workers napping for want of work: a claim takes up to this many
     * sagas more for them (queued in the pool), and wakes them with
     * wake(n) (may be NULL) */
    atomic_int idle;
    void (*wake)(int n);
    int claim_max;              /* sagas claimed in one statement at most */
} sg_config;


/* A worker: the saga it runs now and its claim.  Its connections are the
 * pool's, taken for one round trip at a time (pg and store are those of
 * the pair it holds, conn, NULL in between); its appends go through the
 * pool's committer.  The process's heartbeat (sg_heartbeat) renews its
 * claim while it runs a saga: mu guards saga_id, claim and held_until
 * against it (sg_worker_init makes it). */
typedef struct sg_worker {
    const sg_config *cfg;
    sg_config *counters;
    sg_pool *pool;
    sg_conn *conn;
    PGconn *pg;
    es_store *store;
    const char *saga_id;        /* the saga it runs now, or NULL */
    char traceparent[56];       /* that saga's trace (its input's "traceparent",
                                   events/trace.h), sent with its commands; "" none */
    char claim[48];             /* its claim's token (sg_work.claim) */
    int64_t held_until;         /* the claim holds until then at least (monotonic ms) */
    bool lost;                  /* another worker holds the saga now */
    pthread_mutex_t mu;
} sg_worker;

/* Makes w a worker of cfg (also its counters) on pool; sg_worker_destroy
 * undoes it. */
void sg_worker_init(sg_worker *w, sg_config *cfg, sg_pool *pool);
void sg_worker_destroy(sg_worker *w);

/*
 * The heartbeat: renews, in one statement, the claims of the workers
 * ws[0..n) that run a saga now, to ES_SAGA_CLAIM_MS from now (fenced by
 * each claim's token), on a connection of their pool.  es-saga runs it every third of the claim, so a
 * claim is renewed while its saga's command or gateway call is under way
 * and runs out ES_SAGA_CLAIM_MS after the process died or stalled; a
 * worker whose claim was taken over meanwhile finds out at its next
 * record or send.  A worker busy with a statement of its own claim is
 * skipped this round (it is renewing or ending its claim).
 */
es_status sg_heartbeat(sg_worker *ws, size_t n, es_error *err);

/* Takes a saga claimed for it by another worker's claim, or claims due
 * sagas (one, and one more for each idle worker, in one statement, the
 * others queued in the pool for them), and runs one as far as it can go
 * now.  *did is false when nothing was due.  Errors are of the infrastructure (the caller
 * backs off); a saga's own failures are handled inside. */
es_status sg_work_once(sg_worker *w, bool *did, es_error *err);

/* Milliseconds until the next saga is due (capped by max_ms), for sleeping. */
int sg_next_due_ms(sg_worker *w, int max_ms);

/* Timestamps of the engine: milliseconds since the epoch. */
int64_t sg_now_ms(void);

/* Backoff for attempt n (1-based): base * 2^(n-1), capped, with +-25 %
 * jitter. */
int64_t sg_backoff_ms(const sg_config *cfg, int attempt);

#endif
