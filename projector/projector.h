/*
 * What es-projector's two halves share: the live loop (main.c) and the
 * rebuild and status commands (rebuild.c) read the events stream the same
 * way and stop on the same flag.
 */
#ifndef PJ_PROJECTOR_H
#define PJ_PROJECTOR_H

#include <nats/nats.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "projections.h"
#include "readmodel.h"

/* Set by SIGINT/SIGTERM. */
extern atomic_bool pj_stop;

void pj_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *pj_env(const char *name, const char *def);
/* Sleeps ms, waking early when pj_stop is set. */
void pj_sleep_ms(int ms);

typedef struct pj_nats {
    natsConnection *nc;
    jsCtx *js;
    char stream[64], subjects[80];
} pj_nats;

es_status pj_nats_open(pj_nats *n, es_error *err);
void pj_nats_close(pj_nats *n);
/* An ordered consumer of the events stream from sequence from. */
es_status pj_nats_subscribe(pj_nats *n, uint64_t from, natsSubscription **out, es_error *err);
es_status pj_nats_last_seq(pj_nats *n, uint64_t *last, es_error *err);

/* Decoded messages; bad[i] (malloc'd) says why ev[i] could not be. */
typedef struct pj_msgs {
    pj_event *ev;
    char **bad;
    size_t n;
} pj_msgs;

es_status pj_nats_take(natsSubscription *sub, int max, int wait_ms, pj_msgs *out,
                       es_error *err);
void pj_msgs_free(pj_msgs *m);

int pj_rebuild_main(const char *name, bool dry_run);
int pj_status_main(void);

#endif
