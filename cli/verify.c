/*
 * esctl verify: checks the invariants the whole system promises and
 * prints them as figures.
 *
 *   feed         the JetStream stream is the store's feed: message k is
 *                the k-th event, same id and position (no duplicate, no
 *                gap, same order), and nothing is missing from it
 *   projection   each read model equals, key by key, a fresh replay of
 *                the store up to its checkpoint, and none has stopped
 *   sagas        none failed or dead-lettered; with --settled every one
 *                finished (completed or compensated), no work left, and
 *                every compensated order kept no money and no stock
 *   money        deposits - charges + refunds = the sum of the balances,
 *                customer by customer; no order charged or refunded twice,
 *                no balance below zero
 *   stock        restocked - reserved + released = available, sku by sku;
 *                nothing released twice, nothing oversold
 *
 * Read models are compared only once they have caught up with the store
 * (--wait waits for that, and with --settled for the sagas to finish);
 * one still behind is a violation with --settled and a note otherwise.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "env.h"
#include "feed.h"
#include "projector.h"
#include "saga.h"
#include "store.h"

typedef struct ctx {
    cli *c;
    bool settled;
    PGconn *pg;
    es_store *store;
    redisContext *rc;
    es_jetstream js;
    uint64_t stream_last;
    long long store_events;
    json_t *checks;
    bool ok;
} ctx;

static double
now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static json_t *
check_new(ctx *x, const char *name)
{
    json_t *k = json_pack("{s:s, s:b, s:{}, s:[]}", "name", name, "ok", 1, "figures", "problems");

    json_array_append_new(x->checks, k);
    return k;
}

static void
figure(json_t *k, const char *name, json_t *v)
{
    json_object_set_new(json_object_get(k, "figures"), name, v);
}

/* A violation: the check fails, and says why. */
static void __attribute__((format(printf, 3, 4)))
violation(ctx *x, json_t *k, const char *fmt, ...)
{
    char text[600];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    json_object_set_new(k, "ok", json_false());
    json_array_append_new(json_object_get(k, "problems"), json_string(text));
    x->ok = false;
}

/* A remark that is not a violation. */
static void __attribute__((format(printf, 2, 3)))
note(json_t *k, const char *fmt, ...)
{
    char text[600];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    json_object_set_new(k, "note", json_string(text));
}


/* The number of events in the store, or -1 when it cannot be read. */
static long long
store_count(ctx *x)
{
    int64_t n;
    es_error err;

    return es_audit_count(x->store, &n, &err) == ES_OK ? (long long)n : -1;
}

/* A tally of the store's events (see audit.h); NULL after a violation of k. */
static es_audit_tally *
tally(ctx *x, json_t *k, const es_audit_query *q)
{
    es_audit_tally *t = NULL;
    es_error err;

    if (es_audit_tally_read(x->store, q, &t, &err) != ES_OK)
        violation(x, k, "query failed: %s", err.message);
    return t;
}

/* ---- waiting until everything has caught up ----------------------------- */

static bool
caught_up(ctx *x)
{
    es_error err;
    size_t i;

    if (es_jetstream_last_seq(&x->js, &x->stream_last, &err) != ES_OK)
        return false;
    x->store_events = store_count(x);
    if (x->store_events < 0 || (uint64_t)x->store_events != x->stream_last)
        return false;
    for (i = 0; i < pj_projection_count; i++) {
        es_rm_state s;
        if (es_rm_state_get(x->rc, pj_projections[i].name, &s, &err) != ES_OK ||
            s.seq != x->stream_last)
            return false;
    }
    if (x->settled) {
        long long work;
        uint64_t seq;
        if (sg_work_count(x->pg, &work, &err) != ES_OK || work != 0 ||
            sg_checkpoint_read(x->pg, &seq, &err) != ES_OK || seq != x->stream_last)
            return false;
    }
    return true;
}

/* ---- feed --------------------------------------------------------------- */

static json_t *
side(const char *stream, const char *type, const char *id, const char *pos)
{
    return json_pack("{s:s, s:s, s:s, s:s}", "stream", stream ? stream : "?", "type",
                     type ? type : "?", "event_id", id ? id : "?", "position", pos);
}

