/*
 * Notification, email and analytics contexts: side-effect records.  The
 * saga manager's gateways do the sending; these commands record that it
 * happened (or failed) as events, in streams notification-<user_id>,
 * email-<user_id> and analytics-<user_id>.  Appends use "any": these
 * streams have no rule that a version could protect.
 *
 * Events: NotificationRecorded, EmailRecorded, AnalyticsRecorded, each
 * {user_id, kind, status ("sent" or "failed"), detail?}.
 */
#include <string.h>

#include "contexts.h"

static void
record(cmd_env *env, const char *command_id, json_t *in, const char *prefix, const char *type,
       cmd_out *out)
{
    char stream[ES_STREAM_ID_MAX + 1];
    const char *user_id, *kind, *status, *detail;
    cmd_event ev;
    es_append_result res;
    es_error err;

    if (!cmd_stream_arg(in, "user_id", prefix, stream, &user_id, out))
        return;
    if (dec_string(in, "kind", true, 100, &kind, &err) != ES_OK ||
        dec_string(in, "status", false, 20, &status, &err) != ES_OK ||
        dec_string(in, "detail", false, 1000, &detail, &err) != ES_OK) {
        cmd_fail_with(out, &err);
        return;
    }
    if (status == NULL)
        status = "sent";
    if (strcmp(status, "sent") != 0 && strcmp(status, "failed") != 0) {
        cmd_fail(out, ES_EINVALID, "field_invalid", "status", "status must be \"sent\" or \"failed\"");
        return;
    }
    ev = (cmd_event){type, json_pack("{s:s, s:s, s:s}", "user_id", user_id, "kind", kind,
                                     "status", status)};
    if (detail)
        json_object_set_new(ev.data, "detail", json_string(detail));
    {
        cmd_append a = {stream, ES_EXPECT_ANY, &ev, 1, 0};
        cmd_append_one(env, command_id, in, &a, &res);
    }
    cmd_events_free(&ev, 1);
    if (res.status != ES_OK) {
        cmd_fail_with(out, &res.err);
        return;
    }
    cmd_ok(out, res.duplicate ? 200 : 201,
           json_pack("{s:s, s:s, s:s}", "user_id", user_id, "kind", kind, "status", status),
           res.position);
}

void
notify_notification(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    (void)fresh;
    record(env, command_id, in, "notification", "NotificationRecorded", out);
}

void
notify_email(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    (void)fresh;
    record(env, command_id, in, "email", "EmailRecorded", out);
}

void
notify_analytics(cmd_env *env, const char *command_id, bool fresh, json_t *in, cmd_out *out)
{
    (void)fresh;
    record(env, command_id, in, "analytics", "AnalyticsRecorded", out);
}
