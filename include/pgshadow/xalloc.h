/*
 * xalloc.h - allocation that aborts instead of failing.
 *
 * For callers that cannot sensibly recover from an allocation failure and
 * must not carry on with a partial result: building the list of config
 * errors (a validator that silently drops an error would accept bad input),
 * the parsed config tree, formatted diagnostics. There, returning -ENOMEM
 * through every layer would only add paths that are never tested, and a
 * machine that cannot allocate a few bytes is not one to keep running on.
 *
 * Code that can recover (the daemon's event loop, anything holding a
 * database connection) keeps using malloc and returning -ENOMEM as usual.
 *
 * Everything here is static inline: no external names, so any module may
 * include it without a link dependency.
 */
#ifndef PGSHADOW_XALLOC_H
#define PGSHADOW_XALLOC_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* malloc(n), never NULL (a zero size still gives a unique pointer). */
static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

/* calloc(n, size), never NULL. */
static inline void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        abort();
    return p;
}

/* realloc(p, size), never NULL; on failure p is not freed (we abort). */
static inline void *xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (q == NULL)
        abort();
    return q;
}

/* strdup(s), never NULL. */
static inline char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        abort();
    return d;
}

/* vasprintf into a fresh string, never NULL. */
static inline char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static inline char *xvasprintf(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    return s;
}

/* asprintf into a fresh string, never NULL. */
static inline char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    return s;
}

#endif
