/*
 * es_audit (see audit.h): counts, tallies and selections over es_events
 * for esctl.  The server does the counting and summing; what is selected
 * the caller folds.  Each statement's text is fixed and every name the
 * caller gives travels as a parameter (the types and streams as JSON
 * arrays), so a hostile category, type, stream, field name or value is
 * only a value that matches nothing.
 */
#include "audit.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* One row per (stream, key, type); the ORDER BY keeps a group's rows
 * together, and "C" makes that order the bytes' (strcmp's). */
static const char tally_sql[] =
    "SELECT s, k, type, n, total FROM ("
    "SELECT CASE WHEN $3::boolean THEN stream_id END AS s, data->>$4::text AS k, type, "
    "count(*) AS n, coalesce(sum((data->>$5::text)::bigint), 0) AS total "
    "FROM es_events WHERE category = $1 "
    "AND type IN (SELECT jsonb_array_elements_text($2::jsonb)) "
    "GROUP BY 1, 2, 3) t "
    "ORDER BY s COLLATE \"C\", k COLLATE \"C\"";

/* The events of a select, in one of two orders.  $3 NULL matches every
 * event; $5 NULL every stream; $6 NULL is no limit.  "C" makes the
 * stream order the bytes' (strcmp's). */
#define SELECT_SQL                                                                         \
    "SELECT " ES__EVENT_COLUMNS " FROM es_events WHERE category = $1 "                     \
    "AND type IN (SELECT jsonb_array_elements_text($2::jsonb)) "                           \
    "AND ($3::text IS NULL OR data->>$3::text = $4::text) "                                \
    "AND ($5::jsonb IS NULL OR stream_id IN (SELECT jsonb_array_elements_text($5::jsonb))) "
static const char *const select_sql[] = {
    [ES_AUDIT_BY_STREAM] = SELECT_SQL "ORDER BY stream_id COLLATE \"C\", version LIMIT $6::bigint",
    [ES_AUDIT_NEWEST_FIRST] =
        SELECT_SQL "ORDER BY recorded_at DESC, global_position DESC LIMIT $6::bigint",
};

/* A count or sum the server sent as text, into *v. */
static es_status
parse_int(const char *text, const char *what, int64_t *v, es_error *err)
{
    char *end;
    long long n;

    errno = 0;
    n = strtoll(text, &end, 10);
    if (errno == ERANGE)
        return es_error_set(err, ES_EINVALID, "audit_out_of_range", NULL,
                            "%s %s is out of range", what, text);
    if (end == text || *end != '\0')
        return es_error_set(err, ES_EINTERNAL, NULL, NULL,
                            "the store answered \"%s\" for %s", text, what);
    *v = (int64_t)n;
    return ES_OK;
}

