/*
 * test-promote.c - the promote step (issue #15; sql/88-promote.sql, the
 * cutover's promote in src/cutover/, pgshadowctl promote) and finalize
 * (sql/89-finalize.sql, pgshadowctl finalize) end to end: the
 * real pgshadowd (as a role that is only pgshadow_daemon) and pgshadowctl
 * (as an operator) against the real PostgreSQL. Two migrated tables owned by
 * an ordinary role: projects (serial id) and tasks (identity id, a foreign
 * key to projects, a user trigger, comments), a view over both (task_view),
 * a table outside the migration referencing tasks (notes), table and column
 * grants to another role, a row level security policy on projects.
 *
 *  1. under load (twice: pgbench -M simple and -M prepared): pgbench writes
 *     all three tables and reads through the view and through routing
 *     during the whole cutover, the promote and after it, and must see no
 *     failed transaction. pgshadowctl promote at awaiting_decision (exit 0,
 *     lock wait and hold said); then the catalog, exactly: the new tables
 *     are the former shadows (oids), the old ones <t>_legacy, the view and
 *     notes' foreign key (validated by the daemon) on the new tables,
 *     sequence and identity owned by / restarted above every key, grants,
 *     policy, trigger, comments as on the legacy tables, compatibility views
 *     <t>_shadow, routing flags 0, the cutover 'promoted' with one event.
 *     Every row written before the promote is in the new tables as it was
 *     (each row carries whether its last writer saw the promote:
 *     public.promoted_now()), nothing written after it reaches the legacy
 *     tables, new ids are above every old one; and the daemon logs no error
 *     afterwards (verify and sampling run, and leave the migration alone);
 *  2. a long reader (a transaction idle after reading tasks), then a
 *     transaction idle after taking a value of projects' sequence, with
 *     lock_timeout 200ms and 3 attempts: promote fails (exit 1) naming its
 *     pid, nothing changed, still awaiting_decision; a writer of projects
 *     meanwhile never waits long (each INSERT timed; < 1 s asserted, the
 *     max printed); both gone, promote succeeds. Before them: in one
 *     transaction, pg_stat_activity read after _promote_holders shows
 *     another session as it is then, not as the transaction's first read
 *     of the view did (the names promote gives after a failed wait);
 *  3. a materialized view over projects: --dry-run exits 3 and lists it,
 *     promote exits 3 saying refused, queues nothing, changes nothing; a
 *     promote command queued anyway fails in the daemon, refused; the view
 *     dropped, --dry-run exits 0 and promote succeeds;
 *  4. finally: promote, pgshadowd SIGKILLed twice: while an attempt waits
 *     for a reader's lock, and (restarted, it reads 'promoting' and
 *     promotes again) while it holds every lock of the swap, its moves
 *     done, waiting for the cutover row the test holds. Each time its
 *     backend stops within about a second (client_connection_check_interval)
 *     and nothing changed (names, capture triggers, no promote_moves,
 *     'promoting'); rows written meanwhile are captured. Started a third
 *     time it promotes, with those rows; a daemon started after that reads
 *     'promoted' and, with verify and sampling on, logs nothing wrong.
 *  5. finalize (sql/89-finalize.sql, pgshadowctl finalize): refused before
 *     a promote (exit 3, by pgshadowctl and, for a command queued anyway,
 *     by the daemon); after it, without a terminal and --yes: the plan
 *     printed, exit 3, nothing dropped or queued; on a terminal (a pty)
 *     answered n: the same; --yes while a transaction that read
 *     tasks_legacy is open: exit 1 after the lock timeout, naming its pid,
 *     nothing dropped; answered y with a user's view of tasks_legacy:
 *     exit 1 naming the view, nothing dropped; --yes under an application
 *     load that no longer names the compatibility views: exit 0, and the
 *     relations and functions gone from the catalog are exactly the ones it
 *     printed as dropped, nothing else; pgshadow's rows of the migration
 *     gone but the cutover row ('finalized') and the events (one 'cutover
 *     finalized' listing every line); the new tables the same (oids, every
 *     row), their sequence, identity, trigger, key and the routing answer
 *     working; pgbench saw no failure. The daemon says once that the
 *     migration is finalized, then logs nothing and spins not (CPU time
 *     read from /proc), nor does one started afterwards; finalize again and
 *     rollback are refused. Installed again, over an older CHECK on the
 *     cutover's status, the migration starts afresh.
 *  6. finally: promote refused by the plan (a materialized view): one
 *     'cutover promote_failed' event, nothing changed, back to
 *     awaiting_decision and not tried again by itself; then promote, and
 *     finalize refused by a table made since under a legacy table's name.
 *  7. revert (sql/90-revert.sql; keep_legacy: true, which cases 1-5 turn
 *     off to check the legacy tables as promote left them): under pgbench,
 *     promote with reverse sync (the legacy tables follow the writes, their
 *     own trigger disabled), revert (the oids of before the promote back,
 *     view, foreign key, trigger, identity, tracking columns, forward sync
 *     equal), promote again and a revert whose daemon is SIGKILLed holding
 *     every lock (nothing changed; the next daemon reverts), promote a
 *     third time and finalize under the load: pgbench failed nothing, and
 *     every row each of its transactions inserted is there at the end.
 *     And the refusals: a columns: mapping that is not a plain copy needs
 *     reverse_columns (or --without-revert); revert before a promote;
 *     FORCE ROW LEVEL SECURITY after install holds a table's apply back.
 *  8. reverse sync's edges, in SQL alone (test_reverse_sync_edges), and the
 *     catalog digest that decides whether promote plans again under its
 *     locks (test_swap_fingerprint).
 *
 * Every wait polls with a generous deadline (a busy 2-core machine); the
 * only fixed sleeps watch a daemon for what it must not log. About 1900
 * lines: twelve cases end to end (the fourth kills the daemon twice), and the
 * catalog and row checks every promote must pass (check_catalog,
 * check_rows), which are the point of the test and read best in one place. PGSHADOW_TEST_FILTER (a cmocka
 * pattern) runs some cases only. The two cases of 1. are load cases
 * (ITEST_LOAD_CASE): tests/run runs them in the -Werror build only; the
 * others run in both builds: finalize's short load, and 7.'s revert under
 * load, which is the only case that reverts (no light case covers that
 * code under ASan).
 *
 * Env: as every integration test (itest.h), and PGSHADOW_TEST_PGBIN.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "itest.h"

#define MIG "itest_promote"
#define OWNER "ps_pr_owner"   /* LOGIN: owns the application's tables; pgbench runs as it */
#define READER "ps_pr_reader" /* LOGIN: some grants, under the policy */
#define OP "ps_pr_op"         /* LOGIN, member of pgshadow_operator: pgshadowctl */
#define DAEMON "ps_pr_daemon" /* LOGIN, member of pgshadow_daemon only: pgshadowd */
#define WAIT_MS 90000

static struct {
    itest_db *db;
    char dir[64], cfg[128], opcfg[128];
    char *ci; /* the superuser's */
    itest_bench bench;
    itest_daemon a, b;
    itest_daemon *d; /* the one whose log a failure shows */
} T;

/* ---- the database ------------------------------------------------------ */

static const char APP_SQL[] =
    "SET ROLE " OWNER ";"
    "CREATE TABLE projects (id serial PRIMARY KEY, name text NOT NULL, budget int NOT NULL DEFAULT 0, phase int);"
    "CREATE TABLE tasks (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  project_id int NOT NULL REFERENCES projects, title text NOT NULL, n int NOT NULL DEFAULT 0,"
    "  phase int, stamp text);"
    "CREATE FUNCTION tasks_stamp() RETURNS trigger LANGUAGE plpgsql AS "
    "  $$BEGIN NEW.stamp := 'trg:' || TG_TABLE_NAME; RETURN NEW; END$$;"
    "CREATE TRIGGER tasks_stamp BEFORE INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION tasks_stamp();"
    "INSERT INTO projects (name) SELECT 'p' || g FROM generate_series(1, 200) g;"
    "INSERT INTO tasks (project_id, title) SELECT 1 + g % 200, 't' || g FROM generate_series(1, 2000) g;"
    "CREATE TABLE notes (id serial PRIMARY KEY, task_id bigint NOT NULL REFERENCES tasks, body text);"
    "INSERT INTO notes (task_id, body) SELECT g, 'n' || g FROM generate_series(1, 500) g;"
    "CREATE VIEW task_view AS SELECT t.id, t.title, t.n, p.name AS project "
    "  FROM tasks t JOIN projects p ON p.id = t.project_id;"
    "GRANT SELECT ON projects TO " READER ";"
    "GRANT SELECT (id, title), UPDATE (n) ON tasks TO " READER ";"
    "GRANT SELECT ON task_view TO " READER ";"
    "ALTER TABLE projects ENABLE ROW LEVEL SECURITY;"
    "CREATE POLICY even_only ON projects FOR SELECT TO " READER " USING (id % 2 = 0);"
    "COMMENT ON TABLE tasks IS 'what is to be done';"
    "COMMENT ON COLUMN tasks.title IS 'in a few words';"
    "RESET ROLE;";

static int db_setup(void **state)
{
    (void)state;
    memset(&T, 0, sizeof T);
    T.a = T.b = (itest_daemon)ITEST_DAEMON_INIT;
    T.db = itest_db_new("pgshadow_promote");
    T.ci = itest_conninfo_db(T.db->name);
    snprintf(T.dir, sizeof T.dir, "/tmp/itest-promote-XXXXXX");
    assert_non_null(mkdtemp(T.dir));
    snprintf(T.cfg, sizeof T.cfg, "%s/daemon.yaml", T.dir);
    snprintf(T.opcfg, sizeof T.opcfg, "%s/op.yaml", T.dir);
    itest_role_ensure(T.db->c, OWNER, NULL);
    itest_role_ensure(T.db->c, READER, NULL);
    itest_exec_ok(T.db->c, "GRANT CREATE ON SCHEMA public TO " OWNER);
    itest_exec_ok(T.db->c, APP_SQL);
    char *schema = itest_install_sql(), *script = NULL;
    assert_true(asprintf(&script,
                         "BEGIN;\n%s\n"
                         "SELECT pgshadow.register_table('public', 'projects', NULL, '_shadow', '" MIG "', '{}');\n"
                         "SELECT pgshadow.register_table('public', 'tasks', NULL, '_shadow', '" MIG "', '{}');\n"
                         "SELECT pgshadow.finish_install('" MIG "');\nCOMMIT;\n",
                         schema) > 0);
    itest_exec_ok(T.db->c, script);
    free(script);
    free(schema);
    itest_role_ensure(T.db->c, OP, "pgshadow_operator");
    itest_role_ensure(T.db->c, DAEMON, "pgshadow_daemon");
    itest_exec_ok(T.db->c, /* which side of the promote a statement ran on (its snapshot) */
                           "CREATE FUNCTION public.promoted_now() RETURNS int LANGUAGE sql STABLE "
                           "SECURITY DEFINER SET search_path = pg_catalog AS "
                           "$$SELECT count(*)::int FROM pgshadow.tables WHERE promoted_at IS NOT NULL$$;");
    return 0;
}

static int db_teardown(void **state)
{
    (void)state;
    itest_bench_abort(&T.bench); /* a test that failed under load: no verdict, just stop it */
    itest_daemon_cleanup(&T.a);
    itest_daemon_cleanup(&T.b);
    itest_db_free(T.db);
    free(T.ci);
    itest_tmpdir_remove(T.dir);
    return 0;
}

/* The daemon's config (as DAEMON) and the operator's (as OP): the same but
 * for the role. */
typedef struct opts {
    const char *finally;      /* NULL: wait */
    const char *lock_timeout; /* NULL: 2s */
    int attempts;             /* 0: 10 */
    bool verify;              /* verify every 2s (repair) and sampling every 1s */
    bool reverse;             /* keep_legacy: true (reverse sync after promote); false in cases 1-5 */
} opts;

static void write_one(const char *path, const char *user, const opts *o)
{
    char *ci = itest_conninfo_as(T.db->name, user), *yaml = NULL;
    assert_true(asprintf(&yaml,
                         "database:\n  conninfo: \"%s\"\n"
                         "migration:\n  id: " MIG "\n  tables:\n    - name: projects\n    - name: tasks\n"
                         "sync:\n  batch_delay: 10ms\n  catchup_interval: 250ms\n"
                         "verify:\n  interval: %s\n  repair: true\n  sample_interval: %s\n  chunk_rows: 2000\n"
                         "monitor:\n  poll_interval: 500ms\n"
                         "cutover:\n  gates:\n    max_sync_lag: 30s\n    max_diverged: 0\n"
                         "    max_latency_ratio: 1000\n"
                         "  failures_to_trip: 3\n  on_trip: pause\n"
                         "  stages: [{percent: 50, hold: 1s}, {percent: 100, hold: 1s}]\n"
                         "  finally: %s\n  promote:\n    lock_timeout: %s\n    attempts: %d\n    keep_legacy: %s\n"
                         "metrics:\n  listen: \"\"\n",
                         ci, o->verify ? "2s" : "0s", o->verify ? "1s" : "0s", o->finally ? o->finally : "wait",
                         o->lock_timeout ? o->lock_timeout : "2s", o->attempts ? o->attempts : 10,
                         o->reverse ? "true" : "false") > 0);
    assert_int_equal(itest_write_file(path, yaml), 0);
    free(yaml);
    free(ci);
}

static void write_cfg(const opts *o)
{
    write_one(T.cfg, DAEMON, o);
    write_one(T.opcfg, OP, o);
}

/* ---- helpers ---------------------------------------------------------- */

