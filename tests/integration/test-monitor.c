/*
 * test-monitor.c - the dashboard poller end to end (src/monitor/,
 * sql/70-dashboard.sql), against a real PostgreSQL and the real pgshadowd
 * and pgshadowctl, with monitor.poll_interval 200ms:
 *
 *   - the leader logs the dashboard's verdict once, not every poll, and says
 *     it in STATUS=;
 *   - a change is logged once as a transition: a quarantined row
 *     (READY_FOR_CUTOVER -> MONITORING_REQUIRED), then capture turned off
 *     with pgshadowctl disable-writes (-> ROLLBACK_RECOMMENDED);
 *   - a failing poll (the metrics view renamed away) is stale at once, in the
 *     log (once) and in STATUS=; back, "fresh again" once;
 *   - a hanging poll (the dashboard view locked ACCESS EXCLUSIVE by another
 *     session for more than 2 x poll_interval + 1 s) is stale (late), and
 *     fresh again once the lock goes;
 *   - two migrations in one database: migration_success_metrics has a row
 *     for each, over its own tables only, and a filter on migration_id
 *     reaches pgshadow.tables (a poll stays O(that migration's tables)).
 *
 * Env: PGSHADOW_TEST_CONNINFO, PGSHADOW_SRCDIR, PGSHADOWD, PGSHADOWCTL.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itest.h"

#define MIG "itest_monitor"
#define WAIT_MS 30000

static struct {
    itest_db *db;
    char dir[64];
    char cfg[128];
    char *ci; /* the test database as the superuser */
} T;

static const char SHADOW_COLS[] =
    "_shadow_version int, _shadow_created_at timestamptz, _shadow_source_table text,"
    "_shadow_migration_id text, _shadow_sync_status varchar(20), _shadow_last_sync timestamptz,"
    "_shadow_validation_hash varchar(64)";

static int group_setup(void **state)
{
    (void)state;
    const char *const need[] = {"PGSHADOW_TEST_CONNINFO", "PGSHADOW_SRCDIR", "PGSHADOWD",
                                "PGSHADOWCTL", NULL};
    if (!itest_require_env("itest-monitor", need))
        return -1;
    return 0;
}

/* Register each of the NULL-terminated tables (which must exist with their
 * <name>_shadow) for migration mig, in one transaction with the install. */
static void install(PGconn *c, const char *mig, const char *const *tables, bool schema)
{
    char *sql = schema ? itest_install_sql() : strdup("");
    size_t cap = strlen(sql) + 1024;
    char *script = malloc(cap);
    assert_non_null(script);
    size_t pos = (size_t)snprintf(script, cap, "BEGIN;\n%s\n", sql);
    for (size_t i = 0; tables[i]; i++)
        pos += (size_t)snprintf(script + pos, cap - pos,
                                "SELECT pgshadow.register_table('public', '%s', NULL, '_shadow', '%s', "
                                "'{}');\n", tables[i], mig);
    snprintf(script + pos, cap - pos, "SELECT pgshadow.finish_install('%s');\nCOMMIT;\n", mig);
    itest_exec_ok(c, script);
    free(script);
    free(sql);
}

/* A fresh database: table q (5 rows), whose shadow rejects v >= 100 (a row
 * to quarantine), installed for MIG; the daemon's config. */
