/*
 * Upcasters turn an event's data from an old schema version into the
 * current one while it is read, so stored events are never rewritten.  A
 * chain is registered step by step: (type, from_version) -> from_version+1.
 * Reading an event of version v applies the steps v, v+1, ... while one is
 * registered.
 */
#ifndef ES_UPCAST_H
#define ES_UPCAST_H

#include <jansson.h>

#include "status.h"

typedef struct es_upcasters es_upcasters;

/*
 * One step: changes data (a JSON object, owned by the caller) in place
 * from version from to from+1.  Returns ES_OK, or an error recorded in
 * err; a failing step fails the read.
 */
typedef es_status (*es_upcast_fn)(json_t *data, void *ctx, es_error *err);

/* Creates an empty registry in *out (NULL on failure). */
es_status es_upcasters_create(es_upcasters **out);
void es_upcasters_destroy(es_upcasters *u);

/* Registers the step from version from of type; ES_EINVALID if that step
 * is registered already or from < 1. type is copied. */
es_status es_upcasters_register(es_upcasters *u, const char *type, int from,
                                es_upcast_fn fn, void *ctx);

/* True when an event of type at version needs at least one step. */
int es_upcasters_needed(const es_upcasters *u, const char *type, int version);

/*
 * Applies the registered steps to data (JSON text) of type at *version.
 * On ES_OK, *out is a new malloc'd JSON text (caller frees) and *version
 * the version reached.  *out is NULL on entry and after a failure.
 */
es_status es_upcasters_apply(const es_upcasters *u, const char *type,
                             int *version, const char *data, char **out,
                             es_error *err);

#endif
