/*
 * Integration tests of events/committer.c: many threads appending through
 * one committer get their own, correct results, and concurrent appends
 * share commits; appends submitted without waiting are answered through
 * their callback, once each; a batch whose connection is cancelled,
 * killed or cut is answered as the store has it; the queue is bounded.
 */
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "committer.h"
#include "harness.h"
#include "uuid.h"

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

/* ---- lost connections and the queue's bound -------------------------- */

static PGconn *
admin(void)
{
    PGconn *c = PQconnectdb(th_conninfo());

    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
    return c;
}

static void
sql_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);

    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
                  "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

/* Opens a transaction on c that holds stream's row, as an append would. */
static void
hold_stream(PGconn *c, const char *stream)
{
    char sql[256];

    sql_ok(c, "BEGIN");
    snprintf(sql, sizeof sql, "SELECT 1 FROM es_streams WHERE stream_id = '%s' FOR UPDATE", stream);
    sql_ok(c, sql);
}

/* The sessions named app (the committer's) that wait for a lock. */
static int
lock_waiters(PGconn *c, const char *app)
{
    char sql[256];
    PGresult *r;
    int n;

    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                              "'%s' AND wait_event_type = 'Lock'", app);
    r = PQexec(c, sql);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    n = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

static void
wait_lock_waiter(PGconn *c, const char *app)
{
    for (int tries = 0; tries < 6000; tries++) {
        if (lock_waiters(c, app) > 0)
            return;
        usleep(10 * 1000);
    }
    ck_abort_msg("the committer never waited for the lock");
}

/* Events stored with data {"tag": tag}, and the first one's version and
 * position. */
static int
tagged(PGconn *c, const char *tag, int64_t *version, int64_t *gpos)
{
    const char *values[1] = {tag};
    PGresult *r = PQexecParams(c, "SELECT count(*), min(version), max(global_position) "
                                  "FROM es_events WHERE data->>'tag' = $1", 1, NULL, values,
                               NULL, NULL, 0);
    int n;

    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    n = atoi(PQgetvalue(r, 0, 0));
    *version = n > 0 ? atoll(PQgetvalue(r, 0, 1)) : -1;
    *gpos = n > 0 ? atoll(PQgetvalue(r, 0, 2)) : -1;
    PQclear(r);
    return n;
}

/*
 * The invariant a client relies on: an append answered success is stored
 * exactly as answered; one answered with an error is not stored (a client
 * retries it, with new ids if it has none of its own, and would append it
 * twice).
 */
static void
assert_answered_as_stored(PGconn *c, const char *tag, const es_append_result *res)
{
    int64_t version, gpos;
    int n = tagged(c, tag, &version, &gpos);

    if (res->status == ES_OK) {
        ck_assert_msg(n == 1, "%s answered written, stored %d times", tag, n);
        ck_assert_int_eq(version, res->first_version);
        ck_assert_int_eq(gpos, res->position.gpos);
    } else {
        ck_assert_msg(n == 0, "%s answered %s (%s) but is stored", tag, res->err.code,
                      res->err.message);
    }
}

enum { KILLED = 5 };

/*
 * A batch is stopped by another session while it waits for a row lock
 * (how: "cancel" or "terminate"), with the next batch queued behind it:
 * the one before it committed, it did not, and the one after it is sent
 * behind it on the same connection (the committer sends the next batch as
 * soon as the last one's statements have run, failed ones included).
 * Every append is answered as the store has it.
 */
