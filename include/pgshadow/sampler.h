/*
 * sampler.h - shadow-read sampling, daemon side (issue #13 item 6): a
 * ps_daemon_module that, while this daemon leads, calls
 * pgshadow.sample_reads (sql/86-sampling.sql) every verify.sample_interval
 * on the daemon's work connection, warns about rounds that found keys whose
 * shadow values differ from the primary's, and keeps the window's figures
 * (mismatches, shadow/primary p99 ratio) for STATUS= and the metrics: the
 * inputs of cutover.gates.max_sample_mismatches and max_latency_ratio. The
 * database keeps the rounds (pgshadow.read_samples) and the window
 * (pgshadow.read_sampling); this module only decides when to ask.
 */
#ifndef PGSHADOW_SAMPLER_H
#define PGSHADOW_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgshadow/daemon.h"

typedef struct ps_sampler ps_sampler;

/* The module table entry (src/pgshadowd.c). */
extern const ps_daemon_module ps_sampler_module;

/* Counters, monotonic for the process. */
typedef struct ps_sampler_stats {
    uint64_t rounds;     /* sample_reads calls that returned rows */
    uint64_t keys;       /* keys read from both sides */
    uint64_t mismatches; /* keys found different (pending or quarantined ones excluded) */
    uint64_t errors;     /* failed sample_reads calls */
} ps_sampler_stats;

/* What STATUS= says about sampling, from the last round's window. */
typedef struct ps_sampler_view {
    bool enabled;              /* verify.sample_interval > 0 */
    int64_t window_mismatches; /* -1: no round yet */
    double p99_ratio;          /* shadow p99 / primary p99; < 0: not known */
} ps_sampler_view;

/* "sampling: 3 mismatches, p99 x1.04" ("sampling: p99 x0.98" without
 * mismatches; nothing before the first round or when off). Pure. Returns
 * the length written (buf always terminated when len > 0). */
size_t ps_sampler_format_status(const ps_sampler_view *v, char *buf, size_t len);

/* Build it for daemon d (a timer on its base; nothing runs before the
 * loop): 0 and *out, or -ENOMEM. */
int ps_sampler_new(ps_daemon *d, ps_sampler **out);

/* NULL is a no-op. */
void ps_sampler_free(ps_sampler *s);

const ps_sampler_stats *ps_sampler_get_stats(const ps_sampler *s);

#endif
