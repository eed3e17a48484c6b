/*
 * test-hostile.c - the holes an adversarial review found (issue #9,
 * findings 1-11), each against a real PostgreSQL, each with a sibling:
 *
 *   1  a table owner who is not us: code it controls (a CHECK function, a
 *      trigger on the shadow, a domain CHECK, an index expression) runs as
 *      that owner, never as the installer; a user-owned key type is
 *      refused; the real pgshadowd, connected as a login role that is only
 *      a member of pgshadow_daemon, applies a hostile owner's rows;
 *   2  non-default equality: citext and a nondeterministic collation;
 *   3  capture on/off decided in the writer's snapshot (disable-writes with
 *      an open writer; a REPEATABLE READ snapshot older than install);
 *   4  a shadow that already holds rows is reconciled;
 *   5  two migrations in one database;
 *   6  key types widened after install (varchar(5) -> varchar(20), int ->
 *      bigint);
 *   7  one bad change log entry (a writer's DateStyle on a domain over
 *      date; garbage logged by hand) stops nothing else;
 *   9  key spelling changes are carried (numeric 1.0 -> 1.00);
 *   10 a quarantined update of a row the shadow holds is counted once;
 *   11 a resync never empties the shadow (routed reads, a foreign key
 *      from outside pgshadow).
 * (Finding 8, a mapped key column, is refused at install: test-capture.c.)
 *
 * Each test works in its own fresh database, installed by the superuser as
 * pgshadowctl does (one transaction: the SQL files, register_table per
 * table, finish_install); apply and backfill run as a login role that is
 * only a member of pgshadow_daemon.
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

#define APP "hostile_app"          /* the table owner, not us */
#define DAEMON_ROLE "ps_daemon_login" /* LOGIN, member of pgshadow_daemon only */

typedef struct {
    itest_db *db;
    PGconn *d; /* connected as DAEMON_ROLE */
} hctx;

/* Cluster-wide roles, made once; the hostile owner is reset to a plain
 * role (a failed run of an old build could have left it superuser). */
static int group_setup(void **state)
{
    (void)state;
    PGconn *c = itest_connect_db(NULL);
    itest_exec_ok(c, "DO $$ BEGIN "
                     "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" APP "') THEN "
                     "  CREATE ROLE " APP " LOGIN; END IF; "
                     "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgshadow_daemon') THEN "
                     "  CREATE ROLE pgshadow_daemon NOLOGIN; END IF; "
                     "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" DAEMON_ROLE "') THEN "
                     "  CREATE ROLE " DAEMON_ROLE " LOGIN IN ROLE pgshadow_daemon; END IF; "
                     "END $$;"
                     "ALTER ROLE " APP " NOSUPERUSER NOCREATEROLE NOCREATEDB;"
                     "ALTER ROLE " DAEMON_ROLE " NOSUPERUSER NOCREATEROLE NOCREATEDB;");
    PQfinish(c);
    return 0;
}

static int db_setup(void **state)
{
    hctx *h = calloc(1, sizeof *h);
    h->db = itest_db_new("pgshadow_hostile");
    /* the hostile owner may create in public (as a typical app role does) */
    itest_exec_ok(h->db->c, "GRANT CREATE ON SCHEMA public TO " APP ";"
                            "CREATE EXTENSION citext;");
    *state = h;
    return 0;
}

static int db_teardown(void **state)
{
    hctx *h = *state;
    if (h->d)
        PQfinish(h->d);
    /* whatever happened, the owner must not have kept superuser */
    PGconn *c = itest_connect_db(NULL);
    itest_exec_ok(c, "ALTER ROLE " APP " NOSUPERUSER");
    PQfinish(c);
    itest_db_free(h->db);
    free(h);
    return 0;
}

/* The install transaction as pgshadowctl builds it, as the superuser. */
static void install_mig(PGconn *c, const char *mig, const char *registers)
{
    char *schema = itest_install_sql();
    char *script = NULL;
    assert_true(asprintf(&script, "BEGIN;\nSET LOCAL lock_timeout = '2s';\n%s\n%s\n"
                                  "SELECT pgshadow.finish_install('%s');\nCOMMIT;\n",
                         schema, registers, mig) > 0);
    itest_exec_ok(c, script);
    free(script);
    free(schema);
}

/* The install, expected to fail: the server's message. */
static char *install_fails(PGconn *c, const char *registers)
{
    char *schema = itest_install_sql();
    char *script = NULL;
    assert_true(asprintf(&script, "BEGIN;\n%s\n%s\nSELECT pgshadow.finish_install('m1');\nCOMMIT;\n",
                         schema, registers) > 0);
    PGresult *r = PQexec(c, script);
    assert_int_not_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    char *msg = strdup(PQresultErrorMessage(r));
    PQclear(r);
    PQclear(PQexec(c, "ROLLBACK"));
    free(script);
    free(schema);
    return msg;
}

static void install(PGconn *c, const char *registers)
{
    install_mig(c, "m1", registers);
}