static void dump(void)
{
    if (T.d) {
        char *log = itest_daemon_log(T.d);
        size_t n = strlen(log);
        fprintf(stderr, "---- daemon log (%s), last part:\n%s\n", T.d->log, log + (n > 12000 ? n - 12000 : 0));
        free(log);
    }
    char *v = itest_value_on(T.ci, "SELECT status || ' stage ' || stage || ' ' || percent || '% rev ' || rev "
                                   "FROM pgshadow.cutover");
    fprintf(stderr, "---- cutover: %s\n", v ? v : "?");
    free(v);
    v = itest_value_on(T.ci, "SELECT string_agg(event_id || ' ' || what || ': ' || coalesce(why, ''), E'\\n' "
                             "ORDER BY event_id) FROM pgshadow.events WHERE what LIKE 'cutover %' "
                             "OR what LIKE 'promote%' OR what LIKE 'command%'");
    fprintf(stderr, "---- events:\n%s\n", v ? v : "?");
    free(v);
}

static void expect_true(const char *sql, int64_t ms)
{
    if (itest_wait_true(T.ci, sql, ms))
        return;
    dump();
    fail_msg("not true after %lld ms: %s", (long long)ms, sql);
}

static void expect(const char *sql, const char *want)
{
    char *got = itest_query(T.db->c, sql);
    if (strcmp(got, want) != 0) {
        dump();
        fail_msg("%s\n  want: %s\n  got:  %s", sql, want, got);
    }
    free(got);
}

/* pgshadowctl -c cfg args... (at most 3): exit code want, and text (unless
 * NULL) in its stdout or stderr. Its stdout and stderr, malloc'd, in one. */
static char *ctl(const char *cfg, int want, const char *text, const char *a, const char *b, const char *c)
{
    itest_run r;
    itest_run_ctl(&r, cfg, a, b, c, (char *)NULL);
    if (r.rc != want || (text && !strstr(r.out, text) && !strstr(r.err, text))) {
        dump();
        fail_msg("pgshadowctl %s %s: rc %d (want %d), want '%s' in:\n%s\n%s", a, b ? b : "", r.rc, want,
                 text ? text : "", r.out, r.err);
    }
    char *all = NULL;
    assert_true(asprintf(&all, "%s%s", r.out, r.err) > 0);
    itest_run_free(&r);
    return all;
}

/* pgshadowctl promote (as the operator) until the daemon takes it: asked
 * again while it answers that it is reading the state or the dashboard is
 * stale. Exit code and output into r. */
static void promote(itest_run *r)
{
    int64_t end = itest_now_ms() + WAIT_MS;
    for (;;) {
        itest_run_ctl(r, T.opcfg, "promote", (char *)NULL);
        bool early = r->rc == 3 && (strstr(r->err, "stale") || strstr(r->err, "is reading the cutover state"));
        if (!early || itest_now_ms() > end)
            return;
        itest_run_free(r);
        itest_sleep_ms(300);
    }
}

/* pgshadowctl promote, which must promote both tables (exit 0, "promote:
 * promoted projects, tasks: lock wait ..."); what names the step in a
 * failure. */
static void promote_ok(const char *what)
{
    itest_run r;
    promote(&r);
    if (r.rc != 0 || !strstr(r.out, "promote: promoted projects, tasks: lock wait ")) {
        dump();
        fail_msg("pgshadowctl promote (%s): rc %d\n%s\n%s", what, r.rc, r.out, r.err);
    }
    itest_run_free(&r);
}

static void daemon_up(itest_daemon *d, const char *tag)
{
    *d = (itest_daemon)ITEST_DAEMON_INIT;
    itest_daemon_paths(d, T.dir, tag);
    d->sock[0] = '\0';
    d->log_level = "info";
    assert_int_equal(itest_daemon_start(d, T.cfg), 0);
    T.d = d;
}

/* ---- the load ---------------------------------------------------------- */

/* Every statement that writes records which side of the promote it ran on
 * (promoted_now(): 0 before, 2 after); ids 1..2000 of tasks and 1..200 of
 * projects are updated, new rows inserted through the serial and the
 * identity, notes reference a new task; reads through the view and through
 * routing (tasks_shadow while it is read from, its compatibility view
 * after). */
static const char PGBENCH_SCRIPT[] =
    "\\set tid random(1, 2000)\n"
    "\\set pid random(1, 200)\n"
    "BEGIN;\n"
    "INSERT INTO projects (name, phase) VALUES ('b', public.promoted_now()) RETURNING id AS np \\gset\n"
    "INSERT INTO tasks (project_id, title, phase) VALUES (:np, 'b', public.promoted_now()) RETURNING id AS nt \\gset\n"
    "INSERT INTO notes (task_id, body) VALUES (:nt, 'b');\n"
    "UPDATE tasks SET n = n + 1, phase = public.promoted_now() WHERE id = :tid;\n"
    "UPDATE projects SET budget = budget + 1, phase = public.promoted_now() WHERE id = :pid;\n"
    "END;\n"
    "SELECT id, title, n, project FROM task_view WHERE id = :tid;\n"
    "SELECT CASE WHEN pgshadow.read_from_shadow('tasks', :tid::text) "
    "THEN (SELECT title FROM tasks_shadow WHERE id = :tid) ELSE (SELECT title FROM tasks WHERE id = :tid) END;\n";

/* as the owner, 2 clients at 100 tps in all (itest_bench_start) */
static void load_start_script(const char *mode, const char *text)
{
    char *ci = itest_conninfo_as(T.db->name, OWNER);
    itest_bench_start(&T.bench, T.dir, text, ci, mode);
    free(ci);
}

static void load_start(const char *mode)
{
    load_start_script(mode, PGBENCH_SCRIPT);
}

/* Stops pgbench: it must have failed no transaction. Returns how many it
 * completed. */
static long load_stop(void)
{
    return itest_bench_stop(&T.bench, "test-promote", dump);
}

/* ---- getting to the decision -------------------------------------------- */

/* pgshadowctl start (as the operator): asked again while the daemon has not
 * read the state or the dashboard is not ready; then done. */
static void start_cutover(void)
{
    expect_true("SELECT (gates ->> 'ready')::boolean AND (gates ->> 'fresh')::boolean FROM pgshadow.cutover",
                WAIT_MS);
    int64_t end = itest_now_ms() + WAIT_MS;
    for (;;) {
        itest_run r;
        itest_run_ctl(&r, T.opcfg, "start", NULL);
        bool early = r.rc == 3 && (strstr(r.err, "stale") || strstr(r.err, "READY_FOR_CUTOVER") ||
                                   strstr(r.err, "is reading the cutover state"));
        if (r.rc == 0 && strstr(r.out, "start: stage 1, "))
            return itest_run_free(&r);
        if (!early || itest_now_ms() > end) {
            dump();
            fail_msg("pgshadowctl start: rc %d\n%s\n%s", r.rc, r.out, r.err);
        }
        itest_run_free(&r);
        itest_sleep_ms(300);
    }
}

/* Daemon A up with the config, the backfill done, (the load running,) the
 * cutover started and at the decision (or promoting, with finally:
 * promote). */
static void to_decision(const char *load_mode, const char *status)
{
    daemon_up(&T.a, "a");
    expect_true("SELECT bool_and(backfill_state = 'done') FROM pgshadow.tables", WAIT_MS);
    if (load_mode)
        load_start(load_mode);
    start_cutover();
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT status = '%s' FROM pgshadow.cutover", status);
    expect_true(sql, WAIT_MS);
}

/* What must not change while nothing is promoted: the names, the kinds, the
 * capture triggers, no move recorded. */
#define UNCHANGED_SQL                                                                                            \
    "SELECT to_regclass('projects_legacy') IS NULL AND to_regclass('tasks_legacy') IS NULL "                     \
    "AND (SELECT string_agg(relname || ':' || relkind::text, ',' ORDER BY relname) FROM pg_class "                     \
    "     WHERE relname IN ('projects', 'tasks', 'projects_shadow', 'tasks_shadow')) "                           \
    "    = 'projects:r,projects_shadow:r,tasks:r,tasks_shadow:r' "                                               \
    "AND (SELECT count(*) FROM pg_trigger WHERE tgrelid IN ('projects'::regclass, 'tasks'::regclass) "           \
    "     AND tgname LIKE 'pgshadow_capture%') >= 2 "                                                            \
    "AND NOT EXISTS (SELECT 1 FROM pgshadow.promote_moves) "                                                     \
    "AND NOT EXISTS (SELECT 1 FROM pgshadow.tables WHERE promoted_at IS NOT NULL) "                              \
    "AND (SELECT confrelid = 'tasks'::regclass FROM pg_constraint WHERE conrelid = 'notes'::regclass "          \
    "     AND contype = 'f')"

/* The oids of the four tables, "projects tasks projects_shadow tasks_shadow". */
static char *oids(void)
{
    return itest_query(T.db->c, "SELECT 'projects'::regclass::oid || ' ' || 'tasks'::regclass::oid || ' ' || "
                                "'projects_shadow'::regclass::oid || ' ' || 'tasks_shadow'::regclass::oid");
}

/* ---- what a promote must leave ------------------------------------------- */

/* The catalog after a promote of tables whose oids before were before
 * ("projects tasks projects_shadow tasks_shadow"), with the foreign key of
 * notes validated by the daemon. */
static void check_catalog(const char *before)
{
    long p = 0, t = 0, ps = 0, tsh = 0;
    assert_int_equal(sscanf(before, "%ld %ld %ld %ld", &p, &t, &ps, &tsh), 4);
    char sql[600];
    /* the former shadows are the tables, the former tables the legacy ones */
    snprintf(sql, sizeof sql,
             "SELECT 'projects'::regclass::oid = %ld AND 'tasks'::regclass::oid = %ld "
             "AND 'projects_legacy'::regclass::oid = %ld AND 'tasks_legacy'::regclass::oid = %ld",
             ps, tsh, p, t);
    expect(sql, "t");
    expect("SELECT string_agg(relname || ':' || relkind::text || ':' || relowner::regrole, ',' ORDER BY relname) "
           "FROM pg_class WHERE relname IN ('projects', 'tasks', 'projects_shadow', 'tasks_shadow', "
           "'projects_legacy', 'tasks_legacy')",
           "projects:r:" OWNER ",projects_legacy:r:" OWNER ",projects_shadow:v:" OWNER ",tasks:r:" OWNER
           ",tasks_legacy:r:" OWNER ",tasks_shadow:v:" OWNER);
    /* the new tables have the columns the old ones had, in their order
     * (pgshadow's tracking columns dropped): SELECT * and a prepared
     * SELECT * see what they saw */
    expect("SELECT (SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'tasks'::regclass "
           "AND attnum > 0 AND NOT attisdropped) = (SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute "
           "WHERE attrelid = 'tasks_legacy'::regclass AND attnum > 0 AND NOT attisdropped)",
           "t");
    expect("SELECT count(*) FROM pg_attribute WHERE attrelid IN ('projects'::regclass, 'tasks'::regclass) "
           "AND attname::text = ANY (pgshadow._tracking_columns()) AND NOT attisdropped",
           "0");
    /* no capture left on either side */
    expect("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgshadow%' AND tgrelid IN ('projects'::regclass, "
           "'tasks'::regclass, 'projects_legacy'::regclass, 'tasks_legacy'::regclass)",
           "0");
    /* the view reads the new tables only */
    expect("SELECT string_agg(DISTINCT d.refobjid::regclass::text, ',' ORDER BY d.refobjid::regclass::text) "
           "FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid "
           "WHERE r.ev_class = 'task_view'::regclass AND d.refobjid <> 'task_view'::regclass",
           "projects,tasks");
    expect("SELECT pg_get_viewdef('task_view') NOT LIKE '%legacy%'", "t");
    /* the compatibility views read the new tables */
    expect("SELECT string_agg(DISTINCT c.relname || '->' || d.refobjid::regclass::text, ',') "
           "FROM pg_class c JOIN pg_rewrite r ON r.ev_class = c.oid JOIN pg_depend d ON d.objid = r.oid "
           "AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> c.oid "
           "WHERE c.relname IN ('projects_shadow', 'tasks_shadow')",
           "projects_shadow->projects,tasks_shadow->tasks");
    /* notes' key points at the new tasks, validated */
    expect("SELECT confrelid::regclass || ' ' || convalidated FROM pg_constraint "
           "WHERE conrelid = 'notes'::regclass AND contype = 'f'",
           "tasks true");
    expect("SELECT count(*) FROM pgshadow.promote_moves WHERE state <> 'done'", "0");
    /* tasks -> projects: the new tables' own key; the legacy tables keep theirs */
    expect("SELECT string_agg(conrelid::regclass || '->' || confrelid::regclass, ',' ORDER BY conrelid::regclass::text) "
           "FROM pg_constraint WHERE contype = 'f' AND conrelid IN ('tasks'::regclass, 'tasks_legacy'::regclass)",
           "tasks->projects,tasks_legacy->projects_legacy");
    /* the serial's sequence is owned by the new column and feeds it; the
     * identity is one again */
    expect("SELECT pg_get_serial_sequence('projects', 'id') || ' ' || "
           "(SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'projects'::regclass AND adnum = 1)",
           "public.projects_id_seq nextval('projects_id_seq'::regclass)");
    expect("SELECT attidentity FROM pg_attribute WHERE attrelid = 'tasks'::regclass AND attname = 'id'", "a");
    expect("SELECT pg_get_serial_sequence('tasks', 'id') IS NOT NULL", "t");
    /* grants exactly the legacy's (table and columns) */
    expect("SELECT (SELECT array_agg(a::text ORDER BY a::text) FROM pg_class, unnest(relacl) a "
           "        WHERE oid = 'projects'::regclass) "
           "IS NOT DISTINCT FROM (SELECT array_agg(a::text ORDER BY a::text) FROM pg_class, unnest(relacl) a "
           "        WHERE oid = 'projects_legacy'::regclass)",
           "t");
    expect("SELECT (SELECT array_agg(a::text ORDER BY a::text) FROM pg_class, unnest(relacl) a "
           "        WHERE oid = 'tasks'::regclass) "
           "IS NOT DISTINCT FROM (SELECT array_agg(a::text ORDER BY a::text) FROM pg_class, unnest(relacl) a "
           "        WHERE oid = 'tasks_legacy'::regclass)",
           "t");
    expect("SELECT count(*) FROM pg_attribute l JOIN pg_attribute n ON n.attrelid = 'tasks'::regclass "
           "AND n.attname = l.attname WHERE l.attrelid = 'tasks_legacy'::regclass AND l.attnum > 0 "
           "AND (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(l.attacl) a) IS DISTINCT FROM "
           "    (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(n.attacl) a)",
           "0");
    expect("SELECT has_column_privilege('" READER "', 'tasks', 'title', 'SELECT') AND "
           "NOT has_column_privilege('" READER "', 'tasks', 'stamp', 'SELECT') AND "
           "has_column_privilege('" READER "', 'tasks', 'n', 'UPDATE')",
           "t");
    /* row level security and the policy */
    expect("SELECT relrowsecurity || ' ' || relforcerowsecurity FROM pg_class WHERE oid = 'projects'::regclass",
           "true false");
    expect("SELECT polname || ' ' || polcmd::text || ' ' || polroles::regrole[]::text || ' ' || "
           "pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polrelid = 'projects'::regclass",
           "even_only r {" READER "} ((id % 2) = 0)");
    /* the trigger, and the comments */
    expect("SELECT string_agg(tgname || ' ' || tgenabled::text, ',') FROM pg_trigger "
           "WHERE tgrelid = 'tasks'::regclass AND NOT tgisinternal",
           "tasks_stamp O");
    expect("SELECT obj_description('tasks'::regclass, 'pg_class') || ' / ' || col_description('tasks'::regclass, "
           "(SELECT attnum FROM pg_attribute WHERE attrelid = 'tasks'::regclass AND attname = 'title'))",
           "what is to be done / in a few words");
    expect("SELECT obj_description('projects'::regclass, 'pg_class') IS NOT DISTINCT FROM "
           "obj_description('projects_legacy'::regclass, 'pg_class')",
           "t");
    /* routing: the primary (the new table) for every key */
    expect("SELECT string_agg(name || '=' || value, ',' ORDER BY name) FROM pgshadow.flags "
           "WHERE name LIKE 'read\\_from\\_shadow\\_%'",
           "read_from_shadow_projects=0,read_from_shadow_tasks=0");
    expect("SELECT pgshadow.read_percent('tasks') || ' ' || pgshadow.read_from_shadow('tasks', '7')", "0 false");
    /* the cutover and its one event */
    expect("SELECT status FROM pgshadow.cutover", "promoted");
    expect("SELECT count(*) || ' ' || bool_and(why ~ 'lock wait [0-9.]+ ms, locks held [0-9.]+ ms') "
           "FROM pgshadow.events WHERE what = 'cutover promoted'",
           "1 true");
    expect("SELECT count(*) FROM pgshadow.tables WHERE promoted_at IS NOT NULL "
           "AND legacy_name = table_name || '_legacy'",
           "2");
}

