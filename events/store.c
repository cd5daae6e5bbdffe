/*
 * The event store client (see store.h and docs/ARCHITECTURE.md).
 *
 * Every append goes through the SQL function es_append (migrations/), one
 * statement per append, which checks the expected version with a
 * conditional update of the stream's row and answers a status instead of
 * raising.  A batch of appends is sent in libpq pipeline mode between
 * BEGIN and COMMIT: one round trip and one commit (one WAL flush) for all
 * of them.  If the batch fails as a whole (an error no status covers, such
 * as an event id used in another stream), it was rolled back and each
 * append is retried on its own, so one bad append never fails the others.
 *
 * Reads return pages whose strings point into the PGresult, so reading
 * the feed copies nothing but the row pointers.
 */
#include "store.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

/* Appends sent in one pipeline at most: keeps the replies well inside the
 * socket buffers, so a blocking pipeline cannot deadlock. */
#define BATCH_MAX 256

struct es_store {
    PGconn *conn;
    char *conninfo;
    bool ready;                 /* connected and statements prepared */
    size_t max_event_size;
    const es_upcasters *upcasters;
    es_buf params;              /* reused for the events parameter */
};

typedef struct page_storage {
    PGresult *res;
    char **owned;               /* upcast data, freed with the page */
    size_t nowned;
} page_storage;

#define EVENT_COLUMNS                                                       \
    "stream_id, version, event_id, type, schema_version, data::text, "      \
    "metadata::text, "                                                      \
    "to_char(recorded_at AT TIME ZONE 'UTC', "                              \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), transaction_id, global_position"

#define HORIZON "pg_snapshot_xmin(pg_current_snapshot())"

static const struct {
    const char *name;
    const char *sql;
} statements[] = {
    {"es_append",
     "SELECT status, first_version, last_version, txid, last_position, "
     "actual_version FROM es_append($1, $2::bigint, $3::jsonb)"},
    {"es_stream_fwd",
     "SELECT s.version, e.* FROM es_streams s LEFT JOIN LATERAL ("
     "SELECT " EVENT_COLUMNS " FROM es_events WHERE stream_id = s.stream_id "
     "AND version >= $2 ORDER BY version LIMIT $3) e ON true "
     "WHERE s.stream_id = $1"},
    {"es_stream_bwd",
     "SELECT s.version, e.* FROM es_streams s LEFT JOIN LATERAL ("
     "SELECT " EVENT_COLUMNS " FROM es_events WHERE stream_id = s.stream_id "
     "AND version <= (CASE WHEN $2::bigint < 0 THEN s.version ELSE $2 END) "
     "ORDER BY version DESC LIMIT $3) e ON true WHERE s.stream_id = $1"},
    {"es_feed",
     "SELECT NULL, " EVENT_COLUMNS " FROM es_events "
     "WHERE (transaction_id, global_position) > ($1::xid8, $2::bigint) "
     "AND transaction_id < " HORIZON " "
     "ORDER BY transaction_id, global_position LIMIT $3"},
    {"es_category",
     "SELECT NULL, " EVENT_COLUMNS " FROM es_events "
     "WHERE category = $4 "
     "AND (transaction_id, global_position) > ($1::xid8, $2::bigint) "
     "AND transaction_id < " HORIZON " "
     "ORDER BY transaction_id, global_position LIMIT $3"},
    {"es_head",
     "SELECT transaction_id, global_position FROM es_events "
     "WHERE transaction_id < " HORIZON " "
     "ORDER BY transaction_id DESC, global_position DESC LIMIT 1"},
};

/* es_append's status column, see migrations/001_event_store.sql. */
enum { APPEND_WRITTEN = 0, APPEND_DUPLICATE = 1, APPEND_CONFLICT = 2, APPEND_CLASH = 3 };

