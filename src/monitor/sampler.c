/*
 * monitor/sampler.c - shadow-read sampling, the daemon's shell (sampler.h):
 * one timer at verify.sample_interval; on each tick, while this daemon
 * leads, one call of pgshadow.sample_reads (sql/86-sampling.sql) on the work
 * connection; a warning per table whose round found mismatching keys; the
 * window's figures kept for STATUS= and the metrics.
 *
 * Owns the ps_sampler: its timer, the one query it has queued or in flight,
 * the last window figures and its counters.
 *
 * Invariants:
 *  - at most one sample_reads of this module is queued or in flight
 *    (s->busy): a round slower than the interval delays the next one, it
 *    never piles up behind it on the work connection, which it shares with
 *    other readers (ps_pgconn queues their queries in order);
 *  - it asks only while ps_daemon_is_leader and the work connection is up;
 *    a result of NULL (connection lost) or an error ends the round, and the
 *    next tick starts a new one: nothing here is fatal;
 *  - the database does the sampling, the comparing and the keeping of the
 *    window; a round is one autocommit statement (its rows of read_samples
 *    commit with it), and every read of a user table in it runs as the
 *    table's owner (pgshadow._sync_run): this role needs no right on them.
 */
#include "pgshadow/sampler.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pgshadow/log.h"
#include "pgshadow/util.h"

/* A row per table sampled, and one with table_name NULL: the migration's
 * round and window. */
static const char SQL_SAMPLE[] =
    "SELECT table_name, keys, mismatches, skipped, mismatch_keys, primary_p99_ms, shadow_p99_ms, "
    "window_mismatches, window_p99_ratio FROM pgshadow.sample_reads($1, $2::integer)";

enum {
    COL_TABLE,
    COL_KEYS,
    COL_MISMATCHES,
    COL_SKIPPED,
    COL_MKEYS,
    COL_PP99,
    COL_SP99,
    COL_WIN_MISMATCHES,
    COL_WIN_RATIO,
    N_COLS
};

#define KEYS_SHOWN 200 /* bytes of the mismatching keys a warning quotes */

struct ps_sampler {
    ps_daemon *d;
    struct event *ev_tick; /* persistent, every interval_ms; none while 0 */
    int64_t interval_ms;
    bool busy;
    bool stopping;
    int64_t window_mismatches; /* -1: no round yet */
    double p99_ratio;          /* < 0: not known */
    ps_sampler_stats stats;
};

size_t ps_sampler_format_status(const ps_sampler_view *v, char *buf, size_t len)
{
    size_t pos = 0;
    if (len == 0)
        return 0;
    buf[0] = '\0';
    if (!v->enabled || v->window_mismatches < 0)
        return 0;
    ps_appendf(buf, len, &pos, "sampling:");
    if (v->window_mismatches > 0)
        ps_appendf(buf, len, &pos, " %lld mismatch%s,", (long long)v->window_mismatches,
                   v->window_mismatches == 1 ? "" : "es");
    if (v->p99_ratio >= 0)
        ps_appendf(buf, len, &pos, " p99 x%.2f", v->p99_ratio);
    else
        ps_appendf(buf, len, &pos, " p99 ratio unknown");
    return pos;
}

