/*
 * test-monitor-policy.c - the dashboard poller's pure decisions (no
 * database): verdict names, freshness against a fake clock (late after
 * 2 x poll_interval + 1 s, a failed poll is stale at once), the log line of
 * each change (and silence when nothing changed), and the STATUS= words.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "pgshadow/monitor.h"

static void test_status_names(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int rc;
        ps_monitor_status want;
    } cases[] = {
        {"READY_FOR_CUTOVER", 0, PS_MONITOR_READY},
        {"MONITORING_REQUIRED", 0, PS_MONITOR_MONITORING},
        {"ROLLBACK_RECOMMENDED", 0, PS_MONITOR_ROLLBACK},
        {"ready_for_cutover", -22, PS_MONITOR_READY}, /* exact words only */
        {"", -22, PS_MONITOR_READY},
        {"READY_FOR_CUTOVER ", -22, PS_MONITOR_READY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ps_monitor_status got = PS_MONITOR_READY;
        int rc = ps_monitor_status_parse(cases[i].text, &got);
        if (rc != cases[i].rc || (rc == 0 && got != cases[i].want))
            fail_msg("case %zu '%s': rc %d status %d, want rc %d status %d", i, cases[i].text, rc,
                     (int)got, cases[i].rc, (int)cases[i].want);
        if (rc == 0)
            assert_string_equal(ps_monitor_status_name(got), cases[i].text);
    }
    ps_monitor_status dummy;
    assert_int_equal(ps_monitor_status_parse(NULL, &dummy), -22);
}

/* A fake clock: polling starts at t = 1000 ms with a 200 ms interval, so the
 * late limit is 2 x 200 + 1000 = 1400 ms. */
#define T0 1000
#define IV 200

static void test_late_limit(void **state)
{
    (void)state;
    assert_int_equal(ps_monitor_late_ms(IV), 1400);
    assert_int_equal(ps_monitor_late_ms(10000), 21000);
}

static void test_freshness_table(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        int64_t last_ok;  /* -1: none yet */
        bool last_failed;
        int64_t now;
        ps_monitor_freshness want;
    } cases[] = {
        {"just started, nothing back", -1, false, T0, PS_MONITOR_WAITING},
        {"first poll slow but in time", -1, false, T0 + 1400, PS_MONITOR_WAITING},
        {"first poll never returned", -1, false, T0 + 1401, PS_MONITOR_LATE},
        {"first poll failed", -1, true, T0 + 10, PS_MONITOR_FAILED},
        {"fresh answer", T0 + 50, false, T0 + 60, PS_MONITOR_FRESH},
        {"one poll skipped", T0 + 50, false, T0 + 50 + 2 * IV, PS_MONITOR_FRESH},
        {"exactly at the limit", T0 + 50, false, T0 + 50 + 1400, PS_MONITOR_FRESH},
        {"one ms past the limit", T0 + 50, false, T0 + 50 + 1401, PS_MONITOR_LATE},
        {"long silence", T0 + 50, false, T0 + 60000, PS_MONITOR_LATE},
        {"failed right after a success", T0 + 50, true, T0 + 60, PS_MONITOR_FAILED},
        {"failed and late: failed wins", T0 + 50, true, T0 + 60000, PS_MONITOR_FAILED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ps_monitor_clock c = {.started_ms = T0, .last_ok_ms = cases[i].last_ok,
                              .last_failed = cases[i].last_failed};
        ps_monitor_freshness got = ps_monitor_freshness_at(&c, cases[i].now, IV);
        if (got != cases[i].want)
            fail_msg("case %zu (%s): freshness %d, want %d", i, cases[i].what, (int)got,
                     (int)cases[i].want);
    }
}

/* A poll interval changed by a reload changes the limit at once: the clock
 * is the same, the answer is not. */
static void test_freshness_follows_interval(void **state)
{
    (void)state;
    ps_monitor_clock c = {.started_ms = T0, .last_ok_ms = T0, .last_failed = false};
    assert_int_equal(ps_monitor_freshness_at(&c, T0 + 3000, 10000), PS_MONITOR_FRESH);
    assert_int_equal(ps_monitor_freshness_at(&c, T0 + 3000, IV), PS_MONITOR_LATE);
}

/* Only fresh data has a verdict: a failed or late poll is stale, whatever
 * the last snapshot said. */
