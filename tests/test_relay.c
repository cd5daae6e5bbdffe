/*
 * Integration and crash test of es-relay on real PostgreSQL and NATS: two
 * relays run (one active, one standby) while events are appended; the
 * active one is killed with SIGKILL mid-stream, the standby takes over,
 * and in the end the JetStream stream must be exactly the store's feed:
 * message n is the feed's n-th event (same id, same position), none
 * missing, none twice.
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "store.h"

static th_daemon relays[2];
static th_daemon own;           /* a relay a test starts on a database of its own */
static char stream_name[64], prefix[64], envs[5][700];

static bool
active(const th_daemon *d)
{
    th_response r;
    bool yes = th_http(d->port, "GET", "/metrics", NULL, NULL, &r) == 200 &&
               strstr(r.body, "es_relay_active 1") != NULL;

    th_response_free(&r);
    return yes;
}

static void
append_some(es_store *s, const char *tag, int n)
{
    for (int i = 0; i < n; i++) {
        char stream[80], data[64];
        es_new_event e = {NULL, "Relayed", 1, data, NULL};
        es_append_req req = {stream, ES_EXPECT_ANY, &e, 1};
        es_append_result res;

        snprintf(stream, sizeof stream, "relay%s-%d", tag, i % 7);
        snprintf(data, sizeof data, "{\"i\":%d}", i);
        ck_assert_int_eq(es_store_append(s, &req, &res), ES_OK);
        if (i % 25 == 0)
            usleep(10 * 1000);
    }
}

START_TEST(stream_is_the_feed_after_a_crash)
{
    es_store *s;
    es_error err;
    int a, waited;

    ck_assert_int_eq(es_store_open(&s, th_conninfo(), &err), ES_OK);

    append_some(s, "a", 150);
    /* exactly one relay is active */
    for (waited = 0; waited < 100 && !active(&relays[0]) && !active(&relays[1]); waited++)
        usleep(100 * 1000);
    a = active(&relays[0]) ? 0 : 1;
    ck_assert(active(&relays[a]));
    ck_assert(!active(&relays[1 - a]));

    /* kill the active one in the middle of a burst */
    append_some(s, "b", 100);
    th_daemon_kill(&relays[a]);
    append_some(s, "c", 150);

    /* the standby takes over and catches up: message n is the feed's
     * n-th event, none missing, none twice */
    th_assert_stream_is_feed(th_conninfo(), stream_name);
    ck_assert(active(&relays[1 - a]));
    th_stream_delete(stream_name);
    es_store_close(s);
}
END_TEST


/* The relays' /readyz: 503 and its body when one that answers is not
 * ready, else 200 when one is, else 0 (the killed one never answers). */
static int
readyz_of_relays(char *body, size_t size)
{
    int best = 0;

    snprintf(body, size, "no relay answers");
    for (int i = 0; i < 2; i++) {
        th_response r;
        int st = th_http(relays[i].port, "GET", "/readyz", NULL, NULL, &r);
        if (st == 503 || (st == 200 && best == 0)) {
            snprintf(body, size, "%s", r.body ? r.body : "");
            best = st;
        }
        th_response_free(&r);
    }
    return best;
}

static uint64_t
stream_last(jsCtx *js)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    uint64_t last = 0;

    if (js_GetStreamInfo(&si, js, stream_name, NULL, &jerr) == NATS_OK) {
        last = si->State.LastSeq;
        jsStreamInfo_Destroy(si);
    }
    return last;
}

/*
 * A message someone else publishes into the events subjects, claiming a
 * position far ahead, must not make the relay resume after it (skipping
 * events) nor publish after it (shifting every sequence): it stops,
 * says why on /readyz, and once the stream is a copy again (here: the
 * stream deleted) republishes the feed from the start.
 */
