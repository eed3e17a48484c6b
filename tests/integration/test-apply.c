/*
 * test-apply.c - the sync engine's database half (sql/8*-sync-*.sql) against a
 * real PostgreSQL: apply_batch over every kind of write in both capture
 * modes, hot rows written once, foreign-key order, batch limits, the
 * quarantine (check, unique, foreign key; fix, retry), halt mode, TRUNCATE,
 * backfill (chunks, resume from the persisted cursor on a new connection,
 * concurrent writes, composite and awkward keys, exact counts), column
 * mappings, the row hash against the by-hand query of docs/sync.md, and the
 * wake-up flag (capture NOTIFYs only while armed).
 *
 * Each test works in its own fresh database, installed as pgshadowctl does:
 * one transaction of the files of sql/install.list, register_table
 * per table and finish_install.
 *
 * Env: PGSHADOW_TEST_CONNINFO (the harness cluster), PGSHADOW_SRCDIR.
 *
 * Size: over 800 lines on purpose: the scenarios share the install and
 * row-comparison helpers defined here; each is one function that reads alone,
 * and a split would copy the helpers.
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

/* ---- a fresh database per test ---------------------------------------- */

static int db_setup(void **state)
{
    *state = itest_db_new("pgshadow_apply");
    return 0;
}

static int db_teardown(void **state)
{
    itest_db_free(*state);
    return 0;
}

/* The install transaction as pgshadowctl builds it (docs/database.md), with
 * `pre` run before the register_table calls (e.g. a capture_mode change). */
static void install(PGconn *c, const char *pre, const char *registers)
{
    char *schema = itest_install_sql();
    size_t len = strlen(schema) + strlen(pre) + strlen(registers) + 512;
    char *script = malloc(len);
    snprintf(script, len,
             "BEGIN;\nSET LOCAL lock_timeout = '2s';\n%s\n%s\n%s\n"
             "SELECT pgshadow.finish_install('" MIG "');\nCOMMIT;\n",
             schema, pre, registers);
    itest_exec_ok(c, script);
    free(script);
    free(schema);
    itest_create_test_diff(c);
}

static void expect_converged(PGconn *c, const char *table)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT public.test_diff('%s')", table);
    long n = itest_query_long(c, sql);
    if (n != 0)
        fprintf(stderr, "table %s: %ld rows differ between primary and shadow\n", table, n);
    assert_int_equal(n, 0);
}

typedef struct {
    int taken, upserted, deleted, quarantined, truncated;
    char halted[2048];
} batch;

static batch apply1(PGconn *c, int limit, const char *mode)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *params[] = {MIG, lim, mode};
    PGresult *r = PQexecParams(c, "SELECT * FROM pgshadow.apply_batch($1, $2, $3)", 3, NULL, params,
                               NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        fprintf(stderr, "apply_batch failed: %s\n", PQresultErrorMessage(r));
        PQclear(r);
        fail();
    }
    batch b;
    b.taken = atoi(PQgetvalue(r, 0, 0));
    b.upserted = atoi(PQgetvalue(r, 0, 1));
    b.deleted = atoi(PQgetvalue(r, 0, 2));
    b.quarantined = atoi(PQgetvalue(r, 0, 3));
    b.truncated = atoi(PQgetvalue(r, 0, 4));
    snprintf(b.halted, sizeof b.halted, "%s", PQgetisnull(r, 0, 5) ? "" : PQgetvalue(r, 0, 5));
    PQclear(r);
    return b;
}

/* apply_batch until a batch comes back short, as the daemon does; sums. */
static batch drain(PGconn *c, int limit, const char *mode)
{
    batch sum = {0};
    for (int i = 0; i < 100000; i++) {
        batch b = apply1(c, limit, mode);
        sum.taken += b.taken;
        sum.upserted += b.upserted;
        sum.deleted += b.deleted;
        sum.quarantined += b.quarantined;
        sum.truncated += b.truncated;
        if (b.halted[0])
            snprintf(sum.halted, sizeof sum.halted, "%s", b.halted);
        if (b.taken < limit || b.halted[0])
            return sum;
    }
    fail_msg("apply never drained");
    return sum;
}

/* backfill_step until it returns no row; the number of steps. */
static int backfill_all(PGconn *c, int chunk)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgshadow.backfill_step('" MIG "', %d)", chunk);
    for (int i = 1; i < 100000; i++)
        if (itest_query_long(c, sql) == 0)
            return i;
    fail_msg("backfill never finished");
    return 0;
}

/* ---- apply: every kind of write ----------------------------------------- */

static const char parent_child_schema[] =
    "CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL, score numeric, "
    "  email text);"
    "CREATE TABLE child (id bigint PRIMARY KEY, parent_id int NOT NULL REFERENCES parent, note text, "
    "  at timestamptz DEFAULT now());";

/* child registered first: table_id order is the opposite of FK order */
static const char parent_child_register[] =
    "SELECT pgshadow.register_table('public', 'child', NULL, '_shadow', '" MIG "', '{}');"
    "SELECT pgshadow.register_table('public', 'parent', NULL, '_shadow', '" MIG "', "
    "  '{\"score\": \"least(p.score, 1.0)\"}');";

static void mixed_workload(PGconn *c)
{
    itest_exec_ok(c, "INSERT INTO parent SELECT g, 'p' || g, g / 10.0, 'e' || g FROM generate_series(1, 40) g");
    itest_exec_ok(c, "INSERT INTO child SELECT g, 1 + g % 40, 'n' || g FROM generate_series(1, 120) g");
    itest_exec_ok(c, "UPDATE parent SET name = name || '!' WHERE id % 3 = 0");
    itest_exec_ok(c, "UPDATE child SET id = id + 1000 WHERE id % 7 = 0");        /* key change */
    itest_exec_ok(c, "UPDATE parent SET score = 0.5 WHERE id = 40");
    itest_exec_ok(c, "DELETE FROM child WHERE id % 5 = 0");
    itest_exec_ok(c, "INSERT INTO parent VALUES (3, 'upserted', 9, 'x'), (41, 'new', 0.1, 'y') "
               "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, score = EXCLUDED.score");
    itest_exec_ok(c, "BEGIN; DELETE FROM child WHERE parent_id = 39; DELETE FROM parent WHERE id = 39; COMMIT");
    itest_exec_ok(c, "UPDATE child SET note = NULL, at = '2020-02-29 12:34:56.789+05:30' WHERE id < 30");
}

static void check_parent_child(PGconn *c)
{
    expect_converged(c, "parent");
    expect_converged(c, "child");
    /* the mapping, checked without the registry's expressions */
    itest_expect_sql(c,
               "SELECT count(*) FROM parent p FULL JOIN parent_shadow s USING (id) "
               "WHERE p.id IS NULL OR s.id IS NULL "
               "OR (p.name, least(p.score, 1.0), p.email) IS DISTINCT FROM (s.name, s.score, s.email)",
               "0");
    itest_expect_sql(c, "SELECT score FROM parent_shadow WHERE id = 3", "1.0");
    itest_expect_sql(c,
               "SELECT count(*) FROM child p FULL JOIN child_shadow s USING (id) "
               "WHERE p.id IS NULL OR s.id IS NULL "
               "OR (p.parent_id, p.note, p.at) IS DISTINCT FROM (s.parent_id, s.note, s.at)",
               "0");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "0");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
}

static void run_mixed(PGconn *c, const char *pre)
{
    itest_exec_ok(c, parent_child_schema);
    install(c, pre, parent_child_register);
    /* the applying session's settings must not matter */
    itest_exec_ok(c, "SET TimeZone = 'Asia/Kathmandu'; SET DateStyle = 'German, DMY'; SET extra_float_digits = 0");
    /* rows already in the shadow that the batch then deletes or re-keys */
    itest_exec_ok(c, "INSERT INTO parent VALUES (1000, 'early', 1, NULL); INSERT INTO child VALUES (1000, 1000, 'e')");
    drain(c, 1000, "quarantine");
    itest_exec_ok(c, "DELETE FROM child WHERE id = 1000; UPDATE parent SET id = 1001 WHERE id = 1000");
    mixed_workload(c);
    long logged = itest_query_long(c, "SELECT count(*) FROM pgshadow.change_log");
    long parent_logged = itest_query_long(c, "SELECT count(*) FROM pgshadow.change_log l JOIN pgshadow.tables t "
                                  "USING (table_id) WHERE t.table_name = 'parent'");
    long applied_before = itest_query_long(c, "SELECT applied_total FROM pgshadow.tables WHERE table_name = 'parent'");
    assert_true(logged > 200);
    batch s = drain(c, 1000, "quarantine");
    assert_int_equal(s.taken, logged);
    assert_string_equal(s.halted, "");
    assert_int_equal(s.quarantined, 0);
    assert_true(s.deleted > 0);
    check_parent_child(c);
    /* every row written by apply is marked */
    itest_expect_sql(c, "SELECT count(*) FROM child_shadow WHERE _shadow_last_sync IS NULL "
                  "OR _shadow_migration_id <> '" MIG "' OR _shadow_source_table <> 'child'", "0");
    /* applied_total counts the change-log entries consumed */
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT applied_total FROM pgshadow.tables WHERE table_name = 'parent'");
    assert_int_equal(itest_query_long(c, sql), applied_before + parent_logged);
    /* the comparison can fail: a changed shadow column, an orphan row */
    itest_exec_ok(c, "UPDATE child_shadow SET note = 'tampered' WHERE id = 2");
    assert_int_equal(itest_query_long(c, "SELECT public.test_diff('child')"), 1);
    itest_exec_ok(c, "INSERT INTO child_shadow (id, parent_id, _shadow_sync_status) VALUES (99999, 1, 'synced')");
    assert_int_equal(itest_query_long(c, "SELECT public.test_diff('child')"), 2);
}

