/*
 * monitor/poller.c - the dashboard poller's shell (monitor.h): every
 * monitor.poll_interval the leading daemon reads its migration's rows of
 * public.shadow_migration_dashboard and its row of
 * public.migration_success_metrics on the work connection, keeps the latest
 * snapshot for the cutover (ps_monitor_latest), logs each change of the
 * verdict once, and says it in STATUS= and the metrics.
 *
 * The database computes the verdict (sql/70-dashboard.sql); the decisions
 * (fresh or stale, what to log) are monitor/policy.c's. Leadership is the
 * daemon's: this module hears it as on_leader and polls only in between.
 *
 * Owns the ps_monitor: two timers (the next poll; the moment the snapshot
 * turns late), the one poll it has queued or in flight (m->req), the latest
 * snapshot, the polling clock, what was last reported, and its counters.
 *
 * Invariants:
 *  - at most one poll of this module is queued or in flight (m->req): a poll
 *    that is due while the previous one has not returned is skipped, not
 *    doubled; the late timer makes the snapshot stale if that one never
 *    returns;
 *  - a poll's callback owns its small request, not the module: leadership
 *    lost, a stop or the module's free orphan it (req->m = NULL), so an
 *    answer that arrives afterwards (the connection completes every query,
 *    even at teardown, after the module is gone) touches nothing else and
 *    never feeds a later leadership;
 *  - the snapshot is read only through ps_monitor_latest, which re-checks
 *    freshness at the reader's time: a failed or late poll gives no data,
 *    never the last healthy verdict;
 *  - a verdict, stale or fresh-again is logged when it changes, once
 *    (policy.c's ps_monitor_transition), never every poll.
 */
#include "pgshadow/monitor.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pgshadow/duration.h"
#include "pgshadow/log.h"
#include "pgshadow/util.h"

/* The migration's verdict and its tables' rows in one statement, so both
 * come from one snapshot of the database. The views do the work (the CASE
 * of the verdict is migration_success_metrics'); the filter on migration_id
 * reaches pgshadow.tables through both views, so a poll costs O(this
 * migration's tables). The last column says whether the migration is
 * finalized (sql/89-finalize.sql); it comes on one row of NULLs when the
 * migration has no registered table, which is then a failed poll unless it
 * is finalized. */
static const char SQL_POLL[] =
    "SELECT q.*, f.finalized FROM "
    "(SELECT EXISTS (SELECT 1 FROM pgshadow.cutover c WHERE c.migration_id = $1 "
    "                AND c.status = 'finalized') AS finalized) f "
    "LEFT JOIN ("
    "SELECT m.migration_status, m.min_sync_percentage, m.avg_sync_percentage, "
    "       m.max_sync_lag_seconds, m.total_diverged_records, m.total_quarantined, "
    "       m.total_pending_changes, m.all_backfill_done, m.all_capture_enabled, "
    "       m.count_source, m.table_count, "
    "       d.table_name, d.sync_percentage, d.sync_lag_seconds, d.diverged_count, "
    "       d.pending_changes, d.quarantined_count, d.backfill_state, d.capture_enabled, d.status, "
    "       sw.rounds, sw.keys_sampled, sw.mismatches, sw.p99_ratio "
    "FROM public.migration_success_metrics m "
    "JOIN public.shadow_migration_dashboard d ON d.migration_id = m.migration_id "
    "CROSS JOIN LATERAL pgshadow.sampling_window($1, make_interval(secs => $2::float8 / 1000)) sw "
    "WHERE m.migration_id = $1) q ON true "
    "ORDER BY q.table_name";

enum {
    COL_STATUS, COL_MIN_PCT, COL_AVG_PCT, COL_MAX_LAG, COL_DIVERGED, COL_QUARANTINED,
    COL_PENDING, COL_BACKFILL_DONE, COL_CAPTURE, COL_COUNT_SOURCE, COL_TABLES,
    COL_T_NAME, COL_T_PCT, COL_T_LAG, COL_T_DIVERGED, COL_T_PENDING, COL_T_QUARANTINED,
    COL_T_BACKFILL, COL_T_CAPTURE, COL_T_STATUS,
    COL_S_ROUNDS, COL_S_KEYS, COL_S_MISMATCHES, COL_S_P99_RATIO, COL_FINALIZED, N_COLS
};

/* One poll, queued or in flight. Freed by its callback; m is NULL once the
 * module no longer wants the answer. */
