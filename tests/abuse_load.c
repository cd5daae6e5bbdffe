/*
 * The hostile load of `make abuse` (scripts/abuse.sh): while
 * tests/chaos_load.c offers the steady legitimate commands, this program
 * plays attackers who hold what a client plausibly holds (an access token
 * with broad client scopes, and the NATS credentials of a daemon that is
 * not the relay) and sends, for a bounded time:
 *
 *   fuzz       random and malformed HTTP built from the fuzz corpora
 *              (tests/fuzz/corpus/<target>/...), mutated, to every daemon
 *   oversize   appends over the stored-event limit, bodies over the body
 *              limit, a Content-Length of 10 GB; and appends just under
 *              the limit, which are taken and make the pages big
 *   poison     `{"type":"UserRegistered","data":{}}` to `user-x` and the
 *              like for every protected category, and odd events in
 *              unprotected ones
 *   slowloris  many connections that send their headers (or body) a byte
 *              at a time, or never finish them
 *   waits      a flood of `GET /v1/dashboard?consistent_with=999999999-1
 *              &wait_ms=10000`
 *   pages      concurrent maximal pages (`GET /v1/feed?limit=1000`)
 *   nats       foreign messages on the events subjects (high Es-Position),
 *              a purge of the stream, requests to cmd.* whose reply subject
 *              lies in the events subjects or the JetStream API
 *   probe      meanwhile, GET /healthz of every daemon every 250 ms
 *
 * slowloris and waits, which hold a service's connections or threads,
 * start halfway through: the other attacks are first answered by a
 * service that is not starved, and so are judged on what it does with
 * them.
 *
 *   abuse_load run SECONDS CORPUS_DIR OUT_DIR
 *   abuse_load fuzz PORT SECONDS RATE CORPUS_DIR
 *
 * `run` takes its targets from the environment the campaign exports:
 * ES_COMMAND_PORT, ES_QUERY_PORT, ES_RELAY_PORT, ES_PROJECTOR_PORT,
 * ES_SAGA_PORT; ES_RELAY_STREAM, ES_RELAY_SUBJECT_PREFIX,
 * ES_COMMAND_SUBJECT_PREFIX; ABUSE_TOKEN (the attacker's token);
 * ABUSE_NATS_URLS (space-separated nats://user:password@host:port, the
 * credentials the attacker holds); sizes: ABUSE_SLOW_CONNS (1100, to
 * es-command), ABUSE_SLOW_CONNS_OTHER (200, to each other daemon),
 * ABUSE_WAITS (64), ABUSE_PAGES (8), ABUSE_BIG_EVENTS (100),
 * ABUSE_FUZZ_RATE (100 requests/s), ABUSE_HEALTH_MS (2000: a slower or
 * failed /healthz is a violation), ABUSE_SLOW_CUT_SECONDS (12: a slow
 * connection the server leaves open longer is a violation), ABUSE_EVENT_MAX (1048576, the stored
 * event limit), ABUSE_SEED.  It prints one line per attack and one CHECK
 * line per check (tab-separated: CHECK, name, PASS or FAIL, figures) and
 * keeps examples of what failed in OUT_DIR; it exits 0 once the time is
 * up, whatever the checks say (the campaign judges).
 *
 * `fuzz` is the corpus-driven HTTP sender alone, reusable against any
 * server: RATE requests/s to 127.0.0.1:PORT for SECONDS (ES_TOKEN, if
 * set, as the bearer token); exits 1 on an internal error (a 5xx but 501,
 * 503, 505), or if the server stopped accepting connections.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "latency.h"
#include "load.h"

#define CORPUS_MAX 256
#define BLOB_MAX 65536
#define KEEP_MAX 4096           /* bytes of an answer kept to read its status */
#define EXAMPLES_MAX 20         /* failing requests kept per attack */
#define NATS_URLS_MAX 4

static const char *const protected_categories[] = {
    "user", "useremail", "profile", "fraud", "frauddomain", "order", "account", "stock",
    "reservation", "shipment", "notification", "email", "analytics", "saga", "token"};
#define N_PROTECTED (sizeof protected_categories / sizeof protected_categories[0])

/* ---- settings ----------------------------------------------------------------- */

static unsigned port_command, port_query, port_relay, port_projector, port_saga;
static char auth_line[160];     /* "Authorization: Bearer <token>\r\n" */
static const char *out_dir = ".";
static const char *stream_name = "EVENTS", *events_prefix = "es.events", *cmd_prefix = "cmd";
static double stop_at;          /* now_s() when every attack stops */
static double second_half;      /* when the attacks that starve a service start */
static double started_at;       /* now_s() at the start */
static long health_ms = 2000, event_max = 1048576;
static volatile sig_atomic_t stop_now;

static double
now_s(void)
{
    return lat_now();
}

static bool
time_up(void)
{
    return stop_now || now_s() >= stop_at;
}

static void
sleep_s(double s)
{
    load_sleep(s);
}

/* Waits for the second half of the time (false if the time is up).  The
 * attacks that hold a service's connections or threads (slowloris, waits)
 * start then, so that the others are answered for a while first and are
 * judged on what the service does with them, not only on its starving. */
static bool
wait_second_half(void)
{
    while (!time_up() && now_s() < second_half)
        sleep_s(0.1);
    return !time_up();
}

static void
on_signal(int sig)
{
    (void)sig;
    stop_now = 1;
}

static long
env_long(const char *name, long def, long lo, long hi)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (v == NULL || *v == '\0')
        return def;
    n = strtol(v, &end, 10);
    if (*end != '\0' || n < lo || n > hi) {
        fprintf(stderr, "abuse_load: %s must be a whole number in %ld..%ld, got \"%s\"\n", name,
                lo, hi, v);
        exit(2);
    }
    return n;
}

static const char *
env_str(const char *name, const char *def)
{
    const char *v = getenv(name);

    return v != NULL && *v != '\0' ? v : def;
}

/* one state per thread */
static uint64_t
rnd(uint64_t *s)
{
    return load_rnd(s);
}

static uint64_t base_seed;
static atomic_uint_fast64_t seed_counter;

static uint64_t
new_seed(void)
{
    return (base_seed + 0x9e3779b97f4a7c15ULL * (atomic_fetch_add(&seed_counter, 1) + 1)) | 1;
}

/* ---- figures per attack -------------------------------------------------------- */

enum { NO_ANSWER_REFUSED, NO_ANSWER_TIMEOUT, NO_ANSWER_CLOSED, NO_ANSWER_COUNT };

typedef struct attack {
    const char *name;
    atomic_ullong sent, no_answer[NO_ANSWER_COUNT], bytes, max_bytes;
    atomic_ullong status[600];
    atomic_ullong violations;
    pthread_mutex_t mu;
    char first_violation[400];
    int examples;
} attack;

static attack a_fuzz = {.name = "fuzz"}, a_oversize = {.name = "oversize"},
              a_poison = {.name = "poison"}, a_waits = {.name = "waits"},
              a_pages = {.name = "pages"}, a_probe = {.name = "probe"};

/* Records a violation: the first one's words, and the request (if any)
 * in OUT_DIR/<attack>-<n>.req for up to EXAMPLES_MAX of them. */
