/*
 * GET /v1/subscriptions/feed against a real es-command (and, for the
 * restarts, every daemon): the feed as Server-Sent Events in order, each
 * event once, filters, heartbeats, bad input, the cap on subscriptions,
 * a slow client cut with its reason and resumed without a gap, and a
 * client resumed with Last-Event-ID across restarts of every daemon.
 * The client here is a plain socket that decodes chunked transfer
 * encoding and SSE messages itself, so nothing hides what is on the wire.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "event.h"
#include "harness.h"

static th_daemon cmd, relay, proj, qry, saga;
static th_daemon cmd_cap, cmd_slow;
static char dbname[64], conninfo[512], tag[40], stream_name[64];
static char envs[12][700];
static const char *env[13];

/* ---- a Server-Sent Events client ------------------------------------------- */

typedef struct client {
    int fd;
    int status;
    bool chunked, eof;
    size_t chunk_left;          /* bytes of the current chunk still to come */
    bool chunk_crlf;            /* the CRLF after a chunk is due */
    es_buf raw;                 /* read, not yet decoded */
    es_buf text;                /* decoded body, not yet parsed */
} client;

typedef struct msg {
    char id[ES_POSITION_TEXT_MAX];
    char event[64];
    char *data;                 /* malloc'd; NULL when none */
    bool has_id, heartbeat, comment_only;
} msg;

static void
msg_free(msg *m)
{
    free(m->data);
    memset(m, 0, sizeof *m);
}

static long long
now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Reads what the socket has (waiting up to ms); false at its end. */
static bool
fill(client *c, int ms)
{
    struct pollfd p = {c->fd, POLLIN, 0};
    char b[16384];
    ssize_t n;

    if (c->eof)
        return false;
    if (poll(&p, 1, ms) <= 0)
        return true;
    n = read(c->fd, b, sizeof b);
    if (n <= 0) {
        c->eof = true;
        return false;
    }
    es_buf_append(&c->raw, b, (size_t)n);
    return true;
}

static void
consume(es_buf *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n + 1);
    b->len -= n;
}

/* Moves what raw holds of the body into text (chunked or not). */
static void
decode(client *c)
{
    for (;;) {
        if (c->raw.len == 0)
            return;
        if (!c->chunked) {
            es_buf_append(&c->text, c->raw.data, c->raw.len);
            es_buf_reset(&c->raw);
            return;
        }
        if (c->chunk_left > 0) {
            size_t n = c->raw.len < c->chunk_left ? c->raw.len : c->chunk_left;

            es_buf_append(&c->text, c->raw.data, n);
            consume(&c->raw, n);
            c->chunk_left -= n;
            if (c->chunk_left == 0)
                c->chunk_crlf = true;
            continue;
        }
        if (c->chunk_crlf) {
            if (c->raw.len < 2)
                return;
            ck_assert_msg(memcmp(c->raw.data, "\r\n", 2) == 0, "a chunk does not end in CRLF");
            consume(&c->raw, 2);
            c->chunk_crlf = false;
            continue;
        }
        {
            char *eol = strstr(c->raw.data, "\r\n");
            unsigned long size;

            if (eol == NULL)
                return;
            size = strtoul(c->raw.data, NULL, 16);
            consume(&c->raw, (size_t)(eol - c->raw.data) + 2);
            if (size == 0) {        /* the last chunk: the body is over */
                c->eof = true;
                es_buf_reset(&c->raw);
                return;
            }
            c->chunk_left = size;
        }
    }
}

/*
 * Opens GET /v1/subscriptions/feed<query> on port; last_id, when not
 * NULL, goes as Last-Event-ID; rcvbuf > 0 shrinks the socket's receive
 * buffer first (a client that will not read).  Returns the status; for
 * a 200 the body is then read with next_msg.
 */
