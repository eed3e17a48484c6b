/*
 * commands.c - pgshadowctl's command table and its entry point: global
 * options, dispatch by the table, and --help generated from it.
 *
 * Owns: ps_ctl_commands, the one list of what pgshadowctl can do (name,
 * handler, whether it talks to the database, argument bounds, usage and
 * summary). --help is printed from it and man/pgshadowctl.1 is tested
 * against it (tests/unit/test-ctl.c), so neither can drift.
 * Invariants: a command that a later release brings is listed with the
 * feature it arrives with and refused honestly (exit 2), never faked; an
 * unknown global option is a usage error naming it (never its value).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "pgshadow/config.h"
#include "pgshadow/ctl.h"

/* One row per command, in --help order. Handlers live in one file per
 * family: cmd_setup.c (check, install, uninstall), cmd_capture.c (the
 * capture switch and routing), cmd_control.c (what goes through the command
 * queue to the leading daemon). */
const ps_ctl_command ps_ctl_commands[] = {
    {"check", "", "preflight: PASS/WARN/FAIL per check", ps_ctl_cmd_check, NULL, true, 0, 0},
    {"install", "[--dry-run]", "schema, capture triggers, missing shadow tables", ps_ctl_cmd_install,
     NULL, true, 0, 0},
    {"uninstall", "[--drop-shadow] [--dry-run]", "remove this migration (all of pgshadow when it is the last)",
     ps_ctl_cmd_uninstall, NULL, true, 0, 0},
    {"disable-writes", "[TABLE]", "stop capture (all tables, or one)", ps_ctl_cmd_disable_writes, NULL,
     true, 0, 1},
    {"enable-writes", "[TABLE]", "resume capture (a full resync follows)", ps_ctl_cmd_enable_writes, NULL,
     true, 0, 1},
    {"route", "[--percent N] TABLE KEY", "print primary or shadow", ps_ctl_cmd_route, NULL, false, 2, 2},
    {"quarantine", "retry ID|all [--reason TEXT] [--timeout D] [--queue]",
     "re-queue quarantined keys, through the daemon", ps_ctl_cmd_quarantine, NULL, true, 2, 2},
    {"verify", "[TABLE] [--wait] [--reason TEXT] [--timeout D] [--queue]",
     "verify primary against shadow now, through the daemon", ps_ctl_cmd_verify, NULL, true, 0, 1},
    {"status", "[--json] [--watch]", "the cutover: state, stage, hold, every gate", ps_ctl_cmd_status, NULL, true,
     0, 0},
    {"events", "[--since D] [--json]", "the audit log (default: the last hour)", ps_ctl_cmd_events, NULL, true, 0,
     0},
    {"start", "[--reason TEXT] [--timeout D] [--queue]", "start the cutover at its first stage",
     ps_ctl_cmd_cutover, NULL, true, 0, 0},
    {"pause", "[--reason TEXT] [--timeout D] [--queue]", "hold the read percent where it is", ps_ctl_cmd_cutover,
     NULL, true, 0, 0},
    {"resume", "[--reason TEXT] [--timeout D] [--queue]", "go on after a pause", ps_ctl_cmd_cutover, NULL, true,
     0, 0},
    {"step-down", "[--reason TEXT] [--timeout D] [--queue]", "one stage down", ps_ctl_cmd_cutover, NULL, true, 0,
     0},
    {"rollback", "[--reason TEXT] [--timeout D] [--queue]", "reads back on the primary (0%)", ps_ctl_cmd_cutover,
     NULL, true, 0, 0},
    {"abort", "[--reason TEXT] [--timeout D] [--queue]", "reads on the primary, cutover ended for good",
     ps_ctl_cmd_cutover, NULL, true, 0, 0},
    {"extend", "DURATION [--reason TEXT] [--timeout D] [--queue]", "hold the stage in force longer",
     ps_ctl_cmd_extend, NULL, true, 1, 1},
    {"promote", "[--dry-run] [--without-revert] [--reason TEXT] [--timeout D] [--queue]",
     "swap every shadow in as the primary (--dry-run: the plan)", ps_ctl_cmd_promote, NULL, true, 0, 0},
    {"revert", "[--dry-run] [--reason TEXT] [--timeout D] [--queue]",
     "undo a promote: the legacy tables back, nothing lost (--dry-run: the plan)", ps_ctl_cmd_revert, NULL, true,
     0, 0},
    {"finalize", "[--yes] [--reason TEXT] [--timeout D] [--queue]",
     "drop the legacy tables and what else promote left (asks first)", ps_ctl_cmd_finalize, NULL, true, 0, 0},
    {NULL, NULL, NULL, NULL, NULL, false, 0, 0},
};

