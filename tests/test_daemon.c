/* Unit tests of events/daemon.c: the stop state and the three endpoints
 * (each test in a process of its own, Check's fork mode). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "harness.h"

static double
now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static atomic_int stops_seen;

static void
count_stop(void *arg)
{
    (void)arg;
    atomic_fetch_add(&stops_seen, 1);
}

START_TEST(sigterm_stops_the_process_once)
{
    es_daemon d = {.name = "es-test"};
    es_error err;
    double t0;

    es_daemon_on_stop(count_stop, NULL);
    ck_assert_int_eq(es_daemon_start(&d, &err), ES_OK);
    ck_assert(!es_daemon_stopping());
    t0 = now_s();
    ck_assert(es_daemon_sleep_ms(50));          /* the time passes */
    ck_assert(now_s() - t0 >= 0.045);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);   /* blocked: the signal thread takes it */
    ck_assert_int_eq(es_daemon_wait(), SIGTERM);
    ck_assert(es_daemon_stopping());
    t0 = now_s();
    ck_assert(!es_daemon_sleep_ms(10000));      /* cut short */
    ck_assert(now_s() - t0 < 1.0);
    es_daemon_quit();                           /* a second stop changes nothing */
    ck_assert_int_eq(es_daemon_wait(), SIGTERM);
    /* the callback runs on the signal thread just after the stop is
     * visible, so it may still be running here */
    for (int i = 0; i < 1000 && atomic_load(&stops_seen) == 0; i++)
        usleep(1000);
    ck_assert_int_eq(atomic_load(&stops_seen), 1);
    es_daemon_stop();
}
END_TEST

START_TEST(a_sleep_ends_on_sigint)
{
    es_daemon d = {.name = "es-test"};
    es_error err;
    double t0 = now_s();

    ck_assert_int_eq(es_daemon_start(&d, &err), ES_OK);
    if (fork() == 0) {
        usleep(100 * 1000);
        kill(getppid(), SIGINT);
        _exit(0);
    }
    ck_assert(!es_daemon_sleep_ms(10000));
    ck_assert(now_s() - t0 < 5.0);
    ck_assert_int_eq(es_daemon_wait(), SIGINT);
    es_daemon_stop();
}
END_TEST

static bool
not_ready(void *ctx, json_t **body)
{
    *body = json_pack("{s:s, s:s}", "status", "unavailable", "thing", (const char *)ctx);
    return false;
}

static void
own_metrics(void *ctx, es_buf *out)
{
    (void)ctx;
    es_buf_puts(out, "# HELP es_test_things things\n# TYPE es_test_things gauge\nes_test_things 3\n");
}

static void
get(const es_daemon *d, const char *path, es_http_res *res, bool *answered)
{
    es_http_req req = {"GET", path, "", 0, NULL, ""};

    memset(res, 0, sizeof *res);
    *answered = es_daemon_http(d, NULL, &req, res);
}

START_TEST(the_three_endpoints)
{
    static char down[] = "down";
    es_daemon d = {.name = "es-test", .metrics_prefix = "es_test", .ready = not_ready,
                   .metrics = own_metrics, .ctx = down, .ready_retry_after = true};
    es_http_res res;
    bool answered;

    get(&d, "/healthz", &res, &answered);
    ck_assert(answered);
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body.data, "{\"status\":\"ok\"}");
    es_buf_free(&res.body);

    get(&d, "/readyz", &res, &answered);
    ck_assert_int_eq(res.status, 503);
    ck_assert_ptr_nonnull(strstr(res.body.data, "\"thing\":\"down\""));
    ck_assert_int_eq(res.nheaders, 1);
    ck_assert_str_eq(res.headers[0][0], "Retry-After");
    es_buf_free(&res.body);

    d.health_detail = true;                     /* as es-projector's /healthz */
    d.ready_retry_after = false;
    get(&d, "/healthz", &res, &answered);
    ck_assert_int_eq(res.status, 200);
    ck_assert_ptr_nonnull(strstr(res.body.data, "\"thing\":\"down\""));
    es_buf_free(&res.body);
    get(&d, "/readyz", &res, &answered);
    ck_assert_int_eq(res.status, 503);
    ck_assert_int_eq(res.nheaders, 0);
    es_buf_free(&res.body);

    get(&d, "/metrics", &res, &answered);
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.content_type, "text/plain; version=0.0.4");
    ck_assert_ptr_nonnull(strstr(res.body.data, "\nes_test_things 3\n"));
    es_buf_free(&res.body);

    get(&d, "/v1/other", &res, &answered);
    ck_assert(!answered);
}
END_TEST

