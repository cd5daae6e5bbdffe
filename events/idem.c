/*
 * es_idem (see idem.h): rows of es_idempotency, first writer wins.
 */
#include "idem.h"
#include "core_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "store_int.h"
#include "uuid.h"

void
es_idem_hash(const char *method, const char *path, const char *body, size_t len, char out[41])
{
    es_buf b = ES_BUF_INIT;
    unsigned char d[20];

    es_buf_puts(&b, method);
    es_buf_append(&b, "\n", 1);
    es_buf_puts(&b, path);
    es_buf_append(&b, "\n", 1);
    es_buf_append(&b, body, len);
    if (es_buf_failed(&b))
        memset(d, 0, sizeof d);
    else
        es__sha1(b.data, b.len, d);
    es_buf_free(&b);
    for (int i = 0; i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

void
es_idem_record_free(es_idem_record *rec)
{
    free(rec->body);
    rec->body = NULL;
}

es_status
es_idem_get(es_store *s, const char *key, es_idem_record *rec, es_error *err)
{
    PGconn *c = es__store_conn(s, err);
    PGresult *r;
    es_status st = ES_OK;

    rec->body = NULL;
    if (c == NULL)
        return err->status;
    r = es__store_exec(s, "SELECT request_hash, status, body FROM es_idempotency "
                          "WHERE key = $1", 1, &key);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = es__store_failure(s, r, "read an idempotency record", err);
    } else if (PQntuples(r) == 0) {
        st = es_error_set(err, ES_ENOTFOUND, "not_found", NULL, "no record");
    } else {
        snprintf(rec->request_hash, sizeof rec->request_hash, "%s", PQgetvalue(r, 0, 0));
        rec->status = atoi(PQgetvalue(r, 0, 1));
        if ((rec->body = strdup(PQgetvalue(r, 0, 2))) == NULL)
            st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    }
    PQclear(r);
    return st;
}

es_status
es_idem_put(es_store *s, const char *key, const char *request_hash, int status,
            const char *body, es_idem_record *rec, es_error *err)
{
    PGconn *c = es__store_conn(s, err);
    char stext[12];
    const char *values[4] = {key, request_hash, stext, body};
    PGresult *r;
    es_status st;

    rec->body = NULL;
    if (c == NULL)
        return err->status;
    snprintf(stext, sizeof stext, "%d", status);
    r = es__store_exec(s, "INSERT INTO es_idempotency (key, request_hash, status, body) "
                          "VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING", 4, values);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        st = es__store_failure(s, r, "store an idempotency record", err);
        PQclear(r);
        return st;
    }
    if (strcmp(PQcmdTuples(r), "1") == 0) {
        PQclear(r);
        return ES_OK;
    }
    PQclear(r);
    if ((st = es_idem_get(s, key, rec, err)) != ES_OK)
        return st;
    return es_error_set(err, ES_ECONFLICT, "idempotency_race", NULL,
                        "another request stored its response first");
}
