/*
 * test-sampling.c - shadow-read sampling (issue #13 item 6;
 * sql/86-sampling.sql, src/monitor/sampler.c) against a real PostgreSQL:
 *
 *   a  on synced tables, sample_reads finds no mismatch, reads the number
 *      of keys asked (TABLESAMPLE on a table of 20,000 rows; every key of a
 *      small one), distinct keys, and sane latencies (> 0, p50 <= p99, well
 *      under a second); refuses a key count outside 1..1000;
 *   b  a shadow value changed behind the daemon's back is a mismatch, with
 *      its key; a shadow row missing is one too; the key list is capped;
 *   c  a key with a pending change log entry, or quarantined, is not a
 *      mismatch (counted as skipped), while a real one beside it still is;
 *   d  the real pgshadowd with verify.sample_interval 200ms writes rounds,
 *      the view pgshadow.read_sampling shows them per table and per
 *      migration, a tampered shadow shows up there and as a warning naming
 *      the table;
 *   e  tables owned by an ordinary role are read as that role (a mapped
 *      column's function records current_user), by a caller that is only
 *      pgshadow_daemon and has no right on them; a viewer may read the view
 *      but not run a round.
 *
 * Each test works in its own fresh database, installed by the superuser as
 * pgshadowctl does (one transaction: the SQL files, register_table per
 * table, finish_install).
 *
 * Env: PGSHADOW_TEST_CONNINFO, PGSHADOW_SRCDIR, PGSHADOWD.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itest.h"

#define MIG "m1"
#define APP "sampling_app"                /* a table owner, not a superuser */
#define DAEMON_ROLE "ps_sampling_daemon"  /* LOGIN, member of pgshadow_daemon only */
#define VIEWER_ROLE "ps_sampling_viewer"  /* LOGIN, member of pgshadow_viewer only */

/* ---- fixtures ------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    PGconn *c = itest_connect_db(NULL);
    itest_exec_ok(c, "DO $$ BEGIN "
                     "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" APP "') THEN "
                     "  CREATE ROLE " APP " LOGIN; END IF; "
                     "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgshadow_daemon') THEN "
                     "  CREATE ROLE pgshadow_daemon NOLOGIN; END IF; "
                     "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgshadow_viewer') THEN "
                     "  CREATE ROLE pgshadow_viewer NOLOGIN; END IF; "
                     "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" DAEMON_ROLE "') THEN "
                     "  CREATE ROLE " DAEMON_ROLE " LOGIN IN ROLE pgshadow_daemon; END IF; "
                     "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" VIEWER_ROLE "') THEN "
                     "  CREATE ROLE " VIEWER_ROLE " LOGIN IN ROLE pgshadow_viewer; END IF; "
                     "END $$;"
                     "ALTER ROLE " APP " NOSUPERUSER NOCREATEROLE NOCREATEDB;"
                     "ALTER ROLE " DAEMON_ROLE " NOSUPERUSER NOCREATEROLE NOCREATEDB;"
                     "ALTER ROLE " VIEWER_ROLE " NOSUPERUSER NOCREATEROLE NOCREATEDB;");
    PQfinish(c);
    return 0;
}

static int db_setup(void **state)
{
    itest_db *db = itest_db_new("pgshadow_sampling");
    itest_exec_ok(db->c, "GRANT CREATE ON SCHEMA public TO " APP);
    *state = db;
    return 0;
}

static int db_teardown(void **state)
{
    itest_db_free(*state);
    return 0;
}

/* The install transaction as pgshadowctl builds it, as the superuser. */
static void install(PGconn *c, const char *registers)
{
    char *schema = itest_install_sql();
    char *script = NULL;
    assert_true(asprintf(&script, "BEGIN;\nSET LOCAL lock_timeout = '2s';\n%s\n%s\n"
                                  "SELECT pgshadow.finish_install('" MIG "');\nCOMMIT;\n",
                         schema, registers) > 0);
    itest_exec_ok(c, script);
    free(script);
    free(schema);
}

/* Backfill and apply until every table is done and the log is empty. */
static void sync_all(PGconn *c)
{
    for (int i = 0; i < 100000; i++)
        if (itest_query_long(c, "SELECT count(*) FROM pgshadow.backfill_step('" MIG "', 5000)") == 0)
            break;
    for (int i = 0; i < 1000; i++)
        if (itest_query_long(c, "SELECT taken FROM pgshadow.apply_batch('" MIG "', 1000, 'quarantine')") < 1000)
            break;
    itest_expect_sql(c, "SELECT bool_and(backfill_state = 'done') FROM pgshadow.tables", "t");
}

