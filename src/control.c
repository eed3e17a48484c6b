/*
 * control.c - the command queue, daemon side (control.h): the leader takes
 * one pending command at a time and carries it out in one transaction.
 *
 * Owns: the handler registry, the poll timer, the state of the command in
 * flight (its copies of the command's strings).
 * Invariants:
 *  - only while leading, at most one command transaction at a time;
 *  - the statements of that transaction go out back to back: the first with
 *    ps_pgconn_query, each next one from the previous one's callback with
 *    ps_pgconn_query_next, so no other module's query lands inside it;
 *  - the claim, the handler's SQL, command_finish and COMMIT are one
 *    transaction: a crash or a lost connection anywhere rolls all of it
 *    back and the command stays pending for the next leader;
 *  - a command nobody registered, or one its handler refuses, ends
 *    'refused' with the reason; a handler SQL error ends it 'failed' with
 *    the server's message (rolled back to before the SQL): never pending
 *    forever, never retried in a loop; a handler that answers "later" (its
 *    module still reading its state after a leader change) has the claim
 *    rolled back, and the command is taken again at the next poll;
 *  - ps_control_free during a transaction only marks it; the chain ends on
 *    the next callback (the connection always calls back exactly once).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/control.h"
#include "pgshadow/daemon.h"
#include "pgshadow/log.h"
#include "pgshadow/util.h"

typedef struct handler {
    char *name;
    ps_control_handler fn;
    void *arg;
} handler;

struct ps_control {
    struct event_base *base;
    ps_pgconn *conn;
    char *migration_id;
    handler *handlers;
    size_t n_handlers;
    struct event *poll_ev;
    bool leader;
    bool busy;  /* a command transaction is in flight */
    bool again; /* kicked while busy: look once more after it */
    bool dying;
    uint64_t handled;
    /* the command in flight */
    int64_t id;
    char *name, *args, *by;
    char state[16];
    char result[512];
};

static void look(ps_control *c);

static void cmd_clear(ps_control *c)
{
    free(c->name);
    free(c->args);
    free(c->by);
    c->name = c->args = c->by = NULL;
    c->id = 0;
}

static void really_free(ps_control *c)
{
    cmd_clear(c);
    for (size_t i = 0; i < c->n_handlers; i++)
        free(c->handlers[i].name);
    free(c->handlers);
    if (c->poll_ev)
        event_free(c->poll_ev);
    free(c->migration_id);
    free(c);
}

/* The transaction is over (committed, rolled back, or lost). */
static void done(ps_control *c)
{
    c->busy = false;
    cmd_clear(c);
    if (c->dying) {
        really_free(c);
        return;
    }
    if (c->again) {
        c->again = false;
        look(c);
    }
}

static void lost(ps_control *c, const char *step)
{
    ps_log_warning("control: connection lost during %s%s%s; the command stays pending for the next try",
                   step, c->name ? " of " : "", c->name ? c->name : "");
    done(c);
}

static void on_commit(ps_pgconn *conn, const PGresult *res, void *arg)
{
    ps_control *c = arg;
    (void)conn;
    if (!res) {
        lost(c, "COMMIT");
        return;
    }
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        ps_log_warning("control: COMMIT failed: %s", PQresultErrorMessage(res));
    } else if (c->name) {
        c->handled++;
        ps_log_field f[] = {{"COMMAND", c->name}, {NULL, NULL}};
        ps_log_fields(strcmp(c->state, "done") == 0 ? LOG_NOTICE : LOG_WARNING, f,
                      "control: command %lld %s from %s %s: %s", (long long)c->id, c->name,
                      c->by ? c->by : "?", c->state, c->result);
        c->again = true; /* there may be more */
    }
    done(c);
}

static void commit(ps_control *c)
{
    if (c->dying || ps_pgconn_query_next(c->conn, "COMMIT", 0, NULL, on_commit, c) != 0)
        done(c);
}

static void on_finish(ps_pgconn *conn, const PGresult *res, void *arg)
{
    ps_control *c = arg;
    (void)conn;
    if (!res) {
        lost(c, "command_finish");
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        /* the transaction is aborted: COMMIT rolls it back; pending again */
        ps_log_warning("control: recording the outcome of command %lld failed: %s", (long long)c->id,
                       PQresultErrorMessage(res));
        cmd_clear(c);
    }
    commit(c);
}

static void finish(ps_control *c, const char *state, const char *result)
{
    snprintf(c->state, sizeof c->state, "%s", state);
    snprintf(c->result, sizeof c->result, "%s", result);
    char id[32];
    snprintf(id, sizeof id, "%lld", (long long)c->id);
    const char *params[3] = {id, c->state, c->result};
    if (c->dying ||
        ps_pgconn_query_next(c->conn, "SELECT pgshadow.command_finish($1, $2, $3)", 3, params, on_finish, c) != 0)
        done(c);
}

typedef struct {
    ps_control *c;
    void (*format)(const PGresult *res, char *out, size_t len);
    char result[400];
    char error[512];
} action_ctx;

