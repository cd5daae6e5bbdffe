/*
 * es_http: libmicrohttpd glue (see http.h).  A connection's body is
 * gathered into its own buffer; the handler runs once the body is
 * complete, builds an es_http_res, and this file turns it into an MHD
 * response.  Counters are plain atomics so /metrics costs no lock.
 *
 * A request answered later (deferred by a handler, or run on the worker
 * pool) has its connection suspended until the answer is in; the
 * server's mutex orders the suspension before the resumption, since
 * MHD takes a resume that comes first as cancelling the suspend.  Each
 * deferred request is on the server's open list until answered, so that
 * es_http_stop can answer what is left (MHD must never be stopped with a
 * connection suspended: it aborts).  A request answered that way whose
 * owner still holds it outlives its connection as an orphan, freed by the
 * owner's es_http_answer.
 *
 * Connections are tracked from MHD's connection notices (conn_track):
 * each is in one phase, drawn here with who moves it,
 *
 *   on_connection()          on_request(), first call     last call
 *   HEADERS ----------------------------> BODY ----------------> BUSY
 *      ^                                                          |
 *      +------------------- on_completed() (answer sent) ---------+
 *
 * and the sweeper thread closes (shutdown(2), which MHD sees as the
 * client leaving) a connection that stays in HEADERS or BODY past its
 * deadline, and on_connection() the oldest one in HEADERS when a new one
 * would pass the cap.
 */
#include "http.h"

#include "codec.h"
#include "event.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Latency buckets of the request histogram, in seconds. */
static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5};
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

/* A certificate chain or key file larger than this is not one. */
#define TLS_FILE_MAX (1024 * 1024)

/* libmicrohttpd's memory per connection (see es_http_start): headers of
 * up to about 15 KiB in all fit; larger ones get its 431. */
#define CONNECTION_MEMORY (16 * 1024)

#define CONNECTIONS_MAX_DEFAULT 1000
#define HEADER_TIMEOUT_MS_DEFAULT 10000
#define BODY_TIMEOUT_MS_DEFAULT 30000
#define IDLE_TIMEOUT_S_DEFAULT 30
#define QUEUE_PER_WORKER_DEFAULT 64
#define STOP_GRACE_MS_DEFAULT 10000
/* after the grace, how long the forced answers get to go out */
#define STOP_FLUSH_MS 2000

typedef struct conn_state conn_state;

typedef enum { PHASE_HEADERS, PHASE_BODY, PHASE_BUSY } conn_phase;

/* Why a connection was closed by this layer (the metric's reason). */
enum { CUT_HEADERS, CUT_BODY, CUT_EVICTED, CUT_REFUSED, NCUTS };
static const char *const cut_names[NCUTS] = {"header_timeout", "body_timeout", "evicted",
                                             "over_cap"};

/* One open connection (MHD's socket context). */
typedef struct conn_track {
    int fd;
    atomic_int phase;           /* conn_phase */
    atomic_llong since_ms;      /* CLOCK_MONOTONIC ms when the phase began */
    bool cut;                   /* shutdown(2) done; conns_mu */
    struct conn_track *prev, *next;
} conn_track;

struct es_http_server {
    struct MHD_Daemon *mhd;
    es_http_handler handler;
    es_http_quick_handler quick;
    es_http_guard guard;
    void *app;
    size_t body_max;
    atomic_ullong by_class[6];          /* 1xx..5xx by status / 100 */
    atomic_ullong latency[NBUCKETS + 1];
    atomic_ullong latency_sum_us;

    pthread_mutex_t mu;         /* active, the suspensions, the open list and the pool's queue */
    pthread_cond_t job;         /* a job queued, or stopping */
    pthread_cond_t drained;     /* no request in progress, none running in the pool */
    size_t active;              /* requests begun and not yet completed */
    size_t running;             /* jobs the pool is running */
    conn_state *jobs_head, *jobs_tail;
    size_t njobs, queue_max;
    es_http_pending *open;      /* deferred and not answered yet */
    es_http_stream *streams;    /* streaming answers their connection holds */
    bool streams_ending;        /* es_http_stop ends them, new ones too */
    bool forcing;               /* es_http_stop answers what is deferred */
    size_t orphans;             /* forced answers whose owner has not answered */
    bool freeing;               /* es_http_stop is done; the last orphan frees */
    bool stopping;
    unsigned nworkers;
    pthread_t *workers;

    /* the connections (see the phases above) */
    pthread_mutex_t conns_mu;
    pthread_cond_t sweep_cond;
    conn_track *conns_head, *conns_tail;    /* oldest first */
    size_t nconns, conns_max;
    long header_ms, body_ms;
    bool sweep_stop;
    bool sweeper_started;
    pthread_t sweeper;
    atomic_ullong cuts[NCUTS];
    atomic_ullong busy;         /* 503 server_busy answers */
    unsigned stop_grace_ms;
    MHD_socket quiesced;        /* the listen socket, after MHD_quiesce_daemon */

    /* HTTPS: the PEM texts, which libmicrohttpd reads from here */
    char *tls_cert, *tls_key;
    /* libmicrohttpd's first complaint while es_http_start runs, for its
     * error; what it says later (a client's failed handshake) is dropped */
    atomic_bool starting;
    atomic_bool start_claimed;
    char start_error[256];
};

/* A deferred request; its connection stays until the answer is queued. */
struct es_http_pending {
    es_http_server *srv;
    struct MHD_Connection *conn;
    bool suspended;             /* MHD_suspend_connection was called */
    bool answered;              /* res holds the answer */
    bool forced;                /* ... given by es_http_stop, not the owner */
    bool owner_done;            /* the owner answered, or never will */
    bool orphan;                /* the connection is gone; the owner frees */
    es_http_res res;
    es_http_pending *prev_open, *next_open;     /* srv->open while deferred */
};

struct conn_state {
    es_buf body;
    bool too_large;
    bool answered;              /* the 413 is queued already */
    bool deferred;
    struct timespec start;
    es_http_req req;            /* kept for a deferred answer */
    es_http_pending pending;
    conn_state *next_job;
    bool running;               /* a pool thread runs its handler; srv->mu */
    conn_track *track;
    es_http_stream *stream;     /* es_http_stream_open was called */
    bool stream_queued;         /* ... and its answer is MHD's (which releases it) */
};

