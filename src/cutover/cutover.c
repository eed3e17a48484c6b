/*
 * cutover/cutover.c - the cutover module (cutover.h): the shell around the
 * pure machine (machine.c) and gates (gates.c).
 *
 * While this daemon leads, it reads its migration's row of pgshadow.cutover
 * on the main connection (its own writes go on the work connection: see
 * send_req), then evaluates the gates after every dashboard
 * poll (the monitor's listener) and at least every poll interval (a poll
 * that never returns still makes the snapshot stale), runs the machine,
 * and writes what it decided with pgshadow.cutover_write
 * (sql/87-cutover.sql): state, every table's read percent and the event in
 * one transaction, compare-and-set on the row's rev. Operator commands
 * (start, pause, resume, step-down, rollback, abort, extend; promote,
 * revert and finalize, whose SQL steps write the state themselves) are
 * handlers of the control queue: the machine decides, and the same
 * cutover_write runs in the command's transaction.
 *
 * Over 800 lines: the reads, the writes, the commands and the swap steps
 * share one request slot and one state (st, rev); split across files they
 * would each need the module's insides.
 *
 * Owns: the schedule in force (a copy: a reload that breaks rule 6 leaves
 * it), the state as last read or written (st, rev), the machine's memory,
 * the latest gate evaluation, one read or write in flight (req), the tick
 * timer, the counters.
 *
 * Invariants:
 *  - nothing decided is believed before it commits: a write's state is
 *    copied into st only in its callback; a failed write (a lost
 *    connection, a rev that moved) makes the module read the row again
 *    before it decides anything more;
 *  - at most one read or write of this module is in flight (req); an
 *    evaluation asked for meanwhile runs when it returns (again);
 *  - leadership lost, a stop or the module's free orphan the request
 *    (req->m = NULL): a late answer touches nothing;
 *  - a standby does nothing: a new leader reads the row first, so it takes
 *    over mid-stage with the percent, stage and hold the old one wrote.
 */
#include "pgshadow/cutover.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "pgshadow/control.h"
#include "pgshadow/duration.h"
#include "pgshadow/log.h"
#include "pgshadow/util.h"

static const char SQL_READ[] =
    "SELECT status, stage, percent, (extract(epoch FROM hold_earned) * 1000)::bigint, "
    "       (extract(epoch FROM hold_extra) * 1000)::bigint, failures, coalesce(last_good_stage, 0), rev "
    "FROM pgshadow.cutover WHERE migration_id = $1";

static const char SQL_WRITE[] = "SELECT pgshadow.cutover_write($1, $2, $3::jsonb, $4::jsonb, $5, $6, $7)";

/* The swap (sql/88-promote.sql): migration, rev, lock_timeout ms,
 * attempts, the command (NULL for finally: promote), reverse sync after it
 * (sql/90-revert.sql). */
static const char SQL_PROMOTE[] =
    "SELECT pgshadow.promote($1, $2, $3::integer, $4::integer, $5, p_reverse => $6::boolean)";
/* The swap back (sql/90-revert.sql): migration, rev, lock_timeout ms,
 * attempts, the command. */
static const char SQL_REVERT[] = "SELECT pgshadow.revert($1, $2, $3::integer, $4::integer, $5)";
/* After the swap: one re-pointed foreign key validated per call (NULL:
 * none left). */
static const char SQL_VALIDATE[] = "SELECT pgshadow.promote_validate($1)";
/* What the swap left behind, dropped (sql/89-finalize.sql): migration, rev,
 * the command (its args carry the plan the operator confirmed), the lock
 * timeout (promote's). */
static const char SQL_FINALIZE[] = "SELECT pgshadow.finalize($1, $2, $3, $4::integer)";

#define REREAD_MS 200 /* after a failed write */

enum req_kind { REQ_READ, REQ_WRITE, REQ_PROMOTE, REQ_VALIDATE };

struct req {
    struct ps_cutover *m;
    enum req_kind kind;
    ps_co_state st; /* a write's state */
    ps_co_out out;
};

