/*
 * Fraud context: a deterministic rule set, so tests and demos can make a
 * registration pass or fail on purpose.
 *   1. The email's domain is in ES_FRAUD_BLOCKED_DOMAINS (comma-separated,
 *      default "fraud.test,blocked.example"): failed, blocked_domain.
 *   2. More than ES_FRAUD_DOMAIN_LIMIT (default 1000) registrations checked
 *      for one domain within one window of ES_FRAUD_WINDOW_SECONDS (default
 *      3600, aligned to the epoch): failed, domain_rate_limit.
 * Each check is counted once per user in frauddomain-<UUIDv5 of
 * domain>-<window>; the verdict is stream fraud-<user_id>, and a repeated
 * check answers the first verdict.
 *
 * Events: FraudCheckPassed {user_id}, FraudCheckFailed {user_id, reason};
 * DomainRegistrationCounted {user_id, domain}.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "contexts.h"

static json_t *
initial(void)
{
    return json_pack("{s:s}", "status", "none");
}

static void
apply(json_t *st, const char *type, json_t *d)
{
    if (strcmp(type, "FraudCheckPassed") == 0) {
        json_object_set_new(st, "status", json_string("passed"));
    } else if (strcmp(type, "FraudCheckFailed") == 0) {
        json_object_set_new(st, "status", json_string("failed"));
        json_object_set(st, "reason", json_object_get(d, "reason"));
    }
}

static const agg_type fraud = {"fraud", 1, initial, apply};

static void
verdict(cmd_out *out, const char *user_id, const char *status, const char *reason)
{
    if (strcmp(status, "failed") == 0)
        cmd_fail(out, ES_ERULE, "fraud_check_failed", "email", "fraud check failed: %s", reason);
    else
        out->body = json_pack("{s:s, s:s}", "user_id", user_id, "status", status);
}

static void
replay_check(const es_event *e, json_t *data, cmd_out *out)
{
    if (strcmp(e->type, "FraudCheckFailed") == 0)
        verdict(out, "", "failed", json_string_value(json_object_get(data, "reason")));
    else
        verdict(out, json_string_value(json_object_get(data, "user_id")), "passed", NULL);
}

typedef struct check_args {
    const char *user_id, *reason;
} check_args;

static void
decide_check(cmd_env *env, void *ctx, const agg *g, cmd_event *evs, size_t *n, cmd_out *out)
{
    check_args *a = ctx;
    const char *status = json_string_value(json_object_get(g->state, "status"));

    (void)env;
    if (strcmp(status, "none") != 0) {
        verdict(out, a->user_id, status, json_string_value(json_object_get(g->state, "reason")));
        return;
    }
    if (a->reason) {
        evs[0] = (cmd_event){"FraudCheckFailed",
                             json_pack("{s:s, s:s}", "user_id", a->user_id, "reason", a->reason)};
        verdict(out, a->user_id, "failed", a->reason);
    } else {
        evs[0] = (cmd_event){"FraudCheckPassed", json_pack("{s:s}", "user_id", a->user_id)};
        verdict(out, a->user_id, "passed", NULL);
        out->http_status = 201;
    }
    *n = 1;
}

void
fraud_check(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char stream[ES_STREAM_ID_MAX + 1], counter[ES_STREAM_ID_MAX + 1], did[ES_UUID_LEN + 1];
    const char *email, *domain;
    check_args a = {NULL, NULL};
    const cmd_config *cfg = env->cfg;
    es_error err;

    if (!cmd_stream_arg(in, "user_id", "fraud", stream, &a.user_id, out))
        return;
    if (dec_string(in, "email", true, 254, &email, &err) != ES_OK) {
        cmd_fail_with(out, &err);
        return;
    }
    if ((domain = strrchr(email, '@')) == NULL || domain[1] == '\0') {
        cmd_fail(out, ES_EINVALID, "email_invalid", "email", "\"%s\" has no domain", email);
        return;
    }
    domain++;
    if (cmd_replay(env, command_id, fresh, 1, replay_check, out))
        return;
    if (es_list_contains(cfg->fraud_blocked_domains, domain)) {
        a.reason = "blocked_domain";
    } else {
        long window = (long)(time(NULL) / (cfg->fraud_window_seconds > 0 ? cfg->fraud_window_seconds : 3600));
        cmd_event ev = {"DomainRegistrationCounted",
                        json_pack("{s:s, s:s}", "user_id", a.user_id, "domain", domain)};
        cmd_append ap = {counter, ES_EXPECT_ANY, &ev, 1, 0};
        es_append_result res;

        es_uuid_v5(ES_UUID_NAMESPACE, domain, strlen(domain), did);
        snprintf(counter, sizeof counter, "frauddomain-%s-%ld", did, window);
        cmd_append_one(env, command_id, in, &ap, &res);
        cmd_events_free(&ev, 1);
        if (res.status != ES_OK) {
            cmd_fail_with(out, &res.err);
            return;
        }
        /* versions count from 0: this registration is number version + 1 */
        if (res.last_version + 1 > cfg->fraud_domain_limit)
            a.reason = "domain_rate_limit";
    }
    cmd_run(env, command_id, in, &fraud, stream, 1, decide_check, &a, out);
}
