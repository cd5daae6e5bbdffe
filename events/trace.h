/*
 * W3C Trace Context (traceparent) for one trace per command: es-command
 * takes a caller's `traceparent` header (HTTP or NATS) or starts a trace,
 * and writes the trace into the metadata of every event the command
 * appends (trace_id, span_id, parent_span_id, accepted_at); the relay puts
 * it back into a `traceparent` header on each message it publishes, and
 * es-saga into the commands a saga sends, so everything an order causes
 * shares one trace id.  `esctl trace` reads the stages back.
 *
 * A malformed header is ignored and a new trace started, as the W3C
 * recommendation says: a caller's bad header never fails its command.
 */
#ifndef ES_TRACE_H
#define ES_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define ES_TRACE_ID_LEN 32          /* hex digits of a trace id */
#define ES_SPAN_ID_LEN 16           /* hex digits of a span (parent) id */
#define ES_TRACEPARENT_LEN 55       /* "00-" trace "-" span "-" flags */
#define ES_TRACEPARENT_HEADER "traceparent"

/* One hop of a trace: value struct, all text NUL-terminated. */
typedef struct es_trace {
    char trace_id[ES_TRACE_ID_LEN + 1];     /* "" when there is none */
    char span_id[ES_SPAN_ID_LEN + 1];       /* this hop's own span */
    char parent_id[ES_SPAN_ID_LEN + 1];     /* the caller's span, "" when the trace began here */
    unsigned flags;                         /* trace-flags (bit 0: sampled) */
    int64_t accepted_us;                    /* when es_trace_begin ran: Unix microseconds */
} es_trace;

/*
 * Parses a traceparent header value, len bytes (no NUL needed), white
 * space around it ignored.  Version 00: exactly
 * "00-<32 lower hex, not all 0>-<16 lower hex, not all 0>-<2 hex>".  A
 * later version (not ff) is read the same way and anything after a '-'
 * that follows the flags is ignored, as the recommendation asks.  true:
 * out->trace_id, out->parent_id (the header's parent-id) and out->flags
 * set, out->span_id "" ; false: out untouched.
 */
bool es_traceparent_parse(const char *value, size_t len, es_trace *out);

/*
 * Begins this process's span of a command: continues header (NULL or a
 * traceparent value, NUL-terminated) when it parses, otherwise starts a
 * new trace (random id, flags 01); either way a new random span id and
 * accepted_us now.  Returns true when header was continued.  false with
 * t->trace_id "" only if the kernel's random source failed.
 */
bool es_trace_begin(es_trace *t, const char *header);

/* Writes "00-<trace_id>-<span_id>-<flags>" (ES_TRACEPARENT_LEN + 1
 * bytes) to out; "" when t has no trace. */
void es_traceparent_format(const es_trace *t, char *out);

/* True when s is a trace id: 32 lower-case hex digits, not all zero. */
bool es_trace_id_valid(const char *s);

/*
 * Appends the trace's metadata members to b, each preceded by a comma
 * unless first: "trace_id", "span_id", "parent_span_id" (only with a
 * parent) and "accepted_at" (ISO 8601 UTC with microseconds).  Nothing
 * when t has no trace.
 */
void es_trace_metadata(es_buf *b, const es_trace *t, bool first);

/*
 * Reads the top-level "trace_id" and "span_id" members of a metadata
 * object's JSON text (as the store returns it) without parsing the rest;
 * members of nested objects and text inside strings never match.  true
 * with out->trace_id and out->span_id (parent_id "", flags 01) when both
 * are there and valid; false otherwise (out's ids then "").
 */
bool es_trace_from_metadata(const char *json, size_t len, es_trace *out);

#endif
