/*
 * Park decisions in the store (see park.h): written by esctl, read by
 * the live projector's park reader thread each second and by every
 * replay before it starts.
 */
#include "park.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

static void
copy(char *out, size_t size, const json_t *v)
{
    snprintf(out, size, "%s", json_is_string(v) ? json_string_value(v) : "");
}

/* Room for one more decision in p; false when out of memory. */
static bool
grow(pj_parks *p, size_t want)
{
    size_t cap = p->cap ? p->cap : 8;
    pj_park *grown;

    if (want <= p->cap)
        return true;
    while (cap < want)
        cap *= 2;
    if ((grown = realloc(p->v, cap * sizeof *grown)) == NULL)
        return false;
    p->v = grown;
    p->cap = cap;
    return true;
}

es_status
pj_parks_load(es_store *s, const char *name, pj_parks *p, size_t *added, es_error *err)
{
    char stream[ES_STREAM_ID_MAX + 1];
    es_page *page = NULL;
    es_status st;

    *added = 0;
    snprintf(stream, sizeof stream, PJ_PARK_STREAM_PREFIX "%s", name);
    for (;;) {
        st = es_store_read_stream(s, stream, p->next, 500, ES_FORWARD, &page, err);
        if (st == ES_ENOTFOUND)
            return ES_OK;       /* nothing parked for it */
        if (st != ES_OK)
            return st;
        for (size_t i = 0; i < page->count; i++) {
            const es_event *e = &page->events[i];
            json_t *d = json_loads(e->data, 0, NULL), *seq = json_object_get(d, "seq");
            pj_park *k;

            p->next = e->version + 1;
            /* only what esctl writes (its schema's shape) counts */
            if (strcmp(e->type, PJ_PARK_TYPE) != 0 || !json_is_integer(seq) ||
                json_integer_value(seq) < 1) {
                json_decref(d);
                continue;
            }
            if (!grow(p, p->n + 1)) {
                json_decref(d);
                es_page_destroy(page);
                return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
            }
            k = &p->v[p->n++];
            k->seq = (uint64_t)json_integer_value(seq);
            copy(k->position, sizeof k->position, json_object_get(d, "position"));
            copy(k->reason, sizeof k->reason, json_object_get(d, "reason"));
            copy(k->by, sizeof k->by, json_object_get(d, "by"));
            snprintf(k->at, sizeof k->at, "%s", e->recorded_at);
            (*added)++;
            json_decref(d);
        }
        if (page->count < 500) {
            es_page_destroy(page);
            return ES_OK;
        }
        es_page_destroy(page);
    }
}

es_status
pj_parks_sync(pj_parks *dst, const pj_parks *src, size_t *added, es_error *err)
{
    *added = 0;
    if (src->n <= dst->n)
        return ES_OK;
    if (!grow(dst, src->n))
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    memcpy(dst->v + dst->n, src->v + dst->n, (src->n - dst->n) * sizeof *dst->v);
    *added = src->n - dst->n;
    dst->n = src->n;
    dst->next = src->next;
    return ES_OK;
}

const pj_park *
pj_parks_find(const pj_parks *p, uint64_t seq)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->v[i].seq == seq)
            return &p->v[i];
    return NULL;
}

void
pj_parks_free(pj_parks *p)
{
    free(p->v);
    *p = (pj_parks)PJ_PARKS_INIT;
}

es_status
pj_park_record(es_store *s, const char *name, uint64_t seq, const char *position,
               const char *reason, const char *by, es_error *err)
{
    char stream[ES_STREAM_ID_MAX + 1], *text = NULL;
    json_t *d = json_pack("{s:s, s:I, s:s, s:s}", "projection", name, "seq", (json_int_t)seq,
                          "reason", reason, "by", by);
    const es_schema *sc;
    es_new_event ev;
    es_append_req req;
    es_append_result res;
    es_status st;

    snprintf(stream, sizeof stream, PJ_PARK_STREAM_PREFIX "%s", name);
    if (d == NULL)
        return es_error_set(err, ES_EINVALID, "field_invalid", "reason",
                            "the reason and the operator's name must be UTF-8 text");
    if (position != NULL && position[0] != '\0')
        json_object_set_new(d, "position", json_string(position));
    sc = es_schema_find(stream, PJ_PARK_TYPE);
    if (sc == NULL || es_schema_check(sc, d, "data", err) != ES_OK) {
        json_decref(d);
        if (sc == NULL)
            return es_error_set(err, ES_EINTERNAL, NULL, NULL, "no schema for %s", PJ_PARK_TYPE);
        err->status = ES_EINVALID;  /* the operator's input: a usage error */
        return ES_EINVALID;
    }
    if ((text = json_dumps(d, JSON_COMPACT)) == NULL) {
        json_decref(d);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    }
    ev = (es_new_event){NULL, PJ_PARK_TYPE, sc->version, text, NULL};
    req = (es_append_req){stream, ES_EXPECT_ANY, &ev, 1};
    st = es_store_append(s, &req, &res);
    if (st != ES_OK)
        *err = res.err;
    free(text);
    json_decref(d);
    return st;
}
