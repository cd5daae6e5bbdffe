/*
 * The query documents (see views.h).  Hash fields that projections.c
 * stores as JSON text (a profile, an order's items and states, history
 * entries) are embedded as JSON; numbers stored by HSET/HINCRBY come back
 * as integers; a field a document has but the hash lacks is null.
 */
#include "views.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doc.h"
#include "event.h"
#include "projections.h"

/* ---- reply helpers ---------------------------------------------------- */

/* Command reply i of the index, or NULL when the projection has no
 * version (no replies at all). */
static const redisReply *
idx_at(const read_result *r, size_t i)
{
    return i < r->nidx ? r->idx[i] : NULL;
}

static const redisReply *
det_at(const read_result *r, size_t i)
{
    return i < r->ndet ? r->det[i] : NULL;
}

/* A hash that exists: HGETALL of a missing key is an empty array. */
static bool
hash_found(const redisReply *h, const char *id_field)
{
    return h != NULL && h->type == REDIS_REPLY_ARRAY && es_rm_hash_get(h, id_field) != NULL;
}

/* A new JSON string; text that is not UTF-8 (which projections never
 * write) is repaired rather than dropped. */
static json_t *
jstr(const char *s)
{
    json_t *v;
    char *copy;

    if (s == NULL)
        return json_null();
    if ((v = json_string(s)) != NULL || (copy = strdup(s)) == NULL)
        return v;
    es_text_make_utf8(copy);
    v = json_string(copy);
    free(copy);
    return v;
}

static json_t *
jint(const char *s)
{
    char *end;
    long long n;

    if (s == NULL || *s == '\0')
        return json_null();
    n = strtoll(s, &end, 10);
    return *end == '\0' ? json_integer((json_int_t)n) : jstr(s);
}

/* JSON text as a value; text that does not parse stays a string. */
static json_t *
jtext(const char *s)
{
    json_t *v;

    if (s == NULL)
        return json_null();
    v = json_loads(s, JSON_DECODE_ANY, NULL);
    return v ? v : jstr(s);
}

static void
put_str(json_t *d, const redisReply *h, const char *field)
{
    json_object_set_new(d, field, jstr(es_rm_hash_get(h, field)));
}

static void
put_int(json_t *d, const redisReply *h, const char *field)
{
    json_object_set_new(d, field, jint(es_rm_hash_get(h, field)));
}

static void
put_json(json_t *d, const redisReply *h, const char *field)
{
    json_object_set_new(d, field, jtext(es_rm_hash_get(h, field)));
}

/* Members only some documents have (a rejected user's reason, ...). */
static void
put_opt_str(json_t *d, const redisReply *h, const char *field)
{
    if (es_rm_hash_get(h, field) != NULL)
        put_str(d, h, field);
}

/* Pairs of a ZREVRANGEBYSCORE ... WITHSCORES reply. */
static size_t
page_len(const redisReply *z)
{
    return z != NULL && z->type == REDIS_REPLY_ARRAY ? z->elements / 2 : 0;
}

static const char *
page_member(const redisReply *z, size_t i)
{
    const redisReply *m = z->element[2 * i];
    return m->type == REDIS_REPLY_STRING ? m->str : "";
}

static const char *
page_score(const redisReply *z, size_t i)
{
    const redisReply *s = z->element[2 * i + 1];
    return s->type == REDIS_REPLY_STRING ? s->str : "0";
}

static void
page_index(const view_args *a, read_cmds *out)
{
    char count[24];

    /* one more than asked: whether it comes decides next_cursor */
    snprintf(count, sizeof count, "%ld", a->limit + 1);
    read_cmd(out, "ZREVRANGEBYSCORE", "%s", a->zset);
    read_arg(out, a->max);
    read_arg(out, "-inf");
    read_arg(out, "WITHSCORES");
    read_arg(out, "LIMIT");
    read_arg(out, "0");
    read_arg(out, count);
}

/* {<list>: [docs], "next_cursor": the last score, or null on the last page} */
static json_t *
page_doc(const view_args *a, const redisReply *z, const char *list, json_t *docs)
{
    size_t n = page_len(z);
    json_t *next = n > (size_t)a->limit ? jstr(page_score(z, (size_t)a->limit - 1)) : json_null();

    return json_pack("{s:o, s:o}", list, docs, "next_cursor", next);
}

/* The second read of a page: the hash (key kind_fmt with the member) of
 * each member the first read listed. */
static void
page_detail(const view_args *a, const redisReply *const *idx, size_t nidx, const char *kind_fmt,
            read_cmds *out)
{
    size_t i, n = nidx == 1 ? page_len(idx[0]) : 0;

    for (i = 0; i < n && i < (size_t)a->limit; i++)
        read_cmd(out, "HGETALL", kind_fmt, page_member(idx[0], i));
}

