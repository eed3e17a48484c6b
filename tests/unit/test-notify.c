/*
 * test-notify.c - the notify protocol against real datagram sockets (a path
 * and an abstract name), byte for byte; the watchdog environment rules.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pgshadow/notify.h"

typedef struct rx {
    int fd;
    char path[108];
} rx;

static int bind_path(rx *r)
{
    snprintf(r->path, sizeof r->path, "/tmp/test-notify-%ld-%d.sock", (long)getpid(), rand());
    r->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (r->fd < 0)
        return -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, r->path);
    unlink(r->path);
    if (bind(r->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return -1;
    setenv("NOTIFY_SOCKET", r->path, 1);
    return 0;
}

static int bind_abstract(rx *r)
{
    char name[64];
    snprintf(name, sizeof name, "test-notify-%ld-%d", (long)getpid(), rand());
    r->path[0] = '\0';
    r->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (r->fd < 0)
        return -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path + 1, name, strlen(name));
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
    if (bind(r->fd, (struct sockaddr *)&sa, len) < 0)
        return -1;
    char env[80];
    snprintf(env, sizeof env, "@%s", name);
    setenv("NOTIFY_SOCKET", env, 1);
    return 0;
}

static void rx_close(rx *r)
{
    close(r->fd);
    if (r->path[0])
        unlink(r->path);
    unsetenv("NOTIFY_SOCKET");
}

/* Receive one datagram (the sender already sent it: no waiting needed, but
 * MSG_DONTWAIT makes a missing message a failure rather than a hang). */
static ssize_t rx_recv(rx *r, char *buf, size_t len)
{
    ssize_t n = recv(r->fd, buf, len - 1, MSG_DONTWAIT);
    if (n >= 0)
        buf[n] = '\0';
    return n;
}

static void test_path_socket(void **state)
{
    (void)state;
    rx r;
    assert_int_equal(bind_path(&r), 0);
    assert_int_equal(ps_notify("READY=1\nSTATUS=connected; stage -; lag -"), 0);
    char buf[256];
    ssize_t n = rx_recv(&r, buf, sizeof buf);
    assert_int_equal(n, (ssize_t)strlen("READY=1\nSTATUS=connected; stage -; lag -"));
    assert_string_equal(buf, "READY=1\nSTATUS=connected; stage -; lag -");
    assert_int_equal(ps_notifyf("STATUS=waiting for database (retry in %.1fs)", 3.2), 0);
    n = rx_recv(&r, buf, sizeof buf);
    assert_string_equal(buf, "STATUS=waiting for database (retry in 3.2s)");
    /* nothing else was sent */
    assert_true(rx_recv(&r, buf, sizeof buf) < 0);
    rx_close(&r);
}

static void test_abstract_socket(void **state)
{
    (void)state;
    rx r;
    assert_int_equal(bind_abstract(&r), 0);
    assert_int_equal(ps_notify("WATCHDOG=1"), 0);
    char buf[256];
    ssize_t n = rx_recv(&r, buf, sizeof buf);
    assert_int_equal(n, 10);
    assert_memory_equal(buf, "WATCHDOG=1", 10);
    rx_close(&r);
}

static void test_reloading(void **state)
{
    (void)state;
    rx r;
    assert_int_equal(bind_path(&r), 0);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t before = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    assert_int_equal(ps_notify_reloading(), 0);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t after = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    char buf[256];
    assert_true(rx_recv(&r, buf, sizeof buf) > 0);
    uint64_t usec = 0;
    char tail = 0;
    assert_int_equal(sscanf(buf, "RELOADING=1\nMONOTONIC_USEC=%" SCNu64 "%c", &usec, &tail), 1);
    assert_true(usec >= before && usec <= after);
    char want[128];
    snprintf(want, sizeof want, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, usec);
    assert_string_equal(buf, want);
    rx_close(&r);
}

/* A receiver that does not read must not freeze the sender (the daemon's
 * event loop): once its queue is full, ps_notify fails with -EAGAIN. */
static void test_full_queue_does_not_block(void **state)
{
    (void)state;
    rx r;
    assert_int_equal(bind_path(&r), 0);
    int small = 1;
    setsockopt(r.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    int ret = 0, sent = 0;
    while (sent < 100000 && (ret = ps_notify("WATCHDOG=1")) == 0)
        sent++;
    assert_int_equal(ret, -EAGAIN);
    assert_true(sent > 0);
    /* drained, it works again */
    char buf[64];
    while (rx_recv(&r, buf, sizeof buf) > 0)
        ;
    assert_int_equal(ps_notify("READY=1"), 0);
    rx_close(&r);
}

static void test_no_socket_is_noop(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(ps_notify("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    assert_int_equal(ps_notify("READY=1"), 0);
    unsetenv("NOTIFY_SOCKET");
}

static void test_errors(void **state)
{
    (void)state;
    /* nobody listening there */
    setenv("NOTIFY_SOCKET", "/tmp/test-notify-does-not-exist.sock", 1);
    assert_int_equal(ps_notify("READY=1"), -ENOENT);
    /* relative paths are not a socket address systemd would give */
    setenv("NOTIFY_SOCKET", "relative.sock", 1);
    assert_true(ps_notify("READY=1") < 0);
    /* too long for sun_path */
    char longp[200];
    memset(longp, 'x', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    setenv("NOTIFY_SOCKET", longp, 1);
    assert_int_equal(ps_notify("READY=1"), -EINVAL);
    unsetenv("NOTIFY_SOCKET");
}

static void test_watchdog_usec(void **state)
{
    (void)state;
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    assert_int_equal(ps_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "1000000", 1);
    assert_int_equal(ps_notify_watchdog_usec(), 1000000);
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(ps_notify_watchdog_usec(), 1000000);
    snprintf(pid, sizeof pid, "%ld", (long)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1); /* meant for another process */
    assert_int_equal(ps_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_PID", "junk", 1);
    assert_int_equal(ps_notify_watchdog_usec(), 0);
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "0", 1);
    assert_int_equal(ps_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "12abc", 1);
    assert_int_equal(ps_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "-5", 1);
    assert_int_equal(ps_notify_watchdog_usec(), 0);
    unsetenv("WATCHDOG_USEC");
}

int main(void)
{
    srand((unsigned)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_socket),
        cmocka_unit_test(test_abstract_socket),
        cmocka_unit_test(test_reloading),
        cmocka_unit_test(test_full_queue_does_not_block),
        cmocka_unit_test(test_no_socket_is_noop),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_watchdog_usec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
