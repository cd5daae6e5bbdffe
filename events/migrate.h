/*
 * Schema migrations: numbered SQL files ("001_event_store.sql") applied in
 * name order, each in its own transaction together with its record in
 * es_migrations (name and SHA-256 of the file).  Applying again is a
 * no-op; an applied file whose content changed is refused.  A session
 * advisory lock makes concurrent migrators wait for each other.
 */
#ifndef ES_MIGRATE_H
#define ES_MIGRATE_H

#include <stdio.h>

#include "status.h"

/*
 * Applies the pending migrations of dir to the database at conninfo.
 * log, if not NULL, gets one line per migration applied.  *applied (may
 * be NULL) is set to how many were applied.  Returns ES_OK,
 * ES_EUNAVAILABLE, ES_ENOTFOUND (no such dir), ES_EINVALID (an applied
 * migration changed: code migration_changed) or ES_EINTERNAL (a file
 * failed; err names it and nothing of that file was kept).
 */
es_status es_migrate(const char *conninfo, const char *dir, FILE *log,
                     int *applied, es_error *err);

#endif
