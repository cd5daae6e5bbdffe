/*
 * es-query, the query service: serves the read models the projector keeps
 * in Redis over HTTP (routes.c, views.c), waits for consistency tokens
 * without polling (watch.c), and reports how far each projection lags
 * (metrics.c).  Configuration comes from the environment (query/README.md);
 * it runs until SIGINT or SIGTERM and then frees everything it made.
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "console.h"
#include "env.h"
#include "log.h"
#include "query.h"
#include "read.h"
#include "rebuilds.h"

int
main(void)
{
    static query_app app;
    es_http_server *srv = NULL;
    es_http_config http = {0};
    es_error err;
    int rc = 1;
    size_t waits_max;
    const char *scheme;
    bool key = false, nats_used;
    const char *nats_url = es_nats_url();
    const char *stream = es_env_str("ES_RELAY_STREAM", "EVENTS");

    http.bind = es_env_str("ES_QUERY_BIND", "127.0.0.1");
    http.port = (unsigned)es_env_long("es-query", "ES_QUERY_PORT", 8081, 1, 65535);
    /* 8, not 16: at 32 connections on 2 cores, 16 threads (each blocking
     * on its Redis read) cost more switches than they overlap reads:
     * query/README.md, "Where the time goes" */
    http.threads = (unsigned)es_env_long("es-query", "ES_HTTP_THREADS", 8, 1, 1024);
    http.guard = routes_guard;
    http.body_max = 64 * 1024;      /* queries have no body; anything else gets 405 */
    scheme = es_daemon_http_tls(&http);
    app.wait_max_ms = es_env_long("es-query", "ES_QUERY_WAIT_MAX_MS", 10000, 0, 600000);
    app.wait_default_ms = app.wait_max_ms < 2000 ? app.wait_max_ms : 2000;
    waits_max = (size_t)es_env_long("es-query", "ES_QUERY_WAITS_MAX", 512, 1, 1000000);

    routes_daemon(&app);
    if (es_daemon_start(&app.daemon, &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    if (read_conn_init() != 0) {
        es_log(ES_LOG_ERROR, "could not create the per-thread connection key");
        goto done;
    }
    key = true;
    /* the token table is in the event store's database (ES_PG_CONNINFO) */
    if (es_auth_start(&app.auth, es_pg_conninfo(), strcmp(nats_url, "off") != 0 ? nats_url : NULL,
                      &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    if (!es_auth_enabled(app.auth))
        es_log(ES_LOG_WARNING, "access control is off (ES_AUTH=off): every request is let through");
    if (metrics_create(&app.metrics, nats_url, stream, &err) != ES_OK ||
        watch_start(&app.watch, waits_max, &err) != ES_OK ||
        es_http_start(&srv, &http, routes_handle, &app, &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    atomic_store(&app.http, srv);
    es_log(ES_LOG_INFO, "listening on %s://%s:%u (%u threads), read models in redis at %s:%s",
           scheme, http.bind, http.port, http.threads, es_env_str("ES_REDIS_HOST", "127.0.0.1"),
           es_env_str("ES_REDIS_PORT", "16379"));
    es_daemon_wait();
    rc = 0;
done:
    /* Parked waits are answered 503 shutting_down first (watch_cancel),
     * so that stopping the server does not wait out their deadlines; its
     * threads then end and free their connections. */
    watch_cancel(app.watch);
    es_http_stop(srv);
    watch_stop(app.watch);
    /* a console rebuild stops at its next batch: the process is stopping */
    es_daemon_quit();
    nats_used = rebuilds_stop();
    console_stop();
    nats_used |= metrics_destroy(app.metrics);
    nats_used |= es_auth_enabled(app.auth) && strcmp(nats_url, "off") != 0;
    es_auth_stop(app.auth);
    if (nats_used)
        nats_CloseAndWait(2000);
    if (key)
        read_conn_fini();
    es_daemon_stop();
    return rc;
}
