/*
 * sync/engine.c - the sync engine's shell (sync.h): wake-ups, apply rounds,
 * the backfill's plan and its worker pool (sync/bfpool.c), throttling, halt,
 * progress and STATUS words, on the leader only.
 *
 * The database does the work (sql/8*-sync-*.sql); this module decides when to
 * ask for it, through the pure policy (sync/policy.c), and compares the
 * config with the installed registry through sync/registry.c. Leadership is
 * the daemon's (src/daemon/leader.c): this module hears it as on_leader.
 *
 * Owns the ps_sync: its timers (batch_delay window, catchup_interval, the
 * policy's next deadline), the one query it has in flight on main, the
 * backfill worker pool (started, held and closed by pool_update from every
 * step), the halt reason, backfill progress and its counters.
 *
 * Invariants:
 *  - at most one query of this module is queued or in flight at a time
 *    (s->busy); every decision is taken by step() when that query finished or
 *    a timer/NOTIFY/on_leader changed the state, so nothing ever blocks the
 *    loop and no two rounds overlap;
 *  - every apply_batch / backfill_plan (and each claim and chunk of the
 *    pool) is one autocommit statement, i.e. one transaction: a crash, kill
 *    -9 or lost connection at any moment loses nothing (the change log rows
 *    are deleted in the same transaction that applied them; a range's cursor
 *    moves with its copied chunk);
 *  - the pool copies only while this daemon leads, the backfill is not done,
 *    nothing is halted and the standby lag allows (pool_update);
 *  - a query goes to main only while ps_daemon_is_leader: the lock held in
 *    the session of main up now (ps_pgconn_session_id, never reused), read
 *    by step() before each decision, so no query of a lost leadership runs
 *    in a new session; on_leader(gained) starts from nothing known (drain,
 *    recheck the backfill, measure, compare the registry);
 *  - a result of NULL is never fatal: the round ends, and the next
 *    on_leader(gained), once the lock is held again, starts a new one.
 *
 * Size: a little over 800 lines: the result handlers of apply, the plan and
 * the pool's chunks share the progress and throttle state kept here; the
 * decisions themselves are policy.c's and the pool is bfpool.c.
 */
#include "pgshadow/control.h"
#include "pgshadow/sync.h"

#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pgshadow/bfpool.h"
#include "pgshadow/chunk_policy.h"
#include "pgshadow/duration.h"
#include "pgshadow/leader.h"
#include "pgshadow/log.h"
#include "pgshadow/util.h"

/* ------------------------------------------------------------------------ */
/* The shell */

/* The standbys' replication lag and the age of the oldest pending change
 * (pgshadow.sync_probe, sql/84-sync-wakeup.sql: O(tables)). */
static const char SQL_PROBE[] =
    "SELECT replication_lag_ms, oldest_change_age_s FROM pgshadow.sync_probe($1)";

static const char SQL_APPLY[] =
    "SELECT taken, upserted, deleted, quarantined, truncated, halted "
    "FROM pgshadow.apply_batch($1, $2::integer, $3)";

/* Start the tables that have no copy yet, and learn which are not done. */
static const char SQL_PLAN[] =
    "SELECT table_name, state, rows_done, rows_total FROM pgshadow.backfill_plan($1, $2::integer)";

static const char SQL_ARM[] = "SELECT pgshadow.wakeup_arm($1)";

struct ps_sync {
    ps_daemon *d;
    struct event *ev_delay;   /* batch_delay coalescing window (one-shot) */
    struct event *ev_catchup; /* catchup_interval (persistent) */
    struct event *ev_wake;    /* the policy's next deadline (one-shot) */
    int64_t catchup_ms;       /* period ev_catchup runs at */

    ps_sync_state st;

    bool armed; /* we armed the wake-up flag and no batch has disarmed it since */

    bool config_differs; /* the last comparison found differences */

    bool busy;
    ps_sync_action inflight;
    int64_t inflight_started_ms;
    int inflight_limit;

    char *halted;
    ps_sync_throttle throttle; /* last logged level */
    bool lag_invisible_warned;
    double sync_lag_s;

    /* backfill: the worker pool copies; the progress of the table of the
     * latest chunk, and per table where this process started counting */
    ps_bfpool *pool;
    bool bf_planned; /* a plan said some table is not done (this leadership) */
    char bf_table[128];
    int64_t bf_done, bf_total, bf_base_rows, bf_base_ms, bf_last_log_ms;
    bool bf_any; /* copied something in this process */
    struct {
        char name[128];
        int64_t base_rows, base_ms; /* persisted rows when this process first planned it */
        bool announced;             /* "started" / "resuming" logged */
    } bf_seen[PS_CHUNK_TABLES];

