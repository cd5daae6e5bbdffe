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
/* The same in one process: for tests that own daemons they kill. */
int th_run_nofork(Suite *s);

/* A daemon started for a test program: its pid and HTTP port. */
typedef struct th_daemon {
    int pid;
    unsigned port;
} th_daemon;

/*
 * Starts the program at path (relative to the build folder given by
 * ES_TEST_BUILD) with extra environment entries ("NAME=value", NULL-
 * terminated) on a free port whose variable is port_var, and waits until
 * GET /healthz answers.  Aborts the test program if it does not.
 */
void th_daemon_start(th_daemon *d, const char *path, const char *port_var,
                     const char *const *env);
/* Stops it with SIGTERM; non-zero (and a note on stderr) unless it
 * exited cleanly with status 0, which under the sanitizers also means no
 * leak or error report. */
int th_daemon_stop(th_daemon *d);
/* Ends it with SIGKILL, as a crash would. */
void th_daemon_kill(th_daemon *d);

/*
 * Access control.  Each test program has one admin token (a random secret
 * made on first use, named "test-admin-<hex>"), which the harness
 * provisions through es_token_create in every database a daemon it
 * starts uses (before the daemon loads its token table) and in every
 * database th_db_create makes.  th_http sends it unless told otherwise.
 */
/* The admin token's secret (provisioned in the test database). */
const char *th_token(void);
/* Provisions the admin token in the database at conninfo (quietly does
 * nothing when that database does not answer). */
void th_token_provision(const char *conninfo);
/* What th_http sends as "Authorization: Bearer <secret>" when the
 * request's own headers carry none: secret, or nothing at all with
 * NULL.  th_http_token(th_token()) restores the default. */
void th_http_token(const char *secret);

/* A response of th_http. */
typedef struct th_response {
    int status;
    char headers[4096];
    char *body;         /* malloc'd, NUL-terminated */
} th_response;

/*
 * One HTTP/1.1 request to 127.0.0.1:port (Connection: close).  headers is
 * extra header lines, each ending in \r\n, or NULL; body may be NULL.
 * Without an Authorization line in headers, the admin token goes along
 * (see th_http_token).
 * Returns the status, 0 on a transport error.
 */
int th_http(unsigned port, const char *method, const char *path, const char *headers,
            const char *body, th_response *res);
void th_response_free(th_response *res);
/* The value of header name in res (copied into out), or NULL. */
const char *th_header(const th_response *res, const char *name, char *out, size_t size);
/* A value of the daemon's /metrics on port, summed over the lines
 * name{...} (or "name value") whose labels contain label ("" any); 0 when
 * there is none, -1 (with the answer on stderr) when /metrics is refused
 * or not answered. */
long long th_metric(unsigned port, const char *name, const char *label);

/* Creates a fresh, migrated database (name "es_t_<hex>") for a test that
 * needs a feed of its own; th_db_drop removes it. */
void th_db_create(char *name, size_t name_size, char *conninfo, size_t conninfo_size);
void th_db_drop(const char *name);

/* A loopback TCP port nothing listens on at the moment. */
unsigned th_free_port(void);

/* Asserts that JetStream stream is the feed of the database at conninfo:
 * message n carries the n-th event (its position and id), none missing,
 * none extra.  Waits up to 60 s for a relay still publishing. */
void th_assert_stream_is_feed(const char *conninfo, const char *stream);

/* Deletes a JetStream stream a test created (ES_NATS_URL); no error if it
 * is gone already. */
void th_stream_delete(const char *stream);

/* Empties the tests' Redis database (ES_REDIS_DB, which must not be 0). */
void th_redis_flush(void);

/* Runs argv[0] from the build folder with extra environment entries and
 * waits; output goes to log (appended) or nowhere.  Returns its exit
 * status (128 + signal when killed). */
int th_program(const char *const *argv, const char *const *env, const char *log);
/* As th_program, with what it printed (standard output and error) in out
 * (cut at size - 1 bytes, NUL-terminated). */
int th_program_output(const char *const *argv, const char *const *env, char *out, size_t size);

/* Runs scripts/servers.sh ACTION SERVER (start, stop, restart; pg, redis,
 * nats) and returns its exit status; what it printed is shown on standard
 * error when it failed, and kept quiet otherwise. */
int th_servers(const char *action, const char *server);

#endif
