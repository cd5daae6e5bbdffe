/*
 * Flows as data: a flow is a table of steps, each a command to a bounded
 * context (or a wait for an event, or a call to an external gateway),
 * with its compensation, whether it is critical, its timeout and its
 * retry budget.  One engine (engine.c) interprets every flow, so a new
 * flow is a new table, not a new chain of ifs.
 */
#ifndef SG_FLOW_H
#define SG_FLOW_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum sg_step_kind {
    SG_COMMAND,         /* send call, its answer is the outcome */
    SG_AWAIT,           /* wait for an event in the saga's inbox */
    SG_GATEWAY          /* call an external gateway, then record the outcome with call */
} sg_step_kind;

/*
 * A command and how to build its arguments from the saga's context (the
 * data of the event that started it, plus what earlier steps returned):
 * space-separated "name" (copied), "name=path" (path in the context,
 * dotted for nested members) or "name='text'" (a literal).  done_codes are
 * error codes that mean "already so" and count as success.
 */
typedef struct sg_call {
    const char *command;        /* "payment.charge"; NULL: none */
    const char *args;
    const char *done_codes;
} sg_call;

typedef struct sg_step {
    const char *name;           /* [a-z_]; unique in its flow */
    sg_step_kind kind;
    sg_call call;
    sg_call compensation;
    bool critical;              /* a failure compensates; else it is recorded and the flow goes on */
    int timeout_ms;             /* a command's answer; an await's whole wait */
    int max_attempts;           /* tries on transient failures */
    const char *await_type;     /* SG_AWAIT: event type; passes when data.result is "passed" */
    const char *gateway;        /* SG_GATEWAY: gateway name */
} sg_step;

typedef struct sg_flow {
    const char *type;           /* saga type: "order", "registration", ... */
    const char *trigger_category, *trigger_type;
    const char *id_field;       /* the trigger data's id; saga id "<type>-<id>" */
    const char *trigger_step;   /* name of the trigger's own step in timelines */
    sg_call undo_trigger;       /* its compensation, run last */
    const char *cancel_type;    /* an inbox event that asks to compensate */
    const sg_step *steps;
    size_t nsteps;
    int start_delay_ms;         /* the first run is due this late */
    /* Optional: fills computed context members when the saga starts (they
     * are recorded in SagaStarted, so a rerun sees the same values). */
    void (*prepare)(json_t *ctx);
    /* Optional: the step that cannot be undone (the order's confirmation).
     * Once it took effect the saga is not compensated: when it would be
     * while the step's outcome is unknown, the step is sent again with its
     * own id first (its first outcome); if it took effect, the saga goes
     * on to complete. */
    const char *pivot;
} sg_flow;

#define SG_STEPS_MAX 16

extern const sg_flow *const sg_flows[];
extern const size_t sg_flow_count;

const sg_flow *sg_flow_find(const char *type);

/* Builds call's arguments from ctx; NULL with *missing set to the path
 * of a required member that ctx lacks.  New reference. */
json_t *sg_call_args(const sg_call *call, const json_t *ctx, const char **missing);

/* A flow's setting in milliseconds from ES_SAGA_<WHAT>_<FLOW>[_<STEP>]_MS
 * (upper case), e.g. ES_SAGA_TIMEOUT_REGISTRATION_VERIFICATION_MS; def when
 * unset or not a number of at least min. */
long sg_setting_ms(const char *what, const sg_flow *f, const char *step, long def, long min);

/* True when code is one of call's done_codes. */
bool sg_call_done_code(const sg_call *call, const char *code);

/* The verifier's rule (flow "verification"): "failed" for an address in
 * ES_VERIFIER_FAIL_DOMAINS (default unverified.test) or, for a share
 * ES_VERIFIER_FAIL_RATE of users (by a hash of the id, so stable), else
 * "passed". */
const char *sg_verdict(const char *user_id, const char *email);

#endif
