/*
 * test-daemon.c - pgshadowd end to end against the throwaway cluster.
 *
 * Starts the real binary ($PGSHADOWD) with a test-owned NOTIFY_SOCKET and
 * stderr captured to a file at --log-level debug, then proves, in order:
 * READY/STATUS, connecting, receiving a NOTIFY, surviving an immediate
 * server restart (reconnect, re-LISTEN, resync), reload of a valid and of an
 * invalid file, the watchdog, graceful SIGTERM with exit 0, and that the
 * password libpq reads from a service file never reaches the log.
 *
 * The tests share one daemon and run in order. Every wait is a polling loop
 * with a generous deadline; no sleep is an assertion.
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

#define WAIT_MS 20000
#define MAX_MSGS 512

/* One pgshadowd under test: its notify socket, captured messages and log. */
typedef struct proc {
    char log[128], sock[128];
    int sock_fd;
    pid_t pid;
    int exit_status; /* waitpid status once reaped */
    bool reaped;
    char *msgs[MAX_MSGS];
    int n_msgs;
} proc;

static struct {
    const char *pgshadowd, *conninfo, *cluster, *srcdir;
    char dir[64];
    char cfg[128], service[128];
    char secret[64];
} T;

static proc P = {.sock_fd = -1, .pid = -1}; /* the daemon most tests share */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void drain_notify_p(proc *p)
{
    char buf[4096];
    for (;;) {
        ssize_t n = recv(p->sock_fd, buf, sizeof buf - 1, MSG_DONTWAIT);
        if (n < 0)
            return;
        buf[n] = '\0';
        if (p->n_msgs < MAX_MSGS)
            p->msgs[p->n_msgs++] = strdup(buf);
    }
}

/* Index of the first notify message at or after `from` that starts with
 * prefix (or contains it as a line, for "READY=1" inside a compound
 * message), waiting up to WAIT_MS. -1 on timeout. */
static int wait_msg_p(proc *pr, int from, const char *line)
{
    int64_t deadline = now_ms() + WAIT_MS;
    size_t ll = strlen(line);
    do {
        drain_notify_p(pr);
        for (int i = from; i < pr->n_msgs; i++) {
            for (const char *p = pr->msgs[i]; p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
                if (strncmp(p, line, ll) == 0)
                    return i;
        }
        usleep(50 * 1000);
    } while (now_ms() < deadline);
    return -1;
}

static char *read_log_p(proc *p)
{
    FILE *f = fopen(p->log, "r");
    if (!f)
        return strdup("");
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(f);
    fclose(m);
    return buf;
}

static size_t log_size(void)
{
    struct stat st;
    return stat(P.log, &st) == 0 ? (size_t)st.st_size : 0;
}

/* Wait until the log, from byte offset `from`, contains `needle`. Returns the
 * offset just past the match, or 0 on timeout (printing the log). */
static size_t wait_log_p(proc *p, size_t from, const char *needle)
{
    int64_t deadline = now_ms() + WAIT_MS;
    do {
        drain_notify_p(p); /* keep the daemon's notify queue from filling up */
        char *text = read_log_p(p);
        size_t len = strlen(text);
        char *hit = from <= len ? strstr(text + from, needle) : NULL;
        size_t off = hit ? (size_t)(hit - text) + strlen(needle) : 0;
        free(text);
        if (hit)
            return off;
        usleep(50 * 1000);
    } while (now_ms() < deadline);
    char *text = read_log_p(p);
    fprintf(stderr, "timed out waiting for log text '%s' after offset %zu; log:\n%s\n", needle,
            from, text);
    free(text);
    return 0;
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

#define drain_notify() drain_notify_p(&P)
#define wait_msg(from, line) wait_msg_p(&P, (from), (line))
#define read_log() read_log_p(&P)
#define wait_log(from, needle) wait_log_p(&P, (from), (needle))
#define reap(ms) reap_p(&P, (ms))

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
    if (write_file(tmp, text) < 0)
        return -1;
    return rename(tmp, path);
}

static int write_config(const char *batch_size_line)
{
    return write_config_to(T.cfg, "service=pgshadow_itest", batch_size_line);
}

/* The service file carries the real connection parameters plus a password.
 * The server trusts local connections, so libpq never needs it, but it is
 * in the daemon's reach: it must never show up in the log. */
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
    fprintf(f, "[pgshadow_itest]\n");
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && *o->val && strcmp(o->keyword, "password") != 0)
            fprintf(f, "%s=%s\n", o->keyword, o->val);
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
    snprintf(cmd, sizeof cmd, "'%s' -c '%s' --check-config 2>&1", T.pgshadowd, path);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Reap the daemon if it exited; true when it is gone. */
static bool reap_p(proc *p, int64_t wait_ms)
{
    if (p->reaped)
        return true;
    int64_t deadline = now_ms() + wait_ms;
    do {
        pid_t r = waitpid(p->pid, &p->exit_status, WNOHANG);
        if (r == p->pid) {
            p->reaped = true;
            return true;
        }
        usleep(50 * 1000);
    } while (now_ms() < deadline);
    return false;
}

/* Start pgshadowd -c cfg --log-level debug with its own notify socket and
 * stderr captured to DIR/<tag>.log. */
