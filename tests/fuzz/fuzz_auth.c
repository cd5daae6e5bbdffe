/*
 * libFuzzer target for es_auth_parse_header, which reads the
 * Authorization header of every request before anything else does.
 * Besides not crashing, it checks what must hold for any input: a token
 * found lies inside the value, is non-empty, holds only token68
 * characters, and parsing "Bearer " plus that token finds it again.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *value = malloc(size + 1), *again;
    const char *tok = NULL, *tok2 = NULL;
    size_t len = 0, len2 = 0;

    if (value == NULL)
        return 0;
    memcpy(value, data, size);
    value[size] = '\0';             /* a header value is a C string */
    if (es_auth_parse_header(value, &tok, &len)) {
        if (tok == NULL || len == 0 || tok < value || tok + len > value + strlen(value))
            abort();
        for (size_t i = 0; i < len; i++)
            if (strchr("-._~+/=", tok[i]) == NULL &&
                !((tok[i] >= 'a' && tok[i] <= 'z') || (tok[i] >= 'A' && tok[i] <= 'Z') ||
                  (tok[i] >= '0' && tok[i] <= '9')))
                abort();
        if ((again = malloc(len + 8)) != NULL) {
            memcpy(again, "Bearer ", 7);
            memcpy(again + 7, tok, len);
            again[len + 7] = '\0';
            if (!es_auth_parse_header(again, &tok2, &len2) || len2 != len ||
                memcmp(tok, tok2, len) != 0)
                abort();
            free(again);
        }
    } else if (tok != NULL || len != 0) {
        abort();
    }
    free(value);
    return 0;
}
