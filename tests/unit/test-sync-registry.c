/*
 * test-sync-registry.c - config vs installed registry (src/sync/registry.c):
 * the comparison the daemon logs and STATUS reports (moved here unchanged
 * from test-sync-policy.c), and reading the registry query's result into
 * tables (on a result built by libpq itself, no server).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pgshadow/sync_registry.h"

typedef struct diff_log {
    int n;
    char msgs[8][512];
} diff_log;

static void collect(const char *table, const char *msg, void *arg)
{
    diff_log *l = arg;
    if (l->n < 8)
        snprintf(l->msgs[l->n], sizeof l->msgs[0], "%s: %s", table, msg);
    l->n++;
}

static char *k_id[] = {"id"};
static const char *const inst_key[] = {"id"};
static const char *const inst_pk[] = {"id"};
static const ps_sync_installed_col inst_cols[] = {
    {"id", "p.id", "p.id"},
    {"relevance_score", "least(p.relevance_score, 1.0)", "p.relevance_score"},
    {"Name", "p.\"Name\"", "p.\"Name\""},
};

static void base_config(ps_config *cfg, ps_table_config *t, ps_column_map *cm)
{
    memset(cfg, 0, sizeof *cfg);
    memset(t, 0, sizeof *t);
    cm->column = "relevance_score";
    cm->expr = "least(p.relevance_score, 1.0)";
    t->name = "contexts";
    t->columns = cm;
    t->n_columns = 1;
    cfg->migration.schema = "public";
    cfg->migration.tables = t;
    cfg->migration.n_tables = 1;
}

static ps_sync_installed base_installed(void)
{
    ps_sync_installed in = {.schema = "public", .table = "contexts", .key = inst_key, .n_key = 1,
                            .pk = inst_pk, .n_pk = 1, .cols = inst_cols, .n_cols = 3};
    return in;
}

static void test_registry_same(void **state)
{
    (void)state;
    ps_config cfg;
    ps_table_config t;
    ps_column_map cm;
    base_config(&cfg, &t, &cm);
    ps_sync_installed in = base_installed();
    diff_log l = {0};
    assert_int_equal(ps_sync_registry_diff(&cfg, &in, 1, collect, &l), 0);
    assert_int_equal(l.n, 0);
    /* an explicit key equal to the installed one is no difference either */
    t.key = k_id;
    t.n_key = 1;
    assert_int_equal(ps_sync_registry_diff(&cfg, &in, 1, collect, &l), 0);
}

static void test_registry_column_changed(void **state)
{
    (void)state;
    ps_config cfg;
    ps_table_config t;
    ps_column_map cm;
    base_config(&cfg, &t, &cm);
    ps_sync_installed in = base_installed();
    diff_log l = {0};
    cm.expr = "p.relevance_score";
    assert_int_equal(ps_sync_registry_diff(&cfg, &in, 1, collect, &l), 1);
    assert_string_equal(l.msgs[0], "contexts: columns: relevance_score changed "
                                   "(\"least(p.relevance_score, 1.0)\" -> \"p.relevance_score\")");
    /* columns: removed altogether: the default p.<col> is what install stores */
    memset(&l, 0, sizeof l);
    t.n_columns = 0;
    assert_int_equal(ps_sync_registry_diff(&cfg, &in, 1, collect, &l), 1);
    assert_non_null(strstr(l.msgs[0], "-> \"p.relevance_score\""));
    /* a mapping for a column the installed map does not have */
    memset(&l, 0, sizeof l);
    ps_column_map two[2] = {cm, {.column = "extra", .expr = "1"}};
    two[0].expr = "least(p.relevance_score, 1.0)";
    t.columns = two;
    t.n_columns = 2;
    assert_int_equal(ps_sync_registry_diff(&cfg, &in, 1, collect, &l), 1);
    assert_non_null(strstr(l.msgs[0], "contexts: columns: extra is mapped in the config"));
}

static void test_registry_key_changed(void **state)
{
    (void)state;
    ps_config cfg;
    ps_table_config t;
    ps_column_map cm;
    base_config(&cfg, &t, &cm);
    ps_sync_installed in = base_installed();
    diff_log l = {0};
    char *k2[] = {"id", "Name"};
    t.key = k2;
    t.n_key = 2;
    assert_int_equal(ps_sync_registry_diff(&cfg, &in, 1, collect, &l), 1);
    assert_string_equal(l.msgs[0], "contexts: key changed (id -> id, Name)");
    /* installed with a configured key, config now says "primary key" */
    memset(&l, 0, sizeof l);
    static const char *const ik2[] = {"id", "Name"};
    in.key = ik2;
    in.n_key = 2;
    t.n_key = 0;
    assert_int_equal(ps_sync_registry_diff(&cfg, &in, 1, collect, &l), 1);
    assert_string_equal(l.msgs[0], "contexts: key changed (id, Name -> primary key id)");
}

