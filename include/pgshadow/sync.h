/*
 * sync.h - the daemon half of the sync engine: a ps_daemon_module that keeps
 * every shadow table in step with its primary by calling the database side
 * (sql/8*-sync-*.sql: pgshadow.apply_batch, pgshadow.backfill_plan,
 * pgshadow.sync_probe) on the daemon's main connection, and copying existing
 * rows with a pool of worker connections (bfpool.h: backfill_claim,
 * backfill_chunk).
 *
 * Five files, one concern each (src/sync/):
 *  - policy.c (sync_policy.h): pure functions of a small state and a clock
 *    (what to do next, throttling, progress, ETA, the STATUS= words), tested
 *    without a database (tests/unit/test-sync-policy.c);
 *  - registry.c (sync_registry.h): the config vs installed registry
 *    comparison, pure as well;
 *  - engine.c (this header): the shell, ps_sync: timers, NOTIFY coalescing,
 *    the asynchronous queries and their results, logging;
 *  - bfpool.c (bfpool.h): the backfill worker pool;
 *  - chunk_policy.c (chunk_policy.h): the pure chunk-size controller.
 *
 * Wake-ups: capture NOTIFYs pgshadow_changes only while the migration's
 * pgshadow.wakeup row is armed. apply_batch disarms it when it takes
 * changes; the daemon then drains without NOTIFYs (a full batch: at once; a
 * partial one: again after batch_delay) until a round finds the log empty,
 * arms (pgshadow.wakeup_arm) and applies once more to catch a writer that
 * read "disarmed" just before the arm committed (docs/sync.md).
 *
 * Leadership: the engine works only on the leader (leader.h: the daemon's
 * leader module holds the lock). It starts on on_leader(gained), with no
 * assumption about the database (drain, recheck the backfill, measure,
 * compare the registry), checks ps_daemon_is_leader before every query, and
 * says nothing in STATUS= on a standby.
 */
#ifndef PGSHADOW_SYNC_H
#define PGSHADOW_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgshadow/daemon.h"
#include "pgshadow/sync_policy.h"
#include "pgshadow/sync_registry.h"

/* ------------------------------------------------------------------------ */
/* The module (I/O shell) */

typedef struct ps_sync ps_sync;

/* The module table entry (src/pgshadowd.c): ps_daemon_add(d, &ps_sync_module)
 * builds a ps_sync with ps_sync_new, and the daemon frees it. */
extern const ps_daemon_module ps_sync_module;

/* Build the sync engine for daemon d (timers on its event base; nothing
 * runs before the loop). Returns 0 and *out, or -ENOMEM. */
int ps_sync_new(ps_daemon *d, ps_sync **out);

/* Before the daemon's event base is freed (the timers live on it); the
 * daemon does it when it frees its modules. NULL is a no-op. */
void ps_sync_free(ps_sync *s);

/* For tests and a metrics module: monotonic counters of this process. */
typedef struct ps_sync_stats {
    uint64_t apply_batches;   /* apply_batch calls that returned a row */
    uint64_t applied;         /* change-log entries taken */
    uint64_t quarantined;     /* rows newly quarantined by apply */
    uint64_t backfill_steps;  /* backfill_step calls that copied a chunk */
    uint64_t backfill_rows;   /* rows copied */
    uint64_t errors;          /* failed queries */
} ps_sync_stats;

const ps_sync_stats *ps_sync_get_stats(const ps_sync *s);

/* Register the commands the sync engine carries out (quarantine-retry) with
 * the command queue (src/sync/commands.c). 0 (also for c NULL) or -errno. */
typedef struct ps_control ps_control;
int ps_sync_register_commands(ps_control *c);

#endif
