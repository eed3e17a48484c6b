/*
 * test-capture.c - the database side of pgshadow (the files in sql/) against a real
 * PostgreSQL: routing vectors in SQL, capture of every kind of write in both
 * capture modes, partitions, awkward identifiers, flags, bad input, the
 * dashboard, the roles' grants, and uninstall restoring the catalog.
 *
 * Each test works in its own freshly created database (dropped afterwards),
 * so tests are independent of each other and of other test programs. The
 * SQL files are read from $PGSHADOW_SRCDIR/sql and wrapped exactly as
 * pgshadowctl does (docs/database.md).
 *
 * Size: over 800 lines on purpose: the scenarios share the install helpers
 * (install, install_ok, expect_error) defined here; each is one function that
 * reads alone, and a split would copy the helpers.
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

/* Run SQL that must fail; the message + detail must contain every string in
 * the NULL-terminated list. Returns nothing; rolls back on the caller. */
static void expect_error(PGconn *c, const char *sql, ...)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        fprintf(stderr, "SQL unexpectedly succeeded: %s\n", sql);
        PQclear(r);
        fail();
    }
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *det = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    char all[8192];
    snprintf(all, sizeof all, "%s\n%s", msg ? msg : "", det ? det : "");
    va_list ap;
    va_start(ap, sql);
    for (const char *want; (want = va_arg(ap, const char *)) != NULL;) {
        if (!strstr(all, want))
            fprintf(stderr, "error text lacks \"%s\":\n%s\n", want, all);
        assert_non_null(strstr(all, want));
    }
    va_end(ap);
    PQclear(r);
}

/* ---- a fresh database per test ---------------------------------------- */

static int db_setup(void **state)
{
    *state = itest_db_new("pgshadow_capture");
    return 0;
}

static int db_teardown(void **state)
{
    itest_db_free(*state);
    return 0;
}

/* The install transaction as pgshadowctl builds it: BEGIN, lock_timeout,
 * the schema file, `pre` (e.g. a capture_mode change), the register_table
 * calls, finish_install, COMMIT. Returns the PGresult status. */
static bool install(PGconn *c, const char *pre, const char *registers, char *err, size_t errlen)
{
    char *schema = itest_install_sql();
    size_t len = strlen(schema) + strlen(pre) + strlen(registers) + 512;
    char *script = malloc(len);
    snprintf(script, len,
             "BEGIN;\nSET LOCAL lock_timeout = '200ms';\n%s\n%s\n%s\n"
             "SELECT pgshadow.finish_install('m1');\nCOMMIT;\n",
             schema, pre, registers);
    PGresult *r = PQexec(c, script);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok && err)
        snprintf(err, errlen, "%s\n%s", PQresultErrorMessage(r),
                 PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : "");
    PQclear(r);
    if (!ok)
        itest_exec_ok(c, "ROLLBACK");
    free(script);
    free(schema);
    return ok;
}

static void install_ok(PGconn *c, const char *pre, const char *registers)
{
    char err[8192] = "";
    if (!install(c, pre, registers, err, sizeof err)) {
        fprintf(stderr, "install failed: %s\n", err);
        fail();
    }
}

static void uninstall(PGconn *c, bool drop_shadow)
{
    char *tail = itest_read_sql("uninstall.sql");
    size_t len = strlen(tail) + 256;
    char *script = malloc(len);
    snprintf(script, len, "BEGIN;\nSET LOCAL lock_timeout = '200ms';\nSELECT pgshadow.uninstall(%s);\n%sCOMMIT;\n",
             drop_shadow ? "true" : "false", tail);
    itest_exec_ok(c, script);
    free(script);
    free(tail);
}

/* The change log as "table:op:key1,key2 ..." in seq order. */
#define LOG_SQL                                                                                   \
    "SELECT coalesce(string_agg(t.table_name || ':' || l.op || ':' || coalesce(array_to_string(l.key, ',', 'NULL'), '-'), " \
    "' ' ORDER BY l.seq), '') FROM pgshadow.change_log l JOIN pgshadow.tables t USING (table_id)"

static void clear_log(PGconn *c) { itest_exec_ok(c, "DELETE FROM pgshadow.change_log"); }

/* ---- routing ------------------------------------------------------------- */

