/*
 * Waiting for read models to catch up (read-your-writes), without
 * polling: one thread subscribes to every projection's notices
 * (es_rm_notice_subscribe) on a Redis connection of its own and keeps, per
 * projection, the furthest position announced; request threads block on a
 * condition variable until an announcement reaches their token.
 *
 * An announcement is a hint, never the answer: it may come from a version
 * being rebuilt, not the active one, and Pub/Sub loses messages while the
 * subscriber reconnects.  So a waiter woken by it re-checks the active
 * version's checkpoint with es_rm_read, and re-checks anyway after a fallback
 * interval (50 ms while the subscriber is down, 500 ms while it is up).
 */
#ifndef QUERY_WATCH_H
#define QUERY_WATCH_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "event.h"
#include "status.h"

typedef struct watch watch;

/* Starts the subscriber thread (it connects, and reconnects with backoff,
 * on its own).  *out NULL on failure. */
es_status watch_start(watch **out, es_error *err);
/* Wakes every waiter; watch_wait returns false from then on.  Safe while
 * requests still run (w stays valid). */
void watch_cancel(watch *w);
/* Cancels, stops the thread and frees w; no request may still use it. */
void watch_stop(watch *w);

/* What a waiter has seen: taken before it checks the read model, so that
 * an announcement arriving during the check still wakes it. */
typedef struct watch_mark {
    uint64_t gen, epoch;
    struct timespec at;         /* CLOCK_MONOTONIC */
} watch_mark;

/* proj is an index into pj_projections. */
watch_mark watch_mark_take(watch *w, size_t proj);

/*
 * Blocks until projection proj may have reached token: an announcement at
 * or past it came after mark, the subscription was made again, the
 * fallback interval since mark passed, or deadline (CLOCK_MONOTONIC)
 * came.  False when the service is stopping.
 */
bool watch_wait(watch *w, size_t proj, es_position token, const watch_mark *mark,
                const struct timespec *deadline);

/* True while the subscription is up. */
bool watch_connected(watch *w);

#endif
