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

static const char *base_conninfo(void)
{
    const char *ci = getenv("PGSHADOW_TEST_CONNINFO");
    if (!ci || !*ci) {
        fprintf(stderr, "PGSHADOW_TEST_CONNINFO is not set: start a cluster with "
                        "tests/harness/pgcluster.sh and export its variables\n");
        fail();
    }
    return ci;
}

static char *read_sql(const char *name)
{
    const char *src = getenv("PGSHADOW_SRCDIR");
    if (!src) {
        fprintf(stderr, "PGSHADOW_SRCDIR is not set\n");
        fail();
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/sql/%s", src, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        fail();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void quiet(void *arg, const PGresult *res) { (void)arg; (void)res; }

static PGconn *connect_db(const char *dbname)
{
    const char *keys[] = {"dbname", "dbname", NULL};
    const char *vals[] = {base_conninfo(), dbname, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "connect to %s: %s", dbname ? dbname : "(base)", PQerrorMessage(c));
        fail();
    }
    PQsetNoticeReceiver(c, quiet, NULL);
    return c;
}

/* Run SQL that must succeed; returns the first value of the last result
 * (malloc'd, "" when none, "<NULL>" for SQL NULL). */
static char *q(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "SQL failed: %s\n--- %s\n", PQresultErrorMessage(r), sql);
        PQclear(r);
        fail();
    }
    char *out;
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0)
        out = strdup(PQgetisnull(r, 0, 0) ? "<NULL>" : PQgetvalue(r, 0, 0));
    else
        out = strdup("");
    PQclear(r);
    return out;
}

static void exec_ok(PGconn *c, const char *sql) { free(q(c, sql)); }

static void expect_sql(PGconn *c, const char *sql, const char *want)
{
    char *got = q(c, sql);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "query: %s\n  want: %s\n  got:  %s\n", sql, want, got);
    assert_string_equal(got, want);
    free(got);
}

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

typedef struct {
    char name[64];
    PGconn *c;
} testdb;

