/*
 * test-sync.c - the sync engine end to end against the throwaway cluster:
 * the real pgshadowctl install and pgshadowd binaries on a fresh database with
 * foreign-keyed tables (parents <- children, parents <- links with a composite
 * key), some thousands of rows.
 *
 *  1. backfill: interrupted by SIGKILL in the middle of a table, resumed
 *     right after that table's persisted cursor (no row at or before it
 *     offered to the shadow again, the resume logged with the persisted
 *     count), completes; every shadow row equals its primary row (md5 over
 *     all columns, independent of pgshadow's own hash; and
 *     _shadow_validation_hash equals the registry's hash_expr over the
 *     primary) and no shadow row lacks a primary;
 *  2. chaos: a mixed workload (inserts, updates, key changes, deletes,
 *     cascades, rolled-back transactions) from 4 concurrent writer processes
 *     (so entries commit out of seq order) while pgshadowd is SIGKILLed at
 *     random moments 12 times (restarted each time; each kill lands on a
 *     daemon that has taken the leader lock) and PostgreSQL is
 *     restarted with -m immediate twice; then drain and the same equality.
 *     The seed is printed; PGSHADOW_CHAOS_SEED=<n> replays its choices.
 *     A load case (ITEST_LOAD_CASE): tests/run runs it in the -Werror build
 *     only, and the cases after it start from what 1. left when it is
 *     skipped;
 *  3. poison rows (a shadow CHECK stricter than the primary) land in the
 *     quarantine with SQLSTATE and message while the others apply; a later
 *     change to a poisoned key retries it and clears the quarantine;
 *  3a. wake-up: after a drain the daemon re-arms the wake-up flag, and single
 *      writes reach the shadow by NOTIFY with catchup_interval at 10 s;
 *  3b. reload picks up a new batch_size; on_apply_error: halt stops applying
 *     with the reason in the log and STATUS, quarantines nothing, keeps the
 *     change log; a reload after the fix resumes;
 *  3d. lock_timeout: an operator holds ACCESS EXCLUSIVE on a shadow for longer
 *      than apply_batch's 5 s lock_timeout; the call fails with 55P03 and
 *      rolls back (the change log keeps exactly its entries, the shadow has
 *      none of them), the daemon warns, stays up and, once the lock is gone,
 *      applies everything;
 *  4. two daemons: exactly one holds the advisory lock (pg_locks pid = the
 *     leader's backend) and applies; SIGKILL of the leader hands over within
 *     seconds and the standby drains new changes;
 *  5. our own stale session (client side of the connection dropped through a
 *     proxy, server side kept) holding the leader lock is terminated and the
 *     daemon leads again at once.
 *
 * The tests share one database and run in order. Every wait is a polling loop
 * with a generous deadline; no assertion is about speed.
 *
 * Env: PGSHADOW_TEST_CONNINFO, PGSHADOW_TEST_CLUSTER, PGSHADOW_SRCDIR,
 * PGSHADOWD, PGSHADOWCTL; optional PGSHADOW_CHAOS_SEED; test 5 also PGSHADOW_TEST_PGHOST and
 * PGSHADOW_TEST_PGPORT. The daemons run through itest.h's itest_daemon
 * helpers; the few helpers kept here say why they are not itest.h's.
 *
 * Size: over 800 lines on purpose: the scenarios share the daemon, load and
 * comparison helpers defined here; each is one function that reads alone, and
 * a split would copy the helpers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "itest.h"

#define DB "pgshadow_itest_sync"
/* a liveness bound, not a speed target: the chaos backlog (70-80k entries,
 * quarantines in most batches of 200) drained in 60-120 s on this 2-core
 * machine, more when the host is slow (speed: bench/run) */
#define DRAIN_MS 240000
#define TABLES 4
static const char *const table_names[TABLES] = {"parents", "children", "links", "notes"};

static struct {
    const char *conninfo, *cluster, *srcdir, *pgshadowd, *pgshadowctl;
    char dir[64];
    char cfg[128];
    char *db_conninfo;
} T;

/* tests 1-3d use D, test 4 A and B; their logs are appended over restarts */
static itest_daemon D = ITEST_DAEMON_INIT;
static itest_daemon A = ITEST_DAEMON_INIT, B = ITEST_DAEMON_INIT;

/* ------------------------------------------------------------------------ */
/* Database helpers (a fresh connection per call survives server restarts) */

static void quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* For group_setup, which returns an error instead of failing a test. */
static PGconn *connect_to(const char *ci)
{
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, quiet, NULL);
    return c;
}

/* The first value of sql (atoll: 0 for no row or NULL); must succeed. */
static long long db_int(const char *sql)
{
    PGconn *c = itest_connect(T.db_conninfo);
    char *v = itest_query(c, sql);
    long long n = atoll(v);
    free(v);
    PQfinish(c);
    return n;
}

static void db_exec(const char *sql)
{
    itest_exec_on(T.db_conninfo, sql);
}

/* ------------------------------------------------------------------------ */
/* Processes */

/* Occurrences of needle in d's log from byte offset `from`. Not
 * itest_daemon_log_count, which counts lines: the >= and == assertions below
 * count occurrences. */
static int log_count(const itest_daemon *d, size_t from, const char *needle)
{
    char *s = itest_daemon_log(d);
    int n = 0;
    if (from <= strlen(s))
        for (const char *p = s + from; (p = strstr(p, needle)); p += strlen(needle))
            n++;
    free(s);
    return n;
}

/* The text after the first occurrence of needle (from `from`) up to the end of
 * its line, or "" if absent. */
static void log_after(const itest_daemon *d, size_t from, const char *needle, char *out, size_t len)
{
    char *s = itest_daemon_log(d);
    out[0] = '\0';
    const char *p = from <= strlen(s) ? strstr(s + from, needle) : NULL;
    if (p) {
        p += strlen(needle);
        size_t n = strcspn(p, "\n");
        snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), p);
    }
    free(s);
}

static void daemon_start(itest_daemon *d, const char *level)
{
    d->log_level = level;
    assert_int_equal(itest_daemon_start(d, T.cfg), 0);
}

/* Stop receiving notify messages; unlike itest_daemon_cleanup this leaves a
 * running daemon running and keeps the messages. */
static void notify_close(itest_daemon *d)
{
    if (d->sock_fd >= 0)
        close(d->sock_fd);
    d->sock_fd = -1;
}

/* A notify socket for d (before daemon_start, which binds it): its STATUS=
 * lines. The messages received so far are kept. */
static void notify_open(itest_daemon *d, const char *name)
{
    notify_close(d); /* a test that failed before its notify_close left one open */
    assert_true((size_t)snprintf(d->sock, sizeof d->sock, "%s/%s", T.dir, name) < sizeof d->sock);
}

/* Some notify message received so far contains needle (without receiving
 * more, unlike itest_daemon_msg_contains). */
static bool notify_has(const itest_daemon *d, const char *needle)
{
    for (int i = 0; i < d->n_msgs; i++)
        if (d->msgs[i] && strstr(d->msgs[i], needle))
            return true;
    return false;
}

/* Wait until some notify message contains needle (anywhere, not only at a
 * line start as itest_daemon_wait_msg requires). */
static bool wait_status(itest_daemon *d, const char *needle, int64_t timeout_ms)
{
    int64_t end = itest_now_ms() + timeout_ms;
    do {
        itest_daemon_drain(d);
        if (notify_has(d, needle))
            return true;
        itest_sleep_ms(50);
    } while (itest_now_ms() < end);
    fprintf(stderr, "test-sync: no '%s' in the %d notify messages:\n", needle, d->n_msgs);
    for (int i = 0; i < d->n_msgs; i++)
        fprintf(stderr, "%s\n", d->msgs[i] ? d->msgs[i] : "");
    return false;
}

/* The daemon must still be alive (it never exits on its own). */
static void daemon_assert_alive(itest_daemon *d)
{
    int st;
    pid_t r = waitpid(d->pid, &st, WNOHANG);
    if (r != 0) {
        if (r == d->pid) {
            d->reaped = true;
            d->exit_status = st;
        }
        char *log = itest_daemon_log(d);
        size_t n = strlen(log);
        fail_msg("pgshadowd %d exited on its own (status %d); log tail:\n%s", (int)d->pid, st,
                 n > 3000 ? log + n - 3000 : log);
    }
}

