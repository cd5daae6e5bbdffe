/*
 * esctl stream read|append and feed read|follow: the event store used
 * directly (through the same library as the command service, so an
 * append here keeps every rule of the store).
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "codec.h"
#include "env.h"
#include "projector.h"
#include "store.h"

#define PAGE_MAX 10000

/* An event as the HTTP API shows it. */
static json_t *
event_json(const es_event *e, bool with_stream)
{
    es_buf b = {0};
    json_t *j;

    es_event_encode(&b, e, with_stream);
    j = es_buf_failed(&b) ? NULL : json_loads(b.data, 0, NULL);
    es_buf_free(&b);
    return j ? j : json_null();
}

static json_t *
page_json(const es_page *p, bool with_stream)
{
    json_t *a = json_array();

    for (size_t i = 0; i < p->count; i++)
        json_array_append_new(a, event_json(&p->events[i], with_stream));
    return a;
}

static int
run_read(cli *c, int argc, char **argv)
{
    const char *from_s = NULL, *limit_s = "100";
    bool backward = false;
    cli_opt opts[] = {{"--from", &from_s, NULL}, {"--limit", &limit_s, NULL},
                      {"--backward", NULL, &backward}, {NULL, NULL, NULL}};
    const char *cols[] = {"version", "position", "type", "recorded_at", "principal", "data", NULL};
    char *pos[1];
    int npos;
    long long from, limit;
    es_store *st;
    es_page *p = NULL;
    es_error err;
    json_t *events, *rows, *ev;
    size_t i;

    if (!cli_parse(c, argc, argv, opts, pos, 1, 1, &npos) ||
        !cli_number(c, "--limit", limit_s, 1, PAGE_MAX, &limit))
        return CLI_USAGE;
    from = backward ? -1 : 0;
    if (from_s && !cli_number(c, "--from", from_s, 0, INT64_MAX, &from))
        return CLI_USAGE;
    if ((st = cli_store(c)) == NULL)
        return CLI_UNAVAILABLE;
    es_store_set_read_budget(st, es_store_read_budget_configured());
    if (es_store_read_stream(st, pos[0], from, (size_t)limit, backward ? ES_BACKWARD : ES_FORWARD,
                             &p, &err) != ES_OK) {
        es_store_close(st);
        return cli_fail(c, &err);
    }
    events = page_json(p, false);
    /* the table names who wrote each event (metadata.principal, set by
     * the server); the JSON stays as the HTTP API shows events */
    rows = json_deep_copy(events);
    json_array_foreach(rows, i, ev) {
        json_t *who = json_object_get(json_object_get(ev, "metadata"), "principal");
        json_object_set_new(ev, "principal", json_is_string(who) ? json_copy(who) : json_null());
    }
    cli_print(c, json_pack("{s:s, s:I, s:o}", "stream", pos[0], "version",
                           (json_int_t)p->stream_version, "events", events),
              rows ? rows : events, cols);
    json_decref(rows);
    es_page_destroy(p);
    es_store_close(st);
    return CLI_OK;
}

/* "any", "no_stream", "exists" or a version. */
static bool
expected_version(cli *c, const char *s, int64_t *out)
{
    long long v;

    if (strcmp(s, "any") == 0)
        *out = ES_EXPECT_ANY;
    else if (strcmp(s, "no_stream") == 0)
        *out = ES_EXPECT_NO_STREAM;
    else if (strcmp(s, "exists") == 0)
        *out = ES_EXPECT_EXISTS;
    else if (cli_number(c, "--expected", s, 0, INT64_MAX, &v))
        *out = v;
    else
        return false;
    return true;
}

/* All of standard input, for a data argument "-". */
static char *
read_stdin(void)
{
    es_buf b = {0};
    char chunk[4096];
    size_t n;

    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        es_buf_append(&b, chunk, n);
    if (es_buf_failed(&b)) {
        es_buf_free(&b);
        return NULL;
    }
    return b.data ? b.data : strdup("");
}

