/*
 * What es-projector and esctl share of the projector: the flag a signal
 * sets (and the thread that sets it), a sleep it cuts short, and messages
 * named after the program.
 */
#include "projector.h"

#include <errno.h>
#include <signal.h>
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

static sigset_t stop_signals;

static void *
signal_thread(void *arg)
{
    int sig;

    (void)arg;
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    atomic_store(&pj_stop, true);
    return NULL;
}

void
pj_signals_start(pthread_t *th)
{
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_create(th, NULL, signal_thread, NULL);
}

void
pj_signals_stop(pthread_t th)
{
    pthread_kill(th, SIGTERM);
    pthread_join(th, NULL);
}
