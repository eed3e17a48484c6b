/*
 * test-chunks.c - the chunk engine's database half (sql/83-sync-backfill.sql)
 * against a real PostgreSQL, with real concurrent sessions (one thread and
 * one connection each): several tables (bigint, composite text and uuid
 * keys) copied by 1, 2 and 4 workers (backfill_claim, then backfill_chunk)
 * while a writer inserts, deletes and moves keys across range boundaries
 * and an applier runs apply_batch, each run ending with every shadow row
 * equal to its primary row; a chunk whose snapshot predates a write of a
 * key it copies (apply leaves that key's entry until the chunk commits: the
 * test fails without it); a worker session killed after its claim (its
 * interval is taken over, nothing skipped); every worker killed mid-way and
 * new ones resuming every range from its cursor; and the real pgshadowd's
 * worker pool: a worker session killed server side mid-chunk is replaced and
 * its chunk copied again.
 *
 * Env: as every integration test (itest.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "itest.h"

#define MIG "m1"

static bool wait_true(itest_db *t, const char *sql, int64_t ms)
{
    char *ci = itest_conninfo_db(t->name);
    bool ok = itest_wait_true(ci, sql, ms);
    free(ci);
    return ok;
}

static int db_setup(void **state)
{
    *state = itest_db_new("pgshadow_chunks");
    return 0;
}

static int db_teardown(void **state)
{
    itest_db_free(*state);
    return 0;
}

/* Three tables of different key kinds, with rows; installed as pgshadowctl
 * does (one transaction), plus the test's own row comparison. */
static const char SCHEMA[] =
    "CREATE EXTENSION IF NOT EXISTS pgcrypto;"
    "CREATE TABLE acc (id bigint PRIMARY KEY, grp int NOT NULL, v text);"
    "INSERT INTO acc SELECT g, g % 7, repeat(md5(g::text), 4) FROM generate_series(1, 30000) g;"
    "CREATE TABLE ck (a int NOT NULL, b text NOT NULL, v int, PRIMARY KEY (a, b));"
    "INSERT INTO ck SELECT g / 10, 'k' || (g % 10), g FROM generate_series(1, 20000) g;"
    "CREATE TABLE uu (id uuid PRIMARY KEY, v int);"
    "INSERT INTO uu SELECT md5(g::text)::uuid, g FROM generate_series(1, 15000) g;"
    "ANALYZE acc, ck, uu;";

static void install(PGconn *c)
{
    itest_exec_ok(c, SCHEMA);
    char *schema = itest_install_sql();
    size_t len = strlen(schema) + 1024;
    char *script = malloc(len);
    snprintf(script, len,
             "BEGIN;\n%s\n"
             "SELECT pgshadow.register_table('public', 'acc', NULL, '_shadow', '" MIG "', '{}');\n"
             "SELECT pgshadow.register_table('public', 'ck', NULL, '_shadow', '" MIG "', '{}');\n"
             "SELECT pgshadow.register_table('public', 'uu', NULL, '_shadow', '" MIG "', '{}');\n"
             "SELECT pgshadow.finish_install('" MIG "');\nCOMMIT;\n",
             schema);
    itest_exec_ok(c, script);
    free(script);
    free(schema);
    itest_create_test_diff(c);
}

/* ---- the threads --------------------------------------------------------- */

typedef struct run {
    const char *db;
    int rows;               /* rows per chunk */
    atomic_bool stop;       /* writer and applier: finish */
    atomic_int failures;    /* a thread saw an unexpected error */
    atomic_long chunks;     /* chunks copied */
    atomic_long writes;
    char error[512];
} run;

static void thread_fail(run *r, const char *what, PGconn *c)
{
    if (atomic_fetch_add(&r->failures, 1) == 0)
        snprintf(r->error, sizeof r->error, "%s: %s", what, PQerrorMessage(c));
}

static bool exec_tuples(PGconn *c, const char *sql, PGresult **out)
{
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        PQclear(res);
        return false;
    }
    *out = res;
    return true;
}

