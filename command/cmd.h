/*
 * What the command service's modules share: the per-thread environment, a
 * command's outcome, aggregates rebuilt from streams (with snapshots), the
 * append helpers that give every event of a command a deterministic id,
 * and the decoders of command arguments.  Each bounded context (user.c,
 * profile.c, fraud.c, order.c, payment.c, inventory.c, shipping.c,
 * notify.c) is written against this header only, so a context can run in
 * a process of its own.
 */
#ifndef ES_CMD_H
#define ES_CMD_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "committer.h"
#include "store.h"
#include "trace.h"

/* Settings of the domain rules (documented in command/README.md). */
typedef struct cmd_config {
    int snapshot_every;                 /* events between snapshots */
    char fraud_blocked_domains[512];    /* comma-separated */
    int fraud_domain_limit;             /* registrations per domain per window */
    int fraud_window_seconds;
    char shipping_unsupported[256];     /* comma-separated country codes */
    int conflict_retries;               /* for commands that pin no version */
} cmd_config;

/* One thread's view: its own store connection, the shared committer. */
typedef struct cmd_env {
    es_store *store;
    es_committer *committer;
    const cmd_config *cfg;
    /* who sends the command being handled (metadata.principal of every
     * event it writes): set by the front door around each call */
    const char *principal;
    /* the command's trace (trace_id, span_id, ... of every event it
     * writes, events/trace.h), or NULL: set by the front door like
     * principal */
    const es_trace *trace;
} cmd_env;

/* A command's outcome: status ES_OK with body (owned) and http status
 * (201 created, 200 otherwise), or an error. */
typedef struct cmd_out {
    es_status status;
    int http_status;
    json_t *body;
    es_error err;
} cmd_out;

/* A command handler.  command_id makes the command's event ids; args is
 * the decoded request (borrowed).  fresh: the id was just made up, so the
 * command cannot have run before. */
typedef void (*cmd_fn)(cmd_env *env, const char *command_id, bool fresh, json_t *args,
                       cmd_out *out);

