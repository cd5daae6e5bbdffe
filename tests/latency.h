/*
 * Latency recording shared by the load generators (bench_store.c,
 * bench_http.c): each worker records into its own list, and the lists are
 * merged for the percentiles at the end.
 */
#ifndef ES_TEST_LATENCY_H
#define ES_TEST_LATENCY_H

#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct latencies {
    double *ms;
    size_t n, cap;
} latencies;

static inline double
lat_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Records the time since t0 (lat_now's seconds) in milliseconds. */
static inline void
lat_add(latencies *l, double t0)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 4096;
        if ((l->ms = realloc(l->ms, l->cap * sizeof *l->ms)) == NULL)
            abort();
    }
    l->ms[l->n++] = (lat_now() - t0) * 1000;
}

static inline int
lat_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Merges the count lists (and frees them) into the 50th and 99th
 * percentiles, 0 when nothing was recorded. */
static inline void
lat_percentiles(latencies *const *lists, size_t count, double *p50, double *p99)
{
    size_t n = 0, j = 0, i;
    double *all;

    for (i = 0; i < count; i++)
        n += lists[i]->n;
    if ((all = malloc((n ? n : 1) * sizeof *all)) == NULL)
        abort();
    for (i = 0; i < count; i++) {
        memcpy(all + j, lists[i]->ms, lists[i]->n * sizeof *all);
        j += lists[i]->n;
        free(lists[i]->ms);
        lists[i]->ms = NULL;
    }
    qsort(all, n, sizeof *all, lat_cmp);
    *p50 = n ? all[n / 2] : 0.0;
    *p99 = n ? all[n * 99 / 100] : 0.0;
    free(all);
}

#endif
