/*
 * cutover.h - the staged read-percentage cutover (issue #14): all configured
 * tables move their reads to the shadow together, stage by stage
 * (cutover.stages: 1% -> 5% -> ... -> 100%), while the gates stay green.
 *
 * Two halves, as everywhere in pgshadowd:
 *  - the pure state machine (src/cutover/machine.c, gates in
 *    src/cutover/gates.c; unit table tests/unit/test-cutover.c): the
 *    persisted state, the gate values of one evaluation, an operator command
 *    or a tick, and the clock in; the new state and what to do about it out
 *    (the read percent, an event with its reason, a log line). No I/O, no
 *    clock of its own;
 *  - the module (src/cutover/cutover.c): the timer, reading and writing the
 *    state row (pgshadow.cutover through pgshadow.cutover_write,
 *    sql/87-cutover.sql: percent, state and event in ONE transaction), the
 *    commands registered with the control queue, STATUS=.
 *
 * The rules the machine keeps (docs/cutover.md says them for users):
 *  - stale is inconclusive: a gate with no data neither earns hold time nor
 *    counts as a failure; only fresh, all-green evaluations earn hold, and
 *    only for the time between two of them that were both green (a daemon
 *    that was down, or a snapshot that was stale, earns nothing for that
 *    time, so a restart neither resets nor skips hold: it loses at most one
 *    poll's worth);
 *  - `failures_to_trip` consecutive red polls (each poll counted once,
 *    however often it is looked at) trip `on_trip`: step down to the last
 *    stage that held (below the one in force), roll back to 0%, or pause;
 *  - a red poll that does not trip keeps the hold earned so far; a trip or
 *    a new stage starts it from zero;
 *  - the percent never rises by more than one stage per decision, and only
 *    after the stage in force held green for its whole hold (plus extend).
 */
#ifndef PGSHADOW_CUTOVER_H
#define PGSHADOW_CUTOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgshadow/config.h"
#include "pgshadow/daemon.h"
#include "pgshadow/monitor.h"

/* ---- state ---- */

typedef enum {
    PS_CO_NOT_STARTED = 0,
    PS_CO_RUNNING,   /* a stage in force, earning hold */
    PS_CO_PAUSED,    /* a percent in force (maybe 0), earning nothing; trips still lower it */
    PS_CO_AWAITING,  /* the last stage held: promote, rollback or extend */
    PS_CO_PROMOTING, /* finally: promote asked the promote step (issue #15) */
    PS_CO_PROMOTED,
    PS_CO_ROLLED_BACK, /* reads at 0%; `start` begins again */
    PS_CO_ABORTED,     /* reads at 0%; final for this migration's cutover */
    PS_CO_FINALIZED,   /* promoted, then what promote left dropped (sql/89-finalize.sql): final, nothing left */
    PS_CO_N_STATUS
} ps_co_status;

/* The database's word ("awaiting_decision") and back: 0 or -EINVAL. */
const char *ps_co_status_name(ps_co_status s);
int ps_co_status_parse(const char *s, ps_co_status *out);

/* The persisted state: one row of pgshadow.cutover. stage is 1-based into
 * the schedule (0: none in force, percent 0). */
typedef struct ps_co_state {
    ps_co_status status;
    int stage;
    int percent;
    int64_t hold_earned_ms; /* green time at this stage */
    int64_t hold_extra_ms;  /* pgshadowctl extend, added to this stage's hold */
    int failures;           /* consecutive red polls */
    int last_good;          /* the highest stage that held green (0: none) */
} ps_co_state;

/* ---- gates ---- */

typedef enum {
    PS_GATE_SYNC_PERCENT = 0, /* min over tables, >= min_sync_percent */
    PS_GATE_SYNC_LAG,         /* max over tables, <= max_sync_lag */
    PS_GATE_DIVERGED,         /* rows verify found diverged and not repaired, <= max_diverged */
    PS_GATE_QUARANTINED,      /* <= max_quarantined */
    PS_GATE_SAMPLE_MISMATCHES, /* shadow-read sampling's window, <= max_sample_mismatches */
    PS_GATE_LATENCY_RATIO,     /* sampled shadow p99 / primary p99, <= max_latency_ratio */
    PS_GATE_CAPTURE_OFF,       /* tables whose capture is off (disable-writes): always <= 0; the
                                * shadow misses writes, the dashboard says ROLLBACK_RECOMMENDED */
    PS_GATE_N
} ps_gate_id;

typedef enum {
    PS_GATE_STALE = 0, /* no data: neither green nor red */
    PS_GATE_GREEN,
    PS_GATE_RED,
    PS_GATE_OFF, /* not evaluated (sampling off, or nothing to sample): never blocks */
} ps_gate_color;

typedef struct ps_gate {
    ps_gate_color color;
    double value, limit;
} ps_gate;

typedef struct ps_gates {
    ps_gate g[PS_GATE_N];
    bool fresh;   /* the snapshot was fresh (false: every gate STALE) */
    bool ready;   /* the dashboard said READY_FOR_CUTOVER */
    int64_t poll; /* which poll this is (the snapshot's taken_ms); a red poll counts once */
} ps_gates;

/* "sync_percent", ... (the JSON and metric names) and the words of a trip
 * reason ("sync lag"). */
const char *ps_gate_name(ps_gate_id id);
const char *ps_gate_words(ps_gate_id id);
const char *ps_gate_color_name(ps_gate_color c);

/* Every gate from one snapshot (NULL: stale) and the config's limits. */
void ps_gates_eval(const ps_config *cfg, const ps_monitor_snapshot *snap, ps_gates *out);

/* All gates green or off, and the snapshot fresh: hold may be earned. */
bool ps_gates_green(const ps_gates *g);
/* Some gate red. */
bool ps_gates_red(const ps_gates *g);

