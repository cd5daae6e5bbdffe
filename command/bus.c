/*
 * The commands over NATS request/reply: subject cmd.<context>.<action>,
 * a JSON body that carries "command_id" with the command's arguments, and
 * a JSON reply {"ok", "status", "result" | "error"} where status is the
 * HTTP status the same outcome has over HTTP (so a caller tells a refusal,
 * 4xx, from a failure worth retrying, 503).  This is how the saga manager
 * drives the contexts; a repeated command id answers the first outcome.
 *
 * Each served context gets a few queue subscriptions (group "command"),
 * each delivered on its own thread, so commands of one context run
 * concurrently and several command processes share the load.
 *
 * Those threads share the store sessions rather than owning one each: a
 * command borrows an idle session and gives it back, so the sessions
 * opened follow the commands in flight, not the threads that ever got
 * one, and a few are opened at start (ES_NATS_SESSIONS_WARM), so the
 * first burst of commands does not wait for dozens of PostgreSQL
 * sessions to be opened at once (docs/ARCHITECTURE.md, "Cold start").
 */
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "codec.h"
#include "contexts.h"
#include "env.h"
#include "feed.h"
#include "log.h"
#include "token.h"

#define COMMAND_ID_MAX 200
#define SUBS_MAX 256
#define WARM_MAX 64

struct bus {
    app *a;
    char wake_subject[64];
    natsConnection *wake_nc;    /* lives until bus_free: the committer wakes
                                   the relay through it while it drains */
    natsConnection *nc;
    natsSubscription *subs[SUBS_MAX];
    int nsubs;
    atomic_int inflight;        /* commands being handled */
    atomic_bool stopping;       /* handle nothing more (NATS down at stop) */
    atomic_ullong refused_replies;  /* requests dropped for their reply subject */
    /* the sessions lent to commands: idle ones on a stack (the most
     * recently used first, so a quiet period reuses few); at most one
     * per subscription thread, so a command never waits for one */
    pthread_mutex_t pool_mu;
    cmd_env *idle[SUBS_MAX + WARM_MAX];
    int nidle;
    atomic_int made;            /* sessions made for commands, idle or lent */
    int warm;                   /* sessions opened at start */
    pthread_t warmer;
    bool warming;               /* warmer started (joined at stop) */
    atomic_bool closing;        /* bus_stop began: warm no more */
};

/* An idle session, or a new one (opened on first use) when all are lent. */
static cmd_env *
env_take(bus *b, es_error *err)
{
    cmd_env *env = NULL;

    pthread_mutex_lock(&b->pool_mu);
    if (b->nidle > 0)
        env = b->idle[--b->nidle];
    pthread_mutex_unlock(&b->pool_mu);
    if (env == NULL && (env = app_env_new(b->a, err)) != NULL)
        atomic_fetch_add(&b->made, 1);
    return env;
}

static void
env_give(bus *b, cmd_env *env)
{
    pthread_mutex_lock(&b->pool_mu);
    /* there are never more sessions than subscription threads, plus the
     * warm ones; a surplus stays registered with the app and closed
     * there at stop */
    if (b->nidle < SUBS_MAX + WARM_MAX)
        b->idle[b->nidle++] = env;
    pthread_mutex_unlock(&b->pool_mu);
}

/* Opens the warm sessions one after another, beside the first commands:
 * a session that cannot connect now (PostgreSQL down) is kept and
 * connects when a command uses it. */
static void *
warm_sessions(void *arg)
{
    bus *b = arg;

    for (int i = 0; i < b->warm && !atomic_load(&b->closing); i++) {
        es_error err;
        cmd_env *env = app_env_new(b->a, &err);

        if (env == NULL)
            break;
        atomic_fetch_add(&b->made, 1);
        (void)es_store_ping(env->store, 2000, &err);
        env_give(b, env);
    }
    return NULL;
}

static void
reply(natsConnection *nc, natsMsg *msg, json_t *body)
{
    const char *to = natsMsg_GetReply(msg);
    char *text;

    if (to == NULL || to[0] == '\0') {
        json_decref(body);
        return;
    }
    if (body == NULL || (text = json_dumps(body, JSON_COMPACT)) == NULL) {
        /* never leave a caller waiting: a fixed answer if encoding failed */
        static const char fallback[] = "{\"ok\":false,\"status\":500,\"error\":{\"code\":"
                                       "\"internal\",\"message\":\"could not encode the reply\"}}";
        natsConnection_Publish(nc, to, fallback, (int)sizeof fallback - 1);
    } else {
        natsConnection_Publish(nc, to, text, (int)strlen(text));
        free(text);
    }
    json_decref(body);
}

/* Whether a request's reply subject is an inbox ("_INBOX.", where NATS
 * clients' requests get their answers) or absent (no answer wanted). */
