/*
 * The operator console (console.h): the static files and the JSON
 * endpoints of /v1/console/.  Nothing here owns a persisted shape: the
 * read models are read through read.c with the projections' key formats,
 * the store through events/audit.c and store.h, the sagas and dead
 * letters through saga/saga.c, exactly as esctl does.  Every list is a
 * page the server cuts (streams, events, the feed) or a bounded summary
 * (dead-letter groups, counts), so the page works the same with 100,000
 * sagas and 10 million events.
 *
 * Requests that need the database take their connections to
 * ES_CONSOLE_PG_CONNINFO from a small pool of idle ones (db_open) and give
 * them back at the end (db_close), so a busy page does not connect per
 * call and the handlers keep no per-thread state.
 */
#include "console.h"
#include "console_args.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "codec.h"
#include "env.h"
#include "log.h"
#include "pg.h"
#include "projections.h"
#include "query.h"
#include "read.h"
#include "readmodel.h"
#include "rebuilds.h"
#include "saga.h"
#include "stages.h"
#include "store.h"

#define PAGE_MAX 500            /* events or streams of one page at most */
#define GROUPS_MAX 100          /* dead-letter groups shown */
#define GROUP_IDS_MAX 50        /* ids listed per group */
#define REPLAY_MAX 500          /* dead letters one group replay hands back */
#define PROBE_TIMEOUT_MS 1000   /* another daemon's /readyz or /metrics */

/* ---- small helpers ---------------------------------------------------- */

static bool
starts(const char *s, const char *p, const char **rest)
{
    size_t n = strlen(p);

    if (strncmp(s, p, n) != 0)
        return false;
    if (rest)
        *rest = s + n;
    return true;
}

static bool
invalid(es_http_res *res, const char *field, const char *msg)
{
    es_http_res_error(res, 400, "query_invalid", field, NULL, "%s", msg);
    return false;
}

/* A decimal count in [lo, hi] (def when absent); false with res set. */
static bool
count_arg(const es_http_req *req, es_http_res *res, const char *name, long long lo, long long hi,
          long long def, long long *out)
{
    const char *s = es_http_query(req, name);
    char msg[160];

    *out = def;
    if (s == NULL || console_count_parse(s, lo, hi, out))
        return true;
    snprintf(msg, sizeof msg, "%s must be an integer from %lld to %lld", name, lo, hi);
    return invalid(res, name, msg);
}

/* A text argument of at most max bytes (NULL when absent). */
static bool
text_arg(const es_http_req *req, es_http_res *res, const char *name, size_t max,
         const char **out)
{
    char msg[120];

    *out = es_http_query(req, name);
    if (*out != NULL && strlen(*out) > max) {
        snprintf(msg, sizeof msg, "%s must have at most %zu bytes", name, max);
        return invalid(res, name, msg);
    }
    return true;
}

/* An event as the API shows it (with its stream), as a JSON value. */
static json_t *
event_json(const es_event *e)
{
    es_buf b = {0};
    json_t *j;

    es_event_encode(&b, e, true);
    j = es_buf_failed(&b) ? NULL : json_loadb(b.data, b.len, 0, NULL);
    es_buf_free(&b);
    return j ? j : json_null();
}

static json_t *
page_json(const es_page *p)
{
    json_t *a = json_array();
    size_t i;

    for (i = 0; i < p->count; i++)
        json_array_append_new(a, event_json(&p->events[i]));
    return a;
}

/* ---- the database ------------------------------------------------------ */

/*
 * The console's connections (ES_CONSOLE_PG_CONNINFO) are kept for the next
 * request in a small pool: up to POOL_IDLE_MAX idle pairs of an es_store
 * and, once a saga endpoint needed one, a PGconn.  db_open takes the
 * newest idle pair or connects; db_close gives the pair back when it is
 * healthy and idle (no transaction open) and the pool has room, and
 * closes it otherwise, so at most POOL_IDLE_MAX connections outlive their
 * request however busy the page.  console_stop closes the idle ones.
 */
#define POOL_IDLE_MAX 4

typedef struct db {
    PGconn *pg;
    es_store *store;
} db;

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static db pool[POOL_IDLE_MAX];
static size_t pool_n;

static void
db_free(db *d)
{
    es_store_close(d->store);
    if (d->pg)
        PQfinish(d->pg);
    d->store = NULL;
    d->pg = NULL;
}

/* Gives d's connections back to the pool, or closes them. */
static void
db_close(db *d)
{
    bool keep = d->store != NULL &&
                (d->pg == NULL ||
                 (PQstatus(d->pg) == CONNECTION_OK &&
                  PQtransactionStatus(d->pg) == PQTRANS_IDLE));

    if (keep) {
        pthread_mutex_lock(&pool_mu);
        if (pool_n < POOL_IDLE_MAX)
            pool[pool_n++] = *d;
        else
            keep = false;
        pthread_mutex_unlock(&pool_mu);
    }
    if (!keep)
        db_free(d);
    d->store = NULL;
    d->pg = NULL;
}

void
console_stop(void)
{
    pthread_mutex_lock(&pool_mu);
    while (pool_n > 0)
        db_free(&pool[--pool_n]);
    pthread_mutex_unlock(&pool_mu);
}

/* Takes the console's connections, from the pool or new (pg too when
 * with_pg); false with res set to 503 when the database is not
 * configured or does not answer. */
static bool
db_open(db *d, bool with_pg, es_http_res *res)
{
    const char *conninfo = getenv("ES_CONSOLE_PG_CONNINFO");
    es_error err;

    d->pg = NULL;
    d->store = NULL;
    if (conninfo == NULL || conninfo[0] == '\0') {
        es_http_res_error(res, 503, "console_unavailable", NULL, NULL,
                          "the console has no database connection: es-query runs without "
                          "ES_CONSOLE_PG_CONNINFO");
        return false;
    }
    pthread_mutex_lock(&pool_mu);
    if (pool_n > 0)
        *d = pool[--pool_n];
    pthread_mutex_unlock(&pool_mu);
    if (d->pg != NULL && PQstatus(d->pg) != CONNECTION_OK) {
        PQfinish(d->pg);
        d->pg = NULL;
    }
    if (d->store == NULL) {
        if (es_store_create(&d->store, conninfo, &err) != ES_OK) {
            es_http_res_from_error(res, &err);
            return false;
        }
        es_store_set_read_budget(d->store, es_store_read_budget_configured());
    }
    if (with_pg && d->pg == NULL) {
        d->pg = es_pg_connect(conninfo, false);
        if (PQstatus(d->pg) != CONNECTION_OK) {
            char why[200];

            snprintf(why, sizeof why, "%s", PQerrorMessage(d->pg));
            why[strcspn(why, "\n")] = '\0';
            db_free(d);
            es_http_res_error(res, 503, "postgres_unavailable", NULL, NULL,
                              "PostgreSQL does not answer: %s", why);
            return false;
        }
        PQclear(PQexec(d->pg, "SET TimeZone = 'UTC'"));
    }
    return true;
}