static void on_sample(ps_pgconn *c, const PGresult *res, void *arg)
{
    ps_sampler *s = arg;
    (void)c;
    s->busy = false;
    if (res == NULL) {
        ps_log_debug("sampler: connection lost during a sampling round; the next tick retries");
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != N_COLS) {
        s->stats.errors++;
        const char *state = ps_pgconn_errfield(res, PG_DIAG_SQLSTATE, "?");
        const char *msg = ps_pgconn_errfield(res, PG_DIAG_MESSAGE_PRIMARY, "unexpected result");
        if (strcmp(state, "42883") == 0 || strcmp(state, "3F000") == 0 ||
            strcmp(state, "42P01") == 0)
            ps_log_error("sampler: sample_reads failed: %s %s (is this release's database side "
                         "installed? run pgshadowctl install)",
                         state, msg);
        else
            ps_log_warning("sampler: sample_reads failed: %s %s; the next round in %lld ms", state,
                           msg, (long long)s->interval_ms);
        return;
    }
    s->stats.rounds++;
    for (int i = 0; i < PQntuples(res); i++) {
        long long keys = atoll(PQgetvalue(res, i, COL_KEYS));
        long long mism = atoll(PQgetvalue(res, i, COL_MISMATCHES));
        long long skipped = atoll(PQgetvalue(res, i, COL_SKIPPED));
        if (PQgetisnull(res, i, COL_TABLE)) {
            /* the migration: this round's totals were counted per table */
            s->window_mismatches = atoll(PQgetvalue(res, i, COL_WIN_MISMATCHES));
            s->p99_ratio =
                PQgetisnull(res, i, COL_WIN_RATIO) ? -1 : atof(PQgetvalue(res, i, COL_WIN_RATIO));
            ps_log_debug("sampler: round: %lld keys, %lld mismatches, %lld pending; window: %lld "
                         "mismatches, p99 ratio %s",
                         keys, mism, skipped, (long long)s->window_mismatches,
                         PQgetisnull(res, i, COL_WIN_RATIO) ? "unknown"
                                                            : PQgetvalue(res, i, COL_WIN_RATIO));
            continue;
        }
        s->stats.keys += (uint64_t)(keys > 0 ? keys : 0);
        s->stats.mismatches += (uint64_t)(mism > 0 ? mism : 0);
        if (mism > 0) {
            /* The keys are the table's key values, shown so an operator can
             * look at the rows; bounded, a long key list is cut. */
            char shown[KEYS_SHOWN + 4];
            const char *k = PQgetvalue(res, i, COL_MKEYS);
            size_t n = strlen(k);
            if (n > KEYS_SHOWN) {
                n = KEYS_SHOWN;
                while (n > 0 && ((unsigned char)k[n] & 0xc0) == 0x80)
                    n--; /* never cut inside a UTF-8 character */
            }
            snprintf(shown, sizeof shown, "%.*s%s", (int)n, k, n < strlen(k) ? "..." : "");
            const char *table = PQgetvalue(res, i, COL_TABLE);
            ps_log_field f[] = {{"TABLE", table}, {NULL, NULL}};
            ps_log_fields(LOG_WARNING, f,
                          "sampler: %s: %lld of %lld sampled keys differ between primary and "
                          "shadow (keys %s); pgshadow.read_samples has the round",
                          table, mism, keys, shown);
        }
    }
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    ps_sampler *s = arg;
    (void)fd;
    (void)what;
    if (s->stopping || s->busy || s->interval_ms <= 0 || !ps_daemon_is_leader(s->d))
        return;
    ps_pgconn *c = ps_daemon_work_conn(s->d);
    if (!c || !ps_pgconn_is_up(c))
        return;
    const ps_config *cfg = ps_daemon_config(s->d);
    char keys[16];
    snprintf(keys, sizeof keys, "%d", cfg->verify.sample_keys);
    const char *params[] = {cfg->migration.id, keys};
    int r = ps_pgconn_query(c, SQL_SAMPLE, 2, params, on_sample, s);
    if (r < 0) {
        ps_log_error("sampler: cannot queue a query: %s", strerror(-r));
        return;
    }
    s->busy = true;
}

/* (Re)arm the timer at ms; 0 stops it. */
static void arm(ps_sampler *s, int64_t ms)
{
    s->interval_ms = ms;
    evtimer_del(s->ev_tick);
    if (ms <= 0 || s->stopping)
        return;
    struct timeval tv = ps_clock_tv(ms);
    evtimer_add(s->ev_tick, &tv);
}

/* ---- module callbacks ---- */

static void sampler_on_leader(ps_daemon *d, bool leader, void *arg)
{
    ps_sampler *s = arg;
    if (!leader) {
        /* the window is the leader's word; a standby says nothing */
        s->window_mismatches = -1;
        s->p99_ratio = -1;
        return;
    }
    if (s->interval_ms > 0)
        ps_log_info("sampler: sampling %d keys per table every %lld ms",
                    ps_daemon_config(d)->verify.sample_keys, (long long)s->interval_ms);
}

