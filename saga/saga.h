/*
 * The saga as it is persisted: the one module that spells a saga's
 * stream, its event types, its state and the saga manager's tables
 * (es_saga_work, es_saga_inbox, es_saga_dead_letters,
 * es_saga_checkpoint).  es-saga's engine and intake, esctl's saga
 * commands and verify, and the projector's sagas read model call it;
 * none of them writes that SQL or those names itself.
 *
 * Library code: it records failures in es_error and never logs.
 */
#ifndef SG_SAGA_H
#define SG_SAGA_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "status.h"
#include "store.h"

/* ---- the stream and its events ------------------------------------------ */

/* A saga's stream is SG_STREAM_PREFIX <saga_id>, in category SG_CATEGORY. */
#define SG_CATEGORY         "saga"
#define SG_STREAM_PREFIX    "saga-"

/*
 * The event types of a saga's stream (data in brackets; every event also
 * carries saga_id):
 *   SagaStarted {type, correlation_id, data}
 *   SagaStepStarted {step, attempt, deadline_ms?}      decided, then sent
 *   SagaStepSucceeded {step, attempt, result}
 *   SagaStepFailed {step, attempt, error, will_retry, refused?, retry_at_ms?}
 *   SagaCompensationStarted / Succeeded / Failed {step, attempt, ...}
 *   SagaStateChanged {type, from, to, error?}
 *   SagaReplayed {note}        an operator's retry: backoffs and refusal
 *                              counts start afresh
 *   SagaTakenOver {note}       a worker took the saga over from a claim that
 *                              ran out (its holder died or stalled): written
 *                              before it does anything, so every append the
 *                              deposed holder still tries meets a version
 *                              conflict (its fence)
 * SG_EV_STEP_PREFIX and SG_EV_COMPENSATION_PREFIX begin the step and
 * compensation types, for readers that treat them alike.
 */
#define SG_EV_STARTED                   "SagaStarted"
#define SG_EV_STEP_STARTED              "SagaStepStarted"
#define SG_EV_STEP_SUCCEEDED            "SagaStepSucceeded"
#define SG_EV_STEP_FAILED               "SagaStepFailed"
#define SG_EV_COMPENSATION_STARTED      "SagaCompensationStarted"
#define SG_EV_COMPENSATION_SUCCEEDED    "SagaCompensationSucceeded"
#define SG_EV_COMPENSATION_FAILED       "SagaCompensationFailed"
#define SG_EV_STATE_CHANGED             "SagaStateChanged"
#define SG_EV_REPLAYED                  "SagaReplayed"
#define SG_EV_TAKEN_OVER                "SagaTakenOver"
#define SG_EV_STEP_PREFIX               "SagaStep"
#define SG_EV_COMPENSATION_PREFIX       "SagaCompensation"

/* Writes the stream name of saga_id into buf (truncated to size). */
void sg_saga_stream(char *buf, size_t size, const char *saga_id);

/* ---- the state ------------------------------------------------------------ */

/* Where a saga is.  Its text (sg_state_text) is what SagaStateChanged's
 * from and to carry and what esctl and the read model show. */
typedef enum sg_state {
    SG_RUNNING,         /* taking its steps */
    SG_COMPLETED,       /* every step done: final */
    SG_COMPENSATING,    /* undoing what it did, newest first */
    SG_COMPENSATED,     /* everything undone: final */
    SG_FAILED           /* a dead letter: waits for an operator */
} sg_state;
#define SG_STATE_COUNT 5

/* "running", "completed", ...; "unknown" for a value out of range. */
const char *sg_state_text(sg_state s);
/* The state whose text is text; false (and *out untouched) if none is. */
bool sg_state_parse(const char *text, sg_state *out);

/*
 * The state fold, the only one: folds one event of a saga's stream (type,
 * data borrowed) into *state.  Start from SG_RUNNING (what a saga is
 * before its first change); SagaStarted makes it running, SagaStateChanged
 * its "to"; other events leave it.  False when a SagaStateChanged names
 * no state (*state is then kept).
 */
bool sg_state_fold(sg_state *state, const char *type, const json_t *data);

/* ---- work: one row per unfinished saga (es-saga's engine and intake) ------ */

/* A claimed work row. */
typedef struct sg_work {
    char saga_id[256], flow[64];
    char *input;                /* the trigger's data as JSON text; owned, free() it */
    int failures;               /* engine failures in a row */
    int wakes;                  /* inbox deliveries so far */
    /* the claim's token (its claimed_until as the database wrote it): a
     * later claim of the row writes a later one, so everything below that
     * takes it does nothing once another worker has claimed the saga */
    char claim[48];
    /* the row was claimed from a claim that ran out without its worker
     * releasing it (the worker died or stalled): a takeover */
    bool taken_over;
} sg_work;

