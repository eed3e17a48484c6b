/*
 * verify/verifier.c - the verifier module (verifier.h): verify passes,
 * second looks and repairs on connections of its own, while this daemon
 * leads.
 *
 * Owns: up to sync.workers worker connections ("verify1", ...), each with
 * its state and retry timer (worker 1 always while leading; the others only
 * while a pass has chunks: a digested chunk or verify_start's NOTIFY wakes
 * them, they park, connection closed, when idle); one chunk-size controller
 * per table (chunk_policy.h, aiming a chunk at sync.chunk_target, at most
 * verify.chunk_rows rows); the command handler "verify"; the counters.
 *
 * Invariants:
 *  - nothing runs unless this daemon leads; leadership lost or a stop
 *    closes every worker connection (a chunk in flight rolls back: its
 *    range is taken again, its keys were not queued);
 *  - at most one query per worker is queued or in flight (w->busy);
 *  - a worker never dies: a lost connection reconnects (pgconn's backoff),
 *    a failed query waits PS_VERIFY_ERROR_RETRY_MS;
 *  - every decision about the data (what differs, what is pending, when a
 *    key is a divergence, what is repaired) is the database's
 *    (sql/85-verify.sql): this file only schedules calls and reports.
 */
#include "pgshadow/verifier.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "pgshadow/chunk_policy.h"
#include "pgshadow/control.h"
#include "pgshadow/leader.h"
#include "pgshadow/log.h"
#include "pgshadow/util.h"

#define MAX_WORKERS 32

static const char SQL_CONFIGURE[] = "SELECT pgshadow.verify_configure($1, $2::boolean, $3::boolean)";
static const char SQL_START[] =
    "SELECT pgshadow.verify_start($1, NULL, $2::integer, NULL, make_interval(secs => $3::float8 / 1000))";
static const char SQL_STEP[] =
    "SELECT pass_id, table_name, checked, differs, suspects, pass_done, summary, writes "
    "FROM pgshadow.verify_step($1, $2::integer)";
static const char SQL_RECHECK[] =
    "SELECT table_name, checked, cleared, pending, diverged, repaired, unrepaired, keys "
    "FROM pgshadow.verify_recheck($1, $2::integer)";

typedef struct ps_verifier ps_verifier;

typedef struct worker {
    ps_verifier *v;
    int no; /* 1.. */
    ps_pgconn *c;
    uint64_t settings_session;
    bool busy;
    bool waiting; /* ev_retry armed */
    bool parked;  /* workers 2..: no connection while there is nothing to digest */
    ps_verify_action last;
    bool last_found_work;
    struct event *ev_retry;
    char table[128]; /* table of the last chunk */
    int64_t rows;    /* rows asked for by the step in flight */
    int64_t started_ms;
} worker;

typedef struct ps_verify_stats {
    uint64_t chunks, rows, chunks_differ, suspects, passes, diverged, repaired, unrepaired, errors, paused_ms;
} ps_verify_stats;

struct ps_verifier {
    ps_daemon *d;
    bool leader, stopping;
    bool configured;            /* the database has the settings below */
    int64_t start_check_at_ms;  /* worker 1 asks for the timer's pass then */
    worker w[MAX_WORKERS];
    ps_chunk_ctls ctls; /* one chunk-size controller per table */
    int64_t pass_id;     /* the pass the workers last worked on (0: none seen) */
    char last_summary[256];
    ps_verify_stats stats;
    /* the verify command's parameters (copied by the control module) */
    char cmd_ranges[16], cmd_id[24], cmd_who[128];
};

static void kick(worker *w);
static void wake_parked(ps_verifier *v);

static int ranges_for(const ps_config *cfg)
{
    /* as the backfill: one range a table with one worker, else 4 a worker */
    return cfg->sync.workers <= 1 ? 1 : 4 * cfg->sync.workers;
}

static ps_chunk_ctl *ctl_for(ps_verifier *v, const char *table)
{
    const ps_config *cfg = ps_daemon_config(v->d);
    return ps_chunk_ctls_get(&v->ctls, table, cfg->sync.chunk_target_ms, cfg->verify.chunk_rows);
}

