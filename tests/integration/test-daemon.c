/*
 * test-daemon.c - pgshadowd end to end against the throwaway cluster.
 *
 * Starts the real binary ($PGSHADOWD) with a test-owned NOTIFY_SOCKET and
 * stderr captured to a file, then proves, in order:
 *  - READY/STATUS, connecting as the scram-only role pgshadow_pw with its
 *    password from the harness passfile (PGPASSFILE), receiving a NOTIFY,
 *    surviving an immediate server restart (reconnect, re-LISTEN, resync),
 *    SIGPIPE ignored, reloads, the watchdog, SIGTERM with exit 0, and that the
 *    password never reached the debug-level log nor a notify message;
 *  - a wrong password from a service file: the authentication failure is
 *    logged and retried, and the secret appears in no log line or STATUS=;
 *  - TLS: over TCP with sslmode=verify-full every daemon backend uses TLS
 *    (pg_stat_ssl); a server certificate from a CA the daemon does not trust
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
    const char *log_level; /* --log-level, or NULL: follow the config */
    const char *passfile;  /* PGPASSFILE, or NULL: the harness passfile */
    char log[128], sock[128];
    int sock_fd;
    pid_t pid;
    int exit_status; /* waitpid status once reaped */
    bool reaped;
    char *msgs[MAX_MSGS];
    int n_msgs;
} proc;

#define SYNC_DB "pgshadow_itest_daemon"

static struct {
    const char *pgshadowd, *pgshadowctl, *conninfo, *cluster, *srcdir;
    const char *tls_conninfo, *passfile, *pghost, *pgport;
    char dir[64];
    char cfg[128], service[128], sync_cfg[128];
    char pw_conninfo[256];   /* pgshadow_pw over the unix socket */
    char sync_conninfo[256]; /* postgres on SYNC_DB */
    char password[128];      /* pgshadow_pw's, read from the passfile */
    char secret[64];         /* a wrong password, in a service file */
} T;

#define PROC_INIT {.log_level = "debug", .sock_fd = -1, .pid = -1}
static proc P = PROC_INIT; /* the daemon most tests share */
static proc S = PROC_INIT; /* the one with the sync engine on SYNC_DB */

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

static size_t log_size_p(proc *p)
{
    struct stat st;
    return stat(p->log, &st) == 0 ? (size_t)st.st_size : 0;
}
#define log_size() log_size_p(&P)

/* No notify message of p contains needle. */
static void assert_no_msg_contains(proc *p, const char *needle)
{
    drain_notify_p(p);
    for (int i = 0; i < p->n_msgs; i++)
        if (strstr(p->msgs[i], needle))
            fail_msg("a notify message contains the secret: %s", p->msgs[i]);
}

/* Lines of p's log (from offset) containing all of a and b. */
static int log_count_p(proc *p, size_t from, const char *a, const char *b)
{
    char *text = read_log_p(p);
    int n = 0;
    char *line = from <= strlen(text) ? text + from : text + strlen(text);
    while (line && *line) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        if (strstr(line, a) && (!b || strstr(line, b)))
            n++;
        line = end ? end + 1 : NULL;
    }
    free(text);
    return n;
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
    if (write_file(tmp, text) < 0)
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
        setenv("PGPASSFILE", p->passfile ? p->passfile : T.passfile, 1);
        unsetenv("PGPASSWORD");
        unsetenv("PGSERVICE");
        if (p->log_level)
            execl(T.pgshadowd, "pgshadowd", "-c", cfg, "--log-level", p->log_level, (char *)NULL);
        else
            execl(T.pgshadowd, "pgshadowd", "-c", cfg, (char *)NULL);
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

static PGconn *db_connect(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "test connection failed: %s\n", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Run sql on conn; true when it succeeded. */
static bool db_run(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "query failed: %s: %s\n", sql, PQerrorMessage(c));
    PQclear(r);
    return ok;
}