/*
 * A streaming answer, held by two: its owner (until es_http_stream_end)
 * and the connection (until MHD frees the response, or the answer was
 * not a stream after all).  The owner's writes and the event loop's
 * reads meet under mu; the reader suspends the connection when the
 * buffer is empty, and the next write (or the end) resumes it, both
 * under mu, so a resume never comes before its suspend.
 *
 *   open --write--> buffered --reader takes all--> empty (suspended)
 *     ^                                               |
 *     +----------------- write: resume ---------------+
 *   end / es_http_stop: the reader sends what is left, then ends the body
 *   client gone: closed; the owner's next write is refused
 */
struct es_http_stream {
    pthread_mutex_t mu;
    es_http_server *srv;
    struct MHD_Connection *conn;
    es_buf buf;
    size_t off;                 /* buf's bytes before off are sent */
    bool suspended;             /* the reader suspended the connection */
    bool ended;                 /* no more writes: end after the buffer */
    bool closed;                /* the connection is done with it */
    int refs;
    void (*on_drain)(void *ctx);
    void *ctx;
    es_http_stream *prev, *next;    /* srv->streams; srv->mu */
};

const char *
es_http_header(const es_http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn_, MHD_HEADER_KIND, name);
}

const char *
es_http_query(const es_http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn_, MHD_GET_ARGUMENT_KIND, name);
}

void
es_http_res_header(es_http_res *res, const char *name, const char *value)
{
    if (res->nheaders >= ES_HTTP_HEADERS_MAX)
        return;
    snprintf(res->headers[res->nheaders][0], sizeof res->headers[0][0], "%s", name);
    snprintf(res->headers[res->nheaders][1], sizeof res->headers[0][1], "%s", value);
    res->nheaders++;
}

void
es_http_res_json(es_http_res *res, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;

    es_buf_reset(&res->body);
    res->status = status;
    if (text == NULL) {
        res->status = 500;
        es_buf_puts(&res->body, "{\"error\":{\"code\":\"internal\",\"message\":"
                                "\"could not encode the response\"}}");
    } else {
        es_buf_puts(&res->body, text);
        free(text);
    }
    json_decref(body);
}

/* Sends the error object e (stolen) as the body {"error": e}, with
 * extra's members (stolen, may be NULL) merged into it. */
static void
res_error_json(es_http_res *res, int status, json_t *e, json_t *extra)
{
    if (e != NULL && extra != NULL)
        json_object_update(e, extra);
    json_decref(extra);
    if (status == 503)
        es_http_res_header(res, "Retry-After", "1");
    es_http_res_json(res, status, e ? json_pack("{s:o}", "error", e) : NULL);
}

/* An answer of 500 or above other than 503 is a fault of the service or
 * of what it depends on, not of the client: the operator sees it in the
 * log with its reason (503, unavailable, is said by /readyz). */
static void
log_failure(int status, const es_error *err)
{
    if (status >= 500 && status != 503)
        es_log(ES_LOG_ERROR, "answered %d %s: %s", status, err->code, err->message);
}

void
es_http_res_error(es_http_res *res, int status, const char *code, const char *field,
                  json_t *extra, const char *fmt, ...)
{
    es_error err;
    va_list ap;

    es_error_clear(&err);
    va_start(ap, fmt);
    es_error_vset(&err, ES_EINTERNAL, code, field, fmt, ap);
    va_end(ap);
    log_failure(status, &err);
    res_error_json(res, status, es_error_to_json(&err), extra);
}

int
es_http_status(es_status st)
{
    switch (st) {
    case ES_OK: return 200;
    case ES_ECONFLICT: return 409;
    case ES_ENOTFOUND: return 404;
    case ES_EINVALID: return 400;
    case ES_ETOOLARGE: return 413;
    case ES_EIDCLASH: return 409;
    case ES_ERULE: return 422;
    case ES_EUNAVAILABLE: return 503;
    default: return 500;
    }
}

void
es_http_res_from_error(es_http_res *res, const es_error *err)
{
    log_failure(es_http_status(err->status), err);
    res_error_json(res, es_http_status(err->status), es_error_to_json(err), NULL);
}

static void
count(es_http_server *srv, int status, const struct timespec *start)
{
    struct timespec now;
    double secs;
    size_t i;

    clock_gettime(CLOCK_MONOTONIC, &now);
    secs = (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
    if (status >= 100 && status < 600)
        atomic_fetch_add(&srv->by_class[status / 100], 1);
    for (i = 0; i < NBUCKETS && secs > buckets[i]; i++)
        ;
    atomic_fetch_add(&srv->latency[i], 1);
    atomic_fetch_add(&srv->latency_sum_us, (unsigned long long)(secs * 1e6));
}

static enum MHD_Result
send_res(es_http_server *srv, struct MHD_Connection *c, es_http_res *res,
         const struct timespec *start)
{
    struct MHD_Response *r;
    enum MHD_Result ok;

    if (es_buf_failed(&res->body)) {
        es_buf_reset(&res->body);
        res->status = 500;
        es_buf_puts(&res->body, "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"out of memory\"}}");
    }
    r = MHD_create_response_from_buffer(res->body.len, res->body.data ? res->body.data : (char *)"",
                                        MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type",
                            res->content_type ? res->content_type : "application/json");
    for (int i = 0; i < res->nheaders; i++)
        MHD_add_response_header(r, res->headers[i][0], res->headers[i][1]);
    ok = MHD_queue_response(c, (unsigned)res->status, r);
    MHD_destroy_response(r);
    count(srv, res->status, start);
    return ok;
}

/* Sends res, or, for a request that opened a stream and answers 200,
 * the stream's head with a body read from the stream. */
static enum MHD_Result send_answer(es_http_server *srv, struct MHD_Connection *c, conn_state *st,
                                   es_http_res *res);

/* ---- streaming answers ------------------------------------------------------ */

/* A stream buffer larger than this is freed, not kept, once sent. */
#define STREAM_KEEP_MAX (64 * 1024)

/* Drops one hold on s; the last frees it.  s->mu not held. */
static void
stream_unref(es_http_stream *s)
{
    bool last;

    pthread_mutex_lock(&s->mu);
    last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last)
        return;
    es_buf_free(&s->buf);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* The connection is done with s (answered, gone, or not a stream after
 * all): it leaves the server's list and takes no more writes. */
static void
stream_conn_done(es_http_stream *s)
{
    es_http_server *srv = s->srv;

    pthread_mutex_lock(&srv->mu);
    if (s->prev)
        s->prev->next = s->next;
    else if (srv->streams == s)
        srv->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    pthread_mutex_lock(&s->mu);
    s->closed = s->ended = true;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&srv->mu);
    stream_unref(s);
}