static void
stop_a_batch(const char *how, submitted *s, char tags[KILLED][80])
{
    static sub_ctx ctx[KILLED];
    static char streams[KILLED][80], data[KILLED][120];
    static es_new_event evs[KILLED];
    char app[40], conninfo[512], sql[512];
    PGconn *l1 = admin(), *l2 = admin(), *q = admin();
    es_committer *c;
    es_error err;

    th_unique(app, sizeof app, "gcstop");
    for (int i = 0; i < KILLED; i++) {
        snprintf(streams[i], sizeof streams[i], "%s-%c", app, 'a' + i);
        snprintf(tags[i], 80, "%s-%d", app, i);
        snprintf(data[i], sizeof data[i], "{\"tag\":\"%s\"}", tags[i]);
        evs[i] = (es_new_event){NULL, "T", 1, data[i], NULL};
        ctx[i] = (sub_ctx){s, i};
    }
    /* streams a and b exist (version 0), the others are new */
    for (int i = 0; i < 2; i++) {
        snprintf(sql, sizeof sql, "INSERT INTO es_streams VALUES ('%s', 0); INSERT INTO es_events "
                 "(stream_id, category, version, event_id, type, data) VALUES ('%s', 'gcstop', 0, "
                 "gen_random_uuid(), 'T', '{}')", streams[i], streams[i]);
        sql_ok(q, sql);
    }
    snprintf(conninfo, sizeof conninfo, "%s application_name=%s", th_conninfo(), app);
    ck_assert_int_eq(es_committer_create(&c, conninfo, 1, 64, &err), ES_OK);
    hold_stream(l1, streams[0]);
    hold_stream(l2, streams[1]);
    /* a alone: waits for l1 */
    s->req[0] = (es_append_req){streams[0], 0, &evs[0], 1};
    ck_assert_int_eq(es_committer_submit(c, &s->req[0], &s->res[0], on_done, &ctx[0]), ES_OK);
    wait_lock_waiter(q, app);
    s->req[1] = (es_append_req){streams[1], 0, &evs[1], 1};
    s->req[2] = (es_append_req){streams[2], ES_EXPECT_NO_STREAM, &evs[2], 1};
    for (int i = 1; i <= 2; i++)
        ck_assert_int_eq(es_committer_submit(c, &s->req[i], &s->res[i], on_done, &ctx[i]), ES_OK);
    /* a commits; b and c, queued meanwhile, went out as it was answered
     * and wait for l2 */
    sql_ok(l1, "COMMIT");
    wait_done(s, 1);
    wait_lock_waiter(q, app);
    s->req[3] = (es_append_req){streams[3], ES_EXPECT_NO_STREAM, &evs[3], 1};
    s->req[4] = (es_append_req){streams[4], ES_EXPECT_NO_STREAM, &evs[4], 1};
    for (int i = 3; i <= 4; i++)
        ck_assert_int_eq(es_committer_submit(c, &s->req[i], &s->res[i], on_done, &ctx[i]), ES_OK);
    snprintf(sql, sizeof sql, "SELECT pg_%s_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = '%s'", how, app);
    sql_ok(q, sql);
    wait_done(s, KILLED);
    sql_ok(l2, "ROLLBACK");
    es_committer_destroy(c);
    for (int i = 0; i < KILLED; i++) {
        ck_assert_int_eq(s->calls[i], 1);
        assert_answered_as_stored(q, tags[i], &s->res[i]);
    }
    ck_assert_int_eq(s->res[0].status, ES_OK);
    PQfinish(l1);
    PQfinish(l2);
    PQfinish(q);
}

/* A cancel (a statement timeout is the same) rolls back one batch on a
 * connection that stays up: the batch behind it commits, and is answered
 * so, not "unavailable". */
START_TEST(cancelled_batch_answers_what_committed)
{
    static submitted s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    static char tags[KILLED][80];

    stop_a_batch("cancel", &s, tags);
    for (int i = 1; i <= 2; i++) {
        ck_assert_int_eq(s.res[i].status, ES_EUNAVAILABLE);
        ck_assert_str_eq(s.res[i].err.code, "store_busy");
    }
    for (int i = 3; i <= 4; i++)
        ck_assert_msg(s.res[i].status == ES_OK, "append %d: %s", i, s.res[i].err.message);
}
END_TEST

/* A terminated session: nothing it ran commits, and nothing of it is
 * answered written; the committer carries on with a new connection. */
START_TEST(terminated_batch_answers_what_committed)
{
    static submitted s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    static char tags[KILLED][80];

    stop_a_batch("terminate", &s, tags);
    for (int i = 1; i < KILLED; i++)
        ck_assert_str_ne(s.res[i].err.code, "append_outcome_unknown");
}
END_TEST

/*
 * A TCP proxy between a committer and PostgreSQL that can swallow what
 * the server sends (the commit happens, its answer never arrives), drop
 * what the client sends, cut every connection, and refuse new ones.
 */
enum { PX_PASS, PX_SWALLOW, PX_DROP_UP, PX_DOWN };
enum { PX_PAIRS = 8 };

typedef struct proxy {
    int lfd;
    unsigned port;
    char host[256], pgport[16];
    atomic_int mode;
    atomic_int cut;             /* set: close every connection, then the mode is cut - 1 */
    atomic_int dropped;         /* bytes dropped on the way up */
    atomic_bool stop;
    pthread_t thread;
} proxy;

