/*
 * docs/openapi.json against the running services: the document is OpenAPI
 * 3.x with paths, and every path + method it lists exists on the service
 * its x-service names (es-command, es-query, or both): the answer is
 * neither 404 route_not_found nor 405, and not a transport error or a 5xx
 * other than 503.  Path parameters are "x"; a POST sends "{}".  An
 * operation marked "x-stream" (an answer that does not end, such as
 * Server-Sent Events) is asked with ?after=x, which it refuses (400) at
 * once, so that the probe does not wait on a stream.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define OPENAPI_PATH "docs/openapi.json"

static th_daemon cmd, query;
static char dbname[64], conninfo[512], envs[4][700], tag[40];
static const char *env[5], *query_env[2];

/* Writes path with every "{name}" replaced by "x" into out. */
static void
fill_params(const char *path, char *out, size_t size)
{
    size_t n = 0;

    for (const char *p = path; *p && n + 1 < size; p++) {
        if (*p == '{') {
            const char *end = strchr(p, '}');
            ck_assert_msg(end != NULL, "unbalanced { in path %s", path);
            out[n++] = 'x';
            p = end;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
}

/* One request; asserts the route exists with that method. */
static void
check_route(const char *service, unsigned port, const char *method, const char *path,
            bool stream)
{
    char url[512];
    th_response r;
    int post = strcmp(method, "POST") == 0;
    int st;
    json_t *j;
    const char *code = NULL;

    fill_params(path, url, sizeof url);
    if (stream)
        snprintf(url + strlen(url), sizeof url - strlen(url), "?after=x");
    st = th_http(port, method, url, post ? "Content-Type: application/json\r\n" : NULL,
                 post ? "{}" : NULL, &r);
    j = r.body ? json_loads(r.body, 0, NULL) : NULL;
    code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    ck_assert_msg(st != 0, "%s %s on %s: no answer", method, url, service);
    ck_assert_msg(!(st == 404 && code && strcmp(code, "route_not_found") == 0),
                  "%s %s on %s: 404 route_not_found: %s", method, url, service, r.body);
    ck_assert_msg(st != 405, "%s %s on %s: 405: %s", method, url, service, r.body);
    ck_assert_msg(st < 500 || st == 503, "%s %s on %s: %d: %s", method, url, service, st,
                  r.body ? r.body : "");
    json_decref(j);
    th_response_free(&r);
}

START_TEST(every_documented_route_exists)
{
    static const char *const methods[] = {"get", "put", "post", "delete", "patch", "head",
                                          "options"};
    json_error_t jerr;
    json_t *doc = json_load_file(OPENAPI_PATH, 0, &jerr), *paths, *item;
    const char *version, *path;
    size_t checked = 0;

    ck_assert_msg(doc != NULL, "cannot load %s (run from the repository root): %s (line %d)",
                  OPENAPI_PATH, jerr.text, jerr.line);
    version = json_string_value(json_object_get(doc, "openapi"));
    ck_assert_msg(version && strncmp(version, "3.", 2) == 0, "%s is not OpenAPI 3.x: %s",
                  OPENAPI_PATH, version ? version : "(no openapi member)");
    paths = json_object_get(doc, "paths");
    ck_assert_msg(json_is_object(paths) && json_object_size(paths) > 0, "%s has no paths",
                  OPENAPI_PATH);
    ck_assert_int_eq(json_array_size(json_object_get(doc, "servers")), 2);

    json_object_foreach(paths, path, item) {
        const char *path_service = json_string_value(json_object_get(item, "x-service"));

        for (size_t m = 0; m < sizeof methods / sizeof *methods; m++) {
            json_t *op = json_object_get(item, methods[m]);
            const char *service;
            char method[16];
            bool stream;

            if (!json_is_object(op))
                continue;
            /* an operation's own x-service overrides the path item's */
            service = json_string_value(json_object_get(op, "x-service"));
            if (!service)
                service = path_service;
            stream = json_is_true(json_object_get(op, "x-stream"));
            ck_assert_msg(service != NULL, "%s %s: no x-service", methods[m], path);
            for (size_t k = 0; methods[m][k]; k++)
                method[k] = (char)(methods[m][k] - 'a' + 'A');
            method[strlen(methods[m])] = '\0';
            if (strcmp(service, "command") == 0) {
                check_route(service, cmd.port, method, path, stream);
            } else if (strcmp(service, "query") == 0) {
                check_route(service, query.port, method, path, stream);
            } else if (strcmp(service, "both") == 0) {
                check_route("command", cmd.port, method, path, stream);
                check_route("query", query.port, method, path, stream);
            } else {
                ck_abort_msg("%s %s: unknown x-service \"%s\"", method, path, service);
            }
            checked++;
        }
    }
    ck_assert_uint_gt(checked, 0);
    json_decref(doc);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("openapi");
    TCase *tc = tcase_create("openapi");
    int rc;

    th_db_create(dbname, sizeof dbname, conninfo, sizeof conninfo);
    th_unique(tag, sizeof tag, "oa");
    snprintf(envs[0], sizeof envs[0], "ES_PG_CONNINFO=%s", conninfo);
    snprintf(envs[1], sizeof envs[1], "ES_NATS_URL=%s",
             getenv("ES_NATS_URL") ? getenv("ES_NATS_URL") : "nats://127.0.0.1:14222");
    snprintf(envs[2], sizeof envs[2], "ES_COMMAND_SUBJECT_PREFIX=%s.cmd", tag);
    snprintf(envs[3], sizeof envs[3], "ES_RELAY_WAKE_SUBJECT=%s.wake", tag);
    for (int i = 0; i < 4; i++)
        env[i] = envs[i];
    env[4] = NULL;
    query_env[0] = envs[1];
    query_env[1] = NULL;
    th_daemon_start(&cmd, "es-command", "ES_COMMAND_PORT", env);
    th_daemon_start(&query, "es-query", "ES_QUERY_PORT", query_env);

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, every_documented_route_exists);
    suite_add_tcase(s, tc);
    rc = th_run_nofork(s);
    rc |= th_daemon_stop(&query);
    rc |= th_daemon_stop(&cmd);
    th_db_drop(dbname);
    return rc;
}
