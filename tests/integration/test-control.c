/*
 * test-control.c - the command queue end to end (sql/30-commands.sql,
 * src/control.c, src/ctl/cmd_control.c), against a real PostgreSQL and
 * the real pgshadowd and pgshadowctl:
 *
 *   - an operator's `pgshadowctl quarantine retry all` is taken by the
 *     leading daemon, carried out, and answered (exit 0); the command row
 *     and one event say who asked (the operator's role), what and why;
 *   - a viewer, and a role that is neither, are refused (exit 3);
 *   - with two daemons, every command is carried out exactly once;
 *   - the outcome and the event commit together: a daemon killed while its
 *     event waits on a lock leaves the command pending and no event; the
 *     next daemon carries it out once;
 *   - an unknown command is refused with the reason;
 *   - with no daemon running, pgshadowctl says so after --timeout and
 *     withdraws the command; with --queue it stays, and a daemon started
 *     later carries it out.
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

#define MIG "itest_control"
#define OP "ps_t_op"     /* LOGIN, member of pgshadow_operator */
#define VIEW "ps_t_view" /* LOGIN, member of pgshadow_viewer */
#define NOBODY "ps_t_nobody"

static struct {
    itest_db *db;
    char dir[64];
    char cfg_daemon[128], cfg_op[128], cfg_view[128], cfg_nobody[128];
    char *ci; /* the test database as the superuser */
} T;

static void write_cfg(const char *path, const char *user)
{
    char *yaml = NULL;
    assert_true(asprintf(&yaml,
                         "database:\n  conninfo: \"%s dbname=%s user=%s\"\n"
                         "migration:\n  id: " MIG "\n  tables:\n    - name: q\n"
                         "sync:\n  batch_size: 100\n  batch_delay: 10ms\n  catchup_interval: 250ms\n"
                         "metrics:\n  listen: \"\"\n",
                         itest_env("PGSHADOW_TEST_CONNINFO"), T.db->name, user) > 0);
    assert_int_equal(itest_write_file(path, yaml), 0);
    free(yaml);
}

static int group_setup(void **state)
{
    (void)state;
    const char *const need[] = {"PGSHADOW_TEST_CONNINFO", "PGSHADOW_SRCDIR", "PGSHADOWD", "PGSHADOWCTL", NULL};
    if (!itest_require_env("itest-control", need))
        return -1;
    return 0;
}

/* A fresh database with pgshadow installed on table q, whose shadow rejects
 * v >= 100 (rows to quarantine), and the roles. */
static int db_setup(void **state)
{
    (void)state;
    T.db = itest_db_new("pgshadow_control");
    PGconn *c = T.db->c;
    snprintf(T.dir, sizeof T.dir, "/tmp/itest-control-XXXXXX");
    assert_non_null(mkdtemp(T.dir));
    T.ci = itest_conninfo_db(T.db->name);
    itest_exec_ok(c, "CREATE TABLE q (id int PRIMARY KEY, v int);"
                     "INSERT INTO q SELECT g, g FROM generate_series(1, 5) g;"
                     "CREATE TABLE q_shadow (id int PRIMARY KEY, v int CHECK (v < 100),"
                     "  _shadow_version int, _shadow_created_at timestamptz, _shadow_source_table text,"
                     "  _shadow_migration_id text, _shadow_sync_status varchar(20), _shadow_last_sync timestamptz,"
                     "  _shadow_validation_hash varchar(64));");
    char *schema = itest_install_sql();
    char *script = NULL;
    assert_true(asprintf(&script, "BEGIN;\n%s\nSELECT pgshadow.register_table('public', 'q', NULL, '_shadow', '" MIG
                                  "', '{}');\nSELECT pgshadow.finish_install('" MIG "');\nCOMMIT;\n",
                         schema) > 0);
    itest_exec_ok(c, script);
    free(script);
    free(schema);
    itest_exec_ok(c, "DO $$ BEGIN "
                     "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" OP "') THEN "
                     "  CREATE ROLE " OP " LOGIN IN ROLE pgshadow_operator; END IF; "
                     "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" VIEW "') THEN "
                     "  CREATE ROLE " VIEW " LOGIN IN ROLE pgshadow_viewer; END IF; "
                     "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" NOBODY "') THEN "
                     "  CREATE ROLE " NOBODY " LOGIN; END IF; END $$");
    snprintf(T.cfg_daemon, sizeof T.cfg_daemon, "%s/daemon.yaml", T.dir);
    snprintf(T.cfg_op, sizeof T.cfg_op, "%s/op.yaml", T.dir);
    snprintf(T.cfg_view, sizeof T.cfg_view, "%s/view.yaml", T.dir);
    snprintf(T.cfg_nobody, sizeof T.cfg_nobody, "%s/nobody.yaml", T.dir);
    write_cfg(T.cfg_daemon, "postgres");
    write_cfg(T.cfg_op, OP);
    write_cfg(T.cfg_view, VIEW);
    write_cfg(T.cfg_nobody, NOBODY);
    return 0;
}

