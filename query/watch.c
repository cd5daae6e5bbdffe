/*
 * The applied-position watch of es-query (see watch.h).  One subscriber
 * thread, one mutex; a condition variable per projection, so an
 * announcement wakes only the waiters of its read model.  The
 * subscriber's states are drawn above run(), which drives them.
 *
 * listen_on() reads announcements "<version> <seq> <position>" and raises
 * the projection's furthest position; every change of subscription
 * (up or down) bumps the epoch, so that waiters re-check at once.
 * The waker thread (wake()) serves the parked waits under the same mutex.
 */
#include "watch.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "projections.h"
#include "query.h"
#include "read.h"
#include "readmodel.h"

#define FALLBACK_DOWN_MS 50     /* re-check interval while not subscribed */
#define FALLBACK_UP_MS 500      /* ... and while subscribed (lost messages) */
#define IDLE_PING_MS 5000       /* silent that long: PING the server */
#define PING_TIMEOUT_MS 5000    /* no answer that long: reconnect */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

typedef struct proj_state {
    pthread_cond_t changed;
    es_position furthest;       /* furthest announced position, any version */
    bool known;
    uint64_t gen;               /* announcements so far */
} proj_state;

struct watch {
    pthread_t thread;
    bool thread_started;
    pthread_t waker;
    bool waker_started;
    pthread_mutex_t mu;
    pthread_cond_t stop_cond;
    pthread_cond_t park_cond;   /* an announcement, a park, a change, the stop */
    watch_parked *parked;       /* waiting, not being checked */
    size_t nparked, waits_max;  /* parked or being checked; the cap */
    bool stop;
    uint64_t epoch;             /* subscription changes so far */
    atomic_bool connected;
    proj_state *projs;          /* pj_projection_count of them */
};

static void
now_plus(struct timespec *t, long ms)
{
    clock_gettime(CLOCK_MONOTONIC, t);
    t->tv_sec += ms / 1000;
    t->tv_nsec += (ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

static long
ms_since(const struct timespec *t)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)(now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000L;
}

static int
ts_cmp(const struct timespec *a, const struct timespec *b)
{
    if (a->tv_sec != b->tv_sec)
        return a->tv_sec < b->tv_sec ? -1 : 1;
    return a->tv_nsec < b->tv_nsec ? -1 : a->tv_nsec > b->tv_nsec;
}

/* Sleeps ms unless the watch stops first; false when it stops. */
static bool
sleep_or_stop(watch *w, long ms)
{
    struct timespec until;
    bool stop;

    now_plus(&until, ms);
    pthread_mutex_lock(&w->mu);
    while (!w->stop && pthread_cond_timedwait(&w->stop_cond, &w->mu, &until) != ETIMEDOUT)
        ;
    stop = w->stop;
    pthread_mutex_unlock(&w->mu);
    return !stop;
}

static bool
stopping(watch *w)
{
    bool stop;

    pthread_mutex_lock(&w->mu);
    stop = w->stop;
    pthread_mutex_unlock(&w->mu);
    return stop;
}

/* The subscription went up or down: every waiter re-checks. */
static void
set_connected(watch *w, bool up)
{
    size_t i;

    pthread_mutex_lock(&w->mu);
    atomic_store(&w->connected, up);
    w->epoch++;
    for (i = 0; i < pj_projection_count; i++)
        pthread_cond_broadcast(&w->projs[i].changed);
    pthread_cond_broadcast(&w->park_cond);
    pthread_mutex_unlock(&w->mu);
}

/* Takes one Pub/Sub message; anything else (subscribe confirmations,
 * PING answers) only shows that the connection is alive. */
static void
announce(watch *w, const redisReply *r)
{
    es_rm_notice n;
    es_position p;
    size_t i;

    if (!es_rm_notice_parse(r, &n))
        return;
    for (i = 0; i < pj_projection_count; i++)
        if (strcmp(n.name, pj_projections[i].name) == 0)
            break;
    if (i == pj_projection_count || !es_position_parse(n.position, &p))
        return;
    pthread_mutex_lock(&w->mu);
    if (!w->projs[i].known || es_position_cmp(p, w->projs[i].furthest) > 0)
        w->projs[i].furthest = p;
    w->projs[i].known = true;
    w->projs[i].gen++;
    pthread_cond_broadcast(&w->projs[i].changed);
    pthread_cond_broadcast(&w->park_cond);
    pthread_mutex_unlock(&w->mu);
}

static bool
flush(redisContext *c)
{
    int done = 0;

    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK)
            return false;
    return true;
}

