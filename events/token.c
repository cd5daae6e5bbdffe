/*
 * es_token (see token.h): the rows of es_tokens and the events of the
 * token-<name> streams, each pair written in one transaction through the
 * store's own append function, so the row and the event cannot disagree.
 */
#include "token.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "buf.h"
#include "store_int.h"
#include "uuid.h"

bool
es_token_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;

    if (n == 0 || n > ES_TOKEN_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

/*
 * Every request with a token hashes it.  EVP_Digest with EVP_sha256()
 * looks the algorithm up in OpenSSL 3's provider store (under its lock)
 * and allocates a context each time, several times the cost of hashing a
 * token; so the algorithm is fetched once and each thread keeps its
 * context (freed when the thread ends).
 */
static EVP_MD *sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static pthread_key_t ctx_key;

static void
ctx_free(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void
sha256_fetch(void)
{
    if (pthread_key_create(&ctx_key, ctx_free) == 0)
        sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* This thread's digest context, or NULL (then EVP_Digest's own way). */
static EVP_MD_CTX *
thread_ctx(void)
{
    EVP_MD_CTX *ctx;

    pthread_once(&sha256_once, sha256_fetch);
    if (sha256 == NULL)
        return NULL;
    if ((ctx = pthread_getspecific(ctx_key)) != NULL)
        return ctx;
    if ((ctx = EVP_MD_CTX_new()) != NULL && pthread_setspecific(ctx_key, ctx) != 0) {
        EVP_MD_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

void
es_token_digest(const char *secret, size_t len, unsigned char out[ES_TOKEN_DIGEST_LEN])
{
    EVP_MD_CTX *ctx = thread_ctx();
    unsigned int n = 0;
    int ok;

    if (ctx != NULL)
        ok = EVP_DigestInit_ex2(ctx, sha256, NULL) == 1 &&
             EVP_DigestUpdate(ctx, secret, len) == 1 && EVP_DigestFinal_ex(ctx, out, &n) == 1;
    else
        ok = EVP_Digest(secret, len, out, &n, EVP_sha256(), NULL) == 1;
    if (!ok || n != ES_TOKEN_DIGEST_LEN)
        memset(out, 0, ES_TOKEN_DIGEST_LEN);   /* never matches: no row has it */
}

/* Whether s has the form of a minted secret: "es_" and 64 hex digits. */
static bool
secret_form(const char *s)
{
    if (strlen(s) != ES_TOKEN_SECRET_SIZE - 1 || strncmp(s, "es_", 3) != 0)
        return false;
    for (const char *p = s + 3; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

static void
hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Runs sql in the open transaction; false (err set, the transaction
 * rolled back) on failure. */
static bool
exec_ok(es_store *s, PGconn *c, PGresult *r, ExecStatusType want, const char *what,
        es_error *err)
{
    if (PQresultStatus(r) == want)
        return true;
    es__store_failure(s, r, what, err);
    PQclear(PQexec(c, "ROLLBACK"));
    return false;
}

/*
 * Appends one event of type with data (borrowed) to token-<name> inside
 * the caller's transaction (through es_append, as any writer).  false
 * with err set (and the transaction rolled back) on failure.
 */
static bool
append_event(es_store *s, PGconn *c, const char *name, const char *type, json_t *data,
             const char *principal, es_error *err)
{
    char stream[ES_TOKEN_NAME_MAX + 8], id[ES_UUID_LEN + 1];
    json_t *evs;
    char *text;
    const char *values[2];
    PGresult *r;
    bool ok;

    snprintf(stream, sizeof stream, "token-%s", name);
    if (!es_uuid_v7(id)) {
        es_error_set(err, ES_EINTERNAL, NULL, NULL, "no random source");
        PQclear(PQexec(c, "ROLLBACK"));
        return false;
    }
    evs = json_pack("[{s:s, s:s, s:i, s:O, s:{s:s}}]", "event_id", id, "type", type,
                    "schema_version", 1, "data", data, "metadata", "principal",
                    principal && principal[0] ? principal : "esctl");
    text = evs ? json_dumps(evs, JSON_COMPACT) : NULL;
    json_decref(evs);
    if (text == NULL) {
        es_error_set(err, ES_ENOMEM, NULL, NULL, "could not encode the token event");
        PQclear(PQexec(c, "ROLLBACK"));
        return false;
    }
    values[0] = stream;
    values[1] = text;
    /* -2: any version; TokenCreated opens the stream, TokenRevoked ends it */
    r = PQexecParams(c, "SELECT status FROM es_append($1, -2, $2::jsonb)", 2, NULL, values, NULL,
                     NULL, 0);
    free(text);
    ok = exec_ok(s, c, r, PGRES_TUPLES_OK, "append a token event", err);
    if (ok && strcmp(PQgetvalue(r, 0, 0), "0") != 0) {
        es_error_set(err, ES_EINTERNAL, NULL, NULL,
                     "could not append to stream \"%s\": status %s", stream, PQgetvalue(r, 0, 0));
        PQclear(PQexec(c, "ROLLBACK"));
        ok = false;
    }
    PQclear(r);
    return ok;
}

es_status
es_token_create(es_store *s, const es_token_spec *spec, char secret[ES_TOKEN_SECRET_SIZE],
                int64_t *expires_at, es_error *err)
{
    unsigned char raw[32], digest[ES_TOKEN_DIGEST_LEN];
    char digest_hex[2 * ES_TOKEN_DIGEST_LEN + 3], rate[16], expires[24];
    const char *values[5];
    json_t *scopes = NULL, *data = NULL;
    es_buf arr = ES_BUF_INIT;
    PGconn *c;
    PGresult *r;
    es_status st = ES_OK;

    secret[0] = '\0';
    *expires_at = 0;
    es_error_clear(err);
    if (!es_token_name_valid(spec->name))
        return es_error_set(err, ES_EINVALID, "token_name_invalid", "name",
                            "a token name is 1 to %d of A-Z a-z 0-9 _ . : -", ES_TOKEN_NAME_MAX);
    if (spec->nscopes == 0 || spec->nscopes > ES_TOKEN_SCOPES_MAX)
        return es_error_set(err, ES_EINVALID, "scope_invalid", "scopes",
                            "a token needs 1 to %d scopes", ES_TOKEN_SCOPES_MAX);
    for (size_t i = 0; i < spec->nscopes; i++)
        if (!es_scope_valid(spec->scopes[i]))
            return es_error_set(err, ES_EINVALID, "scope_invalid", "scopes",
                                "unknown scope \"%.120s\"", spec->scopes[i]);
    if (spec->ttl_seconds < 0 || spec->ttl_seconds > 100LL * 365 * 86400)
        return es_error_set(err, ES_EINVALID, "ttl_invalid", "ttl",
                            "ttl must be from 0 (never expires) to 100 years in seconds");
    if (spec->rate < 0 || spec->rate > 1000000)
        return es_error_set(err, ES_EINVALID, "rate_invalid", "rate",
                            "rate must be from 0 (no limit) to 1000000 requests per second");
    if (spec->secret != NULL) {
        if (!secret_form(spec->secret))
            return es_error_set(err, ES_EINVALID, "secret_invalid", "secret",
                                "a given secret must be \"es_\" and 64 hex digits");
        snprintf(secret, ES_TOKEN_SECRET_SIZE, "%s", spec->secret);
    } else {
        if (RAND_bytes(raw, sizeof raw) != 1)
            return es_error_set(err, ES_EINTERNAL, NULL, NULL, "no random source");
        memcpy(secret, "es_", 3);
        hex(raw, sizeof raw, secret + 3);
        memset(raw, 0, sizeof raw);
    }
    es_token_digest(secret, strlen(secret), digest);
    memcpy(digest_hex, "\\x", 2);
    hex(digest, sizeof digest, digest_hex + 2);
    if (spec->ttl_seconds > 0)
        *expires_at = (int64_t)time(NULL) + spec->ttl_seconds;
    snprintf(expires, sizeof expires, "%lld", (long long)*expires_at);
    snprintf(rate, sizeof rate, "%d", spec->rate);

    /* the scopes as a JSON array, bound as a value: the array itself is
     * made by the server, so no scope text can become two scopes */
    scopes = json_array();
    for (size_t i = 0; i < spec->nscopes; i++)
        json_array_append_new(scopes, json_string(spec->scopes[i]));
    {
        char *text = json_dumps(scopes, JSON_COMPACT);
        es_buf_puts(&arr, text ? text : "");
        if (text == NULL)
            arr.failed = true;
        free(text);
    }
    data = json_pack("{s:s, s:O, s:o, s:i}", "name", spec->name, "scopes", scopes, "expires_at",
                     *expires_at ? json_integer(*expires_at) : json_null(), "rate", spec->rate);
    if (es_buf_failed(&arr) || data == NULL) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        goto done;
    }
    if ((c = es__store_conn(s, err)) == NULL) {
        st = err->status;
        goto done;
    }
    r = PQexec(c, "BEGIN");
    if (!exec_ok(s, c, r, PGRES_COMMAND_OK, "begin a token transaction", err)) {
        PQclear(r);
        st = err->status;
        goto done;
    }
    PQclear(r);
    values[0] = spec->name;
    values[1] = digest_hex;
    values[2] = arr.data;
    values[3] = rate;
    values[4] = expires;
    r = PQexecParams(c,
                     "INSERT INTO es_tokens (name, secret_hash, scopes, rate, expires_at) "
                     "VALUES ($1, $2::bytea, ARRAY(SELECT jsonb_array_elements_text($3::jsonb)), $4::int, "
                     "CASE WHEN $5::bigint = 0 THEN NULL ELSE to_timestamp($5::bigint) END) "
                     "ON CONFLICT DO NOTHING",
                     5, NULL, values, NULL, NULL, 0);
    if (!exec_ok(s, c, r, PGRES_COMMAND_OK, "insert a token", err)) {
        PQclear(r);
        st = err->status;
        goto done;
    }
    if (strcmp(PQcmdTuples(r), "1") != 0) {
        PQclear(r);
        PQclear(PQexec(c, "ROLLBACK"));
        st = es_error_set(err, ES_ECONFLICT, "token_exists", "name",
                          "a token named \"%s\" exists or existed", spec->name);
        goto done;
    }
    PQclear(r);
    if (!append_event(s, c, spec->name, "TokenCreated", data, spec->principal, err)) {
        st = err->status;
        goto done;
    }
    r = PQexec(c, "COMMIT");
    if (!exec_ok(s, c, r, PGRES_COMMAND_OK, "commit a token", err))
        st = err->status;
    PQclear(r);
done:
    if (st != ES_OK)
        memset(secret, 0, ES_TOKEN_SECRET_SIZE);
    json_decref(scopes);
    json_decref(data);
    es_buf_free(&arr);
    return st;
}

es_status
es_token_revoke(es_store *s, const char *name, const char *principal, es_error *err)
{
    PGconn *c;
    PGresult *r;
    json_t *data;
    es_status st = ES_OK;

    es_error_clear(err);
    if (!es_token_name_valid(name))
        return es_error_set(err, ES_ENOTFOUND, "token_not_found", "name",
                            "no live token named \"%.64s\"", name ? name : "");
    if ((c = es__store_conn(s, err)) == NULL)
        return err->status;
    r = PQexec(c, "BEGIN");
    if (!exec_ok(s, c, r, PGRES_COMMAND_OK, "begin a token transaction", err)) {
        PQclear(r);
        return err->status;
    }
    PQclear(r);
    r = PQexecParams(c, "UPDATE es_tokens SET revoked_at = now() "
                        "WHERE name = $1 AND revoked_at IS NULL",
                     1, NULL, &name, NULL, NULL, 0);
    if (!exec_ok(s, c, r, PGRES_COMMAND_OK, "revoke a token", err)) {
        PQclear(r);
        return err->status;
    }
    if (strcmp(PQcmdTuples(r), "1") != 0) {
        PQclear(r);
        PQclear(PQexec(c, "ROLLBACK"));
        return es_error_set(err, ES_ENOTFOUND, "token_not_found", "name",
                            "no live token named \"%s\"", name);
    }
    PQclear(r);
    data = json_pack("{s:s}", "name", name);
    if (!append_event(s, c, name, "TokenRevoked", data, principal, err)) {
        json_decref(data);
        return err->status;
    }
    json_decref(data);
    r = PQexec(c, "COMMIT");
    if (!exec_ok(s, c, r, PGRES_COMMAND_OK, "commit a token revocation", err))
        st = err->status;
    PQclear(r);
    return st;
}

/* A nullable text column as a JSON string or null (new reference). */
static json_t *
text_or_null(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null() : json_string(PQgetvalue(r, row, col));
}

es_status
es_token_list(es_store *s, json_t **out, es_error *err)
{
    PGconn *c;
    PGresult *r;
    json_t *list;
    es_status st = ES_OK;

    *out = NULL;
    es_error_clear(err);
    if ((c = es__store_conn(s, err)) == NULL)
        return err->status;
    r = PQexec(c, "SELECT name, array_to_json(scopes)::text, rate, "
                  "to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                  "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                  "to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
                  "FROM es_tokens ORDER BY name");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = es__store_failure(s, r, "list the tokens", err);
        PQclear(r);
        return st;
    }
    list = json_array();
    for (int i = 0; list != NULL && i < PQntuples(r); i++) {
        json_t *scopes = json_loads(PQgetvalue(r, i, 1), 0, NULL);

        if (json_array_append_new(
                list, json_pack("{s:s, s:o, s:i, s:o, s:o, s:o}", "name", PQgetvalue(r, i, 0),
                                "scopes", scopes ? scopes : json_array(), "rate",
                                atoi(PQgetvalue(r, i, 2)), "expires_at", text_or_null(r, i, 3),
                                "created_at", text_or_null(r, i, 4), "revoked_at",
                                text_or_null(r, i, 5))) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    PQclear(r);
    if (list == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    *out = list;
    return ES_OK;
}
