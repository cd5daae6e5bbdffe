/*
 * Reading the events stream: the JetStream stream es-relay fills (message
 * n = the feed's n-th event), consumed from a given sequence with an
 * ordered push consumer (es-saga, esctl) or a pull consumer whose batches
 * the reader asks for (es-projector: memory bounded by the batch), and
 * each message decoded into an event with its feed sequence.
 */
#include "feed.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "env.h"
#include "log.h"

static const char *
env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

/* ---- decoding --------------------------------------------------------- */

static es_status
bad(es_error *err, const char *field, const char *why)
{
    return es_error_set(err, ES_EINVALID, "event_invalid", field, "%s %s", field, why);
}

static es_status
finish(es_feed_event *out, es_error *err)
{
    json_t *r = out->root_;
    const char *dash;

    out->stream = json_string_value(json_object_get(r, "stream"));
    out->type = json_string_value(json_object_get(r, "type"));
    out->event_id = json_string_value(json_object_get(r, "event_id"));
    out->recorded_at = json_string_value(json_object_get(r, "recorded_at"));
    out->data = json_object_get(r, "data");
    if (out->stream == NULL)
        return bad(err, "stream", "is missing or not a string");
    if (out->type == NULL)
        return bad(err, "type", "is missing or not a string");
    if (out->event_id == NULL)
        return bad(err, "event_id", "is missing or not a string");
    if (out->recorded_at == NULL)
        return bad(err, "recorded_at", "is missing or not a string");
    if (!json_is_object(out->data))
        return bad(err, "data", "is missing or not an object");
    dash = strchr(out->stream, '-');
    out->category_end = dash;
    out->trace_id = json_string_value(json_object_get(json_object_get(r, "metadata"),
                                                      "trace_id"));
    return ES_OK;
}

es_status
es_feed_event_decode(const char *body, size_t len, uint64_t seq, es_feed_event *out, es_error *err)
{
    json_t *pos;
    es_position p;
    es_status st;

    memset(out, 0, sizeof *out);
    out->seq = seq;
    st = es_json_parse_object(body, len, &out->root_, err);
    if (st != ES_OK)
        return st;
    pos = json_object_get(out->root_, "position");
    if (!json_is_string(pos) || !es_position_parse(json_string_value(pos), &p))
        return bad(err, "position", "is missing or not a position");
    es_position_format(p, out->position);
    return finish(out, err);
}

es_status
es_feed_event_from_store(const es_event *e, uint64_t seq, es_feed_event *out, es_error *err)
{
    json_t *data = NULL;
    es_status st;

    memset(out, 0, sizeof *out);
    out->seq = seq;
    es_position_format(e->position, out->position);
    st = es_json_parse_object(e->data, strlen(e->data), &data, err);
    if (st != ES_OK)
        return st;
    /* The strings stay e's (a rebuild's hot path copies nothing it need
     * not): out lives no longer than the page e belongs to. */
    out->root_ = data;
    out->data = data;
    out->stream = e->stream_id;
    out->type = e->type;
    out->event_id = e->event_id;
    out->recorded_at = e->recorded_at;
    out->category_end = strchr(e->stream_id, '-');
    return ES_OK;
}

const json_t *
es_feed_event_json(const es_feed_event *e)
{
    return e->root_;
}

void
es_feed_event_free(es_feed_event *e)
{
    json_decref(e->root_);
    free(e->arena_);
    memset(e, 0, sizeof *e);
}

es_feed_kind
es_feed_get(const es_feed_event *e, const char *name, es_feed_value *out)
{
    const json_t *v;
    size_t i;

    memset(out, 0, sizeof *out);
    if (e->data == NULL) {
        for (i = 0; i < e->nfields_; i++)
            if (strcmp(e->fields_[i].key, name) == 0) {
                *out = e->fields_[i].v;
                break;
            }
        return out->kind;
    }
    if ((v = json_object_get(e->data, name)) == NULL)
        return out->kind;
    out->tree = v;
    switch (json_typeof(v)) {
    case JSON_OBJECT: out->kind = ES_FEED_OBJECT; break;
    case JSON_ARRAY: out->kind = ES_FEED_ARRAY; break;
    case JSON_STRING:
        out->kind = ES_FEED_STRING;
        out->str = json_string_value(v);
        out->len = json_string_length(v);
        break;
    case JSON_INTEGER:
        out->kind = ES_FEED_INTEGER;
        out->num = (long long)json_integer_value(v);
        break;
    case JSON_REAL: out->kind = ES_FEED_REAL; break;
    case JSON_TRUE: out->kind = ES_FEED_TRUE; break;
    case JSON_FALSE: out->kind = ES_FEED_FALSE; break;
    case JSON_NULL: out->kind = ES_FEED_NULL; break;
    }
    return out->kind;
}

