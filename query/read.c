/*
 * Reading views for es-query (see read.h): per-thread Redis connections
 * (to the primary, and to a replica when ES_QUERY_READ_REPLICA is on),
 * command lists for es_rm_read, and the two-round read of views whose keys
 * come from their own data.
 */
#include "read.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "env.h"
#include "log.h"

/* Rounds of a two-round read before giving up on a consistent index. */
#define READ_ROUNDS 4

/* ---- the thread's connection ------------------------------------------ */

static pthread_key_t conn_key, replica_key;

/* A thread's replica connection and when its role was last checked. */
typedef struct replica_conn {
    redisContext *c;
    long long checked_ms;
} replica_conn;

/* How often a replica's link to its primary is checked (ROLE), and how
 * long replica reads stay off after a replica failed, so that a dead one
 * does not cost every request a connection attempt. */
#define REPLICA_CHECK_MS 1000
#define REPLICA_PAUSE_MS 1000

static bool replica_on;
static atomic_llong replica_off_until;  /* monotonic ms */
static atomic_ullong replica_counts[READ_REPLICA_OUTCOMES];

static long long
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs when a worker thread ends, so no connection outlives its thread. */
static void
conn_free(void *c)
{
    redisFree(c);
}

static void
replica_free(void *p)
{
    replica_conn *rc = p;

    redisFree(rc->c);
    free(rc);
}

int
read_conn_init(void)
{
    replica_on = es_env_long("es-query", "ES_QUERY_READ_REPLICA", 0, 0, 1) == 1;
    if (pthread_key_create(&conn_key, conn_free) != 0)
        return -1;
    if (pthread_key_create(&replica_key, replica_free) != 0) {
        pthread_key_delete(conn_key);
        return -1;
    }
    return 0;
}

void
read_conn_fini(void)
{
    pthread_key_delete(conn_key);
    pthread_key_delete(replica_key);
}

/* This thread's connection; *fresh says whether it was just made. */
static redisContext *
conn(bool *fresh, es_error *err)
{
    redisContext *c = pthread_getspecific(conn_key);

    *fresh = c == NULL;
    if (c != NULL)
        return c;
    if ((c = es_rm_connect(err)) == NULL)
        return NULL;
    if (pthread_setspecific(conn_key, c) != 0) {
        redisFree(c);
        es_error_set(err, ES_ENOMEM, NULL, NULL, "could not keep the redis connection");
        return NULL;
    }
    return c;
}

static void
conn_drop(void)
{
    redisContext *c = pthread_getspecific(conn_key);

    if (c != NULL) {
        pthread_setspecific(conn_key, NULL);
        redisFree(c);
    }
}

es_status
read_run(read_fn fn, void *ctx, es_error *err)
{
    es_status st = ES_EUNAVAILABLE;
    int attempt;

    for (attempt = 0; attempt < 2; attempt++) {
        bool fresh;
        redisContext *c = conn(&fresh, err);

        if (c == NULL)
            return err->status;
        st = fn(c, ctx, err);
        if (c->err == 0)
            return st;
        /* hiredis cannot use a context after an I/O error */
        conn_drop();
        if (fresh)
            break;
    }
    return st;
}

/* ---- commands --------------------------------------------------------- */

static void
push(read_cmds *c, size_t off)
{
    if (c->failed)
        return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 32;
        size_t *grown = realloc(c->offs, cap * sizeof *grown);

        if (grown == NULL) {
            c->failed = true;
            return;
        }
        c->offs = grown;
        c->cap = cap;
    }
    c->offs[c->n++] = off;
}

void
read_arg(read_cmds *c, const char *arg)
{
    size_t off = c->text.len;

    /* NUL included: arguments are C strings in es_rm_read's argv */
    es_buf_append(&c->text, arg, strlen(arg) + 1);
    if (es_buf_failed(&c->text))
        c->failed = true;
    push(c, off);
}

void
read_cmd(read_cmds *c, const char *name, const char *keyfmt, ...)
{
    char key[512];
    va_list ap;
    int n;

    va_start(ap, keyfmt);
    n = vsnprintf(key, sizeof key, keyfmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof key) {
        c->failed = true;       /* ids are checked to be short long before */
        return;
    }
    if (c->ncmds > 0)
        push(c, SIZE_MAX);
    c->ncmds++;
    read_arg(c, name);
    read_arg(c, key);
}

/* The argv arrays es_rm_read takes, pointing into c->text; NULL when c
 * failed.  Valid until c changes. */
