/*
 * cmd_status.c - reading the cutover: `pgshadowctl status [--json]
 * [--watch]` and `pgshadowctl events [--since D] [--json]`. Both only read
 * (pgshadow_viewer may), never through the daemon: the database holds the
 * state, the leader's last gate evaluation and the audit log, so they work
 * from any host and while no daemon runs.
 *
 * Invariants: gates older than PS_STATUS_STALE_POLLS poll intervals (and a
 * few seconds) are shown stale, never with their old colours: a dead
 * daemon's last "green" is no news; hold needed comes from the same pure
 * function the daemon uses (ps_co_hold_needed), from this config file.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/ctl.h"
#include "pgshadow/cutover.h"
#include "pgshadow/duration.h"
#include "pgshadow/util.h"

#define PS_STATUS_STALE_POLLS 3
#define PS_STATUS_STALE_SLACK_MS 5000

static const char SQL_STATUS[] =
    "SELECT c.status, c.stage, c.percent, to_char(c.since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "       (extract(epoch FROM c.hold_earned) * 1000)::bigint, (extract(epoch FROM c.hold_extra) * 1000)::bigint, "
    "       c.failures, coalesce(c.reason, ''), coalesce(c.gates::text, '{}'), "
    "       coalesce((extract(epoch FROM now() - c.gates_at) * 1000)::bigint, -1), "
    "       (SELECT count(*) FROM pgshadow.tables t WHERE t.migration_id = c.migration_id) "
    "FROM pgshadow.cutover c WHERE c.migration_id = $1";

enum { S_STATUS, S_STAGE, S_PERCENT, S_SINCE, S_EARNED, S_EXTRA, S_FAILURES, S_REASON, S_GATES, S_AGE, S_TABLES };

/* One gate's colour/value/limit out of the stored JSON (the daemon wrote
 * it: {"<name>": {"color": "...", "limit": N, "value": N}}), read with a
 * plain scan: pgshadowctl links no JSON library. */
static void gate_from_json(const char *json, const char *name, char *color, size_t clen, double *value,
                           bool *has_value, double *limit)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\": {", name);
    const char *p = strstr(json, key);
    snprintf(color, clen, "stale");
    *has_value = false;
    *limit = 0;
    if (!p)
        return;
    const char *end = strchr(p, '}');
    const char *c = strstr(p, "\"color\": \"");
    if (c && c < end) {
        c += 10;
        size_t n = strcspn(c, "\"");
        snprintf(color, clen, "%.*s", (int)(n < clen ? n : clen - 1), c);
    }
    const char *l = strstr(p, "\"limit\": ");
    if (l && l < end)
        *limit = strtod(l + 9, NULL);
    const char *v = strstr(p, "\"value\": ");
    if (v && v < end) {
        *value = strtod(v + 9, NULL);
        *has_value = true;
    }
}

/* The end of a status: the JSON closed, or the last decision said; then
 * b printed at once (a --watch screen is one write) and freed. */
static int status_end(ps_ctl_buf *b, PGresult *res, bool json)
{
    if (json)
        ps_ctl_buf_puts(b, "}}\n");
    else if (PQgetvalue(res, 0, S_REASON)[0])
        ps_ctl_buf_printf(b, "last decision: %s\n", PQgetvalue(res, 0, S_REASON));
    PQclear(res);
    char *out = ps_ctl_buf_steal(b);
    fputs(out, stdout);
    fflush(stdout);
    free(out);
    return PS_CTL_EXIT_OK;
}