static bool
reply_subject_ok(const char *to)
{
    return to == NULL || to[0] == '\0' || strncmp(to, "_INBOX.", 7) == 0;
}

static json_t *
error_body(const es_error *err)
{
    return json_pack("{s:b, s:i, s:o}", "ok", 0, "status", es_http_status(err->status), "error",
                     es_error_to_json(err));
}

static void
on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    bus *b = closure;
    const char *subject = natsMsg_GetSubject(msg), *name, *command_id, *principal = NULL;
    const char *traceparent = NULL;
    const cmd_def *def;
    es_trace trace;
    json_t *args = NULL;
    cmd_env *env;
    cmd_out out;
    es_error err;

    (void)sub;
    atomic_fetch_add(&b->inflight, 1);
    if (atomic_load(&b->stopping)) {
        /* Stopping with NATS down: the requester times out and retries. */
        natsMsg_Destroy(msg);
        atomic_fetch_sub(&b->inflight, 1);
        return;
    }
    cmd_out_init(&out);
    es_error_clear(&err);
    if (!reply_subject_ok(natsMsg_GetReply(msg))) {
        /* A reply is a publish under this service's identity: one to the
         * events subjects or to JetStream's API ($JS.API...) would let a
         * requester write there through us.  Nothing is done, and there is
         * no one to tell. */
        atomic_fetch_add(&b->refused_replies, 1);
        goto done;
    }
    {
        size_t n = strlen(b->a->subject_prefix);
        name = strncmp(subject, b->a->subject_prefix, n) == 0 && subject[n] == '.' ? subject + n + 1
                                                                                : subject;
    }
    if ((def = cmd_find(name)) == NULL || !app_serves(b->a, name)) {
        es_error_set(&err, ES_ENOTFOUND, "command_not_found", NULL, "no command %s", subject);
        goto fail;
    }
    if (es_json_parse_object(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg), &args,
                             &err) != ES_OK ||
        dec_string(args, "command_id", true, COMMAND_ID_MAX, &command_id, &err) != ES_OK)
        goto fail;
    if ((env = env_take(b, &err)) == NULL)
        goto fail;
    /* Who sent it: the Es-Principal header (es-saga sets its own name).
     * Only es-saga's NATS user may publish to cmd.> (docs/OPERATIONS.md),
     * so the header is as trustworthy as that permission. */
    if (natsMsgHeader_Get(msg, "Es-Principal", &principal) != NATS_OK ||
        !es_token_name_valid(principal))
        principal = "nats";
    env->principal = principal;
    /* Its trace: the traceparent header (es-saga sends its saga's),
     * continued as over HTTP; a malformed or missing one starts a trace. */
    if (natsMsgHeader_Get(msg, ES_TRACEPARENT_HEADER, &traceparent) != NATS_OK)
        traceparent = NULL;
    es_trace_begin(&trace, traceparent);
    env->trace = &trace;
    def->fn(env, command_id, false, args, &out);
    env->principal = NULL;
    env->trace = NULL;
    env_give(b, env);
    app_count(b->a, &out);
    if (es_log_enabled(ES_LOG_DEBUG))
        es_log_trace(ES_LOG_DEBUG, trace.trace_id, "command %s (%s) over NATS: %s", name,
                     command_id, out.status == ES_OK ? "done" : out.err.message);
    if (out.status != ES_OK) {
        err = out.err;
        goto fail;
    }
    reply(nc, msg, json_pack("{s:b, s:i, s:O}", "ok", 1, "status",
                             out.http_status ? out.http_status : 200, "result", out.body));
    goto done;
fail:
    reply(nc, msg, error_body(&err));
done:
    cmd_out_free(&out);
    json_decref(args);
    natsMsg_Destroy(msg);
    atomic_fetch_sub(&b->inflight, 1);
}

