/*
 * sync.h - the daemon half of the sync engine: a ps_daemon_module that keeps
 * every shadow table in step with its primary by calling the database side
 * (sql/sync--1.sql: pgshadow.apply_batch, pgshadow.backfill_step,
 * pgshadow.replication_lag_ms) on the daemon's main connection.
 *
 * Split in two, as the house style asks:
 *  - the policy: pure functions of a small state and a clock (what to do
 *    next, throttling, progress, ETA, the STATUS= text), tested without a
 *    database (tests/unit/test-sync-policy.c);
 *  - the shell (ps_sync): timers, NOTIFY coalescing, the asynchronous
 *    queries and their results, logging.
 *
 * Wake-ups: capture NOTIFYs pgshadow_changes only while the migration's
 * pgshadow.wakeup row is armed. apply_batch disarms it when it takes
 * changes; the daemon then drains without NOTIFYs (a full batch: at once; a
 * partial one: again after batch_delay) until a round finds the log empty,
 * arms (pgshadow.wakeup_arm) and applies once more to catch a writer that
 * read "disarmed" just before the arm committed (docs/sync.md).
 *
 * Leader lock: a session advisory lock on the main connection, key
 * hashtextextended('pgshadow:' || migration id, 0). A daemon without it is a
 * hot standby that retries every PS_SYNC_LOCK_RETRY_MS and does nothing else.
 */
#ifndef PGSHADOW_SYNC_H
#define PGSHADOW_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgshadow/daemon.h"

#define PS_SYNC_LOCK_RETRY_MS 1000   /* standby: next try for the leader lock */
#define PS_SYNC_PROBE_MS 1000        /* leader: replication lag + sync lag refresh */
#define PS_SYNC_CONN_POLL_MS 250     /* main connection down: look again */
#define PS_SYNC_ERROR_RETRY_MS 1000  /* a failed query: at least this before the next */
#define PS_SYNC_PROGRESS_LOG_MS 5000 /* backfill progress line in the log */
#define PS_SYNC_STATEMENT_TIMEOUT_MS 300000 /* statement_timeout of the main connection */

/* ------------------------------------------------------------------------ */
/* Policy (pure) */

typedef enum {
    PS_SYNC_IDLE = 0, /* nothing until an outside event (stopping) */
    PS_SYNC_WAIT,     /* nothing now; decide again after *wait_ms */
    PS_SYNC_LOCK,     /* try the leader lock */
    PS_SYNC_PROBE,    /* measure replication lag and sync lag */
    PS_SYNC_APPLY,    /* one pgshadow.apply_batch */
    PS_SYNC_BACKFILL, /* one pgshadow.backfill_step */
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
    bool leader;         /* we hold the leader lock on that connection */
    bool halted;         /* on_apply_error: halt tripped */
    bool apply_pending;  /* a wake-up since the last apply, or the last batch was full */
    bool backfill_done;  /* backfill_step said every table is done */
    bool last_was_backfill; /* alternate apply and backfill while both have work */
    bool arm_needed;     /* the log was found empty while writers may not NOTIFY */
    int64_t lock_retry_at_ms;    /* standby: next lock attempt */
    int64_t retry_after_ms;      /* a query failed: nothing before this */
    int64_t probe_at_ms;         /* next probe */
    int64_t apply_not_before_ms; /* hard throttle: next apply */
    int64_t repl_lag_ms;         /* last measured; < 0 unknown */
    int64_t max_repl_lag_ms;     /* sync.max_replication_lag; 0 = never throttle */
} ps_sync_state;

/* The next action. For PS_SYNC_WAIT, *wait_ms is the delay (> 0) after which
 * to decide again; otherwise *wait_ms is -1. Order of precedence: stopping,
 * connection, leadership, error back-off, probe, then apply and backfill
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

typedef enum {
    PS_SYNC_ROLE_UNKNOWN = 0, /* lock not tried yet */
    PS_SYNC_ROLE_LEADER,
    PS_SYNC_ROLE_STANDBY,
} ps_sync_role;

/* Everything the STATUS= contribution shows. */
typedef struct ps_sync_view {
    ps_sync_role role;
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

/* "leader; backfill contexts 41% ETA 2m; lag 0.3s",
 * "standby: another pgshadowd holds the lock", "leader; HALTED: ...".
 * Returns the length written (truncated to len - 1). */
size_t ps_sync_format_status(const ps_sync_view *v, char *buf, size_t len);

/* One table of pgshadow.tables as register_table stored it (strings are
 * borrowed). cols: column_map in shadow column order; dflt is what
 * register_table writes for a shadow column the config's columns: does not
 * map (format('p.%I', shadow)), computed by the database so the quoting is
 * its own. pk: the table's current primary key, what an absent key: means. */
typedef struct ps_sync_installed_col {
    const char *shadow;
    const char *expr;
    const char *dflt;
} ps_sync_installed_col;

typedef struct ps_sync_installed {
    const char *schema;
    const char *table;
    const char *const *key;
    size_t n_key;
    const char *const *pk;
    size_t n_pk;
    const ps_sync_installed_col *cols;
    size_t n_cols;
} ps_sync_installed;

/* Called once per difference: table name (unqualified) and a message such
 * as "columns: x changed (\"old\" -> \"new\")". */
typedef void (*ps_sync_diff_cb)(const char *table, const char *msg, void *arg);

/* Compare the config's migration.tables (in migration.schema) with the
 * installed registry rows: a table in one and not the other, a key that
 * differs (an empty config key means the primary key), a column expression
 * that differs or a columns: entry for a column not in the installed map.
 * Calls cb (may be NULL) for each; returns the number of differences. */
int ps_sync_registry_diff(const ps_config *cfg, const ps_sync_installed *inst, size_t n,
                          ps_sync_diff_cb cb, void *arg);

/* ------------------------------------------------------------------------ */
/* The module (I/O shell) */

typedef struct ps_sync ps_sync;

/* The module table entry; register it with the ps_sync as arg:
 *   ps_daemon_register(d, &ps_sync_module, sync) */
extern const ps_daemon_module ps_sync_module;

/* Build the sync engine for daemon d (timers on its event base; nothing
 * runs before the loop). Returns 0 and *out, or -ENOMEM. */
int ps_sync_new(ps_daemon *d, ps_sync **out);

/* Free after ps_daemon_run returned and before ps_daemon_free (the timers
 * live on the daemon's base). NULL is a no-op. */
void ps_sync_free(ps_sync *s);

/* For tests and a metrics module: monotonic counters of this process. */
typedef struct ps_sync_stats {
    uint64_t apply_batches;   /* apply_batch calls that returned a row */
    uint64_t applied;         /* change-log entries taken */
    uint64_t quarantined;     /* rows newly quarantined by apply */
    uint64_t backfill_steps;  /* backfill_step calls that copied a chunk */
    uint64_t backfill_rows;   /* rows copied */
    uint64_t errors;          /* failed queries */
    uint64_t lock_acquired;   /* times this process became leader */
} ps_sync_stats;

const ps_sync_stats *ps_sync_get_stats(const ps_sync *s);

#endif
