/*
 * consumer.c - another service consuming the events stream: a durable
 * JetStream pull consumer of its own, with explicit acks, a redelivery
 * limit and an idempotent handler.  It links nothing of this project
 * (only nats.c, libpq and jansson), since a service outside the system
 * would not either; examples/README.md walks through it.
 *
 * Each message goes through one transaction in the service's own
 * PostgreSQL database:
 *
 *     fetch ──▶ BEGIN; INSERT INTO inbox (event_id) ON CONFLICT DO NOTHING
 *                 │ inserted                         │ already there
 *                 ▼                                  ▼
 *               apply the effect (effects,         ROLLBACK      (duplicate)
 *               type_counts); COMMIT                 │
 *                 │ committed      │ refused          ▼
 *                 ▼                ▼               ack
 *               ack              ROLLBACK; nak with a delay
 *                                  (the server redelivers it, up to
 *                                   the consumer's MaxDeliver in all)
 *
 * The ack comes after the commit, so a crash between the two redelivers an
 * event whose effect is already there, and the inbox row turns that
 * redelivery into a no-op: each event takes effect exactly once.  An event
 * delivered MaxDeliver times without success is given up by the
 * server, which says so on $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.
 * <stream>.<durable>; every member of the group listens there and records
 * it in dead_letters (record_dead_letter), and the rest of the stream flows
 * on.  A member that starts also looks for events the server gave up on
 * while no member was listening (sweep_given_up).  An outage of the
 * service's own database is not the event's fault: the member holds the
 * message (marking it in progress) until the database answers again,
 * so an outage never uses up deliveries.
 *
 * Several processes with the same durable name share one consumer on the
 * server: each message goes to one of them (a consumer group).  The
 * operator makes that consumer (`esctl consumer add <name>`: a pull
 * consumer with explicit acks, its delivery limit, ack wait and filter);
 * the service only binds to it, since its NATS user may not make
 * consumers.
 *
 * Settings (environment): ES_NATS_URL (nats://user:password@host:port;
 * `scripts/servers.sh env consumer` prints it), ES_NATS_INBOX_PREFIX (the
 * inbox prefix the user may subscribe to), CONSUMER_PG_CONNINFO (the
 * service's own database; required), CONSUMER_STREAM (EVENTS),
 * CONSUMER_DURABLE (example), CONSUMER_NAK_DELAY_MS (200, times the delivery count), CONSUMER_BATCH
 * (64).  Faults to inject, for the tests and for trying it out:
 * CONSUMER_FAIL_TYPES (event types the handler refuses, comma separated),
 * CONSUMER_CRASH_AFTER_COMMIT (N: the process kills itself between the
 * commit and the ack of the N-th event it applies).
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <nats/nats.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


typedef struct settings {
    const char *nats_url;
    const char *inbox_prefix;
    const char *conninfo;
    const char *stream;
    const char *durable;
    const char *fail_types;
    long nak_delay_ms;
    long batch;
    long crash_after;
} settings;

typedef struct consumer {
    settings cfg;
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *sub;      /* the pull subscription on the durable */
    natsSubscription *adv;      /* its max-deliveries advisories */
    PGconn *pg;
    char adv_subject[256];
    int64_t max_deliver;        /* the consumer's, as the operator made it */
    bool sweep;                 /* the consumer takes every subject of the stream */
    long processed, duplicates, refused, dead;
} consumer;

/* What handling one message came to. */
typedef enum outcome {
    DONE,           /* committed now or before: ack it */
    REFUSED,        /* the handler cannot apply it: nak, let it come back */
    STORE_DOWN,     /* our database failed: hold the message, try again */
} outcome;

static volatile sig_atomic_t stopping;

static void
on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void
say(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "consumer[%d]: ", (int)getpid());
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static const char *
env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && v[0] ? v : dflt;
}

/* A whole number in [lo, hi] from the environment, or exit with a message
 * naming the variable. */
