/*
 * itest.h - helpers shared by the integration tests (tests/integration/).
 *
 * Linked into every itest-* binary as a static library. Helpers that "must"
 * succeed end the current cmocka test with a message saying why (fail() /
 * fail_msg()), so they may only be called from inside a test, a setup or a
 * teardown; the ones that return NULL, false or -1 instead say so.
 *
 * Environment (set by tests/run and tests/harness/pgcluster.sh):
 * PGSHADOW_TEST_CONNINFO, PGSHADOW_TEST_CLUSTER, PGSHADOW_TEST_PGBIN,
 * PGSHADOW_SRCDIR, PGSHADOWD, PGSHADOWCTL. A missing one is a failure, never
 * a skip. The one skip there is: PGSHADOW_TEST_SKIP_LOAD (tests/run sets it
 * for the ASan build) skips the load cases, visibly (ITEST_LOAD_CASE below).
 */
#ifndef PGSHADOW_ITEST_H
#define PGSHADOW_ITEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <libpq-fe.h>

/* ---- environment and time ------------------------------------------- */

/* getenv(name); when unset or empty, prints why and fails the test. */
const char *itest_env(const char *name);

/* True when every variable in the NULL-terminated names is set and not
 * empty; otherwise prints "<prog>: NAME is not set" for each missing one and
 * a hint to run through tests/run. For main() and group setups, which return
 * an error instead of failing a test. */
bool itest_require_env(const char *prog, const char *const *names);

/* CLOCK_MONOTONIC in milliseconds: only to bound waits. */
int64_t itest_now_ms(void);

/* Sleep ms milliseconds (restarted on EINTR). */
void itest_sleep_ms(int64_t ms);

/* ---- files ---------------------------------------------------------- */

/* The whole file as a malloc'd string, or NULL when it cannot be opened. */
char *itest_read_file(const char *path);

/* $PGSHADOW_SRCDIR/sql/<name>, malloc'd; fails when it cannot be read. */
char *itest_read_sql(const char *name);

/* The install's SQL: every file of sql/install.list, in its order, as one
 * text (what pgshadowctl install runs before register_table), malloc'd. */
char *itest_install_sql(void);

/* The file's size, 0 when it does not exist. */
size_t itest_file_size(const char *path);

/* Write text to path (truncating): 0, or -1. */
int itest_write_file(const char *path, const char *text);

/* ---- libpq ----------------------------------------------------------- */

/* "$PGSHADOW_TEST_CONNINFO dbname=<dbname>" (the later keyword wins),
 * malloc'd. */
char *itest_conninfo_db(const char *dbname);

/* Connect; fails the test when that does not work. Notices are dropped (the
 * tests assert on results and errors, not on notices). */
PGconn *itest_connect(const char *conninfo);

/* "$PGSHADOW_TEST_CONNINFO dbname=<db> user=<user>", malloc'd. */
char *itest_conninfo_as(const char *db, const char *user);

/* Connect to db as user (a login role of the test cluster). */
PGconn *itest_connect_as(const char *db, const char *user);

/* Connect to dbname on the test cluster (NULL: the conninfo's own). */
PGconn *itest_connect_db(const char *dbname);

/* Run sql, which must succeed (fails the test with the server's message
 * otherwise). Returns the first value of the last result, malloc'd: "" when
 * there is none, "<NULL>" for an SQL NULL. */
char *itest_query(PGconn *c, const char *sql);

/* itest_query, result dropped. */
void itest_exec_ok(PGconn *c, const char *sql);

/* itest_query's one value as a number (strtol). */
long itest_query_long(PGconn *c, const char *sql);

/* itest_query must give exactly want (printing query, want and got when
 * not). */
void itest_expect_sql(PGconn *c, const char *sql, const char *want);

/* Create public.test_diff(table) in c's database (itest.c says what it
 * compares): rows that differ between a registered table and its shadow. */
void itest_create_test_diff(PGconn *c);

/* itest_exec_ok on a connection of its own to conninfo (so it survives
 * server restarts between calls). */
void itest_exec_on(const char *conninfo, const char *sql);

/* The first value of sql on a connection of its own, malloc'd ("" for no row
 * or NULL), or NULL (with the reason printed) when connecting or the query
 * failed. Never fails the test: for polling, and for code that must clean up
 * before it asserts. */
char *itest_value_on(const char *conninfo, const char *sql);

/* Poll itest_value_on until it gives want; false (printing the last value)
 * after timeout_ms. */
bool itest_wait_value(const char *conninfo, const char *sql, const char *want,
                      int64_t timeout_ms);

/* sql on a connection of its own gives 't'; false on any error (for
 * polling). */
bool itest_true_on(const char *conninfo, const char *sql);

/* Poll itest_true_on every 100 ms until it is true, and once more after the
 * deadline (a write that lands right at it still counts); false after
 * timeout_ms. */
bool itest_wait_true(const char *conninfo, const char *sql, int64_t timeout_ms);

/* ---- fresh databases ------------------------------------------------ */

