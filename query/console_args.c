/*
 * The console's parsers of untrusted text (console_args.h); fuzzed by
 * tests/fuzz/fuzz_console.c.
 */
#include "console_args.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

bool
console_count_parse(const char *s, long long lo, long long hi, long long *out)
{
    long long n = 0;
    size_t i;

    if (s == NULL)
        return false;
    for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
        if (i == 18)
            return false;
        n = n * 10 + (s[i] - '0');
    }
    if (i == 0 || s[i] != '\0' || n < lo || n > hi)
        return false;
    *out = n;
    return true;
}

bool
console_id_verb(const char *rest, const char *verb, char *buf, size_t size)
{
    size_t n = strlen(rest), v = strlen(verb);

    if (n <= v + 1 || rest[n - v - 1] != '/' || strcmp(rest + n - v, verb) != 0 ||
        n - v - 1 >= size)
        return false;
    memcpy(buf, rest, n - v - 1);
    buf[n - v - 1] = '\0';
    return true;
}

bool
console_dead_letter_id_ok(const char *id)
{
    long long n;

    return console_count_parse(id, 1, 999999999999999999LL, &n);
}

void
console_fingerprint(const char *flow, const char *event_type, const char *reason, char out[17])
{
    uint64_t h = 14695981039346656037ULL;
    const char *parts[3] = {flow ? flow : "", event_type ? event_type : "", reason ? reason : ""};
    int k;

    for (k = 0; k < 3; k++) {
        const unsigned char *s = (const unsigned char *)parts[k];
        bool digits = false;

        for (; *s; s++) {
            unsigned char c = *s;

            if (k == 2 && c >= '0' && c <= '9') {
                if (digits)
                    continue;
                digits = true;
                c = '#';
            } else {
                digits = false;
            }
            h = (h ^ c) * 1099511628211ULL;
        }
        h = (h ^ 0xff) * 1099511628211ULL;     /* a separator no UTF-8 text has */
    }
    snprintf(out, 17, "%016" PRIx64, h);
}