typedef struct ps_cutover {
    ps_daemon *d;
    struct event *ev_tick;
    bool leading, stopping;
    bool loaded; /* st and rev are the row's (read, or written by us, since leadership) */
    bool again;  /* evaluate when the request in flight returns */
    struct req *req;

    ps_stage *stages;
    size_t n_stages;
    bool schedule_ok; /* the percent in force is a stage of the schedule */
    ps_stage *pending; /* a reloaded schedule waiting for the state in flight (NULL: none) */
    size_t n_pending;
    char schedule_msg[sizeof(((ps_co_out *)0)->why)]; /* a reschedule to record at the next write */

    ps_co_state st;
    int64_t rev;
    ps_co_mem mem;
    /* a command's parameters: control copies them after the handler
     * returned, so none may point into the handler's own stack */
    char cmd_rev[32], cmd_id[32], cmd_state[400], cmd_gates[1200];
    char cmd_what[sizeof(((ps_co_out *)0)->what)], cmd_why[sizeof(((ps_co_out *)0)->why)];
    ps_gates gates;
    /* promote: finally's try failed (its error, written with the state
     * back to awaiting the decision); the re-pointed foreign keys are all
     * validated (or given up) */
    char promote_failed[320];
    bool validated;
    bool finalized_said; /* "finalized: nothing left to do" logged, once per leadership */
    char cmd_lock_timeout[24], cmd_attempts[24];
    int64_t written_poll; /* the poll whose gates were last written */
    bool written_fresh;
    ps_cutover_stats stats;
} ps_cutover;

static void kick(ps_cutover *m);

static ps_co_policy policy(const ps_cutover *m)
{
    const ps_config *cfg = ps_daemon_config(m->d);
    return (ps_co_policy){
        .stages = m->stages,
        .n_stages = m->n_stages,
        .start = cfg->cutover.start,
        .failures_to_trip = cfg->cutover.failures_to_trip,
        .on_trip = cfg->cutover.on_trip,
        .finally = cfg->cutover.finally,
        .poll_interval_ms = cfg->monitor.poll_interval_ms,
        .promote_available = true,
    };
}

static int copy_schedule(ps_cutover *m, const ps_stage *s, size_t n)
{
    ps_stage *c = calloc(n ? n : 1, sizeof *c);
    if (!c)
        return -ENOMEM;
    memcpy(c, s, n * sizeof *c);
    free(m->stages);
    m->stages = c;
    m->n_stages = n;
    return 0;
}

/* ---- JSON of the state and the gates (values only pgshadow writes) ---- */

static void state_json(const ps_co_state *st, char *buf, size_t len)
{
    snprintf(buf, len,
             "{\"status\": \"%s\", \"stage\": %d, \"percent\": %d, \"hold_earned_ms\": %" PRId64
             ", \"hold_extra_ms\": %" PRId64 ", \"failures\": %d, \"last_good\": %d}",
             ps_co_status_name(st->status), st->stage, st->percent, st->hold_earned_ms, st->hold_extra_ms,
             st->failures, st->last_good);
}

static void gates_json(const ps_gates *g, char *buf, size_t len)
{
    size_t pos = 0;
    ps_appendf(buf, len, &pos, "{\"fresh\": %s, \"ready\": %s", g->fresh ? "true" : "false",
               g->ready ? "true" : "false");
    for (int i = 0; i < PS_GATE_N; i++) {
        const ps_gate *x = &g->g[i];
        ps_appendf(buf, len, &pos, ", \"%s\": {\"color\": \"%s\", \"limit\": %.6g", ps_gate_name((ps_gate_id)i),
                   ps_gate_color_name(x->color), x->limit);
        if (x->color == PS_GATE_GREEN || x->color == PS_GATE_RED)
            ps_appendf(buf, len, &pos, ", \"value\": %.6g", x->value);
        ps_appendf(buf, len, &pos, "}");
    }
    ps_appendf(buf, len, &pos, "}");
}

/* ---- the row ---- */

static void orphan(ps_cutover *m)
{
    if (m->req)
        m->req->m = NULL;
    m->req = NULL;
}

static void arm(ps_cutover *m, int64_t ms)
{
    struct timeval tv = ps_clock_tv(ms > 0 ? ms : 0);
    evtimer_del(m->ev_tick);
    evtimer_add(m->ev_tick, &tv);
}

static void log_event(ps_cutover *m, const ps_co_state *st, const ps_co_out *out)
{
    char stage[16], percent[16];
    snprintf(stage, sizeof stage, "%d", st->stage);
    snprintf(percent, sizeof percent, "%d", st->percent);
    ps_log_field fields[] = {{"MIGRATION", ps_daemon_config(m->d)->migration.id},
                             {"CUTOVER", ps_co_status_name(st->status)},
                             {"STAGE", stage},
                             {"PERCENT", percent},
                             {"EVENT", out->what},
                             {NULL, NULL}};
    ps_log_fields(out->log_prio ? out->log_prio : LOG_NOTICE, fields, "cutover %s: %s", out->what, out->why);
}

/* Map the state read (or kept) onto the schedule in force: the stage is
 * found by its percent; a percent that is no stage stops the machine. */
