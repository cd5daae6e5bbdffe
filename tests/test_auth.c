/*
 * Access control: the scopes, the protected categories and the
 * Authorization parser as units; then every route of es-command and
 * es-query with no token, a garbage one, an expired one, a revoked one,
 * one without the scope and one with it; forged writes to the
 * categories that commands and sagas own; metadata.principal; revocation
 * within a second (through esctl); rate limits; and that no secret ever
 * shows in a daemon's log or /metrics.  The daemons run on a database of
 * their own, so the feed head tells whether anything was written.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "auth.h"
#include "harness.h"
#include "store.h"
#include "token.h"

static th_daemon cmd, query, relay;
static char conninfo[512], dbname[64], stream_name[64];
static const char *JSON = "Content-Type: application/json\r\n";

/* The tokens the route tests use, minted in main before the daemons start. */
enum { T_METRICS, T_STREAMS, T_QUERY, T_APPEND, T_USER, T_PAYMENT, T_INVENTORY, T_ORDER,
       T_APPEND_ALL, T_EXPIRED, T_REVOKED, T_RATED, T_COUNT };
static const char *token_scope[T_COUNT] = {
    "metrics", "read:streams", "read:query", "append:authtest", "command:user", "command:payment",
    "command:inventory", "command:order", "append:*", "admin", "admin", "read:query"};
static char token_name[T_COUNT][64], token[T_COUNT][ES_TOKEN_SECRET_SIZE];

/* ---- units ------------------------------------------------------------------ */

START_TEST(header_parser)
{
    const char *t;
    size_t n;

    ck_assert(es_auth_parse_header("Bearer abc", &t, &n));
    ck_assert_int_eq(n, 3);
    ck_assert(strncmp(t, "abc", 3) == 0);
    ck_assert(es_auth_parse_header("bearer   es_0f ", &t, &n));
    ck_assert_int_eq(n, 5);
    ck_assert(es_auth_parse_header("BEARER a.b-c_d~e+f/g==", &t, &n));
    ck_assert(!es_auth_parse_header(NULL, &t, &n));
    ck_assert(!es_auth_parse_header("", &t, &n));
    ck_assert(!es_auth_parse_header("Bearer", &t, &n));
    ck_assert(!es_auth_parse_header("Bearer ", &t, &n));
    ck_assert(!es_auth_parse_header("Basic abc", &t, &n));
    ck_assert(!es_auth_parse_header("Bearerabc", &t, &n));
    ck_assert(!es_auth_parse_header("Bearer a b", &t, &n));
    ck_assert(!es_auth_parse_header("Bearer a=b", &t, &n));
    ck_assert(!es_auth_parse_header("Bearer a\"b", &t, &n));
}
END_TEST

START_TEST(scopes_and_categories)
{
    ck_assert(es_scope_valid("admin"));
    ck_assert(es_scope_valid("command:payment"));
    ck_assert(es_scope_valid("command:*"));
    ck_assert(es_scope_valid("append:anything"));
    ck_assert(!es_scope_valid("command:nothing"));
    ck_assert(!es_scope_valid("append:"));
    ck_assert(!es_scope_valid("read:everything"));
    ck_assert(!es_scope_valid("Admin"));
    /* a scope is one name: none that a text[] literal or a cut could turn
     * into two, or into a wildcard */
    ck_assert(!es_scope_valid("append:x\",\"admin"));
    ck_assert(!es_scope_valid("append:x,admin"));
    ck_assert(!es_scope_valid("append:x}"));
    ck_assert(!es_scope_valid("append:x *"));
    ck_assert(!es_scope_valid("append:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                              "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));

    ck_assert(es_scope_grants("admin", "command:order"));
    ck_assert(es_scope_grants("command:*", "command:order"));
    ck_assert(!es_scope_grants("command:*", "append:x"));
    ck_assert(es_scope_grants("append:*", "append:x"));
    ck_assert(es_scope_grants("append:x", "append:x"));
    ck_assert(!es_scope_grants("append:x", "append:xy"));
    ck_assert(!es_scope_grants("read:query", "read:streams"));
    ck_assert(!es_scope_grants("metrics", "admin"));
    /* nothing opens a protected category, admin included */
    ck_assert(!es_scope_grants("admin", "append:account"));
    ck_assert(!es_scope_grants("append:*", "append:saga"));
    ck_assert(!es_scope_grants("append:saga", "append:saga"));

    ck_assert(es_stream_protected("account-c1"));
    ck_assert(es_stream_protected("saga-order-x"));
    ck_assert(es_stream_protected("token-admin"));
    ck_assert(es_stream_protected("frauddomain-x-1"));    /* the fraud check's windows */
    ck_assert(es_stream_protected("order"));
    ck_assert(!es_stream_protected("orders-1"));
    ck_assert(!es_stream_protected("authtest-1"));
}
END_TEST

