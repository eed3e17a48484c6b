/*
 * test-verify.c - verify and repair (sql/85-verify.sql, src/verify/)
 * against a real PostgreSQL and the real pgshadowd:
 *  - behind the daemon's back, in the shadow: a value changed with its
 *    stored hash left as it was, a row deleted, an extra row inserted, a
 *    TOASTed value changed; citext 'Alice' -> 'alice' and numeric 1.5 ->
 *    1.50 (equal by their types' equality, different data); in the primary,
 *    a row changed with capture off. With repair off, `pgshadowctl verify
 *    --wait` finds all of them (exit 1), the dashboard, the shadow rows,
 *    the event log and the daemon's log say so; a reload with repair on
 *    repairs them through apply, and the shadow equals the primary again.
 *    (A digest compare that were a no-op finds nothing here: the test fails.)
 *  - pgbench writing while passes run: no failed transaction, no key
 *    reported diverged but the one the test breaks on purpose meanwhile (a
 *    load case, ITEST_LOAD_CASE: tests/run runs it in the -Werror build
 *    only);
 *  - incremental verify: a key apply wrote and that is then broken is
 *    found without any pass;
 *  - a key whose repair never holds (a shadow trigger rewrites it) is
 *    given up after three repairs, with an event;
 *  - a key with an open divergence looked at during a resync: looked at
 *    again after the copy, its divergence closed;
 *  - two workers recounting one table at once: the last count includes
 *    what the other committed meanwhile;
 *  - SIGKILL of the daemon mid-pass: the pass resumes where its ranges
 *    stopped, each row verified once.
 * The tables are owned by an ordinary role, not by the installer.
 *
 * Env: as every integration test (itest.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "itest.h"

#define MIG "mv"

static int db_setup(void **state)
{
    *state = itest_db_new("pgshadow_verify");
    return 0;
}

static int db_teardown(void **state)
{
    itest_db_free(*state);
    return 0;
}

static bool wait_true(itest_db *t, const char *sql, int64_t ms)
{
    char *ci = itest_conninfo_db(t->name);
    bool ok = itest_wait_true(ci, sql, ms);
    free(ci);
    return ok;
}

/* items: a bigint key, text, numeric, timestamptz, jsonb, a citext, a
 * TOASTed text; owned by an ordinary role. */
static void install(itest_db *t, int rows)
{
    char sql[2048];
    snprintf(sql, sizeof sql,
             "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'verify_owner') THEN "
             "CREATE ROLE verify_owner; END IF; END $$;"
             "CREATE EXTENSION IF NOT EXISTS citext;"
             "CREATE TABLE items (id bigint PRIMARY KEY, v text, price numeric(10,2), at timestamptz, "
             "doc jsonb, who citext, big text);"
             "INSERT INTO items SELECT g, 'v' || g, g * 1.5, '2026-01-01'::timestamptz + g * interval '1 min', "
             "jsonb_build_object('g', g), 'Name' || g, CASE WHEN g %% 100 = 30 THEN "
             "(SELECT string_agg(md5(x::text), '') FROM generate_series(1, 400) x) END "
             "FROM generate_series(1, %d) g;"
             "ALTER TABLE items OWNER TO verify_owner; ANALYZE items;",
             rows);
    itest_exec_ok(t->c, sql);
    char *schema = itest_install_sql();
    size_t len = strlen(schema) + 1024;
    char *script = malloc(len);
    snprintf(script, len,
             "BEGIN;\n%s\n"
             "SELECT pgshadow.register_table('public', 'items', NULL, '_shadow', '" MIG "', '{}');\n"
             "SELECT pgshadow.finish_install('" MIG "');\nCOMMIT;\n",
             schema);
    itest_exec_ok(t->c, script);
    free(script);
    free(schema);
    itest_create_test_diff(t->c);
}

/* The daemon's config in dir: two workers, small chunks (a pass of some
 * chunks), verify.interval and repair as given. */
