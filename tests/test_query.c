/*
 * Integration tests of es-query over real HTTP and a real Redis: every
 * endpoint's document, its errors, cursor paging, ETags, metrics, and
 * read-your-writes (a wait that a later batch satisfies, a wait that runs
 * out), then Redis going away and coming back.
 *
 * The read models are seeded without es-projector: hand-written events go
 * through the projections of projector/projections.c into es_rm_apply, as the
 * next feed sequences after each projection's checkpoint.  They go to a
 * Redis of the test's own (started on a free port and stopped at the end),
 * because fake sequences in the shared one would advance the checkpoints
 * of a live es-projector, and because the last test stops Redis.
 */
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <errno.h>
#include <sys/time.h>

#include "harness.h"
#include <libpq-fe.h>
#include "projections.h"
#include "readmodel.h"
#include "store.h"

static th_daemon query;
static pid_t redis_pid;
static unsigned redis_port;
static char redis_dir[256];

/* ---- a Redis of our own ------------------------------------------------ */

static bool
redis_answers_on(unsigned port)
{
    struct timeval tv = {0, 300000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", (int)port, tv);
    redisReply *r = c && !c->err ? redisCommand(c, "PING") : NULL;
    bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;

    freeReplyObject(r);
    if (c)
        redisFree(c);
    return ok;
}

/* The identity the tests run as (ES_REDIS_USER, ES_REDIS_PASSWORD of
 * scripts/servers.sh env) must exist on this Redis too; set over the
 * connection, so the password is on no command line.  (ACL users are not
 * replicated: a replica needs them set too.) */
static void
redis_add_user_on(unsigned port)
{
    const char *user = getenv("ES_REDIS_USER"), *pw = getenv("ES_REDIS_PASSWORD");
    redisContext *c;
    redisReply *r;
    char pass[160];

    if (user == NULL || user[0] == '\0' || pw == NULL || pw[0] == '\0')
        return;
    snprintf(pass, sizeof pass, ">%s", pw);
    c = redisConnect("127.0.0.1", (int)port);
    if (c == NULL || c->err)
        abort();
    r = redisCommandArgv(c, 7, (const char *[]){"ACL", "SETUSER", user, "on", pass, "~*", "+@all"},
                         NULL);
    if (r == NULL || r->type != REDIS_REPLY_STATUS)
        abort();
    freeReplyObject(r);
    r = redisCommand(c, "ACL SETUSER %s &*", user);
    freeReplyObject(r);
    redisFree(c);
}

/* Starts a redis-server on port, logging to <redis_dir>/<name>.log, a
 * replica of the one on primary_port when not 0; returns its pid once it
 * answers (with the tests' user). */
static pid_t
redis_spawn(unsigned port, const char *name, unsigned primary_port)
{
    char port_s[16], primary[32], log[300];
    pid_t pid;

    snprintf(port_s, sizeof port_s, "%u", port);
    snprintf(primary, sizeof primary, "127.0.0.1 %u", primary_port);
    snprintf(log, sizeof log, "%s/%s.log", redis_dir, name);
    pid = fork();
    if (pid < 0)
        abort();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (primary_port != 0)
            execlp("redis-server", "redis-server", "--port", port_s, "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", redis_dir, "--dbfilename",
                   "replica.rdb", "--replicaof", primary, (char *)NULL);
        else
            execlp("redis-server", "redis-server", "--port", port_s, "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", redis_dir, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        if (redis_answers_on(port)) {
            redis_add_user_on(port);
            return pid;
        }
        usleep(50 * 1000);
    }
    fprintf(stderr, "redis-server did not answer on port %u (see %s)\n", port, log);
    exit(2);
}

static void
redis_start(void)
{
    redis_pid = redis_spawn(redis_port, "redis", 0);
}

static void
redis_stop(void)
{
    if (redis_pid <= 0)
        return;
    kill(redis_pid, SIGTERM);
    waitpid(redis_pid, NULL, 0);
    redis_pid = 0;
}

static void
redis_cleanup(void)
{
    char path[300];

    redis_stop();
    snprintf(path, sizeof path, "%s/redis.log", redis_dir);
    unlink(path);
    for (const char *const *f = (const char *const[]){"decoy.log", "replica.log", "replica.rdb",
                                                       "dump.rdb", NULL};
         *f; f++) {
        snprintf(path, sizeof path, "%s/%s", redis_dir, *f);
        unlink(path);
    }
    rmdir(redis_dir);
}

/* ---- seeding read models ------------------------------------------------ */

/* {"stream", "type", "data"} of one event (data stolen). */
static json_t *
ev(const char *stream, const char *type, json_t *data)
{
    return json_pack("{s:s, s:s, s:o}", "stream", stream, "type", type, "data", data);
}

/* The position the next event applied to proj will get: one transaction
 * after the checkpoint's. */
static bool
next_position(redisContext *c, const char *proj, es_rm_state *st, es_position *p)
{
    es_error err;

    if (es_rm_state_get(c, proj, st, &err) != ES_OK)
        return false;
    p->txid = 0;
    p->gpos = 0;
    if (st->position[0] && !es_position_parse(st->position, p))
        return false;
    p->txid++;
    p->gpos++;
    return true;
}

/*
 * Applies the events (an array, stolen) to projection proj as the feed's
 * next sequences, with positions after its checkpoint; the last position
 * goes to last (may be NULL).  Returns false with why set; never asserts,
 * so threads may call it.  A batch that lost a race with another writer
 * (nothing applied) is built again from the new checkpoint.
 */
static bool
apply(const char *proj, json_t *events, char *last, char *why, size_t why_size)
{
    es_error err;
    redisContext *c = es_rm_connect(&err);
    bool ok = false;
    size_t i, n = json_array_size(events);

    if (c == NULL) {
        snprintf(why, why_size, "%s", err.message);
        json_decref(events);
        return false;
    }
    for (int attempt = 0; attempt < 5 && !ok; attempt++) {
        es_rm_state st;
        es_position p;
        es_rm_batch b;
        es_rm_applied out;

        if (!next_position(c, proj, &st, &p)) {
            snprintf(why, why_size, "could not read the state of %s", proj);
            break;
        }
        es_rm_batch_init(&b, proj, NULL);
        for (i = 0; i < n; i++) {
            json_t *e = json_array_get(events, i);
            char pos[ES_POSITION_TEXT_MAX], id[64], *text;
            es_position q = {p.txid, p.gpos + (int64_t)i};
            es_feed_event pe;

            es_position_format(q, pos);
            th_unique(id, sizeof id, "ev");
            json_object_set_new(e, "position", json_string(pos));
            json_object_set_new(e, "event_id", json_string(id));
            json_object_set_new(e, "recorded_at", json_string("2026-11-22T00:00:00.000000Z"));
            text = json_dumps(e, JSON_COMPACT);
            if (es_feed_event_decode(text, strlen(text), st.seq + 1 + i, &pe, &err) != ES_OK ||
                pj_add(&b, pj_find(proj), &pe, &err) != ES_OK) {
                snprintf(why, why_size, "event %zu: %s", i, err.message);
                free(text);
                es_feed_event_free(&pe);
                es_rm_batch_free(&b);
                goto done;
            }
            if (last)
                snprintf(last, ES_POSITION_TEXT_MAX, "%s", pos);
            free(text);
            es_feed_event_free(&pe);
        }
        if (es_rm_apply(c, &b, &out, &err) != ES_OK)
            snprintf(why, why_size, "%s", err.message);
        else
            ok = out.applied == n;
        es_rm_batch_free(&b);
    }
done:
    redisFree(c);
    json_decref(events);
    return ok;
}

static void
seed(const char *proj, json_t *events)
{
    char why[400] = "";

    ck_assert_msg(apply(proj, events, NULL, why, sizeof why), "seeding %s: %s", proj, why);
}

/* ---- HTTP ----------------------------------------------------------------- */

/* GET with extra header lines; checks the status and returns the parsed
 * body (NULL when empty).  r keeps the headers (its body is freed). */
static json_t *
get_r(const char *path, const char *headers, int expect, th_response *r)
{
    json_t *j;

    th_http(query.port, "GET", path, headers, NULL, r);
    ck_assert_msg(r->status == expect, "GET %s: %d, expected %d: %s", path, r->status, expect,
                  r->body ? r->body : "");
    j = r->body && r->body[0] ? json_loads(r->body, 0, NULL) : NULL;
    th_response_free(r);
    return j;
}

static json_t *
get(const char *path, int expect)
{
    th_response r;

    return get_r(path, NULL, expect, &r);
}

static const char *
str(const json_t *j, const char *path)
{
    const json_t *v = j;
    char key[64];

    while (*path) {
        size_t n = strcspn(path, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, path);
        v = json_is_array(v) ? json_array_get(v, (size_t)atoi(key)) : json_object_get(v, key);
        path += n + (path[n] == '.');
    }
    return json_string_value(v);
}

static const json_t *
at(const json_t *j, const char *path)
{
    const json_t *v = j;
    char key[64];

    while (*path) {
        size_t n = strcspn(path, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, path);
        v = json_is_array(v) ? json_array_get(v, (size_t)atoi(key)) : json_object_get(v, key);
        path += n + (path[n] == '.');
    }
    return v;
}

static json_int_t
num(const json_t *j, const char *path)
{
    const json_t *v = at(j, path);

    ck_assert_msg(json_is_integer(v), "%s is not an integer", path);
    return json_integer_value(v);
}

/* An error answer: its code and field (field NULL: none). */
static void
expect_error(const char *path, const char *headers, int status, const char *code, const char *field)
{
    th_response r;
    json_t *j = get_r(path, headers, status, &r);

    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(str(j, "error.code"), code);
    ck_assert_ptr_nonnull(str(j, "error.message"));
    if (field)
        ck_assert_str_eq(str(j, "error.field"), field);
    else
        ck_assert_ptr_null(str(j, "error.field"));
    json_decref(j);
}

static long
ms_since(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000L;
}

/* ---- tests ---------------------------------------------------------------- */

START_TEST(empty_read_models)
{
    th_response r;
    char h[96];
    json_t *j = get_r("/v1/dashboard", NULL, 200, &r);

    /* nothing applied yet: the start of the feed */
    ck_assert_str_eq(th_header(&r, "X-Projection-Position", h, sizeof h), "0-0");
    ck_assert_int_eq(json_object_size(json_object_get(j, "counters")), 0);
    json_decref(j);
    j = get_r("/v1/users/nobody", NULL, 404, &r);
    ck_assert_str_eq(str(j, "error.code"), "user_not_found");
    ck_assert_str_eq(th_header(&r, "X-Projection-Position", h, sizeof h), "0-0");
    json_decref(j);
}
END_TEST

START_TEST(user_documents)
{
    char id[64], email[96], path[256], upper[96];
    th_response r;
    char h[96];
    json_t *j;

    th_unique(id, sizeof id, "u");
    snprintf(email, sizeof email, "%s@example.org", id);
    seed("users",
         json_pack("[o, o]",
                   ev("user-x", "UserRegistered",
                      json_pack("{s:s, s:s, s:s}", "user_id", id, "email", email, "name", "Ada")),
                   ev("profile-x", "ProfileCreated",
                      json_pack("{s:s, s:{s:s}}", "user_id", id, "settings", "theme", "dark"))));

    snprintf(path, sizeof path, "/v1/users/%s", id);
    j = get_r(path, NULL, 200, &r);
    ck_assert_str_eq(str(j, "user_id"), id);
    ck_assert_str_eq(str(j, "email"), email);
    ck_assert_str_eq(str(j, "name"), "Ada");
    ck_assert_str_eq(str(j, "status"), "pending_verification");
    ck_assert_str_eq(str(j, "profile.theme"), "dark");
    ck_assert_str_eq(str(j, "created_at"), "2026-11-22T00:00:00.000000Z");
    ck_assert_ptr_nonnull(str(j, "updated_at"));
    ck_assert_ptr_nonnull(th_header(&r, "X-Projection-Position", h, sizeof h));
    ck_assert_ptr_nonnull(th_header(&r, "ETag", h, sizeof h));
    json_decref(j);

    /* by e-mail, whatever its case */
    for (size_t i = 0; i <= strlen(email); i++)
        upper[i] = (char)(email[i] >= 'a' && email[i] <= 'z' ? email[i] - 32 : email[i]);
    snprintf(path, sizeof path, "/v1/users?email=%s", upper);
    j = get(path, 200);
    ck_assert_str_eq(str(j, "user_id"), id);
    json_decref(j);
    expect_error("/v1/users?email=nobody%40example.org", NULL, 404, "user_not_found", NULL);
    expect_error("/v1/users", NULL, 400, "query_invalid", "email");
    expect_error("/v1/users?email=", NULL, 400, "query_invalid", "email");
    expect_error("/v1/users/", NULL, 400, "query_invalid", "user_id");
    {
        char longid[300] = "/v1/users/";
        memset(longid + 10, 'a', 201);
        longid[211] = '\0';
        expect_error(longid, NULL, 400, "query_invalid", "user_id");
        longid[210] = '\0';         /* 200 bytes: fine, and unknown */
        expect_error(longid, NULL, 404, "user_not_found", NULL);
    }
}
END_TEST

START_TEST(order_document)
{
    char id[64], cust[64], path[256];
    json_t *j;

    th_unique(id, sizeof id, "o");
    th_unique(cust, sizeof cust, "c");
    seed("orders",
         json_pack("[o, o, o]",
                   ev("order-x", "OrderPlaced",
                      json_pack("{s:s, s:s, s:i, s:[{s:s, s:i, s:i}], s:{s:s}}", "order_id", id,
                                "customer_id", cust, "total", 3998, "items", "sku", "sku-1",
                                "quantity", 2, "unit_price", 1999, "ship_to", "country", "DE")),
                   ev("account-x", "PaymentCharged",
                      json_pack("{s:s, s:s, s:i}", "order_id", id, "customer_id", cust, "amount",
                                3998)),
                   ev("order-x", "OrderConfirmed", json_pack("{s:s}", "order_id", id))));

    snprintf(path, sizeof path, "/v1/orders/%s", id);
    j = get(path, 200);
    ck_assert_str_eq(str(j, "order_id"), id);
    ck_assert_str_eq(str(j, "customer_id"), cust);
    ck_assert_int_eq(num(j, "total"), 3998);
    ck_assert_str_eq(str(j, "status"), "confirmed");
    ck_assert_str_eq(str(j, "items.0.sku"), "sku-1");
    ck_assert_int_eq(num(j, "items.0.quantity"), 2);
    ck_assert_str_eq(str(j, "payment.status"), "charged");
    ck_assert_int_eq(num(j, "payment.amount"), 3998);
    ck_assert_str_eq(str(j, "inventory.status"), "pending");
    ck_assert_str_eq(str(j, "shipment.status"), "pending");
    ck_assert_str_eq(str(j, "ship_to.country"), "DE");
    ck_assert_int_eq(json_array_size(at(j, "history")), 3);
    ck_assert_str_eq(str(j, "history.0.type"), "OrderPlaced");
    ck_assert_int_eq(num(j, "history.0.total"), 3998);
    ck_assert_str_eq(str(j, "history.1.type"), "PaymentCharged");
    ck_assert_str_eq(str(j, "history.2.type"), "OrderConfirmed");
    ck_assert_ptr_nonnull(str(j, "history.2.position"));
    ck_assert_ptr_nonnull(str(j, "created_at"));
    ck_assert_ptr_nonnull(str(j, "updated_at"));
    ck_assert_ptr_null(at(j, "seq"));          /* internal */
    json_decref(j);
    expect_error("/v1/orders/nope", NULL, 404, "order_not_found", NULL);
    expect_error("/v1/orders/", NULL, 400, "query_invalid", "order_id");
}
END_TEST

START_TEST(customer_orders_in_pages)
{
    char cust[64], ids[7][64], path[512], cursor[64] = "";
    json_t *events = json_array(), *j;
    int page, seen = 6;

    th_unique(cust, sizeof cust, "c");
    for (int i = 0; i < 7; i++) {
        th_unique(ids[i], sizeof ids[i], "o");
        json_array_append_new(events,
                              ev("order-x", "OrderPlaced",
                                 json_pack("{s:s, s:s, s:i, s:[]}", "order_id", ids[i],
                                           "customer_id", cust, "total", 100 * (i + 1), "items")));
    }
    seed("orders", events);

    /* newest first, 3 + 3 + 1, each cursor taking up after the last */
    for (page = 0; page < 3; page++) {
        const json_t *orders;

        snprintf(path, sizeof path, "/v1/customers/%s/orders?limit=3%s%s", cust,
                 cursor[0] ? "&cursor=" : "", cursor);
        j = get(path, 200);
        orders = at(j, "orders");
        ck_assert_int_eq(json_array_size(orders), page < 2 ? 3 : 1);
        for (size_t i = 0; i < json_array_size(orders); i++, seen--) {
            ck_assert_str_eq(json_string_value(json_object_get(json_array_get(orders, i), "order_id")),
                             ids[seen]);
            ck_assert_ptr_null(json_object_get(json_array_get(orders, i), "history"));
        }
        if (page < 2) {
            ck_assert_ptr_nonnull(str(j, "next_cursor"));
            snprintf(cursor, sizeof cursor, "%s", str(j, "next_cursor"));
        } else {
            ck_assert(json_is_null(at(j, "next_cursor")));
        }
        json_decref(j);
    }
    ck_assert_int_eq(seen, -1);

    /* the default limit takes all seven */
    snprintf(path, sizeof path, "/v1/customers/%s/orders", cust);
    j = get(path, 200);
    ck_assert_int_eq(json_array_size(at(j, "orders")), 7);
    ck_assert_int_eq(num(j, "orders.0.total"), 700);
    ck_assert(json_is_null(at(j, "next_cursor")));
    json_decref(j);

    /* an unknown customer has no orders */
    j = get("/v1/customers/nobody-at-all/orders", 200);
    ck_assert_int_eq(json_array_size(at(j, "orders")), 0);
    ck_assert(json_is_null(at(j, "next_cursor")));
    json_decref(j);

    expect_error("/v1/customers/c/orders?limit=0", NULL, 400, "query_invalid", "limit");
    expect_error("/v1/customers/c/orders?limit=101", NULL, 400, "query_invalid", "limit");
    expect_error("/v1/customers/c/orders?limit=ten", NULL, 400, "query_invalid", "limit");
    expect_error("/v1/customers/c/orders?limit=", NULL, 400, "query_invalid", "limit");
    expect_error("/v1/customers/c/orders?cursor=abc", NULL, 400, "query_invalid", "cursor");
    expect_error("/v1/customers/c/orders?cursor=-1", NULL, 400, "query_invalid", "cursor");
    expect_error("/v1/customers/c/orders?cursor=99999999999999999999", NULL, 400, "query_invalid",
                 "cursor");
    expect_error("/v1/customers//orders", NULL, 400, "query_invalid", "customer_id");
}
END_TEST

START_TEST(accounts_and_stock)
{
    char cust[64], sku[64], path[256];
    json_t *j;

    th_unique(cust, sizeof cust, "c");
    th_unique(sku, sizeof sku, "sku");
    seed("accounts",
         json_pack("[o, o]",
                   ev("account-x", "FundsDeposited",
                      json_pack("{s:s, s:i}", "customer_id", cust, "amount", 5000)),
                   ev("account-x", "PaymentCharged",
                      json_pack("{s:s, s:s, s:i}", "customer_id", cust, "order_id", "o-1",
                                "amount", 1200))));
    snprintf(path, sizeof path, "/v1/customers/%s/account", cust);
    j = get(path, 200);
    ck_assert_str_eq(str(j, "customer_id"), cust);
    ck_assert_int_eq(num(j, "balance"), 3800);
    ck_assert_ptr_nonnull(str(j, "updated_at"));
    json_decref(j);
    expect_error("/v1/customers/nobody/account", NULL, 404, "account_not_found", NULL);

    seed("inventory",
         json_pack("[o, o]",
                   ev("stock-x", "StockRestocked", json_pack("{s:s, s:i}", "sku", sku, "quantity", 10)),
                   ev("stock-x", "StockReserved", json_pack("{s:s, s:i}", "sku", sku, "quantity", 3))));
    snprintf(path, sizeof path, "/v1/inventory/%s", sku);
    j = get(path, 200);
    ck_assert_str_eq(str(j, "sku"), sku);
    ck_assert_int_eq(num(j, "on_hand"), 10);
    ck_assert_int_eq(num(j, "reserved"), 3);
    ck_assert_int_eq(num(j, "available"), 7);
    json_decref(j);
    expect_error("/v1/inventory/nope", NULL, 404, "sku_not_found", NULL);
}
END_TEST

static json_t *
saga_ev(const char *id, const char *type, json_t *data)
{
    json_object_set_new(data, "saga_id", json_string(id));
    return ev("saga-x", type, data);
}

START_TEST(saga_documents)
{
    char a[64], b[64], type[64], path[512];
    json_t *j;

    th_unique(a, sizeof a, "s");
    th_unique(b, sizeof b, "s");
    th_unique(type, sizeof type, "T.order");
    seed("sagas",
         json_pack("[o, o, o, o, o, o, o, o, o, o, o]",
                   saga_ev(a, "SagaStarted", json_pack("{s:s, s:s}", "type", type, "correlation_id", "k1")),
                   saga_ev(a, "SagaStepStarted", json_pack("{s:s, s:i}", "step", "reserve", "attempt", 1)),
                   saga_ev(a, "SagaStepFailed", json_pack("{s:s, s:i, s:b, s:s}", "step", "reserve",
                                                          "attempt", 1, "will_retry", 1, "error", "busy")),
                   saga_ev(a, "SagaStepStarted", json_pack("{s:s, s:i}", "step", "reserve", "attempt", 2)),
                   saga_ev(a, "SagaStepSucceeded", json_pack("{s:s, s:i}", "step", "reserve", "attempt", 2)),
                   saga_ev(a, "SagaStepStarted", json_pack("{s:s, s:i}", "step", "charge", "attempt", 1)),
                   saga_ev(a, "SagaStateChanged", json_pack("{s:s, s:s, s:s, s:s}", "type", type, "from",
                                                            "running", "to", "compensating", "error",
                                                            "card declined")),
                   saga_ev(a, "SagaCompensationStarted", json_pack("{s:s}", "step", "reserve")),
                   saga_ev(a, "SagaCompensationSucceeded", json_pack("{s:s}", "step", "reserve")),
                   saga_ev(a, "SagaStateChanged", json_pack("{s:s, s:s, s:s}", "type", type, "from",
                                                            "compensating", "to", "compensated")),
                   saga_ev(b, "SagaStarted", json_pack("{s:s, s:s}", "type", type, "correlation_id", "k2"))));

    snprintf(path, sizeof path, "/v1/sagas/%s", a);
    j = get(path, 200);
    ck_assert_str_eq(str(j, "saga_id"), a);
    ck_assert_str_eq(str(j, "type"), type);
    ck_assert_str_eq(str(j, "state"), "compensated");
    ck_assert_str_eq(str(j, "correlation_id"), "k1");
    ck_assert_str_eq(str(j, "error"), "card declined");
    ck_assert_ptr_nonnull(str(j, "started_at"));
    ck_assert_ptr_nonnull(str(j, "updated_at"));
    ck_assert_int_eq(json_array_size(at(j, "steps")), 2);
    ck_assert_str_eq(str(j, "steps.0.name"), "reserve");
    ck_assert_str_eq(str(j, "steps.0.status"), "succeeded");
    ck_assert_int_eq(num(j, "steps.0.attempts"), 2);
    ck_assert_ptr_nonnull(str(j, "steps.0.started_at"));
    ck_assert_ptr_nonnull(str(j, "steps.0.finished_at"));
    ck_assert_str_eq(str(j, "steps.1.name"), "charge");
    ck_assert_str_eq(str(j, "steps.1.status"), "running");
    ck_assert_int_eq(num(j, "steps.1.attempts"), 1);
    ck_assert(json_is_null(at(j, "steps.1.finished_at")));
    ck_assert(json_is_null(at(j, "steps.1.error")));
    ck_assert_int_eq(json_array_size(at(j, "compensations")), 1);
    ck_assert_str_eq(str(j, "compensations.0.name"), "reserve");
    ck_assert_str_eq(str(j, "compensations.0.status"), "succeeded");
    ck_assert_int_eq(num(j, "compensations.0.attempts"), 1);
    json_decref(j);
    expect_error("/v1/sagas/nope", NULL, 404, "saga_not_found", NULL);

    /* lists: by type, newest first, in pages of one */
    snprintf(path, sizeof path, "/v1/sagas?type=%s&limit=1", type);
    j = get(path, 200);
    ck_assert_int_eq(json_array_size(at(j, "sagas")), 1);
    ck_assert_str_eq(str(j, "sagas.0.saga_id"), b);
    ck_assert_ptr_null(at(j, "sagas.0.steps"));
    ck_assert_ptr_nonnull(str(j, "next_cursor"));
    snprintf(path, sizeof path, "/v1/sagas?type=%s&limit=1&cursor=%s", type, str(j, "next_cursor"));
    json_decref(j);
    j = get(path, 200);
    ck_assert_str_eq(str(j, "sagas.0.saga_id"), a);
    ck_assert(json_is_null(at(j, "next_cursor")));
    json_decref(j);
    /* by type and state, by state alone, and all */
    snprintf(path, sizeof path, "/v1/sagas?type=%s&state=running", type);
    j = get(path, 200);
    ck_assert_int_eq(json_array_size(at(j, "sagas")), 1);
    ck_assert_str_eq(str(j, "sagas.0.saga_id"), b);
    json_decref(j);
    snprintf(path, sizeof path, "/v1/sagas?type=%s&state=compensated", type);
    j = get(path, 200);
    ck_assert_int_eq(json_array_size(at(j, "sagas")), 1);
    ck_assert_str_eq(str(j, "sagas.0.saga_id"), a);
    ck_assert_str_eq(str(j, "sagas.0.state"), "compensated");
    json_decref(j);
    j = get("/v1/sagas?state=compensated&limit=100", 200);
    ck_assert_int_ge(json_array_size(at(j, "sagas")), 1);
    json_decref(j);
    j = get("/v1/sagas", 200);
    ck_assert_str_eq(str(j, "sagas.0.saga_id"), b);     /* the newest of all */
    json_decref(j);

    expect_error("/v1/sagas?state=done", NULL, 400, "query_invalid", "state");
    expect_error("/v1/sagas?type=a:b", NULL, 400, "query_invalid", "type");
    expect_error("/v1/sagas?type=", NULL, 400, "query_invalid", "type");
    expect_error("/v1/sagas?limit=1000", NULL, 400, "query_invalid", "limit");
}
END_TEST

START_TEST(dashboard_counters)
{
    json_t *j;
    json_int_t before;

    j = get("/v1/dashboard", 200);
    before = json_integer_value(json_object_get(json_object_get(j, "counters"), "events"));
    json_decref(j);
    seed("dashboard",
         json_pack("[o, o]",
                   ev("order-x", "OrderPlaced", json_pack("{s:s, s:s, s:i, s:[]}", "order_id", "o",
                                                          "customer_id", "c", "total", 1, "items")),
                   ev("user-x", "UserRegistered", json_pack("{s:s, s:s, s:s}", "user_id", "u",
                                                            "email", "e", "name", "n"))));
    j = get("/v1/dashboard", 200);
    ck_assert_int_eq(num(j, "counters.events"), before + 2);
    ck_assert_int_ge(num(j, "counters.orders_placed"), 1);
    ck_assert_int_ge(num(j, "counters.users_registered"), 1);
    json_decref(j);
}
END_TEST

START_TEST(bad_requests)
{
    th_response r;
    char h[96];

    th_http(query.port, "POST", "/v1/orders/x", NULL, "{}", &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(th_header(&r, "Allow", h, sizeof h), "GET");
    ck_assert_ptr_nonnull(strstr(r.body, "method_not_allowed"));
    th_response_free(&r);
    th_http(query.port, "DELETE", "/v1/sagas", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 405);
    th_response_free(&r);

    expect_error("/v1/nothing", NULL, 404, "route_not_found", NULL);
    expect_error("/v1/customers/x", NULL, 404, "route_not_found", NULL);
    expect_error("/v1/orders", NULL, 404, "route_not_found", NULL);

    expect_error("/v1/dashboard?consistent_with=abc", NULL, 400, "query_invalid", "consistent_with");
    expect_error("/v1/dashboard?consistent_with=1-", NULL, 400, "query_invalid", "consistent_with");
    expect_error("/v1/dashboard", "X-Consistent-With: nope\r\n", 400, "query_invalid",
                 "consistent_with");
    expect_error("/v1/dashboard?consistent_with=1-1&wait_ms=-1", NULL, 400, "query_invalid", "wait_ms");
    expect_error("/v1/dashboard?consistent_with=1-1&wait_ms=10001", NULL, 400, "query_invalid",
                 "wait_ms");
    expect_error("/v1/dashboard?wait_ms=soon", NULL, 400, "query_invalid", "wait_ms");
}
END_TEST

START_TEST(etags)
{
    char id[64], path[128], tag[96], pos[96], hdr[160];
    th_response r;
    json_t *j;

    th_unique(id, sizeof id, "o");
    seed("orders", json_pack("[o]", ev("order-x", "OrderPlaced",
                                       json_pack("{s:s, s:s, s:i, s:[]}", "order_id", id,
                                                 "customer_id", "c", "total", 5, "items"))));
    snprintf(path, sizeof path, "/v1/orders/%s", id);
    json_decref(get_r(path, NULL, 200, &r));
    ck_assert_ptr_nonnull(th_header(&r, "ETag", tag, sizeof tag));
    ck_assert_int_eq(tag[0], '"');
    ck_assert_int_eq(strlen(tag), 18);

    /* the same body: 304, no body, the same tag and a position */
    snprintf(hdr, sizeof hdr, "If-None-Match: %s\r\n", tag);
    th_http(query.port, "GET", path, hdr, NULL, &r);
    ck_assert_int_eq(r.status, 304);
    ck_assert_str_eq(r.body, "");
    ck_assert_str_eq(th_header(&r, "ETag", pos, sizeof pos), tag);
    ck_assert_ptr_nonnull(th_header(&r, "X-Projection-Position", pos, sizeof pos));
    th_response_free(&r);
    snprintf(hdr, sizeof hdr, "If-None-Match: \"0000000000000000\", W/%s\r\n", tag);
    th_http(query.port, "GET", path, hdr, NULL, &r);
    ck_assert_int_eq(r.status, 304);
    th_response_free(&r);

    /* another tag, or a changed document: the body again */
    j = get_r(path, "If-None-Match: \"0000000000000000\"\r\n", 200, &r);
    ck_assert_str_eq(str(j, "order_id"), id);
    json_decref(j);
    seed("orders", json_pack("[o]", ev("order-x", "OrderConfirmed", json_pack("{s:s}", "order_id", id))));
    j = get_r(path, hdr, 200, &r);
    ck_assert_str_eq(str(j, "status"), "confirmed");
    json_decref(j);
    /* errors have no tag */
    json_decref(get_r("/v1/orders/nope", NULL, 404, &r));
    ck_assert_ptr_null(th_header(&r, "ETag", tag, sizeof tag));
}
END_TEST

/* A batch applied by a thread after a delay. */
typedef struct later {
    const char *proj;
    json_t *events;
    int delay_ms;
    bool ok;
    char why[400];
} later;

static void *
apply_later(void *arg)
{
    later *l = arg;

    usleep((useconds_t)l->delay_ms * 1000);
    l->ok = apply(l->proj, l->events, NULL, l->why, sizeof l->why);
    return NULL;
}

/* Asks for the next position of accounts while a thread applies it 300 ms
 * later: the answer must come right after, and show the new data. */
static void
wait_is_satisfied(const char *how)
{
    char cust[64], path[512], hdr[160], token[ES_POSITION_TEXT_MAX], h[96];
    es_rm_state st;
    es_position next, got;
    es_error err;
    redisContext *c = es_rm_connect(&err);
    later l = {"accounts", NULL, 300, false, ""};
    struct timespec t0;
    pthread_t th;
    th_response r;
    json_t *j;
    long ms;

    ck_assert_ptr_nonnull(c);
    ck_assert(next_position(c, "accounts", &st, &next));
    redisFree(c);
    es_position_format(next, token);
    th_unique(cust, sizeof cust, "c");
    l.events = json_pack("[o]", ev("account-x", "FundsDeposited",
                                   json_pack("{s:s, s:i}", "customer_id", cust, "amount", 42)));
    snprintf(path, sizeof path, "/v1/customers/%s/account?wait_ms=3000%s%s", cust,
             strcmp(how, "query") == 0 ? "&consistent_with=" : "",
             strcmp(how, "query") == 0 ? token : "");
    snprintf(hdr, sizeof hdr, "X-Consistent-With: %s\r\n", token);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(pthread_create(&th, NULL, apply_later, &l), 0);
    j = get_r(path, strcmp(how, "header") == 0 ? hdr : NULL, 200, &r);
    ms = ms_since(&t0);
    pthread_join(th, NULL);
    ck_assert_msg(l.ok, "applying: %s", l.why);
    ck_assert_int_eq(num(j, "balance"), 42);
    ck_assert_msg(ms >= 250 && ms < 3000, "answered after %ld ms", ms);
    ck_assert(es_position_parse(th_header(&r, "X-Projection-Position", h, sizeof h), &got));
    ck_assert_int_ge(es_position_cmp(got, next), 0);
    json_decref(j);
}

START_TEST(consistent_with_waits_for_the_batch)
{
    wait_is_satisfied("query");
    wait_is_satisfied("header");
}
END_TEST

/* Announces, after 100 ms, that a version other than the active one of
 * accounts reached token (as a rebuild's batches do). */
typedef struct announcer {
    const char *token;
    bool ok;
} announcer;

static void *
announce_other_version(void *arg)
{
    announcer *a = arg;
    char notice[128];
    es_error err;
    redisContext *c;
    redisReply *r;

    usleep(100 * 1000);
    if ((c = es_rm_connect(&err)) == NULL)
        return NULL;
    /* "<version> <seq> <position>": a version no query reads */
    snprintf(notice, sizeof notice, "999999 1 %s", a->token);
    r = redisCommand(c, "PUBLISH rm:accounts:applied %s", notice);
    a->ok = r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer >= 1;
    freeReplyObject(r);
    redisFree(c);
    return NULL;
}

/* A wait taken at once for an announcement past its token (no position
 * read first) stays parked when the active version is still short: the
 * answer comes with the batch applied 400 ms later, not with the notice
 * of another version at 100 ms. */
START_TEST(an_announcement_of_another_version_does_not_answer)
{
    char cust[64], path[512], token[ES_POSITION_TEXT_MAX];
    es_rm_state st;
    es_position next;
    es_error err;
    redisContext *c = es_rm_connect(&err);
    later l = {"accounts", NULL, 400, false, ""};
    announcer a = {token, false};
    struct timespec t0;
    pthread_t th, ta;
    th_response r;
    json_t *j;
    long ms;

    ck_assert_ptr_nonnull(c);
    ck_assert(next_position(c, "accounts", &st, &next));
    redisFree(c);
    es_position_format(next, token);
    th_unique(cust, sizeof cust, "c");
    l.events = json_pack("[o]", ev("account-x", "FundsDeposited",
                                   json_pack("{s:s, s:i}", "customer_id", cust, "amount", 7)));
    snprintf(path, sizeof path, "/v1/customers/%s/account?wait_ms=3000&consistent_with=%s", cust,
             token);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(pthread_create(&ta, NULL, announce_other_version, &a), 0);
    ck_assert_int_eq(pthread_create(&th, NULL, apply_later, &l), 0);
    j = get_r(path, NULL, 200, &r);
    ms = ms_since(&t0);
    pthread_join(ta, NULL);
    pthread_join(th, NULL);
    ck_assert_msg(a.ok, "the notice reached no subscriber");
    ck_assert_msg(l.ok, "applying: %s", l.why);
    ck_assert_int_eq(num(j, "balance"), 7);
    ck_assert_msg(ms >= 350 && ms < 3000, "answered after %ld ms", ms);
    json_decref(j);
}
END_TEST

START_TEST(consistent_with_times_out)
{
    char path[256], token[ES_POSITION_TEXT_MAX], h[96];
    es_rm_state st;
    es_position next;
    es_error err;
    redisContext *c = es_rm_connect(&err);
    struct timespec t0;
    th_response r;
    json_t *j;
    long ms;

    ck_assert_ptr_nonnull(c);
    ck_assert(next_position(c, "orders", &st, &next));
    redisFree(c);
    next.txid += 1000;          /* nothing will get there */
    es_position_format(next, token);
    snprintf(path, sizeof path, "/v1/orders/nope?consistent_with=%s&wait_ms=200", token);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    j = get_r(path, NULL, 503, &r);
    ms = ms_since(&t0);
    ck_assert_msg(ms >= 190 && ms < 1500, "answered after %ld ms", ms);
    ck_assert_str_eq(str(j, "error.code"), "not_yet_consistent");
    ck_assert_str_eq(str(j, "error.position"), st.position);
    ck_assert_str_eq(str(j, "error.requested"), token);
    ck_assert_str_eq(th_header(&r, "X-Projection-Position", h, sizeof h), st.position);
    ck_assert_str_eq(th_header(&r, "Retry-After", h, sizeof h), "1");
    json_decref(j);

    /* a token already reached answers at once, 404 included */
    snprintf(path, sizeof path, "/v1/orders/nope?consistent_with=%s&wait_ms=5000", st.position);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect_error(path, NULL, 404, "order_not_found", NULL);
    ck_assert_int_lt(ms_since(&t0), 1000);
}
END_TEST

/* Places n orders of one customer, one batch each, as fast as it can. */
typedef struct placer {
    char customer[64], prefix[64];
    int n;
    bool ok;
    char why[400];
} placer;

static void *
place_orders(void *arg)
{
    placer *p = arg;

    p->ok = true;
    for (int i = 0; i < p->n && p->ok; i++) {
        char id[96];

        snprintf(id, sizeof id, "%s-%04d", p->prefix, i);
        p->ok = apply("orders",
                      json_pack("[o]", ev("order-x", "OrderPlaced",
                                          json_pack("{s:s, s:s, s:i, s:[]}", "order_id", id,
                                                    "customer_id", p->customer, "total", i, "items"))),
                      NULL, p->why, sizeof p->why);
    }
    return NULL;
}

START_TEST(pages_stay_whole_under_writes)
{
    placer p = {.n = 150};
    char path[256], h[96];
    es_position last = {0, 0};
    pthread_t th;
    struct timespec t0;
    int reads = 0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    th_unique(p.customer, sizeof p.customer, "c");
    th_unique(p.prefix, sizeof p.prefix, "o");
    snprintf(path, sizeof path, "/v1/customers/%s/orders?limit=5", p.customer);
    ck_assert_int_eq(pthread_create(&th, NULL, place_orders, &p), 0);
    /* every page is the newest five at one moment: consecutive, no hole,
     * and the position never goes back */
    for (;;) {
        th_response r;
        es_position pos;
        json_t *j = get_r(path, NULL, 200, &r);
        const json_t *orders = at(j, "orders");
        size_t n = json_array_size(orders);
        int top = -1;

        ck_assert(es_position_parse(th_header(&r, "X-Projection-Position", h, sizeof h), &pos));
        ck_assert_int_ge(es_position_cmp(pos, last), 0);
        last = pos;
        for (size_t i = 0; i < n; i++) {
            const char *id = json_string_value(json_object_get(json_array_get(orders, i), "order_id"));
            int k;

            ck_assert_ptr_nonnull(id);
            k = atoi(id + strlen(p.prefix) + 1);
            if (i == 0)
                top = k;
            ck_assert_int_eq(k, top - (int)i);
        }
        ck_assert_int_eq(n, top + 1 < 5 ? (size_t)(top + 1) : 5);
        json_decref(j);
        reads++;
        if (top == p.n - 1)
            break;
        ck_assert_msg(ms_since(&t0) < 60000, "the last order never showed (%s)", p.why);
    }
    pthread_join(th, NULL);
    ck_assert_msg(p.ok, "placing: %s", p.why);
    ck_assert_int_gt(reads, 1);
}
END_TEST

START_TEST(health_and_metrics)
{
    th_response r;
    json_t *j = get("/healthz", 200);

    ck_assert_str_eq(str(j, "status"), "ok");
    json_decref(j);
    j = get("/readyz", 200);
    ck_assert_str_eq(str(j, "status"), "ready");
    json_decref(j);

    th_http(query.port, "GET", "/metrics", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    for (size_t i = 0; i < pj_projection_count; i++) {
        char line[96];

        snprintf(line, sizeof line, "es_projection_position{projection=\"%s\"} ",
                 pj_projections[i].name);
        ck_assert_msg(strstr(r.body, line) != NULL, "no %s in\n%s", line, r.body);
        snprintf(line, sizeof line, "es_projection_stopped{projection=\"%s\"} 0",
                 pj_projections[i].name);
        ck_assert_msg(strstr(r.body, line) != NULL, "no %s", line);
    }
    ck_assert_ptr_nonnull(strstr(r.body, "es_query_http_requests_total{class=\"2xx\"}"));
    ck_assert_ptr_nonnull(strstr(r.body, "es_query_consistency_timeouts_total 1"));
    th_response_free(&r);
}
END_TEST

/* ---- waits that hold no thread ------------------------------------------ */

/* Sends GET path on a connection of its own and returns the socket, for
 * raw_status to read the answer later. */
static int
raw_get(unsigned port, const char *path)
{
    struct sockaddr_in a = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char req[1024];
    int n;

    ck_assert_int_ge(fd, 0);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    n = snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
                 "Connection: close\r\n\r\n", path, th_token());
    ck_assert_int_eq(write(fd, req, (size_t)n), n);
    return fd;
}

/* Reads fd's whole answer (up to timeout_ms) and closes it: its status,
 * 0 for a connection closed without an answer, -1 for none in time.
 * body (size bytes) gets what came. */
static int
raw_status(int fd, long timeout_ms, char *body, size_t size)
{
    struct timespec t0;
    size_t len = 0;
    int status = -1;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    body[0] = '\0';
    for (;;) {
        struct timeval tv = {0, 100000};
        ssize_t got;

        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        got = read(fd, body + len, size - 1 - len);
        if (got > 0) {
            len += (size_t)got;
            body[len] = '\0';
            if (len < size - 1)
                continue;
        }
        if (got == 0 || got > 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
            status = len == 0 ? 0 : sscanf(body, "HTTP/1.%*d %d", &status) == 1 ? status : 0;
            break;
        }
        if (ms_since(&t0) > timeout_ms)
            break;
    }
    close(fd);
    return status;
}

/* A token no read model gets to while the test runs. */
static void
far_token(const char *proj, char *token)
{
    es_rm_state st;
    es_position next;
    es_error err;
    redisContext *c = es_rm_connect(&err);

    ck_assert_ptr_nonnull(c);
    ck_assert(next_position(c, proj, &st, &next));
    redisFree(c);
    next.txid += 1000000;
    es_position_format(next, token);
}

#define WAITS 32                /* ES_QUERY_WAITS_MAX of the test's es-query */

/*
 * The case: 16 waiting reads froze /healthz for 9.5 s, as each
 * held one of the 16 HTTP threads.  With the cap's worth of waits open
 * (twice the threads), /healthz and a plain read answer long before the
 * waits' deadline; one more wait is refused 503 too_many_waits with
 * Retry-After; the waits answer 503 not_yet_consistent at their deadline.
 */
START_TEST(waits_hold_no_thread)
{
    char token[ES_POSITION_TEXT_MAX], path[256], body[4096], h[96];
    int fds[WAITS], extra;
    struct timespec t0, t1;
    th_response r;
    json_t *j;
    long ms;

    far_token("dashboard", token);
    snprintf(path, sizeof path, "/v1/dashboard?consistent_with=%s&wait_ms=4000", token);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < WAITS; i++) {
        /* one at a time, so that each goes to an idle thread (libmicrohttpd
         * lets a thread take several waiting connections at once) */
        fds[i] = raw_get(query.port, path);
        usleep(20 * 1000);
    }
    usleep(500 * 1000);        /* every wait has been read */

    clock_gettime(CLOCK_MONOTONIC, &t1);
    json_decref(get("/healthz", 200));
    ms = ms_since(&t1);
    ck_assert_msg(ms < 2000, "/healthz took %ld ms with %d waits open", ms, WAITS);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    json_decref(get("/v1/dashboard", 200));
    ms = ms_since(&t1);
    ck_assert_msg(ms < 2000, "a plain read took %ld ms with %d waits open", ms, WAITS);

    /* one past the cap */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    j = get_r(path, NULL, 503, &r);
    ms = ms_since(&t1);
    ck_assert_msg(ms < 2000, "the wait past the cap took %ld ms", ms);
    ck_assert_str_eq(str(j, "error.code"), "too_many_waits");
    ck_assert_int_eq(num(j, "error.waits_max"), WAITS);
    ck_assert_str_eq(th_header(&r, "Retry-After", h, sizeof h), "1");
    ck_assert_ptr_nonnull(th_header(&r, "X-Projection-Position", h, sizeof h));
    json_decref(j);

    /* the waits end at their deadline, each with its own answer */
    for (int i = 0; i < WAITS; i++) {
        int status = raw_status(fds[i], 8000, body, sizeof body);

        ck_assert_msg(status == 503, "wait %d: %d %s", i, status, body);
        ck_assert_msg(strstr(body, "\"not_yet_consistent\"") != NULL, "wait %d: %s", i, body);
    }
    ms = ms_since(&t0);
    ck_assert_msg(ms >= 3900 && ms < 8000, "the waits ended after %ld ms", ms);

    /* and the cap is free again */
    extra = raw_get(query.port, "/v1/dashboard?consistent_with=0-0&wait_ms=100");
    ck_assert_int_eq(raw_status(extra, 5000, body, sizeof body), 200);
}
END_TEST

/*
 * SIGTERM with waits parked: each is answered (503 shutting_down) or its
 * connection closed, and es-query exits 0 well before their deadline
 * (libmicrohttpd aborts when stopped with a connection suspended).
 */
START_TEST(sigterm_answers_parked_waits)
{
    const char *env[] = {"ES_QUERY_WAITS_MAX=32", "ES_QUERY_WAIT_MAX_MS=60000", NULL};
    char token[ES_POSITION_TEXT_MAX], path[256], body[4096];
    static th_daemon q2;        /* the harness keeps a pointer to stop it at exit */
    int fds[8];
    struct timespec t0;
    long ms;

    th_daemon_start(&q2, "es-query", "ES_QUERY_PORT", env);
    far_token("orders", token);
    snprintf(path, sizeof path, "/v1/orders/o-1?consistent_with=%s&wait_ms=30000", token);
    for (int i = 0; i < 8; i++)
        fds[i] = raw_get(q2.port, path);
    usleep(500 * 1000);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(th_daemon_stop(&q2), 0);
    ms = ms_since(&t0);
    ck_assert_msg(ms < 10000, "es-query took %ld ms to stop", ms);
    for (int i = 0; i < 8; i++) {
        int status = raw_status(fds[i], 5000, body, sizeof body);

        ck_assert_msg(status == 503 || status == 0, "wait %d: %d %s", i, status, body);
        if (status == 503)
            ck_assert_msg(strstr(body, "\"shutting_down\"") != NULL, "wait %d: %s", i, body);
    }
}
END_TEST

static bool
announcements_up(void)
{
    th_response r;
    bool up = th_http(query.port, "GET", "/metrics", NULL, NULL, &r) == 200 &&
              strstr(r.body, "es_query_announcements_up 1") != NULL;

    th_response_free(&r);
    return up;
}

START_TEST(redis_goes_away_and_comes_back)
{
    th_response r;
    char h[96];
    json_t *j;
    int i;

    redis_stop();
    j = get_r("/v1/users/someone", NULL, 503, &r);
    ck_assert_str_eq(str(j, "error.code"), "redis_unavailable");
    ck_assert_str_eq(th_header(&r, "Retry-After", h, sizeof h), "1");
    json_decref(j);
    j = get_r("/readyz", NULL, 503, &r);
    ck_assert_str_eq(str(j, "status"), "unavailable");
    ck_assert_str_eq(th_header(&r, "Retry-After", h, sizeof h), "1");
    json_decref(j);
    json_decref(get("/healthz", 200));

    /* a new, empty Redis on the same port: connections come back */
    redis_start();
    j = get_r("/v1/users/someone", NULL, 404, &r);
    ck_assert_str_eq(th_header(&r, "X-Projection-Position", h, sizeof h), "0-0");
    json_decref(j);
    json_decref(get("/readyz", 200));
    for (i = 0; i < 100 && !announcements_up(); i++)
        usleep(100 * 1000);
    ck_assert(announcements_up());
    /* and the subscriber with them: a wait still ends with the batch */
    wait_is_satisfied("query");
}
END_TEST

/* ---- reads from a replica ------------------------------------------------- */

/* The inventory checkpoint of the Redis on port ("" when none). */
static void
inventory_position(unsigned port, char *out, size_t size)
{
    redisContext *c = redisConnect("127.0.0.1", (int)port);
    const char *user = getenv("ES_REDIS_USER"), *pw = getenv("ES_REDIS_PASSWORD");
    const char *db = getenv("ES_REDIS_DB");
    es_rm_state st;
    es_error err;
    redisReply *r = NULL;

    out[0] = '\0';
    ck_assert_msg(c != NULL && !c->err, "connect to redis on %u", port);
    if (user && user[0] && pw && pw[0])
        r = redisCommand(c, "AUTH %s %s", user, pw);
    freeReplyObject(r);
    if (db && db[0]) {
        r = redisCommand(c, "SELECT %s", db);
        freeReplyObject(r);
    }
    if (es_rm_state_get(c, "inventory", &st, &err) == ES_OK)
        snprintf(out, size, "%s", st.position);
    redisFree(c);
}

/* GET on es-query at port: status, body parsed (NULL if none), and the
 * X-Projection-Position header into pos. */
static json_t *
get_on(unsigned port, const char *path, int expect, char *pos, size_t pos_size)
{
    th_response r;
    json_t *j;

    th_http(port, "GET", path, NULL, NULL, &r);
    ck_assert_msg(r.status == expect, "GET %s: %d, expected %d: %s", path, r.status, expect,
                  r.body ? r.body : "");
    if (pos)
        ck_assert_ptr_nonnull(th_header(&r, "X-Projection-Position", pos, pos_size));
    j = r.body && r.body[0] ? json_loads(r.body, 0, NULL) : NULL;
    th_response_free(&r);
    return j;
}

/* es_query_replica_reads_total{outcome="<outcome>"} of es-query at port. */
static long
replica_reads(unsigned port, const char *outcome)
{
    th_response r;
    char needle[96];
    const char *at_;
    long n = -1;

    snprintf(needle, sizeof needle, "es_query_replica_reads_total{outcome=\"%s\"} ", outcome);
    th_http(port, "GET", "/metrics", NULL, NULL, &r);
    if (r.status == 200 && r.body && (at_ = strstr(r.body, needle)) != NULL)
        n = atol(at_ + strlen(needle));
    th_response_free(&r);
    return n;
}

/*
 * ES_QUERY_READ_REPLICA=1 with ES_REDIS_REPLICA: reads go to the replica
 * while it has what consistent_with asks, and to the primary when it is
 * behind or gone; never an answer older than the token.  The replica here
 * follows a decoy primary that holds an older copy of the inventory, so
 * "behind" is a fixed state, not a race with replication: its answers
 * (on_hand 3) tell apart from the primary's (on_hand 5).
 */
START_TEST(replica_reads_honour_consistent_with)
{
    unsigned decoy_port = th_free_port(), replica_port = th_free_port();
    char sku[64], path[256], tok_path[400], env_replica[64], port_s[16], pos[64], at_decoy[64],
        at_primary[64] = "", why[400] = "", have[64];
    const char *env[] = {"ES_QUERY_READ_REPLICA=1", env_replica, NULL};
    pid_t decoy, replica;
    static th_daemon q2;        /* the harness keeps a pointer until exit */
    json_t *j;
    int i;

    th_unique(sku, sizeof sku, "sku-replica");
    decoy = redis_spawn(decoy_port, "decoy", 0);
    replica = redis_spawn(replica_port, "replica", decoy_port);

    /* the decoy (and through it the replica) gets on_hand 3 ... */
    snprintf(port_s, sizeof port_s, "%u", decoy_port);
    setenv("ES_REDIS_PORT", port_s, 1);
    ck_assert_msg(apply("inventory",
                        json_pack("[o]", ev("stock-x", "StockRestocked",
                                            json_pack("{s:s, s:i}", "sku", sku, "quantity", 3))),
                        at_decoy, why, sizeof why),
                  "seeding the decoy: %s", why);
    snprintf(port_s, sizeof port_s, "%u", redis_port);
    setenv("ES_REDIS_PORT", port_s, 1);
    for (i = 0; i < 200; i++) {
        inventory_position(replica_port, have, sizeof have);
        if (strcmp(have, at_decoy) == 0)
            break;
        usleep(50 * 1000);
    }
    ck_assert_str_eq(have, at_decoy);
    /* ... the primary on_hand 5, at a later position (two events from a
     * checkpoint at least the decoy's) */
    seed("inventory",
         json_pack("[o, o]",
                   ev("stock-x", "StockRestocked", json_pack("{s:s, s:i}", "sku", sku, "quantity", 2)),
                   ev("stock-x", "StockRestocked", json_pack("{s:s, s:i}", "sku", sku, "quantity", 3))));
    inventory_position(redis_port, at_primary, sizeof at_primary);
    ck_assert_str_ne(at_primary, at_decoy);

    snprintf(env_replica, sizeof env_replica, "ES_REDIS_REPLICA=127.0.0.1:%u", replica_port);
    th_daemon_start(&q2, "es-query", "ES_QUERY_PORT", env);
    snprintf(path, sizeof path, "/v1/inventory/%s", sku);

    /* no token, or one the replica has: the replica answers */
    j = get_on(q2.port, path, 200, pos, sizeof pos);
    ck_assert_int_eq(num(j, "on_hand"), 3);
    ck_assert_str_eq(pos, at_decoy);
    json_decref(j);
    snprintf(tok_path, sizeof tok_path, "%s?consistent_with=%s", path, at_decoy);
    j = get_on(q2.port, tok_path, 200, pos, sizeof pos);
    ck_assert_int_eq(num(j, "on_hand"), 3);
    json_decref(j);
    ck_assert_int_eq(replica_reads(q2.port, "served"), 2);

    /* a token past the replica: the primary answers, at the token */
    snprintf(tok_path, sizeof tok_path, "%s?consistent_with=%s", path, at_primary);
    j = get_on(q2.port, tok_path, 200, pos, sizeof pos);
    ck_assert_int_eq(num(j, "on_hand"), 5);
    ck_assert_str_eq(pos, at_primary);
    json_decref(j);
    ck_assert_int_eq(replica_reads(q2.port, "behind"), 1);

    /* the replica gone: the primary answers, no error */
    kill(replica, SIGKILL);
    waitpid(replica, NULL, 0);
    j = get_on(q2.port, path, 200, pos, sizeof pos);
    ck_assert_int_eq(num(j, "on_hand"), 5);
    json_decref(j);
    ck_assert_int_ge(replica_reads(q2.port, "failed"), 1);
    ck_assert_int_eq(replica_reads(q2.port, "served"), 2);

    ck_assert_int_eq(th_daemon_stop(&q2), 0);
    kill(decoy, SIGTERM);
    waitpid(decoy, NULL, 0);
}
END_TEST

/* ---- the operator console ------------------------------------------------- */

/* POST body to path: the answer's JSON, which must have status expect. */
static json_t *
post_json(const char *path, const char *body, int expect)
{
    th_response r;
    json_t *j;

    th_http(query.port, "POST", path, NULL, body, &r);
    ck_assert_msg(r.status == expect, "POST %s: %d, not %d: %s", path, r.status, expect,
                  r.body ? r.body : "");
    j = json_loads(r.body ? r.body : "", 0, NULL);
    ck_assert_ptr_nonnull(j);
    th_response_free(&r);
    return j;
}

/* The status of one request to es-query (with the current token). */
static int
status_of(const char *method, const char *path, const char *body)
{
    th_response r;
    int st;

    th_http(query.port, method, path, NULL, body, &r);
    st = r.status;
    th_response_free(&r);
    return st;
}

/* The console's files are public, typed and under a same-origin policy;
 * its endpoints need a token, check their parameters and answer pages. */
START_TEST(console_files_and_endpoints)
{
    th_response r;
    char h[128];
    json_t *j;

    th_http_token(NULL);
    th_http(query.port, "GET", "/console/", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(th_header(&r, "Content-Type", h, sizeof h), "text/html; charset=utf-8");
    ck_assert_ptr_nonnull(th_header(&r, "Content-Security-Policy", h, sizeof h));
    ck_assert_msg(strncmp(h, "default-src 'self'", 18) == 0, "CSP %s", h);
    ck_assert_ptr_nonnull(strstr(r.body, "/console/app.js"));
    th_response_free(&r);
    th_http(query.port, "GET", "/console/app.js", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(th_header(&r, "Content-Type", h, sizeof h), "text/javascript; charset=utf-8");
    th_response_free(&r);
    th_http(query.port, "GET", "/console/style.css", NULL, NULL, &r);
    ck_assert_str_eq(th_header(&r, "Content-Type", h, sizeof h), "text/css; charset=utf-8");
    th_response_free(&r);
    th_http(query.port, "GET", "/console", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 308);
    ck_assert_str_eq(th_header(&r, "Location", h, sizeof h), "/console/");
    th_response_free(&r);
    ck_assert_int_eq(status_of("GET", "/console/../etc/passwd", NULL), 404);
    /* the data is not public */
    ck_assert_int_eq(status_of("GET", "/v1/console/overview", NULL), 401);
    ck_assert_int_eq(status_of("POST", "/v1/console/dead-letters/1/replay", "{}"), 401);
    th_http_token(th_token());

    j = get("/v1/console/overview", 200);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "projections")), pj_projection_count);
    ck_assert(json_is_object(json_object_get(j, "sagas_by_state")));
    ck_assert(json_is_integer(json_object_get(j, "dead_letters_open")));
    ck_assert(json_is_object(json_object_get(j, "daemons")));
    json_decref(j);
    j = get("/v1/console/whoami", 200);
    ck_assert(json_is_true(json_object_get(j, "admin")));
    json_decref(j);

    j = get("/v1/console/streams?limit=0", 400);
    ck_assert_str_eq(str(j, "error.field"), "limit");
    json_decref(j);
    j = get("/v1/console/streams?category=a-b", 400);
    ck_assert_str_eq(str(j, "error.field"), "category");
    json_decref(j);
    j = get("/v1/console/streams?limit=5&prefix=%25", 200);
    ck_assert(json_is_array(json_object_get(j, "streams")));
    json_decref(j);
    j = get("/v1/console/events/nonsense", 400);
    json_decref(j);
    j = get("/v1/console/events/1-999999999", 404);
    ck_assert_str_eq(str(j, "error.code"), "position_not_found");
    json_decref(j);
    j = get("/v1/console/feed?after=tail", 200);
    ck_assert(json_is_string(json_object_get(j, "next")));
    json_decref(j);
    j = get("/v1/console/feed?after=x", 400);
    json_decref(j);
    j = get("/v1/console/dead-letters", 200);
    ck_assert(json_is_integer(json_object_get(j, "open")));
    json_decref(j);
    j = get("/v1/console/sagas/nope", 404);
    ck_assert_str_eq(str(j, "error.code"), "saga_not_found");
    json_decref(j);
    j = get("/v1/console/sagas/nope/retry", 405);
    json_decref(j);
    j = get("/v1/console/nothing", 404);
    json_decref(j);

    ck_assert_int_eq(status_of("POST", "/v1/console/sagas/nope/retry", "{}"), 404);
    ck_assert_int_eq(status_of("POST", "/v1/console/sagas/nope/compensate", "[1]"), 400);
    ck_assert_int_eq(status_of("POST", "/v1/console/dead-letters/12x/replay", NULL), 400);
    ck_assert_int_eq(status_of("POST", "/v1/console/dead-letters/999999/replay", NULL), 404);
    ck_assert_int_eq(status_of("POST", "/v1/console/dead-letters/replay", "{\"fingerprint\":1}"), 400);
    th_http(query.port, "POST", "/v1/console/dead-letters/replay", NULL,
            "{\"fingerprint\":\"0123456789abcdef\"}", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"replayed\":[]"));
    th_response_free(&r);

    /* batch actions on sagas: the body is checked member by member */
    j = post_json("/v1/console/sagas/batch", "{\"action\":\"delete\",\"saga_ids\":[\"a\"]}", 400);
    ck_assert_str_eq(str(j, "error.field"), "action");
    json_decref(j);
    j = post_json("/v1/console/sagas/batch", "{\"action\":\"retry\",\"saga_ids\":[]}", 400);
    ck_assert_str_eq(str(j, "error.field"), "saga_ids");
    json_decref(j);
    j = post_json("/v1/console/sagas/batch", "{\"action\":\"retry\",\"saga_ids\":[\"a\",\"a\"]}", 400);
    ck_assert_str_eq(str(j, "error.field"), "saga_ids");
    json_decref(j);
    j = post_json("/v1/console/sagas/batch", "{\"action\":\"compensate\",\"saga_ids\":[\"a\"],"
                  "\"reason\":7}", 400);
    ck_assert_str_eq(str(j, "error.field"), "reason");
    json_decref(j);
    j = post_json("/v1/console/sagas/batch", "[1]", 400);
    ck_assert_str_eq(str(j, "error.field"), "body");
    json_decref(j);
    j = post_json("/v1/console/sagas/batch", "{\"action\":\"retry\",\"saga_ids\":[\"nope-1\",\"nope-2\"]}",
                  200);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "done")), 0);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "failed")), 2);
    ck_assert_str_eq(str(j, "failed.0.error.code"), "saga_not_found");
    json_decref(j);

    /* projection rebuilds: read with read:query, started by admin only */
    j = get("/v1/console/projections/users/rebuild", 200);
    ck_assert_str_eq(str(j, "state"), "none");
    ck_assert(json_is_string(json_object_get(j, "active_version")));
    json_decref(j);
    j = get("/v1/console/projections/nope/rebuild", 404);
    ck_assert_str_eq(str(j, "error.code"), "unknown_projection");
    ck_assert_str_eq(str(j, "error.field"), "name");
    json_decref(j);
    ck_assert_int_eq(status_of("POST", "/v1/console/projections/nope/rebuild", NULL), 404);
    ck_assert_int_eq(status_of("POST", "/v1/console/projections/users/rebuild", "[1]"), 400);
    th_http(query.port, "DELETE", "/v1/console/projections/users/rebuild", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(th_header(&r, "Allow", h, sizeof h), "GET, POST");
    th_response_free(&r);
    /* the batch action is a POST; a GET is refused, not taken for a saga */
    th_http(query.port, "GET", "/v1/console/sagas/batch", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(th_header(&r, "Allow", h, sizeof h), "POST");
    th_response_free(&r);
    th_http_token(NULL);
    ck_assert_int_eq(status_of("POST", "/v1/console/projections/users/rebuild", NULL), 401);
    th_http_token(th_token());

    /* traces: esctl trace's document; nothing known of an id is a 404 */
    j = get("/v1/console/traces/nope", 404);
    ck_assert_str_eq(str(j, "error.code"), "trace_not_found");
    json_decref(j);
    j = get("/v1/console/traces/0123456789abcdef0123456789abcdef", 404);
    ck_assert_str_eq(str(j, "error.code"), "trace_not_found");
    json_decref(j);
    ck_assert_int_eq(status_of("POST", "/v1/console/traces/nope", NULL), 405);

    /* correlations: a page of the events sharing one id */
    j = get("/v1/console/correlations/nobody-uses-this?limit=5", 200);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "events")), 0);
    ck_assert(json_is_null(json_object_get(j, "next")));
    json_decref(j);
    j = get("/v1/console/correlations/x?limit=0", 400);
    ck_assert_str_eq(str(j, "error.field"), "limit");
    json_decref(j);
    j = get("/v1/console/correlations/x?after=nowhere", 400);
    ck_assert_str_eq(str(j, "error.field"), "after");
    json_decref(j);
    j = get("/v1/console/correlations/%FF", 400);
    ck_assert_str_eq(str(j, "error.field"), "correlation_id");
    json_decref(j);
}
END_TEST