/* The daemon's connection: a login role that is only pgshadow_daemon. */
static PGconn *daemon_conn(hctx *h)
{
    if (!h->d)
        h->d = itest_connect_as(h->db->name, DAEMON_ROLE);
    return h->d;
}

static void apply_all(hctx *h, const char *mig)
{
    PGconn *d = daemon_conn(h);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT taken FROM pgshadow.apply_batch('%s', 1000, 'quarantine')", mig);
    for (int i = 0; i < 1000; i++) {
        char *v = itest_query(d, sql);
        int n = atoi(v);
        free(v);
        if (n < 1000)
            return;
    }
    fail_msg("apply never drained");
}

/* backfill_step until it says every table is done. */
static void backfill_all(hctx *h, const char *mig, int chunk)
{
    PGconn *d = daemon_conn(h);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgshadow.backfill_step('%s', %d)", mig, chunk);
    for (int i = 0; i < 100000; i++) {
        char *v = itest_query(d, sql);
        int n = atoi(v);
        free(v);
        if (n == 0)
            return;
    }
    fail_msg("backfill never finished");
}

static void sync_all(hctx *h, const char *mig)
{
    for (int i = 0; i < 3; i++) {
        apply_all(h, mig);
        backfill_all(h, mig, 3);
    }
    apply_all(h, mig);
}

/* Rows differing between primary and shadow (canonical hash of the primary
 * row vs the shadow's columns and stored hash; rows on one side only),
 * compared by the key's own equality (the table's key columns, = as the
 * column type defines it). */
static long differing(PGconn *c, const char *table)
{
    char sql[2048];
    snprintf(sql, sizeof sql,
             "DO $$ DECLARE t pgshadow.tables; j text; n bigint; BEGIN "
             "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL extra_float_digits = 1; "
             "SELECT * INTO STRICT t FROM pgshadow.tables WHERE table_name = '%s'; "
             "SELECT string_agg(format('s.%%I = p.%%I', k, k), ' AND ') INTO j FROM unnest(t.key_columns) k; "
             "EXECUTE format('SELECT count(*) FROM %%I.%%I p FULL JOIN %%I.%%I s ON %%s WHERE p.%%I IS NULL OR "
             "s.%%I IS NULL OR s._shadow_validation_hash IS DISTINCT FROM %%s OR "
             "s._shadow_validation_hash IS DISTINCT FROM %%s', "
             "t.schema_name, t.table_name, t.schema_name, t.shadow_name, j, t.key_columns[1], "
             "t.key_columns[1], t.hash_expr, t.shadow_hash_expr) INTO n; "
             "PERFORM set_config('hostile.diff', n::text, false); END $$",
             table);
    itest_exec_ok(c, sql);
    char *v = itest_query(c, "SELECT current_setting('hostile.diff')");
    long n = strtol(v, NULL, 10);
    free(v);
    if (n != 0)
        fprintf(stderr, "table %s: %ld rows differ between primary and shadow\n", table, n);
    return n;
}

/* ---- 1: no code a table owner controls runs with more than its rights -- */

/* hostile.evil(): records who runs it, and grabs superuser if it can (the
 * review's reproduction: ALTER ROLE app SUPERUSER when current_user is a
 * superuser); also tries the daemon's rights (pgshadow's change log). */
static const char evil_fn[] =
    "CREATE TABLE public.seen (who text, what text);"
    "CREATE FUNCTION public.evil(what text) RETURNS boolean LANGUAGE plpgsql AS $f$ BEGIN "
    "  INSERT INTO public.seen VALUES (current_user, what);"
    "  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN "
    "    EXECUTE 'ALTER ROLE " APP " SUPERUSER'; END IF;"
    "  BEGIN DELETE FROM pgshadow.change_log; INSERT INTO public.seen VALUES (current_user, 'deleted change_log'); "
    "  EXCEPTION WHEN insufficient_privilege THEN NULL; END;"
    "  RETURN true; END $f$;";

