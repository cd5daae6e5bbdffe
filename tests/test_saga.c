/*
 * The saga manager on real servers (es-command, es-relay and es-saga over a
 * database and a stream of their own).  Each step of each flow is made to
 * fail in turn (ES_SAGA_INJECT_FAILURE, and the natural refusals): exactly
 * the completed steps are compensated, in reverse order, once each.  A
 * verification timeout that falls due while es-saga is down fires after
 * the restart.  es-saga killed with SIGKILL again and again under load:
 * every saga ends completed or compensated, and no order is charged,
 * refunded, reserved or released twice.  The intake is idempotent and does
 * not care about order; an event that cannot start its saga is a dead
 * letter.  An operator lists, shows, retries and compensates sagas and
 * replays dead letters with esctl.
 */
#include <jansson.h>
#include <libpq-fe.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "feed.h"
#include "harness.h"
#include "intake.h"
#include "store.h"

static th_daemon cmd, relay, saga;
static char dbname[64], conninfo[512], tag[40], stream_name[64];
static char base_env[8][700];
static es_store *store;

/* Starts es-saga as d with up to three more variables (they override
 * base_env's). */
static void
start_saga_as(th_daemon *d, const char *extra1, const char *extra2, const char *extra3)
{
    const char *env[12];
    int n = 0;

    for (int i = 0; i < 8; i++)
        env[n++] = base_env[i];
    if (extra1)
        env[n++] = extra1;
    if (extra2)
        env[n++] = extra2;
    if (extra3)
        env[n++] = extra3;
    env[n] = NULL;
    th_daemon_start(d, "es-saga", "ES_SAGA_PORT", env);
}

static void
start_saga(const char *extra1, const char *extra2)
{
    start_saga_as(&saga, extra1, extra2, NULL);
}

static json_t *
post(const char *path, const char *body, int want)
{
    th_response r;
    json_t *j;
    int st = th_http(cmd.port, "POST", path, "Content-Type: application/json\r\n", body, &r);

    ck_assert_msg(st == want, "POST %s: %d: %s", path, st, r.body ? r.body : "");
    j = json_loads(r.body, 0, NULL);
    th_response_free(&r);
    return j;
}

/* The saga's stream as "Type:step" lines, and its state. */
static int
timeline(const char *saga_id, char lines[][80], int max, char *state)
{
    char s[300];
    es_page *p = NULL;
    es_error err;
    int n = 0;

    snprintf(s, sizeof s, "saga-%s", saga_id);
    strcpy(state, "none");
    if (es_store_read_stream(store, s, 0, 1000, ES_FORWARD, &p, &err) != ES_OK)
        return 0;
    for (size_t i = 0; i < p->count && n < max; i++) {
        json_t *d = json_loads(p->events[i].data, 0, NULL);
        const char *step = json_string_value(json_object_get(d, "step"));

        if (strcmp(p->events[i].type, "SagaStateChanged") == 0)
            snprintf(state, 16, "%s", json_string_value(json_object_get(d, "to")));
        else if (strcmp(p->events[i].type, "SagaStarted") == 0)
            strcpy(state, "running");
        snprintf(lines[n++], 80, "%s:%s", p->events[i].type, step ? step : "");
        json_decref(d);
    }
    es_page_destroy(p);
    return n;
}

/* Waits until the saga is completed, compensated or failed; its state. */
static const char *
settle(const char *saga_id, int seconds)
{
    static char state[16];
    char lines[200][80];

    for (int i = 0; i < seconds * 10; i++) {
        timeline(saga_id, lines, 200, state);
        if (strcmp(state, "completed") == 0 || strcmp(state, "compensated") == 0 ||
            strcmp(state, "failed") == 0)
            return state;
        usleep(100 * 1000);
    }
    return state;
}

/* The steps compensated, in order, as "a,b,c"; fails on a repeat. */
static void
compensations(const char *saga_id, char *out, size_t size)
{
    char lines[200][80], state[16];
    int n = timeline(saga_id, lines, 200, state);

    out[0] = '\0';
    for (int i = 0; i < n; i++)
        if (strncmp(lines[i], "SagaCompensationSucceeded:", 26) == 0) {
            ck_assert_msg(strstr(out, lines[i] + 26) == NULL, "%s compensated twice", lines[i] + 26);
            snprintf(out + strlen(out), size - strlen(out), "%s%s", out[0] ? "," : "", lines[i] + 26);
        }
}

/* Events of type with data.order_id = order in streams of category. */
static int
count_events(const char *category, const char *type, const char *order)
{
    PGconn *c = PQconnectdb(conninfo);
    const char *p[3] = {category, type, order};
    PGresult *r = PQexecParams(c, "SELECT count(*) FROM es_events WHERE category = $1 AND type = $2 "
                                  "AND data->>'order_id' = $3", 3, NULL, p, NULL, NULL, 0);
    int n = atoi(PQgetvalue(r, 0, 0));

    PQclear(r);
    PQfinish(c);
    return n;
}

static char *
place_order(const char *customer, const char *sku, int qty, const char *country)
{
    char body[400];
    json_t *j;
    char *id;

    snprintf(body, sizeof body,
             "{\"customer_id\":\"%s\",\"items\":[{\"sku\":\"%s\",\"quantity\":%d,\"unit_price\":100}]"
             "%s%s%s}", customer, sku, qty, country ? ",\"ship_to\":{\"country\":\"" : "",
             country ? country : "", country ? "\"}" : "");
    j = post("/v1/orders", body, 201);
    id = strdup(json_string_value(json_object_get(j, "order_id")));
    json_decref(j);
    return id;
}

static void
fund(const char *customer, const char *sku, int amount, int qty)
{
    char path[200], body[64];

    snprintf(path, sizeof path, "/v1/customers/%s/deposits", customer);
    snprintf(body, sizeof body, "{\"amount\":%d}", amount);
    json_decref(post(path, body, 201));
    snprintf(path, sizeof path, "/v1/inventory/%s/restock", sku);
    snprintf(body, sizeof body, "{\"quantity\":%d}", qty);
    json_decref(post(path, body, 201));
}