/* ---- static files ------------------------------------------------------- */

static const char *
content_type(const char *name)
{
    const char *dot = strrchr(name, '.');

    if (dot == NULL)
        return "application/octet-stream";
    if (strcmp(dot, ".html") == 0)
        return "text/html; charset=utf-8";
    if (strcmp(dot, ".js") == 0)
        return "text/javascript; charset=utf-8";
    if (strcmp(dot, ".css") == 0)
        return "text/css; charset=utf-8";
    if (strcmp(dot, ".svg") == 0)
        return "image/svg+xml";
    if (strcmp(dot, ".png") == 0)
        return "image/png";
    return "application/octet-stream";
}

static void
serve_file(const es_http_req *req, es_http_res *res)
{
    const char *name;
    size_t i;

    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        es_http_res_header(res, "Allow", "GET");
        es_http_res_error(res, 405, "method_not_allowed", NULL, NULL,
                          "%s %s is not allowed; use GET", req->method, req->path);
        return;
    }
    if (strcmp(req->path, "/console") == 0) {
        res->status = 308;
        es_http_res_header(res, "Location", "/console/");
        es_buf_puts(&res->body, "");
        return;
    }
    name = req->path + strlen("/console/");
    if (name[0] == '\0')
        name = "index.html";
    for (i = 0; i < console_asset_count; i++)
        if (strcmp(console_assets[i].name, name) == 0)
            break;
    if (i == console_asset_count) {
        es_http_res_error(res, 404, "route_not_found", NULL, NULL, "the console has no file %s",
                          req->path);
        return;
    }
    res->status = 200;
    res->content_type = content_type(name);
    es_buf_append(&res->body, (const char *)console_assets[i].data, console_assets[i].len);
    es_http_res_header(res, "Content-Security-Policy",
                       "default-src 'self'; frame-ancestors 'none'; base-uri 'none'");
    es_http_res_header(res, "X-Content-Type-Options", "nosniff");
    es_http_res_header(res, "Cache-Control", "no-cache");
    es_http_res_header(res, "Referrer-Policy", "no-referrer");
}

/* ---- the other daemons ---------------------------------------------------- */

/*
 * GET path from 127.0.0.1:port, plain HTTP, with authorization (may be
 * NULL) passed on, within PROBE_TIMEOUT_MS: the status (0: no answer)
 * and the body into out.  Only for the daemons of this system on
 * loopback, which answer with Connection: close bodies of a few KiB.
 */
static int
probe(unsigned port, const char *path, const char *authorization, es_buf *out)
{
    struct sockaddr_in a = {0};
    struct timespec t0, now;
    char req[1024], buf[4096];
    const char *body;
    int fd, status = 0, n, left;
    es_buf got = {0};

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS)
        goto done;
    n = snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n%s%.700s%s\r\n",
                 path, port, authorization ? "Authorization: " : "",
                 authorization ? authorization : "", authorization ? "\r\n" : "");
    if (n <= 0 || (size_t)n >= sizeof req)
        goto done;
    for (int sent = 0; sent < n;) {
        struct pollfd p = {fd, POLLOUT, 0};
        ssize_t w;

        if (poll(&p, 1, PROBE_TIMEOUT_MS) <= 0)
            goto done;
        w = send(fd, req + sent, (size_t)(n - sent), MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN)
            goto done;
        if (w > 0)
            sent += (int)w;
    }
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t r;

        clock_gettime(CLOCK_MONOTONIC, &now);
        left = PROBE_TIMEOUT_MS - (int)((now.tv_sec - t0.tv_sec) * 1000 +
                                        (now.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0 || poll(&p, 1, left) <= 0)
            goto done;
        r = recv(fd, buf, sizeof buf, 0);
        if (r == 0)
            break;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            goto done;
        }
        es_buf_append(&got, buf, (size_t)r);
        if (got.len > 4 * 1024 * 1024)
            goto done;
    }
    if (got.len > 12 && strncmp(got.data, "HTTP/1.", 7) == 0 &&
        (body = strstr(got.data, "\r\n\r\n")) != NULL) {
        status = atoi(got.data + 9);
        es_buf_append(out, body + 4, got.len - (size_t)(body + 4 - got.data));
    }
done:
    close(fd);
    es_buf_free(&got);
    return status;
}

