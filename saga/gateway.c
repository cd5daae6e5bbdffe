/*
 * sg_gateway (see gateway.h): how the saga manager reaches a receiver
 * outside this system.  The transport is chosen per gateway from the
 * environment, so a test, a demo and a deployment differ only in
 * configuration; the latency and failure injection let tests and demos
 * exercise the saga's retries and the breaker without a real flaky peer.
 *
 * The circuit breaker, one per gateway, under g->mu:
 *
 *               settle(): the N-th failure in a row
 *     CLOSED ─────────────────────────────────────▶ OPEN ◀───────┐
 *       ▲                                             │          │
 *       │ settle():                 admit(): the first│          │ settle():
 *       │ the probe succeeded      call after the     │          │ the probe
 *       │                          cool-down becomes  ▼          │ failed
 *       └───────────────────────────────────────── HALF_OPEN ────┘
 *                                                  (the probe)
 *
 * CLOSED lets every call through and counts failures in a row (a success
 * resets the count).  OPEN refuses every call with "circuit_open" until
 * BREAKER_OPEN_MS have passed since it opened, on the monotonic clock.
 * HALF_OPEN exists only while its single probe is in flight: every other
 * call is refused, and the probe's outcome alone decides the next state.
 * A call let through while CLOSED that ends after the breaker opened is
 * counted but moves nothing: only the probe may close an open breaker.
 */
#include "gateway.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "event.h"
#include "json.h"
#include "readmodel.h"

#define STREAM_MAXLEN "100000"
/* Idle Redis connections kept per gateway: about one per worker thread
 * that sends at once; more are made when needed and closed after use. */
#define POOL_MAX 8
#define LATENCY_MAX_MS 60000UL
#define BREAKER_FAILURES_MAX 1000000UL
#define BREAKER_OPEN_MAX_MS 86400000UL

typedef enum transport { T_REDIS, T_FILE, T_NULL } transport;

struct sg_gateway {
    char name[SG_GATEWAY_NAME_MAX + 1];
    char stream[SG_GATEWAY_NAME_MAX + 9];      /* "gateway:<name>" */
    transport kind;
    char *path;                 /* T_FILE; owned */
    unsigned breaker_failures;
    uint64_t open_ns;

    pthread_mutex_t mu;         /* guards the fields below, up to file_mu */
    double failure_rate;
    unsigned latency_ms;
    uint64_t rng;               /* xorshift64 state, never 0 */
    sg_breaker_state state;
    unsigned failures;          /* in a row, while CLOSED */
    uint64_t opened_at;         /* monotonic ns when it last opened */
    uint64_t calls_ok, calls_failed, calls_rejected, opened_total;
    redisContext *idle[POOL_MAX];       /* owned; none is in use */
    size_t nidle;

    /* Held for a whole line, so that concurrent sends never interleave
     * their bytes even when write() returns short. */
    pthread_mutex_t file_mu;
    int fd;                     /* -1: open on next send */
};

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
pause_ms(unsigned ms)
{
    struct timespec until;
    uint64_t t = now_ns() + (uint64_t)ms * 1000000u;

    until.tv_sec = (time_t)(t / 1000000000u);
    until.tv_nsec = (long)(t % 1000000000u);
    /* absolute, so a signal does not stretch the delay when restarting */
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
        ;
}

/* A uniform draw from [0, 1); g->mu held. */
static double
draw(sg_gateway *g)
{
    uint64_t x = g->rng;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    g->rng = x;
    return (double)(x >> 11) * 0x1.0p-53;
}

static uint64_t
seed(const char *name, const void *salt)
{
    uint64_t h = 14695981039346656037u;         /* FNV-1a of the name ... */

    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211u;
    /* ... mixed with the time and the address, so that two gateways or two
     * runs do not fail in lockstep; then splitmix64's finaliser */
    h ^= now_ns() ^ (uint64_t)(uintptr_t)salt ^ ((uint64_t)getpid() << 32);
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9u;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebu;
    h ^= h >> 31;
    return h ? h : 0x9e3779b97f4a7c15u;
}

/* ---- configuration ------------------------------------------------------ */