static int run_ctl(const char *arg)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char logp[160];
        snprintf(logp, sizeof logp, "%s/ctl.log", T.dir);
        int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(T.pgshadowctl, T.pgshadowctl, "-c", T.cfg, arg, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* ------------------------------------------------------------------------ */
/* Equality */

/* Defined in the test database only: per table, rows missing from the
 * shadow, shadow rows without a primary, rows whose columns differ (md5 of
 * the row over every primary column), rows whose _shadow_validation_hash is
 * not the registry's hash_expr over the primary row. */
static const char DIFF_FN[] =
    "CREATE OR REPLACE FUNCTION public.itest_diff(p_table text, "
    "  OUT missing bigint, OUT orphans bigint, OUT differ bigint, OUT bad_hash bigint, "
    "  OUT n_primary bigint) LANGUAGE plpgsql AS $fn$ "
    "DECLARE t pgshadow.tables; cp text; cs text; j text; k text; "
    "BEGIN "
    "  SELECT * INTO STRICT t FROM pgshadow.tables WHERE table_name = p_table; "
    "  SELECT string_agg(format('p.%I', attname), ', ' ORDER BY attnum), "
    "         string_agg(format('s.%I', attname), ', ' ORDER BY attnum) INTO cp, cs "
    "    FROM pg_attribute WHERE attrelid = format('%I.%I', t.schema_name, t.table_name)::regclass "
    "     AND attnum > 0 AND NOT attisdropped; "
    "  SELECT string_agg(format('p.%1$I = s.%1$I', c), ' AND ') INTO j FROM unnest(t.key_columns) c; "
    "  k := quote_ident(t.key_columns[1]); "
    "  EXECUTE format('SELECT count(*) FILTER (WHERE s.%1$s IS NULL), "
    "                         count(*) FILTER (WHERE p.%1$s IS NULL), "
    "                         count(*) FILTER (WHERE p.%1$s IS NOT NULL AND s.%1$s IS NOT NULL "
    "                                          AND md5(row(%2$s)::text) <> md5(row(%3$s)::text)), "
    "                         count(*) FILTER (WHERE p.%1$s IS NOT NULL AND s.%1$s IS NOT NULL "
    "                                          AND s._shadow_validation_hash IS DISTINCT FROM (%4$s)), "
    "                         count(p.%1$s) "
    "                  FROM %5$I.%6$I p FULL JOIN %5$I.%7$I s ON %8$s', "
    "                 k, cp, cs, t.hash_expr, t.schema_name, t.table_name, t.shadow_name, j) "
    "    INTO missing, orphans, differ, bad_hash, n_primary; "
    "END $fn$";

typedef struct diff {
    long long missing, orphans, differ, bad_hash, n_primary;
} diff;

static diff table_diff(const char *table)
{
    PGconn *c = itest_connect(T.db_conninfo);
    itest_exec_ok(c, "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'"); /* the settings the canonical hash is defined under */
    const char *params[1] = {table};
    PGresult *res = PQexecParams(c, "SELECT * FROM public.itest_diff($1)", 1, NULL, params, NULL,
                                 NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("itest_diff(%s): %s", table, PQerrorMessage(c));
    diff d = {atoll(PQgetvalue(res, 0, 0)), atoll(PQgetvalue(res, 0, 1)),
              atoll(PQgetvalue(res, 0, 2)), atoll(PQgetvalue(res, 0, 3)),
              atoll(PQgetvalue(res, 0, 4))};
    PQclear(res);
    PQfinish(c);
    return d;
}

static void assert_all_equal(const char *when)
{
    for (int i = 0; i < TABLES; i++) {
        diff d = table_diff(table_names[i]);
        fprintf(stderr, "test-sync: %s: %s: %lld primary rows, missing %lld, orphans %lld, differ "
                        "%lld, bad hash %lld\n",
                when, table_names[i], d.n_primary, d.missing, d.orphans, d.differ, d.bad_hash);
        assert_true(d.n_primary > 0);
        assert_int_equal(d.missing, 0);
        assert_int_equal(d.orphans, 0);
        assert_int_equal(d.differ, 0);
        assert_int_equal(d.bad_hash, 0);
    }
}

static const char DRAINED_SQL[] =
    "SELECT NOT EXISTS (SELECT 1 FROM pgshadow.change_log) "
    "   AND NOT EXISTS (SELECT 1 FROM pgshadow.tables WHERE backfill_state <> 'done')";

static void wait_drained(const char *when)
{
    int64_t t0 = itest_now_ms();
    bool drained = itest_wait_true(T.db_conninfo, DRAINED_SQL, DRAIN_MS);
    fprintf(stderr, "test-sync: %s: drained in %lld ms\n", when, (long long)(itest_now_ms() - t0));
    if (!drained) {
        char *log = itest_daemon_log(&D);
        size_t n = strlen(log);
        fail_msg("%s: change log not drained within %d ms (%lld pending); daemon log tail:\n%s",
                 when, DRAIN_MS, db_int("SELECT count(*) FROM pgshadow.change_log"),
                 n > 4000 ? log + n - 4000 : log);
    }
}

/* ------------------------------------------------------------------------ */
/* Workload */

static volatile sig_atomic_t workload_stop;

static void on_term(int sig)
{
    (void)sig;
    workload_stop = 1;
}

/* One random operation; its SQL picks an existing row at or after a random
 * id through the primary keys, so it never scans. */
static const char *const OPS[] = {
    /* inserts */
    "INSERT INTO parents (id, name, score) VALUES (nextval('itest_ids'), md5(random()::text), "
    "(random() * 1000)::int)",
    "INSERT INTO children (id, parent_id, payload, qty) SELECT nextval('itest_ids'), id, "
    "md5(random()::text), (random() * 100)::int FROM parents WHERE id >= $1 ORDER BY id LIMIT 1",
    "INSERT INTO links (a, b, parent_id, note) SELECT nextval('itest_ids'), $1, id, 'n' "
    "FROM parents WHERE id >= $1 ORDER BY id LIMIT 1",
    /* updates */
    "UPDATE parents SET score = score + 1, name = name || 'x' "
    "WHERE id = (SELECT id FROM parents WHERE id >= $1 ORDER BY id LIMIT 1)",
    "UPDATE children SET qty = qty + 1, payload = NULL "
    "WHERE id = (SELECT id FROM children WHERE id >= $1 ORDER BY id LIMIT 1)",
    "UPDATE children SET parent_id = (SELECT id FROM parents WHERE id >= $1 / 2 ORDER BY id LIMIT 1) "
    "WHERE id = (SELECT id FROM children WHERE id >= $1 ORDER BY id LIMIT 1)",
    "UPDATE links SET note = note || 'y' "
    "WHERE (a, b) = (SELECT a, b FROM links WHERE a >= $1 ORDER BY a, b LIMIT 1)",
    /* key changes (children follow a parent's key through ON UPDATE CASCADE) */
    "UPDATE parents SET id = nextval('itest_ids') "
    "WHERE id = (SELECT id FROM parents WHERE id >= $1 ORDER BY id LIMIT 1)",
    "UPDATE children SET id = nextval('itest_ids') "
    "WHERE id = (SELECT id FROM children WHERE id >= $1 ORDER BY id LIMIT 1)",
    "UPDATE links SET b = nextval('itest_ids') "
    "WHERE (a, b) = (SELECT a, b FROM links WHERE a >= $1 ORDER BY a, b LIMIT 1)",
    /* deletes (a parent's delete cascades) */
    "DELETE FROM parents WHERE id = (SELECT id FROM parents WHERE id >= $1 ORDER BY id LIMIT 1)",
    "DELETE FROM children WHERE id = (SELECT id FROM children WHERE id >= $1 ORDER BY id LIMIT 1)",
    "DELETE FROM links WHERE (a, b) = (SELECT a, b FROM links WHERE a >= $1 ORDER BY a, b LIMIT 1)",
    /* notes: a key change of their parent, re-point then delete the parent,
     * a note inserted before its parent */
    "UPDATE notes SET body = body || '.' "
    "WHERE id = (SELECT id FROM notes WHERE id >= $1 / 1000 ORDER BY id LIMIT 1)",
    "SELECT itest_repoint_delete($1)",
    "SELECT itest_child_first($1)",
};
#define N_OPS (sizeof OPS / sizeof OPS[0])

/* The chaos test's writers: several at once, so transactions commit out of
 * seq order (one holds seq n open while n + 1 commits) and the daemon's
 * batches take entries around open transactions. */
#define WRITERS 4

/* Child process `idx`: random transactions of 1..4 operations until SIGTERM,
 * from its own random stream (seed); reconnects through server restarts; 1
 * in 10 transactions rolls back; 1 in 4 pauses between its operations, so it
 * holds its change-log entries uncommitted while the others commit. Exits 0
 * after at least some commits, 1 otherwise. */
static void workload_main(int idx, unsigned seed)
{
    signal(SIGTERM, on_term);
    srandom(seed);
    PGconn *c = NULL;
    long commits = 0, failures = 0;
    while (!workload_stop) {
        if (!c || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = PQconnectdb(T.db_conninfo);
            if (PQstatus(c) != CONNECTION_OK) {
                itest_sleep_ms(100);
                continue;
            }
            PQsetNoticeProcessor(c, quiet, NULL);
        }
        PQclear(PQexec(c, "BEGIN"));
        int n = 1 + (int)(random() % 4);
        bool slow = random() % 4 == 0;
        bool ok = true;
        for (int i = 0; i < n && ok; i++) {
            /* mostly the seed rows' ids (up to 300,000), sometimes the
             * first of the new ones (from 3,000,000): writers rarely meet
             * on one row (an id between the two ranges picks the first new
             * row, a hot spot several writers would queue on) */
            long id = random() % 5 ? random() % 300000 : 3000000 + random() % 20000;
            char r[24];
            snprintf(r, sizeof r, "%ld", id);
            const char *params[1] = {r};
            const char *sql = OPS[random() % N_OPS];
            bool has_param = strstr(sql, "$1") != NULL;
            PGresult *res = PQexecParams(c, sql, has_param ? 1 : 0, NULL, has_param ? params : NULL,
                                         NULL, NULL, 0);
            ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
            PQclear(res);
            if (slow)
                itest_sleep_ms(1 + random() % 20);
        }
        PGresult *res = PQexec(c, ok && random() % 10 != 0 ? "COMMIT" : "ROLLBACK");
        if (ok && PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(res), "COMMIT") == 0)
            commits++;
        else if (!ok)
            failures++;
        PQclear(res);
        itest_sleep_ms(10); /* pacing: 4 writers keep the drain (and the test) about as long as one did */
    }
    PQfinish(c);
    fprintf(stderr, "test-sync: writer %d: %ld commits, %ld failed transactions (deadlocks, "
                    "restarts)\n", idx, commits, failures);
    _exit(commits > 0 ? 0 : 1);
}

/* The chaos run's seed: $PGSHADOW_CHAOS_SEED when set (to replay a failed
 * run's choices: kill moments, bursts, every writer's operations; the
 * timing of a rerun still differs), else from the clock. */
static unsigned chaos_seed(void)
{
    const char *e = getenv("PGSHADOW_CHAOS_SEED");
    if (e && *e) {
        char *end;
        unsigned long v = strtoul(e, &end, 10);
        if (*end || v > 0xffffffffUL)
            fail_msg("PGSHADOW_CHAOS_SEED=%s is not a number", e);
        return (unsigned)v;
    }
    return (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
}

/* ------------------------------------------------------------------------ */
/* Setup */

static const char SCHEMA_SQL[] =
    "CREATE SEQUENCE itest_ids START 3000000; "
    "CREATE TABLE parents (id bigint PRIMARY KEY, name text NOT NULL, score integer, "
    "  created timestamptz NOT NULL DEFAULT now(), tags text[] DEFAULT '{a,b}', meta jsonb DEFAULT '{}'); "
    "CREATE TABLE children (id bigint PRIMARY KEY, "
    "  parent_id bigint REFERENCES parents (id) ON UPDATE CASCADE ON DELETE CASCADE, "
    "  payload text, qty integer NOT NULL DEFAULT 0, price numeric(10,2) DEFAULT 1.50); "
    "CREATE TABLE links (a bigint NOT NULL, b bigint NOT NULL, "
    "  parent_id bigint NOT NULL REFERENCES parents (id) ON UPDATE CASCADE ON DELETE CASCADE, "
    "  note text, PRIMARY KEY (a, b)); "
    "INSERT INTO parents (id, name, score, meta) "
    "  SELECT g * 100, 'parent ' || g, g % 997, jsonb_build_object('g', g) "
    "  FROM generate_series(1, 3000) g; "
    "INSERT INTO children (id, parent_id, payload, qty) "
    "  SELECT g * 10, (1 + g % 3000) * 100, repeat(md5(g::text), 1 + g % 4), g % 50 "
    "  FROM generate_series(1, 12000) g; "
    "INSERT INTO links (a, b, parent_id, note) "
    "  SELECT g * 50, g % 7, (1 + (g * 7) % 3000) * 100, CASE WHEN g % 5 = 0 THEN NULL ELSE 'l' || g END "
    "  FROM generate_series(1, 6000) g; "
    /* notes: ON UPDATE CASCADE, ON DELETE NO ACTION, checked at COMMIT (a
     * parent key change, children re-pointed then the parent deleted, a
     * child inserted before its parent: sync.md "Foreign keys") */
    "CREATE TABLE notes (id bigint PRIMARY KEY, parent_id bigint NOT NULL "
    "  REFERENCES parents (id) ON UPDATE CASCADE DEFERRABLE INITIALLY DEFERRED, body text); "
    "INSERT INTO notes SELECT g, (1 + g % 3000) * 100, 'note ' || g FROM generate_series(1, 2000) g; "
    "CREATE FUNCTION itest_repoint_delete(x bigint) RETURNS void LANGUAGE plpgsql AS $$ "
    "DECLARE p bigint; q bigint; BEGIN "
    "  SELECT id INTO p FROM parents WHERE id >= x ORDER BY id LIMIT 1; "
    "  SELECT id INTO q FROM parents WHERE id > p ORDER BY id LIMIT 1; "
    "  IF q IS NULL THEN RETURN; END IF; "
    "  UPDATE notes SET parent_id = q WHERE parent_id = p; "
    "  DELETE FROM parents WHERE id = p; END $$; "
    "CREATE FUNCTION itest_child_first(x bigint) RETURNS void LANGUAGE plpgsql AS $$ "
    "DECLARE p bigint := nextval('itest_ids'); BEGIN "
    "  INSERT INTO notes VALUES (nextval('itest_ids'), p, 'before its parent ' || x); "
    "  INSERT INTO parents (id, name, score) VALUES (p, 'late parent', 1); END $$; "
    "ANALYZE parents; ANALYZE children; ANALYZE links; ANALYZE notes";

/* The migration.tables block write_config_full writes (what was installed);
 * test_config_drift swaps it for an edited one. */
static const char TABLES_INSTALLED[] =
    "    - name: parents\n    - name: children\n    - name: links\n    - name: notes\n";
static const char *config_tables = TABLES_INSTALLED;

static int write_config_full(int backfill_chunk, int batch_size, const char *on_apply_error,
                             const char *catchup)
{
    FILE *f = fopen(T.cfg, "w");
    if (!f)
        return -1;
    fprintf(f,
            "database:\n  conninfo: \"%s\"\n"
            "migration:\n  id: itest_sync\n  tables:\n%s"
            "sync:\n  batch_size: %d\n  batch_delay: 10ms\n  catchup_interval: %s\n"
            "  backfill_chunk: %d\n  workers: 4\n  on_apply_error: %s\n"
            "metrics:\n  listen: \"\"\n",
            T.db_conninfo, config_tables, batch_size, catchup, backfill_chunk, on_apply_error);
    return fclose(f);
}

static int write_config_ex(int backfill_chunk, int batch_size, const char *on_apply_error)
{
    return write_config_full(backfill_chunk, batch_size, on_apply_error, "250ms");
}

static int write_config(int backfill_chunk)
{
    return write_config_ex(backfill_chunk, 200, "quarantine");
}

static int group_setup(void **state)
{
    (void)state;
    T.conninfo = getenv("PGSHADOW_TEST_CONNINFO");
    T.cluster = getenv("PGSHADOW_TEST_CLUSTER");
    T.srcdir = getenv("PGSHADOW_SRCDIR");
    T.pgshadowd = getenv("PGSHADOWD");
    T.pgshadowctl = getenv("PGSHADOWCTL");
    if (!T.conninfo || !T.cluster || !T.srcdir || !T.pgshadowd || !T.pgshadowctl) {
        fprintf(stderr, "test-sync: PGSHADOW_TEST_CONNINFO, PGSHADOW_TEST_CLUSTER, "
                        "PGSHADOW_SRCDIR, PGSHADOWD and PGSHADOWCTL must be set (run through "
                        "tests/run, which starts a throwaway cluster)\n");
        return -1;
    }
    snprintf(T.dir, sizeof T.dir, "/tmp/itest-sync-XXXXXX");
    if (!mkdtemp(T.dir))
        return -1;
    snprintf(T.cfg, sizeof T.cfg, "%s/pgshadow.yaml", T.dir);
    snprintf(D.log, sizeof D.log, "%s/pgshadowd.log", T.dir);
    if (asprintf(&T.db_conninfo, "%s dbname=%s", T.conninfo, DB) < 0)
        return -1;

    PGconn *admin = connect_to(T.conninfo);
    if (!admin) {
        fprintf(stderr, "test-sync: cannot connect to %s\n", T.conninfo);
        return -1;
    }
    PQclear(PQexec(admin, "DROP DATABASE IF EXISTS " DB " WITH (FORCE)"));
    PGresult *res = PQexec(admin, "CREATE DATABASE " DB);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    PQfinish(admin);
    if (!ok)
        return -1;
    PGconn *c = connect_to(T.db_conninfo);
    if (!c)
        return -1;
    res = PQexec(c, SCHEMA_SQL);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "test-sync: schema: %s\n", PQerrorMessage(c));
    PQclear(res);
    PQfinish(c);
    return ok && write_config(100) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    itest_daemon_cleanup(&D);
    itest_daemon_cleanup(&A);
    itest_daemon_cleanup(&B);
    fprintf(stderr, "test-sync: logs kept in %s\n", T.dir);
    free(T.db_conninfo);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 1. install + backfill, interrupted once */

static void test_backfill(void **state)
{
    (void)state;
    assert_int_equal(run_ctl("install"), 0);
    /* install brings the sync engine's database side along */
    assert_true(itest_true_on(
        T.db_conninfo,
        "SELECT to_regprocedure('pgshadow.apply_batch(text,integer,text)') IS NOT NULL "
        "AND to_regprocedure('pgshadow.backfill_step(text,integer)') IS NOT NULL"));
    db_exec(DIFF_FN);

    daemon_start(&D, "info");
    /* Kill it mid-backfill, in the middle of children (12,000 rows, chunks
     * of at most 100, four workers on 16 ranges: parents are done, 30+
     * chunks are left): each range's cursor is persisted with each chunk. */
    static const char MID_CHILDREN_SQL[] =
        "SELECT backfill_state = 'running' AND backfill_rows BETWEEN 1000 AND 9000 "
        "FROM pgshadow.tables WHERE table_name = 'children'";
    bool caught = false;
    for (int64_t end = itest_now_ms() + 60000; !caught && itest_now_ms() < end;) {
        caught = itest_true_on(T.db_conninfo, MID_CHILDREN_SQL);
        if (!caught)
            itest_sleep_ms(10);
    }
    if (!caught)
        fail_msg("never saw the children backfill between 1000 and 9000 rows");
    daemon_assert_alive(&D);
    itest_daemon_kill(&D, SIGKILL);
    /* A step in flight still commits on the server: wait until the killed
     * daemon's sessions are gone, then read what it left. */
    if (!itest_wait_true(T.db_conninfo,
                         "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = "
                         "current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend')",
                         30000))
        fail_msg("the killed daemon's sessions did not go away");
    /* still in the middle (a step in flight adds at most one chunk), with
     * more than one chunk left, so the restart's first step is no last one */
    assert_true(itest_true_on(T.db_conninfo,
                              "SELECT backfill_state = 'running' AND backfill_rows BETWEEN 1000 AND 11000 "
                              "FROM pgshadow.tables WHERE table_name = 'children'"));
    long long rows = db_int("SELECT backfill_rows FROM pgshadow.tables WHERE table_name = 'children'");
    /* Four workers copied children's ranges at once: several ranges have a
     * cursor, and in every range the rows up to its cursor are exactly the
     * rows it counts (the seed's children are ids 10, 20, ..., 120000). */
    static const char CHILD_RANGES[] =
        "FROM pgshadow.backfill_ranges b JOIN pgshadow.tables t USING (table_id) "
        "WHERE t.table_name = 'children'";
    char q[512];
    snprintf(q, sizeof q, "SELECT count(*) FILTER (WHERE b.cursor IS NOT NULL) %s", CHILD_RANGES);
    long long with_cursor = db_int(q);
    snprintf(q, sizeof q,
             "SELECT bool_and((SELECT count(*) FROM children c WHERE c.id > coalesce(b.lo[1]::bigint, 0) "
             "AND c.id <= coalesce(b.cursor[1]::bigint, 0)) = b.rows) AND sum(b.rows) = %lld %s",
             rows, CHILD_RANGES);
    snprintf(q, sizeof q, "SELECT count(*) %s", CHILD_RANGES);
    long long n_ranges = db_int(q);
    fprintf(stderr, "test-sync: killed pgshadowd mid-backfill: children at %lld rows, %lld of %lld ranges "
            "with a cursor\n", rows, with_cursor, n_ranges);
    assert_true(with_cursor >= 2);
    snprintf(q, sizeof q,
             "SELECT bool_and((SELECT count(*) FROM children c WHERE c.id > coalesce(b.lo[1]::bigint, 0) "
             "AND c.id <= coalesce(b.cursor[1]::bigint, 0)) = b.rows) AND sum(b.rows) = %lld %s",
             rows, CHILD_RANGES);
    assert_true(itest_true_on(T.db_conninfo, q));
    /* what each range had copied, to compare with what the restart offers */
    db_exec("CREATE TABLE itest_bf_before AS SELECT b.range_no, coalesce(b.lo[1]::bigint, 0) AS lo, "
            "b.hi[1]::bigint AS hi, coalesce(b.cursor[1]::bigint, b.lo[1]::bigint, 0) AS cur "
            "FROM pgshadow.backfill_ranges b JOIN pgshadow.tables t USING (table_id) "
            "WHERE t.table_name = 'children'");
    /* Every row the backfill offers the children shadow from now on, copied
     * or not (BEFORE INSERT fires for ON CONFLICT DO NOTHING too). */
    db_exec("CREATE TABLE itest_bf_offered (id bigint NOT NULL); "
            "CREATE FUNCTION itest_bf_note() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN INSERT INTO public.itest_bf_offered VALUES (NEW.id); RETURN NEW; END$$; "
            "CREATE TRIGGER itest_bf_note BEFORE INSERT ON children_shadow "
            "FOR EACH ROW EXECUTE FUNCTION public.itest_bf_note()");

    size_t from = itest_daemon_log_size(&D);
    daemon_start(&D, "info");
    wait_drained("backfill");
    daemon_assert_alive(&D);
    /* the restart resumed every range of children right after its
     * persisted cursor: not one row at or before a range's cursor offered
     * again, every row after it offered once, the resume logged with the
     * persisted count, no second start */
    static const char OFFERED_SQL[] =
        "SELECT count(*) FILTER (WHERE o.id <= b.cur) || ' ' || count(*) FILTER (WHERE o.id > b.cur) "
        "|| ' ' || count(DISTINCT o.id) FROM itest_bf_offered o "
        "JOIN itest_bf_before b ON o.id > b.lo AND (b.hi IS NULL OR o.id <= b.hi)";
    PGconn *c = itest_connect(T.db_conninfo);
    char want[96];
    snprintf(want, sizeof want, "0 %lld %lld", 12000 - rows, 12000 - rows);
    itest_expect_sql(c, OFFERED_SQL, want);
    snprintf(want, sizeof want, "sync: backfill children: resuming after %lld rows (~", rows);
    assert_int_equal(log_count(&D, from, want), 1);
    assert_int_equal(log_count(&D, from, "sync: backfill children: started"), 0);
    assert_int_equal(log_count(&D, from, "sync: backfill parents:"), 0); /* done before the kill */
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.events WHERE what = 'backfill_started' "
                        "AND table_name = 'children'", "1");
    itest_exec_ok(c, "DROP TRIGGER itest_bf_note ON children_shadow; DROP FUNCTION itest_bf_note(); "
                     "DROP TABLE itest_bf_offered, itest_bf_before");
    PQfinish(c);
    assert_true(log_count(&D, 0, "leader lock acquired") >= 2);
    assert_true(log_count(&D, 0, "done: ") >= TABLES);
    assert_true(itest_true_on(
        T.db_conninfo, "SELECT bool_and(primary_rows IS NOT NULL AND shadow_rows IS NOT NULL "
                       "AND backfill_done_at IS NOT NULL) FROM pgshadow.tables"));
    assert_all_equal("after backfill");
}

/* ------------------------------------------------------------------------ */
/* 2. chaos */

/* The chaos run's burst: one statement over a few thousand children rows. A
 * writer holding some of those rows can deadlock with it; the server then
 * cancels one of the two, and when that is the burst, it is run again. */
static void chaos_burst(void)
{
    PGconn *c = itest_connect(T.db_conninfo);
    for (int i = 0;; i++) {
        PGresult *r = PQexec(c, "UPDATE children SET qty = qty + 1 WHERE id % 5 = 0");
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        bool retry = PQresultStatus(r) != PGRES_COMMAND_OK && st && strcmp(st, "40P01") == 0 && i < 5;
        if (PQresultStatus(r) != PGRES_COMMAND_OK && !retry)
            fail_msg("chaos burst: %s", PQresultErrorMessage(r));
        PQclear(r);
        if (!retry)
            break;
    }
    PQfinish(c);
}

static void test_chaos(void **state)
{
    (void)state;
    daemon_assert_alive(&D);
    unsigned seed = chaos_seed();
    fprintf(stderr, "test-sync: chaos seed %u (replay its choices with PGSHADOW_CHAOS_SEED=%u)\n",
            seed, seed);
    pid_t wl[WRITERS];
    for (int w = 0; w < WRITERS; w++) {
        wl[w] = fork();
        assert_true(wl[w] >= 0);
        if (wl[w] == 0)
            workload_main(w, seed + 1 + (unsigned)w);
    }

    srandom(seed);
    const int kills = 12;
    int pg_restarts = 0;
    long long max_pending = 0;
    size_t started = 0; /* log offset of the running daemon's start */
    for (int i = 0; i < kills; i++) {
        /* Each kill lands on a leader: the killed daemon's backend can hold
         * the leader lock until its statement in flight ends, and a daemon
         * killed while it waited as a standby would not count. */
        if (!itest_daemon_wait_log(&D, started, "leader lock acquired", 60000))
            fail_msg("restart %d did not take the leader lock within 60 s (seed %u)", i, seed);
        itest_sleep_ms(300 + random() % 2200); /* chaos: a random moment, not a wait */
        daemon_assert_alive(&D);
        if (i == 3 || i == 8) {
            /* the server goes away under the daemon and the workload */
            itest_cluster_restart();
            pg_restarts++;
            itest_sleep_ms(300 + random() % 1000);
            daemon_assert_alive(&D);
        }
        if (random() % 2) {
            /* a burst of a few thousand changes, so the kill tends to land in
             * the middle of a multi-batch drain */
            chaos_burst();
            itest_sleep_ms(random() % 300);
        }
        long long pending = db_int("SELECT count(*) FROM pgshadow.change_log");
        if (pending > max_pending)
            max_pending = pending;
        itest_daemon_kill(&D, SIGKILL);
        itest_sleep_ms(random() % 400);
        started = itest_daemon_log_size(&D);
        daemon_start(&D, "info");
    }
    itest_sleep_ms(1000); /* the last daemon under load for a moment */
    for (int w = 0; w < WRITERS; w++)
        kill(wl[w], SIGTERM);
    for (int w = 0; w < WRITERS; w++) {
        int st;
        assert_int_equal(waitpid(wl[w], &st, 0), wl[w]);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fail_msg("writer %d ended with status %d (seed %u)", w, st, seed);
    }
    fprintf(stderr, "test-sync: chaos: %d writers, %d SIGKILLs, %d immediate restarts, up to %lld "
                    "pending\n", WRITERS, kills, pg_restarts, max_pending);
    assert_int_equal(pg_restarts, 2);

    wait_drained("chaos");
    daemon_assert_alive(&D);
    assert_true(log_count(&D, 0, "leader lock acquired") >= 2 + kills);
    fprintf(stderr, "test-sync: chaos: still quarantined: %lld\n",
            db_int("SELECT count(*) FROM pgshadow.quarantine"));
    if (db_int("SELECT count(*) FROM pgshadow.quarantine") > 0) {
        PGconn *c = itest_connect(T.db_conninfo);
        char *q = itest_query(c, "SELECT string_agg(t.table_name || ' ' || q.key::text || ' ' || q.sqlstate "
                                 "|| ' (' || q.attempts || ' attempts): ' || q.message, E'\\n') "
                                 "FROM pgshadow.quarantine q JOIN pgshadow.tables t USING (table_id)");
        fprintf(stderr, "%s\n", q);
        free(q);
        PQfinish(c);
    }
    assert_all_equal("after chaos");
    assert_int_equal(db_int("SELECT count(*) FROM pgshadow.quarantine"), 0);
    /* the registry's counts are exact once drained with nothing quarantined
     * (docs/sync.md "Counts"), shadow cascades included */
    for (int i = 0; i < TABLES; i++) {
        char sql[512];
        snprintf(sql, sizeof sql,
                 "SELECT (SELECT count(*) FROM %s) - primary_rows FROM pgshadow.tables "
                 "WHERE table_name = '%s'", table_names[i], table_names[i]);
        long long dp = db_int(sql);
        snprintf(sql, sizeof sql,
                 "SELECT (SELECT count(*) FROM %s_shadow) - shadow_rows FROM pgshadow.tables "
                 "WHERE table_name = '%s'", table_names[i], table_names[i]);
        long long ds = db_int(sql);
        fprintf(stderr, "test-sync: chaos: %s: registry count off by %lld (primary), %lld (shadow)\n",
                table_names[i], dp, ds);
        assert_int_equal(dp, 0);
        assert_int_equal(ds, 0);
    }
}

/* ------------------------------------------------------------------------ */
/* 3. quarantine */

static void test_quarantine(void **state)
{
    (void)state;
    daemon_assert_alive(&D);
    /* the shadow is stricter than the primary */
    db_exec("ALTER TABLE parents_shadow ADD CONSTRAINT itest_no_negative CHECK (score >= 0)");
    size_t from = itest_daemon_log_size(&D);
    /* 5 poison rows mixed into transactions with good rows and children */
    db_exec("INSERT INTO parents (id, name, score) "
            "SELECT 9000000 + g, 'mixed ' || g, CASE WHEN g % 10 = 0 THEN -g ELSE g END "
            "FROM generate_series(1, 50) g");
    db_exec("INSERT INTO children (id, parent_id, payload) "
            "SELECT 9100000 + g, 9000000 + g, 'ok' FROM generate_series(1, 50) g WHERE g % 10 <> 0");
    wait_drained("quarantine");
    assert_int_equal(db_int("SELECT count(*) FROM pgshadow.quarantine q JOIN pgshadow.tables t "
                            "USING (table_id) WHERE t.table_name = 'parents' AND q.sqlstate = '23514' "
                            "AND q.message LIKE '%itest_no_negative%' "
                            "AND q.key[1]::bigint IN (9000010, 9000020, 9000030, 9000040, 9000050)"),
                     5);
    assert_int_equal(db_int("SELECT count(*) FROM pgshadow.quarantine"), 5);
    /* every other row arrived: exactly the poison rows are missing */
    assert_int_equal(db_int("SELECT count(*) FROM parents_shadow WHERE id BETWEEN 9000001 AND 9000050"),
                     45);
    assert_int_equal(db_int("SELECT count(*) FROM children_shadow WHERE id BETWEEN 9100001 AND 9100050"),
                     45);
    diff d = table_diff("parents");
    assert_int_equal(d.missing, 5);
    assert_int_equal(d.orphans, 0);
    assert_int_equal(d.differ, 0);
    assert_true(itest_daemon_wait_log(&D, from, "quarantined", 5000));

    /* a later change to a poisoned key retries it; success leaves the quarantine */
    db_exec("UPDATE parents SET score = 1 WHERE id IN (9000010, 9000020)");
    wait_drained("quarantine retry");
    assert_true(
        itest_wait_true(T.db_conninfo, "SELECT count(*) = 3 FROM pgshadow.quarantine", 10000));
    /* the rest: fix the rows and retry */
    db_exec("UPDATE parents SET score = 2 WHERE id IN (9000030, 9000040, 9000050)");
    wait_drained("quarantine fixed");
    assert_true(itest_wait_true(T.db_conninfo,
                                "SELECT NOT EXISTS (SELECT 1 FROM pgshadow.quarantine)", 10000));
    assert_all_equal("after quarantine");
    db_exec("ALTER TABLE parents_shadow DROP CONSTRAINT itest_no_negative");
}

/* ------------------------------------------------------------------------ */
/* 3a. wake-up flag: after a drain the daemon re-arms pgshadow.wakeup, and a
 * single write then reaches the shadow through its NOTIFY. catchup_interval
 * is 10 s and every write is delivered well within 10 s of the reload that
 * set it (which restarts that timer), so only the NOTIFY can explain it. */

static void reload_daemon(itest_daemon *p);

static void test_wakeup(void **state)
{
    (void)state;
    daemon_assert_alive(&D);
    assert_int_equal(write_config_full(100, 200, "quarantine", "10s"), 0);
    int64_t t0 = itest_now_ms();
    reload_daemon(&D);
    wait_drained("wakeup: before");
    /* drained and idle: armed again */
    assert_true(itest_wait_true(
        T.db_conninfo, "SELECT armed FROM pgshadow.wakeup WHERE migration_id = 'itest_sync'",
        5000));
    for (int i = 1; i <= 3; i++) {
        char sql[256];
        snprintf(sql, sizeof sql, "INSERT INTO parents (id, name, score) VALUES (%d, 'wake %d', 1)",
                 9500000 + i, i);
        db_exec(sql);
        snprintf(sql, sizeof sql, "SELECT EXISTS (SELECT 1 FROM parents_shadow WHERE id = %d)",
                 9500000 + i);
        int64_t left = t0 + 9000 - itest_now_ms();
        assert_true(left > 0);
        if (!itest_wait_true(T.db_conninfo, sql, left))
            fail_msg("write %d did not reach the shadow within %lld ms of the reload "
                     "(catchup_interval 10s): the NOTIFY did not wake the daemon",
                     i, (long long)(itest_now_ms() - t0));
        /* and it re-armed after that drain */
        assert_true(itest_wait_true(
            T.db_conninfo, "SELECT armed FROM pgshadow.wakeup WHERE migration_id = 'itest_sync'",
            t0 + 9000 - itest_now_ms()));
    }
    fprintf(stderr, "test-sync: 3 single writes delivered by NOTIFY in %lld ms (catchup 10s)\n",
            (long long)(itest_now_ms() - t0));
    assert_int_equal(write_config(100), 0);
    reload_daemon(&D);
    assert_all_equal("after wake-ups");
}

/* ------------------------------------------------------------------------ */
/* 3b. reload (batch_size) and on_apply_error: halt */

static void reload_daemon(itest_daemon *p)
{
    size_t from = itest_daemon_log_size(p);
    assert_int_equal(kill(p->pid, SIGHUP), 0);
    assert_true(itest_daemon_wait_log(p, from, "in force", 20000));
}

/* Stop D cleanly (exit 0) and start it again at debug level with the notify
 * socket `name`; returns the log offset of the new start, once it leads. */
static size_t restart_with_notify(const char *name)
{
    daemon_assert_alive(&D);
    int st = itest_daemon_kill(&D, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    notify_open(&D, name);
    size_t from = itest_daemon_log_size(&D);
    daemon_start(&D, "debug");
    assert_true(itest_daemon_wait_log(&D, from, "leader lock acquired", 20000));
    return from;
}

static void test_reload_and_halt(void **state)
{
    (void)state;
    size_t from = restart_with_notify("notify-d.sock");

    /* reload: smaller batches from now on */
    assert_int_equal(write_config_ex(100, 50, "halt"), 0);
    reload_daemon(&D);
    from = itest_daemon_log_size(&D);
    db_exec("INSERT INTO parents (id, name, score) SELECT 9300000 + g, 'reload ' || g, g "
            "FROM generate_series(1, 300) g");
    wait_drained("reload");
    assert_true(log_count(&D, from, "taken=50 ") >= 6);
    assert_int_equal(log_count(&D, from, "taken=200 "), 0);

    /* halt: one bad row stops the table's apply and says why; nothing is
     * quarantined, the change log keeps the entries */
    db_exec("ALTER TABLE parents_shadow ADD CONSTRAINT itest_halt CHECK (score >= 0)");
    from = itest_daemon_log_size(&D);
    db_exec("INSERT INTO parents (id, name, score) VALUES (9400001, 'good', 1), (9400002, 'bad', -1), "
            "(9400003, 'good', 3)");
    assert_true(itest_daemon_wait_log(&D, from, "HALTED (on_apply_error: halt): ", 20000));
    char why[512];
    log_after(&D, from, "HALTED (on_apply_error: halt): ", why, sizeof why);
    assert_non_null(strstr(why, "parents"));
    assert_non_null(strstr(why, "23514"));
    assert_non_null(strstr(why, "itest_halt"));
    assert_true(wait_status(&D, "STATUS=connected; leader; HALTED: ", 20000));
    assert_true(notify_has(&D, "23514"));
    assert_true(db_int("SELECT count(*) FROM pgshadow.change_log") > 0);
    assert_int_equal(db_int("SELECT count(*) FROM pgshadow.quarantine"), 0);
    assert_int_equal(db_int("SELECT count(*) FROM parents_shadow WHERE id = 9400002"), 0);
    daemon_assert_alive(&D);

    /* the operator fixes the row and reloads: applying resumes */
    db_exec("UPDATE parents SET score = 2 WHERE id = 9400002");
    assert_int_equal(write_config(100), 0);
    from = itest_daemon_log_size(&D);
    reload_daemon(&D);
    assert_true(itest_daemon_wait_log(&D, from, "clearing the halt", 5000));
    wait_drained("after halt");
    assert_int_equal(db_int("SELECT count(*) FROM parents_shadow WHERE id BETWEEN 9400001 AND 9400003"),
                     3);
    db_exec("ALTER TABLE parents_shadow DROP CONSTRAINT itest_halt");
    assert_all_equal("after halt");
    notify_close(&D);
}

/* ------------------------------------------------------------------------ */
/* 3c. a reload whose tables differ from the installed registry */

/* Forget every notify message received or pending so far. */
static void drain_status(itest_daemon *p)
{
    itest_daemon_drain(p);
    for (int i = 0; i < p->n_msgs; i++)
        free(p->msgs[i]);
    p->n_msgs = 0;
}

static void test_config_drift(void **state)
{
    (void)state;
    size_t from = restart_with_notify("notify-drift.sock");
    assert_true(wait_status(&D, "STATUS=connected; leader; backfill done; lag ", 20000));
    /* the installed config itself: no difference reported at start */
    assert_int_equal(log_count(&D, from, "config differs from the installed registry"), 0);
    assert_false(notify_has(&D, "config != installed"));

    /* a changed expression and a table that was never installed */
    db_exec("CREATE TABLE IF NOT EXISTS drift_extra (id integer PRIMARY KEY)");
    config_tables = "    - name: parents\n      columns:\n        score: \"p.score + 1\"\n"
                    "    - name: children\n    - name: links\n    - name: notes\n"
                    "    - name: drift_extra\n";
    assert_int_equal(write_config(100), 0);
    from = itest_daemon_log_size(&D);
    reload_daemon(&D);
    assert_true(itest_daemon_wait_log(&D, from,
                         "config differs from the installed registry for table parents: columns: "
                         "score changed (\"p.score\" -> \"p.score + 1\"); the daemon keeps applying "
                         "with the installed mapping; run pgshadowctl install to apply it",
                         10000));
    assert_true(itest_daemon_wait_log(&D, from,
                         "config differs from the installed registry for table drift_extra: in the "
                         "config but not installed",
                         10000));
    assert_int_equal(log_count(&D, from, "config differs from the installed registry"), 2);
    assert_true(wait_status(&D, "; config != installed: run pgshadowctl install", 20000));
    /* still applying, with the installed mapping (score, not score + 1) */
    db_exec("INSERT INTO parents (id, name, score) VALUES (9600001, 'drift', 7)");
    assert_true(itest_wait_true(T.db_conninfo,
                                "SELECT score = 7 FROM parents_shadow WHERE id = 9600001", 20000));

    /* restored: the warnings stop and the marker goes away */
    config_tables = TABLES_INSTALLED;
    assert_int_equal(write_config(100), 0);
    from = itest_daemon_log_size(&D);
    reload_daemon(&D);
    assert_true(itest_daemon_wait_log(&D, from, "match the installed registry again", 10000));
    drain_status(&D);
    assert_true(wait_status(&D, "STATUS=connected; leader; backfill done; lag ", 20000));
    assert_false(notify_has(&D, "config != installed"));
    assert_int_equal(log_count(&D, from, "config differs from the installed registry"), 0);
    db_exec("DROP TABLE drift_extra");
    notify_close(&D);
}

/* ------------------------------------------------------------------------ */
/* 3d. lock_timeout: a lock on a shadow held longer than apply_batch's 5 s */

/* Every pending change-log entry as "op:key", in an order that does not
 * depend on seq (one UPDATE of two rows logs them in heap order). */
static const char PENDING_SQL[] =
    "SELECT coalesce(string_agg(op || ':' || array_to_string(key, ','), ' ' ORDER BY op, key), '') "
    "FROM pgshadow.change_log";

/* The test's rows as the shadow has them. */
static const char LOCK_ROWS_SQL[] =
    "SELECT string_agg(id || '=' || name, ',' ORDER BY id) FROM parents_shadow "
    "WHERE id BETWEEN 9700001 AND 9700010";

/* The locking session: the teardown ends it even when an assertion failed,
 * so the tests after this one never run into the lock. */
static PGconn *locker;

static int lock_teardown(void **state)
{
    (void)state;
    PQfinish(locker);
    locker = NULL;
    return 0;
}

static void test_lock_timeout(void **state)
{
    (void)state;
    daemon_assert_alive(&D);
    /* rows the shadow has before the lock, to update and delete under it */
    db_exec("INSERT INTO parents (id, name, score) SELECT 9700000 + g, 'lock ' || g, g "
            "FROM generate_series(1, 5) g");
    wait_drained("lock timeout: before");

    locker = itest_connect(T.db_conninfo);
    itest_exec_ok(locker, "SET lock_timeout = '10s'"); /* the daemon is idle: no wait expected */
    itest_exec_ok(locker, "BEGIN; LOCK TABLE public.parents_shadow IN ACCESS EXCLUSIVE MODE");
    size_t from = itest_daemon_log_size(&D);

    /* Writes to the primary only (no cascades, fewer than batch_size), so
     * every batch the daemon takes needs parents_shadow. The writer's own
     * lock_timeout turns a capture path that touched the shadow into an
     * error instead of a hang. */
    PGconn *w = itest_connect(T.db_conninfo);
    itest_exec_ok(w, "SET lock_timeout = '10s'");
    itest_exec_ok(w, "INSERT INTO parents (id, name, score) SELECT 9700000 + g, 'lock ' || g, g "
                     "FROM generate_series(6, 10) g");
    itest_exec_ok(w, "UPDATE parents SET name = 'updated under lock', score = score + 100 "
                     "WHERE id IN (9700001, 9700003)");
    itest_exec_ok(w, "DELETE FROM parents WHERE id = 9700002");
    PQfinish(w);
    static const char want_pending[] = "D:9700002 I:9700006 I:9700007 I:9700008 I:9700009 "
                                       "I:9700010 U:9700001 U:9700003";
    itest_expect_sql(locker, PENDING_SQL, want_pending);

    /* apply_batch waits 5 s on the lock, fails with 55P03, the daemon warns */
    int64_t t0 = itest_now_ms();
    static const char warning[] = "sync: apply_batch gave up waiting for a lock after lock_timeout "
                                  "(5 s): ";
    assert_true(itest_daemon_wait_log(&D, from, warning, 20000));
    int64_t waited = itest_now_ms() - t0;
    char why[512];
    log_after(&D, from, warning, why, sizeof why);
    fprintf(stderr, "test-sync: lock timeout warned after %lld ms: %s\n", (long long)waited, why);
    assert_non_null(strstr(why, "lock timeout"));
    assert_non_null(strstr(why, "; retrying in "));
    daemon_assert_alive(&D);
    /* rolled back whole: every entry still pending, the shadow as before
     * (read by the lock holder itself, the only session that can) */
    itest_expect_sql(locker, PENDING_SQL, want_pending);
    itest_expect_sql(locker, LOCK_ROWS_SQL,
                     "9700001=lock 1,9700002=lock 2,9700003=lock 3,9700004=lock 4,9700005=lock 5");
    assert_int_equal(log_count(&D, from, "applied batch"), 0);

    /* the lock goes away: the retry applies it all */
    itest_exec_ok(locker, "COMMIT");
    t0 = itest_now_ms();
    wait_drained("lock timeout: after");
    fprintf(stderr, "test-sync: drained %lld ms after the lock was released\n",
            (long long)(itest_now_ms() - t0));
    daemon_assert_alive(&D);
    itest_expect_sql(locker, LOCK_ROWS_SQL,
                     "9700001=updated under lock,9700003=updated under lock,9700004=lock 4,"
                     "9700005=lock 5,9700006=lock 6,9700007=lock 7,9700008=lock 8,"
                     "9700009=lock 9,9700010=lock 10");
    assert_all_equal("after lock timeout");
}

/* ------------------------------------------------------------------------ */
/* 4. two daemons */

static const char LOCK_HOLDER_SQL[] =
    "SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_locks "
    "WHERE locktype = 'advisory' AND granted AND database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND ((classid::bigint << 32) | objid::bigint) = hashtextextended('pgshadow:itest_sync', 0)";

static char *lock_holders(void)
{
    PGconn *c = itest_connect(T.db_conninfo);
    char *v = itest_query(c, LOCK_HOLDER_SQL);
    PQfinish(c);
    return v;
}

static void test_two_daemons(void **state)
{
    (void)state;
    daemon_assert_alive(&D);
    /* graceful stop of the chaos daemon: exit 0 */
    int st = itest_daemon_kill(&D, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    snprintf(A.log, sizeof A.log, "%s/leader-A.log", T.dir);
    snprintf(B.log, sizeof B.log, "%s/leader-B.log", T.dir);
    notify_open(&A, "notify-a.sock");
    notify_open(&B, "notify-b.sock");
    daemon_start(&A, "debug");
    assert_true(itest_daemon_wait_log(&A, 0, "leader lock acquired", 20000));
    assert_true(wait_status(&A, "STATUS=connected; leader; backfill done; lag ", 20000));
    daemon_start(&B, "debug");
    assert_true(itest_daemon_wait_log(&B, 0, "standby: another pgshadowd holds the leader lock", 20000));
    assert_true(wait_status(&B, "STATUS=connected; standby: another pgshadowd holds the lock", 20000));

    char pid_a[32], pid_b[32];
    log_after(&A, 0, "leader lock acquired for migration itest_sync (backend pid ", pid_a,
              sizeof pid_a);
    pid_a[strcspn(pid_a, ")")] = '\0';
    char *h = lock_holders();
    assert_string_equal(h, pid_a); /* exactly one holder: A's backend */
    free(h);

    /* writes: A applies them, B does nothing */
    db_exec("INSERT INTO parents (id, name, score) SELECT 9200000 + g, 'two ' || g, g "
            "FROM generate_series(1, 500) g");
    wait_drained("two daemons");
    assert_true(log_count(&A, 0, "applied batch") > 0);
    assert_int_equal(log_count(&B, 0, "applied batch"), 0);
    assert_int_equal(log_count(&B, 0, "leader lock acquired"), 0);
    daemon_assert_alive(&B);

    /* the leader dies: B takes over within seconds and drains new changes */
    size_t from_b = itest_daemon_log_size(&B);
    itest_daemon_kill(&A, SIGKILL);
    int64_t t0 = itest_now_ms();
    db_exec("UPDATE parents SET score = score + 7 WHERE id BETWEEN 9200001 AND 9200500");
    db_exec("DELETE FROM parents WHERE id BETWEEN 9200001 AND 9200100");
    assert_true(itest_daemon_wait_log(&B, from_b, "leader lock acquired", 15000));
    fprintf(stderr, "test-sync: standby took over after %lld ms\n", (long long)(itest_now_ms() - t0));
    log_after(&B, from_b, "leader lock acquired for migration itest_sync (backend pid ", pid_b,
              sizeof pid_b);
    pid_b[strcspn(pid_b, ")")] = '\0';
    h = lock_holders();
    assert_string_equal(h, pid_b);
    free(h);
    wait_drained("handover");
    assert_true(log_count(&B, from_b, "applied batch") > 0);
    assert_true(wait_status(&B, "STATUS=connected; leader; backfill done; lag ", 20000));
    assert_all_equal("after handover");
    daemon_assert_alive(&B);
    st = itest_daemon_kill(&B, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    notify_close(&A);
    notify_close(&B);
}

/* ------------------------------------------------------------------------ */
/* 5. a stale session of our own holds the leader lock */

/* A byte-forwarding proxy between Unix sockets, in a child process. On
 * SIGUSR1 it closes its client-side sockets and keeps the server-side ones
 * open without reading them: to the daemon the connection is gone, to the
 * server the session is alive and idle, still holding its advisory lock,
 * exactly as when only the client side of a network path drops. */
static volatile sig_atomic_t proxy_drop;

static void on_proxy_usr1(int sig)
{
    (void)sig;
    proxy_drop = 1;
}

static void proxy_main(int lfd, const char *target)
{
    enum { MAXP = 16 };
    int cli[MAXP], srv[MAXP], n = 0;
    bool live[MAXP] = {false};
    signal(SIGUSR1, on_proxy_usr1);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (;;) {
        if (proxy_drop) {
            for (int i = 0; i < n; i++)
                if (live[i]) {
                    close(cli[i]);
                    live[i] = false; /* srv[i] stays open, never read again */
                }
            proxy_drop = 0;
        }
        struct pollfd p[1 + 2 * MAXP];
        int who[1 + 2 * MAXP], k = 0;
        p[k].fd = lfd;
        p[k].events = POLLIN;
        who[k++] = -1;
        for (int i = 0; i < n; i++) {
            if (!live[i])
                continue;
            p[k].fd = cli[i];
            p[k].events = POLLIN;
            who[k++] = i;
            p[k].fd = srv[i];
            p[k].events = POLLIN;
            who[k++] = MAXP + i;
        }
        if (poll(p, (nfds_t)k, 200) <= 0)
            continue;
        for (int j = 0; j < k; j++) {
            if (!p[j].revents)
                continue;
            if (who[j] < 0) {
                int c = accept(lfd, NULL, NULL);
                int s = socket(AF_UNIX, SOCK_STREAM, 0);
                struct sockaddr_un a = {.sun_family = AF_UNIX};
                snprintf(a.sun_path, sizeof a.sun_path, "%s", target);
                if (c < 0 || s < 0 || n == MAXP || connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
                    close(c);
                    close(s);
                    continue;
                }
                cli[n] = c;
                srv[n] = s;
                live[n++] = true;
                continue;
            }
            int i = who[j] % MAXP;
            if (!live[i])
                continue;
            int from = who[j] < MAXP ? cli[i] : srv[i], to = who[j] < MAXP ? srv[i] : cli[i];
            char buf[16384];
            ssize_t r = read(from, buf, sizeof buf);
            bool ok = r > 0;
            for (ssize_t off = 0; ok && off < r;) {
                ssize_t w = write(to, buf + off, (size_t)(r - off));
                ok = w > 0;
                off += w > 0 ? w : 0;
            }
            if (!ok) {
                close(cli[i]);
                close(srv[i]);
                live[i] = false;
            }
        }
    }
}

/* The daemon's own previous session (the connection lost only on the client
 * side) still holds the leader lock: the daemon recognises it by backend pid
 * and start time, terminates it and leads again at once, long before the
 * server's idle_session_timeout (60 s) could have ended it. Before the fix
 * it stayed a standby of itself for as long as the server kept the session. */
static void test_stale_own_session(void **state)
{
    (void)state;
    const char *pghost = getenv("PGSHADOW_TEST_PGHOST"), *pgport = getenv("PGSHADOW_TEST_PGPORT");
    if (!pghost || !pgport) {
        fprintf(stderr, "test-sync: PGSHADOW_TEST_PGHOST and PGSHADOW_TEST_PGPORT must be set\n");
        fail();
    }
    char target[108], lpath[108];
    snprintf(target, sizeof target, "%s/.s.PGSQL.%s", pghost, pgport);
    snprintf(lpath, sizeof lpath, "%s/.s.PGSQL.%s", T.dir, pgport);
    unlink(lpath);
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", lpath);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 16), 0);
    pid_t proxy = fork();
    assert_true(proxy >= 0);
    if (proxy == 0)
        proxy_main(lfd, target);
    close(lfd);

    /* the daemon connects through the proxy */
    char *direct = T.db_conninfo;
    char *via = NULL;
    assert_true(asprintf(&via, "%s host=%s", direct, T.dir) > 0);
    T.db_conninfo = via;
    assert_int_equal(write_config(100), 0);
    T.db_conninfo = direct;

    itest_daemon S = ITEST_DAEMON_INIT;
    snprintf(S.log, sizeof S.log, "%s/stale.log", T.dir);
    daemon_start(&S, "info");
    assert_true(itest_daemon_wait_log(&S, 0, "leader lock acquired", 20000));
    char pid_old[32];
    log_after(&S, 0, "leader lock acquired for migration itest_sync (backend pid ", pid_old,
              sizeof pid_old);
    pid_old[strcspn(pid_old, ")")] = '\0';

    size_t from = itest_daemon_log_size(&S);
    int64_t t0 = itest_now_ms();
    assert_int_equal(kill(proxy, SIGUSR1), 0);
    char want[128];
    snprintf(want, sizeof want, "still held by our own previous session (backend pid %s)", pid_old);
    bool seen = itest_daemon_wait_log(&S, from, want, 20000) != 0;
    bool led = seen && itest_daemon_wait_log(&S, from, "leader lock acquired", 20000) != 0;
    int64_t took = itest_now_ms() - t0;
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", pid_old);
    long long old_alive = db_int(sql);
    char *h = lock_holders();
    char pid_new[32] = "";
    if (led)
        log_after(&S, from, "leader lock acquired for migration itest_sync (backend pid ", pid_new,
                  sizeof pid_new);
    pid_new[strcspn(pid_new, ")")] = '\0';
    fprintf(stderr, "test-sync: stale session %s: terminated and led again after %lld ms "
                    "(holder now %s)\n", pid_old, (long long)took, h);

    itest_daemon_kill(&S, SIGTERM);
    kill(proxy, SIGKILL);
    waitpid(proxy, NULL, 0);
    unlink(lpath);
    assert_int_equal(write_config(100), 0);
    assert_true(seen);
    assert_true(led);
    assert_true(took < 30000); /* idle_session_timeout (60 s) cannot have done it */
    assert_int_equal(old_alive, 0);
    assert_string_equal(h, pid_new);
    free(h);
    free(via);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backfill),
        /* a load case: not under ASan (itest.h); the cases after it do not need it */
        ITEST_LOAD_CASE(test_chaos, NULL, NULL),
        cmocka_unit_test(test_quarantine),
        cmocka_unit_test(test_wakeup),
        cmocka_unit_test(test_reload_and_halt),
        cmocka_unit_test(test_config_drift),
        cmocka_unit_test_teardown(test_lock_timeout, lock_teardown),
        cmocka_unit_test(test_two_daemons),
        cmocka_unit_test(test_stale_own_session),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
