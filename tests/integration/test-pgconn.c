/*
 * test-pgconn.c - ps_pgconn against a real PostgreSQL (tests/harness).
 *
 * Needs PGSHADOW_TEST_CONNINFO (and, for the restart test, PGSHADOW_SRCDIR and
 * PGSHADOW_TEST_CLUSTER); fails when they are missing.  Each test runs its own
 * event_base and waits for conditions by running the loop with a generous
 * deadline: time only bounds a wait, it is never what a test asserts, except
 * for the backoff test, which checks that retry gaps grow (they grow by design
 * by a factor of about two per attempt, far beyond scheduling noise).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pgshadow/log.h"
#include "pgshadow/pgconn.h"

#include "itest.h"

#define WAIT_MS 20000

static const char *conninfo;

/* Log lines captured while a test has the sink installed. */
static struct {
    char *text;
    size_t len, cap;
} logcap;

static void log_sink(int prio, const char *line, void *arg)
{
    (void)prio;
    (void)arg;
    size_t n = strlen(line);
    if (logcap.len + n + 2 > logcap.cap) {
        size_t cap = (logcap.cap + n + 2) * 2;
        char *p = realloc(logcap.text, cap);
        if (!p)
            return;
        logcap.text = p;
        logcap.cap = cap;
    }
    memcpy(logcap.text + logcap.len, line, n);
    logcap.len += n;
    logcap.text[logcap.len++] = '\n';
    logcap.text[logcap.len] = '\0';
}

static void log_capture_start(void)
{
    free(logcap.text);
    memset(&logcap, 0, sizeof logcap);
    ps_log_setup("itest-pgconn", LOG_DEBUG);
    ps_log_set_ratelimit(0, 0);
    ps_log_set_sink(log_sink, NULL);
}

static const char *log_capture_stop(void)
{
    ps_log_set_sink(NULL, NULL);
    ps_log_set_level(LOG_INFO);
    return logcap.text ? logcap.text : "";
}

/* ------------------------------------------------------------ test state */

#define MAXQ 64

struct qres {
    bool done;
    bool null;
    ExecStatusType status;
    char value[256];  /* first column of the first row */
    char sqlstate[8];
    int ntuples;
    int seq;          /* completion order */
};

struct t {
    struct event_base *base;
    ps_pgconn *c;
    int ups, downs, notifies;
    char last_reason[512];
    char last_channel[128];
    char last_payload[256];
    int64_t down_at[32];
    struct qres q[MAXQ];
    int completed;
    unsigned ticks;
    struct event *tick_ev;
    /* behaviour switches for callbacks */
    bool reset_in_cb;
    bool free_in_cb;
};

static void on_up(ps_pgconn *c, void *arg)
{
    struct t *t = arg;
    t->ups++;
}

static void on_down(ps_pgconn *c, const char *reason, void *arg)
{
    struct t *t = arg;
    if (t->downs < 32)
        t->down_at[t->downs] = itest_now_ms();
    t->downs++;
    snprintf(t->last_reason, sizeof t->last_reason, "%s", reason);
}

static void on_notify(ps_pgconn *c, const char *channel, const char *payload, void *arg)
{
    struct t *t = arg;
    t->notifies++;
    snprintf(t->last_channel, sizeof t->last_channel, "%s", channel);
    snprintf(t->last_payload, sizeof t->last_payload, "%s", payload ? payload : "");
}

struct qctx {
    struct t *t;
    int i;
};
static struct qctx qctx[MAXQ];

static void result_cb(ps_pgconn *c, const PGresult *res, void *arg)
{
    struct qctx *x = arg;
    struct qres *q = &x->t->q[x->i];
    assert_false(q->done); /* exactly once */
    q->done = true;
    q->seq = x->t->completed++;
    q->null = res == NULL;
    if (res) {
        q->status = PQresultStatus(res);
        q->ntuples = PQntuples(res);
        if (q->ntuples > 0 && PQnfields(res) > 0)
            snprintf(q->value, sizeof q->value, "%s", PQgetvalue(res, 0, 0));
        const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(q->sqlstate, sizeof q->sqlstate, "%s", st ? st : "");
    }
    if (x->t->reset_in_cb) {
        x->t->reset_in_cb = false;
        ps_pgconn_reset(c, "reset by test");
    }
    if (x->t->free_in_cb) {
        x->t->free_in_cb = false;
        ps_pgconn_free(c);
        x->t->c = NULL;
    }
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    struct t *t = arg;
    t->ticks++;
}