static int db_setup(void **state)
{
    (void)state;
    T.db = itest_db_new("pgshadow_monitor");
    PGconn *c = T.db->c;
    snprintf(T.dir, sizeof T.dir, "/tmp/itest-monitor-XXXXXX");
    assert_non_null(mkdtemp(T.dir));
    T.ci = itest_conninfo_db(T.db->name);
    char *sql = NULL;
    assert_true(asprintf(&sql,
                         "CREATE TABLE q (id int PRIMARY KEY, v int);"
                         "INSERT INTO q SELECT g, g FROM generate_series(1, 5) g;"
                         "CREATE TABLE q_shadow (id int PRIMARY KEY, v int CHECK (v < 100), %s);",
                         SHADOW_COLS) > 0);
    itest_exec_ok(c, sql);
    free(sql);
    const char *const tables[] = {"q", NULL};
    install(c, MIG, tables, true);
    snprintf(T.cfg, sizeof T.cfg, "%s/daemon.yaml", T.dir);
    char *yaml = NULL;
    assert_true(asprintf(&yaml,
                         "database:\n  conninfo: \"%s dbname=%s\"\n"
                         "migration:\n  id: " MIG "\n  tables:\n    - name: q\n"
                         "sync:\n  batch_size: 100\n  batch_delay: 10ms\n  catchup_interval: 250ms\n"
                         "monitor:\n  poll_interval: 200ms\n"
                         "metrics:\n  listen: \"\"\n",
                         itest_env("PGSHADOW_TEST_CONNINFO"), T.db->name) > 0);
    assert_int_equal(itest_write_file(T.cfg, yaml), 0);
    free(yaml);
    return 0;
}

static int db_teardown(void **state)
{
    (void)state;
    itest_db_free(T.db);
    T.db = NULL;
    free(T.ci);
    T.ci = NULL;
    char p[256];
    snprintf(p, sizeof p, "%s/daemon.yaml", T.dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/a.log", T.dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/a.sock", T.dir);
    unlink(p);
    rmdir(T.dir);
    return 0;
}

/* The index of the first notify message at or after from that contains
 * needle, waiting up to ms; fails the test (with the log) otherwise. */
static int wait_msg_with(itest_daemon *d, int from, const char *needle, int64_t ms)
{
    int64_t end = itest_now_ms() + ms;
    for (;;) {
        itest_daemon_drain(d);
        for (int i = from; i < d->n_msgs; i++)
            if (strstr(d->msgs[i], needle))
                return i;
        if (itest_now_ms() > end)
            break;
        itest_sleep_ms(50);
    }
    char *log = itest_daemon_log(d);
    fprintf(stderr, "no notify message with '%s' after %lld ms; last: %s\ndaemon log:\n%s\n", needle,
            (long long)ms, d->n_msgs ? d->msgs[d->n_msgs - 1] : "(none)", log);
    free(log);
    fail();
    return -1;
}

/* Wait for needle in the log from offset from; fails the test otherwise.
 * The offset just past it. */
static size_t wait_log(itest_daemon *d, size_t from, const char *needle)
{
    size_t at = itest_daemon_wait_log(d, from, needle, WAIT_MS);
    if (!at)
        fail_msg("no '%s' in the daemon's log", needle);
    return at;
}

/* Lines of the log from `from` with "dashboard: " and b: exactly want. */
static void expect_lines(itest_daemon *d, size_t from, const char *b, int want)
{
    int n = itest_daemon_log_count(d, from, "dashboard: ", b);
    if (n != want) {
        char *log = itest_daemon_log(d);
        fprintf(stderr, "%d log line(s) with 'dashboard: ' and '%s', want %d; log:\n%s\n", n,
                b ? b : "", want, log);
        free(log);
        fail();
    }
}