static int
run_append(cli *c, int argc, char **argv)
{
    const char *expected_s = "any", *meta = NULL, *event_id = NULL;
    cli_opt opts[] = {{"--expected", &expected_s, NULL}, {"--metadata", &meta, NULL},
                      {"--event-id", &event_id, NULL}, {NULL, NULL, NULL}};
    char *pos[3], *data, where[ES_POSITION_TEXT_MAX];
    int npos, rc;
    int64_t expected;
    es_store *st;
    es_append_result res;
    es_error err;

    if (!cli_parse(c, argc, argv, opts, pos, 3, 3, &npos) ||
        !expected_version(c, expected_s, &expected))
        return CLI_USAGE;
    data = strcmp(pos[2], "-") == 0 ? read_stdin() : strdup(pos[2]);
    if (data == NULL)
        return cli_usage(c, "could not read the data from standard input");
    if ((st = cli_store(c)) == NULL) {
        free(data);
        return CLI_UNAVAILABLE;
    }
    {
        es_new_event ev = {event_id, pos[1], 1, data, meta};
        es_append_req req = {pos[0], expected, &ev, 1};
        es_store_append(st, &req, &res);
    }
    free(data);
    es_store_close(st);
    if (res.status != ES_OK) {
        err = res.err;
        return cli_fail(c, &err);
    }
    es_position_format(res.position, where);
    rc = cli_say(c, json_pack("{s:s, s:I, s:I, s:s, s:b}", "stream", pos[0], "first_version",
                              (json_int_t)res.first_version, "last_version",
                              (json_int_t)res.last_version, "position", where, "duplicate",
                              res.duplicate),
                 "%s %s at version %lld of %s (position %s)", pos[1],
                 res.duplicate ? "was appended before" : "appended",
                 (long long)res.last_version, pos[0], where);
    return rc;
}

static bool
parse_position(cli *c, const char *s, es_position *p)
{
    if (es_position_parse(s, p))
        return true;
    cli_usage(c, "--after must be a position as the feed gives them, not \"%s\"", s);
    return false;
}

static int
run_feed_read(cli *c, int argc, char **argv)
{
    const char *after_s = NULL, *limit_s = "100";
    cli_opt opts[] = {{"--after", &after_s, NULL}, {"--limit", &limit_s, NULL},
                      {NULL, NULL, NULL}};
    const char *cols[] = {"position", "stream", "version", "type", "data", NULL};
    char *pos[1], next[ES_POSITION_TEXT_MAX];
    int npos;
    long long limit;
    es_position after = {0, 0};
    es_store *st;
    es_page *p = NULL;
    es_error err;
    json_t *events;

    if (!cli_parse(c, argc, argv, opts, pos, 0, 0, &npos) ||
        !cli_number(c, "--limit", limit_s, 1, PAGE_MAX, &limit) ||
        (after_s && !parse_position(c, after_s, &after)))
        return CLI_USAGE;
    if ((st = cli_store(c)) == NULL)
        return CLI_UNAVAILABLE;
    es_store_set_read_budget(st, es_store_read_budget_configured());
    if (es_store_read_feed(st, after, (size_t)limit, &p, &err) != ES_OK) {
        es_store_close(st);
        return cli_fail(c, &err);
    }
    es_position_format(p->next, next);
    events = page_json(p, true);
    cli_print(c, json_pack("{s:o, s:s}", "events", events, "next", next), events, cols);
    if (!c->json)
        printf("next: %s\n", next);
    es_page_destroy(p);
    es_store_close(st);
    return CLI_OK;
}

/* Follows the feed as it grows: polls the store, which is the truth the
 * relay copies (so it works with NATS down too). */
