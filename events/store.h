/*
 * The event store client: appends with optimistic concurrency and
 * idempotency, group-committed batches of appends, and the three reads
 * (one stream, the whole log in gap-free feed order, one category).
 *
 * One es_store owns one PostgreSQL connection and is not thread-safe: use
 * one per thread, or es_committer (committer.h) to share group commits
 * between threads.  A lost connection answers ES_EUNAVAILABLE and the next
 * call reconnects.
 */
#ifndef ES_STORE_H
#define ES_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "status.h"
#include "upcast.h"

typedef struct es_store es_store;

/* One append: events to stream, if its version is as expected. */
typedef struct es_append_req {
    const char *stream;
    int64_t expected;           /* >= 0, or ES_EXPECT_* */
    const es_new_event *events;
    size_t count;               /* 1 .. ES_APPEND_EVENTS_MAX */
} es_append_req;

/*
 * What an append did.  status ES_OK: written now, or (duplicate) written
 * by an earlier append with the same event ids, whose versions and
 * position these are.  ES_ECONFLICT: err.actual_version holds the stream's
 * version (-1: no stream).  Anything else: err says why; nothing written.
 */
typedef struct es_append_result {
    es_status status;
    bool duplicate;
    int64_t first_version;
    int64_t last_version;
    es_position position;       /* of the last event */
    es_error err;
} es_append_result;

/*
 * A page of events read.  events[i] strings belong to the page; next is
 * where a feed or category read continues (after the last event, or
 * the request's position when the page is empty).  A page stops at its
 * row limit or at the store's read budget (es_store_set_read_budget),
 * whichever comes first: truncated says it stopped at the budget, so
 * fewer events than the limit do not mean the end (continue after the
 * last event as usual).
 */
typedef struct es_page {
    size_t count;
    es_event *events;
    es_position next;
    bool truncated;             /* stopped at the read budget: more may follow */
    int64_t stream_version;     /* stream reads: the stream's last version */
    void *priv_;                /* owned storage; do not touch */
} es_page;

typedef enum es_direction { ES_FORWARD, ES_BACKWARD } es_direction;

/*
 * Connects to conninfo (libpq syntax) and prepares the statements.
 * On failure *out is NULL and err says why (ES_EUNAVAILABLE when the
 * server cannot be reached).
 */
es_status es_store_open(es_store **out, const char *conninfo, es_error *err);

/* As es_store_open, but connects on first use: for daemons that must
 * start (and answer 503) while PostgreSQL is down. */
es_status es_store_create(es_store **out, const char *conninfo, es_error *err);
void es_store_close(es_store *s);

/* Sets the event size cap (default ES_EVENT_SIZE_MAX_DEFAULT). */
void es_store_set_max_event_size(es_store *s, size_t bytes);

/*
 * The read budget: a page of events stops near bytes of row text (at most
 * the budget and one event, one event at least), so a read's memory is
 * bounded whatever the events' size.  0 (the default): the row limit
 * only.  A budget costs the read libpq's single-row mode, several times
 * the client CPU of a plain read of small events, so the readers whose
 * page sizes clients choose set it (the HTTP reads, esctl) and the
 * throughput readers (relay, rebuilds) do not yet.
 */
#define ES_READ_BUDGET_DEFAULT (1024 * 1024)
void es_store_set_read_budget(es_store *s, size_t bytes);

/* ES_READ_MAX_BYTES from the environment, else ES_READ_BUDGET_DEFAULT (a
 * malformed value ends the program, as es_env_long). */
size_t es_store_read_budget_configured(void);

/* How long a call waits for the server's answer before it gives the
 * connection up (ES_EUNAVAILABLE, code store_unavailable): ms, 0 for
 * ever, < 0 the configured ES_PG_ANSWER_TIMEOUT_MS (the default). */
void es_store_set_answer_timeout(es_store *s, int ms);

/*
 * A readiness probe: connects if needed and runs one cheap statement,
 * waiting at most timeout_ms for its answer (the connection's set-up is
 * bounded by ES_PG_CONNECT_TIMEOUT_S).  ES_OK or ES_EUNAVAILABLE.
 */
es_status es_store_ping(es_store *s, int timeout_ms, es_error *err);

/* Borrows u (may be NULL) for every later read; the caller keeps it alive. */
void es_store_set_upcasters(es_store *s, const es_upcasters *u);

/*
 * Appends req atomically.  Events without an id get a new time-ordered
 * one (es_uuid_v7), so a caller that wants safe retries supplies ids
 * (e.g. es_uuid_derive).
 * Returns res->status.
 */
es_status es_store_append(es_store *s, const es_append_req *req,
                          es_append_result *res);

/*
 * Group commit: appends n independent requests in one pipelined
 * transaction, one round trip, one commit.  Each request has its own
 * result, so a conflict or invalid request fails only itself.  Returns
 * ES_OK when every request got its own result, or ES_EUNAVAILABLE when
 * the connection went: then the results not yet answered say so, and
 * their appends were not written, or, if the connection was lost during
 * COMMIT, may have been; a retry with the same ids answers duplicates.
 */
es_status es_store_append_many(es_store *s, const es_append_req *reqs,
                               size_t n, es_append_result *res);

/*
 * Appends all n requests (1..256, to any streams) in one transaction, or
 * none: the first that does not succeed rolls the others back.  Returns
 * ES_OK, or the failing append's status with *failed its index (its
 * result says why; the others answer not_applied).  Duplicates count as
 * success, so a retried set answers its original results.
 */
es_status es_store_append_atomic(es_store *s, const es_append_req *reqs, size_t n,
                                 es_append_result *res, size_t *failed);

/* Reads the event with this id (a page of one); ES_ENOTFOUND if none. */
es_status es_store_read_event(es_store *s, const char *event_id, es_page **out,
                              es_error *err);

/*
 * Reads up to limit events of stream from version from (inclusive),
 * forward or backward (from < 0 backward means from the end).
 * ES_ENOTFOUND when the stream does not exist.  *out NULL on failure.
 */
es_status es_store_read_stream(es_store *s, const char *stream, int64_t from,
                               size_t limit, es_direction dir, es_page **out,
                               es_error *err);

/*
 * Reads up to limit events of the whole log after position after, in
 * feed order, and only events no still-running transaction can precede:
 * a reader that continues from page->next sees every committed event
 * exactly once, in an order that never changes.
 */
es_status es_store_read_feed(es_store *s, es_position after, size_t limit,
                             es_page **out, es_error *err);

/* As es_store_read_feed, restricted to streams "<category>-...". */
es_status es_store_read_category(es_store *s, const char *category,
                                 es_position after, size_t limit,
                                 es_page **out, es_error *err);

/* The feed's current end: the position after which no event is yet
 * readable.  Rebuilds replay up to it. */
es_status es_store_feed_head(es_store *s, es_position *head, es_error *err);

void es_page_destroy(es_page *p);

#endif
