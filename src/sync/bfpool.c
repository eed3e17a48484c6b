/*
 * sync/bfpool.c - the backfill worker pool (bfpool.h).
 *
 * Owns: up to sync.workers worker connections ("backfill1", ...), each with
 * its state, its retry timer and the claim it holds; one chunk-size
 * controller per table (chunk_policy.h), shared by the workers copying that
 * table.
 *
 * A worker's round: (its connection up, the session settings of the main
 * connection applied in this session) claim -> copy -> report -> claim ...
 *   claim  SELECT * FROM pgshadow.backfill_claim(id, rows): registers the
 *          next interval of a free range as this session's and COMMITS
 *          (autocommit), so apply sees the registration before the copy's
 *          snapshot is taken;
 *   copy   SELECT * FROM pgshadow.backfill_chunk(table_id, range_no): a
 *          second transaction, newer snapshot, copies and ends the claim.
 * rows is the controller's next size for the table this worker copied last
 * (the first chunk of a table: the controller's start size).
 *
 * Invariants:
 *  - nothing runs unless the engine said run (leader, backfill not done,
 *    not throttled); hold stops new claims, close drops every connection;
 *  - at most one query per worker is queued or in flight (w->busy);
 *  - a worker never dies: a lost connection reconnects (pgconn's backoff)
 *    and claims again, and its unfinished claim (a dead session's) is
 *    taken over by the next claim of any worker (the SQL claims dead
 *    sessions' ranges first); a failed query waits PS_BFPOOL_ERROR_RETRY_MS;
 *  - workers above a lowered sync.workers finish their chunk, then close.
 */
#include "pgshadow/bfpool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "pgshadow/chunk_policy.h"
#include "pgshadow/leader.h"
#include "pgshadow/log.h"
#include "pgshadow/util.h"

#define MAX_WORKERS 32

static const char SQL_CLAIM[] =
    "SELECT table_id, range_no, table_name FROM pgshadow.backfill_claim($1, $2::integer)";
static const char SQL_CHUNK[] =
    "SELECT table_name, copied, table_done, rows_done, rows_total "
    "FROM pgshadow.backfill_chunk($1::integer, $2::integer)";

typedef enum { W_OFF = 0, W_SETTINGS, W_IDLE, W_CLAIM, W_COPY, W_WAIT } wstate;

typedef struct worker {
    ps_bfpool *pool;
    int no;                    /* 1.. */
    ps_pgconn *c;
    uint64_t settings_session; /* the session the settings ran in (0: none) */
    wstate st;
    bool busy;                 /* a query of this worker is queued or in flight */
    bool idle_empty;           /* W_WAIT because nothing was claimable (not an error) */
    struct event *ev_retry;
    char table[128];           /* table of the last claim */
    char tid[16], rno[16];
    int64_t started_ms;
    int64_t rows;
} worker;

struct ps_bfpool {
    ps_daemon *d;
    ps_bfpool_callbacks cbs;
    void *arg;
    bool running;
    worker w[MAX_WORKERS];
    ps_chunk_ctls ctls; /* one chunk-size controller per table */
};

static void kick(worker *w);

static ps_chunk_ctl *ctl_for(ps_bfpool *p, const char *table)
{
    /* a reload's new target and bound take effect at the next chunk */
    const ps_config *cfg = ps_daemon_config(p->d);
    return ps_chunk_ctls_get(&p->ctls, table, cfg->sync.chunk_target_ms, cfg->sync.backfill_chunk);
}

static void retry_later(worker *w, int64_t ms)
{
    w->st = W_WAIT;
    w->idle_empty = false;
    struct timeval tv = ps_clock_tv(ms);
    evtimer_add(w->ev_retry, &tv);
}

static bool send_query(worker *w, const char *sql, int n, const char *const *params,
                 ps_pg_result_cb cb)
{
    w->busy = true;
    int r = ps_pgconn_query(w->c, sql, n, params, cb, w);
    if (r < 0) {
        w->busy = false;
        ps_log_error("sync: backfill worker %d: cannot queue a query: %s", w->no, strerror(-r));
        retry_later(w, PS_BFPOOL_ERROR_RETRY_MS);
        return false;
    }
    return true;
}

static void failed(worker *w, const char *what, const PGresult *res)
{
    ps_log_field f[] = {{"CONN", ps_pgconn_name(w->c)}, {NULL, NULL}};
    ps_log_fields(LOG_ERR, f, "sync: backfill worker %d: %s failed: %s %s; retrying in %d ms",
                  w->no, what, ps_pgconn_errfield(res, PG_DIAG_SQLSTATE, "?"),
                  ps_pgconn_errfield(res, PG_DIAG_MESSAGE_PRIMARY, "unknown error"),
                  PS_BFPOOL_ERROR_RETRY_MS);
    retry_later(w, PS_BFPOOL_ERROR_RETRY_MS);
}