static void fit_schedule(ps_cutover *m)
{
    char msg[400];
    if (ps_co_reschedule(m->stages, m->n_stages, m->stages, m->n_stages, &m->st, msg, sizeof msg) == 0) {
        if (!m->schedule_ok)
            ps_log_notice("cutover: the percent in force (%d%%) is stage %d of the schedule", m->st.percent,
                          m->st.stage);
        m->schedule_ok = true;
        return;
    }
    if (m->schedule_ok || !m->loaded)
        ps_log_error("cutover: %s; fix cutover.stages and reload (rollback and abort still work)", msg);
    m->schedule_ok = false;
}

/* A reloaded schedule s against the state in force (rule 6): refused, or
 * taken with the stage remapped (recorded at the next write). A daemon that
 * has not read the state (a standby) takes it, and its first read judges. */
static void reschedule(ps_cutover *m, const ps_stage *s, size_t n)
{
    ps_co_state st = m->st;
    char msg[400] = "";
    if (m->loaded && ps_co_reschedule(m->stages, m->n_stages, s, n, &st, msg, sizeof msg) != 0) {
        ps_log_error("cutover: reload: %s", msg);
        return;
    }
    if (copy_schedule(m, s, n) < 0) {
        ps_log_error("cutover: reload: out of memory: the running schedule stays");
        return;
    }
    if (msg[0] && m->loaded) {
        m->st = st;
        snprintf(m->schedule_msg, sizeof m->schedule_msg, "%s", msg);
        ps_log_notice("cutover: reload: %s", msg);
    }
    if (m->loaded)
        fit_schedule(m);
}

/* The state just landed (read, or written by us): a reload that waited
 * for it is judged now. */
static void take_pending(ps_cutover *m)
{
    ps_stage *s = m->pending;
    if (!s)
        return;
    m->pending = NULL;
    reschedule(m, s, m->n_pending);
    free(s);
}

/* A request's answer arrived: the request is freed; its module, with no
 * request in flight any more, or NULL for an orphan (leadership lost, a
 * stop: the answer touches nothing). */
static ps_cutover *req_answered(void *arg)
{
    struct req *r = arg;
    ps_cutover *m = r->m;
    free(r);
    if (m)
        m->req = NULL;
    return m;
}

static void on_read(ps_pgconn *c, const PGresult *res, void *arg)
{
    (void)c;
    ps_cutover *m = req_answered(arg);
    if (!m)
        return;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 8) {
        ps_log_warning("cutover: cannot read the state of migration %s: %s",
                       ps_daemon_config(m->d)->migration.id,
                       !res ? "connection lost"
                       : PQresultStatus(res) == PGRES_TUPLES_OK
                           ? "no row in pgshadow.cutover (run pgshadowctl install)"
                           : ps_pgconn_errfield(res, PG_DIAG_MESSAGE_PRIMARY, "unknown error"));
        arm(m, ps_daemon_config(m->d)->monitor.poll_interval_ms);
        return;
    }
    ps_co_state st = {0};
    if (ps_co_status_parse(PQgetvalue(res, 0, 0), &st.status) < 0) {
        ps_log_error("cutover: unknown status '%s' in pgshadow.cutover", PQgetvalue(res, 0, 0));
        arm(m, ps_daemon_config(m->d)->monitor.poll_interval_ms);
        return;
    }
    st.stage = atoi(PQgetvalue(res, 0, 1));
    st.percent = atoi(PQgetvalue(res, 0, 2));
    st.hold_earned_ms = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    st.hold_extra_ms = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
    st.failures = atoi(PQgetvalue(res, 0, 5));
    st.last_good = atoi(PQgetvalue(res, 0, 6));
    bool first = !m->loaded;
    m->st = st;
    m->rev = strtoll(PQgetvalue(res, 0, 7), NULL, 10);
    fit_schedule(m);
    m->loaded = true;
    take_pending(m);
    if (first) {
        char words[160];
        ps_co_policy p = policy(m);
        ps_co_format_status(&p, &m->st, words, sizeof words);
        ps_log_info("%s (the state of migration %s, as read)", words, ps_daemon_config(m->d)->migration.id);
    }
    kick(m);
}

