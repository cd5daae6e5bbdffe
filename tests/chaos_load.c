/*
 * The load of the fault campaign (`make chaos`, scripts/chaos.sh): a
 * steady mix of domain commands against es-command while the campaign
 * kills and restarts its servers and daemons.  Every command carries an
 * Idempotency-Key and is sent again with the same key and body until it is
 * answered, so a refused connection, a timeout or a 503 never loses nor
 * doubles a command; each answer becomes one line of the acknowledgement
 * file, which the campaign then checks against the store.
 *
 *   chaos_load run PORT RATE CONNS DRAIN_SECONDS RUN_ID ACK_FILE
 *
 * CONNS workers, each with one keep-alive connection, offer RATE commands
 * per second in total until SIGUSR1, SIGTERM or SIGINT; the commands then
 * in flight keep being retried for up to DRAIN_SECONDS (a second signal
 * gives up at once) and what is still unanswered is written down as
 * unacknowledged.  The mix: registrations (some at a domain the fraud
 * check blocks, some the verifier fails, some reusing an address),
 * deposits, restocks, orders (some from customers who never deposited,
 * some to a country shipping refuses) and cancellations of placed orders.
 * CHAOS_LOAD_SEED fixes the random choices.  With CHAOS_LOAD_FAILURES set
 * to a file, every failed attempt (no answer, or a 5xx) is also written
 * there, one line each: its start and end (wall clock, milliseconds since
 * the epoch), the failure, the kind and the error code of a 5xx answer
 * (or -), tab-separated; the cluster
 * campaign (scripts/chaos_cluster.sh) measures its windows from them.
 *
 * Acknowledgement file, one line per command, tab-separated, \N for none:
 *   kind key status code id position amount attempts replayed
 * kind: user, deposit, restock, order, cancel; status: the HTTP status of
 * the answer, 0 when none came (code then names the last failure); id: the
 * user or order id of the answer, the customer of a deposit, the sku of a
 * restock, the order of a cancellation; amount: the deposit, the restocked
 * quantity or the order total.
 *
 *   chaos_load checks < verify.json
 *
 * prints one line per check of `esctl verify --json`: name, PASS or FAIL,
 * its figures and its message, tab-separated.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "latency.h"
#include "load.h"

#define WORKERS_MAX 64
#define RICH_CUSTOMERS 32       /* c-<k>: they get deposits */
#define POOR_CUSTOMERS 8        /* p-<k>: never funded, their payments fail */
#define SKUS 16
#define REPLY_TIMEOUT_S 8       /* an answer slower than this is retried */
#define RECENT_ORDERS 64        /* per worker: candidates for cancellation */
#define REPLY_MAX 65536         /* an answer longer than this counts as a failure */

enum kind { K_USER, K_DEPOSIT, K_RESTOCK, K_ORDER, K_CANCEL, K_COUNT };
/* "Authorization: Bearer <ES_TOKEN>\r\n", or "" */
static char auth_line[128];

static const char *const kind_name[K_COUNT] = {"user", "deposit", "restock", "order", "cancel"};

/* How an attempt failed without an answer, or with one to retry. */
enum failure { F_REFUSED, F_TIMEOUT, F_CLOSED, F_HTTP503, F_HTTP5XX, F_COUNT };
static const char *const failure_name[F_COUNT] = {"refused", "timeout", "closed", "http_503",
                                                  "http_5xx"};

static unsigned port;
static int conns;
static double rate, drain_s;
static const char *run_id;
static FILE *ack_file;
static FILE *failure_file;      /* CHAOS_LOAD_FAILURES, or NULL */
static pthread_mutex_t ack_mu = PTHREAD_MUTEX_INITIALIZER;
static volatile sig_atomic_t signals_seen;

/* What the workers do, moved on by the main thread only. */
enum phase { OFFERING, DRAINING, GIVING_UP };
static atomic_int phase = OFFERING;
static atomic_int running;      /* workers not finished yet */

typedef struct command {
    enum kind kind;
    char key[96];
    char path[160];
    char body[640];
    char id[96];                /* known before sending: customer, sku, order */
    long long amount;
} command;

typedef struct worker {
    int id;
    uint64_t rng;
    int fd;
    uint64_t n;                 /* commands made */
    char last_email[128];
    char recent[RECENT_ORDERS][64];
    int nrecent;
    /* figures */
    uint64_t sent, attempts, retried, unacked, unexpected;
    uint64_t acked[K_COUNT], business[K_COUNT];
    uint64_t failures[F_COUNT];
    latencies answered;         /* first send to the final answer, per command */
    double slowest_ms;
    char *buf;                  /* REPLY_MAX bytes for the answers */
} worker;

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
on_signal(int sig)
{
    (void)sig;
    signals_seen++;
}

