/*
 * test-config.c - the config loader: defaults, every key, every error kind
 * with its exact position and message, limits, and the reload diff.
 *
 * Size: over 800 lines on purpose: most of it is tables of cases (every key,
 * every error kind) sharing the temp-file and load helpers defined here.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/stat.h>
#include <unistd.h>

#include "utf8-check.h"
#include "pgshadow/config.h"

#define MINIMAL                                                                                     \
    "database:\n"                                                                                  \
    "  conninfo: \"service=pgshadow\"\n"                                                           \
    "migration:\n"                                                                                 \
    "  id: m1\n"                                                                                   \
    "  tables:\n"                                                                                  \
    "    - name: projects\n"

static ps_config *load_ok(const char *yaml)
{
    ps_errors errs;
    ps_errors_init(&errs);
    ps_config *cfg = NULL;
    int r = ps_config_load_buffer("t.yaml", yaml, strlen(yaml), &cfg, &errs);
    if (r != 0) {
        ps_errors_print(&errs, stderr);
        fail_msg("expected the config to load");
    }
    assert_int_equal(errs.count, 0);
    assert_non_null(cfg);
    ps_errors_clear(&errs);
    return cfg;
}

/* Load a buffer that must fail; return all errors, one per line (malloc'd). */
static char *load_fail_buf(const char *yaml, size_t len)
{
    ps_errors errs;
    ps_errors_init(&errs);
    ps_config *cfg = (ps_config *)1;
    int r = ps_config_load_buffer("t.yaml", yaml, len, &cfg, &errs);
    assert_int_equal(r, -1);
    assert_null(cfg);
    assert_true(errs.count > 0);
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    ps_errors_print(&errs, f);
    fclose(f);
    ps_errors_clear(&errs);
    return buf;
}

static void expect_errors(const char *yaml, const char *want)
{
    char *got = load_fail_buf(yaml, strlen(yaml));
    if (strcmp(got, want) != 0)
        fail_msg("for:\n%s\ngot:\n%swant:\n%s", yaml, got, want);
    free(got);
}

/* ------------------------------------------------------------------ */

static void test_defaults(void **state)
{
    (void)state;
    ps_config *cfg = load_ok(MINIMAL);
    assert_string_equal(cfg->path, "t.yaml");
    assert_string_equal(cfg->database.conninfo, "service=pgshadow");
    assert_string_equal(cfg->migration.id, "m1");
    assert_string_equal(cfg->migration.schema, "public");
    assert_string_equal(cfg->migration.shadow_suffix, "_shadow");
    assert_int_equal(cfg->migration.n_tables, 1);
    assert_string_equal(cfg->migration.tables[0].name, "projects");
    assert_int_equal(cfg->migration.tables[0].n_key, 0);
    assert_int_equal(cfg->migration.tables[0].n_columns, 0);
    assert_int_equal(cfg->migration.tables[0].line, 6);
    assert_int_equal(cfg->migration.tables[0].column_no, 7);
    assert_int_equal(cfg->sync.batch_size, 5000);
    assert_int_equal(cfg->sync.batch_delay_ms, 0);
    assert_int_equal(cfg->sync.catchup_interval_ms, 1000);
    assert_int_equal(cfg->sync.workers, 2);
    assert_int_equal(cfg->sync.chunk_target_ms, 500);
    assert_int_equal(cfg->sync.backfill_chunk, 5000);
    assert_int_equal(cfg->sync.max_replication_lag_ms, 10000);
    assert_int_equal(cfg->sync.on_apply_error, PS_ON_APPLY_ERROR_QUARANTINE);
    assert_int_equal(cfg->verify.interval_ms, 600000);
    assert_int_equal(cfg->verify.chunk_rows, 10000);
    assert_true(cfg->verify.repair);
    assert_int_equal(cfg->verify.sample_interval_ms, 10000);
    assert_int_equal(cfg->verify.sample_keys, 20);
    assert_int_equal(cfg->monitor.poll_interval_ms, 10000);
    assert_int_equal(cfg->cutover.start, PS_CUTOVER_START_MANUAL);
    assert_true(cfg->cutover.gates.min_sync_percent == 99.0);
    assert_int_equal(cfg->cutover.gates.max_sync_lag_ms, 30000);
    assert_int_equal(cfg->cutover.gates.max_diverged, 5);
    assert_int_equal(cfg->cutover.gates.max_quarantined, 0);
    assert_int_equal(cfg->cutover.gates.max_sample_mismatches, 0);
    assert_true(cfg->cutover.gates.max_latency_ratio == 1.5);
    assert_int_equal(cfg->cutover.failures_to_trip, 3);
    assert_int_equal(cfg->cutover.on_trip, PS_ON_TRIP_STEP_DOWN);
    assert_int_equal(cfg->cutover.n_stages, 5);
    static const int pct[] = { 1, 5, 20, 50, 100 };
    static const int64_t hold_h[] = { 1, 2, 4, 4, 8 };
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(cfg->cutover.stages[i].percent, pct[i]);
        assert_int_equal(cfg->cutover.stages[i].hold_ms, hold_h[i] * 3600000);
    }
    assert_int_equal(cfg->cutover.finally, PS_FINALLY_WAIT);
    assert_int_equal(cfg->cutover.promote.lock_timeout_ms, 2000);
    assert_int_equal(cfg->cutover.promote.attempts, 10);
    assert_true(cfg->cutover.promote.keep_legacy);
    assert_int_equal(cfg->log.level, LOG_INFO);
    assert_string_equal(cfg->metrics.listen, "127.0.0.1:9187");
    ps_config_free(cfg);
    ps_config_free(NULL);
}

static const char *full_yaml =
    "database:\n"
    "  conninfo: \"host=db.internal user=migrator dbname=app\"\n"
    "migration:\n"
    "  id: p2_3.shadow-migration\n"
    "  schema: app\n"
    "  shadow_suffix: _next\n"
    "  tables:\n"
    "    - name: projects\n"
    "    - name: contexts\n"
    "      key: [id, tenant]\n"
    "      columns:\n"
    "        relevance_score: \"least(p.relevance_score, 1.0)\"\n"
    "        title: p.title\n"
    "    - name: 'Weird \"Table\"'\n"
    "    - name: ünïcødé tablé\n"
    "sync:\n"
    "  batch_size: 500\n"
    "  batch_delay: 0ms\n"
    "  catchup_interval: 2s\n"
    "  workers: 7\n"
    "  chunk_target: 1500ms\n"
    "  backfill_chunk: 100\n"
    "  max_replication_lag: 0s\n"
    "  on_apply_error: halt\n"
    "verify:\n"
    "  interval: 0s\n"
    "  chunk_rows: 50\n"
    "  repair: false\n"
    "  sample_interval: 250ms\n"
    "  sample_keys: 1000\n"
    "monitor:\n"
    "  poll_interval: 250ms\n"
    "cutover:\n"
    "  start: auto\n"
    "  gates:\n"
    "    min_sync_percent: 99.5\n"
    "    max_sync_lag: 1m\n"
    "    max_diverged: 0\n"
    "    max_quarantined: 7\n"
    "    max_sample_mismatches: 3\n"
    "    max_latency_ratio: 1.02\n"
    "  failures_to_trip: 1\n"
    "  on_trip: rollback\n"
    "  stages:\n"
    "    - { percent: 10, hold: 30m }\n"
    "    - percent: 100\n"
    "      hold: 1d\n"
    "  finally: promote\n"
    "  promote:\n"
    "    lock_timeout: 500ms\n"
    "    attempts: 3\n"
    "    keep_legacy: false\n"
    "log:\n"
    "  level: debug\n"
    "metrics:\n"
    "  listen: \"[::1]:9000\"\n";

