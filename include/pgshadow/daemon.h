/*
 * daemon.h - the pgshadowd process: one event loop, signals, reload, watchdog,
 * the two database connections, and the table of modules that hang off them.
 *
 * Everything lives in one ps_daemon context passed explicitly. Feature modules
 * (sync engine, verifier, cutover, metrics...) do not own the loop: they
 * register a ps_daemon_module and are called at the moments that matter:
 *
 *   on_db_up    the LISTEN connection came up (first connect and every
 *               reconnect), LISTENs re-issued: NOTIFYs may have been lost while
 *               down, so this is where a module catches up ("resync").
 *   on_notify   a NOTIFY on pgshadow_changes or pgshadow_control.
 *   on_reload   a new, valid config was swapped in (old is still valid during
 *               the call and freed afterwards).
 *   on_stop     SIGTERM/SIGINT: start no new work; work in flight on the main
 *               connection is given up to PS_DAEMON_STOP_TIMEOUT_MS to finish.
 *   status      append a short progress text for STATUS= ("stage 5%; lag 1.2s").
 *
 * Modules are called in registration order; all callbacks run on the loop and
 * must not block it.
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

typedef struct ps_daemon_module {
    const char *name;
    void (*on_db_up)(ps_daemon *d, void *arg);
    void (*on_notify)(ps_daemon *d, const char *channel, const char *payload, void *arg);
    void (*on_reload)(ps_daemon *d, const ps_config *old_cfg, const ps_config *new_cfg,
                      void *arg);
    void (*on_stop)(ps_daemon *d, void *arg);
    /* Write at most len bytes (NUL included) of progress for STATUS=; return
     * the length written. NULL: the module contributes nothing. */
    size_t (*status)(ps_daemon *d, char *buf, size_t len, void *arg);
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

/* Register a module (the struct must outlive the daemon). Before ps_daemon_run.
 * Returns 0, -ENOSPC when the table is full. */
int ps_daemon_register(ps_daemon *d, const ps_daemon_module *m, void *arg);

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

void ps_daemon_free(ps_daemon *d); /* NULL is a no-op */

/* Accessors for modules. The config pointer changes on reload: do not keep it
 * across callbacks. */
const ps_config *ps_daemon_config(const ps_daemon *d);
struct event_base *ps_daemon_base(ps_daemon *d);
ps_pgconn *ps_daemon_main_conn(ps_daemon *d); /* for queries; NULL before run */
const ps_daemon_stats *ps_daemon_get_stats(const ps_daemon *d);
ps_daemon_state ps_daemon_get_state(const ps_daemon *d);

/* The current STATUS= line (as last sent), for a status endpoint. */
const char *ps_daemon_status(const ps_daemon *d);

#endif