static int
proxy_upstream(const proxy *p)
{
    int fd = -1;

    if (p->host[0] == '/') {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};

        snprintf(sa.sun_path, sizeof sa.sun_path, "%.80s/.s.PGSQL.%.8s", p->host, p->pgport);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            close(fd);
            fd = -1;
        }
    } else {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;

        if (getaddrinfo(p->host, p->pgport, &hints, &ai) != 0)
            return -1;
        fd = socket(ai->ai_family, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
        freeaddrinfo(ai);
    }
    return fd;
}

static bool
write_all(int fd, const char *b, ssize_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, b, (size_t)n);

        if (w <= 0)
            return false;
        b += w;
        n -= w;
    }
    return true;
}

static void *
proxy_run(void *arg)
{
    proxy *p = arg;
    int cl[PX_PAIRS], sv[PX_PAIRS];
    char buf[65536];

    for (int i = 0; i < PX_PAIRS; i++)
        cl[i] = sv[i] = -1;
    while (!atomic_load(&p->stop)) {
        struct pollfd f[1 + 2 * PX_PAIRS];
        int pair[1 + 2 * PX_PAIRS], nf = 0;

        int cut = atomic_exchange(&p->cut, 0);

        if (cut) {
            atomic_store(&p->mode, cut - 1);
            for (int i = 0; i < PX_PAIRS; i++) {
                if (cl[i] >= 0) {
                    close(cl[i]);
                    close(sv[i]);
                    cl[i] = sv[i] = -1;
                }
            }
        }
        f[nf++] = (struct pollfd){.fd = p->lfd, .events = POLLIN};
        for (int i = 0; i < PX_PAIRS; i++) {
            if (cl[i] < 0)
                continue;
            pair[nf] = i;
            f[nf++] = (struct pollfd){.fd = cl[i], .events = POLLIN};
            pair[nf] = i;
            f[nf++] = (struct pollfd){.fd = sv[i], .events = POLLIN};
        }
        if (poll(f, (nfds_t)nf, 20) <= 0)
            continue;
        if (f[0].revents & POLLIN) {
            int c = accept(p->lfd, NULL, NULL), u = -1, i;

            for (i = 0; i < PX_PAIRS && cl[i] >= 0; i++)
                ;
            if (c >= 0 && (atomic_load(&p->mode) == PX_DOWN || i == PX_PAIRS ||
                           (u = proxy_upstream(p)) < 0)) {
                close(c);
            } else if (c >= 0) {
                cl[i] = c;
                sv[i] = u;
            }
        }
        for (int k = 1; k < nf; k++) {
            int i = pair[k], mode = atomic_load(&p->mode);
            bool up = k % 2 == 1;       /* from the client */
            ssize_t n;

            if (!(f[k].revents & (POLLIN | POLLHUP | POLLERR)) || cl[i] < 0)
                continue;
            n = read(f[k].fd, buf, sizeof buf);
            if (n > 0 && up && mode == PX_DROP_UP) {
                atomic_fetch_add(&p->dropped, (int)n);
                continue;
            }
            if (n > 0 && !up && mode == PX_SWALLOW)
                continue;
            if (n <= 0 || !write_all(up ? sv[i] : cl[i], buf, n)) {
                close(cl[i]);
                close(sv[i]);
                cl[i] = sv[i] = -1;
            }
        }
    }
    for (int i = 0; i < PX_PAIRS; i++) {
        if (cl[i] >= 0) {
            close(cl[i]);
            close(sv[i]);
        }
    }
    return NULL;
}

static void
proxy_start(proxy *p)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    PQconninfoOption *opts = PQconninfoParse(th_conninfo(), NULL);

    memset(p, 0, sizeof *p);
    snprintf(p->host, sizeof p->host, "/var/run/postgresql");
    snprintf(p->pgport, sizeof p->pgport, "5432");
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "host") == 0 && o->val != NULL)
            snprintf(p->host, sizeof p->host, "%s", o->val);
        if (strcmp(o->keyword, "port") == 0 && o->val != NULL)
            snprintf(p->pgport, sizeof p->pgport, "%s", o->val);
    }
    PQconninfoFree(opts);
    p->lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(p->lfd, 0);
    ck_assert_int_eq(bind(p->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(p->lfd, 16), 0);
    ck_assert_int_eq(getsockname(p->lfd, (struct sockaddr *)&sa, &len), 0);
    p->port = ntohs(sa.sin_port);
    ck_assert_int_eq(pthread_create(&p->thread, NULL, proxy_run, p), 0);
}