/* Maps a failed result (or a dead connection) to a status. */
static es_status
pg_failure(es_store *s, const PGresult *r, const char *what, es_error *err)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorMessage(r) : "";
    char text[256];
    size_t n;

    if (msg == NULL || msg[0] == '\0')
        msg = PQerrorMessage(s->conn);
    snprintf(text, sizeof text, "%s", msg);
    n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' '))
        text[--n] = '\0';

    if (PQstatus(s->conn) != CONNECTION_OK || state == NULL ||
        strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strncmp(state, "53", 2) == 0) {
        s->ready = false;
        return es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                            "could not %s: %s", what, text);
    }
    if (strcmp(state, "23505") == 0)
        return es_error_set(err, ES_EIDCLASH, "event_id_clash", NULL,
                            "could not %s: an event id is used by another stream", what);
    if (strncmp(state, "22", 2) == 0)
        return es_error_set(err, ES_EINVALID, "invalid_input", NULL,
                            "could not %s: %s", what, text);
    return es_error_set(err, ES_EINTERNAL, NULL, NULL, "could not %s: %s", what, text);
}

static es_status
ensure_ready(es_store *s, es_error *err)
{
    PGresult *r;
    size_t i;

    if (s->ready && PQstatus(s->conn) == CONNECTION_OK)
        return ES_OK;
    s->ready = false;
    if (s->conn != NULL)
        PQfinish(s->conn);
    s->conn = PQconnectdb(s->conninfo);
    if (s->conn == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a connection");
    if (PQstatus(s->conn) != CONNECTION_OK) {
        char text[256];
        snprintf(text, sizeof text, "%s", PQerrorMessage(s->conn));
        text[strcspn(text, "\n")] = '\0';
        return es_error_set(err, ES_EUNAVAILABLE, "store_unavailable", NULL,
                            "could not connect to the event store: %s", text);
    }
    for (i = 0; i < sizeof statements / sizeof statements[0]; i++) {
        es_status st;

        r = PQprepare(s->conn, statements[i].name, statements[i].sql, 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            st = pg_failure(s, r, "prepare the store's statements", err);
            PQclear(r);
            return st;
        }
        PQclear(r);
    }
    s->ready = true;
    return ES_OK;
}

es_status
es_store_open(es_store **out, const char *conninfo, es_error *err)
{
    es_store *s;
    es_status st;

    *out = NULL;
    es_error_clear(err);
    if ((s = calloc(1, sizeof *s)) == NULL || (s->conninfo = strdup(conninfo)) == NULL) {
        free(s);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a store");
    }
    s->max_event_size = ES_EVENT_SIZE_MAX_DEFAULT;
    if ((st = ensure_ready(s, err)) != ES_OK) {
        es_store_close(s);
        return st;
    }
    *out = s;
    return ES_OK;
}

void
es_store_close(es_store *s)
{
    if (s == NULL)
        return;
    if (s->conn)
        PQfinish(s->conn);
    es_buf_free(&s->params);
    free(s->conninfo);
    free(s);
}

void
es_store_set_max_event_size(es_store *s, size_t bytes)
{
    s->max_event_size = bytes;
}

void
es_store_set_upcasters(es_store *s, const es_upcasters *u)
{
    s->upcasters = u;
}

/* ---- appends ---------------------------------------------------------- */

static void
result_reset(es_append_result *res)
{
    res->status = ES_OK;
    res->duplicate = false;
    res->first_version = res->last_version = -1;
    res->position.txid = 0;
    res->position.gpos = 0;
    es_error_clear(&res->err);
}

static es_status
check_request(const es_store *s, const es_append_req *req, es_error *err)
{
    es_status st;

    if ((st = es_stream_id_check(req->stream, "stream", err)) != ES_OK)
        return st;
    if (req->expected < ES_EXPECT_EXISTS)
        return es_error_set(err, ES_EINVALID, "expected_version_invalid",
                            "expected_version", "expected version %" PRId64 " is not valid",
                            req->expected);
    if (req->count == 0 || req->events == NULL)
        return es_error_set(err, ES_EINVALID, "events_empty", "events",
                            "an append needs at least one event");
    if (req->count > ES_APPEND_EVENTS_MAX)
        return es_error_set(err, ES_ETOOLARGE, "too_many_events", "events",
                            "an append holds at most %d events, this one has %zu",
                            ES_APPEND_EVENTS_MAX, req->count);
    for (size_t i = 0; i < req->count; i++)
        if ((st = es_new_event_check(&req->events[i], i, s->max_event_size, err)) != ES_OK)
            return st;
    return ES_OK;
}

/* Appends req's events as the jsonb array es_append takes, NUL-terminated. */
static es_status
build_events_param(es_buf *b, const es_append_req *req, es_error *err)
{
    for (size_t i = 0; i < req->count; i++) {
        const es_new_event *ev = &req->events[i];
        char id[ES_UUID_LEN + 1];

        if (ev->event_id != NULL && ev->event_id[0] != '\0') {
            snprintf(id, sizeof id, "%s", ev->event_id);
        } else if (!es_uuid_random(id)) {
            return es_error_set(err, ES_EINTERNAL, NULL, NULL,
                                "could not read random bytes for an event id");
        }
        es_buf_puts(b, i == 0 ? "[{\"event_id\":\"" : ",{\"event_id\":\"");
        es_buf_puts(b, id);
        es_buf_puts(b, "\",\"type\":");
        es_buf_json_string(b, ev->type);
        es_buf_printf(b, ",\"schema_version\":%d,\"data\":",
                      ev->schema_version > 0 ? ev->schema_version : 1);
        es_buf_puts(b, ev->data);
        if (ev->metadata != NULL) {
            es_buf_puts(b, ",\"metadata\":");
            es_buf_puts(b, ev->metadata);
        }
        es_buf_puts(b, "}");
    }
    es_buf_append(b, "]", 2);       /* with the NUL: parameters are C strings */
    if (es_buf_failed(b))
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not build an append");
    return ES_OK;
}

static int64_t
get_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? -1 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static uint64_t
get_u64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoull(PQgetvalue(r, row, col), NULL, 10);
}

