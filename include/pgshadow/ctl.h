/*
 * ctl.h - pgshadowctl: the control CLI (contract "The control CLI").
 *
 * The CLI talks to the database with plain blocking libpq (a CLI may block).
 * Policy (script text, literal quoting, PASS/WARN/FAIL decisions) lives in
 * pure functions declared here so unit tests exercise it without a database;
 * the commands are thin shells that run SQL and print.
 */
#ifndef PGSHADOW_CTL_H
#define PGSHADOW_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <libpq-fe.h>

#include "pgshadow/config.h"

/* Exit codes (contract). */
enum {
    PS_CTL_EXIT_OK = 0,      /* done */
    PS_CTL_EXIT_FAILED = 1,  /* failed (database error, a FAIL check, ...) */
    PS_CTL_EXIT_USAGE = 2,   /* bad usage or bad config */
    PS_CTL_EXIT_REFUSED = 3, /* refused; the reason is printed */
};

/* The whole CLI: parses argv, dispatches by ps_ctl_commands, returns the
 * exit code (ctl/commands.c). */
int ps_ctl_main(int argc, char **argv);

/* The state one pgshadowctl run passes around explicitly. */
typedef struct ps_ctl {
    const char *config_path;
    ps_config *cfg;   /* loaded on demand */
    PGconn *conn;     /* connected on demand */
} ps_ctl;

typedef struct ps_ctl_command ps_ctl_command;

/* A command's handler: argv[0] is the command's name; returns an exit code. */
typedef int (*ps_ctl_handler)(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);

/* One row of the command table (ctl/commands.c). */
struct ps_ctl_command {
    const char *name;         /* "install" */
    const char *args;         /* usage after the name: "[--dry-run]" ("" for none) */
    const char *summary;      /* the --help line */
    ps_ctl_handler run;       /* NULL: a later release brings it */
    const char *arrives_with; /* when run is NULL: what brings it */
    bool needs_connection;    /* talks to the database (route --percent does not) */
    int min_args, max_args;   /* operands, options not counted */
};

/* The table, ended by a row whose name is NULL; lookup; --help from it. */
extern const ps_ctl_command ps_ctl_commands[];
const ps_ctl_command *ps_ctl_command_find(const char *name);
void ps_ctl_print_usage(FILE *out);

/* ---- what every command shares (ctl/session.c) ---- */

/* Load the config (errors printed as FILE:LINE:COLUMN) / connect with its
 * conninfo. Return PS_CTL_EXIT_OK or the exit code to stop with. */
int ps_ctl_load_config(ps_ctl *ctl);
int ps_ctl_connect(ps_ctl *ctl);
/* Close the connection and free the config; the ps_ctl can be used again. */
void ps_ctl_finish(ps_ctl *ctl);

/* "pgshadowctl: <fmt with arg>
Try 'pgshadowctl --help'." on stderr;
 * returns PS_CTL_EXIT_USAGE. */
int ps_ctl_usage_error(const char *fmt, const char *arg);
/* "--name" of a "--name=value" argument (never the value), cut between
 * UTF-8 characters to fit buf. */
const char *ps_ctl_option_name(const char *arg, char *buf, size_t len);

/* A command's option: a flag (set to true) or, with value, one that takes an
 * argument ("--name V" or "--name=V"). Tables end with a NULL name. */
typedef struct ps_ctl_option {
    const char *name;
    bool *flag;
    const char **value; /* NULL when it takes no argument */
} ps_ctl_option;

/* A command's own arguments (argv[0] is the command): options, in any order
 * among the operands, up to a "--"; operands, at most cmd->max_args, into
 * pos. An unknown option is an error, never an operand ("route --json t"
 * must not route table "--json"). Returns PS_CTL_EXIT_OK or the usage error
 * printed. The lower bound is checked by ps_ctl_arity, when the command has
 * judged its options (a bad --percent is named before a missing operand). */
int ps_ctl_args(const ps_ctl_command *cmd, int argc, char **argv, const ps_ctl_option *opts,
                const char **pos, int *npos);
int ps_ctl_arity(const ps_ctl_command *cmd, int npos);

/* Sleep ms milliseconds, resuming after a signal. */
void ps_ctl_sleep_ms(int64_t ms);

