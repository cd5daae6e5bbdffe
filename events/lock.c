/*
 * es_lock (see lock.h): pg_try_advisory_lock on a connection of the
 * lock's own.  The key travels as a parameter; the connection is opened
 * by es_lock_try only, since a lock taken on a new connection is a new
 * hold and es_lock_check must notice that the old one was lost.
 *
 * With a lease (es_lock_set_lease), the lock's session carries
 * idle_session_timeout: PostgreSQL ends a session idle that long, and the
 * lock with it, so a holder that stalls (paused, swapped out) loses it to
 * a standby instead of holding it for ever with a connection that still
 * answers at the TCP level.
 */
#include "lock.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pg.h"

struct es_lock {
    PGconn *conn;               /* NULL until the first es_lock_try */
    char *conninfo;
    char key[24];               /* the key as text, a bigint parameter */
    char lease[24];             /* idle_session_timeout in ms, "" for none */
};

es_status
es_lock_create(es_lock **out, const char *conninfo, int64_t key, es_error *err)
{
    es_lock *l;

    *out = NULL;
    es_error_clear(err);
    if ((l = calloc(1, sizeof *l)) == NULL || (l->conninfo = strdup(conninfo)) == NULL) {
        free(l);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a lock");
    }
    snprintf(l->key, sizeof l->key, "%" PRId64, key);
    *out = l;
    return ES_OK;
}

/* err for a lock whose connection failed, with libpq's first line. */
static es_status
unavailable(es_lock *l, const char *what, es_error *err)
{
    char text[256];

    snprintf(text, sizeof text, "%s", l->conn ? PQerrorMessage(l->conn) : "out of memory");
    text[strcspn(text, "\n")] = '\0';
    return es_error_set(err, ES_EUNAVAILABLE, "lock_unavailable", NULL,
                        "could not %s advisory lock %s: %s", what, l->key, text);
}

void
es_lock_set_lease(es_lock *l, long ms)
{
    if (ms > 0)
        snprintf(l->lease, sizeof l->lease, "%ld", ms);
    else
        l->lease[0] = '\0';
}

es_status
es_lock_try(es_lock *l, bool *held, es_error *err)
{
    const char *values[1] = {l->key};
    PGresult *r;
    es_status st = ES_OK;

    *held = false;
    if (l->conn == NULL || PQstatus(l->conn) != CONNECTION_OK) {
        PQfinish(l->conn);
        l->conn = es_pg_connect(l->conninfo, false);
        if (l->conn == NULL || PQstatus(l->conn) != CONNECTION_OK)
            return unavailable(l, "connect for", err);
        if (l->lease[0] != '\0') {
            const char *lv[1] = {l->lease};

            r = es_pg_exec(l->conn, "SELECT set_config('idle_session_timeout', $1, false)", 1,
                           lv, -1, NULL);
            st = PQresultStatus(r) == PGRES_TUPLES_OK ? ES_OK : unavailable(l, "set the lease of", err);
            PQclear(r);
            if (st != ES_OK) {
                PQfinish(l->conn);
                l->conn = NULL;
                return st;
            }
        }
    }
    r = es_pg_exec(l->conn, "SELECT pg_try_advisory_lock($1::bigint)", 1, values, -1, NULL);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        *held = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    else
        st = unavailable(l, "take", err);
    PQclear(r);
    return st;
}

es_status
es_lock_check(es_lock *l, es_error *err)
{
    PGresult *r;
    es_status st = ES_OK;

    if (l->conn == NULL || PQstatus(l->conn) != CONNECTION_OK)
        return unavailable(l, "keep", err);
    r = es_pg_exec(l->conn, "SELECT 1", 0, NULL, -1, NULL);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        st = unavailable(l, "keep", err);
    PQclear(r);
    return st;
}

void
es_lock_release(es_lock *l)
{
    const char *values[1] = {l->key};

    if (l->conn == NULL || PQstatus(l->conn) != CONNECTION_OK)
        return;
    PQclear(es_pg_exec(l->conn, "SELECT pg_advisory_unlock($1::bigint)", 1, values, -1, NULL));
}

void
es_lock_destroy(es_lock *l)
{
    if (l == NULL)
        return;
    PQfinish(l->conn);
    free(l->conninfo);
    free(l);
}
