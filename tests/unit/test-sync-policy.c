/*
 * test-sync-policy.c - the sync engine's pure decisions (no database): what
 * to do next given the state, throttling, backfill percent/rate/ETA and the
 * STATUS= text (the duration format is util's: tests/unit/test-util.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "pgshadow/leader.h"
#include "pgshadow/sync_policy.h"
#include "pgshadow/util.h"

/* A leader with a fresh probe and nothing to do, at t = 10 s. */
static ps_sync_state idle_leader(void)
{
    ps_sync_state s = {
        .now_ms = 10000,
        .conn_up = true,
        .leader = true,
        .backfill_done = true,
        .probe_at_ms = 10500,
        .repl_lag_ms = 0,
        .max_repl_lag_ms = 10000,
    };
    return s;
}

static ps_sync_action next(const ps_sync_state *s, int64_t *wait)
{
    return ps_sync_next(s, wait);
}

static void test_stopping_starts_nothing(void **state)
{
    (void)state;
    ps_sync_state s = idle_leader();
    s.stopping = true;
    s.apply_pending = true;
    s.backfill_done = false;
    s.probe_at_ms = 0;
    int64_t w;
    assert_int_equal(next(&s, &w), PS_SYNC_IDLE);
    assert_int_equal(w, -1);
    s.leader = false; /* not even a lock attempt */
    assert_int_equal(next(&s, &w), PS_SYNC_IDLE);
}

static void test_connection_down_polls(void **state)
{
    (void)state;
    ps_sync_state s = idle_leader();
    s.conn_up = false;
    s.apply_pending = true;
    int64_t w;
    assert_int_equal(next(&s, &w), PS_SYNC_WAIT);
    assert_int_equal(w, PS_SYNC_CONN_POLL_MS);
}

/* The lock retries moved with the lock to the leader module
 * (tests/unit/test-leader-policy.c: test_standby_only_retries_the_lock); what stays
 * here is the engine's half: a standby does none of the work, and does not
 * even poll (on_leader wakes it). */
static void test_standby_does_nothing(void **state)
{
    (void)state;
    ps_sync_state s = idle_leader();
    s.leader = false;
    s.apply_pending = true;   /* work waiting... */
    s.backfill_done = false;  /* ...of both kinds... */
    s.probe_at_ms = 0;        /* ...and a probe due: a standby does none of it */
    s.arm_needed = true;
    s.registry_check = true;
    int64_t w;
    assert_int_equal(next(&s, &w), PS_SYNC_IDLE);
    assert_int_equal(w, -1);
}

/* The config vs registry comparison runs first when asked for (on taking the
 * lead, after a reload), even before an error back-off ends; never on a
 * standby or while stopping. */
static void test_registry_check_first(void **state)
{
    (void)state;
    ps_sync_state s = idle_leader();
    s.registry_check = true;
    s.apply_pending = true;
    s.probe_at_ms = 0;
    s.retry_after_ms = 20000;
    int64_t w;
    assert_int_equal(next(&s, &w), PS_SYNC_REGISTRY);
    assert_int_equal(w, -1);
    s.registry_check = false;
    assert_int_equal(next(&s, &w), PS_SYNC_WAIT); /* the back-off again */
    s.registry_check = true;
    s.leader = false;
    assert_int_equal(next(&s, &w), PS_SYNC_IDLE);
    s.leader = true;
    s.stopping = true;
    assert_int_equal(next(&s, &w), PS_SYNC_IDLE);
}

static void test_error_backoff(void **state)
{
    (void)state;
    ps_sync_state s = idle_leader();
    s.apply_pending = true;
    s.retry_after_ms = 11000;
    int64_t w;
    assert_int_equal(next(&s, &w), PS_SYNC_WAIT);
    assert_int_equal(w, 1000);
    s.now_ms = 11000;
    s.probe_at_ms = 20000;
    assert_int_equal(next(&s, &w), PS_SYNC_APPLY);
}

static void test_probe_comes_first_then_waits_for_it(void **state)
{
    (void)state;
    ps_sync_state s = idle_leader();
    s.probe_at_ms = 0;
    s.apply_pending = true;
    int64_t w;
    assert_int_equal(next(&s, &w), PS_SYNC_PROBE);
    /* nothing to do: sleep until the next probe */
    s = idle_leader();
    assert_int_equal(next(&s, &w), PS_SYNC_WAIT);
    assert_int_equal(w, 500);
}

static void test_apply_when_pending(void **state)
{
    (void)state;
    ps_sync_state s = idle_leader();
    s.apply_pending = true;
    int64_t w;
    assert_int_equal(next(&s, &w), PS_SYNC_APPLY);
    assert_int_equal(w, -1);
}

