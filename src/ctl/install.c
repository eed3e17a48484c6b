/*
 * install.c - `pgshadowctl install` and `uninstall`: the one-transaction
 * scripts of the SQL interface (briefs/sql-interface.md) and running them.
 *
 * Invariants: the text printed by --dry-run is byte for byte the text run;
 * every config value reaches SQL only as a literal built by
 * ps_ctl_quote_literal (identifiers are quoted by the SQL functions with
 * format('%I')); the script is one transaction, so a failure leaves nothing
 * half-installed, and a lock or serialization failure retries the whole of it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pgshadow/backoff.h"
#include "pgshadow/ctl.h"
#include "pgshadow/redact.h"
#include "pgshadow/sqlfiles.h"

#define RETRY_BASE_MS 200
#define RETRY_CAP_MS 5000
#define RETRY_ATTEMPTS 30

bool ps_ctl_sqlstate_retryable(const char *sqlstate)
{
    if (!sqlstate)
        return false;
    return strcmp(sqlstate, "55P03") == 0 || strcmp(sqlstate, "40P01") == 0 ||
           strcmp(sqlstate, "40001") == 0;
}

void ps_ctl_print_pg_error(const char *what, const PGconn *conn, const PGresult *res)
{
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg) {
        /* libpq's own text may quote the connection string it was given */
        char safe[2048];
        ps_redact_secrets(PQerrorMessage(conn), safe, sizeof safe);
        fprintf(stderr, "pgshadowctl: %s failed: %s", what, safe);
        return;
    }
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
    fprintf(stderr, "pgshadowctl: %s failed: %s (SQLSTATE %s)\n", what, msg, state ? state : "?");
    if (detail)
        fprintf(stderr, "DETAIL: %s\n", detail);
    if (hint)
        fprintf(stderr, "HINT: %s\n", hint);
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int ps_ctl_run_script(PGconn *conn, const char *what, const char *script, int max_attempts)
{
    ps_backoff bo;
    ps_backoff_init(&bo, RETRY_BASE_MS, RETRY_CAP_MS);
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());

    for (int attempt = 1;; attempt++) {
        PGresult *res = PQexec(conn, script);
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            PQclear(res);
            return 0;
        }
        /* a failed multi-statement text leaves the session in the aborted
         * transaction it opened; close it before anything else */
        if (PQtransactionStatus(conn) == PQTRANS_INERROR ||
            PQtransactionStatus(conn) == PQTRANS_INTRANS)
            PQclear(PQexec(conn, "ROLLBACK"));

        /* The script went out as one text ending in COMMIT: with the
         * connection gone, the server may or may not have committed it. */
        if (PQstatus(conn) == CONNECTION_BAD) {
            ps_ctl_print_pg_error(what, conn, res);
            PQclear(res);
            return -EPIPE;
        }
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (ps_ctl_sqlstate_retryable(state) && attempt < max_attempts) {
            int64_t delay = ps_backoff_next(&bo, (uint32_t)random());
            const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            fprintf(stderr,
                    "pgshadowctl: %s: %s (SQLSTATE %s), attempt %d of %d; "
                    "retrying the whole transaction in %lld ms\n",
                    what, msg ? msg : "transient failure", state, attempt, max_attempts,
                    (long long)delay);
            PQclear(res);
            sleep_ms(delay);
            continue;
        }
        if (ps_ctl_sqlstate_retryable(state))
            fprintf(stderr, "pgshadowctl: %s: giving up after %d attempts\n", what, attempt);
        ps_ctl_print_pg_error(what, conn, res);
        PQclear(res);
        return -1;
    }
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

int ps_ctl_cmd_install(ps_ctl *ctl, bool dry_run)
{
    int rc = ps_ctl_load_config(ctl);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    /* the schema, then the sync engine's functions (they use its tables),
     * as one text: the script stays one transaction */
    const char *schema_sql = embedded("pgshadow--1.sql");
    const char *sync_sql = embedded("sync--1.sql");
    if (!schema_sql || !sync_sql) {
        fprintf(stderr, "pgshadowctl: install: %s is not embedded in this build\n",
                schema_sql ? "sync--1.sql" : "pgshadow--1.sql");
        return PS_CTL_EXIT_FAILED;
    }
    char *sql = NULL;
    if (asprintf(&sql, "%s%s%s", schema_sql,
                 *schema_sql && schema_sql[strlen(schema_sql) - 1] != '\n' ? "\n" : "", sync_sql) < 0) {
        fprintf(stderr, "pgshadowctl: install: out of memory\n");
        return PS_CTL_EXIT_FAILED;
    }
    char *script = NULL;
    rc = ps_ctl_install_script(ctl->cfg, sql, &script);
    free(sql);
    if (rc != 0) {
        fprintf(stderr, "pgshadowctl: install: a configuration value contains a NUL byte\n");
        return PS_CTL_EXIT_USAGE;
    }
    if (dry_run) {
        /* touches nothing: no connection at all */
        fputs(script, stdout);
        free(script);
        return fflush(stdout) == 0 ? PS_CTL_EXIT_OK : PS_CTL_EXIT_FAILED;
    }

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

int ps_ctl_cmd_uninstall(ps_ctl *ctl, bool drop_shadow, bool dry_run)
{
    const char *sql = embedded("uninstall.sql");
    if (!sql) {
        fprintf(stderr, "pgshadowctl: uninstall: uninstall.sql is not embedded in this build\n");
        return PS_CTL_EXIT_FAILED;
    }
    int rc = ps_ctl_load_config(ctl);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    char *script = NULL;
    ps_ctl_uninstall_script(drop_shadow, ctl->cfg->migration.id, sql, &script);
    if (dry_run) {
        fputs(script, stdout);
        free(script);
        return fflush(stdout) == 0 ? PS_CTL_EXIT_OK : PS_CTL_EXIT_FAILED;
    }
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
    PQsetNoticeReceiver(ctl->conn, notice_receiver, NULL);
    rc = ps_ctl_run_script(ctl->conn, "uninstall", script, RETRY_ATTEMPTS);
    free(script);
    if (rc != 0) {
        report_failure("uninstall", rc);
        return PS_CTL_EXIT_FAILED;
    }
    printf("uninstalled: capture removed%s; primary tables unchanged\n",
           drop_shadow ? ", shadow tables dropped" : ", shadow tables kept");
    return PS_CTL_EXIT_OK;
}
