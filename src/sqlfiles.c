/*
 * sqlfiles.c - lookup over the SQL files embedded by sql/embed.py.
 */
#include <string.h>

#include "pgshadow/sqlfiles.h"

const ps_sqlfile *ps_sqlfile_find(const char *name)
{
    for (const ps_sqlfile *f = ps_sqlfiles; f->name; f++)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}
