/*
 * test-pgconn-params.c - connection parameters and lifecycle of ps_pgconn
 * without a server.
 *
 * The precedence tests hand the arrays to libpq itself (PQconnectStartParams
 * against a socket directory that does not exist, which fails at once without
 * any network) and read back what libpq settled on with PQconninfo(): this
 * proves that the user's conninfo overrides our defaults, rather than just
 * checking the order of our arrays.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/pgconn.h"

#define NOSOCK "/nonexistent-pgshadow-test-dir"

static int build(const ps_pgconn_options *o, const char **k, const char **v, char *scratch)
{
    return ps_pgconn_build_params(o, k, v, 16, scratch, 64);
}

static const char *val_of(const char **k, const char **v, const char *key)
{
    for (int i = 0; k[i]; i++)
        if (strcmp(k[i], key) == 0)
            return v[i];
    return NULL;
}

static void test_arrays_defaults_then_dbname_last(void **state)
{
    ps_pgconn_options o = {.name = "main", .conninfo = "host=h dbname=d"};
    const char *k[16], *v[16];
    char scratch[64];
    int n = build(&o, k, v, scratch);
    assert_int_equal(n, 8);
    assert_null(k[n]);
    assert_null(v[n]);
    assert_string_equal(k[n - 1], "dbname");
    assert_string_equal(v[n - 1], "host=h dbname=d");
    for (int i = 0; i < n - 1; i++)
        assert_string_not_equal(k[i], "dbname");
    assert_string_equal(val_of(k, v, "application_name"), "pgshadowd");
    assert_string_equal(val_of(k, v, "connect_timeout"), "10");
    assert_string_equal(val_of(k, v, "keepalives"), "1");
    assert_string_equal(val_of(k, v, "keepalives_idle"), "10");
    assert_string_equal(val_of(k, v, "keepalives_interval"), "5");
    assert_string_equal(val_of(k, v, "keepalives_count"), "3");
    assert_string_equal(val_of(k, v, "tcp_user_timeout"), "30000");
}

static void test_arrays_options(void **state)
{
    const char *k[16], *v[16];
    char scratch[64];
    ps_pgconn_options o = {.conninfo = "x=y", .application_name = "pgshadowctl",
                           .connect_timeout_ms = 2500};
    assert_int_equal(build(&o, k, v, scratch), 8);
    assert_string_equal(val_of(k, v, "application_name"), "pgshadowctl");
    assert_string_equal(val_of(k, v, "connect_timeout"), "3"); /* rounded up */

    o.connect_timeout_ms = 300; /* libpq's minimum is 2 s */
    build(&o, k, v, scratch);
    assert_string_equal(val_of(k, v, "connect_timeout"), "2");

    /* no conninfo: no dbname pair at all, libpq uses its environment */
    o.conninfo = NULL;
    assert_int_equal(build(&o, k, v, scratch), 7);
    assert_null(val_of(k, v, "dbname"));

    /* too little room is an error, not a truncated array */
    assert_int_equal(ps_pgconn_build_params(&o, k, v, 8, scratch, 64), -ENOSPC);
    assert_int_equal(ps_pgconn_build_params(&o, k, v, 16, scratch, 2), -ENOSPC);
}

/* What libpq really uses for `key` after expanding our arrays. */
static char *effective(const char *conninfo, const char *key)
{
    ps_pgconn_options o = {.conninfo = conninfo};
    const char *k[16], *v[16];
    char scratch[64];
    assert_true(build(&o, k, v, scratch) > 0);
    PGconn *pg = PQconnectStartParams(k, v, 1);
    assert_non_null(pg);
    PQconninfoOption *opts = PQconninfo(pg);
    assert_non_null(opts);
    char *out = NULL;
    for (PQconninfoOption *p = opts; p->keyword; p++)
        if (strcmp(p->keyword, key) == 0 && p->val)
            out = strdup(p->val);
    PQconninfoFree(opts);
    PQfinish(pg);
    return out;
}

