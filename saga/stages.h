/*
 * One command's trace, stage by stage (stages.c): what `esctl trace` prints
 * and the console's trace view (#/trace/<id>) shows.
 */
#ifndef SG_STAGES_H
#define SG_STAGES_H

#include <jansson.h>

#include "store.h"

/*
 * Collects every stage of the trace that arg names: a trace id (32 hex
 * digits), an order or user id (the trace of its first event; an order id
 * also finds its saga) or a saga id.  Reads the store (the saga tables'
 * timeline too), the projector's record in Redis (es_rm_connect) and the
 * JetStream stream (es_jetstream_open), both from the environment.
 * *doc (new reference) is {"trace_id", "saga_id" (or null), "recorded",
 * "stages": [{"stage", "at", "at_us", "took_ms", "after", "slowest",
 * "detail", ...}] sorted by time, "slowest"}.  ES_ENOTFOUND
 * (trace_not_found) when nothing is known of it; *doc NULL on failure.
 */
es_status sg_stages_collect(es_store *store, const char *arg, json_t **doc, es_error *err);

#endif
