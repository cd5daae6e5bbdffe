/*
 * Test harness helpers (see harness.h).
 */
#include "harness.h"
#include <signal.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <string.h>
#include <strings.h>

#include "store.h"
#include "token.h"

const char *
th_conninfo(void)
{
    const char *c = getenv("ES_TEST_CONNINFO");

    if (c == NULL || c[0] == '\0') {
        fprintf(stderr, "ES_TEST_CONNINFO is not set: run the tests with scripts/test.sh\n");
        exit(2);
    }
    return c;
}

const char *
th_admin_conninfo(void)
{
    const char *c = getenv("ES_TEST_ADMIN_CONNINFO");

    return c && c[0] ? c : th_conninfo();
}

void
th_unique(char *out, size_t size, const char *prefix)
{
    unsigned char r[8];

    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        abort();
    snprintf(out, size, "%s-%02x%02x%02x%02x%02x%02x%02x%02x", prefix, r[0], r[1], r[2],
             r[3], r[4], r[5], r[6], r[7]);
}

/* ---- the admin token ------------------------------------------------------ */

static char token_name[48], token_secret[ES_TOKEN_SECRET_SIZE];
static char provisioned[8][512];
static size_t nprovisioned;
static bool http_token_set;
static char http_token[ES_TOKEN_SECRET_SIZE];

static void
token_make(void)
{
    unsigned char r[32];

    if (token_secret[0] != '\0')
        return;
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        abort();
    memcpy(token_secret, "es_", 3);
    for (size_t i = 0; i < sizeof r; i++)
        snprintf(token_secret + 3 + 2 * i, 3, "%02x", r[i]);
    th_unique(token_name, sizeof token_name, "test-admin");
}

void
th_token_provision(const char *conninfo)
{
    const char *scopes[] = {"admin"};
    char secret[ES_TOKEN_SECRET_SIZE];
    int64_t expires;
    es_store *st = NULL;
    es_error err;

    token_make();
    for (size_t i = 0; i < nprovisioned; i++)
        if (strcmp(provisioned[i], conninfo) == 0)
            return;
    if (es_store_open(&st, conninfo, &err) != ES_OK)
        return;
    if (es_token_create(st, &(es_token_spec){token_name, scopes, 1, 0, 0, "test-harness",
                                             token_secret},
                        secret, &expires, &err) == ES_OK ||
        err.status == ES_ECONFLICT) {
        if (nprovisioned < sizeof provisioned / sizeof provisioned[0])
            snprintf(provisioned[nprovisioned++], sizeof provisioned[0], "%s", conninfo);
    }
    es_store_close(st);
}

const char *
th_token(void)
{
    th_token_provision(th_conninfo());
    return token_secret;
}

void
th_http_token(const char *secret)
{
    http_token_set = true;
    snprintf(http_token, sizeof http_token, "%s", secret ? secret : "");
}