struct poll_req {
    ps_monitor *m;
    int64_t sent_ms;
};

struct ps_monitor {
    ps_daemon *d;
    struct event *ev_poll; /* the next poll (one-shot) */
    struct event *ev_late; /* the snapshot turns late (one-shot) */
    bool leading;          /* between on_leader gained and lost */
    bool stopping;

    struct poll_req *req; /* the poll queued or in flight, or NULL */
    int64_t last_sent_ms; /* when the latest poll was due and sent (or skipped) */

    ps_monitor_clock clk;
    ps_monitor_snapshot snap; /* the last successful poll's (valid when clk.last_ok_ms >= 0) */
    ps_monitor_snapshot next; /* scratch: the poll being read */
    char fail_why[256];       /* why the latest poll failed */
    ps_monitor_says reported; /* what the log last said */
    bool finalized;           /* the last poll said the migration is finalized: nothing to watch */

    double poll_seconds; /* the last poll's duration, -1 before the first */
    void (*listener)(void *arg); /* told after every poll that ended (the cutover) */
    void *listener_arg;
    ps_monitor_stats stats;
};

static int64_t interval_ms(const ps_monitor *m)
{
    return ps_daemon_config(m->d)->monitor.poll_interval_ms;
}

static ps_monitor_says says_at(const ps_monitor *m, int64_t now, ps_monitor_freshness *f_out)
{
    if (!m->leading || m->finalized) {
        if (f_out)
            *f_out = PS_MONITOR_WAITING;
        return PS_MONITOR_SAYS_NOTHING;
    }
    ps_monitor_freshness f = ps_monitor_freshness_at(&m->clk, now, interval_ms(m));
    if (f_out)
        *f_out = f;
    return ps_monitor_says_from(f, m->snap.status);
}

/* Look at where polling stands now: log a change (once), and arm the late
 * timer for the moment the snapshot would turn stale if nothing succeeds
 * before. Called after every poll, skip, reload and leadership change. */
static void evaluate(ps_monitor *m, int64_t now)
{
    evtimer_del(m->ev_late);
    ps_monitor_freshness f;
    ps_monitor_says says = says_at(m, now, &f);
    char why[320] = "";
    if (f == PS_MONITOR_FAILED) {
        snprintf(why, sizeof why, "poll failed: %s", m->fail_why);
    } else if (f == PS_MONITOR_LATE) {
        char late[32], iv[32];
        int64_t since = m->clk.last_ok_ms >= 0 ? m->clk.last_ok_ms : m->clk.started_ms;
        ps_human_lag(now - since, late, sizeof late);
        ps_duration_format(interval_ms(m), iv, sizeof iv);
        snprintf(why, sizeof why, "late: no successful poll for %s, poll_interval %s%s", late, iv,
                 m->req ? "; a poll is still waiting for its answer" : "");
    }
    char line[400];
    int prio;
    if (ps_monitor_transition(m->reported, says, why, line, sizeof line, &prio)) {
        const ps_config *cfg = ps_daemon_config(m->d);
        /* the STATUS= word without "dashboard ": one token for a journal match */
        char word[64] = "";
        ps_monitor_format_status(says, word, sizeof word);
        const char *sp = strchr(word, ' ');
        ps_log_field fields[] = {{"MIGRATION", cfg->migration.id},
                                 {"DASHBOARD", sp ? sp + 1 : word}, {NULL, NULL}};
        ps_log_fields(prio, fields, "%s", line);
    }
    m->reported = says;
    if (m->leading && !m->stopping && !m->finalized && (f == PS_MONITOR_FRESH || f == PS_MONITOR_WAITING)) {
        int64_t since = m->clk.last_ok_ms >= 0 ? m->clk.last_ok_ms : m->clk.started_ms;
        int64_t at = since + ps_monitor_late_ms(interval_ms(m)) + 1; /* first late ms */
        struct timeval tv = ps_clock_tv(at > now ? at - now : 0);
        evtimer_add(m->ev_late, &tv);
    }
}

/* ---- reading an answer ---- */

static double num(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0.0 : strtod(PQgetvalue(res, row, col), NULL);
}

