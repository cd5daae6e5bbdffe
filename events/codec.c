/*
 * JSON codec of events and append bodies (see codec.h).  Encoding writes
 * text directly, since stored data is already valid JSON.  An append body
 * is checked once by es_json_check and then walked as slices of one copy:
 * event data is stored byte for byte as the client sent it (a detour
 * through a JSON library would round numbers such as 1.000000000000000000001
 * and refuse integers past 64 bits, which jsonb keeps exactly).
 */
#include "codec.h"

#include "json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void
es_event_encode(es_buf *out, const es_event *e, bool with_stream)
{
    char pos[ES_POSITION_TEXT_MAX];

    es_position_format(e->position, pos);
    es_buf_puts(out, "{");
    if (with_stream) {
        es_buf_puts(out, "\"stream\":");
        es_buf_json_string(out, e->stream_id);
        es_buf_puts(out, ",");
    }
    es_buf_printf(out, "\"event_id\":\"%s\",\"type\":", e->event_id);
    es_buf_json_string(out, e->type);
    es_buf_printf(out, ",\"version\":%" PRId64 ",\"position\":\"%s\",\"schema_version\":%d,"
                       "\"data\":", e->version, pos, e->schema_version);
    es_buf_puts(out, e->data);
    es_buf_puts(out, ",\"metadata\":");
    es_buf_puts(out, e->metadata);
    es_buf_puts(out, ",\"recorded_at\":");
    es_buf_json_string(out, e->recorded_at);
    es_buf_puts(out, "}");
}

es_status
es_json_parse_object(const char *text, size_t len, json_t **out, es_error *err)
{
    json_error_t jerr;

    *out = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (*out == NULL)
        return es_error_set(err, ES_EINVALID, "invalid_json", NULL,
                            "request body is not valid JSON at byte %d: %s", jerr.position,
                            jerr.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return es_error_set(err, ES_EINVALID, "not_an_object", NULL,
                            "request body must be a JSON object");
    }
    return ES_OK;
}

void
es_append_body_free(es_append_body *b)
{
    free(b->events);
    free(b->copy_);
    memset(b, 0, sizeof *b);
}

/* A slice's place in the copy, so it can be edited after the walk. */
typedef struct span {
    char *text;
    size_t len;
    bool set;
} span;

typedef struct event_spans {
    span id, type, data, meta, schema;
} event_spans;

typedef struct walk_ctx {
    es_error *err;
    es_status st;
    span expected, events;
    event_spans *ev;            /* the event being walked */
    size_t index;               /* its index */
    event_spans *all;
    size_t count;
} walk_ctx;

static bool
key_is(es_json_slice key, const char *name)
{
    return key.len == strlen(name) && memcmp(key.text, name, key.len) == 0;
}

/* Records a member's value; a second one of the same name is refused
 * (the field is named then: events[<event>].<name>, or <name> at the top
 * when event is -1). */
static bool
take(walk_ctx *w, span *sp, es_json_slice v, long event, const char *name)
{
    char field[64];

    if (sp->set) {
        if (event < 0)
            snprintf(field, sizeof field, "%s", name);
        else
            snprintf(field, sizeof field, "events[%ld].%s", event, name);
        w->st = es_error_set(w->err, ES_EINVALID, "duplicate_member", field,
                             "%s is given twice", field);
        return false;
    }
    sp->text = (char *)v.text;
    sp->len = v.len;
    sp->set = true;
    return true;
}

static bool
visit_top(void *ctx, size_t index, es_json_slice key, es_json_slice v)
{
    walk_ctx *w = ctx;

    (void)index;
    if (key_is(key, "expected_version"))
        return take(w, &w->expected, v, -1, "expected_version");
    if (key_is(key, "events"))
        return take(w, &w->events, v, -1, "events");
    return true;
}

static bool
count_element(void *ctx, size_t index, es_json_slice key, es_json_slice v)
{
    (void)key;
    (void)v;
    ((walk_ctx *)ctx)->count = index + 1;
    return index < ES_APPEND_EVENTS_MAX;
}

