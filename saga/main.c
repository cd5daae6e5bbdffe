/*
 * es-saga: the saga manager.  Operators look after sagas and dead letters
 * with esctl (cli/sagas.c).
 *
 * The intake thread follows the events stream from its checkpoint and
 * records work and inbox entries (intake.c); ES_SAGA_WORKERS threads claim
 * due work and run the flows (engine.c).  Any number of processes may run:
 * the work rows are claimed with SKIP LOCKED and the intake's inserts are
 * idempotent.  The heartbeat thread renews the claims of the sagas the
 * workers run every third of ES_SAGA_CLAIM_MS, so another process takes
 * them over within ES_SAGA_CLAIM_MS once this one dies or stalls.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"
#include "engine.h"
#include "env.h"
#include "feed.h"
#include "http.h"
#include "intake.h"
#include "log.h"
#include "pg.h"
#include "store.h"

#define WORKERS_MAX 256
#define NAP_MIN_MS 20
/* Idle workers that look for due work themselves; the others nap until
 * new work (a ticket) or a second, since a claim takes a saga for each
 * of them: 64 idle workers polling would take the pool's connections
 * from the busy ones. */
#define POLLERS 2

static sg_config C;
static atomic_bool stop;            /* C.stop: engine.c reads it */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static unsigned wake_gen;
static int tickets;                 /* workers to wake for new work, under mu */
static int nworkers;
static es_jetstream js;
static atomic_ullong intake_seq;
static atomic_bool intake_ok;
static sg_pool *pool;              /* the workers' connections and committer */
static sg_worker workers_st[WORKERS_MAX];  /* the heartbeat renews their claims */



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

/* Wakes up to n napping workers (new work), not all of them: the others
 * would only claim nothing.  A worker busy meanwhile takes a ticket at its
 * next nap and looks again at once. */
static void
wake_workers(int n)
{
    pthread_mutex_lock(&mu);
    tickets = tickets + n < nworkers ? tickets + n : nworkers;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mu);
}

/* A worker's nap: up to ms, until a ticket (new work) or stopping. */
static void
worker_nap(int ms)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)ms * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&mu);
    while (tickets == 0 && !atomic_load(&stop))
        if (pthread_cond_timedwait(&wake, &mu, &until) == ETIMEDOUT)
            break;
    if (tickets > 0)
        tickets--;
    pthread_mutex_unlock(&mu);
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
    sg_worker *w = arg;
    es_error err;

    while (!atomic_load(&stop)) {
        bool did;

        if (sg_work_once(w, &did, &err) != ES_OK) {
            es_log(ES_LOG_WARNING, "%s", err.message);
            worker_nap(1000);
        } else if (!did) {
            /* Nothing due that no one holds: sleep until the next due time
             * or new work, and at least NAP_MIN_MS, since what is due now
             * is being claimed by others (a loop would only claim
             * nothing).  Idle, the next claim of a busy worker takes a
             * saga for this one too. */
            if (atomic_fetch_add(&C.idle, 1) < POLLERS) {
                int ms = sg_next_due_ms(w, 200);
                worker_nap(ms < NAP_MIN_MS ? NAP_MIN_MS : ms);
            } else {
                worker_nap(1000);
            }
            atomic_fetch_sub(&C.idle, 1);
        }
    }
    return NULL;
}

/* Renews the claims of the sagas the workers run, every third of the
 * claim (engine.h: sg_heartbeat), until the workers have stopped. */
static void *
heartbeat_main(void *arg)
{
    es_error err;

    (void)arg;
    while (!atomic_load(&stop)) {
        nap(C.lease_ms / 3 > 0 ? C.lease_ms / 3 : 1, gen_now());
        if (atomic_load(&stop))
            break;
        if (sg_heartbeat(workers_st, (size_t)nworkers, &err) != ES_OK)
            es_log(ES_LOG_WARNING, "%s", err.message);
    }
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
            pg = es_pg_connect(C.conninfo, false);
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
            es_log(ES_LOG_WARNING, "%s", err.message);
            atomic_store(&intake_ok, false);
            nap(1000, gen_now());
            continue;
        }
        atomic_store(&intake_ok, true);
        if (es_jetstream_take(sub, 500, 200, &b, &err) != ES_OK) {
            es_log(ES_LOG_WARNING, "%s", err.message);
            es_jetstream_unsubscribe(&js, sub);
            sub = NULL;
            nap(200, gen_now());
            continue;
        }
        if (b.n > 0 && sg_intake_apply(pg, &b, &seq, &woken, &err) != ES_OK) {
            es_log(ES_LOG_WARNING, "%s", err.message);
            es_jetstream_unsubscribe(&js, sub);     /* start again from the checkpoint */
            sub = NULL;
            PQfinish(pg);
            pg = NULL;
            nap(1000, gen_now());                   /* and not in a tight loop */
        }
        es_feed_batch_free(&b);
        atomic_store(&intake_seq, seq);
        if (woken > 0)
            wake_workers(woken);
    }
    if (sub)
        es_jetstream_unsubscribe(&js, sub);
    if (pg)
        PQfinish(pg);
    return NULL;
}

