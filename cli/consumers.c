/*
 * esctl consumer add: makes the durable pull consumer an outside service
 * reads the events stream through (docs/OPERATIONS.md, "Consuming the
 * events from another service").  The operator makes it, not the service:
 * whoever may make a consumer may also make a push consumer that has the
 * server deliver the stream onto any subject (commands included), so the
 * services' NATS user (es_consumer) may only bind to one made here, always
 * a pull consumer.
 */
#include "cli.h"

#include <nats/nats.h>
#include <stdio.h>
#include <string.h>

#include "feed.h"

static int
run_add(cli *c, int argc, char **argv)
{
    const char *max_s = NULL, *wait_s = NULL, *filter = NULL;
    cli_opt opts[] = {{"--max-deliver", &max_s, NULL},
                      {"--ack-wait-ms", &wait_s, NULL},
                      {"--filter", &filter, NULL},
                      {NULL, NULL, NULL}};
    char *pos[1] = {NULL};
    int npos = 0, rc = CLI_OK;
    long long max_deliver = 5, ack_wait_ms = 10000;
    es_jetstream n = {0};
    jsConsumerConfig cc;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    es_error err;
    natsStatus s;

    if (!cli_parse(c, argc, argv, opts, pos, 1, 1, &npos))
        return CLI_USAGE;
    if (pos[0][0] == '\0' || strlen(pos[0]) > 64 || strpbrk(pos[0], ".*> \t\r\n") != NULL)
        return cli_usage(c, "<name> \"%s\" is not a durable name (1 to 64 characters, no dot, "
                            "wildcard or space)", pos[0]);
    if ((max_s && !cli_number(c, "--max-deliver", max_s, 1, 1000, &max_deliver)) ||
        (wait_s && !cli_number(c, "--ack-wait-ms", wait_s, 100, 3600000, &ack_wait_ms)))
        return CLI_USAGE;
    if (filter && (filter[0] == '\0' || strpbrk(filter, " \t\r\n") != NULL))
        return cli_usage(c, "--filter \"%s\" is not a subject", filter);
    if (es_jetstream_open(&n, &err) != ES_OK)
        return cli_fail(c, &err);

    jsConsumerConfig_Init(&cc);
    cc.Durable = pos[0];
    cc.AckPolicy = js_AckExplicit;
    cc.DeliverPolicy = js_DeliverAll;
    cc.MaxDeliver = max_deliver;
    cc.AckWait = ack_wait_ms * 1000000LL;
    cc.MaxAckPending = 1000;
    cc.FilterSubject = filter;
    /* no DeliverSubject: a pull consumer, which delivers only to whoever
     * asks, on the asker's own inbox */
    s = js_AddConsumer(&ci, n.js, n.stream, &cc, NULL, &jerr);
    if (s != NATS_OK) {
        /* (the server calls a durable with other settings a creation
         * error; a server that did not answer gives no code) */
        es_error_set(&err, jerr == JSStreamNotFoundErr ? ES_ENOTFOUND
                           : jerr != 0                   ? ES_ECONFLICT
                                                         : ES_EUNAVAILABLE,
                     "consumer_not_made", NULL,
                     "could not make consumer \"%s\" of stream %s: %s (JetStream error %d)",
                     pos[0], n.stream, nats_GetLastError(NULL), (int)jerr);
        rc = cli_fail(c, &err);
        goto done;
    }
    rc = cli_say(c,
                 json_pack("{s:s, s:s, s:I, s:I, s:s?}", "stream", n.stream, "name", pos[0],
                           "max_deliver", (json_int_t)max_deliver, "ack_wait_ms",
                           (json_int_t)ack_wait_ms, "filter", filter),
                 "consumer %s of stream %s: pull, explicit acks, at most %lld deliveries, ack "
                 "wait %lld ms%s%s",
                 pos[0], n.stream, max_deliver, ack_wait_ms, filter ? ", subjects " : "",
                 filter ? filter : "");
done:
    jsConsumerInfo_Destroy(ci);
    es_jetstream_close(&n);
    return rc;
}

const cli_cmd cli_consumer_cmds[] = {
    {"consumer", "add", "<name> [--max-deliver N] [--ack-wait-ms MS] [--filter SUBJECT]",
     "make the durable consumer an outside service reads the stream with",
     "Makes the durable pull consumer <name> of the events stream ($ES_RELAY_STREAM,\n"
     "default EVENTS): explicit acks, from the first event, each message delivered\n"
     "at most N times (--max-deliver, default 5; then the server gives it up and\n"
     "publishes a max-deliveries advisory), again after MS without an ack\n"
     "(--ack-wait-ms, default 10000), only the subjects SUBJECT (--filter, e.g.\n"
     "es.events.order.>; default all).  The services' NATS user binds to it (its\n"
     "name must be in ES_CONSUMER_DURABLES); it cannot make consumers itself.  Made\n"
     "again, the settings the server can change (--max-deliver, --ack-wait-ms) are\n"
     "changed; another --filter is refused (exit code 5).\n"
     "--json prints {\"stream\", \"name\", \"max_deliver\", \"ack_wait_ms\", \"filter\"}.\n",
     run_add},
    {NULL, NULL, NULL, NULL, NULL, NULL}};