static void on_write(ps_pgconn *c, const PGresult *res, void *arg)
{
    struct req *r = arg;
    ps_cutover *m = r->m;
    (void)c;
    if (!m) {
        free(r);
        return;
    }
    m->req = NULL;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        m->stats.write_failures++;
        /* serialization_failure: a command wrote the row first (its
         * transaction goes ahead of what this module queued): expected,
         * and what it decided is about to be read. */
        bool raced = res && strcmp(ps_pgconn_errfield(res, PG_DIAG_SQLSTATE, ""), "40001") == 0;
        ps_log(raced ? LOG_DEBUG : LOG_WARNING, "cutover: writing the state failed (%s); reading it again",
               !res ? "connection lost" : ps_pgconn_errfield(res, PG_DIAG_MESSAGE_PRIMARY, "unknown error"));
        m->loaded = false;
        free(r);
        arm(m, REREAD_MS);
        return;
    }
    m->st = r->st;
    m->rev = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    /* recorded (a failed write keeps it for the next one, after the read) */
    if (strcmp(r->out.what, "schedule") == 0 && strcmp(r->out.why, m->schedule_msg) == 0)
        m->schedule_msg[0] = '\0';
    if (r->out.what[0]) {
        m->stats.transitions++;
        if (strcmp(r->out.what, "trip") == 0)
            m->stats.trips++;
        log_event(m, &m->st, &r->out);
    }
    /* A stage the machine entered is in force from this commit, not from
     * the decision: the time the write took (queued behind a poll or a
     * sampling round on the work connection, 0.1-0.3 s in the demo) is not
     * held at the new percent, so no stage is in force for less than its
     * hold (the demo's events showed "held 3s" 2.74 s apart). */
    if (r->out.percent_changed && m->mem.last_green_ms >= 0)
        m->mem.last_green_ms = ps_clock_ms();
    free(r);
    take_pending(m);
    /* Only what was asked for while it was in flight (a poll, the timer, a
     * reschedule to record): evaluating after every write of our own would
     * write again (hold earned during the round trip), back to back. */
    if (m->again || m->schedule_msg[0])
        kick(m);
}

/* Reads go on main: the read after a command must come behind that
 * command's transaction, which runs there. The machine's own writes go on
 * the work connection, beside the dashboard polls they answer: on main they
 * queued behind apply, so a trip caused by a blocked apply (lag) waited for
 * apply's lock timeout, not for the poll (found by the integration test:
 * 5.5 s instead of 2). Only while the leader lock's session is up; a
 * deposed leader's late write is stopped by the rev compare. */
static int send_req(ps_cutover *m, struct req *r, const char *sql, int n, const char *const *params,
                    ps_pg_result_cb cb)
{
    ps_pgconn *c = r->kind == REQ_WRITE ? (ps_daemon_is_leader(m->d) ? ps_daemon_work_conn(m->d) : NULL)
                   : r->kind == REQ_READ ? ps_daemon_main_conn(m->d)
                                         : (ps_daemon_is_leader(m->d) ? ps_daemon_main_conn(m->d) : NULL);
    int rc = c ? ps_pgconn_query(c, sql, n, params, cb, r) : -ENOTCONN;
    if (rc < 0) {
        free(r);
        return rc;
    }
    m->req = r;
    return 0;
}

/* A request of this module about its migration alone ($1), sent at once;
 * when it cannot be sent, the tick timer tries again a poll later. */
static void send_simple(ps_cutover *m, enum req_kind kind, const char *sql, ps_pg_result_cb cb)
{
    struct req *r = calloc(1, sizeof *r);
    if (!r)
        return;
    r->m = m;
    r->kind = kind;
    const char *params[1] = {ps_daemon_config(m->d)->migration.id};
    if (send_req(m, r, sql, 1, params, cb) < 0)
        arm(m, ps_daemon_config(m->d)->monitor.poll_interval_ms);
}

static void read_state(ps_cutover *m)
{
    send_simple(m, REQ_READ, SQL_READ, on_read);
}

/* ---- one evaluation ---- */

static void on_promote(ps_pgconn *c, const PGresult *res, void *arg);
static void on_validate(ps_pgconn *c, const PGresult *res, void *arg);
static void write_state(ps_cutover *m, const ps_co_state *next, const ps_co_out *out);

/* The swap asked by finally: promote (state promoting, no command): run on
 * main like a command's, where apply would otherwise contend for the sync
 * lock it takes. A restart or a new leader that reads 'promoting' runs it
 * again (promote is all or nothing). */
static void send_promote(ps_cutover *m)
{
    const ps_config *cfg = ps_daemon_config(m->d);
    struct req *r = calloc(1, sizeof *r);
    if (!r)
        return;
    r->m = m;
    r->kind = REQ_PROMOTE;
    char rev[32], lt[24], at[24];
    snprintf(rev, sizeof rev, "%" PRId64, m->rev);
    snprintf(lt, sizeof lt, "%" PRId64, cfg->cutover.promote.lock_timeout_ms);
    snprintf(at, sizeof at, "%d", cfg->cutover.promote.attempts);
    const char *params[6] = {cfg->migration.id, rev, lt, at, NULL,
                             cfg->cutover.promote.keep_legacy ? "true" : "false"};
    ps_log_notice("cutover: promoting migration %s (finally: promote): lock_timeout %s ms, %s attempts, %s",
                  cfg->migration.id, lt, at,
                  cfg->cutover.promote.keep_legacy ? "reverse sync after it" : "no reverse sync (keep_legacy: false)");
    if (send_req(m, r, SQL_PROMOTE, 6, params, on_promote) < 0)
        arm(m, cfg->monitor.poll_interval_ms);
}