static void t_init(struct t *t, const ps_pgconn_options *opts_in)
{
    memset(t, 0, sizeof *t);
    t->base = event_base_new();
    assert_non_null(t->base);
    ps_pgconn_options o;
    if (opts_in) {
        o = *opts_in;
    } else {
        ps_pgconn_options_init(&o);
        o.name = "itest";
        o.conninfo = conninfo;
        o.application_name = "pgshadowd-itest";
    }
    ps_pgconn_callbacks cbs = {.on_up = on_up, .on_down = on_down, .on_notify = on_notify};
    t->c = ps_pgconn_new(t->base, &o, &cbs, t);
    assert_non_null(t->c);
    /* a heartbeat in the loop: proves the loop keeps turning, and makes sure
     * run_until re-checks its condition regularly */
    t->tick_ev = event_new(t->base, -1, EV_PERSIST, tick, t);
    struct timeval tv = {0, 10000};
    event_add(t->tick_ev, &tv);
    for (int i = 0; i < MAXQ; i++)
        qctx[i] = (struct qctx){t, i};
}

static void t_done(struct t *t)
{
    ps_pgconn_free(t->c);
    event_free(t->tick_ev);
    event_base_free(t->base);
}

typedef bool (*pred_fn)(struct t *t, void *arg);

static bool run_until(struct t *t, pred_fn pred, void *arg, int64_t timeout_ms)
{
    int64_t deadline = itest_now_ms() + timeout_ms;
    while (!pred(t, arg)) {
        if (itest_now_ms() > deadline)
            return false;
        event_base_loop(t->base, EVLOOP_ONCE);
    }
    return true;
}

static bool p_up(struct t *t, void *arg)
{
    return ps_pgconn_is_up(t->c) && t->ups >= (int)(intptr_t)arg;
}
static bool p_idle(struct t *t, void *arg)
{
    return ps_pgconn_is_idle(t->c);
}
static bool p_done(struct t *t, void *arg)
{
    return t->q[(int)(intptr_t)arg].done;
}
static bool p_completed(struct t *t, void *arg)
{
    return t->completed >= (int)(intptr_t)arg;
}
static bool p_notifies(struct t *t, void *arg)
{
    return t->notifies >= (int)(intptr_t)arg;
}
static bool p_downs(struct t *t, void *arg)
{
    return t->downs >= (int)(intptr_t)arg;
}