static void write_config(itest_db *t, const char *dir, const char *interval, bool repair, char *cfg,
                         size_t cfglen)
{
    snprintf(cfg, cfglen, "%s/pgshadow.yaml", dir);
    char *ci = itest_conninfo_db(t->name);
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "database:\n  conninfo: \"%s\"\nmigration:\n  id: " MIG "\n  tables:\n    - name: items\n"
             "sync:\n  workers: 2\n  chunk_target: 100ms\nverify:\n  interval: %s\n  chunk_rows: 2000\n"
             "  repair: %s\nmetrics:\n  listen: \"\"\n",
             ci, interval, repair ? "true" : "false");
    free(ci);
    assert_int_equal(itest_write_file(cfg, yaml), 0);
}

static void start_daemon(itest_db *t, itest_daemon *d, const char *dir, const char *cfg)
{
    itest_daemon_paths(d, dir, "pgshadowd");
    d->log_level = "info";
    assert_int_equal(itest_daemon_start(d, cfg), 0);
    if (!wait_true(t, "SELECT bool_and(backfill_state = 'done') FROM pgshadow.tables", 60000)) {
        char *log = itest_daemon_log(d);
        fail_msg("the backfill did not finish; log:\n%s", log);
    }
}

static void ctl_verify(const char *cfg, int want_rc, const char *want_out, itest_run *r)
{
    itest_run_ctl(r, cfg, "verify", "--wait", "--timeout", "20s", (char *)NULL);
    if (r->rc != want_rc || (want_out && !strstr(r->out, want_out)))
        fail_msg("pgshadowctl verify --wait: rc %d (want %d), want '%s' in:\n%s\n%s", r->rc, want_rc,
                 want_out ? want_out : "", r->out, r->err);
}

/* ---- every kind of divergence, found, reported, repaired ---------------- */

static void test_finds_reports_repairs(void **state)
{
    itest_db *t = *state;
    install(t, 5000);
    char dir[] = "/tmp/itest-verify-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cfg[128];
    write_config(t, dir, "0s", false, cfg, sizeof cfg);
    itest_daemon d = ITEST_DAEMON_INIT;
    start_daemon(t, &d, dir, cfg);
    itest_expect_sql(t->c, "SELECT test_diff('items')", "0");

    itest_run r = {0};
    ctl_verify(cfg, 0, "0 diverged", &r);
    itest_run_free(&r);

    /* behind the daemon's back */
    itest_exec_ok(t->c,
                  "UPDATE items_shadow SET v = 'hacked' WHERE id = 10;"            /* hash left as it was */
                  "DELETE FROM items_shadow WHERE id = 20;"
                  "INSERT INTO items_shadow (id, v, price) VALUES (1000000, 'extra', 1);"
                  "UPDATE items_shadow SET big = big || 'x' WHERE id = 30;"       /* TOASTed */
                  "UPDATE items_shadow SET who = lower(who::text) WHERE id = 50;" /* citext: = says equal */
                  "UPDATE items_shadow SET price = 1.50 WHERE id = 1;"            /* numeric(10,2): same */
                  "ALTER TABLE items DISABLE TRIGGER ALL;"
                  "UPDATE items SET v = 'no capture' WHERE id = 40;"
                  "ALTER TABLE items ENABLE TRIGGER ALL;");
    /* numeric(10,2) stores 1.50 for 1.5: that one is NOT a divergence */
    itest_expect_sql(t->c, "SELECT price::text FROM items WHERE id = 1", "1.50");

    ctl_verify(cfg, 1, "6 diverged (0 repaired", &r);
    itest_run_free(&r);
    itest_expect_sql(t->c,
                     "SELECT string_agg(key[1] || ':' || reason || ':' || state, ' ' ORDER BY key[1]::bigint) "
                     "FROM pgshadow.divergence",
                     "10:value_differs:open 20:missing_in_shadow:open 30:value_differs:open "
                     "40:value_differs:open 50:value_differs:open 1000000:extra_in_shadow:open");
    itest_expect_sql(t->c, "SELECT diverged_count FROM shadow_migration_dashboard WHERE table_name = 'items'",
                     "6");
    itest_expect_sql(t->c, "SELECT total_diverged_records FROM migration_success_metrics", "6");
    itest_expect_sql(t->c,
                     "SELECT string_agg(id::text, ',' ORDER BY id) FROM items_shadow "
                     "WHERE _shadow_sync_status = 'diverged'",
                     "10,30,40,50,1000000");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.events WHERE what = 'divergence_found'", "6");
    assert_true(itest_daemon_log_count(&d, 0, "row(s) diverged", "{10} (value_differs)") == 1);
    itest_expect_sql(t->c, "SELECT pgshadow.validate_record_hash('items', '10')", "f");
    itest_expect_sql(t->c, "SELECT pgshadow.validate_record_hash('items', '11')", "t");
    itest_expect_sql(t->c,
                     "SELECT missing_in_shadow || ',' || extra_in_shadow || ',' || value_differs "
                     "FROM pgshadow.validate_shadow_consistency('items')",
                     "1,1,4");

    /* repair on: a reload, and the divergences are repaired through apply */
    write_config(t, dir, "0s", true, cfg, sizeof cfg);
    kill(d.pid, SIGHUP);
    if (!wait_true(t, "SELECT bool_and(state = 'repaired') AND count(*) = 6 FROM pgshadow.divergence", 60000)) {
        char *log = itest_daemon_log(&d);
        fail_msg("not repaired; log:\n%s", log);
    }
    assert_true(wait_true(t, "SELECT diverged_count = 0 FROM shadow_migration_dashboard", 10000));
    assert_true(itest_daemon_log_count(&d, 0, "now equal (repaired)", NULL) >= 1);
    assert_true(itest_daemon_log_count(&d, 0, "verify: pass", "finished: verified 5000 rows") >= 2);
    itest_expect_sql(t->c, "SELECT test_diff('items')", "0");
    itest_expect_sql(t->c, "SELECT count(*) FROM items_shadow WHERE _shadow_sync_status <> 'synced'", "0");
    /* the maintained counts survived a row deleted and one added behind
     * their back (counted again when those were found) */
    itest_expect_sql(t->c,
                     "SELECT primary_count || '/' || shadow_count || ' ' || count_source "
                     "FROM shadow_migration_dashboard WHERE table_name = 'items'",
                     "5000/5000 exact");
    ctl_verify(cfg, 0, "0 diverged", &r);
    itest_run_free(&r);

    itest_daemon_kill(&d, SIGTERM);
    itest_daemon_cleanup(&d);
}

