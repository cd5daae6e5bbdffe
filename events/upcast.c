/*
 * The upcaster registry: a small array searched linearly.  Registries hold
 * a handful of steps, and reads ask es_upcasters_needed first, which is a
 * cheap scan that returns at once when nothing is registered.
 */
#include "upcast.h"

#include <stdlib.h>
#include <string.h>

typedef struct step {
    char *type;
    int from;
    es_upcast_fn fn;
    void *ctx;
} step;

struct es_upcasters {
    step *steps;
    size_t n, cap;
};

es_status
es_upcasters_create(es_upcasters **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? ES_OK : ES_ENOMEM;
}

void
es_upcasters_destroy(es_upcasters *u)
{
    if (u == NULL)
        return;
    for (size_t i = 0; i < u->n; i++)
        free(u->steps[i].type);
    free(u->steps);
    free(u);
}

static const step *
find(const es_upcasters *u, const char *type, int from)
{
    for (size_t i = 0; i < u->n; i++)
        if (u->steps[i].from == from && strcmp(u->steps[i].type, type) == 0)
            return &u->steps[i];
    return NULL;
}

es_status
es_upcasters_register(es_upcasters *u, const char *type, int from,
                      es_upcast_fn fn, void *ctx)
{
    step *s;

    if (from < 1 || fn == NULL || type == NULL || find(u, type, from))
        return ES_EINVALID;
    if (u->n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 8;
        if ((s = realloc(u->steps, cap * sizeof *s)) == NULL)
            return ES_ENOMEM;
        u->steps = s;
        u->cap = cap;
    }
    s = &u->steps[u->n];
    if ((s->type = strdup(type)) == NULL)
        return ES_ENOMEM;
    s->from = from;
    s->fn = fn;
    s->ctx = ctx;
    u->n++;
    return ES_OK;
}

int
es_upcasters_needed(const es_upcasters *u, const char *type, int version)
{
    return u != NULL && u->n > 0 && find(u, type, version) != NULL;
}

es_status
es_upcasters_apply(const es_upcasters *u, const char *type, int *version,
                   const char *data, char **out, es_error *err)
{
    json_error_t jerr;
    json_t *v = NULL;
    const step *s;
    int ver = *version;
    es_status st = ES_OK;

    *out = NULL;
    if ((v = json_loads(data, 0, &jerr)) == NULL) {
        st = es_error_set(err, ES_EINTERNAL, "stored_event_invalid", "data",
                          "stored %s event is not a JSON object: %s", type, jerr.text);
        goto done;
    }
    while ((s = find(u, type, ver)) != NULL) {
        if ((st = s->fn(v, s->ctx, err)) != ES_OK)
            goto done;
        ver++;
    }
    if ((*out = json_dumps(v, JSON_COMPACT)) == NULL) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not encode upcast %s event", type);
        goto done;
    }
    *version = ver;
done:
    json_decref(v);
    return st;
}