/* One worker, as the daemon's pool runs it: claim (its own transaction),
 * then copy (another), until nothing is left; a killed session ends it. */
static void *worker(void *arg)
{
    run *r = arg;
    PGconn *c = itest_connect_db(r->db);
    PQclear(PQexec(c, "SET application_name = 'itest-chunk-worker'"));
    char claim[160];
    snprintf(claim, sizeof claim, "SELECT * FROM pgshadow.backfill_claim('" MIG "', %d)", r->rows);
    for (;;) {
        PGresult *res;
        if (!exec_tuples(c, claim, &res)) {
            if (PQstatus(c) != CONNECTION_OK)
                break; /* killed */
            thread_fail(r, "backfill_claim", c);
            break;
        }
        if (PQntuples(res) == 0) {
            PQclear(res);
            PGresult *p;
            if (!exec_tuples(c, "SELECT count(*) FROM pgshadow.backfill_plan('" MIG "', 1)", &p)) {
                thread_fail(r, "backfill_plan", c);
                break;
            }
            bool done = strcmp(PQgetvalue(p, 0, 0), "0") == 0;
            PQclear(p);
            if (done)
                break;
            itest_sleep_ms(5); /* ranges in flight elsewhere, or a parent first */
            continue;
        }
        char chunk[160];
        snprintf(chunk, sizeof chunk, "SELECT copied FROM pgshadow.backfill_chunk(%s, %s)",
                 PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
        PQclear(res);
        if (!exec_tuples(c, chunk, &res)) {
            if (PQstatus(c) != CONNECTION_OK)
                break;
            thread_fail(r, "backfill_chunk", c);
            break;
        }
        if (atoi(PQgetvalue(res, 0, 0)) >= 0)
            atomic_fetch_add(&r->chunks, 1);
        PQclear(res);
    }
    PQfinish(c);
    return NULL;
}

/* Writes all over the key space while the copy runs: updates, inserts at
 * both ends and in the middle, deletes, and key changes that move a row
 * from one range to another (id + 15000 crosses every cut of acc). */
static void *writer(void *arg)
{
    run *r = arg;
    PGconn *c = itest_connect_db(r->db);
    unsigned seed = 7;
    static const char *const stmts[] = {
        "UPDATE acc SET v = md5(random()::text) WHERE id = %d",
        "UPDATE acc SET id = id + 100000 WHERE id = %d",
        "DELETE FROM acc WHERE id = %d",
        "INSERT INTO acc VALUES (200000 + %d, 1, 'new') ON CONFLICT DO NOTHING",
        "INSERT INTO acc VALUES (-%d, 2, 'neg') ON CONFLICT DO NOTHING",
        "UPDATE ck SET v = v + 1 WHERE a = %d / 10",
        "UPDATE ck SET a = a + 5000 WHERE a = %d / 10 AND b = 'k3'",
        "DELETE FROM ck WHERE a = %d / 10 AND b = 'k5'",
        "UPDATE uu SET v = v + 1 WHERE id = md5((%d)::text)::uuid",
        "DELETE FROM uu WHERE id = md5((%d + 1)::text)::uuid",
        "INSERT INTO uu VALUES (gen_random_uuid(), %d)",
    };
    while (!atomic_load(&r->stop)) {
        char sql[256];
        int k = (int)(rand_r(&seed) % 30000) + 1;
        snprintf(sql, sizeof sql, stmts[rand_r(&seed) % (sizeof stmts / sizeof stmts[0])], k);
        PGresult *res = PQexec(c, sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            if (!st || strcmp(st, "23505") != 0) /* a moved key may land on a taken one */
                thread_fail(r, sql, c);
        } else {
            atomic_fetch_add(&r->writes, 1);
        }
        PQclear(res);
    }
    PQfinish(c);
    return NULL;
}

/* apply_batch in a loop, as the daemon's main connection does. */
static void *applier(void *arg)
{
    run *r = arg;
    PGconn *c = itest_connect_db(r->db);
    while (!atomic_load(&r->stop)) {
        PGresult *res;
        if (!exec_tuples(c, "SELECT taken FROM pgshadow.apply_batch('" MIG "', 500)", &res)) {
            thread_fail(r, "apply_batch", c);
            break;
        }
        PQclear(res);
        itest_sleep_ms(2);
    }
    PQfinish(c);
    return NULL;
}

static void drain(PGconn *c)
{
    for (int i = 0; i < 10000; i++)
        if (itest_query_long(c, "SELECT taken FROM pgshadow.apply_batch('" MIG "', 5000)") == 0 &&
            itest_query_long(c, "SELECT count(*) FROM pgshadow.change_log") == 0)
            return;
    fail_msg("the change log never drained");
}

static void expect_all_converged(PGconn *c)
{
    static const char *const tables[] = {"acc", "ck", "uu"};
    for (size_t i = 0; i < 3; i++) {
        char sql[512];
        snprintf(sql, sizeof sql, "SELECT public.test_diff('%s')", tables[i]);
        long n = itest_query_long(c, sql);
        if (n != 0)
            fail_msg("table %s: %ld rows differ between primary and shadow", tables[i], n);
        /* the maintained counts are exact once drained: apply's deltas and
         * the finishing chunk's count never overwrite each other */
        snprintf(sql, sizeof sql,
                 "SELECT t.primary_rows || '/' || t.shadow_rows || ' ' || (SELECT count(*) FROM public.%s)"
                 " || '/' || (SELECT count(*) FROM public.%s_shadow) FROM pgshadow.tables t"
                 " WHERE t.table_name = '%s'", tables[i], tables[i], tables[i]);
        char *counts = itest_query(c, sql);
        char want[64];
        char *sp = strchr(counts, ' ');
        snprintf(want, sizeof want, "%s", sp ? sp + 1 : "");
        if (!sp || strncmp(counts, want, (size_t)(sp - counts)) != 0 || strlen(want) != (size_t)(sp - counts))
            fail_msg("table %s: maintained counts primary/shadow, then count(*): %s", tables[i], counts);
        free(counts);
    }
    itest_expect_sql(c, "SELECT bool_and(backfill_state = 'done') FROM pgshadow.tables", "t");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.backfill_ranges", "0");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.quarantine", "0");
}

