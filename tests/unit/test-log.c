/*
 * test-log.c - levels, line format, fields, redaction, rate limiting, the
 * journal detection and the journald native encoding.
 *
 * The rate limiter's windows run on an injected clock: this file defines
 * clock_gettime(), which the static libpgshadow's log.c links against, and
 * answers CLOCK_MONOTONIC from fake_ms while a test runs (every other clock,
 * and CLOCK_MONOTONIC outside the tests, from the kernel). So a window ends
 * exactly when a test moves the clock, never because the machine was slow.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "utf8-check.h"
#include "pgshadow/log.h"

#define MAX_LINES 64

static struct {
    int n;
    int prio[MAX_LINES];
    char line[MAX_LINES][1024];
} cap;

/* The injected clock (see the top of the file). */
static bool fake_clock;
static int64_t fake_ms;

int clock_gettime(clockid_t id, struct timespec *ts)
{
    if (fake_clock && id == CLOCK_MONOTONIC) {
        ts->tv_sec = (time_t)(fake_ms / 1000);
        ts->tv_nsec = (long)(fake_ms % 1000) * 1000000;
        return 0;
    }
    return (int)syscall(SYS_clock_gettime, id, ts);
}

static void sink(int prio, const char *line, void *arg)
{
    (void)arg;
    if (cap.n < MAX_LINES) {
        cap.prio[cap.n] = prio;
        snprintf(cap.line[cap.n], sizeof cap.line[cap.n], "%s", line);
    }
    cap.n++;
}

static int setup(void **state)
{
    (void)state;
    memset(&cap, 0, sizeof cap);
    fake_clock = true;
    fake_ms = 1000000;
    ps_log_setup("pgshadowd", LOG_DEBUG);
    ps_log_set_ratelimit(10, 5000);
    ps_log_set_sink(sink, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ps_log_set_sink(NULL, NULL);
    fake_clock = false;
    return 0;
}

static void test_level_filter(void **state)
{
    (void)state;
    ps_log_set_level(LOG_NOTICE);
    assert_int_equal(ps_log_get_level(), LOG_NOTICE);
    ps_log_debug("hidden debug");
    ps_log_info("hidden info");
    ps_log_notice("shown notice");
    ps_log_error("shown error");
    assert_int_equal(cap.n, 2);
    assert_int_equal(cap.prio[0], LOG_NOTICE);
    assert_non_null(strstr(cap.line[0], "notice: shown notice"));
    assert_int_equal(cap.prio[1], LOG_ERR);
    assert_non_null(strstr(cap.line[1], "error: shown error"));
}

static void test_line_shape_and_fields(void **state)
{
    (void)state;
    ps_log_field f[] = {{"TABLE", "contexts"}, {"REASON", "two words"}, {NULL, NULL}};
    ps_log_fields(LOG_WARNING, f, "apply failed %d", 3);
    assert_int_equal(cap.n, 1);
    char want[128];
    snprintf(want, sizeof want, "pgshadowd[%ld]: warning: apply failed 3 table=contexts "
             "reason=\"two words\"", (long)getpid());
    assert_string_equal(cap.line[0], want);
}

/* The stderr form: timestamp "YYYY-MM-DDTHH:MM:SS.mmmZ ident[pid]: level: msg". */
static void test_stderr_line(void **state)
{
    (void)state;
    ps_log_set_sink(NULL, NULL);
    unsetenv("JOURNAL_STREAM");
    ps_log_setup("pgshadowd", LOG_INFO);
    char path[] = "/tmp/test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    ps_log_info("hello %s", "world");
    dup2(saved, STDERR_FILENO);
    close(saved);
    char buf[512] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    /* 2026-11-24T21:28:35.123Z */
    assert_int_equal(buf[4], '-');
    assert_int_equal(buf[10], 'T');
    assert_int_equal(buf[19], '.');
    assert_int_equal(buf[23], 'Z');
    assert_int_equal(buf[24], ' ');
    char want[128];
    snprintf(want, sizeof want, " pgshadowd[%ld]: info: hello world\n", (long)getpid());
    assert_string_equal(buf + 24, want);
}

static const char *const secret_lines[] = {
    "connect failed: host=db password=hunter2 dbname=x",
    "connect failed: host=db password='hunter2 with space' dbname=x",
    "connect failed: postgresql://alice:hunter2@db.example/x",
    "connect failed: postgres://db.example/x?user=a&password=hunter2",
    "{\"password\": \"hunter2\"}",
};

static void test_no_password_at_debug(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof secret_lines / sizeof *secret_lines; i++) {
        ps_log_debug("%s", secret_lines[i]);
        /* as a field value too */
        ps_log_field f[] = {{"CONNINFO", secret_lines[i]}, {NULL, NULL}};
        ps_log_fields(LOG_DEBUG, f, "field case %zu", i);
    }
    assert_int_equal(cap.n, 10);
    for (int i = 0; i < cap.n; i++) {
        assert_null(strstr(cap.line[i], "hunter2"));
    }
    /* still useful: the rest of the message survives */
    assert_non_null(strstr(cap.line[0], "host=db"));
    assert_non_null(strstr(cap.line[4], "db.example"));
}

