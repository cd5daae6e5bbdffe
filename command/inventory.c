/*
 * Inventory context: stock per SKU (stream stock-<sku>) and one
 * reservation per order (stream reservation-<order_id>).  Reserving an
 * order's items appends StockReserved to every SKU's stream and
 * ReservationMade to the order's, all in one transaction, or records
 * ReservationRejected when a SKU's available quantity does not cover it.
 * Releasing gives back exactly what that order reserved, once.
 *
 * Stock figures: on_hand = restocked; reserved = reserved - released;
 * available = on_hand - reserved.
 *
 * Events: StockRestocked {sku, quantity}; StockReserved / StockReleased
 * {sku, order_id, quantity}; ReservationMade {order_id, items},
 * ReservationRejected {order_id, sku, requested, available},
 * ReservationReleased {order_id}.
 */
#include <string.h>

#include "contexts.h"

#define QUANTITY_MAX 1000000000LL
#define SKUS_MAX 15             /* one transaction holds 16 streams */

static json_t *
stock_initial(void)
{
    return json_pack("{s:I, s:I}", "on_hand", (json_int_t)0, "reserved", (json_int_t)0);
}

static void
stock_apply(json_t *st, const char *type, json_t *d)
{
    json_int_t q = json_integer_value(json_object_get(d, "quantity"));
    const char *key = NULL;
    json_int_t sign = 1;

    if (strcmp(type, "StockRestocked") == 0)
        key = "on_hand";
    else if (strcmp(type, "StockReserved") == 0)
        key = "reserved";
    else if (strcmp(type, "StockReleased") == 0)
        key = "reserved", sign = -1;
    if (key)
        json_object_set_new(st, key, json_integer(json_integer_value(json_object_get(st, key)) + sign * q));
}

static const agg_type stock = {"stock", 1, stock_initial, stock_apply};

static json_t *
res_initial(void)
{
    return json_pack("{s:s}", "status", "none");
}

static void
res_apply(json_t *st, const char *type, json_t *d)
{
    if (strcmp(type, "ReservationMade") == 0) {
        json_object_set_new(st, "status", json_string("reserved"));
        json_object_set(st, "items", json_object_get(d, "items"));
    } else if (strcmp(type, "ReservationRejected") == 0) {
        json_object_set_new(st, "status", json_string("rejected"));
    } else if (strcmp(type, "ReservationReleased") == 0) {
        json_object_set_new(st, "status", json_string("released"));
    }
}

static const agg_type reservation = {"reservation", 1, res_initial, res_apply};

static json_t *
stock_body(const char *sku, const json_t *st)
{
    json_int_t on = json_integer_value(json_object_get(st, "on_hand"));
    json_int_t res = json_integer_value(json_object_get(st, "reserved"));

    return json_pack("{s:s, s:I, s:I, s:I}", "sku", sku, "on_hand", on, "reserved", res,
                     "available", on - res);
}

typedef struct restock_args {
    const char *sku;
    int64_t quantity;
} restock_args;

static void
decide_restock(cmd_env *env, void *ctx, const agg *g, cmd_event *evs, size_t *n, cmd_out *out)
{
    restock_args *a = ctx;
    json_t *after = json_deep_copy(g->state);

    (void)env;
    if (json_integer_value(json_object_get(g->state, "on_hand")) > INT64_MAX / 2 - a->quantity) {
        json_decref(after);
        cmd_fail(out, ES_ERULE, "stock_overflow", "quantity", "the stock figure would overflow");
        return;
    }
    evs[0] = (cmd_event){"StockRestocked", json_pack("{s:s, s:I}", "sku", a->sku, "quantity",
                                                     (json_int_t)a->quantity)};
    *n = 1;
    stock_apply(after, "StockRestocked", evs[0].data);
    out->http_status = 201;
    out->body = stock_body(a->sku, after);
    json_decref(after);
}

