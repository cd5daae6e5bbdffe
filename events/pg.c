/*
 * PostgreSQL connections with the project's timeouts (see pg.h).
 *
 * The server-side limits travel in the startup packet (options "-c
 * statement_timeout=..."), so they cost no round trip; the client's
 * answer limit is a poll on the socket with a deadline, and giving up
 * shuts the socket down, which makes libpq see a lost connection: every
 * caller's existing "connection lost" path (503 store_unavailable) then
 * applies as it is.
 */
#include "pg.h"

#include <libpq-events.h>

#include "env.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool for_tools;
static es_pg_timeouts config;

void
es_pg_timeouts_for_tools(void)
{
    for_tools = true;
}

static void
load(void)
{
    config.connect_s = (int)es_env_long(NULL, "ES_PG_CONNECT_TIMEOUT_S",
                                        ES_PG_CONNECT_TIMEOUT_S_DEFAULT, 2, 3600);
    config.statement_ms = (int)es_env_long(NULL, "ES_PG_STATEMENT_TIMEOUT_MS",
                                           for_tools ? 0 : ES_PG_STATEMENT_TIMEOUT_MS_DEFAULT,
                                           0, 86400000);
    config.idle_tx_ms = (int)es_env_long(NULL, "ES_PG_IDLE_TX_TIMEOUT_MS",
                                         ES_PG_IDLE_TX_TIMEOUT_MS_DEFAULT, 0, 86400000);
    config.answer_ms = (int)es_env_long(NULL, "ES_PG_ANSWER_TIMEOUT_MS",
                                        for_tools ? 0 : ES_PG_ANSWER_TIMEOUT_MS_DEFAULT, 0,
                                        86400000);
    config.keepalive_s = (int)es_env_long(NULL, "ES_PG_KEEPALIVE_S", ES_PG_KEEPALIVE_S_DEFAULT,
                                          1, 3600);
    config.user_timeout_ms = (int)es_env_long(NULL, "ES_PG_TCP_USER_TIMEOUT_MS",
                                              ES_PG_TCP_USER_TIMEOUT_MS_DEFAULT, 0, 86400000);
}

const es_pg_timeouts *
es_pg_timeouts_get(void)
{
    pthread_once(&once, load);
    return &config;
}

/* The options conninfo sets itself ("" if none), into out. */
static void
own_options(const char *conninfo, char *out, size_t size)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL), *o;

    out[0] = '\0';
    for (o = opts; o != NULL && o->keyword != NULL; o++)
        if (strcmp(o->keyword, "options") == 0 && o->val != NULL)
            snprintf(out, size, "%s", o->val);
    PQconninfoFree(opts);
}