    ps_sync_stats stats;
};

static void step(ps_sync *s);

/* A query came back with an error: log it and back off. */
static void query_failed(ps_sync *s, const char *what, const PGresult *res)
{
    s->stats.errors++;
    const char *state = ps_pgconn_errfield(res, PG_DIAG_SQLSTATE, "?");
    const char *msg = ps_pgconn_errfield(res, PG_DIAG_MESSAGE_PRIMARY, "unknown error");
    int64_t backoff = s->catchup_ms > PS_SYNC_ERROR_RETRY_MS ? s->catchup_ms : PS_SYNC_ERROR_RETRY_MS;
    if (strcmp(state, "55P03") == 0)
        ps_log_warning("sync: %s gave up waiting for a lock after lock_timeout (5 s): %s; another "
                       "session holds a lock on a shadow or registry table; retrying in %lld ms",
                       what, msg, (long long)backoff);
    else if (strcmp(state, "57014") == 0)
        ps_log_error("sync: %s canceled: %s (statement_timeout %d s on the main connection, or "
                     "an operator's cancel); retrying in %lld ms",
                     what, msg, PS_LEADER_STATEMENT_TIMEOUT_MS / 1000, (long long)backoff);
    else if (strcmp(state, "42883") == 0 || strcmp(state, "3F000") == 0 || strcmp(state, "42P01") == 0)
        ps_log_error("sync: %s failed: %s %s (is the database side installed? run pgshadowctl "
                     "install)", what, state, msg);
    else
        ps_log_error("sync: %s failed: %s %s; retrying in %lld ms", what, state, msg,
                     (long long)backoff);
    s->st.retry_after_ms = ps_clock_ms() + backoff;
}

/* The connection went away under a query: the round ends. Leadership went
 * with the session; the leader module says so (on_leader) and takes the lock
 * again once the connection is back, and only then does anything resume. */
static void conn_lost(ps_sync *s, const char *what)
{
    ps_log_debug("sync: connection lost during %s", what);
}

/* ---- probe ---- */

static void log_throttle_change(ps_sync *s, ps_sync_throttle t, int64_t lag, int64_t max)
{
    if (t == s->throttle)
        return;
    char l[32], m[32];
    ps_human_lag(lag, l, sizeof l);
    ps_duration_format(max, m, sizeof m); /* as configured: "900ms", not "0s" */
    if (t == PS_SYNC_THROTTLE_APPLY)
        ps_log_warning("sync: replication lag %s is more than 3 x max_replication_lag (%s): "
                       "backfill paused, apply slowed to one batch per catchup_interval", l, m);
    else if (t == PS_SYNC_THROTTLE_BACKFILL)
        ps_log_warning("sync: replication lag %s exceeds max_replication_lag (%s): backfill "
                       "paused", l, m);
    else
        ps_log_notice("sync: replication lag back under max_replication_lag (%s): backfill "
                      "and apply at full speed", m);
    s->throttle = t;
}

static void on_probe(ps_pgconn *c, const PGresult *res, void *arg)
{
    ps_sync *s = arg;
    (void)c;
    s->busy = false;
    s->st.probe_at_ms = ps_clock_ms() + PS_SYNC_PROBE_MS;
    if (!res) {
        conn_lost(s, "the lag probe");
    } else if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        query_failed(s, "lag probe", res);
    } else {
        if (PQgetisnull(res, 0, 0)) {
            s->st.repl_lag_ms = -1;
            if (!s->lag_invisible_warned &&
                ps_daemon_config(s->d)->sync.max_replication_lag_ms > 0)
                ps_log_warning("sync: replication lag is not visible to this role (grant "
                               "pg_read_all_stats to pgshadow_daemon); throttling is off");
            s->lag_invisible_warned = true;
        } else {
            s->st.repl_lag_ms = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        }
        s->sync_lag_s = PQgetisnull(res, 0, 1) ? 0.0 : strtod(PQgetvalue(res, 0, 1), NULL);
        if (s->sync_lag_s < 0)
            s->sync_lag_s = 0;
        int64_t max = ps_daemon_config(s->d)->sync.max_replication_lag_ms;
        log_throttle_change(s, ps_sync_throttle_for(s->st.repl_lag_ms, max), s->st.repl_lag_ms,
                            max);
    }
    step(s);
}