static int
run_suite(Suite *s, bool fork)
{
    SRunner *sr = srunner_create(s);
    int failed;

    /* A daemon a test kills mid-request must fail that request, not end the
     * test program with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    if (!fork)
        srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

int
th_run(Suite *s)
{
    return run_suite(s, true);
}

int
th_run_nofork(Suite *s)
{
    return run_suite(s, false);
}

/* ---- daemons and HTTP -------------------------------------------------- */

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Daemons this program started: stopped at exit whatever happens. */
static th_daemon *daemons[8];
static size_t ndaemons;
static bool atexit_set;
static pid_t owner;

static void
stop_all(void)
{
    if (getpid() != owner)      /* a forked test child exits too */
        return;
    for (size_t i = 0; i < ndaemons; i++)
        (void)th_daemon_stop(daemons[i]);
}

unsigned
th_free_port(void)
{
    struct sockaddr_in a = {0};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    unsigned port;

    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        abort();
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

void
th_daemon_start(th_daemon *d, const char *path, const char *port_var, const char *const *env)
{
    const char *build = getenv("ES_TEST_BUILD");
    char exe[512], portenv[64];
    th_response r;
    pid_t pid, parent;

    snprintf(exe, sizeof exe, "%s/%s", build ? build : "build/plain", path);
    {
        /* the token first: the daemon loads the table as it starts */
        const char *db = getenv("ES_PG_CONNINFO");
        for (size_t i = 0; env && env[i]; i++)
            if (strncmp(env[i], "ES_PG_CONNINFO=", 15) == 0)
                db = env[i] + 15;
        th_token_provision(db && db[0] ? db : th_conninfo());
    }
    d->port = th_free_port();
    snprintf(portenv, sizeof portenv, "%s=%u", port_var, d->port);
    parent = getpid();
    pid = fork();
    if (pid < 0)
        abort();
    if (pid == 0) {
        char *const argv[] = {exe, NULL};
        char logpath[600];
        int fd;

        /* A test program that dies without its exit handlers (an abort, a
         * sanitizer report) must not leave its daemons running. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);

        /* not the test's stdout: a daemon must not hold the runner's pipe */
        snprintf(logpath, sizeof logpath, "%s.%u.log", exe, d->port);
        if ((fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644)) >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        putenv(portenv);
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execve(exe, argv, environ);
        _exit(127);
    }
    d->pid = pid;
    {
        size_t k;
        for (k = 0; k < ndaemons && daemons[k] != d; k++)
            ;
        if (k == ndaemons && ndaemons < sizeof daemons / sizeof daemons[0])
            daemons[ndaemons++] = d;    /* a restarted daemon is listed once */
    }
    if (!atexit_set) {
        owner = getpid();
        atexit(stop_all);
        atexit_set = true;
    }
    for (int i = 0; i < 200; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "%s exited before answering (see %s.%u.log)\n", exe, exe, d->port);
            d->pid = 0;
            exit(2);
        }
        if (th_http(d->port, "GET", "/healthz", NULL, NULL, &r) == 200) {
            th_response_free(&r);
            return;
        }
        th_response_free(&r);
        usleep(50 * 1000);
    }
    fprintf(stderr, "%s did not answer on port %u\n", exe, d->port);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    d->pid = 0;
    exit(2);
}

int
th_daemon_stop(th_daemon *d)
{
    int st;

    if (d->pid <= 0)
        return 0;
    kill(d->pid, SIGTERM);
    for (int i = 0; i < 200; i++) {
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            d->pid = 0;
            if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                return 0;
            fprintf(stderr, "daemon on port %u ended badly (status %d): see its log\n", d->port,
                    WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            return 1;
        }
        usleep(50 * 1000);
    }
    fprintf(stderr, "daemon on port %u did not stop on SIGTERM\n", d->port);
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &st, 0);
    d->pid = 0;
    return 1;
}

int
th_http(unsigned port, const char *method, const char *path, const char *headers,
        const char *body, th_response *res)
{
    struct sockaddr_in a = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char head[8192], auth[128] = "";
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap), *split;
    ssize_t n;
    int hl;

    memset(res, 0, sizeof *res);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || buf == NULL || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        goto fail;
    {
        const char *tok = http_token_set ? http_token : th_token();
        bool own = false;

        for (const char *h = headers; h && *h; h += strcspn(h, "\n") + (h[strcspn(h, "\n")] != 0))
            own |= strncasecmp(h, "Authorization:", 14) == 0;
        if (!own && tok[0] != '\0')
            snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", tok);
    }
    hl = snprintf(head, sizeof head,
                  "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s"
                  "Content-Length: %zu\r\n\r\n",
                  method, path, auth, headers ? headers : "", body ? strlen(body) : 0);
    if (send(fd, head, (size_t)hl, MSG_NOSIGNAL) != hl)
        goto fail;
    if (body && strlen(body) > 0) {
        size_t off = 0, total = strlen(body);
        while (off < total) {
            n = send(fd, body + off, total - off, MSG_NOSIGNAL);
            if (n <= 0)
                break;      /* the server may answer (413) and close early */
            off += (size_t)n;
        }
    }
    while ((n = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (len + 1 == cap) {
            char *grown = realloc(buf, cap *= 2);
            if (grown == NULL)
                goto fail;
            buf = grown;
        }
    }
    buf[len] = '\0';
    close(fd);
    if (sscanf(buf, "HTTP/1.%*d %d", &res->status) != 1 || (split = strstr(buf, "\r\n\r\n")) == NULL) {
        free(buf);
        return res->status = 0;
    }
    *split = '\0';
    snprintf(res->headers, sizeof res->headers, "%s", buf);
    memmove(buf, split + 4, len - (size_t)(split + 4 - buf) + 1);
    res->body = buf;
    return res->status;
fail:
    if (fd >= 0)
        close(fd);
    free(buf);
    return res->status = 0;
}

