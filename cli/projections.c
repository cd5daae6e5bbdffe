/*
 * esctl projection status|lag|rebuild|park: the read models' versions and
 * checkpoints in Redis, how far the relay and each projection are behind
 * the store, a rebuild without downtime (projector/rebuild.c), and the
 * operator's decision to skip one event for one projection
 * (projector/park.h).
 */
#include "cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "audit.h"
#include "env.h"
#include "park.h"
#include "projector.h"

static int
run_status(cli *c, int argc, char **argv)
{
    const char *cols[] = {"projection", "active", "building", "checkpoint", "lag", "state",
                          "owner", "reason", NULL};
    char *pos[1];
    int npos;
    uint64_t last;
    bool have_last;
    es_error err;
    json_t *rows;

    if (!cli_parse(c, argc, argv, NULL, pos, 0, 0, &npos))
        return CLI_USAGE;
    if ((rows = pj_status(&last, &have_last, &err)) == NULL)
        return cli_fail(c, &err);
    json_incref(rows);
    cli_print(c, json_pack("{s:o, s:o}", "projections", rows, "stream_last",
                           have_last ? json_integer((json_int_t)last) : json_null()),
              rows, cols);
    if (!c->json) {
        /* then each parked event, one line each */
        for (size_t i = 0; i < json_array_size(rows); i++) {
            json_t *r = json_array_get(rows, i), *parked = json_object_get(r, "parked"), *k;
            size_t j;
            json_array_foreach(parked, j, k) {
                const char *where = json_string_value(json_object_get(k, "position"));
                printf("parked: %s event %" JSON_INTEGER_FORMAT " (position %s) by %s at %s: %s\n",
                       json_string_value(json_object_get(r, "projection")),
                       json_integer_value(json_object_get(k, "seq")), where ? where : "-",
                       json_string_value(json_object_get(k, "by")),
                       json_string_value(json_object_get(k, "at")),
                       json_string_value(json_object_get(k, "reason")));
            }
        }
    }
    json_decref(rows);
    return CLI_OK;
}

/* Who parks: ES_OPERATOR, else the login name. */
static const char *
operator_name(void)
{
    const char *who = getenv("ES_OPERATOR");

    if (who == NULL || who[0] == '\0')
        who = getenv("USER");
    return who != NULL && who[0] != '\0' ? who : "unknown";
}

static int
run_park(cli *c, int argc, char **argv)
{
    const char *reason = NULL;
    cli_opt opts[] = {{"--reason", &reason, NULL}, {NULL, NULL, NULL}};
    char *pos[2], where[ES_POSITION_TEXT_MAX] = "";
    int npos;
    long long seq;
    es_jetstream n = {0};
    es_position at;
    es_store *store;
    es_error err;

    if (!cli_parse(c, argc, argv, opts, pos, 2, 2, &npos))
        return CLI_USAGE;
    if (pj_find(pos[0]) == NULL) {
        es_error_set(&err, ES_ENOTFOUND, "unknown_projection", "name",
                     "there is no projection \"%s\" (users, orders, accounts, inventory, sagas, "
                     "dashboard)", pos[0]);
        return cli_fail(c, &err);
    }
    if (!cli_number(c, "POSITION", pos[1], 1, INT64_MAX, &seq))
        return CLI_USAGE;
    if (reason == NULL || reason[0] == '\0')
        return cli_usage(c, "--reason is required: say why the event is skipped");
    /* the event's store position, from the stream's copy, when it has it */
    if (es_jetstream_open(&n, &err) == ES_OK &&
        es_jetstream_position_at(&n, (uint64_t)seq, &at, &err) == ES_OK)
        es_position_format(at, where);
    es_jetstream_close(&n);
    if ((store = cli_store(c)) == NULL)
        return CLI_UNAVAILABLE;
    if (pj_park_record(store, pos[0], (uint64_t)seq, where, reason, operator_name(), &err) !=
        ES_OK) {
        es_store_close(store);
        return cli_fail(c, &err);
    }
    es_store_close(store);
    return cli_say(c, json_pack("{s:s, s:I, s:s?, s:s, s:s}", "projection", pos[0], "seq",
                                (json_int_t)seq, "position", where[0] ? where : NULL, "reason",
                                reason, "by", operator_name()),
                   "parked event %lld%s%s%s for projection %s: it skips that event (also in a "
                   "rebuild) and, if it stopped there, runs again within a second",
                   seq, where[0] ? " (position " : "", where, where[0] ? ")" : "", pos[0]);
}

/* Events of the store the relay has not put on the stream yet: those
 * after the position of the stream's last message. */
static es_status
relay_lag(es_store *s, es_jetstream *n, uint64_t last, long long *lag, es_error *err)
{
    es_position at = {0, 0};
    int64_t behind;

    if (last > 0 && es_jetstream_position_at(n, last, &at, err) != ES_OK)
        return err->status;
    if (es_audit_count_after(s, at, &behind, err) != ES_OK)
        return err->status;
    *lag = (long long)behind;
    return ES_OK;
}

