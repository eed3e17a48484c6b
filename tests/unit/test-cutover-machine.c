/*
 * test-cutover-machine.c - the cutover's pure half (include/pgshadow/cutover.h;
 * src/cutover/gates.c, src/cutover/machine.c), one table row per case, the
 * fake clock an input:
 *  - the gates: each one green or red at its limit (equal is green), stale
 *    snapshots, the sampling gates off/stale, the text of the red ones;
 *  - every status x every command: what is carried out (status, stage,
 *    percent, hold, event) and what is refused (state untouched, a reason);
 *    start and resume from 0% ask for fresh, READY, not-red gates;
 *  - tick scripts on a fake monotonic clock: hold earned only between two
 *    green evaluations (capped at 2 x poll + 1 s), across restarts and
 *    stale snapshots; failures counted once a poll; each on_trip policy;
 *    a 5-stage schedule to the decision; finally wait/promote; auto start;
 *    finalize after a promote, final;
 *  - reschedule (rule 6 of a reload), STATUS= words, names and parsing.
 *
 * Over 800 lines on purpose: it is the machine's specification as tables
 * (111 command rows cover all 81 status x command pairs, 20 tick scripts);
 * split into files, a rule and its cases would drift apart.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pgshadow/cutover.h"

#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)

/* ---- the gates' inputs ---- */

/* Limits: sync >= 99%, lag <= 30 s, diverged <= 5, quarantined <= 0,
 * mismatches <= 0, p99 ratio <= 1.5; sampling every 10 s (or off). */
static const ps_config *config(bool sampling)
{
    static ps_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.cutover.gates.min_sync_percent = 99;
    cfg.cutover.gates.max_sync_lag_ms = 30 * SEC;
    cfg.cutover.gates.max_diverged = 5;
    cfg.cutover.gates.max_quarantined = 0;
    cfg.cutover.gates.max_sample_mismatches = 0;
    cfg.cutover.gates.max_latency_ratio = 1.5;
    cfg.verify.sample_interval_ms = sampling ? 10 * SEC : 0;
    return &cfg;
}

/* A READY snapshot with every gate exactly at its limit. */
static ps_monitor_snapshot at_limits(int64_t taken_ms)
{
    ps_monitor_snapshot s;
    memset(&s, 0, sizeof s);
    s.taken_ms = taken_ms;
    s.status = PS_MONITOR_READY;
    s.min_sync_percent = 99;
    s.max_sync_lag_s = 30;
    s.total_diverged = 5;
    s.sampled = true;
    s.sample_keys = 20;
    s.sample_p99_ratio = 1.5;
    s.capture_enabled = true;
    return s;
}

typedef enum {
    F_NONE = 0, F_PCT, F_LAG, F_DIV, F_QUAR, F_MISM, F_RATIO, F_KEYS, F_SAMPLED, F_MONITORING, F_CAPTURE_OFF
} field;
typedef struct mut {
    field f;
    double v;
} mut;

static void apply(ps_monitor_snapshot *s, const mut *m)
{
    switch (m->f) {
    case F_PCT: s->min_sync_percent = m->v; break;
    case F_LAG: s->max_sync_lag_s = m->v; break;
    case F_DIV: s->total_diverged = (int64_t)m->v; break;
    case F_QUAR: s->total_quarantined = (int64_t)m->v; break;
    case F_MISM: s->sample_mismatches = (int64_t)m->v; break;
    case F_RATIO: s->sample_p99_ratio = m->v; break;
    case F_KEYS: s->sample_keys = (int64_t)m->v; break;
    case F_SAMPLED: s->sampled = m->v != 0; break;
    case F_MONITORING: s->status = PS_MONITOR_MONITORING; break;
    case F_CAPTURE_OFF:
        s->capture_enabled = false;
        s->n_kept = 2;
        s->tables[1].capture_enabled = false;
        s->tables[0].capture_enabled = m->v == 2;
        break;
    case F_NONE: break;
    }
}

/* The evaluations the machine tests run on. */
typedef enum {
    GREEN = 0, /* fresh, READY, every gate green */
    RED,       /* sync lag 41 s > 30 s */
    RED2,      /* and diverged rows 7 > 5 */
    STALE,     /* no snapshot */
    PSTALE,    /* fresh, but no sampling round in the window: two gates stale */
    UNREADY,   /* every gate green, the dashboard says MONITORING_REQUIRED */
    NOEVAL,    /* no evaluation at all (commands only) */
} gkind;

static ps_gates gates_of(gkind k, int64_t poll)
{
    ps_monitor_snapshot s = at_limits(poll);
    static const mut lag = {F_LAG, 41}, div = {F_DIV, 7}, unsampled = {F_SAMPLED, 0},
                     monitoring = {F_MONITORING, 0};
    if (k == RED || k == RED2)
        apply(&s, &lag);
    if (k == RED2)
        apply(&s, &div);
    if (k == PSTALE)
        apply(&s, &unsampled);
    if (k == UNREADY)
        apply(&s, &monitoring);
    ps_gates g;
    ps_gates_eval(config(true), k == STALE ? NULL : &s, &g);
    return g;
}

/* ---- gates ---- */

static double value_of(const ps_monitor_snapshot *s, int i)
{
    const double v[PS_GATE_N] = {s->min_sync_percent, s->max_sync_lag_s, (double)s->total_diverged,
                                 (double)s->total_quarantined, (double)s->sample_mismatches,
                                 s->sample_p99_ratio,
                                 (double)(s->n_kept - (s->n_kept ? s->tables[0].capture_enabled + s->tables[1].capture_enabled : 0))};
    return v[i];
}

static void test_gates_table(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        bool stale, sampling_off;
        mut m[2];
        const char *colors; /* per gate: G green, R red, S stale, O off */
        bool green, red, ready;
    } cases[] = {
        {"every gate exactly at its limit is green", false, false, {{0}}, "GGGGGGG", true, false, true},
        {"sync percent just under", false, false, {{F_PCT, 98.99}}, "RGGGGGG", false, true, true},
        {"sync percent 100", false, false, {{F_PCT, 100}}, "GGGGGGG", true, false, true},
        {"sync lag 1 ms over", false, false, {{F_LAG, 30.001}}, "GRGGGGG", false, true, true},
        {"sync lag 0", false, false, {{F_LAG, 0}}, "GGGGGGG", true, false, true},
        {"diverged 6 > 5", false, false, {{F_DIV, 6}}, "GGRGGGG", false, true, true},
        {"quarantined 1 > 0", false, false, {{F_QUAR, 1}}, "GGGRGGG", false, true, true},
        {"one sampled mismatch", false, false, {{F_MISM, 1}}, "GGGGRGG", false, true, true},
        {"p99 ratio 1.51 > 1.5", false, false, {{F_RATIO, 1.51}}, "GGGGGRG", false, true, true},
        {"p99 ratio 0 is known and green", false, false, {{F_RATIO, 0}}, "GGGGGGG", true, false, true},
        {"stale snapshot, sampling on", true, false, {{0}}, "SSSSSSS", false, false, false},
        {"stale snapshot, sampling off", true, true, {{0}}, "SSSSOOS", false, false, false},
        {"sampling off: its gates off whatever the window says", false, true, {{F_MISM, 99}, {F_RATIO, 9}},
         "GGGGOOG", true, false, true},
        {"no sampling round in the window: stale", false, false, {{F_SAMPLED, 0}, {F_MISM, 9}}, "GGGGSSG",
         false, false, true},
        {"nothing to sample (no key read): off", false, false, {{F_KEYS, 0}, {F_MISM, 9}}, "GGGGOOG", true,
         false, true},
        {"p99 ratio unknown: stale", false, false, {{F_RATIO, -1}}, "GGGGGSG", false, false, true},
        {"p99 unknown and a mismatch: red", false, false, {{F_RATIO, -1}, {F_MISM, 1}}, "GGGGRSG", false,
         true, true},
        {"red and stale together: red", false, false, {{F_SAMPLED, 0}, {F_LAG, 41}}, "GRGGSSG", false, true,
         true},
        {"capture off for one table of two: red 1 > 0", false, false, {{F_CAPTURE_OFF, 2}}, "GGGGGGR", false,
         true, true},
        {"capture off for both: 2", false, false, {{F_CAPTURE_OFF, 1}}, "GGGGGGR", false, true, true},
        {"MONITORING_REQUIRED: green, not ready", false, false, {{F_MONITORING, 0}}, "GGGGGGG", true, false,
         false},
    };
    const double limits[PS_GATE_N] = {99, 30, 5, 0, 0, 1.5, 0};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ps_monitor_snapshot s = at_limits(777);
        apply(&s, &cases[i].m[0]);
        apply(&s, &cases[i].m[1]);
        ps_gates g;
        memset(&g, 0xa5, sizeof g);
        ps_gates_eval(config(!cases[i].sampling_off), cases[i].stale ? NULL : &s, &g);
        for (int k = 0; k < PS_GATE_N; k++) {
            const char *c = strchr("SGRO", cases[i].colors[k]);
            if (!c || g.g[k].color != (ps_gate_color)(c - "SGRO"))
                fail_msg("case '%s': gate %s is %s, want %c", cases[i].name, ps_gate_name((ps_gate_id)k),
                         ps_gate_color_name(g.g[k].color), cases[i].colors[k]);
            if (g.g[k].limit != limits[k])
                fail_msg("case '%s': gate %s limit %g", cases[i].name, ps_gate_name((ps_gate_id)k),
                         g.g[k].limit);
            bool judged = g.g[k].color == PS_GATE_GREEN || g.g[k].color == PS_GATE_RED;
            if (judged && g.g[k].value != value_of(&s, k))
                fail_msg("case '%s': gate %s value %g", cases[i].name, ps_gate_name((ps_gate_id)k),
                         g.g[k].value);
        }
        if (g.fresh != !cases[i].stale || ps_gates_green(&g) != cases[i].green ||
            ps_gates_red(&g) != cases[i].red || g.ready != cases[i].ready ||
            g.poll != (cases[i].stale ? 0 : 777))
            fail_msg("case '%s': fresh %d green %d red %d ready %d poll %lld", cases[i].name, g.fresh,
                     ps_gates_green(&g), ps_gates_red(&g), g.ready, (long long)g.poll);
    }
}

