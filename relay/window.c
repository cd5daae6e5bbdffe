/*
 * The window of publishes in flight (window.h): a ring of the events sent
 * and not yet settled, in the order sent, which is the order of the
 * sequences they must get.  The relay's thread adds at the head
 * (rl_window_publish); nats.c's reply thread settles slots
 * (rl_window_on_ack) and moves the tail over the acknowledged prefix;
 * the first slot that failed stops the tail for good, until
 * rl_window_abandon.
 *
 *   slot:  SENT --ack, seq as expected--> ACKED   (tail moves over it)
 *            |
 *            +--error, other seq, no ack in wait_ms, publish refused--> FAILED
 *                                          (tail stops: the window failed)
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "window.h"

#define EXPECTED_LAST_SEQ_HEADER "Nats-Expected-Last-Sequence"

typedef enum { SLOT_SENT, SLOT_ACKED, SLOT_FAILED } slot_state;

typedef struct slot {
    const natsMsg *msg;         /* identity of the message in flight (nats.c owns it) */
    uint64_t seq;               /* the sequence it must get */
    int64_t sent_ms;
    size_t bytes;               /* its body */
    slot_state state;
    rl_failure failure;         /* position, ids always; the rest once FAILED */
} slot;

struct rl_window {
    pthread_mutex_t mu;
    pthread_cond_t settled;     /* the tail moved, or the window failed */
    slot *slots;
    size_t size;                /* publishes in flight at most */
    size_t max_bytes;           /* their bodies' bytes at most (but always one) */
    size_t bytes;               /* in flight now */
    uint64_t head, tail;        /* slots sent, slots settled as acked (index n % size) */
    uint64_t next_seq;          /* the sequence the next publish must get */
    char prev_id[ES_UUID_LEN + 1];      /* the event sent last, "" after a reset */
    uint64_t acked_seq;         /* the stream's last sequence as acknowledged */
    es_position acked_pos;
    uint64_t acked_new;         /* acknowledged since rl_window_acked */
    bool waiting;               /* the relay's thread waits on settled for: */
    size_t wake_at, wake_bytes; /* in flight <= wake_at and bytes <= wake_bytes */
    bool failed;                /* slots[tail] failed: nothing more is sent */
    bool published;             /* a publish went out (nats.c made its pending list) */
};

static int64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool
rl_window_create(rl_window **out, size_t size, size_t max_bytes)
{
    rl_window *w;
    pthread_condattr_t ca;

    *out = NULL;
    if (size < 1 || (w = calloc(1, sizeof *w)) == NULL)
        return false;
    if ((w->slots = calloc(size, sizeof *w->slots)) == NULL) {
        free(w);
        return false;
    }
    w->size = size;
    w->max_bytes = max_bytes;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->settled, &ca);
    pthread_condattr_destroy(&ca);
    *out = w;
    return true;
}

void
rl_window_destroy(rl_window *w)
{
    if (w == NULL)
        return;
    pthread_cond_destroy(&w->settled);
    pthread_mutex_destroy(&w->mu);
    free(w->slots);
    free(w);
}

void
rl_window_reset(rl_window *w, uint64_t seq, es_position after)
{
    pthread_mutex_lock(&w->mu);
    w->head = w->tail = 0;
    w->next_seq = seq + 1;
    w->prev_id[0] = '\0';
    w->acked_seq = seq;
    w->acked_pos = after;
    w->acked_new = 0;
    w->failed = false;
    w->bytes = 0;
    pthread_mutex_unlock(&w->mu);
}

/* Moves the tail over the acknowledged prefix; wakes the publisher when
 * it has room again or the window failed.  Under mu. */
static void
advance(rl_window *w)
{
    while (w->tail < w->head) {
        slot *s = &w->slots[w->tail % w->size];
        if (s->state != SLOT_ACKED)
            break;
        w->acked_seq = s->seq;
        w->acked_pos = s->failure.position;
        w->acked_new++;
        w->bytes -= s->bytes;
        w->tail++;
    }
    if (w->tail < w->head && w->slots[w->tail % w->size].state == SLOT_FAILED)
        w->failed = true;
    if (w->waiting && (w->failed || ((size_t)(w->head - w->tail) <= w->wake_at &&
                                     w->bytes <= w->wake_bytes))) {
        w->waiting = false;
        pthread_cond_broadcast(&w->settled);
    }
}

