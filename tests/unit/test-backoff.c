/*
 * test-backoff.c - the reconnect backoff policy (pure, no database).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "pgshadow/backoff.h"

/* The ceiling of the current attempt is the largest delay any rnd can give;
 * probe on copies so the attempt is not consumed. */
static int64_t ceiling_of(ps_backoff *b)
{
    ps_backoff copy = *b;
    int64_t best = 0;
    for (uint32_t r = 0; r < 40000; r++) {
        ps_backoff t = copy;
        int64_t d = ps_backoff_next(&t, r);
        if (d > best)
            best = d;
    }
    return best;
}

static void test_ceilings_double_then_cap(void **state)
{
    ps_backoff b;
    ps_backoff_init(&b, 100, 30000);
    int64_t expect[] = {100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        assert_int_equal(b.attempt, (int)i);
        assert_int_equal(ceiling_of(&b), expect[i]);
        ps_backoff_next(&b, 0);
    }
    /* many more failures: still capped, no overflow */
    for (int i = 0; i < 500; i++)
        ps_backoff_next(&b, (uint32_t)i * 2654435761u);
    assert_int_equal(ceiling_of(&b), 30000);
}

static void test_bounds_never_zero_never_above_cap(void **state)
{
    const int64_t bases[] = {1, 2, 3, 100, 7, 30000};
    const int64_t caps[] = {1, 5, 3, 30000, 1000, 30000};
    const uint32_t rnds[] = {0, 1, 2, 49, 50, 51, 12345, 0x7fffffffu, 0xfffffffeu, 0xffffffffu};
    for (size_t k = 0; k < sizeof bases / sizeof bases[0]; k++) {
        ps_backoff b;
        ps_backoff_init(&b, bases[k], caps[k]);
        for (int a = 0; a < 80; a++) {
            for (size_t r = 0; r < sizeof rnds / sizeof rnds[0]; r++) {
                ps_backoff t = b;
                int64_t d = ps_backoff_next(&t, rnds[r]);
                assert_true(d >= 1);
                assert_true(d <= caps[k]);
                assert_int_equal(t.attempt, b.attempt + 1);
            }
            ps_backoff_next(&b, 0);
        }
    }
}

static void test_equal_jitter_lower_half(void **state)
{
    ps_backoff b;
    ps_backoff_init(&b, 100, 30000);
    /* attempt 0: ceiling 100 -> delays in [50, 100] */
    ps_backoff t = b;
    assert_int_equal(ps_backoff_next(&t, 0), 50);
    t = b;
    assert_int_equal(ps_backoff_next(&t, 50), 100);
    t = b;
    assert_int_equal(ps_backoff_next(&t, 51), 50);
    /* attempt 3: ceiling 800 -> [400, 800] */
    for (int i = 0; i < 3; i++)
        ps_backoff_next(&b, 0);
    t = b;
    assert_int_equal(ps_backoff_next(&t, 0), 400);
    t = b;
    assert_int_equal(ps_backoff_next(&t, 400), 800);
}

static void test_reset(void **state)
{
    ps_backoff b;
    ps_backoff_init(&b, 100, 30000);
    for (int i = 0; i < 20; i++)
        ps_backoff_next(&b, 7);
    assert_int_equal(ceiling_of(&b), 30000);
    ps_backoff_reset(&b);
    assert_int_equal(b.attempt, 0);
    assert_int_equal(ceiling_of(&b), 100);
    int64_t d = ps_backoff_next(&b, 3);
    assert_true(d >= 50 && d <= 100);
}

static void test_jitter_covers_range(void **state)
{
    /* Over many random inputs every value of [ceiling/2, ceiling] shows up:
     * the jitter really spreads reconnecting clients out. */
    ps_backoff b;
    ps_backoff_init(&b, 100, 30000);
    for (int i = 0; i < 2; i++)
        ps_backoff_next(&b, 0); /* ceiling 400: [200, 400] */
    unsigned char seen[401] = {0};
    uint32_t x = 2463534242u;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        ps_backoff t = b;
        int64_t d = ps_backoff_next(&t, x);
        assert_true(d >= 200 && d <= 400);
        seen[d] = 1;
    }
    for (int v = 200; v <= 400; v++)
        assert_true(seen[v]);
}

static void test_degenerate_init(void **state)
{
    ps_backoff b;
    ps_backoff_init(&b, 0, -5);
    assert_true(b.base_ms >= 1);
    assert_true(b.cap_ms >= b.base_ms);
    for (int i = 0; i < 10; i++)
        assert_true(ps_backoff_next(&b, (uint32_t)i) >= 1);
    /* a hand-built struct with a zero base must not yield 0 either */
    ps_backoff raw = {.base_ms = 0, .cap_ms = 0, .attempt = 0};
    assert_int_equal(ps_backoff_next(&raw, 0), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ceilings_double_then_cap),
        cmocka_unit_test(test_bounds_never_zero_never_above_cap),
        cmocka_unit_test(test_equal_jitter_lower_half),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_jitter_covers_range),
        cmocka_unit_test(test_degenerate_init),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
