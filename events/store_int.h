/*
 * Internal to the core library: the store's insides, for the modules that
 * keep their own tables next to the events (snapshot.c, idem.c).  Not
 * installed with the public headers; daemons never include it.
 */
#ifndef ES_STORE_INT_H
#define ES_STORE_INT_H

#include <libpq-fe.h>

#include "store.h"

/* Connects if needed and answers the live connection, or NULL with err set. */
PGconn *es__store_conn(es_store *s, es_error *err);

/* Maps a failed result to a status recorded in err (what: "read a snapshot"). */
es_status es__store_failure(es_store *s, const PGresult *r, const char *what, es_error *err);

#endif