/* The connections of the tests' database whose last statement read the
 * dead letters (the console's, es-query being the only reader here). */
static long
dead_letter_readers(void)
{
    PGconn *c = PQconnectdb(th_conninfo());
    PGresult *r;
    long n = -1;

    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    r = PQexec(c, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                  "AND pid <> pg_backend_pid() AND query LIKE '%FROM es_saga_dead_letters%'");
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return n;
}

/* The console keeps a few connections for the next request instead of
 * connecting per call: after many requests some are still open, idle,
 * and there are never more than the pool's bound of them. */
/* The console's age filter: /v1/console/age-cursor turns "in the list
 * for more than S seconds" into the cursor of the sorted sets, which are
 * scored by stream sequence: the first message published after now - S.
 * A stream of its own: three messages, a pause, two more. */
START_TEST(console_age_cursor_is_the_first_message_after_the_age)
{
    static th_daemon q2;        /* the harness keeps a pointer until exit */
    const char *env[] = {"ES_RELAY_STREAM=AGE_TEST", NULL};
    const char *subj[] = {"age_test.>"};
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamConfig cfg;
    jsErrCode jerr = 0;
    json_t *j;

    th_stream_delete("AGE_TEST");
    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    jsStreamConfig_Init(&cfg);
    cfg.Name = "AGE_TEST";
    cfg.Subjects = subj;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_MemoryStorage;
    ck_assert_int_eq(js_AddStream(NULL, js, &cfg, NULL, &jerr), NATS_OK);
    for (int i = 0; i < 5; i++) {
        if (i == 3)
            sleep(4);           /* 1-3 are over 2 s old when 4-5 are not */
        ck_assert_int_eq(js_Publish(NULL, js, "age_test.x", "{}", 2, NULL, &jerr), NATS_OK);
    }
    th_daemon_start(&q2, "es-query", "ES_QUERY_PORT", env);

    j = get_on(q2.port, "/v1/console/age-cursor?older_than=2", 200, NULL, 0);
    ck_assert_str_eq(str(j, "cursor"), "4");
    json_decref(j);
    j = get_on(q2.port, "/v1/console/age-cursor?older_than=86400", 200, NULL, 0);
    ck_assert_str_eq(str(j, "cursor"), "1");       /* nothing is a day old */
    json_decref(j);
    sleep(3);
    j = get_on(q2.port, "/v1/console/age-cursor?older_than=2", 200, NULL, 0);
    ck_assert_str_eq(str(j, "cursor"), "6");       /* every message is: past the last */
    json_decref(j);
    j = get_on(q2.port, "/v1/console/age-cursor", 400, NULL, 0);
    ck_assert_str_eq(str(j, "error.field"), "older_than");
    json_decref(j);
    j = get_on(q2.port, "/v1/console/age-cursor?older_than=1x", 400, NULL, 0);
    ck_assert_str_eq(str(j, "error.field"), "older_than");
    json_decref(j);
    ck_assert_int_eq(th_daemon_stop(&q2), 0);
    th_stream_delete("AGE_TEST");
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}
END_TEST