static void test_backfill_alternates_with_apply(void **state)
{
    (void)state;
    ps_sync_state s = idle_leader();
    s.backfill_done = false;
    int64_t w;
    /* only backfill has work: back to back */
    assert_int_equal(next(&s, &w), PS_SYNC_BACKFILL);
    s.last_was_backfill = true;
    assert_int_equal(next(&s, &w), PS_SYNC_BACKFILL);
    /* both have work: alternate */
    s.apply_pending = true;
    assert_int_equal(next(&s, &w), PS_SYNC_APPLY);
    s.last_was_backfill = false;
    assert_int_equal(next(&s, &w), PS_SYNC_BACKFILL);
}

/* backfill_plan runs at most every PS_SYNC_PLAN_MS (the pool copies in
 * between): before its time apply still runs, and the wait ends at it. */
static void test_backfill_plan_paced(void **state)
{
    (void)state;
    ps_sync_state s = idle_leader();
    s.backfill_done = false;
    s.backfill_plan_at_ms = s.now_ms + 300;
    int64_t w;
    assert_int_equal(next(&s, &w), PS_SYNC_WAIT);
    assert_int_equal(w, 300);
    s.apply_pending = true;
    assert_int_equal(next(&s, &w), PS_SYNC_APPLY);
    s.apply_pending = false;
    s.now_ms += 300;
    s.probe_at_ms = s.now_ms + 500;
    assert_int_equal(next(&s, &w), PS_SYNC_BACKFILL);
    /* a later probe deadline does not hide the plan's */
    s.backfill_plan_at_ms = s.now_ms + 100;
    assert_int_equal(next(&s, &w), PS_SYNC_WAIT);
    assert_int_equal(w, 100);
}

static void test_throttle_levels(void **state)
{
    (void)state;
    assert_int_equal(ps_sync_throttle_for(-1, 10000), PS_SYNC_THROTTLE_NONE); /* unknown */
    assert_int_equal(ps_sync_throttle_for(99999999, 0), PS_SYNC_THROTTLE_NONE); /* off */
    assert_int_equal(ps_sync_throttle_for(10000, 10000), PS_SYNC_THROTTLE_NONE);
    assert_int_equal(ps_sync_throttle_for(10001, 10000), PS_SYNC_THROTTLE_BACKFILL);
    assert_int_equal(ps_sync_throttle_for(30000, 10000), PS_SYNC_THROTTLE_BACKFILL);
    assert_int_equal(ps_sync_throttle_for(30001, 10000), PS_SYNC_THROTTLE_APPLY);
    assert_int_equal(ps_sync_throttle_for(INT64_MAX, INT64_MAX - 1), PS_SYNC_THROTTLE_BACKFILL);
}

static void test_lag_pauses_backfill_not_apply(void **state)
{
    (void)state;
    ps_sync_state s = idle_leader();
    s.backfill_done = false;
    s.repl_lag_ms = 15000; /* > 10 s */
    int64_t w;
    assert_int_equal(next(&s, &w), PS_SYNC_WAIT); /* backfill paused */
    assert_int_equal(w, 500);                     /* until the next probe */
    s.apply_pending = true;
    assert_int_equal(next(&s, &w), PS_SYNC_APPLY); /* apply goes on at full speed */
}

static void test_hard_lag_slows_apply(void **state)
{
    (void)state;
    ps_sync_state s = idle_leader();
    s.repl_lag_ms = 40000; /* > 3 x 10 s */
    s.apply_pending = true;
    s.apply_not_before_ms = 10200;
    int64_t w;
    assert_int_equal(next(&s, &w), PS_SYNC_WAIT);
    assert_int_equal(w, 200);
    s.now_ms = 10200;
    assert_int_equal(next(&s, &w), PS_SYNC_APPLY);
    /* without a limit the same lag throttles nothing */
    s = idle_leader();
    s.max_repl_lag_ms = 0;
    s.repl_lag_ms = 40000;
    s.apply_pending = true;
    s.apply_not_before_ms = 99999;
    s.backfill_done = false;
    s.last_was_backfill = true;
    assert_int_equal(next(&s, &w), PS_SYNC_APPLY);
}

static void test_halted_applies_and_copies_nothing(void **state)
{
    (void)state;
    ps_sync_state s = idle_leader();
    s.halted = true;
    s.apply_pending = true;
    s.backfill_done = false;
    int64_t w;
    assert_int_equal(next(&s, &w), PS_SYNC_WAIT);
    s.probe_at_ms = 0; /* still measures, for STATUS */
    assert_int_equal(next(&s, &w), PS_SYNC_PROBE);
}

/* The wake-up flag is armed once the log was found empty: after apply (a
 * pending apply wins), never while a backfill chunk is waiting (the daemon
 * comes back to apply after each chunk anyway), unless the backfill is held
 * by the replication-lag throttle; never while halted or standby. */
