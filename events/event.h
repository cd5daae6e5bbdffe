/*
 * The event envelope: what a writer hands to the store (es_new_event),
 * what a reader gets back (es_event), the feed position, and the
 * validation every writer's input goes through before it reaches
 * PostgreSQL.  Validation is here, not in the HTTP layer, so that every
 * way into the store (HTTP, NATS, the library) applies the same rules.
 */
#ifndef ES_EVENT_H
#define ES_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "uuid.h"

#define ES_STREAM_ID_MAX 200            /* bytes */
#define ES_TYPE_MAX 200                 /* bytes */
#define ES_EVENT_SIZE_MAX_DEFAULT (1024 * 1024)
#define ES_APPEND_EVENTS_MAX 10000      /* events in one append */
#define ES_APPEND_SIZE_MAX (32 * 1024 * 1024)   /* bytes of one append's events */

/* Expected versions besides an exact N >= 0. */
#define ES_EXPECT_NO_STREAM (-1)
#define ES_EXPECT_ANY (-2)
#define ES_EXPECT_EXISTS (-3)

/*
 * A position in the gap-free feed: the writing transaction's id and the
 * event's global position.  Feed order is (txid, gpos) ascending; {0, 0}
 * is before the first event.
 */
typedef struct es_position {
    uint64_t txid;
    int64_t gpos;
} es_position;

#define ES_POSITION_TEXT_MAX 42
/* Formats p as "<txid>-<gpos>" into out (ES_POSITION_TEXT_MAX bytes). */
void es_position_format(es_position p, char *out);
/* Parses the text form; false (p untouched) when s is not one. */
bool es_position_parse(const char *s, es_position *p);
/* <0, 0, >0 as a is before, at or after b in feed order. */
int es_position_cmp(es_position a, es_position b);

#define ES_TIME_TEXT_MAX 40

/* An event to append.  All strings are borrowed for the call. */
typedef struct es_new_event {
    const char *event_id;       /* UUID text, or NULL/"" for a random one */
    const char *type;           /* non-empty, printable */
    int schema_version;         /* >= 1; 0 means 1 */
    const char *data;           /* JSON object text */
    const char *metadata;       /* JSON object text, or NULL for {} */
} es_new_event;

/*
 * A recorded event.  Its strings belong to the es_page it came in and
 * live until es_page_destroy.
 */
typedef struct es_event {
    const char *stream_id;
    int64_t version;
    const char *event_id;
    const char *type;
    int schema_version;         /* after upcasting */
    const char *data;           /* JSON object text (jsonb's normal form) */
    const char *metadata;
    const char *recorded_at;    /* RFC 3339 in UTC with microseconds:
                                   "2026-11-22T00:05:01.500000Z" */
    es_position position;
} es_event;

/*
 * Checks a stream id: non-empty, at most ES_STREAM_ID_MAX bytes, valid
 * UTF-8, no control characters.  Returns ES_OK or ES_EINVALID with code
 * stream_id_empty / stream_id_too_long / stream_id_invalid; field is
 * used as the error's field name.
 */
es_status es_stream_id_check(const char *stream, const char *field, es_error *err);

/*
 * Checks one event to append (type, id, schema version, that data and
 * metadata are JSON objects, and that the event fits max_size bytes as
 * the store holds it: type plus jsonb's text of data and metadata, see
 * es_json_check_stored; so the relay can always publish what is stored).
 * index names the event in the error's field ("events[3].data").
 * Returns ES_OK, ES_EINVALID or ES_ETOOLARGE.
 */
es_status es_new_event_check(const es_new_event *ev, size_t index,
                             size_t max_size, es_error *err);

/* True when s (n bytes) is valid UTF-8 without control characters. */
bool es_text_printable(const char *s, size_t n);

/* Length of the valid UTF-8 sequence at p, of at most avail bytes (1 for
 * ASCII), or 0: no overlong forms, no surrogates, nothing past U+10FFFF,
 * as jansson checks.  It reads p[1], p[2]... in turn and stops at the
 * first that is not a continuation byte, so on a NUL-terminated text an
 * avail of 4 never reads past the NUL. */
size_t es_utf8_len(const unsigned char *p, size_t avail);

/* Makes s valid UTF-8 in place: invalid bytes become '?', a sequence cut
 * at the end is dropped.  For texts that echo untrusted input. */
void es_text_make_utf8(char *s);

/* True when item is one of the comma-separated entries of list (ASCII
 * case ignored). */
bool es_list_contains(const char *list, const char *item);

#endif
