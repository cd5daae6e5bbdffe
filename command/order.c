/*
 * Order context: stream order-<order_id>.  An order is placed with its
 * items and a total computed in integer minor units (overflow checked),
 * then confirmed (shipped), cancelled, or failed.  Only a pending order
 * can be cancelled: once confirmed it has shipped (the states are drawn
 * above decide_move(), which moves an order out of pending).
 *
 * Events: OrderPlaced {order_id, customer_id, items, total, ship_to},
 * OrderConfirmed, OrderCancelled {reason}, OrderFailed {reason}.
 */
#include <string.h>

#include "contexts.h"

#define ITEMS_MAX 100
#define QUANTITY_MAX 1000000
#define PRICE_MAX 1000000000000LL
#define TOTAL_MAX 1000000000000000LL     /* 10^15 */

static json_t *
initial(void)
{
    return json_pack("{s:s}", "status", "none");
}

static void
apply(json_t *st, const char *type, json_t *d)
{
    const char *status = NULL;

    if (strcmp(type, "OrderPlaced") == 0) {
        status = "pending";
        json_object_set(st, "customer_id", json_object_get(d, "customer_id"));
        json_object_set(st, "total", json_object_get(d, "total"));
    } else if (strcmp(type, "OrderConfirmed") == 0) {
        status = "confirmed";
    } else if (strcmp(type, "OrderCancelled") == 0) {
        status = "cancelled";
    } else if (strcmp(type, "OrderFailed") == 0) {
        status = "failed";
    }
    if (status)
        json_object_set_new(st, "status", json_string(status));
}

static const agg_type order_agg = {"order", 1, initial, apply};

/* Decodes and checks items; on success *items is a new array of clean
 * items and *total their sum. */
bool
order_decode_items(const json_t *in, json_t **items, json_int_t *total, cmd_out *out)
{
    const json_t *arr = json_object_get(in, "items");
    size_t i;
    json_t *it;

    *items = NULL;
    if (!json_is_array(arr)) {
        cmd_fail(out, ES_EINVALID, arr ? "field_type" : "field_missing", "items",
                 arr ? "items must be an array" : "items is required");
        return false;
    }
    if (json_array_size(arr) == 0 || json_array_size(arr) > ITEMS_MAX) {
        cmd_fail(out, ES_EINVALID, "field_range", "items", "an order has 1 to %d items, not %zu",
                 ITEMS_MAX, json_array_size(arr));
        return false;
    }
    *items = json_array();
    *total = 0;
    json_array_foreach(arr, i, it) {
        char field[48];
        const char *sku;
        int64_t qty, price;
        es_error err;

        snprintf(field, sizeof field, "items[%zu]", i);
        if (!json_is_object(it)) {
            cmd_fail(out, ES_EINVALID, "field_type", field, "%s must be an object", field);
            goto fail;
        }
        if (dec_id(it, "sku", &sku, &err) != ES_OK ||
            dec_int(it, "quantity", true, 1, QUANTITY_MAX, &qty, &err) != ES_OK ||
            dec_int(it, "unit_price", true, 0, PRICE_MAX, &price, &err) != ES_OK) {
            char name[sizeof err.field];
            snprintf(name, sizeof name, "%.20s.%.40s", field, err.field);
            memcpy(err.field, name, sizeof err.field);
            cmd_fail_with(out, &err);
            goto fail;
        }
        /* qty * price <= 10^18 fits; the sum is checked, against what the
         * read models add up (OrderPlaced's schema: total <= 10^15) */
        if (*total > TOTAL_MAX - qty * price) {
            cmd_fail(out, ES_EINVALID, "total_overflow", "items",
                     "the order total is over %lld", TOTAL_MAX);
            goto fail;
        }
        *total += qty * price;
        json_array_append_new(*items, json_pack("{s:s, s:I, s:I}", "sku", sku, "quantity",
                                                (json_int_t)qty, "unit_price", (json_int_t)price));
    }
    return true;
fail:
    json_decref(*items);
    *items = NULL;
    return false;
}

typedef struct place_args {
    const char *order_id, *customer_id;
    json_t *items, *ship_to;
    json_int_t total;
} place_args;

/*
 * The order id derives from the command id, so the stream is new unless
 * this very command ran before: no aggregate to load, one append with
 * "no stream".  A rerun of the command answers duplicate (200) from the
 * store; the same id with other events cannot happen short of a UUID
 * collision and answers the conflict.
 */