static void test_gates_format(void **state)
{
    (void)state;
    static const struct {
        bool stale;
        mut m[6];
        const char *want;
    } cases[] = {
        {false, {{F_LAG, 41}}, "sync lag 41 s > 30 s"},
        {false, {{F_LAG, 41}, {F_DIV, 7}}, "sync lag 41 s > 30 s; diverged rows 7 > 5"},
        {false, {{F_PCT, 98.5}}, "sync percent 98.5% < 99%"},
        {false, {{F_QUAR, 2}}, "quarantined rows 2 > 0"},
        {false, {{F_MISM, 3}, {F_RATIO, 1.6}},
         "sampled read mismatches 3 > 0; shadow/primary p99 x1.60 > x1.50"},
        {false, {{F_PCT, 50}, {F_LAG, 41}, {F_DIV, 7}, {F_QUAR, 2}, {F_MISM, 3}, {F_RATIO, 2}},
         "sync percent 50% < 99%; sync lag 41 s > 30 s; diverged rows 7 > 5; quarantined rows 2 > 0; "
         "sampled read mismatches 3 > 0; shadow/primary p99 x2.00 > x1.50"},
        {false, {{0}}, ""},
        {true, {{0}}, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ps_monitor_snapshot s = at_limits(1);
        for (int k = 0; k < 6; k++)
            apply(&s, &cases[i].m[k]);
        ps_gates g;
        ps_gates_eval(config(true), cases[i].stale ? NULL : &s, &g);
        char buf[400] = "untouched";
        size_t n = ps_gates_format_red(&g, buf, sizeof buf);
        if (strcmp(buf, cases[i].want) != 0 || n != strlen(cases[i].want))
            fail_msg("case %zu: '%s' (%zu), want '%s'", i, buf, n, cases[i].want);
    }
    /* snprintf semantics: the whole length back, the text cut and ended */
    ps_gates g = gates_of(RED, 1);
    char small[8], none[4] = "abc";
    assert_int_equal(ps_gates_format_red(&g, small, sizeof small), strlen("sync lag 41 s > 30 s"));
    assert_string_equal(small, "sync la");
    assert_int_equal(ps_gates_format_red(&g, none, 0), strlen("sync lag 41 s > 30 s"));
    assert_string_equal(none, "abc");

    static const struct {
        ps_gate_id id;
        double v;
        const char *want;
    } vals[] = {
        {PS_GATE_SYNC_LAG, 41, "41 s"},        {PS_GATE_SYNC_LAG, 9.5, "9.5 s"},
        {PS_GATE_SYNC_LAG, 0.25, "0.25 s"},    {PS_GATE_SYNC_PERCENT, 98.5, "98.5%"},
        {PS_GATE_SYNC_PERCENT, 100, "100%"},   {PS_GATE_LATENCY_RATIO, 1.04, "x1.04"},
        {PS_GATE_DIVERGED, 7, "7"},            {PS_GATE_SAMPLE_MISMATCHES, 0, "0"},
    };
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        char buf[32];
        ps_gate_format_value(vals[i].id, vals[i].v, buf, sizeof buf);
        assert_string_equal(buf, vals[i].want);
    }
}

/* ---- the machine: schedules, policies, states ---- */

/* The default schedule, and one of 30 s stages. */
static const ps_stage S5[] = {{1, HOUR}, {5, 2 * HOUR}, {20, 4 * HOUR}, {50, 4 * HOUR}, {100, 8 * HOUR}};
#define S30 (30 * SEC)
static const ps_stage SHORT[] = {{1, S30}, {5, S30}, {20, S30}, {50, S30}, {100, S30}};

/* stages, start, failures_to_trip, on_trip, finally, promote step; polls every 10 s (cap 21 s) */
#define POL(st, start_, ftt, trip_, fin, prom)                                                  \
    ((ps_co_policy){.stages = st, .n_stages = sizeof st / sizeof *st,                              \
                    .start = PS_CUTOVER_START_##start_, .failures_to_trip = ftt,                   \
                    .on_trip = PS_ON_TRIP_##trip_, .finally = PS_FINALLY_##fin,                    \
                    .poll_interval_ms = 10 * SEC, .promote_available = prom})

/* Short names for the statuses in the tables below. */
enum { NS = PS_CO_NOT_STARTED, RUN = PS_CO_RUNNING, PAU = PS_CO_PAUSED, AWA = PS_CO_AWAITING,
       PRG = PS_CO_PROMOTING, PRD = PS_CO_PROMOTED, RB = PS_CO_ROLLED_BACK, AB = PS_CO_ABORTED,
       FIN = PS_CO_FINALIZED };
#define M10 (10 * MIN)

/* status, stage, percent, hold earned, hold extra, failures, last good */
#define ST(s, stg, pct, h, x, f, lg)                                                            \
    {.status = (ps_co_status)(s), .stage = stg, .percent = pct, .hold_earned_ms = h,               \
     .hold_extra_ms = x, .failures = f, .last_good = lg}

static const ps_co_state s_ns = ST(NS, 0, 0, 0, 0, 0, 0);
static const ps_co_state s_run = ST(RUN, 3, 20, M10, 0, 1, 2);
static const ps_co_state s_run1 = ST(RUN, 1, 1, 5 * SEC, 0, 0, 0);
static const ps_co_state s_pau = ST(PAU, 3, 20, M10, 0, 0, 2);
static const ps_co_state s_pau1 = ST(PAU, 1, 1, 0, 0, 0, 0);
static const ps_co_state s_pau0 = ST(PAU, 0, 0, 0, 0, 0, 0);
static const ps_co_state s_awa = ST(AWA, 5, 100, 8 * HOUR, 0, 0, 5);
static const ps_co_state s_prg = ST(PRG, 5, 100, 8 * HOUR, 0, 0, 5);
static const ps_co_state s_prd = ST(PRD, 5, 100, 8 * HOUR, 0, 0, 5);
static const ps_co_state s_rb = ST(RB, 0, 0, 0, 0, 0, 0);
static const ps_co_state s_ab = ST(AB, 0, 0, 0, 0, 0, 0);
static const ps_co_state s_fin = ST(FIN, 5, 100, 8 * HOUR, 0, 0, 5);

