/*
 * libFuzzer target for the console's parsers of untrusted text
 * (query/console_args.c): the query counts, the "<id>/<verb>" path tails
 * and dead-letter ids every /v1/console/ request goes through, and the
 * dead-letter fingerprint.  Besides not crashing, it checks what must
 * hold for any input: a count accepted is in range and prints back as
 * the input (less leading zeros); an id and verb split rejoin into the
 * input; a fingerprint is 16 hex digits and does not change when a run of
 * digits in the reason changes; a batch body accepted names 1 to 100
 * distinct ids of 1 to 200 bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "console_args.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1), id[256], back[300], fp[17], fp2[17], *other;
    long long n = -1;
    size_t i;

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';                 /* query values and paths are C strings */

    if (console_count_parse(s, 1, 500, &n)) {
        const char *d = s;

        if (n < 1 || n > 500)
            abort();
        while (*d == '0' && d[1])
            d++;
        snprintf(back, sizeof back, "%lld", n);
        if (strcmp(back, d) != 0)
            abort();
    }
    (void)console_dead_letter_id_ok(s);
    if (console_id_verb(s, "retry", id, sizeof id)) {
        snprintf(back, sizeof back, "%s/retry", id);
        if (id[0] == '\0' || strcmp(back, s) != 0)
            abort();
    }

    {
        /* the batch body: accepted, every id is 1 to 200 bytes and distinct */
        console_batch b;
        const char *field = NULL;
        char msg[200];
        json_t *root = NULL;

        if (console_batch_parse((const char *)data, size, &root, &b, &field, msg, sizeof msg)) {
            if (b.nids < 1 || b.nids > CONSOLE_BATCH_MAX)
                abort();
            for (i = 0; i < b.nids; i++) {
                if (strlen(b.ids[i]) < 1 || strlen(b.ids[i]) > 200)
                    abort();
                for (size_t k = 0; k < i; k++)
                    if (strcmp(b.ids[i], b.ids[k]) == 0)
                        abort();
            }
        } else if (field == NULL) {
            abort();
        }
        json_decref(root);
    }

    console_fingerprint("order", NULL, s, fp);
    if (strlen(fp) != 16 || strspn(fp, "0123456789abcdef") != 16)
        abort();
    /* every digit made a 7: the same runs of digits, the same fingerprint */
    if ((other = strdup(s)) != NULL) {
        for (i = 0; other[i]; i++)
            if (other[i] >= '0' && other[i] <= '9')
                other[i] = '7';
        console_fingerprint("order", NULL, other, fp2);
        if (strcmp(fp, fp2) != 0)
            abort();
        free(other);
    }
    free(s);
    return 0;
}