/* A page's answer: doc() of each hash that has its id_field, then
 * next_cursor. */
static void
page_answer(const view_args *a, const read_result *r, const char *id_field, const char *list,
            json_t *(*doc)(const redisReply *h), es_http_res *res)
{
    const redisReply *z = idx_at(r, 0);
    json_t *docs = json_array();
    size_t i;

    for (i = 0; i < page_len(z) && i < (size_t)a->limit; i++) {
        const redisReply *h = det_at(r, i);
        if (hash_found(h, id_field))
            json_array_append_new(docs, doc(h));
    }
    es_http_res_json(res, 200, page_doc(a, z, list, docs));
}

static void
not_found(es_http_res *res, const char *code, const char *what, const char *id)
{
    es_http_res_error(res, 404, code, NULL, NULL, "%s \"%s\" not found", what, id);
}

/* ---- users ------------------------------------------------------------ */

static json_t *
user_doc(const redisReply *h)
{
    json_t *d = json_object();

    put_str(d, h, "user_id");
    put_str(d, h, "email");
    put_str(d, h, "name");
    put_str(d, h, "status");
    put_json(d, h, "profile");
    put_opt_str(d, h, "reason");
    put_str(d, h, "created_at");
    put_str(d, h, "updated_at");
    return d;
}

static void
user_index(const void *args, read_cmds *out)
{
    const view_args *a = args;

    read_cmd(out, "HGETALL", PJ_KEY_USER, a->id);
}

static void
user_answer(const view_args *a, const read_result *r, es_http_res *res)
{
    const redisReply *h = idx_at(r, 0);

    if (!hash_found(h, "user_id"))
        not_found(res, "user_not_found", "user", a->id);
    else
        es_http_res_json(res, 200, user_doc(h));
}

const view view_user = {{"users", user_index, NULL}, user_answer};

static void
email_index(const void *args, read_cmds *out)
{
    const view_args *a = args;

    read_cmd(out, "GET", PJ_KEY_EMAIL, a->email_key);
}

static void
email_detail(const void *args, const redisReply *const *idx, size_t nidx, read_cmds *out)
{
    (void)args;
    if (nidx == 1 && idx[0]->type == REDIS_REPLY_STRING)
        read_cmd(out, "HGETALL", PJ_KEY_USER, idx[0]->str);
}

static void
email_answer(const view_args *a, const read_result *r, es_http_res *res)
{
    const redisReply *h = det_at(r, 0);

    if (!hash_found(h, "user_id"))
        es_http_res_error(res, 404, "user_not_found", NULL, NULL, "no user with e-mail \"%s\"",
                          a->email_key);
    else
        es_http_res_json(res, 200, user_doc(h));
}

const view view_user_by_email = {{"users", email_index, email_detail}, email_answer};

/* ---- orders ----------------------------------------------------------- */

/* Member field of hash h: a string, an integer or JSON text (doc.c). */
static void
order_str(doc_obj *o, const redisReply *h, const char *field)
{
    doc_key(o, field);
    doc_str(o->b, es_rm_hash_get(h, field));
}

static void
order_json(doc_obj *o, const redisReply *h, const char *field)
{
    doc_key(o, field);
    doc_text(o->b, es_rm_hash_get(h, field));
}

/*
 * The order document, with its history when hist is not NULL, written
 * straight into b: the hot view, so no jansson tree (doc.h); the members
 * and their order are those the other views' json_t documents would have.
 */
static void
order_doc(es_buf *b, const redisReply *h, const redisReply *hist)
{
    doc_obj o;
    size_t i;

    doc_begin(&o, b);
    order_str(&o, h, "order_id");
    order_str(&o, h, "customer_id");
    order_json(&o, h, "items");
    doc_key(&o, "total");
    doc_int(b, es_rm_hash_get(h, "total"));
    order_str(&o, h, "status");
    if (es_rm_hash_get(h, "reason") != NULL)
        order_str(&o, h, "reason");
    order_json(&o, h, "payment");
    order_json(&o, h, "inventory");
    order_json(&o, h, "shipment");
    if (es_rm_hash_get(h, "ship_to") != NULL)
        order_json(&o, h, "ship_to");
    if (hist != NULL) {
        bool some = false;

        /* as json_list: the list's strings, each as JSON text */
        doc_key(&o, "history");
        es_buf_append(b, "[", 1);
        for (i = 0; hist->type == REDIS_REPLY_ARRAY && i < hist->elements; i++)
            if (hist->element[i]->type == REDIS_REPLY_STRING) {
                if (some)
                    es_buf_append(b, ",", 1);
                some = true;
                doc_text(b, hist->element[i]->str);
            }
        es_buf_append(b, "]", 1);
    }
    order_str(&o, h, "created_at");
    order_str(&o, h, "updated_at");
    doc_end(&o);
}

