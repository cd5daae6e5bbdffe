/*
 * The event envelope's JSON codec: events as the API shows them, and the
 * decoder of an append request body {"expected_version", "events"}, which
 * is untrusted input (tests/fuzz/fuzz_codec.c).
 */
#ifndef ES_CODEC_H
#define ES_CODEC_H

#include <jansson.h>
#include <stdbool.h>

#include "buf.h"
#include "event.h"
#include "status.h"

/*
 * Appends e as {"event_id","type","version","position","data","metadata",
 * "recorded_at"} (plus "stream" when with_stream) to out.  data and
 * metadata are copied as stored (they are valid JSON).
 */
void es_event_encode(es_buf *out, const es_event *e, bool with_stream);

/*
 * A decoded append body.  Its strings point into one private copy of the
 * request (data and metadata byte for byte as sent, never re-encoded)
 * and live until es_append_body_free.
 */
typedef struct es_append_body {
    int64_t expected;
    es_new_event *events;
    size_t count;
    char *copy_;
} es_append_body;

/*
 * Decodes text (len bytes) into out.  ES_EINVALID (err.field names the
 * member, err.message gives the byte offset of a syntax error) or
 * ES_ENOMEM; out is empty on failure and always safe to free.  Members
 * other than the documented ones are ignored; a documented one given
 * twice is refused.
 */
es_status es_append_body_decode(const char *text, size_t len, es_append_body *out,
                                es_error *err);
void es_append_body_free(es_append_body *b);

/*
 * Parses text as a JSON object for a request: ES_EINVALID with code
 * invalid_json and the byte offset, or not_an_object.  *out is a new
 * reference on success.
 */
es_status es_json_parse_object(const char *text, size_t len, json_t **out, es_error *err);

/*
 * The error object of shared/API.md for err: {"code", "message", "field"
 * when one field is at fault, "actual_version" with a version conflict}.
 * The one place an es_error becomes JSON: the HTTP bodies, the NATS
 * command replies and esctl --json all use it.  A new reference, NULL
 * only when out of memory.
 */
json_t *es_error_to_json(const es_error *err);

#endif
