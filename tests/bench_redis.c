/*
 * The raw limit of the query_read figures (`make bench`): Redis answering
 * the reads es-query makes for one request, sent the way es-query sends
 * them, at CONNS connections without pipelining one request behind another,
 * driven like bench_http by two threads with an epoll set each.
 *
 *   bench_redis read-order|read-customer CONNS SECONDS KEYS PREFIX
 * PREFIX is a projection's version prefix, rm:<name>:<version>:.  Each
 * round trip is the transaction es_rm_read sends (events/readmodel.c,
 * read_tx): MULTI, GET rm:<name>:active (the first round only: the second
 * is pinned to the version the first saw), HMGET PREFIXcheckpoint seq
 * position, the view's commands, EXEC.
 * read-order: HGETALL PREFIXorder:o<n> and LRANGE PREFIXorderhist:o<n> 0 -1
 * in one round trip (query/views.c order_index);
 * read-customer: ZREVRANGEBYSCORE PREFIXcustorders:c-<n> +inf -inf
 * WITHSCORES LIMIT 0 21, then the same again with one HGETALL
 * PREFIXorder:<id> per order of the page (at most 20) in a second round
 * trip (page_index, page_detail; query/read.c view_on reads the index
 * twice to see that it held still);
 * n drawn at random below KEYS, as twelve digits.  Connects as
 * ES_REDIS_USER / ES_REDIS_PASSWORD to ES_REDIS_HOST:ES_REDIS_PORT,
 * database ES_REDIS_DB.  Prints "per_s=<x> requests=<n> errors=<n>
 * p50_ms=<x> p99_ms=<x>".
 */
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "latency.h"

#define THREADS 2
#define PAGE 20

static bool customer;
static int conns;
static double seconds;
static unsigned long long keys;
static const char *prefix;
static char active_key[256];    /* rm:<name>:active */
static atomic_bool stop;

typedef struct conn {
    redisContext *c;
    uint64_t k, seed;
    int pending;        /* replies still to come for this round trip */
    bool index;         /* read-customer: the page's first read is out */
    unsigned long long n;   /* the key of the request */
    size_t want;        /* read-customer: EXEC's elements in the second round */
    double t0;
} conn;

typedef struct worker {
    conn *cs;
    int n;
    uint64_t ok, errors;
    latencies lat;
} worker;

static uint64_t
next_key(conn *c)
{
    uint64_t x = ++c->k * 0x9E3779B97F4A7C15ull + c->seed * 0xBF58476D1CE4E5B9ull;

    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    return x % keys;
}

static bool
flush(conn *c)
{
    int done = 0;

    while (!done)
        if (redisBufferWrite(c->c, &done) != REDIS_OK)
            return false;
    return true;
}

/* MULTI, the active version's GET (first: not pinned yet), the HMGET of
 * the position: the head of every read transaction; returns the replies
 * it adds (OK and QUEUED ones). */
static int
tx_open(conn *c, bool first)
{
    redisAppendCommand(c->c, "MULTI");
    if (first)
        redisAppendCommand(c->c, "GET %s", active_key);
    redisAppendCommand(c->c, "HMGET %scheckpoint seq position", prefix);
    return first ? 3 : 2;
}

/* Sends c's next request (its first round trip). */
static bool
send_request(conn *c)
{
    c->n = (unsigned long long)next_key(c);
    c->t0 = lat_now();
    c->pending = tx_open(c, true);
    if (customer) {
        redisAppendCommand(c->c, "ZREVRANGEBYSCORE %scustorders:c-%012llu +inf -inf WITHSCORES LIMIT 0 %d",
                           prefix, c->n, PAGE + 1);
        c->pending += 2;
        c->index = true;
    } else {
        redisAppendCommand(c->c, "HGETALL %sorder:o%012llu", prefix, c->n);
        redisAppendCommand(c->c, "LRANGE %sorderhist:o%012llu 0 -1", prefix, c->n);
        c->pending += 3;
    }
    redisAppendCommand(c->c, "EXEC");
    return flush(c);
}

/* EXEC's answer: an array of want replies whose replies from..to-1 are
 * not empty, as every key read there exists. */
static bool
exec_ok(const redisReply *r, size_t want, size_t from, size_t to)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != want)
        return false;
    for (size_t i = from; i < to; i++)
        if (r->element[i]->type == REDIS_REPLY_ERROR ||
            (r->element[i]->type == REDIS_REPLY_ARRAY && r->element[i]->elements == 0))
            return false;
    return true;
}

/* A reply of c is in: true when c's request is answered. */
static bool
take(conn *c, redisReply *r, worker *w)
{
    if (--c->pending > 0) {
        /* MULTI's OK and the QUEUED ones */
        if (r->type == REDIS_REPLY_ERROR)
            w->errors++;
        freeReplyObject(r);
        return false;
    }
    if (customer && c->index) {
        /* [active, [seq, position], page] */
        const redisReply *z = r->elements == 3 ? r->element[2] : NULL;
        size_t i, n = z && z->type == REDIS_REPLY_ARRAY ? z->elements / 2 : 0;

        if (!exec_ok(r, 3, 2, 3))
            w->errors++;
        c->index = false;
        c->pending = tx_open(c, false);
        redisAppendCommand(c->c, "ZREVRANGEBYSCORE %scustorders:c-%012llu +inf -inf WITHSCORES LIMIT 0 %d",
                           prefix, c->n, PAGE + 1);
        c->pending += 2;
        for (i = 0; i < n && i < PAGE; i++, c->pending++)
            redisAppendCommand(c->c, "HGETALL %sorder:%s", prefix, z->element[2 * i]->str);
        redisAppendCommand(c->c, "EXEC");
        c->want = 2 + (i < PAGE ? i : PAGE);
        freeReplyObject(r);
        if (!flush(c))
            w->errors++;
        return false;
    }
    /* an order's history may be empty */
    if (!exec_ok(r, customer ? c->want : 4, customer ? 1 : 2, customer ? c->want : 3))
        w->errors++;
    freeReplyObject(r);
    return true;
}