static void test_arm_after_empty_round(void **state)
{
    (void)state;
    ps_sync_state s = idle_leader();
    int64_t w;
    assert_int_equal(next(&s, &w), PS_SYNC_WAIT); /* nothing to arm */
    s.arm_needed = true;
    assert_int_equal(next(&s, &w), PS_SYNC_ARM);
    assert_int_equal(w, -1);
    s.apply_pending = true;
    assert_int_equal(next(&s, &w), PS_SYNC_APPLY);
    s.apply_pending = false;
    s.backfill_done = false;
    assert_int_equal(next(&s, &w), PS_SYNC_BACKFILL);
    s.repl_lag_ms = 20000; /* > max: backfill paused, arm */
    assert_int_equal(next(&s, &w), PS_SYNC_ARM);
    s.repl_lag_ms = 0;
    s.backfill_done = true;
    s.halted = true;
    assert_int_equal(next(&s, &w), PS_SYNC_WAIT);
    s.halted = false;
    s.probe_at_ms = 0; /* the probe still comes first */
    assert_int_equal(next(&s, &w), PS_SYNC_PROBE);
    s.probe_at_ms = 10500;
    s.leader = false; /* a standby: nothing, not even a wait (was: wait for the lock retry) */
    assert_int_equal(next(&s, &w), PS_SYNC_IDLE);
}

static void test_percent(void **state)
{
    (void)state;
    assert_int_equal(ps_sync_percent(0, 0, false), 0);
    assert_int_equal(ps_sync_percent(5, 0, false), 0); /* no estimate */
    assert_int_equal(ps_sync_percent(41, 100, false), 41);
    assert_int_equal(ps_sync_percent(999, 1000, false), 99);
    assert_int_equal(ps_sync_percent(1500, 1000, false), 99); /* estimate exceeded */
    assert_int_equal(ps_sync_percent(10, 1000, true), 100);
    assert_int_equal(ps_sync_percent(INT64_MAX / 2, INT64_MAX, false), 50);
}

static void test_rate_and_eta(void **state)
{
    (void)state;
    /* 1000 rows in 2 s since (0 rows, t=1000): 500 rows/s; 4000 left: 8 s */
    assert_int_equal(ps_sync_rate(0, 1000, 1000, 3000), 500);
    assert_int_equal(ps_sync_eta_ms(0, 1000, 1000, 5000, 3000), 8000);
    /* resumed at 3000 rows: only what this run copied counts */
    assert_int_equal(ps_sync_eta_ms(3000, 0, 4000, 10000, 1000), 6000);
    /* unknown: no time, no rows, estimate reached */
    assert_int_equal(ps_sync_rate(0, 1000, 1000, 1000), -1);
    assert_int_equal(ps_sync_eta_ms(0, 1000, 1000, 5000, 1000), -1);
    assert_int_equal(ps_sync_eta_ms(500, 0, 500, 5000, 1000), -1);
    assert_int_equal(ps_sync_eta_ms(0, 0, 5000, 5000, 1000), -1);
    assert_int_equal(ps_sync_eta_ms(0, 0, 6000, 5000, 1000), -1);
    /* huge numbers do not overflow */
    assert_true(ps_sync_eta_ms(0, 0, 1, INT64_MAX, INT64_MAX / 4) > 0);
}

/* The words after "connected; " as the daemon writes them: the leader
 * module's role, then, on a leader only, "; " and the sync engine's words
 * (src/daemon/daemon.c build_status, src/daemon/modules.c). */
static size_t status_words(ps_leader_role role, const ps_sync_view *v, char *b, size_t len)
{
    size_t pos = ps_leader_format_status(role, b, len);
    if (role == PS_LEADER_ROLE_LEADER) {
        char part[128];
        if (ps_sync_format_status(v, part, sizeof part) > 0)
            ps_appendf(b, len, &pos, "; %s", part);
    }
    return pos;
}

