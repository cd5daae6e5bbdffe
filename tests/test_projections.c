/*
 * The projections and the read-model scripts on a real Redis: what each
 * event writes, that a batch and its checkpoint are one step (a repeat is
 * a no-op, a gap is refused), that an event a projection cannot apply
 * leaves the batch as it was, and that a version switch only happens once
 * the new version has caught up.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "projections.h"
#include "readmodel.h"

static redisContext *rc;

static void
setup(void)
{
    es_error err;

    th_redis_flush();
    rc = es_rm_connect(&err);
    ck_assert_msg(rc != NULL, "%s", err.message);
}

static void
teardown(void)
{
    redisFree(rc);
}

/* Decodes a stream message built from its parts. */
static void
event(es_feed_event *e, uint64_t seq, const char *stream, const char *type, const char *data)
{
    char body[2048];
    es_error err;

    snprintf(body, sizeof body,
             "{\"stream\":\"%s\",\"type\":\"%s\",\"event_id\":\"00000000-0000-4000-8000-%012llu\","
             "\"version\":0,\"position\":\"100-%llu\",\"recorded_at\":\"2026-11-22T00:00:00.000000Z\","
             "\"data\":%s,\"metadata\":{}}",
             stream, type, (unsigned long long)seq, (unsigned long long)seq, data);
    ck_assert_msg(es_feed_event_decode(body, strlen(body), seq, e, &err) == ES_OK, "%s", err.message);
}

/* Applies one event to projection p (version "" = active); returns the
 * number of events applied. */
static uint64_t
apply1(const char *p, uint64_t seq, const char *stream, const char *type, const char *data)
{
    es_rm_batch b;
    es_rm_applied a;
    es_feed_event e;
    es_error err;

    event(&e, seq, stream, type, data);
    es_rm_batch_init(&b, p, NULL);
    ck_assert_msg(pj_add(&b, pj_find(p), &e, &err) == ES_OK, "%s", err.message);
    ck_assert_int_eq(es_rm_apply(rc, &b, &a, &err), ES_OK);
    es_rm_batch_free(&b);
    es_feed_event_free(&e);
    return a.applied;
}

static char *
hget(const char *key, const char *field)
{
    static char out[1024];
    redisReply *r = redisCommand(rc, "HGET %s %s", key, field);

    ck_assert_ptr_nonnull(r);
    snprintf(out, sizeof out, "%s", r->type == REDIS_REPLY_STRING ? r->str : "(nil)");
    freeReplyObject(r);
    return out;
}

static long long
integer(const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(rc, fmt, arg);
    long long v;

    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_INTEGER);
    v = r->integer;
    freeReplyObject(r);
    return v;
}

START_TEST(users_and_orders_read_models)
{
    ck_assert_uint_eq(apply1("users", 1, "user-u1", "UserRegistered",
                             "{\"user_id\":\"u1\",\"email\":\"Ann@Example.ORG\",\"name\":\"Ann\"}"),
                      1);
    ck_assert_str_eq(hget("rm:users:1:user:u1", "status"), "pending_verification");
    ck_assert_str_eq(hget("rm:users:1:user:u1", "email"), "Ann@Example.ORG");
    {
        redisReply *r = redisCommand(rc, "GET rm:users:1:email:ann@example.org");
        ck_assert_str_eq(r->str, "u1");
        freeReplyObject(r);
    }
    apply1("users", 2, "user-u1", "UserVerificationRecorded",
           "{\"user_id\":\"u1\",\"result\":\"passed\",\"level\":100}");
    ck_assert_str_eq(hget("rm:users:1:user:u1", "status"), "verified");
    apply1("users", 3, "profile-u1", "ProfileCreated",
           "{\"user_id\":\"u1\",\"settings\":{\"theme\":\"dark\"}}");
    ck_assert_str_eq(hget("rm:users:1:user:u1", "profile"), "{\"theme\":\"dark\"}");
    ck_assert_str_eq(hget("rm:users:1:checkpoint", "seq"), "3");
    ck_assert_str_eq(hget("rm:users:1:checkpoint", "position"), "100-3");

    apply1("orders", 1, "order-o1", "OrderPlaced",
           "{\"order_id\":\"o1\",\"customer_id\":\"c1\",\"items\":[{\"sku\":\"s\",\"quantity\":2,"
           "\"unit_price\":5}],\"total\":10,\"ship_to\":{\"country\":\"DE\"}}");
    apply1("orders", 2, "account-c1", "PaymentCharged",
           "{\"customer_id\":\"c1\",\"order_id\":\"o1\",\"amount\":10}");
    apply1("orders", 3, "reservation-o1", "ReservationMade",
           "{\"order_id\":\"o1\",\"items\":[{\"sku\":\"s\",\"quantity\":2}]}");
    apply1("orders", 4, "shipment-o1", "ShipmentCreated",
           "{\"order_id\":\"o1\",\"country\":\"DE\",\"tracking_id\":\"t-1\"}");
    apply1("orders", 5, "order-o1", "OrderConfirmed", "{\"order_id\":\"o1\"}");
    ck_assert_str_eq(hget("rm:orders:1:order:o1", "status"), "confirmed");
    ck_assert_str_eq(hget("rm:orders:1:order:o1", "total"), "10");
    ck_assert_str_eq(hget("rm:orders:1:order:o1", "payment"), "{\"status\":\"charged\",\"amount\":10}");
    ck_assert_str_eq(hget("rm:orders:1:order:o1", "shipment"),
                     "{\"status\":\"created\",\"tracking_id\":\"t-1\",\"country\":\"DE\"}");
    ck_assert_int_eq(integer("LLEN %s", "rm:orders:1:orderhist:o1"), 5);
    {
        redisReply *r = redisCommand(rc, "ZSCORE rm:orders:1:custorders:c1 o1");
        ck_assert_str_eq(r->str, "1");      /* the feed sequence of OrderPlaced */
        freeReplyObject(r);
    }
}
END_TEST