static int
sub_open(client *c, unsigned port, const char *query, const char *last_id, int rcvbuf,
         const char *token)
{
    struct sockaddr_in a = {0};
    char req[2048], idh[128] = "";
    long long until = now_ms() + 10000;
    char *end;

    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(c->fd, 0);
    if (rcvbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
    if (last_id != NULL)
        snprintf(idh, sizeof idh, "Last-Event-ID: %s\r\n", last_id);
    snprintf(req, sizeof req,
             "GET /v1/subscriptions/feed%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Accept: text/event-stream\r\n%s%s%s%s\r\n",
             query ? query : "", idh, token ? "Authorization: Bearer " : "", token ? token : "",
             token ? "\r\n" : "");
    ck_assert_int_eq(write(c->fd, req, strlen(req)), (ssize_t)strlen(req));
    while ((end = c->raw.data ? strstr(c->raw.data, "\r\n\r\n") : NULL) == NULL) {
        ck_assert_msg(now_ms() < until, "no answer's head within 10 s");
        if (!fill(c, 100))
            ck_abort_msg("the connection closed before the answer's head");
    }
    *end = '\0';
    c->status = atoi(c->raw.data + 9);
    c->chunked = strcasestr(c->raw.data, "Transfer-Encoding: chunked") != NULL;
    if (c->status == 200)
        ck_assert_msg(strcasestr(c->raw.data, "Content-Type: text/event-stream") != NULL,
                      "head: %s", c->raw.data);
    consume(&c->raw, (size_t)(end - c->raw.data) + 4);
    return c->status;
}

static void
sub_close(client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    es_buf_free(&c->raw);
    es_buf_free(&c->text);
}

/* The whole body of a non-200 answer (the error JSON), as far as it came
 * in within 2 s. */
static const char *
sub_body(client *c)
{
    long long until = now_ms() + 2000;

    while (now_ms() < until && fill(c, 100)) {
        decode(c);
        if (c->text.len > 0 && c->text.data[c->text.len - 1] == '}')
            break;
    }
    decode(c);
    return c->text.data ? c->text.data : "";
}

/* The next message (a comment-only block counts, as heartbeat or not)
 * within ms: 1, 0 when none came, -1 at the end of the stream. */
static int
next_msg(client *c, msg *m, int ms)
{
    long long until = now_ms() + ms;

    memset(m, 0, sizeof *m);
    for (;;) {
        char *end;

        decode(c);
        end = c->text.data ? strstr(c->text.data, "\n\n") : NULL;
        if (end != NULL) {
            char *line = c->text.data, *eol;

            end[1] = '\0';
            m->comment_only = true;
            for (; *line != '\0'; line = eol + 1) {
                eol = strchr(line, '\n');
                *eol = '\0';
                if (line[0] == ':') {
                    if (strcmp(line, ": heartbeat") == 0)
                        m->heartbeat = true;
                    continue;
                }
                m->comment_only = false;
                if (strncmp(line, "id: ", 4) == 0) {
                    snprintf(m->id, sizeof m->id, "%s", line + 4);
                    m->has_id = true;
                } else if (strncmp(line, "event: ", 7) == 0) {
                    snprintf(m->event, sizeof m->event, "%s", line + 7);
                } else if (strncmp(line, "data: ", 6) == 0) {
                    ck_assert_msg(m->data == NULL, "two data lines in one message");
                    m->data = strdup(line + 6);
                } else {
                    ck_abort_msg("unexpected line \"%s\"", line);
                }
            }
            consume(&c->text, (size_t)(end - c->text.data) + 2);
            return 1;
        }
        if (c->eof)
            return -1;
        if (now_ms() >= until)
            return 0;
        fill(c, (int)(until - now_ms()));
    }
}

/* ---- the feed, as GET /v1/feed gives it --------------------------------- */

/* th_http until it answers want: a 503 (Retry-After: a server busy or
 * still connecting, as on a loaded machine under the sanitizers) is
 * retried for up to 30 s, as a client should. */
static void
http_ok(unsigned port, const char *method, const char *path, const char *headers,
        const char *body, int want, th_response *r)
{
    int st = 0;

    for (int i = 0; i < 300; i++) {
        if ((st = th_http(port, method, path, headers, body, r)) != 503)
            break;
        th_response_free(r);
        usleep(100 * 1000);
    }
    ck_assert_msg(st == want, "%s %s: %d (want %d): %s", method, path, st, want,
                  r->body ? r->body : "");
}

typedef struct feed {
    char (*pos)[ES_POSITION_TEXT_MAX];
    char (*type)[64];
    char (*stream)[96];
    size_t n;
} feed;

static void
feed_free(feed *f)
{
    free(f->pos);
    free(f->type);
    free(f->stream);
    memset(f, 0, sizeof *f);
}

/* The whole feed of the test database, in order. */
static void
feed_read(unsigned port, feed *f)
{
    char after[ES_POSITION_TEXT_MAX] = "", path[128];
    size_t cap = 0;

    memset(f, 0, sizeof *f);
    for (;;) {
        th_response r;
        json_t *root, *events;
        size_t i;

        snprintf(path, sizeof path, "/v1/feed?limit=1000%s%s", after[0] ? "&after=" : "", after);
        http_ok(port, "GET", path, NULL, NULL, 200, &r);
        ck_assert_ptr_nonnull(root = json_loads(r.body, 0, NULL));
        events = json_object_get(root, "events");
        for (i = 0; i < json_array_size(events); i++) {
            json_t *e = json_array_get(events, i);

            if (f->n == cap) {
                cap = cap ? cap * 2 : 1024;
                f->pos = realloc(f->pos, cap * sizeof *f->pos);
                f->type = realloc(f->type, cap * sizeof *f->type);
                f->stream = realloc(f->stream, cap * sizeof *f->stream);
            }
            snprintf(f->pos[f->n], sizeof f->pos[0], "%s",
                     json_string_value(json_object_get(e, "position")));
            snprintf(f->type[f->n], sizeof f->type[0], "%s",
                     json_string_value(json_object_get(e, "type")));
            snprintf(f->stream[f->n], sizeof f->stream[0], "%s",
                     json_string_value(json_object_get(e, "stream")));
            f->n++;
        }
        snprintf(after, sizeof after, "%s", json_string_value(json_object_get(root, "next")));
        json_decref(root);
        th_response_free(&r);
        if (i == 0)
            return;
    }
}

/* Appends n events of type to stream (data padded to about pad bytes);
 * the position of the last. */
static void
append(unsigned port, const char *stream, const char *type, int n, size_t pad, char *pos_out)
{
    es_buf b = ES_BUF_INIT;
    char path[200], *padding = malloc(pad + 1);
    th_response r;
    json_t *root;

    memset(padding, 'x', pad);
    padding[pad] = '\0';
    es_buf_puts(&b, "{\"expected_version\":\"any\",\"events\":[");
    for (int i = 0; i < n; i++)
        es_buf_printf(&b, "%s{\"type\":\"%s\",\"data\":{\"i\":%d,\"pad\":\"%s\"}}", i ? "," : "",
                      type, i, padding);
    es_buf_puts(&b, "]}");
    snprintf(path, sizeof path, "/v1/streams/%s/events", stream);
    http_ok(port, "POST", path, "Content-Type: application/json\r\n", b.data, 201, &r);
    if (pos_out != NULL) {
        ck_assert_ptr_nonnull(root = json_loads(r.body, 0, NULL));
        snprintf(pos_out, ES_POSITION_TEXT_MAX, "%s",
                 json_string_value(json_object_get(root, "position")));
        json_decref(root);
    }
    th_response_free(&r);
    es_buf_free(&b);
    free(padding);
}

/* A category no other test of this run uses: "<prefix><hex>" (no '-'). */
static void
category(char *out, size_t size, const char *prefix)
{
    th_unique(out, size, prefix);
    for (char *c = out; *c; c++)
        if (*c == '-')
            *c = 'x';
}

/* Reads messages until the one with id want (or the stream's end, which
 * fails); each event's id goes to ids[], the data checked against the
 * feed at the same index.  *last_id is the last id seen. */
typedef struct seen {
    char (*ids)[ES_POSITION_TEXT_MAX];
    size_t n, cap;
    char last_id[ES_POSITION_TEXT_MAX];
} seen;

static void
seen_add(seen *s, const char *id)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->ids = realloc(s->ids, s->cap * sizeof *s->ids);
    }
    snprintf(s->ids[s->n++], sizeof s->ids[0], "%s", id);
}

