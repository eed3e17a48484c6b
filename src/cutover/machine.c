/*
 * cutover/machine.c - the cutover's state machine (cutover.h). Pure: the
 * state, the gates of one evaluation, a command and the time come in; the
 * new state and what to record go out. The module (cutover.c) writes the
 * state, the percent and the event in one transaction and logs the line.
 *
 * The states and what moves them (docs/cutover.md has the picture):
 *
 *   not_started --start / auto when READY--> running(1)
 *   running(i) --hold earned, i < n--> running(i+1)
 *   running(n) --hold earned--> awaiting_decision | promoting (finally)
 *   running/paused/awaiting --trip--> step_down: running(last good < i)
 *                                                (paused at 0% when none)
 *                                     rollback:  rolled_back (0%)
 *                                     pause:     paused
 *   running/awaiting --pause--> paused --resume--> running
 *   awaiting --extend D--> running(n) with D more to hold
 *   any but promoting/promoted/aborted --rollback / abort--> rolled_back / aborted
 *   rolled_back --start--> running(1)
 *   promoted --finalize--> finalized (final: every command refused)
 *   promoted --revert--> rolled_back (stage 0: the old tables again, forward sync resumes)
 *
 * Hold time: earned only by a fresh, all-green evaluation at running, and
 * only the time since the previous one (capped at two poll intervals and a
 * second): the machine never credits time it did not watch.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "pgshadow/cutover.h"
#include "pgshadow/duration.h"
#include "pgshadow/util.h"

static const char *const status_names[PS_CO_N_STATUS] = {
    [PS_CO_NOT_STARTED] = "not_started", [PS_CO_RUNNING] = "running",
    [PS_CO_PAUSED] = "paused",           [PS_CO_AWAITING] = "awaiting_decision",
    [PS_CO_PROMOTING] = "promoting",     [PS_CO_PROMOTED] = "promoted",
    [PS_CO_ROLLED_BACK] = "rolled_back", [PS_CO_ABORTED] = "aborted",
    [PS_CO_FINALIZED] = "finalized",
};

const char *ps_co_status_name(ps_co_status s)
{
    return s < PS_CO_N_STATUS ? status_names[s] : "?";
}

int ps_co_status_parse(const char *s, ps_co_status *out)
{
    for (int i = 0; s && i < PS_CO_N_STATUS; i++)
        if (strcmp(s, status_names[i]) == 0) {
            *out = (ps_co_status)i;
            return 0;
        }
    return -EINVAL;
}

static const char *const cmd_names[PS_CO_N_CMD] = {
    [PS_CO_CMD_START] = "start",         [PS_CO_CMD_PAUSE] = "pause",
    [PS_CO_CMD_RESUME] = "resume",       [PS_CO_CMD_STEP_DOWN] = "step-down",
    [PS_CO_CMD_ROLLBACK] = "rollback",   [PS_CO_CMD_ABORT] = "abort",
    [PS_CO_CMD_EXTEND] = "extend",
    [PS_CO_CMD_PROMOTE] = "promote",     [PS_CO_CMD_FINALIZE] = "finalize",
    [PS_CO_CMD_REVERT] = "revert",
};

const char *ps_co_cmd_name(ps_co_cmd c)
{
    return c < PS_CO_N_CMD ? cmd_names[c] : "?";
}

int ps_co_cmd_parse(const char *s, ps_co_cmd *out)
{
    for (int i = 0; s && i < PS_CO_N_CMD; i++)
        if (strcmp(s, cmd_names[i]) == 0) {
            *out = (ps_co_cmd)i;
            return 0;
        }
    return -EINVAL;
}

void ps_co_mem_init(ps_co_mem *m)
{
    m->last_green_ms = -1;
    m->last_counted_poll = -1;
}

static int stage_percent(const ps_co_policy *p, int stage)
{
    return stage >= 1 && (size_t)stage <= p->n_stages ? p->stages[stage - 1].percent : 0;
}

int64_t ps_co_hold_needed(const ps_co_policy *p, const ps_co_state *st)
{
    if (st->stage < 1 || (size_t)st->stage > p->n_stages)
        return 0;
    return p->stages[st->stage - 1].hold_ms + st->hold_extra_ms;
}

/* "stage 3, 20%" / "0%" */
static void where(const ps_co_state *st, char *buf, size_t len)
{
    if (st->stage >= 1)
        snprintf(buf, len, "stage %d, %d%%", st->stage, st->percent);
    else
        snprintf(buf, len, "%d%%", st->percent);
}