static int64_t count(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static bool truth(const PGresult *res, int row, int col)
{
    return !PQgetisnull(res, row, col) && PQgetvalue(res, row, col)[0] == 't';
}

/* The answer into *out: 0, 1 when the migration is finalized (no table
 * left: nothing to watch), or -EINVAL with the reason in why. */
static int read_answer(const PGresult *res, const char *migration, ps_monitor_snapshot *out,
                       char *why, size_t len)
{
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(why, len, "%s %s", ps_pgconn_errfield(res, PG_DIAG_SQLSTATE, "?"),
                 ps_pgconn_errfield(res, PG_DIAG_MESSAGE_PRIMARY, "unknown error"));
        return -EINVAL;
    }
    if (PQnfields(res) != N_COLS) {
        snprintf(why, len, "unexpected answer (%d columns)", PQnfields(res));
        return -EINVAL;
    }
    int n = PQntuples(res);
    if (n == 0 || PQgetisnull(res, 0, COL_STATUS)) {
        if (n == 1 && truth(res, 0, COL_FINALIZED))
            return 1;
        snprintf(why, len, "no row for migration %s in public.migration_success_metrics (no "
                           "table registered? run pgshadowctl install)", migration);
        return -EINVAL;
    }
    memset(out, 0, sizeof *out);
    const char *status = PQgetisnull(res, 0, COL_STATUS) ? "" : PQgetvalue(res, 0, COL_STATUS);
    if (ps_monitor_status_parse(status, &out->status) < 0) {
        snprintf(why, len, "unknown migration_status '%s'", status);
        return -EINVAL;
    }
    out->min_sync_percent = num(res, 0, COL_MIN_PCT);
    out->avg_sync_percent = num(res, 0, COL_AVG_PCT);
    out->max_sync_lag_s = num(res, 0, COL_MAX_LAG);
    out->total_diverged = count(res, 0, COL_DIVERGED);
    out->total_quarantined = count(res, 0, COL_QUARANTINED);
    out->total_pending = count(res, 0, COL_PENDING);
    out->backfill_done = truth(res, 0, COL_BACKFILL_DONE);
    out->capture_enabled = truth(res, 0, COL_CAPTURE);
    out->exact = strcmp(PQgetvalue(res, 0, COL_COUNT_SOURCE), "exact") == 0;
    out->n_tables = (int)count(res, 0, COL_TABLES);
    out->sampled = count(res, 0, COL_S_ROUNDS) > 0;
    out->sample_keys = count(res, 0, COL_S_KEYS);
    out->sample_mismatches = count(res, 0, COL_S_MISMATCHES);
    out->sample_p99_ratio = PQgetisnull(res, 0, COL_S_P99_RATIO) ? -1.0 : num(res, 0, COL_S_P99_RATIO);
    for (int i = 0; i < n && out->n_kept < PS_MONITOR_MAX_TABLES; i++) {
        ps_monitor_table *t = &out->tables[out->n_kept++];
        snprintf(t->name, sizeof t->name, "%s", PQgetvalue(res, i, COL_T_NAME));
        t->sync_percent = num(res, i, COL_T_PCT);
        t->sync_lag_s = num(res, i, COL_T_LAG);
        t->diverged = count(res, i, COL_T_DIVERGED);
        t->pending = count(res, i, COL_T_PENDING);
        t->quarantined = count(res, i, COL_T_QUARANTINED);
        t->backfill_done = strcmp(PQgetvalue(res, i, COL_T_BACKFILL), "done") == 0;
        t->capture_enabled = truth(res, i, COL_T_CAPTURE);
        snprintf(t->status, sizeof t->status, "%s", PQgetvalue(res, i, COL_T_STATUS));
    }
    return 0;
}

