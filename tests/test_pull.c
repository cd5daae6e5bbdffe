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
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    suite_add_tcase(s, tc);
    return th_run(s);
}