/* DROP DATABASE IF EXISTS name WITH (FORCE), then CREATE DATABASE name. */
void itest_db_create(const char *name);

/* DROP DATABASE IF EXISTS name WITH (FORCE). */
void itest_db_drop(const char *name);

/* A database of its own for one test, connected. */
typedef struct itest_db {
    char name[64];
    PGconn *c;
} itest_db;

/* Create <prefix>_<pid>_<n> (fresh) and connect to it; never NULL. */
itest_db *itest_db_new(const char *prefix);

/* Disconnect, drop the database, free t. NULL is a no-op. */
void itest_db_free(itest_db *t);

/* ---- child programs ------------------------------------------------- */

/* How a child program ended and what it printed. */
typedef struct itest_run {
    int rc;         /* exit code, or 128 + signal */
    char *out, *err; /* all of stdout and stderr, malloc'd */
} itest_run;

/* A child started with itest_child_start, not yet waited for. */
typedef struct itest_child {
    pid_t pid;
    char outp[32], errp[32]; /* temp files holding its stdout and stderr */
} itest_child;

/* Start argv[0] (a path) with argv, stdin from /dev/null, stdout and stderr
 * to temp files; returns at once (for a test that acts while it runs). */
void itest_child_start(itest_child *ch, char *const argv[]);

/* Wait for ch to exit; its exit code and output into r (temp files gone). */
void itest_child_finish(itest_child *ch, itest_run *r);

/* itest_child_start + itest_child_finish. */
void itest_run_argv(char *const argv[], itest_run *r);

/* $PGSHADOWCTL [-c config] args... (NULL-terminated, at most 12). */
void itest_run_ctl(itest_run *r, const char *config, ...) __attribute__((sentinel));

/* Free what r holds and zero it. */
void itest_run_free(itest_run *r);

/* tests/harness/pgcluster.sh restart $PGSHADOW_TEST_CLUSTER immediate; fails
 * the test (with the script's output) when that does not work. */
void itest_cluster_restart(void);

/* pg_dump --schema-only [--no-owner] of dbname, with pg_dump's \restrict /
 * \unrestrict lines (a random key per run, pg_dump >= 15.14) removed, so two
 * dumps of the same catalog compare equal. Fails the test when pg_dump does. */
char *itest_schema_dump(const char *dbname, bool no_owner);

/* ---- pgshadowd ------------------------------------------------------- */

#define ITEST_MAX_MSGS 8192 /* a long backfill sends a STATUS= per housekeeping tick */
#define ITEST_MAX_ENV 16

/* One pgshadowd under test: its log file (appended to over restarts), an
 * optional NOTIFY_SOCKET, and the notify messages received so far. */
typedef struct itest_daemon {
    const char *log_level;           /* --log-level, or NULL: the config's */
    const char *env[ITEST_MAX_ENV];  /* "NAME=VALUE" set or "NAME" unset in the child */
    char log[160];                   /* stdout and stderr go here */
    char sock[108];                  /* NOTIFY_SOCKET when not empty (fits sun_path) */
    int sock_fd;
    pid_t pid;
    int exit_status; /* waitpid status once reaped */
    bool reaped;
    char *msgs[ITEST_MAX_MSGS]; /* one per datagram */
    int n_msgs;
} itest_daemon;

#define ITEST_DAEMON_INIT {.sock_fd = -1, .pid = -1}

/* d->log = DIR/<tag>.log and d->sock = DIR/<tag>.sock. */
void itest_daemon_paths(itest_daemon *d, const char *dir, const char *tag);

/* Start $PGSHADOWD -c cfg [--log-level L]: stdin /dev/null, stdout and
 * stderr appended to d->log, NOTIFY_SOCKET = d->sock (bound here the first
 * time) or unset, JOURNAL_STREAM unset, d->env applied, and killed with the
 * test process (PR_SET_PDEATHSIG). 0, or -1. */
int itest_daemon_start(itest_daemon *d, const char *cfg);

/* Receive every pending notify datagram into d->msgs. */
void itest_daemon_drain(itest_daemon *d);

/* Index of the first notify message at or after from with a line starting
 * with line (e.g. "READY=1" inside a compound message), waiting up to
 * timeout_ms; -1 on timeout. */
int itest_daemon_wait_msg(itest_daemon *d, int from, const char *line, int64_t timeout_ms);

/* Some notify message contains needle. */
bool itest_daemon_msg_contains(itest_daemon *d, const char *needle);

/* The log so far, malloc'd ("" when there is none). */
char *itest_daemon_log(const itest_daemon *d);

/* The log's size now: an offset for the waits below. */
size_t itest_daemon_log_size(const itest_daemon *d);

/* Lines of the log from byte offset from that contain a and (unless NULL) b. */
int itest_daemon_log_count(const itest_daemon *d, size_t from, const char *a, const char *b);

/* Wait until the log from byte offset from contains needle, draining notify
 * messages meanwhile (so the daemon's datagrams never pile up). The offset
 * just past the match, or 0 on timeout (printing the log). */
