/*
 * W3C traceparent: parsing a caller's header strictly, starting a trace
 * when there is none, and the trace's members in event metadata (see
 * trace.h).  Every byte parsed here comes from outside (an HTTP header, a
 * NATS header, a client's metadata), so nothing is trusted: lengths are
 * checked before each read, and the fuzz target fuzz_trace runs both
 * readers.
 */
#include "trace.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "uuid.h"

static bool
lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool
all_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != '0')
            return false;
    return true;
}

static unsigned
hex_value(char c)
{
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)(c - 'a' + 10);
}

bool
es_trace_id_valid(const char *s)
{
    return s != NULL && strlen(s) == ES_TRACE_ID_LEN && lower_hex(s, ES_TRACE_ID_LEN) &&
           !all_zero(s, ES_TRACE_ID_LEN);
}

bool
es_traceparent_parse(const char *v, size_t len, es_trace *out)
{
    const char *trace, *parent, *flags;

    if (v == NULL)
        return false;
    while (len > 0 && (v[0] == ' ' || v[0] == '\t'))
        v++, len--;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    trace = v + 3, parent = v + 36, flags = v + 53;
    if (len < ES_TRACEPARENT_LEN || !lower_hex(v, 2) || memcmp(v, "ff", 2) == 0 ||
        v[2] != '-' || v[35] != '-' || v[52] != '-')
        return false;
    if (memcmp(v, "00", 2) == 0 ? len != ES_TRACEPARENT_LEN
                                : len > ES_TRACEPARENT_LEN && v[ES_TRACEPARENT_LEN] != '-')
        return false;
    if (!lower_hex(trace, ES_TRACE_ID_LEN) || all_zero(trace, ES_TRACE_ID_LEN) ||
        !lower_hex(parent, ES_SPAN_ID_LEN) || all_zero(parent, ES_SPAN_ID_LEN) ||
        !lower_hex(flags, 2))
        return false;
    memcpy(out->trace_id, trace, ES_TRACE_ID_LEN);
    out->trace_id[ES_TRACE_ID_LEN] = '\0';
    memcpy(out->parent_id, parent, ES_SPAN_ID_LEN);
    out->parent_id[ES_SPAN_ID_LEN] = '\0';
    out->span_id[0] = '\0';
    out->flags = hex_value(flags[0]) << 4 | hex_value(flags[1]);
    return true;
}

/* n random bytes as 2n lower hex digits, never all zero. */
static bool
random_hex(char *out, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char b[16] = {0};
    bool zero = true;

    if (n > sizeof b || !es_random_bytes(b, n))
        return false;
    for (size_t i = 0; i < n; i++)
        zero = zero && b[i] == 0;
    if (zero)
        b[n - 1] = 1;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
    return true;
}

bool
es_trace_begin(es_trace *t, const char *header)
{
    struct timespec ts;
    bool continued = header != NULL && es_traceparent_parse(header, strlen(header), t);

    clock_gettime(CLOCK_REALTIME, &ts);
    t->accepted_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    if (!continued) {
        t->parent_id[0] = '\0';
        t->flags = 1;
        if (!random_hex(t->trace_id, ES_TRACE_ID_LEN / 2)) {
            t->trace_id[0] = t->span_id[0] = '\0';
            return false;
        }
    }
    if (!random_hex(t->span_id, ES_SPAN_ID_LEN / 2)) {
        t->trace_id[0] = t->span_id[0] = '\0';
        return false;
    }
    return continued;
}

void
es_traceparent_format(const es_trace *t, char *out)
{
    if (t->trace_id[0] == '\0' || t->span_id[0] == '\0') {
        out[0] = '\0';
        return;
    }
    snprintf(out, ES_TRACEPARENT_LEN + 1, "00-%.32s-%.16s-%02x", t->trace_id, t->span_id,
             t->flags & 0xff);
}

void
es_trace_metadata(es_buf *b, const es_trace *t, bool first)
{
    char at[40];
    time_t secs;
    struct tm tm;

    if (t->trace_id[0] == '\0')
        return;
    es_buf_printf(b, "%s\"trace_id\":\"%s\",\"span_id\":\"%s\"", first ? "" : ",", t->trace_id,
                  t->span_id);
    if (t->parent_id[0] != '\0')
        es_buf_printf(b, ",\"parent_span_id\":\"%s\"", t->parent_id);
    if (t->accepted_us > 0) {
        secs = (time_t)(t->accepted_us / 1000000);
        gmtime_r(&secs, &tm);
        strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%S", &tm);
        es_buf_printf(b, ",\"accepted_at\":\"%s.%06dZ\"", at, (int)(t->accepted_us % 1000000));
    }
}

/* The string value after the key that ends at s[i] (its closing quote):
 * n lower hex digits copied to dst, or false. */
static bool
member_hex(const char *s, size_t len, size_t i, char *dst, size_t n)
{
    size_t j = i + 1;

    while (j < len && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r'))
        j++;
    if (j >= len || s[j] != ':')
        return false;
    j++;
    while (j < len && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r'))
        j++;
    if (j >= len || s[j] != '"' || len - j < n + 2 || s[j + 1 + n] != '"' ||
        !lower_hex(s + j + 1, n) || all_zero(s + j + 1, n))
        return false;
    memcpy(dst, s + j + 1, n);
    dst[n] = '\0';
    return true;
}

bool
es_trace_from_metadata(const char *s, size_t len, es_trace *out)
{
    int depth = 0;
    bool key = false;      /* the next string at depth 1 is a member's name */

    out->trace_id[0] = out->span_id[0] = out->parent_id[0] = '\0';
    out->flags = 1;
    out->accepted_us = 0;
    for (size_t i = 0; s != NULL && i < len; i++) {
        char c = s[i];

        if (c == '"') {
            size_t start = ++i;

            while (i < len && s[i] != '"')
                i += s[i] == '\\' ? 2 : 1;
            if (i >= len)
                break;
            if (key && depth == 1) {
                size_t n = i - start;

                if (n == 8 && memcmp(s + start, "trace_id", 8) == 0 &&
                    !member_hex(s, len, i, out->trace_id, ES_TRACE_ID_LEN))
                    out->trace_id[0] = '\0';
                else if (n == 7 && memcmp(s + start, "span_id", 7) == 0 &&
                         !member_hex(s, len, i, out->span_id, ES_SPAN_ID_LEN))
                    out->span_id[0] = '\0';
            }
            key = false;
        } else if (c == '{' || c == '[') {
            depth++;
            key = c == '{' && depth == 1;
        } else if (c == '}' || c == ']') {
            depth--;
            key = false;
        } else if (c == ',') {
            key = depth == 1;
        }
    }
    if (out->trace_id[0] == '\0' || out->span_id[0] == '\0') {
        out->trace_id[0] = out->span_id[0] = '\0';
        return false;
    }
    return true;
}
