/*
 * Read models in Redis: the key layout, and the functions (and the Lua
 * scripts behind them) through which every process touches it.  This
 * module is the only code that spells a key; the daemons, esctl and the
 * query service name a projection and a version and call in here.
 *
 * Keys of projection <name>:
 *   rm:<name>:active            the version queries read (a decimal number)
 *   rm:<name>:building          the version a rebuild is writing, if any
 *   rm:<name>:next              the last version number handed out
 *   rm:<name>:retired           set of versions whose keys are being deleted
 *   rm:<name>:rebuilding        the rebuild lock: its holder's token, with a
 *                               30 s lease the holder renews
 *   rm:<name>:stopped           hash {seq, position, reason}: why the live
 *                               projection stopped at event seq
 *   rm:<name>:lease             "<epoch> <instance>": the es-projector that
 *                               owns the live projection, with a TTL it
 *                               renews; the fencing token of its batches
 *   rm:<name>:lease_epoch       the last epoch handed out (INCR)
 *   rm:<name>:candidates        zset of the instances that run the
 *                               projection, scored by when they expire
 *   rm:<name>:<v>:checkpoint    hash {seq, position}: the last event applied
 *   rm:<name>:<v>:<key>         the read model's own keys
 *   channel rm:<name>:applied   "<v> <seq> <position>" after each batch that
 *                               applied something, and after a switch
 *
 * and, outside every projection (so no projection may be named "trace"):
 *   rm:trace:<trace_id>         hash "<seq>:<projection>" -> Unix microseconds
 *                               when the live projector applied event seq
 *                               of that trace to that projection ("<seq>:"
 *                               for an event no projection wrote); expires
 *                               ES_TRACE_TTL seconds after its last write
 *                               (es_rm_trace_put, es_rm_trace_get)
 *
 * A version's life (projector/rebuild.c drives it, docs/ARCHITECTURE.md
 * draws it): es_rm_version_new numbers it, es_rm_building_set records it
 * as the one being built, batches fill it, es_rm_switch makes it active
 * (and the old one retired), es_rm_drop_version deletes a retired one.
 * Version 1 is born active at the live projector's first batch.
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
#define ES_RM_VERSION_MAX 24
#define ES_RM_POSITION_MAX 48

/* Connects to ES_REDIS_HOST:ES_REDIS_PORT (defaults 127.0.0.1:16379) with a
 * timeout, authenticates as ES_REDIS_USER with ES_REDIS_PASSWORD when a
 * password is set, and selects database ES_REDIS_DB (default 0; the tests
 * and the benchmarks use their own); NULL with err set when Redis does not
 * answer or refuses the credentials.
 * With ES_REDIS_SENTINELS set (host:port,... of Redis Sentinels) the
 * address comes from the first Sentinel that names the primary
 * ES_REDIS_MASTER_NAME (default "es"; ES_REDIS_SENTINEL_PASSWORD if the
 * Sentinels ask for one), and the server must say ROLE master, so a new
 * connection made after a failover reaches the promoted replica.
 * Channels are not per database: a message on rm:<name>:applied is only
 * ever a hint to read again, never a position to trust. */
redisContext *es_rm_connect(es_error *err);

/*
 * Connects to a replica of the primary, for reads only (es-query's
 * ES_QUERY_READ_REPLICA): at ES_REDIS_REPLICA (host:port) when set, else
 * the first replica the Sentinels (ES_REDIS_SENTINELS, SENTINEL replicas)
 * see up with its link to the primary up.  Same credentials, database and
 * timeouts as es_rm_connect; the server must pass es_rm_replica_check.
 * NULL with err set otherwise (ES_EINVALID, config_invalid, when neither
 * variable names one).  A replica serves what it has received so far: a
 * reader compares the checkpoint read with the data (es_rm_read) with
 * what it must have seen, and reads the primary when it is behind.
 */
redisContext *es_rm_connect_replica(es_error *err);