bool
es_feed_value_json(const es_feed_value *v, es_buf *out)
{
    char *text;

    if (v->json != NULL) {
        es_buf_puts(out, v->json);
        return !es_buf_failed(out);
    }
    text = json_dumps(v->tree, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    if (text == NULL)
        return false;
    es_buf_puts(out, text);
    free(text);
    return !es_buf_failed(out);
}

/* ---- the stream --------------------------------------------------------- */

void
es_nats_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
}

bool
es_nats_up(natsConnection *nc)
{
    return nc != NULL && natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED;
}

/* The server nc is connected to, as host:port (no credentials). */
static void
nats_where(natsConnection *nc, char *out, size_t size)
{
    char url[256] = "";
    const char *host;

    out[0] = '\0';
    if (natsConnection_GetConnectedUrl(nc, url, sizeof url) != NATS_OK || url[0] == '\0')
        return;
    if ((host = strrchr(url, '@')) != NULL)
        host++;
    else if ((host = strstr(url, "://")) != NULL)
        host += 3;
    else
        host = url;
    snprintf(out, size, "%s", host);
}

/* Said in the log, so that an operator sees when and where a daemon's
 * bus went and came back (its /readyz says only whether it is up now). */
static void
nats_disconnected(natsConnection *nc, void *closure)
{
    (void)closure;
    if (natsConnection_IsClosed(nc))
        return;                 /* closed on purpose (a stop) */
    es_log(ES_LOG_WARNING, "NATS: connection lost; reconnecting");
}

static void
nats_reconnected(natsConnection *nc, void *closure)
{
    char where[160];

    (void)closure;
    nats_where(nc, where, sizeof where);
    es_log(ES_LOG_INFO, "NATS: reconnected to %s", where[0] ? where : "a server");
}

/* The TLS part of es_nats_options_create. */
static es_status
nats_tls(natsOptions *opts, es_error *err)
{
    const char *ca = getenv("ES_NATS_CA"), *cert = getenv("ES_NATS_CERT"),
               *key = getenv("ES_NATS_KEY");
    bool has_cert = cert != NULL && cert[0] != '\0', has_key = key != NULL && key[0] != '\0';

    if (ca == NULL || ca[0] == '\0') {
        if (has_cert || has_key)
            return es_error_set(err, ES_EINVALID, "tls_invalid", NULL,
                                "ES_NATS_CERT and ES_NATS_KEY need ES_NATS_CA");
        return ES_OK;
    }
    if (has_cert != has_key)
        return es_error_set(err, ES_EINVALID, "tls_invalid", NULL,
                            "a NATS client certificate needs both ES_NATS_CERT and ES_NATS_KEY");
    if (natsOptions_SetSecure(opts, true) != NATS_OK)
        return es_error_set(err, ES_EINVALID, "tls_invalid", NULL,
                            "could not ask for TLS to NATS: %s", nats_GetLastError(NULL));
    if (natsOptions_LoadCATrustedCertificates(opts, ca) != NATS_OK)
        return es_error_set(err, ES_EINVALID, "tls_invalid", NULL,
                            "could not load the NATS CA \"%s\": %s", ca, nats_GetLastError(NULL));
    if (has_cert && natsOptions_LoadCertificatesChain(opts, cert, key) != NATS_OK)
        return es_error_set(err, ES_EINVALID, "tls_invalid", NULL,
                            "could not load the NATS client certificate \"%s\" and key \"%s\": %s",
                            cert, key, nats_GetLastError(NULL));
    return ES_OK;
}

/*
 * Sets the server(s) of opts from url: one URL, or a comma-separated list
 * of them (a cluster; spaces around the commas are ignored), given to
 * natsOptions_SetServers so the client connects to any and fails over to
 * the others.  natsOptions_SetURL alone reads a list as one odd URL.
 */
