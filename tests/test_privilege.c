/*
 * Least privilege inside, tried on the real servers with each program's
 * own credentials (the file scripts/servers.sh writes, ES_CREDENTIALS):
 * no way in without a password; no daemon role may UPDATE, DELETE or
 * TRUNCATE the event table; only the relay publishes into the events'
 * subjects; the query service cannot write to Redis.  Then the five
 * daemons run with their own credentials through a whole command ->
 * feed -> read model -> query round, and no password may appear in their
 * logs or on their /metrics.
 */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <nats/nats.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "store.h"

/* The identities of the credentials file, the administrator first. */
static const char *const users[] = {"es_admin", "es_command", "es_relay", "es_projector",
                                    "es_query", "es_saga",  "esctl"};
#define NUSERS (sizeof users / sizeof *users)
static char passwords[NUSERS][64];

/* The daemon roles, which must never change history. */
static const char *const daemon_roles[] = {"es_command", "es_relay", "es_projector",
                                           "es_query",   "es_saga",  "esctl"};

/* Names test_privilege runs the daemons with: the second set of names the
 * NATS permissions of scripts/servers.sh are written for. */
#define T_STREAM "ES_TEST"
#define T_EVENTS "es_test.events"

static const char *
password_of(const char *user)
{
    for (size_t i = 0; i < NUSERS; i++)
        if (strcmp(users[i], user) == 0)
            return passwords[i];
    ck_abort_msg("no password for %s", user);
    return NULL;
}

static void
load_credentials(void)
{
    const char *path = getenv("ES_CREDENTIALS");
    char line[256];
    FILE *f;

    if (path == NULL || (f = fopen(path, "r")) == NULL) {
        fprintf(stderr, "ES_CREDENTIALS does not name a readable credentials file: run the "
                        "tests with scripts/test.sh\n");
        exit(2);
    }
    while (fgets(line, sizeof line, f) != NULL) {
        for (size_t i = 0; i < NUSERS; i++) {
            size_t n = strlen(users[i]);
            if (strncmp(line, users[i], n) == 0 && line[n] == '=') {
                snprintf(passwords[i], sizeof passwords[i], "%s", line + n + 1);
                passwords[i][strcspn(passwords[i], "\r\n")] = '\0';
            }
        }
    }
    fclose(f);
    for (size_t i = 0; i < NUSERS; i++)
        if (strlen(passwords[i]) < 16) {
            fprintf(stderr, "%s has no password for %s\n", path, users[i]);
            exit(2);
        }
}

/* ---- PostgreSQL ------------------------------------------------------------ */

/* The test database as role (password NULL: none at all; libpq takes the
 * last of a repeated keyword, and PGPASSWORD is ignored when one is given). */
static PGconn *
pg_as(const char *role, const char *password)
{
    char conninfo[512];

    snprintf(conninfo, sizeof conninfo, "%s user=%s password='%s'", th_conninfo(), role,
             password ? password : "");
    return PQconnectdb(conninfo);
}

/* Runs sql on c; returns the SQLSTATE of its error, or "" when it worked. */
static const char *
sqlstate(PGconn *c, const char *sql, char *out, size_t size)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);

    snprintf(out, size, "%s", st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? "" : code ? code : "?");
    PQclear(r);
    return out;
}

/* One append to stream as the identity of conninfo_extra; whether it worked. */
static bool
append_one(const char *conninfo_extra, const char *stream)
{
    char conninfo[512];
    es_store *s = NULL;
    es_error err;
    es_new_event e = {NULL, "PrivilegeProbed", 1, "{}", NULL};
    es_append_req req = {stream, ES_EXPECT_ANY, &e, 1};
    es_append_result res;
    bool ok;

    snprintf(conninfo, sizeof conninfo, "%s %s", th_conninfo(), conninfo_extra);
    ck_assert_msg(es_store_open(&s, conninfo, &err) == ES_OK, "%s", err.message);
    ok = es_store_append(s, &req, &res) == ES_OK;
    es_store_close(s);
    return ok;
}

START_TEST(postgres_wants_a_password)
{
    PGconn *c = pg_as("postgres", NULL);

    ck_assert_int_eq(PQstatus(c), CONNECTION_BAD);
    ck_assert_ptr_nonnull(strstr(PQerrorMessage(c), "password"));
    PQfinish(c);
    c = pg_as("es_command", "not-the-password");
    ck_assert_int_eq(PQstatus(c), CONNECTION_BAD);
    ck_assert_ptr_nonnull(strstr(PQerrorMessage(c), "password authentication failed"));
    PQfinish(c);
}
END_TEST