static void
violation(attack *a, const char *req, size_t len, const char *fmt, ...)
{
    va_list ap;

    atomic_fetch_add(&a->violations, 1);
    pthread_mutex_lock(&a->mu);
    if (a->first_violation[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(a->first_violation, sizeof a->first_violation, fmt, ap);
        va_end(ap);
    }
    if (req != NULL && a->examples < EXAMPLES_MAX) {
        char path[512];
        FILE *f;

        snprintf(path, sizeof path, "%s/%s-%d.req", out_dir, a->name, a->examples++);
        if ((f = fopen(path, "wb")) != NULL) {
            fwrite(req, 1, len, f);
            fclose(f);
        }
    }
    pthread_mutex_unlock(&a->mu);
}

/* ---- HTTP, one request per connection --------------------------------------------- */

typedef struct outcome {
    int status;                 /* 0: no answer (kind says why) */
    int kind;                   /* NO_ANSWER_* when status is 0 */
    size_t bytes;               /* of the answer, all of it */
    double ms;
    char head[KEEP_MAX];        /* the answer's first bytes, NUL-terminated */
} outcome;


/*
 * Sends req on a new connection and reads until the server closes it (the
 * requests say Connection: close), at most timeout_ms between reads.
 * The answer's status is its first line's, however much came.
 */
static void
http_once(unsigned port, const char *req, size_t len, int timeout_ms, outcome *o)
{
    double t0 = now_s();
    size_t off = 0, kept = 0;
    int fd;

    memset(o, 0, sizeof *o);
    if ((fd = load_connect(port, timeout_ms, false)) < 0) {
        o->kind = errno == EAGAIN || errno == EINPROGRESS || errno == ETIMEDOUT ? NO_ANSWER_TIMEOUT
                                                                                 : NO_ANSWER_REFUSED;
        goto done;
    }
    while (off < len) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);

        if (n <= 0)
            break;      /* the server may answer (413) and close before reading it all */
        off += (size_t)n;
    }
    o->kind = NO_ANSWER_CLOSED;
    for (;;) {
        char buf[65536];
        ssize_t n = read(fd, buf, sizeof buf);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                o->kind = NO_ANSWER_TIMEOUT;
            break;
        }
        if (n == 0)
            break;
        if (kept + 1 < sizeof o->head) {
            size_t take = (size_t)n < sizeof o->head - 1 - kept ? (size_t)n : sizeof o->head - 1 - kept;

            memcpy(o->head + kept, buf, take);
            kept += take;
            o->head[kept] = '\0';
        }
        o->bytes += (size_t)n;
    }
    close(fd);
    if (sscanf(o->head, "HTTP/1.%*d %d", &o->status) != 1 || o->status < 100 || o->status > 599)
        o->status = 0;
done:
    o->ms = (now_s() - t0) * 1000;
}

/* Counts an outcome for its attack; returns its status (0: none). */
static int
count(attack *a, const outcome *o)
{
    unsigned long long prev;

    atomic_fetch_add(&a->sent, 1);
    if (o->status == 0)
        atomic_fetch_add(&a->no_answer[o->kind], 1);
    else
        atomic_fetch_add(&a->status[o->status], 1);
    atomic_fetch_add(&a->bytes, o->bytes);
    prev = atomic_load(&a->max_bytes);
    while (o->bytes > prev && !atomic_compare_exchange_weak(&a->max_bytes, &prev, o->bytes))
        ;
    return o->status;
}

/* The error code of a JSON error answer, or "" (into code, cap bytes). */
static void
error_code(const outcome *o, char *code, size_t cap)
{
    const char *p = strstr(o->head, "\"code\"");

    code[0] = '\0';
    if (p != NULL && (p = strchr(p + 6, '"')) != NULL) {
        size_t n = strcspn(p + 1, "\"");

        snprintf(code, cap, "%.*s", (int)(n < cap ? n : cap - 1), p + 1);
    }
}

/* An internal error: a 5xx but 503 (come back later), 501 (method not
 * implemented) and 505 (HTTP version not supported), which are answers. */
static bool
internal_error(int status)
{
    return status >= 500 && status != 501 && status != 503 && status != 505;
}

/* An internal error on hostile input is a violation. */
static void
no_internal_error(attack *a, unsigned port, const outcome *o, const char *req, size_t len)
{
    char code[64];

    if (internal_error(o->status)) {
        error_code(o, code, sizeof code);
        violation(a, req, len, "port %u answered %d %s to: %.100s", port, o->status, code, req);
    }
}

/* ---- the corpora --------------------------------------------------------------------- */

typedef struct blob {
    char target[32];            /* the fuzz target's folder: auth, codec, event, json, ... */
    char *data;
    size_t len;
} blob;

static blob corpus[CORPUS_MAX];
static int ncorpus;

/* Loads every file of every folder of dir; false if none. */
static bool
corpus_load(const char *dir)
{
    DIR *top = opendir(dir), *sub;
    struct dirent *t, *f;

    if (top == NULL) {
        fprintf(stderr, "abuse_load: could not open %s: %s\n", dir, strerror(errno));
        return false;
    }
    while ((t = readdir(top)) != NULL && ncorpus < CORPUS_MAX) {
        char path[1024];

        if (t->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, t->d_name);
        if ((sub = opendir(path)) == NULL)
            continue;
        while ((f = readdir(sub)) != NULL && ncorpus < CORPUS_MAX) {
            char file[1300];
            FILE *fp;
            blob *b = &corpus[ncorpus];

            if (f->d_name[0] == '.')
                continue;
            snprintf(file, sizeof file, "%s/%s", path, f->d_name);
            if ((fp = fopen(file, "rb")) == NULL)
                continue;
            if ((b->data = malloc(BLOB_MAX)) == NULL)
                abort();
            b->len = fread(b->data, 1, BLOB_MAX, fp);
            fclose(fp);
            snprintf(b->target, sizeof b->target, "%.31s", t->d_name);
            ncorpus++;
        }
        closedir(sub);
    }
    closedir(top);
    if (ncorpus == 0)
        fprintf(stderr, "abuse_load: no corpus files under %s\n", dir);
    return ncorpus > 0;
}

/* A random corpus file, of that target if one is named and has files. */
static const blob *
pick(uint64_t *rs, const char *target)
{
    int idx[CORPUS_MAX], n = 0;

    for (int i = 0; target != NULL && i < ncorpus; i++)
        if (strcmp(corpus[i].target, target) == 0)
            idx[n++] = i;
    if (n > 0)
        return &corpus[idx[rnd(rs) % (uint64_t)n]];
    return &corpus[rnd(rs) % (uint64_t)ncorpus];
}

/* Writes a mutation of b into out (cap bytes); returns its length. */
static size_t
mutate(uint64_t *rs, const blob *b, char *out, size_t cap)
{
    size_t len = b->len < cap ? b->len : cap;
    unsigned how = (unsigned)(rnd(rs) % 8);

    memcpy(out, b->data, len);
    switch (how) {
    case 0:                     /* as it is */
        break;
    case 1:                     /* a few bytes flipped */
    case 2:
        for (int i = 0, n = 1 + (int)(rnd(rs) % 8); len > 0 && i < n; i++)
            out[rnd(rs) % len] ^= (char)(1 << (rnd(rs) % 8));
        break;
    case 3:                     /* cut short */
        if (len > 0)
            len = rnd(rs) % len;
        break;
    case 4:                     /* random bytes put in */
        for (int i = 0, n = 1 + (int)(rnd(rs) % 16); i < n && len < cap; i++) {
            size_t at = len ? rnd(rs) % len : 0;

            memmove(out + at + 1, out + at, len - at);
            out[at] = (char)rnd(rs);
            len++;
        }
        break;
    case 5:                     /* a slice repeated */
        if (len > 1) {
            size_t from = rnd(rs) % len, n = 1 + rnd(rs) % (len - from);

            for (int r = 0; r < 8 && len + n <= cap; r++) {
                memmove(out + from + n, out + from, len - from);
                len += n;
            }
        }
        break;
    case 6:                     /* nested deeper */
        for (int r = 0; r < 200 && len + 2 <= cap; r++) {
            memmove(out + 1, out, len);
            out[0] = '[';
            out[++len] = ']';
            len++;
        }
        break;
    default:                    /* noise */
        len = rnd(rs) % 512;
        for (size_t i = 0; i < len; i++)
            out[i] = (char)rnd(rs);
        break;
    }
    return len;
}

/* ---- fuzz: random and malformed HTTP ------------------------------------------------------------ */