static long
env_long(const char *name, long dflt, long lo, long hi)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (v == NULL || v[0] == '\0')
        return dflt;
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || n < lo || n > hi) {
        say("%s must be a whole number from %ld to %ld, got \"%s\"", name, lo, hi, v);
        exit(2);
    }
    return n;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- the service's own store ------------------------------------------- */

/* Runs sql (no parameters); true when it succeeded. */
static bool
exec_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

    if (!ok)
        say("%s failed: %s", sql, PQerrorMessage(pg));
    PQclear(r);
    return ok;
}

/* The tables, made once (several members may start at the same time: the
 * advisory lock makes them take turns).  The inbox is the idempotency
 * record, keyed by event id (the message's Nats-Msg-Id); effects and
 * type_counts stand for what a real service would do with an event. */
static const char schema_sql[] =
    "SET client_min_messages = warning;"
    "BEGIN;"
    "SELECT pg_advisory_xact_lock(hashtext('consumer_example'));"
    "CREATE SCHEMA IF NOT EXISTS consumer_example;"
    "CREATE TABLE IF NOT EXISTS consumer_example.inbox ("
    "  event_id uuid PRIMARY KEY, stream_seq bigint NOT NULL, subject text NOT NULL,"
    "  position text, processed_at timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE IF NOT EXISTS consumer_example.effects ("
    "  id bigserial PRIMARY KEY, event_id uuid NOT NULL, type text NOT NULL);"
    "CREATE TABLE IF NOT EXISTS consumer_example.type_counts ("
    "  type text PRIMARY KEY, n bigint NOT NULL);"
    "CREATE TABLE IF NOT EXISTS consumer_example.dead_letters ("
    "  stream_seq bigint PRIMARY KEY, event_id uuid, subject text, deliveries bigint,"
    "  reason text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE IF NOT EXISTS consumer_example.swept ("
    "  durable text PRIMARY KEY, upto bigint NOT NULL);"
    "COMMIT;";

/* Connects (again) to the service's database until it answers or the
 * process is told to stop; true when connected. */
static bool
store_connect(consumer *c)
{
    for (long wait = 100; !stopping; wait = wait < 2000 ? wait * 2 : 2000) {
        if (c->pg == NULL)
            c->pg = PQconnectdb(c->cfg.conninfo);
        else
            PQreset(c->pg);
        if (PQstatus(c->pg) == CONNECTION_OK)
            return true;
        say("could not connect to the service's database: %s", PQerrorMessage(c->pg));
        sleep_ms(wait);
    }
    return false;
}

/* Whether the last failure was the connection's (not the statement's). */
static bool
store_lost(consumer *c)
{
    return PQstatus(c->pg) != CONNECTION_OK;
}

/* The type of an event: the last token of its subject <prefix>.<category>.<type>. */
static const char *
type_of(const char *subject)
{
    const char *dot = strrchr(subject, '.');
    return dot ? dot + 1 : subject;
}

/* The handler's own judgement of an event: here it refuses the types
 * named in CONSUMER_FAIL_TYPES and applies every other. */
static bool
can_apply(const consumer *c, const char *type)
{
    const char *p = c->cfg.fail_types;
    size_t n = strlen(type);

    while (p && *p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, type, n) == 0)
            return false;
        p = end ? end + 1 : NULL;
    }
    return true;
}

/* Runs a statement with text parameters; its result, or NULL (after a
 * ROLLBACK) when it failed. */
static PGresult *
run(consumer *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(c->pg, sql, n, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK)
        return r;
    if (!store_lost(c))
        say("statement failed: %s", PQerrorMessage(c->pg));
    PQclear(r);
    if (!store_lost(c))
        PQclear(PQexec(c->pg, "ROLLBACK"));
    return NULL;
}

/*
 * Applies one event in one transaction: the inbox row (skipped when the
 * event is there already: a redelivery), then the effect.  Nothing is
 * acked here; see the diagram at the top.
 */