START_TEST(a_foreign_message_stops_the_relay_and_is_never_followed)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    natsMsg *m = NULL;
    jsPubAck *ack = NULL;
    jsPubOptions po;
    jsErrCode jerr = 0;
    es_store *s;
    es_error err;
    char subject[128], body[2048];
    uint64_t foreign;
    int st = 0;

    ck_assert_int_eq(es_store_open(&s, th_conninfo(), &err), ES_OK);
    append_some(s, "f", 30);
    th_assert_stream_is_feed(th_conninfo(), stream_name);
    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    snprintf(subject, sizeof subject, "%s.events.account.FundsDeposited", prefix);
    ck_assert_int_eq(natsMsg_Create(&m, subject, NULL, "{}", 2), NATS_OK);
    ck_assert_int_eq(natsMsgHeader_Set(m, "Es-Position", "999999999-1"), NATS_OK);
    jsPubOptions_Init(&po);
    po.MsgId = "6f1c2a34-0000-4000-8000-000000000001";
    ck_assert_int_eq(js_PublishMsg(&ack, js, m, &po, &jerr), NATS_OK);
    foreign = ack->Sequence;
    jsPubAck_Destroy(ack);
    natsMsg_Destroy(m);

    /* more events: the relay meets the foreign message and stops */
    append_some(s, "g", 20);
    for (int i = 0; i < 100 && st != 503; i++) {
        usleep(100 * 1000);
        st = readyz_of_relays(body, sizeof body);
    }
    ck_assert_int_eq(st, 503);
    ck_assert_ptr_nonnull(strstr(body, "stream_not_a_copy"));
    sleep(1);
    ck_assert_uint_eq(stream_last(js), foreign);    /* nothing published after it */

    /* a stream that is a copy again: the relay republishes the feed */
    th_stream_delete(stream_name);
    th_assert_stream_is_feed(th_conninfo(), stream_name);
    for (int i = 0; i < 50 && st != 200; i++) {
        usleep(100 * 1000);
        st = readyz_of_relays(body, sizeof body);
    }
    ck_assert_int_eq(st, 200);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    es_store_close(s);
}
END_TEST

/* Whether a relay reports a repair of the stream on /metrics. */
static bool
repaired(void)
{
    bool yes = false;

    for (int i = 0; i < 2 && !yes; i++) {
        th_response r;
        if (th_http(relays[i].port, "GET", "/metrics", NULL, NULL, &r) == 200)
            yes = strstr(r.body, "\nes_relay_stream_repairs_total 0\n") == NULL &&
                  strstr(r.body, "\nes_relay_stream_repairs_total ") != NULL;
        th_response_free(&r);
    }
    return yes;
}

/* A purged stream keeps its last sequence: the relay makes it anew and
 * republishes, so message n is the feed's n-th event again. */
START_TEST(a_purged_stream_is_republished_from_the_store)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    es_store *s;
    es_error err;

    ck_assert_int_eq(es_store_open(&s, th_conninfo(), &err), ES_OK);
    append_some(s, "p", 20);
    th_assert_stream_is_feed(th_conninfo(), stream_name);
    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    ck_assert_int_eq(js_PurgeStream(js, stream_name, NULL, &jerr), NATS_OK);
    append_some(s, "q", 10);        /* wakes the relay, which meets the purge */
    /* the purged stream still says last sequence N: wait until the relay
     * has made it anew and republished (message 1 is there again) */
    for (int i = 0; i < 100 && !repaired(); i++)
        usleep(100 * 1000);
    ck_assert(repaired());
    th_assert_stream_is_feed(th_conninfo(), stream_name);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    es_store_close(s);
}
END_TEST

/* The largest event the store takes (1 MiB as stored) is published: the
 * NATS payload limit the project sets leaves room for its envelope. */