/*
 * The bounds come from the environment for every daemon's listener
 * (es_daemon_http_tls): with ES_HTTP_CONNECTIONS_MAX=32, 100 connections
 * that never finish their headers (the 1,100, scaled down with the
 * cap) keep /healthz answering, and it answers at once again after they
 * go.  The header deadline is 5 s, longer than the checks wait, so that
 * it is the eviction of the longest waiting that lets /healthz in, not
 * the deadline.
 */

/* Seconds until /healthz answered 200, asked again every 50 ms (the
 * server frees the slots of connections it cut on its next turn, later
 * on a loaded machine), or -1 after limit seconds. */
static double
healthz_within(unsigned port, double limit)
{
    double t0 = now_s();

    for (;;) {
        th_response r;
        int st = th_http(port, "GET", "/healthz", NULL, NULL, &r);

        th_response_free(&r);
        if (st == 200)
            return now_s() - t0;
        if (now_s() - t0 > limit)
            return -1;
        usleep(50 * 1000);
    }
}
START_TEST(stalled_clients_do_not_lock_out_healthz)
{
    es_daemon d = {.name = "es-test", .metrics_prefix = "es_test"};
    es_daemon_server *s = NULL;
    es_http_config cfg = {0};
    unsigned port = 0;
    int fds[100];
    es_error err;
    double t0;

    setenv("ES_HTTP_CONNECTIONS_MAX", "32", 1);
    setenv("ES_HTTP_HEADER_TIMEOUT_MS", "5000", 1);
    es_daemon_http_tls(&cfg);
    ck_assert_uint_eq(cfg.connections_max, 32);
    ck_assert_uint_eq(cfg.header_timeout_ms, 5000);
    for (int attempt = 0; s == NULL && attempt < 5; attempt++)
        es_daemon_server_start(&s, &d, "127.0.0.1", port = th_free_port(), &err);
    ck_assert_msg(s != NULL, "%s", err.message);
    for (int i = 0; i < 100; i++) {
        struct sockaddr_in a = {0};
        const char *part = "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ";

        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ck_assert_int_eq(connect(fds[i], (struct sockaddr *)&a, sizeof a), 0);
        ck_assert_int_eq(send(fds[i], part, strlen(part), MSG_NOSIGNAL), (ssize_t)strlen(part));
    }
    /* Until the server has taken all 100 (on a loaded machine its threads
     * accept them later than they connected): it keeps 32 and closes the
     * 68 waiting longest.  /healthz asked before that could be one of the
     * early ones, and rightly cut. */
    t0 = now_s();
    for (int closed = 0; closed < 100 - 32;) {
        struct pollfd pf[100];

        ck_assert_msg(now_s() - t0 < 20, "the server closed %d of 100 stalled clients, not %d",
                      closed, 100 - 32);
        for (int i = 0; i < 100; i++)
            pf[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        ck_assert_int_ge(poll(pf, 100, 100), 0);
        closed = 0;
        for (int i = 0; i < 100; i++)
            closed += (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
    }
    ck_assert_msg(healthz_within(port, 3) >= 0, "/healthz did not answer within 3 s");
    for (int i = 0; i < 100; i++)
        close(fds[i]);
    ck_assert_msg(healthz_within(port, 2) >= 0, "/healthz did not answer within 2 s after they left");
    es_daemon_server_stop(s);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("daemon");
    TCase *tc = tcase_create("daemon");

    tcase_add_test(tc, sigterm_stops_the_process_once);
    tcase_add_test(tc, a_sleep_ends_on_sigint);
    tcase_add_test(tc, the_three_endpoints);
    tcase_add_test(tc, stalled_clients_do_not_lock_out_healthz);
    suite_add_tcase(s, tc);
    return th_run(s);
}