static uint64_t
rnd(worker *w)
{
    return load_rnd(&w->rng);
}

/* Uniform in [lo, hi]. */
static long long
rnd_in(worker *w, long long lo, long long hi)
{
    return lo + (long long)(rnd(w) % (uint64_t)(hi - lo + 1));
}

static void
sleep_s(double s)
{
    load_sleep(s);
}

/* True once the commands in flight must be given up. */
static bool
giving_up(void)
{
    return atomic_load(&phase) == GIVING_UP;
}

/* ---- HTTP ----------------------------------------------------------------- */

static int
connect_port(unsigned p)
{
    return load_connect(p, REPLY_TIMEOUT_S * 1000, false);
}

typedef struct answer {
    int status;
    bool replayed, close_after;
    char *body;                 /* into the worker's buffer, NUL-terminated */
} answer;

/*
 * One request on the worker's connection (opened if needed).  Returns true
 * with *ans set when an answer came back; false with *why set otherwise,
 * and the connection closed.
 */
static bool
exchange(worker *w, const char *req, size_t len, char *buf, size_t cap, answer *ans,
         enum failure *why)
{
    size_t got = 0, need = 0;
    char *end = NULL;
    bool until_close = false;

    memset(ans, 0, sizeof *ans);
    if (w->fd < 0 && (w->fd = connect_port(port)) < 0) {
        *why = errno == EAGAIN || errno == EINPROGRESS || errno == ETIMEDOUT ? F_TIMEOUT : F_REFUSED;
        return false;
    }
    if (send(w->fd, req, len, MSG_NOSIGNAL) != (ssize_t)len) {
        *why = errno == EAGAIN || errno == EWOULDBLOCK ? F_TIMEOUT : F_CLOSED;
        goto fail;
    }
    for (;;) {
        ssize_t n = read(w->fd, buf + got, cap - got - 1);

        if (n < 0) {
            *why = errno == EAGAIN || errno == EWOULDBLOCK ? F_TIMEOUT : F_CLOSED;
            goto fail;
        }
        if (n == 0) {
            if (end != NULL && until_close)
                break;
            *why = F_CLOSED;
            goto fail;
        }
        got += (size_t)n;
        buf[got] = '\0';
        if (end == NULL && (end = strstr(buf, "\r\n\r\n")) != NULL) {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            const char *conn = strcasestr(buf, "\r\nConnection:");

            *end = '\0';    /* headers end here; the body starts at end + 4 */
            if (sscanf(buf, "HTTP/1.%*d %d", &ans->status) != 1) {
                *why = F_CLOSED;
                goto fail;
            }
            ans->replayed = strcasestr(buf, "\r\nIdempotent-Replayed: true") != NULL;
            ans->close_after = conn != NULL && strncasecmp(conn + 13, " close", 6) == 0;
            if (cl != NULL)
                need = (size_t)(end + 4 - buf) + strtoul(cl + 17, NULL, 10);
            else
                until_close = true;
        }
        if (end != NULL && !until_close && got >= need)
            break;
        if (got + 1 >= cap) {
            *why = F_CLOSED;
            goto fail;
        }
    }
    ans->body = end + 4;
    if (ans->close_after || until_close) {
        close(w->fd);
        w->fd = -1;
    }
    return true;
fail:
    close(w->fd);
    w->fd = -1;
    return false;
}

/* ---- the commands ----------------------------------------------------------- */