START_TEST(no_daemon_role_changes_or_removes_events)
{
    static const char *const attempts[] = {
        "DELETE FROM es_events",
        "UPDATE es_events SET type = 'Rewritten'",
        "TRUNCATE es_events",
        "TRUNCATE es_events CASCADE",
    };
    char stream[64], state[8], extra[160];
    PGconn *admin;
    PGresult *r;

    /* there is something to lose */
    th_unique(stream, sizeof stream, "priv");
    ck_assert(append_one("", stream));
    for (size_t i = 0; i < sizeof daemon_roles / sizeof *daemon_roles; i++) {
        PGconn *c = pg_as(daemon_roles[i], password_of(daemon_roles[i]));

        ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s: %s", daemon_roles[i], PQerrorMessage(c));
        for (size_t k = 0; k < sizeof attempts / sizeof *attempts; k++)
            ck_assert_msg(strcmp(sqlstate(c, attempts[k], state, sizeof state), "42501") == 0,
                          "%s as %s: SQLSTATE \"%s\", wanted 42501 (insufficient privilege)",
                          attempts[k], daemon_roles[i], state);
        PQfinish(c);
    }
    admin = PQconnectdb(th_conninfo());
    r = PQexecParams(admin, "SELECT count(*) FROM es_events WHERE stream_id = $1", 1, NULL,
                     (const char *const[]){stream}, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    PQfinish(admin);

    /* the writers append; the readers may not */
    for (size_t i = 0; i < sizeof daemon_roles / sizeof *daemon_roles; i++) {
        bool writer = strcmp(daemon_roles[i], "es_command") == 0 ||
                      strcmp(daemon_roles[i], "es_saga") == 0 ||
                      strcmp(daemon_roles[i], "esctl") == 0;

        snprintf(extra, sizeof extra, "user=%s password=%s", daemon_roles[i],
                 password_of(daemon_roles[i]));
        ck_assert_msg(append_one(extra, stream) == writer, "append as %s: %s, wanted %s",
                      daemon_roles[i], writer ? "refused" : "done", writer ? "done" : "refused");
    }
    {
        PGconn *c = pg_as("es_query", password_of("es_query"));
        ck_assert_str_eq(sqlstate(c, "SELECT 1 FROM es_events LIMIT 1", state, sizeof state),
                         "42501");
        PQfinish(c);
    }
}
END_TEST

/* ---- NATS ----------------------------------------------------------------- */

static _Atomic int refused;

static void
on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    if (err == NATS_NOT_PERMITTED)
        atomic_store(&refused, 1);
}

/* nats://user:password@host:port of ES_NATS_URL's server (user NULL: none). */
static void
nats_url_as(const char *user, char *out, size_t size)
{
    const char *url = getenv("ES_NATS_URL"), *at = strchr(url, '@');
    const char *hostport = at ? at + 1 : url + strlen("nats://");

    if (user)
        snprintf(out, size, "nats://%s:%s@%s", user, password_of(user), hostport);
    else
        snprintf(out, size, "nats://%s", hostport);
}

static natsConnection *
nats_as(const char *user)
{
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    char url[256];

    nats_url_as(user, url, sizeof url);
    ck_assert_int_eq(natsOptions_Create(&o), NATS_OK);
    natsOptions_SetURL(o, url);
    natsOptions_SetErrorHandler(o, on_error, NULL);
    ck_assert_int_eq(natsConnection_Connect(&nc, o), NATS_OK);
    natsOptions_Destroy(o);
    return nc;
}

START_TEST(nats_wants_credentials)
{
    natsConnection *nc = NULL;
    char url[256];

    nats_url_as(NULL, url, sizeof url);
    ck_assert_int_ne(natsConnection_ConnectTo(&nc, url), NATS_OK);
    ck_assert_ptr_null(nc);
}
END_TEST

/* The last sequence of stream, through the administrator (0: none). */
static uint64_t
stream_last(const char *stream)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    uint64_t last = 0;

    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) == NATS_OK)
        last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return last;
}