void
th_response_free(th_response *res)
{
    free(res->body);
    res->body = NULL;
}

long long
th_metric(unsigned port, const char *name, const char *label)
{
    th_response r;
    long long sum = 0;
    size_t len = strlen(name);

    if (th_http(port, "GET", "/metrics", NULL, NULL, &r) != 200) {
        /* what refused it, for the failure that follows */
        fprintf(stderr, "GET /metrics on port %u: status %d %s\n", port, r.status,
                r.body ? r.body : "(no answer)");
        th_response_free(&r);
        return -1;
    }
    for (const char *p = r.body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, name, len) == 0 && (p[len] == '{' || p[len] == ' ')) {
            const char *v = strchr(p, ' '), *nl = strchr(p, '\n');
            const char *has = label[0] ? strstr(p, label) : p;

            if (v && has && (nl == NULL || has < nl))
                sum += strtoll(v + 1, NULL, 10);
        }
    th_response_free(&r);
    return sum;
}

const char *
th_header(const th_response *res, const char *name, char *out, size_t size)
{
    size_t n = strlen(name);

    for (const char *p = res->headers; (p = strstr(p, "\r\n")) != NULL;) {
        p += 2;
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1, *end;
            while (*v == ' ')
                v++;
            end = strstr(v, "\r\n");
            snprintf(out, size, "%.*s", (int)(end ? end - v : (long)strlen(v)), v);
            return out;
        }
    }
    return NULL;
}

void
th_daemon_kill(th_daemon *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
}

/* ---- databases, Redis and programs -------------------------------------- */

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <nats/nats.h>

#include "migrate.h"
#include "store.h"

static bool
admin_sql(const char *sql)
{
    PGconn *c = PQconnectdb(th_admin_conninfo());
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;

    if (!ok)
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok;
}

void
th_db_create(char *name, size_t name_size, char *conninfo, size_t conninfo_size)
{
    const char *dir = getenv("ES_TEST_MIGRATIONS");
    char sql[128];
    es_error err;
    int applied;

    th_unique(name, name_size, "es_t");
    for (char *c = name; *c; c++)
        if (*c == '-')
            *c = '_';
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    if (!admin_sql(sql))
        abort();
    snprintf(conninfo, conninfo_size, "%s dbname=%s", th_admin_conninfo(), name);
    if (es_migrate(conninfo, dir ? dir : "migrations", NULL, &applied, &err) != ES_OK) {
        fprintf(stderr, "could not migrate %s: %s\n", name, err.message);
        abort();
    }
    th_token_provision(conninfo);
}

void
th_db_drop(const char *name)
{
    char sql[128];

    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    (void)admin_sql(sql);
}

void
th_redis_flush(void)
{
    const char *db = getenv("ES_REDIS_DB"), *host = getenv("ES_REDIS_HOST"),
               *port = getenv("ES_REDIS_PORT");
    redisContext *c;
    redisReply *r;

    if (db == NULL || atoi(db) == 0) {
        fprintf(stderr, "ES_REDIS_DB must name the tests' own database (not 0)\n");
        exit(2);
    }
    c = redisConnect(host ? host : "127.0.0.1", port ? atoi(port) : 16379);
    if (c == NULL || c->err)
        abort();
    if (getenv("ES_REDIS_PASSWORD") != NULL) {
        r = redisCommand(c, "AUTH %s %s", getenv("ES_REDIS_USER") ? getenv("ES_REDIS_USER") : "default",
                         getenv("ES_REDIS_PASSWORD"));
        if (r == NULL || r->type != REDIS_REPLY_STATUS)
            abort();
        freeReplyObject(r);
    }
    r = redisCommand(c, "SELECT %s", db);
    freeReplyObject(r);
    r = redisCommand(c, "FLUSHDB");
    if (r == NULL || r->type != REDIS_REPLY_STATUS)
        abort();
    freeReplyObject(r);
    redisFree(c);
}