/* Move to stage s (0: none, 0%) with a fresh hold. */
static void enter(const ps_co_policy *p, ps_co_state *st, ps_co_status status, int stage, ps_co_out *out)
{
    int percent = stage_percent(p, stage);
    out->percent_changed = percent != st->percent;
    st->status = status;
    st->stage = stage;
    st->percent = percent;
    st->hold_earned_ms = 0;
    st->hold_extra_ms = 0;
    st->failures = 0;
    out->write = true;
}

static void event(ps_co_out *out, const char *what, int prio, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void event(ps_co_out *out, const char *what, int prio, const char *fmt, ...)
{
    snprintf(out->what, sizeof out->what, "%s", what);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->why, sizeof out->why, fmt, ap);
    va_end(ap);
    out->log_prio = prio;
    out->write = true;
}

static void trip(const ps_co_policy *p, ps_co_state *st, ps_co_mem *mem, const ps_gates *g,
                 ps_co_out *out)
{
    char red[200], at[32], to[32];
    ps_gates_format_red(g, red, sizeof red);
    where(st, at, sizeof at);
    int polls = st->failures;
    mem->last_green_ms = -1;
    if (st->status == PS_CO_PAUSED && st->percent == 0) {
        st->failures = 0; /* reads are all on the primary already: nothing to lower */
        out->write = true;
        return;
    }
    switch (p->on_trip) {
    case PS_ON_TRIP_ROLLBACK:
        enter(p, st, PS_CO_ROLLED_BACK, 0, out);
        st->last_good = 0;
        event(out, "trip", LOG_WARNING, "%s at %s (%d polls red): rollback: reads back on the primary (0%%)",
              red, at, polls);
        return;
    case PS_ON_TRIP_PAUSE:
        st->failures = 0;
        st->hold_earned_ms = 0; /* a trip starts the hold from zero */
        if (st->status == PS_CO_PAUSED) {
            out->write = true; /* already paused: nothing more to decide */
            return;
        }
        st->status = PS_CO_PAUSED;
        event(out, "trip", LOG_WARNING, "%s at %s (%d polls red): paused at %d%%", red, at, polls,
              st->percent);
        return;
    case PS_ON_TRIP_STEP_DOWN:
    default: {
        if (st->stage < 1) {
            st->failures = 0; /* paused at 0% already: no stage to step down from */
            out->write = true;
            return;
        }
        int target = st->last_good < st->stage - 1 ? st->last_good : st->stage - 1;
        if (target < 0)
            target = 0;
        if (target == 0) {
            enter(p, st, PS_CO_PAUSED, 0, out);
            st->last_good = 0;
            event(out, "trip", LOG_WARNING,
                  "%s at %s (%d polls red): step down: no stage below held green: reads back on the "
                  "primary (0%%), paused",
                  red, at, polls);
            return;
        }
        enter(p, st, st->status == PS_CO_PAUSED ? PS_CO_PAUSED : PS_CO_RUNNING, target, out);
        st->last_good = target;
        where(st, to, sizeof to);
        event(out, "trip", LOG_WARNING, "%s at %s (%d polls red): step down to %s", red, at, polls, to);
        return;
    }
    }
}