START_TEST(only_the_relay_publishes_events)
{
    static const char *const others[] = {"es_command", "es_projector", "es_query", "es_saga",
                                         "esctl"};
    natsConnection *nc;
    jsCtx *js = NULL;
    jsStreamConfig cfg;
    const char *subj[] = {T_EVENTS ".>"};
    jsErrCode jerr = 0;
    uint64_t before;

    /* the stream exists, as the relay makes it */
    nc = nats_as("es_relay");
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    jsStreamConfig_Init(&cfg);
    cfg.Name = T_STREAM;
    cfg.Subjects = subj;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_MemoryStorage;
    if (stream_last(T_STREAM) == 0)
        (void)js_AddStream(NULL, js, &cfg, NULL, &jerr);
    ck_assert_int_eq(js_Publish(NULL, js, T_EVENTS ".priv.Probed", "{}", 2, NULL, &jerr), NATS_OK);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    before = stream_last(T_STREAM);
    ck_assert_uint_ge(before, 1);

    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        atomic_store(&refused, 0);
        nc = nats_as(others[i]);
        ck_assert_int_eq(natsConnection_PublishString(nc, T_EVENTS ".priv.Forged", "{}"), NATS_OK);
        ck_assert_int_eq(natsConnection_PublishString(nc, "es.events.priv.Forged", "{}"), NATS_OK);
        (void)natsConnection_FlushTimeout(nc, 2000);
        for (int k = 0; k < 100 && !atomic_load(&refused); k++)
            usleep(20 * 1000);
        ck_assert_msg(atomic_load(&refused), "%s could publish into the events' subjects",
                      others[i]);
        natsConnection_Destroy(nc);
    }
    ck_assert_uint_eq(stream_last(T_STREAM), before);

    /* and no one but es-command hears the commands */
    atomic_store(&refused, 0);
    nc = nats_as("es_query");
    {
        natsSubscription *sub = NULL;
        ck_assert_int_eq(natsConnection_SubscribeSync(&sub, nc, "cmd.>"), NATS_OK);
        (void)natsConnection_FlushTimeout(nc, 2000);
        for (int k = 0; k < 100 && !atomic_load(&refused); k++)
            usleep(20 * 1000);
        ck_assert_msg(atomic_load(&refused), "es_query could subscribe to the commands");
        natsSubscription_Destroy(sub);
    }
    natsConnection_Destroy(nc);
}
END_TEST

/* ---- Redis ---------------------------------------------------------------- */

static redisContext *
redis_as(const char *user)
{
    const char *port = getenv("ES_REDIS_PORT");
    redisContext *c = redisConnect(getenv("ES_REDIS_HOST") ? getenv("ES_REDIS_HOST") : "127.0.0.1",
                                   port ? atoi(port) : 16379);
    redisReply *r;

    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(c->err, 0);
    if (user) {
        r = redisCommand(c, "AUTH %s %s", user, password_of(user));
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(r->type, REDIS_REPLY_STATUS);
        freeReplyObject(r);
    }
    r = redisCommand(c, "SELECT %s", getenv("ES_REDIS_DB") ? getenv("ES_REDIS_DB") : "1");
    freeReplyObject(r);
    return c;
}

/* The error Redis answers to the command (a fresh "" when it worked). */
static void
redis_expect_error(redisContext *c, const char *prefix, const char *what, const char *fmt, ...)
{
    redisReply *r;
    va_list ap;

    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    ck_assert_ptr_nonnull(r);
    ck_assert_msg(r->type == REDIS_REPLY_ERROR && strncmp(r->str, prefix, strlen(prefix)) == 0,
                  "%s: wanted an error %s..., got type %d %s", what, prefix, r->type,
                  r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS ? r->str : "");
    freeReplyObject(r);
}

START_TEST(redis_default_user_is_off)
{
    redisContext *c = redis_as(NULL);

    redis_expect_error(c, "NOAUTH", "PING without AUTH", "PING");
    redis_expect_error(c, "WRONGPASS", "AUTH as default", "AUTH default %s", "");
    redisFree(c);
}
END_TEST