int
th_program(const char *const *argv, const char *const *env, const char *log)
{
    const char *build = getenv("ES_TEST_BUILD");
    char exe[512];
    pid_t pid;
    int st;

    snprintf(exe, sizeof exe, "%s/%s", build ? build : "build/plain", argv[0]);
    pid = fork();
    if (pid < 0)
        abort();
    if (pid == 0) {
        int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void
th_stream_delete(const char *stream)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr;

    if (natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")) == NATS_OK &&
        natsConnection_JetStream(&js, nc, NULL) == NATS_OK)
        js_DeleteStream(js, stream, NULL, &jerr);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}

/* Message n of the stream is the n-th event of the feed: nothing lost,
 * doubled or reordered. */
void
th_assert_stream_is_feed(const char *conninfo, const char *stream)
{
    es_store *s;
    es_error err;
    es_position pos = {0, 0};
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    uint64_t seq = 0;
    jsStreamInfo *si = NULL;
    jsErrCode jerr;
    uint64_t total = 0;

    ck_assert_int_eq(es_store_open(&s, conninfo, &err), ES_OK);
    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    /* the relay may still be republishing what NATS lost in its restart */
    for (;;) {
        es_page *p;
        size_t count;
        ck_assert_int_eq(es_store_read_feed(s, pos, 1000, &p, &err), ES_OK);
        total += p->count;
        pos = p->next;
        count = p->count;
        es_page_destroy(p);
        if (count == 0)
            break;
    }
    for (int i = 0; i < 600; i++) {
        uint64_t last = 0;
        if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) == NATS_OK) {
            last = si->State.LastSeq;
            jsStreamInfo_Destroy(si);
            si = NULL;
        }
        if (last >= total)
            break;
        usleep(100 * 1000);
    }
    pos = (es_position){0, 0};
    for (;;) {
        es_page *p;
        size_t count;
        ck_assert_int_eq(es_store_read_feed(s, pos, 1000, &p, &err), ES_OK);
        for (size_t i = 0; i < p->count; i++) {
            natsMsg *m = NULL;
            const char *hp = NULL;
            char want[ES_POSITION_TEXT_MAX];

            seq++;
            ck_assert_int_eq(js_GetMsg(&m, js, stream, seq, NULL, &jerr), NATS_OK);
            ck_assert_int_eq(natsMsgHeader_Get(m, "Es-Position", &hp), NATS_OK);
            es_position_format(p->events[i].position, want);
            ck_assert_str_eq(hp, want);
            ck_assert_ptr_nonnull(strstr(natsMsg_GetData(m), p->events[i].event_id));
            natsMsg_Destroy(m);
        }
        pos = p->next;
        count = p->count;
        es_page_destroy(p);
        if (count == 0)
            break;
    }
    ck_assert_int_eq(js_GetStreamInfo(&si, js, stream, NULL, &jerr), NATS_OK);
    ck_assert_uint_eq(si->State.LastSeq, seq);
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    es_store_close(s);
}

int
th_program_output(const char *const *argv, const char *const *env, char *out, size_t size)
{
    char log[600];
    FILE *f;
    size_t n = 0;
    int rc;

    snprintf(log, sizeof log, "%s/%s-%d.out", getenv("ES_TEST_BUILD") ? getenv("ES_TEST_BUILD")
                                                                      : "build/plain",
             argv[0], (int)getpid());
    unlink(log);
    rc = th_program(argv, env, log);
    if ((f = fopen(log, "r")) != NULL) {
        n = fread(out, 1, size - 1, f);
        fclose(f);
    }
    out[n] = '\0';
    unlink(log);
    return rc;
}

int
th_servers(const char *action, const char *server)
{
    char cmd[256], out[8192];
    size_t n = 0, got;
    FILE *p;
    int st;

    snprintf(cmd, sizeof cmd, "scripts/servers.sh %s %s 2>&1", action, server);
    if ((p = popen(cmd, "r")) == NULL)
        return -1;
    /* the end of what it said is what explains a failure */
    while ((got = fread(out + n, 1, sizeof out - 1 - n, p)) > 0) {
        n += got;
        if (n == sizeof out - 1) {
            memmove(out, out + n / 2, n - n / 2);
            n -= n / 2;
        }
    }
    out[n] = '\0';
    st = pclose(p);
    st = st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (st != 0)
        fprintf(stderr, "servers.sh %s %s: exit %d:\n%s", action, server, st, out);
    return st;
}