static void test_owner_code_runs_as_owner(void **state)
{
    hctx *h = *state;
    PGconn *c = h->db->c;
    PGconn *app = itest_connect_as(h->db->name, APP);
    /* The review's case: a CHECK calling the owner's function, harmless at
     * install; siblings: a trigger on a shadow the owner provides, a domain
     * CHECK on a shadow column, an index expression on the shadow. */
    itest_exec_ok(app, evil_fn);
    itest_exec_ok(app, "CREATE FUNCTION public.app_chk(id int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';"
                       "CREATE TABLE t (id int PRIMARY KEY, v text CHECK (public.app_chk(id)));"
                       "CREATE DOMAIN public.dv AS text CHECK (public.evil('domain'));"
                       "CREATE FUNCTION public.ixf(text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS "
                       "  $f$ BEGIN PERFORM public.evil('index'); RETURN $1; END $f$;"
                       "CREATE TABLE u (id int PRIMARY KEY, v text);"
                       "CREATE TABLE u_shadow (id int PRIMARY KEY, v public.dv,"
                       "  _shadow_version int, _shadow_created_at timestamptz, _shadow_source_table text,"
                       "  _shadow_migration_id text, _shadow_sync_status varchar(20), _shadow_last_sync timestamptz,"
                       "  _shadow_validation_hash varchar(64));"
                       "CREATE INDEX ON u_shadow (public.ixf(v));"
                       "CREATE FUNCTION public.trg() RETURNS trigger LANGUAGE plpgsql AS "
                       "  $f$ BEGIN PERFORM public.evil('trigger'); RETURN NEW; END $f$;"
                       "CREATE TRIGGER t BEFORE INSERT OR UPDATE ON u_shadow FOR EACH ROW EXECUTE FUNCTION public.trg();"
                       "INSERT INTO t VALUES (1, 'a'); INSERT INTO u VALUES (1, 'a');");
    install(c, "SELECT pgshadow.register_table('public', 't', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'u', NULL, '_shadow', 'm1', '{}');");
    /* the shadow install created belongs to the table's owner */
    itest_expect_sql(c, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 't_shadow'::regclass", APP);
    backfill_all(h, "m1", 100);
    /* now the owner arms its CHECK and writes */
    itest_exec_ok(app, "CREATE OR REPLACE FUNCTION public.app_chk(id int) RETURNS boolean LANGUAGE sql "
                       "AS 'SELECT public.evil(''check'')';"
                       "INSERT INTO t VALUES (2, 'b'); UPDATE t SET v = 'c' WHERE id = 1;"
                       "INSERT INTO u VALUES (2, 'b');");
    itest_exec_ok(c, "DELETE FROM public.seen");
    apply_all(h, "m1");
    /* applied, every piece of the owner's code ran, and only as the owner */
    itest_expect_sql(c, "SELECT count(*) FROM t_shadow", "2");
    itest_expect_sql(c, "SELECT count(*) FROM u_shadow", "2");
    itest_expect_sql(c, "SELECT string_agg(DISTINCT what, ',' ORDER BY what) FROM public.seen",
                     "check,domain,index,trigger");
    itest_expect_sql(c, "SELECT string_agg(DISTINCT who, ',') FROM public.seen", APP);
    itest_expect_sql(c, "SELECT rolsuper FROM pg_roles WHERE rolname = '" APP "'", "f");
    assert_int_equal(differing(c, "t"), 0);
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    /* the owner cannot reach (nor alter) the function that runs as it */
    PGresult *r = PQexec(app, "SELECT p.oid::regprocedure::text FROM pg_proc p "
                              "WHERE p.pronamespace = 'pgshadow_apply'::regnamespace");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_true(PQntuples(r) >= 1);
    char alter[512];
    snprintf(alter, sizeof alter, "ALTER FUNCTION %s SECURITY INVOKER", PQgetvalue(r, 0, 0));
    PQclear(r);
    r = PQexec(app, alter);
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501");
    PQclear(r);
    PQfinish(app);
}

/* A key type its owner can attach code to (an enum: CREATE CAST (text AS
 * e) WITH FUNCTION ...) is refused at install; capture never casts a key to
 * text (an owner-made cast from the key type), and a key column changed to
 * such a type after install quarantines its entries, running no cast. */
static void test_owner_key_type(void **state)
{
    hctx *h = *state;
    PGconn *c = h->db->c;
    PGconn *app = itest_connect_as(h->db->name, APP);
    itest_exec_ok(app, evil_fn);
    itest_exec_ok(app, "CREATE TYPE public.color AS ENUM ('red', 'green');"
                       "CREATE FUNCTION public.color_text(public.color) RETURNS text LANGUAGE plpgsql AS "
                       "  $f$ BEGIN PERFORM public.evil('cast'); RETURN $1::text; END $f$;"
                       "CREATE CAST (public.color AS text) WITH FUNCTION public.color_text(public.color);"
                       "CREATE TABLE e (c public.color PRIMARY KEY, v int);"
                       "CREATE TABLE k (id text PRIMARY KEY, v int);"
                       "INSERT INTO k VALUES ('red', 1)");
    char *err = install_fails(c, "SELECT pgshadow.register_table('public', 'e', NULL, '_shadow', 'm1', '{}');");
    assert_non_null(strstr(err, "key column c of table public.e is of type public.color, owned by role " APP));
    free(err);
    install(c, "SELECT pgshadow.register_table('public', 'k', NULL, '_shadow', 'm1', '{}');");
    backfill_all(h, "m1", 100);
    /* the owner turns the key into its enum, with its cast, and writes */
    itest_exec_ok(c, "DELETE FROM public.seen");
    itest_exec_ok(app, "ALTER TABLE k ALTER COLUMN id TYPE public.color USING id::public.color;"
                       "INSERT INTO k VALUES ('green', 2)");
    /* the capture trigger (our rights, the writer's session) ran no cast */
    itest_expect_sql(c, "SELECT count(*) FROM public.seen", "0");
    itest_expect_sql(c, "SELECT key::text FROM pgshadow.change_log", "{green}");
    apply_all(h, "m1");
    /* refused now too: the entry is quarantined with the reason, nothing ran */
    itest_expect_sql(c, "SELECT count(*) FROM public.seen", "0");
    itest_expect_sql(c, "SELECT phase || ' ' || (message LIKE '%owned by role " APP "%')::text FROM pgshadow.quarantine",
                     "parse true");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "0");
    itest_expect_sql(c, "SELECT rolsuper FROM pg_roles WHERE rolname = '" APP "'", "f");
    PQfinish(app);
}

