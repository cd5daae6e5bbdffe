/*
 * es_log (see log.h).  Each line is formatted into a buffer on the stack
 * and handed to the kernel in one write(2): stderr's own buffering would
 * let two threads' lines interleave.  The threshold is read once.
 */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

static const char *prog_name;           /* NULL: the executable's name */
static es_log_level threshold = ES_LOG_INFO;
static pthread_once_t threshold_once = PTHREAD_ONCE_INIT;

static const char *
prog(void)
{
    return prog_name ? prog_name : program_invocation_short_name;
}

static void
write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;             /* nowhere left to say it */
        p += w;
        n -= (size_t)w;
    }
}

static void
read_threshold(void)
{
    static const char *const names[] = {"debug", "info", "warning", "error"};
    const char *v = getenv("ES_LOG_LEVEL");
    char line[256];
    int n;

    if (v == NULL || v[0] == '\0')
        return;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(v, names[i]) == 0) {
            threshold = (es_log_level)i;
            return;
        }
    n = snprintf(line, sizeof line,
                 "%s: warning: ES_LOG_LEVEL=\"%.64s\" is not debug, info, warning or error; "
                 "using info\n", prog(), v);
    if (n > 0)
        write_all(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

void
es_log_configure(const char *name)
{
    prog_name = name;
    pthread_once(&threshold_once, read_threshold);
}

bool
es_log_enabled(es_log_level level)
{
    pthread_once(&threshold_once, read_threshold);
    return level >= threshold;
}

static void
vlog(es_log_level level, const char *trace_id, const char *fmt, va_list ap)
{
    static const char *const markers[] = {"debug: ", "", "warning: ", "error: "};
    char line[LINE_MAX_BYTES];
    size_t len, room = sizeof line - 1;     /* one byte kept for the newline */
    size_t tail = trace_id != NULL && trace_id[0] != '\0' ? strlen(" trace_id=") + 32 : 0;
    int n;

    if (!es_log_enabled(level))
        return;
    room -= tail;                           /* the trace field is never cut */
    n = snprintf(line, room, "%s: %s", prog(),
                 level <= ES_LOG_ERROR ? markers[level] : "");
    len = n < 0 ? 0 : (size_t)n < room ? (size_t)n : room - 1;
    n = vsnprintf(line + len, room - len, fmt, ap);
    if (n > 0 && (size_t)n >= room - len) {
        len = room - 1;                     /* cut: say so */
        memcpy(line + len - 3, "...", 3);
    } else if (n > 0) {
        len += (size_t)n;
    }
    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (tail > 0) {
        n = snprintf(line + len, tail + 1, " trace_id=%.32s", trace_id);
        len += n > 0 ? (size_t)n : 0;
    }
    line[len++] = '\n';
    write_all(line, len);
}

void
es_log(es_log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(level, NULL, fmt, ap);
    va_end(ap);
}

void
es_log_trace(es_log_level level, const char *trace_id, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(level, trace_id, fmt, ap);
    va_end(ap);
}
