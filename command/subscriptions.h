/*
 * GET /v1/subscriptions/feed: the store's gap-free feed as Server-Sent
 * Events, served by es-command (see subscriptions.c for the hub that
 * feeds every subscription from one thread).
 */
#ifndef ES_COMMAND_SUBSCRIPTIONS_H
#define ES_COMMAND_SUBSCRIPTIONS_H

#include "buf.h"
#include "http.h"
#include "status.h"

typedef struct subs subs;

/*
 * Starts the hub with its own store connection to conninfo, made on
 * first use (the daemon starts while PostgreSQL is down).  Reads
 * ES_SSE_MAX, ES_SSE_BUFFER_MAX, ES_SSE_HEARTBEAT_MS and ES_SSE_POLL_MS.
 * *out NULL on failure.
 */
es_status subs_start(subs **out, const char *conninfo, es_error *err);
/* Ends every subscription with "event: cut" (reason shutting_down) and
 * stops the hub; before es_http_stop, which then finds them ended.
 * Later requests are answered 503 shutting_down. */
void subs_stop(subs *h);
/* Frees the hub, once nothing can wake it (after the committer). */
void subs_free(subs *h);
/* Events were committed: the hub reads the feed now rather than at its
 * next poll.  Thread-safe, never blocks. */
void subs_wake(void *h);
/* Serves GET /v1/subscriptions/feed (access already checked): 400
 * query_invalid, 503 too_many_subscriptions / shutting_down, or 200 with
 * the stream handed to the hub. */
void subs_serve(subs *h, const es_http_req *req, es_http_res *res);
/* The hub's Prometheus lines (prefix_sse_...). */
void subs_metrics(subs *h, const char *prefix, es_buf *out);

#endif
