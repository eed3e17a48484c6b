/*
 * cmd_control.c - commands carried out by the leading pgshadowd through the
 * command queue (sql/30-commands.sql; docs/database.md "Commands"), and the
 * one that exists today: `pgshadowctl quarantine retry ID|all`.
 *
 * ps_ctl_send_command is the path every such command takes (the cutover's
 * start, pause, ..., promote and finalize come through it): queue the
 * command as the operator's own role, wait for the daemon's outcome, print
 * it; finalize asks on the terminal first (or takes --yes). Exit codes: 0 done, 1
 * failed (or no daemon took it in time), 3 refused (by the daemon, with its
 * reason, or by the database: a role that may not queue commands).
 *
 * Invariants: a command no daemon took within the timeout is withdrawn
 * unless the operator asked for --queue, so nothing runs long after the
 * operator was told it did not; arguments reach SQL only as parameters.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "pgshadow/ctl.h"
#include "pgshadow/duration.h"
#include "pgshadow/util.h"

#define POLL_MS 100

/* The command's state and result now ("" result when NULL); -1 on error. */
static int poll_state(PGconn *conn, const char *id, char *state, size_t slen, char **result)
{
    const char *params[1] = {id};
    PGresult *res = PQexecParams(conn, "SELECT state, result FROM pgshadow.commands WHERE command_id = $1",
                                 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        ps_ctl_print_pg_error("command", conn, res);
        PQclear(res);
        return -1;
    }
    snprintf(state, slen, "%s", PQgetvalue(res, 0, 0));
    free(*result);
    *result = strdup(PQgetisnull(res, 0, 1) ? "" : PQgetvalue(res, 0, 1));
    PQclear(res);
    return 0;
}

static int send_once(ps_ctl *ctl, const char *what, const char *command, const char *args_json,
                     int64_t timeout_ms, bool queue, int64_t *command_id, bool last_try);

/* A command whose SQL failed with serialization_failure (40001) was
 * decided on a state that changed before its transaction wrote (the
 * cutover's compare-and-set on rev: a gate evaluation landed in between).
 * Nothing was done; it is asked again, like any serialization failure. */
#define SEND_ATTEMPTS 3

int ps_ctl_send_command(ps_ctl *ctl, const char *what, const char *command, const char *args_json,
                        int64_t timeout_ms, bool queue, int64_t *command_id)
{
    int rc = PS_CTL_EXIT_FAILED;
    for (int attempt = 1; attempt <= SEND_ATTEMPTS; attempt++) {
        rc = send_once(ctl, what, command, args_json, timeout_ms, queue, command_id, attempt == SEND_ATTEMPTS);
        if (rc != -EAGAIN)
            return rc;
        fprintf(stderr, "pgshadowctl: %s: the state changed while the daemon decided; asking again\n", what);
    }
    return rc == -EAGAIN ? PS_CTL_EXIT_FAILED : rc;
}

