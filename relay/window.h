/*
 * The relay's window of publishes in flight: JetStream publishes sent
 * without waiting, each with Nats-Msg-Id = its event's id and
 * Nats-Expected-Last-Sequence = the sequence of the message before it,
 * whose acknowledgements nats.c hands to rl_window_on_ack on its own
 * thread.  Because every message names the sequence it must follow, a
 * message the stream refuses (or never sees) makes every later one in
 * the window fail with "wrong last sequence": the stream can only ever
 * hold a prefix of what was sent, in order, never a gap.  The window
 * reports that prefix (rl_window_acked) and the first event that did not
 * go through (rl_window_failure); the relay then drops what is still in
 * flight and resumes from the stream's last message.
 */
#ifndef RL_WINDOW_H
#define RL_WINDOW_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stdint.h>

#include "event.h"
#include "uuid.h"

typedef struct rl_window rl_window;

/* The first event of the window that was not stored. */
typedef struct rl_failure {
    es_position position;
    char event_id[ES_UUID_LEN + 1];
    char stream_id[ES_STREAM_ID_MAX + 1];
    bool resync;                /* not the event's fault: the stream's last sequence was not
                                   the one expected (another publisher, a lost tail) */
    natsStatus status;
    jsErrCode jerr;
    char why[256];
} rl_failure;

/* A window of at most size publishes in flight, and at most max_bytes of
 * their bodies (one message always goes, whatever its size); *out NULL
 * on failure (out of memory). */
bool rl_window_create(rl_window **out, size_t size, size_t max_bytes);
/* Frees it; nothing may be in flight (rl_window_abandon first). */
void rl_window_destroy(rl_window *w);

/* The jsOptions.PublishAsync.AckHandler of the relay's JetStream context,
 * with the window as closure.  Destroys msg. */
void rl_window_on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure);

/* Starts anew after the stream's last message: sequence seq, the event at
 * position after.  Nothing may be in flight. */
void rl_window_reset(rl_window *w, uint64_t seq, es_position after);

/*
 * Publishes *m, the message of event e, as the next sequence: waits while
 * the window is full.  On success nats.c owns the message and *m is NULL;
 * otherwise the caller still destroys *m.  False once anything failed: a
 * message in flight (refused, or unacknowledged for wait_ms), or this
 * publish itself; then the caller stops sending, calls rl_window_drain to
 * learn the first failure, and rl_window_abandon.
 */
bool rl_window_publish(rl_window *w, jsCtx *js, natsMsg **m, const es_event *e, int wait_ms);

/* Waits until everything sent is acknowledged (true) or the oldest
 * message still unacknowledged failed or waited wait_ms (false, see
 * rl_window_failure). */
bool rl_window_drain(rl_window *w, int wait_ms);

/* The first failure of the window, after rl_window_drain returned false. */
void rl_window_failure(rl_window *w, rl_failure *out);

/* Where the stream stands: the last acknowledged sequence and its event's
 * position; returns how many messages were acknowledged since the last
 * call. */
uint64_t rl_window_acked(rl_window *w, uint64_t *seq, es_position *pos);

/* Publishes in flight (sent, not yet acknowledged). */
size_t rl_window_in_flight(rl_window *w);

/* Forgets everything in flight: nats.c's pending messages are taken back
 * and destroyed (their acknowledgements, if any still come, are ignored).
 * The stream then holds some prefix of what was sent; the relay finds out
 * which from its last message. */
void rl_window_abandon(rl_window *w, jsCtx *js);

#endif
