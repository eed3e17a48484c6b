/*
 * test-standby.c - the replication-lag throttle of pgshadowd against a real
 * physical streaming standby of the harness cluster (the policy itself,
 * ps_sync_throttle_for, is unit-tested in tests/unit/test-sync-policy.c).
 *
 * The standby is made with pg_basebackup -R over the primary's unix socket
 * (pg_hba: `local replication postgres trust`, tests/harness/pgcluster.sh),
 * listens only on a socket directory of its own and is delayed with
 * recovery_min_apply_delay = 4s (ALTER SYSTEM + reload on the standby). A
 * child process writes a row to the migrated table every 100 ms, so the
 * walsender keeps measuring replay_lag (it shows NULL once a standby has
 * caught up and nothing is written) and there are live changes to apply.
 *
 *  1. pgshadow.replication_lag_ms() climbs above 3 s (towards the 4 s delay);
 *  2. pgshadowd, started with throttling off (max_replication_lag 0s) on a
 *     table that needs its backfill (60000 rows, backfill_chunk 50), is
 *     reloaded with max_replication_lag 2s once the backfill has begun: it
 *     logs "exceeds max_replication_lag (2s)", STATUS says "backfill paused
 *     (replication lag ...)" without "apply slowed", backfill_rows and the
 *     copied rows stay put while the live rows still reach the shadow;
 *  3. a reload with max_replication_lag 1s puts the lag (about 4 s) above
 *     3 x the limit: "more than 3 x max_replication_lag", STATUS "apply
 *     slowed", the backfill still copies nothing, live rows still arrive
 *     (the pacing, one batch per catchup_interval, is not timed here: it is
 *     ps_sync_next's, unit-tested);
 *  4. the delay reset on the standby: "back under max_replication_lag", the
 *     backfill completes and the shadow equals the primary.
 *
 * As root, PostgreSQL (pg_basebackup, pg_ctl) runs as the `postgres` OS user,
 * as pgcluster.sh does. The teardown stops and removes the standby whatever
 * happened in the test.
 *
 * Env: PGSHADOW_TEST_CONNINFO, PGSHADOW_TEST_CLUSTER, PGSHADOW_TEST_PGBIN,
 * PGSHADOW_TEST_PGHOST, PGSHADOW_TEST_PGPORT, PGSHADOW_SRCDIR, PGSHADOWD,
 * PGSHADOWCTL.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "itest.h"

#define DB "pgshadow_itest_standby"
#define SEED_ROWS 60000
#define WAIT_MS 20000
/* the rest of the backfill (most of SEED_ROWS) once the lag is gone: a
 * liveness bound, not a speed target (WAIT_MS ran out at 83% in a full run
 * while other jobs loaded this 2-core machine) */
#define BACKFILL_WAIT_MS 90000
#define APPLY_DELAY "4s"

static struct {
    const char *pgbin, *pghost, *pgport;
    char dir[64];       /* the test's files; the standby lives in it too */
    char cfg[128];
    char standby[128];  /* the standby's data directory */
    char sock[128];     /* its socket directory */
    char standby_ci[320];
    char *db_ci;        /* the test database on the primary */
    pid_t writer;       /* the trickle of writes */
    itest_daemon d;
} T = {.writer = -1, .d = ITEST_DAEMON_INIT};

/* ------------------------------------------------------------------------ */
/* Running PostgreSQL's programs as the OS user that owns the cluster */

/* argv with "runuser -u postgres --" in front when we are root (initdb and
 * the server refuse root; pgcluster.sh runs them as postgres too). */