START_TEST(accounts_stock_sagas_and_counters)
{
    apply1("accounts", 1, "account-c1", "FundsDeposited", "{\"customer_id\":\"c1\",\"amount\":500}");
    apply1("accounts", 2, "account-c1", "PaymentCharged",
           "{\"customer_id\":\"c1\",\"order_id\":\"o\",\"amount\":200}");
    apply1("accounts", 3, "account-c1", "PaymentDeclined",
           "{\"customer_id\":\"c1\",\"order_id\":\"p\",\"amount\":900,\"balance\":300}");
    apply1("accounts", 4, "account-c1", "PaymentRefunded",
           "{\"customer_id\":\"c1\",\"order_id\":\"o\",\"amount\":200}");
    ck_assert_str_eq(hget("rm:accounts:1:account:c1", "balance"), "500");

    apply1("inventory", 1, "stock-s", "StockRestocked", "{\"sku\":\"s\",\"quantity\":10}");
    apply1("inventory", 2, "stock-s", "StockReserved",
           "{\"sku\":\"s\",\"order_id\":\"o\",\"quantity\":4}");
    apply1("inventory", 3, "stock-s", "StockReleased",
           "{\"sku\":\"s\",\"order_id\":\"o\",\"quantity\":1}");
    ck_assert_str_eq(hget("rm:inventory:1:stock:s", "on_hand"), "10");
    ck_assert_str_eq(hget("rm:inventory:1:stock:s", "reserved"), "3");

    apply1("sagas", 1, "saga-g1", "SagaStarted",
           "{\"saga_id\":\"g1\",\"type\":\"order\",\"correlation_id\":\"o\"}");
    apply1("sagas", 2, "saga-g1", "SagaStepStarted",
           "{\"saga_id\":\"g1\",\"step\":\"charge\",\"attempt\":1}");
    apply1("sagas", 3, "saga-g1", "SagaStepFailed",
           "{\"saga_id\":\"g1\",\"step\":\"charge\",\"attempt\":1,\"error\":\"timeout\","
           "\"will_retry\":true}");
    apply1("sagas", 4, "saga-g1", "SagaStepStarted",
           "{\"saga_id\":\"g1\",\"step\":\"charge\",\"attempt\":2}");
    apply1("sagas", 5, "saga-g1", "SagaStepSucceeded",
           "{\"saga_id\":\"g1\",\"step\":\"charge\",\"attempt\":2}");
    apply1("sagas", 6, "saga-g1", "SagaStateChanged",
           "{\"saga_id\":\"g1\",\"type\":\"order\",\"from\":\"running\",\"to\":\"completed\"}");
    ck_assert_str_eq(hget("rm:sagas:1:saga:g1", "state"), "completed");
    ck_assert_str_eq(hget("rm:sagas:1:sagastep:g1:charge", "status"), "succeeded");
    ck_assert_str_eq(hget("rm:sagas:1:sagastep:g1:charge", "attempts"), "2");
    ck_assert_int_eq(integer("LLEN %s", "rm:sagas:1:sagasteps:g1"), 1);
    ck_assert_int_eq(integer("ZCARD %s", "rm:sagas:1:sagastate:running"), 0);
    ck_assert_int_eq(integer("ZCARD %s", "rm:sagas:1:sagatypestate:order:completed"), 1);

    apply1("dashboard", 1, "order-o", "OrderPlaced", "{\"total\":3}");
    apply1("dashboard", 2, "account-c", "PaymentCharged", "{\"amount\":70}");
    ck_assert_str_eq(hget("rm:dashboard:1:counters:", "events"), "2");
    ck_assert_str_eq(hget("rm:dashboard:1:counters:", "orders_placed"), "1");
    ck_assert_str_eq(hget("rm:dashboard:1:counters:", "revenue"), "70");
}
END_TEST

START_TEST(repeats_are_no_ops_and_gaps_are_refused)
{
    es_rm_batch b;
    es_rm_applied a;
    es_feed_event e[4];
    es_error err;
    const pj_projection *acc = pj_find("accounts");

    for (int i = 0; i < 4; i++)
        event(&e[i], (uint64_t)i + 1, "account-c9", "FundsDeposited",
              "{\"customer_id\":\"c9\",\"amount\":1}");
    /* 1 and 2 */
    es_rm_batch_init(&b, "accounts", NULL);
    pj_add(&b, acc, &e[0], &err);
    pj_add(&b, acc, &e[1], &err);
    ck_assert_int_eq(es_rm_apply(rc, &b, &a, &err), ES_OK);
    es_rm_batch_free(&b);
    ck_assert_uint_eq(a.applied, 2);
    ck_assert_uint_eq(a.seq, 2);
    /* 1, 2 again and 3: only 3 counts */
    es_rm_batch_init(&b, "accounts", NULL);
    for (int i = 0; i < 3; i++)
        pj_add(&b, acc, &e[i], &err);
    ck_assert_int_eq(es_rm_apply(rc, &b, &a, &err), ES_OK);
    es_rm_batch_free(&b);
    ck_assert_uint_eq(a.applied, 1);
    ck_assert_str_eq(hget("rm:accounts:1:account:c9", "balance"), "3");
    /* 5 without 4: refused, nothing written */
    es_feed_event_free(&e[3]);
    event(&e[3], 5, "account-c9", "FundsDeposited", "{\"customer_id\":\"c9\",\"amount\":1}");
    es_rm_batch_init(&b, "accounts", NULL);
    pj_add(&b, acc, &e[3], &err);
    ck_assert_int_eq(es_rm_apply(rc, &b, &a, &err), ES_OK);
    es_rm_batch_free(&b);
    ck_assert(a.gap);
    ck_assert_uint_eq(a.applied, 0);
    ck_assert_uint_eq(a.seq, 3);
    ck_assert_str_eq(a.position, "100-3");
    ck_assert_str_eq(hget("rm:accounts:1:account:c9", "balance"), "3");
    for (int i = 0; i < 4; i++)
        es_feed_event_free(&e[i]);
}
END_TEST

START_TEST(an_unappliable_event_leaves_the_batch_as_it_was)
{
    es_rm_batch b;
    es_feed_event ok, bad;
    es_error err;
    size_t n;

    event(&ok, 1, "order-o2", "OrderPlaced",
          "{\"order_id\":\"o2\",\"customer_id\":\"c\",\"items\":[],\"total\":0}");
    event(&bad, 2, "order-o3", "OrderPlaced", "{\"orderId\":\"o3\",\"total\":0}");
    es_rm_batch_init(&b, "orders", NULL);
    ck_assert_int_eq(pj_add(&b, pj_find("orders"), &ok, &err), ES_OK);
    n = b.n;
    ck_assert_int_eq(pj_add(&b, pj_find("orders"), &bad, &err), ES_EINVALID);
    ck_assert_str_eq(err.field, "data.order_id");
    ck_assert_uint_eq(b.n, n);
    ck_assert_uint_eq(b.events, 1);
    es_rm_batch_free(&b);
    /* other categories and unknown types are not the projection's */
    es_rm_batch_init(&b, "orders", NULL);
    es_feed_event_free(&bad);
    event(&bad, 2, "audit-x", "OrderPlaced", "{}");
    ck_assert_int_eq(pj_add(&b, pj_find("orders"), &bad, &err), ES_OK);
    es_rm_batch_free(&b);
    es_feed_event_free(&ok);
    es_feed_event_free(&bad);
}
END_TEST

START_TEST(a_command_redis_refuses_ends_the_batch_before_its_event)
{
    es_rm_batch b;
    es_rm_applied a;
    es_error err;

    /* event 1 is fine; event 2's command hits a key of the wrong type */
    freeReplyObject(redisCommand(rc, "SET rm:t_refuse:1:stock:x oops"));
    es_rm_batch_init(&b, "t_refuse", "1");
    es_rm_batch_event(&b, 1, "5-1");
    es_rm_cmd(&b, "HINCRBY", "stock:%s", "y");
    es_rm_arg_str(&b, "on_hand");
    es_rm_arg_int(&b, 1);
    es_rm_batch_event(&b, 2, "5-2");
    es_rm_cmd(&b, "HINCRBY", "stock:%s", "x");
    es_rm_arg_str(&b, "on_hand");
    es_rm_arg_int(&b, 1);
    es_rm_batch_event(&b, 3, "5-3");
    es_rm_cmd(&b, "HINCRBY", "stock:%s", "y");
    es_rm_arg_str(&b, "on_hand");
    es_rm_arg_int(&b, 1);
    ck_assert_int_eq(es_rm_apply(rc, &b, &a, &err), ES_OK);
    ck_assert_uint_eq(a.failed_seq, 2);
    ck_assert_ptr_nonnull(strstr(a.failed_why, "WRONGTYPE"));
    ck_assert(!a.failed_transient);             /* a refusal: it would fail again */
    ck_assert_uint_eq(a.seq, 1);                /* the checkpoint stays before it */
    ck_assert_uint_eq(a.applied, 1);
    ck_assert_str_eq(hget("rm:t_refuse:1:stock:y", "on_hand"), "1");
    /* the same batch again (a retry) applies nothing twice */
    ck_assert_int_eq(es_rm_apply(rc, &b, &a, &err), ES_OK);
    ck_assert_uint_eq(a.failed_seq, 2);
    ck_assert_str_eq(hget("rm:t_refuse:1:stock:y", "on_hand"), "1");
    es_rm_batch_free(&b);
}
END_TEST

