/*
 * sync/registry.c - config vs installed registry (sync_registry.h): reading
 * pgshadow.tables' key columns and column map of one migration from a query
 * result, and comparing them with the file's migration.tables.
 *
 * Owns the arrays ps_sync_registry_read builds (freed by
 * ps_sync_registry_clear); the strings stay the PGresult's.
 *
 * Invariants: no I/O (the caller runs ps_sync_registry_sql); the comparison
 * is exact string equality, because register_table stores a configured
 * expression verbatim and the database computes the default it would store
 * (format('p.%I', column)), so quoting is never re-implemented here.
 */
#include "pgshadow/sync_registry.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/util.h"

/* The registry of this migration flattened to rows: pgshadow.registry_rows
 * (sql/84-sync-wakeup.sql) says what each row is. */
const char ps_sync_registry_sql[] =
    "SELECT schema_name, table_name, kind, name, expr, dflt FROM pgshadow.registry_rows($1)";

static int diff_report(ps_sync_diff_cb cb, void *arg, const char *table, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int diff_report(ps_sync_diff_cb cb, void *arg, const char *table, const char *fmt, ...)
{
    if (cb) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        cb(table, msg, arg);
    }
    return 1;
}

/* One table present on both sides. register_table stores a configured
 * expression verbatim and dflt for every other written shadow column, so a
 * plain string comparison is exact. */
static int diff_table(const ps_table_config *t, const ps_sync_installed *in, ps_sync_diff_cb cb,
                      void *arg)
{
    int n = 0;
    char a[512], b[512];
    const char *const *want = t->n_key ? (const char *const *)t->key : in->pk;
    size_t n_want = t->n_key ? t->n_key : in->n_pk;
    if (!ps_strv_equal(in->key, in->n_key, want, n_want)) {
        ps_strv_join(in->key, in->n_key, a, sizeof a);
        ps_strv_join(want, n_want, b, sizeof b);
        n += diff_report(cb, arg, t->name, "key changed (%s -> %s%s)", a, t->n_key ? "" : "primary key ",
                         n_want ? b : "none");
    }
    for (size_t i = 0; i < in->n_cols; i++) {
        const ps_sync_installed_col *c = &in->cols[i];
        const char *exp = c->dflt;
        for (size_t j = 0; j < t->n_columns; j++)
            if (strcmp(t->columns[j].column, c->shadow) == 0)
                exp = t->columns[j].expr;
        if (strcmp(exp, c->expr) != 0)
            n += diff_report(cb, arg, t->name, "columns: %s changed (\"%s\" -> \"%s\")", c->shadow,
                             c->expr, exp);
    }
    for (size_t j = 0; j < t->n_columns; j++) {
        bool found = false;
        for (size_t i = 0; i < in->n_cols && !found; i++)
            found = strcmp(t->columns[j].column, in->cols[i].shadow) == 0;
        if (!found)
            n += diff_report(cb, arg, t->name,
                             "columns: %s is mapped in the config (\"%s\") but not in the installed "
                             "column map",
                             t->columns[j].column, t->columns[j].expr);
    }
    return n;
}

int ps_sync_registry_diff(const ps_config *cfg, const ps_sync_installed *inst, size_t n,
                          ps_sync_diff_cb cb, void *arg)
{
    int diffs = 0;
    const char *schema = cfg->migration.schema ? cfg->migration.schema : "public";
    for (size_t i = 0; i < cfg->migration.n_tables; i++) {
        const ps_table_config *t = &cfg->migration.tables[i];
        const ps_sync_installed *in = NULL;
        for (size_t j = 0; j < n && !in; j++)
            if (strcmp(inst[j].table, t->name) == 0 && strcmp(inst[j].schema, schema) == 0)
                in = &inst[j];
        if (in)
            diffs += diff_table(t, in, cb, arg);
        else
            diffs += diff_report(cb, arg, t->name, "in the config but not installed");
    }
    for (size_t j = 0; j < n; j++) {
        bool found = false;
        for (size_t i = 0; i < cfg->migration.n_tables && !found; i++)
            found = strcmp(inst[j].table, cfg->migration.tables[i].name) == 0 &&
                    strcmp(inst[j].schema, schema) == 0;
        if (!found)
            diffs += diff_report(cb, arg, inst[j].table, "installed (%s.%s) but not in the config",
                                 inst[j].schema, inst[j].table);
    }
    return diffs;
}

void ps_sync_registry_clear(ps_sync_registry *r)
{
    free(r->tables);
    free(r->names);
    free(r->cols);
    memset(r, 0, sizeof *r);
}

int ps_sync_registry_read(const PGresult *res, ps_sync_registry *out)
{
    memset(out, 0, sizeof *out);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 6)
        return -EINVAL;
    int rows = PQntuples(res);
    size_t nr = rows > 0 ? (size_t)rows : 1;
    out->tables = calloc(nr, sizeof *out->tables);
    out->names = calloc(nr, sizeof *out->names);
    out->cols = calloc(nr, sizeof *out->cols);
    if (!out->tables || !out->names || !out->cols) {
        ps_sync_registry_clear(out);
        return -ENOMEM;
    }
    /* Rows come grouped by table and kind (c, k, p) in order, so each
     * table's lists are contiguous slices of names/cols. */
    size_t n = 0, nn = 0, nc = 0;
    for (int r = 0; r < rows; r++) {
        if (PQgetvalue(res, r, 2)[0] == 'f') { /* finalized: no table, by design */
            out->finalized = true;
            continue;
        }
        const char *sch = PQgetvalue(res, r, 0), *tab = PQgetvalue(res, r, 1);
        if (n == 0 || strcmp(out->tables[n - 1].schema, sch) != 0 ||
            strcmp(out->tables[n - 1].table, tab) != 0) {
            out->tables[n].schema = sch;
            out->tables[n].table = tab;
            n++;
        }
        ps_sync_installed *in = &out->tables[n - 1];
        char kind = PQgetvalue(res, r, 2)[0];
        const char *name = PQgetvalue(res, r, 3);
        if (kind == 'c') {
            if (!in->cols)
                in->cols = &out->cols[nc];
            out->cols[nc].shadow = name;
            out->cols[nc].expr = PQgetvalue(res, r, 4);
            out->cols[nc].dflt = PQgetvalue(res, r, 5);
            nc++;
            in->n_cols++;
        } else if (kind == 'k') {
            if (!in->key)
                in->key = &out->names[nn];
            out->names[nn++] = name;
            in->n_key++;
        } else {
            if (!in->pk)
                in->pk = &out->names[nn];
            out->names[nn++] = name;
            in->n_pk++;
        }
    }
    out->n = n;
    return 0;
}