/* First value of a query on a fresh connection ("" on error). */
static void db_value(const char *conninfo, const char *sql, char *out, size_t len)
{
    out[0] = '\0';
    PGconn *c = db_connect(conninfo);
    if (!c)
        return;
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
        snprintf(out, len, "%s", PQgetvalue(r, 0, 0));
    else
        fprintf(stderr, "query failed: %s: %s\n", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* Poll until sql's first value equals want. */
static bool db_wait_value(const char *conninfo, const char *sql, const char *want)
{
    int64_t deadline = now_ms() + WAIT_MS;
    char v[256];
    do {
        db_value(conninfo, sql, v, sizeof v);
        if (strcmp(v, want) == 0)
            return true;
        usleep(50 * 1000);
    } while (now_ms() < deadline);
    fprintf(stderr, "timed out: %s gave '%s', want '%s'\n", sql, v, want);
    return false;
}

static int group_setup(void **state)
{
    (void)state;
    T.pgshadowd = getenv("PGSHADOWD");
    T.pgshadowctl = getenv("PGSHADOWCTL");
    T.conninfo = getenv("PGSHADOW_TEST_CONNINFO");
    T.cluster = getenv("PGSHADOW_TEST_CLUSTER");
    T.srcdir = getenv("PGSHADOW_SRCDIR");
    T.tls_conninfo = getenv("PGSHADOW_TEST_TLS_CONNINFO");
    T.passfile = getenv("PGSHADOW_TEST_PGPASSFILE");
    T.pghost = getenv("PGSHADOW_TEST_PGHOST");
    T.pgport = getenv("PGSHADOW_TEST_PGPORT");
    if (!T.pgshadowd || !T.pgshadowctl || !T.conninfo || !T.cluster || !T.srcdir ||
        !T.tls_conninfo || !T.passfile || !T.pghost || !T.pgport) {
        fprintf(stderr, "test-daemon: PGSHADOWD, PGSHADOWCTL, PGSHADOW_SRCDIR and the "
                        "PGSHADOW_TEST_* variables of tests/harness/pgcluster.sh (CONNINFO, "
                        "CLUSTER, TLS_CONNINFO, PGPASSFILE, PGHOST, PGPORT) must be set (run "
                        "through tests/run or meson test with a cluster started)\n");
        return -1;
    }
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

    return spawn(&P, "main", T.cfg);
}

static int group_teardown(void **state)
{
    (void)state;
    proc_cleanup(&P);
    proc_cleanup(&S);
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
    proc q = PROC_INIT;
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
    proc q = PROC_INIT;
    q.passfile = nopass; /* only the service file's password is in reach */
    assert_int_equal(spawn(&q, "badpw", cfg), 0);
    size_t a = wait_log_p(&q, 0, "connection attempt failed: ");
    size_t b = a ? wait_log_p(&q, a, "connection attempt failed: ") : 0; /* retried */
    int waiting = wait_msg_p(&q, 0, "STATUS=waiting for database");
    bool alive = kill(q.pid, 0) == 0;
    kill(q.pid, SIGTERM);
    bool gone = reap_p(&q, WAIT_MS);
    int st = q.exit_status;
    char *text = read_log_p(&q);
    drain_notify_p(&q);
    bool status_says_auth = false;
    for (int i = 0; i < q.n_msgs; i++)
        if (strstr(q.msgs[i], "STATUS=waiting for database") &&
            strstr(q.msgs[i], "password authentication failed"))
            status_says_auth = true;
    int errlines = log_count_p(&q, 0, "connection attempt failed: ",
                               "password authentication failed for user \"pgshadow_pw\"");
    bool leaked = strstr(text, T.secret) != NULL;
    if (leaked)
        fprintf(stderr, "log:\n%s\n", text);
    free(text);
    assert_no_msg_contains(&q, T.secret);
    proc_cleanup(&q);
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
    proc q = PROC_INIT;
    assert_int_equal(spawn(&q, "tls", cfg), 0);
    size_t up = wait_log_p(&q, 0, "resync: draining change log after (re)connect conn=listen");
    size_t main_up = wait_log_p(&q, 0, "database connection up (host=127.0.0.1");
    char v[64] = "";
    if (up && main_up)
        db_value(T.conninfo,
                 "SELECT count(*) || ':' || coalesce(bool_and(s.ssl), false) || ':' || "
                 "string_agg(DISTINCT a.usename, ',') "
                 "FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                 "WHERE a.application_name LIKE 'pgshadowd%'",
                 v, sizeof v);
    kill(q.pid, SIGTERM);
    bool gone = reap_p(&q, WAIT_MS);
    int st = q.exit_status;
    char *text = read_log_p(&q);
    bool leaked = strstr(text, T.password) != NULL;
    free(text);
    proc_cleanup(&q);
    assert_true(up > 0);
    assert_true(main_up > 0);
    assert_string_equal(v, "2:true:pgshadow_pw"); /* main and listen, both TLS */
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
    proc q = PROC_INIT;
    assert_int_equal(spawn(&q, "badca", cfg), 0);
    size_t a = wait_log_p(&q, 0, "certificate verify failed");
    size_t b = a ? wait_log_p(&q, a, "certificate verify failed") : 0; /* retried */
    int waiting = wait_msg_p(&q, 0, "STATUS=waiting for database");
    bool alive = kill(q.pid, 0) == 0;
    /* two failed attempts (a retry) must be logged; poll, since the second
     * comes after a backoff delay that is longer under the sanitizers */
    int failed = 0;
    for (int64_t deadline = now_ms() + WAIT_MS; now_ms() < deadline; usleep(50 * 1000)) {
        drain_notify_p(&q);
        failed = log_count_p(&q, 0, "warning: pg ", "connection attempt failed");
        if (failed >= 2)
            break;
    }
    kill(q.pid, SIGTERM);
    bool gone = reap_p(&q, WAIT_MS);
    int st = q.exit_status;
    int connected = log_count_p(&q, 0, "database connection up", NULL);
    proc_cleanup(&q);
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

static int run_ctl(const char *cfg, const char *arg)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s' -c '%s' %s >>'%s/ctl.log' 2>&1", T.pgshadowctl, cfg, arg,
             T.dir);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void sync_insert(int from, int to)
{
    PGconn *c = db_connect(T.sync_conninfo);
    assert_non_null(c);
    char sql[160];
    snprintf(sql, sizeof sql,
             "INSERT INTO items SELECT g, 'v' || g FROM generate_series(%d, %d) g", from, to);
    bool ok = db_run(c, sql); /* one transaction: the daemon sees all rows at once */
    PQfinish(c);
    assert_true(ok);
}

static bool sync_drained(void)
{
    return db_wait_value(T.sync_conninfo, "SELECT count(*) FROM pgshadow.change_log", "0");
}

static void test_sync_setup(void **state)
{
    (void)state;
    PGconn *c = db_connect(T.conninfo);
    assert_non_null(c);
    assert_true(db_run(c, "DROP DATABASE IF EXISTS " SYNC_DB " WITH (FORCE)"));
    assert_true(db_run(c, "CREATE DATABASE " SYNC_DB));
    PQfinish(c);
    c = db_connect(T.sync_conninfo);
    assert_non_null(c);
    assert_true(db_run(c, "CREATE TABLE items (id int PRIMARY KEY, v text)"));
    PQfinish(c);
    assert_int_equal(write_sync_config(3, "debug", NULL), 0);
    assert_int_equal(run_ctl(T.sync_cfg, "install"), 0);
    S.log_level = NULL; /* log.level from the file: reloads change it */
    assert_int_equal(spawn(&S, "sync", T.sync_cfg), 0);
    assert_true(wait_log_p(&S, 0, "sync: backfill complete") > 0);
}

/* 6. An invalid reload keeps every old value in force (batch_size 3 and
 * log.level debug, seen in the batches the daemon takes and in its debug
 * lines); a valid one puts the new batch_size in force. */
static void test_reload_old_values_stay_new_ones_apply(void **state)
{
    (void)state;
    size_t from = log_size_p(&S);
    sync_insert(1, 10);
    assert_true(wait_log_p(&S, from, "applied batch: taken=3 ") > 0);
    assert_true(sync_drained());

    /* invalid: a new batch_size and log level, plus an unknown key */
    from = log_size_p(&S);
    assert_int_equal(write_sync_config(50, "error", "no_such_section: 1\n"), 0);
    assert_int_equal(kill(S.pid, SIGHUP), 0);
    assert_true(wait_log_p(&S, from, "keeping the running configuration") > 0);
    from = log_size_p(&S);
    sync_insert(11, 20);
    /* still batches of 3, and still logged at debug */
    assert_true(wait_log_p(&S, from, "applied batch: taken=3 ") > 0);
    assert_true(sync_drained());
    assert_int_equal(log_count_p(&S, from, "applied batch: taken=10 ", NULL), 0);

    /* valid: the new batch_size takes effect */
    from = log_size_p(&S);
    assert_int_equal(write_sync_config(50, "debug", NULL), 0);
    assert_int_equal(kill(S.pid, SIGHUP), 0);
    assert_true(wait_log_p(&S, from, "sync.batch_size") > 0);
    assert_true(wait_log_p(&S, from, "in force") > 0);
    from = log_size_p(&S);
    sync_insert(21, 30);
    assert_true(wait_log_p(&S, from, "applied batch: taken=10 ") > 0);
    assert_true(sync_drained());
    assert_int_equal(log_count_p(&S, from, "applied batch: taken=3 ", NULL), 0);
}

/* 5. SIGTERM while an apply is blocked on a lock: the daemon waits (up to
 * the stop timeout); a second SIGTERM exits at once with 0; the change it
 * was applying is still in the change log and a new daemon applies it. */
static void test_second_sigterm_exits_with_work_in_flight(void **state)
{
    (void)state;
    PGconn *locker = db_connect(T.sync_conninfo);
    assert_non_null(locker);
    assert_true(db_run(locker, "BEGIN"));
    assert_true(db_run(locker, "LOCK TABLE items_shadow IN ACCESS EXCLUSIVE MODE"));
    sync_insert(100, 100);
    /* the daemon's apply is now waiting for our lock */
    assert_true(db_wait_value(T.sync_conninfo,
                              "SELECT count(*) FROM pg_stat_activity WHERE datname = '" SYNC_DB
                              "' AND application_name LIKE 'pgshadowd%' "
                              "AND wait_event_type = 'Lock'",
                              "1"));
    drain_notify_p(&S);
    int from_msg = S.n_msgs;
    assert_int_equal(kill(S.pid, SIGTERM), 0);
    assert_true(wait_msg_p(&S, from_msg, "STOPPING=1") >= 0);
    assert_true(wait_log_p(&S, 0, "stopping: waiting up to") > 0);
    usleep(700 * 1000);
    assert_false(reap_p(&S, 0)); /* still waiting for the work in flight */
    int64_t t0 = now_ms();
    assert_int_equal(kill(S.pid, SIGTERM), 0);
    assert_true(reap_p(&S, 5000)); /* at once, not after the 10 s stop timeout */
    int64_t took = now_ms() - t0;
    assert_true(WIFEXITED(S.exit_status));
    assert_int_equal(WEXITSTATUS(S.exit_status), 0);
    assert_true(wait_log_p(&S, 0, "second stop request: exiting now") > 0);
    fprintf(stderr, "test-daemon: second SIGTERM -> exit in %lld ms\n", (long long)took);

    /* The orphaned backend is still queued on the lock; the server ends such
     * a session once it notices the client is gone. Make it notice now. */
    PGconn *c = db_connect(T.sync_conninfo);
    assert_non_null(c);
    assert_true(db_run(c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname "
                          "= '" SYNC_DB "' AND application_name LIKE 'pgshadowd%'"));
    PQfinish(c);
    assert_true(db_wait_value(T.sync_conninfo,
                              "SELECT count(*) FROM pg_stat_activity WHERE datname = '" SYNC_DB
                              "' AND application_name LIKE 'pgshadowd%'",
                              "0"));
    assert_true(db_run(locker, "ROLLBACK"));
    PQfinish(locker);
    char v[64];
    db_value(T.sync_conninfo,
             "SELECT count(*) FROM pgshadow.change_log WHERE key = ARRAY['100']", v, sizeof v);
    assert_string_equal(v, "1"); /* nothing lost */
    db_value(T.sync_conninfo, "SELECT count(*) FROM items_shadow WHERE id = 100", v, sizeof v);
    assert_string_equal(v, "0");

    /* a new start applies it */
    proc_cleanup(&S);
    S = (proc)PROC_INIT;
    S.log_level = NULL;
    assert_int_equal(spawn(&S, "sync2", T.sync_cfg), 0);
    assert_true(db_wait_value(T.sync_conninfo, "SELECT count(*) FROM items_shadow WHERE id = 100",
                              "1"));
    assert_true(sync_drained());
}

/* SIGPIPE is ignored; SIGINT stops gracefully like SIGTERM. */
static void test_sigpipe_ignored_sigint_stops(void **state)
{
    (void)state;
    assert_true(wait_log_p(&S, 0, "sync: leader lock acquired") > 0);
    assert_int_equal(kill(S.pid, SIGPIPE), 0);
    size_t from = log_size_p(&S);
    sync_insert(200, 204); /* still alive and working */
    assert_true(wait_log_p(&S, from, "applied batch: taken=5 ") > 0);
    assert_false(reap_p(&S, 0));
    assert_true(db_wait_value(T.sync_conninfo, "SELECT count(*) FROM items_shadow WHERE id >= 200",
                              "5"));

    drain_notify_p(&S);
    int from_msg = S.n_msgs;
    from = log_size_p(&S);
    assert_int_equal(kill(S.pid, SIGINT), 0);
    assert_true(wait_msg_p(&S, from_msg, "STOPPING=1") >= 0);
    assert_true(reap_p(&S, WAIT_MS));
    assert_true(WIFEXITED(S.exit_status));
    assert_int_equal(WEXITSTATUS(S.exit_status), 0);
    assert_true(wait_log_p(&S, from, "SIGINT received") > 0);
    assert_true(wait_log_p(&S, from, "info: stopped") > 0);
    assert_int_equal(log_count_p(&S, from, "second stop request", NULL), 0);
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
