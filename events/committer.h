/*
 * Group commit shared by many threads.  Callers hand in one append each
 * and block (or submit it with a callback); a few committer threads,
 * each with its own store connection, take everything queued (up to a
 * batch size) and append it as one batch: one transaction and one WAL
 * flush for the whole batch.  Each connection sends the next batch as
 * soon as the server has run the last one, behind its commit; the
 * connections after the first join only once 16 events are waiting.  Under load,
 * batches grow by themselves, so throughput rises with concurrency while
 * a lone caller still pays one round trip.
 */
#ifndef ES_COMMITTER_H
#define ES_COMMITTER_H

#include <stddef.h>

#include "store.h"

typedef struct es_committer es_committer;

/*
 * Starts nconns committer threads (1..64), each connected to conninfo,
 * batching up to max_batch appends (1..256).  *out NULL on failure.
 */
es_status es_committer_create(es_committer **out, const char *conninfo,
                              int nconns, size_t max_batch, es_error *err);

/*
 * Calls fn(ctx) after every batch that wrote something, from a committer
 * thread (the command service wakes the relay with it).  Set it before
 * the first append; fn must be thread-safe and quick.
 */
void es_committer_on_commit(es_committer *c, void (*fn)(void *ctx), void *ctx);

/* Appends a committer queues by default before it refuses more. */
#define ES_COMMIT_QUEUE_DEFAULT 4096

/*
 * Bounds the appends waiting for a batch (not those in flight) to max
 * (0: no bound).  Past it an append is refused at once, not queued:
 * ES_EUNAVAILABLE with code commit_queue_full (503 with Retry-After over
 * HTTP).  Thread-safe; applies to the appends that come after.
 */
void es_committer_set_queue_max(es_committer *c, size_t max);

/* Stops the threads after the queued appends are done; frees c. */
void es_committer_destroy(es_committer *c);

/*
 * Appends req (borrowed until the call returns) as part of the next batch
 * and waits for its result (at once when the queue is full).  A result
 * ES_OK means committed; an error means not written, except code
 * append_outcome_unknown: the connection went during the commit and the
 * store could not be asked after (a retry with the same event ids tells).
 * Thread-safe.  Returns res->status.
 */
es_status es_committer_append(es_committer *c, const es_append_req *req,
                              es_append_result *res);

typedef void (*es_committer_done)(void *ctx);

/*
 * Queues req without waiting: once its batch is done, res holds the
 * result and done(ctx) runs on a committer thread (it should be quick:
 * the next batch of that thread waits for it).  req and res are borrowed
 * until then.  On ES_OK, done will be called exactly once; otherwise
 * (stopping, the queue full, out of memory) it never is, and res says why.  Submitted
 * appends may commit in any order among themselves (two connections may
 * carry them); a caller that needs an order submits the next one from
 * the previous one's callback, or waits with es_committer_append.
 */
es_status es_committer_submit(es_committer *c, const es_append_req *req,
                              es_append_result *res, es_committer_done done, void *ctx);

#endif
