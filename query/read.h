/*
 * Reads of es-query: each HTTP worker thread's own Redis connection, and
 * the read of one view (a document or a page) from the active version of
 * one read model, so that the answer comes from a single atomic es_rm_read.
 *
 * A view whose keys depend on data (a page of ids, a saga's step names)
 * needs two rounds: its "index" commands first, then the same index
 * commands again together with the "detail" commands built from the first
 * answer, pinned to the same version.  When the index replies of both
 * rounds are equal, the second reply alone is a consistent answer; when
 * they differ (a write landed in between), the round is repeated with the
 * newer index.  See read_view.
 */
#ifndef QUERY_READ_H
#define QUERY_READ_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "readmodel.h"
#include "status.h"

/* ---- the thread's connection ------------------------------------------ */

/* Creates the thread-local key; once, before the HTTP server starts. */
int read_conn_init(void);
/* Deletes the key (after every thread that used it has ended). */
void read_conn_fini(void);

/*
 * Runs fn on this thread's Redis connection, connecting on first use.  A
 * connection that fails with an I/O error is freed; if it was an old one
 * (Redis restarted since it was made), fn runs once more on a new one, so
 * only a Redis that is down now fails the call.  fn must be safe to run
 * twice (reads are).  Returns fn's status; ES_EUNAVAILABLE with err set
 * when Redis does not answer.
 */
typedef es_status (*read_fn)(redisContext *c, void *ctx, es_error *err);
es_status read_run(read_fn fn, void *ctx, es_error *err);

/* ---- commands --------------------------------------------------------- */

/* A list of read commands for es_rm_read, built like an es_rm_batch. */
typedef struct read_cmds {
    es_buf text;                /* every argument, each NUL-terminated */
    size_t *offs;               /* offset of each argument; SIZE_MAX ends a command */
    size_t n, cap, ncmds;
    bool failed;                /* allocation failed or a key was too long */
    const char **args;          /* filled by read_cmds_argv */
    const char ***cmds;
} read_cmds;

/* Starts a command; its key is keyfmt relative to the version's prefix. */
void read_cmd(read_cmds *c, const char *name, const char *keyfmt, ...)
    __attribute__((format(printf, 3, 4)));
void read_arg(read_cmds *c, const char *arg);
void read_cmds_free(read_cmds *c);

/* ---- views ------------------------------------------------------------ */

typedef struct read_view_def {
    const char *projection;
    /* Adds the commands whose replies decide which keys to read next. */
    void (*index)(const void *args, read_cmds *out);
    /* Adds the commands for the keys named by the index replies (which may
     * be fewer than nidx when the projection has no version yet); NULL
     * when the index commands are the whole view. */
    void (*detail)(const void *args, const redisReply *const *idx, size_t nidx,
                   read_cmds *out);
} read_view_def;

typedef struct read_result {
    redisReply *index_reply, *detail_reply;     /* owned; may be the same */
    const redisReply *const *idx;               /* index replies */
    size_t nidx;                                /* 0: the projection has no version */
    const redisReply *const *det;               /* detail replies */
    size_t ndet;
    char version[24];
    char position[ES_RM_POSITION_MAX];             /* of the answer; "0-0" before any event */
    bool atomic;                                /* idx and det come from one read */
} read_result;

/*
 * Reads view def with args from the active version of its projection, on
 * the thread's connection.  ES_EUNAVAILABLE: Redis did not answer, or the
 * version kept changing (code read_model_busy); ES_EINTERNAL: Redis
 * refused a command.  On success the caller frees out with
 * read_result_free.
 */
es_status read_view(const read_view_def *def, const void *args, read_result *out,
                    es_error *err);
void read_result_free(read_result *r);

/* ---- replica reads ---------------------------------------------------- */

/* Whether ES_QUERY_READ_REPLICA=1 (read by read_conn_init). */
bool read_replica_on(void);

/*
 * read_view on this thread's replica connection (es_rm_connect_replica,
 * made on first use; its link to the primary is checked again every
 * second).  The answer's position is the checkpoint read in the same
 * atomic read as its data, so the caller can tell whether it is recent
 * enough and read the primary otherwise.  Any failure (no replica, a
 * replica cut off from its primary, an I/O error) returns its status
 * and pauses replica reads for a second: the caller reads the primary.
 */
es_status read_view_replica(const read_view_def *def, const void *args, read_result *out,
                            es_error *err);

typedef enum read_replica_outcome {
    READ_REPLICA_SERVED,        /* answered from the replica */
    READ_REPLICA_BEHIND,        /* short of consistent_with: read the primary */
    READ_REPLICA_FAILED,        /* no replica or an error: read the primary */
    READ_REPLICA_OUTCOMES
} read_replica_outcome;

/* Counts one replica read (es_query_replica_reads_total). */
void read_replica_count(read_replica_outcome outcome);
unsigned long long read_replica_counted(read_replica_outcome outcome);

/* The checkpoint position of the projection's active version, "0-0" when
 * it has none: the cheap check of a consistency wait. */
es_status read_position(const char *projection, char *position, uint64_t *seq, es_error *err);

#endif