/* ---- no false positives under pgbench --------------------------------- */

static const char PGBENCH_SCRIPT[] =
    "\\set id random(1, 20000)\n"
    "\\set n random(1, 3)\n"
    "BEGIN;\n"
    "UPDATE items SET v = md5(random()::text), price = price + 1 WHERE id = :id;\n"
    "INSERT INTO items (id, v, who) VALUES (100000 + :id * 3 + :n, 'new', 'X') ON CONFLICT (id) DO UPDATE SET v = 'again';\n"
    "DELETE FROM items WHERE id = 100000 + ((:id + 7) % 20000) * 3 + :n;\n"
    "END;\n";

static void test_no_false_positives_under_load(void **state)
{
    itest_db *t = *state;
    install(t, 20001); /* the writes touch ids 1..20000 and 100000 on; 20001 is the test's */
    char dir[] = "/tmp/itest-verify-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cfg[128];
    write_config(t, dir, "2s", true, cfg, sizeof cfg);
    itest_daemon d = ITEST_DAEMON_INIT;
    start_daemon(t, &d, dir, cfg);

    char script[160];
    snprintf(script, sizeof script, "%s/write.sql", dir);
    assert_int_equal(itest_write_file(script, PGBENCH_SCRIPT), 0);
    char pgbench[512];
    snprintf(pgbench, sizeof pgbench, "%s/pgbench", itest_env("PGSHADOW_TEST_PGBIN"));
    char *ci = itest_conninfo_db(t->name);
    char *const argv[] = {pgbench, "-n", "-c", "4", "-T", "25", "-f", script, ci, NULL};
    itest_child bench;
    itest_child_start(&bench, argv);
    /* one real divergence, made while the writes run, on a key they never touch */
    itest_sleep_ms(8000);
    itest_exec_ok(t->c, "UPDATE items_shadow SET v = 'broken under load' WHERE id = 20001");
    itest_run br = {0};
    itest_child_finish(&bench, &br);
    free(ci);
    if (br.rc != 0 || !strstr(br.out, "number of failed transactions: 0"))
        fail_msg("pgbench: rc %d\n%s\n%s", br.rc, br.out, br.err);
    long passes = itest_query_long(t->c, "SELECT count(*) FROM pgshadow.verify_passes WHERE finished_at IS NOT NULL");
    itest_run_free(&br);
    /* the writes stopped: apply drains, the queued keys are looked at */
    assert_true(wait_true(t, "SELECT NOT EXISTS (SELECT 1 FROM pgshadow.change_log)", 60000));
    itest_run r = {0};
    ctl_verify(cfg, 0, NULL, &r);
    itest_run_free(&r);
    assert_true(wait_true(t, "SELECT NOT EXISTS (SELECT 1 FROM pgshadow.verify_queue WHERE source <> 'diverged')",
                          30000));
    /* passes must have run while the writes did, or "no false positive"
     * says nothing; two (verify.interval 2s) is the least that shows it:
     * under ASan on a busy 2-core machine a third did not always fit */
    if (passes < 2)
        fail_msg("only %ld verify passes finished during the 25 s of writes", passes);
    /* exactly the broken key, nothing else, ever */
    itest_expect_sql(t->c, "SELECT string_agg(key[1] || ':' || reason, ' ') FROM pgshadow.divergence",
                     "20001:value_differs");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.events WHERE what = 'divergence_found'", "1");
    itest_expect_sql(t->c, "SELECT test_diff('items')", "0");
    itest_daemon_kill(&d, SIGTERM);
    itest_daemon_cleanup(&d);
}