static void
check_feed(ctx *x)
{
    json_t *k = check_new(x, "feed");
    natsSubscription *sub = NULL;
    es_position after = {0, 0};
    es_page *page = NULL;
    size_t pi = 0;
    uint64_t done = 0, last = x->stream_last;
    long long events = x->store_events;
    int idle = 0;
    es_error err;

    figure(k, "store_events", json_integer(events));
    figure(k, "stream_messages", json_integer((json_int_t)last));
    if (last > 0 && es_jetstream_subscribe(&x->js, 1, &sub, &err) != ES_OK) {
        violation(x, k, "cannot read the stream: %s", err.message);
        return;
    }
    while (done < last && json_is_true(json_object_get(k, "ok"))) {
        es_feed_batch b;
        size_t i;

        if (es_jetstream_take(sub, 1000, 1000, &b, &err) != ES_OK) {
            violation(x, k, "the stream broke off after message %" PRIu64 ": %s", done,
                      err.message);
            break;
        }
        if (b.n == 0 && ++idle > 10) {
            violation(x, k, "the stream delivers nothing after message %" PRIu64 " of %" PRIu64,
                      done, last);
            es_feed_batch_free(&b);
            break;
        }
        for (i = 0; i < b.n && done < last; i++) {
            const es_feed_event *m = &b.ev[i];
            const es_event *e;
            char where[ES_POSITION_TEXT_MAX];

            idle = 0;
            if (m->seq <= done)
                continue;
            if (m->seq != done + 1) {
                violation(x, k, "the stream skips from message %" PRIu64 " to %" PRIu64, done,
                          m->seq);
                break;
            }
            /* a message whose data no reader here can decode (a number
             * past 64 bits in a category without a schema: projections
             * stop on it until it is parked) is still compared, by the
             * position its header carries */
            bool undecodable = b.bad[i] != NULL;
            char header[ES_POSITION_TEXT_MAX] = "";
            if (undecodable) {
                es_position hp;
                if (es_jetstream_position_at(&x->js, m->seq, &hp, &err) != ES_OK) {
                    violation(x, k, "message %" PRIu64 " is not an event: %s", m->seq, b.bad[i]);
                    break;
                }
                es_position_format(hp, header);
            }
            if (page == NULL || pi == page->count) {
                es_page_destroy(page);
                page = NULL;
                pi = 0;
                if (es_store_read_feed(x->store, after, 5000, &page, &err) != ES_OK) {
                    violation(x, k, "cannot read the store's feed: %s", err.message);
                    break;
                }
            }
            if (page->count == 0) {
                violation(x, k, "message %" PRIu64 " (%s %s) is past the store's last event: a "
                          "duplicate or a stray", m->seq, m->type, m->event_id);
                break;
            }
            e = &page->events[pi++];
            after = e->position;
            es_position_format(e->position, where);
            if (undecodable ? strcmp(where, header) != 0
                            : strcmp(e->event_id, m->event_id) != 0 || strcmp(where, m->position) != 0) {
                violation(x, k, "message %" PRIu64 " is not the store's event %" PRIu64
                          " (a duplicate, a gap or another order)", m->seq, m->seq);
                figure(k, "first_difference",
                       json_pack("{s:I, s:o, s:o}", "seq", (json_int_t)m->seq, "store",
                                 side(e->stream_id, e->type, e->event_id, where), "stream",
                                 undecodable ? side("?", "?", "?", header)
                                             : side(m->stream, m->type, m->event_id, m->position)));
                break;
            }
            done++;
        }
        es_feed_batch_free(&b);
    }
    es_page_destroy(page);
    if (sub)
        es_jetstream_unsubscribe(&x->js, sub);
    figure(k, "compared", json_integer((json_int_t)done));
    if ((long long)last > events)
        violation(x, k, "the stream has %" PRIu64 " messages but the store %lld events", last,
                  events);
    else if ((long long)last < events && x->settled)
        violation(x, k, "%lld events of the store are not on the stream",
                  events - (long long)last);
    else if ((long long)last < events)
        note(k, "the relay is %lld events behind", events - (long long)last);
}

/* ---- projections -------------------------------------------------------- */

static size_t
key_len(const char *line)
{
    return strcspn(line, "\t");
}