void
inventory_restock(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char stream[ES_STREAM_ID_MAX + 1];
    restock_args a;
    es_error err;

    (void)fresh;
    if (!cmd_stream_arg(in, "sku", "stock", stream, &a.sku, out))
        return;
    if (dec_int(in, "quantity", true, 1, QUANTITY_MAX, &a.quantity, &err) != ES_OK) {
        cmd_fail_with(out, &err);
        return;
    }
    cmd_run(env, command_id, in, &stock, stream, 0, decide_restock, &a, out);
}

/* The distinct SKUs of an order with their summed quantities. */
typedef struct line {
    const char *sku;
    int64_t quantity;
    char stream[ES_STREAM_ID_MAX + 1];
} line;

static bool
decode_lines(const json_t *in, line *lines, size_t *n, cmd_out *out)
{
    const json_t *arr = json_object_get(in, "items");
    const json_t *it;
    size_t i;

    *n = 0;
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        cmd_fail(out, ES_EINVALID, arr ? "field_type" : "field_missing", "items",
                 "items must be a non-empty array");
        return false;
    }
    json_array_foreach(arr, i, it) {
        const char *sku;
        int64_t q;
        es_error err;
        size_t k;

        if (!json_is_object(it) || dec_id(it, "sku", &sku, &err) != ES_OK ||
            dec_int(it, "quantity", true, 1, QUANTITY_MAX, &q, &err) != ES_OK) {
            cmd_fail(out, ES_EINVALID, "field_invalid", "items",
                     "items[%zu] needs a sku and a quantity of 1 to %lld", i, (long long)QUANTITY_MAX);
            return false;
        }
        for (k = 0; k < *n && strcmp(lines[k].sku, sku) != 0; k++)
            ;
        if (k == *n) {
            if (*n == SKUS_MAX) {
                cmd_fail(out, ES_EINVALID, "field_range", "items",
                         "an order reserves at most %d distinct SKUs", SKUS_MAX);
                return false;
            }
            lines[k].sku = sku;
            lines[k].quantity = 0;
            if (!cmd_stream(lines[k].stream, sizeof lines[k].stream, "stock", sku)) {
                cmd_fail(out, ES_EINVALID, "field_invalid", "items", "sku %s is not usable", sku);
                return false;
            }
            (*n)++;
        }
        lines[k].quantity += q;
    }
    return true;
}

static void
replay_reserve(const es_event *e, json_t *data, cmd_out *out)
{
    if (strcmp(e->type, "ReservationRejected") == 0) {
        cmd_fail(out, ES_ERULE, "insufficient_stock", "items",
                 "sku %s: %lld requested, %lld available",
                 json_string_value(json_object_get(data, "sku")),
                 (long long)json_integer_value(json_object_get(data, "requested")),
                 (long long)json_integer_value(json_object_get(data, "available")));
        return;
    }
    out->body = json_pack("{s:O, s:s}", "order_id", json_object_get(data, "order_id"),
                          "status", "reserved");
}

/* Loads the reservation and each SKU's stock; frees what it loaded on failure. */
static bool
load_all(cmd_env *env, const char *rstream, agg *r, line *lines, size_t n, agg *stocks,
         cmd_out *out)
{
    es_error err;
    size_t i;

    if (agg_load(env, &reservation, rstream, r, &err) != ES_OK) {
        cmd_fail_with(out, &err);
        return false;
    }
    for (i = 0; i < n; i++) {
        if (agg_load(env, &stock, lines[i].stream, &stocks[i], &err) != ES_OK) {
            while (i-- > 0)
                agg_free(&stocks[i]);
            agg_free(r);
            cmd_fail_with(out, &err);
            return false;
        }
    }
    return true;
}