/* ---- apply ---- */

static void on_apply(ps_pgconn *c, const PGresult *res, void *arg)
{
    ps_sync *s = arg;
    (void)c;
    s->busy = false;
    if (!res) {
        /* The transaction rolled back with the connection: the same entries
         * are still in the change log for the next round. */
        conn_lost(s, "apply_batch");
        s->st.apply_pending = true;
        step(s);
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        query_failed(s, "apply_batch", res);
        s->st.apply_pending = true;
        step(s);
        return;
    }
    int taken = atoi(PQgetvalue(res, 0, 0));
    int upserted = atoi(PQgetvalue(res, 0, 1));
    int deleted = atoi(PQgetvalue(res, 0, 2));
    int quarantined = atoi(PQgetvalue(res, 0, 3));
    int truncated = atoi(PQgetvalue(res, 0, 4));
    s->stats.apply_batches++;
    s->stats.applied += (uint64_t)(taken > 0 ? taken : 0);
    s->stats.quarantined += (uint64_t)(quarantined > 0 ? quarantined : 0);
    if (taken > 0)
        ps_log_debug("sync: applied batch: taken=%d upserted=%d deleted=%d quarantined=%d "
                     "truncated=%d",
                     taken, upserted, deleted, quarantined, truncated);
    if (quarantined > 0)
        ps_log_warning("sync: %d row(s) quarantined by the shadow's constraints; the others "
                       "were applied (pgshadowctl quarantine list)",
                       quarantined);
    if (truncated > 0) {
        ps_log_notice("sync: resync of %d table(s) (TRUNCATE, capture re-enabled or partitions "
                      "moved): copied again and reconciled, the shadow is not emptied",
                      truncated);
        s->st.backfill_done = false;
        s->st.backfill_plan_at_ms = 0;
    }
    if (!PQgetisnull(res, 0, 5)) {
        const char *why = PQgetvalue(res, 0, 5);
        free(s->halted);
        s->halted = strdup(why);
        s->st.halted = true;
        char table[128];
        size_t n = strcspn(why, ":");
        snprintf(table, sizeof table, "%.*s", (int)(n < sizeof table ? n : sizeof table - 1), why);
        ps_log_field f[] = {{"TABLE", table}, {NULL, NULL}};
        ps_log_fields(LOG_ERR, f,
                      "sync: HALTED (on_apply_error: halt): %s; nothing more is applied until "
                      "the cause is fixed and pgshadowd is reloaded (SIGHUP) or restarted",
                      why);
    }
    /* apply_batch disarmed the wake-up flag when it took something, so no
     * NOTIFY will come: keep draining by ourselves. A full batch: more
     * waits, at once. A partial one: again after batch_delay (the same
     * coalescing a NOTIFY gets). An empty log: arm, then one more round
     * (the arm's recheck); empty again while armed: wait for a NOTIFY. */
    if (taken > 0)
        s->armed = false;
    ps_sync_after_apply(&s->st, taken, s->inflight_limit);
    if (taken > 0 && taken < s->inflight_limit && !evtimer_pending(s->ev_delay, NULL)) {
        struct timeval tv = ps_clock_tv(ps_daemon_config(s->d)->sync.batch_delay_ms);
        evtimer_add(s->ev_delay, &tv);
    }
    s->st.arm_needed = taken == 0 && !s->armed;
    if (ps_sync_throttle_for(s->st.repl_lag_ms, ps_daemon_config(s->d)->sync.max_replication_lag_ms) ==
        PS_SYNC_THROTTLE_APPLY)
        s->st.apply_not_before_ms = ps_clock_ms() + s->catchup_ms;
    step(s);
}

/* ---- wake-up flag ---- */

static void on_arm(ps_pgconn *c, const PGresult *res, void *arg)
{
    ps_sync *s = arg;
    (void)c;
    s->busy = false;
    if (!res) {
        conn_lost(s, "wakeup_arm");
    } else if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        query_failed(s, "wakeup_arm", res);
    } else {
        s->armed = true;
        s->st.arm_needed = false;
        s->st.apply_pending = true; /* the recheck: see sync.h */
    }
    step(s);
}

/* ---- backfill ---- */

