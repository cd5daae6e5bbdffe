/* Unit tests of events/uuid.c: SHA-1 against FIPS 180 vectors, UUIDv5
 * against RFC 4122's published example, and the id derivation. */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "core_int.h"
#include "uuid.h"

static void
hex(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

START_TEST(sha1_vectors)
{
    unsigned char d[20];
    char h[41];
    static char million[1000000];

    es__sha1("abc", 3, d);
    hex(d, 20, h);
    ck_assert_str_eq(h, "a9993e364706816aba3e25717850c26c9cd0d89d");
    es__sha1("", 0, d);
    hex(d, 20, h);
    ck_assert_str_eq(h, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    es__sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, d);
    hex(d, 20, h);
    ck_assert_str_eq(h, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    memset(million, 'a', sizeof million);
    es__sha1(million, sizeof million, d);
    hex(d, 20, h);
    ck_assert_str_eq(h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}
END_TEST

START_TEST(uuid_v5_known)
{
    char out[ES_UUID_LEN + 1];

    /* uuid5(NAMESPACE_DNS, "python.org") */
    es_uuid_v5("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "python.org", 10, out);
    ck_assert_str_eq(out, "886313e1-3b8a-5372-9b90-0c9aee199e5d");
}
END_TEST

START_TEST(derive_is_deterministic)
{
    char a[ES_UUID_LEN + 1], b[ES_UUID_LEN + 1], c[ES_UUID_LEN + 1];
    char longid[2000];

    es_uuid_derive("cmd-1", 0, a);
    es_uuid_derive("cmd-1", 0, b);
    es_uuid_derive("cmd-1", 1, c);
    ck_assert_str_eq(a, b);
    ck_assert_str_ne(a, c);
    ck_assert(es_uuid_valid(a));
    ck_assert_int_eq(a[14], '5');
    /* long ids are hashed whole: ids differing only at the end differ */
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    es_uuid_derive(longid, 0, a);
    longid[sizeof longid - 2] = 'y';
    es_uuid_derive(longid, 0, b);
    ck_assert_str_ne(a, b);
}
END_TEST

START_TEST(random_and_valid)
{
    char a[ES_UUID_LEN + 1], b[ES_UUID_LEN + 1];

    ck_assert(es_uuid_random(a));
    ck_assert(es_uuid_random(b));
    ck_assert_str_ne(a, b);
    ck_assert(es_uuid_valid(a));
    ck_assert_int_eq(a[14], '4');
    ck_assert(es_uuid_valid("6BA7B810-9DAD-11D1-80B4-00C04FD430C8"));
    ck_assert(!es_uuid_valid(""));
    ck_assert(!es_uuid_valid("6ba7b810-9dad-11d1-80b4-00c04fd430c"));
    ck_assert(!es_uuid_valid("6ba7b810-9dad-11d1-80b4-00c04fd430c88"));
    ck_assert(!es_uuid_valid("6ba7b810x9dad-11d1-80b4-00c04fd430c8"));
    ck_assert(!es_uuid_valid("6ba7b810-9dad-11d1-80b4-00c04fd430cg"));
}
END_TEST

/* Ids come from a pool of random bytes per thread: a forked child must
 * not hand out the bytes its parent hands out next. */
START_TEST(fork_does_not_repeat_ids)
{
    char mine[ES_UUID_LEN + 1], theirs[ES_UUID_LEN + 1] = "";
    int fds[2];
    pid_t pid;
    int status;

    ck_assert(es_uuid_random(mine));        /* fills the pool */
    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char id[ES_UUID_LEN + 1];

        close(fds[0]);
        if (!es_uuid_random(id) || write(fds[1], id, ES_UUID_LEN) != ES_UUID_LEN)
            _exit(1);
        _exit(0);
    }
    close(fds[1]);
    ck_assert_int_eq(read(fds[0], theirs, ES_UUID_LEN), ES_UUID_LEN);
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert(es_uuid_random(mine));
    ck_assert_str_ne(mine, theirs);
}
END_TEST

START_TEST(v7_is_time_ordered)
{
    char a[ES_UUID_LEN + 1], b[ES_UUID_LEN + 1];

    ck_assert(es_uuid_v7(a));
    usleep(2000);
    ck_assert(es_uuid_v7(b));
    ck_assert(es_uuid_valid(a));
    ck_assert_int_eq(a[14], '7');
    ck_assert(strchr("89ab", a[19]) != NULL);
    ck_assert_int_lt(strncmp(a, b, 13), 0);     /* later milliseconds sort later */
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("uuid");
    TCase *tc = tcase_create("uuid");

    tcase_add_test(tc, sha1_vectors);
    tcase_add_test(tc, uuid_v5_known);
    tcase_add_test(tc, derive_is_deterministic);
    tcase_add_test(tc, random_and_valid);
    tcase_add_test(tc, v7_is_time_ordered);
    tcase_add_test(tc, fork_does_not_repeat_ids);
    suite_add_tcase(s, tc);
    return th_run(s);
}
