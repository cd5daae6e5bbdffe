/*
 * es_auth (see auth.h).  The token table lives in an immutable snapshot:
 * an open-addressing hash table keyed by the first bytes of each secret's
 * SHA-256.  The refresh thread builds a new snapshot and swaps it in
 * under a write lock; a check holds the read lock only for the lookup.
 * Rate buckets outlive snapshots: they are kept by token name in a small
 * list of their own, touched only for tokens that have a rate.
 *
 *   refresh thread:  load() --> swap under wrlock --> wait 500 ms or a
 *                    revocation message (on_revoked) --> load() ...
 */
#include "auth.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <nats/nats.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "event.h"
#include "feed.h"
#include "pg.h"

const char *const es_protected_categories[] = {
    /* written by the command contexts (command/) */
    "user", "useremail", "profile", "fraud", "frauddomain", "order", "account", "stock",
    "reservation", "shipment", "notification", "email", "analytics",
    /* written by the saga manager (saga/) */
    "saga",
    /* written by esctl token (events/token.c) */
    "token",
    /* written by esctl projection park (cli/projections.c) */
    "projection",
    NULL};

static const char *const contexts[] = {"user",      "profile",  "fraud",        "order", "payment",
                                       "inventory", "shipping", "notification", NULL};

static bool
in_list(const char *const *list, const char *s, size_t n)
{
    for (; *list; list++)
        if (strlen(*list) == n && memcmp(*list, s, n) == 0)
            return true;
    return false;
}

bool
es_stream_protected(const char *stream)
{
    return in_list(es_protected_categories, stream, strcspn(stream, "-"));
}

