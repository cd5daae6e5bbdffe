/*
 * /metrics of es-query: the consistency waits, and per
 * projection its checkpoint, whether it stopped, and how far it lags
 * behind the JetStream stream it is built from (which needs NATS; without
 * it the lag lines are left out).
 */
#ifndef QUERY_METRICS_H
#define QUERY_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "status.h"

typedef struct metrics metrics;
struct query_app;

/* Keeps where the feed stream is (nats_url, stream); connects to NATS on
 * the first metrics_write, once. */
es_status metrics_create(metrics **out, const char *nats_url, const char *stream, es_error *err);
/* Closes the NATS connection if there is one; true when one was made (the
 * caller then ends the NATS library with nats_CloseAndWait). */
bool metrics_destroy(metrics *m);

/* Appends es-query's own metrics to out (es_daemon_http puts the HTTP
 * request metrics before them). */
void metrics_write(metrics *m, struct query_app *a, es_buf *out);

/* The sequence of the first stream message published after before_ns
 * (ns since the epoch; one past the last when none was): every item of
 * a list scored by stream sequence below it came before that time.  A
 * binary search of single-message reads on the connection of the lag
 * figures.  ES_EUNAVAILABLE when NATS or the stream does not answer. */
es_status metrics_seq_after(metrics *m, int64_t before_ns, uint64_t *seq, es_error *err);

#endif