/* Compares two sorted dumps; the number of differing keys, the first in
 * *first (malloc'd). */
static size_t
diff_dumps(char **a, size_t na, char **b, size_t nb, char **first)
{
    size_t i = 0, j = 0, n = 0;

    *first = NULL;
    while (i < na || j < nb) {
        int c;
        if (i < na && j < nb && strcmp(a[i], b[j]) == 0) {
            i++, j++;
            continue;
        }
        if (i == na)
            c = 1;
        else if (j == nb)
            c = -1;
        else if (key_len(a[i]) == key_len(b[j]) && strncmp(a[i], b[j], key_len(a[i])) == 0)
            c = 0;
        else
            c = strcmp(a[i], b[j]);
        if (n++ == 0 &&
            asprintf(first, "%s%s%s%s", c <= 0 ? "live: " : "", c <= 0 ? a[i] : "",
                     c == 0 ? "; replayed: " : c > 0 ? "replayed: " : " (not in the replay)",
                     c >= 0 ? b[j] : "") < 0)
            *first = NULL;
        if (c <= 0)
            i++;
        if (c >= 0)
            j++;
    }
    return n;
}

/* Compares the active version with a replay of the store up to its
 * checkpoint: 0 equal, 1 different, -1 moved meanwhile or failed. */
static int
compare_once(ctx *x, json_t *k, const pj_projection *p, const es_rm_state *s, size_t *keys)
{
    char ver[24], **live = NULL, **fresh = NULL, *first = NULL;
    size_t nl = 0, nf = 0, n;
    uint64_t seq;
    es_rm_state after;
    es_error err;
    int rc = -1;

    if (pj_scratch(x->store, x->rc, p, s->seq, ver, sizeof ver, &seq, &err) != ES_OK) {
        violation(x, k, "cannot replay the store: %s", err.message);
        return -1;
    }
    if (seq != s->seq) {
        violation(x, k, "the store replayed %" PRIu64 " events for checkpoint %" PRIu64, seq,
                  s->seq);
    } else if (es_rm_dump(x->rc, p->name, s->active, &live, &nl, &err) != ES_OK ||
               es_rm_dump(x->rc, p->name, ver, &fresh, &nf, &err) != ES_OK ||
               es_rm_state_get(x->rc, p->name, &after, &err) != ES_OK) {
        violation(x, k, "cannot read the read model: %s", err.message);
    } else if (after.seq != s->seq || strcmp(after.active, s->active) != 0) {
        rc = -2;        /* it moved on meanwhile: compare again */
    } else {
        *keys = nl;
        n = diff_dumps(live, nl, fresh, nf, &first);
        if (n > 0) {
            violation(x, k, "%zu keys differ from a fresh replay; the first: %s", n,
                      first ? first : "?");
            figure(k, "keys_different", json_integer((json_int_t)n));
        }
        rc = n > 0;
    }
    free(first);
    es_rm_dump_free(live, nl);
    es_rm_dump_free(fresh, nf);
    if (es_rm_drop_version(x->rc, p->name, ver, &err) != ES_OK)
        violation(x, k, "could not delete the scratch version %s: %s", ver, err.message);
    return rc;
}

static void
check_projection(ctx *x, const pj_projection *p)
{
    char name[64];
    json_t *k;
    es_rm_state s;
    es_error err;
    char reason[512];
    bool stopped;
    size_t keys = 0;
    int attempt, rc = -2;

    snprintf(name, sizeof name, "projection %s", p->name);
    k = check_new(x, name);
    if (es_rm_state_get(x->rc, p->name, &s, &err) != ES_OK) {
        violation(x, k, "%s", err.message);
        return;
    }
    figure(k, "version", json_string(s.active));
    figure(k, "checkpoint", json_integer((json_int_t)s.seq));
    if (es_rm_stopped_get(x->rc, p->name, &stopped, reason, sizeof reason, &err) == ES_OK &&
        stopped)
        violation(x, k, "stopped: %s", reason);
    if (s.seq != x->stream_last) {
        if (x->settled)
            violation(x, k, "behind: at event %" PRIu64 " of %" PRIu64, s.seq, x->stream_last);
        else
            note(k, "not compared: at event %" PRIu64 " of %" PRIu64 " (still moving)", s.seq,
                 x->stream_last);
        return;
    }
    if (s.seq == 0) {
        figure(k, "keys", json_integer(0));     /* nothing applied, nothing to compare */
        return;
    }
    for (attempt = 0; attempt < 3 && rc == -2; attempt++) {
        if (attempt > 0 && es_rm_state_get(x->rc, p->name, &s, &err) != ES_OK)
            break;
        rc = compare_once(x, k, p, &s, &keys);
    }
    figure(k, "keys", json_integer((json_int_t)keys));
    if (rc == -2) {
        if (x->settled)
            violation(x, k, "it kept moving while compared");
        else
            note(k, "not compared: it kept moving");
    }
}

