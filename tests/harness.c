/*
 * Test harness helpers (see harness.h).
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

const char *
th_conninfo(void)
{
    const char *c = getenv("ES_TEST_CONNINFO");

    if (c == NULL || c[0] == '\0') {
        fprintf(stderr, "ES_TEST_CONNINFO is not set: run the tests with scripts/test.sh\n");
        exit(2);
    }
    return c;
}

const char *
th_admin_conninfo(void)
{
    const char *c = getenv("ES_TEST_ADMIN_CONNINFO");

    return c && c[0] ? c : th_conninfo();
}

void
th_unique(char *out, size_t size, const char *prefix)
{
    unsigned char r[8];

    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        abort();
    snprintf(out, size, "%s-%02x%02x%02x%02x%02x%02x%02x%02x", prefix, r[0], r[1], r[2],
             r[3], r[4], r[5], r[6], r[7]);
}

int
th_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