/* A correlation page is bounded in bytes as the feed's pages are
 * (ES_READ_MAX_BYTES, 1 MiB by default): 40 events of 64 KiB asked for
 * 500 at a time come in several pages, each with next, and next leads
 * through every one of them once, in order.  Before, one request read
 * all 500 whatever their size (0.5 GB of big events). */
START_TEST(console_correlation_pages_stop_at_the_read_budget)
{
    enum { EVENTS = 40, DATA = 64 * 1024 };
    static char data[DATA + 64];
    char corr[64], meta[160], stream[96], path[300], next[64] = "";
    es_new_event e = {NULL, "Big", 1, data, meta};
    es_append_req req = {stream, ES_EXPECT_ANY, &e, 1};
    es_append_result res;
    es_store *st = NULL;
    es_error err;
    int seen = 0, pages = 0, n;

    th_http_token(th_token());
    th_unique(corr, sizeof corr, "corrbig");
    snprintf(meta, sizeof meta, "{\"correlation_id\": \"%s\"}", corr);
    n = snprintf(data, sizeof data, "{\"blob\": \"");
    memset(data + n, 'y', DATA);
    snprintf(data + n + DATA, sizeof data - (size_t)n - DATA, "\"}");
    ck_assert_msg(es_store_open(&st, th_conninfo(), &err) == ES_OK, "%s", err.message);
    for (int i = 0; i < EVENTS; i++) {
        snprintf(stream, sizeof stream, "%s-%d", corr, i);
        es_store_append(st, &req, &res);
        ck_assert_msg(res.status == ES_OK, "%s", res.err.message);
    }
    es_store_close(st);
    for (;;) {
        json_t *j, *evs;
        const json_t *nx;

        snprintf(path, sizeof path, "/v1/console/correlations/%s?limit=500%s%s", corr,
                 next[0] ? "&after=" : "", next);
        j = get(path, 200);
        evs = json_object_get(j, "events");
        nx = json_object_get(j, "next");
        pages++;
        /* at most the budget (1 MiB) and one event */
        ck_assert_msg(json_array_size(evs) <= 1024 / 64 + 1,
                      "a page of %zu events of 64 KiB: no byte budget", json_array_size(evs));
        for (size_t i = 0; i < json_array_size(evs); i++, seen++) {
            snprintf(stream, sizeof stream, "%s-%d", corr, seen);
            ck_assert_str_eq(json_string_value(json_object_get(json_array_get(evs, i), "stream")),
                             stream);
        }
        if (json_is_null(nx)) {
            json_decref(j);
            break;
        }
        ck_assert(json_is_string(nx));
        snprintf(next, sizeof next, "%s", json_string_value(nx));
        json_decref(j);
        ck_assert_int_le(pages, EVENTS + 1);
    }
    ck_assert_int_eq(seen, EVENTS);
    ck_assert_int_ge(pages, 3);
}
END_TEST

