/*
 * daemon.h - the pgshadowd process: one event loop, signals, reload, watchdog,
 * the database connections (main, work, listen), leadership, and the table of
 * modules that hang off them.
 *
 * Everything lives in one ps_daemon context passed explicitly. Feature modules
 * (sync engine, verifier, cutover, metrics...) do not own the loop: each is a
 * ps_daemon_module, added with ps_daemon_add in the order of the table in
 * src/pgshadowd.c, and called at the moments that matter:
 *
 *   create      build the module's state (timers on the daemon's base);
 *               nothing runs before the loop. Table order.
 *   free        release it, after the loop ended. Reverse table order.
 *   on_db_up    the LISTEN connection came up (first connect and every
 *               reconnect), LISTENs re-issued: NOTIFYs may have been lost while
 *               down, so this is where a module catches up ("resync").
 *   on_leader   this daemon became the leader (true) or stopped being it
 *               (false). Called only on a change: gained in table order, lost
 *               in reverse. A module whose work must run on one daemon only
 *               starts it on gained and drops it on lost.
 *   on_notify   a NOTIFY on pgshadow_changes or pgshadow_control.
 *   on_reload   a new, valid config was swapped in (old is still valid during
 *               the call and freed afterwards).
 *   on_stop     SIGTERM/SIGINT: start no new work; work in flight on the main
 *               connection is given up to PS_DAEMON_STOP_TIMEOUT_MS to finish.
 *   status      the module's own words for STATUS= ("backfill done; lag
 *               1.2s"), joined to the others with "; "; nothing when it has
 *               nothing to say. The daemon adds no words of its own after
 *               "connected".
 *   collect     report its counters and gauges to a metrics sink.
 *
 * Every hook may be NULL. All run on the loop and must not block it.
 */
#ifndef PGSHADOW_DAEMON_H
#define PGSHADOW_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "pgshadow/config.h"
#include "pgshadow/pgconn.h"

#define PS_DAEMON_CHANNEL_CHANGES "pgshadow_changes"
#define PS_DAEMON_CHANNEL_CONTROL "pgshadow_control"
#define PS_DAEMON_STOP_TIMEOUT_MS 10000     /* graceful stop: wait this long for the query in flight */
#define PS_DAEMON_HOUSEKEEPING_MS 1000      /* STATUS refresh, log flush */
#define PS_DAEMON_MAX_MODULES 16

typedef struct ps_daemon ps_daemon;
typedef struct ps_leader ps_leader; /* leader.h */

/* Metrics: a collect hook reports each sample to the sink, which a metrics
 * endpoint renders. name is a Prometheus name ("pgshadow_sync_applied_total"),
 * help one line; both are static strings. */
typedef enum { PS_METRIC_COUNTER = 0, PS_METRIC_GAUGE } ps_metric_kind;

typedef struct ps_metric_sink {
    void (*sample)(void *ctx, const char *name, ps_metric_kind kind, double value,
                   const char *help);
    void *ctx;
} ps_metric_sink;

/* One uint64_t counter of a stats struct: its metric name, help, offset. */
typedef struct ps_metric_counter {
    const char *name, *help;
    size_t off;
} ps_metric_counter;

/* Report every counter of `stats` (a struct of uint64_t counters, such as
 * ps_daemon_stats) to sink: the usual body of a collect hook. */
void ps_metric_counters(const ps_metric_sink *sink, const void *stats,
                        const ps_metric_counter *counters, size_t n);

typedef struct ps_daemon_module {
    const char *name;
    /* 0 and *arg (passed to every other hook), or -errno: the daemon does not
     * start. NULL: arg is NULL. */
    int (*create)(ps_daemon *d, void **arg);
    void (*free)(void *arg);
    void (*on_db_up)(ps_daemon *d, void *arg);
    void (*on_leader)(ps_daemon *d, bool leader, void *arg);
    void (*on_notify)(ps_daemon *d, const char *channel, const char *payload, void *arg);
    void (*on_reload)(ps_daemon *d, const ps_config *old_cfg, const ps_config *new_cfg,
                      void *arg);
    void (*on_stop)(ps_daemon *d, void *arg);
    /* Write at most len bytes (NUL included) for STATUS=; return the length
     * written, 0 for nothing. */
    size_t (*status)(ps_daemon *d, char *buf, size_t len, void *arg);
    void (*collect)(ps_daemon *d, const ps_metric_sink *sink, void *arg);
} ps_daemon_module;

/* Counters for a later metrics/status module. Monotonic for the process. */
typedef struct ps_daemon_stats {
    uint64_t notifies;        /* NOTIFYs received on either channel */
    uint64_t resyncs;         /* on_db_up rounds (first connect included) */
    uint64_t reconnects;      /* LISTEN connection re-established after a loss */
    uint64_t reloads;         /* successful SIGHUP reloads */
    uint64_t reload_failures; /* SIGHUPs whose file was invalid (old config kept) */
} ps_daemon_stats;