/* ---- helpers ---------------------------------------------------------------- */

static es_position
feed_head(void)
{
    es_store *st;
    es_position head;
    es_error err;

    ck_assert_int_eq(es_store_open(&st, conninfo, &err), ES_OK);
    ck_assert_int_eq(es_store_feed_head(st, &head, &err), ES_OK);
    es_store_close(st);
    return head;
}

static bool
stream_exists(const char *stream)
{
    es_store *st;
    es_page *p = NULL;
    es_error err;
    es_status s;

    ck_assert_int_eq(es_store_open(&st, conninfo, &err), ES_OK);
    s = es_store_read_stream(st, stream, 0, 10, ES_FORWARD, &p, &err);
    es_page_destroy(p);
    es_store_close(st);
    ck_assert(s == ES_OK || s == ES_ENOTFOUND);
    return s == ES_OK;
}

/* One request with Authorization: Bearer secret (none when NULL). */
static int
call(unsigned port, const char *method, const char *path, const char *body, const char *secret,
     th_response *r)
{
    char headers[256];

    snprintf(headers, sizeof headers, "%s%s%s%s", body ? JSON : "",
             secret ? "Authorization: Bearer " : "", secret ? secret : "", secret ? "\r\n" : "");
    th_http_token(NULL);
    th_http(port, method, path, headers, body, r);
    th_http_token(th_token());
    return r->status;
}

static void
expect_refused(unsigned port, const char *method, const char *path, const char *body,
               const char *secret, int status, const char *code)
{
    th_response r;
    char v[64];

    call(port, method, path, body, secret, &r);
    ck_assert_msg(r.status == status, "%s %s with %s: %d, expected %d: %s", method, path,
                  secret ? secret : "no token", r.status, status, r.body ? r.body : "");
    ck_assert_msg(strstr(r.body, code) != NULL, "%s %s: %s", method, path, r.body);
    if (status == 401)
        ck_assert_str_eq(th_header(&r, "WWW-Authenticate", v, sizeof v), "Bearer");
    th_response_free(&r);
}

typedef struct route {
    int service;                /* 0 es-command, 1 es-query */
    const char *method, *path, *body;
    int right, wrong;           /* tokens with and without the scope */
} route;

static const route routes[] = {
    {0, "GET", "/metrics", NULL, T_METRICS, T_QUERY},
    {0, "GET", "/v1/feed", NULL, T_STREAMS, T_QUERY},
    {0, "GET", "/v1/streams/authtest-none", NULL, T_STREAMS, T_APPEND},
    {0, "GET", "/v1/schemas", NULL, T_STREAMS, T_QUERY},
    {0, "POST", "/v1/streams/authtest-routes/events",
     "{\"expected_version\":\"any\",\"events\":[{\"type\":\"T\",\"data\":{}}]}", T_APPEND,
     T_STREAMS},
    {0, "POST", "/v1/users", "{\"email\":\"auth-routes@example.com\",\"name\":\"A\"}", T_USER,
     T_ORDER},
    {0, "POST", "/v1/customers/auth-c1/deposits", "{\"amount\":100}", T_PAYMENT, T_USER},
    {0, "POST", "/v1/inventory/auth-sku/restock", "{\"quantity\":5}", T_INVENTORY, T_PAYMENT},
    {0, "POST", "/v1/orders",
     "{\"customer_id\":\"auth-c1\",\"items\":[{\"sku\":\"auth-sku\",\"quantity\":1,"
     "\"unit_price\":10}]}",
     T_ORDER, T_INVENTORY},
    {0, "POST", "/v1/orders/auth-o1/cancel", NULL, T_ORDER, T_APPEND_ALL},
    {1, "GET", "/metrics", NULL, T_METRICS, T_QUERY},
    {1, "GET", "/v1/users/auth-u1", NULL, T_QUERY, T_STREAMS},
    {1, "GET", "/v1/users?email=a%40b.cd", NULL, T_QUERY, T_STREAMS},
    {1, "GET", "/v1/orders/auth-o1", NULL, T_QUERY, T_METRICS},
    {1, "GET", "/v1/customers/auth-c1/orders", NULL, T_QUERY, T_METRICS},
    {1, "GET", "/v1/customers/auth-c1/account", NULL, T_QUERY, T_METRICS},
    {1, "GET", "/v1/inventory/auth-sku", NULL, T_QUERY, T_USER},
    {1, "GET", "/v1/sagas/auth-s1", NULL, T_QUERY, T_USER},
    {1, "GET", "/v1/sagas", NULL, T_QUERY, T_ORDER},
    {1, "GET", "/v1/dashboard", NULL, T_QUERY, T_ORDER},
};

