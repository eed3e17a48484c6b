/*
 * test-modules.c - the daemon's module table (src/daemon/modules.c) with
 * fake modules that record every call: created and told of events in table
 * order, freed in reverse; leadership told only on a change, gained in table
 * order and lost in reverse; STATUS words joined with "; " and nothing added
 * for a module that is silent; collect in table order; a failed create adds
 * nothing and a full table says so. No loop, no database: d is never
 * dereferenced by the table, so the tests pass a marker. Last, the real
 * daemon (never run) with the real sync module: added, collected, freed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pgshadow/modules.h"
#include "pgshadow/sync.h"
#include "pgshadow/util.h"

static char trace[1024]; /* "create:a create:b leader+:a ..." */
static size_t trace_pos;

static void record(const char *what, const char *name)
{
    ps_appendf(trace, sizeof trace, &trace_pos, "%s%s:%s", trace_pos ? " " : "", what, name);
}

static void reset(void)
{
    trace[0] = '\0';
    trace_pos = 0;
}

/* Each fake's arg is its name (set by its create), so a hook can tell which
 * module it is. */
static void fake_free(void *arg)
{
    record("free", arg);
}
static void fake_db_up(ps_daemon *d, void *arg)
{
    (void)d;
    record("db_up", arg);
}
static void fake_leader(ps_daemon *d, bool leader, void *arg)
{
    (void)d;
    record(leader ? "leader+" : "leader-", arg);
}
static void fake_notify(ps_daemon *d, const char *channel, const char *payload, void *arg)
{
    (void)d;
    (void)payload;
    record(channel, arg);
}
static void fake_stop(ps_daemon *d, void *arg)
{
    (void)d;
    record("stop", arg);
}
static size_t fake_status(ps_daemon *d, char *buf, size_t len, void *arg)
{
    (void)d;
    if (strcmp(arg, "b") == 0) /* b has nothing to say */
        return 0;
    return (size_t)snprintf(buf, len, "%s words", (const char *)arg);
}
static void fake_collect(ps_daemon *d, const ps_metric_sink *sink, void *arg)
{
    (void)d;
    sink->sample(sink->ctx, arg, PS_METRIC_GAUGE, 1, "a fake");
}

static int create_named(void **arg, const char *name, int r)
{
    record("create", name);
    *arg = (void *)name;
    return r;
}
static int create_a(ps_daemon *d, void **arg)
{
    (void)d;
    return create_named(arg, "a", 0);
}
static int create_b(ps_daemon *d, void **arg)
{
    (void)d;
    return create_named(arg, "b", 0);
}
static int create_c(ps_daemon *d, void **arg)
{
    (void)d;
    return create_named(arg, "c", 0);
}
static int create_fails(ps_daemon *d, void **arg)
{
    (void)d;
    return create_named(arg, "fails", -EADDRINUSE);
}

#define FAKE(n, make)                                                                             \
    {                                                                                             \
        .name = n, .create = make, .free = fake_free, .on_db_up = fake_db_up,                    \
        .on_leader = fake_leader, .on_notify = fake_notify, .on_stop = fake_stop,                \
        .status = fake_status, .collect = fake_collect,                                           \
    }
static const ps_daemon_module A = FAKE("a", create_a), B = FAKE("b", create_b),
                              C = FAKE("c", create_c), FAILS = FAKE("fails", create_fails);
/* a module with no hooks at all: every call skips it */
static const ps_daemon_module mod_bare = {.name = "bare"};

#define D ((ps_daemon *)0x1) /* never dereferenced */

static void table_abc(ps_modules *t)
{
    memset(t, 0, sizeof *t);
    reset();
    assert_int_equal(ps_modules_add(t, D, &A), 0);
    assert_int_equal(ps_modules_add(t, D, &mod_bare), 0);
    assert_int_equal(ps_modules_add(t, D, &B), 0);
    assert_int_equal(ps_modules_add(t, D, &C), 0);
}

static void test_create_and_free_order(void **state)
{
    (void)state;
    ps_modules t;
    table_abc(&t);
    assert_string_equal(trace, "create:a create:b create:c");
    assert_int_equal(t.n, 4);
    /* a failed create adds nothing, and its error comes back as it was */
    assert_int_equal(ps_modules_add(&t, D, &FAILS), -EADDRINUSE);
    assert_int_equal(t.n, 4);
    reset();
    ps_modules_free(&t);
    assert_string_equal(trace, "free:c free:b free:a"); /* never free:fails */
    assert_int_equal(t.n, 0);
    reset();
    ps_modules_free(&t); /* empty: nothing */
    assert_string_equal(trace, "");
}

static void test_events_in_table_order(void **state)
{
    (void)state;
    ps_modules t;
    table_abc(&t);
    reset();
    ps_modules_db_up(&t, D);
    ps_modules_notify(&t, D, "pgshadow_changes", "");
    ps_modules_stop(&t, D);
    assert_string_equal(trace, "db_up:a db_up:b db_up:c "
                               "pgshadow_changes:a pgshadow_changes:b pgshadow_changes:c "
                               "stop:a stop:b stop:c");
    ps_modules_free(&t);
}

/* The leadership hook: nothing while nothing changes (they start as not
 * leaders: a standby's modules are never called), gained in table order,
 * told once however often the daemon repeats it, lost in reverse. */