static void send_validate(ps_cutover *m)
{
    send_simple(m, REQ_VALIDATE, SQL_VALIDATE, on_validate);
}

static void on_promote(ps_pgconn *c, const PGresult *res, void *arg)
{
    (void)c;
    ps_cutover *m = req_answered(arg);
    if (!m)
        return;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        const char *msg = !res ? "connection lost" : ps_pgconn_errfield(res, PG_DIAG_MESSAGE_PRIMARY, "unknown error");
        ps_log_warning("cutover: promote of migration %s failed, nothing changed: %s",
                       ps_daemon_config(m->d)->migration.id, msg);
        /* a lost connection: the row says what happened (read again); a
         * refusal: back to awaiting the decision, with the reason */
        if (res)
            snprintf(m->promote_failed, sizeof m->promote_failed, "%s", msg);
    } else {
        ps_log_notice("cutover: %s", PQgetvalue(res, 0, 0));
        m->stats.transitions++;
    }
    m->loaded = false;
    arm(m, REREAD_MS);
}

static void on_validate(ps_pgconn *c, const PGresult *res, void *arg)
{
    (void)c;
    ps_cutover *m = req_answered(arg);
    if (!m)
        return;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        ps_log_warning("cutover: validating the re-pointed foreign keys of %s: %s; trying again",
                       ps_daemon_config(m->d)->migration.id,
                       !res ? "connection lost" : ps_pgconn_errfield(res, PG_DIAG_MESSAGE_PRIMARY, "unknown error"));
        arm(m, ps_daemon_config(m->d)->monitor.poll_interval_ms);
        return;
    }
    if (PQgetisnull(res, 0, 0)) {
        m->validated = true;
        return;
    }
    ps_log_notice("cutover: %s", PQgetvalue(res, 0, 0));
    kick(m);
}

static void evaluate(ps_cutover *m)
{
    const ps_config *cfg = ps_daemon_config(m->d);
    int64_t now = ps_clock_ms();
    if (m->st.status == PS_CO_PROMOTING) {
        if (!m->promote_failed[0]) {
            send_promote(m);
            return;
        }
        ps_co_state next = m->st;
        ps_co_out out = {.write = true, .log_prio = LOG_WARNING};
        next.status = PS_CO_AWAITING;
        snprintf(out.what, sizeof out.what, "promote_failed");
        snprintf(out.why, sizeof out.why, "promote failed, nothing changed: %s", m->promote_failed);
        m->promote_failed[0] = '\0';
        write_state(m, &next, &out);
        return;
    }
    if (m->st.status == PS_CO_PROMOTED) {
        if (!m->validated)
            send_validate(m);
        return;
    }
    if (m->st.status == PS_CO_ROLLED_BACK && !m->validated) {
        /* after a revert: the foreign keys it re-pointed NOT VALID (none
         * after a plain rollback: one call says so) */
        send_validate(m);
        return;
    }
    if (m->st.status == PS_CO_FINALIZED) {
        /* Final: no table is registered any more, so apply, backfill,
         * verify and sampling have nothing (sql/89-finalize.sql); said once. */
        if (!m->finalized_said)
            ps_log_notice("cutover: migration %s is finalized: its legacy tables and pgshadow's state of it are "
                          "gone; nothing is left for pgshadowd to do (stop it, or give it another migration)",
                          cfg->migration.id);
        m->finalized_said = true;
        return;
    }
    ps_gates_eval(cfg, ps_monitor_latest(ps_daemon_monitor(m->d), now), &m->gates);
    m->stats.evaluations++;
    ps_co_state next = m->st;
    ps_co_out out = {0};
    ps_co_policy p = policy(m);
    if (m->schedule_msg[0]) {
        /* A reschedule is recorded before anything is decided on the new
         * schedule: the machine runs again when this write has landed. */
        snprintf(out.what, sizeof out.what, "schedule");
        snprintf(out.why, sizeof out.why, "%s", m->schedule_msg);
        out.log_prio = LOG_NOTICE;
        out.write = true;
    } else if (m->schedule_ok) {
        ps_co_tick(&p, &next, &m->mem, &m->gates, now, &out);
    }
    bool gates_news = m->gates.fresh != m->written_fresh || (m->gates.fresh && m->gates.poll != m->written_poll);
    if (!out.write && !gates_news)
        return;
    write_state(m, &next, &out);
}

/* Write next (and the latest gates) with cutover_write, compare-and-set on
 * the rev this module holds. */