/* MHD's free callback of a streaming response. */
static void
stream_free(void *cls)
{
    stream_conn_done(cls);
}

/* MHD's content reader: what is buffered, else the end once ended, else
 * nothing and the connection suspended until the next write. */
static ssize_t
stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    es_http_stream *s = cls;
    size_t n;

    (void)pos;
    pthread_mutex_lock(&s->mu);
    n = s->buf.len - s->off;
    if (n > 0) {
        if (n > max)
            n = max;
        memcpy(out, s->buf.data + s->off, n);
        s->off += n;
        if (s->off == s->buf.len) {
            if (s->buf.cap > STREAM_KEEP_MAX)
                es_buf_free(&s->buf);
            else
                es_buf_reset(&s->buf);
            s->off = 0;
            if (s->on_drain != NULL)
                s->on_drain(s->ctx);
        } else if (s->off >= STREAM_KEEP_MAX && s->off > s->buf.len / 2) {
            memmove(s->buf.data, s->buf.data + s->off, s->buf.len - s->off + 1);
            s->buf.len -= s->off;
            s->off = 0;
        }
    } else if (s->ended) {
        pthread_mutex_unlock(&s->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        s->suspended = true;
        MHD_suspend_connection(s->conn);
    }
    pthread_mutex_unlock(&s->mu);
    return (ssize_t)n;
}

/* Resumes s's connection if its reader suspended it; s->mu held. */
static void
stream_wake(es_http_stream *s)
{
    if (s->suspended) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
}

