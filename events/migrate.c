/*
 * es_migrate (see migrate.h).  The checksum is computed by PostgreSQL
 * (sha256()), so no hashing library is needed here.
 */
#include "migrate.h"

#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"

/* Arbitrary, fixed key of the advisory lock that serialises migrators. */
#define MIGRATE_LOCK_KEY 7316405521

static int
is_migration(const char *name)
{
    size_t n = strlen(name);

    return n > 4 && name[0] >= '0' && name[0] <= '9' &&
           strcmp(name + n - 4, ".sql") == 0;
}

static int
cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *
read_file(const char *path, es_error *err)
{
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    long size;

    if (f == NULL) {
        es_error_set(err, ES_ENOTFOUND, "migration_unreadable", NULL,
                     "could not open \"%s\": %s", path, strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        (text = malloc((size_t)size + 1)) == NULL ||
        fread(text, 1, (size_t)size, f) != (size_t)size) {
        es_error_set(err, ES_EINTERNAL, "migration_unreadable", NULL,
                     "could not read \"%s\"", path);
        free(text);
        fclose(f);
        return NULL;
    }
    text[size] = '\0';
    fclose(f);
    return text;
}

static es_status
exec_ok(PGconn *c, const char *sql, const char *what, es_error *err)
{
    PGresult *r = PQexec(c, sql);
    es_status st = ES_OK;

    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK &&
        PQresultStatus(r) != PGRES_EMPTY_QUERY) {
        char text[200];
        snprintf(text, sizeof text, "%s", PQresultErrorMessage(r));
        text[strcspn(text, "\n")] = '\0';
        st = es_error_set(err, PQstatus(c) == CONNECTION_OK ? ES_EINTERNAL : ES_EUNAVAILABLE,
                          "migration_failed", NULL, "could not %s: %s", what, text);
    }
    PQclear(r);
    return st;
}

/* Applies one file unless it is recorded; checks its checksum if it is. */
static es_status
apply_one(PGconn *c, const char *dir, const char *name, FILE *log, int *applied,
          es_error *err)
{
    char path[4096], what[300], checksum[65];
    const char *values[2];
    char *sql = NULL;
    PGresult *r = NULL;
    es_status st = ES_OK;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    if ((sql = read_file(path, err)) == NULL)
        return err ? err->status : ES_EINTERNAL;
    values[0] = name;
    values[1] = sql;
    r = PQexecParams(c,
                     "SELECT encode(sha256(convert_to($2, 'UTF8')), 'hex'), "
                     "(SELECT checksum FROM es_migrations WHERE name = $1)",
                     2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char text[200];
        snprintf(text, sizeof text, "%s", PQresultErrorMessage(r));
        text[strcspn(text, "\n")] = '\0';
        st = es_error_set(err, PQstatus(c) == CONNECTION_OK ? ES_EINTERNAL : ES_EUNAVAILABLE,
                          "migration_failed", NULL, "could not checksum migration \"%s\": %s",
                          name, text);
        goto done;
    }
    if (!PQgetisnull(r, 0, 1)) {
        if (strcmp(PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1)) != 0)
            st = es_error_set(err, ES_EINVALID, "migration_changed", NULL,
                              "migration \"%s\" was changed after it was applied "
                              "(checksum %.12s, recorded %.12s); add a new migration instead",
                              name, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
        goto done;
    }
    snprintf(what, sizeof what, "apply migration \"%s\"", name);
    if ((st = exec_ok(c, "BEGIN", what, err)) != ES_OK)
        goto done;
    if ((st = exec_ok(c, sql, what, err)) != ES_OK) {
        PQclear(PQexec(c, "ROLLBACK"));
        goto done;
    }
    snprintf(checksum, sizeof checksum, "%s", PQgetvalue(r, 0, 0));
    values[1] = checksum;
    PQclear(r);
    r = PQexecParams(c, "INSERT INTO es_migrations (name, checksum) VALUES ($1, $2)",
                     2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        PQclear(PQexec(c, "ROLLBACK"));
        st = es_error_set(err, ES_EINTERNAL, "migration_failed", NULL,
                          "could not record migration \"%s\"", name);
        goto done;
    }
    if ((st = exec_ok(c, "COMMIT", what, err)) != ES_OK)
        goto done;
    if (log)
        fprintf(log, "applied %s\n", name);
    if (applied)
        (*applied)++;
done:
    PQclear(r);
    free(sql);
    return st;
}

es_status
es_migrate(const char *conninfo, const char *dir, FILE *log, int *applied,
           es_error *err)
{
    PGconn *c = NULL;
    DIR *d = NULL;
    struct dirent *de;
    char **names = NULL, **grown;
    size_t n = 0, cap = 0, i;
    char lock[96];
    es_status st = ES_OK;

    es_error_clear(err);
    if (applied)
        *applied = 0;
    if ((d = opendir(dir)) == NULL)
        return es_error_set(err, ES_ENOTFOUND, "migrations_missing", NULL,
                            "could not open migrations folder \"%s\": %s", dir, strerror(errno));
    while ((de = readdir(d)) != NULL) {
        if (!is_migration(de->d_name))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            if ((grown = realloc(names, cap * sizeof *names)) == NULL) {
                st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not list migrations");
                goto done;
            }
            names = grown;
        }
        if ((names[n] = strdup(de->d_name)) == NULL) {
            st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not list migrations");
            goto done;
        }
        n++;
    }
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_names);

    c = es_pg_connect(conninfo, true);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        st = es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                          "could not connect to the database: %s",
                          c ? PQerrorMessage(c) : "out of memory");
        goto done;
    }
    /* A migration waits at most 10 s for a lock (an ALTER of es_events
     * queued behind a long transaction would stall every append). */
    PQclear(PQexec(c, "SET client_min_messages = warning; SET lock_timeout = '10s'"));
    snprintf(lock, sizeof lock, "SELECT pg_advisory_lock(%lld)", (long long)MIGRATE_LOCK_KEY);
    if ((st = exec_ok(c, lock, "take the migration lock", err)) != ES_OK ||
        (st = exec_ok(c,
                      "CREATE TABLE IF NOT EXISTS es_migrations ("
                      " name text PRIMARY KEY, checksum text NOT NULL,"
                      " applied_at timestamptz NOT NULL DEFAULT now())",
                      "create es_migrations", err)) != ES_OK)
        goto done;
    for (i = 0; i < n; i++)
        if ((st = apply_one(c, dir, names[i], log, applied, err)) != ES_OK)
            break;
done:
    if (c)
        PQfinish(c);    /* also releases the advisory lock */
    if (d)
        closedir(d);
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return st;
}
