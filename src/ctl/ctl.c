/*
 * ctl.c - pgshadowctl's command line: parsing, dispatch, config and connection,
 * and the small commands (route, disable-writes, enable-writes).
 *
 * Invariants: exit codes are the contract's (0 done, 1 failed, 2 bad usage or
 * config, 3 refused); a conninfo is never printed unredacted; commands the
 * release does not have yet are recognised and refused honestly (exit 2),
 * never faked. An argument that starts with '-' before "--" is an option,
 * and an unknown one is a usage error naming it (its name, never its value:
 * a mistyped --conninfo=... may hold a password), never an operand.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/config.h"
#include "pgshadow/ctl.h"
#include "pgshadow/errors.h"
#include "pgshadow/redact.h"
#include "pgshadow/route.h"

static const char usage_text[] =
    "usage: pgshadowctl [-c FILE] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  check                          preflight: PASS/WARN/FAIL per check\n"
    "  install [--dry-run]            schema, capture triggers, missing shadow tables\n"
    "  uninstall [--drop-shadow] [--dry-run]\n"
    "  disable-writes [TABLE]         stop capture (all tables, or one)\n"
    "  enable-writes [TABLE]          resume capture\n"
    "  route [--percent N] TABLE KEY  print primary or shadow\n"
    "Not in this release: status, events, start, pause, resume, step-down, rollback,\n"
    "  abort, extend, promote, revert, finalize, verify, quarantine\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE   configuration file (default " PS_CONFIG_DEFAULT_PATH ")\n"
    "  -h, --help          show this help\n"
    "  -V, --version       show the version\n"
    "\n"
    "Exit codes: 0 done, 1 failed, 2 bad usage or config, 3 refused.\n";

static int usage_error(const char *fmt, const char *arg)
{
    fputs("pgshadowctl: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'pgshadowctl --help'.\n", stderr);
    return PS_CTL_EXIT_USAGE;
}

/* "--name" of a "--name=value" argument, or the argument: an error names
 * the option, never its value. A long name is cut between UTF-8 characters. */