static int print_status(ps_ctl *ctl, bool json)
{
    const char *params[1] = {ctl->cfg->migration.id};
    PGresult *res = PQexecParams(ctl->conn, SQL_STATUS, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ps_ctl_print_pg_error("status", ctl->conn, res);
        PQclear(res);
        return PS_CTL_EXIT_FAILED;
    }
    if (PQntuples(res) != 1) {
        fprintf(stderr, "pgshadowctl: status: migration %s is not installed (no cutover row): run pgshadowctl install\n",
                ctl->cfg->migration.id);
        PQclear(res);
        return PS_CTL_EXIT_FAILED;
    }
    ps_co_state st = {0};
    if (ps_co_status_parse(PQgetvalue(res, 0, S_STATUS), &st.status) < 0)
        st.status = PS_CO_NOT_STARTED;
    st.stage = atoi(PQgetvalue(res, 0, S_STAGE));
    st.percent = atoi(PQgetvalue(res, 0, S_PERCENT));
    st.hold_earned_ms = strtoll(PQgetvalue(res, 0, S_EARNED), NULL, 10);
    st.hold_extra_ms = strtoll(PQgetvalue(res, 0, S_EXTRA), NULL, 10);
    st.failures = atoi(PQgetvalue(res, 0, S_FAILURES));
    const ps_config *cfg = ctl->cfg;
    ps_co_policy p = {.stages = cfg->cutover.stages, .n_stages = cfg->cutover.n_stages};
    int64_t needed = ps_co_hold_needed(&p, &st);
    int64_t age = strtoll(PQgetvalue(res, 0, S_AGE), NULL, 10);
    int64_t stale_after = PS_STATUS_STALE_POLLS * cfg->monitor.poll_interval_ms + PS_STATUS_STALE_SLACK_MS;
    bool gates_stale = age < 0 || age > stale_after;
    const char *gjson = PQgetvalue(res, 0, S_GATES);
    bool fresh = strstr(gjson, "\"fresh\": true") != NULL && !gates_stale;

    ps_ctl_buf b = {0};
    if (json) {
        ps_ctl_buf_puts(&b, "{\"migration\": ");
        ps_ctl_json_string(&b, cfg->migration.id);
        ps_ctl_buf_printf(&b, ", \"state\": \"%s\", \"stage\": %d, \"stages\": %zu, \"percent\": %d, \"since\": ",
                          ps_co_status_name(st.status), st.stage, cfg->cutover.n_stages, st.percent);
        ps_ctl_json_string(&b, PQgetvalue(res, 0, S_SINCE));
        ps_ctl_buf_printf(&b,
                          ", \"hold_earned_ms\": %lld, \"hold_needed_ms\": %lld, \"failures\": %d, "
                          "\"failures_to_trip\": %d, \"tables\": %s, \"gates_age_ms\": %lld, \"gates_fresh\": %s, "
                          "\"reason\": ",
                          (long long)st.hold_earned_ms, (long long)needed, st.failures,
                          cfg->cutover.failures_to_trip, PQgetvalue(res, 0, S_TABLES), (long long)age,
                          fresh ? "true" : "false");
        ps_ctl_json_string(&b, PQgetvalue(res, 0, S_REASON));
        ps_ctl_buf_puts(&b, ", \"gates\": {");
    } else if (st.status == PS_CO_PROMOTED) {
        /* promoted: the former shadows are the tables; no percent, hold or
         * gate means anything any more (docs/promote.md) */
        ps_ctl_buf_printf(&b,
                          "migration %s: promoted since %s: the former shadow tables are the tables (%s tables), "
                          "routing answers primary, the old tables are kept as <table>_legacy\n",
                          cfg->migration.id, PQgetvalue(res, 0, S_SINCE), PQgetvalue(res, 0, S_TABLES));
        return status_end(&b, res, false);
    } else {
        ps_ctl_buf_printf(&b, "migration %s: %s", cfg->migration.id, ps_co_status_name(st.status));
        if (st.stage >= 1)
            ps_ctl_buf_printf(&b, ", stage %d of %zu", st.stage, cfg->cutover.n_stages);
        ps_ctl_buf_printf(&b, ", reads %d%% from the shadow (%s tables), since %s\n", st.percent,
                          PQgetvalue(res, 0, S_TABLES), PQgetvalue(res, 0, S_SINCE));
        if (st.stage >= 1) {
            char e[32], n[32];
            ps_human_duration(st.hold_earned_ms, e, sizeof e);
            ps_duration_format(needed, n, sizeof n);
            ps_ctl_buf_printf(&b, "hold: %s of %s earned (green time at this stage)\n", e, n);
        }
        ps_ctl_buf_printf(&b, "red polls in a row: %d of %d to trip\n", st.failures, cfg->cutover.failures_to_trip);
        if (age < 0) {
            ps_ctl_buf_puts(&b, "gates: never evaluated (no pgshadowd has led this migration yet)\n");
        } else {
            char a[32];
            ps_human_duration(age, a, sizeof a);
            ps_ctl_buf_printf(&b, "gates (evaluated %s ago%s):\n", a,
                              gates_stale ? "; too long ago: shown stale, is a pgshadowd leading?" : "");
        }
    }
    for (int i = 0; i < PS_GATE_N; i++) {
        char color[16], v[32] = "-", l[32];
        double value = 0, limit = 0;
        bool has_value;
        gate_from_json(gjson, ps_gate_name((ps_gate_id)i), color, sizeof color, &value, &has_value, &limit);
        if (gates_stale && strcmp(color, "off") != 0) {
            snprintf(color, sizeof color, "stale");
            has_value = false;
        }
        if (has_value)
            ps_gate_format_value((ps_gate_id)i, value, v, sizeof v);
        ps_gate_format_value((ps_gate_id)i, limit, l, sizeof l);
        if (json) {
            ps_ctl_buf_printf(&b, "%s\"%s\": {\"color\": \"%s\", \"limit\": %.6g", i ? ", " : "",
                              ps_gate_name((ps_gate_id)i), color, limit);
            if (has_value)
                ps_ctl_buf_printf(&b, ", \"value\": %.6g", value);
            ps_ctl_buf_puts(&b, "}");
        } else {
            ps_ctl_buf_printf(&b, "  %-18s %-6s %-10s %s %s\n", ps_gate_name((ps_gate_id)i), color, v,
                              i == PS_GATE_SYNC_PERCENT ? ">=" : "<=", l);
        }
    }
    return status_end(&b, res, json);
}

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

