/*
 * cmd_setup.c - the setup commands: `pgshadowctl check` (the preflight of
 * check.c, printed), `install` and `uninstall` (the one-transaction scripts
 * of script.c, run with retries).
 *
 * Invariants: the text printed by --dry-run is byte for byte the text run,
 * and --dry-run connects to nothing; every config value reaches SQL only as a
 * literal built by ps_ctl_quote_literal (identifiers are quoted by the SQL
 * functions with format('%I')); the script is one transaction, so a failure
 * leaves nothing half-installed, and a lock or serialization failure retries
 * the whole of it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/ctl.h"
#include "pgshadow/sqlfiles.h"

#define RETRY_ATTEMPTS 30

/* --dry-run: the script, byte for byte the text that would run; frees it. */
static int print_script(char *script)
{
    fputs(script, stdout);
    free(script);
    return fflush(stdout) == 0 ? PS_CTL_EXIT_OK : PS_CTL_EXIT_FAILED;
}

int ps_ctl_cmd_check(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    int npos;
    int rc = ps_ctl_args(cmd, argc, argv, NULL, NULL, &npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    rc = ps_ctl_connect(ctl);
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

/* Hide the server's "already exists, skipping" notices (class 42) that every
 * idempotent re-install produces; show every other notice and warning (a
 * "drop cascades to" list included: uninstall uses no CASCADE, so one would
 * be news). */
static void notice_receiver(void *arg, const PGresult *res)
{
    (void)arg;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state && strncmp(state, "42", 2) == 0)
        return;
    fputs(PQresultErrorMessage(res), stderr);
}

static void report_failure(const char *what, int rc)
{
    if (rc == -EPIPE)
        fprintf(stderr, "pgshadowctl: %s: connection lost; outcome unknown: check with "
                        "pgshadowctl status / check\n", what);
    else
        fprintf(stderr, "pgshadowctl: %s: rolled back; nothing was changed\n", what);
}

static const char *embedded(const char *name)
{
    const ps_sqlfile *f = ps_sqlfile_find(name);
    return f ? f->text : NULL;
}

int ps_ctl_cmd_install(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    bool dry_run = false;
    const ps_ctl_option opts[] = {{"--dry-run", &dry_run, NULL}, {NULL, NULL, NULL}};
    int npos;
    int rc = ps_ctl_args(cmd, argc, argv, opts, NULL, &npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    rc = ps_ctl_load_config(ctl);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    /* the install files in the manifest's order, as one text: the script
     * stays one transaction */
    char *sql = NULL;
    const char *missing = NULL;
    if (ps_ctl_sql_files(ps_sql_install, &sql, &missing) != 0) {
        fprintf(stderr, "pgshadowctl: install: %s is not embedded in this build\n", missing);
        return PS_CTL_EXIT_FAILED;
    }
    char *script = NULL;
    rc = ps_ctl_install_script(ctl->cfg, sql, &script);
    free(sql);
    if (rc != 0) {
        fprintf(stderr, "pgshadowctl: install: a configuration value contains a NUL byte\n");
        return PS_CTL_EXIT_USAGE;
    }
    if (dry_run) /* touches nothing: no connection at all */
        return print_script(script);

    rc = ps_ctl_connect(ctl);
    if (rc != PS_CTL_EXIT_OK) {
        free(script);
        return rc;
    }
    ps_check_report r;
    ps_check_report_init(&r);
    ps_check_run(ctl->conn, ctl->cfg, &r);
    /* stdout stays for the outcome; the preflight's warnings go to stderr */
    ps_check_report_print(&r, PS_CHECK_WARN, stderr);
    if (r.worst == PS_CHECK_FAIL) {
        fprintf(stderr, "pgshadowctl: install: preflight failed; nothing was changed\n");
        ps_check_report_free(&r);
        free(script);
        return PS_CTL_EXIT_FAILED;
    }
    ps_check_report_free(&r);

    PQsetNoticeReceiver(ctl->conn, notice_receiver, NULL);
    rc = ps_ctl_run_script(ctl->conn, "install", script, RETRY_ATTEMPTS);
    free(script);
    if (rc != 0) {
        report_failure("install", rc);
        return PS_CTL_EXIT_FAILED;
    }
    printf("installed: pgshadow schema version 1, capture on %zu table%s (migration %s)\n",
           ctl->cfg->migration.n_tables, ctl->cfg->migration.n_tables == 1 ? "" : "s",
           ctl->cfg->migration.id);
    return PS_CTL_EXIT_OK;
}

int ps_ctl_cmd_uninstall(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    bool dry_run = false, drop_shadow = false;
    const ps_ctl_option opts[] = {
        {"--dry-run", &dry_run, NULL}, {"--drop-shadow", &drop_shadow, NULL}, {NULL, NULL, NULL}};
    int npos;
    int rc = ps_ctl_args(cmd, argc, argv, opts, NULL, &npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    const char *sql = embedded("uninstall.sql");
    if (!sql) {
        fprintf(stderr, "pgshadowctl: uninstall: uninstall.sql is not embedded in this build\n");
        return PS_CTL_EXIT_FAILED;
    }
    rc = ps_ctl_load_config(ctl);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    char *script = NULL;
    ps_ctl_uninstall_script(drop_shadow, ctl->cfg->migration.id, sql, &script);
    if (dry_run)
        return print_script(script);
    rc = ps_ctl_connect(ctl);
    if (rc != PS_CTL_EXIT_OK) {
        free(script);
        return rc;
    }
    PGresult *res = PQexec(ctl->conn, "SELECT pg_catalog.to_regnamespace('pgshadow') IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ps_ctl_print_pg_error("uninstall", ctl->conn, res);
        PQclear(res);
        free(script);
        return PS_CTL_EXIT_FAILED;
    }
    bool installed = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!installed) {
        printf("pgshadow is not installed in database %s; nothing to do\n", PQdb(ctl->conn));
        free(script);
        return PS_CTL_EXIT_OK;
    }
    /* promoted (docs/promote.md): say what stays in those words (to_jsonb:
     * an install from before promote existed has no promoted_at column) */
    const char *mig[1] = {ctl->cfg->migration.id};
    res = PQexecParams(ctl->conn,
                       "SELECT EXISTS (SELECT 1 FROM pgshadow.tables t WHERE t.migration_id = $1 "
                       "AND to_jsonb(t) ->> 'promoted_at' IS NOT NULL)",
                       1, NULL, mig, NULL, NULL, 0);
    bool promoted = PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    PQsetNoticeReceiver(ctl->conn, notice_receiver, NULL);
    rc = ps_ctl_run_script(ctl->conn, "uninstall", script, RETRY_ATTEMPTS);
    free(script);
    if (rc != 0) {
        report_failure("uninstall", rc);
        return PS_CTL_EXIT_FAILED;
    }
    if (promoted)
        printf("uninstalled: the promoted tables stay as they are, the old ones as <table>_legacy, "
               "the <table>_shadow views too\n");
    else
        printf("uninstalled: capture removed%s; primary tables unchanged\n",
               drop_shadow ? ", shadow tables dropped" : ", shadow tables kept");
    return PS_CTL_EXIT_OK;
}
