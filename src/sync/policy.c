/*
 * sync/policy.c - the sync engine's decisions as pure functions
 * (sync_policy.h): the next action, throttle levels, backfill percent, rate
 * and ETA, and the STATUS= words.
 *
 * Owns nothing: every function is a function of its arguments (the clock is
 * an input, now_ms), so each decision is unit-tested without a database or a
 * loop (tests/unit/test-sync-policy.c).
 *
 * Invariants: ps_sync_next never asks for work the state forbids (nothing
 * while stopping, nothing at all while standby, no apply or backfill
 * while halted, no backfill past the throttle) and a WAIT always carries a
 * delay > 0, so the shell can neither spin nor stall.
 */
#include "pgshadow/sync_policy.h"

#include <stdio.h>

#include "pgshadow/util.h"

ps_sync_throttle ps_sync_throttle_for(int64_t lag_ms, int64_t max_lag_ms)
{
    if (max_lag_ms <= 0 || lag_ms < 0 || lag_ms <= max_lag_ms)
        return PS_SYNC_THROTTLE_NONE;
    /* 3x without overflow for absurd limits */
    if (max_lag_ms <= INT64_MAX / 3 && lag_ms > 3 * max_lag_ms)
        return PS_SYNC_THROTTLE_APPLY;
    return PS_SYNC_THROTTLE_BACKFILL;
}

static int64_t earliest(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

ps_sync_action ps_sync_next(const ps_sync_state *s, int64_t *wait_ms)
{
    *wait_ms = -1;
    if (s->stopping)
        return PS_SYNC_IDLE;
    if (!s->conn_up) {
        *wait_ms = PS_SYNC_CONN_POLL_MS;
        return PS_SYNC_WAIT;
    }
    if (!s->leader)
        return PS_SYNC_IDLE; /* on_leader wakes us */
    if (s->registry_check)
        return PS_SYNC_REGISTRY;
    if (s->now_ms < s->retry_after_ms) {
        *wait_ms = s->retry_after_ms - s->now_ms;
        return PS_SYNC_WAIT;
    }
    /* Probe first: the throttle decisions below need a fresh lag. */
    if (s->now_ms >= s->probe_at_ms)
        return PS_SYNC_PROBE;

    int64_t next = s->probe_at_ms;
    if (!s->halted) {
        ps_sync_throttle t = ps_sync_throttle_for(s->repl_lag_ms, s->max_repl_lag_ms);
        bool backfill_ok = !s->backfill_done && t == PS_SYNC_THROTTLE_NONE &&
                           s->now_ms >= s->backfill_plan_at_ms;
        if (!s->backfill_done && t == PS_SYNC_THROTTLE_NONE && !backfill_ok)
            next = earliest(next, s->backfill_plan_at_ms);
        bool apply_ok = s->apply_pending &&
                        (t != PS_SYNC_THROTTLE_APPLY || s->now_ms >= s->apply_not_before_ms);
        if (s->apply_pending && !apply_ok)
            next = earliest(next, s->apply_not_before_ms);
        /* Alternate while both have work: a large backlog of changes must not
         * starve the backfill, nor a long backfill delay fresh changes by more
         * than one chunk. */
        if (apply_ok && backfill_ok)
            return s->last_was_backfill ? PS_SYNC_APPLY : PS_SYNC_BACKFILL;
        if (apply_ok)
            return PS_SYNC_APPLY;
        if (backfill_ok)
            return PS_SYNC_BACKFILL;
        if (s->arm_needed && (s->backfill_done || t != PS_SYNC_THROTTLE_NONE))
            return PS_SYNC_ARM;
    }
    *wait_ms = next > s->now_ms ? next - s->now_ms : 1;
    return PS_SYNC_WAIT;
}

void ps_sync_after_apply(ps_sync_state *s, int taken, int limit)
{
    s->apply_pending = s->apply_pending || taken >= limit;
}

int ps_sync_percent(int64_t done, int64_t total, bool finished)
{
    if (finished)
        return 100;
    if (total <= 0 || done <= 0)
        return 0;
    double p = (double)done * 100.0 / (double)total;
    if (p > 99.0)
        return 99; /* 100 only once the table is really done */
    return (int)p;
}

int64_t ps_sync_rate(int64_t base_rows, int64_t base_ms, int64_t done, int64_t now_ms)
{
    int64_t rows = done - base_rows, el = now_ms - base_ms;
    if (rows <= 0 || el <= 0)
        return -1;
    return (int64_t)((double)rows * 1000.0 / (double)el);
}

int64_t ps_sync_eta_ms(int64_t base_rows, int64_t base_ms, int64_t done, int64_t total,
                       int64_t now_ms)
{
    int64_t rows = done - base_rows, el = now_ms - base_ms;
    if (rows <= 0 || el <= 0 || total <= done)
        return -1;
    double eta = (double)(total - done) * (double)el / (double)rows;
    if (eta > (double)INT64_MAX / 2)
        return INT64_MAX / 2;
    return (int64_t)eta;
}

size_t ps_sync_format_status(const ps_sync_view *v, char *buf, size_t len)
{
    size_t pos = 0;
    if (len == 0)
        return 0;
    buf[0] = '\0';
    char d[32];
    if (v->halted) {
        ps_appendf(buf, len, &pos, "HALTED: %s", v->halted);
        return pos; /* the reason is what matters; it may be long */
    }
    if (!v->backfill_done) {
        if (v->throttle != PS_SYNC_THROTTLE_NONE) {
            ps_human_lag(v->repl_lag_ms, d, sizeof d);
            ps_appendf(buf, len, &pos, "backfill paused (replication lag %s)", d);
        } else if (v->bf_table) {
            ps_appendf(buf, len, &pos, "backfill %s %d%%", v->bf_table, v->bf_percent);
            if (v->bf_eta_ms >= 0) {
                ps_human_duration(v->bf_eta_ms, d, sizeof d);
                ps_appendf(buf, len, &pos, " ETA %s", d);
            }
        } else {
            ps_appendf(buf, len, &pos, "backfill starting");
        }
    } else {
        ps_appendf(buf, len, &pos, "backfill done");
    }
    if (v->throttle == PS_SYNC_THROTTLE_APPLY)
        ps_appendf(buf, len, &pos, "; apply slowed");
    if (v->sync_lag_s >= 0)
        ps_appendf(buf, len, &pos, "; lag %.1fs", v->sync_lag_s);
    else
        ps_appendf(buf, len, &pos, "; lag -");
    if (v->config_differs)
        ps_appendf(buf, len, &pos, "; config != installed: run pgshadowctl install");
    return pos;
}