static void test_routing_vectors(void **state)
{
    itest_db *t = *state;
    install_ok(t->c, "", "");
    static const struct { const char *in; const char *hex; const char *bucket; } v[] = {
        {"AB12A:122", "3f4e7e32", "23"},
        {"AB12A:155", "c2cd44cf", "100"},
        {"contexts:1", "707ddaf7", "48"},
        {"contexts:42", "69446b08", "29"},
        {"tasks:7f3c2a9e-0b1d-4c55-9e1a-2f6d8c4b1a00", "f49eddf1", "10"},
        {"projects:aidis", "ece9002b", "8"},
        {"sessions:", "4c12bc2d", "38"},
        {"analytics_events:1107", "906448bd", "26"},
        {"contexts:\xc3\xbcn\xc3\xaf" "c\xc3\xb8" "d\xc3\xa9", "84162bfb", "64"},
        {"Weird \"Table\":key with spaces", "288c1f4d", "94"},
        {"tasks:248", "28607184", "57"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        const char *params[1] = {v[i].in};
        PGresult *r = PQexecParams(t->c,
            "SELECT lpad(to_hex(pgshadow.murmur3_32(convert_to($1, 'UTF8'))), 8, '0'), "
            "pgshadow.murmur3_32(convert_to($1, 'UTF8')) % 100 + 1",
            1, NULL, params, NULL, NULL, 0);
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        assert_string_equal(PQgetvalue(r, 0, 0), v[i].hex);
        assert_string_equal(PQgetvalue(r, 0, 1), v[i].bucket);
        PQclear(r);
    }
    itest_expect_sql(t->c, "SELECT to_hex(pgshadow.murmur3_32('\\x68656c6c6f'::bytea, 0))", "248bfa47");
    /* unknown table: 0 percent, primary */
    itest_expect_sql(t->c, "SELECT pgshadow.read_percent('nope')", "0");
    itest_expect_sql(t->c, "SELECT pgshadow.read_from_shadow('nope', '1')", "f");
}

static void test_read_from_shadow(void **state)
{
    itest_db *t = *state;
    itest_exec_ok(t->c, "CREATE TABLE contexts (id int PRIMARY KEY, v text); "
                  "CREATE TABLE \"Weird \"\"Table\"\"\" (k text PRIMARY KEY)");
    install_ok(t->c, "",
               "SELECT pgshadow.register_table('public', 'contexts', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'Weird \"Table\"', NULL, '_shadow', 'm1', '{}');");
    /* 0% after install: everything on the primary */
    itest_expect_sql(t->c, "SELECT pgshadow.read_percent('contexts')", "0");
    itest_expect_sql(t->c, "SELECT pgshadow.read_from_shadow('contexts', '1')", "f");
    /* contexts:1 has bucket 48, contexts:42 bucket 29 */
    itest_exec_ok(t->c, "SELECT pgshadow.set_read_percent('contexts', 29)");
    itest_expect_sql(t->c, "SELECT pgshadow.read_from_shadow('contexts', '42')", "t");
    itest_expect_sql(t->c, "SELECT pgshadow.read_from_shadow('contexts', '1')", "f");
    itest_exec_ok(t->c, "SELECT pgshadow.set_read_percent('contexts', 48)");
    itest_expect_sql(t->c, "SELECT pgshadow.read_from_shadow('contexts', '1')", "t");
    itest_expect_sql(t->c, "SELECT pgshadow.read_from_shadow('contexts', NULL)", "f");
    itest_exec_ok(t->c, "SELECT pgshadow.set_read_percent('Weird \"Table\"', 94)");
    itest_expect_sql(t->c, "SELECT pgshadow.read_from_shadow('Weird \"Table\"', 'key with spaces')", "t");
    itest_exec_ok(t->c, "SELECT pgshadow.set_read_percent('Weird \"Table\"', 93)");
    itest_expect_sql(t->c, "SELECT pgshadow.read_from_shadow('Weird \"Table\"', 'key with spaces')", "f");
    /* the flag is readable by applications and the change is in the event log */
    itest_expect_sql(t->c, "SELECT value FROM pgshadow.flags WHERE name = 'read_from_shadow_contexts'", "48");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.events WHERE what = 'flag'", "4");
    expect_error(t->c, "SELECT pgshadow.set_read_percent('contexts', 101)", "0..100", NULL);
    expect_error(t->c, "SELECT pgshadow.set_read_percent('nope', 5)", "\"nope\" is not registered", NULL);
}

/* ---- capture ------------------------------------------------------------- */

static void capture_dml(itest_db *t, const char *mode)
{
    char pre[256];
    snprintf(pre, sizeof pre, "UPDATE pgshadow.meta SET value = '%s' WHERE key = 'capture_mode';", mode);
    itest_exec_ok(t->c, "CREATE TABLE t (id int PRIMARY KEY, v text, n int UNIQUE)");
    install_ok(t->c, pre, "SELECT pgshadow.register_table('public', 't', NULL, '_shadow', 'm1', '{}');");
    char want_mode[64];
    snprintf(want_mode, sizeof want_mode, "%s", mode);
    itest_expect_sql(t->c, "SELECT capture_mode FROM pgshadow.tables", want_mode);
    /* every trigger on t fires ALWAYS */
    itest_expect_sql(t->c, "SELECT bool_and(tgenabled = 'A') AND count(*) > 0 FROM pg_trigger WHERE tgrelid = 't'::regclass", "t");

    bool row = strcmp(mode, "row") == 0;
    itest_exec_ok(t->c, "INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20)");
    itest_expect_sql(t->c, LOG_SQL, "t:I:1 t:I:2");
    clear_log(t->c);

    itest_exec_ok(t->c, "UPDATE t SET v = 'x' WHERE id = 2");
    itest_expect_sql(t->c, LOG_SQL, "t:U:2");
    clear_log(t->c);

    /* key-changing update: old and new key */
    itest_exec_ok(t->c, "UPDATE t SET id = 3 WHERE id = 1");
    itest_expect_sql(t->c, LOG_SQL, row ? "t:D:1 t:I:3" : "t:U:1 t:U:3");
    clear_log(t->c);

    itest_exec_ok(t->c, "DELETE FROM t WHERE id = 2");
    itest_expect_sql(t->c, LOG_SQL, "t:D:2");
    clear_log(t->c);

    /* ON CONFLICT DO UPDATE: one new row, one updated row */
    itest_exec_ok(t->c, "INSERT INTO t VALUES (3, 'c', 30), (4, 'd', 40) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v");
    itest_expect_sql(t->c, "SELECT string_agg(op || ':' || key[1], ' ' ORDER BY key[1], op) FROM pgshadow.change_log",
                 "U:3 I:4");
    clear_log(t->c);

    /* COPY through the protocol */
    PGresult *r = PQexec(t->c, "COPY t (id, v, n) FROM STDIN");
    assert_int_equal(PQresultStatus(r), PGRES_COPY_IN);
    PQclear(r);
    const char *rows = "5\te\t50\n6\tf\t60\n";
    assert_int_equal(PQputCopyData(t->c, rows, (int)strlen(rows)), 1);
    assert_int_equal(PQputCopyEnd(t->c, NULL), 1);
    r = PQgetResult(t->c);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    while ((r = PQgetResult(t->c)) != NULL)
        PQclear(r);
    itest_expect_sql(t->c, LOG_SQL, "t:I:5 t:I:6");
    clear_log(t->c);

    /* writes under session_replication_role = replica are captured too */
    itest_exec_ok(t->c, "SET session_replication_role = replica");
    itest_exec_ok(t->c, "INSERT INTO t VALUES (7, 'g', 70)");
    itest_exec_ok(t->c, "RESET session_replication_role");
    itest_expect_sql(t->c, LOG_SQL, "t:I:7");
    clear_log(t->c);

    /* a statement that touches no row logs nothing */
    itest_exec_ok(t->c, "UPDATE t SET v = 'z' WHERE id = 999");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.change_log", "0");

    itest_exec_ok(t->c, "TRUNCATE t");
    itest_expect_sql(t->c, LOG_SQL, "t:T:-");
    clear_log(t->c);

    /* the shadow was created with the key, the tracking columns, the unique index */
    itest_expect_sql(t->c, "SELECT count(*) FROM pg_attribute WHERE attrelid = 't_shadow'::regclass "
                       "AND attname LIKE '\\_shadow\\_%' AND NOT attisdropped", "7");
    itest_expect_sql(t->c, "SELECT count(*) FROM pg_index WHERE indrelid = 't_shadow'::regclass AND indisunique", "2");
}

static void test_capture_row(void **state)
{
    itest_db *t = *state;
    capture_dml(t, "row");
}

/* Statement mode: transition tables; a key-changing UPDATE logs 'U' for the old and the new key. */
static void test_capture_statement_dml(void **state)
{
    itest_db *t = *state;
    capture_dml(t, "statement");
}

static void test_partitioned(void **state)
{
    itest_db *t = *state;
    itest_exec_ok(t->c,
            "CREATE SCHEMA app;"
            "CREATE TABLE app.ev (id int, d date, v text, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);"
            "CREATE TABLE app.ev_2020 PARTITION OF app.ev FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');"
            "CREATE TABLE app.ev_2021 PARTITION OF app.ev FOR VALUES FROM ('2021-01-01') TO ('2022-01-01');");
    /* statement mode is asked for, but a partitioned table falls back to row
     * triggers: statement triggers on the root miss direct partition writes */
    install_ok(t->c, "UPDATE pgshadow.meta SET value = 'statement' WHERE key = 'capture_mode';",
               "SELECT pgshadow.register_table('app', 'ev', NULL, '_shadow', 'm1', '{}');");
    itest_expect_sql(t->c, "SELECT capture_mode FROM pgshadow.tables", "row");
    itest_expect_sql(t->c, "SELECT relkind FROM pg_class WHERE oid = 'app.ev_shadow'::regclass", "r");
    /* cloned row triggers on the partitions fire ALWAYS too */
    itest_expect_sql(t->c, "SELECT string_agg(tgrelid::regclass || '=' || tgenabled::text, ' ' ORDER BY tgrelid::regclass::text) "
                       "FROM pg_trigger WHERE tgname = 'pgshadow_capture'",
                 "app.ev=A app.ev_2020=A app.ev_2021=A");

    itest_exec_ok(t->c, "INSERT INTO app.ev VALUES (1, '2020-05-01', 'a')");
    itest_exec_ok(t->c, "INSERT INTO app.ev_2021 VALUES (2, '2021-05-01', 'b')");      /* directly into a partition */
    itest_exec_ok(t->c, "UPDATE app.ev_2021 SET v = 'c' WHERE id = 2");
    itest_exec_ok(t->c, "UPDATE app.ev SET d = '2021-02-01' WHERE id = 1");            /* moves partitions */
    itest_exec_ok(t->c, "SET session_replication_role = replica; DELETE FROM app.ev_2021 WHERE id = 2; "
                  "RESET session_replication_role");
    itest_expect_sql(t->c, LOG_SQL,
                 "ev:I:1,2020-05-01 ev:I:2,2021-05-01 ev:U:2,2021-05-01 ev:D:1,2020-05-01 ev:I:1,2021-02-01 "
                 "ev:D:2,2021-05-01");
    clear_log(t->c);
    /* TRUNCATE of one partition is captured (TRUNCATE triggers are not cloned: install adds them) */
    itest_exec_ok(t->c, "TRUNCATE app.ev_2020");
    itest_expect_sql(t->c, LOG_SQL, "ev:T:-");
    clear_log(t->c);
    /* keys of date type are logged in ISO form whatever the session DateStyle */
    itest_exec_ok(t->c, "SET DateStyle = 'SQL, DMY'; INSERT INTO app.ev VALUES (3, '2021-03-04', 'x'); RESET DateStyle");
    itest_expect_sql(t->c, LOG_SQL, "ev:I:3,2021-03-04");
}

static void test_awkward_identifiers(void **state)
{
    itest_db *t = *state;
    itest_exec_ok(t->c,
            "CREATE SCHEMA \"My Schema\";"
            "CREATE TABLE \"My Schema\".\"Weird \"\"Table\"\"\" (\"Id Col\" text, \"\xc3\xbcn\xc3\xaf\" int, "
            "\"Value\" jsonb DEFAULT '{}', PRIMARY KEY (\"Id Col\", \"\xc3\xbcn\xc3\xaf\"));");
    install_ok(t->c, "", "SELECT pgshadow.register_table('My Schema', 'Weird \"Table\"', NULL, '_Shadow', 'm1', '{}');");
    itest_expect_sql(t->c, "SELECT to_regclass('\"My Schema\".\"Weird \"\"Table\"\"_Shadow\"') IS NOT NULL", "t");
    itest_expect_sql(t->c, "SELECT array_to_string(key_columns, '|') FROM pgshadow.tables", "Id Col|\xc3\xbcn\xc3\xaf");
    itest_exec_ok(t->c, "INSERT INTO \"My Schema\".\"Weird \"\"Table\"\"\" VALUES ('a \"b\" c', 1), ('\xc3\xa9t\xc3\xa9', 2)");
    itest_exec_ok(t->c, "UPDATE \"My Schema\".\"Weird \"\"Table\"\"\" SET \"\xc3\xbcn\xc3\xaf\" = 3 WHERE \"\xc3\xbcn\xc3\xaf\" = 2");
    itest_expect_sql(t->c, LOG_SQL,
                 "Weird \"Table\":I:a \"b\" c,1 Weird \"Table\":I:\xc3\xa9t\xc3\xa9,2 "
                 "Weird \"Table\":D:\xc3\xa9t\xc3\xa9,2 Weird \"Table\":I:\xc3\xa9t\xc3\xa9,3");
    /* the flags and the dashboard use the table name as is */
    itest_expect_sql(t->c, "SELECT value FROM pgshadow.flags WHERE name = 'shadow_writes_Weird \"Table\"'", "on");
    itest_expect_sql(t->c, "SELECT table_name || '/' || pending_changes FROM public.shadow_migration_dashboard",
                 "Weird \"Table\"/4");
    itest_exec_ok(t->c, "SELECT pgshadow.disable_writes('Weird \"Table\"')");
    clear_log(t->c);
    itest_exec_ok(t->c, "DELETE FROM \"My Schema\".\"Weird \"\"Table\"\"\"");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.change_log", "0");
    /* registering again is a refresh, not an error */
    install_ok(t->c, "", "SELECT pgshadow.register_table('My Schema', 'Weird \"Table\"', NULL, '_Shadow', 'm1', '{}');");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.tables", "1");
    uninstall(t->c, true);
    itest_expect_sql(t->c, "SELECT to_regclass('\"My Schema\".\"Weird \"\"Table\"\"_Shadow\"') IS NULL", "t");
    itest_expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = '\"My Schema\".\"Weird \"\"Table\"\"\"'::regclass", "0");
}

static void test_disable_writes(void **state)
{
    itest_db *t = *state;
    itest_exec_ok(t->c, "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)");
    install_ok(t->c, "",
               "SELECT pgshadow.register_table('public', 'a', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'b', NULL, '_shadow', 'm1', '{}');");
    /* one table off: the other still captured */
    itest_exec_ok(t->c, "SELECT pgshadow.disable_writes('a')");
    itest_exec_ok(t->c, "INSERT INTO a VALUES (1); INSERT INTO b VALUES (1)");
    itest_expect_sql(t->c, LOG_SQL, "b:I:1");
    clear_log(t->c);
    /* turning capture back on schedules a full resync of what was missed,
     * in the same transaction */
    itest_exec_ok(t->c, "SELECT pgshadow.enable_writes('a')");
    itest_exec_ok(t->c, "INSERT INTO a VALUES (2)");
    itest_expect_sql(t->c, LOG_SQL, "a:T:- a:I:2");
    itest_expect_sql(t->c, "SELECT string_agg(table_name || ':' || what, ' ' ORDER BY event_id) FROM pgshadow.events "
                       "WHERE what = 'resync'", "a:resync");
    /* enabling what is already on resyncs nothing */
    clear_log(t->c);
    itest_exec_ok(t->c, "SELECT pgshadow.enable_writes('a')");
    itest_expect_sql(t->c, LOG_SQL, "");
    /* the master switch stops everything, at once for the next statement of
     * another session, no lock on the tables needed */
    PGconn *other = itest_connect_db(t->name);
    itest_exec_ok(other, "BEGIN; INSERT INTO a VALUES (3)");
    itest_exec_ok(t->c, "SELECT pgshadow.disable_writes()");
    itest_exec_ok(other, "INSERT INTO b VALUES (3); COMMIT");
    PQfinish(other);
    itest_expect_sql(t->c, LOG_SQL, "a:I:3");
    itest_expect_sql(t->c, "SELECT value FROM pgshadow.flags WHERE name = 'shadow_writes_enabled'", "off");
    itest_expect_sql(t->c, "SELECT status FROM public.shadow_migration_dashboard WHERE table_name = 'b'", "capture_off");
    clear_log(t->c);
    itest_exec_ok(t->c, "SELECT pgshadow.enable_writes()");
    itest_expect_sql(t->c, LOG_SQL, "a:T:- b:T:-");
    clear_log(t->c);
    itest_exec_ok(t->c, "INSERT INTO b VALUES (4)");
    itest_expect_sql(t->c, LOG_SQL, "b:I:4");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.events WHERE what = 'resync'", "3");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.events WHERE what = 'flag'", "4");
}

