/*
 * es_json_check: a recursive-descent recogniser over a byte range.  It
 * builds nothing; each function advances a cursor or records where and
 * why the text is wrong.  Recursion is bounded by ES_JSON_DEPTH_MAX.
 */
#include "json.h"
#include "core_int.h"

#include "event.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct cur {
    const unsigned char *p, *end, *start;
    const char *reason;
    const unsigned char *at;
    size_t out;                 /* bytes of jsonb's text of what is read so far */
    bool readable;              /* numbers also within what jansson decodes */
} cur;

static bool
fail(cur *c, const unsigned char *at, const char *reason)
{
    if (c->reason == NULL) {
        c->reason = reason;
        c->at = at;
    }
    return false;
}

static void
skip_ws(cur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int
hex4(const unsigned char *p)
{
    int v = 0;

    for (int i = 0; i < 4; i++) {
        int d;
        if (p[i] >= '0' && p[i] <= '9')
            d = p[i] - '0';
        else if (p[i] >= 'a' && p[i] <= 'f')
            d = p[i] - 'a' + 10;
        else if (p[i] >= 'A' && p[i] <= 'F')
            d = p[i] - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* One UTF-8 sequence at c->p (first byte >= 0x80). */
static bool
utf8(cur *c)
{
    uint32_t cp;
    int len = es__utf8_decode(c->p, c->end, &cp);

    if (len == 0)
        return fail(c, c->p, "invalid UTF-8");
    c->p += len;
    return true;
}

/* Bytes jsonb's text takes for the character cp (what it escapes:
 * '"', '\\' and the control characters). */
static size_t
char_out(uint32_t cp)
{
    if (cp == '"' || cp == '\\' || cp == '\b' || cp == '\f' || cp == '\n' || cp == '\r' ||
        cp == '\t')
        return 2;
    if (cp < 0x20)
        return 6;               /* \u00XX */
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

static bool
string(cur *c)
{
    const unsigned char *s;

    c->p++;     /* opening quote */
    c->out += 2;
    while (c->p < c->end) {
        unsigned b = *c->p;

        if (b == '"') {
            c->p++;
            return true;
        }
        if (b < 0x20)
            return fail(c, c->p, "control character in string");
        if (b >= 0x80) {
            s = c->p;
            if (!utf8(c))
                return false;
            c->out += (size_t)(c->p - s);
            continue;
        }
        if (b != '\\') {
            c->out += char_out(b);
            c->p++;
            continue;
        }
        if (c->end - c->p < 2)
            break;
        switch (c->p[1]) {
        case '"': case '\\': case 'b': case 'f': case 'n': case 'r': case 't':
            c->out += 2;
            c->p += 2;
            continue;
        case '/':
            c->out += 1;
            c->p += 2;
            continue;
        case 'u': {
            int u;

            if (c->end - c->p < 6 || (u = hex4(c->p + 2)) < 0)
                return fail(c, c->p, "invalid \\u escape");
            if (u == 0)
                return fail(c, c->p, "\\u0000 is not allowed");
            if (u >= 0xdc00 && u <= 0xdfff)
                return fail(c, c->p, "unpaired low surrogate");
            if (u >= 0xd800 && u <= 0xdbff) {
                int lo;
                if (c->end - c->p < 12 || c->p[6] != '\\' || c->p[7] != 'u' ||
                    (lo = hex4(c->p + 8)) < 0 || lo < 0xdc00 || lo > 0xdfff)
                    return fail(c, c->p, "unpaired high surrogate");
                c->out += 4;
                c->p += 12;
            } else {
                c->out += char_out((uint32_t)u);
                c->p += 6;
            }
            continue;
        }
        default:
            return fail(c, c->p, "invalid escape");
        }
    }
    return fail(c, c->end, "unterminated string");
}

/* Counts the digits at the cursor and moves past them. */
static long
digits(cur *c)
{
    const unsigned char *s = c->p;

    while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
        c->p++;
    return (long)(c->p - s);
}

/*
 * A number, also checked against the range of PostgreSQL's numeric, which
 * jsonb stores numbers in: at most ES_JSON_SCALE_MAX digits after the
 * point once the exponent is applied, and a decimal weight (the power of
 * ten of the first significant digit) below ES_JSON_WEIGHT_LIMIT.
 */
/*
 * The first n significant digits of the number text [s, end) (its integer
 * digits, then its fraction's, leading zeros skipped; up to an exponent),
 * '0'-padded, NUL-terminated in out; true when a nonzero digit follows.
 */
static bool
significant(const unsigned char *s, const unsigned char *end, char *out, size_t n)
{
    size_t k = 0;
    bool more = false, started = false;

    for (; s < end && *s != 'e' && *s != 'E'; s++) {
        if (*s < '0' || *s > '9' || (!started && *s == '0'))
            continue;
        started = true;
        if (k < n)
            out[k++] = (char)*s;
        else if (*s != '0')
            more = true;
    }
    while (k < n)
        out[k++] = '0';
    out[n] = '\0';
    return more;
}

/*
 * Whether the readers (jansson, in every daemon) decode the number the
 * store gives back for the text [s, end): weight is the power of ten of
 * its first significant digit, real whether jsonb's text of it has a
 * fraction.  jsonb writes numbers without an exponent, so 1e30 comes back
 * as a 31-digit integer, which must fit 64 bits; a number with a fraction
 * is read as a double, which must not overflow.
 */
static bool
readable(const unsigned char *s, const unsigned char *end, long weight, bool real)
{
    char d[24];

    if (!real) {
        if (weight != 18)
            return weight < 18;
        significant(s, end, d, 19);
        return strcmp(d, *s == '-' ? "9223372036854775808" : "9223372036854775807") <= 0;
    }
    if (weight != 308)
        return weight < 308;
    if (significant(s, end, d, 17))
        return strcmp(d, "17976931348623157") < 0;
    return strcmp(d, "17976931348623157") <= 0;
}

static bool
number(cur *c)
{
    const unsigned char *s = c->p;
    long ints = 0, fracs = 0, lead_zeros = 0, exp = 0, weight;
    bool nonzero = false;

    if (*c->p == '-')
        c->p++;
    if (c->p < c->end && *c->p == '0') {
        c->p++;                         /* ints stays 0: no significant digit */
    } else if ((ints = digits(c)) == 0) {
        return fail(c, s, "invalid number");
    } else {
        nonzero = true;
    }
    if (c->p < c->end && *c->p == '.') {
        const unsigned char *f = ++c->p;
        if ((fracs = digits(c)) == 0)
            return fail(c, s, "invalid number");
        if (!nonzero) {
            while (f < c->p && *f == '0')
                f++, lead_zeros++;
            nonzero = f < c->p;
        }
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        bool neg = false;
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            neg = *c->p++ == '-';
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return fail(c, s, "invalid number");
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (exp < 100000000000L)
                exp = exp * 10 + (*c->p - '0');
            c->p++;
        }
        /* numeric refuses such exponents even on zero */
        if (exp >= ES_JSON_EXPONENT_LIMIT)
            return fail(c, s, "number out of range");
        if (neg)
            exp = -exp;
    }
    if (c->p < c->end && ((*c->p >= '0' && *c->p <= '9') || *c->p == '.' ||
                          *c->p == '-' || *c->p == '+'))
        return fail(c, c->p, "invalid number");
    if (fracs - exp > ES_JSON_SCALE_MAX)
        return fail(c, s, "number out of range");
    weight = (ints > 0 ? ints - 1 : -(lead_zeros + 1)) + exp;
    if (nonzero && weight >= ES_JSON_WEIGHT_LIMIT)
        return fail(c, s, "number out of range");
    if (c->readable && nonzero && !readable(s, c->p, weight, fracs - exp > 0))
        return fail(c, s, "number out of range: stored, it would be beyond a 64-bit integer "
                          "(or a double, with a fraction), which no reader decodes");
    /* numeric's text: no exponent, the input's scale less the exponent
     * (1.5e1 is "15", 1e-2 "0.01", 100e-1 "10.0"), no negative zero */
    c->out += (size_t)(nonzero && *s == '-') + (size_t)(nonzero && weight >= 0 ? weight + 1 : 1) +
              (size_t)(fracs - exp > 0 ? 1 + fracs - exp : 0);
    return true;
}

static bool
literal(cur *c, const char *word, size_t n)
{
    if ((size_t)(c->end - c->p) < n)
        return fail(c, c->p, "unexpected end of text");
    for (size_t i = 0; i < n; i++)
        if (c->p[i] != (unsigned char)word[i])
            return fail(c, c->p, "invalid literal");
    c->p += n;
    c->out += n;
    return true;
}

static bool value(cur *c, int depth);

/*
 * An object or an array at c->p ('{' or '[').  With fn, each member or
 * element is reported as soon as it is recognised (es_json_members and
 * es_json_elements); the recogniser passes NULL.
 */
static bool
container(cur *c, int depth, bool object, es_json_visit fn, void *ctx)
{
    unsigned char close = object ? '}' : ']';
    size_t index = 0;

    c->p++;
    c->out += 2;
    skip_ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return true;
    }
    for (size_t n = 0;; n++) {
        es_json_slice key = {NULL, 0}, val;
        const unsigned char *v;

        /* jsonb's text: ", " between members, ": " after a key */
        c->out += (n > 0 ? 2 : 0) + (object ? 2 : 0);
        skip_ws(c);
        if (object) {
            const unsigned char *k = c->p;

            if (c->p >= c->end || *c->p != '"')
                return fail(c, c->p, "expected a string as object key");
            if (!string(c))
                return false;
            key.text = (const char *)k + 1;
            key.len = (size_t)(c->p - k) - 2;
            skip_ws(c);
            if (c->p >= c->end || *c->p != ':')
                return fail(c, c->p, "expected ':' after object key");
            c->p++;
            skip_ws(c);
        }
        v = c->p;
        if (!value(c, depth + 1))
            return false;
        if (fn != NULL) {
            val.text = (const char *)v;
            val.len = (size_t)(c->p - v);
            if (!fn(ctx, index++, key, val))
                return false;
        }
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->end && *c->p == close) {
            c->p++;
            return true;
        }
        return fail(c, c->p, object ? "expected ',' or '}' in object"
                                    : "expected ',' or ']' in array");
    }
}

static bool
value(cur *c, int depth)
{
    if (depth > ES_JSON_DEPTH_MAX)
        return fail(c, c->p, "nested too deeply");
    skip_ws(c);
    if (c->p >= c->end)
        return fail(c, c->p, "unexpected end of text");
    switch (*c->p) {
    case '{': return container(c, depth, true, NULL, NULL);
    case '[': return container(c, depth, false, NULL, NULL);
    case '"': return string(c);
    case 't': return literal(c, "true", 4);
    case 'f': return literal(c, "false", 5);
    case 'n': return literal(c, "null", 4);
    default:
        if (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))
            return number(c);
        return fail(c, c->p, "unexpected character");
    }
}

