/*
 * test-util.c - the shared helpers (src/util.c): the clock and its timeval,
 * string lists, bounded appending, human durations and lags.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "pgshadow/util.h"

/* Moved from test-sync-policy.c with the function (was ps_sync_format_duration). */
static void test_human_duration(void **state)
{
    (void)state;
    char b[32];
    struct {
        int64_t ms;
        const char *s;
    } cases[] = {
        {-5, "0s"},         {0, "0s"},           {999, "0s"},         {45000, "45s"},
        {60000, "1m00s"},   {245000, "4m05s"},   {599999, "9m59s"},   {600000, "10m"},
        {720000, "12m"},    {3600000, "1h00m"},  {11220000, "3h07m"}, {86400000, "1d00h"},
        {187200000, "2d04h"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = ps_human_duration(cases[i].ms, b, sizeof b);
        assert_string_equal(b, cases[i].s);
        assert_int_equal(n, strlen(cases[i].s));
    }
    /* truncation is safe and says how much was written */
    assert_int_equal(ps_human_duration(245000, b, 3), 2);
    assert_string_equal(b, "4m");
    assert_int_equal(ps_human_duration(245000, b, 0), 0);
}

/* A lag under a minute keeps its milliseconds; from a minute on it reads like
 * a duration; unknown (negative) is "0s" like a duration. */
static void test_human_lag(void **state)
{
    (void)state;
    char b[32];
    assert_int_equal(ps_human_lag(3970, b, sizeof b), strlen("3.970s"));
    assert_string_equal(b, "3.970s");
    ps_human_lag(0, b, sizeof b);
    assert_string_equal(b, "0.000s");
    ps_human_lag(59999, b, sizeof b);
    assert_string_equal(b, "59.999s");
    ps_human_lag(60000, b, sizeof b);
    assert_string_equal(b, "1m00s");
    ps_human_lag(-1, b, sizeof b);
    assert_string_equal(b, "0s");
    assert_int_equal(ps_human_lag(3970, b, 4), 3);
    assert_string_equal(b, "3.9");
    assert_int_equal(ps_human_lag(3970, b, 0), 0);
}

/* The negative clamp: a deadline already past is "now", never a negative
 * timeval (one of the three copies this replaced had no clamp). */
static void test_clock_tv(void **state)
{
    (void)state;
    struct timeval tv = ps_clock_tv(1234);
    assert_int_equal(tv.tv_sec, 1);
    assert_int_equal(tv.tv_usec, 234000);
    tv = ps_clock_tv(-5);
    assert_int_equal(tv.tv_sec, 0);
    assert_int_equal(tv.tv_usec, 0);
    tv = ps_clock_tv(0);
    assert_int_equal(tv.tv_sec, 0);
    assert_int_equal(tv.tv_usec, 0);
    int64_t a = ps_clock_ms(), b = ps_clock_ms();
    assert_true(a > 0);
    assert_true(b >= a);
}

static void test_strv(void **state)
{
    (void)state;
    const char *const x[] = {"id", "Name"}, *const y[] = {"id", "Name"}, *const z[] = {"id", "name"};
    assert_true(ps_strv_equal(x, 2, y, 2));
    assert_true(ps_strv_equal(x, 0, NULL, 0));
    assert_false(ps_strv_equal(x, 2, z, 2)); /* case matters: these are SQL names */
    assert_false(ps_strv_equal(x, 2, y, 1));
    char b[16];
    ps_strv_join(x, 2, b, sizeof b);
    assert_string_equal(b, "id, Name");
    ps_strv_join(x, 0, b, sizeof b);
    assert_string_equal(b, "");
    ps_strv_join(x, 2, b, 5);
    assert_string_equal(b, "id, ");
}

static void test_appendf(void **state)
{
    (void)state;
    char b[8];
    size_t pos = 0;
    ps_appendf(b, sizeof b, &pos, "%s", "abc");
    assert_int_equal(pos, 3);
    ps_appendf(b, sizeof b, &pos, "; %d", 42);
    assert_int_equal(pos, 7); /* "abc; 42" fills it exactly */
    assert_string_equal(b, "abc; 42");
    ps_appendf(b, sizeof b, &pos, "more");
    assert_int_equal(pos, 7); /* full: nothing more, still terminated */
    assert_string_equal(b, "abc; 42");
    pos = 0;
    ps_appendf(b, sizeof b, &pos, "%s", "0123456789");
    assert_int_equal(pos, 7);
    assert_string_equal(b, "0123456");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_human_duration),
        cmocka_unit_test(test_human_lag),
        cmocka_unit_test(test_clock_tv),
        cmocka_unit_test(test_strv),
        cmocka_unit_test(test_appendf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