static bool
name_ok(const char *name)
{
    size_t n = 0;

    if (name == NULL)
        return false;
    for (; name[n]; n++) {
        char c = name[n];

        if (n >= SG_GATEWAY_NAME_MAX ||
            !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return n > 0;
}

/* The value of ES_GATEWAY_<UPPER>_<what> (its name left in var), or NULL
 * when unset or empty. */
static const char *
setting(const char *upper, const char *what, char *var, size_t size)
{
    const char *v;

    snprintf(var, size, "ES_GATEWAY_%s_%s", upper, what);
    v = getenv(var);
    return v && v[0] ? v : NULL;
}

static es_status
bad_setting(const char *var, const char *value, const char *expected, es_error *err)
{
    return es_error_set(err, ES_EINVALID, "invalid_setting", var,
                        "invalid value \"%.64s\" for %s: expected %s", value, var, expected);
}

static es_status
parse_count(const char *var, const char *v, unsigned long max, unsigned long *out,
            es_error *err)
{
    char expected[64], *end;
    unsigned long n;

    snprintf(expected, sizeof expected, "an integer from 0 to %lu", max);
    /* strtoul would take leading blanks and a minus sign (and wrap it) */
    if (v[0] < '0' || v[0] > '9')
        return bad_setting(var, v, expected, err);
    errno = 0;
    n = strtoul(v, &end, 10);
    if (errno != 0 || *end != '\0' || n > max)
        return bad_setting(var, v, expected, err);
    *out = n;
    return ES_OK;
}

static es_status
parse_rate(const char *var, const char *v, double *out, es_error *err)
{
    char *end;
    double r;

    if (!((v[0] >= '0' && v[0] <= '9') || v[0] == '.'))
        return bad_setting(var, v, "a number from 0 to 1", err);
    errno = 0;
    r = strtod(v, &end);
    if (errno != 0 || *end != '\0' || !isfinite(r) || r < 0 || r > 1)
        return bad_setting(var, v, "a number from 0 to 1", err);
    *out = r;
    return ES_OK;
}

es_status
sg_gateway_create(sg_gateway **out, const char *name, es_error *err)
{
    sg_gateway *g = NULL;
    char upper[SG_GATEWAY_NAME_MAX + 1], var[80];
    const char *v;
    unsigned long n;
    es_status st = ES_OK;

    *out = NULL;
    if (!name_ok(name))
        return es_error_set(err, ES_EINVALID, "invalid_gateway_name", "name",
                            "invalid gateway name \"%.64s\": expected 1 to %d of a-z, 0-9 and _",
                            name ? name : "", SG_GATEWAY_NAME_MAX);
    if ((g = calloc(1, sizeof *g)) == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    g->fd = -1;
    snprintf(g->name, sizeof g->name, "%s", name);
    snprintf(g->stream, sizeof g->stream, "gateway:%s", name);
    for (size_t i = 0; i < sizeof upper; i++)
        if ((upper[i] = (name[i] >= 'a' && name[i] <= 'z') ? (char)(name[i] - 'a' + 'A')
                                                            : name[i]) == '\0')
            break;

    v = setting(upper, "TRANSPORT", var, sizeof var);
    if (v == NULL || strcmp(v, "redis") == 0) {
        g->kind = T_REDIS;
    } else if (strcmp(v, "null") == 0) {
        g->kind = T_NULL;
    } else if (strncmp(v, "file:", 5) == 0 && v[5] != '\0') {
        g->kind = T_FILE;
        if ((g->path = strdup(v + 5)) == NULL) {
            st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
            goto done;
        }
    } else {
        st = bad_setting(var, v, "redis, null or file:<path>", err);
        goto done;
    }

    n = 0;
    if ((v = setting(upper, "LATENCY_MS", var, sizeof var)) != NULL &&
        (st = parse_count(var, v, LATENCY_MAX_MS, &n, err)) != ES_OK)
        goto done;
    g->latency_ms = (unsigned)n;

    g->failure_rate = 0;
    if ((v = setting(upper, "FAILURE_RATE", var, sizeof var)) != NULL &&
        (st = parse_rate(var, v, &g->failure_rate, err)) != ES_OK)
        goto done;

    n = 5;
    if ((v = setting(upper, "BREAKER_FAILURES", var, sizeof var)) != NULL) {
        if ((st = parse_count(var, v, BREAKER_FAILURES_MAX, &n, err)) != ES_OK)
            goto done;
        /* 0 would open the breaker before any failure */
        if (n == 0) {
            st = bad_setting(var, v, "an integer from 1 to 1000000", err);
            goto done;
        }
    }
    g->breaker_failures = (unsigned)n;

    n = 5000;
    if ((v = setting(upper, "BREAKER_OPEN_MS", var, sizeof var)) != NULL &&
        (st = parse_count(var, v, BREAKER_OPEN_MAX_MS, &n, err)) != ES_OK)
        goto done;
    g->open_ns = (uint64_t)n * 1000000u;

    g->rng = seed(name, g);
    g->state = SG_BREAKER_CLOSED;
    if (pthread_mutex_init(&g->mu, NULL) != 0) {
        st = es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not create a mutex");
        goto done;
    }
    if (pthread_mutex_init(&g->file_mu, NULL) != 0) {
        pthread_mutex_destroy(&g->mu);
        st = es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not create a mutex");
        goto done;
    }

done:
    if (st != ES_OK) {
        free(g->path);
        free(g);
        return st;
    }
    *out = g;
    return ES_OK;
}

void
sg_gateway_destroy(sg_gateway *g)
{
    if (g == NULL)
        return;
    for (size_t i = 0; i < g->nidle; i++)
        redisFree(g->idle[i]);
    if (g->fd >= 0)
        close(g->fd);
    pthread_mutex_destroy(&g->file_mu);
    pthread_mutex_destroy(&g->mu);
    free(g->path);
    free(g);
}

const char *
sg_gateway_name(const sg_gateway *g)
{
    return g->name;
}

void
sg_gateway_set_failure_rate(sg_gateway *g, double rate)
{
    if (!(rate >= 0))           /* NaN too */
        rate = 0;
    if (rate > 1)
        rate = 1;
    pthread_mutex_lock(&g->mu);
    g->failure_rate = rate;
    pthread_mutex_unlock(&g->mu);
}

unsigned
sg_gateway_latency_ms(sg_gateway *g)
{
    unsigned ms;

    pthread_mutex_lock(&g->mu);
    ms = g->latency_ms;
    pthread_mutex_unlock(&g->mu);
    return ms;
}

void
sg_gateway_set_latency_ms(sg_gateway *g, unsigned ms)
{
    pthread_mutex_lock(&g->mu);
    g->latency_ms = ms;
    pthread_mutex_unlock(&g->mu);
}

/* ---- the breaker --------------------------------------------------------- */

/* Decides whether a call may go ahead; *probe says it is the half-open
 * probe.  g->mu held. */
static es_status
admit(sg_gateway *g, bool *probe, es_error *err)
{
    uint64_t now;

    switch (g->state) {
    case SG_BREAKER_CLOSED:
        return ES_OK;
    case SG_BREAKER_OPEN:
        now = now_ns();
        if (now - g->opened_at >= g->open_ns) {
            g->state = SG_BREAKER_HALF_OPEN;
            *probe = true;
            return ES_OK;
        }
        g->calls_rejected++;
        return es_error_set(err, ES_EUNAVAILABLE, "circuit_open", NULL,
                            "gateway \"%s\" refused the call: its circuit breaker is open "
                            "for %llu ms more",
                            g->name,
                            (unsigned long long)((g->opened_at + g->open_ns - now + 999999) /
                                                 1000000));
    case SG_BREAKER_HALF_OPEN:
        break;
    }
    g->calls_rejected++;
    return es_error_set(err, ES_EUNAVAILABLE, "circuit_open", NULL,
                        "gateway \"%s\" refused the call: its circuit breaker is half-open "
                        "and its probe is in flight",
                        g->name);
}

static void
open_breaker(sg_gateway *g)
{
    g->state = SG_BREAKER_OPEN;
    g->opened_at = now_ns();
    g->opened_total++;
    g->failures = 0;
}

/* Records the outcome of a call admit() let through.  g->mu held. */
static void
settle(sg_gateway *g, bool probe, bool ok)
{
    if (ok) {
        g->calls_ok++;
        if (probe)
            g->state = SG_BREAKER_CLOSED;
        if (g->state == SG_BREAKER_CLOSED)
            g->failures = 0;
        return;
    }
    g->calls_failed++;
    if (probe)
        open_breaker(g);
    else if (g->state == SG_BREAKER_CLOSED && ++g->failures >= g->breaker_failures)
        open_breaker(g);
}

sg_breaker_state
sg_gateway_breaker(sg_gateway *g)
{
    sg_breaker_state s;

    pthread_mutex_lock(&g->mu);
    s = g->state;
    pthread_mutex_unlock(&g->mu);
    return s;
}

const char *
sg_breaker_name(sg_breaker_state s)
{
    switch (s) {
    case SG_BREAKER_CLOSED:
        return "closed";
    case SG_BREAKER_OPEN:
        return "open";
    case SG_BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "unknown";
}

/* ---- transports ---------------------------------------------------------- */

static es_status
failed(sg_gateway *g, const char *id, const char *why, es_error *err)
{
    return es_error_set(err, ES_EUNAVAILABLE, "gateway_failed", NULL,
                        "could not deliver message \"%.64s\" through gateway \"%s\": %s", id,
                        g->name, why);
}

static es_status
deliver_redis(sg_gateway *g, const char *id, size_t idlen, const char *body, es_error *err)
{
    redisContext *c = NULL;
    redisReply *r = NULL;
    const char *argv[] = {"XADD", g->stream, "MAXLEN", "~", STREAM_MAXLEN, "*",
                          "id", id, "body", body};
    size_t lens[] = {4, strlen(g->stream), 6, 1, strlen(STREAM_MAXLEN), 1,
                     2, idlen, 4, strlen(body)};
    es_error cerr;
    es_status st = ES_OK;

    pthread_mutex_lock(&g->mu);
    if (g->nidle > 0)
        c = g->idle[--g->nidle];
    pthread_mutex_unlock(&g->mu);
    if (c == NULL && (c = es_rm_connect(&cerr)) == NULL) {
        st = failed(g, id, cerr.message, err);
        goto done;
    }
    r = redisCommandArgv(c, 10, argv, lens);
    if (r == NULL) {
        /* the connection is broken (or timed out mid-reply): never reuse it */
        st = failed(g, id, c->errstr, err);
        redisFree(c);
        c = NULL;
    } else if (r->type != REDIS_REPLY_STRING) {
        st = failed(g, id, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply to XADD",
                    err);
    }

done:
    freeReplyObject(r);
    if (c != NULL) {
        pthread_mutex_lock(&g->mu);
        if (g->nidle < POOL_MAX) {
            g->idle[g->nidle++] = c;
            c = NULL;
        }
        pthread_mutex_unlock(&g->mu);
        redisFree(c);
    }
    return st;
}

/* ---- the reference receiver (gateway.h) ---------------------------------- */

/* The field f of a stream entry's field list (an array reply), or NULL. */
static const redisReply *
entry_field(const redisReply *fields, const char *f)
{
    for (size_t i = 0; fields && fields->type == REDIS_REPLY_ARRAY && i + 1 < fields->elements;
         i += 2)
        if (fields->element[i]->type == REDIS_REPLY_STRING && strcmp(fields->element[i]->str, f) == 0)
            return fields->element[i + 1];
    return NULL;
}

es_status
sg_gateway_receive(const char *name, char *after, size_t size, int max, long seen_ttl_s,
                   sg_gateway_handler handle, void *ctx, int *handled, int *dropped,
                   es_error *err)
{
    redisContext *c;
    redisReply *r = NULL;
    char stream[SG_GATEWAY_NAME_MAX + 9], start[80], count[16], ttl[24];
    es_status st = ES_OK;

    *handled = *dropped = 0;
    if (!name_ok(name))
        return es_error_set(err, ES_EINVALID, "invalid_gateway_name", "name",
                            "invalid gateway name \"%.64s\"", name ? name : "");
    if ((c = es_rm_connect(err)) == NULL)
        return err->status;
    snprintf(stream, sizeof stream, "gateway:%s", name);
    /* exclusive start: "(" + the last id read */
    snprintf(start, sizeof start, "%s%s", strcmp(after, "0") == 0 ? "" : "(", after);
    snprintf(count, sizeof count, "%d", max < 1 ? 1 : max);
    snprintf(ttl, sizeof ttl, "%ld", seen_ttl_s < 1 ? 1 : seen_ttl_s);
    r = redisCommand(c, "XRANGE %s %s + COUNT %s", stream, start, count);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        st = es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                          "could not read %s: %s", stream,
                          r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
        goto done;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i], *id, *body, *fields;
        redisReply *seen;
        char key[SG_GATEWAY_NAME_MAX + SG_GATEWAY_MSG_ID_MAX + 16];

        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        fields = e->element[1];
        id = entry_field(fields, "id");
        body = entry_field(fields, "body");
        if (id && id->type == REDIS_REPLY_STRING) {
            snprintf(key, sizeof key, "%s:seen:%s", stream, id->str);
            seen = redisCommand(c, "SET %s 1 NX EX %s", key, ttl);
            if (seen == NULL || seen->type == REDIS_REPLY_ERROR) {
                st = es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                                  "could not mark %s: %s", key,
                                  seen ? seen->str : c->errstr);
                freeReplyObject(seen);
                goto done;      /* after stays at the last message handled */
            }
            if (seen->type == REDIS_REPLY_STATUS) {         /* OK: first time */
                (*handled)++;
                if (handle)
                    handle(ctx, id->str,
                           body && body->type == REDIS_REPLY_STRING ? body->str : "");
            } else {                                        /* nil: a repeat */
                (*dropped)++;
            }
            freeReplyObject(seen);
        }
        snprintf(after, size, "%s", e->element[0]->str);
    }
done:
    freeReplyObject(r);
    redisFree(c);
    return st;
}

/* Appends JSON text s (already checked) without the white space outside
 * its strings, which is all the line breaks it can hold. */
static void
append_compact(es_buf *b, const char *s)
{
    const char *p, *run = s;
    bool in_string = false;

    for (p = s; *p; p++) {
        if (in_string) {
            if (*p == '\\' && p[1] != '\0')
                p++;
            else if (*p == '"')
                in_string = false;
        } else if (*p == '"') {
            in_string = true;
        } else if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
            es_buf_append(b, run, (size_t)(p - run));
            run = p + 1;
        }
    }
    es_buf_append(b, run, (size_t)(p - run));
}