static void test_says_from(void **state)
{
    (void)state;
    static const struct {
        ps_monitor_freshness f;
        ps_monitor_status st;
        ps_monitor_says want;
    } cases[] = {
        {PS_MONITOR_WAITING, PS_MONITOR_READY, PS_MONITOR_SAYS_NOTHING},
        {PS_MONITOR_FRESH, PS_MONITOR_READY, PS_MONITOR_SAYS_READY},
        {PS_MONITOR_FRESH, PS_MONITOR_MONITORING, PS_MONITOR_SAYS_MONITORING},
        {PS_MONITOR_FRESH, PS_MONITOR_ROLLBACK, PS_MONITOR_SAYS_ROLLBACK},
        {PS_MONITOR_FAILED, PS_MONITOR_READY, PS_MONITOR_SAYS_STALE},
        {PS_MONITOR_LATE, PS_MONITOR_READY, PS_MONITOR_SAYS_STALE},
        {PS_MONITOR_LATE, PS_MONITOR_ROLLBACK, PS_MONITOR_SAYS_STALE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ps_monitor_says got = ps_monitor_says_from(cases[i].f, cases[i].st);
        if (got != cases[i].want)
            fail_msg("case %zu: says %d, want %d", i, (int)got, (int)cases[i].want);
    }
}

#define N PS_MONITOR_SAYS_NOTHING
#define S PS_MONITOR_SAYS_STALE
#define R PS_MONITOR_SAYS_READY
#define M PS_MONITOR_SAYS_MONITORING
#define B PS_MONITOR_SAYS_ROLLBACK

static void test_transition_table(void **state)
{
    (void)state;
    static const struct {
        ps_monitor_says prev, next;
        const char *why;
        const char *want; /* NULL: nothing to log */
        int prio;
    } cases[] = {
        /* the first reading */
        {N, R, NULL, "dashboard: READY_FOR_CUTOVER", LOG_NOTICE},
        {N, M, NULL, "dashboard: MONITORING_REQUIRED", LOG_NOTICE},
        {N, B, NULL, "dashboard: ROLLBACK_RECOMMENDED", LOG_WARNING},
        {N, S, "poll failed: 42P01 relation does not exist",
         "dashboard: stale (poll failed: 42P01 relation does not exist)", LOG_WARNING},
        /* verdict to verdict */
        {M, R, NULL, "dashboard: MONITORING_REQUIRED -> READY_FOR_CUTOVER", LOG_NOTICE},
        {R, M, NULL, "dashboard: READY_FOR_CUTOVER -> MONITORING_REQUIRED", LOG_NOTICE},
        {R, B, NULL, "dashboard: READY_FOR_CUTOVER -> ROLLBACK_RECOMMENDED", LOG_WARNING},
        {B, M, NULL, "dashboard: ROLLBACK_RECOMMENDED -> MONITORING_REQUIRED", LOG_NOTICE},
        /* to and from stale */
        {R, S, "no answer for 1.4s", "dashboard: stale (no answer for 1.4s)", LOG_WARNING},
        {B, S, NULL, "dashboard: stale (no data)", LOG_WARNING},
        {M, S, "", "dashboard: stale (no data)", LOG_WARNING},
        {S, R, NULL, "dashboard: fresh again (READY_FOR_CUTOVER)", LOG_NOTICE},
        {S, B, NULL, "dashboard: fresh again (ROLLBACK_RECOMMENDED)", LOG_WARNING},
        /* no change, or going quiet: nothing */
        {R, R, NULL, NULL, 0},
        {S, S, "poll failed: again", NULL, 0},
        {N, N, NULL, NULL, 0},
        {R, N, NULL, NULL, 0},
        {S, N, NULL, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char buf[160] = "untouched";
        int prio = -1;
        bool said = ps_monitor_transition(cases[i].prev, cases[i].next, cases[i].why, buf,
                                          sizeof buf, &prio);
        if (!cases[i].want) {
            if (said)
                fail_msg("case %zu: %d -> %d said '%s', want nothing", i, (int)cases[i].prev,
                         (int)cases[i].next, buf);
            continue;
        }
        if (!said || strcmp(buf, cases[i].want) != 0 || prio != cases[i].prio)
            fail_msg("case %zu: %d -> %d: said=%d '%s' prio %d, want '%s' prio %d", i,
                     (int)cases[i].prev, (int)cases[i].next, said, buf, prio, cases[i].want,
                     cases[i].prio);
    }
}

/* A run of polls against a fake clock, as the poller feeds them: the log
 * gets one line per change, not one per poll. */
static void test_one_line_per_change(void **state)
{
    (void)state;
    static const struct {
        int64_t at;
        int outcome; /* 0 none ended, 1 ok, 2 failed */
        ps_monitor_status st;
    } polls[] = {
        {T0, 0, PS_MONITOR_READY},            /* sent, nothing back */
        {T0 + 20, 1, PS_MONITOR_MONITORING},  /* "dashboard: MONITORING_REQUIRED" */
        {T0 + 220, 1, PS_MONITOR_MONITORING},
        {T0 + 420, 1, PS_MONITOR_MONITORING},
        {T0 + 620, 1, PS_MONITOR_READY},      /* "-> READY_FOR_CUTOVER" */
        {T0 + 820, 1, PS_MONITOR_READY},
        {T0 + 1020, 2, PS_MONITOR_READY},     /* "stale (poll failed)" */
        {T0 + 1220, 2, PS_MONITOR_READY},
        {T0 + 1420, 1, PS_MONITOR_READY},     /* "fresh again" */
        {T0 + 1620, 0, PS_MONITOR_READY},     /* a poll hangs... */
        {T0 + 2820, 0, PS_MONITOR_READY},     /* ...still in time (1400 after 1420) */
        {T0 + 2821, 0, PS_MONITOR_READY},     /* "stale (late)" */
        {T0 + 4000, 0, PS_MONITOR_READY},
        {T0 + 4010, 1, PS_MONITOR_READY},     /* "fresh again" */
    };
    static const char *const want[] = {
        "dashboard: MONITORING_REQUIRED",
        "dashboard: MONITORING_REQUIRED -> READY_FOR_CUTOVER",
        "dashboard: stale (poll failed)",
        "dashboard: fresh again (READY_FOR_CUTOVER)",
        "dashboard: stale (late)",
        "dashboard: fresh again (READY_FOR_CUTOVER)",
    };
    ps_monitor_clock c = {.started_ms = T0, .last_ok_ms = -1};
    ps_monitor_status st = PS_MONITOR_READY;
    ps_monitor_says reported = PS_MONITOR_SAYS_NOTHING;
    size_t lines = 0;
    for (size_t i = 0; i < sizeof polls / sizeof *polls; i++) {
        if (polls[i].outcome == 1) {
            c.last_ok_ms = polls[i].at;
            c.last_failed = false;
            st = polls[i].st;
        } else if (polls[i].outcome == 2) {
            c.last_failed = true;
        }
        ps_monitor_freshness f = ps_monitor_freshness_at(&c, polls[i].at, IV);
        ps_monitor_says now = ps_monitor_says_from(f, st);
        char buf[128];
        int prio;
        if (ps_monitor_transition(reported, now, f == PS_MONITOR_FAILED ? "poll failed" : "late",
                                  buf, sizeof buf, &prio)) {
            assert_true(lines < sizeof want / sizeof *want);
            assert_string_equal(buf, want[lines]);
            lines++;
        }
        reported = now;
    }
    assert_int_equal(lines, sizeof want / sizeof *want);
}

static void test_status_words(void **state)
{
    (void)state;
    char buf[64];
    assert_int_equal(ps_monitor_format_status(R, buf, sizeof buf), strlen("dashboard READY_FOR_CUTOVER"));
    assert_string_equal(buf, "dashboard READY_FOR_CUTOVER");
    ps_monitor_format_status(M, buf, sizeof buf);
    assert_string_equal(buf, "dashboard MONITORING_REQUIRED");
    ps_monitor_format_status(B, buf, sizeof buf);
    assert_string_equal(buf, "dashboard ROLLBACK_RECOMMENDED");
    assert_int_equal(ps_monitor_format_status(S, buf, sizeof buf), strlen("dashboard stale"));
    assert_string_equal(buf, "dashboard stale");
    strcpy(buf, "x");
    assert_int_equal(ps_monitor_format_status(N, buf, sizeof buf), 0);
    assert_string_equal(buf, "x");
    /* truncated, never past the buffer */
    char small[8];
    assert_int_equal(ps_monitor_format_status(R, small, sizeof small), 7);
    assert_string_equal(small, "dashboa");
}

/* Without the module there is no snapshot (the cutover then sees no data). */
static void test_latest_without_module(void **state)
{
    (void)state;
    assert_null(ps_monitor_latest(NULL, 12345));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_late_limit),
        cmocka_unit_test(test_freshness_table),
        cmocka_unit_test(test_freshness_follows_interval),
        cmocka_unit_test(test_says_from),
        cmocka_unit_test(test_transition_table),
        cmocka_unit_test(test_one_line_per_change),
        cmocka_unit_test(test_status_words),
        cmocka_unit_test(test_latest_without_module),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