static natsStatus
nats_servers(natsOptions *opts, const char *url)
{
    char *copy, *tok, *save = NULL;
    const char *list[64];
    int n = 0;
    natsStatus s;

    if (strchr(url, ',') == NULL)
        return natsOptions_SetURL(opts, url);
    if ((copy = strdup(url)) == NULL)
        return NATS_NO_MEMORY;
    for (tok = strtok_r(copy, ",", &save); tok && n < 64; tok = strtok_r(NULL, ",", &save)) {
        char *end;

        while (*tok == ' ')
            tok++;
        end = tok + strlen(tok);
        while (end > tok && end[-1] == ' ')
            *--end = '\0';
        if (*tok)
            list[n++] = tok;
    }
    s = n > 0 ? natsOptions_SetServers(opts, list, n) : NATS_INVALID_ARG;
    free(copy);
    return s;
}

es_status
es_nats_options_create(natsOptions **out, const char *url, const char *name, es_error *err)
{
    natsOptions *opts = NULL;
    es_status st = ES_OK;

    *out = NULL;
    if (natsOptions_Create(&opts) != NATS_OK || nats_servers(opts, url) != NATS_OK ||
        natsOptions_SetName(opts, name ? name : program_invocation_short_name) != NATS_OK ||
        natsOptions_SetMaxReconnect(opts, -1) != NATS_OK ||
        natsOptions_SetDisconnectedCB(opts, nats_disconnected, NULL) != NATS_OK ||
        natsOptions_SetReconnectedCB(opts, nats_reconnected, NULL) != NATS_OK ||
        natsOptions_SetRetryOnFailedConnect(opts, true, es_nats_connected, NULL) != NATS_OK ||
        /* a server that stops answering is noticed in about
         * interval * (max pings out + 1), not the library's 2+ minutes */
        natsOptions_SetTimeout(opts, es_env_long(NULL, "ES_NATS_CONNECT_TIMEOUT_MS", 2000, 1,
                                                 3600000)) != NATS_OK ||
        natsOptions_SetPingInterval(opts, es_env_long(NULL, "ES_NATS_PING_INTERVAL_MS", 5000, 100,
                                                      3600000)) != NATS_OK ||
        natsOptions_SetMaxPingsOut(opts, (int)es_env_long(NULL, "ES_NATS_MAX_PINGS_OUT", 2,
                                                          1, 100)) != NATS_OK) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not set up the NATS options for %s",
                          url);
        goto done;
    }
    if ((st = nats_tls(opts, err)) != ES_OK)
        goto done;
    *out = opts;
    opts = NULL;
done:
    natsOptions_Destroy(opts);
    return st;
}

/* The error of a request not made because NATS is not connected. */
static es_status
nats_down(const es_jetstream *n, es_error *err)
{
    return es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                        "NATS is not connected (stream %s)", n->stream);
}

es_status
es_jetstream_open(es_jetstream *n, es_error *err)
{
    natsOptions *opts = NULL;
    natsStatus s;

    memset(n, 0, sizeof *n);
    snprintf(n->stream, sizeof n->stream, "%s", env_or("ES_RELAY_STREAM", "EVENTS"));
    snprintf(n->subjects, sizeof n->subjects, "%s.>", env_or("ES_RELAY_SUBJECT_PREFIX", "es.events"));
    if (es_nats_options_create(&opts, es_nats_url(), NULL, err) != ES_OK)
        return err->status;
    /* A reader's connection sends only requests it then waits for (pull
     * requests, stream info): each goes out at once rather than after
     * the library's writer thread waited 1 ms for more, which the
     * projector paid on every fetch, up to twice per batch. */
    if (natsOptions_SetSendAsap(opts, true) != NATS_OK) {
        natsOptions_Destroy(opts);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "could not set up the NATS options");
    }
    s = natsConnection_Connect(&n->nc, opts);
    natsOptions_Destroy(opts);
    if ((s != NATS_OK && s != NATS_NOT_YET_CONNECTED) ||
        natsConnection_JetStream(&n->js, n->nc, NULL) != NATS_OK) {
        es_jetstream_close(n);
        return es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                            "could not connect to NATS: %s", natsStatus_GetText(s));
    }
    return ES_OK;
}

void
es_jetstream_close(es_jetstream *n)
{
    jsCtx_Destroy(n->js);
    if (n->nc) {
        natsConnection_Close(n->nc);
        natsConnection_Destroy(n->nc);
    }
    memset(n, 0, sizeof *n);
}

/* Options of a consumer of n's stream from sequence from; fails when
 * NATS is down. */