/* ---- routes ----------------------------------------------------------------- */

START_TEST(every_route_every_token)
{
    const route *rt = &routes[_i];
    unsigned port = rt->service == 0 ? cmd.port : query.port;
    es_position before = feed_head(), after;
    th_response r;

    expect_refused(port, rt->method, rt->path, rt->body, NULL, 401, "\"unauthenticated\"");
    expect_refused(port, rt->method, rt->path, rt->body, "garbage", 401, "\"unauthenticated\"");
    expect_refused(port, rt->method, rt->path, rt->body,
                   "es_0000000000000000000000000000000000000000000000000000000000000000", 401,
                   "\"unauthenticated\"");
    expect_refused(port, rt->method, rt->path, rt->body, token[T_EXPIRED], 401,
                   "\"unauthenticated\"");
    expect_refused(port, rt->method, rt->path, rt->body, token[T_REVOKED], 401,
                   "\"unauthenticated\"");
    expect_refused(port, rt->method, rt->path, rt->body, token[rt->wrong], 403, "\"forbidden\"");
    after = feed_head();
    ck_assert_msg(es_position_cmp(before, after) == 0, "%s %s wrote while refused", rt->method,
                  rt->path);
    call(port, rt->method, rt->path, rt->body, token[rt->right], &r);
    ck_assert_msg(r.status != 401 && r.status != 403 && r.status != 0, "%s %s with its scope: %d %s",
                  rt->method, rt->path, r.status, r.body ? r.body : "");
    th_response_free(&r);
}
END_TEST

START_TEST(health_is_public_and_unknown_routes_need_admin)
{
    th_response r;

    ck_assert_int_eq(call(cmd.port, "GET", "/healthz", NULL, NULL, &r), 200);
    th_response_free(&r);
    ck_assert_int_eq(call(query.port, "GET", "/readyz", NULL, NULL, &r), 200);
    th_response_free(&r);
    ck_assert_int_eq(call(relay.port, "GET", "/healthz", NULL, NULL, &r), 200);
    th_response_free(&r);
    /* an unknown route looks like any other without a token */
    expect_refused(cmd.port, "GET", "/v1/nothing", NULL, NULL, 401, "\"unauthenticated\"");
    expect_refused(query.port, "DELETE", "/v1/users/x", NULL, token[T_QUERY], 403, "\"forbidden\"");
    ck_assert_int_eq(call(cmd.port, "GET", "/v1/nothing", NULL, th_token(), &r), 404);
    th_response_free(&r);
    /* /metrics of the daemons without an API */
    expect_refused(relay.port, "GET", "/metrics", NULL, NULL, 401, "\"unauthenticated\"");
    expect_refused(relay.port, "GET", "/metrics", NULL, token[T_QUERY], 403, "\"forbidden\"");
    ck_assert_int_eq(call(relay.port, "GET", "/metrics", NULL, token[T_METRICS], &r), 200);
    th_response_free(&r);
}
END_TEST

