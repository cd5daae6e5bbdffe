/*
 * Park decisions: an operator's "projection P skips event N" (esctl
 * projection park), recorded as an event in the store so that every
 * reader of the feed decides alike: the live projector (main.c), a
 * rebuild and esctl verify's scratch replays (rebuild.c).
 *
 * Decisions live in stream projection-<name> (category "projection", a
 * protected one: only esctl writes it, through the store library), one
 * ProjectionEventParked event each {projection, seq, position?, reason,
 * by}; its schema is events/schema.c's.  A decision names the event by
 * its feed sequence (the stream sequence = the rebuild's count), and is
 * never taken back: the store is append-only.
 */
#ifndef PJ_PARK_H
#define PJ_PARK_H

#include <stdbool.h>
#include <stdint.h>

#include "event.h"
#include "status.h"
#include "store.h"

#define PJ_PARK_STREAM_PREFIX "projection-"
#define PJ_PARK_TYPE "ProjectionEventParked"
#define PJ_PARK_REASON_MAX 500

typedef struct pj_park {
    uint64_t seq;
    char position[ES_POSITION_TEXT_MAX];    /* "" when it was not known */
    char reason[PJ_PARK_REASON_MAX + 1];
    char by[201];
    char at[ES_TIME_TEXT_MAX];              /* when it was recorded */
} pj_park;

/* The decisions of one projection read so far. */
typedef struct pj_parks {
    pj_park *v;
    size_t n, cap;
    int64_t next;               /* the stream version to read from (0: all) */
} pj_parks;

#define PJ_PARKS_INIT {NULL, 0, 0, 0}

/* Reads the decisions for projection name recorded after those already
 * in p (none yet: all).  *added says how many came.  ES_OK also when
 * there is none; ES_EUNAVAILABLE and the like when the store fails: p
 * then keeps what it had and the whole pages read before the failure
 * (p->next is past them), so a caller that publishes p compares counts,
 * not *added. */
es_status pj_parks_load(es_store *s, const char *name, pj_parks *p, size_t *added, es_error *err);

/* Appends to dst the decisions of src it lacks (dst holds a prefix of
 * src: both grow only, in the order read).  *added says how many.  ES_OK,
 * or ES_ENOMEM (dst keeps what it had).  The live projector's park reader
 * thread reads into its own set and hands the new decisions over with
 * this (main.c). */
es_status pj_parks_sync(pj_parks *dst, const pj_parks *src, size_t *added, es_error *err);

/* The decision about event seq, or NULL. */
const pj_park *pj_parks_find(const pj_parks *p, uint64_t seq);

void pj_parks_free(pj_parks *p);

/* Records a decision (fields as pj_park; position may be NULL or "").
 * ES_EINVALID (field named) when it breaks the schema, store errors as
 * es_store_append's. */
es_status pj_park_record(es_store *s, const char *name, uint64_t seq, const char *position,
                         const char *reason, const char *by, es_error *err);

#endif
