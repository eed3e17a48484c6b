/*
 * sqlfiles.h - the files of sql/, embedded at build time (sql/embed.py).
 */
#ifndef PGSHADOW_SQLFILES_H
#define PGSHADOW_SQLFILES_H

#include <stddef.h>

typedef struct ps_sqlfile {
    const char *name; /* basename, e.g. "pgshadow--1.sql" */
    const char *text; /* NUL-terminated */
    size_t len;
} ps_sqlfile;

extern const ps_sqlfile ps_sqlfiles[]; /* terminated by {NULL, NULL, 0} */

/* The embedded file with this basename, or NULL. */
const ps_sqlfile *ps_sqlfile_find(const char *name);

#endif