START_TEST(forged_writes_to_protected_categories)
{
    char acct[64], saga[80], path[160];
    es_position before = feed_head();
    const char *secrets[] = {th_token(), token[T_APPEND_ALL]};

    th_unique(acct, sizeof acct, "account-forged");
    th_unique(saga, sizeof saga, "saga-order-forged");
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "/v1/streams/%s/events", acct);
        expect_refused(cmd.port, "POST", path,
                       "{\"expected_version\":\"any\",\"events\":[{\"type\":\"FundsDeposited\","
                       "\"data\":{\"amount\":1000000}}]}",
                       secrets[i], 403, "\"forbidden\"");
        snprintf(path, sizeof path, "/v1/streams/%s/events", saga);
        expect_refused(cmd.port, "POST", path,
                       "{\"expected_version\":\"any\",\"events\":[{\"type\":\"SagaStepSucceeded\","
                       "\"data\":{\"step\":\"charge\"}}]}",
                       secrets[i], 403, "\"forbidden\"");
        /* nor the token category */
        expect_refused(cmd.port, "POST", "/v1/streams/token-x/events",
                       "{\"expected_version\":\"any\",\"events\":[{\"type\":\"TokenCreated\","
                       "\"data\":{}}]}",
                       secrets[i], 403, "\"forbidden\"");
    }
    ck_assert(!stream_exists(acct));
    ck_assert(!stream_exists(saga));
    ck_assert(es_position_cmp(before, feed_head()) == 0);
}
END_TEST

START_TEST(principal_is_the_tokens_name)
{
    char stream[64], path[128], body[256];
    th_response r;
    es_store *st;
    const char *big;
    es_page *p;
    es_error err;
    json_t *m, *j;

    th_unique(stream, sizeof stream, "authtest");
    snprintf(path, sizeof path, "/v1/streams/%s/events", stream);
    ck_assert_int_eq(call(cmd.port, "POST", path,
                          "{\"expected_version\":\"no_stream\",\"events\":["
                          "{\"type\":\"A\",\"data\":{},\"metadata\":{\"principal\":\"mallory\","
                          "\"x\":1,\"princ\\u0069pal\":\"eve\",\"big\":1e-400}},"
                          "{\"type\":\"B\",\"data\":{},\"metadata\":{ }}]}",
                          token[T_APPEND], &r), 201);
    th_response_free(&r);
    ck_assert_int_eq(es_store_open(&st, conninfo, &err), ES_OK);
    ck_assert_int_eq(es_store_read_stream(st, stream, 0, 10, ES_FORWARD, &p, &err), ES_OK);
    ck_assert_int_eq(p->count, 2);
    for (size_t i = 0; i < 2; i++) {
        char want[128];

        /* read as text: event 0's 1e-400 (400 decimals as stored) is
         * beyond what a double holds exactly, which is why the server must
         * not parse and re-encode it */
        snprintf(want, sizeof want, "\"principal\": \"%s\"", token_name[T_APPEND]);
        ck_assert_ptr_nonnull(strstr(p->events[i].metadata, want));
        ck_assert_ptr_null(strstr(p->events[i].metadata, "mallory"));
        ck_assert_ptr_null(strstr(p->events[i].metadata, "eve"));
        if (i == 0) {
            /* a forged key however spelled is overwritten; the rest kept */
            ck_assert_ptr_nonnull(strstr(p->events[i].metadata, "\"x\": 1"));
            big = strstr(p->events[i].metadata, "\"big\": 0.");
            ck_assert_ptr_nonnull(big);
            ck_assert_uint_eq(strspn(big + 9, "0"), 399);
            ck_assert_int_eq(big[9 + 399], '1');
        }
    }
    es_page_destroy(p);

    /* a command's events carry the principal too */
    snprintf(body, sizeof body, "{\"email\":\"%s@example.com\",\"name\":\"P\"}", stream);
    ck_assert_int_eq(call(cmd.port, "POST", "/v1/users", body, token[T_USER], &r), 201);
    j = json_loads(r.body, 0, NULL);
    th_response_free(&r);
    snprintf(path, sizeof path, "user-%s", json_string_value(json_object_get(j, "user_id")));
    json_decref(j);
    ck_assert_int_eq(es_store_read_stream(st, path, 0, 10, ES_FORWARD, &p, &err), ES_OK);
    m = json_loads(p->events[0].metadata, 0, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(m, "principal")), token_name[T_USER]);
    json_decref(m);
    es_page_destroy(p);
    es_store_close(st);
}
END_TEST

static double
now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