/* ---- order fulfilment ---------------------------------------------------- */

START_TEST(each_order_step_failing_compensates_exactly_what_was_done)
{
    static const char *steps[] = {"payment", "inventory", "shipment", "confirmation"};
    static const char *expect[] = {"order", "payment,order", "inventory,payment,order",
                                   "shipment,inventory,payment,order"};

    for (int k = 0; k < 4; k++) {
        char inject[80], customer[80], sku[80], saga_id[100], got[200];
        char *order;

        snprintf(inject, sizeof inject, "ES_SAGA_INJECT_FAILURE=order.%s", steps[k]);
        th_daemon_stop(&saga);
        start_saga(inject, NULL);
        snprintf(customer, sizeof customer, "%s-c%d", tag, k);
        snprintf(sku, sizeof sku, "%s-s%d", tag, k);
        fund(customer, sku, 1000, 10);
        order = place_order(customer, sku, 2, "DE");
        snprintf(saga_id, sizeof saga_id, "order-%s", order);
        ck_assert_str_eq(settle(saga_id, 20), "compensated");
        compensations(saga_id, got, sizeof got);
        ck_assert_msg(strcmp(got, expect[k]) == 0, "failing %s compensated %s, not %s", steps[k],
                      got, expect[k]);
        /* each effect at most once, and undone */
        ck_assert_int_eq(count_events("account", "PaymentCharged", order), k >= 1);
        ck_assert_int_eq(count_events("account", "PaymentRefunded", order), k >= 1);
        ck_assert_int_eq(count_events("reservation", "ReservationMade", order), k >= 2);
        ck_assert_int_eq(count_events("reservation", "ReservationReleased", order), k >= 2);
        ck_assert_int_eq(count_events("shipment", "ShipmentCreated", order), k >= 3);
        ck_assert_int_eq(count_events("shipment", "ShipmentCancelled", order), k >= 3);
        ck_assert_int_eq(count_events("order", "OrderFailed", order), 1);
        free(order);
    }
    th_daemon_stop(&saga);
    start_saga(NULL, NULL);
}
END_TEST

START_TEST(orders_complete_or_compensate_on_their_own_refusals)
{
    char customer[80], sku[80], saga_id[120], got[200];
    char *ok, *poor, *far, *short_stock;

    snprintf(customer, sizeof customer, "%s-n", tag);
    snprintf(sku, sizeof sku, "%s-ns", tag);
    fund(customer, sku, 100000, 3);
    ok = place_order(customer, sku, 1, "DE");
    snprintf(saga_id, sizeof saga_id, "order-%s", ok);
    ck_assert_str_eq(settle(saga_id, 20), "completed");
    ck_assert_int_eq(count_events("order", "OrderConfirmed", ok), 1);

    poor = place_order("nobody-with-money", sku, 1, "DE");          /* payment refused */
    snprintf(saga_id, sizeof saga_id, "order-%s", poor);
    ck_assert_str_eq(settle(saga_id, 20), "compensated");
    compensations(saga_id, got, sizeof got);
    ck_assert_str_eq(got, "order");

    short_stock = place_order(customer, sku, 50, "DE");             /* stock refused */
    snprintf(saga_id, sizeof saga_id, "order-%s", short_stock);
    ck_assert_str_eq(settle(saga_id, 20), "compensated");
    compensations(saga_id, got, sizeof got);
    ck_assert_str_eq(got, "payment,order");

    far = place_order(customer, sku, 1, "XX");                      /* shipping refused */
    snprintf(saga_id, sizeof saga_id, "order-%s", far);
    ck_assert_str_eq(settle(saga_id, 20), "compensated");
    compensations(saga_id, got, sizeof got);
    ck_assert_str_eq(got, "inventory,payment,order");
    free(ok);
    free(poor);
    free(far);
    free(short_stock);
}
END_TEST

/* ---- user registration --------------------------------------------------- */

static char *
register_user(const char *email)
{
    char body[300];
    json_t *j;
    char *id;

    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"T\"}", email);
    j = post("/v1/users", body, 201);
    id = strdup(json_string_value(json_object_get(j, "user_id")));
    json_decref(j);
    return id;
}