static bool
ready(void *ctx, json_t **body)
{
    bool ok = atomic_load(&intake_ok) && es_nats_up(C.nc);

    (void)ctx;
    *body = json_pack("{s:s, s:I}", "status", ok ? "ready" : "unavailable", "intake_sequence",
                      (json_int_t)atomic_load(&intake_seq));
    return ok;
}

static void
counter(es_buf *out, const char *name, const char *help, atomic_ullong *v)
{
    es_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
                  (unsigned long long)atomic_load(v));
}

static void
metrics(void *ctx, es_buf *out)
{
    (void)ctx;
    counter(out, "es_saga_started_total", "sagas this process started", &C.started);
    counter(out, "es_saga_completed_total", "sagas this process saw complete", &C.completed);
    counter(out, "es_saga_compensated_total", "sagas this process saw end compensated",
            &C.compensated);
    counter(out, "es_saga_failed_total", "sagas this process moved to failed", &C.failed);
    counter(out, "es_saga_steps_total", "commands sent for steps and compensations", &C.steps);
    counter(out, "es_saga_retries_total",
            "failed steps and compensations scheduled to be tried again", &C.retries);
    counter(out, "es_saga_dead_letters_total", "sagas moved to the dead letters",
            &C.dead_letters);
    counter(out, "es_saga_claims_empty_total", "claims of the workers that found nothing due",
            &C.claims_empty);
    counter(out, "es_saga_claims_lost_total",
            "runs cut short because another worker had claimed the saga", &C.claims_lost);
    counter(out, "es_saga_takeovers_total",
            "sagas taken over (and fenced) from a claim that ran out", &C.takeovers);
    counter(out, "es_saga_heartbeats_total", "statements renewing the claims of running sagas",
            &C.heartbeats);
    es_buf_printf(out, "# HELP es_saga_phase_calls_total calls of each phase of the workers' "
                       "runs\n# TYPE es_saga_phase_calls_total counter\n");
    for (int i = 0; i < SG_PHASES; i++)
        es_buf_printf(out, "es_saga_phase_calls_total{phase=\"%s\"} %llu\n", sg_phase_name(i),
                      (unsigned long long)atomic_load(&C.phase_calls[i]));
    es_buf_printf(out, "# HELP es_saga_phase_seconds_total time the workers spent in each "
                       "phase\n# TYPE es_saga_phase_seconds_total counter\n");
    for (int i = 0; i < SG_PHASES; i++)
        es_buf_printf(out, "es_saga_phase_seconds_total{phase=\"%s\"} %.6f\n", sg_phase_name(i),
                      (double)atomic_load(&C.phase_ns[i]) / 1e9);
    es_buf_printf(out, "# HELP es_saga_intake_sequence stream sequence of the last event the "
                       "intake recorded\n# TYPE es_saga_intake_sequence gauge\n"
                       "es_saga_intake_sequence %llu\n",
                  (unsigned long long)atomic_load(&intake_seq));
    sg_gateway_metrics_all(C.gateways, C.ngateways, out);
}

/* Ends the workers' and the intake's naps when the process starts
 * stopping: they watch C.stop, which engine.c reads too. */
static void
on_stop(void *arg)
{
    (void)arg;
    atomic_store(&stop, true);
    poke();
}

static es_daemon saga_daemon = {
    .name = "es-saga", .metrics_prefix = "es_saga", .ready = ready, .metrics = metrics,
};

