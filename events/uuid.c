/*
 * SHA-1 (FIPS 180-4) and the UUID helpers built on it.  SHA-1 is used only
 * because RFC 4122 version 5 prescribes it; nothing here relies on it for
 * security.
 */
#include "uuid.h"
#include "core_int.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static uint32_t
rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void
sha1_block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80], a, b, c, d, e, f, k, t;
    int i;

    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4];
    for (i = 0; i < 80; i++) {
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        t = rol(a, 5) + f + e + k + w[i];
        e = d; d = c; c = rol(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

void
es__sha1(const void *data, size_t len, unsigned char digest[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    const unsigned char *p = data;
    unsigned char tail[128];
    size_t rest = len % 64, tlen, i;
    uint64_t bits = (uint64_t)len * 8;

    for (i = 0; i + 64 <= len; i += 64)
        sha1_block(h, p + i);
    memcpy(tail, p + len - rest, rest);
    tail[rest] = 0x80;
    tlen = rest < 56 ? 64 : 128;
    memset(tail + rest + 1, 0, tlen - rest - 1);
    for (i = 0; i < 8; i++)
        tail[tlen - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha1_block(h, tail);
    if (tlen == 128)
        sha1_block(h, tail + 64);
    for (i = 0; i < 5; i++) {
        digest[4 * i] = (unsigned char)(h[i] >> 24);
        digest[4 * i + 1] = (unsigned char)(h[i] >> 16);
        digest[4 * i + 2] = (unsigned char)(h[i] >> 8);
        digest[4 * i + 3] = (unsigned char)h[i];
    }
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool
es_uuid_valid(const char *s)
{
    int i;

    for (i = 0; i < ES_UUID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (hexval(s[i]) < 0) {
            return false;
        }
    }
    return s[ES_UUID_LEN] == '\0';
}

void
es__uuid_bytes(const char *s, unsigned char out[16])
{
    int i, j = 0;

    for (i = 0; i < ES_UUID_LEN && j < 16; i++) {
        if (s[i] == '-')
            continue;
        out[j++] = (unsigned char)(hexval(s[i]) << 4 | hexval(s[i + 1]));
        i++;
    }
}

/* The canonical 8-4-4-4-12 lower-case text of b (store-made ids are
 * formatted per event, so without printf). */
static void
uuid_format(const unsigned char b[16], char *out)
{
    static const char hex[] = "0123456789abcdef";

    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *out++ = '-';
        *out++ = hex[b[i] >> 4];
        *out++ = hex[b[i] & 15];
    }
    *out = '\0';
}

void
es_uuid_v5(const char *ns, const void *name, size_t len, char *out)
{
    unsigned char stackbuf[256], digest[20], *buf = stackbuf;

    /* The whole name is hashed: cutting it would make ids collide. */
    if (len + 16 > sizeof stackbuf && (buf = malloc(len + 16)) == NULL)
        abort();    /* a few hundred bytes; nothing sensible to return */
    es__uuid_bytes(ns, buf);
    memcpy(buf + 16, name, len);
    es__sha1(buf, 16 + len, digest);
    if (buf != stackbuf)
        free(buf);
    digest[6] = (unsigned char)((digest[6] & 0x0F) | 0x50);
    digest[8] = (unsigned char)((digest[8] & 0x3F) | 0x80);
    uuid_format(digest, out);
}

void
es_uuid_derive(const char *command_id, unsigned index, char *out)
{
    char stackname[256], *name = stackname;
    size_t size = strlen(command_id) + 16;
    int n;

    if (size > sizeof stackname && (name = malloc(size)) == NULL)
        abort();
    n = snprintf(name, size, "%s/%u", command_id, index);
    es_uuid_v5(ES_UUID_NAMESPACE, name, (size_t)n, out);
    if (name != stackname)
        free(name);
}

/*
 * Random bytes from a small pool per thread, refilled from getrandom: one
 * system call per sixteen ids instead of one per id.  A forked child
 * forgets the pool it inherited, or parent and child would hand out the
 * same bytes.
 */
static __thread unsigned char pool[256];
static __thread size_t pool_left;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void
forget_pool(void)
{
    pool_left = 0;
}

static void
watch_forks(void)
{
    pthread_atfork(NULL, NULL, forget_pool);
}

static bool
random_bytes(unsigned char *out, size_t n)
{
    pthread_once(&fork_once, watch_forks);
    if (pool_left < n) {
        if (getrandom(pool, sizeof pool, 0) != (ssize_t)sizeof pool)
            return false;
        pool_left = sizeof pool;
    }
    memcpy(out, pool + sizeof pool - pool_left, n);
    memset(pool + sizeof pool - pool_left, 0, n);
    pool_left -= n;
    return true;
}

bool
es_random_bytes(void *out, size_t n)
{
    unsigned char *o = out;

    while (n > 0) {
        size_t k = n < 64 ? n : 64;

        if (!random_bytes(o, k))
            return false;
        o += k, n -= k;
    }
    return true;
}

bool
es_uuid_v7(char *out)
{
    unsigned char b[16];
    struct timespec ts;
    uint64_t ms;

    if (!random_bytes(b + 6, sizeof b - 6))
        return false;
    clock_gettime(CLOCK_REALTIME, &ts);
    ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x70);
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
    uuid_format(b, out);
    return true;
}

bool
es_uuid_random(char *out)
{
    unsigned char b[16];

    if (!random_bytes(b, sizeof b))
        return false;
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
    uuid_format(b, out);
    return true;
}