static void test_composite_and_mapping(void **state)
{
    itest_db *t = *state;
    itest_exec_ok(t->c,
            "CREATE TABLE ol (order_id bigint, line int, qty int, price numeric, note text, "
            "PRIMARY KEY (order_id, line));"
            "CREATE TABLE nk (code text NOT NULL, v int); CREATE UNIQUE INDEX ON nk (code);");
    install_ok(t->c, "",
               "SELECT pgshadow.register_table('public', 'ol', NULL, '_shadow', 'm1', '{\"qty\": \"greatest(p.qty, 0)\"}');"
               "SELECT pgshadow.register_table('public', 'nk', ARRAY['code'], '_shadow', 'm1', '{}');");
    itest_exec_ok(t->c, "INSERT INTO ol VALUES (10, 1, 5, 1.5, 'x'); UPDATE ol SET line = 2; INSERT INTO nk VALUES ('k1', 1)");
    itest_expect_sql(t->c, LOG_SQL, "ol:I:10,1 ol:D:10,1 ol:I:10,2 nk:I:k1");
    itest_expect_sql(t->c, "SELECT column_map -> 2 ->> 'expr' FROM pgshadow.tables WHERE table_name = 'ol'",
                 "greatest(p.qty, 0)");
    itest_expect_sql(t->c, "SELECT array_to_string(key_types, ',') FROM pgshadow.tables WHERE table_name = 'ol'",
                 "bigint,integer");
    /* the documented canonical hash is a runnable SQL expression */
    char *expr = itest_query(t->c, "SELECT hash_expr FROM pgshadow.tables WHERE table_name = 'ol'");
    char sql[2048];
    snprintf(sql, sizeof sql, "SELECT %s = encode(sha256(convert_to('(10,2,5,1.5,x)', 'UTF8')), 'hex') FROM ol p", expr);
    free(expr);
    itest_expect_sql(t->c, sql, "t");
}

