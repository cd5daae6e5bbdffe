/*
 * libFuzzer target for the two readers of outside trace bytes in
 * events/trace.c: es_traceparent_parse (the header of every command) and
 * es_trace_from_metadata (metadata as the store returns it, which raw
 * appends let clients write).  Besides not crashing, what must hold for
 * any input: a parsed header has valid ids and formats back to the same
 * trace and flags; ids read from metadata are valid.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *value = malloc(size + 1), again[ES_TRACEPARENT_LEN + 1];
    es_trace t, u;

    if (value == NULL)
        return 0;
    memcpy(value, data, size);
    value[size] = '\0';
    memset(&t, 0x55, sizeof t);
    if (es_traceparent_parse((const char *)data, size, &t)) {
        if (!es_trace_id_valid(t.trace_id) || strlen(t.parent_id) != ES_SPAN_ID_LEN ||
            t.flags > 255)
            abort();
        memcpy(t.span_id, t.parent_id, sizeof t.span_id);
        es_traceparent_format(&t, again);
        if (!es_traceparent_parse(again, strlen(again), &u) ||
            strcmp(u.trace_id, t.trace_id) != 0 || strcmp(u.parent_id, t.parent_id) != 0 ||
            u.flags != t.flags)
            abort();
    }
    if (es_trace_from_metadata(value, size, &t)) {
        if (!es_trace_id_valid(t.trace_id) || strlen(t.span_id) != ES_SPAN_ID_LEN)
            abort();
    } else if (t.trace_id[0] != '\0' || t.span_id[0] != '\0') {
        abort();
    }
    free(value);
    return 0;
}