es_status
es_http_stream_open(const es_http_req *req, void (*on_drain)(void *ctx), void *ctx,
                    es_http_stream **out, es_error *err)
{
    conn_state *st = (conn_state *)(void *)((char *)req - offsetof(conn_state, req));
    es_http_server *srv = st->pending.srv;
    es_http_stream *s;

    *out = NULL;
    if (st->stream != NULL)
        return es_error_set(err, ES_EINTERNAL, NULL, NULL, "the request streams already");
    if ((s = calloc(1, sizeof *s)) == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a stream");
    pthread_mutex_init(&s->mu, NULL);
    s->srv = srv;
    s->conn = st->pending.conn;
    s->refs = 2;                /* the owner's and the connection's */
    s->on_drain = on_drain;
    s->ctx = ctx;
    pthread_mutex_lock(&srv->mu);
    s->next = srv->streams;
    if (srv->streams)
        srv->streams->prev = s;
    srv->streams = s;
    if (srv->streams_ending)    /* stopping: the stream ends at once */
        s->ended = true;
    pthread_mutex_unlock(&srv->mu);
    st->stream = s;
    *out = s;
    return ES_OK;
}

es_status
es_http_stream_write(es_http_stream *s, const char *data, size_t len, size_t *buffered)
{
    es_status st = ES_OK;

    pthread_mutex_lock(&s->mu);
    if (s->ended || s->closed) {
        st = ES_EUNAVAILABLE;
    } else {
        es_buf_append(&s->buf, data, len);
        if (es_buf_failed(&s->buf)) {
            st = ES_ENOMEM;
            s->ended = true;    /* a hole in the stream is worse than its end */
        }
    }
    if (st != ES_EUNAVAILABLE)
        stream_wake(s);
    if (buffered != NULL)
        *buffered = s->buf.failed ? 0 : s->buf.len - s->off;
    pthread_mutex_unlock(&s->mu);
    return st;
}

size_t
es_http_stream_buffered(es_http_stream *s)
{
    size_t n;

    pthread_mutex_lock(&s->mu);
    n = s->buf.failed ? 0 : s->buf.len - s->off;
    pthread_mutex_unlock(&s->mu);
    return n;
}

bool
es_http_stream_alive(es_http_stream *s)
{
    bool alive;

    pthread_mutex_lock(&s->mu);
    alive = !s->ended && !s->closed;
    pthread_mutex_unlock(&s->mu);
    return alive;
}

void
es_http_stream_end(es_http_stream *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->ended = true;
    s->on_drain = NULL;
    if (!s->closed)
        stream_wake(s);
    pthread_mutex_unlock(&s->mu);
    stream_unref(s);
}

static enum MHD_Result
send_answer(es_http_server *srv, struct MHD_Connection *c, conn_state *st, es_http_res *res)
{
    es_http_stream *s = st->stream;
    struct MHD_Response *r;
    enum MHD_Result ok;

    if (s == NULL || st->stream_queued)
        return send_res(srv, c, res, &st->start);
    if (res->status != 200) {
        st->stream = NULL;
        stream_conn_done(s);
        return send_res(srv, c, res, &st->start);
    }
    st->stream_queued = true;   /* the response holds the connection's part */
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 8192, stream_read, s, stream_free);
    if (r == NULL) {
        stream_conn_done(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type",
                            res->content_type ? res->content_type : "application/json");
    for (int i = 0; i < res->nheaders; i++)
        MHD_add_response_header(r, res->headers[i][0], res->headers[i][1]);
    ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    count(srv, 200, &st->start);
    return ok;
}

static enum MHD_Result
too_large(es_http_server *srv, struct MHD_Connection *c, conn_state *st)
{
    es_http_res res = {0};
    enum MHD_Result ok;

    es_http_res_error(&res, 413, "body_too_large", NULL, NULL,
                      "request body is larger than %zu bytes", srv->body_max);
    ok = send_res(srv, c, &res, &st->start);
    es_buf_free(&res.body);
    return ok;
}

static long long
now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void
set_phase(conn_track *t, conn_phase phase)
{
    if (t == NULL)
        return;
    atomic_store(&t->since_ms, now_ms());
    atomic_store(&t->phase, (int)phase);
}

/* Fills res with the 503 of a server that is stopping. */
static void
res_shutting_down(es_http_res *res)
{
    *res = (es_http_res){0};
    es_http_res_error(res, 503, "shutting_down", NULL, NULL,
                      "the server is shutting down; retry on another instance or later");
}

static void
open_unlink(es_http_server *srv, es_http_pending *p)
{
    if (p->prev_open)
        p->prev_open->next_open = p->next_open;
    else if (srv->open == p)
        srv->open = p->next_open;
    if (p->next_open)
        p->next_open->prev_open = p->prev_open;
    p->prev_open = p->next_open = NULL;
}

/* Answers p 503 shutting_down in place of its owner; srv->mu held. */
static void
force_answer(es_http_server *srv, es_http_pending *p)
{
    open_unlink(srv, p);
    res_shutting_down(&p->res);
    p->answered = true;
    p->forced = true;
    if (p->suspended)
        MHD_resume_connection(p->conn);
}

es_http_pending *
es_http_defer(const es_http_req *req)
{
    conn_state *st = (conn_state *)(void *)((char *)req - offsetof(conn_state, req));
    es_http_pending *p = &st->pending;
    es_http_server *srv = p->srv;

    if (st->deferred)
        return p;
    st->deferred = true;
    pthread_mutex_lock(&srv->mu);
    p->next_open = srv->open;
    if (srv->open)
        srv->open->prev_open = p;
    srv->open = p;
    if (srv->forcing)           /* the stop already answered the others */
        force_answer(srv, p);
    pthread_mutex_unlock(&srv->mu);
    return p;
}

static void server_free(es_http_server *srv);

void
es_http_answer(es_http_pending *p, es_http_res *res)
{
    es_http_server *srv = p->srv;
    conn_state *orphan = NULL;
    bool free_srv = false;

    pthread_mutex_lock(&srv->mu);
    if (p->forced) {
        /* es_http_stop answered it already: this answer is dropped */
        es_buf_free(&res->body);
        *res = (es_http_res){0};
        p->owner_done = true;
        if (p->orphan) {
            orphan = (conn_state *)(void *)((char *)p - offsetof(conn_state, pending));
            srv->orphans--;
            free_srv = srv->freeing && srv->orphans == 0;
        }
    } else {
        open_unlink(srv, p);
        p->res = *res;              /* the body moves with it */
        *res = (es_http_res){0};
        p->answered = true;
        p->owner_done = true;
        if (p->suspended)
            MHD_resume_connection(p->conn);
    }
    pthread_mutex_unlock(&srv->mu);
    if (orphan != NULL) {
        es_buf_free(&orphan->body);
        es_buf_free(&orphan->pending.res.body);
        free(orphan);
    }
    if (free_srv)
        server_free(srv);
}

/* Sends the answer of a deferred request, once it is in. */
static enum MHD_Result
send_deferred(es_http_server *srv, struct MHD_Connection *c, conn_state *st)
{
    enum MHD_Result ok;

    ok = send_answer(srv, c, st, &st->pending.res);
    es_buf_free(&st->pending.res.body);
    return ok;
}

/* After a deferral: suspends the connection until es_http_answer, or
 * sends the answer if it came already. */
static enum MHD_Result
suspend_unless_answered(es_http_server *srv, struct MHD_Connection *c, conn_state *st)
{
    pthread_mutex_lock(&srv->mu);
    if (!st->pending.answered) {
        st->pending.suspended = true;
        MHD_suspend_connection(c);
        pthread_mutex_unlock(&srv->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&srv->mu);
    return send_deferred(srv, c, st);
}

/* A pool thread: runs the handler of each queued request. */
static void *
work(void *arg)
{
    es_http_server *srv = arg;
    conn_state *st;

    for (;;) {
        es_http_res res = {.status = 200};

        pthread_mutex_lock(&srv->mu);
        while (srv->jobs_head == NULL && !srv->stopping)
            pthread_cond_wait(&srv->job, &srv->mu);
        if ((st = srv->jobs_head) == NULL) {
            pthread_mutex_unlock(&srv->mu);
            return NULL;
        }
        if ((srv->jobs_head = st->next_job) == NULL)
            srv->jobs_tail = NULL;
        st->next_job = NULL;
        srv->njobs--;
        srv->running++;
        st->running = true;     /* es_http_stop leaves it to this thread */
        pthread_mutex_unlock(&srv->mu);
        srv->handler(srv->app, &st->req, &res);
        es_http_answer(&st->pending, &res);
        pthread_mutex_lock(&srv->mu);
        if (--srv->running == 0)
            pthread_cond_broadcast(&srv->drained);
        pthread_mutex_unlock(&srv->mu);
    }
}

/* Queues st for the pool; false (st not queued) when the queue is full. */
static bool
enqueue(es_http_server *srv, conn_state *st)
{
    bool ok;

    pthread_mutex_lock(&srv->mu);
    ok = srv->njobs < srv->queue_max && !srv->forcing;
    if (ok) {
        if (srv->jobs_tail)
            srv->jobs_tail->next_job = st;
        else
            srv->jobs_head = st;
        srv->jobs_tail = st;
        srv->njobs++;
        pthread_cond_signal(&srv->job);
    }
    pthread_mutex_unlock(&srv->mu);
    return ok;
}

static conn_track *
track_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci != NULL ? ci->socket_context : NULL;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
           const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    es_http_server *srv = cls;
    conn_state *st = *con_cls;
    es_http_res res = {0};
    enum MHD_Result ok;

    (void)version;
    if (st == NULL) {
        const char *len = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");

        if ((st = calloc(1, sizeof *st)) == NULL)
            return MHD_NO;
        pthread_mutex_lock(&srv->mu);
        srv->active++;
        pthread_mutex_unlock(&srv->mu);
        st->pending.srv = srv;
        st->pending.conn = c;
        st->track = track_of(c);
        set_phase(st->track, PHASE_BODY);
        clock_gettime(CLOCK_MONOTONIC, &st->start);
        *con_cls = st;
        if (len != NULL && strtoull(len, NULL, 10) > srv->body_max) {
            st->too_large = true;
            st->answered = true;
            return too_large(srv, c, st);
        }
        return MHD_YES;
    }
    if (*upload_size != 0) {
        /* Past the cap (a chunked body has no Content-Length to refuse
         * up front): keep reading, keep nothing, answer 413 at the end. */
        if (!st->too_large && st->body.len + *upload_size > srv->body_max) {
            st->too_large = true;
            es_buf_free(&st->body);
        }
        if (!st->too_large)
            es_buf_append(&st->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    set_phase(st->track, PHASE_BUSY);
    if (st->too_large)
        return st->answered ? MHD_YES : too_large(srv, c, st);

    if (st->deferred)           /* resumed: the answer is in */
        return send_deferred(srv, c, st);
    st->req = (es_http_req){method, url, st->body.data ? st->body.data : "", st->body.len, c, ""};
    if (es_buf_failed(&st->body)) {
        es_http_res_error(&res, 500, "out_of_memory", NULL, NULL, "could not hold the request body");
    } else if (srv->guard != NULL && !srv->guard(srv->app, &st->req, &res)) {
        /* refused before any handler: res says why */
    } else {
        res.status = 200;
        if (srv->quick != NULL && srv->quick(srv->app, &st->req, &res)) {
            if (st->deferred)
                return suspend_unless_answered(srv, c, st);
        } else if (srv->nworkers > 0) {
            es_buf_free(&res.body);
            es_http_defer(&st->req);
            if (!enqueue(srv, st)) {
                es_http_res busy = {0};

                es_http_res_error(&busy, 503, "server_busy", NULL,
                                  json_pack("{s:I}", "queue_max", (json_int_t)srv->queue_max),
                                  "%zu requests are queued for the worker threads already; "
                                  "retry later", srv->queue_max);
                pthread_mutex_lock(&srv->mu);
                st->pending.owner_done = true;      /* no worker will have it */
                if (!st->pending.answered) {        /* else the stop's answer */
                    atomic_fetch_add(&srv->busy, 1);
                    open_unlink(srv, &st->pending);
                    st->pending.res = busy;
                    busy = (es_http_res){0};
                    st->pending.answered = true;
                }
                pthread_mutex_unlock(&srv->mu);
                es_buf_free(&busy.body);
            }
            return suspend_unless_answered(srv, c, st);
        } else {
            srv->handler(srv->app, &st->req, &res);
            if (st->deferred) {
                es_buf_free(&res.body);
                return suspend_unless_answered(srv, c, st);
            }
        }
    }
    ok = send_answer(srv, c, st, &res);
    es_buf_free(&res.body);
    return ok;
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    es_http_server *srv = cls;
    conn_state *st = *con_cls;
    bool keep;

    (void)toe;
    if (st == NULL)
        return;
    /* answered on the wire, or the client is gone */
    (void)c;
    set_phase(st->track, PHASE_HEADERS);
    pthread_mutex_lock(&srv->mu);
    if (--srv->active == 0 && srv->running == 0)
        pthread_cond_broadcast(&srv->drained);
    if (st->deferred && !st->pending.answered) {
        /* not expected (a suspended connection is not closed), but the
         * owner must then find its answer dropped, not freed memory */
        open_unlink(srv, &st->pending);
        st->pending.answered = st->pending.forced = true;
    }
    keep = st->deferred && !st->pending.owner_done;
    if (keep) {
        st->pending.orphan = true;
        srv->orphans++;
    }
    pthread_mutex_unlock(&srv->mu);
    if (st->stream != NULL && !st->stream_queued)
        stream_conn_done(st->stream);       /* never sent: no response holds it */
    *con_cls = NULL;
    if (!keep) {
        es_buf_free(&st->body);
        es_buf_free(&st->pending.res.body);
        free(st);
    }
}

/* ---- the connections ------------------------------------------------------ */

/* Closes t's connection: MHD sees the client leave.  conns_mu held. */
static void
cut(es_http_server *srv, conn_track *t, int why)
{
    if (t->cut)
        return;
    t->cut = true;
    shutdown(t->fd, SHUT_RDWR);
    atomic_fetch_add(&srv->cuts[why], 1);
}

/*
 * MHD's connection notice.  The close notice comes before MHD closes the
 * socket, and both take conns_mu, so the sweeper never shuts down a
 * descriptor that another connection reuses.
 */
static void
on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
              enum MHD_ConnectionNotificationCode toe)
{
    es_http_server *srv = cls;
    conn_track *t;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);

        if ((t = calloc(1, sizeof *t)) == NULL || ci == NULL) {
            free(t);
            *socket_context = NULL;
            return;
        }
        t->fd = ci->connect_fd;
        set_phase(t, PHASE_HEADERS);
        pthread_mutex_lock(&srv->conns_mu);
        t->prev = srv->conns_tail;
        if (srv->conns_tail)
            srv->conns_tail->next = t;
        else
            srv->conns_head = t;
        srv->conns_tail = t;
        if (++srv->nconns > srv->conns_max) {
            conn_track *old = NULL;

            /* the one waiting longest for a request: a keep-alive client
             * answered a moment ago is not an attacker's stalled connection,
             * however long ago it connected */
            for (conn_track *o = srv->conns_head; o != t; o = o->next)
                if (!o->cut && atomic_load(&o->phase) == PHASE_HEADERS &&
                    (old == NULL || atomic_load(&o->since_ms) < atomic_load(&old->since_ms)))
                    old = o;
            if (old == NULL)
                old = t;
            cut(srv, old, old == t ? CUT_REFUSED : CUT_EVICTED);
        }
        pthread_mutex_unlock(&srv->conns_mu);
        *socket_context = t;
        return;
    }
    if ((t = *socket_context) == NULL)
        return;
    pthread_mutex_lock(&srv->conns_mu);
    if (t->prev)
        t->prev->next = t->next;
    else
        srv->conns_head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        srv->conns_tail = t->prev;
    srv->nconns--;
    pthread_mutex_unlock(&srv->conns_mu);
    *socket_context = NULL;
    free(t);
}