/* Reads c until an event with id want arrived (true), its end (false,
 * cut in *cut_reason when the last message said why) or 20 s. */
static bool
read_until(client *c, seen *s, const char *want, char *cut_reason, size_t cut_size)
{
    long long until = now_ms() + 20000;
    msg m;
    int got;

    if (cut_reason)
        cut_reason[0] = '\0';
    while (now_ms() < until) {
        got = next_msg(c, &m, 500);
        if (got < 0)
            return false;
        if (got == 0)
            continue;
        if (strcmp(m.event, "cut") == 0) {
            json_t *d = json_loads(m.data, 0, NULL);

            ck_assert_ptr_nonnull(d);
            if (cut_reason)
                snprintf(cut_reason, cut_size, "%s",
                         json_string_value(json_object_get(d, "reason")));
            /* the cut names the last id the client was sent */
            if (s->last_id[0])
                ck_assert_str_eq(json_string_value(json_object_get(d, "last_id")), s->last_id);
            json_decref(d);
            msg_free(&m);
            continue;
        }
        if (m.has_id) {
            snprintf(s->last_id, sizeof s->last_id, "%s", m.id);
            if (m.data != NULL)
                seen_add(s, m.id);
        }
        if (m.has_id && m.data != NULL && strcmp(m.id, want) == 0) {
            msg_free(&m);
            return true;
        }
        msg_free(&m);
    }
    ck_abort_msg("no event %s within 20 s (last id %s)", want, s->last_id);
    return false;
}

/* The ids seen are exactly the feed's after position from (exclusive),
 * each once, in order. */
