/*
 * The connections es-saga's workers share, so the sagas in flight (one
 * per worker thread, most of them waiting on a command's answer) are not
 * bounded by PostgreSQL connections: a few connection pairs (one for the
 * saga tables, one event-store client for the saga streams), each taken
 * for one round trip and given back at once, and one group committer
 * through which every saga stream append goes, so appends of many sagas
 * share a transaction.  It also holds the work claimed in one statement
 * for several workers and not taken by one yet.
 */
#ifndef SG_POOL_H
#define SG_POOL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "committer.h"
#include "saga.h"
#include "status.h"
#include "store.h"

/* A connection pair, taken for one round trip.  pg is NULL or broken
 * after a failure; the next take connects it again. */
typedef struct sg_conn {
    PGconn *pg;
    es_store *store;
} sg_conn;

typedef struct sg_pool sg_pool;

/* At most SG_POOL_QUEUE_MAX claimed sagas wait for a worker. */
#define SG_POOL_QUEUE_MAX 64

/*
 * Creates a pool of nconns pairs (1..64, connected on first use) and a
 * committer of commit_conns connections (1..16) to conninfo.  *out NULL
 * on failure (ES_EUNAVAILABLE: the committer could not start).
 */
es_status sg_pool_create(sg_pool **out, const char *conninfo, int nconns, int commit_conns,
                         es_error *err);
/* Gives back the claims still queued (due again now, fenced by their
 * tokens), closes the connections and frees p. */
void sg_pool_destroy(sg_pool *p);

/* Takes a free pair, waiting for one; its pg connected if it can be
 * (PQstatus tells), in UTC.  Give it back with sg_pool_give before
 * taking another. */
sg_conn *sg_pool_take(sg_pool *p);
void sg_pool_give(sg_pool *p, sg_conn *c);

/* The committer every saga append goes through (borrowed). */
es_committer *sg_pool_committer(sg_pool *p);

/* Queues a claimed saga (its input is stolen) claimed at claimed_ms
 * (monotonic ms before its claim was made); false when the queue is full
 * (work untouched). */
bool sg_pool_push(sg_pool *p, sg_work *work, int64_t claimed_ms);
/* Takes the oldest queued claim into *work (its input the caller's to
 * free); false when none is queued. */
bool sg_pool_pop(sg_pool *p, sg_work *work, int64_t *claimed_ms);
/* Room left in the queue. */
int sg_pool_room(sg_pool *p);

/*
 * Claims are made by one worker of the process at a time, for the
 * workers waiting to claim too: sg_pool_claim_enter waits for the claim
 * in progress; *counted is then true when a claim started since this
 * worker began to wait and found fewer sagas than it asked for (it
 * claimed one for this worker if one was due: take it from the queue,
 * and claim nothing more if none is there).  The claimer calls
 * sg_pool_claim_start right before its statement (the workers waiting:
 * how many sagas more to claim), sg_pool_claim_drained with what it
 * found, and sg_pool_claim_leave after queueing what it claimed.
 */
void sg_pool_claim_enter(sg_pool *p, bool *counted);
int sg_pool_claim_start(sg_pool *p);
void sg_pool_claim_drained(sg_pool *p, bool drained);
void sg_pool_claim_leave(sg_pool *p);

#endif