/* The active version's hashes whose key starts with prefix, as
 * {rest of the key: hash}; NULL after a violation. */
static json_t *
read_hashes(ctx *x, json_t *k, const char *projection, const char *prefix)
{
    es_rm_state s;
    es_error err;
    char **lines = NULL;
    size_t n = 0, i, plen = strlen(prefix);
    json_t *out;

    if (es_rm_state_get(x->rc, projection, &s, &err) != ES_OK ||
        es_rm_dump(x->rc, projection, s.active, &lines, &n, &err) != ES_OK) {
        violation(x, k, "cannot read projection %s: %s", projection, err.message);
        return NULL;
    }
    out = json_object();
    for (i = 0; i < n; i++) {
        char *tab = strchr(lines[i], '\t'), *body;
        if (tab == NULL || strncmp(lines[i], prefix, plen) != 0 ||
            strncmp(tab, "\thash\t", 6) != 0)
            continue;
        *tab = '\0';
        body = tab + 6;
        json_object_set_new(out, lines[i] + plen, json_loads(body, 0, NULL));
    }
    es_rm_dump_free(lines, n);
    return out;
}

static long long
hash_num(const json_t *h, const char *field)
{
    const char *v = json_string_value(json_object_get(h, field));

    return v ? atoll(v) : 0;
}

/* Each entity's figure in the store (want) against the read model's. */
static void
compare_entities(ctx *x, json_t *k, const char *what, json_t *want, json_t *have,
                 long long (*value)(const json_t *))
{
    const char *id;
    json_t *v;
    size_t bad = 0;

    json_object_foreach(want, id, v) {
        json_t *h = json_object_get(have, id);
        long long got = h ? value(h) : 0;
        if (got != json_integer_value(v) && bad++ == 0)
            violation(x, k, "%s %s: %lld in the store, %lld in the read model", what, id,
                      (long long)json_integer_value(v), got);
    }
    json_object_foreach(have, id, v) {
        if (json_object_get(want, id) == NULL && value(v) != 0 && bad++ == 0)
            violation(x, k, "%s %s: in the read model only", what, id);
    }
    figure(k, "mismatches", json_integer((json_int_t)bad));
}

static long long
balance(const json_t *h)
{
    return hash_num(h, "balance");
}

static long long
available(const json_t *h)
{
    return hash_num(h, "on_hand") - hash_num(h, "reserved");
}

/*
 * A conserved quantity: what comes in, what goes out and what comes back,
 * by event type of one category, must add up, entity by entity, to what
 * the read model holds.  Going out and coming back are done for an order
 * (data field ref), each at most once.
 */
typedef struct ledger {
    const char *check, *category, *amount, *entity, *ref;  /* data fields */
    const char *type[3], *figure[3];                    /* in, out, back */
    const char *expected, *held;                        /* figure names */
    bool twice_by_stream;                               /* once per stream, not per category */
    long long (*twice)(const es_audit_group *g);        /* out, back: done twice in g */
    const char *twice_what;
    const char *orphan_what;    /* back without out in its stream; NULL: not checked */
    const char *below_zero;
    const char *projection, *prefix, *noun;             /* the read model */
    long long (*value)(const json_t *);
} ledger;

/* An order charged more than once, and refunded more than once, count
 * one each (in any accounts). */
static long long
money_twice(const es_audit_group *g)
{
    return (g->count[0] > 1) + (g->count[1] > 1);
}

/* A reservation of an order's stock of one sku made more than once, or
 * released more often than made. */