void
inventory_reserve(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char rstream[ES_STREAM_ID_MAX + 1];
    const char *order_id;
    line lines[SKUS_MAX];
    size_t n, i;
    int tries = env->cfg->conflict_retries > 0 ? env->cfg->conflict_retries : 10;

    if (!cmd_stream_arg(in, "order_id", "reservation", rstream, &order_id, out) ||
        !decode_lines(in, lines, &n, out))
        return;
    if (cmd_replay(env, command_id, fresh, 0, replay_reserve, out))
        return;
    for (int attempt = 0;; attempt++) {
        agg r, stocks[SKUS_MAX];
        cmd_event evs[SKUS_MAX + 1];
        cmd_append as[SKUS_MAX + 1];
        es_append_result res[SKUS_MAX + 1];
        json_t *items;
        const char *status;
        size_t failed, short_at = n;

        if (!load_all(env, rstream, &r, lines, n, stocks, out))
            return;
        status = json_string_value(json_object_get(r.state, "status"));
        if (strcmp(status, "reserved") == 0 || strcmp(status, "released") == 0) {
            cmd_ok(out, 200, json_pack("{s:s, s:s}", "order_id", order_id, "status", status),
                   cmd_noop_position(env, &r));
            goto next;
        }
        for (i = 0; i < n && short_at == n; i++) {
            json_int_t avail = json_integer_value(json_object_get(stocks[i].state, "on_hand")) -
                               json_integer_value(json_object_get(stocks[i].state, "reserved"));
            if (avail < lines[i].quantity)
                short_at = i;
        }
        if (short_at < n) {
            json_int_t avail = json_integer_value(json_object_get(stocks[short_at].state, "on_hand")) -
                               json_integer_value(json_object_get(stocks[short_at].state, "reserved"));
            evs[0] = (cmd_event){"ReservationRejected",
                                 json_pack("{s:s, s:s, s:I, s:I}", "order_id", order_id, "sku",
                                           lines[short_at].sku, "requested",
                                           (json_int_t)lines[short_at].quantity, "available", avail)};
            as[0] = (cmd_append){rstream, r.version, evs, 1, 0};
            cmd_append_one(env, command_id, in, &as[0], &res[0]);
            cmd_events_free(evs, 1);
            if (res[0].status == ES_ECONFLICT && attempt < tries)
                goto retry;
            if (res[0].status != ES_OK)
                cmd_fail_with(out, &res[0].err);
            else
                cmd_fail(out, ES_ERULE, "insufficient_stock", "items",
                         "sku %s: %lld requested, %lld available", lines[short_at].sku,
                         (long long)lines[short_at].quantity, (long long)avail);
            goto next;
        }
        items = json_array();
        for (i = 0; i < n; i++) {
            json_array_append_new(items, json_pack("{s:s, s:I}", "sku", lines[i].sku, "quantity",
                                                   (json_int_t)lines[i].quantity));
            evs[i + 1] = (cmd_event){"StockReserved",
                                     json_pack("{s:s, s:s, s:I}", "sku", lines[i].sku, "order_id",
                                               order_id, "quantity", (json_int_t)lines[i].quantity)};
            as[i + 1] = (cmd_append){lines[i].stream, stocks[i].version, &evs[i + 1], 1,
                                     (unsigned)(i + 1)};
        }
        evs[0] = (cmd_event){"ReservationMade",
                             json_pack("{s:s, s:o}", "order_id", order_id, "items", items)};
        as[0] = (cmd_append){rstream, r.version, evs, 1, 0};
        cmd_append_all(env, command_id, in, as, n + 1, res, &failed);
        cmd_events_free(evs, n + 1);
        if (res[failed].status == ES_ECONFLICT && attempt < tries)
            goto retry;
        if (res[failed].status != ES_OK) {
            cmd_fail_with(out, &res[failed].err);
        } else {
            es_position last = res[0].position;
            for (i = 1; i <= n; i++)
                if (es_position_cmp(res[i].position, last) > 0)
                    last = res[i].position;
            cmd_ok(out, res[0].duplicate ? 200 : 201,
                   json_pack("{s:s, s:s}", "order_id", order_id, "status", "reserved"), last);
        }
    next:
        for (i = 0; i < n; i++)
            agg_free(&stocks[i]);
        agg_free(&r);
        return;
    retry:
        for (i = 0; i < n; i++)
            agg_free(&stocks[i]);
        agg_free(&r);
    }
}

