/*
 * Aggregate snapshots: the latest state of a stream's aggregate as JSON,
 * with the stream version it reflects and the version of the code that
 * built it.  Rebuilding an aggregate reads its snapshot and only the
 * events after it, which keeps rehydration bounded however long the
 * stream grows.  Snapshots are a cache: losing one costs time, never
 * correctness, so saving one is best-effort.
 */
#ifndef ES_SNAPSHOT_H
#define ES_SNAPSHOT_H

#include <jansson.h>
#include <stdint.h>

#include "store.h"

/*
 * Loads the snapshot of stream taken by code state_version.  ES_OK with
 * *state (new reference) and *version set, or ES_ENOTFOUND (none, or one
 * from other code), or a store error.  *state is NULL unless ES_OK.
 */
es_status es_snapshot_load(es_store *s, const char *stream, int state_version,
                           json_t **state, int64_t *version, es_error *err);

/*
 * es_snapshot_load and the first page of the events after it (up to
 * limit; from the stream's start when there is no usable snapshot), in
 * one round trip: what rebuilding an aggregate reads first.  ES_OK with
 * *page (destroy it) and, when a snapshot was used, *state (new
 * reference) and *version; else *state NULL and *version -1.
 * ES_ENOTFOUND when the stream does not exist; a store error; or
 * ES_EINTERNAL (snapshot_invalid) as es_snapshot_load.  A page cut short
 * by the store's read budget is marked truncated, as es_store_read_stream's.
 */
es_status es_snapshot_read(es_store *s, const char *stream, int state_version, size_t limit,
                           json_t **state, int64_t *version, es_page **page, es_error *err);

/* Saves state (borrowed) as stream's snapshot at version, unless a newer
 * one is stored already. */
es_status es_snapshot_save(es_store *s, const char *stream, int state_version,
                           const json_t *state, int64_t version, es_error *err);

#endif
