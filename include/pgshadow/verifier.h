/*
 * verifier.h - the verifier (src/verify/): full verify passes, the second
 * looks and repairs, on sync.workers connections of its own
 * (sql/85-verify.sql, docs/verify.md).
 *
 * The module runs only on the leader. Each worker connection loops:
 *   step     pgshadow.verify_step: one chunk of the open pass, both sides
 *            digested in the database;
 *   recheck  pgshadow.verify_recheck: queued keys that are due (a chunk's
 *            differing keys, the keys apply wrote, repairs) looked at again;
 *   idle     nothing to do: wait PS_VERIFY_IDLE_MS.
 * Worker 1 also tells the database the settings (verify_configure) and
 * asks for the timer's pass (verify_start with verify.interval: the
 * schedule lives in the database, so a restart neither repeats nor skips
 * a pass). `pgshadowctl verify [TABLE]` arrives as the command "verify".
 *
 * What a worker does next is decided by ps_verify_next (pure, unit-tested).
 */
#ifndef PGSHADOW_VERIFIER_H
#define PGSHADOW_VERIFIER_H

#include <stdbool.h>
#include <stdint.h>

#include "pgshadow/daemon.h"

#define PS_VERIFY_IDLE_MS 500         /* nothing to verify: look again after this */
#define PS_VERIFY_START_CHECK_MS 5000 /* how often worker 1 asks for the timer's pass */
#define PS_VERIFY_ERROR_RETRY_MS 1000 /* a failed query: this worker waits */
#define PS_VERIFY_RECHECK_KEYS 500    /* queued keys one recheck call looks at */
#define PS_VERIFY_MAX_PAUSE_MS 5000   /* the longest rest between two chunks */

/* What a worker sends next. */
typedef enum {
    PS_VERIFY_CONFIGURE = 0, /* verify_configure (worker 1, settings changed) */
    PS_VERIFY_START,         /* verify_start for the timer (worker 1, due) */
    PS_VERIFY_STEP,          /* verify_step */
    PS_VERIFY_RECHECK,       /* verify_recheck */
    PS_VERIFY_IDLE,          /* wait PS_VERIFY_IDLE_MS, then PS_VERIFY_STEP */
} ps_verify_action;

/* What the worker knows when it decides. */
typedef struct ps_verify_input {
    int worker;             /* 1.. */
    bool configured;        /* the database has the current settings */
    bool interval_on;       /* verify.interval > 0 */
    int64_t now_ms;
    int64_t start_check_at_ms; /* when worker 1 next asks for the timer's pass */
    ps_verify_action last;  /* what it did last (PS_VERIFY_IDLE at first) */
    bool last_found_work;   /* the last step verified a chunk / the last recheck looked at keys */
} ps_verify_input;

/* The next action: configure first (worker 1), the timer's pass when due
 * (worker 1), then chunks while there are chunks, then due keys, then idle. */
ps_verify_action ps_verify_next(const ps_verify_input *in);

/* How long a worker rests after a chunk that took chunk_ms: nothing while
 * the tables are quiet; while applications write (apply wrote in the last
 * 2 s), as long as the chunk took, so each worker uses at most about half a
 * core and verification leaves the rest to the writers. */
int64_t ps_verify_pause_ms(int64_t chunk_ms, bool writes);

/* The daemon module (listed after the sync engine in src/pgshadowd.c). */
extern const ps_daemon_module ps_verify_module;

#endif