static es_status
consumer_from(es_jetstream *n, uint64_t from, jsSubOptions *so, natsSubscription **out,
              es_error *err)
{
    *out = NULL;
    if (!es_nats_up(n->nc))
        return nats_down(n, err);
    jsSubOptions_Init(so);
    so->Stream = n->stream;
    so->Config.DeliverPolicy = js_DeliverByStartSequence;
    so->Config.OptStartSeq = from;
    return ES_OK;
}

es_status
es_jetstream_subscribe(es_jetstream *n, uint64_t from, natsSubscription **out, es_error *err)
{
    jsSubOptions so;
    jsErrCode jerr = 0;
    natsStatus s;
    es_status st;

    if ((st = consumer_from(n, from, &so, out, err)) != ES_OK)
        return st;
    so.Ordered = true;
    s = js_SubscribeSync(out, n->js, n->subjects, NULL, &so, &jerr);
    if (s != NATS_OK) {
        *out = NULL;
        return es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                            "could not subscribe to stream %s from %" PRIu64 ": %s (%d)",
                            n->stream, from, natsStatus_GetText(s), (int)jerr);
    }
    /* The projector applies in batches: let the library queue plenty. */
    natsSubscription_SetPendingLimits(*out, 200000, 256 * 1024 * 1024);
    return ES_OK;
}

void
es_jetstream_unsubscribe(es_jetstream *n, natsSubscription *sub)
{
    if (sub == NULL)
        return;
    /* libnats before 3.6 (nats.c issue 637) can crash when a subscription
     * is destroyed while its connection's reader thread handles a message
     * for it.  Removing the interest and then waiting for a PONG, which the
     * reader thread handles after every message sent before it, leaves no
     * message in flight for this subscription. */
    if (n && es_nats_up(n->nc)) {
        natsSubscription_Unsubscribe(sub);
        natsConnection_FlushTimeout(n->nc, 2000);
    }
    /* Disconnected, no message can arrive; and unsubscribing would wait
     * for its request to the server (deleting the consumer) to time out.
     * The server drops an ordered consumer without interest by itself. */
    natsSubscription_Destroy(sub);
}

es_status
es_jetstream_last_seq(es_jetstream *n, uint64_t *last, es_error *err)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s;

    if (!es_nats_up(n->nc))
        return nats_down(n, err);
    s = js_GetStreamInfo(&si, n->js, n->stream, NULL, &jerr);
    if (s != NATS_OK)
        return es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                            "could not read stream %s: %s (%d)", n->stream, natsStatus_GetText(s),
                            (int)jerr);
    *last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return ES_OK;
}

es_status
es_jetstream_position_at(es_jetstream *n, uint64_t seq, es_position *pos, es_error *err)
{
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    const char *hdr = NULL;
    natsStatus s;
    es_status st = ES_OK;

    if (!es_nats_up(n->nc))
        return nats_down(n, err);
    s = js_GetMsg(&m, n->js, n->stream, seq, NULL, &jerr);
    if (s != NATS_OK)
        return es_error_set(err, s == NATS_NOT_FOUND ? ES_ENOTFOUND : ES_EUNAVAILABLE,
                            s == NATS_NOT_FOUND ? "no_such_message" : "nats_unavailable", NULL,
                            "could not read message %" PRIu64 " of %s: %s", seq, n->stream,
                            natsStatus_GetText(s));
    if (natsMsgHeader_Get(m, ES_POSITION_HEADER, &hdr) != NATS_OK || !es_position_parse(hdr, pos))
        st = es_error_set(err, ES_ENOTFOUND, "no_position", NULL,
                          "message %" PRIu64 " of %s has no %s header", seq, n->stream,
                          ES_POSITION_HEADER);
    natsMsg_Destroy(m);
    return st;
}

es_status
es_jetstream_message_at(es_jetstream *n, uint64_t seq, es_feed_event *out, int64_t *stored_us,
                        es_error *err)
{
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s;
    es_status st;

    memset(out, 0, sizeof *out);
    *stored_us = 0;
    if (!es_nats_up(n->nc))
        return nats_down(n, err);
    s = js_GetMsg(&m, n->js, n->stream, seq, NULL, &jerr);
    if (s != NATS_OK)
        return es_error_set(err, s == NATS_NOT_FOUND ? ES_ENOTFOUND : ES_EUNAVAILABLE,
                            s == NATS_NOT_FOUND ? "no_such_message" : "nats_unavailable", NULL,
                            "could not read message %" PRIu64 " of %s: %s", seq, n->stream,
                            natsStatus_GetText(s));
    *stored_us = natsMsg_GetTime(m) / 1000;
    st = es_feed_event_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), seq, out,
                              err);
    natsMsg_Destroy(m);
    return st;
}

