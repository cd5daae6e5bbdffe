/*
 * esctl, the operator's command line: one binary whose subcommands read
 * and append streams, follow the feed, run and watch projections, look
 * after sagas and dead letters, apply migrations and check the system's
 * invariants.  Every subcommand prints a human table by default and JSON
 * with --json, has --help, and exits with the codes of cli.h.  The man
 * page is docs/esctl.1.
 */
#include "cli.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "migrate.h"
#include "pg.h"
#include "projector.h"

static int
run_migrate(cli *c, int argc, char **argv)
{
    const char *dir = es_env_str("ES_MIGRATIONS_DIR", "migrations");
    cli_opt opts[] = {{"--dir", &dir, NULL}, {NULL, NULL, NULL}};
    char *pos[1];
    int npos, applied;
    es_error err;

    if (!cli_parse(c, argc, argv, opts, pos, 0, 0, &npos))
        return CLI_USAGE;
    if (es_migrate(es_pg_conninfo(), dir, c->json ? NULL : stdout, &applied, &err) != ES_OK)
        return cli_fail(c, &err);
    return cli_say(c, json_pack("{s:i, s:s}", "applied", applied, "dir", dir),
                   "migrations: %d applied, database up to date", applied);
}

static const cli_cmd migrate_cmds[] = {
    {NULL, "migrate", "[--dir DIR]", "apply the pending SQL migrations",
     "Applies, in order and each in its own transaction, the numbered SQL files of DIR\n"
     "(default $ES_MIGRATIONS_DIR, or migrations) that the database of $ES_PG_CONNINFO\n"
     "has not applied yet.  A file that was changed after it was applied is refused.\n"
     "--json prints {\"applied\": N, \"dir\": DIR}.\n",
     run_migrate},
    {NULL, NULL, NULL, NULL, NULL, NULL}};

static const cli_cmd *const tables[] = {cli_stream_cmds, cli_projection_cmds, cli_saga_cmds,
                                        migrate_cmds, cli_verify_cmds, cli_token_cmds,
                                        cli_trace_cmds, cli_consumer_cmds};

static void
usage(FILE *f)
{
    fputs("usage: esctl [--json] <command> [arguments]\n\ncommands:\n", f);
    for (size_t t = 0; t < sizeof tables / sizeof *tables; t++)
        for (const cli_cmd *k = tables[t]; k->name; k++) {
            char head[64];
            snprintf(head, sizeof head, "%s%s%s", k->group ? k->group : "", k->group ? " " : "",
                     k->name);
            fprintf(f, "  %-22s %s\n", head, k->summary);
        }
    fputs("\noptions of every command:\n"
          "  --json                 print JSON (one document per line) instead of tables\n"
          "  --help                 what the command does, its arguments and output\n"
          "\nexit codes: 0 done, 1 failed (or verify found a violation), 2 bad arguments or\n"
          "input, 3 a server did not answer, 4 not found, 5 conflict, 130 interrupted.\n"
          "configuration: ES_PG_CONNINFO, ES_REDIS_HOST, ES_REDIS_PORT, ES_REDIS_DB,\n"
          "ES_REDIS_USER, ES_REDIS_PASSWORD, ES_NATS_URL, ES_RELAY_STREAM (see README.md);\n"
          "without ES_PG_CONNINFO, the credentials file .run/credentials (ES_CREDENTIALS);\n"
          "the manual: man docs/esctl.1\n",
          f);
}

static void
help(const cli_cmd *k)
{
    printf("usage: esctl %s%s%s %s\n\n%s.\n\n%s", k->group ? k->group : "", k->group ? " " : "",
           k->name, k->synopsis, k->summary, k->help);
    puts("\nAdd --json for JSON output.  Exit codes: 0 done, 1 failed, 2 bad arguments,\n"
         "3 a server did not answer, 4 not found, 5 conflict, 130 interrupted.");
}

static const cli_cmd *
find(const char *group, const char *name, bool *group_known)
{
    *group_known = false;
    for (size_t t = 0; t < sizeof tables / sizeof *tables; t++)
        for (const cli_cmd *k = tables[t]; k->name; k++) {
            if (k->group == NULL && strcmp(k->name, group) == 0)
                return k;
            if (k->group && strcmp(k->group, group) == 0) {
                *group_known = true;
                if (name && strcmp(k->name, name) == 0)
                    return k;
            }
        }
    return NULL;
}

int
main(int argc, char **argv)
{
    char **args = calloc((size_t)argc + 1, sizeof *args);
    int nargs = 0, rc, i;
    bool want_help = false, group_known;
    cli c = {NULL, false};
    const cli_cmd *k;
    es_error err;

    if (args == NULL)
        return CLI_FAILED;
    /* an operator's work may run long: no statement or answer limit
     * toward PostgreSQL unless ES_PG_STATEMENT_TIMEOUT_MS etc. say so */
    es_pg_timeouts_for_tools();
    /* --json and --help may come anywhere (before "--") */
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            for (; i < argc; i++)
                args[nargs++] = argv[i];
            break;
        }
        if (strcmp(argv[i], "--json") == 0)
            c.json = true;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            want_help = true;
        else
            args[nargs++] = argv[i];
    }
    if (nargs == 0 || strcmp(args[0], "help") == 0) {
        if (nargs > 1 && (k = find(args[1], nargs > 2 ? args[2] : NULL, &group_known)) != NULL)
            help(k);
        else
            usage(nargs == 0 && !want_help ? stderr : stdout);
        free(args);
        return nargs == 0 && !want_help ? CLI_USAGE : CLI_OK;
    }
    k = find(args[0], nargs > 1 ? args[1] : NULL, &group_known);
    if (k == NULL) {
        if (group_known && want_help && nargs == 1) {
            usage(stdout);
            free(args);
            return CLI_OK;
        }
        if (group_known)
            fprintf(stderr, "esctl %s: unknown subcommand \"%s\"\n", args[0],
                    nargs > 1 ? args[1] : "");
        else
            fprintf(stderr, "esctl: unknown command \"%s\"\n", args[0]);
        usage(stderr);
        free(args);
        return CLI_USAGE;
    }
    if (want_help) {
        help(k);
        free(args);
        return CLI_OK;
    }
    c.cmd = k;
    /* Run from the checkout after `make up`, with no ES_PG_CONNINFO set:
     * esctl's own credentials from the servers' credentials file, and the
     * administrator's for migrate (which creates tables). */
    es_env_credentials(k->run == run_migrate ? "es_admin" : "esctl");
    /* Ctrl-C and SIGTERM stop follow, rebuild and verify, which poll
     * es_daemon_stopping(); messages say "esctl: ..." */
    if (es_daemon_start(&(es_daemon){.name = "esctl"}, &err) != ES_OK) {
        fprintf(stderr, "esctl: %s\n", err.message);
        free(args);
        return CLI_FAILED;
    }
    i = k->group ? 2 : 1;
    rc = k->run(&c, nargs - i, args + i);
    es_daemon_stop();
    free(args);
    return rc;
}