static void write_state(ps_cutover *m, const ps_co_state *next, const ps_co_out *out)
{
    const ps_config *cfg = ps_daemon_config(m->d);
    struct req *r = calloc(1, sizeof *r);
    if (!r)
        return;
    r->m = m;
    r->kind = REQ_WRITE;
    r->st = *next;
    r->out = *out;
    char rev[32], state[400], gates[1200];
    snprintf(rev, sizeof rev, "%" PRId64, m->rev);
    state_json(next, state, sizeof state);
    gates_json(&m->gates, gates, sizeof gates);
    const char *params[7] = {cfg->migration.id, rev, state, gates, out->what[0] ? out->what : NULL,
                             out->what[0] ? out->why : NULL, NULL};
    if (send_req(m, r, SQL_WRITE, 7, params, on_write) == 0) {
        m->written_poll = m->gates.poll;
        m->written_fresh = m->gates.fresh;
        if (strcmp(out->what, "schedule") == 0)
            m->again = true; /* the machine runs once this has landed */
    }
}

static void kick(ps_cutover *m)
{
    if (!m->leading || m->stopping)
        return;
    if (m->req) {
        m->again = true;
        return;
    }
    if (!m->loaded) {
        read_state(m);
        return;
    }
    m->again = false;
    evaluate(m);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    ps_cutover *m = arg;
    (void)fd;
    (void)what;
    if (!m->leading || m->stopping)
        return;
    arm(m, ps_daemon_config(m->d)->monitor.poll_interval_ms);
    kick(m);
}

static void on_poll(void *arg)
{
    kick(arg);
}

/* ---- commands ---- */

/* A command's outcome: the first value of its statement's result. */
static void first_value(const PGresult *res, char *out, size_t len)
{
    snprintf(out, len, "%s", PQntuples(res) > 0 && PQnfields(res) > 0 ? PQgetvalue(res, 0, 0) : "");
}

