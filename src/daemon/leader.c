/*
 * daemon/leader.c - the leader lock and the sessions it lives in (leader.h).
 *
 * Owns the ps_leader: the lock's state (the session id it is held in, the
 * backend pid and start time of that session), the session settings of the
 * daemon's main and work connections (which session each last ran in), the
 * one query it has in flight, the retry timer, and its counters. The
 * connections themselves are the daemon's; this module only queries them.
 *
 * The steps are chosen by the pure policy (leader_policy.c): settings, then
 * the lock attempt every PS_LEADER_LOCK_RETRY_MS while standby; when an
 * attempt finds our own previous session holding the lock (a connection lost
 * only on our side: the server still has the session), that session is
 * terminated and the lock taken at once.
 *
 * Invariants:
 *  - leadership is a fact about the main connection's current session:
 *    ps_leader_is_leader compares session ids (ps_pgconn_session_id never
 *    repeats, unlike a connection's address after a conninfo reload), so it
 *    is false the moment the session is gone, before any callback runs;
 *  - the change callback is told each change exactly once, from step(),
 *    which every result, timer and kick ends in;
 *  - at most one query of this module is queued or in flight (l->busy); a
 *    NULL result (connection lost) is never fatal: the next kick, when the
 *    connection is back, starts again with the settings;
 *  - the work connection gets the same settings as main, and nothing else
 *    (the dashboard poller and the read sampler use it, so long reads never
 *    queue ahead of apply_batch on main).
 *
 * Its three queries stay here, not in sql/: they must run before pgshadow
 * is installed (a daemon started first waits as leader for the install) and
 * whatever version is installed, touch only the catalog and copy no SQL
 * function of pgshadow's.
 */
#include "pgshadow/leader.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pgshadow/log.h"
#include "pgshadow/util.h"

