/*
 * The live projector's reader (events/feed.c, es_jetstream_pull and
 * es_jetstream_fetch): a pull consumer gives what the reader asks for and
 * holds nothing more, so a projector far behind holds one batch (the push
 * consumer it replaced let the server send the whole backlog into the
 * library's queue: 170 MB for 300,000 events); its sequences follow each
 * other, and a message the stream lacks ends the batch and is named.
 * Messages that reach the subscription after their reader stopped waiting
 * for them (an answer still arriving) are given in order, and never more
 * than the batch: libnats before 3.9 wrote such a fetch past the end of
 * its array (es-projector aborted with "double free or corruption").
 * A byte cap (ES_NATS_FETCH_BYTES) below the largest message the stream
 * may hold is raised to it, so such a message still comes.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "feed.h"
#include "harness.h"

enum { MSGS = 600 };

static int nmsgs = MSGS;        /* what fill() publishes */

static char stream[48], prefix[64];

/* A stream of MSGS event messages, as the relay writes them. */
static void
fill(void)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamConfig cfg;
    jsErrCode jerr = 0;
    char subj[96], subjects[80], body[512];
    const char *subs[1];
    int i;

    th_unique(stream, sizeof stream, "PULL");
    for (i = 0; stream[i]; i++)
        if (stream[i] == '-' || stream[i] == '.')
            stream[i] = '_';
    snprintf(prefix, sizeof prefix, "pull_%s", stream);
    snprintf(subjects, sizeof subjects, "%s.>", prefix);
    subs[0] = subjects;
    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    jsStreamConfig_Init(&cfg);
    cfg.Name = stream;
    cfg.Subjects = subs;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_MemoryStorage;
    ck_assert_int_eq(js_AddStream(NULL, js, &cfg, NULL, &jerr), NATS_OK);
    for (i = 1; i <= nmsgs; i++) {
        snprintf(subj, sizeof subj, "%s.order", prefix);
        snprintf(body, sizeof body,
                 "{\"position\":\"1-%d\",\"stream\":\"order-%d\",\"type\":\"OrderPlaced\","
                 "\"event_id\":\"00000000-0000-4000-8000-%012d\",\"recorded_at\":"
                 "\"2026-01-01T00:00:00Z\",\"data\":{\"order_id\":\"o%d\"}}",
                 i, i, i, i);
        ck_assert_int_eq(js_Publish(NULL, js, subj, body, (int)strlen(body), NULL, &jerr),
                         NATS_OK);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    setenv("ES_RELAY_STREAM", stream, 1);
    setenv("ES_RELAY_SUBJECT_PREFIX", prefix, 1);
}

static void
delete_msg(uint64_t seq)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;

    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    ck_assert_int_eq(js_DeleteMsg(js, stream, seq, NULL, &jerr), NATS_OK);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}

START_TEST(a_reader_holds_the_batch_it_asked_for)
{
    es_jetstream n;
    natsSubscription *sub = NULL;
    es_feed_batch b;
    es_error err;
    uint64_t jump = 1, next = 1;
    int pending = -1, round;
    size_t i;

    fill();
    ck_assert_int_eq(es_jetstream_open(&n, &err), ES_OK);
    ck_assert_int_eq(es_jetstream_pull(&n, 1, &sub, &err), ES_OK);
    for (round = 0; round < 3; round++) {
        ck_assert_int_eq(es_jetstream_fetch(sub, next, 100, 1000, &b, &jump, &err), ES_OK);
        ck_assert_uint_eq(b.n, 100);
        ck_assert_uint_eq(jump, 0);
        for (i = 0; i < b.n; i++) {
            ck_assert_uint_eq(b.ev[i].seq, next + i);
            ck_assert_ptr_null(b.bad[i]);
            ck_assert_str_eq(b.ev[i].type, "OrderPlaced");
        }
        next += b.n;
        es_feed_batch_free(&b);
        /* nothing beyond the batch waits in the library, however much
         * the stream has left (a push consumer's queue fills with it) */
        ck_assert_int_eq(natsSubscription_GetPending(sub, &pending, NULL), NATS_OK);
        ck_assert_int_eq(pending, 0);
    }
    /* the rest, then nothing: an empty batch, not an error */
    ck_assert_int_eq(es_jetstream_fetch(sub, next, 1000, 1000, &b, &jump, &err), ES_OK);
    ck_assert_uint_eq(b.n, MSGS - 300);
    ck_assert_uint_eq(b.ev[b.n - 1].seq, MSGS);
    es_feed_batch_free(&b);
    ck_assert_int_eq(es_jetstream_fetch(sub, MSGS + 1, 100, 100, &b, &jump, &err), ES_OK);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_uint_eq(jump, 0);
    es_feed_batch_free(&b);
    es_jetstream_unsubscribe(&n, sub);
    es_jetstream_close(&n);
    th_stream_delete(stream);
}
END_TEST