static void test_apply_mixed_row(void **state)
{
    itest_db *t = *state;
    run_mixed(t->c, "");
}

static void test_apply_mixed_statement(void **state)
{
    itest_db *t = *state;
    run_mixed(t->c, "UPDATE pgshadow.meta SET value = 'statement' WHERE key = 'capture_mode';");
}

/* A row inserted and updated 100 times in one batch is written once. */
static void test_hot_row(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, parent_child_schema);
    install(c, "", parent_child_register);
    itest_exec_ok(c, "INSERT INTO parent VALUES (1, 'hot', 0, 'h')");
    for (int i = 1; i <= 100; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "UPDATE parent SET name = 'hot%d' WHERE id = 1", i);
        itest_exec_ok(c, sql);
    }
    /* 1 insert + 100 updates */
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "101");
    batch b = apply1(c, 1000, "quarantine");
    assert_int_equal(b.taken, 101);
    assert_int_equal(b.upserted, 1);
    itest_expect_sql(c, "SELECT _shadow_version || ' ' || name FROM parent_shadow", "1 hot100");
    /* the next batch with this key updates it again: version 2 */
    itest_exec_ok(c, "UPDATE parent SET name = 'cold' WHERE id = 1");
    b = apply1(c, 1000, "quarantine");
    assert_int_equal(b.upserted, 1);
    itest_expect_sql(c, "SELECT _shadow_version || ' ' || name FROM parent_shadow", "2 cold");
    expect_converged(c, "parent");
}

/* Parents are upserted before children and children deleted before
 * parents, whatever the registration order, within one batch. */
static void test_fk_order(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, "CREATE TABLE a (id int PRIMARY KEY);"
               "CREATE TABLE b (id int PRIMARY KEY, a_id int NOT NULL REFERENCES a);"
               "CREATE TABLE c (id int PRIMARY KEY, b_id int NOT NULL REFERENCES b, a_id int REFERENCES a)");
    install(c, "",
            "SELECT pgshadow.register_table('public', 'c', NULL, '_shadow', '" MIG "', '{}');"
            "SELECT pgshadow.register_table('public', 'b', NULL, '_shadow', '" MIG "', '{}');"
            "SELECT pgshadow.register_table('public', 'a', NULL, '_shadow', '" MIG "', '{}');");
    /* the shadows carry the foreign keys (finish_install mirrors them) */
    itest_expect_sql(c, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                  "AND conrelid IN ('b_shadow'::regclass, 'c_shadow'::regclass)", "3");
    itest_exec_ok(c, "BEGIN; INSERT INTO a SELECT generate_series(1, 10); "
               "INSERT INTO b SELECT g, g FROM generate_series(1, 10) g; "
               "INSERT INTO c SELECT g, g, g FROM generate_series(1, 10) g; COMMIT");
    batch s = apply1(c, 1000, "quarantine");
    assert_int_equal(s.taken, 30);
    assert_int_equal(s.upserted, 30);
    assert_int_equal(s.quarantined, 0);
    itest_exec_ok(c, "BEGIN; DELETE FROM c; DELETE FROM b WHERE id > 5; DELETE FROM a WHERE id > 5; "
               "INSERT INTO a VALUES (11); INSERT INTO b VALUES (11, 11); COMMIT");
    s = apply1(c, 1000, "quarantine");
    assert_int_equal(s.quarantined, 0);
    assert_int_equal(s.deleted, 20);
    assert_int_equal(s.upserted, 2);
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    expect_converged(c, "a");
    expect_converged(c, "b");
    expect_converged(c, "c");
}

/* taken never exceeds p_limit; a full batch means more is waiting. */
static void test_limit(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, parent_child_schema);
    install(c, "", parent_child_register);
    itest_exec_ok(c, "INSERT INTO parent SELECT g, 'p', 0, NULL FROM generate_series(1, 250) g");
    batch b = apply1(c, 100, "quarantine");
    assert_int_equal(b.taken, 100);
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "150");
    /* the oldest first: ids 1..100 are applied, nothing else */
    itest_expect_sql(c, "SELECT min(id) || '-' || max(id) || '/' || count(*) FROM parent_shadow", "1-100/100");
    b = apply1(c, 100, "quarantine");
    assert_int_equal(b.taken, 100);
    b = apply1(c, 100, "quarantine");
    assert_int_equal(b.taken, 50);
    b = apply1(c, 100, "quarantine");
    assert_int_equal(b.taken, 0);
    expect_converged(c, "parent");
}

/* ---- quarantine and halt ------------------------------------------------ */

/* The shadow is stricter than the primary: score <= 10, unique email. */
static void poison_setup(PGconn *c)
{
    itest_exec_ok(c, parent_child_schema);
    install(c, "",
            "SELECT pgshadow.register_table('public', 'child', NULL, '_shadow', '" MIG "', '{}');"
            "SELECT pgshadow.register_table('public', 'parent', NULL, '_shadow', '" MIG "', '{}');");
    itest_exec_ok(c, "ALTER TABLE parent_shadow ADD CONSTRAINT score_max CHECK (score <= 10), "
               "ADD CONSTRAINT email_unique UNIQUE (email)");
    itest_exec_ok(c, "INSERT INTO parent SELECT g, 'p' || g, g % 10, 'e' || g FROM generate_series(1, 20) g");
    itest_exec_ok(c, "UPDATE parent SET score = 99 WHERE id = 7");          /* check */
    itest_exec_ok(c, "UPDATE parent SET email = 'e3' WHERE id = 13");       /* unique, with id 3 */
    itest_exec_ok(c, "INSERT INTO child SELECT g, g, 'c' FROM generate_series(1, 20) g");
    /* child 7's parent is quarantined: foreign key violation */
}

static void test_quarantine(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    poison_setup(c);
    batch s = drain(c, 1000, "quarantine");
    assert_string_equal(s.halted, "");
    /* child 13's parent is the quarantined parent 13 */
    assert_int_equal(s.quarantined, 4);
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "0");
    itest_expect_sql(c,
               "SELECT string_agg(t.table_name || ' ' || array_to_string(q.key, ',') || ' ' || q.sqlstate, '; ' "
               "ORDER BY q.sqlstate, q.key[1]::int) FROM pgshadow.quarantine q JOIN pgshadow.tables t USING (table_id)",
               "child 7 23503; child 13 23503; parent 13 23505; parent 7 23514");
    itest_expect_sql(c, "SELECT bool_and(message <> '' AND attempts = 1) FROM pgshadow.quarantine", "t");
    itest_expect_sql(c, "SELECT message FROM pgshadow.quarantine WHERE sqlstate = '23514'",
               "new row for relation \"parent_shadow\" violates check constraint \"score_max\"");
    itest_expect_sql(c, "SELECT detail LIKE '%(email)=(e3)%' FROM pgshadow.quarantine WHERE sqlstate = '23505'",
               "t");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.events WHERE what = 'quarantine'", "4");
    /* all other rows applied */
    itest_expect_sql(c, "SELECT count(*) FROM parent_shadow", "18");
    itest_expect_sql(c, "SELECT count(*) FROM child_shadow", "18");

    /* a change that still fails: attempts + 1, no new event */
    itest_exec_ok(c, "UPDATE parent SET score = 98 WHERE id = 7");
    s = drain(c, 1000, "quarantine");
    assert_int_equal(s.quarantined, 1);
    itest_expect_sql(c, "SELECT attempts FROM pgshadow.quarantine WHERE sqlstate = '23514'", "2");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.events WHERE what = 'quarantine'", "4");

    /* fixing the primary rows applies them and clears their quarantine */
    itest_exec_ok(c, "UPDATE parent SET score = 7 WHERE id = 7");
    itest_exec_ok(c, "UPDATE parent SET email = 'e13' WHERE id = 13");
    s = drain(c, 1000, "quarantine");
    assert_int_equal(s.quarantined, 0);
    itest_expect_sql(c, "SELECT string_agg(array_to_string(key, ','), ' ' ORDER BY key[1]::int) FROM pgshadow.quarantine",
               "7 13");
    expect_converged(c, "parent");

    /* the children's parents are there now: the batch that wrote them
     * re-queued the children rejected for a foreign key (23503) */
    itest_expect_sql(c, "SELECT string_agg(retry_requested::text, ' ' ORDER BY key[1]::int) FROM pgshadow.quarantine",
               "true true");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "2");
    s = drain(c, 1000, "quarantine");
    assert_int_equal(s.taken, 2);
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    expect_converged(c, "child");
    itest_expect_sql(c, "SELECT pgshadow.quarantine_retry()", "0");
}