static void on_rolled_back(ps_pgconn *conn, const PGresult *res, void *arg)
{
    action_ctx *a = arg;
    ps_control *c = a->c;
    (void)conn;
    if (!res) {
        free(a);
        lost(c, "ROLLBACK TO SAVEPOINT");
        return;
    }
    finish(c, "failed", a->error);
    free(a);
}

static void on_action(ps_pgconn *conn, const PGresult *res, void *arg)
{
    action_ctx *a = arg;
    ps_control *c = a->c;
    (void)conn;
    if (!res) {
        free(a);
        lost(c, "the handler's SQL");
        return;
    }
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(a->error, sizeof a->error, "%s (SQLSTATE %s)", msg ? msg : "error", state ? state : "?");
        if (c->dying || ps_pgconn_query_next(c->conn, "ROLLBACK TO SAVEPOINT pgshadow_command", 0, NULL,
                                              on_rolled_back, a) != 0) {
            free(a);
            done(c);
        }
        return;
    }
    char out[400];
    if (a->format)
        a->format(res, out, sizeof out);
    else
        snprintf(out, sizeof out, "%s", a->result);
    free(a);
    finish(c, "done", out);
}

static void on_savepoint(ps_pgconn *conn, const PGresult *res, void *arg);

typedef struct {
    action_ctx *a;
    char *sql;
    int nparams;
    char *params[PS_CONTROL_MAX_PARAMS];
} pending_action;

static void pending_free(pending_action *p)
{
    free(p->sql);
    for (int i = 0; i < p->nparams; i++)
        free(p->params[i]);
    free(p);
}

static void on_savepoint(ps_pgconn *conn, const PGresult *res, void *arg)
{
    pending_action *p = arg;
    ps_control *c = p->a->c;
    (void)conn;
    if (!res) {
        free(p->a);
        pending_free(p);
        lost(c, "SAVEPOINT");
        return;
    }
    int rc = c->dying ? -1
                      : ps_pgconn_query_next(c->conn, p->sql, p->nparams, (const char *const *)p->params,
                                             on_action, p->a);
    if (rc != 0) {
        free(p->a);
        done(c);
    }
    pending_free(p);
}

static const handler *find(const ps_control *c, const char *name)
{
    for (size_t i = 0; i < c->n_handlers; i++)
        if (strcmp(c->handlers[i].name, name) == 0)
            return &c->handlers[i];
    return NULL;
}

/* The claim of a command its handler cannot take yet, rolled back: it is
 * pending again, and the poll timer looks again (not at once: no loop). */
static void on_later(ps_pgconn *conn, const PGresult *res, void *arg)
{
    ps_control *c = arg;
    (void)conn;
    if (!res) {
        lost(c, "ROLLBACK");
        return;
    }
    c->again = false;
    done(c);
}

static void on_claim(ps_pgconn *conn, const PGresult *res, void *arg)
{
    ps_control *c = arg;
    (void)conn;
    if (!res) {
        lost(c, "the claim");
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ps_log_warning("control: taking a command failed: %s", PQresultErrorMessage(res));
        commit(c); /* rolls the aborted transaction back */
        return;
    }
    if (PQntuples(res) == 0) {
        commit(c);
        return;
    }
    c->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    c->name = strdup(PQgetvalue(res, 0, 1));
    c->args = strdup(PQgetvalue(res, 0, 2));
    c->by = strdup(PQgetvalue(res, 0, 3));
    if (!c->name || !c->args || !c->by) {
        cmd_clear(c);
        commit(c);
        return;
    }
    const handler *h = find(c, c->name);
    if (!h) {
        char why[256];
        snprintf(why, sizeof why, "unknown command '%s': this pgshadowd has no handler for it", c->name);
        finish(c, "refused", why);
        return;
    }
    ps_control_cmd cmd = {.id = c->id, .name = c->name, .args = c->args, .requested_by = c->by};
    ps_control_action act;
    memset(&act, 0, sizeof act);
    char why[400] = "";
    int r = h->fn(&cmd, &act, why, sizeof why, h->arg);
    if (r == PS_CONTROL_LATER) {
        ps_log_info("control: command %lld %s: not yet (%s); taken again at the next poll", (long long)c->id,
                    c->name, why[0] ? why : "its module is not ready");
        if (c->dying || ps_pgconn_query_next(c->conn, "ROLLBACK", 0, NULL, on_later, c) != 0)
            done(c);
        return;
    }
    if (r > 0) {
        finish(c, "refused", why[0] ? why : "refused by its handler");
        return;
    }
    if (r < 0 || (act.sql && (act.nparams < 0 || act.nparams > PS_CONTROL_MAX_PARAMS))) {
        finish(c, "failed", "the handler could not run");
        return;
    }
    if (!act.sql) {
        finish(c, "done", act.result);
        return;
    }
    /* the SQL runs after a savepoint, so its failure can be recorded */
    action_ctx *a = calloc(1, sizeof *a);
    pending_action *p = calloc(1, sizeof *p);
    if (!a || !p) {
        free(a);
        free(p);
        finish(c, "failed", "out of memory");
        return;
    }
    a->c = c;
    a->format = act.format;
    snprintf(a->result, sizeof a->result, "%s", act.result);
    p->a = a;
    p->sql = strdup(act.sql);
    p->nparams = act.nparams;
    bool ok = p->sql != NULL;
    for (int i = 0; i < act.nparams; i++)
        if (act.params[i] && !(p->params[i] = strdup(act.params[i])))
            ok = false;
    if (!ok || ps_pgconn_query_next(c->conn, "SAVEPOINT pgshadow_command", 0, NULL, on_savepoint, p) != 0) {
        free(a);
        pending_free(p);
        finish(c, "failed", "out of memory");
    }
}