static bool same_state(const ps_co_state *a, const ps_co_state *b)
{
    return a->status == b->status && a->stage == b->stage && a->percent == b->percent &&
           a->hold_earned_ms == b->hold_earned_ms && a->hold_extra_ms == b->hold_extra_ms &&
           a->failures == b->failures && a->last_good == b->last_good;
}

static const char *show(const ps_co_state *s)
{
    static char buf[2][160];
    static int i;
    i = !i;
    snprintf(buf[i], sizeof buf[i], "%s stage %d %d%% hold %lld+%lld failures %d last_good %d",
             ps_co_status_name(s->status), s->stage, s->percent, (long long)s->hold_earned_ms,
             (long long)s->hold_extra_ms, s->failures, s->last_good);
    return buf[i];
}

/* ---- every status x every command ---- */

#define LAG41 "sync lag 41 s > 30 s"

typedef struct ccase {
    const char *name;
    const ps_co_state *from;
    ps_co_cmd cmd;
    int64_t arg;
    gkind gk;
    int rc; /* 0 carried out, 1 refused */
    ps_co_state want;
    const char *what;
    bool percent_changed;
    const char *why; /* the event's text, or the refusal's (NULL: not read) */
} ccase;

/* Carried out: the state after it, the event, whether the percent moved. */
#define OKW(name, from, cmd, arg, gk, want, what, pc, why) \
    {name, &from, PS_CO_CMD_##cmd, arg, gk, 0, want, what, pc, why}
#define OK(name, from, cmd, arg, gk, want, what, pc) \
    {name, &from, PS_CO_CMD_##cmd, arg, gk, 0, want, what, pc, NULL}
/* Refused: the state untouched, a reason. */
#define NOW(name, from, cmd, arg, gk, why) {name, &from, PS_CO_CMD_##cmd, arg, gk, 1, {0}, "", false, why}
#define NO(name, from, cmd, arg, gk) NOW(name, from, cmd, arg, gk, NULL)
#define ALL_NO(from)                                                                      \
    NO("", from, START, 0, GREEN), NO("", from, PAUSE, 0, GREEN),                         \
        NO("", from, RESUME, 0, GREEN), NO("", from, STEP_DOWN, 0, GREEN),                \
        NO("", from, ROLLBACK, 0, GREEN), NO("", from, ABORT, 0, GREEN),                  \
        NO("", from, EXTEND, HOUR, GREEN)
#define ALL_NO_BUT_PROMOTE(from) ALL_NO(from), NO("", from, PROMOTE, 0, GREEN)

static const ccase ccases[] = {
    /* promote: from awaiting the decision (and again from promoting, after
     * finally's try failed), on a fresh evaluation with no gate red */
    NO("not started", s_ns, PROMOTE, 0, GREEN),
    NOW("running", s_run, PROMOTE, 0, GREEN,
        "promote: the cutover is running at stage 3, 20%: promote follows the last stage's hold (awaiting the "
        "decision)"),
    NO("paused", s_pau, PROMOTE, 0, GREEN),
    OKW("green", s_awa, PROMOTE, 0, GREEN, ST(PRG, 5, 100, 8 * HOUR, 0, 0, 5), "promote", 0,
        "promote at stage 5, 100%: the swap of every table"),
    NOW("stale", s_awa, PROMOTE, 0, STALE, "promote: the dashboard is stale: no gate can be judged"),
    NO("no evaluation", s_awa, PROMOTE, 0, NOEVAL),
    NO("red", s_awa, PROMOTE, 0, RED),
    OK("again, after a failed try", s_prg, PROMOTE, 0, GREEN, ST(PRG, 5, 100, 8 * HOUR, 0, 0, 5), "promote", 0),
    NO("promoted", s_prd, PROMOTE, 0, GREEN),
    NO("rolled back", s_rb, PROMOTE, 0, GREEN),
    NO("aborted", s_ab, PROMOTE, 0, GREEN),
    NOW("finalized", s_fin, PROMOTE, 0, GREEN,
        "promote: the migration is finalized: its legacy tables are gone, nothing is left to do"),
    /* finalize: from promoted alone; the gates are not asked (no shadow is
     * left to judge): stale, red or none, the SQL step decides the rest */
    NOW("not started", s_ns, FINALIZE, 0, GREEN,
        "finalize: the cutover is not_started at 0%: finalize follows a promote"),
    NO("running", s_run, FINALIZE, 0, GREEN),
    NO("paused", s_pau, FINALIZE, 0, GREEN),
    NOW("awaiting the decision", s_awa, FINALIZE, 0, GREEN,
        "finalize: the cutover is awaiting_decision at stage 5, 100%: finalize follows a promote"),
    NO("promoting", s_prg, FINALIZE, 0, GREEN),
    OKW("promoted", s_prd, FINALIZE, 0, GREEN, ST(FIN, 5, 100, 8 * HOUR, 0, 0, 5), "finalize", 0,
        "finalize: the legacy tables, the compatibility views and pgshadow's state of the migration go"),
    OK("promoted, the dashboard stale", s_prd, FINALIZE, 0, STALE, ST(FIN, 5, 100, 8 * HOUR, 0, 0, 5),
       "finalize", 0),
    OK("promoted, no evaluation", s_prd, FINALIZE, 0, NOEVAL, ST(FIN, 5, 100, 8 * HOUR, 0, 0, 5), "finalize", 0),
    OK("promoted, gates red", s_prd, FINALIZE, 0, RED, ST(FIN, 5, 100, 8 * HOUR, 0, 0, 5), "finalize", 0),
    NO("rolled back", s_rb, FINALIZE, 0, GREEN),
    NO("aborted", s_ab, FINALIZE, 0, GREEN),
    NOW("finalized already", s_fin, FINALIZE, 0, GREEN,
        "finalize: the migration is finalized: its legacy tables are gone, nothing is left to do"),
    /* revert: from promoted alone; the gates are not asked (the SQL step
     * checks reverse sync, the quarantine and the plan) */
    NOW("not started", s_ns, REVERT, 0, GREEN, "revert: the cutover is not_started at 0%: revert undoes a promote"),
    NO("running", s_run, REVERT, 0, GREEN),
    NO("paused", s_pau, REVERT, 0, GREEN),
    NO("awaiting the decision", s_awa, REVERT, 0, GREEN),
    NO("promoting", s_prg, REVERT, 0, GREEN),
    OKW("promoted", s_prd, REVERT, 0, GREEN, ST(RB, 0, 0, 0, 0, 0, 0), "revert", 0,
        "revert: the legacy tables back under their names, reads on them"),
    OK("promoted, gates red", s_prd, REVERT, 0, RED, ST(RB, 0, 0, 0, 0, 0, 0), "revert", 0),
    OK("promoted, no evaluation", s_prd, REVERT, 0, NOEVAL, ST(RB, 0, 0, 0, 0, 0, 0), "revert", 0),
    NO("rolled back", s_rb, REVERT, 0, GREEN),
    NO("aborted", s_ab, REVERT, 0, GREEN),
    NOW("finalized", s_fin, REVERT, 0, GREEN,
        "revert: the migration is finalized: its legacy tables are gone, nothing is left to do"),
    /* not started */
    OKW("on green READY gates", s_ns, START, 0, GREEN, ST(RUN, 1, 1, 0, 0, 0, 0), "start", 1,
        "start: stage 1, 1%"),
    NOW("on a stale dashboard", s_ns, START, 0, STALE,
        "start: the dashboard is stale: no gate can be judged"),
    NO("on no evaluation yet", s_ns, START, 0, NOEVAL),
    NOW("with gates red", s_ns, START, 0, RED2, "start: gates red: " LAG41 "; diverged rows 7 > 5"),
    NO("before READY", s_ns, START, 0, UNREADY),
    NO("", s_ns, PAUSE, 0, GREEN),
    NO("", s_ns, RESUME, 0, GREEN),
    NO("", s_ns, STEP_DOWN, 0, GREEN),
    NO("reads are on the primary already", s_ns, ROLLBACK, 0, GREEN),
    OK("", s_ns, ABORT, 0, GREEN, ST(AB, 0, 0, 0, 0, 0, 0), "abort", 0),
    NO("", s_ns, EXTEND, HOUR, GREEN),
    /* running at stage 3 (20%), one failure, stage 2 held */
    NO("", s_run, START, 0, GREEN),
    OKW("keeps hold and failures", s_run, PAUSE, 0, RED, ST(PAU, 3, 20, M10, 0, 1, 2), "pause", 0,
        "paused at stage 3, 20%"),
    NO("", s_run, RESUME, 0, GREEN),
    OKW("", s_run, STEP_DOWN, 0, GREEN, ST(RUN, 2, 5, 0, 0, 0, 2), "step-down", 1,
        "step down from stage 3, 20% to stage 2, 5%"),
    OKW("from stage 1: 0%, paused", s_run1, STEP_DOWN, 0, GREEN, ST(PAU, 0, 0, 0, 0, 0, 0), "step-down", 1,
        "step down from stage 1, 1% to 0%, paused"),
    OK("on a stale dashboard", s_run, ROLLBACK, 0, STALE, ST(RB, 0, 0, 0, 0, 0, 0), "rollback", 1),
    OK("", s_run, ABORT, 0, GREEN, ST(AB, 0, 0, 0, 0, 0, 0), "abort", 1),
    OK("1h", s_run, EXTEND, HOUR, GREEN, ST(RUN, 3, 20, M10, HOUR, 1, 2), "extend", 0),
    NOW("0", s_run, EXTEND, 0, GREEN, "extend needs a positive duration"),
    NO("-1 ms", s_run, EXTEND, -1, GREEN),
    /* paused at stage 3 */
    NO("", s_pau, START, 0, GREEN),
    NO("", s_pau, PAUSE, 0, GREEN),
    OK("at a stage", s_pau, RESUME, 0, GREEN, ST(RUN, 3, 20, M10, 0, 0, 2), "resume", 0),
    OK("at a stage, red: trips judge", s_pau, RESUME, 0, RED, ST(RUN, 3, 20, M10, 0, 0, 2), "resume", 0),
    OK("stays paused", s_pau, STEP_DOWN, 0, GREEN, ST(PAU, 2, 5, 0, 0, 0, 2), "step-down", 1),
    OK("from stage 1: 0%", s_pau1, STEP_DOWN, 0, GREEN, ST(PAU, 0, 0, 0, 0, 0, 0), "step-down", 1),
    OK("", s_pau, ROLLBACK, 0, GREEN, ST(RB, 0, 0, 0, 0, 0, 0), "rollback", 1),
    OK("", s_pau, ABORT, 0, GREEN, ST(AB, 0, 0, 0, 0, 0, 0), "abort", 1),
    OK("stays paused", s_pau, EXTEND, HOUR, GREEN, ST(PAU, 3, 20, M10, HOUR, 0, 2), "extend", 0),
    /* paused at 0% (a step-down trip with nothing held below) */
    OK("from 0% on green READY gates", s_pau0, RESUME, 0, GREEN, ST(RUN, 1, 1, 0, 0, 0, 0), "resume", 1),
    NO("from 0% on a stale dashboard", s_pau0, RESUME, 0, STALE),
    NO("from 0% on no evaluation", s_pau0, RESUME, 0, NOEVAL),
    NO("from 0% with a gate red", s_pau0, RESUME, 0, RED),
    NOW("from 0% before READY", s_pau0, RESUME, 0, UNREADY,
        "resume: the dashboard does not say READY_FOR_CUTOVER yet"),
    NO("at 0%", s_pau0, PAUSE, 0, GREEN),
    NO("at 0%", s_pau0, STEP_DOWN, 0, GREEN),
    NO("at 0%", s_pau0, EXTEND, HOUR, GREEN),
    OK("at 0%", s_pau0, ROLLBACK, 0, GREEN, ST(RB, 0, 0, 0, 0, 0, 0), "rollback", 0),
    /* awaiting the decision at stage 5 (100%) */
    NO("", s_awa, START, 0, GREEN),
    OK("", s_awa, PAUSE, 0, GREEN, ST(PAU, 5, 100, 8 * HOUR, 0, 0, 5), "pause", 0),
    NO("", s_awa, RESUME, 0, GREEN),
    OK("runs stage 4", s_awa, STEP_DOWN, 0, GREEN, ST(RUN, 4, 50, 0, 0, 0, 4), "step-down", 1),
    OKW("", s_awa, ROLLBACK, 0, GREEN, ST(RB, 0, 0, 0, 0, 0, 0), "rollback", 1,
        "rollback from stage 5, 100%: reads back on the primary (0%)"),
    OK("", s_awa, ABORT, 0, GREEN, ST(AB, 0, 0, 0, 0, 0, 0), "abort", 1),
    OKW("runs again", s_awa, EXTEND, HOUR, GREEN, ST(RUN, 5, 100, 8 * HOUR, HOUR, 0, 5), "extend", 0,
        "extend stage 5, 100% by 1h: holds 9h in all; running again until then"),
    NO("0", s_awa, EXTEND, 0, GREEN),
    /* rolled back */
    OK("again", s_rb, START, 0, GREEN, ST(RUN, 1, 1, 0, 0, 0, 0), "start", 1),
    NO("on a stale dashboard", s_rb, START, 0, STALE),
    NO("with gates red", s_rb, START, 0, RED2),
    NO("", s_rb, PAUSE, 0, GREEN),
    NO("", s_rb, RESUME, 0, GREEN),
    NO("", s_rb, STEP_DOWN, 0, GREEN),
    NO("", s_rb, ROLLBACK, 0, GREEN),
    OK("", s_rb, ABORT, 0, GREEN, ST(AB, 0, 0, 0, 0, 0, 0), "abort", 0),
    NO("", s_rb, EXTEND, HOUR, GREEN),
    /* final, or in the promote step's hands: every command refused */
    ALL_NO(s_prg),
    ALL_NO(s_prd),
    NOW("", s_prd, ROLLBACK, 0, GREEN, "the cutover is promoted: only revert undoes a promote"),
    ALL_NO(s_ab),
    ALL_NO(s_fin),
    NOW("", s_fin, ROLLBACK, 0, GREEN,
        "rollback: the migration is finalized: its legacy tables are gone, nothing is left to do"),
    NOW("", s_fin, ABORT, 0, RED, "abort: the migration is finalized: its legacy tables are gone, nothing is left to do"),
};

static void test_commands(void **state)
{
    (void)state;
    ps_co_policy p = POL(S5, MANUAL, 3, STEP_DOWN, WAIT, true);
    bool seen[PS_CO_N_STATUS][PS_CO_N_CMD] = {{false}};
    for (size_t i = 0; i < sizeof ccases / sizeof *ccases; i++) {
        const ccase *c = &ccases[i];
        ps_co_state st = *c->from;
        ps_gates g = gates_of(c->gk, 5000);
        ps_co_out out;
        char why[200] = "";
        const char *from = ps_co_status_name(c->from->status), *cmd = ps_co_cmd_name(c->cmd);
        seen[c->from->status][c->cmd] = true;
        int rc = ps_co_command(&p, &st, c->cmd, c->arg, c->gk == NOEVAL ? NULL : &g, &out, why, sizeof why);
        if (c->rc) {
            if (rc <= 0 || !same_state(&st, c->from) || why[0] == '\0' || out.write || out.what[0])
                fail_msg("%s %s '%s': rc %d, %s, why '%s', want refused and untouched", from, cmd,
                         c->name, rc, show(&st), why);
        } else if (rc != 0 || !same_state(&st, &c->want)) {
            fail_msg("%s %s '%s': rc %d (%s), got %s, want %s", from, cmd, c->name, rc, why,
                     show(&st), show(&c->want));
        }
        if (c->why && strcmp(c->rc ? why : out.why, c->why) != 0)
            fail_msg("%s %s '%s': '%s', want '%s'", from, cmd, c->name, c->rc ? why : out.why, c->why);
        if (c->rc)
            continue;
        if (!out.write || strcmp(out.what, c->what) != 0 || out.percent_changed != c->percent_changed ||
            out.why[0] == '\0' || out.log_prio == 0 || out.promote != (c->cmd == PS_CO_CMD_PROMOTE) ||
            out.finalize != (c->cmd == PS_CO_CMD_FINALIZE) || out.revert != (c->cmd == PS_CO_CMD_REVERT))
            fail_msg("%s %s '%s': write %d what '%s' percent_changed %d why '%s' prio %d", from, cmd,
                     c->name, out.write, out.what, out.percent_changed, out.why, out.log_prio);
    }
    for (int s = 0; s < PS_CO_N_STATUS; s++)
        for (int k = 0; k < PS_CO_N_CMD; k++)
            if (!seen[s][k])
                fail_msg("no case for %s x %s", ps_co_status_name((ps_co_status)s),
                         ps_co_cmd_name((ps_co_cmd)k));

    /* a policy without the promote step refuses promote, untouched */
    {
        ps_co_policy np = p;
        np.promote_available = false;
        ps_co_state a = s_awa;
        ps_gates gg = gates_of(GREEN, 1);
        ps_co_out o;
        char w[200] = "";
        assert_int_equal(ps_co_command(&np, &a, PS_CO_CMD_PROMOTE, 0, &gg, &o, w, sizeof w), 1);
        assert_true(same_state(&a, &s_awa));
        assert_string_equal(w, "promote: this build has no promote step");
    }

    /* no stage configured: nothing to start */
    ps_co_policy none = p;
    none.n_stages = 0;
    ps_co_state st = s_ns;
    ps_gates g = gates_of(GREEN, 1);
    ps_co_out out;
    char why[200] = "";
    assert_true(ps_co_command(&none, &st, PS_CO_CMD_START, 0, &g, &out, why, sizeof why) > 0);
    assert_true(same_state(&st, &s_ns) && why[0]);
}

/* ---- ticks on a fake clock ---- */

typedef struct tstep {
    char op; /* 'T' tick, 'R' restart (ps_co_mem_init), 'C' command (green gates), 0 end */
    int64_t now, poll;
    gkind gk;
    ps_co_cmd cmd;
    int64_t arg;
    /* after it: */
    ps_co_status status;
    int stage;
    int64_t hold;
    int failures;
    const char *what; /* the event ("": none) */
    const char *why;  /* its text exactly (NULL: not looked at) */
} tstep;

#define TP(t, p, g, s, stg, h, f, w)                                                             \
    {.op = 'T', .now = t, .poll = p, .gk = g, .status = (ps_co_status)(s), .stage = stg, .hold = h,  \
     .failures = f, .what = w}
#define T(t, g, s, stg, h, f, w) TP(t, t, g, s, stg, h, f, w)
#define TW(t, g, s, stg, h, f, w, y)                                                               \
    {.op = 'T', .now = t, .poll = t, .gk = g, .status = (ps_co_status)(s), .stage = stg, .hold = h,  \
     .failures = f, .what = w, .why = y}
#define C(c, a, s, stg, h, f, w)                                                                   \
    {.op = 'C', .cmd = PS_CO_CMD_##c, .arg = a, .status = (ps_co_status)(s), .stage = stg, .hold = h, \
     .failures = f, .what = w}
#define RESTART {.op = 'R'}
#define END {.op = 0}

typedef struct tcase {
    const char *name;
    ps_co_policy pol;
    ps_co_state from;
    const tstep *steps;
} tcase;

#define AWAIT "awaiting the decision: pgshadowctl promote, rollback or extend DURATION"

static const tcase tcases[] = {
    {"green polls earn the time between two of them, capped at 2 x poll + 1 s",
     POL(S5, MANUAL, 3, STEP_DOWN, WAIT, false), ST(RUN, 1, 1, 0, 0, 0, 0), (const tstep[]){
         T(100000, GREEN, RUN, 1, 0, 0, ""), /* the first since the process began: nothing */
         T(110000, GREEN, RUN, 1, 10000, 0, ""), T(112500, GREEN, RUN, 1, 12500, 0, ""),
         T(133500, GREEN, RUN, 1, 33500, 0, ""),  /* 21 s: the cap exactly */
         T(155501, GREEN, RUN, 1, 54500, 0, ""),  /* 22.001 s: capped */
         T(155501, GREEN, RUN, 1, 54500, 0, ""),  /* the same instant again: nothing */
         T(900000, GREEN, RUN, 1, 75500, 0, ""), /* a stalled loop: capped */
         END}},
    {"a restart neither resets nor skips hold",
     POL(S5, MANUAL, 3, STEP_DOWN, WAIT, false), ST(RUN, 1, 1, 30 * MIN, 0, 0, 0), (const tstep[]){
         RESTART, T(1000000, GREEN, RUN, 1, 30 * MIN, 0, ""),
         T(1010000, GREEN, RUN, 1, 30 * MIN + 10000, 0, ""),
         RESTART, /* down for over an hour */
         T(5000000, GREEN, RUN, 1, 30 * MIN + 10000, 0, ""),
         T(5010000, GREEN, RUN, 1, 30 * MIN + 20000, 0, ""), END}},
    {"a stale snapshot (or a stale gate) breaks the chain, an unready green one does not",
     POL(S5, MANUAL, 3, STEP_DOWN, WAIT, false), ST(RUN, 1, 1, 0, 0, 0, 0), (const tstep[]){
         T(10000, GREEN, RUN, 1, 0, 0, ""), T(20000, GREEN, RUN, 1, 10000, 0, ""),
         T(30000, STALE, RUN, 1, 10000, 0, ""), T(40000, GREEN, RUN, 1, 10000, 0, ""),
         T(50000, GREEN, RUN, 1, 20000, 0, ""), T(60000, PSTALE, RUN, 1, 20000, 0, ""),
         T(70000, GREEN, RUN, 1, 20000, 0, ""), T(80000, UNREADY, RUN, 1, 30000, 0, ""), END}},
    {"stale is no failure; red keeps the hold; 3 consecutive reds step down to the last good stage",
     POL(S5, MANUAL, 3, STEP_DOWN, WAIT, false), ST(RUN, 3, 20, M10, 0, 0, 2), (const tstep[]){
         T(10000, RED, RUN, 3, M10, 1, ""), T(20000, STALE, RUN, 3, M10, 1, ""),
         T(30000, PSTALE, RUN, 3, M10, 1, ""), T(40000, RED, RUN, 3, M10, 2, ""),
         T(50000, GREEN, RUN, 3, M10, 0, ""), /* after a red: nothing earned */
         T(60000, GREEN, RUN, 3, M10 + 10000, 0, ""), T(70000, RED, RUN, 3, M10 + 10000, 1, ""),
         T(80000, RED, RUN, 3, M10 + 10000, 2, ""),
         TW(90000, RED, RUN, 2, 0, 0, "trip",
            LAG41 " at stage 3, 20% (3 polls red): step down to stage 2, 5%"),
         T(100000, GREEN, RUN, 2, 0, 0, ""), T(110000, GREEN, RUN, 2, 10000, 0, ""), END}},
    {"one poll looked at many times is one failure",
     POL(S5, MANUAL, 3, STEP_DOWN, WAIT, false), ST(RUN, 3, 20, M10, 0, 0, 2), (const tstep[]){
         TP(10000, 10000, RED, RUN, 3, M10, 1, ""), TP(15000, 10000, RED, RUN, 3, M10, 1, ""),
         TP(20000, 20000, RED, RUN, 3, M10, 2, ""), TP(25000, 20000, RED, RUN, 3, M10, 2, ""),
         TP(29000, 20000, RED, RUN, 3, M10, 2, ""), TP(30000, 30000, RED, RUN, 2, 0, 0, "trip"),
         TP(35000, 30000, RED, RUN, 2, 0, 0, ""), /* the tripping poll again: no second trip */
         END}},
    {"failures persist across a restart",
     POL(S5, MANUAL, 3, STEP_DOWN, WAIT, false), ST(RUN, 3, 20, M10, 0, 2, 2),
     (const tstep[]){RESTART, T(10000, RED, RUN, 2, 0, 0, "trip"), END}},
    {"step_down with no stage held below: 0%, paused; more reds at 0% change nothing",
     POL(S5, MANUAL, 2, STEP_DOWN, WAIT, false), ST(RUN, 1, 1, 5000, 0, 0, 0), (const tstep[]){
         T(10000, RED, RUN, 1, 5000, 1, ""),
         TW(20000, RED, PAU, 0, 0, 0, "trip",
            LAG41 " at stage 1, 1% (2 polls red): step down: no stage below held green: reads back on the "
                  "primary (0%), paused"),
         T(30000, RED, PAU, 0, 0, 1, ""), T(40000, RED, PAU, 0, 0, 0, ""),
         T(50000, GREEN, PAU, 0, 0, 0, ""), C(RESUME, 0, RUN, 1, 0, 0, "resume"),
         T(60000, GREEN, RUN, 1, 0, 0, ""), T(70000, GREEN, RUN, 1, 10000, 0, ""), END}},
    {"on_trip rollback: 0%, rolled back; then the gates move nothing, auto start or not",
     POL(S5, AUTO, 1, ROLLBACK, WAIT, false), ST(RUN, 3, 20, M10, 0, 0, 2), (const tstep[]){
         TW(10000, RED2, RB, 0, 0, 0, "trip",
            LAG41 "; diverged rows 7 > 5 at stage 3, 20% (1 polls red): rollback: reads back on the "
                  "primary (0%)"),
         T(20000, GREEN, RB, 0, 0, 0, ""), T(30000, RED, RB, 0, 0, 0, ""),
         C(START, 0, RUN, 1, 0, 0, "start"), END}},
    {"on_trip pause: paused at the percent in force, hold from zero; paused time is not credited",
     POL(S5, MANUAL, 2, PAUSE, WAIT, false), ST(RUN, 3, 20, M10, 0, 0, 2), (const tstep[]){
         T(10000, GREEN, RUN, 3, M10, 0, ""), T(20000, GREEN, RUN, 3, M10 + 10000, 0, ""),
         T(30000, RED, RUN, 3, M10 + 10000, 1, ""),
         TW(40000, RED, PAU, 3, 0, 0, "trip", LAG41 " at stage 3, 20% (2 polls red): paused at 20%"),
         T(50000, RED, PAU, 3, 0, 1, ""),
         T(60000, RED, PAU, 3, 0, 0, ""), /* tripping again while paused: nothing to say */
         T(70000, GREEN, PAU, 3, 0, 0, ""), T(80000, GREEN, PAU, 3, 0, 0, ""),
         C(RESUME, 0, RUN, 3, 0, 0, "resume"), T(90000, GREEN, RUN, 3, 0, 0, ""),
         T(100000, GREEN, RUN, 3, 10000, 0, ""), END}},
    {"last good further below (after a reschedule): a step-down trip goes there",
     POL(S5, MANUAL, 1, STEP_DOWN, WAIT, false), ST(RUN, 3, 20, M10, 0, 0, 1), (const tstep[]){
         TW(10000, RED, RUN, 1, 0, 0, "trip",
            LAG41 " at stage 3, 20% (1 polls red): step down to stage 1, 1%"),
         END}},
    {"a trip while paused still lowers the percent",
     POL(S5, MANUAL, 2, STEP_DOWN, WAIT, false), ST(PAU, 3, 20, M10, 0, 0, 2), (const tstep[]){
         T(10000, RED, PAU, 3, M10, 1, ""),
         TW(20000, RED, PAU, 2, 0, 0, "trip",
            LAG41 " at stage 3, 20% (2 polls red): step down to stage 2, 5%"),
         T(30000, GREEN, PAU, 2, 0, 0, ""), END}},
    {"a trip at awaiting_decision steps down below the last stage",
     POL(S5, MANUAL, 1, STEP_DOWN, WAIT, false), ST(AWA, 5, 100, 8 * HOUR, 0, 0, 5), (const tstep[]){
         T(10000, GREEN, AWA, 5, 8 * HOUR, 0, ""),
         TW(20000, RED, RUN, 4, 0, 0, "trip",
            LAG41 " at stage 5, 100% (1 polls red): step down to stage 4, 50%"),
         END}},
    {"paused by command earns nothing, and resume does not credit the pause",
     POL(S5, MANUAL, 3, STEP_DOWN, WAIT, false), ST(RUN, 1, 1, 0, 0, 0, 0), (const tstep[]){
         T(10000, GREEN, RUN, 1, 0, 0, ""), T(20000, GREEN, RUN, 1, 10000, 0, ""),
         C(PAUSE, 0, PAU, 1, 10000, 0, "pause"), T(30000, GREEN, PAU, 1, 10000, 0, ""),
         T(40000, GREEN, PAU, 1, 10000, 0, ""), C(RESUME, 0, RUN, 1, 10000, 0, "resume"),
         T(50000, GREEN, RUN, 1, 10000, 0, ""), T(60000, GREEN, RUN, 1, 20000, 0, ""), END}},
    {"auto start when READY and green; five 30 s stages one at a time; finally wait; extend",
     POL(SHORT, AUTO, 3, STEP_DOWN, WAIT, true), ST(NS, 0, 0, 0, 0, 0, 0), (const tstep[]){
         T(0, UNREADY, NS, 0, 0, 0, ""), T(10000, RED, NS, 0, 0, 0, ""), T(20000, STALE, NS, 0, 0, 0, ""),
         TW(30000, GREEN, RUN, 1, 0, 0, "start",
            "dashboard READY_FOR_CUTOVER and every gate green: start (auto): stage 1, 1%"),
         T(40000, GREEN, RUN, 1, 10000, 0, ""), T(50000, GREEN, RUN, 1, 20000, 0, ""),
         TW(60000, GREEN, RUN, 2, 0, 0, "stage", "stage 1, 1% held 30s green: stage 2, 5%"),
         T(70000, GREEN, RUN, 2, 10000, 0, ""), T(80000, GREEN, RUN, 2, 20000, 0, ""),
         T(90000, GREEN, RUN, 3, 0, 0, "stage"), T(100000, GREEN, RUN, 3, 10000, 0, ""),
         T(110000, GREEN, RUN, 3, 20000, 0, ""), T(120000, GREEN, RUN, 4, 0, 0, "stage"),
         T(130000, GREEN, RUN, 4, 10000, 0, ""), T(140000, GREEN, RUN, 4, 20000, 0, ""),
         TW(150000, GREEN, RUN, 5, 0, 0, "stage", "stage 4, 50% held 30s green: stage 5, 100%"),
         T(160000, GREEN, RUN, 5, 10000, 0, ""), T(170000, GREEN, RUN, 5, 20000, 0, ""),
         TW(180000, GREEN, AWA, 5, 30000, 0, "awaiting_decision",
            "stage 5, 100% held 30s green: " AWAIT),
         T(190000, GREEN, AWA, 5, 30000, 0, ""), C(EXTEND, 10000, RUN, 5, 30000, 0, "extend"),
         T(200000, GREEN, RUN, 5, 30000, 0, ""), /* awaiting earned nothing */
         TW(210000, GREEN, AWA, 5, 40000, 0, "awaiting_decision",
            "stage 5, 100% held 40s green: " AWAIT),
         END}},
    {"extend at running adds to this stage's hold only",
     POL(SHORT, MANUAL, 3, STEP_DOWN, WAIT, false), ST(RUN, 1, 1, 0, 0, 0, 0), (const tstep[]){
         T(10000, GREEN, RUN, 1, 0, 0, ""), C(EXTEND, 10000, RUN, 1, 0, 0, "extend"),
         T(20000, GREEN, RUN, 1, 10000, 0, ""), T(30000, GREEN, RUN, 1, 20000, 0, ""),
         T(40000, GREEN, RUN, 1, 30000, 0, ""),
         TW(50000, GREEN, RUN, 2, 0, 0, "stage", "stage 1, 1% held 40s green: stage 2, 5%"),
         T(60000, GREEN, RUN, 2, 10000, 0, ""), T(70000, GREEN, RUN, 2, 20000, 0, ""),
         T(80000, GREEN, RUN, 3, 0, 0, "stage"), END}},
    {"finally promote with the promote step: promoting; the gates then move nothing",
     POL(SHORT, MANUAL, 1, STEP_DOWN, PROMOTE, true), ST(RUN, 5, 100, 20000, 0, 0, 4), (const tstep[]){
         T(10000, GREEN, RUN, 5, 20000, 0, ""),
         TW(20000, GREEN, PRG, 5, 30000, 0, "promoting",
            "stage 5, 100% held 30s green: promoting (finally: promote)"),
         T(30000, RED, PRG, 5, 30000, 0, ""), END}},
    {"finally promote without the promote step: awaiting the decision",
     POL(SHORT, MANUAL, 1, STEP_DOWN, PROMOTE, false), ST(RUN, 5, 100, 20000, 0, 0, 4), (const tstep[]){
         T(10000, GREEN, RUN, 5, 20000, 0, ""),
         TW(20000, GREEN, AWA, 5, 30000, 0, "awaiting_decision",
            "stage 5, 100% held 30s green: " AWAIT " (finally: promote, but promote is not available)"),
         END}},
    {"promoted, then finalize: finalized; the gates then move nothing, nor does anything else",
     POL(SHORT, AUTO, 1, STEP_DOWN, PROMOTE, true), ST(PRD, 5, 100, 30000, 0, 0, 5), (const tstep[]){
         T(10000, RED, PRD, 5, 30000, 0, ""), T(20000, GREEN, PRD, 5, 30000, 0, ""),
         C(FINALIZE, 0, FIN, 5, 30000, 0, "finalize"), T(30000, RED, FIN, 5, 30000, 0, ""),
         T(40000, RED, FIN, 5, 30000, 0, ""), T(50000, GREEN, FIN, 5, 30000, 0, ""), RESTART,
         T(60000, GREEN, FIN, 5, 30000, 0, ""), END}},
    {"start manual: READY and green start nothing",
     POL(S5, MANUAL, 1, STEP_DOWN, WAIT, false), ST(NS, 0, 0, 0, 0, 0, 0),
     (const tstep[]){T(10000, GREEN, NS, 0, 0, 0, ""), T(20000, RED, NS, 0, 0, 0, ""), END}},
    {"auto start is from not_started only, not after a rollback or an abort",
     POL(S5, AUTO, 1, STEP_DOWN, WAIT, false), ST(RB, 0, 0, 0, 0, 0, 0),
     (const tstep[]){T(10000, GREEN, RB, 0, 0, 0, ""), C(ABORT, 0, AB, 0, 0, 0, "abort"),
                     T(20000, GREEN, AB, 0, 0, 0, ""), T(30000, RED, AB, 0, 0, 0, ""), END}},
};

static int percent_at(const ps_co_policy *p, int stage)
{
    return stage >= 1 && (size_t)stage <= p->n_stages ? p->stages[stage - 1].percent : 0;
}

static void test_ticks(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof tcases / sizeof *tcases; i++) {
        const tcase *c = &tcases[i];
        ps_co_state st = c->from;
        ps_co_mem mem;
        ps_co_mem_init(&mem);
        int64_t last_poll = 0;
        for (int k = 0; c->steps[k].op; k++) {
            const tstep *s = &c->steps[k];
            ps_co_state before = st;
            ps_co_out out;
            memset(&out, 0x5a, sizeof out);
            if (s->op == 'R') {
                ps_co_mem_init(&mem);
                continue;
            }
            if (s->op == 'T') {
                ps_gates g = gates_of(s->gk, s->poll);
                ps_co_tick(&c->pol, &st, &mem, &g, s->now, &out);
                last_poll = s->poll;
            } else {
                ps_gates g = gates_of(GREEN, last_poll);
                char why[200] = "";
                if (ps_co_command(&c->pol, &st, s->cmd, s->arg, &g, &out, why, sizeof why) != 0)
                    fail_msg("'%s' step %d: %s refused: %s", c->name, k, ps_co_cmd_name(s->cmd), why);
            }
            if (st.status != s->status || st.stage != s->stage || st.hold_earned_ms != s->hold ||
                st.failures != s->failures || strcmp(out.what, s->what) != 0 ||
                (s->why && strcmp(out.why, s->why) != 0))
                fail_msg("'%s' step %d: got %s, event '%s' '%s'; want %s stage %d hold %lld failures %d, "
                         "event '%s' '%s'",
                         c->name, k, show(&st), out.what, out.why, ps_co_status_name(s->status), s->stage,
                         (long long)s->hold, s->failures, s->what, s->why ? s->why : "");
            /* what holds after every step: the percent is the stage's, at most one stage up,
             * no change unwritten, percent_changed and promote say what happened, an event
             * has a log priority */
            if (st.percent != percent_at(&c->pol, st.stage) || st.stage > before.stage + 1 ||
                (!same_state(&st, &before) && !out.write) ||
                out.percent_changed != (st.percent != before.percent) ||
                out.promote != (strcmp(out.what, "promoting") == 0) ||
                out.finalize != (strcmp(out.what, "finalize") == 0) ||
                (out.what[0] != '\0') != (out.log_prio != 0))
                fail_msg("'%s' step %d: from %s to %s: write %d percent_changed %d promote %d prio %d",
                         c->name, k, show(&before), show(&st), out.write, out.percent_changed,
                         out.promote, out.log_prio);
        }
    }
}

/* ---- reschedule (rule 6 of a reload) ---- */

static const ps_stage A6[] = {{1, HOUR},      {2, HOUR},      {5, 2 * HOUR},
                              {20, 4 * HOUR}, {50, 4 * HOUR}, {100, 8 * HOUR}};
static const ps_stage SLOW[] = {{1, HOUR}, {5, 2 * HOUR}, {20, 6 * HOUR}, {50, 4 * HOUR}, {100, 8 * HOUR}};
static const ps_stage THREE[] = {{5, 2 * HOUR}, {20, 4 * HOUR}, {100, 8 * HOUR}};
static const ps_stage NO5[] = {{1, HOUR}, {10, 2 * HOUR}, {20, 4 * HOUR}, {100, 8 * HOUR}};
static const ps_stage NO20[] = {{1, HOUR}, {10, 2 * HOUR}, {50, 4 * HOUR}, {100, 8 * HOUR}};

#define S5T "1/1h 5/2h 20/4h 50/4h 100/8h"

static void test_reschedule(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        const ps_co_state *from;
        const ps_stage *n;
        size_t nn;
        int rc;
        ps_co_state want;
        const char *msg;
    } cases[] = {
#define NEW(a) a, sizeof a / sizeof *a
        {"equal: nothing to say", &s_run, NEW(S5), 0, ST(RUN, 3, 20, M10, 0, 1, 2), ""},
        {"a stage added below", &s_run, NEW(A6), 0, ST(RUN, 4, 20, M10, 0, 1, 3),
         "schedule " S5T " -> 1/1h 2/1h 5/2h 20/4h 50/4h 100/8h; stage 3 (20%) is now stage 4"},
        {"a hold changed: the stage stays", &s_run, NEW(SLOW), 0, ST(RUN, 3, 20, M10, 0, 1, 2),
         "schedule " S5T " -> 1/1h 5/2h 20/6h 50/4h 100/8h; stage 3 (20%) stays in force"},
        {"stages removed", &s_pau, NEW(THREE), 0, ST(PAU, 2, 20, M10, 0, 0, 1),
         "schedule " S5T " -> 5/2h 20/4h 100/8h; stage 3 (20%) is now stage 2"},
        {"last good's percent gone: the highest stage below it", &s_run, NEW(NO5), 0,
         ST(RUN, 3, 20, M10, 0, 1, 1),
         "schedule " S5T " -> 1/1h 10/2h 20/4h 100/8h; stage 3 (20%) stays in force"},
        {"awaiting at 100%", &s_awa, NEW(THREE), 0, ST(AWA, 3, 100, 8 * HOUR, 0, 0, 3),
         "schedule " S5T " -> 5/2h 20/4h 100/8h; stage 5 (100%) is now stage 3"},
        {"the percent in force is gone: refused", &s_run, NEW(NO20), 1, {0},
         "refused: the new schedule (1/1h 10/2h 50/4h 100/8h) has no stage at 20%, the percent in force "
         "(stage 3 of " S5T "): reads would move without their gates; the running schedule stays"},
        {"paused at a stage: refused alike", &s_pau, NEW(NO20), 1, {0}, NULL},
        {"no stage in force", &s_ns, NEW(NO20), 0, ST(NS, 0, 0, 0, 0, 0, 0),
         "schedule " S5T " -> 1/1h 10/2h 50/4h 100/8h (no stage in force)"},
        {"no stage in force, equal", &s_ns, NEW(S5), 0, ST(NS, 0, 0, 0, 0, 0, 0), ""},
        {"paused at 0%", &s_pau0, NEW(NO20), 0, ST(PAU, 0, 0, 0, 0, 0, 0),
         "schedule " S5T " -> 1/1h 10/2h 50/4h 100/8h (no stage in force)"},
        {"rolled back", &s_rb, NEW(THREE), 0, ST(RB, 0, 0, 0, 0, 0, 0),
         "schedule " S5T " -> 5/2h 20/4h 100/8h (no stage in force)"},
#undef NEW
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ps_co_state st = *cases[i].from;
        char msg[400] = "untouched";
        int rc = ps_co_reschedule(S5, 5, cases[i].n, cases[i].nn, &st, msg, sizeof msg);
        const ps_co_state *want = cases[i].rc ? cases[i].from : &cases[i].want;
        if ((rc != 0) != (cases[i].rc != 0) || !same_state(&st, want))
            fail_msg("case '%s': rc %d, %s, want %s", cases[i].name, rc, show(&st), show(want));
        if (cases[i].msg ? strcmp(msg, cases[i].msg) != 0 : strncmp(msg, "refused: ", 9) != 0)
            fail_msg("case '%s': message '%s'", cases[i].name, msg);
    }
}

