/*
 * cutover/gates.c - the cutover's gates (cutover.h): every gate's value,
 * limit and colour from one dashboard snapshot and the config's limits.
 * Pure: no I/O, no clock.
 *
 * A stale snapshot (NULL) makes every gate STALE: "no data" is never
 * healthy and never a failure. The sampling gates are OFF when sampling is
 * off (verify.sample_interval 0) or when the window read no key at all
 * (every table empty: nothing to compare); STALE when no round ended in
 * the window (the sampler is behind or failing); the latency ratio is
 * STALE while it is unknown with keys read (a primary p99 of 0).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "pgshadow/cutover.h"
#include "pgshadow/util.h"

static const struct {
    const char *name, *words;
} gate_names[PS_GATE_N] = {
    [PS_GATE_SYNC_PERCENT] = {"sync_percent", "sync percent"},
    [PS_GATE_SYNC_LAG] = {"sync_lag", "sync lag"},
    [PS_GATE_DIVERGED] = {"diverged", "diverged rows"},
    [PS_GATE_QUARANTINED] = {"quarantined", "quarantined rows"},
    [PS_GATE_SAMPLE_MISMATCHES] = {"sample_mismatches", "sampled read mismatches"},
    [PS_GATE_LATENCY_RATIO] = {"latency_ratio", "shadow/primary p99"},
    [PS_GATE_CAPTURE_OFF] = {"capture_off", "tables with capture off"},
};

const char *ps_gate_name(ps_gate_id id)
{
    return id < PS_GATE_N ? gate_names[id].name : "?";
}

const char *ps_gate_words(ps_gate_id id)
{
    return id < PS_GATE_N ? gate_names[id].words : "?";
}

const char *ps_gate_color_name(ps_gate_color c)
{
    switch (c) {
    case PS_GATE_GREEN:
        return "green";
    case PS_GATE_RED:
        return "red";
    case PS_GATE_OFF:
        return "off";
    case PS_GATE_STALE:
    default:
        return "stale";
    }
}

/* green when v <= limit (at_least: v >= limit) */
static ps_gate judge(double v, double limit, bool at_least)
{
    bool ok = at_least ? v >= limit : v <= limit;
    return (ps_gate){ok ? PS_GATE_GREEN : PS_GATE_RED, v, limit};
}

void ps_gates_eval(const ps_config *cfg, const ps_monitor_snapshot *snap, ps_gates *out)
{
    memset(out, 0, sizeof *out);
    const typeof(cfg->cutover.gates) *l = &cfg->cutover.gates;
    out->g[PS_GATE_SYNC_PERCENT].limit = l->min_sync_percent;
    out->g[PS_GATE_SYNC_LAG].limit = (double)l->max_sync_lag_ms / 1000.0;
    out->g[PS_GATE_DIVERGED].limit = (double)l->max_diverged;
    out->g[PS_GATE_QUARANTINED].limit = (double)l->max_quarantined;
    out->g[PS_GATE_SAMPLE_MISMATCHES].limit = (double)l->max_sample_mismatches;
    out->g[PS_GATE_LATENCY_RATIO].limit = l->max_latency_ratio;
    bool sampling = cfg->verify.sample_interval_ms > 0;
    if (!sampling) {
        out->g[PS_GATE_SAMPLE_MISMATCHES].color = PS_GATE_OFF;
        out->g[PS_GATE_LATENCY_RATIO].color = PS_GATE_OFF;
    }
    if (!snap)
        return; /* every other gate STALE */
    out->fresh = true;
    out->ready = snap->status == PS_MONITOR_READY;
    out->poll = snap->taken_ms;
    out->g[PS_GATE_SYNC_PERCENT] = judge(snap->min_sync_percent, l->min_sync_percent, true);
    out->g[PS_GATE_SYNC_LAG] = judge(snap->max_sync_lag_s, out->g[PS_GATE_SYNC_LAG].limit, false);
    out->g[PS_GATE_DIVERGED] = judge((double)snap->total_diverged, (double)l->max_diverged, false);
    out->g[PS_GATE_QUARANTINED] = judge((double)snap->total_quarantined, (double)l->max_quarantined, false);
    int off = 0;
    for (int i = 0; i < snap->n_kept; i++)
        off += !snap->tables[i].capture_enabled;
    if (off == 0 && !snap->capture_enabled)
        off = 1; /* a table beyond the kept rows */
    out->g[PS_GATE_CAPTURE_OFF] = judge((double)off, 0, false);
    if (!sampling)
        return;
    ps_gate *sm = &out->g[PS_GATE_SAMPLE_MISMATCHES], *lr = &out->g[PS_GATE_LATENCY_RATIO];
    if (!snap->sampled)
        return; /* both STALE: no round in the window */
    if (snap->sample_keys == 0) {
        sm->color = lr->color = PS_GATE_OFF; /* nothing to sample */
        return;
    }
    *sm = judge((double)snap->sample_mismatches, sm->limit, false);
    if (snap->sample_p99_ratio >= 0)
        *lr = judge(snap->sample_p99_ratio, lr->limit, false);
}

bool ps_gates_green(const ps_gates *g)
{
    if (!g->fresh)
        return false;
    for (int i = 0; i < PS_GATE_N; i++)
        if (g->g[i].color != PS_GATE_GREEN && g->g[i].color != PS_GATE_OFF)
            return false;
    return true;
}

bool ps_gates_red(const ps_gates *g)
{
    for (int i = 0; g->fresh && i < PS_GATE_N; i++)
        if (g->g[i].color == PS_GATE_RED)
            return true;
    return false;
}

size_t ps_gate_format_value(ps_gate_id id, double v, char *buf, size_t len)
{
    int n;
    switch (id) {
    case PS_GATE_SYNC_PERCENT:
        n = snprintf(buf, len, "%.4g%%", v);
        break;
    case PS_GATE_SYNC_LAG:
        /* four significant digits: a lag of 30.4 s against 30 s must not read "30 s > 30 s" */
        n = v < 1000 ? snprintf(buf, len, "%.4g s", v) : snprintf(buf, len, "%.0f s", v);
        break;
    case PS_GATE_LATENCY_RATIO:
        n = snprintf(buf, len, "x%.2f", v);
        break;
    default:
        n = snprintf(buf, len, "%.0f", v);
        break;
    }
    return n < 0 ? 0 : (size_t)n;
}

size_t ps_gates_format_red(const ps_gates *g, char *buf, size_t len)
{
    size_t total = 0; /* snprintf semantics: the whole length, however much fits */
    if (len)
        buf[0] = '\0';
    for (int i = 0; i < PS_GATE_N; i++) {
        if (!g->fresh || g->g[i].color != PS_GATE_RED)
            continue;
        char v[32], l[32];
        ps_gate_format_value((ps_gate_id)i, g->g[i].value, v, sizeof v);
        ps_gate_format_value((ps_gate_id)i, g->g[i].limit, l, sizeof l);
        int n = snprintf(total < len ? buf + total : NULL, total < len ? len - total : 0, "%s%s %s %s %s",
                         total ? "; " : "", ps_gate_words((ps_gate_id)i), v,
                         i == PS_GATE_SYNC_PERCENT ? "<" : ">", l);
        if (n > 0)
            total += (size_t)n;
    }
    return total;
}
