/*
 * UUIDs for event ids.  es_uuid_derive makes the id of the index-th event
 * of a command deterministic (RFC 4122 version 5 in the project's
 * namespace), so a retried command appends the same ids and the store
 * recognises it as a duplicate.  Text form is always 36 lower-case chars.
 */
#ifndef ES_UUID_H
#define ES_UUID_H

#include <stdbool.h>
#include <stddef.h>

#define ES_UUID_LEN 36          /* text length, without the NUL */

/* Namespace of derived event ids (a fixed, random v4 UUID). */
#define ES_UUID_NAMESPACE "6f1c2a34-8b0e-4d5f-9a7c-3e2b1d0c9f8a"

/*
 * Writes to out (ES_UUID_LEN + 1 bytes) the version-5 UUID of the name
 * "<command_id>/<index>" in ES_UUID_NAMESPACE.
 */
void es_uuid_derive(const char *command_id, unsigned index, char *out);

/* Writes a random (version 4) UUID to out. Returns false if the kernel's
 * random source failed. */
bool es_uuid_random(char *out);

/*
 * Writes a time-ordered (version 7, RFC 9562) UUID to out: 48 bits of
 * Unix milliseconds, then random bits.  The store gives these to events
 * that come without an id: consecutive ids land next to each other in the
 * event_id index instead of on random pages.  Returns false if the
 * kernel's random source failed.
 */
bool es_uuid_v7(char *out);

/* Fills out with n random bytes from the same per-thread pool (trace and
 * span ids, events/trace.h).  false if the kernel's source failed. */
bool es_random_bytes(void *out, size_t n);

/* True when s is a UUID in 8-4-4-4-12 hex form (either case). */
bool es_uuid_valid(const char *s);

/* Writes to out (ES_UUID_LEN + 1 bytes) the version-5 UUID of name (len
 * bytes) in namespace ns (UUID text): the same name always gives the same
 * id, as for a user's id derived from the e-mail address. */
void es_uuid_v5(const char *ns, const void *name, size_t len, char *out);

#endif
