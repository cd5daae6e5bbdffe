/*
 * A strict, allocation-free JSON checker for the append hot path.  It
 * accepts exactly the texts PostgreSQL's jsonb accepts within our limits:
 * RFC 8259 syntax, valid UTF-8, no \u0000, surrogate escapes only in
 * pairs, nesting at most ES_JSON_DEPTH_MAX, numbers within the range of
 * PostgreSQL's numeric.  Parsing an event with jansson only to check it
 * cost more CPU than the database spent storing it.
 */
#ifndef ES_JSON_H
#define ES_JSON_H

#include <stddef.h>

#define ES_JSON_DEPTH_MAX 256
#define ES_JSON_SCALE_MAX 16383         /* PostgreSQL numeric's limits */
#define ES_JSON_WEIGHT_LIMIT 131072
#define ES_JSON_EXPONENT_LIMIT 1073741823L     /* INT_MAX / 2 */

typedef enum es_json_kind {
    ES_JSON_INVALID = 0,
    ES_JSON_OBJECT,
    ES_JSON_ARRAY,
    ES_JSON_STRING,
    ES_JSON_NUMBER,
    ES_JSON_LITERAL         /* true, false, null */
} es_json_kind;

/*
 * Checks that text (len bytes) is one JSON value, surrounded only by
 * white space.  Returns its kind, or ES_JSON_INVALID with *offset set to
 * the byte where the text goes wrong and *reason to a static message.
 * offset and reason may be NULL.
 */
es_json_kind es_json_check(const char *text, size_t len, size_t *offset,
                           const char **reason);

#endif