static void *
run(void *arg)
{
    worker *w = arg;
    struct epoll_event evs[64];
    int ep = epoll_create1(0);

    for (int i = 0; i < w->n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, w->cs[i].c->fd, &ev);
        if (!send_request(&w->cs[i]))
            w->errors++;
    }
    while (!atomic_load(&stop)) {
        int m = epoll_wait(ep, evs, 64, 100);
        for (int i = 0; i < m; i++) {
            conn *c = evs[i].data.ptr;
            void *r = NULL;

            if (redisBufferRead(c->c) != REDIS_OK) {
                w->errors++;
                atomic_store(&stop, true);
                break;
            }
            while (redisGetReply(c->c, &r) == REDIS_OK && r != NULL) {
                if (take(c, r, w)) {
                    w->ok++;
                    lat_add(&w->lat, c->t0);
                    if (!send_request(c))
                        w->errors++;
                }
                r = NULL;
            }
        }
    }
    close(ep);
    return NULL;
}

static redisContext *
open_conn(void)
{
    const char *host = getenv("ES_REDIS_HOST"), *port = getenv("ES_REDIS_PORT");
    const char *user = getenv("ES_REDIS_USER"), *pw = getenv("ES_REDIS_PASSWORD");
    const char *db = getenv("ES_REDIS_DB");
    redisContext *c = redisConnect(host ? host : "127.0.0.1", port ? atoi(port) : 16379);
    redisReply *r;

    if (c == NULL || c->err) {
        fprintf(stderr, "bench_redis: cannot connect: %s\n", c ? c->errstr : "no memory");
        return NULL;
    }
    if (pw != NULL && *pw) {
        r = user && *user ? redisCommand(c, "AUTH %s %s", user, pw) : redisCommand(c, "AUTH %s", pw);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "bench_redis: AUTH refused\n");
            return NULL;
        }
        freeReplyObject(r);
    }
    r = redisCommand(c, "SELECT %d", db ? atoi(db) : 0);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "bench_redis: SELECT refused\n");
        return NULL;
    }
    freeReplyObject(r);
    /* from here on, replies are read from the epoll loop */
    c->flags &= ~REDIS_BLOCK;
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    return c;
}

int
main(int argc, char **argv)
{
    worker ws[THREADS] = {0};
    pthread_t th[THREADS];
    latencies *lists[THREADS];
    conn *cs;
    uint64_t ok = 0, errors = 0;
    double t0, elapsed, p50, p99;

    if (argc != 6 || (strcmp(argv[1], "read-order") != 0 && strcmp(argv[1], "read-customer") != 0)) {
        fprintf(stderr, "usage: bench_redis read-order|read-customer CONNS SECONDS KEYS PREFIX\n");
        return 2;
    }
    customer = strcmp(argv[1], "read-customer") == 0;
    conns = atoi(argv[2]);
    seconds = atof(argv[3]);
    keys = strtoull(argv[4], NULL, 10);
    prefix = argv[5];
    {
        /* rm:<name>:<version>: -> rm:<name>:active */
        const char *name = strncmp(prefix, "rm:", 3) == 0 ? prefix + 3 : NULL;
        const char *colon = name ? strchr(name, ':') : NULL;

        if (colon == NULL || (size_t)(colon - prefix) + 8 > sizeof active_key) {
            fprintf(stderr, "bench_redis: PREFIX must be rm:<name>:<version>:\n");
            return 2;
        }
        snprintf(active_key, sizeof active_key, "%.*sactive", (int)(colon + 1 - prefix), prefix);
    }
    if (conns < THREADS || conns > 1024 || seconds <= 0 || keys == 0)
        return 2;
    if ((cs = calloc((size_t)conns, sizeof *cs)) == NULL)
        return 1;
    for (int i = 0; i < conns; i++) {
        cs[i].seed = (uint64_t)i + 1;
        if ((cs[i].c = open_conn()) == NULL)
            return 1;
    }
    for (int t = 0, first = 0; t < THREADS; t++) {
        ws[t].cs = cs + first;
        ws[t].n = conns / THREADS + (t < conns % THREADS);
        first += ws[t].n;
        lists[t] = &ws[t].lat;
    }
    t0 = lat_now();
    for (int t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, run, &ws[t]);
    while (lat_now() - t0 < seconds && !atomic_load(&stop))
        usleep(50 * 1000);
    atomic_store(&stop, true);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    elapsed = lat_now() - t0;
    for (int t = 0; t < THREADS; t++) {
        ok += ws[t].ok;
        errors += ws[t].errors;
    }
    lat_percentiles(lists, THREADS, &p50, &p99);
    printf("per_s=%.0f requests=%llu errors=%llu p50_ms=%.2f p99_ms=%.2f\n", (double)ok / elapsed,
           (unsigned long long)ok, (unsigned long long)errors, p50, p99);
    for (int i = 0; i < conns; i++)
        redisFree(cs[i].c);
    for (int t = 0; t < THREADS; t++)
        free(ws[t].lat.ms);
    free(cs);
    return errors > 0 ? 1 : 0;
}
