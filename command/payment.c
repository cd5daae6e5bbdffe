/*
 * Payment context: one account per customer (stream account-<customer>),
 * funded by deposits.  A charge for an order succeeds when the balance
 * covers it and is recorded either way (PaymentCharged / PaymentDeclined),
 * so a repeated command answers the first outcome.  An order is charged at
 * most once and refunded at most once.
 *
 * Events: FundsDeposited {customer_id, amount}, PaymentCharged and
 * PaymentDeclined {customer_id, order_id, amount}, PaymentRefunded
 * {customer_id, order_id, amount}.
 */
#include <stdio.h>
#include <string.h>

#include "contexts.h"

#define AMOUNT_MAX 1000000000000LL     /* 10^12 minor units */

static json_t *
initial(void)
{
    return json_pack("{s:I, s:{}}", "balance", (json_int_t)0, "charges");
}

static void
apply(json_t *st, const char *type, json_t *d)
{
    json_int_t bal = json_integer_value(json_object_get(st, "balance"));
    json_int_t amount = json_integer_value(json_object_get(d, "amount"));
    json_t *charges = json_object_get(st, "charges");
    const char *order = json_string_value(json_object_get(d, "order_id"));

    if (strcmp(type, "FundsDeposited") == 0) {
        bal += amount;
    } else if (strcmp(type, "PaymentCharged") == 0 && order) {
        bal -= amount;
        json_object_set_new(charges, order, json_pack("{s:I, s:b}", "amount", amount, "refunded", 0));
    } else if (strcmp(type, "PaymentRefunded") == 0 && order) {
        bal += amount;
        json_object_set_new(json_object_get(charges, order), "refunded", json_true());
    }
    json_object_set_new(st, "balance", json_integer(bal));
}

static const agg_type account = {"account", 1, initial, apply};

typedef struct args {
    const char *customer_id, *order_id;
    int64_t amount;
} args;

static json_t *
body(const args *a, json_int_t balance)
{
    json_t *b = json_pack("{s:s, s:I}", "customer_id", a->customer_id, "balance", balance);
    if (a->order_id)
        json_object_set_new(b, "order_id", json_string(a->order_id));
    return b;
}

static void
decide_deposit(cmd_env *env, void *ctx, const agg *g, cmd_event *evs, size_t *n, cmd_out *out)
{
    args *a = ctx;
    json_int_t bal = json_integer_value(json_object_get(g->state, "balance"));

    (void)env;
    if (bal > INT64_MAX - a->amount) {
        cmd_fail(out, ES_ERULE, "balance_overflow", "amount",
                 "a deposit of %lld would overflow the balance", (long long)a->amount);
        return;
    }
    evs[0] = (cmd_event){"FundsDeposited", json_pack("{s:s, s:I}", "customer_id", a->customer_id,
                                                     "amount", (json_int_t)a->amount)};
    *n = 1;
    out->http_status = 201;
    out->body = body(a, bal + a->amount);
}

/* Decodes the arguments and the account's stream; false (out set) if bad. */
static bool
decode(json_t *in, args *a, bool order, bool amount, char *stream, cmd_out *out)
{
    es_error err;

    memset(a, 0, sizeof *a);
    if (!cmd_stream_arg(in, "customer_id", "account", stream, &a->customer_id, out))
        return false;
    if ((order && dec_id(in, "order_id", &a->order_id, &err) != ES_OK) ||
        (amount && dec_int(in, "amount", true, order ? 0 : 1, AMOUNT_MAX, &a->amount, &err) != ES_OK)) {
        cmd_fail_with(out, &err);
        return false;
    }
    return true;
}

void
payment_deposit(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char stream[ES_STREAM_ID_MAX + 1];
    args a;

    (void)fresh;
    if (!decode(in, &a, false, true, stream, out))
        return;
    cmd_run(env, command_id, in, &account, stream, 0, decide_deposit, &a, out);
}

static void
decide_charge(cmd_env *env, void *ctx, const agg *g, cmd_event *evs, size_t *n, cmd_out *out)
{
    args *a = ctx;
    json_int_t bal = json_integer_value(json_object_get(g->state, "balance"));
    json_t *prior = json_object_get(json_object_get(g->state, "charges"), a->order_id);

    (void)env;
    if (prior != NULL) {            /* charged already: at most once per order */
        out->body = body(a, bal);
        return;
    }
    if (bal < a->amount) {
        evs[0] = (cmd_event){"PaymentDeclined",
                             json_pack("{s:s, s:s, s:I, s:I}", "customer_id", a->customer_id,
                                       "order_id", a->order_id, "amount", (json_int_t)a->amount,
                                       "balance", bal)};
        *n = 1;
        cmd_fail(out, ES_ERULE, "insufficient_funds", "amount",
                 "balance %lld does not cover %lld", (long long)bal, (long long)a->amount);
        return;
    }
    evs[0] = (cmd_event){"PaymentCharged",
                         json_pack("{s:s, s:s, s:I}", "customer_id", a->customer_id,
                                   "order_id", a->order_id, "amount", (json_int_t)a->amount)};
    *n = 1;
    out->http_status = 201;
    out->body = body(a, bal - a->amount);
}

static void
replay_charge(const es_event *e, json_t *data, cmd_out *out)
{
    if (strcmp(e->type, "PaymentDeclined") == 0) {
        cmd_fail(out, ES_ERULE, "insufficient_funds", "amount", "balance %lld does not cover %lld",
                 (long long)json_integer_value(json_object_get(data, "balance")),
                 (long long)json_integer_value(json_object_get(data, "amount")));
        return;
    }
    out->body = json_pack("{s:O, s:O}", "customer_id", json_object_get(data, "customer_id"),
                          "order_id", json_object_get(data, "order_id"));
}

void
payment_charge(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char stream[ES_STREAM_ID_MAX + 1];
    args a;

    if (!decode(in, &a, true, true, stream, out))
        return;
    if (cmd_replay(env, command_id, fresh, 0, replay_charge, out))
        return;
    cmd_run(env, command_id, in, &account, stream, 0, decide_charge, &a, out);
}

static void
decide_refund(cmd_env *env, void *ctx, const agg *g, cmd_event *evs, size_t *n, cmd_out *out)
{
    args *a = ctx;
    json_int_t bal = json_integer_value(json_object_get(g->state, "balance"));
    json_t *charge = json_object_get(json_object_get(g->state, "charges"), a->order_id);
    json_int_t amount = json_integer_value(json_object_get(charge, "amount"));

    (void)env;
    out->body = body(a, bal);
    if (charge == NULL || json_is_true(json_object_get(charge, "refunded"))) {
        json_object_set_new(out->body, "refunded", json_integer(0));
        return;     /* nothing charged, or refunded already: nothing to do */
    }
    evs[0] = (cmd_event){"PaymentRefunded",
                         json_pack("{s:s, s:s, s:I}", "customer_id", a->customer_id,
                                   "order_id", a->order_id, "amount", amount)};
    *n = 1;
    json_object_set_new(out->body, "balance", json_integer(bal + amount));
    json_object_set_new(out->body, "refunded", json_integer(amount));
}

void
payment_refund(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char stream[ES_STREAM_ID_MAX + 1];
    args a;

    (void)fresh;
    if (!decode(in, &a, true, false, stream, out))
        return;
    cmd_run(env, command_id, in, &account, stream, 0, decide_refund, &a, out);
}