static void
make_command(worker *w, command *c)
{
    unsigned roll = (unsigned)(rnd(w) % 100);
    uint64_t n = w->n++;

    memset(c, 0, sizeof *c);
    snprintf(c->key, sizeof c->key, "chaos-%s-%d-%llu", run_id, w->id, (unsigned long long)n);
    if (roll >= 90 && w->nrecent == 0)
        roll = 50;              /* nothing to cancel yet: an order instead */
    if (roll < 12) {
        unsigned r = (unsigned)(rnd(w) % 100);
        char email[128];

        c->kind = K_USER;
        if (r < 6)              /* ES_FRAUD_BLOCKED_DOMAINS: the fraud check fails */
            snprintf(email, sizeof email, "u-%s-%d-%llu@fraud.test", run_id, w->id,
                     (unsigned long long)n);
        else if (r < 12)        /* ES_VERIFIER_FAIL_DOMAINS: the verification fails */
            snprintf(email, sizeof email, "u-%s-%d-%llu@unverified.test", run_id, w->id,
                     (unsigned long long)n);
        else if (r < 18 && w->last_email[0] != '\0')    /* taken, most likely: 409 */
            snprintf(email, sizeof email, "%s", w->last_email);
        else {                  /* spread over domains: the fraud check's rate rule */
            snprintf(email, sizeof email, "u-%s-%d-%llu@d%d.example.com", run_id, w->id,
                     (unsigned long long)n, (int)(n % 32));
            snprintf(w->last_email, sizeof w->last_email, "%s", email);
        }
        snprintf(c->path, sizeof c->path, "/v1/users");
        snprintf(c->body, sizeof c->body, "{\"email\":\"%s\",\"name\":\"Chaos %d-%llu\"}", email,
                 w->id, (unsigned long long)n);
    } else if (roll < 30) {
        c->kind = K_DEPOSIT;
        snprintf(c->id, sizeof c->id, "c-%lld", rnd_in(w, 0, RICH_CUSTOMERS - 1));
        c->amount = rnd_in(w, 5000, 40000);
        snprintf(c->path, sizeof c->path, "/v1/customers/%s/deposits", c->id);
        snprintf(c->body, sizeof c->body, "{\"amount\":%lld}", c->amount);
    } else if (roll < 42) {
        c->kind = K_RESTOCK;
        snprintf(c->id, sizeof c->id, "sku-%lld", rnd_in(w, 0, SKUS - 1));
        c->amount = rnd_in(w, 1, 20);
        snprintf(c->path, sizeof c->path, "/v1/inventory/%s/restock", c->id);
        snprintf(c->body, sizeof c->body, "{\"quantity\":%lld}", c->amount);
    } else if (roll < 90) {
        int lines = (int)rnd_in(w, 1, 3), len;
        bool poor = rnd(w) % 100 < 12, far = rnd(w) % 100 < 6;
        char customer[32];

        c->kind = K_ORDER;
        snprintf(customer, sizeof customer, "%c-%lld", poor ? 'p' : 'c',
                 rnd_in(w, 0, (poor ? POOR_CUSTOMERS : RICH_CUSTOMERS) - 1));
        snprintf(c->path, sizeof c->path, "/v1/orders");
        len = snprintf(c->body, sizeof c->body, "{\"customer_id\":\"%s\",\"items\":[", customer);
        for (int i = 0; i < lines; i++)
            len += snprintf(c->body + len, sizeof c->body - (size_t)len,
                            "%s{\"sku\":\"sku-%lld\",\"quantity\":%lld,\"unit_price\":%lld}",
                            i ? "," : "", rnd_in(w, 0, SKUS - 1), rnd_in(w, 1, 4),
                            rnd_in(w, 100, 2500));
        /* ES_SHIPPING_UNSUPPORTED: the shipping step fails */
        snprintf(c->body + len, sizeof c->body - (size_t)len, "]%s}",
                 far ? ",\"ship_to\":{\"country\":\"XX\"}" : "");
    } else {
        /* mostly the order placed last, which may still be pending */
        int i = rnd(w) % 10 < 7 ? w->nrecent - 1 : (int)(rnd(w) % (uint64_t)w->nrecent);

        c->kind = K_CANCEL;
        snprintf(c->id, sizeof c->id, "%s", w->recent[i]);
        memmove(w->recent[i], w->recent[w->nrecent - 1], sizeof w->recent[i]);
        w->nrecent--;
        snprintf(c->path, sizeof c->path, "/v1/orders/%s/cancel", c->id);
        c->body[0] = '\0';
    }
}

/* A string member of the answer's body, or NULL. */
static const char *
member(json_t *doc, const char *name)
{
    return json_string_value(json_object_get(doc, name));
}

/* Is this 4xx the business answer the command may get? */
static bool
is_business(enum kind k, int status, const char *code)
{
    if (code == NULL)
        return false;
    return (k == K_USER && status == 409 && strcmp(code, "email_taken") == 0) ||
           (k == K_CANCEL && status == 422 && strcmp(code, "order_not_cancellable") == 0);
}

