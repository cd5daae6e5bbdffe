/*
 * Store benchmarks behind `make bench` (scripts/bench.sh prints the BENCH
 * lines and measures the raw limits beside them).  Workload of
 * shared/API.md: event n goes to stream order-<n % 10000>, type
 * OrderPlaced, about 200 bytes of data, every append states its exact
 * expected version.
 *
 *   bench_store append WRITERS EVENTS_PER_APPEND SECONDS
 *       WRITERS threads append through one es_committer (group commit)
 *       with BENCH_CONNS connections (default 3);
 *       prints "events_per_s=<x> appends=<n> p50_ms=<x> p99_ms=<x>"
 *   bench_store feed [AFTER [EVENTS]]
 *       reads the log in feed order through es_store_read_feed, after
 *       position AFTER ("0-0", the start, by default), EVENTS of it at
 *       most (all by default); prints "events_per_s=<x> events=<n>"
 *   bench_store raw-read
 *       one plain ordered SELECT of the same rows (the raw limit);
 *       prints "rows_per_s=<x> rows=<n>"
 * The database is $ES_PG_CONNINFO.
 */
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "committer.h"
#include "latency.h"
#include "store.h"

#define STREAMS 10000

static const char *conninfo;
static es_committer *committer;
static int writers, per_append;
static double seconds;
static atomic_bool stop;

/* Appends the decimal digits of v at p; answers the end. */
static char *
put_u64(char *p, uint64_t v)
{
    return p + es_int_text(p, (long long)v);
}

static char *
put_str(char *p, const char *s)
{
    size_t n = strlen(s);

    memcpy(p, s, n);
    return p + n;
}

/* The event data of the standard workload for event n, built without
 * printf: the load generator shares the machine with the server, so it
 * should cost as little as pgbench's own. */
static void
workload_data(uint64_t n, char *out, size_t size)
{
    char *p = out;

    if (size < 320)
        abort();
    p = put_str(p, "{\"type\":\"OrderPlaced\",\"orderId\":\"o-");
    p = put_u64(p, n);
    p = put_str(p, "\",\"customerId\":\"c-");
    p = put_u64(p, n % 1000);
    p = put_str(p, "\",\"items\":[{\"sku\":\"sku-");
    p = put_u64(p, n % 500);
    p = put_str(p, "\",\"qty\":2,\"price\":1999}],\"total\":3998,\"currency\":\"EUR\","
                   "\"shipTo\":{\"city\":\"Berlin\",\"zip\":\"10115\",\"country\":\"DE\"}}");
    *p = '\0';
}

typedef struct writer_stats {
    uint64_t appends, events, failures, conflicts;
    latencies lat;
} writer_stats;

/*
 * Writer id owns the streams whose index is id modulo writers (10000 is a
 * multiple of the writer counts used), so it knows each one's version.
 */
typedef struct writer_arg {
    int id;
    writer_stats st;
} writer_arg;

/* The version of each stream order-<i> before the run (a store that
 * already holds the workload, as in `make bench-growth`), so the writers
 * start appending at once rather than learning 10,000 versions by
 * conflicts inside the timed run. */
static int64_t start_version[STREAMS];

static bool
learn_versions(void)
{
    PGconn *c = PQconnectdb(conninfo);
    PGresult *r;

    for (int i = 0; i < STREAMS; i++)
        start_version[i] = ES_EXPECT_NO_STREAM;
    r = PQexec(c, "SELECT substr(stream_id, 7)::int, version FROM es_streams "
                  "WHERE stream_id ~ '^order-[0-9]{1,4}$'");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_store: %s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        return false;
    }
    for (int i = 0; i < PQntuples(r); i++)
        start_version[atoi(PQgetvalue(r, i, 0))] = strtoll(PQgetvalue(r, i, 1), NULL, 10);
    PQclear(r);
    PQfinish(c);
    return true;
}

static void *
writer_main(void *arg)
{
    writer_arg *wa = arg;
    writer_stats *ws = &wa->st;
    int64_t *version = malloc(STREAMS * sizeof *version);
    es_new_event *evs = calloc((size_t)per_append, sizeof *evs);
    char (*data)[320] = calloc((size_t)per_append, sizeof *data);
    char stream[32];

    if (version == NULL || evs == NULL || data == NULL)
        abort();
    for (int i = 0; i < STREAMS; i++)
        version[i] = start_version[i];
    for (uint64_t k = 0; !atomic_load(&stop); k++) {
        uint64_t a = (uint64_t)wa->id + (uint64_t)writers * k;     /* append number */
        int s = (int)(a % STREAMS);
        es_append_req req;
        es_append_result res;
        double t0;

        for (int i = 0; i < per_append; i++) {
            workload_data(a * (uint64_t)per_append + (uint64_t)i, data[i], sizeof data[i]);
            evs[i] = (es_new_event){NULL, "OrderPlaced", 1, data[i], NULL};
        }
        snprintf(stream, sizeof stream, "order-%d", s);
        req = (es_append_req){stream, version[s], evs, (size_t)per_append};
        t0 = lat_now();
        if (es_committer_append(committer, &req, &res) == ES_ECONFLICT) {
            /* a stream left by an earlier run: learn its version, go on */
            version[s] = res.err.actual_version;
            ws->conflicts++;
            continue;
        }
        if (res.status != ES_OK) {
            ws->failures++;
            if (ws->failures < 5)
                fprintf(stderr, "append failed: %s\n", res.err.message);
            continue;
        }
        version[s] = res.last_version;
        ws->appends++;
        ws->events += (uint64_t)per_append;
        lat_add(&ws->lat, t0);
    }
    free(version);
    free(evs);
    free(data);
    return NULL;
}