/* Subscribes c to every projection's notices; true once Redis confirmed
 * (the other confirmations arrive in listen_on()). */
static bool
subscribe(redisContext *c)
{
    const char *names[16];
    es_error err;
    size_t i;

    for (i = 0; i < pj_projection_count && i < 16; i++)
        names[i] = pj_projections[i].name;
    return es_rm_notice_subscribe(c, names, i, &err) == ES_OK;
}

/* Reads announcements until the connection fails or the watch stops. */
static void
listen_on(watch *w, redisContext *c)
{
    struct timespec last_rx, ping_at;
    bool ping_out = false;

    clock_gettime(CLOCK_MONOTONIC, &last_rx);
    while (!stopping(w)) {
        struct pollfd pfd = {c->fd, POLLIN, 0};
        void *r = NULL;
        int n;

        if (redisGetReplyFromReader(c, &r) != REDIS_OK)
            return;
        if (r != NULL) {
            announce(w, r);
            freeReplyObject(r);
            clock_gettime(CLOCK_MONOTONIC, &last_rx);
            ping_out = false;
            continue;
        }
        if (!ping_out && ms_since(&last_rx) >= IDLE_PING_MS) {
            /* a dead peer that sent no FIN shows up here */
            if (redisAppendCommand(c, "PING") != REDIS_OK || !flush(c))
                return;
            clock_gettime(CLOCK_MONOTONIC, &ping_at);
            ping_out = true;
        }
        if (ping_out && ms_since(&ping_at) >= PING_TIMEOUT_MS)
            return;
        n = poll(&pfd, 1, 250);     /* wakes up to see the stop flag */
        if (n < 0 && errno != EINTR)
            return;
        if (n > 0 && redisBufferRead(c) != REDIS_OK)
            return;
    }
}

/*
 * The subscriber thread:
 *
 *   connect --es_rm_connect()--> subscribe() --SUBSCRIBE ok--> listen_on()
 *      ^                                                        |
 *      |   backoff 0.1 s .. 2 s (sleep_or_stop())               | I/O error, no
 *      +--------------------------------------------------------+ answer to PING
 */
static void *
run(void *arg)
{
    watch *w = arg;
    long backoff = BACKOFF_MIN_MS;
    bool said_down = false;

    while (!stopping(w)) {
        es_error err;
        redisContext *c = es_rm_connect(&err);

        if (c != NULL && !subscribe(c)) {
            es_error_set(&err, ES_EUNAVAILABLE, NULL, NULL, "could not subscribe: %s",
                         c->err ? c->errstr : "unexpected answer");
            redisFree(c);
            c = NULL;
        }
        if (c == NULL) {
            if (!said_down)
                es_log(ES_LOG_WARNING, "read model announcements unavailable, retrying: %s",
                       err.message);
            said_down = true;
            if (!sleep_or_stop(w, backoff))
                break;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        if (said_down)
            es_log(ES_LOG_INFO, "read model announcements subscribed again");
        said_down = false;
        backoff = BACKOFF_MIN_MS;
        set_connected(w, true);
        listen_on(w, c);
        set_connected(w, false);
        if (!stopping(w)) {
            es_log(ES_LOG_WARNING, "read model announcements lost: %s",
                   c->err ? c->errstr : "no answer to PING");
            said_down = true;
        }
        redisFree(c);
    }
    return NULL;
}

static void *wake(void *arg);

es_status
watch_start(watch **out, size_t waits_max, es_error *err)
{
    pthread_condattr_t attr;
    watch *w;
    size_t i;

    *out = NULL;
    if ((w = calloc(1, sizeof *w)) == NULL ||
        (w->projs = calloc(pj_projection_count, sizeof *w->projs)) == NULL) {
        free(w);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    }
    pthread_mutex_init(&w->mu, NULL);
    /* Deadlines are monotonic: a clock step must not end or stretch a wait. */
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->stop_cond, &attr);
    pthread_cond_init(&w->park_cond, &attr);
    w->waits_max = waits_max;
    for (i = 0; i < pj_projection_count; i++)
        pthread_cond_init(&w->projs[i].changed, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
        watch_stop(w);
        return es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not start the watch thread");
    }
    w->thread_started = true;
    if (pthread_create(&w->waker, NULL, wake, w) != 0) {
        watch_stop(w);
        return es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not start the waker thread");
    }
    w->waker_started = true;
    *out = w;
    return ES_OK;
}