/* The real daemon, connected as a login role that is only a member of
 * pgshadow_daemon, applies a hostile owner's rows; the owner's CHECK runs
 * as the owner (this is the configuration the trust model documents). */
static void test_daemon_as_daemon_role(void **state)
{
    hctx *h = *state;
    PGconn *c = h->db->c;
    PGconn *app = itest_connect_as(h->db->name, APP);
    itest_exec_ok(app, evil_fn);
    itest_exec_ok(app, "CREATE FUNCTION public.app_chk(id int) RETURNS boolean LANGUAGE sql AS 'SELECT true';"
                       "CREATE TABLE t (id int PRIMARY KEY, v text CHECK (public.app_chk(id)));"
                       "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 20) g;");
    install(c, "SELECT pgshadow.register_table('public', 't', NULL, '_shadow', 'm1', '{}');");
    itest_exec_ok(app, "CREATE OR REPLACE FUNCTION public.app_chk(id int) RETURNS boolean LANGUAGE sql "
                       "AS 'SELECT public.evil(''check'')';");
    /* sibling: a database whose sessions default to SERIALIZABLE (apply and
     * backfill need READ COMMITTED; the daemon sets it for its sessions) */
    char alter[256];
    snprintf(alter, sizeof alter, "ALTER DATABASE %s SET default_transaction_isolation = 'serializable'",
             h->db->name);
    itest_exec_ok(c, alter);

    char dir[] = "/tmp/itest-hostile-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/pgshadow.yaml", dir);
    char *ci = itest_conninfo_as(h->db->name, DAEMON_ROLE);
    char *yaml = NULL;
    assert_true(asprintf(&yaml,
                         "database:\n  conninfo: \"%s\"\n"
                         "migration:\n  id: m1\n  tables:\n    - name: t\n"
                         "sync:\n  batch_size: 100\n  batch_delay: 10ms\n  catchup_interval: 250ms\n"
                         "  backfill_chunk: 7\n"
                         "metrics:\n  listen: \"\"\n",
                         ci) > 0);
    assert_int_equal(itest_write_file(cfg, yaml), 0);
    free(yaml);
    itest_daemon dm = ITEST_DAEMON_INIT;
    itest_daemon_paths(&dm, dir, "d");
    dm.sock[0] = '\0';
    assert_int_equal(itest_daemon_start(&dm, cfg), 0);
    char *dbci = itest_conninfo_db(h->db->name);
    bool ok = itest_wait_true(dbci, "SELECT backfill_state = 'done' FROM pgshadow.tables", 30000);
    itest_exec_ok(app, "INSERT INTO t VALUES (100, 'y'); UPDATE t SET v = 'z' WHERE id = 3;");
    ok = ok && itest_wait_true(dbci, "SELECT (SELECT count(*) FROM t_shadow) = 21 "
                                     "AND (SELECT v FROM t_shadow WHERE id = 3) = 'z' "
                                     "AND NOT EXISTS (SELECT 1 FROM pgshadow.change_log)", 30000);
    if (!ok) {
        char *log = itest_daemon_log(&dm);
        fprintf(stderr, "daemon log:\n%s\n", log);
        free(log);
    }
    assert_true(ok);
    itest_daemon_cleanup(&dm);
    itest_expect_sql(c, "SELECT string_agg(DISTINCT who, ',') FROM public.seen", APP);
    itest_expect_sql(c, "SELECT rolsuper FROM pg_roles WHERE rolname = '" APP "'", "f");
    itest_expect_sql(c, "SELECT v FROM t_shadow WHERE id = 3", "z");
    assert_int_equal(differing(c, "t"), 0);
    free(dbci);
    free(ci);
    unlink(cfg);
    char path[300];
    snprintf(path, sizeof path, "%s/d.log", dir);
    unlink(path);
    rmdir(dir);
    PQfinish(app);
}

/* ---- 2, 9: the key's own equality; key spelling changes are carried ----- */

static void test_citext_key(void **state)
{
    hctx *h = *state;
    PGconn *c = h->db->c;
    itest_exec_ok(c, "CREATE TABLE u (name citext PRIMARY KEY, v int);"
                     "INSERT INTO u VALUES ('Alice', 1), ('Bob', 2);");
    install(c, "SELECT pgshadow.register_table('public', 'u', NULL, '_shadow', 'm1', '{}');");
    backfill_all(h, "m1", 100);
    /* the review's case: one apply after a case-only key change */
    itest_exec_ok(c, "UPDATE u SET name = 'alice' WHERE name = 'Alice'");
    apply_all(h, "m1");
    itest_expect_sql(c, "SELECT string_agg(name::text, ',' ORDER BY name) FROM u_shadow", "alice,Bob");
    assert_int_equal(differing(c, "u"), 0);
    /* keys of one batch that are equal as citext: one row */
    itest_exec_ok(c, "UPDATE u SET v = 5 WHERE name = 'BOB'; UPDATE u SET name = 'BOB' WHERE name = 'bob';"
                     "DELETE FROM u WHERE name = 'ALICE'; INSERT INTO u VALUES ('aLiCe', 9);");
    apply_all(h, "m1");
    itest_expect_sql(c, "SELECT string_agg(name || ':' || v, ',' ORDER BY name) FROM u_shadow", "aLiCe:9,BOB:5");
    assert_int_equal(differing(c, "u"), 0);
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
}