/* A quarantined delete (a child still references the row in the shadow)
 * is retried as a delete and goes once the child is gone. */
static void test_quarantine_delete(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, "CREATE TABLE p (id int PRIMARY KEY); CREATE TABLE k (id int PRIMARY KEY, p_id int)");
    install(c, "",
            "SELECT pgshadow.register_table('public', 'p', NULL, '_shadow', '" MIG "', '{}');"
            "SELECT pgshadow.register_table('public', 'k', NULL, '_shadow', '" MIG "', '{}');");
    /* only the shadows have this foreign key */
    itest_exec_ok(c, "ALTER TABLE k_shadow ADD FOREIGN KEY (p_id) REFERENCES p_shadow");
    itest_exec_ok(c, "INSERT INTO p VALUES (1), (2); INSERT INTO k VALUES (1, 1)");
    drain(c, 1000, "quarantine");
    itest_exec_ok(c, "DELETE FROM p");
    batch s = drain(c, 1000, "quarantine");
    assert_int_equal(s.quarantined, 1);
    assert_int_equal(s.deleted, 1);
    itest_expect_sql(c, "SELECT array_to_string(key, ',') || ' ' || sqlstate FROM pgshadow.quarantine", "1 23503");
    itest_exec_ok(c, "DELETE FROM k");
    drain(c, 1000, "quarantine");
    itest_expect_sql(c, "SELECT pgshadow.quarantine_retry()", "1");
    drain(c, 1000, "quarantine");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    expect_converged(c, "p");
    expect_converged(c, "k");
}

static void test_halt(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, parent_child_schema);
    itest_exec_ok(c, "CREATE TABLE other (id int PRIMARY KEY, v text)");
    install(c, "",
            "SELECT pgshadow.register_table('public', 'parent', NULL, '_shadow', '" MIG "', '{}');"
            "SELECT pgshadow.register_table('public', 'other', NULL, '_shadow', '" MIG "', '{}');");
    itest_exec_ok(c, "ALTER TABLE parent_shadow ADD CONSTRAINT score_max CHECK (score <= 10)");
    itest_exec_ok(c, "INSERT INTO parent SELECT g, 'p' || g, g % 10, 'e' || g FROM generate_series(1, 20) g");
    itest_exec_ok(c, "INSERT INTO other SELECT g, 'o' FROM generate_series(1, 5) g");
    itest_exec_ok(c, "UPDATE parent SET score = 99 WHERE id = 7");
    batch b = apply1(c, 1000, "halt");
    /* '<table>: <SQLSTATE> <message> (key ...)' */
    if (strncmp(b.halted, "parent: 23514 ", 14) != 0 || !strstr(b.halted, "score_max") ||
        !strstr(b.halted, "(key {7})"))
        fail_msg("halted: %s", b.halted);
    assert_int_equal(b.taken, 26);
    assert_int_equal(b.upserted, 5);
    /* nothing of parent's batch, its change-log rows kept */
    itest_expect_sql(c, "SELECT count(*) FROM parent_shadow", "0");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log l JOIN pgshadow.tables t USING (table_id) "
                  "WHERE t.table_name = 'parent'", "21");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "21");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    expect_converged(c, "other");
    /* again: still halted, still nothing */
    b = apply1(c, 1000, "halt");
    assert_true(strstr(b.halted, "23514") != NULL);
    itest_expect_sql(c, "SELECT count(*) FROM parent_shadow", "0");
    /* fixed: everything applies */
    itest_exec_ok(c, "UPDATE parent SET score = 1 WHERE id = 7");
    b = apply1(c, 1000, "halt");
    assert_string_equal(b.halted, "");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "0");
    expect_converged(c, "parent");
}

/* ---- TRUNCATE ----------------------------------------------------------- */

static void test_truncate(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, parent_child_schema);
    install(c, "", parent_child_register);
    itest_exec_ok(c, "INSERT INTO parent SELECT g, 'p', 0, NULL FROM generate_series(1, 50) g");
    itest_exec_ok(c, "INSERT INTO child SELECT g, g, 'c' FROM generate_series(1, 50) g");
    drain(c, 1000, "quarantine");
    backfill_all(c, 1000);
    itest_expect_sql(c, "SELECT string_agg(backfill_state, ',') FROM pgshadow.tables", "done,done");
    itest_exec_ok(c, "TRUNCATE parent, child");
    itest_exec_ok(c, "INSERT INTO parent VALUES (100, 'after', 1, NULL)");
    batch b = drain(c, 1000, "quarantine");
    assert_int_equal(b.truncated, 2);
    /* A resync never empties the shadow (reads may be routed to it, other
     * tables may reference it): the shadows keep their rows until the copy
     * reconciles them; the row after the truncate is applied; the copy is
     * to be redone, reconciling. */
    itest_expect_sql(c, "SELECT count(*) FROM parent_shadow", "51");
    itest_expect_sql(c, "SELECT count(*) FROM child_shadow", "50");
    itest_expect_sql(c, "SELECT string_agg(backfill_state || ':' || coalesce(backfill_cursor::text, '-') || ':' "
                  "|| backfill_reconcile, ',') FROM pgshadow.tables", "pending:-:true,pending:-:true");
    itest_exec_ok(c, "INSERT INTO parent SELECT g, 'q', 0, NULL FROM generate_series(1, 10) g");
    /* parent_shadow is referenced by child_shadow, so it is reconciled row by
     * row (its extra rows queued as deletes, refused while children point at
     * them, retried when the child's copy is done); child_shadow is emptied */
    for (int i = 0; i < 3; i++) {
        backfill_all(c, 3);
        drain(c, 1000, "quarantine");
    }
    expect_converged(c, "parent");
    expect_converged(c, "child");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    itest_expect_sql(c, "SELECT count(*) FROM parent_shadow", "11");
    itest_expect_sql(c, "SELECT primary_rows || '/' || shadow_rows FROM pgshadow.tables WHERE table_name = 'parent'",
               "11/11");
    itest_expect_sql(c, "SELECT (after ->> 'shadow_emptied') || '/' || (after ->> 'reconcile') FROM pgshadow.events "
                  "WHERE what = 'backfill_started' AND table_name = 'child' ORDER BY event_id DESC LIMIT 1",
                  "true/false");
}

/* ---- backfill ----------------------------------------------------------- */