static outcome
apply(consumer *c, natsMsg *m, uint64_t seq)
{
    const char *id = NULL, *pos = NULL, *subject = natsMsg_GetSubject(m);
    const char *type = type_of(subject);
    char seqtext[24];
    PGresult *r;
    bool fresh;

    (void)natsMsgHeader_Get(m, "Nats-Msg-Id", &id);
    (void)natsMsgHeader_Get(m, "Es-Position", &pos);
    snprintf(seqtext, sizeof seqtext, "%" PRIu64, seq);
    if (id == NULL) {
        say("message %s of %s has no Nats-Msg-Id: refusing it", seqtext, c->cfg.stream);
        return REFUSED;
    }
    if ((r = run(c, "BEGIN", 0, NULL)) == NULL)
        return store_lost(c) ? STORE_DOWN : REFUSED;
    PQclear(r);
    {
        const char *p[] = {id, seqtext, subject, pos};
        r = run(c, "INSERT INTO consumer_example.inbox (event_id, stream_seq, subject, position) "
                   "VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING", 4, p);
    }
    if (r == NULL)
        return store_lost(c) ? STORE_DOWN : REFUSED;
    fresh = strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    if (!fresh) {
        c->duplicates++;
        if ((r = run(c, "ROLLBACK", 0, NULL)) == NULL)
            return STORE_DOWN;
        PQclear(r);
        return DONE;
    }
    if (!can_apply(c, type)) {
        PQclear(PQexec(c->pg, "ROLLBACK"));
        return store_lost(c) ? STORE_DOWN : REFUSED;
    }
    {
        const char *p[] = {id, type};
        r = run(c, "WITH e AS (INSERT INTO consumer_example.effects (event_id, type) "
                   "VALUES ($1, $2)) INSERT INTO consumer_example.type_counts AS t VALUES ($2, 1) "
                   "ON CONFLICT (type) DO UPDATE SET n = t.n + 1", 2, p);
    }
    if (r == NULL)
        return store_lost(c) ? STORE_DOWN : REFUSED;
    PQclear(r);
    if ((r = run(c, "COMMIT", 0, NULL)) == NULL)
        return STORE_DOWN;      /* unknown whether it committed: the inbox will say */
    PQclear(r);
    c->processed++;
    return DONE;
}

/* Handles one delivered message and then acks or naks it. */
static void
handle(consumer *c, natsMsg *m)
{
    jsMsgMetaData *meta = NULL;
    uint64_t seq = 0, delivered = 1;
    outcome o;

    if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
        seq = meta->Sequence.Stream;
        delivered = meta->NumDelivered;
        jsMsgMetaData_Destroy(meta);
    }
    while ((o = apply(c, m, seq)) == STORE_DOWN && !stopping) {
        /* keep the message ours while the database is away */
        (void)natsMsg_InProgress(m, NULL);
        if (!store_connect(c))
            break;
    }
    if (o == DONE && c->cfg.crash_after > 0 && c->processed == c->cfg.crash_after) {
        say("crashing between the commit and the ack of message %" PRIu64
            " (CONSUMER_CRASH_AFTER_COMMIT)", seq);
        raise(SIGKILL);
    }
    if (o == DONE) {
        (void)natsMsg_Ack(m, NULL);
    } else if (o == REFUSED) {
        c->refused++;
        say("could not apply message %" PRIu64 " (%s), delivery %" PRIu64 " of %ld",
            seq, natsMsg_GetSubject(m), delivered, (long)c->max_deliver);
        (void)natsMsg_NakWithDelay(m, c->cfg.nak_delay_ms * (int64_t)delivered, NULL);   /* ms */
    }
    /* STORE_DOWN while stopping: neither; the server redelivers it after
     * the ack wait */
}

/* ---- what the server gave up on ----------------------------------------- */

/* Records the event at stream sequence seq as a dead letter, unless the
 * inbox has it (it was applied after all) or it is recorded already.
 * deliveries is 0 when unknown.  False when the store failed. */
