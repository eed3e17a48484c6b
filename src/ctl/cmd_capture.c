/*
 * cmd_capture.c - the capture switch and routing: `pgshadowctl
 * disable-writes`, `enable-writes` (pgshadow.disable_writes / enable_writes)
 * and `route` (the murmur3 routing of route.c, with the table's percent read
 * from the database unless --percent is given).
 *
 * Invariants: table names reach SQL only as parameters; route with --percent
 * connects to nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "pgshadow/ctl.h"
#include "pgshadow/route.h"

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

int ps_ctl_cmd_route(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    int percent = -1;
    const char *percent_text = NULL;
    const char *pos[2];
    int npos = 0;
    const ps_ctl_option opts[] = {{"--percent", NULL, &percent_text}, {NULL, NULL, NULL}};
    int rc = ps_ctl_args(cmd, argc, argv, opts, pos, &npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    if (percent_text && parse_percent(percent_text, &percent) != 0)
        return ps_ctl_usage_error("route: --percent needs an integer 0..100, got '%s'", percent_text);
    if ((rc = ps_ctl_arity(cmd, npos)) != PS_CTL_EXIT_OK)
        return rc;

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

static int writes(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv, bool enable)
{
    const char *pos[1] = {NULL};
    int npos;
    int rc = ps_ctl_args(cmd, argc, argv, NULL, pos, &npos);
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
        ps_ctl_print_pg_error(cmd->name, ctl->conn, res);
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

int ps_ctl_cmd_disable_writes(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    return writes(ctl, cmd, argc, argv, false);
}

int ps_ctl_cmd_enable_writes(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    return writes(ctl, cmd, argc, argv, true);
}