static void test_backfill(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, "CREATE SCHEMA \"Odd Schema\";"
               "CREATE TABLE \"Odd Schema\".\"Mixed \"\"Tbl\"\"\" (\"Tenant ID\" int NOT NULL, "
               "  \"ключ\" text NOT NULL, \"v a l\" jsonb, PRIMARY KEY (\"Tenant ID\", \"ключ\"));"
               "INSERT INTO \"Odd Schema\".\"Mixed \"\"Tbl\"\"\" "
               "  SELECT g % 7, 'k ' || g || ' ''x''', jsonb_build_object('g', g) FROM generate_series(1, 1000) g;"
               "CREATE TABLE \"Odd Schema\".plain (id int PRIMARY KEY, n int);"
               "INSERT INTO \"Odd Schema\".plain SELECT g, g FROM generate_series(1, 95) g");
    install(c, "",
            "SELECT pgshadow.register_table('Odd Schema', 'Mixed \"Tbl\"', NULL, '_shadow', '" MIG "', '{}');"
            "SELECT pgshadow.register_table('Odd Schema', 'plain', NULL, '_shadow', '" MIG "', '{}');");
    itest_expect_sql(c, "SELECT string_agg(backfill_state, ',' ORDER BY table_id) FROM pgshadow.tables",
               "pending,pending");

    /* first chunk: 100 rows in key order */
    itest_expect_sql(c, "SELECT table_name || ' ' || copied || ' ' || done || ' ' || rows_done || ' ' || rows_total "
                  "FROM pgshadow.backfill_step('" MIG "', 100)",
               "Mixed \"Tbl\" 100 false 100 1000");
    itest_expect_sql(c, "SELECT count(*) FROM \"Odd Schema\".\"Mixed \"\"Tbl\"\"_shadow\"", "100");
    itest_expect_sql(c, "SELECT count(*) FROM (SELECT * FROM \"Odd Schema\".\"Mixed \"\"Tbl\"\"\" "
                  "ORDER BY 1, 2 LIMIT 100) p JOIN \"Odd Schema\".\"Mixed \"\"Tbl\"\"_shadow\" "
                  "USING (\"Tenant ID\", \"ключ\")", "100");
    /* the cursor persists with its range (one range: backfill_step plans one) */
    char *cursor = itest_query(c, "SELECT b.cursor::text FROM pgshadow.backfill_ranges b JOIN pgshadow.tables t"
                                  " USING (table_id) WHERE t.table_name = 'Mixed \"Tbl\"'");
    char *want = itest_query(c, "SELECT ARRAY[\"Tenant ID\"::text, \"ключ\"]::text FROM \"Odd Schema\".\"Mixed \"\"Tbl\"\"\" "
                      "ORDER BY \"Tenant ID\", \"ключ\" OFFSET 99 LIMIT 1");
    assert_string_equal(cursor, want);
    free(cursor);
    free(want);

    /* a crash: a new connection continues from the persisted cursor, with
     * writes happening between the steps */
    PQfinish(t->c);
    t->c = c = itest_connect_db(t->name);
    itest_exec_ok(c, "SET TimeZone = 'America/New_York'");
    int steps = 0;
    for (;; steps++) {
        char *row = itest_query(c, "SELECT coalesce((SELECT copied || ' ' || done FROM pgshadow.backfill_step('" MIG
                         "', 100)), 'none')");
        bool none = strcmp(row, "none") == 0;
        free(row);
        if (none)
            break;
        /* concurrent writes: updates behind and ahead of the cursor, key
         * changes, deletes, inserts; apply runs between steps too */
        char sql[512];
        snprintf(sql, sizeof sql,
                 "UPDATE \"Odd Schema\".\"Mixed \"\"Tbl\"\"\" SET \"v a l\" = '{\"u\": %d}' "
                 "WHERE \"ключ\" LIKE 'k %d%%';"
                 "DELETE FROM \"Odd Schema\".\"Mixed \"\"Tbl\"\"\" WHERE \"ключ\" = 'k %d ''x''';"
                 "INSERT INTO \"Odd Schema\".\"Mixed \"\"Tbl\"\"\" VALUES (%d, 'new %d', NULL);"
                 "UPDATE \"Odd Schema\".\"Mixed \"\"Tbl\"\"\" SET \"Tenant ID\" = 100 + \"Tenant ID\" "
                 "WHERE \"ключ\" = 'k %d ''x''';"
                 "UPDATE \"Odd Schema\".plain SET n = n + 1 WHERE id %% 10 = %d",
                 steps, steps + 1, 3 * steps + 5, steps % 9, steps, 2 * steps + 11, steps % 10);
        itest_exec_ok(c, sql);
        if (steps % 3 == 0)
            drain(c, 50, "quarantine");
        assert_true(steps < 100);
    }
    /* 900 + new rows of the first table in 100s, 95 of the second */
    assert_true(steps >= 10);
    itest_expect_sql(c, "SELECT string_agg(backfill_state, ',' ORDER BY table_id) FROM pgshadow.tables", "done,done");
    /* exact counts at the end of the backfill... */
    itest_expect_sql(c, "SELECT bool_and(primary_rows IS NOT NULL AND counted_at IS NOT NULL AND backfill_done_at "
                  "IS NOT NULL) FROM pgshadow.tables", "t");
    drain(c, 1000, "quarantine");
    expect_converged(c, "Mixed \"Tbl\"");
    expect_converged(c, "plain");
    /* ...kept exact by apply afterwards */
    itest_expect_sql(c, "SELECT primary_rows || '/' || shadow_rows FROM pgshadow.tables WHERE table_name = 'plain'",
               "95/95");
    char *n = itest_query(c, "SELECT count(*) FROM \"Odd Schema\".\"Mixed \"\"Tbl\"\"\"");
    char *rows = itest_query(c, "SELECT primary_rows || '/' || shadow_rows FROM pgshadow.tables WHERE table_name = 'Mixed \"Tbl\"'");
    char both[64];
    snprintf(both, sizeof both, "%s/%s", n, n);
    assert_string_equal(rows, both);
    free(n);
    free(rows);
    itest_exec_ok(c, "INSERT INTO \"Odd Schema\".plain VALUES (1000, 1); DELETE FROM \"Odd Schema\".plain WHERE id < 3");
    drain(c, 1000, "quarantine");
    itest_expect_sql(c, "SELECT primary_rows || '/' || shadow_rows FROM pgshadow.tables WHERE table_name = 'plain'",
               "94/94");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.events WHERE what = 'backfill_done'", "2");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.backfill_step('" MIG "', 100)", "0");
}

/* Backfill puts rows the shadow rejects into the quarantine and goes on. */
static void test_backfill_quarantine(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, parent_child_schema);
    itest_exec_ok(c, "INSERT INTO parent SELECT g, 'p', g, NULL FROM generate_series(1, 30) g");
    install(c, "", parent_child_register);
    itest_exec_ok(c, "ALTER TABLE parent_shadow ADD CONSTRAINT score_max CHECK (score <= 25)");
    /* the mapping least(p.score, 1.0) keeps every score <= 1: map it away */
    itest_exec_ok(c, "UPDATE pgshadow.tables SET column_map = (SELECT jsonb_agg(CASE WHEN m->>'shadow' = 'score' "
               "THEN jsonb_set(m, '{expr}', '\"p.score\"') ELSE m END) FROM jsonb_array_elements(column_map) m), "
               "hash_expr = replace(hash_expr, 'least(p.score, 1.0)', 'p.score') WHERE table_name = 'parent'");
    backfill_all(c, 10);
    itest_expect_sql(c, "SELECT count(*) FROM parent_shadow", "25");
    itest_expect_sql(c, "SELECT string_agg(array_to_string(key, ','), ' ' ORDER BY key[1]::int) || ' ' || "
                  "min(sqlstate) FROM pgshadow.quarantine", "26 27 28 29 30 23514");
    itest_expect_sql(c, "SELECT primary_rows || '/' || shadow_rows FROM pgshadow.tables WHERE table_name = 'parent'",
               "30/25");
    itest_exec_ok(c, "UPDATE parent SET score = 1 WHERE id > 25");
    drain(c, 1000, "quarantine");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    expect_converged(c, "parent");
}

/* ---- the row hash by hand (docs/sync.md) -------------------------------- */

static void test_hash_by_hand(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, "CREATE TABLE orders (id int PRIMARY KEY, customer text, total numeric(10,2), "
               "placed_at timestamptz, ratio double precision, tags text[], meta jsonb, raw bytea, "
               "during interval, note varchar(20))");
    install(c, "", "SELECT pgshadow.register_table('public', 'orders', NULL, '_shadow', '" MIG "', '{}');");
    itest_exec_ok(c, "SET TimeZone = 'Pacific/Auckland'; SET extra_float_digits = 3; SET IntervalStyle = 'iso_8601'; "
               "SET bytea_output = 'escape'");
    itest_exec_ok(c, "INSERT INTO orders VALUES (42, 'Zoë \"Q\" O''Brien', 1234.50, '2024-02-29 23:30:00+00', 0.1, "
               "'{a,\"b c\"}', '{\"k\": [1, 2.50, null]}', '\\x00ff', '1 day 02:03:04', NULL)");
    drain(c, 1000, "quarantine");
    /* exactly the query docs/sync.md gives, in a session with default settings */
    PGconn *h = itest_connect_db(t->name);
    char *by_hand = itest_query(h, "SET TimeZone = 'UTC';"
                         "SELECT encode(sha256(convert_to(ROW("
                         "p.id, p.customer, p.total, p.placed_at, p.ratio, p.tags, p.meta, p.raw, p.during, p.note"
                         ")::text, 'UTF8')), 'hex') FROM public.orders p WHERE p.id = 42");
    char *stored = itest_query(h, "SELECT _shadow_validation_hash FROM public.orders_shadow WHERE id = 42");
    assert_int_equal(strlen(stored), 64);
    assert_string_equal(by_hand, stored);
    /* and the registry's expression gives the same */
    char *expr = itest_query(h, "SELECT hash_expr FROM pgshadow.tables WHERE table_name = 'orders'");
    char sql[4096];
    snprintf(sql, sizeof sql, "SELECT %s FROM public.orders p WHERE p.id = 42", expr);
    char *via_registry = itest_query(h, sql);
    assert_string_equal(via_registry, stored);
    free(via_registry);
    free(expr);
    free(by_hand);
    free(stored);
    PQfinish(h);
    expect_converged(c, "orders");
}