static void run_pg(itest_run *r, char *const args[])
{
    char *argv[32];
    int n = 0;
    if (geteuid() == 0) {
        argv[n++] = access("/usr/sbin/runuser", X_OK) == 0 ? "/usr/sbin/runuser" : "/sbin/runuser";
        argv[n++] = "-u";
        argv[n++] = "postgres";
        argv[n++] = "--";
    }
    for (int i = 0; args[i]; i++) {
        assert_true(n < 31);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    itest_run_argv(argv, r);
}

/* run_pg, which must exit 0 (failing with its output otherwise). */
static void run_pg_ok(const char *what, char *const args[])
{
    itest_run r;
    run_pg(&r, args);
    if (r.rc != 0)
        fail_msg("%s failed (rc %d):\n%s%s", what, r.rc, r.out, r.err);
    itest_run_free(&r);
}

static char *pgbin(const char *prog, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", T.pgbin, prog);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Database helpers */

static long long value_ll(const char *ci, const char *sql)
{
    char *v = itest_value_on(ci, sql);
    if (!v)
        fail_msg("query failed: %s", sql);
    long long n = atoll(v);
    free(v);
    return n;
}

/* The live rows (ids above the seed) come from this sequence. */
static long long last_live_id(void)
{
    return value_ll(T.db_ci, "SELECT coalesce(max(id), 0) FROM items WHERE id > 1000000");
}

/* The shadow has the live row id (applied from the change log: the
 * backfill copies only the seed while it is not paused). */
static bool wait_shadow_has(long long id, int64_t timeout_ms)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT EXISTS (SELECT 1 FROM items_shadow WHERE id = %lld)", id);
    return itest_wait_true(T.db_ci, sql, timeout_ms);
}

static const char BACKFILL_SQL[] =
    "SELECT coalesce(backfill_rows, 0) FROM pgshadow.tables WHERE table_name = 'items'";
/* Seed rows in the shadow: only the backfill puts them there (nothing
 * writes to them while the test runs). */
static const char SEED_IN_SHADOW_SQL[] = "SELECT count(*) FROM items_shadow WHERE id <= 1000000";

/* ------------------------------------------------------------------------ */
/* The trickle of writes */

static void writer_main(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
    PGconn *c = NULL;
    for (;;) {
        if (!c || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = PQconnectdb(T.db_ci);
        }
        PQclear(PQexec(c, "INSERT INTO items (id, v) VALUES (nextval('live_ids'), 'live')"));
        itest_sleep_ms(100);
    }
}

static void writer_stop(void)
{
    if (T.writer > 0) {
        kill(T.writer, SIGKILL);
        waitpid(T.writer, NULL, 0);
    }
    T.writer = -1;
}

/* ------------------------------------------------------------------------ */
/* The standby */

static void standby_create(void)
{
    char bin[4096];
    char src[512];
    snprintf(src, sizeof src, "host=%s port=%s user=postgres", T.pghost, T.pgport);
    /* -c fast: no waiting for a spread checkpoint; -R: standby.signal and
     * primary_conninfo */
    char *bb[] = {pgbin("pg_basebackup", bin, sizeof bin), "-d", src, "-D", T.standby, "-R",
                  "-X", "stream", "-c", "fast", "--no-sync", NULL};
    run_pg_ok("pg_basebackup", bb);

    /* postgresql.conf came with the copy (the primary's port, socket
     * directory, TLS): override in postgresql.auto.conf, which -R wrote. No
     * TCP, a socket directory of its own, so the primary's port is free to
     * reuse; application_name to find it in pg_stat_replication. */
    char path[256], text[1024];
    snprintf(path, sizeof path, "%s/postgresql.auto.conf", T.standby);
    char *auto_conf = itest_read_file(path);
    assert_non_null(auto_conf);
    snprintf(text, sizeof text,
             "%s"
             "listen_addresses = ''\n"
             "unix_socket_directories = '%s'\n"
             "ssl = off\n"
             "hot_standby = on\n"
             "primary_conninfo = 'host=%s port=%s user=postgres application_name=itest_standby'\n",
             auto_conf, T.sock, T.pghost, T.pgport);
    free(auto_conf);
    assert_int_equal(itest_write_file(path, text), 0);

    char log[256];
    snprintf(log, sizeof log, "%s/standby.log", T.dir);
    char *start[] = {pgbin("pg_ctl", bin, sizeof bin), "-D", T.standby, "-l", log, "-w", "-t",
                     "60", "start", NULL};
    itest_run r;
    run_pg(&r, start);
    if (r.rc != 0) {
        char *l = itest_read_file(log);
        fail_msg("pg_ctl start of the standby failed (rc %d):\n%s%s\n%s", r.rc, r.out, r.err,
                 l ? l : "");
    }
    itest_run_free(&r);
}

/* Stop (immediate: nothing on it is worth a checkpoint) when it runs. */
static void standby_stop(void)
{
    char pid[256];
    snprintf(pid, sizeof pid, "%s/postmaster.pid", T.standby);
    if (access(pid, F_OK) != 0)
        return;
    char bin[4096];
    char *stop[] = {pgbin("pg_ctl", bin, sizeof bin), "-D", T.standby, "-m", "immediate", "-w",
                    "stop", NULL};
    itest_run r;
    run_pg(&r, stop);
    if (r.rc != 0)
        fprintf(stderr, "test-standby: pg_ctl stop of the standby: rc %d\n%s%s", r.rc, r.out,
                r.err);
    itest_run_free(&r);
}

/* ------------------------------------------------------------------------ */
/* Setup */

static const char SCHEMA_SQL[] =
    "CREATE TABLE items (id bigint PRIMARY KEY, v text NOT NULL); "
    "INSERT INTO items SELECT g, 'seed ' || g FROM generate_series(1, 60000) g; "
    "CREATE SEQUENCE live_ids START 1000001; "
    "ANALYZE items";

static int write_config(const char *max_lag)
{
    char text[1024], tmp[160];
    /* a small backfill_chunk: the seed takes 1200 steps, so the backfill
     * is still running when the test turns the throttle on;
     * catchup_interval paces apply once it is slowed */
    snprintf(text, sizeof text,
             "database:\n  conninfo: \"%s\"\n"
             "migration:\n  id: itest_standby\n  tables:\n    - name: items\n"
             "sync:\n  batch_size: 50\n  batch_delay: 10ms\n  catchup_interval: 1s\n"
             "  backfill_chunk: 50\n  max_replication_lag: %s\n"
             "metrics:\n  listen: \"\"\n",
             T.db_ci, max_lag);
    snprintf(tmp, sizeof tmp, "%s.tmp", T.cfg);
    if (itest_write_file(tmp, text) < 0)
        return -1;
    return rename(tmp, T.cfg);
}

static int setup(void **state)
{
    (void)state;
    static const char *const env[] = {"PGSHADOWD", "PGSHADOWCTL", "PGSHADOW_SRCDIR",
                                      "PGSHADOW_TEST_CONNINFO", "PGSHADOW_TEST_CLUSTER",
                                      "PGSHADOW_TEST_PGBIN", "PGSHADOW_TEST_PGHOST",
                                      "PGSHADOW_TEST_PGPORT", NULL};
    if (!itest_require_env("test-standby", env))
        return -1;
    T.pgbin = getenv("PGSHADOW_TEST_PGBIN");
    T.pghost = getenv("PGSHADOW_TEST_PGHOST");
    T.pgport = getenv("PGSHADOW_TEST_PGPORT");
    snprintf(T.dir, sizeof T.dir, "/tmp/itest-standby-XXXXXX");
    if (!mkdtemp(T.dir))
        return -1;
    /* listed for `pgcluster.sh stop`, which stops and removes it if this
     * process is killed before its teardown (pg_ctl detaches the server) */
    char list[4096];
    snprintf(list, sizeof list, "%s/standbys", getenv("PGSHADOW_TEST_CLUSTER"));
    FILE *lf = fopen(list, "a");
    bool listed = lf && fprintf(lf, "%s\n", T.dir) >= 0;
    if (lf && fclose(lf) != 0)
        listed = false;
    if (!listed) {
        fprintf(stderr, "test-standby: cannot record the standby in %s\n", list);
        return -1;
    }
    snprintf(T.cfg, sizeof T.cfg, "%s/pgshadow.yaml", T.dir);
    snprintf(T.standby, sizeof T.standby, "%s/data", T.dir);
    snprintf(T.sock, sizeof T.sock, "%s/sock", T.dir);
    snprintf(T.standby_ci, sizeof T.standby_ci, "host=%s port=%s dbname=postgres user=postgres",
             T.sock, T.pgport);
    T.db_ci = itest_conninfo_db(DB);
    if (mkdir(T.sock, 0700) < 0)
        return -1;
    if (geteuid() == 0) {
        /* the server (user postgres) writes the data directory, its socket
         * and its log here; /tmp is traversable */
        struct passwd *pw = getpwnam("postgres");
        if (!pw || chown(T.dir, pw->pw_uid, pw->pw_gid) < 0 ||
            chown(T.sock, pw->pw_uid, pw->pw_gid) < 0) {
            fprintf(stderr, "test-standby: cannot hand %s to the postgres user\n", T.dir);
            return -1;
        }
    }
    itest_daemon_paths(&T.d, T.dir, "pgshadowd");

    itest_db_create(DB);
    PGconn *c = itest_connect(T.db_ci);
    itest_exec_ok(c, SCHEMA_SQL);
    PQfinish(c);
    return write_config("0s");
}

static int teardown(void **state)
{
    (void)state;
    writer_stop();
    itest_daemon_cleanup(&T.d);
    standby_stop();
    itest_db_drop(DB);
    free(T.db_ci);
    if (getenv("PGSHADOW_KEEP_TMP")) {
        fprintf(stderr, "test-standby: files kept in %s\n", T.dir);
    } else if (T.dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", T.dir);
        if (system(cmd) != 0)
            fprintf(stderr, "test-standby: could not remove %s\n", T.dir);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */

static void dump_log(const char *why)
{
    char *log = itest_daemon_log(&T.d);
    size_t n = strlen(log);
    fprintf(stderr, "test-standby: %s; pgshadowd log tail:\n%s\n", why, n > 4000 ? log + n - 4000 : log);
    free(log);
}

/* The last STATUS= line received so far (for the messages), or "". */
static const char *last_status(void)
{
    itest_daemon_drain(&T.d);
    for (int i = T.d.n_msgs - 1; i >= 0; i--) {
        const char *s = strstr(T.d.msgs[i], "STATUS=");
        if (s)
            return s;
    }
    return "";
}

/* While lagging: over at least `hold_ms` and until the live row inserted
 * now has reached the shadow, the backfill never moves. */
static void assert_backfill_held(long long bf0, long long seed0, int64_t hold_ms)
{
    long long live = last_live_id();
    assert_true(live > 0);
    int64_t hold_until = itest_now_ms() + hold_ms;
    bool applied = wait_shadow_has(live, WAIT_MS);
    if (!applied)
        dump_log("a live row did not reach the shadow while the backfill was paused");
    assert_true(applied);
    while (itest_now_ms() < hold_until) {
        assert_int_equal(value_ll(T.db_ci, BACKFILL_SQL), bf0);
        assert_int_equal(value_ll(T.db_ci, SEED_IN_SHADOW_SQL), seed0);
        itest_sleep_ms(200);
    }
    assert_int_equal(value_ll(T.db_ci, BACKFILL_SQL), bf0);
    assert_int_equal(value_ll(T.db_ci, SEED_IN_SHADOW_SQL), seed0);
    fprintf(stderr, "test-standby: live row %lld applied, backfill held at %lld rows, "
                    "replication_lag_ms() = %lld\n",
            live, bf0, value_ll(T.db_ci, "SELECT pgshadow.replication_lag_ms()"));
}

static void test_throttle(void **state)
{
    (void)state;
    itest_run r;
    itest_run_ctl(&r, T.cfg, "install", NULL);
    if (r.rc != 0)
        fail_msg("pgshadowctl install: rc %d\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);

    /* ---- a streaming standby, then delayed ---- */
    int64_t t0 = itest_now_ms();
    standby_create();
    assert_true(itest_wait_value(T.db_ci,
                                 "SELECT count(*) FROM pg_stat_replication "
                                 "WHERE application_name = 'itest_standby' AND state = 'streaming'",
                                 "1", WAIT_MS));
    fprintf(stderr, "test-standby: standby streaming after %lld ms\n",
            (long long)(itest_now_ms() - t0));
    /* no standby lag yet: nothing was delayed */
    long long lag0 = value_ll(T.db_ci, "SELECT pgshadow.replication_lag_ms()");
    assert_true(lag0 < 2000);

    T.writer = fork();
    assert_true(T.writer >= 0);
    if (T.writer == 0)
        writer_main();

    /* ALTER SYSTEM writes only the standby's postgresql.auto.conf: allowed
     * in recovery; recovery_min_apply_delay takes effect on reload */
    itest_exec_on(T.standby_ci, "ALTER SYSTEM SET recovery_min_apply_delay = '" APPLY_DELAY "'");
    itest_exec_on(T.standby_ci, "SELECT pg_reload_conf()");

    /* 1. the lag the daemon reads rises above the limit */
    /* (it climbs from 0 to the delay: the walsender reports a stuck replay
     * position as a growing lag); above 3 s, which both limits below need */
    assert_true(itest_wait_value(T.db_ci, "SELECT pgshadow.replication_lag_ms() > 3000", "t",
                                 WAIT_MS));
    char *lag = itest_value_on(T.db_ci,
                               "SELECT pgshadow.replication_lag_ms() || ' ms (replay_lag ' || "
                               "replay_lag || ')' FROM pg_stat_replication "
                               "WHERE application_name = 'itest_standby'");
    fprintf(stderr, "test-standby: replication lag %s after %lld ms\n", lag ? lag : "?",
            (long long)(itest_now_ms() - t0));
    free(lag);

    /* 2. pgshadowd with throttling off (max_replication_lag 0s) copies while
     * the standby lags; a reload to 2s (< lag < 3 x 2s) mid-way pauses the
     * backfill but not apply. The new limit counts from the next step (it
     * is read at each use) with the lag of the last probe; the warning
     * comes with the next probe. */
    assert_int_equal(itest_daemon_start(&T.d, T.cfg), 0);
    int64_t end = itest_now_ms() + WAIT_MS;
    long long bf = 0;
    while ((bf = value_ll(T.db_ci, BACKFILL_SQL)) == 0 && itest_now_ms() < end)
        itest_sleep_ms(10);
    assert_int_equal(write_config("2s"), 0);
    assert_int_equal(kill(T.d.pid, SIGHUP), 0);
    fprintf(stderr, "test-standby: reload to max_replication_lag 2s at %lld rows copied\n", bf);
    assert_true(bf > 0);
    size_t at = itest_daemon_wait_log(&T.d, 0, "exceeds max_replication_lag (2s): backfill paused",
                                      WAIT_MS);
    assert_true(at > 0);
    assert_int_equal(itest_daemon_log_count(&T.d, 0, "more than 3 x max_replication_lag", NULL), 0);
    int m = itest_daemon_wait_msg(&T.d, 0, "STATUS=connected; leader; backfill paused (replication lag ",
                                  WAIT_MS);
    if (m < 0)
        dump_log("no 'backfill paused' STATUS");
    assert_true(m >= 0);
    fprintf(stderr, "test-standby: %s\n", T.d.msgs[m]);
    assert_null(strstr(T.d.msgs[m], "apply slowed"));
    long long bf0 = value_ll(T.db_ci, BACKFILL_SQL);
    long long seed0 = value_ll(T.db_ci, SEED_IN_SHADOW_SQL);
    /* paused mid-way: it had started, and was far from done */
    if (bf0 >= SEED_ROWS)
        fail_msg("the backfill finished (%lld rows) before the throttle was on", bf0);
    assert_true(bf0 > 0);
    assert_true(seed0 > 0 && seed0 < SEED_ROWS);
    assert_backfill_held(bf0, seed0, 3000);

    /* 3. a reload to max_replication_lag 1s: the lag is above 3 x the limit;
     * apply is slowed (one batch per catchup_interval) but goes on */
    assert_int_equal(write_config("1s"), 0);
    size_t before = itest_daemon_log_size(&T.d);
    assert_int_equal(kill(T.d.pid, SIGHUP), 0);
    at = itest_daemon_wait_log(&T.d, before, "is more than 3 x max_replication_lag (1s): backfill "
                               "paused, apply slowed", WAIT_MS);
    assert_true(at > 0);
    int from = T.d.n_msgs;
    m = itest_daemon_wait_msg(&T.d, from, "STATUS=connected; leader; backfill paused (replication lag ",
                              WAIT_MS);
    /* the first STATUS after the reload may still be the old level */
    end = itest_now_ms() + WAIT_MS;
    while (m >= 0 && !strstr(T.d.msgs[m], "; apply slowed") && itest_now_ms() < end)
        m = itest_daemon_wait_msg(&T.d, m + 1, "STATUS=connected; leader; backfill paused", 2000);
    if (m < 0 || !strstr(T.d.msgs[m], "; apply slowed"))
        fail_msg("no 'apply slowed' STATUS; last: %s", last_status());
    fprintf(stderr, "test-standby: %s\n", T.d.msgs[m]);
    assert_backfill_held(bf0, seed0, 2000);

    /* 4. the standby catches up: back under, the backfill completes */
    before = itest_daemon_log_size(&T.d);
    itest_exec_on(T.standby_ci, "ALTER SYSTEM RESET recovery_min_apply_delay");
    itest_exec_on(T.standby_ci, "SELECT pg_reload_conf()");
    at = itest_daemon_wait_log(&T.d, before, "replication lag back under max_replication_lag (1s)",
                               WAIT_MS);
    assert_true(at > 0);
    char *lag2 = itest_value_on(T.db_ci, "SELECT pgshadow.replication_lag_ms()");
    fprintf(stderr, "test-standby: back under, replication_lag_ms() = %s\n", lag2 ? lag2 : "?");
    free(lag2);
    writer_stop();
    bool done = itest_wait_true(T.db_ci,
                                "SELECT bool_and(backfill_state = 'done') FROM pgshadow.tables "
                                "WHERE migration_id = 'itest_standby' "
                                "AND NOT EXISTS (SELECT 1 FROM pgshadow.change_log)",
                                BACKFILL_WAIT_MS);
    if (!done)
        dump_log("the backfill did not complete after the lag went away");
    assert_true(done);
    assert_true(itest_true_on(
        T.db_ci,
        "SELECT NOT EXISTS (SELECT id, v FROM items EXCEPT SELECT id, v FROM items_shadow) "
        "AND NOT EXISTS (SELECT id, v FROM items_shadow EXCEPT SELECT id, v FROM items)"));
    assert_int_equal(value_ll(T.db_ci, SEED_IN_SHADOW_SQL), SEED_ROWS);
    if (itest_daemon_wait_msg(&T.d, 0, "STATUS=connected; leader; backfill done", WAIT_MS) < 0) {
        dump_log("no 'backfill done' STATUS");
        fail_msg("no 'backfill done' STATUS in %d messages; last: %s", T.d.n_msgs, last_status());
    }
    fprintf(stderr, "test-standby: backfill done (%lld seed rows), %lld live rows; total %lld ms\n",
            value_ll(T.db_ci, SEED_IN_SHADOW_SQL),
            value_ll(T.db_ci, "SELECT count(*) FROM items WHERE id > 1000000"),
            (long long)(itest_now_ms() - t0));
    /* never lost track of the standby, never throttled for another reason */
    assert_int_equal(itest_daemon_log_count(&T.d, 0, "not visible to this role", NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_throttle, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
