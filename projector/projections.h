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

/*
 * The read models' own keys inside a version's prefix (the versions'
 * layout is events/readmodel.h's), as printf formats.  The handlers here
 * write them; es-query's views and esctl verify read them: this is the one
 * place they are spelled.
 */
#define PJ_KEY_USER                "user:%s"       /* hash: the user document, profile as JSON */
#define PJ_KEY_EMAIL               "email:%s"      /* the lower-case e-mail address -> user id */
#define PJ_KEY_ORDER               "order:%s"      /* hash: the order document */
#define PJ_KEY_ORDER_HISTORY       "orderhist:%s"  /* list of the order's history entries */
#define PJ_KEY_CUSTOMER_ORDERS     "custorders:%s" /* zset: order ids by feed sequence */
/* hash: customer_id, balance, updated_at */
#define PJ_KEY_ACCOUNT_PREFIX      "account:"
#define PJ_KEY_ACCOUNT             PJ_KEY_ACCOUNT_PREFIX "%s"
/* hash: sku, on_hand, reserved, updated_at */
#define PJ_KEY_STOCK_PREFIX        "stock:"
#define PJ_KEY_STOCK               PJ_KEY_STOCK_PREFIX "%s"
#define PJ_KEY_SAGA                "saga:%s"       /* hash: the saga document */
#define PJ_KEY_SAGA_STEPS          "sagasteps:%s"  /* list of step names */
#define PJ_KEY_SAGA_COMPS          "sagacomps:%s"  /* list of compensated step names */
#define PJ_KEY_SAGA_STEP           "sagastep:%s:%s" /* hash: one step (saga, step) */
#define PJ_KEY_SAGA_COMP           "sagacomp:%s:%s" /* hash: one compensation (saga id, step) */
#define PJ_KEY_SAGAS_ALL           "sagaall:"      /* zset of every saga id */
#define PJ_KEY_SAGAS_BY_TYPE       "sagatype:%s"   /* zset of saga ids by type */
#define PJ_KEY_SAGAS_BY_STATE      "sagastate:%s"  /* zset of saga ids by state */
#define PJ_KEY_SAGAS_BY_TYPE_STATE "sagatypestate:%s:%s" /* zset of saga ids by type and state */
#define PJ_KEY_COUNTERS            "counters:"     /* hash of the dashboard's totals */

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
