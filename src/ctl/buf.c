/*
 * buf.c - the growable string pgshadowctl builds SQL scripts and reports in.
 *
 * Invariant: after any append, data is NUL-terminated. Allocation failure
 * aborts: a script silently cut short must never reach the database.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/ctl.h"

static void grow(ps_ctl_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        abort();
    b->data = p;
    b->cap = cap;
}

void ps_ctl_buf_append(ps_ctl_buf *b, const char *s, size_t n)
{
    grow(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void ps_ctl_buf_puts(ps_ctl_buf *b, const char *s)
{
    ps_ctl_buf_append(b, s, strlen(s));
}

void ps_ctl_buf_printf(ps_ctl_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    ps_ctl_buf_append(b, s, (size_t)n);
    free(s);
}

char *ps_ctl_buf_steal(ps_ctl_buf *b)
{
    if (!b->data)
        grow(b, 0), b->data[0] = '\0';
    char *s = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return s;
}

void ps_ctl_buf_free(ps_ctl_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