START_TEST(a_message_the_stream_lacks_ends_the_batch)
{
    es_jetstream n;
    natsSubscription *sub = NULL;
    es_feed_batch b;
    es_error err;
    uint64_t jump = 0;

    fill();
    delete_msg(50);
    ck_assert_int_eq(es_jetstream_open(&n, &err), ES_OK);
    ck_assert_int_eq(es_jetstream_pull(&n, 1, &sub, &err), ES_OK);
    ck_assert_int_eq(es_jetstream_fetch(sub, 1, 100, 1000, &b, &jump, &err), ES_OK);
    ck_assert_uint_eq(b.n, 49);
    ck_assert_uint_eq(b.ev[48].seq, 49);
    ck_assert_uint_eq(jump, 51);
    es_feed_batch_free(&b);
    es_jetstream_unsubscribe(&n, sub);
    /* a consumer made to start at the hole gives the next message first:
     * what es-projector reads as "the stream lacks message 50" */
    ck_assert_int_eq(es_jetstream_pull(&n, 50, &sub, &err), ES_OK);
    ck_assert_int_eq(es_jetstream_fetch(sub, 50, 100, 1000, &b, &jump, &err), ES_OK);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_uint_eq(jump, 51);
    es_feed_batch_free(&b);
    es_jetstream_unsubscribe(&n, sub);
    es_jetstream_close(&n);
    th_stream_delete(stream);
}
END_TEST

/* Asks sub's consumer, as the library would, for batch messages into sub's
 * queue: body is the request's JSON. */
static void
ask(es_jetstream *n, natsSubscription *sub, const char *body)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    char subj[256];

    ck_assert_int_eq(natsSubscription_GetConsumerInfo(&ci, sub, NULL, &jerr), NATS_OK);
    snprintf(subj, sizeof subj, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", stream, ci->Name);
    jsConsumerInfo_Destroy(ci);
    ck_assert_int_eq(natsConnection_PublishRequestString(n->nc, subj,
                                                         natsSubscription_GetSubject(sub), body),
                     NATS_OK);
    ck_assert_int_eq(natsConnection_Flush(n->nc), NATS_OK);
}

typedef struct later {
    es_jetstream *n;
    natsSubscription *sub;
} later;

/* 100 ms on, an older request still open: it takes what the stream has
 * left, and more as it comes. */
static void *
ask_later(void *arg)
{
    later *l = arg;

    usleep(100 * 1000);
    ask(l->n, l->sub, "{\"batch\":100,\"expires\":5000000000}");
    return NULL;
}

/* Reads the whole stream from 1 with batches of max; each holds at most
 * max, in order. */
static void
read_all(natsSubscription *sub, int max)
{
    es_feed_batch b;
    es_error err;
    uint64_t jump = 0, next = 1;

    for (int round = 0; next <= (uint64_t)nmsgs && round < 50; round++) {
        ck_assert_int_eq(es_jetstream_fetch(sub, next, max, 1000, &b, &jump, &err), ES_OK);
        ck_assert_uint_le(b.n, (size_t)max);
        ck_assert_uint_eq(jump, 0);
        for (size_t i = 0; i < b.n; i++)
            ck_assert_uint_eq(b.ev[i].seq, next + i);
        next += b.n;
        es_feed_batch_free(&b);
    }
    ck_assert_uint_eq(next, (uint64_t)nmsgs + 1);
}

