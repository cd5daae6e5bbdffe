/*
 * esctl token create|list|revoke: the access tokens of the HTTP APIs,
 * through events/token.c (the row and its event in one transaction).
 * The secret is printed once, by create, and never again; revoke also
 * tells every process over NATS, so the token dies at once rather than
 * at the next reload of their copies (within half a second anyway).
 */
#include "cli.h"

#include <nats/nats.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "env.h"
#include "feed.h"
#include "store.h"
#include "token.h"

/* Who runs esctl, for metadata.principal of the token events. */
static void
operator_name(char *out, size_t size)
{
    struct passwd *pw = getpwuid(getuid());

    snprintf(out, size, "esctl:%s", pw && pw->pw_name ? pw->pw_name : "unknown");
    if (!es_token_name_valid(out))
        snprintf(out, size, "esctl");
}

static json_t *
time_or_null(int64_t t)
{
    char text[32];
    time_t tt = (time_t)t;
    struct tm tm;

    if (t == 0 || gmtime_r(&tt, &tm) == NULL)
        return json_null();
    strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(text);
}

static int
run_create(cli *c, int argc, char **argv)
{
    const char *scopes[ES_TOKEN_SCOPES_MAX];
    const char *ttl_s = NULL, *rate_s = NULL;
    size_t nscopes = 0;
    char *pos[1] = {NULL};
    char who[ES_TOKEN_NAME_MAX + 1], secret[ES_TOKEN_SECRET_SIZE];
    int npos = 0;
    long long ttl = 0, rate = 0;
    int64_t expires_at;
    es_store *st;
    es_error err;
    es_status s;
    json_t *doc, *scope_list;
    int rc;

    /* --scope repeats, which cli_parse does not do: collect it here */
    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i];
        bool is_scope = strcmp(opt, "--scope") == 0, is_ttl = strcmp(opt, "--ttl") == 0,
             is_rate = strcmp(opt, "--rate") == 0;

        if (!is_scope && !is_ttl && !is_rate) {
            if (opt[0] == '-' && opt[1] != '\0')
                return cli_usage(c, "unknown option %s", opt);
            if (npos == 1)
                return cli_usage(c, "one token name only (got \"%s\" too)", opt);
            pos[npos++] = argv[i];
            continue;
        }
        if (i + 1 >= argc)
            return cli_usage(c, "%s needs a value", opt);
        if (is_ttl)
            ttl_s = argv[++i];
        else if (is_rate)
            rate_s = argv[++i];
        else if (nscopes == ES_TOKEN_SCOPES_MAX)
            return cli_usage(c, "at most %d scopes", ES_TOKEN_SCOPES_MAX);
        else
            scopes[nscopes++] = argv[++i];
    }
    if (npos != 1)
        return cli_usage(c, "a token name is required");
    if (nscopes == 0)
        return cli_usage(c, "at least one --scope is required");
    if ((ttl_s && !cli_number(c, "--ttl", ttl_s, 1, 100LL * 365 * 86400, &ttl)) ||
        (rate_s && !cli_number(c, "--rate", rate_s, 1, 1000000, &rate)))
        return CLI_USAGE;
    if ((st = cli_store(c)) == NULL)
        return CLI_UNAVAILABLE;
    operator_name(who, sizeof who);
    s = es_token_create(st, &(es_token_spec){pos[0], scopes, nscopes, ttl, (int)rate, who, NULL},
                        secret, &expires_at, &err);
    es_store_close(st);
    if (s != ES_OK)
        return cli_fail(c, &err);
    scope_list = json_array();
    for (size_t i = 0; i < nscopes; i++)
        json_array_append_new(scope_list, json_string(scopes[i]));
    if (c->json) {
        doc = json_pack("{s:s, s:s, s:o, s:o}", "name", pos[0], "token", secret, "scopes",
                        scope_list, "expires_at", time_or_null(expires_at));
        rc = cli_say(c, doc, "%s", secret);
    } else {
        json_decref(scope_list);
        /* the secret alone on stdout, so that `esctl token create ... > f` keeps it */
        printf("%s\n", secret);
        fprintf(stderr, "esctl: token \"%s\" created; the secret above is shown only now\n",
                pos[0]);
        rc = CLI_OK;
    }
    memset(secret, 0, sizeof secret);
    return rc;
}