static bool
record_dead_letter(consumer *c, uint64_t seq, uint64_t deliveries, const char *reason)
{
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    const char *id = NULL, *subject = NULL;
    char seqtext[24], deltext[24];
    PGresult *r;
    bool ok;

    if (js_GetMsg(&m, c->js, c->cfg.stream, seq, NULL, &jerr) == NATS_OK) {
        (void)natsMsgHeader_Get(m, "Nats-Msg-Id", &id);
        subject = natsMsg_GetSubject(m);
    }
    snprintf(seqtext, sizeof seqtext, "%" PRIu64, seq);
    snprintf(deltext, sizeof deltext, "%" PRIu64, deliveries);
    {
        const char *p[] = {seqtext, id, subject, deliveries ? deltext : NULL, reason};
        r = PQexecParams(c->pg,
                         "INSERT INTO consumer_example.dead_letters "
                         "(stream_seq, event_id, subject, deliveries, reason) "
                         "SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT FROM "
                         "consumer_example.inbox WHERE event_id = $2::uuid OR stream_seq = $1) "
                         "ON CONFLICT (stream_seq) DO NOTHING",
                         5, NULL, p, NULL, NULL, 0);
    }
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        say("could not record dead letter %s: %s", seqtext, PQerrorMessage(c->pg));
    else if (strcmp(PQcmdTuples(r), "1") == 0) {
        c->dead++;
        say("dead letter: message %s (%s, event %s), %s deliveries: %s", seqtext,
            subject ? subject : "gone from the stream", id ? id : "unknown",
            deliveries ? deltext : "unknown", reason);
    }
    PQclear(r);
    natsMsg_Destroy(m);
    return ok;
}

/* Takes every advisory waiting: one per event the server stopped
 * delivering because it reached the delivery limit. */
static void
drain_advisories(consumer *c)
{
    natsMsg *m = NULL;

    while (c->adv && natsSubscription_NextMsg(&m, c->adv, 0) == NATS_OK) {
        json_t *j = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
        json_int_t seq = json_integer_value(json_object_get(j, "stream_seq"));
        json_int_t n = json_integer_value(json_object_get(j, "deliveries"));

        if (seq > 0)
            (void)record_dead_letter(c, (uint64_t)seq, n > 0 ? (uint64_t)n : 0,
                                     "max_deliveries");
        json_decref(j);
        natsMsg_Destroy(m);
        m = NULL;
    }
}

/*
 * Advisories are plain NATS messages: one sent while no member listened
 * is lost.  Every sequence the server has settled was either acked (so
 * its event is in the inbox: we ack only after the commit) or given up;
 * so a settled sequence with neither an inbox row nor a dead letter was
 * given up unheard, and is recorded now.  Settled: at or below the ack
 * floor, or, when nothing awaits an ack, everything delivered (NATS 2.9
 * leaves the ack floor below a message it gave up, so the second case is
 * what moves past one).  The sweep remembers how far it went (swept.upto)
 * so each sequence is looked at once.  It holds only for a consumer of
 * every subject of the stream (c->sweep): with a narrower filter, the
 * sequences of other subjects are never delivered to it.
 */
static void
sweep_given_up(consumer *c)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    uint64_t floor, from = 0;
    char ftext[24];
    PGresult *r;

    if (!c->sweep ||
        js_GetConsumerInfo(&ci, c->js, c->cfg.stream, c->cfg.durable, NULL, &jerr) != NATS_OK)
        return;
    floor = ci->AckFloor.Stream;
    if (ci->NumAckPending == 0 && ci->Delivered.Stream > floor)
        floor = ci->Delivered.Stream;
    jsConsumerInfo_Destroy(ci);
    {
        const char *p[] = {c->cfg.durable};
        r = PQexecParams(c->pg, "SELECT upto FROM consumer_example.swept WHERE durable = $1", 1,
                         NULL, p, NULL, NULL, 0);
    }
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        from = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (floor <= from)
        return;
    snprintf(ftext, sizeof ftext, "%" PRIu64, floor);
    {
        char fromtext[24];
        const char *p[] = {fromtext, ftext};
        snprintf(fromtext, sizeof fromtext, "%" PRIu64, from + 1);
        r = PQexecParams(c->pg,
                         "SELECT s FROM generate_series($1::bigint, $2::bigint) s WHERE NOT EXISTS "
                         "(SELECT FROM consumer_example.inbox WHERE stream_seq = s) AND NOT EXISTS "
                         "(SELECT FROM consumer_example.dead_letters WHERE stream_seq = s)",
                         2, NULL, p, NULL, NULL, 0);
    }
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return;
    }
    for (int i = 0; i < PQntuples(r); i++)
        if (!record_dead_letter(c, strtoull(PQgetvalue(r, i, 0), NULL, 10), 0,
                                "given_up_unheard")) {
            PQclear(r);
            return;
        }
    PQclear(r);
    {
        const char *p[] = {c->cfg.durable, ftext};
        r = PQexecParams(c->pg, "INSERT INTO consumer_example.swept VALUES ($1, $2) "
                                "ON CONFLICT (durable) DO UPDATE SET upto = "
                                "greatest(consumer_example.swept.upto, excluded.upto)",
                         2, NULL, p, NULL, NULL, 0);
    }
    PQclear(r);
}

