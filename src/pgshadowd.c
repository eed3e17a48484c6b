/*
 * pgshadowd.c - the daemon's main: command line, config load, then the loop.
 *
 * Runs in the foreground (systemd supervises it; no double fork). Exit codes:
 * 0 clean stop, 1 runtime failure, 2 bad usage or bad config.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/config.h"
#include "pgshadow/daemon.h"
#include "pgshadow/errors.h"
#include "pgshadow/control.h"
#include "pgshadow/cutover.h"
#include "pgshadow/log.h"
#include "pgshadow/monitor.h"
#include "pgshadow/sampler.h"
#include "pgshadow/sync.h"
#include "pgshadow/verifier.h"

#define EXIT_USAGE 2

/*
 * The daemon's modules (ps_daemon_module, daemon.h), in setup order: created
 * and told of every event in this order, speaking in STATUS= in this order,
 * told of a lost leadership and freed in reverse. A module may rely on the
 * ones above it. The loop, signals, reload, the connections (main, work,
 * listen) and leadership (src/daemon/leader.c, which tells every module
 * through on_leader) are the daemon's own, not entries here.
 */
static const ps_daemon_module *const modules[] = {
    /* control (src/control.c): the command queue, daemon side.
     * Owns: taking pending commands (one at a time, each in one transaction
     * on main: claim, the handler's SQL, outcome and event, COMMIT) and the
     * handler table the modules below register with.
     * Needs: leadership (takes commands only while leading); the main
     * connection; NOTIFYs on pgshadow_control; migration.id. First, so every
     * module after it can register its commands in its create hook. */
    &ps_control_module,
    /* sync (src/sync/): keeps every shadow table in step with its primary.
     * Owns: apply and backfill rounds, the wake-up flag, replication-lag
     * throttling, the halt, the config vs installed registry check.
     * Needs: leadership (works only between on_leader gained and lost); the
     * main connection; NOTIFYs on pgshadow_changes; the config's migration
     * and sync sections; control, to register quarantine-retry. */
    &ps_sync_module,
    /* verify (src/verify/): proves the shadows equal to their primaries.
     * Owns: verify passes (chunks digested on both sides), the second
     * looks at queued keys, repairs through the change log, the "verify"
     * command; sync.workers connections of its own ("verify1", ...).
     * Needs: leadership; the config's verify and sync (workers,
     * chunk_target) sections; control, to register verify; apply (sync)
     * to carry out repairs and to queue the keys it writes. */
    &ps_verify_module,
    /* monitor (src/monitor/): the dashboard poller.
     * Owns: reading this migration's rows of public.shadow_migration_dashboard
     * and its row of public.migration_success_metrics every
     * monitor.poll_interval, the latest snapshot (ps_monitor_latest, through
     * ps_daemon_monitor: the cutover's gate inputs), stale when a poll fails
     * or is late, and the "dashboard: ..." log line of each change.
     * Needs: leadership (polls only between on_leader gained and lost); the
     * work connection (a poll never queues behind a write on main);
     * migration.id and monitor.poll_interval. After sync, whose progress
     * the dashboard shows. */
    &ps_monitor_module,
    /* sampler (src/monitor/sampler.c): shadow-read sampling.
     * Owns: the sampling timer (verify.sample_interval), one
     * pgshadow.sample_reads round at a time, its warnings, the window's
     * mismatches and p99 ratio (STATUS=, metrics: gate inputs).
     * Needs: leadership; the work connection (shared with other readers);
     * the config's migration.id and verify section. After sync: it samples
     * only tables whose backfill sync has finished. */
    &ps_sampler_module,
    /* cutover (src/cutover/): the staged read-percentage cutover.
     * Owns: the pgshadow.cutover row of this migration (read on leadership,
     * written only through pgshadow.cutover_write: state, every table's
     * read percent and the event in one transaction), the schedule in
     * force (kept when a reload breaks rule 6), the gate evaluation after
     * every dashboard poll, the commands start, pause, resume, step-down,
     * rollback, abort, extend.
     * Needs: leadership; the main connection; control (its commands);
     * monitor (the snapshot and its listener) and, through it, sampling's
     * window; the config's cutover, monitor and verify sections. Last: it
     * reads what every module above produces. */
    &ps_cutover_module,
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: pgshadowd [-c FILE] [--check-config] [--log-level LEVEL] [--version] [--help]\n"
            "\n"
            "  -c, --config FILE      configuration file (default " PS_CONFIG_DEFAULT_PATH ")\n"
            "      --check-config     validate the configuration and exit\n"
            "      --log-level LEVEL  debug|info|notice|warning|error (overrides log.level)\n"
            "      --version          print the version and exit\n"
            "  -h, --help             print this help and exit\n"
            "\n"
            "Signals: SIGHUP reloads the configuration; SIGTERM/SIGINT stop gracefully\n"
            "(a second one stops at once). See pgshadowd(8).\n");
}

int main(int argc, char **argv)
{
    enum { OPT_CHECK = 256, OPT_LOG_LEVEL, OPT_VERSION };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = PS_CONFIG_DEFAULT_PATH;
    bool check = false;
    int level_override = -1;
    int c;

    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case OPT_CHECK:
            check = true;
            break;
        case OPT_LOG_LEVEL:
            level_override = ps_log_level_parse(optarg);
            if (level_override < 0) {
                fprintf(stderr, "pgshadowd: unknown log level '%s' "
                                "(debug|info|notice|warning|error)\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case OPT_VERSION:
            printf("pgshadowd %s\n", PGSHADOW_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pgshadowd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }

    ps_errors errs;
    ps_errors_init(&errs);
    ps_config *cfg = NULL;

    if (check) {
        if (ps_config_load(path, &cfg, &errs) < 0) {
            ps_errors_print(&errs, stderr);
            ps_errors_clear(&errs);
            return EXIT_USAGE;
        }
        ps_config_free(cfg);
        printf("configuration OK\n");
        return 0;
    }

    ps_log_setup("pgshadowd", level_override >= 0 ? level_override : LOG_INFO);
    if (ps_config_load(path, &cfg, &errs) < 0) {
        for (size_t i = 0; i < errs.count; i++) {
            char *line = ps_error_format(&errs.items[i]);
            ps_log_error("%s", line ? line : errs.items[i].message);
            free(line);
        }
        ps_log_error("not starting: %s is invalid", path);
        ps_errors_clear(&errs);
        return EXIT_USAGE;
    }

    ps_daemon *d = NULL;
    int r = ps_daemon_new(path, cfg, level_override, &d); /* takes cfg */
    if (r < 0) {
        ps_log_error("cannot set up the daemon: %s", strerror(-r));
        return 1;
    }
    for (size_t i = 0; i < sizeof modules / sizeof *modules; i++) {
        if ((r = ps_daemon_add(d, modules[i])) < 0) {
            ps_log_error("cannot set up module %s: %s", modules[i]->name, strerror(-r));
            ps_daemon_free(d);
            return 1;
        }
    }
    int code = ps_daemon_run(d);
    ps_daemon_free(d); /* the modules first, in reverse order */
    return code;
}