/* How many times Redis ran cmd (INFO commandstats), to tell which way a
 * batch went. */
static long long
calls(const char *cmd)
{
    redisReply *r = redisCommand(rc, "INFO commandstats");
    char key[64];
    const char *p;
    long long n = 0;

    ck_assert_ptr_nonnull(r);
    snprintf(key, sizeof key, "cmdstat_%s:calls=", cmd);
    if ((p = strstr(r->str, key)) != NULL)
        n = atoll(p + strlen(key));
    freeReplyObject(r);
    return n;
}

/* Events from..to of projection t_tx, applying to the active version: an
 * RPUSH of its sequence onto log:<sku> each, sku "x" for event bad (0:
 * none); with add (not 0), an HINCRBY of stock:y by add too. */
static void
tx_batch(es_rm_batch *b, uint64_t from, uint64_t to, uint64_t bad, long long add)
{
    es_rm_batch_reset(b, "t_tx", NULL);
    for (uint64_t seq = from; seq <= to; seq++) {
        char pos[24];

        snprintf(pos, sizeof pos, "5-%llu", (unsigned long long)seq);
        es_rm_batch_event(b, seq, pos);
        es_rm_cmd(b, "RPUSH", "log:%s", seq == bad ? "x" : "y");
        es_rm_arg_int(b, (long long)seq);
        if (add != 0) {
            es_rm_cmd(b, "HINCRBY", "stock:%s", "y");
            es_rm_arg_str(b, "on_hand");
            es_rm_arg_int(b, add);
        }
    }
}

/* log:y of version 1, its elements joined by commas. */
static const char *
tx_log(void)
{
    static char out[256];
    redisReply *r = redisCommand(rc, "LRANGE rm:t_tx:1:log:y 0 -1");
    size_t n = 0;

    ck_assert_ptr_nonnull(r);
    out[0] = '\0';
    for (size_t i = 0; i < r->elements; i++)
        n += (size_t)snprintf(out + n, sizeof out - n, "%s%s", i ? "," : "", r->element[i]->str);
    freeReplyObject(r);
    return out;
}

/* Runs b as the live projector does, as one that last saw version 1 at
 * checkpoint seq, under lease. */
static es_rm_apply_job
tx_apply(es_rm_batch *b, uint64_t seq, const char *lease)
{
    es_rm_apply_job j = {.batch = b, .lease = lease, .version = "1", .seq = seq};
    es_error terr;

    ck_assert_int_eq(es_rm_apply_all(rc, &j, 1, NULL, 0, 0, &terr, NULL, NULL), ES_OK);
    return j;
}

/* The transaction's way of es_rm_apply_all: taken when Redis has what the
 * caller saw, with the scripts' outcome; the scripts when it has not. */
