/*
 * session.c - what every pgshadowctl command shares: the configuration and
 * the connection (loaded on demand), a command's own arguments, PostgreSQL
 * error printing, and running a one-transaction script with retries.
 *
 * Owns: ps_ctl's cfg and conn (ps_ctl_finish frees both).
 * Invariants: exit codes are the contract's (0 done, 1 failed, 2 bad usage
 * or config, 3 refused); a conninfo or a libpq message is never printed
 * unredacted; an argument that starts with '-' before "--" is an option, and
 * an unknown one is a usage error naming it (its name, never its value: a
 * mistyped --conninfo=... may hold a password), never an operand.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pgshadow/backoff.h"
#include "pgshadow/ctl.h"
#include "pgshadow/errors.h"
#include "pgshadow/redact.h"

#define RETRY_BASE_MS 200
#define RETRY_CAP_MS 5000

int ps_ctl_usage_error(const char *fmt, const char *arg)
{
    fputs("pgshadowctl: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'pgshadowctl --help'.\n", stderr);
    return PS_CTL_EXIT_USAGE;
}

const char *ps_ctl_option_name(const char *arg, char *buf, size_t len)
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

int ps_ctl_args(const ps_ctl_command *cmd, int argc, char **argv, const ps_ctl_option *opts,
                const char **pos, int *npos)
{
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
            if (*npos == cmd->max_args) {
                snprintf(msg, sizeof msg, "%s: unexpected argument '%%s'", cmd->name);
                return ps_ctl_usage_error(msg, a);
            }
            pos[(*npos)++] = a;
            continue;
        }
        ps_ctl_option_name(a, name, sizeof name);
        const ps_ctl_option *o = opts;
        while (o && o->name && strcmp(o->name, name) != 0)
            o++;
        if (!o || !o->name) {
            snprintf(msg, sizeof msg, "%s: unknown option '%%s'", cmd->name);
            return ps_ctl_usage_error(msg, name);
        }
        const char *eq = strchr(a, '=');
        if (!o->value) {
            if (eq) {
                snprintf(msg, sizeof msg, "%s: option '%%s' takes no argument", cmd->name);
                return ps_ctl_usage_error(msg, name);
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

int ps_ctl_arity(const ps_ctl_command *cmd, int npos)
{
    if (npos >= cmd->min_args && npos <= cmd->max_args)
        return PS_CTL_EXIT_OK;
    char msg[160];
    snprintf(msg, sizeof msg, "%s: usage: %s%s%%s", cmd->name, cmd->name, *cmd->args ? " " : "");
    return ps_ctl_usage_error(msg, cmd->args);
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

void ps_ctl_finish(ps_ctl *ctl)
{
    PQfinish(ctl->conn);
    ctl->conn = NULL;
    ps_config_free(ctl->cfg);
    ctl->cfg = NULL;
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

bool ps_ctl_sqlstate_retryable(const char *sqlstate)
{
    if (!sqlstate)
        return false;
    return strcmp(sqlstate, "55P03") == 0 || strcmp(sqlstate, "40P01") == 0 ||
           strcmp(sqlstate, "40001") == 0;
}

void ps_ctl_sleep_ms(int64_t ms)
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
            ps_ctl_sleep_ms(delay);
            continue;
        }
        if (ps_ctl_sqlstate_retryable(state))
            fprintf(stderr, "pgshadowctl: %s: giving up after %d attempts\n", what, attempt);
        ps_ctl_print_pg_error(what, conn, res);
        PQclear(res);
        return -1;
    }
}
