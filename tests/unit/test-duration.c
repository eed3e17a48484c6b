/*
 * test-duration.c - duration parsing (units, overflow, junk) and formatting.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "pgshadow/duration.h"

static void test_parse_units(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int64_t ms;
    } ok[] = {
        { "0ms", 0 },       { "0s", 0 },         { "250ms", 250 },    { "30s", 30000 },
        { "5m", 300000 },   { "2h", 7200000 },   { "1d", 86400000 },  { "007s", 7000 },
        { "9223372036854775807ms", INT64_MAX },  { "106751991167d", 106751991167LL * 86400000 },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t ms = -1;
        const char *why = NULL;
        if (ps_duration_parse(ok[i].in, &ms, &why) != 0)
            fail_msg("%s: %s", ok[i].in, why);
        assert_int_equal(ms, ok[i].ms);
    }
}

static void test_parse_rejects(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *why;
    } bad[] = {
        { "", "empty duration" },
        { "30", "a duration needs a unit (ms, s, m, h, d)" },
        { "-1s", "a duration is a non-negative integer followed by a unit (ms, s, m, h, d)" },
        { "+1s", "a duration is a non-negative integer followed by a unit (ms, s, m, h, d)" },
        { " 1s", "a duration is a non-negative integer followed by a unit (ms, s, m, h, d)" },
        { "s", "a duration is a non-negative integer followed by a unit (ms, s, m, h, d)" },
        { "1.5s", "unknown duration unit (use ms, s, m, h or d)" },
        { "1 s", "unknown duration unit (use ms, s, m, h or d)" },
        { "1S", "unknown duration unit (use ms, s, m, h or d)" },
        { "1sec", "unknown duration unit (use ms, s, m, h or d)" },
        { "1s ", "unknown duration unit (use ms, s, m, h or d)" },
        { "1h30m", "unknown duration unit (use ms, s, m, h or d)" },
        { "1w", "unknown duration unit (use ms, s, m, h or d)" },
        { "9223372036854775808ms", "duration is too large" },
        { "99999999999999999999999s", "duration is too large" },
        { "106751991168d", "duration is too large" },
        { "9223372036854776s", "duration is too large" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = 12345;
        const char *why = NULL;
        if (ps_duration_parse(bad[i].in, &ms, &why) != -1)
            fail_msg("%s accepted", bad[i].in);
        assert_non_null(why);
        assert_string_equal(why, bad[i].why);
        assert_int_equal(ms, 12345); /* untouched on failure */
    }
    int64_t ms;
    assert_int_equal(ps_duration_parse(NULL, &ms, NULL), -1);
}

static void test_format(void **state)
{
    (void)state;
    static const struct {
        int64_t ms;
        const char *out;
    } cases[] = {
        { 0, "0s" },           { 1, "1ms" },       { 250, "250ms" },      { 1000, "1s" },
        { 1500, "1500ms" },    { 30000, "30s" },   { 60000, "1m" },       { 90000, "90s" },
        { 3600000, "1h" },     { 5400000, "90m" }, { 86400000, "1d" },    { 172800000, "2d" },
        { 90000000, "25h" },   { -5, "-5ms" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[32];
        ps_duration_format(cases[i].ms, buf, sizeof buf);
        assert_string_equal(buf, cases[i].out);
    }
    char small[3];
    ps_duration_format(250, small, sizeof small);
    assert_string_equal(small, "25");
}

static void test_roundtrip(void **state)
{
    (void)state;
    int64_t values[] = { 0, 1, 999, 1000, 61000, 3600000, 86400000, 123456789, INT64_MAX };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char buf[32];
        int64_t back = -1;
        ps_duration_format(values[i], buf, sizeof buf);
        assert_int_equal(ps_duration_parse(buf, &back, NULL), 0);
        assert_int_equal(back, values[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_units),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