/* Rows: every row of a legacy table (the table as of the promote: nothing
 * writes it after) is in the new table, equal, unless a writer that saw the
 * promote changed it since (phase 2: then its counter went on); every row
 * only in the new table was written after the promote, with an id above
 * every old one; nothing after the promote reached the legacy tables. Also
 * with the triggers' stamp and the compatibility views. */
static void check_rows(void)
{
    expect("SELECT count(*) FROM tasks_legacy WHERE phase = 2", "0");
    expect("SELECT count(*) FROM projects_legacy WHERE phase = 2", "0");
    expect("SELECT count(*) FROM tasks_legacy l LEFT JOIN tasks t ON t.id = l.id WHERE t.id IS NULL "
           "OR (t.phase IS DISTINCT FROM 2 AND (l.project_id, l.title, l.n, l.phase, l.stamp) "
           "    IS DISTINCT FROM (t.project_id, t.title, t.n, t.phase, t.stamp)) "
           "OR (t.phase = 2 AND (t.n <= l.n OR (l.project_id, l.title, l.stamp) "
           "    IS DISTINCT FROM (t.project_id, t.title, t.stamp)))",
           "0");
    expect("SELECT count(*) FROM projects_legacy l LEFT JOIN projects p ON p.id = l.id WHERE p.id IS NULL "
           "OR (p.phase IS DISTINCT FROM 2 AND (l.name, l.budget, l.phase) IS DISTINCT FROM (p.name, p.budget, p.phase)) "
           "OR (p.phase = 2 AND (p.budget <= l.budget OR l.name IS DISTINCT FROM p.name))",
           "0");
    expect("SELECT count(*) FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM tasks_legacy l WHERE l.id = t.id) "
           "AND (t.phase IS DISTINCT FROM 2 OR t.id <= (SELECT max(id) FROM tasks_legacy))",
           "0");
    expect("SELECT count(*) FROM projects p WHERE NOT EXISTS (SELECT 1 FROM projects_legacy l WHERE l.id = p.id) "
           "AND (p.phase IS DISTINCT FROM 2 OR p.id <= (SELECT max(id) FROM projects_legacy))",
           "0");
    expect("SELECT count(*) FROM tasks WHERE stamp IS DISTINCT FROM 'trg:tasks'", "0");
    expect("SELECT count(*) FROM notes n WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = n.task_id)", "0");
    expect("SELECT (SELECT count(*) FROM tasks_shadow) = (SELECT count(*) FROM tasks) "
           "AND (SELECT count(*) FROM projects_shadow) = (SELECT count(*) FROM projects)",
           "t");
    expect("SELECT count(*) FROM pgshadow.change_log", "0");
    /* new ids, from the test's own session: above every id of both tables */
    expect("WITH p AS (INSERT INTO projects (name) VALUES ('after') RETURNING id), "
           "t AS (INSERT INTO tasks (project_id, title) SELECT id, 'after' FROM p RETURNING id, stamp) "
           "SELECT (SELECT id FROM p) > (SELECT max(id) FROM projects_legacy) "
           "AND (SELECT id FROM t) > (SELECT max(id) FROM tasks_legacy) "
           "AND (SELECT stamp FROM t) = 'trg:tasks'",
           "t");
    expect("SELECT (SELECT max(id) FROM projects) = (SELECT max(id) FROM projects WHERE name = 'after') "
           "AND (SELECT max(id) FROM tasks) = (SELECT max(id) FROM tasks WHERE title = 'after') "
           "AND NOT EXISTS (SELECT 1 FROM tasks_legacy WHERE title = 'after')",
           "t");
    /* the reader: its column grant and the policy, on the new tables */
    PGconn *r = itest_connect_as(T.db->name, READER);
    itest_expect_sql(r, "SELECT count(*) > 0 AND bool_and(id % 2 = 0) FROM projects", "t");
    itest_expect_sql(r, "SELECT count(*) > 2000 FROM (SELECT id, title FROM tasks) x", "t");
    PGresult *res = PQexec(r, "SELECT stamp FROM tasks LIMIT 1");
    assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
    PQclear(res);
    PQfinish(r);
}

/* The daemon d is running and has logged no error or warning since byte
 * at of its log. */
static void log_clean(itest_daemon *d, size_t at)
{
    assert_true(kill(d->pid, 0) == 0);
    char *log = itest_daemon_log(d);
    const char *tail = strlen(log) >= at ? log + at : "";
    if (strstr(tail, "error:") || strstr(tail, "warning:")) {
        fprintf(stderr, "---- %s since byte %zu:\n%s\n", d->log, at, tail);
        fail_msg("the daemon logged errors or warnings after the promote");
    }
    free(log);
}

/* ---- 1. under load --------------------------------------------------------- */

static void promote_under_load(const char *mode)
{
    write_cfg(&(opts){.verify = true});
    to_decision(mode, "awaiting_decision");
    char *before = oids();
    size_t at = itest_daemon_log_size(&T.a);
    /* an application session with a prepared SELECT * from before the
     * promote: it runs after it, on the new table, with the same columns */
    PGconn *app = PQconnectdb(T.ci);
    assert_int_equal(PQstatus(app), CONNECTION_OK);
    PGresult *pr = PQprepare(app, "star", "SELECT * FROM tasks WHERE id = 1", 0, NULL);
    assert_int_equal(PQresultStatus(pr), PGRES_COMMAND_OK);
    PQclear(pr);
    pr = PQexecPrepared(app, "star", 0, NULL, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(pr), PGRES_TUPLES_OK);
    int star_cols = PQnfields(pr);
    PQclear(pr);
    itest_run r;
    int64_t t0 = itest_now_ms();
    promote(&r);
    int64_t took = itest_now_ms() - t0;
    if (r.rc != 0 || !strstr(r.out, "promote: promoted projects, tasks: lock wait ") || !strstr(r.out, "locks held")) {
        dump();
        fail_msg("pgshadowctl promote: rc %d\n%s\n%s", r.rc, r.out, r.err);
    }
    fprintf(stderr, "test-promote: -M %s: %s (pgshadowctl took %lld ms)\n", mode, r.out, (long long)took);
    pr = PQexecPrepared(app, "star", 0, NULL, NULL, NULL, 0);
    if (PQresultStatus(pr) != PGRES_TUPLES_OK || PQnfields(pr) != star_cols)
        fail_msg("a prepared SELECT * after promote: %s%d columns (%d before)", PQresultErrorMessage(pr),
                 PQnfields(pr), star_cols);
    PQclear(pr);
    PQfinish(app);
    itest_run_free(&r);
    char *why = itest_query(T.db->c, "SELECT why FROM pgshadow.events WHERE what = 'cutover promoted'");
    fprintf(stderr, "test-promote: -M %s: the event: %s\n", mode, why);
    free(why);
    /* the daemon validates notes' key; the load writes on */
    expect_true("SELECT convalidated FROM pg_constraint WHERE conrelid = 'notes'::regclass AND contype = 'f'",
                WAIT_MS);
    expect_true("SELECT count(*) >= 100 FROM tasks WHERE phase = 2", WAIT_MS);
    /* verify (every 2 s) and sampling (every 1 s) had their turns since */
    if (!itest_daemon_wait_log(&T.a, at, "cutover: validated foreign key", WAIT_MS))
        fail_msg("no validation logged");
    /* what the daemon does after a promote is watched, so slept: two verify
     * intervals, five sampling rounds, under the load */
    itest_sleep_ms(5000);
    expect_true("SELECT count(*) >= 200 FROM tasks WHERE phase = 2", WAIT_MS);
    load_stop();
    check_catalog(before);
    check_rows();
    free(before);
    char *out = ctl(T.opcfg, 0, "promoted", "status", NULL, NULL);
    free(out);
    /* the daemon lives on, with nothing to complain about */
    log_clean(&T.a, at);
}

static void test_promote_under_load_simple(void **state)
{
    (void)state;
    promote_under_load("simple");
}

static void test_promote_under_load_prepared(void **state)
{
    (void)state;
    promote_under_load("prepared");
}