static long long
stock_twice(const es_audit_group *g)
{
    return g->count[1] > g->count[0] || g->count[0] > 1;
}

static const ledger money = {
    "money", "account", "amount", "customer_id", "order_id",
    {"FundsDeposited", "PaymentCharged", "PaymentRefunded"},
    {"deposits", "charges", "refunds"}, "expected_balances", "balances",
    false, money_twice, "orders charged or refunded more than once",
    "refunds of nothing charged", "accounts below zero",
    "accounts", PJ_KEY_ACCOUNT_PREFIX, "account", balance};

static const ledger stock = {
    "stock", "stock", "quantity", "sku", "order_id",
    {"StockRestocked", "StockReserved", "StockReleased"},
    {"restocked", "reserved", "released"}, "expected_available", "available",
    true, stock_twice, "reservations made or released more than once",
    NULL, "skus oversold",
    "inventory", PJ_KEY_STOCK_PREFIX, "sku", available};

static void
check_ledger(ctx *x, const ledger *l, bool compare)
{
    json_t *k = check_new(x, l->check), *want, *have, *v;
    const char *out_back[2] = {l->type[1], l->type[2]};
    es_audit_query by_entity = {l->category, l->type, 3, l->entity, false, l->amount};
    es_audit_query by_ref = {l->category, out_back, 2, l->ref, l->twice_by_stream, NULL};
    es_audit_tally *t;
    long long n[3] = {0, 0, 0}, expected, twice = 0, orphan = 0, neg = 0, sum = 0;
    const char *id;
    size_t g;
    int i;

    if ((t = tally(x, k, &by_entity)) == NULL)
        return;
    want = json_object();
    for (g = 0; g < t->count; g++) {
        const es_audit_group *e = &t->groups[g];
        for (i = 0; i < 3; i++)
            n[i] += e->sum[i];
        json_object_set_new(want, e->key ? e->key : "",
                            json_integer(e->sum[0] - e->sum[1] + e->sum[2]));
    }
    es_audit_tally_destroy(t);
    for (i = 0; i < 3; i++)
        figure(k, l->figure[i], json_integer(n[i]));
    expected = n[0] - n[1] + n[2];
    figure(k, l->expected, json_integer(expected));
    if ((t = tally(x, k, &by_ref)) != NULL) {
        for (g = 0; g < t->count; g++)
            twice += l->twice(&t->groups[g]);
        es_audit_tally_destroy(t);
    }
    if (twice > 0)
        violation(x, k, "%lld %s", twice, l->twice_what);
    by_ref.by_stream = true;
    if (l->orphan_what && (t = tally(x, k, &by_ref)) != NULL) {
        /* an order id that is absent never matches, not even another absent one */
        for (g = 0; g < t->count; g++)
            if (t->groups[g].key == NULL || t->groups[g].count[0] == 0)
                orphan += t->groups[g].count[1];
        es_audit_tally_destroy(t);
        if (orphan > 0)
            violation(x, k, "%lld %s", orphan, l->orphan_what);
    }
    json_object_foreach(want, id, v)
        neg += json_integer_value(v) < 0;
    if (neg > 0)
        violation(x, k, "%lld %s", neg, l->below_zero);
    if (!compare) {
        note(k, "the read model was not compared: %s is behind", l->projection);
    } else if ((have = read_hashes(x, k, l->projection, l->prefix)) != NULL) {
        json_object_foreach(have, id, v)
            sum += l->value(v);
        figure(k, l->held, json_integer(sum));
        if (sum != expected)
            violation(x, k, "the %s add up to %lld, not %lld", l->held, sum, expected);
        compare_entities(x, k, l->noun, want, have, l->value);
        json_decref(have);
    }
    json_decref(want);
}

/* Net count of the first type minus the second, per order id, into map
 * (order id -> json integer); false after a violation of k. */
static bool
net_by_order(ctx *x, json_t *k, const char *category, const char *plus, const char *minus,
             json_t *map)
{
    const char *types[2] = {plus, minus};
    es_audit_query q = {category, types, 2, "order_id", false, NULL};
    es_audit_tally *t = tally(x, k, &q);

    if (t == NULL)
        return false;
    for (size_t g = 0; g < t->count; g++) {
        const es_audit_group *e = &t->groups[g];
        json_t *was;
        if (e->key == NULL)
            continue;
        was = json_object_get(map, e->key);
        json_object_set_new(map, e->key, json_integer((was ? json_integer_value(was) : 0) +
                                                      e->count[0] - e->count[1]));
    }
    es_audit_tally_destroy(t);
    return true;
}