static int db_setup(void **state)
{
    static int n;
    testdb *t = calloc(1, sizeof *t);
    snprintf(t->name, sizeof t->name, "pgshadow_capture_%d_%d", (int)getpid(), ++n);
    PGconn *admin = connect_db(NULL);
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", t->name);
    exec_ok(admin, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", t->name);
    exec_ok(admin, sql);
    PQfinish(admin);
    t->c = connect_db(t->name);
    *state = t;
    return 0;
}

static int db_teardown(void **state)
{
    testdb *t = *state;
    PQfinish(t->c);
    PGconn *admin = connect_db(NULL);
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", t->name);
    exec_ok(admin, sql);
    PQfinish(admin);
    free(t);
    return 0;
}

/* The install transaction as pgshadowctl builds it: BEGIN, lock_timeout,
 * the schema file, `pre` (e.g. a capture_mode change), the register_table
 * calls, finish_install, COMMIT. Returns the PGresult status. */
static bool install(PGconn *c, const char *pre, const char *registers, char *err, size_t errlen)
{
    char *schema = read_sql("pgshadow--1.sql");
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
        exec_ok(c, "ROLLBACK");
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
    char *tail = read_sql("uninstall.sql");
    size_t len = strlen(tail) + 256;
    char *script = malloc(len);
    snprintf(script, len, "BEGIN;\nSET LOCAL lock_timeout = '200ms';\nSELECT pgshadow.uninstall(%s);\n%sCOMMIT;\n",
             drop_shadow ? "true" : "false", tail);
    exec_ok(c, script);
    free(script);
    free(tail);
}

/* The change log as "table:op:key1,key2 ..." in seq order. */
#define LOG_SQL                                                                                   \
    "SELECT coalesce(string_agg(t.table_name || ':' || l.op || ':' || coalesce(array_to_string(l.key, ',', 'NULL'), '-'), " \
    "' ' ORDER BY l.seq), '') FROM pgshadow.change_log l JOIN pgshadow.tables t USING (table_id)"

static void clear_log(PGconn *c) { exec_ok(c, "DELETE FROM pgshadow.change_log"); }

/* ---- routing ------------------------------------------------------------- */

static void test_routing_vectors(void **state)
{
    testdb *t = *state;
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
    expect_sql(t->c, "SELECT to_hex(pgshadow.murmur3_32('\\x68656c6c6f'::bytea, 0))", "248bfa47");
    /* unknown table: 0 percent, primary */
    expect_sql(t->c, "SELECT pgshadow.read_percent('nope')", "0");
    expect_sql(t->c, "SELECT pgshadow.read_from_shadow('nope', '1')", "f");
}

static void test_read_from_shadow(void **state)
{
    testdb *t = *state;
    exec_ok(t->c, "CREATE TABLE contexts (id int PRIMARY KEY, v text); "
                  "CREATE TABLE \"Weird \"\"Table\"\"\" (k text PRIMARY KEY)");
    install_ok(t->c, "",
               "SELECT pgshadow.register_table('public', 'contexts', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'Weird \"Table\"', NULL, '_shadow', 'm1', '{}');");
    /* 0% after install: everything on the primary */
    expect_sql(t->c, "SELECT pgshadow.read_percent('contexts')", "0");
    expect_sql(t->c, "SELECT pgshadow.read_from_shadow('contexts', '1')", "f");
    /* contexts:1 has bucket 48, contexts:42 bucket 29 */
    exec_ok(t->c, "SELECT pgshadow.set_read_percent('contexts', 29)");
    expect_sql(t->c, "SELECT pgshadow.read_from_shadow('contexts', '42')", "t");
    expect_sql(t->c, "SELECT pgshadow.read_from_shadow('contexts', '1')", "f");
    exec_ok(t->c, "SELECT pgshadow.set_read_percent('contexts', 48)");
    expect_sql(t->c, "SELECT pgshadow.read_from_shadow('contexts', '1')", "t");
    expect_sql(t->c, "SELECT pgshadow.read_from_shadow('contexts', NULL)", "f");
    exec_ok(t->c, "SELECT pgshadow.set_read_percent('Weird \"Table\"', 94)");
    expect_sql(t->c, "SELECT pgshadow.read_from_shadow('Weird \"Table\"', 'key with spaces')", "t");
    exec_ok(t->c, "SELECT pgshadow.set_read_percent('Weird \"Table\"', 93)");
    expect_sql(t->c, "SELECT pgshadow.read_from_shadow('Weird \"Table\"', 'key with spaces')", "f");
    /* the flag is readable by applications and the change is in the event log */
    expect_sql(t->c, "SELECT value FROM pgshadow.flags WHERE name = 'read_from_shadow_contexts'", "48");
    expect_sql(t->c, "SELECT count(*) FROM pgshadow.events WHERE what = 'flag'", "4");
    expect_error(t->c, "SELECT pgshadow.set_read_percent('contexts', 101)", "0..100", NULL);
    expect_error(t->c, "SELECT pgshadow.set_read_percent('nope', 5)", "\"nope\" is not registered", NULL);
}

/* ---- capture ------------------------------------------------------------- */

static void capture_dml(testdb *t, const char *mode)
{
    char pre[256];
    snprintf(pre, sizeof pre, "UPDATE pgshadow.meta SET value = '%s' WHERE key = 'capture_mode';", mode);
    exec_ok(t->c, "CREATE TABLE t (id int PRIMARY KEY, v text, n int UNIQUE)");
    install_ok(t->c, pre, "SELECT pgshadow.register_table('public', 't', NULL, '_shadow', 'm1', '{}');");
    char want_mode[64];
    snprintf(want_mode, sizeof want_mode, "%s", mode);
    expect_sql(t->c, "SELECT capture_mode FROM pgshadow.tables", want_mode);
    /* every trigger on t fires ALWAYS */
    expect_sql(t->c, "SELECT bool_and(tgenabled = 'A') AND count(*) > 0 FROM pg_trigger WHERE tgrelid = 't'::regclass", "t");

    bool row = strcmp(mode, "row") == 0;
    exec_ok(t->c, "INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20)");
    expect_sql(t->c, LOG_SQL, "t:I:1 t:I:2");
    clear_log(t->c);

    exec_ok(t->c, "UPDATE t SET v = 'x' WHERE id = 2");
    expect_sql(t->c, LOG_SQL, "t:U:2");
    clear_log(t->c);

    /* key-changing update: old and new key */
    exec_ok(t->c, "UPDATE t SET id = 3 WHERE id = 1");
    expect_sql(t->c, LOG_SQL, row ? "t:D:1 t:I:3" : "t:U:1 t:U:3");
    clear_log(t->c);

    exec_ok(t->c, "DELETE FROM t WHERE id = 2");
    expect_sql(t->c, LOG_SQL, "t:D:2");
    clear_log(t->c);

    /* ON CONFLICT DO UPDATE: one new row, one updated row */
    exec_ok(t->c, "INSERT INTO t VALUES (3, 'c', 30), (4, 'd', 40) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v");
    expect_sql(t->c, "SELECT string_agg(op || ':' || key[1], ' ' ORDER BY key[1], op) FROM pgshadow.change_log",
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
    expect_sql(t->c, LOG_SQL, "t:I:5 t:I:6");
    clear_log(t->c);

    /* writes under session_replication_role = replica are captured too */
    exec_ok(t->c, "SET session_replication_role = replica");
    exec_ok(t->c, "INSERT INTO t VALUES (7, 'g', 70)");
    exec_ok(t->c, "RESET session_replication_role");
    expect_sql(t->c, LOG_SQL, "t:I:7");
    clear_log(t->c);

    /* a statement that touches no row logs nothing */
    exec_ok(t->c, "UPDATE t SET v = 'z' WHERE id = 999");
    expect_sql(t->c, "SELECT count(*) FROM pgshadow.change_log", "0");

    exec_ok(t->c, "TRUNCATE t");
    expect_sql(t->c, LOG_SQL, "t:T:-");
    clear_log(t->c);

    /* the shadow was created with the key, the tracking columns, the unique index */
    expect_sql(t->c, "SELECT count(*) FROM pg_attribute WHERE attrelid = 't_shadow'::regclass "
                       "AND attname LIKE '\\_shadow\\_%' AND NOT attisdropped", "7");
    expect_sql(t->c, "SELECT count(*) FROM pg_index WHERE indrelid = 't_shadow'::regclass AND indisunique", "2");
}

static void test_capture_row(void **state)
{
    testdb *t = *state;
    capture_dml(t, "row");
}

/* Statement mode: transition tables; a key-changing UPDATE logs 'U' for the old and the new key. */
static void test_capture_statement_dml(void **state)
{
    testdb *t = *state;
    capture_dml(t, "statement");
}

static void test_partitioned(void **state)
{
    testdb *t = *state;
    exec_ok(t->c,
            "CREATE SCHEMA app;"
            "CREATE TABLE app.ev (id int, d date, v text, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);"
            "CREATE TABLE app.ev_2020 PARTITION OF app.ev FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');"
            "CREATE TABLE app.ev_2021 PARTITION OF app.ev FOR VALUES FROM ('2021-01-01') TO ('2022-01-01');");
    /* statement mode is asked for, but a partitioned table falls back to row
     * triggers: statement triggers on the root miss direct partition writes */
    install_ok(t->c, "UPDATE pgshadow.meta SET value = 'statement' WHERE key = 'capture_mode';",
               "SELECT pgshadow.register_table('app', 'ev', NULL, '_shadow', 'm1', '{}');");
    expect_sql(t->c, "SELECT capture_mode FROM pgshadow.tables", "row");
    expect_sql(t->c, "SELECT relkind FROM pg_class WHERE oid = 'app.ev_shadow'::regclass", "r");
    /* cloned row triggers on the partitions fire ALWAYS too */
    expect_sql(t->c, "SELECT string_agg(tgrelid::regclass || '=' || tgenabled::text, ' ' ORDER BY tgrelid::regclass::text) "
                       "FROM pg_trigger WHERE tgname = 'pgshadow_capture'",
                 "app.ev=A app.ev_2020=A app.ev_2021=A");

    exec_ok(t->c, "INSERT INTO app.ev VALUES (1, '2020-05-01', 'a')");
    exec_ok(t->c, "INSERT INTO app.ev_2021 VALUES (2, '2021-05-01', 'b')");      /* directly into a partition */
    exec_ok(t->c, "UPDATE app.ev_2021 SET v = 'c' WHERE id = 2");
    exec_ok(t->c, "UPDATE app.ev SET d = '2021-02-01' WHERE id = 1");            /* moves partitions */
    exec_ok(t->c, "SET session_replication_role = replica; DELETE FROM app.ev_2021 WHERE id = 2; "
                  "RESET session_replication_role");
    expect_sql(t->c, LOG_SQL,
                 "ev:I:1,2020-05-01 ev:I:2,2021-05-01 ev:U:2,2021-05-01 ev:D:1,2020-05-01 ev:I:1,2021-02-01 "
                 "ev:D:2,2021-05-01");
    clear_log(t->c);
    /* TRUNCATE of one partition is captured (TRUNCATE triggers are not cloned: install adds them) */
    exec_ok(t->c, "TRUNCATE app.ev_2020");
    expect_sql(t->c, LOG_SQL, "ev:T:-");
    clear_log(t->c);
    /* keys of date type are logged in ISO form whatever the session DateStyle */
    exec_ok(t->c, "SET DateStyle = 'SQL, DMY'; INSERT INTO app.ev VALUES (3, '2021-03-04', 'x'); RESET DateStyle");
    expect_sql(t->c, LOG_SQL, "ev:I:3,2021-03-04");
}

static void test_awkward_identifiers(void **state)
{
    testdb *t = *state;
    exec_ok(t->c,
            "CREATE SCHEMA \"My Schema\";"
            "CREATE TABLE \"My Schema\".\"Weird \"\"Table\"\"\" (\"Id Col\" text, \"\xc3\xbcn\xc3\xaf\" int, "
            "\"Value\" jsonb DEFAULT '{}', PRIMARY KEY (\"Id Col\", \"\xc3\xbcn\xc3\xaf\"));");
    install_ok(t->c, "", "SELECT pgshadow.register_table('My Schema', 'Weird \"Table\"', NULL, '_Shadow', 'm1', '{}');");
    expect_sql(t->c, "SELECT to_regclass('\"My Schema\".\"Weird \"\"Table\"\"_Shadow\"') IS NOT NULL", "t");
    expect_sql(t->c, "SELECT array_to_string(key_columns, '|') FROM pgshadow.tables", "Id Col|\xc3\xbcn\xc3\xaf");
    exec_ok(t->c, "INSERT INTO \"My Schema\".\"Weird \"\"Table\"\"\" VALUES ('a \"b\" c', 1), ('\xc3\xa9t\xc3\xa9', 2)");
    exec_ok(t->c, "UPDATE \"My Schema\".\"Weird \"\"Table\"\"\" SET \"\xc3\xbcn\xc3\xaf\" = 3 WHERE \"\xc3\xbcn\xc3\xaf\" = 2");
    expect_sql(t->c, LOG_SQL,
                 "Weird \"Table\":I:a \"b\" c,1 Weird \"Table\":I:\xc3\xa9t\xc3\xa9,2 "
                 "Weird \"Table\":D:\xc3\xa9t\xc3\xa9,2 Weird \"Table\":I:\xc3\xa9t\xc3\xa9,3");
    /* the flags and the dashboard use the table name as is */
    expect_sql(t->c, "SELECT value FROM pgshadow.flags WHERE name = 'shadow_writes_Weird \"Table\"'", "on");
    expect_sql(t->c, "SELECT table_name || '/' || pending_changes FROM public.shadow_migration_dashboard",
                 "Weird \"Table\"/4");
    exec_ok(t->c, "SELECT pgshadow.disable_writes('Weird \"Table\"')");
    clear_log(t->c);
    exec_ok(t->c, "DELETE FROM \"My Schema\".\"Weird \"\"Table\"\"\"");
    expect_sql(t->c, "SELECT count(*) FROM pgshadow.change_log", "0");
    /* registering again is a refresh, not an error */
    install_ok(t->c, "", "SELECT pgshadow.register_table('My Schema', 'Weird \"Table\"', NULL, '_Shadow', 'm1', '{}');");
    expect_sql(t->c, "SELECT count(*) FROM pgshadow.tables", "1");
    uninstall(t->c, true);
    expect_sql(t->c, "SELECT to_regclass('\"My Schema\".\"Weird \"\"Table\"\"_Shadow\"') IS NULL", "t");
    expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = '\"My Schema\".\"Weird \"\"Table\"\"\"'::regclass", "0");
}

static void test_disable_writes(void **state)
{
    testdb *t = *state;
    exec_ok(t->c, "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)");
    install_ok(t->c, "",
               "SELECT pgshadow.register_table('public', 'a', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'b', NULL, '_shadow', 'm1', '{}');");
    /* one table off: the other still captured */
    exec_ok(t->c, "SELECT pgshadow.disable_writes('a')");
    exec_ok(t->c, "INSERT INTO a VALUES (1); INSERT INTO b VALUES (1)");
    expect_sql(t->c, LOG_SQL, "b:I:1");
    clear_log(t->c);
    /* turning capture back on schedules a full resync of what was missed,
     * in the same transaction */
    exec_ok(t->c, "SELECT pgshadow.enable_writes('a')");
    exec_ok(t->c, "INSERT INTO a VALUES (2)");
    expect_sql(t->c, LOG_SQL, "a:T:- a:I:2");
    expect_sql(t->c, "SELECT string_agg(table_name || ':' || what, ' ' ORDER BY event_id) FROM pgshadow.events "
                       "WHERE what = 'resync'", "a:resync");
    /* enabling what is already on resyncs nothing */
    clear_log(t->c);
    exec_ok(t->c, "SELECT pgshadow.enable_writes('a')");
    expect_sql(t->c, LOG_SQL, "");
    /* the master switch stops everything, at once for the next statement of
     * another session, no lock on the tables needed */
    PGconn *other = connect_db(t->name);
    exec_ok(other, "BEGIN; INSERT INTO a VALUES (3)");
    exec_ok(t->c, "SELECT pgshadow.disable_writes()");
    exec_ok(other, "INSERT INTO b VALUES (3); COMMIT");
    PQfinish(other);
    expect_sql(t->c, LOG_SQL, "a:I:3");
    expect_sql(t->c, "SELECT value FROM pgshadow.flags WHERE name = 'shadow_writes_enabled'", "off");
    expect_sql(t->c, "SELECT status FROM public.shadow_migration_dashboard WHERE table_name = 'b'", "capture_off");
    clear_log(t->c);
    exec_ok(t->c, "SELECT pgshadow.enable_writes()");
    expect_sql(t->c, LOG_SQL, "a:T:- b:T:-");
    clear_log(t->c);
    exec_ok(t->c, "INSERT INTO b VALUES (4)");
    expect_sql(t->c, LOG_SQL, "b:I:4");
    expect_sql(t->c, "SELECT count(*) FROM pgshadow.events WHERE what = 'resync'", "3");
    expect_sql(t->c, "SELECT count(*) FROM pgshadow.events WHERE what = 'flag'", "4");
}

static void test_composite_and_mapping(void **state)
{
    testdb *t = *state;
    exec_ok(t->c,
            "CREATE TABLE ol (order_id bigint, line int, qty int, price numeric, note text, "
            "PRIMARY KEY (order_id, line));"
            "CREATE TABLE nk (code text NOT NULL, v int); CREATE UNIQUE INDEX ON nk (code);");
    install_ok(t->c, "",
               "SELECT pgshadow.register_table('public', 'ol', NULL, '_shadow', 'm1', '{\"qty\": \"greatest(p.qty, 0)\"}');"
               "SELECT pgshadow.register_table('public', 'nk', ARRAY['code'], '_shadow', 'm1', '{}');");
    exec_ok(t->c, "INSERT INTO ol VALUES (10, 1, 5, 1.5, 'x'); UPDATE ol SET line = 2; INSERT INTO nk VALUES ('k1', 1)");
    expect_sql(t->c, LOG_SQL, "ol:I:10,1 ol:D:10,1 ol:I:10,2 nk:I:k1");
    expect_sql(t->c, "SELECT column_map -> 2 ->> 'expr' FROM pgshadow.tables WHERE table_name = 'ol'",
                 "greatest(p.qty, 0)");
    expect_sql(t->c, "SELECT array_to_string(key_types, ',') FROM pgshadow.tables WHERE table_name = 'ol'",
                 "bigint,integer");
    /* the documented canonical hash is a runnable SQL expression */
    char *expr = q(t->c, "SELECT hash_expr FROM pgshadow.tables WHERE table_name = 'ol'");
    char sql[2048];
    snprintf(sql, sizeof sql, "SELECT %s = encode(sha256(convert_to('[10, 2, 5, 1.5, \"x\"]', 'UTF8')), 'hex') FROM ol p", expr);
    free(expr);
    expect_sql(t->c, sql, "t");
}

static void test_bad_input(void **state)
{
    testdb *t = *state;
    char err[8192];
    exec_ok(t->c, "CREATE TABLE nopk (a int, b text)");
    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'nopk', NULL, '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "public.nopk has no primary key"));
    expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL", "t");

    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'missing', NULL, '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "public.missing does not exist"));
    expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL", "t");

    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'nopk', ARRAY['zz'], '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "key column zz does not exist in table public.nopk"));
    /* a configured key must be NOT NULL, and unique on exactly its columns */
    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'nopk', ARRAY['a'], '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "key column a of table public.nopk is nullable"));
    exec_ok(t->c, "CREATE TABLE nn (a int NOT NULL, b int NOT NULL, v text); CREATE UNIQUE INDEX ON nn (a)");
    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'nn', ARRAY['a', 'b'], '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "key (a, b) of table public.nn is not backed by a unique index"));
    /* "enabled" would own the master switch's flag name */
    exec_ok(t->c, "CREATE TABLE enabled (id int PRIMARY KEY)");
    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'enabled', NULL, '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "public.enabled cannot be registered: its flag shadow_writes_enabled would be the master switch"));
    expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL", "t");

    /* a shadow with wrong types, a missing column and a missing tracking
     * column: ONE error naming every problem; nothing installed, the good
     * table registered before it included */
    exec_ok(t->c,
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
    expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL AND to_regclass('good_shadow') IS NULL "
                       "AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'good'::regclass)", "t");

    /* a bad mapping expression is reported with the column */
    assert_false(install(t->c, "",
                         "SELECT pgshadow.register_table('public', 'good', NULL, '_shadow', 'm1', '{\"id\": \"p.nosuch + 1\"}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "column id (columns: mapping): expression p.nosuch + 1"));
    expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL", "t");

    /* a mapping expression is ONE expression: a second statement smuggled
     * into it never runs, and neither does a query glued to it */
    exec_ok(t->c, "CREATE TABLE victim (x int); CREATE TABLE mt (id int PRIMARY KEY, v int);"
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
    expect_sql(t->c, "SELECT to_regclass('public.victim') IS NOT NULL", "t");
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
    expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL AND to_regclass('public.victim') IS NOT NULL", "t");
    /* ...while an ordinary expression, subquery included, is fine */
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'mt', NULL, '_shadow', 'm1', "
                         "'{\"v\": \"coalesce(p.v::text, (SELECT ''none''))\"}');");
}

static void test_dashboard(void **state)
{
    testdb *t = *state;
    exec_ok(t->c, "CREATE TABLE dash (id int PRIMARY KEY); INSERT INTO dash SELECT generate_series(1, 1000); ANALYZE dash");
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'dash', NULL, '_shadow', 'm1', '{}');");
    /* nothing pending: lag 0, counts are estimates from pg_class */
    expect_sql(t->c, "SELECT primary_count || ' ' || shadow_count || ' ' || count_source || ' ' || (sync_lag_seconds = 0) "
                       "|| ' ' || pending_changes || ' ' || status FROM public.shadow_migration_dashboard",
                 "1000 0 estimate true 0 backfill_pending");
    /* a table not yet copied is never "synced", even when an estimate says
     * the primary is empty; copying is progress, not a reason to roll back */
    expect_sql(t->c, "SELECT sync_percentage FROM public.shadow_migration_dashboard", "0.00");
    expect_sql(t->c, "SELECT migration_status FROM public.migration_success_metrics", "MONITORING_REQUIRED");
    exec_ok(t->c, "UPDATE pgshadow.tables SET backfill_state = 'running', backfill_rows = 250, backfill_total = 1000");
    expect_sql(t->c, "SELECT sync_percentage FROM public.shadow_migration_dashboard", "25.00");
    exec_ok(t->c, "UPDATE pgshadow.tables SET backfill_rows = 1000");
    expect_sql(t->c, "SELECT sync_percentage || ' ' || migration_status FROM public.shadow_migration_dashboard, "
                       "public.migration_success_metrics", "99.99 MONITORING_REQUIRED");
    exec_ok(t->c, "UPDATE pgshadow.tables SET backfill_state = 'pending', backfill_rows = 0, backfill_total = NULL");

    /* pending changes: lag is the age of the OLDEST pending entry */
    exec_ok(t->c, "INSERT INTO dash VALUES (1001), (1002), (1003)");
    exec_ok(t->c, "UPDATE pgshadow.change_log SET logged_at = clock_timestamp() - interval '100 seconds' "
                  "WHERE seq = (SELECT min(seq) FROM pgshadow.change_log)");
    exec_ok(t->c, "UPDATE pgshadow.change_log SET logged_at = clock_timestamp() - interval '500 seconds' "
                  "WHERE seq = (SELECT max(seq) FROM pgshadow.change_log)");
    expect_sql(t->c, "SELECT pending_changes FROM public.shadow_migration_dashboard", "3");
    expect_sql(t->c, "SELECT sync_lag_seconds BETWEEN 100 AND 150 FROM public.shadow_migration_dashboard", "t");

    /* the daemon's counters make it exact; thresholds as in the seed */
    exec_ok(t->c, "UPDATE pgshadow.tables SET primary_rows = 1003, shadow_rows = 1003, synced_rows = 1003, "
                  "backfill_state = 'done'");
    clear_log(t->c);
    expect_sql(t->c, "SELECT count_source || ' ' || sync_percentage || ' ' || (sync_lag_seconds = 0) || ' ' || status "
                       "FROM public.shadow_migration_dashboard", "exact 100.00 true in_sync");
    expect_sql(t->c, "SELECT migration_status FROM public.migration_success_metrics", "READY_FOR_CUTOVER");
    /* capture off: the shadow goes stale, whatever the counts say */
    exec_ok(t->c, "SELECT pgshadow.disable_writes('dash')");
    expect_sql(t->c, "SELECT capture_enabled || ' ' || status || ' ' || migration_status "
                       "FROM public.shadow_migration_dashboard, public.migration_success_metrics",
                 "false capture_off ROLLBACK_RECOMMENDED");
    exec_ok(t->c, "SELECT pgshadow.disable_writes(); SELECT pgshadow.enable_writes('dash')");
    expect_sql(t->c, "SELECT capture_enabled || ' ' || migration_status "
                       "FROM public.shadow_migration_dashboard, public.migration_success_metrics",
                 "false ROLLBACK_RECOMMENDED");
    exec_ok(t->c, "SELECT pgshadow.enable_writes()");
    clear_log(t->c);
    expect_sql(t->c, "SELECT capture_enabled || ' ' || migration_status "
                       "FROM public.shadow_migration_dashboard, public.migration_success_metrics",
                 "true READY_FOR_CUTOVER");
    /* a quarantined row is not in the shadow: not ready */
    exec_ok(t->c, "INSERT INTO pgshadow.quarantine (table_id, key, sqlstate, message) "
                  "SELECT table_id, '{8}', '23514', 'check' FROM pgshadow.tables");
    expect_sql(t->c, "SELECT migration_status || ' ' || total_quarantined FROM public.migration_success_metrics",
                 "MONITORING_REQUIRED 1");
    exec_ok(t->c, "DELETE FROM pgshadow.quarantine");
    exec_ok(t->c, "UPDATE pgshadow.tables SET shadow_rows = 970");
    expect_sql(t->c, "SELECT migration_status FROM public.migration_success_metrics", "MONITORING_REQUIRED");
    exec_ok(t->c, "UPDATE pgshadow.tables SET shadow_rows = 1003, diverged_rows = 6");
    expect_sql(t->c, "SELECT migration_status || ' ' || total_diverged_records FROM public.migration_success_metrics",
                 "MONITORING_REQUIRED 6");
    exec_ok(t->c, "UPDATE pgshadow.tables SET shadow_rows = 900, diverged_rows = 0");
    expect_sql(t->c, "SELECT migration_status FROM public.migration_success_metrics", "ROLLBACK_RECOMMENDED");
    /* a quarantined row shows */
    exec_ok(t->c, "UPDATE pgshadow.tables SET shadow_rows = 1003; INSERT INTO pgshadow.quarantine (table_id, key, sqlstate, message) "
                  "SELECT table_id, '{7}', '23514', 'check' FROM pgshadow.tables");
    expect_sql(t->c, "SELECT quarantined_count || ' ' || status FROM public.shadow_migration_dashboard", "1 quarantine");
    /* pending is capped: a huge backlog does not make a poll slow */
    exec_ok(t->c, "INSERT INTO pgshadow.change_log (table_id, op, key) SELECT table_id, 'U', ARRAY[g::text] "
                  "FROM pgshadow.tables, generate_series(1, 100010) g");
    expect_sql(t->c, "SELECT pending_changes FROM public.shadow_migration_dashboard", "100001");
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
    exec_ok(c, sql);
}

static void test_grants(void **state)
{
    testdb *t = *state;
    exec_ok(t->c, "CREATE SCHEMA app; CREATE TABLE app.g (id int PRIMARY KEY, v text); INSERT INTO app.g VALUES (1, 'a')");
    install_ok(t->c, "", "SELECT pgshadow.register_table('app', 'g', NULL, '_shadow', 'm1', '{}');");
    /* LOGIN roles that are members of each pgshadow role (cluster-wide: kept) */
    exec_ok(t->c,
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
    exec_ok(t->c, "INSERT INTO app.g VALUES (2, 'b')");

    /* viewer: reads status, writes nothing */
    as_role(t->c, "pgshadow_t_viewer");
    expect_sql(t->c, "SELECT table_name FROM public.shadow_migration_dashboard", "g");
    expect_sql(t->c, "SELECT migration_status IS NOT NULL FROM public.migration_success_metrics", "t");
    expect_sql(t->c, "SELECT count(*) FROM pgshadow.events", "2");
    expect_error(t->c, "SELECT pgshadow.enqueue_command('pause')", "permission denied", NULL);
    expect_error(t->c, "INSERT INTO pgshadow.commands (command) VALUES ('pause')", "permission denied", NULL);
    expect_error(t->c, "SELECT pgshadow.disable_writes()", "permission denied", NULL);
    expect_error(t->c, "SELECT * FROM pgshadow.change_log", "permission denied", NULL);
    expect_error(t->c, "SELECT * FROM app.g", "permission denied", NULL);

    /* operator: enqueues commands, switches flags through functions only */
    as_role(t->c, "pgshadow_t_operator");
    expect_sql(t->c, "SELECT pgshadow.enqueue_command('pause', '{\"why\": \"test\"}') > 0", "t");
    exec_ok(t->c, "INSERT INTO pgshadow.commands (command) VALUES ('resume')");
    expect_sql(t->c, "SELECT string_agg(command || ':' || requested_by, ' ' ORDER BY command_id) FROM pgshadow.commands",
                 "pause:postgres resume:postgres");
    exec_ok(t->c, "SELECT pgshadow.disable_writes('g'); SELECT pgshadow.enable_writes('g')");
    expect_error(t->c, "INSERT INTO pgshadow.commands (command, requested_by) VALUES ('pause', 'someone')",
                 "permission denied", NULL);
    expect_error(t->c, "UPDATE pgshadow.flags SET value = 'off'", "permission denied", NULL);
    expect_error(t->c, "UPDATE pgshadow.cutover SET percent = 100", "permission denied", NULL);
    /* reads move only through the command queue (and its gates) */
    expect_error(t->c, "SELECT pgshadow.set_read_percent('g', 100)", "permission denied", NULL);
    expect_error(t->c, "DELETE FROM pgshadow.change_log", "permission denied", NULL);
    expect_error(t->c, "SELECT * FROM app.g", "permission denied", NULL);

    /* daemon: reads the primary, writes the shadow, consumes the log, keeps state */
    as_role(t->c, "pgshadow_t_daemon");
    expect_sql(t->c, "SELECT count(*) FROM app.g", "2");
    exec_ok(t->c, "INSERT INTO app.g_shadow (id, v, _shadow_sync_status) SELECT id, v, 'synced' FROM app.g "
                  "ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v");
    exec_ok(t->c, "UPDATE app.g_shadow SET _shadow_version = _shadow_version + 1; DELETE FROM app.g_shadow WHERE id = 2");
    expect_sql(t->c, "WITH b AS (SELECT table_id, seq FROM pgshadow.change_log ORDER BY table_id, seq LIMIT 10) "
                       ", del AS (DELETE FROM pgshadow.change_log l USING b "
                       "WHERE l.table_id = b.table_id AND l.seq = b.seq RETURNING 1) SELECT count(*) FROM del", "2");
    exec_ok(t->c, "UPDATE pgshadow.tables SET backfill_state = 'done', primary_rows = 2, shadow_rows = 1");
    exec_ok(t->c, "UPDATE pgshadow.cutover SET stage = 1, percent = 1");
    exec_ok(t->c, "INSERT INTO pgshadow.events (what, why) VALUES ('stage', 'test')");
    exec_ok(t->c, "INSERT INTO pgshadow.quarantine (table_id, key, sqlstate, message) SELECT table_id, '{2}', '23505', 'dup' "
                  "FROM pgshadow.tables");
    exec_ok(t->c, "UPDATE pgshadow.commands SET state = 'done', finished_at = now()");
    /* ...but not what is pasted into SQL run as the owner, nor who asked
     * for what, nor who did it */
    expect_error(t->c, "UPDATE pgshadow.tables SET hash_expr = 'pg_catalog.now()::text'", "permission denied", NULL);
    expect_error(t->c, "UPDATE pgshadow.tables SET column_map = '[]'", "permission denied", NULL);
    expect_error(t->c, "UPDATE pgshadow.tables SET shadow_name = 'x'", "permission denied", NULL);
    expect_error(t->c, "UPDATE pgshadow.commands SET requested_by = 'someone'", "permission denied", NULL);
    expect_error(t->c, "UPDATE pgshadow.commands SET command = 'abort'", "permission denied", NULL);
    expect_error(t->c, "INSERT INTO pgshadow.events (who, what) VALUES ('someone', 'x')", "permission denied", NULL);
    expect_sql(t->c, "SELECT who FROM pgshadow.events WHERE what = 'stage'", "postgres");
    exec_ok(t->c, "SELECT pgshadow.set_read_percent('g', 1)");
    exec_ok(t->c, "TRUNCATE app.g_shadow");
    expect_sql(t->c, "SELECT count(*) FROM public.shadow_migration_dashboard", "1");
    expect_error(t->c, "INSERT INTO app.g VALUES (3, 'c')", "permission denied", NULL);
    expect_error(t->c, "UPDATE app.g SET v = 'x'", "permission denied", NULL);
    expect_error(t->c, "DROP TABLE app.g_shadow", "must be owner", NULL);
    expect_error(t->c, "INSERT INTO pgshadow.change_log (table_id, op, key) VALUES (1, 'I', '{9}')", "permission denied", NULL);
    expect_error(t->c, "SELECT pgshadow.enqueue_command('pause')", "permission denied", NULL);
    expect_error(t->c, "SELECT pgshadow.register_table('app', 'g', NULL, '_shadow', 'm1', '{}')", "permission denied", NULL);
    expect_error(t->c, "DELETE FROM pgshadow.events", "permission denied", NULL);

    /* an application role: reads flags and routes, nothing else */
    as_role(t->c, "pgshadow_t_app");
    expect_sql(t->c, "SELECT pgshadow.read_percent('g')", "1");
    expect_sql(t->c, "SELECT value FROM pgshadow.flags WHERE name = 'shadow_writes_g'", "on");
    expect_sql(t->c, "SELECT pgshadow.read_from_shadow('g', '1') IS NOT NULL", "t");
    expect_error(t->c, "SELECT * FROM public.shadow_migration_dashboard", "permission denied", NULL);
    expect_error(t->c, "SELECT pgshadow.disable_writes()", "permission denied", NULL);
    exec_ok(t->c, "RESET ROLE");
}

/* ---- uninstall and the catalog ------------------------------------------ */

static char *dump_schema(const char *dbname)
{
    const char *bin = getenv("PGSHADOW_TEST_PGBIN");
    if (!bin) {
        fprintf(stderr, "PGSHADOW_TEST_PGBIN is not set\n");
        fail();
    }
    /* the connection string goes through the environment, not argv */
    char ci[2048];
    snprintf(ci, sizeof ci, "%s dbname=%s", base_conninfo(), dbname);
    setenv("PGSHADOW_T_DUMP_CI", ci, 1);
    char cmd[4096];
    /* \restrict lines carry a random key per run (pg_dump >= 15.14) */
    snprintf(cmd, sizeof cmd, "'%s/pg_dump' --schema-only -d \"$PGSHADOW_T_DUMP_CI\" | grep -v '^\\\\\\(un\\)\\?restrict '",
             bin);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 1024)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    assert_int_equal(pclose(p), 0);
    assert_true(len > 100);
    return buf;
}

static void test_uninstall_restores_catalog(void **state)
{
    testdb *t = *state;
    exec_ok(t->c,
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
    char *before = dump_schema(t->name);
    install_ok(t->c, "",
               "SELECT pgshadow.register_table('app', 'parent', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('app', 'child', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'ev', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'Odd Name', NULL, '_shadow', 'm1', '{}');");
    /* install mirrored the foreign key between the two created shadows */
    expect_sql(t->c, "SELECT confrelid::regclass FROM pg_constraint WHERE conrelid = 'app.child_shadow'::regclass "
                       "AND contype = 'f'", "app.parent_shadow");
    /* the identity column is a plain column in the shadow: the daemon writes ids */
    expect_sql(t->c, "SELECT attidentity FROM pg_attribute WHERE attrelid = 'app.parent_shadow'::regclass "
                       "AND attname = 'id'", "");
    exec_ok(t->c, "INSERT INTO app.parent_shadow (id, name, n) VALUES (42, 'x', 1)");
    /* install twice is a refresh */
    install_ok(t->c, "",
               "SELECT pgshadow.register_table('app', 'parent', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('app', 'child', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'ev', NULL, '_shadow', 'm1', '{}');"
               "SELECT pgshadow.register_table('public', 'Odd Name', NULL, '_shadow', 'm1', '{}');");
    exec_ok(t->c, "INSERT INTO app.parent (name, n) VALUES ('a', 1); INSERT INTO app.child (parent_id) VALUES (1)");
    char *during = dump_schema(t->name);
    assert_string_not_equal(before, during);
    uninstall(t->c, true);
    char *after = dump_schema(t->name);
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
    exec_ok(t->c, "DROP OWNED BY pgshadow_t_reader; DROP ROLE pgshadow_t_reader");
}

static void test_uninstall_keep_shadow(void **state)
{
    testdb *t = *state;
    exec_ok(t->c, "CREATE TABLE k (id int PRIMARY KEY)");
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'k', NULL, '_shadow', 'm1', '{}');");
    uninstall(t->c, false);
    expect_sql(t->c, "SELECT to_regclass('k_shadow') IS NOT NULL AND to_regnamespace('pgshadow') IS NULL "
                       "AND to_regclass('public.shadow_migration_dashboard') IS NULL", "t");
    expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'k'::regclass", "0");
    exec_ok(t->c, "INSERT INTO k VALUES (1)");
}


/* ---- uninstall refuses to take user objects with it ---------------------- */

static void uninstall_expect_error(PGconn *c, const char *want1, const char *want2)
{
    char *tail = read_sql("uninstall.sql");
    size_t len = strlen(tail) + 256;
    char *script = malloc(len);
    snprintf(script, len, "BEGIN;\nSET LOCAL lock_timeout = '200ms';\nSELECT pgshadow.uninstall(true);\n%sCOMMIT;\n", tail);
    expect_error(c, script, want1, want2, NULL);
    exec_ok(c, "ROLLBACK");
    free(script);
    free(tail);
}

static void test_uninstall_refuses_dependents(void **state)
{
    testdb *t = *state;
    exec_ok(t->c, "CREATE TABLE u (id int PRIMARY KEY, v text)");
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'u', NULL, '_shadow', 'm1', '{}');");
    exec_ok(t->c, "CREATE VIEW routed AS SELECT id, pgshadow.read_from_shadow('u', id::text) AS s FROM u;"
                  "CREATE TABLE cfg (id int PRIMARY KEY, pct int DEFAULT pgshadow.read_percent('u'));"
                  "CREATE VIEW myflags AS SELECT name FROM pgshadow.flags");
    uninstall_expect_error(t->c, "uninstall refused: 3 object(s) outside pgshadow depend on it", NULL);
    uninstall_expect_error(t->c, "view public.routed (uses function pgshadow.read_from_shadow(text,text))",
                           "default value for column pct of table public.cfg (uses function pgshadow.read_percent(text))");
    uninstall_expect_error(t->c, "view public.myflags (uses table pgshadow.flags)", NULL);
    /* nothing changed */
    expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'u'::regclass", "2");
    expect_sql(t->c, "SELECT to_regclass('u_shadow') IS NOT NULL AND to_regclass('routed') IS NOT NULL", "t");
    exec_ok(t->c, "DROP VIEW routed, myflags; ALTER TABLE cfg ALTER COLUMN pct DROP DEFAULT");
    uninstall(t->c, true);
    expect_sql(t->c, "SELECT to_regnamespace('pgshadow') IS NULL AND to_regclass('cfg') IS NOT NULL", "t");
}

/* ---- the dashboard views: only pgshadow's own are replaced or dropped ------ */

static void test_foreign_dashboard_view(void **state)
{
    testdb *t = *state;
    char err[8192];
    exec_ok(t->c, "CREATE TABLE w (id int PRIMARY KEY);"
                  "CREATE VIEW public.shadow_migration_dashboard AS SELECT 'seed'::text AS table_name");
    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'w', NULL, '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "public.shadow_migration_dashboard already exists and was not created by pgshadow"));
    expect_sql(t->c, "SELECT table_name FROM public.shadow_migration_dashboard", "seed");
    exec_ok(t->c, "DROP VIEW public.shadow_migration_dashboard");
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'w', NULL, '_shadow', 'm1', '{}');");
    expect_sql(t->c, "SELECT string_agg(key, ' ' ORDER BY key) FROM pgshadow.meta WHERE key LIKE 'created_view:%'",
                 "created_view:public.migration_success_metrics created_view:public.shadow_migration_dashboard");
    /* a refresh replaces its own views */
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'w', NULL, '_shadow', 'm1', '{}');");
    uninstall(t->c, true);
    expect_sql(t->c, "SELECT to_regclass('public.shadow_migration_dashboard') IS NULL "
                       "AND to_regclass('public.migration_success_metrics') IS NULL", "t");
}

