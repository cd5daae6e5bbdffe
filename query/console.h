/*
 * The operator console that es-query serves: its static files under
 * /console/ (built into the binary, console_assets.c, generated from
 * query/console/ by scripts/embed_console.sh) and the JSON endpoints under
 * /v1/console/ the page calls.  The read-side endpoints read the Redis read
 * models the way every query does (read.c), the event store and the saga
 * tables through the library code esctl uses (events/audit.c, saga/saga.c),
 * on a database connection of its own (ES_CONSOLE_PG_CONNINFO: esctl's
 * role, since the console is esctl's web face; es_query's own role reads
 * only the token table).  query/README.md lists the endpoints.
 */
#ifndef QUERY_CONSOLE_H
#define QUERY_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>

#include "http.h"

struct query_app;

/* One static file of the console. */
typedef struct console_asset {
    const char *name;           /* "index.html", "app.js", ... */
    const unsigned char *data;
    size_t len;
} console_asset;

/* The generated table (console_assets.c), console_asset_count entries. */
extern const console_asset console_assets[];
extern const size_t console_asset_count;

/* True when path is the console's: /console, /console/..., /v1/console/... */
bool console_route(const char *path);

/* The scope req needs (NULL: public), for routes_guard: the static files
 * are public, GETs need read:query (read:streams for the store's
 * streams, events, feed and traces), anything that acts needs admin. */
const char *console_scope(const es_http_req *req);

/* Closes the console's idle database connections; once the HTTP server
 * has stopped. */
void console_stop(void);

/* Answers a request on a console path. */
void console_handle(struct query_app *app, const es_http_req *req, es_http_res *res);

#endif
