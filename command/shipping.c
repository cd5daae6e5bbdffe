/*
 * Shipping context: stream shipment-<order_id>.  A shipment is created for
 * an order unless its destination country is in the configured list of
 * unsupported ones (ES_SHIPPING_UNSUPPORTED, default "XX,ZZ"), which lets
 * tests and demos make this step fail on purpose; the refusal is recorded.
 *
 * Events: ShipmentCreated {order_id, country, tracking_id},
 * ShipmentRejected {order_id, country, reason}, ShipmentCancelled {order_id}.
 */
#include <string.h>

#include "contexts.h"

static json_t *
initial(void)
{
    return json_pack("{s:s}", "status", "none");
}

static void
apply(json_t *st, const char *type, json_t *d)
{
    if (strcmp(type, "ShipmentCreated") == 0) {
        json_object_set_new(st, "status", json_string("created"));
        json_object_set(st, "tracking_id", json_object_get(d, "tracking_id"));
    } else if (strcmp(type, "ShipmentRejected") == 0) {
        json_object_set_new(st, "status", json_string("rejected"));
    } else if (strcmp(type, "ShipmentCancelled") == 0) {
        json_object_set_new(st, "status", json_string("cancelled"));
    }
}

static const agg_type shipment = {"shipment", 1, initial, apply};

typedef struct ship_args {
    const char *order_id, *country, *command_id;
} ship_args;

static void
decide_create(cmd_env *env, void *ctx, const agg *g, cmd_event *evs, size_t *n, cmd_out *out)
{
    ship_args *a = ctx;
    const char *status = json_string_value(json_object_get(g->state, "status"));
    char tracking[ES_UUID_LEN + 1];

    if (strcmp(status, "created") == 0 || strcmp(status, "cancelled") == 0) {
        out->body = json_pack("{s:s, s:s, s:O}", "order_id", a->order_id, "status", status,
                              "tracking_id", json_object_get(g->state, "tracking_id"));
        return;
    }
    if (es_list_contains(env->cfg->shipping_unsupported, a->country)) {
        evs[0] = (cmd_event){"ShipmentRejected",
                             json_pack("{s:s, s:s, s:s}", "order_id", a->order_id, "country",
                                       a->country, "reason", "unsupported_destination")};
        *n = 1;
        cmd_fail(out, ES_ERULE, "unsupported_destination", "country",
                 "shipping to %s is not supported", a->country);
        return;
    }
    cmd_new_id(a->command_id, 2, tracking);
    evs[0] = (cmd_event){"ShipmentCreated",
                         json_pack("{s:s, s:s, s:s}", "order_id", a->order_id, "country",
                                   a->country, "tracking_id", tracking)};
    *n = 1;
    out->http_status = 201;
    out->body = json_pack("{s:s, s:s, s:s}", "order_id", a->order_id, "status", "created",
                          "tracking_id", tracking);
}

static void
replay_create(const es_event *e, json_t *data, cmd_out *out)
{
    if (strcmp(e->type, "ShipmentRejected") == 0) {
        cmd_fail(out, ES_ERULE, "unsupported_destination", "country",
                 "shipping to %s is not supported", json_string_value(json_object_get(data, "country")));
        return;
    }
    out->body = json_pack("{s:O, s:s, s:O}", "order_id", json_object_get(data, "order_id"),
                          "status", "created", "tracking_id", json_object_get(data, "tracking_id"));
}

void
shipping_create(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char stream[ES_STREAM_ID_MAX + 1];
    ship_args a = {NULL, "DE", command_id};
    es_error err;

    if (!cmd_stream_arg(in, "order_id", "shipment", stream, &a.order_id, out))
        return;
    if (dec_string(in, "country", false, 3, &a.country, &err) != ES_OK) {
        cmd_fail_with(out, &err);
        return;
    }
    if (a.country == NULL)
        a.country = "DE";
    if (cmd_replay(env, command_id, fresh, 0, replay_create, out))
        return;
    cmd_run(env, command_id, in, &shipment, stream, 0, decide_create, &a, out);
}

static void
decide_cancel(cmd_env *env, void *ctx, const agg *g, cmd_event *evs, size_t *n, cmd_out *out)
{
    ship_args *a = ctx;
    const char *status = json_string_value(json_object_get(g->state, "status"));

    (void)env;
    if (strcmp(status, "created") != 0) {
        out->body = json_pack("{s:s, s:s}", "order_id", a->order_id, "status", status);
        return;     /* nothing shipped, or cancelled already */
    }
    evs[0] = (cmd_event){"ShipmentCancelled", json_pack("{s:s}", "order_id", a->order_id)};
    *n = 1;
    out->body = json_pack("{s:s, s:s}", "order_id", a->order_id, "status", "cancelled");
}

void
shipping_cancel(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char stream[ES_STREAM_ID_MAX + 1];
    ship_args a = {NULL, NULL, command_id};

    (void)fresh;
    if (!cmd_stream_arg(in, "order_id", "shipment", stream, &a.order_id, out))
        return;
    cmd_run(env, command_id, in, &shipment, stream, 0, decide_cancel, &a, out);
}
