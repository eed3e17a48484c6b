/*
 * sync/chunk_policy.c - the chunk-size controller (chunk_policy.h): the next
 * chunk's size from the times of the last chunks, aimed at sync.chunk_target.
 *
 * Owns only the ps_chunk_ctl it is given: the limits, the next size and a
 * ring of the last PS_CHUNK_WINDOW (rows, elapsed) samples. It never reads a
 * clock; the times are the caller's (tests/unit/test-chunk-policy.c feeds
 * them by hand).
 *
 * Invariants: after every call, min_rows <= rows <= max_rows and min_rows >= 1;
 * every sample in the window has rows >= 1 and elapsed_ms >= 1, so no rate
 * computed from it divides by zero; all arithmetic is on int64_t within the
 * clamps of chunk_policy.h and cannot overflow.
 *
 * Modelled on the copier of Spirit (MySQL online schema change): a target
 * time per chunk rather than a fixed row count, a cautious start, growth
 * capped per step, and an immediate cut when a chunk runs far over. The
 * rates are kept per row rather than per chunk so that chunks of different
 * sizes (a growing size, a table's short last chunk) compare.
 */
#include "pgshadow/chunk_policy.h"

#include <stdio.h>
#include <string.h>

static int64_t clamp(int64_t x, int64_t lo, int64_t hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

/* a is slower per row than b: a.elapsed / a.rows > b.elapsed / b.rows,
 * compared crosswise so that no rate is rounded. */
static bool slower(const ps_chunk_sample *a, const ps_chunk_sample *b)
{
    return a->elapsed_ms * b->rows > b->elapsed_ms * a->rows;
}

static void push(ps_chunk_ctl *ctl, int64_t rows, int64_t elapsed_ms)
{
    ctl->window[ctl->next_slot] = (ps_chunk_sample){.rows = rows, .elapsed_ms = elapsed_ms};
    ctl->next_slot = (ctl->next_slot + 1) % PS_CHUNK_WINDOW;
    if (ctl->n_samples < PS_CHUNK_WINDOW)
        ctl->n_samples++;
}

/* The 90th percentile of the window's time per row, by nearest rank: the
 * ceil(0.9 n)-th fastest sample. With a full window of 10 that is the
 * second slowest, so one slow chunk (a checkpoint, a lock wait that stayed
 * under the outlier factor) does not shrink the size, while with fewer
 * samples it is the slowest: cautious until there is evidence. The p90 and
 * not the mean: a fast chunk (cached pages, a range of deleted keys) must not
 * make the next one overshoot; the size is aimed at the slow end. */
static ps_chunk_sample p90(const ps_chunk_ctl *ctl)
{
    ps_chunk_sample s[PS_CHUNK_WINDOW];
    int n = ctl->n_samples;
    /* insertion sort, fastest first: at most 10 entries */
    for (int i = 0; i < n; i++) {
        ps_chunk_sample x = ctl->window[i];
        int j = i;
        for (; j > 0 && slower(&s[j - 1], &x); j--)
            s[j] = s[j - 1];
        s[j] = x;
    }
    return s[(9 * n + 9) / 10 - 1];
}

/* Set the next size from the window: the rows that fit in the target at the
 * p90 time per row, at most 3/2 of the current size (a rate measured on small
 * chunks may not hold for large ones: bigger transactions, more WAL, more
 * pages out of cache; growing in steps lets the next samples correct it),
 * shrinking without a bound (too big a chunk costs lag now), within the
 * limits. With no sample the size is only clamped. */
static void aim(ps_chunk_ctl *ctl)
{
    int64_t rows = ctl->rows;
    if (ctl->n_samples > 0) {
        ps_chunk_sample s = p90(ctl);
        int64_t fit = ctl->target_ms * s.rows / s.elapsed_ms;
        int64_t cap = rows + (rows / 2 > 0 ? rows / 2 : 1);
        rows = fit < cap ? fit : cap;
    }
    ctl->rows = clamp(rows, ctl->min_rows, ctl->max_rows);
}

static void set_bounds(ps_chunk_ctl *ctl, int64_t target_ms, int64_t max_rows)
{
    ctl->target_ms = clamp(target_ms, 1, PS_CHUNK_MAX_MS);
    ctl->max_rows = clamp(max_rows, 1, PS_CHUNK_MAX_ROWS);
    ctl->min_rows = ctl->max_rows < PS_CHUNK_MIN_ROWS ? ctl->max_rows : PS_CHUNK_MIN_ROWS;
}

/* PS_CHUNK_START_ROWS = 1000: at the default target of 500 ms it fits any
 * table that copies 2,000 rows/s or more, so the first chunk, sized before
 * anything is known, overruns the target only on a table some 20 times
 * slower than the benchmark's (1M rows in 27 s, docs/benchmarks.md, where
 * it takes about 30 ms); and from it the growth cap reaches the default
 * bound of 5000 in four chunks. PS_CHUNK_MIN_ROWS = 10: below that the
 * per-chunk cost (a round trip, planning, the progress update) is most of
 * the chunk, and a table whose 10 rows take longer than the target is not
 * helped by copying fewer. */
void ps_chunk_ctl_init(ps_chunk_ctl *ctl, int64_t target_ms, int64_t max_rows)
{
    *ctl = (ps_chunk_ctl){0};
    set_bounds(ctl, target_ms, max_rows);
    ctl->rows = clamp(PS_CHUNK_START_ROWS, ctl->min_rows, ctl->max_rows);
}

int64_t ps_chunk_ctl_next(const ps_chunk_ctl *ctl)
{
    return ctl->rows;
}

bool ps_chunk_ctl_record(ps_chunk_ctl *ctl, int64_t rows, int64_t elapsed_ms)
{
    if (rows <= 0)
        return false; /* no rows, no rate */
    rows = clamp(rows, 1, PS_CHUNK_MAX_ROWS);
    elapsed_ms = clamp(elapsed_ms, 1, PS_CHUNK_MAX_MS);

    /* Far over the target: the rate has changed under us (a lock wait, a
     * region of wide rows, a storm of writers), and the chunks still to come
     * at this size would each run as long. Cut at once to what this chunk's
     * own rate fits in the target, never up; the window's older rates
     * describe the table before the change, so this sample replaces them. */
    if (elapsed_ms > PS_CHUNK_OUTLIER_FACTOR * ctl->target_ms) {
        int64_t fit = rows * ctl->target_ms / elapsed_ms;
        if (fit > ctl->rows)
            fit = ctl->rows;
        ctl->n_samples = 0;
        ctl->next_slot = 0;
        push(ctl, rows, elapsed_ms);
        ctl->rows = clamp(fit, ctl->min_rows, ctl->max_rows);
        return true;
    }
    push(ctl, rows, elapsed_ms);
    aim(ctl);
    return false;
}

void ps_chunk_ctl_set_limits(ps_chunk_ctl *ctl, int64_t target_ms, int64_t max_rows)
{
    set_bounds(ctl, target_ms, max_rows);
    aim(ctl);
}

int64_t ps_chunk_ctl_rate(const ps_chunk_ctl *ctl)
{
    if (ctl->n_samples == 0)
        return -1;
    int64_t rows = 0, ms = 0;
    for (int i = 0; i < ctl->n_samples; i++) {
        rows += ctl->window[i].rows;
        ms += ctl->window[i].elapsed_ms;
    }
    return rows * 1000 / ms;
}

ps_chunk_ctl *ps_chunk_ctls_get(ps_chunk_ctls *set, const char *name, int64_t target_ms, int64_t max_rows)
{
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->t[i].name, name) == 0) {
            ps_chunk_ctl_set_limits(&set->t[i].ctl, target_ms, max_rows);
            return &set->t[i].ctl;
        }
    size_t i = set->n < PS_CHUNK_TABLES ? set->n++ : PS_CHUNK_TABLES - 1;
    snprintf(set->t[i].name, sizeof set->t[i].name, "%s", name);
    ps_chunk_ctl_init(&set->t[i].ctl, target_ms, max_rows);
    return &set->t[i].ctl;
}
