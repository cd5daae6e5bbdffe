/*
 * Profile context: stream profile-<user_id>, created with default
 * settings when a user registers, deleted as the compensation of a failed
 * registration.
 *
 * Events: ProfileCreated {user_id, settings}, ProfileDeleted {user_id}.
 */
#include <string.h>

#include "contexts.h"

static json_t *
initial(void)
{
    return json_pack("{s:s}", "status", "none");
}

static void
apply(json_t *st, const char *type, json_t *d)
{
    (void)d;
    if (strcmp(type, "ProfileCreated") == 0)
        json_object_set_new(st, "status", json_string("created"));
    else if (strcmp(type, "ProfileDeleted") == 0)
        json_object_set_new(st, "status", json_string("deleted"));
}

static const agg_type profile = {"profile", 1, initial, apply};

static void
decide_create(cmd_env *env, void *ctx, const agg *g, cmd_event *evs, size_t *n, cmd_out *out)
{
    const char *user_id = ctx;
    const char *status = json_string_value(json_object_get(g->state, "status"));

    (void)env;
    out->body = json_pack("{s:s, s:s}", "user_id", user_id, "status", "created");
    if (strcmp(status, "none") != 0) {
        json_object_set_new(out->body, "status", json_string(status));
        return;     /* created before (or deleted: a deleted profile stays deleted) */
    }
    evs[0] = (cmd_event){"ProfileCreated",
                         json_pack("{s:s, s:{s:s, s:b, s:s}}", "user_id", user_id, "settings",
                                   "language", "en", "notifications", 1, "theme", "light")};
    *n = 1;
    out->http_status = 201;
}

void
profile_create(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char stream[ES_STREAM_ID_MAX + 1];
    const char *user_id;

    (void)fresh;
    if (!cmd_stream_arg(in, "user_id", "profile", stream, &user_id, out))
        return;
    cmd_run(env, command_id, in, &profile, stream, 0, decide_create, (void *)user_id, out);
}

static void
decide_delete(cmd_env *env, void *ctx, const agg *g, cmd_event *evs, size_t *n, cmd_out *out)
{
    const char *user_id = ctx;
    const char *status = json_string_value(json_object_get(g->state, "status"));

    (void)env;
    out->body = json_pack("{s:s, s:s}", "user_id", user_id, "status", "deleted");
    if (strcmp(status, "created") != 0)
        return;     /* never created, or deleted already */
    evs[0] = (cmd_event){"ProfileDeleted", json_pack("{s:s}", "user_id", user_id)};
    *n = 1;
}

void
profile_delete(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    char stream[ES_STREAM_ID_MAX + 1];
    const char *user_id;

    (void)fresh;
    if (!cmd_stream_arg(in, "user_id", "profile", stream, &user_id, out))
        return;
    cmd_run(env, command_id, in, &profile, stream, 0, decide_delete, (void *)user_id, out);
}