static void test_every_key(void **state)
{
    (void)state;
    ps_config *cfg = load_ok(full_yaml);
    assert_string_equal(cfg->database.conninfo, "host=db.internal user=migrator dbname=app");
    assert_string_equal(cfg->migration.id, "p2_3.shadow-migration");
    assert_string_equal(cfg->migration.schema, "app");
    assert_string_equal(cfg->migration.shadow_suffix, "_next");
    assert_int_equal(cfg->migration.n_tables, 4);
    const ps_table_config *t = ps_config_table(cfg, "contexts");
    assert_non_null(t);
    assert_ptr_equal(t, &cfg->migration.tables[1]);
    assert_int_equal(t->n_key, 2);
    assert_string_equal(t->key[0], "id");
    assert_string_equal(t->key[1], "tenant");
    assert_int_equal(t->n_columns, 2);
    assert_string_equal(t->columns[0].column, "relevance_score");
    assert_string_equal(t->columns[0].expr, "least(p.relevance_score, 1.0)");
    assert_int_equal(t->columns[0].line, 12);
    assert_int_equal(t->columns[0].column_no, 9);
    assert_string_equal(t->columns[1].column, "title");
    assert_string_equal(t->columns[1].expr, "p.title");
    assert_non_null(ps_config_table(cfg, "Weird \"Table\""));
    assert_non_null(ps_config_table(cfg, "ünïcødé tablé"));
    assert_null(ps_config_table(cfg, "Projects"));
    assert_null(ps_config_table(cfg, NULL));
    assert_int_equal(cfg->sync.batch_size, 500);
    assert_int_equal(cfg->sync.batch_delay_ms, 0);
    assert_int_equal(cfg->sync.catchup_interval_ms, 2000);
    assert_int_equal(cfg->sync.workers, 7);
    assert_int_equal(cfg->sync.chunk_target_ms, 1500);
    assert_int_equal(cfg->sync.backfill_chunk, 100);
    assert_int_equal(cfg->sync.max_replication_lag_ms, 0);
    assert_int_equal(cfg->sync.on_apply_error, PS_ON_APPLY_ERROR_HALT);
    assert_int_equal(cfg->verify.interval_ms, 0);
    assert_int_equal(cfg->verify.chunk_rows, 50);
    assert_false(cfg->verify.repair);
    assert_int_equal(cfg->verify.sample_interval_ms, 250);
    assert_int_equal(cfg->verify.sample_keys, 1000);
    assert_int_equal(cfg->monitor.poll_interval_ms, 250);
    assert_int_equal(cfg->cutover.start, PS_CUTOVER_START_AUTO);
    assert_true(cfg->cutover.gates.min_sync_percent == 99.5);
    assert_int_equal(cfg->cutover.gates.max_sync_lag_ms, 60000);
    assert_int_equal(cfg->cutover.gates.max_diverged, 0);
    assert_int_equal(cfg->cutover.gates.max_quarantined, 7);
    assert_int_equal(cfg->cutover.gates.max_sample_mismatches, 3);
    assert_true(cfg->cutover.gates.max_latency_ratio == 1.02);
    assert_int_equal(cfg->cutover.failures_to_trip, 1);
    assert_int_equal(cfg->cutover.on_trip, PS_ON_TRIP_ROLLBACK);
    assert_int_equal(cfg->cutover.n_stages, 2);
    assert_int_equal(cfg->cutover.stages[0].percent, 10);
    assert_int_equal(cfg->cutover.stages[0].hold_ms, 1800000);
    assert_int_equal(cfg->cutover.stages[1].percent, 100);
    assert_int_equal(cfg->cutover.stages[1].hold_ms, 86400000);
    assert_int_equal(cfg->cutover.finally, PS_FINALLY_PROMOTE);
    assert_int_equal(cfg->cutover.promote.lock_timeout_ms, 500);
    assert_int_equal(cfg->cutover.promote.attempts, 3);
    assert_false(cfg->cutover.promote.keep_legacy);
    assert_int_equal(cfg->log.level, LOG_DEBUG);
    assert_string_equal(cfg->metrics.listen, "[::1]:9000");
    ps_config_free(cfg);
}

