/*
 * User context: stream user-<user_id>, plus one reservation stream per
 * normalised email (useremail-<UUIDv5 of the lower-cased address>) that
 * makes emails unique: registering appends EmailReserved there and
 * UserRegistered to the user's stream in one transaction; rejecting the
 * user releases it.
 *
 * Verification only moves forward (the pattern documents' levels):
 *   pending_verification 0 -> verification_failed 10 -> verified 100
 * so a late or repeated report never undoes a stronger one.  rejected is
 * final.
 *
 * Events: UserRegistered {user_id, email, name}, UserVerificationRecorded
 * {user_id, result, level}, UserRejected {user_id, reason};
 * EmailReserved / EmailReleased {user_id, email}.
 */
#include <ctype.h>
#include <string.h>

#include "contexts.h"

#define LEVEL_PENDING 0
#define LEVEL_FAILED 10
#define LEVEL_VERIFIED 100

static json_t *
user_initial(void)
{
    return json_pack("{s:s, s:i}", "status", "none", "level", -1);
}

static void
user_apply(json_t *st, const char *type, json_t *d)
{
    if (strcmp(type, "UserRegistered") == 0) {
        json_object_set_new(st, "status", json_string("pending_verification"));
        json_object_set_new(st, "level", json_integer(LEVEL_PENDING));
        json_object_set(st, "email", json_object_get(d, "email"));
        json_object_set(st, "name", json_object_get(d, "name"));
    } else if (strcmp(type, "UserVerificationRecorded") == 0) {
        json_int_t level = json_integer_value(json_object_get(d, "level"));
        if (level > json_integer_value(json_object_get(st, "level"))) {
            json_object_set_new(st, "level", json_integer(level));
            json_object_set_new(st, "status", json_string(level >= LEVEL_VERIFIED
                                                              ? "verified" : "verification_failed"));
        }
    } else if (strcmp(type, "UserRejected") == 0) {
        json_object_set_new(st, "status", json_string("rejected"));
    }
}

static const agg_type user = {"user", 1, user_initial, user_apply};

static json_t *
email_initial(void)
{
    return json_pack("{s:n}", "owner");
}

static void
email_apply(json_t *st, const char *type, json_t *d)
{
    if (strcmp(type, "EmailReserved") == 0)
        json_object_set(st, "owner", json_object_get(d, "user_id"));
    else if (strcmp(type, "EmailReleased") == 0)
        json_object_set_new(st, "owner", json_null());
}

static const agg_type email_agg = {"email", 1, email_initial, email_apply};

