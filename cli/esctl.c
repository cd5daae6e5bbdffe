/*
 * esctl, the operator's command line.  For now it applies migrations; the
 * other subcommands (streams, feed, projections, sagas, dead letters) join
 * it as the daemons that own them land.  Exit codes: 0 success, 1 failure,
 * 2 usage, 3 a server unavailable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate.h"

static void
usage(FILE *f)
{
    fputs("usage: esctl migrate [--dir DIR]\n"
          "\n"
          "  migrate   apply the pending SQL migrations of DIR (default: migrations,\n"
          "            or $ES_MIGRATIONS_DIR) to the database of $ES_PG_CONNINFO\n",
          f);
}

static const char *
conninfo(void)
{
    const char *c = getenv("ES_PG_CONNINFO");

    return c && c[0] ? c : "host=127.0.0.1 port=55432 user=postgres dbname=es";
}

static int
cmd_migrate(int argc, char **argv)
{
    const char *dir = getenv("ES_MIGRATIONS_DIR");
    es_error err;
    int applied;

    if (dir == NULL || dir[0] == '\0')
        dir = "migrations";
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "esctl migrate: unknown argument \"%s\"\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (es_migrate(conninfo(), dir, stdout, &applied, &err) != ES_OK) {
        fprintf(stderr, "esctl migrate: %s\n", err.message);
        return err.status == ES_EUNAVAILABLE ? 3 : 1;
    }
    printf("migrations: %d applied, database up to date\n", applied);
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "migrate") == 0)
        return cmd_migrate(argc - 2, argv + 2);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "esctl: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