static void log_progress(ps_sync *s, int64_t now)
{
    char eta[32] = "unknown";
    int64_t e = ps_sync_eta_ms(s->bf_base_rows, s->bf_base_ms, s->bf_done, s->bf_total, now);
    if (e >= 0)
        ps_human_duration(e, eta, sizeof eta);
    int64_t rate = ps_sync_rate(s->bf_base_rows, s->bf_base_ms, s->bf_done, now);
    char done[24], total[24], r[24];
    snprintf(done, sizeof done, "%lld", (long long)s->bf_done);
    snprintf(total, sizeof total, "%lld", (long long)s->bf_total);
    snprintf(r, sizeof r, "%lld", (long long)(rate < 0 ? 0 : rate));
    ps_log_field f[] = {{"TABLE", s->bf_table}, {"ROWS_DONE", done}, {"ROWS_TOTAL", total},
                        {"RATE", r}, {NULL, NULL}};
    ps_log_fields(LOG_INFO, f, "sync: backfill %s: %d%% (%s of ~%s rows, %s rows/s, ETA %s)",
                  s->bf_table, ps_sync_percent(s->bf_done, s->bf_total, false), done, total, r,
                  eta);
    s->bf_last_log_ms = now;
}

/* The slot of table's progress in bf_seen: its own, or the first free one
 * (name ""), or PS_CHUNK_TABLES when all are taken. */
static size_t bf_seen(ps_sync *s, const char *table)
{
    for (size_t i = 0; i < PS_CHUNK_TABLES; i++)
        if (!s->bf_seen[i].name[0] || strcmp(s->bf_seen[i].name, table) == 0)
            return i;
    return PS_CHUNK_TABLES;
}

/* What the pool should do now: copy only on the leader, while the backfill
 * is not done and the standby lag allows; connections closed otherwise. */
static void pool_update(ps_sync *s)
{
    if (!s->pool)
        return;
    bool leader = ps_daemon_is_leader(s->d);
    if (s->st.stopping || !leader || s->st.backfill_done) {
        ps_bfpool_close(s->pool);
        return;
    }
    if (ps_sync_throttle_for(s->st.repl_lag_ms, ps_daemon_config(s->d)->sync.max_replication_lag_ms) !=
            PS_SYNC_THROTTLE_NONE ||
        s->st.halted)
        ps_bfpool_hold(s->pool);
    else if (s->bf_planned)
        ps_bfpool_run(s->pool);
}

static void on_plan(ps_pgconn *c, const PGresult *res, void *arg)
{
    ps_sync *s = arg;
    (void)c;
    s->busy = false;
    if (!res) {
        conn_lost(s, "backfill_plan");
        step(s);
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        query_failed(s, "backfill_plan", res);
        step(s);
        return;
    }
    if (PQntuples(res) == 0) {
        if (!s->st.backfill_done && s->bf_any)
            ps_log_notice("sync: backfill complete: every table is copied; applying changes only");
        s->st.backfill_done = true;
        s->bf_planned = false;
        s->bf_table[0] = '\0';
        step(s);
        return;
    }
    s->bf_planned = true;
    int64_t now = ps_clock_ms();
    for (int row = 0; row < PQntuples(res); row++) {
        const char *table = PQgetvalue(res, row, 0);
        int64_t done = PQgetisnull(res, row, 2) ? 0 : strtoll(PQgetvalue(res, row, 2), NULL, 10);
        int64_t total = PQgetisnull(res, row, 3) ? 0 : strtoll(PQgetvalue(res, row, 3), NULL, 10);
        size_t i = bf_seen(s, table);
        if (i < PS_CHUNK_TABLES &&
            (!s->bf_seen[i].name[0] || done < s->bf_seen[i].base_rows)) {
            /* first seen by this process (what earlier runs copied is not
             * this run's rate), or copied again from the start (a resync) */
            snprintf(s->bf_seen[i].name, sizeof s->bf_seen[i].name, "%s", table);
            s->bf_seen[i].base_rows = done;
            s->bf_seen[i].base_ms = now;
            s->bf_seen[i].announced = false;
        }
        if (row == 0 && !s->bf_table[0]) {
            /* nothing copied yet in this process: show the first table */
            snprintf(s->bf_table, sizeof s->bf_table, "%s", table);
            s->bf_done = done;
            s->bf_total = total;
            s->bf_base_rows = done;
            s->bf_base_ms = now;
        }
    }
    step(s);
}