/* ---- 2. a long reader ------------------------------------------------------ */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Whether the child has exited (not reaped). */
static bool child_done(const itest_child *ch)
{
    siginfo_t si = {0};
    return waitid(P_PID, (id_t)ch->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == ch->pid;
}

/* pgshadowctl promote while a writer INSERTs into projects every 20 ms,
 * each timed: the longest in *max_us, how many in *n. */
static void promote_timed(itest_run *r, PGconn *w, int64_t *max_us, int *n)
{
    char *argv[] = {(char *)itest_env("PGSHADOWCTL"), "-c", T.opcfg, "promote", NULL};
    itest_child ch;
    *max_us = 0;
    *n = 0;
    itest_child_start(&ch, argv);
    int64_t end = itest_now_ms() + WAIT_MS;
    while (!child_done(&ch) && itest_now_ms() < end) {
        int64_t t0 = now_us();
        PGresult *res = PQexec(w, "INSERT INTO projects (name) VALUES ('writer')");
        int64_t d = now_us() - t0;
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            fail_msg("the writer: %s", PQresultErrorMessage(res));
        PQclear(res);
        if (d > *max_us)
            *max_us = d;
        (*n)++;
        itest_sleep_ms(20);
    }
    itest_child_finish(&ch, r);
}

/* A transaction of the owner's runs stmt and stays open: promote fails
 * (exit 1) naming it, while a writer of projects never waits long, and
 * nothing changes. Then it ends. */
static void blocked_promote(PGconn *w, const char *stmt, const char *before)
{
    PGconn *blocker = itest_connect_as(T.db->name, OWNER);
    itest_exec_ok(blocker, "BEGIN");
    itest_exec_ok(blocker, stmt);
    int pid = PQbackendPID(blocker);
    itest_run r;
    int64_t max_us = 0;
    int n = 0;
    /* the command may come while the daemon re-reads the state: asked again */
    for (int i = 0; i < 20; i++) {
        promote_timed(&r, w, &max_us, &n);
        if (!(r.rc == 3 && (strstr(r.err, "stale") || strstr(r.err, "is reading the cutover state"))))
            break;
        itest_run_free(&r);
        itest_sleep_ms(300);
    }
    fprintf(stderr, "test-promote: %s open: %d INSERTs into projects meanwhile, the longest %.1f ms\n", stmt, n,
            max_us / 1000.0);
    /* the blocker is named; the writer, which only queued behind the
     * attempts, is not */
    char want[64], writer[32];
    snprintf(want, sizeof want, "pid %d (" OWNER ", idle in transaction", pid);
    snprintf(writer, sizeof writer, "pid %d ", PQbackendPID(w));
    if (r.rc != 1 || !strstr(r.err, "promote gave up after 3 attempt(s), nothing changed") || !strstr(r.err, want) ||
        strstr(r.err, writer)) {
        dump();
        fail_msg("pgshadowctl promote with %s open (pid %d): rc %d\n%s\n%s", stmt, pid, r.rc, r.out, r.err);
    }
    fprintf(stderr, "test-promote: %s open: %s", stmt, r.err);
    itest_run_free(&r);
    assert_true(n >= 3);
    if (max_us >= 1000000)
        fail_msg("a writer of projects waited %.1f ms (lock_timeout 200ms)", max_us / 1000.0);
    /* nothing changed */
    expect(UNCHANGED_SQL, "t");
    char *now = oids();
    assert_string_equal(now, before);
    free(now);
    expect_true("SELECT status = 'awaiting_decision' FROM pgshadow.cutover", WAIT_MS);
    expect("SELECT count(*) FROM pgshadow.events WHERE what = 'cutover promoted'", "0");
    expect("SELECT pgshadow.read_percent('tasks')", "100");
    itest_exec_ok(blocker, "COMMIT");
    PQfinish(blocker);
}

/* _promote_holders, which promote calls right before each wait it names the
 * holders of, drops the transaction's snapshot of pg_stat_activity: the
 * view is read once per transaction and kept to its end (a rolled back
 * subtransaction, a failed attempt, does not refresh it), so without that
 * promote named sessions after a failed wait as an earlier read saw them.
 * In one transaction: w's last statement as read first, still so after w
 * ran another and after a savepoint rolled back (the snapshot), and as it
 * is after _promote_holders. */
static void holders_read_fresh_activity(PGconn *w)
{
    char q[96];
    snprintf(q, sizeof q, "SELECT query FROM pg_stat_activity WHERE pid = %d", PQbackendPID(w));
    PGconn *c = itest_connect(T.ci);
    itest_exec_ok(w, "SELECT 'holders 1'");
    itest_exec_ok(c, "BEGIN");
    itest_expect_sql(c, q, "SELECT 'holders 1'");
    itest_exec_ok(w, "SELECT 'holders 2'");
    itest_exec_ok(c, "SAVEPOINT a; ROLLBACK TO SAVEPOINT a");
    itest_expect_sql(c, q, "SELECT 'holders 1'");
    itest_exec_ok(c, "SELECT pgshadow._promote_holders('projects')");
    itest_expect_sql(c, q, "SELECT 'holders 2'");
    itest_exec_ok(c, "COMMIT");
    PQfinish(c);
}

static void test_promote_long_reader(void **state)
{
    (void)state;
    write_cfg(&(opts){.lock_timeout = "200ms", .attempts = 3});
    to_decision(NULL, "awaiting_decision");
    char *before = oids();
    PGconn *w = itest_connect_as(T.db->name, OWNER);
    holders_read_fresh_activity(w);
    /* a reader of tasks; a transaction that only took a value of projects'
     * sequence (promote changes the sequence's owner under its locks) */
    blocked_promote(w, "SELECT id FROM tasks LIMIT 1", before);
    blocked_promote(w, "SELECT nextval('projects_id_seq')", before);
    /* they are gone: promoted */
    size_t at = itest_daemon_log_size(&T.a);
    itest_run r;
    int64_t max_us = 0;
    int n = 0;
    promote_timed(&r, w, &max_us, &n);
    if (r.rc != 0 || !strstr(r.out, "promote: promoted projects, tasks")) {
        dump();
        fail_msg("pgshadowctl promote, the blockers gone: rc %d\n%s\n%s", r.rc, r.out, r.err);
    }
    fprintf(stderr, "test-promote: blockers gone: %s", r.out);
    fprintf(stderr, "test-promote: %d INSERTs meanwhile, the longest %.1f ms\n", n, max_us / 1000.0);
    itest_run_free(&r);
    PQfinish(w);
    expect_true("SELECT convalidated FROM pg_constraint WHERE conrelid = 'notes'::regclass AND contype = 'f'",
                WAIT_MS);
    check_catalog(before);
    /* the writer's rows up to the promote are in the new projects, later ones there only */
    expect("SELECT count(*) FROM projects_legacy l LEFT JOIN projects p ON p.id = l.id "
           "WHERE p.id IS NULL OR (l.name, l.budget, l.phase) IS DISTINCT FROM (p.name, p.budget, p.phase)",
           "0");
    expect("SELECT count(*) FROM projects p WHERE NOT EXISTS (SELECT 1 FROM projects_legacy l WHERE l.id = p.id) "
           "AND p.id <= (SELECT max(id) FROM projects_legacy)",
           "0");
    free(before);
    log_clean(&T.a, at);
}

/* ---- 3. refused ------------------------------------------------------------- */

static void test_promote_refused(void **state)
{
    (void)state;
    write_cfg(&(opts){0});
    itest_exec_ok(T.db->c, "SET ROLE " OWNER "; CREATE MATERIALIZED VIEW project_names AS SELECT name FROM projects;"
                           "RESET ROLE");
    to_decision(NULL, "awaiting_decision");
    char *before = oids();
    char *out = ctl(T.opcfg, 3, "promote would be refused: 1 blocker(s) above", "promote", "--dry-run", NULL);
    if (!strstr(out, "materialized view") || !strstr(out, "project_names: refused: a materialized view is not moved"))
        fail_msg("--dry-run does not list the materialized view as refused:\n%s", out);
    free(out);
    /* refused by pgshadowctl (exit 3, nothing queued), and by the daemon's
     * promote itself when the plan changed after pgshadowctl looked: a
     * command queued as an older pgshadowctl would (exit 1 there) */
    itest_run r;
    promote(&r);
    if (r.rc != 3 || !strstr(r.err, "pgshadowctl: promote: refused: projects: materialized view "
                                    "public.project_names: refused: a materialized view is not moved")) {
        dump();
        fail_msg("pgshadowctl promote with a materialized view: rc %d\n%s\n%s", r.rc, r.out, r.err);
    }
    fprintf(stderr, "test-promote: refused: rc %d: %s", r.rc, r.err);
    itest_run_free(&r);
    expect("SELECT count(*) FROM pgshadow.commands WHERE command = 'promote'", "0");
    PGconn *op = itest_connect_as(T.db->name, OP);
    itest_exec_ok(op, "SELECT pgshadow.enqueue_command('promote', '{}', '" MIG "')");
    PQfinish(op);
    expect_true("SELECT state = 'failed' AND result LIKE 'pgshadow: promote refused: projects: materialized view "
                "public.project_names: refused%' FROM pgshadow.commands WHERE command = 'promote'",
                WAIT_MS);
    expect(UNCHANGED_SQL, "t");
    char *now = oids();
    assert_string_equal(now, before);
    free(now);
    expect_true("SELECT status = 'awaiting_decision' FROM pgshadow.cutover", WAIT_MS);
    /* gone: nothing refuses */
    itest_exec_ok(T.db->c, "DROP MATERIALIZED VIEW project_names");
    size_t at = itest_daemon_log_size(&T.a);
    out = ctl(T.opcfg, 0, "nothing refuses promote", "promote", "--dry-run", NULL);
    if (!strstr(out, "task_view: recreated from its definition over the new table") ||
        !strstr(out, "notes_task_id_fkey on public.notes: points at the new table"))
        fail_msg("--dry-run:\n%s", out);
    free(out);
    promote(&r);
    if (r.rc != 0) {
        dump();
        fail_msg("pgshadowctl promote: rc %d\n%s\n%s", r.rc, r.out, r.err);
    }
    itest_run_free(&r);
    expect_true("SELECT convalidated FROM pg_constraint WHERE conrelid = 'notes'::regclass AND contype = 'f'",
                WAIT_MS);
    check_catalog(before);
    free(before);
    log_clean(&T.a, at);
}

/* ---- 4. SIGKILL during a promote ---------------------------------------------- */

#define PROMOTE_RUNNING "query LIKE '%pgshadow.promote(%' AND usename = '" DAEMON "'"

/* d's promote is where the test holds it (ready: true then): SIGKILL d; its
 * backend stops (the server cancels the statement of a client gone), and
 * nothing of the promote committed. */
static void kill_promoting(itest_daemon *d, const char *ready, const char *before, const char *tag)
{
    char sql[900];
    snprintf(sql, sizeof sql, "SELECT %s", ready);
    expect_true(sql, WAIT_MS);
    itest_daemon_kill(d, SIGKILL);
    int64_t t_kill = itest_now_ms();
    expect_true("SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE " PROMOTE_RUNNING ")", WAIT_MS);
    int64_t took = itest_now_ms() - t_kill;
    fprintf(stderr, "test-promote: sigkill %s: the killed daemon's promote ended %lld ms after the kill\n", tag,
            (long long)took);
    if (took > 15000) /* client_connection_check_interval is 1 s; the hold phase's lock_timeout 5 s a try */
        fail_msg("the killed daemon's promote went on for %lld ms", (long long)took);
    expect(UNCHANGED_SQL, "t");
    char *now = oids();
    assert_string_equal(now, before);
    free(now);
    expect("SELECT status FROM pgshadow.cutover", "promoting");
    expect("SELECT pgshadow.read_percent('tasks')", "100");
}

static void test_promote_sigkill(void **state)
{
    (void)state;
    /* attempts of 500 ms, then 800 ms (80% of deadlock_timeout) */
    write_cfg(&(opts){.finally = "promote", .lock_timeout = "2s", .attempts = 6});
    char *before = oids();
    /* (a) killed while an attempt waits for a reader's lock */
    PGconn *reader = itest_connect_as(T.db->name, OWNER);
    itest_exec_ok(reader, "BEGIN");
    itest_exec_ok(reader, "SELECT id FROM tasks LIMIT 1");
    to_decision(NULL, "promoting");
    kill_promoting(&T.a,
                   "EXISTS (SELECT 1 FROM pg_stat_activity WHERE " PROMOTE_RUNNING " AND wait_event_type = 'Lock')",
                   before, "waiting");
    itest_exec_ok(reader, "COMMIT");
    PQfinish(reader);
    /* written while no daemon runs: captured, applied by the promote */
    itest_exec_ok(T.db->c, "SET ROLE " OWNER "; INSERT INTO projects (name) VALUES ('while dead');"
                           "INSERT INTO tasks (project_id, title) SELECT max(id), 'while dead' FROM projects;"
                           "UPDATE tasks SET n = n + 100 WHERE id = 1; RESET ROLE");
    expect("SELECT count(*) > 0 FROM pgshadow.change_log", "t");
    /* (b) a restarted daemon reads 'promoting' and promotes: killed while
     * it holds every lock of the swap, its moves done, waiting for the
     * cutover row (which the test holds) to write 'promoted' */
    PGconn *locker = itest_connect(T.ci);
    itest_exec_ok(locker, "BEGIN; SELECT 1 FROM pgshadow.cutover FOR UPDATE");
    daemon_up(&T.b, "b");
    kill_promoting(&T.b,
                   "EXISTS (SELECT 1 FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
                   "        WHERE " PROMOTE_RUNNING " AND a.wait_event_type = 'Lock' AND l.granted "
                   "        AND l.relation = 'tasks'::regclass AND l.mode = 'AccessExclusiveLock')",
                   before, "holding the locks");
    itest_exec_ok(locker, "COMMIT");
    PQfinish(locker);
    expect("SELECT count(*) FROM pgshadow.events WHERE what = 'cutover promoted'", "0");
    /* (c) started again: promoted */
    itest_daemon_cleanup(&T.a);
    daemon_up(&T.a, "c");
    if (!itest_daemon_wait_log(&T.a, 0, "cutover: promoting migration " MIG " (finally: promote)", WAIT_MS))
        fail_msg("the restarted daemon did not promote");
    expect_true("SELECT status = 'promoted' FROM pgshadow.cutover", WAIT_MS);
    expect_true("SELECT convalidated FROM pg_constraint WHERE conrelid = 'notes'::regclass AND contype = 'f'",
                WAIT_MS);
    check_catalog(before);
    check_rows();
    expect("SELECT count(*) FROM tasks WHERE title = 'while dead' OR (id = 1 AND n = 100)", "2");
    expect("SELECT string_agg(what, ',' ORDER BY event_id) FROM pgshadow.events "
           "WHERE what IN ('cutover promoting', 'cutover promoted', 'cutover promote_failed')",
           "cutover promoting,cutover promoted");
    char *why = itest_query(T.db->c, "SELECT why FROM pgshadow.events WHERE what = 'cutover promoted'");
    fprintf(stderr, "test-promote: sigkill: restarted: %s\n", why);
    free(why);
    free(before);
    log_clean(&T.a, 0);
    /* (d) a daemon started on a promoted migration, verify and sampling on,
     * has nothing to do and says nothing wrong */
    assert_true(WIFEXITED(itest_daemon_kill(&T.a, SIGTERM)));
    itest_daemon_cleanup(&T.b);
    write_cfg(&(opts){.finally = "promote", .verify = true});
    daemon_up(&T.b, "d");
    if (!itest_daemon_wait_log(&T.b, 0, "cutover promoted (the state of migration " MIG ", as read)", WAIT_MS))
        fail_msg("the daemon started after the promote did not read the state");
    itest_sleep_ms(3000); /* watched, so slept: a few rounds of everything */
    expect("SELECT status FROM pgshadow.cutover", "promoted");
    log_clean(&T.b, 0);
}

/* ---- 5. finalize ------------------------------------------------------------ */

/* Every relation but an index, a TOAST table or a composite type, and every
 * function, outside the system schemas, sorted, one a line, named as
 * finalize_plan names them (schema-qualified, %I): what finalize dropped is
 * the difference of two of these. */
#define OBJECTS_SQL                                                                                              \
    "SELECT string_agg(o, E'\\n' ORDER BY o) FROM ("                                                            \
    " SELECT format('%I.%I', n.nspname, c.relname) AS o FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace " \
    " WHERE c.relkind NOT IN ('i', 'I', 't', 'c') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')" \
    " UNION ALL SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) "     \
    " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "                                             \
    " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')) x"

/* Lines of a that are not in b (both sorted, one object a line), in a
 * malloc'd string, one a line. */
static char *minus(const char *a, const char *b)
{
    size_t cap = strlen(a) + 2, n = 0;
    char *out = calloc(1, cap);
    assert_non_null(out);
    for (const char *p = a; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        bool found = false;
        for (const char *q = b; *q && !found;) {
            const char *f = strchr(q, '\n');
            size_t l2 = f ? (size_t)(f - q) : strlen(q);
            found = l2 == len && strncmp(p, q, len) == 0;
            q = f ? f + 1 : q + l2;
        }
        if (!found) {
            memcpy(out + n, p, len);
            n += len;
            out[n++] = '\n';
        }
        p = e ? e + 1 : p + len;
    }
    return out;
}

/* The objects of the "dropped <kind>: <object> (<detail>)" lines of
 * pgshadowctl finalize's output whose kind is a relation or a function,
 * sorted, one a line (as OBJECTS_SQL and minus() print them); *lines: how
 * many "dropped" lines there were in all. */
static char *printed_dropped(const char *out, int *lines)
{
    static const char *const kinds[] = {"legacy table", "compatibility view", "sequence", "capture function", NULL};
    char *list[64];
    int n = 0;
    *lines = 0;
    for (const char *p = strstr(out, "\ndropped "); p; p = strstr(p + 1, "\ndropped ")) {
        (*lines)++;
        const char *k = p + strlen("\ndropped "), *colon = strstr(k, ": ");
        const char *e = strchr(k, '\n');
        assert_non_null(colon);
        const char *obj = colon + 2, *paren = strstr(obj, " (");
        assert_true(paren && (!e || paren < e));
        for (int i = 0; kinds[i]; i++)
            if ((size_t)(colon - k) == strlen(kinds[i]) && strncmp(k, kinds[i], strlen(kinds[i])) == 0) {
                assert_true(n < 64);
                list[n++] = strndup(obj, (size_t)(paren - obj));
            }
    }
    for (int i = 0; i < n; i++) /* sorted as the server sorts them here (C collation: plain bytes) */
        for (int j = i + 1; j < n; j++)
            if (strcmp(list[j], list[i]) < 0) {
                char *x = list[i];
                list[i] = list[j];
                list[j] = x;
            }
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += strlen(list[i]) + 1;
    char *r = calloc(1, len);
    assert_non_null(r);
    for (int i = 0; i < n; i++) {
        strcat(r, list[i]);
        strcat(r, "\n");
        free(list[i]);
    }
    return r;
}

/* pgshadowctl finalize (as the operator) on a terminal (a pty), answering
 * answer to its question: exit code, and all it printed (stdout and stderr,
 * the answer echoed) in r->out. */
static void finalize_on_tty(itest_run *r, const char *answer)
{
    int fd = -1;
    pid_t pid = forkpty(&fd, NULL, NULL, NULL);
    assert_true(pid >= 0);
    if (pid == 0) {
        execl(itest_env("PGSHADOWCTL"), "pgshadowctl", "-c", T.opcfg, "finalize", (char *)NULL);
        _exit(127);
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = calloc(1, cap);
    assert_non_null(buf);
    bool answered = false;
    int64_t end = itest_now_ms() + WAIT_MS;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) > 0) {
            ssize_t got = read(fd, buf + n, cap - n - 1);
            if (got <= 0)
                break; /* EIO: the child is gone and the pty closed */
            n += (size_t)got;
            buf[n] = '\0';
        }
        if (!answered && strstr(buf, "[y/N] ")) {
            char line[16];
            snprintf(line, sizeof line, "%s\n", answer);
            assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
            answered = true;
        }
        if (itest_now_ms() > end) {
            kill(pid, SIGKILL);
            break;
        }
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    close(fd);
    r->rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r->out = buf;
    r->err = strdup("");
    if (!answered)
        fail_msg("pgshadowctl finalize on a terminal asked nothing: rc %d\n%s", r->rc, buf);
}

