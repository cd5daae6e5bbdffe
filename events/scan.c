/*
 * es_feed_event_scan: es-projector's decoder of the events stream's
 * messages, without a jansson tree.  Decoding each message with jansson
 * (a tree of every value, a malloc each) was about half of a catching-up
 * projector's CPU; the projections read only a few top-level members of
 * data, and write the structured ones back as compact JSON text.
 *
 * It handles a subset of JSON on which it is sure to agree with jansson
 * (json_loadb with JSON_REJECT_DUPLICATES, then json_dumps with
 * JSON_COMPACT): strings of valid UTF-8 with only the short escapes
 * (\" \\ \b \f \n \r \t, which json_dumps writes back the same), keys
 * without escapes, integers of up to 18 digits (no "-0", no fraction or
 * exponent), at most SCAN_KEYS_MAX members per object, SCAN_DEPTH_MAX
 * levels.  Everything else - a real, a \u escape, a repeated key, broken
 * JSON, an event missing a member - goes to es_feed_event_decode as it
 * is, so every refusal and its reason stay jansson's, and an event is
 * either decoded here exactly as jansson would read it or by jansson.
 * tests/test_scan.c and tests/fuzz/fuzz_scan.c hold the two side by side.
 */
#include "feed.h"

#include "event.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define SCAN_DEPTH_MAX 32
#define SCAN_KEYS_MAX ES_FEED_FIELDS_MAX
/* Integers of up to 18 digits fit in jansson's json_int_t (long long). */
#define SCAN_DIGITS_MAX 18

typedef struct scan {
    const unsigned char *p, *end;
    char *o, *o_end;            /* the arena: where output goes, its end */
} scan;

typedef struct span {
    const unsigned char *p;
    size_t n;
} span;