/* "sync lag 41 s > 30 s; diverged rows 7 > 5": every red gate, with value
 * and limit. snprintf semantics. */
size_t ps_gates_format_red(const ps_gates *g, char *buf, size_t len);
/* One gate's value as users read it: "41 s", "98.5%", "x1.04", "7". */
size_t ps_gate_format_value(ps_gate_id id, double v, char *buf, size_t len);

/* ---- the machine ---- */

/* What the machine runs on: the schedule in force (the module's own copy:
 * a reload that breaks rule 6 does not replace it), the config's policies,
 * and whether the promote step exists in this build. */
typedef struct ps_co_policy {
    const ps_stage *stages;
    size_t n_stages;
    ps_cutover_start start;
    int failures_to_trip;
    ps_on_trip on_trip;
    ps_finally finally;
    int64_t poll_interval_ms; /* caps the hold one evaluation may earn: 2 x this + 1 s */
    bool promote_available;
} ps_co_policy;

/* What is not persisted: the last all-green evaluation (monotonic ms, < 0
 * none since the process began, or since a stale/red one), and the last
 * poll counted as a failure. Zeroed by ps_co_mem_init. */
typedef struct ps_co_mem {
    int64_t last_green_ms;
    int64_t last_counted_poll;
} ps_co_mem;
void ps_co_mem_init(ps_co_mem *m);

typedef enum {
    PS_CO_CMD_START = 0,
    PS_CO_CMD_PAUSE,
    PS_CO_CMD_RESUME,
    PS_CO_CMD_STEP_DOWN,
    PS_CO_CMD_ROLLBACK,
    PS_CO_CMD_ABORT,
    PS_CO_CMD_EXTEND,
    PS_CO_CMD_PROMOTE, /* awaiting the decision (or promoting, after a failed try): the swap */
    PS_CO_CMD_FINALIZE, /* promoted: drop the legacy tables, the compatibility views, pgshadow's rows */
    PS_CO_CMD_REVERT,   /* promoted (with reverse sync): the swap back, reads on the old tables at 0% */
    PS_CO_N_CMD
} ps_co_cmd;

/* "step-down" and back: 0 or -EINVAL. */
const char *ps_co_cmd_name(ps_co_cmd c);
int ps_co_cmd_parse(const char *s, ps_co_cmd *out);

/* What one step decided. The state is written when `write` is set (hold
 * and failure counts change without an event); an event goes with it when
 * `what` is not empty; the percent of every table changes with it when
 * `percent_changed`. */
typedef struct ps_co_out {
    bool write;
    bool percent_changed;
    bool promote;    /* ask the promote step */
    bool finalize;   /* ask the finalize step */
    bool revert;     /* ask the revert step */
    char what[32];   /* the event: "stage", "trip", "awaiting_decision", "start", ... ("": none) */
    char why[400];   /* its reason, also the log line */
    int log_prio;    /* syslog priority of the line (0 with no event) */
} ps_co_out;

/* One evaluation of the gates at now_ms (monotonic): hold, failures, trips,
 * the next stage, auto start. *st changes in place. */
void ps_co_tick(const ps_co_policy *p, ps_co_state *st, ps_co_mem *mem, const ps_gates *g,
                int64_t now_ms, ps_co_out *out);

/* An operator command (arg_ms: extend's duration). 0: carried out (*st and
 * *out changed); > 0: refused, *st untouched and the reason in why. g: the
 * latest evaluation (start and promote are refused on a stale or red one).
 * promote sets out->promote and *st to promoting: the promote step
 * (sql/88-promote.sql) writes promoted when the swap commits, and nothing
 * when it does not. finalize (from promoted only; the gates are not asked:
 * there is no shadow left to judge) sets out->finalize and *st to
 * finalized: the finalize step (sql/89-finalize.sql) writes it when its
 * drops commit, and nothing when they do not. revert (from promoted only;
 * no gate either) sets out->revert and *st to rolled_back at stage 0: the
 * revert step (sql/90-revert.sql) writes it when the swap back commits. */
int ps_co_command(const ps_co_policy *p, ps_co_state *st, ps_co_cmd cmd, int64_t arg_ms,
                  const ps_gates *g, ps_co_out *out, char *why, size_t whylen);

/* Hold needed at the stage in force (its hold + extra); 0 with none. */
int64_t ps_co_hold_needed(const ps_co_policy *p, const ps_co_state *st);

/* Rule 6 of a reload: the stage in force keeps its percent under the new
 * schedule. 0: accepted, *st mapped onto it (stage index, last_good) and a
 * one-line description of the difference in msg ("" when the schedules are
 * equal); > 0: refused, *st untouched, the reason in msg. Also used at
 * start-up, when the persisted state meets the config's schedule. */
int ps_co_reschedule(const ps_stage *old_s, size_t n_old, const ps_stage *new_s, size_t n_new,
                     ps_co_state *st, char *msg, size_t len);

/* "1/1h 5/2h 20/4h" */
size_t ps_co_format_schedule(const ps_stage *s, size_t n, char *buf, size_t len);

/* STATUS= words: "cutover running stage 3/5 20%, hold 12m/4h". */
size_t ps_co_format_status(const ps_co_policy *p, const ps_co_state *st, char *buf, size_t len);

/* ---- the module (src/cutover/cutover.c) ---- */

typedef struct ps_cutover_stats {
    uint64_t evaluations; /* gate evaluations */
    uint64_t transitions; /* state changes with an event */
    uint64_t trips;
    uint64_t write_failures; /* state writes that failed (retried at the next poll) */
} ps_cutover_stats;

extern const ps_daemon_module ps_cutover_module;

#endif