/* Sibling: a nondeterministic (case-insensitive) ICU collation on a text key. */
static void test_nondeterministic_collation_key(void **state)
{
    hctx *h = *state;
    PGconn *c = h->db->c;
    itest_exec_ok(c, "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);"
                     "CREATE TABLE n (k text COLLATE ci PRIMARY KEY, v int);"
                     "INSERT INTO n VALUES ('Straße', 1), ('Bob', 2);");
    install(c, "SELECT pgshadow.register_table('public', 'n', NULL, '_shadow', 'm1', '{}');");
    backfill_all(h, "m1", 1);
    itest_exec_ok(c, "UPDATE n SET k = 'bob', v = 3 WHERE k = 'Bob'");
    apply_all(h, "m1");
    itest_expect_sql(c, "SELECT string_agg(k || ':' || v, ',' ORDER BY k COLLATE \"C\") FROM n_shadow",
                     "Straße:1,bob:3");
    assert_int_equal(differing(c, "n"), 0);
}

/* 9: numeric 1.0 -> 1.00 is the same key with a new spelling. */
static void test_key_spelling(void **state)
{
    hctx *h = *state;
    PGconn *c = h->db->c;
    itest_exec_ok(c, "CREATE TABLE m (k numeric PRIMARY KEY, v int); INSERT INTO m VALUES (1.0, 1), (2, 2);");
    install(c, "SELECT pgshadow.register_table('public', 'm', NULL, '_shadow', 'm1', '{}');");
    backfill_all(h, "m1", 1);
    itest_exec_ok(c, "UPDATE m SET k = 1.00 WHERE k = 1");
    apply_all(h, "m1");
    itest_expect_sql(c, "SELECT string_agg(k::text, ',' ORDER BY k) FROM m_shadow", "1.00,2");
    assert_int_equal(differing(c, "m"), 0);
}

/* ---- 3: capture on/off is never decided from a stale snapshot ---------- */

static void test_capture_snapshot(void **state)
{
    hctx *h = *state;
    PGconn *c = h->db->c;
    itest_exec_ok(c, "CREATE TABLE w (id int PRIMARY KEY, v text); INSERT INTO w VALUES (1, 'a');");
    install(c, "SELECT pgshadow.register_table('public', 'w', NULL, '_shadow', 'm1', '{}');");
    backfill_all(h, "m1", 100);

    /* (a) disable-writes; a writer writes in an open transaction (not
     * logged: capture is off); enable-writes, apply; the writer commits
     * only after the resync would have been done */
    PGconn *wr = itest_connect_db(h->db->name);
    itest_exec_ok(c, "SELECT pgshadow.disable_writes()");
    itest_exec_ok(wr, "BEGIN; INSERT INTO w VALUES (2, 'while off'); UPDATE w SET v = 'b' WHERE id = 1;");
    itest_exec_ok(c, "SELECT pgshadow.enable_writes()");
    apply_all(h, "m1");
    /* the resync waits for the writer: nothing copied, the table not done */
    PGconn *d = daemon_conn(h);
    for (int i = 0; i < 3; i++)
        itest_expect_sql(d, "SELECT copied::text || done::text FROM pgshadow.backfill_step('m1', 100)", "0false");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.events WHERE what = 'resync_waiting'", "1");
    itest_exec_ok(wr, "COMMIT");
    sync_all(h, "m1");
    itest_expect_sql(c, "SELECT string_agg(id || v, ',' ORDER BY id) FROM w_shadow", "1b,2while off");
    assert_int_equal(differing(c, "w"), 0);

    /* (b) a REPEATABLE READ snapshot older than the install writes after it */
    itest_exec_ok(c, "CREATE TABLE rr (id int PRIMARY KEY, v text); INSERT INTO rr VALUES (1, 'a');");
    itest_exec_ok(wr, "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1 FROM pg_class LIMIT 1;");
    install(c, "SELECT pgshadow.register_table('public', 'w', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'rr', NULL, '_shadow', 'm1', '{}');");
    backfill_all(h, "m1", 100);
    itest_exec_ok(wr, "INSERT INTO rr VALUES (2, 'old snapshot'); COMMIT;");
    apply_all(h, "m1");
    itest_expect_sql(c, "SELECT string_agg(id || v, ',' ORDER BY id) FROM rr_shadow", "1a,2old snapshot");
    assert_int_equal(differing(c, "rr"), 0);
    PQfinish(wr);
}

/* ---- 4: a shadow that already holds rows is reconciled ----------------- */

