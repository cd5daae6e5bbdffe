/*
 * libFuzzer target for the other decoders of untrusted text in event.c:
 * feed positions (they arrive in query strings), stream ids and the
 * printable-UTF-8 check.  A parsed position must format back to a text
 * that parses to the same position.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    es_position p, q;
    char again[ES_POSITION_TEXT_MAX];
    es_error err;

    memcpy(text, data, size);
    text[size] = '\0';
    if (es_position_parse(text, &p)) {
        es_position_format(p, again);
        if (!es_position_parse(again, &q) || es_position_cmp(p, q) != 0)
            abort();
    }
    if (es_stream_id_check(text, "stream", &err) == ES_OK &&
        !es_text_printable(text, strlen(text)))
        abort();
    (void)es_text_printable((const char *)data, size);
    free(text);
    return 0;
}
