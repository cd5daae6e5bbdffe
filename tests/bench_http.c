/*
 * HTTP load generator behind `make bench` (figures http_append_1 and
 * http_orders): CONNS keep-alive connections, each sending requests back
 * to back for SECONDS and timing each, driven like pgbench's by two
 * threads with an epoll set each (a thread per connection would spend
 * more of the shared machine's CPU on the client than pgbench does on its
 * own, and so understate the service beside it).
 *
 *   bench_http append|orders PORT CONNS SECONDS
 * prints "per_s=<x> requests=<n> errors=<n> p50_ms=<x> p99_ms=<x>".
 *
 * append: the workload of shared/API.md, single-event appends stating the
 * exact expected version.  Connection t owns streams order-<s> with
 * s = t (mod CONNS) and cycles through them, so it knows their versions
 * (10,000 streams are not a multiple of 32, so "event n to stream n %
 * 10000" would make two connections race for a stream).
 * orders: POST /v1/orders for customer c-<n % 1000>, one line of sku-<n % 500>.
 *
 *   bench_http read-order|read-customer QUERY_PORT CONNS SECONDS KEYS
 * the query API's own job (figure query_read): GET /v1/orders/o<n> or
 * GET /v1/customers/c-<n>/orders for n drawn at random below KEYS, n
 * written as twelve digits (the key space redis-benchmark's __rand_int__
 * makes, so its raw limit reads the same keys).
 *
 *   bench_http place CMD_PORT RATE SECONDS
 * places the same orders at RATE and reads nothing back (the load of the
 * saga benchmark).
 *
 *   bench_http visibility CMD_PORT QUERY_PORT RATE SECONDS
 * places orders at RATE per second in total (open loop: each is sent at
 * its scheduled time) and, once each is acknowledged, asks the query
 * service for it with the answer's position as consistent_with; the time
 * from the acknowledgement to the query's answer is the visibility
 * latency.  Prints "per_s=... requests=... errors=... p50_ms=... p99_ms=...".
 *
 * With ES_TOKEN set, every request carries "Authorization: Bearer
 * $ES_TOKEN" (access control on); without it, none (for a service run
 * with ES_AUTH=off: the http_append_1_noauth figure).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "latency.h"

#define STREAMS 10000

/* "Authorization: Bearer <ES_TOKEN>\r\n", or "" */
static char auth_line[128];

static unsigned port, query_port;
static bool place_only;
static int conns;
static double seconds, rate;
static bool orders;
/* the read modes: 1 orders, 2 a customer's orders; their key space */
static int reads;
static unsigned long long read_keys;
static atomic_bool stop;

typedef struct worker {
    int id;
    uint64_t ok, errors;
    latencies lat;
} worker;

static int
connect_port(unsigned p)
{
    struct sockaddr_in a = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)p);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int
connect_to(void)
{
    return connect_port(port);
}

/* Sends one request and reads one response; returns the status (0: the
 * connection failed).  body_out gets the response body (NUL-terminated). */
static int
exchange(int fd, const char *req, size_t len, char *buf, size_t cap, char **body_out)
{
    size_t got = 0, need = 0;
    char *end = NULL;
    int status = 0;

    if (send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len)
        return 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, cap - got - 1);
        if (n <= 0)
            return 0;
        got += (size_t)n;
        buf[got] = '\0';
        if (end == NULL && (end = strstr(buf, "\r\n\r\n")) != NULL) {
            const char *cl = strcasestr(buf, "Content-Length:");
            sscanf(buf, "HTTP/1.%*d %d", &status);
            need = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
        }
        if (end != NULL && got >= need) {
            *body_out = end + 4;
            return status;
        }
        if (got + 1 >= cap)
            return 0;
    }
}

/* One connection of the closed-loop modes (append, orders): its next
 * request, the answer read so far and, for appends, the versions of the
 * streams it owns. */
typedef struct conn {
    int id, fd, s;
    uint64_t k;
    int64_t *version;
    size_t got;
    double t0;
    char buf[65536];
} conn;

