/*
 * Crash test of the command service: clients keep registering users (two
 * streams appended together) and appending events under Idempotency-Keys
 * while es-command is killed with SIGKILL at random moments and started
 * again, several times.  Afterwards:
 *   - every acknowledged registration exists whole: the user stream and
 *     its email reservation naming that user;
 *   - no half registration exists: every reservation names a user that
 *     exists;
 *   - every request retried with its Idempotency-Key after the crashes
 *     took effect exactly once, acknowledged or not before.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "store.h"

enum { CLIENTS = 6, ROUNDS = 3, MAXREQ = 4000 };

static th_daemon cmd;
static atomic_uint port;
static atomic_bool running;
static atomic_int acked_so_far;     /* 201s the clients got, for the load check */
static char run[40], pgenv[600];

typedef struct req {
    char key[64];
    char user_id[40];       /* set when a registration was acknowledged */
    bool acked;
    bool is_user;
} req;

static req reqs[CLIENTS][MAXREQ];
static int nreq[CLIENTS];

/* The request r stands for: a registration, or an append, under its key. */
static void
build(const req *r, int c, int n, char *hdr, char *body, char *path)
{
    snprintf(hdr, 160, "Content-Type: application/json\r\nIdempotency-Key: %.63s\r\n", r->key);
    if (r->is_user) {
        snprintf(path, 128, "/v1/users");
        snprintf(body, 256, "{\"email\":\"%.63s@crash.example\",\"name\":\"C\"}", r->key);
    } else {
        snprintf(path, 128, "/v1/streams/crash-%.40s-%d-%d/events", run, c, n);
        snprintf(body, 256, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"T\",\"data\":{}}]}");
    }
}

static void *
client(void *arg)
{
    int c = (int)(intptr_t)arg;

    while (atomic_load(&running) && nreq[c] < MAXREQ) {
        req *r = &reqs[c][nreq[c]];
        char hdr[160], body[256], path[128];
        th_response res;
        int n = nreq[c]++;

        r->is_user = n % 2 == 0;
        snprintf(r->key, sizeof r->key, "%s-%d-%d", run, c, n);
        build(r, c, n, hdr, body, path);
        if (th_http(atomic_load(&port), "POST", path, hdr, body, &res) == 201) {
            r->acked = true;
            atomic_fetch_add(&acked_so_far, 1);
            if (r->is_user) {
                json_t *j = json_loads(res.body, 0, NULL);
                snprintf(r->user_id, sizeof r->user_id, "%s",
                         json_string_value(json_object_get(j, "user_id")));
                json_decref(j);
            }
        } else if (res.status == 0) {
            usleep(20 * 1000);      /* the service is down: wait for it */
        }
        th_response_free(&res);
    }
    return NULL;
}

/* Retries a request with its key until the service answers 2xx. */
static void
retry(req *r, int c, int n)
{
    char hdr[160], body[256], path[128];
    th_response res;

    build(r, c, n, hdr, body, path);
    for (int i = 0; i < 50; i++) {
        int st = th_http(cmd.port, "POST", path, hdr, body, &res);
        if (st == 200 || st == 201) {
            if (r->is_user && r->acked) {
                json_t *j = json_loads(res.body, 0, NULL);
                /* the replayed answer names the same user */
                ck_assert_str_eq(json_string_value(json_object_get(j, "user_id")), r->user_id);
                json_decref(j);
            }
            th_response_free(&res);
            return;
        }
        th_response_free(&res);
        usleep(50 * 1000);
    }
    ck_abort_msg("request %s never succeeded", r->key);
}