static void wait_then(worker *w, int64_t ms)
{
    w->waiting = true;
    struct timeval tv = ps_clock_tv(ms);
    evtimer_add(w->ev_retry, &tv);
}

static void failed(worker *w, const char *what, const PGresult *res)
{
    ps_log_field f[] = {{"CONN", ps_pgconn_name(w->c)}, {NULL, NULL}};
    ps_log_fields(LOG_ERR, f, "verify: worker %d: %s failed: %s %s; retrying in %d ms", w->no, what,
                  ps_pgconn_errfield(res, PG_DIAG_SQLSTATE, "?"),
                  ps_pgconn_errfield(res, PG_DIAG_MESSAGE_PRIMARY, "unknown error"),
                  PS_VERIFY_ERROR_RETRY_MS);
    w->v->stats.errors++;
    w->last = PS_VERIFY_IDLE;
    wait_then(w, PS_VERIFY_ERROR_RETRY_MS);
}

static int64_t num(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* A query of worker w came back: common checks. False when handled here
 * (the session went away, or an error). */
static bool result_ok(worker *w, const PGresult *res, const char *what)
{
    w->busy = false;
    if (!res)
        return false; /* the session ended; conn_up kicks */
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        failed(w, what, res);
        return false;
    }
    return true;
}

static void on_configure(ps_pgconn *c, const PGresult *res, void *arg)
{
    worker *w = arg;
    (void)c;
    if (!result_ok(w, res, "verify_configure"))
        return;
    w->v->configured = true;
    w->last = PS_VERIFY_CONFIGURE;
    kick(w);
}

static void on_start(ps_pgconn *c, const PGresult *res, void *arg)
{
    worker *w = arg;
    (void)c;
    if (!result_ok(w, res, "verify_start"))
        return;
    w->v->start_check_at_ms = ps_clock_ms() + PS_VERIFY_START_CHECK_MS;
    if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) && num(res, 0, 0) != w->v->pass_id) {
        w->v->pass_id = num(res, 0, 0);
        ps_log_info("verify: pass %lld running", (long long)w->v->pass_id);
    }
    w->last = PS_VERIFY_START;
    kick(w);
}

static void on_step(ps_pgconn *c, const PGresult *res, void *arg)
{
    worker *w = arg;
    ps_verifier *v = w->v;
    (void)c;
    if (!result_ok(w, res, "verify_step"))
        return;
    w->last = PS_VERIFY_STEP;
    w->last_found_work = PQntuples(res) == 1 && !PQgetisnull(res, 0, 1);
    int64_t pause = 0;
    if (PQntuples(res) == 1) {
        int64_t pass = num(res, 0, 0);
        if (pass != v->pass_id) {
            v->pass_id = pass;
            ps_log_info("verify: pass %lld running", (long long)pass);
        }
        if (!PQgetisnull(res, 0, 1)) {
            const char *table = PQgetvalue(res, 0, 1);
            int64_t checked = num(res, 0, 2), suspects = num(res, 0, 4);
            bool differs = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
            v->stats.chunks++;
            v->stats.rows += (uint64_t)checked;
            v->stats.chunks_differ += differs;
            v->stats.suspects += (uint64_t)suspects;
            int64_t took = ps_clock_ms() - w->started_ms;
            ps_chunk_ctl_record(ctl_for(v, table), w->rows, took);
            pause = ps_verify_pause_ms(took, strcmp(PQgetvalue(res, 0, 7), "t") == 0);
            snprintf(w->table, sizeof w->table, "%s", table);
            wake_parked(v); /* a pass with chunks: every worker digests */
            if (differs)
                ps_log_info("verify: %s: a chunk of %lld rows differs: %lld key(s) to look at again",
                            table, (long long)checked, (long long)suspects);
        }
        if (strcmp(PQgetvalue(res, 0, 5), "t") == 0) {
            v->stats.passes++;
            snprintf(v->last_summary, sizeof v->last_summary, "pass %lld finished: %s", (long long)pass,
                     PQgetvalue(res, 0, 6));
            ps_log_notice("verify: %s", v->last_summary);
        }
    }
    if (pause > 0) {
        v->stats.paused_ms += (uint64_t)pause;
        wait_then(w, pause); /* then the next chunk (last is STEP, work found) */
        return;
    }
    kick(w);
}

