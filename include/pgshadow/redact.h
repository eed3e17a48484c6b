/*
 * redact.h - keep secrets out of every string that leaves the process.
 */
#ifndef PGSHADOW_REDACT_H
#define PGSHADOW_REDACT_H

#include <stdbool.h>
#include <stddef.h>

/* Return a malloc'd copy of a libpq conninfo (key=value form or a
 * postgres:// / postgresql:// URI) with any password value replaced by "***".
 * Never returns NULL except on allocation failure. */
char *ps_redact_conninfo(const char *conninfo);

/* Redact in free text: password=VALUE (quoted or not), "password": "..."
 * and userinfo passwords inside postgres URIs. Writes into out (size len),
 * always NUL-terminated; what does not fit is cut between UTF-8 characters,
 * and a character cut off at the end of `in` is dropped, so valid UTF-8 in
 * gives valid UTF-8 out. */
void ps_redact_secrets(const char *in, char *out, size_t len);

/* True when a conninfo string carries a password (key=value or URI userinfo
 * or ?password= query parameter; sslpassword counts too). Parsed with libpq's
 * PQconninfoParse; a string libpq cannot parse is checked textually. */
bool ps_conninfo_has_password(const char *conninfo);

#endif
