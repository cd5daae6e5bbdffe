/*
 * Read models in Redis: the key layout, and the three Lua scripts through
 * which every process touches them.
 *
 * Keys of projection <name>:
 *   rm:<name>:active            the version queries read (a decimal number)
 *   rm:<name>:building          the version a rebuild is writing, if any
 *   rm:<name>:retired           set of versions whose keys are being deleted
 *   rm:<name>:stopped           hash: why the live projection stopped
 *   rm:<name>:<v>:checkpoint    hash {seq, position}: the last event applied
 *   rm:<name>:<v>:<key>         the read model's own keys
 *   channel rm:<name>:applied   "<v> <seq> <position>" after each batch
 *
 * A batch is a run of events, each with its feed sequence (the JetStream
 * sequence: the event's 1-based ordinal in feed order), its store position
 * and the Redis commands that apply it.  Every command names exactly one
 * key, as its first argument, relative to the version's prefix.  The apply
 * script runs the whole batch atomically: an event at or below the
 * checkpoint is skipped, the next one (checkpoint + 1) is applied and
 * becomes the checkpoint, and one beyond it (a gap) stops the batch there.
 *
 * Errors say their kind as data, never only in words: ES_EUNAVAILABLE when
 * Redis did not answer (err->transient is set); ES_EINTERNAL, code
 * "redis_error", when it answered with an error or a reply of the wrong
 * shape, with err->transient set when Redis' error code says the
 * condition passes (LOADING, BUSY, OOM, READONLY...: try again later) and
 * clear when it is a refusal (WRONGTYPE, a script error: the same request
 * would fail again); ES_ENOMEM when memory ran out building a request.
 */
#ifndef ES_READMODEL_H
#define ES_READMODEL_H

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "status.h"

#define ES_RM_NAME_MAX 32
#define ES_RM_POSITION_MAX 48

/* Connects to ES_REDIS_HOST:ES_REDIS_PORT (defaults 127.0.0.1:56379) with a
 * timeout and selects database ES_REDIS_DB (default 0; the tests and the
 * benchmarks use their own); NULL with err set when Redis does not answer.
 * Channels are not per database: a message on rm:<name>:applied is only
 * ever a hint to read again, never a position to trust. */
redisContext *es_rm_connect(es_error *err);

/* ---- building a batch ------------------------------------------------- */

typedef struct es_rm_arg {
    size_t off, len;            /* bytes in the arena, or ... */
    long long num;              /* ... this number, when is_num */
    bool is_num;
} es_rm_arg;

typedef struct es_rm_batch {
    es_buf arena;
    es_rm_arg *args;
    size_t n, cap;
    size_t events;              /* events in the batch */
    size_t ncmd_at, argc_at;    /* counters being filled (index of arg) */
    uint64_t last_seq;
    bool failed;                /* allocation failed */
    es_buf wire;                /* formatting space, kept between batches */
} es_rm_batch;

/* Starts an empty batch for projection name; version NULL or "" applies
 * to the active version (created as "1" when there is none). */
void es_rm_batch_init(es_rm_batch *b, const char *name, const char *version);
void es_rm_batch_free(es_rm_batch *b);
/* Empties b for another batch, keeping its memory. */
void es_rm_batch_reset(es_rm_batch *b, const char *name, const char *version);
/* Where a batch is, to go back there when an event cannot be added. */
typedef struct es_rm_mark {
    size_t n, arena_len, events, ncmd_at, argc_at;
    uint64_t last_seq;
} es_rm_mark;
es_rm_mark es_rm_batch_mark(const es_rm_batch *b);
void es_rm_batch_rewind(es_rm_batch *b, es_rm_mark m);
/* Starts the next event; its commands follow. */
void es_rm_batch_event(es_rm_batch *b, uint64_t seq, const char *position);
/* Starts a command: es_rm_cmd(b, "HSET", "order:%s", id), then its args. */
void es_rm_cmd(es_rm_batch *b, const char *name, const char *keyfmt, ...)
    __attribute__((format(printf, 3, 4)));