static int command(const ps_control_cmd *cmd, ps_control_action *act, char *why, size_t whylen, void *arg)
{
    ps_cutover *m = arg;
    ps_co_cmd which;
    if (ps_co_cmd_parse(cmd->name, &which) < 0)
        return snprintf(why, whylen, "not a cutover command: %s", cmd->name), 1;
    if (!m->loaded) {
        /* a new leader (or one whose write failed) reading the state: the
         * command waits in the queue, taken again at the next poll */
        snprintf(why, whylen, "the daemon is reading the cutover state");
        return PS_CONTROL_LATER;
    }
    if (!m->schedule_ok && which != PS_CO_CMD_ROLLBACK && which != PS_CO_CMD_ABORT) {
        snprintf(why, whylen, "the percent in force (%d%%) is no stage of cutover.stages: fix the schedule "
                              "and reload (rollback and abort still work)", m->st.percent);
        return 1;
    }
    int64_t arg_ms = 0;
    if (which == PS_CO_CMD_EXTEND) {
        const char *k = strstr(cmd->args, "\"duration_ms\"");
        const char *colon = k ? strchr(k, ':') : NULL;
        arg_ms = colon ? strtoll(colon + 1, NULL, 10) : 0;
    }
    ps_gates g;
    int64_t now = ps_clock_ms();
    ps_gates_eval(ps_daemon_config(m->d), ps_monitor_latest(ps_daemon_monitor(m->d), now), &g);
    ps_co_policy p = policy(m);
    ps_co_state next = m->st;
    ps_co_out out;
    if (ps_co_command(&p, &next, which, arg_ms, &g, &out, why, whylen) != 0)
        return 1;
    if (out.promote || out.revert) {
        /* The swap (or the swap back), in the command's transaction:
         * promote() / revert() write the state (promoted / rolled_back) and
         * the event when it commits; when it cannot finish it raises and
         * the command fails with its reason, the state as it was. Reverse
         * sync after a promote: as pgshadowctl asked ("reverse" in the
         * command's args), else keep_legacy. */
        const ps_config *cfg = ps_daemon_config(m->d);
        bool reverse = cfg->cutover.promote.keep_legacy;
        if (strstr(cmd->args, "\"reverse\": false"))
            reverse = false;
        else if (strstr(cmd->args, "\"reverse\": true"))
            reverse = true;
        snprintf(m->cmd_rev, sizeof m->cmd_rev, "%" PRId64, m->rev);
        snprintf(m->cmd_lock_timeout, sizeof m->cmd_lock_timeout, "%" PRId64, cfg->cutover.promote.lock_timeout_ms);
        snprintf(m->cmd_attempts, sizeof m->cmd_attempts, "%d", cfg->cutover.promote.attempts);
        snprintf(m->cmd_id, sizeof m->cmd_id, "%" PRId64, cmd->id);
        act->sql = out.revert ? SQL_REVERT : SQL_PROMOTE;
        act->nparams = out.revert ? 5 : 6;
        act->params[0] = cfg->migration.id;
        act->params[1] = m->cmd_rev;
        act->params[2] = m->cmd_lock_timeout;
        act->params[3] = m->cmd_attempts;
        act->params[4] = m->cmd_id;
        act->params[5] = reverse ? "true" : "false";
        act->format = first_value;
        ps_log_fields(LOG_NOTICE,
                      (ps_log_field[]){{"MIGRATION", cfg->migration.id},
                                       {"EVENT", out.revert ? "revert" : "promote"},
                                       {NULL, NULL}},
                      "cutover %s: %s (by %s): lock_timeout %s ms, %s attempts%s", out.revert ? "revert" : "promote",
                      out.why, cmd->requested_by, m->cmd_lock_timeout, m->cmd_attempts,
                      out.revert ? "" : reverse ? ", reverse sync after it" : ", no reverse sync");
        orphan(m);
        m->loaded = false;
        m->validated = false;
        m->mem.last_green_ms = -1;
        read_state(m);
        return 0;
    }
    if (out.finalize) {
        /* The drops, in the command's transaction: finalize() checks the
         * plan the operator confirmed (the command's args), drops it, and
         * writes the state (finalized) and the one event; when it cannot,
         * it raises and the command fails with its reason, nothing
         * dropped. */
        const ps_config *cfg = ps_daemon_config(m->d);
        snprintf(m->cmd_rev, sizeof m->cmd_rev, "%" PRId64, m->rev);
        snprintf(m->cmd_id, sizeof m->cmd_id, "%" PRId64, cmd->id);
        snprintf(m->cmd_lock_timeout, sizeof m->cmd_lock_timeout, "%" PRId64, cfg->cutover.promote.lock_timeout_ms);
        act->sql = SQL_FINALIZE;
        act->nparams = 4;
        act->params[0] = cfg->migration.id;
        act->params[1] = m->cmd_rev;
        act->params[2] = m->cmd_id;
        act->params[3] = m->cmd_lock_timeout;
        act->format = first_value;
        ps_log_fields(LOG_NOTICE, (ps_log_field[]){{"MIGRATION", cfg->migration.id}, {"EVENT", "finalize"}, {NULL, NULL}},
                      "cutover finalize: %s (by %s)", out.why, cmd->requested_by);
        orphan(m);
        m->loaded = false;
        read_state(m);
        return 0;
    }
    /* The row is written in the command's transaction; this module reads
     * it again right after, so what it believes is what committed. */
    snprintf(m->cmd_rev, sizeof m->cmd_rev, "%" PRId64, m->rev);
    state_json(&next, m->cmd_state, sizeof m->cmd_state);
    gates_json(&g, m->cmd_gates, sizeof m->cmd_gates);
    snprintf(m->cmd_what, sizeof m->cmd_what, "%s", out.what);
    snprintf(m->cmd_why, sizeof m->cmd_why, "%s", out.why);
    act->sql = SQL_WRITE;
    act->nparams = 7;
    act->params[0] = ps_daemon_config(m->d)->migration.id;
    act->params[1] = m->cmd_rev;
    act->params[2] = m->cmd_state;
    act->params[3] = m->cmd_gates;
    act->params[4] = m->cmd_what;
    act->params[5] = m->cmd_why;
    snprintf(m->cmd_id, sizeof m->cmd_id, "%" PRId64, cmd->id);
    act->params[6] = m->cmd_id; /* who asked: read from the command's row by cutover_write */
    snprintf(act->result, sizeof act->result, "%s", out.why);
    ps_log_fields(out.log_prio, (ps_log_field[]){{"MIGRATION", ps_daemon_config(m->d)->migration.id},
                                                 {"EVENT", out.what},
                                                 {NULL, NULL}},
                  "cutover %s: %s (by %s)", out.what, out.why, cmd->requested_by);
    m->stats.transitions++;
    /* What committed is read at once: this read is queued behind the rest
     * of the command's transaction (its statements go ahead of everything
     * queued) and ahead of the next command's BEGIN, so a command given
     * right after this one finds the state loaded. An answer of ours still
     * to come is from before the command: dropped. */
    orphan(m);
    m->loaded = false;
    m->mem.last_green_ms = -1;
    read_state(m);
    return 0;
}

/* ---- module hooks ---- */

static void co_on_leader(ps_daemon *d, bool leader, void *arg)
{
    ps_cutover *m = arg;
    (void)d;
    orphan(m);
    evtimer_del(m->ev_tick);
    m->leading = leader && !m->stopping;
    m->loaded = false;
    m->finalized_said = false;
    m->again = false;
    m->written_poll = -1;
    m->written_fresh = false;
    ps_co_mem_init(&m->mem);
    if (m->leading)
        arm(m, 0);
}

