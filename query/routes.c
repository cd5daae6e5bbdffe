/*
 * The query service's HTTP API (shared/API.md, query part): routing,
 * parameter checks, the consistency wait, and the headers every answer
 * carries (X-Projection-Position, ETag).  The documents themselves are
 * built in views.c; this file decides when to read them.  A query with a
 * token that the read model has not reached is parked (watch_park) with
 * its connection suspended, and answered by finish_parked() on the
 * watch's waker thread; serve()'s comment draws the path.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "console.h"
#include "projections.h"
#include "query.h"
#include "views.h"

#define POSITION_HEADER "X-Projection-Position"

/* If-None-Match kept for a parked read (a longer one is cut, which can
 * only turn a 304 into a 200) */
#define INM_MAX 256

typedef enum {
    R_HEALTH, R_READY, R_METRICS, R_DASHBOARD, R_USER, R_USER_BY_EMAIL, R_ORDER,
    R_CUSTOMER_ORDERS, R_ACCOUNT, R_STOCK, R_SAGA, R_SAGAS
} route_kind;

typedef struct route {
    route_kind kind;
    const char *id;             /* start of the path id (not terminated for customers) */
    size_t id_len;
    const char *id_field;       /* its name in errors */
} route;

/* ---- routing ------------------------------------------------------------ */

static bool
prefix(const char *s, const char *p, const char **rest)
{
    size_t n = strlen(p);

    if (strncmp(s, p, n) != 0)
        return false;
    *rest = s + n;
    return true;
}

static bool
suffix(const char *s, size_t len, const char *sfx, size_t *stem)
{
    size_t n = strlen(sfx);

    if (len < n || memcmp(s + len - n, sfx, n) != 0)
        return false;
    *stem = len - n;
    return true;
}

static void
with_id(route *r, route_kind kind, const char *id, size_t len, const char *field)
{
    r->kind = kind;
    r->id = id;
    r->id_len = len;
    r->id_field = field;
}

/* False for an unknown path.  Ids are the rest of the path, which the HTTP
 * layer percent-decoded: "a%2Fb" is the id "a/b". */
static bool
match(const char *path, route *r)
{
    static const struct {
        const char *path;
        route_kind kind;
    } fixed[] = {
        {"/healthz", R_HEALTH}, {"/readyz", R_READY}, {"/metrics", R_METRICS},
        {"/v1/dashboard", R_DASHBOARD}, {"/v1/users", R_USER_BY_EMAIL}, {"/v1/sagas", R_SAGAS},
    };
    const char *rest;
    size_t i, stem;

    memset(r, 0, sizeof *r);
    for (i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(path, fixed[i].path) == 0) {
            r->kind = fixed[i].kind;
            return true;
        }
    if (prefix(path, "/v1/users/", &rest))
        with_id(r, R_USER, rest, strlen(rest), "user_id");
    else if (prefix(path, "/v1/orders/", &rest))
        with_id(r, R_ORDER, rest, strlen(rest), "order_id");
    else if (prefix(path, "/v1/inventory/", &rest))
        with_id(r, R_STOCK, rest, strlen(rest), "sku");
    else if (prefix(path, "/v1/sagas/", &rest))
        with_id(r, R_SAGA, rest, strlen(rest), "saga_id");
    else if (prefix(path, "/v1/customers/", &rest) && suffix(rest, strlen(rest), "/orders", &stem))
        with_id(r, R_CUSTOMER_ORDERS, rest, stem, "customer_id");
    else if (prefix(path, "/v1/customers/", &rest) && suffix(rest, strlen(rest), "/account", &stem))
        with_id(r, R_ACCOUNT, rest, stem, "customer_id");
    else
        return false;
    return true;
}

/* ---- parameters ----------------------------------------------------------- */

static bool
invalid(es_http_res *res, const char *field, const char *fmt, const char *value)
{
    es_http_res_error(res, 400, "query_invalid", field, NULL, fmt, field, value ? value : "");
    return false;
}

/* A non-negative decimal integer of at most max; false for anything else. */
static bool
parse_count(const char *s, long long max, long long *out)
{
    long long n = 0;

    if (s == NULL || *s == '\0' || strlen(s) > 19)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        n = n * 10 + (*s - '0');
    }
    if (n > max)
        return false;
    *out = n;
    return true;
}

static bool
ident_ok(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > VIEW_ID_MAX)
        return false;
    for (i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '.' || s[i] == '-'))
            return false;
    return true;
}