bool
es_scope_valid(const char *scope)
{
    const char *rest;
    size_t n;

    if (scope == NULL || strlen(scope) >= ES_TOKEN_SCOPE_MAX)
        return false;
    if (strcmp(scope, "admin") == 0 || strcmp(scope, "metrics") == 0 ||
        strcmp(scope, "read:streams") == 0 || strcmp(scope, "read:query") == 0)
        return true;
    if (strncmp(scope, "command:", 8) == 0) {
        rest = scope + 8;
        return strcmp(rest, "*") == 0 || in_list(contexts, rest, strlen(rest));
    }
    if (strncmp(scope, "append:", 7) == 0) {
        rest = scope + 7;
        n = strlen(rest);
        if (strcmp(rest, "*") == 0)
            return true;
        /* a category: what a stream id holds before its first '-', kept to
         * letters, digits, '_' and '.', so that a scope is never more than
         * one name (no quote, comma, brace, '*' or space) */
        if (n == 0 || strspn(rest, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789_.") != n)
            return false;
        return true;    /* a protected category is valid, and grants nothing */
    }
    return false;
}

bool
es_scope_grants(const char *have, const char *need)
{
    size_t n;

    if (strncmp(need, "append:", 7) == 0 && in_list(es_protected_categories, need + 7,
                                                     strlen(need + 7)))
        return false;
    if (strcmp(have, "admin") == 0 || strcmp(have, need) == 0)
        return true;
    n = strlen(have);
    return n >= 2 && strcmp(have + n - 2, ":*") == 0 && strncmp(have, need, n - 1) == 0 &&
           (strncmp(have, "command:", 8) == 0 || strncmp(have, "append:", 7) == 0);
}

/* token68 of RFC 7235: ALPHA DIGIT - . _ ~ + / and trailing = */
static bool
token68(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=';
}

bool
es_auth_parse_header(const char *value, const char **token, size_t *len)
{
    const char *p, *start, *end;

    *token = NULL;
    *len = 0;
    if (value == NULL || strncasecmp(value, "Bearer", 6) != 0 || (value[6] != ' ' && value[6] != '\t'))
        return false;
    for (p = value + 6; *p == ' ' || *p == '\t'; p++)
        ;
    for (start = p; token68(*p); p++)
        if (*p == '=' && !(p[1] == '=' || !token68(p[1])))
            return false;   /* '=' only as padding at the end */
    if (p == start || p - start > 512)
        return false;
    end = p;
    for (; *p == ' ' || *p == '\t'; p++)
        ;
    if (*p != '\0')
        return false;
    *token = start;
    *len = (size_t)(end - start);
    return true;
}

/* ---- the snapshot --------------------------------------------------------- */

typedef struct entry {
    char name[ES_TOKEN_NAME_MAX + 1];
    unsigned char digest[ES_TOKEN_DIGEST_LEN];
    char scopes[ES_TOKEN_SCOPES_MAX][ES_TOKEN_SCOPE_MAX + 1];
    int nscopes;
    int64_t expires_at;         /* Unix seconds, 0: never */
    int rate;                   /* per second, 0: no limit */
} entry;

typedef struct snapshot {
    size_t count, mask;
    entry *entries;
    int *slots;                 /* mask + 1 indexes into entries, -1 empty */
} snapshot;

static void
snapshot_free(snapshot *s)
{
    if (s == NULL)
        return;
    free(s->entries);
    free(s->slots);
    free(s);
}

static size_t
slot_of(const unsigned char *digest, size_t mask)
{
    uint64_t h;

    memcpy(&h, digest, sizeof h);   /* a SHA-256 is uniform already */
    return (size_t)h & mask;
}

/* Indexes s->entries[0..count) into a new slot table; false on OOM. */
static bool
snapshot_index(snapshot *s)
{
    size_t cap = 16;

    while (cap < 2 * s->count)
        cap *= 2;
    if ((s->slots = malloc(cap * sizeof *s->slots)) == NULL)
        return false;
    for (size_t i = 0; i < cap; i++)
        s->slots[i] = -1;
    s->mask = cap - 1;
    for (size_t i = 0; i < s->count; i++) {
        size_t k = slot_of(s->entries[i].digest, s->mask);
        while (s->slots[k] >= 0)
            k = (k + 1) & s->mask;
        s->slots[k] = (int)i;
    }
    return true;
}

static const entry *
snapshot_find(const snapshot *s, const unsigned char *digest)
{
    if (s == NULL)
        return NULL;
    for (size_t k = slot_of(digest, s->mask); s->slots[k] >= 0; k = (k + 1) & s->mask) {
        const entry *e = &s->entries[s->slots[k]];
        if (CRYPTO_memcmp(e->digest, digest, ES_TOKEN_DIGEST_LEN) == 0)
            return e;
    }
    return NULL;
}

/* ---- the process's state -------------------------------------------------- */

typedef struct bucket {
    char name[ES_TOKEN_NAME_MAX + 1];
    double tokens;
    struct timespec last;
    struct bucket *next;
} bucket;

struct es_auth {
    bool enabled;
    char conninfo[1024];
    PGconn *pg;                 /* the refresh thread's */
    pthread_rwlock_t lock;      /* snap */
    snapshot *snap;
    pthread_mutex_t mu;         /* wake, stopping, buckets */
    pthread_cond_t wake_cv;
    bool wake, stopping, thread_started;
    pthread_t thread;
    bucket *buckets;
    natsConnection *nc;
    natsSubscription *sub;
    atomic_ullong loads, load_failures, refused_unauthenticated, refused_forbidden,
        refused_rate;
};

/* Reads the live tokens into a new snapshot; NULL (err set) on failure. */
static snapshot *
load(es_auth *a, es_error *err)
{
    snapshot *s = NULL;
    PGresult *r = NULL;

    if (a->pg == NULL || PQstatus(a->pg) != CONNECTION_OK) {
        PQfinish(a->pg);
        a->pg = es_pg_connect(a->conninfo, false);
        if (PQstatus(a->pg) != CONNECTION_OK) {
            es_error_set(err, ES_EUNAVAILABLE, NULL, NULL, "could not connect to PostgreSQL: %s",
                         PQerrorMessage(a->pg));
            PQfinish(a->pg);
            a->pg = NULL;
            return NULL;
        }
    }
    r = es_pg_exec(a->pg, "SELECT name, encode(secret_hash, 'hex'), array_to_json(scopes)::text, "
                          "rate, coalesce(extract(epoch FROM expires_at)::bigint, 0) "
                          "FROM es_tokens WHERE revoked_at IS NULL", 0, NULL, -1, NULL);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        es_error_set(err, ES_EUNAVAILABLE, NULL, NULL, "could not read the tokens: %s",
                     r ? PQresultErrorMessage(r) : PQerrorMessage(a->pg));
        goto fail;
    }
    if ((s = calloc(1, sizeof *s)) == NULL ||
        (s->entries = calloc((size_t)PQntuples(r) + 1, sizeof *s->entries)) == NULL) {
        es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        goto fail;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        entry *e = &s->entries[s->count];
        const char *h = PQgetvalue(r, i, 1);
        json_t *scopes = json_loads(PQgetvalue(r, i, 2), 0, NULL), *v;
        size_t k;

        if (strlen(h) != 2 * ES_TOKEN_DIGEST_LEN || !json_is_array(scopes)) {
            json_decref(scopes);
            continue;
        }
        snprintf(e->name, sizeof e->name, "%s", PQgetvalue(r, i, 0));
        for (k = 0; k < ES_TOKEN_DIGEST_LEN; k++) {
            unsigned byte;
            sscanf(h + 2 * k, "%2x", &byte);
            e->digest[k] = (unsigned char)byte;
        }
        json_array_foreach(scopes, k, v) {
            /* a scope this build does not know (written by hand, or by an
             * older esctl) grants nothing, rather than something cut short */
            if (json_is_string(v) && e->nscopes < ES_TOKEN_SCOPES_MAX &&
                es_scope_valid(json_string_value(v)))
                snprintf(e->scopes[e->nscopes++], sizeof e->scopes[0], "%s", json_string_value(v));
        }
        json_decref(scopes);
        e->rate = atoi(PQgetvalue(r, i, 3));
        e->expires_at = strtoll(PQgetvalue(r, i, 4), NULL, 10);
        s->count++;
    }
    if (!snapshot_index(s)) {
        es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        goto fail;
    }
    PQclear(r);
    return s;
fail:
    if (PQstatus(a->pg) != CONNECTION_OK) {
        PQfinish(a->pg);
        a->pg = NULL;
    }
    PQclear(r);
    snapshot_free(s);
    return NULL;
}

static bool
refresh_once(es_auth *a)
{
    es_error err;
    snapshot *s, *old;

    es_error_clear(&err);
    if ((s = load(a, &err)) == NULL) {
        atomic_fetch_add(&a->load_failures, 1);
        return false;
    }
    pthread_rwlock_wrlock(&a->lock);
    old = a->snap;
    a->snap = s;
    pthread_rwlock_unlock(&a->lock);
    snapshot_free(old);
    atomic_fetch_add(&a->loads, 1);
    return true;
}

static void *
refresher(void *arg)
{
    es_auth *a = arg;

    for (;;) {
        struct timespec deadline;

        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_nsec += (long)ES_AUTH_REFRESH_MS * 1000000L;
        deadline.tv_sec += deadline.tv_nsec / 1000000000L;
        deadline.tv_nsec %= 1000000000L;
        pthread_mutex_lock(&a->mu);
        while (!a->wake && !a->stopping &&
               pthread_cond_timedwait(&a->wake_cv, &a->mu, &deadline) == 0)
            ;
        a->wake = false;
        if (a->stopping) {
            pthread_mutex_unlock(&a->mu);
            return NULL;
        }
        pthread_mutex_unlock(&a->mu);
        refresh_once(a);
    }
}

void
es_auth_refresh(es_auth *a)
{
    if (a == NULL || !a->enabled)
        return;
    pthread_mutex_lock(&a->mu);
    a->wake = true;
    pthread_cond_signal(&a->wake_cv);
    pthread_mutex_unlock(&a->mu);
}

static void
on_revoked(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    natsMsg_Destroy(msg);
    es_auth_refresh(closure);
}

static void
listen_revocations(es_auth *a, const char *nats_url)
{
    natsOptions *opts = NULL;
    es_error err;
    /* the options every connection of the programs has (TLS included) */
    natsStatus s = es_nats_options_create(&opts, nats_url, NULL, &err) == ES_OK ? NATS_OK
                                                                              : NATS_ERR;

    if (s == NATS_OK) {
        s = natsConnection_Connect(&a->nc, opts);
        if (s == NATS_NOT_YET_CONNECTED)
            s = NATS_OK;
    }
    if (s == NATS_OK)
        s = natsConnection_Subscribe(&a->sub, a->nc, ES_AUTH_REVOKE_SUBJECT, on_revoked, a);
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        /* the poll alone keeps revocation within ES_AUTH_REFRESH_MS */
        natsSubscription_Destroy(a->sub);
        a->sub = NULL;
        if (a->nc != NULL) {
            natsConnection_Close(a->nc);
            natsConnection_Destroy(a->nc);
            a->nc = NULL;
        }
    }
}