/* Fills res from one row of es_append. */
static void
read_append_row(const PGresult *r, const es_append_req *req, es_append_result *res)
{
    int code = (int)get_i64(r, 0, 0);
    int64_t actual = get_i64(r, 0, 5);

    switch (code) {
    case APPEND_WRITTEN:
    case APPEND_DUPLICATE:
        res->status = ES_OK;
        res->duplicate = code == APPEND_DUPLICATE;
        res->first_version = get_i64(r, 0, 1);
        res->last_version = get_i64(r, 0, 2);
        res->position.txid = get_u64(r, 0, 3);
        res->position.gpos = get_i64(r, 0, 4);
        break;
    case APPEND_CONFLICT:
        res->status = es_error_set(&res->err, ES_ECONFLICT, "version_conflict",
                                   "expected_version",
                                   "could not append to stream \"%s\": expected version %"
                                   PRId64 ", found %" PRId64, req->stream, req->expected,
                                   actual);
        res->err.actual_version = actual;
        break;
    default:
        res->status = es_error_set(&res->err, ES_EIDCLASH, "event_id_clash", "events",
                                   "could not append to stream \"%s\": some of its event ids "
                                   "were written by a different append", req->stream);
        res->err.actual_version = actual;
        break;
    }
}

/* Runs one append in its own transaction. */
static es_status
append_one(es_store *s, const es_append_req *req, const char *events_param,
           es_append_result *res)
{
    char expected[24];
    const char *values[3] = {req->stream, expected, events_param};
    PGresult *r;

    snprintf(expected, sizeof expected, "%" PRId64, req->expected);
    r = PQexecPrepared(s->conn, "es_append", 3, values, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        read_append_row(r, req, res);
    else
        res->status = pg_failure(s, r, "append", &res->err);
    PQclear(r);
    return res->status;
}

/*
 * Sends the n appends (whose parameters start at offs in s->params) in
 * one pipelined transaction.  Returns ES_OK with every result filled,
 * ES_EINTERNAL when the transaction failed and was rolled back (the
 * caller retries them one by one), or ES_EUNAVAILABLE.
 */
/* One append of a batch: the request, its result, where its parameter
 * starts in s->params, and its place in the caller's array. */
typedef struct slot {
    const es_append_req *req;
    es_append_result *res;
    size_t off;
    size_t index;
} slot;

/* Stream order, then the caller's order: batches lock stream rows in one
 * global order, so two concurrent batches cannot deadlock on them. */
static int
cmp_slots(const void *a, const void *b)
{
    const slot *x = a, *y = b;
    int c = strcmp(x->req->stream, y->req->stream);

    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

static es_status
append_pipelined(es_store *s, const slot *slots, size_t n)
{
    PGresult *r;
    es_status st = ES_OK;
    char expected[BATCH_MAX][24];
    es_error err;
    size_t i;

    if (PQenterPipelineMode(s->conn) != 1)
        return pg_failure(s, NULL, "enter pipeline mode", &err);
    if (PQsendQueryParams(s->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) != 1)
        goto lost;
    for (i = 0; i < n; i++) {
        const char *values[3];

        snprintf(expected[i], sizeof expected[i], "%" PRId64, slots[i].req->expected);
        values[0] = slots[i].req->stream;
        values[1] = expected[i];
        values[2] = s->params.data + slots[i].off;
        if (PQsendQueryPrepared(s->conn, "es_append", 3, values, NULL, NULL, 0) != 1)
            goto lost;
    }
    if (PQsendQueryParams(s->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
        PQpipelineSync(s->conn) != 1)
        goto lost;

    /* BEGIN, n appends, COMMIT: each a result then NULL; then the sync. */
    for (i = 0; i < n + 2; i++) {
        if ((r = PQgetResult(s->conn)) == NULL)
            goto lost;
        if (i >= 1 && i <= n && PQresultStatus(r) == PGRES_TUPLES_OK &&
            PQntuples(r) == 1) {
            read_append_row(r, slots[i - 1].req, slots[i - 1].res);
        } else if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            /* An error aborts the rest; the sync rolls the transaction back. */
            es_status fail = pg_failure(s, r, "append a batch", &err);
            if (st == ES_OK)
                st = fail == ES_EUNAVAILABLE ? fail : ES_EINTERNAL;
        }
        PQclear(r);
        if ((r = PQgetResult(s->conn)) != NULL) {       /* must end the query */
            PQclear(r);
            goto lost;
        }
    }
    r = PQgetResult(s->conn);
    if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        PQclear(r);
        goto lost;
    }
    PQclear(r);
    if (PQexitPipelineMode(s->conn) != 1)
        goto lost;
    return st;

lost:
    (void)pg_failure(s, NULL, "append a batch", &err);
    s->ready = false;
    for (i = 0; i < n; i++) {
        slots[i].res->status = ES_EUNAVAILABLE;
        slots[i].res->err = err;
    }
    return ES_EUNAVAILABLE;
}

/* Marks every result from slots[from] on, and every request of reqs from
 * index next on that has not failed already, unavailable. */
static es_status
fail_rest(const slot *slots, size_t from, size_t k, es_append_result *res,
          size_t next, size_t n, const es_error *err)
{
    for (; from < k; from++) {
        slots[from].res->status = ES_EUNAVAILABLE;
        slots[from].res->err = *err;
    }
    for (; next < n; next++) {
        if (res[next].status == ES_OK) {
            res[next].status = ES_EUNAVAILABLE;
            res[next].err = *err;
        }
    }
    return ES_EUNAVAILABLE;
}

es_status
es_store_append_many(es_store *s, const es_append_req *reqs, size_t n,
                     es_append_result *res)
{
    slot slots[BATCH_MAX];
    size_t i, k, done = 0;
    es_error err;
    es_status st;

    for (i = 0; i < n; i++)
        result_reset(&res[i]);
    while (done < n) {
        /* Validate and encode the next chunk; invalid requests answer now. */
        es_buf_reset(&s->params);
        for (k = 0; done < n && k < BATCH_MAX; done++) {
            size_t off = s->params.len;

            if ((res[done].status = check_request(s, &reqs[done], &res[done].err)) != ES_OK)
                continue;
            if ((res[done].status = build_events_param(&s->params, &reqs[done],
                                                       &res[done].err)) != ES_OK) {
                /* out of memory: this append fails, the chunk goes on */
                s->params.len = off;
                s->params.failed = false;
                if (s->params.data)
                    s->params.data[off] = '\0';
                continue;
            }
            slots[k] = (slot){&reqs[done], &res[done], off, done};
            k++;
        }
        if (k == 0)
            continue;
        if ((st = ensure_ready(s, &err)) != ES_OK)
            return fail_rest(slots, 0, k, res, done, n, &err);
        if (k > 1) {
            qsort(slots, k, sizeof *slots, cmp_slots);
            st = append_pipelined(s, slots, k);
            if (st == ES_EUNAVAILABLE)
                return fail_rest(slots, 0, k, res, done, n, &slots[0].res->err);
            if (st == ES_OK)
                continue;
            /* Rolled back as a whole: give each append its own answer. */
            for (i = 0; i < k; i++)
                result_reset(slots[i].res);
        }
        for (i = 0; i < k; i++)
            if (append_one(s, slots[i].req, s->params.data + slots[i].off,
                           slots[i].res) == ES_EUNAVAILABLE)
                return fail_rest(slots, i + 1, k, res, done, n, &slots[i].res->err);
    }
    return ES_OK;
}

es_status
es_store_append(es_store *s, const es_append_req *req, es_append_result *res)
{
    es_store_append_many(s, req, 1, res);
    return res->status;
}

/* ---- reads ------------------------------------------------------------ */

/*
 * Turns rows (column 0: stream version or NULL, then EVENT_COLUMNS) into a
 * page that takes ownership of r.
 */
static es_status
make_page(es_store *s, PGresult *r, es_position after, es_page **out, es_error *err)
{
    es_page *p = NULL;
    page_storage *ps = NULL;
    int rows = PQntuples(r), i, n = 0;
    es_status st = ES_OK;

    if ((p = calloc(1, sizeof *p)) == NULL || (ps = calloc(1, sizeof *ps)) == NULL ||
        (rows > 0 && (p->events = calloc((size_t)rows, sizeof *p->events)) == NULL)) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a page of %d events", rows);
        goto fail;
    }
    ps->res = r;
    p->priv_ = ps;
    p->next = after;
    p->stream_version = rows > 0 ? get_i64(r, 0, 0) : -1;
    for (i = 0; i < rows; i++) {
        es_event *e = &p->events[n];

        if (PQgetisnull(r, i, 1))       /* a stream with no event in range */
            continue;
        e->stream_id = PQgetvalue(r, i, 1);
        e->version = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        e->event_id = PQgetvalue(r, i, 3);
        e->type = PQgetvalue(r, i, 4);
        e->schema_version = (int)strtol(PQgetvalue(r, i, 5), NULL, 10);
        e->data = PQgetvalue(r, i, 6);
        e->metadata = PQgetvalue(r, i, 7);
        e->recorded_at = PQgetvalue(r, i, 8);
        e->position.txid = strtoull(PQgetvalue(r, i, 9), NULL, 10);
        e->position.gpos = strtoll(PQgetvalue(r, i, 10), NULL, 10);
        if (es_upcasters_needed(s->upcasters, e->type, e->schema_version)) {
            char *data, **owned;

            owned = realloc(ps->owned, (ps->nowned + 1) * sizeof *owned);
            if (owned == NULL) {
                st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not upcast an event");
                goto fail;
            }
            ps->owned = owned;
            if ((st = es_upcasters_apply(s->upcasters, e->type, &e->schema_version,
                                         e->data, &data, err)) != ES_OK)
                goto fail;
            ps->owned[ps->nowned++] = data;
            e->data = data;
        }
        p->next = e->position;
        n++;
    }
    p->count = (size_t)n;
    *out = p;
    return ES_OK;

fail:
    if (p != NULL && ps != NULL) {
        p->priv_ = ps;
        es_page_destroy(p);     /* clears r too */
    } else {
        PQclear(r);
        if (p)
            free(p->events);
        free(p);
        free(ps);
    }
    return st;
}

