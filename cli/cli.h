/*
 * esctl's shared parts: the subcommand table, option parsing, exit codes
 * and output (human tables by default, JSON with --json).
 */
#ifndef CLI_H
#define CLI_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "status.h"
#include "store.h"

/* Exit codes scripts can rely on (docs/esctl.1). */
enum {
    CLI_OK = 0,
    CLI_FAILED = 1,         /* the operation failed, or verify found a violation */
    CLI_USAGE = 2,          /* bad arguments or invalid input */
    CLI_UNAVAILABLE = 3,    /* a server did not answer */
    CLI_NOT_FOUND = 4,      /* no such stream, saga, dead letter or projection */
    CLI_CONFLICT = 5,       /* wrong expected version, or the state forbids it */
    CLI_INTERRUPTED = 130   /* stopped by Ctrl-C (a rebuild resumes when run again) */
};

typedef struct cli cli;

typedef struct cli_cmd {
    const char *group;      /* "stream", or NULL for a command of its own */
    const char *name;       /* "read" */
    const char *synopsis;   /* "<stream> [--from V] [--limit N] [--backward]" */
    const char *summary;    /* one line */
    const char *help;       /* the rest of --help: arguments, options, output */
    int (*run)(cli *c, int argc, char **argv);
} cli_cmd;

struct cli {
    const cli_cmd *cmd;
    bool json;
};

/* An option of a subcommand: a flag (value NULL) or one with a value. */
typedef struct cli_opt {
    const char *name;       /* "--limit" */
    const char **value;
    bool *flag;
} cli_opt;

/* Sorts argv into options and positional arguments (into pos, at most
 * max, at least min).  False after saying what is wrong (exit CLI_USAGE). */
bool cli_parse(cli *c, int argc, char **argv, const cli_opt *opts, char **pos, int min, int max,
               int *npos);
/* text as a whole number from min to max, or false after saying which
 * option is wrong. */
bool cli_number(cli *c, const char *option, const char *text, long long min, long long max,
                long long *out);
/* Says what is wrong with the arguments; returns CLI_USAGE. */
int cli_usage(cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The exit code for a failure of this status. */
int cli_exit_code(es_status st);
/* Reports err (on stderr; also as {"error": {...}} on stdout with --json)
 * and returns its exit code. */
int cli_fail(cli *c, const es_error *err);

/*
 * Prints a result and takes doc's reference: with --json, doc as one
 * line; otherwise rows (an array of objects inside doc, or doc itself)
 * as a table with the columns cols (NULL-terminated keys; a null value
 * prints "-").  Returns CLI_OK.
 */
int cli_print(cli *c, json_t *doc, const json_t *rows, const char *const *cols);
/* Prints one line of text, or doc as JSON with --json; takes doc. */
int cli_say(cli *c, json_t *doc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The subcommands, by module. */
extern const cli_cmd cli_stream_cmds[], cli_projection_cmds[], cli_saga_cmds[],
    cli_verify_cmds[], cli_token_cmds[], cli_trace_cmds[], cli_consumer_cmds[];

/* A connection to the event store's PostgreSQL, or NULL after saying why
 * (exit CLI_UNAVAILABLE). */
PGconn *cli_pg(cli *c);
/* The event store (es_store_open on ES_PG_CONNINFO), or NULL after saying
 * why; the caller closes it (es_store_close). */
es_store *cli_store(cli *c);

#endif
