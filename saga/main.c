/*
 * es-saga: the saga manager.  Operators look after sagas and dead letters
 * with esctl (cli/sagas.c).
 *
 * The intake thread follows the events stream from its checkpoint and
 * records work and inbox entries (intake.c); ES_SAGA_WORKERS threads claim
 * due work and run the flows (engine.c).  Any number of processes may run:
 * the work rows are claimed with SKIP LOCKED and the intake's inserts are
 * idempotent.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "env.h"
#include "feed.h"
#include "http.h"
#include "intake.h"
#include "store.h"

#define WORKERS_MAX 32

static sg_config C;
static atomic_bool stop;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static unsigned wake_gen;
static es_jetstream js;
static es_http_server *http;
static atomic_ullong intake_seq;
static atomic_bool intake_ok;



/* Sleeps up to ms or until woken (new work) or stopping. */
static void
nap(int ms, unsigned seen)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)ms * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&mu);
    while (wake_gen == seen && !atomic_load(&stop))
        if (pthread_cond_timedwait(&wake, &mu, &until) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&mu);
}

/* The wake generation now: a nap from here ends at the next poke. */
static unsigned
gen_now(void)
{
    unsigned g;

    pthread_mutex_lock(&mu);
    g = wake_gen;
    pthread_mutex_unlock(&mu);
    return g;
}

static void
poke(void)
{
    pthread_mutex_lock(&mu);
    wake_gen++;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mu);
}

static void *
worker_main(void *arg)
{
    sg_worker w = {&C, &C, NULL, NULL};
    es_error err;

    (void)arg;
    if (es_store_create(&w.store, C.conninfo, &err) != ES_OK) {
        fprintf(stderr, "es-saga: %s\n", err.message);
        return NULL;
    }
    while (!atomic_load(&stop)) {
        unsigned seen;
        bool did;

        pthread_mutex_lock(&mu);
        seen = wake_gen;
        pthread_mutex_unlock(&mu);
        if (sg_work_once(&w, &did, &err) != ES_OK) {
            fprintf(stderr, "es-saga: %s\n", err.message);
            nap(1000, seen);
        } else if (!did) {
            nap(sg_next_due_ms(&w, 200), seen);
        }
    }
    if (w.pg)
        PQfinish(w.pg);
    es_store_close(w.store);
    return NULL;
}

static void *
intake_main(void *arg)
{
    PGconn *pg = NULL;
    natsSubscription *sub = NULL;
    uint64_t seq = 0;
    es_error err;

    (void)arg;
    while (!atomic_load(&stop)) {
        es_feed_batch b;
        int woken = 0;

        if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
            if (pg)
                PQfinish(pg);
            pg = PQconnectdb(C.conninfo);
            if (PQstatus(pg) != CONNECTION_OK ||
                sg_intake_checkpoint(pg, &seq, &err) != ES_OK) {
                atomic_store(&intake_ok, false);
                nap(1000, gen_now());
                continue;
            }
            if (sub) {
                es_jetstream_unsubscribe(&js, sub);
                sub = NULL;
            }
        }
        if (sub == NULL && es_jetstream_subscribe(&js, seq + 1, &sub, &err) != ES_OK) {
            fprintf(stderr, "es-saga: %s\n", err.message);
            atomic_store(&intake_ok, false);
            nap(1000, gen_now());
            continue;
        }
        atomic_store(&intake_ok, true);
        if (es_jetstream_take(sub, 500, 200, &b, &err) != ES_OK) {
            fprintf(stderr, "es-saga: %s\n", err.message);
            es_jetstream_unsubscribe(&js, sub);
            sub = NULL;
            nap(200, gen_now());
            continue;
        }
        if (b.n > 0 && sg_intake_apply(pg, &b, &seq, &woken, &err) != ES_OK) {
            fprintf(stderr, "es-saga: %s\n", err.message);
            es_jetstream_unsubscribe(&js, sub);     /* start again from the checkpoint */
            sub = NULL;
            PQfinish(pg);
            pg = NULL;
            nap(1000, gen_now());                   /* and not in a tight loop */
        }
        es_feed_batch_free(&b);
        atomic_store(&intake_seq, seq);
        if (woken > 0)
            poke();
    }
    if (sub)
        es_jetstream_unsubscribe(&js, sub);
    if (pg)
        PQfinish(pg);
    return NULL;
}

static void
handle(void *ctx, const es_http_req *req, es_http_res *res)
{
    (void)ctx;
    if (strcmp(req->path, "/healthz") == 0) {
        es_http_res_json(res, 200, json_pack("{s:s}", "status", "ok"));
    } else if (strcmp(req->path, "/readyz") == 0) {
        bool ok = atomic_load(&intake_ok) && es_nats_up(C.nc);
        es_http_res_json(res, ok ? 200 : 503,
                         json_pack("{s:s, s:I}", "status", ok ? "ready" : "unavailable",
                                   "intake_sequence", (json_int_t)atomic_load(&intake_seq)));
    } else if (strcmp(req->path, "/metrics") == 0) {
        es_http_metrics(http, "es_saga", &res->body);
        es_buf_printf(&res->body,
                      "# TYPE es_saga_started_total counter\nes_saga_started_total %llu\n"
                      "# TYPE es_saga_completed_total counter\nes_saga_completed_total %llu\n"
                      "# TYPE es_saga_compensated_total counter\nes_saga_compensated_total %llu\n"
                      "# TYPE es_saga_failed_total counter\nes_saga_failed_total %llu\n"
                      "# TYPE es_saga_steps_total counter\nes_saga_steps_total %llu\n"
                      "# TYPE es_saga_retries_total counter\nes_saga_retries_total %llu\n"
                      "# TYPE es_saga_dead_letters_total counter\nes_saga_dead_letters_total %llu\n"
                      "# TYPE es_saga_intake_sequence gauge\nes_saga_intake_sequence %llu\n",
                      (unsigned long long)atomic_load(&C.started),
                      (unsigned long long)atomic_load(&C.completed),
                      (unsigned long long)atomic_load(&C.compensated),
                      (unsigned long long)atomic_load(&C.failed),
                      (unsigned long long)atomic_load(&C.steps),
                      (unsigned long long)atomic_load(&C.retries),
                      (unsigned long long)atomic_load(&C.dead_letters),
                      (unsigned long long)atomic_load(&intake_seq));
        sg_gateway_metrics_all(C.gateways, C.ngateways, &res->body);
        res->content_type = "text/plain; version=0.0.4";
    } else {
        es_http_res_error(res, 404, "route_not_found", NULL, NULL, "no route %s", req->path);
    }
}

