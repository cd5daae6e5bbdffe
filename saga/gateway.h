/*
 * Gateways: the saga manager's calls to systems outside this one
 * (notification, email).  Each gateway has a swappable transport whose
 * default writes somewhere a person or a test can inspect, optional
 * latency and injected failures for tests and demos, and a circuit
 * breaker so that a dead receiver costs a fast refusal instead of a
 * timeout per call.  Delivery is at least once: the receiver drops
 * repeats by the message id.
 */
#ifndef SG_GATEWAY_H
#define SG_GATEWAY_H

#include "buf.h"
#include "status.h"

#include <stddef.h>

#define SG_GATEWAY_NAME_MAX 31      /* bytes of a gateway name */
#define SG_GATEWAY_MSG_ID_MAX 200   /* bytes of a message id */

typedef struct sg_gateway sg_gateway;

typedef enum {
    SG_BREAKER_CLOSED = 0,
    SG_BREAKER_OPEN = 1,
    SG_BREAKER_HALF_OPEN = 2
} sg_breaker_state;

/*
 * Creates gateway `name` ([a-z0-9_]{1,31}) configured from the
 * environment, NAME upper-cased (an empty variable counts as unset):
 *   ES_GATEWAY_<NAME>_TRANSPORT  redis (default: XADD to Redis stream
 *                                "gateway:<name>", MAXLEN ~ 100000, fields
 *                                id, body) | file:<path> (one JSON line
 *                                {"gateway","id","body"} per message,
 *                                appended) | null (accepts and drops)
 *   ES_GATEWAY_<NAME>_LATENCY_MS        added delay per call, 0..60000
 *                                       (default 0)
 *   ES_GATEWAY_<NAME>_FAILURE_RATE      0..1, share of calls that fail on
 *                                       purpose (default 0)
 *   ES_GATEWAY_<NAME>_BREAKER_FAILURES  consecutive failures that open the
 *                                       breaker, 1..1000000 (default 5)
 *   ES_GATEWAY_<NAME>_BREAKER_OPEN_MS   how long it stays open before a
 *                                       half-open probe, 0..86400000
 *                                       (default 5000)
 * A bad name or value is ES_EINVALID with err->field naming the variable
 * ("name" for the name).  The Redis connection (ES_REDIS_* as es_rm_connect)
 * and the file are opened lazily on first send and again after an error,
 * so creating a gateway never needs Redis.  *out is NULL on failure; on
 * success the caller owns *out and frees it with sg_gateway_destroy.
 */
es_status sg_gateway_create(sg_gateway **out, const char *name, es_error *err);

/* Frees g, its connections and its file; g may be NULL.  No send may be
 * in flight. */
void sg_gateway_destroy(sg_gateway *g);

/*
 * Delivers one message: msg_id (1..200 bytes of printable UTF-8, the
 * caller's idempotency id, so a receiver can drop a repeat: delivery is at
 * least once) and body, a JSON text (kept byte for byte in Redis; written
 * without white space outside strings to the file, to keep it one line).
 * Returns
 *   ES_OK            delivered
 *   ES_EINVALID      msg_id or body is malformed (code "invalid_msg_id" or
 *                    "invalid_body"); nothing was tried and the breaker
 *                    does not count it
 *   ES_EUNAVAILABLE  not delivered: code "gateway_failed" (transport error
 *                    or injected failure; the message may still have
 *                    arrived) or "circuit_open" (refused without trying
 *                    while the breaker is open, or while a half-open probe
 *                    is in flight)
 * Thread-safe: several worker threads may call it at once; the latency
 * sleep and the transport's I/O run without the breaker's lock.
 */
es_status sg_gateway_send(sg_gateway *g, const char *msg_id, const char *body, es_error *err);

/* The breaker's state now.  An open breaker whose cool-down is over still
 * reads "open" until the next send makes it the half-open probe. */
sg_breaker_state sg_gateway_breaker(sg_gateway *g);

/* "closed" | "open" | "half_open"; static, never NULL. */
const char *sg_breaker_name(sg_breaker_state s);

/* The name g was created with; borrowed, lives as long as g. */
const char *sg_gateway_name(const sg_gateway *g);

/* The latency added to each call now (ES_GATEWAY_<NAME>_LATENCY_MS): the
 * saga engine's claim must cover it. */
unsigned sg_gateway_latency_ms(sg_gateway *g);

/* Changes the injected failure rate (clamped to 0..1) or the latency of a
 * live gateway: for tests and demos that switch a receiver off and on. */
void sg_gateway_set_failure_rate(sg_gateway *g, double rate);
void sg_gateway_set_latency_ms(sg_gateway *g, unsigned ms);

/*
 * The receiving side's contract, as a reference receiver of the redis
 * transport (tests, demos, and the model for a real receiver).  Delivery
 * is at least once: a saga step whose outcome was not recorded (its
 * manager died, or stalled past its claim and another took the saga
 * over while its call was in flight) is sent again with the same message
 * id "<saga_id>/<step>", so the receiver must drop a message id it has
 * already handled.  This one reads the messages of stream
 * "gateway:<name>" after stream id after (size bytes, "0" from the
 * start; advanced to the last one read), at most max, and calls handle
 * once per message id: it first marks the id handled with
 * SET gateway:<name>:seen:<msg_id> NX (kept seen_ttl_s seconds, which must
 * outlast any redelivery: a saga's retries), and a repeat, found marked,
 * is counted in *dropped and not handled.  A receiver whose effect lives
 * in a database records the id in the same transaction as the effect
 * instead (a crash between the mark and the effect here loses the
 * message).  *handled counts the calls of handle.  ES_EUNAVAILABLE when
 * Redis cannot be reached.
 */
typedef void (*sg_gateway_handler)(void *ctx, const char *msg_id, const char *body);
es_status sg_gateway_receive(const char *name, char *after, size_t size, int max,
                             long seen_ttl_s, sg_gateway_handler handle, void *ctx,
                             int *handled, int *dropped, es_error *err);

/*
 * Appends Prometheus text lines for gateways gs[0..n) to out, with label
 * gateway="<name>":
 *   es_saga_gateway_calls_total{gateway,result="ok|failed|rejected"}
 *   es_saga_gateway_breaker_state{gateway}  (0 closed, 1 open, 2 half-open)
 *   es_saga_gateway_breaker_opened_total{gateway}
 * Every gateway's samples go under one # HELP / # TYPE line per metric, as
 * the format requires.
 */
void sg_gateway_metrics_all(sg_gateway *const *gs, size_t n, es_buf *out);

#endif