static void
record(const command *c, int status, const char *code, const char *id, const char *position,
       long long amount, bool has_amount, int attempts, bool replayed)
{
    char amount_text[32] = "\\N";

    if (has_amount)
        snprintf(amount_text, sizeof amount_text, "%lld", amount);
    pthread_mutex_lock(&ack_mu);
    fprintf(ack_file, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", kind_name[c->kind], c->key, status,
            code ? code : "\\N", id && *id ? id : "\\N", position ? position : "\\N",
            amount_text, attempts, replayed ? "t" : "f");
    fflush(ack_file);
    pthread_mutex_unlock(&ack_mu);
}

/* Handles an answer that ends the command; false if it must be retried. */
static bool
settle(worker *w, const command *c, const answer *a, int attempts)
{
    json_t *doc = json_loads(a->body, JSON_DISABLE_EOF_CHECK, NULL);
    const char *code = NULL, *id = c->id, *position = NULL;
    long long amount = c->amount;
    bool has_amount = c->kind == K_DEPOSIT || c->kind == K_RESTOCK;

    if (a->status >= 500) {
        w->failures[a->status == 503 ? F_HTTP503 : F_HTTP5XX]++;
        json_decref(doc);
        return false;
    }
    if (a->status >= 200 && a->status < 300) {
        position = member(doc, "position");
        if (c->kind == K_USER)
            id = member(doc, "user_id");
        else if (c->kind == K_ORDER) {
            id = member(doc, "order_id");
            amount = (long long)json_integer_value(json_object_get(doc, "total"));
            has_amount = json_is_integer(json_object_get(doc, "total"));
            if (id != NULL && w->nrecent < RECENT_ORDERS)
                snprintf(w->recent[w->nrecent++], sizeof w->recent[0], "%s", id);
        }
        w->acked[c->kind]++;
    } else {
        code = json_string_value(json_object_get(json_object_get(doc, "error"), "code"));
        if (is_business(c->kind, a->status, code)) {
            w->acked[c->kind]++;
            w->business[c->kind]++;
        } else {
            w->unexpected++;
            fprintf(stderr, "load: %s %s answered %d: %.300s\n", kind_name[c->kind], c->key,
                    a->status, a->body);
        }
    }
    record(c, a->status, code ? code : a->status >= 300 ? "unknown" : NULL, id, position, amount,
           has_amount, attempts, a->replayed);
    json_decref(doc);
    return true;
}

/* One line of the failure log for an attempt that began at start_ms. */
static void
log_failure(long long start_ms, enum failure why, enum kind k, const char *body)
{
    const char *code = body != NULL ? strstr(body, "\"code\":\"") : NULL;
    int len = 0;

    if (failure_file == NULL)
        return;
    if (code != NULL) {
        code += 8;
        while (len < 40 && code[len] != '\0' && code[len] != '"')
            len++;
    }
    pthread_mutex_lock(&ack_mu);
    fprintf(failure_file, "%lld\t%lld\t%s\t%s\t%.*s\n", start_ms, load_ms(CLOCK_REALTIME), failure_name[why],
            kind_name[k], len > 0 ? len : 1, len > 0 ? code : "-");
    fflush(failure_file);
    pthread_mutex_unlock(&ack_mu);
}