/* Closes every connection and then (nothing passes in between) sets mode. */
static void
proxy_cut(proxy *p, int mode)
{
    atomic_store(&p->cut, mode + 1);
}

static void
proxy_stop(proxy *p)
{
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    close(p->lfd);
}

/* Waits until the event tagged tag is stored (the server committed it). */
static void
wait_stored(PGconn *q, const char *tag)
{
    int64_t v, g;

    for (int tries = 0; tries < 3000; tries++) {
        if (tagged(q, tag, &v, &g) > 0)
            return;
        usleep(10 * 1000);
    }
    ck_abort_msg("%s was never committed", tag);
}

/*
 * The connection goes after the server committed a batch and before its
 * answer arrived.  The committer learns on a new connection that it was
 * written and answers so; when it cannot ask, it answers
 * append_outcome_unknown, and a retry with the same ids answers the
 * first result.  A batch the server never received is answered
 * unavailable, known not written.
 */
START_TEST(lost_commit_is_resolved)
{
    static submitted s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    static sub_ctx ctx[4];
    static char streams[4][80], data[4][120], tags[4][80], ids[4][ES_UUID_LEN + 1];
    static es_new_event evs[4];
    static proxy px;
    char app[40], conninfo[600];
    PGconn *q = admin();
    es_committer *c;
    es_append_result r;
    es_error err;

    th_unique(app, sizeof app, "gclost");
    for (int i = 0; i < 4; i++) {
        snprintf(streams[i], sizeof streams[i], "%s-%d", app, i);
        snprintf(tags[i], sizeof tags[i], "%s-t%d", app, i);
        snprintf(data[i], sizeof data[i], "{\"tag\":\"%s\"}", tags[i]);
        ck_assert(es_uuid_random(ids[i]));
        evs[i] = (es_new_event){i == 2 ? ids[i] : NULL, "T", 1, data[i], NULL};
        s.req[i] = (es_append_req){streams[i], ES_EXPECT_NO_STREAM, &evs[i], 1};
        ctx[i] = (sub_ctx){&s, i};
    }
    proxy_start(&px);
    snprintf(conninfo, sizeof conninfo, "%s host=127.0.0.1 port=%u application_name=%s "
             "sslmode=disable", th_conninfo(), px.port, app);
    ck_assert_int_eq(es_committer_create(&c, conninfo, 1, 64, &err), ES_OK);
    {   /* the connection is up */
        es_new_event e = {NULL, "T", 1, "{}", NULL};
        es_append_req req = {app, ES_EXPECT_NO_STREAM, &e, 1};
        ck_assert_msg(es_committer_append(c, &req, &r) == ES_OK, "%s", r.err.message);
    }

    /* 0 commits, its answer is swallowed; 1 queues behind it */
    atomic_store(&px.mode, PX_SWALLOW);
    ck_assert_int_eq(es_committer_submit(c, &s.req[0], &s.res[0], on_done, &ctx[0]), ES_OK);
    wait_stored(q, tags[0]);
    ck_assert_int_eq(es_committer_submit(c, &s.req[1], &s.res[1], on_done, &ctx[1]), ES_OK);
    proxy_cut(&px, PX_PASS);
    wait_done(&s, 2);
    for (int i = 0; i < 2; i++) {
        ck_assert_msg(s.res[i].status == ES_OK, "append %d: %s", i, s.res[i].err.message);
        assert_answered_as_stored(q, tags[i], &s.res[i]);
    }

    /* 2 commits, its answer is swallowed, and the store cannot be asked */
    atomic_store(&px.mode, PX_SWALLOW);
    ck_assert_int_eq(es_committer_submit(c, &s.req[2], &s.res[2], on_done, &ctx[2]), ES_OK);
    wait_stored(q, tags[2]);
    proxy_cut(&px, PX_DOWN);
    wait_done(&s, 3);
    ck_assert_int_eq(s.res[2].status, ES_EUNAVAILABLE);
    ck_assert_str_eq(s.res[2].err.code, "append_outcome_unknown");
    atomic_store(&px.mode, PX_PASS);
    ck_assert_msg(es_committer_append(c, &s.req[2], &r) == ES_OK, "%s", r.err.message);
    ck_assert(r.duplicate);
    assert_answered_as_stored(q, tags[2], &r);

    /* 3 never reaches the server */
    atomic_store(&px.mode, PX_DROP_UP);
    ck_assert_int_eq(es_committer_submit(c, &s.req[3], &s.res[3], on_done, &ctx[3]), ES_OK);
    for (int tries = 0; tries < 3000 && atomic_load(&px.dropped) == 0; tries++)
        usleep(10 * 1000);
    ck_assert_int_gt(atomic_load(&px.dropped), 0);
    proxy_cut(&px, PX_PASS);
    wait_done(&s, 4);
    ck_assert_int_eq(s.res[3].status, ES_EUNAVAILABLE);
    ck_assert_str_eq(s.res[3].err.code, "store_unavailable");
    assert_answered_as_stored(q, tags[3], &s.res[3]);

    es_committer_destroy(c);
    proxy_stop(&px);
    PQfinish(q);
}
END_TEST

