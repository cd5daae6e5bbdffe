/*
 * Configuration from the environment, read the same way by every daemon:
 * an unset or empty variable means the default, and a malformed number
 * ends the program at start-up with a message naming the variable.
 */
#ifndef ES_ENV_H
#define ES_ENV_H

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
#define ES_PG_CONNINFO_DEFAULT "host=127.0.0.1 port=55432 user=postgres dbname=es"
const char *es_pg_conninfo(void);

#endif