static int spawn(proc *p, const char *tag, const char *cfg)
{
    snprintf(p->log, sizeof p->log, "%s/%s.log", T.dir, tag);
    snprintf(p->sock, sizeof p->sock, "%s/%s.sock", T.dir, tag);
    p->sock_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(p->sock) >= sizeof sa.sun_path)
        return -1;
    memcpy(sa.sun_path, p->sock, strlen(p->sock) + 1);
    if (p->sock_fd < 0 || bind(p->sock_fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("notify socket");
        return -1;
    }

    int logfd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd < 0)
        return -1;
    p->pid = fork();
    if (p->pid < 0)
        return -1;
    if (p->pid == 0) {
        dup2(logfd, STDERR_FILENO);
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        setenv("NOTIFY_SOCKET", p->sock, 1);
        setenv("WATCHDOG_USEC", "1000000", 1);
        unsetenv("WATCHDOG_PID");
        unsetenv("JOURNAL_STREAM");
        setenv("PGSERVICEFILE", T.service, 1);
        unsetenv("PGPASSWORD");
        unsetenv("PGSERVICE");
        execl(T.pgshadowd, "pgshadowd", "-c", cfg, "--log-level", "debug", (char *)NULL);
        _exit(127);
    }
    close(logfd);
    return 0;
}

static void proc_cleanup(proc *p)
{
    if (p->pid > 0 && !p->reaped) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->reaped = true;
    }
    if (p->sock_fd >= 0)
        close(p->sock_fd);
    p->sock_fd = -1;
    for (int i = 0; i < p->n_msgs; i++)
        free(p->msgs[i]);
    p->n_msgs = 0;
}

/* ------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    T.pgshadowd = getenv("PGSHADOWD");
    T.conninfo = getenv("PGSHADOW_TEST_CONNINFO");
    T.cluster = getenv("PGSHADOW_TEST_CLUSTER");
    T.srcdir = getenv("PGSHADOW_SRCDIR");
    if (!T.pgshadowd || !T.conninfo || !T.cluster || !T.srcdir) {
        fprintf(stderr, "test-daemon: PGSHADOWD, PGSHADOW_TEST_CONNINFO, PGSHADOW_TEST_CLUSTER "
                        "and PGSHADOW_SRCDIR must be set (start a cluster with "
                        "tests/harness/pgcluster.sh and run through meson test)\n");
        return -1;
    }
    snprintf(T.dir, sizeof T.dir, "/tmp/itest-daemon-XXXXXX");
    if (!mkdtemp(T.dir))
        return -1;
    snprintf(T.cfg, sizeof T.cfg, "%s/pgshadow.yaml", T.dir);
    snprintf(T.service, sizeof T.service, "%s/pg_service.conf", T.dir);
    srand((unsigned)(getpid() ^ time(NULL)));
    snprintf(T.secret, sizeof T.secret, "NeverLogMe-%08x%08x", (unsigned)rand(),
             (unsigned)rand());

    if (write_service_file() < 0 || write_config("  batch_size: 1000") < 0)
        return -1;

    return spawn(&P, "main", T.cfg);
}

static int group_teardown(void **state)
{
    (void)state;
    proc_cleanup(&P);
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
    assert_int_equal(write_file(bad, "database:\n  conninfo: 42\nnope: 1\n"), 0);
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
    proc q = {.sock_fd = -1, .pid = -1};
    assert_int_equal(spawn(&q, "nodb", cfg), 0);
    int ready = wait_msg_p(&q, 0, "READY=1");
    int waiting = wait_msg_p(&q, 0, "STATUS=waiting for database");
    bool alive = kill(q.pid, 0) == 0;
    kill(q.pid, SIGTERM);
    int stopping = wait_msg_p(&q, 0, "STOPPING=1");
    bool gone = reap_p(&q, WAIT_MS);
    int st = q.exit_status;
    proc_cleanup(&q);
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
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s/tests/harness/pgcluster.sh' restart '%s' immediate",
             T.srcdir, T.cluster);
    assert_int_equal(system(cmd), 0);
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
    assert_true(wait_log(from, "error: reload: ") > 0); /* a located error */
    assert_true(wait_log(from, "pgshadow.yaml:") > 0);
    assert_true(wait_log(from, "keeping the running configuration") > 0);
    /* still working with the old config */
    assert_int_equal(kill(P.pid, 0), 0);
    assert_int_equal(send_notify("pgshadow_changes", "itest-after-bad-reload"), 0);
    assert_true(wait_log(from, "notify channel=pgshadow_changes payload=itest-after-bad-reload") >
                0);
}

/* A changed conninfo makes the daemon reconnect both connections, with the
 * resync hook run for the new listen connection. */
static void test_reload_conninfo_reconnects(void **state)
{
    (void)state;
    drain_notify();
    int from_msg = P.n_msgs;
    size_t from = log_size();
    assert_int_equal(write_config_to(T.cfg, "service=pgshadow_itest connect_timeout=7",
                                     "  batch_size: 500"),
                     0);
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

static void test_no_password_in_log(void **state)
{
    (void)state;
    char *text = read_log();
    assert_true(strlen(text) > 0);
    assert_non_null(strstr(text, "debug: ")); /* it really logged at debug */
    if (strstr(text, T.secret))
        fail_msg("the service-file password appears in the log:\n%s", text);
    free(text);
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
        cmocka_unit_test(test_reload_conninfo_reconnects),
        cmocka_unit_test(test_watchdog),
        cmocka_unit_test(test_sigterm),
        cmocka_unit_test(test_no_password_in_log),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