static int db_teardown(void **state)
{
    (void)state;
    itest_db_free(T.db);
    free(T.ci);
    const char *files[] = {"daemon.yaml", "op.yaml", "view.yaml", "nobody.yaml", "a.log", "b.log"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s", T.dir, files[i]);
        unlink(p);
    }
    rmdir(T.dir);
    return 0;
}

static void daemon_up(itest_daemon *d, const char *tag)
{
    *d = (itest_daemon)ITEST_DAEMON_INIT;
    itest_daemon_paths(d, T.dir, tag);
    d->sock[0] = '\0';
    assert_int_equal(itest_daemon_start(d, T.cfg_daemon), 0);
}

/* The daemon's log on failure, for the reader. */
static void expect_true(itest_daemon *d, const char *sql, int64_t ms)
{
    if (itest_wait_true(T.ci, sql, ms))
        return;
    char *log = d ? itest_daemon_log(d) : strdup("(no daemon)");
    fprintf(stderr, "not true after %lld ms: %s\ndaemon log:\n%s\n", (long long)ms, sql, log);
    free(log);
    fail();
}

/* One quarantined key: an update the shadow rejects, applied by the daemon. */
static void quarantine_one(itest_daemon *d)
{
    itest_exec_on(T.ci, "UPDATE q SET v = 500 WHERE id = 1");
    expect_true(d, "SELECT count(*) = 1 FROM pgshadow.quarantine", 20000);
}

static void test_operator_retry(void **state)
{
    (void)state;
    itest_daemon d;
    daemon_up(&d, "a");
    expect_true(&d, "SELECT backfill_state = 'done' FROM pgshadow.tables", 20000);
    quarantine_one(&d);
    /* the new schema is relaxed: the rejected row would apply now, but only
     * a retry brings it (nothing else writes it) */
    itest_exec_on(T.ci, "ALTER TABLE q_shadow DROP CONSTRAINT q_shadow_v_check");

    itest_run r;
    itest_run_ctl(&r, T.cfg_op, "quarantine", "retry", "all", "--reason", "row 1 fixed by hand", NULL);
    if (r.rc != 0)
        fprintf(stderr, "pgshadowctl: rc %d\nstdout: %s\nstderr: %s\n", r.rc, r.out, r.err);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "quarantine retry: queued 1 key(s) for another try"));
    itest_run_free(&r);
    expect_true(&d, "SELECT count(*) = 0 FROM pgshadow.quarantine", 20000);
    itest_expect_sql(T.db->c, "SELECT v FROM q_shadow WHERE id = 1", "500");
    itest_expect_sql(T.db->c, "SELECT state || ' ' || requested_by || ' ' || command FROM pgshadow.commands",
                     "done " OP " quarantine-retry");
    itest_expect_sql(T.db->c, "SELECT who || ' | ' || what || ' | ' || why FROM pgshadow.events "
                              "WHERE what LIKE 'command %'",
                     OP " | command quarantine-retry done | row 1 fixed by hand");

    /* a viewer and a plain role may not queue commands: refused, exit 3 */
    itest_run_ctl(&r, T.cfg_view, "quarantine", "retry", "all", NULL);
    assert_int_equal(r.rc, 3);
    assert_non_null(strstr(r.err, "refused: commands are queued by members of pgshadow_operator"));
    itest_run_free(&r);
    itest_run_ctl(&r, T.cfg_nobody, "quarantine", "retry", "7", NULL);
    assert_int_equal(r.rc, 3);
    itest_run_free(&r);
    itest_expect_sql(T.db->c, "SELECT count(*) FROM pgshadow.commands", "1");

    /* a retry of an id that is not quarantined: the handler's SQL fails and
     * the command ends failed, with the server's reason (exit 1) */
    itest_run_ctl(&r, T.cfg_op, "quarantine", "retry", "424242", NULL);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "quarantine retry: failed: pgshadow: no quarantined key 424242"));
    itest_run_free(&r);

    /* an unknown command (queued by hand): refused with the reason */
    itest_exec_on(T.ci, "SELECT pgshadow.enqueue_command('frobnicate', '{}', '" MIG "')");
    expect_true(&d, "SELECT state = 'refused' AND result LIKE 'unknown command ''frobnicate''%' "
                    "FROM pgshadow.commands WHERE command = 'frobnicate'", 20000);
    itest_daemon_cleanup(&d);
}

