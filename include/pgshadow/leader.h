/*
 * leader.h - leadership: of all the pgshadowd processes of one migration,
 * exactly one works (applies and backfills now; verifies, cuts over,
 * promotes and runs operator commands later); the others are hot standbys
 * that do nothing but try to take over.
 *
 * The leader lock is a session advisory lock on the daemon's main
 * connection, key hashtextextended('pgshadow:' || migration id, 0). A
 * session lock lives and dies with its server session, so leadership is tied
 * to the main connection's session id (ps_pgconn_session_id) and is lost the
 * moment that connection is lost or replaced; it is taken again, with the
 * session settings set again first, before anything else.
 *
 * Split as the house style asks:
 *  - the policy (src/daemon/leader_policy.c): which step comes next and the
 *    STATUS= words, pure (tests/unit/test-leader-policy.c);
 *  - the shell, ps_leader (src/daemon/leader.c): the queries (session
 *    settings of main and work, lock attempts, ending our own stale
 *    session), the retry timer, the logs.
 *
 * The daemon owns one ps_leader, kicks it whenever one of its connections
 * comes up, goes down or is replaced, and passes every change of leadership
 * to the module table as on_leader (daemon.h); a module asks
 * ps_daemon_is_leader(d), which is live: true only while the lock is held in
 * the session of the main connection up now.
 */
#ifndef PGSHADOW_LEADER_H
#define PGSHADOW_LEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgshadow/daemon.h"

#define PS_LEADER_LOCK_RETRY_MS 1000        /* standby: next try for the lock */
#define PS_LEADER_STATEMENT_TIMEOUT_MS 300000 /* statement_timeout of main and work */
#define PS_LEADER_IDLE_TIMEOUT_MIN_MS 60000 /* idle_session_timeout, at least */

/* ------------------------------------------------------------------------ */
/* Policy (pure) */

typedef enum {
    PS_LEADER_ROLE_UNKNOWN = 0, /* lock not tried yet in this session */
    PS_LEADER_ROLE_LEADER,
    PS_LEADER_ROLE_STANDBY,
} ps_leader_role;

typedef enum {
    PS_LEADER_IDLE = 0,       /* nothing until a connection changes (a kick) or never (stopping) */
    PS_LEADER_WAIT,           /* nothing now; decide again after *wait_ms */
    PS_LEADER_SETTINGS_MAIN,  /* the session settings, in main's new session */
    PS_LEADER_TERMINATE,      /* end our own previous session, which still holds the lock */
    PS_LEADER_LOCK,           /* try the lock */
    PS_LEADER_SETTINGS_WORK,  /* the session settings, in work's new session */
} ps_leader_action;

/* What the next step depends on. Times are milliseconds on one monotonic
 * clock; a deadline <= now_ms has passed. */
typedef struct ps_leader_state {
    int64_t now_ms;
    bool stopping;          /* the daemon stops: try nothing more */
    bool main_up, work_up;  /* the connections are up */
    bool main_ready;        /* the settings ran in main's current session */
    bool work_ready;        /* the settings ran in work's current session */
    bool leader;            /* the lock is held in main's current session */
    bool terminate_wanted;  /* our previous session holds the lock */
    int64_t lock_retry_at_ms; /* next lock attempt */
} ps_leader_state;

/* The next step. For PS_LEADER_WAIT, *wait_ms is the delay (> 0) after which
 * to decide again; otherwise *wait_ms is -1. Order of precedence: stopping,
 * main's settings (the lock must never be held by a session without its
 * keepalives and timeouts), ending our stale session, the lock when due,
 * work's settings. */
ps_leader_action ps_leader_next(const ps_leader_state *s, int64_t *wait_ms);

/* The STATUS= words of a role: "leader", "standby: another pgshadowd holds
 * the lock", or, before the first attempt, "sync: acquiring leader lock".
 * Returns the length written (truncated to len - 1). */
size_t ps_leader_format_status(ps_leader_role role, char *buf, size_t len);

/* ------------------------------------------------------------------------ */
/* The shell */

typedef struct ps_leader ps_leader;

/* Leadership changed (told once per change; the daemon passes it to the
 * module table). */
typedef void (*ps_leader_change_cb)(bool leader, void *arg);

/* Build the leader for daemon d: the lock key is its config's migration.id
 * (restart-only, so fixed for the process). Timers on d's event base;
 * nothing runs before the first ps_leader_kick. 0 and *out, or -ENOMEM. */
int ps_leader_new(ps_daemon *d, ps_leader_change_cb cb, void *arg, ps_leader **out);

/* Before the daemon's event base is freed. NULL is a no-op. */
void ps_leader_free(ps_leader *l);

/* A connection of the daemon came up, went down or was replaced: look again,
 * from the loop (deferred: safe from inside any connection callback). */
void ps_leader_kick(ps_leader *l);

/* The daemon stops: try nothing more. The lock stays held until the process
 * exits, so a standby takes over only once this daemon is gone. */
void ps_leader_stop(ps_leader *l);

/* The lock is held in the session of the main connection up now. NULL: false. */
bool ps_leader_is_leader(const ps_leader *l);

ps_leader_role ps_leader_get_role(const ps_leader *l);

/* Queue, on connection c (a backfill worker's), the session settings the
 * main and work connections get (keepalives, idle_session_timeout,
 * statement_timeout, READ COMMITTED): one place for them. cb gets the
 * result; ps_pgconn_query's return value. */
int ps_leader_session_settings(ps_daemon *d, ps_pgconn *c, ps_pg_result_cb cb, void *arg);

/* The backend pid of the session holding our lock; 0 when not leader. */
int ps_leader_backend_pid(const ps_leader *l);

/* Monotonic counters of this process. */
typedef struct ps_leader_stats {
    uint64_t acquired; /* times this process took the lock */
    uint64_t errors;   /* failed leader queries (not lost connections) */
} ps_leader_stats;

const ps_leader_stats *ps_leader_get_stats(const ps_leader *l);

#endif