static void test_replication_lag(void **state)
{
    itest_db *t = *state;
    install(t->c, "", "");
    /* the harness cluster has no standby */
    itest_expect_sql(t->c, "SELECT pgshadow.replication_lag_ms()", "0");
    /* no registered table: nothing to do, no error */
    itest_expect_sql(t->c, "SELECT taken || ' ' || coalesce(halted, '-') FROM pgshadow.apply_batch('" MIG "', 10, "
                     "'quarantine')", "0 -");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.backfill_step('" MIG "', 10)", "0");
}

/* The daemon role may run the sync functions, and only it (and operator
 * for quarantine_retry). */
static void test_grants(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, parent_child_schema);
    install(c, "", parent_child_register);
    itest_expect_sql(c, "SELECT has_function_privilege('pgshadow_daemon', 'pgshadow.apply_batch(text, integer, text)', "
                  "'EXECUTE') AND has_function_privilege('pgshadow_daemon', 'pgshadow.backfill_step(text, integer)', "
                  "'EXECUTE') AND has_function_privilege('pgshadow_operator', 'pgshadow.quarantine_retry(bigint)', "
                  "'EXECUTE') AND NOT has_function_privilege('public', 'pgshadow.apply_batch(text, integer, text)', "
                  "'EXECUTE') AND NOT has_function_privilege('pgshadow_viewer', "
                  "'pgshadow.backfill_step(text, integer)', 'EXECUTE')",
               "t");
    itest_exec_ok(c, "INSERT INTO parent VALUES (1, 'a', 1, NULL)");
    itest_exec_ok(c, "DROP ROLE IF EXISTS itest_apply_daemon; CREATE ROLE itest_apply_daemon; "
               "GRANT pgshadow_daemon TO itest_apply_daemon");
    itest_exec_ok(c, "SET ROLE itest_apply_daemon");
    batch b = apply1(c, 100, "quarantine");
    assert_int_equal(b.upserted, 1);
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.backfill_step('" MIG "', 100)", "1");
    itest_exec_ok(c, "RESET ROLE; DROP OWNED BY itest_apply_daemon; DROP ROLE itest_apply_daemon");
    expect_converged(c, "parent");
}

/* NOTIFYs that arrived on a LISTENing connection (consumed). */
static int notifies(PGconn *l)
{
    int n = 0;
    assert_int_equal(PQconsumeInput(l), 1);
    PGnotify *nf;
    while ((nf = PQnotifies(l)) != NULL) {
        assert_string_equal(nf->relname, "pgshadow_changes");
        n++;
        PQfreemem(nf);
    }
    return n;
}

/* A NOTIFY is delivered to listeners at the writer's commit, before the
 * commit returns to the writer; a short round trip on the listener makes
 * sure the listener's socket has it. */
static int notifies_after_commit(PGconn *l)
{
    itest_exec_ok(l, "SELECT 1");
    return notifies(l);
}

/* The wake-up flag (pgshadow.wakeup): capture NOTIFYs only while armed;
 * apply_batch disarms when it takes changes (not when the log is empty);
 * wakeup_arm re-arms. Both capture modes; the per-table switch still wins. */
static void wakeup_case(PGconn *c, const char *pre)
{
    itest_exec_ok(c, parent_child_schema);
    install(c, pre, parent_child_register);
    PGconn *l = itest_connect_db(PQdb(c));
    itest_exec_ok(l, "LISTEN pgshadow_changes");
    /* installed armed: a fresh install must wake a running daemon */
    itest_expect_sql(c, "SELECT armed FROM pgshadow.wakeup WHERE migration_id = '" MIG "'", "t");

    itest_exec_ok(c, "INSERT INTO parent VALUES (1, 'a', 1, NULL)");
    assert_int_equal(notifies_after_commit(l), 1);
    /* one NOTIFY per transaction however many rows (PostgreSQL folds
     * identical ones) */
    itest_exec_ok(c, "BEGIN; INSERT INTO parent VALUES (2, 'b', 1, NULL); "
               "INSERT INTO child VALUES (1, 2, 'x'); UPDATE parent SET name = 'bb' WHERE id = 2; COMMIT");
    assert_int_equal(notifies_after_commit(l), 1);

    /* apply takes changes: disarmed, and writers stop notifying */
    batch b = apply1(c, 100, "quarantine");
    assert_true(b.taken > 0);
    itest_expect_sql(c, "SELECT armed FROM pgshadow.wakeup WHERE migration_id = '" MIG "'", "f");
    (void)notifies_after_commit(l);
    itest_exec_ok(c, "INSERT INTO parent VALUES (3, 'c', 1, NULL)");
    itest_exec_ok(c, "UPDATE parent SET id = 30 WHERE id = 3");
    itest_exec_ok(c, "DELETE FROM child");
    assert_int_equal(notifies_after_commit(l), 0);
    /* ...but every change is still logged */
    itest_expect_sql(c, "SELECT count(*) >= 4 FROM pgshadow.change_log", "t");

    /* draining, then an empty round: the empty round does not arm */
    batch d = drain(c, 100, "quarantine");
    assert_true(d.taken >= 4);
    b = apply1(c, 100, "quarantine");
    assert_int_equal(b.taken, 0);
    itest_expect_sql(c, "SELECT armed FROM pgshadow.wakeup WHERE migration_id = '" MIG "'", "f");
    itest_exec_ok(c, "INSERT INTO parent VALUES (4, 'd', 1, NULL)");
    assert_int_equal(notifies_after_commit(l), 0);

    /* armed again: the next write notifies; an apply that takes nothing
     * leaves it armed (the daemon's recheck round) */
    itest_exec_ok(c, "SELECT pgshadow.wakeup_arm('" MIG "')");
    itest_expect_sql(c, "SELECT armed FROM pgshadow.wakeup WHERE migration_id = '" MIG "'", "t");
    drain(c, 100, "quarantine");
    itest_expect_sql(c, "SELECT armed FROM pgshadow.wakeup WHERE migration_id = '" MIG "'", "f");
    itest_exec_ok(c, "SELECT pgshadow.wakeup_arm('" MIG "')");
    b = apply1(c, 100, "quarantine");
    assert_int_equal(b.taken, 0);
    itest_expect_sql(c, "SELECT armed FROM pgshadow.wakeup WHERE migration_id = '" MIG "'", "t");
    (void)notifies_after_commit(l);
    itest_exec_ok(c, "UPDATE parent SET name = 'aa' WHERE id = 1");
    assert_int_equal(notifies_after_commit(l), 1);
    itest_exec_ok(c, "TRUNCATE child");
    assert_int_equal(notifies_after_commit(l), 1);

    /* no wake-up row (deleted by hand): capture notifies, the safe side */
    drain(c, 100, "quarantine");
    itest_exec_ok(c, "DELETE FROM pgshadow.wakeup");
    (void)notifies_after_commit(l);
    itest_exec_ok(c, "INSERT INTO parent VALUES (6, 'f', 1, NULL)");
    assert_int_equal(notifies_after_commit(l), 1);
    /* the daemon's arm recreates it */
    itest_exec_ok(c, "SELECT pgshadow.wakeup_arm('" MIG "')");
    itest_expect_sql(c, "SELECT armed FROM pgshadow.wakeup WHERE migration_id = '" MIG "'", "t");
    drain(c, 100, "quarantine");

    /* capture switched off: nothing logged, no NOTIFY, armed or not */
    (void)notifies_after_commit(l);
    itest_exec_ok(c, "SELECT pgshadow.disable_writes()");
    itest_exec_ok(c, "INSERT INTO parent VALUES (5, 'e', 1, NULL)");
    assert_int_equal(notifies_after_commit(l), 0);
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "0");
    /* back on: a full resync is queued ('T'); apply it and copy again */
    itest_exec_ok(c, "SELECT pgshadow.enable_writes()");
    drain(c, 100, "quarantine");
    backfill_all(c, 100);
    drain(c, 100, "quarantine");
    PQfinish(l);
    expect_converged(c, "parent");
    expect_converged(c, "child");
}

static void test_wakeup_row(void **state)
{
    itest_db *t = *state;
    wakeup_case(t->c, "");
}

static void test_wakeup_statement(void **state)
{
    itest_db *t = *state;
    wakeup_case(t->c, "UPDATE pgshadow.meta SET value = 'statement' WHERE key = 'capture_mode';");
}

/* ---- reviewer defects (sync-fix) ----------------------------------------- */

/* Parents pa and children ch with ON UPDATE CASCADE (and the default ON
 * DELETE NO ACTION), copied to the shadows by finish_install. */
