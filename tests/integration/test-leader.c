/*
 * test-leader.c - leadership end to end: two real pgshadowd processes on one
 * installed migration (the unit tests are tests/unit/test-leader-policy.c for the
 * policy and tests/unit/test-modules.c for the hook's dispatch).
 *
 *  1. A leads; B, started second, is a standby: its modules are never told
 *     of leadership (no "leadership gained" line, no sync line at all in its
 *     debug log) and do nothing while A applies (none of B's backends ever
 *     runs a pgshadow.* query, sampled throughout; B applied nothing); B
 *     still keeps its three connections, work with its session settings;
 *  2. A is SIGKILLed: B takes the lock, and only then are its modules told
 *     (the leader's line, then the dispatch, then the sync engine's own
 *     "leader lock acquired ... syncing", once), and B applies;
 *  3. B's main session is terminated by the server: leadership lost is told
 *     to the modules, the lock taken again in the new session and told
 *     again, and B applies;
 *  4. a reload that changes migration.id (restart-only): logged as "needs a
 *     restart" at the key's FILE:LINE:COLUMN, the running id stays in force
 *     (the reload finds no other change; the lock is still B's on the old
 *     id, nobody's on the new one; leadership is not touched; B goes on
 *     applying the old migration).
 *
 * The daemons tell their backends apart by application_name (pgshadowd-A,
 * pgshadowd-B in their conninfo). The tests share one database and run in
 * order; every wait is a polling loop with a generous deadline.
 *
 * Env: PGSHADOW_TEST_CONNINFO, PGSHADOW_TEST_CLUSTER, PGSHADOW_SRCDIR,
 * PGSHADOWD, PGSHADOWCTL.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "itest.h"

#define DB "pgshadow_itest_leader"
#define MIG "itest_leader"
#define WAIT_MS 20000

static struct {
    char dir[64];
    char cfg_a[128], cfg_b[128];
    char *db_conninfo;
} T;

static itest_daemon A = ITEST_DAEMON_INIT, B = ITEST_DAEMON_INIT;

/* The config of daemon `who` ("A" or "B"): the same migration, its own
 * application_name. */
static int write_config(const char *path, const char *who, const char *mig)
{
    char text[1024], tmp[160];
    snprintf(text, sizeof text,
             "database:\n"
             "  conninfo: \"%s application_name=pgshadowd-%s\"\n"
             "migration:\n"
             "  id: %s\n"
             "  tables:\n"
             "    - name: items\n"
             "sync:\n"
             "  batch_delay: 10ms\n"
             "  catchup_interval: 250ms\n"
             "metrics:\n"
             "  listen: \"\"\n",
             T.db_conninfo, who, mig);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (itest_write_file(tmp, text) < 0)
        return -1;
    return rename(tmp, path);
}

static void start(itest_daemon *d, const char *tag, const char *cfg)
{
    itest_daemon_paths(d, T.dir, tag);
    d->log_level = "debug";
    assert_int_equal(itest_daemon_start(d, cfg), 0);
}

static void insert(int from, int to)
{
    char sql[160];
    snprintf(sql, sizeof sql,
             "INSERT INTO items SELECT g, 'v' || g FROM generate_series(%d, %d) g", from, to);
    itest_exec_on(T.db_conninfo, sql);
}

/* Every change applied and every row of items in the shadow. */
static bool drained(int rows)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT NOT EXISTS (SELECT 1 FROM pgshadow.change_log) "
             "   AND (SELECT count(*) FROM items_shadow) = %d",
             rows);
    return itest_wait_true(T.db_conninfo, sql, WAIT_MS);
}

/* The SQL condition "pid holds the leader lock of migration mig". */
#define HOLDS_LOCK(mig)                                                                            \
    "pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "               \
    "((classid::bigint << 32) | objid::bigint) = hashtextextended('pgshadow:" mig "', 0))"

/* The count of `who`'s backends matching the SQL condition cond. */
static long long backends(const char *who, const char *cond)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgshadowd-%s' "
             "AND datname = '" DB "' AND (%s)",
             who, cond);
    char *v = itest_value_on(T.db_conninfo, sql);
    assert_non_null(v);
    long long n = atoll(v);
    free(v);
    return n;
}