/* How many of orders (an array of order ids) still have money charged or
 * stock reserved; -1 after a violation of k. */
static long long
compensated_kept(ctx *x, json_t *k, const json_t *orders)
{
    json_t *charged = json_object(), *reserved = json_object(), *id;
    long long kept = -1;
    size_t i;

    if (!net_by_order(x, k, "account", "PaymentCharged", "PaymentRefunded", charged) ||
        !net_by_order(x, k, "stock", "StockReserved", "StockReleased", reserved))
        goto done;
    kept = 0;
    json_array_foreach(orders, i, id) {
        const char *o = json_string_value(id);
        if (o != NULL && (json_integer_value(json_object_get(charged, o)) != 0 ||
                          json_integer_value(json_object_get(reserved, o)) != 0))
            kept++;
    }
done:
    json_decref(charged);
    json_decref(reserved);
    return kept;
}

/* What check_sagas counts, one saga at a time. */
typedef struct saga_counts {
    long long by_state[SG_STATE_COUNT];
    json_t *compensated_orders;     /* correlation ids of the compensated order sagas */
} saga_counts;

static bool
count_saga(const sg_saga_summary *s, void *arg)
{
    saga_counts *n = arg;

    n->by_state[s->state]++;
    if (s->state == SG_COMPENSATED && s->type && strcmp(s->type, "order") == 0)
        json_array_append_new(n->compensated_orders, s->correlation_id ?
                                                         json_string(s->correlation_id) :
                                                         json_null());
    return true;
}

static void
check_sagas(ctx *x)
{
    json_t *k = check_new(x, "sagas");
    sg_saga_filter all = {NULL, false, SG_RUNNING, 0};
    saga_counts n = {{0}, json_array()};
    long long started = 0, open, work = -1, dead = -1, kept = -1;
    es_error err;
    int i;

    if (sg_saga_list(x->store, &all, count_saga, &n, &err) != ES_OK) {
        violation(x, k, "query failed: %s", err.message);
        json_decref(n.compensated_orders);
        return;
    }
    for (i = 0; i < SG_STATE_COUNT; i++)
        started += n.by_state[i];
    open = started - n.by_state[SG_COMPLETED] - n.by_state[SG_COMPENSATED] -
           n.by_state[SG_FAILED];
    if (sg_work_count(x->pg, &work, &err) != ES_OK ||
        sg_dead_letter_open_count(x->pg, &dead, &err) != ES_OK)
        violation(x, k, "query failed: %s", err.message);
    /* a compensated order saga must leave its order with no money charged
     * and no stock reserved */
    kept = compensated_kept(x, k, n.compensated_orders);
    json_decref(n.compensated_orders);
    figure(k, "started", json_integer(started));
    figure(k, "completed", json_integer(n.by_state[SG_COMPLETED]));
    figure(k, "compensated", json_integer(n.by_state[SG_COMPENSATED]));
    figure(k, "failed", json_integer(n.by_state[SG_FAILED]));
    figure(k, "unfinished", json_integer(open));
    figure(k, "work_rows", json_integer(work));
    figure(k, "dead_letters", json_integer(dead));
    if (n.by_state[SG_FAILED] > 0)
        violation(x, k, "%lld sagas failed (esctl saga list --state failed)",
                  n.by_state[SG_FAILED]);
    if (dead > 0)
        violation(x, k, "%lld dead letters wait for an operator (esctl dead-letters list)", dead);
    if (kept > 0)
        violation(x, k, "%lld compensated orders still hold money or stock", kept);
    if (x->settled && (open > 0 || work > 0))
        violation(x, k, "%lld sagas unfinished, %lld work rows left", open, work);
}

/* ---- the command ---------------------------------------------------------- */

