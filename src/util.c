/*
 * util.c - the shared small helpers (util.h): monotonic clock, string lists,
 * bounded appending, human durations and lags.
 *
 * Owns nothing: no state, no allocation.
 *
 * Invariants: every text function writes a NUL-terminated string within len
 * and returns what it really wrote, so callers can chain them without
 * re-measuring; ps_clock_ms is the only function that reads the outside
 * world (CLOCK_MONOTONIC, called through clock_gettime so a test may supply
 * its own clock).
 */
#include "pgshadow/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t ps_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct timeval ps_clock_tv(int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

bool ps_strv_equal(const char *const *a, size_t na, const char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

void ps_appendf(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    if (*pos + 1 >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    *pos += (size_t)n;
    if (*pos >= len)
        *pos = len - 1;
}

void ps_strv_join(const char *const *v, size_t n, char *buf, size_t len)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++)
        ps_appendf(buf, len, &pos, "%s%s", i ? ", " : "", v[i]);
}

size_t ps_human_duration(int64_t ms, char *buf, size_t len)
{
    if (len == 0)
        return 0;
    long long s = ms < 0 ? 0 : (long long)(ms / 1000);
    int n;
    if (s < 60)
        n = snprintf(buf, len, "%llds", s);
    else if (s < 600)
        n = snprintf(buf, len, "%lldm%02llds", s / 60, s % 60);
    else if (s < 3600)
        n = snprintf(buf, len, "%lldm", s / 60);
    else if (s < 86400)
        n = snprintf(buf, len, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
    else
        n = snprintf(buf, len, "%lldd%02lldh", s / 86400, (s % 86400) / 3600);
    if (n < 0)
        return 0;
    return (size_t)n < len ? (size_t)n : len - 1;
}

size_t ps_human_lag(int64_t ms, char *buf, size_t len)
{
    if (ms < 0 || ms >= 60000)
        return ps_human_duration(ms, buf, len);
    if (len == 0)
        return 0;
    int n = snprintf(buf, len, "%lld.%03llds", (long long)(ms / 1000), (long long)(ms % 1000));
    if (n < 0)
        return 0;
    return (size_t)n < len ? (size_t)n : len - 1;
}