static void test_reconcile_existing_shadow(void **state)
{
    hctx *h = *state;
    PGconn *c = h->db->c;
    itest_exec_ok(c, "CREATE TABLE r (id int PRIMARY KEY, v text); "
                     "INSERT INTO r SELECT g, 'v' FROM generate_series(1, 5) g;"
                     "CREATE TABLE keep (id int PRIMARY KEY); INSERT INTO keep VALUES (1);");
    const char *reg = "SELECT pgshadow.register_table('public', 'r', NULL, '_shadow', 'm1', '{}');"
                      "SELECT pgshadow.register_table('public', 'keep', NULL, '_shadow', 'm1', '{}');";
    install(c, reg);
    sync_all(h, "m1");
    /* uninstall without --drop-shadow, changes while nothing captures,
     * install again: the old shadow is stale (a deleted row, a changed row) */
    itest_exec_ok(c, "SELECT pgshadow.uninstall(false)");
    char *un = itest_read_sql("uninstall.sql");
    itest_exec_ok(c, un);
    free(un);
    itest_exec_ok(c, "DELETE FROM r WHERE id = 2; UPDATE r SET v = 'new' WHERE id = 3");
    install(c, reg);
    sync_all(h, "m1");
    itest_expect_sql(c, "SELECT string_agg(id || v, ',' ORDER BY id) FROM r_shadow", "1v,3new,4v,5v");
    assert_int_equal(differing(c, "r"), 0);
    itest_expect_sql(c, "SELECT primary_count || '/' || shadow_count || '/' || count_source || '/' || sync_percentage "
                        "FROM public.shadow_migration_dashboard WHERE table_name = 'r'", "4/4/exact/100.00");

    /* a table removed from the configuration and added back, with reads
     * routed to it (no emptying then: reconciled row by row) */
    install(c, "SELECT pgshadow.register_table('public', 'keep', NULL, '_shadow', 'm1', '{}');");
    itest_exec_ok(c, "DELETE FROM r WHERE id = 4; INSERT INTO r VALUES (9, 'nine')");
    install(c, reg);
    itest_exec_ok(c, "SELECT pgshadow.set_read_percent('r', 100)");
    sync_all(h, "m1");
    itest_expect_sql(c, "SELECT string_agg(id || v, ',' ORDER BY id) FROM r_shadow", "1v,3new,5v,9nine");
    assert_int_equal(differing(c, "r"), 0);
    itest_expect_sql(c, "SELECT primary_count || '/' || shadow_count || '/' || count_source "
                        "FROM public.shadow_migration_dashboard WHERE table_name = 'r'", "4/4/exact");
}

/* ---- 5: two migrations in one database --------------------------------- */

static void test_two_migrations(void **state)
{
    hctx *h = *state;
    PGconn *c = h->db->c;
    itest_exec_ok(c, "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);"
                     "INSERT INTO a VALUES (1); INSERT INTO b VALUES (1);");
    install_mig(c, "m1", "SELECT pgshadow.register_table('public', 'a', NULL, '_shadow', 'm1', '{}');");
    itest_exec_ok(c, "INSERT INTO a VALUES (2)"); /* pending in m1's log */
    install_mig(c, "m2", "SELECT pgshadow.register_table('public', 'b', NULL, '_shadow', 'm2', '{}');");
    /* m1's capture and pending changes survive m2's install */
    itest_expect_sql(c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'a'::regclass AND tgname LIKE 'pgshadow%'",
                     "2");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log c JOIN pgshadow.tables t USING (table_id) "
                        "WHERE t.table_name = 'a'", "1");
    itest_expect_sql(c, "SELECT string_agg(table_name || ':' || migration_id, ',' ORDER BY table_name) "
                        "FROM pgshadow.tables", "a:m1,b:m2");
    /* a table of m1 is not taken over by m2 */
    char *err = install_fails(c, "SELECT pgshadow.register_table('public', 'a', NULL, '_shadow', 'm2', '{}');");
    assert_non_null(strstr(err, "table public.a is registered by migration 'm1'"));
    free(err);
    sync_all(h, "m1");
    sync_all(h, "m2");
    itest_exec_ok(c, "INSERT INTO a VALUES (3); INSERT INTO b VALUES (3);");
    sync_all(h, "m1");
    sync_all(h, "m2");
    assert_int_equal(differing(c, "a"), 0);
    assert_int_equal(differing(c, "b"), 0);
    itest_expect_sql(c, "SELECT count(*) FROM a_shadow", "3");

    /* uninstalling m2 (as pgshadowctl does) lets only m2 go */
    char *un = itest_read_sql("uninstall.sql");
    char *script = NULL;
    assert_true(asprintf(&script, "BEGIN; SELECT pgshadow.uninstall_migration(true, 'm2');\n%s\nCOMMIT;", un) > 0);
    itest_exec_ok(c, script);
    free(script);
    itest_expect_sql(c, "SELECT to_regclass('b_shadow') IS NULL AND to_regclass('a_shadow') IS NOT NULL "
                        "AND to_regnamespace('pgshadow') IS NOT NULL", "t");
    itest_expect_sql(c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'b'::regclass AND tgname LIKE 'pgshadow%'", "0");
    itest_expect_sql(c, "SELECT string_agg(table_name, ',') FROM pgshadow.tables", "a");
    itest_exec_ok(c, "INSERT INTO a VALUES (4); INSERT INTO b VALUES (4);");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "1");
    sync_all(h, "m1");
    assert_int_equal(differing(c, "a"), 0);
    /* and the last one takes pgshadow with it */
    assert_true(asprintf(&script, "BEGIN; SELECT pgshadow.uninstall_migration(false, 'm1');\n%s\nCOMMIT;", un) > 0);
    itest_exec_ok(c, script);
    free(script);
    free(un);
    itest_expect_sql(c, "SELECT to_regnamespace('pgshadow') IS NULL AND to_regnamespace('pgshadow_apply') IS NULL "
                        "AND to_regclass('a_shadow') IS NOT NULL", "t");
    itest_expect_sql(c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'a'::regclass AND tgname LIKE 'pgshadow%'", "0");
}