static int
run_list(cli *c, int argc, char **argv)
{
    const char *cols[] = {"name", "scopes", "rate", "expires_at", "created_at", "revoked_at",
                          NULL};
    cli_opt opts[] = {{NULL, NULL, NULL}};
    char *pos[1];
    int npos;
    es_store *st;
    es_error err;
    json_t *list;
    int rc;

    if (!cli_parse(c, argc, argv, opts, pos, 0, 0, &npos))
        return CLI_USAGE;
    if ((st = cli_store(c)) == NULL)
        return CLI_UNAVAILABLE;
    if (es_token_list(st, &list, &err) != ES_OK) {
        es_store_close(st);
        return cli_fail(c, &err);
    }
    es_store_close(st);
    rc = cli_print(c, json_pack("{s:O}", "tokens", list), list, cols);
    json_decref(list);
    return rc;
}

/* Tells the running processes at once (best effort: they reload every
 * ES_AUTH_REFRESH_MS anyway). */
static void
announce_revocation(const char *name)
{
    natsConnection *nc = NULL;
    natsOptions *opts = NULL;
    es_error err;

    /* the programs' options (TLS when configured), connecting now or never */
    if (es_nats_options_create(&opts, es_nats_url(), "esctl", &err) == ES_OK &&
        natsOptions_SetRetryOnFailedConnect(opts, false, NULL, NULL) == NATS_OK &&
        natsOptions_SetMaxReconnect(opts, 0) == NATS_OK &&
        natsOptions_SetTimeout(opts, 1000) == NATS_OK && natsConnection_Connect(&nc, opts) == NATS_OK) {
        natsConnection_PublishString(nc, ES_AUTH_REVOKE_SUBJECT, name);
        natsConnection_FlushTimeout(nc, 1000);
    }
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    nats_Close();
}

static int
run_revoke(cli *c, int argc, char **argv)
{
    cli_opt opts[] = {{NULL, NULL, NULL}};
    char *pos[1];
    char who[ES_TOKEN_NAME_MAX + 1];
    int npos;
    es_store *st;
    es_error err;
    es_status s;

    if (!cli_parse(c, argc, argv, opts, pos, 1, 1, &npos))
        return CLI_USAGE;
    if ((st = cli_store(c)) == NULL)
        return CLI_UNAVAILABLE;
    operator_name(who, sizeof who);
    s = es_token_revoke(st, pos[0], who, &err);
    es_store_close(st);
    if (s != ES_OK)
        return cli_fail(c, &err);
    announce_revocation(pos[0]);
    return cli_say(c, json_pack("{s:s, s:b}", "name", pos[0], "revoked", 1), "token \"%s\" revoked",
                   pos[0]);
}

const cli_cmd cli_token_cmds[] = {
    {"token", "create", "<name> --scope S [--scope S ...] [--ttl SECONDS] [--rate N]",
     "mint an access token for the HTTP APIs",
     "Creates the token <name> with the given scopes (admin, metrics, read:streams,\n"
     "read:query, command:<context>|*, append:<category>|*; see docs/API.md) and\n"
     "prints its secret once: alone on standard output, or with --json as\n"
     "{\"name\", \"token\", \"scopes\", \"expires_at\"}.  Only its SHA-256 is stored.\n"
     "--ttl: it expires after SECONDS; --rate: at most N requests per second per\n"
     "process.  A name is never reused, even after revocation (exit code 5).\n"
     "Records TokenCreated in the stream token-<name>.\n",
     run_create},
    {"token", "list", "", "list the access tokens (never their secrets)",
     "One row per token ever created: name, scopes, rate, expires_at, created_at,\n"
     "revoked_at.  --json prints {\"tokens\": [...]}.\n",
     run_list},
    {"token", "revoke", "<name>", "revoke an access token",
     "Marks the token revoked and records TokenRevoked in token-<name>; every\n"
     "process refuses it within a second (at once when NATS is up: a message on\n"
     "es.auth.revoked asks them to reload).  Exit code 4 when there is no live\n"
     "token of that name.\n",
     run_revoke},
    {NULL, NULL, NULL, NULL, NULL, NULL}};
