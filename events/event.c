/*
 * Validation of writers' input and the feed position's text form.  JSON
 * is checked by es_json_check (json.c), which accepts what PostgreSQL's
 * jsonb accepts, so a checked event never fails inside the append
 * transaction and takes a batch down with it.
 */
#include "event.h"
#include "core_int.h"
#include "json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void
es_position_format(es_position p, char *out)
{
    snprintf(out, ES_POSITION_TEXT_MAX, "%" PRIu64 "-%" PRId64, p.txid, p.gpos);
}

static bool
parse_u64(const char *s, const char *end, uint64_t *out)
{
    uint64_t v = 0;

    if (s == end || end - s > 20)
        return false;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9')
            return false;
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

bool
es_position_parse(const char *s, es_position *p)
{
    const char *dash = strchr(s, '-');
    uint64_t txid, gpos;

    if (dash == NULL || !parse_u64(s, dash, &txid) ||
        !parse_u64(dash + 1, dash + 1 + strlen(dash + 1), &gpos) ||
        gpos > (uint64_t)INT64_MAX)
        return false;
    p->txid = txid;
    p->gpos = (int64_t)gpos;
    return true;
}

int
es_position_cmp(es_position a, es_position b)
{
    if (a.txid != b.txid)
        return a.txid < b.txid ? -1 : 1;
    if (a.gpos != b.gpos)
        return a.gpos < b.gpos ? -1 : 1;
    return 0;
}

int
es__utf8_decode(const unsigned char *p, const unsigned char *end, uint32_t *cp)
{
    unsigned c = *p;
    int extra;
    uint32_t v;

    if (c >= 0xc2 && c <= 0xdf) {
        extra = 1;
        v = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        extra = 2;
        v = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        extra = 3;
        v = c & 0x07;
    } else {
        return 0;
    }
    if (end - p <= extra)
        return 0;
    for (int i = 1; i <= extra; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (p[i] & 0x3f);
    }
    if ((extra == 2 && v < 0x800) || (extra == 3 && v < 0x10000) ||
        (v >= 0xd800 && v <= 0xdfff) || v > 0x10ffff)
        return 0;
    *cp = v;
    return extra + 1;
}

size_t
es_utf8_len(const unsigned char *p, size_t avail)
{
    uint32_t cp;
    int n;

    if (avail == 0)
        return 0;
    if (p[0] < 0x80)
        return 1;
    n = es__utf8_decode(p, p + avail, &cp);
    return n > 0 ? (size_t)n : 0;
}

bool
es_text_printable(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;

    while (p < end) {
        uint32_t cp;
        int len;

        if (*p < 0x80) {
            if (*p < 0x20 || *p == 0x7f)
                return false;
            p++;
            continue;
        }
        /* C1 controls are control characters too */
        if ((len = es__utf8_decode(p, end, &cp)) == 0 || (cp >= 0x80 && cp <= 0x9f))
            return false;
        p += len;
    }
    return true;
}

void
es_text_make_utf8(char *s)
{
    unsigned char *p = (unsigned char *)s, *end = p + strlen(s);

    while (p < end) {
        uint32_t cp;
        int len;

        if (*p < 0x80) {
            p++;
        } else if ((len = es__utf8_decode(p, end, &cp)) > 0) {
            p += len;
        } else if (end - p < 4 && *p >= 0xc2 && *p <= 0xf4) {
            *p = '\0';         /* a sequence cut by truncation */
            return;
        } else {
            *p++ = '?';
        }
    }
}

bool
es_list_contains(const char *list, const char *item)
{
    size_t n = strlen(item);

    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");

        if (len == n && strncasecmp(p, item, n) == 0)
            return true;
        p += len + (p[len] == ',');
    }
    return false;
}