static void on_recheck(ps_pgconn *c, const PGresult *res, void *arg)
{
    worker *w = arg;
    ps_verifier *v = w->v;
    (void)c;
    if (!result_ok(w, res, "verify_recheck"))
        return;
    w->last = PS_VERIFY_RECHECK;
    w->last_found_work = PQntuples(res) > 0;
    /* keys to look at come from applications' writes (apply queued them):
     * the worker rests as after a chunk, so a steady stream of second looks
     * takes at most about half a core from apply and the writers */
    int64_t pause = w->last_found_work ? ps_verify_pause_ms(ps_clock_ms() - w->started_ms, true) : 0;
    for (int i = 0; i < PQntuples(res); i++) {
        if (PQgetisnull(res, i, 0)) { /* a pass this call finished: its summary */
            v->stats.passes++;
            snprintf(v->last_summary, sizeof v->last_summary, "%s", PQgetvalue(res, i, 7));
            ps_log_notice("verify: %s", PQgetvalue(res, i, 7));
            continue;
        }
        const char *table = PQgetvalue(res, i, 0);
        int64_t diverged = num(res, i, 4), repaired = num(res, i, 5), unrepaired = num(res, i, 6);
        const char *keys = PQgetisnull(res, i, 7) ? "" : PQgetvalue(res, i, 7);
        v->stats.diverged += (uint64_t)diverged;
        v->stats.repaired += (uint64_t)repaired;
        v->stats.unrepaired += (uint64_t)unrepaired;
        ps_log_field f[] = {{"PGSHADOW_TABLE", table}, {NULL, NULL}};
        if (diverged > 0 || unrepaired > 0)
            ps_log_fields(LOG_WARNING, f, "verify: %s: %lld row(s) diverged, %lld unrepaired: %s%s", table,
                          (long long)diverged, (long long)unrepaired, keys,
                          ps_daemon_config(v->d)->verify.repair && unrepaired == 0
                              ? " (repairing through apply)" : "");
        if (repaired > 0)
            ps_log_fields(LOG_NOTICE, f, "verify: %s: %lld diverged row(s) now equal (repaired)", table,
                          (long long)repaired);
    }
    if (pause > 0) {
        v->stats.paused_ms += (uint64_t)pause;
        wait_then(w, pause); /* then the next chunk, or more keys */
        return;
    }
    kick(w);
}

static void on_settings(ps_pgconn *c, const PGresult *res, void *arg)
{
    worker *w = arg;
    if (!result_ok(w, res, "session settings"))
        return;
    w->settings_session = ps_pgconn_session_id(c);
    kick(w);
}

static bool send_query(worker *w, const char *sql, int n, const char *const *params, ps_pg_result_cb cb)
{
    w->busy = true;
    int r = ps_pgconn_query(w->c, sql, n, params, cb, w);
    if (r < 0) {
        w->busy = false;
        ps_log_error("verify: worker %d: cannot queue a query: %s", w->no, strerror(-r));
        wait_then(w, PS_VERIFY_ERROR_RETRY_MS);
        return false;
    }
    return true;
}

static void close_worker(worker *w)
{
    if (w->c) {
        ps_pgconn_free(w->c);
        w->c = NULL;
    }
    if (w->ev_retry)
        evtimer_del(w->ev_retry);
    w->busy = false;
    w->waiting = false;
    w->settings_session = 0;
    w->last = PS_VERIFY_IDLE;
}

static void conn_up(ps_pgconn *c, void *arg)
{
    (void)c;
    kick(arg);
}

