/*
 * Tests of events/http.c on a real socket: handlers inline, on the worker
 * pool, and answered later (a quick handler's deferral, answered from
 * another thread before or after the connection is suspended); stopping
 * waits for the deferred answers, and a client gone before its answer
 * holds nothing up.  Over HTTPS (a certificate openssl makes, requests
 * curl makes) the same paths answer, plain HTTP gets nothing, and a
 * certificate or key that cannot be used stops the start with a reason.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "http.h"

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Requests deferred to a thread of their own so far. */
static atomic_int deferred_later;

/* Waits (up to 10 s) until n requests were deferred to a thread. */
static void
wait_deferred(int n)
{
    for (int i = 0; i < 1000 && atomic_load(&deferred_later) < n; i++)
        usleep(10 * 1000);
    ck_assert_int_ge(atomic_load(&deferred_later), n);
}

/* An answer given from a thread of its own after delay_ms. */
typedef struct later {
    es_http_pending *p;
    int delay_ms;
    char body[64];
} later;

static void *
answer_later(void *arg)
{
    later *l = arg;
    es_http_res res = {.status = 202};

    usleep((useconds_t)l->delay_ms * 1000);
    es_buf_puts(&res.body, l->body);
    es_http_res_header(&res, "X-Later", "yes");
    es_http_answer(l->p, &res);
    free(l);
    return NULL;
}

/* Requests deferred by /quick/never, which the test answers itself. */
#define NEVER_MAX 16
static es_http_pending *never[NEVER_MAX];
static atomic_int nnever;

/*
 * /quick/never: deferred and left to the test;
 * /quick/now: answered on the loop; /quick/first: deferred and answered
 * before the quick handler returns; /quick/later/<ms>: deferred, answered
 * by a thread after ms.  Anything else goes to the handler.
 */
static bool
quick(void *app, const es_http_req *req, es_http_res *res)
{
    (void)app;
    if (strcmp(req->path, "/quick/now") == 0) {
        res->status = 200;
        es_buf_puts(&res->body, "{\"where\":\"loop\"}");
        return true;
    }
    if (strcmp(req->path, "/quick/never") == 0) {
        int i = atomic_fetch_add(&nnever, 1);

        ck_assert_int_lt(i, NEVER_MAX);
        never[i] = es_http_defer(req);
        return true;
    }
    if (strcmp(req->path, "/quick/first") == 0) {
        es_http_res mine = {.status = 201};

        es_buf_printf(&mine.body, "{\"echo\":\"%s\"}", req->body);
        es_http_answer(es_http_defer(req), &mine);
        return true;
    }
    if (strncmp(req->path, "/quick/later/", 13) == 0) {
        later *l = calloc(1, sizeof *l);
        pthread_t th;

        ck_assert_ptr_nonnull(l);
        l->delay_ms = atoi(req->path + 13);
        snprintf(l->body, sizeof l->body, "{\"waited\":%d}", l->delay_ms);
        l->p = es_http_defer(req);
        atomic_fetch_add(&deferred_later, 1);
        ck_assert_int_eq(pthread_create(&th, NULL, answer_later, l), 0);
        pthread_detach(th);
        return true;
    }
    return false;
}

static void
handler(void *app, const es_http_req *req, es_http_res *res)
{
    (void)app;
    if (strncmp(req->path, "/slow/", 6) == 0)
        usleep((useconds_t)atoi(req->path + 6) * 1000);
    res->status = 200;
    es_buf_printf(&res->body, "{\"path\":\"%s\",\"body\":\"%s\"}", req->path, req->body);
}

static es_http_server *
start_with(es_http_config *cfg, unsigned *port)
{
    es_http_server *srv = NULL;
    es_error err;

    for (int attempt = 0; srv == NULL && attempt < 5; attempt++) {
        cfg->port = *port = th_free_port();
        es_http_start(&srv, cfg, handler, NULL, &err);
    }
    ck_assert_msg(srv != NULL, "could not start: %s", err.message);
    return srv;
}

