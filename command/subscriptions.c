/*
 * The subscriptions hub of es-command: one thread reads the store's
 * gap-free feed (es_store_read_feed, the same read as GET /v1/feed) for
 * every open GET /v1/subscriptions/feed and writes each subscriber's
 * messages (events/sse.h) into its connection's stream (es_http_stream),
 * which libmicrohttpd sends from its event loop without a thread per
 * client.
 *
 * A subscription's turn in hub_round():
 *
 *   (no start given: pos = the feed head now, sent as an id-only message)
 *   pos before the feed head?  no ----------------> (heartbeat if due)
 *     | yes
 *   live and buffered >= ES_SSE_BUFFER_MAX?  yes --> for FULL_FOR_MS:
 *     | no                                        "event: cut" slow_consumer,
 *     |                                           end; until then wait
 *   catching up and buffered >= half of it?  yes --> wait for the client
 *     | no
 *   read a page after pos; send the events its filter passes, and an
 *   id-only message when the page ended on skipped events; pos = the
 *   page's last position; a page shorter than the limit: caught up (live
 *   from then on, however far behind it falls again)
 *
 * So a client catching up is paced by its own reading and never cut
 * (a page may be larger than the cap: one full page waits for it), while
 * a live client that stops reading collects new events until its buffer
 * has held the cap for FULL_FOR_MS and is then cut; it resumes from its
 * Last-Event-ID.  The hub wakes on every commit of this daemon
 * (subs_wake from the committer), when a client has drained its buffer,
 * and every ES_SSE_POLL_MS for commits made elsewhere.
 */
#include "subscriptions.h"

#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "env.h"
#include "log.h"
#include "sse.h"
#include "store.h"

/* Events read for one subscription at a time. */
#define PAGE 256
/*
 * After a commit wakes the hub, it looks again every EAGER_MS for
 * EAGER_FOR_MS: a commit becomes visible in the gap-free feed only once
 * every transaction that began before it has ended, which may be a
 * moment later and wakes nobody (measured: without this the delay was
 * up to the poll interval, 15 ms on average at ES_SSE_POLL_MS=100).
 */
#define EAGER_MS 5
#define EAGER_FOR_MS 100
/*
 * A live subscriber is cut once its buffer has been full this long: not
 * at the first look, since the last page it was sent while catching up
 * may alone pass the cap, and the event loop that drains the buffer into
 * the socket may not have run yet on a loaded machine.
 */
#define FULL_FOR_MS 1000

typedef struct sub {
    es_http_stream *hs;
    es_sse_filter f;
    es_position pos;            /* events up to here are sent or skipped */
    es_position last_id;        /* the client's Last-Event-ID now */
    bool has_id;
    bool live;                  /* a read reached the feed's end once */
    bool behind;                /* its last page was full: more to read */
    bool at_tail;               /* starts at the feed head the hub reads next */
    long long last_write_ms;
    long long full_since;       /* live with its buffer full since (0: not) */
    struct sub *next;
} sub;

enum { CUT_SLOW, CUT_STOP, NCUTS };
static const char *const cut_reasons[NCUTS] = {"slow_consumer", "shutting_down"};

struct subs {
    char conninfo[512];
    size_t max, buffer_max;
    long heartbeat_ms, poll_ms;

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;         /* incoming, count, stopping, closed */
    pthread_cond_t cond;
    sub *incoming;              /* opened, not yet taken by the hub */
    size_t count;               /* open subscriptions (incoming ones too) */
    bool stopping;
    bool closed;                /* the hub is gone: subs_serve ends its own */
    atomic_bool kick;

    /* the hub thread's own */
    sub *subs;
    es_store *store;
    bool down;                  /* the store failed; said once */
    long long eager_until;      /* look every EAGER_MS until then */
    es_buf out;

    atomic_ullong opened, refused, events, cuts[NCUTS];
};

static long long
now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void
subs_wake(void *arg)
{
    subs *h = arg;

    /* no lock (this runs on committer and event-loop threads, the latter
     * under a stream's lock): a wake lost between the hub's check and its
     * wait costs at most ES_SSE_POLL_MS */
    atomic_store(&h->kick, true);
    pthread_cond_signal(&h->cond);
}

/* Writes h->out to s's stream; false when the client is gone. */
static bool
flush(subs *h, sub *s, long long now)
{
    es_status st = ES_OK;

    if (h->out.len > 0 || es_buf_failed(&h->out)) {
        st = es_buf_failed(&h->out) ? ES_ENOMEM
                                    : es_http_stream_write(s->hs, h->out.data, h->out.len, NULL);
        s->last_write_ms = now;
    }
    es_buf_reset(&h->out);
    return st == ES_OK;
}