PGconn *
es_pg_connect(const char *conninfo, bool long_work)
{
    const es_pg_timeouts *t = es_pg_timeouts_get();
    char connect[16], idle[16], interval[16], user[16], options[1024], theirs[768];
    int statement = long_work ? 0 : t->statement_ms;
    /* Before dbname: conninfo may override them.  options after it: ours
     * and then conninfo's own, so a -c it gives wins over ours. */
    const char *keys[] = {"connect_timeout", "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                          "dbname", "options", NULL};
    const char *values[] = {connect, "1", idle, interval, "3", user, conninfo, options, NULL};

    snprintf(connect, sizeof connect, "%d", t->connect_s);
    snprintf(idle, sizeof idle, "%d", t->keepalive_s);
    snprintf(interval, sizeof interval, "%d", t->keepalive_s / 3 > 0 ? t->keepalive_s / 3 : 1);
    snprintf(user, sizeof user, "%d", t->user_timeout_ms);
    own_options(conninfo, theirs, sizeof theirs);
    snprintf(options, sizeof options, "-c statement_timeout=%d -c idle_in_transaction_session_timeout=%d%s%s",
             statement, long_work ? 0 : t->idle_tx_ms, theirs[0] ? " " : "", theirs);
    return PQconnectdbParams(keys, values, 1);
}

static long long
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool
es_pg_wait(PGconn *c, int timeout_ms, bool *timed_out)
{
    long long deadline;
    int flushed;

    if (timed_out)
        *timed_out = false;
    if (timeout_ms < 0)
        timeout_ms = es_pg_timeouts_get()->answer_ms;
    deadline = -1;              /* read the clock only once a wait is needed */
    for (;;) {
        struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
        long long left = -1;
        int n;

        if (PQstatus(c) != CONNECTION_OK || p.fd < 0)
            return false;
        if ((flushed = PQflush(c)) < 0)
            return false;
        if (flushed == 0 && !PQisBusy(c))
            return true;
        if (flushed == 1)
            p.events |= POLLOUT;
        if (timeout_ms > 0) {
            if (deadline < 0)
                deadline = now_ms() + timeout_ms;
            if ((left = deadline - now_ms()) <= 0)
                break;
        }
        n = poll(&p, 1, (int)left);
        if (n < 0 && errno != EINTR)
            return false;
        if (n > 0 && (p.revents & (POLLIN | POLLERR | POLLHUP)) && PQconsumeInput(c) != 1)
            return false;
    }
    /* No answer in time: the server may be stopped with its kernel still
     * acknowledging.  Shut the socket, so libpq reports a lost
     * connection at once on every later call. */
    shutdown(PQsocket(c), SHUT_RDWR);
    (void)PQconsumeInput(c);
    if (timed_out)
        *timed_out = true;
    return false;
}

bool
es_pg_idle_closed(PGconn *c)
{
    struct pollfd p = {.fd = PQsocket(c), .events = POLLIN | POLLRDHUP};

    if (PQstatus(c) != CONNECTION_OK || p.fd < 0)
        return true;
    if (poll(&p, 1, 0) <= 0)
        return false;           /* nothing came: as good as it was */
    /* POLLRDHUP: the peer's FIN is in, whatever it sent before it */
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
        return true;
    return PQconsumeInput(c) != 1 || PQstatus(c) != CONNECTION_OK;
}

PGresult *
es_pg_result(PGconn *c, int timeout_ms, bool *timed_out)
{
    (void)es_pg_wait(c, timeout_ms, timed_out);
    /* after a failed wait this does not block: the socket is shut */
    return PQgetResult(c);
}

PGresult *
es_pg_last_result(PGconn *c, int timeout_ms, bool *timed_out)
{
    PGresult *last = NULL, *r;
    bool late = false;

    if (timed_out)
        *timed_out = false;
    while ((r = es_pg_result(c, timeout_ms, &late)) != NULL) {
        ExecStatusType st = PQresultStatus(r);

        if (last != NULL && PQresultStatus(last) == PGRES_FATAL_ERROR) {
            PQclear(r);         /* an error is what the caller must see */
        } else {
            PQclear(last);
            last = r;
        }
        if (timed_out && late)
            *timed_out = true;
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH ||
            PQstatus(c) == CONNECTION_BAD)
            break;
    }
    if (timed_out && late)
        *timed_out = true;
    return last;
}

PGresult *
es_pg_exec(PGconn *c, const char *sql, int nparams, const char *const *values, int timeout_ms,
           bool *timed_out)
{
    if (timed_out)
        *timed_out = false;
    if (PQsendQueryParams(c, sql, nparams, NULL, values, NULL, NULL, 0) != 1)
        return NULL;
    return es_pg_last_result(c, timeout_ms, timed_out);
}

/* ---- statements prepared once per connection ---------------------------- */

typedef struct prepared_set {
    char **texts;               /* of the statements prepared on this connection */
    uint64_t *hashes;           /* their hashes, looked at first */
    size_t n, cap;
} prepared_set;

static void
prepared_clear(prepared_set *set)
{
    for (size_t i = 0; i < set->n; i++)
        free(set->texts[i]);
    set->n = 0;
}