static es_status
deliver_file(sg_gateway *g, const char *id, const char *body, es_error *err)
{
    es_buf line = ES_BUF_INIT;
    char eb[128];
    const char *why = NULL;
    size_t off = 0;
    int e = 0;
    es_status st = ES_OK;

    es_buf_puts(&line, "{\"gateway\":");
    es_buf_json_string(&line, g->name);
    es_buf_puts(&line, ",\"id\":");
    es_buf_json_string(&line, id);
    es_buf_puts(&line, ",\"body\":");
    append_compact(&line, body);
    es_buf_puts(&line, "}\n");
    if (es_buf_failed(&line)) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        goto done;
    }

    pthread_mutex_lock(&g->file_mu);
    if (g->fd < 0 &&
        (g->fd = open(g->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0) {
        e = errno;
        why = "could not open";
    }
    while (why == NULL && off < line.len) {
        ssize_t n = write(g->fd, line.data + off, line.len - off);

        if (n >= 0) {
            off += (size_t)n;
        } else if (errno != EINTR) {
            e = errno;
            why = "could not write to";
        }
    }
    if (why != NULL) {
        char detail[256];

        snprintf(detail, sizeof detail, "%s file \"%.96s%s\": %s", why, g->path,
                 strlen(g->path) > 96 ? "..." : "", strerror_r(e, eb, sizeof eb));
        st = failed(g, id, detail, err);
        /* Reopened by the next send: the file may have been moved or its
         * disk filled.  A line cut short is ended if the disk still takes a
         * byte, so that the next message starts a line of its own. */
        if (g->fd >= 0) {
            if (off > 0 && write(g->fd, "\n", 1) < 0) {
                /* the failure is recorded already */
            }
            close(g->fd);
            g->fd = -1;
        }
    }
    pthread_mutex_unlock(&g->file_mu);

done:
    es_buf_free(&line);
    return st;
}

static es_status
deliver(sg_gateway *g, const char *id, size_t idlen, const char *body, es_error *err)
{
    switch (g->kind) {
    case T_REDIS:
        return deliver_redis(g, id, idlen, body, err);
    case T_FILE:
        return deliver_file(g, id, body, err);
    case T_NULL:
        break;
    }
    return ES_OK;
}

es_status
sg_gateway_send(sg_gateway *g, const char *msg_id, const char *body, es_error *err)
{
    size_t idlen = msg_id ? strnlen(msg_id, SG_GATEWAY_MSG_ID_MAX + 1) : 0;
    size_t at = 0;
    const char *reason = "no body";
    bool probe = false, inject;
    unsigned latency;
    double rate;
    es_status st;

    if (idlen == 0 || idlen > SG_GATEWAY_MSG_ID_MAX || !es_text_printable(msg_id, idlen))
        return es_error_set(err, ES_EINVALID, "invalid_msg_id", "msg_id",
                            "invalid message id for gateway \"%s\": expected 1 to %d bytes "
                            "of printable UTF-8",
                            g->name, SG_GATEWAY_MSG_ID_MAX);
    if (body == NULL || es_json_check(body, strlen(body), &at, &reason) == ES_JSON_INVALID)
        return es_error_set(err, ES_EINVALID, "invalid_body", "body",
                            "invalid body of message \"%.64s\" for gateway \"%s\": %s at byte %zu",
                            msg_id, g->name, reason, at);

    pthread_mutex_lock(&g->mu);
    st = admit(g, &probe, err);
    rate = g->failure_rate;
    inject = st == ES_OK && rate > 0 && draw(g) < rate;
    latency = g->latency_ms;
    pthread_mutex_unlock(&g->mu);
    if (st != ES_OK)
        return st;

    if (latency > 0)
        pause_ms(latency);
    if (inject)
        st = failed(g, msg_id, "injected failure", err);
    else
        st = deliver(g, msg_id, idlen, body, err);

    pthread_mutex_lock(&g->mu);
    settle(g, probe, st == ES_OK);
    pthread_mutex_unlock(&g->mu);
    return st;
}

/* ---- metrics ------------------------------------------------------------- */

void
sg_gateway_metrics_all(sg_gateway *const *gs, size_t n, es_buf *out)
{
    es_buf_puts(out, "# HELP es_saga_gateway_calls_total calls of external gateways by "
                     "result\n# TYPE es_saga_gateway_calls_total counter\n");
    for (size_t i = 0; i < n; i++) {
        unsigned long long ok, failed_, rejected;

        pthread_mutex_lock(&gs[i]->mu);
        ok = gs[i]->calls_ok;
        failed_ = gs[i]->calls_failed;
        rejected = gs[i]->calls_rejected;
        pthread_mutex_unlock(&gs[i]->mu);
        es_buf_printf(out,
                      "es_saga_gateway_calls_total{gateway=\"%s\",result=\"ok\"} %llu\n"
                      "es_saga_gateway_calls_total{gateway=\"%s\",result=\"failed\"} %llu\n"
                      "es_saga_gateway_calls_total{gateway=\"%s\",result=\"rejected\"} %llu\n",
                      gs[i]->name, ok, gs[i]->name, failed_, gs[i]->name, rejected);
    }
    es_buf_puts(out, "# HELP es_saga_gateway_breaker_state circuit breaker of a gateway "
                     "(0 closed, 1 open, 2 half-open)\n"
                     "# TYPE es_saga_gateway_breaker_state gauge\n");
    for (size_t i = 0; i < n; i++)
        es_buf_printf(out, "es_saga_gateway_breaker_state{gateway=\"%s\"} %d\n", gs[i]->name,
                      (int)sg_gateway_breaker(gs[i]));
    es_buf_puts(out, "# HELP es_saga_gateway_breaker_opened_total times the circuit breaker "
                     "of a gateway opened\n"
                     "# TYPE es_saga_gateway_breaker_opened_total counter\n");
    for (size_t i = 0; i < n; i++) {
        unsigned long long opened;

        pthread_mutex_lock(&gs[i]->mu);
        opened = gs[i]->opened_total;
        pthread_mutex_unlock(&gs[i]->mu);
        es_buf_printf(out, "es_saga_gateway_breaker_opened_total{gateway=\"%s\"} %llu\n",
                      gs[i]->name, opened);
    }
}

