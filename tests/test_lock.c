/*
 * Tests of events/lock.c on the real PostgreSQL: one holder at a time,
 * holds released one by one or with the connection, a lost connection
 * noticed by es_lock_check, and a server that does not answer.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

#include "harness.h"
#include "lock.h"

/* A key no other test program takes. */
static int64_t
some_key(void)
{
    uint32_t r;

    ck_assert_int_eq(getrandom(&r, sizeof r, 0), (ssize_t)sizeof r);
    return (int64_t)0x6c6f636b00000000LL + r;
}

static es_lock *
lock_new(int64_t key)
{
    es_lock *l = NULL;
    es_error err;

    ck_assert_msg(es_lock_create(&l, th_conninfo(), key, &err) == ES_OK, "%s", err.message);
    return l;
}

static bool
try_take(es_lock *l)
{
    bool held = true;
    es_error err;

    ck_assert_msg(es_lock_try(l, &held, &err) == ES_OK, "%s", err.message);
    return held;
}

/* Takes l within 5 s: a lock released by a closed connection is free
 * only once its server process has ended. */
static bool
take_soon(es_lock *l)
{
    for (int i = 0; i < 500; i++) {
        if (try_take(l))
            return true;
        usleep(10000);
    }
    return false;
}

START_TEST(one_holder_at_a_time)
{
    int64_t key = some_key();
    es_lock *a = lock_new(key), *b = lock_new(key), *other = lock_new(key + 1);
    es_error err;

    ck_assert(try_take(a));
    ck_assert(!try_take(b));
    ck_assert(try_take(other));                 /* another key is another lock */
    ck_assert_int_eq(es_lock_check(a, &err), ES_OK);
    ck_assert(try_take(a));                     /* a second hold */
    es_lock_release(a);
    ck_assert(!try_take(b));
    es_lock_release(a);
    ck_assert(try_take(b));
    ck_assert(!try_take(a));
    es_lock_destroy(b);             /* closing the connection releases, once the server sees it */
    ck_assert(take_soon(a));
    es_lock_destroy(a);
    es_lock_destroy(other);
    es_lock_destroy(NULL);
}
END_TEST

/* Ends the sessions that hold advisory lock key, as a crash or a network
 * cut would; the number ended. */
static int
end_holders(int64_t key)
{
    PGconn *c = PQconnectdb(th_conninfo());
    char k[24];
    const char *values[1] = {k};
    PGresult *r;
    int n;

    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    snprintf(k, sizeof k, "%lld", (long long)key);
    r = PQexecParams(c, "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
                        "WHERE locktype = 'advisory' AND granted "
                        "AND classid::bigint = ($1::bigint >> 32) "
                        "AND objid::bigint = ($1::bigint & 4294967295) AND objsubid = 1",
                     1, NULL, values, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    n = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return n;
}

START_TEST(a_lost_connection_loses_the_lock)
{
    int64_t key = some_key();
    es_lock *a = lock_new(key), *b = lock_new(key);
    es_error err;

    ck_assert(try_take(a));
    ck_assert_int_eq(end_holders(key), 1);
    ck_assert_int_eq(es_lock_check(a, &err), ES_EUNAVAILABLE);
    ck_assert(err.transient);
    ck_assert(take_soon(b));
    ck_assert(!try_take(a));                    /* reconnected, and b holds it now */
    ck_assert_int_eq(es_lock_check(a, &err), ES_OK);
    es_lock_destroy(a);
    es_lock_destroy(b);
}
END_TEST

START_TEST(check_before_any_take_and_when_down)
{
    es_lock *l = NULL, *down = NULL;
    es_error err;
    char conninfo[256];
    bool held = true;

    l = lock_new(some_key());
    ck_assert_int_eq(es_lock_check(l, &err), ES_EUNAVAILABLE);      /* never connected */
    es_lock_release(l);                                             /* a no-op */
    es_lock_destroy(l);

    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%u connect_timeout=2",
             th_free_port());
    ck_assert_int_eq(es_lock_create(&down, conninfo, 1, &err), ES_OK);
    ck_assert_int_eq(es_lock_try(down, &held, &err), ES_EUNAVAILABLE);
    ck_assert(!held);
    ck_assert(err.transient);
    ck_assert_str_eq(err.code, "lock_unavailable");
    ck_assert_int_eq(es_lock_check(down, &err), ES_EUNAVAILABLE);
    es_lock_destroy(down);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("lock");
    TCase *tc = tcase_create("lock");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, one_holder_at_a_time);
    tcase_add_test(tc, a_lost_connection_loses_the_lock);
    tcase_add_test(tc, check_before_any_take_and_when_down);
    suite_add_tcase(s, tc);
    return th_run(s);
}