START_TEST(an_event_at_the_size_limit_is_published)
{
    static char data[ES_EVENT_SIZE_MAX_DEFAULT + 64];
    size_t fill = ES_EVENT_SIZE_MAX_DEFAULT - strlen("Big") - strlen("{\"a\": \"\"}");
    es_new_event e = {NULL, "Big", 1, data, NULL};
    es_append_req req = {"relaybig-1", ES_EXPECT_ANY, &e, 1};
    es_append_result res;
    es_store *s;
    es_error err;

    ck_assert_int_eq(es_store_open(&s, th_conninfo(), &err), ES_OK);
    memcpy(data, "{\"a\":\"", 6);
    memset(data + 6, 'x', fill + 1);
    memcpy(data + 6 + fill + 1, "\"}", 3);
    ck_assert_int_eq(es_store_append(s, &req, &res), ES_ETOOLARGE);     /* one byte over */
    memcpy(data + 6 + fill, "\"}", 3);
    ck_assert_int_eq(es_store_append(s, &req, &res), ES_OK);            /* at the limit */
    th_assert_stream_is_feed(th_conninfo(), stream_name);
    es_store_close(s);
}
END_TEST

/* ---- the pipeline: a relay of its own on a database of its own ---------- */

/* Starts a relay copying the feed of the database at conninfo into
 * stream (subjects <prefix>.events.>). */
static void
start_relay(th_daemon *d, const char *conninfo, const char *stream, const char *pfx)
{
    static char e[4][700];
    const char *env[] = {e[0], e[1], e[2], e[3], "ES_RELAY_POLL_MS=20", NULL};

    snprintf(e[0], sizeof e[0], "ES_PG_CONNINFO=%s", conninfo);
    snprintf(e[1], sizeof e[1], "ES_NATS_URL=%s", getenv("ES_NATS_URL"));
    snprintf(e[2], sizeof e[2], "ES_RELAY_STREAM=%s", stream);
    snprintf(e[3], sizeof e[3], "ES_RELAY_SUBJECT_PREFIX=%s.events", pfx);
    th_daemon_start(d, "es-relay", "ES_RELAY_PORT", env);
}

/* A stream name and subject prefix no other run uses. */
static void
unique_stream(char *stream, size_t ssize, char *pfx, size_t psize)
{
    th_unique(stream, ssize, "P");
    for (char *c = stream; *c; c++)
        if (*c == '-')
            *c = '_';
    th_unique(pfx, psize, "p");
}

/* Appends n small events to the database at conninfo, 100 per append
 * (a backlog in a few hundred round trips). */
static void
append_backlog(const char *conninfo, const char *tag, int n)
{
    static char data[100][48];
    es_new_event ev[100];
    es_store *s;
    es_error err;

    ck_assert_int_eq(es_store_open(&s, conninfo, &err), ES_OK);
    for (int i = 0; i < n; i += 100) {
        size_t k = n - i < 100 ? (size_t)(n - i) : 100;
        char stream[80];
        es_append_req req = {stream, ES_EXPECT_ANY, ev, k};
        es_append_result res;

        snprintf(stream, sizeof stream, "relay%s-%d", tag, (i / 100) % 50);
        for (size_t j = 0; j < k; j++) {
            snprintf(data[j], sizeof data[j], "{\"i\":%d}", i + (int)j);
            ev[j] = (es_new_event){NULL, "Relayed", 1, data[j], NULL};
        }
        ck_assert_int_eq(es_store_append(s, &req, &res), ES_OK);
    }
    es_store_close(s);
}

static uint64_t
last_of(jsCtx *js, const char *stream)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    uint64_t last = 0;

    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) == NATS_OK) {
        last = si->State.LastSeq;
        jsStreamInfo_Destroy(si);
    }
    return last;
}

/*
 * The relay keeps a window of publishes in flight.  Killed with SIGKILL
 * in the middle of a large backlog, again and again, each time with
 * publishes sent and not yet acknowledged: every restart resumes from
 * the stream's last message, and in the end message n is still the
 * feed's n-th event, none missing, none twice.
 */