static void conn_down(ps_pgconn *c, const char *reason, void *arg)
{
    worker *w = arg;
    ps_log_field f[] = {{"CONN", ps_pgconn_name(c)}, {NULL, NULL}};
    ps_log_fields(LOG_WARNING, f, "verify: worker %d: connection lost: %s; reconnecting", w->no, reason);
}

static bool open_worker(worker *w)
{
    static const ps_pgconn_callbacks cbs = {.on_up = conn_up, .on_down = conn_down};
    char name[24];
    snprintf(name, sizeof name, "verify%d", w->no);
    w->c = ps_daemon_open_conn(w->v->d, name, &cbs, w);
    return w->c != NULL;
}

/* Whatever worker w should do next, now. */
static void kick(worker *w)
{
    ps_verifier *v = w->v;
    const ps_config *cfg = ps_daemon_config(v->d);
    if (w->busy || w->waiting || w->parked)
        return;
    if (!v->leader || v->stopping || w->no > cfg->sync.workers) {
        if (w->c)
            close_worker(w);
        return;
    }
    if (!w->c && !open_worker(w))
        return;
    if (!ps_pgconn_is_up(w->c))
        return; /* conn_up kicks */
    if (w->settings_session != ps_pgconn_session_id(w->c)) {
        w->busy = true;
        if (ps_leader_session_settings(v->d, w->c, on_settings, w) < 0) {
            w->busy = false;
            wait_then(w, PS_VERIFY_ERROR_RETRY_MS);
        }
        return;
    }
    ps_verify_input in = {
        .worker = w->no,
        .configured = v->configured,
        .interval_on = cfg->verify.interval_ms > 0,
        .now_ms = ps_clock_ms(),
        .start_check_at_ms = v->start_check_at_ms,
        .last = w->last,
        .last_found_work = w->last_found_work,
    };
    const char *mig = cfg->migration.id;
    switch (ps_verify_next(&in)) {
    case PS_VERIFY_CONFIGURE: {
        const char *p[3] = {mig, cfg->verify.interval_ms > 0 ? "true" : "false",
                            cfg->verify.repair ? "true" : "false"};
        send_query(w, SQL_CONFIGURE, 3, p, on_configure);
        return;
    }
    case PS_VERIFY_START: {
        char ranges[16], every[32];
        snprintf(ranges, sizeof ranges, "%d", ranges_for(cfg));
        snprintf(every, sizeof every, "%lld", (long long)cfg->verify.interval_ms);
        const char *p[3] = {mig, ranges, every};
        send_query(w, SQL_START, 3, p, on_start);
        return;
    }
    case PS_VERIFY_STEP: {
        w->rows = w->table[0] ? ps_chunk_ctl_next(ctl_for(v, w->table)) : PS_CHUNK_START_ROWS;
        if (w->rows > cfg->verify.chunk_rows)
            w->rows = cfg->verify.chunk_rows;
        char rows[24];
        snprintf(rows, sizeof rows, "%lld", (long long)w->rows);
        const char *p[2] = {mig, rows};
        w->started_ms = ps_clock_ms();
        send_query(w, SQL_STEP, 2, p, on_step);
        return;
    }
    case PS_VERIFY_RECHECK: {
        char lim[16];
        snprintf(lim, sizeof lim, "%d", PS_VERIFY_RECHECK_KEYS);
        const char *p[2] = {mig, lim};
        w->started_ms = ps_clock_ms();
        send_query(w, SQL_RECHECK, 2, p, on_recheck);
        return;
    }
    case PS_VERIFY_IDLE:
        w->last = PS_VERIFY_IDLE;
        if (w->no > 1) {
            /* worker 1 watches alone (timer, due keys) and wakes the
             * others when a pass has chunks: no idle connections */
            close_worker(w);
            w->parked = true;
            return;
        }
        wait_then(w, PS_VERIFY_IDLE_MS);
        return;
    }
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    worker *w = arg;
    (void)fd;
    (void)what;
    w->waiting = false;
    kick(w);
}

