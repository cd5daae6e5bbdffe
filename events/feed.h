/*
 * Reading the events stream that es-relay fills: message n of the
 * JetStream stream is the n-th event of the store's feed, so the stream
 * sequence is the feed sequence consumers checkpoint.
 */
#ifndef ES_FEED_H
#define ES_FEED_H

#include <jansson.h>
#include <nats/nats.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "event.h"
#include "status.h"

/* What a member of an event's data is (es_feed_get). */
typedef enum es_feed_kind {
    ES_FEED_ABSENT = 0,         /* no such member */
    ES_FEED_NULL,
    ES_FEED_TRUE,
    ES_FEED_FALSE,
    ES_FEED_INTEGER,
    ES_FEED_REAL,               /* only from jansson (es_feed_event_scan leaves reals to it) */
    ES_FEED_STRING,
    ES_FEED_OBJECT,
    ES_FEED_ARRAY
} es_feed_kind;

/* A member of an event's data, borrowed from the event. */
typedef struct es_feed_value {
    es_feed_kind kind;
    const char *str;            /* STRING: the value, NUL-terminated ... */
    size_t len;                 /* ... and its length in bytes */
    long long num;              /* INTEGER */
    /* OBJECT, ARRAY: the value as json_dumps(JSON_COMPACT) writes it
     * (json), or jansson's tree (tree), whichever the decoder made; see
     * es_feed_value_json */
    const char *json;
    const json_t *tree;
} es_feed_value;

#define ES_FEED_FIELDS_MAX 32   /* members of data es_feed_event_scan keeps itself */

typedef struct es_feed_field {
    const char *key;
    es_feed_value v;
} es_feed_field;

/* An event as a consumer sees it, with its feed sequence.  Its data is
 * either jansson's tree (data) or, from es_feed_event_scan, its members
 * (data NULL): read them with es_feed_get. */
typedef struct es_feed_event {
    uint64_t seq;
    char position[ES_POSITION_TEXT_MAX];
    const char *stream, *type, *event_id, *recorded_at;
    const char *category_end;   /* first '-' of stream, or NULL */
    const char *trace_id;       /* metadata's trace_id when it is a string, else NULL */
    json_t *data;
    json_t *root_;              /* owns the strings above (jansson's decoding) */
    es_feed_field *fields_;     /* data's members (es_feed_event_scan) */
    size_t nfields_;
    char *arena_;               /* owns fields_ and the strings (es_feed_event_scan) */
} es_feed_event;

/* Decodes one message of the events stream (es_event_encode's JSON, with
 * "stream"); seq is the message's stream sequence.  A body that is not
 * such an event is ES_EINVALID with the reason.  Free with
 * es_feed_event_free, also after a failure. */
es_status es_feed_event_decode(const char *body, size_t len, uint64_t seq, es_feed_event *out,
                               es_error *err);
/*
 * es_feed_event_decode without a jansson tree (events/scan.c), for the
 * projector's hot path: the same event, and the same refusals with the
 * same reasons (what it does not handle itself, it hands to
 * es_feed_event_decode).  out->data and es_feed_event_json are NULL when
 * it decoded the message itself: read data with es_feed_get.
 */
es_status es_feed_event_scan(const char *body, size_t len, uint64_t seq, es_feed_event *out,
                             es_error *err);
/* Member name of e's data into *out (kind ES_FEED_ABSENT when there is
 * none); returns out->kind. */
es_feed_kind es_feed_get(const es_feed_event *e, const char *name, es_feed_value *out);
/* Appends an OBJECT or ARRAY value as json_dumps(JSON_COMPACT |
 * JSON_PRESERVE_ORDER) writes it; false when out of memory. */
bool es_feed_value_json(const es_feed_value *v, es_buf *out);
/* The same from an event read from the store; out's strings are e's, so
 * out must not outlive e's page. */
es_status es_feed_event_from_store(const es_event *e, uint64_t seq, es_feed_event *out,
                                   es_error *err);
void es_feed_event_free(es_feed_event *e);
/* The event as it was decoded (borrowed, lives as long as e): the whole
 * message for es_feed_event_decode, the data for es_feed_event_from_store;
 * NULL when the body was not a JSON object. */
const json_t *es_feed_event_json(const es_feed_event *e);

/* A connected callback for natsOptions_SetRetryOnFailedConnect: with one,
 * natsConnection_Connect returns at once (NATS_NOT_YET_CONNECTED) while
 * the server is down and connects in the background; without one it
 * blocks until the server answers, which would keep a daemon from
 * answering /healthz and esctl from saying the server is down. */
void es_nats_connected(natsConnection *nc, void *closure);