/* Sends c until it is answered or must be given up. */
static void
issue(worker *w, const command *c)
{
    char req[1536], *buf = w->buf;
    double backoff = 0.05;
    enum failure last = F_REFUSED;
    int len, attempts = 0;
    long long attempt_ms;
    double t0;

    len = snprintf(req, sizeof req,
                   "POST %s HTTP/1.1\r\nHost: chaos\r\n%sIdempotency-Key: %s\r\n"
                   "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                   c->path, auth_line, c->key, strlen(c->body), c->body);
    if (len < 0 || (size_t)len >= sizeof req) {
        fprintf(stderr, "chaos_load: request %s does not fit\n", c->key);
        abort();
    }
    w->sent++;
    t0 = now_s();
    for (;;) {
        answer a;
        enum failure why;

        if (attempts > 0 && giving_up())
            break;
        attempts++;
        w->attempts++;
        if (attempts == 2)
            w->retried++;
        attempt_ms = load_ms(CLOCK_REALTIME);
        if (exchange(w, req, (size_t)len, buf, REPLY_MAX, &a, &why)) {
            if (settle(w, c, &a, attempts)) {
                double ms = (now_s() - t0) * 1000;

                lat_add(&w->answered, t0);
                if (ms > w->slowest_ms)
                    w->slowest_ms = ms;
                return;
            }
            last = a.status == 503 ? F_HTTP503 : F_HTTP5XX;
            log_failure(attempt_ms, last, c->kind, a.body);
        } else {
            w->failures[why]++;
            last = why;
            log_failure(attempt_ms, last, c->kind, NULL);
        }
        /* back off with jitter, 50 ms doubling up to 1 s */
        sleep_s(backoff * (0.5 + (double)(rnd(w) % 1000) / 1000.0));
        backoff = backoff * 2 > 1.0 ? 1.0 : backoff * 2;
    }
    w->unacked++;
    record(c, 0, failure_name[last], c->id[0] ? c->id : NULL, NULL, c->amount,
           c->kind == K_DEPOSIT || c->kind == K_RESTOCK, attempts, false);
}

static void *
run(void *arg)
{
    worker *w = arg;
    double interval = (double)conns / rate, due = now_s() + interval * w->id / conns;

    while (atomic_load(&phase) == OFFERING) {
        command c;
        double t = now_s();

        if (due > t) {
            sleep_s(due - t > 0.1 ? 0.1 : due - t);
            continue;
        }
        due = due + interval < t - interval ? t : due + interval;     /* no bursts after a stall */
        make_command(w, &c);
        issue(w, &c);
    }
    if (w->fd >= 0)
        close(w->fd);
    atomic_fetch_sub(&running, 1);
    return NULL;
}

static int
run_load(char **argv)
{
    pthread_t th[WORKERS_MAX];
    worker *ws;
    uint64_t seed, sent = 0, attempts = 0, retried = 0, unacked = 0, unexpected = 0, acked = 0;
    uint64_t by_kind[K_COUNT] = {0}, business[K_COUNT] = {0}, failures[F_COUNT] = {0};
    const char *seed_text = getenv("CHAOS_LOAD_SEED");
    double t0, elapsed, stop_at, p50, p99, slowest = 0;
    latencies *lists[WORKERS_MAX];

    port = (unsigned)atoi(argv[2]);
    rate = atof(argv[3]);
    conns = atoi(argv[4]);
    drain_s = atof(argv[5]);
    run_id = argv[6];
    if (port == 0 || rate <= 0 || conns < 1 || conns > WORKERS_MAX || drain_s < 0 ||
        strlen(run_id) > 32) {
        fprintf(stderr, "chaos_load: bad arguments\n");
        return 2;
    }
    if ((ack_file = fopen(argv[7], "w")) == NULL) {
        fprintf(stderr, "chaos_load: could not open %s: %s\n", argv[7], strerror(errno));
        return 1;
    }
    if (getenv("CHAOS_LOAD_FAILURES") != NULL && getenv("CHAOS_LOAD_FAILURES")[0] != '\0' &&
        (failure_file = fopen(getenv("CHAOS_LOAD_FAILURES"), "w")) == NULL) {
        fprintf(stderr, "chaos_load: could not open %s: %s\n", getenv("CHAOS_LOAD_FAILURES"),
                strerror(errno));
        fclose(ack_file);
        return 1;
    }
    seed = seed_text && *seed_text ? strtoull(seed_text, NULL, 10) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
    load_signals(on_signal, (const int[]){SIGUSR1, SIGTERM, SIGINT, 0});

    ws = calloc((size_t)conns, sizeof *ws);
    if (ws == NULL) {
        fprintf(stderr, "chaos_load: out of memory\n");
        return 1;
    }
    for (int i = 0; i < conns; i++) {
        if ((ws[i].buf = malloc(REPLY_MAX)) == NULL) {
            fprintf(stderr, "chaos_load: out of memory\n");
            for (int k = 0; k < i; k++)
                free(ws[k].buf);
            free(ws);
            return 1;
        }
    }
    t0 = now_s();
    atomic_store(&running, conns);
    for (int i = 0; i < conns; i++) {
        ws[i].id = i;
        ws[i].fd = -1;
        ws[i].rng = (seed + 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1)) | 1;
        pthread_create(&th[i], NULL, run, &ws[i]);
    }
    while (signals_seen == 0)
        sleep_s(0.05);
    stop_at = now_s();
    elapsed = stop_at - t0;
    atomic_store(&phase, DRAINING);
    while (atomic_load(&running) > 0) {
        if (signals_seen >= 2 || now_s() - stop_at > drain_s)
            atomic_store(&phase, GIVING_UP);
        sleep_s(0.05);
    }
    for (int i = 0; i < conns; i++)
        pthread_join(th[i], NULL);
    fclose(ack_file);
    if (failure_file != NULL)
        fclose(failure_file);

    for (int i = 0; i < conns; i++) {
        sent += ws[i].sent;
        attempts += ws[i].attempts;
        retried += ws[i].retried;
        unacked += ws[i].unacked;
        unexpected += ws[i].unexpected;
        for (int k = 0; k < K_COUNT; k++) {
            by_kind[k] += ws[i].acked[k];
            business[k] += ws[i].business[k];
            acked += ws[i].acked[k];
        }
        for (int f = 0; f < F_COUNT; f++)
            failures[f] += ws[i].failures[f];
        lists[i] = &ws[i].answered;
        if (ws[i].slowest_ms > slowest)
            slowest = ws[i].slowest_ms;
    }
    lat_percentiles(lists, (size_t)conns, &p50, &p99);
    printf("load: seed %llu, %llu commands in %.1f s (%.1f/s offered over %d connections), "
           "%llu attempts\n",
           (unsigned long long)seed, (unsigned long long)sent, elapsed,
           elapsed > 0 ? (double)sent / elapsed : 0.0, conns, (unsigned long long)attempts);
    printf("load: acknowledged %llu (user %llu with %llu email_taken, deposit %llu, restock %llu, "
           "order %llu, cancel %llu with %llu order_not_cancellable); retried %llu; "
           "unacknowledged %llu; unexpected answers %llu\n",
           (unsigned long long)acked, (unsigned long long)by_kind[K_USER],
           (unsigned long long)business[K_USER], (unsigned long long)by_kind[K_DEPOSIT],
           (unsigned long long)by_kind[K_RESTOCK], (unsigned long long)by_kind[K_ORDER],
           (unsigned long long)by_kind[K_CANCEL], (unsigned long long)business[K_CANCEL],
           (unsigned long long)retried, (unsigned long long)unacked,
           (unsigned long long)unexpected);
    printf("load: answered in (first send to final answer, retries included) p50 %.1f ms, "
           "p99 %.1f ms, max %.1f ms\n", p50, p99, slowest);
    printf("load: failed attempts:");
    for (int f = 0; f < F_COUNT; f++)
        printf(" %s %llu", failure_name[f], (unsigned long long)failures[f]);
    printf("\n");
    printf("LOAD sent=%llu acked=%llu retried=%llu unacked=%llu unexpected=%llu",
           (unsigned long long)sent, (unsigned long long)acked, (unsigned long long)retried,
           (unsigned long long)unacked, (unsigned long long)unexpected);
    for (int f = 0; f < F_COUNT; f++)
        printf(" %s=%llu", failure_name[f], (unsigned long long)failures[f]);
    printf(" p50_ms=%.1f p99_ms=%.1f max_ms=%.1f\n", p50, p99, slowest);
    for (int i = 0; i < conns; i++)
        free(ws[i].buf);
    free(ws);
    return 0;
}

