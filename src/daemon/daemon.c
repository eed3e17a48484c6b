/*
 * daemon/daemon.c - the pgshadowd process: event loop, signals, reload,
 * watchdog, systemd notifications, the database connections and leadership.
 *
 * Owns the ps_daemon context: the libevent base, the config currently in
 * force, the three connections, the leader (src/daemon/leader.c), the timers
 * and the module table (src/daemon/modules.c). The connections:
 *  - "main": short writes (apply_batch, backfill_step, later the cutover
 *    actions); its session holds the leader lock;
 *  - "work": long reads (dashboard polls, read sampling), so a long read
 *    never queues ahead of apply_batch in main's FIFO. Opened and kept like
 *    main (same session settings, keepalives, timeouts, reconnects); the
 *    monitor module (src/monitor/poller.c) polls on it, the sampler
 *    (src/monitor/sampler.c) samples on it;
 *  - "listen": LISTEN on pgshadow_changes and pgshadow_control, so a query's
 *    transaction never holds a NOTIFY back.
 *
 * Invariants:
 *  - nothing here blocks the loop; signals are libevent events, so their
 *    handlers run on the loop and may log, allocate and reload;
 *  - d->cfg is always a valid config: reload parses into a fresh object and
 *    swaps it in only when it is valid;
 *  - the daemon never exits because the database went away: ps_pgconn
 *    reconnects with backoff, STATUS says we are waiting, and every
 *    (re)connect of the listen connection runs the modules' on_db_up (resync);
 *  - exit codes: 0 after any requested stop, 1 on a runtime failure.
 *    A second SIGTERM/SIGINT also exits 0: the operator asked for the stop,
 *    and work cut short is not lost (a batch is one transaction the server
 *    rolls back; the durable change log makes the next start redo it), so a
 *    non-zero code would only make Restart=on-failure undo the operator.
 */
#include "pgshadow/control.h"
#include "pgshadow/daemon.h"

#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgshadow/leader.h"
#include "pgshadow/log.h"
#include "pgshadow/modules.h"
#include "pgshadow/notify.h"
#include "pgshadow/redact.h"
#include "pgshadow/util.h"

#define STOP_POLL_MS 50

struct ps_daemon {
    char *config_path;
    ps_config *cfg;
    int log_level_override; /* -1: follow cfg->log.level */

    struct event_base *base;
    struct event *ev_hup, *ev_term, *ev_int;
    struct event *ev_ready, *ev_watchdog, *ev_housekeeping, *ev_stop_poll;

    ps_pgconn *main;
    ps_pgconn *work;
    ps_pgconn *listen;
    ps_leader *leader;
    ps_control *control; /* the control module's (not owned: it frees it) */
    ps_monitor *monitor; /* the monitor module's (not owned: it frees it) */
    bool listen_ever_up; /* a later on_up is a reconnect */
    char down_reason[160];

    ps_modules modules; /* src/daemon/modules.c: the only caller of their hooks */

    ps_daemon_stats stats;
    ps_daemon_state state;
    uint64_t watchdog_usec;
    int64_t stop_deadline_ms;
    int exit_code;
    char status[256];
    bool status_unsent; /* the last STATUS= could not be sent: send it again */
};

/* ------------------------------------------------------------------------ */
/* STATUS= */

static void build_status(ps_daemon *d, char *buf, size_t len)
{
    if (d->state == PS_DAEMON_STOPPING) {
        snprintf(buf, len, "stopping: finishing work in flight");
        return;
    }
    bool up = d->main && d->listen && ps_pgconn_is_up(d->main) && ps_pgconn_is_up(d->listen);
    if (!up) {
        if (d->down_reason[0])
            snprintf(buf, len, "waiting for database (%s)", d->down_reason);
        else
            snprintf(buf, len, "connecting to database");
        return;
    }
    /* work is not in "up": its one user, the monitor module, says when its
     * polls fail ("dashboard stale"). After "connected" the role, then each
     * module's own words. */
    size_t pos = 0;
    ps_appendf(buf, len, &pos, "connected; ");
    pos += ps_leader_format_status(ps_leader_get_role(d->leader), buf + pos, len - pos);
    ps_modules_status(&d->modules, d, buf, len, &pos);
}

/* Send STATUS= when it changed (or always with force), prefixed by extra
 * assignments such as "READY=1". One that could not be sent (the notify
 * socket's buffer full: EAGAIN) is sent again at the next call even when
 * unchanged, so the manager never keeps an old status for good; the failure
 * is logged once per streak, not every housekeeping tick. */
