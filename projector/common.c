/*
 * What es-projector and esctl share of the projector: the flag a signal
 * sets, a sleep it cuts short, and messages named after the program.
 */
#include "projector.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

atomic_bool pj_stop;
const char *pj_prog = "es-projector";

void
pj_say(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", pj_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void
pj_sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&t, &t) != 0 && errno == EINTR && !atomic_load(&pj_stop))
        ;
}
