/* Unit tests of events/log.c: each test runs in a process of its own
 * (Check's fork mode), so each reads ES_LOG_LEVEL afresh. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "log.h"

static char path[64];
static int saved_stderr = -1;

/* Sends stderr to a file of its own until said() reads it back. */
static void
capture(void)
{
    int fd;

    snprintf(path, sizeof path, "/tmp/es-log-test-XXXXXX");
    ck_assert_int_ge(fd = mkstemp(path), 0);
    ck_assert_int_ge(saved_stderr = dup(STDERR_FILENO), 0);
    ck_assert_int_eq(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    close(fd);
}

/* What was written since capture(); static storage. */
static const char *
said(void)
{
    static char text[16384];
    FILE *f;
    size_t n;

    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    ck_assert_ptr_nonnull(f = fopen(path, "r"));
    n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    unlink(path);
    return text;
}

START_TEST(one_line_named_after_the_program_with_its_level)
{
    unsetenv("ES_LOG_LEVEL");
    capture();
    es_log_configure("es-test");
    es_log(ES_LOG_INFO, "listening on %s:%d", "127.0.0.1", 8080);
    es_log(ES_LOG_WARNING, "could not connect to %s", "nats");
    es_log(ES_LOG_ERROR, "intake: %s", "ERROR:  relation does not exist\n");
    es_log(ES_LOG_DEBUG, "not shown at info");
    ck_assert_str_eq(said(), "es-test: listening on 127.0.0.1:8080\n"
                             "es-test: warning: could not connect to nats\n"
                             "es-test: error: intake: ERROR:  relation does not exist\n");
}
END_TEST

START_TEST(the_threshold_comes_from_ES_LOG_LEVEL)
{
    setenv("ES_LOG_LEVEL", "WARNING", 1);
    capture();
    es_log_configure("es-test");
    ck_assert(!es_log_enabled(ES_LOG_INFO));
    ck_assert(es_log_enabled(ES_LOG_WARNING));
    es_log(ES_LOG_INFO, "dropped");
    es_log(ES_LOG_ERROR, "kept");
    ck_assert_str_eq(said(), "es-test: error: kept\n");
}
END_TEST

START_TEST(an_unknown_level_is_reported_and_info_used)
{
    setenv("ES_LOG_LEVEL", "loud", 1);
    capture();
    es_log_configure("es-test");
    es_log(ES_LOG_DEBUG, "dropped");
    es_log(ES_LOG_INFO, "kept");
    ck_assert_str_eq(said(), "es-test: warning: ES_LOG_LEVEL=\"loud\" is not debug, info, "
                             "warning or error; using info\n"
                             "es-test: kept\n");
}
END_TEST

START_TEST(a_long_message_is_cut_and_says_so)
{
    static char big[10000];
    const char *text;
    size_t n;

    unsetenv("ES_LOG_LEVEL");
    memset(big, 'x', sizeof big - 1);
    capture();
    es_log_configure("es-test");
    es_log(ES_LOG_INFO, "%s", big);
    es_log(ES_LOG_INFO, "after");
    text = said();
    n = strcspn(text, "\n");
    ck_assert_uint_le(n + 1, 4096);
    ck_assert_int_eq(strncmp(text, "es-test: xxx", 12), 0);
    ck_assert_int_eq(strncmp(text + n - 3, "...", 3), 0);
    ck_assert_str_eq(text + n + 1, "es-test: after\n");
}
END_TEST

START_TEST(a_line_about_a_trace_ends_with_its_id_even_when_cut)
{
    static char big[8000];
    const char *text, *tail;

    unsetenv("ES_LOG_LEVEL");
    memset(big, 'x', sizeof big - 1);
    capture();
    es_log_configure("es-test");
    es_log_trace(ES_LOG_WARNING, "4bf92f3577b34da6a3ce929d0e0e4736", "projection %s stopped",
                 "orders");
    es_log_trace(ES_LOG_INFO, NULL, "no trace");
    es_log_trace(ES_LOG_INFO, "4bf92f3577b34da6a3ce929d0e0e4736", "%s", big);
    text = said();
    ck_assert_ptr_nonnull(strstr(text, "es-test: warning: projection orders stopped "
                                       "trace_id=4bf92f3577b34da6a3ce929d0e0e4736\n"
                                       "es-test: no trace\n"));
    tail = text + strlen(text) - strlen("... trace_id=4bf92f3577b34da6a3ce929d0e0e4736\n");
    ck_assert_str_eq(tail, "... trace_id=4bf92f3577b34da6a3ce929d0e0e4736\n");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");

    tcase_add_test(tc, one_line_named_after_the_program_with_its_level);
    tcase_add_test(tc, the_threshold_comes_from_ES_LOG_LEVEL);
    tcase_add_test(tc, an_unknown_level_is_reported_and_info_used);
    tcase_add_test(tc, a_long_message_is_cut_and_says_so);
    tcase_add_test(tc, a_line_about_a_trace_ends_with_its_id_even_when_cut);
    suite_add_tcase(s, tc);
    return th_run(s);
}