es_status
es_stream_id_check(const char *stream, const char *field, es_error *err)
{
    size_t n;

    if (stream == NULL || stream[0] == '\0')
        return es_error_set(err, ES_EINVALID, "stream_id_empty", field,
                            "stream id is empty");
    n = strlen(stream);
    if (n > ES_STREAM_ID_MAX)
        return es_error_set(err, ES_EINVALID, "stream_id_too_long", field,
                            "stream id is %zu bytes long, at most %d are allowed",
                            n, ES_STREAM_ID_MAX);
    if (!es_text_printable(stream, n))
        return es_error_set(err, ES_EINVALID, "stream_id_invalid", field,
                            "stream id contains a control character or invalid UTF-8");
    return ES_OK;
}

/* Checks that text is one JSON object; what names the member ("data").
 * *stored is the size of the text the store will hold for it. */
static es_status
check_object(const char *text, size_t index, const char *what, size_t *stored, es_error *err)
{
    char field[64];
    size_t offset;
    const char *reason;
    es_json_kind kind;

    snprintf(field, sizeof field, "events[%zu].%s", index, what);
    kind = es_json_check_event(text, strlen(text), stored, &offset, &reason);
    if (kind == ES_JSON_INVALID)
        return es_error_set(err, ES_EINVALID, "invalid_json", field,
                            "%s of event %zu is not valid JSON at byte %zu: %s",
                            what, index, offset, reason);
    if (kind != ES_JSON_OBJECT)
        return es_error_set(err, ES_EINVALID, "not_an_object", field,
                            "%s of event %zu is not a JSON object", what, index);
    return ES_OK;
}

es_status
es_new_event_check(const es_new_event *ev, size_t index, size_t max_size,
                   es_error *err)
{
    char field[64];
    size_t tlen, size, data_size = 0, meta_size = 0;
    es_status st;

    snprintf(field, sizeof field, "events[%zu].type", index);
    if (ev->type == NULL || ev->type[0] == '\0')
        return es_error_set(err, ES_EINVALID, "type_empty", field,
                            "type of event %zu is empty", index);
    tlen = strlen(ev->type);
    if (tlen > ES_TYPE_MAX)
        return es_error_set(err, ES_EINVALID, "type_too_long", field,
                            "type of event %zu is %zu bytes long, at most %d are allowed",
                            index, tlen, ES_TYPE_MAX);
    if (!es_text_printable(ev->type, tlen))
        return es_error_set(err, ES_EINVALID, "type_invalid", field,
                            "type of event %zu contains a control character or invalid UTF-8",
                            index);
    if (ev->event_id != NULL && ev->event_id[0] != '\0' && !es_uuid_valid(ev->event_id)) {
        snprintf(field, sizeof field, "events[%zu].event_id", index);
        return es_error_set(err, ES_EINVALID, "event_id_invalid", field,
                            "event_id of event %zu is not a UUID", index);
    }
    if (ev->schema_version < 0) {
        snprintf(field, sizeof field, "events[%zu].schema_version", index);
        return es_error_set(err, ES_EINVALID, "schema_version_invalid", field,
                            "schema_version of event %zu is %d, it must be at least 1",
                            index, ev->schema_version);
    }
    if (ev->data == NULL) {
        snprintf(field, sizeof field, "events[%zu].data", index);
        return es_error_set(err, ES_EINVALID, "data_missing", field,
                            "data of event %zu is missing", index);
    }
    /* The limit is on what the store holds (and the relay publishes):
     * jsonb's text, which can be far longer than what was sent (1e300 is
     * 301 bytes) or shorter (white space, escapes). */
    if ((st = check_object(ev->data, index, "data", &data_size, err)) != ES_OK)
        return st;
    if (ev->metadata != NULL &&
        (st = check_object(ev->metadata, index, "metadata", &meta_size, err)) != ES_OK)
        return st;
    size = tlen + data_size + meta_size;
    if (size > max_size) {
        snprintf(field, sizeof field, "events[%zu]", index);
        return es_error_set(err, ES_ETOOLARGE, "event_too_large", field,
                            "event %zu would be stored as %zu bytes (type, data and metadata "
                            "as jsonb gives them back), the limit is %zu", index, size, max_size);
    }
    return ES_OK;
}