void
watch_cancel(watch *w)
{
    size_t i;

    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->stop_cond);
    pthread_cond_broadcast(&w->park_cond);
    for (i = 0; i < pj_projection_count; i++)
        pthread_cond_broadcast(&w->projs[i].changed);
    pthread_mutex_unlock(&w->mu);
}

void
watch_stop(watch *w)
{
    size_t i;

    if (w == NULL)
        return;
    watch_cancel(w);
    if (w->thread_started)
        pthread_join(w->thread, NULL);
    if (w->waker_started)
        pthread_join(w->waker, NULL);       /* it finished every parked wait */
    for (i = 0; i < pj_projection_count; i++)
        pthread_cond_destroy(&w->projs[i].changed);
    pthread_cond_destroy(&w->stop_cond);
    pthread_cond_destroy(&w->park_cond);
    pthread_mutex_destroy(&w->mu);
    free(w->projs);
    free(w);
}

watch_mark
watch_mark_take(watch *w, size_t proj)
{
    watch_mark m;

    pthread_mutex_lock(&w->mu);
    m.gen = w->projs[proj].gen;
    m.epoch = w->epoch;
    pthread_mutex_unlock(&w->mu);
    clock_gettime(CLOCK_MONOTONIC, &m.at);
    return m;
}

bool
watch_connected(watch *w)
{
    return atomic_load(&w->connected);
}

/* ---- parked waits ---------------------------------------------------------- */

