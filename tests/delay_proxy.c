/*
 * A TCP proxy that can delay what it carries: the network fault of the
 * cluster campaign (`make chaos-cluster`, scripts/chaos_cluster.sh).  It
 * listens on a loopback port and forwards each connection to the node
 * behind it; while the delay is on, every chunk read from either side is
 * held DELAY_MS before it is written to the other, so the node looks far
 * away (each round trip takes 2 * DELAY_MS more) while nothing is lost or
 * reordered.  SIGUSR1 turns the delay on, SIGUSR2 off; it starts off.
 * (tc netem would delay inside the kernel, but it needs the sch_netem
 * module and a network namespace per node; this runs anywhere.)
 *
 *   delay_proxy LISTEN_PORT TARGET_PORT DELAY_MS
 *
 * One connection to the target per client connection; when either side
 * closes or fails, both are closed (what is still held is dropped, as a
 * broken link would).  SIGTERM or SIGINT stops it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "load.h"

#define CHUNK 16384

static unsigned target_port;
static long delay_ms;
static atomic_bool delaying;
static volatile sig_atomic_t stopping;

/* A chunk read and not written yet: due at due_ms (monotonic clock). */
typedef struct chunk {
    struct chunk *next;
    long long due_ms;
    size_t len;
    char data[];
} chunk;

/* One direction of a connection: read from `from`, write to `to`. */
typedef struct pipe_dir {
    int from, to;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    chunk *head, *tail;
    bool eof;                   /* the reader is done: the writer ends once empty */
    atomic_bool *broken;        /* shared by both directions */
} pipe_dir;

static void
on_signal(int sig)
{
    if (sig == SIGUSR1)
        atomic_store(&delaying, true);
    else if (sig == SIGUSR2)
        atomic_store(&delaying, false);
    else
        stopping = 1;
}

/* Reads chunks and queues them with their due time. */
static void *
reader(void *arg)
{
    pipe_dir *p = arg;

    while (!atomic_load(p->broken)) {
        struct pollfd pfd = {.fd = p->from, .events = POLLIN};
        chunk *c;
        ssize_t n;

        if (poll(&pfd, 1, 200) <= 0)
            continue;
        if ((c = malloc(sizeof *c + CHUNK)) == NULL)
            break;
        n = read(p->from, c->data, CHUNK);
        if (n <= 0) {
            free(c);
            break;
        }
        c->len = (size_t)n;
        c->next = NULL;
        c->due_ms = load_ms(CLOCK_MONOTONIC) + (atomic_load(&delaying) ? delay_ms : 0);
        pthread_mutex_lock(&p->mu);
        if (p->tail != NULL)
            p->tail->next = c;
        else
            p->head = c;
        p->tail = c;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_lock(&p->mu);
    p->eof = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Writes each queued chunk once it is due. */
static void *
writer(void *arg)
{
    pipe_dir *p = arg;

    for (;;) {
        chunk *c;
        long long wait;
        size_t off = 0, len;

        pthread_mutex_lock(&p->mu);
        while (p->head == NULL && !p->eof && !atomic_load(p->broken)) {
            struct timespec ts;

            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        }
        c = p->head;
        if (c == NULL || atomic_load(p->broken)) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        p->head = c->next;
        if (p->head == NULL)
            p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        while ((wait = c->due_ms - load_ms(CLOCK_MONOTONIC)) > 0 && !atomic_load(p->broken)) {
            struct timespec ts = {.tv_sec = wait / 1000, .tv_nsec = (wait % 1000) * 1000000L};

            nanosleep(&ts, NULL);
        }
        while (off < c->len) {
            ssize_t n = send(p->to, c->data + off, c->len - off, MSG_NOSIGNAL);

            if (n <= 0) {
                if (n < 0 && errno == EINTR)
                    continue;
                break;
            }
            off += (size_t)n;
        }
        len = c->len;
        free(c);
        if (off < len)
            break;
    }
    /* one side is gone or failed: the link breaks both ways */
    atomic_store(p->broken, true);
    shutdown(p->from, SHUT_RDWR);
    shutdown(p->to, SHUT_RDWR);
    return NULL;
}

typedef struct link_arg {
    int client;
} link_arg;

static void
drop_queue(pipe_dir *p)
{
    while (p->head != NULL) {
        chunk *c = p->head;

        p->head = c->next;
        free(c);
    }
}

/* One proxied connection, both directions, until either side ends. */
static void *
link_run(void *arg)
{
    int client = ((link_arg *)arg)->client, server;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)target_port)};
    atomic_bool broken = false;
    pipe_dir up, down;
    pthread_t th[4];
    int one = 1;

    free(arg);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if ((server = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
        connect(server, (struct sockaddr *)&a, sizeof a) != 0) {
        if (server >= 0)
            close(server);
        close(client);
        return NULL;
    }
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    up = (pipe_dir){.from = client, .to = server, .broken = &broken};
    down = (pipe_dir){.from = server, .to = client, .broken = &broken};
    pthread_mutex_init(&up.mu, NULL);
    pthread_mutex_init(&down.mu, NULL);
    pthread_cond_init(&up.cv, NULL);
    pthread_cond_init(&down.cv, NULL);
    pthread_create(&th[0], NULL, reader, &up);
    pthread_create(&th[1], NULL, writer, &up);
    pthread_create(&th[2], NULL, reader, &down);
    pthread_create(&th[3], NULL, writer, &down);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    drop_queue(&up);
    drop_queue(&down);
    pthread_mutex_destroy(&up.mu);
    pthread_mutex_destroy(&down.mu);
    pthread_cond_destroy(&up.cv);
    pthread_cond_destroy(&down.cv);
    close(client);
    close(server);
    return NULL;
}

int
main(int argc, char **argv)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    unsigned listen_port;
    int lfd, one = 1;

    if (argc != 4 || (listen_port = (unsigned)atoi(argv[1])) == 0 || listen_port > 65535 ||
        (target_port = (unsigned)atoi(argv[2])) == 0 || target_port > 65535 ||
        (delay_ms = atol(argv[3])) < 0) {
        fprintf(stderr, "usage: delay_proxy LISTEN_PORT TARGET_PORT DELAY_MS\n");
        return 2;
    }
    load_signals(on_signal, (const int[]){SIGUSR1, SIGUSR2, SIGTERM, SIGINT, 0});

    a.sin_port = htons((uint16_t)listen_port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if ((lfd = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 128) != 0) {
        fprintf(stderr, "delay_proxy: cannot listen on 127.0.0.1:%u: %s\n", listen_port,
                strerror(errno));
        return 1;
    }
    fprintf(stderr, "delay_proxy: 127.0.0.1:%u -> 127.0.0.1:%u, delay %ld ms on SIGUSR1\n",
            listen_port, target_port, delay_ms);
    while (!stopping) {
        struct pollfd pfd = {.fd = lfd, .events = POLLIN};
        link_arg *la;
        pthread_t th;
        int c;

        if (poll(&pfd, 1, 200) <= 0)
            continue;
        if ((c = accept(lfd, NULL, NULL)) < 0)
            continue;
        if ((la = malloc(sizeof *la)) == NULL) {
            close(c);
            continue;
        }
        la->client = c;
        if (pthread_create(&th, NULL, link_run, la) != 0) {
            free(la);
            close(c);
            continue;
        }
        pthread_detach(th);
    }
    close(lfd);
    return 0;
}
