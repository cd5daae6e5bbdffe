/*
 * /metrics of es-query: the consistency waits, and per
 * projection its checkpoint, whether it stopped, and how far it lags
 * behind the JetStream stream it is built from (which needs NATS; without
 * it the lag lines are left out).
 */
#ifndef QUERY_METRICS_H
#define QUERY_METRICS_H

#include <stdbool.h>

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

#endif
