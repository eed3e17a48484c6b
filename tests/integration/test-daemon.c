/*
 * test-daemon.c - pgshadowd end to end against the throwaway cluster.
 *
 * Starts the real binary ($PGSHADOWD) with a test-owned NOTIFY_SOCKET and
 * stderr captured to a file, then proves, in order:
 *  - READY/STATUS, connecting as the scram-only role pgshadow_pw with its
 *    password from the harness passfile (PGPASSFILE), receiving a NOTIFY,
 *    surviving an immediate server restart (reconnect, re-LISTEN, resync),
 *    SIGPIPE ignored, reloads (an invalid one past the 100-error cap too), the
 *    watchdog, SIGTERM with exit 0, and that the password never reached the
 *    debug-level log nor a notify message;
 *  - a wrong password from a service file: the authentication failure is
 *    logged and retried, and the secret appears in no log line or STATUS=;
 *  - TLS: over TCP with sslmode=verify-full every daemon backend (main,
 *    work, listen) uses TLS (pg_stat_ssl); a server certificate from a CA the daemon does not trust
 *    is refused, logged, retried, and the daemon stays up;
 *  - with the sync engine on a real installed table: an invalid reload keeps
 *    the old batch_size and log level in force, a valid one applies the new
 *    ones (seen in the batches the daemon takes); a second SIGTERM exits at
 *    once, with 0, while an apply is blocked on a lock, and the change it was
 *    applying is not lost; SIGINT stops like SIGTERM.
 *
 * The tests share state and run in order. Every wait is a polling loop with a
 * generous deadline; the only time bounds asserted tell "exits at once" from
 * "waits for the 10 s stop timeout".
 *
 * Size: over 800 lines on purpose: the scenarios share the daemon fixtures
 * (notify socket, captured log, config writer) defined here; each scenario is
 * one function that reads alone, and a split would copy the fixtures.
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "itest.h"

#define WAIT_MS 20000

#define SYNC_DB "pgshadow_itest_daemon"

static struct {
    const char *conninfo;
    const char *tls_conninfo, *passfile, *pghost, *pgport;
    char dir[64];
    char cfg[128], service[128], sync_cfg[128];
    char pw_conninfo[256];   /* pgshadow_pw over the unix socket */
    char sync_conninfo[256]; /* postgres on SYNC_DB */
    char password[128];      /* pgshadow_pw's, read from the passfile */
    char secret[64];         /* a wrong password, in a service file */
} T;

#define PROC_INIT {.log_level = "debug", .sock_fd = -1, .pid = -1}
static itest_daemon P = PROC_INIT; /* the daemon most tests share */
static itest_daemon S = PROC_INIT; /* the one with the sync engine on SYNC_DB */

/* No notify message of p contains needle. */
static void assert_no_msg_contains(itest_daemon *p, const char *needle)
{
    itest_daemon_drain(p);
    for (int i = 0; i < p->n_msgs; i++)
        if (strstr(p->msgs[i], needle))
            fail_msg("a notify message contains the secret: %s", p->msgs[i]);
}

#define drain_notify() itest_daemon_drain(&P)
#define wait_msg(from, line) itest_daemon_wait_msg(&P, (from), (line), WAIT_MS)
#define read_log() itest_daemon_log(&P)
#define wait_log(from, needle) itest_daemon_wait_log(&P, (from), (needle), WAIT_MS)
#define reap(ms) itest_daemon_reap(&P, (ms))
#define log_size() itest_daemon_log_size(&P)

/* Replace the config atomically, as an editor or config manager would. */
static int write_config_to(const char *path, const char *conninfo, const char *batch_size_line)
{
    char text[1024], tmp[160];
    snprintf(text, sizeof text,
             "database:\n"
             "  conninfo: \"%s\"\n"
             "migration:\n"
             "  id: itest_daemon\n"
             "  tables:\n"
             "    - name: table_that_does_not_exist_yet\n"
             "sync:\n"
             "%s\n"
             "log:\n"
             "  level: info\n",
             conninfo, batch_size_line);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (itest_write_file(tmp, text) < 0)
        return -1;
    return rename(tmp, path);
}

/* The sync daemon's config: a real installed table; extra lines go at the
 * end (to make it invalid). */
static int write_sync_config(int batch_size, const char *level, const char *extra)
{
    char text[1024], tmp[160];
    snprintf(text, sizeof text,
             "database:\n"
             "  conninfo: \"%s\"\n"
             "migration:\n"
             "  id: itest_daemon_sync\n"
             "  tables:\n"
             "    - name: items\n"
             "sync:\n"
             "  batch_size: %d\n"
             "  batch_delay: 10ms\n"
             "  catchup_interval: 250ms\n"
             "log:\n"
             "  level: %s\n"
             "metrics:\n"
             "  listen: \"\"\n"
             "%s",
             T.sync_conninfo, batch_size, level, extra ? extra : "");
    snprintf(tmp, sizeof tmp, "%s.tmp", T.sync_cfg);
    if (itest_write_file(tmp, text) < 0)
        return -1;
    return rename(tmp, T.sync_cfg);
}

