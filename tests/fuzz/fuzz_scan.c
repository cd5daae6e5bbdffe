/*
 * libFuzzer target for es-projector's decoder of the events stream
 * without jansson (es_feed_event_scan, events/scan.c), held against
 * jansson's (es_feed_event_decode) on the same bytes: both refuse the
 * message with the same reason, or both give the same event, on which
 * every projection writes the same batch byte for byte.  Any difference,
 * crash, leak or overrun aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "projections.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
same(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool
same_batch(const es_rm_batch *a, const es_rm_batch *b)
{
    if (a->n != b->n || a->events != b->events || a->last_seq != b->last_seq ||
        a->arena.len != b->arena.len || memcmp(a->arena.data, b->arena.data, a->arena.len) != 0)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->args[i].off != b->args[i].off || a->args[i].len != b->args[i].len ||
            a->args[i].num != b->args[i].num || a->args[i].is_num != b->args[i].is_num)
            return false;
    return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    es_feed_event s, j;
    es_error serr, jerr;
    es_status ss = es_feed_event_scan((const char *)data, size, 7, &s, &serr);
    es_status js = es_feed_event_decode((const char *)data, size, 7, &j, &jerr);

    if (ss != js)
        abort();
    if (ss != ES_OK) {
        if (!same(serr.message, jerr.message))
            abort();
        goto done;
    }
    if (!same(s.position, j.position) || !same(s.stream, j.stream) || !same(s.type, j.type) ||
        !same(s.event_id, j.event_id) || !same(s.recorded_at, j.recorded_at) ||
        !same(s.trace_id, j.trace_id) ||
        (s.category_end ? s.category_end - s.stream : -1) !=
            (j.category_end ? j.category_end - j.stream : -1))
        abort();
    for (size_t i = 0; i < pj_projection_count; i++) {
        es_rm_batch a, b;
        es_error aerr, berr;
        es_status as, bs;

        es_rm_batch_init(&a, pj_projections[i].name, NULL);
        es_rm_batch_init(&b, pj_projections[i].name, NULL);
        as = pj_add(&a, &pj_projections[i], &s, &aerr);
        bs = pj_add(&b, &pj_projections[i], &j, &berr);
        if (as != bs || (as != ES_OK && !same(aerr.message, berr.message)) || !same_batch(&a, &b))
            abort();
        es_rm_batch_free(&a);
        es_rm_batch_free(&b);
    }
done:
    es_feed_event_free(&s);
    es_feed_event_free(&j);
    return 0;
}
