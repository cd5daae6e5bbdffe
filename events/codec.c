/*
 * JSON codec of events and append bodies (see codec.h).  Encoding writes
 * text directly, since stored data is already valid JSON; decoding goes
 * through jansson, with every member type-checked and named in errors.
 */
#include "codec.h"

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
    for (size_t i = 0; i < b->nowned_; i++)
        free(b->owned_[i]);
    free(b->owned_);
    free(b->events);
    json_decref(b->root_);
    memset(b, 0, sizeof *b);
}

static es_status
expected_version(const json_t *v, int64_t *out, es_error *err)
{
    const char *s;

    if (v == NULL)
        return es_error_set(err, ES_EINVALID, "field_missing", "expected_version",
                            "expected_version is required");
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0)
            return es_error_set(err, ES_EINVALID, "field_range", "expected_version",
                                "expected_version must be at least 0, or \"any\", \"no_stream\" or \"exists\"");
        *out = json_integer_value(v);
        return ES_OK;
    }
    s = json_string_value(v);
    if (s && strcmp(s, "any") == 0)
        *out = ES_EXPECT_ANY;
    else if (s && strcmp(s, "no_stream") == 0)
        *out = ES_EXPECT_NO_STREAM;
    else if (s && strcmp(s, "exists") == 0)
        *out = ES_EXPECT_EXISTS;
    else
        return es_error_set(err, ES_EINVALID, "field_type", "expected_version",
                            "expected_version must be a version number, \"any\", \"no_stream\" or \"exists\"");
    return ES_OK;
}

/* Keeps text (malloc'd) until the body is freed; false on OOM. */
static bool
own(es_append_body *b, char *text)
{
    if (text == NULL)
        return false;
    b->owned_[b->nowned_++] = text;
    return true;
}

es_status
es_append_body_decode(const char *text, size_t len, es_append_body *b, es_error *err)
{
    const json_t *events, *ev;
    size_t i;
    es_status st;

    memset(b, 0, sizeof *b);
    if ((st = es_json_parse_object(text, len, &b->root_, err)) != ES_OK)
        return st;
    if ((st = expected_version(json_object_get(b->root_, "expected_version"), &b->expected, err)) != ES_OK)
        goto fail;
    events = json_object_get(b->root_, "events");
    if (!json_is_array(events)) {
        st = es_error_set(err, ES_EINVALID, events ? "field_type" : "field_missing", "events",
                          events ? "events must be an array" : "events is required");
        goto fail;
    }
    if (json_array_size(events) == 0 || json_array_size(events) > ES_APPEND_EVENTS_MAX) {
        st = es_error_set(err, ES_EINVALID, "field_range", "events",
                          "an append holds 1 to %d events, not %zu", ES_APPEND_EVENTS_MAX,
                          json_array_size(events));
        goto fail;
    }
    b->count = json_array_size(events);
    if ((b->events = calloc(b->count, sizeof *b->events)) == NULL ||
        (b->owned_ = calloc(2 * b->count, sizeof *b->owned_)) == NULL) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        goto fail;
    }
    json_array_foreach(events, i, ev) {
        char field[64];
        const json_t *id, *type, *data, *meta, *schema;
        es_new_event *e = &b->events[i];

        snprintf(field, sizeof field, "events[%zu]", i);
        if (!json_is_object(ev)) {
            st = es_error_set(err, ES_EINVALID, "field_type", field, "%s must be an object", field);
            goto fail;
        }
        id = json_object_get(ev, "event_id");
        type = json_object_get(ev, "type");
        data = json_object_get(ev, "data");
        meta = json_object_get(ev, "metadata");
        schema = json_object_get(ev, "schema_version");
        if (id != NULL && !json_is_null(id) && !json_is_string(id)) {
            snprintf(field, sizeof field, "events[%zu].event_id", i);
            st = es_error_set(err, ES_EINVALID, "field_type", field, "%s must be a string", field);
            goto fail;
        }
        if (!json_is_string(type)) {
            snprintf(field, sizeof field, "events[%zu].type", i);
            st = es_error_set(err, ES_EINVALID, type ? "field_type" : "field_missing", field,
                              type ? "%s must be a string" : "%s is required", field);
            goto fail;
        }
        if (!json_is_object(data)) {
            snprintf(field, sizeof field, "events[%zu].data", i);
            st = es_error_set(err, ES_EINVALID, data ? "not_an_object" : "field_missing", field,
                              data ? "%s must be a JSON object" : "%s is required", field);
            goto fail;
        }
        if (meta != NULL && !json_is_null(meta) && !json_is_object(meta)) {
            snprintf(field, sizeof field, "events[%zu].metadata", i);
            st = es_error_set(err, ES_EINVALID, "not_an_object", field, "%s must be a JSON object", field);
            goto fail;
        }
        if (schema != NULL && !json_is_null(schema) &&
            (!json_is_integer(schema) || json_integer_value(schema) < 1 ||
             json_integer_value(schema) > 1000000)) {
            snprintf(field, sizeof field, "events[%zu].schema_version", i);
            st = es_error_set(err, ES_EINVALID, "field_range", field,
                              "%s must be an integer from 1", field);
            goto fail;
        }
        if (strlen(json_string_value(type)) != json_string_length(type)) {
            snprintf(field, sizeof field, "events[%zu].type", i);
            st = es_error_set(err, ES_EINVALID, "type_invalid", field, "%s contains NUL", field);
            goto fail;
        }
        e->event_id = json_is_string(id) ? json_string_value(id) : NULL;
        e->type = json_string_value(type);
        e->schema_version = json_is_integer(schema) ? (int)json_integer_value(schema) : 1;
        if (!own(b, json_dumps(data, JSON_COMPACT)) ||
            (meta != NULL && json_is_object(meta) && !own(b, json_dumps(meta, JSON_COMPACT)))) {
            st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
            goto fail;
        }
        e->data = b->owned_[b->nowned_ - 1 - (meta != NULL && json_is_object(meta))];
        e->metadata = meta != NULL && json_is_object(meta) ? b->owned_[b->nowned_ - 1] : NULL;
    }
    return ES_OK;
fail:
    es_append_body_free(b);
    return st;
}