/* One GET on port (with the current token): status, code of an error
 * body and the Retry-After header, for a thread (no assertions). */
typedef struct probe {
    unsigned port;
    char path[200];
    int status;
    char code[64], field[32], retry[16];
} probe;

static void *
probe_run(void *arg)
{
    probe *p = arg;
    th_response r;
    json_t *j;

    th_http(p->port, "GET", p->path, NULL, NULL, &r);
    p->status = r.status;
    j = r.body && r.body[0] ? json_loads(r.body, 0, NULL) : NULL;
    if (j && json_is_string(json_object_get(json_object_get(j, "error"), "code")))
        snprintf(p->code, sizeof p->code, "%s",
                 json_string_value(json_object_get(json_object_get(j, "error"), "code")));
    if (j && json_is_string(json_object_get(json_object_get(j, "error"), "field")))
        snprintf(p->field, sizeof p->field, "%s",
                 json_string_value(json_object_get(json_object_get(j, "error"), "field")));
    if (th_header(&r, "Retry-After", p->retry, sizeof p->retry) == NULL)
        p->retry[0] = '\0';
    json_decref(j);
    th_response_free(&r);
    return NULL;
}

/* The trace view's work is bounded: a trace id anyone can send with any
 * number of commands is not read past ES_TRACE_RECORDS_MAX stage records
 * (422 trace_too_large, field trace), and no more than
 * ES_CONSOLE_TRACES_MAX views (each with a Redis and a NATS connection)
 * run at once: the next is 503 traces_busy with Retry-After.  A test
 * hook holds the first view 3 s so that the second surely finds its
 * place taken. */