static const char *const *const *
cmds_argv(read_cmds *c)
{
    static const char *const *const none[1] = {NULL};
    size_t i, a = 0, k = 0;

    if (c->failed)
        return NULL;
    if (c->ncmds == 0)
        return none;
    free(c->args);
    free(c->cmds);
    c->args = malloc((c->n + 1) * sizeof *c->args);
    c->cmds = malloc(c->ncmds * sizeof *c->cmds);
    if (c->args == NULL || c->cmds == NULL)
        return NULL;
    c->cmds[k++] = &c->args[0];
    for (i = 0; i < c->n; i++) {
        if (c->offs[i] == SIZE_MAX) {
            c->args[a++] = NULL;
            c->cmds[k++] = &c->args[a];
        } else {
            c->args[a++] = c->text.data + c->offs[i];
        }
    }
    c->args[a] = NULL;
    return (const char *const *const *)c->cmds;
}

void
read_cmds_free(read_cmds *c)
{
    es_buf_free(&c->text);
    free(c->offs);
    free(c->args);
    free(c->cmds);
    memset(c, 0, sizeof *c);
}

/* ---- views ------------------------------------------------------------ */

static void
reply_str(char *dst, size_t size, const redisReply *r)
{
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        snprintf(dst, size, "%.*s", (int)r->len, r->str);
    else
        dst[0] = '\0';
}

/* Runs rc on version (NULL: the active one) and checks the reply's shape:
 * version, seq, position, then one reply per command (none when the
 * projection has no version yet). */
static es_status
run(redisContext *c, const char *projection, const char *version, read_cmds *rc,
    redisReply **out, es_error *err)
{
    const char *const *const *cmds = cmds_argv(rc);
    redisReply *r;
    es_status st;

    *out = NULL;
    if (cmds == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory building a read");
    st = es_rm_read(c, projection, version, cmds, rc->ncmds, &r, err);
    if (st != ES_OK)
        return st;
    if (r->elements != 3 + rc->ncmds &&
        !(r->elements == 3 && r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len == 0)) {
        size_t got = r->elements - 3;

        freeReplyObject(r);
        return es_error_set(err, ES_EINTERNAL, "redis_error", NULL,
                            "redis: read of \"%s\": %zu replies for %zu commands", projection,
                            got, rc->ncmds);
    }
    *out = r;
    return ES_OK;
}

static bool
has_version(const redisReply *r)
{
    return r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len > 0;
}

/* True when the first n command replies of a and b are equal. */
static bool
same_index(const redisReply *a, const redisReply *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (!es_rm_reply_equal(a->element[3 + i], b->element[3 + i]))
            return false;
    return true;
}

/* Fills out from the index replies of ir and the detail replies of dr
 * (owned from now on; the same reply for a one-read answer). */
static void
finish(read_result *out, redisReply *ir, redisReply *dr, size_t nidx, bool atomic)
{
    out->index_reply = ir;
    out->detail_reply = dr;
    out->atomic = atomic;
    reply_str(out->version, sizeof out->version, ir->element[0]);
    reply_str(out->position, sizeof out->position, ir->element[2]);
    if (out->position[0] == '\0')
        snprintf(out->position, sizeof out->position, "0-0");
    if (ir->elements == 3) {
        out->nidx = out->ndet = 0;
        return;
    }
    out->idx = (const redisReply *const *)ir->element + 3;
    out->nidx = nidx;
    out->det = (const redisReply *const *)dr->element + 3 + nidx;
    out->ndet = dr->elements - 3 - nidx;
}

typedef struct view_call {
    const read_view_def *def;
    const void *args;
    read_result *out;
} view_call;

static es_status
view_on(redisContext *c, void *ctx, es_error *err)
{
    view_call *v = ctx;
    const read_view_def *def = v->def;
    const void *args = v->args;
    read_result *out = v->out;
    read_cmds rc = {0};
    redisReply *prev = NULL, *cur = NULL;
    size_t nidx = 0;
    char version[24];
    es_status st = ES_OK;
    int round;

    memset(out, 0, sizeof *out);
    for (round = 0; round < READ_ROUNDS; round++) {
        if (prev == NULL) {
            /* index only, from whichever version is active now */
            read_cmds_free(&rc);
            def->index(args, &rc);
            nidx = rc.ncmds;
            if ((st = run(c, def->projection, NULL, &rc, &prev, err)) != ES_OK)
                goto done;
            if (def->detail == NULL || !has_version(prev)) {
                finish(out, prev, prev, nidx, true);
                prev = NULL;
                goto done;
            }
        }
        read_cmds_free(&rc);
        def->index(args, &rc);
        def->detail(args, (const redisReply *const *)prev->element + 3, nidx, &rc);
        if (rc.ncmds == nidx && !rc.failed) {
            finish(out, prev, prev, nidx, true);        /* nothing named: done */
            prev = NULL;
            goto done;
        }
        reply_str(version, sizeof version, prev->element[0]);
        if ((st = run(c, def->projection, version, &rc, &cur, err)) != ES_OK)
            goto done;
        if (cur->element[1]->integer < prev->element[1]->integer) {
            /* the version was retired and dropped in between: start over */
            freeReplyObject(prev);
            freeReplyObject(cur);
            prev = cur = NULL;
            continue;
        }
        if (same_index(prev, cur, nidx)) {
            finish(out, cur, cur, nidx, true);
            cur = NULL;
            goto done;
        }
        if (round + 1 == READ_ROUNDS) {
            /* The index changed on every round (a busy list): answer with
             * the documents of the older index as read in the newer
             * round, and the older (lower) position. */
            finish(out, prev, cur, nidx, false);
            prev = cur = NULL;
            goto done;
        }
        freeReplyObject(prev);
        prev = cur;
        cur = NULL;
    }
    st = es_error_set(err, ES_EUNAVAILABLE, "read_model_busy", NULL,
                      "read model \"%s\" changed versions during the read", def->projection);
done:
    freeReplyObject(prev);
    freeReplyObject(cur);
    read_cmds_free(&rc);
    return st;
}

es_status
read_view(const read_view_def *def, const void *args, read_result *out, es_error *err)
{
    view_call v = {def, args, out};

    return read_run(view_on, &v, err);
}

bool
read_replica_on(void)
{
    return replica_on;
}

/* Drops this thread's replica connection and pauses replica reads. */
static void
replica_drop(replica_conn *rc, const es_error *err)
{
    long long until = now_ms() + REPLICA_PAUSE_MS, was = atomic_load(&replica_off_until);

    redisFree(rc->c);
    rc->c = NULL;
    /* said once per pause, not once per thread */
    if (was <= now_ms() && atomic_compare_exchange_strong(&replica_off_until, &was, until))
        es_log(ES_LOG_WARNING, "reading the primary for %d ms: %s", REPLICA_PAUSE_MS,
               err->message);
}

es_status
read_view_replica(const read_view_def *def, const void *args, read_result *out, es_error *err)
{
    view_call v = {def, args, out};
    replica_conn *rc = pthread_getspecific(replica_key);
    es_status st;

    memset(out, 0, sizeof *out);
    if (!replica_on)
        return es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                            "replica reads are off (ES_QUERY_READ_REPLICA)");
    if (now_ms() < atomic_load(&replica_off_until))
        return es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                            "replica reads are paused after a failure");
    if (rc == NULL) {
        if ((rc = calloc(1, sizeof *rc)) == NULL || pthread_setspecific(replica_key, rc) != 0) {
            free(rc);
            return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not keep the replica connection");
        }
    }
    if (rc->c == NULL) {
        if ((rc->c = es_rm_connect_replica(err)) == NULL) {
            replica_drop(rc, err);
            return err->status;
        }
        rc->checked_ms = now_ms();
    } else if (now_ms() - rc->checked_ms >= REPLICA_CHECK_MS) {
        if (es_rm_replica_check(rc->c, err) != ES_OK) {
            replica_drop(rc, err);
            return err->status;
        }
        rc->checked_ms = now_ms();
    }
    /* an I/O error, or a refusal (an ACL the replica lacks): either way
     * the primary is read, and the replica left alone for a while */
    if ((st = view_on(rc->c, &v, err)) != ES_OK)
        replica_drop(rc, err);
    return st;
}

