/*
 * es_http: libmicrohttpd glue (see http.h).  A connection's body is
 * gathered into its own buffer; the handler runs once the body is
 * complete, builds an es_http_res, and this file turns it into an MHD
 * response.  Counters are plain atomics so /metrics costs no lock.
 */
#include "http.h"

#include "event.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Latency buckets of the request histogram, in seconds. */
static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5};
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

struct es_http_server {
    struct MHD_Daemon *mhd;
    es_http_handler handler;
    void *app;
    size_t body_max;
    atomic_ullong by_class[6];          /* 1xx..5xx by status / 100 */
    atomic_ullong latency[NBUCKETS + 1];
    atomic_ullong latency_sum_us;
};

typedef struct conn_state {
    es_buf body;
    bool too_large;
    bool answered;              /* the 413 is queued already */
    struct timespec start;
} conn_state;

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

void
es_http_res_error(es_http_res *res, int status, const char *code, const char *field,
                  json_t *extra, const char *fmt, ...)
{
    char message[512];
    json_t *err = json_object();
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    es_text_make_utf8(message);
    json_object_set_new(err, "code", json_string(code));
    json_object_set_new(err, "message", json_string(message));
    if (field != NULL && field[0] != '\0')
        json_object_set_new(err, "field", json_string(field));
    if (extra != NULL) {
        json_object_update(err, extra);
        json_decref(extra);
    }
    if (status == 503)
        es_http_res_header(res, "Retry-After", "1");
    es_http_res_json(res, status, json_pack("{s:o}", "error", err));
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
    json_t *extra = NULL;

    if (err->status == ES_ECONFLICT && strcmp(err->code, "version_conflict") == 0)
        extra = json_pack("{s:I}", "actual_version", (json_int_t)err->actual_version);
    es_http_res_error(res, es_http_status(err->status),
                      err->code[0] ? err->code : es_status_code(err->status), err->field,
                      extra, "%s", err->message[0] ? err->message : es_status_text(err->status));
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

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
           const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    es_http_server *srv = cls;
    conn_state *st = *con_cls;
    es_http_req req;
    es_http_res res = {0};
    enum MHD_Result ok;

    (void)version;
    if (st == NULL) {
        const char *len = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");

        if ((st = calloc(1, sizeof *st)) == NULL)
            return MHD_NO;
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
    if (st->too_large)
        return st->answered ? MHD_YES : too_large(srv, c, st);

    req.method = method;
    req.path = url;
    req.body = st->body.data ? st->body.data : "";
    req.body_len = st->body.len;
    req.conn_ = c;
    if (es_buf_failed(&st->body)) {
        es_http_res_error(&res, 500, "out_of_memory", NULL, NULL, "could not hold the request body");
    } else {
        res.status = 200;
        srv->handler(srv->app, &req, &res);
    }
    ok = send_res(srv, c, &res, &st->start);
    es_buf_free(&res.body);
    return ok;
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    conn_state *st = *con_cls;

    (void)cls;
    (void)c;
    (void)toe;
    if (st != NULL) {
        es_buf_free(&st->body);
        free(st);
        *con_cls = NULL;
    }
}

es_status
es_http_start(es_http_server **out, const es_http_config *cfg, es_http_handler handler,
              void *app, es_error *err)
{
    es_http_server *srv;
    struct sockaddr_in addr;

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
    srv->app = app;
    srv->body_max = cfg->body_max;
    /* Set before the pool threads start (which orders the write before
     * them): a handler may read it through the application, for /metrics. */
    *out = srv;
    srv->mhd = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD, (uint16_t)cfg->port, NULL, NULL,
                                on_request, srv,
                                MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                                MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)cfg->threads,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
                                MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)1024,
                                MHD_OPTION_END);
    if (srv->mhd == NULL) {
        *out = NULL;
        free(srv);
        return es_error_set(err, ES_EUNAVAILABLE, "listen_failed", NULL,
                            "could not listen on %s:%u (in use?)",
                            cfg->bind ? cfg->bind : "127.0.0.1", cfg->port);
    }
    return ES_OK;
}

void
es_http_stop(es_http_server *srv)
{
    if (srv == NULL)
        return;
    MHD_stop_daemon(srv->mhd);
    free(srv);
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
    es_buf_printf(out, "# HELP %s_http_request_seconds time from request to response\n"
                       "# TYPE %s_http_request_seconds histogram\n", prefix, prefix);
    for (i = 0; i < NBUCKETS; i++) {
        cum += atomic_load(&srv->latency[i]);
        es_buf_printf(out, "%s_http_request_seconds_bucket{le=\"%g\"} %llu\n", prefix,
                      buckets[i], cum);
    }
    cum += atomic_load(&srv->latency[NBUCKETS]);
    es_buf_printf(out, "%s_http_request_seconds_bucket{le=\"+Inf\"} %llu\n", prefix, cum);
    es_buf_printf(out, "%s_http_request_seconds_sum %.6f\n", prefix,
                  (double)atomic_load(&srv->latency_sum_us) / 1e6);
    es_buf_printf(out, "%s_http_request_seconds_count %llu\n", prefix, cum);
}