START_TEST(registration_steps_failing_in_turn)
{
    static const struct {
        const char *inject, *domain, *state, *comps, *failed_step;
    } cases[] = {
        {NULL, "example.org", "completed", "", NULL},
        {"registration.profile", "example.org", "compensated", "user", "profile"},
        {NULL, "fraud.test", "compensated", "profile,user", "fraud_check"},
        {"registration.fraud_check", "example.org", "compensated", "profile,user", "fraud_check"},
        {NULL, "unverified.test", "compensated", "profile,user", "verification"},
        {"registration.verification", "example.org", "compensated", "profile,user", "verification"},
        {"registration.welcome_notification", "example.org", "completed", "", "welcome_notification"},
        {"registration.verification_email", "example.org", "completed", "", "verification_email"},
        {"registration.analytics", "example.org", "completed", "", "analytics"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char inject[120], email[200], saga_id[120], got[200], lines[200][80], state[16], want[120];
        char *user;
        int n;
        bool failed = false;

        th_daemon_stop(&saga);
        snprintf(inject, sizeof inject, "ES_SAGA_INJECT_FAILURE=%s",
                 cases[k].inject ? cases[k].inject : "");
        start_saga(inject, NULL);
        snprintf(email, sizeof email, "u%zu.%s@%s", k, tag, cases[k].domain);
        user = register_user(email);
        snprintf(saga_id, sizeof saga_id, "registration-%s", user);
        ck_assert_msg(strcmp(settle(saga_id, 30), cases[k].state) == 0, "case %zu: %s, not %s", k,
                      settle(saga_id, 0), cases[k].state);
        compensations(saga_id, got, sizeof got);
        ck_assert_msg(strcmp(got, cases[k].comps) == 0, "case %zu compensated %s", k, got);
        n = timeline(saga_id, lines, 200, state);
        snprintf(want, sizeof want, "SagaStepFailed:%s", cases[k].failed_step ? cases[k].failed_step : "-");
        for (int i = 0; i < n; i++)
            failed |= strcmp(lines[i], want) == 0;
        ck_assert_msg(failed == (cases[k].failed_step != NULL), "case %zu: no %s", k, want);
        free(user);
    }
    th_daemon_stop(&saga);
    start_saga(NULL, NULL);
}
END_TEST

START_TEST(a_timeout_due_while_the_manager_is_down_fires_after_restart)
{
    char email[200], saga_id[120], lines[200][80], state[16], got[200];
    char *user;
    bool waiting = false;

    /* no verifier answer in time: the verification step times out */
    th_daemon_stop(&saga);
    start_saga("ES_SAGA_START_DELAY_VERIFICATION_MS=600000",
               "ES_SAGA_TIMEOUT_REGISTRATION_VERIFICATION_MS=2000");
    snprintf(email, sizeof email, "late.%s@example.org", tag);
    user = register_user(email);
    snprintf(saga_id, sizeof saga_id, "registration-%s", user);
    for (int i = 0; i < 100 && !waiting; i++) {
        int n = timeline(saga_id, lines, 200, state);
        for (int j = 0; j < n; j++)
            waiting |= strcmp(lines[j], "SagaStepStarted:verification") == 0;
        usleep(100 * 1000);
    }
    ck_assert(waiting);
    th_daemon_kill(&saga);
    sleep(3);                               /* the deadline passes while it is down */
    timeline(saga_id, lines, 200, state);
    ck_assert_str_eq(state, "running");
    start_saga("ES_SAGA_START_DELAY_VERIFICATION_MS=600000", NULL);
    ck_assert_str_eq(settle(saga_id, 10), "compensated");
    compensations(saga_id, got, sizeof got);
    ck_assert_str_eq(got, "profile,user");
    free(user);
    th_daemon_stop(&saga);
    start_saga(NULL, NULL);
}
END_TEST

START_TEST(killed_again_and_again_every_saga_ends_and_nothing_happens_twice)
{
    enum { ORDERS = 40 };
    char *orders[ORDERS], customer[80], sku[80], saga_id[120];
    unsigned seed = (unsigned)time(NULL);
    int placed = 0;

    snprintf(customer, sizeof customer, "%s-k", tag);
    snprintf(sku, sizeof sku, "%s-ks", tag);
    fund(customer, sku, 100000, 1000);
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < ORDERS / 8; i++)
            orders[placed++] = place_order(customer, sku, 1 + (int)(rand_r(&seed) % 3),
                                           rand_r(&seed) % 5 == 0 ? "XX" : "DE");
        usleep((useconds_t)(rand_r(&seed) % 300) * 1000);
        th_daemon_kill(&saga);
        start_saga(NULL, NULL);
    }
    for (int i = 0; i < placed; i++) {
        const char *st;

        snprintf(saga_id, sizeof saga_id, "order-%s", orders[i]);
        st = settle(saga_id, 60);
        ck_assert_msg(strcmp(st, "completed") == 0 || strcmp(st, "compensated") == 0,
                      "saga %s ended %s", saga_id, st);
        ck_assert_int_le(count_events("account", "PaymentCharged", orders[i]), 1);
        ck_assert_int_le(count_events("account", "PaymentRefunded", orders[i]), 1);
        ck_assert_int_le(count_events("reservation", "ReservationMade", orders[i]), 1);
        ck_assert_int_le(count_events("reservation", "ReservationReleased", orders[i]), 1);
        if (strcmp(st, "completed") == 0)
            ck_assert_int_eq(count_events("order", "OrderConfirmed", orders[i]), 1);
        else {
            ck_assert_int_eq(count_events("account", "PaymentRefunded", orders[i]),
                             count_events("account", "PaymentCharged", orders[i]));
            ck_assert_int_eq(count_events("reservation", "ReservationReleased", orders[i]),
                             count_events("reservation", "ReservationMade", orders[i]));
        }
        free(orders[i]);
    }
}
END_TEST

/* A number from the test database (one value). */
static long
db_count(const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    PGresult *r = PQexec(c, sql);
    long n;

    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return n;
}

/* Many sagas in flight on few connections (32 workers sharing one pair
 * and one committer connection, claims of several sagas per statement),
 * killed while they run: es-saga holds no more PostgreSQL connections
 * than its pool's, every saga ends completed or compensated once started
 * again, and no command took effect twice. */
