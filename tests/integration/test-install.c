/*
 * test-install.c - drives the real pgshadowctl binary against the throwaway
 * cluster: install on the AIDIS example and on awkward identifiers, capture
 * into pgshadow.change_log, --dry-run, uninstall restoring the catalog
 * exactly (pg_dump --schema-only before/after), bad input leaving nothing
 * half-installed, route offline and online, idempotent re-install, and the
 * lock_timeout retry. Each scenario gets a fresh database.
 *
 * Env: PGSHADOW_TEST_CONNINFO, PGSHADOWCTL, PGSHADOW_SRCDIR, PGSHADOW_TEST_PGBIN.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "itest.h"

/* A temp config for db; tables_yaml is the text under "tables:". */
static char *write_config(const char *db, const char *tables_yaml)
{
    char *path = strdup("/tmp/itest-install-cfg-XXXXXX.yaml");
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    char *ci = itest_conninfo_db(db);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "database:\n  conninfo: \"%s\"\nmigration:\n  id: itest_migration\n  tables:\n%s",
            ci, tables_yaml);
    fclose(f);
    free(ci);
    return path;
}

static bool pgshadow_schema_exists(PGconn *c)
{
    char *v = itest_query(c, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshadow'");
    bool yes = strcmp(v, "1") == 0;
    free(v);
    return yes;
}

static char *change_log_text(PGconn *c)
{
    return itest_query(c, "SELECT coalesce(string_agg(op::text || ' ' || key::text, E'\\n' ORDER BY seq), '')"
                     " FROM pgshadow.change_log");
}

static void load_sql_file(PGconn *c, const char *name)
{
    char *sql = itest_read_sql(name);
    itest_exec_ok(c, sql);
    free(sql);
}

/* Rows that differ between a registered table and its shadow: on one side
 * only, or the shadow's stored hash is not the registry's hash over the
 * primary row (run under TimeZone UTC, as apply and backfill do). */
static const char DIFF_FN[] =
    "CREATE OR REPLACE FUNCTION public.itest_diff(p_table text) RETURNS bigint LANGUAGE plpgsql AS $$ "
    "DECLARE t pgshadow.tables; j text; n bigint; "
    "BEGIN "
    "  SELECT * INTO STRICT t FROM pgshadow.tables WHERE table_name = p_table; "
    "  SELECT string_agg(format('s.%I = p.%I', k, k), ' AND ') INTO j FROM unnest(t.key_columns) k; "
    "  EXECUTE format('SELECT count(*) FROM %I.%I p FULL JOIN %I.%I s ON %s WHERE p.%I IS NULL OR "
    "    s.%I IS NULL OR s._shadow_validation_hash IS DISTINCT FROM %s', t.schema_name, t.table_name, "
    "    t.schema_name, t.shadow_name, j, t.key_columns[1], t.key_columns[1], t.hash_expr) INTO n; "
    "  RETURN n; "
    "END $$";

/* ---- scenarios ---- */

static void test_aidis(void **state)
{
    (void)state;
    itest_db_create("itest_aidis");
    PGconn *c = itest_connect_db("itest_aidis");
    load_sql_file(c, "example-aidis.sql");
    char *cfg = write_config("itest_aidis", "    - name: projects\n    - name: sessions\n"
                                            "    - name: contexts\n    - name: analytics_events\n"
                                            "    - name: tasks\n");
    itest_run r;
    itest_run_ctl(&r, cfg, "check", NULL);
    if (r.rc != 0)
        fail_msg("check before install: rc %d\n%s%s", r.rc, r.out, r.err);
    assert_non_null(strstr(r.out, "PASS  server version"));
    itest_run_free(&r);

    itest_run_ctl(&r, cfg, "install", NULL);
    if (r.rc != 0)
        fail_msg("install: rc %d\nstdout:\n%s\nstderr:\n%s", r.rc, r.out, r.err);
    assert_non_null(strstr(r.out, "installed"));
    itest_run_free(&r);

    char *before = change_log_text(c);
    assert_string_equal(before, "");
    free(before);
    itest_exec_ok(c, "INSERT INTO projects (name) VALUES ('itest-project')");
    char *n = itest_query(c, "SELECT count(*) FROM pgshadow.change_log");
    assert_string_equal(n, "1");
    free(n);

    itest_run_ctl(&r, cfg, "check", NULL);
    if (r.rc != 0)
        fail_msg("check after install: rc %d\n%s%s", r.rc, r.out, r.err);
    assert_null(strstr(r.out, "FAIL"));
    /* the harness role is a superuser: said as such, not as a member */
    assert_non_null(strstr(r.out, "PASS  daemon role: role postgres is a superuser"));
    assert_null(strstr(r.out, "is a member of pgshadow_daemon"));
    /* pgshadow's own dashboard views are fine */
    assert_non_null(strstr(r.out, "PASS  dashboard views"));
    itest_run_free(&r);

    /* idempotent */
    itest_run_ctl(&r, cfg, "install", NULL);
    if (r.rc != 0)
        fail_msg("second install: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);

    /* disable-writes stops capture for the next statement, of every table */
    itest_run_ctl(&r, cfg, "disable-writes", NULL);
    if (r.rc != 0)
        fail_msg("disable-writes: rc %d\n%s%s", r.rc, r.out, r.err);
    assert_non_null(strstr(r.out, "disabled"));
    itest_run_free(&r);
    itest_exec_ok(c, "INSERT INTO projects (name) VALUES ('not-captured')");
    itest_exec_ok(c, "INSERT INTO tasks (project_id, title, type) "
                     "SELECT id, 'written while capture was off', 'feature' FROM projects "
                     "WHERE name = 'itest-project'");
    itest_expect_sql(c, "SELECT string_agg(op::text, ',') FROM pgshadow.change_log", "I");
    /* enable-writes resumes it and queues a full resync ('T') of every
     * table it turned on: what was written meanwhile must not stay missing */
    itest_run_ctl(&r, cfg, "enable-writes", NULL);
    if (r.rc != 0)
        fail_msg("enable-writes: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log WHERE op = 'T'", "5");
    /* one table: only its capture stops */
    itest_run_ctl(&r, cfg, "disable-writes", "tasks", NULL);
    if (r.rc != 0)
        fail_msg("disable-writes tasks: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);
    itest_exec_ok(c, "INSERT INTO projects (name) VALUES ('captured-again')");
    itest_exec_ok(c, "UPDATE tasks SET title = 'changed while tasks capture was off'");
    itest_expect_sql(c, "SELECT string_agg(l.op || ' ' || t.table_name, ',' ORDER BY l.seq) "
                        "FROM pgshadow.change_log l JOIN pgshadow.tables t USING (table_id) "
                        "WHERE l.op <> 'T'", "I projects,I projects");
    itest_run_ctl(&r, cfg, "enable-writes", "tasks", NULL);
    if (r.rc != 0)
        fail_msg("enable-writes tasks: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log l JOIN pgshadow.tables t "
                        "USING (table_id) WHERE l.op = 'T' AND t.table_name = 'tasks'", "2");
    itest_exec_ok(c, "UPDATE tasks SET progress = 7");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log l JOIN pgshadow.tables t "
                        "USING (table_id) WHERE l.op = 'U' AND t.table_name = 'tasks'", "1");
    /* the resync, as pgshadowd runs it: apply, copy, apply */
    itest_exec_ok(c, "SELECT * FROM pgshadow.apply_batch('itest_migration', 1000, 'quarantine')");
    for (int i = 0;; i++) {
        char *rows = itest_query(c, "SELECT count(*) FROM pgshadow.backfill_step('itest_migration', 1000)");
        bool more = strcmp(rows, "0") != 0;
        free(rows);
        if (!more)
            break;
        assert_true(i < 100);
    }
    itest_exec_ok(c, "SELECT * FROM pgshadow.apply_batch('itest_migration', 1000, 'quarantine')");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "0");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    itest_expect_sql(c, "SELECT string_agg(name, ',' ORDER BY name) FROM projects_shadow",
                     "captured-again,itest-project,not-captured");
    itest_expect_sql(c, "SELECT title || ' ' || progress FROM tasks_shadow",
                     "changed while tasks capture was off 7");
    itest_exec_ok(c, "SET TimeZone = 'UTC'");
    itest_exec_ok(c, DIFF_FN);
    itest_expect_sql(c, "SELECT string_agg(table_name || ' ' || public.itest_diff(table_name), ',' "
                        "ORDER BY table_id) FROM pgshadow.tables",
                     "projects 0,sessions 0,contexts 0,analytics_events 0,tasks 0");

    PQfinish(c);
    unlink(cfg);
    free(cfg);
}

static const char awkward_schema[] =
    "CREATE TABLE \"Mixed Case \"\"Tbl\"\"\" (\"Tenant ID\" int NOT NULL, \"ключ\" text NOT NULL,"
    "  \"Value Col\" text, PRIMARY KEY (\"Tenant ID\", \"ключ\"));"
    "CREATE TABLE \"ünïcødé\" (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  \"Naïve Col\" text DEFAULT 'x' CHECK (\"Naïve Col\" <> ''));"
    "CREATE TABLE \"keyed by config\" (a int NOT NULL, b text NOT NULL, c numeric);"
    "CREATE UNIQUE INDEX keyed_ab ON \"keyed by config\" (a, b);";

static const char awkward_tables[] =
    "    - name: 'Mixed Case \"Tbl\"'\n"
    "    - name: \"ünïcødé\"\n"
    "    - name: keyed by config\n"
    "      key: [a, b]\n";

static void test_awkward(void **state)
{
    (void)state;
    itest_db_create("itest_awkward");
    PGconn *c = itest_connect_db("itest_awkward");
    itest_exec_ok(c, awkward_schema);
    char *cfg = write_config("itest_awkward", awkward_tables);
    char *dump_before = itest_schema_dump("itest_awkward", true);

    itest_run r;
    itest_run_ctl(&r, cfg, "install", NULL);
    if (r.rc != 0)
        fail_msg("install: rc %d\nstdout:\n%s\nstderr:\n%s", r.rc, r.out, r.err);
    itest_run_free(&r);
    char *v = itest_query(c, "SELECT count(*) FROM pg_class WHERE relname IN"
                        " ('Mixed Case \"Tbl\"_shadow', 'ünïcødé_shadow', 'keyed by config_shadow')");
    assert_string_equal(v, "3");
    free(v);

    itest_run_ctl(&r, cfg, "check", NULL);
    if (r.rc != 0)
        fail_msg("check: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);

    itest_exec_ok(c, "INSERT INTO \"Mixed Case \"\"Tbl\"\"\" VALUES (1, 'κλειδί \"q\"', 'v'), (2, 'b', 'w');"
               "UPDATE \"Mixed Case \"\"Tbl\"\"\" SET \"Value Col\" = 'v2' WHERE \"Tenant ID\" = 1;"
               "UPDATE \"Mixed Case \"\"Tbl\"\"\" SET \"Tenant ID\" = 3 WHERE \"Tenant ID\" = 2;"
               "DELETE FROM \"Mixed Case \"\"Tbl\"\"\" WHERE \"Tenant ID\" = 1;"
               "INSERT INTO \"ünïcødé\" (\"Naïve Col\") VALUES ('n');"
               "INSERT INTO \"keyed by config\" VALUES (7, 'seven', 1.5);"
               "UPDATE \"keyed by config\" SET b = 'SEVEN' WHERE a = 7;");
    char *log = change_log_text(c);
    /* every key, including both sides of the key changes */
    const char *want[] = {"{1,\"κλειδί \\\"q\\\"\"}", "{2,b}", "{3,b}", "{1}", "{7,seven}",
                          "{7,SEVEN}"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(log, want[i]))
            fail_msg("change_log lacks key %s:\n%s", want[i], log);
    /* the delete of tenant 1 is there as a delete */
    assert_non_null(strstr(log, "D {1,\"κλειδί \\\"q\\\"\"}"));
    free(log);

    /* route online: 0% until the flag moves, then the contract's answer */
    itest_run_ctl(&r, cfg, "route", "Mixed Case \"Tbl\"", "x", NULL);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "primary\n");
    itest_run_free(&r);

    itest_run_ctl(&r, cfg, "uninstall", "--drop-shadow", NULL);
    if (r.rc != 0)
        fail_msg("uninstall: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);
    assert_false(pgshadow_schema_exists(c));
    char *dump_after = itest_schema_dump("itest_awkward", true);
    assert_string_equal(dump_before, dump_after);
    free(dump_before);
    free(dump_after);
    PQfinish(c);
    unlink(cfg);
    free(cfg);
}

static void test_dry_run(void **state)
{
    (void)state;
    itest_db_create("itest_dry");
    PGconn *c = itest_connect_db("itest_dry");
    itest_exec_ok(c, awkward_schema);
    char *cfg = write_config("itest_dry", awkward_tables);
    char *before = itest_schema_dump("itest_dry", true);
    itest_run r;
    itest_run_ctl(&r, cfg, "install", "--dry-run", NULL);
    assert_int_equal(r.rc, 0);
    assert_true(strncmp(r.out, "BEGIN;\nSET LOCAL lock_timeout = '200ms';\n", 41) == 0);
    assert_non_null(strstr(r.out, "SELECT pgshadow.register_table('public', 'Mixed Case \"Tbl\"', NULL, "
                                  "'_shadow', 'itest_migration', '{}'::jsonb);\n"));
    assert_non_null(strstr(r.out, "ARRAY['a', 'b']::text[]"));
    assert_non_null(strstr(r.out, "SELECT pgshadow.finish_install('itest_migration');\nCOMMIT;\n"));
    itest_run_free(&r);
    itest_run_ctl(&r, cfg, "uninstall", "--drop-shadow", "--dry-run", NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "SELECT pgshadow.uninstall_migration(true, 'itest_migration');\n"));
    itest_run_free(&r);
    char *after = itest_schema_dump("itest_dry", true);
    assert_string_equal(before, after);
    assert_false(pgshadow_schema_exists(c));
    free(before);
    free(after);
    PQfinish(c);
    unlink(cfg);
    free(cfg);
}

static void expect_install_fails(const char *db, const char *tables, const char *const *names)
{
    PGconn *c = itest_connect_db(db);
    char *cfg = write_config(db, tables);
    itest_run r;
    itest_run_ctl(&r, cfg, "install", NULL);
    if (r.rc != 1)
        fail_msg("install should fail with 1, got %d\n%s%s", r.rc, r.out, r.err);
    for (const char *const *n = names; *n; n++)
        if (!strstr(r.err, *n))
            fail_msg("error output does not name %s:\n%s", *n, r.err);
    itest_run_free(&r);
    assert_false(pgshadow_schema_exists(c));
    PQfinish(c);
    unlink(cfg);
    free(cfg);
}

static void test_bad_input(void **state)
{
    (void)state;
    itest_db_create("itest_bad");
    PGconn *c = itest_connect_db("itest_bad");
    itest_exec_ok(c, "CREATE TABLE nokey (a int, b text);"
               "CREATE TABLE good (id int PRIMARY KEY, a text, b int, c int);"
               "CREATE TABLE good_shadow (id int PRIMARY KEY, a int, b uuid, c int,"
               " _shadow_version int, _shadow_created_at timestamptz, _shadow_source_table text,"
               " _shadow_migration_id text, _shadow_sync_status text, _shadow_last_sync timestamptz,"
               " _shadow_validation_hash text);");
    PQfinish(c);
    expect_install_fails("itest_bad", "    - name: nokey\n",
                         (const char *const[]){"nokey", "no primary key", NULL});
    expect_install_fails("itest_bad", "    - name: no_such_table\n",
                         (const char *const[]){"no_such_table", "does not exist", NULL});
    /* every mismatch, each naming its column */
    expect_install_fails("itest_bad", "    - name: good\n",
                         (const char *const[]){"good_shadow", "column a", "column b", NULL});
    /* a config key that is not unique */
    expect_install_fails("itest_bad", "    - name: nokey\n      key: [a]\n",
                         (const char *const[]){"nokey", "is not backed by a unique index", NULL});
}

/* check and install agree on the key rule: a unique index on part of the
 * configured key is not enough for either; a nullable key column neither. */
static void test_key_rule_agreement(void **state)
{
    (void)state;
    itest_db_create("itest_keyrule");
    PGconn *c = itest_connect_db("itest_keyrule");
    itest_exec_ok(c, "CREATE TABLE sub (a int NOT NULL, b int NOT NULL, v text); CREATE UNIQUE INDEX ON sub (a);"
               "CREATE TABLE nul (a int, b int NOT NULL); CREATE UNIQUE INDEX ON nul (a, b);"
               "CREATE TABLE okk (a int NOT NULL, b int NOT NULL); CREATE UNIQUE INDEX ON okk (b, a);");
    char *cfg = write_config("itest_keyrule", "    - name: sub\n      key: [a, b]\n");
    itest_run r;
    itest_run_ctl(&r, cfg, "check", NULL);
    assert_int_equal(r.rc, 1);
    if (!strstr(r.out, "FAIL  table public.sub: key (a, b) of table public.sub is not backed by a unique index"))
        fail_msg("check output:\n%s", r.out);
    itest_run_free(&r);
    unlink(cfg);
    free(cfg);
    expect_install_fails("itest_keyrule", "    - name: sub\n      key: [a, b]\n",
                         (const char *const[]){"sub", "key (a, b) of table public.sub is not backed by a unique index", NULL});
    expect_install_fails("itest_keyrule", "    - name: nul\n      key: [a, b]\n",
                         (const char *const[]){"nul", "key column a of table public.nul is nullable", NULL});
    /* the same rule accepts the exact set in any order, in both */
    cfg = write_config("itest_keyrule", "    - name: okk\n      key: [a, b]\n");
    itest_run_ctl(&r, cfg, "check", NULL);
    if (r.rc != 0)
        fail_msg("check: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);
    itest_run_ctl(&r, cfg, "install", NULL);
    if (r.rc != 0)
        fail_msg("install: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);
    unlink(cfg);
    free(cfg);
    PQfinish(c);
}

/* check applies install's own rules (sql/05-rules.sql), so it fails every
 * table install would refuse, with install's message, also the rules
 * check.c never knew (key types, a mapped key, forced row security, a
 * shadow owned by another role, a mapping expression that does not plan);
 * and it leaves nothing behind in a database pgshadow is not installed in. */
static void test_check_applies_install_rules(void **state)
{
    (void)state;
    itest_db_create("itest_rules");
    PGconn *c = itest_connect_db("itest_rules");
    itest_exec_ok(c, "DROP ROLE IF EXISTS itest_rules_other; CREATE ROLE itest_rules_other;"
               "CREATE TABLE fk (a int NOT NULL, f double precision NOT NULL, v text, PRIMARY KEY (a, f));"
               "CREATE TABLE rls (id int PRIMARY KEY); ALTER TABLE rls FORCE ROW LEVEL SECURITY;"
               "CREATE TABLE mk (id int PRIMARY KEY, v int);"
               "CREATE TABLE oo (id int PRIMARY KEY);"
               "CREATE TABLE oo_shadow (id int PRIMARY KEY, _shadow_version int, _shadow_created_at timestamptz,"
               " _shadow_source_table text, _shadow_migration_id text, _shadow_sync_status text,"
               " _shadow_last_sync timestamptz, _shadow_validation_hash text);"
               "ALTER TABLE oo_shadow OWNER TO itest_rules_other;"
               "CREATE TABLE bm (id int PRIMARY KEY, v int);"
               "CREATE TABLE fine (id int PRIMARY KEY, v int)");
    static const struct {
        const char *yaml, *want;
    } cases[] = {
        {"    - name: fk\n", "key column f of table public.fk is a floating-point type (double precision)"},
        {"    - name: rls\n", "table public.rls has FORCE ROW LEVEL SECURITY"},
        {"    - name: mk\n      columns:\n        id: \"p.id + 3\"\n",
         "table public.mk: key column id cannot be mapped by columns:"},
        {"    - name: oo\n", "shadow table public.oo_shadow is owned by itest_rules_other, table public.oo by"},
        {"    - name: bm\n      columns:\n        v: \"p.nosuch + 1\"\n",
         "column v (columns: mapping): expression p.nosuch + 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *cfg = write_config("itest_rules", cases[i].yaml);
        itest_run r;
        itest_run_ctl(&r, cfg, "check", NULL);
        if (r.rc != 1 || !strstr(r.out, "FAIL  table public.") || !strstr(r.out, cases[i].want))
            fail_msg("check should fail naming \"%s\": rc %d\n%s%s", cases[i].want, r.rc, r.out, r.err);
        itest_run_free(&r);
        /* the preflight's transaction was rolled back */
        assert_false(pgshadow_schema_exists(c));
        itest_expect_sql(c, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshadow_apply'", "0");
        unlink(cfg);
        free(cfg);
        expect_install_fails("itest_rules", cases[i].yaml, (const char *const[]){cases[i].want, NULL});
    }
    /* every problem of one table at once, not only the first */
    itest_exec_ok(c, "CREATE TABLE many (a int, f real NOT NULL); CREATE UNIQUE INDEX ON many (f);"
                  "ALTER TABLE many FORCE ROW LEVEL SECURITY");
    char *cfg = write_config("itest_rules", "    - name: many\n      key: [a, f]\n");
    itest_run r;
    itest_run_ctl(&r, cfg, "check", NULL);
    assert_int_equal(r.rc, 1);
    const char *all[] = {"key column a of table public.many is nullable",
                         "key (a, f) of table public.many is not backed by a unique index",
                         "key column f of table public.many is a floating-point type (real)",
                         "table public.many has FORCE ROW LEVEL SECURITY"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strstr(r.out, all[i]))
            fail_msg("check output lacks \"%s\":\n%s", all[i], r.out);
    itest_run_free(&r);
    unlink(cfg);
    free(cfg);
    /* and a table install accepts passes, shadow absent or present */
    cfg = write_config("itest_rules", "    - name: fine\n");
    itest_run_ctl(&r, cfg, "check", NULL);
    if (r.rc != 0 || !strstr(r.out, "PASS  table public.fine: install accepts it (primary key; shadow absent, install creates it)"))
        fail_msg("check: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);
    itest_run_ctl(&r, cfg, "install", NULL);
    if (r.rc != 0)
        fail_msg("install: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);
    itest_run_ctl(&r, cfg, "check", NULL);
    if (r.rc != 0 || !strstr(r.out, "PASS  table public.fine: install accepts it (primary key; shadow compatible)"))
        fail_msg("check after install: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);
    unlink(cfg);
    free(cfg);
    PQfinish(c);
}

/* A database that already has the seed's dashboard view: check says FAIL,
 * install refuses and leaves it; uninstall of a pgshadow installed beside a
 * user view depending on it refuses and lists it. */
static void test_foreign_objects(void **state)
{
    (void)state;
    itest_db_create("itest_foreign");
    PGconn *c = itest_connect_db("itest_foreign");
    itest_exec_ok(c, "CREATE TABLE projects (id int PRIMARY KEY);"
               "CREATE VIEW migration_success_metrics AS SELECT 'READY_FOR_CUTOVER'::text AS migration_status");
    char *cfg = write_config("itest_foreign", "    - name: projects\n");
    itest_run r;
    itest_run_ctl(&r, cfg, "check", NULL);
    assert_int_equal(r.rc, 1);
    if (!strstr(r.out, "FAIL  dashboard views: public.migration_success_metrics already exists and was not "
                       "created by pgshadow"))
        fail_msg("check output:\n%s", r.out);
    itest_run_free(&r);
    itest_run_ctl(&r, cfg, "install", NULL);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "public.migration_success_metrics already exists"));
    itest_run_free(&r);
    assert_false(pgshadow_schema_exists(c));
    char *v = itest_query(c, "SELECT migration_status FROM migration_success_metrics");
    assert_string_equal(v, "READY_FOR_CUTOVER");
    free(v);
    itest_exec_ok(c, "DROP VIEW migration_success_metrics");

    itest_run_ctl(&r, cfg, "install", NULL);
    if (r.rc != 0)
        fail_msg("install: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);
    itest_exec_ok(c, "CREATE VIEW routed AS SELECT id, pgshadow.read_from_shadow('projects', id::text) FROM projects");
    itest_run_ctl(&r, cfg, "uninstall", "--drop-shadow", NULL);
    assert_int_equal(r.rc, 1);
    if (!strstr(r.err, "uninstall refused") || !strstr(r.err, "view public.routed") ||
        !strstr(r.err, "rolled back; nothing was changed"))
        fail_msg("uninstall output:\n%s%s", r.out, r.err);
    assert_null(strstr(r.out, "primary tables unchanged"));
    itest_run_free(&r);
    assert_true(pgshadow_schema_exists(c));
    v = itest_query(c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'projects'::regclass");
    assert_string_equal(v, "2");
    free(v);
    itest_exec_ok(c, "DROP VIEW routed");
    itest_run_ctl(&r, cfg, "uninstall", "--drop-shadow", NULL);
    if (r.rc != 0)
        fail_msg("uninstall: rc %d\n%s%s", r.rc, r.out, r.err);
    assert_null(strstr(r.err, "drop cascades"));
    itest_run_free(&r);
    assert_false(pgshadow_schema_exists(c));
    PQfinish(c);
    unlink(cfg);
    free(cfg);
}

/* The connection dies inside COMMIT (a deferred trigger kills the backend
 * there): pgshadowctl cannot know the outcome and must not claim a rollback. */
static void test_lost_during_commit(void **state)
{
    (void)state;
    itest_db_create("itest_lost");
    PGconn *c = itest_connect_db("itest_lost");
    itest_exec_ok(c, "CREATE TABLE projects (id int PRIMARY KEY);"
               "CREATE TABLE boom (x int);"
               "CREATE FUNCTION kill_me() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;"
               "CREATE CONSTRAINT TRIGGER boom_at_commit AFTER INSERT ON boom DEFERRABLE INITIALLY DEFERRED "
               "FOR EACH ROW EXECUTE FUNCTION kill_me();"
               "CREATE FUNCTION arm() RETURNS event_trigger LANGUAGE plpgsql AS "
               "$$ BEGIN INSERT INTO boom VALUES (1); END $$;"
               "CREATE EVENT TRIGGER arm_on_schema ON ddl_command_end WHEN TAG IN ('CREATE SCHEMA') "
               "EXECUTE FUNCTION arm();");
    char *cfg = write_config("itest_lost", "    - name: projects\n");
    itest_run r;
    itest_run_ctl(&r, cfg, "install", NULL);
    assert_int_equal(r.rc, 1);
    if (!strstr(r.err, "outcome unknown: check with pgshadowctl status / check") ||
        strstr(r.err, "nothing was changed"))
        fail_msg("install output:\n%s%s", r.out, r.err);
    itest_run_free(&r);
    itest_exec_ok(c, "DROP EVENT TRIGGER arm_on_schema");
    PQfinish(c);
    unlink(cfg);
    free(cfg);
}

typedef struct vector {
    const char *table, *key;
    int bucket;
} vector;

static void test_route(void **state)
{
    (void)state;
    static const vector v[] = {
        {"AB12A", "122", 23},     {"AB12A", "155", 100},     {"contexts", "1", 48},
        {"contexts", "42", 29},   {"tasks", "7f3c2a9e-0b1d-4c55-9e1a-2f6d8c4b1a00", 10},
        {"projects", "aidis", 8}, {"sessions", "", 38},      {"analytics_events", "1107", 26},
        {"contexts", "ünïcødé", 64}, {"Weird \"Table\"", "key with spaces", 94},
        {"tasks", "248", 57},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char at[16], below[16];
        snprintf(at, sizeof at, "%d", v[i].bucket);
        snprintf(below, sizeof below, "%d", v[i].bucket - 1);
        itest_run r;
        itest_run_ctl(&r, NULL, "route", "--percent", at, "--", v[i].table, v[i].key, NULL);
        assert_int_equal(r.rc, 0);
        assert_string_equal(r.out, "shadow\n");
        itest_run_free(&r);
        itest_run_ctl(&r, NULL, "route", "--percent", below, "--", v[i].table, v[i].key, NULL);
        assert_int_equal(r.rc, 0);
        assert_string_equal(r.out, "primary\n");
        itest_run_free(&r);
    }
    itest_run r;
    itest_run_ctl(&r, NULL, "route", "--percent", "101", "t", "k", NULL);
    assert_int_equal(r.rc, 2);
    itest_run_free(&r);

    /* online: the percent comes from the database's flag */
    itest_db_create("itest_route");
    PGconn *c = itest_connect_db("itest_route");
    itest_exec_ok(c, "CREATE TABLE contexts (id int PRIMARY KEY)");
    char *cfg = write_config("itest_route", "    - name: contexts\n");
    itest_run_ctl(&r, cfg, "install", NULL);
    if (r.rc != 0)
        fail_msg("install: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);
    itest_run_ctl(&r, cfg, "route", "contexts", "42", NULL);
    assert_string_equal(r.out, "primary\n");
    itest_run_free(&r);
    itest_exec_ok(c, "SELECT pgshadow.set_read_percent('contexts', 29)");
    itest_run_ctl(&r, cfg, "route", "contexts", "42", NULL);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "shadow\n"); /* bucket 29 */
    itest_run_free(&r);
    itest_run_ctl(&r, cfg, "route", "contexts", "1", NULL);
    assert_string_equal(r.out, "primary\n"); /* bucket 48 */
    itest_run_free(&r);
    /* and SQL agrees with C */
    char *sqlv = itest_query(c, "SELECT pgshadow.read_from_shadow('contexts', '42')::text || ' ' ||"
                           " pgshadow.read_from_shadow('contexts', '1')::text");
    assert_string_equal(sqlv, "true false");
    free(sqlv);
    PQfinish(c);
    unlink(cfg);
    free(cfg);
}

static void test_cli_usage(void **state)
{
    (void)state;
    itest_run r;
    /* revert (a command of its own since #15): its options are checked
     * before anything else, an unknown one is a usage error */
    itest_run_ctl(&r, NULL, "revert", "--yes", NULL);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "--yes"));
    itest_run_free(&r);
    itest_run_ctl(&r, NULL, "promote", "--without-revert", "x", NULL);
    assert_int_equal(r.rc, 2);
    itest_run_free(&r);
    itest_run_ctl(&r, NULL, "no-such-command", NULL);
    assert_int_equal(r.rc, 2);
    itest_run_free(&r);
    itest_run_ctl(&r, "/nonexistent/pgshadow.yaml", "check", NULL);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "/nonexistent/pgshadow.yaml"));
    itest_run_free(&r);
}

static void test_lock_retry(void **state)
{
    (void)state;
    itest_db_create("itest_lock");
    PGconn *c = itest_connect_db("itest_lock");
    itest_exec_ok(c, "CREATE TABLE projects (id int PRIMARY KEY, name text)");
    char *cfg = write_config("itest_lock", "    - name: projects\n");
    PGconn *locker = itest_connect_db("itest_lock");
    itest_exec_ok(locker, "BEGIN; LOCK TABLE projects IN ACCESS EXCLUSIVE MODE");

    char *argv[] = {(char *)itest_env("PGSHADOWCTL"), "-c", cfg, "install", NULL};
    itest_child ch;
    itest_child_start(&ch, argv);
    /* held until an attempt has failed on the lock and the install says it
     * retries (30 attempts, backoff 200 ms .. 5 s: the lock goes long before
     * they run out) */
    bool retrying = false;
    for (int64_t end = itest_now_ms() + 60000; !retrying && itest_now_ms() < end;) {
        char *err = itest_read_file(ch.errp);
        retrying = err && strstr(err, "retrying the whole transaction");
        free(err);
        if (!retrying)
            itest_sleep_ms(50);
    }
    itest_exec_ok(locker, "COMMIT");
    itest_run r;
    itest_child_finish(&ch, &r);
    if (r.rc != 0)
        fail_msg("install under a lock: rc %d\n%s%s", r.rc, r.out, r.err);
    assert_non_null(strstr(r.err, "retrying the whole transaction"));
    assert_non_null(strstr(r.err, "55P03"));
    itest_run_free(&r);
    assert_true(pgshadow_schema_exists(c));
    PQfinish(locker);
    PQfinish(c);
    unlink(cfg);
    free(cfg);
}

int main(void)
{
    static const char *const env[] = {"PGSHADOW_TEST_CONNINFO", "PGSHADOWCTL", "PGSHADOW_SRCDIR",
                                      "PGSHADOW_TEST_PGBIN", NULL};
    if (!itest_require_env("itest-install", env))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_usage), cmocka_unit_test(test_route),
        cmocka_unit_test(test_dry_run),   cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_awkward),   cmocka_unit_test(test_aidis),
        cmocka_unit_test(test_lock_retry),
        cmocka_unit_test(test_key_rule_agreement), cmocka_unit_test(test_check_applies_install_rules),
        cmocka_unit_test(test_foreign_objects),
        cmocka_unit_test(test_lost_during_commit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