es_json_kind
es_json_check(const char *text, size_t len, size_t *offset, const char **reason)
{
    return es_json_check_stored(text, len, NULL, offset, reason);
}

static es_json_kind
check(const char *text, size_t len, bool readable_numbers, size_t *stored, size_t *offset,
      const char **reason)
{
    cur c = {0};
    es_json_kind kind = ES_JSON_INVALID;
    const unsigned char *first;

    c.readable = readable_numbers;
    c.start = c.p = (const unsigned char *)text;
    c.end = c.p + len;
    c.reason = NULL;
    c.at = NULL;
    c.out = 0;
    skip_ws(&c);
    first = c.p;
    if (value(&c, 1)) {
        skip_ws(&c);
        if (c.p != c.end) {
            fail(&c, c.p, "text after the JSON value");
        } else {
            switch (*first) {
            case '{': kind = ES_JSON_OBJECT; break;
            case '[': kind = ES_JSON_ARRAY; break;
            case '"': kind = ES_JSON_STRING; break;
            case 't': case 'f': case 'n': kind = ES_JSON_LITERAL; break;
            default: kind = ES_JSON_NUMBER; break;
            }
        }
    }
    if (kind == ES_JSON_INVALID) {
        if (offset)
            *offset = (size_t)(c.at - c.start);
        if (reason)
            *reason = c.reason;
    }
    if (stored)
        *stored = kind == ES_JSON_INVALID ? 0 : c.out;
    return kind;
}