/* CPU seconds (user + system) the process has used so far. */
static double cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* after "pid (comm)": state is field 3, utime 14, stime 15 */
    assert_non_null(p);
    unsigned long ut = 0, st = 0;
    assert_int_equal(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st), 2);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* What the daemon of a finalized migration must not do: log an error or a
 * warning, spin, or keep doing anything it says. Watched 6 s (three verify
 * intervals, six sampling rounds, twelve polls): a little CPU, and no line
 * but its "... is finalized" ones (a module may say it a moment late). */
static void quiet(itest_daemon *d, size_t at, const char *tag)
{
    size_t log0 = itest_daemon_log_size(d);
    double cpu0 = cpu_s(d->pid);
    itest_sleep_ms(6000); /* watched, so slept */
    double cpu = cpu_s(d->pid) - cpu0;
    char *log = itest_daemon_log(d);
    int other = 0;
    for (const char *p = log + log0; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char line[600];
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), p);
        other += !strstr(line, " is finalized");
        p += len + (e ? 1 : 0);
    }
    fprintf(stderr, "test-promote: finalize: %s: the daemon used %.2f s of CPU in 6 s and logged %d other line(s)\n",
            tag, cpu, other);
    if (cpu > 1.0 || other > 0) {
        fprintf(stderr, "---- %s since byte %zu:\n%s\n", d->log, log0, log + log0);
        fail_msg("the daemon of a finalized migration is busy: %.2f s CPU, %d lines of log in 6 s", cpu, other);
    }
    free(log);
    log_clean(d, at);
}

/* An application that no longer names <t>_shadow (finalize drops it): it
 * inserts through the serial and the identity, reads through the view and
 * through routing (whose flags finalize deletes: primary, the new table). */
static const char FINAL_SCRIPT[] =
    "\\set tid random(1, 2000)\n"
    "BEGIN;\n"
    "INSERT INTO projects (name, phase) VALUES ('f', 3) RETURNING id AS np \\gset\n"
    "INSERT INTO tasks (project_id, title, phase) VALUES (:np, 'f', 3) RETURNING id AS nt \\gset\n"
    "INSERT INTO notes (task_id, body) VALUES (:nt, 'f');\n"
    "END;\n"
    "SELECT id, title, n, project FROM task_view WHERE id = :tid;\n"
    "SELECT title FROM tasks WHERE id = :tid AND NOT pgshadow.read_from_shadow('tasks', :tid::text);\n";

/* The rows of the new tables up to their highest ids now, as text: what
 * finalize must leave as it is. */
#define ROWS_SQL                                                                                                 \
    "SELECT md5(string_agg(x, ',' ORDER BY x)) FROM ("                                                           \
    " SELECT 'p' || t::text AS x FROM projects t WHERE id <= %ld UNION ALL "                                     \
    " SELECT 't' || t::text FROM tasks t WHERE id <= %ld UNION ALL "                                             \
    " SELECT 'n' || t::text FROM notes t WHERE id <= %ld) y"