START_TEST(batches_go_as_transactions_when_redis_has_what_the_caller_saw)
{
    es_rm_batch b;
    es_rm_apply_job j;
    long long ex, ev;

    freeReplyObject(redisCommand(rc, "DEL rm:t_tx:active rm:t_tx:lease rm:t_tx:1:checkpoint "
                                     "rm:t_tx:1:log:x rm:t_tx:1:log:y rm:t_tx:1:stock:y"));
    freeReplyObject(redisCommand(rc, "SET rm:t_tx:active 1"));
    es_rm_batch_init(&b, "t_tx", NULL);
    /* 1..3 from an empty checkpoint: a transaction, no script */
    tx_batch(&b, 1, 3, 0, 0);
    ex = calls("exec"), ev = calls("evalsha");
    j = tx_apply(&b, 0, NULL);
    ck_assert_int_eq(j.status, ES_OK);
    ck_assert(j.transaction);
    ck_assert_uint_eq(j.out.applied, 3);
    ck_assert_uint_eq(j.out.seq, 3);
    ck_assert_str_eq(j.out.position, "5-3");
    ck_assert_str_eq(j.out.version, "1");
    ck_assert_uint_eq(j.out.failed_seq, 0);
    ck_assert_str_eq(tx_log(), "1,2,3");
    ck_assert_str_eq(hget("rm:t_tx:1:checkpoint", "seq"), "3");
    ck_assert_str_eq(hget("rm:t_tx:1:checkpoint", "position"), "5-3");
    ck_assert_int_eq(calls("exec"), ex + 1);
    ck_assert_int_eq(calls("evalsha"), ev);
    /* the same again by a caller that saw 3: nothing past it, nothing twice */
    j = tx_apply(&b, 3, NULL);
    ck_assert_uint_eq(j.out.applied, 0);
    ck_assert_uint_eq(j.out.seq, 3);
    ck_assert_str_eq(j.out.position, "5-3");
    ck_assert_str_eq(tx_log(), "1,2,3");
    /* a caller that saw 1 (Redis has 3): the script, which skips 1..3 */
    ev = calls("evalsha");
    j = tx_apply(&b, 1, NULL);
    ck_assert_int_eq(j.status, ES_OK);
    ck_assert(!j.transaction);
    ck_assert_uint_eq(j.out.applied, 0);
    ck_assert_uint_eq(j.out.seq, 3);
    ck_assert_int_eq(calls("evalsha"), ev + 1);
    ck_assert_str_eq(tx_log(), "1,2,3");
    /* an amount added, which Redis may refuse for its value (an
     * overflow): the script, always */
    tx_batch(&b, 4, 4, 0, 5);
    ev = calls("evalsha");
    j = tx_apply(&b, 3, NULL);
    ck_assert(!j.transaction);
    ck_assert_int_eq(calls("evalsha"), ev + 1);
    ck_assert_uint_eq(j.out.seq, 4);
    ck_assert_str_eq(hget("rm:t_tx:1:stock:y", "on_hand"), "5");
    /* a count (by 1): a transaction */
    tx_batch(&b, 5, 5, 0, 1);
    ex = calls("exec");
    j = tx_apply(&b, 4, NULL);
    ck_assert(j.transaction);
    ck_assert_int_eq(calls("exec"), ex + 1);
    ck_assert_str_eq(hget("rm:t_tx:1:stock:y", "on_hand"), "6");
    /* a lease held by another: the script, which refuses it whole */
    freeReplyObject(redisCommand(rc, "SET rm:t_tx:lease tokA"));
    tx_batch(&b, 6, 6, 0, 0);
    j = tx_apply(&b, 5, "tokB");
    ck_assert_int_eq(j.status, ES_ECONFLICT);
    ck_assert_str_eq(j.err.code, "lease_lost");
    ck_assert_str_eq(tx_log(), "1,2,3,4,5");
    /* its holder's: a transaction */
    ex = calls("exec");
    j = tx_apply(&b, 5, "tokA");
    ck_assert_int_eq(j.status, ES_OK);
    ck_assert(j.transaction);
    ck_assert_uint_eq(j.out.applied, 1);
    ck_assert_int_eq(calls("exec"), ex + 1);
    ck_assert_str_eq(tx_log(), "1,2,3,4,5,6");
    /* a version switched under the caller: the script, into the new one */
    freeReplyObject(redisCommand(rc, "SET rm:t_tx:active 2"));
    tx_batch(&b, 7, 7, 0, 0);
    j = tx_apply(&b, 6, "tokA");
    ck_assert_int_eq(j.status, ES_OK);
    ck_assert(!j.transaction);
    ck_assert_str_eq(j.out.version, "2");
    ck_assert_str_eq(tx_log(), "1,2,3,4,5,6");
    freeReplyObject(redisCommand(rc, "SET rm:t_tx:active 1"));
    /* someone else made log:x a string: event 8 of 7..9 is refused inside
     * the transaction, the rest lands with the checkpoint, and the outcome
     * says the checkpoint passed it (rebuild) */
    freeReplyObject(redisCommand(rc, "SET rm:t_tx:1:log:x oops"));
    tx_batch(&b, 7, 9, 8, 0);
    ex = calls("exec");
    j = tx_apply(&b, 6, "tokA");
    ck_assert_int_eq(calls("exec"), ex + 1);
    ck_assert_int_eq(j.status, ES_OK);
    ck_assert_uint_eq(j.out.failed_seq, 8);
    ck_assert_ptr_nonnull(strstr(j.out.failed_why, "WRONGTYPE"));
    ck_assert(j.out.failed_passed);
    ck_assert(!j.out.failed_partial);       /* its one command was refused */
    ck_assert(!j.out.failed_transient);
    ck_assert_uint_eq(j.out.applied, 2);
    ck_assert_uint_eq(j.out.seq, 9);
    ck_assert_str_eq(tx_log(), "1,2,3,4,5,6,7,9");
    ck_assert_str_eq(hget("rm:t_tx:1:checkpoint", "seq"), "9");
    /* one round of two projections, one each way: each its own outcome */
    {
        es_rm_batch b2;
        es_rm_apply_job two[2];
        es_error terr;

        freeReplyObject(redisCommand(rc, "DEL rm:t_tx2:active rm:t_tx2:1:checkpoint "
                                         "rm:t_tx2:1:stock:z"));
        freeReplyObject(redisCommand(rc, "SET rm:t_tx2:active 1"));
        freeReplyObject(redisCommand(rc, "DEL rm:t_tx:lease"));
        tx_batch(&b, 10, 10, 0, 0);
        es_rm_batch_init(&b2, "t_tx2", NULL);
        es_rm_batch_event(&b2, 1, "5-1");
        es_rm_cmd(&b2, "HINCRBY", "stock:%s", "z");
        es_rm_arg_str(&b2, "on_hand");
        es_rm_arg_int(&b2, 7);
        memset(two, 0, sizeof two);
        two[0] = (es_rm_apply_job){.batch = &b, .version = "1", .seq = 9};
        two[1] = (es_rm_apply_job){.batch = &b2, .version = "1", .seq = 0};
        ck_assert_int_eq(es_rm_apply_all(rc, two, 2, NULL, 0, 0, &terr, NULL, NULL), ES_OK);
        ck_assert_int_eq(two[0].status, ES_OK);
        ck_assert_int_eq(two[1].status, ES_OK);
        ck_assert(two[0].transaction);
        ck_assert(!two[1].transaction);
        ck_assert_uint_eq(two[0].out.seq, 10);
        ck_assert_uint_eq(two[1].out.seq, 1);
        ck_assert_uint_eq(two[1].out.applied, 1);
        ck_assert_str_eq(tx_log(), "1,2,3,4,5,6,7,9,10");
        ck_assert_str_eq(hget("rm:t_tx2:1:stock:z", "on_hand"), "7");
        es_rm_batch_free(&b2);
    }
    es_rm_batch_free(&b);
}
END_TEST

/* Events from..to of projection t_cnt, each counted twice (HINCRBY
 * counters: "events" by 1, "odd" by 1 or -1) and logged (RPUSH log:y);
 * with other, event other also does HSET counters note. */
static void
cnt_batch(es_rm_batch *b, uint64_t from, uint64_t to, uint64_t other)
{
    es_rm_batch_reset(b, "t_cnt", NULL);
    for (uint64_t seq = from; seq <= to; seq++) {
        char pos[24];

        snprintf(pos, sizeof pos, "5-%llu", (unsigned long long)seq);
        es_rm_batch_event(b, seq, pos);
        es_rm_cmd(b, "HINCRBY", "counters:");
        es_rm_arg_str(b, "events");
        es_rm_arg_int(b, 1);
        es_rm_cmd(b, "HINCRBY", "counters:");
        es_rm_arg_str(b, "odd");
        es_rm_arg_int(b, seq % 2 ? 1 : -1);
        if (seq == other) {
            es_rm_cmd(b, "HSET", "counters:");
            es_rm_arg_str(b, "note");
            es_rm_arg_int(b, (long long)seq);
        }
        es_rm_cmd(b, "RPUSH", "log:%s", "y");
        es_rm_arg_int(b, (long long)seq);
    }
}

/* A transaction's counts go as one HINCRBY per key and field, with the
 * same outcome as one per event: the events at or below the checkpoint
 * are not counted, a key the batch also writes otherwise is not merged,
 * and a refused count fails every event it stands for. */
