/*
 * The console's parsers of untrusted text (console.c): query counts,
 * "<id>/<verb>" path tails, dead-letter ids, the fingerprint that
 * groups dead letters, and the body of a batch action on sagas.  Pure functions, so tests/fuzz/fuzz_console.c
 * runs them without a server.
 */
#ifndef QUERY_CONSOLE_ARGS_H
#define QUERY_CONSOLE_ARGS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/* A decimal count of 1 to 18 digits in [lo, hi] into *out (untouched on
 * failure); false for anything else (signs, spaces, empty). */
bool console_count_parse(const char *s, long long lo, long long hi, long long *out);

/* rest is "<id>/<verb>" with a non-empty id shorter than size: the id
 * into buf and true; otherwise false (buf untouched). */
bool console_id_verb(const char *rest, const char *verb, char *buf, size_t size);

/* A dead letter's id: 1 to 18 decimal digits. */
bool console_dead_letter_id_ok(const char *id);

/*
 * The fingerprint of a dead letter: its flow, its event type and its
 * reason with every run of digits made one '#', so that the same failure
 * of many sagas (ids, amounts, attempts differ) is one group.  16 hex
 * digits of FNV-1a 64 into out (17 bytes).  NULL parts count as "".
 */
void console_fingerprint(const char *flow, const char *event_type, const char *reason,
                         char out[17]);

/* Most sagas one batch action names. */
#define CONSOLE_BATCH_MAX 100

/* A batch action on sagas, decoded from its JSON body: the pointers
 * borrow from the parsed body. */
typedef struct console_batch {
    bool compensate;                        /* else retry */
    const char *reason;                     /* NULL when absent */
    const char *ids[CONSOLE_BATCH_MAX];
    size_t nids;
} console_batch;

/*
 * Decodes the body of POST /v1/console/sagas/batch, len bytes of JSON:
 * {"action": "retry"|"compensate", "saga_ids": [1 to CONSOLE_BATCH_MAX
 * distinct strings of 1 to 200 bytes], "reason"?: string of at most 200
 * bytes}.  json_root receives the parsed document (a new reference the
 * caller frees, NULL on failure) that out's pointers borrow from.  false
 * with the offending member's name in *field ("body" when it is not a
 * JSON object) and a message in msg (size bytes).
 */
bool console_batch_parse(const char *body, size_t len, json_t **json_root,
                         console_batch *out, const char **field, char *msg, size_t size);

#endif