/* Lower-cases and checks an address: local@domain.tld, 3..254 bytes. */
static bool
normalise_email(const char *in, char *out, size_t size, cmd_out *out_)
{
    size_t n = strlen(in), i;
    const char *at;

    if (n < 3 || n >= size || n > 254) {
        cmd_fail(out_, ES_EINVALID, "email_invalid", "email", "email must be 3 to 254 bytes long");
        return false;
    }
    for (i = 0; i <= n; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    at = strchr(out, '@');
    if (at == NULL || at == out || strchr(at + 1, '@') || strchr(at + 1, '.') == NULL ||
        at[1] == '.' || out[n - 1] == '.' || strpbrk(out, " \t,;<>()[]\\\"") != NULL) {
        cmd_fail(out_, ES_EINVALID, "email_invalid", "email", "\"%s\" is not an email address", in);
        return false;
    }
    return true;
}

static void
user_email_stream(const char *email, char *stream, size_t size)
{
    char id[ES_UUID_LEN + 1];

    es_uuid_v5(ES_UUID_NAMESPACE, email, strlen(email), id);
    snprintf(stream, size, "useremail-%s", id);
}

static json_t *
user_body(const char *user_id, const json_t *st)
{
    return json_pack("{s:s, s:O, s:O, s:O}", "user_id", user_id, "email",
                     json_object_get(st, "email"), "name", json_object_get(st, "name"), "status",
                     json_object_get(st, "status"));
}

void
user_register(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char user_id[ES_UUID_LEN + 1], email[256], estream[ES_STREAM_ID_MAX + 1],
        ustream[ES_STREAM_ID_MAX + 1];
    const char *raw_email, *name;
    int tries = env->cfg->conflict_retries > 0 ? env->cfg->conflict_retries : 10;
    es_error err;

    (void)fresh;
    if (dec_string(in, "email", true, 254, &raw_email, &err) != ES_OK ||
        dec_string(in, "name", true, 200, &name, &err) != ES_OK) {
        cmd_fail_with(out, &err);
        return;
    }
    if (!normalise_email(raw_email, email, sizeof email, out))
        return;
    cmd_new_id(command_id, 1, user_id);
    user_email_stream(email, estream, sizeof estream);
    cmd_stream(ustream, sizeof ustream, "user", user_id);

    for (int attempt = 0;; attempt++) {
        agg e;
        cmd_event evs[2];
        cmd_append as[2];
        es_append_result res[2];
        const json_t *owner;
        size_t failed;

        if (agg_load(env, &email_agg, estream, &e, &err) != ES_OK) {
            cmd_fail_with(out, &err);
            return;
        }
        owner = json_object_get(e.state, "owner");
        if (json_is_string(owner) && strcmp(json_string_value(owner), user_id) != 0) {
            agg_free(&e);
            cmd_fail(out, ES_ECONFLICT, "email_taken", "email", "email %s is already registered",
                     email);
            out->err.actual_version = -1;
            return;
        }
        evs[0] = (cmd_event){"EmailReserved", json_pack("{s:s, s:s}", "user_id", user_id, "email", email)};
        evs[1] = (cmd_event){"UserRegistered",
                             json_pack("{s:s, s:s, s:s}", "user_id", user_id, "email", email, "name", name)};
        as[0] = (cmd_append){estream, e.version, &evs[0], 1, 0};
        as[1] = (cmd_append){ustream, ES_EXPECT_NO_STREAM, &evs[1], 1, 1};
        cmd_append_all(env, command_id, in, as, 2, res, &failed);
        cmd_events_free(evs, 2);
        agg_free(&e);
        if (res[failed].status == ES_ECONFLICT && attempt < tries)
            continue;
        if (res[failed].status != ES_OK) {
            cmd_fail_with(out, &res[failed].err);
            return;
        }
        cmd_ok(out, res[1].duplicate ? 200 : 201,
               json_pack("{s:s, s:s, s:s, s:s}", "user_id", user_id, "email", email, "name", name,
                         "status", "pending_verification"),
               res[1].position);
        return;
    }
}

typedef struct verify_args {
    const char *user_id, *result;
} verify_args;

static void
decide_verify(cmd_env *env, void *ctx, const agg *g, cmd_event *evs, size_t *n, cmd_out *out)
{
    verify_args *a = ctx;
    const char *status = json_string_value(json_object_get(g->state, "status"));
    json_int_t level = strcmp(a->result, "passed") == 0 ? LEVEL_VERIFIED : LEVEL_FAILED;
    json_t *after;

    (void)env;
    if (strcmp(status, "none") == 0) {
        cmd_fail(out, ES_ENOTFOUND, "user_not_found", "user_id", "user %s does not exist", a->user_id);
        return;
    }
    if (strcmp(status, "rejected") == 0 ||
        level <= json_integer_value(json_object_get(g->state, "level"))) {
        out->body = user_body(a->user_id, g->state);    /* never backwards */
        return;
    }
    evs[0] = (cmd_event){"UserVerificationRecorded",
                         json_pack("{s:s, s:s, s:I}", "user_id", a->user_id, "result", a->result,
                                   "level", level)};
    *n = 1;
    after = json_deep_copy(g->state);
    user_apply(after, evs[0].type, evs[0].data);
    out->body = user_body(a->user_id, after);
    json_decref(after);
}

void
user_verify(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char stream[ES_STREAM_ID_MAX + 1];
    verify_args a;
    es_error err;

    (void)fresh;
    if (!cmd_stream_arg(in, "user_id", "user", stream, &a.user_id, out))
        return;
    if (dec_string(in, "result", true, 10, &a.result, &err) != ES_OK) {
        cmd_fail_with(out, &err);
        return;
    }
    if (strcmp(a.result, "passed") != 0 && strcmp(a.result, "failed") != 0) {
        cmd_fail(out, ES_EINVALID, "field_invalid", "result", "result must be \"passed\" or \"failed\"");
        return;
    }
    cmd_run(env, command_id, in, &user, stream, 0, decide_verify, &a, out);
}

void
user_reject(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char ustream[ES_STREAM_ID_MAX + 1], estream[ES_STREAM_ID_MAX + 1];
    const char *user_id, *reason;
    int tries = env->cfg->conflict_retries > 0 ? env->cfg->conflict_retries : 10;
    es_error err;

    (void)fresh;
    if (!cmd_stream_arg(in, "user_id", "user", ustream, &user_id, out))
        return;
    if (dec_string(in, "reason", false, 500, &reason, &err) != ES_OK) {
        cmd_fail_with(out, &err);
        return;
    }
    for (int attempt = 0;; attempt++) {
        agg u, e;
        cmd_event evs[2];
        cmd_append as[2];
        es_append_result res[2];
        const char *status;
        size_t n = 1, failed;
        const json_t *owner;

        if (agg_load(env, &user, ustream, &u, &err) != ES_OK) {
            cmd_fail_with(out, &err);
            return;
        }
        status = json_string_value(json_object_get(u.state, "status"));
        if (strcmp(status, "none") == 0 || strcmp(status, "rejected") == 0) {
            if (strcmp(status, "none") == 0)
                cmd_fail(out, ES_ENOTFOUND, "user_not_found", "user_id", "user %s does not exist", user_id);
            else
                cmd_ok(out, 200, user_body(user_id, u.state), cmd_noop_position(env, &u));
            agg_free(&u);
            return;
        }
        if (!json_is_string(json_object_get(u.state, "email"))) {
            agg_free(&u);
            cmd_fail(out, ES_EINTERNAL, "user_invalid", "user_id",
                     "user %s was not registered by this service", user_id);
            return;
        }
        user_email_stream(json_string_value(json_object_get(u.state, "email")), estream, sizeof estream);
        if (agg_load(env, &email_agg, estream, &e, &err) != ES_OK) {
            agg_free(&u);
            cmd_fail_with(out, &err);
            return;
        }
        evs[0] = (cmd_event){"UserRejected", json_pack("{s:s, s:s}", "user_id", user_id, "reason",
                                                       reason ? reason : "rejected")};
        as[0] = (cmd_append){ustream, u.version, &evs[0], 1, 0};
        owner = json_object_get(e.state, "owner");
        if (json_is_string(owner) && strcmp(json_string_value(owner), user_id) == 0) {
            evs[1] = (cmd_event){"EmailReleased",
                                 json_pack("{s:s, s:O}", "user_id", user_id, "email",
                                           json_object_get(u.state, "email"))};
            as[1] = (cmd_append){estream, e.version, &evs[1], 1, 1};
            n = 2;
        }
        cmd_append_all(env, command_id, in, as, n, res, &failed);
        cmd_events_free(evs, n);
        agg_free(&e);
        if (res[failed].status == ES_ECONFLICT && attempt < tries) {
            agg_free(&u);
            continue;
        }
        if (res[failed].status != ES_OK) {
            cmd_fail_with(out, &res[failed].err);
        } else {
            json_object_set_new(u.state, "status", json_string("rejected"));
            cmd_ok(out, 200, user_body(user_id, u.state), res[0].position);
        }
        agg_free(&u);
        return;
    }
}
