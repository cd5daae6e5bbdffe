/*
 * Projection rebuilds started from the operator console: es-query runs
 * projector/rebuild.c's pj_rebuild_with on a thread of its own per
 * projection and keeps, in memory, how far the last one of each got, for
 * GET /v1/console/projections/<name>/rebuild and the overview.  The
 * Redis rebuild lock (es_rm_lock_take) still keeps a console rebuild and
 * an esctl one of the same projection apart.
 */
#ifndef QUERY_REBUILDS_H
#define QUERY_REBUILDS_H

#include <jansson.h>
#include <stdbool.h>

#include "status.h"

/* Starts a rebuild of projection name on a new thread, reading the store
 * with conninfo (copied), for principal (named in the log).  ES_ENOTFOUND
 * (unknown_projection) for an unknown name, ES_ECONFLICT
 * (rebuild_running) while this process still runs one of it,
 * ES_EUNAVAILABLE when the process is stopping or no thread starts. */
es_status rebuilds_start(const char *name, const char *conninfo, const char *principal,
                         es_error *err);

/* The last console rebuild of name in this process as a new object
 * {"projection", "state": running|done|failed|interrupted, "phase",
 * "version", "done", "total", "progress" (0..1; 1 once the new version is
 * active), "by", "started_at", "finished_at", "error"}, or NULL when
 * there was none. */
json_t *rebuilds_status(const char *name);

/* Waits for every rebuild thread to end (they stop on
 * es_daemon_stopping(), so call it once the process is stopping); true
 * when any rebuild ran (they used NATS). */
bool rebuilds_stop(void);

#endif