es_json_kind
es_json_check_stored(const char *text, size_t len, size_t *stored, size_t *offset,
                     const char **reason)
{
    return check(text, len, false, stored, offset, reason);
}

es_json_kind
es_json_check_event(const char *text, size_t len, size_t *stored, size_t *offset,
                    const char **reason)
{
    return check(text, len, true, stored, offset, reason);
}

/* ---- walking a checked text ------------------------------------------- */

/* Walks the members (object) or elements (array) of a checked container. */
static bool
walk(const char *text, size_t len, bool object, es_json_visit fn, void *ctx)
{
    cur c = {0};

    c.start = c.p = (const unsigned char *)text;
    c.end = c.p + len;
    skip_ws(&c);
    if (c.p >= c.end || *c.p != (object ? '{' : '['))
        return false;
    return container(&c, 1, object, fn, ctx);
}

bool
es_json_members(const char *text, size_t len, es_json_visit fn, void *ctx)
{
    return walk(text, len, true, fn, ctx);
}

bool
es_json_elements(const char *text, size_t len, es_json_visit fn, void *ctx)
{
    return walk(text, len, false, fn, ctx);
}

static void
put_utf8(unsigned char **o, uint32_t cp)
{
    unsigned char *p = *o;

    if (cp < 0x80) {
        *p++ = (unsigned char)cp;
    } else if (cp < 0x800) {
        *p++ = (unsigned char)(0xc0 | cp >> 6);
        *p++ = (unsigned char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *p++ = (unsigned char)(0xe0 | cp >> 12);
        *p++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        *p++ = (unsigned char)(0x80 | (cp & 0x3f));
    } else {
        *p++ = (unsigned char)(0xf0 | cp >> 18);
        *p++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        *p++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        *p++ = (unsigned char)(0x80 | (cp & 0x3f));
    }
    *o = p;
}

size_t
es_json_unescape(char *s, size_t len)
{
    unsigned char *in = (unsigned char *)s, *end = in + len, *o = in;

    while (in < end) {
        if (*in != '\\') {
            *o++ = *in++;
            continue;
        }
        switch (in[1]) {
        case 'b': *o++ = '\b'; in += 2; break;
        case 'f': *o++ = '\f'; in += 2; break;
        case 'n': *o++ = '\n'; in += 2; break;
        case 'r': *o++ = '\r'; in += 2; break;
        case 't': *o++ = '\t'; in += 2; break;
        case 'u': {
            uint32_t cp = (uint32_t)hex4(in + 2);
            in += 6;
            if (cp >= 0xd800 && cp <= 0xdbff) {     /* checked: a pair follows */
                cp = 0x10000 + ((cp - 0xd800) << 10) + ((uint32_t)hex4(in + 2) - 0xdc00);
                in += 6;
            }
            put_utf8(&o, cp);
            break;
        }
        default: *o++ = in[1]; in += 2; break;       /* " \ / */
        }
    }
    return (size_t)(o - (unsigned char *)s);
}