static int send_once(ps_ctl *ctl, const char *what, const char *command, const char *args_json,
                     int64_t timeout_ms, bool queue, int64_t *command_id, bool last_try)
{
    if (command_id)
        *command_id = 0;
    int rc = ps_ctl_connect(ctl);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    const char *params[3] = {command, args_json, ctl->cfg->migration.id};
    PGresult *res = PQexecParams(ctl->conn, "SELECT pgshadow.enqueue_command($1, $2::jsonb, $3)", 3, NULL,
                                 params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        ps_ctl_print_pg_error(what, ctl->conn, res);
        bool denied = state && strcmp(state, "42501") == 0;
        if (denied)
            fprintf(stderr, "pgshadowctl: %s: refused: commands are queued by members of pgshadow_operator\n",
                    what);
        PQclear(res);
        return denied ? PS_CTL_EXIT_REFUSED : PS_CTL_EXIT_FAILED;
    }
    char id[32];
    snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if (command_id)
        *command_id = strtoll(id, NULL, 10);

    char state[16] = "pending";
    char *result = NULL;
    int64_t deadline = ps_clock_ms() + timeout_ms;
    for (;;) {
        if (poll_state(ctl->conn, id, state, sizeof state, &result) != 0) {
            free(result);
            return PS_CTL_EXIT_FAILED;
        }
        if (strcmp(state, "pending") != 0 && strcmp(state, "running") != 0)
            break;
        if (ps_clock_ms() >= deadline && strcmp(state, "pending") == 0) {
            char t[32];
            ps_duration_format(timeout_ms, t, sizeof t);
            if (queue) {
                printf("command %s (%s) queued; no pgshadowd has taken it within %s; it stays queued\n", id,
                       command, t);
                free(result);
                return PS_CTL_EXIT_OK;
            }
            const char *p[1] = {id};
            res = PQexecParams(ctl->conn, "SELECT pgshadow.command_cancel($1)", 1, NULL, p, NULL, NULL, 0);
            bool withdrawn = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
                             strcmp(PQgetvalue(res, 0, 0), "t") == 0;
            PQclear(res);
            if (withdrawn) {
                fprintf(stderr,
                        "pgshadowctl: %s: no pgshadowd took command %s within %s: is a daemon running "
                        "and leading migration %s? (withdrawn; --queue leaves a command queued)\n",
                        what, id, t, ctl->cfg->migration.id);
                free(result);
                return PS_CTL_EXIT_FAILED;
            }
            /* taken just now: wait for its outcome */
            deadline = ps_clock_ms() + timeout_ms;
        }
        ps_ctl_sleep_ms(POLL_MS);
    }
    int out;
    if (strcmp(state, "done") == 0) {
        printf("%s: %s\n", what, result);
        out = PS_CTL_EXIT_OK;
    } else if (strcmp(state, "refused") == 0) {
        fprintf(stderr, "pgshadowctl: %s: refused: %s\n", what, result);
        out = PS_CTL_EXIT_REFUSED;
    } else if (!last_try && strstr(result, "(SQLSTATE 40001)")) {
        out = -EAGAIN;
    } else {
        fprintf(stderr, "pgshadowctl: %s: failed: %s\n", what, result);
        out = PS_CTL_EXIT_FAILED;
    }
    free(result);
    return out;
}

/* Append s as a JSON string value. */
static void json_field(ps_ctl_buf *b, const char *key, const char *value)
{
    ps_ctl_buf_printf(b, "%s", b->len > 1 ? ", " : "");
    ps_ctl_json_string(b, key);
    ps_ctl_buf_puts(b, ": ");
    ps_ctl_json_string(b, value);
}

/* The options of every command that goes through the queue, with the
 * command's own (extra, NULL-terminated, at most 4), its operands and its
 * arity checked: --reason TEXT, --timeout D (default 10 s), --queue. */
typedef struct queued_opts {
    const char *reason, *timeout_text;
    bool queue;
    int64_t timeout_ms;
} queued_opts;

static int parse_queued(const ps_ctl_command *cmd, int argc, char **argv, const ps_ctl_option *extra,
                        queued_opts *q, const char **pos, int *npos)
{
    ps_ctl_option opts[8];
    size_t n = 0;
    for (; extra && extra[n].name && n < 4; n++)
        opts[n] = extra[n];
    opts[n++] = (ps_ctl_option){"--reason", NULL, &q->reason};
    opts[n++] = (ps_ctl_option){"--timeout", NULL, &q->timeout_text};
    opts[n++] = (ps_ctl_option){"--queue", &q->queue, NULL};
    opts[n] = (ps_ctl_option){NULL, NULL, NULL};
    int rc = ps_ctl_args(cmd, argc, argv, opts, pos, npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    q->timeout_ms = 10000;
    const char *why = NULL;
    if (q->timeout_text && ps_duration_parse(q->timeout_text, &q->timeout_ms, &why) != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s: --timeout needs a duration such as 10s, got '%s'", cmd->name,
                 q->timeout_text);
        return ps_ctl_usage_error("%s", msg);
    }
    return ps_ctl_arity(cmd, *npos);
}