START_TEST(redis_query_only_reads)
{
    redisContext *admin = redis_as("es_admin"), *c = redis_as("es_query");
    redisReply *r;

    freeReplyObject(redisCommand(admin, "SET rm:privprobe:x before"));
    redis_expect_error(c, "NOPERM", "SET as es_query", "SET rm:privprobe:x after");
    redis_expect_error(c, "NOPERM", "HSET as es_query", "HSET rm:privprobe:h a 1");
    redis_expect_error(c, "NOPERM", "DEL as es_query", "DEL rm:privprobe:x");
    redis_expect_error(c, "NOPERM", "FLUSHDB as es_query", "FLUSHDB");
    redis_expect_error(c, "ERR", "a writing script as es_query",
                       "EVAL %s 0", "return redis.call('SET', 'rm:privprobe:x', 'after')");
    redis_expect_error(c, "NOPERM", "PUBLISH as es_query", "PUBLISH rm:privprobe:applied x");
    /* its reads go as MULTI/EXEC: a write queued there is refused too */
    r = redisCommand(c, "MULTI");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redis_expect_error(c, "NOPERM", "SET inside MULTI as es_query", "SET rm:privprobe:x after");
    redis_expect_error(c, "EXECABORT", "EXEC of a write as es_query", "EXEC");
    r = redisCommand(c, "GET rm:privprobe:x");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    ck_assert_str_eq(r->str, "before");
    freeReplyObject(r);
    redisFree(c);

    /* the saga gateways write their streams, not the read models */
    c = redis_as("es_saga");
    redis_expect_error(c, "NOPERM", "SET as es_saga", "SET rm:privprobe:x after");
    r = redisCommand(c, "XADD gateway:privprobe * id 1 body {}");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    freeReplyObject(r);
    redisFree(c);
    freeReplyObject(redisCommand(admin, "DEL rm:privprobe:x gateway:privprobe"));
    redisFree(admin);
}
END_TEST

/* ---- the daemons with their own credentials ---------------------------------- */

static const struct {
    const char *exe, *port_var, *user;
    bool redis;
} progs[] = {
    {"es-command", "ES_COMMAND_PORT", "es_command", false},
    {"es-relay", "ES_RELAY_PORT", "es_relay", false},
    {"es-projector", "ES_PROJECTOR_PORT", "es_projector", true},
    {"es-query", "ES_QUERY_PORT", "es_query", true},
    {"es-saga", "ES_SAGA_PORT", "es_saga", true},
};
#define NPROGS (sizeof progs / sizeof *progs)

/* Whether file path (or string s, when path is NULL) contains any password. */
static const char *
leaked(const char *path, const char *s)
{
    char *text = NULL;
    const char *found = NULL;

    if (path) {
        FILE *f = fopen(path, "r");
        long n;

        ck_assert_msg(f != NULL, "cannot read %s", path);
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        rewind(f);
        text = calloc(1, (size_t)n + 1);
        ck_assert_ptr_nonnull(text);
        ck_assert_int_eq(fread(text, 1, (size_t)n, f), (size_t)n);
        fclose(f);
        s = text;
    }
    for (size_t i = 0; i < NUSERS && found == NULL; i++)
        if (strstr(s, passwords[i]) != NULL)
            found = users[i];
    free(text);
    return found;
}

/* The log of the NATS server of scripts/servers.sh ($ES_RUN_DIR). */
static void
nats_log_path(char *out, size_t size)
{
    const char *run = getenv("ES_RUN_DIR");
    snprintf(out, size, "%s/nats/nats.log", run ? run : ".run");
}

static long
nats_log_size(void)
{
    char path[512];
    FILE *f;
    long n = -1;

    nats_log_path(path, sizeof path);
    if ((f = fopen(path, "r")) != NULL) {
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fclose(f);
    }
    return n;
}

/* The first permissions violation the NATS log reports after offset
 * (malloc'd), or NULL.  Without a readable log (a server not started by
 * scripts/servers.sh) there is nothing to check. */
static char *
nats_log_refusal(long offset)
{
    char path[512], line[1024];
    FILE *f;
    char *found = NULL;

    nats_log_path(path, sizeof path);
    if (offset < 0 || (f = fopen(path, "r")) == NULL)
        return NULL;
    fseek(f, offset, SEEK_SET);
    while (found == NULL && fgets(line, sizeof line, f) != NULL)
        if (strstr(line, "Violation") != NULL || strstr(line, "Authorization Error") != NULL)
            found = strdup(line);
    fclose(f);
    return found;
}

/* es-command's es_command_nats_requests_refused_total. */
static unsigned long long
refused_requests(int port)
{
    th_response r;
    const char *at;
    unsigned long long n = 0;

    ck_assert_int_eq(th_http(port, "GET", "/metrics", NULL, NULL, &r), 200);
    at = strstr(r.body, "\nes_command_nats_requests_refused_total ");
    ck_assert_ptr_nonnull(at);
    n = strtoull(at + strlen("\nes_command_nats_requests_refused_total "), NULL, 10);
    th_response_free(&r);
    return n;
}