void cmd_out_init(cmd_out *out);
void cmd_out_free(cmd_out *out);
/* Sets an error outcome; returns st. */
es_status cmd_fail(cmd_out *out, es_status st, const char *code, const char *field,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Copies an error into the outcome. */
void cmd_fail_with(cmd_out *out, const es_error *err);
/* Sets a success outcome with body (stolen) plus "position". */
void cmd_ok(cmd_out *out, int http_status, json_t *body, es_position position);

/* ---- aggregates ------------------------------------------------------ */

typedef struct agg_type {
    const char *name;                   /* for messages */
    int state_version;                  /* bump when apply changes */
    json_t *(*initial)(void);           /* the state of an empty stream */
    void (*apply)(json_t *state, const char *type, json_t *data);
} agg_type;

typedef struct agg {
    char stream[ES_STREAM_ID_MAX + 1];
    json_t *state;
    int64_t version;                    /* -1: no stream */
    es_position position;               /* of the last event read, {0,0} if none */
} agg;

/* Rebuilds stream's aggregate from its snapshot and the events after it. */
es_status agg_load(cmd_env *env, const agg_type *t, const char *stream, agg *a, es_error *err);
/* The same, as it was at version until (-1: before the first event). */
es_status agg_load_until(cmd_env *env, const agg_type *t, const char *stream, int64_t until,
                         agg *a, es_error *err);
/* Applies events just appended and snapshots when due. */
void agg_advance(cmd_env *env, const agg_type *t, agg *a, const char **types, json_t **datas,
                 size_t n);
void agg_free(agg *a);

/* ---- appends --------------------------------------------------------- */

typedef struct cmd_event {
    const char *type;
    json_t *data;                       /* stolen by cmd_events_free */
} cmd_event;

typedef struct cmd_append {
    const char *stream;
    int64_t expected;
    cmd_event *events;
    size_t count;
    unsigned id_base;                   /* event i gets derive(command_id, id_base + i) */
} cmd_append;

/*
 * Appends one stream's events through the group committer, with ids from
 * command_id and metadata naming the command.  Returns res->status.
 */
es_status cmd_append_one(cmd_env *env, const char *command_id, const json_t *args,
                         const cmd_append *a, es_append_result *res);

/* Appends several streams' events all or nothing (one transaction). */
es_status cmd_append_all(cmd_env *env, const char *command_id, const json_t *args,
                         const cmd_append *as, size_t n, es_append_result *res, size_t *failed);

void cmd_events_free(cmd_event *evs, size_t n);

/*
 * If the command already ran, reads the event it wrote at id_base and
 * returns ES_OK with *page holding it; ES_ENOTFOUND if it did not run.
 */
es_status cmd_prior(cmd_env *env, const char *command_id, unsigned id_base, es_page **page,
                    es_error *err);

/* Writes "<prefix>-<id>" into out; false if it does not fit or is not a
 * valid stream id. */
bool cmd_stream(char *out, size_t size, const char *prefix, const char *id);

/* Derives a readable UUID for an entity the command creates. */
void cmd_new_id(const char *command_id, unsigned salt, char *out);

/* ---- the usual shape of a command ---------------------------------------- */

/*
 * Decides a command against its aggregate: sets out (a success body
 * without position, or an error) and fills evs[0..*n) with the events to
 * append (*n may stay 0: nothing to write).  An error outcome may come
 * with events too (a declined payment is recorded).
 */
typedef void (*cmd_decide_fn)(cmd_env *env, void *ctx, const agg *a, cmd_event *evs,
                              size_t *n, cmd_out *out);

/*
 * Loads stream's aggregate, decides, appends with the aggregate's version
 * as the expected version, and on a conflict does it all again (up to
 * cfg->conflict_retries times).  The outcome is in out.
 */
void cmd_run(cmd_env *env, const char *command_id, const json_t *args, const agg_type *t,
             const char *stream, unsigned id_base, cmd_decide_fn decide, void *ctx,
             cmd_out *out);

/* Maps a command's first event, written by an earlier run, to its outcome. */
typedef void (*cmd_replay_fn)(const es_event *e, json_t *data, cmd_out *out);

/* True (out set) when the command ran before: then its first outcome is
 * answered again and nothing is appended. */
bool cmd_replay(cmd_env *env, const char *command_id, bool fresh, unsigned id_base,
                cmd_replay_fn map, cmd_out *out);

/* The feed's head. */
es_position cmd_head(cmd_env *env);
/* The position a command that wrote nothing answers: the later of the
 * aggregate's last event and the feed's head, so a read that waits for
 * it sees everything the answer depended on. */
es_position cmd_noop_position(cmd_env *env, const agg *a);

/* ---- argument decoding ------------------------------------------------ */

/* Required or optional string member: present, a string, 1..max bytes,
 * printable UTF-8.  *out borrowed from obj.  Errors name the field. */
es_status dec_string(const json_t *obj, const char *name, bool required, size_t max,
                     const char **out, es_error *err);
/* Integer member in [min, max]. */
es_status dec_int(const json_t *obj, const char *name, bool required, int64_t min,
                  int64_t max, int64_t *out, es_error *err);
/* An id member: string of 1..100 printable bytes without '/'. */
es_status dec_id(const json_t *obj, const char *name, const char **out, es_error *err);

/*
 * Decodes the id member field of in and builds the stream "<prefix>-<id>"
 * into stream (ES_STREAM_ID_MAX + 1 bytes).  On failure sets out and
 * returns false.
 */
bool cmd_stream_arg(const json_t *in, const char *field, const char *prefix, char *stream,
                    const char **id, cmd_out *out);

/* Event data as a new JSON object (from a recorded event's text). */
json_t *cmd_event_data(const es_event *e);

#endif