/* Runs sql, which answers one count, into *count. */
static es_status
count_one(es_store *s, const char *sql, int n, const char *const *values, const char *what,
          int64_t *count, es_error *err)
{
    PGconn *c = es__store_conn(s, err);
    PGresult *r;
    es_status st;

    if (c == NULL)
        return err->status;
    r = PQexecParams(c, sql, n, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        st = es__store_failure(s, r, what, err);
    else
        st = parse_int(PQgetvalue(r, 0, 0), "the count of events", count, err);
    PQclear(r);
    return st;
}

es_status
es_audit_count(es_store *s, int64_t *count, es_error *err)
{
    return count_one(s, "SELECT count(*) FROM es_events", 0, NULL, "count the events", count,
                     err);
}

es_status
es_audit_count_after(es_store *s, es_position after, int64_t *count, es_error *err)
{
    char txid[24], gpos[24];
    const char *values[2] = {txid, gpos};

    snprintf(txid, sizeof txid, "%" PRIu64, after.txid);
    snprintf(gpos, sizeof gpos, "%" PRId64, after.gpos);
    return count_one(s, "SELECT count(*) FROM es_events WHERE (transaction_id, global_position) "
                        "> ($1::xid8, $2::bigint)",
                     2, values, "count the events after a position", count, err);
}

es_status
es_audit_feed_locate(es_store *s, es_position pos, int64_t *ordinal, char *event_id,
                     es_error *err)
{
    char txid[24], gpos[24];
    const char *values[2] = {txid, gpos};
    PGconn *c = es__store_conn(s, err);
    PGresult *r;
    es_status st;

    *ordinal = 0;
    event_id[0] = '\0';
    if (c == NULL)
        return err->status;
    snprintf(txid, sizeof txid, "%" PRIu64, pos.txid);
    snprintf(gpos, sizeof gpos, "%" PRId64, pos.gpos);
    r = PQexecParams(c, "SELECT (SELECT count(*) FROM es_events WHERE "
                        "(transaction_id, global_position) <= ($1::xid8, $2::bigint)), "
                        "(SELECT event_id::text FROM es_events WHERE transaction_id = $1::xid8 "
                        "AND global_position = $2::bigint)",
                     2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        st = es__store_failure(s, r, "locate a position in the feed", err);
    } else if (PQgetisnull(r, 0, 1)) {
        st = es_error_set(err, ES_ENOTFOUND, "position_not_found", NULL,
                          "no event of the store is at position %" PRIu64 "-%" PRId64, pos.txid,
                          pos.gpos);
    } else {
        snprintf(event_id, ES_UUID_LEN + 1, "%s", PQgetvalue(r, 0, 1));
        st = parse_int(PQgetvalue(r, 0, 0), "the ordinal of an event", ordinal, err);
    }
    PQclear(r);
    return st;
}

/* names (n of them: a select's types, or its streams when stream) as a
 * JSON array (malloc'd), or NULL with err set.  Types may not repeat. */
static char *
names_json(const char *const *names, size_t n, bool stream, es_error *err)
{
    const char *what = stream ? "stream" : "type";
    json_t *a = json_array();
    char *text = NULL;
    size_t i, j;

    if (a == NULL) {
        es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a list of %ss", what);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        if (names[i] == NULL) {
            es_error_set(err, ES_EINVALID, stream ? "audit_stream_missing" : "audit_type_missing",
                         stream ? "streams" : "types", "%s %zu of a read is missing", what, i);
            goto done;
        }
        for (j = 0; !stream && j < i; j++)
            if (strcmp(names[i], names[j]) == 0) {
                es_error_set(err, ES_EINVALID, "audit_type_repeated", "types",
                             "type \"%s\" is named twice in a read", names[i]);
                goto done;
            }
        if (json_array_append_new(a, json_string(names[i])) != 0) {
            es_error_set(err, ES_EINVALID, stream ? "audit_stream_invalid" : "audit_type_invalid",
                         stream ? "streams" : "types", "%s %zu of a read is not valid UTF-8",
                         what, i);
            goto done;
        }
    }
    if ((text = json_dumps(a, JSON_COMPACT)) == NULL)
        es_error_set(err, ES_ENOMEM, NULL, NULL, "could not encode a list of %ss", what);
done:
    json_decref(a);
    return text;
}

/* The index of type in q->types; the query named only those. */
static size_t
type_index(const es_audit_query *q, const char *type)
{
    size_t i;

    for (i = 0; i < q->ntypes; i++)
        if (strcmp(q->types[i], type) == 0)
            return i;
    return q->ntypes;
}