START_TEST(counts_of_a_transaction_go_as_one_command_each)
{
    es_rm_batch b;
    es_rm_apply_job j = {0};
    es_error terr;
    long long hi;

    freeReplyObject(redisCommand(rc, "DEL rm:t_cnt:active rm:t_cnt:1:checkpoint "
                                     "rm:t_cnt:1:counters: rm:t_cnt:1:log:y"));
    freeReplyObject(redisCommand(rc, "SET rm:t_cnt:active 1"));
    es_rm_batch_init(&b, "t_cnt", NULL);
    cnt_batch(&b, 1, 5, 0);
    hi = calls("hincrby");
    j = (es_rm_apply_job){.batch = &b, .version = "1", .seq = 0};
    ck_assert_int_eq(es_rm_apply_all(rc, &j, 1, NULL, 0, 0, &terr, NULL, NULL), ES_OK);
    ck_assert_int_eq(j.status, ES_OK);
    ck_assert(j.transaction);
    ck_assert_uint_eq(j.out.applied, 5);
    ck_assert_uint_eq(j.out.seq, 5);
    ck_assert_int_eq(calls("hincrby"), hi + 2);
    ck_assert_str_eq(hget("rm:t_cnt:1:counters:", "events"), "5");
    ck_assert_str_eq(hget("rm:t_cnt:1:counters:", "odd"), "1");
    /* 4..8 by a caller that saw 5 (Redis has 5): 4 and 5 not again */
    cnt_batch(&b, 4, 8, 0);
    hi = calls("hincrby");
    j = (es_rm_apply_job){.batch = &b, .version = "1", .seq = 5};
    ck_assert_int_eq(es_rm_apply_all(rc, &j, 1, NULL, 0, 0, &terr, NULL, NULL), ES_OK);
    ck_assert(j.transaction);
    ck_assert_uint_eq(j.out.applied, 3);
    ck_assert_int_eq(calls("hincrby"), hi + 2);
    ck_assert_str_eq(hget("rm:t_cnt:1:counters:", "events"), "8");
    ck_assert_str_eq(hget("rm:t_cnt:1:counters:", "odd"), "0");
    /* the key written otherwise by event 10: each count on its own */
    cnt_batch(&b, 9, 11, 10);
    hi = calls("hincrby");
    j = (es_rm_apply_job){.batch = &b, .version = "1", .seq = 8};
    ck_assert_int_eq(es_rm_apply_all(rc, &j, 1, NULL, 0, 0, &terr, NULL, NULL), ES_OK);
    ck_assert(j.transaction);
    ck_assert_int_eq(calls("hincrby"), hi + 6);
    ck_assert_str_eq(hget("rm:t_cnt:1:counters:", "events"), "11");
    ck_assert_str_eq(hget("rm:t_cnt:1:counters:", "note"), "10");
    /* counters made a string by someone else: the merged count is
     * refused, for its first event and every event merged into it (each
     * applied in part: its log entry landed) */
    freeReplyObject(redisCommand(rc, "DEL rm:t_cnt:1:counters:"));
    freeReplyObject(redisCommand(rc, "SET rm:t_cnt:1:counters: oops"));
    cnt_batch(&b, 12, 14, 0);
    j = (es_rm_apply_job){.batch = &b, .version = "1", .seq = 11};
    ck_assert_int_eq(es_rm_apply_all(rc, &j, 1, NULL, 0, 0, &terr, NULL, NULL), ES_OK);
    ck_assert_int_eq(j.status, ES_OK);
    ck_assert(j.transaction);
    ck_assert_uint_eq(j.out.failed_seq, 12);
    ck_assert_ptr_nonnull(strstr(j.out.failed_why, "WRONGTYPE"));
    ck_assert(j.out.failed_passed);
    ck_assert(j.out.failed_partial);
    ck_assert_uint_eq(j.out.applied, 0);
    ck_assert_uint_eq(j.out.seq, 14);
    es_rm_batch_free(&b);
}
END_TEST

/* Past the 32 key and field pairs a transaction merges, a pair's counts
 * go one by one, each answered in its place: every value still right. */
START_TEST(counts_past_the_merged_pairs_go_one_by_one)
{
    es_rm_batch b;
    es_rm_apply_job j;
    es_error terr;
    long long hi;

    freeReplyObject(redisCommand(rc, "DEL rm:t_cnt:active rm:t_cnt:1:checkpoint "
                                     "rm:t_cnt:1:counters: rm:t_cnt:1:log:y"));
    freeReplyObject(redisCommand(rc, "SET rm:t_cnt:active 1"));
    es_rm_batch_init(&b, "t_cnt", NULL);
    for (uint64_t seq = 1; seq <= 3; seq++) {
        char pos[24];

        snprintf(pos, sizeof pos, "5-%llu", (unsigned long long)seq);
        es_rm_batch_event(&b, seq, pos);
        for (int k = 0; k < 40; k++) {
            char field[8];

            snprintf(field, sizeof field, "f%d", k);
            es_rm_cmd(&b, "HINCRBY", "counters:");
            es_rm_arg_str(&b, field);
            es_rm_arg_int(&b, k % 2 ? 1 : -1);
        }
        es_rm_cmd(&b, "RPUSH", "log:%s", "y");
        es_rm_arg_int(&b, (long long)seq);
    }
    hi = calls("hincrby");
    j = (es_rm_apply_job){.batch = &b, .version = "1", .seq = 0};
    ck_assert_int_eq(es_rm_apply_all(rc, &j, 1, NULL, 0, 0, &terr, NULL, NULL), ES_OK);
    ck_assert_int_eq(j.status, ES_OK);
    ck_assert(j.transaction);
    ck_assert_uint_eq(j.out.applied, 3);
    ck_assert_uint_eq(j.out.seq, 3);
    /* 32 merged pairs once, the other 8 three times each */
    ck_assert_int_eq(calls("hincrby"), hi + 32 + 8 * 3);
    for (int k = 0; k < 40; k++) {
        char field[8];

        snprintf(field, sizeof field, "f%d", k);
        ck_assert_str_eq(hget("rm:t_cnt:1:counters:", field), k % 2 ? "3" : "-3");
    }
    es_rm_batch_free(&b);
}
END_TEST

/* One event of projection name, version ver: HINCRBY stock:<sku>. */
static void
stock_event(es_rm_batch *b, const char *name, const char *ver, const char *sku)
{
    es_rm_batch_reset(b, name, ver);
    es_rm_batch_event(b, 1, "5-1");
    es_rm_cmd(b, "HINCRBY", "stock:%s", sku);
    es_rm_arg_str(b, "on_hand");
    es_rm_arg_int(b, 1);
}

static void
set_maxmemory(const char *bytes)
{
    redisReply *r = redisCommand(rc, "CONFIG SET maxmemory %s", bytes);

    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
}

/* Redis' own error code, not the words around it, says whether a failure
 * passes: out of memory is tried again later, a key of the wrong type is
 * a refusal; no answer at all passes too. */
START_TEST(redis_errors_say_whether_they_pass)
{
    es_rm_batch b;
    es_rm_applied a, oom_a;
    es_error err, oom_write, oom_script;
    es_status oom_apply_st, oom_write_st, oom_script_st;
    size_t replies;
    redisReply *r;
    const char *const get[] = {"HGET", "stock:x", "on_hand", NULL};
    const char *const *cmds[] = {get};
    redisContext *none;

    /* refusals: on the live path, the rebuild's and the read path */
    freeReplyObject(redisCommand(rc, "SET rm:t_kind:1:stock:x oops"));
    es_rm_batch_init(&b, "t_kind", "1");
    stock_event(&b, "t_kind", "1", "x");
    ck_assert_int_eq(es_rm_apply(rc, &b, &a, &err), ES_OK);
    ck_assert_uint_eq(a.failed_seq, 1);
    ck_assert(!a.failed_transient);
    ck_assert_int_eq(es_rm_read(rc, "t_kind", "1", cmds, 1, &r, &err), ES_EINTERNAL);
    ck_assert(!err.transient);
    ck_assert_ptr_nonnull(strstr(err.message, "WRONGTYPE"));
    ck_assert_int_eq(es_rm_write_send(rc, &b, &replies, &err), ES_OK);
    ck_assert_int_eq(es_rm_write_recv(rc, replies, &err), ES_EINTERNAL);
    ck_assert(!err.transient);
    ck_assert_ptr_nonnull(strstr(err.message, "WRONGTYPE"));

    /* out of memory passes: in a batch's command, a write, and the
     * script's own first write (version 1 of a new projection); the limit
     * is lifted before anything is checked */
    set_maxmemory("1");
    stock_event(&b, "t_kind", "2", "y");
    oom_apply_st = es_rm_apply(rc, &b, &oom_a, &err);
    stock_event(&b, "t_kind", "3", "y");
    oom_write_st = es_rm_write_send(rc, &b, &replies, &oom_write);
    if (oom_write_st == ES_OK)
        oom_write_st = es_rm_write_recv(rc, replies, &oom_write);
    stock_event(&b, "t_kind_new", NULL, "y");
    oom_script_st = es_rm_apply(rc, &b, &a, &oom_script);
    set_maxmemory("0");
    es_rm_batch_free(&b);
    ck_assert_int_eq(oom_apply_st, ES_OK);
    ck_assert_uint_eq(oom_a.failed_seq, 1);
    ck_assert(!oom_a.failed_partial);
    ck_assert_msg(oom_a.failed_transient, "%s", oom_a.failed_why);
    ck_assert_int_eq(oom_write_st, ES_EINTERNAL);
    ck_assert_msg(oom_write.transient, "%s", oom_write.message);
    ck_assert_int_eq(oom_script_st, ES_EINTERNAL);
    ck_assert_msg(oom_script.transient, "%s", oom_script.message);
    ck_assert_ptr_nonnull(strstr(oom_script.message, "OOM"));

    /* no answer */
    setenv("ES_REDIS_PORT", "1", 1);
    none = es_rm_connect(&err);
    ck_assert_ptr_null(none);
    ck_assert_int_eq(err.status, ES_EUNAVAILABLE);
    ck_assert(err.transient);
}
END_TEST