/* ---- partitions: ATTACH / DETACH, and uninstall after a detach ------------ */

static void test_partition_attach_detach(void **state)
{
    testdb *t = *state;
    exec_ok(t->c, "CREATE TABLE pe (id int, d date, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);"
                  "CREATE TABLE pe_2020 PARTITION OF pe FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');"
                  "CREATE TABLE pe_2021 (id int NOT NULL, d date NOT NULL, PRIMARY KEY (id, d));"
                  "INSERT INTO pe_2021 VALUES (1, '2021-06-01'), (2, '2021-07-01')");
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'pe', NULL, '_shadow', 'm1', '{}');");
    expect_sql(t->c, "SELECT count(*) FROM pg_event_trigger WHERE evtname = 'pgshadow_partition_ddl'", "1");
    expect_sql(t->c, LOG_SQL, "");
    /* attach: rows arrive with no row trigger firing -> full resync */
    exec_ok(t->c, "ALTER TABLE pe ATTACH PARTITION pe_2021 FOR VALUES FROM ('2021-01-01') TO ('2022-01-01')");
    expect_sql(t->c, LOG_SQL, "pe:T:-");
    expect_sql(t->c, "SELECT string_agg(tgname || ':' || tgenabled::text, ' ' ORDER BY tgname) FROM pg_trigger "
                       "WHERE tgrelid = 'pe_2021'::regclass", "pgshadow_capture:A pgshadow_capture_truncate:A");
    clear_log(t->c);
    exec_ok(t->c, "TRUNCATE pe_2021");
    expect_sql(t->c, LOG_SQL, "pe:T:-");
    clear_log(t->c);
    /* a new, empty partition: triggers, but nothing moved */
    exec_ok(t->c, "CREATE TABLE pe_2022 PARTITION OF pe FOR VALUES FROM ('2022-01-01') TO ('2023-01-01')");
    expect_sql(t->c, LOG_SQL, "");
    expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'pe_2022'::regclass "
                       "AND tgname = 'pgshadow_capture_truncate'", "1");
    /* detach: rows leave -> full resync; the detached table keeps nothing */
    exec_ok(t->c, "INSERT INTO pe VALUES (3, '2020-03-01')");
    clear_log(t->c);
    exec_ok(t->c, "ALTER TABLE pe DETACH PARTITION pe_2020");
    expect_sql(t->c, LOG_SQL, "pe:T:-");
    expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'pe_2020'::regclass", "0");
    expect_sql(t->c, "SELECT count(*) FROM pgshadow.events WHERE what = 'resync'", "2");
    /* a detach the event trigger did not see (disabled here): uninstall still
     * removes every pgshadow trigger, wherever it is */
    exec_ok(t->c, "ALTER EVENT TRIGGER pgshadow_partition_ddl DISABLE");
    exec_ok(t->c, "ALTER TABLE pe DETACH PARTITION pe_2022");
    expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'pe_2022'::regclass", "1");
    uninstall(t->c, true);
    expect_sql(t->c, "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                       "WHERE c.relname LIKE 'pe%' AND NOT t.tgisinternal", "0");
    expect_sql(t->c, "SELECT count(*) FROM pg_event_trigger", "0");
    exec_ok(t->c, "TRUNCATE pe_2022; TRUNCATE pe_2020");
}

