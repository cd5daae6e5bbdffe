/*
 * es_token: the access tokens of the HTTP APIs as the store keeps them.
 * A token is a 256-bit random secret shown once; the table es_tokens
 * keeps its SHA-256 (a fast hash is right for a high-entropy secret),
 * and every creation and revocation is also an event (TokenCreated,
 * TokenRevoked) of the stream token-<name>, written in the same
 * transaction, without the secret.  The category "token" is protected
 * (auth.h): only this module writes it.  The checks themselves, from an
 * in-memory copy of the table, are in auth.h.
 */
#ifndef ES_TOKEN_H
#define ES_TOKEN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "store.h"

#define ES_TOKEN_NAME_MAX 64        /* bytes of a name: [A-Za-z0-9_.:]... */
#define ES_TOKEN_SCOPES_MAX 32      /* scopes of one token */
#define ES_TOKEN_SCOPE_MAX 120      /* bytes of one scope */
/* "es_" and 64 hex digits, and the NUL */
#define ES_TOKEN_SECRET_SIZE 68
#define ES_TOKEN_DIGEST_LEN 32      /* SHA-256 */

/* What es_token_create makes.  All strings borrowed for the call. */
typedef struct es_token_spec {
    const char *name;               /* 1..ES_TOKEN_NAME_MAX of [A-Za-z0-9_.:-] */
    const char *const *scopes;      /* 1..ES_TOKEN_SCOPES_MAX valid scopes */
    size_t nscopes;
    int64_t ttl_seconds;            /* 0: never expires */
    int rate;                       /* requests/s per process; 0: no limit */
    const char *principal;          /* who creates it (metadata.principal) */
    /* NULL, the norm: a new random secret.  Otherwise this one, which
     * must have the form of a minted secret (the tests' harness gives
     * the same admin secret to every database it provisions). */
    const char *secret;
} es_token_spec;

/* True when name is a valid token name. */
bool es_token_name_valid(const char *name);

/* SHA-256 of len bytes of secret. */
void es_token_digest(const char *secret, size_t len, unsigned char out[ES_TOKEN_DIGEST_LEN]);

/*
 * Mints a token: writes its row and its TokenCreated event in one
 * transaction and copies the secret (to show once) into secret.
 * *expires_at: Unix seconds, 0 for never.  Errors: ES_EINVALID (a bad
 * name, scope, ttl or rate; field says which), ES_ECONFLICT with code
 * token_exists (the name was used before, revoked or not),
 * ES_EUNAVAILABLE, ES_EINTERNAL.
 */
es_status es_token_create(es_store *s, const es_token_spec *spec,
                          char secret[ES_TOKEN_SECRET_SIZE], int64_t *expires_at,
                          es_error *err);

/*
 * Revokes the token name: marks its row and appends TokenRevoked, in one
 * transaction.  ES_ENOTFOUND (code token_not_found) when there is no
 * such live token.  Processes drop it within a second (auth.h).
 */
es_status es_token_revoke(es_store *s, const char *name, const char *principal,
                          es_error *err);

/*
 * Every token as a new JSON array of {"name", "scopes", "rate",
 * "expires_at", "created_at", "revoked_at"} (times RFC 3339 or null),
 * ordered by name.  Never a secret, nor its hash.
 */
es_status es_token_list(es_store *s, json_t **out, es_error *err);

#endif
