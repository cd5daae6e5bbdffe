/*
 * Console rebuilds (rebuilds.h): one slot per projection, guarded by one
 * mutex, holding the thread of its current or last rebuild and what the
 * rebuild's hook last said.  A slot's thread is joined before the slot is
 * reused and when the process stops; the rebuild itself stops at the next
 * batch once SIGTERM marks the process as stopping (es_daemon_stopping),
 * leaving a version that the next rebuild resumes.
 *
 *   (none) --rebuilds_start--> running --pj_rebuild_with returns--> done
 *                                                                   failed
 *                                                                   interrupted
 */
#include "rebuilds.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "daemon.h"
#include "log.h"
#include "projector.h"

#define SLOTS 32

typedef struct slot {
    bool used;                  /* a rebuild ran or runs: the fields below say how */
    bool joinable;              /* thread not joined yet */
    bool running;
    pthread_t thread;
    char name[64];
    char *conninfo;
    char by[80];
    char phase[16];
    char version[24];
    uint64_t done, total;
    double started_at, finished_at;     /* Unix time */
    const char *state;          /* running, done, failed, interrupted */
    es_error err;
} slot;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static slot slots[SLOTS];
static bool ran_any;

static double
wall_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static slot *
slot_of(const char *name)
{
    for (size_t i = 0; i < pj_projection_count && i < SLOTS; i++)
        if (strcmp(pj_projections[i].name, name) == 0)
            return &slots[i];
    return NULL;
}

static void
on_progress(void *ctx, const char *phase, const char *version, uint64_t done, uint64_t total)
{
    slot *s = ctx;

    pthread_mutex_lock(&mu);
    snprintf(s->phase, sizeof s->phase, "%s", phase);
    snprintf(s->version, sizeof s->version, "%s", version);
    s->done = done;
    if (total > 0)
        s->total = total;
    pthread_mutex_unlock(&mu);
}

static void *
run(void *arg)
{
    slot *s = arg;
    pj_rebuild_hooks hooks = {s->conninfo, on_progress, s};
    pj_rebuild_report rep;
    es_error err;
    es_status st = pj_rebuild_with(s->name, false, &hooks, &rep, &err);
    char name[64], by[80];

    pthread_mutex_lock(&mu);
    /* the slot may be reused once running is false: the log uses copies */
    memcpy(name, s->name, sizeof name);
    memcpy(by, s->by, sizeof by);
    s->running = false;
    s->finished_at = wall_s();
    snprintf(s->version, sizeof s->version, "%s", rep.version);
    if (st != ES_OK) {
        s->state = "failed";
        s->err = err;
    } else if (rep.interrupted) {
        s->state = "interrupted";
    } else {
        s->state = "done";
        snprintf(s->phase, sizeof s->phase, "finished");
        s->done = rep.seq;
        if (s->total < rep.seq)
            s->total = rep.seq;
    }
    pthread_mutex_unlock(&mu);
    if (st != ES_OK)
        es_log(ES_LOG_WARNING, "console: rebuild of %s by %s failed: %s", name, by, err.message);
    else
        es_log(ES_LOG_INFO, "console: rebuild of %s by %s %s: version %s at event %llu", name, by,
               rep.interrupted ? "interrupted" : "done", rep.version,
               (unsigned long long)rep.seq);
    return NULL;
}

es_status
rebuilds_start(const char *name, const char *conninfo, const char *principal, es_error *err)
{
    slot *s = slot_of(name);
    pthread_t old;
    bool join_old = false;
    es_status st = ES_OK;

    if (s == NULL)
        return es_error_set(err, ES_ENOTFOUND, "unknown_projection", "name",
                            "there is no projection \"%s\"", name);
    pthread_mutex_lock(&mu);
    if (es_daemon_stopping()) {
        st = es_error_set(err, ES_EUNAVAILABLE, "shutting_down", NULL,
                          "es-query is stopping: no rebuild starts");
        goto done;
    }
    if (s->running) {
        st = es_error_set(err, ES_ECONFLICT, "rebuild_running", "name",
                          "a rebuild of %s started from the console is running (version %s)",
                          name, s->version[0] ? s->version : "not chosen yet");
        goto done;
    }
    if (s->joinable) {          /* ended: its thread is joined below, outside the lock */
        old = s->thread;
        join_old = true;
        s->joinable = false;
    }
    free(s->conninfo);
    memset(s, 0, sizeof *s);
    s->used = true;
    s->running = true;
    s->state = "running";
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->by, sizeof s->by, "%s", principal && principal[0] ? principal : "-");
    snprintf(s->phase, sizeof s->phase, "starting");
    s->started_at = wall_s();
    s->conninfo = strdup(conninfo);
    if (s->conninfo == NULL || pthread_create(&s->thread, NULL, run, s) != 0) {
        s->running = false;
        s->state = "failed";
        st = es_error_set(err, ES_EUNAVAILABLE, "rebuild_not_started", NULL,
                          "could not start a thread for the rebuild of %s", name);
        s->err = *err;
        goto done;
    }
    s->joinable = true;
    ran_any = true;
done:
    pthread_mutex_unlock(&mu);
    if (join_old)
        pthread_join(old, NULL);
    if (st == ES_OK)
        es_log(ES_LOG_INFO, "console: %s started a rebuild of %s",
               principal && principal[0] ? principal : "-", name);
    return st;
}

json_t *
rebuilds_status(const char *name)
{
    slot *s = slot_of(name);
    json_t *o = NULL;
    double progress;

    if (s == NULL)
        return NULL;
    pthread_mutex_lock(&mu);
    if (!s->used)
        goto done;
    if (strcmp(s->state, "done") == 0)
        progress = 1.0;
    else if (s->total > 0)      /* the new version is not active yet: short of 1 */
        progress = s->done >= s->total ? 0.99 : (double)s->done / (double)s->total;
    else
        progress = 0.0;
    if (progress > 0.99 && strcmp(s->state, "done") != 0)
        progress = 0.99;
    o = json_pack("{s:s, s:s, s:s, s:s?, s:I, s:I, s:f, s:s, s:f, s:o}", "projection", s->name,
                  "state", s->state, "phase", s->phase, "version",
                  s->version[0] ? s->version : NULL, "done", (json_int_t)s->done, "total",
                  (json_int_t)s->total, "progress", progress, "by", s->by, "started_at",
                  s->started_at, "finished_at",
                  s->running ? json_null() : json_real(s->finished_at));
    if (strcmp(s->state, "failed") == 0)
        json_object_set_new(o, "error", es_error_to_json(&s->err));
done:
    pthread_mutex_unlock(&mu);
    return o;
}

bool
rebuilds_stop(void)
{
    bool any;

    for (size_t i = 0; i < SLOTS; i++) {
        pthread_t t;
        bool join = false;

        pthread_mutex_lock(&mu);
        if (slots[i].joinable) {
            t = slots[i].thread;
            slots[i].joinable = false;
            join = true;
        }
        pthread_mutex_unlock(&mu);
        if (join)
            pthread_join(t, NULL);
        free(slots[i].conninfo);
        slots[i].conninfo = NULL;
    }
    pthread_mutex_lock(&mu);
    any = ran_any;
    pthread_mutex_unlock(&mu);
    return any;
}
