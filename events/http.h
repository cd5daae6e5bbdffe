/*
 * The HTTP layer every daemon shares: libmicrohttpd with epoll
 * event-loop threads, bodies collected up to a hard cap (413 past it),
 * JSON responses, the error body of shared/API.md, and request counters
 * for /metrics.  Given a certificate and key, a server speaks HTTPS only
 * (libmicrohttpd's GnuTLS), with everything else unchanged.  Handlers run on the event-loop threads, or on a worker
 * pool when the server has one, and may block; a daemon keeps per-thread
 * connections (PostgreSQL, Redis) in thread-local storage, since neither
 * client is thread-safe.  A quick handler, or a handler on the event-loop
 * threads, may defer its answer to any thread (es_http_defer /
 * es_http_answer); its connection is suspended meanwhile and holds no
 * thread.
 *
 * Every server is bounded: open connections (past the cap the oldest one
 * that has not sent a whole request is closed to make room), the time a
 * request's line and headers, then its body, may take (slow clients are
 * cut, not waited for), the pool's queue (503 server_busy past it), and a
 * stop that answers 503 shutting_down to whatever is still deferred.
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
    /* who sent it: the name of the token the server's guard accepted
     * ("" for a public route, or with access control off) */
    char principal[72];
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

/*
 * A handler that runs on the event-loop thread itself, before the pool:
 * it answers true when it took the request, having either filled res or
 * deferred it (es_http_defer), and false to leave the request to the
 * handler.  It must not block.
 */
typedef bool (*es_http_quick_handler)(void *app, const es_http_req *req, es_http_res *res);

/*
 * Runs on the event-loop thread before anything else (the quick handler
 * included): answers true to let the request through, possibly having
 * set req->principal, or false having filled res (401, 403, ...).  It
 * must not block.  The one place a service checks access (auth.h).
 */
typedef bool (*es_http_guard)(void *app, es_http_req *req, es_http_res *res);

typedef struct es_http_config {
    const char *bind;           /* address, e.g. "127.0.0.1" */
    unsigned port;
    unsigned threads;           /* event-loop threads */
    size_t body_max;            /* bytes; larger bodies get 413 */
    /* 0: the handler runs on the event-loop threads, which then each
     * serve one request at a time.  Otherwise a pool of this many threads
     * runs it, while the connection waits off the event loop. */
    unsigned workers;
    es_http_quick_handler quick;    /* optional */
    /* HTTPS only: paths of the PEM certificate (the server's first, then
     * any intermediates) and of its unencrypted private key, read once by
     * es_http_start.  Both NULL or "" for plain HTTP; one without the
     * other is refused. */
    const char *tls_cert;
    const char *tls_key;
    es_http_guard guard;            /* optional */

    /* Bounds; 0 takes the default in brackets (ES_HTTP_* in daemon.h). */
    /* open connections at most [1000]; a new one past it closes the
     * oldest connection that has not sent a whole request (none: the new
     * one), so a flood of slow clients cannot lock others out */
    unsigned connections_max;
    /* a request's line and headers must be in within this of the
     * connection's start or its previous answer [10000] ... */
    unsigned header_timeout_ms;
    /* ... and its body within this of its headers [30000]; else the
     * connection is closed */
    unsigned body_timeout_ms;
    /* no byte in or out for this long closes a connection [30] */
    unsigned idle_timeout_s;
    /* requests queued for the pool at most [64 per worker]; past it 503
     * server_busy with Retry-After: 1 */
    unsigned queue_max;
    /* es_http_stop waits this long for deferred answers, then answers
     * what is left 503 shutting_down (a job running on the pool is
     * waited for instead: it reads its request) [10000] */
    unsigned stop_grace_ms;
} es_http_config;

/*
 * Answering later.  Called from a quick handler, or from the handler of a
 * server without a pool, es_http_defer keeps the request (req and what it
 * points to stay valid) until es_http_answer (from any thread, exactly
 * once) sends res, whose body it takes; the handler then leaves its own
 * res alone.  Once es_http_stop has answered a deferred request itself
 * (503 shutting_down), es_http_answer only frees res, and req must no
 * longer be read; es_http_answer may still come after es_http_stop
 * returned (the server is freed by the last of them).
 */
typedef struct es_http_pending es_http_pending;
es_http_pending *es_http_defer(const es_http_req *req);
void es_http_answer(es_http_pending *p, es_http_res *res);

/*
 * Streaming answers (Server-Sent Events).  A handler that calls
 * es_http_stream_open and then sets res->status to 200 (its content type
 * and headers go out as the answer's head; its body is ignored) answers
 * with a body of unknown length that the owner of the returned stream
 * writes from any thread while the connection stays open.  Any other
 * status sends res as usual and the stream is closed at once.  A
 * streaming connection holds no thread: it is suspended while its buffer
 * is empty and resumed by the next write.  It is not subject to the
 * header and body deadlines (the request is in), and es_http_stop ends it
 * after what is buffered.  on_drain(ctx), when not NULL, is called from
 * the event loop each time the connection has taken every buffered byte
 * (it must be quick and must not call back into the stream).
 *
 * The stream is the owner's until es_http_stream_end, which is called
 * exactly once (also when the answer was not 200, or the client left).
 * *out NULL (ES_ENOMEM) on failure.
 */
typedef struct es_http_stream es_http_stream;
es_status es_http_stream_open(const es_http_req *req, void (*on_drain)(void *ctx), void *ctx,
                              es_http_stream **out, es_error *err);
/*
 * Appends len bytes to what the connection sends; *buffered (may be
 * NULL) is then the number of bytes written and not yet taken by the
 * connection.  ES_EUNAVAILABLE once the client is gone or the server
 * stops (nothing is appended then); ES_ENOMEM if the bytes could not be
 * held.
 */
es_status es_http_stream_write(es_http_stream *s, const char *data, size_t len,
                               size_t *buffered);
/* Bytes written and not yet taken by the connection. */
size_t es_http_stream_buffered(es_http_stream *s);
/* Whether the stream still takes writes (the client is there, the server
 * is not stopping). */
bool es_http_stream_alive(es_http_stream *s);
/* Ends the answer after what is buffered and gives the stream back. */
void es_http_stream_end(es_http_stream *s);

/*
 * Starts serving; *out NULL on failure (err says why: ES_EINVALID with
 * code "tls_invalid" for a certificate or key that cannot be read or
 * used, ES_EUNAVAILABLE "listen_failed" when the port cannot be had).
 */
es_status es_http_start(es_http_server **out, const es_http_config *cfg,
                        es_http_handler handler, void *app, es_error *err);
/* Whether srv serves HTTPS (for the log line naming its URL). */
bool es_http_is_tls(const es_http_server *srv);
void es_http_stop(es_http_server *srv);

/* Appends the server's request metrics in Prometheus text format, with
 * # HELP and # TYPE: prefix_http_requests_total{class} (counter) and
 * prefix_http_request_duration_seconds (histogram). */
void es_http_metrics(es_http_server *srv, const char *prefix, es_buf *out);

#endif
