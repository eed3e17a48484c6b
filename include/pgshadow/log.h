/*
 * log.h - leveled logging for on-call: journald fields or readable lines.
 *
 * Levels are syslog priorities (LOG_ERR .. LOG_DEBUG from <syslog.h>). When
 * stderr is connected to the journal (JOURNAL_STREAM names stderr's device and
 * inode) each message goes to journald (native protocol, no libsystemd) as a
 * structured entry with MESSAGE=,
 * PRIORITY=, SYSLOG_IDENTIFIER= and any PGSHADOW_* fields given; otherwise one
 * line "2026-11-24T21:28:35.123Z pgshadowd[123]: warning: message key=value"
 * on stderr. Identical messages repeating within a window are suppressed and
 * counted ("... repeated 41 times").
 *
 * Every message is passed through ps_redact_secrets() before it is written, so
 * a conninfo or URI with a password never reaches a log, whatever the caller.
 */
#ifndef PGSHADOW_LOG_H
#define PGSHADOW_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

/* A structured field: name without the PGSHADOW_ prefix ("TABLE", "STAGE"). */
typedef struct ps_log_field {
    const char *name;
    const char *value;
} ps_log_field;

/* Call once at start-up. ident is "pgshadowd" or "pgshadowctl". */
void ps_log_setup(const char *ident, int level);
void ps_log_set_level(int level);
int ps_log_get_level(void);
bool ps_log_to_journal(void); /* true when stderr is the journal */

/* fields: array terminated by {NULL, NULL}, or NULL. */
void ps_log_fields(int prio, const ps_log_field *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ps_log_vfields(int prio, const ps_log_field *fields, const char *fmt, va_list ap);

#define ps_log(prio, ...) ps_log_fields((prio), NULL, __VA_ARGS__)
#define ps_log_error(...) ps_log_fields(LOG_ERR, NULL, __VA_ARGS__)
#define ps_log_warning(...) ps_log_fields(LOG_WARNING, NULL, __VA_ARGS__)
#define ps_log_notice(...) ps_log_fields(LOG_NOTICE, NULL, __VA_ARGS__)
#define ps_log_info(...) ps_log_fields(LOG_INFO, NULL, __VA_ARGS__)
#define ps_log_debug(...) ps_log_fields(LOG_DEBUG, NULL, __VA_ARGS__)

/* For tests: send output to a callback instead of stderr/journal. */
typedef void (*ps_log_sink)(int prio, const char *line, void *arg);
void ps_log_set_sink(ps_log_sink sink, void *arg);

/* The rate limiter window and burst (defaults: 10 identical messages per 5 s). */
void ps_log_set_ratelimit(int burst, int interval_ms);

/* Write the "message repeated N times: ..." line for every rate-limit window
 * that has ended. Called from each log call and from the daemon's
 * housekeeping timer, so a count comes out even when the log goes quiet. */
void ps_log_flush_suppressed(void);

/* Encode one entry in journald's native datagram format (MESSAGE, PRIORITY,
 * SYSLOG_IDENTIFIER, PGSHADOW_<NAME> per field; values containing a newline
 * use the length-prefixed form). Returns the length, or 0 when it does not
 * fit. Exposed for unit tests.
 *
 * The datagram goes to /run/systemd/journal/socket; for tests only, the
 * environment variable PGSHADOW_JOURNAL_SOCKET names another socket path. A
 * datagram that cannot be sent at once (journald's queue full, no socket) is
 * written as a readable line on stderr instead. */
size_t ps_log_journal_encode(char *buf, size_t len, int prio, const char *ident, const char *msg,
                             const ps_log_field *fields);

#endif
