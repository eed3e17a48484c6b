/*
 * monitor/policy.c - the dashboard poller's pure decisions (monitor.h):
 * verdict names, freshness, the one log line a change deserves, STATUS=
 * words.
 *
 * Owns nothing: functions of their arguments only (no I/O, no clock, no
 * globals), unit-tested in tests/unit/test-monitor-policy.c with a fake
 * clock.
 *
 * Invariants:
 *  - stale is "no data": only FRESH maps to a verdict, so a failed or late
 *    poll can never read as healthy, whatever the last snapshot said;
 *  - a failed poll wins over a recent success: its snapshot is from before
 *    the failure, and the failure is the news;
 *  - a change is said once: ps_monitor_transition is silent when nothing
 *    changed, so the poller logs on edges only, never every poll.
 */
#include "pgshadow/monitor.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

static const char *const status_names[] = {
    [PS_MONITOR_READY] = "READY_FOR_CUTOVER",
    [PS_MONITOR_MONITORING] = "MONITORING_REQUIRED",
    [PS_MONITOR_ROLLBACK] = "ROLLBACK_RECOMMENDED",
};

int ps_monitor_status_parse(const char *s, ps_monitor_status *out)
{
    for (size_t i = 0; s && i < sizeof status_names / sizeof *status_names; i++) {
        if (strcmp(s, status_names[i]) == 0) {
            *out = (ps_monitor_status)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *ps_monitor_status_name(ps_monitor_status s)
{
    if ((size_t)s < sizeof status_names / sizeof *status_names)
        return status_names[s];
    return "?";
}

int64_t ps_monitor_late_ms(int64_t interval_ms)
{
    return 2 * interval_ms + PS_MONITOR_LATE_SLACK_MS;
}

ps_monitor_freshness ps_monitor_freshness_at(const ps_monitor_clock *c, int64_t now_ms,
                                             int64_t interval_ms)
{
    if (c->last_failed)
        return PS_MONITOR_FAILED;
    /* Late counts from the last success; before the first one, from when
     * polling started, so a first poll that never returns is late too. A
     * poll exactly at the limit is still in time. */
    int64_t since = c->last_ok_ms >= 0 ? c->last_ok_ms : c->started_ms;
    if (now_ms - since > ps_monitor_late_ms(interval_ms))
        return PS_MONITOR_LATE;
    return c->last_ok_ms >= 0 ? PS_MONITOR_FRESH : PS_MONITOR_WAITING;
}

ps_monitor_says ps_monitor_says_from(ps_monitor_freshness f, ps_monitor_status status)
{
    switch (f) {
    case PS_MONITOR_WAITING:
        return PS_MONITOR_SAYS_NOTHING;
    case PS_MONITOR_FAILED:
    case PS_MONITOR_LATE:
        return PS_MONITOR_SAYS_STALE;
    case PS_MONITOR_FRESH:
        break;
    }
    switch (status) {
    case PS_MONITOR_READY:
        return PS_MONITOR_SAYS_READY;
    case PS_MONITOR_MONITORING:
        return PS_MONITOR_SAYS_MONITORING;
    case PS_MONITOR_ROLLBACK:
        return PS_MONITOR_SAYS_ROLLBACK;
    }
    return PS_MONITOR_SAYS_STALE; /* not a verdict we know: no data */
}

/* The verdict's name for a "says" that is one; NULL for nothing and stale. */
static const char *says_verdict(ps_monitor_says s)
{
    switch (s) {
    case PS_MONITOR_SAYS_READY:
        return ps_monitor_status_name(PS_MONITOR_READY);
    case PS_MONITOR_SAYS_MONITORING:
        return ps_monitor_status_name(PS_MONITOR_MONITORING);
    case PS_MONITOR_SAYS_ROLLBACK:
        return ps_monitor_status_name(PS_MONITOR_ROLLBACK);
    case PS_MONITOR_SAYS_NOTHING:
    case PS_MONITOR_SAYS_STALE:
        break;
    }
    return NULL;
}

bool ps_monitor_transition(ps_monitor_says prev, ps_monitor_says next, const char *why, char *buf,
                           size_t len, int *prio)
{
    /* Going quiet (leadership lost, stopping) is not news of the
     * dashboard's; the daemon's own lines say why. */
    if (next == prev || next == PS_MONITOR_SAYS_NOTHING)
        return false;
    if (next == PS_MONITOR_SAYS_STALE) {
        *prio = LOG_WARNING;
        snprintf(buf, len, "dashboard: stale (%s)", why && *why ? why : "no data");
        return true;
    }
    const char *to = says_verdict(next);
    *prio = next == PS_MONITOR_SAYS_ROLLBACK ? LOG_WARNING : LOG_NOTICE;
    if (prev == PS_MONITOR_SAYS_STALE)
        snprintf(buf, len, "dashboard: fresh again (%s)", to);
    else if (prev == PS_MONITOR_SAYS_NOTHING)
        snprintf(buf, len, "dashboard: %s", to);
    else
        snprintf(buf, len, "dashboard: %s -> %s", says_verdict(prev), to);
    return true;
}

size_t ps_monitor_format_status(ps_monitor_says s, char *buf, size_t len)
{
    const char *word = s == PS_MONITOR_SAYS_STALE ? "stale" : says_verdict(s);
    if (!word || len == 0)
        return 0;
    int n = snprintf(buf, len, "dashboard %s", word);
    if (n < 0)
        return 0;
    return (size_t)n < len ? (size_t)n : len - 1;
}

int64_t ps_monitor_sample_window_ms(const ps_config *cfg)
{
    int64_t a = 3 * cfg->verify.sample_interval_ms, b = 2 * cfg->monitor.poll_interval_ms;
    return a > b ? a : b;
}
