/*
 * Texts of es_status and the helpers that fill an es_error.  Kept tiny and
 * allocation-free so it can be used on every error path, including
 * out-of-memory ones.
 */
#include "status.h"

#include "event.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *code;
    const char *text;
} status_names[] = {
    [ES_OK] = {"ok", "success"},
    [ES_ECONFLICT] = {"version_conflict", "version conflict"},
    [ES_ENOTFOUND] = {"not_found", "not found"},
    [ES_EINVALID] = {"invalid_input", "invalid input"},
    [ES_ETOOLARGE] = {"too_large", "too large"},
    [ES_EIDCLASH] = {"event_id_clash", "event ids already used by another append"},
    [ES_ERULE] = {"rule_violated", "a business rule refuses the command"},
    [ES_EUNAVAILABLE] = {"unavailable", "server unavailable"},
    [ES_ENOMEM] = {"out_of_memory", "out of memory"},
    [ES_EINTERNAL] = {"internal", "internal error"},
};

const char *
es_status_text(es_status st)
{
    if ((unsigned)st >= sizeof status_names / sizeof status_names[0])
        return "unknown status";
    return status_names[st].text;
}

const char *
es_status_code(es_status st)
{
    if ((unsigned)st >= sizeof status_names / sizeof status_names[0])
        return "unknown";
    return status_names[st].code;
}

void
es_error_clear(es_error *err)
{
    if (err == NULL)
        return;
    err->status = ES_OK;
    err->transient = false;
    err->code[0] = '\0';
    err->field[0] = '\0';
    err->message[0] = '\0';
    err->actual_version = -1;
}

bool
es_error_is(const es_error *err, const char *code)
{
    return err != NULL && err->status != ES_OK && strcmp(err->code, code) == 0;
}

es_status
es_error_vset(es_error *err, es_status st, const char *code, const char *field,
              const char *fmt, va_list ap)
{
    if (err == NULL)
        return st;
    err->status = st;
    err->transient = st == ES_EUNAVAILABLE;
    snprintf(err->code, sizeof err->code, "%s", code ? code : es_status_code(st));
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    /* messages echo input and are cut at a byte count: keep them UTF-8,
     * or JSON encoders refuse them */
    es_text_make_utf8(err->message);
    es_text_make_utf8(err->field);
    return st;
}

es_status
es_error_set(es_error *err, es_status st, const char *code, const char *field,
             const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    st = es_error_vset(err, st, code, field, fmt, ap);
    va_end(ap);
    return st;
}

void
es__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