/* The sweeper thread: closes connections past their header or body
 * deadline, a few times per deadline. */
static void *
sweep(void *arg)
{
    es_http_server *srv = arg;
    long tick = (srv->header_ms < srv->body_ms ? srv->header_ms : srv->body_ms) / 4;
    struct timespec until;

    tick = tick < 50 ? 50 : tick > 1000 ? 1000 : tick;
    pthread_mutex_lock(&srv->conns_mu);
    while (!srv->sweep_stop) {
        long long now = now_ms();

        for (conn_track *t = srv->conns_head; t != NULL; t = t->next) {
            int phase = atomic_load(&t->phase);
            long long age = now - atomic_load(&t->since_ms);

            if (phase == PHASE_HEADERS && age > srv->header_ms)
                cut(srv, t, CUT_HEADERS);
            else if (phase == PHASE_BODY && age > srv->body_ms)
                cut(srv, t, CUT_BODY);
        }
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += tick * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&srv->sweep_cond, &srv->conns_mu, &until);
    }
    pthread_mutex_unlock(&srv->conns_mu);
    return NULL;
}

/* libmicrohttpd's error log: keeps the first message of the start. */
static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    es_http_server *srv = cls;
    size_t n;

    if (!atomic_load(&srv->starting) || atomic_exchange(&srv->start_claimed, true))
        return;
    vsnprintf(srv->start_error, sizeof srv->start_error, fmt, ap);
    n = strlen(srv->start_error);
    while (n > 0 && (srv->start_error[n - 1] == '\n' || srv->start_error[n - 1] == '.'))
        srv->start_error[--n] = '\0';
}

