/*
 * The saga module's state without a server: every state's text reads
 * back as the state (the text is what SagaStateChanged carries), and the
 * fold gives a saga's state from its stream the way the engine, esctl and
 * verify all rely on.
 */
#include <jansson.h>
#include <string.h>

#include "harness.h"
#include "saga.h"

START_TEST(every_state_reads_back_from_its_text)
{
    const char *want[SG_STATE_COUNT] = {"running", "completed", "compensating", "compensated",
                                        "failed"};
    sg_state s;
    int i;

    for (i = 0; i < SG_STATE_COUNT; i++) {
        ck_assert_str_eq(sg_state_text((sg_state)i), want[i]);
        s = SG_FAILED;
        ck_assert(sg_state_parse(want[i], &s));
        ck_assert_int_eq(s, i);
    }
    s = SG_COMPLETED;
    ck_assert(!sg_state_parse("Running", &s));
    ck_assert(!sg_state_parse("", &s));
    ck_assert(!sg_state_parse(NULL, &s));
    ck_assert_int_eq(s, SG_COMPLETED);
    ck_assert_str_eq(sg_state_text((sg_state)SG_STATE_COUNT), "unknown");
}
END_TEST

/* Folds the events [type, to-or-null]... from SG_RUNNING. */
static sg_state
fold(const char *const (*evs)[2], size_t n, bool *all_ok)
{
    sg_state s = SG_RUNNING;
    size_t i;

    *all_ok = true;
    for (i = 0; i < n; i++) {
        json_t *d = evs[i][1] ? json_pack("{s:s}", "to", evs[i][1]) : json_object();
        *all_ok &= sg_state_fold(&s, evs[i][0], d);
        json_decref(d);
    }
    return s;
}

START_TEST(the_fold_follows_the_last_state_change)
{
    const char *const completed[][2] = {{SG_EV_STARTED, NULL}, {SG_EV_STEP_STARTED, NULL},
                                        {SG_EV_STEP_SUCCEEDED, NULL},
                                        {SG_EV_STATE_CHANGED, "completed"}};
    const char *const replayed[][2] = {{SG_EV_STARTED, NULL},
                                       {SG_EV_STATE_CHANGED, "compensating"},
                                       {SG_EV_STATE_CHANGED, "failed"},
                                       {SG_EV_STATE_CHANGED, "compensating"},
                                       {SG_EV_COMPENSATION_SUCCEEDED, NULL},
                                       {SG_EV_REPLAYED, NULL}};
    const char *const started[][2] = {{SG_EV_STARTED, NULL}, {SG_EV_STEP_FAILED, NULL}};
    const char *const nonsense[][2] = {{SG_EV_STARTED, NULL},
                                       {SG_EV_STATE_CHANGED, "compensated"},
                                       {SG_EV_STATE_CHANGED, "sideways"}};
    bool ok;

    ck_assert_int_eq(fold(completed, 4, &ok), SG_COMPLETED);
    ck_assert(ok);
    ck_assert_int_eq(fold(replayed, 6, &ok), SG_COMPENSATING);
    ck_assert(ok);
    ck_assert_int_eq(fold(started, 2, &ok), SG_RUNNING);
    ck_assert(ok);
    /* a change to no state is refused and the state kept */
    ck_assert_int_eq(fold(nonsense, 3, &ok), SG_COMPENSATED);
    ck_assert(!ok);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("saga_state");
    TCase *tc = tcase_create("saga_state");

    tcase_add_test(tc, every_state_reads_back_from_its_text);
    tcase_add_test(tc, the_fold_follows_the_last_state_change);
    suite_add_tcase(s, tc);
    return th_run(s);
}
