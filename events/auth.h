/*
 * es_auth: access control of the HTTP APIs.  Each process keeps the token
 * table (token.h) in memory: a snapshot that a background thread reloads
 * every ES_AUTH_REFRESH_MS from PostgreSQL, and at once when a message
 * arrives on ES_AUTH_REVOKE_SUBJECT (esctl token revoke publishes one).
 * A check is then a SHA-256, a hash lookup and a constant-time compare,
 * so it may run on an event-loop thread, and an unknown token never costs
 * a query.
 *
 * Scopes and the protected categories are declared here once, for the
 * routers of every service, the raw append path and the docs.
 */
#ifndef ES_AUTH_H
#define ES_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "http.h"
#include "status.h"
#include "token.h"

#define ES_AUTH_REFRESH_MS 500
#define ES_AUTH_REVOKE_SUBJECT "es.auth.revoked"

/*
 * The categories (stream id up to the first '-') that the command
 * contexts and the saga manager write, and "token": no token, admin
 * included, may append to them through the raw append API.
 */
extern const char *const es_protected_categories[];

/* True when the category of stream (its id up to the first '-') is protected. */
bool es_stream_protected(const char *stream);

/*
 * True when scope is one this project knows: admin, metrics,
 * read:streams, read:query, command:<context>|*, append:<category>|*.
 */
bool es_scope_valid(const char *scope);

/*
 * True when a token holding scope have may do what needs scope need.
 * admin grants everything, command:* every command:<x>, append:* every
 * append:<x>, except that nothing grants append:<protected category>.
 */
bool es_scope_grants(const char *have, const char *need);

/*
 * Parses an Authorization header value "Bearer <token>" (scheme in any
 * case, one or more spaces, token68 characters, nothing after but
 * spaces).  On success *token points into value and *len is its length;
 * otherwise they are NULL and 0.
 */
bool es_auth_parse_header(const char *value, const char **token, size_t *len);

typedef struct es_auth es_auth;

/*
 * Starts access control for a process: reads ES_AUTH ("off" disables
 * every check; anything else or unset: on), loads the token table from
 * the database at conninfo once (a failure is not fatal: the thread
 * retries, and until then checks answer ES_AUTH_UNAVAILABLE), and starts the
 * refresh thread; with nats_url (may be NULL) it also listens on
 * ES_AUTH_REVOKE_SUBJECT.  *out NULL on failure (ES_ENOMEM,
 * ES_EINTERNAL).  es_auth_stop (NULL is fine) stops and frees it.
 */
es_status es_auth_start(es_auth **out, const char *conninfo, const char *nats_url,
                        es_error *err);
void es_auth_stop(es_auth *a);

/* False when ES_AUTH=off (or a is NULL). */
bool es_auth_enabled(const es_auth *a);

/* Asks the refresh thread to reload now (thread-safe, does not wait). */
void es_auth_refresh(es_auth *a);

typedef enum es_auth_result {
    ES_AUTH_OK,                 /* the token is valid and holds the scope */
    ES_AUTH_UNAUTHENTICATED,    /* missing, malformed, unknown, expired, revoked */
    ES_AUTH_FORBIDDEN,          /* valid, without the scope */
    ES_AUTH_RATE_LIMITED,       /* valid, past its rate in this process */
    ES_AUTH_UNAVAILABLE         /* the token table was never loaded (PostgreSQL
                                   down since the start): nothing can be checked */
} es_auth_result;

/*
 * Checks the Authorization header value (may be NULL) against scope.
 * Except for ES_AUTH_UNAUTHENTICATED, principal gets the token's name.
 * Never blocks on I/O.  With access control off: ES_AUTH_OK and "".
 */
es_auth_result es_auth_check(es_auth *a, const char *authorization, const char *scope,
                             char principal[ES_TOKEN_NAME_MAX + 1]);

/*
 * The HTTP face of es_auth_check, for the routers' guards: scope NULL
 * means a public route (true at once).  Otherwise true with
 * req->principal set, or false with res set to 401 unauthenticated
 * (WWW-Authenticate: Bearer), 403 forbidden, 429 rate_limited
 * (Retry-After: 1) or, before the token table could ever be read, 503
 * auth_unavailable (Retry-After: 1).
 */
bool es_auth_http(es_auth *a, es_http_req *req, const char *scope, es_http_res *res);

/* Tokens in the snapshot and checks refused so far, for /metrics
 * (Prometheus text with # HELP and # TYPE, names prefix_auth_*). */
void es_auth_metrics(es_auth *a, const char *prefix, es_buf *out);

#endif
