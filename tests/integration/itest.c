/*
 * itest.c - the integration tests' shared helpers (see itest.h).
 *
 * Owns nothing between calls except what a caller's itest_db / itest_run /
 * itest_daemon / itest_bench holds. Everything that must succeed fails the
 * current cmocka test with the reason; nothing skips but a load case in a
 * build that skips them (itest_load_skipped), visibly.
 *
 * Size: a little over 800 lines on purpose: it is the one library every
 * itest-* binary links, a section per concern in itest.h's order; splitting
 * it would only add files to keep in step with one header.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "itest.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- environment and time ------------------------------------------- */

const char *itest_env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        fail_msg("%s is not set: run through tests/run, or start a cluster with "
                 "tests/harness/pgcluster.sh and export its variables",
                 name);
    return v;
}

bool itest_require_env(const char *prog, const char *const *names)
{
    bool ok = true;
    for (; *names; names++) {
        const char *v = getenv(*names);
        if (!v || !*v) {
            fprintf(stderr, "%s: %s is not set\n", prog, *names);
            ok = false;
        }
    }
    if (!ok)
        fprintf(stderr, "%s: run through tests/run, which starts a throwaway cluster "
                        "(tests/harness/pgcluster.sh) and sets them\n", prog);
    return ok;
}

int64_t itest_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void itest_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- files ---------------------------------------------------------- */

char *itest_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    assert_non_null(m);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(f);
    assert_int_equal(fclose(m), 0);
    return buf;
}

char *itest_read_sql(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/sql/%s", itest_env("PGSHADOW_SRCDIR"), name);
    char *s = itest_read_file(path);
    if (!s)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    return s;
}

char *itest_install_sql(void)
{
    char *list = itest_read_sql("install.list");
    size_t cap = 1 << 16, len = 0;
    char *all = malloc(cap);
    assert_non_null(all);
    all[0] = '\0';
    for (char *save = NULL, *line = strtok_r(list, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        while (*line == ' ' || *line == '\t')
            line++;
        if (!*line || *line == '#')
            continue;
        line[strcspn(line, " \t")] = '\0'; /* the name; tags follow it */
        char *text = itest_read_sql(line);
        size_t n = strlen(text);
        while (len + n + 2 > cap) {
            cap *= 2;
            all = realloc(all, cap);
            assert_non_null(all);
        }
        memcpy(all + len, text, n);
        len += n;
        all[len++] = '\n';
        all[len] = '\0';
        free(text);
    }
    free(list);
    return all;
}

size_t itest_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

int itest_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    /* pgshadowd refuses a config that group or others can write, whatever
     * the umask this test runs under */
    if (fchmod(fileno(f), 0644) != 0) {
        fclose(f);
        return -1;
    }
    return fclose(f);
}

/* ---- libpq ----------------------------------------------------------- */

char *itest_conninfo_db(const char *dbname)
{
    char *s = NULL;
    assert_true(asprintf(&s, "%s dbname=%s", itest_env("PGSHADOW_TEST_CONNINFO"), dbname) > 0);
    return s;
}

static void quiet(void *arg, const PGresult *res)
{
    (void)arg;
    (void)res;
}

PGconn *itest_connect(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
        PQfinish(c);
        fail_msg("connect: %s", msg);
    }
    PQsetNoticeReceiver(c, quiet, NULL);
    return c;
}

PGconn *itest_connect_db(const char *dbname)
{
    if (!dbname)
        return itest_connect(itest_env("PGSHADOW_TEST_CONNINFO"));
    char *ci = itest_conninfo_db(dbname);
    PGconn *c = PQconnectdb(ci);
    free(ci);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect to %s: %s", dbname, PQerrorMessage(c));
    PQsetNoticeReceiver(c, quiet, NULL);
    return c;
}

char *itest_query(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "SQL failed: %s\n--- %s\n", PQresultErrorMessage(r), sql);
        PQclear(r);
        fail();
    }
    char *out;
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0)
        out = strdup(PQgetisnull(r, 0, 0) ? "<NULL>" : PQgetvalue(r, 0, 0));
    else
        out = strdup("");
    PQclear(r);
    assert_non_null(out);
    return out;
}

void itest_exec_ok(PGconn *c, const char *sql)
{
    free(itest_query(c, sql));
}

void itest_expect_sql(PGconn *c, const char *sql, const char *want)
{
    char *got = itest_query(c, sql);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "query: %s\n  want: %s\n  got:  %s\n", sql, want, got);
    assert_string_equal(got, want);
    free(got);
}

