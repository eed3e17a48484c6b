/*
 * monitor.h - the dashboard poller: every monitor.poll_interval the leading
 * daemon reads its migration's rows of public.shadow_migration_dashboard and
 * its row of public.migration_success_metrics (sql/70-dashboard.sql) on the
 * work connection, and keeps the latest snapshot in memory for the cutover.
 *
 * Two halves:
 *  - the pure policy (src/monitor/policy.c, tests/unit/test-monitor-policy.c):
 *    the snapshot, freshness (fresh, or stale because the last poll failed or
 *    none succeeded for too long), the one log line a change deserves, and
 *    the STATUS= words. No I/O, no clock: time is a parameter;
 *  - the module (src/monitor/poller.c): timers, the query, leadership, the
 *    accessor below.
 *
 * Stale means "no data", never healthy: ps_monitor_latest returns NULL
 * then, and a reader (the cutover) must treat that as a red gate.
 */
#ifndef PGSHADOW_MONITOR_H
#define PGSHADOW_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgshadow/daemon.h"

#define PS_MONITOR_MAX_TABLES 64 /* per-table rows kept; more are counted, not kept */
#define PS_MONITOR_NAME_MAX 64   /* a PostgreSQL identifier (63 bytes) and its NUL */
/* Late: no successful poll for 2 x poll_interval + this. */
#define PS_MONITOR_LATE_SLACK_MS 1000

/* The migration's verdict (migration_success_metrics.migration_status). */
typedef enum {
    PS_MONITOR_READY = 0,       /* READY_FOR_CUTOVER */
    PS_MONITOR_MONITORING,      /* MONITORING_REQUIRED */
    PS_MONITOR_ROLLBACK,        /* ROLLBACK_RECOMMENDED */
} ps_monitor_status;

/* One table's dashboard row (the columns a gate may read). */
typedef struct ps_monitor_table {
    char name[PS_MONITOR_NAME_MAX];
    double sync_percent;
    double sync_lag_s;
    int64_t diverged, pending, quarantined; /* pending and quarantined capped at 10001 */
    bool backfill_done;
    bool capture_enabled;
    char status[24]; /* the dashboard's word: in_sync, syncing, quarantine, capture_off... */
} ps_monitor_table;

/* One successful poll: what migration_success_metrics says for this
 * migration, and its tables' rows (ordered by name). Fixed size, copied by
 * value. */
typedef struct ps_monitor_snapshot {
    int64_t taken_ms; /* monotonic clock when the poll's answer arrived */
    ps_monitor_status status;
    double min_sync_percent, avg_sync_percent;
    double max_sync_lag_s;
    int64_t total_diverged, total_quarantined, total_pending;
    bool backfill_done;   /* every table's */
    bool capture_enabled; /* every table's */
    bool exact;           /* every count maintained, none a pg_class estimate */
    /* Shadow-read sampling over the gate's window (pgshadow.sampling_window,
     * sql/86-sampling.sql), read in the same statement: */
    bool sampled;              /* some sampling round ended in the window */
    int64_t sample_keys;       /* keys read from both sides in it */
    int64_t sample_mismatches; /* of those, different (pending/quarantined ones excluded) */
    double sample_p99_ratio;   /* shadow p99 / primary p99; < 0 unknown */
    int n_tables;         /* tables of the migration (may exceed PS_MONITOR_MAX_TABLES) */
    int n_kept;           /* rows in tables[] */
    ps_monitor_table tables[PS_MONITOR_MAX_TABLES];
} ps_monitor_snapshot;

/* ---- the pure policy (src/monitor/policy.c) ---- */

/* "READY_FOR_CUTOVER" -> PS_MONITOR_READY, etc.: 0, or -EINVAL for any
 * other text (a poll with an unknown verdict is a failed poll). */
int ps_monitor_status_parse(const char *s, ps_monitor_status *out);
const char *ps_monitor_status_name(ps_monitor_status s);

/* Where polling stands, as the module keeps it. Times are of one monotonic
 * clock in ms. */
typedef struct ps_monitor_clock {
    int64_t started_ms; /* polling started (leadership gained) */
    int64_t last_ok_ms; /* the last successful poll's answer; < 0: none yet */
    bool last_failed;   /* the latest poll to end failed (error or lost connection) */
} ps_monitor_clock;