static void test_poller_logs_changes_once(void **state)
{
    (void)state;
    itest_daemon d = ITEST_DAEMON_INIT;
    itest_daemon_paths(&d, T.dir, "a");
    assert_int_equal(itest_daemon_start(&d, T.cfg), 0);

    /* The leader polls, and once the backfill is done, the verdict is
     * READY_FOR_CUTOVER (the first reading may be MONITORING_REQUIRED while
     * the backfill copies). */
    wait_log(&d, 0, "dashboard: polling public.shadow_migration_dashboard for migration " MIG
                    " every 200ms");
    size_t at = wait_log(&d, 0, "dashboard=READY_FOR_CUTOVER");
    int m = wait_msg_with(&d, 0, "dashboard READY_FOR_CUTOVER", WAIT_MS);
    /* ~15 polls later: the verdict was said once, nothing else */
    itest_sleep_ms(3000);
    expect_lines(&d, 0, "READY_FOR_CUTOVER", 1);
    expect_lines(&d, at, NULL, 0);
    expect_lines(&d, 0, "stale", 0);

    /* A quarantined row: MONITORING_REQUIRED, said once. */
    itest_exec_on(T.ci, "UPDATE q SET v = 500 WHERE id = 1");
    at = wait_log(&d, at, "dashboard: READY_FOR_CUTOVER -> MONITORING_REQUIRED");
    m = wait_msg_with(&d, m, "dashboard MONITORING_REQUIRED", WAIT_MS);
    itest_sleep_ms(2000);
    expect_lines(&d, 0, "-> MONITORING_REQUIRED", 1);
    expect_lines(&d, at, NULL, 0);

    /* Capture off: ROLLBACK_RECOMMENDED, said once. */
    itest_run r;
    itest_run_ctl(&r, T.cfg, "disable-writes", NULL);
    if (r.rc != 0)
        fprintf(stderr, "pgshadowctl: rc %d\nstdout: %s\nstderr: %s\n", r.rc, r.out, r.err);
    assert_int_equal(r.rc, 0);
    itest_run_free(&r);
    at = wait_log(&d, at, "dashboard: MONITORING_REQUIRED -> ROLLBACK_RECOMMENDED");
    m = wait_msg_with(&d, m, "dashboard ROLLBACK_RECOMMENDED", WAIT_MS);
    itest_sleep_ms(2000);
    expect_lines(&d, 0, "-> ROLLBACK_RECOMMENDED", 1);
    expect_lines(&d, at, NULL, 0);

    /* A failing poll: the metrics view is gone. Stale at once, said once;
     * STATUS= says so. */
    itest_exec_on(T.ci, "ALTER VIEW public.migration_success_metrics RENAME TO msm_away");
    at = wait_log(&d, at, "dashboard: stale (poll failed: 42P01");
    m = wait_msg_with(&d, m, "dashboard stale", WAIT_MS);
    itest_sleep_ms(2000);
    expect_lines(&d, 0, "stale (poll failed", 1);
    expect_lines(&d, at, NULL, 0);
    itest_exec_on(T.ci, "ALTER VIEW public.msm_away RENAME TO migration_success_metrics");
    at = wait_log(&d, at, "dashboard: fresh again (ROLLBACK_RECOMMENDED)");
    m = wait_msg_with(&d, m, "dashboard ROLLBACK_RECOMMENDED", WAIT_MS);
    itest_sleep_ms(1000);
    expect_lines(&d, 0, "fresh again", 1);

    /* A hanging poll: another session holds the dashboard view (and so the
     * tables under it) ACCESS EXCLUSIVE for 4 s, more than 2 x 200 ms + 1 s.
     * The poll waits, is not doubled, and the snapshot turns stale (late). */
    PGconn *locker = itest_connect(T.ci);
    itest_exec_ok(locker, "BEGIN; LOCK TABLE public.shadow_migration_dashboard IN ACCESS EXCLUSIVE MODE");
    int64_t locked = itest_now_ms();
    at = wait_log(&d, at, "dashboard: stale (late: no successful poll for");
    int64_t stale_after = itest_now_ms() - locked;
    m = wait_msg_with(&d, m, "dashboard stale", WAIT_MS);
    int64_t left = 4000 - (itest_now_ms() - locked);
    if (left > 0)
        itest_sleep_ms(left);
    expect_lines(&d, 0, "stale (late", 1);
    itest_exec_ok(locker, "COMMIT");
    PQfinish(locker);
    /* late is 2 x interval + 1 s after the last success, give or take a poll */
    if (stale_after > 3000)
        fail_msg("stale (late) only %lld ms after the lock", (long long)stale_after);
    at = wait_log(&d, at, "dashboard: fresh again (ROLLBACK_RECOMMENDED)");
    wait_msg_with(&d, m, "dashboard ROLLBACK_RECOMMENDED", WAIT_MS);
    itest_sleep_ms(1000);
    expect_lines(&d, 0, "fresh again", 2);
    expect_lines(&d, at, NULL, 0);

    assert_int_equal(itest_daemon_kill(&d, SIGTERM) >> 8, 0);
    itest_daemon_cleanup(&d);
}