static void
add_ms(struct timespec *t, long ms)
{
    t->tv_sec += ms / 1000;
    t->tv_nsec += (ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

/* When p is checked next: after the fallback interval since its mark. */
static void
schedule(watch *w, watch_parked *p)
{
    p->next_check = p->mark.at;
    add_ms(&p->next_check, atomic_load(&w->connected) ? FALLBACK_UP_MS : FALLBACK_DOWN_MS);
}

watch_park_result
watch_park(watch *w, watch_parked *p)
{
    watch_park_result r = WATCH_PARKED;

    schedule(w, p);
    pthread_mutex_lock(&w->mu);
    if (w->stop) {
        r = WATCH_STOPPING;
    } else if (w->nparked >= w->waits_max) {
        r = WATCH_FULL;
    } else {
        w->nparked++;
        p->next = w->parked;
        w->parked = p;
        pthread_cond_broadcast(&w->park_cond);
    }
    pthread_mutex_unlock(&w->mu);
    return r;
}

size_t
watch_parked_count(watch *w)
{
    size_t n;

    pthread_mutex_lock(&w->mu);
    n = w->nparked;
    pthread_mutex_unlock(&w->mu);
    return n;
}

size_t
watch_waits_max(watch *w)
{
    return w->waits_max;
}

/* Whether a projection announced p's token since p's mark; w->mu held. */
static bool
announced(const watch *w, const watch_parked *p)
{
    const proj_state *s = &w->projs[p->proj];

    return s->gen != p->mark.gen && s->known && es_position_cmp(s->furthest, p->token) >= 0;
}

/* Whether p must be checked now; w->mu held. */
static bool
due(const watch *w, const watch_parked *p, const struct timespec *now)
{
    return w->epoch != p->mark.epoch || ts_cmp(now, &p->next_check) >= 0 ||
           ts_cmp(now, &p->deadline) >= 0 || announced(w, p);
}

/*
 * Checks the waits of ready (taken off the parked list) with one
 * read_position per projection, and finishes those that reached their
 * token, passed their deadline, or cannot be checked; the others go back
 * with a new mark.  A wait taken for an announcement at or past its
 * token is finished without that read: its finish reads the view and the
 * checkpoint together anyway, and stays parked when the announcement was
 * not the active version's (a rebuild's), so the read would only have
 * added a round trip to Redis before every answer.  Runs without w->mu.
 */
static void
check(watch *w, watch_parked *ready, bool stop)
{
    bool *seen = calloc(pj_projection_count, sizeof *seen);
    bool *ok = calloc(pj_projection_count, sizeof *ok);
    watch_mark *marks = calloc(pj_projection_count, sizeof *marks);
    es_position *pos = calloc(pj_projection_count, sizeof *pos);
    watch_parked *p, *next, *back = NULL;
    size_t finished = 0;

    for (p = ready; p != NULL && !stop && seen && ok && marks && pos; p = p->next) {
        size_t i = p->proj;
        char text[ES_RM_POSITION_MAX];
        es_error err;

        if (seen[i] || p->announced)
            continue;
        seen[i] = true;
        marks[i] = watch_mark_take(w, i);
        ok[i] = read_position(pj_projections[i].name, text, NULL, &err) == ES_OK &&
                es_position_parse(text, &pos[i]);
    }
    for (p = ready; p != NULL; p = next) {
        struct timespec now;
        size_t i = p->proj;
        watch_mark mark;
        bool reached;

        next = p->next;
        p->next = NULL;
        clock_gettime(CLOCK_MONOTONIC, &now);
        /* the mark is taken before the read finish makes: an announcement
         * after that read wakes the wait again (taken after it, the
         * announcement was lost until the fallback tick) */
        mark = seen && marks && seen[i] ? marks[i] : watch_mark_take(w, i);
        /* out of memory above: every wait is answered by its own read */
        reached = !(seen && ok && marks && pos) || (p->announced && !seen[i]) || !ok[i] ||
                  es_position_cmp(pos[i], p->token) >= 0;
        if (stop || reached || ts_cmp(&now, &p->deadline) >= 0) {
            if (p->finish(p, stop)) {
                finished++;
                continue;
            }
        }
        p->mark = mark;
        schedule(w, p);
        p->next = back;
        back = p;
    }
    pthread_mutex_lock(&w->mu);
    w->nparked -= finished;
    for (p = back; p != NULL; p = next) {
        next = p->next;
        p->next = w->parked;
        w->parked = p;
    }
    pthread_mutex_unlock(&w->mu);
    free(seen);
    free(ok);
    free(marks);
    free(pos);
}

/*
 * The waker thread: takes the parked waits that are due (due()) off the
 * list and checks them (check()); sleeps until the next fallback tick or
 * deadline, or an announcement, a park, a change of subscription or the
 * stop.  Once stopping, it finishes every parked wait as stopping and
 * ends when none is left.
 */
static void *
wake(void *arg)
{
    watch *w = arg;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        watch_parked *ready = NULL, **pp, *p;
        struct timespec now, soonest;
        bool stop = w->stop;

        clock_gettime(CLOCK_MONOTONIC, &now);
        soonest = now;
        soonest.tv_sec += 60;
        for (pp = &w->parked; (p = *pp) != NULL;) {
            if (stop || due(w, p, &now)) {
                p->announced = !stop && announced(w, p);
                *pp = p->next;
                p->next = ready;
                ready = p;
                continue;
            }
            if (ts_cmp(&p->next_check, &soonest) < 0)
                soonest = p->next_check;
            if (ts_cmp(&p->deadline, &soonest) < 0)
                soonest = p->deadline;
            pp = &p->next;
        }
        if (ready != NULL) {
            pthread_mutex_unlock(&w->mu);
            check(w, ready, stop);
            pthread_mutex_lock(&w->mu);
            continue;
        }
        if (stop && w->nparked == 0)
            break;
        pthread_cond_timedwait(&w->park_cond, &w->mu, &soonest);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}
