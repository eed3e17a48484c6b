/*
 * test-chunk-policy.c - the chunk-size controller (src/sync/chunk_policy.c):
 * a cautious start, growth capped at half the size per chunk, convergence on
 * the target, the immediate cut after an outlier, the p90 window, the limits,
 * a reload, harmless zero inputs and the rate. No clock: each test plays a
 * table whose rows copy at a made-up rate and feeds the times by hand.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>

#include "pgshadow/chunk_policy.h"

/* Copy the next chunk of a table that copies `rate` rows per second: the
 * elapsed time the caller's clock would measure, rounded to the nearest
 * millisecond. Returns the chunk's size. */
static int64_t copy_at(ps_chunk_ctl *c, int64_t rate)
{
    int64_t rows = ps_chunk_ctl_next(c);
    int64_t ms = (rows * 1000 + rate / 2) / rate;
    ps_chunk_ctl_record(c, rows, ms);
    return rows;
}

/* |got - want| <= pct % of want */
static void assert_near(int64_t got, int64_t want, int64_t pct)
{
    int64_t d = got > want ? got - want : want - got;
    if (d * 100 > want * pct)
        fail_msg("%lld is not within %lld%% of %lld", (long long)got, (long long)pct,
                 (long long)want);
}

static void test_starts_small(void **state)
{
    (void)state;
    static const struct {
        int64_t max_rows, want, floor;
    } cases[] = {
        { 5000, PS_CHUNK_START_ROWS, PS_CHUNK_MIN_ROWS },
        { 1000000, PS_CHUNK_START_ROWS, PS_CHUNK_MIN_ROWS },
        { 300, 300, PS_CHUNK_MIN_ROWS },   /* a bound below the start */
        { 7, 7, 7 },                       /* a bound below the floor: the floor too */
        { 1, 1, 1 },
        { 0, 1, 1 },                       /* out of range: clamped, never 0 */
        { -5, 1, 1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ps_chunk_ctl c;
        ps_chunk_ctl_init(&c, 500, cases[i].max_rows);
        assert_int_equal(ps_chunk_ctl_next(&c), cases[i].want);
        assert_int_equal(c.min_rows, cases[i].floor);
        assert_int_equal(c.n_samples, 0);
    }
    assert_int_equal(PS_CHUNK_START_ROWS, 1000);
}

/* Fast chunks: 40,000 rows/s fits 20,000 rows in 500 ms, but the size gets
 * there in steps of at most +50% (rounded down), then stays. */
static void test_growth_capped(void **state)
{
    (void)state;
    static const int64_t steps[] = { 1000, 1500, 2250, 3375, 5062, 7593, 11389, 17083 };
    ps_chunk_ctl c;
    ps_chunk_ctl_init(&c, 500, 1000000);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        assert_int_equal(copy_at(&c, 40000), steps[i]);
    for (int i = 0; i < 30; i++) {
        int64_t prev = ps_chunk_ctl_next(&c);
        assert_near(copy_at(&c, 40000), 20000, 2);
        assert_true(ps_chunk_ctl_next(&c) <= prev + prev / 2);
    }
}

/* A steady rate: after a few dozen chunks the size is what fits in the
 * target (or the bound, or the floor), and each chunk takes about the
 * target. */
static void test_converges_on_target(void **state)
{
    (void)state;
    static const struct {
        int64_t target_ms, rate, max_rows, want;
    } cases[] = {
        { 500, 10000, 1000000, 5000 },
        { 500, 40000, 1000000, 20000 },
        { 2000, 50000, 1000000, 100000 },
        { 100, 1000000, 1000000, 100000 },
        { 60000, 1000, 1000000, 60000 },
        { 10, 100000, 5000, 1000 },
        { 500, 100, 1000000, 50 },           /* slower than the start: cut at once */
        { 500, 3, 1000000, PS_CHUNK_MIN_ROWS }, /* 1.5 rows fit: the floor */
        { 500, 10000000, 1000000, 1000000 },    /* 5M rows fit: the bound */
        { 500, 10000000, 5000, 5000 },          /* the default bound */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ps_chunk_ctl c;
        ps_chunk_ctl_init(&c, cases[i].target_ms, cases[i].max_rows);
        for (int k = 0; k < 50; k++)
            copy_at(&c, cases[i].rate);
        for (int k = 0; k < 10; k++) {
            int64_t rows = copy_at(&c, cases[i].rate);
            if (rows > cases[i].want * 103 / 100 || rows < cases[i].want * 97 / 100)
                fail_msg("case %zu: chunk %d has %lld rows, want %lld +- 3%%", i, k,
                         (long long)rows, (long long)cases[i].want);
        }
    }
}

/* One chunk at 10x the target: the next size is at most what that chunk's
 * own rate fits in the target, at once; the window holds only that chunk;
 * then the size grows back, never by more than half per chunk. */
static void test_outlier_cuts_at_once(void **state)
{
    (void)state;
    ps_chunk_ctl c;
    ps_chunk_ctl_init(&c, 500, 1000000);
    for (int k = 0; k < 40; k++)
        copy_at(&c, 10000);
    int64_t rows = ps_chunk_ctl_next(&c);
    assert_near(rows, 5000, 1);
    assert_int_equal(c.n_samples, PS_CHUNK_WINDOW);

    assert_true(ps_chunk_ctl_record(&c, rows, 5000));
    assert_true(ps_chunk_ctl_next(&c) <= rows * 500 / 5000);
    assert_int_equal(ps_chunk_ctl_next(&c), rows / 10);
    assert_int_equal(c.n_samples, 1); /* the older rates are gone */
    assert_int_equal(ps_chunk_ctl_rate(&c), rows * 1000 / 5000);

    /* the rate comes back: the size follows, capped per step */
    for (int k = 0; k < 40; k++) {
        int64_t prev = ps_chunk_ctl_next(&c);
        copy_at(&c, 10000);
        assert_true(ps_chunk_ctl_next(&c) <= prev + prev / 2);
    }
    assert_near(ps_chunk_ctl_next(&c), 5000, 1);

    /* exactly the factor is not an outlier; one ms more is */
    rows = ps_chunk_ctl_next(&c);
    assert_false(ps_chunk_ctl_record(&c, rows, PS_CHUNK_OUTLIER_FACTOR * 500));
    assert_int_equal(c.n_samples, PS_CHUNK_WINDOW);
    assert_true(ps_chunk_ctl_record(&c, rows, PS_CHUNK_OUTLIER_FACTOR * 500 + 1));
    assert_int_equal(c.n_samples, 1);
}

/* An outlier never grows the size: a large chunk handed out before a cut
 * (another worker's) reports a rate that would fit more than the size now. */
static void test_outlier_never_grows(void **state)
{
    (void)state;
    ps_chunk_ctl c;
    ps_chunk_ctl_init(&c, 500, 1000000);
    assert_true(ps_chunk_ctl_record(&c, 100000, 2500)); /* fits 20000 */
    assert_int_equal(ps_chunk_ctl_next(&c), 1000);
    /* a short tail chunk far over: the floor */
    assert_true(ps_chunk_ctl_record(&c, 10, 5000));
    assert_int_equal(ps_chunk_ctl_next(&c), PS_CHUNK_MIN_ROWS);
}

/* The size is aimed at the p90 of the window's time per row: one fast
 * chunk among slow ones does not make the next overshoot; in a full window
 * one slow chunk (under the outlier factor) does not shrink it; with fewer
 * samples the slowest counts. */
static void test_p90_window(void **state)
{
    (void)state;
    ps_chunk_ctl c;
    /* nine chunks at 1 row/ms, then one at 100 rows/ms */
    ps_chunk_ctl_init(&c, 500, 1000000);
    for (int k = 0; k < 9; k++)
        ps_chunk_ctl_record(&c, 1000, 1000);
    assert_int_equal(ps_chunk_ctl_next(&c), 500);
    ps_chunk_ctl_record(&c, 1000, 10);
    assert_int_equal(c.n_samples, 10);
    assert_int_equal(ps_chunk_ctl_next(&c), 500);

    /* nine chunks at 10 rows/ms, then one at 3.3 rows/ms (300 ms < 4 x 500) */
    ps_chunk_ctl_init(&c, 500, 1000000);
    for (int k = 0; k < 9; k++)
        ps_chunk_ctl_record(&c, 1000, 100);
    assert_int_equal(ps_chunk_ctl_next(&c), 5000);
    assert_false(ps_chunk_ctl_record(&c, 1000, 300));
    assert_int_equal(ps_chunk_ctl_next(&c), 5000);

    /* the same slow chunk after only four fast ones: p90 of 5 is the slowest */
    ps_chunk_ctl_init(&c, 500, 1000000);
    for (int k = 0; k < 4; k++)
        ps_chunk_ctl_record(&c, 1000, 100);
    assert_int_equal(ps_chunk_ctl_next(&c), 5000);
    assert_false(ps_chunk_ctl_record(&c, 1000, 300));
    assert_int_equal(ps_chunk_ctl_next(&c), 1000 * 500 / 300);
}

/* Whatever the chunks report, the size stays in [floor, max_rows] and no
 * record grows it by more than half. A fixed pseudo-random sequence of rows
 * (0 included) and times (0 to 20 x target) for several limits. */
static void test_bounds(void **state)
{
    (void)state;
    static const struct {
        int64_t target_ms, max_rows;
    } cases[] = {
        { 500, 5000 }, { 10, 1000000 }, { 60000, 1 }, { 500, 3 }, { 100, 10 }, { 500, 11 },
    };
    uint64_t x = 88172645463325252u; /* xorshift64 */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ps_chunk_ctl c;
        ps_chunk_ctl_init(&c, cases[i].target_ms, cases[i].max_rows);
        int64_t floor = cases[i].max_rows < PS_CHUNK_MIN_ROWS ? cases[i].max_rows
                                                              : PS_CHUNK_MIN_ROWS;
        for (int k = 0; k < 5000; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            int64_t prev = ps_chunk_ctl_next(&c);
            int64_t rows = (int64_t)(x % (uint64_t)(prev + 1));
            int64_t ms = (int64_t)((x >> 20) % (uint64_t)(20 * cases[i].target_ms + 1));
            ps_chunk_ctl_record(&c, rows, ms);
            int64_t next = ps_chunk_ctl_next(&c);
            int64_t cap = prev + (prev / 2 > 0 ? prev / 2 : 1);
            if (next < floor || next > cases[i].max_rows || next > cap)
                fail_msg("case %zu step %d: %lld rows in %lld ms: %lld -> %lld (floor %lld, "
                         "max %lld)", i, k, (long long)rows, (long long)ms, (long long)prev,
                         (long long)next, (long long)floor, (long long)cases[i].max_rows);
        }
    }
    /* the floor against a table so slow that nothing fits */
    ps_chunk_ctl c;
    ps_chunk_ctl_init(&c, 10, 1000000);
    for (int k = 0; k < 20; k++)
        ps_chunk_ctl_record(&c, ps_chunk_ctl_next(&c), 59000);
    assert_int_equal(ps_chunk_ctl_next(&c), PS_CHUNK_MIN_ROWS);
}