/* One table's row of a sample_reads round. */
typedef struct {
    long keys, mismatches, skipped;
    char mkeys[1024];
    double pp50, pp99, sp50, sp99;
    long win_mismatches;
} round_row;

/* Run sample_reads(MIG, n) on c and return the row of table (NULL: the
 * migration's row); fails the test when the call fails or has no such row. */
static round_row sample(PGconn *c, int n, const char *table)
{
    char nk[16];
    snprintf(nk, sizeof nk, "%d", n);
    const char *params[] = {MIG, nk};
    PGresult *r = PQexecParams(c,
                               "SELECT table_name, keys, mismatches, skipped, mismatch_keys::text, "
                               "primary_p50_ms, primary_p99_ms, shadow_p50_ms, shadow_p99_ms, "
                               "window_mismatches FROM pgshadow.sample_reads($1, $2::integer)",
                               2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "sample_reads failed: %s\n", PQresultErrorMessage(r));
        PQclear(r);
        fail();
    }
    round_row row = {0};
    bool found = false;
    for (int i = 0; i < PQntuples(r) && !found; i++) {
        bool is_mig = PQgetisnull(r, i, 0);
        if (table ? (is_mig || strcmp(PQgetvalue(r, i, 0), table) != 0) : !is_mig)
            continue;
        found = true;
        row.keys = atol(PQgetvalue(r, i, 1));
        row.mismatches = atol(PQgetvalue(r, i, 2));
        row.skipped = atol(PQgetvalue(r, i, 3));
        snprintf(row.mkeys, sizeof row.mkeys, "%s", PQgetvalue(r, i, 4));
        row.pp50 = PQgetisnull(r, i, 5) ? -1 : atof(PQgetvalue(r, i, 5));
        row.pp99 = PQgetisnull(r, i, 6) ? -1 : atof(PQgetvalue(r, i, 6));
        row.sp50 = PQgetisnull(r, i, 7) ? -1 : atof(PQgetvalue(r, i, 7));
        row.sp99 = PQgetisnull(r, i, 8) ? -1 : atof(PQgetvalue(r, i, 8));
        row.win_mismatches = atol(PQgetvalue(r, i, 9));
    }
    PQclear(r);
    if (!found)
        fail_msg("sample_reads returned no row for %s", table ? table : "the migration");
    return row;
}

static void assert_sane_latencies(const round_row *r)
{
    if (!(r->pp50 > 0 && r->pp50 <= r->pp99 && r->pp99 < 1000 && r->sp50 > 0 && r->sp50 <= r->sp99 &&
          r->sp99 < 1000))
        fail_msg("latencies out of range: primary p50 %g p99 %g, shadow p50 %g p99 %g", r->pp50, r->pp99,
                 r->sp50, r->sp99);
}

static const char two_tables[] =
    "CREATE TABLE big (id int PRIMARY KEY, v text, n numeric);"
    "INSERT INTO big SELECT g, 'value ' || g, g / 7.0 FROM generate_series(1, 20000) g;"
    "CREATE TABLE small (a text, b date, w text, PRIMARY KEY (a, b));"
    "INSERT INTO small SELECT 'k' || g, date '2024-01-01' + g, 'w' || g FROM generate_series(1, 10) g;";

static const char two_registers[] =
    "SELECT pgshadow.register_table('public', 'big', NULL, '_shadow', '" MIG "', "
    "  '{\"n\": \"round(p.n, 2)\"}');"
    "SELECT pgshadow.register_table('public', 'small', NULL, '_shadow', '" MIG "', '{}');";

/* ---- a: synced tables ----------------------------------------------------- */