/* A reader's identity may make consumers (ordered reads make their own),
 * and a push consumer's deliver subject is the creator's to choose: NATS
 * does not check it against anyone's permissions.  So es_projector can
 * have the server deliver the whole stream onto the commands' subjects,
 * under the server's name.  Those deliveries carry JetStream's ack
 * subject ($JS.ACK...) as their reply, which es-command refuses before
 * reading anything (command/bus.c): none may run as a command.
 * (nats-server 2.9 only starts delivering once a subscription names the
 * deliver subject exactly; es-command's are wildcards, so the test adds
 * an exact one under es-command's identity, as a newer server or a
 * second subscriber could.) */
static void
stream_onto_commands(int command_port)
{
    natsConnection *nc = nats_as("es_projector"), *listener = nats_as("es_command");
    natsSubscription *heard = NULL;
    natsMsg *m = NULL;
    jsCtx *js = NULL;
    jsConsumerConfig cc;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    uint64_t last = stream_last(T_STREAM);
    unsigned long long before = refused_requests(command_port), after = before;

    ck_assert_uint_ge(last, 1);
    ck_assert_int_eq(natsConnection_SubscribeSync(&heard, listener, "es_test.cmd.user.register"),
                     NATS_OK);
    ck_assert_int_eq(natsConnection_FlushTimeout(listener, 2000), NATS_OK);
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    jsConsumerConfig_Init(&cc);
    cc.DeliverSubject = "es_test.cmd.user.register";
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckPolicy = js_AckNone;
    ck_assert_msg(js_AddConsumer(&ci, js, T_STREAM, &cc, NULL, &jerr) == NATS_OK,
                  "es_projector could not make a consumer (%d): the readers need to", (int)jerr);
    /* the server delivers: the exact subscriber hears the first event */
    ck_assert_int_eq(natsSubscription_NextMsg(&m, heard, 5000), NATS_OK);
    ck_assert_ptr_nonnull(natsMsg_GetReply(m));
    ck_assert_msg(strncmp(natsMsg_GetReply(m), "$JS.ACK.", 8) == 0, "a delivery's reply is %s",
                  natsMsg_GetReply(m));
    natsMsg_Destroy(m);
    for (int k = 0; k < 250 && after < before + last; k++) {
        usleep(20 * 1000);
        after = refused_requests(command_port);
    }
    ck_assert_msg(after >= before + last,
                  "es-command refused %llu of the %llu events delivered onto its commands",
                  after - before, (unsigned long long)last);
    /* (a refused request is dropped before its body is read, so counting
     * the refusals is checking that none ran; the stream itself keeps
     * growing meanwhile, with the registration saga's own commands) */
    ck_assert_int_eq(js_DeleteConsumer(js, T_STREAM, ci->Name, NULL, &jerr), NATS_OK);
    jsConsumerInfo_Destroy(ci);
    jsCtx_Destroy(js);
    natsSubscription_Destroy(heard);
    natsConnection_Destroy(listener);
    natsConnection_Destroy(nc);
}