static bool
visit_event_member(void *ctx, size_t index, es_json_slice key, es_json_slice v)
{
    walk_ctx *w = ctx;
    long e = (long)w->index;

    (void)index;
    if (key_is(key, "event_id"))
        return take(w, &w->ev->id, v, e, "event_id");
    if (key_is(key, "type"))
        return take(w, &w->ev->type, v, e, "type");
    if (key_is(key, "data"))
        return take(w, &w->ev->data, v, e, "data");
    if (key_is(key, "metadata"))
        return take(w, &w->ev->meta, v, e, "metadata");
    if (key_is(key, "schema_version"))
        return take(w, &w->ev->schema, v, e, "schema_version");
    return true;
}

static bool
visit_event(void *ctx, size_t index, es_json_slice key, es_json_slice v)
{
    walk_ctx *w = ctx;

    (void)key;
    if (v.text[0] != '{') {
        char field[64];
        snprintf(field, sizeof field, "events[%zu]", index);
        w->st = es_error_set(w->err, ES_EINVALID, "field_type", field, "%s must be an object", field);
        return false;
    }
    w->index = index;
    w->ev = &w->all[index];
    return es_json_members(v.text, v.len, visit_event_member, w);
}

static bool
is_null(const span *sp)
{
    return !sp->set || (sp->len == 4 && memcmp(sp->text, "null", 4) == 0);
}

/* An integer literal in [min, max]: digits only (no fraction, exponent). */
static bool
integer(const span *sp, int64_t min, int64_t max, int64_t *out)
{
    char buf[24], *end;
    long long n;

    if (sp->len == 0 || sp->len >= sizeof buf || strspn(sp->text, "-0123456789") < sp->len)
        return false;
    memcpy(buf, sp->text, sp->len);
    buf[sp->len] = '\0';
    errno = 0;
    n = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0' || n < min || n > max)
        return false;
    *out = n;
    return true;
}

static void
finish_string(span *sp)
{
    size_t n = es_json_unescape(sp->text + 1, sp->len - 2);

    sp->text[1 + n] = '\0';
    sp->text++;
    sp->len = n;
}