static void update_status(ps_daemon *d, const char *extra, bool force)
{
    char now[sizeof d->status];
    build_status(d, now, sizeof now);
    /* One line: systemd shows STATUS verbatim. */
    for (char *p = now; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    if (!force && !extra && !d->status_unsent && strcmp(now, d->status) == 0)
        return;
    memcpy(d->status, now, sizeof d->status);
    int r = extra ? ps_notifyf("%s\nSTATUS=%s", extra, now) : ps_notifyf("STATUS=%s", now);
    if (r < 0 && !d->status_unsent)
        ps_log_warning("cannot notify systemd: %s; sending the status again each second until "
                       "it gets through", strerror(-r));
    d->status_unsent = r < 0;
}

/* ------------------------------------------------------------------------ */
/* Database connections */

static void listen_on_up(ps_pgconn *c, void *arg)
{
    ps_daemon *d = arg;
    if (d->listen_ever_up)
        d->stats.reconnects++;
    d->listen_ever_up = true;
    d->stats.resyncs++;
    d->down_reason[0] = '\0';

    char reconnects[24];
    snprintf(reconnects, sizeof reconnects, "%llu", (unsigned long long)d->stats.reconnects);
    ps_log_field f[] = {{"CONN", ps_pgconn_name(c)}, {"RECONNECTS", reconnects}, {NULL, NULL}};
    ps_log_fields(LOG_INFO, f, "database connection up, listening on %s and %s",
                  PS_DAEMON_CHANNEL_CHANGES, PS_DAEMON_CHANNEL_CONTROL);
    /* NOTIFYs sent while we were away are gone: the modules catch up here. */
    ps_log_fields(LOG_INFO, f, "resync: draining change log after (re)connect");
    ps_modules_db_up(&d->modules, d);
    update_status(d, NULL, false);
}

/* main or work */
static void query_conn_on_up(ps_pgconn *c, void *arg)
{
    ps_daemon *d = arg;
    PGconn *raw = ps_pgconn_raw(c);
    ps_log_field f[] = {{"CONN", ps_pgconn_name(c)}, {NULL, NULL}};
    if (raw) {
        const char *host = PQhost(raw);
        ps_log_fields(LOG_INFO, f, "database connection up (host=%s port=%s dbname=%s user=%s)",
                      host && *host ? host : "-", PQport(raw), PQdb(raw), PQuser(raw));
    } else {
        ps_log_fields(LOG_INFO, f, "database connection up");
    }
    ps_leader_kick(d->leader); /* a new session: settings (and on main, the lock) again */
    update_status(d, NULL, false);
}

static void on_down(ps_pgconn *c, const char *reason, void *arg)
{
    ps_daemon *d = arg;
    /* reason is already redacted by ps_pgconn; the log redacts again. Keep a
     * one-line copy for STATUS=. */
    char one[sizeof d->down_reason];
    ps_redact_secrets(reason ? reason : "unknown", one, sizeof one);
    for (char *p = one; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    size_t n = strlen(one);
    while (n > 0 && one[n - 1] == ' ')
        one[--n] = '\0';
    snprintf(d->down_reason, sizeof d->down_reason, "%s: %s", ps_pgconn_name(c), one);
    ps_log_field f[] = {{"CONN", ps_pgconn_name(c)}, {NULL, NULL}};
    /* ps_pgconn already warned (with the retry delay); this is for tracing. */
    ps_log_fields(LOG_DEBUG, f, "database connection down: %s", one);
    if (c != d->listen)
        ps_leader_kick(d->leader); /* on main: the lock went with the session */
    update_status(d, NULL, false);
}

static void listen_on_notify(ps_pgconn *c, const char *channel, const char *payload, void *arg)
{
    ps_daemon *d = arg;
    (void)c;
    d->stats.notifies++;
    ps_log_debug("notify channel=%s payload=%s", channel, payload ? payload : "");
    if (d->state == PS_DAEMON_STOPPING)
        return;
    ps_modules_notify(&d->modules, d, channel, payload ? payload : "");
}

static void db_teardown(ps_daemon *d)
{
    /* the command queue keeps a pointer to main (its poll timer fires on
     * its own): dropped before main is freed (ASan saw the timer's look()
     * read a freed connection after SIGTERM, in test-sync) */
    if (d->control)
        ps_control_set_conn(d->control, NULL);
    ps_pgconn_free(d->listen);
    ps_pgconn_free(d->work);
    ps_pgconn_free(d->main);
    d->listen = NULL;
    d->work = NULL;
    d->main = NULL;
    ps_leader_kick(d->leader); /* the sessions are gone: leadership with them */
}

/* Three connections (see the head of this file): a long read never delays a
 * write, a query never delays a NOTIFY, and a LISTEN is never held hostage by
 * a query's transaction. */
static int db_setup(ps_daemon *d)
{
    static const ps_pgconn_callbacks query_cbs = {
        .on_up = query_conn_on_up,
        .on_down = on_down,
        .on_notify = NULL,
    };
    static const ps_pgconn_callbacks listen_cbs = {
        .on_up = listen_on_up,
        .on_down = on_down,
        .on_notify = listen_on_notify,
    };
    ps_pgconn_options o;
    ps_pgconn_options_init(&o);
    o.conninfo = d->cfg->database.conninfo;
    o.name = "main";
    d->main = ps_pgconn_new(d->base, &o, &query_cbs, d);
    o.name = "work";
    d->work = ps_pgconn_new(d->base, &o, &query_cbs, d);
    o.name = "listen";
    d->listen = ps_pgconn_new(d->base, &o, &listen_cbs, d);
    if (!d->main || !d->work || !d->listen) {
        db_teardown(d);
        return -ENOMEM;
    }
    int r;
    if ((r = ps_pgconn_listen(d->listen, PS_DAEMON_CHANNEL_CHANGES)) < 0 ||
        (r = ps_pgconn_listen(d->listen, PS_DAEMON_CHANNEL_CONTROL)) < 0 ||
        (r = ps_pgconn_start(d->main)) < 0 || (r = ps_pgconn_start(d->work)) < 0 ||
        (r = ps_pgconn_start(d->listen)) < 0) {
        db_teardown(d);
        return r;
    }
    return 0;
}

/* The leader's change of mind goes to every module (modules.c keeps the
 * order: gained in table order, lost in reverse). */
static void leader_changed(bool leader, void *arg)
{
    ps_daemon *d = arg;
    ps_modules_leader(&d->modules, d, leader);
    update_status(d, NULL, false);
}

/* ------------------------------------------------------------------------ */
/* Reload */

static void apply_log_level(ps_daemon *d)
{
    ps_log_set_level(d->log_level_override >= 0 ? d->log_level_override : d->cfg->log.level);
}

int ps_daemon_reload(ps_daemon *d)
{
    if (d->state == PS_DAEMON_STOPPING) {
        ps_log_notice("reload ignored: stopping");
        return -ECANCELED;
    }
    ps_notify_reloading();
    ps_log_info("reload: reading %s", d->config_path);

    ps_errors errs;
    ps_errors_init(&errs);
    ps_config *fresh = NULL;
    if (ps_config_load(d->config_path, &fresh, &errs) < 0) {
        for (size_t i = 0; i < errs.count; i++) {
            char *line = ps_error_format(&errs.items[i]);
            ps_log_error("reload: %s", line ? line : errs.items[i].message);
            free(line);
        }
        ps_errors_clear(&errs);
        d->stats.reload_failures++;
        ps_log_error("reload failed: %s is invalid; keeping the running configuration",
                     d->config_path);
        update_status(d, "READY=1", true);
        return -EINVAL;
    }
    ps_errors_clear(&errs);

    /* Restart-only keys keep their running values (one place for all of
     * them: the key table's flag, config.c); what the diff shows below is
     * then what this reload really changes. */
    ps_errors kept;
    ps_errors_init(&kept);
    ps_config_keep_restart_only(d->cfg, fresh, &kept);
    for (size_t i = 0; i < kept.count; i++) {
        char *line = ps_error_format(&kept.items[i]);
        ps_log_warning("reload: %s", line ? line : kept.items[i].message);
        free(line);
    }
    ps_errors_clear(&kept);

    ps_errors changes;
    ps_errors_init(&changes);
    size_t n = ps_config_diff(d->cfg, fresh, &changes);
    for (size_t i = 0; i < changes.count; i++)
        ps_log_info("reload: %s", changes.items[i].message);
    if (n == 0)
        ps_log_info("reload: no changes");
    ps_errors_clear(&changes);

    bool reconnect = strcmp(d->cfg->database.conninfo, fresh->database.conninfo) != 0;
    ps_config *old = d->cfg;
    d->cfg = fresh;
    apply_log_level(d);
    ps_modules_reload(&d->modules, d, old, fresh);
    ps_config_free(old);

    if (reconnect && d->main) {
        /* Queries in flight complete with res == NULL; modules retry them. */
        ps_log_notice("reload: database.conninfo changed; reconnecting");
        db_teardown(d);
        d->down_reason[0] = '\0';
        int r = db_setup(d);
        if (r < 0) {
            ps_log_error("reload: cannot set up database connections: %s", strerror(-r));
            d->exit_code = 1;
            event_base_loopbreak(d->base);
            return r;
        }
    }
    d->stats.reloads++;
    ps_log_notice("reload: configuration from %s in force", d->config_path);
    update_status(d, "READY=1", true);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Stop */

static void stop_poll_cb(evutil_socket_t fd, short what, void *arg)
{
    ps_daemon *d = arg;
    (void)fd;
    (void)what;
    bool settled = !d->main || !ps_pgconn_is_up(d->main) || ps_pgconn_is_idle(d->main);
    if (settled) {
        ps_log_info("stopped");
        event_base_loopbreak(d->base);
        return;
    }
    if (ps_clock_ms() >= d->stop_deadline_ms) {
        ps_log_warning("stop: work in flight did not finish within %d ms; exiting anyway "
                       "(its transaction is rolled back and redone at the next start)",
                       PS_DAEMON_STOP_TIMEOUT_MS);
        event_base_loopbreak(d->base);
    }
}

void ps_daemon_stop(ps_daemon *d)
{
    if (d->state == PS_DAEMON_STOPPING) {
        ps_log_notice("second stop request: exiting now");
        event_base_loopbreak(d->base);
        return;
    }
    d->state = PS_DAEMON_STOPPING;
    d->exit_code = 0;
    ps_notify("STOPPING=1");
    ps_log_notice("stopping: waiting up to %d ms for work in flight (signal again to exit now)",
                  PS_DAEMON_STOP_TIMEOUT_MS);
    ps_modules_stop(&d->modules, d);
    ps_leader_stop(d->leader);
    /* No new wake-ups: new work would only be cut short. */
    if (d->listen)
        ps_pgconn_close(d->listen);
    d->stop_deadline_ms = ps_clock_ms() + PS_DAEMON_STOP_TIMEOUT_MS;
    struct timeval tv = ps_clock_tv(STOP_POLL_MS);
    if (d->ev_stop_poll)
        evtimer_add(d->ev_stop_poll, &tv);
    stop_poll_cb(-1, 0, d); /* nothing in flight: stop without waiting a tick */
}

/* ------------------------------------------------------------------------ */
/* Signals and timers */

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    ps_daemon *d = arg;
    (void)what;
    switch (sig) {
    case SIGHUP:
        ps_log_notice("SIGHUP: reloading configuration");
        ps_daemon_reload(d);
        break;
    case SIGTERM:
    case SIGINT:
        ps_log_notice("%s received", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        ps_daemon_stop(d);
        break;
    default:
        break;
    }
}

static int signals_setup(ps_daemon *d)
{
    /* A peer closing a socket must be an error return, not a dead daemon. */
    signal(SIGPIPE, SIG_IGN);
    d->ev_hup = evsignal_new(d->base, SIGHUP, signal_cb, d);
    d->ev_term = evsignal_new(d->base, SIGTERM, signal_cb, d);
    d->ev_int = evsignal_new(d->base, SIGINT, signal_cb, d);
    if (!d->ev_hup || !d->ev_term || !d->ev_int)
        return -ENOMEM;
    if (evsignal_add(d->ev_hup, NULL) < 0 || evsignal_add(d->ev_term, NULL) < 0 ||
        evsignal_add(d->ev_int, NULL) < 0)
        return -EIO;
    return 0;
}

static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    /* Sent from the loop on purpose: a wedged loop stops the pings and
     * systemd restarts us. */
    ps_notify("WATCHDOG=1");
}

static int watchdog_setup(ps_daemon *d)
{
    d->watchdog_usec = ps_notify_watchdog_usec();
    if (d->watchdog_usec == 0)
        return 0;
    uint64_t half = d->watchdog_usec / 2;
    if (half == 0)
        half = 1;
    struct timeval tv = {.tv_sec = (time_t)(half / 1000000), .tv_usec = (suseconds_t)(half % 1000000)};
    d->ev_watchdog = event_new(d->base, -1, EV_PERSIST, watchdog_cb, d);
    if (!d->ev_watchdog || evtimer_add(d->ev_watchdog, &tv) < 0)
        return -ENOMEM;
    ps_log_debug("watchdog: pinging every %llu us", (unsigned long long)half);
    return 0;
}

static void housekeeping_cb(evutil_socket_t fd, short what, void *arg)
{
    ps_daemon *d = arg;
    (void)fd;
    (void)what;
    ps_log_flush_suppressed();
    if (d->state == PS_DAEMON_RUNNING)
        update_status(d, NULL, false);
}

static int housekeeping_setup(ps_daemon *d)
{
    struct timeval tv = ps_clock_tv(PS_DAEMON_HOUSEKEEPING_MS);
    d->ev_housekeeping = event_new(d->base, -1, EV_PERSIST, housekeeping_cb, d);
    d->ev_stop_poll = event_new(d->base, -1, EV_PERSIST, stop_poll_cb, d);
    if (!d->ev_housekeeping || !d->ev_stop_poll || evtimer_add(d->ev_housekeeping, &tv) < 0)
        return -ENOMEM;
    return 0;
}

static void ready_cb(evutil_socket_t fd, short what, void *arg)
{
    ps_daemon *d = arg;
    (void)fd;
    (void)what;
    if (d->state != PS_DAEMON_STARTING)
        return;
    d->state = PS_DAEMON_RUNNING;
    /* Ready means "serving signals and reconnecting", not "database up": a
     * daemon that blocked start-up on the database would fail the unit
     * exactly when the database has a bad minute. */
    update_status(d, "READY=1", true);
    ps_log_info("ready (%s)", d->status);
}

static int ready_setup(ps_daemon *d)
{
    struct timeval tv = {0, 0};
    d->ev_ready = evtimer_new(d->base, ready_cb, d);
    if (!d->ev_ready || evtimer_add(d->ev_ready, &tv) < 0)
        return -ENOMEM;
    return 0;
}

/* ------------------------------------------------------------------------ */

int ps_daemon_new(const char *config_path, ps_config *cfg, int log_level_override,
                  ps_daemon **out)
{
    *out = NULL;
    if (!config_path || !cfg) {
        ps_config_free(cfg);
        return -EINVAL;
    }
    ps_daemon *d = calloc(1, sizeof *d);
    if (!d) {
        ps_config_free(cfg);
        return -ENOMEM;
    }
    d->cfg = cfg;
    d->log_level_override = log_level_override;
    d->config_path = strdup(config_path);
    d->base = event_base_new();
    int r = -ENOMEM;
    if (!d->config_path || !d->base ||
        (r = ps_leader_new(d, leader_changed, d, &d->leader)) < 0) {
        ps_daemon_free(d);
        return r;
    }
    apply_log_level(d);
    *out = d;
    return 0;
}

int ps_daemon_add(ps_daemon *d, const ps_daemon_module *m)
{
    return ps_modules_add(&d->modules, d, m);
}

int ps_daemon_run(ps_daemon *d)
{
    int r;
    /* The order matters:
     * 1. signals first, so a SIGTERM during start-up is held for the loop
     *    rather than killing us half set up;
     * 2. the database connections (asynchronous: nothing waits for them);
     * 3. the watchdog and housekeeping timers;
     * 4. READY=1, queued to fire as the first thing the running loop does. */
    if ((r = signals_setup(d)) < 0 || (r = db_setup(d)) < 0 || (r = watchdog_setup(d)) < 0 ||
        (r = housekeeping_setup(d)) < 0 || (r = ready_setup(d)) < 0) {
        ps_log_error("start-up failed: %s", strerror(-r));
        return 1;
    }
    ps_log_info("starting (config %s, %zu table(s), migration %s)", d->config_path,
                d->cfg->migration.n_tables, d->cfg->migration.id);
    d->exit_code = 0;
    if (event_base_dispatch(d->base) < 0) {
        ps_log_error("event loop failed");
        d->exit_code = 1;
    } else if (d->state != PS_DAEMON_STOPPING && d->exit_code == 0) {
        /* The loop ran out of events without a stop request: a bug. */
        ps_log_error("event loop ended unexpectedly");
        d->exit_code = 1;
    }
    ps_leader_stop(d->leader); /* inert from here: the sessions end with the process */
    db_teardown(d);
    /* One more pass: libevent hands a DNS lookup abandoned by the teardown
     * back from the loop (see ps_pgconn_free), which frees it. */
    event_base_loop(d->base, EVLOOP_NONBLOCK);
    ps_log_flush_suppressed();
    return d->exit_code;
}

void ps_daemon_free(ps_daemon *d)
{
    if (!d)
        return;
    /* Modules first: their timers live on the base, and they may still
     * hold the connections' addresses. */
    ps_modules_free(&d->modules);
    d->control = NULL; /* freed with its module */
    db_teardown(d);
    ps_leader_free(d->leader);
    struct event *evs[] = {d->ev_hup,     d->ev_term,          d->ev_int,
                           d->ev_ready,   d->ev_watchdog,      d->ev_housekeeping,
                           d->ev_stop_poll};
    for (size_t i = 0; i < sizeof evs / sizeof *evs; i++)
        if (evs[i])
            event_free(evs[i]);
    if (d->base)
        event_base_free(d->base);
    ps_config_free(d->cfg);
    free(d->config_path);
    free(d);
}

const ps_config *ps_daemon_config(const ps_daemon *d)
{
    return d->cfg;
}

struct event_base *ps_daemon_base(ps_daemon *d)
{
    return d->base;
}

void ps_daemon_set_control(ps_daemon *d, ps_control *c)
{
    d->control = c;
}

ps_control *ps_daemon_control(ps_daemon *d)
{
    return d->control;
}

void ps_daemon_set_monitor(ps_daemon *d, ps_monitor *m)
{
    d->monitor = m;
}

ps_monitor *ps_daemon_monitor(ps_daemon *d)
{
    return d->monitor;
}

ps_pgconn *ps_daemon_main_conn(ps_daemon *d)
{
    return d->main;
}

ps_pgconn *ps_daemon_open_conn(ps_daemon *d, const char *name, const ps_pgconn_callbacks *cbs, void *arg)
{
    ps_pgconn_options o;
    ps_pgconn_options_init(&o);
    o.name = name;
    o.conninfo = d->cfg->database.conninfo;
    ps_pgconn *c = ps_pgconn_new(d->base, &o, cbs, arg);
    if (!c || ps_pgconn_start(c) < 0) {
        ps_log_error("cannot open the database connection %s", name);
        ps_pgconn_free(c);
        return NULL;
    }
    return c;
}

ps_pgconn *ps_daemon_work_conn(ps_daemon *d)
{
    return d->work;
}

ps_leader *ps_daemon_leader(ps_daemon *d)
{
    return d->leader;
}

bool ps_daemon_is_leader(ps_daemon *d)
{
    return ps_leader_is_leader(d->leader);
}

const ps_daemon_stats *ps_daemon_get_stats(const ps_daemon *d)
{
    return &d->stats;
}

ps_daemon_state ps_daemon_get_state(const ps_daemon *d)
{
    return d->state;
}

const char *ps_daemon_status(const ps_daemon *d)
{
    return d->status;
}

void ps_daemon_collect(ps_daemon *d, const ps_metric_sink *sink)
{
    static const ps_metric_counter counters[] = {
        {"pgshadow_daemon_notifies_total", "NOTIFYs received on either channel",
         offsetof(ps_daemon_stats, notifies)},
        {"pgshadow_daemon_resyncs_total", "catch-up rounds after the LISTEN connection came up",
         offsetof(ps_daemon_stats, resyncs)},
        {"pgshadow_daemon_reconnects_total", "LISTEN connection re-established after a loss",
         offsetof(ps_daemon_stats, reconnects)},
        {"pgshadow_daemon_reloads_total", "successful configuration reloads",
         offsetof(ps_daemon_stats, reloads)},
        {"pgshadow_daemon_reload_failures_total", "reloads refused: the file was invalid",
         offsetof(ps_daemon_stats, reload_failures)},
    };
    ps_metric_counters(sink, &d->stats, counters, sizeof counters / sizeof *counters);
    sink->sample(sink->ctx, "pgshadow_leader", PS_METRIC_GAUGE,
                 ps_leader_is_leader(d->leader) ? 1 : 0,
                 "1 while this daemon holds the migration's leader lock");
    sink->sample(sink->ctx, "pgshadow_leader_acquired_total", PS_METRIC_COUNTER,
                 (double)ps_leader_get_stats(d->leader)->acquired,
                 "times this process took the leader lock");
    ps_modules_collect(&d->modules, d, sink);
}