static void
assert_exactly_the_feed(const seen *s, const feed *f, const char *from)
{
    size_t i = 0, k;

    if (from != NULL && from[0] != '\0') {
        while (i < f->n && strcmp(f->pos[i], from) != 0)
            i++;
        ck_assert_msg(i < f->n, "position %s is not in the feed", from);
        i++;
    }
    ck_assert_msg(s->n == f->n - i, "%zu events seen, the feed has %zu after %s", s->n, f->n - i,
                  from ? from : "its start");
    for (k = 0; k < s->n; k++, i++)
        ck_assert_msg(strcmp(s->ids[k], f->pos[i]) == 0, "event %zu: id %s, the feed has %s", k,
                      s->ids[k], f->pos[i]);
}

/* ---- the tests ------------------------------------------------------------- */

START_TEST(the_feed_in_order_with_filters)
{
    char cat_a[40], cat_b[40], sa[64], sb[64], last[ES_POSITION_TEXT_MAX];
    client c;
    feed f;
    seen s = {0};
    msg m;
    size_t want = 0, i;
    int got;

    category(cat_a, sizeof cat_a, "ssea");
    category(cat_b, sizeof cat_b, "sseb");
    snprintf(sa, sizeof sa, "%s-1", cat_a);
    snprintf(sb, sizeof sb, "%s-1", cat_b);
    append(cmd.port, sa, "Kept", 3, 10, NULL);
    append(cmd.port, sb, "Kept", 2, 10, NULL);
    append(cmd.port, sa, "Other", 2, 10, NULL);
    append(cmd.port, sb, "Other", 50, 10, last);     /* a long skipped run at the end */

    /* everything, from the start: the whole feed, data as /v1/feed has it */
    feed_read(cmd.port, &f);
    ck_assert_int_eq(sub_open(&c, cmd.port, "?after=0-0", NULL, 0, th_token()), 200);
    ck_assert(read_until(&c, &s, last, NULL, 0));
    assert_exactly_the_feed(&s, &f, NULL);
    sub_close(&c);
    free(s.ids);
    memset(&s, 0, sizeof s);

    /* category a, type Kept: only those; the skipped tail still moves
     * the id on (an id-only message) */
    for (i = 0; i < f.n; i++)
        if (strcmp(f.stream[i], sa) == 0 && strcmp(f.type[i], "Kept") == 0)
            want++;
    ck_assert_uint_eq(want, 3);
    {
        char q[200];

        snprintf(q, sizeof q, "?category=%s,nosuchcat&type=Kept,Nope&after=0-0", cat_a);
        ck_assert_int_eq(sub_open(&c, cmd.port, q, NULL, 0, th_token()), 200);
    }
    while (s.n < want) {
        got = next_msg(&c, &m, 5000);
        ck_assert_int_eq(got, 1);
        if (m.data != NULL) {
            json_t *d = json_loads(m.data, 0, NULL);

            ck_assert_str_eq(json_string_value(json_object_get(d, "stream")), sa);
            ck_assert_str_eq(json_string_value(json_object_get(d, "type")), "Kept");
            ck_assert_str_eq(m.event, "Kept");
            ck_assert_str_eq(json_string_value(json_object_get(d, "position")), m.id);
            json_decref(d);
            seen_add(&s, m.id);
        }
        msg_free(&m);
    }
    /* then an id-only message at the feed's last position */
    for (;;) {
        got = next_msg(&c, &m, 5000);
        ck_assert_int_eq(got, 1);
        ck_assert_ptr_null(m.data);
        if (m.has_id) {
            ck_assert_str_eq(m.id, last);
            msg_free(&m);
            break;
        }
        msg_free(&m);
    }
    sub_close(&c);
    free(s.ids);
    feed_free(&f);
}
END_TEST