size_t itest_daemon_wait_log(itest_daemon *d, size_t from, const char *needle,
                             int64_t timeout_ms);

/* Reap the daemon if it has exited, waiting up to wait_ms; true when gone
 * (d->exit_status holds its status). */
bool itest_daemon_reap(itest_daemon *d, int64_t wait_ms);

/* Send sig and wait for the daemon to exit: its wait status (-1 when it was
 * not running). */
int itest_daemon_kill(itest_daemon *d, int sig);

/* SIGKILL it if still running, close the socket, free the messages; d can
 * be started again after resetting it to ITEST_DAEMON_INIT. */
void itest_daemon_cleanup(itest_daemon *d);

/* ---- load cases -------------------------------------------------------- */

/* A load case is one whose point is a sustained write load (pgbench, or
 * test-sync's chaos writers), and whose wall time is mostly that load. It
 * runs in the -Werror build and is skipped in the ASan build: tests/run sets
 * PGSHADOW_TEST_SKIP_LOAD=1 there only, since the load drives the same C
 * code as the light cases, only longer. Every other case runs in both
 * builds, so tag a case only when a light case covers the code it runs.
 * Now: test-promote's two under-load cases, test-verify's no false
 * positives under load, test-sync's chaos.
 *
 * In main()'s case table, in place of cmocka_unit_test_setup_teardown(f,
 * setup, teardown) (setup and teardown may be NULL):
 *
 *     ITEST_LOAD_CASE(test_promote_under_load_simple, db_setup, db_teardown),
 *
 * With PGSHADOW_TEST_SKIP_LOAD set, the case keeps its name (so
 * PGSHADOW_TEST_FILTER still selects it) but runs itest_load_skipped
 * instead, without setup or teardown: cmocka prints it as SKIPPED, with the
 * reason, and tests/run lists it. Never a silent skip. */
#define ITEST_LOAD_CASE(f, setup, teardown)                                                \
    (itest_skip_load() ? (struct CMUnitTest){#f, itest_load_skipped, NULL, NULL, NULL}    \
                       : (struct CMUnitTest)cmocka_unit_test_setup_teardown(f, setup, teardown))

/* PGSHADOW_TEST_SKIP_LOAD is set and not empty or "0". */
bool itest_skip_load(void);

/* A load case's stand-in while PGSHADOW_TEST_SKIP_LOAD is set: prints why,
 * then cmocka's skip(). */
void itest_load_skipped(void **state);

/* ---- background pgbench ----------------------------------------------- */

/* A pgbench run in the background while a test acts: an application's
 * steady write load, whose verdict (no failed transaction) the test takes
 * at the end. */
typedef struct itest_bench {
    itest_child child;
    bool on; /* started and not yet stopped or aborted */
} itest_bench;

/* Write script (a pgbench script's text) to <dir>/load.sql and start
 * $PGSHADOW_TEST_PGBIN/pgbench -n [-M mode] -c 2 -R 100 -T 900 -f it
 * against conninfo, in the background. mode: "simple", "prepared", or NULL
 * for pgbench's default. -T is only an upper bound (above meson's timeout):
 * itest_bench_stop ends the run. */
void itest_bench_start(itest_bench *b, const char *dir, const char *script, const char *conninfo,
                       const char *mode);

/* End the run with SIGALRM (how pgbench ends a timed run itself, so it still
 * prints its summary) and take its verdict: exit 0, "number of failed
 * transactions: 0", at least 10 transactions processed. Prints "<tag>:
 * pgbench: N transactions, none failed" and returns N; otherwise calls
 * on_fail (unless NULL: e.g. to print the daemon's log) and fails the test
 * with pgbench's output. */
long itest_bench_stop(itest_bench *b, const char *tag, void (*on_fail)(void));

/* For a teardown (a test that failed under load): SIGKILL the run, reap it,
 * remove its output files; no verdict. A no-op unless b->on. */
void itest_bench_abort(itest_bench *b);

/* ---- roles and teardown --------------------------------------------------- */

/* An end-to-end test with daemons under an application's load (as
 * test-cutover.c and test-promote.c) sets up its roles with
 * itest_role_ensure, and its teardown is, in this order:
 *
 *     itest_bench_abort(&T.bench);   (a case that failed under load)
 *     itest_daemon_cleanup(&T.a);    (each daemon)
 *     itest_db_free(T.db);
 *     itest_tmpdir_remove(T.dir);
 */

/* CREATE ROLE role LOGIN [IN ROLE member_of] unless it exists. Roles are the
 * cluster's: they outlive each test's database and earlier runs, so a test
 * makes sure of them rather than creating them. member_of: NULL for none,
 * else a role that exists (e.g. pgshadow_operator, which the install
 * creates). */
void itest_role_ensure(PGconn *c, const char *role, const char *member_of);

/* rm -rf a test's temp dir, unless PGSHADOW_KEEP_TMP is set (then it is kept
 * for a look at the daemons' logs). Says so on stderr when it cannot; never
 * fails the test (for a teardown). */
void itest_tmpdir_remove(const char *dir);

#endif