void
es_feed_batch_free(es_feed_batch *m)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        es_feed_event_free(&m->ev[i]);
        free(m->bad[i]);
    }
    free(m->ev);
    free(m->bad);
    memset(m, 0, sizeof *m);
}

/*
 * Decodes message m (stream sequence seq) into out->ev[out->n] and counts
 * it; one that cannot be decoded is kept with its reason in bad[n], so
 * projections stop exactly there.  Takes m.  ES_ENOMEM only.
 */
static es_status
take_one(es_feed_batch *out, natsMsg *m, uint64_t seq, bool scan, es_error *err)
{
    es_feed_event *e = &out->ev[out->n];
    es_error derr;

    if ((scan ? es_feed_event_scan : es_feed_event_decode)(
            natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), seq, e, &derr) != ES_OK) {
        es_feed_event_free(e);
        e->seq = seq;
        out->bad[out->n] = strdup(derr.message);
        if (out->bad[out->n] == NULL) {
            /* without its reason it would pass for a good event */
            natsMsg_Destroy(m);
            out->n++;
            return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        }
    }
    natsMsg_Destroy(m);
    out->n++;
    return ES_OK;
}

static es_status
batch_alloc(es_feed_batch *out, int max, es_error *err)
{
    memset(out, 0, sizeof *out);
    if ((out->ev = calloc((size_t)max, sizeof *out->ev)) == NULL ||
        (out->bad = calloc((size_t)max, sizeof *out->bad)) == NULL) {
        es_feed_batch_free(out);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    }
    return ES_OK;
}

static es_status
no_metadata(es_feed_batch *out, es_error *err)
{
    es_feed_batch_free(out);
    return es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                        "a message of the events stream has no JetStream metadata");
}

/*
 * Takes up to max messages: waits up to wait_ms for the first, then takes
 * what is already queued.  Each is decoded; one that cannot be is kept
 * with its reason in bad[i], so projections stop exactly there.
 * ES_EUNAVAILABLE when the subscription broke (resubscribe).
 */
es_status
es_jetstream_take(natsSubscription *sub, int max, int wait_ms, es_feed_batch *out, es_error *err)
{
    natsMsg *m = NULL;
    natsStatus s;
    int pending = 0;

    if (batch_alloc(out, max, err) != ES_OK)
        return err->status;
    s = natsSubscription_NextMsg(&m, sub, wait_ms);
    while (s == NATS_OK) {
        jsMsgMetaData *meta = NULL;
        uint64_t seq;

        if (natsMsg_GetMetaData(&meta, m) != NATS_OK) {
            natsMsg_Destroy(m);
            return no_metadata(out, err);
        }
        seq = meta->Sequence.Stream;
        jsMsgMetaData_Destroy(meta);
        if (take_one(out, m, seq, false, err) != ES_OK) {
            es_feed_batch_free(out);
            return err->status;
        }
        m = NULL;
        if ((int)out->n == max)
            break;
        if (pending <= 0 && (natsSubscription_GetPending(sub, &pending, NULL) != NATS_OK ||
                             pending <= 0))
            break;
        pending--;
        s = natsSubscription_NextMsg(&m, sub, 1000);
    }
    if (s == NATS_OK || s == NATS_TIMEOUT || out->n > 0)
        return ES_OK;
    es_feed_batch_free(out);
    return es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                        "reading the events stream failed: %s", natsStatus_GetText(s));
}

/* ---- the stream, pulled ------------------------------------------------- */

/*
 * A pull request's byte cap must let the largest message the stream may
 * hold through: the server answers a request whose cap is below the next
 * message with nothing but a status, so a reader that asks too little
 * gets no message, takes its consumer for gone and makes it again, for
 * ever.  es_jetstream_pull (the first when a reader starts, and each
 * consumer after) learns that largest message (the stream's
 * max_msg_size, else the server's max_payload) and raises the cap of
 * every later fetch to it and FETCH_OVERHEAD more (the subject and reply
 * subject a request counts with the message) when ES_NATS_FETCH_BYTES is
 * below; the raise is logged once per new value.
 */
