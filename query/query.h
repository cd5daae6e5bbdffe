/*
 * es-query, the query service: answers shared/API.md's query part from
 * the Redis read models the projector maintains, and waits for a
 * consistency token when asked to (read-your-writes).  This header is the
 * process's own glue: the state the HTTP handlers share.
 */
#ifndef QUERY_QUERY_H
#define QUERY_QUERY_H

#include <stdatomic.h>

#include "auth.h"
#include "daemon.h"
#include "http.h"
#include "metrics.h"
#include "watch.h"

typedef struct query_app {
    /* Set once es_http_start has returned, which is after its threads
     * started: hence atomic, for /metrics on those threads. */
    _Atomic(es_http_server *) http;
    es_daemon daemon;               /* name, readiness, metrics (routes.c) */
    es_auth *auth;                  /* the token checks (routes_guard) */
    watch *watch;
    metrics *metrics;
    long wait_default_ms, wait_max_ms;
    atomic_ullong waits;            /* requests that had to wait for a token */
    atomic_ullong wait_timeouts;    /* ... and answered not_yet_consistent */
    atomic_ullong waits_refused;    /* ... or 503 too_many_waits (ES_QUERY_WAITS_MAX) */
} query_app;

/* The HTTP handler (routes.c); app is a query_app.  routes_daemon fills
 * app->daemon, which /healthz, /readyz and /metrics answer from. */
void routes_daemon(query_app *app);
void routes_handle(void *app, const es_http_req *req, es_http_res *res);
/* The access check of every request, before any handler (routes.c). */
bool routes_guard(void *app, es_http_req *req, es_http_res *res);

#endif