/* ---- NATS ------------------------------------------------------------------ */

/* (Re)makes the pull subscription, bound to the durable consumer the
 * operator made; learns its delivery limit and whether it takes the whole
 * stream (the sweep's condition).  True on success. */
static bool
subscribe(consumer *c)
{
    jsConsumerInfo *ci = NULL;
    jsStreamInfo *si = NULL;
    jsSubOptions so;
    jsErrCode jerr = 0;
    const char *filter, *subject;
    bool ok = false;

    natsSubscription_Destroy(c->sub);
    c->sub = NULL;
    if (js_GetConsumerInfo(&ci, c->js, c->cfg.stream, c->cfg.durable, NULL, &jerr) != NATS_OK ||
        js_GetStreamInfo(&si, c->js, c->cfg.stream, NULL, &jerr) != NATS_OK) {
        say("no consumer %s of stream %s to pull from (%s, JetStream error %d); an operator "
            "makes it: esctl consumer add %s", c->cfg.durable, c->cfg.stream,
            nats_GetLastError(NULL), (int)jerr, c->cfg.durable);
        goto done;
    }
    filter = ci->Config->FilterSubject;
    subject = filter && filter[0] ? filter : si->Config->Subjects[0];
    c->max_deliver = ci->Config->MaxDeliver;
    c->sweep = si->Config->SubjectsLen == 1 && strcmp(subject, si->Config->Subjects[0]) == 0;
    jsSubOptions_Init(&so);
    so.Stream = c->cfg.stream;
    so.Consumer = c->cfg.durable;       /* bind only: never make one */
    if (js_PullSubscribe(&c->sub, c->js, subject, c->cfg.durable, NULL, &so, &jerr) != NATS_OK) {
        say("could not pull from consumer %s of stream %s: %s (JetStream error %d)",
            c->cfg.durable, c->cfg.stream, nats_GetLastError(NULL), (int)jerr);
        c->sub = NULL;
        goto done;
    }
    say("pulling from consumer %s of stream %s (%s), at most %ld deliveries per event%s",
        c->cfg.durable, c->cfg.stream, subject, (long)c->max_deliver,
        c->sweep ? "" : "; no sweep: it takes part of the stream");
    ok = true;
done:
    jsConsumerInfo_Destroy(ci);
    jsStreamInfo_Destroy(si);
    return ok;
}

static bool
nats_connect(consumer *c)
{
    natsOptions *o = NULL;
    natsStatus s;

    if (natsOptions_Create(&o) != NATS_OK || natsOptions_SetURL(o, c->cfg.nats_url) != NATS_OK ||
        natsOptions_SetName(o, "consumer-example") != NATS_OK ||
        natsOptions_SetMaxReconnect(o, -1) != NATS_OK ||
        natsOptions_SetReconnectWait(o, 250) != NATS_OK ||
        natsOptions_SetRetryOnFailedConnect(o, true, NULL, NULL) != NATS_OK ||
        (c->cfg.inbox_prefix && natsOptions_SetCustomInboxPrefix(o, c->cfg.inbox_prefix) != NATS_OK)) {
        natsOptions_Destroy(o);
        say("could not set up the NATS options");
        return false;
    }
    s = natsConnection_Connect(&c->nc, o);
    natsOptions_Destroy(o);
    if ((s != NATS_OK && s != NATS_NOT_YET_CONNECTED) ||
        natsConnection_JetStream(&c->js, c->nc, NULL) != NATS_OK) {
        say("could not connect to NATS: %s", natsStatus_GetText(s));
        return false;
    }
    snprintf(c->adv_subject, sizeof c->adv_subject,
             "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", c->cfg.stream, c->cfg.durable);
    if (natsConnection_SubscribeSync(&c->adv, c->nc, c->adv_subject) != NATS_OK) {
        say("could not subscribe to %s", c->adv_subject);
        return false;
    }
    return true;
}