static void test_status_texts(void **state)
{
    (void)state;
    char b[128];
    ps_sync_view v = {.bf_eta_ms = -1, .sync_lag_s = -1};
    status_words(PS_LEADER_ROLE_STANDBY, &v, b, sizeof b);
    assert_string_equal(b, "standby: another pgshadowd holds the lock");

    status_words(PS_LEADER_ROLE_UNKNOWN, &v, b, sizeof b);
    assert_string_equal(b, "sync: acquiring leader lock");

    v = (ps_sync_view){.bf_table = "contexts", .bf_percent = 41,
                       .bf_eta_ms = 120000, .sync_lag_s = 0.3};
    size_t n = status_words(PS_LEADER_ROLE_LEADER, &v, b, sizeof b);
    assert_string_equal(b, "leader; backfill contexts 41% ETA 2m00s; lag 0.3s");
    assert_int_equal(n, strlen(b));

    v.bf_eta_ms = -1;
    v.sync_lag_s = -1;
    status_words(PS_LEADER_ROLE_LEADER, &v, b, sizeof b);
    assert_string_equal(b, "leader; backfill contexts 41%; lag -");

    v = (ps_sync_view){.backfill_done = true, .sync_lag_s = 1.25,
                       .bf_eta_ms = -1};
    status_words(PS_LEADER_ROLE_LEADER, &v, b, sizeof b);
    assert_string_equal(b, "leader; backfill done; lag 1.2s");

    v = (ps_sync_view){.throttle = PS_SYNC_THROTTLE_APPLY,
                       .repl_lag_ms = 45000, .bf_table = "t", .sync_lag_s = 2.0};
    status_words(PS_LEADER_ROLE_LEADER, &v, b, sizeof b);
    assert_string_equal(b, "leader; backfill paused (replication lag 45.000s); apply slowed; lag 2.0s");

    v = (ps_sync_view){.halted = "contexts: 23514 new row violates check constraint (key {1})",
                       .sync_lag_s = 9};
    status_words(PS_LEADER_ROLE_LEADER, &v, b, sizeof b);
    assert_string_equal(
        b, "leader; HALTED: contexts: 23514 new row violates check constraint (key {1})");

    /* truncation: never past the buffer, NUL-terminated, length honest */
    char small[16];
    n = status_words(PS_LEADER_ROLE_LEADER, &v, small, sizeof small);
    assert_int_equal(n, strlen(small));
    assert_true(n < sizeof small);
    assert_memory_equal(small, "leader; HALTED:", n);
    /* and the engine's formatter on its own */
    n = ps_sync_format_status(&v, small, sizeof small);
    assert_int_equal(n, strlen(small));
    assert_true(n < sizeof small);
    assert_memory_equal(small, "HALTED: context", n);
}

/* A wake-up that arrived while an apply round was in flight survives the
 * round's result, whatever it took (2c: it used to be overwritten). */
static void test_wakeup_during_apply_kept(void **state)
{
    (void)state;
    ps_sync_state s = {.conn_up = true, .leader = true, .backfill_done = true,
                       .probe_at_ms = 1000000, .repl_lag_ms = -1};
    int64_t wait;
    s.apply_pending = true; /* the NOTIFY during the round */
    ps_sync_after_apply(&s, 3, 10);
    assert_true(s.apply_pending);
    assert_int_equal(ps_sync_next(&s, &wait), PS_SYNC_APPLY);
    s.apply_pending = true;
    ps_sync_after_apply(&s, 0, 10);
    assert_true(s.apply_pending);
    /* nothing arrived: a partial batch ends the drain, a full one goes on */
    s.apply_pending = false;
    ps_sync_after_apply(&s, 3, 10);
    assert_false(s.apply_pending);
    assert_int_equal(ps_sync_next(&s, &wait), PS_SYNC_WAIT);
    ps_sync_after_apply(&s, 10, 10);
    assert_true(s.apply_pending);
}

static void test_status_config_differs(void **state)
{
    (void)state;
    char buf[256];
    ps_sync_view v = {.backfill_done = true, .sync_lag_s = -1,
                      .repl_lag_ms = -1, .config_differs = true};
    status_words(PS_LEADER_ROLE_LEADER, &v, buf, sizeof buf);
    assert_non_null(strstr(buf, "; config != installed: run pgshadowctl install"));
    v.config_differs = false;
    status_words(PS_LEADER_ROLE_LEADER, &v, buf, sizeof buf);
    assert_null(strstr(buf, "config != installed"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stopping_starts_nothing),
        cmocka_unit_test(test_connection_down_polls),
        cmocka_unit_test(test_standby_does_nothing),
        cmocka_unit_test(test_registry_check_first),
        cmocka_unit_test(test_error_backoff),
        cmocka_unit_test(test_probe_comes_first_then_waits_for_it),
        cmocka_unit_test(test_apply_when_pending),
        cmocka_unit_test(test_backfill_alternates_with_apply),
        cmocka_unit_test(test_backfill_plan_paced),
        cmocka_unit_test(test_throttle_levels),
        cmocka_unit_test(test_lag_pauses_backfill_not_apply),
        cmocka_unit_test(test_hard_lag_slows_apply),
        cmocka_unit_test(test_halted_applies_and_copies_nothing),
        cmocka_unit_test(test_arm_after_empty_round),
        cmocka_unit_test(test_percent),
        cmocka_unit_test(test_rate_and_eta),
        cmocka_unit_test(test_status_texts),
        cmocka_unit_test(test_wakeup_during_apply_kept),
        cmocka_unit_test(test_status_config_differs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