START_TEST(many_sagas_in_flight_on_few_connections_killed_midway)
{
    enum { ORDERS = 60 };
    char *orders[ORDERS], customer[80], sku[80], saga_id[120];
    const char *env[14];
    const char *sql_conns = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()";
    const char *sql_steps = "SELECT count(*) FROM es_events WHERE type = 'SagaStepStarted'";
    long steps0, with, without;
    int n = 0;

    snprintf(customer, sizeof customer, "%s-m", tag);
    snprintf(sku, sizeof sku, "%s-ms", tag);
    fund(customer, sku, 1000000, 10000);
    th_daemon_stop(&saga);
    for (int i = 0; i < 8; i++)
        env[n++] = base_env[i];
    env[n++] = "ES_SAGA_WORKERS=32";
    env[n++] = "ES_SAGA_PG_CONNS=1";
    env[n++] = "ES_SAGA_COMMIT_CONNS=1";
    env[n++] = "ES_SAGA_CLAIM_MS=2000";     /* taken over soon after the kill */
    env[n] = NULL;
    th_daemon_start(&saga, "es-saga", "ES_SAGA_PORT", env);
    steps0 = db_count(sql_steps);
    for (int i = 0; i < ORDERS; i++)
        orders[i] = place_order(customer, sku, 1 + i % 3, i % 7 == 0 ? "XX" : "DE");
    /* under way: some steps sent, with sagas still to run */
    for (int i = 0; i < 600 && db_count(sql_steps) < steps0 + ORDERS; i++)
        usleep(10 * 1000);
    with = db_count(sql_conns);
    th_daemon_kill(&saga);
    without = with;
    for (int i = 0; i < 50; i++) {
        usleep(100 * 1000);
        if ((without = db_count(sql_conns)) < with && i >= 10)
            break;
    }
    /* its pool's pair, the committer's, the intake's and the token
     * table's, not one or two per worker (64 before) */
    ck_assert_int_le(with - without, 6);
    start_saga(NULL, NULL);
    for (int i = 0; i < ORDERS; i++) {
        const char *st;

        snprintf(saga_id, sizeof saga_id, "order-%s", orders[i]);
        st = settle(saga_id, 90);
        ck_assert_msg(strcmp(st, "completed") == 0 || strcmp(st, "compensated") == 0,
                      "saga %s ended %s", saga_id, st);
        ck_assert_int_le(count_events("account", "PaymentCharged", orders[i]), 1);
        ck_assert_int_le(count_events("reservation", "ReservationMade", orders[i]), 1);
        ck_assert_int_le(count_events("shipment", "ShipmentCreated", orders[i]), 1);
        if (strcmp(st, "completed") == 0) {
            ck_assert_int_eq(count_events("order", "OrderConfirmed", orders[i]), 1);
            ck_assert_int_eq(count_events("account", "PaymentRefunded", orders[i]), 0);
        } else {
            ck_assert_int_eq(count_events("account", "PaymentRefunded", orders[i]),
                             count_events("account", "PaymentCharged", orders[i]));
            ck_assert_int_eq(count_events("reservation", "ReservationReleased", orders[i]),
                             count_events("reservation", "ReservationMade", orders[i]));
        }
        free(orders[i]);
    }
}
END_TEST

START_TEST(a_cancellation_undoes_a_step_whose_outcome_was_unknown)
{
    char customer[80], sku[80], saga_id[120], got[200], path[200], lines[200][80], state[16];
    char *order;
    bool retrying = false;

    /* inventory's answers are lost: payment is done, inventory in doubt */
    th_daemon_stop(&saga);
    start_saga("ES_SAGA_INJECT_TIMEOUT=order.inventory", NULL);
    snprintf(customer, sizeof customer, "%s-cancel", tag);
    snprintf(sku, sizeof sku, "%s-cancels", tag);
    fund(customer, sku, 1000, 10);
    order = place_order(customer, sku, 2, "DE");
    snprintf(saga_id, sizeof saga_id, "order-%s", order);
    for (int i = 0; i < 100 && !retrying; i++) {
        int n = timeline(saga_id, lines, 200, state);
        for (int j = 0; j < n; j++)
            retrying |= strcmp(lines[j], "SagaStepFailed:inventory") == 0;
        usleep(100 * 1000);
    }
    ck_assert(retrying);
    ck_assert_int_eq(count_events("account", "PaymentCharged", order), 1);
    /* the customer cancels; the saga (answers back) must undo both */
    snprintf(path, sizeof path, "/v1/orders/%s/cancel", order);
    json_decref(post(path, "{}", 200));
    th_daemon_stop(&saga);
    start_saga(NULL, NULL);
    ck_assert_str_eq(settle(saga_id, 30), "compensated");
    compensations(saga_id, got, sizeof got);
    /* the new es-saga may retry inventory and create the shipment before
     * the cancellation reaches its inbox (through the relay): then the
     * shipment is undone too; never is a step done and left */
    if (strcmp(got, "shipment,inventory,payment,order") == 0)
        ck_assert_int_eq(count_events("shipment", "ShipmentCancelled", order),
                         count_events("shipment", "ShipmentCreated", order));
    else
        ck_assert_str_eq(got, "inventory,payment,order");
    ck_assert_int_eq(count_events("account", "PaymentRefunded", order), 1);
    ck_assert_int_eq(count_events("reservation", "ReservationMade", order),
                     count_events("reservation", "ReservationReleased", order));
    ck_assert_int_eq(count_events("order", "OrderCancelled", order), 1);
    ck_assert_int_eq(count_events("order", "OrderConfirmed", order), 0);
    free(order);
}
END_TEST