/* limit and cursor of a page; the cursor is the score of the last item of
 * the previous page (a feed sequence), exclusive. */
static bool
page_args(const es_http_req *req, es_http_res *res, view_args *a)
{
    const char *limit = es_http_query(req, "limit"), *cursor = es_http_query(req, "cursor");
    long long n;

    a->limit = VIEW_LIMIT_DEFAULT;
    if (limit != NULL) {
        if (!parse_count(limit, VIEW_LIMIT_MAX, &n) || n < 1)
            return invalid(res, "limit", "%s must be an integer from 1 to 100, not \"%s\"", limit);
        a->limit = (long)n;
    }
    snprintf(a->max, sizeof a->max, "+inf");
    if (cursor != NULL) {
        /* scores are doubles: larger integers would not be exact */
        if (!parse_count(cursor, 9007199254740992LL, &n))
            return invalid(res, "cursor", "%s \"%s\" is not a cursor this service gave out",
                           cursor);
        snprintf(a->max, sizeof a->max, "(%lld", n);
    }
    return true;
}

static bool
sagas_args(const es_http_req *req, es_http_res *res, view_args *a)
{
    static const char *const states[] = {"running", "completed", "compensating", "compensated",
                                         "failed"};
    const char *state = es_http_query(req, "state"), *type = es_http_query(req, "type");
    size_t i;

    if (state != NULL) {
        for (i = 0; i < sizeof states / sizeof states[0] && strcmp(state, states[i]) != 0; i++)
            ;
        if (i == sizeof states / sizeof states[0])
            return invalid(res, "state",
                           "%s must be running, completed, compensating, compensated or failed, "
                           "not \"%s\"", state);
    }
    if (type != NULL && !ident_ok(type))
        return invalid(res, "type",
                       "%s must be 1 to 200 letters, digits, '_', '.' or '-', not \"%.200s\"", type);
    if (state && type)
        snprintf(a->zset, sizeof a->zset, PJ_KEY_SAGAS_BY_TYPE_STATE, type, state);
    else if (state)
        snprintf(a->zset, sizeof a->zset, PJ_KEY_SAGAS_BY_STATE, state);
    else if (type)
        snprintf(a->zset, sizeof a->zset, PJ_KEY_SAGAS_BY_TYPE, type);
    else
        snprintf(a->zset, sizeof a->zset, PJ_KEY_SAGAS_ALL);
    return page_args(req, res, a);
}

/* Checks the route's own parameters into a and picks its view; false
 * (res set) when they are bad.  idbuf holds the id. */
static bool
view_for(const route *r, const es_http_req *req, es_http_res *res, view_args *a,
         char *idbuf, const view **v)
{
    memset(a, 0, sizeof *a);
    if (r->id_field != NULL) {
        if (r->id_len == 0 || r->id_len > VIEW_ID_MAX) {
            es_http_res_error(res, 400, "query_invalid", r->id_field, NULL,
                              "%s must have 1 to %d bytes, not %zu", r->id_field, VIEW_ID_MAX,
                              r->id_len);
            return false;
        }
        memcpy(idbuf, r->id, r->id_len);
        idbuf[r->id_len] = '\0';
        a->id = idbuf;
    }
    switch (r->kind) {
    case R_USER: *v = &view_user; return true;
    case R_ORDER: *v = &view_order; return true;
    case R_ACCOUNT: *v = &view_account; return true;
    case R_STOCK: *v = &view_stock; return true;
    case R_SAGA: *v = &view_saga; return true;
    case R_DASHBOARD: *v = &view_dashboard; return true;
    case R_USER_BY_EMAIL: {
        const char *email = es_http_query(req, "email");

        if (email == NULL) {
            es_http_res_error(res, 400, "query_invalid", "email", NULL,
                              "email is required: GET /v1/users?email=<address>");
            return false;
        }
        if (email[0] == '\0' || strlen(email) > VIEW_ID_MAX)
            return invalid(res, "email", "%s must have 1 to 200 bytes%.0s", email);
        pj_email_key(email, a->email_key, sizeof a->email_key);
        *v = &view_user_by_email;
        return true;
    }
    case R_CUSTOMER_ORDERS:
        if (!page_args(req, res, a))
            return false;
        snprintf(a->zset, sizeof a->zset, PJ_KEY_CUSTOMER_ORDERS, a->id);
        *v = &view_customer_orders;
        return true;
    case R_SAGAS:
        if (!sagas_args(req, res, a))
            return false;
        *v = &view_sagas;
        return true;
    default:
        es_http_res_error(res, 500, "internal", NULL, NULL, "no view for %s", req->path);
        return false;
    }
}

