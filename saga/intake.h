/*
 * Intake: turns the events stream into saga work (a flow's trigger) and
 * inbox entries (an event a saga waits for), atomically with the intake's
 * checkpoint in PostgreSQL.
 */
#ifndef SG_INTAKE_H
#define SG_INTAKE_H

#include <libpq-fe.h>
#include <stdint.h>

#include "feed.h"
#include "flow.h"
#include "status.h"

/* The feed sequence the intake has recorded (0: none). */
es_status sg_intake_checkpoint(PGconn *c, uint64_t *seq, es_error *err);

/* Records what batch b means for the sagas, in one transaction with the
 * checkpoint; *seq is the checkpoint before and after.  *woken counts the
 * sagas that got work.  ES_EUNAVAILABLE: nothing recorded (retry from
 * the checkpoint). */
es_status sg_intake_apply(PGconn *c, const es_feed_batch *b, uint64_t *seq, int *woken,
                          es_error *err);

#endif