#define WAIT(t, pred, arg)                                                                   \
    do {                                                                                     \
        if (!run_until((t), (pred), (void *)(intptr_t)(arg), WAIT_MS))                       \
            fail_msg("timed out waiting for %s(%d)", #pred, (int)(intptr_t)(arg));           \
    } while (0)

static void query(struct t *t, int i, const char *sql, int n, const char *const *params)
{
    assert_int_equal(ps_pgconn_query(t->c, sql, n, params, result_cb, &qctx[i]), 0);
}

/* ------------------------------------------------------------------ tests */

static void test_connect_param_query(void **state)
{
    struct t t;
    t_init(&t, NULL);
    assert_int_equal(ps_pgconn_start(t.c), 0);
    assert_false(ps_pgconn_is_up(t.c)); /* asynchronous */
    WAIT(&t, p_up, 1);
    assert_int_equal(t.ups, 1);
    assert_int_equal(t.downs, 0);
    assert_non_null(ps_pgconn_raw(t.c));
    assert_int_equal(PQisnonblocking(ps_pgconn_raw(t.c)), 1);
    assert_int_equal(ps_pgconn_reconnects(t.c), 0);

    const char *p[] = {"41", "ab", NULL};
    query(&t, 0, "SELECT ($1::int + 1)::text || ':' || $2::text || ':' || ($3::text IS NULL)", 3, p);
    assert_false(t.q[0].done); /* never from inside ps_pgconn_query */
    query(&t, 1, "SELECT current_setting('application_name')", 0, NULL);
    WAIT(&t, p_completed, 2);
    assert_false(t.q[0].null);
    assert_int_equal(t.q[0].status, PGRES_TUPLES_OK);
    assert_string_equal(t.q[0].value, "42:ab:true");
    assert_string_equal(t.q[1].value, "pgshadowd-itest");

    /* bigger than any socket buffer both ways: PQflush returns 1 and the
     * rest goes out on EV_WRITE; the answer arrives over many reads */
    size_t big = 8u << 20;
    char *blob = malloc(big + 1);
    assert_non_null(blob);
    memset(blob, 'y', big);
    blob[big] = '\0';
    const char *bp[] = {blob};
    query(&t, 2, "SELECT length($1)::text", 1, bp);
    free(blob); /* the connection copied it */
    query(&t, 3, "SELECT repeat('x', 1000) FROM generate_series(1, 20000)", 0, NULL);
    WAIT(&t, p_completed, 4);
    assert_int_equal(t.q[2].status, PGRES_TUPLES_OK);
    assert_string_equal(t.q[2].value, "8388608");
    assert_int_equal(t.q[3].ntuples, 20000);
    assert_int_equal(strspn(t.q[3].value, "x"), sizeof t.q[3].value - 1); /* truncated copy */
    WAIT(&t, p_idle, 0);
    t_done(&t);
}

static void test_queue_in_order(void **state)
{
    struct t t;
    t_init(&t, NULL);
    ps_pgconn_start(t.c);
    /* queued while still connecting: they wait for the connection */
    char nums[40][8];
    for (int i = 0; i < 40; i++) {
        snprintf(nums[i], sizeof nums[i], "%d", i);
        const char *p[] = {nums[i]};
        query(&t, i, "SELECT ($1::int * 10)::text", 1, p);
    }
    WAIT(&t, p_completed, 40);
    for (int i = 0; i < 40; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", i * 10);
        assert_false(t.q[i].null);
        assert_int_equal(t.q[i].seq, i);
        assert_string_equal(t.q[i].value, want);
    }
    t_done(&t);
}

static void test_multi_statement(void **state)
{
    struct t t;
    t_init(&t, NULL);
    ps_pgconn_start(t.c);
    query(&t, 0,
          "CREATE TEMP TABLE m(a int); INSERT INTO m VALUES (1), (2), (3); "
          "SELECT sum(a)::text FROM m",
          0, NULL);
    /* the first error is kept, not the last result */
    query(&t, 1, "SELECT 1; SELECT 1/0; SELECT 2", 0, NULL);
    query(&t, 2, "SELECT count(*)::text FROM m", 0, NULL);
    WAIT(&t, p_completed, 3);
    assert_int_equal(t.q[0].status, PGRES_TUPLES_OK);
    assert_string_equal(t.q[0].value, "6");
    assert_int_equal(t.q[1].status, PGRES_FATAL_ERROR);
    assert_string_equal(t.q[1].sqlstate, "22012");
    assert_int_equal(t.q[2].status, PGRES_TUPLES_OK);
    assert_string_equal(t.q[2].value, "3");
    assert_int_equal(t.downs, 0);
    ps_pgconn_free(t.c);
    t.c = NULL;
    /* the abandoned answer is delivered from the loop, after the free: it
     * must touch only its own request (and free it: no leak under LSan) */
    for (int i = 0; i < 5; i++)
        event_base_loop(t.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    t_done(&t);
}

static void test_error_then_keeps_working(void **state)
{
    struct t t;
    t_init(&t, NULL);
    ps_pgconn_start(t.c);
    query(&t, 0, "SELECT * FROM no_such_table_here", 0, NULL);
    const char *p[] = {"not a number"};
    query(&t, 1, "SELECT $1::int", 1, p);
    query(&t, 2, "SELECT 'still here'", 0, NULL);
    WAIT(&t, p_completed, 3);
    assert_int_equal(t.q[0].status, PGRES_FATAL_ERROR);
    assert_string_equal(t.q[0].sqlstate, "42P01");
    assert_int_equal(t.q[1].status, PGRES_FATAL_ERROR);
    assert_string_equal(t.q[1].sqlstate, "22P02");
    assert_int_equal(t.q[2].status, PGRES_TUPLES_OK);
    assert_string_equal(t.q[2].value, "still here");
    assert_int_equal(t.downs, 0);
    assert_int_equal(t.ups, 1);
    assert_true(ps_pgconn_is_up(t.c));
    t_done(&t);
}

static void test_listen_notify(void **state)
{
    struct t t;
    t_init(&t, NULL);
    /* registered before start: issued before on_up */
    assert_int_equal(ps_pgconn_listen(t.c, "pgshadow test \"chan\""), 0);
    assert_int_equal(ps_pgconn_listen(t.c, "pgshadow test \"chan\""), 0); /* dup: no-op */
    ps_pgconn_start(t.c);
    WAIT(&t, p_up, 1);
    itest_exec_on(conninfo, "SELECT pg_notify('pgshadow test \"chan\"', 'hello')");
    WAIT(&t, p_notifies, 1);
    assert_string_equal(t.last_channel, "pgshadow test \"chan\"");
    assert_string_equal(t.last_payload, "hello");

    /* added while up: issued through the queue, so done once a later query is */
    assert_int_equal(ps_pgconn_listen(t.c, "Second"), 0);
    query(&t, 0, "SELECT 1", 0, NULL);
    WAIT(&t, p_done, 0);
    itest_exec_on(conninfo, "NOTIFY \"Second\", 'two'");
    WAIT(&t, p_notifies, 2);
    assert_string_equal(t.last_channel, "Second");
    assert_string_equal(t.last_payload, "two");
    /* not listening on this one */
    itest_exec_on(conninfo, "NOTIFY other, 'x'");
    query(&t, 1, "SELECT 1", 0, NULL);
    WAIT(&t, p_done, 1);
    itest_exec_on(conninfo, "SELECT pg_notify('Second', 'three')");
    WAIT(&t, p_notifies, 3);
    assert_string_equal(t.last_payload, "three");
    t_done(&t);
}

static void test_reset_from_callback(void **state)
{
    struct t t;
    t_init(&t, NULL);
    ps_pgconn_start(t.c);
    WAIT(&t, p_up, 1);
    t.reset_in_cb = true;
    query(&t, 0, "SELECT 'first'", 0, NULL);
    query(&t, 1, "SELECT 'second'", 0, NULL);
    WAIT(&t, p_completed, 2);
    assert_string_equal(t.q[0].value, "first");
    assert_true(t.q[1].null); /* dropped by the reset */
    assert_int_equal(t.downs, 1);
    assert_string_equal(t.last_reason, "reset by test");
    WAIT(&t, p_up, 2);
    assert_int_equal(ps_pgconn_reconnects(t.c), 1);
    query(&t, 2, "SELECT 'after'", 0, NULL);
    WAIT(&t, p_done, 2);
    assert_string_equal(t.q[2].value, "after");
    t_done(&t);
}

static void test_free_from_callback(void **state)
{
    struct t t;
    t_init(&t, NULL);
    ps_pgconn_start(t.c);
    t.free_in_cb = true;
    query(&t, 0, "SELECT 'a'", 0, NULL);
    query(&t, 1, "SELECT 'b'", 0, NULL);
    WAIT(&t, p_completed, 2);
    assert_null(t.c);
    assert_string_equal(t.q[0].value, "a");
    assert_true(t.q[1].null);
    /* the loop keeps running without the connection's events */
    unsigned ticks = t.ticks;
    while (t.ticks < ticks + 5)
        event_base_loop(t.base, EVLOOP_ONCE);
    t_done(&t);
}

static void test_restart_reconnects_and_relistens(void **state)
{
    const char *src = getenv("PGSHADOW_SRCDIR");
    const char *cluster = getenv("PGSHADOW_TEST_CLUSTER");
    if (!src || !cluster)
        fail_msg("PGSHADOW_SRCDIR and PGSHADOW_TEST_CLUSTER must be set for the restart test");

    struct t t;
    t_init(&t, NULL);
    ps_pgconn_listen(t.c, "pgshadow_changes");
    ps_pgconn_start(t.c);
    WAIT(&t, p_up, 1);
    itest_exec_on(conninfo, "NOTIFY pgshadow_changes, 'before'");
    WAIT(&t, p_notifies, 1);

    query(&t, 0, "SELECT pg_sleep(60)", 0, NULL); /* in flight at the crash */
    query(&t, 1, "SELECT 'queued'", 0, NULL);     /* queued behind it */
    /* let the first one reach the server (a few heartbeats of loop time) */
    unsigned ticks = t.ticks;
    while (t.ticks < ticks + 10)
        event_base_loop(t.base, EVLOOP_ONCE);
    assert_false(t.q[0].done);

    itest_cluster_restart();

    WAIT(&t, p_completed, 2);
    assert_true(t.q[0].null);
    assert_true(t.q[1].null);
    assert_true(t.q[0].seq < t.q[1].seq);
    WAIT(&t, p_downs, 1);
    WAIT(&t, p_up, 2);
    assert_int_equal(ps_pgconn_reconnects(t.c), 1);
    assert_true(strlen(t.last_reason) > 0);

    /* on_up ran after the LISTEN was re-issued: a NOTIFY sent now arrives */
    itest_exec_on(conninfo, "NOTIFY pgshadow_changes, 'after'");
    WAIT(&t, p_notifies, 2);
    assert_string_equal(t.last_payload, "after");
    query(&t, 2, "SELECT 'works again'", 0, NULL);
    WAIT(&t, p_done, 2);
    assert_string_equal(t.q[2].value, "works again");
    t_done(&t);
}

static void test_dead_socket_backoff(void **state)
{
    ps_pgconn_options o;
    ps_pgconn_options_init(&o);
    o.name = "dead";
    o.conninfo = "host=/nonexistent-pgshadow-socket-dir port=5432 dbname=x user=x";
    o.backoff_base_ms = 100;
    o.backoff_cap_ms = 30000;
    struct t t;
    t_init(&t, &o);
    query(&t, 0, "SELECT 1", 0, NULL);
    ps_pgconn_start(t.c);
    unsigned ticks0 = t.ticks;
    WAIT(&t, p_downs, 6);
    assert_int_equal(t.ups, 0);
    assert_true(t.q[0].done && t.q[0].null); /* failed with the first attempt */
    assert_non_null(strstr(t.last_reason, "nonexistent-pgshadow-socket-dir"));
    /* Equal jitter: the delay after failure k lies in [c_k/2, c_k] with c_k
     * doubling, so each gap is at least the previous one's ceiling; compare
     * gaps two apart to be immune to scheduling noise. */
    int64_t gap[5];
    for (int i = 0; i < 5; i++) {
        gap[i] = t.down_at[i + 1] - t.down_at[i];
        assert_true(gap[i] >= 50);
    }
    assert_true(gap[2] > gap[0]);
    assert_true(gap[3] > gap[1]);
    assert_true(gap[4] > gap[2]);
    assert_true(gap[4] >= 800); /* ceiling 1600 at the fifth delay */
    /* the 10 ms heartbeat kept firing all along: nothing blocked the loop */
    assert_true(t.ticks - ticks0 > (unsigned)((t.down_at[5] - t.down_at[0]) / 10 / 4));
    assert_false(ps_pgconn_is_up(t.c));
    t_done(&t);
}

static bool p_reason_has(struct t *t, void *arg)
{
    return t->downs > 0 && strstr(t->last_reason, (const char *)arg) != NULL;
}

static void test_connect_timeout_on_mute_server(void **state)
{
    /* A socket that accepts connections (the kernel backlog does) but never
     * answers the startup packet: only our connect timer ends the attempt. */
    char dir[] = "/tmp/pgshadow-mute-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/.s.PGSQL.5432", dir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 16), 0);

    char ci[256];
    snprintf(ci, sizeof ci, "host=%s port=5432 dbname=x user=x", dir);
    ps_pgconn_options o;
    ps_pgconn_options_init(&o);
    o.name = "mute";
    o.conninfo = ci;
    o.connect_timeout_ms = 300;
    struct t t;
    t_init(&t, &o);
    query(&t, 0, "SELECT 1", 0, NULL);
    ps_pgconn_start(t.c);
    unsigned ticks0 = t.ticks;
    WAIT(&t, p_downs, 2);
    assert_non_null(strstr(t.last_reason, "timed out after 300 ms"));
    assert_true(t.q[0].done && t.q[0].null);
    assert_int_equal(t.ups, 0);
    assert_true(t.ticks - ticks0 > 10); /* the loop kept turning meanwhile */
    t_done(&t);
    close(fd);
    unlink(sa.sun_path);
    rmdir(dir);
}