static void fk_cascade_setup(PGconn *c)
{
    itest_exec_ok(c, "CREATE TABLE pa (id int PRIMARY KEY, v text);"
               "CREATE TABLE ch (id int PRIMARY KEY, pa_id int NOT NULL REFERENCES pa ON UPDATE CASCADE)");
    install(c, "",
            "SELECT pgshadow.register_table('public', 'ch', NULL, '_shadow', '" MIG "', '{}');"
            "SELECT pgshadow.register_table('public', 'pa', NULL, '_shadow', '" MIG "', '{}');");
    itest_expect_sql(c, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'ch_shadow'::regclass "
                  "AND confupdtype = 'c'", "1");
    itest_exec_ok(c, "INSERT INTO pa VALUES (1, 'one'), (2, 'two'); INSERT INTO ch SELECT g, 1 FROM generate_series(1, 3) g");
    drain(c, 1000, "quarantine");
}

/* 1a: a parent key change (children follow by ON UPDATE CASCADE), and
 * children re-pointed then their parent deleted in one transaction, leave
 * no orphan parent in the shadow and nothing in the quarantine, with one
 * batch and with batches of one or two changes. */
static void fk_cascade_case(PGconn *c, int limit)
{
    fk_cascade_setup(c);
    itest_exec_ok(c, "UPDATE pa SET id = 100 WHERE id = 1");
    batch s = drain(c, limit, "quarantine");
    assert_string_equal(s.halted, "");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    itest_expect_sql(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM pa_shadow", "2,100");
    expect_converged(c, "pa");
    expect_converged(c, "ch");
    itest_exec_ok(c, "BEGIN; UPDATE ch SET pa_id = 2 WHERE pa_id = 100; DELETE FROM pa WHERE id = 100; COMMIT");
    s = drain(c, limit, "quarantine");
    assert_string_equal(s.halted, "");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    itest_expect_sql(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM pa_shadow", "2");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "0");
    expect_converged(c, "pa");
    expect_converged(c, "ch");
}

static void test_fk_cascade_one_batch(void **state) { fk_cascade_case(((itest_db *)*state)->c, 1000); }
static void test_fk_cascade_limit1(void **state) { fk_cascade_case(((itest_db *)*state)->c, 1); }
static void test_fk_cascade_limit2(void **state) { fk_cascade_case(((itest_db *)*state)->c, 2); }

/* 1b: a DEFERRABLE INITIALLY DEFERRED foreign key, a transaction inserting
 * the child before the parent, applied one change per batch: apply_batch
 * never fails at COMMIT, the child is rejected at once and comes back by
 * itself when its parent arrives. */
static void test_deferred_fk(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, "CREATE TABLE dp (id int PRIMARY KEY);"
               "CREATE TABLE dc (id int PRIMARY KEY, dp_id int REFERENCES dp DEFERRABLE INITIALLY DEFERRED)");
    install(c, "",
            "SELECT pgshadow.register_table('public', 'dc', NULL, '_shadow', '" MIG "', '{}');"
            "SELECT pgshadow.register_table('public', 'dp', NULL, '_shadow', '" MIG "', '{}');");
    itest_expect_sql(c, "SELECT condeferred FROM pg_constraint WHERE contype = 'f' AND conrelid = 'dc_shadow'::regclass",
               "t");
    itest_exec_ok(c, "BEGIN; INSERT INTO dc VALUES (1, 1); INSERT INTO dp VALUES (1); COMMIT");
    batch b = apply1(c, 1, "quarantine"); /* the child alone: rejected, not a failed COMMIT */
    assert_int_equal(b.taken, 1);
    assert_int_equal(b.quarantined, 1);
    itest_expect_sql(c, "SELECT sqlstate FROM pgshadow.quarantine", "23503");
    drain(c, 1, "quarantine"); /* the parent, then the child re-queued by it */
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    itest_expect_sql(c, "SELECT count(*) FROM dc_shadow", "1");
    expect_converged(c, "dp");
    expect_converged(c, "dc");
    /* backfill_step too checks at once (a rejected row is quarantined) */
    itest_exec_ok(c, "INSERT INTO dp VALUES (2); INSERT INTO dc VALUES (2, 2)");
    itest_exec_ok(c, "DELETE FROM pgshadow.change_log");
    itest_exec_ok(c, "SET session_replication_role = replica; DELETE FROM dp WHERE id = 2; "
               "SET session_replication_role = origin");
    backfill_all(c, 1);
    itest_expect_sql(c, "SELECT string_agg(array_to_string(key, ','), ' ') || ' ' || min(sqlstate) FROM pgshadow.quarantine",
               "2 23503");
}

/* 1c: two rows swap a value unique in the shadow (through a temporary
 * value on the primary): applied together in one batch; with one change
 * per batch they are quarantined, and one quarantine_retry resolves both. */
static void swap_setup(PGconn *c)
{
    itest_exec_ok(c, "CREATE TABLE u (id int PRIMARY KEY, email text NOT NULL UNIQUE)");
    install(c, "", "SELECT pgshadow.register_table('public', 'u', NULL, '_shadow', '" MIG "', '{}');");
    itest_expect_sql(c, "SELECT count(*) FROM pg_index WHERE indrelid = 'u_shadow'::regclass AND indisunique", "2");
    itest_exec_ok(c, "INSERT INTO u VALUES (1, 'a'), (2, 'b'), (3, 'c')");
    drain(c, 1000, "quarantine");
    itest_exec_ok(c, "BEGIN; UPDATE u SET email = 'tmp' WHERE id = 1; UPDATE u SET email = 'a' WHERE id = 2; "
               "UPDATE u SET email = 'b' WHERE id = 1; UPDATE u SET email = 'c2' WHERE id = 3; COMMIT");
}

static void test_unique_swap(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    swap_setup(c);
    batch b = drain(c, 1000, "quarantine");
    assert_int_equal(b.quarantined, 0);
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    itest_expect_sql(c, "SELECT string_agg(id || email, ',' ORDER BY id) FROM u_shadow", "1b,2a,3c2");
    expect_converged(c, "u");
    /* the counts: the swap deleted and re-inserted rows, the count stays */
    itest_exec_ok(c, "SELECT count(*) FROM pgshadow.backfill_step('" MIG "', 100)");
    itest_exec_ok(c, "BEGIN; UPDATE u SET email = 'x' WHERE id = 1; UPDATE u SET email = 'b' WHERE id = 2; "
               "UPDATE u SET email = 'a' WHERE id = 1; COMMIT");
    drain(c, 1000, "quarantine");
    itest_expect_sql(c, "SELECT shadow_rows FROM pgshadow.tables", "3");
    expect_converged(c, "u");
}

static void test_unique_swap_retry(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    swap_setup(c);
    drain(c, 1, "quarantine");
    itest_expect_sql(c, "SELECT string_agg(array_to_string(key, ',') || ' ' || sqlstate, '; ' ORDER BY key) "
                  "FROM pgshadow.quarantine", "1 23505; 2 23505");
    itest_expect_sql(c, "SELECT pgshadow.quarantine_retry()", "2");
    drain(c, 1000, "quarantine");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    expect_converged(c, "u");
}

/* A delete the shadow refuses for one key (a child still points at it) must
 * not hold back the table's other deletes: here row 1 is deleted and row 4
 * takes over its unique email in the same batch; row 2 keeps a child in the
 * shadow (the FK exists only there). Row 4 must apply, only row 2 is
 * quarantined (23503). */
static void test_held_delete_frees_unique(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, "CREATE TABLE hu (id int PRIMARY KEY, email text NOT NULL); "
               "CREATE TABLE hk (id int PRIMARY KEY, hu_id int)");
    install(c, "",
            "SELECT pgshadow.register_table('public', 'hu', NULL, '_shadow', '" MIG "', '{}');"
            "SELECT pgshadow.register_table('public', 'hk', NULL, '_shadow', '" MIG "', '{}');");
    itest_exec_ok(c, "ALTER TABLE hu_shadow ADD UNIQUE (email); "
               "ALTER TABLE hk_shadow ADD FOREIGN KEY (hu_id) REFERENCES hu_shadow");
    itest_exec_ok(c, "INSERT INTO hu VALUES (1, 'a'), (2, 'b'), (3, 'c'); INSERT INTO hk VALUES (10, 2)");
    drain(c, 1000, "quarantine");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    itest_exec_ok(c, "BEGIN; DELETE FROM hu WHERE id IN (1, 2); INSERT INTO hu VALUES (4, 'a'); COMMIT");
    drain(c, 1000, "quarantine");
    itest_expect_sql(c, "SELECT string_agg(id || email, ',' ORDER BY id) FROM hu_shadow", "2b,3c,4a");
    itest_expect_sql(c, "SELECT string_agg(array_to_string(key, ',') || ' ' || sqlstate, '; ') "
                  "FROM pgshadow.quarantine", "2 23503");
}

/* Tables op (parent) and ok (child; the foreign key only between the
 * shadows), and child 1 pointing at parent 99, which does not exist: after a
 * drain, key 1 of ok is quarantined with 23503. */
