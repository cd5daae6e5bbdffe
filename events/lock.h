/*
 * es_lock: a PostgreSQL session advisory lock held on a connection of its
 * own, for a process that must be the only active one of its kind (the
 * relay).  The lock lives as long as that connection: when the connection
 * is lost, so is the lock, and the holder must stop acting as the owner
 * before it tries to take it again.
 *
 * Not thread-safe: one thread takes, checks and releases.
 */
#ifndef ES_LOCK_H
#define ES_LOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

typedef struct es_lock es_lock;

/*
 * Makes a lock on key for the database at conninfo (libpq syntax),
 * connecting on first use.  On failure *out is NULL (ES_ENOMEM).  The
 * caller frees it with es_lock_destroy.
 */
es_status es_lock_create(es_lock **out, const char *conninfo, int64_t key, es_error *err);

/*
 * Makes the lock a lease of ms milliseconds (0: none, the default): the
 * lock's session is ended by PostgreSQL (idle_session_timeout) once it
 * has been idle that long, which releases the lock.  The holder keeps it
 * by calling es_lock_check more often than that; a holder that stalls
 * past it finds es_lock_check failing when it resumes.  Takes effect on
 * the next connection es_lock_try opens.
 */
void es_lock_set_lease(es_lock *l, long ms);

/*
 * Tries to take the lock without waiting, connecting first if the
 * connection is not up.  ES_OK with *held true when this session holds it
 * now (each success is one more hold, released by one es_lock_release),
 * false when another session does; ES_EUNAVAILABLE when PostgreSQL does
 * not answer (*held false).
 */
es_status es_lock_try(es_lock *l, bool *held, es_error *err);

/*
 * ES_OK while the lock's connection answers, which is while the lock is
 * held if es_lock_try took it; ES_EUNAVAILABLE once it does not (the lock
 * is gone with it).  Never reconnects.
 */
es_status es_lock_check(es_lock *l, es_error *err);

/* Releases one hold of the lock, if the connection is up; nothing else. */
void es_lock_release(es_lock *l);

/* Closes the connection and frees l (may be NULL).  The server releases
 * every hold when it sees the connection end, a moment later. */
void es_lock_destroy(es_lock *l);

#endif