static void test_bad_input(void **state)
{
    itest_db *t = *state;
    char err[8192];
    itest_exec_ok(t->c, "CREATE TABLE nopk (a int, b text)");
    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'nopk', NULL, '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "public.nopk has no primary key"));
    itest_expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL", "t");

    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'missing', NULL, '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "public.missing does not exist"));
    itest_expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL", "t");

    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'nopk', ARRAY['zz'], '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "key column zz does not exist in table public.nopk"));
    /* a configured key must be NOT NULL, and unique on exactly its columns */
    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'nopk', ARRAY['a'], '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "key column a of table public.nopk is nullable"));
    itest_exec_ok(t->c, "CREATE TABLE nn (a int NOT NULL, b int NOT NULL, v text); CREATE UNIQUE INDEX ON nn (a)");
    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'nn', ARRAY['a', 'b'], '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "key (a, b) of table public.nn is not backed by a unique index"));
    /* "enabled" would own the master switch's flag name */
    itest_exec_ok(t->c, "CREATE TABLE enabled (id int PRIMARY KEY)");
    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'enabled', NULL, '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "public.enabled cannot be registered: its flag shadow_writes_enabled would be the master switch"));
    itest_expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL", "t");

    /* a shadow with wrong types, a missing column and a missing tracking
     * column: ONE error naming every problem; nothing installed, the good
     * table registered before it included */
    itest_exec_ok(t->c,
            "CREATE TABLE good (id int PRIMARY KEY);"
            "CREATE TABLE acct (id int PRIMARY KEY, owner text, balance numeric, opened date);"
            "CREATE TABLE acct_shadow (id int PRIMARY KEY, owner int, balance text,"
            " _shadow_version int, _shadow_created_at timestamptz, _shadow_source_table text,"
            " _shadow_migration_id text, _shadow_sync_status text, _shadow_last_sync timestamptz);");
    assert_false(install(t->c, "",
                         "SELECT pgshadow.register_table('public', 'good', NULL, '_shadow', 'm1', '{}');"
                         "SELECT pgshadow.register_table('public', 'acct', NULL, '_shadow', 'm1', '{\"balance\": \"p.balance::text\", \"extra\": \"1\"}');",
                         err, sizeof err));
    const char *want[] = {
        "shadow table public.acct_shadow does not match table public.acct (4 problems)",
        "table public.acct_shadow: column owner: type integer in the shadow table, text in the primary",
        "table public.acct_shadow: column opened: missing in the shadow table",
        "table public.acct_shadow: column extra (columns: mapping): missing in the shadow table",
        "table public.acct_shadow: column _shadow_validation_hash: tracking column missing",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!strstr(err, want[i]))
            fprintf(stderr, "error lacks \"%s\":\n%s\n", want[i], err);
        assert_non_null(strstr(err, want[i]));
    }
    /* balance is mapped by an expression: only its presence matters */
    assert_null(strstr(err, "column balance"));
    itest_expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL AND to_regclass('good_shadow') IS NULL "
                       "AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'good'::regclass)", "t");

    /* a bad mapping expression is reported with the column */
    itest_exec_ok(t->c, "CREATE TABLE bm (id int PRIMARY KEY, v int)");
    assert_false(install(t->c, "",
                         "SELECT pgshadow.register_table('public', 'bm', NULL, '_shadow', 'm1', '{\"v\": \"p.nosuch + 1\"}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "column v (columns: mapping): expression p.nosuch + 1"));
    itest_expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL", "t");

    /* a key column is the row's identity on both sides: it cannot be
     * mapped (with id: "p.id + 3", DELETE id = 4 removed primary row 1's
     * shadow row) */
    assert_false(install(t->c, "",
                         "SELECT pgshadow.register_table('public', 'bm', NULL, '_shadow', 'm1', '{\"id\": \"p.id + 3\"}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "key column id cannot be mapped by columns:"));
    itest_expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL", "t");

    /* a mapping expression is ONE expression: a second statement smuggled
     * into it never runs, and neither does a query glued to it */
    itest_exec_ok(t->c, "CREATE TABLE victim (x int); CREATE TABLE mt (id int PRIMARY KEY, v int);"
                  "CREATE TABLE mt_shadow (id int PRIMARY KEY, v text,"
                  " _shadow_version int, _shadow_created_at timestamptz, _shadow_source_table text,"
                  " _shadow_migration_id text, _shadow_sync_status text, _shadow_last_sync timestamptz,"
                  " _shadow_validation_hash text)");
    assert_false(install(t->c, "",
                         "SELECT pgshadow.register_table('public', 'mt', NULL, '_shadow', 'm1', "
                         "'{\"v\": \"p.v) AS text) FROM public.t AS p WHERE false; DROP TABLE public.victim; SELECT CAST((p.v\"}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "table public.mt_shadow: column v (columns: mapping): expression p.v) AS text)"));
    assert_non_null(strstr(err, "must be one SQL expression"));
    itest_expect_sql(t->c, "SELECT to_regclass('public.victim') IS NOT NULL", "t");
    assert_false(install(t->c, "",
                         "SELECT pgshadow.register_table('public', 'mt', NULL, '_shadow', 'm1', "
                         "'{\"v\": \"p.v) AS text) FROM public.mt AS p WHERE false UNION SELECT CAST((p.v\"}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "table public.mt_shadow: column v (columns: mapping): expression p.v) AS text) FROM"));
    /* a trailing comment must not swallow the rest of the generated SQL */
    assert_false(install(t->c, "",
                         "SELECT pgshadow.register_table('public', 'mt', NULL, '_shadow', 'm1', '{\"v\": \"p.v::text --\"}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "column v (columns: mapping)"));
    itest_expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL AND to_regclass('public.victim') IS NOT NULL", "t");
    /* ...while an ordinary expression, subquery included, is fine */
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'mt', NULL, '_shadow', 'm1', "
                         "'{\"v\": \"coalesce(p.v::text, (SELECT ''none''))\"}');");
}

static void test_dashboard(void **state)
{
    itest_db *t = *state;
    itest_exec_ok(t->c, "CREATE TABLE dash (id int PRIMARY KEY); INSERT INTO dash SELECT generate_series(1, 1000); ANALYZE dash");
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'dash', NULL, '_shadow', 'm1', '{}');");
    /* nothing pending: lag 0, counts are estimates from pg_class */
    itest_expect_sql(t->c, "SELECT primary_count || ' ' || shadow_count || ' ' || count_source || ' ' || (sync_lag_seconds = 0) "
                       "|| ' ' || pending_changes || ' ' || status FROM public.shadow_migration_dashboard",
                 "1000 0 estimate true 0 backfill_pending");
    /* a table not yet copied is never "synced", even when an estimate says
     * the primary is empty; copying is progress, not a reason to roll back */
    itest_expect_sql(t->c, "SELECT sync_percentage FROM public.shadow_migration_dashboard", "0.00");
    itest_expect_sql(t->c, "SELECT migration_status FROM public.migration_success_metrics", "MONITORING_REQUIRED");
    itest_exec_ok(t->c, "UPDATE pgshadow.tables SET backfill_state = 'running', backfill_rows = 250, backfill_total = 1000");
    itest_expect_sql(t->c, "SELECT sync_percentage FROM public.shadow_migration_dashboard", "25.00");
    itest_exec_ok(t->c, "UPDATE pgshadow.tables SET backfill_rows = 1000");
    itest_expect_sql(t->c, "SELECT sync_percentage || ' ' || migration_status FROM public.shadow_migration_dashboard, "
                       "public.migration_success_metrics", "99.99 MONITORING_REQUIRED");
    itest_exec_ok(t->c, "UPDATE pgshadow.tables SET backfill_state = 'pending', backfill_rows = 0, backfill_total = NULL");

    /* pending changes: lag is the age of the OLDEST pending entry */
    itest_exec_ok(t->c, "INSERT INTO dash VALUES (1001), (1002), (1003)");
    itest_exec_ok(t->c, "UPDATE pgshadow.change_log SET logged_at = clock_timestamp() - interval '100 seconds' "
                  "WHERE seq = (SELECT min(seq) FROM pgshadow.change_log)");
    itest_exec_ok(t->c, "UPDATE pgshadow.change_log SET logged_at = clock_timestamp() - interval '500 seconds' "
                  "WHERE seq = (SELECT max(seq) FROM pgshadow.change_log)");
    itest_expect_sql(t->c, "SELECT pending_changes FROM public.shadow_migration_dashboard", "3");
    itest_expect_sql(t->c, "SELECT sync_lag_seconds BETWEEN 100 AND 150 FROM public.shadow_migration_dashboard", "t");

    /* the daemon's counters make it exact; thresholds as in the seed */
    itest_exec_ok(t->c, "UPDATE pgshadow.tables SET primary_rows = 1003, shadow_rows = 1003, synced_rows = 1003, "
                  "backfill_state = 'done'");
    clear_log(t->c);
    itest_expect_sql(t->c, "SELECT count_source || ' ' || sync_percentage || ' ' || (sync_lag_seconds = 0) || ' ' || status "
                       "FROM public.shadow_migration_dashboard", "exact 100.00 true in_sync");
    itest_expect_sql(t->c, "SELECT migration_status FROM public.migration_success_metrics", "READY_FOR_CUTOVER");
    /* capture off: the shadow goes stale, whatever the counts say */
    itest_exec_ok(t->c, "SELECT pgshadow.disable_writes('dash')");
    itest_expect_sql(t->c, "SELECT capture_enabled || ' ' || status || ' ' || migration_status "
                       "FROM public.shadow_migration_dashboard, public.migration_success_metrics",
                 "false capture_off ROLLBACK_RECOMMENDED");
    itest_exec_ok(t->c, "SELECT pgshadow.disable_writes(); SELECT pgshadow.enable_writes('dash')");
    itest_expect_sql(t->c, "SELECT capture_enabled || ' ' || migration_status "
                       "FROM public.shadow_migration_dashboard, public.migration_success_metrics",
                 "false ROLLBACK_RECOMMENDED");
    itest_exec_ok(t->c, "SELECT pgshadow.enable_writes()");
    clear_log(t->c);
    itest_expect_sql(t->c, "SELECT capture_enabled || ' ' || migration_status "
                       "FROM public.shadow_migration_dashboard, public.migration_success_metrics",
                 "true READY_FOR_CUTOVER");
    /* a quarantined row is not in the shadow: not ready */
    itest_exec_ok(t->c, "INSERT INTO pgshadow.quarantine (table_id, key, sqlstate, message) "
                  "SELECT table_id, '{8}', '23514', 'check' FROM pgshadow.tables");
    itest_expect_sql(t->c, "SELECT migration_status || ' ' || total_quarantined FROM public.migration_success_metrics",
                 "MONITORING_REQUIRED 1");
    itest_exec_ok(t->c, "DELETE FROM pgshadow.quarantine");
    itest_exec_ok(t->c, "UPDATE pgshadow.tables SET shadow_rows = 970");
    itest_expect_sql(t->c, "SELECT migration_status FROM public.migration_success_metrics", "MONITORING_REQUIRED");
    itest_exec_ok(t->c, "UPDATE pgshadow.tables SET shadow_rows = 1003, diverged_rows = 6");
    itest_expect_sql(t->c, "SELECT migration_status || ' ' || total_diverged_records FROM public.migration_success_metrics",
                 "MONITORING_REQUIRED 6");
    itest_exec_ok(t->c, "UPDATE pgshadow.tables SET shadow_rows = 900, diverged_rows = 0");
    itest_expect_sql(t->c, "SELECT migration_status FROM public.migration_success_metrics", "ROLLBACK_RECOMMENDED");
    /* a quarantined row shows */
    itest_exec_ok(t->c, "UPDATE pgshadow.tables SET shadow_rows = 1003; INSERT INTO pgshadow.quarantine (table_id, key, sqlstate, message) "
                  "SELECT table_id, '{7}', '23514', 'check' FROM pgshadow.tables");
    itest_expect_sql(t->c, "SELECT quarantined_count || ' ' || status FROM public.shadow_migration_dashboard", "1 quarantine");
    /* pending is capped: a huge backlog does not make a poll slow */
    itest_exec_ok(t->c, "INSERT INTO pgshadow.change_log (table_id, op, key) SELECT table_id, 'U', ARRAY[g::text] "
                  "FROM pgshadow.tables, generate_series(1, 100010) g");
    itest_expect_sql(t->c, "SELECT pending_changes FROM public.shadow_migration_dashboard", "10001");
    /* the plan: no scan of the primary or the shadow table */
    PGresult *r = PQexec(t->c, "EXPLAIN SELECT * FROM public.shadow_migration_dashboard");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    for (int i = 0; i < PQntuples(r); i++) {
        const char *line = PQgetvalue(r, i, 0);
        assert_null(strstr(line, " on dash "));
        assert_null(strstr(line, " on dash_shadow"));
    }
    PQclear(r);
}

/* ---- grants ---------------------------------------------------------------- */

static void as_role(PGconn *c, const char *role)
{
    char sql[256];
    snprintf(sql, sizeof sql, "RESET ROLE; SET ROLE %s", role);
    itest_exec_ok(c, sql);
}

static void test_grants(void **state)
{
    itest_db *t = *state;
    itest_exec_ok(t->c, "CREATE SCHEMA app; CREATE TABLE app.g (id int PRIMARY KEY, v text); INSERT INTO app.g VALUES (1, 'a')");
    install_ok(t->c, "", "SELECT pgshadow.register_table('app', 'g', NULL, '_shadow', 'm1', '{}');");
    /* LOGIN roles that are members of each pgshadow role (cluster-wide: kept) */
    itest_exec_ok(t->c,
            "DO $$ BEGIN "
            "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgshadow_t_viewer') THEN "
            "  CREATE ROLE pgshadow_t_viewer LOGIN IN ROLE pgshadow_viewer; END IF; "
            "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgshadow_t_operator') THEN "
            "  CREATE ROLE pgshadow_t_operator LOGIN IN ROLE pgshadow_operator; END IF; "
            "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgshadow_t_daemon') THEN "
            "  CREATE ROLE pgshadow_t_daemon LOGIN IN ROLE pgshadow_daemon; END IF; "
            "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgshadow_t_app') THEN "
            "  CREATE ROLE pgshadow_t_app LOGIN; END IF; "
            "END $$");
    itest_exec_ok(t->c, "INSERT INTO app.g VALUES (2, 'b')");

    /* viewer: reads status, writes nothing */
    as_role(t->c, "pgshadow_t_viewer");
    itest_expect_sql(t->c, "SELECT table_name FROM public.shadow_migration_dashboard", "g");
    itest_expect_sql(t->c, "SELECT migration_status IS NOT NULL FROM public.migration_success_metrics", "t");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.events", "2");
    expect_error(t->c, "SELECT pgshadow.enqueue_command('pause')", "permission denied", NULL);
    expect_error(t->c, "INSERT INTO pgshadow.commands (command) VALUES ('pause')", "permission denied", NULL);
    expect_error(t->c, "SELECT pgshadow.disable_writes()", "permission denied", NULL);
    expect_error(t->c, "SELECT * FROM pgshadow.change_log", "permission denied", NULL);
    expect_error(t->c, "SELECT * FROM app.g", "permission denied", NULL);

    /* operator: enqueues commands, switches flags through functions only */
    as_role(t->c, "pgshadow_t_operator");
    itest_expect_sql(t->c, "SELECT pgshadow.enqueue_command('pause', '{\"why\": \"test\"}') > 0", "t");
    itest_exec_ok(t->c, "INSERT INTO pgshadow.commands (command) VALUES ('resume')");
    itest_expect_sql(t->c, "SELECT string_agg(command || ':' || requested_by, ' ' ORDER BY command_id) FROM pgshadow.commands",
                 "pause:postgres resume:postgres");
    itest_exec_ok(t->c, "SELECT pgshadow.disable_writes('g'); SELECT pgshadow.enable_writes('g')");
    expect_error(t->c, "INSERT INTO pgshadow.commands (command, requested_by) VALUES ('pause', 'someone')",
                 "permission denied", NULL);
    expect_error(t->c, "UPDATE pgshadow.flags SET value = 'off'", "permission denied", NULL);
    expect_error(t->c, "UPDATE pgshadow.cutover SET percent = 100", "permission denied", NULL);
    /* reads move only through the command queue (and its gates) */
    expect_error(t->c, "SELECT pgshadow.set_read_percent('g', 100)", "permission denied", NULL);
    expect_error(t->c, "DELETE FROM pgshadow.change_log", "permission denied", NULL);
    expect_error(t->c, "SELECT * FROM app.g", "permission denied", NULL);

    /* daemon: consumes the log and keeps state; it touches the primary and
     * the shadow only through apply_batch / backfill_step, which run those
     * statements as the tables' owner (docs/database.md "Trust") */
    as_role(t->c, "pgshadow_t_daemon");
    expect_error(t->c, "SELECT count(*) FROM app.g", "permission denied", NULL);
    expect_error(t->c, "INSERT INTO app.g_shadow (id, v) VALUES (7, 'x')", "permission denied", NULL);
    expect_error(t->c, "DELETE FROM app.g_shadow", "permission denied", NULL);
    expect_error(t->c, "TRUNCATE app.g_shadow", "permission denied", NULL);
    itest_expect_sql(t->c, "WITH b AS (SELECT table_id, seq FROM pgshadow.change_log ORDER BY table_id, seq LIMIT 10) "
                       ", del AS (DELETE FROM pgshadow.change_log l USING b "
                       "WHERE l.table_id = b.table_id AND l.seq = b.seq RETURNING 1) SELECT count(*) FROM del", "2");
    itest_exec_ok(t->c, "UPDATE pgshadow.tables SET backfill_state = 'done', primary_rows = 2, shadow_rows = 1");
    /* the cutover row moves only through cutover_write: state, every
     * table's flag and the event in one transaction, under a rev check */
    expect_error(t->c, "UPDATE pgshadow.cutover SET stage = 1, percent = 1", "permission denied", NULL);
    itest_expect_sql(t->c, "SELECT pgshadow.cutover_write('m1', (SELECT rev FROM pgshadow.cutover WHERE migration_id = 'm1'), "
                       "'{\"status\": \"running\", \"stage\": 1, \"percent\": 1, \"hold_earned_ms\": 0, "
                       "\"hold_extra_ms\": 0, \"failures\": 0, \"last_good\": 0}', NULL, 'start', 'test') > 0", "t");
    expect_error(t->c, "SELECT pgshadow.cutover_write('m1', 0, '{}')", "changed while this was decided", NULL);
    itest_expect_sql(t->c, "SELECT stage || ':' || percent FROM pgshadow.cutover WHERE migration_id = 'm1'", "1:1");
    itest_exec_ok(t->c, "INSERT INTO pgshadow.events (what, why) VALUES ('stage', 'test')");
    itest_exec_ok(t->c, "INSERT INTO pgshadow.quarantine (table_id, key, sqlstate, message) SELECT table_id, '{2}', '23505', 'dup' "
                  "FROM pgshadow.tables");
    itest_exec_ok(t->c, "UPDATE pgshadow.commands SET state = 'done', finished_at = now()");
    /* ...but not what is pasted into SQL run as the owner, nor who asked
     * for what, nor who did it */
    expect_error(t->c, "UPDATE pgshadow.tables SET hash_expr = 'pg_catalog.now()::text'", "permission denied", NULL);
    expect_error(t->c, "UPDATE pgshadow.tables SET column_map = '[]'", "permission denied", NULL);
    expect_error(t->c, "UPDATE pgshadow.tables SET shadow_name = 'x'", "permission denied", NULL);
    expect_error(t->c, "UPDATE pgshadow.commands SET requested_by = 'someone'", "permission denied", NULL);
    expect_error(t->c, "UPDATE pgshadow.commands SET command = 'abort'", "permission denied", NULL);
    expect_error(t->c, "INSERT INTO pgshadow.events (who, what) VALUES ('someone', 'x')", "permission denied", NULL);
    itest_expect_sql(t->c, "SELECT who FROM pgshadow.events WHERE what = 'stage'", "postgres");
    itest_exec_ok(t->c, "SELECT pgshadow.set_read_percent('g', 1)");
    itest_expect_sql(t->c, "SELECT count(*) FROM public.shadow_migration_dashboard", "1");
    expect_error(t->c, "INSERT INTO app.g VALUES (3, 'c')", "permission denied", NULL);
    expect_error(t->c, "UPDATE app.g SET v = 'x'", "permission denied", NULL);
    expect_error(t->c, "DROP TABLE app.g_shadow", "permission denied for schema app", NULL);
    expect_error(t->c, "INSERT INTO pgshadow.change_log (table_id, op, key) VALUES (1, 'I', '{9}')", "permission denied", NULL);
    expect_error(t->c, "SELECT pgshadow.enqueue_command('pause')", "permission denied", NULL);
    expect_error(t->c, "SELECT pgshadow.register_table('app', 'g', NULL, '_shadow', 'm1', '{}')", "permission denied", NULL);
    expect_error(t->c, "DELETE FROM pgshadow.events", "permission denied", NULL);

    /* an application role: reads flags and routes, nothing else */
    as_role(t->c, "pgshadow_t_app");
    itest_expect_sql(t->c, "SELECT pgshadow.read_percent('g')", "1");
    itest_expect_sql(t->c, "SELECT value FROM pgshadow.flags WHERE name = 'shadow_writes_g'", "on");
    itest_expect_sql(t->c, "SELECT pgshadow.read_from_shadow('g', '1') IS NOT NULL", "t");
    expect_error(t->c, "SELECT * FROM public.shadow_migration_dashboard", "permission denied", NULL);
    expect_error(t->c, "SELECT pgshadow.disable_writes()", "permission denied", NULL);
    itest_exec_ok(t->c, "RESET ROLE");
}

/* ---- uninstall and the catalog ------------------------------------------ */

static void test_uninstall_restores_catalog(void **state)
{
    itest_db *t = *state;
    itest_exec_ok(t->c,
            "CREATE SCHEMA app;"
            "CREATE TABLE app.parent (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text UNIQUE,"
            "  n int CHECK (n > 0), twice int GENERATED ALWAYS AS (n * 2) STORED);"
            "CREATE TABLE app.child (id serial PRIMARY KEY, parent_id bigint REFERENCES app.parent ON DELETE CASCADE,"
            "  tags text[] DEFAULT '{}');"
            "CREATE INDEX ON app.child (parent_id);"
            "CREATE TABLE public.ev (id int, d date, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);"
            "CREATE TABLE public.ev_a PARTITION OF public.ev FOR VALUES FROM ('2020-01-01') TO ('2030-01-01');"
            "CREATE TABLE public.\"Odd Name\" (\"K\" text PRIMARY KEY);"
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgshadow_t_reader') THEN "
            "  CREATE ROLE pgshadow_t_reader NOLOGIN; END IF; END $$;"
            "GRANT USAGE ON SCHEMA app TO pgshadow_t_reader; GRANT SELECT ON app.parent TO pgshadow_t_reader;");
    char *before = itest_schema_dump(t->name, false);
    install_ok(t->c, "",
               "SELECT pgshadow.register_table('app', 'parent', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('app', 'child', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'ev', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'Odd Name', NULL, '_shadow', 'm1', '{}');");
    /* install mirrored the foreign key between the two created shadows */
    itest_expect_sql(t->c, "SELECT confrelid::regclass FROM pg_constraint WHERE conrelid = 'app.child_shadow'::regclass "
                       "AND contype = 'f'", "app.parent_shadow");
    /* the identity column is a plain column in the shadow: the daemon writes ids */
    itest_expect_sql(t->c, "SELECT attidentity FROM pg_attribute WHERE attrelid = 'app.parent_shadow'::regclass "
                       "AND attname = 'id'", "");
    itest_exec_ok(t->c, "INSERT INTO app.parent_shadow (id, name, n) VALUES (42, 'x', 1)");
    /* install twice is a refresh */
    install_ok(t->c, "",
               "SELECT pgshadow.register_table('app', 'parent', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('app', 'child', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'ev', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'Odd Name', NULL, '_shadow', 'm1', '{}');");
    itest_exec_ok(t->c, "INSERT INTO app.parent (name, n) VALUES ('a', 1); INSERT INTO app.child (parent_id) VALUES (1)");
    char *during = itest_schema_dump(t->name, false);
    assert_string_not_equal(before, during);
    uninstall(t->c, true);
    char *after = itest_schema_dump(t->name, false);
    if (strcmp(before, after) != 0) {
        FILE *f = fopen("test-capture.before.sql", "w");
        if (f) { fputs(before, f); fclose(f); }
        f = fopen("test-capture.after.sql", "w");
        if (f) { fputs(after, f); fclose(f); }
        fprintf(stderr, "schema dump differs after uninstall: see test-capture.{before,after}.sql\n");
    }
    assert_string_equal(before, after);
    free(before);
    free(during);
    free(after);
    itest_exec_ok(t->c, "DROP OWNED BY pgshadow_t_reader; DROP ROLE pgshadow_t_reader");
}

static void test_uninstall_keep_shadow(void **state)
{
    itest_db *t = *state;
    itest_exec_ok(t->c, "CREATE TABLE k (id int PRIMARY KEY)");
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'k', NULL, '_shadow', 'm1', '{}');");
    uninstall(t->c, false);
    itest_expect_sql(t->c, "SELECT to_regclass('k_shadow') IS NOT NULL AND to_regnamespace('pgshadow') IS NULL "
                       "AND to_regclass('public.shadow_migration_dashboard') IS NULL", "t");
    itest_expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'k'::regclass", "0");
    itest_exec_ok(t->c, "INSERT INTO k VALUES (1)");
}


/* ---- uninstall refuses to take user objects with it ---------------------- */

static void uninstall_expect_error(PGconn *c, const char *want1, const char *want2)
{
    char *tail = itest_read_sql("uninstall.sql");
    size_t len = strlen(tail) + 256;
    char *script = malloc(len);
    snprintf(script, len, "BEGIN;\nSET LOCAL lock_timeout = '200ms';\nSELECT pgshadow.uninstall(true);\n%sCOMMIT;\n", tail);
    expect_error(c, script, want1, want2, NULL);
    itest_exec_ok(c, "ROLLBACK");
    free(script);
    free(tail);
}

static void test_uninstall_refuses_dependents(void **state)
{
    itest_db *t = *state;
    itest_exec_ok(t->c, "CREATE TABLE u (id int PRIMARY KEY, v text)");
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'u', NULL, '_shadow', 'm1', '{}');");
    itest_exec_ok(t->c, "CREATE VIEW routed AS SELECT id, pgshadow.read_from_shadow('u', id::text) AS s FROM u;"
                  "CREATE TABLE cfg (id int PRIMARY KEY, pct int DEFAULT pgshadow.read_percent('u'));"
                  "CREATE VIEW myflags AS SELECT name FROM pgshadow.flags");
    uninstall_expect_error(t->c, "uninstall refused: 3 object(s) outside pgshadow depend on it", NULL);
    uninstall_expect_error(t->c, "view public.routed (uses function pgshadow.read_from_shadow(text,text))",
                           "default value for column pct of table public.cfg (uses function pgshadow.read_percent(text))");
    uninstall_expect_error(t->c, "view public.myflags (uses table pgshadow.flags)", NULL);
    /* nothing changed */
    itest_expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'u'::regclass", "2");
    itest_expect_sql(t->c, "SELECT to_regclass('u_shadow') IS NOT NULL AND to_regclass('routed') IS NOT NULL", "t");
    itest_exec_ok(t->c, "DROP VIEW routed, myflags; ALTER TABLE cfg ALTER COLUMN pct DROP DEFAULT");
    uninstall(t->c, true);
    itest_expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL AND to_regclass('cfg') IS NOT NULL", "t");
}

/* ---- the dashboard views: only pgshadow's own are replaced or dropped ------ */

static void test_foreign_dashboard_view(void **state)
{
    itest_db *t = *state;
    char err[8192];
    itest_exec_ok(t->c, "CREATE TABLE w (id int PRIMARY KEY);"
                  "CREATE VIEW public.shadow_migration_dashboard AS SELECT 'seed'::text AS table_name");
    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'w', NULL, '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "public.shadow_migration_dashboard already exists and was not created by pgshadow"));
    itest_expect_sql(t->c, "SELECT table_name FROM public.shadow_migration_dashboard", "seed");
    itest_exec_ok(t->c, "DROP VIEW public.shadow_migration_dashboard");
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'w', NULL, '_shadow', 'm1', '{}');");
    itest_expect_sql(t->c, "SELECT string_agg(key, ' ' ORDER BY key) FROM pgshadow.meta WHERE key LIKE 'created_view:%'",
                 "created_view:public.migration_success_metrics created_view:public.shadow_migration_dashboard");
    /* a refresh replaces its own views */
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'w', NULL, '_shadow', 'm1', '{}');");
    uninstall(t->c, true);
    itest_expect_sql(t->c, "SELECT to_regclass('public.shadow_migration_dashboard') IS NULL "
                       "AND to_regclass('public.migration_success_metrics') IS NULL", "t");
}

