/*
 * Server-Sent Events of the feed (GET /v1/subscriptions/feed): what a
 * subscriber asks for (where to start, which categories and types),
 * decoded from its untrusted query and Last-Event-ID header, and the
 * text of each message it is sent.  No I/O here: the command service's
 * hub (command/sse.c) reads the store and writes the connections.
 */
#ifndef ES_SSE_H
#define ES_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "event.h"
#include "status.h"

/* Names in one ?category= or ?type= list at most. */
#define ES_SSE_FILTER_NAMES_MAX 16
/* Bytes of one ?category= or ?type= value at most. */
#define ES_SSE_FILTER_TEXT_MAX 1024

typedef struct es_sse_filter {
    es_position after;          /* send events after this; {0,0}: from the start */
    bool from_tail;             /* neither given: after the feed's end as it is
                                   when the stream starts (shared/API.md) */
    /* comma-separated lists, split in place into names; none: no filter */
    char category_text[ES_SSE_FILTER_TEXT_MAX + 1];
    char type_text[ES_SSE_FILTER_TEXT_MAX + 1];
    const char *categories[ES_SSE_FILTER_NAMES_MAX];
    const char *types[ES_SSE_FILTER_NAMES_MAX];
    size_t ncategories, ntypes;
} es_sse_filter;

/*
 * Decodes a subscription: after (the ?after= argument) and last_event_id
 * (the Last-Event-ID header), either may be NULL, the header winning when
 * both are given (neither: from_tail); category and type, NULL for no filter, each a comma-
 * separated list of names (a category is the part of a stream's id
 * before its first '-').  ES_EINVALID with code "query_invalid" and the
 * field at fault ("after", "Last-Event-ID", "category", "type") for
 * anything else: a position this service did not give, an empty name, a
 * name that is not a valid category or type, too many or too long.
 */
es_status es_sse_filter_parse(es_sse_filter *f, const char *after, const char *last_event_id,
                              const char *category, const char *type, es_error *err);

/* Whether an event of stream and type passes f. */
bool es_sse_filter_match(const es_sse_filter *f, const char *stream, const char *type);

/* Appends the message of e: "id: <position>", "event: <type>", "data: "
 * and e as GET /v1/feed gives it (with "stream"). */
void es_sse_event(es_buf *b, const es_event *e);
/* Appends a message with only "id: <position>": no event is dispatched,
 * but the client's Last-Event-ID moves past events its filter skipped. */
void es_sse_position(es_buf *b, es_position p);
/* Appends the heartbeat comment ": heartbeat". */
void es_sse_heartbeat(es_buf *b);
/* Appends the last message of a stream the server ends: "event: cut",
 * data {"reason": reason, "last_id": "<position>"} (last_id null when
 * nothing was sent yet). */
void es_sse_cut(es_buf *b, const char *reason, const es_position *last_id);

#endif