/* The stage in force held: the next one, or the decision. */
static void advance(const ps_co_policy *p, ps_co_state *st, int64_t now_ms, ps_co_mem *mem, ps_co_out *out)
{
    char held[32], from[32], to[32];
    ps_duration_format(ps_co_hold_needed(p, st), held, sizeof held);
    where(st, from, sizeof from);
    if (st->last_good < st->stage)
        st->last_good = st->stage;
    if ((size_t)st->stage < p->n_stages) {
        enter(p, st, PS_CO_RUNNING, st->stage + 1, out);
        mem->last_green_ms = now_ms; /* the new stage's hold counts from here */
        where(st, to, sizeof to);
        event(out, "stage", LOG_NOTICE, "%s held %s green: %s", from, held, to);
        return;
    }
    st->failures = 0;
    mem->last_green_ms = -1;
    if (p->finally == PS_FINALLY_PROMOTE && p->promote_available) {
        st->status = PS_CO_PROMOTING;
        out->promote = true;
        event(out, "promoting", LOG_NOTICE, "%s held %s green: promoting (finally: promote)", from, held);
        return;
    }
    st->status = PS_CO_AWAITING;
    event(out, "awaiting_decision", LOG_NOTICE,
          "%s held %s green: awaiting the decision: pgshadowctl promote, rollback or extend DURATION%s", from,
          held,
          p->finally == PS_FINALLY_PROMOTE ? " (finally: promote, but promote is not available)" : "");
}

void ps_co_tick(const ps_co_policy *p, ps_co_state *st, ps_co_mem *mem, const ps_gates *g,
                int64_t now_ms, ps_co_out *out)
{
    memset(out, 0, sizeof *out);
    bool running = st->status == PS_CO_RUNNING;
    if (!g->fresh || !running)
        mem->last_green_ms = running ? -1 : mem->last_green_ms;
    if (!g->fresh)
        return; /* inconclusive: no hold, no failure */

    if (st->status == PS_CO_NOT_STARTED) {
        mem->last_green_ms = -1;
        if (p->start == PS_CUTOVER_START_AUTO && g->ready && ps_gates_green(g) && p->n_stages > 0) {
            enter(p, st, PS_CO_RUNNING, 1, out);
            st->last_good = 0;
            mem->last_green_ms = now_ms;
            event(out, "start", LOG_NOTICE,
                  "dashboard READY_FOR_CUTOVER and every gate green: start (auto): stage 1, %d%%", st->percent);
        }
        return;
    }
    if (st->status != PS_CO_RUNNING && st->status != PS_CO_PAUSED && st->status != PS_CO_AWAITING) {
        mem->last_green_ms = -1;
        return; /* rolled back, aborted, promoting, promoted, finalized: the gates move nothing */
    }

    bool new_poll = g->poll != mem->last_counted_poll;
    if (ps_gates_red(g)) {
        mem->last_green_ms = -1;
        if (!new_poll)
            return; /* this poll is counted already */
        mem->last_counted_poll = g->poll;
        st->failures++;
        out->write = true;
        if (st->failures >= p->failures_to_trip)
            trip(p, st, mem, g, out);
        return;
    }
    if (!ps_gates_green(g)) {
        mem->last_green_ms = -1; /* some gate stale: neither */
        return;
    }
    if (new_poll)
        mem->last_counted_poll = g->poll;
    if (st->failures) {
        st->failures = 0;
        out->write = true;
    }
    if (!running) {
        mem->last_green_ms = -1; /* paused or awaiting: green earns nothing */
        return;
    }
    if (mem->last_green_ms >= 0) {
        int64_t d = now_ms - mem->last_green_ms;
        int64_t cap = 2 * p->poll_interval_ms + 1000;
        if (d < 0)
            d = 0;
        if (d > cap)
            d = cap;
        if (d > 0) {
            st->hold_earned_ms += d;
            out->write = true;
        }
    }
    mem->last_green_ms = now_ms;
    if (st->stage >= 1 && st->hold_earned_ms >= ps_co_hold_needed(p, st))
        advance(p, st, now_ms, mem, out);
}

/* ---- commands ---- */