START_TEST(killed_mid_pipeline_the_stream_stays_the_feed)
{
    enum { EVENTS = 20000, KILLS = 5 };
    char db[64], conninfo[700], stream[64], pfx[64];
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    th_daemon *d = &own;
    int before_the_end = 0;

    th_db_create(db, sizeof db, conninfo, sizeof conninfo);
    unique_stream(stream, sizeof stream, pfx, sizeof pfx);
    append_backlog(conninfo, "k", EVENTS);
    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    for (int k = 1; k <= KILLS; k++) {
        uint64_t at = (uint64_t)EVENTS * (uint64_t)k / (KILLS + 1);

        start_relay(d, conninfo, stream, pfx);
        /* kill it once the stream passes the k-th mark, mid-flight */
        for (int i = 0; i < 120000 && last_of(js, stream) < at; i++)
            usleep(500);
        th_daemon_kill(d);
        if (last_of(js, stream) < EVENTS)
            before_the_end++;
    }
    start_relay(d, conninfo, stream, pfx);
    th_assert_stream_is_feed(conninfo, stream);
    ck_assert_int_eq(th_daemon_stop(d), 0);
    /* not a condition (it depends on the machine's speed), a note on
     * what the test exercised */
    fprintf(stderr, "killed_mid_pipeline: %d of %d kills came before the stream had every "
            "event\n", before_the_end, KILLS);
    th_stream_delete(stream);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    th_db_drop(db);
}
END_TEST

/* The relay's /readyz status, its body in body. */
static int
readyz(const th_daemon *d, char *body, size_t size)
{
    th_response r;
    int st = th_http(d->port, "GET", "/readyz", NULL, NULL, &r);

    snprintf(body, size, "%s", r.body ? r.body : "");
    th_response_free(&r);
    return st;
}

/*
 * An event the stream refuses in the middle of a window (here: bigger
 * than the stream's largest message) makes every later publish of the
 * window fail too, each expecting the sequence before it: the stream
 * ends exactly before that event, never after a gap.  The relay tries it
 * again from the stream's last message, reports publish_stuck after five
 * tries, and once the stream takes it, publishes the rest, so that the
 * stream is the feed.
 */
START_TEST(an_event_refused_mid_window_stops_the_relay_exactly_there)
{
    enum { BEFORE = 300, AFTER = 300 };
    static char big[4096];
    char db[64], conninfo[700], stream[64], pfx[64], subjects[80], body[2048];
    const char *subj[1] = {subjects};
    es_new_event e = {NULL, "Big", 1, big, NULL};
    es_append_req req = {"relaybig-1", ES_EXPECT_ANY, &e, 1};
    es_append_result res;
    es_position at = {0, 0};
    char big_id[ES_UUID_LEN + 1] = "", want[ES_POSITION_TEXT_MAX];
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamConfig cfg;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsMsg *m = NULL;
    const char *hp = NULL;
    es_store *s;
    es_error err;
    es_page *p;
    th_daemon *d = &own;
    size_t b;
    int st = 0;

    th_db_create(db, sizeof db, conninfo, sizeof conninfo);
    unique_stream(stream, sizeof stream, pfx, sizeof pfx);
    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    /* the stream as the relay makes it, but with messages of 2 KB at most */
    snprintf(subjects, sizeof subjects, "%s.events.>", pfx);
    jsStreamConfig_Init(&cfg);
    cfg.Name = stream;
    cfg.Subjects = subj;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Duplicates = 600LL * 1000 * 1000 * 1000;
    cfg.MaxMsgSize = 2048;
    ck_assert_int_eq(js_AddStream(&si, js, &cfg, NULL, &jerr), NATS_OK);
    jsStreamInfo_Destroy(si);
    si = NULL;

    /* 300 events, one of 3 KB, 300 more: one page, one window */
    append_backlog(conninfo, "m", BEFORE);
    memcpy(big, "{\"a\":\"", 6);
    memset(big + 6, 'x', 3000);
    memcpy(big + 3006, "\"}", 3);
    ck_assert_int_eq(es_store_open(&s, conninfo, &err), ES_OK);
    ck_assert_int_eq(es_store_append(s, &req, &res), ES_OK);
    append_backlog(conninfo, "n", AFTER);
    /* where it is in the feed (the database may hold events of its own
     * before the backlog) */
    ck_assert_int_eq(es_store_read_feed(s, at, 2 * (BEFORE + AFTER), &p, &err), ES_OK);
    for (b = 0; b < p->count && strcmp(p->events[b].stream_id, "relaybig-1") != 0; b++)
        ;
    ck_assert_uint_ge(b, BEFORE);
    ck_assert_uint_lt(b, p->count);
    snprintf(big_id, sizeof big_id, "%s", p->events[b].event_id);
    es_position_format(p->events[b - 1].position, want);
    es_page_destroy(p);

    start_relay(d, conninfo, stream, pfx);
    /* (a relay not yet past its first lock is not ready either) */
    for (int i = 0; i < 300 && (st != 503 || !strstr(body, "publish_stuck")); i++) {
        usleep(100 * 1000);
        st = readyz(d, body, sizeof body);
    }
    ck_assert_int_eq(st, 503);
    ck_assert_msg(strstr(body, "publish_stuck") != NULL && strstr(body, big_id) != NULL,
                  "not stuck on event %s: %s", big_id, body);
    /* the stream ends with the event before it: nothing after a gap */
    ck_assert_uint_eq(last_of(js, stream), b);
    ck_assert_int_eq(js_GetMsg(&m, js, stream, b, NULL, &jerr), NATS_OK);
    ck_assert_int_eq(natsMsgHeader_Get(m, "Es-Position", &hp), NATS_OK);
    ck_assert_str_eq(hp, want);
    natsMsg_Destroy(m);
    usleep(500 * 1000);
    ck_assert_uint_eq(last_of(js, stream), b);

    /* the stream takes it now: the relay goes on, the stream is the feed */
    cfg.MaxMsgSize = -1;
    ck_assert_int_eq(js_UpdateStream(&si, js, &cfg, NULL, &jerr), NATS_OK);
    jsStreamInfo_Destroy(si);
    th_assert_stream_is_feed(conninfo, stream);
    for (int i = 0; i < 50 && st != 200; i++) {
        usleep(100 * 1000);
        st = readyz(d, body, sizeof body);
    }
    ck_assert_int_eq(st, 200);
    ck_assert_int_eq(th_daemon_stop(d), 0);
    th_stream_delete(stream);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    es_store_close(s);
    th_db_drop(db);
}
END_TEST

