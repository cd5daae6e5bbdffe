/*
 * esctl trace: every stage of one command's trace with its time, the
 * slowest marked.  saga/stages.c collects them (the console's trace view
 * shows the same document); this prints it.
 */
#include "cli.h"

#include <stdio.h>

#include "stages.h"

static int
run_trace(cli *c, int argc, char **argv)
{
    char *pos[1];
    int npos, rc = CLI_OK;
    es_store *store = NULL;
    json_t *doc = NULL, *stages;
    size_t i;
    es_error err;

    es_error_clear(&err);
    if (!cli_parse(c, argc, argv, NULL, pos, 1, 1, &npos)) {
        rc = CLI_USAGE;
        goto done;
    }
    if ((store = cli_store(c)) == NULL) {
        rc = CLI_UNAVAILABLE;
        goto done;
    }
    if (sg_stages_collect(store, pos[0], &doc, &err) != ES_OK) {
        rc = cli_fail(c, &err);
        goto done;
    }
    if (c->json) {
        rc = cli_print(c, json_incref(doc), NULL, NULL);
        goto done;
    }
    stages = json_object_get(doc, "stages");
    printf("trace %s%s%s\n", json_string_value(json_object_get(doc, "trace_id")),
           json_is_string(json_object_get(doc, "saga_id")) ? ", saga " : "",
           json_is_string(json_object_get(doc, "saga_id"))
               ? json_string_value(json_object_get(doc, "saga_id")) : "");
    if (!json_is_true(json_object_get(doc, "recorded")))
        printf("(no record of the projector: expired after ES_TRACE_TTL, or not projected yet; "
               "published and projected stages unknown)\n");
    printf("%-27s %10s  %-10s %s\n", "at", "took ms", "stage", "what");
    for (i = 0; i < json_array_size(stages); i++) {
        const json_t *r = json_array_get(stages, i);
        const json_t *took = json_object_get(r, "took_ms");
        char ms[32] = "-";

        if (json_is_real(took))
            snprintf(ms, sizeof ms, "%.3f", json_real_value(took));
        printf("%-27s %10s  %-10s %s%s\n", json_string_value(json_object_get(r, "at")), ms,
               json_string_value(json_object_get(r, "stage")),
               json_string_value(json_object_get(r, "detail")),
               json_is_true(json_object_get(r, "slowest")) ? "   <- slowest" : "");
    }
done:
    json_decref(doc);
    es_store_close(store);
    return rc;
}

const cli_cmd cli_trace_cmds[] = {
    {NULL, "trace", "<trace-id | order-id | saga-id>",
     "every stage of a command's trace with its time, the slowest marked",
     "Follows one W3C trace (docs/API.md, \"Tracing\") from the command that began it:\n"
     "accepted (es-command), committed (the event's time in the store), published (when\n"
     "JetStream stored the relay's message), projected (when each projection applied the\n"
     "event), and the saga's steps with the commands and events they caused; sorted by\n"
     "time.  Each stage's took_ms counts from the stage it follows for the same event\n"
     "(committed after accepted, published after committed, projected after published),\n"
     "else from the stage before it; the longest is marked slowest.\n"
     "The argument is a trace id (32 hex digits), an order or user id (the trace of its\n"
     "first event; an order id also finds its saga), or a saga id (order-<id>,\n"
     "registration-<id>).  The events of a trace and their projected stages come from\n"
     "es-projector's record in Redis, kept ES_TRACE_TTL seconds (one day); without it only\n"
     "the order's (or user's) own stream and the saga are shown.\n"
     "--json prints {\"trace_id\", \"saga_id\", \"recorded\", \"stages\": [{\"stage\", \"at\",\n"
     "\"at_us\", \"took_ms\", \"after\", \"slowest\", \"detail\", ...}], \"slowest\"}.\n",
     run_trace},
    {NULL, NULL, NULL, NULL, NULL, NULL}};
