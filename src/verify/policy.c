/*
 * verify/policy.c - what a verify worker does next (verifier.h). Pure: no
 * I/O, the time is an input.
 *
 * The order: the settings before anything (apply queues keys for the
 * incremental verify only once told), the timer's pass when due, then the
 * open pass's chunks while there are any (a pass finishes sooner when every
 * worker digests), then the due keys, then rest. After a recheck that found
 * keys, chunks come first again: a pass is never starved by a long queue.
 */
#include "pgshadow/verifier.h"

ps_verify_action ps_verify_next(const ps_verify_input *in)
{
    if (in->worker == 1 && !in->configured)
        return PS_VERIFY_CONFIGURE;
    if (in->worker == 1 && in->interval_on && in->now_ms >= in->start_check_at_ms)
        return PS_VERIFY_START;
    switch (in->last) {
    case PS_VERIFY_STEP:
        return in->last_found_work ? PS_VERIFY_STEP : PS_VERIFY_RECHECK;
    case PS_VERIFY_RECHECK:
        return in->last_found_work ? PS_VERIFY_STEP : PS_VERIFY_IDLE;
    case PS_VERIFY_CONFIGURE:
    case PS_VERIFY_START:
    case PS_VERIFY_IDLE:
    default:
        return PS_VERIFY_STEP;
    }
}

int64_t ps_verify_pause_ms(int64_t chunk_ms, bool writes)
{
    if (!writes || chunk_ms <= 0)
        return 0;
    return chunk_ms > PS_VERIFY_MAX_PAUSE_MS ? PS_VERIFY_MAX_PAUSE_MS : chunk_ms;
}