#define FETCH_BYTES_DEFAULT (8L * 1024 * 1024)
#define FETCH_OVERHEAD (64L * 1024)

static pthread_mutex_t fetch_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t fetch_floor;     /* bytes a fetch asks for at least; 0: none known */

static int64_t
fetch_bytes_configured(void)
{
    return es_env_long("es", "ES_NATS_FETCH_BYTES", FETCH_BYTES_DEFAULT, 1024, 1L << 30);
}

/* The largest message n's stream may hold, from the server (0: unknown). */
static int64_t
largest_message(es_jetstream *n)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    int64_t biggest = natsConnection_GetMaxPayload(n->nc);

    if (js_GetStreamInfo(&si, n->js, n->stream, NULL, &jerr) == NATS_OK && si->Config != NULL &&
        si->Config->MaxMsgSize > 0 && (biggest <= 0 || si->Config->MaxMsgSize < biggest))
        biggest = si->Config->MaxMsgSize;
    jsStreamInfo_Destroy(si);
    return biggest > 0 ? biggest : 0;
}

static void
fetch_floor_raise(es_jetstream *n)
{
    int64_t biggest = largest_message(n), need, configured = fetch_bytes_configured();
    bool raised = false;

    if (biggest == 0)
        return;
    need = biggest + FETCH_OVERHEAD;
    pthread_mutex_lock(&fetch_mu);
    if (need > fetch_floor) {
        fetch_floor = need;
        raised = need > configured;
    }
    pthread_mutex_unlock(&fetch_mu);
    if (raised)
        es_log(ES_LOG_WARNING, "ES_NATS_FETCH_BYTES=%" PRId64 " is below the largest message "
               "stream %s may hold (%" PRId64 " bytes): pull requests ask for %" PRId64
               " bytes instead", configured, n->stream, biggest, need);
}

int64_t
es_jetstream_fetch_bytes(void)
{
    int64_t configured = fetch_bytes_configured(), floor;

    pthread_mutex_lock(&fetch_mu);
    floor = fetch_floor;
    pthread_mutex_unlock(&fetch_mu);
    return floor > configured ? floor : configured;
}

es_status
es_jetstream_pull(es_jetstream *n, uint64_t from, natsSubscription **out, es_error *err)
{
    jsSubOptions so;
    jsErrCode jerr = 0;
    natsStatus s;
    es_status st;

    if ((st = consumer_from(n, from, &so, out, err)) != ES_OK)
        return st;
    /* Nothing to acknowledge: the reader's checkpoint is the truth, and a
     * reader that starts again makes a new consumer from there.  The
     * server keeps the consumer in memory and drops it a while after the
     * reader is gone (killed, cut off). */
    so.Config.AckPolicy = js_AckNone;
    so.Config.MemoryStorage = true;
    so.Config.InactiveThreshold = (int64_t)es_env_long("es", "ES_NATS_PULL_INACTIVE_MS", 30000,
                                                       1000, 3600000) * 1000000;
    s = js_PullSubscribe(out, n->js, n->subjects, NULL, NULL, &so, &jerr);
    if (s != NATS_OK) {
        *out = NULL;
        return es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                            "could not make a pull consumer of stream %s from %" PRIu64
                            ": %s (%d)", n->stream, from, natsStatus_GetText(s), (int)jerr);
    }
    fetch_floor_raise(n);
    return ES_OK;
}

/* One pull request: up to max messages, at most max_bytes in all; with
 * no_wait the server answers at once with what it has, else it holds the
 * request up to wait_ms for them. */
static natsStatus
fetch(natsMsgList *list, natsSubscription *sub, int max, int64_t max_bytes, bool no_wait,
      int wait_ms)
{
    jsFetchRequest req;

    jsFetchRequest_Init(&req);
    req.Batch = max;
    req.MaxBytes = max_bytes;
    req.NoWait = no_wait;
    req.Expires = (int64_t)wait_ms * 1000000;
    return natsSubscription_FetchRequest(list, sub, &req);
}

/*
 * Decodes list's messages into out (which has room for max) from
 * sequence *next on; a message past *next ends it (*jump).  Takes the
 * list's messages and destroys it.
 */