/* Ends s with "event: cut" and why, written through out. */
static void
cut(subs *h, es_buf *out, sub *s, int why)
{
    es_buf_reset(out);
    es_sse_cut(out, cut_reasons[why], s->has_id ? &s->last_id : NULL);
    if (!es_buf_failed(out))
        es_http_stream_write(s->hs, out->data, out->len, NULL);
    es_buf_reset(out);          /* clears failed too */
    atomic_fetch_add(&h->cuts[why], 1);
}

/*
 * Sends s the next page of the feed.  ES_OK with *dead when the client
 * is gone; a store error otherwise (err says which).
 */
static es_status
send_page(subs *h, sub *s, long long now, bool *dead, es_error *err)
{
    es_page *p = NULL;
    unsigned long long n = 0;
    es_status st;

    *dead = false;
    if ((st = es_store_read_feed(h->store, s->pos, PAGE, &p, err)) != ES_OK)
        return st;
    es_buf_reset(&h->out);
    for (size_t i = 0; i < p->count; i++) {
        const es_event *e = &p->events[i];

        if (es_sse_filter_match(&s->f, e->stream_id, e->type)) {
            es_sse_event(&h->out, e);
            s->last_id = e->position;
            s->has_id = true;
            n++;
        }
        s->pos = e->position;
    }
    /* a run of skipped events moves the client's Last-Event-ID too, so
     * that a resume does not read them again */
    if (p->count > 0 && (!s->has_id || es_position_cmp(s->last_id, s->pos) != 0)) {
        es_sse_position(&h->out, s->pos);
        s->last_id = s->pos;
        s->has_id = true;
    }
    s->behind = p->count == PAGE || p->truncated;
    if (!s->behind)
        s->live = true;
    es_page_destroy(p);
    *dead = !flush(h, s, now);
    atomic_fetch_add(&h->events, n);
    return ES_OK;
}

/*
 * One turn for every subscription (see the diagram above).  Returns true
 * when one has more to read at once.
 */
static bool
hub_round(subs *h)
{
    es_position head = {0, 0};
    es_error err;
    long long now = now_ms();
    bool more = false, store_ok = true;
    sub **link, *s;

    if (h->subs == NULL)
        return false;
    if (es_store_feed_head(h->store, &head, &err) != ES_OK) {
        store_ok = false;
        if (!h->down)
            es_log(ES_LOG_WARNING, "subscriptions: could not read the feed: %s", err.message);
        h->down = true;
    } else if (h->down) {
        es_log(ES_LOG_INFO, "subscriptions: reading the feed again");
        h->down = false;
    }
    for (link = &h->subs; (s = *link) != NULL;) {
        bool dead = !es_http_stream_alive(s->hs);

        if (!dead && store_ok && s->at_tail) {
            /* the tail as of now, sent as an id at once: a client that
             * reconnects with it misses nothing committed meanwhile */
            s->at_tail = false;
            s->pos = s->last_id = head;
            s->has_id = s->live = true;
            es_sse_position(&h->out, head);
            dead = !flush(h, s, now);
        }

        if (!dead && store_ok && es_position_cmp(s->pos, head) < 0) {
            size_t buffered = es_http_stream_buffered(s->hs);

            if (buffered < h->buffer_max || !s->live)
                s->full_since = 0;
            if (buffered >= h->buffer_max && s->live) {
                /* the clock now, not the round's start: a long round
                 * must not shorten the grace */
                long long t = now_ms();

                if (s->full_since == 0) {
                    s->full_since = t;
                } else if (t - s->full_since >= FULL_FOR_MS) {
                    cut(h, &h->out, s, CUT_SLOW);
                    dead = true;
                }
            } else if (s->live ? buffered < h->buffer_max : buffered < h->buffer_max / 2) {
                if (send_page(h, s, now, &dead, &err) != ES_OK) {
                    store_ok = false;
                    if (!h->down)
                        es_log(ES_LOG_WARNING, "subscriptions: could not read the feed: %s",
                               err.message);
                    h->down = true;
                } else if (s->behind) {
                    more = true;
                }
            }
        }
        if (!dead && now - s->last_write_ms >= h->heartbeat_ms) {
            es_sse_heartbeat(&h->out);
            dead = !flush(h, s, now);
        }
        if (dead) {
            *link = s->next;
            es_http_stream_end(s->hs);
            free(s);
            pthread_mutex_lock(&h->mu);
            h->count--;
            pthread_mutex_unlock(&h->mu);
        } else {
            link = &s->next;
        }
    }
    return more;
}