START_TEST(console_trace_views_are_bounded)
{
    static th_daemon q3;        /* the harness keeps a pointer until exit */
    static char console_pg[600];
    const char *env[] = {"ES_TRACE_RECORDS_MAX=50", "ES_CONSOLE_TRACES_MAX=1",
                         "ES_QUERY_TEST_TRACE_DELAY_MS=3000", console_pg, NULL};
    es_rm_trace_stage stages[51];
    char trace[33];
    redisContext *c;
    es_error err;
    probe a = {0}, b = {0};
    pthread_t th;
    struct timespec t0;

    snprintf(console_pg, sizeof console_pg, "ES_CONSOLE_PG_CONNINFO=%s", th_conninfo());
    th_http_token(th_token());
    snprintf(trace, sizeof trace, "%016llx%016llx", (unsigned long long)time(NULL),
             (unsigned long long)getpid() | 1ULL << 60);
    for (int i = 0; i < 51; i++) {
        snprintf(stages[i].trace_id, sizeof stages[i].trace_id, "%s", trace);
        stages[i].seq = (uint64_t)i + 1;
        snprintf(stages[i].projection, sizeof stages[i].projection, "orders");
        stages[i].at_us = 1700000000000000LL + i;
    }
    ck_assert_ptr_nonnull(c = es_rm_connect(&err));
    ck_assert_msg(es_rm_trace_put(c, stages, 51, 600, &err) == ES_OK, "%s", err.message);
    redisFree(c);
    th_daemon_start(&q3, "es-query", "ES_QUERY_PORT", env);

    a.port = b.port = q3.port;
    snprintf(a.path, sizeof a.path, "/v1/console/traces/%s", trace);
    snprintf(b.path, sizeof b.path, "/v1/console/traces/%s", trace);
    ck_assert_int_eq(pthread_create(&th, NULL, probe_run, &a), 0);
    sleep(1);                   /* a holds the one place for 3 s */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    probe_run(&b);
    ck_assert_msg(b.status == 503, "a second trace view while one runs: %d %s", b.status, b.code);
    ck_assert_str_eq(b.code, "traces_busy");
    ck_assert_str_eq(b.retry, "1");
    ck_assert_int_lt(ms_since(&t0), 1500);  /* refused, not queued behind a */
    pthread_join(th, NULL);
    ck_assert_msg(a.status == 422, "a trace of 51 records over a cap of 50: %d %s", a.status,
                  a.code);
    ck_assert_str_eq(a.code, "trace_too_large");
    ck_assert_str_eq(a.field, "trace");
    /* the place is free again */
    probe_run(&b);
    ck_assert_int_eq(b.status, 422);
    ck_assert_int_eq(th_daemon_stop(&q3), 0);
}
END_TEST