static void copy_with(itest_db *t, int workers)
{
    install(t->c);
    char plan[128];
    snprintf(plan, sizeof plan, "SELECT count(*) FROM pgshadow.backfill_plan('" MIG "', %d)",
             workers * 3);
    assert_int_equal(itest_query_long(t->c, plan), 3);
    long ranges = itest_query_long(t->c, "SELECT count(*) FROM pgshadow.backfill_ranges");
    fprintf(stderr, "test-chunks: %d worker(s): %ld ranges\n", workers, ranges);
    if (workers > 1) {
        assert_true(ranges >= 2L * workers); /* acc and ck are cut */
        /* the planner's ranges tile each key space in the key's own order:
         * the first starts at -inf, the last ends at +inf, each starts where
         * the one before ended, and each ends above where it starts (ck's
         * key is composite (int, text): compared as the row, not as text) */
        itest_expect_sql(t->c,
                         "SELECT bool_and(CASE WHEN n = 1 THEN lo IS NULL ELSE lo = prev_hi END"
                         "  AND CASE WHEN n = cnt THEN hi IS NULL ELSE hi IS NOT NULL END)"
                         " FROM (SELECT b.lo, b.hi, row_number() OVER w AS n, count(*) OVER (PARTITION BY b.table_id) AS cnt,"
                         "  lag(b.hi) OVER w AS prev_hi FROM pgshadow.backfill_ranges b"
                         "  WINDOW w AS (PARTITION BY b.table_id ORDER BY b.range_no)) x",
                         "t");
        itest_expect_sql(t->c,
                         "SELECT bool_and((b.hi[1]::int, b.hi[2]) > (b.lo[1]::int, b.lo[2]))"
                         " FROM pgshadow.backfill_ranges b JOIN pgshadow.tables t USING (table_id)"
                         " WHERE t.table_name = 'ck' AND b.lo IS NOT NULL AND b.hi IS NOT NULL",
                         "t");
        itest_expect_sql(t->c,
                         "SELECT bool_and(b.hi[1]::bigint > b.lo[1]::bigint) FROM pgshadow.backfill_ranges b"
                         " JOIN pgshadow.tables t USING (table_id) WHERE t.table_name = 'acc'"
                         " AND b.lo IS NOT NULL AND b.hi IS NOT NULL",
                         "t");
        /* ck is cut, so the order check above compared cut points (cut by
         * text, a = 10 would sort before a = 9 and that check would fail) */
        itest_expect_sql(t->c,
                         "SELECT count(*) > 1 FROM pgshadow.backfill_ranges b JOIN pgshadow.tables t USING (table_id)"
                         " WHERE t.table_name = 'ck'",
                         "t");
    }

    run r = {.db = t->name, .rows = 700};
    pthread_t w[8], wr, ap;
    pthread_create(&wr, NULL, writer, &r);
    pthread_create(&ap, NULL, applier, &r);
    for (int i = 0; i < workers; i++)
        pthread_create(&w[i], NULL, worker, &r);
    for (int i = 0; i < workers; i++)
        pthread_join(w[i], NULL);
    atomic_store(&r.stop, true);
    pthread_join(wr, NULL);
    pthread_join(ap, NULL);
    if (atomic_load(&r.failures))
        fail_msg("a thread failed: %s", r.error);
    fprintf(stderr, "test-chunks: %d worker(s): %ld chunks, %ld writes during the copy\n", workers,
            atomic_load(&r.chunks), atomic_load(&r.writes));
    assert_true(atomic_load(&r.writes) > 0);
    drain(t->c);
    expect_all_converged(t->c);
}