START_TEST(a_dead_lettered_saga_is_replayed_by_an_operator)
{
    char customer[80], sku[80], saga_id[120], got[200], log[600], env0[700], id[32];
    const char *env[] = {env0, NULL};
    const char *replay[] = {"esctl", "dead-letters", "replay", id, NULL};
    char *order;
    PGconn *c;
    PGresult *r;

    /* the refund is refused again and again: the saga is dead-lettered */
    th_daemon_stop(&saga);
    start_saga("ES_SAGA_INJECT_FAILURE=order.shipment,order.payment.undo",
               "ES_SAGA_COMPENSATION_REFUSALS=2");
    snprintf(customer, sizeof customer, "%s-dl", tag);
    snprintf(sku, sizeof sku, "%s-dls", tag);
    fund(customer, sku, 1000, 10);
    order = place_order(customer, sku, 1, "DE");
    snprintf(saga_id, sizeof saga_id, "order-%s", order);
    ck_assert_str_eq(settle(saga_id, 30), "failed");
    ck_assert_int_eq(count_events("account", "PaymentRefunded", order), 0);
    c = PQconnectdb(conninfo);
    {
        const char *p[1] = {saga_id};
        r = PQexecParams(c, "SELECT id FROM es_saga_dead_letters WHERE saga_id = $1", 1, NULL, p,
                         NULL, NULL, 0);
    }
    ck_assert_int_eq(PQntuples(r), 1);
    snprintf(id, sizeof id, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    /* the cause is fixed (no more injection); the operator replays it */
    th_daemon_stop(&saga);
    start_saga(NULL, NULL);
    snprintf(env0, sizeof env0, "ES_PG_CONNINFO=%s", conninfo);
    snprintf(log, sizeof log, "%s/saga-replay-%s.log", getenv("ES_TEST_BUILD"), tag);
    ck_assert_int_eq(th_program(replay, env, log), 0);
    ck_assert_int_eq(th_program(replay, env, log), 5);      /* once: a conflict after */
    ck_assert_str_eq(settle(saga_id, 30), "compensated");
    compensations(saga_id, got, sizeof got);
    /* the new es-saga may retry inventory and create the shipment before
     * the cancellation reaches its inbox (through the relay): then the
     * shipment is undone too; never is a step done and left */
    if (strcmp(got, "shipment,inventory,payment,order") == 0)
        ck_assert_int_eq(count_events("shipment", "ShipmentCancelled", order),
                         count_events("shipment", "ShipmentCreated", order));
    else
        ck_assert_str_eq(got, "inventory,payment,order");
    ck_assert_int_eq(count_events("account", "PaymentRefunded", order), 1);
    free(order);
}
END_TEST

/* ---- intake and dead letters --------------------------------------------- */

static void
feed_event(es_feed_event *e, uint64_t seq, const char *stream, const char *type, const char *data)
{
    char body[1024];
    es_error err;

    snprintf(body, sizeof body,
             "{\"stream\":\"%s\",\"type\":\"%s\",\"event_id\":\"00000000-0000-4000-8000-%012llu\","
             "\"position\":\"1-%llu\",\"recorded_at\":\"2026-11-22T00:00:00.000000Z\",\"data\":%s}",
             stream, type, (unsigned long long)seq, (unsigned long long)seq, data);
    ck_assert_int_eq(es_feed_event_decode(body, strlen(body), seq, e, &err), ES_OK);
}

START_TEST(the_intake_ignores_repeats_and_order_and_dead_letters_the_unusable)
{
    char other[64], oc[600], data[200];
    PGconn *c;
    es_feed_event ev[3];
    char *bad[3] = {NULL, NULL, NULL};
    es_feed_batch b = {ev, bad, 3};
    uint64_t seq = 0;
    int woken;
    es_error err;
    PGresult *r;

    /* a database of its own: the intake of es-saga must not see these */
    th_db_create(other, sizeof other, oc, sizeof oc);
    c = PQconnectdb(oc);
    snprintf(data, sizeof data, "{\"user_id\":\"%s-x\",\"result\":\"passed\",\"level\":100}", tag);
    feed_event(&ev[0], 1, "user-x", "UserVerificationRecorded", data);     /* before its trigger */
    snprintf(data, sizeof data, "{\"user_id\":\"%s-x\",\"email\":\"x@y.z\",\"name\":\"X\"}", tag);
    feed_event(&ev[1], 2, "user-x", "UserRegistered", data);
    feed_event(&ev[2], 3, "order-y", "OrderPlaced", "{\"customer_id\":\"c\"}"); /* no order_id */
    ck_assert_int_eq(sg_intake_apply(c, &b, &seq, &woken, &err), ES_OK);
    ck_assert_uint_eq(seq, 3);
    seq = 0;                                /* the same batch again, as after a crash */
    ck_assert_int_eq(sg_intake_apply(c, &b, &seq, &woken, &err), ES_OK);
    r = PQexec(c, "SELECT (SELECT count(*) FROM es_saga_work), (SELECT count(*) FROM es_saga_inbox), "
                  "(SELECT count(*) FROM es_saga_dead_letters), "
                  "(SELECT reason FROM es_saga_dead_letters LIMIT 1)");
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "2");     /* registration and verification */
    ck_assert_str_eq(PQgetvalue(r, 0, 1), "1");
    ck_assert_str_eq(PQgetvalue(r, 0, 2), "1");     /* once, however often replayed */
    ck_assert_ptr_nonnull(strstr(PQgetvalue(r, 0, 3), "order_id"));
    PQclear(r);
    PQfinish(c);
    for (int i = 0; i < 3; i++)
        es_feed_event_free(&ev[i]);
    th_db_drop(other);
}
END_TEST

/* A batch that starts a saga and then delivers to it wakes it (the starts
 * go before the delivery); a batch that only starts sagas records them and
 * the checkpoint in one statement, and again is a no-op. */