static void test_two_daemons_once(void **state)
{
    (void)state;
    itest_daemon a, b;
    daemon_up(&a, "a");
    expect_true(&a, "SELECT backfill_state = 'done' FROM pgshadow.tables", 20000);
    daemon_up(&b, "b");
    quarantine_one(&a);
    for (int i = 0; i < 10; i++)
        itest_exec_on(T.ci, "SELECT pgshadow.enqueue_command('quarantine-retry', '{\"all\": true}', '" MIG "')");
    expect_true(&a, "SELECT count(*) = 10 FROM pgshadow.commands WHERE state = 'done'", 30000);
    /* each exactly once: one event per command, no command twice */
    itest_expect_sql(T.db->c, "SELECT count(*) || '/' || count(DISTINCT after ->> 'command_id') FROM pgshadow.events "
                              "WHERE what = 'command quarantine-retry done'", "10/10");
    itest_daemon_cleanup(&b);
    itest_daemon_cleanup(&a);
}

/* The claim, the handler's work, the outcome and the event are one
 * transaction: killed before COMMIT, nothing of it stays. */
static void test_atomic(void **state)
{
    (void)state;
    itest_daemon d;
    daemon_up(&d, "a");
    expect_true(&d, "SELECT backfill_state = 'done' FROM pgshadow.tables", 20000);
    quarantine_one(&d);
    /* the event insert waits on this lock, inside the daemon's transaction */
    PGconn *locker = itest_connect(T.ci);
    itest_exec_ok(locker, "BEGIN; LOCK TABLE pgshadow.events IN EXCLUSIVE MODE");
    itest_exec_on(T.ci, "SELECT pgshadow.enqueue_command('quarantine-retry', '{\"all\": true}', '" MIG "')");
    expect_true(&d, "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE c.relname = 'events' AND NOT l.granted)", 20000);
    /* the quarantine_retry of the handler ran (its change log entry exists
     * in the daemon's transaction) but nothing is visible outside it */
    itest_expect_sql(T.db->c, "SELECT state FROM pgshadow.commands", "pending");
    itest_daemon_kill(&d, SIGKILL);
    itest_exec_ok(locker, "COMMIT");
    PQfinish(locker);
    /* the server ended the killed session's transaction */
    expect_true(NULL, "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                      "AND pid <> pg_backend_pid() AND state <> 'idle')", 20000);
    itest_expect_sql(T.db->c, "SELECT state || ' ' || coalesce(result, '-') FROM pgshadow.commands", "pending -");
    itest_expect_sql(T.db->c, "SELECT count(*) FROM pgshadow.events WHERE what LIKE 'command %'", "0");
    itest_daemon_cleanup(&d);
    daemon_up(&d, "b");
    expect_true(&d, "SELECT state = 'done' FROM pgshadow.commands", 20000);
    itest_expect_sql(T.db->c, "SELECT count(*) FROM pgshadow.events WHERE what LIKE 'command %'", "1");
    itest_daemon_cleanup(&d);
}

static void test_no_daemon(void **state)
{
    (void)state;
    itest_run r;
    itest_run_ctl(&r, T.cfg_op, "quarantine", "retry", "all", "--timeout", "1s", NULL);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "no pgshadowd took command 1 within 1s"));
    itest_run_free(&r);
    itest_expect_sql(T.db->c, "SELECT state || ': ' || result FROM pgshadow.commands",
                     "refused: withdrawn by " OP ": no pgshadowd took it in time");
    itest_run_ctl(&r, T.cfg_op, "quarantine", "retry", "all", "--timeout", "1s", "--queue", NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "command 2 (quarantine-retry) queued; no pgshadowd has taken it within 1s"));
    itest_run_free(&r);
    itest_expect_sql(T.db->c, "SELECT state FROM pgshadow.commands WHERE command_id = 2", "pending");
    /* a daemon started later carries out what was queued */
    itest_daemon d;
    daemon_up(&d, "a");
    expect_true(&d, "SELECT state = 'done' FROM pgshadow.commands WHERE command_id = 2", 20000);
    itest_expect_sql(T.db->c, "SELECT state FROM pgshadow.commands WHERE command_id = 1", "refused");
    itest_daemon_cleanup(&d);
}

#define T_(f) cmocka_unit_test_setup_teardown(f, db_setup, db_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T_(test_operator_retry),
        T_(test_two_daemons_once),
        T_(test_atomic),
        T_(test_no_daemon),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