/* How long the hub may sleep: until its poll, the first heartbeat due or
 * the first full subscriber's cut. */
static long long
hub_deadline(const subs *h)
{
    long long until = now_ms() + h->poll_ms;

    for (const sub *s = h->subs; s != NULL; s = s->next) {
        if (s->last_write_ms + h->heartbeat_ms < until)
            until = s->last_write_ms + h->heartbeat_ms;
        if (s->full_since != 0 && s->full_since + FULL_FOR_MS < until)
            until = s->full_since + FULL_FOR_MS;
    }
    return until;
}

static void *
hub_main(void *arg)
{
    subs *h = arg;

    for (;;) {
        sub *in, *last;
        long long until;

        pthread_mutex_lock(&h->mu);
        if (h->stopping) {
            pthread_mutex_unlock(&h->mu);
            break;
        }
        in = h->incoming;
        h->incoming = NULL;
        pthread_mutex_unlock(&h->mu);
        /* incoming is newest first; they join the list ahead of the others */
        for (last = in; last != NULL && last->next != NULL; last = last->next)
            ;
        if (last != NULL) {
            last->next = h->subs;
            h->subs = in;
        }
        if (hub_round(h))
            continue;
        until = hub_deadline(h);
        if (now_ms() < h->eager_until && until > now_ms() + EAGER_MS)
            until = now_ms() + EAGER_MS;
        pthread_mutex_lock(&h->mu);
        for (;;) {
            struct timespec ts;
            long long now = now_ms();

            if (atomic_exchange(&h->kick, false)) {
                h->eager_until = now + EAGER_FOR_MS;
                break;
            }
            if (h->stopping || h->incoming != NULL || now >= until)
                break;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += (until - now) / 1000;
            ts.tv_nsec += ((until - now) % 1000) * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&h->cond, &h->mu, &ts);
        }
        pthread_mutex_unlock(&h->mu);
    }
    return NULL;
}

es_status
subs_start(subs **out, const char *conninfo, es_error *err)
{
    subs *h;
    pthread_condattr_t attr;
    es_status st;
    size_t budget;

    *out = NULL;
    if ((h = calloc(1, sizeof *h)) == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate the subscriptions");
    snprintf(h->conninfo, sizeof h->conninfo, "%s", conninfo);
    h->max = (size_t)es_env_long("es-command", "ES_SSE_MAX", 64, 0, 100000);
    h->buffer_max = (size_t)es_env_long("es-command", "ES_SSE_BUFFER_MAX", 1024 * 1024, 1024,
                                        1024L * 1024 * 1024);
    h->heartbeat_ms = es_env_long("es-command", "ES_SSE_HEARTBEAT_MS", 15000, 10, 3600000);
    h->poll_ms = es_env_long("es-command", "ES_SSE_POLL_MS", 100, 1, 60000);
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cond, &attr);
    pthread_condattr_destroy(&attr);
    if ((st = es_store_create(&h->store, h->conninfo, err)) != ES_OK) {
        subs_stop(h);
        subs_free(h);
        return st;
    }
    /* a page is at most the read budget, or the buffer's cap when the
     * budget is off (0), so that no page is 256 of the largest events */
    if ((budget = es_store_read_budget_configured()) == 0)
        budget = h->buffer_max;
    es_store_set_read_budget(h->store, budget);
    if (pthread_create(&h->thread, NULL, hub_main, h) != 0) {
        subs_stop(h);
        subs_free(h);
        return es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not start the subscriptions hub");
    }
    h->started = true;
    *out = h;
    return ES_OK;
}

void
subs_stop(subs *h)
{
    sub *s, *next, *in;

    if (h == NULL)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
    if (h->started)
        pthread_join(h->thread, NULL);
    h->started = false;
    /* the hub is gone: its list and what came in meanwhile are ours; a
     * subscription opened from now on is ended by subs_serve itself */
    pthread_mutex_lock(&h->mu);
    h->closed = true;
    in = h->incoming;
    h->incoming = NULL;
    pthread_mutex_unlock(&h->mu);
    for (int pass = 0; pass < 2; pass++) {
        for (s = pass == 0 ? h->subs : in; s != NULL; s = next) {
            next = s->next;
            if (es_http_stream_alive(s->hs))
                cut(h, &h->out, s, CUT_STOP);
            es_http_stream_end(s->hs);
            free(s);
        }
    }
    h->subs = NULL;
    es_store_close(h->store);
    h->store = NULL;
    es_buf_free(&h->out);
}