/* consistent_with (query, else the X-Consistent-With header) and wait_ms. */
static bool
consistency_args(query_app *app, const es_http_req *req, es_http_res *res, bool *want,
                 es_position *token, long *wait_ms)
{
    const char *t = es_http_query(req, "consistent_with"), *w = es_http_query(req, "wait_ms");
    long long n;

    if (t == NULL)
        t = es_http_header(req, "X-Consistent-With");
    *want = t != NULL;
    if (t != NULL && !es_position_parse(t, token))
        return invalid(res, "consistent_with",
                       "%s \"%.100s\" is not a position (a command's \"position\" answer)", t);
    *wait_ms = app->wait_default_ms;
    if (w != NULL) {
        if (!parse_count(w, app->wait_max_ms, &n)) {
            es_http_res_error(res, 400, "query_invalid", "wait_ms", NULL,
                              "wait_ms must be an integer from 0 to %ld, not \"%.40s\"",
                              app->wait_max_ms, w);
            return false;
        }
        *wait_ms = (long)n;
    }
    return true;
}

/* ---- answering ------------------------------------------------------------ */

static size_t
projection_index(const char *name)
{
    size_t i;

    for (i = 0; i < pj_projection_count && strcmp(pj_projections[i].name, name) != 0; i++)
        ;
    return i;
}

static bool
reached(const char *position, es_position token)
{
    es_position p;

    return es_position_parse(position, &p) && es_position_cmp(p, token) >= 0;
}

static bool
past(const struct timespec *deadline)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

/* ETag: a strong tag of the body (64-bit FNV-1a), and 304 when the client
 * has it already (If-None-Match compares weakly, RFC 9110 13.1.2). */
static void
etag(const char *inm, es_http_res *res)
{
    uint64_t h = 14695981039346656037ULL;
    char tag[24];
    size_t i;

    for (i = 0; i < res->body.len; i++)
        h = (h ^ (unsigned char)res->body.data[i]) * 1099511628211ULL;
    snprintf(tag, sizeof tag, "\"%016" PRIx64 "\"", h);
    es_http_res_header(res, "ETag", tag);
    while (inm != NULL && *inm) {
        size_t n;

        inm += strspn(inm, " \t,");
        if (strncmp(inm, "W/", 2) == 0)
            inm += 2;
        n = strcspn(inm, " \t,");
        if ((n == 1 && inm[0] == '*') || (n == strlen(tag) && strncmp(inm, tag, n) == 0)) {
            /* The body stays: libmicrohttpd sends no body with a 304 but
             * its Content-Length, which RFC 9110 8.6 wants to be that of
             * the 200 (an empty buffer would say 0). */
            res->status = 304;
            return;
        }
        inm += n;
    }
}

/* A parked read: what its answer needs once the request's own thread is
 * gone (the view's arguments with their own copy of the id). */
typedef struct parked_read {
    watch_parked w;
    query_app *app;
    const view *v;
    view_args a;
    char id[VIEW_ID_MAX + 1];
    char inm[INM_MAX];
    bool has_inm;
    long wait_ms;
    es_http_pending *pending;
} parked_read;

/* The answer to a read r with (want) or without a token: the view's
 * document (with ETag, or 304), or 503 not_yet_consistent. */
static void
answer_read(query_app *app, const view *v, const view_args *a, const read_result *r, bool want,
            es_position token, long wait_ms, const char *inm, es_http_res *res)
{
    if (want && !reached(r->position, token)) {
        char requested[ES_POSITION_TEXT_MAX];

        es_position_format(token, requested);
        atomic_fetch_add(&app->wait_timeouts, 1);
        es_http_res_error(res, 503, "not_yet_consistent", NULL,
                          json_pack("{s:s, s:s}", "position", r->position, "requested", requested),
                          "read model \"%s\" is at %s, not yet at %s after %ld ms",
                          v->read.projection, r->position, requested, wait_ms);
    } else {
        v->answer(a, r, res);
        if (res->status == 200)
            etag(inm, res);
    }
    es_http_res_header(res, POSITION_HEADER, r->position);
}

/* watch_finish_fn of a parked read: the last word is an atomic read, as
 * for a read that did not wait. */
