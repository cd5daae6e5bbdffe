/*
 * The projections: what each event does to each read model, as Redis
 * commands added to a batch (readmodel.h).  Handlers only write; they never
 * read Redis, so the same code serves the live feed and a rebuild.
 *
 * Key kinds inside a version's prefix are prefix-free ("order:" and
 * "orderhist:" cannot produce the same key) and put the one free-form id
 * last; a second id (a saga step, a saga type or state) is checked to be
 * a plain identifier without ':'.  So two different ids never share a key.
 */
#ifndef PJ_PROJECTIONS_H
#define PJ_PROJECTIONS_H

#include <jansson.h>
#include <stdint.h>

#include "event.h"
#include "feed.h"
#include "readmodel.h"
#include "status.h"

typedef struct pj_projection {
    const char *name;
    const char *what;           /* one line for humans */
    /* Adds e's commands to b (the event is already started).  Events of
     * other types or categories add nothing.  ES_EINVALID: an event this
     * projection should handle but cannot (err names the field). */
    es_status (*apply)(es_rm_batch *b, const es_feed_event *e, es_error *err);
} pj_projection;

extern const pj_projection pj_projections[];
extern const size_t pj_projection_count;

const pj_projection *pj_find(const char *name);

/* Starts event e in b and adds p's commands; on failure b is left as it
 * was before the call. */
es_status pj_add(es_rm_batch *b, const pj_projection *p, const es_feed_event *e, es_error *err);

/* ASCII lower case of an e-mail address, as used in the email: keys. */
void pj_email_key(const char *email, char *out, size_t size);

#endif
