/*
 * test-verify-policy.c - what a verify worker does next (src/verify/policy.c):
 * one table row per case, the fake clock an input.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>

#include "pgshadow/verifier.h"

typedef struct vcase {
    const char *name;
    ps_verify_input in;
    ps_verify_action want;
} vcase;

#define IN(...) ((ps_verify_input){__VA_ARGS__})

static const vcase cases[] = {
    {"worker 1 tells the settings first",
     IN(.worker = 1, .configured = false, .interval_on = true, .now_ms = 0, .last = PS_VERIFY_IDLE),
     PS_VERIFY_CONFIGURE},
    {"settings before a due timer",
     IN(.worker = 1, .configured = false, .interval_on = true, .now_ms = 10, .start_check_at_ms = 0,
        .last = PS_VERIFY_STEP, .last_found_work = true),
     PS_VERIFY_CONFIGURE},
    {"worker 2 never configures",
     IN(.worker = 2, .configured = false, .interval_on = true, .last = PS_VERIFY_IDLE), PS_VERIFY_STEP},
    {"worker 1 asks for the timer's pass when due",
     IN(.worker = 1, .configured = true, .interval_on = true, .now_ms = 5000, .start_check_at_ms = 5000,
        .last = PS_VERIFY_STEP, .last_found_work = true),
     PS_VERIFY_START},
    {"not yet due: the chunk goes on",
     IN(.worker = 1, .configured = true, .interval_on = true, .now_ms = 4999, .start_check_at_ms = 5000,
        .last = PS_VERIFY_STEP, .last_found_work = true),
     PS_VERIFY_STEP},
    {"interval off: never the timer",
     IN(.worker = 1, .configured = true, .interval_on = false, .now_ms = 99999, .start_check_at_ms = 0,
        .last = PS_VERIFY_IDLE),
     PS_VERIFY_STEP},
    {"worker 2 never asks for the timer",
     IN(.worker = 2, .configured = true, .interval_on = true, .now_ms = 99999, .start_check_at_ms = 0,
        .last = PS_VERIFY_IDLE),
     PS_VERIFY_STEP},
    {"after the start check: a chunk",
     IN(.worker = 1, .configured = true, .interval_on = true, .now_ms = 1, .start_check_at_ms = 5001,
        .last = PS_VERIFY_START),
     PS_VERIFY_STEP},
    {"after configure: a chunk",
     IN(.worker = 1, .configured = true, .now_ms = 1, .start_check_at_ms = 5001, .last = PS_VERIFY_CONFIGURE),
     PS_VERIFY_STEP},
    {"no chunk left: the due keys",
     IN(.worker = 2, .configured = true, .last = PS_VERIFY_STEP, .last_found_work = false), PS_VERIFY_RECHECK},
    {"keys looked at: chunks first again",
     IN(.worker = 2, .configured = true, .last = PS_VERIFY_RECHECK, .last_found_work = true), PS_VERIFY_STEP},
    {"nothing at all: rest",
     IN(.worker = 2, .configured = true, .last = PS_VERIFY_RECHECK, .last_found_work = false), PS_VERIFY_IDLE},
    {"after rest: a chunk",
     IN(.worker = 2, .configured = true, .last = PS_VERIFY_IDLE), PS_VERIFY_STEP},
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ps_verify_action got = ps_verify_next(&cases[i].in);
        if (got != cases[i].want)
            fail_msg("case '%s': got %d, want %d", cases[i].name, (int)got, (int)cases[i].want);
    }
}

/* A worker left alone with nothing to do rests, and never spins between
 * step and recheck: three decisions end in PS_VERIFY_IDLE. */
static void test_no_spin(void **state)
{
    (void)state;
    ps_verify_input in = {.worker = 2, .configured = true, .last = PS_VERIFY_IDLE};
    ps_verify_action seq[3];
    for (int i = 0; i < 3; i++) {
        seq[i] = ps_verify_next(&in);
        in.last = seq[i];
        in.last_found_work = false;
    }
    assert_int_equal(seq[0], PS_VERIFY_STEP);
    assert_int_equal(seq[1], PS_VERIFY_RECHECK);
    assert_int_equal(seq[2], PS_VERIFY_IDLE);
}

/* Resting between chunks: none while quiet, the chunk's own time while
 * applications write (half a core a worker), never more than the cap. */
static void test_pause(void **state)
{
    (void)state;
    assert_int_equal(ps_verify_pause_ms(300, false), 0);
    assert_int_equal(ps_verify_pause_ms(300, true), 300);
    assert_int_equal(ps_verify_pause_ms(0, true), 0);
    assert_int_equal(ps_verify_pause_ms(-5, true), 0);
    assert_int_equal(ps_verify_pause_ms(PS_VERIFY_MAX_PAUSE_MS + 1, true), PS_VERIFY_MAX_PAUSE_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_no_spin),
        cmocka_unit_test(test_pause),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