/* ---- words ---- */

static void test_format_status(void **state)
{
    (void)state;
    ps_co_policy p = POL(S5, MANUAL, 3, STEP_DOWN, WAIT, false);
    static const struct {
        ps_co_state st;
        const char *want;
    } cases[] = {
        {ST(RUN, 3, 20, 12 * MIN, 0, 0, 2), "cutover running stage 3/5 20%, hold 12m/4h"},
        {ST(RUN, 1, 1, 245 * SEC, 0, 0, 0), "cutover running stage 1/5 1%, hold 4m05s/1h"},
        {ST(RUN, 5, 100, 0, HOUR, 0, 4), "cutover running stage 5/5 100%, hold 0s/9h"},
        {ST(PAU, 2, 5, 0, 0, 0, 1), "cutover paused stage 2/5 5%"},
        {ST(PAU, 0, 0, 0, 0, 0, 0), "cutover paused stage 0/5 0%"},
        {ST(AWA, 5, 100, 8 * HOUR, 0, 0, 5), "cutover awaiting decision at 100%"},
        {ST(NS, 0, 0, 0, 0, 0, 0), "cutover not_started 0%"},
        {ST(PRG, 5, 100, 0, 0, 0, 5), "cutover promoting 100%"},
        {ST(PRD, 5, 100, 0, 0, 0, 5), "cutover promoted"},
        {ST(RB, 0, 0, 0, 0, 0, 0), "cutover rolled_back 0%"},
        {ST(AB, 0, 0, 0, 0, 0, 0), "cutover aborted 0%"},
        {ST(FIN, 5, 100, 0, 0, 0, 5), "cutover finalized 100%"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char buf[120];
        size_t n = ps_co_format_status(&p, &cases[i].st, buf, sizeof buf);
        if (strcmp(buf, cases[i].want) != 0 || n != strlen(buf))
            fail_msg("case %zu: '%s' (%zu), want '%s'", i, buf, n, cases[i].want);
    }
    ps_co_state st = ST(RUN, 3, 20, 0, 30 * MIN, 0, 2);
    assert_int_equal(ps_co_hold_needed(&p, &st), 4 * HOUR + 30 * MIN);
    assert_int_equal(ps_co_hold_needed(&p, &s_ns), 0);
    char buf[80];
    ps_co_format_schedule(S5, 5, buf, sizeof buf);
    assert_string_equal(buf, S5T);
}

static void test_names(void **state)
{
    (void)state;
    static const char *const statuses[PS_CO_N_STATUS] = {
        "not_started", "running",  "paused",      "awaiting_decision",
        "promoting",   "promoted", "rolled_back", "aborted", "finalized",
    };
    static const char *const cmds[PS_CO_N_CMD] = {
        "start", "pause", "resume", "step-down", "rollback", "abort", "extend", "promote", "finalize", "revert",
    };
    ps_co_status s;
    ps_co_cmd c;
    for (int i = 0; i < PS_CO_N_STATUS; i++) {
        assert_string_equal(ps_co_status_name((ps_co_status)i), statuses[i]);
        assert_true(ps_co_status_parse(statuses[i], &s) == 0 && s == (ps_co_status)i);
    }
    for (int i = 0; i < PS_CO_N_CMD; i++) {
        assert_string_equal(ps_co_cmd_name((ps_co_cmd)i), cmds[i]);
        assert_true(ps_co_cmd_parse(cmds[i], &c) == 0 && c == (ps_co_cmd)i);
    }
    static const char *const bad[] = {"",          "awaiting", "Running", "running ",
                                      "step_down", "stepdown", "Promote", "Finalize", "finalized ", "Revert",
                                      "reverted", NULL};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s = PS_CO_RUNNING;
        c = PS_CO_CMD_ABORT;
        assert_int_equal(ps_co_status_parse(bad[i], &s), -EINVAL);
        assert_int_equal(ps_co_cmd_parse(bad[i], &c), -EINVAL);
        assert_true(s == PS_CO_RUNNING && c == PS_CO_CMD_ABORT); /* untouched */
    }
    assert_string_equal(ps_co_status_name(PS_CO_N_STATUS), "?");
    assert_string_equal(ps_co_cmd_name(PS_CO_N_CMD), "?");
    assert_string_equal(ps_gate_name(PS_GATE_SYNC_LAG), "sync_lag");
    assert_string_equal(ps_gate_words(PS_GATE_SYNC_LAG), "sync lag");
    assert_string_equal(ps_gate_name(PS_GATE_N), "?");
    assert_string_equal(ps_gate_color_name(PS_GATE_OFF), "off");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gates_table),   cmocka_unit_test(test_gates_format),
        cmocka_unit_test(test_commands),      cmocka_unit_test(test_ticks),
        cmocka_unit_test(test_reschedule),    cmocka_unit_test(test_format_status),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