/* The pool copied a chunk (on its own connection). */
static void on_chunk(const ps_bfpool_chunk *ch, void *arg)
{
    ps_sync *s = arg;
    int64_t now = ps_clock_ms();
    ps_log_field f[] = {{"TABLE", ch->table}, {NULL, NULL}};
    size_t i = bf_seen(s, ch->table);
    if (i < PS_CHUNK_TABLES && !s->bf_seen[i].name[0]) {
        /* not planned by this process (cannot happen: the pool runs after
         * a plan); count from this chunk */
        snprintf(s->bf_seen[i].name, sizeof s->bf_seen[i].name, "%s", ch->table);
        s->bf_seen[i].base_rows = ch->rows_done - ch->copied;
        s->bf_seen[i].base_ms = now - ch->elapsed_ms;
    }
    if (i < PS_CHUNK_TABLES && !s->bf_seen[i].announced) {
        s->bf_seen[i].announced = true;
        if (s->bf_seen[i].base_rows > 0)
            ps_log_fields(LOG_INFO, f, "sync: backfill %s: resuming after %lld rows (~%lld total)",
                          ch->table, (long long)s->bf_seen[i].base_rows, (long long)ch->rows_total);
        else
            ps_log_fields(LOG_INFO, f, "sync: backfill %s: started (~%lld rows)", ch->table,
                          (long long)ch->rows_total);
    }
    if (i < PS_CHUNK_TABLES) {
        s->bf_base_rows = s->bf_seen[i].base_rows;
        s->bf_base_ms = s->bf_seen[i].base_ms;
    }
    snprintf(s->bf_table, sizeof s->bf_table, "%s", ch->table);
    s->bf_done = ch->rows_done;
    s->bf_total = ch->rows_total;
    s->bf_any = true;
    s->stats.backfill_steps++;
    s->stats.backfill_rows += (uint64_t)(ch->copied > 0 ? ch->copied : 0);
    if (ch->table_done) {
        char el[32];
        ps_human_duration(now - s->bf_base_ms, el, sizeof el);
        ps_log_fields(LOG_NOTICE, f, "sync: backfill %s done: %lld rows (%s in this run)", ch->table,
                      (long long)ch->rows_done, el);
        s->bf_table[0] = '\0';
        s->st.backfill_plan_at_ms = 0; /* learn at once whether anything is left */
    } else if (now - s->bf_last_log_ms >= PS_SYNC_PROGRESS_LOG_MS) {
        log_progress(s, now);
    }
    /* Entries apply left for this chunk can go now; and writers may not
     * NOTIFY while we are disarmed: look at the log after every chunk. */
    s->st.apply_pending = true;
    step(s);
}

/* A worker found nothing to claim: plan again soon (a table may be waiting,
 * or everything may be done). */
static void on_empty(void *arg)
{
    ps_sync *s = arg;
    int64_t soon = ps_clock_ms() + PS_BFPOOL_EMPTY_RETRY_MS;
    if (s->st.backfill_plan_at_ms > soon)
        s->st.backfill_plan_at_ms = soon;
    step(s);
}

/* ---- config vs installed registry ---- */

static void log_diff(const char *table, const char *msg, void *arg)
{
    (void)arg;
    ps_log_field f[] = {{"TABLE", table}, {NULL, NULL}};
    ps_log_fields(LOG_WARNING, f,
                  "sync: config differs from the installed registry for table %s: %s; the daemon "
                  "keeps applying with the installed mapping; run pgshadowctl install to apply it",
                  table, msg);
}

static void on_registry(ps_pgconn *c, const PGresult *res, void *arg)
{
    ps_sync *s = arg;
    (void)c;
    s->busy = false;
    if (!res) {
        conn_lost(s, "the registry check");
        step(s);
        return;
    }
    s->st.registry_check = false;
    ps_sync_registry reg;
    int r = ps_sync_registry_read(res, &reg);
    if (r == -EINVAL) {
        /* Not retried: the apply path reports a missing database side. */
        s->stats.errors++;
        ps_log_warning("sync: cannot compare the config with pgshadow.tables: %s",
                       ps_pgconn_errfield(res, PG_DIAG_MESSAGE_PRIMARY, "unexpected result"));
        step(s);
        return;
    }
    if (r < 0) {
        ps_log_error("sync: registry check: out of memory");
        step(s);
        return;
    }
    if (reg.finalized && reg.n == 0) {
        /* nothing registered, by design: nothing to compare, apply or copy */
        ps_log_info("sync: migration %s is finalized: nothing to apply or backfill",
                    ps_daemon_config(s->d)->migration.id);
        ps_sync_registry_clear(&reg);
        step(s);
        return;
    }
    int diffs = ps_sync_registry_diff(ps_daemon_config(s->d), reg.tables, reg.n, log_diff, s);
    if (diffs == 0 && s->config_differs)
        ps_log_notice("sync: the config's tables match the installed registry again");
    s->config_differs = diffs > 0;
    ps_sync_registry_clear(&reg);
    step(s);
}

