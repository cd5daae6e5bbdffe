/*
 * The flows of shared/DESIGN.md's domain, as tables, and the helpers that
 * turn a step's argument list into a command's arguments.
 */
#include "flow.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "event.h"

/* Order fulfilment: charge, reserve, ship, confirm; a failure undoes the
 * completed steps in reverse and then fails the order.  A customer's
 * cancellation (OrderCancelled) compensates the same way. */
static const sg_step order_steps[] = {
    {"payment", SG_COMMAND, {"payment.charge", "customer_id order_id amount=total", NULL},
     {"payment.refund", "customer_id order_id", NULL}, true, 5000, 5, NULL, NULL},
    {"inventory", SG_COMMAND, {"inventory.reserve", "order_id items", NULL},
     {"inventory.release", "order_id", NULL}, true, 5000, 5, NULL, NULL},
    {"shipment", SG_COMMAND, {"shipping.create", "order_id country=ship_to.country?", NULL},
     {"shipping.cancel", "order_id", NULL}, true, 5000, 5, NULL, NULL},
    {"confirmation", SG_COMMAND, {"order.confirm", "order_id", NULL}, {NULL, NULL, NULL}, true,
     5000, 5, NULL, NULL},
};

/* User registration: profile, fraud check, the verifier's verdict, then
 * three non-critical steps.  A fraud or verification failure deletes the
 * profile and rejects the user. */
static const sg_step registration_steps[] = {
    {"profile", SG_COMMAND, {"profile.create", "user_id", NULL},
     {"profile.delete", "user_id", NULL}, true, 5000, 5, NULL, NULL},
    {"fraud_check", SG_COMMAND, {"fraud.check", "user_id email", NULL}, {NULL, NULL, NULL}, true,
     5000, 5, NULL, NULL},
    {"verification", SG_AWAIT, {NULL, NULL, NULL}, {NULL, NULL, NULL}, true, 30000, 1,
     "UserVerificationRecorded", NULL},
    {"welcome_notification", SG_GATEWAY, {"notification.send", "user_id kind='welcome'", NULL},
     {NULL, NULL, NULL}, false, 5000, 3, NULL, "notification"},
    {"verification_email", SG_GATEWAY, {"email.send", "user_id kind='verification'", NULL},
     {NULL, NULL, NULL}, false, 5000, 3, NULL, "email"},
    {"analytics", SG_COMMAND, {"analytics.record", "user_id kind='registered'", NULL},
     {NULL, NULL, NULL}, false, 5000, 3, NULL, NULL},
};

/* The verifier of the pattern documents: reacts to a new user and reports
 * a verdict (the user's status only moves forward, in user.verify). */
static const sg_step verification_steps[] = {
    {"verify", SG_COMMAND, {"user.verify", "user_id result=verdict", NULL}, {NULL, NULL, NULL},
     true, 5000, 10, NULL, NULL},
};

static void
prepare_verification(json_t *ctx)
{
    json_object_set_new(ctx, "verdict",
                        json_string(sg_verdict(json_string_value(json_object_get(ctx, "user_id")),
                                               json_string_value(json_object_get(ctx, "email")))));
}

static const sg_flow order_flow = {
    "order", "order", "OrderPlaced", "order_id", "order",
    /* order_not_pending: cancelled or failed already; a confirmed order is
     * refused (order_confirmed), never counted as undone */
    {"order.fail", "order_id reason='fulfilment failed'", "order_not_pending"},
    "OrderCancelled", order_steps, sizeof order_steps / sizeof order_steps[0], 0, NULL,
    "confirmation",
};

static const sg_flow registration_flow = {
    "registration", "user", "UserRegistered", "user_id", "user",
    {"user.reject", "user_id reason='registration failed'", NULL},
    NULL, registration_steps, sizeof registration_steps / sizeof registration_steps[0], 0, NULL,
    NULL,
};

static const sg_flow verification_flow = {
    "verification", "user", "UserRegistered", "user_id", "user",
    {NULL, NULL, NULL}, NULL, verification_steps,
    sizeof verification_steps / sizeof verification_steps[0], 200, prepare_verification, NULL,
};

const sg_flow *const sg_flows[] = {&order_flow, &registration_flow, &verification_flow};
const size_t sg_flow_count = sizeof sg_flows / sizeof sg_flows[0];