static void test_small_variants_accepted(void **state)
{
    (void)state;
    static const char *ok[] = {
        MINIMAL "metrics:\n  listen: \"\"\n",
        MINIMAL "metrics:\n  listen:\n",
        MINIMAL "verify:\n",          /* empty section: all defaults */
        MINIMAL "log:\n  level: error\n",
        MINIMAL "cutover:\n  stages:\n    - { percent: 100, hold: 1s }\n",
        MINIMAL "cutover:\n  on_trip: pause\n",
        "database: {conninfo: \"postgresql://app@db/prod?sslmode=require\"}\n"
        "migration: {id: '2024', tables: [{name: \"a b\"}, {name: A}, {name: a}]}\n",
        "database:\n  conninfo: \"\"\nmigration:\n  id: 2024\n  tables:\n    - name: x\n",
        "# comment only before\n" MINIMAL "...\n",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        ps_config_free(load_ok(ok[i]));
    ps_config *cfg = load_ok(MINIMAL "metrics:\n  listen:\n");
    assert_string_equal(cfg->metrics.listen, "");
    ps_config_free(cfg);
    cfg = load_ok(MINIMAL "log:\n  level: warning\n");
    assert_int_equal(cfg->log.level, LOG_WARNING);
    ps_config_free(cfg);
}

/* ------------------------------------------------------------------ */
/* every error kind, with position and message                          */

static void test_syntax_error(void **state)
{
    (void)state;
    expect_errors("database:\n  conninfo: x\n   bad: 1\n",
                  "t.yaml:3:7: syntax error: mapping values are not allowed in this context\n");
    expect_errors("a: [1, 2\n",
                  "t.yaml:2:1: syntax error: did not find expected ',' or ']' "
                  "(while parsing a flow sequence at line 1, column 4)\n");
    expect_errors("a: \"x\x01\"\n", "t.yaml:1:6: syntax error: control characters are not allowed\n");
}

static void test_unknown_key(void **state)
{
    (void)state;
    expect_errors(MINIMAL "sync:\n  batchsize: 10\n",
                  "t.yaml:8:3: sync: unknown key \"batchsize\" (known keys: batch_size, batch_delay, "
                  "catchup_interval, workers, chunk_target, backfill_chunk, max_replication_lag, "
                  "on_apply_error)\n");
    expect_errors(MINIMAL "extra: 1\n",
                  "t.yaml:7:1: unknown top-level key \"extra\" (known keys: database, migration, "
                  "sync, verify, monitor, cutover, log, metrics)\n");
    expect_errors(MINIMAL "cutover:\n  gates:\n    min_sync: 1\n",
                  "t.yaml:9:5: cutover.gates: unknown key \"min_sync\" (known keys: "
                  "min_sync_percent, max_sync_lag, max_diverged, max_quarantined, "
                  "max_sample_mismatches, max_latency_ratio)\n");
    expect_errors("database:\n  conninfo: x=1\n  \"new\\nline\": 1\n" "migration: {id: a, tables: [{name: t, kee: [a]}]}\n",
                  "t.yaml:2:13: database.conninfo: is not a valid libpq connection string "
                  "(key=value pairs or a postgresql:// URI)\n"
                  "t.yaml:3:3: database: unknown key \"new\\x0aline\" (known keys: conninfo)\n"
                  "t.yaml:4:39: migration.tables[0]: unknown key \"kee\" (known keys: name, key, columns, reverse_columns)\n");
}

static void test_wrong_type(void **state)
{
    (void)state;
    expect_errors(MINIMAL "sync:\n  batch_size: \"1000\"\n  batch_delay: [1s]\n",
                  "t.yaml:8:15: sync.batch_size: expected an integer, got a string\n"
                  "t.yaml:9:16: sync.batch_delay: expected a duration such as 30s, got a sequence\n");
    expect_errors(MINIMAL "verify: 5\n", "t.yaml:7:9: verify: expected a mapping, got an integer\n");
    expect_errors(MINIMAL "verify:\n  repair: yes\n",
                  "t.yaml:8:11: verify.repair: expected a boolean (true or false), got a string\n");
    expect_errors(MINIMAL "cutover:\n  stages: {percent: 1}\n",
                  "t.yaml:8:11: cutover.stages: expected a sequence, got a mapping\n");
    expect_errors(MINIMAL "cutover:\n  gates:\n    min_sync_percent: high\n",
                  "t.yaml:9:23: cutover.gates.min_sync_percent: expected a number, got a string\n");
    expect_errors("database:\n  conninfo: {a: 1}\nmigration:\n  id: ~\n  tables: x\n",
                  "t.yaml:2:13: database.conninfo: expected a string, got a mapping\n"
                  "t.yaml:4:7: migration.id: expected a string, got null\n"
                  "t.yaml:5:11: migration.tables: expected a sequence, got a string\n");
    expect_errors("[1]\n", "t.yaml:1:1: expected a mapping, got a sequence\n");
    expect_errors(MINIMAL "log:\n  level: [debug]\n",
                  "t.yaml:8:10: log.level: expected a string, got a sequence\n");
    expect_errors(MINIMAL "sync:\n  batch_size: 1.5\n",
                  "t.yaml:8:15: sync.batch_size: expected an integer, got a number\n");
}

static void test_bad_duration(void **state)
{
    (void)state;
    expect_errors(MINIMAL "sync:\n  batch_delay: 20\n  catchup_interval: 1.5s\n"
                          "  max_replication_lag: -1s\n",
                  "t.yaml:8:16: sync.batch_delay: invalid duration \"20\": a duration needs a unit "
                  "(ms, s, m, h, d)\n"
                  "t.yaml:9:21: sync.catchup_interval: invalid duration \"1.5s\": unknown duration "
                  "unit (use ms, s, m, h or d)\n"
                  "t.yaml:10:24: sync.max_replication_lag: invalid duration \"-1s\": a duration is a "
                  "non-negative integer followed by a unit (ms, s, m, h, d)\n");
    expect_errors(MINIMAL "verify:\n  interval: 99999999999999999999d\n",
                  "t.yaml:8:13: verify.interval: invalid duration \"99999999999999999999d\": "
                  "duration is too large\n");
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_errors(MINIMAL "sync:\n  batch_size: 0\n  batch_delay: 11s\n  catchup_interval: 5ms\n"
                          "  backfill_chunk: 99999999999999999999999\n",
                  "t.yaml:8:15: sync.batch_size: must be between 1 and 100000 (got 0)\n"
                  "t.yaml:9:16: sync.batch_delay: must be between 0s and 10s (got 11s)\n"
                  "t.yaml:10:21: sync.catchup_interval: must be between 10ms and 1h (got 5ms)\n"
                  "t.yaml:11:19: sync.backfill_chunk: must be between 1 and 1000000 "
                  "(got 99999999999999999999999)\n");
    expect_errors(MINIMAL "cutover:\n  failures_to_trip: 1001\n  gates:\n    min_sync_percent: -1\n"
                          "    max_diverged: -5\n",
                  "t.yaml:8:21: cutover.failures_to_trip: must be between 1 and 1000 (got 1001)\n"
                  "t.yaml:10:23: cutover.gates.min_sync_percent: must be between 0 and 100 (got -1)\n"
                  "t.yaml:11:19: cutover.gates.max_diverged: must be between 0 and 1000000000 (got -5)\n");
    /* shadow-read sampling's keys: a ratio of 0 is refused (> 0), so is one
     * past 1000; keys 1..1000; the interval is a duration (0s = off) */
    expect_errors(MINIMAL "verify:\n  sample_interval: 2d\n  sample_keys: 0\n"
                          "cutover:\n  gates:\n    max_latency_ratio: 0\n    max_sample_mismatches: -1\n",
                  "t.yaml:8:20: verify.sample_interval: must be between 0s and 1d (got 2d)\n"
                  "t.yaml:9:16: verify.sample_keys: must be between 1 and 1000 (got 0)\n"
                  "t.yaml:12:24: cutover.gates.max_latency_ratio: must be greater than 0 and at most "
                  "1000 (got 0)\n"
                  "t.yaml:13:28: cutover.gates.max_sample_mismatches: must be between 0 and "
                  "1000000000 (got -1)\n");
    expect_errors(MINIMAL "verify:\n  sample_keys: 1001\ncutover:\n  gates:\n    max_latency_ratio: 1000.5\n",
                  "t.yaml:8:16: verify.sample_keys: must be between 1 and 1000 (got 1001)\n"
                  "t.yaml:11:24: cutover.gates.max_latency_ratio: must be greater than 0 and at most "
                  "1000 (got 1000.5)\n");
    ps_config *cfg = load_ok(MINIMAL "verify:\n  sample_interval: 0s\n  sample_keys: 1\n"
                                     "cutover:\n  gates:\n    max_latency_ratio: 0.01\n");
    assert_int_equal(cfg->verify.sample_interval_ms, 0);
    assert_int_equal(cfg->verify.sample_keys, 1);
    assert_true(cfg->cutover.gates.max_latency_ratio == 0.01);
    ps_config_free(cfg);
}

/* Issue #12, the chunk engine's keys: both ends of each range load, one past
 * either end is refused with the range, and chunk_target is a duration. */
static void test_chunk_engine_keys(void **state)
{
    (void)state;
    ps_config *cfg = load_ok(MINIMAL "sync:\n  workers: 1\n  chunk_target: 10ms\n");
    assert_int_equal(cfg->sync.workers, 1);
    assert_int_equal(cfg->sync.chunk_target_ms, 10);
    ps_config_free(cfg);
    cfg = load_ok(MINIMAL "sync:\n  workers: 32\n  chunk_target: 60s\n");
    assert_int_equal(cfg->sync.workers, 32);
    assert_int_equal(cfg->sync.chunk_target_ms, 60000);
    ps_config_free(cfg);
    expect_errors(MINIMAL "sync:\n  workers: 0\n  chunk_target: 9ms\n",
                  "t.yaml:8:12: sync.workers: must be between 1 and 32 (got 0)\n"
                  "t.yaml:9:17: sync.chunk_target: must be between 10ms and 1m (got 9ms)\n");
    expect_errors(MINIMAL "sync:\n  workers: 33\n  chunk_target: 61s\n",
                  "t.yaml:8:12: sync.workers: must be between 1 and 32 (got 33)\n"
                  "t.yaml:9:17: sync.chunk_target: must be between 10ms and 1m (got 61s)\n");
    expect_errors(MINIMAL "sync:\n  workers: two\n  chunk_target: 500\n",
                  "t.yaml:8:12: sync.workers: expected an integer, got a string\n"
                  "t.yaml:9:17: sync.chunk_target: invalid duration \"500\": a duration needs a "
                  "unit (ms, s, m, h, d)\n");
}

static void test_duplicate_table(void **state)
{
    (void)state;
    expect_errors("database:\n  conninfo: \"service=x\"\nmigration:\n  id: m\n  tables:\n"
                  "    - name: a\n    - name: b\n    - name: a\n    - name: b\n    - name: A\n",
                  "t.yaml:8:13: migration.tables: duplicate table \"a\" (first at line 6, column 13)\n"
                  "t.yaml:9:13: migration.tables: duplicate table \"b\" (first at line 7, column 13)\n");
    /* An entry with another error still takes part: a valid name is judged
     * by itself, not by whether the error count moved in its entry. */
    expect_errors("database:\n  conninfo: \"service=x\"\nmigration:\n  id: m\n  tables:\n"
                  "    - name: a\n    - name: a\n      kee: 1\n",
                  "t.yaml:7:13: migration.tables: duplicate table \"a\" (first at line 6, column 13)\n"
                  "t.yaml:8:7: migration.tables[1]: unknown key \"kee\" (known keys: name, key, columns, reverse_columns)\n");
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    expect_errors(MINIMAL "sync:\n  batch_size: 5\n  batch_size: 0\n",
                  "t.yaml:9:3: sync: duplicate key \"batch_size\" (first at line 8, column 3)\n");
    expect_errors(MINIMAL "database:\n  conninfo: x\n",
                  "t.yaml:7:1: duplicate key \"database\" (first at line 1, column 1)\n");
    expect_errors("database: {conninfo: \"service=x\"}\n"
                  "migration: {id: m, tables: [{name: t, key: [a, b, a], columns: {c: x, c: y}}]}\n",
                  "t.yaml:2:51: migration.tables[0].key: duplicate column \"a\" (first at line 2, column 45)\n"
                  "t.yaml:2:71: migration.tables[0].columns: duplicate key \"c\" (first at line 2, column 65)\n");
}

static void test_stages(void **state)
{
    (void)state;
    expect_errors(MINIMAL "cutover:\n  stages:\n    - { percent: 5, hold: 1h }\n"
                          "    - { percent: 5, hold: 1h }\n    - { percent: 3, hold: 1h }\n"
                          "    - { percent: 100, hold: 1h }\n",
                  "t.yaml:10:18: cutover.stages[1].percent: stages must be strictly increasing (5 after 5)\n"
                  "t.yaml:11:18: cutover.stages[2].percent: stages must be strictly increasing (3 after 5)\n");
    expect_errors(MINIMAL "cutover:\n  stages:\n    - { percent: 5, hold: 1h }\n"
                          "    - { percent: 50, hold: 1h }\n",
                  "t.yaml:10:18: cutover.stages[1].percent: the last stage must be 100 (got 50)\n");
    expect_errors(MINIMAL "cutover:\n  stages:\n    - { percent: 0, hold: 0s }\n"
                          "    - { percent: 101 }\n    - { hold: 1h, speed: 2 }\n",
                  "t.yaml:9:18: cutover.stages[0].percent: must be between 1 and 100 (got 0)\n"
                  "t.yaml:9:27: cutover.stages[0].hold: must be between 1ms and 365d (got 0s)\n"
                  "t.yaml:10:7: cutover.stages[1]: missing required key \"hold\"\n"
                  "t.yaml:10:18: cutover.stages[1].percent: must be between 1 and 100 (got 101)\n"
                  "t.yaml:11:7: cutover.stages[2]: missing required key \"percent\"\n"
                  "t.yaml:11:19: cutover.stages[2]: unknown key \"speed\" (known keys: percent, hold)\n");
    expect_errors(MINIMAL "cutover:\n  stages: []\n",
                  "t.yaml:8:11: cutover.stages: must list at least one stage\n");
}

static void test_password_in_conninfo(void **state)
{
    (void)state;
    static const char *conninfos[] = {
        "host=db password=hunter2",
        "host=db password='hunter 2'",
        "postgresql://app:hunter2@db/prod",
        "postgresql://db/prod?password=hunter2",
        /* Issue #9, 13: password-like text, whatever libpq makes of it (a
         * userinfo libpq ends at '/', a password= its last empty one hides) */
        "postgresql://app:hunter2/YmFy@db.example.com/prod",
        "postgresql://app:hunter2@db/prod?password=",
        "password=hunter2 password=",
    };
    for (size_t i = 0; i < sizeof conninfos / sizeof conninfos[0]; i++) {
        char yaml[512];
        snprintf(yaml, sizeof yaml,
                 "database:\n  conninfo: \"%s\"\nmigration:\n  id: m\n  tables: [{name: t}]\n",
                 conninfos[i]);
        char *got = load_fail_buf(yaml, strlen(yaml));
        assert_string_equal(got, "t.yaml:2:13: database.conninfo: contains a password; passwords "
                                 "must not be written in the configuration file: use "
                                 "PGPASSFILE/.pgpass or a service file (PGSERVICEFILE) instead\n");
        assert_null(strstr(got, "hunter"));
        free(got);
    }
}

static void test_missing_required(void **state)
{
    (void)state;
    expect_errors("", "t.yaml:1:1: missing required section \"database\"\n"
                      "t.yaml:1:1: missing required section \"migration\"\n");
    expect_errors("sync:\n  batch_size: 5\ndatabase:\nmigration:\n  schema: s\n",
                  "t.yaml:3:1: database: missing required key \"conninfo\"\n"
                  "t.yaml:5:3: migration: missing required key \"id\"\n"
                  "t.yaml:5:3: migration: missing required key \"tables\"\n");
    expect_errors("database: {conninfo: \"service=x\"}\n",
                  "t.yaml:1:1: missing required section \"migration\"\n");
    expect_errors("database: {conninfo: \"service=x\"}\nmigration: {id: m, tables: [{key: [a]}]}\n",
                  "t.yaml:2:29: migration.tables[0]: missing required key \"name\"\n");
}

static void test_tables_and_names(void **state)
{
    (void)state;
    expect_errors("database: {conninfo: \"service=x\"}\nmigration: {id: m, tables: []}\n",
                  "t.yaml:2:28: migration.tables: must list at least one table\n");
    expect_errors("database: {conninfo: \"service=x\"}\n"
                  "migration:\n  id: m\n  tables:\n    - name: \"\"\n    - name: \"a\\0b\"\n"
                  "    - projects\n    - name: t\n      key: []\n    - name: u\n      key: [\"\"]\n"
                  "    - name: v\n      columns: {\"\": p.x, y: \"\", z: [1]}\n",
                  "t.yaml:5:13: migration.tables[0].name: must not be empty\n"
                  "t.yaml:6:13: migration.tables[1].name: must not contain a NUL character\n"
                  "t.yaml:7:7: migration.tables[2]: expected a mapping, got a string\n"
                  "t.yaml:9:12: migration.tables[3].key: must list at least one column (leave it out "
                  "to use the primary key)\n"
                  "t.yaml:11:13: migration.tables[4].key[0]: column name must not be empty\n"
                  "t.yaml:13:17: migration.tables[5].columns: column name \"\" must not be empty\n"
                  "t.yaml:13:29: migration.tables[5].columns: column \"y\": the expression must be "
                  "non-empty and contain no NUL\n"
                  "t.yaml:13:36: migration.tables[5].columns: column \"z\": expected an SQL "
                  "expression string, got a sequence\n");
    /* 63 bytes is PostgreSQL's limit, including the suffix for the shadow table. */
    char yaml[512];
    snprintf(yaml, sizeof yaml,
             "database: {conninfo: \"service=x\"}\nmigration:\n  id: m\n  tables:\n"
             "    - name: %s\n",
             "t23456789012345678901234567890123456789012345678901234567");
    expect_errors(yaml, "t.yaml:5:13: migration.tables[0].name: with shadow_suffix the shadow "
                        "table's name is longer than 63 bytes and PostgreSQL would truncate it\n");
}

static void test_id_listen_level(void **state)
{
    (void)state;
    expect_errors("database: {conninfo: \"service=x\"}\nmigration: {id: \"a b\", tables: [{name: t}]}\n"
                  "log: {level: loud}\nmetrics: {listen: localhost}\n",
                  "t.yaml:2:17: migration.id: must be 1 to 100 characters from A-Z a-z 0-9 _ . -\n"
                  "t.yaml:3:14: log.level: must be one of debug, info, notice, warning, error (got \"loud\")\n"
                  "t.yaml:4:19: metrics.listen: must be \"host:port\" with a port between 1 and 65535, "
                  "or empty\n");
    static const char *bad_listen[] = { ":80", "h:0", "h:65536", "h:", "h:8x", "h:999999" };
    for (size_t i = 0; i < sizeof bad_listen / sizeof bad_listen[0]; i++) {
        char yaml[256];
        snprintf(yaml, sizeof yaml, MINIMAL "metrics: {listen: \"%s\"}\n", bad_listen[i]);
        char *got = load_fail_buf(yaml, strlen(yaml));
        assert_non_null(strstr(got, "metrics.listen: must be"));
        free(got);
    }
    char id[160];
    memset(id, 'a', 101);
    id[101] = '\0';
    char yaml[512];
    snprintf(yaml, sizeof yaml, "database: {conninfo: \"service=x\"}\nmigration: {id: %s, tables: [{name: t}]}\n", id);
    expect_errors(yaml, "t.yaml:2:17: migration.id: must be 1 to 100 characters from A-Z a-z 0-9 _ . -\n");
    id[100] = '\0';
    snprintf(yaml, sizeof yaml, "database: {conninfo: \"service=x\"}\nmigration: {id: %s, tables: [{name: t}]}\n", id);
    ps_config_free(load_ok(yaml));
}

static void test_many_errors_at_once(void **state)
{
    (void)state;
    expect_errors("database:\n  conninfo: \"password=x\"\n  extra: 1\nmigration:\n  id: \"!\"\n"
                  "  tables: []\nsync:\n  batch_size: 0\nverify: {repair: 1}\n",
                  "t.yaml:2:13: database.conninfo: contains a password; passwords must not be written "
                  "in the configuration file: use PGPASSFILE/.pgpass or a service file "
                  "(PGSERVICEFILE) instead\n"
                  "t.yaml:3:3: database: unknown key \"extra\" (known keys: conninfo)\n"
                  "t.yaml:5:7: migration.id: must be 1 to 100 characters from A-Z a-z 0-9 _ . -\n"
                  "t.yaml:6:11: migration.tables: must list at least one table\n"
                  "t.yaml:8:15: sync.batch_size: must be between 1 and 100000 (got 0)\n"
                  "t.yaml:9:18: verify.repair: expected a boolean (true or false), got an integer\n");
}

static void test_error_cap(void **state)
{
    (void)state;
    size_t cap = 1 << 20;
    char *yaml = malloc(cap);
    size_t o = (size_t)snprintf(yaml, cap, "%s", MINIMAL);
    for (int i = 0; i < 5000; i++)
        o += (size_t)snprintf(yaml + o, cap - o, "k%d: 1\n", i);
    char *got = load_fail_buf(yaml, o);
    size_t lines = 0;
    for (char *p = got; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 101);
    assert_non_null(strstr(got, "t.yaml: too many errors; only the first 100 are shown\n"));
    free(got);
    free(yaml);
}

/* 100 errors fill the list; what is found after that is counted but not
 * kept. The parsers after the cap must still judge their part by what they
 * parsed: a key or columns entry that is a mapping was taken for valid (the
 * error count no longer moved) and its NULL text copied (issue #9, 12). */
static char *capped_yaml(const char *table_extra)
{
    size_t cap = 16384;
    char *yaml = malloc(cap);
    size_t o = (size_t)snprintf(yaml, cap, "database:\n  conninfo: \"service=x\"\n");
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(yaml + o, cap - o, "  k%d: 1\n", i);
    snprintf(yaml + o, cap - o, "migration:\n  id: m\n  tables:\n    - name: t\n%s", table_extra);
    return yaml;
}

static void test_error_cap_custom_parsers(void **state)
{
    (void)state;
    static const char *extra[] = {
        "      key: [{a: 1}]\n",
        "      key: [[1], a]\n",
        "      columns: {c: [1]}\n",
        "      columns: {[x]: p.x}\n",
        "      key: [a, a]\n      columns: {c: {d: 1}}\n",
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        char *yaml = capped_yaml(extra[i]);
        char *got = load_fail_buf(yaml, strlen(yaml));
        size_t lines = 0;
        for (char *p = got; *p; p++)
            lines += *p == '\n';
        assert_int_equal(lines, 101);
        assert_non_null(strstr(got, "t.yaml:3:3: database: unknown key \"k0\""));
        assert_non_null(strstr(got, "t.yaml: too many errors; only the first 100 are shown\n"));
        free(got);
        free(yaml);
    }
}

/* Issue #9, 16: a quoted name was cut at 60 bytes, inside a character, so
 * the message was not valid UTF-8; a name of escapes was cut where the
 * buffer ended, silently. Cut between characters, always with "...". */
static void test_quote_cut(void **state)
{
    (void)state;
    char yaml[512], want[512];
    char a59[60];
    memset(a59, 'a', 59);
    a59[59] = '\0';
    snprintf(yaml, sizeof yaml, MINIMAL "sync:\n  %s\xc3\xa9\xc3\xa9: 1\n", a59);
    char *got = load_fail_buf(yaml, strlen(yaml));
    assert_true(utf8_valid(got));
    snprintf(want, sizeof want, "t.yaml:8:3: sync: unknown key \"%s\xc3\xa9...\" (known keys: "
             "batch_size, batch_delay, catchup_interval, workers, chunk_target, backfill_chunk, "
             "max_replication_lag, on_apply_error)\n", a59);
    assert_string_equal(got, want);
    free(got);
    /* three-byte characters from byte 58: the one across byte 60 is kept whole */
    char a58[59];
    memset(a58, 'a', 58);
    a58[58] = '\0';
    snprintf(yaml, sizeof yaml, MINIMAL "sync:\n  %s\xe2\x82\xac\xe2\x82\xac: 1\n", a58);
    got = load_fail_buf(yaml, strlen(yaml));
    assert_true(utf8_valid(got));
    assert_non_null(strstr(got, "aaaaaaaaaa\xe2\x82\xac...\""));
    free(got);
}

/* Sibling of 16: a name of control characters, each shown as a four-byte
 * escape, filled the buffer and was cut there without "...". */
static void test_quote_cut_escapes(void **state)
{
    (void)state;
    char yaml[512], want[512];
    char *got;
    /* 70 control characters: 60 shown as escapes, then "..." */
    size_t o = (size_t)snprintf(yaml, sizeof yaml, MINIMAL "sync:\n  \"");
    for (int i = 0; i < 70; i++)
        o += (size_t)snprintf(yaml + o, sizeof yaml - o, "\\x01");
    snprintf(yaml + o, sizeof yaml - o, "\": 1\n");
    got = load_fail_buf(yaml, strlen(yaml));
    o = (size_t)snprintf(want, sizeof want, "t.yaml:8:3: sync: unknown key \"");
    for (int i = 0; i < 60; i++)
        o += (size_t)snprintf(want + o, sizeof want - o, "\\x01");
    snprintf(want + o, sizeof want - o, "...\" (known keys: batch_size, batch_delay, "
             "catchup_interval, workers, chunk_target, backfill_chunk, max_replication_lag, "
             "on_apply_error)\n");
    assert_string_equal(got, want);
    free(got);
}

/* ------------------------------------------------------------------ */
/* limits                                                               */

static void test_too_big(void **state)
{
    (void)state;
    size_t len = 10 * 1024 * 1024;
    char *big = malloc(len);
    memset(big, '#', len);
    char *got = load_fail_buf(big, len);
    assert_string_equal(got, "t.yaml: the file is larger than 1048576 bytes; refusing to read it\n");
    free(got);

    /* the same through the file path: refused on size, before reading */
    char path[] = "/tmp/pgshadow-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, big, len), (ssize_t)len);
    close(fd);
    ps_errors errs;
    ps_errors_init(&errs);
    ps_config *cfg = (ps_config *)1;
    assert_int_equal(ps_config_load(path, &cfg, &errs), -1);
    assert_null(cfg);
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0].message, "the file is larger than 1048576 bytes; refusing to read it");
    assert_string_equal(errs.items[0].file, path);
    ps_errors_clear(&errs);
    unlink(path);
    free(big);
}

