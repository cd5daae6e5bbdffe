/* Tests of the clients' cluster settings (scripts/cluster.sh): ES_NATS_URL
 * as a server list (events/feed.c), its redaction in logs (events/env.c),
 * and the Redis primary found through Sentinel (events/readmodel.c), with
 * a stand-in Sentinel on a thread that names the test Redis. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nats/nats.h>

#include "harness.h"
#include "env.h"
#include "feed.h"
#include "readmodel.h"

START_TEST(redact_each_url_of_a_list)
{
    char out[512];

    es_url_redact("nats://a:secret1@h1:1,nats://a:secret2@h2:2, nats://h3:3", out, sizeof out);
    ck_assert_str_eq(out, "nats://a:***@h1:1,nats://a:***@h2:2, nats://h3:3");
    ck_assert_ptr_null(strstr(out, "secret"));
    es_url_redact("nats://u:pw@h:4222", out, sizeof out);
    ck_assert_str_eq(out, "nats://u:***@h:4222");
    /* cut short, still terminated, no password */
    es_url_redact("nats://a:secret1@h1:1,nats://a:secret2@h2:2", out, 20);
    ck_assert_int_lt(strlen(out), 20);
    ck_assert_ptr_null(strstr(out, "secret"));
}
END_TEST

/* A list whose first server is down connects to another one; before the
 * list was given to natsOptions_SetServers, it read as one bogus URL. */
START_TEST(nats_url_list_connects)
{
    char list[1024];
    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    es_error err;
    natsStatus s;

    snprintf(list, sizeof list, "nats://127.0.0.1:1, %s", es_nats_url());
    ck_assert_int_eq(es_nats_options_create(&opts, list, "test", &err), ES_OK);
    natsOptions_SetNoRandomize(opts, true);
    natsOptions_SetRetryOnFailedConnect(opts, false, NULL, NULL);
    s = natsConnection_Connect(&nc, opts);
    ck_assert_msg(s == NATS_OK, "connect with %s: %s", es_nats_url(), natsStatus_GetText(s));
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
}
END_TEST

/* ---- a stand-in Sentinel: answers AUTH with +OK and anything else with
 * the address in sentinel_answer, then closes --------------------------- */

static char sentinel_answer[128];
static int sentinel_fd = -1;

static void *
sentinel_serve(void *arg)
{
    (void)arg;
    for (;;) {
        char buf[4096];
        int c = accept(sentinel_fd, NULL, NULL);
        ssize_t n;

        if (c < 0)
            return NULL;
        while ((n = read(c, buf, sizeof buf - 1)) > 0) {
            buf[n] = '\0';
            if (strstr(buf, "AUTH") != NULL) {
                if (write(c, "+OK\r\n", 5) != 5)
                    break;
            } else if (write(c, sentinel_answer, strlen(sentinel_answer)) < 0) {
                break;
            }
        }
        close(c);
    }
}

static unsigned
sentinel_start(const char *host, const char *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof a;
    pthread_t t;

    snprintf(sentinel_answer, sizeof sentinel_answer, "*2\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n",
             strlen(host), host, strlen(port), port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_ge(sentinel_fd = socket(AF_INET, SOCK_STREAM, 0), 0);
    ck_assert_int_eq(bind(sentinel_fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(sentinel_fd, 8), 0);
    ck_assert_int_eq(getsockname(sentinel_fd, (struct sockaddr *)&a, &len), 0);
    ck_assert_int_eq(pthread_create(&t, NULL, sentinel_serve, NULL), 0);
    pthread_detach(t);
    return ntohs(a.sin_port);
}

START_TEST(sentinel_names_the_primary)
{
    const char *host = getenv("ES_REDIS_HOST"), *port = getenv("ES_REDIS_PORT");
    char list[128];
    redisContext *c;
    redisReply *r;
    es_error err;
    unsigned sp;

    sp = sentinel_start(host && host[0] ? host : "127.0.0.1", port && port[0] ? port : "16379");
    /* a dead Sentinel first: the next one is asked; ES_REDIS_HOST/PORT
     * are not used (a wrong port proves it) */
    snprintf(list, sizeof list, "127.0.0.1:1,127.0.0.1:%u", sp);
    setenv("ES_REDIS_SENTINELS", list, 1);
    setenv("ES_REDIS_SENTINEL_PASSWORD", "sentinel-secret", 1);
    setenv("ES_REDIS_PORT", "1", 1);
    c = es_rm_connect(&err);
    ck_assert_msg(c != NULL, "es_rm_connect: %s", err.message);
    r = redisCommand(c, "PING");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(c);
}
END_TEST

START_TEST(no_sentinel_answers)
{
    es_error err;

    setenv("ES_REDIS_SENTINELS", "127.0.0.1:1,nonsense", 1);
    ck_assert_ptr_null(es_rm_connect(&err));
    ck_assert_int_eq(err.status, ES_EUNAVAILABLE);
    ck_assert_str_eq(err.code, "redis_unavailable");
    ck_assert_msg(strstr(err.message, "no sentinel") != NULL, "%s", err.message);
    ck_assert_msg(strstr(err.message, "\"nonsense\" is not host:port") != NULL, "%s",
                  err.message);
}
END_TEST

/* A Sentinel that names a server answering ROLE with something other
 * than "master" (here: the stand-in Sentinel itself, whose answer to ROLE
 * is an address) is refused. */
START_TEST(not_the_primary_is_refused)
{
    char list[64], port[16];
    es_error err;
    unsigned sp;

    /* the stand-in names itself: its port is known once it listens */
    sp = sentinel_start("127.0.0.1", "1");
    snprintf(port, sizeof port, "%u", sp);
    snprintf(sentinel_answer, sizeof sentinel_answer,
             "*2\r\n$9\r\n127.0.0.1\r\n$%zu\r\n%s\r\n", strlen(port), port);
    snprintf(list, sizeof list, "127.0.0.1:%u", sp);
    setenv("ES_REDIS_SENTINELS", list, 1);
    unsetenv("ES_REDIS_PASSWORD");
    ck_assert_ptr_null(es_rm_connect(&err));
    ck_assert_str_eq(err.code, "redis_unavailable");
    ck_assert_msg(strstr(err.message, "is not the primary") != NULL, "%s", err.message);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("cluster_client");
    TCase *tc = tcase_create("cluster_client");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, redact_each_url_of_a_list);
    tcase_add_test(tc, nats_url_list_connects);
    tcase_add_test(tc, sentinel_names_the_primary);
    tcase_add_test(tc, no_sentinel_answers);
    tcase_add_test(tc, not_the_primary_is_refused);
    suite_add_tcase(s, tc);
    return th_run(s);
}