START_TEST(new_events_are_pushed_promptly_and_heartbeats_flow)
{
    char cat[40], st[64], head[ES_POSITION_TEXT_MAX], pos[ES_POSITION_TEXT_MAX];
    long long delays[20];
    client c;
    msg m;
    feed f;
    bool heartbeat = false;

    category(cat, sizeof cat, "ssel");
    snprintf(st, sizeof st, "%s-1", cat);
    append(cmd.port, st, "Tick", 1, 10, head);
    {
        char q[64];

        snprintf(q, sizeof q, "?after=%s", head);       /* the query alone */
        ck_assert_int_eq(sub_open(&c, cmd.port, q, NULL, 0, th_token()), 200);
    }
    for (int i = 0; i < 20; i++) {
        long long t0;

        append(cmd.port, st, "Tick", 1, 10, pos);
        t0 = now_ms();      /* from the append's answer: the commit is done */
        for (;;) {
            ck_assert_int_eq(next_msg(&c, &m, 5000), 1);
            if (m.data != NULL) {
                ck_assert_str_eq(m.id, pos);
                msg_free(&m);
                break;
            }
            msg_free(&m);
        }
        delays[i] = now_ms() - t0;
    }
    {
        long long sum = 0, max = 0;

        for (int i = 0; i < 20; i++) {
            sum += delays[i];
            max = delays[i] > max ? delays[i] : max;
        }
        /* a figure for the report, not a pass/fail line (the CPU is shared) */
        fprintf(stderr, "sse: append answered -> event received: mean %lld ms, max %lld ms "
                        "(20 appends)\n", sum / 20, max);
    }
    /* nothing more to send: heartbeats (ES_SSE_HEARTBEAT_MS=200 here) */
    for (long long until = now_ms() + 5000; !heartbeat && now_ms() < until;) {
        if (next_msg(&c, &m, 1000) == 1) {
            ck_assert_ptr_null(m.data);
            heartbeat = m.heartbeat;
        }
        msg_free(&m);
    }
    ck_assert_msg(heartbeat, "no heartbeat within 5 s");
    sub_close(&c);
    /* the Last-Event-ID header wins over ?after= */
    feed_read(cmd.port, &f);
    ck_assert_uint_ge(f.n, 2);
    ck_assert_int_eq(sub_open(&c, cmd.port, "?after=0-0", f.pos[f.n - 2], 0, th_token()), 200);
    for (;;) {
        ck_assert_int_eq(next_msg(&c, &m, 5000), 1);
        if (m.data != NULL) {
            ck_assert_str_eq(m.id, f.pos[f.n - 1]);
            msg_free(&m);
            break;
        }
        msg_free(&m);
    }
    sub_close(&c);
    /* neither: the tail, whose position comes first as an id-only
     * message, then what is appended after it */
    ck_assert_int_eq(sub_open(&c, cmd.port, "", NULL, 0, th_token()), 200);
    for (;;) {
        ck_assert_int_eq(next_msg(&c, &m, 5000), 1);
        if (m.has_id)
            break;
        msg_free(&m);
    }
    ck_assert_ptr_null(m.data);
    ck_assert_str_eq(m.id, f.pos[f.n - 1]);
    msg_free(&m);
    append(cmd.port, st, "Tick", 1, 10, pos);
    for (;;) {
        ck_assert_int_eq(next_msg(&c, &m, 5000), 1);
        if (m.data != NULL)
            break;
        msg_free(&m);
    }
    ck_assert_str_eq(m.id, pos);
    msg_free(&m);
    sub_close(&c);
    feed_free(&f);
}
END_TEST

START_TEST(bad_input_is_refused_with_the_field)
{
    static const struct {
        const char *query, *last_id, *field;
    } cases[] = {
        {"?after=zz", NULL, "after"},
        {"?after=1-", NULL, "after"},
        {"", "not-an-id", "Last-Event-ID"},
        {"?after=1-1", "x", "Last-Event-ID"},
        {"?category=", NULL, "category"},
        {"?category=a,,b", NULL, "category"},
        {"?category=order-1", NULL, "category"},
        {"?type=", NULL, "type"},
        {"?type=A,", NULL, "type"},
        {"?type=a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q", NULL, "type"},
    };
    client c;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *root;

        ck_assert_int_eq(sub_open(&c, cmd.port, cases[i].query, cases[i].last_id, 0, th_token()),
                         400);
        ck_assert_ptr_nonnull(root = json_loads(sub_body(&c), 0, NULL));
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(root, "error"), "code")),
                         "query_invalid");
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(root, "error"),
                                                           "field")), cases[i].field);
        json_decref(root);
        sub_close(&c);
    }
    /* no token: 401, as every route but the health checks */
    ck_assert_int_eq(sub_open(&c, cmd.port, "", NULL, 0, NULL), 401);
    sub_close(&c);
    ck_assert_int_eq(sub_open(&c, cmd.port, "", NULL, 0, "nosuchtoken"), 401);
    sub_close(&c);
}
END_TEST

/* A token named <prefix>-<hex> with one scope, made by esctl; its
 * secret (malloc'd). */
static char *
token_with(const char *prefix, const char *scope)
{
    char name[64], out[4096], conn[600];
    const char *create[] = {"esctl", "--json", "token", "create", name, "--scope", scope, NULL};
    const char *cenv[] = {conn, NULL};
    json_t *j;
    char *secret;

    th_unique(name, sizeof name, prefix);
    snprintf(conn, sizeof conn, "ES_PG_CONNINFO=%s", conninfo);
    ck_assert_int_eq(th_program_output(create, cenv, out, sizeof out), 0);
    ck_assert_ptr_nonnull(j = json_loads(out, 0, NULL));
    secret = strdup(json_string_value(json_object_get(j, "token")));
    json_decref(j);
    return secret;
}