/* Wait until d's log from `from` holds needle; the offset just past it. */
static size_t wait_log(itest_daemon *d, size_t from, const char *needle)
{
    size_t off = itest_daemon_wait_log(d, from, needle, WAIT_MS);
    if (off == 0)
        fail_msg("no '%s' in the log of pgshadowd %d", needle, (int)d->pid);
    return off;
}

/* ------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    static const char *const env[] = {"PGSHADOWD", "PGSHADOWCTL", "PGSHADOW_SRCDIR",
                                      "PGSHADOW_TEST_CONNINFO", "PGSHADOW_TEST_CLUSTER", NULL};
    if (!itest_require_env("test-leader", env))
        return -1;
    snprintf(T.dir, sizeof T.dir, "/tmp/itest-leader-XXXXXX");
    if (!mkdtemp(T.dir))
        return -1;
    snprintf(T.cfg_a, sizeof T.cfg_a, "%s/leader-a.yaml", T.dir);
    snprintf(T.cfg_b, sizeof T.cfg_b, "%s/leader-b.yaml", T.dir);
    T.db_conninfo = itest_conninfo_db(DB);
    if (write_config(T.cfg_a, "A", MIG) < 0 || write_config(T.cfg_b, "B", MIG) < 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    itest_daemon_cleanup(&A);
    itest_daemon_cleanup(&B);
    if (T.dir[0] && !getenv("PGSHADOW_KEEP_TMP")) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", T.dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", T.dir);
    }
    free(T.db_conninfo);
    return 0;
}

static void test_setup(void **state)
{
    (void)state;
    itest_db_create(DB);
    itest_exec_on(T.db_conninfo, "CREATE TABLE items (id int PRIMARY KEY, v text)");
    insert(1, 100);
    itest_run r;
    itest_run_ctl(&r, T.cfg_a, "install", NULL);
    if (r.rc != 0)
        fprintf(stderr, "pgshadowctl install:\n%s%s", r.out, r.err);
    assert_int_equal(r.rc, 0);
    itest_run_free(&r);
}

/* 1. The standby's modules are not told of leadership and do nothing. */
static void test_standby_modules_wait(void **state)
{
    (void)state;
    start(&A, "A", T.cfg_a);
    wait_log(&A, 0, "sync: leader lock acquired");
    wait_log(&A, 0, "sync: backfill complete");
    assert_true(drained(100));

    start(&B, "B", T.cfg_b);
    wait_log(&B, 0, "standby: another pgshadowd holds the leader lock");
    /* its work connection is up and has main's settings, standby or not */
    wait_log(&B, 0, "leader: session keepalives and timeouts set conn=work");
    wait_log(&B, 0, "leader: session keepalives and timeouts set conn=main");

    /* A works, B watches: sample B's backends while A applies */
    int64_t end = itest_now_ms() + 3000;
    long long b_busy = 0;
    int samples = 0, next = 101;
    while (itest_now_ms() < end) {
        insert(next, next + 9);
        next += 10;
        b_busy += backends("B", "query ~ 'pgshadow\\.'");
        samples++;
        itest_sleep_ms(50);
    }
    assert_true(drained(next - 1));
    fprintf(stderr, "test-leader: %d samples of B's backends while A applied %d rows\n", samples,
            next - 101);
    assert_true(samples >= 10);
    assert_int_equal(b_busy, 0);
    /* B: three connections (main, work, listen), a standby all along, its
     * main session busy with nothing but the lock attempts */
    assert_int_equal(backends("B", "true"), 3);
    assert_int_equal(backends("B", "query ~ 'pg_try_advisory_lock'"), 1);
    assert_int_equal(itest_daemon_log_count(&A, 0, "leadership gained: telling module sync", NULL), 1);
    assert_int_equal(itest_daemon_log_count(&B, 0, "leadership gained", NULL), 0);
    assert_int_equal(itest_daemon_log_count(&B, 0, ": sync: ", NULL), 0); /* not "resync: " */
    assert_true(itest_daemon_log_count(&A, 0, "applied batch", NULL) > 0);
    assert_int_equal(itest_daemon_log_count(&B, 0, "applied batch", NULL), 0);
    assert_int_equal(kill(B.pid, 0), 0);
}