/* ---- partitions: ATTACH / DETACH, and uninstall after a detach ------------ */

static void test_partition_attach_detach(void **state)
{
    itest_db *t = *state;
    itest_exec_ok(t->c, "CREATE TABLE pe (id int, d date, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);"
                  "CREATE TABLE pe_2020 PARTITION OF pe FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');"
                  "CREATE TABLE pe_2021 (id int NOT NULL, d date NOT NULL, PRIMARY KEY (id, d));"
                  "INSERT INTO pe_2021 VALUES (1, '2021-06-01'), (2, '2021-07-01')");
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'pe', NULL, '_shadow', 'm1', '{}');");
    itest_expect_sql(t->c, "SELECT count(*) FROM pg_event_trigger WHERE evtname = 'pgshadow_partition_ddl'", "1");
    itest_expect_sql(t->c, LOG_SQL, "");
    /* attach: rows arrive with no row trigger firing -> full resync */
    itest_exec_ok(t->c, "ALTER TABLE pe ATTACH PARTITION pe_2021 FOR VALUES FROM ('2021-01-01') TO ('2022-01-01')");
    itest_expect_sql(t->c, LOG_SQL, "pe:T:-");
    itest_expect_sql(t->c, "SELECT string_agg(tgname || ':' || tgenabled::text, ' ' ORDER BY tgname) FROM pg_trigger "
                       "WHERE tgrelid = 'pe_2021'::regclass", "pgshadow_capture:A pgshadow_capture_truncate:A");
    clear_log(t->c);
    itest_exec_ok(t->c, "TRUNCATE pe_2021");
    itest_expect_sql(t->c, LOG_SQL, "pe:T:-");
    clear_log(t->c);
    /* a new, empty partition: triggers, but nothing moved */
    itest_exec_ok(t->c, "CREATE TABLE pe_2022 PARTITION OF pe FOR VALUES FROM ('2022-01-01') TO ('2023-01-01')");
    itest_expect_sql(t->c, LOG_SQL, "");
    itest_expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'pe_2022'::regclass "
                       "AND tgname = 'pgshadow_capture_truncate'", "1");
    /* detach: rows leave -> full resync; the detached table keeps nothing */
    itest_exec_ok(t->c, "INSERT INTO pe VALUES (3, '2020-03-01')");
    clear_log(t->c);
    itest_exec_ok(t->c, "ALTER TABLE pe DETACH PARTITION pe_2020");
    itest_expect_sql(t->c, LOG_SQL, "pe:T:-");
    itest_expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'pe_2020'::regclass", "0");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.events WHERE what = 'resync'", "2");
    /* a detach the event trigger did not see (disabled here): uninstall still
     * removes every pgshadow trigger, wherever it is */
    itest_exec_ok(t->c, "ALTER EVENT TRIGGER pgshadow_partition_ddl DISABLE");
    itest_exec_ok(t->c, "ALTER TABLE pe DETACH PARTITION pe_2022");
    itest_expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'pe_2022'::regclass", "1");
    uninstall(t->c, true);
    itest_expect_sql(t->c, "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                       "WHERE c.relname LIKE 'pe%' AND NOT t.tgisinternal", "0");
    itest_expect_sql(t->c, "SELECT count(*) FROM pg_event_trigger", "0");
    itest_exec_ok(t->c, "TRUNCATE pe_2022; TRUNCATE pe_2020");
}

