/*
 * es_committer: a queue of waiting appends and the threads that drain it.
 * A waiting caller owns its queue item on its stack; the committer thread
 * fills in the result, sets done and signals that item's condition, so
 * only the callers whose appends finished wake up.  Items are handed out in
 * arrival order, so a caller's appends are committed in the order it made
 * them.
 */
#include "committer.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct item {
    const es_append_req *req;
    es_append_result *res;
    bool done;
    pthread_cond_t cond;        /* signalled once done is set */
    struct item *next;
} item;

typedef struct worker {
    es_committer *c;
    es_store *store;
    pthread_t thread;
    bool started;
} worker;

struct es_committer {
    pthread_mutex_t mu;
    pthread_cond_t work;        /* queue not empty, or stopping */
    item *head, *tail;
    bool stopping;
    size_t max_batch;
    int nworkers;
    worker *workers;
    void (*on_commit)(void *);
    void *on_commit_ctx;
};

static void *
run(void *arg)
{
    worker *w = arg;
    es_committer *c = w->c;
    es_append_req *reqs = malloc(c->max_batch * sizeof *reqs);
    es_append_result *res = malloc(c->max_batch * sizeof *res);
    item **taken = malloc(c->max_batch * sizeof *taken);
    void (*on_commit)(void *) = NULL;
    void *on_commit_ctx = NULL;
    size_t n, i;

    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (c->head == NULL && !c->stopping)
            pthread_cond_wait(&c->work, &c->mu);
        if (c->head == NULL)
            break;
        for (n = 0; n < c->max_batch && c->head != NULL; n++) {
            taken[n] = c->head;
            c->head = c->head->next;
        }
        if (c->head == NULL)
            c->tail = NULL;
        on_commit = c->on_commit;
        on_commit_ctx = c->on_commit_ctx;
        pthread_mutex_unlock(&c->mu);

        if (reqs == NULL || res == NULL || taken == NULL) {
            for (i = 0; i < n; i++) {
                es_error_clear(&taken[i]->res->err);
                taken[i]->res->status = es_error_set(&taken[i]->res->err, ES_ENOMEM, NULL,
                                                     NULL, "could not allocate a batch");
            }
        } else {
            for (i = 0; i < n; i++)
                reqs[i] = *taken[i]->req;
            bool wrote = false;

            es_store_append_many(w->store, reqs, n, res);
            for (i = 0; i < n; i++) {
                *taken[i]->res = res[i];
                wrote |= res[i].status == ES_OK && !res[i].duplicate;
            }
            if (wrote && on_commit != NULL)
                on_commit(on_commit_ctx);
        }

        pthread_mutex_lock(&c->mu);
        for (i = 0; i < n; i++) {
            taken[i]->done = true;
            pthread_cond_signal(&taken[i]->cond);
        }
    }
    pthread_mutex_unlock(&c->mu);
    free(reqs);
    free(res);
    free(taken);
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
    c->max_batch = max_batch;
    c->nworkers = nconns;
    for (i = 0; i < nconns; i++) {
        c->workers[i].c = c;
        if ((st = es_store_create(&c->workers[i].store, conninfo, err)) != ES_OK)
            goto fail;
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
es_committer_destroy(es_committer *c)
{
    int i;

    if (c == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_broadcast(&c->work);
    pthread_mutex_unlock(&c->mu);
    for (i = 0; i < c->nworkers; i++) {
        if (c->workers[i].started)
            pthread_join(c->workers[i].thread, NULL);
        es_store_close(c->workers[i].store);
    }
    pthread_cond_destroy(&c->work);
    pthread_mutex_destroy(&c->mu);
    free(c->workers);
    free(c);
}

es_status
es_committer_append(es_committer *c, const es_append_req *req, es_append_result *res)
{
    item it;

    it.req = req;
    it.res = res;
    it.done = false;
    it.next = NULL;
    pthread_cond_init(&it.cond, NULL);
    pthread_mutex_lock(&c->mu);
    if (c->stopping) {
        pthread_mutex_unlock(&c->mu);
        pthread_cond_destroy(&it.cond);
        es_error_clear(&res->err);
        return res->status = es_error_set(&res->err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                                          "the committer is shutting down");
    }
    if (c->tail)
        c->tail->next = &it;
    else
        c->head = &it;
    c->tail = &it;
    pthread_cond_signal(&c->work);
    while (!it.done)
        pthread_cond_wait(&it.cond, &c->mu);
    pthread_mutex_unlock(&c->mu);
    pthread_cond_destroy(&it.cond);
    return res->status;
}
