/*
 * What the projector's two halves share: the live loop (main.c, the
 * es-projector daemon) and the rebuilds and status of rebuild.c (run by
 * esctl) read the events stream the same way and stop on the same flag,
 * es_daemon_stopping().
 */
#ifndef PJ_PROJECTOR_H
#define PJ_PROJECTOR_H

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon.h"
#include "env.h"
#include "feed.h"
#include "log.h"
#include "projections.h"
#include "readmodel.h"
#include "store.h"

typedef struct pj_rebuild_report {
    char version[24];
    bool resumed, dry_run, interrupted;
    uint64_t replayed, seq;     /* events replayed; the checkpoint at the end */
    double seconds, rate;       /* of the replay from the store */
} pj_rebuild_report;

/* Rebuilds projection name into a new version and switches to it (see
 * rebuild.c), saying how it goes on stderr, with a progress bar on a
 * terminal.  With dry_run it only times a replay into scratch keys and
 * deletes them.  Stopped by SIGINT or SIGTERM (es_daemon_stopping), it
 * returns ES_OK with interrupted set; running it again resumes.  ES_ENOTFOUND for an unknown name,
 * ES_ECONFLICT when another rebuild of it runs. */
es_status pj_rebuild(const char *name, bool dry_run, pj_rebuild_report *rep, es_error *err);

/* What a caller other than esctl gives a rebuild (es-query's console):
 * the event store to read (NULL: es_pg_conninfo()), and a hook told each
 * step instead of the lines on stderr: phase "replay" (done of total
 * events of the stream; total 0 when NATS did not say), "handover",
 * "follow" and "switched" (the new version is active).  The hook runs on
 * the rebuild's thread and must not block. */
typedef struct pj_rebuild_hooks {
    const char *conninfo;
    void (*progress)(void *ctx, const char *phase, const char *version, uint64_t done,
                     uint64_t total);
    void *ctx;
} pj_rebuild_hooks;

/* pj_rebuild with hooks (NULL: as pj_rebuild).  Rebuilds of different
 * projections may run at once on different threads of one process. */
es_status pj_rebuild_with(const char *name, bool dry_run, const pj_rebuild_hooks *hooks,
                          pj_rebuild_report *rep, es_error *err);

/* Replays the store's first upto events (0: all) into a new scratch
 * version of p, named in ver, with its checkpoint in *seq; the caller
 * deletes it (es_rm_drop_version).  Nobody reads a scratch version. */
es_status pj_scratch(es_store *store, redisContext *rc, const pj_projection *p, uint64_t upto,
                     char *ver, size_t size, uint64_t *seq, es_error *err);

/* One object per projection: projection, active, building, checkpoint,
 * lag (events of the stream not applied; null when NATS does not answer),
 * state (running or stopped), reason, parked and owner (its lease,
 * "<epoch> <instance>", null when none).  *stream_last is the stream's
 * last sequence when *have_last.  NULL with err set when Redis fails. */
json_t *pj_status(uint64_t *stream_last, bool *have_last, es_error *err);

#endif
