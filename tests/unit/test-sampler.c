/*
 * test-sampler.c - the sampler's pure part (sampler.h): the STATUS= words
 * from the window's figures. The rounds themselves run against a real
 * PostgreSQL in tests/integration/test-sampling.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "pgshadow/sampler.h"

static void expect_status(bool enabled, int64_t mism, double ratio, const char *want)
{
    char buf[128];
    ps_sampler_view v = {.enabled = enabled, .window_mismatches = mism, .p99_ratio = ratio};
    size_t n = ps_sampler_format_status(&v, buf, sizeof buf);
    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));
}

static void test_status_words(void **state)
{
    (void)state;
    expect_status(false, 3, 1.2, ""); /* off: nothing */
    expect_status(true, -1, -1, "");  /* no round yet */
    expect_status(true, 0, 1.04, "sampling: p99 x1.04");
    expect_status(true, 1, 0.98, "sampling: 1 mismatch, p99 x0.98");
    expect_status(true, 12, 2.5, "sampling: 12 mismatches, p99 x2.50");
    expect_status(true, 0, -1, "sampling: p99 ratio unknown");
}

static void test_status_short_buffer(void **state)
{
    (void)state;
    char buf[8];
    ps_sampler_view v = {.enabled = true, .window_mismatches = 5, .p99_ratio = 1.5};
    ps_sampler_format_status(&v, buf, sizeof buf);
    assert_true(strlen(buf) < sizeof buf); /* cut, always terminated */
    assert_int_equal(ps_sampler_format_status(&v, buf, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_words),
        cmocka_unit_test(test_status_short_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