static void test_finalize(void **state)
{
    (void)state;
    write_cfg(&(opts){.verify = true});
    /* not promoted: refused by pgshadowctl (the plan), nothing queued */
    char *out = ctl(T.opcfg, 3, "the cutover of " MIG " is not_started: finalize follows a promote", "finalize",
                    "--yes", NULL);
    free(out);
    to_decision(NULL, "awaiting_decision");
    out = ctl(T.opcfg, 3, "the cutover of " MIG " is awaiting_decision: finalize follows a promote", "finalize",
              "--yes", NULL);
    free(out);
    expect("SELECT count(*) FROM pgshadow.commands WHERE command = 'finalize'", "0");
    /* and by the daemon's machine, for a command queued anyway */
    PGconn *op = itest_connect_as(T.db->name, OP);
    itest_exec_ok(op, "SELECT pgshadow.enqueue_command('finalize', '{\"plan\": \"x\"}', '" MIG "')");
    expect_true("SELECT state = 'refused' AND result = 'finalize: the cutover is awaiting_decision at stage 2, 100%: "
                "finalize follows a promote' FROM pgshadow.commands WHERE command = 'finalize'",
                WAIT_MS);
    PQfinish(op);
    itest_exec_ok(T.db->c, "DELETE FROM pgshadow.commands WHERE command = 'finalize'");

    promote_ok("before finalize");
    itest_run r;
    expect_true("SELECT convalidated FROM pg_constraint WHERE conrelid = 'notes'::regclass AND contype = 'f'",
                WAIT_MS);
    expect_true("SELECT NOT EXISTS (SELECT 1 FROM pgshadow.promote_moves WHERE state = 'to_validate')", WAIT_MS);
    char *objs = itest_query(T.db->c, OBJECTS_SQL);

    /* no terminal, no --yes: the plan printed, refused, nothing dropped,
     * nothing queued */
    out = ctl(T.opcfg, 3, "stdin is not a terminal and --yes was not given", "finalize", NULL, NULL);
    if (!strstr(out, "legacy table: public.tasks_legacy (") || !strstr(out, "compatibility view: public.tasks_shadow (") ||
        !strstr(out, "capture function: pgshadow.capture_"))
        fail_msg("finalize without --yes did not print the plan:\n%s", out);
    fprintf(stderr, "test-promote: finalize without a terminal:\n%s", out);
    free(out);
    char *now = itest_query(T.db->c, OBJECTS_SQL);
    assert_string_equal(now, objs);
    free(now);
    expect("SELECT count(*) FROM pgshadow.commands WHERE command = 'finalize'", "0");
    expect("SELECT count(*) FROM pgshadow.tables", "2");
    /* on a terminal: the plan, the question; "n" drops nothing, queues nothing */
    finalize_on_tty(&r, "n");
    if (r.rc != 3 || !strstr(r.out, "legacy table: public.tasks_legacy (") || !strstr(r.out, "[y/N] n") ||
        !strstr(r.out, "finalize: not confirmed; nothing dropped"))
        fail_msg("finalize on a terminal, answered n: rc %d\n%s", r.rc, r.out);
    itest_run_free(&r);
    now = itest_query(T.db->c, OBJECTS_SQL);
    assert_string_equal(now, objs);
    free(now);
    expect("SELECT count(*) FROM pgshadow.commands WHERE command = 'finalize'", "0");

    /* a reader of a legacy table, idle in its transaction: finalize waits
     * cutover.promote.lock_timeout (2s) for it, then gives up naming it,
     * nothing dropped */
    PGconn *reader = itest_connect_as(T.db->name, OWNER);
    itest_exec_ok(reader, "BEGIN");
    itest_exec_ok(reader, "SELECT count(*) FROM tasks_legacy");
    char held[96];
    snprintf(held, sizeof held, "held by pid %d (" OWNER ", idle in transaction", PQbackendPID(reader));
    out = ctl(T.opcfg, 1, "finalize gave up, nothing dropped: a lock was not granted within 2000 ms", "finalize",
              "--yes", NULL);
    if (!strstr(out, held) || !strstr(out, "SELECT count(*) FROM tasks_legacy"))
        fail_msg("finalize with a reader of tasks_legacy does not name it (%s):\n%s", held, out);
    fprintf(stderr, "test-promote: finalize with a reader of a legacy table: %s", strstr(out, "pgshadowctl: "));
    free(out);
    itest_exec_ok(reader, "COMMIT");
    PQfinish(reader);
    now = itest_query(T.db->c, OBJECTS_SQL);
    assert_string_equal(now, objs);
    free(now);
    expect("SELECT status FROM pgshadow.cutover", "promoted");
    itest_exec_ok(T.db->c, "DELETE FROM pgshadow.commands WHERE command = 'finalize'");

    /* a view of a legacy table (on a terminal, answered y): the drop stops,
     * the dependant named, nothing dropped */
    itest_exec_ok(T.db->c, "SET ROLE " OWNER "; CREATE VIEW legacy_report AS SELECT count(*) AS n FROM tasks_legacy;"
                           "RESET ROLE");
    finalize_on_tty(&r, "y");
    if (r.rc != 1 || !strstr(r.out, "finalize stopped, nothing dropped") ||
        !strstr(r.out, "view public.legacy_report depends on table public.tasks_legacy"))
        fail_msg("finalize with a view of tasks_legacy, answered y: rc %d\n%s", r.rc, r.out);
    fprintf(stderr, "test-promote: finalize with a view of a legacy table: %s", strstr(r.out, "pgshadowctl: "));
    itest_run_free(&r);
    expect("SELECT state FROM pgshadow.commands WHERE command = 'finalize'", "failed");
    itest_exec_ok(T.db->c, "DROP VIEW legacy_report");
    now = itest_query(T.db->c, OBJECTS_SQL);
    assert_string_equal(now, objs);
    free(now);
    expect("SELECT status FROM pgshadow.cutover", "promoted");
    expect("SELECT count(*) || ' ' || count(*) FILTER (WHERE promoted_at IS NOT NULL) FROM pgshadow.tables", "2 2");
    expect("SELECT count(*) FROM pgshadow.events WHERE what = 'cutover finalized'", "0");

    /* the rows of the new tables, and their oids, before */
    char *ids = itest_query(T.db->c, "SELECT (SELECT max(id) FROM projects) || ' ' || (SELECT max(id) FROM tasks) "
                                     "|| ' ' || (SELECT max(id) FROM notes)");
    long mp = 0, mt = 0, mn = 0;
    assert_int_equal(sscanf(ids, "%ld %ld %ld", &mp, &mt, &mn), 3);
    free(ids);
    char rows_sql[600];
    snprintf(rows_sql, sizeof rows_sql, ROWS_SQL, mp, mt, mn);
    char *rows = itest_query(T.db->c, rows_sql);
    char *new_oids = itest_query(T.db->c, "SELECT 'projects'::regclass::oid || ' ' || 'tasks'::regclass::oid || ' ' "
                                          "|| 'notes'::regclass::oid");

    /* --yes, under the application's load */
    size_t at = itest_daemon_log_size(&T.a);
    load_start_script("prepared", FINAL_SCRIPT);
    itest_sleep_ms(1000);
    int64_t t0 = itest_now_ms();
    out = ctl(T.opcfg, 0, "finalize: finalized " MIG ": dropped ", "finalize", "--yes", NULL);
    int64_t took = itest_now_ms() - t0;
    fprintf(stderr, "test-promote: finalize --yes (%lld ms):\n%s", (long long)took, out);
    /* the application writes on after it */
    char *last = itest_query(T.db->c, "SELECT max(id) FROM tasks");
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) >= 50 FROM tasks WHERE id > %s", last);
    free(last);
    expect_true(sql, WAIT_MS);
    load_stop();

    /* exactly what it printed is gone, and nothing else */
    now = itest_query(T.db->c, OBJECTS_SQL);
    char *gone = minus(objs, now), *added = minus(now, objs);
    int lines = 0;
    char *printed = printed_dropped(out, &lines);
    free(out);
    fprintf(stderr, "test-promote: finalize: gone from the catalog:\n%s", gone);
    assert_string_equal(gone, printed);
    assert_string_equal(added, "");
    assert_non_null(strstr(gone, "public.tasks_legacy\n"));
    assert_non_null(strstr(gone, "public.projects_shadow\n"));
    assert_non_null(strstr(gone, "public.tasks_id_seq\n")); /* the legacy identity's sequence, printed as such */
    free(gone);
    free(added);
    free(printed);
    free(now);
    /* the one event lists every line printed; pgshadow's state of the
     * migration is gone but for the cutover row and the events */
    char want[32];
    snprintf(want, sizeof want, "1 %d", lines);
    expect("SELECT count(*) || ' ' || max(jsonb_array_length(after -> 'dropped')) FROM pgshadow.events "
           "WHERE what = 'cutover finalized'",
           want);
    expect("SELECT who FROM pgshadow.events WHERE what = 'cutover finalized'", OP);
    expect("SELECT status FROM pgshadow.cutover", "finalized");
    expect("SELECT (SELECT count(*) FROM pgshadow.tables) + (SELECT count(*) FROM pgshadow.promote_moves) "
           "+ (SELECT count(*) FROM pgshadow.flags WHERE name <> 'shadow_writes_enabled') "
           "+ (SELECT count(*) FROM pgshadow.change_log) + (SELECT count(*) FROM pgshadow.capture_switch) "
           "+ (SELECT count(*) FROM pgshadow.wakeup)",
           "0");
    expect("SELECT count(*) > 0 FROM pgshadow.events WHERE what = 'cutover promoted'", "t");
    /* the new tables: the same, with every row as it was; the sequence, the
     * identity, the trigger, the key of notes, routing and the view work */
    now = itest_query(T.db->c, "SELECT 'projects'::regclass::oid || ' ' || 'tasks'::regclass::oid || ' ' "
                               "|| 'notes'::regclass::oid");
    assert_string_equal(now, new_oids);
    free(now);
    now = itest_query(T.db->c, rows_sql);
    assert_string_equal(now, rows);
    free(now);
    expect("SELECT confrelid::regclass || ' ' || convalidated FROM pg_constraint "
           "WHERE conrelid = 'notes'::regclass AND contype = 'f'",
           "tasks true");
    PGconn *app = itest_connect_as(T.db->name, OWNER);
    itest_expect_sql(app, "WITH p AS (INSERT INTO projects (name) VALUES ('after finalize') RETURNING id), "
                          "t AS (INSERT INTO tasks (project_id, title) SELECT id, 'after finalize' FROM p "
                          "RETURNING id, stamp) "
                          "SELECT (SELECT id FROM p) > (SELECT max(id) FROM projects WHERE name <> 'after finalize') "
                          "AND (SELECT id FROM t) > (SELECT max(id) FROM tasks WHERE title <> 'after finalize') "
                          "AND (SELECT stamp FROM t) = 'trg:tasks'",
                     "t");
    itest_expect_sql(app, "SELECT pgshadow.read_percent('tasks') || ' ' || pgshadow.read_from_shadow('tasks', '7') "
                          "|| ' ' || (SELECT count(*) > 0 FROM task_view)",
                     "0 false true");
    PQfinish(app);
    /* the daemon: finalized, said once, then quiet (verify and sampling on) */
    if (!itest_daemon_wait_log(&T.a, at, "cutover: migration " MIG " is finalized", WAIT_MS))
        fail_msg("the daemon did not say the migration is finalized");
    quiet(&T.a, at, "the daemon that finalized");
    assert_int_equal(itest_daemon_log_count(&T.a, at, "cutover: migration " MIG " is finalized", NULL), 1);
    /* what is final is final */
    out = ctl(T.opcfg, 3, "migration " MIG " is finalized already", "finalize", "--yes", NULL);
    free(out);
    out = ctl(T.opcfg, 3, "the migration is finalized", "rollback", NULL, NULL);
    free(out);
    out = ctl(T.opcfg, 0, "finalized", "status", NULL, NULL);
    free(out);
    /* a daemon started on the finalized migration: says so once, quiet */
    assert_true(WIFEXITED(itest_daemon_kill(&T.a, SIGTERM)));
    daemon_up(&T.b, "after-finalize");
    if (!itest_daemon_wait_log(&T.b, 0, "cutover: migration " MIG " is finalized", WAIT_MS))
        fail_msg("the daemon started after the finalize did not say the migration is finalized");
    quiet(&T.b, 0, "a daemon started after");
    assert_int_equal(itest_daemon_log_count(&T.b, 0, "cutover: migration " MIG " is finalized", NULL), 1);
    /* what finalize deleted stays deleted (a daemon's sync arms its wake-up
     * row after its first apply round) */
    expect("SELECT (SELECT count(*) FROM pgshadow.tables) + (SELECT count(*) FROM pgshadow.flags "
           "WHERE name <> 'shadow_writes_enabled') + (SELECT count(*) FROM pgshadow.wakeup)",
           "0");
    /* installed again (the same id, the tables as they are now), over an
     * install whose CHECK on the cutover's status predates 'finalized': the
     * CHECK is replaced, the migration starts afresh */
    assert_true(WIFEXITED(itest_daemon_kill(&T.b, SIGTERM)));
    itest_exec_ok(T.db->c, "ALTER TABLE pgshadow.cutover DROP CONSTRAINT cutover_status_check;"
                           "ALTER TABLE pgshadow.cutover ADD CONSTRAINT cutover_status_check CHECK (status IN "
                           "('not_started', 'running', 'paused', 'awaiting_decision', 'promoting', 'promoted', "
                           "'rolled_back', 'aborted')) NOT VALID");
    char *schema = itest_install_sql(), *script = NULL;
    assert_true(asprintf(&script,
                         "BEGIN;\n%s\n"
                         "SELECT pgshadow.register_table('public', 'projects', NULL, '_shadow', '" MIG "', '{}');\n"
                         "SELECT pgshadow.register_table('public', 'tasks', NULL, '_shadow', '" MIG "', '{}');\n"
                         "SELECT pgshadow.finish_install('" MIG "');\nCOMMIT;\n",
                         schema) > 0);
    itest_exec_ok(T.db->c, script);
    free(script);
    free(schema);
    expect("SELECT string_agg((pg_get_constraintdef(oid) LIKE '%''finalized''%')::text || ' ' || convalidated, ',') "
           "FROM pg_constraint WHERE conrelid = 'pgshadow.cutover'::regclass AND contype = 'c' "
           "AND pg_get_constraintdef(oid) LIKE '%status%'",
           "true true");
    expect("SELECT status || ' ' || stage || ' ' || percent || ' ' || reason FROM pgshadow.cutover",
           "not_started 0 0 installed again after finalize");
    expect("SELECT count(*) || ' ' || count(*) FILTER (WHERE promoted_at IS NULL) || ' ' || "
           "pgshadow._promoted('" MIG "') FROM pgshadow.tables",
           "2 2 false");
    expect("SELECT string_agg(relname || ':' || relkind::text, ',' ORDER BY relname) FROM pg_class "
           "WHERE relname IN ('projects_shadow', 'tasks_shadow')",
           "projects_shadow:r,tasks_shadow:r");
    free(objs);
    free(rows);
    free(new_oids);
}

/* finally: promote that cannot promote (a materialized view refuses it):
 * the daemon's try fails, nothing changes, the state goes back to
 * awaiting_decision with one 'cutover promote_failed' event saying why, for
 * an operator to decide; the view gone, pgshadowctl promote succeeds. */
static void test_promote_finally_fails(void **state)
{
    (void)state;
    write_cfg(&(opts){.finally = "promote"});
    itest_exec_ok(T.db->c, "SET ROLE " OWNER "; CREATE MATERIALIZED VIEW project_names AS SELECT name FROM projects;"
                           "RESET ROLE");
    char *before = oids();
    daemon_up(&T.a, "a");
    expect_true("SELECT bool_and(backfill_state = 'done') FROM pgshadow.tables", WAIT_MS);
    start_cutover();
    expect_true("SELECT count(*) > 0 FROM pgshadow.events WHERE what = 'cutover promote_failed'", WAIT_MS);
    expect_true("SELECT status = 'awaiting_decision' FROM pgshadow.cutover", WAIT_MS);
    expect("SELECT why LIKE 'promote failed, nothing changed: pgshadow: promote refused: projects: materialized view "
           "public.project_names: refused%' FROM pgshadow.events WHERE what = 'cutover promote_failed'",
           "t");
    expect(UNCHANGED_SQL, "t");
    char *now = oids();
    assert_string_equal(now, before);
    free(now);
    /* it does not try again by itself: the decision is the operator's */
    itest_sleep_ms(3000);
    expect("SELECT count(*) || ' ' || (SELECT status FROM pgshadow.cutover) FROM pgshadow.events "
           "WHERE what = 'cutover promote_failed'",
           "1 awaiting_decision");
    itest_exec_ok(T.db->c, "DROP MATERIALIZED VIEW project_names");
    promote_ok("after finally: promote failed");
    expect("SELECT status FROM pgshadow.cutover", "promoted");
    /* finalize drops the legacy table promote left, never another of its
     * name: one made since refuses it, nothing dropped */
    expect_true("SELECT convalidated FROM pg_constraint WHERE conrelid = 'notes'::regclass AND contype = 'f'",
                WAIT_MS);
    itest_exec_ok(T.db->c, "ALTER TABLE projects_legacy RENAME TO projects_legacy_kept;"
                           "CREATE TABLE projects_legacy (id int)");
    char *out = ctl(T.opcfg, 3, "public.projects_legacy is not the legacy table promote left", "finalize", "--yes",
                    NULL);
    free(out);
    expect("SELECT to_regclass('projects_legacy') IS NOT NULL AND to_regclass('projects_legacy_kept') IS NOT NULL "
           "AND to_regclass('tasks_legacy') IS NOT NULL",
           "t");
    free(before);
}

/* ---- 7. revert ------------------------------------------------------------- */

/* The rows pgbench's transactions inserted ('b'): one project, one task and
 * one note each. */
#define B_ROWS_SQL                                                                                               \
    "SELECT (SELECT count(*) FROM projects WHERE name = 'b') || ' ' || (SELECT count(*) FROM tasks WHERE title = 'b') " \
    "|| ' ' || (SELECT count(*) FROM notes WHERE body = 'b')"

/* Table a and table b hold the same rows in the columns the application
 * sees (cols), both ways. */
static void same_rows(const char *a, const char *b, const char *cols)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM (SELECT %1$s FROM %2$s EXCEPT ALL SELECT %1$s FROM %3$s) x) || ' ' || "
             "(SELECT count(*) FROM (SELECT %1$s FROM %3$s EXCEPT ALL SELECT %1$s FROM %2$s) y)",
             cols, a, b);
    expect(sql, "0 0");
}

#define TASK_COLS "id, project_id, title, n, phase, stamp"
#define REVERT_RUNNING "a.query LIKE '%pgshadow.revert(%' AND a.usename = '" DAEMON "'"
#define PROJECT_COLS "id, name, budget, phase"

/* pgshadowctl revert (as the operator) until the daemon takes it. */
static void revert(itest_run *r)
{
    int64_t end = itest_now_ms() + WAIT_MS;
    for (;;) {
        itest_run_ctl(r, T.opcfg, "revert", (char *)NULL);
        bool early = r->rc == 3 && strstr(r->err, "is reading the cutover state");
        if (!early || itest_now_ms() > end)
            return;
        itest_run_free(r);
        itest_sleep_ms(300);
    }
}