/* Runs a prepared read and turns its rows into a page. */
static es_status
run_read(es_store *s, const char *stmt, int nparams, const char *const *values,
         es_position after, es_page **out, es_error *err)
{
    PGresult *r;
    es_status st;

    *out = NULL;
    if ((st = ensure_ready(s, err)) != ES_OK)
        return st;
    r = PQexecPrepared(s->conn, stmt, nparams, values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = pg_failure(s, r, "read events", err);
        PQclear(r);
        return st;
    }
    return make_page(s, r, after, out, err);
}

es_status
es_store_read_stream(es_store *s, const char *stream, int64_t from, size_t limit,
                     es_direction dir, es_page **out, es_error *err)
{
    char vfrom[24], vlimit[24];
    const char *values[3] = {stream, vfrom, vlimit};
    es_position none = {0, 0};
    es_status st;

    *out = NULL;
    es_error_clear(err);
    if ((st = es_stream_id_check(stream, "stream", err)) != ES_OK)
        return st;
    if (dir == ES_FORWARD && from < 0)
        from = 0;
    snprintf(vfrom, sizeof vfrom, "%" PRId64, from);
    snprintf(vlimit, sizeof vlimit, "%zu", limit);
    st = run_read(s, dir == ES_FORWARD ? "es_stream_fwd" : "es_stream_bwd", 3, values,
                  none, out, err);
    if (st == ES_OK && (*out)->stream_version < 0) {
        es_page_destroy(*out);
        *out = NULL;
        return es_error_set(err, ES_ENOTFOUND, "stream_not_found", "stream",
                            "stream \"%s\" does not exist", stream);
    }
    return st;
}

