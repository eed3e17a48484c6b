/*
 * backoff.c - exponential backoff with "equal jitter" for reconnects.
 *
 * Pure: no clock, no I/O, no randomness of its own (the caller passes rnd), so
 * the policy is tested exhaustively without a database.  Invariants: the
 * ceiling is base * 2^attempt clamped to [base, cap]; every delay lies in
 * [max(1, ceiling/2), ceiling], so it is never 0 and never above the cap.
 */
#include "pgshadow/backoff.h"

void ps_backoff_init(ps_backoff *b, int64_t base_ms, int64_t cap_ms)
{
    /* A zero or negative base would give a zero delay, i.e. a busy reconnect
     * loop; a cap below the base would make the cap meaningless. */
    if (base_ms < 1)
        base_ms = 1;
    if (cap_ms < base_ms)
        cap_ms = base_ms;
    b->base_ms = base_ms;
    b->cap_ms = cap_ms;
    b->attempt = 0;
}

int64_t ps_backoff_next(ps_backoff *b, uint32_t rnd)
{
    int64_t base = b->base_ms < 1 ? 1 : b->base_ms;
    int64_t cap = b->cap_ms < base ? base : b->cap_ms;
    int64_t ceiling = base;

    /* Doubling stops at the cap, so this neither overflows nor runs long,
     * however many attempts have failed. */
    for (int i = 0; i < b->attempt && ceiling < cap; i++)
        ceiling = ceiling > cap / 2 ? cap : ceiling * 2;
    if (ceiling > cap)
        ceiling = cap;

    int64_t half = ceiling / 2;
    int64_t delay = half + (int64_t)(rnd % (uint64_t)(half + 1));
    if (delay < 1)
        delay = 1;
    if (delay > cap)
        delay = cap;

    if (b->attempt < 1000000)
        b->attempt++;
    return delay;
}

void ps_backoff_reset(ps_backoff *b)
{
    b->attempt = 0;
}