void itest_exec_on(const char *conninfo, const char *sql)
{
    PGconn *c = itest_connect(conninfo);
    itest_exec_ok(c, sql);
    PQfinish(c);
}

char *itest_value_on(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "test connection failed: %s\n", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeReceiver(c, quiet, NULL);
    PGresult *r = PQexec(c, sql);
    char *v = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        v = strdup(PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    else
        fprintf(stderr, "query failed: %s: %s\n", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return v;
}

bool itest_wait_value(const char *conninfo, const char *sql, const char *want,
                      int64_t timeout_ms)
{
    int64_t deadline = itest_now_ms() + timeout_ms;
    char *v = NULL;
    do {
        free(v);
        v = itest_value_on(conninfo, sql);
        if (v && strcmp(v, want) == 0) {
            free(v);
            return true;
        }
        itest_sleep_ms(50);
    } while (itest_now_ms() < deadline);
    fprintf(stderr, "timed out: %s gave '%s', want '%s'\n", sql, v ? v : "(error)", want);
    free(v);
    return false;
}

bool itest_true_on(const char *conninfo, const char *sql)
{
    char *v = itest_value_on(conninfo, sql);
    bool t = v && strcmp(v, "t") == 0;
    free(v);
    return t;
}

bool itest_wait_true(const char *conninfo, const char *sql, int64_t timeout_ms)
{
    int64_t end = itest_now_ms() + timeout_ms;
    while (itest_now_ms() < end) {
        if (itest_true_on(conninfo, sql))
            return true;
        itest_sleep_ms(100);
    }
    return itest_true_on(conninfo, sql);
}

/* ---- fresh databases ------------------------------------------------ */

void itest_db_drop(const char *name)
{
    PGconn *admin = itest_connect_db(NULL);
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    itest_exec_ok(admin, sql);
    PQfinish(admin);
}

void itest_db_create(const char *name)
{
    PGconn *admin = itest_connect_db(NULL);
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    itest_exec_ok(admin, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    itest_exec_ok(admin, sql);
    PQfinish(admin);
}

itest_db *itest_db_new(const char *prefix)
{
    static int n;
    itest_db *t = calloc(1, sizeof *t);
    assert_non_null(t);
    snprintf(t->name, sizeof t->name, "%s_%d_%d", prefix, (int)getpid(), ++n);
    itest_db_create(t->name);
    t->c = itest_connect_db(t->name);
    return t;
}

void itest_db_free(itest_db *t)
{
    if (!t)
        return;
    PQfinish(t->c);
    itest_db_drop(t->name);
    free(t);
}

/* ---- child programs ------------------------------------------------- */

void itest_child_start(itest_child *ch, char *const argv[])
{
    snprintf(ch->outp, sizeof ch->outp, "/tmp/itest-out-XXXXXX");
    snprintf(ch->errp, sizeof ch->errp, "/tmp/itest-err-XXXXXX");
    int fo = mkstemp(ch->outp), fe = mkstemp(ch->errp);
    assert_true(fo >= 0 && fe >= 0);
    ch->pid = fork();
    assert_true(ch->pid >= 0);
    if (ch->pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        dup2(fo, STDOUT_FILENO);
        dup2(fe, STDERR_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fo);
    close(fe);
}

void itest_child_finish(itest_child *ch, itest_run *r)
{
    int st;
    assert_int_equal(waitpid(ch->pid, &st, 0), ch->pid);
    r->rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r->out = itest_read_file(ch->outp);
    r->err = itest_read_file(ch->errp);
    unlink(ch->outp);
    unlink(ch->errp);
    assert_non_null(r->out);
    assert_non_null(r->err);
}

void itest_run_argv(char *const argv[], itest_run *r)
{
    itest_child ch;
    itest_child_start(&ch, argv);
    itest_child_finish(&ch, r);
}

void itest_run_ctl(itest_run *r, const char *config, ...)
{
    char *argv[16];
    int n = 0;
    argv[n++] = (char *)itest_env("PGSHADOWCTL");
    if (config) {
        argv[n++] = "-c";
        argv[n++] = (char *)config;
    }
    va_list ap;
    va_start(ap, config);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < 15);
        argv[n++] = (char *)a;
    }
    va_end(ap);
    argv[n] = NULL;
    itest_run_argv(argv, r);
}

void itest_run_free(itest_run *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

void itest_cluster_restart(void)
{
    char script[4096];
    snprintf(script, sizeof script, "%s/tests/harness/pgcluster.sh", itest_env("PGSHADOW_SRCDIR"));
    char *argv[] = {script, "restart", (char *)itest_env("PGSHADOW_TEST_CLUSTER"), "immediate",
                    NULL};
    itest_run r;
    itest_run_argv(argv, &r);
    if (r.rc != 0)
        fail_msg("pgcluster.sh restart failed (rc %d):\n%s%s", r.rc, r.out, r.err);
    itest_run_free(&r);
}

char *itest_schema_dump(const char *dbname, bool no_owner)
{
    char bin[4096];
    snprintf(bin, sizeof bin, "%s/pg_dump", itest_env("PGSHADOW_TEST_PGBIN"));
    char *ci = itest_conninfo_db(dbname);
    char *argv[8];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "--schema-only";
    if (no_owner)
        argv[n++] = "--no-owner";
    argv[n++] = "-d";
    argv[n++] = ci;
    argv[n] = NULL;
    itest_run r;
    itest_run_argv(argv, &r);
    free(ci);
    if (r.rc != 0)
        fail_msg("pg_dump failed (rc %d): %s", r.rc, r.err);
    free(r.err);
    char *src = r.out, *dst = r.out;
    while (*src) {
        char *eol = strchr(src, '\n');
        size_t len = eol ? (size_t)(eol - src) + 1 : strlen(src);
        if (strncmp(src, "\\restrict ", 10) != 0 && strncmp(src, "\\unrestrict ", 12) != 0) {
            memmove(dst, src, len);
            dst += len;
        }
        src += len;
    }
    *dst = '\0';
    assert_true(strlen(r.out) > 100); /* a real dump, not an empty file */
    return r.out;
}

/* ---- pgshadowd ------------------------------------------------------- */

void itest_daemon_paths(itest_daemon *d, const char *dir, const char *tag)
{
    snprintf(d->log, sizeof d->log, "%s/%s.log", dir, tag);
    snprintf(d->sock, sizeof d->sock, "%s/%s.sock", dir, tag);
}

int itest_daemon_start(itest_daemon *d, const char *cfg)
{
    const char *bin = itest_env("PGSHADOWD");
    if (d->sock[0] && d->sock_fd < 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(d->sock) >= sizeof sa.sun_path)
            return -1;
        memcpy(sa.sun_path, d->sock, strlen(d->sock) + 1);
        unlink(d->sock);
        d->sock_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (d->sock_fd < 0 || bind(d->sock_fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            perror("notify socket");
            return -1;
        }
    }
    int logfd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (logfd < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        /* a test that dies (or fails an assertion) must not leave a daemon
         * behind to hold the lock of the next run */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        dup2(logfd, STDOUT_FILENO);
        dup2(logfd, STDERR_FILENO);
        if (d->sock[0])
            setenv("NOTIFY_SOCKET", d->sock, 1);
        else
            unsetenv("NOTIFY_SOCKET");
        unsetenv("JOURNAL_STREAM");
        for (int i = 0; i < ITEST_MAX_ENV && d->env[i]; i++) {
            const char *eq = strchr(d->env[i], '=');
            if (eq) {
                char name[128];
                snprintf(name, sizeof name, "%.*s", (int)(eq - d->env[i]), d->env[i]);
                setenv(name, eq + 1, 1);
            } else {
                unsetenv(d->env[i]);
            }
        }
        if (d->log_level)
            execl(bin, "pgshadowd", "-c", cfg, "--log-level", d->log_level, (char *)NULL);
        else
            execl(bin, "pgshadowd", "-c", cfg, (char *)NULL);
        _exit(127);
    }
    close(logfd);
    d->pid = pid;
    d->reaped = false;
    d->exit_status = 0;
    return 0;
}

void itest_daemon_drain(itest_daemon *d)
{
    if (d->sock_fd < 0)
        return;
    char buf[4096];
    for (;;) {
        ssize_t n = recv(d->sock_fd, buf, sizeof buf - 1, MSG_DONTWAIT);
        if (n < 0)
            return;
        buf[n] = '\0';
        if (d->n_msgs < ITEST_MAX_MSGS)
            d->msgs[d->n_msgs++] = strdup(buf);
        else {
            static bool said; /* a wait for a later message would time out: say why, once */
            if (!said)
                fprintf(stderr, "itest: more than %d notify messages; later ones are not kept\n",
                        ITEST_MAX_MSGS);
            said = true;
        }
    }
}

int itest_daemon_wait_msg(itest_daemon *d, int from, const char *line, int64_t timeout_ms)
{
    int64_t deadline = itest_now_ms() + timeout_ms;
    size_t ll = strlen(line);
    do {
        itest_daemon_drain(d);
        for (int i = from; i < d->n_msgs; i++) {
            if (!d->msgs[i])
                continue;
            for (const char *p = d->msgs[i]; p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
                if (strncmp(p, line, ll) == 0)
                    return i;
        }
        itest_sleep_ms(50);
    } while (itest_now_ms() < deadline);
    return -1;
}

bool itest_daemon_msg_contains(itest_daemon *d, const char *needle)
{
    itest_daemon_drain(d);
    for (int i = 0; i < d->n_msgs; i++)
        if (d->msgs[i] && strstr(d->msgs[i], needle))
            return true;
    return false;
}

char *itest_daemon_log(const itest_daemon *d)
{
    char *s = itest_read_file(d->log);
    if (!s)
        s = strdup("");
    assert_non_null(s);
    return s;
}

size_t itest_daemon_log_size(const itest_daemon *d)
{
    return itest_file_size(d->log);
}

int itest_daemon_log_count(const itest_daemon *d, size_t from, const char *a, const char *b)
{
    char *text = itest_daemon_log(d);
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

size_t itest_daemon_wait_log(itest_daemon *d, size_t from, const char *needle,
                             int64_t timeout_ms)
{
    int64_t deadline = itest_now_ms() + timeout_ms;
    do {
        itest_daemon_drain(d);
        char *text = itest_daemon_log(d);
        size_t len = strlen(text);
        char *hit = from <= len ? strstr(text + from, needle) : NULL;
        size_t off = hit ? (size_t)(hit - text) + strlen(needle) : 0;
        free(text);
        if (hit)
            return off;
        itest_sleep_ms(50);
    } while (itest_now_ms() < deadline);
    char *text = itest_daemon_log(d);
    fprintf(stderr, "timed out waiting for log text '%s' after offset %zu in %s; log:\n%s\n",
            needle, from, d->log, text);
    free(text);
    return 0;
}

bool itest_daemon_reap(itest_daemon *d, int64_t wait_ms)
{
    if (d->reaped)
        return true;
    if (d->pid <= 0)
        return false;
    int64_t deadline = itest_now_ms() + wait_ms;
    do {
        if (waitpid(d->pid, &d->exit_status, WNOHANG) == d->pid) {
            d->reaped = true;
            return true;
        }
        itest_sleep_ms(50);
    } while (itest_now_ms() < deadline);
    return false;
}

int itest_daemon_kill(itest_daemon *d, int sig)
{
    if (d->pid <= 0 || d->reaped)
        return -1;
    kill(d->pid, sig);
    waitpid(d->pid, &d->exit_status, 0);
    d->reaped = true;
    return d->exit_status;
}

void itest_daemon_cleanup(itest_daemon *d)
{
    if (d->pid > 0 && !d->reaped) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        d->reaped = true;
    }
    if (d->sock_fd >= 0)
        close(d->sock_fd);
    d->sock_fd = -1;
    for (int i = 0; i < d->n_msgs; i++)
        free(d->msgs[i]);
    d->n_msgs = 0;
}

/* public.test_diff(table): the tests' own comparison of a registered table
 * with its shadow, independent of apply: a primary row and its shadow row
 * differ when the primary's canonical hash (hash_expr over p), the shadow's
 * stored hash and the hash of the shadow's columns (shadow_hash_expr over
 * s) are not all equal, or the row is not 'synced'; plus rows on one side
 * only. The number of such rows. */
void itest_create_test_diff(PGconn *c)
{
    itest_exec_ok(c,
            "CREATE FUNCTION public.test_diff(p_table text) RETURNS bigint LANGUAGE plpgsql "
            "SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET extra_float_digits = 1 SET IntervalStyle = 'postgres' "
            "SET bytea_output = 'hex' AS $$\n"
            "DECLARE t pgshadow.tables; j text; n bigint;\n"
            "BEGIN\n"
            "  SELECT * INTO STRICT t FROM pgshadow.tables WHERE table_name = p_table;\n"
            "  SELECT string_agg(format('s.%I = p.%I', k, k), ' AND ') INTO j FROM unnest(t.key_columns) k;\n"
            "  EXECUTE format('SELECT count(*) FROM %I.%I p FULL JOIN %I.%I s ON %s WHERE p.%I IS NULL OR "
            "s.%I IS NULL OR s._shadow_validation_hash IS DISTINCT FROM %s OR "
            "s._shadow_validation_hash IS DISTINCT FROM %s OR s._shadow_sync_status <> ''synced''', "
            "t.schema_name, t.table_name, t.schema_name, t.shadow_name, j, t.key_columns[1], "
            "t.key_columns[1], t.hash_expr, t.shadow_hash_expr) INTO n;\n"
            "  RETURN n;\n"
            "END $$");
}

long itest_query_long(PGconn *c, const char *sql)
{
    char *v = itest_query(c, sql);
    long n = strtol(v, NULL, 10);
    free(v);
    return n;
}

char *itest_conninfo_as(const char *db, const char *user)
{
    char *s = NULL;
    assert_true(asprintf(&s, "%s dbname=%s user=%s", itest_env("PGSHADOW_TEST_CONNINFO"), db, user) > 0);
    return s;
}

PGconn *itest_connect_as(const char *db, const char *user)
{
    char *ci = itest_conninfo_as(db, user);
    PGconn *c = itest_connect(ci);
    free(ci);
    return c;
}

/* ---- load cases -------------------------------------------------------- */

bool itest_skip_load(void)
{
    const char *v = getenv("PGSHADOW_TEST_SKIP_LOAD");
    return v && *v && strcmp(v, "0") != 0;
}

void itest_load_skipped(void **state)
{
    (void)state;
    print_message("load case: skipped in this build (PGSHADOW_TEST_SKIP_LOAD is set: "
                  "tests/run runs the load cases in build-test only)\n");
    skip();
}

/* ---- background pgbench ----------------------------------------------- */

void itest_bench_start(itest_bench *b, const char *dir, const char *script, const char *conninfo,
                       const char *mode)
{
    assert_false(b->on);
    char path[4096], bin[4096];
    snprintf(path, sizeof path, "%s/load.sql", dir);
    assert_int_equal(itest_write_file(path, script), 0);
    snprintf(bin, sizeof bin, "%s/pgbench", itest_env("PGSHADOW_TEST_PGBIN"));
    char *argv[16];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "-n";
    if (mode) {
        argv[n++] = "-M";
        argv[n++] = (char *)mode;
    }
    char *const rest[] = {"-c", "2", "-R", "100", "-T", "900", "-f", path, (char *)conninfo, NULL};
    for (int i = 0; rest[i]; i++)
        argv[n++] = rest[i];
    argv[n] = NULL;
    itest_child_start(&b->child, argv);
    b->on = true;
}

long itest_bench_stop(itest_bench *b, const char *tag, void (*on_fail)(void))
{
    assert_true(b->on);
    b->on = false;
    kill(b->child.pid, SIGALRM);
    itest_run r;
    itest_child_finish(&b->child, &r);
    static const char processed[] = "number of transactions actually processed: ";
    const char *n = strstr(r.out, processed);
    long done = n ? atol(n + strlen(processed)) : 0;
    if (r.rc != 0 || !strstr(r.out, "number of failed transactions: 0 ") || done < 10) {
        if (on_fail)
            on_fail();
        fail_msg("pgbench: rc %d, %ld transactions\n%s\n%s", r.rc, done, r.out, r.err);
    }
    fprintf(stderr, "%s: pgbench: %ld transactions, none failed\n", tag, done);
    itest_run_free(&r);
    return done;
}

void itest_bench_abort(itest_bench *b)
{
    if (!b->on)
        return;
    b->on = false;
    kill(b->child.pid, SIGKILL);
    waitpid(b->child.pid, NULL, 0);
    unlink(b->child.outp);
    unlink(b->child.errp);
}

/* ---- roles and teardown --------------------------------------------------- */

void itest_role_ensure(PGconn *c, const char *role, const char *member_of)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s') THEN "
             "CREATE ROLE %s LOGIN%s%s; END IF; END $$",
             role, role, member_of ? " IN ROLE " : "", member_of ? member_of : "");
    itest_exec_ok(c, sql);
}

void itest_tmpdir_remove(const char *dir)
{
    if (!dir[0] || getenv("PGSHADOW_KEEP_TMP"))
        return;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}
