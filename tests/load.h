/*
 * What the campaigns' load generators (chaos_load.c, abuse_load.c) share:
 * a loopback TCP connection with time bounds, a small random generator
 * and a sleep in seconds.
 */
#ifndef ES_TEST_LOAD_H
#define ES_TEST_LOAD_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>
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

#endif