static void
print_human(ctx *x)
{
    for (size_t i = 0; i < json_array_size(x->checks); i++) {
        json_t *k = json_array_get(x->checks, i), *v;
        const char *name;
        size_t j;

        printf("%s  %-22s", json_is_true(json_object_get(k, "ok")) ? "PASS" : "FAIL",
               json_string_value(json_object_get(k, "name")));
        json_object_foreach(json_object_get(k, "figures"), name, v) {
            char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            printf(" %s=%s", name, t ? t : "?");
            free(t);
        }
        putchar('\n');
        json_array_foreach(json_object_get(k, "problems"), j, v)
            printf("      - %s\n", json_string_value(v));
        if (json_is_string(json_object_get(k, "note")))
            printf("      (%s)\n", json_string_value(json_object_get(k, "note")));
    }
    printf("%s\n", x->ok ? "verify: every invariant holds" : "verify: VIOLATIONS found");
}

static int
run_verify(cli *c, int argc, char **argv)
{
    const char *wait_s = "0";
    bool settled = false;
    cli_opt opts[] = {{"--wait", &wait_s, NULL}, {"--settled", NULL, &settled},
                      {NULL, NULL, NULL}};
    char *pos[1];
    int npos, rc;
    long long wait;
    ctx x = {0};
    es_error err;
    double until;
    bool quiet;
    size_t i;

    if (!cli_parse(c, argc, argv, opts, pos, 0, 0, &npos) ||
        !cli_number(c, "--wait", wait_s, 0, 86400, &wait))
        return CLI_USAGE;
    x.c = c;
    x.settled = settled;
    x.ok = true;
    if ((x.pg = cli_pg(c)) == NULL)
        return CLI_UNAVAILABLE;
    if (es_store_open(&x.store, es_pg_conninfo(), &err) != ES_OK ||
        (x.rc = es_rm_connect(&err)) == NULL || es_jetstream_open(&x.js, &err) != ES_OK) {
        rc = cli_fail(c, &err);
        goto done;
    }
    until = now_s() + (double)wait;
    while (!(quiet = caught_up(&x)) && now_s() < until && !es_daemon_stopping())
        es_daemon_sleep_ms(500);
    if (es_daemon_stopping()) {
        rc = CLI_INTERRUPTED;
        goto done;
    }
    if (es_jetstream_last_seq(&x.js, &x.stream_last, &err) != ES_OK) {
        rc = cli_fail(c, &err);
        goto done;
    }
    x.store_events = store_count(&x);
    x.checks = json_array();
    check_feed(&x);
    for (i = 0; i < pj_projection_count; i++)
        check_projection(&x, &pj_projections[i]);
    check_sagas(&x);
    check_ledger(&x, &money, quiet);
    check_ledger(&x, &stock, quiet);
    if (c->json)
        cli_print(c, json_pack("{s:b, s:b, s:O}", "ok", x.ok, "settled", quiet, "checks",
                               x.checks), NULL, NULL);
    else
        print_human(&x);
    rc = x.ok ? CLI_OK : CLI_FAILED;
done:
    json_decref(x.checks);
    es_jetstream_close(&x.js);
    if (x.rc)
        redisFree(x.rc);
    es_store_close(x.store);
    PQfinish(x.pg);
    return rc;
}

const cli_cmd cli_verify_cmds[] = {
    {NULL, "verify", "[--wait SECONDS] [--settled]", "check the system's invariants",
     "Checks and prints as figures: the JetStream stream is the store's feed (same\n"
     "events, same order, no duplicate, no gap); each read model equals a fresh replay\n"
     "of the store, key by key; no saga failed, no dead letter waits, every compensated\n"
     "order kept no money and no stock; money is conserved (deposits - charges + refunds\n"
     "= balances, customer by customer; nothing charged or refunded twice; no balance\n"
     "below zero) and so is stock (restocked - reserved + released = available, sku by\n"
     "sku; nothing released twice; nothing oversold).\n"
     "--wait waits up to SECONDS for the relay and the projections to catch up with the\n"
     "store (and, with --settled, for every saga to finish); read models still behind\n"
     "are not compared.  --settled makes anything unfinished a violation: for a system\n"
     "whose load has stopped (the fault campaign uses it).  Exit code 1 on any violation.\n"
     "It replays each projection into scratch keys in Redis, deleted afterwards.\n",
     run_verify},
    {NULL, NULL, NULL, NULL, NULL, NULL}};