/* A reload: a lower bound applies at once, a new target re-aims the next
 * chunk from the measured rates (down at once, up by at most half), and the
 * outlier threshold follows the target. */
static void test_set_limits(void **state)
{
    (void)state;
    ps_chunk_ctl c;
    ps_chunk_ctl_init(&c, 500, 1000000);
    for (int k = 0; k < 40; k++)
        copy_at(&c, 40000);
    assert_near(ps_chunk_ctl_next(&c), 20000, 2);

    ps_chunk_ctl_set_limits(&c, 500, 5000);
    assert_int_equal(ps_chunk_ctl_next(&c), 5000);
    assert_int_equal(c.n_samples, PS_CHUNK_WINDOW); /* the rates are kept */
    ps_chunk_ctl_set_limits(&c, 500, 1000000);
    assert_int_equal(ps_chunk_ctl_next(&c), 7500); /* capped growth, not a jump */
    for (int k = 0; k < 20; k++)
        copy_at(&c, 40000);
    assert_near(ps_chunk_ctl_next(&c), 20000, 2);

    ps_chunk_ctl_set_limits(&c, 100, 1000000); /* target / 5 */
    assert_near(ps_chunk_ctl_next(&c), 4000, 2);
    assert_true(ps_chunk_ctl_record(&c, 4000, 500)); /* 5 x the new target */

    ps_chunk_ctl_set_limits(&c, 500, 3); /* below the floor */
    assert_int_equal(ps_chunk_ctl_next(&c), 3);
    assert_int_equal(c.min_rows, 3);
    ps_chunk_ctl_set_limits(&c, 0, 0); /* out of range: clamped */
    assert_int_equal(ps_chunk_ctl_next(&c), 1);
    assert_int_equal(c.target_ms, 1);
}