START_TEST(kill_during_load)
{
    const char *env[] = {pgenv, "ES_NATS_URL=off", "ES_HTTP_WORKERS=8", NULL};
    pthread_t th[CLIENTS];
    es_store *s;
    es_error err;
    int acked = 0, total = 0;

    atomic_store(&running, true);
    for (int i = 0; i < CLIENTS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, client, (void *)(intptr_t)i), 0);
    for (int round = 0; round < ROUNDS; round++) {
        usleep((useconds_t)(200 + rand() % 400) * 1000);
        th_daemon_kill(&cmd);
        usleep(100 * 1000);
        th_daemon_start(&cmd, "es-command", "ES_COMMAND_PORT", env);
        atomic_store(&port, cmd.port);
    }
    /* Enough load must have got through for the check to mean something:
     * on a busy machine (or under ASan) a restart can take most of a round,
     * so the last incarnation runs until then (30 s at most). */
    usleep(200 * 1000);
    for (int waited = 0; atomic_load(&acked_so_far) <= 10 && waited < 300; waited++)
        usleep(100 * 1000);
    atomic_store(&running, false);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(th[i], NULL);

    /* every request again with its key: each takes effect once */
    for (int c = 0; c < CLIENTS; c++)
        for (int n = 0; n < nreq[c]; n++) {
            total++;
            acked += reqs[c][n].acked;
            retry(&reqs[c][n], c, n);
        }
    ck_assert_int_gt(acked, 10);

    ck_assert_int_eq(es_store_open(&s, th_conninfo(), &err), ES_OK);
    for (int c = 0; c < CLIENTS; c++) {
        for (int n = 0; n < nreq[c]; n++) {
            req *r = &reqs[c][n];
            char stream[128];
            es_page *p;

            if (r->is_user) {
                if (!r->acked)
                    continue;
                snprintf(stream, sizeof stream, "user-%s", r->user_id);
                ck_assert_int_eq(es_store_read_stream(s, stream, 0, 10, ES_FORWARD, &p, &err), ES_OK);
                ck_assert_uint_eq(p->count, 1);
                es_page_destroy(p);
            } else {
                snprintf(stream, sizeof stream, "crash-%s-%d-%d", run, c, n);
                ck_assert_int_eq(es_store_read_stream(s, stream, 0, 10, ES_FORWARD, &p, &err), ES_OK);
                ck_assert_msg(p->count == 1, "%s has %zu events", stream, p->count);
                es_page_destroy(p);
            }
        }
    }
    /* no half registration: every reservation of this run names a user
     * whose stream exists, and every user of this run has one */
    {
        es_position pos = {0, 0};
        int users = 0, reservations = 0;
        for (;;) {
            es_page *p;
            size_t count;
            ck_assert_int_eq(es_store_read_feed(s, pos, 1000, &p, &err), ES_OK);
            for (size_t i = 0; i < p->count; i++) {
                const es_event *e = &p->events[i];
                if (strstr(e->data, run) == NULL)
                    continue;
                if (strcmp(e->type, "UserRegistered") == 0)
                    users++;
                else if (strcmp(e->type, "EmailReserved") == 0) {
                    json_t *d = json_loads(e->data, 0, NULL);
                    char stream[128];
                    es_page *u;
                    reservations++;
                    snprintf(stream, sizeof stream, "user-%s",
                             json_string_value(json_object_get(d, "user_id")));
                    ck_assert_int_eq(es_store_read_stream(s, stream, 0, 1, ES_FORWARD, &u, &err), ES_OK);
                    es_page_destroy(u);
                    json_decref(d);
                }
            }
            pos = p->next;
            count = p->count;
            es_page_destroy(p);
            if (count == 0)
                break;
        }
        ck_assert_int_eq(users, reservations);
        ck_assert_int_gt(users, 0);
    }
    es_store_close(s);
    fprintf(stderr, "crash: %d requests, %d acknowledged before the crashes, all applied once\n",
            total, acked);
}
END_TEST

int
main(void)
{
    Suite *su = suite_create("crash_command");
    TCase *tc = tcase_create("crash");
    const char *env[] = {pgenv, "ES_NATS_URL=off", "ES_HTTP_WORKERS=8", NULL};
    int rc;

    th_unique(run, sizeof run, "r");
    snprintf(pgenv, sizeof pgenv, "ES_PG_CONNINFO=%s", th_conninfo());
    srand((unsigned)getpid());
    th_daemon_start(&cmd, "es-command", "ES_COMMAND_PORT", env);
    atomic_store(&port, cmd.port);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, kill_during_load);
    suite_add_tcase(su, tc);
    rc = th_run_nofork(su);     /* the test restarts the daemon itself */
    rc |= th_daemon_stop(&cmd);
    return rc;
}