static es_status
take_list(natsMsgList *list, es_feed_batch *out, size_t max, uint64_t *next, uint64_t *jump,
          es_error *err)
{
    int i;

    /* never more than asked for: the library's array holds that many */
    for (i = 0; i < list->Count && out->n < max; i++) {
        natsMsg *m = list->Msgs[i];
        jsMsgMetaData *meta = NULL;
        uint64_t seq;

        list->Msgs[i] = NULL;
        if (natsMsg_GetMetaData(&meta, m) != NATS_OK) {
            natsMsg_Destroy(m);
            natsMsgList_Destroy(list);
            return no_metadata(out, err);
        }
        seq = meta->Sequence.Stream;
        jsMsgMetaData_Destroy(meta);
        /* The stream is dense (the relay writes every sequence once) and
         * a consumer delivers it in order, so the next message is next,
         * or the stream lacks it (deleted, or a stream that is not the
         * feed's copy): the batch ends before the jump, and the caller,
         * which knows what it applied, decides. */
        if (seq != *next) {
            natsMsg_Destroy(m);
            *jump = seq;
            break;
        }
        if (take_one(out, m, seq, true, err) != ES_OK) {
            natsMsgList_Destroy(list);
            es_feed_batch_free(out);
            return err->status;
        }
        (*next)++;
    }
    natsMsgList_Destroy(list);
    return ES_OK;
}

/*
 * The least time a reader waits for the answer to a request with no_wait.
 * The server answers such a request at once with what it has, and ends
 * it; with nothing to give, it holds it until the request's expiry (the
 * reader's wait less 10 ms).  A reader that gave up before the answer was
 * in (1 ms, as es-projector's fetch ahead once did) left the rest of it
 * to arrive later into the subscription's queue, see es_jetstream_fetch.
 */
#define ANSWER_MS 100

es_status
es_jetstream_fetch(natsSubscription *sub, uint64_t next, int max, int wait_ms,
                   es_feed_batch *out, uint64_t *jump, es_error *err)
{
    /* at least the largest message the stream may hold (fetch_floor) */
    int64_t max_bytes = es_jetstream_fetch_bytes();
    natsMsgList list = {0};
    natsStatus s;
    int pending = 0;

    *jump = 0;
    if (batch_alloc(out, max, err) != ES_OK)
        return err->status;
    /*
     * Messages already in the subscription's queue (the end of an answer
     * its reader stopped waiting for) are taken with batches of one, and
     * returned without asking for more.  The library's fetch (libnats
     * before 3.9; Debian 12 has 3.4) takes queued messages first, then
     * loops until it holds its batch less what it took: when it took
     * more than half, that count is never met, and it stores every later
     * message past the end of its array.  That heap overflow made
     * es-projector abort ("double free or corruption") as it caught up
     * after a PostgreSQL failover.  With a batch of one it takes one
     * queued message and stops, or takes none and asks for one.
     */
    while (out->n < (size_t)max && !*jump &&
           natsSubscription_GetPending(sub, &pending, NULL) == NATS_OK && pending > 0) {
        size_t before = out->n;

        s = fetch(&list, sub, 1, max_bytes, true, ANSWER_MS);
        if (s == NATS_NOT_FOUND || s == NATS_TIMEOUT)
            continue;       /* only the end of a request was queued */
        if (s != NATS_OK)
            break;
        if (take_list(&list, out, (size_t)max, &next, jump, err) != ES_OK)
            return err->status;
        if (out->n == before && !*jump)
            break;          /* nothing usable: no loop on it */
    }
    if (out->n > 0 || *jump)
        return ES_OK;
    /* what the server has now, without waiting; when it has nothing,
     * one message waited for (a request for more would be held until
     * they all came, delaying the first) */
    s = fetch(&list, sub, max, max_bytes, true, wait_ms > ANSWER_MS ? wait_ms : ANSWER_MS);
    if ((s == NATS_NOT_FOUND || s == NATS_TIMEOUT) && wait_ms > 0)
        s = fetch(&list, sub, 1, max_bytes, false, wait_ms);
    if (s == NATS_NOT_FOUND || s == NATS_TIMEOUT)
        return ES_OK;
    if (s != NATS_OK) {
        es_feed_batch_free(out);
        return es_error_set(err, ES_EUNAVAILABLE, "nats_unavailable", NULL,
                            "reading the events stream failed: %s", natsStatus_GetText(s));
    }
    return take_list(&list, out, (size_t)max, &next, jump, err);
}
