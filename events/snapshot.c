/*
 * es_snapshot (see snapshot.h): one row per stream in es_snapshots,
 * replaced only by a snapshot of a later version.
 */
#include "snapshot.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "store_int.h"

es_status
es_snapshot_load(es_store *s, const char *stream, int state_version, json_t **state,
                 int64_t *version, es_error *err)
{
    PGconn *c = es__store_conn(s, err);
    const char *values[1] = {stream};
    PGresult *r;
    es_status st = ES_OK;
    json_error_t jerr;

    *state = NULL;
    if (c == NULL)
        return err->status;
    r = es__store_exec(s, "SELECT version, state_version, state::text FROM es_snapshots "
                          "WHERE stream_id = $1", 1, values);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = es__store_failure(s, r, "read a snapshot", err);
        goto done;
    }
    if (PQntuples(r) == 0 || atoi(PQgetvalue(r, 0, 1)) != state_version) {
        st = es_error_set(err, ES_ENOTFOUND, "snapshot_not_found", NULL,
                          "no snapshot of stream \"%s\"", stream);
        goto done;
    }
    if ((*state = json_loads(PQgetvalue(r, 0, 2), 0, &jerr)) == NULL) {
        st = es_error_set(err, ES_EINTERNAL, "snapshot_invalid", NULL,
                          "snapshot of stream \"%s\" is not JSON: %s", stream, jerr.text);
        goto done;
    }
    *version = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
done:
    PQclear(r);
    return st;
}

es_status
es_snapshot_read(es_store *s, const char *stream, int state_version, size_t limit,
                 json_t **state, int64_t *version, es_page **page, es_error *err)
{
    const char *vtext, *text;
    json_error_t jerr;
    es_status st;

    *state = NULL;
    *version = -1;
    st = es__store_read_snapshot(s, stream, state_version, limit, page, &vtext, &text, err);
    if (st != ES_OK || vtext == NULL)
        return st;
    if (text == NULL) {
        /* the event after the snapshot is not there: read it all */
        es_page_destroy(*page);
        *page = NULL;
        return es_store_read_stream(s, stream, 0, limit, ES_FORWARD, page, err);
    }
    if ((*state = json_loads(text, 0, &jerr)) == NULL) {
        es_page_destroy(*page);
        *page = NULL;
        return es_error_set(err, ES_EINTERNAL, "snapshot_invalid", NULL,
                            "snapshot of stream \"%s\" is not JSON: %s", stream, jerr.text);
    }
    *version = strtoll(vtext, NULL, 10);
    return ES_OK;
}

es_status
es_snapshot_save(es_store *s, const char *stream, int state_version, const json_t *state,
                 int64_t version, es_error *err)
{
    PGconn *c = es__store_conn(s, err);
    char vtext[24], svtext[12];
    char *text = NULL;
    const char *values[4];
    PGresult *r;
    es_status st = ES_OK;

    if (c == NULL)
        return err->status;
    if ((text = json_dumps(state, JSON_COMPACT)) == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not encode a snapshot");
    snprintf(vtext, sizeof vtext, "%" PRId64, version);
    snprintf(svtext, sizeof svtext, "%d", state_version);
    values[0] = stream;
    values[1] = vtext;
    values[2] = svtext;
    values[3] = text;
    /* Never a version the stream has not reached. */
    r = es__store_exec(s, "INSERT INTO es_snapshots AS s (stream_id, version, state_version, state) "
                          "SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM es_streams v "
                          "WHERE v.stream_id = $1 AND v.version >= $2::bigint) "
                          "ON CONFLICT (stream_id) DO UPDATE "
                          "SET version = EXCLUDED.version, state_version = EXCLUDED.state_version, "
                          "state = EXCLUDED.state, taken_at = now() "
                          "WHERE s.version < EXCLUDED.version OR s.state_version <> EXCLUDED.state_version", 4, values);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        st = es__store_failure(s, r, "save a snapshot", err);
    PQclear(r);
    free(text);
    return st;
}