static void on_poll(ps_pgconn *c, const PGresult *res, void *arg)
{
    struct poll_req *req = arg;
    ps_monitor *m = req->m;
    int64_t sent = req->sent_ms;
    (void)c;
    free(req);
    if (!m)
        return; /* orphaned: leadership lost, stopping, or the module is gone */
    m->req = NULL;
    int64_t now = ps_clock_ms();
    m->poll_seconds = (double)(now - sent) / 1000.0;
    m->stats.polls++;
    const ps_config *cfg = ps_daemon_config(m->d);
    char why[sizeof m->fail_why];
    int answer = res ? read_answer(res, cfg->migration.id, &m->next, why, sizeof why) : -EINVAL;
    if (answer == 1) {
        /* Finalized: no snapshot, and nothing to say about that (the
         * cutover, which needs none now, says it once); polled on, cheaply,
         * so a migration installed again is watched again. */
        if (!m->finalized)
            ps_log_info("dashboard: migration %s is finalized: no table left to watch", cfg->migration.id);
        m->finalized = true;
        m->clk.last_failed = false;
        m->clk.last_ok_ms = -1; /* no snapshot */
        m->reported = PS_MONITOR_SAYS_NOTHING;
        evtimer_del(m->ev_late);
        if (m->listener)
            m->listener(m->listener_arg);
        return;
    }
    m->finalized = false;
    if (!res) {
        snprintf(why, sizeof why, "connection lost");
    } else if (answer == 0) {
        m->next.taken_ms = now;
        m->snap = m->next;
        m->clk.last_ok_ms = now;
        m->clk.last_failed = false;
        ps_log_debug("dashboard poll: %s in %lld ms (%d tables)",
                     ps_monitor_status_name(m->snap.status), (long long)(now - sent),
                     m->snap.n_tables);
        evaluate(m, now);
        if (m->listener)
            m->listener(m->listener_arg);
        return;
    }
    m->stats.failures++;
    m->clk.last_failed = true;
    snprintf(m->fail_why, sizeof m->fail_why, "%s", why);
    ps_log_debug("dashboard poll failed after %lld ms: %s", (long long)(now - sent), why);
    evaluate(m, now);
    if (m->listener)
        m->listener(m->listener_arg);
}

void ps_monitor_set_listener(ps_monitor *m, void (*fn)(void *arg), void *arg)
{
    if (!m)
        return;
    m->listener = fn;
    m->listener_arg = arg;
}

/* ---- the poll timer ---- */

static void send_poll(ps_monitor *m, int64_t now)
{
    struct poll_req *req = calloc(1, sizeof *req);
    ps_pgconn *c = ps_daemon_work_conn(m->d);
    const ps_config *cfg = ps_daemon_config(m->d);
    char window[32];
    snprintf(window, sizeof window, "%lld", (long long)ps_monitor_sample_window_ms(cfg));
    const char *params[2] = {cfg->migration.id, window};
    int r = -ENOMEM;
    if (req && c) {
        req->m = m;
        req->sent_ms = now;
        r = ps_pgconn_query(c, SQL_POLL, 2, params, on_poll, req);
    } else if (!c) {
        r = -ENOTCONN;
    }
    if (r < 0) {
        free(req);
        m->stats.polls++;
        m->stats.failures++;
        m->clk.last_failed = true;
        snprintf(m->fail_why, sizeof m->fail_why, "cannot queue the query: %s", strerror(-r));
        return;
    }
    m->req = req;
}

static void arm_poll(ps_monitor *m, int64_t in_ms)
{
    struct timeval tv = ps_clock_tv(in_ms > 0 ? in_ms : 0);
    evtimer_del(m->ev_poll);
    evtimer_add(m->ev_poll, &tv);
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
    ps_monitor *m = arg;
    (void)fd;
    (void)what;
    if (!m->leading || m->stopping)
        return;
    int64_t now = ps_clock_ms();
    if (m->req) {
        /* Not doubled: the one in flight answers for this round too. If it
         * never does, the late timer makes the snapshot stale. */
        m->stats.skipped++;
        ps_log_debug("dashboard poll: the previous poll has not returned; not sending another");
    } else {
        send_poll(m, now);
    }
    m->last_sent_ms = now;
    /* The interval is read here, each time: a reload takes effect at the
     * next poll. */
    arm_poll(m, interval_ms(m));
    evaluate(m, now);
}

static void late_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evaluate(arg, ps_clock_ms());
}

/* ---- module callbacks ---- */

/* Drop the poll in flight: its answer, when it comes, is dropped too. */
static void orphan(ps_monitor *m)
{
    if (m->req)
        m->req->m = NULL;
    m->req = NULL;
}

static void monitor_on_leader(ps_daemon *d, bool leader, void *arg)
{
    ps_monitor *m = arg;
    int64_t now = ps_clock_ms();
    evtimer_del(m->ev_poll);
    evtimer_del(m->ev_late);
    orphan(m);
    /* A new leadership knows nothing: no snapshot until its first poll. */
    m->leading = leader && !m->stopping;
    m->clk = (ps_monitor_clock){.started_ms = now, .last_ok_ms = -1, .last_failed = false};
    m->reported = PS_MONITOR_SAYS_NOTHING;
    m->finalized = false;
    if (!m->leading)
        return;
    char iv[32];
    ps_duration_format(interval_ms(m), iv, sizeof iv);
    ps_log_info("dashboard: polling public.shadow_migration_dashboard for migration %s every %s",
                ps_daemon_config(d)->migration.id, iv);
    arm_poll(m, 0);
    evaluate(m, now);
}