/* Past its bound the queue refuses an append at once, waiting or
 * submitted, and takes appends again once it has room. */
START_TEST(full_queue_refuses_at_once)
{
    enum { CAP = 4 };
    static submitted s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    static sub_ctx ctx[CAP + 2];
    static char streams[CAP + 2][80];
    es_new_event e = {NULL, "T", 1, "{}", NULL};
    char app[40], conninfo[512], sql[512];
    PGconn *l = admin(), *q = admin();
    es_append_req extra;
    es_append_result r;
    es_committer *c;
    es_error err;

    th_unique(app, sizeof app, "gcfull");
    for (int i = 0; i < CAP + 2; i++) {
        snprintf(streams[i], sizeof streams[i], "%s-%d", app, i);
        s.req[i] = (es_append_req){streams[i], ES_EXPECT_NO_STREAM, &e, 1};
        ctx[i] = (sub_ctx){&s, i};
    }
    snprintf(sql, sizeof sql, "INSERT INTO es_streams VALUES ('%s', 0); INSERT INTO es_events "
             "(stream_id, category, version, event_id, type, data) VALUES ('%s', 'gcfull', 0, "
             "gen_random_uuid(), 'T', '{}')", streams[0], streams[0]);
    sql_ok(q, sql);
    s.req[0] = (es_append_req){streams[0], 0, &e, 1};
    snprintf(conninfo, sizeof conninfo, "%s application_name=%s", th_conninfo(), app);
    ck_assert_int_eq(es_committer_create(&c, conninfo, 1, 64, &err), ES_OK);
    es_committer_set_queue_max(c, CAP);
    hold_stream(l, streams[0]);
    /* 0 is in flight, waiting for l; 1..CAP fill the queue */
    ck_assert_int_eq(es_committer_submit(c, &s.req[0], &s.res[0], on_done, &ctx[0]), ES_OK);
    wait_lock_waiter(q, app);
    for (int i = 1; i <= CAP; i++)
        ck_assert_int_eq(es_committer_submit(c, &s.req[i], &s.res[i], on_done, &ctx[i]), ES_OK);
    ck_assert_int_eq(es_committer_submit(c, &s.req[CAP + 1], &s.res[CAP + 1], on_done,
                                         &ctx[CAP + 1]), ES_EUNAVAILABLE);
    ck_assert_str_eq(s.res[CAP + 1].err.code, "commit_queue_full");
    extra = s.req[CAP + 1];
    ck_assert_int_eq(es_committer_append(c, &extra, &r), ES_EUNAVAILABLE);
    ck_assert_str_eq(r.err.code, "commit_queue_full");
    sql_ok(l, "COMMIT");
    wait_done(&s, CAP + 1);
    for (int i = 0; i <= CAP; i++)
        ck_assert_msg(s.res[i].status == ES_OK, "append %d: %s", i, s.res[i].err.message);
    ck_assert_msg(es_committer_append(c, &extra, &r) == ES_OK, "%s", r.err.message);
    es_committer_destroy(c);
    PQfinish(l);
    PQfinish(q);
}
END_TEST

/* An HTTP append that meets the full queue: es-command answers 503 with
 * Retry-After and commit_queue_full at once, while the append in flight
 * and the one queued are answered 201 when the store lets them through. */
typedef struct http_post {
    unsigned port;
    char path[160];
    const char *body;
    th_response res;
    int status;
    pthread_mutex_t *mu;
    pthread_cond_t *cond;
    int *finished;
} http_post;