START_TEST(revocation_within_a_second)
{
    char name[64], out[4096], envs[2][600];
    const char *env[] = {envs[0], envs[1], NULL};
    const char *create[] = {"esctl", "--json", "token", "create", name, "--scope", "read:query",
                            NULL};
    const char *revoke[] = {"esctl", "token", "revoke", name, NULL};
    const char *secret;
    json_t *j;
    th_response r;
    double t0;
    int st = 0;

    snprintf(envs[0], sizeof envs[0], "ES_PG_CONNINFO=%s", conninfo);
    snprintf(envs[1], sizeof envs[1], "ES_NATS_URL=%s", getenv("ES_NATS_URL"));
    th_unique(name, sizeof name, "rev");
    ck_assert_int_eq(th_program_output(create, env, out, sizeof out), 0);
    ck_assert_ptr_nonnull(j = json_loads(out, 0, NULL));
    ck_assert_str_eq(json_string_value(json_object_get(j, "name")), name);
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(j, "scopes"), 0)),
                     "read:query");
    ck_assert(json_is_null(json_object_get(j, "expires_at")));
    secret = json_string_value(json_object_get(j, "token"));
    ck_assert_int_eq(strlen(secret), ES_TOKEN_SECRET_SIZE - 1);
    /* a new token works within a second as well */
    t0 = now_s();
    while ((st = call(query.port, "GET", "/v1/sagas", NULL, secret, &r)) == 401 &&
           now_s() - t0 < 2)
        th_response_free(&r), usleep(20000);
    th_response_free(&r);
    ck_assert_int_eq(st, 200);
    ck_assert(now_s() - t0 < 1.0);

    /* the list shows it, never a secret */
    {
        const char *list[] = {"esctl", "--json", "token", "list", NULL};
        ck_assert_int_eq(th_program_output(list, env, out, sizeof out), 0);
        ck_assert_ptr_nonnull(strstr(out, name));
        ck_assert_ptr_null(strstr(out, secret));
        ck_assert_ptr_null(strstr(out, token[T_METRICS]));
    }

    ck_assert_int_eq(th_program(revoke, env, NULL), 0);
    t0 = now_s();
    /* both services drop it within a second (es-command answers 403 for
     * a live read:query token on /v1/feed, 401 once it is gone) */
    for (int svc = 0; svc < 2; svc++) {
        unsigned port = svc == 0 ? query.port : cmd.port;
        const char *path = svc == 0 ? "/v1/sagas" : "/v1/feed";
        int live = svc == 0 ? 200 : 403;

        while ((st = call(port, "GET", path, NULL, secret, &r)) == live && now_s() - t0 < 3)
            th_response_free(&r), usleep(10000);
        th_response_free(&r);
        ck_assert_int_eq(st, 401);
        ck_assert_msg(now_s() - t0 < 1.0, "revocation took %.3f s", now_s() - t0);
    }
    fprintf(stderr, "revocation seen everywhere after %.3f s\n", now_s() - t0);
    /* revoked twice: not found; a name is never reused */
    ck_assert_int_eq(th_program(revoke, env, NULL), 4);
    ck_assert_int_eq(th_program(create, env, NULL), 5);
    json_decref(j);
}
END_TEST

START_TEST(rate_limited)
{
    th_response r;
    char v[16];
    int limited = 0;

    for (int i = 0; i < 8; i++) {
        if (call(query.port, "GET", "/v1/sagas", NULL, token[T_RATED], &r) == 429) {
            limited++;
            ck_assert_str_eq(th_header(&r, "Retry-After", v, sizeof v), "1");
            ck_assert_ptr_nonnull(strstr(r.body, "\"rate_limited\""));
        }
        th_response_free(&r);
    }
    ck_assert_int_ge(limited, 5);
}
END_TEST

/* Runs last: every secret minted here is absent from the daemons' logs
 * and from /metrics. */