static void test_terminated_backend_detected_when_idle(void **state)
{
    ps_pgconn_options o;
    ps_pgconn_options_init(&o);
    o.name = "live";
    o.conninfo = conninfo;
    o.liveness_interval_ms = 200;
    o.liveness_timeout_ms = 1000;
    struct t t;
    t_init(&t, &o);
    ps_pgconn_start(t.c);
    WAIT(&t, p_up, 1);
    int pid = PQbackendPID(ps_pgconn_raw(t.c));
    assert_true(pid > 0);

    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", pid);
    itest_exec_on(conninfo, sql);
    WAIT(&t, p_downs, 1);
    WAIT(&t, p_up, 2);
    assert_int_equal(ps_pgconn_reconnects(t.c), 1);
    assert_int_not_equal(PQbackendPID(ps_pgconn_raw(t.c)), pid);
    t_done(&t);
}

static void test_liveness_timeout_on_silent_backend(void **state)
{
    /* A backend that is alive at the TCP level but never answers (stopped):
     * only the liveness probe can notice. */
    ps_pgconn_options o;
    ps_pgconn_options_init(&o);
    o.name = "live";
    o.conninfo = conninfo;
    o.liveness_interval_ms = 200;
    o.liveness_timeout_ms = 500;
    struct t t;
    t_init(&t, &o);
    ps_pgconn_start(t.c);
    WAIT(&t, p_up, 1);
    int pid = PQbackendPID(ps_pgconn_raw(t.c));
    /* a few probes succeed first: the idle connection stays up */
    unsigned ticks = t.ticks;
    while (t.ticks < ticks + 100) /* >= 1 s of loop time */
        event_base_loop(t.base, EVLOOP_ONCE);
    assert_int_equal(t.downs, 0);
    /* and the probe really ran on it */
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT query FROM pg_stat_activity WHERE pid = %d", pid);
    char *last = itest_value_on(conninfo, sql);
    assert_non_null(last);
    assert_string_equal(last, "SELECT 1");
    free(last);

    if (kill(pid, SIGSTOP) != 0)
        fail_msg("cannot stop backend %d: %s (run as root or as the cluster owner)", pid,
                 strerror(errno));
    bool ok = run_until(&t, p_reason_has, "liveness", WAIT_MS);
    kill(pid, SIGCONT);
    assert_true(ok);
    WAIT(&t, p_up, 2);
    assert_int_equal(ps_pgconn_reconnects(t.c), 1);
    t_done(&t);
}