/*
 * The options of every NATS connection the programs make: url (one, or
 * a comma-separated list of a cluster's servers), their
 * name (NULL: the program's), reconnecting forever, the first connect in
 * the background (es_nats_connected).  With ES_NATS_CA (a PEM file) set,
 * TLS only: the server's certificate must chain to that CA and name the
 * host of url; with ES_NATS_CERT and ES_NATS_KEY as well, the client
 * shows that certificate.  *out is the caller's (natsOptions_Destroy),
 * NULL on failure: ES_EINVALID "tls_invalid" when a TLS file cannot be
 * used, with nats's reason, ES_ENOMEM otherwise.
 */
es_status es_nats_options_create(natsOptions **out, const char *url, const char *name,
                                 es_error *err);

/* Whether nc is connected now.  A JetStream request made while it is not
 * waits for its whole timeout (seconds), which kept daemons from stopping
 * promptly while NATS was down: ask first. */
bool es_nats_up(natsConnection *nc);

/* A connection to the events stream: ES_NATS_URL, ES_RELAY_STREAM (EVENTS),
 * ES_RELAY_SUBJECT_PREFIX (es.events). */
typedef struct es_jetstream {
    natsConnection *nc;
    jsCtx *js;
    char stream[64], subjects[80];
} es_jetstream;

es_status es_jetstream_open(es_jetstream *n, es_error *err);
void es_jetstream_close(es_jetstream *n);
/* An ordered consumer of the stream from sequence from. */
es_status es_jetstream_subscribe(es_jetstream *n, uint64_t from, natsSubscription **out,
                                 es_error *err);
/* Ends a subscription of es_jetstream_subscribe safely (see feed.c). */
void es_jetstream_unsubscribe(es_jetstream *n, natsSubscription *sub);
es_status es_jetstream_last_seq(es_jetstream *n, uint64_t *last, es_error *err);
/* The store position of the event message seq carries (its header
 * ES_POSITION_HEADER, set by the relay).  ES_ENOTFOUND if it has none. */
#define ES_POSITION_HEADER "Es-Position"
es_status es_jetstream_position_at(es_jetstream *n, uint64_t seq, es_position *pos,
                                   es_error *err);

/* Message seq of the stream decoded (es_feed_event_decode; free out with
 * es_feed_event_free, also after a failure) and when JetStream stored it
 * (*stored_us, Unix microseconds: when the relay published it).
 * ES_ENOTFOUND when there is no such message. */
es_status es_jetstream_message_at(es_jetstream *n, uint64_t seq, es_feed_event *out,
                                  int64_t *stored_us, es_error *err);

/* Decoded messages; bad[i] (malloc'd) says why ev[i] could not be. */
typedef struct es_feed_batch {
    es_feed_event *ev;
    char **bad;
    size_t n;
} es_feed_batch;

/* Takes up to max messages: waits up to wait_ms for the first, then what
 * is already queued.  ES_EUNAVAILABLE when the subscription broke. */
es_status es_jetstream_take(natsSubscription *sub, int max, int wait_ms, es_feed_batch *out,
                            es_error *err);
void es_feed_batch_free(es_feed_batch *m);

/*
 * A pull consumer of the stream from sequence from (ephemeral, no acks,
 * in the server's memory; gone ES_NATS_PULL_INACTIVE_MS, 30 s, after its
 * reader stops asking).  Unlike es_jetstream_subscribe's push consumer,
 * which the server fills as fast as it can (a reader catching up held
 * most of the backlog in the library's queue), the server sends only the
 * batches es_jetstream_fetch asks for: what a reader holds is bounded by
 * its batch.  End it with es_jetstream_unsubscribe.
 */
es_status es_jetstream_pull(es_jetstream *n, uint64_t from, natsSubscription **out,
                            es_error *err);
/*
 * The byte cap of one fetch: ES_NATS_FETCH_BYTES (default 8 MiB), raised
 * to the largest message (and 64 KiB for the subjects) of any stream
 * es_jetstream_pull made a consumer of, should it be below: a cap below
 * a message would never let it through.  Logs (a warning) once when it
 * raises it.  A malformed or out-of-range value (below 1024, above
 * 1 GiB) ends the program, as es_env_long.
 */
int64_t es_jetstream_fetch_bytes(void);

/*
 * Fetches from a pull consumer up to max messages (es_jetstream_fetch_bytes
 * at most), each decoded by es_feed_event_scan (a reason in bad[i] as
 * es_jetstream_take gives it; data read with es_feed_get), where next is the
 * sequence expected first: what the server has at once, else waits up to
 * wait_ms for one.  The batch ends before a message whose sequence is not
 * the next one: *jump is that message's sequence (else 0).  Empty (ES_OK,
 * n 0) when nothing came; ES_EUNAVAILABLE when the consumer or the
 * connection failed (pull again).
 */
es_status es_jetstream_fetch(natsSubscription *sub, uint64_t next, int max, int wait_ms,
                             es_feed_batch *out, uint64_t *jump, es_error *err);

#endif