static void test_synced_no_mismatch(void **state)
{
    itest_db *db = *state;
    PGconn *c = db->c;
    itest_exec_ok(c, two_tables);
    install(c, two_registers);
    /* before the backfill is done, nothing is sampled */
    round_row m = sample(c, 20, NULL);
    assert_int_equal(m.keys, 0);
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.read_samples", "0");
    sync_all(c);
    /* the table must be big enough for the TABLESAMPLE path (> 64 pages) */
    assert_true(itest_query_long(c, "SELECT pg_relation_size('big') / current_setting('block_size')::int") > 64);

    round_row b = sample(c, 20, "big");
    assert_int_equal(b.keys, 20);
    assert_int_equal(b.mismatches, 0);
    assert_int_equal(b.skipped, 0);
    assert_string_equal(b.mkeys, "{}");
    assert_sane_latencies(&b);
    /* a small table is read whole: every one of its 10 keys, distinct */
    round_row s = sample(c, 50, "small");
    assert_int_equal(s.keys, 10);
    assert_int_equal(s.mismatches, 0);
    assert_sane_latencies(&s);
    /* the rounds: one row per table per call, with every key's times */
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.read_samples", "4");
    itest_expect_sql(c, "SELECT string_agg(keys::text || '/' || cardinality(primary_ms) || '/' || "
                        "cardinality(shadow_ms), ',' ORDER BY sample_id) FROM pgshadow.read_samples",
                     "20/20/20,10/10/10,50/50/50,10/10/10");
    /* the window, per table and for the migration */
    itest_expect_sql(c, "SELECT string_agg(coalesce(table_name, '*') || ':' || rounds || ':' || keys_sampled || ':' "
                        "|| mismatches, ',' ORDER BY table_name NULLS LAST) FROM pgshadow.read_sampling",
                     "big:2:70:0,small:2:20:0,*:4:90:0");
    itest_expect_sql(c, "SELECT bool_and(p99_ratio > 0 AND p50_ratio > 0 AND primary_p99_ms >= primary_p50_ms "
                        "AND last_sampled_at IS NOT NULL) FROM pgshadow.read_sampling",
                     "t");
    /* out of range */
    PGresult *r = PQexec(c, "SELECT * FROM pgshadow.sample_reads('" MIG "', 0)");
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "22023");
    PQclear(r);
    r = PQexec(c, "SELECT * FROM pgshadow.sample_reads('" MIG "', 1001)");
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
}

/* ---- b, c: mismatches, and what is not one ------------------------------- */

static void test_tampered_shadow(void **state)
{
    itest_db *db = *state;
    PGconn *c = db->c;
    itest_exec_ok(c, two_tables);
    install(c, two_registers);
    sync_all(c);
    /* behind the daemon's back: the shadow has no capture, and the
     * superuser may write it directly */
    itest_exec_ok(c, "UPDATE small_shadow SET w = 'tampered' WHERE a = 'k7'");
    round_row s = sample(c, 100, "small");
    assert_int_equal(s.keys, 10);
    assert_int_equal(s.mismatches, 1);
    assert_int_equal(s.skipped, 0);
    assert_string_equal(s.mkeys, "{\"{k7,2024-01-08}\"}");
    assert_int_equal(s.win_mismatches, 1);
    /* a shadow row missing is a mismatch too */
    itest_exec_ok(c, "DELETE FROM small_shadow WHERE a = 'k2'");
    s = sample(c, 100, "small");
    assert_int_equal(s.mismatches, 2);
    assert_int_equal(s.win_mismatches, 3);
    itest_expect_sql(c, "SELECT mismatches FROM pgshadow.read_sampling WHERE table_name IS NULL", "3");
    /* every key of big differs: the list of keys is capped at 10 */
    itest_exec_ok(c, "UPDATE big_shadow SET v = v || '!'");
    round_row b = sample(c, 20, "big");
    assert_int_equal(b.keys, 20);
    assert_int_equal(b.mismatches, 20);
    itest_expect_sql(c, "SELECT cardinality(mismatch_keys) FROM pgshadow.read_samples r JOIN pgshadow.tables t "
                        "USING (table_id) WHERE t.table_name = 'big' ORDER BY sample_id DESC LIMIT 1",
                     "10");
    /* the mapped value is what is compared: n is round(p.n, 2) in the shadow */
    itest_exec_ok(c, "UPDATE big_shadow s SET v = p.v FROM big p WHERE p.id = s.id");
    b = sample(c, 20, "big");
    assert_int_equal(b.mismatches, 0);
    itest_exec_ok(c, "UPDATE big_shadow SET n = n + 0.001");
    b = sample(c, 20, "big");
    assert_int_equal(b.mismatches, 20);
}