es_status
es_auth_start(es_auth **out, const char *conninfo, const char *nats_url, es_error *err)
{
    const char *mode = getenv("ES_AUTH");
    es_auth *a;

    *out = NULL;
    if ((a = calloc(1, sizeof *a)) == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    pthread_rwlock_init(&a->lock, NULL);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->wake_cv, NULL);
    a->enabled = !(mode != NULL && strcmp(mode, "off") == 0);
    if (a->enabled) {
        snprintf(a->conninfo, sizeof a->conninfo, "%s", conninfo);
        refresh_once(a);        /* PostgreSQL down: the thread keeps trying */
        if (pthread_create(&a->thread, NULL, refresher, a) != 0) {
            es_auth_stop(a);
            return es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not start the token thread");
        }
        a->thread_started = true;
        if (nats_url != NULL && nats_url[0] != '\0')
            listen_revocations(a, nats_url);
    }
    *out = a;
    return ES_OK;
}

void
es_auth_stop(es_auth *a)
{
    if (a == NULL)
        return;
    if (a->sub != NULL) {
        natsSubscription_Unsubscribe(a->sub);
        natsSubscription_Destroy(a->sub);
    }
    if (a->nc != NULL) {
        natsConnection_Close(a->nc);
        natsConnection_Destroy(a->nc);
    }
    if (a->thread_started) {
        pthread_mutex_lock(&a->mu);
        a->stopping = true;
        pthread_cond_signal(&a->wake_cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
    }
    PQfinish(a->pg);
    snapshot_free(a->snap);
    while (a->buckets != NULL) {
        bucket *b = a->buckets;
        a->buckets = b->next;
        free(b);
    }
    pthread_cond_destroy(&a->wake_cv);
    pthread_mutex_destroy(&a->mu);
    pthread_rwlock_destroy(&a->lock);
    free(a);
}

bool
es_auth_enabled(const es_auth *a)
{
    return a != NULL && a->enabled;
}

/* Takes one request from name's bucket (rate per second, a second's
 * worth of burst); false when it is empty. */
static bool
take(es_auth *a, const char *name, int rate)
{
    struct timespec now;
    bucket *b;
    bool ok;

    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&a->mu);
    for (b = a->buckets; b != NULL && strcmp(b->name, name) != 0; b = b->next)
        ;
    if (b == NULL && (b = calloc(1, sizeof *b)) != NULL) {
        snprintf(b->name, sizeof b->name, "%s", name);
        b->tokens = rate;
        b->last = now;
        b->next = a->buckets;
        a->buckets = b;
    }
    if (b == NULL) {
        pthread_mutex_unlock(&a->mu);
        return true;        /* out of memory: do not refuse for it */
    }
    b->tokens += ((double)(now.tv_sec - b->last.tv_sec) +
                  (double)(now.tv_nsec - b->last.tv_nsec) / 1e9) * rate;
    if (b->tokens > rate)
        b->tokens = rate;
    b->last = now;
    if ((ok = b->tokens >= 1.0))
        b->tokens -= 1.0;
    pthread_mutex_unlock(&a->mu);
    return ok;
}