static int
run_follow(cli *c, int argc, char **argv)
{
    const char *after_s = NULL, *limit_s = NULL, *poll_s = "200";
    bool from_start = false;
    cli_opt opts[] = {{"--after", &after_s, NULL}, {"--from-start", NULL, &from_start},
                      {"--limit", &limit_s, NULL}, {"--poll-ms", &poll_s, NULL},
                      {NULL, NULL, NULL}};
    char *pos[1];
    int npos;
    long long limit = 0, poll_ms, seen = 0;
    es_position after = {0, 0};
    es_store *st;
    es_error err;

    if (!cli_parse(c, argc, argv, opts, pos, 0, 0, &npos) ||
        (limit_s && !cli_number(c, "--limit", limit_s, 1, INT64_MAX, &limit)) ||
        !cli_number(c, "--poll-ms", poll_s, 10, 60000, &poll_ms) ||
        (after_s && !parse_position(c, after_s, &after)))
        return CLI_USAGE;
    if (after_s && from_start)
        return cli_usage(c, "--after and --from-start cannot go together");
    if ((st = cli_store(c)) == NULL)
        return CLI_UNAVAILABLE;
    es_store_set_read_budget(st, es_store_read_budget_configured());
    if (!after_s && !from_start && es_store_feed_head(st, &after, &err) != ES_OK) {
        es_store_close(st);
        return cli_fail(c, &err);
    }
    while (!es_daemon_stopping() && (limit == 0 || seen < limit)) {
        es_page *p = NULL;
        size_t i;

        if (es_store_read_feed(st, after, PAGE_MAX, &p, &err) != ES_OK) {
            if (err.status != ES_EUNAVAILABLE) {
                es_store_close(st);
                return cli_fail(c, &err);
            }
            fprintf(stderr, "esctl feed follow: %s (trying again)\n", err.message);
            es_daemon_sleep_ms(1000);
            continue;
        }
        for (i = 0; i < p->count && (limit == 0 || seen < limit); i++, seen++) {
            const es_event *e = &p->events[i];
            if (c->json) {
                cli_print(c, event_json(e, true), NULL, NULL);
            } else {
                char where[ES_POSITION_TEXT_MAX];
                es_position_format(e->position, where);
                printf("%s  %s@%lld  %s  %s\n", where, e->stream_id, (long long)e->version,
                       e->type, e->data);
            }
            after = e->position;
        }
        fflush(stdout);
        if (p->count == 0)
            es_daemon_sleep_ms((int)poll_ms);
        es_page_destroy(p);
    }
    es_store_close(st);
    return CLI_OK;
}

const cli_cmd cli_stream_cmds[] = {
    {"stream", "read", "<stream> [--from V] [--limit N] [--backward]",
     "read the events of one stream",
     "Reads up to N (default 100, at most 10000) events of <stream> from version V\n"
     "(default: the first, or the last with --backward).  Prints one row per event:\n"
     "version, position, type, recorded_at, principal (who wrote it: the token's\n"
     "name, from metadata.principal), data; --json prints\n"
     "{\"stream\", \"version\", \"events\": [...]} with each event as the HTTP API shows it.\n"
     "Exit code 4 when the stream does not exist.\n",
     run_read},
    {"stream", "append", "<stream> <type> <data|-> [--expected E] [--metadata JSON] "
                         "[--event-id UUID]",
     "append one event to a stream",
     "Appends an event of <type> whose data is the JSON object <data> (\"-\": read it\n"
     "from standard input) to <stream>, straight into the store, if the stream's version\n"
     "is E: any (default), no_stream, exists or a number.  The same --event-id appended\n"
     "again is not written twice (the first append's versions are printed).\n"
     "Exit code 5 on a version conflict, 2 when the event is invalid.  --json prints\n"
     "{\"stream\", \"first_version\", \"last_version\", \"position\", \"duplicate\"}.\n",
     run_append},
    {"feed", "read", "[--after POS] [--limit N]", "read a page of the global feed",
     "Reads up to N (default 100) events of every stream in feed order after POS\n"
     "(default: from the beginning), and where to continue.  The feed order is\n"
     "gap-free: reading on from \"next\" sees every committed event exactly once.\n",
     run_feed_read},
    {"feed", "follow", "[--after POS | --from-start] [--limit N] [--poll-ms MS]",
     "print events as they are committed",
     "Prints each new event of the feed as it is committed, from now on (or after\n"
     "POS, or from the start), until Ctrl-C or N events.  One line per event:\n"
     "position, stream@version, type, data; --json prints one event per line.  It\n"
     "reads the store (polling every MS, default 200, when idle), so it also works\n"
     "while NATS is down, and retries while PostgreSQL is.\n",
     run_follow},
    {NULL, NULL, NULL, NULL, NULL, NULL}};