static void
place(cmd_env *env, const char *command_id, json_t *in, const char *stream, place_args *a,
      cmd_out *out)
{
    cmd_event ev = {"OrderPlaced",
                    json_pack("{s:s, s:s, s:O, s:I, s:O}", "order_id", a->order_id,
                              "customer_id", a->customer_id, "items", a->items, "total",
                              a->total, "ship_to", a->ship_to)};
    cmd_append ap = {stream, ES_EXPECT_NO_STREAM, &ev, 1, 0};
    es_append_result res;

    cmd_append_one(env, command_id, in, &ap, &res);
    cmd_events_free(&ev, 1);
    if (res.status != ES_OK) {
        cmd_fail_with(out, &res.err);
        return;
    }
    cmd_ok(out, res.duplicate ? 200 : 201,
           json_pack("{s:s, s:s, s:I, s:s}", "order_id", a->order_id, "customer_id",
                     a->customer_id, "total", a->total, "status", "pending"),
           res.position);
}

void
order_place(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char stream[ES_STREAM_ID_MAX + 1], order_id[ES_UUID_LEN + 1];
    const json_t *ship = json_object_get(in, "ship_to");
    const char *country = "DE";
    place_args a = {order_id, NULL, NULL, NULL, 0};
    es_error err;

    (void)fresh;
    if (dec_id(in, "customer_id", &a.customer_id, &err) != ES_OK) {
        cmd_fail_with(out, &err);
        return;
    }
    if (ship != NULL && !json_is_null(ship)) {
        if (!json_is_object(ship)) {
            cmd_fail(out, ES_EINVALID, "field_type", "ship_to", "ship_to must be an object");
            return;
        }
        if (dec_string(ship, "country", true, 3, &country, &err) != ES_OK) {
            snprintf(err.field, sizeof err.field, "ship_to.country");
            cmd_fail_with(out, &err);
            return;
        }
    }
    if (!order_decode_items(in, &a.items, &a.total, out))
        return;
    a.ship_to = json_pack("{s:s}", "country", country);
    cmd_new_id(command_id, 1, order_id);
    cmd_stream(stream, sizeof stream, "order", order_id);
    place(env, command_id, in, stream, &a, out);
    json_decref(a.items);
    json_decref(a.ship_to);
}

/* The moves after placing: from pending to one of the final states. */
typedef struct move {
    const char *order_id, *reason;
    const char *to;             /* "confirmed", "cancelled", "failed" */
    const char *event;
    const char *refusal;        /* error code when the order is not pending */
    const char *confirmed_refusal;  /* when it is confirmed, if not refusal */
} move;

/*
 * An order's states; place() makes it pending, this decides every move
 * after that (repeating the move it made is answered as done):
 *
 *   (none) --place()--> pending --confirm--> confirmed
 *                          |--cancel--> cancelled
 *                          `--fail----> failed
 */
static void
decide_move(cmd_env *env, void *ctx, const agg *g, cmd_event *evs, size_t *n, cmd_out *out)
{
    move *m = ctx;
    const char *status = json_string_value(json_object_get(g->state, "status"));

    (void)env;
    if (strcmp(status, "none") == 0) {
        cmd_fail(out, ES_ENOTFOUND, "order_not_found", "order_id", "order %s does not exist",
                 m->order_id);
        return;
    }
    out->body = json_pack("{s:s, s:s}", "order_id", m->order_id, "status", m->to);
    if (strcmp(status, m->to) == 0)
        return;                     /* done already */
    if (strcmp(status, "pending") != 0) {
        /* a failure of a confirmed order is not "not pending": whoever
         * undoes an order must not count a confirmed one as undone */
        const char *code = m->confirmed_refusal && strcmp(status, "confirmed") == 0
                               ? m->confirmed_refusal : m->refusal;
        cmd_fail(out, ES_ERULE, code, "order_id", "order %s is %s", m->order_id, status);
        return;
    }
    evs[0] = (cmd_event){m->event, json_pack("{s:s}", "order_id", m->order_id)};
    if (m->reason)
        json_object_set_new(evs[0].data, "reason", json_string(m->reason));
    *n = 1;
}

static void
run_move(cmd_env *env, const char *command_id, json_t *in, move *m, cmd_out *out)
{
    char stream[ES_STREAM_ID_MAX + 1];
    es_error err;

    if (!cmd_stream_arg(in, "order_id", "order", stream, &m->order_id, out))
        return;
    if (dec_string(in, "reason", false, 500, &m->reason, &err) != ES_OK) {
        cmd_fail_with(out, &err);
        return;
    }
    cmd_run(env, command_id, in, &order_agg, stream, 0, decide_move, m, out);
}

void
order_confirm(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    move m = {NULL, NULL, "confirmed", "OrderConfirmed", "order_not_pending", NULL};

    (void)fresh;
    run_move(env, command_id, in, &m, out);
}

void
order_cancel(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    move m = {NULL, NULL, "cancelled", "OrderCancelled", "order_not_cancellable", NULL};

    (void)fresh;
    run_move(env, command_id, in, &m, out);
}

void
order_fail(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    move m = {NULL, NULL, "failed", "OrderFailed", "order_not_pending", "order_confirmed"};

    (void)fresh;
    run_move(env, command_id, in, &m, out);
}