/* Two migrations in one database: each row of migration_success_metrics
 * aggregates its own migration's tables only. */
static void test_two_migrations(void **state)
{
    (void)state;
    itest_db *db = itest_db_new("pgshadow_monitor2");
    PGconn *c = db->c;
    char *sql = NULL;
    assert_true(asprintf(&sql,
                         "CREATE TABLE a (id int PRIMARY KEY, v int);"
                         "CREATE TABLE a_shadow (id int PRIMARY KEY, v int, %s);"
                         "CREATE TABLE b (id int PRIMARY KEY, v int);"
                         "CREATE TABLE b_shadow (id int PRIMARY KEY, v int, %s);"
                         "CREATE TABLE b2 (id int PRIMARY KEY, v int);"
                         "CREATE TABLE b2_shadow (id int PRIMARY KEY, v int, %s);",
                         SHADOW_COLS, SHADOW_COLS, SHADOW_COLS) > 0);
    itest_exec_ok(c, sql);
    free(sql);
    const char *const one[] = {"a", NULL};
    const char *const two[] = {"b", "b2", NULL};
    install(c, "mig_one", one, true);
    install(c, "mig_two", two, false);

    itest_expect_sql(c, "SELECT string_agg(migration_id || ':' || table_count, ' ' ORDER BY migration_id) "
                        "FROM public.migration_success_metrics",
                     "mig_one:1 mig_two:2");
    /* Each migration's counts are its own: diverged rows of a are not two's,
     * capture off for b makes two (only) ROLLBACK_RECOMMENDED. */
    itest_exec_ok(c, "UPDATE pgshadow.tables SET diverged_rows = 7 WHERE table_name = 'a';"
                     "UPDATE pgshadow.tables SET diverged_rows = 2 WHERE table_name IN ('b', 'b2')");
    itest_exec_ok(c, "SELECT pgshadow.disable_writes('b')");
    itest_expect_sql(c, "SELECT string_agg(migration_id || ' ' || total_diverged_records || ' ' || "
                        "migration_status || ' ' || all_capture_enabled || ' ' || all_backfill_done, "
                        "' | ' ORDER BY migration_id) FROM public.migration_success_metrics",
                     "mig_one 7 MONITORING_REQUIRED true false | "
                     "mig_two 4 ROLLBACK_RECOMMENDED false false");
    /* The seed's columns are still the first ones, in their order. */
    itest_expect_sql(c, "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute "
                        "WHERE attrelid = 'public.migration_success_metrics'::regclass AND attnum > 0",
                     "avg_sync_percentage,avg_sync_lag_seconds,total_diverged_records,migration_status,"
                     "last_updated,max_sync_lag_seconds,total_pending_changes,total_quarantined,"
                     "min_sync_percentage,count_source,migration_id,all_backfill_done,"
                     "all_capture_enabled,table_count");
    /* A filter on migration_id reaches pgshadow.tables: the poll of one
     * migration reads only its own tables' rows. */
    PGresult *res = PQexec(c, "EXPLAIN (COSTS OFF) SELECT * FROM public.migration_success_metrics "
                              "WHERE migration_id = 'mig_one'");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    bool pushed = false;
    for (int i = 0; i < PQntuples(res); i++)
        if (strstr(PQgetvalue(res, i, 0), "Filter: (migration_id = 'mig_one'::text)") ||
            strstr(PQgetvalue(res, i, 0), "Cond: (migration_id = 'mig_one'::text)"))
            pushed = true;
    if (!pushed)
        for (int i = 0; i < PQntuples(res); i++)
            fprintf(stderr, "%s\n", PQgetvalue(res, i, 0));
    PQclear(res);
    assert_true(pushed);
    itest_db_free(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_poller_logs_changes_once, db_setup, db_teardown),
        cmocka_unit_test(test_two_migrations),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