/* ---- incremental verify, and giving up on a repair -------------------- */

/* Drive apply and the second looks by hand (no daemon). */
static void apply_and_recheck(PGconn *c, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        itest_exec_ok(c, "SELECT * FROM pgshadow.apply_batch('" MIG "', 1000)");
        itest_sleep_ms(1100);
        itest_exec_ok(c, "SELECT * FROM pgshadow.verify_recheck('" MIG "', 1000)");
    }
}

static void test_incremental_and_give_up(void **state)
{
    itest_db *t = *state;
    install(t, 2000);
    itest_exec_ok(t->c, "SELECT * FROM pgshadow.backfill_step('" MIG "', 100000)");
    itest_exec_ok(t->c, "SELECT * FROM pgshadow.backfill_step('" MIG "', 100000)");
    itest_exec_ok(t->c, "SELECT pgshadow.verify_configure('" MIG "', true, true)");
    /* apply writes 100 keys: each is queued for another look, and found equal */
    itest_exec_ok(t->c, "UPDATE items SET v = 'w' || id WHERE id <= 100");
    itest_exec_ok(t->c, "SELECT * FROM pgshadow.apply_batch('" MIG "', 1000)");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.verify_queue WHERE source = 'apply'", "100");
    /* one of them broken after apply wrote it: found without any pass */
    itest_exec_ok(t->c, "UPDATE items_shadow SET v = 'broken' WHERE id = 7");
    apply_and_recheck(t->c, 3);
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.verify_passes", "0");
    itest_expect_sql(t->c, "SELECT key[1] || ':' || found_by || ':' || state FROM pgshadow.divergence", "7:apply:repaired");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.verify_queue", "0");

    /* a shadow trigger that rewrites every row it is given: no repair holds */
    itest_exec_ok(t->c,
                  "CREATE FUNCTION public.spoil() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                  "IF NEW.id = 9 THEN NEW.v := 'spoiled'; END IF; RETURN NEW; END $$;"
                  "CREATE TRIGGER spoil BEFORE INSERT OR UPDATE ON items_shadow FOR EACH ROW "
                  "EXECUTE FUNCTION public.spoil();"
                  "UPDATE items SET v = 'nine' WHERE id = 9");
    apply_and_recheck(t->c, 12);
    itest_expect_sql(t->c, "SELECT state || ':' || repairs FROM pgshadow.divergence WHERE key = '{9}'",
                     "unrepaired:3");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.events WHERE what = 'divergence_unrepaired'", "1");
    itest_expect_sql(t->c, "SELECT diverged_count FROM shadow_migration_dashboard", "1");
    /* no fourth repair: the change log stays empty */
    apply_and_recheck(t->c, 2);
    itest_expect_sql(t->c, "SELECT repairs FROM pgshadow.divergence WHERE key = '{9}'", "3");
    /* fixed by hand (the trigger gone, the row rewritten): seen, repaired */
    itest_exec_ok(t->c, "DROP TRIGGER spoil ON items_shadow; UPDATE items SET v = 'nine again' WHERE id = 9");
    itest_exec_ok(t->c, "SELECT * FROM pgshadow.apply_batch('" MIG "', 1000)");
    itest_exec_ok(t->c, "UPDATE pgshadow.verify_queue SET due = now()");
    apply_and_recheck(t->c, 1);
    itest_expect_sql(t->c, "SELECT state FROM pgshadow.divergence WHERE key = '{9}'", "repaired");
    itest_expect_sql(t->c, "SELECT diverged_count FROM shadow_migration_dashboard", "0");
}