/* A 200 whose body the caller writes into res->body. */
static void
doc_start(es_http_res *res)
{
    es_buf_reset(&res->body);
    res->status = 200;
}

/* A body that could not be made answers as es_http_res_json's does. */
static void
doc_finish(es_http_res *res)
{
    if (es_buf_failed(&res->body))
        es_http_res_json(res, 500, NULL);
}

static void
order_index(const void *args, read_cmds *out)
{
    const view_args *a = args;

    read_cmd(out, "HGETALL", PJ_KEY_ORDER, a->id);
    read_cmd(out, "LRANGE", PJ_KEY_ORDER_HISTORY, a->id);
    read_arg(out, "0");
    read_arg(out, "-1");
}

static void
order_answer(const view_args *a, const read_result *r, es_http_res *res)
{
    const redisReply *h = idx_at(r, 0);

    if (!hash_found(h, "order_id")) {
        not_found(res, "order_not_found", "order", a->id);
        return;
    }
    doc_start(res);
    order_doc(&res->body, h, idx_at(r, 1));
    doc_finish(res);
}

const view view_order = {{"orders", order_index, NULL}, order_answer};

static void
customer_orders_index(const void *args, read_cmds *out)
{
    page_index(args, out);
}

static void
customer_orders_detail(const void *args, const redisReply *const *idx, size_t nidx,
                       read_cmds *out)
{
    page_detail(args, idx, nidx, PJ_KEY_ORDER, out);
}

/* page_answer's document, written as order_doc is:
 * {"orders":[orders without history],"next_cursor":...} */
static void
customer_orders_answer(const view_args *a, const read_result *r, es_http_res *res)
{
    const redisReply *z = idx_at(r, 0);
    size_t i, n = page_len(z);
    bool some = false;
    doc_obj o;

    doc_start(res);
    doc_begin(&o, &res->body);
    doc_key(&o, "orders");
    es_buf_append(&res->body, "[", 1);
    for (i = 0; i < n && i < (size_t)a->limit; i++) {
        const redisReply *h = det_at(r, i);

        if (!hash_found(h, "order_id"))
            continue;
        if (some)
            es_buf_append(&res->body, ",", 1);
        some = true;
        order_doc(&res->body, h, NULL);
    }
    es_buf_append(&res->body, "]", 1);
    doc_key(&o, "next_cursor");
    doc_str(&res->body, n > (size_t)a->limit ? page_score(z, (size_t)a->limit - 1) : NULL);
    doc_end(&o);
    doc_finish(res);
}

const view view_customer_orders = {
    {"orders", customer_orders_index, customer_orders_detail}, customer_orders_answer};

/* ---- accounts, stock, dashboard --------------------------------------- */

static void
account_index(const void *args, read_cmds *out)
{
    const view_args *a = args;

    read_cmd(out, "HGETALL", PJ_KEY_ACCOUNT, a->id);
}

static void
account_answer(const view_args *a, const read_result *r, es_http_res *res)
{
    const redisReply *h = idx_at(r, 0);
    json_t *d;

    if (!hash_found(h, "customer_id")) {
        es_http_res_error(res, 404, "account_not_found", NULL, NULL,
                          "customer \"%s\" has no account", a->id);
        return;
    }
    d = json_object();
    put_str(d, h, "customer_id");
    json_object_set_new(d, "balance",
                        jint(es_rm_hash_get(h, "balance") ? es_rm_hash_get(h, "balance") : "0"));
    put_str(d, h, "updated_at");
    es_http_res_json(res, 200, d);
}

const view view_account = {{"accounts", account_index, NULL}, account_answer};

static void
stock_index(const void *args, read_cmds *out)
{
    const view_args *a = args;

    read_cmd(out, "HGETALL", PJ_KEY_STOCK, a->id);
}

static void
stock_answer(const view_args *a, const read_result *r, es_http_res *res)
{
    const redisReply *h = idx_at(r, 0);
    const char *s;
    long long on_hand, reserved;

    if (!hash_found(h, "sku")) {
        not_found(res, "sku_not_found", "sku", a->id);
        return;
    }
    on_hand = (s = es_rm_hash_get(h, "on_hand")) ? strtoll(s, NULL, 10) : 0;
    reserved = (s = es_rm_hash_get(h, "reserved")) ? strtoll(s, NULL, 10) : 0;
    es_http_res_json(res, 200,
                     json_pack("{s:o, s:I, s:I, s:I, s:o}", "sku", jstr(es_rm_hash_get(h, "sku")),
                               "on_hand", (json_int_t)on_hand, "reserved", (json_int_t)reserved,
                               "available", (json_int_t)(on_hand - reserved), "updated_at",
                               jstr(es_rm_hash_get(h, "updated_at"))));
}