/* ---- install: no downgrade; tables dropped from the config ---------------- */

static void test_install_version_and_unregister(void **state)
{
    testdb *t = *state;
    char err[8192];
    exec_ok(t->c, "CREATE TABLE ka (id int PRIMARY KEY); CREATE TABLE kb (id int PRIMARY KEY)");
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'ka', NULL, '_shadow', 'm1', '{}');"
                         "SELECT pgshadow.register_table('public', 'kb', NULL, '_shadow', 'm1', '{}');");
    exec_ok(t->c, "INSERT INTO kb VALUES (1)");
    /* kb left the config: capture goes, its shadow stays, and it is said */
    install_ok(t->c, "", "SELECT pgshadow.register_table('public', 'ka', NULL, '_shadow', 'm1', '{}');");
    expect_sql(t->c, "SELECT string_agg(table_name, ' ') FROM pgshadow.tables", "ka");
    expect_sql(t->c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'kb'::regclass", "0");
    expect_sql(t->c, "SELECT to_regclass('kb_shadow') IS NOT NULL AND to_regprocedure('pgshadow.capture_2()') IS NULL", "t");
    expect_sql(t->c, "SELECT count(*) FROM pgshadow.change_log", "0");
    expect_sql(t->c, "SELECT count(*) FROM pgshadow.flags WHERE name LIKE '%kb'", "0");
    expect_sql(t->c, "SELECT table_name || ' ' || what FROM pgshadow.events WHERE what = 'unregister_table'",
                 "kb unregister_table");
    exec_ok(t->c, "INSERT INTO kb VALUES (2); INSERT INTO ka VALUES (2)");
    expect_sql(t->c, LOG_SQL, "ka:I:2");
    /* a newer schema version is never downgraded */
    exec_ok(t->c, "UPDATE pgshadow.meta SET value = '2' WHERE key = 'schema_version'");
    assert_false(install(t->c, "", "SELECT pgshadow.register_table('public', 'ka', NULL, '_shadow', 'm1', '{}');",
                         err, sizeof err));
    assert_non_null(strstr(err, "the database has pgshadow schema version 2, newer than this release's 1"));
    expect_sql(t->c, "SELECT value FROM pgshadow.meta WHERE key = 'schema_version'", "2");
}