const ps_ctl_command *ps_ctl_command_find(const char *name)
{
    for (const ps_ctl_command *c = ps_ctl_commands; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

void ps_ctl_print_usage(FILE *out)
{
    fputs("usage: pgshadowctl [-c FILE] COMMAND [ARGS]\n\nCommands:\n", out);
    for (const ps_ctl_command *c = ps_ctl_commands; c->name; c++) {
        if (!c->run)
            continue;
        char head[64];
        snprintf(head, sizeof head, "%s%s%s", c->name, *c->args ? " " : "", c->args);
        if (strlen(head) < 31)
            fprintf(out, "  %-31s%s\n", head, c->summary);
        else
            fprintf(out, "  %s\n  %-31s%s\n", head, "", c->summary);
    }
    fputs("Not in this release:", out);
    size_t col = 20;
    for (const ps_ctl_command *c = ps_ctl_commands; c->name; c++) {
        if (c->run)
            continue;
        size_t n = strlen(c->name) + 2;
        if (col + n > 78) {
            fputs("\n ", out);
            col = 1;
        }
        fprintf(out, " %s", c->name);
        col += n;
    }
    fputs("\n\nOptions:\n"
          "  -c, --config FILE   configuration file (default " PS_CONFIG_DEFAULT_PATH ")\n"
          "  -h, --help          show this help\n"
          "  -V, --version       show the version\n"
          "\n"
          "Exit codes: 0 done, 1 failed, 2 bad usage or config, 3 refused.\n",
          out);
}

int ps_ctl_main(int argc, char **argv)
{
    ps_ctl ctl = {.config_path = PS_CONFIG_DEFAULT_PATH};
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;
    opterr = 0;
    optind = 0; /* a fresh scan: the CLI may run more than once in a process (tests) */
    for (;;) {
        /* The element getopt reads from: in a bundle ("-xV") it has not
         * moved past it when it reports an error, so argv[optind - 1] would
         * name the one before (argv[0] for the first). */
        const char *at = argv[optind > 0 ? optind : 1];
        /* "+": stop at the command; its own options are parsed by the
         * command. ":": a missing argument is told from an unknown option. */
        c = getopt_long(argc, argv, "+:c:hV", opts, NULL);
        if (c == -1)
            break;
        bool is_long = at && strncmp(at, "--", 2) == 0;
        char name[64];
        switch (c) {
        case 'c':
            ctl.config_path = optarg;
            break;
        case 'h':
            ps_ctl_print_usage(stdout);
            return PS_CTL_EXIT_OK;
        case 'V':
            puts("pgshadowctl " PGSHADOW_VERSION);
            return PS_CTL_EXIT_OK;
        case ':':
            if (is_long)
                return ps_ctl_usage_error("option '%s' needs a FILE",
                                          ps_ctl_option_name(at, name, sizeof name));
            return ps_ctl_usage_error("%s", "option '-c' needs a FILE");
        default:
            if (is_long && optopt != 0) /* a known option given "=value" it does not take */
                return ps_ctl_usage_error("option '%s' takes no argument",
                                          ps_ctl_option_name(at, name, sizeof name));
            if (is_long)
                return ps_ctl_usage_error("unknown option '%s'", ps_ctl_option_name(at, name, sizeof name));
            if (optopt > 0x20 && optopt < 0x7f)
                snprintf(name, sizeof name, "-%c", optopt);
            else
                snprintf(name, sizeof name, "-\\x%02x", (unsigned)(unsigned char)optopt);
            return ps_ctl_usage_error("unknown option '%s'", name);
        }
    }
    if (optind >= argc)
        return ps_ctl_usage_error("%s", "no command given");

    const ps_ctl_command *cmd = ps_ctl_command_find(argv[optind]);
    if (!cmd)
        return ps_ctl_usage_error("unknown command '%s'", argv[optind]);
    if (!cmd->run) {
        fprintf(stderr, "pgshadowctl: '%s' is not available in this release (it arrives with %s)\n",
                cmd->name, cmd->arrives_with);
        return PS_CTL_EXIT_USAGE;
    }
    int rc = cmd->run(&ctl, cmd, argc - optind, argv + optind);
    ps_ctl_finish(&ctl);
    return rc;
}
