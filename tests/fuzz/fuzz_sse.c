/*
 * libFuzzer target for es_sse_filter_parse, which decodes what a client
 * of GET /v1/subscriptions/feed sends (?after=, Last-Event-ID,
 * ?category=, ?type=).  The input's first byte says which of the four
 * are present; the rest holds them, separated by newlines.  Besides not
 * crashing: a refusal is query_invalid naming one of the four fields; an
 * accepted filter holds only non-empty names without commas (categories
 * without '-'), at most ES_SSE_FILTER_NAMES_MAX of each, and matches an
 * event of each category and type it names; its start position formats
 * into an id-only message that parses back to it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_names(const char *const *names, size_t n, bool category)
{
    if (n > ES_SSE_FILTER_NAMES_MAX)
        abort();
    for (size_t i = 0; i < n; i++)
        if (names[i][0] == '\0' || strchr(names[i], ',') != NULL ||
            (category && strchr(names[i], '-') != NULL))
            abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text, *fields[4] = {NULL, NULL, NULL, NULL}, *p;
    unsigned present;
    es_sse_filter f;
    es_error err;
    es_buf b = ES_BUF_INIT;

    if (size == 0)
        return 0;
    present = data[0];
    if ((text = malloc(size)) == NULL)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    p = text;
    for (int i = 0; i < 4; i++) {
        char *nl = p ? strchr(p, '\n') : NULL;

        if (present & (1u << i))
            fields[i] = p ? p : (char *)"";
        if (nl != NULL) {
            *nl = '\0';
            p = nl + 1;
        } else {
            p = NULL;
        }
    }
    if (es_sse_filter_parse(&f, fields[0], fields[1], fields[2], fields[3], &err) != ES_OK) {
        if (strcmp(err.code, "query_invalid") != 0 ||
            (strcmp(err.field, "after") != 0 && strcmp(err.field, "Last-Event-ID") != 0 &&
             strcmp(err.field, "category") != 0 && strcmp(err.field, "type") != 0))
            abort();
    } else {
        es_position back;
        char stream[ES_STREAM_ID_MAX + 8];

        check_names(f.categories, f.ncategories, true);
        check_names(f.types, f.ntypes, false);
        for (size_t i = 0; i < f.ncategories; i++) {
            snprintf(stream, sizeof stream, "%s-1", f.categories[i]);
            if (f.ntypes == 0 && !es_sse_filter_match(&f, stream, "T"))
                abort();
            for (size_t k = 0; k < f.ntypes; k++)
                if (!es_sse_filter_match(&f, stream, f.types[k]))
                    abort();
        }
        es_sse_position(&b, f.after);
        if (es_buf_failed(&b) || strncmp(b.data, "id: ", 4) != 0 ||
            b.data[b.len - 1] != '\n' || b.data[b.len - 2] != '\n')
            abort();
        b.data[b.len - 2] = '\0';
        if ((f.after.txid != 0 || f.after.gpos != 0) &&
            (!es_position_parse(b.data + 4, &back) || es_position_cmp(back, f.after) != 0))
            abort();
    }
    es_buf_free(&b);
    free(text);
    return 0;
}