/* ---- install: no downgrade; tables dropped from the config ---------------- */

static void test_install_version_and_unregister(void **state)
{
    itest_db *t = *state;
    char err[8192];
    itest_exec_ok(t->c, "CREATE TABLE ka (id int PRIMARY KEY); CREATE TABLE kb (id int PRIMARY KEY)");
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'ka', NULL, '_shadow', 'm1', '{}');"
                         "SELECT pgshadow.register_table('public', 'kb', NULL, '_shadow', 'm1', '{}');");
    itest_exec_ok(t->c, "INSERT INTO kb VALUES (1)");
    /* kb left the config: capture goes, its shadow stays, and it is said */
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'ka', NULL, '_shadow', 'm1', '{}');");
    itest_expect_sql(t->c, "SELECT string_agg(table_name, ' ') FROM pgshadow.tables", "ka");
    itest_expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'kb'::regclass", "0");
    itest_expect_sql(t->c, "SELECT to_regclass('kb_shadow') IS NOT NULL AND to_regprocedure('pgshadow.capture_2()') IS NULL", "t");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.change_log", "0");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.flags WHERE name LIKE '%kb'", "0");
    itest_expect_sql(t->c, "SELECT table_name || ' ' || what FROM pgshadow.events WHERE what = 'unregister_table'",
                 "kb unregister_table");
    itest_exec_ok(t->c, "INSERT INTO kb VALUES (2); INSERT INTO ka VALUES (2)");
    itest_expect_sql(t->c, LOG_SQL, "ka:I:2");
    /* a newer schema version is never downgraded */
    itest_exec_ok(t->c, "UPDATE pgshadow.meta SET value = '2' WHERE key = 'schema_version'");
    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'ka', NULL, '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "the database has pgshadow schema version 2, newer than this release's 1"));
    itest_expect_sql(t->c, "SELECT value FROM pgshadow.meta WHERE key = 'schema_version'", "2");
}

