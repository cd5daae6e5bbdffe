/*
 * The HTTP layer both services share: libmicrohttpd with epoll and a
 * thread pool, bodies collected up to a hard cap (413 past it), JSON
 * responses, the error body of shared/API.md, and request counters for
 * /metrics.  Handlers run on the pool's threads and may block; a daemon
 * keeps per-thread connections (PostgreSQL, Redis) in thread-local
 * storage, since neither client is thread-safe.
 */
#ifndef ES_HTTP_H
#define ES_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "status.h"

typedef struct es_http_server es_http_server;

typedef struct es_http_req {
    const char *method;         /* "GET", "POST", ... */
    const char *path;           /* percent-decoded, without the query */
    const char *body;           /* NUL-terminated; "" when none */
    size_t body_len;
    void *conn_;                /* the MHD connection; use the accessors */
} es_http_req;

#define ES_HTTP_HEADERS_MAX 6

typedef struct es_http_res {
    int status;
    es_buf body;
    const char *content_type;   /* static; default application/json */
    int nheaders;
    char headers[ES_HTTP_HEADERS_MAX][2][96];
} es_http_res;

/* A request header or query argument, or NULL. */
const char *es_http_header(const es_http_req *req, const char *name);
const char *es_http_query(const es_http_req *req, const char *name);

/* Sets a JSON body (stolen, even on failure) and the status. */
void es_http_res_json(es_http_res *res, int status, json_t *body);

/*
 * Sets the error body {"error": {"code", "message", "field"?}} with
 * status; extra (stolen, may be NULL) members are merged into "error".
 * A 503 also gets Retry-After: 1.
 */
void es_http_res_error(es_http_res *res, int status, const char *code,
                       const char *field, json_t *extra, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* The error body for err, with the status its es_status maps to;
 * a conflict carries actual_version. */
void es_http_res_from_error(es_http_res *res, const es_error *err);

/* The HTTP status an es_status maps to (ES_OK: 200). */
int es_http_status(es_status st);

/* Adds a response header (copied; cut at 95 bytes). */
void es_http_res_header(es_http_res *res, const char *name, const char *value);

typedef void (*es_http_handler)(void *app, const es_http_req *req, es_http_res *res);

typedef struct es_http_config {
    const char *bind;           /* address, e.g. "127.0.0.1" */
    unsigned port;
    unsigned threads;           /* pool size */
    size_t body_max;            /* bytes; larger bodies get 413 */
} es_http_config;

/* Starts serving; *out NULL on failure (err says why). */
es_status es_http_start(es_http_server **out, const es_http_config *cfg,
                        es_http_handler handler, void *app, es_error *err);
void es_http_stop(es_http_server *srv);

/* Appends the server's request counters in Prometheus text format,
 * each metric named prefix_... */
void es_http_metrics(es_http_server *srv, const char *prefix, es_buf *out);

#endif