static void kick_all(ps_verifier *v)
{
    for (int i = 0; i < MAX_WORKERS; i++)
        if (v->w[i].c || v->w[i].no <= ps_daemon_config(v->d)->sync.workers)
            kick(&v->w[i]);
}

/* The parked workers connect and digest (a pass has chunks). */
static void wake_parked(ps_verifier *v)
{
    for (int i = 0; i < MAX_WORKERS; i++)
        if (v->w[i].parked) {
            v->w[i].parked = false;
            kick(&v->w[i]);
        }
}

/* Idle workers look now (a command started a pass). */
static void wake_idle(ps_verifier *v)
{
    for (int i = 0; i < MAX_WORKERS; i++) {
        worker *w = &v->w[i];
        if (w->waiting && w->last == PS_VERIFY_IDLE) {
            evtimer_del(w->ev_retry);
            w->waiting = false;
            kick(w);
        }
    }
}

/* ---- the command "verify" (pgshadowctl verify [TABLE]) ---- */

static void verify_result(const PGresult *res, char *out, size_t len)
{
    snprintf(out, len, "verify pass %s", PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ? PQgetvalue(res, 0, 0)
                                                                                         : "?");
}

/* {"table": NAME} or {}: start a pass (or join the one running). */
static int verify_command(const ps_control_cmd *cmd, ps_control_action *act, char *why, size_t whylen,
                          void *arg)
{
    ps_verifier *v = arg;
    (void)why;
    (void)whylen;
    const ps_config *cfg = ps_daemon_config(v->d);
    snprintf(v->cmd_ranges, sizeof v->cmd_ranges, "%d", ranges_for(cfg));
    snprintf(v->cmd_id, sizeof v->cmd_id, "%lld", (long long)cmd->id);
    snprintf(v->cmd_who, sizeof v->cmd_who, "%s", cmd->requested_by);
    act->sql = "SELECT pgshadow.verify_start($1, $2::jsonb ->> 'table', $3::integer, $4::bigint, NULL, $5)";
    act->nparams = 5;
    act->params[0] = cfg->migration.id;
    act->params[1] = cmd->args;
    act->params[2] = v->cmd_ranges;
    act->params[3] = v->cmd_id;
    act->params[4] = v->cmd_who;
    act->format = verify_result;
    return 0; /* verify_start's NOTIFY wakes the workers once this commits */
}

/* ---- module hooks ---- */

/* verify_start NOTIFYs pgshadow_control with 'verify' when it opens a pass:
 * every worker looks now. */
static void verify_on_notify(ps_daemon *d, const char *channel, const char *payload, void *arg)
{
    ps_verifier *v = arg;
    (void)d;
    if (!v->leader || v->stopping || strcmp(channel, PS_DAEMON_CHANNEL_CONTROL) != 0 || !payload ||
        strcmp(payload, "verify") != 0)
        return;
    wake_idle(v);
    wake_parked(v);
}

static void verify_on_leader(ps_daemon *d, bool leader, void *arg)
{
    ps_verifier *v = arg;
    (void)d;
    v->leader = leader;
    if (!leader) {
        for (int i = 0; i < MAX_WORKERS; i++)
            close_worker(&v->w[i]);
        return;
    }
    v->configured = false;
    v->start_check_at_ms = 0;
    for (int i = 1; i < MAX_WORKERS; i++)
        v->w[i].parked = true; /* worker 1 wakes them when there are chunks */
    kick_all(v);
}

static void verify_on_reload(ps_daemon *d, const ps_config *old_cfg, const ps_config *new_cfg, void *arg)
{
    ps_verifier *v = arg;
    (void)d;
    if (old_cfg->verify.interval_ms != new_cfg->verify.interval_ms ||
        old_cfg->verify.repair != new_cfg->verify.repair)
        v->configured = false;
    v->start_check_at_ms = 0;
    if (strcmp(old_cfg->database.conninfo, new_cfg->database.conninfo) != 0)
        for (int i = 0; i < MAX_WORKERS; i++)
            close_worker(&v->w[i]);
    kick_all(v); /* opens the new workers, closes those above a lowered sync.workers when idle */
}