/* Item: libpq would resolve a host name with a blocking getaddrinfo(); our
 * evdns resolver does it and hands libpq hostaddr + host. Over TLS with
 * verify-full, so the certificate is checked against the name (DNS:localhost),
 * and with the password from the harness passfile. */
static void test_dns_name_resolved_by_evdns_over_tls(void **state)
{
    const char *tls = getenv("PGSHADOW_TEST_TLS_CONNINFO");
    const char *passfile = getenv("PGSHADOW_TEST_PGPASSFILE");
    if (!tls || !passfile)
        fail_msg("PGSHADOW_TEST_TLS_CONNINFO and PGSHADOW_TEST_PGPASSFILE must be set "
                 "(tests/harness/pgcluster.sh exports them)");
    const char *h = strstr(tls, "host=127.0.0.1 ");
    if (!h)
        fail_msg("PGSHADOW_TEST_TLS_CONNINFO has no host=127.0.0.1: %s", tls);
    char ci[512];
    snprintf(ci, sizeof ci, "%.*shost=localhost %s", (int)(h - tls), tls,
             h + strlen("host=127.0.0.1 "));
    setenv("PGPASSFILE", passfile, 1);

    ps_pgconn_options o;
    ps_pgconn_options_init(&o);
    o.name = "dns";
    o.conninfo = ci;
    o.application_name = "pgshadowd-itest-dns";
    log_capture_start();
    struct t t;
    t_init(&t, &o);
    assert_int_equal(ps_pgconn_start(t.c), 0);
    WAIT(&t, p_up, 1);
    query(&t, 0, "SELECT s.ssl::text || ':' || host(inet_client_addr()) || ':' || current_user "
                 "FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()", 0, NULL);
    WAIT(&t, p_done, 0);
    t_done(&t);
    const char *log = log_capture_stop();
    unsetenv("PGPASSFILE");
    assert_int_equal(t.q[0].status, PGRES_TUPLES_OK);
    assert_string_equal(t.q[0].value, "true:127.0.0.1:pgshadow_pw");
    if (!strstr(log, "pg dns: resolving localhost") ||
        !strstr(log, "pg dns: resolved localhost -> 127.0.0.1"))
        fail_msg("the evdns path was not taken; log:\n%s", log);
}

