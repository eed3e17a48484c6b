/*
 * control.h - the command queue, daemon side: the leading pgshadowd takes
 * the commands pgshadowctl queued (sql/30-commands.sql) and runs the handler
 * registered for each name, each command in ONE transaction on the main
 * connection: claim (FOR UPDATE SKIP LOCKED), the handler's SQL, the
 * outcome and its event (pgshadow.command_finish), COMMIT.
 *
 * Handlers are pure decisions: given the command, refuse it with a reason or
 * name the SQL that carries it out and how to word its result. They are
 * registered by the module that owns the capability (the sync engine owns
 * quarantine-retry; the cutover will own start, pause, ...).
 */
#ifndef PGSHADOW_CONTROL_H
#define PGSHADOW_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "pgshadow/pgconn.h"

typedef struct ps_control ps_control;

/* One claimed command (strings valid during the handler call only). */
typedef struct ps_control_cmd {
    int64_t id;
    const char *name;         /* "quarantine-retry" */
    const char *args;         /* a JSON object's text */
    const char *requested_by; /* the role that queued it */
} ps_control_cmd;

/* What a handler decided to run. sql runs inside the command's transaction
 * (a failure rolls back to before it and the command ends 'failed' with the
 * server's message). sql and params are copied as soon as the handler
 * returns: they must point at memory that outlives the call (static text,
 * the command's own strings, the handler's arg), never at its stack. */
#define PS_CONTROL_MAX_PARAMS 8
typedef struct ps_control_action {
    const char *sql; /* NULL: nothing to run, the command is done */
    int nparams;
    const char *params[PS_CONTROL_MAX_PARAMS];
    /* The outcome text: from sql's result when set, else result below. */
    void (*format)(const PGresult *res, char *out, size_t len);
    char result[400];
} ps_control_action;

/* 0: carry it out as *act says; PS_CONTROL_LATER: not now (the handler's
 * module is not ready: a new leader still reading its state), the command
 * stays pending and is taken again at the next poll; other > 0: refused,
 * the reason in why. */
#define PS_CONTROL_LATER 2
typedef int (*ps_control_handler)(const ps_control_cmd *cmd, ps_control_action *act, char *why,
                                  size_t whylen, void *arg);

/* A queue consumer for migration_id; it sends on conn (not owned) once
 * ps_control_set_conn gave it one. NULL on OOM. */
ps_control *ps_control_new(struct event_base *base, const char *migration_id);
void ps_control_set_conn(ps_control *c, ps_pgconn *conn);
/* Register the handler of a command name (unique). 0, -EEXIST, -ENOMEM. */
int ps_control_register(ps_control *c, const char *name, ps_control_handler h, void *arg);
/* Leading or not: only a leader takes commands. Becoming leader looks at
 * once (commands queued while no daemon led are pending). */
void ps_control_set_leader(ps_control *c, bool leader);
/* Look for pending commands now (a NOTIFY on pgshadow_control, a reconnect);
 * also done every PS_CONTROL_POLL_MS, so a lost notification costs at most
 * that. */
void ps_control_kick(ps_control *c);
#define PS_CONTROL_POLL_MS 1000
/* Commands carried out so far (done, failed, refused). */
uint64_t ps_control_handled(const ps_control *c);
/* Stop taking commands (a transaction in flight finishes or is lost with the
 * connection) and free. NULL is a no-op. */
void ps_control_free(ps_control *c);

/* The daemon module (listed first in pgshadowd.c's table, so every module
 * after it may register its commands from its create hook through
 * ps_daemon_control): takes commands while this daemon leads, on the main
 * connection, on each NOTIFY pgshadow_control and every PS_CONTROL_POLL_MS. */
struct ps_daemon_module;
extern const struct ps_daemon_module ps_control_module;

#endif
