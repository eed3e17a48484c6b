/*
 * test-config-reload.c - what a reload may change (src/config.c): the
 * restart-only flag of the key table, where each key was written, and
 * ps_config_keep_restart_only, the one place every restart-only key keeps
 * its running value with a located "needs a restart" note. The daemon's
 * side (the log line, the lock still on the old id) is
 * tests/integration/test-leader.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/config.h"

static ps_config *load(const char *name, const char *yaml)
{
    ps_errors errs;
    ps_errors_init(&errs);
    ps_config *cfg = NULL;
    if (ps_config_load_buffer(name, yaml, strlen(yaml), &cfg, &errs) != 0) {
        ps_errors_print(&errs, stderr);
        fail_msg("%s did not load", name);
    }
    ps_errors_clear(&errs);
    return cfg;
}

/* The flag, key by key: migration.id is restart-only (the leader lock is per
 * id); the keys the documentation says a reload applies are not. */
static void test_restart_only_flag(void **state)
{
    (void)state;
    assert_true(ps_config_restart_only("migration.id"));
    static const char *const reloadable[] = {
        "database.conninfo",     "migration.schema",      "migration.shadow_suffix",
        "migration.tables",      "sync.batch_size",       "sync.batch_delay",
        "sync.catchup_interval", "sync.workers",          "sync.chunk_target",
        "sync.backfill_chunk",   "sync.max_replication_lag", "sync.on_apply_error",
        "verify.interval",       "verify.chunk_rows",     "monitor.poll_interval",
        "cutover.gates.max_sync_lag", "cutover.promote.attempts", "log.level",
        "metrics.listen",
    };
    for (size_t i = 0; i < sizeof reloadable / sizeof *reloadable; i++)
        if (ps_config_restart_only(reloadable[i]))
            fail_msg("%s is marked restart-only", reloadable[i]);
    /* not keys: sections, unknown names, paths running past a leaf */
    assert_false(ps_config_restart_only("migration"));
    assert_false(ps_config_restart_only("migration.idx"));
    assert_false(ps_config_restart_only("migration.id.x"));
    assert_false(ps_config_restart_only("no.such"));
    assert_false(ps_config_restart_only(""));
}

static const char RUNNING[] = "database:\n"
                              "  conninfo: \"service=pgshadow\"\n"
                              "migration:\n"
                              "  id: m1\n"
                              "  tables:\n"
                              "    - name: contexts\n";

static const char FRESH[] = "database:\n"
                            "  conninfo: \"service=pgshadow\"\n"
                            "migration:\n"
                            "    id:   m2\n"
                            "    tables:\n"
                            "      - name: contexts\n"
                            "sync:\n"
                            "  batch_size: 10\n";

/* The loader remembers where each key given was written; defaults are not
 * there. */
static void test_positions(void **state)
{
    (void)state;
    ps_config *cfg = load("fresh.yaml", FRESH);
    int line = 0, col = 0;
    assert_true(ps_config_position(cfg, "migration.id", &line, &col));
    assert_int_equal(line, 4);
    assert_int_equal(col, 5);
    assert_true(ps_config_position(cfg, "sync.batch_size", &line, &col));
    assert_int_equal(line, 8);
    assert_int_equal(col, 3);
    assert_true(ps_config_position(cfg, "migration.tables[0].name", &line, &col));
    assert_int_equal(line, 6);
    assert_false(ps_config_position(cfg, "sync.batch_delay", &line, &col)); /* a default */
    assert_false(ps_config_position(cfg, "migration", &line, &col));       /* a section */
    ps_config_free(cfg);
}

/* A reload that changes migration.id: the running value goes back into the
 * fresh config, one note says so at the key's FILE:LINE:COLUMN, and the diff
 * then shows only what the reload really changes. */
static void test_keep_restart_only(void **state)
{
    (void)state;
    ps_config *running = load("running.yaml", RUNNING), *fresh = load("fresh.yaml", FRESH);
    ps_errors notes;
    ps_errors_init(&notes);
    assert_int_equal(ps_config_keep_restart_only(running, fresh, &notes), 1);
    assert_int_equal(notes.count, 1);
    char *line = ps_error_format(&notes.items[0]);
    assert_string_equal(line, "fresh.yaml:4:5: migration.id: \"m1\" -> \"m2\" needs a restart; "
                              "the running value \"m1\" stays in force");
    free(line);
    assert_string_equal(fresh->migration.id, "m1");
    assert_int_equal(fresh->sync.batch_size, 10); /* the rest is the new file's */

    ps_errors changes;
    ps_errors_init(&changes);
    assert_int_equal(ps_config_diff(running, fresh, &changes), 1);
    assert_string_equal(changes.items[0].message, "sync.batch_size: 5000 -> 10");
    ps_errors_clear(&changes);

    /* again: nothing left to keep */
    ps_errors_clear(&notes);
    assert_int_equal(ps_config_keep_restart_only(running, fresh, &notes), 0);
    assert_int_equal(notes.count, 0);

    /* an unchanged restart-only key: no note, nothing touched */
    ps_config *same = load("same.yaml", RUNNING);
    assert_int_equal(ps_config_keep_restart_only(running, same, &notes), 0);
    assert_int_equal(notes.count, 0);
    assert_int_equal(ps_config_keep_restart_only(NULL, same, &notes), 0);
    ps_config_free(same);
    ps_config_free(running);
    ps_config_free(fresh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restart_only_flag),
        cmocka_unit_test(test_positions),
        cmocka_unit_test(test_keep_restart_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