static const char SQL_LOCK[] =
    "WITH k AS (SELECT pg_catalog.hashtextextended('pgshadow:' || $1, 0) AS key) "
    "SELECT pg_catalog.pg_try_advisory_lock(k.key), pg_catalog.pg_backend_pid(), "
    "       (SELECT l.pid FROM pg_catalog.pg_locks l "
    "         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "           AND l.database = (SELECT oid FROM pg_catalog.pg_database "
    "                              WHERE datname = pg_catalog.current_database()) "
    "           AND ((l.classid::bigint << 32) | l.objid::bigint) = k.key "
    "           AND l.pid <> pg_catalog.pg_backend_pid() LIMIT 1), "
    "       (SELECT extract(epoch FROM a.backend_start)::text FROM pg_catalog.pg_stat_activity a "
    "         WHERE a.pid = pg_catalog.pg_backend_pid()) "
    "FROM k";

/* Once per session of the main and the work connection, before anything
 * else (on main: before the leader lock): the server's own keepalives and
 * TCP user timeout, so a session whose client vanished without a FIN (only
 * the client side of the network dropped) is closed by the server within
 * about a minute instead of ~2 h, and its leader lock with it;
 * idle_session_timeout for a client that is gone but whose TCP path still
 * answers; statement_timeout as a per-query deadline (docs/sync.md
 * "Timeouts"); READ COMMITTED whatever the database's default (apply_batch
 * and backfill_step refuse anything else: each of their statements must see
 * what committed before the sync lock was granted); jit off: the daemon's
 * statements are short and planned often, and the planner's row estimates
 * of a bloated pgshadow.tables (rewritten on every apply) crossed the JIT
 * cost threshold, so a dashboard poll spent 1.5-2.4 s compiling (the
 * cutover's gates waited for it); client_connection_check_interval (PG 14+)
 * 1 s: a statement of a daemon that died (SIGKILL, OOM) is cancelled within
 * a second, its transaction rolled back and the leader lock freed, instead
 * of running to its end: a promote's attempts went on for 7-8 s after the
 * kill (test-promote), holding the leader lock, and one that got its locks
 * could still commit with no daemon to see it. All user-settable; on Unix
 * sockets the TCP ones are ignored by the server. */
static const char SQL_SESSION[] =
    /* only the settings this server has (idle_session_timeout is PG 14+), so
     * one unknown name cannot make the whole statement, and the others, fail */
    "SELECT count(pg_catalog.set_config(v.name, v.val, false)) "
    "FROM (VALUES ('tcp_keepalives_idle', '10'), ('tcp_keepalives_interval', '5'), "
    "             ('tcp_keepalives_count', '3'), ('tcp_user_timeout', '30000'), "
    "             ('idle_session_timeout', $1::text), ('statement_timeout', $2::text), "
    "             ('default_transaction_isolation', 'read committed'), ('jit', 'off'), "
    "             ('client_connection_check_interval', '1000')) v(name, val) "
    "JOIN pg_catalog.pg_settings s ON s.name = v.name";

/* Our own previous session (same pid and start time as when it took the
 * lock) still holds the leader lock: the server has not noticed that its
 * client is gone. The same role may terminate it. */
static const char SQL_TERMINATE[] =
    "SELECT pg_catalog.pg_terminate_backend(a.pid, 5000) FROM pg_catalog.pg_stat_activity a "
    "WHERE a.pid = $1::integer AND extract(epoch FROM a.backend_start)::text = $2";

struct ps_leader {
    ps_daemon *d;
    ps_leader_change_cb cb;
    void *cb_arg;
    struct event *ev_wake; /* the policy's next deadline, or a kick (one-shot) */

    ps_leader_state st; /* stopping, terminate_wanted, lock_retry_at_ms kept; the rest derived */
    ps_leader_role role;
    bool told;       /* what cb was last told */
    bool busy;

    uint64_t lock_session;          /* the lock is held in this session (0: none) */
    uint64_t main_settings_session; /* SQL_SESSION ran in these sessions (0: none) */
    uint64_t work_settings_session;
    int backend_pid;       /* of lock_session */
    int lock_holder_pid;   /* standby: who holds it (for the log), 0 unknown */
    int leader_pid;        /* backend pid and start time (epoch text) of the */
    char leader_start[40]; /* session that last took the lock; 0 = none */

    ps_leader_stats stats;
};

static void step(ps_leader *l);

/* The lock key. The config's, read at each use: migration.id is restart-only
 * (config.c), so a reload never changes it under a held lock. */
static const char *migration_id(const ps_leader *l)
{
    return ps_daemon_config(l->d)->migration.id;
}

static uint64_t session_of(ps_pgconn *c)
{
    return c && ps_pgconn_is_up(c) ? ps_pgconn_session_id(c) : 0;
}

bool ps_leader_is_leader(const ps_leader *l)
{
    return l && l->lock_session != 0 && session_of(ps_daemon_main_conn(l->d)) == l->lock_session;
}

/* Tell the daemon when leadership changed since it was last told. */
static void tell(ps_leader *l)
{
    bool now = ps_leader_is_leader(l);
    if (now == l->told)
        return;
    l->told = now;
    if (!now) {
        /* Reconnected, replaced on reload, or lost: that session and its
         * lock are gone. */
        ps_log_warning("leader: the main connection went down or was re-established since the "
                       "leader lock was taken; re-acquiring it");
        l->lock_session = 0;
        l->backend_pid = 0;
        l->role = PS_LEADER_ROLE_UNKNOWN;
        l->st.lock_retry_at_ms = 0;
    }
    if (l->cb)
        l->cb(now, l->cb_arg);
}

/* ---- results ---- */

static void on_session(ps_pgconn *c, const PGresult *res, void *arg)
{
    ps_leader *l = arg;
    l->busy = false;
    if (!res) {
        ps_leader_kick(l); /* lost: from the loop, not inside the connection's teardown */
        return;
    }
    ps_log_field f[] = {{"CONN", ps_pgconn_name(c)}, {NULL, NULL}};
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        ps_log_fields(LOG_WARNING, f,
                      "leader: cannot set the session's keepalives and timeouts: %s %s; going on "
                      "without them",
                      ps_pgconn_errfield(res, PG_DIAG_SQLSTATE, "?"),
                      ps_pgconn_errfield(res, PG_DIAG_MESSAGE_PRIMARY, "unknown error"));
    else
        ps_log_fields(LOG_DEBUG, f, "leader: session keepalives and timeouts set");
    if (c == ps_daemon_main_conn(l->d))
        l->main_settings_session = ps_pgconn_session_id(c);
    else if (c == ps_daemon_work_conn(l->d))
        l->work_settings_session = ps_pgconn_session_id(c);
    step(l);
}

static void on_lock(ps_pgconn *c, const PGresult *res, void *arg)
{
    ps_leader *l = arg;
    l->busy = false;
    l->st.lock_retry_at_ms = ps_clock_ms() + PS_LEADER_LOCK_RETRY_MS;
    if (!res) {
        ps_leader_kick(l); /* lost: from the loop, not inside the connection's teardown */
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        l->stats.errors++;
        ps_log_error("leader: leader lock attempt failed: %s",
                     ps_pgconn_errfield(res, PG_DIAG_MESSAGE_PRIMARY, "unexpected result"));
    } else if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        l->lock_session = ps_pgconn_session_id(c);
        l->role = PS_LEADER_ROLE_LEADER;
        l->stats.acquired++;
        l->backend_pid = atoi(PQgetvalue(res, 0, 1));
        l->leader_pid = l->backend_pid;
        snprintf(l->leader_start, sizeof l->leader_start, "%s",
                 PQgetisnull(res, 0, 3) ? "" : PQgetvalue(res, 0, 3));
        ps_log_info("leader: this daemon leads migration %s now (its lock is held by backend "
                    "pid %d)",
                    migration_id(l), l->backend_pid);
    } else {
        int holder = PQgetisnull(res, 0, 2) ? 0 : atoi(PQgetvalue(res, 0, 2));
        if (holder > 0 && holder == l->leader_pid && holder != atoi(PQgetvalue(res, 0, 1)) &&
            l->leader_start[0]) {
            /* The holder is the session we led on before a reconnect. */
            ps_log_warning("leader: the leader lock for migration %s is still held by our own "
                           "previous session (backend pid %d), whose connection was lost; "
                           "terminating it",
                           migration_id(l), holder);
            l->st.terminate_wanted = true;
            l->st.lock_retry_at_ms = 0;
        } else {
            if (l->role != PS_LEADER_ROLE_STANDBY || holder != l->lock_holder_pid) {
                if (holder > 0)
                    ps_log_notice("leader: standby: another pgshadowd holds the leader lock for "
                                  "migration %s (backend pid %d); retrying every %d ms",
                                  migration_id(l), holder, PS_LEADER_LOCK_RETRY_MS);
                else
                    ps_log_notice("leader: standby: another pgshadowd holds the leader lock for "
                                  "migration %s; retrying every %d ms",
                                  migration_id(l), PS_LEADER_LOCK_RETRY_MS);
            }
            l->role = PS_LEADER_ROLE_STANDBY;
            l->lock_holder_pid = holder;
        }
    }
    step(l);
}