/* Reads the PEM file at path (what names it in messages) into *out
 * (malloc'd, NUL-terminated). */
static es_status
read_pem(const char *path, const char *what, char **out, es_error *err)
{
    FILE *f = NULL;
    char *text = NULL;
    size_t len = 0, got;
    es_status st = ES_OK;

    *out = NULL;
    if ((f = fopen(path, "r")) == NULL) {
        st = es_error_set(err, ES_EINVALID, "tls_invalid", NULL,
                          "could not open the TLS %s \"%s\": %s", what, path, strerror(errno));
        goto done;
    }
    if ((text = malloc(TLS_FILE_MAX + 1)) == NULL) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate for the TLS %s", what);
        goto done;
    }
    while (len <= TLS_FILE_MAX && (got = fread(text + len, 1, TLS_FILE_MAX + 1 - len, f)) > 0)
        len += got;
    if (ferror(f)) {
        st = es_error_set(err, ES_EINVALID, "tls_invalid", NULL,
                          "could not read the TLS %s \"%s\"", what, path);
        goto done;
    }
    if (len > TLS_FILE_MAX) {
        st = es_error_set(err, ES_EINVALID, "tls_invalid", NULL,
                          "TLS %s \"%s\" is larger than %d bytes", what, path, TLS_FILE_MAX);
        goto done;
    }
    text[len] = '\0';
    if (strstr(text, "-----BEGIN ") == NULL) {
        st = es_error_set(err, ES_EINVALID, "tls_invalid", NULL,
                          "TLS %s \"%s\" is not in PEM format", what, path);
        goto done;
    }
    *out = text;
    text = NULL;
done:
    if (text != NULL) {
        explicit_bzero(text, TLS_FILE_MAX + 1);
        free(text);
    }
    if (f != NULL)
        fclose(f);
    return st;
}

/* Frees a PEM text, wiping it first (it may be a private key). */
static void
pem_free(char *text)
{
    if (text != NULL) {
        explicit_bzero(text, strlen(text));
        free(text);
    }
}

/*
 * Whether GnuTLS (libmicrohttpd's TLS) takes srv's certificate and key as
 * a pair: asked here, where the answer has a kind, since libmicrohttpd
 * would only say so in its log.
 */
static es_status
tls_check(const es_http_server *srv, const es_http_config *cfg, es_error *err)
{
    gnutls_certificate_credentials_t cred = NULL;
    gnutls_datum_t cert, key;
    int rc;
    es_status st = ES_OK;

    cert = (gnutls_datum_t){(unsigned char *)srv->tls_cert, (unsigned)strlen(srv->tls_cert)};
    key = (gnutls_datum_t){(unsigned char *)srv->tls_key, (unsigned)strlen(srv->tls_key)};
    if (gnutls_certificate_allocate_credentials(&cred) != GNUTLS_E_SUCCESS)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate TLS credentials");
    rc = gnutls_certificate_set_x509_key_mem(cred, &cert, &key, GNUTLS_X509_FMT_PEM);
    if (rc < 0)
        st = es_error_set(err, ES_EINVALID, "tls_invalid", NULL,
                          "could not use the TLS certificate \"%s\" with the key \"%s\": %s",
                          cfg->tls_cert, cfg->tls_key, gnutls_strerror(rc));
    gnutls_certificate_free_credentials(cred);
    return st;
}

/* Reads cfg's certificate and key into srv; ES_OK with neither set. */
static es_status
tls_load(es_http_server *srv, const es_http_config *cfg, es_error *err)
{
    bool cert = cfg->tls_cert != NULL && cfg->tls_cert[0] != '\0';
    bool key = cfg->tls_key != NULL && cfg->tls_key[0] != '\0';
    es_status st;

    if (!cert && !key)
        return ES_OK;
    if (!cert || !key)
        return es_error_set(err, ES_EINVALID, "tls_invalid", NULL,
                            "HTTPS needs both a certificate and a key; only the %s is set",
                            cert ? "certificate" : "key");
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        return es_error_set(err, ES_EINVALID, "tls_invalid", NULL,
                            "this libmicrohttpd was built without TLS support");
    if ((st = read_pem(cfg->tls_cert, "certificate", &srv->tls_cert, err)) != ES_OK ||
        (st = read_pem(cfg->tls_key, "key", &srv->tls_key, err)) != ES_OK)
        return st;
    return tls_check(srv, cfg, err);
}

