/*
 * Configuration from the environment (see env.h).
 */
#include "env.h"

#include "log.h"

#include <errno.h>
#include <stdlib.h>

const char *
es_env_str(const char *name, const char *def)
{
    const char *v = getenv(name);

    return v && v[0] ? v : def;
}

long
es_env_long(const char *prog, const char *name, long def, long min, long max)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (v == NULL || v[0] == '\0')
        return def;
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || n < min || n > max) {
        /* configuration is read at start, before there is any work to
         * fail: the one place the library ends the process */
        if (prog != NULL)
            es_log_configure(prog);
        es_log(ES_LOG_ERROR, "%s=\"%s\" is not a number from %ld to %ld", name, v, min, max);
        exit(2);
    }
    return n;
}

const char *
es_pg_conninfo(void)
{
    return es_env_str("ES_PG_CONNINFO", ES_PG_CONNINFO_DEFAULT);
}