START_TEST(the_intake_keeps_order_within_a_batch_and_records_its_checkpoint)
{
    char other[64], oc[600], data[200], sid[120];
    PGconn *c;
    es_feed_event ev[4];
    char *bad[4] = {NULL, NULL, NULL, NULL};
    es_feed_batch first = {ev, bad, 2}, second = {ev + 2, bad + 2, 2};
    const char *p[1] = {sid};
    uint64_t seq = 0;
    int woken;
    es_error err;
    PGresult *r;

    th_db_create(other, sizeof other, oc, sizeof oc);
    c = PQconnectdb(oc);
    snprintf(data, sizeof data, "{\"user_id\":\"%s-y\",\"email\":\"y@y.z\",\"name\":\"Y\"}", tag);
    feed_event(&ev[0], 1, "user-y", "UserRegistered", data);
    snprintf(data, sizeof data, "{\"user_id\":\"%s-y\",\"result\":\"passed\",\"level\":100}", tag);
    feed_event(&ev[1], 2, "user-y", "UserVerificationRecorded", data);     /* after its trigger */
    snprintf(data, sizeof data, "{\"order_id\":\"%s-o1\",\"customer_id\":\"c\"}", tag);
    feed_event(&ev[2], 3, "order-o1", "OrderPlaced", data);
    snprintf(data, sizeof data, "{\"order_id\":\"%s-o2\",\"customer_id\":\"c\"}", tag);
    feed_event(&ev[3], 4, "order-o2", "OrderPlaced", data);

    ck_assert_int_eq(sg_intake_apply(c, &first, &seq, &woken, &err), ES_OK);
    ck_assert_uint_eq(seq, 2);
    snprintf(sid, sizeof sid, "registration-%s-y", tag);
    r = PQexecParams(c, "SELECT wakes FROM es_saga_work WHERE saga_id = $1", 1, NULL, p, NULL,
                     NULL, 0);
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "1");     /* woken by the delivery after it */
    PQclear(r);

    ck_assert_int_eq(sg_intake_apply(c, &second, &seq, &woken, &err), ES_OK);
    ck_assert_uint_eq(seq, 4);
    ck_assert_int_eq(woken, 2);
    seq = 2;                                /* the second batch again, as after a crash */
    ck_assert_int_eq(sg_intake_apply(c, &second, &seq, &woken, &err), ES_OK);
    ck_assert_uint_eq(seq, 4);
    seq = 0;
    ck_assert_int_eq(sg_intake_checkpoint(c, &seq, &err), ES_OK);
    ck_assert_uint_eq(seq, 4);
    r = PQexec(c, "SELECT count(*), count(*) FILTER (WHERE flow = 'order' AND input->>'customer_id' = 'c') "
                  "FROM es_saga_work");
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "4");     /* registration, verification, 2 orders */
    ck_assert_str_eq(PQgetvalue(r, 0, 1), "2");
    PQclear(r);

    /* a gap after a start and a delivery (a transaction open): nothing of
     * the batch stays, the checkpoint neither */
    {
        es_feed_event more[3];
        char *none[3] = {NULL, NULL, NULL};
        es_feed_batch gap = {more, none, 3};

        snprintf(data, sizeof data, "{\"user_id\":\"%s-z\",\"email\":\"z\\\\\\\"{,}\",\"name\":\"NULL\"}", tag);
        feed_event(&more[0], 5, "user-z", "UserRegistered", data);
        snprintf(data, sizeof data, "{\"user_id\":\"%s-z\",\"result\":\"passed\",\"level\":100}", tag);
        feed_event(&more[1], 6, "user-z", "UserVerificationRecorded", data);
        snprintf(data, sizeof data, "{\"order_id\":\"%s-o3\",\"customer_id\":\"c\"}", tag);
        feed_event(&more[2], 8, "order-o3", "OrderPlaced", data);
        ck_assert_int_eq(sg_intake_apply(c, &gap, &seq, &woken, &err), ES_EUNAVAILABLE);
        ck_assert_str_eq(err.code, "stream_gap");
        ck_assert_uint_eq(seq, 4);
        r = PQexec(c, "SELECT (SELECT count(*) FROM es_saga_work), (SELECT count(*) FROM es_saga_inbox), "
                      "(SELECT seq FROM es_saga_checkpoint)");
        ck_assert_str_eq(PQgetvalue(r, 0, 0), "4");
        ck_assert_str_eq(PQgetvalue(r, 0, 1), "1");
        ck_assert_str_eq(PQgetvalue(r, 0, 2), "4");
        PQclear(r);
        /* without the gap: stored, the input's text as it came */
        gap.n = 2;
        ck_assert_int_eq(sg_intake_apply(c, &gap, &seq, &woken, &err), ES_OK);
        ck_assert_uint_eq(seq, 6);
        snprintf(sid, sizeof sid, "registration-%s-z", tag);
        r = PQexecParams(c, "SELECT input->>'email', input->>'name', wakes FROM es_saga_work "
                            "WHERE saga_id = $1", 1, NULL, p, NULL, NULL, 0);
        ck_assert_int_eq(PQntuples(r), 1);
        ck_assert_str_eq(PQgetvalue(r, 0, 0), "z\\\"{,}");
        ck_assert_str_eq(PQgetvalue(r, 0, 1), "NULL");
        ck_assert_str_eq(PQgetvalue(r, 0, 2), "1");
        PQclear(r);
        for (int i = 0; i < 3; i++)
            es_feed_event_free(&more[i]);
    }
    PQfinish(c);
    for (int i = 0; i < 4; i++)
        es_feed_event_free(&ev[i]);
    th_db_drop(other);
}
END_TEST

/* Runs esctl with args; its exit code, and its output in out. */
static int
esctl(char *out, size_t size, const char *const *args)
{
    char env0[700];
    const char *env[] = {env0, NULL};
    const char *argv[12] = {"esctl"};
    int k;

    for (k = 0; args[k] && k < 10; k++)
        argv[k + 1] = args[k];
    argv[k + 1] = NULL;
    snprintf(env0, sizeof env0, "ES_PG_CONNINFO=%s", conninfo);
    return th_program_output(argv, env, out, size);
}

START_TEST(the_command_line_lists_and_shows_sagas_and_dead_letters)
{
    char customer[80], sku[80], saga_id[120], text[16384];
    char *order;
    json_t *j;

    snprintf(customer, sizeof customer, "%s-cli", tag);
    snprintf(sku, sizeof sku, "%s-clis", tag);
    fund(customer, sku, 1000, 5);
    order = place_order(customer, sku, 1, "DE");
    snprintf(saga_id, sizeof saga_id, "order-%s", order);
    ck_assert_str_eq(settle(saga_id, 20), "completed");
    ck_assert_int_eq(esctl(text, sizeof text, (const char *[]){"saga", "show", saga_id, NULL}), 0);
    ck_assert_ptr_nonnull(strstr(text, "SagaStepSucceeded"));
    ck_assert_ptr_nonnull(strstr(text, "confirmation"));
    ck_assert_int_eq(esctl(text, sizeof text,
                           (const char *[]){"saga", "list", "--state", "completed", NULL}), 0);
    ck_assert_ptr_nonnull(strstr(text, saga_id));
    ck_assert_int_eq(esctl(text, sizeof text, (const char *[]){"dead-letters", "list", NULL}), 0);
    /* --json is one document scripts can read */
    ck_assert_int_eq(esctl(text, sizeof text,
                           (const char *[]){"--json", "saga", "show", saga_id, NULL}), 0);
    ck_assert_ptr_nonnull(j = json_loads(text, 0, NULL));
    ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "completed");
    ck_assert_int_eq(json_array_size(json_object_get(j, "timeline")), 10);
    json_decref(j);
    /* exit codes: unknown saga 4, a finished saga cannot be retried 5, bad usage 2 */
    ck_assert_int_eq(esctl(text, sizeof text, (const char *[]){"saga", "show", "nope", NULL}), 4);
    ck_assert_int_eq(esctl(text, sizeof text, (const char *[]){"saga", "retry", saga_id, NULL}), 5);
    ck_assert_int_eq(esctl(text, sizeof text, (const char *[]){"saga", "list", "--limit", "x", NULL}),
                     2);
    ck_assert_int_eq(esctl(text, sizeof text, (const char *[]){"dead-letters", "replay", "999999",
                                                              NULL}), 4);
    free(order);
}
END_TEST