START_TEST(the_scope_is_read_streams)
{
    char *reader = token_with("ssereader", "read:streams"), *other = token_with("sseother",
                                                                                "read:query");
    client c;
    int st = 0;

    /* a new token is known to the daemon within a second or so */
    for (long long until = now_ms() + 5000; now_ms() < until; usleep(50 * 1000)) {
        st = sub_open(&c, cmd.port, "", NULL, 0, reader);
        sub_close(&c);
        if (st != 401)
            break;
    }
    ck_assert_int_eq(st, 200);
    for (long long until = now_ms() + 5000; now_ms() < until; usleep(50 * 1000)) {
        st = sub_open(&c, cmd.port, "", NULL, 0, other);
        sub_close(&c);
        if (st != 401)
            break;
    }
    ck_assert_int_eq(st, 403);
    free(reader);
    free(other);
}
END_TEST

START_TEST(subscriptions_are_capped)
{
    client a, b, c;
    json_t *root;
    msg m;
    int st = 0;

    ck_assert_int_eq(sub_open(&a, cmd_cap.port, "", NULL, 0, th_token()), 200);
    ck_assert_int_eq(sub_open(&b, cmd_cap.port, "", NULL, 0, th_token()), 200);
    ck_assert_int_eq(sub_open(&c, cmd_cap.port, "", NULL, 0, th_token()), 503);
    ck_assert_ptr_nonnull(root = json_loads(sub_body(&c), 0, NULL));
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(root, "error"), "code")),
                     "too_many_subscriptions");
    json_decref(root);
    sub_close(&c);
    /* the open ones are served meanwhile */
    ck_assert_int_eq(next_msg(&a, &m, 5000), 1);
    msg_free(&m);
    /* one leaves: its place is free again once the server notices (at
     * its next write at the latest, a heartbeat) */
    sub_close(&b);
    for (long long until = now_ms() + 10000; now_ms() < until; usleep(100 * 1000)) {
        if ((st = sub_open(&c, cmd_cap.port, "", NULL, 0, th_token())) == 200)
            break;
        sub_close(&c);
    }
    ck_assert_int_eq(st, 200);
    sub_close(&c);
    sub_close(&a);
}
END_TEST

START_TEST(a_slow_client_is_cut_and_resumes_without_a_gap)
{
    char cat[40], st[64], start[ES_POSITION_TEXT_MAX], last[ES_POSITION_TEXT_MAX];
    char reason[64];
    client c;
    seen s = {0};
    feed f;
    msg m;
    int batches = 0;

    category(cat, sizeof cat, "sses");
    snprintf(st, sizeof st, "%s-1", cat);
    append(cmd_slow.port, st, "Slow", 1, 10, start);
    /* a client that reads its first message, then nothing */
    ck_assert_int_eq(sub_open(&c, cmd_slow.port, "", start, 4096, th_token()), 200);
    ck_assert_int_eq(next_msg(&c, &m, 5000), 1);
    msg_free(&m);
    snprintf(s.last_id, sizeof s.last_id, "%s", start);
    /* live events pile up until its buffer (ES_SSE_BUFFER_MAX=64 KiB here,
     * past the kernel's socket buffers) is full: the server cuts it */
    for (long long until = now_ms() + 60000;
         th_metric(cmd_slow.port, "es_command_sse_cuts_total", "reason=\"slow_consumer\"") < 1;) {
        ck_assert_msg(now_ms() < until, "not cut after %d batches in 60 s", batches);
        append(cmd_slow.port, st, "Slow", 20, 1000, last);
        batches++;
    }
    append(cmd_slow.port, st, "Slow", 5, 10, last);        /* after the cut */
    /* it reads now: the events in order up to the cut, which says why and
     * names the last id sent; then the end */
    ck_assert(!read_until(&c, &s, last, reason, sizeof reason));
    ck_assert_str_eq(reason, "slow_consumer");
    ck_assert_uint_gt(s.n, 0);
    sub_close(&c);
    /* resumed from its last id, it gets the rest: no gap, no repeat */
    ck_assert_int_eq(sub_open(&c, cmd_slow.port, "", s.last_id, 0, th_token()), 200);
    ck_assert(read_until(&c, &s, last, NULL, 0));
    sub_close(&c);
    feed_read(cmd_slow.port, &f);
    assert_exactly_the_feed(&s, &f, start);
    fprintf(stderr, "sse: slow client cut after %d batches of 20 events, %zu events seen in all\n",
            batches, s.n);
    feed_free(&f);
    free(s.ids);
}
END_TEST

/*
 * A client catching up is paced by its reading, never cut, even when one
 * page (at least one event: 50 KB here) passes what is left of its
 * buffer's cap (64 KiB here) and it pauses with the kernel's socket
 * buffers full.
 */