bool
es_http_is_tls(const es_http_server *srv)
{
    return srv->tls_cert != NULL;
}

es_status
es_http_start(es_http_server **out, const es_http_config *cfg, es_http_handler handler,
              void *app, es_error *err)
{
    es_http_server *srv;
    struct sockaddr_in addr;
    struct MHD_OptionItem tls[3] = {{MHD_OPTION_END, 0, NULL}};
    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                         MHD_USE_ERROR_LOG | MHD_USE_ITC;
    unsigned threads = cfg->threads > 0 ? cfg->threads : 1;
    pthread_condattr_t attr;
    es_status st;

    *out = NULL;
    es_error_clear(err);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->bind ? cfg->bind : "127.0.0.1", &addr.sin_addr) != 1)
        return es_error_set(err, ES_EINVALID, "bind_invalid", NULL,
                            "could not parse the listen address \"%s\"", cfg->bind);
    if ((srv = calloc(1, sizeof *srv)) == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate the HTTP server");
    srv->handler = handler;
    srv->quick = cfg->quick;
    srv->guard = cfg->guard;
    srv->app = app;
    srv->body_max = cfg->body_max;
    srv->quiesced = MHD_INVALID_SOCKET;
    srv->conns_max = cfg->connections_max ? cfg->connections_max : CONNECTIONS_MAX_DEFAULT;
    srv->header_ms = cfg->header_timeout_ms ? cfg->header_timeout_ms : HEADER_TIMEOUT_MS_DEFAULT;
    srv->body_ms = cfg->body_timeout_ms ? cfg->body_timeout_ms : BODY_TIMEOUT_MS_DEFAULT;
    srv->queue_max = cfg->queue_max ? cfg->queue_max
                                    : (size_t)QUEUE_PER_WORKER_DEFAULT * (cfg->workers ? cfg->workers : 1);
    srv->stop_grace_ms = cfg->stop_grace_ms ? cfg->stop_grace_ms : STOP_GRACE_MS_DEFAULT;
    pthread_mutex_init(&srv->mu, NULL);
    pthread_mutex_init(&srv->conns_mu, NULL);
    /* deadlines are monotonic: a clock step must not end or stretch a wait */
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->job, NULL);
    pthread_cond_init(&srv->drained, &attr);
    pthread_cond_init(&srv->sweep_cond, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&srv->sweeper, NULL, sweep, srv) != 0) {
        es_http_stop(srv);
        return es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not start the HTTP sweeper");
    }
    srv->sweeper_started = true;
    if ((st = tls_load(srv, cfg, err)) != ES_OK) {
        es_http_stop(srv);
        return st;
    }
    if (srv->tls_cert != NULL) {
        flags |= MHD_USE_TLS;
        tls[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, srv->tls_cert};
        tls[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, srv->tls_key};
        tls[2] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    }
    if (cfg->workers > 0 && (srv->workers = calloc(cfg->workers, sizeof *srv->workers)) == NULL) {
        es_http_stop(srv);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate the HTTP server");
    }
    for (; srv->nworkers < cfg->workers; srv->nworkers++) {
        if (pthread_create(&srv->workers[srv->nworkers], NULL, work, srv) != 0) {
            es_http_stop(srv);
            return es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not start an HTTP worker");
        }
    }
    /* Set before the pool threads start (which orders the write before
     * them): a handler may read it through the application, for /metrics. */
    *out = srv;
    atomic_store(&srv->starting, true);
    srv->mhd = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, srv,
                                MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,
                                MHD_OPTION_ARRAY, tls,
                                MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                                MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)threads,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                                MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
                                MHD_OPTION_CONNECTION_TIMEOUT,
                                (unsigned int)(cfg->idle_timeout_s ? cfg->idle_timeout_s
                                                                   : IDLE_TIMEOUT_S_DEFAULT),
                                /* a backstop well past the cap that
                                 * on_connection() keeps: MHD splits it between
                                 * its threads, which do not get equal shares of
                                 * the clients, counts the connections cut but
                                 * not yet closed, and closes a new one at once
                                 * past it */
                                MHD_OPTION_CONNECTION_LIMIT,
                                (unsigned int)(2 * srv->conns_max + 8 * threads),
                                MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)1024,
                                /* per connection, for the request line, headers
                                 * and the read buffer (bodies are copied out as
                                 * they come); libmicrohttpd zeroes it for every
                                 * request, and its default of 32 KiB cost
                                 * es-command about 2.5 us per request */
                                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
                                MHD_OPTION_END);
    atomic_store(&srv->starting, false);
    if (srv->mhd == NULL) {
        /* libmicrohttpd says why (a port in use) only in its log, whose
         * first line is the cause. */
        *out = NULL;
        st = es_error_set(err, ES_EUNAVAILABLE, "listen_failed", NULL,
                          "could not listen on %s:%u: %s", cfg->bind ? cfg->bind : "127.0.0.1",
                          cfg->port, srv->start_error[0] ? srv->start_error : "in use?");
        es_http_stop(srv);
        return st;
    }
    return ES_OK;
}

/* Waits until no request is in progress, or until ms passed; srv->mu held. */
static void
wait_drained(es_http_server *srv, long ms)
{
    struct timespec deadline;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (ms % 1000) * 1000000L;
    deadline.tv_sec += deadline.tv_nsec / 1000000000L;
    deadline.tv_nsec %= 1000000000L;
    while ((srv->active > 0 || srv->running > 0) &&
           pthread_cond_timedwait(&srv->drained, &srv->mu, &deadline) == 0)
        ;
}

static void
server_free(es_http_server *srv)
{
    conn_track *t, *next;

    for (t = srv->conns_head; t != NULL; t = next) {     /* none, normally */
        next = t->next;
        free(t);
    }
    free(srv->workers);
    pthread_cond_destroy(&srv->job);
    pthread_cond_destroy(&srv->drained);
    pthread_cond_destroy(&srv->sweep_cond);
    pthread_mutex_destroy(&srv->mu);
    pthread_mutex_destroy(&srv->conns_mu);
    pem_free(srv->tls_cert);
    pem_free(srv->tls_key);
    free(srv);
}

