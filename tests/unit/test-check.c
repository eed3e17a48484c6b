/*
 * test-check.c - pgshadowctl's pure policy: literal quoting, the install and
 * uninstall scripts, and the preflight's PASS/WARN/FAIL decisions.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/ctl.h"

static char *quote(const char *s, size_t len, int *rc)
{
    ps_ctl_buf b = {0};
    *rc = ps_ctl_quote_literal(&b, s, len);
    return ps_ctl_buf_steal(&b);
}

static void test_quote_literal(void **state)
{
    (void)state;
    int rc;
    char *q = quote("plain", 5, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(q, "'plain'");
    free(q);

    q = quote("it's \"x\"", 8, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(q, "'it''s \"x\"'");
    free(q);

    /* a backslash: E'' with it doubled, the same text whatever
     * standard_conforming_strings says */
    q = quote("a\\'; DROP TABLE x; --", 21, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(q, "E'a\\\\''; DROP TABLE x; --'");
    free(q);

    q = quote("", 0, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(q, "''");
    free(q);

    /* UTF-8 passes through unchanged */
    q = quote("\xc3\xbcn\xc3\xaf", 5, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(q, "'\xc3\xbcn\xc3\xaf'");
    free(q);

    /* NUL refused, nothing appended */
    ps_ctl_buf b = {0};
    assert_int_equal(ps_ctl_quote_literal(&b, "a\0b", 3), -EINVAL);
    assert_int_equal(b.len, 0);
    ps_ctl_buf_free(&b);
}

static void test_json_string(void **state)
{
    (void)state;
    ps_ctl_buf b = {0};
    ps_ctl_json_string(&b, "least(p.\"x\", 1.0)\\\n\x01");
    char *s = ps_ctl_buf_steal(&b);
    assert_string_equal(s, "\"least(p.\\\"x\\\", 1.0)\\\\\\n\\u0001\"");
    free(s);
}

/* A hand-built config: two tables, one with a composite key and a mapping. */
static void test_install_script(void **state)
{
    (void)state;
    char *key[] = {"Tenant Id", "id"};
    ps_column_map cols[] = {{.column = "score", .expr = "least(p.score, 1.0)"},
                            {.column = "na\"me", .expr = "p.'x'"}};
    ps_column_map rev[] = {{.column = "sc'ore", .expr = "p.score"}};
    ps_table_config tables[] = {
        {.name = "projects"},
        {.name = "We'ird \"T\"", .key = key, .n_key = 2, .columns = cols, .n_columns = 2, .reverse = rev,
         .n_reverse = 1},
    };
    ps_config cfg = {0};
    cfg.migration.id = "mig_1";
    cfg.migration.schema = "public";
    cfg.migration.shadow_suffix = "_shadow";
    cfg.migration.tables = tables;
    cfg.migration.n_tables = 2;

    char *script = NULL;
    assert_int_equal(ps_ctl_install_script(&cfg, "CREATE SCHEMA IF NOT EXISTS pgshadow;", &script),
                     0);
    assert_string_equal(
        script,
        "BEGIN;\n"
        "SET LOCAL lock_timeout = '200ms';\n"
        "CREATE SCHEMA IF NOT EXISTS pgshadow;\n"
        "SELECT pgshadow.register_table('public', 'projects', NULL, '_shadow', 'mig_1', "
        "'{}'::jsonb);\n"
        "SELECT pgshadow.set_reverse_columns('public', 'projects', '{}'::jsonb);\n"
        "SELECT pgshadow.register_table('public', 'We''ird \"T\"', ARRAY['Tenant Id', 'id']::text[], "
        "'_shadow', 'mig_1', E'{\"score\": \"least(p.score, 1.0)\", \"na\\\\\"me\": \"p.''x''\"}'::jsonb);\n"
        "SELECT pgshadow.set_reverse_columns('public', 'We''ird \"T\"', '{\"sc''ore\": \"p.score\"}'::jsonb);\n"
        "SELECT pgshadow.finish_install('mig_1');\n"
        "COMMIT;\n");
    free(script);

    /* a backslash in an expression goes through JSON (doubled) and then E'' */
    ps_column_map bs[] = {{.column = "c", .expr = "p.a ~ '\\d'"}};
    tables[1].columns = bs;
    tables[1].n_columns = 1;
    assert_int_equal(ps_ctl_install_script(&cfg, "", &script), 0);
    assert_non_null(strstr(script, "E'{\"c\": \"p.a ~ ''\\\\\\\\d''\"}'::jsonb"));
    free(script);
}

static void test_uninstall_script(void **state)
{
    (void)state;
    char *s = NULL;
    assert_int_equal(ps_ctl_uninstall_script(true, NULL, "DROP SCHEMA pgshadow CASCADE;\n", &s), 0);
    assert_string_equal(s, "BEGIN;\nSET LOCAL lock_timeout = '200ms';\n"
                           "SELECT pgshadow.uninstall(true);\n"
                           "DROP SCHEMA pgshadow CASCADE;\nCOMMIT;\n");
    free(s);
    assert_int_equal(ps_ctl_uninstall_script(false, NULL, "X;", &s), 0);
    assert_non_null(strstr(s, "SELECT pgshadow.uninstall(false);\nX;\nCOMMIT;\n"));
    free(s);
    /* with the migration id (quoted): other migrations stay installed */
    assert_int_equal(ps_ctl_uninstall_script(true, "m'1", "X;", &s), 0);
    assert_non_null(strstr(s, "SELECT pgshadow.uninstall_migration(true, 'm''1');\nX;\nCOMMIT;\n"));
    free(s);
}

static void test_retryable(void **state)
{
    (void)state;
    assert_true(ps_ctl_sqlstate_retryable("55P03"));
    assert_true(ps_ctl_sqlstate_retryable("40P01"));
    assert_true(ps_ctl_sqlstate_retryable("40001"));
    assert_false(ps_ctl_sqlstate_retryable("42P01"));
    assert_false(ps_ctl_sqlstate_retryable("57014"));
    assert_false(ps_ctl_sqlstate_retryable(NULL));
}

static void test_decide_version(void **state)
{
    (void)state;
    char d[256];
    assert_int_equal(ps_check_decide_server_version(150004, d, sizeof d), PS_CHECK_PASS);
    assert_non_null(strstr(d, "PostgreSQL 15"));
    assert_int_equal(ps_check_decide_server_version(130000, d, sizeof d), PS_CHECK_PASS);
    assert_int_equal(ps_check_decide_server_version(120017, d, sizeof d), PS_CHECK_FAIL);
    assert_non_null(strstr(d, "13 or later"));
    assert_int_equal(ps_check_decide_server_version(90624, d, sizeof d), PS_CHECK_FAIL);
    assert_non_null(strstr(d, "9.6"));
    assert_int_equal(ps_check_decide_server_version(0, d, sizeof d), PS_CHECK_FAIL);
}

static void test_decide_long_xacts(void **state)
{
    (void)state;
    char d[256];
    assert_int_equal(ps_check_decide_long_xacts(0, NULL, NULL, d, sizeof d), PS_CHECK_PASS);
    int pids[] = {4242, 77};
    int64_t ages[] = {3601, 400};
    assert_int_equal(ps_check_decide_long_xacts(2, pids, ages, d, sizeof d), PS_CHECK_WARN);
    assert_non_null(strstr(d, "pid 4242 for 3601s"));
    assert_non_null(strstr(d, "pid 77 for 400s"));
    /* a tiny buffer truncates, never overflows */
    char small[20];
    assert_int_equal(ps_check_decide_long_xacts(2, pids, ages, small, sizeof small), PS_CHECK_WARN);
    assert_true(strlen(small) < sizeof small);
}

static void test_decide_replication(void **state)
{
    (void)state;
    char d[256];
    assert_int_equal(ps_check_decide_replication(0, NULL, 10000, d, sizeof d), PS_CHECK_PASS);
    int64_t fine[] = {10, 9999};
    assert_int_equal(ps_check_decide_replication(2, fine, 10000, d, sizeof d), PS_CHECK_PASS);
    int64_t lagging[] = {10, 10001};
    assert_int_equal(ps_check_decide_replication(2, lagging, 10000, d, sizeof d), PS_CHECK_WARN);
    assert_non_null(strstr(d, "10001 ms"));
    int64_t unknown[] = {-1};
    assert_int_equal(ps_check_decide_replication(1, unknown, 10000, d, sizeof d), PS_CHECK_WARN);
    assert_non_null(strstr(d, "pg_read_all_stats"));
    /* max_replication_lag 0 means no throttling: a lag is not a warning */
    assert_int_equal(ps_check_decide_replication(2, lagging, 0, d, sizeof d), PS_CHECK_PASS);
}

/* An idle, caught-up standby has replay_lag NULL: that is 0 lag for a role
 * that sees pg_stat_replication fully, "not visible" only otherwise. */
static void test_replay_lag_null(void **state)
{
    (void)state;
    char d[256];
    assert_int_equal(ps_check_replay_lag_ms(true, 0, true), 0);
    assert_int_equal(ps_check_replay_lag_ms(true, 0, false), -1);
    assert_int_equal(ps_check_replay_lag_ms(false, 1234, true), 1234);
    assert_int_equal(ps_check_replay_lag_ms(false, 1234, false), 1234);
    int64_t idle[] = {ps_check_replay_lag_ms(true, 0, true)};
    assert_int_equal(ps_check_decide_replication(1, idle, 10000, d, sizeof d), PS_CHECK_PASS);
    assert_non_null(strstr(d, "worst replay lag 0 ms"));
    assert_null(strstr(d, "not visible"));
    int64_t hidden[] = {ps_check_replay_lag_ms(true, 0, false)};
    assert_int_equal(ps_check_decide_replication(1, hidden, 10000, d, sizeof d), PS_CHECK_WARN);
    assert_non_null(strstr(d, "not visible"));
}

static void test_decide_disk(void **state)
{
    (void)state;
    char d[512];
    const int64_t MiB = 1024 * 1024;
    /* 1 GiB primary: shadows 1.2x + 10% log headroom */
    assert_int_equal(ps_check_estimate_need(1024 * MiB), 1024 * MiB + 1024 * MiB / 5 + 1024 * MiB / 10);
    /* small tables still reserve 64 MiB for the change log */
    assert_int_equal(ps_check_estimate_need(0), 64 * MiB);
    assert_int_equal(ps_check_estimate_need(-5), 64 * MiB);

    assert_int_equal(ps_check_decide_disk(100 * MiB, -1, "data_directory not readable", d, sizeof d),
                     PS_CHECK_WARN);
    assert_non_null(strstr(d, "cannot determine free disk"));
    assert_int_equal(ps_check_decide_disk(100 * MiB, 99 * MiB, "statvfs", d, sizeof d), PS_CHECK_FAIL);
    assert_int_equal(ps_check_decide_disk(100 * MiB, 150 * MiB, "statvfs", d, sizeof d), PS_CHECK_WARN);
    assert_int_equal(ps_check_decide_disk(100 * MiB, 200 * MiB, "statvfs", d, sizeof d), PS_CHECK_PASS);
    assert_non_null(strstr(d, "200.0 MiB free"));
}

static void test_decide_settings(void **state)
{
    (void)state;
    char d[256];
    assert_int_equal(ps_check_decide_archive_mode("off", d, sizeof d), PS_CHECK_WARN);
    assert_non_null(strstr(d, "no point-in-time recovery"));
    assert_int_equal(ps_check_decide_archive_mode("on", d, sizeof d), PS_CHECK_PASS);
    assert_int_equal(ps_check_decide_archive_mode("always", d, sizeof d), PS_CHECK_PASS);
    assert_int_equal(ps_check_decide_wal_level("replica", d, sizeof d), PS_CHECK_PASS);
    assert_int_equal(ps_check_decide_wal_level("logical", d, sizeof d), PS_CHECK_PASS);
    assert_int_equal(ps_check_decide_wal_level("minimal", d, sizeof d), PS_CHECK_WARN);
}

static void test_report(void **state)
{
    (void)state;
    ps_check_report r;
    ps_check_report_init(&r);
    ps_check_add(&r, PS_CHECK_PASS, "server version", "PostgreSQL %d", 15);
    assert_int_equal(r.worst, PS_CHECK_PASS);
    ps_check_add(&r, PS_CHECK_FAIL, "table public.t", "no key");
    ps_check_add(&r, PS_CHECK_WARN, "archive mode", "off");
    assert_int_equal(r.worst, PS_CHECK_FAIL);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ps_check_report_print(&r, PS_CHECK_PASS, f);
    fclose(f);
    assert_string_equal(buf, "PASS  server version: PostgreSQL 15\n"
                             "FAIL  table public.t: no key\n"
                             "WARN  archive mode: off\n");
    free(buf);
    f = open_memstream(&buf, &len);
    ps_check_report_print(&r, PS_CHECK_FAIL, f);
    fclose(f);
    assert_string_equal(buf, "FAIL  table public.t: no key\n");
    free(buf);
    ps_check_report_free(&r);
    ps_check_report_free(NULL);
}

/* A detail can carry libpq's words (a failed query's connection error):
 * the report never holds a secret, in the same rule as every message. */
static void test_report_redacted(void **state)
{
    (void)state;
    ps_check_report r;
    ps_check_report_init(&r);
    ps_check_add(&r, PS_CHECK_FAIL, "free disk", "query failed: %s",
                 "no connection to postgresql://app:Zm9v/YmFy@db.example.com/prod password=x");
    assert_string_equal(r.lines[0].detail,
                        "query failed: no connection to postgresql://app:***@db.example.com/prod "
                        "password=***");
    ps_check_report_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote_literal),     cmocka_unit_test(test_json_string),
        cmocka_unit_test(test_install_script),    cmocka_unit_test(test_uninstall_script),
        cmocka_unit_test(test_retryable),         cmocka_unit_test(test_decide_version),
        cmocka_unit_test(test_decide_long_xacts), cmocka_unit_test(test_decide_replication),
        cmocka_unit_test(test_replay_lag_null),
        cmocka_unit_test(test_decide_disk),       cmocka_unit_test(test_decide_settings),
        cmocka_unit_test(test_report),            cmocka_unit_test(test_report_redacted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
