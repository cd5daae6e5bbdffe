/*
 * Relay benchmark behind `make bench` (scripts/bench.sh starts es-relay,
 * prints the BENCH lines and the ratio).  Both sides are timed the same
 * way, by the stream's own clock: from the store time of its first
 * message to that of its last, so neither counts a program's start.
 *
 *   bench_relay raw STREAM SUBJECT_PREFIX N WINDOW
 *       the raw limit (nats_js_async): N messages shaped as the relay
 *       shapes the store's first events (same subjects, bodies and
 *       headers: Nats-Msg-Id, Es-Position, Nats-Expected-Last-Sequence,
 *       Nats-Expected-Last-Msg-Id) published into a new stream configured
 *       as the relay's, asynchronously with at most WINDOW unacknowledged,
 *       every acknowledgement awaited; the stream is deleted after;
 *       prints "messages_per_s=<x> messages=<n> errors=<n> wall_s=<x>
 *       cpu_s=<x>" (cpu_s: this program's own, user and system, while
 *       publishing)
 *   bench_relay delete STREAM
 *       deletes STREAM if it exists
 *   bench_relay wait STREAM N [SECONDS]
 *       waits (up to SECONDS, default 1200) until STREAM holds N messages
 *       (es-relay copying the store into it); prints
 *       "events_per_s=<x> events=<n> span_s=<x>"
 * The database is $ES_PG_CONNINFO, NATS $ES_NATS_URL.
 */
#include <nats/nats.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "codec.h"
#include "feed.h"
#include "store.h"

#define TEMPLATES 10000         /* distinct store events the messages are shaped on */

typedef struct template {
    char subject[128];
    char position[ES_POSITION_TEXT_MAX];
    char *body;
    int len;
} template;

static atomic_ullong errors;

static double
cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
on_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)closure;
    if (atomic_fetch_add(&errors, 1) == 0)
        fprintf(stderr, "bench_relay: publish failed: %s (%d)\n",
                pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err), (int)pae->ErrCode);
}

static bool
connect(natsConnection **nc, jsCtx **js, jsOptions *o)
{
    const char *url = getenv("ES_NATS_URL");

    if (natsConnection_ConnectTo(nc, url ? url : NATS_DEFAULT_URL) != NATS_OK ||
        natsConnection_JetStream(js, *nc, o) != NATS_OK) {
        fprintf(stderr, "bench_relay: could not connect to NATS: %s\n", nats_GetLastError(NULL));
        return false;
    }
    return true;
}

/* The stream's first and last store times (ns) and last sequence. */
static bool
stream_state(jsCtx *js, const char *stream, uint64_t *last, int64_t *first_ns, int64_t *last_ns)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;

    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) != NATS_OK)
        return false;
    *last = si->State.LastSeq;
    *first_ns = si->State.FirstTime;
    *last_ns = si->State.LastTime;
    jsStreamInfo_Destroy(si);
    return true;
}

/* Up to n events of the feed, encoded as es-relay encodes them. */
static size_t
load_templates(template *t, size_t n, const char *prefix)
{
    es_store *s = NULL;
    es_error err;
    es_position after = {0, 0};
    es_buf body = ES_BUF_INIT;
    size_t k = 0;

    if (es_store_open(&s, getenv("ES_PG_CONNINFO"), &err) != ES_OK) {
        fprintf(stderr, "bench_relay: %s\n", err.message);
        return 0;
    }
    while (k < n) {
        es_page *p = NULL;
        if (es_store_read_feed(s, after, n - k < 1000 ? n - k : 1000, &p, &err) != ES_OK) {
            fprintf(stderr, "bench_relay: %s\n", err.message);
            break;
        }
        for (size_t i = 0; i < p->count; i++, k++) {
            const es_event *e = &p->events[i];
            const char *dash = strchr(e->stream_id, '-');
            snprintf(t[k].subject, sizeof t[k].subject, "%s.%.*s.%s", prefix,
                     dash ? (int)(dash - e->stream_id) : 40, e->stream_id, e->type);
            es_position_format(e->position, t[k].position);
            es_buf_reset(&body);
            es_event_encode(&body, e, true);
            t[k].body = strndup(body.data, body.len);
            t[k].len = (int)body.len;
        }
        after = p->next;
        if (p->count == 0)
            k = n;              /* the store holds fewer: use what there is */
        es_page_destroy(p);
    }
    es_buf_free(&body);
    es_store_close(s);
    while (k > 0 && t[k - 1].body == NULL)
        k--;
    return k;
}

