/*
 * Event schemas: what every later stage may trust about an event's data.
 * One static table (schema.c) holds a schema for every event type of the
 * categories that declare them (the protected ones of auth.h, plus any
 * other category that adds entries); each schema lists its data's
 * members with their JSON type and bounds (string length in bytes,
 * integer range, array size).
 *
 * Three users, one table:
 *   - the command contexts check each event they emit (cmd_append_all in
 *     command/exec.c): an event that fails is a bug, answered 500 and
 *     never stored;
 *   - the raw append paths check every event sent to a category that
 *     declares schemas (es_schema_check_text): 422 naming the field;
 *   - the projections (projector/projections.c) rely on nothing the
 *     schema does not guarantee; tests/test_schema.c proves it by feeding
 *     them events at the schemas' bounds and just past them.
 *
 * A category that declares schemas is closed: a type it does not list is
 * refused too.  The schema describes the current version of a type;
 * older versions pass through the upcasters (upcast.h) first.
 */
#ifndef ES_SCHEMA_H
#define ES_SCHEMA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "upcast.h"

typedef enum es_schema_kind {
    ES_SCHEMA_STRING,       /* printable UTF-8 (no control character), min..max bytes */
    ES_SCHEMA_TEXT,         /* any UTF-8 without NUL, min..max bytes */
    ES_SCHEMA_IDENT,        /* letters, digits, '_', '.', '-'; min..max bytes */
    ES_SCHEMA_INTEGER,      /* a JSON integer (no fraction, no exponent) in min..max */
    ES_SCHEMA_BOOLEAN,      /* true or false */
    ES_SCHEMA_OBJECT,       /* an object; with fields, its members are checked too */
    ES_SCHEMA_ARRAY         /* min..max elements; with fields, each an object checked so */
} es_schema_kind;

/* One member of an event's data (lists end with a NULL name). */
typedef struct es_schema_field {
    const char *name;
    es_schema_kind kind;
    bool required;          /* otherwise: absent, null, or of its kind */
    int64_t min, max;       /* bytes, value or elements, as the kind says */
    const struct es_schema_field *fields;   /* OBJECT / ARRAY elements, or NULL */
} es_schema_field;

typedef struct es_schema {
    const char *category;   /* the stream id's part before its first '-' */
    const char *type;
    int version;            /* the current schema version of the type */
    const char *written_by; /* for humans: the command or program that emits it */
    const es_schema_field *fields;
} es_schema;

/* The table, in one place (schema.c). */
extern const es_schema es_schemas[];
extern const size_t es_schema_count;

/* The error codes of a refusal (es_error.code): the event breaks its
 * type's schema / its category declares no such type / no upcaster brings
 * its schema version to the current one. */
#define ES_CODE_SCHEMA_VIOLATION "schema_violation"
#define ES_CODE_EVENT_TYPE_UNKNOWN "event_type_unknown"
#define ES_CODE_SCHEMA_VERSION "schema_version_unsupported"

/* Whether the category (n bytes of category, not NUL-terminated) declares
 * schemas, i.e. is closed to types it does not list. */
bool es_schema_category_declared(const char *category, size_t n);

/* The schema of type in the category of stream (its part before the
 * first '-'), or NULL. */
const es_schema *es_schema_find(const char *stream, const char *type);

/*
 * Checks data (borrowed) against s.  prefix names the data in the
 * error's field ("data", "events[2].data").  ES_OK, or ES_ERULE with code
 * ES_CODE_SCHEMA_VIOLATION, the member's path in field
 * ("events[2].data.items[0].sku") and a message saying what is wrong.
 */
es_status es_schema_check(const es_schema *s, const json_t *data, const char *prefix,
                          es_error *err);

/*
 * The raw append paths' check of one event sent as text: nothing to do
 * (ES_OK) when stream's category declares no schemas.  Otherwise the type
 * must be listed (ES_CODE_EVENT_TYPE_UNKNOWN); every number in data must
 * be one each stage reads alike (an integer within 64 bits, or a decimal
 * without exponent: the stored jsonb text of 1e400 or 1e20 is a number
 * no reader here can hold); an older schema_version is upcast with up
 * (which may be NULL: then only the current version passes); the result
 * must pass es_schema_check.  prefix names the event ("events[2]").
 * ES_ERULE (422) on a refusal, ES_ENOMEM.
 */
es_status es_schema_check_text(const char *stream, const char *type, int schema_version,
                               const char *data, const es_upcasters *up, const char *prefix,
                               es_error *err);

/* The same for one schema s, whatever its category (a test's own). */
es_status es_schema_check_data_text(const es_schema *s, int schema_version, const char *data,
                                    const es_upcasters *up, const char *prefix, es_error *err);

/* Every schema as the JSON of GET /v1/schemas: {"schemas": [{"category",
 * "type", "version", "written_by", "fields": [{"name", "type",
 * "required", "min_length"/"max_length" | "minimum"/"maximum" |
 * "min_items"/"max_items", "fields"?}]}]}.  A new reference. */
json_t *es_schema_list_json(void);

#endif