void es_rm_arg_str(es_rm_batch *b, const char *s);
void es_rm_arg_int(es_rm_batch *b, long long v);
void es_rm_arg_fmt(es_rm_batch *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON value as compact text (keys in insertion order). */
void es_rm_arg_json(es_rm_batch *b, const json_t *v);

typedef struct es_rm_applied {
    char version[24];
    uint64_t seq;               /* checkpoint after the batch */
    char position[ES_RM_POSITION_MAX];
    uint64_t applied;           /* events applied (not skipped) */
    bool gap;                   /* stopped at an event beyond checkpoint + 1 */
    uint64_t failed_seq;        /* non-zero: Redis refused a command of this
                                   event (some of its commands may be applied) */
    char failed_why[200];
    bool failed_partial;        /* some of that event's commands were applied */
    bool failed_transient;      /* Redis' error passes (out of memory, loading,
                                   read-only replica, busy...): when nothing of
                                   the event was applied, try it again later */
} es_rm_applied;

/* Runs the batch and waits for the answer. */
es_status es_rm_apply(redisContext *c, es_rm_batch *b, es_rm_applied *out, es_error *err);

/* The single writer's path (a rebuild owns its version): the batch, whose
 * version must be explicit and whose events must follow its checkpoint
 * exactly, as MULTI / commands / new checkpoint / EXEC, pipelined.
 * *replies is what es_rm_write_recv must read. */
es_status es_rm_write_send(redisContext *c, es_rm_batch *b, size_t *replies, es_error *err);
es_status es_rm_write_recv(redisContext *c, size_t replies, es_error *err);

/* ---- versions --------------------------------------------------------- */

typedef struct es_rm_state {
    char active[24];            /* "" when the projection has no version yet */
    char building[24];
    uint64_t seq;               /* checkpoint of the active version */
    char position[ES_RM_POSITION_MAX];
} es_rm_state;

es_status es_rm_state_get(redisContext *c, const char *name, es_rm_state *out, es_error *err);

/* The checkpoint of one version (0 and "" when it has none). */
es_status es_rm_checkpoint(redisContext *c, const char *name, const char *version, uint64_t *seq,
                           char *position, es_error *err);

/* Makes version the active one if its checkpoint has reached the active
 * version's; *switched says whether it did.  The old version is added to
 * rm:<name>:retired. */
es_status es_rm_switch(redisContext *c, const char *name, const char *version, bool *switched,
                       es_error *err);

/* Deletes every key of a retired version and removes it from the set. */
es_status es_rm_drop_version(redisContext *c, const char *name, const char *version,
                             es_error *err);

/* ---- reading ---------------------------------------------------------- */

/*
 * Runs read commands on one version (NULL/"": the active one) atomically
 * with reading its checkpoint.  cmds is an array of argv arrays, each
 * NULL-terminated, whose second element is a key relative to the prefix.
 * The reply is an array: version, seq, position, then one reply per
 * command.  Free it with freeReplyObject.
 */
es_status es_rm_read(redisContext *c, const char *name, const char *version,
                     const char *const *const *cmds, size_t ncmds, redisReply **out,
                     es_error *err);

/* A string field of a flat HGETALL reply, or NULL. */
const char *es_rm_hash_get(const redisReply *hash, const char *field);

/* Every key of one version of projection name but its checkpoint, as
 * sorted lines "key<TAB>type<TAB>contents" (the key relative to the
 * version; the contents as compact JSON, a hash's fields sorted), so that
 * two versions compare line by line.  Free with es_rm_dump_free. */
es_status es_rm_dump(redisContext *c, const char *name, const char *version, char ***lines,
                     size_t *n, es_error *err);
void es_rm_dump_free(char **lines, size_t n);


#endif
