/*
 * backoff.h - exponential backoff with full jitter (pure; no clock, no I/O).
 */
#ifndef PGSHADOW_BACKOFF_H
#define PGSHADOW_BACKOFF_H

#include <stdint.h>

typedef struct ps_backoff {
    int64_t base_ms; /* first ceiling, e.g. 100 */
    int64_t cap_ms;  /* largest ceiling, e.g. 30000 */
    int attempt;     /* failures so far */
} ps_backoff;

void ps_backoff_init(ps_backoff *b, int64_t base_ms, int64_t cap_ms);

/* Delay before the next attempt: ceiling = min(cap, base * 2^attempt),
 * delay = ceiling/2 + rnd % (ceiling/2 + 1) ("equal jitter": never 0, never
 * above the cap). Increments attempt. rnd is a caller-supplied random number
 * so the function stays pure and testable. */
int64_t ps_backoff_next(ps_backoff *b, uint32_t rnd);

void ps_backoff_reset(ps_backoff *b);

#endif
