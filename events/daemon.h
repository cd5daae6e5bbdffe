/*
 * es_daemon: the skeleton the five daemons share.  A daemon describes
 * itself in an es_daemon (its name, its readiness, its own metrics) and:
 *
 *   es_daemon_start()       log prefix, SIGINT/SIGTERM blocked in every
 *                           thread and taken by one signal thread, SIGPIPE
 *                           ignored
 *   es_daemon_server_start()  /healthz, /readyz, /metrics on a port of its
 *                           own (es-relay, es-projector, es-saga), or
 *   es_daemon_http()        the same three inside an API's router
 *                           (es-command, es-query)
 *   es_daemon_wait()        blocks until the stop signal; loops poll
 *   es_daemon_stopping()    instead and nap in es_daemon_sleep_ms()
 *   es_daemon_stop()        ends the signal thread
 *
 * The stop state is the process's, as signals are: esctl uses it alone
 * (es_daemon_start with just a name) to stop a rebuild or a follow on
 * Ctrl-C.
 */
#ifndef ES_DAEMON_H
#define ES_DAEMON_H

#include <jansson.h>
#include <stdbool.h>

#include "auth.h"
#include "buf.h"
#include "http.h"
#include "status.h"

/*
 * Readiness: returns true when the daemon can do its work and sets *body
 * (a new reference; NULL for {"status": "ready"} or {"status":
 * "unavailable"}) to what /readyz shows.  Runs on an HTTP thread.
 */
typedef bool (*es_daemon_ready_fn)(void *ctx, json_t **body);

/* Appends the daemon's own metrics, each with # HELP and # TYPE, in
 * Prometheus text format.  Runs on an HTTP thread. */
typedef void (*es_daemon_metrics_fn)(void *ctx, es_buf *out);

typedef struct es_daemon {
    const char *name;               /* "es-relay": the first word of its log lines */
    const char *metrics_prefix;     /* "es_relay": of the HTTP request metrics */
    es_daemon_ready_fn ready;       /* NULL: always ready */
    es_daemon_metrics_fn metrics;   /* NULL: the HTTP request metrics only */
    void *ctx;                      /* given to ready and metrics */
    /* /healthz answers 200 with the readiness body (ready or not) rather
     * than {"status": "ok"} */
    bool health_detail;
    /* /readyz's 503 carries Retry-After: 1 (the APIs, whose clients retry) */
    bool ready_retry_after;
    /* es_daemon_server_start: /metrics needs a token with the metrics
     * scope, checked here (borrowed; NULL only for tests without tokens).
     * The API daemons check in their own routers instead. */
    es_auth *auth;
} es_daemon;

/*
 * Names the log lines after d->name (es_log_configure), ignores SIGPIPE,
 * blocks SIGINT and SIGTERM in the calling thread, which every thread it
 * starts afterwards inherits, and starts the thread that takes them.
 * Call it first in main, before any thread starts.  ES_EINTERNAL when the
 * thread cannot start.  d is not kept.
 */
es_status es_daemon_start(const es_daemon *d, es_error *err);

/* Ends the signal thread (without marking the process as stopping);
 * a no-op when es_daemon_start did not succeed. */
void es_daemon_stop(void);

/* Marks the process as stopping, as SIGTERM does: wakes es_daemon_wait,
 * es_daemon_sleep_ms and the on_stop callback. */
void es_daemon_quit(void);

/* True once SIGINT or SIGTERM arrived (or es_daemon_quit ran). */
bool es_daemon_stopping(void);

/* Sleeps ms, or less when the process starts stopping; returns false
 * then, true when the time passed. */
bool es_daemon_sleep_ms(long ms);

/* Blocks until the process is stopping; returns the signal that stopped
 * it, 0 for es_daemon_quit. */
int es_daemon_wait(void);

/*
 * fn(arg) runs once when the process starts stopping, on the thread that
 * noticed, so that a daemon can wake its own condition variables; at
 * most one callback, set before es_daemon_start.
 */
void es_daemon_on_stop(void (*fn)(void *arg), void *arg);

/*
 * Answers GET /healthz, /readyz and /metrics for d and returns true, or
 * returns false and leaves res alone for any other path.  /metrics shows
 * srv's request metrics (none when srv is NULL) and then d's own.  For
 * the routers of the API daemons; the method is the router's to check.
 */
bool es_daemon_http(const es_daemon *d, es_http_server *srv, const es_http_req *req,
                    es_http_res *res);

/*
 * The listener settings every daemon shares, from the environment.
 * HTTPS: cfg's certificate and key from ES_TLS_CERT and ES_TLS_KEY (PEM
 * file paths; unset or empty: plain HTTP); es_http_start reads and
 * checks the files.  Bounds (docs/OPERATIONS.md): ES_HTTP_CONNECTIONS_MAX
 * (1000; the soft limit on open files is raised to fit it),
 * ES_HTTP_HEADER_TIMEOUT_MS (10000), ES_HTTP_BODY_TIMEOUT_MS (30000),
 * ES_HTTP_IDLE_TIMEOUT_S (30), ES_HTTP_QUEUE_MAX (64 per worker),
 * ES_HTTP_STOP_GRACE_MS (10000).  Returns the scheme the listener will
 * speak, "https" or "http", for log lines.
 */
const char *es_daemon_http_tls(es_http_config *cfg);

/* The scheme es_daemon_http_tls chooses: "https" when ES_TLS_CERT is
 * set, "http" otherwise. */
const char *es_daemon_http_scheme(void);

/*
 * Serves the three endpoints of d, and 404 for anything else, on
 * bind:port with two threads, for the daemons without an HTTP API;
 * over HTTPS when ES_TLS_CERT and ES_TLS_KEY say so (es_daemon_http_tls).  d
 * (borrowed) must outlive the server.  *out is NULL on failure (err says
 * why); es_daemon_server_stop (NULL is fine) stops and frees it.
 */
typedef struct es_daemon_server es_daemon_server;
es_status es_daemon_server_start(es_daemon_server **out, const es_daemon *d, const char *bind,
                                 unsigned port, es_error *err);
void es_daemon_server_stop(es_daemon_server *s);

#endif