/* ES_OK when c is a replica whose link to its primary is up (ROLE slave,
 * connected); ES_EUNAVAILABLE (redis_unavailable) otherwise: a replica
 * cut off from its primary (or promoted, or re-syncing) goes on serving
 * what it had, with no bound on how old. */
es_status es_rm_replica_check(redisContext *c, es_error *err);

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
/* How many commands the event added last has so far (0: it writes nothing). */
size_t es_rm_batch_event_cmds(const es_rm_batch *b);
/* Starts a command: es_rm_cmd(b, "HSET", "order:%s", id), then its args. */
void es_rm_cmd(es_rm_batch *b, const char *name, const char *keyfmt, ...)
    __attribute__((format(printf, 3, 4)));
void es_rm_arg_str(es_rm_batch *b, const char *s);
void es_rm_arg_int(es_rm_batch *b, long long v);
void es_rm_arg_fmt(es_rm_batch *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON value as compact text (keys in insertion order). */
void es_rm_arg_json(es_rm_batch *b, const json_t *v);

typedef struct es_rm_applied {
    char version[ES_RM_VERSION_MAX];
    uint64_t seq;               /* checkpoint after the batch */
    char position[ES_RM_POSITION_MAX];
    uint64_t applied;           /* events applied (not skipped) */
    bool gap;                   /* stopped at an event beyond checkpoint + 1 */
    uint64_t failed_seq;        /* non-zero: Redis refused a command of this
                                   event (some of its commands may be applied) */
    char failed_why[200];
    bool failed_partial;        /* some of that event's commands were applied */
    bool failed_passed;         /* the checkpoint moved past it all the same (the
                                   transaction's way, es_rm_apply_all): only a
                                   rebuild puts it in */
    bool failed_transient;      /* Redis' error passes (out of memory, loading,
                                   read-only replica, busy...): when nothing of
                                   the event was applied, try it again later */
} es_rm_applied;

/* Runs the batch and waits for the answer. */
es_status es_rm_apply(redisContext *c, es_rm_batch *b, es_rm_applied *out, es_error *err);

/* The same, fenced by the projection's lease (lease NULL or "": not
 * fenced, as es_rm_apply): the script first checks that rm:<name>:lease
 * is exactly lease and else writes nothing and fails with ES_ECONFLICT,
 * code "lease_lost" (a deposed holder: it must stop writing). */
es_status es_rm_apply_fenced(redisContext *c, es_rm_batch *b, const char *lease,
                             es_rm_applied *out, es_error *err);

/* One batch of es_rm_apply_all: in, the batch and its lease token (NULL or
 * "": not fenced); out, what es_rm_apply_fenced would return and set. */
typedef struct es_rm_apply_job {
    es_rm_batch *batch;
    const char *lease;
    const char *version;        /* in, optional: the active version the caller
                                   last saw applying, and ... */
    uint64_t seq;               /* ... that version's checkpoint then; with
                                   them the batch may go the transaction's way
                                   (es_rm_apply_all) */
    es_status status;
    es_error err;
    es_rm_applied out;
    bool transaction;           /* out: it went the transaction's way */
    bool again_;                /* es_rm_apply_all's own */
} es_rm_apply_job;

/* ---- the projector's leases ------------------------------------------- */

/*
 * Several es-projector instances share the projections: each live
 * projection is owned by one instance at a time through a lease,
 * rm:<name>:lease, whose value "<epoch> <instance>" is the fencing token
 * every batch of the owner carries (es_rm_apply_fenced).  The epoch comes
 * from INCR rm:<name>:lease_epoch, so a token is never handed out twice.
 * Each call also records the caller as a live candidate for the
 * projection (rm:<name>:candidates, for ms); of the live candidates, the
 * one with the highest SHA-1 of "<name>\n<instance>" is preferred
 * (rendezvous hashing: the projections spread over the instances, and
 * few move when one comes or goes).
 *
 * es_rm_lease_hold: token is the caller's current token ("" when it holds
 * none; ES_RM_LEASE_MAX bytes); waited says the caller found the lease
 * FREE in its previous call.
 *   RENEWED: token holds it, its TTL is ms again.
 *   TAKEN: it was free and the caller is preferred (or waited: the
 *     preferred one did not take it); token is the new one (the caller
 *     must reread the checkpoint: another owner may have moved it).
 *   HANDED_OVER: token held it but another live candidate is preferred:
 *     the lease is dropped for that one (holder names it); token emptied.
 *   FREE: nobody holds it and another candidate is preferred (holder
 *     names it); call again with waited to take it if that one does not.
 *   OTHER: someone else holds it (holder; token emptied).
 * holder gets the value (size bytes; may be NULL).  es_rm_lease_release
 * drops the lease if token holds it; failures are ignored (the TTL ends
 * it anyway).
 */
#define ES_RM_LEASE_MAX 160
typedef enum es_rm_lease_outcome {
    ES_RM_LEASE_OTHER,
    ES_RM_LEASE_RENEWED,
    ES_RM_LEASE_TAKEN,
    ES_RM_LEASE_HANDED_OVER,
    ES_RM_LEASE_FREE
} es_rm_lease_outcome;
es_status es_rm_lease_hold(redisContext *c, const char *name, const char *instance, long ms,
                           bool waited, char *token, es_rm_lease_outcome *outcome, char *holder,
                           size_t size, es_error *err);
void es_rm_lease_release(redisContext *c, const char *name, const char *token);
/* The lease of projection name as it stands ("" when nobody holds it),
 * copied to holder (size bytes). */
es_status es_rm_lease_get(redisContext *c, const char *name, char *holder, size_t size,
                          es_error *err);

/* The single writer's path (a rebuild owns its version): the batch, whose
 * version must be explicit and whose events must follow its checkpoint
 * exactly, as MULTI / commands / new checkpoint / EXEC, pipelined.
 * *replies is what es_rm_write_recv must read.  es_rm_write_recv's error
 * is transient only when Redis refused the batch before running any of it
 * (a command refused while queued aborts the transaction); an error inside
 * the transaction's answer never is: the rest of it was applied. */
es_status es_rm_write_send(redisContext *c, es_rm_batch *b, size_t *replies, es_error *err);
es_status es_rm_write_recv(redisContext *c, size_t replies, es_error *err);

/* ---- versions --------------------------------------------------------- */

typedef struct es_rm_state {
    char active[ES_RM_VERSION_MAX];     /* "" when the projection has no version yet */
    char building[ES_RM_VERSION_MAX];
    uint64_t seq;               /* checkpoint of the active version */
    char position[ES_RM_POSITION_MAX];
} es_rm_state;

es_status es_rm_state_get(redisContext *c, const char *name, es_rm_state *out, es_error *err);

/* es_rm_lease_hold and es_rm_state_get of n projections at once, in two
 * pipelined round trips (the leases and versions, then the checkpoints)
 * instead of three sequential ones each: es-projector renews its leases
 * on the thread that applies the stream, which waited that long.  For
 * each ask: name, waited and token as es_rm_lease_hold's (token is
 * updated); outcome and holder as its answer, state as es_rm_state_get's,
 * read after the lease.  A failure leaves the asks partly filled. */
typedef struct es_rm_lease_ask {
    const char *name;
    bool waited;
    char token[ES_RM_LEASE_MAX];
    es_rm_lease_outcome outcome;
    char holder[ES_RM_LEASE_MAX];
    es_rm_state state;
} es_rm_lease_ask;
es_status es_rm_leases_hold(redisContext *c, const char *instance, long ms, es_rm_lease_ask *asks,
                            size_t n, es_error *err);

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

/* A new version number for projection name, above every one handed out
 * before and above the active version (so at least 2: "1" is the live
 * projector's), as decimal text in out.  Nothing else is recorded: a
 * scratch version stays unknown to everyone but its maker. */
es_status es_rm_version_new(redisContext *c, const char *name, char *out, size_t size,
                            es_error *err);

/* Records version as the one a rebuild is writing (es_rm_state_get's
 * building; a later rebuild resumes it), or forgets it.  es_rm_switch
 * forgets it too. */
es_status es_rm_building_set(redisContext *c, const char *name, const char *version,
                             es_error *err);
es_status es_rm_building_clear(redisContext *c, const char *name, es_error *err);

/* The retired versions of projection name, as *n new strings in a new
 * array (NULL when there are none); free with es_rm_list_free. */
es_status es_rm_retired_list(redisContext *c, const char *name, char ***versions, size_t *n,
                             es_error *err);
void es_rm_list_free(char **items, size_t n);

/* ---- stop reports ----------------------------------------------------- */

/* Records that the live projection name stopped at event seq (position,
 * "" shown as "-") and why.  position NULL records only the reason, to
 * put a report back that Redis lost. */
es_status es_rm_stopped_set(redisContext *c, const char *name, uint64_t seq,
                            const char *position, const char *reason, es_error *err);
es_status es_rm_stopped_clear(redisContext *c, const char *name, es_error *err);
/* *stopped says whether projection name has a stop report; its reason is
 * copied to reason (size bytes, truncated; reason may be NULL). */
es_status es_rm_stopped_get(redisContext *c, const char *name, bool *stopped, char *reason,
                            size_t size, es_error *err);

/* ---- the rebuild lock ------------------------------------------------- */

/*
 * One rebuild per projection: two writing one version would apply its
 * events twice.  The lock is a lease held under the caller's token (unique
 * per process and run).  take: ES_OK, or ES_ECONFLICT (code
 * rebuild_running) when another holds it.  renew: ES_OK while token still
 * holds it, ES_ECONFLICT (code rebuild_lock_lost) when it expired and
 * maybe went to another rebuild, which must stop this one at once.
 * release: drops it if token holds it; failures are ignored (the lease
 * ends anyway).  Never call them with replies pending on c.
 */
es_status es_rm_lock_take(redisContext *c, const char *name, const char *token, es_error *err);
es_status es_rm_lock_renew(redisContext *c, const char *name, const char *token, es_error *err);
void es_rm_lock_release(redisContext *c, const char *name, const char *token);

/* ---- notices ---------------------------------------------------------- */

/*
 * After each batch that applied something, and after a switch, the
 * projection's channel carries its version and new checkpoint.  A notice
 * is only ever a hint to read again, never a position to trust (channels
 * are not per database, and one may be missed).
 */
typedef struct es_rm_notice {
    char name[ES_RM_NAME_MAX];          /* the projection */
    char version[ES_RM_VERSION_MAX];
    uint64_t seq;                       /* 0 when not readable */
    char position[ES_RM_POSITION_MAX];
} es_rm_notice;

/* Subscribes c to the notices of the n projections in names and waits for
 * Redis' first confirmation; c is then in Pub/Sub mode: read its replies
 * and hand each to es_rm_notice_parse. */
es_status es_rm_notice_subscribe(redisContext *c, const char *const *names, size_t n,
                                 es_error *err);
/* True, with out filled, when r is a notice; false for anything else a
 * subscribed connection reads (confirmations, PING answers, other
 * channels). */
bool es_rm_notice_parse(const redisReply *r, es_rm_notice *out);

/* ---- reading ---------------------------------------------------------- */

/* Forgets that Redis refused a transaction for the user's ACL, so that the
 * next es_rm_read tries MULTI/EXEC again (a process that met a refusal
 * reads through the script from then on; for the tests). */
void es_rm_tx_allow(void);

/* Whether two replies are equal, type and value, all the way down. */
bool es_rm_reply_equal(const redisReply *a, const redisReply *b);

/*
 * Runs read commands on one version (NULL/"": the active one) atomically
 * with reading its checkpoint.  cmds is an array of argv arrays, each
 * NULL-terminated, whose second element is a key relative to the prefix.
 * The reply is an array: version, seq, position, then one reply per
 * command.  Free it with freeReplyObject.  A read goes as MULTI/EXEC of
 * the plain commands when the version is known (given, or the active one
 * this thread saw last, checked in the same transaction), else through a
 * Lua script; a server whose ACL refuses MULTI gets the script always.
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

/* ---- traces: when each projection applied a traced event -------------- */

/* One projection's application of one event of a trace. */
typedef struct es_rm_trace_stage {
    char trace_id[33];          /* 32 lower-case hex digits */
    uint64_t seq;               /* the event's feed sequence */
    char projection[ES_RM_NAME_MAX];    /* "": the event, which no projection wrote */
    int64_t at_us;              /* Unix microseconds */
} es_rm_trace_stage;

/*
 * Records stages s[0..n) (the live projector, once per batch): one HSET
 * per run of stages of the same event, and one EXPIRE of ttl_s seconds
 * per run of the same trace, pipelined in one round trip.  Best effort
 * for the caller: the read models never depend on it.
 */
es_status es_rm_trace_put(redisContext *c, const es_rm_trace_stage *s, size_t n, int ttl_s,
                          es_error *err);

/*
 * es_rm_apply_fenced for each of jobs[0..n) (each batch its own
 * projection), pipelined in one round trip together with the trace
 * stages s[0..ns) (es_rm_trace_put's commands, after the scripts): the
 * live projector's one write per batch.  Each job gets its own outcome.
 * The return is ES_OK unless the connection failed (every job not
 * answered has that error too; drop the connection); a failure of the
 * trace record alone sets only *trace_err.  A script Redis no longer
 * knows is sent again by text after the pipe is read.
 *
 * When every job names the version and checkpoint its caller last saw
 * (and applies to the active version), a cheaper way is tried first: the
 * leases, the active versions and the checkpoints are read under WATCH,
 * and when they are as the caller saw them the batches go as plain
 * commands (the events past each checkpoint) with the new checkpoints
 * between MULTI and EXEC, which Redis runs only if none of those keys
 * changed meanwhile.  Redis runs plain commands for far less CPU than the
 * same through Lua.  Only batches whose commands Redis cannot refuse
 * once queued, given keys of the types the projections write (HSET,
 * RPUSH, SET, ZREM, ZADD with numeric scores, HINCRBY by 1 or -1), go
 * that way: an amount added (HINCRBY by a value, which may overflow)
 * always goes by script.  Anything else (a key not
 * as expected or changed, a gap, a transaction refused before it ran)
 * writes nothing, and the scripts run as above.  One outcome differs, and
 * only when someone else wrote a read-model key with another type: a
 * command Redis refuses inside the transaction cannot stop the batch
 * before its event as the script does; the rest lands with the
 * checkpoint, and the event is reported with failed_passed set (a
 * rebuild puts it back).  meanwhile (NULL:
 * none) is called with arg once everything is written and before the
 * first answer is read: the caller's own work overlaps Redis running the
 * scripts (it must not use c).
 */
es_status es_rm_apply_all(redisContext *c, es_rm_apply_job *jobs, size_t n,
                          const es_rm_trace_stage *s, size_t ns, int ttl_s, es_error *trace_err,
                          void (*meanwhile)(void *arg), void *arg);

/*
 * The stages recorded for trace_id (none: *n 0, ES_OK), in no particular
 * order; *out malloc'd (free()), NULL when none.  A record of more than
 * es_rm_trace_records_max() stages is not read: ES_ERULE, code
 * trace_too_large (field trace), so the work and memory of one trace view
 * stay bounded whatever a client sent with one trace id.
 */
es_status es_rm_trace_get(redisContext *c, const char *trace_id, es_rm_trace_stage **out,
                          size_t *n, es_error *err);

/* Most stage records es_rm_trace_get reads: ES_TRACE_RECORDS_MAX, else
 * ES_RM_TRACE_RECORDS_MAX_DEFAULT (a malformed value ends the program, as
 * es_env_long). */
#define ES_RM_TRACE_RECORDS_MAX_DEFAULT 2000
size_t es_rm_trace_records_max(void);


#endif