static void verify_on_stop(ps_daemon *d, void *arg)
{
    ps_verifier *v = arg;
    (void)d;
    v->stopping = true;
    for (int i = 0; i < MAX_WORKERS; i++)
        close_worker(&v->w[i]);
}

static size_t verify_status(ps_daemon *d, char *buf, size_t len, void *arg)
{
    ps_verifier *v = arg;
    if (!ps_daemon_is_leader(d) || (v->stats.passes == 0 && v->pass_id == 0))
        return 0;
    int n = v->stats.passes > 0 && v->last_summary[0]
                ? snprintf(buf, len, "verify: %s", v->last_summary)
                : snprintf(buf, len, "verify pass %lld running", (long long)v->pass_id);
    return n < 0 ? 0 : (size_t)n >= len ? len - 1 : (size_t)n;
}

static void verify_collect(ps_daemon *d, const ps_metric_sink *sink, void *arg)
{
    ps_verifier *v = arg;
    (void)d;
    static const ps_metric_counter counters[] = {
        {"pgshadow_verify_chunks_total", "chunks digested by verify passes", offsetof(ps_verify_stats, chunks)},
        {"pgshadow_verify_rows_total", "primary rows digested by verify passes", offsetof(ps_verify_stats, rows)},
        {"pgshadow_verify_chunks_differ_total", "chunks whose two digests differed",
         offsetof(ps_verify_stats, chunks_differ)},
        {"pgshadow_verify_suspects_total", "keys queued for a second look by passes",
         offsetof(ps_verify_stats, suspects)},
        {"pgshadow_verify_passes_total", "verify passes finished by this daemon",
         offsetof(ps_verify_stats, passes)},
        {"pgshadow_verify_diverged_total", "keys found diverged (after a second look)",
         offsetof(ps_verify_stats, diverged)},
        {"pgshadow_verify_repaired_total", "diverged keys found equal again",
         offsetof(ps_verify_stats, repaired)},
        {"pgshadow_verify_unrepaired_total", "diverged keys given up on after three repairs",
         offsetof(ps_verify_stats, unrepaired)},
        {"pgshadow_verify_errors_total", "failed queries of the verifier", offsetof(ps_verify_stats, errors)},
        {"pgshadow_verify_paused_ms_total", "milliseconds verify workers rested between chunks while applications wrote",
         offsetof(ps_verify_stats, paused_ms)},
    };
    ps_metric_counters(sink, &v->stats, counters, sizeof counters / sizeof *counters);
}

static void verify_free(void *arg)
{
    ps_verifier *v = arg;
    if (!v)
        return;
    for (int i = 0; i < MAX_WORKERS; i++) {
        close_worker(&v->w[i]);
        if (v->w[i].ev_retry)
            event_free(v->w[i].ev_retry);
    }
    free(v);
}

static int verify_create(ps_daemon *d, void **arg)
{
    ps_verifier *v = calloc(1, sizeof *v);
    if (!v)
        return -ENOMEM;
    v->d = d;
    for (int i = 0; i < MAX_WORKERS; i++) {
        v->w[i].v = v;
        v->w[i].no = i + 1;
        v->w[i].last = PS_VERIFY_IDLE;
        v->w[i].ev_retry = evtimer_new(ps_daemon_base(d), retry_cb, &v->w[i]);
        if (!v->w[i].ev_retry) {
            verify_free(v);
            return -ENOMEM;
        }
    }
    ps_control *c = ps_daemon_control(d);
    int r = c ? ps_control_register(c, "verify", verify_command, v) : 0;
    if (r < 0) {
        verify_free(v);
        return r;
    }
    *arg = v;
    return 0;
}

const ps_daemon_module ps_verify_module = {
    .name = "verify",
    .create = verify_create,
    .free = verify_free,
    .on_leader = verify_on_leader,
    .on_notify = verify_on_notify,
    .on_reload = verify_on_reload,
    .on_stop = verify_on_stop,
    .status = verify_status,
    .collect = verify_collect,
};