/* Edges of HTTP/1.1 that a parser must refuse cleanly. */
static const char *const raw_requests[] = {
    "GET / HTTP/9.9\r\nHost: a\r\nConnection: close\r\n\r\n",
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "get /healthz http/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "BREW /v1/orders HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "GET http://evil.example/v1/feed HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "GET /v1/feed\r\n\r\n",
    "POST /v1/orders HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\nConnection: close\r\n\r\n{}",
    "POST /v1/orders HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\nConnection: close\r\n\r\n{}",
    "POST /v1/orders HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\nConnection: close\r\n\r\n{}",
    "POST /v1/orders HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{}",
    "POST /v1/orders HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "POST /v1/orders HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nfffffffffffffffff\r\n{}\r\n0\r\n\r\n",
    "POST /v1/orders HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "POST /v1/orders HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
    "GET /v1/feed HTTP/1.1\r\nHost: a\r\nno colon here\r\nConnection: close\r\n\r\n",
    "GET /v1/feed HTTP/1.1\r\n Host: folded\r\n\tcontinued\r\nConnection: close\r\n\r\n",
    "GET /v1/feed?after=%ZZ&limit=%00 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "GET /v1/streams/%2e%2e%2f%2e%2e HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "GET /../../etc/passwd HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "GET /v1/feed HTTP/1.1\nHost: a\nConnection: close\n\n",
    "GET /v1/feed HTTP/1.1\r\nHost: a\r\n\r\nGET /v1/feed HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "\r\n\r\n\r\n\r\n",
    "GET /v1/feed HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer es_0000000000000000000000000000000000000000000000000000000000000000\r\nConnection: close\r\n\r\n",
    "GET /v1/feed HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer\r\nConnection: close\r\n\r\n",
};
#define N_RAW (sizeof raw_requests / sizeof raw_requests[0])

static const char *const post_paths[] = {
    "/v1/streams/abuse-fz/events", "/v1/users", "/v1/customers/abuse-fz/deposits",
    "/v1/inventory/abuse-fz/restock", "/v1/orders", "/v1/orders/abuse-fz/cancel"};
static const char *const get_forms[] = {
    "/v1/streams/%s", "/v1/feed?after=%s&limit=5", "/v1/users/%s", "/v1/orders/%s",
    "/v1/customers/%s/orders", "/v1/dashboard?consistent_with=%s&wait_ms=50", "/v1/sagas/%s",
    "/v1/inventory/%s", "/v1/feed?limit=%s"};

/*
 * Builds one hostile request into req (cap bytes, at least 256 KiB) from
 * the corpora; returns its length.
 */
