/*
 * chunk_policy.h - the chunk-size controller of the parallel chunk engine
 * (issue #12; src/sync/chunk_policy.c): how many rows the next backfill (and
 * later verify) chunk should take so that it runs for about sync.chunk_target.
 * Pure: no I/O, no allocation, no clock. The caller times each chunk on its
 * own clock and feeds the rows and the elapsed milliseconds in, so the tests
 * drive it with made-up times (tests/unit/test-chunk-policy.c).
 *
 * The rules, in short (the .c says why):
 *   - the first chunk is small: min(max_rows, PS_CHUNK_START_ROWS);
 *   - each finished chunk adds its time per row to a window of the last
 *     PS_CHUNK_WINDOW chunks; the next size is target / p90(time per row),
 *     growing by at most half of the current size per chunk, shrinking
 *     toward the estimate without a bound;
 *   - a chunk that took more than PS_CHUNK_OUTLIER_FACTOR x the target
 *     shrinks the size at once to what its own rate fits in the target, and
 *     replaces the window by its own sample (the older rates are stale);
 *   - the size stays in [min(PS_CHUNK_MIN_ROWS, max_rows), max_rows].
 *
 * One controller per table being copied: rates of different tables do not
 * compare, so initialise it again when the copy moves to the next table. The
 * workers of one table may share it (the caller serialises the calls; the
 * daemon's loop is one thread): a chunk handed out before a resize still
 * reports a valid rate.
 */
#ifndef PGSHADOW_CHUNK_POLICY_H
#define PGSHADOW_CHUNK_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PS_CHUNK_START_ROWS 1000   /* the first chunk, before any rate is known */
#define PS_CHUNK_MIN_ROWS 10       /* the floor (max_rows when that is smaller) */
#define PS_CHUNK_WINDOW 10         /* recent chunks whose rates set the size */
#define PS_CHUNK_OUTLIER_FACTOR 4  /* a chunk over this x target shrinks at once */
/* Inputs are clamped to these so that every product the controller forms
 * fits in int64_t (1 day x 2^31 rows < 2^63 / 40). */
#define PS_CHUNK_MAX_MS INT64_C(86400000)
#define PS_CHUNK_MAX_ROWS INT64_C(2147483647)

/* One finished chunk: its time per row is elapsed_ms / rows. */
typedef struct ps_chunk_sample {
    int64_t rows;       /* 1..PS_CHUNK_MAX_ROWS */
    int64_t elapsed_ms; /* 1..PS_CHUNK_MAX_MS */
} ps_chunk_sample;

/* Embed it; read the fields for tests and logs, change them only through
 * the functions below. */
typedef struct ps_chunk_ctl {
    int64_t target_ms; /* sync.chunk_target, 1..PS_CHUNK_MAX_MS */
    int64_t max_rows;  /* sync.backfill_chunk or verify.chunk_rows, 1..PS_CHUNK_MAX_ROWS */
    int64_t min_rows;  /* min(PS_CHUNK_MIN_ROWS, max_rows) */
    int64_t rows;      /* the next chunk's size, always in [min_rows, max_rows] */
    ps_chunk_sample window[PS_CHUNK_WINDOW];
    int n_samples; /* 0..PS_CHUNK_WINDOW: how many of window are filled */
    int next_slot; /* where the next sample goes: the oldest once full */
} ps_chunk_ctl;

/* Start over with no samples: the first chunk is min(max_rows,
 * PS_CHUNK_START_ROWS). target_ms and max_rows are clamped to their ranges
 * above (values below 1 count as 1). */
void ps_chunk_ctl_init(ps_chunk_ctl *ctl, int64_t target_ms, int64_t max_rows);

/* The number of rows the next chunk should take (>= 1). */
int64_t ps_chunk_ctl_next(const ps_chunk_ctl *ctl);

/* A chunk finished: it copied `rows` rows in `elapsed_ms` of wall time (not
 * necessarily the size that ps_chunk_ctl_next gave: the last chunk of a
 * table is short). Sets the size of the next chunk. A chunk of rows <= 0
 * says nothing about the rate and is ignored; elapsed_ms < 1 (faster than
 * the caller's clock can tell) counts as 1 ms. Returns true when the chunk
 * was an outlier (over PS_CHUNK_OUTLIER_FACTOR x the target) and the size
 * was cut at once, for the caller's log. */
bool ps_chunk_ctl_record(ps_chunk_ctl *ctl, int64_t rows, int64_t elapsed_ms);

/* A reload: the new target and bound apply from the next chunk. The size
 * is aimed again at the new target from the rates already measured (with the
 * same growth cap as after a chunk) and clamped to the new bound at once;
 * the window is kept, the rates do not depend on the target. */
void ps_chunk_ctl_set_limits(ps_chunk_ctl *ctl, int64_t target_ms, int64_t max_rows);

/* The copy rate of one connection, in rows per second, over the window
 * (all its rows over all its time, rounded down), for progress and ETA; the
 * pool's rate is about the number of busy workers times this. -1 before any
 * sample. */
int64_t ps_chunk_ctl_rate(const ps_chunk_ctl *ctl);

/* One controller per table, as a pool keeps them (the backfill's, verify's):
 * fixed room for PS_CHUNK_TABLES tables; a table beyond that shares the last
 * slot (its sizes are then less apt, never wrong: bounded as always). */
#define PS_CHUNK_TABLES 64u
typedef struct ps_chunk_ctls {
    struct {
        char name[128];
        ps_chunk_ctl ctl;
    } t[PS_CHUNK_TABLES];
    size_t n;
} ps_chunk_ctls;

/* The controller of table `name`, created (ps_chunk_ctl_init) at first
 * use; target_ms and max_rows are applied each time (a reload's new values
 * take effect at the table's next chunk). */
ps_chunk_ctl *ps_chunk_ctls_get(ps_chunk_ctls *set, const char *name, int64_t target_ms, int64_t max_rows);

#endif