START_TEST(secrets_never_shown)
{
    const th_daemon *ds[] = {&cmd, &query, &relay};
    const char *names[] = {"es-command", "es-query", "es-relay"};
    const char *build = getenv("ES_TEST_BUILD") ? getenv("ES_TEST_BUILD") : "build/plain";
    th_response r;

    for (size_t d = 0; d < 3; d++) {
        char path[600];
        FILE *f;
        static char text[1 << 20];
        size_t n;

        snprintf(path, sizeof path, "%s/%s.%u.log", build, names[d], ds[d]->port);
        ck_assert_ptr_nonnull(f = fopen(path, "r"));
        n = fread(text, 1, sizeof text - 1, f);
        text[n] = '\0';
        fclose(f);
        call(ds[d]->port, "GET", "/metrics", NULL, token[T_METRICS], &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_ptr_nonnull(strstr(r.body, "_auth_refusals_total"));
        for (int t = 0; t < T_COUNT; t++) {
            ck_assert_msg(strstr(text, token[t]) == NULL, "%s shows a secret", path);
            ck_assert_msg(strstr(r.body, token[t]) == NULL, "%s /metrics shows a secret",
                          names[d]);
        }
        ck_assert(strstr(text, th_token()) == NULL && strstr(r.body, th_token()) == NULL);
        th_response_free(&r);
    }
}
END_TEST

static void
mint(void)
{
    es_store *st;
    es_error err;
    int64_t exp;
    PGconn *pg;

    if (es_store_open(&st, conninfo, &err) != ES_OK) {
        fprintf(stderr, "could not open the store: %s\n", err.message);
        exit(2);
    }
    for (int t = 0; t < T_COUNT; t++) {
        const char *scopes[] = {token_scope[t]};
        th_unique(token_name[t], sizeof token_name[t], "auth");
        if (es_token_create(st, &(es_token_spec){token_name[t], scopes, 1,
                                                 t == T_EXPIRED ? 3600 : 0,
                                                 t == T_RATED ? 2 : 0, "test", NULL},
                            token[t], &exp, &err) != ES_OK) {
            fprintf(stderr, "could not mint a token: %s\n", err.message);
            exit(2);
        }
    }
    if (es_token_revoke(st, token_name[T_REVOKED], "test", &err) != ES_OK) {
        fprintf(stderr, "could not revoke: %s\n", err.message);
        exit(2);
    }
    es_store_close(st);
    /* expired an hour ago */
    pg = PQconnectdb(conninfo);
    {
        const char *v[] = {token_name[T_EXPIRED]};
        PQclear(PQexecParams(pg, "UPDATE es_tokens SET expires_at = now() - interval '1 hour' "
                                 "WHERE name = $1", 1, NULL, v, NULL, NULL, 0));
    }
    PQfinish(pg);
}

int
main(void)
{
    Suite *s = suite_create("auth");
    TCase *units = tcase_create("units"), *tc = tcase_create("routes");
    char envs[5][600];
    const char *env[] = {envs[0], envs[1], envs[2], envs[3], envs[4], NULL};
    int rc;

    th_db_create(dbname, sizeof dbname, conninfo, sizeof conninfo);
    mint();
    th_unique(stream_name, sizeof stream_name, "AUTH");
    for (char *c = stream_name; *c; c++)
        if (*c == '-')
            *c = '_';
    snprintf(envs[0], sizeof envs[0], "ES_PG_CONNINFO=%s", conninfo);
    snprintf(envs[1], sizeof envs[1], "ES_NATS_URL=%s", getenv("ES_NATS_URL"));
    snprintf(envs[2], sizeof envs[2], "ES_RELAY_STREAM=%s", stream_name);
    snprintf(envs[3], sizeof envs[3], "ES_RELAY_SUBJECT_PREFIX=%s.events", stream_name);
    snprintf(envs[4], sizeof envs[4], "ES_COMMAND_SUBJECT_PREFIX=%s.cmd", stream_name);
    th_daemon_start(&cmd, "es-command", "ES_COMMAND_PORT", env);
    th_daemon_start(&query, "es-query", "ES_QUERY_PORT", env);
    th_daemon_start(&relay, "es-relay", "ES_RELAY_PORT", env);

    tcase_add_test(units, header_parser);
    tcase_add_test(units, scopes_and_categories);
    suite_add_tcase(s, units);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, every_route_every_token, 0, (int)(sizeof routes / sizeof routes[0]));
    tcase_add_test(tc, health_is_public_and_unknown_routes_need_admin);
    tcase_add_test(tc, forged_writes_to_protected_categories);
    tcase_add_test(tc, principal_is_the_tokens_name);
    tcase_add_test(tc, revocation_within_a_second);
    tcase_add_test(tc, rate_limited);
    tcase_add_test(tc, secrets_never_shown);
    suite_add_tcase(s, tc);
    rc = th_run(s);
    rc |= th_daemon_stop(&relay);
    rc |= th_daemon_stop(&query);
    rc |= th_daemon_stop(&cmd);
    th_stream_delete(stream_name);
    th_db_drop(dbname);
    return rc;
}