void
inventory_release(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char rstream[ES_STREAM_ID_MAX + 1];
    const char *order_id;
    int tries = env->cfg->conflict_retries > 0 ? env->cfg->conflict_retries : 10;

    (void)fresh;
    if (!cmd_stream_arg(in, "order_id", "reservation", rstream, &order_id, out))
        return;
    for (int attempt = 0;; attempt++) {
        agg r, stocks[SKUS_MAX];
        line lines[SKUS_MAX];
        cmd_event evs[SKUS_MAX + 1];
        cmd_append as[SKUS_MAX + 1];
        es_append_result res[SKUS_MAX + 1];
        size_t n = 0, i, failed;
        json_t *items, *it;
        es_error err;

        if (agg_load(env, &reservation, rstream, &r, &err) != ES_OK) {
            cmd_fail_with(out, &err);
            return;
        }
        if (strcmp(json_string_value(json_object_get(r.state, "status")), "reserved") != 0) {
            /* nothing reserved, or released already: nothing to give back */
            cmd_ok(out, 200, json_pack("{s:s, s:O}", "order_id", order_id, "status",
                                       json_object_get(r.state, "status")), cmd_noop_position(env, &r));
            agg_free(&r);
            return;
        }
        items = json_object_get(r.state, "items");
        json_array_foreach(items, i, it) {
            /* stored by inventory.reserve, but the raw API can write
             * anything into a stream: check before trusting it */
            if (n == SKUS_MAX || !json_is_string(json_object_get(it, "sku")) ||
                !cmd_stream(lines[n].stream, sizeof lines[n].stream, "stock",
                            json_string_value(json_object_get(it, "sku")))) {
                cmd_fail(out, ES_EINTERNAL, "reservation_invalid", "order_id",
                         "the reservation of order %s is not one this service wrote", order_id);
                agg_free(&r);
                return;
            }
            lines[n].sku = json_string_value(json_object_get(it, "sku"));
            lines[n].quantity = json_integer_value(json_object_get(it, "quantity"));
            n++;
        }
        for (i = 0; i < n; i++) {
            if (agg_load(env, &stock, lines[i].stream, &stocks[i], &err) != ES_OK) {
                while (i-- > 0)
                    agg_free(&stocks[i]);
                agg_free(&r);
                cmd_fail_with(out, &err);
                return;
            }
            evs[i + 1] = (cmd_event){"StockReleased",
                                     json_pack("{s:s, s:s, s:I}", "sku", lines[i].sku, "order_id",
                                               order_id, "quantity", (json_int_t)lines[i].quantity)};
            as[i + 1] = (cmd_append){lines[i].stream, stocks[i].version, &evs[i + 1], 1,
                                     (unsigned)(i + 1)};
        }
        evs[0] = (cmd_event){"ReservationReleased", json_pack("{s:s}", "order_id", order_id)};
        as[0] = (cmd_append){rstream, r.version, evs, 1, 0};
        cmd_append_all(env, command_id, in, as, n + 1, res, &failed);
        cmd_events_free(evs, n + 1);
        for (i = 0; i < n; i++)
            agg_free(&stocks[i]);
        agg_free(&r);
        if (res[failed].status == ES_ECONFLICT && attempt < tries)
            continue;
        if (res[failed].status != ES_OK)
            cmd_fail_with(out, &res[failed].err);
        else
            cmd_ok(out, 200, json_pack("{s:s, s:s}", "order_id", order_id, "status", "released"),
                   res[0].position);
        return;
    }
}
