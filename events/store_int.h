/*
 * Internal to the core library: the store's insides, for the modules that
 * keep their own tables next to the events (snapshot.c, idem.c) or read
 * the events in ways of their own (audit.c).  Not installed with the
 * public headers; daemons never include it.
 */
#ifndef ES_STORE_INT_H
#define ES_STORE_INT_H

#include <libpq-fe.h>

#include "store.h"

/* Connects if needed and answers the live connection, or NULL with err set. */
PGconn *es__store_conn(es_store *s, es_error *err);

/* PQexecParams on es__store_conn's connection (text parameters and
 * results), waiting at most the answer limit: a stopped server makes it
 * fail (NULL or an error result) and es__store_failure say unavailable. */
PGresult *es__store_exec(es_store *s, const char *sql, int nparams, const char *const *values);

/* Maps a failed result to a status recorded in err (what: "read a snapshot"). */
es_status es__store_failure(es_store *s, const PGresult *r, const char *what, es_error *err);

/* Below it every transaction has ended: a feed read never passes an
 * event an open transaction could still commit before it. */
#define ES__HORIZON "pg_snapshot_xmin(pg_current_snapshot())"

/* The columns of an event, in the order es__store_page reads them.  A
 * statement that selects them runs on es__store_conn's connection, whose
 * session prints recorded_at as es__store_page expects (ISO, UTC). */
#define ES__EVENT_COLUMNS                                                   \
    "stream_id, version, event_id, type, schema_version, data, "            \
    "metadata, recorded_at, transaction_id, global_position"

/*
 * The first page (at most limit events) of stream after the snapshot
 * taken by code state_version, with that snapshot, in one statement.
 * ES_OK: *out the events after the snapshot (from the start when there
 * is none), *snap_version and *snap_state its columns as text (NULL when
 * there is none; both owned by the page, valid until it is destroyed).
 * The state rides on the event right after the snapshot (or on the row
 * of a stream with none after it), so *snap_state is NULL with
 * *snap_version set only if that event is missing: then the caller reads
 * the stream from the start.  ES_ENOTFOUND when the stream does not
 * exist.
 */
es_status es__store_read_snapshot(es_store *s, const char *stream, int state_version,
                                  size_t limit, es_page **out, const char **snap_version,
                                  const char **snap_state, es_error *err);

/*
 * Turns r, a successful result of ES__EVENT_COLUMNS rows, into a page of
 * events, upcast as the store's reads are, that takes ownership of r
 * (also on failure).  The page's next is its last event's position
 * ({0, 0} when empty) and its stream_version -1.  *out NULL on failure.
 */
es_status es__store_page(es_store *s, PGresult *r, es_page **out, es_error *err);

/*
 * Runs sql (text parameters; ES__EVENT_COLUMNS rows, at most limit) as
 * the store's own reads run: under its read budget
 * (es_store_set_read_budget), so the page stops near the budget's bytes
 * with truncated set, and within the answer limit.  *out a new page,
 * upcast, whose next is its last event's position (after when empty);
 * NULL on failure.
 */
es_status es__store_read(es_store *s, const char *sql, int nparams, const char *const *values,
                         size_t limit, es_position after, es_page **out, es_error *err);

/*
 * Appends sent and read in separate steps, for the committer: it sends a
 * batch as one pipeline and, as soon as the server has run it and while
 * its commit is being flushed, the next one behind it.  A batch holds up
 * to 256 appends and the buffers their parameters are built in.
 */
typedef struct es__append_batch es__append_batch;

es__append_batch *es__append_batch_new(void);
void es__append_batch_free(es__append_batch *b);

/*
 * Validates reqs (at most 256; invalid ones answered now) and sends the
 * valid ones as one pipeline, behind whatever is in flight.  early: the
 * server is to send the results once it has run the statements, before
 * the commit (see es__append_recv); that costs it a send, worth it only
 * when more appends are coming.  Returns ES_EUNAVAILABLE when they could
 * not be sent (all answered so).  reqs and res stay borrowed until
 * es__append_finish.
 */
es_status es__append_send(es_store *s, es__append_batch *b, const es_append_req *reqs,
                          size_t n, es_append_result *res, bool early);

/*
 * Reads the results of b, the oldest batch in flight.  If b was sent
 * early, the server sends them once the statements ran, before it
 * commits: then ran(ctx) is called (if not NULL) and may send the next
 * batch.  The call returns once b is committed (or failed).  Appends
 * that need a second pass (through es_append) get it from
 * es__append_finish, which must then run alone on the connection:
 * returns true when b needs one.
 */
bool es__append_recv(es_store *s, es__append_batch *b, void (*ran)(void *), void *ctx);

/* Runs b's second pass, if any, and completes every result of reqs. */
void es__append_finish(es_store *s, es__append_batch *b, const es_append_req *reqs,
                       size_t n, es_append_result *res);

#endif