/* Two orders wait on a retry ten minutes away (their inventory answers
 * are lost): an operator retries one, which completes now, and
 * compensates the other, which undoes its in-doubt reservation and its
 * payment. */
START_TEST(an_operator_retries_one_waiting_saga_and_compensates_another)
{
    char customer[80], sku[80], a[120], b[120], got[200], text[8192], lines[200][80], state[16];
    char *oa, *ob;
    int waiting = 0;

    th_daemon_stop(&saga);
    start_saga("ES_SAGA_INJECT_TIMEOUT=order.inventory",
               "ES_SAGA_RETRY_BASE_MS=600000");
    snprintf(customer, sizeof customer, "%s-op", tag);
    snprintf(sku, sizeof sku, "%s-ops", tag);
    fund(customer, sku, 1000, 10);
    oa = place_order(customer, sku, 1, "DE");
    ob = place_order(customer, sku, 1, "DE");
    snprintf(a, sizeof a, "order-%s", oa);
    snprintf(b, sizeof b, "order-%s", ob);
    for (int i = 0; i < 200 && waiting < 2; i++) {
        const char *ids[2] = {a, b};
        waiting = 0;
        for (int k = 0; k < 2; k++) {
            int n = timeline(ids[k], lines, 200, state);
            for (int j = 0; j < n; j++)
                if (strcmp(lines[j], "SagaStepFailed:inventory") == 0) {
                    waiting++;
                    break;
                }
        }
        usleep(100 * 1000);
    }
    ck_assert_int_eq(waiting, 2);
    /* the answers come back, but the retries are still minutes away */
    th_daemon_stop(&saga);
    start_saga(NULL, NULL);
    usleep(500 * 1000);
    timeline(a, lines, 200, state);
    ck_assert_str_eq(state, "running");
    ck_assert_int_eq(esctl(text, sizeof text, (const char *[]){"saga", "retry", a, NULL}), 0);
    ck_assert_int_eq(esctl(text, sizeof text, (const char *[]){"saga", "compensate", b,
                                                              "--reason", "customer called",
                                                              NULL}), 0);
    ck_assert_str_eq(settle(a, 30), "completed");
    ck_assert_str_eq(settle(b, 30), "compensated");
    compensations(b, got, sizeof got);
    ck_assert_str_eq(got, "inventory,payment,order");
    ck_assert_int_eq(count_events("account", "PaymentCharged", oa), 1);
    ck_assert_int_eq(count_events("reservation", "ReservationMade", oa), 1);
    ck_assert_int_eq(count_events("account", "PaymentRefunded", ob), 1);
    ck_assert_int_eq(count_events("reservation", "ReservationMade", ob),
                     count_events("reservation", "ReservationReleased", ob));
    /* what has ended cannot be compensated again */
    ck_assert_int_eq(esctl(text, sizeof text, (const char *[]){"saga", "compensate", b, NULL}), 5);
    free(oa);
    free(ob);
}
END_TEST

/* Lines of file that hold needle. */
static int
lines_with(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* Two managers share the work with a claim far shorter than the
 * notification gateway's call.  The claim is renewed (fenced by its
 * token) while a saga runs, so the other manager never takes a saga over
 * in the middle of a call, and each welcome notification leaves once. */
START_TEST(two_managers_with_a_short_claim_send_each_notification_once)
{
    enum { USERS = 4 };
    char path[600], transport[700], email[200], saga_id[120], needle[200];
    char *users[USERS];
    const char *claim = "ES_SAGA_CLAIM_MS=300";
    const char *latency = "ES_GATEWAY_NOTIFICATION_LATENCY_MS=1500";
    static th_daemon other;     /* the harness stops it at exit if a check fails */

    snprintf(path, sizeof path, "%s/saga-gateway-%s.jsonl", getenv("ES_TEST_BUILD"), tag);
    unlink(path);
    snprintf(transport, sizeof transport, "ES_GATEWAY_NOTIFICATION_TRANSPORT=file:%s", path);
    th_daemon_stop(&saga);
    start_saga_as(&saga, claim, latency, transport);
    start_saga_as(&other, claim, latency, transport);
    for (int i = 0; i < USERS; i++) {
        snprintf(email, sizeof email, "twice%d.%s@example.org", i, tag);
        users[i] = register_user(email);
    }
    for (int i = 0; i < USERS; i++) {
        snprintf(saga_id, sizeof saga_id, "registration-%s", users[i]);
        ck_assert_str_eq(settle(saga_id, 60), "completed");
        snprintf(needle, sizeof needle, "\"id\":\"%s/welcome_notification\"", saga_id);
        ck_assert_msg(lines_with(path, needle) == 1, "%s sent %d times", needle,
                      lines_with(path, needle));
        free(users[i]);
    }
    ck_assert_int_eq(th_daemon_stop(&other), 0);
    th_daemon_stop(&saga);
    start_saga(NULL, NULL);
}
END_TEST

/* Sends command (context.action) over NATS as es-saga would; the reply's
 * "ok". */
static bool
send_command(const char *command, const char *body)
{
    natsConnection *nc = NULL;
    natsMsg *reply = NULL;
    char subject[200];
    bool ok = false;

    snprintf(subject, sizeof subject, "%s.cmd.%s", tag, command);
    ck_assert_int_eq(natsConnection_ConnectTo(&nc, getenv("ES_NATS_URL")), NATS_OK);
    if (natsConnection_RequestString(&reply, nc, subject, body, 5000) == NATS_OK) {
        json_t *j = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0,
                               NULL);
        ok = json_is_true(json_object_get(j, "ok"));
        json_decref(j);
    }
    natsMsg_Destroy(reply);
    natsConnection_Destroy(nc);
    return ok;
}