/* 2. The leader dies: B's modules are told only once it holds the lock. */
static void test_takeover_tells_modules(void **state)
{
    (void)state;
    size_t from = itest_daemon_log_size(&B);
    itest_daemon_kill(&A, SIGKILL);
    insert(5001, 5100);
    size_t leads = wait_log(&B, from, "leader: this daemon leads migration " MIG " now");
    size_t told = wait_log(&B, from, "leadership gained: telling module sync");
    size_t syncing = wait_log(&B, from, "sync: leader lock acquired for migration " MIG);
    assert_true(leads < told);
    assert_true(told < syncing);
    assert_int_equal(itest_daemon_log_count(&B, 0, "leadership gained: telling module sync", NULL), 1);
    assert_int_equal(itest_daemon_log_count(&B, 0, "leadership gained: telling module control", NULL), 1);
    char *v = itest_value_on(T.db_conninfo, "SELECT count(*) FROM items");
    assert_non_null(v);
    int rows = atoi(v);
    free(v);
    assert_true(drained(rows));
    assert_true(itest_daemon_log_count(&B, from, "applied batch", NULL) > 0);
    /* exactly one backend holds the lock, and it is B's main session */
    assert_int_equal(backends("B", HOLDS_LOCK(MIG)), 1);
}

/* 3. The main session ends under B: lost is told, then gained again once
 * the lock is held in the new session. */
static void test_lost_and_regained(void **state)
{
    (void)state;
    size_t from = itest_daemon_log_size(&B);
    itest_exec_on(T.db_conninfo,
                  "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_stat_activity a "
                  "USING (pid) WHERE a.application_name = 'pgshadowd-B' AND l.locktype = "
                  "'advisory' AND l.granted");
    size_t lost = wait_log(&B, from, "leadership lost: telling module sync");
    size_t again = wait_log(&B, from, "leadership gained: telling module sync");
    assert_true(lost < again);
    wait_log(&B, again, "sync: leader lock acquired for migration " MIG);
    insert(9001, 9010);
    char *v = itest_value_on(T.db_conninfo, "SELECT count(*) FROM items");
    assert_non_null(v);
    int rows = atoi(v);
    free(v);
    assert_true(drained(rows));
    assert_int_equal(kill(B.pid, 0), 0);
}

/* 4. migration.id is restart-only: a reload keeps the running one. */
static void test_reload_keeps_restart_only_key(void **state)
{
    (void)state;
    size_t from = itest_daemon_log_size(&B);
    assert_int_equal(write_config(T.cfg_b, "B", MIG "_renamed"), 0);
    assert_int_equal(kill(B.pid, SIGHUP), 0);
    char want[512];
    snprintf(want, sizeof want,
             "warning: reload: %s:4:3: migration.id: \"" MIG "\" -> \"" MIG "_renamed\" needs a "
             "restart; the running value \"" MIG "\" stays in force",
             T.cfg_b);
    size_t noted = wait_log(&B, from, want);
    size_t nothing = wait_log(&B, noted, "reload: no changes");
    wait_log(&B, nothing, "in force");
    assert_int_equal(itest_daemon_log_count(&B, from, "reload: migration.id", NULL), 0);
    assert_int_equal(itest_daemon_log_count(&B, from, "leadership lost", NULL), 0);
    /* the lock: still B's on the running id, nobody's on the new one */
    assert_int_equal(backends("B", HOLDS_LOCK(MIG)), 1);
    char *v = itest_value_on(T.db_conninfo,
                             "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                             "((classid::bigint << 32) | objid::bigint) = "
                             "hashtextextended('pgshadow:" MIG "_renamed', 0)");
    assert_non_null(v);
    assert_string_equal(v, "0");
    free(v);
    /* and it still applies the running migration */
    size_t before = itest_daemon_log_size(&B);
    insert(9101, 9110);
    v = itest_value_on(T.db_conninfo, "SELECT count(*) FROM items");
    assert_non_null(v);
    int rows = atoi(v);
    free(v);
    assert_true(drained(rows));
    assert_true(itest_daemon_log_count(&B, before, "applied batch", NULL) > 0);
    assert_int_equal(write_config(T.cfg_b, "B", MIG), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_setup),
        cmocka_unit_test(test_standby_modules_wait),
        cmocka_unit_test(test_takeover_tells_modules),
        cmocka_unit_test(test_lost_and_regained),
        cmocka_unit_test(test_reload_keeps_restart_only_key),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
