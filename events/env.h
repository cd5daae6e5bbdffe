/*
 * Configuration from the environment, read the same way by every daemon:
 * an unset or empty variable means the default, and a malformed number
 * ends the program at start-up with a message naming the variable.
 */
#ifndef ES_ENV_H
#define ES_ENV_H

#include <stdbool.h>
#include <stddef.h>

/* The value of variable name, or def when it is unset or empty. */
const char *es_env_str(const char *name, const char *def);

/* Variable name as a decimal number from min to max, or def when unset or
 * empty.  Anything else is logged through es_log as prog's error ("<prog>:
 * error: NAME="value" is not a number from min to max") and exits with
 * status 2: configuration is read at start, so this is the one place the
 * library ends the process. */
long es_env_long(const char *prog, const char *name, long def, long min, long max);

/* The event store's PostgreSQL: ES_PG_CONNINFO, or the private server of
 * scripts/servers.sh. */
#define ES_PG_CONNINFO_DEFAULT "host=127.0.0.1 port=15432 user=postgres dbname=es"
const char *es_pg_conninfo(void);

/* The NATS server: ES_NATS_URL, or the private server of scripts/servers.sh.
 * It may carry the program's credentials (nats://user:password@host:port). */
#define ES_NATS_URL_DEFAULT "nats://127.0.0.1:14222"
const char *es_nats_url(void);

/*
 * Copies url into out (size bytes, NUL-terminated, cut if longer) with the
 * password of its user-information part replaced by "***": the form of a
 * URL that may be logged or shown ("nats://es_relay:***@127.0.0.1:4222";
 * a URL without a password is copied as it is; in a comma-separated list
 * of URLs, a NATS cluster's, each one's password).  Returns out.
 */
char *es_url_redact(const char *url, char *out, size_t size);

/*
 * For programs an operator runs by hand (esctl): when ES_PG_CONNINFO is
 * unset, reads the credentials file scripts/servers.sh writes
 * (ES_CREDENTIALS, else $ES_RUN_DIR/credentials, else .run/credentials)
 * and sets ES_PG_CONNINFO, ES_NATS_URL, ES_REDIS_USER and
 * ES_REDIS_PASSWORD (each only if unset) for identity user ("esctl"; or
 * "es_admin", the superuser postgres), on the servers' default ports or
 * ES_PG_PORT / ES_NATS_PORT.  Does nothing when ES_PG_CONNINFO is set or
 * there is no readable file.  Returns true when it set the identity.
 */
bool es_env_credentials(const char *user);

#endif