/* A name that does not resolve: the attempt fails from the resolver's answer
 * (our message, not libpq's "could not translate host name"), is retried with
 * growing backoff, and the loop keeps turning all along. */
static void test_unresolvable_name_retries(void **state)
{
    ps_pgconn_options o;
    ps_pgconn_options_init(&o);
    o.name = "nxdomain";
    o.conninfo = "host=nonexistent.invalid port=5432 dbname=x user=x";
    o.backoff_base_ms = 100;
    log_capture_start();
    struct t t;
    t_init(&t, &o);
    query(&t, 0, "SELECT 1", 0, NULL);
    ps_pgconn_start(t.c);
    unsigned ticks0 = t.ticks;
    bool ok = run_until(&t, p_downs, (void *)(intptr_t)4, WAIT_MS);
    const char *log = log_capture_stop();
    if (!ok)
        fail_msg("no 4 failed attempts; log:\n%s", log);
    assert_non_null(strstr(t.last_reason, "could not resolve host name \"nonexistent.invalid\""));
    assert_non_null(strstr(log, "pg nxdomain: resolving nonexistent.invalid"));
    assert_true(t.q[0].done && t.q[0].null);
    assert_int_equal(t.ups, 0);
    /* backoff: gaps two apart grow (equal jitter, doubling ceiling) */
    assert_true(t.down_at[2] - t.down_at[1] > 0);
    assert_true(t.down_at[3] - t.down_at[2] > t.down_at[1] - t.down_at[0]);
    /* the 10 ms heartbeat kept firing while names were being looked up */
    assert_true(t.ticks - ticks0 > (unsigned)((t.down_at[3] - t.down_at[0]) / 10 / 4));
    assert_false(ps_pgconn_is_up(t.c));
    t_done(&t);
}

