/*
 * Integration tests of events/committer.c: many threads appending through
 * one committer get their own, correct results, and concurrent appends
 * share commits; appends submitted without waiting are answered through
 * their callback, once each.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "committer.h"
#include "harness.h"

enum { THREADS = 16, PER_THREAD = 50 };

static es_committer *committer;
static char prefix[40];

typedef struct stats {
    int ok, conflicts;
    uint64_t txids[PER_THREAD];
} stats;

typedef struct job {
    int thread;
    stats st;
} job;

static void *
run_job(void *arg)
{
    job *j = arg;
    char stream[80];
    es_new_event e = {NULL, "T", 1, "{\"x\":1}", NULL};
    int64_t version = ES_EXPECT_NO_STREAM;

    snprintf(stream, sizeof stream, "%s-%d", prefix, j->thread);
    for (int i = 0; i < PER_THREAD; i++) {
        es_append_req req = {stream, version, &e, 1};
        es_append_result res;

        if (es_committer_append(committer, &req, &res) == ES_OK) {
            ck_assert_int_eq(res.last_version, version + 1);
            version = res.last_version;
            j->st.txids[j->st.ok++] = res.position.txid;
        }
    }
    /* A stale expected version is this caller's conflict only. */
    {
        es_append_req req = {stream, 0, &e, 1};
        es_append_result res;
        ck_assert_int_eq(es_committer_append(committer, &req, &res), ES_ECONFLICT);
        ck_assert_int_eq(res.err.actual_version, PER_THREAD - 1);
        j->st.conflicts++;
    }
    return NULL;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