static char *whole_line; /* the last line, whole (cap.line keeps 1 KiB) */

static void whole_sink(int prio, const char *line, void *arg)
{
    (void)prio;
    (void)arg;
    free(whole_line);
    whole_line = strdup(line);
}

/* Issue #9, 16 (sibling): a message longer than the log's limit, or a field
 * value longer than its own, is cut between characters: every line is valid
 * UTF-8 (journald shows a field that is not as a blob). */
static void test_truncation_keeps_utf8(void **state)
{
    (void)state;
    ps_log_set_sink(whole_sink, NULL);
    size_t n = 3 * 4096 + 1; /* three-byte characters: some cut falls inside one */
    char *text = malloc(n);
    for (size_t i = 0; i + 3 < n; i += 3)
        memcpy(text + i, "\xe2\x82\xac", 3);
    text[n - 1 - (n - 1) % 3] = '\0';
    for (int shift = 0; shift < 3; shift++) {
        ps_log_field f[] = {{"TABLE", text}, {NULL, NULL}}; /* 511 bytes kept: inside one */
        ps_log_fields(LOG_INFO, f, "%.*s%s", shift, "ab", text);
        assert_non_null(whole_line);
        if (!utf8_valid(whole_line))
            fail_msg("the logged line is not valid UTF-8 (shift %d)", shift);
    }
    free(text);
    free(whole_line);
    whole_line = NULL;
}

static void test_ratelimit(void **state)
{
    (void)state;
    ps_log_set_ratelimit(3, 200);
    for (int i = 0; i < 10; i++)
        ps_log_warning("connection refused");
    ps_log_warning("a different message");
    assert_int_equal(cap.n, 4); /* 3 of the burst + the different one */
    ps_log_flush_suppressed();  /* window not over: nothing yet */
    assert_int_equal(cap.n, 4);
    fake_ms += 199;             /* still inside it */
    ps_log_flush_suppressed();
    assert_int_equal(cap.n, 4);
    fake_ms += 1;               /* 200 ms: over */
    ps_log_flush_suppressed();
    assert_int_equal(cap.n, 5); /* the count; the other message suppressed nothing */
    assert_non_null(strstr(cap.line[4], "message repeated 7 times: connection refused"));
    assert_int_equal(cap.prio[4], LOG_WARNING);
    /* A new window lets the message through again. */
    ps_log_warning("connection refused");
    assert_int_equal(cap.n, 6);
    assert_non_null(strstr(cap.line[5], "warning: connection refused"));
}

static void test_ratelimit_flush_on_next_log(void **state)
{
    (void)state;
    ps_log_set_ratelimit(1, 100);
    ps_log_info("same");
    ps_log_info("same");
    fake_ms += 99;
    ps_log_info("same"); /* inside the window: suppressed too */
    assert_int_equal(cap.n, 1);
    fake_ms += 1;
    ps_log_info("other");
    assert_int_equal(cap.n, 3);
    assert_non_null(strstr(cap.line[1], "message repeated 2 times: same"));
    assert_non_null(strstr(cap.line[2], "info: other"));
}

static void test_ratelimit_distinguishes_prio(void **state)
{
    (void)state;
    ps_log_set_ratelimit(1, 5000);
    ps_log_info("x");
    ps_log_warning("x");
    ps_log_info("x");
    assert_int_equal(cap.n, 2);
}

static void test_journal_detection(void **state)
{
    (void)state;
    char path[] = "/tmp/test-log-j-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    char env[64];
    snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", env, 1);
    ps_log_setup("pgshadowd", LOG_INFO);
    bool yes = ps_log_to_journal();
    snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", env, 1);
    ps_log_setup("pgshadowd", LOG_INFO);
    bool other_inode = ps_log_to_journal();
    setenv("JOURNAL_STREAM", "garbage", 1);
    ps_log_setup("pgshadowd", LOG_INFO);
    bool garbage = ps_log_to_journal();
    unsetenv("JOURNAL_STREAM");
    ps_log_setup("pgshadowd", LOG_INFO);
    bool unset = ps_log_to_journal();
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fd);
    unlink(path);
    assert_true(yes);
    assert_false(other_inode);
    assert_false(garbage);
    assert_false(unset);
}

static void test_journal_encode(void **state)
{
    (void)state;
    char buf[512];
    ps_log_field f[] = {{"table", "contexts"}, {"Err-Msg", "a\nb"}, {NULL, NULL}};
    size_t n = ps_log_journal_encode(buf, sizeof buf, LOG_WARNING, "pgshadowd", "hi", f);
    const char want[] = "MESSAGE=hi\nPRIORITY=4\nSYSLOG_IDENTIFIER=pgshadowd\n"
                        "PGSHADOW_TABLE=contexts\n"
                        "PGSHADOW_ERR_MSG\n\x03\0\0\0\0\0\0\0a\nb\n";
    assert_int_equal(n, sizeof want - 1);
    assert_memory_equal(buf, want, n);
    /* too small a buffer: 0, not a truncated datagram */
    assert_int_equal(ps_log_journal_encode(buf, 20, LOG_INFO, "pgshadowd", "hi", NULL), 0);
}

