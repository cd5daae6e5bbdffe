/*
 * libFuzzer target for what es-projector decodes from NATS: a message of
 * the events stream (es_feed_event_decode), then every projection's handler on
 * it.  Either the message is refused with a reason, or each projection
 * adds the event to a batch or refuses it as invalid, leaving the batch
 * exactly as it was; nothing may crash, leak or build a malformed batch.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "projections.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    es_feed_event e;
    es_error err;

    if (es_feed_event_decode((const char *)data, size, 7, &e, &err) != ES_OK) {
        if (err.status != ES_EINVALID && err.status != ES_ENOMEM)
            abort();
        es_feed_event_free(&e);
        return 0;
    }
    for (size_t i = 0; i < pj_projection_count; i++) {
        es_rm_batch b;
        size_t n;

        es_rm_batch_init(&b, pj_projections[i].name, NULL);
        n = b.n;
        if (pj_add(&b, &pj_projections[i], &e, &err) == ES_OK) {
            /* event header: seq, position, command count */
            if (b.events != 1 || b.n < n + 3)
                abort();
        } else if (b.events != 0 || b.n != n) {
            abort();
        }
        es_rm_batch_free(&b);
    }
    es_feed_event_free(&e);
    return 0;
}