static void co_on_reload(ps_daemon *d, const ps_config *old_cfg, const ps_config *new_cfg, void *arg)
{
    ps_cutover *m = arg;
    (void)d;
    (void)old_cfg;
    free(m->pending);
    m->pending = NULL;
    /* Rule 6 is judged against the state in force. While this leader's
     * read or write of it is in flight, that is the state its answer
     * brings (a write may move the percent, and puts its own stage index
     * in st): judged when it lands (take_pending). */
    if (m->leading && (m->req || !m->loaded)) {
        size_t n = new_cfg->cutover.n_stages;
        if ((m->pending = calloc(n ? n : 1, sizeof *m->pending))) {
            memcpy(m->pending, new_cfg->cutover.stages, n * sizeof *m->pending);
            m->n_pending = n;
            return;
        }
    }
    reschedule(m, new_cfg->cutover.stages, new_cfg->cutover.n_stages);
    if (m->leading)
        kick(m);
}

static void co_on_stop(ps_daemon *d, void *arg)
{
    ps_cutover *m = arg;
    (void)d;
    /* A write in flight finishes or is lost with the connection: the row is
     * what committed, either way. Nothing new is decided. */
    m->stopping = true;
    m->leading = false;
    evtimer_del(m->ev_tick);
}

static size_t co_status(ps_daemon *d, char *buf, size_t len, void *arg)
{
    ps_cutover *m = arg;
    if (!ps_daemon_is_leader(d) || !m->loaded)
        return 0;
    ps_co_policy p = policy(m);
    size_t pos = ps_co_format_status(&p, &m->st, buf, len);
    if (!m->schedule_ok)
        ps_appendf(buf, len, &pos, " (not a stage of the schedule)");
    else if (!m->gates.fresh)
        ps_appendf(buf, len, &pos, ", gates stale");
    else if (ps_gates_red(&m->gates))
        ps_appendf(buf, len, &pos, ", gates red %d/%d", m->st.failures, p.failures_to_trip);
    return pos;
}

static void co_collect(ps_daemon *d, const ps_metric_sink *sink, void *arg)
{
    ps_cutover *m = arg;
    (void)d;
    static const ps_metric_counter counters[] = {
        {"pgshadow_cutover_evaluations_total", "gate evaluations", offsetof(ps_cutover_stats, evaluations)},
        {"pgshadow_cutover_transitions_total", "cutover state changes recorded with an event",
         offsetof(ps_cutover_stats, transitions)},
        {"pgshadow_cutover_trips_total", "gate trips", offsetof(ps_cutover_stats, trips)},
        {"pgshadow_cutover_write_failures_total", "cutover state writes that failed (read again, retried)",
         offsetof(ps_cutover_stats, write_failures)},
    };
    ps_metric_counters(sink, &m->stats, counters, sizeof counters / sizeof *counters);
    if (m->loaded)
        sink->sample(sink->ctx, "pgshadow_cutover_read_percent", PS_METRIC_GAUGE, m->st.percent,
                     "the read percent in force for every table of the migration");
}

static void co_free(void *arg)
{
    ps_cutover *m = arg;
    if (!m)
        return;
    orphan(m);
    ps_monitor_set_listener(ps_daemon_monitor(m->d), NULL, NULL);
    if (m->ev_tick)
        event_free(m->ev_tick);
    free(m->stages);
    free(m->pending);
    free(m);
}

static int co_create(ps_daemon *d, void **arg)
{
    ps_cutover *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->d = d;
    m->ev_tick = evtimer_new(ps_daemon_base(d), tick_cb, m);
    const ps_config *cfg = ps_daemon_config(d);
    if (!m->ev_tick || copy_schedule(m, cfg->cutover.stages, cfg->cutover.n_stages) < 0) {
        co_free(m);
        return -ENOMEM;
    }
    m->schedule_ok = true;
    ps_co_mem_init(&m->mem);
    ps_control *c = ps_daemon_control(d);
    for (int i = 0; c && i < PS_CO_N_CMD; i++) {
        int r = ps_control_register(c, ps_co_cmd_name((ps_co_cmd)i), command, m);
        if (r < 0) {
            co_free(m);
            return r;
        }
    }
    ps_monitor_set_listener(ps_daemon_monitor(d), on_poll, m);
    *arg = m;
    return 0;
}

const ps_daemon_module ps_cutover_module = {
    .name = "cutover",
    .create = co_create,
    .free = co_free,
    .on_leader = co_on_leader,
    .on_reload = co_on_reload,
    .on_stop = co_on_stop,
    .status = co_status,
    .collect = co_collect,
};