/* ---- a divergence whose second look falls in a resync ------------------ */

/* A key with an open divergence is in the queue when the table is copied
 * again (enable-writes after disable-writes). It must be looked at once
 * the copy is done, and its divergence closed when the copy made it equal:
 * dropped from the queue during the copy, nothing looked at it again and
 * it stayed counted (the 'diverged' gate red, READY_FOR_CUTOVER withheld). */
static void test_divergence_through_resync(void **state)
{
    itest_db *t = *state;
    install(t, 200);
    itest_exec_ok(t->c, "SELECT * FROM pgshadow.backfill_step('" MIG "', 100000)");
    itest_exec_ok(t->c, "SELECT * FROM pgshadow.backfill_step('" MIG "', 100000)");
    itest_exec_ok(t->c, "SELECT pgshadow.verify_configure('" MIG "', true, false)"); /* repair off */
    itest_exec_ok(t->c, "UPDATE items SET v = 'w5' WHERE id = 5");
    itest_exec_ok(t->c, "SELECT * FROM pgshadow.apply_batch('" MIG "', 1000)");
    itest_exec_ok(t->c, "UPDATE items_shadow SET v = 'broken' WHERE id = 5");
    apply_and_recheck(t->c, 3);
    itest_expect_sql(t->c, "SELECT state FROM pgshadow.divergence WHERE key = '{5}'", "open");
    itest_expect_sql(t->c, "SELECT diverged_rows FROM pgshadow.tables", "1");
    /* the resync starts; the key's next look comes during it */
    itest_exec_ok(t->c, "UPDATE pgshadow.tables SET backfill_state = 'running'; UPDATE pgshadow.verify_queue SET due = now()");
    itest_exec_ok(t->c, "SELECT * FROM pgshadow.verify_recheck('" MIG "', 1000)");
    itest_expect_sql(t->c, "SELECT count(*) || ':' || bool_and(pass_id IS NULL) || ':' || bool_and(due > now()) "
                           "FROM pgshadow.verify_queue WHERE key = '{5}'", "1:true:true");
    /* the copy makes the row equal and ends; the look after it closes the divergence */
    itest_exec_ok(t->c, "UPDATE items_shadow s SET v = p.v FROM items p WHERE p.id = s.id AND s.id = 5;"
                        "UPDATE pgshadow.tables SET backfill_state = 'done'; UPDATE pgshadow.verify_queue SET due = now()");
    itest_exec_ok(t->c, "SELECT * FROM pgshadow.verify_recheck('" MIG "', 1000)");
    itest_expect_sql(t->c, "SELECT state FROM pgshadow.divergence WHERE key = '{5}'", "repaired");
    itest_expect_sql(t->c, "SELECT diverged_rows FROM pgshadow.tables", "0");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.verify_queue", "0");
}

/* ---- two workers recount one table ----------------------------------- */

/* Two verify workers that judged keys of one table both recount it
 * (_verify_recount). The second one's count must include what the first
 * committed while the second waited for the registry row: a count taken
 * before that wait left the first worker's repaired row counted as
 * diverged (a red 'diverged' gate with nothing diverged). */