typedef enum {
    PS_DAEMON_STARTING = 0, /* set up, loop not yet running */
    PS_DAEMON_RUNNING,      /* READY=1 sent */
    PS_DAEMON_STOPPING,     /* STOPPING=1 sent, waiting for work in flight */
} ps_daemon_state;

/* Build a daemon around a loaded config (ownership of cfg passes to the daemon,
 * also on failure). config_path is what SIGHUP re-reads. log_level_override is
 * a syslog priority from --log-level, which then wins over log.level across
 * reloads, or -1 to follow the config. Nothing is connected yet.
 * Returns 0 and *out, or -errno. */
int ps_daemon_new(const char *config_path, ps_config *cfg, int log_level_override,
                  ps_daemon **out);

/* Create module m (its create hook) and append it to the daemon's table; the
 * struct must outlive the daemon. Before ps_daemon_run. Returns 0, -ENOSPC
 * when the table is full, or the create hook's -errno (nothing added). The
 * daemon frees its modules, in reverse order, in ps_daemon_free. */
int ps_daemon_add(ps_daemon *d, const ps_daemon_module *m);

/* Set up signals, connections, timers; send READY=1 once the loop runs; run
 * until stopped. Does not wait for the database: it may be down at start and
 * STATUS says so. Returns the process exit code: 0 after a requested stop
 * (graceful or a second signal), 1 on a runtime failure. */
int ps_daemon_run(ps_daemon *d);

/* Same as SIGTERM (graceful; a second call stops at once). */
void ps_daemon_stop(ps_daemon *d);

/* Same as SIGHUP: re-read config_path; invalid -> errors logged, old config
 * kept, returns -EINVAL; valid -> diff logged, swapped, returns 0. */
int ps_daemon_reload(ps_daemon *d);

/* Frees the modules (reverse order), then the connections and the loop.
 * NULL is a no-op. */
void ps_daemon_free(ps_daemon *d);

/* Accessors for modules. The config pointer changes on reload: do not keep it
 * across callbacks. */
const ps_config *ps_daemon_config(const ps_daemon *d);
struct event_base *ps_daemon_base(ps_daemon *d);
/* "main": short writes (apply, backfill, cutover actions), in the session
 * that holds the leader lock. NULL before run. */
ps_pgconn *ps_daemon_main_conn(ps_daemon *d);
/* "work": long reads (dashboard polls, read sampling), so they never queue
 * ahead of a write on main, and the cutover's state writes, so a trip never
 * waits behind apply. Kept up with main's session settings; the
 * monitor module polls the dashboard on it, the sampler samples on it
 * (verify has connections of its own). NULL before run. */
ps_pgconn *ps_daemon_work_conn(ps_daemon *d);
/* A connection of a module's own (a worker pool's): named name ("verify1"),
 * to the config's conninfo as it is now, with the daemon's connection
 * defaults, started (it connects in the background: cbs->on_up). NULL when
 * it cannot be created (logged). The module frees it (ps_pgconn_free). */
ps_pgconn *ps_daemon_open_conn(ps_daemon *d, const char *name, const ps_pgconn_callbacks *cbs, void *arg);
/* The command queue (control.h): the control module sets it in its create
 * hook; a module later in the table registers the commands it carries out
 * (ps_control_register) in its own create hook. NULL without the module. */
typedef struct ps_control ps_control;
void ps_daemon_set_control(ps_daemon *d, ps_control *c);
ps_control *ps_daemon_control(ps_daemon *d);
/* The dashboard poller (monitor.h): the monitor module sets it in its
 * create hook; a module later in the table (the cutover) reads the latest
 * snapshot with ps_monitor_latest(ps_daemon_monitor(d), now). NULL without
 * the module. */
typedef struct ps_monitor ps_monitor;
void ps_daemon_set_monitor(ps_daemon *d, ps_monitor *m);
ps_monitor *ps_daemon_monitor(ps_daemon *d);
/* The leader (leader.h), for its role, backend pid, counters. */
ps_leader *ps_daemon_leader(ps_daemon *d);
/* This daemon holds the leader lock in the session of the main connection up
 * now. Live: false the moment that session is gone, before on_leader says
 * so; a module checks it before it sends work to main. */
bool ps_daemon_is_leader(ps_daemon *d);
const ps_daemon_stats *ps_daemon_get_stats(const ps_daemon *d);
ps_daemon_state ps_daemon_get_state(const ps_daemon *d);

/* The current STATUS= line (as last sent), for a status endpoint. */
const char *ps_daemon_status(const ps_daemon *d);

/* Every sample of the daemon (its ps_daemon_stats) and of each module's
 * collect hook, in table order. */
void ps_daemon_collect(ps_daemon *d, const ps_metric_sink *sink);

#endif