/* Freed while a lookup is in flight: the pending answer must not touch the
 * freed connection (ASan checks this run). */
static void test_free_while_resolving(void **state)
{
    ps_pgconn_options o;
    ps_pgconn_options_init(&o);
    o.name = "nxfree";
    o.conninfo = "host=nonexistent-2.invalid port=5432 dbname=x user=x";
    struct t t;
    t_init(&t, &o);
    ps_pgconn_start(t.c);
    /* one loop turn: the retry timer (0 ms) starts the lookup. The answer
     * needs a later turn (a read on the resolver's socket), so the free below
     * happens mid-lookup. (More turns raced a fast NXDOMAIN from the local
     * resolver: the answer then came first and the test was flaky.) */
    event_base_loop(t.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    if (t.downs != 0) {
        /* The lookup failed inside the call itself (a resolver with no
         * usable nameserver does that): nothing is in flight, so this run
         * could not test a free during a lookup. That is a failure, never a
         * pass: the test needs a nameserver line in /etc/resolv.conf (one
         * that never answers will do). */
        char reason[sizeof t.last_reason];
        snprintf(reason, sizeof reason, "%s", t.last_reason);
        ps_pgconn_free(t.c);
        t.c = NULL;
        t_done(&t);
        fail_msg("no lookup in flight to free: the attempt already failed (%s); "
                 "/etc/resolv.conf needs a nameserver for this test", reason);
    }
    ps_pgconn_free(t.c);
    t.c = NULL;
    /* the abandoned answer is delivered from the loop, after the free: it
     * must touch only its own request (and free it: no leak under LSan) */
    for (int i = 0; i < 5; i++)
        event_base_loop(t.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    t_done(&t);
}

int main(void)
{
    static const char *const env[] = {"PGSHADOW_TEST_CONNINFO", NULL};
    if (!itest_require_env("itest-pgconn", env))
        return 1;
    conninfo = getenv("PGSHADOW_TEST_CONNINFO");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_param_query),
        cmocka_unit_test(test_queue_in_order),
        cmocka_unit_test(test_multi_statement),
        cmocka_unit_test(test_error_then_keeps_working),
        cmocka_unit_test(test_listen_notify),
        cmocka_unit_test(test_reset_from_callback),
        cmocka_unit_test(test_free_from_callback),
        cmocka_unit_test(test_dead_socket_backoff),
        cmocka_unit_test(test_connect_timeout_on_mute_server),
        cmocka_unit_test(test_terminated_backend_detected_when_idle),
        cmocka_unit_test(test_liveness_timeout_on_silent_backend),
        cmocka_unit_test(test_restart_reconnects_and_relistens),
        cmocka_unit_test(test_dns_name_resolved_by_evdns_over_tls),
        cmocka_unit_test(test_unresolvable_name_retries),
        cmocka_unit_test(test_free_while_resolving),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