static size_t
fuzz_request(uint64_t *rs, char *req, size_t cap)
{
    char *body;
    size_t blen, len = 0;
    unsigned form = (unsigned)(rnd(rs) % 10);

    body = malloc(BLOB_MAX * 2);
    if (body == NULL)
        abort();
    if (form <= 2) {            /* a POST whose body is a mutated corpus document */
        const char *path = post_paths[rnd(rs) % (sizeof post_paths / sizeof post_paths[0])];
        const blob *b = pick(rs, rnd(rs) % 2 ? "codec" : rnd(rs) % 2 ? "json" : "projection");

        blen = mutate(rs, b, body, BLOB_MAX * 2);
        len = (size_t)snprintf(req, cap,
                               "POST %s HTTP/1.1\r\nHost: abuse\r\n%sContent-Type: application/json\r\n"
                               "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                               path, rnd(rs) % 8 ? auth_line : "", blen);
        memcpy(req + len, body, blen);
        len += blen;
    } else if (form <= 4) {     /* a GET whose id, token or position is a corpus string */
        const blob *b = pick(rs, rnd(rs) % 2 ? "event" : NULL);
        const char *f = get_forms[rnd(rs) % (sizeof get_forms / sizeof get_forms[0])];
        char arg[1024], path[1200];
        size_t alen = mutate(rs, b, body, BLOB_MAX * 2);

        if (alen >= sizeof arg)
            alen = sizeof arg - 1;
        /* raw (CR, LF, spaces and all): the request line itself breaks */
        memcpy(arg, body, alen);
        arg[alen] = '\0';
        snprintf(path, sizeof path, f, arg);
        len = (size_t)snprintf(req, cap, "GET %s HTTP/1.1\r\nHost: abuse\r\n%sConnection: close\r\n\r\n",
                               path, auth_line);
    } else if (form == 5) {     /* the Authorization header from the auth corpus */
        const blob *b = pick(rs, "auth");
        size_t alen = mutate(rs, b, body, 2048);

        len = (size_t)snprintf(req, cap, "GET /v1/feed?limit=1 HTTP/1.1\r\nHost: abuse\r\nAuthorization: ");
        memcpy(req + len, body, alen);
        len += alen;
        len += (size_t)snprintf(req + len, cap - len, "\r\nConnection: close\r\n\r\n");
    } else if (form == 6) {     /* a corpus document as the whole request */
        blen = mutate(rs, pick(rs, NULL), body, BLOB_MAX * 2);
        memcpy(req, body, blen);
        len = blen;
        len += (size_t)snprintf(req + len, cap - len, "\r\n\r\n");
    } else if (form == 7) {     /* edges of the protocol */
        static const char nul[] = "GET /v1/\0feed HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        unsigned which = (unsigned)(rnd(rs) % (N_RAW + 1));

        if (which == N_RAW) {   /* a NUL in the path */
            len = sizeof nul - 1;
            memcpy(req, nul, len);
        } else {
            len = strlen(raw_requests[which]);
            memcpy(req, raw_requests[which], len);
        }
    } else if (form == 8) {     /* a header line or a request line far too long */
        size_t n = 16384 + rnd(rs) % (128 * 1024);
        bool in_line = rnd(rs) % 2;

        len = (size_t)snprintf(req, cap, "GET /v1/feed%s", in_line ? "?x=" : " HTTP/1.1\r\nX-Long: ");
        if (n > cap - len - 64)
            n = cap - len - 64;
        memset(req + len, 'a', n);
        len += n;
        len += (size_t)snprintf(req + len, cap - len, "%s\r\nHost: a\r\nConnection: close\r\n\r\n",
                                in_line ? " HTTP/1.1" : "");
    } else {                    /* thousands of headers */
        len = (size_t)snprintf(req, cap, "GET /v1/feed?limit=1 HTTP/1.1\r\nHost: abuse\r\n%s", auth_line);
        for (int i = 0; i < 4000 && len + 64 < cap; i++)
            len += (size_t)snprintf(req + len, cap - len, "X-H%d: %d\r\n", i, i);
        len += (size_t)snprintf(req + len, cap - len, "Connection: close\r\n\r\n");
    }
    free(body);
    return len < cap ? len : cap;
}

typedef struct fuzz_args {
    unsigned *ports;
    int nports;
    double rate;                /* requests/s for this thread */
} fuzz_args;

static void *
fuzz_thread(void *arg)
{
    fuzz_args *fa = arg;
    uint64_t rs = new_seed();
    size_t cap = 512 * 1024;
    char *req = malloc(cap);
    double next = now_s();

    if (req == NULL)
        abort();
    while (!time_up()) {
        unsigned port = fa->ports[rnd(&rs) % (uint64_t)fa->nports];
        size_t len = fuzz_request(&rs, req, cap);
        outcome o;

        http_once(port, req, len, 3000, &o);
        count(&a_fuzz, &o);
        no_internal_error(&a_fuzz, port, &o, req, len);
        next += 1.0 / fa->rate;
        if (next > now_s())
            sleep_s(next - now_s());
        else if (next < now_s() - 1)
            next = now_s();
    }
    free(req);
    return NULL;
}

/* ---- oversize ------------------------------------------------------------------------------------ */

/* An append of one event whose data is {"blob": "<n x's>"} to stream. */
static char *
big_append(const char *stream, size_t n, size_t *len)
{
    size_t cap = n + 512;
    char *req = malloc(cap), *p;
    int head;
    const char *pre = "{\"expected_version\":\"any\",\"events\":[{\"type\":\"AbuseBig\",\"data\":{\"blob\":\"", *post = "\"}}]}";
    size_t blen = strlen(pre) + n + strlen(post);

    if (req == NULL)
        abort();
    head = snprintf(req, cap,
                    "POST /v1/streams/%s/events HTTP/1.1\r\nHost: abuse\r\n%sContent-Type: "
                    "application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                    stream, auth_line, blen);
    p = req + head;
    p += sprintf(p, "%s", pre);
    memset(p, 'x', n);
    p += n;
    p += sprintf(p, "%s", post);
    *len = (size_t)(p - req);
    return req;
}

/* An append whose body is small but whose event jsonb stores larger:
 * [1,1,...] comes back as [1, 1, ...], 3 bytes an element for 2. */
static char *
spaced_append(size_t elements, size_t *len)
{
    size_t cap = elements * 2 + 512;
    char *req = malloc(cap), *p;
    size_t blen = strlen("{\"expected_version\":\"any\",\"events\":[{\"type\":\"AbuseSpaced\",\"data\":{\"a\":[") + elements * 2 - 1 +
                  strlen("]}}]}");
    int head;

    if (req == NULL)
        abort();
    head = snprintf(req, cap,
                    "POST /v1/streams/abuse-spaced/events HTTP/1.1\r\nHost: abuse\r\n%sContent-Type: "
                    "application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                    auth_line, blen);
    p = req + head;
    p += sprintf(p, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"AbuseSpaced\",\"data\":{\"a\":[");
    for (size_t i = 0; i < elements; i++) {
        *p++ = '1';
        if (i + 1 < elements)
            *p++ = ',';
    }
    p += sprintf(p, "]}}]}");
    *len = (size_t)(p - req);
    return req;
}

/*
 * An over-limit request must be refused with a clear error: 413 where the
 * request is otherwise valid (want_413: an append to es-command), any 4xx
 * elsewhere (a service without that route may say 404 or 405 first).  A
 * 2xx or a 5xx is a violation, and so is no answer at all in the first
 * half (in the second, slowloris may keep the request from being read).
 */
static void
must_refuse(const char *what, unsigned port, char *req, size_t len, int timeout_ms, bool want_413)
{
    outcome o;
    int st;
    char code[64];

    http_once(port, req, len, timeout_ms, &o);
    st = count(&a_oversize, &o);
    error_code(&o, code, sizeof code);
    if (st >= 200 && st < 300)
        violation(&a_oversize, NULL, 0, "%s was accepted (%d) by port %u", what, st, port);
    else if (st == 0 && now_s() - o.ms / 1000 < second_half)
        violation(&a_oversize, NULL, 0, "%s got no answer from port %u (%s after %.0f ms)", what, port,
                  o.kind == NO_ANSWER_TIMEOUT ? "timeout" : o.kind == NO_ANSWER_REFUSED ? "refused" : "closed",
                  o.ms);
    else if (want_413 ? st != 413 : st < 400 || st >= 500)
        violation(&a_oversize, NULL, 0, "%s was answered %d %s by port %u, not %s", what, st, code, port,
                  want_413 ? "413" : "a 4xx");
}

/* Events just under the stored limit (the principal in the metadata adds
 * a little): they must be taken, and they make the maximal pages big. */
static void *
big_thread(void *arg)
{
    long big_left = *(long *)arg;
    size_t len;
    char *req = big_append("abuse-big", (size_t)event_max - 4096, &len);

    while (!time_up() && big_left > 0) {
        outcome o;
        int st;

        http_once(port_command, req, len, 15000, &o);
        st = count(&a_oversize, &o);
        if (st >= 200 && st < 300)
            big_left--;
        else if (st != 0 && st != 503 && st != 429)
            violation(&a_oversize, NULL, 0, "an event just under the stored limit was answered %d, not taken",
                      st);
    }
    free(req);
    return NULL;
}

static void *
oversize_thread(void *arg)
{
    long round = 0;
    size_t len;
    char *req;

    (void)arg;
    while (!time_up()) {
        /* over the stored limit, under the body limit */
        req = spaced_append((size_t)event_max * 6 / 10, &len);
        must_refuse("an event stored over the limit (jsonb spacing)", port_command, req, len, 15000, true);
        free(req);
        if (round % 4 == 0) {
            /* a plain event one byte over the stored limit (as data alone) */
            req = big_append("abuse-over", (size_t)event_max + 1, &len);
            must_refuse("an event over the stored limit", port_command, req, len, 15000, true);
            free(req);
            /* a body over any body limit */
            req = big_append("abuse-huge", 8u << 20, &len);
            must_refuse("an 8 MiB body", port_command, req, len, 15000, true);
            must_refuse("an 8 MiB body to the query service", port_query, req, len, 15000, false);
            must_refuse("an 8 MiB body to the saga manager", port_saga, req, len, 15000, false);
            free(req);
            /* a Content-Length of 10 GB, with 1 KiB of it sent */
            req = malloc(4096);
            if (req == NULL)
                abort();
            len = (size_t)snprintf(req, 4096,
                                   "POST /v1/streams/abuse-huge/events HTTP/1.1\r\nHost: abuse\r\n%s"
                                   "Content-Type: application/json\r\nContent-Length: 10000000000\r\n"
                                   "Connection: close\r\n\r\n",
                                   auth_line);
            memset(req + len, ' ', 1024);
            len += 1024;
            must_refuse("a Content-Length of 10 GB", port_command, req, len, 5000, true);
            free(req);
        }
        round++;
        sleep_s(0.5);
    }
    return NULL;
}

/* ---- poison events ---------------------------------------------------------------------------------- */

static void *
poison_thread(void *arg)
{
    uint64_t rs = new_seed();
    char req[8192], body[4096];
    unsigned long n = 0;

    (void)arg;
    while (!time_up()) {
        outcome o;
        int st, blen;
        size_t len;
        bool protected_ = rnd(&rs) % 2 == 0;
        char stream[96], code[64];
        const char *type;

        if (protected_) {
            const char *cat = protected_categories[n % N_PROTECTED];

            /* user-x exactly, as in the issue, then a stream per category */
            snprintf(stream, sizeof stream, "%s-%s", cat, n % N_PROTECTED == 0 ? "x" : "abuse");
            type = strcmp(cat, "user") == 0 ? "UserRegistered"
                 : strcmp(cat, "order") == 0 ? "OrderPlaced"
                 : strcmp(cat, "account") == 0 ? "FundsDeposited"
                 : strcmp(cat, "stock") == 0 ? "StockRestocked"
                 : strcmp(cat, "saga") == 0 ? "SagaStarted" : "Poison";
            blen = snprintf(body, sizeof body, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"%s\",\"data\":{}}]}", type);
        } else {
            /* an unprotected category; types and data from the projection corpus */
            const blob *b = pick(&rs, "projection");
            char data[2048];
            size_t dlen = mutate(&rs, b, data, sizeof data - 1);
            static const char *const types[] = {"UserRegistered", "OrderPlaced", "FundsDeposited",
                                                "StockRestocked", "SagaStarted", "PaymentCharged"};

            /* valid JSON as data is not guaranteed: then a 400 is the answer */
            snprintf(stream, sizeof stream, "abuse-poison-%lu", n % 50);
            type = types[rnd(&rs) % (sizeof types / sizeof types[0])];
            data[dlen] = '\0';
            blen = snprintf(body, sizeof body, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"%s\",\"data\":%s}]}", type,
                            rnd(&rs) % 2 ? "{}" : data);
            if (blen < 0 || (size_t)blen >= sizeof body)
                blen = snprintf(body, sizeof body, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"%s\",\"data\":{}}]}", type);
        }
        len = (size_t)snprintf(req, sizeof req,
                               "POST /v1/streams/%s/events HTTP/1.1\r\nHost: abuse\r\n%sContent-Type: "
                               "application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                               stream, auth_line, blen, body);
        http_once(port_command, req, len, 5000, &o);
        st = count(&a_poison, &o);
        if (protected_ && st >= 200 && st < 300) {
            error_code(&o, code, sizeof code);
            violation(&a_poison, req, len, "%s with data {} was accepted (%d) into %s", type, st, stream);
        }
        no_internal_error(&a_poison, port_command, &o, req, len);
        n++;
        sleep_s(0.1);
    }
    return NULL;
}

/* ---- slowloris ------------------------------------------------------------------------------------------ */

enum slow_kind { SLOW_HEADERS, SLOW_STALLED, SLOW_BODY, SLOW_SILENT, SLOW_KINDS };

typedef struct slow_conn {
    int fd;
    int target;                 /* index into the ports of slow_args */
    unsigned port;
    enum slow_kind kind;
    size_t pos;                 /* bytes of its script sent */
    double next;                /* when its next byte goes (or its reopening) */
    double opened;              /* when it was opened */
    bool overstayed;            /* open longer than slow_cut_s, counted */
} slow_conn;

static atomic_ullong slow_opened, slow_cut, slow_answered, slow_failed_connect, slow_bytes;
static atomic_ullong slow_cut_by[5], slow_opened_to[5], slow_overstayed[5];
static double slow_cut_s = 12;  /* a slow connection must be cut within this */
static atomic_int slow_open_now, slow_open_max;

static const char *
slow_script(enum slow_kind k, size_t *len)
{
    static const char headers[] =
        "POST /v1/orders HTTP/1.1\r\nHost: abuse\r\nContent-Type: application/json\r\n"
        "X-Slow-1: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
        "X-Slow-2: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
        "X-Slow-3: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
        "X-Slow-4: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
        "X-Slow-5: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    static const char stalled[] = "GET /healthz HTTP/1.1\r\nHost: abuse\r\n";
    static const char body[] =
        "POST /v1/orders HTTP/1.1\r\nHost: abuse\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n{\"customer_id\":\"";

    switch (k) {
    case SLOW_HEADERS: *len = sizeof headers - 1; return headers;
    case SLOW_STALLED: *len = sizeof stalled - 1; return stalled;
    case SLOW_BODY: *len = sizeof body - 1; return body;
    default: *len = 0; return "";
    }
}

static void
slow_open(slow_conn *c, double now)
{
    c->fd = load_connect(c->port, 1000, true);
    c->pos = 0;
    c->next = now + 0.2;
    c->opened = now;
    c->overstayed = false;
    if (c->fd < 0) {
        atomic_fetch_add(&slow_failed_connect, 1);
        c->next = now + 1;
        return;
    }
    atomic_fetch_add(&slow_opened, 1);
    atomic_fetch_add(&slow_opened_to[c->target], 1);
    int open_now = atomic_fetch_add(&slow_open_now, 1) + 1, prev = atomic_load(&slow_open_max);

    while (open_now > prev && !atomic_compare_exchange_weak(&slow_open_max, &prev, open_now))
        ;
    if (c->kind == SLOW_STALLED) {  /* all but the end of its headers at once */
        size_t len;
        const char *s = slow_script(c->kind, &len);
        ssize_t n = send(c->fd, s, len, MSG_NOSIGNAL);

        c->pos = n > 0 ? (size_t)n : 0;
    }
}

static void
slow_close(slow_conn *c, double now)
{
    close(c->fd);
    c->fd = -1;
    atomic_fetch_sub(&slow_open_now, 1);
    c->next = now + 0.5;        /* and then again */
}

typedef struct slow_args {
    int n;                      /* the sum of counts */
    unsigned ports[5];
    int counts[5];              /* slow connections kept to each port */
} slow_args;

static void *
slow_thread(void *arg)
{
    slow_args *sa = arg;
    slow_conn *cs = calloc((size_t)sa->n, sizeof *cs);
    struct pollfd *pfd = calloc((size_t)sa->n, sizeof *pfd);
    uint64_t rs = new_seed();

    if (cs == NULL || pfd == NULL)
        abort();
    if (!wait_second_half())
        goto done;
    for (int i = 0, p = 0, left = sa->counts[0]; i < sa->n; i++, left--) {
        while (left == 0)
            left = sa->counts[++p];
        cs[i].target = p;
        cs[i].port = sa->ports[p];
        cs[i].kind = (enum slow_kind)(i % SLOW_KINDS);
        cs[i].fd = -1;
        cs[i].next = now_s() + (double)i / 500;     /* 500 new connections a second */
    }
    while (!time_up()) {
        double now = now_s();
        int np = 0;

        for (int i = 0; i < sa->n; i++) {
            slow_conn *c = &cs[i];

            if (c->fd < 0) {
                if (c->next <= now)
                    slow_open(c, now);
                continue;
            }
            if (!c->overstayed && now - c->opened > slow_cut_s) {
                c->overstayed = true;
                atomic_fetch_add(&slow_overstayed[c->target], 1);
            }
            if (c->next <= now) {   /* one more byte (the script, then header lines forever) */
                size_t len;
                const char *s = slow_script(c->kind, &len);
                char byte = 'a';

                if (c->kind == SLOW_SILENT || c->kind == SLOW_STALLED) {
                    c->next = now + 1;
                } else {
                    if (c->pos < len)
                        byte = s[c->pos];
                    else if (c->kind == SLOW_HEADERS)
                        byte = "X-More: b\r\n"[(c->pos - len) % 11];
                    if (send(c->fd, &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) {
                        c->pos++;
                        atomic_fetch_add(&slow_bytes, 1);
                    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                        atomic_fetch_add(&slow_cut, 1);
                        atomic_fetch_add(&slow_cut_by[c->target], 1);
                        slow_close(c, now);
                        continue;
                    }
                    c->next = now + 0.5 + (double)(rnd(&rs) % 1000) / 1000;
                }
            }
            pfd[np].fd = c->fd;
            pfd[np].events = POLLIN;
            pfd[np].revents = 0;
            np++;
        }
        if (poll(pfd, (nfds_t)np, 50) > 0) {
            for (int i = 0, k = 0; i < sa->n && k < np; i++) {
                char buf[4096];
                ssize_t r;

                if (cs[i].fd < 0 || cs[i].fd != pfd[k].fd)
                    continue;
                if (pfd[k++].revents == 0)
                    continue;
                r = recv(cs[i].fd, buf, sizeof buf, MSG_DONTWAIT);
                if (r > 0) {
                    atomic_fetch_add(&slow_answered, 1);    /* an answer (408, 400...): cut next */
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                    continue;
                atomic_fetch_add(&slow_cut, 1);
                atomic_fetch_add(&slow_cut_by[cs[i].target], 1);
                slow_close(&cs[i], now_s());
            }
        }
    }
    for (int i = 0; i < sa->n; i++)
        if (cs[i].fd >= 0)
            close(cs[i].fd);
done:
    free(cs);
    free(pfd);
    return NULL;
}

/* ---- waits and pages ------------------------------------------------------------------------------------ */

static void *
waits_thread(void *arg)
{
    char req[512];
    size_t len = (size_t)snprintf(req, sizeof req,
                                  "GET /v1/dashboard?consistent_with=999999999-1&wait_ms=10000 HTTP/1.1\r\n"
                                  "Host: abuse\r\n%sConnection: close\r\n\r\n",
                                  auth_line);

    (void)arg;
    if (!wait_second_half())
        return NULL;
    while (!time_up()) {
        outcome o;

        http_once(port_query, req, len, 15000, &o);
        count(&a_waits, &o);
        no_internal_error(&a_waits, port_query, &o, req, len);
        if (o.status == 0 || o.ms < 100)
            sleep_s(0.2);       /* refused at once: do not spin */
    }
    return NULL;
}

static atomic_ullong pages_lost_first_half;    /* sent in the first half, never answered */

static void *
pages_thread(void *arg)
{
    static const char *const paths[] = {"/v1/feed?limit=1000", "/v1/streams/abuse-big?limit=1000",
                                        "/v1/feed?limit=1000&after=0-0"};
    long i = *(long *)arg;

    while (!time_up()) {
        char req[512];
        size_t len = (size_t)snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: abuse\r\n%sConnection: close\r\n\r\n",
                                      paths[i++ % 3], auth_line);
        outcome o;

        double t0 = now_s();

        http_once(port_command, req, len, 30000, &o);
        count(&a_pages, &o);
        if (o.status == 0 && t0 < second_half)
            atomic_fetch_add(&pages_lost_first_half, 1);
        no_internal_error(&a_pages, port_command, &o, req, len);
        if (o.status == 0)
            sleep_s(0.2);
    }
    return NULL;
}

/* ---- the /healthz probe ----------------------------------------------------------------------------------- */

#define PROBED 5
static const char *const probed_name[PROBED] = {"command", "query", "relay", "projector", "saga"};
static double probe_max_ms[PROBED];
static unsigned long probe_slow[PROBED], probe_failed[PROBED], probe_count[PROBED];
static latencies probe_lat[PROBED];

/* One thread per daemon, so that one that does not answer does not delay
 * the probes of the others. */
static void *
probe_thread(void *arg)
{
    unsigned ports[PROBED] = {port_command, port_query, port_relay, port_projector, port_saga};
    const char *req = "GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n";
    int i = (int)(long)arg;

    while (!time_up()) {
        {
            outcome o;
            double t0 = now_s();

            http_once(ports[i], req, strlen(req), (int)health_ms + 3000, &o);
            lat_add(&probe_lat[i], t0);
            count(&a_probe, &o);
            probe_count[i]++;
            if (o.ms > probe_max_ms[i])
                probe_max_ms[i] = o.ms;
            if (o.status != 200) {
                probe_failed[i]++;
                violation(&a_probe, NULL, 0, "%s /healthz: %s after %.0f ms, %.0f s into the attacks",
                          probed_name[i],
                          o.status ? "not 200" : o.kind == NO_ANSWER_TIMEOUT ? "no answer"
                                                  : o.kind == NO_ANSWER_REFUSED ? "refused" : "closed",
                          o.ms, t0 - started_at);
            } else if (o.ms > (double)health_ms) {
                probe_slow[i]++;
                violation(&a_probe, NULL, 0, "%s /healthz took %.0f ms (limit %ld), %.0f s into the attacks",
                          probed_name[i], o.ms, health_ms, t0 - started_at);
            }
        }
        sleep_s(0.25);
    }
    return NULL;
}

/* ---- NATS ------------------------------------------------------------------------------------------------- */

typedef struct nats_figures {
    char user[64];
    unsigned long connected, foreign_sent, foreign_refused, purge_sent, purge_refused, cmd_sent,
        cmd_refused, connect_failed;
} nats_figures;

static nats_figures nats_fig[NATS_URLS_MAX];
static int nnats;
static char nats_url[NATS_URLS_MAX][512];
static atomic_ullong nats_accepted_foreign;     /* publishes into events subjects or the JS API let through */

/* Reads from fd until a line starting with want arrives (true), or -ERR
 * (sets *err_seen; keeps reading), or the timeout. */
static bool
nats_until(int fd, const char *want, bool *err_seen, char *errtext, size_t errcap)
{
    char buf[8192];
    size_t got = 0;

    for (;;) {
        ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
        char *line, *nl;

        if (n <= 0)
            return false;
        got += (size_t)n;
        buf[got] = '\0';
        line = buf;
        while ((nl = strstr(line, "\r\n")) != NULL) {
            *nl = '\0';
            if (strncmp(line, "-ERR", 4) == 0) {
                *err_seen = true;
                if (errtext != NULL && errtext[0] == '\0')
                    snprintf(errtext, errcap, "%s", line);
            } else if (strncmp(line, "PING", 4) == 0) {
                send(fd, "PONG\r\n", 6, MSG_NOSIGNAL);
            } else if (strncmp(line, want, strlen(want)) == 0) {
                return true;
            }
            line = nl + 2;
        }
        got = strlen(line);
        memmove(buf, line, got);
        if (got >= sizeof buf - 1)
            got = 0;
    }
}

/* Connects with user:password@host:port; -1 on failure. */
static int
nats_connect(const char *url, char *user, size_t ucap)
{
    char u[128] = "", pw[128] = "", host[128] = "";
    unsigned port = 0;
    char connect_line[512], errtext[256] = "";
    bool err = false;
    int fd;

    if (sscanf(url, "nats://%127[^:]:%127[^@]@%127[^:]:%u", u, pw, host, &port) != 4)
        return -1;
    snprintf(user, ucap, "%s", u);
    if ((fd = load_connect(port, 3000, false)) < 0)
        return -1;
    if (!nats_until(fd, "INFO", &err, NULL, 0))
        goto fail;
    snprintf(connect_line, sizeof connect_line,
             "CONNECT {\"verbose\":false,\"pedantic\":false,\"user\":\"%s\",\"pass\":\"%s\","
             "\"headers\":true,\"lang\":\"c\",\"version\":\"abuse\",\"protocol\":1}\r\nPING\r\n",
             u, pw);
    send(fd, connect_line, strlen(connect_line), MSG_NOSIGNAL);
    if (!nats_until(fd, "PONG", &err, errtext, sizeof errtext) || err)
        goto fail;
    return fd;
fail:
    close(fd);
    return -1;
}

/* Publishes (with headers if hdr) and waits for the server's word on it:
 * true when it was refused (-ERR, e.g. a permissions violation). */
static bool
nats_pub(int fd, const char *subject, const char *reply, const char *hdr, const char *payload,
         bool *ok)
{
    char msg[16384], errtext[256] = "";
    bool err = false;
    int n;

    if (hdr != NULL)
        n = snprintf(msg, sizeof msg, "HPUB %s %s%s%zu %zu\r\n%s%s\r\nPING\r\n", subject,
                     reply ? reply : "", reply ? " " : "", strlen(hdr), strlen(hdr) + strlen(payload),
                     hdr, payload);
    else
        n = snprintf(msg, sizeof msg, "PUB %s %s%s%zu\r\n%s\r\nPING\r\n", subject, reply ? reply : "",
                     reply ? " " : "", strlen(payload), payload);
    *ok = false;
    if (n < 0 || (size_t)n >= sizeof msg || send(fd, msg, (size_t)n, MSG_NOSIGNAL) != n)
        return false;
    if (!nats_until(fd, "PONG", &err, errtext, sizeof errtext))
        return false;
    *ok = true;
    return err;
}

static void *
nats_thread(void *arg)
{
    int k = (int)(long)arg, fd = -1;
    nats_figures *f = &nats_fig[k];
    uint64_t rs = new_seed();
    unsigned long n = 0;

    while (!time_up()) {
        char subject[256], reply[256], hdr[512], payload[2048];
        bool ok, refused;

        if (fd < 0 && (fd = nats_connect(nats_url[k], f->user, sizeof f->user)) < 0) {
            f->connect_failed++;
            sleep_s(1);
            continue;
        }
        if (n == 0 || f->connected == 0)
            f->connected++;
        /* a foreign event on the events subjects, far ahead of the feed */
        snprintf(subject, sizeof subject, "%s.order.OrderPlaced", events_prefix);
        snprintf(hdr, sizeof hdr, "NATS/1.0\r\nEs-Position: 999999999-%lu\r\nNats-Msg-Id: abuse-%s-%lu\r\n\r\n",
                 999999999UL - n, f->user, n);
        snprintf(payload, sizeof payload,
                 "{\"event_id\":\"00000000-0000-4000-8000-%012lu\",\"stream\":\"order-abuse\",\"type\":"
                 "\"OrderPlaced\",\"version\":0,\"position\":\"999999999-%lu\",\"data\":{},\"metadata\":{}}",
                 n, 999999999UL - n);
        refused = nats_pub(fd, subject, NULL, hdr, payload, &ok);
        if (!ok)
            goto lost;
        f->foreign_sent++;
        if (refused)
            f->foreign_refused++;
        else
            atomic_fetch_add(&nats_accepted_foreign, 1);
        /* a purge of the stream */
        if (n % 10 == 0) {
            snprintf(subject, sizeof subject, "$JS.API.STREAM.PURGE.%s", stream_name);
            refused = nats_pub(fd, subject, NULL, NULL, "{}", &ok);
            if (!ok)
                goto lost;
            f->purge_sent++;
            if (refused)
                f->purge_refused++;
            else
                atomic_fetch_add(&nats_accepted_foreign, 1);
        }
        /* a command whose answer would land in the events subjects, the
         * JetStream API or the wake subject; the body valid or from the corpus */
        switch (n % 3) {
        case 0: snprintf(reply, sizeof reply, "%s.account.FundsDeposited", events_prefix); break;
        case 1: snprintf(reply, sizeof reply, "$JS.API.STREAM.PURGE.%s", stream_name); break;
        default: snprintf(reply, sizeof reply, "%s.order.OrderPlaced", events_prefix); break;
        }
        snprintf(subject, sizeof subject, "%s.payment.deposit", cmd_prefix);
        if (rnd(&rs) % 2) {
            snprintf(payload, sizeof payload,
                     "{\"command_id\":\"abuse-nats-%s-%lu\",\"customer_id\":\"abuse-nats\",\"amount\":1}",
                     f->user, n);
        } else {
            size_t len = mutate(&rs, pick(&rs, "json"), payload, sizeof payload - 1);

            for (size_t i = 0; i < len; i++)        /* the protocol's framing is by length */
                if (payload[i] == '\0')
                    payload[i] = ' ';
            payload[len] = '\0';
        }
        refused = nats_pub(fd, subject, reply, NULL, payload, &ok);
        if (!ok)
            goto lost;
        f->cmd_sent++;
        if (refused)
            f->cmd_refused++;
        n++;
        sleep_s(0.1);
        continue;
    lost:
        close(fd);
        fd = -1;
        f->connect_failed++;
        sleep_s(0.5);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* ---- reports ------------------------------------------------------------------------------------------------- */

static void
print_attack(attack *a)
{
    printf("ATTACK\t%s\tsent %llu; answered", a->name, (unsigned long long)atomic_load(&a->sent));
    for (int s = 100; s < 600; s++)
        if (atomic_load(&a->status[s]) > 0)
            printf(" %d:%llu", s, (unsigned long long)atomic_load(&a->status[s]));
    printf("; no answer: refused %llu, timeout %llu, closed %llu; largest answer %llu bytes\n",
           (unsigned long long)atomic_load(&a->no_answer[NO_ANSWER_REFUSED]),
           (unsigned long long)atomic_load(&a->no_answer[NO_ANSWER_TIMEOUT]),
           (unsigned long long)atomic_load(&a->no_answer[NO_ANSWER_CLOSED]),
           (unsigned long long)atomic_load(&a->max_bytes));
}

static unsigned long long
count_5xx(attack *a)
{
    unsigned long long n = 0;

    for (int s = 500; s < 600; s++)
        if (internal_error(s))
            n += atomic_load(&a->status[s]);
    return n;
}

static void
check(const char *name, bool ok, const char *fmt, ...)
{
    va_list ap;

    printf("CHECK\t%s\t%s\t", name, ok ? "PASS" : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* Fails on a violation, and when nothing of the attack was answered (then
 * it could not be judged). */
static void
check_attack(const char *name, attack *a)
{
    unsigned long long v = atomic_load(&a->violations), sent = atomic_load(&a->sent), answered = sent;

    for (int k = 0; k < NO_ANSWER_COUNT; k++)
        answered -= atomic_load(&a->no_answer[k]);
    check(name, v == 0 && answered > 0, "%llu requests, %llu answered, %llu violations%s%s", sent, answered, v,
          v ? ": " : answered ? "" : " (nothing answered: not judged)", a->first_violation);
}

static unsigned
port_env(const char *name)
{
    long p = env_long(name, 0, 1, 65535);

    if (p == 0) {
        fprintf(stderr, "abuse_load: %s is not set\n", name);
        exit(2);
    }
    return (unsigned)p;
}

static int
run_abuse(double seconds, const char *corpus_dir)
{
    long slow_n = env_long("ABUSE_SLOW_CONNS", 1100, 0, 15000),
         slow_other = env_long("ABUSE_SLOW_CONNS_OTHER", 200, 0, 15000), waits = env_long("ABUSE_WAITS", 64, 0, 512),
         pages = env_long("ABUSE_PAGES", 8, 0, 64), big = env_long("ABUSE_BIG_EVENTS", 100, 0, 100000),
         fuzz_rate = env_long("ABUSE_FUZZ_RATE", 100, 1, 100000);
    pthread_t th[1024];
    long page_ids[64];
    int nth = 0;
    unsigned fuzz_ports[5];
    fuzz_args fa[2];
    slow_args sa = {0};
    const char *tok = getenv("ABUSE_TOKEN"), *urls = env_str("ABUSE_NATS_URLS", "");
    char urlbuf[4 * 512], *save = NULL, *u;
    unsigned long long fz5, pages_max;

    port_command = port_env("ES_COMMAND_PORT");
    port_query = port_env("ES_QUERY_PORT");
    port_relay = port_env("ES_RELAY_PORT");
    port_projector = port_env("ES_PROJECTOR_PORT");
    port_saga = port_env("ES_SAGA_PORT");
    stream_name = env_str("ES_RELAY_STREAM", stream_name);
    events_prefix = env_str("ES_RELAY_SUBJECT_PREFIX", events_prefix);
    cmd_prefix = env_str("ES_COMMAND_SUBJECT_PREFIX", cmd_prefix);
    health_ms = env_long("ABUSE_HEALTH_MS", 2000, 1, 600000);
    slow_cut_s = (double)env_long("ABUSE_SLOW_CUT_SECONDS", 12, 1, 3600);
    event_max = env_long("ABUSE_EVENT_MAX", 1048576, 4096, 64L << 20);
    if (tok == NULL || *tok == '\0') {
        fprintf(stderr, "abuse_load: ABUSE_TOKEN is not set\n");
        return 2;
    }
    snprintf(auth_line, sizeof auth_line, "Authorization: Bearer %.100s\r\n", tok);
    snprintf(urlbuf, sizeof urlbuf, "%s", urls);
    for (u = strtok_r(urlbuf, " ", &save); u != NULL && nnats < NATS_URLS_MAX; u = strtok_r(NULL, " ", &save))
        snprintf(nats_url[nnats++], sizeof nats_url[0], "%s", u);
    if (!corpus_load(corpus_dir))
        return 2;
    for (attack *a = &a_fuzz; a; a = a == &a_fuzz ? &a_oversize : a == &a_oversize ? &a_poison
                                   : a == &a_poison ? &a_waits : a == &a_waits ? &a_pages
                                   : a == &a_pages ? &a_probe : NULL)
        pthread_mutex_init(&a->mu, NULL);

    started_at = now_s();
    stop_at = started_at + seconds;
    second_half = now_s() + seconds / 2;
    for (int i = 0; i < PROBED; i++)
        pthread_create(&th[nth++], NULL, probe_thread, (void *)(long)i);
    fuzz_ports[0] = fuzz_ports[1] = fuzz_ports[2] = port_command;
    fuzz_ports[3] = port_query;
    fuzz_ports[4] = rnd(&base_seed) % 2 ? port_saga : port_relay;
    for (int i = 0; i < 2; i++) {
        fa[i] = (fuzz_args){.ports = fuzz_ports, .nports = 5, .rate = (double)fuzz_rate / 2};
        pthread_create(&th[nth++], NULL, fuzz_thread, &fa[i]);
    }
    pthread_create(&th[nth++], NULL, oversize_thread, NULL);
    pthread_create(&th[nth++], NULL, big_thread, &big);
    pthread_create(&th[nth++], NULL, poison_thread, NULL);
    if (slow_n + slow_other > 0) {
        sa = (slow_args){.n = (int)(slow_n + 4 * slow_other),
                         .ports = {port_command, port_query, port_relay, port_projector, port_saga},
                         .counts = {(int)slow_n, (int)slow_other, (int)slow_other, (int)slow_other,
                                    (int)slow_other}};
        pthread_create(&th[nth++], NULL, slow_thread, &sa);
    }
    for (long i = 0; i < waits; i++)
        pthread_create(&th[nth++], NULL, waits_thread, NULL);
    for (long i = 0; i < pages; i++) {
        page_ids[i] = i;
        pthread_create(&th[nth++], NULL, pages_thread, &page_ids[i]);
    }
    for (int i = 0; i < nnats; i++)
        pthread_create(&th[nth++], NULL, nats_thread, (void *)(long)i);
    for (int i = 0; i < nth; i++)
        pthread_join(th[i], NULL);

    print_attack(&a_fuzz);
    print_attack(&a_oversize);
    print_attack(&a_poison);
    print_attack(&a_waits);
    print_attack(&a_pages);
    print_attack(&a_probe);
    printf("ATTACK\tslowloris\t%ld connections kept (%ld to es-command, %ld to each other daemon): "
           "%llu opened, at most %d open at once, %llu cut by the server, %llu answered, "
           "%llu connects failed, %llu bytes trickled\n",
           slow_n + 4 * slow_other, slow_n, slow_other, (unsigned long long)atomic_load(&slow_opened), atomic_load(&slow_open_max),
           (unsigned long long)atomic_load(&slow_cut), (unsigned long long)atomic_load(&slow_answered),
           (unsigned long long)atomic_load(&slow_failed_connect), (unsigned long long)atomic_load(&slow_bytes));
    for (int i = 0; i < nnats; i++)
        printf("ATTACK\tnats\tas %s: foreign events %lu sent, %lu refused; purges %lu sent, %lu refused; "
               "commands with odd reply subjects %lu sent, %lu refused; connection failures %lu\n",
               nats_fig[i].user, nats_fig[i].foreign_sent, nats_fig[i].foreign_refused,
               nats_fig[i].purge_sent, nats_fig[i].purge_refused, nats_fig[i].cmd_sent,
               nats_fig[i].cmd_refused, nats_fig[i].connect_failed);
    for (int i = 0; i < PROBED; i++) {
        latencies *one = &probe_lat[i];
        double p50, p99;

        lat_percentiles(&one, 1, &p50, &p99);
        printf("ATTACK\tprobe\t%s /healthz: %lu probes, p50 %.1f ms, p99 %.1f ms, max %.1f ms, "
               "%lu over %ld ms, %lu failed\n",
               probed_name[i], probe_count[i], p50, p99, probe_max_ms[i], probe_slow[i], health_ms,
               probe_failed[i]);
    }

    for (int i = 0; i < PROBED; i++)
        printf("ATTACK\tslowloris\t%s: %llu slow connections opened, %llu cut by it, %llu still open "
               "after %.0f s\n", probed_name[i], (unsigned long long)atomic_load(&slow_opened_to[i]),
               (unsigned long long)atomic_load(&slow_cut_by[i]),
               (unsigned long long)atomic_load(&slow_overstayed[i]), slow_cut_s);
    if (slow_n + slow_other > 0) {
        char which[160] = "";
        bool all_cut = true;

        for (int i = 0; i < PROBED; i++) {
            if (atomic_load(&slow_overstayed[i]) > 0) {
                all_cut = false;
                snprintf(which + strlen(which), sizeof which - strlen(which), "%s%s %llu",
                         which[0] ? ", " : "", probed_name[i],
                         (unsigned long long)atomic_load(&slow_overstayed[i]));
            }
        }
        /* judged only if the slowloris half outlasts the deadline */
        bool judged = seconds / 2 >= slow_cut_s + 2;

        check("slow clients cut", all_cut && judged, "%llu slow connections cut by the servers%s%.0f s%s%s%s",
              (unsigned long long)atomic_load(&slow_cut), all_cut ? ", none left open over " : "; left open over ",
              slow_cut_s, all_cut ? "" : ": ", which,
              judged ? "" : " (not judged: half of ABUSE_SECONDS is shorter than ABUSE_SLOW_CUT_SECONDS + 2)");
    }
    fz5 = count_5xx(&a_fuzz) + count_5xx(&a_oversize) + count_5xx(&a_poison) + count_5xx(&a_waits) +
          count_5xx(&a_pages);
    check("hostile HTTP: no internal error", fz5 == 0,
          "%llu internal errors (5xx but 501, 503, 505; requests kept in %s)%s%s", fz5, out_dir,
          a_fuzz.first_violation[0] ? ": " : "", a_fuzz.first_violation);
    check_attack("oversize refused", &a_oversize);
    check_attack("poison refused", &a_poison);
    check_attack("/healthz within ABUSE_HEALTH_MS", &a_probe);
    {
        unsigned long long w = atomic_load(&a_waits.sent);
        unsigned long long w_answered = w - atomic_load(&a_waits.no_answer[0]) -
                                        atomic_load(&a_waits.no_answer[1]) - atomic_load(&a_waits.no_answer[2]);

        check("waiting reads answered", w == w_answered, "%llu waiting reads, %llu answered", w, w_answered);
    }
    pages_max = atomic_load(&a_pages.max_bytes);
    /* (in the second half, slowloris may keep a page from being asked) */
    check("maximal pages answered", atomic_load(&a_pages.sent) > 0 && atomic_load(&pages_lost_first_half) == 0,
          "%llu pages, largest %llu bytes; without an answer: %llu in the first half, %llu in all",
          (unsigned long long)atomic_load(&a_pages.sent), pages_max,
          (unsigned long long)atomic_load(&pages_lost_first_half),
          (unsigned long long)(atomic_load(&a_pages.no_answer[0]) + atomic_load(&a_pages.no_answer[1]) +
                               atomic_load(&a_pages.no_answer[2])));
    if (nnats > 0) {
        unsigned long sent = 0, connected = 0;

        for (int i = 0; i < nnats; i++) {
            sent += nats_fig[i].foreign_sent + nats_fig[i].purge_sent;
            connected += nats_fig[i].connected;
        }
        check("nats: foreign publishes refused", atomic_load(&nats_accepted_foreign) == 0 && connected > 0,
              "%lu publishes into the events subjects or the stream's API, %llu let through%s", sent,
              (unsigned long long)atomic_load(&nats_accepted_foreign),
              connected ? "" : " (no NATS connection was made)");
    }
    fflush(stdout);
    return 0;
}

/* ---- fuzz alone -------------------------------------------------------------------------------------------------- */

static int
run_fuzz_only(char **argv)
{
    unsigned port = (unsigned)atoi(argv[2]);
    double seconds = atof(argv[3]), rate = atof(argv[4]);
    unsigned ports[1] = {port};
    fuzz_args fa = {.ports = ports, .nports = 1, .rate = rate};
    unsigned long long refused, fz5;
    const char *tok = getenv("ES_TOKEN");

    if (port == 0 || seconds <= 0 || rate <= 0) {
        fprintf(stderr, "abuse_load: bad arguments\n");
        return 2;
    }
    if (tok != NULL && *tok != '\0')
        snprintf(auth_line, sizeof auth_line, "Authorization: Bearer %.100s\r\n", tok);
    if (!corpus_load(argv[5]))
        return 2;
    pthread_mutex_init(&a_fuzz.mu, NULL);
    stop_at = now_s() + seconds;
    fuzz_thread(&fa);
    print_attack(&a_fuzz);
    refused = atomic_load(&a_fuzz.no_answer[NO_ANSWER_REFUSED]);
    fz5 = count_5xx(&a_fuzz);
    check("no internal error", fz5 == 0, "%llu internal errors (5xx but 501, 503, 505)%s%s", fz5,
          a_fuzz.first_violation[0] ? ": " : "", a_fuzz.first_violation);
    check("server kept accepting", refused == 0, "%llu connections refused", refused);
    return fz5 == 0 && refused == 0 ? 0 : 1;
}

int
main(int argc, char **argv)
{
    struct sigaction sa;
    const char *seed_text = getenv("ABUSE_SEED");

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    base_seed = seed_text && *seed_text ? strtoull(seed_text, NULL, 10) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
    base_seed |= 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && strcmp(argv[1], "run") == 0) {
        double secs = atof(argv[2]);
        struct stat st;

        out_dir = argv[4];
        if (secs <= 0 || stat(out_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "abuse_load: SECONDS must be positive and OUT_DIR a folder\n");
            return 2;
        }
        return run_abuse(secs, argv[3]);
    }
    if (argc == 6 && strcmp(argv[1], "fuzz") == 0)
        return run_fuzz_only(argv);
    fprintf(stderr, "usage: abuse_load run SECONDS CORPUS_DIR OUT_DIR\n"
                    "       abuse_load fuzz PORT SECONDS RATE CORPUS_DIR\n");
    return 2;
}
