/*
 * es_committer: a queue of waiting appends and the threads that drain it.
 * A waiting caller owns its queue item on its stack; the committer thread
 * fills in the result, sets done and signals that item's condition, so
 * only the callers whose appends finished wake up.  An item submitted
 * without waiting is the committer's to free, and its callback runs
 * instead of the signal.  Items are handed out in arrival order, so a
 * caller's appends are committed in the order it made them.
 */
#include "committer.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "store_int.h"

typedef struct item {
    const es_append_req *req;
    es_append_result *res;
    bool done;
    pthread_cond_t cond;        /* signalled once done is set */
    es_committer_done cb;       /* submitted: called instead, then freed */
    void *cb_ctx;
    struct item *next;
} item;

/* One batch of a worker: the items it took and their copies.  A worker
 * has two, the one in flight and the one whose callbacks are running. */
typedef struct lane {
    es__append_batch *batch;
    item **taken;
    es_append_req *reqs;
    es_append_result *res;
    size_t n;                   /* 0: idle */
    size_t events;              /* of the n appends */
    size_t nsubmitted;          /* once woken: taken[0..nsubmitted) have callbacks */
} lane;

typedef struct worker {
    es_committer *c;
    es_store *store;
    pthread_t thread;
    bool started;
    bool first;                 /* takes work without waiting for a spill */
    lane lanes[2];
    lane *cur, *next;           /* in flight, and idle, while one is in flight */
} worker;

/*
 * The first worker takes whatever is queued.  The others take work only
 * once SPILL_EVENTS events are waiting: small appends are bound by the
 * WAL flush and the fixed work of each batch, which a second connection
 * would only double by splitting the batches, while large ones are bound
 * by the server's CPU, which a second connection puts to work on the
 * other cores.
 */
#define SPILL_EVENTS 16

struct es_committer {
    pthread_mutex_t mu;
    pthread_cond_t work;        /* queue not empty, or stopping */
    pthread_cond_t spill;       /* SPILL_EVENTS queued, or stopping */
    item *head, *tail;
    size_t queued;              /* events of the queued appends */
    size_t nqueued;             /* the queued appends */
    size_t queue_max;           /* refused past it; 0: no bound */
    bool stopping;
    size_t max_batch;
    int nworkers;
    worker *workers;
    void (*on_commit)(void *);
    void *on_commit_ctx;
};

/* Whether w should take queued work now; called with c->mu held. */
static bool
has_work(const es_committer *c, const worker *w)
{
    return c->head != NULL && (w->first || c->stopping || c->queued >= SPILL_EVENTS);
}

/* Moves up to max_batch queued items into l; called with c->mu held. */
static void
take(es_committer *c, lane *l)
{
    for (l->n = l->events = 0; l->n < c->max_batch && c->head != NULL; l->n++) {
        l->events += c->head->req->count;
        l->taken[l->n] = c->head;
        l->reqs[l->n] = *c->head->req;
        c->queued -= c->head->req->count;
        c->nqueued--;
        c->head = c->head->next;
    }
    if (c->head == NULL)
        c->tail = NULL;
}

/* Hands l's results to its callers and wakes those that wait; the
 * submitted ones are answered by answer_submitted. */