/* ---- the decision loop ---- */

static void send_query(ps_sync *s, ps_pgconn *c, ps_sync_action a, const char *sql, int n,
                       const char *const *params, ps_pg_result_cb cb)
{
    s->busy = true;
    s->inflight = a;
    s->inflight_started_ms = ps_clock_ms();
    int r = ps_pgconn_query(c, sql, n, params, cb, s);
    if (r < 0) {
        s->busy = false;
        s->stats.errors++;
        ps_log_error("sync: cannot queue a query: %s", strerror(-r));
        s->st.retry_after_ms = ps_clock_ms() + PS_SYNC_ERROR_RETRY_MS;
        struct timeval tv = ps_clock_tv(PS_SYNC_ERROR_RETRY_MS);
        evtimer_add(s->ev_wake, &tv);
    }
}

static void step(ps_sync *s)
{
    pool_update(s);
    if (s->busy)
        return;
    const ps_config *cfg = ps_daemon_config(s->d);
    ps_pgconn *c = ps_daemon_main_conn(s->d);
    s->st.now_ms = ps_clock_ms();
    s->st.conn_up = c && ps_pgconn_is_up(c);
    s->st.max_repl_lag_ms = cfg->sync.max_replication_lag_ms;
    /* live: false the moment main's session is gone, before on_leader says so */
    s->st.leader = ps_daemon_is_leader(s->d);

    int64_t wait = -1;
    ps_sync_action a = ps_sync_next(&s->st, &wait);
    char n1[16];
    const char *p[3] = {cfg->migration.id, n1, NULL};
    switch (a) {
    case PS_SYNC_IDLE:
        return;
    case PS_SYNC_WAIT: {
        struct timeval tv = ps_clock_tv(wait);
        evtimer_add(s->ev_wake, &tv);
        return;
    }
    case PS_SYNC_REGISTRY:
        send_query(s, c, a, ps_sync_registry_sql, 1, p, on_registry);
        return;
    case PS_SYNC_PROBE:
        send_query(s, c, a, SQL_PROBE, 1, p, on_probe);
        return;
    case PS_SYNC_APPLY:
        s->st.last_was_backfill = false;
        s->st.apply_pending = false; /* wake-ups from now on set it again */
        s->inflight_limit = cfg->sync.batch_size;
        snprintf(n1, sizeof n1, "%d", cfg->sync.batch_size);
        p[2] = cfg->sync.on_apply_error == PS_ON_APPLY_ERROR_HALT ? "halt" : "quarantine";
        send_query(s, c, a, SQL_APPLY, 3, p, on_apply);
        return;
    case PS_SYNC_ARM:
        send_query(s, c, a, SQL_ARM, 1, p, on_arm);
        return;
    case PS_SYNC_BACKFILL:
        /* one range per table with one worker (a plain key-order copy);
         * four per worker otherwise, so the workers stay busy to the end */
        s->st.last_was_backfill = true;
        s->st.backfill_plan_at_ms = s->st.now_ms + PS_SYNC_PLAN_MS;
        snprintf(n1, sizeof n1, "%d", cfg->sync.workers == 1 ? 1 : 4 * cfg->sync.workers);
        send_query(s, c, a, SQL_PLAN, 2, p, on_plan);
        return;
    }
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    step(arg);
}

/* Something may be waiting in the change log. */
static void apply_wakeup(evutil_socket_t fd, short what, void *arg)
{
    ps_sync *s = arg;
    (void)fd;
    (void)what;
    if (s->st.stopping)
        return;
    s->st.apply_pending = true;
    step(s);
}

static void arm_catchup(ps_sync *s, int64_t ms)
{
    s->catchup_ms = ms > 0 ? ms : 1000;
    struct timeval tv = ps_clock_tv(s->catchup_ms);
    evtimer_del(s->ev_catchup);
    evtimer_add(s->ev_catchup, &tv);
}

/* ---- module callbacks ---- */