START_TEST(amounts_redis_could_not_add_are_refused)
{
    es_rm_batch b;
    es_feed_event e;
    es_error err;

    event(&e, 1, "stock-s", "StockRestocked", "{\"sku\":\"s\",\"quantity\":9223372036854775807}");
    es_rm_batch_init(&b, "inventory", NULL);
    ck_assert_int_eq(pj_add(&b, pj_find("inventory"), &e, &err), ES_EINVALID);
    ck_assert_str_eq(err.field, "data.quantity");
    es_rm_batch_free(&b);
    es_feed_event_free(&e);
}
END_TEST

START_TEST(undecodable_messages_are_refused)
{
    static const char *bodies[] = {
        "", "null", "[]", "{\"stream\":1}", "{\"stream\":\"a-b\",\"type\":\"T\"}",
        "{\"stream\":\"a-b\",\"type\":\"T\",\"event_id\":\"e\",\"position\":\"x\","
        "\"recorded_at\":\"t\",\"data\":{}}",
        "{\"stream\":\"a-b\",\"type\":\"T\",\"event_id\":\"e\",\"position\":\"1-2\","
        "\"recorded_at\":\"t\",\"data\":[]}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        es_feed_event e;
        es_error err;
        ck_assert_int_ne(es_feed_event_decode(bodies[i], strlen(bodies[i]), 1, &e, &err), ES_OK);
        es_feed_event_free(&e);
    }
}
END_TEST

START_TEST(switch_waits_for_the_new_version_then_old_keys_go)
{
    es_rm_batch b;
    es_rm_applied a;
    es_feed_event e;
    es_error err;
    bool switched;
    redisReply *r;
    const char *const get[] = {"HGET", "stock:s2", "on_hand", NULL};
    const char *const *cmds[] = {get};

    apply1("inventory", 1, "stock-s2", "StockRestocked", "{\"sku\":\"s2\",\"quantity\":1}");
    apply1("inventory", 2, "stock-s2", "StockRestocked", "{\"sku\":\"s2\",\"quantity\":1}");
    /* version 2 has only event 1: too early */
    event(&e, 1, "stock-s2", "StockRestocked", "{\"sku\":\"s2\",\"quantity\":1}");
    es_rm_batch_init(&b, "inventory", "2");
    pj_add(&b, pj_find("inventory"), &e, &err);
    ck_assert_int_eq(es_rm_apply(rc, &b, &a, &err), ES_OK);
    es_rm_batch_free(&b);
    es_feed_event_free(&e);
    ck_assert_int_eq(es_rm_switch(rc, "inventory", "2", &switched, &err), ES_OK);
    ck_assert(!switched);
    /* reads still see version 1, pinned with its checkpoint */
    ck_assert_int_eq(es_rm_read(rc, "inventory", NULL, cmds, 1, &r, &err), ES_OK);
    ck_assert_str_eq(r->element[0]->str, "1");
    ck_assert_int_eq(r->element[1]->integer, 2);
    ck_assert_str_eq(r->element[3]->str, "2");
    freeReplyObject(r);
    /* caught up: the switch happens, reads move, and the live batches
     * (version "") land in version 2 */
    event(&e, 2, "stock-s2", "StockRestocked", "{\"sku\":\"s2\",\"quantity\":1}");
    es_rm_batch_init(&b, "inventory", "2");
    pj_add(&b, pj_find("inventory"), &e, &err);
    ck_assert_int_eq(es_rm_apply(rc, &b, &a, &err), ES_OK);
    es_rm_batch_free(&b);
    es_feed_event_free(&e);
    ck_assert_int_eq(es_rm_switch(rc, "inventory", "2", &switched, &err), ES_OK);
    ck_assert(switched);
    apply1("inventory", 3, "stock-s2", "StockRestocked", "{\"sku\":\"s2\",\"quantity\":5}");
    ck_assert_int_eq(es_rm_read(rc, "inventory", NULL, cmds, 1, &r, &err), ES_OK);
    ck_assert_str_eq(r->element[0]->str, "2");
    ck_assert_int_eq(r->element[1]->integer, 3);
    ck_assert_str_eq(r->element[3]->str, "7");
    freeReplyObject(r);
    ck_assert_int_eq(integer("SISMEMBER rm:inventory:retired %s", "1"), 1);
    ck_assert_int_eq(es_rm_drop_version(rc, "inventory", "1", &err), ES_OK);
    ck_assert_int_eq(integer("EXISTS %s", "rm:inventory:1:stock:s2"), 0);
    ck_assert_int_eq(integer("EXISTS %s", "rm:inventory:1:checkpoint"), 0);
    ck_assert_int_eq(integer("SISMEMBER rm:inventory:retired %s", "1"), 0);
    /* a version or name that would widen the key pattern is refused, and
     * the active version's keys stay */
    ck_assert_int_eq(es_rm_drop_version(rc, "inventory", "*", &err), ES_EINVALID);
    ck_assert_int_eq(es_rm_drop_version(rc, "inventory", "2:*", &err), ES_EINVALID);
    ck_assert_int_eq(es_rm_drop_version(rc, "inv*", "2", &err), ES_EINVALID);
    ck_assert_int_eq(integer("EXISTS %s", "rm:inventory:2:stock:s2"), 1);
}
END_TEST

/* A read whose version this thread knows goes as MULTI/EXEC (plain
 * commands, no Lua) and answers exactly what the script answers; one that
 * does not know it, or that finds another version active, takes the
 * script; a server that refuses MULTI gets the script from then on. */
