/*
 * util.h - small helpers every module needs the same way: the monotonic
 * clock and its conversion to a libevent timeout, string lists, bounded
 * appending, and the short human texts for durations and lags that STATUS=
 * and the log show.
 *
 * One copy each, so that a fix (the negative clamp of ps_clock_tv, the
 * millisecond lag under a minute) reaches every caller. Pure, except
 * ps_clock_ms, which reads CLOCK_MONOTONIC.
 */
#ifndef PGSHADOW_UTIL_H
#define PGSHADOW_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

/* ---- clock -------------------------------------------------------------- */

/* CLOCK_MONOTONIC in milliseconds: the one clock of every deadline and
 * interval in the daemon (wall-clock steps must not fire or stall timers). */
int64_t ps_clock_ms(void);

/* ms as a timeval for event_add(); a negative ms (a deadline already past)
 * is 0, so a timer fires at once instead of libevent refusing the value. */
struct timeval ps_clock_tv(int64_t ms);

/* ---- string lists ------------------------------------------------------- */

/* Same length and the same strings in the same order (strcmp). */
bool ps_strv_equal(const char *const *a, size_t na, const char *const *b, size_t nb);

/* "a, b, c" into buf (NUL-terminated, truncated to len; len > 0). */
void ps_strv_join(const char *const *v, size_t n, char *buf, size_t len);

/* ---- bounded text ------------------------------------------------------- */

/* snprintf at buf + *pos; *pos advances by what was written and never past
 * len - 1, so calls chain safely and a full buffer stays NUL-terminated.
 * Requires len > 0 and *pos < len. */
void ps_appendf(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- human texts -------------------------------------------------------- */

/* A short human duration: "0s", "45s", "4m05s", "12m", "3h07m", "2d04h"
 * (negative is "0s"). Returns the length written (snprintf semantics,
 * truncated to len - 1; 0 when len is 0). For reading at a glance (an ETA, an
 * elapsed time); ps_duration_format is the exact config syntax. */
size_t ps_human_duration(int64_t ms, char *buf, size_t len);

/* A lag: to the millisecond under a minute ("3.970s": a 3.97 s lag against a
 * 4 s limit must not read "3s"), otherwise as ps_human_duration. */
size_t ps_human_lag(int64_t ms, char *buf, size_t len);

#endif