static void sync_on_db_up(ps_daemon *d, void *arg)
{
    ps_sync *s = arg;
    (void)d;
    if (s->st.stopping)
        return;
    /* NOTIFYs may have been lost while down: drain regardless, recheck the
     * backfill, measure again. */
    s->st.apply_pending = true;
    s->st.backfill_done = false;
    s->st.backfill_plan_at_ms = 0;
    s->st.probe_at_ms = 0;
    s->st.retry_after_ms = 0;
    s->armed = false;
    if (!evtimer_pending(s->ev_catchup, NULL))
        arm_catchup(s, ps_daemon_config(s->d)->sync.catchup_interval_ms);
    step(s);
}

/* Leadership: everything this module does runs on the leader only. */
static void sync_on_leader(ps_daemon *d, bool leader, void *arg)
{
    ps_sync *s = arg;
    if (!leader) {
        /* The policy idles from now on (st.leader is read live by step);
         * the query in flight, if any, ended with its session. */
        step(s);
        return;
    }
    /* A new leader knows nothing: drain, recheck backfill, measure, and
     * compare the config with the installed registry. */
    s->st.apply_pending = true;
    s->st.backfill_done = false;
    s->st.backfill_plan_at_ms = 0;
    s->bf_planned = false;
    s->st.probe_at_ms = 0;
    s->st.retry_after_ms = 0;
    s->st.registry_check = true;
    s->armed = false;
    ps_log_notice("sync: leader lock acquired for migration %s (backend pid %d); syncing",
                  ps_daemon_config(d)->migration.id, ps_leader_backend_pid(ps_daemon_leader(d)));
    step(s);
}

static void sync_on_notify(ps_daemon *d, const char *channel, const char *payload, void *arg)
{
    ps_sync *s = arg;
    (void)d;
    (void)payload;
    if (s->st.stopping || strcmp(channel, PS_DAEMON_CHANNEL_CHANGES) != 0)
        return;
    /* Coalesce: the first NOTIFY opens a batch_delay window, the ones inside
     * it ride along. */
    if (evtimer_pending(s->ev_delay, NULL))
        return;
    struct timeval tv = ps_clock_tv(ps_daemon_config(s->d)->sync.batch_delay_ms);
    evtimer_add(s->ev_delay, &tv);
}

static void sync_on_reload(ps_daemon *d, const ps_config *old_cfg, const ps_config *new_cfg,
                           void *arg)
{
    ps_sync *s = arg;
    (void)d;
    /* batch_size, batch_delay, backfill_chunk, max_replication_lag,
     * on_apply_error and migration.id are read from the config at each use
     * (migration.id never changes: it is restart-only, config.c). */
    if (old_cfg->sync.catchup_interval_ms != new_cfg->sync.catchup_interval_ms && !s->st.stopping)
        arm_catchup(s, new_cfg->sync.catchup_interval_ms);
    /* workers and chunk_target are read at each chunk; a new conninfo:
     * the workers reconnect with it (pool_update reopens them) */
    if (strcmp(old_cfg->database.conninfo, new_cfg->database.conninfo) != 0 && s->pool)
        ps_bfpool_close(s->pool);
    if (s->st.halted) {
        ps_log_notice("sync: reload: clearing the halt (%s); applying again", s->halted);
        free(s->halted);
        s->halted = NULL;
        s->st.halted = false;
    }
    s->st.apply_pending = true;
    s->st.retry_after_ms = 0;
    s->st.registry_check = true; /* as standby: when it leads (on_leader sets it too) */
    step(s);
}

static void sync_on_stop(ps_daemon *d, void *arg)
{
    ps_sync *s = arg;
    (void)d;
    /* The query in flight (one transaction) finishes; nothing new starts. */
    s->st.stopping = true;
    if (s->pool)
        ps_bfpool_close(s->pool); /* a chunk in flight rolls back; its claim is taken over */
    evtimer_del(s->ev_delay);
    evtimer_del(s->ev_catchup);
    evtimer_del(s->ev_wake);
}

static size_t sync_status(ps_daemon *d, char *buf, size_t len, void *arg)
{
    ps_sync *s = arg;
    /* A standby has nothing to say: the role is the leader's word. */
    if (!ps_daemon_is_leader(d))
        return 0;
    ps_sync_view v = {
        .halted = s->halted,
        .backfill_done = s->st.backfill_done,
        .bf_table = s->bf_table[0] ? s->bf_table : NULL,
        .bf_percent = ps_sync_percent(s->bf_done, s->bf_total, false),
        .bf_eta_ms = ps_sync_eta_ms(s->bf_base_rows, s->bf_base_ms, s->bf_done, s->bf_total,
                                    ps_clock_ms()),
        .throttle = ps_sync_throttle_for(s->st.repl_lag_ms,
                                         ps_daemon_config(s->d)->sync.max_replication_lag_ms),
        .repl_lag_ms = s->st.repl_lag_ms,
        .sync_lag_s = s->sync_lag_s,
        .config_differs = s->config_differs,
    };
    return ps_sync_format_status(&v, buf, len);
}