int ps_ctl_cmd_quarantine(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    queued_opts q = {0};
    const char *pos[2];
    int npos;
    int rc = parse_queued(cmd, argc, argv, NULL, &q, pos, &npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    if (strcmp(pos[0], "retry") != 0)
        return ps_ctl_usage_error("quarantine: '%s': this release has 'quarantine retry ID|all' only", pos[0]);
    ps_ctl_buf args = {0};
    ps_ctl_buf_puts(&args, "{");
    if (strcmp(pos[1], "all") == 0) {
        ps_ctl_buf_puts(&args, "\"all\": true");
    } else {
        char *end;
        errno = 0;
        long long n = strtoll(pos[1], &end, 10);
        if (errno || end == pos[1] || *end || n < 1) {
            ps_ctl_buf_free(&args);
            return ps_ctl_usage_error("quarantine retry: ID is a quarantine_id (a positive integer) or 'all', got '%s'",
                                      pos[1]);
        }
        ps_ctl_buf_printf(&args, "\"id\": %lld", n);
    }
    if (q.reason)
        json_field(&args, "reason", q.reason);
    ps_ctl_buf_puts(&args, "}");
    char *json = ps_ctl_buf_steal(&args);
    rc = ps_ctl_send_command(ctl, "quarantine retry", "quarantine-retry", json, q.timeout_ms, q.queue, NULL);
    free(json);
    return rc;
}

/* Wait for the verify pass that answers command `id` to finish and print
 * its summary: 0 when every row it found diverged is equal again, 1 when
 * some are not (or on an error). */
static int wait_pass(ps_ctl *ctl, int64_t id)
{
    char idtext[32];
    snprintf(idtext, sizeof idtext, "%lld", (long long)id);
    const char *p[1] = {idtext};
    bool told = false;
    for (;;) {
        PGresult *res = PQexecParams(ctl->conn,
                                     "SELECT pass_id, finished_at IS NOT NULL, summary, "
                                     "coalesce((result ->> 'diverged')::bigint, 0) - "
                                     "coalesce((result ->> 'repaired')::bigint, 0) "
                                     "FROM pgshadow.verify_passes WHERE $1::bigint = ANY (command_ids)",
                                     1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            if (PQresultStatus(res) == PGRES_TUPLES_OK)
                fprintf(stderr, "pgshadowctl: verify: no pass answers command %s\n", idtext);
            else
                ps_ctl_print_pg_error("verify", ctl->conn, res);
            PQclear(res);
            return PS_CTL_EXIT_FAILED;
        }
        if (strcmp(PQgetvalue(res, 0, 1), "t") == 0) {
            long long left = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
            printf("verify: pass %s: %s\n", PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 2));
            PQclear(res);
            return left > 0 ? PS_CTL_EXIT_FAILED : PS_CTL_EXIT_OK;
        }
        if (!told) {
            printf("verify: waiting for pass %s to finish\n", PQgetvalue(res, 0, 0));
            fflush(stdout);
            told = true;
        }
        PQclear(res);
        ps_ctl_sleep_ms(500);
    }
}