/*
 * The stop, in order: no new connections (MHD_quiesce_daemon); the grace
 * for requests in progress to be answered by their owners (the committer
 * and the pool still run); then every deferred request still open, and
 * every job still queued, is answered 503 shutting_down and its
 * connection resumed, so that MHD_stop_daemon finds none suspended (the
 * jobs the pool is running are waited for instead); the pool ends; srv
 * is freed, unless an owner still holds a forced request (its
 * es_http_answer frees srv then).
 */
void
es_http_stop(es_http_server *srv)
{
    bool free_now;

    if (srv == NULL)
        return;
    if (srv->mhd != NULL)
        srv->quiesced = MHD_quiesce_daemon(srv->mhd);
    pthread_mutex_lock(&srv->mu);
    /* Streams have no end of their own: each ends after what it has
     * buffered, so that the grace is not spent waiting for them. */
    srv->streams_ending = true;
    for (es_http_stream *s = srv->streams; s != NULL; s = s->next) {
        pthread_mutex_lock(&s->mu);
        s->ended = true;
        stream_wake(s);
        pthread_mutex_unlock(&s->mu);
    }
    if (srv->mhd != NULL)
        wait_drained(srv, (long)srv->stop_grace_ms);
    srv->forcing = true;
    while (srv->jobs_head != NULL) {
        conn_state *st = srv->jobs_head;

        srv->jobs_head = st->next_job;
        st->next_job = NULL;
        st->pending.owner_done = true;      /* no worker will run it */
        force_answer(srv, &st->pending);
    }
    srv->jobs_tail = NULL;
    srv->njobs = 0;
    /* A handler running on the pool reads its request (the path, the
     * headers) from the connection's memory, which MHD reclaims once an
     * answer is sent: it answers itself, and is waited for, as the join
     * of the pool below would anyway. */
    for (es_http_pending *p = srv->open, *next; p != NULL; p = next) {
        conn_state *st = (conn_state *)(void *)((char *)p - offsetof(conn_state, pending));

        next = p->next_open;
        if (!st->running)
            force_answer(srv, p);
    }
    while (srv->running > 0)
        pthread_cond_wait(&srv->drained, &srv->mu);
    if (srv->mhd != NULL)
        wait_drained(srv, STOP_FLUSH_MS);
    pthread_mutex_unlock(&srv->mu);
    if (srv->mhd != NULL)
        MHD_stop_daemon(srv->mhd);
    if (srv->quiesced != MHD_INVALID_SOCKET)
        close(srv->quiesced);
    pthread_mutex_lock(&srv->mu);
    srv->stopping = true;
    pthread_cond_broadcast(&srv->job);
    pthread_mutex_unlock(&srv->mu);
    for (unsigned i = 0; i < srv->nworkers; i++)
        pthread_join(srv->workers[i], NULL);
    if (srv->sweeper_started) {
        pthread_mutex_lock(&srv->conns_mu);
        srv->sweep_stop = true;
        pthread_cond_broadcast(&srv->sweep_cond);
        pthread_mutex_unlock(&srv->conns_mu);
        pthread_join(srv->sweeper, NULL);
    }
    pthread_mutex_lock(&srv->mu);
    srv->freeing = true;
    free_now = srv->orphans == 0;
    pthread_mutex_unlock(&srv->mu);
    if (free_now)
        server_free(srv);
}

void
es_http_metrics(es_http_server *srv, const char *prefix, es_buf *out)
{
    unsigned long long cum = 0;
    size_t i;

    es_buf_printf(out, "# HELP %s_http_requests_total HTTP requests answered, by status class\n"
                       "# TYPE %s_http_requests_total counter\n", prefix, prefix);
    for (i = 1; i < 6; i++)
        es_buf_printf(out, "%s_http_requests_total{class=\"%zuxx\"} %llu\n", prefix, i,
                      (unsigned long long)atomic_load(&srv->by_class[i]));
    es_buf_printf(out, "# HELP %s_http_request_duration_seconds time from request to response\n"
                       "# TYPE %s_http_request_duration_seconds histogram\n", prefix, prefix);
    for (i = 0; i < NBUCKETS; i++) {
        cum += atomic_load(&srv->latency[i]);
        es_buf_printf(out, "%s_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n", prefix,
                      buckets[i], cum);
    }
    cum += atomic_load(&srv->latency[NBUCKETS]);
    es_buf_printf(out, "%s_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", prefix, cum);
    es_buf_printf(out, "%s_http_request_duration_seconds_sum %.6f\n", prefix,
                  (double)atomic_load(&srv->latency_sum_us) / 1e6);
    es_buf_printf(out, "%s_http_request_duration_seconds_count %llu\n", prefix, cum);
    pthread_mutex_lock(&srv->conns_mu);
    i = srv->nconns;
    pthread_mutex_unlock(&srv->conns_mu);
    es_buf_printf(out, "# HELP %s_http_connections open HTTP connections\n"
                       "# TYPE %s_http_connections gauge\n%s_http_connections %zu\n",
                  prefix, prefix, prefix, i);
    es_buf_printf(out, "# HELP %s_http_connections_closed_total connections this server closed "
                       "before an answer, by reason\n"
                       "# TYPE %s_http_connections_closed_total counter\n", prefix, prefix);
    for (i = 0; i < NCUTS; i++)
        es_buf_printf(out, "%s_http_connections_closed_total{reason=\"%s\"} %llu\n", prefix,
                      cut_names[i], (unsigned long long)atomic_load(&srv->cuts[i]));
    es_buf_printf(out, "# HELP %s_http_busy_total requests refused 503 server_busy (worker "
                       "queue full)\n# TYPE %s_http_busy_total counter\n%s_http_busy_total %llu\n",
                  prefix, prefix, prefix, (unsigned long long)atomic_load(&srv->busy));
}