/* Print the server's message, DETAIL and HINT of a failed result on stderr
 * (libpq's own message, redacted, when there is no result). */
void ps_ctl_print_pg_error(const char *what, const PGconn *conn, const PGresult *res);

/* ---- the commands, one file per family ---- */

/* ctl/cmd_setup.c */
int ps_ctl_cmd_check(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
int ps_ctl_cmd_install(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
int ps_ctl_cmd_uninstall(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
/* ctl/cmd_capture.c */
int ps_ctl_cmd_disable_writes(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
int ps_ctl_cmd_enable_writes(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
int ps_ctl_cmd_route(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
/* ctl/cmd_control.c: through the command queue */
int ps_ctl_cmd_quarantine(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
int ps_ctl_cmd_verify(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
int ps_ctl_cmd_cutover(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
int ps_ctl_cmd_extend(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
int ps_ctl_cmd_promote(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
int ps_ctl_cmd_finalize(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
int ps_ctl_cmd_revert(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
/* ctl/cmd_status.c: reading the cutover (pgshadow_viewer is enough) */
int ps_ctl_cmd_status(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);
int ps_ctl_cmd_events(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv);

/* Queue `command` (args_json: a JSON object) for the leading pgshadowd as the
 * operator's own role, wait up to timeout_ms for a daemon to take it and for
 * its outcome, and print it. A command nobody took in time is withdrawn,
 * unless queue (then it stays, and 0 is returned). `what` names it in
 * messages. Returns 0 done, 1 failed or not taken, 3 refused. The queued
 * command's id goes to *id when id is not NULL (0 before it is queued). */
int ps_ctl_send_command(ps_ctl *ctl, const char *what, const char *command, const char *args_json,
                        int64_t timeout_ms, bool queue, int64_t *id);

/* ---- a growable string (ctl/buf.c) ---- */

typedef struct ps_ctl_buf {
    char *data; /* NUL-terminated when len > 0 or after any append */
    size_t len;
    size_t cap;
} ps_ctl_buf;

/* Appends abort on allocation failure: a truncated SQL script must never run. */
void ps_ctl_buf_append(ps_ctl_buf *b, const char *s, size_t n);
void ps_ctl_buf_puts(ps_ctl_buf *b, const char *s);
void ps_ctl_buf_printf(ps_ctl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hand the string out (never NULL; "" when empty) and reset the buffer. */
char *ps_ctl_buf_steal(ps_ctl_buf *b);
void ps_ctl_buf_free(ps_ctl_buf *b); /* frees the data; the buffer is reusable */

/* ---- SQL text (ctl/script.c; pure) ---- */

/* Append s (len bytes) as an SQL string literal that means the same text
 * whatever standard_conforming_strings is: '...' with quotes doubled, or
 * E'...' with quotes and backslashes doubled when s contains a backslash.
 * Returns 0, or -EINVAL when s contains a NUL byte (nothing appended). */
int ps_ctl_quote_literal(ps_ctl_buf *b, const char *s, size_t len);

/* Append s as a JSON string ("..." with ", \ and control characters escaped). */
void ps_ctl_json_string(ps_ctl_buf *b, const char *s);

/* The embedded SQL files `names` (NULL-terminated, e.g. ps_sql_install),
 * concatenated in that order, each ending with a newline. Returns 0 with *out
 * malloc'd, or -ENOENT with *missing naming a file this build lacks. */
int ps_ctl_sql_files(const char *const *names, char **out, const char **missing);

/* Append one table's arguments of pgshadow.register_table and
 * pgshadow.preflight_table: schema, table, key text[] or NULL, shadow
 * suffix, migration id, columns jsonb, every value a literal. Returns 0 or
 * -EINVAL when a value cannot be quoted (a NUL byte). */
int ps_ctl_table_args(ps_ctl_buf *b, const ps_config *cfg, const ps_table_config *t);

/* The install script of the SQL interface (BEGIN; SET LOCAL lock_timeout;
 * install_sql; one register_table per configured table in config order;
 * finish_install; COMMIT;). *out is malloc'd. Returns 0 or -EINVAL when a
 * config value cannot be quoted. */
int ps_ctl_install_script(const ps_config *cfg, const char *install_sql, char **out);

/* Each attempt of install/uninstall waits at most this long for a lock, so
 * writers queued behind its lock request stall at most this long per
 * attempt; the whole transaction is then retried with backoff. */
#define PS_CTL_LOCK_TIMEOUT "200ms"

/* The uninstall script: BEGIN; SET LOCAL lock_timeout;
 * SELECT pgshadow.uninstall_migration(bool, '<migration id>') (or, with a
 * NULL migration_id, pgshadow.uninstall(bool)); uninstall_sql; COMMIT. */
int ps_ctl_uninstall_script(bool drop_shadow, const char *migration_id, const char *uninstall_sql,
                            char **out);

/* ctl/session.c: true for the SQLSTATEs after which the whole install transaction is retried
 * (55P03 lock_not_available, 40P01 deadlock_detected, 40001 serialization). */
bool ps_ctl_sqlstate_retryable(const char *sqlstate);

/* Run a script in one PQexec, retrying the whole transaction with backoff
 * (200 ms .. 5 s, max_attempts) on a retryable SQLSTATE and saying so on
 * stderr. On any other error prints the server's message, DETAIL and HINT.
 * Returns 0, -1 (failed: rolled back), or -EPIPE when the connection was
 * lost (the script ends in COMMIT, so whether it committed is unknown).
 * `what` names the command in messages. */
int ps_ctl_run_script(PGconn *conn, const char *what, const char *script, int max_attempts);

/* ---- preflight (ctl/check.c) ---- */

typedef enum { PS_CHECK_PASS = 0, PS_CHECK_WARN = 1, PS_CHECK_FAIL = 2 } ps_check_status;

const char *ps_check_status_word(ps_check_status s); /* "PASS" | "WARN" | "FAIL" */

typedef struct ps_check_line {
    ps_check_status status;
    char *name;   /* "server version" */
    char *detail; /* the figure */
} ps_check_line;

typedef struct ps_check_report {
    ps_check_line *lines;
    size_t count, cap;
    ps_check_status worst;
} ps_check_report;

void ps_check_report_init(ps_check_report *r);
void ps_check_report_free(ps_check_report *r); /* NULL is a no-op */
/* The detail is stored redacted (ps_redact_secrets): no secret in a report. */
void ps_check_add(ps_check_report *r, ps_check_status s, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* "PASS  name: detail\n" per line, only lines at least min_status. */
void ps_check_report_print(const ps_check_report *r, ps_check_status min_status, FILE *out);

/* Pure decisions. Each writes the figure shown to the operator into detail. */
ps_check_status ps_check_decide_server_version(int server_version_num, char *detail, size_t len);
/* ages in seconds of the open transactions older than the threshold */
ps_check_status ps_check_decide_long_xacts(size_t n, const int *pids, const int64_t *age_s,
                                           char *detail, size_t len);
/* lag_ms[i] < 0 means unknown (not visible to this role) */
/* One standby's replay lag for ps_check_decide_replication: NULL replay_lag
 * means "nothing to replay" (an idle, caught-up standby) when the role sees
 * pg_stat_replication fully (superuser or pg_read_all_stats), so 0; and
 * "hidden" otherwise, so -1 (unknown). */
int64_t ps_check_replay_lag_ms(bool is_null, int64_t value_ms, bool sees_all_stats);
ps_check_status ps_check_decide_replication(size_t n_standbys, const int64_t *lag_ms,
                                            int64_t max_lag_ms, char *detail, size_t len);
/* free_bytes < 0 means unknown; `where` says how free space was measured */
ps_check_status ps_check_decide_disk(int64_t need_bytes, int64_t free_bytes, const char *where,
                                     char *detail, size_t len);
ps_check_status ps_check_decide_archive_mode(const char *archive_mode, char *detail, size_t len);
ps_check_status ps_check_decide_wal_level(const char *wal_level, char *detail, size_t len);
/* Estimated bytes install and sync will need: shadows (1.2 x primary) plus
 * change log headroom (10% of primary, at least 64 MiB). */
int64_t ps_check_estimate_need(int64_t primary_bytes);
/* "1.5 GiB" etc. */
void ps_check_format_bytes(int64_t bytes, char *buf, size_t len);

/* Run every check against conn for cfg, filling r. Returns 0, or -1 when the
 * checks themselves could not run (the reason is a FAIL line in r). */
int ps_check_run(PGconn *conn, const ps_config *cfg, ps_check_report *r);

#endif