es_auth_result
es_auth_check(es_auth *a, const char *authorization, const char *scope,
              char principal[ES_TOKEN_NAME_MAX + 1])
{
    unsigned char digest[ES_TOKEN_DIGEST_LEN];
    const char *tok;
    size_t len;
    const entry *e;
    es_auth_result res = ES_AUTH_FORBIDDEN;
    int rate = 0;

    principal[0] = '\0';
    if (!es_auth_enabled(a))
        return ES_AUTH_OK;
    if (!es_auth_parse_header(authorization, &tok, &len)) {
        atomic_fetch_add(&a->refused_unauthenticated, 1);
        return ES_AUTH_UNAUTHENTICATED;
    }
    es_token_digest(tok, len, digest);
    pthread_rwlock_rdlock(&a->lock);
    if (a->snap == NULL) {
        pthread_rwlock_unlock(&a->lock);
        return ES_AUTH_UNAVAILABLE;
    }
    e = snapshot_find(a->snap, digest);
    if (e == NULL || (e->expires_at != 0 && e->expires_at <= (int64_t)time(NULL))) {
        pthread_rwlock_unlock(&a->lock);
        atomic_fetch_add(&a->refused_unauthenticated, 1);
        return ES_AUTH_UNAUTHENTICATED;
    }
    memcpy(principal, e->name, sizeof e->name);
    for (int i = 0; i < e->nscopes; i++)
        if (es_scope_grants(e->scopes[i], scope)) {
            res = ES_AUTH_OK;
            break;
        }
    rate = e->rate;
    pthread_rwlock_unlock(&a->lock);
    if (res == ES_AUTH_OK && rate > 0 && !take(a, principal, rate))
        res = ES_AUTH_RATE_LIMITED;
    if (res == ES_AUTH_FORBIDDEN)
        atomic_fetch_add(&a->refused_forbidden, 1);
    else if (res == ES_AUTH_RATE_LIMITED)
        atomic_fetch_add(&a->refused_rate, 1);
    return res;
}