static void test_registry_tables_added_removed(void **state)
{
    (void)state;
    ps_config cfg;
    ps_table_config t[2];
    ps_column_map cm;
    base_config(&cfg, &t[0], &cm);
    memset(&t[1], 0, sizeof t[1]);
    t[1].name = "users";
    cfg.migration.tables = t;
    cfg.migration.n_tables = 2;
    ps_sync_installed in[2] = {base_installed(), base_installed()};
    in[1].table = "orders";
    diff_log l = {0};
    assert_int_equal(ps_sync_registry_diff(&cfg, in, 2, collect, &l), 2);
    assert_string_equal(l.msgs[0], "users: in the config but not installed");
    assert_string_equal(l.msgs[1], "orders: installed (public.orders) but not in the config");
    /* same name in another schema is not the same table */
    memset(&l, 0, sizeof l);
    cfg.migration.n_tables = 1;
    in[0].schema = "app";
    assert_int_equal(ps_sync_registry_diff(&cfg, in, 1, NULL, NULL), 2);
    /* nothing installed at all */
    assert_int_equal(ps_sync_registry_diff(&cfg, NULL, 0, collect, &l), 1);
}

/* A result shaped like ps_sync_registry_sql's: rows (schema, table, kind,
 * name, expr, dflt), NULL written as NULL. */
static PGresult *registry_result(const char *const (*rows)[6], int n)
{
    static const char *const names[6] = {"schema_name", "table_name", "kind", "name", "expr",
                                         "dflt"};
    PGresAttDesc att[6];
    memset(att, 0, sizeof att);
    for (int i = 0; i < 6; i++) {
        att[i].name = (char *)names[i];
        att[i].typid = 25; /* text */
        att[i].typlen = -1;
        att[i].atttypmod = -1;
    }
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    assert_non_null(res);
    assert_true(PQsetResultAttrs(res, 6, att));
    for (int r = 0; r < n; r++)
        for (int f = 0; f < 6; f++)
            assert_true(PQsetvalue(res, r, f, (char *)rows[r][f],
                                   rows[r][f] ? (int)strlen(rows[r][f]) : -1));
    return res;
}

/* Rows grouped by table and kind become one ps_sync_installed per table,
 * each list a slice in order; the result compares like hand-built tables. */
static void test_registry_read(void **state)
{
    (void)state;
    static const char *const rows[][6] = {
        {"public", "contexts", "c", "id", "p.id", "p.id"},
        {"public", "contexts", "c", "relevance_score", "least(p.relevance_score, 1.0)",
         "p.relevance_score"},
        {"public", "contexts", "c", "Name", "p.\"Name\"", "p.\"Name\""},
        {"public", "contexts", "k", "id", NULL, NULL},
        {"public", "contexts", "p", "id", NULL, NULL},
        {"public", "users", "c", "id", "p.id", "p.id"},
        {"public", "users", "k", "id", NULL, NULL},
        {"public", "users", "k", "org", NULL, NULL},
    };
    PGresult *res = registry_result(rows, 8);
    ps_sync_registry reg;
    assert_int_equal(ps_sync_registry_read(res, &reg), 0);
    assert_int_equal(reg.n, 2);
    assert_string_equal(reg.tables[0].table, "contexts");
    assert_int_equal(reg.tables[0].n_cols, 3);
    assert_string_equal(reg.tables[0].cols[2].shadow, "Name");
    assert_string_equal(reg.tables[0].cols[1].dflt, "p.relevance_score");
    assert_int_equal(reg.tables[0].n_key, 1);
    assert_int_equal(reg.tables[0].n_pk, 1);
    assert_string_equal(reg.tables[1].table, "users");
    assert_int_equal(reg.tables[1].n_key, 2);
    assert_string_equal(reg.tables[1].key[1], "org");
    assert_int_equal(reg.tables[1].n_pk, 0); /* no primary key: pk NULL, none */
    assert_null(reg.tables[1].pk);

    /* the same comparison as on hand-built tables: contexts equal, users
     * not in the config */
    ps_config cfg;
    ps_table_config t;
    ps_column_map cm;
    base_config(&cfg, &t, &cm);
    diff_log l = {0};
    assert_int_equal(ps_sync_registry_diff(&cfg, reg.tables, reg.n, collect, &l), 1);
    assert_string_equal(l.msgs[0], "users: installed (public.users) but not in the config");
    ps_sync_registry_clear(&reg);
    assert_int_equal(reg.n, 0);
    ps_sync_registry_clear(&reg); /* twice is fine */
    PQclear(res);

    /* nothing installed: no tables, not an error */
    res = registry_result(rows, 0);
    assert_int_equal(ps_sync_registry_read(res, &reg), 0);
    assert_int_equal(reg.n, 0);
    ps_sync_registry_clear(&reg);
    PQclear(res);

    /* a finalized migration: no table, by design, said by a row of kind 'f' */
    static const char *const fin[][6] = {{NULL, NULL, "f", NULL, NULL, NULL}};
    res = registry_result(fin, 1);
    assert_int_equal(ps_sync_registry_read(res, &reg), 0);
    assert_int_equal(reg.n, 0);
    assert_true(reg.finalized);
    ps_sync_registry_clear(&reg);
    assert_false(reg.finalized);
    PQclear(res);
    res = registry_result(rows, 8);
    assert_int_equal(ps_sync_registry_read(res, &reg), 0);
    assert_false(reg.finalized);
    ps_sync_registry_clear(&reg);
    PQclear(res);

    /* not the registry query's result */
    res = PQmakeEmptyPGresult(NULL, PGRES_FATAL_ERROR);
    assert_int_equal(ps_sync_registry_read(res, &reg), -EINVAL);
    assert_int_equal(reg.n, 0);
    PQclear(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_same),
        cmocka_unit_test(test_registry_column_changed),
        cmocka_unit_test(test_registry_key_changed),
        cmocka_unit_test(test_registry_tables_added_removed),
        cmocka_unit_test(test_registry_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
