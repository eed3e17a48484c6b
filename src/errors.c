/*
 * errors.c - the located-diagnostics list (see errors.h).
 *
 * Owns every string it holds. Invariant: items[0..count) are all valid and
 * fully formatted; an allocation failure aborts rather than dropping an error,
 * because a validator that silently loses errors would accept bad input.
 */
#include "pgshadow/errors.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/xalloc.h"

void ps_errors_init(ps_errors *e)
{
    e->items = NULL;
    e->count = 0;
    e->cap = 0;
}

void ps_errors_clear(ps_errors *e)
{
    for (size_t i = 0; i < e->count; i++) {
        free(e->items[i].file);
        free(e->items[i].message);
    }
    free(e->items);
    ps_errors_init(e);
}

void ps_errors_add(ps_errors *e, const char *file, int line, int column, const char *fmt, ...)
{
    if (e->count == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 8;
        e->items = xrealloc(e->items, e->cap * sizeof e->items[0]);
    }
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    ps_error *err = &e->items[e->count++];
    err->file = file ? xstrdup(file) : NULL;
    err->line = line > 0 ? line : 0;
    err->column = column > 0 ? column : 0;
    err->message = msg;
}

char *ps_error_format(const ps_error *err)
{
    char *s = NULL;
    int n;
    const char *file = err->file;
    /* A column means nothing without its line, and a line nothing without its file. */
    if (file && err->line > 0 && err->column > 0)
        n = asprintf(&s, "%s:%d:%d: %s", file, err->line, err->column, err->message);
    else if (file && err->line > 0)
        n = asprintf(&s, "%s:%d: %s", file, err->line, err->message);
    else if (file)
        n = asprintf(&s, "%s: %s", file, err->message);
    else
        n = asprintf(&s, "%s", err->message);
    return n < 0 ? NULL : s;
}

void ps_errors_print(const ps_errors *e, FILE *out)
{
    for (size_t i = 0; i < e->count; i++) {
        char *s = ps_error_format(&e->items[i]);
        if (s == NULL) {
            fprintf(out, "%s\n", e->items[i].message);
            continue;
        }
        fprintf(out, "%s\n", s);
        free(s);
    }
}