/* Claims up to max sagas due first that no one holds, for lease_ms, in
 * one statement of its own: out[0..*n).  ES_EUNAVAILABLE when the claim
 * could not be made. */
es_status sg_work_claim_many(PGconn *pg, int lease_ms, int max, sg_work *out, int *n,
                             es_error *err);
/* The same for one saga; *found false: nothing is due. */
es_status sg_work_claim(PGconn *pg, int lease_ms, sg_work *out, bool *found, es_error *err);
/* Extends a claim to lease_ms from now if it is still this worker's
 * (claim, size: its token, replaced by the new one); *held false when
 * another worker has claimed the saga since, or its row is gone. */
es_status sg_work_renew(PGconn *pg, const char *saga_id, char *claim, size_t size,
                        int64_t lease_ms, bool *held, es_error *err);
/* The same for n claims in one statement (a process's heartbeat):
 * saga_ids[i] with claims[i] (SG_CLAIM_MAX bytes each, replaced by the
 * new token when held[i]). */
#define SG_CLAIM_MAX 48
es_status sg_work_renew_many(PGconn *pg, size_t n, const char *const *saga_ids,
                             char (*claims)[SG_CLAIM_MAX], int64_t lease_ms, bool *held,
                             es_error *err);
/*
 * What a worker does with its claim at the end of a run; each does
 * nothing (*held false) when the claim is no longer its own:
 * release: the saga waits until due_ms (epoch milliseconds), or is due
 * now if an event reached its inbox since it was claimed with wakes; its
 * failure count starts afresh.  release_now: due again now (someone else
 * moved its stream).  defer: a run that failed waits delay_ms, with error
 * and its failure count recorded.  finish: a saga that has ended needs
 * no more work.
 */
es_status sg_work_release(PGconn *pg, const char *saga_id, const char *claim, int64_t due_ms,
                          int wakes, bool *held, es_error *err);
es_status sg_work_release_now(PGconn *pg, const char *saga_id, const char *claim, bool *held,
                              es_error *err);
es_status sg_work_defer(PGconn *pg, const char *saga_id, const char *claim, int64_t delay_ms,
                        const char *error, int failures, bool *held, es_error *err);
es_status sg_work_finish(PGconn *pg, const char *saga_id, const char *claim, bool *held,
                         es_error *err);
/* A saga to start, for sg_work_start_many. */
typedef struct sg_start {
    const char *saga_id, *flow, *input;
    long delay_ms;
} sg_start;
/*
 * The intake's batch in one statement: the sagas of starts (a work row
 * each, due after its delay_ms, with the trigger's data as input, JSON
 * text; nothing for a saga that has one) and, when seq > 0, the
 * checkpoint (seq and its store position).  On its own it is one
 * transaction; inside the intake's transaction, part of it.
 */
es_status sg_work_start_many(PGconn *pg, const sg_start *starts, size_t n, uint64_t seq,
                             const char *position, es_error *err);
/* Milliseconds until the next saga is due, from 0 to max_ms (max_ms
 * also when it cannot be read). */
int sg_work_next_due_ms(PGconn *pg, int max_ms);
/* The number of work rows (unfinished sagas). */
es_status sg_work_count(PGconn *pg, long long *n, es_error *err);

/* ---- the inbox: events a saga waits for ---------------------------------- */

/* Delivers an event to a saga's inbox (once per event_id) and makes the
 * saga due now (the intake, in its transaction). data is JSON text. */
es_status sg_inbox_deliver(PGconn *pg, const char *saga_id, const char *event_id,
                           const char *type, const char *data, uint64_t seq, es_error *err);
/* The saga's inbox in arrival order: *events (new reference) is an array
 * of {type, data}.  ES_EUNAVAILABLE when it cannot be read. */
es_status sg_inbox_read(PGconn *pg, const char *saga_id, json_t **events, es_error *err);

/* ---- the intake's checkpoint ----------------------------------------------- */

/* The feed sequence the intake has recorded (0: none). */
es_status sg_checkpoint_read(PGconn *pg, uint64_t *seq, es_error *err);

/* ---- dead letters ------------------------------------------------------------ */

/* A saga that cannot go on: a dead letter and no more work, in one
 * transaction of its own (neither happens on a failure), if claim (its
 * work row's token) is still the caller's (*held).  input is the work's
 * JSON text. */
es_status sg_dead_letter_saga(PGconn *pg, const char *saga_id, const char *claim,
                              const char *flow, const char *input, const char *reason,
                              int attempts, bool *held, es_error *err);
/* An event that cannot start or reach a saga (the intake, in its
 * transaction); once per event and flow.  flow and event_id may be NULL;
 * payload is JSON text. */