START_TEST(daemons_run_with_their_own_credentials_and_never_show_them)
{
    char dbname[64], conninfo[256];
    long nats_log_at;
    static char envs[NPROGS][8][512];
    const char *env[NPROGS][9];
    static th_daemon d[NPROGS];     /* the harness stops them at exit */
    char tag[32], body[200], path[300], pos[64] = "", logs[NPROGS][600], nurl[256];
    const char *build = getenv("ES_TEST_BUILD") ? getenv("ES_TEST_BUILD") : "build/plain";
    th_response r;
    json_t *j;
    int st = 0;

    /* a database of its own: the relay publishes its whole feed into the
     * fresh stream, which must hold only this test's events */
    th_db_create(dbname, sizeof dbname, conninfo, sizeof conninfo);
    th_stream_delete(T_STREAM);
    for (size_t i = 0; i < NPROGS; i++) {
        int k = 0;

        nats_url_as(progs[i].user, nurl, sizeof nurl);
        snprintf(envs[i][k++], 512, "ES_PG_CONNINFO=%s user=%s password=%s", conninfo,
                 progs[i].user, password_of(progs[i].user));
        snprintf(envs[i][k++], 512, "ES_NATS_URL=%s", nurl);
        snprintf(envs[i][k++], 512, "ES_REDIS_USER=%s", progs[i].redis ? progs[i].user : "");
        snprintf(envs[i][k++], 512, "ES_REDIS_PASSWORD=%s",
                 progs[i].redis ? password_of(progs[i].user) : "");
        snprintf(envs[i][k++], 512, "ES_RELAY_STREAM=" T_STREAM);
        snprintf(envs[i][k++], 512, "ES_RELAY_SUBJECT_PREFIX=" T_EVENTS);
        snprintf(envs[i][k++], 512, "ES_RELAY_WAKE_SUBJECT=es_test.wake");
        snprintf(envs[i][k++], 512, "ES_COMMAND_SUBJECT_PREFIX=es_test.cmd");
        for (int e = 0; e < k; e++)
            env[i][e] = envs[i][e];
        env[i][k] = NULL;
    }
    nats_log_at = nats_log_size();
    /* the administrator's password is the one libpq would take otherwise */
    unsetenv("PGPASSWORD");
    setenv("ES_GATEWAY_NOTIFICATION_TRANSPORT", "null", 1);
    setenv("ES_GATEWAY_EMAIL_TRANSPORT", "null", 1);
    setenv("ES_RELAY_POLL_MS", "20", 1);
    for (size_t i = 0; i < NPROGS; i++) {
        th_daemon_start(&d[i], progs[i].exe, progs[i].port_var, env[i]);
        snprintf(logs[i], sizeof logs[i], "%s/%s.%u.log", build, progs[i].exe, d[i].port);
    }

    /* a whole round: command -> store -> relay -> projector -> query */
    th_unique(tag, sizeof tag, "pv");
    snprintf(body, sizeof body, "{\"email\":\"%s@example.org\",\"name\":\"Priv\"}", tag);
    st = th_http(d[0].port, "POST", "/v1/users", "Content-Type: application/json\r\n", body, &r);
    ck_assert_msg(st == 201, "POST /v1/users as es_command: %d %s", st, r.body ? r.body : "");
    j = json_loads(r.body, 0, NULL);
    snprintf(pos, sizeof pos, "%s", json_string_value(json_object_get(j, "position")));
    snprintf(path, sizeof path, "/v1/users/%s?consistent_with=%s&wait_ms=10000",
             json_string_value(json_object_get(j, "user_id")), pos);
    json_decref(j);
    th_response_free(&r);
    st = th_http(d[3].port, "GET", path, NULL, NULL, &r);
    ck_assert_msg(st == 200, "GET %s from es-query: %d %s", path, st, r.body ? r.body : "");
    th_response_free(&r);
    ck_assert_uint_ge(stream_last(T_STREAM), 1);

    stream_onto_commands(d[0].port);

    for (size_t i = 0; i < NPROGS; i++) {
        const char *who;

        ck_assert_int_eq(th_http(d[i].port, "GET", "/metrics", NULL, NULL, &r), 200);
        who = leaked(NULL, r.body);
        ck_assert_msg(who == NULL, "%s's /metrics shows the password of %s", progs[i].exe, who);
        th_response_free(&r);
    }
    for (size_t i = 0; i < NPROGS; i++)
        ck_assert_int_eq(th_daemon_stop(&d[i]), 0);
    for (size_t i = 0; i < NPROGS; i++) {
        const char *who = leaked(logs[i], NULL);
        ck_assert_msg(who == NULL, "%s's log %s holds the password of %s", progs[i].exe, logs[i],
                      who);
    }
    /* nothing a daemon did was refused: each has all the rights it uses */
    {
        char *refusal = nats_log_refusal(nats_log_at);
        ck_assert_msg(refusal == NULL, "NATS refused a daemon: %s", refusal);
    }
    th_stream_delete(T_STREAM);
    th_db_drop(dbname);
}
END_TEST

int
main(void)
{
    Suite *su = suite_create("privilege");
    TCase *tc = tcase_create("privilege");

    load_credentials();
    th_redis_flush();
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, postgres_wants_a_password);
    tcase_add_test(tc, no_daemon_role_changes_or_removes_events);
    tcase_add_test(tc, nats_wants_credentials);
    tcase_add_test(tc, only_the_relay_publishes_events);
    tcase_add_test(tc, redis_default_user_is_off);
    tcase_add_test(tc, redis_query_only_reads);
    tcase_add_test(tc, daemons_run_with_their_own_credentials_and_never_show_them);
    suite_add_tcase(su, tc);
    return th_run(su);
}