const sg_flow *
sg_flow_find(const char *type)
{
    size_t i;

    for (i = 0; i < sg_flow_count; i++)
        if (strcmp(sg_flows[i]->type, type) == 0)
            return sg_flows[i];
    return NULL;
}

/* ctx at a dotted path, or NULL. */
static const json_t *
at(const json_t *ctx, const char *path, size_t len)
{
    char part[64];
    const char *dot;

    while (ctx && len > 0) {
        size_t n;
        dot = memchr(path, '.', len);
        n = dot ? (size_t)(dot - path) : len;
        if (n >= sizeof part)
            return NULL;
        memcpy(part, path, n);
        part[n] = '\0';
        ctx = json_object_get(ctx, part);
        if (!dot)
            break;
        len -= n + 1;
        path = dot + 1;
    }
    return ctx;
}

json_t *
sg_call_args(const sg_call *call, const json_t *ctx, const char **missing)
{
    static __thread char miss[64];
    json_t *args = json_object();
    const char *p = call->args ? call->args : "";

    *missing = NULL;
    while (*p) {
        const char *end = strchr(p, ' '), *eq = strchr(p, '='), *close;
        size_t len, nlen;
        char name[64];
        bool optional;

        /* a literal may hold spaces: it runs to its closing quote */
        if (eq && (!end || eq < end) && eq[1] == '\'' && (close = strchr(eq + 2, '\'')) != NULL)
            end = close + 1;
        len = end ? (size_t)(end - p) : strlen(p);
        optional = len > 0 && p[len - 1] == '?';

        if (optional)
            len--;
        eq = memchr(p, '=', len);
        nlen = eq ? (size_t)(eq - p) : len;
        if (nlen >= sizeof name)
            nlen = sizeof name - 1;
        memcpy(name, p, nlen);
        name[nlen] = '\0';
        if (eq && eq[1] == '\'') {
            size_t vlen = len - nlen - 3;       /* ='text' */
            json_object_set_new(args, name, json_stringn(eq + 2, vlen));
        } else {
            const char *path = eq ? eq + 1 : p;
            size_t plen = eq ? len - nlen - 1 : len;
            const json_t *v = at(ctx, path, plen);

            if (v && !json_is_null(v)) {
                json_object_set_new(args, name, json_deep_copy(v));
            } else if (!optional) {
                snprintf(miss, sizeof miss, "%.*s", (int)plen, path);
                *missing = miss;
                json_decref(args);
                return NULL;
            }
        }
        p += len + (optional ? 1 : 0);
        while (*p == ' ')
            p++;
    }
    return args;
}

long
sg_setting_ms(const char *what, const sg_flow *f, const char *step, long def, long min)
{
    char var[160], *end;
    const char *v;
    long n;

    if (step)
        snprintf(var, sizeof var, "ES_SAGA_%s_%s_%s_MS", what, f->type, step);
    else
        snprintf(var, sizeof var, "ES_SAGA_%s_%s_MS", what, f->type);
    for (char *c = var; *c; c++)
        *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
    if ((v = getenv(var)) == NULL || v[0] == '\0')
        return def;
    n = strtol(v, &end, 10);
    return *end == '\0' && n >= min ? n : def;
}

bool
sg_call_done_code(const sg_call *call, const char *code)
{
    return call->done_codes && code && es_list_contains(call->done_codes, code);
}

const char *
sg_verdict(const char *user_id, const char *email)
{
    const char *domains = getenv("ES_VERIFIER_FAIL_DOMAINS"), *rate = getenv("ES_VERIFIER_FAIL_RATE");
    const char *at_sign = email ? strrchr(email, '@') : NULL;
    uint64_t h = 1469598103934665603ULL;
    const char *c;

    if (domains == NULL)
        domains = "unverified.test";
    if (at_sign) {
        char lower[256];
        size_t i;
        for (i = 0; at_sign[1 + i] && i + 1 < sizeof lower; i++)
            lower[i] = (char)(at_sign[1 + i] >= 'A' && at_sign[1 + i] <= 'Z' ? at_sign[1 + i] + 32
                                                                             : at_sign[1 + i]);
        lower[i] = '\0';
        if (es_list_contains(domains, lower))
            return "failed";
    }
    for (c = user_id ? user_id : ""; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    if (rate && atof(rate) > 0 && (double)(h % 10000) < atof(rate) * 10000)
        return "failed";
    return "passed";
}