static bool
same_text(const char *a, const char *b)
{
    return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

/* Folds the rows of r, a group's rows next to each other, into t. */
static es_status
fold_rows(const es_audit_query *q, PGresult *r, es_audit_tally *t, es_error *err)
{
    int rows = PQntuples(r), i;
    es_audit_group *g = NULL;

    if (rows > 0 && (t->groups = calloc((size_t)rows, sizeof *t->groups)) == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate %d groups", rows);
    for (i = 0; i < rows; i++) {
        const char *stream = PQgetisnull(r, i, 0) ? NULL : PQgetvalue(r, i, 0);
        const char *key = PQgetisnull(r, i, 1) ? NULL : PQgetvalue(r, i, 1);
        size_t ti = type_index(q, PQgetvalue(r, i, 2));
        es_status st;

        if (ti == q->ntypes)
            return es_error_set(err, ES_EINTERNAL, NULL, NULL,
                                "the store tallied type \"%s\", which was not asked for",
                                PQgetvalue(r, i, 2));
        if (g == NULL || !same_text(g->stream, stream) || !same_text(g->key, key)) {
            g = &t->groups[t->count++];
            g->stream = stream;
            g->key = key;
        }
        if ((st = parse_int(PQgetvalue(r, i, 3), "the count of events", &g->count[ti],
                            err)) != ES_OK ||
            (st = parse_int(PQgetvalue(r, i, 4), "a sum of events", &g->sum[ti], err)) != ES_OK)
            return st;
    }
    return ES_OK;
}

es_status
es_audit_tally_read(es_store *s, const es_audit_query *q, es_audit_tally **out, es_error *err)
{
    PGconn *c;
    PGresult *r = NULL;
    es_audit_tally *t = NULL;
    char *types = NULL;
    const char *values[5];
    es_status st;

    *out = NULL;
    if (q->category == NULL)
        return es_error_set(err, ES_EINVALID, "audit_category_missing", "category",
                            "a tally needs a category");
    if (q->types == NULL || q->ntypes == 0 || q->ntypes > ES_AUDIT_TYPES_MAX)
        return es_error_set(err, ES_EINVALID, "audit_types_count", "types",
                            "a tally counts 1 to %d types, not %zu", ES_AUDIT_TYPES_MAX,
                            q->types ? q->ntypes : 0);
    if ((types = names_json(q->types, q->ntypes, false, err)) == NULL)
        return err->status;
    if ((c = es__store_conn(s, err)) == NULL) {
        st = err->status;
        goto done;
    }
    values[0] = q->category;
    values[1] = types;
    values[2] = q->by_stream ? "true" : "false";
    values[3] = q->group_field;         /* NULL is SQL NULL: one group */
    values[4] = q->sum_field;           /* NULL: every sum is 0 */
    r = PQexecParams(c, tally_sql, 5, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = es__store_failure(s, r, "tally the events", err);
        goto done;
    }
    if ((t = calloc(1, sizeof *t)) == NULL) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not allocate a tally");
        goto done;
    }
    t->priv_ = r;
    r = NULL;
    if ((st = fold_rows(q, t->priv_, t, err)) != ES_OK)
        goto done;
    *out = t;
    t = NULL;
done:
    es_audit_tally_destroy(t);
    PQclear(r);
    free(types);
    return st;
}

void
es_audit_tally_destroy(es_audit_tally *t)
{
    if (t == NULL)
        return;
    PQclear(t->priv_);
    free(t->groups);
    free(t);
}

es_status
es_audit_events_read(es_store *s, const es_audit_select *q, es_page **out, es_error *err)
{
    PGconn *c;
    PGresult *r;
    char *types = NULL, *streams = NULL, limit[24];
    const char *values[6];
    es_status st;

    *out = NULL;
    if (q->category == NULL)
        return es_error_set(err, ES_EINVALID, "audit_category_missing", "category",
                            "a read of events needs a category");
    if (q->types == NULL || q->ntypes == 0 || q->ntypes > ES_AUDIT_TYPES_MAX)
        return es_error_set(err, ES_EINVALID, "audit_types_count", "types",
                            "a read of events names 1 to %d types, not %zu",
                            ES_AUDIT_TYPES_MAX, q->types ? q->ntypes : 0);
    if ((q->match_field == NULL) != (q->match_value == NULL))
        return es_error_set(err, ES_EINVALID, "audit_match_incomplete", "match_field",
                            "a read of events matches a data field only with both its name "
                            "and its value");
    if (q->nstreams > 0 && q->streams == NULL)
        return es_error_set(err, ES_EINVALID, "audit_stream_missing", "streams",
                            "a read of events names %zu streams but gives none", q->nstreams);
    if ((unsigned)q->order > ES_AUDIT_NEWEST_FIRST)
        return es_error_set(err, ES_EINVALID, "audit_order_invalid", "order",
                            "%d is not an order of events", (int)q->order);
    if ((types = names_json(q->types, q->ntypes, false, err)) == NULL ||
        (q->nstreams > 0 && (streams = names_json(q->streams, q->nstreams, true, err)) == NULL)) {
        st = err->status;
        goto done;
    }
    if ((c = es__store_conn(s, err)) == NULL) {
        st = err->status;
        goto done;
    }
    snprintf(limit, sizeof limit, "%zu", q->limit);
    values[0] = q->category;
    values[1] = types;
    values[2] = q->match_field;
    values[3] = q->match_value;
    values[4] = streams;                /* NULL: every stream */
    values[5] = q->limit > 0 ? limit : NULL;
    r = PQexecParams(c, select_sql[q->order], 6, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = es__store_failure(s, r, "read events", err);
        PQclear(r);
        goto done;
    }
    st = es__store_page(s, r, out, err);        /* the page owns r */
done:
    free(streams);
    free(types);
    return st;
}

/* ---- browsing ------------------------------------------------------------- */

/* The streams of a prefix, from a key: the range [prefix, prefix ||
 * U+10FFFF) is one walk of es_streams' primary key under a code-point
 * collation; starts_with keeps the answer right under any other. */
static const char streams_sql[] =
    "SELECT stream_id, version FROM es_streams "
    "WHERE stream_id >= $1::text AND stream_id < $1::text || chr(1114111) "
    "AND starts_with(stream_id, $1::text) AND stream_id > $2::text "
    "ORDER BY stream_id LIMIT $3::bigint";

static bool
browse_text_ok(const char *s)
{
    json_t *j;

    if (strlen(s) > 200)
        return false;
    j = json_string(s);         /* NULL when s is not UTF-8 */
    json_decref(j);
    return j != NULL;
}

es_status
es_audit_streams_list(es_store *s, const char *prefix, const char *after, size_t limit,
                      bool (*visit)(const es_audit_stream *st, void *arg), void *arg,
                      es_error *err)
{
    char lim[24];
    const char *values[3];
    PGconn *c;
    PGresult *r;
    es_status st = ES_OK;
    int i, n;

    if (prefix == NULL)
        prefix = "";
    if (after == NULL)
        after = "";
    if (!browse_text_ok(prefix))
        return es_error_set(err, ES_EINVALID, "prefix_invalid", "prefix",
                            "prefix must be UTF-8 text of at most 200 bytes");
    if (!browse_text_ok(after))
        return es_error_set(err, ES_EINVALID, "after_invalid", "after",
                            "after must be UTF-8 text of at most 200 bytes");
    if (limit < 1 || limit > ES_AUDIT_STREAMS_MAX)
        return es_error_set(err, ES_EINVALID, "limit_invalid", "limit",
                            "a page of streams has 1 to %d streams, not %zu",
                            ES_AUDIT_STREAMS_MAX, limit);
    if ((c = es__store_conn(s, err)) == NULL)
        return err->status;
    snprintf(lim, sizeof lim, "%zu", limit);
    values[0] = prefix;
    values[1] = after;
    values[2] = lim;
    r = PQexecParams(c, streams_sql, 3, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = es__store_failure(s, r, "list streams", err);
        PQclear(r);
        return st;
    }
    n = PQntuples(r);
    for (i = 0; i < n && st == ES_OK; i++) {
        es_audit_stream row = {PQgetvalue(r, i, 0), 0};

        if ((st = parse_int(PQgetvalue(r, i, 1), "a stream's version", &row.version, err)) ==
                ES_OK &&
            !visit(&row, arg))
            break;
    }
    PQclear(r);
    return st;
}

es_status
es_audit_event_at(es_store *s, es_position pos, es_page **out, es_error *err)
{
    char txid[24], gpos[24];
    const char *values[2] = {txid, gpos};
    PGconn *c;
    PGresult *r;
    es_status st;

    *out = NULL;
    if ((c = es__store_conn(s, err)) == NULL)
        return err->status;
    snprintf(txid, sizeof txid, "%" PRIu64, pos.txid);
    snprintf(gpos, sizeof gpos, "%" PRId64, pos.gpos);
    r = PQexecParams(c, "SELECT " ES__EVENT_COLUMNS " FROM es_events "
                        "WHERE transaction_id = $1::xid8 AND global_position = $2::bigint",
                     2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = es__store_failure(s, r, "read the event at a position", err);
        PQclear(r);
        return st;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        return es_error_set(err, ES_ENOTFOUND, "position_not_found", "position",
                            "no event of the store is at position %" PRIu64 "-%" PRId64,
                            pos.txid, pos.gpos);
    }
    return es__store_page(s, r, out, err);      /* the page owns r */
}

static const char correlated_sql[] =
    "SELECT " ES__EVENT_COLUMNS " FROM es_events "
    "WHERE left(metadata ->> 'correlation_id', 200) = $1::text "
    "AND metadata ->> 'correlation_id' = $1::text "
    "AND (transaction_id, global_position) > ($2::xid8, $3::bigint) "
    /* as the feed: a page never ends past an event still to commit before
     * it, which its next page would then skip */
    "AND transaction_id < " ES__HORIZON " "
    "ORDER BY left(metadata ->> 'correlation_id', 200), transaction_id, global_position "
    "LIMIT $4::bigint";

es_status
es_audit_correlated(es_store *s, const char *correlation_id, es_position after, size_t limit,
                    es_page **out, es_error *err)
{
    char txid[24], gpos[24], lim[24];
    const char *values[4] = {correlation_id, txid, gpos, lim};

    *out = NULL;
    if (correlation_id == NULL || correlation_id[0] == '\0' || !browse_text_ok(correlation_id))
        return es_error_set(err, ES_EINVALID, "correlation_id_invalid", "correlation_id",
                            "a correlation id is UTF-8 text of 1 to 200 bytes");
    if (limit < 1 || limit > ES_AUDIT_STREAMS_MAX)
        return es_error_set(err, ES_EINVALID, "limit_invalid", "limit",
                            "a page of correlated events has 1 to %d events, not %zu",
                            ES_AUDIT_STREAMS_MAX, limit);
    snprintf(txid, sizeof txid, "%" PRIu64, after.txid);
    snprintf(gpos, sizeof gpos, "%" PRId64, after.gpos);
    snprintf(lim, sizeof lim, "%zu", limit);
    /* under the store's read budget, as the feed's pages: a page of big
     * events stops near its bytes (truncated), not at limit rows */
    return es__store_read(s, correlated_sql, 4, values, limit, after, out, err);
}