static void on_terminate(ps_pgconn *c, const PGresult *res, void *arg)
{
    ps_leader *l = arg;
    (void)c;
    l->busy = false;
    l->st.terminate_wanted = false;
    if (res && PQresultStatus(res) != PGRES_TUPLES_OK) {
        l->stats.errors++;
        ps_log_error("leader: cannot terminate our previous session (backend pid %d): %s",
                     l->leader_pid, ps_pgconn_errfield(res, PG_DIAG_MESSAGE_PRIMARY, "unknown error"));
    } else if (res) {
        ps_log_notice("leader: previous session (backend pid %d) %s; taking the leader lock again",
                      l->leader_pid,
                      PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0
                          ? "terminated"
                          : "already gone");
        l->st.lock_retry_at_ms = 0;
    }
    /* once: if it is someone else by now, it is a real standby situation */
    l->leader_pid = 0;
    l->leader_start[0] = '\0';
    if (!res)
        ps_leader_kick(l); /* lost: from the loop, not inside the connection's teardown */
    else
        step(l);
}

/* ---- the decision loop ---- */

static void send_query(ps_leader *l, ps_pgconn *c, const char *sql, int n,
                       const char *const *params, ps_pg_result_cb cb)
{
    l->busy = true;
    int r = ps_pgconn_query(c, sql, n, params, cb, l);
    if (r < 0) {
        l->busy = false;
        l->stats.errors++;
        ps_log_error("leader: cannot queue a query on the %s connection: %s", ps_pgconn_name(c),
                     strerror(-r));
        l->st.lock_retry_at_ms = ps_clock_ms() + PS_LEADER_LOCK_RETRY_MS;
        struct timeval tv = ps_clock_tv(PS_LEADER_LOCK_RETRY_MS);
        evtimer_add(l->ev_wake, &tv);
    }
}

/* SQL_SESSION's parameters: idle_session_timeout well above every interval
 * at which we query these connections (lock retry 1 s, lag probe 1 s,
 * catchup, and the connection's own liveness probe every 10 s). */
