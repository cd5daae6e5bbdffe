/*
 * es_daemon (see daemon.h): the stop state of the process and the three
 * endpoints every daemon answers.
 *
 * SIGINT and SIGTERM are blocked everywhere and taken by sigwait in one
 * thread, so no code runs in a signal handler: that thread marks the
 * process as stopping under a mutex and broadcasts a condition variable,
 * which es_daemon_wait and es_daemon_sleep_ms wait on.
 */
#include "daemon.h"

#include <openssl/crypto.h>

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdatomic.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "env.h"
#include "log.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stopped_cond;         /* on CLOCK_MONOTONIC; see init_cond */
static pthread_once_t cond_once = PTHREAD_ONCE_INIT;
static atomic_bool stopping;
static int stop_signal;                     /* mu */
static void (*on_stop_fn)(void *);
static void *on_stop_arg;

static const char *daemon_name;    /* for configuration errors; see es_daemon_http_tls */
static sigset_t stop_signals;
static pthread_t signal_thread;
static bool signal_thread_running;
static atomic_bool signal_thread_ending;    /* es_daemon_stop's wake, not a stop */

static void
init_cond(void)
{
    pthread_condattr_t a;

    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&stopped_cond, &a);
    pthread_condattr_destroy(&a);
}

static void
mark_stopping(int sig)
{
    bool first;

    pthread_once(&cond_once, init_cond);
    pthread_mutex_lock(&mu);
    first = !atomic_load(&stopping);
    if (first) {
        stop_signal = sig;
        atomic_store(&stopping, true);
    }
    pthread_cond_broadcast(&stopped_cond);
    pthread_mutex_unlock(&mu);
    if (first && on_stop_fn)
        on_stop_fn(on_stop_arg);
}

static void *
take_signals(void *arg)
{
    int sig;

    (void)arg;
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    if (!atomic_load(&signal_thread_ending)) {
        es_log(ES_LOG_INFO, "stopping on signal %d", sig);
        mark_stopping(sig);
    }
    return NULL;
}

es_status
es_daemon_start(const es_daemon *d, es_error *err)
{
    es_error_clear(err);
    es_log_configure(d->name);
    daemon_name = d->name;
    /* Three users of OpenSSL share the process (libpq, nats.c, the token
     * hashes), and with TLS on, OpenSSL's own clean-up at exit crashed
     * (OPENSSL_sk_pop_free on a NULL stack, after nats_Close() had torn
     * down nats.c's TLS state) at every stop.  The process is ending
     * anyway, so OpenSSL is told not to clean up at exit, which it must
     * hear before anything else initialises it. */
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
    pthread_once(&cond_once, init_cond);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    if (pthread_create(&signal_thread, NULL, take_signals, NULL) != 0)
        return es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not start the signal thread");
    signal_thread_running = true;
    return ES_OK;
}

void
es_daemon_stop(void)
{
    if (!signal_thread_running)
        return;
    atomic_store(&signal_thread_ending, true);
    pthread_kill(signal_thread, SIGTERM);       /* blocked: sigwait takes it */
    pthread_join(signal_thread, NULL);
    signal_thread_running = false;
}

void
es_daemon_quit(void)
{
    mark_stopping(0);
}

bool
es_daemon_stopping(void)
{
    return atomic_load(&stopping);
}

bool
es_daemon_sleep_ms(long ms)
{
    struct timespec until;
    bool slept;

    pthread_once(&cond_once, init_cond);
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&mu);
    while (!atomic_load(&stopping))
        if (pthread_cond_timedwait(&stopped_cond, &mu, &until) != 0)
            break;                              /* ETIMEDOUT */
    slept = !atomic_load(&stopping);
    pthread_mutex_unlock(&mu);
    return slept;
}

int
es_daemon_wait(void)
{
    int sig;

    pthread_once(&cond_once, init_cond);
    pthread_mutex_lock(&mu);
    while (!atomic_load(&stopping))
        pthread_cond_wait(&stopped_cond, &mu);
    sig = stop_signal;
    pthread_mutex_unlock(&mu);
    return sig;
}

void
es_daemon_on_stop(void (*fn)(void *arg), void *arg)
{
    on_stop_fn = fn;
    on_stop_arg = arg;
}

/* ---- /healthz, /readyz, /metrics ------------------------------------------ */

static bool
probe(const es_daemon *d, json_t **body)
{
    bool ok = true;

    *body = NULL;
    if (d->ready)
        ok = d->ready(d->ctx, body);
    if (*body == NULL)
        *body = json_pack("{s:s}", "status", ok ? "ready" : "unavailable");
    return ok;
}