START_TEST(a_client_catching_up_slowly_is_never_cut)
{
    char cat[40], st[64], start[ES_POSITION_TEXT_MAX], last[ES_POSITION_TEXT_MAX];
    char reason[64], q[64];
    client c;
    seen s = {0};
    msg m;

    category(cat, sizeof cat, "ssec");
    snprintf(q, sizeof q, "?category=%s", cat);
    snprintf(st, sizeof st, "%s-1", cat);
    append(cmd_slow.port, st, "Big", 1, 10, start);
    /* 12 MB behind it: more than the socket buffers hold */
    for (int i = 0; i < 24; i++)
        append(cmd_slow.port, st, "Big", 10, 50000, last);
    ck_assert_int_eq(sub_open(&c, cmd_slow.port, q, start, 4096, th_token()), 200);
    ck_assert_int_eq(next_msg(&c, &m, 5000), 1);
    msg_free(&m);
    snprintf(s.last_id, sizeof s.last_id, "%s", start);
    sleep(3);               /* the hub sees a full buffer many times over */
    ck_assert(read_until(&c, &s, last, reason, sizeof reason));
    ck_assert_str_eq(reason, "");
    ck_assert_uint_eq(s.n, 240);
    sub_close(&c);
    free(s.ids);
}
END_TEST

/* Restarts d (SIGTERM, then the same program with the same environment). */
static void
restart(th_daemon *d, const char *exe, const char *port_var)
{
    ck_assert_int_eq(th_daemon_stop(d), 0);
    th_daemon_start(d, exe, port_var, env);
}

/* A client that resumed and was sent nothing yet is told, at a stop,
 * the id it resumed from: it resumes from there, not from the tail. */
START_TEST(a_stop_names_the_id_a_client_resumed_from)
{
    char cat[40], st[64], head[ES_POSITION_TEXT_MAX], reason[64];
    client c;
    seen s = {0};

    category(cat, sizeof cat, "sser");
    snprintf(st, sizeof st, "%s-1", cat);
    append(cmd.port, st, "Resumed", 1, 10, head);
    ck_assert_int_eq(sub_open(&c, cmd.port, "", head, 0, th_token()), 200);
    snprintf(s.last_id, sizeof s.last_id, "%s", head);
    usleep(300 * 1000);                 /* the hub takes it in */
    restart(&cmd, "es-command", "ES_COMMAND_PORT");
    /* the cut's last_id is checked against s.last_id in read_until */
    ck_assert(!read_until(&c, &s, "none", reason, sizeof reason));
    ck_assert_str_eq(reason, "shutting_down");
    ck_assert_uint_eq(s.n, 0);
    sub_close(&c);
}
END_TEST

START_TEST(resumed_across_restarts_of_every_daemon_each_event_once)
{
    static const struct {
        th_daemon *d;
        const char *exe, *port_var;
    } daemons[] = {
        {&cmd, "es-command", "ES_COMMAND_PORT"},
        {&relay, "es-relay", "ES_RELAY_PORT"},
        {&proj, "es-projector", "ES_PROJECTOR_PORT"},
        {&qry, "es-query", "ES_QUERY_PORT"},
        {&saga, "es-saga", "ES_SAGA_PORT"},
    };
    char cat[40], st[64], last[ES_POSITION_TEXT_MAX], reason[64];
    client c;
    seen s = {0};
    feed f;

    category(cat, sizeof cat, "sser");
    snprintf(st, sizeof st, "%s-1", cat);
    append(cmd.port, st, "R", 50, 100, last);
    ck_assert_int_eq(sub_open(&c, cmd.port, "?after=0-0", NULL, 0, th_token()), 200);
    ck_assert(read_until(&c, &s, last, NULL, 0));
    for (size_t i = 0; i < sizeof daemons / sizeof daemons[0]; i++) {
        /* events the client has not read yet when the daemon goes */
        append(cmd.port, st, "R", 30, 100, last);
        if (daemons[i].d == &cmd) {
            /* es-command itself: the stream ends with a cut that names why
             * and the last id sent, and the client resumes from that id on
             * the new instance */
            restart(daemons[i].d, daemons[i].exe, daemons[i].port_var);
            ck_assert(!read_until(&c, &s, "never", reason, sizeof reason));
            ck_assert_str_eq(reason, "shutting_down");
            sub_close(&c);
            append(cmd.port, st, "R", 30, 100, last);
            ck_assert_int_eq(sub_open(&c, cmd.port, "", s.last_id, 0, th_token()), 200);
        } else {
            restart(daemons[i].d, daemons[i].exe, daemons[i].port_var);
        }
        ck_assert(read_until(&c, &s, last, NULL, 0));
        /* and a reconnect after each: Last-Event-ID alone */
        sub_close(&c);
        append(cmd.port, st, "R", 10, 100, last);
        ck_assert_int_eq(sub_open(&c, cmd.port, "", s.last_id, 0, th_token()), 200);
        ck_assert(read_until(&c, &s, last, NULL, 0));
    }
    sub_close(&c);
    feed_read(cmd.port, &f);
    assert_exactly_the_feed(&s, &f, NULL);
    feed_free(&f);
    free(s.ids);
}
END_TEST