es_status sg_dead_letter_event(PGconn *pg, const char *flow, const char *event_id,
                               const char *event_type, const char *payload, const char *reason,
                               es_error *err);
/* The number of dead letters not replayed yet. */
es_status sg_dead_letter_open_count(PGconn *pg, long long *n, es_error *err);
/* The dead letters (only those not replayed unless all), oldest first:
 * *rows (new reference) is an array of {id, created_at, saga_id, flow,
 * event_type, attempts, reason, replayed_at, payload}. */
es_status sg_dead_letter_list(PGconn *pg, bool all, json_t **rows, es_error *err);

/* ---- reading sagas (esctl) ----------------------------------------------------- */

/* One saga as its stream and the manager's tables say. */
typedef struct sg_saga_info {
    char saga_id[256], type[64], correlation_id[256];
    sg_state state;
    int64_t version;            /* of its stream's last event */
    int64_t dead_letter;        /* its open dead letter's id; 0: none */
    json_t *work;               /* its work row without the input, or NULL: none (owned) */
} sg_saga_info;

/* Reads saga_id into *out (free with sg_saga_info_clear, also after a
 * failure): its stream through store, its work row and dead letter
 * through pg.  ES_ENOTFOUND (saga_not_found) when it has no stream. */
es_status sg_saga_read(PGconn *pg, es_store *store, const char *saga_id, sg_saga_info *out,
                       es_error *err);
void sg_saga_info_clear(sg_saga_info *info);

/* The events of the saga's stream read through store, oldest first:
 * *rows (new reference; NULL on failure) is an array of {version,
 * recorded_at, type, step, attempt, error, data} (step is the step's
 * name, or the new state of a SagaStateChanged); empty when there is no
 * such saga. */
es_status sg_saga_timeline(es_store *store, const char *saga_id, json_t **rows, es_error *err);

/* A saga in a listing; the strings live until the visit returns. */
typedef struct sg_saga_summary {
    const char *saga_id, *type, *correlation_id;
    const char *started_at;     /* ISO 8601, UTC, milliseconds */
    sg_state state;
} sg_saga_summary;

typedef struct sg_saga_filter {
    const char *type;           /* NULL or "": any */
    bool by_state;              /* only sagas in state */
    sg_state state;
    long limit;                 /* at most this many; 0: all */
} sg_saga_filter;

/* Calls visit for each saga of f, newest first, until it returns false;
 * the sagas' streams are read through store (es_audit_events_read). */
es_status sg_saga_list(es_store *store, const sg_saga_filter *f,
                       bool (*visit)(const sg_saga_summary *s, void *arg), void *arg,
                       es_error *err);

/* ---- what an operator does to a saga (esctl) ------------------------------------ */

/*
 * Each is an event appended to the saga's stream at its exact version
 * through store (SagaReplayed, or SagaStateChanged to compensating),
 * which the engine folds like its own, then its work row made due now.
 * A worker that decided otherwise meanwhile meets a version conflict and
 * reads the stream again.
 */
typedef struct sg_saga_op {
    char saga_id[256];
    char dead_letter[24];       /* the dead letter replayed, or "" */
    sg_state state;             /* the saga's state after the operation */
    bool reopened;              /* replayed: the saga has a stream and got an event */
    bool was_failed;            /* replayed: it had failed, it is compensating now */
    bool queued;                /* retried or compensated: its work row is due now */
    bool unchanged;             /* compensate: it was compensating already */
} sg_saga_op;

/* Runs a running or compensating saga now, backoffs and refusal counts
 * afresh; a failed one with a dead letter is replayed (out->dead_letter
 * set).  ES_ENOTFOUND: no such saga; ES_ECONFLICT (saga_ended): it has
 * ended. */
es_status sg_saga_retry(PGconn *pg, es_store *store, const char *saga_id, sg_saga_op *out,
                        es_error *err);
/* Moves a running saga to compensating (reason may be NULL); a failed
 * one with a dead letter is replayed.  A compensating one is left as it
 * is (out->unchanged).  Errors as sg_saga_retry. */
es_status sg_saga_compensate(PGconn *pg, es_store *store, const char *saga_id,
                             const char *reason, sg_saga_op *out, es_error *err);
/* Hands dead letter id (decimal text) back: its saga back in the work
 * queue, reopened as compensating if it had failed, and the dead letter
 * marked replayed, in one transaction of pg.  ES_ENOTFOUND
 * (dead_letter_not_found); ES_ECONFLICT: replayed already, or an event
 * that could not reach a saga (not_replayable: fix its cause instead). */
es_status sg_dead_letter_replay(PGconn *pg, es_store *store, const char *id, sg_saga_op *out,
                                es_error *err);

#endif