START_TEST(an_answer_is_read_whole_even_without_waiting)
{
    es_jetstream n;
    natsSubscription *sub = NULL;
    es_feed_batch b;
    es_error err;
    uint64_t jump = 0;
    int pending = -1;

    nmsgs = 150;
    fill();
    ck_assert_int_eq(es_jetstream_open(&n, &err), ES_OK);
    ck_assert_int_eq(es_jetstream_pull(&n, 1, &sub, &err), ES_OK);
    /* es-projector's fetch ahead: no wait for a message, yet the answer
     * the server gives at once is taken whole, not left to arrive into
     * the queue after the reader gave up */
    ck_assert_int_eq(es_jetstream_fetch(sub, 1, 200, 0, &b, &jump, &err), ES_OK);
    ck_assert_uint_eq(b.n, 150);
    es_feed_batch_free(&b);
    usleep(300 * 1000);
    ck_assert_int_eq(natsSubscription_GetPending(sub, &pending, NULL), NATS_OK);
    ck_assert_int_eq(pending, 0);
    es_jetstream_unsubscribe(&n, sub);
    es_jetstream_close(&n);
    th_stream_delete(stream);
}
END_TEST

START_TEST(messages_already_queued_never_overflow_the_batch)
{
    es_jetstream n;
    natsSubscription *sub = NULL;
    es_error err;
    pthread_t t;
    later l;
    int pending = 0;

    nmsgs = 210;
    fill();
    ck_assert_int_eq(es_jetstream_open(&n, &err), ES_OK);
    ck_assert_int_eq(es_jetstream_pull(&n, 1, &sub, &err), ES_OK);
    /* the answer to an earlier request nobody waited for: 150 messages
     * in the queue, more than half of the next batch */
    ask(&n, sub, "{\"batch\":150,\"no_wait\":true}");
    for (int i = 0; i < 200 && pending < 150; i++) {
        usleep(10 * 1000);
        ck_assert_int_eq(natsSubscription_GetPending(sub, &pending, NULL), NATS_OK);
    }
    ck_assert_int_eq(pending, 150);
    /* and another request, still open, whose messages come during the
     * next fetch: the library's fetch took them past its 200 */
    l.n = &n;
    l.sub = sub;
    ck_assert_int_eq(pthread_create(&t, NULL, ask_later, &l), 0);
    read_all(sub, 200);
    pthread_join(t, NULL);
    es_jetstream_unsubscribe(&n, sub);
    es_jetstream_close(&n);
    th_stream_delete(stream);
}
END_TEST

/* A nats-server of the test's own whose max_payload (16 MB) is above
 * ES_NATS_FETCH_BYTES' old floor and default; its pid, ES_NATS_URL set
 * to it (no credentials, no TLS). */
static pid_t
big_nats_start(char *dir, size_t dir_size)
{
    char conf[512], text[1024], url[64];
    unsigned port = th_free_port();
    FILE *f;
    pid_t pid;

    snprintf(dir, dir_size, "/tmp/es-test-bignats-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(conf, sizeof conf, "%s/nats.conf", dir);
    snprintf(text, sizeof text,
             "listen: \"127.0.0.1:%u\"\nmax_payload: 16MB\njetstream {store_dir: \"%s/js\"}\n",
             port, dir);
    ck_assert_ptr_nonnull(f = fopen(conf, "w"));
    fputs(text, f);
    fclose(f);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        freopen("/dev/null", "w", stdout);
        execlp("nats-server", "nats-server", "-c", conf, (char *)NULL);
        _exit(127);
    }
    snprintf(url, sizeof url, "nats://127.0.0.1:%u", port);
    setenv("ES_NATS_URL", url, 1);
    unsetenv("ES_NATS_CA");
    unsetenv("ES_NATS_CERT");
    unsetenv("ES_NATS_KEY");
    for (int i = 0; i < 200; i++) {
        natsConnection *nc = NULL;

        if (natsConnection_ConnectTo(&nc, url) == NATS_OK) {
            natsConnection_Destroy(nc);
            return pid;
        }
        usleep(50000);
    }
    kill(pid, SIGKILL);
    ck_abort_msg("nats-server with max_payload 16MB did not start on port %u", port);
    return -1;
}