static void *
signal_thread(void *arg)
{
    sigset_t *set = arg;
    int sig;

    while (sigwait(set, &sig) != 0)
        ;
    atomic_store(&stop, true);
    poke();
    return NULL;
}

static int
daemon_main(void)
{
    es_http_config hc = {.bind = es_env_str("ES_SAGA_BIND", "127.0.0.1"),
                         .port = (unsigned)(int)es_env_long("es-saga", "ES_SAGA_PORT", 8084, 1, 65535),
                         .threads = 2, .body_max = 4096};
    int nworkers = (int)es_env_long("es-saga", "ES_SAGA_WORKERS", 4, 1, WORKERS_MAX);
    pthread_t workers[WORKERS_MAX], intake;
    const char *names[] = {"notification", "email"};
    es_error err;
    natsOptions *opts = NULL;
    int i, rc = 1;
    bool threads = false;

    C.retry_base_ms = (int)es_env_long("es-saga", "ES_SAGA_RETRY_BASE_MS", 200, 1, 600000);
    C.retry_max_ms = (int)es_env_long("es-saga", "ES_SAGA_RETRY_MAX_MS", 10000, 1, 3600000);
    C.max_failures = (int)es_env_long("es-saga", "ES_SAGA_MAX_FAILURES", 5, 1, 1000);
    C.compensation_refusals = (int)es_env_long("es-saga", "ES_SAGA_COMPENSATION_REFUSALS", 20, 1, 100000);
    snprintf(C.subject_prefix, sizeof C.subject_prefix, "%s", es_env_str("ES_COMMAND_SUBJECT_PREFIX", "cmd"));
    for (i = 0; i < 2; i++) {
        if (sg_gateway_create(&C.gateways[C.ngateways], names[i], &err) != ES_OK) {
            fprintf(stderr, "es-saga: %s\n", err.message);
            goto done;
        }
        C.ngateways++;
    }
    if (natsOptions_Create(&opts) != NATS_OK ||
        natsOptions_SetURL(opts, es_env_str("ES_NATS_URL", "nats://127.0.0.1:54222")) != NATS_OK ||
        natsOptions_SetMaxReconnect(opts, -1) != NATS_OK ||
        natsOptions_SetRetryOnFailedConnect(opts, true, es_nats_connected, NULL) != NATS_OK) {
        fprintf(stderr, "es-saga: could not set up the NATS options\n");
        goto done;
    }
    {
        natsStatus s = natsConnection_Connect(&C.nc, opts);
        if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
            fprintf(stderr, "es-saga: could not connect to NATS: %s\n", natsStatus_GetText(s));
            goto done;
        }
    }
    if (es_jetstream_open(&js, &err) != ES_OK ||
        es_http_start(&http, &hc, handle, NULL, &err) != ES_OK) {
        fprintf(stderr, "es-saga: %s\n", err.message);
        goto done;
    }
    pthread_create(&intake, NULL, intake_main, NULL);
    for (i = 0; i < nworkers; i++)
        pthread_create(&workers[i], NULL, worker_main, NULL);
    threads = true;
    fprintf(stderr, "es-saga: %d workers, commands on %s.*, stream %s, health on http://%s:%u\n",
            nworkers, C.subject_prefix, js.stream, hc.bind, hc.port);
    while (!atomic_load(&stop))
        nap(1000, gen_now());
    rc = 0;
done:
    atomic_store(&stop, true);
    poke();
    if (threads) {
        pthread_join(intake, NULL);
        for (i = 0; i < nworkers; i++)
            pthread_join(workers[i], NULL);
    }
    es_http_stop(http);
    es_jetstream_close(&js);
    if (C.nc) {
        natsConnection_Close(C.nc);
        natsConnection_Destroy(C.nc);
    }
    natsOptions_Destroy(opts);
    for (size_t k = 0; k < C.ngateways; k++)
        sg_gateway_destroy(C.gateways[k]);
    return rc;
}

int
main(int argc, char **argv)
{
    sigset_t sigs;
    pthread_t sigth;
    int rc;

    snprintf(C.conninfo, sizeof C.conninfo, "%s", es_pg_conninfo());
    C.stop = &stop;
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: es-saga (no arguments; see esctl saga --help and esctl "
                        "dead-letters --help)\n");
        return 2;
    }
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_create(&sigth, NULL, signal_thread, &sigs);
    rc = daemon_main();
    pthread_kill(sigth, SIGTERM);
    pthread_join(sigth, NULL);
    nats_Close();
    return rc;
}
