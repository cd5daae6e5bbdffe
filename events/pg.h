/*
 * PostgreSQL connections with the project's timeouts.  Every connection a
 * program opens goes through es_pg_connect, so a server that does not
 * answer (stopped, hung, partitioned away) is an error after a bounded
 * time instead of a thread stuck for good:
 *
 *   connect      libpq connect_timeout: the whole connection set-up
 *   statement    the server's statement_timeout (and its
 *                idle_in_transaction_session_timeout), for a live server
 *                running a statement too long or a client gone quiet
 *                inside a transaction
 *   answer       the client's own limit on waiting for an answer
 *                (es_pg_wait): the only one that fires when the server
 *                process is stopped, since its kernel still acknowledges
 *                every packet; longer than the statement timeout, so a
 *                live server answers first
 *   keepalives   TCP keepalives and tcp_user_timeout: a peer whose host
 *                or network went away
 *
 * Values come from the environment (docs/OPERATIONS.md lists them), read
 * once; a program that runs long operator work (esctl) asks for the tool
 * defaults first: no statement or answer limit unless one is set.
 */
#ifndef ES_PG_H
#define ES_PG_H

#include <libpq-fe.h>
#include <stdbool.h>

typedef struct es_pg_timeouts {
    int connect_s;          /* ES_PG_CONNECT_TIMEOUT_S, libpq's connect_timeout (>= 2) */
    int statement_ms;       /* ES_PG_STATEMENT_TIMEOUT_MS; 0: none */
    int idle_tx_ms;         /* ES_PG_IDLE_TX_TIMEOUT_MS; 0: none */
    int answer_ms;          /* ES_PG_ANSWER_TIMEOUT_MS; 0: wait for ever */
    int keepalive_s;        /* ES_PG_KEEPALIVE_S: idle seconds before the first probe */
    int user_timeout_ms;    /* ES_PG_TCP_USER_TIMEOUT_MS; 0: the kernel's */
} es_pg_timeouts;

/* Daemon defaults. */
#define ES_PG_CONNECT_TIMEOUT_S_DEFAULT 5
#define ES_PG_STATEMENT_TIMEOUT_MS_DEFAULT 30000
#define ES_PG_IDLE_TX_TIMEOUT_MS_DEFAULT 60000
#define ES_PG_ANSWER_TIMEOUT_MS_DEFAULT 35000
#define ES_PG_KEEPALIVE_S_DEFAULT 10
#define ES_PG_TCP_USER_TIMEOUT_MS_DEFAULT 30000

/*
 * For programs an operator runs (esctl): before the first connection,
 * makes the statement and answer timeouts default to none (a verify or a
 * rebuild of a large store may run long).  The variables still apply.
 */
void es_pg_timeouts_for_tools(void);

/* The timeouts in force, read from the environment on first use (a
 * malformed value ends the program with status 2, as es_env_long). */
const es_pg_timeouts *es_pg_timeouts_get(void);

/*
 * Connects to conninfo (libpq keyword or URI form) with the timeouts; a
 * parameter conninfo names itself (connect_timeout, options with -c
 * statement_timeout=...) wins.  long_work: a connection for work that may
 * run long by design (migrations): no statement or answer limit.  Returns
 * what PQconnectdb would (check PQstatus; NULL only when out of memory).
 */
PGconn *es_pg_connect(const char *conninfo, bool long_work);

/*
 * Waits until the connection's pending answer can be read without
 * blocking (PQisBusy false), for at most timeout_ms (< 0: the configured
 * answer timeout; 0: for ever).  Returns true when it can; false when the
 * time ran out or the connection failed: then the connection is shut
 * down (every later call on it fails at once, PQstatus is bad) and
 * *timed_out (if not NULL) says whether time ran out.
 */
bool es_pg_wait(PGconn *c, int timeout_ms, bool *timed_out);

/*
 * Whether an idle connection (no statement sent and unanswered) has been
 * closed by the server or by a proxy in between: a server session ended
 * (a failover, pg_terminate_backend, a restart) leaves its client a
 * socket that looks fine until the next statement fails on it.  Looks
 * without blocking; anything the server sent meanwhile (a notice, a
 * notification, its last FATAL message) is read into libpq.  True also
 * when PQstatus is already bad; the caller then makes a new connection,
 * with nothing in doubt since nothing was sent on the closed one.
 */
bool es_pg_idle_closed(PGconn *c);

/* PQgetResult after es_pg_wait: NULL when the wait failed (or no more
 * results). */
PGresult *es_pg_result(PGconn *c, int timeout_ms, bool *timed_out);

/* After a query was sent: its results, the last one kept (an error before
 * it wins), as PQexec does.  NULL when nothing came (the wait failed). */
PGresult *es_pg_last_result(PGconn *c, int timeout_ms, bool *timed_out);

/*
 * PQexecParams (text parameters and results) with the answer limit:
 * sends, waits, returns the last result as PQexec does.  NULL when it
 * could not send or the wait failed (the connection is then bad).
 */
PGresult *es_pg_exec(PGconn *c, const char *sql, int nparams, const char *const *values,
                     int timeout_ms, bool *timed_out);

/*
 * As PQexecParams (text parameters and results, waiting as it does), but
 * sql runs as a statement prepared once per connection: the server parses
 * and plans it at its first run on c, then reuses that.  For statements a
 * program runs many times on a long-lived connection; one it runs once
 * costs a round trip more.  The statement is named after a hash of sql;
 * the connection remembers (libpq instance data, dropped with it or a
 * PQreset) which it prepared.  NULL only when out of memory.
 */
PGresult *es_pg_exec_cached(PGconn *c, const char *sql, int nparams, const char *const *values);

#endif