static void monitor_on_reload(ps_daemon *d, const ps_config *old_cfg, const ps_config *new_cfg,
                              void *arg)
{
    ps_monitor *m = arg;
    (void)d;
    if (old_cfg->monitor.poll_interval_ms == new_cfg->monitor.poll_interval_ms || !m->leading ||
        m->stopping)
        return;
    /* The next poll comes one new interval after the last one (at once if
     * that is past), and the late limit follows the new interval. */
    int64_t now = ps_clock_ms();
    arm_poll(m, m->last_sent_ms + new_cfg->monitor.poll_interval_ms - now);
    evaluate(m, now);
}

static void monitor_on_stop(ps_daemon *d, void *arg)
{
    ps_monitor *m = arg;
    (void)d;
    /* A poll is a read: nothing to finish. */
    m->stopping = true;
    m->leading = false;
    orphan(m);
    evtimer_del(m->ev_poll);
    evtimer_del(m->ev_late);
}

static size_t monitor_status(ps_daemon *d, char *buf, size_t len, void *arg)
{
    ps_monitor *m = arg;
    /* A standby does not poll: the leader's words are the news. */
    if (!ps_daemon_is_leader(d))
        return 0;
    return ps_monitor_format_status(says_at(m, ps_clock_ms(), NULL), buf, len);
}

static void monitor_collect(ps_daemon *d, const ps_metric_sink *sink, void *arg)
{
    ps_monitor *m = arg;
    (void)d;
    static const ps_metric_counter counters[] = {
        {"pgshadow_dashboard_polls_total", "dashboard polls that ended (succeeded or failed)",
         offsetof(ps_monitor_stats, polls)},
        {"pgshadow_dashboard_poll_failures_total",
         "dashboard polls that failed (error, unexpected answer, lost connection)",
         offsetof(ps_monitor_stats, failures)},
        {"pgshadow_dashboard_polls_skipped_total",
         "dashboard polls not sent: the previous one had not returned",
         offsetof(ps_monitor_stats, skipped)},
    };
    ps_metric_counters(sink, &m->stats, counters, sizeof counters / sizeof *counters);
    sink->sample(sink->ctx, "pgshadow_dashboard_stale", PS_METRIC_GAUGE,
                 ps_monitor_latest(m, ps_clock_ms()) ? 0 : 1,
                 "1 when no fresh dashboard snapshot is held (poll failed or late, not polled "
                 "yet, or a standby, which does not poll)");
    sink->sample(sink->ctx, "pgshadow_dashboard_poll_seconds", PS_METRIC_GAUGE, m->poll_seconds,
                 "duration of the last dashboard poll (-1: none yet)");
}

static void monitor_free(void *arg)
{
    ps_monitor *m = arg;
    if (!m)
        return;
    orphan(m);
    if (m->ev_poll)
        event_free(m->ev_poll);
    if (m->ev_late)
        event_free(m->ev_late);
    free(m);
}

static int monitor_create(ps_daemon *d, void **arg)
{
    ps_monitor *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->d = d;
    m->ev_poll = evtimer_new(ps_daemon_base(d), poll_cb, m);
    m->ev_late = evtimer_new(ps_daemon_base(d), late_cb, m);
    if (!m->ev_poll || !m->ev_late) {
        monitor_free(m);
        return -ENOMEM;
    }
    m->clk.last_ok_ms = -1;
    m->poll_seconds = -1;
    ps_daemon_set_monitor(d, m);
    *arg = m;
    return 0;
}

const ps_monitor_snapshot *ps_monitor_latest(const ps_monitor *m, int64_t now_ms)
{
    if (!m || !m->leading || m->clk.last_ok_ms < 0)
        return NULL;
    if (ps_monitor_freshness_at(&m->clk, now_ms, interval_ms(m)) != PS_MONITOR_FRESH)
        return NULL;
    return &m->snap;
}

const ps_monitor_stats *ps_monitor_get_stats(const ps_monitor *m)
{
    return &m->stats;
}

const ps_daemon_module ps_monitor_module = {
    .name = "monitor",
    .create = monitor_create,
    .free = monitor_free,
    .on_leader = monitor_on_leader,
    .on_reload = monitor_on_reload,
    .on_stop = monitor_on_stop,
    .status = monitor_status,
    .collect = monitor_collect,
};