static void on_begin(ps_pgconn *conn, const PGresult *res, void *arg)
{
    ps_control *c = arg;
    (void)conn;
    if (!res) {
        lost(c, "BEGIN");
        return;
    }
    if (PQresultStatus(res) != PGRES_COMMAND_OK || c->dying) {
        commit(c);
        return;
    }
    const char *params[1] = {c->migration_id};
    if (ps_pgconn_query_next(c->conn,
                             "SELECT command_id, command, args::text, requested_by "
                             "FROM pgshadow.command_claim($1)",
                             1, params, on_claim, c) != 0)
        done(c);
}

static void look(ps_control *c)
{
    if (!c->leader || c->dying || !c->conn)
        return;
    if (c->busy) {
        c->again = true;
        return;
    }
    if (!ps_pgconn_is_up(c->conn))
        return; /* the poll timer and the reconnect look again */
    c->busy = true;
    if (ps_pgconn_query(c->conn, "BEGIN", 0, NULL, on_begin, c) != 0)
        c->busy = false;
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    look(arg);
}

ps_control *ps_control_new(struct event_base *base, const char *migration_id)
{
    ps_control *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->base = base;
    c->migration_id = strdup(migration_id);
    c->poll_ev = event_new(base, -1, EV_PERSIST, on_poll, c);
    if (!c->migration_id || !c->poll_ev) {
        really_free(c);
        return NULL;
    }
    struct timeval tv = ps_clock_tv(PS_CONTROL_POLL_MS);
    event_add(c->poll_ev, &tv);
    return c;
}

int ps_control_register(ps_control *c, const char *name, ps_control_handler h, void *arg)
{
    if (find(c, name))
        return -EEXIST;
    handler *n = realloc(c->handlers, (c->n_handlers + 1) * sizeof *n);
    if (!n)
        return -ENOMEM;
    c->handlers = n;
    if (!(n[c->n_handlers].name = strdup(name)))
        return -ENOMEM;
    n[c->n_handlers].fn = h;
    n[c->n_handlers].arg = arg;
    c->n_handlers++;
    return 0;
}

void ps_control_set_conn(ps_control *c, ps_pgconn *conn)
{
    c->conn = conn;
}

void ps_control_set_leader(ps_control *c, bool leader)
{
    bool was = c->leader;
    c->leader = leader;
    if (leader && !was)
        look(c);
}

void ps_control_kick(ps_control *c)
{
    look(c);
}

uint64_t ps_control_handled(const ps_control *c)
{
    return c->handled;
}

void ps_control_free(ps_control *c)
{
    if (!c)
        return;
    c->dying = true;
    c->leader = false;
    if (c->poll_ev)
        event_del(c->poll_ev);
    if (!c->busy)
        really_free(c);
}

/* ---- the daemon module ---- */

static const ps_metric_counter control_counters[] = {
    {"pgshadow_control_commands_total", "Commands from the queue carried out (done, failed or refused).",
     offsetof(ps_control, handled)},
};

static int control_create(ps_daemon *d, void **arg)
{
    ps_control *c = ps_control_new(ps_daemon_base(d), ps_daemon_config(d)->migration.id);
    if (!c)
        return -ENOMEM;
    ps_daemon_set_control(d, c);
    *arg = c;
    return 0;
}

static void control_free(void *arg)
{
    ps_control_free(arg);
}

static void control_on_db_up(ps_daemon *d, void *arg)
{
    ps_control *c = arg;
    ps_control_set_conn(c, ps_daemon_main_conn(d));
    ps_control_kick(c);
}

static void control_on_leader(ps_daemon *d, bool leader, void *arg)
{
    ps_control *c = arg;
    ps_control_set_conn(c, ps_daemon_main_conn(d));
    ps_control_set_leader(c, leader);
}

static void control_on_notify(ps_daemon *d, const char *channel, const char *payload, void *arg)
{
    (void)d;
    (void)payload;
    if (strcmp(channel, PS_DAEMON_CHANNEL_CONTROL) == 0)
        ps_control_kick(arg);
}

static void control_collect(ps_daemon *d, const ps_metric_sink *sink, void *arg)
{
    (void)d;
    ps_metric_counters(sink, arg, control_counters, sizeof control_counters / sizeof control_counters[0]);
}

const ps_daemon_module ps_control_module = {
    .name = "control",
    .create = control_create,
    .free = control_free,
    .on_db_up = control_on_db_up,
    .on_leader = control_on_leader,
    .on_notify = control_on_notify,
    .collect = control_collect,
};
