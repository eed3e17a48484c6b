/*
 * bfpool.h - the backfill worker pool (src/sync/bfpool.c): sync.workers
 * connections of their own, each copying one key-range chunk after another
 * (pgshadow.backfill_claim, then pgshadow.backfill_chunk: two transactions,
 * docs/sync.md "Backfill"), sized by a chunk-size controller per table
 * (chunk_policy.h) that aims every chunk at sync.chunk_target.
 *
 * The sync engine (engine.c) owns the pool and drives it: it runs only on the
 * leader, while the backfill is not done and not throttled; apply keeps the
 * main connection, so a chunk never queues ahead of apply_batch.
 */
#ifndef PGSHADOW_BFPOOL_H
#define PGSHADOW_BFPOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "pgshadow/daemon.h"

#define PS_BFPOOL_EMPTY_RETRY_MS 250 /* nothing claimable: look again after this */
#define PS_BFPOOL_ERROR_RETRY_MS 1000 /* a failed query: this worker waits */

typedef struct ps_bfpool ps_bfpool;

/* One chunk copied (backfill_chunk's row, and how long claim + copy took). */
typedef struct ps_bfpool_chunk {
    const char *table;
    int64_t copied;     /* rows written; 0 when all were equal already */
    bool table_done;    /* this chunk finished the table */
    int64_t rows_done;  /* the table's progress after it */
    int64_t rows_total;
    int64_t elapsed_ms;
} ps_bfpool_chunk;

typedef struct ps_bfpool_callbacks {
    void (*on_chunk)(const ps_bfpool_chunk *c, void *arg);
    /* a worker found nothing to claim (every range in flight or done, or
     * a table waits): the engine plans again */
    void (*on_empty)(void *arg);
} ps_bfpool_callbacks;

/* 0 and *out, or -ENOMEM. No connection is opened before ps_bfpool_run. */
int ps_bfpool_new(ps_daemon *d, const ps_bfpool_callbacks *cbs, void *arg, ps_bfpool **out);

/* Closes every worker connection (an open chunk rolls back with it; its
 * claim is taken over by the next claim). NULL is a no-op. */
void ps_bfpool_free(ps_bfpool *p);

/* Keep sync.workers workers copying (opening connections as needed, closing
 * those above a lowered sync.workers once idle). Idempotent; from the loop. */
void ps_bfpool_run(ps_bfpool *p);

/* Start no new chunk (throttled); chunks in flight finish. ps_bfpool_run
 * resumes. */
void ps_bfpool_hold(ps_bfpool *p);

/* Leadership lost, the backfill done, the daemon stopping, or a new
 * conninfo: close every worker connection now. ps_bfpool_run reopens. */
void ps_bfpool_close(ps_bfpool *p);

/* Workers with a claim or a chunk in flight. */
int ps_bfpool_busy(const ps_bfpool *p);

#endif
