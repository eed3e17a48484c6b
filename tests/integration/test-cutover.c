/*
 * test-cutover.c - the staged read-percentage cutover (issue #14;
 * src/cutover/, sql/87-cutover.sql, pgshadowctl start ... status, events)
 * end to end: the real pgshadowd and pgshadowctl against the real
 * PostgreSQL, two tables (items, notes), monitor.poll_interval 500ms, and
 * pgbench writing both tables (and reading items through read_from_shadow,
 * as an application would) all along: it must see no failed transaction.
 *
 *  1. full run: start, 1% -> 5% -> 20% -> 50% -> 100% at 2 s stages, each
 *     stage's event in order (exact texts), never a stage before its hold,
 *     both tables' read percent equal at every look and never falling, each
 *     percent change in the transaction of its event; awaiting_decision at
 *     100%; status --json and events --json parse (as jsonb) and say so;
 *  2. a trip of each policy, caused for real: (a) step_down: a shadow row
 *     changed behind the daemon's back, found by verify (repair off,
 *     max_diverged 0): "diverged rows 1 > 0 at stage 3, 20% (...): step down
 *     to stage 2, 5%"; repair turned on by a reload, verify repairs, the
 *     cutover climbs back to 20%; (b) rollback and (c) pause: apply blocked
 *     by a lock on the shadow while pgbench writes (max_sync_lag 2s):
 *     rolled_back at 0% (and start begins again), paused at 20% (and
 *     resume goes on);
 *  3. a stale dashboard (the metrics view renamed away: every poll fails)
 *     for longer than failures_to_trip polls: no hold earned, no failure
 *     counted, no trip; the stale time is not credited afterwards;
 *  4. SIGKILL mid-stage: a restarted daemon, then a standby started beside
 *     it, take over the same stage and percent with the earned hold;
 *  5. SIGHUP with a new schedule: one without the percent in force is
 *     refused (logged, the running schedule goes on, STATUS= says so), one
 *     with it is accepted (stage index remapped, percent unchanged, a
 *     'cutover schedule' event before anything decided on it);
 *  6. commands: an operator's are carried out (who and why recorded), a
 *     viewer's and a plain role's are refused (exit 3), as is one the state
 *     machine refuses (pause when not_started), with the reason.
 *
 * Every wait polls with a generous deadline (ASan, a busy machine). The
 * only fixed sleep is the stale window of 3, which must be watched.
 * PGSHADOW_TEST_FILTER (a cmocka pattern) runs some cases only. The load
 * (itest_bench), the roles and the teardown's parts are itest.h's; the
 * helpers only these cases use (the start, the waits on the cutover row)
 * are kept here. No case is a load case (ITEST_LOAD_CASE): the load runs
 * beside what each case is about, and every case runs in both builds.
 *
 * Env: as every integration test (itest.h), and PGSHADOW_TEST_PGBIN.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itest.h"

#define MIG "itest_cutover"
#define OP "ps_co_op"     /* LOGIN, member of pgshadow_operator */
#define VIEW "ps_co_view" /* LOGIN, member of pgshadow_viewer */
#define NOBODY "ps_co_nobody"
#define WAIT_MS 90000
#define POLL_MS 500

static struct {
    itest_db *db;
    char dir[64], cfg[128];
    char *ci;
    itest_bench bench;
    itest_daemon a, b;
    itest_daemon *d; /* the one whose log a failure shows */
} T;

/* The daemon's config: what a test changes, the rest fixed. */
typedef struct opts {
    const char *stages;  /* a YAML flow list */
    const char *on_trip; /* NULL: step_down */
    int failures;        /* 0: 3 */
    const char *verify;  /* verify.interval, NULL: 0s (off) */
    bool repair;
    const char *sample;  /* verify.sample_interval, NULL: 0s (off) */
    const char *max_lag; /* NULL: 30s */
    const char *user;    /* NULL: the superuser */
} opts;

static void write_cfg(const char *path, const opts *o)
{
    char *ci = o->user ? itest_conninfo_as(T.db->name, o->user) : itest_conninfo_db(T.db->name);
    char *yaml = NULL, tmp[160];
    assert_true(asprintf(&yaml,
                         "database:\n  conninfo: \"%s\"\n"
                         "migration:\n  id: " MIG "\n  tables:\n    - name: items\n    - name: notes\n"
                         "sync:\n  batch_delay: 10ms\n  catchup_interval: 250ms\n"
                         "verify:\n  interval: %s\n  repair: %s\n  sample_interval: %s\n  chunk_rows: 2000\n"
                         "monitor:\n  poll_interval: %dms\n"
                         "cutover:\n  gates:\n    max_sync_lag: %s\n    max_diverged: 0\n"
                         "    max_latency_ratio: 1000\n"
                         "  failures_to_trip: %d\n  on_trip: %s\n  stages: %s\n"
                         "metrics:\n  listen: \"\"\n",
                         ci, o->verify ? o->verify : "0s", o->repair ? "true" : "false",
                         o->sample ? o->sample : "0s", POLL_MS, o->max_lag ? o->max_lag : "30s",
                         o->failures ? o->failures : 3, o->on_trip ? o->on_trip : "step_down",
                         o->stages) > 0);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(itest_write_file(tmp, yaml), 0);
    assert_int_equal(rename(tmp, path), 0); /* a reload never reads half a file */
    free(yaml);
    free(ci);
}

