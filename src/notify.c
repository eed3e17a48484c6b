/*
 * notify.c - the systemd notify protocol (sd_notify), implemented directly.
 *
 * Owns nothing long-lived: each call opens a datagram socket, sends one
 * message and closes it, so a restarted systemd or a changed NOTIFY_SOCKET
 * needs no reconnect logic, and no descriptor leaks into children
 * (SOCK_CLOEXEC). MSG_NOSIGNAL keeps a vanished receiver from raising SIGPIPE.
 * MSG_DONTWAIT: a datagram send blocks while the receiver's queue is full,
 * and the daemon calls this from its event loop; a receiver that is not
 * reading gets -EAGAIN (the message is dropped) instead of a frozen daemon.
 * No NOTIFY_SOCKET means "not supervised": every call is a successful no-op.
 */
#include "pgshadow/notify.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int ps_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    if (!state)
        return -EINVAL;

    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t plen = strlen(path);
    socklen_t salen;
    if (path[0] == '@') {
        /* Abstract namespace: leading NUL, and the length (not a terminator)
         * says where the name ends. */
        if (plen > sizeof sa.sun_path)
            return -EINVAL;
        sa.sun_path[0] = '\0';
        memcpy(sa.sun_path + 1, path + 1, plen - 1);
        salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
    } else if (path[0] == '/') {
        if (plen >= sizeof sa.sun_path)
            return -EINVAL;
        memcpy(sa.sun_path, path, plen + 1);
        salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
    } else {
        return -EAFNOSUPPORT; /* vsock etc.: not used by our deployments */
    }

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int r = 0;
    ssize_t w;
    do {
        w = sendto(fd, state, strlen(state), MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sa, salen);
    } while (w < 0 && errno == EINTR);
    if (w < 0)
        r = -errno;
    close(fd);
    return r;
}

int ps_notifyf(const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= sizeof buf)
        return -EMSGSIZE; /* a truncated assignment could say something untrue */
    return ps_notify(buf);
}

int ps_notify_reloading(void)
{
    /* systemd >= 253 (Type=notify-reload) matches RELOADING=1 to the
     * following READY=1 by this timestamp; older versions ignore it. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    return ps_notifyf("RELOADING=1\nMONOTONIC_USEC=%" PRIu64, usec);
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *out = v;
    return 0;
}

uint64_t ps_notify_watchdog_usec(void)
{
    uint64_t usec, pid;
    if (parse_u64(getenv("WATCHDOG_USEC"), &usec) < 0 || usec == 0)
        return 0;
    /* WATCHDOG_PID names the process the watchdog is meant for; a child that
     * inherited the environment must not ping on its parent's behalf. */
    const char *p = getenv("WATCHDOG_PID");
    if (p && *p) {
        if (parse_u64(p, &pid) < 0 || pid != (uint64_t)getpid())
            return 0;
    }
    return usec;
}