static void test_pending_not_mismatch(void **state)
{
    itest_db *db = *state;
    PGconn *c = db->c;
    itest_exec_ok(c, two_tables);
    install(c, two_registers);
    sync_all(c);
    /* a write captured and not applied yet (no daemon runs): lag, not a
     * wrong shadow */
    itest_exec_ok(c, "UPDATE small SET w = 'new' WHERE a = 'k3'");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "1");
    round_row s = sample(c, 100, "small");
    assert_int_equal(s.keys, 10);
    assert_int_equal(s.mismatches, 0);
    assert_int_equal(s.skipped, 1);
    /* a quarantined key is already reported: not a mismatch either */
    itest_exec_ok(c, "INSERT INTO pgshadow.quarantine (table_id, key, sqlstate, message, phase) "
                     "SELECT table_id, '{k5,2024-01-06}', '23514', 'test', 'upsert' FROM pgshadow.tables "
                     "WHERE table_name = 'small';"
                     "UPDATE small_shadow SET w = 'stale' WHERE a = 'k5';"
                     /* and a real one beside them still counts */
                     "UPDATE small_shadow SET w = 'tampered' WHERE a = 'k9';");
    s = sample(c, 100, "small");
    assert_int_equal(s.mismatches, 1);
    assert_int_equal(s.skipped, 2);
    assert_string_equal(s.mkeys, "{\"{k9,2024-01-10}\"}");
    /* once applied, the pending key matches again: nothing skipped for it */
    for (int i = 0; i < 10; i++)
        if (itest_query_long(c, "SELECT taken FROM pgshadow.apply_batch('" MIG "', 1000, 'quarantine')") < 1000)
            break;
    itest_expect_sql(c, "SELECT w FROM small_shadow WHERE a = 'k3'", "new");
    s = sample(c, 100, "small");
    assert_int_equal(s.mismatches, 1);
    assert_int_equal(s.skipped, 1);
    /* a TRUNCATE pending (a 'T' entry, key NULL) excuses every key: the
     * insert's own entry is taken away to show it */
    itest_exec_ok(c, "TRUNCATE small");
    s = sample(c, 100, "small");
    assert_int_equal(s.keys, 0);
    itest_exec_ok(c, "INSERT INTO small VALUES ('k9', '2024-01-10', 'w9');"
                     "DELETE FROM pgshadow.change_log WHERE op <> 'T';");
    itest_expect_sql(c, "SELECT string_agg(op || coalesce(key::text, '-'), ',') FROM pgshadow.change_log", "T-");
    s = sample(c, 100, "small");
    assert_int_equal(s.keys, 1);
    assert_int_equal(s.mismatches, 0);
    assert_int_equal(s.skipped, 1);
    /* without it, k9 ('tampered' in the shadow) is a mismatch again */
    itest_exec_ok(c, "DELETE FROM pgshadow.change_log");
    s = sample(c, 100, "small");
    assert_int_equal(s.mismatches, 1);
    assert_int_equal(s.skipped, 0);
}

/* ---- e: read as the owner ------------------------------------------------- */

static void test_read_as_owner(void **state)
{
    itest_db *db = *state;
    PGconn *c = db->c;
    PGconn *app = itest_connect_as(db->name, APP);
    itest_exec_ok(app, "CREATE TABLE public.seen (who text);"
                       "CREATE FUNCTION public.whoami(v text) RETURNS text LANGUAGE plpgsql AS "
                       "  $f$ BEGIN INSERT INTO public.seen VALUES (current_user); RETURN v; END $f$;"
                       "CREATE TABLE t (id int PRIMARY KEY, v text);"
                       "INSERT INTO t SELECT g, 'x' || g FROM generate_series(1, 30) g;");
    install(c, "SELECT pgshadow.register_table('public', 't', NULL, '_shadow', '" MIG "', "
               "  '{\"v\": \"public.whoami(p.v)\"}');");
    sync_all(c);
    itest_exec_ok(c, "DELETE FROM public.seen");
    /* the caller is only pgshadow_daemon: no right on the table pair */
    itest_expect_sql(c, "SELECT has_table_privilege('" DAEMON_ROLE "', 'public.t', 'SELECT') OR "
                        "has_table_privilege('" DAEMON_ROLE "', 'public.t_shadow', 'SELECT')",
                     "f");
    PGconn *d = itest_connect_as(db->name, DAEMON_ROLE);
    round_row r = sample(d, 10, "t");
    assert_int_equal(r.keys, 10);
    assert_int_equal(r.mismatches, 0);
    /* the primary side ran the mapping, as the owner and only as it */
    assert_true(itest_query_long(c, "SELECT count(*) FROM public.seen") >= 10);
    itest_expect_sql(c, "SELECT string_agg(DISTINCT who, ',') FROM public.seen", APP);
    itest_expect_sql(c, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 't_shadow'::regclass", APP);
    /* the daemon's role reads the view; a viewer reads it too, and may not
     * run a round (it writes read_samples and reads user tables) */
    itest_expect_sql(d, "SELECT rounds FROM pgshadow.read_sampling WHERE table_name = 't'", "1");
    PGconn *v = itest_connect_as(db->name, VIEWER_ROLE);
    itest_expect_sql(v, "SELECT keys_sampled FROM pgshadow.read_sampling WHERE table_name IS NULL", "10");
    PGresult *res = PQexec(v, "SELECT * FROM pgshadow.sample_reads('" MIG "', 5)");
    assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(res, PG_DIAG_SQLSTATE), "42501");
    PQclear(res);
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.read_samples", "1");
    PQfinish(v);
    PQfinish(d);
    PQfinish(app);
}