static void test_one_worker(void **state) { copy_with(*state, 1); }
static void test_two_workers(void **state) { copy_with(*state, 2); }
static void test_four_workers(void **state) { copy_with(*state, 4); }

/* A chunk's snapshot predates a write to a key it copies: apply must leave
 * that key's entry until the chunk commits, or the chunk's stale row would
 * be the last word (the entry consumed, nothing left to correct it). The
 * chunk is held at its first row by a trigger on the shadow while the key
 * is updated and apply runs. */
static void *held_chunk(void *arg)
{
    const char *db = arg;
    PGconn *c = itest_connect_db(db);
    char *v = itest_query(c, "SELECT table_id || ',' || range_no FROM pgshadow.backfill_claim('" MIG "', 100)");
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT copied FROM pgshadow.backfill_chunk(%s)", v);
    free(v);
    char *copied = itest_query(c, sql);
    fprintf(stderr, "test-chunks: held chunk copied %s rows\n", copied);
    free(copied);
    PQfinish(c);
    return NULL;
}

static void test_chunk_snapshot_older_than_apply(void **state)
{
    itest_db *t = *state;
    install(t->c);
    assert_int_equal(itest_query_long(t->c, "SELECT count(*) FROM pgshadow.backfill_plan('" MIG "', 1)"), 3);
    /* the first chunk is acc's ids 1..100; it sleeps at id 1 */
    itest_exec_ok(t->c,
                  "CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                  "IF NEW.id = 1 THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$;"
                  "CREATE TRIGGER slow BEFORE INSERT ON acc_shadow FOR EACH ROW EXECUTE FUNCTION public.slow()");
    pthread_t th;
    pthread_create(&th, NULL, held_chunk, t->name);
    bool claimed = wait_true(t, "SELECT EXISTS (SELECT 1 FROM pgshadow.backfill_ranges WHERE inflight)", 5000);
    assert_true(claimed);
    itest_sleep_ms(400); /* the chunk's copy has its snapshot and sleeps */
    itest_exec_ok(t->c, "UPDATE acc SET v = 'fresh' WHERE id = 50; UPDATE acc SET v = 'far' WHERE id = 20000");
    /* id 50 is in the interval being copied: left in the log; 20000 is not */
    itest_expect_sql(t->c, "SELECT taken FROM pgshadow.apply_batch('" MIG "', 100)", "1");
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.change_log c JOIN pgshadow.tables t USING (table_id)"
                           " WHERE t.table_name = 'acc' AND c.key = '{50}'", "1");
    itest_expect_sql(t->c, "SELECT v FROM acc_shadow WHERE id = 20000", "far");
    pthread_join(th, NULL);
    /* the chunk wrote what its snapshot saw; the entry left in the log
     * corrects it */
    itest_expect_sql(t->c, "SELECT v <> 'fresh' FROM acc_shadow WHERE id = 50", "t");
    itest_expect_sql(t->c, "SELECT taken FROM pgshadow.apply_batch('" MIG "', 100)", "1");
    itest_expect_sql(t->c, "SELECT v FROM acc_shadow WHERE id = 50", "fresh");
    itest_exec_ok(t->c, "DROP TRIGGER slow ON acc_shadow");
    run r = {.db = t->name, .rows = 5000};
    worker(&r);
    assert_int_equal(atomic_load(&r.failures), 0);
    drain(t->c);
    expect_all_converged(t->c);
}