void
read_replica_count(read_replica_outcome outcome)
{
    atomic_fetch_add(&replica_counts[outcome], 1);
}

unsigned long long
read_replica_counted(read_replica_outcome outcome)
{
    return atomic_load(&replica_counts[outcome]);
}

void
read_result_free(read_result *r)
{
    if (r->detail_reply != r->index_reply)
        freeReplyObject(r->detail_reply);
    freeReplyObject(r->index_reply);
    memset(r, 0, sizeof *r);
}

typedef struct position_call {
    const char *projection;
    char *position;
    uint64_t *seq;
} position_call;

static es_status
position_on(redisContext *c, void *ctx, es_error *err)
{
    position_call *p = ctx;
    redisReply *r;
    es_status st = es_rm_read(c, p->projection, NULL, NULL, 0, &r, err);

    if (st != ES_OK)
        return st;
    reply_str(p->position, ES_RM_POSITION_MAX, r->element[2]);
    if (p->position[0] == '\0')
        snprintf(p->position, ES_RM_POSITION_MAX, "0-0");
    if (p->seq)
        *p->seq = (uint64_t)r->element[1]->integer;
    freeReplyObject(r);
    return ES_OK;
}

es_status
read_position(const char *projection, char *position, uint64_t *seq, es_error *err)
{
    position_call p = {projection, position, seq};

    return read_run(position_on, &p, err);
}