static void test_aidis_example(void **state)
{
    itest_db *t = *state;
    char *ex = itest_read_sql("example-aidis.sql");
    itest_exec_ok(t->c, ex);
    itest_exec_ok(t->c, ex); /* idempotent */
    free(ex);
    install_ok(t->c, "",
               "SELECT pgshadow.register_table('public', 'projects', NULL, '_shadow', 'p2_3_shadow_migration', '{}');"
               "SELECT pgshadow.register_table('public', 'sessions', NULL, '_shadow', 'p2_3_shadow_migration', '{}');"
               "SELECT pgshadow.register_table('public', 'contexts', NULL, '_shadow', 'p2_3_shadow_migration', '{}');"
               "SELECT pgshadow.register_table('public', 'analytics_events', NULL, '_shadow', 'p2_3_shadow_migration', '{}');"
               "SELECT pgshadow.register_table('public', 'tasks', NULL, '_shadow', 'p2_3_shadow_migration', '{}');");
    itest_expect_sql(t->c, "SELECT count(*) FILTER (WHERE NOT shadow_created) FROM pgshadow.tables", "5");
    itest_exec_ok(t->c,
            "INSERT INTO projects (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'aidis');"
            "INSERT INTO sessions (id, project_id, agent_type) VALUES "
            "  ('00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000001', 'claude');"
            "INSERT INTO contexts (id, project_id, session_id, context_type, content, tags) VALUES "
            "  ('00000000-0000-0000-0000-000000000003', '00000000-0000-0000-0000-000000000001',"
            "   '00000000-0000-0000-0000-000000000002', 'code', 'hello', '{a,b}');"
            "INSERT INTO analytics_events (event_id, actor, event_type, context_id) VALUES "
            "  ('00000000-0000-0000-0000-000000000004', 'me', 'x', '00000000-0000-0000-0000-000000000003');"
            "INSERT INTO tasks (id, project_id, title, type) VALUES "
            "  ('00000000-0000-0000-0000-000000000005', '00000000-0000-0000-0000-000000000001', 't', 'bug');"
            "DELETE FROM projects;"); /* cascades: tasks, contexts (SET NULL on sessions/events) */
    itest_expect_sql(t->c,
                 "SELECT string_agg(DISTINCT t.table_name || ':' || l.op || ':' || right(l.key[1], 1), ' ') "
                 "FROM pgshadow.change_log l JOIN pgshadow.tables t USING (table_id)",
                 "analytics_events:I:4 analytics_events:U:4 contexts:D:3 contexts:I:3 projects:D:1 projects:I:1 "
                 "sessions:I:2 sessions:U:2 tasks:D:5 tasks:I:5");
    itest_expect_sql(t->c, "SELECT count(*) FROM public.shadow_migration_dashboard", "5");
    uninstall(t->c, false);
    itest_expect_sql(t->c, "SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_shadow' AND relkind = 'r'", "5");
}

int main(void)
{
    static const char *const env[] = {"PGSHADOW_TEST_CONNINFO", "PGSHADOW_SRCDIR",
                                      "PGSHADOW_TEST_PGBIN", NULL};
    if (!itest_require_env("itest-capture", env))
        return 1; /* fail loudly when there is no cluster */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_routing_vectors, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_read_from_shadow, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_capture_row, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_capture_statement_dml, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_partitioned, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_awkward_identifiers, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_disable_writes, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_composite_and_mapping, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_dashboard, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_grants, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_uninstall_restores_catalog, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_uninstall_keep_shadow, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_aidis_example, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_uninstall_refuses_dependents, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_foreign_dashboard_view, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_partition_attach_detach, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_install_version_and_unregister, db_setup, db_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