static void test_recount_two_workers(void **state)
{
    itest_db *t = *state;
    install(t, 100);
    itest_exec_ok(t->c,
                  "INSERT INTO pgshadow.divergence (table_id, key, reason, found_by) "
                  "SELECT table_id, ARRAY[k::text], 'value_differs', 'pass' FROM pgshadow.tables, "
                  "generate_series(1, 3) k;"
                  "SELECT pgshadow._verify_recount(table_id) FROM pgshadow.tables");
    itest_expect_sql(t->c, "SELECT diverged_rows FROM pgshadow.tables", "3");

    char *ci = itest_conninfo_db(t->name);
    PGconn *b = PQconnectdb(ci);
    free(ci);
    assert_int_equal(PQstatus(b), CONNECTION_OK);
    /* worker A: repairs key 1 and recounts, not yet committed */
    itest_exec_ok(t->c, "BEGIN; UPDATE pgshadow.divergence SET state = 'repaired' WHERE key = '{1}';"
                        "SELECT pgshadow._verify_recount(table_id) FROM pgshadow.tables");
    /* worker B: repairs key 2 and recounts: waits for A's registry row */
    itest_exec_ok(b, "BEGIN; UPDATE pgshadow.divergence SET state = 'repaired' WHERE key = '{2}'");
    assert_int_equal(PQsendQuery(b, "SELECT pgshadow._verify_recount(table_id) FROM pgshadow.tables"), 1);
    char *ci2 = itest_conninfo_db(t->name);
    assert_true(itest_wait_true(ci2, "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                     "AND query LIKE '%_verify_recount%'", 10000));
    free(ci2);
    itest_exec_ok(t->c, "COMMIT");
    PGresult *r;
    while ((r = PQgetResult(b)) != NULL) {
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            fail_msg("worker B's recount: %s", PQresultErrorMessage(r));
        PQclear(r);
    }
    itest_exec_ok(b, "COMMIT");
    PQfinish(b);
    /* key 3 alone is still diverged */
    itest_expect_sql(t->c, "SELECT diverged_rows FROM pgshadow.tables", "1");
    itest_expect_sql(t->c, "SELECT diverged_count FROM shadow_migration_dashboard", "1");
}

/* ---- SIGKILL mid-pass -------------------------------------------------- */

static void test_sigkill_mid_pass(void **state)
{
    itest_db *t = *state;
    install(t, 30000);
    char dir[] = "/tmp/itest-verify-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cfg[128];
    write_config(t, dir, "0s", true, cfg, sizeof cfg);
    itest_daemon d = ITEST_DAEMON_INIT;
    start_daemon(t, &d, dir, cfg);
    /* a slow shadow read (a function in the shadow's row digest would be
     * cheating): small chunks instead, so the pass takes a while */
    itest_run r = {0};
    itest_run_ctl(&r, cfg, "verify", (char *)NULL);
    assert_int_equal(r.rc, 0);
    itest_run_free(&r);
    assert_true(wait_true(t, "SELECT coalesce(sum(rows), 0) > 0 FROM pgshadow.verify_ranges", 20000));
    itest_daemon_kill(&d, SIGKILL);
    itest_daemon_cleanup(&d);
    long done_before = itest_query_long(t->c, "SELECT sum(rows) FROM pgshadow.verify_ranges");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.verify_passes WHERE finished_at IS NULL", "1");
    d = (itest_daemon)ITEST_DAEMON_INIT;
    start_daemon(t, &d, dir, cfg);
    if (!wait_true(t, "SELECT bool_and(finished_at IS NOT NULL) FROM pgshadow.verify_passes", 60000)) {
        char *log = itest_daemon_log(&d);
        fail_msg("the pass did not finish after the restart; log:\n%s", log);
    }
    /* one pass, every row verified exactly once, resumed (not restarted) */
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.verify_passes", "1");
    itest_expect_sql(t->c, "SELECT (result ->> 'rows') FROM pgshadow.verify_passes", "30000");
    assert_true(done_before > 0 && done_before < 30000);
    itest_daemon_kill(&d, SIGTERM);
    itest_daemon_cleanup(&d);
}

int main(void)
{
    if (getenv("PGSHADOW_TEST_FILTER")) /* a cmocka pattern: some cases only */
        cmocka_set_test_filter(getenv("PGSHADOW_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_finds_reports_repairs, db_setup, db_teardown),
        /* a load case: not under ASan (itest.h) */
        ITEST_LOAD_CASE(test_no_false_positives_under_load, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_incremental_and_give_up, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_divergence_through_resync, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_recount_two_workers, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_sigkill_mid_pass, db_setup, db_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