/* ---- d: the daemon ------------------------------------------------------- */

static void test_daemon_samples(void **state)
{
    itest_db *db = *state;
    PGconn *c = db->c;
    PGconn *app = itest_connect_as(db->name, APP);
    itest_exec_ok(app, "CREATE TABLE t (id int PRIMARY KEY, v text);"
                       "INSERT INTO t SELECT g, 'x' || g FROM generate_series(1, 50) g;");
    install(c, "SELECT pgshadow.register_table('public', 't', NULL, '_shadow', '" MIG "', '{}');");

    char dir[] = "/tmp/itest-sampling-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/pgshadow.yaml", dir);
    char *ci = itest_conninfo_as(db->name, DAEMON_ROLE);
    char *yaml = NULL;
    assert_true(asprintf(&yaml,
                         "database:\n  conninfo: \"%s\"\n"
                         "migration:\n  id: " MIG "\n  tables:\n    - name: t\n"
                         "sync:\n  batch_size: 100\n  batch_delay: 10ms\n  catchup_interval: 250ms\n"
                         "verify:\n  sample_interval: 200ms\n  sample_keys: 5\n"
                         "metrics:\n  listen: \"\"\n",
                         ci) > 0);
    assert_int_equal(itest_write_file(cfg, yaml), 0);
    free(yaml);
    itest_daemon dm = ITEST_DAEMON_INIT;
    itest_daemon_paths(&dm, dir, "d");
    dm.sock[0] = '\0';
    dm.log_level = "debug";
    assert_int_equal(itest_daemon_start(&dm, cfg), 0);
    char *dbci = itest_conninfo_db(db->name);
    bool ok = itest_wait_true(dbci, "SELECT backfill_state = 'done' FROM pgshadow.tables", 30000);
    /* rounds every 200 ms: three of them within a few seconds */
    ok = ok && itest_wait_true(dbci, "SELECT rounds >= 3 AND keys_sampled >= 15 AND mismatches = 0 "
                                     "FROM pgshadow.read_sampling WHERE table_name = 't'", 30000);
    ok = ok && itest_wait_true(dbci, "SELECT rounds >= 3 AND p99_ratio > 0 FROM pgshadow.read_sampling "
                                     "WHERE migration_id = '" MIG "' AND table_name IS NULL", 30000);
    size_t from = itest_daemon_log_size(&dm);
    /* behind the daemon's back: every shadow row differs */
    itest_exec_ok(c, "UPDATE t_shadow SET v = 'tampered'");
    ok = ok && itest_daemon_wait_log(&dm, from, "sampler: t: 5 of 5 sampled keys differ", 30000) > 0;
    ok = ok && itest_wait_true(dbci, "SELECT mismatches >= 5 FROM pgshadow.read_sampling WHERE table_name = 't'",
                               30000);
    if (!ok) {
        char *log = itest_daemon_log(&dm);
        fprintf(stderr, "daemon log:\n%s\n", log);
        free(log);
    }
    assert_true(ok);
    /* the debug line reports each round and the window */
    assert_true(itest_daemon_log_count(&dm, from, "sampler: round:", "mismatches") > 0);
    itest_daemon_cleanup(&dm);
    free(dbci);
    free(ci);
    unlink(cfg);
    char path[300];
    snprintf(path, sizeof path, "%s/d.log", dir);
    unlink(path);
    rmdir(dir);
    PQfinish(app);
}

#define T(f) cmocka_unit_test_setup_teardown(f, db_setup, db_teardown)

int main(void)
{
    const char *const need[] = {"PGSHADOW_TEST_CONNINFO", "PGSHADOW_SRCDIR", "PGSHADOWD", NULL};
    if (!itest_require_env("itest-sampling", need))
        return 1;
    const struct CMUnitTest tests[] = {
        T(test_synced_no_mismatch),
        T(test_tampered_shadow),
        T(test_pending_not_mismatch),
        T(test_read_as_owner),
        T(test_daemon_samples),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