int ps_ctl_cmd_status(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    bool json = false, watch = false;
    const char *pos[1];
    int npos;
    const ps_ctl_option opts[] = {{"--json", &json, NULL}, {"--watch", &watch, NULL}, {NULL, NULL, NULL}};
    int rc = ps_ctl_args(cmd, argc, argv, opts, pos, &npos);
    if (rc == PS_CTL_EXIT_OK)
        rc = ps_ctl_arity(cmd, npos);
    if (rc == PS_CTL_EXIT_OK)
        rc = ps_ctl_connect(ctl);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    if (!watch)
        return print_status(ctl, json);
    signal(SIGINT, on_sigint);
    while (!interrupted) {
        if (!json)
            fputs("\033[H\033[2J", stdout);
        rc = print_status(ctl, json);
        if (rc != PS_CTL_EXIT_OK)
            return rc;
        ps_ctl_sleep_ms(2000);
    }
    return PS_CTL_EXIT_OK;
}

/* The migration's events and those of its tables (flag changes carry the
 * table only), oldest first. */
static const char SQL_EVENTS[] =
    "SELECT to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), e.who, e.what, "
    "       coalesce(e.table_name, ''), coalesce(e.why, ''), "
    "       jsonb_build_object('at', e.at, 'who', e.who, 'what', e.what, 'table', e.table_name, 'why', e.why, "
    "                          'before', e.before, 'after', e.after)::text "
    "FROM pgshadow.events e "
    "WHERE e.at >= now() - make_interval(secs => $2::float8 / 1000) "
    "  AND (e.migration_id = $1 OR (e.migration_id IS NULL AND e.table_name IN "
    "       (SELECT t.table_name FROM pgshadow.tables t WHERE t.migration_id = $1))) "
    "ORDER BY e.event_id";

int ps_ctl_cmd_events(ps_ctl *ctl, const ps_ctl_command *cmd, int argc, char **argv)
{
    bool json = false;
    const char *since_text = NULL;
    const char *pos[1];
    int npos;
    const ps_ctl_option opts[] = {{"--json", &json, NULL}, {"--since", NULL, &since_text}, {NULL, NULL, NULL}};
    int rc = ps_ctl_args(cmd, argc, argv, opts, pos, &npos);
    if (rc == PS_CTL_EXIT_OK)
        rc = ps_ctl_arity(cmd, npos);
    if (rc != PS_CTL_EXIT_OK)
        return rc;
    int64_t since = 3600 * 1000;
    const char *why = NULL;
    if (since_text && (ps_duration_parse(since_text, &since, &why) != 0 || since <= 0))
        return ps_ctl_usage_error("events: --since needs a duration such as 1h, got '%s'", since_text);
    if ((rc = ps_ctl_connect(ctl)) != PS_CTL_EXIT_OK)
        return rc;
    char ms[32];
    snprintf(ms, sizeof ms, "%lld", (long long)since);
    const char *params[2] = {ctl->cfg->migration.id, ms};
    PGresult *res = PQexecParams(ctl->conn, SQL_EVENTS, 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ps_ctl_print_pg_error("events", ctl->conn, res);
        PQclear(res);
        return PS_CTL_EXIT_FAILED;
    }
    int n = PQntuples(res);
    if (json)
        fputs("[", stdout);
    for (int i = 0; i < n; i++) {
        if (json) {
            printf("%s\n  %s", i ? "," : "", PQgetvalue(res, i, 5));
            continue;
        }
        const char *table = PQgetvalue(res, i, 3);
        printf("%s  %-16s %-28s %s%s%s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
               table[0] ? table : "", table[0] ? ": " : "", PQgetvalue(res, i, 4));
    }
    if (json)
        fputs(n ? "\n]\n" : "]\n", stdout);
    PQclear(res);
    return PS_CTL_EXIT_OK;
}