static const char *option_name(const char *arg, char *buf, size_t len)
{
    size_t n = strcspn(arg, "=");
    if (n >= len) {
        n = len - 1;
        while (n > 0 && ((unsigned char)arg[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(buf, arg, n);
    buf[n] = '\0';
    return buf;
}

/* The options a command takes: each a flag (set to true) or, with value,
 * one that takes an argument ("--name V" or "--name=V"). */
typedef struct cmd_option {
    const char *name;
    bool *flag;
    const char **value; /* NULL when it takes no argument */
} cmd_option;

/*
 * A command's own arguments (argv[0] is the command): options, in any order
 * among the operands, up to a "--"; operands, at most max_pos, into pos. An
 * unknown option is an error, never an operand: "route --json t" must not
 * route table "--json". Returns PS_CTL_EXIT_OK or the usage error printed.
 */
static int command_args(int argc, char **argv, const cmd_option *opts, const char **pos,
                        int max_pos, int *npos)
{
    const char *cmd = argv[0];
    char name[64], msg[160];
    bool options = true;
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options && strcmp(a, "--") == 0) {
            options = false;
            continue;
        }
        if (!options || a[0] != '-' || a[1] == '\0') {
            if (*npos == max_pos) {
                snprintf(msg, sizeof msg, "%s: unexpected argument '%%s'", cmd);
                return usage_error(msg, a);
            }
            pos[(*npos)++] = a;
            continue;
        }
        option_name(a, name, sizeof name);
        const cmd_option *o = opts;
        while (o && o->name && strcmp(o->name, name) != 0)
            o++;
        if (!o || !o->name) {
            snprintf(msg, sizeof msg, "%s: unknown option '%%s'", cmd);
            return usage_error(msg, name);
        }
        const char *eq = strchr(a, '=');
        if (!o->value) {
            if (eq) {
                snprintf(msg, sizeof msg, "%s: option '%%s' takes no argument", cmd);
                return usage_error(msg, name);
            }
            *o->flag = true;
        } else if (eq) {
            *o->value = eq + 1;
        } else {
            *o->value = i + 1 < argc ? argv[++i] : "";
        }
    }
    return PS_CTL_EXIT_OK;
}

int ps_ctl_load_config(ps_ctl *ctl)
{
    if (ctl->cfg)
        return PS_CTL_EXIT_OK;
    ps_errors errs;
    ps_errors_init(&errs);
    if (ps_config_load(ctl->config_path, &ctl->cfg, &errs) != 0) {
        if (errs.count == 0)
            fprintf(stderr, "pgshadowctl: %s: cannot load the configuration\n", ctl->config_path);
        ps_errors_print(&errs, stderr);
        ps_errors_clear(&errs);
        return PS_CTL_EXIT_USAGE;
    }
    ps_errors_clear(&errs);
    return PS_CTL_EXIT_OK;
}

int ps_ctl_connect(ps_ctl *ctl)
{
    if (ctl->conn)
        return PS_CTL_EXIT_OK;
    int rc = ps_ctl_load_config(ctl);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    /* the user's conninfo is expanded from dbname; application_name is only
     * a fallback so the user's own setting wins */
    const char *keys[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {ctl->cfg->database.conninfo, "pgshadowctl", NULL};
    ctl->conn = PQconnectdbParams(keys, vals, 1);
    if (!ctl->conn || PQstatus(ctl->conn) != CONNECTION_OK) {
        char *shown = ps_redact_conninfo(ctl->cfg->database.conninfo);
        char msg[1024];
        ps_redact_secrets(ctl->conn ? PQerrorMessage(ctl->conn) : "out of memory\n", msg,
                          sizeof(msg));
        fprintf(stderr, "pgshadowctl: cannot connect to \"%s\": %s", shown ? shown : "?", msg);
        free(shown);
        PQfinish(ctl->conn);
        ctl->conn = NULL;
        return PS_CTL_EXIT_FAILED;
    }
    return PS_CTL_EXIT_OK;
}

int ps_ctl_cmd_check(ps_ctl *ctl)
{
    int rc = ps_ctl_connect(ctl);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    ps_check_report r;
    ps_check_report_init(&r);
    ps_check_run(ctl->conn, ctl->cfg, &r);
    ps_check_report_print(&r, PS_CHECK_PASS, stdout);
    rc = r.worst == PS_CHECK_FAIL ? PS_CTL_EXIT_FAILED : PS_CTL_EXIT_OK;
    ps_check_report_free(&r);
    return rc;
}

static int parse_percent(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > 100)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

static int cmd_route(ps_ctl *ctl, int argc, char **argv)
{
    int percent = -1;
    const char *percent_text = NULL;
    const char *pos[2];
    int npos = 0;
    const cmd_option opts[] = {{"--percent", NULL, &percent_text}, {NULL, NULL, NULL}};
    int rc = command_args(argc, argv, opts, pos, 2, &npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    if (percent_text && parse_percent(percent_text, &percent) != 0)
        return usage_error("route: --percent needs an integer 0..100, got '%s'", percent_text);
    if (npos != 2)
        return usage_error("%s", "route: usage: route [--percent N] TABLE KEY");

    if (percent < 0) {
        rc = ps_ctl_connect(ctl);
        if (rc != PS_CTL_EXIT_OK)
            return rc;
        const char *params[1] = {pos[0]};
        PGresult *res = PQexecParams(ctl->conn, "SELECT pgshadow.read_percent($1)", 1, NULL,
                                     params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            ps_ctl_print_pg_error("route", ctl->conn, res);
            PQclear(res);
            return PS_CTL_EXIT_FAILED;
        }
        percent = PQgetisnull(res, 0, 0) ? 0 : atoi(PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    puts(ps_route_to_shadow(pos[0], pos[1], percent) ? "shadow" : "primary");
    return PS_CTL_EXIT_OK;
}

static int cmd_writes(ps_ctl *ctl, int argc, char **argv, bool enable)
{
    const char *pos[1] = {NULL};
    int npos;
    int rc = command_args(argc, argv, NULL, pos, 1, &npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    const char *table = pos[0];
    rc = ps_ctl_connect(ctl);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    const char *params[1] = {table};
    PGresult *res = PQexecParams(ctl->conn,
                                 enable ? "SELECT pgshadow.enable_writes($1)"
                                        : "SELECT pgshadow.disable_writes($1)",
                                 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ps_ctl_print_pg_error(argv[0], ctl->conn, res);
        PQclear(res);
        return PS_CTL_EXIT_FAILED;
    }
    PQclear(res);
    if (table)
        printf("capture %s for table %s (flag shadow_writes_%s %s)\n",
               enable ? "enabled" : "disabled", table, table, enable ? "on" : "off");
    else
        printf("capture %s for every table (master switch %s)\n",
               enable ? "enabled" : "disabled", enable ? "on" : "off");
    return PS_CTL_EXIT_OK;
}

/* The contract's commands that later releases bring, and what brings them. */
static const struct {
    const char *name;
    const char *arrives_with;
} later_commands[] = {
    {"status", "the sync engine"},         {"events", "the sync engine"},
    {"start", "the cutover controller"},   {"pause", "the cutover controller"},
    {"resume", "the cutover controller"},  {"step-down", "the cutover controller"},
    {"rollback", "the cutover controller"}, {"abort", "the cutover controller"},
    {"extend", "the cutover controller"},  {"promote", "promote"},
    {"revert", "promote"},                 {"finalize", "promote"},
    {"verify", "verification"},            {"quarantine", "the sync engine"},
};

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
            fputs(usage_text, stdout);
            return PS_CTL_EXIT_OK;
        case 'V':
            puts("pgshadowctl " PGSHADOW_VERSION);
            return PS_CTL_EXIT_OK;
        case ':':
            if (is_long)
                return usage_error("option '%s' needs a FILE", option_name(at, name, sizeof name));
            return usage_error("%s", "option '-c' needs a FILE");
        default:
            if (is_long && optopt != 0) /* a known option given "=value" it does not take */
                return usage_error("option '%s' takes no argument",
                                   option_name(at, name, sizeof name));
            if (is_long)
                return usage_error("unknown option '%s'", option_name(at, name, sizeof name));
            if (optopt > 0x20 && optopt < 0x7f)
                snprintf(name, sizeof name, "-%c", optopt);
            else
                snprintf(name, sizeof name, "-\\x%02x", (unsigned)(unsigned char)optopt);
            return usage_error("unknown option '%s'", name);
        }
    }
    if (optind >= argc)
        return usage_error("%s", "no command given");

    int cargc = argc - optind;
    char **cargv = argv + optind;
    const char *cmd = cargv[0];
    int rc;

    bool dry = false, drop = false;
    const cmd_option install_opts[] = {{"--dry-run", &dry, NULL}, {NULL, NULL, NULL}};
    const cmd_option uninstall_opts[] = {
        {"--dry-run", &dry, NULL}, {"--drop-shadow", &drop, NULL}, {NULL, NULL, NULL}};
    int npos;
    if (strcmp(cmd, "check") == 0) {
        if ((rc = command_args(cargc, cargv, NULL, NULL, 0, &npos)) != PS_CTL_EXIT_OK)
            return rc;
        rc = ps_ctl_cmd_check(&ctl);
    } else if (strcmp(cmd, "install") == 0) {
        if ((rc = command_args(cargc, cargv, install_opts, NULL, 0, &npos)) != PS_CTL_EXIT_OK)
            return rc;
        rc = ps_ctl_cmd_install(&ctl, dry);
    } else if (strcmp(cmd, "uninstall") == 0) {
        if ((rc = command_args(cargc, cargv, uninstall_opts, NULL, 0, &npos)) != PS_CTL_EXIT_OK)
            return rc;
        rc = ps_ctl_cmd_uninstall(&ctl, drop, dry);
    } else if (strcmp(cmd, "disable-writes") == 0) {
        rc = cmd_writes(&ctl, cargc, cargv, false);
    } else if (strcmp(cmd, "enable-writes") == 0) {
        rc = cmd_writes(&ctl, cargc, cargv, true);
    } else if (strcmp(cmd, "route") == 0) {
        rc = cmd_route(&ctl, cargc, cargv);
    } else {
        for (size_t i = 0; i < sizeof(later_commands) / sizeof(later_commands[0]); i++) {
            if (strcmp(cmd, later_commands[i].name) == 0) {
                fprintf(stderr,
                        "pgshadowctl: '%s' is not available in this release (it arrives with %s)\n",
                        cmd, later_commands[i].arrives_with);
                return PS_CTL_EXIT_USAGE;
            }
        }
        return usage_error("unknown command '%s'", cmd);
    }

    PQfinish(ctl.conn);
    ps_config_free(ctl.cfg);
    return rc;
}