/* ES_NATS_FETCH_BYTES (4 MiB) below the largest message the stream may
 * hold (the server's max_payload, 16 MB): a 6 MB message used to be
 * refused by every pull request (the server answers a request whose
 * cap it exceeds with a status, no message), which es-projector took
 * for a consumer gone and made again, for ever.  The cap is raised to
 * the largest message, and the message comes. */
START_TEST(a_fetch_cap_below_the_largest_message_is_raised)
{
    enum { BIG = 6 * 1024 * 1024 };
    char dir[128], cmd[200], subj[64], *body = malloc(BIG + 512);
    const char *subs[] = {"bigmsg.>"};
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamConfig cfg;
    jsErrCode jerr = 0;
    es_jetstream n;
    natsSubscription *sub = NULL;
    es_feed_batch b;
    es_error err;
    uint64_t jump = 0;
    es_status st;
    pid_t pid = big_nats_start(dir, sizeof dir);
    int len, status;

    ck_assert_ptr_nonnull(body);
    setenv("ES_NATS_FETCH_BYTES", "4194304", 1);
    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    jsStreamConfig_Init(&cfg);
    cfg.Name = "BIGMSG";
    cfg.Subjects = subs;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_MemoryStorage;
    ck_assert_int_eq(js_AddStream(NULL, js, &cfg, NULL, &jerr), NATS_OK);
    len = snprintf(body, 512,
                   "{\"position\":\"1-1\",\"stream\":\"order-1\",\"type\":\"OrderPlaced\","
                   "\"event_id\":\"00000000-0000-4000-8000-000000000001\",\"recorded_at\":"
                   "\"2026-01-01T00:00:00Z\",\"data\":{\"blob\":\"");
    memset(body + len, 'x', BIG);
    len += BIG;
    len += snprintf(body + len, 512, "\"}}");
    snprintf(subj, sizeof subj, "bigmsg.order");
    ck_assert_int_eq(js_Publish(NULL, js, subj, body, len, NULL, &jerr), NATS_OK);
    free(body);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    setenv("ES_RELAY_STREAM", "BIGMSG", 1);
    setenv("ES_RELAY_SUBJECT_PREFIX", "bigmsg", 1);

    ck_assert_int_eq(es_jetstream_open(&n, &err), ES_OK);
    ck_assert_int_eq(es_jetstream_pull(&n, 1, &sub, &err), ES_OK);
    ck_assert_int_ge(es_jetstream_fetch_bytes(), 16L * 1024 * 1024);
    st = es_jetstream_fetch(sub, 1, 10, 2000, &b, &jump, &err);
    ck_assert_msg(st == ES_OK, "fetch: %s", err.message);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_uint_eq(b.ev[0].seq, 1);
    ck_assert_ptr_null(b.bad[0]);
    ck_assert_uint_eq(jump, 0);
    es_feed_batch_free(&b);
    es_jetstream_unsubscribe(&n, sub);
    es_jetstream_close(&n);

    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST


int
main(void)
{
    Suite *s = suite_create("pull");
    TCase *tc = tcase_create("pull");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, a_reader_holds_the_batch_it_asked_for);
    tcase_add_test(tc, a_message_the_stream_lacks_ends_the_batch);
    tcase_add_test(tc, an_answer_is_read_whole_even_without_waiting);
    tcase_add_test(tc, messages_already_queued_never_overflow_the_batch);
    tcase_add_test(tc, a_fetch_cap_below_the_largest_message_is_raised);
    suite_add_tcase(s, tc);
    return th_run(s);
}
