/*
 * Integration tests of events/migrate.c on a database of their own:
 * pending files applied in order, a second run is a no-op, a changed
 * applied file is refused, a failing file leaves nothing behind.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "migrate.h"

static char dbname[64], dir[128], conninfo[512];

static void
admin_exec(const char *fmt, const char *arg)
{
    char sql[256];
    PGconn *c = PQconnectdb(th_admin_conninfo());
    PGresult *r;

    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    snprintf(sql, sizeof sql, fmt, arg);
    r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
}

static void
write_file(const char *name, const char *text)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* Runs sql on the migrated database; returns the first value or "". */
static char *
query(const char *sql)
{
    static char out[128];
    PGconn *c = PQconnectdb(conninfo);
    PGresult *r = PQexec(c, sql);

    out[0] = '\0';
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
        snprintf(out, sizeof out, "%s", PQgetvalue(r, 0, 0));
    else if (PQresultStatus(r) != PGRES_TUPLES_OK)
        snprintf(out, sizeof out, "error");
    PQclear(r);
    PQfinish(c);
    return out;
}

static void
setup(void)
{
    const char *base = th_admin_conninfo();
    const char *p;

    th_unique(dbname, sizeof dbname, "es_mig");
    for (char *c = dbname; *c; c++)
        if (*c == '-')
            *c = '_';
    admin_exec("CREATE DATABASE %s", dbname);
    /* conninfo: the admin one with our dbname appended (later wins) */
    p = base;
    snprintf(conninfo, sizeof conninfo, "%s dbname=%s", p, dbname);
    snprintf(dir, sizeof dir, "/tmp/es-mig-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void
teardown(void)
{
    char cmd[256];

    admin_exec("DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(applies_in_order_once)
{
    es_error err;
    int applied = -1;

    write_file("002_b.sql", "INSERT INTO t VALUES (2);");
    write_file("001_a.sql", "CREATE TABLE t (v int); INSERT INTO t VALUES (1);");
    write_file("README.md", "not a migration");
    ck_assert_int_eq(es_migrate(conninfo, dir, NULL, &applied, &err), ES_OK);
    ck_assert_int_eq(applied, 2);
    ck_assert_str_eq(query("SELECT string_agg(v::text, ',' ORDER BY v) FROM t"), "1,2");
    ck_assert_str_eq(query("SELECT count(*) FROM es_migrations"), "2");

    ck_assert_int_eq(es_migrate(conninfo, dir, NULL, &applied, &err), ES_OK);
    ck_assert_int_eq(applied, 0);
    ck_assert_str_eq(query("SELECT count(*) FROM t"), "2");

    write_file("003_c.sql", "INSERT INTO t VALUES (3);");
    ck_assert_int_eq(es_migrate(conninfo, dir, NULL, &applied, &err), ES_OK);
    ck_assert_int_eq(applied, 1);
    ck_assert_str_eq(query("SELECT count(*) FROM t"), "3");
}
END_TEST

START_TEST(changed_file_is_refused)
{
    es_error err;
    int applied;

    write_file("001_a.sql", "CREATE TABLE t (v int);");
    ck_assert_int_eq(es_migrate(conninfo, dir, NULL, &applied, &err), ES_OK);
    write_file("001_a.sql", "CREATE TABLE t (v bigint);");
    write_file("002_b.sql", "CREATE TABLE u (v int);");
    ck_assert_int_eq(es_migrate(conninfo, dir, NULL, &applied, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "migration_changed");
    ck_assert_ptr_nonnull(strstr(err.message, "001_a.sql"));
    ck_assert_str_eq(query("SELECT count(*) FROM es_migrations"), "1");
}
END_TEST

START_TEST(failing_file_leaves_nothing)
{
    es_error err;
    int applied;

    write_file("001_a.sql", "CREATE TABLE t (v int);");
    write_file("002_bad.sql", "CREATE TABLE u (v int); SELECT 1/0;");
    write_file("003_c.sql", "CREATE TABLE w (v int);");
    ck_assert_int_eq(es_migrate(conninfo, dir, NULL, &applied, &err), ES_EINTERNAL);
    ck_assert_int_eq(applied, 1);
    ck_assert_ptr_nonnull(strstr(err.message, "002_bad.sql"));
    ck_assert_str_eq(query("SELECT count(*) FROM pg_tables WHERE tablename IN ('u','w')"), "0");
    ck_assert_str_eq(query("SELECT string_agg(name, ',') FROM es_migrations"), "001_a.sql");
}
END_TEST

START_TEST(project_migrations_apply)
{
    const char *project = getenv("ES_TEST_MIGRATIONS");
    es_error err;
    int applied;

    ck_assert_ptr_nonnull(project);
    ck_assert_int_eq(es_migrate(conninfo, project, NULL, &applied, &err), ES_OK);
    ck_assert_int_gt(applied, 0);
    ck_assert_int_eq(es_migrate(conninfo, project, NULL, &applied, &err), ES_OK);
    ck_assert_int_eq(applied, 0);
    ck_assert_str_eq(query("SELECT count(*) FROM es_events"), "0");
}
END_TEST

START_TEST(errors)
{
    es_error err;
    int applied;

    ck_assert_int_eq(es_migrate(conninfo, "/nonexistent-folder", NULL, &applied, &err),
                     ES_ENOTFOUND);
    ck_assert_str_eq(err.code, "migrations_missing");
    ck_assert_int_eq(es_migrate("host=127.0.0.1 port=1 connect_timeout=2", dir, NULL, &applied, &err),
                     ES_EUNAVAILABLE);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("migrate");
    TCase *tc = tcase_create("migrate");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, applies_in_order_once);
    tcase_add_test(tc, changed_file_is_refused);
    tcase_add_test(tc, failing_file_leaves_nothing);
    tcase_add_test(tc, project_migrations_apply);
    tcase_add_test(tc, errors);
    suite_add_tcase(s, tc);
    return th_run(s);
}