/* A chunk of no rows says nothing and changes nothing; a chunk faster than
 * the clock (0 ms, or a clock that went back) counts as 1 ms; absurd inputs
 * are clamped (the ASan/UBSan build would catch an overflow). */
static void test_zero_inputs(void **state)
{
    (void)state;
    ps_chunk_ctl c;
    ps_chunk_ctl_init(&c, 500, 5000);
    assert_false(ps_chunk_ctl_record(&c, 0, 100));
    assert_false(ps_chunk_ctl_record(&c, -1, 100));
    assert_false(ps_chunk_ctl_record(&c, 0, 0));
    assert_int_equal(c.n_samples, 0);
    assert_int_equal(ps_chunk_ctl_next(&c), 1000);
    assert_int_equal(ps_chunk_ctl_rate(&c), -1);

    assert_false(ps_chunk_ctl_record(&c, 100, 0));
    assert_int_equal(c.n_samples, 1);
    assert_int_equal(ps_chunk_ctl_rate(&c), 100000);
    assert_int_equal(ps_chunk_ctl_next(&c), 1500);
    assert_false(ps_chunk_ctl_record(&c, 100, -7));
    assert_int_equal(ps_chunk_ctl_rate(&c), 100000);
    assert_int_equal(ps_chunk_ctl_next(&c), 2250);

    ps_chunk_ctl_init(&c, INT64_MAX, INT64_MAX);
    assert_int_equal(c.target_ms, PS_CHUNK_MAX_MS);
    assert_int_equal(c.max_rows, PS_CHUNK_MAX_ROWS);
    ps_chunk_ctl_record(&c, INT64_MAX, INT64_MAX);
    ps_chunk_ctl_record(&c, INT64_MAX, 1);
    assert_true(ps_chunk_ctl_next(&c) >= 1 && ps_chunk_ctl_next(&c) <= PS_CHUNK_MAX_ROWS);
    assert_true(ps_chunk_ctl_rate(&c) > 0);
}