/* Work appeared (a claim succeeded, or a table finished and the next depth
 * of tables is open): the workers that found nothing claim again now, not
 * after their PS_BFPOOL_EMPTY_RETRY_MS. */
static void wake_idle(ps_bfpool *p)
{
    for (int i = 0; i < MAX_WORKERS; i++) {
        worker *o = &p->w[i];
        if (o->st == W_WAIT && o->idle_empty) {
            evtimer_del(o->ev_retry);
            o->st = W_IDLE;
            o->idle_empty = false;
            kick(o);
        }
    }
}

static void on_chunk(ps_pgconn *c, const PGresult *res, void *arg)
{
    worker *w = arg;
    (void)c;
    w->busy = false;
    if (!res) { /* the chunk rolled back with the session; its claim is taken over */
        w->st = W_IDLE;
        return; /* on_up kicks */
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        failed(w, "backfill_chunk", res);
        return;
    }
    int64_t now = ps_clock_ms();
    ps_bfpool_chunk ch = {
        .table = PQgetvalue(res, 0, 0),
        .copied = strtoll(PQgetvalue(res, 0, 1), NULL, 10),
        .table_done = strcmp(PQgetvalue(res, 0, 2), "t") == 0,
        .rows_done = PQgetisnull(res, 0, 3) ? 0 : strtoll(PQgetvalue(res, 0, 3), NULL, 10),
        .rows_total = PQgetisnull(res, 0, 4) ? 0 : strtoll(PQgetvalue(res, 0, 4), NULL, 10),
        .elapsed_ms = now - w->started_ms,
    };
    w->st = W_IDLE;
    if (ch.copied >= 0) {
        /* the controller learns from what the chunk asked for (rows), not
         * from what it wrote: equal rows cost the read too */
        ps_chunk_ctl *ctl = ctl_for(w->pool, ch.table);
        if (ps_chunk_ctl_record(ctl, w->rows, ch.elapsed_ms))
            ps_log_info("sync: backfill %s: a chunk of %lld rows took %lld ms (target %lld ms): "
                        "next chunks %lld rows",
                        ch.table, (long long)w->rows, (long long)ch.elapsed_ms,
                        (long long)ps_daemon_config(w->pool->d)->sync.chunk_target_ms,
                        (long long)ps_chunk_ctl_next(ctl));
        if (w->pool->cbs.on_chunk)
            w->pool->cbs.on_chunk(&ch, w->pool->arg);
    }
    kick(w);
    if (ch.table_done)
        wake_idle(w->pool);
}

static void on_claim(ps_pgconn *c, const PGresult *res, void *arg)
{
    worker *w = arg;
    (void)c;
    w->busy = false;
    if (!res) {
        w->st = W_IDLE;
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        failed(w, "backfill_claim", res);
        return;
    }
    if (PQntuples(res) == 0) {
        retry_later(w, PS_BFPOOL_EMPTY_RETRY_MS);
        w->idle_empty = true;
        if (w->pool->cbs.on_empty)
            w->pool->cbs.on_empty(w->pool->arg);
        return;
    }
    snprintf(w->tid, sizeof w->tid, "%s", PQgetvalue(res, 0, 0));
    snprintf(w->rno, sizeof w->rno, "%s", PQgetvalue(res, 0, 1));
    const char *table = PQgetvalue(res, 0, 2);
    if (strcmp(table, w->table) != 0) {
        /* the claim sized the chunk for the last table: fine once; the next
         * claim uses this table's controller */
        snprintf(w->table, sizeof w->table, "%s", table);
    }
    w->st = W_COPY;
    const char *p[2] = {w->tid, w->rno};
    send_query(w, SQL_CHUNK, 2, p, on_chunk);
    wake_idle(w->pool);
}

static void on_settings(ps_pgconn *c, const PGresult *res, void *arg)
{
    worker *w = arg;
    w->busy = false;
    if (!res) {
        w->st = W_IDLE;
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        failed(w, "session settings", res);
        return;
    }
    w->settings_session = ps_pgconn_session_id(c);
    w->st = W_IDLE;
    kick(w);
}

static void close_worker(worker *w)
{
    if (w->c) {
        ps_pgconn_free(w->c); /* an open transaction rolls back with the session */
        w->c = NULL;
    }
    if (w->ev_retry)
        evtimer_del(w->ev_retry);
    w->busy = false;
    w->settings_session = 0;
    w->st = W_OFF;
}

