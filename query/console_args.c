/*
 * The console's parsers of untrusted text (console_args.h); fuzzed by
 * tests/fuzz/fuzz_console.c.
 */
#include "console_args.h"

#include <inttypes.h>
#include <jansson.h>
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

static bool
batch_fail(const char **field, const char *name, char *msg, size_t size, const char *text)
{
    *field = name;
    snprintf(msg, size, "%s", text);
    return false;
}

bool
console_batch_parse(const char *body, size_t len, json_t **json_root, console_batch *out,
                    const char **field, char *msg, size_t size)
{
    json_t *root, *ids, *v;
    const char *action;
    size_t i, k;

    *json_root = NULL;
    memset(out, 0, sizeof *out);
    root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return batch_fail(field, "body", msg, size, "the body must be a JSON object");
    }
    *json_root = root;
    action = json_string_value(json_object_get(root, "action"));
    if (action == NULL || (strcmp(action, "retry") != 0 && strcmp(action, "compensate") != 0))
        return batch_fail(field, "action", msg, size, "action must be retry or compensate");
    out->compensate = strcmp(action, "compensate") == 0;
    v = json_object_get(root, "reason");
    if (v != NULL && (!json_is_string(v) || json_string_length(v) > 200))
        return batch_fail(field, "reason", msg, size,
                          "reason must be a string of at most 200 bytes");
    out->reason = json_string_value(v);
    ids = json_object_get(root, "saga_ids");
    if (!json_is_array(ids) || json_array_size(ids) == 0 ||
        json_array_size(ids) > CONSOLE_BATCH_MAX)
        return batch_fail(field, "saga_ids", msg, size,
                          "saga_ids must be an array of 1 to 100 saga ids");
    json_array_foreach(ids, i, v) {
        const char *id = json_string_value(v);

        if (id == NULL || json_string_length(v) == 0 || json_string_length(v) > 200 ||
            strlen(id) != json_string_length(v))
            return batch_fail(field, "saga_ids", msg, size,
                              "each saga id is a string of 1 to 200 bytes");
        for (k = 0; k < out->nids; k++)
            if (strcmp(out->ids[k], id) == 0)
                return batch_fail(field, "saga_ids", msg, size,
                                  "saga_ids names a saga twice");
        out->ids[out->nids++] = id;
    }
    return true;
}