START_TEST(reads_go_as_transactions_once_the_version_is_known)
{
    const char *const on_hand[] = {"HGET", "stock:s9", "on_hand", NULL};
    const char *const all[] = {"HGETALL", "stock:s9", NULL};
    const char *const missing[] = {"HGET", "stock:s9", "nothing", NULL};
    const char *const list[] = {"LRANGE", "orderhist:none", "0", "-1", NULL};
    const char *const *cmds[] = {on_hand, all, missing, list};
    const char *user = getenv("ES_REDIS_USER"), *pw = getenv("ES_REDIS_PASSWORD");
    char *saved_user = user ? strdup(user) : NULL, *saved_pw = pw ? strdup(pw) : NULL;
    redisReply *script, *r;
    redisContext *plain;
    long long ev, ex;
    es_error err;

    apply1("inventory", 1, "stock-s9", "StockRestocked", "{\"sku\":\"s9\",\"quantity\":4}");
    /* the first read learns the version from the script */
    ev = calls("evalsha"), ex = calls("exec");
    ck_assert_int_eq(es_rm_read(rc, "inventory", NULL, cmds, 4, &script, &err), ES_OK);
    ck_assert_int_eq(calls("evalsha"), ev + 1);
    ck_assert_uint_eq(script->elements, 7);
    ck_assert_str_eq(script->element[0]->str, "1");
    ck_assert_int_eq(script->element[1]->integer, 1);
    ck_assert_str_eq(script->element[2]->str, "100-1");
    ck_assert_str_eq(script->element[3]->str, "4");
    ck_assert_int_eq(script->element[5]->type, REDIS_REPLY_NIL);
    /* the next ones are transactions with the same answer, pinned or not */
    ck_assert_int_eq(es_rm_read(rc, "inventory", NULL, cmds, 4, &r, &err), ES_OK);
    ck_assert(es_rm_reply_equal(r, script));
    freeReplyObject(r);
    ck_assert_int_eq(es_rm_read(rc, "inventory", "1", cmds, 4, &r, &err), ES_OK);
    ck_assert(es_rm_reply_equal(r, script));
    freeReplyObject(r);
    ck_assert_int_eq(calls("evalsha"), ev + 1);
    ck_assert_int_eq(calls("exec"), ex + 2);
    /* a version with no checkpoint: seq 0, position "", as the script says */
    ck_assert_int_eq(es_rm_read(rc, "inventory", "9", cmds, 1, &r, &err), ES_OK);
    ck_assert_uint_eq(r->elements, 4);
    ck_assert_str_eq(r->element[0]->str, "9");
    ck_assert_int_eq(r->element[1]->type, REDIS_REPLY_INTEGER);
    ck_assert_int_eq(r->element[1]->integer, 0);
    ck_assert_int_eq(r->element[2]->type, REDIS_REPLY_STRING);
    ck_assert_str_eq(r->element[2]->str, "");
    ck_assert_int_eq(r->element[3]->type, REDIS_REPLY_NIL);
    freeReplyObject(r);
    /* another version active: the transaction sees it and the script
     * answers, from the new version */
    freeReplyObject(redisCommand(rc, "HSET rm:inventory:5:stock:s9 on_hand 11"));
    freeReplyObject(redisCommand(rc, "HSET rm:inventory:5:checkpoint seq 1 position 100-1"));
    freeReplyObject(redisCommand(rc, "SET rm:inventory:active 5"));
    ev = calls("evalsha");
    ck_assert_int_eq(es_rm_read(rc, "inventory", NULL, cmds, 1, &r, &err), ES_OK);
    ck_assert_str_eq(r->element[0]->str, "5");
    ck_assert_str_eq(r->element[3]->str, "11");
    freeReplyObject(r);
    ck_assert_int_eq(calls("evalsha"), ev + 1);
    /* a refusal inside the transaction is the read's error */
    freeReplyObject(redisCommand(rc, "SET rm:inventory:5:stock:s8 text"));
    cmds[0] = (const char *const[]){"HGET", "stock:s8", "on_hand", NULL};
    ck_assert_int_eq(es_rm_read(rc, "inventory", NULL, cmds, 1, &r, &err), ES_EINTERNAL);
    ck_assert_ptr_nonnull(strstr(err.message, "WRONGTYPE"));
    ck_assert(!err.transient);
    cmds[0] = on_hand;
    /* a user whose ACL has no MULTI reads through the script */
    freeReplyObject(redisCommand(rc, "ACL SETUSER t_nomulti on >t_nomulti_pw ~* &* +@all -multi"));
    setenv("ES_REDIS_USER", "t_nomulti", 1);
    setenv("ES_REDIS_PASSWORD", "t_nomulti_pw", 1);
    plain = es_rm_connect(&err);
    ck_assert_msg(plain != NULL, "%s", err.message);
    ev = calls("evalsha");
    ck_assert_int_eq(es_rm_read(plain, "inventory", NULL, cmds, 1, &r, &err), ES_OK);
    ck_assert_str_eq(r->element[3]->str, "11");
    freeReplyObject(r);
    ck_assert_int_eq(calls("evalsha"), ev + 1);
    /* the connection is in step after the refused MULTI */
    ck_assert_int_eq(es_rm_read(plain, "inventory", "5", cmds, 1, &r, &err), ES_OK);
    ck_assert_str_eq(r->element[3]->str, "11");
    freeReplyObject(r);
    ck_assert_int_eq(calls("evalsha"), ev + 2);
    redisFree(plain);
    /* nor EXEC: Redis discards the transaction, the script reads */
    es_rm_tx_allow();
    freeReplyObject(redisCommand(rc, "ACL SETUSER t_noexec on >t_noexec_pw ~* &* +@all -exec"));
    setenv("ES_REDIS_USER", "t_noexec", 1);
    setenv("ES_REDIS_PASSWORD", "t_noexec_pw", 1);
    plain = es_rm_connect(&err);
    ck_assert_msg(plain != NULL, "%s", err.message);
    /* the thread knows the version: the first read tries MULTI/EXEC, is
     * refused and reads through the script, as every read after it */
    for (int i = 0; i < 4; i++) {
        long long multi = calls("multi");

        ev = calls("evalsha");
        ck_assert_msg(es_rm_read(plain, "inventory", NULL, cmds, 1, &r, &err) == ES_OK,
                      "read %d without EXEC: %s", i, err.message);
        ck_assert_str_eq(r->element[3]->str, "11");
        freeReplyObject(r);
        ck_assert_int_eq(calls("evalsha"), ev + 1);
        ck_assert_int_eq(calls("multi"), multi + (i == 0));
    }
    redisFree(plain);
    freeReplyObject(redisCommand(rc, "ACL DELUSER t_noexec"));
    if (saved_user)
        setenv("ES_REDIS_USER", saved_user, 1);
    else
        unsetenv("ES_REDIS_USER");
    if (saved_pw)
        setenv("ES_REDIS_PASSWORD", saved_pw, 1);
    else
        unsetenv("ES_REDIS_PASSWORD");
    free(saved_user);
    free(saved_pw);
    freeReplyObject(redisCommand(rc, "ACL DELUSER t_nomulti"));
    freeReplyObject(script);
}
END_TEST