static int db_setup(void **state)
{
    (void)state;
    memset(&T, 0, sizeof T);
    T.a = T.b = (itest_daemon)ITEST_DAEMON_INIT;
    T.db = itest_db_new("pgshadow_cutover");
    T.ci = itest_conninfo_db(T.db->name);
    snprintf(T.dir, sizeof T.dir, "/tmp/itest-cutover-XXXXXX");
    assert_non_null(mkdtemp(T.dir));
    snprintf(T.cfg, sizeof T.cfg, "%s/pgshadow.yaml", T.dir);
    itest_exec_ok(T.db->c, "CREATE TABLE items (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);"
                           "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 2000) g;"
                           "CREATE TABLE notes (id int PRIMARY KEY, body text);"
                           "INSERT INTO notes SELECT g, 'b' || g FROM generate_series(1, 500) g;");
    char *schema = itest_install_sql(), *script = NULL;
    assert_true(asprintf(&script,
                         "BEGIN;\n%s\n"
                         "SELECT pgshadow.register_table('public', 'items', NULL, '_shadow', '" MIG "', '{}');\n"
                         "SELECT pgshadow.register_table('public', 'notes', NULL, '_shadow', '" MIG "', '{}');\n"
                         "SELECT pgshadow.finish_install('" MIG "');\nCOMMIT;\n",
                         schema) > 0);
    itest_exec_ok(T.db->c, script);
    free(script);
    free(schema);
    itest_role_ensure(T.db->c, OP, "pgshadow_operator");
    itest_role_ensure(T.db->c, VIEW, "pgshadow_viewer");
    itest_role_ensure(T.db->c, NOBODY, NULL);
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

/* ---- helpers ---------------------------------------------------------- */

/* What a failure shows: the end of the daemon's log and the cutover's row
 * and events. */
static void dump(void)
{
    if (T.d) {
        char *log = itest_daemon_log(T.d);
        size_t n = strlen(log);
        fprintf(stderr, "---- daemon log (%s), last part:\n%s\n", T.d->log, log + (n > 12000 ? n - 12000 : 0));
        free(log);
    }
    char *v = itest_value_on(T.ci, "SELECT status || ' stage ' || stage || ' ' || percent || '% hold ' || "
                                   "hold_earned || ' failures ' || failures FROM pgshadow.cutover");
    fprintf(stderr, "---- cutover: %s\n", v ? v : "?");
    free(v);
    v = itest_value_on(T.ci, "SELECT string_agg(event_id || ' ' || what || ': ' || coalesce(why, ''), E'\\n' "
                             "ORDER BY event_id) FROM pgshadow.events WHERE what LIKE 'cutover %'");
    fprintf(stderr, "---- cutover events:\n%s\n", v ? v : "?");
    free(v);
}

static void expect_true(const char *sql, int64_t ms)
{
    if (itest_wait_true(T.ci, sql, ms))
        return;
    dump();
    fail_msg("not true after %lld ms: %s", (long long)ms, sql);
}

/* expect_true of a printf-formatted query, WAIT_MS */
static void wait_for(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void wait_for(const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    expect_true(sql, WAIT_MS);
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

static long qlong(const char *sql)
{
    return itest_query_long(T.db->c, sql);
}

#define HOLD_EXPR "(extract(epoch FROM hold_earned) * 1000)::bigint"
#define HOLD_SQL "SELECT " HOLD_EXPR " FROM pgshadow.cutover"
#define WHERE_SQL "SELECT status || ' ' || stage || ' ' || percent FROM pgshadow.cutover"
#define PERCENTS_SQL "SELECT pgshadow.read_percent('items') || '/' || pgshadow.read_percent('notes')"
#define LAST_EVENT_SQL "SELECT coalesce(max(event_id), 0) FROM pgshadow.events"

/* The 'cutover ...' events after event_id from, as "what: why" lines, are
 * exactly want. */
static void expect_events(long from, const char *want)
{
    char sql[400];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(string_agg(what || ': ' || why, E'\\n' ORDER BY event_id), '') "
             "FROM pgshadow.events WHERE what LIKE 'cutover %%' AND event_id > %ld",
             from);
    expect(sql, want);
}

/* pgshadowctl -c cfg a [b [c [d]]]: exit code want, and text (unless NULL)
 * in its stdout or stderr. Its stdout, malloc'd. */
static char *ctl(const char *cfg, int want, const char *text, const char *a, const char *b, const char *c,
                 const char *d)
{
    itest_run r;
    itest_run_ctl(&r, cfg, a, b, c, d, (char *)NULL);
    if (r.rc != want || (text && !strstr(r.out, text) && !strstr(r.err, text))) {
        dump();
        fail_msg("pgshadowctl %s %s: rc %d (want %d), want '%s' in:\n%s\n%s", a, b ? b : "", r.rc, want,
                 text ? text : "", r.out, r.err);
    }
    free(r.err);
    return r.out;
}

static void ctl_ok(const char *cfg, int want, const char *text, const char *a, const char *b, const char *c)
{
    free(ctl(cfg, want, text, a, b, c, NULL));
}

static void daemon_up(itest_daemon *d, const char *tag, const char *cfg, bool sock)
{
    *d = (itest_daemon)ITEST_DAEMON_INIT;
    itest_daemon_paths(d, T.dir, tag);
    if (!sock)
        d->sock[0] = '\0';
    d->log_level = "info";
    assert_int_equal(itest_daemon_start(d, cfg), 0);
    T.d = d;
}

/* ---- the write load ---------------------------------------------------- */

/* Both tables written, items read as an application routes it; ids above
 * 1900 are never written (a test breaks those behind the daemon's back). */
static const char PGBENCH_SCRIPT[] =
    "\\set id random(1, 1900)\n"
    "\\set nid random(1, 450)\n"
    "BEGIN;\n"
    "UPDATE items SET v = md5(random()::text), n = n + 1 WHERE id = :id;\n"
    "UPDATE notes SET body = md5(random()::text) WHERE id = :nid;\n"
    "END;\n"
    "SELECT CASE WHEN pgshadow.read_from_shadow('items', :id::text) "
    "THEN (SELECT v FROM items_shadow WHERE id = :id) ELSE (SELECT v FROM items WHERE id = :id) END;\n";

/* as the superuser, 2 clients at 100 tps in all (itest_bench_start) */
static void load_start(void)
{
    itest_bench_start(&T.bench, T.dir, PGBENCH_SCRIPT, T.ci, NULL);
}

static void load_stop(void)
{
    itest_bench_stop(&T.bench, "test-cutover", NULL);
}

/* ---- getting to a stage --------------------------------------------------- */

/* Daemon A up with cfg, the backfill done, the load running. */
static void up_and_loaded(const char *cfg)
{
    daemon_up(&T.a, "a", cfg, false);
    expect_true("SELECT bool_and(backfill_state = 'done') FROM pgshadow.tables", WAIT_MS);
    load_start();
}

/* pgshadowctl start as the operator: refused while the daemon has not read
 * the state or the dashboard is not READY_FOR_CUTOVER yet; then done. */
static void start_cutover(const char *cfg)
{
    expect_true("SELECT (gates ->> 'ready')::boolean AND (gates ->> 'fresh')::boolean FROM pgshadow.cutover",
                WAIT_MS);
    int64_t end = itest_now_ms() + WAIT_MS;
    for (;;) {
        itest_run r;
        itest_run_ctl(&r, cfg, "start", NULL);
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

static void wait_where(const char *status_stage_percent)
{
    wait_for("SELECT status || ' ' || stage || ' ' || percent = '%s' FROM pgshadow.cutover", status_stage_percent);
}

/* ---- 1. the full run ------------------------------------------------------ */

/* A jsonb expression over j, pgshadowctl's JSON output parsed by the
 * server (so it is JSON, not just text that looks like it), gives want. */
static void expect_json(const char *json, const char *expr, const char *want)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT (%s)::text FROM (SELECT $1::jsonb AS j) x", expr);
    PGresult *res = PQexecParams(T.db->c, sql, 1, NULL, &json, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || strcmp(PQgetvalue(res, 0, 0), want) != 0)
        fail_msg("%s: want %s, got %s (%s) in:\n%s", expr, want,
                 PQresultStatus(res) == PGRES_TUPLES_OK ? PQgetvalue(res, 0, 0) : "?", PQresultErrorMessage(res),
                 json);
    PQclear(res);
}

static void test_full_run(void **state)
{
    (void)state;
    write_cfg(T.cfg, &(opts){.stages = "[{percent: 1, hold: 2s}, {percent: 5, hold: 2s}, "
                                       "{percent: 20, hold: 2s}, {percent: 50, hold: 2s}, "
                                       "{percent: 100, hold: 2s}]",
                             .verify = "2s", .repair = true, .sample = "1s"});
    up_and_loaded(T.cfg);
    start_cutover(T.cfg);
    long rev0 = qlong("SELECT rev FROM pgshadow.cutover");
    int64_t t0 = itest_now_ms();

    /* watch the percent the applications see while it climbs */
    int last = 0, looks = 0;
    int64_t end = itest_now_ms() + WAIT_MS;
    for (;;) {
        char *v = itest_value_on(T.ci, "SELECT pgshadow.read_percent('items') || ' ' || "
                                       "pgshadow.read_percent('notes') || ' ' || status FROM pgshadow.cutover");
        assert_non_null(v);
        int pi = -1, pn = -2;
        char st[32] = "";
        sscanf(v, "%d %d %31s", &pi, &pn, st);
        if (pi != pn || pi < last) {
            dump();
            fail_msg("read percents items %d, notes %d after %d%%", pi, pn, last);
        }
        last = pi;
        looks++;
        free(v);
        if (strcmp(st, "awaiting_decision") == 0)
            break;
        if (itest_now_ms() > end || strcmp(st, "running") != 0) {
            dump();
            fail_msg("not awaiting_decision (%s) after %d looks", st, looks);
        }
        itest_sleep_ms(100);
    }
    /* the state is written once or twice a poll (the poll, the timer), not
     * in a loop */
    long writes = qlong("SELECT rev FROM pgshadow.cutover") - rev0, polls = (itest_now_ms() - t0) / POLL_MS + 1;
    if (writes > 3 * polls)
        fail_msg("%ld writes of the state in %ld polls", writes, polls);
    expect(PERCENTS_SQL, "100/100");
    expect(WHERE_SQL, "awaiting_decision 5 100");
    expect_events(0, "cutover start: start: stage 1, 1%\n"
                     "cutover stage: stage 1, 1% held 2s green: stage 2, 5%\n"
                     "cutover stage: stage 2, 5% held 2s green: stage 3, 20%\n"
                     "cutover stage: stage 3, 20% held 2s green: stage 4, 50%\n"
                     "cutover stage: stage 4, 50% held 2s green: stage 5, 100%\n"
                     "cutover awaiting_decision: stage 5, 100% held 2s green: awaiting the decision: "
                     "pgshadowctl promote, rollback or extend DURATION");
    /* no stage shorter than its hold (a little slack: the events' clock is
     * the server's, the hold the daemon's) */
    expect("SELECT bool_and(d >= interval '1900 ms') FROM (SELECT at - lag(at) OVER (ORDER BY event_id) d "
           "FROM pgshadow.events WHERE what LIKE 'cutover %') x WHERE d IS NOT NULL",
           "t");
    /* each percent change and both tables' flags: one transaction (xmin) */
    expect("SELECT count(*) || '/' || count(*) FILTER (WHERE (SELECT count(*) FROM pgshadow.events f "
           "WHERE f.what = 'flag' AND f.xmin = c.xmin AND f.after ->> ('read_from_shadow_' || f.table_name) "
           "= c.after ->> 'percent') = 2) FROM pgshadow.events c WHERE c.what LIKE 'cutover %' "
           "AND c.before ->> 'percent' <> c.after ->> 'percent'",
           "5/5");

    char *out = ctl(T.cfg, 0, NULL, "status", "--json", NULL, NULL);
    assert_non_null(strstr(out, "\"state\": \"awaiting_decision\""));
    expect_json(out, "j ->> 'state'", "awaiting_decision");
    expect_json(out, "(j ->> 'percent') || '/' || (j ->> 'stage') || '/' || (j ->> 'stages')", "100/5/5");
    expect_json(out, "j -> 'gates' -> 'sync_lag' ->> 'color'", "green");
    expect_json(out, "j -> 'gates' -> 'latency_ratio' ->> 'limit'", "1000");
    free(out);
    out = ctl(T.cfg, 0, "awaiting_decision", "status", NULL, NULL, NULL);
    free(out);
    out = ctl(T.cfg, 0, NULL, "events", "--since", "10m", "--json");
    expect_json(out, "(SELECT string_agg(e ->> 'what', ',') FROM jsonb_array_elements(j) e "
                     "WHERE e ->> 'what' LIKE 'cutover %')",
                "cutover start,cutover stage,cutover stage,cutover stage,cutover stage,cutover awaiting_decision");
    expect_json(out, "(SELECT count(*) FROM jsonb_array_elements(j) e WHERE e ->> 'what' = 'flag')", "10");
    free(out);
    load_stop();
    fprintf(stderr, "test-cutover: full run: %d looks at the percents, %ld writes of the state in %ld polls\n",
            looks, writes, polls);
}

/* ---- 2. trips ------------------------------------------------------------- */

static const char TRIP_STAGES[] =
    "[{percent: 1, hold: 1s}, {percent: 5, hold: 1s}, {percent: 20, hold: 10m}, {percent: 100, hold: 1s}]";

static void wait_trip(long from)
{
    wait_for("SELECT EXISTS (SELECT 1 FROM pgshadow.events WHERE what = 'cutover trip' AND event_id > %ld)", from);
}

/* (a) a divergence, found by verify: step down; repaired: up again */
static void test_trip_step_down(void **state)
{
    (void)state;
    /* failures_to_trip x poll (10 s) gives verify the time to repair
     * before a second trip */
    opts o = {.stages = TRIP_STAGES, .failures = 20, .verify = "1s", .repair = false};
    write_cfg(T.cfg, &o);
    up_and_loaded(T.cfg);
    start_cutover(T.cfg);
    wait_where("running 3 20");
    long from = qlong(LAST_EVENT_SQL);
    int64_t t0 = itest_now_ms();
    itest_exec_ok(T.db->c, "UPDATE items_shadow SET v = 'broken behind its back' WHERE id = 2000");
    wait_trip(from);
    int64_t t_trip = itest_now_ms();
    o.repair = true; /* verify repairs it now */
    write_cfg(T.cfg, &o);
    kill(T.a.pid, SIGHUP);
    expect("SELECT why || ' | ' || (before ->> 'percent') || ' -> ' || (after ->> 'percent') FROM pgshadow.events "
           "WHERE what = 'cutover trip' ORDER BY event_id LIMIT 1",
           "diverged rows 1 > 0 at stage 3, 20% (20 polls red): step down to stage 2, 5% | 20 -> 5");
    expect("SELECT count(*) FROM pgshadow.events e, (SELECT xmin FROM pgshadow.events WHERE what = 'cutover trip' "
           "ORDER BY event_id LIMIT 1) t WHERE e.what = 'flag' AND e.xmin = t.xmin "
           "AND e.after ->> ('read_from_shadow_' || e.table_name) = '5'",
           "2");
    expect_true("SELECT state = 'repaired' FROM pgshadow.divergence WHERE key = '{2000}'", WAIT_MS);
    int64_t t_fixed = itest_now_ms();
    wait_where("running 3 20");
    /* one trip, then up again: "cutover stage: stage 2, 5% held 1s green:
     * stage 3, 20%"; a repair slower than failures_to_trip polls (a busy
     * machine, ASan) steps down again first, for the same reason */
    long trips = qlong("SELECT count(*) FROM pgshadow.events WHERE what = 'cutover trip'");
    expect("SELECT count(*) FROM pgshadow.events WHERE what = 'cutover trip' AND why NOT LIKE "
           "'diverged rows 1 > 0 at stage _, %'", "0");
    expect("SELECT why FROM pgshadow.events WHERE what LIKE 'cutover %' ORDER BY event_id DESC LIMIT 1",
           "stage 2, 5% held 1s green: stage 3, 20%");
    expect(PERCENTS_SQL, "20/20");
    expect("SELECT v FROM items_shadow WHERE id = 2000", "v2000");
    load_stop();
    fprintf(stderr, "test-cutover: step down: tripped %lld ms after the break, repaired %lld ms after the trip "
            "(%ld trip(s))\n", (long long)(t_trip - t0), (long long)(t_fixed - t_trip), trips);
}

/* (b), (c): apply blocked by a lock on the shadow while pgbench writes */
static void lag_trip(const char *on_trip, const char *want_why_like)
{
    write_cfg(T.cfg, &(opts){.stages = TRIP_STAGES, .on_trip = on_trip, .failures = 2, .max_lag = "2s"});
    up_and_loaded(T.cfg);
    start_cutover(T.cfg);
    wait_where("running 3 20");
    long from = qlong(LAST_EVENT_SQL);
    PGconn *locker = itest_connect(T.ci);
    itest_exec_ok(locker, "BEGIN; LOCK TABLE items_shadow IN EXCLUSIVE MODE");
    int64_t t0 = itest_now_ms();
    wait_trip(from);
    int64_t t_trip = itest_now_ms();
    itest_exec_ok(locker, "COMMIT");
    PQfinish(locker);
    wait_for("SELECT count(*) = 1 FROM pgshadow.events WHERE what = 'cutover trip' AND why LIKE '%s'", want_why_like);
    /* apply catches up, and the daemon sees it */
    expect_true("SELECT (gates ->> 'fresh')::boolean AND gates::text NOT LIKE '%\"red\"%' "
                "AND gates_at > now() - interval '2 s' FROM pgshadow.cutover", WAIT_MS);
    fprintf(stderr, "test-cutover: %s: tripped %lld ms after the lock\n", on_trip, (long long)(t_trip - t0));
}

static void test_trip_rollback(void **state)
{
    (void)state;
    lag_trip("rollback", "sync lag % s > 2 s at stage 3, 20% (2 polls red): rollback: reads back on the primary (0%)");
    expect(WHERE_SQL, "rolled_back 0 0");
    expect(PERCENTS_SQL, "0/0");
    /* rolled back: start begins again at the first stage */
    start_cutover(T.cfg);
    wait_where("running 2 5");
    load_stop();
}

static void test_trip_pause(void **state)
{
    (void)state;
    lag_trip("pause", "sync lag % s > 2 s at stage 3, 20% (2 polls red): paused at 20%");
    expect(WHERE_SQL, "paused 3 20");
    expect(PERCENTS_SQL, "20/20");
    /* green again (lag_trip saw it), but paused earns nothing and goes
     * nowhere: two more polls evaluated */
    long hold = qlong(HOLD_SQL);
    for (int i = 0; i < 2; i++) {
        char *at = itest_query(T.db->c, "SELECT gates_at FROM pgshadow.cutover");
        wait_for("SELECT gates_at > '%s' FROM pgshadow.cutover", at);
        free(at);
    }
    expect(WHERE_SQL, "paused 3 20");
    assert_int_equal(qlong(HOLD_SQL), hold);
    ctl_ok(T.cfg, 0, "resumed at stage 3, 20%", "resume", NULL, NULL);
    wait_for("SELECT " HOLD_EXPR " > %ld FROM pgshadow.cutover", hold);
    expect(WHERE_SQL, "running 3 20");
    load_stop();
}

/* ---- 3. a stale dashboard --------------------------------------------------- */

static void test_stale_earns_nothing(void **state)
{
    (void)state;
    write_cfg(T.cfg, &(opts){.stages = "[{percent: 1, hold: 10m}, {percent: 100, hold: 1s}]"});
    up_and_loaded(T.cfg);
    start_cutover(T.cfg);
    expect_true("SELECT hold_earned >= interval '1 s' FROM pgshadow.cutover", WAIT_MS);
    long from = qlong(LAST_EVENT_SQL);
    size_t at = itest_daemon_log_size(&T.a);
    /* every poll fails from now on */
    itest_exec_ok(T.db->c, "ALTER VIEW public.migration_success_metrics RENAME TO msm_away");
    expect_true("SELECT NOT (gates ->> 'fresh')::boolean FROM pgshadow.cutover", WAIT_MS);
    long h1 = qlong(HOLD_SQL);
    /* three times failures_to_trip polls: watched, so slept */
    itest_sleep_ms(9 * POLL_MS);
    if (!itest_daemon_wait_log(&T.a, at, "dashboard: stale (poll failed", WAIT_MS))
        fail_msg("the polls did not fail");
    assert_int_equal(qlong(HOLD_SQL), h1);
    expect("SELECT status || ' ' || percent || ' ' || failures || ' ' || NOT (gates ->> 'fresh')::boolean "
           "FROM pgshadow.cutover",
           "running 1 0 true");
    expect_events(from, "");
    /* fresh again: hold grows, but the stale time is not credited */
    int64_t t0 = itest_now_ms();
    itest_exec_ok(T.db->c, "ALTER VIEW public.msm_away RENAME TO migration_success_metrics");
    wait_for("SELECT " HOLD_EXPR " > %ld FROM pgshadow.cutover", h1);
    long h3 = qlong(HOLD_SQL);
    int64_t t3 = itest_now_ms();
    if (h3 - h1 > t3 - t0 + 100)
        fail_msg("%ld ms of hold earned in the %lld ms since the dashboard came back", h3 - h1,
                 (long long)(t3 - t0));
    expect(PERCENTS_SQL, "1/1");
    load_stop();
}

/* ---- 4. SIGKILL mid-stage ------------------------------------------------------ */

/* dead is SIGKILLed at stage 2 (5%); next (started here when start) leads,
 * reads the state and goes on with the hold dead had written, never from 0.
 * (The old leader's lock, and so the new one's read, waits for a write the
 * old one had in flight.) */
static void takes_over(itest_daemon *dead, itest_daemon *next, const char *tag, bool start)
{
    long from = qlong(LAST_EVENT_SQL), h = qlong(HOLD_SQL), base = -1, now = -1;
    int64_t t0 = itest_now_ms();
    itest_daemon_kill(dead, SIGKILL);
    if (start)
        daemon_up(next, tag, T.cfg, false);
    T.d = next;
    if (!itest_daemon_wait_log(next, 0, "(the state of migration " MIG ", as read)", WAIT_MS))
        fail_msg("%s did not read the cutover state", tag);
    int64_t t_read = itest_now_ms(), end = t_read + WAIT_MS;
    for (;;) {
        char *w = itest_value_on(T.ci, "SELECT status || ' ' || stage || ' ' || pgshadow.read_percent('items') || "
                                       "' ' || pgshadow.read_percent('notes') || ' ' || " HOLD_EXPR
                                       " FROM pgshadow.cutover");
        assert_non_null(w);
        char st[32] = "";
        int stage = 0, pi = 0, pn = 0;
        sscanf(w, "%31s %d %d %d %ld", st, &stage, &pi, &pn, &now);
        if (strcmp(st, "running") || stage != 2 || pi != 5 || pn != 5 || now < h - 2 * POLL_MS || now < base) {
            dump();
            fail_msg("after the kill, %s: %s (hold before: %ld ms, as read: %ld ms)", tag, w, h, base);
        }
        free(w);
        if (base < 0)
            base = now; /* what the new leader read */
        else if (now > base)
            break; /* and earns on it */
        if (itest_now_ms() > end) {
            dump();
            fail_msg("%s earns no hold", tag);
        }
        itest_sleep_ms(100);
    }
    if (now > base + (itest_now_ms() - t0)) /* earned since the read, so since the kill */
        fail_msg("hold %ld ms, %ld as read; the kill %lld ms ago", now, base, (long long)(itest_now_ms() - t0));
    expect_events(from, ""); /* no start, no stage, no reset */
    fprintf(stderr, "test-cutover: %s: hold %ld ms before the kill, %ld as read %lld ms later, then %ld\n", tag, h,
            base, (long long)(t_read - t0), now);
}

static void test_sigkill_resumes(void **state)
{
    (void)state;
    write_cfg(T.cfg, &(opts){.stages = "[{percent: 1, hold: 1s}, {percent: 5, hold: 10m}, {percent: 100, hold: 1s}]"});
    up_and_loaded(T.cfg);
    start_cutover(T.cfg);
    wait_where("running 2 5");
    expect_true("SELECT hold_earned >= interval '2 s' FROM pgshadow.cutover", WAIT_MS);
    /* the daemon restarted */
    itest_daemon_cleanup(&T.a);
    takes_over(&T.a, &T.b, "restarted", true);
    expect_true("SELECT hold_earned >= interval '3 s' FROM pgshadow.cutover", WAIT_MS);
    /* a standby beside it takes over */
    daemon_up(&T.a, "standby", T.cfg, false);
    if (!itest_daemon_wait_log(&T.a, 0, "standby: another pgshadowd holds the leader lock", WAIT_MS))
        fail_msg("no standby");
    takes_over(&T.b, &T.a, "standby", false);
    load_stop();
}

/* ---- 5. SIGHUP with a new schedule ---------------------------------------------- */

/* Some notify message at or after from contains needle. */
static int wait_status(itest_daemon *d, int from, const char *needle)
{
    int64_t end = itest_now_ms() + WAIT_MS;
    do {
        itest_daemon_drain(d);
        for (int i = from; i < d->n_msgs; i++)
            if (strstr(d->msgs[i], needle))
                return i;
        itest_sleep_ms(50);
    } while (itest_now_ms() < end);
    dump();
    fail_msg("no STATUS= with '%s'; last: %s", needle, d->n_msgs ? d->msgs[d->n_msgs - 1] : "(none)");
    return -1;
}

static void test_reload_schedule(void **state)
{
    (void)state;
    opts o = {.stages = "[{percent: 1, hold: 1s}, {percent: 5, hold: 1s}, {percent: 20, hold: 1h}, "
                        "{percent: 100, hold: 1s}]"};
    write_cfg(T.cfg, &o);
    daemon_up(&T.a, "a", T.cfg, true);
    expect_true("SELECT bool_and(backfill_state = 'done') FROM pgshadow.tables", WAIT_MS);
    load_start();
    start_cutover(T.cfg);
    wait_where("running 3 20");
    expect_true("SELECT hold_earned >= interval '3 s' FROM pgshadow.cutover", WAIT_MS);
    long from = qlong(LAST_EVENT_SQL);

    /* refused: no stage at 20% */
    itest_daemon_drain(&T.a);
    int m = T.a.n_msgs;
    size_t at = itest_daemon_log_size(&T.a);
    o.stages = "[{percent: 10, hold: 1s}, {percent: 30, hold: 1s}, {percent: 100, hold: 1s}]";
    write_cfg(T.cfg, &o);
    kill(T.a.pid, SIGHUP);
    at = itest_daemon_wait_log(&T.a, at, "cutover: reload: refused: the new schedule (10/1s 30/1s 100/1s) has "
                                         "no stage at 20%, the percent in force (stage 3 of 1/1s 5/1s 20/1h 100/1s)",
                               WAIT_MS);
    if (!at)
        fail_msg("no refusal");
    assert_int_equal(itest_daemon_log_count(&T.a, 0, "error: cutover: reload: refused", NULL), 1);
    long h = qlong(HOLD_SQL);
    /* the running schedule goes on: 4 stages, 1h at 20% */
    m = wait_status(&T.a, m, "cutover running stage 3/4 20%, hold ");
    wait_status(&T.a, m, "/1h");
    wait_for("SELECT " HOLD_EXPR " > %ld FROM pgshadow.cutover", h);
    expect(WHERE_SQL, "running 3 20");
    expect_events(from, "");

    /* accepted: 20% is stage 2 now, and its 2 s were held already. The
     * reload comes while a write of the state is in flight (held on the
     * row's lock): the stage is judged on what that write brings */
    PGconn *locker = itest_connect(T.ci);
    itest_exec_ok(locker, "BEGIN; SELECT 1 FROM pgshadow.cutover FOR UPDATE");
    expect_true("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%cutover_write%')", WAIT_MS);
    o.stages = "[{percent: 10, hold: 1s}, {percent: 20, hold: 2s}, {percent: 40, hold: 1h}, "
               "{percent: 60, hold: 1s}, {percent: 100, hold: 1s}]";
    write_cfg(T.cfg, &o);
    kill(T.a.pid, SIGHUP);
    if (!(at = itest_daemon_wait_log(&T.a, at, "notice: reload: configuration from ", WAIT_MS)))
        fail_msg("no reload");
    itest_exec_ok(locker, "COMMIT");
    PQfinish(locker);
    if (!itest_daemon_wait_log(&T.a, at, "notice: cutover: reload: schedule 1/1s 5/1s 20/1h 100/1s -> "
                                         "10/1s 20/2s 40/1h 60/1s 100/1s; stage 3 (20%) is now stage 2",
                               WAIT_MS))
        fail_msg("no reschedule");
    wait_where("running 3 40");
    expect_events(from, "cutover schedule: schedule 1/1s 5/1s 20/1h 100/1s -> 10/1s 20/2s 40/1h 60/1s 100/1s; "
                        "stage 3 (20%) is now stage 2\n"
                        "cutover stage: stage 2, 20% held 2s green: stage 3, 40%");
    expect("SELECT (before ->> 'stage') || ' ' || (before ->> 'percent') || ' -> ' || (after ->> 'stage') || ' ' "
           "|| (after ->> 'percent') FROM pgshadow.events WHERE what = 'cutover schedule'",
           "3 20 -> 2 20");
    wait_status(&T.a, m, "cutover running stage 3/5 40%, hold ");
    expect(PERCENTS_SQL, "40/40");
    load_stop();
}

/* ---- 6. who may command ----------------------------------------------------------- */

static void test_commands_and_roles(void **state)
{
    (void)state;
    const char *users[] = {NULL, OP, VIEW, NOBODY};
    char cfgs[4][160];
    for (int i = 0; i < 4; i++) { /* the daemon's (the superuser), the operator's, ... */
        snprintf(cfgs[i], sizeof cfgs[i], "%s/%s.yaml", T.dir, users[i] ? users[i] : "daemon");
        write_cfg(cfgs[i], &(opts){.stages = "[{percent: 1, hold: 1h}, {percent: 100, hold: 1s}]", .user = users[i]});
    }
    const char *op = cfgs[1], *view = cfgs[2], *nobody = cfgs[3];
    up_and_loaded(cfgs[0]);
    expect_true("SELECT (gates ->> 'ready')::boolean FROM pgshadow.cutover", WAIT_MS);

    /* the state machine refuses, with the reason */
    ctl_ok(op, 3, "pgshadowctl: pause: refused: pause: the cutover is not_started, not running", "pause", NULL, NULL);
    /* the database refuses: not operators */
    ctl_ok(view, 3, "pgshadowctl: start: refused: commands are queued by members of pgshadow_operator", "start",
           NULL, NULL);
    ctl_ok(nobody, 3, "refused: commands are queued by members of pgshadow_operator", "start", NULL, NULL);
    ctl_ok(nobody, 3, "refused", "rollback", NULL, NULL);
    expect(WHERE_SQL, "not_started 0 0");
    expect("SELECT string_agg(requested_by || ' ' || command || ' ' || state, ', ' ORDER BY command_id) "
           "FROM pgshadow.commands",
           OP " pause refused");
    /* a viewer reads */
    ctl_ok(view, 0, "not_started", "status", NULL, NULL);
    ctl_ok(view, 0, "pause refused", "events", NULL, NULL);

    /* the operator's commands are carried out */
    start_cutover(op);
    expect(WHERE_SQL, "running 1 1");
    ctl_ok(op, 0, "pause: paused at stage 1, 1%", "pause", "--reason", "a graph to look at");
    expect(WHERE_SQL, "paused 1 1");
    expect("SELECT who || ' | ' || why FROM pgshadow.events WHERE what = 'cutover pause'",
           OP " | paused at stage 1, 1% (reason: a graph to look at)");
    expect("SELECT who || ' | ' || why FROM pgshadow.events WHERE what = 'command pause done'",
           OP " | a graph to look at");
    ctl_ok(op, 0, "resumed at stage 1, 1%", "resume", NULL, NULL);
    ctl_ok(op, 0, "extend stage 1, 1% by 30m: holds 90m in all", "extend", "30m", NULL);
    expect_true("SELECT status = 'running' AND hold_extra = interval '30 min' FROM pgshadow.cutover", WAIT_MS);
    ctl_ok(op, 0, "step down from stage 1, 1% to 0%, paused", "step-down", NULL, NULL);
    expect(WHERE_SQL, "paused 0 0");
    expect(PERCENTS_SQL, "0/0");
    ctl_ok(op, 3, "step-down: refused: step-down: the cutover is paused at 0%: no stage to step down from",
           "step-down", NULL, NULL);
    ctl_ok(op, 0, "rollback from 0%: reads back on the primary (0%)", "rollback", NULL, NULL);
    expect(WHERE_SQL, "rolled_back 0 0");
    ctl_ok(op, 0, "abort at 0% (rolled_back): reads on the primary (0%), final", "abort", NULL, NULL);
    ctl_ok(op, 3, "start: refused: the cutover was aborted: that is final for this migration", "start", NULL, NULL);
    expect(WHERE_SQL, "aborted 0 0");
    expect("SELECT count(*) FROM pgshadow.events WHERE what LIKE 'cutover %' AND who <> '" OP "'", "0");
    load_stop();
}

#define T_(f) cmocka_unit_test_setup_teardown(f, db_setup, db_teardown)

int main(void)
{
    const char *const need[] = {"PGSHADOW_TEST_CONNINFO", "PGSHADOW_TEST_PGBIN", "PGSHADOW_SRCDIR", "PGSHADOWD",
                                "PGSHADOWCTL", NULL};
    if (!itest_require_env("itest-cutover", need))
        return 1;
    if (getenv("PGSHADOW_TEST_FILTER")) /* e.g. "test_trip_*": one case while working on it */
        cmocka_set_test_filter(getenv("PGSHADOW_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        T_(test_full_run),        T_(test_trip_step_down),  T_(test_trip_rollback),
        T_(test_trip_pause),      T_(test_stale_earns_nothing), T_(test_sigkill_resumes),
        T_(test_reload_schedule), T_(test_commands_and_roles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