static void test_leadership_dispatch(void **state)
{
    (void)state;
    ps_modules t;
    table_abc(&t);
    reset();
    assert_false(ps_modules_leader(&t, D, false)); /* still a standby */
    assert_false(ps_modules_leader(&t, D, false));
    assert_string_equal(trace, "");
    assert_true(ps_modules_leader(&t, D, true));
    assert_string_equal(trace, "leader+:a leader+:b leader+:c");
    reset();
    assert_false(ps_modules_leader(&t, D, true)); /* no change, no call */
    assert_string_equal(trace, "");
    assert_true(ps_modules_leader(&t, D, false));
    assert_string_equal(trace, "leader-:c leader-:b leader-:a");
    reset();
    assert_true(ps_modules_leader(&t, D, true)); /* led again after a loss */
    assert_string_equal(trace, "leader+:a leader+:b leader+:c");
    ps_modules_free(&t);
}

/* Each module's own words after what the daemon wrote, "; "-joined; a
 * silent module adds nothing (no "stage -; lag -" stand-in); truncation
 * never runs past the buffer. */
static void test_status_words(void **state)
{
    (void)state;
    ps_modules t;
    table_abc(&t);
    char buf[64];
    size_t pos = 0;
    ps_appendf(buf, sizeof buf, &pos, "connected");
    ps_modules_status(&t, D, buf, sizeof buf, &pos);
    assert_string_equal(buf, "connected; a words; c words");
    assert_int_equal(pos, strlen(buf));

    ps_modules none;
    memset(&none, 0, sizeof none);
    pos = 0;
    ps_appendf(buf, sizeof buf, &pos, "connected");
    ps_modules_status(&none, D, buf, sizeof buf, &pos);
    assert_string_equal(buf, "connected");

    char small[16];
    pos = 0;
    ps_appendf(small, sizeof small, &pos, "connected");
    ps_modules_status(&t, D, small, sizeof small, &pos);
    assert_int_equal(pos, strlen(small));
    assert_true(pos < sizeof small);
    assert_string_equal(small, "connected; a wo");
    ps_modules_free(&t);
}

static void sample(void *ctx, const char *name, ps_metric_kind kind, double value,
                   const char *help)
{
    (void)ctx;
    (void)kind;
    (void)value;
    (void)help;
    record("sample", name);
}

static void test_collect_in_table_order(void **state)
{
    (void)state;
    ps_modules t;
    table_abc(&t);
    reset();
    ps_metric_sink sink = {.sample = sample, .ctx = NULL};
    ps_modules_collect(&t, D, &sink);
    assert_string_equal(trace, "sample:a sample:b sample:c");
    ps_modules_free(&t);
}

/* The usual body of a collect hook: each uint64_t counter of a stats struct
 * reported with its name and help. */
static struct {
    char names[256];
    size_t pos;
    double sum;
} seen;

static void sample_sum(void *ctx, const char *name, ps_metric_kind kind, double value,
                       const char *help)
{
    (void)ctx;
    assert_non_null(help);
    if (kind == PS_METRIC_COUNTER) {
        ps_appendf(seen.names, sizeof seen.names, &seen.pos, "%s ", name);
        seen.sum += value;
    }
}

static void test_metric_counters(void **state)
{
    (void)state;
    struct {
        uint64_t a, b;
    } stats = {3, 40};
    static const ps_metric_counter counters[] = {
        {"x_a_total", "a", offsetof(__typeof__(stats), a)},
        {"x_b_total", "b", offsetof(__typeof__(stats), b)},
    };
    memset(&seen, 0, sizeof seen);
    ps_metric_sink sink = {.sample = sample_sum};
    ps_metric_counters(&sink, &stats, counters, 2);
    assert_string_equal(seen.names, "x_a_total x_b_total ");
    assert_true(seen.sum == 43);
}

/* The real daemon with the real sync module, never run (no database): the
 * module is created through the table, reports its counters after the
 * daemon's and the leader's, and is freed by ps_daemon_free. */
static void test_daemon_with_sync_module(void **state)
{
    (void)state;
    static const char yaml[] = "database:\n  conninfo: \"dbname=x\"\n"
                               "migration:\n  id: m1\n  tables:\n    - name: t\n";
    ps_errors errs;
    ps_errors_init(&errs);
    ps_config *cfg = NULL;
    assert_int_equal(ps_config_load_buffer("t.yaml", yaml, strlen(yaml), &cfg, &errs), 0);
    ps_daemon *d = NULL;
    assert_int_equal(ps_daemon_new("t.yaml", cfg, -1, &d), 0);
    assert_int_equal(ps_daemon_add(d, &ps_sync_module), 0);
    assert_false(ps_daemon_is_leader(d));
    assert_null(ps_daemon_main_conn(d));
    assert_null(ps_daemon_work_conn(d));
    memset(&seen, 0, sizeof seen);
    ps_metric_sink sink = {.sample = sample_sum};
    ps_daemon_collect(d, &sink);
    assert_non_null(strstr(seen.names, "pgshadow_daemon_reloads_total "
                                       "pgshadow_daemon_reload_failures_total "
                                       "pgshadow_leader_acquired_total "
                                       "pgshadow_sync_apply_batches_total "));
    assert_true(seen.sum == 0);
    ps_daemon_free(d); /* frees the sync module: ASan would see a leak */
}

static void test_table_full(void **state)
{
    (void)state;
    ps_modules t;
    memset(&t, 0, sizeof t);
    for (int i = 0; i < PS_DAEMON_MAX_MODULES; i++)
        assert_int_equal(ps_modules_add(&t, D, &mod_bare), 0);
    assert_int_equal(ps_modules_add(&t, D, &mod_bare), -ENOSPC);
    reset();
    ps_modules_free(&t);
    assert_string_equal(trace, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_and_free_order),
        cmocka_unit_test(test_events_in_table_order),
        cmocka_unit_test(test_leadership_dispatch),
        cmocka_unit_test(test_status_words),
        cmocka_unit_test(test_collect_in_table_order),
        cmocka_unit_test(test_metric_counters),
        cmocka_unit_test(test_daemon_with_sync_module),
        cmocka_unit_test(test_table_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