int
main(void)
{
    Suite *su = suite_create("relay");
    TCase *tc = tcase_create("relay");
    const char *env[] = {envs[0], envs[1], envs[2], envs[3], "ES_RELAY_POLL_MS=20", NULL};
    int rc;

    th_unique(stream_name, sizeof stream_name, "T");
    for (char *c = stream_name; *c; c++)
        if (*c == '-')
            *c = '_';
    th_unique(prefix, sizeof prefix, "t");
    snprintf(envs[0], sizeof envs[0], "ES_PG_CONNINFO=%s", th_conninfo());
    snprintf(envs[1], sizeof envs[1], "ES_NATS_URL=%s", getenv("ES_NATS_URL"));
    snprintf(envs[2], sizeof envs[2], "ES_RELAY_STREAM=%s", stream_name);
    snprintf(envs[3], sizeof envs[3], "ES_RELAY_SUBJECT_PREFIX=%s.events", prefix);
    th_daemon_start(&relays[0], "es-relay", "ES_RELAY_PORT", env);
    th_daemon_start(&relays[1], "es-relay", "ES_RELAY_PORT", env);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, stream_is_the_feed_after_a_crash);
    tcase_add_test(tc, a_foreign_message_stops_the_relay_and_is_never_followed);
    tcase_add_test(tc, a_purged_stream_is_republished_from_the_store);
    tcase_add_test(tc, an_event_at_the_size_limit_is_published);
    tcase_add_test(tc, killed_mid_pipeline_the_stream_stays_the_feed);
    tcase_add_test(tc, an_event_refused_mid_window_stops_the_relay_exactly_there);
    suite_add_tcase(su, tc);
    rc = th_run_nofork(su);     /* the test kills a daemon it owns */
    rc |= th_daemon_stop(&relays[0]);
    rc |= th_daemon_stop(&relays[1]);
    nats_Close();
    return rc;
}
