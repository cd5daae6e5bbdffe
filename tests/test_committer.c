/*
 * Integration tests of events/committer.c: many threads appending through
 * one committer get their own, correct results, and concurrent appends
 * share commits.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int
main(void)
{
    Suite *s = suite_create("committer");
    TCase *tc = tcase_create("committer");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, threads_share_commits);
    tcase_add_test(tc, bad_arguments_and_unavailable);
    suite_add_tcase(s, tc);
    return th_run(s);
}