/* /metrics does not wait for the age cursor's search: the lag figures
 * share its NATS connection, and the search used to hold that
 * connection's lock through all its reads, so a client repeating
 * /v1/console/age-cursor held /metrics up.  A test hook makes each read
 * of the search take 1 s (a search of 64 messages: 7 reads); /metrics,
 * asked 1 s into it, must answer within 2 s, well before it ends. */
START_TEST(console_age_cursor_does_not_hold_up_metrics)
{
    static th_daemon q4;        /* the harness keeps a pointer until exit */
    const char *env[] = {"ES_RELAY_STREAM=AGE_SLOW", "ES_QUERY_TEST_AGE_READ_DELAY_MS=1000",
                         NULL};
    const char *subj[] = {"age_slow.>"};
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamConfig cfg;
    jsErrCode jerr = 0;
    probe a = {0};
    pthread_t th;
    struct timespec t0;
    th_response r;
    long ms;

    th_stream_delete("AGE_SLOW");
    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    jsStreamConfig_Init(&cfg);
    cfg.Name = "AGE_SLOW";
    cfg.Subjects = subj;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_MemoryStorage;
    ck_assert_int_eq(js_AddStream(NULL, js, &cfg, NULL, &jerr), NATS_OK);
    for (int i = 0; i < 64; i++)
        ck_assert_int_eq(js_Publish(NULL, js, "age_slow.x", "{}", 2, NULL, &jerr), NATS_OK);
    th_http_token(th_token());
    th_daemon_start(&q4, "es-query", "ES_QUERY_PORT", env);

    a.port = q4.port;
    snprintf(a.path, sizeof a.path, "/v1/console/age-cursor?older_than=3600");
    ck_assert_int_eq(pthread_create(&th, NULL, probe_run, &a), 0);
    sleep(1);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    th_http(q4.port, "GET", "/metrics", NULL, NULL, &r);
    ms = ms_since(&t0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "es_query_redis_up"));
    th_response_free(&r);
    ck_assert_msg(ms < 2000, "/metrics took %ld ms while an age cursor search ran", ms);
    pthread_join(th, NULL);
    ck_assert_int_eq(a.status, 200);      /* nothing is an hour old: the first message */
    ck_assert_int_eq(th_daemon_stop(&q4), 0);
    th_stream_delete("AGE_SLOW");
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}
END_TEST

