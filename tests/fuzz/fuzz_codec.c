/*
 * libFuzzer target for the request decoders: the append body of
 * POST /v1/streams/{stream}/events (es_append_body_decode), request
 * objects (es_json_parse_object), the command argument decoders of
 * command/exec.c and an order's items (order_decode_items).  Decoded
 * events must pass or fail the store's own validation without crashing,
 * and an order's total must be the sum of its lines.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "codec.h"
#include "contexts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    es_append_body body;
    es_error err;
    json_t *obj = NULL, *items = NULL;
    json_int_t total = 0;
    cmd_out out;

    if (es_append_body_decode((const char *)data, size, &body, &err) == ES_OK) {
        if (body.count == 0 || body.events == NULL)
            abort();
        for (size_t i = 0; i < body.count; i++)
            (void)es_new_event_check(&body.events[i], i, ES_EVENT_SIZE_MAX_DEFAULT, &err);
        es_append_body_free(&body);
    } else if (err.status != ES_EINVALID && err.status != ES_ENOMEM) {
        abort();
    }
    if (es_json_parse_object((const char *)data, size, &obj, &err) != ES_OK)
        return 0;
    {
        const char *s;
        int64_t n;
        (void)dec_string(obj, "email", true, 254, &s, &err);
        (void)dec_id(obj, "customer_id", &s, &err);
        (void)dec_int(obj, "amount", true, 1, 1000000000000LL, &n, &err);
    }
    cmd_out_init(&out);
    if (order_decode_items(obj, &items, &total, &out)) {
        json_int_t sum = 0;
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
            sum += json_integer_value(json_object_get(it, "quantity")) *
                   json_integer_value(json_object_get(it, "unit_price"));
        if (sum != total || total < 0)
            abort();
        json_decref(items);
    }
    cmd_out_free(&out);
    json_decref(obj);
    return 0;
}
