/*
 * test-pgconn-params.c - connection parameters and lifecycle of ps_pgconn
 * without a server (or with a fake one that only answers the startup, for
 * the session ids).
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
#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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

/* ---- session ids, against a fake server ---- */

/* Answers every connection's startup packet with AuthenticationOk,
 * BackendKeyData and ReadyForQuery, and keeps it open: all libpq needs to
 * call a connection up. */
struct fake_server {
    char dir[40], path[80];
    int lfd;
    int fds[16];
    int nfds;
    pthread_t thread;
};

static bool read_full(int fd, void *buf, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return true;
}

static void *fake_server_run(void *arg)
{
    struct fake_server *f = arg;
    for (;;) {
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0)
            return NULL; /* the listening socket was shut down */
        unsigned char len_be[4], body[1024];
        uint32_t len;
        if (!read_full(fd, len_be, 4) ||
            (len = (uint32_t)len_be[0] << 24 | len_be[1] << 16 | len_be[2] << 8 | len_be[3]) < 8 ||
            len - 4 > sizeof body || !read_full(fd, body, len - 4)) {
            close(fd);
            continue;
        }
        static const unsigned char reply[] = {
            'R', 0, 0, 0, 8, 0, 0, 0, 0,              /* AuthenticationOk */
            'K', 0, 0, 0, 12, 0, 0, 0, 42, 0, 0, 0, 7, /* BackendKeyData */
            'Z', 0, 0, 0, 5, 'I',                      /* ReadyForQuery, idle */
        };
        if (write(fd, reply, sizeof reply) != (ssize_t)sizeof reply || f->nfds == 16) {
            close(fd);
            continue;
        }
        f->fds[f->nfds++] = fd;
    }
}

static void fake_server_start(struct fake_server *f)
{
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/pgshadow-fake-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/.s.PGSQL.5432", f->dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->path);
    f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(f->lfd >= 0);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(f->lfd, 8), 0);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_server_run, f), 0);
}

static void fake_server_stop(struct fake_server *f)
{
    shutdown(f->lfd, SHUT_RDWR);
    pthread_join(f->thread, NULL);
    close(f->lfd);
    for (int i = 0; i < f->nfds; i++)
        close(f->fds[i]);
    unlink(f->path);
    rmdir(f->dir);
}

struct ups {
    struct event_base *base;
    uint64_t ids[8];
    int n;
};

static void record_up(ps_pgconn *c, void *arg)
{
    struct ups *u = arg;
    if (u->n < 8)
        u->ids[u->n++] = ps_pgconn_session_id(c);
    event_base_loopbreak(u->base);
}

/* Run the loop until the next on_up (or 10 s). */
static void wait_up(struct ups *u)
{
    int before = u->n;
    struct timeval tv = {10, 0};
    event_base_loopexit(u->base, &tv);
    event_base_dispatch(u->base);
    assert_int_equal(u->n, before + 1);
}

/*
 * Issue #9, 18: the sync engine told sessions apart by (connection object,
 * reconnect count), and a new connection object (a conninfo reload) at the
 * freed one's address with count 0 looked like the old session: its session
 * settings (statement_timeout, keepalives) and the leader lock were taken
 * for granted. A session id is unique in the process: every successful
 * connect, of any connection, gets a new, larger one; 0 while not up.
 */
static void test_session_ids_never_repeat(void **state)
{
    (void)state;
    struct fake_server f;
    fake_server_start(&f);
    struct ups u = {.base = event_base_new()};
    assert_non_null(u.base);
    static const ps_pgconn_callbacks cbs = {.on_up = record_up};
    char ci[200];
    snprintf(ci, sizeof ci, "host=%s port=5432 user=u dbname=d sslmode=disable gssencmode=disable",
             f.dir);
    ps_pgconn_options o;
    ps_pgconn_options_init(&o);
    o.conninfo = ci;
    o.liveness_interval_ms = 0;
    o.backoff_base_ms = 10;

    ps_pgconn *a = ps_pgconn_new(u.base, &o, &cbs, &u);
    assert_non_null(a);
    assert_int_equal(ps_pgconn_session_id(a), 0); /* not up yet */
    assert_int_equal(ps_pgconn_start(a), 0);
    wait_up(&u);
    assert_true(u.ids[0] > 0);
    assert_int_equal(ps_pgconn_session_id(a), u.ids[0]);

    ps_pgconn_reset(a, "test");
    assert_int_equal(ps_pgconn_session_id(a), 0); /* down */
    wait_up(&u);
    assert_true(u.ids[1] > u.ids[0]); /* a reconnect is a new session */
    assert_int_equal(ps_pgconn_reconnects(a), 1);

    /* A new object, as a conninfo reload makes: often at the same address,
     * with reconnect count 0 like the first session above. */
    uintptr_t old_addr = (uintptr_t)a;
    ps_pgconn_free(a);
    ps_pgconn *b = ps_pgconn_new(u.base, &o, &cbs, &u);
    assert_non_null(b);
    assert_int_equal(ps_pgconn_start(b), 0);
    wait_up(&u);
    assert_true(u.ids[2] != u.ids[0]); /* what (address, reconnects) could get wrong */
    assert_true(u.ids[2] > u.ids[1]);
    assert_int_equal(ps_pgconn_session_id(b), u.ids[2]);
    assert_int_equal(ps_pgconn_reconnects(b), 0);
    if ((uintptr_t)b == old_addr)
        fprintf(stderr, "note: the new connection reused the freed one's address\n");

    ps_pgconn_free(b);

    /* More objects, one after another, as repeated reloads make: every
     * session id is new. */
    for (int i = 3; i < 8; i++) {
        ps_pgconn *n = ps_pgconn_new(u.base, &o, &cbs, &u);
        assert_non_null(n);
        assert_int_equal(ps_pgconn_start(n), 0);
        wait_up(&u);
        for (int k = 0; k < i; k++)
            assert_true(u.ids[i] != u.ids[k]);
        ps_pgconn_free(n);
    }
    event_base_loop(u.base, EVLOOP_NONBLOCK);
    event_base_free(u.base);
    fake_server_stop(&f);
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
        cmocka_unit_test(test_session_ids_never_repeat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