static void test_not_a_regular_file(void **state)
{
    (void)state;
    ps_errors errs;
    ps_errors_init(&errs);
    ps_config *cfg = NULL;
    assert_int_equal(ps_config_load("/tmp", &cfg, &errs), -1);
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0].message, "not a regular file");
    ps_errors_clear(&errs);
    assert_int_equal(ps_config_load("/nonexistent/pgshadow.yaml", &cfg, &errs), -1);
    assert_string_equal(errs.items[0].message, "cannot open: No such file or directory");
    ps_errors_clear(&errs);
    assert_null(cfg);
}

static void test_load_file_ok(void **state)
{
    (void)state;
    char path[] = "/tmp/pgshadow-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, MINIMAL, strlen(MINIMAL)), (ssize_t)strlen(MINIMAL));
    close(fd);
    ps_errors errs;
    ps_errors_init(&errs);
    ps_config *cfg = NULL;
    assert_int_equal(ps_config_load(path, &cfg, &errs), 0);
    assert_string_equal(cfg->path, path);
    ps_config_free(cfg);
    unlink(path);
}

/* Write MINIMAL to dir/name with mode (umask aside); returns the path. */
static char *write_with_mode(const char *dir, const char *name, mode_t mode)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(MINIMAL, f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static char *load_path_errors(const char *path, int want_rc)
{
    ps_errors errs;
    ps_errors_init(&errs);
    ps_config *cfg = NULL;
    int r = ps_config_load(path, &cfg, &errs);
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    ps_errors_print(&errs, f);
    fclose(f);
    if (r != want_rc)
        fail_msg("load %s: rc %d, errors:\n%s", path, r, buf);
    ps_errors_clear(&errs);
    ps_config_free(cfg);
    return buf;
}

/* Issue #9, 19: whoever can write the file can change database.conninfo and
 * the SQL of columns: (which pgshadowctl install runs with its own role). A
 * file writable by group or others is refused, as sshd refuses such files;
 * so is one in a directory they can write, where it can be replaced (a
 * sticky directory such as /tmp excepted). */
static void test_file_mode(void **state)
{
    (void)state;
    char dir[] = "/tmp/pgshadow-test-mode-XXXXXX";
    assert_non_null(mkdtemp(dir));
    static const mode_t ok_modes[] = { 0600, 0644, 0640, 0400, 0755 };
    for (size_t i = 0; i < sizeof ok_modes / sizeof ok_modes[0]; i++) {
        char *p = write_with_mode(dir, "ok.yaml", ok_modes[i]);
        free(load_path_errors(p, 0));
        unlink(p);
        free(p);
    }
    static const mode_t bad_modes[] = { 0664, 0646, 0666, 0620, 0602, 0777 };
    for (size_t i = 0; i < sizeof bad_modes / sizeof bad_modes[0]; i++) {
        char *p = write_with_mode(dir, "bad.yaml", bad_modes[i]);
        char *got = load_path_errors(p, -1);
        char want[512];
        snprintf(want, sizeof want,
                 "%s: the file is writable by group or others (mode 0%o); whoever can write it "
                 "can change database.conninfo and the SQL of columns: (chmod go-w %s)\n",
                 p, (unsigned)bad_modes[i], p);
        assert_string_equal(got, want);
        free(got);
        unlink(p);
        free(p);
    }
    /* the directory: writable by others, not sticky */
    char *p = write_with_mode(dir, "in-open-dir.yaml", 0644);
    assert_int_equal(chmod(dir, 0777), 0);
    char *got = load_path_errors(p, -1);
    char want[512];
    snprintf(want, sizeof want,
             "%s: its directory %s is writable by group or others (mode 0777) and not sticky; "
             "whoever can write it can replace the file (chmod go-w %s)\n", p, dir, dir);
    assert_string_equal(got, want);
    free(got);
    assert_int_equal(chmod(dir, 01777), 0); /* sticky, as /tmp: others cannot replace it */
    free(load_path_errors(p, 0));
    assert_int_equal(chmod(dir, 0700), 0);
    free(load_path_errors(p, 0));
    unlink(p);
    free(p);
    rmdir(dir);
}

static void test_too_deep(void **state)
{
    (void)state;
    /* 100 nested block mappings */
    size_t cap = 100 * 110 + 64;
    char *yaml = malloc(cap);
    size_t o = 0;
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(yaml + o, cap - o, "%*sk:\n", 2 * i, "");
    o += (size_t)snprintf(yaml + o, cap - o, "%*sv: 1\n", 200, "");
    char *got = load_fail_buf(yaml, o);
    assert_string_equal(got, "t.yaml:17:33: nesting deeper than 16 levels is not allowed\n");
    free(got);
    free(yaml);
    /* 100 nested flow sequences, and the deepest legal nesting still loads */
    char flow[256];
    memset(flow, '[', 100);
    memset(flow + 100, ']', 100);
    flow[200] = '\0';
    expect_errors(flow, "t.yaml:1:17: nesting deeper than 16 levels is not allowed\n");
    char deep[256];
    snprintf(deep, sizeof deep, "%s", "a: [[[[[[[[[[[[[[[]]]]]]]]]]]]]]]\n"); /* 1 + 15 = 16 */
    char *g2 = load_fail_buf(deep, strlen(deep));
    assert_null(strstr(g2, "nesting"));
    free(g2);
}

static void test_aliases_refused(void **state)
{
    (void)state;
    expect_errors("base: &b {batch_size: 5}\nsync: *b\n",
                  "t.yaml:1:7: anchors and aliases are not allowed\n"
                  "t.yaml:2:7: aliases are not allowed\n");
    expect_errors(MINIMAL "sync:\n  <<: *x\n", "t.yaml:8:7: aliases are not allowed\n");
}

/* Issue #9, 19: a tag changes what a value means ("!!str 5000") or asks
 * for an object ("!!python/object"); it was silently ignored while anchors
 * were refused. Refused the same way, where it is written. */
static void test_tags_refused(void **state)
{
    (void)state;
    expect_errors(MINIMAL "sync:\n  batch_size: !!str 5000\n  on_apply_error: !custom halt\n"
                          "x: !!python/object:os.system {a: 1}\n"
                          "y: !<tag:example.com,2000:foo> [1]\n",
                  "t.yaml:8:15: tags are not allowed (!!str): write the value without one\n"
                  "t.yaml:9:19: tags are not allowed (!custom): write the value without one\n"
                  "t.yaml:10:4: tags are not allowed (!!python/object:os.system): write the value "
                  "without one\n"
                  "t.yaml:11:4: tags are not allowed (!<tag:example.com,2000:foo>): write the value "
                  "without one\n");
    /* "!" alone is a tag too; a quoted "!!str" is a plain string */
    expect_errors(MINIMAL "log: {level: ! info}\n",
                  "t.yaml:7:14: tags are not allowed (!): write the value without one\n");
    ps_config *cfg = load_ok("database: {conninfo: \"application_name='!!str'\"}\n"
                             "migration: {id: m, tables: [{name: \"!!str\"}]}\n");
    assert_string_equal(cfg->migration.tables[0].name, "!!str");
    ps_config_free(cfg);
}

static void test_multiple_documents(void **state)
{
    (void)state;
    expect_errors(MINIMAL "---\n" MINIMAL, "t.yaml:7:1: multiple YAML documents are not allowed\n");
}

static void test_not_utf8(void **state)
{
    (void)state;
    expect_errors(MINIMAL "log:\n  level: \"caf\xe9\"\n", "t.yaml:8:14: the file is not valid UTF-8\n");
    expect_errors("a: \xc0\xaf\n", "t.yaml:1:4: the file is not valid UTF-8\n");      /* overlong */
    expect_errors("a: \xed\xa0\x80\n", "t.yaml:1:4: the file is not valid UTF-8\n"); /* surrogate */
    expect_errors("\xff\xfe" "a\0:\0", "t.yaml:1:1: the file is not valid UTF-8\n");    /* UTF-16 */
}

/* Issue #9, 14: Windows editors start a UTF-8 file with a byte order mark;
 * it is no content: the file loads, and positions on line 1 do not count it. */
static void test_utf8_bom(void **state)
{
    (void)state;
    ps_config *cfg = load_ok("\xef\xbb\xbf" MINIMAL);
    assert_string_equal(cfg->migration.tables[0].name, "projects");
    assert_int_equal(cfg->migration.tables[0].line, 6);
    ps_config_free(cfg);
    expect_errors("\xef\xbb\xbf" "wibble: 1\n" MINIMAL,
                  "t.yaml:1:1: unknown top-level key \"wibble\" (known keys: database, migration, "
                  "sync, verify, monitor, cutover, log, metrics)\n");
    expect_errors("\xef\xbb\xbf" "a: \"caf\xe9\"\n", "t.yaml:1:8: the file is not valid UTF-8\n");
}

/* Sibling of 14: line ends other than LF. The parser counts CR LF, a lone
 * CR, NEL and LS as line ends; positions found before parsing must agree. */
static void test_line_ends(void **state)
{
    (void)state;
    expect_errors("a: 1\r\nb: 2\r\nc: \"caf\xe9\"\r\n",
                  "t.yaml:3:8: the file is not valid UTF-8\n");
    expect_errors("a: 1\rb: 2\rc: \"caf\xe9\"\r", "t.yaml:3:8: the file is not valid UTF-8\n");
    expect_errors("a: 1\xc2\x85" "b: \"\xe2\x80\xa8\xe9\"\n", "t.yaml:3:1: the file is not valid UTF-8\n");
    expect_errors("a: 1\r\nb: 2\r\nc: [\r\n", "t.yaml:4:1: syntax error: did not find expected node "
                  "content (while parsing a flow node at line 4, column 1)\n");
}

static void test_nul_in_buffer(void **state)
{
    (void)state;
    static const char yaml[] = "database:\n  conninfo: x\0y\n";
    char *got = load_fail_buf(yaml, sizeof yaml - 1);
    assert_string_equal(got, "t.yaml:2:14: syntax error: control characters are not allowed\n");
    free(got);
}

/* ------------------------------------------------------------------ */

static void test_log_level_parse(void **state)
{
    (void)state;
    assert_int_equal(ps_log_level_parse("debug"), LOG_DEBUG);
    assert_int_equal(ps_log_level_parse("info"), LOG_INFO);
    assert_int_equal(ps_log_level_parse("notice"), LOG_NOTICE);
    assert_int_equal(ps_log_level_parse("warning"), LOG_WARNING);
    assert_int_equal(ps_log_level_parse("error"), LOG_ERR);
    assert_int_equal(ps_log_level_parse("INFO"), LOG_INFO);
    assert_int_equal(ps_log_level_parse("warn"), -1);
    assert_int_equal(ps_log_level_parse(""), -1);
    assert_int_equal(ps_log_level_parse(NULL), -1);
}

static char *diff_text(const ps_config *a, const ps_config *b, size_t *n)
{
    ps_errors ch;
    ps_errors_init(&ch);
    *n = ps_config_diff(a, b, &ch);
    assert_int_equal(*n, ch.count);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ps_errors_print(&ch, f);
    fclose(f);
    ps_errors_clear(&ch);
    return buf;
}

static void test_diff(void **state)
{
    (void)state;
    ps_config *a = load_ok(MINIMAL);
    ps_config *same = load_ok(MINIMAL);
    size_t n;
    char *d = diff_text(a, same, &n);
    assert_int_equal(n, 0);
    assert_string_equal(d, "");
    free(d);

    ps_config *b = load_ok("database:\n  conninfo: \"host=other user=secretive\"\n"
                           "migration:\n  id: m1\n  tables:\n    - name: contexts\n"
                           "sync:\n  batch_size: 2000\n  batch_delay: 1s\n"
                           "  workers: 4\n  chunk_target: 250ms\n"
                           "verify: {repair: false}\n"
                           "cutover:\n  on_trip: pause\n  gates: {min_sync_percent: 99.5}\n"
                           "  stages: [{percent: 50, hold: 90m}, {percent: 100, hold: 1d}]\n"
                           "log: {level: debug}\nmetrics: {listen: \"\"}\n");
    d = diff_text(a, b, &n);
    assert_string_equal(d, "database.conninfo changed\n"
                           "migration.tables: removed \"projects\"\n"
                           "migration.tables: added \"contexts\"\n"
                           "sync.batch_size: 5000 -> 2000\n"
                           "sync.batch_delay: 0s -> 1s\n"
                           "sync.workers: 2 -> 4\n"
                           "sync.chunk_target: 500ms -> 250ms\n"
                           "verify.repair: true -> false\n"
                           "cutover.gates.min_sync_percent: 99 -> 99.5\n"
                           "cutover.on_trip: step_down -> pause\n"
                           "cutover.stages: 1%/1h 5%/2h 20%/4h 50%/4h 100%/8h -> 50%/90m 100%/1d\n"
                           "log.level: info -> debug\n"
                           "metrics.listen: \"127.0.0.1:9187\" -> \"\"\n");
    assert_int_equal(n, 13);
    assert_null(strstr(d, "other"));
    assert_null(strstr(d, "secretive"));
    free(d);

    ps_config *c = load_ok("database:\n  conninfo: \"service=pgshadow\"\n"
                           "migration:\n  id: m2\n  schema: app\n  tables:\n"
                           "    - name: projects\n      key: [id]\n");
    d = diff_text(a, c, &n);
    assert_string_equal(d, "migration.id: \"m1\" -> \"m2\"\n"
                           "migration.schema: \"public\" -> \"app\"\n"
                           "migration.tables: \"projects\" changed (key, columns or reverse_columns)\n");
    free(d);
    assert_int_equal(ps_config_diff(NULL, a, NULL), 0);
    ps_config_free(a);
    ps_config_free(same);
    ps_config_free(b);
    ps_config_free(c);
}

/* Issue #9, 15: the stages were compared as text cut at 512 bytes, so a
 * change past that said "no changes". Up to 100 stages (1..100 strictly
 * increasing) are compared as values and shown in full. */
static void test_diff_long_stages(void **state)
{
    (void)state;
    char a[8192], b[8192];
    size_t o = (size_t)snprintf(a, sizeof a, MINIMAL "cutover:\n  stages:\n");
    for (int p = 1; p <= 100; p++)
        o += (size_t)snprintf(a + o, sizeof a - o, "    - { percent: %d, hold: 365d }\n", p);
    memcpy(b, a, o + 1);
    /* the last hold: 365d -> 364d */
    char *last = strstr(b, "percent: 100, hold: 365d");
    assert_non_null(last);
    memcpy(last + strlen("percent: 100, hold: 36"), "4", 1);
    ps_config *x = load_ok(a), *y = load_ok(b);
    size_t n;
    char *d = diff_text(x, y, &n);
    assert_int_equal(n, 1);
    assert_non_null(strstr(d, "cutover.stages: 1%/365d 2%/365d "));
    assert_non_null(strstr(d, " 100%/365d -> 1%/365d 2%/365d "));
    assert_non_null(strstr(d, " 99%/365d 100%/364d\n"));
    free(d);
    d = diff_text(x, x, &n);
    assert_int_equal(n, 0);
    free(d);
    ps_config_free(x);
    ps_config_free(y);
}

/* Sibling of 15: a number was compared as its "%g" text (six digits), so
 * 99.9999991 -> 99.9999992 said "no changes". Values are compared, and
 * shown as the shortest text that reads back as the same number. */
static void test_diff_numbers_exact(void **state)
{
    (void)state;
    ps_config *x = load_ok(MINIMAL "cutover: {gates: {min_sync_percent: 99.9999991}}\n");
    ps_config *y = load_ok(MINIMAL "cutover: {gates: {min_sync_percent: 99.9999992}}\n");
    ps_config *z = load_ok(MINIMAL "cutover: {gates: {min_sync_percent: 99.9999992}}\n");
    size_t n;
    char *d = diff_text(x, y, &n);
    assert_string_equal(d, "cutover.gates.min_sync_percent: 99.9999991 -> 99.9999992\n");
    free(d);
    d = diff_text(y, z, &n);
    assert_int_equal(n, 0);
    free(d);
    ps_config_free(x);
    ps_config_free(y);
    ps_config_free(z);
}

static void test_reference_config(void **state)
{
    (void)state;
    const char *src = getenv("PGSHADOW_SRCDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/conf/pgshadow.yaml", src ? src : ".");
    /* Its text, not the checkout's file: a checkout made under umask 002
     * leaves it group-writable, which the loader refuses (test_file_mode). */
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char text[65536];
    size_t len = fread(text, 1, sizeof text, f);
    fclose(f);
    assert_true(len > 0 && len < sizeof text);
    ps_errors errs;
    ps_errors_init(&errs);
    ps_config *cfg = NULL;
    if (ps_config_load_buffer(path, text, len, &cfg, &errs) != 0) {
        ps_errors_print(&errs, stderr);
        fail_msg("the reference config %s does not load", path);
    }
    /* The reference file documents the defaults: it must equal them. */
    ps_config *defaults = load_ok("database:\n  conninfo: \"service=pgshadow\"\n"
                                  "migration:\n  id: x\n  tables: [{name: x}]\n");
    ps_errors ch;
    ps_errors_init(&ch);
    ps_config_diff(defaults, cfg, &ch);
    for (size_t i = 0; i < ch.count; i++) {
        const char *m = ch.items[i].message;
        if (strncmp(m, "migration.", 10) != 0 && strcmp(m, "database.conninfo changed") != 0)
            fail_msg("reference config differs from the defaults: %s", m);
    }
    ps_errors_clear(&ch);
    ps_config_free(defaults);
    ps_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_small_variants_accepted),
        cmocka_unit_test(test_syntax_error),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_bad_duration),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_chunk_engine_keys),
        cmocka_unit_test(test_duplicate_table),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_stages),
        cmocka_unit_test(test_password_in_conninfo),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_tables_and_names),
        cmocka_unit_test(test_id_listen_level),
        cmocka_unit_test(test_many_errors_at_once),
        cmocka_unit_test(test_error_cap),
        cmocka_unit_test(test_error_cap_custom_parsers),
        cmocka_unit_test(test_quote_cut),
        cmocka_unit_test(test_quote_cut_escapes),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_not_a_regular_file),
        cmocka_unit_test(test_load_file_ok),
        cmocka_unit_test(test_file_mode),
        cmocka_unit_test(test_too_deep),
        cmocka_unit_test(test_aliases_refused),
        cmocka_unit_test(test_tags_refused),
        cmocka_unit_test(test_multiple_documents),
        cmocka_unit_test(test_not_utf8),
        cmocka_unit_test(test_nul_in_buffer),
        cmocka_unit_test(test_utf8_bom),
        cmocka_unit_test(test_line_ends),
        cmocka_unit_test(test_log_level_parse),
        cmocka_unit_test(test_diff),
        cmocka_unit_test(test_diff_long_stages),
        cmocka_unit_test(test_diff_numbers_exact),
        cmocka_unit_test(test_reference_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
