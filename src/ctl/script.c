/*
 * script.c - the SQL text of install and uninstall (pure: no I/O).
 *
 * Invariants: the text built here is byte for byte what --dry-run prints and
 * what runs; every config value reaches SQL only as a literal built by
 * ps_ctl_quote_literal (identifiers are quoted inside the SQL functions with
 * format('%I')); a value that cannot be a literal (a NUL byte) fails the
 * whole script rather than being altered.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/ctl.h"
#include "pgshadow/sqlfiles.h"

int ps_ctl_quote_literal(ps_ctl_buf *b, const char *s, size_t len)
{
    if (memchr(s, '\0', len))
        return -EINVAL;
    /* With a backslash, E'' is the only form whose meaning does not depend on
     * standard_conforming_strings; without one, plain '' is clearer to read. */
    bool backslash = memchr(s, '\\', len) != NULL;
    ps_ctl_buf_puts(b, backslash ? "E'" : "'");
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '\'')
            ps_ctl_buf_append(b, "''", 2);
        else if (c == '\\')
            ps_ctl_buf_append(b, "\\\\", 2);
        else
            ps_ctl_buf_append(b, &c, 1);
    }
    ps_ctl_buf_append(b, "'", 1);
    return 0;
}

void ps_ctl_json_string(ps_ctl_buf *b, const char *s)
{
    ps_ctl_buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': ps_ctl_buf_puts(b, "\\\""); break;
        case '\\': ps_ctl_buf_puts(b, "\\\\"); break;
        case '\n': ps_ctl_buf_puts(b, "\\n"); break;
        case '\r': ps_ctl_buf_puts(b, "\\r"); break;
        case '\t': ps_ctl_buf_puts(b, "\\t"); break;
        default:
            if (*p < 0x20)
                ps_ctl_buf_printf(b, "\\u%04x", *p);
            else
                ps_ctl_buf_append(b, (const char *)p, 1);
        }
    }
    ps_ctl_buf_append(b, "\"", 1);
}

static int lit(ps_ctl_buf *b, const char *s)
{
    return ps_ctl_quote_literal(b, s, strlen(s));
}

int ps_ctl_sql_files(const char *const *names, char **out, const char **missing)
{
    ps_ctl_buf all = {0};
    *out = NULL;
    *missing = NULL;
    for (const char *const *n = names; *n; n++) {
        const ps_sqlfile *f = ps_sqlfile_find(*n);
        if (!f) {
            *missing = *n;
            ps_ctl_buf_free(&all);
            return -ENOENT;
        }
        ps_ctl_buf_puts(&all, f->text);
        if (f->len && f->text[f->len - 1] != '\n')
            ps_ctl_buf_puts(&all, "\n");
    }
    *out = ps_ctl_buf_steal(&all);
    return 0;
}

/* A column map (columns:, reverse_columns:) as a jsonb literal. */
static int map_json(ps_ctl_buf *b, const ps_column_map *m, size_t n)
{
    ps_ctl_buf json = {0};
    ps_ctl_buf_puts(&json, "{");
    for (size_t c = 0; c < n; c++) {
        if (c)
            ps_ctl_buf_puts(&json, ", ");
        ps_ctl_json_string(&json, m[c].column);
        ps_ctl_buf_puts(&json, ": ");
        ps_ctl_json_string(&json, m[c].expr);
    }
    ps_ctl_buf_puts(&json, "}");
    int rc = ps_ctl_quote_literal(b, json.data, json.len);
    ps_ctl_buf_free(&json);
    ps_ctl_buf_puts(b, "::jsonb");
    return rc;
}

int ps_ctl_table_args(ps_ctl_buf *b, const ps_config *cfg, const ps_table_config *t)
{
    int rc = 0;
    rc |= lit(b, cfg->migration.schema);
    ps_ctl_buf_puts(b, ", ");
    rc |= lit(b, t->name);
    ps_ctl_buf_puts(b, ", ");
    if (t->n_key == 0) {
        ps_ctl_buf_puts(b, "NULL");
    } else {
        ps_ctl_buf_puts(b, "ARRAY[");
        for (size_t k = 0; k < t->n_key; k++) {
            if (k)
                ps_ctl_buf_puts(b, ", ");
            rc |= lit(b, t->key[k]);
        }
        ps_ctl_buf_puts(b, "]::text[]");
    }
    ps_ctl_buf_puts(b, ", ");
    rc |= lit(b, cfg->migration.shadow_suffix);
    ps_ctl_buf_puts(b, ", ");
    rc |= lit(b, cfg->migration.id);
    ps_ctl_buf_puts(b, ", ");
    rc |= map_json(b, t->columns, t->n_columns);
    return rc ? -EINVAL : 0;
}

int ps_ctl_install_script(const ps_config *cfg, const char *install_sql, char **out)
{
    ps_ctl_buf b = {0};
    int rc = 0;
    *out = NULL;

    ps_ctl_buf_puts(&b, "BEGIN;\nSET LOCAL lock_timeout = '" PS_CTL_LOCK_TIMEOUT "';\n");
    ps_ctl_buf_puts(&b, install_sql);
    if (b.len && b.data[b.len - 1] != '\n')
        ps_ctl_buf_puts(&b, "\n");

    for (size_t i = 0; i < cfg->migration.n_tables && rc == 0; i++) {
        const ps_table_config *t = &cfg->migration.tables[i];
        ps_ctl_buf_puts(&b, "SELECT pgshadow.register_table(");
        rc |= ps_ctl_table_args(&b, cfg, t);
        ps_ctl_buf_puts(&b, ");\n");
        /* what revert needs (sql/90-revert.sql); {} resets it */
        ps_ctl_buf_puts(&b, "SELECT pgshadow.set_reverse_columns(");
        rc |= lit(&b, cfg->migration.schema);
        ps_ctl_buf_puts(&b, ", ");
        rc |= lit(&b, t->name);
        ps_ctl_buf_puts(&b, ", ");
        rc |= map_json(&b, t->reverse, t->n_reverse);
        ps_ctl_buf_puts(&b, ");\n");
    }
    ps_ctl_buf_puts(&b, "SELECT pgshadow.finish_install(");
    rc |= lit(&b, cfg->migration.id);
    ps_ctl_buf_puts(&b, ");\nCOMMIT;\n");

    if (rc != 0) {
        ps_ctl_buf_free(&b);
        return -EINVAL;
    }
    *out = ps_ctl_buf_steal(&b);
    return 0;
}

int ps_ctl_uninstall_script(bool drop_shadow, const char *migration_id, const char *uninstall_sql,
                            char **out)
{
    ps_ctl_buf b = {0};
    ps_ctl_buf_printf(&b, "BEGIN;\nSET LOCAL lock_timeout = '" PS_CTL_LOCK_TIMEOUT "';\n");
    if (migration_id) {
        /* other migrations in the database stay installed */
        ps_ctl_buf_printf(&b, "SELECT pgshadow.uninstall_migration(%s, ", drop_shadow ? "true" : "false");
        ps_ctl_quote_literal(&b, migration_id, strlen(migration_id));
        ps_ctl_buf_puts(&b, ");\n");
    } else {
        ps_ctl_buf_printf(&b, "SELECT pgshadow.uninstall(%s);\n", drop_shadow ? "true" : "false");
    }
    ps_ctl_buf_puts(&b, uninstall_sql);
    if (b.len && b.data[b.len - 1] != '\n')
        ps_ctl_buf_puts(&b, "\n");
    ps_ctl_buf_puts(&b, "COMMIT;\n");
    *out = ps_ctl_buf_steal(&b);
    return 0;
}

