/*
 * The workers' shared connections (pool.h).  A pair is taken under one
 * mutex and given back after one round trip, so a few pairs serve many
 * workers: a saga holds no connection while its command is on its way
 * to es-command, which is most of its time.  A worker never holds two
 * pairs at once, so taking one cannot deadlock.
 */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"

struct sg_pool {
    char conninfo[512];
    pthread_mutex_t mu;
    pthread_cond_t freed;
    sg_conn *conns;
    bool *busy;
    int nconns;
    es_committer *committer;
    /* claimed work waiting for a worker, a ring */
    sg_work queue[SG_POOL_QUEUE_MAX];
    int64_t claimed[SG_POOL_QUEUE_MAX];
    int head, count;
    /* one claim at a time (sg_pool_claim_enter); waiting and gen under mu */
    pthread_mutex_t claim_mu;
    int waiting;                /* workers waiting to claim */
    unsigned gen;               /* claims started */
    bool drained;               /* the last claim found fewer sagas than it asked for */
};

es_status
sg_pool_create(sg_pool **out, const char *conninfo, int nconns, int commit_conns,
               es_error *err)
{
    sg_pool *p;
    es_status st;
    int i;

    *out = NULL;
    if (nconns < 1 || nconns > 64 || commit_conns < 1 || commit_conns > 16)
        return es_error_set(err, ES_EINVALID, "invalid_pool", NULL,
                            "a pool of %d connections and %d committers is out of range",
                            nconns, commit_conns);
    p = calloc(1, sizeof *p);
    if (p == NULL || (p->conns = calloc((size_t)nconns, sizeof *p->conns)) == NULL ||
        (p->busy = calloc((size_t)nconns, sizeof *p->busy)) == NULL) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        goto fail;
    }
    snprintf(p->conninfo, sizeof p->conninfo, "%s", conninfo);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->freed, NULL);
    pthread_mutex_init(&p->claim_mu, NULL);
    p->nconns = nconns;
    for (i = 0; i < nconns; i++)
        if ((st = es_store_create(&p->conns[i].store, conninfo, err)) != ES_OK)
            goto fail_conns;
    /* batches as large as the workers' appends at once: one each */
    if ((st = es_committer_create(&p->committer, conninfo, commit_conns, 128, err)) != ES_OK)
        goto fail_conns;
    *out = p;
    return ES_OK;
fail_conns:
    for (i = 0; i < nconns; i++)
        es_store_close(p->conns[i].store);
    pthread_mutex_destroy(&p->claim_mu);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->freed);
fail:
    if (p) {
        free(p->conns);
        free(p->busy);
    }
    free(p);
    return st;
}

void
sg_pool_destroy(sg_pool *p)
{
    sg_work w;
    int64_t at;
    int i;

    if (p == NULL)
        return;
    /* claims no worker took: due again now rather than when they run out */
    while (sg_pool_pop(p, &w, &at)) {
        sg_conn *c = sg_pool_take(p);
        es_error ignored;
        bool held;

        if (c->pg && PQstatus(c->pg) == CONNECTION_OK)
            (void)sg_work_release_now(c->pg, w.saga_id, w.claim, &held, &ignored);
        sg_pool_give(p, c);
        free(w.input);
    }
    es_committer_destroy(p->committer);
    for (i = 0; i < p->nconns; i++) {
        if (p->conns[i].pg)
            PQfinish(p->conns[i].pg);
        es_store_close(p->conns[i].store);
    }
    pthread_mutex_destroy(&p->claim_mu);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->freed);
    free(p->conns);
    free(p->busy);
    free(p);
}

sg_conn *
sg_pool_take(sg_pool *p)
{
    sg_conn *c = NULL;
    int i;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        for (i = 0; i < p->nconns && c == NULL; i++)
            if (!p->busy[i]) {
                p->busy[i] = true;
                c = &p->conns[i];
            }
        if (c)
            break;
        pthread_cond_wait(&p->freed, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    if (c->pg == NULL || PQstatus(c->pg) != CONNECTION_OK) {
        if (c->pg)
            PQfinish(c->pg);
        c->pg = es_pg_connect(p->conninfo, false);
        if (PQstatus(c->pg) == CONNECTION_OK)
            PQclear(PQexec(c->pg, "SET TimeZone = 'UTC'"));
    }
    return c;
}

void
sg_pool_give(sg_pool *p, sg_conn *c)
{
    pthread_mutex_lock(&p->mu);
    p->busy[c - p->conns] = false;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->mu);
}

es_committer *
sg_pool_committer(sg_pool *p)
{
    return p->committer;
}

bool
sg_pool_push(sg_pool *p, sg_work *work, int64_t claimed_ms)
{
    bool ok;

    pthread_mutex_lock(&p->mu);
    ok = p->count < SG_POOL_QUEUE_MAX;
    if (ok) {
        int i = (p->head + p->count) % SG_POOL_QUEUE_MAX;
        p->queue[i] = *work;
        p->claimed[i] = claimed_ms;
        p->count++;
        work->input = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    return ok;
}

bool
sg_pool_pop(sg_pool *p, sg_work *work, int64_t *claimed_ms)
{
    bool ok;

    pthread_mutex_lock(&p->mu);
    ok = p->count > 0;
    if (ok) {
        *work = p->queue[p->head];
        *claimed_ms = p->claimed[p->head];
        p->head = (p->head + 1) % SG_POOL_QUEUE_MAX;
        p->count--;
    }
    pthread_mutex_unlock(&p->mu);
    return ok;
}

int
sg_pool_room(sg_pool *p)
{
    int n;

    pthread_mutex_lock(&p->mu);
    n = SG_POOL_QUEUE_MAX - p->count;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void
sg_pool_claim_enter(sg_pool *p, bool *counted)
{
    unsigned g;

    pthread_mutex_lock(&p->mu);
    p->waiting++;
    g = p->gen;
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_lock(&p->claim_mu);
    pthread_mutex_lock(&p->mu);
    p->waiting--;
    *counted = p->gen != g && p->drained;
    pthread_mutex_unlock(&p->mu);
}

int
sg_pool_claim_start(sg_pool *p)
{
    int n;

    pthread_mutex_lock(&p->mu);
    n = p->waiting;
    p->gen++;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void
sg_pool_claim_drained(sg_pool *p, bool drained)
{
    pthread_mutex_lock(&p->mu);
    p->drained = drained;
    pthread_mutex_unlock(&p->mu);
}

void
sg_pool_claim_leave(sg_pool *p)
{
    pthread_mutex_unlock(&p->claim_mu);
}