static void conn_up(ps_pgconn *c, void *arg)
{
    worker *w = arg;
    (void)c;
    kick(w);
}

static void conn_down(ps_pgconn *c, const char *reason, void *arg)
{
    worker *w = arg;
    ps_log_field f[] = {{"CONN", ps_pgconn_name(c)}, {NULL, NULL}};
    ps_log_fields(LOG_WARNING, f, "sync: backfill worker %d: connection lost: %s; reconnecting "
                  "(its chunk, if any, is claimed again)", w->no, reason);
}

static bool open_worker(worker *w)
{
    static const ps_pgconn_callbacks cbs = {.on_up = conn_up, .on_down = conn_down};
    char name[24];
    snprintf(name, sizeof name, "backfill%d", w->no);
    w->c = ps_daemon_open_conn(w->pool->d, name, &cbs, w);
    if (!w->c)
        return false;
    w->st = W_IDLE;
    return true;
}

/* Whatever this worker should do next, now. */
static void kick(worker *w)
{
    ps_bfpool *p = w->pool;
    if (w->busy || (w->st == W_WAIT && evtimer_pending(w->ev_retry, NULL)))
        return;
    if (!p->running || w->no > ps_daemon_config(p->d)->sync.workers) {
        if (w->no > ps_daemon_config(p->d)->sync.workers && w->c)
            close_worker(w); /* above a lowered sync.workers: idle now, close */
        return;
    }
    if (!w->c && !open_worker(w))
        return;
    if (!ps_pgconn_is_up(w->c))
        return; /* conn_up kicks */
    if (w->settings_session != ps_pgconn_session_id(w->c)) {
        w->st = W_SETTINGS;
        w->busy = true;
        if (ps_leader_session_settings(p->d, w->c, on_settings, w) < 0) {
            w->busy = false;
            retry_later(w, PS_BFPOOL_ERROR_RETRY_MS);
        }
        return;
    }
    w->rows = w->table[0] ? ps_chunk_ctl_next(ctl_for(p, w->table)) : PS_CHUNK_START_ROWS;
    if (w->rows > ps_daemon_config(p->d)->sync.backfill_chunk)
        w->rows = ps_daemon_config(p->d)->sync.backfill_chunk;
    char rows[24];
    snprintf(rows, sizeof rows, "%lld", (long long)w->rows);
    const char *params[2] = {ps_daemon_config(p->d)->migration.id, rows};
    w->st = W_CLAIM;
    w->started_ms = ps_clock_ms();
    send_query(w, SQL_CLAIM, 2, params, on_claim);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    worker *w = arg;
    (void)fd;
    (void)what;
    w->st = W_IDLE;
    kick(w);
}

int ps_bfpool_new(ps_daemon *d, const ps_bfpool_callbacks *cbs, void *arg, ps_bfpool **out)
{
    *out = NULL;
    ps_bfpool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->d = d;
    p->cbs = *cbs;
    p->arg = arg;
    for (int i = 0; i < MAX_WORKERS; i++) {
        p->w[i].pool = p;
        p->w[i].no = i + 1;
        p->w[i].ev_retry = evtimer_new(ps_daemon_base(d), retry_cb, &p->w[i]);
        if (!p->w[i].ev_retry) {
            ps_bfpool_free(p);
            return -ENOMEM;
        }
    }
    *out = p;
    return 0;
}

void ps_bfpool_free(ps_bfpool *p)
{
    if (!p)
        return;
    for (int i = 0; i < MAX_WORKERS; i++) {
        close_worker(&p->w[i]);
        if (p->w[i].ev_retry)
            event_free(p->w[i].ev_retry);
    }
    free(p);
}

void ps_bfpool_run(ps_bfpool *p)
{
    p->running = true;
    for (int i = 0; i < MAX_WORKERS; i++)
        if (p->w[i].c || p->w[i].no <= ps_daemon_config(p->d)->sync.workers)
            kick(&p->w[i]);
}

void ps_bfpool_hold(ps_bfpool *p)
{
    p->running = false;
}

void ps_bfpool_close(ps_bfpool *p)
{
    p->running = false;
    for (int i = 0; i < MAX_WORKERS; i++)
        close_worker(&p->w[i]);
}

int ps_bfpool_busy(const ps_bfpool *p)
{
    int n = 0;
    for (int i = 0; i < MAX_WORKERS; i++)
        n += p->w[i].busy && (p->w[i].st == W_CLAIM || p->w[i].st == W_COPY);
    return n;
}