int ps_sync_new(ps_daemon *d, ps_sync **out)
{
    *out = NULL;
    ps_sync *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->d = d;
    struct event_base *base = ps_daemon_base(d);
    s->ev_delay = evtimer_new(base, apply_wakeup, s);
    s->ev_catchup = event_new(base, -1, EV_PERSIST, apply_wakeup, s);
    s->ev_wake = evtimer_new(base, wake_cb, s);
    if (!s->ev_delay || !s->ev_catchup || !s->ev_wake) {
        ps_sync_free(s);
        return -ENOMEM;
    }
    static const ps_bfpool_callbacks pool_cbs = {.on_chunk = on_chunk, .on_empty = on_empty};
    if (ps_bfpool_new(d, &pool_cbs, s, &s->pool) < 0) {
        ps_sync_free(s);
        return -ENOMEM;
    }
    s->catchup_ms = ps_daemon_config(d)->sync.catchup_interval_ms;
    s->st.repl_lag_ms = -1;
    s->sync_lag_s = -1;
    *out = s;
    return 0;
}

void ps_sync_free(ps_sync *s)
{
    if (!s)
        return;
    struct event *evs[] = {s->ev_delay, s->ev_catchup, s->ev_wake};
    for (size_t i = 0; i < sizeof evs / sizeof *evs; i++)
        if (evs[i])
            event_free(evs[i]);
    ps_bfpool_free(s->pool);
    free(s->halted);
    free(s);
}

const ps_sync_stats *ps_sync_get_stats(const ps_sync *s)
{
    return &s->stats;
}

static int sync_create(ps_daemon *d, void **arg)
{
    ps_sync *s = NULL;
    int r = ps_sync_new(d, &s);
    if (r == 0 && (r = ps_sync_register_commands(ps_daemon_control(d))) < 0) {
        ps_sync_free(s);
        s = NULL;
    }
    *arg = s;
    return r;
}

static void sync_free(void *arg)
{
    ps_sync_free(arg);
}

static void sync_collect(ps_daemon *d, const ps_metric_sink *sink, void *arg)
{
    ps_sync *s = arg;
    (void)d;
    static const ps_metric_counter counters[] = {
        {"pgshadow_sync_apply_batches_total", "apply_batch calls that returned a row",
         offsetof(ps_sync_stats, apply_batches)},
        {"pgshadow_sync_applied_total", "change-log entries applied",
         offsetof(ps_sync_stats, applied)},
        {"pgshadow_sync_quarantined_total", "rows newly quarantined by apply",
         offsetof(ps_sync_stats, quarantined)},
        {"pgshadow_sync_backfill_steps_total", "backfill chunks copied by the worker pool",
         offsetof(ps_sync_stats, backfill_steps)},
        {"pgshadow_sync_backfill_rows_total", "rows copied by the backfill",
         offsetof(ps_sync_stats, backfill_rows)},
        {"pgshadow_sync_errors_total", "failed queries of the sync engine",
         offsetof(ps_sync_stats, errors)},
    };
    ps_metric_counters(sink, &s->stats, counters, sizeof counters / sizeof *counters);
    sink->sample(sink->ctx, "pgshadow_sync_halted", PS_METRIC_GAUGE, s->st.halted ? 1 : 0,
                 "1 while on_apply_error: halt has stopped the apply");
    sink->sample(sink->ctx, "pgshadow_sync_lag_seconds", PS_METRIC_GAUGE, s->sync_lag_s,
                 "age of the oldest change not yet applied (-1: not measured)");
}

const ps_daemon_module ps_sync_module = {
    .name = "sync",
    .create = sync_create,
    .free = sync_free,
    .on_db_up = sync_on_db_up,
    .on_leader = sync_on_leader,
    .on_notify = sync_on_notify,
    .on_reload = sync_on_reload,
    .on_stop = sync_on_stop,
    .status = sync_status,
    .collect = sync_collect,
};
