/*
 * The documents es-query serves: for each endpoint, which read model keys
 * it reads (a read_view_def, see read.h) and how their replies become the
 * JSON of shared/API.md.  The key layout is the one written by
 * projector/projections.c.
 */
#ifndef QUERY_VIEWS_H
#define QUERY_VIEWS_H

#include "http.h"
#include "read.h"

#define VIEW_ID_MAX 200         /* bytes of an id, as projections.c caps them */
#define VIEW_LIMIT_DEFAULT 20
#define VIEW_LIMIT_MAX 100

/* A request's parameters, checked by the caller. */
typedef struct view_args {
    const char *id;                     /* the path's id */
    char email_key[VIEW_ID_MAX + 1];    /* lower-cased e-mail */
    char zset[2 * VIEW_ID_MAX + 32];    /* a page's sorted set, relative key */
    char max[32];                       /* its upper bound: "+inf" or "(<cursor>" */
    long limit;
} view_args;

typedef struct view {
    read_view_def read;
    /* Sets res from r: 200 and the document, or 404 with the view's code. */
    void (*answer)(const view_args *a, const read_result *r, es_http_res *res);
} view;

extern const view view_user, view_user_by_email, view_order, view_customer_orders,
    view_account, view_stock, view_saga, view_sagas, view_dashboard;

#endif
