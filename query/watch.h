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
 *
 * A read that has to wait holds no HTTP thread: its connection is
 * suspended (es_http_defer) and its wait parked here (watch_park).  A
 * second thread of the watch, the waker, re-checks parked waits whose
 * projection announced a position at or past their token, whose fallback
 * interval passed or whose deadline came, with one read_position per
 * projection for all of them, and hands each one back (finish) once the
 * checkpoint reached its token or its deadline came.  The number of
 * parked waits is capped.
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
 * on its own) and the waker; at most waits_max waits are parked at once.
 * *out NULL on failure. */
es_status watch_start(watch **out, size_t waits_max, es_error *err);
/* Wakes every waiter; from then on every parked
 * wait is finished as stopping, and watch_park refuses.  Safe while
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

/* True while the subscription is up. */
bool watch_connected(watch *w);

typedef struct watch_parked watch_parked;

/*
 * Runs on the waker thread.  stopping: the service is stopping, answer at
 * once and return true.  Otherwise the checkpoint reached the token, the
 * deadline came, or the check failed: return true once answered (p is
 * then the callback's, to free), false to stay parked (the read found the
 * active version still short of the token before the deadline).
 */
typedef bool (*watch_finish_fn)(watch_parked *p, bool stopping);

/* A parked wait, embedded in the caller's request state. */
struct watch_parked {
    size_t proj;                /* index into pj_projections */
    es_position token;
    struct timespec deadline;   /* CLOCK_MONOTONIC */
    watch_mark mark;            /* taken before the read that fell short */
    watch_finish_fn finish;
    /* the watch's own */
    struct timespec next_check;
    bool announced;             /* taken for an announcement at or past token */
    watch_parked *next;
};

typedef enum {
    WATCH_PARKED,               /* finish will run, once */
    WATCH_FULL,                 /* waits_max waits are parked already */
    WATCH_STOPPING              /* watch_cancel ran */
} watch_park_result;

/* Parks p (which must stay valid until its finish); on anything but
 * WATCH_PARKED, p is the caller's still and finish never runs. */
watch_park_result watch_park(watch *w, watch_parked *p);

/* Waits parked now, and the cap. */
size_t watch_parked_count(watch *w);
size_t watch_waits_max(watch *w);

#endif
