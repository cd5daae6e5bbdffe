/*
 * The Server-Sent Events wire format of the feed and the decoding of a
 * subscription's parameters (sse.h).  Everything a client sends is
 * checked here, once, so that the hub only ever sees a valid filter.
 */
#include "sse.h"

#include <stdio.h>
#include <string.h>

#include "codec.h"

static es_status
invalid(es_error *err, const char *field, const char *fmt, const char *what)
{
    return es_error_set(err, ES_EINVALID, "query_invalid", field, fmt, what);
}

/* Splits text (copied into buf) at commas into names[]; each must be a
 * valid name for check. */
static es_status
split(const char *text, const char *field, char *buf, const char **names, size_t *n,
      bool category, es_error *err)
{
    char *p, *comma;
    size_t len = strlen(text);
    es_error cerr;

    *n = 0;
    if (len == 0)
        return invalid(err, field, "%s must name at least one value", field);
    if (len > ES_SSE_FILTER_TEXT_MAX)
        return invalid(err, field, "%s is too long", field);
    memcpy(buf, text, len + 1);
    for (p = buf;; p = comma + 1) {
        if ((comma = strchr(p, ',')) != NULL)
            *comma = '\0';
        if (p[0] == '\0')
            return invalid(err, field, "%s holds an empty name", field);
        if (*n == ES_SSE_FILTER_NAMES_MAX)
            return es_error_set(err, ES_EINVALID, "query_invalid", field,
                                "%s names more than %d values", field, ES_SSE_FILTER_NAMES_MAX);
        if (category) {
            if (strchr(p, '-') != NULL || es_stream_id_check(p, field, &cerr) != ES_OK)
                return invalid(err, field, "%s holds a name that is not a category", field);
        } else if (strlen(p) > ES_TYPE_MAX || !es_text_printable(p, strlen(p))) {
            return invalid(err, field, "%s holds a name that is not an event type", field);
        }
        names[(*n)++] = p;
        if (comma == NULL)
            break;
    }
    return ES_OK;
}

es_status
es_sse_filter_parse(es_sse_filter *f, const char *after, const char *last_event_id,
                    const char *category, const char *type, es_error *err)
{
    es_status st;

    memset(f, 0, sizeof *f);
    es_error_clear(err);
    /* the header wins: a browser's EventSource resends it on reconnect,
     * with the URL (and its ?after=) of the first connection */
    if (last_event_id != NULL && last_event_id[0] != '\0') {
        if (!es_position_parse(last_event_id, &f->after))
            return invalid(err, "Last-Event-ID", "%s must be an id this stream sent",
                           "Last-Event-ID");
    } else if (after != NULL) {
        if (!es_position_parse(after, &f->after))
            return invalid(err, "after", "%s must be a position returned by this service",
                           "after");
    } else {
        f->from_tail = true;
    }
    if (category != NULL &&
        (st = split(category, "category", f->category_text, f->categories, &f->ncategories,
                    true, err)) != ES_OK)
        return st;
    if (type != NULL &&
        (st = split(type, "type", f->type_text, f->types, &f->ntypes, false, err)) != ES_OK)
        return st;
    return ES_OK;
}

bool
es_sse_filter_match(const es_sse_filter *f, const char *stream, const char *type)
{
    size_t i;

    if (f->ncategories > 0) {
        const char *dash = strchr(stream, '-');
        size_t n = dash ? (size_t)(dash - stream) : 0;

        for (i = 0; i < f->ncategories; i++)
            if (dash != NULL && strlen(f->categories[i]) == n &&
                memcmp(f->categories[i], stream, n) == 0)
                break;
        if (i == f->ncategories)
            return false;
    }
    if (f->ntypes > 0) {
        for (i = 0; i < f->ntypes; i++)
            if (strcmp(f->types[i], type) == 0)
                break;
        if (i == f->ntypes)
            return false;
    }
    return true;
}

/* Appends text, which must stay on one line: a line break (only ever
 * JSON whitespace outside strings, which escape theirs) becomes a space. */
static void
one_line(es_buf *b, const char *text, size_t len)
{
    size_t start = 0;

    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n' || text[i] == '\r') {
            es_buf_append(b, text + start, i - start);
            es_buf_append(b, " ", 1);
            start = i + 1;
        }
    }
    es_buf_append(b, text + start, len - start);
}

void
es_sse_event(es_buf *b, const es_event *e)
{
    char pos[ES_POSITION_TEXT_MAX];
    es_buf json = ES_BUF_INIT;

    es_position_format(e->position, pos);
    es_buf_printf(b, "id: %s\nevent: ", pos);
    one_line(b, e->type, strlen(e->type));
    es_buf_puts(b, "\ndata: ");
    es_event_encode(&json, e, true);
    if (es_buf_failed(&json))
        b->failed = true;       /* as if b's own append had failed */
    else
        one_line(b, json.data, json.len);
    es_buf_puts(b, "\n\n");
    es_buf_free(&json);
}

void
es_sse_position(es_buf *b, es_position p)
{
    char pos[ES_POSITION_TEXT_MAX];

    es_position_format(p, pos);
    es_buf_printf(b, "id: %s\n\n", pos);
}

void
es_sse_heartbeat(es_buf *b)
{
    es_buf_puts(b, ": heartbeat\n\n");
}

void
es_sse_cut(es_buf *b, const char *reason, const es_position *last_id)
{
    char pos[ES_POSITION_TEXT_MAX];

    es_buf_puts(b, "event: cut\ndata: {\"reason\":");
    es_buf_json_string(b, reason);
    if (last_id != NULL) {
        es_position_format(*last_id, pos);
        es_buf_printf(b, ",\"last_id\":\"%s\"}\n\n", pos);
    } else {
        es_buf_puts(b, ",\"last_id\":null}\n\n");
    }
}