/* ---- 6: key types widened after install -------------------------------- */

static void test_key_type_widened(void **state)
{
    hctx *h = *state;
    PGconn *c = h->db->c;
    itest_exec_ok(c, "CREATE TABLE vk (k varchar(5) PRIMARY KEY, v int); INSERT INTO vk VALUES ('abc', 1);"
                     "CREATE TABLE ik (k int PRIMARY KEY, v int); INSERT INTO ik VALUES (1, 1);");
    install(c, "SELECT pgshadow.register_table('public', 'vk', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'ik', NULL, '_shadow', 'm1', '{}');");
    backfill_all(h, "m1", 100);
    itest_exec_ok(c, "ALTER TABLE vk ALTER COLUMN k TYPE varchar(20); ALTER TABLE vk_shadow ALTER COLUMN k TYPE varchar(20);"
                     "ALTER TABLE ik ALTER COLUMN k TYPE bigint; ALTER TABLE ik_shadow ALTER COLUMN k TYPE bigint;"
                     "INSERT INTO vk VALUES ('abcdefgh', 2); INSERT INTO ik VALUES (3000000000, 2);");
    apply_all(h, "m1");
    itest_expect_sql(c, "SELECT string_agg(k, ',' ORDER BY k) FROM vk_shadow", "abc,abcdefgh");
    itest_expect_sql(c, "SELECT string_agg(k::text, ',' ORDER BY k) FROM ik_shadow", "1,3000000000");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "0");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    assert_int_equal(differing(c, "vk"), 0);
    assert_int_equal(differing(c, "ik"), 0);
}

/* ---- 7: one bad change log entry stops nothing else -------------------- */

static void test_bad_entry(void **state)
{
    hctx *h = *state;
    PGconn *c = h->db->c;
    itest_exec_ok(c, "CREATE DOMAIN public.day AS date;"
                     "CREATE TABLE dd (d public.day PRIMARY KEY, v int);"
                     "CREATE TABLE other (id int PRIMARY KEY, v int);");
    install(c, "SELECT pgshadow.register_table('public', 'dd', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'other', NULL, '_shadow', 'm1', '{}');");
    backfill_all(h, "m1", 100);
    /* the review's case: a writer with DateStyle = German on a domain over date */
    PGconn *wr = itest_connect_db(h->db->name);
    itest_exec_ok(wr, "SET DateStyle = 'German'; INSERT INTO dd VALUES ('2024-02-01', 1)");
    itest_expect_sql(c, "SELECT key::text FROM pgshadow.change_log", "{2024-02-01}");
    /* sibling: garbage and a malformed entry logged by hand, between good ones */
    itest_exec_ok(c, "INSERT INTO other VALUES (1, 1);"
                     "INSERT INTO pgshadow.change_log (table_id, op, key) "
                     "SELECT table_id, 'U', '{01.02.2024x}' FROM pgshadow.tables WHERE table_name = 'dd';"
                     "INSERT INTO pgshadow.change_log (table_id, op, key) "
                     "SELECT table_id, 'U', '{1,2}' FROM pgshadow.tables WHERE table_name = 'other';"
                     "INSERT INTO other VALUES (2, 2); INSERT INTO dd VALUES ('2024-03-01', 2);");
    apply_all(h, "m1");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "0");
    itest_expect_sql(c, "SELECT string_agg(d::text, ',' ORDER BY d) FROM dd_shadow", "2024-02-01,2024-03-01");
    itest_expect_sql(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM other_shadow", "1,2");
    itest_expect_sql(c, "SELECT string_agg(t.table_name || ' ' || q.key::text || ' ' || q.phase || ' ' || q.sqlstate, ','"
                        " ORDER BY t.table_name) FROM pgshadow.quarantine q JOIN pgshadow.tables t USING (table_id)",
                     "dd {01.02.2024x} parse 22007,other {1,2} parse 22P02");
    /* retried, they fail again, and stay quarantined: nothing loops */
    itest_exec_ok(c, "SELECT pgshadow.quarantine_retry()");
    apply_all(h, "m1");
    itest_expect_sql(c, "SELECT sum(attempts) FROM pgshadow.quarantine", "4");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "0");
    PQfinish(wr);
}