/* A worker whose session dies after its claim: the interval stays
 * registered (apply leaves its keys' entries) until another worker takes it
 * over, and nothing of it is skipped. */
static void test_claim_of_a_dead_session(void **state)
{
    itest_db *t = *state;
    install(t->c);
    assert_int_equal(itest_query_long(t->c, "SELECT count(*) FROM pgshadow.backfill_plan('" MIG "', 1)"), 3);
    PGconn *w = itest_connect_db(t->name);
    char *v = itest_query(w, "SELECT range_no FROM pgshadow.backfill_claim('" MIG "', 1000)");
    free(v);
    itest_exec_ok(t->c, "SELECT pg_terminate_backend(inflight_pid, 5000) FROM pgshadow.backfill_ranges WHERE inflight");
    PQfinish(w);
    itest_exec_ok(t->c, "UPDATE acc SET v = 'during' WHERE id = 10");
    itest_expect_sql(t->c, "SELECT taken FROM pgshadow.apply_batch('" MIG "', 100)", "0");
    /* a new worker takes the dead session's interval over first */
    run r = {.db = t->name, .rows = 1000};
    worker(&r);
    assert_int_equal(atomic_load(&r.failures), 0);
    drain(t->c);
    itest_expect_sql(t->c, "SELECT v FROM acc_shadow WHERE id = 10", "during");
    expect_all_converged(t->c);
}

/* Every worker killed mid-way (server side, mid-chunk or not): the copied
 * ranges keep their cursors, and new workers resume each range there. */
