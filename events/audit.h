/*
 * Read-only reads of the event store, for operators: how many events
 * are stored (in all, or after a feed position), a tally of one
 * category's events by type, grouped by a field of their data and
 * optionally by stream, and a selection of one category's events by
 * type (and a data field, and streams) in stream or newest-first order.
 * esctl folds its invariant checks (money and stock conserved, nothing
 * done twice), the relay's lag and its saga listings from these, so no
 * program outside events/ writes SQL against the store's tables.
 *
 * The library knows no domain: the caller names the category, the types
 * and the data fields, and each name is sent as a bound parameter, never
 * as SQL text, so any string is only a value.  Unlike the feed, these
 * reads count every committed event, also those above the feed's horizon.
 */
#ifndef ES_AUDIT_H
#define ES_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "status.h"
#include "store.h"
#include "uuid.h"

/* Most event types one tally counts apart. */
#define ES_AUDIT_TYPES_MAX 8

/* Sets *count to the number of events stored. */
es_status es_audit_count(es_store *s, int64_t *count, es_error *err);

/* Sets *count to the number of events stored after position after in
 * feed order ((transaction_id, global_position) above it); {0, 0}
 * counts them all. */
es_status es_audit_count_after(es_store *s, es_position after, int64_t *count,
                               es_error *err);

/*
 * Where the event at position pos stands in the feed: *ordinal is its
 * 1-based place in feed order (the events at or before it; the relay
 * makes that the event's JetStream sequence) and event_id (ES_UUID_LEN +
 * 1 bytes) its id.  ES_ENOTFOUND when no event is at pos.  Counts the
 * whole log up to pos: meant for rare checks (a relay resuming), not for
 * every event.
 */
es_status es_audit_feed_locate(es_store *s, es_position pos, int64_t *ordinal, char *event_id,
                               es_error *err);

/* What to tally: the events of one category whose type is one of types. */
typedef struct es_audit_query {
    const char *category;       /* streams "<category>-..." */
    const char *const *types;   /* 1 .. ES_AUDIT_TYPES_MAX types, counted apart */
    size_t ntypes;
    const char *group_field;    /* events are grouped by the text of data->>group_field;
                                   NULL: all in one group */
    bool by_stream;             /* and by stream */
    const char *sum_field;      /* summed per type as a bigint (data->>sum_field);
                                   NULL: counts only */
} es_audit_query;

/*
 * One group of a tally.  stream and key point into the tally.  A sum
 * leaves out events that lack the field; one whose field is not an
 * integer fails the whole read (ES_EINVALID).
 */
typedef struct es_audit_group {
    const char *stream;         /* NULL unless by_stream */
    const char *key;            /* the group field's text; NULL: events without it */
    int64_t count[ES_AUDIT_TYPES_MAX];  /* events of types[i] */
    int64_t sum[ES_AUDIT_TYPES_MAX];    /* sum_field over those events; 0 if none */
} es_audit_group;

/* The groups of a tally, ordered by stream, then key (bytewise; NULL
 * last).  Only groups with at least one event appear. */
typedef struct es_audit_tally {
    size_t count;
    es_audit_group *groups;
    void *priv_;                /* owned storage; do not touch */
} es_audit_tally;

/*
 * Tallies the events q names.  On ES_OK *out is a new tally the caller
 * frees with es_audit_tally_destroy; on failure *out is NULL and err says
 * why: ES_EINVALID for a query without category or types, or with more
 * than ES_AUDIT_TYPES_MAX, or a sum over a field that is not an integer;
 * a store error otherwise.  q is only read during the call.
 */
es_status es_audit_tally_read(es_store *s, const es_audit_query *q, es_audit_tally **out,
                              es_error *err);

void es_audit_tally_destroy(es_audit_tally *t);

/* How es_audit_events_read orders what it reads. */
typedef enum es_audit_order {
    ES_AUDIT_BY_STREAM,         /* by stream (bytewise), then version: a stream's
                                   events next to each other, oldest first */
    ES_AUDIT_NEWEST_FIRST       /* by recorded_at, newest first (global position,
                                   highest first, among events of one instant) */
} es_audit_order;

/* What to read: the events of one category whose type is one of types. */
typedef struct es_audit_select {
    const char *category;       /* streams "<category>-..." */
    const char *const *types;   /* 1 .. ES_AUDIT_TYPES_MAX types */
    size_t ntypes;
    const char *match_field;    /* only events whose data->>match_field is  */
    const char *match_value;    /* match_value; both NULL: every event */
    const char *const *streams; /* only events of these streams; */
    size_t nstreams;            /* 0: of every stream of the category */
    es_audit_order order;
    size_t limit;               /* at most this many; 0: all */
} es_audit_select;

/*
 * Reads the events q selects into *out, a new page (es_page_destroy),
 * upcast as es_store_read_stream's are; the page's next and
 * stream_version carry nothing here.  On failure *out is NULL and err
 * says why: ES_EINVALID for a select without category or types, with
 * more than ES_AUDIT_TYPES_MAX, a type or stream that is NULL or not
 * UTF-8, a type named twice, or only one of match_field and match_value;
 * a store error otherwise.  q is only read during the call.
 */
es_status es_audit_events_read(es_store *s, const es_audit_select *q, es_page **out,
                               es_error *err);


/* ---- browsing (the operator console) ------------------------------------ */

/* Most streams one es_audit_streams_list call reads. */
#define ES_AUDIT_STREAMS_MAX 1000

/* A stream of a listing; stream lives until the visit returns. */
typedef struct es_audit_stream {
    const char *stream;
    int64_t version;            /* of its last event */
} es_audit_stream;

/*
 * Calls visit for each stream whose id begins with prefix ("" for all;
 * "order-" for the category order) and sorts after after (NULL or "":
 * from the first), in id order, at most limit (1 ..
 * ES_AUDIT_STREAMS_MAX) of them, until visit returns false.  One walk of
 * the stream table's primary key from the larger of prefix and after:
 * its cost is the page, whatever the number of streams, as long as the
 * database sorts text by code point (the C or C.UTF-8 collation
 * scripts/servers.sh creates it with; under another collation a page may
 * leave out some streams of the prefix, never show another's).
 * ES_EINVALID (field prefix or after) for text that is not UTF-8 or
 * longer than 200 bytes, or a limit out of range.
 */
es_status es_audit_streams_list(es_store *s, const char *prefix, const char *after, size_t limit,
                                bool (*visit)(const es_audit_stream *st, void *arg), void *arg,
                                es_error *err);

/* Reads the event at position pos (a page of one, upcast as every read
 * is) into *out; ES_ENOTFOUND (position_not_found) when none is there.
 * An index probe of the feed order's key. */
es_status es_audit_event_at(es_store *s, es_position pos, es_page **out, es_error *err);

/*
 * Reads into *out (a new page, upcast) the events whose
 * metadata.correlation_id is correlation_id, in feed order, after
 * position after ({0, 0}: from the first), at most limit (1 ..
 * ES_AUDIT_STREAMS_MAX), and, under the store's read budget
 * (es_store_set_read_budget), near the budget's bytes at most: a page the
 * budget cut short has truncated set (the next page starts after its
 * last event).  One walk of the index es_events_correlation
 * (migrations/007_correlation_index.sql) from after.  ES_EINVALID (field
 * correlation_id or limit) for an id that is empty, not UTF-8 or longer
 * than 200 bytes, or a limit out of range; *out NULL on failure.
 */
es_status es_audit_correlated(es_store *s, const char *correlation_id, es_position after,
                              size_t limit, es_page **out, es_error *err);

#endif