static void session_params(const ps_daemon *d, char *idle_s, char *stmt_s, size_t len)
{
    int64_t idle = PS_LEADER_IDLE_TIMEOUT_MIN_MS;
    int64_t catchup = ps_daemon_config(d)->sync.catchup_interval_ms;
    if (catchup * 3 > idle)
        idle = catchup * 3;
    snprintf(idle_s, len, "%lld", (long long)idle);
    snprintf(stmt_s, len, "%d", PS_LEADER_STATEMENT_TIMEOUT_MS);
}

static void send_settings(ps_leader *l, ps_pgconn *c)
{
    char idle_s[24], stmt_s[24];
    session_params(l->d, idle_s, stmt_s, sizeof idle_s);
    const char *p[2] = {idle_s, stmt_s};
    send_query(l, c, SQL_SESSION, 2, p, on_session);
}

int ps_leader_session_settings(ps_daemon *d, ps_pgconn *c, ps_pg_result_cb cb, void *arg)
{
    char idle_s[24], stmt_s[24];
    session_params(d, idle_s, stmt_s, sizeof idle_s);
    const char *p[2] = {idle_s, stmt_s};
    return ps_pgconn_query(c, SQL_SESSION, 2, p, cb, arg);
}

static void step(ps_leader *l)
{
    if (l->st.stopping)
        return; /* inert: no more queries, no more news for the modules */
    tell(l);
    if (l->busy)
        return;
    ps_pgconn *m = ps_daemon_main_conn(l->d), *w = ps_daemon_work_conn(l->d);
    uint64_t ms = session_of(m), ws = session_of(w);
    l->st.now_ms = ps_clock_ms();
    l->st.main_up = ms != 0;
    l->st.work_up = ws != 0;
    l->st.main_ready = ms != 0 && ms == l->main_settings_session;
    l->st.work_ready = ws != 0 && ws == l->work_settings_session;
    l->st.leader = ps_leader_is_leader(l);

    int64_t wait = -1;
    switch (ps_leader_next(&l->st, &wait)) {
    case PS_LEADER_IDLE:
        return;
    case PS_LEADER_WAIT: {
        struct timeval tv = ps_clock_tv(wait);
        evtimer_add(l->ev_wake, &tv);
        return;
    }
    case PS_LEADER_SETTINGS_MAIN:
        send_settings(l, m);
        return;
    case PS_LEADER_SETTINGS_WORK:
        send_settings(l, w);
        return;
    case PS_LEADER_TERMINATE: {
        char pid_s[16];
        snprintf(pid_s, sizeof pid_s, "%d", l->leader_pid);
        const char *p[2] = {pid_s, l->leader_start};
        send_query(l, m, SQL_TERMINATE, 2, p, on_terminate);
        return;
    }
    case PS_LEADER_LOCK: {
        const char *p[1] = {migration_id(l)};
        send_query(l, m, SQL_LOCK, 1, p, on_lock);
        return;
    }
    }
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    step(arg);
}

void ps_leader_kick(ps_leader *l)
{
    if (!l || l->st.stopping)
        return;
    /* Deferred to the loop: a kick comes from inside connection callbacks,
     * and the change callback must not run inside them. */
    struct timeval now = {0, 0};
    evtimer_del(l->ev_wake);
    evtimer_add(l->ev_wake, &now);
}

void ps_leader_stop(ps_leader *l)
{
    if (!l)
        return;
    l->st.stopping = true;
    evtimer_del(l->ev_wake);
}

ps_leader_role ps_leader_get_role(const ps_leader *l)
{
    return l ? l->role : PS_LEADER_ROLE_UNKNOWN;
}

int ps_leader_backend_pid(const ps_leader *l)
{
    return ps_leader_is_leader(l) ? l->backend_pid : 0;
}

const ps_leader_stats *ps_leader_get_stats(const ps_leader *l)
{
    return &l->stats;
}

int ps_leader_new(ps_daemon *d, ps_leader_change_cb cb, void *arg, ps_leader **out)
{
    *out = NULL;
    ps_leader *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->d = d;
    l->cb = cb;
    l->cb_arg = arg;
    l->ev_wake = evtimer_new(ps_daemon_base(d), wake_cb, l);
    if (!l->ev_wake) {
        ps_leader_free(l);
        return -ENOMEM;
    }
    *out = l;
    return 0;
}

void ps_leader_free(ps_leader *l)
{
    if (!l)
        return;
    if (l->ev_wake)
        event_free(l->ev_wake);
    free(l);
}
