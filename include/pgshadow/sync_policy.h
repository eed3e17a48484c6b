/*
 * sync_policy.h - the sync engine's pure decisions (src/sync/policy.c): what
 * to do next given a small state and a clock, throttling, backfill progress,
 * rate and ETA, and the STATUS= words. No I/O, no allocation; tested without
 * a database (tests/unit/test-sync-policy.c). The shell that acts on them is
 * src/sync/engine.c (sync.h).
 */
#ifndef PGSHADOW_SYNC_POLICY_H
#define PGSHADOW_SYNC_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PS_SYNC_PROBE_MS 1000        /* leader: replication lag + sync lag refresh */
#define PS_SYNC_CONN_POLL_MS 250     /* main connection down: look again */
#define PS_SYNC_ERROR_RETRY_MS 1000  /* a failed query: at least this before the next */
#define PS_SYNC_PROGRESS_LOG_MS 5000 /* backfill progress line in the log */
#define PS_SYNC_PLAN_MS 1000         /* backfill: backfill_plan at most this often */

typedef enum {
    PS_SYNC_IDLE = 0, /* nothing until an outside event (stopping, leadership) */
    PS_SYNC_WAIT,     /* nothing now; decide again after *wait_ms */
    PS_SYNC_REGISTRY, /* compare the config with the installed registry */
    PS_SYNC_PROBE,    /* measure replication lag and sync lag */
    PS_SYNC_APPLY,    /* one pgshadow.apply_batch */
    PS_SYNC_BACKFILL, /* pgshadow.backfill_plan: start tables, learn what is left (the
                       * worker pool copies the chunks on its own connections) */
    PS_SYNC_ARM,      /* pgshadow.wakeup_arm: writers NOTIFY again (then one more apply) */
} ps_sync_action;

typedef enum {
    PS_SYNC_THROTTLE_NONE = 0,
    PS_SYNC_THROTTLE_BACKFILL, /* lag > max: backfill paused */
    PS_SYNC_THROTTLE_APPLY,    /* lag > 3 x max: backfill paused, apply slowed */
} ps_sync_throttle;

/* What the next decision depends on. Times are milliseconds on one monotonic
 * clock; a deadline <= now_ms has passed. */
typedef struct ps_sync_state {
    int64_t now_ms;
    bool stopping;       /* on_stop seen: start nothing new */
    bool conn_up;        /* the main connection is up */
    bool leader;         /* this daemon leads (the lock is held on that connection) */
    bool halted;         /* on_apply_error: halt tripped */
    bool apply_pending;  /* a wake-up since the last apply, or the last batch was full */
    bool backfill_done;  /* backfill_step said every table is done */
    bool last_was_backfill; /* alternate apply and backfill while both have work */
    bool arm_needed;     /* the log was found empty while writers may not NOTIFY */
    bool registry_check; /* compare config and pgshadow.tables at the next chance */
    int64_t retry_after_ms;      /* a query failed: nothing before this */
    int64_t probe_at_ms;         /* next probe */
    int64_t apply_not_before_ms; /* hard throttle: next apply */
    int64_t backfill_plan_at_ms; /* next backfill_plan (0: at once) */
    int64_t repl_lag_ms;         /* last measured; < 0 unknown */
    int64_t max_repl_lag_ms;     /* sync.max_replication_lag; 0 = never throttle */
} ps_sync_state;

/* The next action. For PS_SYNC_WAIT, *wait_ms is the delay (> 0) after which
 * to decide again; otherwise *wait_ms is -1. Order of precedence: stopping,
 * connection, leadership (a standby does nothing at all: the leader module
 * takes the lock, and on_leader wakes the engine), the registry check (when
 * asked for: on taking the lead and after a reload), error back-off, probe,
 * then apply and backfill
 * (alternating while both have work, each only when the throttle allows),
 * then arming the wake-up flag (not while halted, and only once no backfill
 * chunk is waiting: while the daemon is busy copying it comes back to apply
 * after every chunk anyway, so writers need not pay for a NOTIFY). */
ps_sync_action ps_sync_next(const ps_sync_state *s, int64_t *wait_ms);

/* An apply round came back having taken `taken` of `limit` entries: more
 * may wait when the batch was full. A wake-up (NOTIFY, timer) that arrived
 * while the round was in flight already set apply_pending and is kept: the
 * round's snapshot may predate the change that woke us. */
void ps_sync_after_apply(ps_sync_state *s, int taken, int limit);

/* Throttle level for a measured lag (< 0: unknown -> none) and the limit
 * (0: throttling off). */
ps_sync_throttle ps_sync_throttle_for(int64_t lag_ms, int64_t max_lag_ms);

/* Backfill percent of one table: 100 when finished; otherwise done/total
 * clamped to 0..99 (total is an estimate and may be exceeded); 0 when the
 * total is unknown (<= 0). */
int ps_sync_percent(int64_t done, int64_t total, bool finished);

/* Rows per second between (base_rows, base_ms) and (done, now_ms); -1 when
 * nothing can be said yet (no time passed or no rows). */
int64_t ps_sync_rate(int64_t base_rows, int64_t base_ms, int64_t done, int64_t now_ms);

/* Remaining time at the rate observed since (base_rows, base_ms); -1 when
 * unknown (no rate yet, or the estimate total already reached). */
int64_t ps_sync_eta_ms(int64_t base_rows, int64_t base_ms, int64_t done, int64_t total,
                       int64_t now_ms);

/* Everything the STATUS= contribution shows (a leader's: a standby's
 * STATUS= is the leader module's words alone). */
typedef struct ps_sync_view {
    const char *halted;     /* reason, or NULL */
    bool backfill_done;
    const char *bf_table;   /* table being copied, or NULL */
    int bf_percent;
    int64_t bf_eta_ms;      /* < 0 unknown */
    ps_sync_throttle throttle;
    int64_t repl_lag_ms;
    double sync_lag_s;      /* age of the oldest pending change; < 0 unknown */
    bool config_differs;    /* the config's tables differ from pgshadow.tables */
} ps_sync_view;

/* The sync engine's words for a leader's STATUS=, after the leader module's
 * "leader": "backfill contexts 41% ETA 2m; lag 0.3s", "HALTED: ...".
 * Returns the length written (truncated to len - 1). */
size_t ps_sync_format_status(const ps_sync_view *v, char *buf, size_t len);

#endif