bool
es_auth_http(es_auth *a, es_http_req *req, const char *scope, es_http_res *res)
{
    char principal[ES_TOKEN_NAME_MAX + 1];

    req->principal[0] = '\0';
    if (scope == NULL)
        return true;
    switch (es_auth_check(a, es_http_header(req, "Authorization"), scope, principal)) {
    case ES_AUTH_OK:
        snprintf(req->principal, sizeof req->principal, "%s", principal);
        return true;
    case ES_AUTH_UNAUTHENTICATED:
        es_http_res_header(res, "WWW-Authenticate", "Bearer");
        es_http_res_error(res, 401, "unauthenticated", NULL, NULL,
                          "a valid bearer token is required");
        return false;
    case ES_AUTH_FORBIDDEN:
        if (strncmp(scope, "append:", 7) == 0 && es_stream_protected(scope + 7))
            es_http_res_error(res, 403, "forbidden", NULL, NULL,
                              "category \"%s\" is written by commands only, never appended to "
                              "directly", scope + 7);
        else
            es_http_res_error(res, 403, "forbidden", NULL, NULL,
                              "token \"%s\" lacks scope \"%s\"", principal, scope);
        return false;
    case ES_AUTH_RATE_LIMITED:
        es_http_res_header(res, "Retry-After", "1");
        es_http_res_error(res, 429, "rate_limited", NULL, NULL,
                          "token \"%s\" is over its rate", principal);
        return false;
    case ES_AUTH_UNAVAILABLE:
        es_http_res_error(res, 503, "auth_unavailable", NULL, NULL,
                          "the token table could not be read yet (PostgreSQL unavailable)");
        return false;
    }
    return false;
}

void
es_auth_metrics(es_auth *a, const char *prefix, es_buf *out)
{
    size_t n = 0;

    if (!es_auth_enabled(a))
        return;
    pthread_rwlock_rdlock(&a->lock);
    n = a->snap ? a->snap->count : 0;
    pthread_rwlock_unlock(&a->lock);
    es_buf_printf(out,
                  "# HELP %s_auth_tokens live tokens in this process's copy of the table\n"
                  "# TYPE %s_auth_tokens gauge\n%s_auth_tokens %zu\n"
                  "# HELP %s_auth_refusals_total requests refused by access control, by reason\n"
                  "# TYPE %s_auth_refusals_total counter\n"
                  "%s_auth_refusals_total{reason=\"unauthenticated\"} %llu\n"
                  "%s_auth_refusals_total{reason=\"forbidden\"} %llu\n"
                  "%s_auth_refusals_total{reason=\"rate_limited\"} %llu\n"
                  "# HELP %s_auth_table_load_failures_total failed reloads of the token table\n"
                  "# TYPE %s_auth_table_load_failures_total counter\n"
                  "%s_auth_table_load_failures_total %llu\n",
                  prefix, prefix, prefix, n, prefix, prefix, prefix,
                  (unsigned long long)atomic_load(&a->refused_unauthenticated), prefix,
                  (unsigned long long)atomic_load(&a->refused_forbidden), prefix,
                  (unsigned long long)atomic_load(&a->refused_rate), prefix, prefix, prefix,
                  (unsigned long long)atomic_load(&a->load_failures));
}
