/*
 * Configuration from the environment (see env.h).
 */
#include "env.h"

#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

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

const char *
es_nats_url(void)
{
    return es_env_str("ES_NATS_URL", ES_NATS_URL_DEFAULT);
}

/* Appends one URL of len bytes to out (at *used), its password as ***. */
static void
redact_one(const char *url, size_t len, char *out, size_t size, size_t *used)
{
    const char *scheme = memmem(url, len, "://", 3);
    const char *auth = scheme ? scheme + 3 : url, *end = url + len;
    const char *at = memchr(auth, '@', (size_t)(end - auth));
    const char *slash = memchr(auth, '/', (size_t)(end - auth)), *colon = NULL;
    int n;

    if (at != NULL && (slash == NULL || slash > at))
        colon = memchr(auth, ':', (size_t)(at - auth));
    if (colon == NULL)
        n = snprintf(out + *used, size - *used, "%.*s", (int)len, url);
    else
        n = snprintf(out + *used, size - *used, "%.*s***%.*s", (int)(colon + 1 - url), url,
                     (int)(end - at), at);
    if (n > 0)
        *used += (size_t)n < size - *used ? (size_t)n : size - *used - 1;
}

char *
es_url_redact(const char *url, char *out, size_t size)
{
    size_t used = 0;

    if (size == 0)
        return out;
    out[0] = '\0';
    /* a server list (a NATS cluster): each URL is redacted */
    for (;;) {
        size_t len = strcspn(url, ",");

        redact_one(url, len, out, size, &used);
        if (url[len] == '\0' || used + 1 >= size)
            break;
        out[used++] = ',';
        out[used] = '\0';
        url += len + 1;
    }
    return out;
}

/* The password of user in the credentials file f (into pw), or false. */
static bool
credential(FILE *f, const char *user, char *pw, size_t size)
{
    char line[256];
    size_t n = strlen(user);
    bool found = false;

    rewind(f);
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, user, n) == 0 && line[n] == '=') {
            snprintf(pw, size, "%s", line + n + 1);
            pw[strcspn(pw, "\r\n")] = '\0';
            found = pw[0] != '\0';
        }
    }
    return found;
}

bool
es_env_credentials(const char *user)
{
    const char *path = getenv("ES_CREDENTIALS"), *run = getenv("ES_RUN_DIR");
    char file[512], pw[128], value[512];
    bool admin = strcmp(user, "es_admin") == 0;
    FILE *f;

    if (getenv("ES_PG_CONNINFO") != NULL)
        return false;
    if (path == NULL || path[0] == '\0') {
        snprintf(file, sizeof file, "%s/credentials", run && run[0] ? run : ".run");
        path = file;
    }
    if ((f = fopen(path, "r")) == NULL)
        return false;
    if (!credential(f, user, pw, sizeof pw)) {
        fclose(f);
        return false;
    }
    fclose(f);
    snprintf(value, sizeof value, "host=127.0.0.1 port=%s user=%s password=%s dbname=es",
             es_env_str("ES_PG_PORT", "15432"), admin ? "postgres" : user, pw);
    setenv("ES_PG_CONNINFO", value, 1);
    snprintf(value, sizeof value, "nats://%s:%s@127.0.0.1:%s", user, pw,
             es_env_str("ES_NATS_PORT", "14222"));
    setenv("ES_NATS_URL", value, 0);
    setenv("ES_REDIS_USER", user, 0);
    setenv("ES_REDIS_PASSWORD", pw, 0);
    memset(pw, 0, sizeof pw);
    return true;
}