/* Rows per second over the window: all its rows over all its time; the
 * oldest sample leaves when the window is full. */
static void test_rate(void **state)
{
    (void)state;
    ps_chunk_ctl c;
    ps_chunk_ctl_init(&c, 500, 1000000);
    assert_int_equal(ps_chunk_ctl_rate(&c), -1);
    ps_chunk_ctl_record(&c, 1000, 500);
    assert_int_equal(ps_chunk_ctl_rate(&c), 2000);
    ps_chunk_ctl_record(&c, 3000, 500);
    assert_int_equal(ps_chunk_ctl_rate(&c), 4000);
    for (int k = 0; k < PS_CHUNK_WINDOW - 2; k++)
        ps_chunk_ctl_record(&c, 1000, 1000);
    assert_int_equal(c.n_samples, PS_CHUNK_WINDOW); /* full, none left yet */
    assert_int_equal(ps_chunk_ctl_rate(&c), (4000 + 8 * 1000) * 1000 / (1000 + 8 * 1000));
    ps_chunk_ctl_record(&c, 1000, 1000); /* the first (1000 rows, 500 ms) leaves */
    assert_int_equal(c.n_samples, PS_CHUNK_WINDOW);
    assert_int_equal(ps_chunk_ctl_rate(&c), (3000 + 9 * 1000) * 1000 / (500 + 9 * 1000));
    ps_chunk_ctl_record(&c, 1000, 1000); /* and the second */
    assert_int_equal(ps_chunk_ctl_rate(&c), 1000);

    ps_chunk_ctl_init(&c, 500, 1000000); /* rounded down */
    ps_chunk_ctl_record(&c, 1, 3);
    assert_int_equal(ps_chunk_ctl_rate(&c), 333);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_starts_small),
        cmocka_unit_test(test_growth_capped),
        cmocka_unit_test(test_converges_on_target),
        cmocka_unit_test(test_outlier_cuts_at_once),
        cmocka_unit_test(test_outlier_never_grows),
        cmocka_unit_test(test_p90_window),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_set_limits),
        cmocka_unit_test(test_zero_inputs),
        cmocka_unit_test(test_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