es_status
es_append_body_decode(const char *text, size_t len, es_append_body *b, es_error *err)
{
    walk_ctx w;
    size_t offset, i;
    const char *reason;
    es_json_kind kind;
    es_status st = ES_OK;

    memset(b, 0, sizeof *b);
    memset(&w, 0, sizeof w);
    w.err = err;
    kind = es_json_check(text, len, &offset, &reason);
    if (kind == ES_JSON_INVALID)
        return es_error_set(err, ES_EINVALID, "invalid_json", NULL,
                            "request body is not valid JSON at byte %zu: %s", offset, reason);
    if (kind != ES_JSON_OBJECT)
        return es_error_set(err, ES_EINVALID, "not_an_object", NULL,
                            "request body must be a JSON object");
    if ((b->copy_ = malloc(len + 1)) == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    memcpy(b->copy_, text, len);
    b->copy_[len] = '\0';
    if (!es_json_members(b->copy_, len, visit_top, &w)) {
        /* a walk that stops without saying why must not pass for an empty body */
        st = w.st != ES_OK ? w.st
                           : es_error_set(err, ES_EINTERNAL, "body_walk_failed", NULL,
                                          "the request body could not be walked");
        goto fail;
    }

    if (!w.expected.set) {
        st = es_error_set(err, ES_EINVALID, "field_missing", "expected_version",
                          "expected_version is required");
        goto fail;
    }
    if (w.expected.text[0] == '"') {
        static const struct { const char *name; int64_t v; } names[] = {
            {"\"any\"", ES_EXPECT_ANY}, {"\"no_stream\"", ES_EXPECT_NO_STREAM},
            {"\"exists\"", ES_EXPECT_EXISTS}};
        for (i = 0; i < 3; i++)
            if (w.expected.len == strlen(names[i].name) &&
                memcmp(w.expected.text, names[i].name, w.expected.len) == 0)
                break;
        if (i == 3) {
            st = es_error_set(err, ES_EINVALID, "field_type", "expected_version",
                              "expected_version must be a version number, \"any\", \"no_stream\" or \"exists\"");
            goto fail;
        }
        b->expected = names[i].v;
    } else if (!integer(&w.expected, 0, INT64_MAX, &b->expected)) {
        st = es_error_set(err, ES_EINVALID, "field_range", "expected_version",
                          "expected_version must be a version number from 0, or \"any\", \"no_stream\" or \"exists\"");
        goto fail;
    }

    if (!w.events.set || w.events.text[0] != '[') {
        st = es_error_set(err, ES_EINVALID, w.events.set ? "field_type" : "field_missing", "events",
                          w.events.set ? "events must be an array" : "events is required");
        goto fail;
    }
    es_json_elements(w.events.text, w.events.len, count_element, &w);
    if (w.count == 0 || w.count > ES_APPEND_EVENTS_MAX) {
        st = es_error_set(err, ES_EINVALID, "field_range", "events",
                          "an append holds 1 to %d events", ES_APPEND_EVENTS_MAX);
        goto fail;
    }
    b->count = w.count;
    if ((w.all = calloc(b->count, sizeof *w.all)) == NULL ||
        (b->events = calloc(b->count, sizeof *b->events)) == NULL) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        goto fail;
    }
    if (!es_json_elements(w.events.text, w.events.len, visit_event, &w)) {
        st = w.st;
        goto fail;
    }

    /* Every slice is known: check them, then cut them out of the copy
     * (only now: cutting writes NULs the walks would have read). */
    for (i = 0; i < b->count; i++) {
        event_spans *e = &w.all[i];
        const char *member = NULL, *code = NULL, *what = NULL;
        int64_t schema = 1;

        if (!is_null(&e->id) && e->id.text[0] != '"')
            member = "event_id", code = "field_type", what = "must be a string";
        else if (is_null(&e->type))
            member = "type", code = "field_missing", what = "is required";
        else if (e->type.text[0] != '"')
            member = "type", code = "field_type", what = "must be a string";
        else if (!e->data.set)
            member = "data", code = "field_missing", what = "is required";
        else if (e->data.text[0] != '{')
            member = "data", code = "not_an_object", what = "must be a JSON object";
        else if (!is_null(&e->meta) && e->meta.text[0] != '{')
            member = "metadata", code = "not_an_object", what = "must be a JSON object";
        else if (!is_null(&e->schema) && !integer(&e->schema, 1, 1000000, &schema))
            member = "schema_version", code = "field_range", what = "must be an integer from 1";
        if (member != NULL) {
            char field[64];
            snprintf(field, sizeof field, "events[%zu].%s", i, member);
            st = es_error_set(err, ES_EINVALID, code, field, "%s %s", field, what);
            goto fail;
        }
        b->events[i].schema_version = (int)schema;
        b->events[i].event_id = is_null(&e->id) ? NULL : e->id.text;
    }
    for (i = 0; i < b->count; i++) {
        event_spans *e = &w.all[i];

        if (b->events[i].event_id != NULL) {
            finish_string(&e->id);
            b->events[i].event_id = e->id.text;
        }
        finish_string(&e->type);
        b->events[i].type = e->type.text;
        e->data.text[e->data.len] = '\0';
        b->events[i].data = e->data.text;
        if (!is_null(&e->meta)) {
            e->meta.text[e->meta.len] = '\0';
            b->events[i].metadata = e->meta.text;
        }
    }
    free(w.all);
    return ES_OK;
fail:
    free(w.all);
    es_append_body_free(b);
    return st;
}

json_t *
es_error_to_json(const es_error *err)
{
    json_t *e = json_object();

    if (e == NULL)
        return NULL;
    json_object_set_new(e, "code", json_string(err->code[0] ? err->code
                                                             : es_status_code(err->status)));
    json_object_set_new(e, "message", json_string(err->message[0] ? err->message
                                                                   : es_status_text(err->status)));
    if (err->field[0] != '\0')
        json_object_set_new(e, "field", json_string(err->field));
    if (es_error_is(err, ES_CODE_VERSION_CONFLICT))
        json_object_set_new(e, "actual_version", json_integer(err->actual_version));
    return e;
}