/* Promote with reverse sync (keep_legacy: true, the default) under a pgbench
 * load (-M prepared), writes go on; the legacy tables follow the new ones
 * row by row (also the user trigger's stamp: the legacy table's own trigger
 * is disabled while reverse sync writes it). Then revert under the same
 * load: pgbench sees no failed transaction, every row it inserted is in the
 * old tables (counted against the transactions it completed), the catalog
 * is as before the promote (oids, the view, notes' foreign key, triggers,
 * identity above every key, tracking columns back on the shadows), the
 * cutover rolled_back at 0%, and forward sync goes on: the shadows hold
 * what the old tables hold. */
static void test_revert_under_load(void **state)
{
    (void)state;
    write_cfg(&(opts){.verify = true, .reverse = true});
    to_decision("prepared", "awaiting_decision");
    char *before = oids();
    itest_run r;
    promote_ok("with reverse sync");
    expect("SELECT bool_and(reverse_sync) FROM pgshadow.tables", "t");
    expect("SELECT tgenabled FROM pg_trigger WHERE tgrelid = 'tasks_legacy'::regclass AND tgname = 'tasks_stamp'",
           "D");
    expect("SELECT count(*) > 0 FROM pg_trigger WHERE tgrelid = 'tasks'::regclass AND tgname LIKE 'pgshadow_capture%'",
           "t");
    /* the load writes the new tables; reverse sync follows them */
    expect_true("SELECT count(*) >= 100 FROM tasks WHERE phase = 2", WAIT_MS);
    expect_true("SELECT count(*) > 50 FROM tasks_legacy WHERE phase = 2", WAIT_MS);
    /* revert, under the same load */
    int64_t t0 = itest_now_ms();
    revert(&r);
    if (r.rc != 0 || !strstr(r.out, "revert: reverted projects, tasks: lock wait ")) {
        dump();
        fail_msg("pgshadowctl revert: rc %d\n%s\n%s", r.rc, r.out, r.err);
    }
    fprintf(stderr, "test-promote: revert: %s (pgshadowctl took %lld ms)\n", r.out,
            (long long)(itest_now_ms() - t0));
    itest_run_free(&r);
    /* the writes go on into the old tables, and forward sync follows */
    expect_true("SELECT count(*) >= 100 FROM tasks WHERE phase = 0 AND title = 'b' AND id > "
                "(SELECT max(id) FROM tasks WHERE phase = 2)",
                WAIT_MS);
    long done = load_stop();
    /* nothing lost: every transaction pgbench completed inserted one row
     * of each table, before, during and after the promote */
    char want[96];
    snprintf(want, sizeof want, "%ld %ld %ld", done, done, done);
    expect(B_ROWS_SQL, want);
    expect("SELECT count(*) > 0 FROM tasks WHERE phase = 2", "t");
    /* the catalog: the old tables under their names again, the new ones
     * the shadows (the oids of before the promote) */
    char *after = oids();
    if (strcmp(before, after) != 0)
        fail_msg("oids after revert: %s, before the promote: %s", after, before);
    expect("SELECT to_regclass('tasks_legacy') IS NULL AND to_regclass('projects_legacy') IS NULL", "t");
    expect("SELECT status || ' ' || stage || ' ' || percent FROM pgshadow.cutover", "rolled_back 0 0");
    expect("SELECT count(*) FROM pgshadow.events WHERE what = 'cutover reverted'", "1");
    expect("SELECT count(*) FROM pgshadow.tables WHERE promoted_at IS NOT NULL OR reverse_sync", "0");
    expect("SELECT count(*) FROM pgshadow.flags WHERE name LIKE 'read_from_shadow_%' AND value <> '0'", "0");
    expect("SELECT string_agg(tgrelid::regclass || '.' || tgname || ':' || tgenabled::text, ',' ORDER BY 1) "
           "FROM pg_trigger WHERE tgname = 'tasks_stamp'",
           "tasks.tasks_stamp:O");
    expect("SELECT count(*) FROM pg_trigger WHERE tgrelid IN ('tasks'::regclass, 'projects'::regclass) "
           "AND tgname LIKE 'pgshadow_capture%'",
           "4");
    expect("SELECT count(*) FROM pg_trigger WHERE tgrelid IN ('tasks_shadow'::regclass, 'projects_shadow'::regclass) "
           "AND tgname LIKE 'pgshadow_capture%'",
           "0");
    expect("SELECT confrelid::regclass FROM pg_constraint WHERE conrelid = 'notes'::regclass AND contype = 'f'",
           "tasks");
    expect_true("SELECT convalidated FROM pg_constraint WHERE conrelid = 'notes'::regclass AND contype = 'f'",
                WAIT_MS);
    expect("SELECT string_agg(DISTINCT d.refobjid::regclass::text, ',') FROM pg_depend d "
           "JOIN pg_rewrite w ON w.oid = d.objid WHERE w.ev_class = 'task_view'::regclass "
           "AND d.refobjid <> 'task_view'::regclass",
           "projects,tasks");
    expect("SELECT attidentity FROM pg_attribute WHERE attrelid = 'tasks'::regclass AND attname = 'id'", "a");
    expect("SELECT attidentity FROM pg_attribute WHERE attrelid = 'tasks_shadow'::regclass AND attname = 'id'", "");
    expect("SELECT count(*) FROM pg_attribute WHERE attrelid = 'tasks_shadow'::regclass AND NOT attisdropped "
           "AND attname LIKE '\\_shadow\\_%'",
           "7");
    /* forward sync: the shadows hold what the old tables hold */
    expect_true("SELECT count(*) = 0 FROM pgshadow.change_log", WAIT_MS);
    same_rows("tasks", "tasks_shadow", TASK_COLS);
    same_rows("projects", "projects_shadow", PROJECT_COLS);
    expect("SELECT count(*) FROM pgshadow.quarantine", "0");
    /* new keys above every old one, from the old tables' own identity and sequence */
    expect("WITH p AS (INSERT INTO projects (name) VALUES ('after') RETURNING id), "
           "t AS (INSERT INTO tasks (project_id, title) SELECT id, 'after' FROM p RETURNING id, stamp) "
           "SELECT (SELECT id FROM p) > (SELECT max(id) FROM projects WHERE name <> 'after') "
           "AND (SELECT id FROM t) > (SELECT max(id) FROM tasks WHERE title <> 'after') "
           "AND (SELECT stamp FROM t) = 'trg:tasks'",
           "t");
    /* revert again, finalize: refused */
    char *out = ctl(T.opcfg, 3, "not promoted", "revert", "--dry-run", NULL);
    free(out);
    out = ctl(T.opcfg, 3, "refused", "finalize", "--yes", NULL);
    free(out);
    /* the migration goes on, under load again: the cutover, promote
     * (reverse sync again), and a revert whose daemon is SIGKILLed while
     * it holds every lock, its moves done, waiting for the cutover row
     * (which the test holds): nothing changed, still promoted; the next
     * daemon takes the command again and reverts */
    load_start("simple");
    start_cutover();
    expect_true("SELECT status = 'awaiting_decision' FROM pgshadow.cutover", WAIT_MS);
    promote_ok("again, after a revert");
    expect_true("SELECT count(*) > 20 FROM tasks_legacy WHERE phase = 2", WAIT_MS);
    PGconn *locker = itest_connect(T.ci);
    itest_exec_ok(locker, "BEGIN; SELECT 1 FROM pgshadow.cutover FOR UPDATE");
    /* pgshadowctl waits for the command's end: in the background, and
     * ended with the daemon (it said nothing more to wait for) */
    itest_child ctl_bg;
    char *const argv[] = {(char *)itest_env("PGSHADOWCTL"), "-c", T.opcfg, "revert", NULL};
    itest_child_start(&ctl_bg, argv);
    expect_true("SELECT EXISTS (SELECT 1 FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
                "WHERE " REVERT_RUNNING " AND a.wait_event_type = 'Lock' AND l.granted "
                "AND l.relation = 'tasks'::regclass AND l.mode = 'AccessExclusiveLock')",
                WAIT_MS);
    itest_daemon_kill(&T.a, SIGKILL);
    expect_true("SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE " REVERT_RUNNING ")", WAIT_MS);
    itest_exec_ok(locker, "COMMIT");
    PQfinish(locker);
    kill(ctl_bg.pid, SIGTERM);
    itest_child_finish(&ctl_bg, &r);
    itest_run_free(&r);
    expect("SELECT status || ' ' || (SELECT relkind::text FROM pg_class WHERE oid = 'tasks_shadow'::regclass) || ' ' "
           "|| (to_regclass('tasks_legacy') IS NOT NULL) || ' ' || (SELECT bool_and(reverse_sync) FROM pgshadow.tables) "
           "|| ' ' || (SELECT count(*) FROM pgshadow.events WHERE what = 'cutover reverted') FROM pgshadow.cutover",
           "promoted v true true 1");
    /* the command the killed daemon ran went back to the queue with its
     * transaction; the next daemon takes it once it has read the cutover
     * state (not before: it leaves it queued, never refuses it for that) */
    daemon_up(&T.b, "b");
    expect_true("SELECT status = 'rolled_back' FROM pgshadow.cutover", WAIT_MS);
    expect("SELECT string_agg(state, ',' ORDER BY command_id) FROM pgshadow.commands WHERE command = 'revert'",
           "done,done");
    expect("SELECT count(*) FROM pgshadow.events WHERE what = 'cutover reverted'", "2");
    expect("SELECT relkind FROM pg_class WHERE oid = 'tasks_shadow'::regclass", "r");
    long done2 = load_stop();
    snprintf(want, sizeof want, "%ld %ld %ld", done + done2, done + done2, done + done2);
    expect(B_ROWS_SQL, want);
    /* and finalize under load after promote (a third time): the legacy
     * tables follow the writes while it plans and drops (their counts are
     * not part of the plan's digest), reverse sync's capture goes with them.
     * The application's load no longer names the compatibility views
     * (finalize drops them): 'f' rows */
    load_start_script("simple", FINAL_SCRIPT);
    start_cutover();
    expect_true("SELECT status = 'awaiting_decision' FROM pgshadow.cutover", WAIT_MS);
    promote_ok("a third time");
    expect_true("SELECT convalidated FROM pg_constraint WHERE conrelid = 'notes'::regclass AND contype = 'f'",
                WAIT_MS);
    out = ctl(T.opcfg, 0, "reverse sync's capture: revert is gone with it", "finalize", "--yes", NULL);
    free(out);
    /* the application writes on */
    char *n0 = itest_query(T.db->c, "SELECT count(*) FROM tasks"), sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) >= %s + 20 FROM tasks", n0);
    expect_true(sql, WAIT_MS);
    free(n0);
    long done3 = load_stop();
    snprintf(want, sizeof want, "%ld %ld %ld", done3, done3, done3);
    expect("SELECT (SELECT count(*) FROM projects WHERE name = 'f') || ' ' || "
           "(SELECT count(*) FROM tasks WHERE title = 'f') || ' ' || (SELECT count(*) FROM notes WHERE body = 'f')",
           want);
    snprintf(want, sizeof want, "%ld %ld %ld", done + done2, done + done2, done + done2);
    expect(B_ROWS_SQL, want);
    expect("SELECT to_regclass('tasks_legacy') IS NULL AND to_regclass('tasks_shadow') IS NULL "
           "AND (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgshadow%') = 0",
           "t");
    expect("SELECT status FROM pgshadow.cutover", "finalized");
    free(before);
    free(after);
}

/* Never a silent lossy revert: a columns: mapping that is not a plain copy
 * makes its table not revertable: promote --dry-run (reverse sync, the
 * default) lists it and exits 3, naming the column and the way out;
 * --without-revert is accepted; a reverse_columns expression makes it
 * revertable. And revert before a promote is refused. And FORCE ROW LEVEL
 * SECURITY set on a primary after install holds its apply back, not the
 * other table's, and refuses promote. */