static void expect_effective(const char *conninfo, const char *key, const char *want)
{
    char *got = effective(conninfo, key);
    if (!want) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_user_settings_override_ours_keyvalue(void **state)
{
    const char *ci = "host=" NOSOCK " port=1 dbname=appdb user=u keepalives_idle=77 "
                     "application_name=mine tcp_user_timeout=1234 connect_timeout=42";
    expect_effective(ci, "keepalives_idle", "77");
    expect_effective(ci, "application_name", "mine");
    expect_effective(ci, "tcp_user_timeout", "1234");
    expect_effective(ci, "connect_timeout", "42");
    expect_effective(ci, "dbname", "appdb");
    expect_effective(ci, "user", "u");
    /* ours where the user said nothing */
    expect_effective(ci, "keepalives", "1");
    expect_effective(ci, "keepalives_interval", "5");
    expect_effective(ci, "keepalives_count", "3");
}

static void test_user_settings_override_ours_uri(void **state)
{
    const char *ci = "postgresql:///uridb?host=" NOSOCK "&keepalives_count=9&application_name=fromuri";
    expect_effective(ci, "keepalives_count", "9");
    expect_effective(ci, "application_name", "fromuri");
    expect_effective(ci, "dbname", "uridb");
    expect_effective(ci, "keepalives_idle", "10");
    expect_effective(ci, "tcp_user_timeout", "30000");
}

static void test_plain_dbname_keeps_our_defaults(void **state)
{
    /* not a conninfo: libpq takes it as the database name */
    setenv("PGHOST", NOSOCK, 1);
    expect_effective("justadb", "dbname", "justadb");
    expect_effective("justadb", "application_name", "pgshadowd");
    expect_effective("justadb", "keepalives_idle", "10");
    unsetenv("PGHOST");
}

static void test_options_init_defaults(void **state)
{
    ps_pgconn_options o;
    memset(&o, 0xab, sizeof o);
    ps_pgconn_options_init(&o);
    assert_null(o.name);
    assert_null(o.conninfo);
    assert_string_equal(o.application_name, "pgshadowd");
    assert_int_equal(o.liveness_interval_ms, 10000);
    assert_int_equal(o.liveness_timeout_ms, 5000);
    assert_int_equal(o.backoff_base_ms, 100);
    assert_int_equal(o.backoff_cap_ms, 30000);
    assert_int_equal(o.connect_timeout_ms, 10000);
}

/* ---- lifecycle without a server: close/free complete pending queries */

struct rec {
    int calls[4];
    int order[4];
    int n;
    int nonnull;
    ps_pgconn *free_me;
};

struct qarg {
    struct rec *r;
    int id;
};

static void record_cb(ps_pgconn *c, const PGresult *res, void *arg)
{
    struct qarg *a = arg;
    a->r->calls[a->id]++;
    a->r->order[a->r->n++] = a->id;
    if (res)
        a->r->nonnull++;
    if (a->r->free_me) {
        ps_pgconn *f = a->r->free_me;
        a->r->free_me = NULL;
        ps_pgconn_free(f); /* from inside our own callback: must be safe */
        /* and the connection refuses new work from here on */
        assert_int_equal(ps_pgconn_query(c, "SELECT 1", 0, NULL, NULL, NULL), -ENOTCONN);
    }
}

static void test_close_fails_pending_in_order(void **state)
{
    struct event_base *base = event_base_new();
    assert_non_null(base);
    ps_pgconn_options o;
    ps_pgconn_options_init(&o);
    o.name = "t";
    o.conninfo = "host=" NOSOCK;
    ps_pgconn *c = ps_pgconn_new(base, &o, NULL, NULL);
    assert_non_null(c);
    assert_false(ps_pgconn_is_up(c));
    assert_false(ps_pgconn_is_idle(c));
    assert_null(ps_pgconn_raw(c));
    assert_string_equal(ps_pgconn_name(c), "t");
    assert_int_equal(ps_pgconn_reconnects(c), 0);

    struct rec r = {0};
    struct qarg a[3] = {{&r, 0}, {&r, 1}, {&r, 2}};
    const char *p[] = {"x", NULL};
    assert_int_equal(ps_pgconn_query(c, "SELECT 1", 0, NULL, record_cb, &a[0]), 0);
    assert_int_equal(ps_pgconn_query(c, "SELECT $1, $2", 2, p, record_cb, &a[1]), 0);
    assert_int_equal(ps_pgconn_query(c, "SELECT 3", 0, NULL, record_cb, &a[2]), 0);
    assert_int_equal(ps_pgconn_query(c, "SELECT $1", 1, NULL, record_cb, &a[2]), -EINVAL);
    assert_int_equal(r.n, 0); /* never from inside ps_pgconn_query */

    ps_pgconn_close(c);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.order[0], 0);
    assert_int_equal(r.order[1], 1);
    assert_int_equal(r.order[2], 2);
    assert_int_equal(r.nonnull, 0);
    assert_int_equal(ps_pgconn_query(c, "SELECT 1", 0, NULL, record_cb, &a[0]), -ENOTCONN);
    assert_int_equal(ps_pgconn_listen(c, "ch"), -ENOTCONN);
    assert_int_equal(ps_pgconn_start(c), -ENOTCONN);
    ps_pgconn_close(c); /* idempotent */
    assert_int_equal(r.n, 3);
    ps_pgconn_free(c);
    ps_pgconn_free(NULL);
    event_base_free(base);
}

static void test_free_from_inside_callback(void **state)
{
    struct event_base *base = event_base_new();
    ps_pgconn_options o;
    ps_pgconn_options_init(&o);
    o.conninfo = "host=" NOSOCK;
    ps_pgconn *c = ps_pgconn_new(base, &o, NULL, NULL);
    assert_non_null(c);
    struct rec r = {0};
    struct qarg a[2] = {{&r, 0}, {&r, 1}};
    r.free_me = c;
    assert_int_equal(ps_pgconn_query(c, "SELECT 1", 0, NULL, record_cb, &a[0]), 0);
    assert_int_equal(ps_pgconn_query(c, "SELECT 2", 0, NULL, record_cb, &a[1]), 0);
    assert_int_equal(ps_pgconn_listen(c, "a channel"), 0);
    ps_pgconn_close(c); /* first callback frees c; the second still runs */
    assert_int_equal(r.n, 2);
    assert_int_equal(r.calls[0], 1);
    assert_int_equal(r.calls[1], 1);
    /* c is gone now (ASan would flag any later use) */
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arrays_defaults_then_dbname_last),
        cmocka_unit_test(test_arrays_options),
        cmocka_unit_test(test_user_settings_override_ours_keyvalue),
        cmocka_unit_test(test_user_settings_override_ours_uri),
        cmocka_unit_test(test_plain_dbname_keeps_our_defaults),
        cmocka_unit_test(test_options_init_defaults),
        cmocka_unit_test(test_close_fails_pending_in_order),
        cmocka_unit_test(test_free_from_inside_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
