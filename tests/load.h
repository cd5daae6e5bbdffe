/*
 * What the campaigns' load generators (chaos_load.c, abuse_load.c) and
 * the cluster campaign's delaying proxy (delay_proxy.c) share: a loopback
 * TCP connection with time bounds, a small random generator, a sleep in
 * seconds and a clock in milliseconds.
 */
#ifndef ES_TEST_LOAD_H
#define ES_TEST_LOAD_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/*
 * A connection to 127.0.0.1:port, TCP_NODELAY, with timeout_ms on each
 * send and read (SO_SNDTIMEO also bounds a blocking connect).  Nonblocking:
 * the connect may still be under way.  Returns the descriptor, or -1 with
 * errno set.
 */
static inline int
load_connect(unsigned port, int timeout_ms, bool nonblocking)
{
    struct sockaddr_in a = {0};
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int fd = socket(AF_INET, SOCK_STREAM | (nonblocking ? SOCK_NONBLOCK : 0), 0), one = 1;

    if (fd < 0)
        return -1;
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && !(nonblocking && errno == EINPROGRESS)) {
        int saved = errno;

        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* xorshift64*: the next number of the state *s (never 0). */
static inline uint64_t
load_rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static inline void
load_sleep(double s)
{
    if (s > 0)
        usleep((useconds_t)(s * 1e6));
}

/* Milliseconds of that clock (CLOCK_MONOTONIC, CLOCK_REALTIME). */
static inline long long
load_ms(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* fn handles each signal of sigs (a list ended by 0); SIGPIPE is ignored. */
static inline void
load_signals(void (*fn)(int), const int *sigs)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    for (; *sigs != 0; sigs++)
        sigaction(*sigs, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

#endif