es_status
bus_start(bus **out, app *a, const char *url, int subs_per_context, es_error *err)
{
    natsOptions *opts = NULL;
    bus *b;
    natsStatus s;
    char seen[32][32];
    int nseen = 0;

    *out = NULL;
    if ((b = calloc(1, sizeof *b)) == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    b->a = a;
    pthread_mutex_init(&b->pool_mu, NULL);
    b->warm = (int)es_env_long("es-command", "ES_NATS_SESSIONS_WARM", 16, 0, WARM_MAX);
    snprintf(b->wake_subject, sizeof b->wake_subject, "%s",
             getenv("ES_RELAY_WAKE_SUBJECT") && getenv("ES_RELAY_WAKE_SUBJECT")[0]
                 ? getenv("ES_RELAY_WAKE_SUBJECT") : "es.wake");
    if (es_nats_options_create(&opts, url, "es-command", err) != ES_OK) {
        free(b);
        return err->status;
    }
    s = natsConnection_Connect(&b->nc, opts);
    if (s == NATS_NOT_YET_CONNECTED)
        s = NATS_OK;        /* connects in the background */
    if (s == NATS_OK) {
        /* A wake goes out at once, not after the library's writer thread
         * waited 1 ms for more to send with it: that wait was a fixed
         * part of every event's way to the read models (visibility). */
        s = natsOptions_SetSendAsap(opts, true);
        if (s == NATS_OK)
            s = natsConnection_Connect(&b->wake_nc, opts);
        if (s == NATS_NOT_YET_CONNECTED)
            s = NATS_OK;
    }
    natsOptions_Destroy(opts);
    for (const cmd_def *d = cmd_table; s == NATS_OK && d->name; d++) {
        char subject[128], context[32];
        size_t n = strcspn(d->name, ".");
        int i;

        snprintf(context, sizeof context, "%.*s", (int)n, d->name);
        for (i = 0; i < nseen && strcmp(seen[i], context) != 0; i++)
            ;
        if (i < nseen || !app_serves(a, d->name))
            continue;
        snprintf(seen[nseen++], sizeof seen[0], "%s", context);
        snprintf(subject, sizeof subject, "%s.%s.*", a->subject_prefix, context);
        for (int k = 0; k < subs_per_context && s == NATS_OK && b->nsubs < SUBS_MAX; k++)
            s = natsConnection_QueueSubscribe(&b->subs[b->nsubs++], b->nc, subject, "command",
                                              on_msg, b);
    }
    if (s != NATS_OK) {
        char shown[256];

        es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                     "could not subscribe to commands at %s: %s",
                     es_url_redact(url, shown, sizeof shown), natsStatus_GetText(s));
        bus_stop(b);
        bus_free(b);
        return ES_EUNAVAILABLE;
    }
    b->warming = b->warm > 0 && pthread_create(&b->warmer, NULL, warm_sessions, b) == 0;
    *out = b;
    return ES_OK;
}

void
bus_stop(bus *b)
{
    if (b == NULL)
        return;
    atomic_store(&b->closing, true);
    if (b->warming) {
        pthread_join(b->warmer, NULL);
        b->warming = false;
    }
    if (es_nats_up(b->nc)) {
        /* Drain: no new command is delivered, and the ones being handled
         * finish before the committer and the environments go away. */
        for (int i = 0; i < b->nsubs; i++)
            if (b->subs[i] != NULL)
                natsSubscription_Drain(b->subs[i]);
        for (int i = 0; i < b->nsubs; i++)
            if (b->subs[i] != NULL)
                natsSubscription_WaitForDrainCompletion(b->subs[i], 10000);
    } else {
        /* A drain needs the server and would wait for its timeout: stop
         * the deliveries, then wait for the commands being handled. */
        atomic_store(&b->stopping, true);
        for (int i = 0; i < b->nsubs; i++)
            if (b->subs[i] != NULL)
                natsSubscription_Unsubscribe(b->subs[i]);
        for (int ms = 0; atomic_load(&b->inflight) > 0 && ms < 10000; ms += 10)
            usleep(10 * 1000);
    }
    for (int i = 0; i < b->nsubs; i++)
        if (b->subs[i] != NULL)
            natsSubscription_Destroy(b->subs[i]);
    if (b->nc != NULL) {
        natsConnection_Close(b->nc);
        natsConnection_Destroy(b->nc);
        b->nc = NULL;
    }
    b->nsubs = 0;
}

void
bus_free(bus *b)
{
    if (b == NULL)
        return;
    if (b->wake_nc != NULL) {
        natsConnection_Close(b->wake_nc);
        natsConnection_Destroy(b->wake_nc);
    }
    pthread_mutex_destroy(&b->pool_mu);
    free(b);
}

void
bus_wake(void *ctx)
{
    bus *b = ctx;

    /* No reply: a lost wake costs the relay one poll interval.  Sent at
     * once (the connection's SendAsap), one small write per commit. */
    if (es_nats_up(b->wake_nc))
        natsConnection_Publish(b->wake_nc, b->wake_subject, "", 0);
}

void
bus_sessions(bus *b, int *idle, int *lent)
{
    *idle = *lent = 0;
    if (b == NULL)
        return;
    pthread_mutex_lock(&b->pool_mu);
    *idle = b->nidle;
    *lent = atomic_load(&b->made) - b->nidle;
    pthread_mutex_unlock(&b->pool_mu);
}

unsigned long long
bus_refused_replies(bus *b)
{
    return b == NULL ? 0 : atomic_load(&b->refused_replies);
}

bool
bus_connected(const bus *b)
{
    return es_nats_up(b->nc);
}