static int refuse(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(char *why, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
    return 1;
}

/* Moving reads up from 0% asks what start asks: a fresh dashboard that
 * says READY_FOR_CUTOVER, no gate red. */
static int may_raise(const ps_gates *g, const char *cmd, char *why, size_t len)
{
    if (!g || !g->fresh)
        return refuse(why, len, "%s: the dashboard is stale: no gate can be judged", cmd);
    if (ps_gates_red(g)) {
        char red[200];
        ps_gates_format_red(g, red, sizeof red);
        return refuse(why, len, "%s: gates red: %s", cmd, red);
    }
    if (!g->ready)
        return refuse(why, len, "%s: the dashboard does not say READY_FOR_CUTOVER yet", cmd);
    return 0;
}

int ps_co_command(const ps_co_policy *p, ps_co_state *st, ps_co_cmd cmd, int64_t arg_ms,
                  const ps_gates *g, ps_co_out *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    ps_co_state n = *st;
    char at[32], to[32], d[32];
    where(st, at, sizeof at);
    const char *sname = ps_co_status_name(st->status);
    bool live = st->status == PS_CO_RUNNING || st->status == PS_CO_PAUSED || st->status == PS_CO_AWAITING;
    if (st->status == PS_CO_FINALIZED)
        return refuse(why, whylen, "%s: the migration is finalized: its legacy tables are gone, nothing is left "
                                   "to do", ps_co_cmd_name(cmd));
    if (cmd == PS_CO_CMD_PROMOTE) {
        /* the last stage held (or finally: promote's try failed): the swap,
         * on a fresh evaluation with no gate red */
        if (st->status != PS_CO_AWAITING && st->status != PS_CO_PROMOTING)
            return refuse(why, whylen, "promote: the cutover is %s at %s: promote follows the last stage's hold "
                                       "(awaiting the decision)", sname, at);
        if (!p->promote_available)
            return refuse(why, whylen, "promote: this build has no promote step");
        if (!g || !g->fresh)
            return refuse(why, whylen, "promote: the dashboard is stale: no gate can be judged");
        if (ps_gates_red(g)) {
            char red[200];
            ps_gates_format_red(g, red, sizeof red);
            return refuse(why, whylen, "promote: gates red: %s", red);
        }
        n.status = PS_CO_PROMOTING;
        n.failures = 0;
        out->promote = true;
        event(out, "promote", LOG_NOTICE, "promote at %s: the swap of every table", at);
        *st = n;
        return 0;
    }
    if (cmd == PS_CO_CMD_FINALIZE) {
        /* after the swap: what it left behind goes (the SQL step checks the
         * rest: every re-pointed foreign key validated, the plan the
         * operator confirmed) */
        if (st->status != PS_CO_PROMOTED)
            return refuse(why, whylen, "finalize: the cutover is %s at %s: finalize follows a promote", sname, at);
        n.status = PS_CO_FINALIZED;
        n.failures = 0;
        out->finalize = true;
        event(out, "finalize", LOG_NOTICE, "finalize: the legacy tables, the compatibility views and pgshadow's "
                                           "state of the migration go");
        *st = n;
        return 0;
    }
    if (cmd == PS_CO_CMD_REVERT) {
        /* after the swap: the swap back (the SQL step checks the rest:
         * reverse sync on, nothing quarantined, the plan) */
        if (st->status != PS_CO_PROMOTED)
            return refuse(why, whylen, "revert: the cutover is %s at %s: revert undoes a promote", sname, at);
        n.status = PS_CO_ROLLED_BACK;
        n.stage = 0;
        n.percent = 0;
        n.hold_earned_ms = 0;
        n.hold_extra_ms = 0;
        n.failures = 0;
        n.last_good = 0;
        out->revert = true;
        event(out, "revert", LOG_NOTICE, "revert: the legacy tables back under their names, reads on them");
        *st = n;
        return 0;
    }
    if (st->status == PS_CO_PROMOTING || st->status == PS_CO_PROMOTED)
        return refuse(why, whylen, "the cutover is %s: only revert undoes a promote", sname);
    if (st->status == PS_CO_ABORTED)
        return refuse(why, whylen, "the cutover was aborted: that is final for this migration");

    switch (cmd) {
    case PS_CO_CMD_START:
        if (st->status != PS_CO_NOT_STARTED && st->status != PS_CO_ROLLED_BACK)
            return refuse(why, whylen, "the cutover is %s already (%s)", sname, at);
        if (p->n_stages == 0)
            return refuse(why, whylen, "no stage configured");
        if (may_raise(g, "start", why, whylen))
            return 1;
        enter(p, &n, PS_CO_RUNNING, 1, out);
        n.last_good = 0;
        event(out, "start", LOG_NOTICE, "start: stage 1, %d%%", n.percent);
        break;
    case PS_CO_CMD_PAUSE:
        if (st->status != PS_CO_RUNNING && st->status != PS_CO_AWAITING)
            return refuse(why, whylen, "pause: the cutover is %s, not running", sname);
        n.status = PS_CO_PAUSED;
        event(out, "pause", LOG_NOTICE, "paused at %s", at);
        break;
    case PS_CO_CMD_RESUME:
        if (st->status != PS_CO_PAUSED)
            return refuse(why, whylen, "resume: the cutover is %s, not paused", sname);
        if (st->stage == 0) {
            if (may_raise(g, "resume", why, whylen))
                return 1;
            enter(p, &n, PS_CO_RUNNING, 1, out);
        } else {
            n.status = PS_CO_RUNNING;
        }
        where(&n, to, sizeof to);
        event(out, "resume", LOG_NOTICE, "resumed at %s", to);
        break;
    case PS_CO_CMD_STEP_DOWN:
        if (!live || st->stage < 1)
            return refuse(why, whylen, "step-down: the cutover is %s at %s: no stage to step down from", sname,
                          at);
        enter(p, &n, st->stage - 1 == 0 || st->status == PS_CO_PAUSED ? PS_CO_PAUSED : PS_CO_RUNNING,
              st->stage - 1, out);
        if (n.last_good > n.stage)
            n.last_good = n.stage;
        where(&n, to, sizeof to);
        event(out, "step-down", LOG_WARNING, "step down from %s to %s%s", at, to,
              n.stage == 0 ? ", paused" : "");
        break;
    case PS_CO_CMD_ROLLBACK:
        if (!live)
            return refuse(why, whylen, "rollback: the cutover is %s: reads are on the primary already", sname);
        enter(p, &n, PS_CO_ROLLED_BACK, 0, out);
        n.last_good = 0;
        event(out, "rollback", LOG_WARNING, "rollback from %s: reads back on the primary (0%%)", at);
        break;
    case PS_CO_CMD_ABORT:
        enter(p, &n, PS_CO_ABORTED, 0, out);
        n.last_good = 0;
        event(out, "abort", LOG_WARNING, "abort at %s (%s): reads on the primary (0%%), final", at, sname);
        break;
    case PS_CO_CMD_EXTEND:
        if (arg_ms <= 0)
            return refuse(why, whylen, "extend needs a positive duration");
        if (!live || st->stage < 1)
            return refuse(why, whylen, "extend: the cutover is %s at %s: no stage to extend", sname, at);
        n.hold_extra_ms += arg_ms;
        if (st->status == PS_CO_AWAITING)
            n.status = PS_CO_RUNNING;
        ps_duration_format(arg_ms, d, sizeof d);
        ps_duration_format(ps_co_hold_needed(p, &n), to, sizeof to);
        event(out, "extend", LOG_NOTICE, "extend %s by %s: holds %s in all%s", at, d, to,
              st->status == PS_CO_AWAITING ? "; running again until then" : "");
        break;
    default:
        return refuse(why, whylen, "unknown command");
    }
    *st = n;
    return 0;
}

/* ---- schedules ---- */

size_t ps_co_format_schedule(const ps_stage *s, size_t n, char *buf, size_t len)
{
    size_t pos = 0;
    if (len)
        buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char h[32];
        ps_duration_format(s[i].hold_ms, h, sizeof h);
        ps_appendf(buf, len, &pos, "%s%d/%s", i ? " " : "", s[i].percent, h);
    }
    return pos;
}