/* The sum of every sample of metric family name in Prometheus text. */
static bool
metric_sum(const char *text, const char *name, double *sum)
{
    size_t n = strlen(name);
    bool any = false;
    const char *line = text;

    *sum = 0;
    while (line && *line) {
        if (strncmp(line, name, n) == 0 && (line[n] == '{' || line[n] == ' ')) {
            const char *v = strchr(line, ' ');
            if (v) {
                *sum += strtod(v + 1, NULL);
                any = true;
            }
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return any;
}

/* The value of the sample name{label="value"} in Prometheus text. */
static bool
metric_one(const char *text, const char *name, const char *label, const char *value, double *out)
{
    char want[200];
    const char *at;

    snprintf(want, sizeof want, "\n%s{%s=\"%s\"} ", name, label, value);
    if ((at = strstr(text, want)) == NULL)
        return false;
    *out = strtod(at + strlen(want), NULL);
    return true;
}

/* ---- overview -------------------------------------------------------------- */

static const char *const saga_states[] = {"running", "completed", "compensating", "compensated",
                                          "failed"};

static void
states_index(const void *args, read_cmds *out)
{
    size_t i;

    (void)args;
    for (i = 0; i < sizeof saga_states / sizeof saga_states[0]; i++)
        read_cmd(out, "ZCARD", PJ_KEY_SAGAS_BY_STATE, saga_states[i]);
}

static void
counters_index(const void *args, read_cmds *out)
{
    (void)args;
    read_cmd(out, "HGETALL", PJ_KEY_COUNTERS);
}

static const read_view_def states_def = {"sagas", states_index, NULL};
static const read_view_def counters_def = {"dashboard", counters_index, NULL};

static json_t *
sagas_by_state(void)
{
    read_result r = {0};
    es_error err;
    json_t *o;
    size_t i;

    if (read_view(&states_def, NULL, &r, &err) != ES_OK)
        return json_null();
    o = json_object();
    for (i = 0; i < sizeof saga_states / sizeof saga_states[0]; i++)
        json_object_set_new(o, saga_states[i],
                            json_integer(i < r.nidx && r.idx[i]->type == REDIS_REPLY_INTEGER
                                             ? r.idx[i]->integer : 0));
    read_result_free(&r);
    return o;
}

static json_t *
counters(void)
{
    read_result r = {0};
    es_error err;
    json_t *o;
    size_t i;

    if (read_view(&counters_def, NULL, &r, &err) != ES_OK)
        return json_null();
    o = json_object();
    if (r.nidx == 1 && r.idx[0]->type == REDIS_REPLY_ARRAY)
        for (i = 0; i + 1 < r.idx[0]->elements; i += 2)
            json_object_set_new(o, r.idx[0]->element[i]->str,
                                json_integer(strtoll(r.idx[0]->element[i + 1]->str, NULL, 10)));
    read_result_free(&r);
    return o;
}

/* A projection's versions as the read model records them: the active
 * one and, while esctl rebuilds it, the one being written and how far it
 * got (es_rm_state_get, es_rm_checkpoint; reads only). */
typedef struct versions {
    const char *name;
    es_rm_state st;
    uint64_t building_seq;
    char building_pos[ES_RM_POSITION_MAX];
} versions;

static es_status
versions_on(redisContext *c, void *ctx, es_error *err)
{
    versions *v = ctx;
    es_status st = es_rm_state_get(c, v->name, &v->st, err);

    if (st == ES_OK && v->st.building[0])
        st = es_rm_checkpoint(c, v->name, v->st.building, &v->building_seq, v->building_pos, err);
    return st;
}

static const struct daemon_port {
    const char *name, *var;
    unsigned def;
} daemon_ports[] = {
    {"es-command", "ES_COMMAND_PORT", 8080}, {"es-query", "ES_QUERY_PORT", 8081},
    {"es-relay", "ES_RELAY_PORT", 8082},     {"es-projector", "ES_PROJECTOR_PORT", 8083},
    {"es-saga", "ES_SAGA_PORT", 8084},
};

static unsigned
port_of(const struct daemon_port *d)
{
    return (unsigned)es_env_long("es-query", d->var, d->def, 1, 65535);
}

static void
overview(query_app *app, const es_http_req *req, es_http_res *res)
{
    const char *auth = es_http_header(req, "Authorization");
    json_t *o = json_object(), *daemons = json_object(), *projs = json_array(), *pj = NULL;
    es_buf m = {0}, b = {0};
    db d;
    size_t i;
    int st;
    double v;
    bool tls = getenv("ES_TLS_CERT") && getenv("ES_TLS_CERT")[0];

    /* each daemon's readiness, asked on its configured port */
    for (i = 0; i < sizeof daemon_ports / sizeof daemon_ports[0]; i++) {
        json_t *one;

        es_buf_reset(&b);
        st = tls ? 0 : probe(port_of(&daemon_ports[i]), "/readyz", NULL, &b);
        one = json_pack("{s:b, s:i}", "ready", st == 200, "status", st);
        if (tls)
            json_object_set_new(one, "note", json_string("not probed over TLS"));
        if (st == 0 && !tls)
            json_object_set_new(one, "note", json_string("no answer"));
        json_object_set_new(daemons, daemon_ports[i].name, one);
    }
    json_object_set_new(o, "daemons", daemons);

    /* commands so far (the browser turns two polls into a rate) */
    es_buf_reset(&b);
    if (!tls && probe(port_of(&daemon_ports[0]), "/metrics", auth, &b) == 200) {
        es_buf_append(&b, "", 1);
        if (metric_sum(b.data, "es_command_commands_total", &v))
            json_object_set_new(o, "commands_total", json_integer((json_int_t)v));
    }
    /* the relay: its readiness body, and how far it has published */
    es_buf_reset(&b);
    if (!tls && probe(port_of(&daemon_ports[2]), "/readyz", NULL, &b) > 0) {
        json_t *h = json_loadb(b.data, b.len, 0, NULL);
        static const char *const relay_metrics[] = {"es_relay_last_sequence",
                                                    "es_relay_published_total",
                                                    "es_relay_publish_failures_total"};

        es_buf_reset(&b);
        if (h && probe(port_of(&daemon_ports[2]), "/metrics", auth, &b) == 200) {
            es_buf_append(&b, "", 1);
            for (i = 0; i < sizeof relay_metrics / sizeof relay_metrics[0]; i++)
                if (metric_sum(b.data, relay_metrics[i], &v))
                    json_object_set_new(h, relay_metrics[i] + strlen("es_relay_"),
                                        json_integer((json_int_t)v));
        }
        if (h)
            json_object_set_new(o, "relay", h);
    }
    /* each projection: the projector's word (version, checkpoint, parked,
     * stopped) and this service's lag figures (metrics.c) */
    es_buf_reset(&b);
    if (!tls && probe(port_of(&daemon_ports[3]), "/healthz", NULL, &b) > 0)
        pj = json_loadb(b.data, b.len, 0, NULL);
    metrics_write(app->metrics, app, &m);
    es_buf_append(&m, "", 1);
    for (i = 0; i < pj_projection_count; i++) {
        const char *name = pj_projections[i].name;
        json_t *p = json_pack("{s:s}", "name", name), *list, *e;
        size_t k;

        if (metric_one(m.data, "es_projection_position", "projection", name, &v))
            json_object_set_new(p, "checkpoint", json_integer((json_int_t)v));
        if (metric_one(m.data, "es_projection_lag_events", "projection", name, &v))
            json_object_set_new(p, "lag_events", json_integer((json_int_t)v));
        if (metric_one(m.data, "es_projection_lag_seconds", "projection", name, &v))
            json_object_set_new(p, "lag_seconds", json_real(v));
        list = pj ? json_object_get(pj, "projections") : NULL;
        json_array_foreach(list, k, e) {
            if (json_is_string(json_object_get(e, "name")) &&
                strcmp(json_string_value(json_object_get(e, "name")), name) == 0) {
                json_object_update_missing(p, e);
                json_object_set(p, "projector_checkpoint", json_object_get(e, "checkpoint"));
            }
        }
        {
            versions vs = {.name = name};
            es_error verr;

            if (read_run(versions_on, &vs, &verr) == ES_OK) {
                json_object_set_new(p, "active_version", json_string(vs.st.active));
                if (vs.st.building[0]) {
                    /* the stream's end: the active checkpoint plus its lag */
                    json_t *le = json_object_get(p, "lag_events");
                    double end = (double)vs.st.seq + (json_is_integer(le)
                                                          ? (double)json_integer_value(le) : 0);
                    json_object_set_new(
                        p, "rebuild",
                        json_pack("{s:s, s:I, s:s, s:f}", "version", vs.st.building,
                                  "checkpoint", (json_int_t)vs.building_seq, "position",
                                  vs.building_pos[0] ? vs.building_pos : "0-0", "progress",
                                  end > 0 ? (vs.building_seq >= end ? 1.0
                                                                    : (double)vs.building_seq / end)
                                          : 0.0));
                }
            }
        }
        {
            /* a rebuild started from the console, running or the last one */
            json_t *job = rebuilds_status(name);

            if (job)
                json_object_set_new(p, "console_rebuild", job);
        }
        json_array_append_new(projs, p);
    }
    json_decref(pj);
    json_object_set_new(o, "projections", projs);
    json_object_set_new(o, "sagas_by_state", sagas_by_state());
    json_object_set_new(o, "counters", counters());
    if (db_open(&d, true, res)) {
        long long n = 0;
        es_error err;

        if (sg_dead_letter_open_count(d.pg, &n, &err) == ES_OK)
            json_object_set_new(o, "dead_letters_open", json_integer(n));
        db_close(&d);
    } else {
        es_buf_reset(&res->body);       /* the overview answers without it */
        res->status = 0;
        res->nheaders = 0;
    }
    json_object_set_new(o, "time", json_real((double)time(NULL)));
    es_buf_free(&m);
    es_buf_free(&b);
    es_http_res_json(res, 200, o);
}

/* ---- whoami ------------------------------------------------------------------ */

static void
whoami(query_app *app, const es_http_req *req, es_http_res *res)
{
    char principal[ES_TOKEN_NAME_MAX + 1] = "";
    bool admin = es_auth_check(app->auth, es_http_header(req, "Authorization"), "admin",
                               principal) == ES_AUTH_OK;

    es_http_res_json(res, 200, json_pack("{s:s, s:b}", "principal", req->principal, "admin",
                                         admin));
}

/* ---- sagas by age ----------------------------------------------------------------- */

/* GET /v1/console/age-cursor?older_than=S: the /v1/sagas cursor from
 * which a list holds only the sagas that came into it (their state, or
 * their start without a state) more than S seconds ago.  The lists are
 * scored by stream sequence, so the cursor is the first message
 * published after now - S (metrics_seq_after): the age filter runs in
 * Redis's range, on any number of sagas, not on a page in the browser. */
static void
age_cursor(query_app *app, const es_http_req *req, es_http_res *res)
{
    long long older;
    struct timespec now;
    int64_t before_ns;
    uint64_t seq;
    char cursor[32];
    es_error err;

    if (!count_arg(req, res, "older_than", 1, 10LL * 366 * 86400, 0, &older))
        return;
    if (older == 0) {
        invalid(res, "older_than", "older_than (seconds) is required");
        return;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    before_ns = ((int64_t)now.tv_sec - older) * 1000000000LL + now.tv_nsec;
    if (metrics_seq_after(app->metrics, before_ns, &seq, &err) != ES_OK) {
        es_http_res_from_error(res, &err);
        return;
    }
    snprintf(cursor, sizeof cursor, "%" PRIu64, seq);
    es_http_res_json(res, 200, json_pack("{s:s, s:I}", "cursor", cursor, "older_than",
                                         (json_int_t)older));
}

/* ---- streams, events, the feed ------------------------------------------------- */

typedef struct stream_page {
    json_t *rows;
    char last[256];
} stream_page;

static bool
stream_row(const es_audit_stream *s, void *arg)
{
    stream_page *p = arg;

    json_array_append_new(p->rows, json_pack("{s:s, s:I}", "stream", s->stream, "version",
                                             (json_int_t)s->version));
    snprintf(p->last, sizeof p->last, "%s", s->stream);
    return true;
}

static void
streams(const es_http_req *req, es_http_res *res)
{
    const char *category, *prefix, *after;
    char full[420];
    long long limit;
    stream_page p = {NULL, ""};
    db d;
    es_error err;

    if (!text_arg(req, res, "category", 100, &category) ||
        !text_arg(req, res, "prefix", 200, &prefix) || !text_arg(req, res, "after", 200, &after) ||
        !count_arg(req, res, "limit", 1, PAGE_MAX, 50, &limit))
        return;
    if (category && (category[0] == '\0' || strchr(category, '-'))) {
        invalid(res, "category", "category must be a stream id's part before its first '-'");
        return;
    }
    snprintf(full, sizeof full, "%s%s%s", category ? category : "", category ? "-" : "",
             prefix ? prefix : "");
    if (strlen(full) > 200) {
        invalid(res, "prefix", "category and prefix have at most 200 bytes together");
        return;
    }
    if (!db_open(&d, false, res))
        return;
    p.rows = json_array();
    if (es_audit_streams_list(d.store, full, after, (size_t)limit, stream_row, &p, &err) !=
        ES_OK) {
        json_decref(p.rows);
        es_http_res_from_error(res, &err);
    } else {
        bool more = json_array_size(p.rows) == (size_t)limit;
        es_http_res_json(res, 200, json_pack("{s:s, s:o, s:s?}", "prefix", full, "streams", p.rows,
                                             "next", more ? p.last : NULL));
    }
    db_close(&d);
}

static void
stream_events(const es_http_req *req, es_http_res *res, const char *stream)
{
    const char *dir;
    long long from, limit;
    es_page *p = NULL;
    db d;
    es_error err;
    bool backward;

    if (!count_arg(req, res, "from", 0, INT64_MAX, -1, &from) ||
        !count_arg(req, res, "limit", 1, PAGE_MAX, 20, &limit) ||
        !text_arg(req, res, "direction", 10, &dir))
        return;
    if (dir && strcmp(dir, "forward") != 0 && strcmp(dir, "backward") != 0) {
        invalid(res, "direction", "direction must be forward or backward");
        return;
    }
    backward = dir == NULL || strcmp(dir, "backward") == 0;
    if (!backward && from < 0)
        from = 0;
    if (stream[0] == '\0' || strlen(stream) > 200) {
        invalid(res, "stream", "stream must have 1 to 200 bytes");
        return;
    }
    if (!db_open(&d, false, res))
        return;
    if (es_store_read_stream(d.store, stream, from, (size_t)limit,
                             backward ? ES_BACKWARD : ES_FORWARD, &p, &err) != ES_OK) {
        es_http_res_from_error(res, &err);
    } else {
        es_http_res_json(res, 200, json_pack("{s:s, s:I, s:o}", "stream", stream, "version",
                                             (json_int_t)p->stream_version, "events",
                                             page_json(p)));
        es_page_destroy(p);
    }
    db_close(&d);
}

/* The event at a position or with an id, and where it came from: the
 * event its metadata's causation_id names. */
static void
event_one(const es_http_req *req, es_http_res *res, const char *key)
{
    es_position pos;
    es_page *p = NULL, *cause = NULL;
    db d;
    es_error err;
    es_status st;
    json_t *o, *meta = NULL, *links;
    const char *cid;

    (void)req;
    if (!es_position_parse(key, &pos) && !es_uuid_valid(key)) {
        invalid(res, "position", "an event is named by its position (<txid>-<gpos>) or its id");
        return;
    }
    if (!db_open(&d, false, res))
        return;
    st = es_uuid_valid(key) ? es_store_read_event(d.store, key, &p, &err)
                            : es_audit_event_at(d.store, pos, &p, &err);
    if (st != ES_OK) {
        es_http_res_from_error(res, &err);
        db_close(&d);
        return;
    }
    o = json_pack("{s:o}", "event", event_json(&p->events[0]));
    links = json_object();
    meta = json_loads(p->events[0].metadata, 0, NULL);
    if (json_is_string(json_object_get(meta, "correlation_id")))
        json_object_set(links, "correlation_id", json_object_get(meta, "correlation_id"));
    cid = json_string_value(json_object_get(meta, "causation_id"));
    if (cid && es_uuid_valid(cid)) {
        json_object_set_new(links, "causation_id", json_string(cid));
        if (es_store_read_event(d.store, cid, &cause, &err) == ES_OK) {
            json_object_set_new(links, "causation", event_json(&cause->events[0]));
            es_page_destroy(cause);
        }
    }
    json_object_set_new(o, "links", links);
    json_decref(meta);
    es_page_destroy(p);
    db_close(&d);
    es_http_res_json(res, 200, o);
}

/* The feed from after ("tail": its current end), filtered by category
 * (in the store) and type (in the page, so a page may be short). */
static void
feed(const es_http_req *req, es_http_res *res)
{
    const char *after, *category, *type;
    char next[ES_POSITION_TEXT_MAX];
    es_position from = {0, 0};
    long long limit;
    es_page *p = NULL;
    db d;
    es_error err;
    es_status st;
    json_t *events;
    size_t i;

    if (!text_arg(req, res, "after", 60, &after) || !text_arg(req, res, "category", 100, &category) ||
        !text_arg(req, res, "type", 200, &type) ||
        !count_arg(req, res, "limit", 1, PAGE_MAX, 100, &limit))
        return;
    if (after && strcmp(after, "tail") != 0 && !es_position_parse(after, &from)) {
        invalid(res, "after", "after must be a position (<txid>-<gpos>) or tail");
        return;
    }
    if (!db_open(&d, false, res))
        return;
    if (after && strcmp(after, "tail") == 0) {
        if ((st = es_store_feed_head(d.store, &from, &err)) == ES_OK) {
            es_position_format(from, next);
            es_http_res_json(res, 200, json_pack("{s:[], s:s}", "events", "next", next));
        } else {
            es_http_res_from_error(res, &err);
        }
        db_close(&d);
        return;
    }
    st = category && category[0]
             ? es_store_read_category(d.store, category, from, (size_t)limit, &p, &err)
             : es_store_read_feed(d.store, from, (size_t)limit, &p, &err);
    if (st != ES_OK) {
        es_http_res_from_error(res, &err);
        db_close(&d);
        return;
    }
    events = json_array();
    for (i = 0; i < p->count; i++)
        if (type == NULL || type[0] == '\0' || strcmp(type, p->events[i].type) == 0)
            json_array_append_new(events, event_json(&p->events[i]));
    es_position_format(p->next, next);
    es_http_res_json(res, 200, json_pack("{s:o, s:s}", "events", events, "next", next));
    es_page_destroy(p);
    db_close(&d);
}

/* ---- sagas ------------------------------------------------------------------------ */

/* The circuit breakers of es-saga's gateways (its /metrics, asked with
 * the caller's token): [{"gateway", "breaker"}], empty when it does not
 * answer. */
static json_t *
breakers(const char *authorization)
{
    static const char prefix[] = "es_saga_gateway_breaker_state{gateway=\"";
    static const char *const names[] = {"closed", "open", "half-open"};
    json_t *a = json_array();
    es_buf b = {0};
    const char *line;

    if ((getenv("ES_TLS_CERT") && getenv("ES_TLS_CERT")[0]) ||
        probe(port_of(&daemon_ports[4]), "/metrics", authorization, &b) != 200) {
        es_buf_free(&b);
        return a;
    }
    es_buf_append(&b, "", 1);
    for (line = b.data; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        const char *end;
        int v;

        if (strncmp(line, prefix, sizeof prefix - 1) != 0)
            continue;
        line += sizeof prefix - 1;
        if ((end = strstr(line, "\"} ")) == NULL || end - line > 100)
            continue;
        v = atoi(end + 3);
        json_array_append_new(a, json_pack("{s:s%, s:s}", "gateway", line, (size_t)(end - line),
                                           "breaker", v >= 0 && v <= 2 ? names[v] : "unknown"));
    }
    es_buf_free(&b);
    return a;
}

static void
saga_show(const es_http_req *req, es_http_res *res, const char *saga_id)
{
    sg_saga_info s = {0};
    json_t *timeline = NULL;
    db d;
    es_error err;

    if (saga_id[0] == '\0' || strlen(saga_id) > 200) {
        invalid(res, "saga_id", "saga_id must have 1 to 200 bytes");
        return;
    }
    if (!db_open(&d, true, res))
        return;
    if (sg_saga_read(d.pg, d.store, saga_id, &s, &err) != ES_OK ||
        sg_saga_timeline(d.store, saga_id, &timeline, &err) != ES_OK) {
        es_http_res_from_error(res, &err);
    } else {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:O?, s:o, s:o}", "saga_id",
                              s.saga_id, "type", s.type, "state", sg_state_text(s.state),
                              "correlation_id", s.correlation_id, "version",
                              (json_int_t)s.version, "work", s.work, "dead_letter",
                              s.dead_letter > 0 ? json_integer(s.dead_letter) : json_null(),
                              "timeline", timeline);

        timeline = NULL;
        /* the gateways' breakers, which a saga's next step may wait on */
        json_object_set_new(o, "gateways", breakers(es_http_header(req, "Authorization")));
        es_http_res_json(res, 200, o);
    }
    json_decref(timeline);
    sg_saga_info_clear(&s);
    db_close(&d);
}

static json_t *
op_json(const sg_saga_op *op)
{
    return json_pack("{s:s, s:s, s:s?, s:b, s:b, s:b, s:b}", "saga_id", op->saga_id, "state",
                     sg_state_text(op->state), "dead_letter",
                     op->dead_letter[0] ? op->dead_letter : NULL, "reopened", op->reopened,
                     "was_failed", op->was_failed, "queued", op->queued, "unchanged",
                     op->unchanged);
}

/* POST .../retry or .../compensate {"reason"?}: esctl saga retry|compensate. */
static void
saga_act(const es_http_req *req, es_http_res *res, const char *saga_id, bool compensate)
{
    json_t *body = NULL;
    const char *reason = NULL;
    char why[400];
    sg_saga_op op;
    db d;
    es_error err;
    es_status st;

    if (req->body_len > 0 &&
        es_json_parse_object(req->body, req->body_len, &body, &err) != ES_OK) {
        es_http_res_from_error(res, &err);
        return;
    }
    if (json_object_get(body, "reason") && !json_is_string(json_object_get(body, "reason"))) {
        json_decref(body);
        es_http_res_error(res, 400, "invalid_field", "reason", NULL, "reason must be a string");
        return;
    }
    reason = json_string_value(json_object_get(body, "reason"));
    /* the record says who: the token's name, as metadata.principal does */
    snprintf(why, sizeof why, "%.200s (console, %s)", reason && reason[0] ? reason : "no reason given",
             req->principal[0] ? req->principal : "access control off");
    if (saga_id[0] == '\0' || strlen(saga_id) > 200) {
        json_decref(body);
        invalid(res, "saga_id", "saga_id must have 1 to 200 bytes");
        return;
    }
    if (!db_open(&d, true, res)) {
        json_decref(body);
        return;
    }
    st = compensate ? sg_saga_compensate(d.pg, d.store, saga_id, why, &op, &err)
                    : sg_saga_retry(d.pg, d.store, saga_id, &op, &err);
    if (st != ES_OK) {
        es_http_res_from_error(res, &err);
    } else {
        es_log(ES_LOG_INFO, "console: %s %s saga %s", req->principal[0] ? req->principal : "-",
               compensate ? "compensated" : "retried", saga_id);
        es_http_res_json(res, 200, op_json(&op));
    }
    json_decref(body);
    db_close(&d);
}

/* POST /v1/console/sagas/batch {"action", "saga_ids", "reason"?}: esctl
 * saga retry|compensate of each named saga, in order, on one connection;
 * one saga's failure does not stop the others. */
static void
sagas_batch(const es_http_req *req, es_http_res *res)
{
    json_t *root = NULL, *done = json_array(), *failed = json_array();
    console_batch b;
    const char *field = NULL;
    char msg[200], why[400];
    sg_saga_op op;
    db d;
    es_error err;
    size_t i;

    if (!console_batch_parse(req->body, req->body_len, &root, &b, &field, msg, sizeof msg)) {
        es_http_res_error(res, 400, "invalid_field", field, NULL, "%s", msg);
        goto out;
    }
    snprintf(why, sizeof why, "%.200s (console, %s)",
             b.reason && b.reason[0] ? b.reason : "no reason given",
             req->principal[0] ? req->principal : "access control off");
    if (!db_open(&d, true, res))
        goto out;
    for (i = 0; i < b.nids; i++) {
        es_status st = b.compensate ? sg_saga_compensate(d.pg, d.store, b.ids[i], why, &op, &err)
                                    : sg_saga_retry(d.pg, d.store, b.ids[i], &op, &err);

        if (st == ES_OK)
            json_array_append_new(done, op_json(&op));
        else
            json_array_append_new(failed, json_pack("{s:s, s:o}", "saga_id", b.ids[i], "error",
                                                    es_error_to_json(&err)));
    }
    db_close(&d);
    es_log(ES_LOG_INFO, "console: %s %s %zu of %zu sagas in one batch",
           req->principal[0] ? req->principal : "-", b.compensate ? "compensated" : "retried",
           json_array_size(done), b.nids);
    es_http_res_json(res, 200, json_pack("{s:s, s:O, s:O}", "action",
                                         b.compensate ? "compensate" : "retry", "done", done,
                                         "failed", failed));
out:
    json_decref(root);
    json_decref(done);
    json_decref(failed);
}

/* ---- dead letters ---------------------------------------------------------------- */

static const char *
field_str(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static void
dead_letters(const es_http_req *req, es_http_res *res)
{
    json_t *rows = NULL, *groups = json_object(), *out = json_array(), *row, *g;
    const char *fp_key;
    size_t i;
    db d;
    es_error err;

    (void)req;
    if (!db_open(&d, true, res)) {
        json_decref(groups);
        json_decref(out);
        return;
    }
    if (sg_dead_letter_list(d.pg, false, &rows, &err) != ES_OK) {
        es_http_res_from_error(res, &err);
        json_decref(groups);
        json_decref(out);
        db_close(&d);
        return;
    }
    db_close(&d);
    json_array_foreach(rows, i, row) {
        char fp[17];

        console_fingerprint(field_str(row, "flow"), field_str(row, "event_type"),
                            field_str(row, "reason"), fp);
        if ((g = json_object_get(groups, fp)) == NULL) {
            if (json_object_size(groups) >= GROUPS_MAX)
                continue;
            g = json_pack("{s:s, s:O, s:O, s:O, s:i, s:O, s:O, s:[]}", "fingerprint", fp,
                          "flow", json_object_get(row, "flow") ? json_object_get(row, "flow")
                                                               : json_null(),
                          "event_type", json_object_get(row, "event_type")
                                            ? json_object_get(row, "event_type") : json_null(),
                          "reason", json_object_get(row, "reason")
                                        ? json_object_get(row, "reason") : json_null(),
                          "count", 0, "first_at", json_object_get(row, "created_at"),
                          "last_at", json_object_get(row, "created_at"), "dead_letters");
            json_object_set_new(groups, fp, g);
        }
        json_object_set_new(g, "count",
                            json_integer(json_integer_value(json_object_get(g, "count")) + 1));
        json_object_set(g, "last_at", json_object_get(row, "created_at"));
        if (json_array_size(json_object_get(g, "dead_letters")) < GROUP_IDS_MAX) {
            json_array_append_new(json_object_get(g, "dead_letters"),
                                  json_pack("{s:O, s:O, s:O, s:O}", "id",
                                            json_object_get(row, "id"), "saga_id",
                                            json_object_get(row, "saga_id"), "created_at",
                                            json_object_get(row, "created_at"), "attempts",
                                            json_object_get(row, "attempts")));
        }
    }
    json_object_foreach(groups, fp_key, g)
        json_array_append(out, g);
    es_http_res_json(res, 200, json_pack("{s:I, s:o}", "open", (json_int_t)json_array_size(rows),
                                         "groups", out));
    (void)fp_key;
    json_decref(groups);
    json_decref(rows);
}

/* POST /v1/console/dead-letters/{id}/replay, or .../replay {"fingerprint"}. */
static void
dead_letters_replay(const es_http_req *req, es_http_res *res, const char *id)
{
    json_t *body = NULL, *rows = NULL, *row, *done = json_array(), *failed = json_array();
    const char *fingerprint = NULL;
    sg_saga_op op;
    db d;
    es_error err;
    size_t i;

    if (id == NULL) {
        if (es_json_parse_object(req->body, req->body_len, &body, &err) != ES_OK) {
            es_http_res_from_error(res, &err);
            goto out;
        }
        fingerprint = field_str(body, "fingerprint");
        if (fingerprint == NULL || strlen(fingerprint) != 16) {
            es_http_res_error(res, 400, "invalid_field", "fingerprint", NULL,
                              "fingerprint must be a group's 16 hex digits");
            goto out;
        }
    } else {
        if (!console_dead_letter_id_ok(id)) {
            invalid(res, "id", "a dead letter's id is a positive integer");
            goto out;
        }
    }
    if (!db_open(&d, true, res))
        goto out;
    if (id != NULL) {
        if (sg_dead_letter_replay(d.pg, d.store, id, &op, &err) != ES_OK)
            es_http_res_from_error(res, &err);
        else
            es_http_res_json(res, 200, op_json(&op));
        db_close(&d);
        if (res->status == 200)
            es_log(ES_LOG_INFO, "console: %s replayed dead letter %s",
                   req->principal[0] ? req->principal : "-", id);
        goto out;
    }
    if (sg_dead_letter_list(d.pg, false, &rows, &err) != ES_OK) {
        es_http_res_from_error(res, &err);
        db_close(&d);
        goto out;
    }
    json_array_foreach(rows, i, row) {
        char fp[17], idtext[24];

        if (json_array_size(done) + json_array_size(failed) >= REPLAY_MAX)
            break;
        console_fingerprint(field_str(row, "flow"), field_str(row, "event_type"),
                            field_str(row, "reason"), fp);
        if (strcmp(fp, fingerprint) != 0)
            continue;
        snprintf(idtext, sizeof idtext, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(row, "id")));
        if (sg_dead_letter_replay(d.pg, d.store, idtext, &op, &err) == ES_OK)
            json_array_append_new(done, json_string(idtext));
        else
            json_array_append_new(failed, json_pack("{s:s, s:o}", "id", idtext, "error",
                                                    es_error_to_json(&err)));
    }
    db_close(&d);
    es_log(ES_LOG_INFO, "console: %s replayed %zu dead letters of group %s",
           req->principal[0] ? req->principal : "-", json_array_size(done), fingerprint);
    es_http_res_json(res, 200, json_pack("{s:s, s:O, s:O}", "fingerprint", fingerprint,
                                         "replayed", done, "failed", failed));
out:
    json_decref(rows);
    json_decref(body);
    json_decref(done);
    json_decref(failed);
}

/* ---- correlations --------------------------------------------------------------- */

/* GET /v1/console/correlations/{id}?after=P&limit=N: the events that
 * share a correlation id, in feed order, a page at a time
 * (es_audit_correlated, under the read budget ES_READ_MAX_BYTES that
 * db_open sets: a page of big events holds fewer than limit); next is
 * the after of the next page, or null when this one reached the end. */
static void
correlated(const es_http_req *req, es_http_res *res, const char *id)
{
    const char *after;
    char next[ES_POSITION_TEXT_MAX];
    es_position from = {0, 0};
    long long limit;
    es_page *p = NULL;
    db d;
    es_error err;

    if (!text_arg(req, res, "after", 60, &after) ||
        !count_arg(req, res, "limit", 1, PAGE_MAX, 50, &limit))
        return;
    if (after && after[0] && !es_position_parse(after, &from)) {
        invalid(res, "after", "after must be a position (<txid>-<gpos>)");
        return;
    }
    if (!db_open(&d, false, res))
        return;
    if (es_audit_correlated(d.store, id, from, (size_t)limit, &p, &err) != ES_OK) {
        es_http_res_from_error(res, &err);
    } else {
        bool more = p->count > 0 && (p->count == (size_t)limit || p->truncated);

        if (more)
            es_position_format(p->events[p->count - 1].position, next);
        es_http_res_json(res, 200, json_pack("{s:s, s:o, s:s?}", "correlation_id", id, "events",
                                             page_json(p), "next", more ? next : NULL));
        es_page_destroy(p);
    }
    db_close(&d);
}

/* ---- traces ------------------------------------------------------------------------ */

/*
 * A trace view connects to Redis and to NATS for its request (saga/
 * stages.c), so at most ES_CONSOLE_TRACES_MAX of them run at once and the
 * others are answered 503 traces_busy: however many a client sends,
 * es-query holds at most twice that many such connections (and their
 * file descriptors).  The records one view reads are bounded too
 * (es_rm_trace_get, ES_TRACE_RECORDS_MAX).
 */
#define TRACES_MAX_DEFAULT 4

static pthread_once_t traces_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t traces_mu = PTHREAD_MUTEX_INITIALIZER;
static long traces_max, traces_running, trace_delay_ms;

static void
traces_configure(void)
{
    traces_max = es_env_long("es-query", "ES_CONSOLE_TRACES_MAX", TRACES_MAX_DEFAULT, 1, 256);
    /* tests only: a view holds its place this long first */
    trace_delay_ms = es_env_long("es-query", "ES_QUERY_TEST_TRACE_DELAY_MS", 0, 0, 60000);
}

/* Takes a place among the running trace views; false (none free) with
 * res set to 503 traces_busy. */
static bool
trace_enter(es_http_res *res)
{
    bool ok;

    pthread_once(&traces_once, traces_configure);
    pthread_mutex_lock(&traces_mu);
    ok = traces_running < traces_max;
    if (ok)
        traces_running++;
    pthread_mutex_unlock(&traces_mu);
    if (!ok) {
        es_http_res_header(res, "Retry-After", "1");
        es_http_res_error(res, 503, "traces_busy", NULL, NULL,
                          "%ld trace views are running, as many as es-query runs at once "
                          "(ES_CONSOLE_TRACES_MAX); try again in a moment", traces_max);
    }
    return ok;
}

static void
trace_leave(void)
{
    pthread_mutex_lock(&traces_mu);
    traces_running--;
    pthread_mutex_unlock(&traces_mu);
}

/* GET /v1/console/traces/{trace-id | order-id | saga-id}: esctl trace
 * --json's document (saga/stages.c). */
static void
trace_show(es_http_res *res, const char *key)
{
    json_t *doc = NULL;
    db d;
    es_error err;

    if (key[0] == '\0' || strlen(key) > 200) {
        invalid(res, "trace", "a trace is named by its trace id, an order or user id or a saga id "
                              "of 1 to 200 bytes");
        return;
    }
    if (!trace_enter(res))
        return;
    if (trace_delay_ms > 0) {
        struct timespec t = {trace_delay_ms / 1000, (trace_delay_ms % 1000) * 1000000L};

        nanosleep(&t, NULL);
    }
    if (db_open(&d, false, res)) {
        if (sg_stages_collect(d.store, key, &doc, &err) != ES_OK)
            es_http_res_from_error(res, &err);
        else
            es_http_res_json(res, 200, doc);
        db_close(&d);
    }
    trace_leave();
}

/* ---- projection rebuilds ---------------------------------------------------------- */

/* GET /v1/console/projections/{name}/rebuild: the console's rebuild of
 * name in this process (rebuilds.h; state "none" when there was none),
 * with the read model's active version and, while any rebuild (esctl's
 * too) writes one, the building version and its checkpoint. */
static void
rebuild_get(es_http_res *res, const char *name)
{
    versions vs = {.name = name};
    es_error err;
    json_t *o;

    if (pj_find(name) == NULL) {
        es_http_res_error(res, 404, "unknown_projection", "name", NULL,
                          "there is no projection \"%.100s\"", name);
        return;
    }
    o = rebuilds_status(name);
    if (o == NULL)
        o = json_pack("{s:s, s:s, s:f}", "projection", name, "state", "none", "progress", 0.0);
    if (read_run(versions_on, &vs, &err) == ES_OK) {
        json_object_set_new(o, "active_version", json_string(vs.st.active));
        if (vs.st.building[0])
            json_object_set_new(o, "building",
                                json_pack("{s:s, s:I}", "version", vs.st.building, "checkpoint",
                                          (json_int_t)vs.building_seq));
    }
    es_http_res_json(res, 200, o);
}

/* POST /v1/console/projections/{name}/rebuild (admin; no body or {}):
 * starts the rebuild esctl projection rebuild runs, on a thread of
 * es-query, reading the store as the console does (esctl's role).
 * 202 with the status rebuild_get shows; 409 rebuild_running. */
static void
rebuild_post(const es_http_req *req, es_http_res *res, const char *name)
{
    const char *conninfo = getenv("ES_CONSOLE_PG_CONNINFO");
    json_t *body = NULL;
    es_error err;

    if (req->body_len > 0 &&
        es_json_parse_object(req->body, req->body_len, &body, &err) != ES_OK) {
        es_http_res_from_error(res, &err);
        return;
    }
    json_decref(body);
    if (pj_find(name) == NULL) {
        es_http_res_error(res, 404, "unknown_projection", "name", NULL,
                          "there is no projection \"%.100s\"", name);
        return;
    }
    if (conninfo == NULL || conninfo[0] == '\0') {
        es_http_res_error(res, 503, "console_unavailable", NULL, NULL,
                          "the console has no database connection: es-query runs without "
                          "ES_CONSOLE_PG_CONNINFO");
        return;
    }
    if (rebuilds_start(name, conninfo, req->principal, &err) != ES_OK) {
        es_http_res_from_error(res, &err);
        return;
    }
    es_http_res_json(res, 202, rebuilds_status(name));
}

/* ---- routing ------------------------------------------------------------------------ */

bool
console_route(const char *path)
{
    return strcmp(path, "/console") == 0 || starts(path, "/console/", NULL) ||
           starts(path, "/v1/console/", NULL);
}

const char *
console_scope(const es_http_req *req)
{
    const char *rest;

    if (!starts(req->path, "/v1/console/", &rest))
        return NULL;
    if (strcmp(req->method, "GET") != 0)
        return "admin";
    if (starts(rest, "streams", NULL) || starts(rest, "events", NULL) ||
        strcmp(rest, "feed") == 0 || starts(rest, "traces/", NULL) ||
        starts(rest, "correlations/", NULL))
        return "read:streams";
    return "read:query";
}

static void
not_found(const es_http_req *req, es_http_res *res)
{
    es_http_res_error(res, 404, "route_not_found", NULL, NULL, "no route for %s %s", req->method,
                      req->path);
}

static bool
method(const es_http_req *req, es_http_res *res, const char *want)
{
    if (strcmp(req->method, want) == 0)
        return true;
    es_http_res_header(res, "Allow", want);
    es_http_res_error(res, 405, "method_not_allowed", NULL, NULL, "%s %s is not allowed; use %s",
                      req->method, req->path, want);
    return false;
}

void
console_handle(query_app *app, const es_http_req *req, es_http_res *res)
{
    const char *rest;
    char id[256];

    if (!starts(req->path, "/v1/console/", &rest)) {
        serve_file(req, res);
        return;
    }
    if (strcmp(rest, "overview") == 0) {
        if (method(req, res, "GET"))
            overview(app, req, res);
    } else if (strcmp(rest, "age-cursor") == 0) {
        if (method(req, res, "GET"))
            age_cursor(app, req, res);
    } else if (strcmp(rest, "whoami") == 0) {
        if (method(req, res, "GET"))
            whoami(app, req, res);
    } else if (strcmp(rest, "streams") == 0) {
        if (method(req, res, "GET"))
            streams(req, res);
    } else if (starts(rest, "streams/", &rest)) {
        if (method(req, res, "GET"))
            stream_events(req, res, rest);
    } else if (starts(rest, "events/", &rest)) {
        if (method(req, res, "GET"))
            event_one(req, res, rest);
    } else if (strcmp(rest, "feed") == 0) {
        if (method(req, res, "GET"))
            feed(req, res);
    } else if (strcmp(rest, "dead-letters") == 0) {
        if (method(req, res, "GET"))
            dead_letters(req, res);
    } else if (strcmp(rest, "dead-letters/replay") == 0) {
        if (method(req, res, "POST"))
            dead_letters_replay(req, res, NULL);
    } else if (starts(rest, "dead-letters/", &rest) &&
               console_id_verb(rest, "replay", id, sizeof id)) {
        if (method(req, res, "POST"))
            dead_letters_replay(req, res, id);
    } else if (starts(rest, "correlations/", &rest)) {
        if (method(req, res, "GET"))
            correlated(req, res, rest);
    } else if (starts(rest, "traces/", &rest)) {
        if (method(req, res, "GET"))
            trace_show(res, rest);
    } else if (starts(rest, "projections/", &rest) &&
               console_id_verb(rest, "rebuild", id, sizeof id)) {
        if (strcmp(req->method, "POST") == 0) {
            rebuild_post(req, res, id);
        } else if (strcmp(req->method, "GET") == 0) {
            rebuild_get(res, id);
        } else {
            es_http_res_header(res, "Allow", "GET, POST");
            es_http_res_error(res, 405, "method_not_allowed", NULL, NULL,
                              "%s %s is not allowed; use GET or POST", req->method, req->path);
        }
    } else if (strcmp(rest, "sagas/batch") == 0) {
        /* no saga is named "batch" (ids are <flow>-<id>): another method
         * is refused as one, not looked up as a saga */
        if (method(req, res, "POST"))
            sagas_batch(req, res);
    } else if (starts(rest, "sagas/", &rest)) {
        if (console_id_verb(rest, "retry", id, sizeof id)) {
            if (method(req, res, "POST"))
                saga_act(req, res, id, false);
        } else if (console_id_verb(rest, "compensate", id, sizeof id)) {
            if (method(req, res, "POST"))
                saga_act(req, res, id, true);
        } else if (method(req, res, "GET")) {
            saga_show(req, res, rest);
        }
    } else {
        not_found(req, res);
    }
}
