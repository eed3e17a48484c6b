/*
 * test-leader-policy.c - leadership's pure policy (src/daemon/leader_policy.c):
 * the order of a daemon's steps towards the leader lock, and its STATUS=
 * words. The dispatch of a change to the modules is tests/unit/test-modules.c;
 * two real daemons are tests/integration/test-leader.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "pgshadow/leader.h"

/* Both connections up with their settings in place, not leading, the next
 * lock attempt due at t = 10 s, now t = 10 s. */
static ps_leader_state ready_standby(void)
{
    ps_leader_state s = {
        .now_ms = 10000,
        .main_up = true,
        .work_up = true,
        .main_ready = true,
        .work_ready = true,
        .lock_retry_at_ms = 10000,
    };
    return s;
}

/* Moved from test-sync-policy.c with the lock: a standby retries the lock
 * when due, waits for it otherwise. */
static void test_standby_only_retries_the_lock(void **state)
{
    (void)state;
    ps_leader_state s = ready_standby();
    int64_t w;
    assert_int_equal(ps_leader_next(&s, &w), PS_LEADER_LOCK);
    assert_int_equal(w, -1);
    s.lock_retry_at_ms = 10800;
    assert_int_equal(ps_leader_next(&s, &w), PS_LEADER_WAIT);
    assert_int_equal(w, 800);
}

/* The lock is never tried in a session whose keepalives and timeouts are
 * not set: a new session of main gets its settings first. */
static void test_settings_before_the_lock(void **state)
{
    (void)state;
    ps_leader_state s = ready_standby();
    s.main_ready = false;
    s.terminate_wanted = true;
    int64_t w;
    assert_int_equal(ps_leader_next(&s, &w), PS_LEADER_SETTINGS_MAIN);
    s.main_ready = true;
    assert_int_equal(ps_leader_next(&s, &w), PS_LEADER_TERMINATE);
    s.terminate_wanted = false;
    assert_int_equal(ps_leader_next(&s, &w), PS_LEADER_LOCK);
}

/* work gets the same settings as main, once per session, after main's
 * settings and the lock attempt (failover first), also while leading. */
static void test_work_gets_the_settings_too(void **state)
{
    (void)state;
    ps_leader_state s = ready_standby();
    s.work_ready = false;
    int64_t w;
    assert_int_equal(ps_leader_next(&s, &w), PS_LEADER_LOCK);
    s.lock_retry_at_ms = 10800;
    assert_int_equal(ps_leader_next(&s, &w), PS_LEADER_SETTINGS_WORK);
    s.leader = true;
    assert_int_equal(ps_leader_next(&s, &w), PS_LEADER_SETTINGS_WORK);
    s.main_up = false; /* work alone up: its settings all the same */
    s.leader = false;
    assert_int_equal(ps_leader_next(&s, &w), PS_LEADER_SETTINGS_WORK);
    s.work_up = false;
    assert_int_equal(ps_leader_next(&s, &w), PS_LEADER_IDLE);
}

/* A leader with everything in place, or a daemon whose main connection is
 * down, waits for a connection event (IDLE, no polling); stopping ends
 * everything, even a due lock attempt. */
static void test_idle_and_stopping(void **state)
{
    (void)state;
    ps_leader_state s = ready_standby();
    s.leader = true;
    int64_t w;
    assert_int_equal(ps_leader_next(&s, &w), PS_LEADER_IDLE);
    assert_int_equal(w, -1);
    s.leader = false;
    s.main_up = false;
    assert_int_equal(ps_leader_next(&s, &w), PS_LEADER_IDLE);
    s = ready_standby();
    s.stopping = true;
    s.main_ready = false;
    assert_int_equal(ps_leader_next(&s, &w), PS_LEADER_IDLE);
    assert_int_equal(w, -1);
}

/* The role's words, as STATUS= has always shown them; truncation honest. */
static void test_status_words(void **state)
{
    (void)state;
    char b[64];
    assert_int_equal(ps_leader_format_status(PS_LEADER_ROLE_LEADER, b, sizeof b), 6);
    assert_string_equal(b, "leader");
    ps_leader_format_status(PS_LEADER_ROLE_STANDBY, b, sizeof b);
    assert_string_equal(b, "standby: another pgshadowd holds the lock");
    ps_leader_format_status(PS_LEADER_ROLE_UNKNOWN, b, sizeof b);
    assert_string_equal(b, "sync: acquiring leader lock");
    char small[8];
    size_t n = ps_leader_format_status(PS_LEADER_ROLE_STANDBY, small, sizeof small);
    assert_int_equal(n, strlen(small));
    assert_string_equal(small, "standby");
    assert_int_equal(ps_leader_format_status(PS_LEADER_ROLE_LEADER, b, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_standby_only_retries_the_lock),
        cmocka_unit_test(test_settings_before_the_lock),
        cmocka_unit_test(test_work_gets_the_settings_too),
        cmocka_unit_test(test_idle_and_stopping),
        cmocka_unit_test(test_status_words),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