static void *
run_post(void *arg)
{
    http_post *p = arg;

    int status = th_http(p->port, "POST", p->path, "Content-Type: application/json\r\n",
                         p->body, &p->res);

    pthread_mutex_lock(p->mu);
    p->status = status;
    (*p->finished)++;
    pthread_cond_signal(p->cond);
    pthread_mutex_unlock(p->mu);
    return NULL;
}

START_TEST(http_full_queue_is_503_with_retry_after)
{
    enum { POSTS = 4 };
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
    static http_post posts[POSTS];
    static char pgenv[600];
    const char *env[] = {pgenv, "ES_NATS_URL=off", "ES_AUTH=off", "ES_COMMIT_QUEUE_MAX=1",
                         "ES_HTTP_WORKERS=8", NULL};
    char app[40], sql[512], retry[32], first[64];
    PGconn *l = admin(), *q = admin();
    pthread_t th[POSTS];
    int finished = 0, refused = 0;
    static th_daemon d;     /* the harness keeps it, to stop at exit */

    th_unique(app, sizeof app, "gchttp");
    snprintf(sql, sizeof sql, "INSERT INTO es_streams VALUES ('%s-0', 0); INSERT INTO es_events "
             "(stream_id, category, version, event_id, type, data) VALUES ('%s-0', 'gchttp', 0, "
             "gen_random_uuid(), 'T', '{}')", app, app);
    sql_ok(q, sql);
    snprintf(pgenv, sizeof pgenv, "ES_PG_CONNINFO=%s application_name=%s", th_conninfo(), app);
    th_daemon_start(&d, "es-command", "ES_COMMAND_PORT", env);
    snprintf(first, sizeof first, "%s-0", app);
    hold_stream(l, first);
    for (int i = 0; i < POSTS; i++) {
        posts[i] = (http_post){.port = d.port, .mu = &mu, .cond = &cond, .finished = &finished,
                               .body = i == 0 ? "{\"expected_version\":0,\"events\":[{\"type\":\"T\",\"data\":{}}]}"
                                              : "{\"expected_version\":\"no_stream\",\"events\":[{\"type\":\"T\",\"data\":{}}]}"};
        snprintf(posts[i].path, sizeof posts[i].path, "/v1/streams/%s-%d/events", app, i);
    }
    /* 0 is in flight, waiting for the row; of the three after it, one
     * fits in the queue and two are refused at once */
    ck_assert_int_eq(pthread_create(&th[0], NULL, run_post, &posts[0]), 0);
    wait_lock_waiter(q, app);
    for (int i = 1; i < POSTS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, run_post, &posts[i]), 0);
    pthread_mutex_lock(&mu);
    while (finished < 2)
        pthread_cond_wait(&cond, &mu);
    pthread_mutex_unlock(&mu);
    for (int i = 1; i < POSTS; i++) {
        pthread_mutex_lock(&mu);
        bool done = posts[i].status != 0;
        pthread_mutex_unlock(&mu);
        if (!done)
            continue;
        ck_assert_int_eq(posts[i].status, 503);
        ck_assert_ptr_nonnull(strstr(posts[i].res.body, "commit_queue_full"));
        ck_assert_ptr_nonnull(th_header(&posts[i].res, "Retry-After", retry, sizeof retry));
        refused++;
    }
    ck_assert_int_eq(refused, 2);
    sql_ok(l, "COMMIT");
    for (int i = 0; i < POSTS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0, written = 0; i < POSTS; i++) {
        written += posts[i].status == 201;
        ck_assert_msg(posts[i].status == 201 || posts[i].status == 503, "post %d: %d %s", i,
                      posts[i].status, posts[i].res.body);
        if (i == POSTS - 1)
            ck_assert_int_eq(written, 2);
        th_response_free(&posts[i].res);
    }
    ck_assert_int_eq(th_daemon_stop(&d), 0);
    PQfinish(l);
    PQfinish(q);
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
    tcase_add_test(tc, cancelled_batch_answers_what_committed);
    tcase_add_test(tc, terminated_batch_answers_what_committed);
    tcase_add_test(tc, lost_commit_is_resolved);
    tcase_add_test(tc, full_queue_refuses_at_once);
    tcase_add_test(tc, http_full_queue_is_503_with_retry_after);
    suite_add_tcase(s, tc);
    return th_run(s);
}