static int
bench_append(void)
{
    pthread_t th[64];
    writer_arg *args = calloc((size_t)writers, sizeof *args);
    es_error err;
    double t0, elapsed, p50, p99;
    uint64_t events = 0, appends = 0, failures = 0;
    latencies *lists[64];

    if (!learn_versions())
        return 1;
    if (es_committer_create(&committer, conninfo, getenv("BENCH_CONNS") ? atoi(getenv("BENCH_CONNS")) : 3, 64, &err) != ES_OK) {
        fprintf(stderr, "bench_store: %s\n", err.message);
        return 1;
    }
    t0 = lat_now();
    for (int i = 0; i < writers; i++) {
        args[i].id = i;
        pthread_create(&th[i], NULL, writer_main, &args[i]);
    }
    while (lat_now() - t0 < seconds) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < writers; i++)
        pthread_join(th[i], NULL);
    elapsed = lat_now() - t0;
    es_committer_destroy(committer);

    for (int i = 0; i < writers; i++) {
        events += args[i].st.events;
        appends += args[i].st.appends;
        failures += args[i].st.failures;
        lists[i] = &args[i].st.lat;
    }
    lat_percentiles(lists, (size_t)writers, &p50, &p99);
    printf("events_per_s=%.0f appends=%" PRIu64 " failures=%" PRIu64 " p50_ms=%.2f p99_ms=%.2f\n",
           (double)events / elapsed, appends, failures, p50, p99);
    free(args);
    return failures == 0 ? 0 : 1;
}

static int
bench_feed(const char *after, const char *most)
{
    es_store *s = NULL;
    es_error err;
    es_position pos = {0, 0};
    uint64_t events = 0, cap = most ? strtoull(most, NULL, 10) : UINT64_MAX;
    size_t page = getenv("BENCH_FEED_PAGE") ? (size_t)atol(getenv("BENCH_FEED_PAGE")) : 10000;
    double t0;

    if (after != NULL && !es_position_parse(after, &pos)) {
        fprintf(stderr, "bench_store: not a position: %s\n", after);
        return 2;
    }
    if (es_store_open(&s, conninfo, &err) != ES_OK) {
        fprintf(stderr, "bench_store: %s\n", err.message);
        return 1;
    }
    t0 = lat_now();
    while (events < cap) {
        es_page *p;
        size_t n;

        if (es_store_read_feed(s, pos, cap - events < page ? (size_t)(cap - events) : page, &p,
                               &err) != ES_OK) {
            fprintf(stderr, "bench_store: %s\n", err.message);
            es_store_close(s);
            return 1;
        }
        n = p->count;
        events += n;
        pos = p->next;
        es_page_destroy(p);
        if (n == 0)
            break;
    }
    printf("events_per_s=%.0f events=%" PRIu64 "\n", (double)events / (lat_now() - t0), events);
    es_store_close(s);
    return 0;
}

static int
bench_raw_read(void)
{
    PGconn *c = PQconnectdb(conninfo);
    PGresult *r;
    double t0, elapsed;
    int rows;

    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "bench_store: %s", PQerrorMessage(c));
        PQfinish(c);
        return 1;
    }
    t0 = lat_now();
    r = PQexec(c, "SELECT stream_id, version, event_id, type, data, metadata, recorded_at, id "
                  "FROM bench_raw ORDER BY id");
    elapsed = lat_now() - t0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_store: %s", PQresultErrorMessage(r));
        PQclear(r);
        PQfinish(c);
        return 1;
    }
    rows = PQntuples(r);
    printf("rows_per_s=%.0f rows=%d\n", rows / elapsed, rows);
    PQclear(r);
    PQfinish(c);
    return 0;
}

int
main(int argc, char **argv)
{
    conninfo = getenv("ES_PG_CONNINFO");
    if (conninfo == NULL || argc < 2) {
        fprintf(stderr, "usage: ES_PG_CONNINFO=... bench_store append WRITERS PER SECONDS | feed [AFTER [EVENTS]] | raw-read\n");
        return 2;
    }
    if (strcmp(argv[1], "append") == 0 && argc == 5) {
        writers = atoi(argv[2]);
        per_append = atoi(argv[3]);
        seconds = atof(argv[4]);
        if (writers < 1 || writers > 64 || per_append < 1 || per_append > 1000 || seconds <= 0)
            return 2;
        return bench_append();
    }
    if (strcmp(argv[1], "feed") == 0 && argc <= 4)
        return bench_feed(argc > 2 ? argv[2] : NULL, argc > 3 ? argv[3] : NULL);
    if (strcmp(argv[1], "raw-read") == 0)
        return bench_raw_read();
    return 2;
}