void
subs_free(subs *h)
{
    if (h == NULL)
        return;
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void
subs_serve(subs *h, const es_http_req *req, es_http_res *res)
{
    sub *s;
    es_error err;
    bool stopping, full, closed;

    if ((s = calloc(1, sizeof *s)) == NULL) {
        es_http_res_error(res, 500, "out_of_memory", NULL, NULL, "out of memory");
        return;
    }
    if (es_sse_filter_parse(&s->f, es_http_query(req, "after"),
                            es_http_header(req, "Last-Event-ID"), es_http_query(req, "category"),
                            es_http_query(req, "type"), &err) != ES_OK) {
        free(s);
        es_http_res_from_error(res, &err);
        return;
    }
    s->pos = s->f.after;
    s->at_tail = s->f.from_tail;
    /* a cut before anything is sent names where the client started */
    s->last_id = s->f.after;
    s->has_id = !s->f.from_tail;
    pthread_mutex_lock(&h->mu);
    stopping = h->stopping;
    full = h->count >= h->max;
    if (!stopping && !full)
        h->count++;
    pthread_mutex_unlock(&h->mu);
    if (stopping || full) {
        free(s);
        if (stopping) {
            es_http_res_error(res, 503, "shutting_down", NULL, NULL,
                              "the server is shutting down; resume on another instance or later");
        } else {
            atomic_fetch_add(&h->refused, 1);
            es_http_res_error(res, 503, "too_many_subscriptions", NULL,
                              json_pack("{s:I}", "max", (json_int_t)h->max),
                              "this server holds %zu subscriptions already (ES_SSE_MAX); "
                              "retry later or on another instance", h->max);
        }
        return;
    }
    if (es_http_stream_open(req, subs_wake, h, &s->hs, &err) != ES_OK) {
        free(s);
        pthread_mutex_lock(&h->mu);
        h->count--;
        pthread_mutex_unlock(&h->mu);
        es_http_res_from_error(res, &err);
        return;
    }
    /* a first line at once: the client sees the answer's head now, not at
     * the first event */
    es_http_stream_write(s->hs, ": subscribed\n\n", 14, NULL);
    s->last_write_ms = now_ms();
    atomic_fetch_add(&h->opened, 1);
    pthread_mutex_lock(&h->mu);
    if ((closed = h->closed)) {
        h->count--;
    } else {
        s->next = h->incoming;
        h->incoming = s;
        pthread_cond_signal(&h->cond);
    }
    pthread_mutex_unlock(&h->mu);
    if (closed) {
        /* subs_stop ran since the check above: end it here, as it would */
        es_buf b = ES_BUF_INIT;

        cut(h, &b, s, CUT_STOP);
        es_buf_free(&b);
        es_http_stream_end(s->hs);
        free(s);
    }
    res->status = 200;
    res->content_type = "text/event-stream";
    es_http_res_header(res, "Cache-Control", "no-cache");
    es_http_res_header(res, "X-Accel-Buffering", "no");
}

void
subs_metrics(subs *h, const char *prefix, es_buf *out)
{
    size_t n;

    pthread_mutex_lock(&h->mu);
    n = h->count;
    pthread_mutex_unlock(&h->mu);
    es_buf_printf(out, "# HELP %s_sse_subscriptions open GET /v1/subscriptions/feed streams\n"
                       "# TYPE %s_sse_subscriptions gauge\n%s_sse_subscriptions %zu\n",
                  prefix, prefix, prefix, n);
    es_buf_printf(out, "# HELP %s_sse_opened_total subscriptions opened\n"
                       "# TYPE %s_sse_opened_total counter\n%s_sse_opened_total %llu\n",
                  prefix, prefix, prefix, (unsigned long long)atomic_load(&h->opened));
    es_buf_printf(out, "# HELP %s_sse_refused_total subscriptions refused 503 "
                       "too_many_subscriptions\n"
                       "# TYPE %s_sse_refused_total counter\n%s_sse_refused_total %llu\n",
                  prefix, prefix, prefix, (unsigned long long)atomic_load(&h->refused));
    es_buf_printf(out, "# HELP %s_sse_events_total events sent to subscribers\n"
                       "# TYPE %s_sse_events_total counter\n%s_sse_events_total %llu\n",
                  prefix, prefix, prefix, (unsigned long long)atomic_load(&h->events));
    es_buf_printf(out, "# HELP %s_sse_cuts_total subscriptions the server ended, by reason\n"
                       "# TYPE %s_sse_cuts_total counter\n", prefix, prefix);
    for (int i = 0; i < NCUTS; i++)
        es_buf_printf(out, "%s_sse_cuts_total{reason=\"%s\"} %llu\n", prefix, cut_reasons[i],
                      (unsigned long long)atomic_load(&h->cuts[i]));
}