/* Whether a message of len bytes may be sent now.  Under mu. */
static bool
room(const rl_window *w, size_t len)
{
    size_t n = (size_t)(w->head - w->tail);

    return n == 0 || (n < w->size && w->bytes + len <= w->max_bytes);
}

static void
fail_slot(slot *s, bool resync, natsStatus status, jsErrCode jerr, const char *why)
{
    s->state = SLOT_FAILED;
    s->msg = NULL;
    s->failure.resync = resync;
    s->failure.status = status;
    s->failure.jerr = jerr;
    snprintf(s->failure.why, sizeof s->failure.why, "%s", why);
}

void
rl_window_on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    rl_window *w = closure;
    uint64_t n;

    (void)js;
    pthread_mutex_lock(&w->mu);
    /* acknowledgements come in the order sent: the first unsettled slot
     * is almost always the one; a message abandoned is in no slot */
    for (n = w->tail; n < w->head; n++) {
        slot *s = &w->slots[n % w->size];
        char why[200];

        if (s->state != SLOT_SENT || s->msg != msg)
            continue;
        if (pa != NULL && pa->Sequence == s->seq) {
            s->state = SLOT_ACKED;      /* stored, or stored before exactly there */
            s->msg = NULL;
        } else if (pa != NULL) {
            snprintf(why, sizeof why, "stored as sequence %llu, not %llu%s",
                     (unsigned long long)pa->Sequence, (unsigned long long)s->seq,
                     pa->Duplicate ? " (a duplicate)" : "");
            fail_slot(s, true, NATS_OK, 0, why);
        } else {
            fail_slot(s, pae->ErrCode == JSStreamWrongLastSequenceErr ||
                             pae->ErrCode == JSStreamWrongLastMsgIDErr, pae->Err, pae->ErrCode,
                      pae->ErrText != NULL && pae->ErrText[0] ? pae->ErrText
                                                               : natsStatus_GetText(pae->Err));
        }
        advance(w);
        break;
    }
    pthread_mutex_unlock(&w->mu);
    natsMsg_Destroy(msg);
}

/* Fails the oldest unsettled slot if it has waited wait_ms; else the
 * absolute time to wait until for it.  Under mu, with something in flight. */
static bool
timed_out(rl_window *w, int wait_ms, struct timespec *until)
{
    slot *s = &w->slots[w->tail % w->size];
    int64_t deadline = s->sent_ms + wait_ms, now = now_ms();

    if (now >= deadline) {
        char why[80];
        snprintf(why, sizeof why, "no acknowledgement in %d ms", wait_ms);
        fail_slot(s, false, NATS_TIMEOUT, 0, why);
        advance(w);
        return true;
    }
    until->tv_sec = deadline / 1000;
    until->tv_nsec = (deadline % 1000) * 1000000L;
    return false;
}

