/*
 * sync_registry.h - config vs installed registry (src/sync/registry.c): what
 * `pgshadowctl install` stored in pgshadow.tables (key columns, column map)
 * read from a query result, and compared with the file's migration.tables.
 * Pure (no I/O); the daemon runs the query and logs the differences, and
 * `pgshadowctl status` can do the same. Tested in tests/unit/test-sync-registry.c.
 */
#ifndef PGSHADOW_SYNC_REGISTRY_H
#define PGSHADOW_SYNC_REGISTRY_H

#include <stddef.h>

#include <libpq-fe.h>

#include "pgshadow/config.h"

/* One table of pgshadow.tables as register_table stored it (strings are
 * borrowed). cols: column_map in shadow column order; dflt is what
 * register_table writes for a shadow column the config's columns: does not
 * map (format('p.%I', shadow)), computed by the database so the quoting is
 * its own. pk: the table's current primary key, what an absent key: means. */
typedef struct ps_sync_installed_col {
    const char *shadow;
    const char *expr;
    const char *dflt;
} ps_sync_installed_col;

typedef struct ps_sync_installed {
    const char *schema;
    const char *table;
    const char *const *key;
    size_t n_key;
    const char *const *pk;
    size_t n_pk;
    const ps_sync_installed_col *cols;
    size_t n_cols;
} ps_sync_installed;

/* Called once per difference: table name (unqualified) and a message such
 * as "columns: x changed (\"old\" -> \"new\")". */
typedef void (*ps_sync_diff_cb)(const char *table, const char *msg, void *arg);

/* Compare the config's migration.tables (in migration.schema) with the
 * installed registry rows: a table in one and not the other, a key that
 * differs (an empty config key means the primary key), a column expression
 * that differs or a columns: entry for a column not in the installed map.
 * Calls cb (may be NULL) for each; returns the number of differences. */
int ps_sync_registry_diff(const ps_config *cfg, const ps_sync_installed *inst, size_t n,
                          ps_sync_diff_cb cb, void *arg);

/* The registry of one migration as rows, grouped by table: $1 is the
 * migration id. Run it, then read the result with ps_sync_registry_read. */
extern const char ps_sync_registry_sql[];

/* What ps_sync_registry_read builds: the tables, and the arrays their lists
 * point into. Strings are borrowed from the PGresult: valid while it is. */
typedef struct ps_sync_registry {
    ps_sync_installed *tables;
    size_t n;
    bool finalized; /* the migration is finalized (sql/89-finalize.sql): no table, by design */
    const char **names;          /* storage of every key and pk list */
    ps_sync_installed_col *cols; /* storage of every column map */
} ps_sync_registry;

/* Read a result of ps_sync_registry_sql into *out (cleared first); a row of
 * kind 'f' says the migration is finalized. Returns 0,
 * -EINVAL when the result is not the query's (status or column count), or
 * -ENOMEM (*out is then empty). */
int ps_sync_registry_read(const PGresult *res, ps_sync_registry *out);

/* Free what ps_sync_registry_read allocated; r stays usable (empty). */
void ps_sync_registry_clear(ps_sync_registry *r);

#endif