/* Receive one datagram waiting on fd (the log call has returned, so it is
 * there already or was never sent). */
static size_t recv_now(int fd, char *buf, size_t len)
{
    ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);
    return n < 0 ? 0 : (size_t)n;
}

/* The shipped journald path end to end: stderr is "the journal" (JOURNAL_STREAM
 * names its device and inode), PGSHADOW_JOURNAL_SOCKET points at a socket of
 * ours, and each log call must produce exactly the native-protocol datagram. */
static void test_journal_datagrams(void **state)
{
    (void)state;
    char dir[] = "/tmp/test-log-js-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sock[128], errpath[128];
    snprintf(sock, sizeof sock, "%s/journal.sock", dir);
    snprintf(errpath, sizeof errpath, "%s/stderr", dir);
    int js = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(js >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    assert_int_equal(bind(js, (struct sockaddr *)&sa, sizeof sa), 0);

    int errfd = open(errpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(errfd >= 0);
    struct stat st;
    assert_int_equal(fstat(errfd, &st), 0);
    int saved = dup(STDERR_FILENO);
    dup2(errfd, STDERR_FILENO);
    char env[64];
    snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", env, 1);
    setenv("PGSHADOW_JOURNAL_SOCKET", sock, 1);
    ps_log_set_sink(NULL, NULL);
    ps_log_setup("pgshadowd", LOG_DEBUG);
    bool journal = ps_log_to_journal();

    static char d[3][8192];
    size_t n[3];
    ps_log_field f1[] = {{"TABLE", "contexts"}, {"stage", "5"}, {NULL, NULL}};
    ps_log_fields(LOG_WARNING, f1, "apply failed %d", 3);
    n[0] = recv_now(js, d[0], sizeof d[0]);
    /* a newline inside: the binary-safe length form; a trailing one is dropped */
    ps_log_field f2[] = {{"TABLE", "orders"}, {NULL, NULL}};
    ps_log_fields(LOG_ERR, f2, "two\nlines\n");
    n[1] = recv_now(js, d[1], sizeof d[1]);
    ps_log_field f3[] = {{"CONNINFO", "host=db password=FieldSecret7"}, {NULL, NULL}};
    ps_log_fields(LOG_NOTICE, f3, "connecting: host=db user=u password=MsgSecret9 port=5432");
    n[2] = recv_now(js, d[2], sizeof d[2]);

    /* journald gone: the line still comes out, readable, on stderr */
    unlink(sock);
    ps_log_info("journal socket went away");
    char errtext[2048] = "";
    ssize_t en = pread(errfd, errtext, sizeof errtext - 1, 0);
    if (en > 0)
        errtext[en] = '\0';

    dup2(saved, STDERR_FILENO);
    close(saved);
    close(errfd);
    close(js);
    unsetenv("JOURNAL_STREAM");
    unsetenv("PGSHADOW_JOURNAL_SOCKET");
    ps_log_setup("pgshadowd", LOG_DEBUG);
    unlink(errpath);
    rmdir(dir);

    assert_true(journal);
    const char want0[] = "MESSAGE=apply failed 3\nPRIORITY=4\nSYSLOG_IDENTIFIER=pgshadowd\n"
                         "PGSHADOW_TABLE=contexts\nPGSHADOW_STAGE=5\n";
    assert_int_equal(n[0], sizeof want0 - 1);
    assert_memory_equal(d[0], want0, n[0]);
    const char want1[] = "MESSAGE\n\x09\0\0\0\0\0\0\0two\nlines\n"
                         "PRIORITY=3\nSYSLOG_IDENTIFIER=pgshadowd\nPGSHADOW_TABLE=orders\n";
    assert_int_equal(n[1], sizeof want1 - 1);
    assert_memory_equal(d[1], want1, n[1]);
    const char want2[] = "MESSAGE=connecting: host=db user=u password=*** port=5432\n"
                         "PRIORITY=5\nSYSLOG_IDENTIFIER=pgshadowd\n"
                         "PGSHADOW_CONNINFO=host=db password=***\n";
    assert_int_equal(n[2], sizeof want2 - 1);
    assert_memory_equal(d[2], want2, n[2]);
    assert_null(memmem(d[2], n[2], "Secret", 6));
    /* nothing fell back to stderr while the socket was there */
    assert_non_null(strstr(errtext, "info: journal socket went away"));
    assert_null(strstr(errtext, "apply failed"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_level_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_line_shape_and_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stderr_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_password_at_debug, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation_keeps_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ratelimit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ratelimit_flush_on_next_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ratelimit_distinguishes_prio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_detection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_encode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_datagrams, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