static void orphan_setup(PGconn *c)
{
    itest_exec_ok(c, "CREATE TABLE op (id int PRIMARY KEY); CREATE TABLE ok (id int PRIMARY KEY, op_id int)");
    install(c, "",
            "SELECT pgshadow.register_table('public', 'op', NULL, '_shadow', '" MIG "', '{}');"
            "SELECT pgshadow.register_table('public', 'ok', NULL, '_shadow', '" MIG "', '{}');");
    itest_exec_ok(c, "ALTER TABLE ok_shadow ADD FOREIGN KEY (op_id) REFERENCES op_shadow");
    itest_exec_ok(c, "INSERT INTO ok VALUES (1, 99)");
    drain(c, 1000, "quarantine");
}

/* A related write: parent row `id` inserted and applied in full batches
 * (limit 1, as while a backlog drains, so the backoff applies), with the
 * child's re-queued 'D' when there is one. The orphan's attempts after it;
 * the change log is drained every time. */
static long orphan_attempts_after_write(PGconn *c, int id)
{
    char sql[96];
    snprintf(sql, sizeof sql, "INSERT INTO op VALUES (%d)", id);
    itest_exec_ok(c, sql);
    drain(c, 1, "quarantine");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "0");
    return itest_query_long(c, "SELECT attempts FROM pgshadow.quarantine");
}

/* A true orphan (its parent never comes) is retried at once three times,
 * then backs off 2, 4, 8 s ... (at most 2^13 s) since it last failed:
 * steady writes to the parent table do not re-queue it in every batch.
 * No wall-clock waits: the time since the last failure is set by moving
 * last_seen back, with at least a second of margin either side of each
 * boundary, so a slow machine cannot change an outcome. */
static void test_orphan_requeue_backs_off(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    orphan_setup(c); /* parent 99 never comes */
    itest_expect_sql(c, "SELECT attempts || ' ' || sqlstate FROM pgshadow.quarantine", "1 23503");
    /* the first three retries: at once, one per related write */
    int id = 1;
    for (long want = 2; want <= 4; want++)
        assert_int_equal(orphan_attempts_after_write(c, id++), want);
    /* then, per attempt count, the wait since the last failure: not yet
     * (failed just now; half the wait ago), then due (a second past it) */
    static const struct {
        int attempts;
        int wait_s;
    } steps[] = {{4, 2}, {5, 4}, {6, 8}, {7, 16}, {16, 8192}, {20, 8192}};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        char sql[160];
        long a = steps[i].attempts;
        snprintf(sql, sizeof sql, "UPDATE pgshadow.quarantine SET attempts = %ld, last_seen = now()", a);
        itest_exec_ok(c, sql);
        if (orphan_attempts_after_write(c, id++) != a)
            fail_msg("attempts %ld: re-queued right after it failed (wait %d s)", a, steps[i].wait_s);
        snprintf(sql, sizeof sql, "UPDATE pgshadow.quarantine SET last_seen = now() - interval '%d ms'",
                 steps[i].wait_s * 500);
        itest_exec_ok(c, sql);
        if (orphan_attempts_after_write(c, id++) != a)
            fail_msg("attempts %ld: re-queued after half its wait of %d s", a, steps[i].wait_s);
        snprintf(sql, sizeof sql, "UPDATE pgshadow.quarantine SET last_seen = now() - interval '%d s'",
                 steps[i].wait_s + 1);
        itest_exec_ok(c, sql);
        if (orphan_attempts_after_write(c, id++) != a + 1)
            fail_msg("attempts %ld: not re-queued %d s after it failed (wait %d s)", a,
                     steps[i].wait_s + 1, steps[i].wait_s);
    }
    /* a batch that takes less than its limit re-queues it, backoff or not
     * (test_orphan_requeue_when_drained); here every batch was full */
    itest_expect_sql(c, "SELECT sqlstate FROM pgshadow.quarantine", "23503");
}

/* The 23503 re-queue goes by the key's current SQLSTATE: a key that failed a
 * CHECK (23514), then, changed, its foreign key (23503), is re-queued when
 * its parent arrives. A quarantine that kept the first SQLSTATE would leave
 * it there for good. */
static void test_quarantine_sqlstate_follows_failure(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, "CREATE TABLE op (id int PRIMARY KEY); CREATE TABLE ok (id int PRIMARY KEY, op_id int, v int)");
    install(c, "",
            "SELECT pgshadow.register_table('public', 'op', NULL, '_shadow', '" MIG "', '{}');"
            "SELECT pgshadow.register_table('public', 'ok', NULL, '_shadow', '" MIG "', '{}');");
    /* only the shadows have these constraints */
    itest_exec_ok(c, "ALTER TABLE ok_shadow ADD CONSTRAINT v_positive CHECK (v >= 0), "
                     "ADD FOREIGN KEY (op_id) REFERENCES op_shadow");
    itest_exec_ok(c, "INSERT INTO op VALUES (1); INSERT INTO ok VALUES (1, NULL, -1), (2, 1, 1)");
    drain(c, 1000, "quarantine");
    itest_expect_sql(c, "SELECT array_to_string(key, ',') || ' ' || sqlstate || ' ' || attempts "
                        "FROM pgshadow.quarantine", "1 23514 1");
    /* fixed for the CHECK, but now pointing at a parent that is not there */
    itest_exec_ok(c, "UPDATE ok SET v = 1, op_id = 99 WHERE id = 1");
    drain(c, 1000, "quarantine");
    itest_expect_sql(c, "SELECT array_to_string(key, ',') || ' ' || sqlstate || ' ' || attempts "
                        "FROM pgshadow.quarantine", "1 23503 2");
    itest_expect_sql(c, "SELECT message LIKE '%foreign key%' FROM pgshadow.quarantine", "t");
    /* the parent arrives: the key comes back by itself and applies */
    itest_exec_ok(c, "INSERT INTO op VALUES (99)");
    drain(c, 1000, "quarantine");
    drain(c, 1000, "quarantine");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    itest_expect_sql(c, "SELECT string_agg(id || ':' || op_id || ':' || v, ',' ORDER BY id) FROM ok_shadow",
                     "1:99:1,2:1:1");
    expect_converged(c, "ok");
    expect_converged(c, "op");
}

/* Apply deletes exactly the change-log entries it took. A writer holds seq 2
 * uncommitted while seqs 1 and 3 commit; apply takes 1 and 3 and stalls
 * (a SHARE lock on the shadow) until seq 2 has committed, so when it deletes
 * its entries seq 2 lies inside the range of the taken ones. Seq 2 must stay
 * for the next batch: deleting it (by range rather than by identity) loses
 * row 2 for good. */