static int
run_lag(cli *c, int argc, char **argv)
{
    const char *cols[] = {"stage", "behind", "at", NULL};
    char *pos[1];
    int npos;
    uint64_t last = 0;
    bool have_last;
    long long behind = 0;
    es_jetstream n = {0};
    es_error err;
    json_t *rows, *out;
    es_store *store;
    size_t i;

    if (!cli_parse(c, argc, argv, NULL, pos, 0, 1, &npos))
        return CLI_USAGE;
    if (npos == 1 && pj_find(pos[0]) == NULL) {
        es_error_set(&err, ES_ENOTFOUND, "unknown_projection", "name",
                     "there is no projection \"%s\"", pos[0]);
        return cli_fail(c, &err);
    }
    if (es_store_open(&store, es_pg_conninfo(), &err) != ES_OK)
        return cli_fail(c, &err);
    if (es_jetstream_open(&n, &err) != ES_OK || es_jetstream_last_seq(&n, &last, &err) != ES_OK ||
        relay_lag(store, &n, last, &behind, &err) != ES_OK) {
        es_jetstream_close(&n);
        es_store_close(store);
        return cli_fail(c, &err);
    }
    es_jetstream_close(&n);
    es_store_close(store);
    if ((rows = pj_status(&last, &have_last, &err)) == NULL)
        return cli_fail(c, &err);
    out = json_array();
    json_array_append_new(out, json_pack("{s:s, s:I, s:I}", "stage", "relay", "behind",
                                         (json_int_t)behind, "at", (json_int_t)last));
    for (i = 0; i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i);
        const char *name = json_string_value(json_object_get(r, "projection"));
        char stage[64];
        if (npos == 1 && strcmp(name, pos[0]) != 0)
            continue;
        snprintf(stage, sizeof stage, "projection %s", name);
        json_array_append_new(out, json_pack("{s:s, s:O, s:O}", "stage", stage, "behind",
                                             json_object_get(r, "lag"), "at",
                                             json_object_get(r, "checkpoint")));
    }
    json_decref(rows);
    return cli_print(c, json_pack("{s:o}", "lag", out), out, cols);
}

static int
run_rebuild(cli *c, int argc, char **argv)
{
    bool dry_run = false;
    cli_opt opts[] = {{"--dry-run", NULL, &dry_run}, {NULL, NULL, NULL}};
    char *pos[1];
    int npos;
    pj_rebuild_report rep;
    es_error err;
    json_t *doc;

    if (!cli_parse(c, argc, argv, opts, pos, 1, 1, &npos))
        return CLI_USAGE;
    if (pj_rebuild(pos[0], dry_run, &rep, &err) != ES_OK)
        return cli_fail(c, &err);
    doc = json_pack("{s:s, s:s, s:I, s:I, s:f, s:f, s:b, s:b, s:b}", "projection", pos[0],
                    "version", rep.version, "replayed", (json_int_t)rep.replayed, "checkpoint",
                    (json_int_t)rep.seq, "seconds", rep.seconds, "rate", rep.rate, "dry_run",
                    rep.dry_run, "resumed", rep.resumed, "interrupted", rep.interrupted);
    if (rep.interrupted) {
        cli_print(c, doc, NULL, NULL);
        return CLI_INTERRUPTED;
    }
    return cli_say(c, doc, "%s version %s of %s: %" PRIu64 " events replayed in %.1f s (%.0f/s)%s",
                   dry_run ? "replayed (dry run, deleted)" : "rebuilt", rep.version, pos[0],
                   rep.replayed, rep.seconds, rep.rate,
                   dry_run ? "" : "; it is the active version now");
}

const cli_cmd cli_projection_cmds[] = {
    {"projection", "status", "", "versions, checkpoints and state of every projection",
     "One row per projection: the active version (what queries read), a version being\n"
     "built, the checkpoint (the last event applied), lag (events of the stream not yet\n"
     "applied; \"-\" when NATS does not answer), state (running, or stopped with the\n"
     "reason: a projection that cannot apply an event stops there until fixed, or until\n"
     "the event is parked).  Then one line per parked event: projection, event, position,\n"
     "who parked it, when, and why (with --json: \"parked\" in each row).\n",
     run_status},
    {"projection", "lag", "[<name>]", "how far the relay and the projections are behind",
     "The relay's lag is the number of committed events not yet on the JetStream\n"
     "stream; a projection's, the number of stream messages it has not applied.\n"
     "\"at\" is the stream's last sequence for the relay, the checkpoint for a projection.\n",
     run_lag},
    {"projection", "rebuild", "<name> [--dry-run]", "rebuild one projection without downtime",
     "Builds a new version of projection <name> from the store while queries go on\n"
     "reading the active one, follows the stream until it has caught up, switches\n"
     "queries to it in one step and deletes the old version after a grace period\n"
     "(ES_REBUILD_GRACE_MS, default 2000).  A progress bar shows on a terminal.  Ctrl-C\n"
     "stops it cleanly (exit 130); running it again resumes.  Only one rebuild of a\n"
     "projection runs at a time (exit 5 otherwise).  --dry-run only times a replay into\n"
     "scratch keys and deletes them.  Projections: users, orders, accounts, inventory,\n"
     "sagas, dashboard.\n",
     run_rebuild},
    {"projection", "park", "<name> <position> --reason TEXT",
     "skip one event for one projection, recorded in the store",
     "Records in the store (stream projection-<name>) that projection <name> skips the\n"
     "event at feed position <position> (the stream sequence: the number status shows as\n"
     "checkpoint, and a stopped projection's \"event N\" in its reason).  The live\n"
     "projector reads the decision within a second: a projection stopped at that event\n"
     "runs again, one that has not reached it passes it when it does; a rebuild makes\n"
     "the same decision.  The checkpoint moves past the event; nothing of it is applied.\n"
     "A decision is final (the store is append-only).  Parking another event than the one\n"
     "a projection stopped at is allowed, and recorded alike.  The operator is\n"
     "ES_OPERATOR, else USER.  Exit 4 for an unknown projection, 2 for a position that is\n"
     "not a number from 1 or a missing --reason.\n",
     run_park},
    {NULL, NULL, NULL, NULL, NULL, NULL}};
