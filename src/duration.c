/*
 * duration.c - durations with a mandatory unit ("250ms", "30s", "5m", "2h",
 * "1d") to and from milliseconds.
 *
 * Invariant: every value parsed is a non-negative int64 number of
 * milliseconds; overflow is an error, never a wrap.
 */
#include "pgshadow/duration.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const struct unit {
    const char *name;
    int64_t ms;
} units[] = {
    /* Largest first: ps_duration_format picks the first unit that divides. */
    { "d", 86400000 },
    { "h", 3600000 },
    { "m", 60000 },
    { "s", 1000 },
    { "ms", 1 },
};

int ps_duration_parse(const char *text, int64_t *out_ms, const char **why)
{
    static const char *dummy;
    if (why == NULL)
        why = &dummy;
    if (text == NULL || *text == '\0') {
        *why = "empty duration";
        return -1;
    }
    const char *p = text;
    if (!isdigit((unsigned char)*p)) {
        *why = "a duration is a non-negative integer followed by a unit (ms, s, m, h, d)";
        return -1;
    }
    int64_t n = 0;
    while (isdigit((unsigned char)*p)) {
        int d = *p - '0';
        if (n > (INT64_MAX - d) / 10) {
            *why = "duration is too large";
            return -1;
        }
        n = n * 10 + d;
        p++;
    }
    if (*p == '\0') {
        *why = "a duration needs a unit (ms, s, m, h, d)";
        return -1;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(p, units[i].name) != 0)
            continue;
        if (n > INT64_MAX / units[i].ms) {
            *why = "duration is too large";
            return -1;
        }
        *out_ms = n * units[i].ms;
        return 0;
    }
    *why = "unknown duration unit (use ms, s, m, h or d)";
    return -1;
}

void ps_duration_format(int64_t ms, char *buf, size_t len)
{
    if (buf == NULL || len == 0)
        return;
    if (ms < 0) {
        snprintf(buf, len, "%" PRId64 "ms", ms);
        return;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(buf, len, "%" PRId64 "%s", ms / units[i].ms, units[i].name);
            return;
        }
    }
    snprintf(buf, len, "0s");
}
