/*
 * es_buf: see buf.h.  Growth doubles, so building a batch of N events is
 * O(total bytes).
 */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool
reserve(es_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;

    if (b->failed)
        return false;
    if (extra > (size_t)-1 / 2 - b->len) {
        b->failed = true;
        return false;
    }
    need = b->len + extra + 1;
    if (need <= b->cap)
        return true;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    p = realloc(b->data, cap);
    if (p == NULL) {
        b->failed = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void
es_buf_append(es_buf *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void
es_buf_puts(es_buf *b, const char *s)
{
    es_buf_append(b, s, strlen(s));
}

size_t
es_int_text(char out[ES_INT_TEXT_MAX], long long v)
{
    char text[ES_INT_TEXT_MAX];
    size_t n = sizeof text, len;
    /* the magnitude as unsigned: -LLONG_MIN does not fit a long long */
    unsigned long long m = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

    do {
        text[--n] = (char)('0' + m % 10);
        m /= 10;
    } while (m != 0);
    if (v < 0)
        text[--n] = '-';
    len = sizeof text - n;
    memcpy(out, text + n, len);
    out[len] = '\0';
    return len;
}

void
es_buf_int(es_buf *b, long long v)
{
    char text[ES_INT_TEXT_MAX];

    es_buf_append(b, text, es_int_text(text, v));
}

void
es_buf_printf(es_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if (!reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* s as a JSON string; control characters as \u00XX in hex's digits. */
static void
json_string(es_buf *b, const char *s, const char *hex)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *run = p;

    es_buf_append(b, "\"", 1);
    for (; *p; p++) {
        const char *esc = NULL;
        char u[7];

        if (*p >= 0x20 && *p != '"' && *p != '\\')
            continue;
        es_buf_append(b, (const char *)run, (size_t)(p - run));
        switch (*p) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            memcpy(u, "\\u00", 4);
            u[4] = hex[*p >> 4];
            u[5] = hex[*p & 15];
            u[6] = '\0';
            esc = u;
        }
        es_buf_puts(b, esc);
        run = p + 1;
    }
    es_buf_append(b, (const char *)run, (size_t)(p - run));
    es_buf_append(b, "\"", 1);
}

void
es_buf_json_string(es_buf *b, const char *s)
{
    json_string(b, s, "0123456789abcdef");
}

void
es_buf_json_string_upper(es_buf *b, const char *s)
{
    json_string(b, s, "0123456789ABCDEF");
}

void
es_buf_reset(es_buf *b)
{
    b->len = 0;
    b->failed = false;
    if (b->data)
        b->data[0] = '\0';
}

bool
es_buf_failed(const es_buf *b)
{
    return b->failed;
}

void
es_buf_free(es_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = false;
}
