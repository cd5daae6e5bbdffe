/*
 * libFuzzer target for es_json_check, the checker every event body goes
 * through.  Besides not crashing, it checks properties that must hold for
 * any input: the reported offset lies inside the text, a valid text stays
 * valid with white space around it, and the kind matches the first byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t offset = (size_t)-1;
    const char *reason = NULL;
    es_json_kind kind = es_json_check((const char *)data, size, &offset, &reason);

    if (kind == ES_JSON_INVALID) {
        if (reason == NULL || offset > size)
            abort();
        return 0;
    }
    {
        char *padded = malloc(size + 2);
        const char *first = (const char *)data;

        memcpy(padded + 1, data, size);
        padded[0] = ' ';
        padded[size + 1] = '\n';
        if (es_json_check(padded, size + 2, NULL, NULL) != kind)
            abort();
        free(padded);
        while (*first == ' ' || *first == '\t' || *first == '\n' || *first == '\r')
            first++;
        if ((kind == ES_JSON_OBJECT) != (*first == '{') ||
            (kind == ES_JSON_ARRAY) != (*first == '['))
            abort();
    }
    return 0;
}