static int
prepared_event(PGEventId id, void *info, void *pass)
{
    (void)pass;
    if (id == PGEVT_CONNRESET) {        /* a new session: nothing prepared */
        prepared_set *set = PQinstanceData(((PGEventConnReset *)info)->conn, prepared_event);
        if (set != NULL)
            prepared_clear(set);
    } else if (id == PGEVT_CONNDESTROY) {
        prepared_set *set = PQinstanceData(((PGEventConnDestroy *)info)->conn, prepared_event);
        if (set != NULL) {
            prepared_clear(set);
            free(set->texts);
            free(set->hashes);
            free(set);
        }
    }
    return 1;
}

static uint64_t
sql_hash(const char *sql)
{
    uint64_t h = 14695981039346656037ULL;      /* FNV-1a */

    for (const unsigned char *p = (const unsigned char *)sql; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

/* Whether r failed with SQLSTATE state. */
static bool
failed_with(const PGresult *r, const char *state)
{
    const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

    return s != NULL && strcmp(s, state) == 0;
}

/* Remembers sql (hash h) as prepared; false when out of memory. */
static bool
prepared_add(prepared_set *set, const char *sql, uint64_t h)
{
    char *text;

    if (set->n == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 16;
        uint64_t *hashes = realloc(set->hashes, cap * sizeof *hashes);
        char **texts = hashes ? realloc(set->texts, cap * sizeof *texts) : NULL;

        if (hashes)
            set->hashes = hashes;
        if (texts == NULL)
            return false;
        set->texts = texts;
        set->cap = cap;
    }
    if ((text = strdup(sql)) == NULL)
        return false;
    set->texts[set->n] = text;
    set->hashes[set->n++] = h;
    return true;
}

PGresult *
es_pg_exec_cached(PGconn *c, const char *sql, int nparams, const char *const *values)
{
    prepared_set *set = PQinstanceData(c, prepared_event);
    uint64_t h = sql_hash(sql);
    char name[24];
    PGresult *r;
    size_t i;

    if (set == NULL) {
        if ((set = calloc(1, sizeof *set)) == NULL)
            return NULL;
        if (PQregisterEventProc(c, prepared_event, "es_pg prepared", NULL) != 1 ||
            PQsetInstanceData(c, prepared_event, set) != 1) {
            free(set);
            return PQexecParams(c, sql, nparams, NULL, values, NULL, NULL, 0);
        }
    }
    snprintf(name, sizeof name, "es_%016llx", (unsigned long long)h);
    for (i = 0; i < set->n && (set->hashes[i] != h || strcmp(set->texts[i], sql) != 0); i++)
        ;
    if (i == set->n) {
        for (i = 0; i < set->n && set->hashes[i] != h; i++)
            ;
        if (i < set->n)     /* another text of the same hash: not prepared */
            return PQexecParams(c, sql, nparams, NULL, values, NULL, NULL, 0);
        r = PQprepare(c, name, sql, nparams, NULL);
        if (failed_with(r, "42P05")) {
            /* the session has one of that name (a prepare whose answer was
             * lost to us, or one forgotten below): made anew */
            char text[40];

            PQclear(r);
            snprintf(text, sizeof text, "DEALLOCATE %s", name);
            PQclear(PQexec(c, text));
            r = PQprepare(c, name, sql, nparams, NULL);
        }
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            return r;           /* the error, as PQexecParams would answer it */
        PQclear(r);
        if (!prepared_add(set, sql, h))
            return PQexecParams(c, sql, nparams, NULL, values, NULL, NULL, 0);
        i = set->n - 1;
    }
    r = PQexecPrepared(c, name, nparams, values, NULL, NULL, 0);
    /* the session lost it (DEALLOCATE, DISCARD ALL) or its result type
     * changed (a migration): prepared again at the next call */
    if (failed_with(r, "26000") || failed_with(r, "0A000")) {
        free(set->texts[i]);
        set->texts[i] = set->texts[set->n - 1];
        set->hashes[i] = set->hashes[set->n - 1];
        set->n--;
    }
    return r;
}