/* ---- esctl verify --json, one line per check ---------------------------------- */

static int
print_checks(void)
{
    json_error_t jerr;
    json_t *doc = json_loadf(stdin, JSON_DISABLE_EOF_CHECK, &jerr), *checks, *c;
    size_t i;

    checks = json_object_get(doc, "checks");
    if (!json_is_array(checks)) {
        fprintf(stderr, "chaos_load: no checks in the verify answer (%s)\n",
                doc ? "no \"checks\" array" : jerr.text);
        json_decref(doc);
        return 2;
    }
    json_array_foreach(checks, i, c) {
        char *figures = json_dumps(json_object_get(c, "figures"), JSON_COMPACT);
        const char *msg = json_string_value(json_object_get(c, "message"));

        printf("%s\t%s\t%s\t%s\n", json_is_string(json_object_get(c, "name")) ? json_string_value(json_object_get(c, "name")) : "?",
               json_is_true(json_object_get(c, "ok")) ? "PASS" : "FAIL", figures ? figures : "{}",
               msg ? msg : "");
        free(figures);
    }
    json_decref(doc);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *tok = getenv("ES_TOKEN");

    /* access control is on in the campaign: chaos.sh mints the token */
    if (tok != NULL && tok[0] != '\0')
        snprintf(auth_line, sizeof auth_line, "Authorization: Bearer %.90s\r\n", tok);
    if (argc == 8 && strcmp(argv[1], "run") == 0)
        return run_load(argv);
    if (argc == 2 && strcmp(argv[1], "checks") == 0)
        return print_checks();
    fprintf(stderr, "usage: chaos_load run PORT RATE CONNS DRAIN_SECONDS RUN_ID ACK_FILE\n"
                    "       chaos_load checks < verify.json\n");
    return 2;
}