static int
raw(const char *stream, const char *prefix, uint64_t n, int window)
{
    static template t[TEMPLATES];
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsOptions o;
    jsStreamConfig cfg;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    char subjects[80], prev[48] = "", id[48], expect[24];
    const char *subj[1] = {subjects};
    size_t k = load_templates(t, n < TEMPLATES ? (size_t)n : TEMPLATES, prefix);
    uint64_t last = 0;
    int64_t first_ns = 0, last_ns = 0;
    double t0, wall, cpu0;
    int rc = 1;

    if (k == 0) {
        fprintf(stderr, "bench_relay: the store has no events to shape messages on\n");
        return 1;
    }
    jsOptions_Init(&o);
    o.PublishAsync.MaxPending = window;
    o.PublishAsync.StallWait = 30000;
    o.PublishAsync.ErrHandler = on_error;
    if (!connect(&nc, &js, &o))
        goto done;
    js_DeleteStream(js, stream, NULL, &jerr);
    snprintf(subjects, sizeof subjects, "%s.>", prefix);
    jsStreamConfig_Init(&cfg);              /* as relay/main.c makes its stream */
    cfg.Name = stream;
    cfg.Subjects = subj;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Duplicates = 600LL * 1000 * 1000 * 1000;
    if (js_AddStream(&si, js, &cfg, NULL, &jerr) != NATS_OK) {
        fprintf(stderr, "bench_relay: could not create stream %s (%d)\n", stream, (int)jerr);
        goto done;
    }
    jsStreamInfo_Destroy(si);
    t0 = now_s();
    cpu0 = cpu_s();
    for (uint64_t i = 0; i < n; i++) {
        const template *m = &t[i % k];
        natsMsg *msg = NULL;
        jsPubOptions po;
        natsStatus s;

        snprintf(id, sizeof id, "00000000-0000-4000-8000-%012llx",
                 (unsigned long long)(i & 0xffffffffffffULL));
        snprintf(expect, sizeof expect, "%llu", (unsigned long long)i);
        jsPubOptions_Init(&po);
        po.MsgId = id;
        po.ExpectLastMsgId = prev[0] ? prev : NULL;
        s = natsMsg_Create(&msg, m->subject, NULL, m->body, m->len);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(msg, ES_POSITION_HEADER, m->position);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(msg, "Nats-Expected-Last-Sequence", expect);
        if (s == NATS_OK)
            s = js_PublishMsgAsync(js, &msg, &po);
        natsMsg_Destroy(msg);
        if (s != NATS_OK) {
            fprintf(stderr, "bench_relay: publish %llu: %s\n", (unsigned long long)i,
                    nats_GetLastError(NULL));
            goto done;
        }
        memcpy(prev, id, sizeof prev);
    }
    if (js_PublishAsyncComplete(js, NULL) != NATS_OK)
        goto done;
    wall = now_s() - t0;
    cpu0 = cpu_s() - cpu0;
    if (!stream_state(js, stream, &last, &first_ns, &last_ns) || last != n) {
        fprintf(stderr, "bench_relay: the stream holds %llu messages, not %llu\n",
                (unsigned long long)last, (unsigned long long)n);
        goto done;
    }
    printf("messages_per_s=%.0f messages=%llu errors=%llu wall_s=%.3f cpu_s=%.2f\n",
           last_ns > first_ns ? (double)(n - 1) * 1e9 / (double)(last_ns - first_ns) : 0.0,
           (unsigned long long)n, (unsigned long long)atomic_load(&errors), wall, cpu0);
    rc = 0;
done:
    if (js != NULL)
        js_DeleteStream(js, stream, NULL, &jerr);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    for (size_t i = 0; i < k; i++)
        free(t[i].body);
    return rc;
}

static int
wait_for(const char *stream, uint64_t n, double seconds)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    uint64_t last = 0;
    int64_t first_ns = 0, last_ns = 0;
    double until = now_s() + seconds;
    int rc = 1;

    if (!connect(&nc, &js, NULL))
        goto done;
    while (now_s() < until) {
        if (stream_state(js, stream, &last, &first_ns, &last_ns) && last >= n)
            break;
        usleep(20 * 1000);
    }
    if (last < n) {
        fprintf(stderr, "bench_relay: stream %s holds %llu of %llu messages after %.0f s\n", stream,
                (unsigned long long)last, (unsigned long long)n, seconds);
        goto done;
    }
    printf("events_per_s=%.0f events=%llu span_s=%.3f\n",
           last_ns > first_ns ? (double)(last - 1) * 1e9 / (double)(last_ns - first_ns) : 0.0,
           (unsigned long long)last, (double)(last_ns - first_ns) / 1e9);
    rc = 0;
done:
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return rc;
}

static int
delete(const char *stream)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    int rc = 1;

    if (connect(&nc, &js, NULL)) {
        natsStatus s = js_DeleteStream(js, stream, NULL, &jerr);
        rc = s == NATS_OK || jerr == JSStreamNotFoundErr ? 0 : 1;
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return rc;
}

int
main(int argc, char **argv)
{
    int rc = 2;

    if (argc == 6 && strcmp(argv[1], "raw") == 0)
        rc = raw(argv[2], argv[3], strtoull(argv[4], NULL, 10), atoi(argv[5]));
    else if (argc == 3 && strcmp(argv[1], "delete") == 0)
        rc = delete(argv[2]);
    else if ((argc == 4 || argc == 5) && strcmp(argv[1], "wait") == 0)
        rc = wait_for(argv[2], strtoull(argv[3], NULL, 10), argc == 5 ? atof(argv[4]) : 1200);
    else
        fprintf(stderr, "usage: bench_relay raw STREAM SUBJECT_PREFIX N WINDOW | "
                        "delete STREAM | wait STREAM N [SECONDS]\n");
    nats_Close();
    return rc;
}
