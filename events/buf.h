/*
 * A growable byte buffer used to build SQL parameters and JSON text.
 * Allocation failure is sticky: once an append fails, the buffer is
 * marked failed, later appends are no-ops, and es_buf_failed() tells the
 * caller once at the end instead of after every call.
 */
#ifndef ES_BUF_H
#define ES_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct es_buf {
    char *data;     /* NUL-terminated while !failed; owned */
    size_t len;
    size_t cap;
    bool failed;
} es_buf;

#define ES_BUF_INIT {NULL, 0, 0, false}

void es_buf_append(es_buf *b, const char *s, size_t n);
void es_buf_puts(es_buf *b, const char *s);
void es_buf_printf(es_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Writes the decimal digits of v and a NUL to out, printf's "%lld"
 * without its cost (batches of appends format several numbers per
 * event); returns their length. */
#define ES_INT_TEXT_MAX 21
size_t es_int_text(char out[ES_INT_TEXT_MAX], long long v);
/* Appends the decimal digits of v. */
void es_buf_int(es_buf *b, long long v);
/* Appends s as a JSON string literal, quotes included. */
void es_buf_json_string(es_buf *b, const char *s);
/* The same with \u00XX escapes in capitals, as jansson's json_dumps
 * writes them (query/doc.c writes jansson's bytes). */
void es_buf_json_string_upper(es_buf *b, const char *s);
/* Empties the buffer, keeping its memory. */
void es_buf_reset(es_buf *b);
bool es_buf_failed(const es_buf *b);
/* Frees the memory; the buffer is then empty and reusable. */
void es_buf_free(es_buf *b);

#endif