static int write_config(const char *batch_size_line)
{
    return write_config_to(T.cfg, T.pw_conninfo, batch_size_line);
}

/* A service with pgshadow_pw's connection parameters and a wrong password
 * (T.secret): the server rejects it, and the secret must never show up. */
static int write_service_file(void)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(T.conninfo, &err);
    if (!opts) {
        fprintf(stderr, "cannot parse PGSHADOW_TEST_CONNINFO: %s\n", err ? err : "?");
        PQfreemem(err);
        return -1;
    }
    FILE *f = fopen(T.service, "w");
    if (!f) {
        PQconninfoFree(opts);
        return -1;
    }
    fprintf(f, "[pgshadow_bad]\n");
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && *o->val && strcmp(o->keyword, "password") != 0 &&
            strcmp(o->keyword, "user") != 0)
            fprintf(f, "%s=%s\n", o->keyword, o->val);
    fprintf(f, "user=pgshadow_pw\n");
    fprintf(f, "password=%s\n", T.secret);
    PQconninfoFree(opts);
    return fclose(f);
}

static int send_notify(const char *channel, const char *payload)
{
    PGconn *c = PQconnectdb(T.conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "test connection failed: %s\n", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    const char *params[] = {channel, payload};
    PGresult *r = PQexecParams(c, "SELECT pg_notify($1, $2)", 2, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : -1;
    if (ok < 0)
        fprintf(stderr, "pg_notify failed: %s\n", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok;
}

static int run_check_config(const char *path, char *out, size_t outlen)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s' -c '%s' --check-config 2>&1", itest_env("PGSHADOWD"), path);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Start pgshadowd -c cfg (--log-level debug unless p->log_level says
 * otherwise) with its own notify socket, output captured to DIR/<tag>.log, a
 * 1 s watchdog, the test's service file and passfile (NULL: the harness
 * one). */
static int spawn(itest_daemon *p, const char *tag, const char *cfg, const char *passfile)
{
    char service[200], pass[200];
    snprintf(service, sizeof service, "PGSERVICEFILE=%s", T.service);
    snprintf(pass, sizeof pass, "PGPASSFILE=%s", passfile ? passfile : T.passfile);
    const char *env[] = {"WATCHDOG_USEC=1000000", "WATCHDOG_PID", service, pass,
                         "PGPASSWORD", "PGSERVICE", NULL};
    memcpy(p->env, env, sizeof env);
    itest_daemon_paths(p, T.dir, tag);
    int rc = itest_daemon_start(p, cfg);
    memset(p->env, 0, sizeof p->env); /* the strings were ours, on this stack */
    return rc;
}

/* ------------------------------------------------------------------------ */

/* pgshadow_pw's password: the last field of the harness passfile line. */
static int read_password(void)
{
    FILE *f = fopen(T.passfile, "r");
    if (!f)
        return -1;
    char line[256];
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    char *pw = ok ? strrchr(line, ':') : NULL;
    if (!pw)
        return -1;
    pw++;
    pw[strcspn(pw, "\r\n")] = '\0';
    if (strlen(pw) < 8)
        return -1; /* too short to be sure a match in a log is the password */
    snprintf(T.password, sizeof T.password, "%s", pw);
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    static const char *const env[] = {"PGSHADOWD", "PGSHADOWCTL", "PGSHADOW_SRCDIR",
                                      "PGSHADOW_TEST_CONNINFO", "PGSHADOW_TEST_CLUSTER",
                                      "PGSHADOW_TEST_TLS_CONNINFO", "PGSHADOW_TEST_PGPASSFILE",
                                      "PGSHADOW_TEST_PGHOST", "PGSHADOW_TEST_PGPORT", NULL};
    if (!itest_require_env("test-daemon", env))
        return -1;
    T.conninfo = getenv("PGSHADOW_TEST_CONNINFO");
    T.tls_conninfo = getenv("PGSHADOW_TEST_TLS_CONNINFO");
    T.passfile = getenv("PGSHADOW_TEST_PGPASSFILE");
    T.pghost = getenv("PGSHADOW_TEST_PGHOST");
    T.pgport = getenv("PGSHADOW_TEST_PGPORT");
    if (read_password() < 0) {
        fprintf(stderr, "test-daemon: cannot read a password from %s\n", T.passfile);
        return -1;
    }
    snprintf(T.dir, sizeof T.dir, "/tmp/itest-daemon-XXXXXX");
    if (!mkdtemp(T.dir))
        return -1;
    snprintf(T.cfg, sizeof T.cfg, "%s/pgshadow.yaml", T.dir);
    snprintf(T.sync_cfg, sizeof T.sync_cfg, "%s/sync.yaml", T.dir);
    snprintf(T.service, sizeof T.service, "%s/pg_service.conf", T.dir);
    snprintf(T.pw_conninfo, sizeof T.pw_conninfo,
             "host=%s port=%s dbname=pgshadow_test user=pgshadow_pw", T.pghost, T.pgport);
    snprintf(T.sync_conninfo, sizeof T.sync_conninfo, "host=%s port=%s dbname=%s user=postgres",
             T.pghost, T.pgport, SYNC_DB);
    srand((unsigned)(getpid() ^ time(NULL)));
    snprintf(T.secret, sizeof T.secret, "NeverLogMe-%08x%08x", (unsigned)rand(),
             (unsigned)rand());

    if (write_service_file() < 0 || write_config("  batch_size: 1000") < 0)
        return -1;

    return spawn(&P, "main", T.cfg, NULL);
}

static int group_teardown(void **state)
{
    (void)state;
    itest_daemon_cleanup(&P);
    itest_daemon_cleanup(&S);
    if (T.dir[0] && !getenv("PGSHADOW_KEEP_TMP")) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", T.dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", T.dir);
    }
    return 0;
}