static bool same_schedule(const ps_stage *a, size_t na, const ps_stage *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (a[i].percent != b[i].percent || a[i].hold_ms != b[i].hold_ms)
            return false;
    return true;
}

int ps_co_reschedule(const ps_stage *old_s, size_t n_old, const ps_stage *new_s, size_t n_new,
                     ps_co_state *st, char *msg, size_t len)
{
    char was[256], now[256];
    ps_co_format_schedule(old_s, n_old, was, sizeof was);
    ps_co_format_schedule(new_s, n_new, now, sizeof now);
    bool equal = same_schedule(old_s, n_old, new_s, n_new);
    bool in_force = st->stage >= 1 && (st->status == PS_CO_RUNNING || st->status == PS_CO_PAUSED ||
                                       st->status == PS_CO_AWAITING);
    if (!in_force) {
        if (equal)
            msg[0] = '\0';
        else
            snprintf(msg, len, "schedule %s -> %s (no stage in force)", was, now);
        return 0;
    }
    int k = 0;
    for (size_t i = 0; i < n_new; i++)
        if (new_s[i].percent == st->percent)
            k = (int)i + 1;
    if (k == 0) {
        snprintf(msg, len,
                 "refused: the new schedule (%s) has no stage at %d%%, the percent in force (stage %d of %s): "
                 "reads would move without their gates; the running schedule stays",
                 now, st->percent, st->stage, was);
        return 1;
    }
    /* last_good: the new stages at or below the old last good percent */
    int lg_percent = st->last_good >= 1 && (size_t)st->last_good <= n_old ? old_s[st->last_good - 1].percent : 0;
    int lg = 0;
    for (size_t i = 0; i < n_new; i++)
        if (new_s[i].percent <= lg_percent && (int)i + 1 <= k)
            lg = (int)i + 1;
    if (equal && k == st->stage) {
        msg[0] = '\0';
    } else if (k == st->stage) {
        snprintf(msg, len, "schedule %s -> %s; stage %d (%d%%) stays in force", was, now, k, st->percent);
    } else {
        snprintf(msg, len, "schedule %s -> %s; stage %d (%d%%) is now stage %d", was, now, st->stage,
                 st->percent, k);
    }
    st->stage = k;
    st->last_good = lg;
    return 0;
}

size_t ps_co_format_status(const ps_co_policy *p, const ps_co_state *st, char *buf, size_t len)
{
    char e[32], n[32];
    int r;
    switch (st->status) {
    case PS_CO_RUNNING:
        ps_human_duration(st->hold_earned_ms, e, sizeof e);
        ps_duration_format(ps_co_hold_needed(p, st), n, sizeof n);
        r = snprintf(buf, len, "cutover running stage %d/%zu %d%%, hold %s/%s", st->stage, p->n_stages, st->percent, e, n);
        break;
    case PS_CO_PAUSED:
        r = snprintf(buf, len, "cutover paused stage %d/%zu %d%%", st->stage, p->n_stages, st->percent);
        break;
    case PS_CO_AWAITING:
        r = snprintf(buf, len, "cutover awaiting decision at %d%%", st->percent);
        break;
    case PS_CO_PROMOTED: /* no percent: the shadows are the tables, routing says primary */
        r = snprintf(buf, len, "cutover promoted");
        break;
    default:
        r = snprintf(buf, len, "cutover %s %d%%", ps_co_status_name(st->status), st->percent);
        break;
    }
    return r < 0 ? 0 : (size_t)r > len ? len : (size_t)r;
}
