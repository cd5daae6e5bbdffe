/*
 * Idempotency records: the first response to a request that carried an
 * Idempotency-Key, stored with a hash of the request, so that the same key
 * with the same request replays it and the same key with another request
 * is refused.  The effect itself is made idempotent by deriving the
 * command id (and so the event ids) from the key; this record only makes
 * the replayed answer byte-identical.
 */
#ifndef ES_IDEM_H
#define ES_IDEM_H

#include "store.h"

#define ES_IDEM_KEY_MAX 200

typedef struct es_idem_record {
    char request_hash[41];      /* hex SHA-1 */
    int status;
    char *body;                 /* malloc'd; es_idem_record_free */
} es_idem_record;

/* Hex SHA-1 of method, path and body: what "the same request" means. */
void es_idem_hash(const char *method, const char *path, const char *body, size_t len,
                  char out[41]);

/* Looks key up: ES_OK with *rec filled, ES_ENOTFOUND, or a store error. */
es_status es_idem_get(es_store *s, const char *key, es_idem_record *rec, es_error *err);

/*
 * Stores the first response for key.  If another request stored one
 * first, ES_ECONFLICT with *rec holding that one (to be answered instead).
 */
es_status es_idem_put(es_store *s, const char *key, const char *request_hash, int status,
                      const char *body, es_idem_record *rec, es_error *err);

void es_idem_record_free(es_idem_record *rec);

#endif
