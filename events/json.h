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

#include <stdbool.h>
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

/*
 * es_json_check, and on success *stored is the length of the text
 * PostgreSQL's jsonb gives back for it (its output form: ": " and ", "
 * between members, escapes decoded and re-made, numbers without exponent:
 * 1e300 is 301 bytes), at most that when an object repeats a key.  What
 * the store holds and the relay publishes is that text, so size limits
 * apply to it, not to the bytes sent.
 */
es_json_kind es_json_check_stored(const char *text, size_t len, size_t *stored, size_t *offset,
                                  const char **reason);

/*
 * es_json_check_stored, and every number as the store gives it back is one
 * the readers decode: an integer within 64 bits, or with a fraction a
 * double that does not overflow (jsonb drops exponents: 1e30 comes back as
 * a 31-digit integer).  The check of an event's data and metadata: a
 * number PostgreSQL stores but jansson refuses would stop every
 * projection that reads the event.
 */
es_json_kind es_json_check_event(const char *text, size_t len, size_t *stored, size_t *offset,
                                 const char **reason);

/* A piece of a JSON text: not NUL-terminated. */
typedef struct es_json_slice {
    const char *text;
    size_t len;
} es_json_slice;

/* Called for each member (key is the raw text between the quotes,
 * escapes kept) or element (key empty) with the value's exact text.
 * Return false to stop. */
typedef bool (*es_json_visit)(void *ctx, size_t index, es_json_slice key, es_json_slice value);

/*
 * Walk the members of an object / the elements of an array whose text
 * es_json_check accepted, without building anything: the values come as
 * slices of text, byte for byte as sent.  false if fn stopped the walk
 * (or the text was not a checked container).
 */
bool es_json_members(const char *text, size_t len, es_json_visit fn, void *ctx);
bool es_json_elements(const char *text, size_t len, es_json_visit fn, void *ctx);

/* Decodes the escapes of a checked JSON string's inner text in place;
 * returns the new length (never longer). */
size_t es_json_unescape(char *s, size_t len);

#endif