static void test_revert_needs_reverse(void **state)
{
    (void)state;
    write_cfg(&(opts){.reverse = true});
    itest_exec_ok(T.db->c, "SELECT pgshadow.register_table('public', 'projects', NULL, '_shadow', '" MIG "', "
                           "'{\"budget\": \"p.budget + 0\"}')");
    char *out = ctl(T.opcfg, 3, "column budget: the new column is p.budget + 0, not a plain copy: give "
                                "reverse_columns.budget", "promote", "--dry-run", NULL);
    if (!strstr(out, "promote --without-revert"))
        fail_msg("no way out named:\n%s", out);
    free(out);
    out = ctl(T.opcfg, 0, "kept as of the promote", "promote", "--dry-run", "--without-revert");
    free(out);
    itest_exec_ok(T.db->c, "SELECT pgshadow.set_reverse_columns('public', 'projects', '{\"budget\": \"p.budget\"}')");
    out = ctl(T.opcfg, 0, "reverse-synced from the new table (budget <- p.budget)", "promote", "--dry-run", NULL);
    free(out);
    out = ctl(T.opcfg, 3, "not promoted", "revert", "--dry-run", NULL);
    free(out);
    /* FORCE ROW LEVEL SECURITY set on a primary after install: apply holds
     * its changes back (the owner's policies would hide rows from apply's
     * reads, and it would delete them from the shadow), the other table
     * goes on, promote refuses; NO FORCE, and it catches up */
    for (int i = 0; i < 10; i++) /* the backfill, without a daemon */
        itest_exec_ok(T.db->c, "SELECT * FROM pgshadow.backfill_step('" MIG "', 10000)");
    itest_exec_ok(T.db->c, "SELECT * FROM pgshadow.apply_batch('" MIG "', 10000)");
    expect("SELECT (SELECT count(*) FROM tasks_shadow) || ' ' || (SELECT count(*) FROM projects_shadow)", "2000 200");
    itest_exec_ok(T.db->c, "ALTER TABLE projects FORCE ROW LEVEL SECURITY;"
                           "UPDATE projects SET budget = 7 WHERE id = 2; UPDATE tasks SET n = 7 WHERE id = 2");
    itest_exec_ok(T.db->c, "SELECT * FROM pgshadow.apply_batch('" MIG "', 10000)");
    expect("SELECT (SELECT count(*) FROM pgshadow.change_log) || ' ' || (SELECT n FROM tasks_shadow WHERE id = 2) "
           "|| ' ' || (SELECT budget FROM projects_shadow WHERE id = 2)",
           "1 7 0");
    out = ctl(T.opcfg, 3, "has FORCE ROW LEVEL SECURITY: apply holds its changes back", "promote", "--dry-run", NULL);
    free(out);
    itest_exec_ok(T.db->c, "ALTER TABLE projects NO FORCE ROW LEVEL SECURITY");
    itest_exec_ok(T.db->c, "SELECT * FROM pgshadow.apply_batch('" MIG "', 10000)");
    expect("SELECT (SELECT count(*) FROM pgshadow.change_log) || ' ' || (SELECT budget FROM projects_shadow WHERE id = 2)",
           "0 7");
    /* a reverse expression for a column that is not there, or for the key */
    PGresult *res = PQexec(T.db->c, "SELECT pgshadow.set_reverse_columns('public', 'projects', '{\"nope\": \"1\"}')");
    assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
    assert_non_null(strstr(PQresultErrorMessage(res), "nope is not a written column"));
    PQclear(res);
    res = PQexec(T.db->c, "SELECT pgshadow.set_reverse_columns('public', 'projects', '{\"id\": \"p.id\"}')");
    assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
    assert_non_null(strstr(PQresultErrorMessage(res), "id is a key column"));
    PQclear(res);
}

/* Reverse sync's edges, in SQL alone (a second migration, "edge", promoted
 * without a daemon): a key that changes spelling only (numeric 1.0 ->
 * 1.00) reaches the legacy table; a unique value swapped between two keys
 * in one transaction applies; a legacy identity column GENERATED ALWAYS
 * that is not the key does not fail every upsert; a child whose parent row
 * of the same table comes later in a batch with a bad row is not
 * quarantined with it; after a TRUNCATE of the new table, a row the legacy
 * table rejects is quarantined alone and the others apply; a copy back
 * into a narrower column refuses the promote; a view that reads a column
 * the legacy table lacks refuses the revert (ok = false, not only said);
 * FORCE ROW LEVEL SECURITY on a new table holds its reverse sync back (the
 * plan says why), not the other tables'. */
static void test_reverse_sync_edges(void **state)
{
    (void)state;
    PGconn *c = T.db->c;
    itest_exec_ok(c, "CREATE TABLE e_num (k numeric PRIMARY KEY, v text);"
                     "CREATE TABLE e_uq (id int PRIMARY KEY, email text UNIQUE);"
                     "CREATE TABLE e_ident (id int PRIMARY KEY, n bigint GENERATED ALWAYS AS IDENTITY, v text);"
                     "CREATE TABLE e_self (id int PRIMARY KEY, par int REFERENCES e_self, v int CHECK (v < 100));"
                     "CREATE TABLE e_self_shadow (id int PRIMARY KEY, par int REFERENCES e_self_shadow, v int, "
                     "  _shadow_version integer DEFAULT 1, _shadow_created_at timestamptz DEFAULT now(), "
                     "  _shadow_source_table text, _shadow_migration_id text, "
                     "  _shadow_sync_status varchar(20) DEFAULT 'pending', _shadow_last_sync timestamptz, "
                     "  _shadow_validation_hash varchar(64));"
                     "CREATE TABLE e_tr (id int PRIMARY KEY, v int CHECK (v < 100));"
                     "CREATE TABLE e_tr_shadow (LIKE e_self_shadow INCLUDING DEFAULTS);"
                     "ALTER TABLE e_tr_shadow DROP COLUMN par, ADD PRIMARY KEY (id);"
                     "INSERT INTO e_num VALUES (1.0, 'a'); INSERT INTO e_uq VALUES (1, 'x'), (2, 'y');"
                     "INSERT INTO e_ident (id, v) VALUES (1, 'a'); INSERT INTO e_tr VALUES (1, 1), (2, 2);");
    char *schema = itest_install_sql(), *script = NULL;
    assert_true(asprintf(&script,
                         "BEGIN;\n%s\n"
                         "SELECT pgshadow.register_table('public', t, NULL, '_shadow', 'edge', '{}') "
                         "FROM unnest(ARRAY['e_num', 'e_uq', 'e_ident', 'e_self', 'e_tr']) t;\n"
                         "SELECT pgshadow.finish_install('edge');\nCOMMIT;\n",
                         schema) > 0);
    itest_exec_ok(c, script);
    free(script);
    free(schema);
    for (int i = 0; i < 10; i++)
        itest_exec_ok(c, "SELECT * FROM pgshadow.backfill_step('edge', 10000)");
    itest_exec_ok(c, "SELECT * FROM pgshadow.apply_batch('edge', 10000)");
    /* a narrower column on the way back refuses, until reverse_columns accepts the cast */
    itest_exec_ok(c, "ALTER TABLE e_num_shadow ALTER COLUMN v TYPE varchar(20)");
    itest_exec_ok(c, "ALTER TABLE e_num ALTER COLUMN v TYPE varchar(10)");
    itest_expect_sql(c, "SELECT action ~ 'column v: the new column is character varying\\(20\\), the legacy one "
                        "character varying\\(10\\)' AND NOT ok FROM pgshadow.promote_plan('edge') "
                        "WHERE kind = 'reverse sync' AND table_name = 'e_num'", "t");
    itest_exec_ok(c, "SELECT pgshadow.set_reverse_columns('public', 'e_num', '{\"v\": \"p.v\"}')");
    itest_expect_sql(c, "SELECT bool_and(ok) FROM pgshadow.promote_plan('edge')", "t");
    itest_exec_ok(c, "UPDATE pgshadow.cutover SET status = 'awaiting_decision' WHERE migration_id = 'edge'");
    itest_exec_ok(c, "SELECT pgshadow.promote('edge', (SELECT rev FROM pgshadow.cutover WHERE migration_id = 'edge'),"
                     " 2000, 3)");
    itest_exec_ok(c, "BEGIN; DELETE FROM e_num WHERE k = 1; INSERT INTO e_num VALUES (1.00, 'b'); COMMIT;"
                     "BEGIN; UPDATE e_uq SET email = 'tmp' WHERE id = 1; UPDATE e_uq SET email = 'x' WHERE id = 2;"
                     "  UPDATE e_uq SET email = 'y' WHERE id = 1; COMMIT;"
                     "UPDATE e_ident SET v = 'b'; INSERT INTO e_ident (id, v) VALUES (2, 'c');"
                     "INSERT INTO e_self VALUES (109, NULL, 1), (1010, 109, 1), (2020, NULL, 500);"
                     "TRUNCATE e_tr; INSERT INTO e_tr VALUES (6, 600), (7, 7);");
    for (int i = 0; i < 5; i++)
        itest_exec_ok(c, "SELECT * FROM pgshadow.apply_batch('edge', 1000)");
    itest_expect_sql(c, "SELECT count(*) FROM pgshadow.change_log", "0");
    itest_expect_sql(c, "SELECT k::text || ' ' || v FROM e_num_legacy", "1.00 b");
    itest_expect_sql(c, "SELECT string_agg(id || email, ',' ORDER BY id) FROM e_uq_legacy", "1y,2x");
    itest_expect_sql(c, "SELECT string_agg(id || v, ',' ORDER BY id) FROM e_ident_legacy", "1b,2c");
    itest_expect_sql(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM e_self_legacy", "109,1010");
    itest_expect_sql(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM e_tr_legacy", "7");
    itest_expect_sql(c, "SELECT string_agg(t.table_name || q.key::text || q.sqlstate, ',' ORDER BY t.table_name) "
                        "FROM pgshadow.quarantine q JOIN pgshadow.tables t USING (table_id)",
                     "e_self{2020}23514,e_tr{6}23514");
    /* FORCE ROW LEVEL SECURITY on a new table: its reverse sync waits (its
     * entry stays in the log, the revert plan says why), the other tables
     * go on; without it, it catches up */
    itest_exec_ok(c, "ALTER TABLE e_num ENABLE ROW LEVEL SECURITY; ALTER TABLE e_num FORCE ROW LEVEL SECURITY;"
                     "UPDATE e_num SET v = 'c'; UPDATE e_uq SET email = 'z' WHERE id = 1");
    itest_exec_ok(c, "SELECT * FROM pgshadow.apply_batch('edge', 1000)");
    itest_expect_sql(c, "SELECT (SELECT count(*) FROM pgshadow.change_log) || ' ' || "
                        "(SELECT email FROM e_uq_legacy WHERE id = 1) || ' ' || (SELECT v FROM e_num_legacy)",
                     "1 z b");
    itest_expect_sql(c, "SELECT action ~ 'FORCE ROW LEVEL SECURITY' AND NOT ok FROM pgshadow.revert_plan('edge') "
                        "WHERE table_name = 'e_num' AND kind = 'reverse sync'", "t");
    itest_exec_ok(c, "ALTER TABLE e_num NO FORCE ROW LEVEL SECURITY");
    itest_exec_ok(c, "SELECT * FROM pgshadow.apply_batch('edge', 1000)");
    itest_expect_sql(c, "SELECT (SELECT count(*) FROM pgshadow.change_log) || ' ' || (SELECT v FROM e_num_legacy)",
                     "0 c");
    /* a view the revert cannot re-create refuses it in the plan */
    itest_exec_ok(c, "ALTER TABLE e_uq ADD COLUMN extra int; CREATE VIEW e_uq_extra AS SELECT id, extra FROM e_uq");
    itest_expect_sql(c, "SELECT ok FROM pgshadow.revert_plan('edge') WHERE object = 'public.e_uq_extra'", "f");
}

/* Promote plans before it takes its locks and plans again under them only
 * when _swap_fingerprint (the catalog rows its plan reads) changed: every
 * kind of change the plan reads changes the digest (a view, a grant, a
 * column grant, a comment, a trigger enabled, a policy, a foreign key of
 * another table, a publication, a rename), and nothing else does
 * (ANALYZE, VACUUM, writes). */
static void test_swap_fingerprint(void **state)
{
    (void)state;
    PGconn *c = T.db->c;
    static const char FP[] =
        "SELECT pgshadow._swap_fingerprint(ARRAY['projects'::regclass::oid, 'tasks'::regclass::oid, "
        "'projects_shadow'::regclass::oid, 'tasks_shadow'::regclass::oid])";
    static const char *const same[] = {
        "ANALYZE projects", "VACUUM tasks", "UPDATE projects SET budget = budget + 1 WHERE id < 10",
        "INSERT INTO tasks (project_id, title) VALUES (1, 'fp')", NULL};
    static const char *const changes[] = {
        "CREATE VIEW fp_view AS SELECT id FROM tasks",
        "CREATE OR REPLACE VIEW fp_view AS SELECT id, title FROM tasks",
        "DROP VIEW fp_view",
        "GRANT INSERT ON projects TO " READER,
        "GRANT SELECT (n) ON tasks TO " READER,
        "COMMENT ON COLUMN projects.name IS 'fp'",
        "ALTER TABLE tasks DISABLE TRIGGER tasks_stamp",
        "CREATE POLICY fp_pol ON tasks USING (true)",
        "CREATE TABLE fp_child (id int REFERENCES projects)",
        "CREATE PUBLICATION fp_pub FOR TABLE tasks",
        "ALTER TABLE projects_shadow RENAME COLUMN name TO name2",
        NULL};
    char *prev = itest_query(c, FP);
    for (int i = 0; same[i]; i++) {
        itest_exec_ok(c, same[i]);
        char *now = itest_query(c, FP);
        if (strcmp(now, prev) != 0)
            fail_msg("the fingerprint changed after: %s", same[i]);
        free(now);
    }
    for (int i = 0; changes[i]; i++) {
        itest_exec_ok(c, changes[i]);
        char *now = itest_query(c, FP);
        if (strcmp(now, prev) == 0)
            fail_msg("the fingerprint did not change after: %s", changes[i]);
        free(prev);
        prev = now;
    }
    free(prev);
    itest_exec_ok(c, "DROP PUBLICATION fp_pub");
}

#define T_(f) cmocka_unit_test_setup_teardown(f, db_setup, db_teardown)
#define L_(f) ITEST_LOAD_CASE(f, db_setup, db_teardown) /* skipped in the ASan build (itest.h) */

int main(void)
{
    const char *const need[] = {"PGSHADOW_TEST_CONNINFO", "PGSHADOW_TEST_PGBIN", "PGSHADOW_SRCDIR", "PGSHADOWD",
                                "PGSHADOWCTL", NULL};
    if (!itest_require_env("itest-promote", need))
        return 1;
    if (getenv("PGSHADOW_TEST_FILTER")) /* e.g. "test_promote_refused": one case while working on it */
        cmocka_set_test_filter(getenv("PGSHADOW_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        L_(test_promote_under_load_simple), L_(test_promote_under_load_prepared),
        T_(test_promote_long_reader),       T_(test_promote_refused),
        T_(test_promote_sigkill),           T_(test_finalize),
        T_(test_promote_finally_fails),     T_(test_revert_under_load),
        T_(test_revert_needs_reverse),      T_(test_reverse_sync_edges),
        T_(test_swap_fingerprint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
