/*
 * The command daemon's shared state: configuration, the group committer,
 * the per-thread environments, and the two front doors (routes.c for
 * HTTP, bus.c for NATS request/reply).
 */
#ifndef ES_COMMAND_APP_H
#define ES_COMMAND_APP_H

#include <pthread.h>
#include <stdatomic.h>

#include "auth.h"
#include "cmd.h"
#include "daemon.h"
#include "http.h"

typedef struct bus bus;
typedef struct subs subs;

typedef struct app {
    char conninfo[512];
    char contexts[256];         /* comma-separated contexts served; "" = all */
    char subject_prefix[64];    /* commands arrive on <prefix>.<context>.<action> */
    cmd_config cfg;
    es_committer *committer;
    es_http_server *http;
    es_auth *auth;              /* the token checks (routes_guard) */
    es_daemon daemon;           /* name, readiness and metrics (routes.c) */
    bus *bus;
    subs *subs;                 /* GET /v1/subscriptions/feed (subscriptions.c) */
    pthread_mutex_t envs_mu;    /* the per-thread environments, for shutdown */
    cmd_env **envs;
    size_t nenvs, capenvs;
    atomic_ullong commands_ok, commands_rejected, commands_failed;
} app;

/*
 * This thread's environment (its own store connection), made on first
 * use.  NULL with err set when the store cannot be reached.
 */
cmd_env *app_env(app *a, es_error *err);
/* A new environment, not bound to a thread (the bus lends these out);
 * its session opens on first use.  app_envs_close frees it. */
cmd_env *app_env_new(app *a, es_error *err);
void app_envs_close(app *a);

/* True when the context of command name ("payment.charge") is served. */
bool app_serves(const app *a, const char *name);

/* Counts an outcome for /metrics. */
void app_count(app *a, const cmd_out *out);

/* HTTP entry point (routes.c); routes_daemon fills a->daemon, which
 * /healthz, /readyz and /metrics answer from. */
void routes_daemon(app *a);
void routes_handle(void *app, const es_http_req *req, es_http_res *res);
bool routes_quick(void *app, const es_http_req *req, es_http_res *res);
/* The access check of every HTTP request, before any handler: the scope
 * each route needs is named in routes.c's route_scope. */
bool routes_guard(void *app, es_http_req *req, es_http_res *res);

/* What a commit wakes: the relay (over the bus) and the subscriptions
 * hub; the committer's on_commit callback, with the app. */
void app_committed(void *app);

/* NATS request/reply on cmd.<context>.<action> (bus.c). */
es_status bus_start(bus **out, app *a, const char *url, int subs_per_context, es_error *err);
/* Stops taking commands (unsubscribes, closes the command connection). */
void bus_stop(bus *b);
/* Frees the bus, after the committer is gone (it may still wake). */
void bus_free(bus *b);
/* Tells the relay that events were committed (a message on the wake
 * subject); cheap and thread-safe. */
void bus_wake(void *bus);
bool bus_connected(const bus *b);
/* Requests dropped unhandled because their reply subject was not an
 * inbox (see bus.c); 0 without a bus. */
unsigned long long bus_refused_replies(bus *b);
/* The store sessions of the commands over NATS: idle, and lent to a
 * command being handled (0 and 0 without a bus). */
void bus_sessions(bus *b, int *idle, int *lent);

#endif