static es_status
read_feed(es_store *s, const char *category, es_position after, size_t limit,
          es_page **out, es_error *err)
{
    char vtx[24], vpos[24], vlimit[24];
    const char *values[4] = {vtx, vpos, vlimit, category};

    snprintf(vtx, sizeof vtx, "%" PRIu64, after.txid);
    snprintf(vpos, sizeof vpos, "%" PRId64, after.gpos);
    snprintf(vlimit, sizeof vlimit, "%zu", limit);
    return run_read(s, category ? "es_category" : "es_feed", category ? 4 : 3, values,
                    after, out, err);
}

es_status
es_store_read_feed(es_store *s, es_position after, size_t limit, es_page **out,
                   es_error *err)
{
    *out = NULL;
    es_error_clear(err);
    return read_feed(s, NULL, after, limit, out, err);
}

es_status
es_store_read_category(es_store *s, const char *category, es_position after,
                       size_t limit, es_page **out, es_error *err)
{
    es_status st;

    *out = NULL;
    es_error_clear(err);
    if ((st = es_stream_id_check(category, "category", err)) != ES_OK)
        return st;
    return read_feed(s, category, after, limit, out, err);
}

es_status
es_store_feed_head(es_store *s, es_position *head, es_error *err)
{
    PGresult *r;
    es_status st;

    es_error_clear(err);
    head->txid = 0;
    head->gpos = 0;
    if ((st = ensure_ready(s, err)) != ES_OK)
        return st;
    r = PQexecPrepared(s->conn, "es_head", 0, NULL, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = pg_failure(s, r, "read the feed head", err);
        PQclear(r);
        return st;
    }
    if (PQntuples(r) == 1) {
        head->txid = get_u64(r, 0, 0);
        head->gpos = get_i64(r, 0, 1);
    }
    PQclear(r);
    return ES_OK;
}

void
es_page_destroy(es_page *p)
{
    page_storage *ps;

    if (p == NULL)
        return;
    ps = p->priv_;
    if (ps != NULL) {
        for (size_t i = 0; i < ps->nowned; i++)
            free(ps->owned[i]);
        free(ps->owned);
        PQclear(ps->res);
        free(ps);
    }
    free(p->events);
    free(p);
}