/* The version lifecycle's bookkeeping: numbers, building, retired. */
START_TEST(versions_are_numbered_recorded_and_listed)
{
    char v[ES_RM_VERSION_MAX], **retired;
    size_t n;
    es_rm_state s;
    es_error err;
    bool switched;

    /* no version yet: 2 ("1" is the live projector's), then upwards */
    ck_assert_int_eq(es_rm_version_new(rc, "t_life", v, sizeof v, &err), ES_OK);
    ck_assert_str_eq(v, "2");
    ck_assert_int_eq(es_rm_version_new(rc, "t_life", v, sizeof v, &err), ES_OK);
    ck_assert_str_eq(v, "3");
    /* always above the active version */
    freeReplyObject(redisCommand(rc, "SET rm:t_life:active 7"));
    ck_assert_int_eq(es_rm_version_new(rc, "t_life", v, sizeof v, &err), ES_OK);
    ck_assert_str_eq(v, "8");
    ck_assert_int_eq(es_rm_building_set(rc, "t_life", v, &err), ES_OK);
    ck_assert_int_eq(es_rm_state_get(rc, "t_life", &s, &err), ES_OK);
    ck_assert_str_eq(s.active, "7");
    ck_assert_str_eq(s.building, "8");
    ck_assert_int_eq(es_rm_building_clear(rc, "t_life", &err), ES_OK);
    ck_assert_int_eq(es_rm_state_get(rc, "t_life", &s, &err), ES_OK);
    ck_assert_str_eq(s.building, "");
    /* a switch retires the old version */
    ck_assert_int_eq(es_rm_retired_list(rc, "t_life", &retired, &n, &err), ES_OK);
    ck_assert_uint_eq(n, 0);
    es_rm_list_free(retired, n);
    ck_assert_int_eq(es_rm_switch(rc, "t_life", "8", &switched, &err), ES_OK);
    ck_assert(switched);
    ck_assert_int_eq(es_rm_retired_list(rc, "t_life", &retired, &n, &err), ES_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(retired[0], "7");
    es_rm_list_free(retired, n);
}
END_TEST

START_TEST(stop_reports_and_the_rebuild_lock)
{
    char reason[16];
    bool stopped;
    es_error err;

    ck_assert_int_eq(es_rm_stopped_get(rc, "t_stop", &stopped, reason, sizeof reason, &err),
                     ES_OK);
    ck_assert(!stopped);
    ck_assert_str_eq(reason, "");
    ck_assert_int_eq(es_rm_stopped_set(rc, "t_stop", 4, "", "a reason too long to fit", &err),
                     ES_OK);
    ck_assert_str_eq(hget("rm:t_stop:stopped", "seq"), "4");
    ck_assert_str_eq(hget("rm:t_stop:stopped", "position"), "-");
    ck_assert_int_eq(es_rm_stopped_get(rc, "t_stop", &stopped, reason, sizeof reason, &err),
                     ES_OK);
    ck_assert(stopped);
    ck_assert_str_eq(reason, "a reason too lo");
    /* put back after Redis lost it: the reason alone */
    ck_assert_int_eq(es_rm_stopped_clear(rc, "t_stop", &err), ES_OK);
    ck_assert_int_eq(es_rm_stopped_set(rc, "t_stop", 0, NULL, "again", &err), ES_OK);
    ck_assert_str_eq(hget("rm:t_stop:stopped", "seq"), "(nil)");
    ck_assert_int_eq(es_rm_stopped_get(rc, "t_stop", &stopped, NULL, 0, &err), ES_OK);
    ck_assert(stopped);
    ck_assert_int_eq(es_rm_stopped_clear(rc, "t_stop", &err), ES_OK);
    ck_assert_int_eq(es_rm_stopped_get(rc, "t_stop", &stopped, NULL, 0, &err), ES_OK);
    ck_assert(!stopped);

    /* one holder at a time; only the holder renews and releases */
    ck_assert_int_eq(es_rm_lock_take(rc, "t_stop", "a", &err), ES_OK);
    ck_assert_int_eq(es_rm_lock_take(rc, "t_stop", "b", &err), ES_ECONFLICT);
    ck_assert_str_eq(err.code, "rebuild_running");
    ck_assert_int_eq(es_rm_lock_renew(rc, "t_stop", "a", &err), ES_OK);
    ck_assert_int_eq(es_rm_lock_renew(rc, "t_stop", "b", &err), ES_ECONFLICT);
    ck_assert_str_eq(err.code, "rebuild_lock_lost");
    es_rm_lock_release(rc, "t_stop", "b");
    ck_assert_int_eq(es_rm_lock_renew(rc, "t_stop", "a", &err), ES_OK);
    es_rm_lock_release(rc, "t_stop", "a");
    ck_assert_int_eq(es_rm_lock_renew(rc, "t_stop", "a", &err), ES_ECONFLICT);
    ck_assert_int_eq(es_rm_lock_take(rc, "t_stop", "b", &err), ES_OK);
    ck_assert_int_gt(integer("PTTL %s", "rm:t_stop:rebuilding"), 0);
}
END_TEST

/* A batch that applies something announces the new checkpoint. */
START_TEST(applied_batches_send_notices)
{
    const char *const names[] = {"t_other", "accounts"};
    redisContext *sub;
    es_rm_notice n;
    es_error err;
    void *r = NULL;
    bool got = false;
    int i;

    ck_assert_ptr_nonnull(sub = es_rm_connect(&err));
    ck_assert_int_eq(es_rm_notice_subscribe(sub, names, 2, &err), ES_OK);
    apply1("accounts", 1, "account-c7", "FundsDeposited", "{\"customer_id\":\"c7\",\"amount\":1}");
    /* the other confirmation, then the notice */
    for (i = 0; i < 3 && !got; i++) {
        ck_assert_int_eq(redisGetReply(sub, &r), REDIS_OK);
        got = es_rm_notice_parse(r, &n);
        freeReplyObject(r);
    }
    ck_assert(got);
    ck_assert_str_eq(n.name, "accounts");
    ck_assert_str_eq(n.version, "1");
    ck_assert_uint_eq(n.seq, 1);
    ck_assert_str_eq(n.position, "100-1");
    redisFree(sub);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("projections");
    TCase *tc = tcase_create("projections");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, users_and_orders_read_models);
    tcase_add_test(tc, accounts_stock_sagas_and_counters);
    tcase_add_test(tc, repeats_are_no_ops_and_gaps_are_refused);
    tcase_add_test(tc, an_unappliable_event_leaves_the_batch_as_it_was);
    tcase_add_test(tc, undecodable_messages_are_refused);
    tcase_add_test(tc, a_command_redis_refuses_ends_the_batch_before_its_event);
    tcase_add_test(tc, batches_go_as_transactions_when_redis_has_what_the_caller_saw);
    tcase_add_test(tc, counts_of_a_transaction_go_as_one_command_each);
    tcase_add_test(tc, counts_past_the_merged_pairs_go_one_by_one);
    tcase_add_test(tc, redis_errors_say_whether_they_pass);
    tcase_add_test(tc, amounts_redis_could_not_add_are_refused);
    tcase_add_test(tc, switch_waits_for_the_new_version_then_old_keys_go);
    tcase_add_test(tc, reads_go_as_transactions_once_the_version_is_known);
    tcase_add_test(tc, versions_are_numbered_recorded_and_listed);
    tcase_add_test(tc, stop_reports_and_the_rebuild_lock);
    tcase_add_test(tc, applied_batches_send_notices);
    suite_add_tcase(s, tc);
    return th_run(s);
}