int
main(void)
{
    Suite *su = suite_create("sse");
    TCase *tc = tcase_create("sse");
    const char *cap_env[16], *slow_env[16];
    char cap_extra[2][64] = {"ES_SSE_MAX=2", "ES_SSE_HEARTBEAT_MS=200"};
    char slow_extra[2][64] = {"ES_SSE_BUFFER_MAX=65536", "ES_SSE_HEARTBEAT_MS=60000"};
    int n = 0, rc;

    th_db_create(dbname, sizeof dbname, conninfo, sizeof conninfo);
    th_redis_flush();
    th_unique(tag, sizeof tag, "sse");
    th_unique(stream_name, sizeof stream_name, "SSE");
    for (char *c = stream_name; *c; c++)
        if (*c == '-')
            *c = '_';
    snprintf(envs[n++], sizeof envs[0], "ES_PG_CONNINFO=%s", conninfo);
    snprintf(envs[n++], sizeof envs[0], "ES_NATS_URL=%s", getenv("ES_NATS_URL"));
    snprintf(envs[n++], sizeof envs[0], "ES_RELAY_STREAM=%s", stream_name);
    snprintf(envs[n++], sizeof envs[0], "ES_RELAY_SUBJECT_PREFIX=%s.events", tag);
    snprintf(envs[n++], sizeof envs[0], "ES_RELAY_WAKE_SUBJECT=%s.wake", tag);
    snprintf(envs[n++], sizeof envs[0], "ES_COMMAND_SUBJECT_PREFIX=%s.cmd", tag);
    snprintf(envs[n++], sizeof envs[0], "ES_GATEWAY_NOTIFICATION_TRANSPORT=null");
    snprintf(envs[n++], sizeof envs[0], "ES_RELAY_POLL_MS=20");
    snprintf(envs[n++], sizeof envs[0], "ES_HTTP_WORKERS=4");
    snprintf(envs[n++], sizeof envs[0], "ES_SSE_HEARTBEAT_MS=200");
    for (int i = 0; i < n; i++)
        env[i] = envs[i];
    env[n] = NULL;
    /* the cap and the slow client each get an es-command of their own
     * (same database), with their own settings after the shared ones */
    for (int i = 0; i < n; i++)
        cap_env[i] = slow_env[i] = envs[i];
    cap_env[n] = cap_extra[0];
    cap_env[n + 1] = cap_extra[1];
    cap_env[n + 2] = NULL;
    slow_env[n] = slow_extra[0];
    slow_env[n + 1] = slow_extra[1];
    slow_env[n + 2] = NULL;
    th_daemon_start(&cmd, "es-command", "ES_COMMAND_PORT", env);
    th_daemon_start(&cmd_cap, "es-command", "ES_COMMAND_PORT", cap_env);
    th_daemon_start(&cmd_slow, "es-command", "ES_COMMAND_PORT", slow_env);
    th_daemon_start(&relay, "es-relay", "ES_RELAY_PORT", env);
    th_daemon_start(&proj, "es-projector", "ES_PROJECTOR_PORT", env);
    th_daemon_start(&qry, "es-query", "ES_QUERY_PORT", env);
    th_daemon_start(&saga, "es-saga", "ES_SAGA_PORT", env);

    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, the_feed_in_order_with_filters);
    tcase_add_test(tc, new_events_are_pushed_promptly_and_heartbeats_flow);
    tcase_add_test(tc, bad_input_is_refused_with_the_field);
    tcase_add_test(tc, the_scope_is_read_streams);
    tcase_add_test(tc, subscriptions_are_capped);
    tcase_add_test(tc, a_slow_client_is_cut_and_resumes_without_a_gap);
    tcase_add_test(tc, a_client_catching_up_slowly_is_never_cut);
    tcase_add_test(tc, a_stop_names_the_id_a_client_resumed_from);
    tcase_add_test(tc, resumed_across_restarts_of_every_daemon_each_event_once);
    suite_add_tcase(su, tc);
    rc = th_run_nofork(su);     /* the tests restart daemons they own */
    rc |= th_daemon_stop(&saga);
    rc |= th_daemon_stop(&qry);
    rc |= th_daemon_stop(&proj);
    rc |= th_daemon_stop(&relay);
    rc |= th_daemon_stop(&cmd_slow);
    rc |= th_daemon_stop(&cmd_cap);
    rc |= th_daemon_stop(&cmd);
    th_stream_delete(stream_name);
    nats_Close();
    th_db_drop(dbname);
    return rc;
}