/* The confirmation took effect but its answer was lost (the saga waits to
 * send it again, minutes away); an operator then asks to compensate.  The
 * confirmation's outcome is resolved first: the order is confirmed, so
 * nothing is undone and the saga completes; a confirmed order is never
 * compensated. */
START_TEST(a_confirmation_whose_answer_was_lost_is_resolved_before_compensating)
{
    char customer[80], sku[80], saga_id[120], text[8192], lines[200][80], state[16], body[300];
    char *order;
    bool waiting = false;

    th_daemon_stop(&saga);
    start_saga("ES_SAGA_INJECT_TIMEOUT=order.confirmation", "ES_SAGA_RETRY_BASE_MS=600000");
    snprintf(customer, sizeof customer, "%s-lost", tag);
    snprintf(sku, sizeof sku, "%s-losts", tag);
    fund(customer, sku, 1000, 10);
    order = place_order(customer, sku, 1, "DE");
    snprintf(saga_id, sizeof saga_id, "order-%s", order);
    for (int i = 0; i < 200 && !waiting; i++) {
        int n = timeline(saga_id, lines, 200, state);
        for (int j = 0; j < n; j++)
            waiting |= strcmp(lines[j], "SagaStepFailed:confirmation") == 0;
        usleep(100 * 1000);
    }
    ck_assert(waiting);
    /* the lost answer: the confirmation did happen, under the step's id */
    snprintf(body, sizeof body, "{\"order_id\":\"%s\",\"command_id\":\"%s/confirmation\"}",
             order, saga_id);
    ck_assert(send_command("order.confirm", body));
    ck_assert_int_eq(count_events("order", "OrderConfirmed", order), 1);
    th_daemon_stop(&saga);
    start_saga("ES_SAGA_RETRY_BASE_MS=600000", NULL);
    ck_assert_int_eq(esctl(text, sizeof text, (const char *[]){"saga", "compensate", saga_id,
                                                              "--reason", "customer called",
                                                              NULL}), 0);
    ck_assert_str_eq(settle(saga_id, 30), "completed");
    ck_assert_int_eq(count_events("account", "PaymentRefunded", order), 0);
    ck_assert_int_eq(count_events("reservation", "ReservationReleased", order), 0);
    ck_assert_int_eq(count_events("shipment", "ShipmentCancelled", order), 0);
    ck_assert_int_eq(count_events("order", "OrderFailed", order), 0);
    ck_assert_int_eq(count_events("order", "OrderConfirmed", order), 1);
    free(order);
    th_daemon_stop(&saga);
    start_saga(NULL, NULL);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("saga");
    TCase *tc = tcase_create("saga");
    es_error err;
    const char *env[9];
    int rc;

    th_db_create(dbname, sizeof dbname, conninfo, sizeof conninfo);
    th_unique(tag, sizeof tag, "sg");
    th_unique(stream_name, sizeof stream_name, "SG");
    for (char *c = stream_name; *c; c++)
        if (*c == '-')
            *c = '_';
    snprintf(base_env[0], sizeof base_env[0], "ES_PG_CONNINFO=%s", conninfo);
    snprintf(base_env[1], sizeof base_env[1], "ES_NATS_URL=%s", getenv("ES_NATS_URL"));
    snprintf(base_env[2], sizeof base_env[2], "ES_RELAY_STREAM=%s", stream_name);
    snprintf(base_env[3], sizeof base_env[3], "ES_RELAY_SUBJECT_PREFIX=%s.events", tag);
    snprintf(base_env[4], sizeof base_env[4], "ES_RELAY_WAKE_SUBJECT=%s.wake", tag);
    snprintf(base_env[5], sizeof base_env[5], "ES_COMMAND_SUBJECT_PREFIX=%s.cmd", tag);
    snprintf(base_env[6], sizeof base_env[6], "ES_SAGA_RETRY_BASE_MS=50");
    snprintf(base_env[7], sizeof base_env[7], "ES_GATEWAY_NOTIFICATION_TRANSPORT=null");
    for (int i = 0; i < 8; i++)
        env[i] = base_env[i];
    env[8] = NULL;
    if (es_store_open(&store, conninfo, &err) != ES_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 2;
    }
    th_daemon_start(&cmd, "es-command", "ES_COMMAND_PORT", env);
    th_daemon_start(&relay, "es-relay", "ES_RELAY_PORT", env);
    start_saga(NULL, NULL);

    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, each_order_step_failing_compensates_exactly_what_was_done);
    tcase_add_test(tc, orders_complete_or_compensate_on_their_own_refusals);
    tcase_add_test(tc, registration_steps_failing_in_turn);
    tcase_add_test(tc, a_timeout_due_while_the_manager_is_down_fires_after_restart);
    tcase_add_test(tc, killed_again_and_again_every_saga_ends_and_nothing_happens_twice);
    tcase_add_test(tc, many_sagas_in_flight_on_few_connections_killed_midway);
    tcase_add_test(tc, the_intake_ignores_repeats_and_order_and_dead_letters_the_unusable);
    tcase_add_test(tc, the_intake_keeps_order_within_a_batch_and_records_its_checkpoint);
    tcase_add_test(tc, the_command_line_lists_and_shows_sagas_and_dead_letters);
    tcase_add_test(tc, a_cancellation_undoes_a_step_whose_outcome_was_unknown);
    tcase_add_test(tc, a_dead_lettered_saga_is_replayed_by_an_operator);
    tcase_add_test(tc, an_operator_retries_one_waiting_saga_and_compensates_another);
    tcase_add_test(tc, two_managers_with_a_short_claim_send_each_notification_once);
    tcase_add_test(tc, a_confirmation_whose_answer_was_lost_is_resolved_before_compensating);
    suite_add_tcase(s, tc);
    rc = th_run_nofork(s);      /* the tests restart and kill daemons they own */
    rc |= th_daemon_stop(&saga);
    rc |= th_daemon_stop(&relay);
    rc |= th_daemon_stop(&cmd);
    es_store_close(store);
    th_stream_delete(stream_name);
    nats_Close();
    th_db_drop(dbname);
    return rc;
}
