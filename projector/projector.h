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

#include "env.h"
#include "feed.h"
#include "projections.h"
#include "readmodel.h"

/* Set by SIGINT/SIGTERM. */
extern atomic_bool pj_stop;

void pj_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Sleeps ms, waking early when pj_stop is set. */
void pj_sleep_ms(int ms);

int pj_rebuild_main(const char *name, bool dry_run);
int pj_status_main(void);

#endif