static void test_aidis_example(void **state)
{
    testdb *t = *state;
    char *ex = read_sql("example-aidis.sql");
    exec_ok(t->c, ex);
    exec_ok(t->c, ex); /* idempotent */
    free(ex);
    install_ok(t->c, "",
               "SELECT pgshadow.register_table('public', 'projects', NULL, '_shadow', 'p2_3_shadow_migration', '{}');"
               "SELECT pgshadow.register_table('public', 'sessions', NULL, '_shadow', 'p2_3_shadow_migration', '{}');"
               "SELECT pgshadow.register_table('public', 'contexts', NULL, '_shadow', 'p2_3_shadow_migration', '{}');"
               "SELECT pgshadow.register_table('public', 'analytics_events', NULL, '_shadow', 'p2_3_shadow_migration', '{}');"
               "SELECT pgshadow.register_table('public', 'tasks', NULL, '_shadow', 'p2_3_shadow_migration', '{}');");
    expect_sql(t->c, "SELECT count(*) FILTER (WHERE NOT shadow_created) FROM pgshadow.tables", "5");
    exec_ok(t->c,
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
    expect_sql(t->c,
                 "SELECT string_agg(DISTINCT t.table_name || ':' || l.op || ':' || right(l.key[1], 1), ' ') "
                 "FROM pgshadow.change_log l JOIN pgshadow.tables t USING (table_id)",
                 "analytics_events:I:4 analytics_events:U:4 contexts:D:3 contexts:I:3 projects:D:1 projects:I:1 "
                 "sessions:I:2 sessions:U:2 tasks:D:5 tasks:I:5");
    expect_sql(t->c, "SELECT count(*) FROM public.shadow_migration_dashboard", "5");
    uninstall(t->c, false);
    expect_sql(t->c, "SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_shadow' AND relkind = 'r'", "5");
}

int main(void)
{
    base_conninfo(); /* fail loudly when there is no cluster */
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
