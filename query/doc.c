/*
 * Documents written straight into a response body (see doc.h).
 *
 * The bytes are json_dumps(JSON_COMPACT)'s for the tree views.c built
 * with jansson: strings escaped as jansson escapes them (the short forms,
 * else \u00XX in capitals; '/' and non-ASCII as they are), and a field
 * holding JSON text copied as it is when it is already in the form
 * jansson would write it back in (doc_canonical), else parsed and dumped
 * by jansson as before.  tests/test_qdoc.c holds the two side by side.
 */
#include "doc.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"

/* Past these a text is left to jansson (doc_canonical says false). */
#define CANON_DEPTH_MAX 32
#define CANON_KEYS_MAX 32
/* Integers of up to 18 digits fit in jansson's json_int_t (long long). */
#define CANON_DIGITS_MAX 18

void
doc_begin(doc_obj *o, es_buf *b)
{
    o->b = b;
    o->some = false;
    es_buf_append(b, "{", 1);
}

void
doc_end(doc_obj *o)
{
    es_buf_append(o->b, "}", 1);
}

void
doc_key(doc_obj *o, const char *key)
{
    if (o->some)
        es_buf_append(o->b, ",", 1);
    o->some = true;
    es_buf_append(o->b, "\"", 1);
    es_buf_puts(o->b, key);
    es_buf_append(o->b, "\":", 2);
}


static bool
utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n;

    while (*p) {
        if ((n = es_utf8_len(p, 4)) == 0)
            return false;
        p += n;
    }
    return true;
}


void
doc_str(es_buf *b, const char *s)
{
    char *copy;

    if (s == NULL) {
        es_buf_puts(b, "null");
        return;
    }
    if (utf8_ok(s)) {
        es_buf_json_string_upper(b, s);
        return;
    }
    /* never from the projections, which write JSON strings */
    if ((copy = strdup(s)) == NULL) {
        b->failed = true;
        return;
    }
    es_text_make_utf8(copy);
    es_buf_json_string_upper(b, copy);
    free(copy);
}

void
doc_int(es_buf *b, const char *s)
{
    char *end;
    long long n;

    if (s == NULL || *s == '\0') {
        es_buf_puts(b, "null");
        return;
    }
    n = strtoll(s, &end, 10);
    if (*end == '\0')
        es_buf_int(b, n);
    else
        doc_str(b, s);
}

/* ---- the canonical form ------------------------------------------------ */

typedef struct span {
    const unsigned char *p;
    size_t n;
} span;

static bool canon_value(const unsigned char **pp, int depth);

/* A string with only the short escapes and valid UTF-8 (jansson writes
 * every other character as it is, and reads \u0000 as an error). */
static bool
canon_string(const unsigned char **pp)
{
    const unsigned char *p = *pp + 1;
    size_t n;

    for (;;) {
        if (*p == '"') {
            *pp = p + 1;
            return true;
        }
        if (*p == '\\') {
            if (strchr("\"\\bfnrt", p[1]) == NULL || p[1] == '\0')
                return false;
            p += 2;
            continue;
        }
        if (*p < 0x20 || (n = es_utf8_len(p, 4)) == 0)
            return false;       /* also the end of the text */
        p += n;
    }
}

/* An integer as jansson writes one: no '+', no leading zero, no "-0",
 * within json_int_t; a fraction or exponent (a real) is not. */
static bool
canon_number(const unsigned char **pp)
{
    const unsigned char *p = *pp, *d;

    if (*p == '-')
        p++;
    d = p;
    if (*p == '0') {
        if (d != *pp)
            return false;       /* -0 is written back as 0 */
        p++;
    } else {
        while (*p >= '0' && *p <= '9')
            p++;
        if (p == d || p - d > CANON_DIGITS_MAX)
            return false;
    }
    if (*p == '.' || *p == 'e' || *p == 'E')
        return false;
    *pp = p;
    return true;
}

static bool
canon_literal(const unsigned char **pp, const char *word)
{
    size_t n = strlen(word);

    if (strncmp((const char *)*pp, word, n) != 0)
        return false;
    *pp += n;
    return true;
}

static bool
canon_object(const unsigned char **pp, int depth)
{
    span keys[CANON_KEYS_MAX];
    const unsigned char *p = *pp + 1;
    size_t nkeys = 0, i;

    if (*p == '}') {
        *pp = p + 1;
        return true;
    }
    for (;;) {
        const unsigned char *k = p;

        if (*p != '"' || !canon_string(&p) || nkeys == CANON_KEYS_MAX)
            return false;
        /* jansson keeps one member per key: a repeated key is not copied */
        for (i = 0; i < nkeys; i++)
            if (keys[i].n == (size_t)(p - k) && memcmp(keys[i].p, k, keys[i].n) == 0)
                return false;
        keys[nkeys++] = (span){k, (size_t)(p - k)};
        if (*p++ != ':' || !canon_value(&p, depth + 1))
            return false;
        if (*p == '}') {
            *pp = p + 1;
            return true;
        }
        if (*p++ != ',')
            return false;
    }
}

static bool
canon_array(const unsigned char **pp, int depth)
{
    const unsigned char *p = *pp + 1;

    if (*p == ']') {
        *pp = p + 1;
        return true;
    }
    for (;;) {
        if (!canon_value(&p, depth + 1))
            return false;
        if (*p == ']') {
            *pp = p + 1;
            return true;
        }
        if (*p++ != ',')
            return false;
    }
}

static bool
canon_value(const unsigned char **pp, int depth)
{
    if (depth > CANON_DEPTH_MAX)
        return false;
    switch (**pp) {
    case '{': return canon_object(pp, depth);
    case '[': return canon_array(pp, depth);
    case '"': return canon_string(pp);
    case 't': return canon_literal(pp, "true");
    case 'f': return canon_literal(pp, "false");
    case 'n': return canon_literal(pp, "null");
    default: return canon_number(pp);
    }
}

bool
doc_canonical(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    return canon_value(&p, 0) && *p == '\0';
}

void
doc_text(es_buf *b, const char *s)
{
    json_t *v;
    char *text;

    if (s == NULL) {
        es_buf_puts(b, "null");
        return;
    }
    if (doc_canonical(s)) {
        es_buf_puts(b, s);
        return;
    }
    /* as before: jansson's reading of it, or the text as a string */
    if ((v = json_loads(s, JSON_DECODE_ANY, NULL)) == NULL) {
        doc_str(b, s);
        return;
    }
    text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(v);
    if (text == NULL) {
        b->failed = true;
        return;
    }
    es_buf_puts(b, text);
    free(text);
}