int ps_ctl_cmd_verify(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    queued_opts q = {0};
    bool wait = false;
    const char *pos[1];
    int npos;
    const ps_ctl_option extra[] = {{"--wait", &wait, NULL}, {NULL, NULL, NULL}};
    int rc = parse_queued(cmd, argc, argv, extra, &q, pos, &npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    if (wait && q.queue)
        return ps_ctl_usage_error("verify: %s and --queue do not go together", "--wait");
    ps_ctl_buf args = {0};
    ps_ctl_buf_puts(&args, "{");
    if (npos == 1)
        json_field(&args, "table", pos[0]);
    if (q.reason)
        json_field(&args, "reason", q.reason);
    ps_ctl_buf_puts(&args, "}");
    char *json = ps_ctl_buf_steal(&args);
    int64_t id = 0;
    rc = ps_ctl_send_command(ctl, "verify", "verify", json, q.timeout_ms, q.queue, &id);
    free(json);
    if (rc != PS_CTL_EXIT_OK || !wait)
        return rc;
    return wait_pass(ctl, id);
}

/* A queued command whose only argument is the optional --reason. */
static int send_with_reason(ps_ctl *ctl, const char *name, const queued_opts *q)
{
    ps_ctl_buf args = {0};
    ps_ctl_buf_puts(&args, "{");
    if (q->reason)
        json_field(&args, "reason", q->reason);
    ps_ctl_buf_puts(&args, "}");
    char *json = ps_ctl_buf_steal(&args);
    int rc = ps_ctl_send_command(ctl, name, name, json, q->timeout_ms, q->queue, NULL);
    free(json);
    return rc;
}

/* start, pause, resume, step-down, rollback, abort: the command's name is
 * the queue's; the leading daemon checks it against the cutover's state
 * (src/cutover/machine.c) and refuses with the reason (exit 3). */
int ps_ctl_cmd_cutover(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    queued_opts q = {0};
    const char *pos[1];
    int npos;
    int rc = parse_queued(cmd, argc, argv, NULL, &q, pos, &npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    return send_with_reason(ctl, cmd->name, &q);
}

/* extend DURATION: the stage in force holds that much longer (from
 * awaiting decision: runs again at the last stage until then). */
int ps_ctl_cmd_extend(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    queued_opts q = {0};
    const char *pos[1];
    int npos;
    int rc = parse_queued(cmd, argc, argv, NULL, &q, pos, &npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    int64_t ms = 0;
    const char *why = NULL;
    if (ps_duration_parse(pos[0], &ms, &why) != 0 || ms <= 0)
        return ps_ctl_usage_error("extend: DURATION is a positive duration such as 24h, got '%s'", pos[0]);
    char d[32];
    ps_duration_format(ms, d, sizeof d);
    ps_ctl_buf args = {0};
    ps_ctl_buf_printf(&args, "{\"duration_ms\": %lld", (long long)ms);
    json_field(&args, "duration", d);
    if (q.reason)
        json_field(&args, "reason", q.reason);
    ps_ctl_buf_puts(&args, "}");
    char *json = ps_ctl_buf_steal(&args);
    rc = ps_ctl_send_command(ctl, "extend", "extend", json, q.timeout_ms, q.queue, NULL);
    free(json);
    return rc;
}

/* promote [--dry-run] [--without-revert], revert [--dry-run]: the swap,
 * through the leading daemon (promote: awaiting the decision, no gate red;
 * revert: promoted with reverse sync; refused with exit 3 otherwise).
 * --dry-run prints what the swap would do with every dependant
 * (pgshadow.promote_plan / revert_plan: catalog reads only, no lock, no
 * command) and exits 3 when something refuses it; without it, what refuses
 * it is said and exit 3 too, with no command queued (the daemon's swap
 * checks the plan again: a dependant created meanwhile fails the command,
 * exit 1). Promote sets up reverse sync unless keep_legacy is false or
 * --without-revert is given: a table that is not revertable refuses it.
 * The default --timeout covers every attempt: attempts x (lock_timeout +
 * 2 s) + 60 s for the drains. */
static const char SQL_PROMOTE_PLAN[] =
    "SELECT table_name, kind, object, action, ok FROM pgshadow.promote_plan($1, $2::boolean)";
static const char SQL_REVERT_PLAN[] = "SELECT table_name, kind, object, action, ok FROM pgshadow.revert_plan($1)";

static int swap_command(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv, bool revert)
{
    const char *verb = revert ? "revert" : "promote";
    queued_opts q = {0};
    bool dry = false, without = false;
    const ps_ctl_option promote_opts[] = {{"--dry-run", &dry, NULL}, {"--without-revert", &without, NULL},
                                          {NULL, NULL, NULL}};
    const ps_ctl_option revert_opts[] = {{"--dry-run", &dry, NULL}, {NULL, NULL, NULL}};
    const char *pos[1];
    int npos;
    int rc = parse_queued(cmd, argc, argv, revert ? revert_opts : promote_opts, &q, pos, &npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    if ((rc = ps_ctl_connect(ctl)) != PS_CTL_EXIT_OK)
        return rc;
    bool reverse = !revert && !without && ctl->cfg->cutover.promote.keep_legacy; /* cfg: read by connect */
    const char *params[2] = {ctl->cfg->migration.id, reverse ? "true" : "false"};
    PGresult *res = PQexecParams(ctl->conn, revert ? SQL_REVERT_PLAN : SQL_PROMOTE_PLAN, revert ? 1 : 2, NULL,
                                 params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char what[32];
        snprintf(what, sizeof what, "%s%s", verb, dry ? " --dry-run" : "");
        ps_ctl_print_pg_error(what, ctl->conn, res);
        PQclear(res);
        return PS_CTL_EXIT_FAILED;
    }
    int refused = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        bool ok = strcmp(PQgetvalue(res, i, 4), "t") == 0;
        refused += !ok;
        if (dry)
            printf("%-12s %-20s %s: %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                   PQgetvalue(res, i, 3));
        else if (!ok) /* what the daemon's swap would refuse, before a command is queued: exit 3 */
            fprintf(stderr, "%spgshadowctl: %s: refused: %s: %s %s: %s", refused == 1 ? "" : "\n", verb,
                    PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3));
    }
    PQclear(res);
    if (dry) {
        if (refused) {
            printf("%s would be refused: %d blocker(s) above\n", verb, refused);
            return PS_CTL_EXIT_REFUSED;
        }
        printf(revert ? "nothing refuses revert\n"
                      : "nothing refuses promote (it still waits for the cutover's decision and green gates)\n");
        return PS_CTL_EXIT_OK;
    }
    if (refused) {
        fprintf(stderr, "\n(pgshadowctl %s --dry-run lists what %s does with every dependant)\n", verb, verb);
        return PS_CTL_EXIT_REFUSED;
    }
    if (!q.timeout_text)
        q.timeout_ms = (int64_t)ctl->cfg->cutover.promote.attempts * (ctl->cfg->cutover.promote.lock_timeout_ms + 2000) +
                       60000;
    ps_ctl_buf args = {0};
    ps_ctl_buf_puts(&args, "{");
    if (q.reason)
        json_field(&args, "reason", q.reason);
    if (!revert) {
        if (args.len > 1)
            ps_ctl_buf_puts(&args, ", ");
        ps_ctl_buf_puts(&args, reverse ? "\"reverse\": true" : "\"reverse\": false");
    }
    ps_ctl_buf_puts(&args, "}");
    char *json = ps_ctl_buf_steal(&args);
    rc = ps_ctl_send_command(ctl, verb, verb, json, q.timeout_ms, q.queue, NULL);
    free(json);
    return rc;
}

int ps_ctl_cmd_promote(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    return swap_command(ctl, cmd, argc, argv, false);
}

int ps_ctl_cmd_revert(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    return swap_command(ctl, cmd, argc, argv, true);
}

/* finalize [--yes]: what promote left behind goes for good (sql/89-finalize.sql):
 * the plan (pgshadow.finalize_plan: refused, exit 3, unless the migration
 * is promoted and its re-pointed foreign keys are validated), a question on
 * the terminal (y/N; without a terminal only --yes answers it: exit 3
 * otherwise, nothing queued), then the 'finalize' command with the plan's
 * digest: the daemon's finalize drops that plan or nothing (exit 1 when
 * something depends on an object, a lock is busy, or the plan changed
 * meanwhile). Done, it prints what the event of the finalize lists as
 * dropped. */
static const char SQL_FINALIZE_PLAN[] = "SELECT kind, object, detail, digest FROM pgshadow.finalize_plan($1)";
static const char SQL_FINALIZED[] =
    "SELECT x.e ->> 'kind', x.e ->> 'object', x.e ->> 'detail' FROM pgshadow.events v, "
    "jsonb_array_elements(v.after -> 'dropped') WITH ORDINALITY x(e, o) "
    "WHERE v.what = 'cutover finalized' AND v.after ->> 'command_id' = $1 ORDER BY x.o";

/* A line of stdin is y or yes (any case): confirmed. */
static bool confirmed(void)
{
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return false;
    line[strcspn(line, "\r\n")] = '\0';
    return strcasecmp(line, "y") == 0 || strcasecmp(line, "yes") == 0;
}

int ps_ctl_cmd_finalize(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    queued_opts q = {0};
    bool yes = false;
    const ps_ctl_option extra[] = {{"--yes", &yes, NULL}, {NULL, NULL, NULL}};
    const char *pos[1];
    int npos;
    int rc = parse_queued(cmd, argc, argv, extra, &q, pos, &npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    if ((rc = ps_ctl_connect(ctl)) != PS_CTL_EXIT_OK)
        return rc;
    const char *params[1] = {ctl->cfg->migration.id};
    PGresult *res = PQexecParams(ctl->conn, SQL_FINALIZE_PLAN, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
        /* not promoted, keys to validate, finalized already, not installed */
        bool refused = state && (strcmp(state, "55000") == 0 || strcmp(state, "42704") == 0);
        if (refused)
            fprintf(stderr, "pgshadowctl: finalize: refused: %s%s%s\n", msg ? msg : "?", hint ? "\nHINT: " : "",
                    hint ? hint : "");
        else
            ps_ctl_print_pg_error("finalize", ctl->conn, res);
        PQclear(res);
        return refused ? PS_CTL_EXIT_REFUSED : PS_CTL_EXIT_FAILED;
    }
    int n = PQntuples(res);
    printf("finalize of migration %s drops, for good:\n", ctl->cfg->migration.id);
    for (int i = 0; i < n; i++)
        printf("  %s: %s (%s)\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
    char digest[64];
    snprintf(digest, sizeof digest, "%s", n > 0 ? PQgetvalue(res, 0, 3) : "");
    PQclear(res);
    if (!yes) {
        if (!isatty(STDIN_FILENO)) {
            fputs("pgshadowctl: finalize: refused: stdin is not a terminal and --yes was not given; nothing "
                  "dropped (read the list above, then finalize --yes)\n",
                  stderr);
            return PS_CTL_EXIT_REFUSED;
        }
        printf("Drop all of this? The legacy tables cannot be brought back. [y/N] ");
        fflush(stdout);
        if (!confirmed()) {
            fputs("pgshadowctl: finalize: not confirmed; nothing dropped\n", stderr);
            return PS_CTL_EXIT_REFUSED;
        }
    }
    ps_ctl_buf args = {0};
    ps_ctl_buf_puts(&args, "{");
    json_field(&args, "plan", digest);
    if (q.reason)
        json_field(&args, "reason", q.reason);
    ps_ctl_buf_puts(&args, "}");
    char *json = ps_ctl_buf_steal(&args);
    int64_t id = 0;
    rc = ps_ctl_send_command(ctl, "finalize", "finalize", json, q.timeout_ms, q.queue, &id);
    free(json);
    if (rc != PS_CTL_EXIT_OK || id <= 0)
        return rc; /* (queued and not taken yet: its event is not there, nothing is printed) */
    /* what the one event of the finalize lists: what went */
    char idtext[32];
    snprintf(idtext, sizeof idtext, "%lld", (long long)id);
    const char *p[1] = {idtext};
    res = PQexecParams(ctl->conn, SQL_FINALIZED, 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ps_ctl_print_pg_error("finalize (reading its event)", ctl->conn, res);
        PQclear(res);
        return PS_CTL_EXIT_FAILED;
    }
    for (int i = 0; i < PQntuples(res); i++)
        printf("dropped %s: %s (%s)\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
    PQclear(res);
    return PS_CTL_EXIT_OK;
}