START_TEST(console_reuses_its_connections)
{
    json_t *j;
    long n;

    th_http_token(th_token());
    for (int i = 0; i < 20; i++) {
        j = get("/v1/console/dead-letters", 200);
        json_decref(j);
    }
    n = dead_letter_readers();
    ck_assert_int_ge(n, 1);
    ck_assert_int_le(n, 4);
}
END_TEST

int
main(void)
{
    Suite *su = suite_create("query");
    TCase *tc = tcase_create("query");
    char tmpl[] = "/tmp/es-test-query-XXXXXX", port[16];
    int rc;

    if (mkdtemp(tmpl) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(redis_dir, sizeof redis_dir, "%s", tmpl);
    redis_port = th_free_port();
    redis_start();
    atexit(redis_cleanup);          /* runs after the harness stopped es-query */
    snprintf(port, sizeof port, "%u", redis_port);
    setenv("ES_REDIS_HOST", "127.0.0.1", 1);
    setenv("ES_REDIS_PORT", port, 1);   /* for es_rm_connect here and in the daemon */
    {
        static char console_pg[600];
        const char *env[] = {"ES_QUERY_WAITS_MAX=32", console_pg, NULL};    /* WAITS */

        /* the console reads the store and the saga tables of the tests' database */
        snprintf(console_pg, sizeof console_pg, "ES_CONSOLE_PG_CONNINFO=%s", th_conninfo());

        th_daemon_start(&query, "es-query", "ES_QUERY_PORT", env);
    }

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, empty_read_models);
    tcase_add_test(tc, user_documents);
    tcase_add_test(tc, order_document);
    tcase_add_test(tc, customer_orders_in_pages);
    tcase_add_test(tc, accounts_and_stock);
    tcase_add_test(tc, saga_documents);
    tcase_add_test(tc, dashboard_counters);
    tcase_add_test(tc, bad_requests);
    tcase_add_test(tc, etags);
    tcase_add_test(tc, consistent_with_waits_for_the_batch);
    tcase_add_test(tc, consistent_with_times_out);
    tcase_add_test(tc, an_announcement_of_another_version_does_not_answer);
    tcase_add_test(tc, pages_stay_whole_under_writes);
    tcase_add_test(tc, health_and_metrics);
    tcase_add_test(tc, console_files_and_endpoints);
    tcase_add_test(tc, console_age_cursor_is_the_first_message_after_the_age);
    tcase_add_test(tc, console_reuses_its_connections);
    tcase_add_test(tc, console_correlation_pages_stop_at_the_read_budget);
    tcase_add_test(tc, console_trace_views_are_bounded);
    tcase_add_test(tc, console_age_cursor_does_not_hold_up_metrics);
    tcase_add_test(tc, waits_hold_no_thread);
    tcase_add_test(tc, sigterm_answers_parked_waits);
    tcase_add_test(tc, replica_reads_honour_consistent_with);
    tcase_add_test(tc, redis_goes_away_and_comes_back);     /* last: it replaces Redis */
    suite_add_tcase(su, tc);
    rc = th_run_nofork(su);     /* one process: the tests share the daemon and the Redis */
    rc |= th_daemon_stop(&query);
    return rc;
}