static int
daemon_main(void)
{
    const char *bind = es_env_str("ES_SAGA_BIND", "127.0.0.1");
    unsigned port = (unsigned)es_env_long("es-saga", "ES_SAGA_PORT", 8084, 1, 65535);
    es_daemon_server *health = NULL;
    es_auth *auth = NULL;
    int i, rc = 1;
    pthread_t workers[WORKERS_MAX], intake, heartbeat;
    const char *names[] = {"notification", "email"};
    es_error err;
    natsOptions *opts = NULL;
    bool threads = false;

    int pg_conns, commit_conns;

    nworkers = (int)es_env_long("es-saga", "ES_SAGA_WORKERS", 64, 1, WORKERS_MAX);
    pg_conns = (int)es_env_long("es-saga", "ES_SAGA_PG_CONNS", 8, 1, 64);
    commit_conns = (int)es_env_long("es-saga", "ES_SAGA_COMMIT_CONNS", 2, 1, 16);
    C.claim_max = (int)es_env_long("es-saga", "ES_SAGA_CLAIM_BATCH", 16, 1, 16);
    C.wake = wake_workers;

    C.retry_base_ms = (int)es_env_long("es-saga", "ES_SAGA_RETRY_BASE_MS", 200, 1, 600000);
    C.retry_max_ms = (int)es_env_long("es-saga", "ES_SAGA_RETRY_MAX_MS", 10000, 1, 3600000);
    C.max_failures = (int)es_env_long("es-saga", "ES_SAGA_MAX_FAILURES", 5, 1, 1000);
    C.compensation_refusals = (int)es_env_long("es-saga", "ES_SAGA_COMPENSATION_REFUSALS", 20, 1, 100000);
    C.lease_ms = (int)es_env_long("es-saga", "ES_SAGA_CLAIM_MS", 3000, 100, 3600000);
    snprintf(C.subject_prefix, sizeof C.subject_prefix, "%s", es_env_str("ES_COMMAND_SUBJECT_PREFIX", "cmd"));
    for (i = 0; i < 2; i++) {
        if (sg_gateway_create(&C.gateways[C.ngateways], names[i], &err) != ES_OK) {
            es_log(ES_LOG_ERROR, "%s", err.message);
            goto done;
        }
        C.ngateways++;
    }
    if (es_nats_options_create(&opts, es_nats_url(), "es-saga", &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    {
        natsStatus s = natsConnection_Connect(&C.nc, opts);
        if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
            es_log(ES_LOG_ERROR, "could not connect to NATS: %s", natsStatus_GetText(s));
            goto done;
        }
    }
    /* /metrics needs a token with the metrics scope (es_daemon_server) */
    if (es_auth_start(&auth, C.conninfo, es_nats_url(),
                      &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    saga_daemon.auth = auth;
    if (sg_pool_create(&pool, C.conninfo, pg_conns, commit_conns, &err) != ES_OK ||
        es_jetstream_open(&js, &err) != ES_OK ||
        es_daemon_server_start(&health, &saga_daemon, bind, port, &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        goto done;
    }
    pthread_create(&intake, NULL, intake_main, NULL);
    for (i = 0; i < nworkers; i++) {
        sg_worker_init(&workers_st[i], &C, pool);
        pthread_create(&workers[i], NULL, worker_main, &workers_st[i]);
    }
    pthread_create(&heartbeat, NULL, heartbeat_main, NULL);
    threads = true;
    es_log(ES_LOG_INFO, "%d workers on %d + %d PostgreSQL connections, commands on %s.*, "
           "stream %s, health on %s://%s:%u", nworkers, 2 * pg_conns, commit_conns,
           C.subject_prefix, js.stream, es_daemon_http_scheme(), bind, port);
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
        pthread_join(heartbeat, NULL);
        for (i = 0; i < nworkers; i++)
            sg_worker_destroy(&workers_st[i]);
    }
    sg_pool_destroy(pool);
    es_daemon_server_stop(health);
    es_auth_stop(auth);
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
    es_error err;
    int rc;

    snprintf(C.conninfo, sizeof C.conninfo, "%s", es_pg_conninfo());
    C.stop = &stop;
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: es-saga (no arguments; see esctl saga --help and esctl "
                        "dead-letters --help)\n");
        return 2;
    }
    es_daemon_on_stop(on_stop, NULL);
    if (es_daemon_start(&saga_daemon, &err) != ES_OK) {
        es_log(ES_LOG_ERROR, "%s", err.message);
        return 1;
    }
    rc = daemon_main();
    es_daemon_stop();
    nats_Close();
    return rc;
}