static void test_late_commit_inside_taken_range(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, "CREATE TABLE lc (id int PRIMARY KEY, v text)");
    install(c, "", "SELECT pgshadow.register_table('public', 'lc', NULL, '_shadow', '" MIG "', '{}');");
    PGconn *w = itest_connect_db(t->name), *lk = itest_connect_db(t->name),
           *ap = itest_connect_db(t->name);
    itest_exec_ok(c, "INSERT INTO lc VALUES (1, 'one')");
    itest_exec_ok(w, "BEGIN; INSERT INTO lc VALUES (2, 'two')");
    itest_exec_ok(c, "INSERT INTO lc VALUES (3, 'three')");
    itest_expect_sql(c, "SELECT string_agg(key[1], ',' ORDER BY seq) FROM pgshadow.change_log", "1,3");

    itest_exec_ok(lk, "BEGIN; LOCK TABLE lc_shadow IN SHARE MODE");
    assert_int_equal(PQsendQuery(ap, "SELECT taken, upserted FROM pgshadow.apply_batch('" MIG
                                     "', 1000, 'quarantine')"), 1);
    /* apply has taken its entries and waits for the shadow (it gives up
     * after its own lock_timeout of 5 s: everything below takes
     * milliseconds) */
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %d",
             PQbackendPID(ap));
    bool waiting = false;
    for (int64_t end = itest_now_ms() + 4000; !waiting && itest_now_ms() < end;) {
        char *v = itest_query(c, sql);
        waiting = strcmp(v, "t") == 0;
        free(v);
        if (!waiting)
            itest_sleep_ms(10);
    }
    itest_exec_ok(w, "COMMIT");
    /* seq 2 is the middle one */
    itest_expect_sql(c, "SELECT string_agg(key[1], ',' ORDER BY seq) FROM pgshadow.change_log", "1,2,3");
    itest_exec_ok(lk, "COMMIT");
    PGresult *r = PQgetResult(ap);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("apply_batch: %s", PQresultErrorMessage(r));
    char got[64];
    snprintf(got, sizeof got, "%s %s", PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
    PQclear(r);
    while ((r = PQgetResult(ap)) != NULL)
        PQclear(r);
    assert_true(waiting); /* the stall happened (checked after the cleanup) */
    assert_string_equal(got, "2 2");
    /* entry 2 was not taken: it stays, and the next batch applies it */
    itest_expect_sql(c, "SELECT string_agg(op || ':' || key[1], ',') FROM pgshadow.change_log", "I:2");
    itest_expect_sql(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM lc_shadow", "1,3");
    batch b = drain(c, 1000, "quarantine");
    assert_int_equal(b.taken, 1);
    itest_expect_sql(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM lc_shadow", "1,2,3");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "0");
    expect_converged(c, "lc");
    PQfinish(ap);
    PQfinish(lk);
    PQfinish(w);
}

/* The backoff's blind spot: a key in backoff when the last related write is
 * applied. A batch that takes less than its limit (the log drained) re-queues
 * it anyway, so it applies once its parent exists, with no further writes. */
static void test_orphan_requeue_when_drained(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    orphan_setup(c); /* parent 99 not there yet */
    /* put the key deep into its backoff (attempts 9: 64 s) */
    itest_exec_ok(c, "UPDATE pgshadow.quarantine SET attempts = 9, last_seen = now() - interval '1 second'");
    /* the parent arrives, in a batch that drains the log: the key applies */
    itest_exec_ok(c, "INSERT INTO op VALUES (99)");
    drain(c, 1000, "quarantine");
    /* that batch re-queued the key ('D', backoff or not); the next applies it */
    itest_expect_sql(c, "SELECT string_agg(op || ':' || array_to_string(key, ','), ' ') FROM pgshadow.change_log",
                     "D:1");
    drain(c, 1000, "quarantine");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
    itest_expect_sql(c, "SELECT count(*) FROM ok_shadow WHERE op_id = 99", "1");
    expect_converged(c, "ok");
    expect_converged(c, "op");
}

/* 1d: rows the shadow's own ON DELETE CASCADE removes are subtracted from
 * shadow_rows (here the cascade exists only between the shadows). */
static void test_counts_cascade(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, "CREATE TABLE p (id int PRIMARY KEY); CREATE TABLE k (id int PRIMARY KEY, p_id int)");
    install(c, "",
            "SELECT pgshadow.register_table('public', 'p', NULL, '_shadow', '" MIG "', '{}');"
            "SELECT pgshadow.register_table('public', 'k', NULL, '_shadow', '" MIG "', '{}');");
    itest_exec_ok(c, "ALTER TABLE k_shadow ADD FOREIGN KEY (p_id) REFERENCES p_shadow ON DELETE CASCADE");
    itest_exec_ok(c, "INSERT INTO p SELECT generate_series(1, 10); INSERT INTO k SELECT g, 1 + g % 10 FROM generate_series(1, 30) g");
    drain(c, 1000, "quarantine");
    backfill_all(c, 100);
    itest_expect_sql(c, "SELECT string_agg(table_name || shadow_rows, ',' ORDER BY table_name) FROM pgshadow.tables",
               "k30,p10");
    itest_exec_ok(c, "DELETE FROM p WHERE id <= 4");
    drain(c, 1000, "quarantine");
    itest_expect_sql(c, "SELECT count(*) FROM k_shadow", "18");
    itest_expect_sql(c, "SELECT string_agg(table_name || shadow_rows, ',' ORDER BY table_name) FROM pgshadow.tables",
               "k18,p6");
}

/* 1e: floating-point key columns are refused at registration. */
static void test_float_key(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, "CREATE TABLE fl (id int NOT NULL, x double precision NOT NULL, PRIMARY KEY (id, x));"
               "CREATE TABLE fr (r real PRIMARY KEY);"
               "CREATE DOMAIN f1 AS double precision; CREATE DOMAIN f2 AS f1;"
               "CREATE TABLE fd (d f2 PRIMARY KEY); CREATE TABLE fa (a f2[] PRIMARY KEY)");
    const char *regs[] = {
        "SELECT pgshadow.register_table('public', 'fl', NULL, '_shadow', '" MIG "', '{}')",
        "SELECT pgshadow.register_table('public', 'fr', NULL, '_shadow', '" MIG "', '{}')",
        "SELECT pgshadow.register_table('public', 'fd', NULL, '_shadow', '" MIG "', '{}')",
        "SELECT pgshadow.register_table('public', 'fa', NULL, '_shadow', '" MIG "', '{}')",
    };
    const char *want[] = {"key column x of table public.fl is a floating-point type",
                          "key column r of table public.fr is a floating-point type",
                          "key column d of table public.fd is a floating-point type",
                          "key column a of table public.fa is a floating-point type"};
    char *schema = itest_install_sql();
    for (int i = 0; i < 4; i++) {
        itest_exec_ok(c, "BEGIN");
        itest_exec_ok(c, schema);
        PGresult *r = PQexec(c, regs[i]);
        const char *msg = PQresultErrorMessage(r);
        if (!strstr(msg, want[i]))
            fprintf(stderr, "want an error containing '%s', got: %s\n", want[i], msg);
        assert_non_null(strstr(msg, want[i]));
        PQclear(r);
        itest_exec_ok(c, "ROLLBACK");
    }
    free(schema);
}

/* 3: poison rows among many are found exactly (bisection), the rest apply. */
static void test_poison_bisect(void **state)
{
    itest_db *t = *state;
    PGconn *c = t->c;
    itest_exec_ok(c, "CREATE TABLE w (id int PRIMARY KEY, score int)");
    install(c, "", "SELECT pgshadow.register_table('public', 'w', NULL, '_shadow', '" MIG "', '{}');");
    itest_exec_ok(c, "ALTER TABLE w_shadow ADD CONSTRAINT small CHECK (score < 100)");
    /* a sequence is not rolled back with the sub-transactions: it counts
     * the statements the fallback ran */
    itest_exec_ok(c, "CREATE SEQUENCE tries; CREATE FUNCTION count_try() RETURNS trigger LANGUAGE plpgsql AS "
               "$$BEGIN PERFORM nextval('public.tries'); RETURN NULL; END$$; "
               "CREATE TRIGGER t BEFORE INSERT ON w_shadow FOR EACH STATEMENT EXECUTE FUNCTION public.count_try()");
    itest_exec_ok(c, "INSERT INTO w SELECT g, CASE WHEN g IN (1, 777, 778, 2999, 3000) THEN 100 ELSE 1 END "
               "FROM generate_series(1, 3000) g");
    batch b = apply1(c, 5000, "quarantine");
    assert_int_equal(b.taken, 3000);
    assert_int_equal(b.quarantined, 5);
    assert_int_equal(b.upserted, 2995);
    itest_expect_sql(c, "SELECT string_agg(key[1], ',' ORDER BY key[1]::int) FROM pgshadow.quarantine",
               "1,777,778,2999,3000");
    itest_expect_sql(c, "SELECT count(*) FROM w_shadow", "2995");
    itest_expect_sql(c, "SELECT bool_and(attempts = 1) FROM pgshadow.quarantine", "t");
    /* one statement per key would be 3001; halves: about 2 x 5 x log2(3000) */
    long tries = itest_query_long(c, "SELECT last_value FROM tries");
    fprintf(stderr, "poison bisect: %ld statements for 3000 keys, 5 bad\n", tries);
    assert_true(tries < 200);
}

int main(void)
{
    if (!getenv("PGSHADOW_TEST_CONNINFO") || !getenv("PGSHADOW_SRCDIR")) {
        fprintf(stderr, "itest-apply: needs PGSHADOW_TEST_CONNINFO and PGSHADOW_SRCDIR "
                        "(start a cluster with tests/harness/pgcluster.sh)\n");
        return 1;
    }
#define T(f) cmocka_unit_test_setup_teardown(f, db_setup, db_teardown)
    const struct CMUnitTest tests[] = {
        T(test_apply_mixed_row), T(test_apply_mixed_statement), T(test_hot_row),
        T(test_fk_order),        T(test_limit),                 T(test_quarantine),
        T(test_quarantine_delete), T(test_halt),                T(test_truncate),
        T(test_backfill),        T(test_backfill_quarantine),   T(test_hash_by_hand),
        T(test_replication_lag), T(test_grants),                T(test_wakeup_row),
        T(test_wakeup_statement),
        T(test_fk_cascade_one_batch), T(test_fk_cascade_limit1), T(test_fk_cascade_limit2),
        T(test_deferred_fk),     T(test_unique_swap),           T(test_unique_swap_retry),
        T(test_held_delete_frees_unique), T(test_orphan_requeue_backs_off),
        T(test_orphan_requeue_when_drained), T(test_quarantine_sqlstate_follows_failure),
        T(test_late_commit_inside_taken_range),
        T(test_counts_cascade),  T(test_float_key),             T(test_poison_bisect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