bool
rl_window_publish(rl_window *w, jsCtx *js, natsMsg **m, const es_event *e, int wait_ms)
{
    char expect[24], prev_id[ES_UUID_LEN + 1];
    jsPubOptions opts;
    natsStatus st;
    slot *s;
    uint64_t n;

    size_t len = (size_t)natsMsg_GetDataLength(*m);

    pthread_mutex_lock(&w->mu);
    while (!w->failed && !room(w, len)) {
        struct timespec until;
        /* full: wait until a quarter has drained, not for each ack */
        w->wake_at = w->size - (w->size / 4 > 0 ? w->size / 4 : 1);
        w->wake_bytes = len < w->max_bytes ? w->max_bytes - len : 0;
        w->waiting = true;
        if (!timed_out(w, wait_ms, &until))
            pthread_cond_timedwait(&w->settled, &w->mu, &until);
    }
    w->waiting = false;
    if (w->failed) {
        pthread_mutex_unlock(&w->mu);
        return false;
    }
    n = w->head++;
    s = &w->slots[n % w->size];
    s->msg = *m;                /* before the publish: its ack may come first */
    s->seq = w->next_seq++;
    s->sent_ms = now_ms();
    s->bytes = len;
    w->bytes += len;
    s->state = SLOT_SENT;
    s->failure.position = e->position;
    snprintf(s->failure.event_id, sizeof s->failure.event_id, "%s", e->event_id);
    snprintf(s->failure.stream_id, sizeof s->failure.stream_id, "%s", e->stream_id);
    memcpy(prev_id, w->prev_id, sizeof prev_id);
    snprintf(w->prev_id, sizeof w->prev_id, "%s", e->event_id);
    pthread_mutex_unlock(&w->mu);

    /* The sequence alone is not enough: if someone else's message took
     * the sequence of one in flight, the next would follow it.  So each
     * message but the first also names the event before it, which the
     * stream then must hold last.  (The first follows the message
     * resume() checked.)  The sequence is set even for 0 (an empty
     * stream), which jsPubOptions.ExpectLastSeq leaves out. */
    snprintf(expect, sizeof expect, "%llu", (unsigned long long)(s->seq - 1));
    jsPubOptions_Init(&opts);
    opts.MsgId = e->event_id;
    opts.ExpectLastMsgId = prev_id[0] ? prev_id : NULL;
    st = natsMsgHeader_Set(*m, EXPECTED_LAST_SEQ_HEADER, expect);
    if (st == NATS_OK)
        st = js_PublishMsgAsync(js, m, &opts);
    if (st == NATS_OK) {
        w->published = true;    /* only this thread reads it */
        return true;
    }
    /* not sent (or not known to be): no acknowledgement will come; the
     * message is still the caller's */
    pthread_mutex_lock(&w->mu);
    fail_slot(s, false, st, 0, nats_GetLastError(NULL) ? nats_GetLastError(NULL)
                                                        : natsStatus_GetText(st));
    w->failed = true;           /* send nothing after it */
    advance(w);
    pthread_mutex_unlock(&w->mu);
    return false;
}

bool
rl_window_drain(rl_window *w, int wait_ms)
{
    bool ok;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        struct timespec until;

        if (w->tail == w->head || w->slots[w->tail % w->size].state == SLOT_FAILED)
            break;
        w->wake_at = 0;
        w->wake_bytes = 0;
        w->waiting = true;
        if (!timed_out(w, wait_ms, &until))
            pthread_cond_timedwait(&w->settled, &w->mu, &until);
    }
    w->waiting = false;
    ok = w->tail == w->head;
    if (!ok)
        w->failed = true;
    pthread_mutex_unlock(&w->mu);
    return ok;
}

void
rl_window_failure(rl_window *w, rl_failure *out)
{
    pthread_mutex_lock(&w->mu);
    if (w->tail < w->head)
        *out = w->slots[w->tail % w->size].failure;
    else
        memset(out, 0, sizeof *out);
    pthread_mutex_unlock(&w->mu);
}

uint64_t
rl_window_acked(rl_window *w, uint64_t *seq, es_position *pos)
{
    uint64_t n;

    pthread_mutex_lock(&w->mu);
    *seq = w->acked_seq;
    *pos = w->acked_pos;
    n = w->acked_new;
    w->acked_new = 0;
    pthread_mutex_unlock(&w->mu);
    return n;
}

size_t
rl_window_in_flight(rl_window *w)
{
    size_t n;

    pthread_mutex_lock(&w->mu);
    n = (size_t)(w->head - w->tail);
    pthread_mutex_unlock(&w->mu);
    return n;
}

void
rl_window_abandon(rl_window *w, jsCtx *js)
{
    natsMsgList pending = {NULL, 0};

    /* taken back from nats.c first: an acknowledgement that still comes
     * finds no message there; one being handled now finds no slot.  (Before
     * the first publish nats.c has no list, and 3.4 does not check.) */
    if (w->published && js_PublishAsyncGetPendingList(&pending, js) == NATS_OK)
        natsMsgList_Destroy(&pending);
    pthread_mutex_lock(&w->mu);
    for (uint64_t n = w->tail; n < w->head; n++)
        w->slots[n % w->size].msg = NULL;
    w->head = w->tail;
    w->bytes = 0;
    w->next_seq = w->acked_seq + 1;
    w->prev_id[0] = '\0';
    w->failed = false;
    pthread_mutex_unlock(&w->mu);
}