static es_http_server *
start(unsigned *port, unsigned workers, bool with_quick)
{
    es_http_config cfg = {.bind = "127.0.0.1", .threads = 2, .body_max = 1024,
                          .workers = workers, .quick = with_quick ? quick : NULL};

    return start_with(&cfg, port);
}

typedef struct call {
    unsigned port;
    const char *path, *body;
    int status;
    char out[256];
} call;

static void *
do_call(void *arg)
{
    call *c = arg;
    th_response res;

    c->status = th_http(c->port, "POST", c->path, "Content-Type: application/json\r\n", c->body, &res);
    snprintf(c->out, sizeof c->out, "%s", res.body ? res.body : "");
    th_response_free(&res);
    return NULL;
}

START_TEST(inline_handler)
{
    unsigned port;
    es_http_server *srv = start(&port, 0, false);
    call c = {port, "/x", "b", 0, ""};

    do_call(&c);
    ck_assert_int_eq(c.status, 200);
    ck_assert_str_eq(c.out, "{\"path\":\"/x\",\"body\":\"b\"}");
    es_http_stop(srv);
}
END_TEST

/* The status of a request with a header of pad bytes (0: no answer). */
static int
status_with_header(unsigned port, size_t pad)
{
    struct sockaddr_in a = {0};
    size_t cap = pad + 256, len;
    char *req = malloc(cap), resp[256] = "";
    int fd = socket(AF_INET, SOCK_STREAM, 0), status = 0;
    ssize_t n;

    ck_assert_ptr_nonnull(req);
    len = (size_t)snprintf(req, cap, "POST /h HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Pad: ");
    memset(req + len, 'a', pad);
    len += pad;
    len += (size_t)snprintf(req + len, cap - len, "\r\nContent-Length: 1\r\n\r\nb");
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(send(fd, req, len, MSG_NOSIGNAL), (ssize_t)len);
    if ((n = read(fd, resp, sizeof resp - 1)) > 0)
        sscanf(resp, "HTTP/1.%*d %d", &status);
    close(fd);
    free(req);
    return status;
}

/* Headers: 12 KiB of them are served, 20 KiB are refused with 431. */
START_TEST(header_limit)
{
    unsigned port;
    es_http_server *srv = start(&port, 0, false);

    ck_assert_int_eq(status_with_header(port, 12 * 1024), 200);
    ck_assert_int_eq(status_with_header(port, 20 * 1024), 431);
    es_http_stop(srv);
}
END_TEST

/* Eight slow requests on four workers: all answered, each with its own
 * body, while the loop still answers quick ones. */
START_TEST(worker_pool_and_quick_answers)
{
    unsigned port;
    es_http_server *srv = start(&port, 4, true);
    call slow[8], q[3];
    pthread_t th[8];
    char bodies[8][8];

    for (int i = 0; i < 8; i++) {
        snprintf(bodies[i], sizeof bodies[i], "n%d", i);
        slow[i] = (call){port, "/slow/200", bodies[i], 0, ""};
        ck_assert_int_eq(pthread_create(&th[i], NULL, do_call, &slow[i]), 0);
    }
    q[0] = (call){port, "/quick/now", "", 0, ""};
    q[1] = (call){port, "/quick/first", "hi", 0, ""};
    q[2] = (call){port, "/quick/later/50", "", 0, ""};
    for (int i = 0; i < 3; i++)
        do_call(&q[i]);
    ck_assert_int_eq(q[0].status, 200);
    ck_assert_str_eq(q[0].out, "{\"where\":\"loop\"}");
    ck_assert_int_eq(q[1].status, 201);
    ck_assert_str_eq(q[1].out, "{\"echo\":\"hi\"}");
    ck_assert_int_eq(q[2].status, 202);
    ck_assert_str_eq(q[2].out, "{\"waited\":50}");
    for (int i = 0; i < 8; i++) {
        char want[64];

        pthread_join(th[i], NULL);
        snprintf(want, sizeof want, "{\"path\":\"/slow/200\",\"body\":\"n%d\"}", i);
        ck_assert_int_eq(slow[i].status, 200);
        ck_assert_str_eq(slow[i].out, want);
    }
    es_http_stop(srv);
}
END_TEST