typedef enum {
    PS_MONITOR_WAITING = 0, /* no poll has ended yet, and it is not late */
    PS_MONITOR_FRESH,       /* the last poll succeeded, within the late limit */
    PS_MONITOR_FAILED,      /* the latest poll to end failed */
    PS_MONITOR_LATE,        /* no successful poll for 2 x interval + 1 s */
} ps_monitor_freshness;

/* The late limit for a poll interval: 2 x interval + PS_MONITOR_LATE_SLACK_MS. */
int64_t ps_monitor_late_ms(int64_t interval_ms);

/* Fresh or not at now_ms. A failed last poll wins over everything (its
 * snapshot is the one before the failure); then late, counted from the last
 * success, or from started_ms before the first. Only FRESH has data. */
ps_monitor_freshness ps_monitor_freshness_at(const ps_monitor_clock *c, int64_t now_ms,
                                             int64_t interval_ms);

/* What the dashboard says as far as the log and STATUS= are concerned: one
 * of the three verdicts, stale, or nothing yet. */
typedef enum {
    PS_MONITOR_SAYS_NOTHING = 0, /* not polling, or the first poll not back yet */
    PS_MONITOR_SAYS_STALE,
    PS_MONITOR_SAYS_READY,
    PS_MONITOR_SAYS_MONITORING,
    PS_MONITOR_SAYS_ROLLBACK,
} ps_monitor_says;

/* From freshness and the snapshot's verdict (used only when FRESH). */
ps_monitor_says ps_monitor_says_from(ps_monitor_freshness f, ps_monitor_status status);

/* The log line for a change from what was last reported (prev) to what is
 * true now (next), once: the caller then remembers next as reported.
 * Returns true, with the line in buf and its syslog priority in *prio, when
 * there is something to log:
 *   nothing -> verdict   "dashboard: READY_FOR_CUTOVER"
 *   verdict -> verdict   "dashboard: MONITORING_REQUIRED -> READY_FOR_CUTOVER"
 *   any -> stale         "dashboard: stale (<why>)"   why e.g. "poll failed: ..."
 *   stale -> verdict     "dashboard: fresh again (READY_FOR_CUTOVER)"
 * and false (nothing to say) when next == prev or next is "nothing". The
 * priority: warning for stale and ROLLBACK_RECOMMENDED, notice otherwise. */
bool ps_monitor_transition(ps_monitor_says prev, ps_monitor_says next, const char *why, char *buf,
                           size_t len, int *prio);

/* STATUS= words: "dashboard READY_FOR_CUTOVER", "dashboard stale"; 0 (and
 * nothing written) for "nothing". snprintf semantics on buf. */
size_t ps_monitor_format_status(ps_monitor_says s, char *buf, size_t len);

/* ---- the module (src/monitor/poller.c) ---- */

typedef struct ps_monitor ps_monitor;

/* Monotonic counters of this process. */
typedef struct ps_monitor_stats {
    uint64_t polls;    /* polls that ended (succeeded or failed) */
    uint64_t failures; /* of those, failed: an error, an unexpected answer, a lost connection */
    uint64_t skipped;  /* polls not sent because the previous one was still in flight */
} ps_monitor_stats;

/* The latest snapshot if it is fresh at now_ms, else NULL ("no data": a
 * failed or late poll, a standby, nothing polled yet). Valid until the
 * next callback of the loop: copy what must be kept. m NULL: NULL. */
const ps_monitor_snapshot *ps_monitor_latest(const ps_monitor *m, int64_t now_ms);

const ps_monitor_stats *ps_monitor_get_stats(const ps_monitor *m);

/* Call fn(arg) after every poll that ended (succeeded or failed), after
 * the snapshot changed: the cutover evaluates its gates at once instead of
 * up to a poll interval later. One listener; NULL fn removes it. */
void ps_monitor_set_listener(ps_monitor *m, void (*fn)(void *arg), void *arg);

/* The sampling window a poll reads (the cutover's sampling gates): three
 * sampling intervals, at least two poll intervals. Pure. */
int64_t ps_monitor_sample_window_ms(const ps_config *cfg);

/* The module ("monitor"): its create hook sets ps_daemon_set_monitor, so a
 * module later in the table (the cutover) reaches the snapshot through
 * ps_monitor_latest(ps_daemon_monitor(d), now). */
extern const ps_daemon_module ps_monitor_module;

#endif
