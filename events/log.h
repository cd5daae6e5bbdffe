/*
 * es_log: the one way a program of this tree says something on stderr.
 * Every line names the program ("es-relay: ...") and, above info, its
 * level ("es-relay: error: ..."), and is written with one write(2), so
 * lines of different threads never interleave.  ES_LOG_LEVEL (debug,
 * info, warning or error; info by default) drops the lines below it.
 *
 * Library code does not log: it records the error in an es_error and the
 * program that owns the work calls es_log once (see STYLE.md).
 */
#ifndef ES_LOG_H
#define ES_LOG_H

#include <stdbool.h>

typedef enum es_log_level {
    ES_LOG_DEBUG,       /* detail for whoever chases a problem */
    ES_LOG_INFO,        /* what the program does: started, stopping, took over */
    ES_LOG_WARNING,     /* something failed and is retried or worked around */
    ES_LOG_ERROR        /* something failed that needs a person, or stops the program */
} es_log_level;

/*
 * Names the program that the lines start with (a static string, e.g.
 * "es-relay"; without a call, the executable's name) and reads
 * ES_LOG_LEVEL; a value it does not know is reported once and info is
 * used.  Call it before starting threads.
 */
void es_log_configure(const char *prog);

/* True when a line of this level would be written. */
bool es_log_enabled(es_log_level level);

/*
 * Writes one line: the program, the level's marker and the message,
 * without a trailing newline of its own (one at the end of fmt's text,
 * as PQerrorMessage leaves, is dropped).  A message too long for a line
 * (about 4 KiB) is cut and ends in "...".
 */
void es_log(es_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * The same for a line about one command or event: trace_id (the W3C
 * trace id of its metadata, events/trace.h; NULL or "" for none) ends the
 * line as the field " trace_id=<32 hex>", which a cut message never
 * loses, so `grep trace_id=<id>` over every daemon's log follows it.
 */
void es_log_trace(es_log_level level, const char *trace_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