/* Stopping waits for a deferred answer, which the client still gets. */
START_TEST(stop_waits_for_deferred_answers)
{
    unsigned port;
    es_http_server *srv = start(&port, 2, true);
    call c = {port, "/quick/later/400", "", 0, ""};
    pthread_t th;
    int before = atomic_load(&deferred_later);
    double t0;

    ck_assert_int_eq(pthread_create(&th, NULL, do_call, &c), 0);
    wait_deferred(before + 1);
    t0 = now();
    es_http_stop(srv);
    ck_assert_msg(now() - t0 >= 0.1, "stopped without waiting for the answer");
    pthread_join(th, NULL);
    ck_assert_int_eq(c.status, 202);
    ck_assert_str_eq(c.out, "{\"waited\":400}");
}
END_TEST

/* A client gone before its answer: the answer is dropped, and stopping
 * is not held up by it. */
START_TEST(client_gone_before_the_answer)
{
    unsigned port;
    es_http_server *srv = start(&port, 2, true);
    struct sockaddr_in a = {0};
    const char req[] = "POST /quick/later/200 HTTP/1.1\r\nHost: t\r\n"
                       "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    call c = {0};
    int before = atomic_load(&deferred_later);
    double t0;

    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(send(fd, req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
    wait_deferred(before + 1);
    close(fd);
    usleep(400 * 1000);         /* answered, resumed, found closed */
    c = (call){port, "/quick/now", "", 0, ""};
    do_call(&c);                /* the server still serves */
    ck_assert_int_eq(c.status, 200);
    t0 = now();
    es_http_stop(srv);
    ck_assert_msg(now() - t0 < 5, "stopping waited for an answer nobody reads");
}
END_TEST

/*
 * SIGTERM with requests still deferred (issue 16: es-command aborted in
 * libmicrohttpd, "MHD_stop_daemon() called while we have suspended
 * connections"): after the grace every one is answered 503
 * shutting_down (deferred ones nobody answers, a job still queued for
 * the pool; one running on it answers itself), the stop returns, and the owners'
 * answers that come after it are dropped without harm.
 */
START_TEST(stop_answers_what_is_still_deferred)
{
    es_http_config cfg = {.bind = "127.0.0.1", .threads = 2, .body_max = 1024, .workers = 1,
                          .quick = quick, .stop_grace_ms = 300};
    unsigned port;
    es_http_server *srv = start_with(&cfg, &port);
    call c[5];
    pthread_t th[5];
    double t0;

    atomic_store(&nnever, 0);
    c[0] = (call){port, "/slow/1500", "", 0, ""};      /* running on the one worker */
    ck_assert_int_eq(pthread_create(&th[0], NULL, do_call, &c[0]), 0);
    usleep(200 * 1000);
    c[1] = (call){port, "/slow/10", "", 0, ""};        /* queued behind it */
    ck_assert_int_eq(pthread_create(&th[1], NULL, do_call, &c[1]), 0);
    for (int i = 2; i < 5; i++) {
        c[i] = (call){port, "/quick/never", "", 0, ""};
        ck_assert_int_eq(pthread_create(&th[i], NULL, do_call, &c[i]), 0);
    }
    for (int i = 0; i < 500 && atomic_load(&nnever) < 3; i++)
        usleep(10 * 1000);
    ck_assert_int_eq(atomic_load(&nnever), 3);
    usleep(100 * 1000);
    t0 = now();
    es_http_stop(srv);          /* aborted here before */
    ck_assert_msg(now() - t0 < 5, "the stop took %.1f s", now() - t0);
    pthread_join(th[0], NULL);  /* the pool's running job answers itself */
    ck_assert_msg(c[0].status == 200, "%s: %d %s", c[0].path, c[0].status, c[0].out);
    for (int i = 1; i < 5; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(c[i].status == 503, "%s: %d %s", c[i].path, c[i].status, c[i].out);
        ck_assert_msg(strstr(c[i].out, "\"shutting_down\"") != NULL, "%s: %s", c[i].path, c[i].out);
    }
    /* the owners answer late: dropped; the last one frees the server */
    for (int i = 0; i < 3; i++) {
        es_http_res res = {.status = 200};

        es_buf_puts(&res.body, "{\"late\":true}");
        es_http_answer(never[i], &res);
        ck_assert_ptr_null(res.body.data);
    }
}
END_TEST

/* A socket that sent text and then nothing more. */
static int
stalled_client(unsigned port, const char *text)
{
    struct sockaddr_in a = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(send(fd, text, strlen(text), MSG_NOSIGNAL), (ssize_t)strlen(text));
    return fd;
}

/* Whether the server closed fd within secs (an answer before the close
 * is allowed; *answered says whether one came). */
static bool
closed_within(int fd, double secs, bool *answered)
{
    double end = now() + secs;
    char buf[512];

    *answered = false;
    while (now() < end) {
        struct timeval tv = {0, 100000};
        ssize_t n;

        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        n = read(fd, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return true;
        if (n > 0)
            *answered = true;
    }
    return false;
}

#define STALLED 40

/*
 * Slow clients (issue 16: 1,100 connections that never finish their
 * headers stopped es-command answering /healthz until libmicrohttpd's
 * 120 s timeout let them go).  With a cap of 16 and a header deadline of
 * 1 s: 40 stalled connections cannot keep a request out (the oldest
 * stalled one makes room), each is closed within the deadline, a body
 * that stops coming is cut after its own deadline, and the server serves
 * at once after.
 */
START_TEST(slow_clients_are_cut)
{
    es_http_config cfg = {.bind = "127.0.0.1", .threads = 2, .body_max = 1024,
                          .connections_max = 16, .header_timeout_ms = 1000,
                          .body_timeout_ms = 1000};
    unsigned port;
    es_http_server *srv = start_with(&cfg, &port);
    int fds[STALLED], body_fd;
    call c = {0};
    es_buf m = {0};
    bool answered;
    double t0;

    for (int i = 0; i < STALLED; i++)
        fds[i] = stalled_client(port, "GET /slow HTTP/1.1\r\nHost: t\r\nX-Wait: ");
    usleep(100 * 1000);
    t0 = now();
    c = (call){port, "/x", "b", 0, ""};
    do_call(&c);
    ck_assert_int_eq(c.status, 200);
    ck_assert_msg(now() - t0 < 3, "a request took %.1f s past %d stalled connections",
                  now() - t0, STALLED);

    body_fd = stalled_client(port, "POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"
                                   "only ten b");
    for (int i = 0; i < STALLED; i++) {
        ck_assert_msg(closed_within(fds[i], 4, &answered), "stalled connection %d still open", i);
        ck_assert(!answered);
        close(fds[i]);
    }
    ck_assert_msg(closed_within(body_fd, 4, &answered), "stalled body still open");
    close(body_fd);

    t0 = now();
    c = (call){port, "/y", "b", 0, ""};
    do_call(&c);
    ck_assert_int_eq(c.status, 200);
    ck_assert_msg(now() - t0 < 1, "a request took %.1f s after the stalled ones left", now() - t0);
    es_http_metrics(srv, "t", &m);
    ck_assert_msg(strstr(m.data, "t_http_connections_closed_total{reason=\"header_timeout\"} 0") == NULL,
                  "%s", m.data);
    ck_assert_msg(strstr(m.data, "t_http_connections_closed_total{reason=\"evicted\"} 0") == NULL,
                  "%s", m.data);
    ck_assert_msg(strstr(m.data, "t_http_connections_closed_total{reason=\"body_timeout\"} 1") != NULL,
                  "%s", m.data);
    es_buf_free(&m);
    es_http_stop(srv);
}
END_TEST

/* The pool's queue is bounded: past it, 503 server_busy at once. */
START_TEST(pool_queue_is_bounded)
{
    es_http_config cfg = {.bind = "127.0.0.1", .threads = 2, .body_max = 1024, .workers = 1,
                          .queue_max = 2};
    unsigned port;
    es_http_server *srv = start_with(&cfg, &port);
    call c[8];
    pthread_t th[8];
    int ok = 0, busy = 0;

    for (int i = 0; i < 8; i++) {
        c[i] = (call){port, "/slow/300", "", 0, ""};
        ck_assert_int_eq(pthread_create(&th[i], NULL, do_call, &c[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        if (c[i].status == 200)
            ok++;
        else if (c[i].status == 503 && strstr(c[i].out, "\"server_busy\"") != NULL)
            busy++;
    }
    /* one running and two queued at most at any time */
    ck_assert_int_eq(ok + busy, 8);
    ck_assert_int_ge(busy, 1);
    ck_assert_int_ge(ok, 3);
    es_http_stop(srv);
}
END_TEST

/* ---- HTTPS -------------------------------------------------------------- */

/* A temporary folder for certificates; rm -rf'd by tls_dir_remove. */
static void
tls_dir_make(char *dir, size_t size)
{
    snprintf(dir, size, "/tmp/es-test-http-tls-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void
tls_dir_remove(const char *dir)
{
    char cmd[512];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* A self-signed certificate <dir>/<name>.crt for 127.0.0.1 and localhost,
 * with its key <dir>/<name>.key. */
static void
tls_make_cert(const char *dir, const char *name)
{
    char cmd[1024];

    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost "
             "-keyout '%s/%s.key' -out '%s/%s.crt' >/dev/null 2>&1", dir, name, dir, name);
    ck_assert_msg(system(cmd) == 0, "openssl could not make a certificate (is it installed?)");
}

/* es_http_start with the certificate and key at these paths: its status,
 * with the message in err. */
static es_status
tls_try(const char *cert, const char *key, es_error *err)
{
    es_http_config cfg = {.bind = "127.0.0.1", .threads = 1, .body_max = 1024,
                          .tls_cert = cert, .tls_key = key};
    es_http_server *srv = NULL;
    es_status st;

    cfg.port = th_free_port();
    st = es_http_start(&srv, &cfg, handler, NULL, err);
    if (st == ES_OK) {
        ck_assert_ptr_nonnull(srv);
        ck_assert(es_http_is_tls(srv));
    } else {
        ck_assert_ptr_null(srv);
    }
    es_http_stop(srv);
    return st;
}

/* A setup that cannot serve HTTPS refuses to start and says why. */
START_TEST(tls_refused_setups)
{
    char dir[64], a_crt[128], a_key[128], b_key[128], junk[128];
    es_error err;
    FILE *f;

    tls_dir_make(dir, sizeof dir);
    tls_make_cert(dir, "a");
    tls_make_cert(dir, "b");
    snprintf(a_crt, sizeof a_crt, "%s/a.crt", dir);
    snprintf(a_key, sizeof a_key, "%s/a.key", dir);
    snprintf(b_key, sizeof b_key, "%s/b.key", dir);
    snprintf(junk, sizeof junk, "%s/junk.pem", dir);
    ck_assert_ptr_nonnull(f = fopen(junk, "w"));
    fputs("not a certificate\n", f);
    fclose(f);

    ck_assert_int_eq(tls_try(a_crt, a_key, &err), ES_OK);

    ck_assert_int_eq(tls_try(a_crt, NULL, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "tls_invalid");
    ck_assert_msg(strstr(err.message, "only the certificate") != NULL, "%s", err.message);
    ck_assert_int_eq(tls_try("", a_key, &err), ES_EINVALID);
    ck_assert_msg(strstr(err.message, "only the key") != NULL, "%s", err.message);

    ck_assert_int_eq(tls_try("/nonexistent/x.crt", a_key, &err), ES_EINVALID);
    ck_assert_msg(strstr(err.message, "\"/nonexistent/x.crt\"") != NULL, "%s", err.message);
    ck_assert_msg(strstr(err.message, "No such file") != NULL, "%s", err.message);

    ck_assert_int_eq(tls_try(junk, a_key, &err), ES_EINVALID);
    ck_assert_msg(strstr(err.message, "not in PEM format") != NULL, "%s", err.message);

    /* a certificate with some other certificate's key */
    ck_assert_int_eq(tls_try(a_crt, b_key, &err), ES_EINVALID);
    ck_assert_str_eq(err.code, "tls_invalid");
    ck_assert_msg(strstr(err.message, b_key) != NULL, "%s", err.message);
    /* a key where the certificate belongs */
    ck_assert_int_eq(tls_try(a_key, a_key, &err), ES_EINVALID);
    tls_dir_remove(dir);
}
END_TEST

/* curl's status and body for an HTTPS POST to port (0: no answer). */
static int
curl_https(const char *ca, unsigned port, const char *path, const char *body, char *out,
           size_t size)
{
    char cmd[1024], line[512] = "", *sp;
    int status = 0;
    FILE *p;

    snprintf(cmd, sizeof cmd,
             "curl -s -m 10 --cacert '%s' -H 'Content-Type: application/json' -d '%s' "
             "-w ' %%{http_code}' https://127.0.0.1:%u%s", ca, body, port, path);
    ck_assert_ptr_nonnull(p = popen(cmd, "r"));
    if (fgets(line, sizeof line, p) == NULL)
        line[0] = '\0';
    pclose(p);
    /* the body, a space, the status */
    if ((sp = strrchr(line, ' ')) != NULL) {
        status = atoi(sp + 1);
        *sp = '\0';
    }
    snprintf(out, size, "%s", line);
    return status;
}

/* Over HTTPS: a handler on the pool, quick answers on the loop and
 * deferred ones (suspended and resumed connections) all answer;
 * plain HTTP to the same port gets no HTTP answer. */
START_TEST(https_serves_every_path)
{
    char dir[64], crt[128], key[128], out[256];
    es_http_config cfg = {.bind = "127.0.0.1", .threads = 2, .body_max = 1024, .workers = 2,
                          .quick = quick, .tls_cert = crt, .tls_key = key};
    es_http_server *srv = NULL;
    es_error err;
    call plain;

    tls_dir_make(dir, sizeof dir);
    tls_make_cert(dir, "s");
    snprintf(crt, sizeof crt, "%s/s.crt", dir);
    snprintf(key, sizeof key, "%s/s.key", dir);
    for (int attempt = 0; srv == NULL && attempt < 5; attempt++) {
        cfg.port = th_free_port();
        es_http_start(&srv, &cfg, handler, NULL, &err);
    }
    ck_assert_msg(srv != NULL, "could not start: %s", err.message);

    ck_assert_int_eq(curl_https(crt, cfg.port, "/x", "b", out, sizeof out), 200);
    ck_assert_str_eq(out, "{\"path\":\"/x\",\"body\":\"b\"}");
    ck_assert_int_eq(curl_https(crt, cfg.port, "/quick/now", "", out, sizeof out), 200);
    ck_assert_str_eq(out, "{\"where\":\"loop\"}");
    ck_assert_int_eq(curl_https(crt, cfg.port, "/quick/first", "hi", out, sizeof out), 201);
    ck_assert_str_eq(out, "{\"echo\":\"hi\"}");
    ck_assert_int_eq(curl_https(crt, cfg.port, "/quick/later/50", "", out, sizeof out), 202);
    ck_assert_str_eq(out, "{\"waited\":50}");

    plain = (call){cfg.port, "/x", "b", 0, ""};
    do_call(&plain);
    ck_assert_int_eq(plain.status, 0);
    /* and it still serves HTTPS afterwards */
    ck_assert_int_eq(curl_https(crt, cfg.port, "/quick/now", "", out, sizeof out), 200);
    es_http_stop(srv);
    tls_dir_remove(dir);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("http");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, inline_handler);
    tcase_add_test(tc, header_limit);
    tcase_add_test(tc, worker_pool_and_quick_answers);
    tcase_add_test(tc, stop_waits_for_deferred_answers);
    tcase_add_test(tc, client_gone_before_the_answer);
    tcase_add_test(tc, stop_answers_what_is_still_deferred);
    tcase_add_test(tc, slow_clients_are_cut);
    tcase_add_test(tc, pool_queue_is_bounded);
    tcase_add_test(tc, tls_refused_setups);
    tcase_add_test(tc, https_serves_every_path);
    suite_add_tcase(s, tc);
    return th_run(s);
}