static bool
finish_parked(watch_parked *wp, bool stopping)
{
    parked_read *p = (parked_read *)(void *)((char *)wp - offsetof(parked_read, w));
    es_http_res res = {0};
    read_result r = {0};
    es_error err;

    if (stopping) {
        es_http_res_error(&res, 503, "shutting_down", NULL, NULL,
                          "es-query is shutting down; the wait for %s ended early",
                          p->v->read.projection);
    } else if (read_view(&p->v->read, &p->a, &r, &err) != ES_OK) {
        es_http_res_from_error(&res, &err);
    } else if (!reached(r.position, p->w.token) && !past(&p->w.deadline)) {
        read_result_free(&r);
        return false;           /* a newer version took over; wait on */
    } else {
        answer_read(p->app, p->v, &p->a, &r, true, p->w.token, p->wait_ms,
                    p->has_inm ? p->inm : NULL, &res);
    }
    read_result_free(&r);
    es_http_answer(p->pending, &res);
    free(p);
    return true;
}

/*
 * Parks the wait of a read that fell short of token: req's connection is
 * suspended until finish_parked() answers it, and this thread is free.
 * Past the cap (or while stopping) the answer is 503 at once.
 */
static void
park(query_app *app, const es_http_req *req, const view *v, const view_args *a, size_t proj,
     es_position token, const struct timespec *deadline, const watch_mark *mark, long wait_ms,
     const char *position)
{
    const char *inm = es_http_header(req, "If-None-Match");
    parked_read *p = calloc(1, sizeof *p);
    es_http_pending *pending = es_http_defer(req);
    es_http_res res = {0};
    watch_park_result pr;

    if (p == NULL) {
        es_http_res_error(&res, 500, "out_of_memory", NULL, NULL, "could not park the wait");
        es_http_answer(pending, &res);
        return;
    }
    *p = (parked_read){.w = {.proj = proj, .token = token, .deadline = *deadline, .mark = *mark,
                             .finish = finish_parked},
                       .app = app, .v = v, .a = *a, .wait_ms = wait_ms, .pending = pending};
    if (a->id != NULL) {
        snprintf(p->id, sizeof p->id, "%s", a->id);
        p->a.id = p->id;
    }
    if (inm != NULL) {
        snprintf(p->inm, sizeof p->inm, "%s", inm);
        p->has_inm = true;
    }
    if ((pr = watch_park(app->watch, &p->w)) == WATCH_PARKED)
        return;
    free(p);
    if (pr == WATCH_FULL) {
        atomic_fetch_add(&app->waits_refused, 1);
        es_http_res_error(&res, 503, "too_many_waits", NULL,
                          json_pack("{s:I}", "waits_max", (json_int_t)watch_waits_max(app->watch)),
                          "%zu reads are waiting for consistency already "
                          "(ES_QUERY_WAITS_MAX); retry later", watch_waits_max(app->watch));
    } else {
        es_http_res_error(&res, 503, "shutting_down", NULL, NULL, "es-query is shutting down");
    }
    es_http_res_header(&res, POSITION_HEADER, position);
    es_http_answer(pending, &res);
}

/*
 * Answers one query: reads the view, and with a token that the read
 * model's checkpoint has not reached parks the wait.  The answer and its
 * X-Projection-Position always come from one read_view.
 *
 *   (ES_QUERY_READ_REPLICA: read_view_replica() --position >= token, or
 *    no token--> answer 200/404; behind or failed: on as below)
 *   read_view() --position >= token, or no token--> answer 200/404
 *      |
 *      +--short of it--> park() --cap reached--> 503 too_many_waits
 *                          |
 *                          v   (the waker thread, watch.c)
 *                   read_position() on an announcement, a tick, the deadline
 *                          |
 *                          +--reached or deadline--> finish_parked():
 *                                read_view() --> answer 200/404, or
 *                                                503 not_yet_consistent
 */
