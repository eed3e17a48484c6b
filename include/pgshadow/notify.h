/*
 * notify.h - the systemd notify protocol, implemented directly.
 *
 * The protocol is spoken natively (no libsystemd): a datagram to $NOTIFY_SOCKET (a path or
 * an abstract "@name"). With no NOTIFY_SOCKET every call is a no-op returning 0.
 */
#ifndef PGSHADOW_NOTIFY_H
#define PGSHADOW_NOTIFY_H

#include <stdint.h>

/* Send "READY=1", "STATUS=...", etc. (newline-separated assignments).
 * Returns 0 when sent or when there is no socket, -errno on failure. Never
 * blocks: a receiver whose queue is full yields -EAGAIN (message dropped). */
int ps_notify(const char *state);
int ps_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* RELOADING=1 also needs MONOTONIC_USEC= (systemd >= 253); this adds it. */
int ps_notify_reloading(void);

/* The watchdog interval in microseconds from $WATCHDOG_USEC (honouring
 * $WATCHDOG_PID), or 0 when the watchdog is off. */
uint64_t ps_notify_watchdog_usec(void);

#endif