bool
es_daemon_http(const es_daemon *d, es_http_server *srv, const es_http_req *req, es_http_res *res)
{
    json_t *body;

    if (strcmp(req->path, "/healthz") == 0) {
        if (!d->health_detail) {
            es_http_res_json(res, 200, json_pack("{s:s}", "status", "ok"));
            return true;
        }
        (void)probe(d, &body);
        es_http_res_json(res, 200, body);
    } else if (strcmp(req->path, "/readyz") == 0) {
        bool ok = probe(d, &body);

        es_http_res_json(res, ok ? 200 : 503, body);
        if (!ok && d->ready_retry_after)
            es_http_res_header(res, "Retry-After", "1");
    } else if (strcmp(req->path, "/metrics") == 0) {
        if (srv != NULL)
            es_http_metrics(srv, d->metrics_prefix, &res->body);
        if (d->metrics)
            d->metrics(d->ctx, &res->body);
        if (d->auth != NULL && srv != NULL)
            es_auth_metrics(d->auth, d->metrics_prefix, &res->body);
        res->status = 200;
        res->content_type = "text/plain; version=0.0.4";
    } else {
        return false;
    }
    return true;
}

struct es_daemon_server {
    const es_daemon *d;         /* borrowed */
    es_http_server *http;       /* set before the first request (es_http_start) */
};

static void
serve(void *ctx, const es_http_req *req, es_http_res *res)
{
    es_daemon_server *s = ctx;

    if (!es_daemon_http(s->d, s->http, req, res))
        es_http_res_error(res, 404, "route_not_found", NULL, NULL, "no route %s", req->path);
}

const char *
es_daemon_http_scheme(void)
{
    return es_env_str("ES_TLS_CERT", NULL) != NULL ? "https" : "http";
}

/* Room for n connections besides the daemon's own descriptors: raises
 * the soft limit on open files towards the hard one when it is lower. */
static void
files_for(unsigned long n)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)n + 256;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
        want = rl.rlim_max;
    if (want > rl.rlim_cur) {
        rl.rlim_cur = want;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 256)
        es_log(ES_LOG_WARNING,
               "open files are limited to %llu, fewer than %lu HTTP connections (twice "
               "ES_HTTP_CONNECTIONS_MAX) need; past it new connections are refused",
               (unsigned long long)rl.rlim_cur, n);
}

const char *
es_daemon_http_tls(es_http_config *cfg)
{
    /* the command name when es_daemon_start has not run yet */
    const char *p = daemon_name ? daemon_name : program_invocation_short_name;

    cfg->tls_cert = es_env_str("ES_TLS_CERT", NULL);
    cfg->tls_key = es_env_str("ES_TLS_KEY", NULL);
    cfg->connections_max = (unsigned)es_env_long(p, "ES_HTTP_CONNECTIONS_MAX", 1000, 1, 1000000);
    cfg->header_timeout_ms =
        (unsigned)es_env_long(p, "ES_HTTP_HEADER_TIMEOUT_MS", 10000, 100, 3600000);
    cfg->body_timeout_ms = (unsigned)es_env_long(p, "ES_HTTP_BODY_TIMEOUT_MS", 30000, 100, 3600000);
    cfg->idle_timeout_s = (unsigned)es_env_long(p, "ES_HTTP_IDLE_TIMEOUT_S", 30, 1, 86400);
    cfg->queue_max = (unsigned)es_env_long(p, "ES_HTTP_QUEUE_MAX", 0, 0, 1000000);
    cfg->stop_grace_ms = (unsigned)es_env_long(p, "ES_HTTP_STOP_GRACE_MS", 10000, 1, 600000);
    files_for(2UL * cfg->connections_max);     /* es_http_start's backstop */
    return es_daemon_http_scheme();
}

/* /healthz and /readyz are public, /metrics needs the metrics scope,
 * anything else admin (and then 404). */
static bool
guard(void *ctx, es_http_req *req, es_http_res *res)
{
    es_daemon_server *s = ctx;
    const char *scope = "admin";

    if (strcmp(req->path, "/healthz") == 0 || strcmp(req->path, "/readyz") == 0)
        scope = NULL;
    else if (strcmp(req->path, "/metrics") == 0)
        scope = "metrics";
    return s->d->auth == NULL || es_auth_http(s->d->auth, req, scope, res);
}

es_status
es_daemon_server_start(es_daemon_server **out, const es_daemon *d, const char *bind,
                       unsigned port, es_error *err)
{
    es_http_config cfg = {.bind = bind, .port = port, .threads = 2, .body_max = 4096,
                          .guard = guard};
    es_daemon_server *s;

    *out = NULL;
    if ((s = calloc(1, sizeof *s)) == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate the health server");
    s->d = d;
    es_daemon_http_tls(&cfg);
    if (es_http_start(&s->http, &cfg, serve, s, err) != ES_OK) {
        free(s);
        return err->status;
    }
    *out = s;
    return ES_OK;
}

void
es_daemon_server_stop(es_daemon_server *s)
{
    if (s == NULL)
        return;
    es_http_stop(s->http);
    free(s);
}