static void
serve(query_app *app, const es_http_req *req, const view *v, const view_args *a,
      es_http_res *res)
{
    size_t proj = projection_index(v->read.projection);
    es_position token = {0, 0};
    struct timespec deadline = {0, 0};
    read_result r = {0};
    watch_mark mark = {0, 0, {0, 0}};
    bool want;
    long wait_ms;
    es_error err;

    if (!consistency_args(app, req, res, &want, &token, &wait_ms))
        return;
    if (want) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += wait_ms / 1000;
        deadline.tv_nsec += (wait_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        mark = watch_mark_take(app->watch, proj);
    }
    /* A replica's answer is good when it is at least at the token (its
     * position is read with its data); else the primary is read, and
     * waited for, as without a replica. */
    if (read_replica_on()) {
        if (read_view_replica(&v->read, a, &r, &err) != ES_OK) {
            read_replica_count(READ_REPLICA_FAILED);
        } else if (!want || reached(r.position, token)) {
            read_replica_count(READ_REPLICA_SERVED);
            answer_read(app, v, a, &r, want, token, wait_ms, es_http_header(req, "If-None-Match"),
                        res);
            read_result_free(&r);
            return;
        } else {
            read_replica_count(READ_REPLICA_BEHIND);
        }
        read_result_free(&r);
    }
    if (read_view(&v->read, a, &r, &err) != ES_OK) {
        es_http_res_from_error(res, &err);
    } else if (want && !reached(r.position, token) && !past(&deadline)) {
        atomic_fetch_add(&app->waits, 1);
        park(app, req, v, a, proj, token, &deadline, &mark, wait_ms, r.position);
    } else {
        answer_read(app, v, a, &r, want, token, wait_ms, es_http_header(req, "If-None-Match"),
                    res);
    }
    read_result_free(&r);
}

static es_status
ping_on(redisContext *c, void *ctx, es_error *err)
{
    redisReply *r = redisCommand(c, "PING");
    bool ok = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;

    (void)ctx;
    freeReplyObject(r);
    return ok ? ES_OK : es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                                     "redis did not answer PING");
}

/* /readyz: Redis answers a PING on this thread's connection. */
static bool
ready(void *ctx, json_t **body)
{
    es_error err;
    bool ok = read_run(ping_on, NULL, &err) == ES_OK;

    (void)ctx;
    *body = json_pack("{s:s, s:s}", "status", ok ? "ready" : "unavailable", "redis",
                      ok ? "ok" : "unavailable");
    return ok;
}

static void
write_metrics(void *ctx, es_buf *out)
{
    query_app *app = ctx;

    metrics_write(app->metrics, app, out);
    es_auth_metrics(app->auth, "es_query", out);
}

void
routes_daemon(query_app *app)
{
    app->daemon = (es_daemon){.name = "es-query", .metrics_prefix = "es_query", .ready = ready,
                              .metrics = write_metrics, .ctx = app, .ready_retry_after = true};
}

/*
 * The scope each route needs, the service's one table of access rules,
 * next to match(): GET /healthz and /readyz are public, GET /metrics
 * needs metrics, every other GET the router knows read:query; the
 * console's paths have theirs in console_scope (console.c).  Anything
 * else (an unknown path, another method) needs admin, so that without a
 * token every route answers alike (401).
 */
static const char *
route_scope(const es_http_req *req)
{
    route r;

    if (console_route(req->path))
        return console_scope(req);
    if (!match(req->path, &r) || strcmp(req->method, "GET") != 0)
        return "admin";
    switch (r.kind) {
    case R_HEALTH:
    case R_READY:
        return NULL;
    case R_METRICS:
        return "metrics";
    default:
        return "read:query";
    }
}

bool
routes_guard(void *ctx, es_http_req *req, es_http_res *res)
{
    query_app *app = ctx;

    return es_auth_http(app->auth, req, route_scope(req), res);
}

void
routes_handle(void *ctx, const es_http_req *req, es_http_res *res)
{
    query_app *app = ctx;
    char id[VIEW_ID_MAX + 1];
    const view *v = NULL;
    view_args a;
    route r;

    if (console_route(req->path)) {
        console_handle(app, req, res);
        return;
    }
    if (!match(req->path, &r)) {
        es_http_res_error(res, 404, "route_not_found", NULL, NULL, "no route for %s %s",
                          req->method, req->path);
        return;
    }
    if (strcmp(req->method, "GET") != 0) {
        es_http_res_header(res, "Allow", "GET");
        es_http_res_error(res, 405, "method_not_allowed", NULL, NULL,
                          "%s %s is not allowed; use GET", req->method, req->path);
        return;
    }
    switch (r.kind) {
    case R_HEALTH:
    case R_READY:
    case R_METRICS:
        (void)es_daemon_http(&app->daemon, atomic_load(&app->http), req, res);
        return;
    default:
        if (view_for(&r, req, res, &a, id, &v))
            serve(app, req, v, &a, res);
        return;
    }
}