static void test_workers_killed_resume(void **state)
{
    itest_db *t = *state;
    install(t->c);
    assert_int_equal(itest_query_long(t->c, "SELECT count(*) FROM pgshadow.backfill_plan('" MIG "', 8)"), 3);
    run r = {.db = t->name, .rows = 300};
    pthread_t w[4], wr, ap;
    pthread_create(&wr, NULL, writer, &r);
    pthread_create(&ap, NULL, applier, &r);
    for (int i = 0; i < 4; i++)
        pthread_create(&w[i], NULL, worker, &r);
    bool some = wait_true(t, "SELECT sum(rows) > 5000 FROM pgshadow.backfill_ranges", 20000);
    assert_true(some);
    itest_exec_ok(t->c, "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                        " WHERE application_name = 'itest-chunk-worker'");
    for (int i = 0; i < 4; i++)
        pthread_join(w[i], NULL);
    long copied = itest_query_long(t->c, "SELECT coalesce(sum(rows), 0) FROM pgshadow.backfill_ranges");
    long with_cursor = itest_query_long(t->c, "SELECT count(*) FROM pgshadow.backfill_ranges WHERE cursor IS NOT NULL");
    fprintf(stderr, "test-chunks: killed: %ld rows copied, %ld ranges with a cursor\n", copied, with_cursor);
    assert_true(copied > 0 && with_cursor > 0);
    assert_int_equal(atomic_load(&r.failures), 0);
    /* new workers go on from every cursor: no range starts over */
    long before = itest_query_long(t->c, "SELECT coalesce(sum(rows), 0) FROM pgshadow.backfill_ranges WHERE cursor IS NOT NULL");
    assert_true(before > 0);
    for (int i = 0; i < 4; i++)
        pthread_create(&w[i], NULL, worker, &r);
    for (int i = 0; i < 4; i++)
        pthread_join(w[i], NULL);
    atomic_store(&r.stop, true);
    pthread_join(wr, NULL);
    pthread_join(ap, NULL);
    if (atomic_load(&r.failures))
        fail_msg("a thread failed: %s", r.error);
    drain(t->c);
    expect_all_converged(t->c);
}

/* The real pgshadowd with two workers: a worker's session killed server
 * side in the middle of a chunk (held there by a slow shadow trigger) is
 * replaced, its chunk claimed again and copied; the copy completes equal. */
static void test_daemon_worker_killed(void **state)
{
    itest_db *t = *state;
    install(t->c);
    itest_exec_ok(t->c,
                  "CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                  "IF NEW.id % 1000 = 500 THEN PERFORM pg_sleep(0.3); END IF; RETURN NEW; END $$;"
                  "CREATE TRIGGER slow BEFORE INSERT ON acc_shadow FOR EACH ROW EXECUTE FUNCTION public.slow()");
    char dir[] = "/tmp/itest-chunks-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cfg[128];
    snprintf(cfg, sizeof cfg, "%s/pgshadow.yaml", dir);
    char *ci = itest_conninfo_db(t->name);
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "database:\n  conninfo: \"%s\"\nmigration:\n  id: " MIG "\n  tables:\n"
             "    - name: acc\n    - name: ck\n    - name: uu\n"
             "sync:\n  workers: 2\n  backfill_chunk: 500\n  chunk_target: 200ms\n"
             "metrics:\n  listen: \"\"\n", ci);
    free(ci);
    assert_int_equal(itest_write_file(cfg, yaml), 0);
    itest_daemon d = ITEST_DAEMON_INIT;
    itest_daemon_paths(&d, dir, "pgshadowd");
    d.log_level = "info";
    assert_int_equal(itest_daemon_start(&d, cfg), 0);
    /* a chunk of acc in flight on a worker connection */
    bool mid = wait_true(t, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE "
                            "'%backfill_chunk%' AND state = 'active' AND wait_event = 'PgSleep')", 30000);
    if (!mid) {
        char *log = itest_daemon_log(&d);
        fail_msg("no chunk ever held in the slow trigger; log:\n%s", log);
    }
    itest_exec_ok(t->c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE "
                        "'%backfill_chunk%' AND state = 'active' AND wait_event = 'PgSleep'");
    size_t at = itest_daemon_wait_log(&d, 0, "connection lost", 20000);
    assert_true(at > 0);
    bool done = wait_true(t, "SELECT bool_and(backfill_state = 'done') FROM pgshadow.tables", 120000);
    if (!done) {
        char *log = itest_daemon_log(&d);
        fail_msg("the backfill did not complete; log:\n%s", log);
    }
    assert_true(itest_daemon_log_count(&d, 0, "backfill worker", "connection lost") >= 1);
    assert_true(wait_true(t, "SELECT NOT EXISTS (SELECT 1 FROM pgshadow.change_log)", 30000));
    itest_daemon_kill(&d, SIGTERM);
    itest_daemon_cleanup(&d);
    itest_exec_ok(t->c, "DROP TRIGGER slow ON acc_shadow");
    expect_all_converged(t->c);
    itest_expect_sql(t->c, "SELECT count(*) FROM pgshadow.events WHERE what = 'backfill_done'", "3");
}

/* ---- main ---------------------------------------------------------------- */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_worker, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_two_workers, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_four_workers, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_chunk_snapshot_older_than_apply, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_claim_of_a_dead_session, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_workers_killed_resume, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_daemon_worker_killed, db_setup, db_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