/* ---- main ------------------------------------------------------------------ */

static void
settings_read(settings *s)
{
    s->nats_url = env_or("ES_NATS_URL", "nats://127.0.0.1:14222");
    s->inbox_prefix = env_or("ES_NATS_INBOX_PREFIX", NULL);
    s->conninfo = env_or("CONSUMER_PG_CONNINFO", NULL);
    s->stream = env_or("CONSUMER_STREAM", "EVENTS");
    s->durable = env_or("CONSUMER_DURABLE", "example");
    s->fail_types = env_or("CONSUMER_FAIL_TYPES", NULL);
    s->nak_delay_ms = env_long("CONSUMER_NAK_DELAY_MS", 200, 0, 600000);
    s->batch = env_long("CONSUMER_BATCH", 64, 1, 1000);
    s->crash_after = env_long("CONSUMER_CRASH_AFTER_COMMIT", 0, 0, 1000000000);
    if (s->conninfo == NULL) {
        say("CONSUMER_PG_CONNINFO must name the service's own database");
        exit(2);
    }
    if (strpbrk(s->durable, ".*> \t") != NULL) {
        say("CONSUMER_DURABLE \"%s\" is not a durable name (no dot, wildcard or space)",
            s->durable);
        exit(2);
    }
}

int
main(void)
{
    consumer c = {0};
    struct sigaction sa = {0};
    time_t swept = 0;
    int failures = 0, rc = 1;

    settings_read(&c.cfg);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    if (!store_connect(&c) || !exec_ok(c.pg, schema_sql) || !nats_connect(&c))
        goto done;
    while (!stopping && !subscribe(&c))
        sleep_ms(2000);

    while (!stopping) {
        natsMsgList list = {0};
        jsErrCode jerr = 0;
        natsStatus s;

        drain_advisories(&c);
        if (time(NULL) - swept >= 5) {
            sweep_given_up(&c);
            swept = time(NULL);
        }
        if (c.sub == NULL && !subscribe(&c)) {
            sleep_ms(500);
            continue;
        }
        s = natsSubscription_Fetch(&list, c.sub, (int)c.cfg.batch, 1000, &jerr);
        if (s == NATS_OK) {
            failures = 0;
            for (int i = 0; i < list.Count && !stopping; i++)
                handle(&c, list.Msgs[i]);
        } else if (s != NATS_TIMEOUT) {
            /* NATS away (it reconnects by itself), or the consumer gone
             * with its stream (the relay makes a damaged stream anew, and
             * the operator the consumer): after a few failures in a row,
             * bind again */
            if (++failures % 10 == 0) {
                say("could not fetch (%s, JetStream error %d): binding again",
                    natsStatus_GetText(s), (int)jerr);
                natsSubscription_Destroy(c.sub);
                c.sub = NULL;
            }
            sleep_ms(200);
        }
        natsMsgList_Destroy(&list);
    }
    drain_advisories(&c);
    rc = 0;
done:
    say("stopping: %ld applied, %ld duplicates skipped, %ld refusals, %ld dead letters",
        c.processed, c.duplicates, c.refused, c.dead);
    natsSubscription_Destroy(c.sub);
    natsSubscription_Destroy(c.adv);
    jsCtx_Destroy(c.js);
    natsConnection_Destroy(c.nc);
    PQfinish(c.pg);
    nats_Close();
    return rc;
}