const view view_stock = {{"inventory", stock_index, NULL}, stock_answer};

static void
dashboard_index(const void *args, read_cmds *out)
{
    (void)args;
    read_cmd(out, "HGETALL", PJ_KEY_COUNTERS);
}

static void
dashboard_answer(const view_args *a, const read_result *r, es_http_res *res)
{
    const redisReply *h = idx_at(r, 0);
    json_t *counters = json_object();
    size_t i;

    (void)a;
    for (i = 0; h != NULL && h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2)
        if (h->element[i]->type == REDIS_REPLY_STRING && h->element[i + 1]->type == REDIS_REPLY_STRING)
            json_object_set_new(counters, h->element[i]->str, jint(h->element[i + 1]->str));
    es_http_res_json(res, 200, json_pack("{s:o}", "counters", counters));
}

const view view_dashboard = {{"dashboard", dashboard_index, NULL}, dashboard_answer};

/* ---- sagas ------------------------------------------------------------ */

static json_t *
saga_summary(const redisReply *h)
{
    json_t *d = json_object();

    put_str(d, h, "saga_id");
    put_str(d, h, "type");
    put_str(d, h, "state");
    put_str(d, h, "correlation_id");
    put_str(d, h, "started_at");
    put_str(d, h, "updated_at");
    put_opt_str(d, h, "error");
    return d;
}

/* One step or compensation; its name comes from the list, the rest from
 * its hash (each missing field null). */
static json_t *
step_doc(const char *name, const redisReply *h)
{
    json_t *d = json_object();

    json_object_set_new(d, "name", jstr(name));
    put_str(d, h, "status");
    put_int(d, h, "attempts");
    put_str(d, h, "started_at");
    put_str(d, h, "finished_at");
    put_str(d, h, "error");
    return d;
}

static size_t
list_len(const redisReply *l)
{
    return l != NULL && l->type == REDIS_REPLY_ARRAY ? l->elements : 0;
}

static const char *
list_at(const redisReply *l, size_t i)
{
    return l->element[i]->type == REDIS_REPLY_STRING ? l->element[i]->str : "";
}

static void
saga_index(const void *args, read_cmds *out)
{
    const view_args *a = args;

    read_cmd(out, "HGETALL", PJ_KEY_SAGA, a->id);
    read_cmd(out, "LRANGE", PJ_KEY_SAGA_STEPS, a->id);
    read_arg(out, "0");
    read_arg(out, "-1");
    read_cmd(out, "LRANGE", PJ_KEY_SAGA_COMPS, a->id);
    read_arg(out, "0");
    read_arg(out, "-1");
}

static void
saga_detail(const void *args, const redisReply *const *idx, size_t nidx, read_cmds *out)
{
    const view_args *a = args;
    size_t i;

    if (nidx != 3)
        return;
    for (i = 0; i < list_len(idx[1]); i++)
        read_cmd(out, "HGETALL", PJ_KEY_SAGA_STEP, a->id, list_at(idx[1], i));
    for (i = 0; i < list_len(idx[2]); i++)
        read_cmd(out, "HGETALL", PJ_KEY_SAGA_COMP, a->id, list_at(idx[2], i));
}

static void
saga_answer(const view_args *a, const read_result *r, es_http_res *res)
{
    const redisReply *h = idx_at(r, 0), *steps = idx_at(r, 1), *comps = idx_at(r, 2);
    size_t nsteps = list_len(steps), i;
    json_t *d, *s, *c;

    if (!hash_found(h, "saga_id")) {
        not_found(res, "saga_not_found", "saga", a->id);
        return;
    }
    d = saga_summary(h);
    s = json_array();
    c = json_array();
    for (i = 0; i < nsteps; i++)
        json_array_append_new(s, step_doc(list_at(steps, i), det_at(r, i)));
    for (i = 0; i < list_len(comps); i++)
        json_array_append_new(c, step_doc(list_at(comps, i), det_at(r, nsteps + i)));
    json_object_set_new(d, "steps", s);
    json_object_set_new(d, "compensations", c);
    es_http_res_json(res, 200, d);
}

const view view_saga = {{"sagas", saga_index, saga_detail}, saga_answer};

static void
sagas_index(const void *args, read_cmds *out)
{
    page_index(args, out);
}

static void
sagas_detail(const void *args, const redisReply *const *idx, size_t nidx, read_cmds *out)
{
    page_detail(args, idx, nidx, PJ_KEY_SAGA, out);
}

static void
sagas_answer(const view_args *a, const read_result *r, es_http_res *res)
{
    page_answer(a, r, "saga_id", "sagas", saga_summary, res);
}

const view view_sagas = {{"sagas", sagas_index, sagas_detail}, sagas_answer};