static void
wake(es_committer *c, lane *l)
{
    void (*on_commit)(void *);
    void *ctx;
    bool wrote = false;
    size_t i;

    for (i = 0; i < l->n; i++) {
        *l->taken[i]->res = l->res[i];
        wrote |= l->res[i].status == ES_OK && !l->res[i].duplicate;
    }
    pthread_mutex_lock(&c->mu);
    on_commit = c->on_commit;
    ctx = c->on_commit_ctx;
    pthread_mutex_unlock(&c->mu);
    if (wrote && on_commit != NULL)
        on_commit(ctx);
    /* A woken caller's item is gone as soon as the mutex is released,
     * so the submitted items are set apart before that. */
    l->nsubmitted = 0;
    pthread_mutex_lock(&c->mu);
    for (i = 0; i < l->n; i++) {
        item *it = l->taken[i];

        if (it->cb != NULL) {
            l->taken[l->nsubmitted++] = it;
        } else {
            it->done = true;
            pthread_cond_signal(&it->cond);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

/* Runs the callbacks of l's submitted appends; l becomes idle. */
static void
answer_submitted(lane *l)
{
    for (size_t i = 0; i < l->nsubmitted; i++) {
        l->taken[i]->cb(l->taken[i]->cb_ctx);
        free(l->taken[i]);
    }
    l->n = l->nsubmitted = 0;
}

static void
deliver(es_committer *c, lane *l)
{
    wake(c, l);
    answer_submitted(l);
}

/* Takes what is queued into next, an idle lane, and sends it behind the
 * batch in flight; answers it at once if it could not be sent.  running:
 * the batch in flight when it has run but not yet committed, else NULL. */
static void
send_next(worker *w, lane *next, const lane *running)
{
    es_committer *c = w->c;
    bool now;

    pthread_mutex_lock(&c->mu);
    now = has_work(c, w);
    /* Early, fewer than half the events of the batch that ran wait for
     * its commit, and more come meanwhile: a small batch costs about as
     * much as a large one, and sent early, the next would be small again
     * (the callers of the large one come back while it runs).  And a
     * spill is left to the other connections, which can run it now
     * instead of after this one's flush. */
    if (running != NULL)
        now = now && 2 * c->queued >= running->events &&
              !(c->nworkers > 1 && c->queued >= SPILL_EVENTS);
    if (now)
        take(c, next);
    pthread_mutex_unlock(&c->mu);
    /* These waited while a batch was in flight: more will come while
     * they run, so their results are asked for early. */
    if (next->n > 0 &&
        es__append_send(w->store, next->batch, next->reqs, next->n, next->res, true) != ES_OK) {
        es__append_finish(w->store, next->batch, next->reqs, next->n, next->res);
        deliver(c, next);
    }
}

/* The batch in flight has run and its commit is being flushed: what
 * came while it ran goes out behind it now. */
static void
ran(void *arg)
{
    worker *w = arg;

    if (w->next->n == 0)
        send_next(w, w->next, w->cur);
}

/*
 * A worker keeps the server busy with one connection.  The server sends a
 * batch's results as soon as it has run the statements, before the
 * commit's WAL flush; what has come meanwhile goes out then, behind it,
 * and the server starts on it as soon as the flush is done, without
 * waiting for the client.  A batch so formed holds everything that
 * arrived while the one before ran.  Sending the next batch as soon as
 * the previous one was sent instead split each wave of callers into a
 * large and a tiny batch, and the work of a batch that does not grow
 * with it (commit, executor start) cost more than it saved.
 */
static void *
run(void *arg)
{
    worker *w = arg;
    es_committer *c = w->c;
    lane *cur = &w->lanes[0], *next = &w->lanes[1], *t;

    for (;;) {
        if (cur->n == 0) {
            bool early;

            pthread_mutex_lock(&c->mu);
            while (!has_work(c, w) && !c->stopping)
                pthread_cond_wait(w->first ? &c->work : &c->spill, &c->mu);
            if (c->head == NULL) {
                pthread_mutex_unlock(&c->mu);
                break;
            }
            take(c, cur);
            /* A lone caller gets its results with the commit: nothing
             * would go out behind its append. */
            early = cur->n > 1 || c->head != NULL;
            pthread_mutex_unlock(&c->mu);
            if (es__append_send(w->store, cur->batch, cur->reqs, cur->n, cur->res, early) !=
                ES_OK) {
                es__append_finish(w->store, cur->batch, cur->reqs, cur->n, cur->res);
                deliver(c, cur);
                continue;
            }
        }
        w->cur = cur;
        w->next = next;
        if (es__append_recv(w->store, cur->batch, ran, w) && next->n > 0) {
            /* A second pass runs alone on the connection: read the
             * batch behind first, then finish both. */
            es__append_recv(w->store, next->batch, NULL, NULL);
            es__append_finish(w->store, cur->batch, cur->reqs, cur->n, cur->res);
            deliver(c, cur);
            es__append_finish(w->store, next->batch, next->reqs, next->n, next->res);
            deliver(c, next);
            continue;
        }
        es__append_finish(w->store, cur->batch, cur->reqs, cur->n, cur->res);
        /* Waiting callers first: they make a library user's next appends. */
        wake(c, cur);
        if (next->n == 0)
            send_next(w, next, NULL);
        answer_submitted(cur);
        t = cur;
        cur = next;
        next = t;
    }
    return NULL;
}

es_status
es_committer_create(es_committer **out, const char *conninfo, int nconns,
                    size_t max_batch, es_error *err)
{
    es_committer *c;
    es_status st = ES_OK;
    int i;

    *out = NULL;
    es_error_clear(err);
    if (nconns < 1 || nconns > 64 || max_batch < 1 || max_batch > 256)
        return es_error_set(err, ES_EINVALID, "committer_invalid", NULL,
                            "committer needs 1..64 connections and a batch of 1..256, "
                            "not %d and %zu", nconns, max_batch);
    if ((c = calloc(1, sizeof *c)) == NULL ||
        (c->workers = calloc((size_t)nconns, sizeof *c->workers)) == NULL) {
        free(c);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a committer");
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->work, NULL);
    pthread_cond_init(&c->spill, NULL);
    c->max_batch = max_batch;
    c->queue_max = ES_COMMIT_QUEUE_DEFAULT;
    c->nworkers = nconns;
    for (i = 0; i < nconns; i++) {
        c->workers[i].c = c;
        c->workers[i].first = i == 0;
        if ((st = es_store_create(&c->workers[i].store, conninfo, err)) != ES_OK)
            goto fail;
        for (int k = 0; k < 2; k++) {
            lane *l = &c->workers[i].lanes[k];

            l->batch = es__append_batch_new();
            l->taken = malloc(max_batch * sizeof *l->taken);
            l->reqs = malloc(max_batch * sizeof *l->reqs);
            l->res = malloc(max_batch * sizeof *l->res);
            if (l->batch == NULL || l->taken == NULL || l->reqs == NULL || l->res == NULL) {
                st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a committer");
                goto fail;
            }
        }
    }
    for (i = 0; i < nconns; i++) {
        if (pthread_create(&c->workers[i].thread, NULL, run, &c->workers[i]) != 0) {
            st = es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not start a committer thread");
            goto fail;
        }
        c->workers[i].started = true;
    }
    *out = c;
    return ES_OK;
fail:
    es_committer_destroy(c);
    return st;
}

void
es_committer_on_commit(es_committer *c, void (*fn)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&c->mu);     /* workers may be running already */
    c->on_commit = fn;
    c->on_commit_ctx = ctx;
    pthread_mutex_unlock(&c->mu);
}

void
es_committer_set_queue_max(es_committer *c, size_t max)
{
    pthread_mutex_lock(&c->mu);
    c->queue_max = max;
    pthread_mutex_unlock(&c->mu);
}

void
es_committer_destroy(es_committer *c)
{
    int i;

    if (c == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_broadcast(&c->work);
    pthread_cond_broadcast(&c->spill);
    pthread_mutex_unlock(&c->mu);
    for (i = 0; i < c->nworkers; i++) {
        if (c->workers[i].started)
            pthread_join(c->workers[i].thread, NULL);
        es_store_close(c->workers[i].store);
        for (int k = 0; k < 2; k++) {
            lane *l = &c->workers[i].lanes[k];

            es__append_batch_free(l->batch);
            free(l->taken);
            free(l->reqs);
            free(l->res);
        }
    }
    pthread_cond_destroy(&c->work);
    pthread_cond_destroy(&c->spill);
    pthread_mutex_destroy(&c->mu);
    free(c->workers);
    free(c);
}

/* Queues it; otherwise (stopping, or the queue is full) answers it in
 * res and returns that status, it untouched.  Called with c->mu held. */
static es_status
enqueue(es_committer *c, item *it)
{
    es_append_result *res = it->res;

    if (c->stopping) {
        es_error_clear(&res->err);
        return res->status = es_error_set(&res->err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                                          "the committer is shutting down");
    }
    /* Refused at once rather than queued without bound: a caller that
     * waits behind thousands of appends would time out anyway, and the
     * queue's memory would grow with every client that retries. */
    if (c->queue_max > 0 && c->nqueued >= c->queue_max) {
        es_error_clear(&res->err);
        return res->status = es_error_set(&res->err, ES_EUNAVAILABLE, "commit_queue_full", NULL,
                                          "the commit queue holds its limit of %zu appends; "
                                          "retry later", c->queue_max);
    }
    if (c->tail)
        c->tail->next = it;
    else
        c->head = it;
    c->tail = it;
    c->queued += it->req->count;
    c->nqueued++;
    pthread_cond_signal(&c->work);
    if (c->queued >= SPILL_EVENTS)
        pthread_cond_signal(&c->spill);
    return ES_OK;
}

es_status
es_committer_append(es_committer *c, const es_append_req *req, es_append_result *res)
{
    item it = {.req = req, .res = res};
    es_status st;

    pthread_cond_init(&it.cond, NULL);
    pthread_mutex_lock(&c->mu);
    if ((st = enqueue(c, &it)) != ES_OK) {
        pthread_mutex_unlock(&c->mu);
        pthread_cond_destroy(&it.cond);
        return st;
    }
    while (!it.done)
        pthread_cond_wait(&it.cond, &c->mu);
    pthread_mutex_unlock(&c->mu);
    pthread_cond_destroy(&it.cond);
    return res->status;
}

es_status
es_committer_submit(es_committer *c, const es_append_req *req, es_append_result *res,
                    es_committer_done done, void *ctx)
{
    item *it = calloc(1, sizeof *it);

    if (it == NULL) {
        es_error_clear(&res->err);
        return res->status = es_error_set(&res->err, ES_ENOMEM, NULL, NULL,
                                          "could not queue the append");
    }
    es_status st;

    *it = (item){.req = req, .res = res, .cb = done, .cb_ctx = ctx};
    pthread_mutex_lock(&c->mu);
    if ((st = enqueue(c, it)) != ES_OK) {
        pthread_mutex_unlock(&c->mu);
        free(it);
        return st;
    }
    pthread_mutex_unlock(&c->mu);
    return ES_OK;
}
