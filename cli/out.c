/*
 * esctl's options, exit codes and output.
 */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "env.h"
#include "pg.h"

static void
say_name(FILE *f, const cli *c)
{
    fputs("esctl", f);
    if (c->cmd && c->cmd->group)
        fprintf(f, " %s", c->cmd->group);
    if (c->cmd)
        fprintf(f, " %s", c->cmd->name);
    fputs(": ", f);
}

int
cli_usage(cli *c, const char *fmt, ...)
{
    va_list ap;

    say_name(stderr, c);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (c->cmd)
        fprintf(stderr, "usage: esctl %s%s%s %s\n(esctl %s%s%s --help for more)\n",
                c->cmd->group ? c->cmd->group : "", c->cmd->group ? " " : "", c->cmd->name,
                c->cmd->synopsis, c->cmd->group ? c->cmd->group : "", c->cmd->group ? " " : "",
                c->cmd->name);
    return CLI_USAGE;
}

bool
cli_parse(cli *c, int argc, char **argv, const cli_opt *opts, char **pos, int min, int max,
          int *npos)
{
    int i;

    *npos = 0;
    for (i = 0; i < argc; i++) {
        const char *a = argv[i];
        const cli_opt *o = NULL;

        if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++) {
                if (*npos == max) {
                    cli_usage(c, "too many arguments (\"%s\")", argv[i]);
                    return false;
                }
                pos[(*npos)++] = argv[i];
            }
            break;
        }
        if (a[0] == '-' && a[1] == '-') {
            const char *eq = strchr(a, '=');
            size_t len = eq ? (size_t)(eq - a) : strlen(a);
            for (o = opts; o && o->name; o++)
                if (strlen(o->name) == len && strncmp(o->name, a, len) == 0)
                    break;
            if (o == NULL || o->name == NULL) {
                cli_usage(c, "unknown option \"%.*s\"", (int)len, a);
                return false;
            }
            if (o->flag) {
                if (eq) {
                    cli_usage(c, "%s takes no value", o->name);
                    return false;
                }
                *o->flag = true;
            } else if (eq) {
                *o->value = eq + 1;
            } else if (i + 1 < argc) {
                *o->value = argv[++i];
            } else {
                cli_usage(c, "%s needs a value", o->name);
                return false;
            }
            continue;
        }
        if (*npos == max) {
            cli_usage(c, "too many arguments (\"%s\")", a);
            return false;
        }
        pos[(*npos)++] = argv[i];
    }
    if (*npos < min) {
        cli_usage(c, "missing arguments");
        return false;
    }
    return true;
}

bool
cli_number(cli *c, const char *option, const char *text, long long min, long long max,
           long long *out)
{
    char *end;

    errno = 0;
    *out = strtoll(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || errno != 0 || *out < min || *out > max) {
        cli_usage(c, "%s must be a whole number from %lld to %lld, not \"%s\"", option, min, max,
                  text);
        return false;
    }
    return true;
}

int
cli_exit_code(es_status st)
{
    switch (st) {
    case ES_OK:
        return CLI_OK;
    case ES_ENOTFOUND:
        return CLI_NOT_FOUND;
    case ES_ECONFLICT:
    case ES_EIDCLASH:
        return CLI_CONFLICT;
    case ES_EINVALID:
    case ES_ETOOLARGE:
        return CLI_USAGE;
    case ES_EUNAVAILABLE:
        return CLI_UNAVAILABLE;
    default:
        return CLI_FAILED;
    }
}

int
cli_fail(cli *c, const es_error *err)
{
    say_name(stderr, c);
    fprintf(stderr, "%s\n", err->message);
    if (c->json)
        cli_print(c, json_pack("{s:o}", "error", es_error_to_json(err)), NULL, NULL);
    return cli_exit_code(err->status);
}

/* A cell of a table: strings as they are, null as "-", the rest as JSON. */
static char *
cell(const json_t *v)
{
    if (v == NULL || json_is_null(v))
        return strdup("-");
    if (json_is_string(v))
        return strdup(json_string_value(v));
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

int
cli_print(cli *c, json_t *doc, const json_t *rows, const char *const *cols)
{
    size_t ncol = 0, nrow, i, k;
    size_t *width;
    char **cells;

    if (c->json || cols == NULL) {
        char *text = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
        puts(text ? text : "null");
        free(text);
        json_decref(doc);
        fflush(stdout);
        return CLI_OK;
    }
    if (rows == NULL)
        rows = doc;
    while (cols[ncol])
        ncol++;
    nrow = json_array_size(rows);
    width = calloc(ncol, sizeof *width);
    cells = calloc((nrow + 1) * ncol, sizeof *cells);
    if (width == NULL || cells == NULL)
        abort();
    for (k = 0; k < ncol; k++) {
        char *h = strdup(cols[k]);
        for (char *p = h; *p; p++)
            *p = *p == '_' ? ' ' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        cells[k] = h;
        width[k] = strlen(h);
    }
    for (i = 0; i < nrow; i++)
        for (k = 0; k < ncol; k++) {
            char *s = cell(json_object_get(json_array_get(rows, i), cols[k]));
            cells[(i + 1) * ncol + k] = s;
            if (strlen(s) > width[k])
                width[k] = strlen(s);
        }
    for (i = 0; i <= nrow; i++) {
        for (k = 0; k < ncol; k++) {
            const char *s = cells[i * ncol + k];
            if (k + 1 < ncol)
                printf("%-*s  ", (int)width[k], s);
            else
                printf("%s\n", s);
        }
    }
    if (nrow == 0)
        puts("(none)");
    for (i = 0; i < (nrow + 1) * ncol; i++)
        free(cells[i]);
    free(cells);
    free(width);
    json_decref(doc);
    fflush(stdout);
    return CLI_OK;
}

int
cli_say(cli *c, json_t *doc, const char *fmt, ...)
{
    va_list ap;

    if (c->json)
        return cli_print(c, doc, NULL, NULL);
    json_decref(doc);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    return CLI_OK;
}

PGconn *
cli_pg(cli *c)
{
    PGconn *pg = es_pg_connect(es_pg_conninfo(), false);

    if (PQstatus(pg) != CONNECTION_OK) {
        es_error err;
        char why[256];
        snprintf(why, sizeof why, "%s", PQerrorMessage(pg));
        why[strcspn(why, "\n")] = '\0';
        es_error_set(&err, ES_EUNAVAILABLE, "postgres_unavailable", NULL,
                     "PostgreSQL does not answer (ES_PG_CONNINFO): %s", why);
        cli_fail(c, &err);
        PQfinish(pg);
        return NULL;
    }
    return pg;
}

es_store *
cli_store(cli *c)
{
    es_store *st = NULL;
    es_error err;

    if (es_store_open(&st, es_pg_conninfo(), &err) != ES_OK) {
        cli_fail(c, &err);
        return NULL;
    }
    return st;
}