/* ---- 10: counts -------------------------------------------------------- */

static void test_counts_with_quarantine(void **state)
{
    hctx *h = *state;
    PGconn *c = h->db->c;
    itest_exec_ok(c, "CREATE TABLE q (id int PRIMARY KEY, v int);"
                     "INSERT INTO q SELECT g, g FROM generate_series(1, 5) g;"
                     "CREATE TABLE q_shadow (id int PRIMARY KEY, v int CHECK (v < 100),"
                     "  _shadow_version int, _shadow_created_at timestamptz, _shadow_source_table text,"
                     "  _shadow_migration_id text, _shadow_sync_status varchar(20), _shadow_last_sync timestamptz,"
                     "  _shadow_validation_hash varchar(64));");
    install(c, "SELECT pgshadow.register_table('public', 'q', NULL, '_shadow', 'm1', '{}');");
    sync_all(h, "m1");
    /* an update of a row the shadow holds, rejected: 5 rows, not 6 */
    itest_exec_ok(c, "UPDATE q SET v = 500 WHERE id = 1");
    apply_all(h, "m1");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "1");
    itest_expect_sql(c, "SELECT primary_count || '/' || shadow_count || '/' || count_source "
                        "FROM public.shadow_migration_dashboard", "5/5/exact");
    /* an insert rejected: the primary has a row the shadow lacks */
    itest_exec_ok(c, "INSERT INTO q VALUES (6, 600)");
    apply_all(h, "m1");
    itest_expect_sql(c, "SELECT primary_count || '/' || shadow_count FROM public.shadow_migration_dashboard", "6/5");
    /* fixed: both apply, the counts agree with the tables */
    itest_exec_ok(c, "UPDATE q SET v = 1 WHERE id IN (1, 6)");
    apply_all(h, "m1");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    itest_expect_sql(c, "SELECT primary_count || '/' || shadow_count FROM public.shadow_migration_dashboard", "6/6");
    assert_int_equal(differing(c, "q"), 0);
}

/* ---- 11: a resync never empties the shadow ----------------------------- */

static void test_resync_keeps_rows(void **state)
{
    hctx *h = *state;
    PGconn *c = h->db->c;
    itest_exec_ok(c, "CREATE TABLE s (id int PRIMARY KEY, v text);"
                     "INSERT INTO s SELECT g, 'v' FROM generate_series(1, 10) g;");
    install(c, "SELECT pgshadow.register_table('public', 's', NULL, '_shadow', 'm1', '{}');");
    sync_all(h, "m1");
    /* a table outside pgshadow references the shadow (TRUNCATE ... CASCADE
     * would empty it), and reads are routed to the shadow */
    itest_exec_ok(c, "CREATE TABLE outside (id int PRIMARY KEY, s_id int REFERENCES s_shadow (id));"
                     "INSERT INTO outside VALUES (1, 1), (2, 2);"
                     "SELECT pgshadow.set_read_percent('s', 50);");
    itest_exec_ok(c, "SELECT pgshadow.disable_writes('s')");
    itest_exec_ok(c, "UPDATE s SET v = 'off' WHERE id IN (2, 3); DELETE FROM s WHERE id = 10;");
    itest_exec_ok(c, "SELECT pgshadow.enable_writes('s')");
    apply_all(h, "m1");
    /* resync pending: the shadow still holds every row reads may go to */
    itest_expect_sql(c, "SELECT count(*) FROM s_shadow", "10");
    itest_expect_sql(c, "SELECT status FROM public.shadow_migration_dashboard", "backfill_pending");
    sync_all(h, "m1");
    itest_expect_sql(c, "SELECT count(*) FROM s_shadow", "9");
    itest_expect_sql(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM s_shadow WHERE v = 'off'", "2,3");
    itest_expect_sql(c, "SELECT count(*) FROM outside", "2");
    assert_int_equal(differing(c, "s"), 0);
    itest_expect_sql(c, "SELECT status FROM public.shadow_migration_dashboard", "in_sync");
}

#define T(f) cmocka_unit_test_setup_teardown(f, db_setup, db_teardown)

int main(void)
{
    const char *const need[] = {"PGSHADOW_TEST_CONNINFO", "PGSHADOW_SRCDIR", "PGSHADOWD", NULL};
    if (!itest_require_env("itest-hostile", need))
        return 1;
    const struct CMUnitTest tests[] = {
        T(test_owner_code_runs_as_owner),
        T(test_owner_key_type),
        T(test_daemon_as_daemon_role),
        T(test_citext_key),
        T(test_nondeterministic_collation_key),
        T(test_key_spelling),
        T(test_capture_snapshot),
        T(test_reconcile_existing_shadow),
        T(test_two_migrations),
        T(test_key_type_widened),
        T(test_bad_entry),
        T(test_counts_with_quarantine),
        T(test_resync_keeps_rows),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
