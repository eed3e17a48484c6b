/*
 * errors.h - a list of located diagnostics (FILE:LINE:COLUMN: message).
 *
 * Validators append every problem they find instead of stopping at the first,
 * so an operator fixes a config file in one pass. The list owns its strings.
 */
#ifndef PGSHADOW_ERRORS_H
#define PGSHADOW_ERRORS_H

#include <stddef.h>
#include <stdio.h>

typedef struct ps_error {
    char *file;  /* may be NULL when the error has no file */
    int line;    /* 1-based; 0 when unknown */
    int column;  /* 1-based; 0 when unknown */
    char *message;
} ps_error;

typedef struct ps_errors {
    ps_error *items;
    size_t count;
    size_t cap;
} ps_errors;

void ps_errors_init(ps_errors *e);
void ps_errors_clear(ps_errors *e); /* frees every item; the list stays usable */

/* Append a formatted error. Allocation failure is fatal (abort): an error list
 * that silently drops errors would make validation lie. */
void ps_errors_add(ps_errors *e, const char *file, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Print each as "FILE:LINE:COLUMN: message\n" (omitting the parts that are unknown). */
void ps_errors_print(const ps_errors *e, FILE *out);

/* Format one error into a freshly malloc'd string, same shape as above. */
char *ps_error_format(const ps_error *err);

#endif