static void
ws(scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static bool
at(const scan *s, unsigned char c)
{
    return s->p < s->end && *s->p == c;
}

/* Appends n bytes to the arena (false when it would not fit: the caller
 * leaves the message to jansson). */
static bool
put(scan *s, const void *d, size_t n)
{
    if ((size_t)(s->o_end - s->o) < n)
        return false;
    memcpy(s->o, d, n);
    s->o += n;
    return true;
}

/* A string at s->p ('"'): *whole is its text with the quotes, *escaped
 * whether it has an escape. */
static bool
string(scan *s, span *whole, bool *escaped)
{
    const unsigned char *start = s->p, *p = s->p + 1;

    *escaped = false;
    for (;;) {
        size_t n;

        if (p >= s->end)
            return false;
        if (*p == '"')
            break;
        if (*p == '\\') {
            if (p + 1 >= s->end || memchr("\"\\bfnrt", p[1], 7) == NULL)
                return false;
            *escaped = true;
            p += 2;
            continue;
        }
        if (*p < 0x20 || (n = es_utf8_len(p, (size_t)(s->end - p))) == 0)
            return false;
        p += n;
    }
    s->p = p + 1;
    *whole = (span){start, (size_t)(s->p - start)};
    return true;
}

/* An integer as jansson writes one back: no leading zero, no "-0",
 * within SCAN_DIGITS_MAX digits; a fraction or an exponent is not. */
static bool
number(scan *s, span *text)
{
    const unsigned char *start = s->p, *p = s->p, *d;

    if (*p == '-')
        p++;
    d = p;
    if (p < s->end && *p == '0') {
        if (d != start)
            return false;       /* -0 is written back as 0 */
        p++;
    } else {
        while (p < s->end && *p >= '0' && *p <= '9')
            p++;
        if (p == d || p - d > SCAN_DIGITS_MAX)
            return false;
    }
    if (p < s->end && (*p == '.' || *p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9')))
        return false;
    s->p = p;
    *text = (span){start, (size_t)(p - start)};
    return true;
}

static bool
literal(scan *s, const char *word, span *text)
{
    size_t n = strlen(word);

    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return false;
    *text = (span){s->p, n};
    s->p += n;
    return true;
}

/* A key (no escapes) not seen before in its object (keys[*nkeys]). */
static bool
key(scan *s, span *keys, size_t *nkeys, span *k)
{
    bool escaped;
    size_t i;

    if (!at(s, '"') || !string(s, k, &escaped) || escaped || *nkeys == SCAN_KEYS_MAX)
        return false;
    for (i = 0; i < *nkeys; i++)
        if (keys[i].n == k->n && memcmp(keys[i].p, k->p, k->n) == 0)
            return false;       /* jansson refuses it (JSON_REJECT_DUPLICATES) */
    keys[(*nkeys)++] = *k;
    return true;
}

/* At an object's '{': consumes it and the spaces after; true when the
 * object is empty (its '}' consumed too). */
static bool
object_open(scan *s)
{
    s->p++;
    ws(s);
    if (!at(s, '}'))
        return false;
    s->p++;
    return true;
}

/* After a member's key: the ':' and the spaces around it. */
static bool
colon(scan *s)
{
    ws(s);
    if (!at(s, ':'))
        return false;
    s->p++;
    ws(s);
    return true;
}

/* After a member or element: 1 when close ends the object or array, 0
 * after a ',' (another must follow: no trailing comma, as jansson), -1
 * for anything else; what it read is consumed, with the spaces after. */
static int
next_member(scan *s, unsigned char close)
{
    ws(s);
    if (at(s, close)) {
        s->p++;
        return 1;
    }
    if (!at(s, ','))
        return -1;
    s->p++;
    ws(s);
    return 0;
}

/* One value, written to the arena in compact form when out (the bytes
 * json_dumps(JSON_COMPACT) gives for jansson's reading of it). */
static bool
value(scan *s, int depth, bool out)
{
    span t, keys[SCAN_KEYS_MAX];
    size_t nkeys = 0;
    bool escaped;

    if (depth > SCAN_DEPTH_MAX || s->p >= s->end)
        return false;
    switch (*s->p) {
    case '{':
    case '[': {
        bool obj = *s->p == '{';
        char close = obj ? '}' : ']';

        if (out && !put(s, s->p, 1))
            return false;
        s->p++;
        ws(s);
        if (at(s, (unsigned char)close)) {
            s->p++;
            return !out || put(s, &close, 1);
        }
        for (;;) {
            int end;

            if (obj && (!key(s, keys, &nkeys, &t) || (out && !put(s, t.p, t.n)) || !colon(s) ||
                        (out && !put(s, ":", 1))))
                return false;
            if (!value(s, depth + 1, out) || (end = next_member(s, (unsigned char)close)) < 0 ||
                (out && !put(s, end ? &close : ",", 1)))
                return false;
            if (end)
                return true;
        }
    }
    case '"':
        if (!string(s, &t, &escaped))
            return false;
        break;
    case 't':
        if (!literal(s, "true", &t))
            return false;
        break;
    case 'f':
        if (!literal(s, "false", &t))
            return false;
        break;
    case 'n':
        if (!literal(s, "null", &t))
            return false;
        break;
    default:
        if (*s->p != '-' && !(*s->p >= '0' && *s->p <= '9'))
            return false;
        if (!number(s, &t))
            return false;
    }
    return !out || put(s, t.p, t.n);
}

/* A string's value into the arena, escapes decoded, NUL-terminated. */
static bool
string_value(scan *s, const char **str, size_t *len)
{
    span t;
    bool escaped;
    char *o = s->o;

    if (!at(s, '"') || !string(s, &t, &escaped) || !put(s, t.p + 1, t.n - 2))
        return false;
    *len = escaped ? es_json_unescape(o, t.n - 2) : t.n - 2;
    s->o = o + *len;
    if (!put(s, "", 1))
        return false;
    *str = o;
    return true;
}

/* A key into the arena, NUL-terminated. */
static bool
key_value(scan *s, span *keys, size_t *nkeys, const char **k)
{
    span t;
    char *o = s->o;

    if (!key(s, keys, nkeys, &t) || !put(s, t.p + 1, t.n - 2) || !put(s, "", 1))
        return false;
    *k = o;
    return true;
}

/* One member's value of data, into f. */
static bool
field(scan *s, es_feed_field *f)
{
    es_feed_value *v = &f->v;
    char digits[SCAN_DIGITS_MAX + 2];
    span t;

    memset(v, 0, sizeof *v);
    if (s->p >= s->end)
        return false;
    switch (*s->p) {
    case '"':
        v->kind = ES_FEED_STRING;
        return string_value(s, &v->str, &v->len);
    case '{':
    case '[':
        v->kind = *s->p == '{' ? ES_FEED_OBJECT : ES_FEED_ARRAY;
        v->json = s->o;
        return value(s, 2, true) && put(s, "", 1);
    case 't':
        v->kind = ES_FEED_TRUE;
        return literal(s, "true", &t);
    case 'f':
        v->kind = ES_FEED_FALSE;
        return literal(s, "false", &t);
    case 'n':
        v->kind = ES_FEED_NULL;
        return literal(s, "null", &t);
    default:
        if (*s->p != '-' && !(*s->p >= '0' && *s->p <= '9'))
            return false;
        if (!number(s, &t))
            return false;
        memcpy(digits, t.p, t.n);
        digits[t.n] = '\0';
        v->kind = ES_FEED_INTEGER;
        v->num = strtoll(digits, NULL, 10);
        return true;
    }
}

/* data's members into out->fields_. */
static bool
data_object(scan *s, es_feed_event *out)
{
    span keys[SCAN_KEYS_MAX];
    size_t nkeys = 0;

    if (object_open(s))
        return true;
    for (;;) {
        es_feed_field *f = &out->fields_[out->nfields_];
        int end;

        if (!key_value(s, keys, &nkeys, &f->key) || !colon(s) || !field(s, f))
            return false;
        out->nfields_++;
        if ((end = next_member(s, '}')) != 0)
            return end > 0;
    }
}

/* metadata: only its trace_id is kept. */
static bool
metadata(scan *s, es_feed_event *out)
{
    span keys[SCAN_KEYS_MAX], k;
    size_t nkeys = 0, len;

    if (object_open(s))
        return true;
    for (;;) {
        int end;

        if (!key(s, keys, &nkeys, &k) || !colon(s))
            return false;
        if (k.n == 10 && memcmp(k.p, "\"trace_id\"", 10) == 0 && at(s, '"')) {
            if (!string_value(s, &out->trace_id, &len))
                return false;
        } else if (!value(s, 2, false)) {
            return false;
        }
        if ((end = next_member(s, '}')) != 0)
            return end > 0;
    }
}

static bool
is_key(span k, const char *name)
{
    size_t n = strlen(name);

    return k.n == n + 2 && memcmp(k.p + 1, name, n) == 0;
}

/* The envelope: true when the whole message is in the subset and has
 * every member an event needs, of the right type. */
static bool
envelope(scan *s, es_feed_event *out)
{
    span keys[SCAN_KEYS_MAX], k;
    size_t nkeys = 0, len;
    const char *position = NULL;
    bool data = false;

    ws(s);
    if (!at(s, '{') || object_open(s))
        return false;               /* not an object, or none of the members an event needs */
    for (int end = 0; !end;) {
        const char **str = NULL;

        if (!key(s, keys, &nkeys, &k) || !colon(s))
            return false;
        if (is_key(k, "stream"))
            str = &out->stream;
        else if (is_key(k, "type"))
            str = &out->type;
        else if (is_key(k, "event_id"))
            str = &out->event_id;
        else if (is_key(k, "recorded_at"))
            str = &out->recorded_at;
        else if (is_key(k, "position"))
            str = &position;
        if (str != NULL && at(s, '"')) {
            if (!string_value(s, str, &len))
                return false;
        } else if (is_key(k, "data") && at(s, '{')) {
            if (!data_object(s, out))
                return false;
            data = true;
        } else if (is_key(k, "metadata") && at(s, '{')) {
            if (!metadata(s, out))
                return false;
        } else if (!value(s, 1, false)) {
            return false;
        }
        if ((end = next_member(s, '}')) < 0)
            return false;
    }
    ws(s);
    if (s->p != s->end)
        return false;
    /* es_feed_event_decode's checks; a failure is left to it, which says
     * why in its own words */
    if (position == NULL || out->stream == NULL || out->type == NULL ||
        out->event_id == NULL || out->recorded_at == NULL || !data)
        return false;
    {
        es_position p;

        if (!es_position_parse(position, &p))
            return false;
        es_position_format(p, out->position);
    }
    out->category_end = strchr(out->stream, '-');
    return true;
}

es_status
es_feed_event_scan(const char *body, size_t len, uint64_t seq, es_feed_event *out,
                   es_error *err)
{
    size_t fields = sizeof(es_feed_field) * ES_FEED_FIELDS_MAX;
    scan s;

    memset(out, 0, sizeof *out);
    out->seq = seq;
    /* What the arena gets is never longer than the message: each member
     * "k": v of data gives k and the value, each NUL where a quote or
     * more was; put() checks it anyway. */
    if (len < SIZE_MAX / 2 && (out->arena_ = malloc(fields + len + 64)) != NULL) {
        out->fields_ = (es_feed_field *)(void *)out->arena_;
        s = (scan){(const unsigned char *)body, (const unsigned char *)body + len,
                   out->arena_ + fields, out->arena_ + fields + len + 64};
        if (envelope(&s, out))
            return ES_OK;
    }
    es_feed_event_free(out);
    return es_feed_event_decode(body, len, seq, out, err);
}