/* Builds c's next request into req; returns its length. */
static int
next_request(conn *c, char *req, size_t cap)
{
    uint64_t n = (uint64_t)c->id + (uint64_t)conns * c->k++;
    char body[1024];
    int blen;

    if (reads != 0) {
        /* xorshift of the connection's own state: no shared generator */
        uint64_t x = c->k * 0x9E3779B97F4A7C15ull + (uint64_t)c->id * 0xBF58476D1CE4E5B9ull;
        x ^= x >> 31;
        x *= 0x94D049BB133111EBull;
        x ^= x >> 29;
        x %= read_keys;
        if (reads == 1)
            return snprintf(req, cap, "GET /v1/orders/o%012llu HTTP/1.1\r\nHost: b\r\n%s\r\n",
                            (unsigned long long)x, auth_line);
        return snprintf(req, cap, "GET /v1/customers/c-%012llu/orders HTTP/1.1\r\nHost: b\r\n%s\r\n",
                        (unsigned long long)x, auth_line);
    }
    if (orders) {
        blen = snprintf(body, sizeof body,
                        "{\"customer_id\":\"c-%llu\",\"items\":[{\"sku\":\"sku-%llu\","
                        "\"quantity\":2,\"unit_price\":1999}]}",
                        (unsigned long long)(n % 1000), (unsigned long long)(n % 500));
        return snprintf(req, cap, "POST /v1/orders HTTP/1.1\r\nHost: b\r\n%s"
                                  "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                        auth_line, blen, body);
    }
    char expected[24];
    if (c->version[c->s] < 0)
        snprintf(expected, sizeof expected, "\"no_stream\"");
    else
        snprintf(expected, sizeof expected, "%lld", (long long)c->version[c->s]);
    blen = snprintf(body, sizeof body,
                    "{\"expected_version\":%s,\"events\":[{\"type\":\"OrderPlaced\",\"data\":"
                    "{\"type\":\"OrderPlaced\",\"orderId\":\"o-%llu\",\"customerId\":\"c-%llu\","
                    "\"items\":[{\"sku\":\"sku-%llu\",\"qty\":2,\"price\":1999}],\"total\":3998,"
                    "\"currency\":\"EUR\",\"shipTo\":{\"city\":\"Berlin\",\"zip\":\"10115\","
                    "\"country\":\"DE\"}}}]}",
                    expected, (unsigned long long)n, (unsigned long long)(n % 1000),
                    (unsigned long long)(n % 500));
    /* shared/API.md's workload names its streams order-<n>; order is a
     * protected category (commands write it, the raw API may not), so the
     * raw appends go to bench-<n>: the same length, the same work */
    return snprintf(req, cap, "POST /v1/streams/bench-%d/events HTTP/1.1\r\nHost: b\r\n%s"
                              "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                    c->s, auth_line, blen, body);
}

/* Takes c's answer: counts it and, for appends, learns the stream's
 * version and moves to c's next stream. */
static void
take_answer(conn *c, worker *w, int status, const char *resp)
{
    if (status == 201 || (reads != 0 && status == 200)) {
        w->ok++;
        lat_add(&w->lat, c->t0);
        if (!orders && reads == 0) {
            const char *lv = strstr(resp, "\"last_version\":");
            c->version[c->s] = lv ? strtoll(lv + 15, NULL, 10) : c->version[c->s] + 1;
            c->s += conns;
            if (c->s >= STREAMS)
                c->s = c->id;
        }
        return;
    }
    w->errors++;
    if (!orders && reads == 0 && status == 409) {     /* left by an earlier run: learn it */
        const char *av = strstr(resp, "\"actual_version\":");
        if (av)
            c->version[c->s] = strtoll(av + 17, NULL, 10);
    }
}

/* (Re)connects c if needed and sends its next request; false when the
 * service cannot be reached. */
static bool
send_next(conn *c, int ep)
{
    char req[2048];
    int len;

    for (int attempt = 0; attempt < 2; attempt++) {
        if (c->fd < 0) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            if ((c->fd = connect_to()) < 0)
                return false;
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        }
        len = next_request(c, req, sizeof req);
        c->got = 0;
        c->t0 = lat_now();
        if (send(c->fd, req, (size_t)len, MSG_NOSIGNAL) == (ssize_t)len)
            return true;
        c->k--;
        close(c->fd);           /* also leaves the epoll set */
        c->fd = -1;
    }
    return false;
}

/* Reads what c's socket holds; answers 1 when a whole response is in
 * (status and body set), 0 when more is to come, -1 when the connection
 * failed. */
static int
read_answer(conn *c, int *status, char **body)
{
    ssize_t n = recv(c->fd, c->buf + c->got, sizeof c->buf - c->got - 1, MSG_DONTWAIT);
    char *end;

    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        return -1;
    if (n < 0)
        return 0;
    c->got += (size_t)n;
    c->buf[c->got] = '\0';
    if ((end = strstr(c->buf, "\r\n\r\n")) != NULL) {
        const char *cl = strcasestr(c->buf, "Content-Length:");
        size_t need = (size_t)(end + 4 - c->buf) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
        if (c->got >= need) {
            *status = 0;
            sscanf(c->buf, "HTTP/1.%*d %d", status);
            *body = end + 4;
            return 1;
        }
    }
    return c->got + 1 >= sizeof c->buf ? -1 : 0;
}

/* One client thread of the closed-loop modes: like pgbench's threads, it
 * drives its share of the connections from one epoll set, sending each
 * connection's next request as soon as its answer is in. */
typedef struct client {
    worker w;
    conn *cs;
    int n;
} client;

static void *
run(void *arg)
{
    client *cl = arg;
    worker *w = &cl->w;
    struct epoll_event evs[64];
    int ep = epoll_create1(0), live = 0;

    for (int i = 0; i < cl->n; i++)
        if (send_next(&cl->cs[i], ep))
            live++;
    while (live > 0 && !atomic_load(&stop)) {
        int m = epoll_wait(ep, evs, 64, 100);
        for (int i = 0; i < m; i++) {
            conn *c = evs[i].data.ptr;
            char *resp = NULL;
            int status = 0, r = read_answer(c, &status, &resp);

            if (r == 0)
                continue;
            if (r < 0) {
                w->errors++;
                close(c->fd);
                c->fd = -1;
            } else {
                take_answer(c, w, status, resp);
            }
            if (!send_next(c, ep))
                live--;
        }
    }
    for (int i = 0; i < cl->n; i++)
        if (cl->cs[i].fd >= 0)
            close(cl->cs[i].fd);
    close(ep);
    return NULL;
}

/* One visibility worker: its k-th order is due at t0 + (id + k * conns) / rate. */
static void *
run_visibility(void *arg)
{
    worker *w = arg;
    char req[1024], body[512], buf[16384], *resp;
    int cfd = connect_port(port), qfd = place_only ? 0 : connect_port(query_port);
    double t0 = lat_now();
    uint64_t k = 0;

    while (cfd >= 0 && qfd >= 0 && !atomic_load(&stop)) {
        uint64_t n = (uint64_t)w->id + (uint64_t)conns * k++;
        double due = t0 + (double)n / rate, wait = due - lat_now(), acked;
        char id[64], pos[64];
        const char *p;
        int len, blen, status;

        if (wait > 0)
            usleep((useconds_t)(wait * 1e6));
        blen = snprintf(body, sizeof body,
                        "{\"customer_id\":\"c-%llu\",\"items\":[{\"sku\":\"sku-%llu\","
                        "\"quantity\":1,\"unit_price\":100}]}",
                        (unsigned long long)(n % 1000), (unsigned long long)(n % 500));
        len = snprintf(req, sizeof req, "POST /v1/orders HTTP/1.1\r\nHost: b\r\n%s"
                                        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                       auth_line, blen, body);
        status = exchange(cfd, req, (size_t)len, buf, sizeof buf, &resp);
        acked = lat_now();
        if (status != 201 || (p = strstr(resp, "\"order_id\":\"")) == NULL ||
            sscanf(p + 12, "%63[^\"]", id) != 1 || (p = strstr(resp, "\"position\":\"")) == NULL ||
            sscanf(p + 12, "%63[^\"]", pos) != 1) {
            w->errors++;
            if (status == 0) {
                close(cfd);
                cfd = connect_port(port);
            }
            continue;
        }
        if (place_only) {
            w->ok++;
            lat_add(&w->lat, acked);
            continue;
        }
        len = snprintf(req, sizeof req,
                       "GET /v1/orders/%s?consistent_with=%s&wait_ms=5000 HTTP/1.1\r\nHost: b\r\n"
                       "%s\r\n",
                       id, pos, auth_line);
        status = exchange(qfd, req, (size_t)len, buf, sizeof buf, &resp);
        if (status != 200) {
            w->errors++;
            if (status == 0) {
                close(qfd);
                qfd = connect_port(query_port);
            }
            continue;
        }
        w->ok++;
        lat_add(&w->lat, acked);
    }
    if (cfd >= 0)
        close(cfd);
    if (qfd > 0)
        close(qfd);
    return NULL;
}

/* Runs fn on each of args (n of them, at most 256) for SECONDS, stops
 * and joins them, and prints the figures of their workers ws. */
static void
run_for_seconds(int n, void *(*fn)(void *), void *const *args, worker *const *ws)
{
    pthread_t th[256];
    latencies *lists[256];
    uint64_t ok = 0, errors = 0;
    double t0 = lat_now(), elapsed, p50, p99;

    for (int i = 0; i < n; i++)
        pthread_create(&th[i], NULL, fn, args[i]);
    while (lat_now() - t0 < seconds)
        usleep(50 * 1000);
    atomic_store(&stop, true);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    elapsed = lat_now() - t0;
    for (int i = 0; i < n; i++) {
        ok += ws[i]->ok;
        errors += ws[i]->errors;
        lists[i] = &ws[i]->lat;
    }
    lat_percentiles(lists, (size_t)n, &p50, &p99);
    printf("per_s=%.0f requests=%llu errors=%llu p50_ms=%.2f p99_ms=%.2f\n", (double)ok / elapsed,
           (unsigned long long)ok, (unsigned long long)errors, p50, p99);
}

/* The closed-loop modes: CLIENT_THREADS threads share the connections. */
#define CLIENT_THREADS 2

static int
closed_loop(void)
{
    int nt = conns < CLIENT_THREADS ? conns : CLIENT_THREADS;
    client cl[CLIENT_THREADS] = {0};
    void *args[CLIENT_THREADS];
    worker *ws[CLIENT_THREADS];
    conn *cs = calloc((size_t)conns, sizeof *cs);

    if (cs == NULL)
        return 1;
    for (int i = 0; i < conns; i++) {
        cs[i].id = cs[i].s = i;
        cs[i].fd = -1;
        if (!orders && reads == 0) {
            if ((cs[i].version = malloc(STREAMS * sizeof *cs[i].version)) == NULL)
                return 1;
            for (int j = 0; j < STREAMS; j++)
                cs[i].version[j] = -1;
        }
    }
    for (int t = 0, first = 0; t < nt; t++) {
        cl[t].cs = cs + first;
        cl[t].n = conns / nt + (t < conns % nt);
        first += cl[t].n;
        args[t] = &cl[t];
        ws[t] = &cl[t].w;
    }
    run_for_seconds(nt, run, args, ws);
    for (int i = 0; i < conns; i++)
        free(cs[i].version);
    free(cs);
    return 0;
}

int
main(int argc, char **argv)
{
    static worker ws[256];
    void *args[256];
    worker *wp[256];
    const char *tok = getenv("ES_TOKEN");

    if (tok != NULL && tok[0] != '\0')
        snprintf(auth_line, sizeof auth_line, "Authorization: Bearer %.90s\r\n", tok);

    if (argc == 5 && strcmp(argv[1], "place") == 0) {
        /* orders at RATE, nothing read back: the saga benchmark's load */
        place_only = true;
        port = (unsigned)atoi(argv[2]);
        query_port = 1;
        rate = atof(argv[3]);
        seconds = atof(argv[4]);
        conns = 32;
        if (rate <= 0)
            return 2;
    } else if (argc == 6 && strcmp(argv[1], "visibility") == 0) {
        port = (unsigned)atoi(argv[2]);
        query_port = (unsigned)atoi(argv[3]);
        rate = atof(argv[4]);
        seconds = atof(argv[5]);
        conns = 32;     /* enough that a slow answer does not delay the next */
        if (rate <= 0)
            return 2;
    } else if (argc == 6 && strncmp(argv[1], "read-", 5) == 0) {
        reads = strcmp(argv[1], "read-order") == 0 ? 1 : strcmp(argv[1], "read-customer") == 0 ? 2 : 0;
        port = (unsigned)atoi(argv[2]);
        conns = atoi(argv[3]);
        seconds = atof(argv[4]);
        read_keys = strtoull(argv[5], NULL, 10);
        if (reads == 0 || read_keys == 0)
            return 2;
    } else if (argc != 5 || (strcmp(argv[1], "append") != 0 && strcmp(argv[1], "orders") != 0)) {
        fprintf(stderr, "usage: bench_http append|orders PORT CONNS SECONDS\n"
                        "       bench_http read-order|read-customer QUERY_PORT CONNS SECONDS KEYS\n"
                        "       bench_http visibility CMD_PORT QUERY_PORT RATE SECONDS\n");
        return 2;
    } else {
        orders = strcmp(argv[1], "orders") == 0;
        port = (unsigned)atoi(argv[2]);
        conns = atoi(argv[3]);
        seconds = atof(argv[4]);
    }
    if (conns < 1 || conns > 256 || seconds <= 0)
        return 2;
    if (query_port == 0)
        return closed_loop();
    for (int i = 0; i < conns; i++) {
        ws[i].id = i;
        args[i] = wp[i] = &ws[i];
    }
    run_for_seconds(conns, run_visibility, args, wp);
    return 0;
}
