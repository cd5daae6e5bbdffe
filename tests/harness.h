/*
 * Shared helpers of the Check test programs: where the test database is,
 * unique names so tests never see each other's streams, and the standard
 * event of the benchmark workload.
 */
#ifndef ES_TEST_HARNESS_H
#define ES_TEST_HARNESS_H

#include <check.h>
#include <stddef.h>

/* Connection string of the migrated test database (ES_TEST_CONNINFO). */
const char *th_conninfo(void);

/* Connection string of a database where tests may create databases
 * (ES_TEST_ADMIN_CONNINFO, else the test database). */
const char *th_admin_conninfo(void);

/* Writes "<prefix>-<random hex>" into out: a name no other run used. */
void th_unique(char *out, size_t size, const char *prefix);

/* Runs suite s in fork mode and returns the process exit status. */
int th_run(Suite *s);

#endif
