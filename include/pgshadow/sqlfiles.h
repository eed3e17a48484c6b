/*
 * sqlfiles.h - the files of sql/, embedded at build time (sql/embed.py).
 */
#ifndef PGSHADOW_SQLFILES_H
#define PGSHADOW_SQLFILES_H

#include <stddef.h>

typedef struct ps_sqlfile {
    const char *name; /* basename, e.g. "00-schema.sql" */
    const char *text; /* NUL-terminated */
    size_t len;
} ps_sqlfile;

extern const ps_sqlfile ps_sqlfiles[]; /* terminated by {NULL, NULL, 0} */

/* The install files, in the order of sql/install.list, NULL-terminated:
 * pgshadowctl install runs them in this order in one transaction. */
extern const char *const ps_sql_install[];

/* The install files tagged "preflight" in sql/install.list, in the same
 * order, NULL-terminated: `pgshadowctl check` loads them in a transaction it
 * rolls back, to apply install's own rules (sql/05-rules.sql). */
extern const char *const ps_sql_preflight[];

/* The embedded file with this basename, or NULL. */
const ps_sqlfile *ps_sqlfile_find(const char *name);

#endif