START_TEST(threads_share_commits)
{
    pthread_t th[THREADS];
    static job jobs[THREADS];
    es_error err;
    int total = 0, shared = 0;

    th_unique(prefix, sizeof prefix, "gc");
    ck_assert_int_eq(es_committer_create(&committer, th_conninfo(), 2, 64, &err), ES_OK);
    for (int i = 0; i < THREADS; i++) {
        jobs[i].thread = i;
        ck_assert_int_eq(pthread_create(&th[i], NULL, run_job, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    es_committer_destroy(committer);

    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(jobs[i].st.ok, PER_THREAD);
        ck_assert_int_eq(jobs[i].st.conflicts, 1);
        total += jobs[i].st.ok;
    }
    ck_assert_int_eq(total, THREADS * PER_THREAD);
    /* Group commit happened: a thread waits for each of its appends, so
     * two appends in one transaction come from two threads. */
    {
        static uint64_t all[THREADS * PER_THREAD];
        int n = 0;
        for (int i = 0; i < THREADS; i++)
            for (int a = 0; a < PER_THREAD; a++)
                all[n++] = jobs[i].st.txids[a];
        qsort(all, (size_t)n, sizeof all[0], cmp_u64);
        for (int i = 1; i < n; i++)
            if (all[i] == all[i - 1])
                shared++;
    }
    ck_assert_msg(shared > 0, "no two threads' appends shared a commit");
}
END_TEST

START_TEST(bad_arguments_and_unavailable)
{
    es_committer *c = (es_committer *)1;
    es_error err;

    ck_assert_int_eq(es_committer_create(&c, th_conninfo(), 0, 10, &err), ES_EINVALID);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(es_committer_create(&c, th_conninfo(), 1, 1000, &err), ES_EINVALID);
    /* A committer starts without its server and answers unavailable. */
    ck_assert_int_eq(es_committer_create(&c, "host=127.0.0.1 port=1 connect_timeout=2", 2, 10, &err),
                     ES_OK);
    {
        es_new_event e = {NULL, "T", 1, "{}", NULL};
        es_append_req req = {"gc-down", ES_EXPECT_ANY, &e, 1};
        es_append_result res;
        ck_assert_int_eq(es_committer_append(c, &req, &res), ES_EUNAVAILABLE);
        ck_assert_str_eq(res.err.code, "store_unavailable");
    }
    es_committer_destroy(c);
    es_committer_destroy(NULL);
}
END_TEST

/* Appends submitted without waiting: the callbacks' record. */
enum { SUBMITS = 200 };

typedef struct submitted {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int calls[SUBMITS + 1];
    int done;
    es_append_req req[SUBMITS + 1];
    es_append_result res[SUBMITS + 1];
} submitted;

typedef struct sub_ctx {
    submitted *s;
    int i;
} sub_ctx;

static void
on_done(void *arg)
{
    sub_ctx *c = arg;

    pthread_mutex_lock(&c->s->mu);
    c->s->calls[c->i]++;
    c->s->done++;
    pthread_cond_signal(&c->s->cond);
    pthread_mutex_unlock(&c->s->mu);
}

static void
wait_done(submitted *s, int n)
{
    pthread_mutex_lock(&s->mu);
    while (s->done < n)
        pthread_cond_wait(&s->cond, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

START_TEST(submit_answers_through_callbacks)
{
    static submitted s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    static sub_ctx ctx[SUBMITS + 1];
    static char streams[SUBMITS][80];
    es_new_event e = {NULL, "T", 1, "{\"x\":1}", NULL};
    char prefix_[40];
    es_error err;

    th_unique(prefix_, sizeof prefix_, "gcsub");
    ck_assert_int_eq(es_committer_create(&committer, th_conninfo(), 2, 16, &err), ES_OK);
    /* Submitted appends are not ordered among themselves (two
     * connections may commit them), so each has its own stream. */
    for (int i = 0; i < SUBMITS; i++) {
        snprintf(streams[i], sizeof streams[i], "%s-%d", prefix_, i);
        s.req[i] = (es_append_req){streams[i], ES_EXPECT_NO_STREAM, &e, 1};
        ctx[i] = (sub_ctx){&s, i};
        ck_assert_int_eq(es_committer_submit(committer, &s.req[i], &s.res[i], on_done, &ctx[i]),
                         ES_OK);
    }
    wait_done(&s, SUBMITS);
    /* A stale version's conflict comes through the callback too. */
    s.req[SUBMITS] = (es_append_req){streams[0], ES_EXPECT_NO_STREAM, &e, 1};
    ctx[SUBMITS] = (sub_ctx){&s, SUBMITS};
    ck_assert_int_eq(es_committer_submit(committer, &s.req[SUBMITS], &s.res[SUBMITS], on_done,
                                         &ctx[SUBMITS]), ES_OK);
    wait_done(&s, SUBMITS + 1);
    es_committer_destroy(committer);
    for (int i = 0; i < SUBMITS; i++) {
        ck_assert_int_eq(s.calls[i], 1);
        ck_assert_msg(s.res[i].status == ES_OK, "append %d: %s", i, s.res[i].err.message);
        ck_assert_int_eq(s.res[i].first_version, 0);
        ck_assert_int_eq(s.res[i].last_version, 0);
    }
    ck_assert_int_eq(s.calls[SUBMITS], 1);
    ck_assert_int_eq(s.res[SUBMITS].status, ES_ECONFLICT);
    ck_assert_int_eq(s.res[SUBMITS].err.actual_version, 0);
    ck_assert_int_eq(s.done, SUBMITS + 1);
}
END_TEST

START_TEST(submit_to_an_unreachable_store)
{
    static submitted s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    static sub_ctx ctx;
    es_new_event e = {NULL, "T", 1, "{}", NULL};
    es_committer *c;
    es_error err;

    ck_assert_int_eq(es_committer_create(&c, "host=127.0.0.1 port=1 connect_timeout=2", 1, 10, &err),
                     ES_OK);
    s.req[0] = (es_append_req){"gcsub-down", ES_EXPECT_ANY, &e, 1};
    ctx = (sub_ctx){&s, 0};
    ck_assert_int_eq(es_committer_submit(c, &s.req[0], &s.res[0], on_done, &ctx), ES_OK);
    wait_done(&s, 1);
    ck_assert_int_eq(s.calls[0], 1);
    ck_assert_int_eq(s.res[0].status, ES_EUNAVAILABLE);
    ck_assert_str_eq(s.res[0].err.code, "store_unavailable");
    es_committer_destroy(c);
}
END_TEST

/* Waiting and submitting callers in the same batches: each gets its own
 * result once (a waiting caller's item is gone as soon as it is woken,
 * so nothing of it may be read after). */
enum { MIXED_THREADS = 6, MIXED_EACH = 150 };

static void *
mixed_waiter(void *arg)
{
    job *j = arg;
    char stream[80];
    es_new_event e = {NULL, "T", 1, "{}", NULL};

    snprintf(stream, sizeof stream, "%s-w%d", prefix, j->thread);
    for (int i = 0; i < MIXED_EACH; i++) {
        es_append_req req = {stream, i == 0 ? ES_EXPECT_NO_STREAM : i - 1, &e, 1};
        es_append_result res;

        if (es_committer_append(committer, &req, &res) == ES_OK && res.last_version == i)
            j->st.ok++;
    }
    return NULL;
}

START_TEST(waiting_and_submitted_share_batches)
{
    static submitted s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    static sub_ctx ctx[SUBMITS];
    static char streams[SUBMITS][80];
    static job jobs[MIXED_THREADS];
    pthread_t th[MIXED_THREADS];
    es_new_event e = {NULL, "T", 1, "{}", NULL};
    es_error err;

    th_unique(prefix, sizeof prefix, "gcmix");
    ck_assert_int_eq(es_committer_create(&committer, th_conninfo(), 2, 32, &err), ES_OK);
    for (int i = 0; i < MIXED_THREADS; i++) {
        jobs[i] = (job){.thread = i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, mixed_waiter, &jobs[i]), 0);
    }
    for (int i = 0; i < SUBMITS; i++) {
        snprintf(streams[i], sizeof streams[i], "%s-s%d", prefix, i);
        s.req[i] = (es_append_req){streams[i], ES_EXPECT_NO_STREAM, &e, 1};
        ctx[i] = (sub_ctx){&s, i};
        ck_assert_int_eq(es_committer_submit(committer, &s.req[i], &s.res[i], on_done, &ctx[i]),
                         ES_OK);
        if (i % 10 == 9)
            usleep(200);        /* spread them over the waiters' batches */
    }
    for (int i = 0; i < MIXED_THREADS; i++)
        pthread_join(th[i], NULL);
    wait_done(&s, SUBMITS);
    es_committer_destroy(committer);
    for (int i = 0; i < MIXED_THREADS; i++)
        ck_assert_int_eq(jobs[i].st.ok, MIXED_EACH);
    for (int i = 0; i < SUBMITS; i++) {
        ck_assert_int_eq(s.calls[i], 1);
        ck_assert_msg(s.res[i].status == ES_OK, "append %d: %s", i, s.res[i].err.message);
    }
}
END_TEST

/* A thread whose every other append is stale: the batches it is in
 * need a second pass (through es_append) to tell its conflict. */
static void *
stale_and_good(void *arg)
{
    job *j = arg;
    char stream[80];
    es_new_event e = {NULL, "T", 1, "{}", NULL};
    int64_t version = ES_EXPECT_NO_STREAM;

    snprintf(stream, sizeof stream, "%s-%d", prefix, j->thread);
    for (int i = 0; i < PER_THREAD; i++) {
        es_append_req good = {stream, version, &e, 1}, stale = {stream, version - 1, &e, 1};
        es_append_result res;

        if (version >= 1) {
            ck_assert_int_eq(es_committer_append(committer, &stale, &res), ES_ECONFLICT);
            ck_assert_int_eq(res.err.actual_version, version);
            j->st.conflicts++;
        }
        ck_assert_msg(es_committer_append(committer, &good, &res) == ES_OK, "%s",
                      res.err.message);
        ck_assert_int_eq(res.last_version, version + 1);
        version = res.last_version;
        j->st.ok++;
    }
    return NULL;
}

/*
 * The next batch goes out while the last one's commit is flushed; when
 * the last one then needs a second pass, the batch behind it is read
 * first and both are finished after.  Under a steady flow of conflicts
 * every caller still gets its own result.
 */
START_TEST(second_pass_behind_the_next_batch)
{
    pthread_t th[THREADS];
    static job jobs[THREADS];
    es_error err;

    th_unique(prefix, sizeof prefix, "gcpass");
    ck_assert_int_eq(es_committer_create(&committer, th_conninfo(), 1, 64, &err), ES_OK);
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (job){.thread = i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, stale_and_good, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    es_committer_destroy(committer);
    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(jobs[i].st.ok, PER_THREAD);
        ck_assert_int_eq(jobs[i].st.conflicts, PER_THREAD - 2);
    }
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("committer");
    TCase *tc = tcase_create("committer");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, threads_share_commits);
    tcase_add_test(tc, bad_arguments_and_unavailable);
    tcase_add_test(tc, submit_answers_through_callbacks);
    tcase_add_test(tc, submit_to_an_unreachable_store);
    tcase_add_test(tc, waiting_and_submitted_share_batches);
    tcase_add_test(tc, second_pass_behind_the_next_batch);
    suite_add_tcase(s, tc);
    return th_run(s);
}