static void sampler_on_reload(ps_daemon *d, const ps_config *old_cfg, const ps_config *new_cfg,
                              void *arg)
{
    ps_sampler *s = arg;
    (void)d;
    /* sample_keys is read at each round */
    if (old_cfg->verify.sample_interval_ms != new_cfg->verify.sample_interval_ms)
        arm(s, new_cfg->verify.sample_interval_ms);
}

static void sampler_on_stop(ps_daemon *d, void *arg)
{
    ps_sampler *s = arg;
    (void)d;
    /* a round in flight is a read and one insert: it finishes or rolls back */
    s->stopping = true;
    evtimer_del(s->ev_tick);
}

static size_t sampler_status(ps_daemon *d, char *buf, size_t len, void *arg)
{
    ps_sampler *s = arg;
    if (!ps_daemon_is_leader(d))
        return 0;
    ps_sampler_view v = {
        .enabled = s->interval_ms > 0,
        .window_mismatches = s->window_mismatches,
        .p99_ratio = s->p99_ratio,
    };
    return ps_sampler_format_status(&v, buf, len);
}

int ps_sampler_new(ps_daemon *d, ps_sampler **out)
{
    *out = NULL;
    ps_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->d = d;
    s->ev_tick = event_new(ps_daemon_base(d), -1, EV_PERSIST, tick, s);
    if (!s->ev_tick) {
        free(s);
        return -ENOMEM;
    }
    s->window_mismatches = -1;
    s->p99_ratio = -1;
    arm(s, ps_daemon_config(d)->verify.sample_interval_ms);
    *out = s;
    return 0;
}

void ps_sampler_free(ps_sampler *s)
{
    if (!s)
        return;
    if (s->ev_tick)
        event_free(s->ev_tick);
    free(s);
}

const ps_sampler_stats *ps_sampler_get_stats(const ps_sampler *s)
{
    return &s->stats;
}

static int sampler_create(ps_daemon *d, void **arg)
{
    ps_sampler *s = NULL;
    int r = ps_sampler_new(d, &s);
    *arg = s;
    return r;
}

static void sampler_free(void *arg)
{
    ps_sampler_free(arg);
}

static void sampler_collect(ps_daemon *d, const ps_metric_sink *sink, void *arg)
{
    ps_sampler *s = arg;
    (void)d;
    static const ps_metric_counter counters[] = {
        {"pgshadow_sample_rounds_total", "shadow-read sampling rounds that returned",
         offsetof(ps_sampler_stats, rounds)},
        {"pgshadow_sample_keys_total", "keys read from primary and shadow by sampling",
         offsetof(ps_sampler_stats, keys)},
        {"pgshadow_sample_mismatches_total", "sampled keys found different",
         offsetof(ps_sampler_stats, mismatches)},
        {"pgshadow_sample_errors_total", "failed sampling rounds",
         offsetof(ps_sampler_stats, errors)},
    };
    ps_metric_counters(sink, &s->stats, counters, sizeof counters / sizeof *counters);
    sink->sample(sink->ctx, "pgshadow_sample_mismatches", PS_METRIC_GAUGE,
                 (double)s->window_mismatches,
                 "sampled keys found different in sampling's window (-1: no round yet)");
    sink->sample(sink->ctx, "pgshadow_sample_latency_ratio_p99", PS_METRIC_GAUGE, s->p99_ratio,
                 "sampled shadow read p99 / primary read p99 over the window (-1: not known)");
}

const ps_daemon_module ps_sampler_module = {
    .name = "sampler",
    .create = sampler_create,
    .free = sampler_free,
    .on_leader = sampler_on_leader,
    .on_reload = sampler_on_reload,
    .on_stop = sampler_on_stop,
    .status = sampler_status,
    .collect = sampler_collect,
};