static void test_check_config(void **state)
{
    (void)state;
    char out[2048];
    assert_int_equal(run_check_config(T.cfg, out, sizeof out), 0);
    assert_string_equal(out, "configuration OK\n");
    char bad[160];
    snprintf(bad, sizeof bad, "%s/bad.yaml", T.dir);
    assert_int_equal(itest_write_file(bad, "database:\n  conninfo: 42\nnope: 1\n"), 0);
    assert_int_equal(run_check_config(bad, out, sizeof out), 2);
    assert_non_null(strstr(out, "bad.yaml:"));
}

/* The database may be down when the daemon starts: it must report ready
 * anyway (systemd would otherwise fail the unit), say so in STATUS, and still
 * stop cleanly. */
static void test_starts_without_database(void **state)
{
    (void)state;
    char cfg[160], conninfo[200];
    snprintf(cfg, sizeof cfg, "%s/nodb.yaml", T.dir);
    snprintf(conninfo, sizeof conninfo, "host=%s/no-server-here port=1 dbname=x user=postgres",
             T.dir);
    assert_int_equal(write_config_to(cfg, conninfo, "  batch_size: 1000"), 0);
    itest_daemon q = PROC_INIT;
    assert_int_equal(spawn(&q, "nodb", cfg, NULL), 0);
    int ready = itest_daemon_wait_msg(&q, 0, "READY=1", WAIT_MS);
    int waiting = itest_daemon_wait_msg(&q, 0, "STATUS=waiting for database", WAIT_MS);
    bool alive = kill(q.pid, 0) == 0;
    kill(q.pid, SIGTERM);
    int stopping = itest_daemon_wait_msg(&q, 0, "STOPPING=1", WAIT_MS);
    bool gone = itest_daemon_reap(&q, WAIT_MS);
    int st = q.exit_status;
    itest_daemon_cleanup(&q);
    assert_true(ready >= 0);
    assert_true(waiting >= 0);
    assert_true(alive);
    assert_true(stopping >= 0);
    assert_true(gone);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_ready_and_status(void **state)
{
    (void)state;
    int i = wait_msg(0, "READY=1");
    assert_true(i >= 0);
    assert_true(wait_msg(0, "STATUS=") >= 0);
    assert_true(wait_log(0, "ready (") > 0);
}

static void test_connects(void **state)
{
    (void)state;
    assert_true(wait_log(0, "database connection up (host=") > 0);
    assert_true(wait_log(0, "listening on pgshadow_changes and pgshadow_control conn=listen") > 0);
    assert_true(wait_log(0, "resync: draining change log after (re)connect conn=listen "
                            "reconnects=0") > 0);
    /* STATUS catches up with the connection (housekeeping runs every second) */
    assert_true(wait_msg(0, "STATUS=connected") >= 0);
}

static void test_notify_received(void **state)
{
    (void)state;
    assert_int_equal(send_notify("pgshadow_changes", "itest-before-restart"), 0);
    assert_true(wait_log(0, "notify channel=pgshadow_changes payload=itest-before-restart") > 0);
    assert_int_equal(send_notify("pgshadow_control", "pause"), 0);
    assert_true(wait_log(0, "notify channel=pgshadow_control payload=pause") > 0);
}

static void test_survives_restart(void **state)
{
    (void)state;
    size_t from = log_size();
    itest_cluster_restart();
    assert_true(wait_log(from, "database connection down") > 0);
    assert_true(wait_log(from, "resync: draining change log after (re)connect conn=listen "
                               "reconnects=1") > 0);
    assert_int_equal(kill(P.pid, 0), 0); /* still alive */
    assert_int_equal(send_notify("pgshadow_changes", "itest-after-restart"), 0);
    assert_true(wait_log(from, "notify channel=pgshadow_changes payload=itest-after-restart") >
                0);
}

static void test_reload_valid(void **state)
{
    (void)state;
    drain_notify();
    int from_msg = P.n_msgs;
    size_t from = log_size();
    assert_int_equal(write_config("  batch_size: 500"), 0);
    assert_int_equal(kill(P.pid, SIGHUP), 0);
    int r = wait_msg(from_msg, "RELOADING=1");
    assert_true(r >= 0);
    unsigned long long usec = 0;
    assert_int_equal(sscanf(P.msgs[r], "RELOADING=1\nMONOTONIC_USEC=%llu", &usec), 1);
    assert_true(usec > 0);
    assert_true(wait_msg(r + 1, "READY=1") > r);
    size_t off = wait_log(from, "reload: ");
    assert_true(off > 0);
    assert_true(wait_log(from, "batch_size") > 0);
    assert_true(wait_log(from, "in force") > 0);
}

static void test_reload_invalid_keeps_config(void **state)
{
    (void)state;
    drain_notify();
    int from_msg = P.n_msgs;
    size_t from = log_size();
    assert_int_equal(write_config("  batch_size: lots\n  no_such_key: 1"), 0);
    assert_int_equal(kill(P.pid, SIGHUP), 0);
    int r = wait_msg(from_msg, "RELOADING=1");
    assert_true(r >= 0);
    assert_true(wait_msg(r + 1, "READY=1") > r);
    /* located errors: FILE:LINE:COLUMN (line 8 "  batch_size: lots", line 9
     * "  no_such_key: 1"); the first to the end of its line */
    char located[512];
    snprintf(located, sizeof located, "error: reload: %s:8:15: sync.batch_size: expected an "
             "integer, got a string\n", T.cfg);
    assert_true(wait_log(from, located) > 0);
    snprintf(located, sizeof located, "error: reload: %s:9:3: sync: unknown key \"no_such_key\" "
             "(known keys: ", T.cfg);
    assert_true(wait_log(from, located) > 0);
    assert_true(wait_log(from, "keeping the running configuration") > 0);
    /* still working with the old config */
    assert_int_equal(kill(P.pid, 0), 0);
    assert_int_equal(send_notify("pgshadow_changes", "itest-after-bad-reload"), 0);
    assert_true(wait_log(from, "notify channel=pgshadow_changes payload=itest-after-bad-reload") >
                0);
}

/* Issue #9, 12: past 100 errors the loader stopped keeping them, and the
 * key/columns parsers, judging by the error count, copied a mapping's NULL
 * text: SIGHUP with this file killed the daemon. It must stay up, log the
 * located errors and keep the running configuration (shown by a reload of
 * the previous file that finds no changes). */
static void test_reload_past_error_cap_keeps_config(void **state)
{
    (void)state;
    char text[4096], tmp[160];
    size_t o = (size_t)snprintf(text, sizeof text, "database:\n  conninfo: \"%s\"\n",
                                T.pw_conninfo);
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(text + o, sizeof text - o, "  unknown_%d: 1\n", i);
    snprintf(text + o, sizeof text - o,
             "migration:\n  id: itest_daemon\n  tables:\n"
             "    - name: table_that_does_not_exist_yet\n      key: [{a: 1}]\n"
             "    - name: other\n      columns: {c: [1]}\n"
             "sync:\n  batch_size: 7\n");
    snprintf(tmp, sizeof tmp, "%s.tmp", T.cfg);
    assert_int_equal(itest_write_file(tmp, text), 0);
    assert_int_equal(rename(tmp, T.cfg), 0);

    size_t from = log_size();
    assert_int_equal(kill(P.pid, SIGHUP), 0);
    assert_true(wait_log(from, "keeping the running configuration") > 0);
    assert_true(wait_log(from, "error: reload: ") > 0);
    assert_true(wait_log(from, "pgshadow.yaml:3:3: database: unknown key \"unknown_0\"") > 0);
    assert_true(wait_log(from, "pgshadow.yaml: too many errors; only the first 100 are shown") > 0);
    assert_false(reap(0));
    assert_int_equal(kill(P.pid, 0), 0);
    assert_int_equal(send_notify("pgshadow_changes", "itest-after-capped-reload"), 0);
    assert_true(wait_log(from, "notify channel=pgshadow_changes payload=itest-after-capped-reload") >
                0);

    /* the file as it was before the bad one: nothing to change */
    from = log_size();
    assert_int_equal(write_config("  batch_size: 500"), 0);
    assert_int_equal(kill(P.pid, SIGHUP), 0);
    assert_true(wait_log(from, "in force") > 0);
    assert_true(wait_log(from, "reload: no changes") > 0);
}

/* A changed conninfo makes the daemon reconnect both connections, with the
 * resync hook run for the new listen connection. */
static void test_reload_conninfo_reconnects(void **state)
{
    (void)state;
    drain_notify();
    int from_msg = P.n_msgs;
    size_t from = log_size();
    char ci[300];
    snprintf(ci, sizeof ci, "%s connect_timeout=7", T.pw_conninfo);
    assert_int_equal(write_config_to(T.cfg, ci, "  batch_size: 500"), 0);
    assert_int_equal(kill(P.pid, SIGHUP), 0);
    int r = wait_msg(from_msg, "RELOADING=1");
    assert_true(r >= 0);
    assert_true(wait_msg(r + 1, "READY=1") > r);
    assert_true(wait_log(from, "database.conninfo changed; reconnecting") > 0);
    assert_true(wait_log(from, "resync: draining change log after (re)connect conn=listen "
                               "reconnects=2") > 0);
    assert_int_equal(send_notify("pgshadow_changes", "itest-after-new-conninfo"), 0);
    assert_true(wait_log(from, "notify channel=pgshadow_changes payload=itest-after-new-conninfo") >
                0);
}

static void test_watchdog(void **state)
{
    (void)state;
    drain_notify();
    int from_msg = P.n_msgs;
    /* pings keep coming, every ~0.5 s */
    int a = wait_msg(from_msg, "WATCHDOG=1");
    assert_true(a >= 0);
    assert_true(wait_msg(a + 1, "WATCHDOG=1") > a);
}

static void test_sigterm(void **state)
{
    (void)state;
    drain_notify();
    int from_msg = P.n_msgs;
    assert_int_equal(kill(P.pid, SIGTERM), 0);
    assert_true(wait_msg(from_msg, "STOPPING=1") >= 0);
    assert_true(reap(WAIT_MS));
    assert_true(WIFEXITED(P.exit_status));
    assert_int_equal(WEXITSTATUS(P.exit_status), 0);
    assert_true(wait_log(0, "info: stopped") > 0);
}

/* 1a. The daemon authenticated as pgshadow_pw with the password from the
 * passfile through connect, NOTIFY, restart, reloads and stop, at debug
 * level: the password is nowhere in the log or the notify messages. */
static void test_no_password_in_log(void **state)
{
    (void)state;
    char *text = read_log();
    assert_true(strlen(text) > 0);
    assert_non_null(strstr(text, "debug: ")); /* it really logged at debug */
    /* it really used the password role (scram on the socket) */
    assert_non_null(strstr(text, "user=pgshadow_pw)"));
    assert_non_null(strstr(text, "reconnects=2")); /* restart and conninfo reload too */
    if (strstr(text, T.password))
        fail_msg("pgshadow_pw's password appears in the log:\n%s", text);
    free(text);
    assert_no_msg_contains(&P, T.password);
}

/* 1b. A wrong password from a service file: the failure is logged and
 * retried; the secret is in no log line and no STATUS=. */
static void test_wrong_password_from_service_file(void **state)
{
    (void)state;
    char cfg[160], nopass[160];
    snprintf(cfg, sizeof cfg, "%s/badpw.yaml", T.dir);
    snprintf(nopass, sizeof nopass, "%s/no-such-passfile", T.dir);
    assert_int_equal(write_config_to(cfg, "service=pgshadow_bad", "  batch_size: 1000"), 0);
    itest_daemon q = PROC_INIT;
    assert_int_equal(spawn(&q, "badpw", cfg, nopass), 0);
    size_t a = itest_daemon_wait_log(&q, 0, "connection attempt failed: ", WAIT_MS);
    size_t b = a ? itest_daemon_wait_log(&q, a, "connection attempt failed: ", WAIT_MS) : 0; /* retried */
    int waiting = itest_daemon_wait_msg(&q, 0, "STATUS=waiting for database", WAIT_MS);
    bool alive = kill(q.pid, 0) == 0;
    kill(q.pid, SIGTERM);
    bool gone = itest_daemon_reap(&q, WAIT_MS);
    int st = q.exit_status;
    char *text = itest_daemon_log(&q);
    itest_daemon_drain(&q);
    bool status_says_auth = false;
    for (int i = 0; i < q.n_msgs; i++)
        if (strstr(q.msgs[i], "STATUS=waiting for database") &&
            strstr(q.msgs[i], "password authentication failed"))
            status_says_auth = true;
    int errlines = itest_daemon_log_count(&q, 0, "connection attempt failed: ",
                               "password authentication failed for user \"pgshadow_pw\"");
    bool leaked = strstr(text, T.secret) != NULL;
    if (leaked)
        fprintf(stderr, "log:\n%s\n", text);
    free(text);
    assert_no_msg_contains(&q, T.secret);
    itest_daemon_cleanup(&q);
    assert_true(a > 0);
    assert_true(b > 0);
    assert_true(errlines >= 2);
    assert_true(waiting >= 0);
    assert_true(status_says_auth);
    assert_false(leaked);
    assert_true(alive);
    assert_true(gone);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* 2. TLS for real: over TCP to 127.0.0.1 with sslmode=verify-full and the
 * passfile, every backend of the daemon uses TLS. */
static void test_tls_backends(void **state)
{
    (void)state;
    assert_true(reap(0)); /* P stopped: the only pgshadowd backends are this one's */
    char cfg[160];
    snprintf(cfg, sizeof cfg, "%s/tls.yaml", T.dir);
    assert_int_equal(write_config_to(cfg, T.tls_conninfo, "  batch_size: 1000"), 0);
    itest_daemon q = PROC_INIT;
    assert_int_equal(spawn(&q, "tls", cfg, NULL), 0);
    size_t up = itest_daemon_wait_log(&q, 0, "resync: draining change log after (re)connect conn=listen", WAIT_MS);
    size_t main_up = itest_daemon_wait_log(&q, 0, "database connection up (host=127.0.0.1", WAIT_MS);
    size_t work_up = itest_daemon_wait_log(&q, 0, "user=pgshadow_pw) conn=work", WAIT_MS);
    char *v = NULL;
    if (up && main_up && work_up)
        v = itest_value_on(T.conninfo,
                           "SELECT count(*) FILTER (WHERE a.application_name IN ('pgshadowd/main', "
                           "'pgshadowd/work', 'pgshadowd/listen')) || ':' || coalesce(bool_and(s.ssl), false) "
                           "|| ':' || string_agg(DISTINCT a.usename, ',') "
                           "FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                           "WHERE a.application_name LIKE 'pgshadowd/%'");
    kill(q.pid, SIGTERM);
    bool gone = itest_daemon_reap(&q, WAIT_MS);
    int st = q.exit_status;
    char *text = itest_daemon_log(&q);
    bool leaked = strstr(text, T.password) != NULL;
    free(text);
    itest_daemon_cleanup(&q);
    assert_true(up > 0);
    assert_true(main_up > 0);
    assert_true(work_up > 0);
    assert_non_null(v);
    /* main, work and listen; all of the daemon's sessions (verify1 too) TLS */
    assert_string_equal(v, "3:true:pgshadow_pw");
    free(v);
    assert_false(leaked);
    assert_true(gone);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* 2b. A CA the daemon does not trust (made here): the server certificate is
 * refused, the failure logged, the attempt retried, the daemon stays up. */
static void test_tls_untrusted_ca_refused(void **state)
{
    (void)state;
    char cmd[1024], ca[160], key[160];
    snprintf(ca, sizeof ca, "%s/other-ca.crt", T.dir);
    snprintf(key, sizeof key, "%s/other-ca.key", T.dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj '/CN=not the test CA' "
             "-keyout '%s' -out '%s' >/dev/null 2>&1",
             key, ca);
    assert_int_equal(system(cmd), 0);
    const char *rc = strstr(T.tls_conninfo, "sslrootcert=");
    assert_non_null(rc);
    char ci[512];
    snprintf(ci, sizeof ci, "%.*ssslrootcert=%s", (int)(rc - T.tls_conninfo), T.tls_conninfo, ca);
    char cfg[160];
    snprintf(cfg, sizeof cfg, "%s/badca.yaml", T.dir);
    assert_int_equal(write_config_to(cfg, ci, "  batch_size: 1000"), 0);
    itest_daemon q = PROC_INIT;
    assert_int_equal(spawn(&q, "badca", cfg, NULL), 0);
    size_t a = itest_daemon_wait_log(&q, 0, "certificate verify failed", WAIT_MS);
    size_t b = a ? itest_daemon_wait_log(&q, a, "certificate verify failed", WAIT_MS) : 0; /* retried */
    int waiting = itest_daemon_wait_msg(&q, 0, "STATUS=waiting for database", WAIT_MS);
    bool alive = kill(q.pid, 0) == 0;
    /* two failed attempts (a retry) must be logged; poll, since the second
     * comes after a backoff delay that is longer under the sanitizers */
    int failed = 0;
    for (int64_t deadline = itest_now_ms() + WAIT_MS; itest_now_ms() < deadline; usleep(50 * 1000)) {
        itest_daemon_drain(&q);
        failed = itest_daemon_log_count(&q, 0, "warning: pg ", "connection attempt failed");
        if (failed >= 2)
            break;
    }
    kill(q.pid, SIGTERM);
    bool gone = itest_daemon_reap(&q, WAIT_MS);
    int st = q.exit_status;
    int connected = itest_daemon_log_count(&q, 0, "database connection up", NULL);
    itest_daemon_cleanup(&q);
    assert_true(a > 0);
    assert_true(b > 0);
    assert_true(failed >= 2);
    assert_int_equal(connected, 0);
    assert_true(waiting >= 0);
    assert_true(alive);
    assert_true(gone);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- the sync engine on an installed table ---- */

static void sync_insert(int from, int to)
{
    char sql[160];
    snprintf(sql, sizeof sql,
             "INSERT INTO items SELECT g, 'v' || g FROM generate_series(%d, %d) g", from, to);
    itest_exec_on(T.sync_conninfo, sql); /* one transaction: the daemon sees all rows at once */
}

static bool sync_drained(void)
{
    return itest_wait_value(T.sync_conninfo, "SELECT count(*) FROM pgshadow.change_log", "0", WAIT_MS);
}

static void test_sync_setup(void **state)
{
    (void)state;
    itest_db_create(SYNC_DB);
    itest_exec_on(T.sync_conninfo, "CREATE TABLE items (id int PRIMARY KEY, v text)");
    assert_int_equal(write_sync_config(3, "debug", NULL), 0);
    itest_run r;
    itest_run_ctl(&r, T.sync_cfg, "install", NULL);
    if (r.rc != 0)
        fprintf(stderr, "pgshadowctl install:\n%s%s", r.out, r.err);
    assert_int_equal(r.rc, 0);
    itest_run_free(&r);
    S.log_level = NULL; /* log.level from the file: reloads change it */
    assert_int_equal(spawn(&S, "sync", T.sync_cfg, NULL), 0);
    assert_true(itest_daemon_wait_log(&S, 0, "sync: backfill complete", WAIT_MS) > 0);
}

/* 6. An invalid reload keeps every old value in force (batch_size 3 and
 * log.level debug, seen in the batches the daemon takes and in its debug
 * lines); a valid one puts the new batch_size in force. */
static void test_reload_old_values_stay_new_ones_apply(void **state)
{
    (void)state;
    size_t from = itest_daemon_log_size(&S);
    sync_insert(1, 10);
    assert_true(itest_daemon_wait_log(&S, from, "applied batch: taken=3 ", WAIT_MS) > 0);
    assert_true(sync_drained());

    /* invalid: a new batch_size and log level, plus an unknown key */
    from = itest_daemon_log_size(&S);
    assert_int_equal(write_sync_config(50, "error", "no_such_section: 1\n"), 0);
    assert_int_equal(kill(S.pid, SIGHUP), 0);
    assert_true(itest_daemon_wait_log(&S, from, "keeping the running configuration", WAIT_MS) > 0);
    from = itest_daemon_log_size(&S);
    sync_insert(11, 20);
    /* still batches of 3, and still logged at debug */
    assert_true(itest_daemon_wait_log(&S, from, "applied batch: taken=3 ", WAIT_MS) > 0);
    assert_true(sync_drained());
    assert_int_equal(itest_daemon_log_count(&S, from, "applied batch: taken=10 ", NULL), 0);

    /* valid: the new batch_size takes effect */
    from = itest_daemon_log_size(&S);
    assert_int_equal(write_sync_config(50, "debug", NULL), 0);
    assert_int_equal(kill(S.pid, SIGHUP), 0);
    assert_true(itest_daemon_wait_log(&S, from, "sync.batch_size", WAIT_MS) > 0);
    assert_true(itest_daemon_wait_log(&S, from, "in force", WAIT_MS) > 0);
    from = itest_daemon_log_size(&S);
    sync_insert(21, 30);
    assert_true(itest_daemon_wait_log(&S, from, "applied batch: taken=10 ", WAIT_MS) > 0);
    assert_true(sync_drained());
    assert_int_equal(itest_daemon_log_count(&S, from, "applied batch: taken=3 ", NULL), 0);
}

/* 5. SIGTERM while an apply is blocked on a lock: the daemon waits (up to
 * the stop timeout); a second SIGTERM exits at once with 0; the change it
 * was applying is still in the change log and a new daemon applies it. */
static void test_second_sigterm_exits_with_work_in_flight(void **state)
{
    (void)state;
    PGconn *locker = itest_connect(T.sync_conninfo);
    itest_exec_ok(locker, "BEGIN");
    itest_exec_ok(locker, "LOCK TABLE items_shadow IN ACCESS EXCLUSIVE MODE");
    sync_insert(100, 100);
    /* the daemon's apply is now waiting for our lock */
    assert_true(itest_wait_value(T.sync_conninfo,
                              "SELECT count(*) FROM pg_stat_activity WHERE datname = '" SYNC_DB
                              "' AND application_name = 'pgshadowd/main' "
                              "AND wait_event_type = 'Lock'",
                              "1", WAIT_MS));
    itest_daemon_drain(&S);
    int from_msg = S.n_msgs;
    assert_int_equal(kill(S.pid, SIGTERM), 0);
    assert_true(itest_daemon_wait_msg(&S, from_msg, "STOPPING=1", WAIT_MS) >= 0);
    assert_true(itest_daemon_wait_log(&S, 0, "stopping: waiting up to", WAIT_MS) > 0);
    usleep(700 * 1000);
    assert_false(itest_daemon_reap(&S, 0)); /* still waiting for the work in flight */
    int64_t t0 = itest_now_ms();
    assert_int_equal(kill(S.pid, SIGTERM), 0);
    assert_true(itest_daemon_reap(&S, 5000)); /* at once, not after the 10 s stop timeout */
    int64_t took = itest_now_ms() - t0;
    assert_true(WIFEXITED(S.exit_status));
    assert_int_equal(WEXITSTATUS(S.exit_status), 0);
    assert_true(itest_daemon_wait_log(&S, 0, "second stop request: exiting now", WAIT_MS) > 0);
    fprintf(stderr, "test-daemon: second SIGTERM -> exit in %lld ms\n", (long long)took);

    /* The orphaned backend is still queued on the lock; the server ends such
     * a session once it notices the client is gone. Make it notice now. */
    itest_exec_on(T.sync_conninfo, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                                   "datname = '" SYNC_DB "' AND application_name LIKE 'pgshadowd%'");
    assert_true(itest_wait_value(T.sync_conninfo,
                              "SELECT count(*) FROM pg_stat_activity WHERE datname = '" SYNC_DB
                              "' AND application_name LIKE 'pgshadowd%'",
                              "0", WAIT_MS));
    itest_exec_ok(locker, "ROLLBACK");
    PQfinish(locker);
    char *v = itest_value_on(T.sync_conninfo,
                             "SELECT count(*) FROM pgshadow.change_log WHERE key = ARRAY['100']");
    assert_non_null(v);
    assert_string_equal(v, "1"); /* nothing lost */
    free(v);
    v = itest_value_on(T.sync_conninfo, "SELECT count(*) FROM items_shadow WHERE id = 100");
    assert_non_null(v);
    assert_string_equal(v, "0");
    free(v);

    /* a new start applies it */
    itest_daemon_cleanup(&S);
    S = (itest_daemon)PROC_INIT;
    S.log_level = NULL;
    assert_int_equal(spawn(&S, "sync2", T.sync_cfg, NULL), 0);
    assert_true(itest_wait_value(T.sync_conninfo, "SELECT count(*) FROM items_shadow WHERE id = 100",
                              "1", WAIT_MS));
    assert_true(sync_drained());
}

/* SIGPIPE is ignored; SIGINT stops gracefully like SIGTERM. */
static void test_sigpipe_ignored_sigint_stops(void **state)
{
    (void)state;
    assert_true(itest_daemon_wait_log(&S, 0, "sync: leader lock acquired", WAIT_MS) > 0);
    assert_int_equal(kill(S.pid, SIGPIPE), 0);
    size_t from = itest_daemon_log_size(&S);
    sync_insert(200, 204); /* still alive and working */
    assert_true(itest_daemon_wait_log(&S, from, "applied batch: taken=5 ", WAIT_MS) > 0);
    assert_false(itest_daemon_reap(&S, 0));
    assert_true(itest_wait_value(T.sync_conninfo, "SELECT count(*) FROM items_shadow WHERE id >= 200",
                              "5", WAIT_MS));

    itest_daemon_drain(&S);
    int from_msg = S.n_msgs;
    from = itest_daemon_log_size(&S);
    assert_int_equal(kill(S.pid, SIGINT), 0);
    assert_true(itest_daemon_wait_msg(&S, from_msg, "STOPPING=1", WAIT_MS) >= 0);
    assert_true(itest_daemon_reap(&S, WAIT_MS));
    assert_true(WIFEXITED(S.exit_status));
    assert_int_equal(WEXITSTATUS(S.exit_status), 0);
    assert_true(itest_daemon_wait_log(&S, from, "SIGINT received", WAIT_MS) > 0);
    assert_true(itest_daemon_wait_log(&S, from, "info: stopped", WAIT_MS) > 0);
    assert_int_equal(itest_daemon_log_count(&S, from, "second stop request", NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_config),
        cmocka_unit_test(test_starts_without_database),
        cmocka_unit_test(test_ready_and_status),
        cmocka_unit_test(test_connects),
        cmocka_unit_test(test_notify_received),
        cmocka_unit_test(test_survives_restart),
        cmocka_unit_test(test_reload_valid),
        cmocka_unit_test(test_reload_invalid_keeps_config),
        cmocka_unit_test(test_reload_past_error_cap_keeps_config),
        cmocka_unit_test(test_reload_conninfo_reconnects),
        cmocka_unit_test(test_watchdog),
        cmocka_unit_test(test_sigterm),
        cmocka_unit_test(test_no_password_in_log),
        cmocka_unit_test(test_wrong_password_from_service_file),
        cmocka_unit_test(test_tls_backends),
        cmocka_unit_test(test_tls_untrusted_ca_refused),
        cmocka_unit_test(test_sync_setup),
        cmocka_unit_test(test_reload_old_values_stay_new_ones_apply),
        cmocka_unit_test(test_second_sigterm_exits_with_work_in_flight),
        cmocka_unit_test(test_sigpipe_ignored_sigint_stops),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
