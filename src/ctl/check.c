/*
 * check.c - `pgshadowctl check`: the preflight (also run first by install).
 *
 * Owns the preflight's own SQL (the `queries` table below: read-only catalog
 * and statistics queries) and its PASS/WARN/FAIL policy (the pure
 * ps_check_decide_* functions, unit tested in tests/unit/test-check.c).
 * Whether install accepts a table is NOT decided here: check_rules asks
 * install's own rules (sql/05-rules.sql, pgshadow.preflight_table), so the
 * two cannot disagree.
 *
 * Invariants: the preflight leaves nothing behind and never queues behind a
 * lock for long: the session runs with lock_timeout 1s; the rules are loaded
 * in a transaction that is always rolled back (it writes only catalog rows
 * of its own functions, and reads the tables' catalog, taking no lock a
 * writer waits for); the one lock-taking query (relation sizes) falls back
 * to the planner's statistics when it cannot get its lock. Free disk is
 * reported only when actually measured, never guessed. Queries show pids and
 * ages of other sessions, never their query text.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "pgshadow/ctl.h"
#include "pgshadow/redact.h"
#include "pgshadow/sqlfiles.h"

/* ---- the SQL, in one place ---- */

enum {
    Q_ROLE,
    Q_TABLE,
    Q_LOCKS,
    Q_XACTS,
    Q_REPLICATION,
    Q_SETTINGS,
    Q_DATA_DIRECTORY,
    Q_SIZE_EXACT,
    Q_SIZE_ESTIMATE,
    Q_VIEWS,
    Q_VIEW_OWNED,
};

static const char *const queries[] = {
    [Q_ROLE] =
        "SELECT current_user, r.rolsuper, r.rolcreaterole,"
        " has_database_privilege(current_database(), 'CREATE'),"
        " EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pgshadow'),"
        " (SELECT pg_catalog.string_agg(x, ', ') FROM pg_catalog.unnest(ARRAY['pgshadow_operator',"
        "   'pgshadow_viewer', 'pgshadow_daemon']) x"
        "   WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = x)),"
        " EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgshadow_daemon')"
        "   AND pg_catalog.pg_has_role(current_user, 'pgshadow_daemon', 'MEMBER'),"
        " (SELECT pg_catalog.has_schema_privilege(n.oid, 'CREATE')"
        "   FROM pg_catalog.pg_namespace n WHERE n.nspname = $1)"
        " FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
    /* $1 schema, $2 table */
    [Q_TABLE] =
        "SELECT c.oid, c.relkind, pg_catalog.pg_has_role(c.relowner, 'USAGE')"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relname = $2",
    /* $1 oid[]: locks that conflict with CREATE TRIGGER's SHARE ROW EXCLUSIVE */
    [Q_LOCKS] =
        "SELECT l.pid, l.mode, c.relname FROM pg_catalog.pg_locks l"
        " JOIN pg_catalog.pg_class c ON c.oid = l.relation"
        " WHERE l.relation = ANY ($1::oid[]) AND l.pid <> pg_catalog.pg_backend_pid()"
        "   AND l.granted AND l.mode NOT IN ('AccessShareLock', 'RowShareLock')"
        " ORDER BY l.pid, c.relname",
    [Q_XACTS] =
        "SELECT pid, extract(epoch FROM now() - xact_start)::bigint"
        " FROM pg_catalog.pg_stat_activity"
        " WHERE xact_start IS NOT NULL AND pid <> pg_catalog.pg_backend_pid()"
        "   AND now() - xact_start > interval '5 minutes'"
        " ORDER BY xact_start LIMIT 20",
    [Q_REPLICATION] =
        "SELECT (extract(epoch FROM replay_lag) * 1000)::bigint,"
        " pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')"
        " FROM pg_catalog.pg_stat_replication",
    [Q_SETTINGS] =
        "SELECT current_setting('archive_mode'), current_setting('wal_level')",
    /* needs superuser or pg_read_all_settings; a failure means "unknown" */
    [Q_DATA_DIRECTORY] = "SELECT current_setting('data_directory')",
    [Q_SIZE_EXACT] =
        "SELECT coalesce(sum(pg_catalog.pg_total_relation_size(o)), 0)::bigint"
        " FROM pg_catalog.unnest($1::oid[]) o",
    /* lock-free: the planner's page counts of tables, their indexes and toast */
    [Q_SIZE_ESTIMATE] =
        "SELECT coalesce(sum(c.relpages::bigint), 0) * current_setting('block_size')::bigint"
        " FROM pg_catalog.pg_class c WHERE c.oid = ANY ($1::oid[])"
        "   OR c.oid IN (SELECT indexrelid FROM pg_catalog.pg_index WHERE indrelid = ANY ($1::oid[]))"
        "   OR c.oid IN (SELECT reltoastrelid FROM pg_catalog.pg_class WHERE oid = ANY ($1::oid[]))",
    /* the dashboard views that exist and that pgshadow did not create (install
     * records the ones it creates in pgshadow.meta; read only when it exists) */
    [Q_VIEWS] =
        "SELECT v, pg_catalog.to_regclass('pgshadow.meta') IS NOT NULL"
        " FROM pg_catalog.unnest(ARRAY['public.shadow_migration_dashboard',"
        "   'public.migration_success_metrics']) v"
        " WHERE pg_catalog.to_regclass(v) IS NOT NULL",
    /* $1 view name; only run when pgshadow.meta exists */
    [Q_VIEW_OWNED] =
        "SELECT EXISTS (SELECT 1 FROM pgshadow.meta WHERE key = 'created_view:' || $1)",
};

/* ---- the report ---- */

const char *ps_check_status_word(ps_check_status s)
{
    return s == PS_CHECK_PASS ? "PASS" : s == PS_CHECK_WARN ? "WARN" : "FAIL";
}

void ps_check_report_init(ps_check_report *r)
{
    memset(r, 0, sizeof(*r));
}

void ps_check_report_free(ps_check_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->count; i++) {
        free(r->lines[i].name);
        free(r->lines[i].detail);
    }
    free(r->lines);
    memset(r, 0, sizeof(*r));
}

void ps_check_add(ps_check_report *r, ps_check_status s, const char *name, const char *fmt, ...)
{
    if (r->count == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        ps_check_line *p = realloc(r->lines, cap * sizeof(*p));
        if (!p)
            abort();
        r->lines = p;
        r->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    char *raw = NULL;
    if (vasprintf(&raw, fmt, ap) < 0)
        abort();
    va_end(ap);
    /* A detail may carry libpq's own words (a failed query's connection
     * error): redacted like every other message, so the report holds no
     * secret. Masking can lengthen a one-byte secret to three. */
    size_t cap = strlen(raw) * 4 + 4;
    char *detail = malloc(cap);
    if (!detail)
        abort();
    ps_redact_secrets(raw, detail, cap);
    free(raw);
    ps_check_line *l = &r->lines[r->count++];
    l->status = s;
    l->name = strdup(name);
    l->detail = detail;
    if (!l->name)
        abort();
    if (s > r->worst)
        r->worst = s;
}

void ps_check_report_print(const ps_check_report *r, ps_check_status min_status, FILE *out)
{
    for (size_t i = 0; i < r->count; i++)
        if (r->lines[i].status >= min_status)
            fprintf(out, "%s  %s: %s\n", ps_check_status_word(r->lines[i].status),
                    r->lines[i].name, r->lines[i].detail);
}

/* ---- pure decisions ---- */

void ps_check_format_bytes(int64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%lld B", (long long)bytes);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
}

ps_check_status ps_check_decide_server_version(int num, char *detail, size_t len)
{
    int major = num / 10000;
    if (num >= 130000) {
        snprintf(detail, len, "PostgreSQL %d (13 or later required)", major);
        return PS_CHECK_PASS;
    }
    if (num <= 0) {
        snprintf(detail, len, "unknown server version");
        return PS_CHECK_FAIL;
    }
    snprintf(detail, len, "PostgreSQL %d.%d is too old (13 or later required)",
             num >= 100000 ? major : num / 10000, num >= 100000 ? num % 10000 : (num / 100) % 100);
    return PS_CHECK_FAIL;
}

ps_check_status ps_check_decide_long_xacts(size_t n, const int *pids, const int64_t *age_s,
                                           char *detail, size_t len)
{
    if (n == 0) {
        snprintf(detail, len, "none open longer than 5 minutes");
        return PS_CHECK_PASS;
    }
    size_t off = (size_t)snprintf(detail, len, "%zu open longer than 5 minutes (install's locks "
                                  "would queue behind them):", n);
    for (size_t i = 0; i < n && off < len; i++)
        off += (size_t)snprintf(detail + off, len - off, "%s pid %d for %llds", i ? "," : "",
                                pids[i], (long long)age_s[i]);
    return PS_CHECK_WARN;
}

int64_t ps_check_replay_lag_ms(bool is_null, int64_t value_ms, bool sees_all_stats)
{
    if (!is_null)
        return value_ms < 0 ? 0 : value_ms;
    return sees_all_stats ? 0 : -1;
}

ps_check_status ps_check_decide_replication(size_t n, const int64_t *lag_ms, int64_t max_lag_ms,
                                            char *detail, size_t len)
{
    if (n == 0) {
        snprintf(detail, len, "no standbys connected");
        return PS_CHECK_PASS;
    }
    int64_t worst = 0;
    size_t unknown = 0;
    for (size_t i = 0; i < n; i++) {
        if (lag_ms[i] < 0)
            unknown++;
        else if (lag_ms[i] > worst)
            worst = lag_ms[i];
    }
    if (unknown == n) {
        snprintf(detail, len, "%zu standby(s), replay lag not visible to this role "
                 "(needs pg_read_all_stats)", n);
        return PS_CHECK_WARN;
    }
    if (max_lag_ms > 0 && worst > max_lag_ms) {
        snprintf(detail, len, "%zu standby(s), worst replay lag %lld ms exceeds "
                 "sync.max_replication_lag %lld ms", n, (long long)worst, (long long)max_lag_ms);
        return PS_CHECK_WARN;
    }
    snprintf(detail, len, "%zu standby(s), worst replay lag %lld ms (limit %lld ms)%s", n,
             (long long)worst, (long long)max_lag_ms,
             unknown ? "; some lags not visible to this role" : "");
    return unknown ? PS_CHECK_WARN : PS_CHECK_PASS;
}

int64_t ps_check_estimate_need(int64_t primary_bytes)
{
    if (primary_bytes < 0)
        primary_bytes = 0;
    int64_t headroom = primary_bytes / 10;
    if (headroom < 64LL * 1024 * 1024)
        headroom = 64LL * 1024 * 1024;
    return primary_bytes + primary_bytes / 5 + headroom;
}

ps_check_status ps_check_decide_disk(int64_t need, int64_t free_bytes, const char *where,
                                     char *detail, size_t len)
{
    char n[32], f[32];
    ps_check_format_bytes(need, n, sizeof(n));
    if (free_bytes < 0) {
        snprintf(detail, len, "cannot determine free disk (%s); need about %s", where, n);
        return PS_CHECK_WARN;
    }
    ps_check_format_bytes(free_bytes, f, sizeof(f));
    if (free_bytes < need) {
        snprintf(detail, len, "%s free (%s), need about %s", f, where, n);
        return PS_CHECK_FAIL;
    }
    if (free_bytes / 2 < need) {
        snprintf(detail, len, "%s free (%s), need about %s: less than twice the need", f, where, n);
        return PS_CHECK_WARN;
    }
    snprintf(detail, len, "%s free (%s), need about %s", f, where, n);
    return PS_CHECK_PASS;
}

ps_check_status ps_check_decide_archive_mode(const char *mode, char *detail, size_t len)
{
    if (mode && (strcmp(mode, "on") == 0 || strcmp(mode, "always") == 0)) {
        snprintf(detail, len, "archive_mode=%s", mode);
        return PS_CHECK_PASS;
    }
    snprintf(detail, len, "archive_mode=%s: no point-in-time recovery", mode ? mode : "unknown");
    return PS_CHECK_WARN;
}

ps_check_status ps_check_decide_wal_level(const char *level, char *detail, size_t len)
{
    if (level && (strcmp(level, "replica") == 0 || strcmp(level, "logical") == 0)) {
        snprintf(detail, len, "wal_level=%s", level);
        return PS_CHECK_PASS;
    }
    snprintf(detail, len, "wal_level=%s: no standby or WAL archive can follow the migration",
             level ? level : "unknown");
    return PS_CHECK_WARN;
}

/* ---- the checks against the database ---- */

static PGresult *q(PGconn *conn, int which, int n, const char *const *params)
{
    return PQexecParams(conn, queries[which], n, NULL, params, NULL, NULL, 0);
}

static bool ok(const PGresult *res)
{
    return PQresultStatus(res) == PGRES_TUPLES_OK;
}

static void add_query_failure(ps_check_report *r, const char *name, PGconn *conn,
                              const PGresult *res)
{
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    ps_check_add(r, PS_CHECK_FAIL, name, "query failed: %s",
                 msg ? msg : PQerrorMessage(conn));
}

static bool is_true(const PGresult *res, int row, int col)
{
    return !PQgetisnull(res, row, col) && strcmp(PQgetvalue(res, row, col), "t") == 0;
}

typedef struct table_info {
    const ps_table_config *cfg;
    char oid[16];     /* "" when the table does not exist */
    bool owned;
    char kind;        /* relkind: 'r' or 'p' */
} table_info;

/* What the later checks need of each table (its oid, kind, whether this
 * role owns it). Whether install accepts it is check_rules' question. */
static void check_tables(PGconn *conn, const ps_config *cfg, ps_check_report *r, table_info *ti)
{
    const char *schema = cfg->migration.schema;
    for (size_t i = 0; i < cfg->migration.n_tables; i++) {
        const ps_table_config *t = &cfg->migration.tables[i];
        table_info *info = &ti[i];
        info->cfg = t;
        char name[512];
        snprintf(name, sizeof(name), "table %s.%s", schema, t->name);
        const char *p[2] = {schema, t->name};
        PGresult *res = q(conn, Q_TABLE, 2, p);
        if (!ok(res))
            add_query_failure(r, name, conn, res);
        else if (PQntuples(res) == 1 && strchr("rp", PQgetvalue(res, 0, 1)[0])) {
            snprintf(info->oid, sizeof(info->oid), "%s", PQgetvalue(res, 0, 0));
            info->owned = is_true(res, 0, 2);
            info->kind = PQgetvalue(res, 0, 1)[0];
        }
        PQclear(res);
    }
}

static bool exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    bool good = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    return good;
}

/*
 * Install's own rules, applied by the very functions register_table calls
 * (sql/05-rules.sql: pgshadow.preflight_table): the files install.list tags
 * "preflight" are loaded in a transaction that is then rolled back, so they
 * apply to a database pgshadow is not installed in yet, and an older
 * install's functions are never the judge. Each table is asked under its
 * own savepoint, so one failing query does not hide the others' answers.
 */
static void check_rules(PGconn *conn, const ps_config *cfg, ps_check_report *r, table_info *ti,
                        size_t *n_missing_shadows)
{
    *n_missing_shadows = 0;
    char *rules = NULL;
    const char *missing = NULL;
    if (ps_ctl_sql_files(ps_sql_preflight, &rules, &missing) != 0) {
        ps_check_add(r, PS_CHECK_FAIL, "install rules", "%s is not embedded in this build", missing);
        return;
    }
    if (!exec_ok(conn, "BEGIN")) {
        add_query_failure(r, "install rules", conn, NULL);
        free(rules);
        return;
    }
    PGresult *res = PQexec(conn, rules);
    free(rules);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        ps_check_add(r, PS_CHECK_FAIL, "install rules",
                     "could not load install's rules as role %s (install runs the same SQL, so it "
                     "would fail too): %s", PQuser(conn), msg ? msg : PQerrorMessage(conn));
        PQclear(res);
        exec_ok(conn, "ROLLBACK");
        return;
    }
    PQclear(res);

    const char *schema = cfg->migration.schema;
    for (size_t i = 0; i < cfg->migration.n_tables; i++) {
        const ps_table_config *t = &cfg->migration.tables[i];
        char name[512];
        snprintf(name, sizeof(name), "table %s.%s", schema, t->name);
        /* the problems in register_table's order, then one row that says
         * whether the shadow exists */
        ps_ctl_buf sql = {0};
        ps_ctl_buf_puts(&sql, "SELECT 1, p.o, p.message, p.detail, p.hint, NULL::boolean"
                              " FROM pgshadow.preflight_table(");
        int rc = ps_ctl_table_args(&sql, cfg, t);
        ps_ctl_buf_puts(&sql, ") WITH ORDINALITY p(code, message, detail, hint, o)"
                              " UNION ALL SELECT 2, 0, NULL, NULL, NULL, pg_catalog.to_regclass("
                              "pg_catalog.format('%I.%I', ");
        rc |= ps_ctl_quote_literal(&sql, schema, strlen(schema));
        ps_ctl_buf_puts(&sql, "::text, ");
        ps_ctl_buf shadow = {0};
        ps_ctl_buf_printf(&shadow, "%s%s", t->name, cfg->migration.shadow_suffix);
        rc |= ps_ctl_quote_literal(&sql, shadow.data, shadow.len);
        ps_ctl_buf_free(&shadow);
        ps_ctl_buf_puts(&sql, "::text)) IS NULL ORDER BY 1, 2");
        if (rc != 0) {
            ps_check_add(r, PS_CHECK_FAIL, name, "a configuration value contains a NUL byte");
            ps_ctl_buf_free(&sql);
            continue;
        }
        exec_ok(conn, "SAVEPOINT preflight_table");
        res = PQexec(conn, sql.data);
        ps_ctl_buf_free(&sql);
        if (!ok(res)) {
            add_query_failure(r, name, conn, res);
            PQclear(res);
            exec_ok(conn, "ROLLBACK TO SAVEPOINT preflight_table");
            continue;
        }
        int n = PQntuples(res);
        bool shadow_absent = n > 0 && is_true(res, n - 1, 5);
        for (int row = 0; row < n - 1; row++) {
            ps_ctl_buf msg = {0};
            ps_ctl_buf_puts(&msg, PQgetvalue(res, row, 2));
            for (int col = 3; col <= 4; col++)
                if (!PQgetisnull(res, row, col))
                    ps_ctl_buf_printf(&msg, "\n      %s", PQgetvalue(res, row, col));
            ps_check_add(r, PS_CHECK_FAIL, name, "%s", msg.data);
            ps_ctl_buf_free(&msg);
        }
        if (n == 1) {
            if (t->n_key)
                ps_check_add(r, PS_CHECK_PASS, name, "install accepts it (key from config; "
                             "shadow %s)", shadow_absent ? "absent, install creates it"
                                                         : "compatible");
            else
                ps_check_add(r, PS_CHECK_PASS, name, "install accepts it (primary key; shadow %s)",
                             shadow_absent ? "absent, install creates it" : "compatible");
            if (shadow_absent && ti[i].oid[0])
                (*n_missing_shadows)++;
        }
        PQclear(res);
    }
    exec_ok(conn, "ROLLBACK");
}

static void check_privileges(PGconn *conn, const ps_config *cfg, ps_check_report *r,
                             const table_info *ti, size_t n_missing_shadows)
{
    const char *p[1] = {cfg->migration.schema};
    PGresult *res = q(conn, Q_ROLE, 1, p);
    if (!ok(res) || PQntuples(res) != 1) {
        add_query_failure(r, "install privileges", conn, res);
        PQclear(res);
        return;
    }
    const char *user = PQgetvalue(res, 0, 0);
    bool super = is_true(res, 0, 1), createrole = is_true(res, 0, 2);
    bool create_db = is_true(res, 0, 3), schema_exists = is_true(res, 0, 4);
    const char *missing_roles = PQgetisnull(res, 0, 5) ? NULL : PQgetvalue(res, 0, 5);
    bool daemon_member = is_true(res, 0, 6);
    bool create_schema = is_true(res, 0, 7);

    if (super) {
        ps_check_add(r, PS_CHECK_PASS, "install privileges", "role %s is a superuser", user);
    } else {
        ps_ctl_buf miss = {0};
        if (!schema_exists && !create_db)
            ps_ctl_buf_printf(&miss, "%sCREATE on database %s", miss.len ? "; " : "",
                              PQdb(conn));
        if (n_missing_shadows > 0 && !create_schema)
            ps_ctl_buf_printf(&miss, "%sCREATE on schema %s (to create %zu shadow table%s)",
                              miss.len ? "; " : "", cfg->migration.schema, n_missing_shadows,
                              n_missing_shadows == 1 ? "" : "s");
        if (missing_roles && !createrole)
            ps_ctl_buf_printf(&miss, "%sCREATEROLE (to create %s)", miss.len ? "; " : "",
                              missing_roles);
        for (size_t i = 0; i < cfg->migration.n_tables; i++)
            if (ti[i].oid[0] && !ti[i].owned)
                ps_ctl_buf_printf(&miss, "%sownership of %s (ENABLE ALWAYS needs the owner)",
                                  miss.len ? "; " : "", ti[i].cfg->name);
        if (miss.len)
            ps_check_add(r, PS_CHECK_FAIL, "install privileges", "role %s lacks: %s", user,
                         miss.data);
        else
            ps_check_add(r, PS_CHECK_PASS, "install privileges",
                         "role %s may create the schema, triggers and shadow tables", user);
        ps_ctl_buf_free(&miss);
    }

    /* the daemon connects with the same conninfo, so this role is its role;
     * pg_has_role() is true for a superuser whatever the grants, so ask
     * that first */
    if (super)
        ps_check_add(r, PS_CHECK_PASS, "daemon role",
                     "role %s is a superuser (a non-superuser member of pgshadow_daemon is "
                     "enough)", user);
    else if (daemon_member)
        ps_check_add(r, PS_CHECK_PASS, "daemon role", "role %s is a member of pgshadow_daemon",
                     user);
    else if (missing_roles && strstr(missing_roles, "pgshadow_daemon"))
        ps_check_add(r, PS_CHECK_WARN, "daemon role",
                     "role pgshadow_daemon does not exist yet (install creates it); then "
                     "GRANT pgshadow_daemon TO %s", user);
    else
        ps_check_add(r, PS_CHECK_WARN, "daemon role",
                     "role %s is not a member of pgshadow_daemon: GRANT pgshadow_daemon TO %s",
                     user, user);

    /* ATTACH/DETACH PARTITION fire no row trigger: only the event trigger a
     * superuser install creates notices them */
    ps_ctl_buf parts = {0};
    for (size_t i = 0; i < cfg->migration.n_tables; i++)
        if (ti[i].oid[0] && ti[i].kind == 'p')
            ps_ctl_buf_printf(&parts, "%s%s", parts.len ? ", " : "", ti[i].cfg->name);
    if (parts.len && !super)
        ps_check_add(r, PS_CHECK_WARN, "partition ddl",
                     "%s partitioned; role %s is not a superuser, so install creates no event "
                     "trigger: rows moved by ATTACH/DETACH PARTITION are not captured",
                     parts.data, user);
    else if (parts.len)
        ps_check_add(r, PS_CHECK_PASS, "partition ddl",
                     "%s partitioned; ATTACH/DETACH PARTITION captured by an event trigger",
                     parts.data);
    ps_ctl_buf_free(&parts);
    PQclear(res);
}

static void check_activity(PGconn *conn, const ps_config *cfg, ps_check_report *r,
                           const char *oids)
{
    char detail[2048];
    PGresult *res = q(conn, Q_XACTS, 0, NULL);
    if (!ok(res)) {
        add_query_failure(r, "long transactions", conn, res);
    } else {
        size_t n = (size_t)PQntuples(res);
        int pids[20];
        int64_t ages[20];
        for (size_t i = 0; i < n && i < 20; i++) {
            pids[i] = atoi(PQgetvalue(res, (int)i, 0));
            ages[i] = PQgetisnull(res, (int)i, 1) ? 0 : atoll(PQgetvalue(res, (int)i, 1));
        }
        ps_check_status s = ps_check_decide_long_xacts(n, pids, ages, detail, sizeof(detail));
        ps_check_add(r, s, "long transactions", "%s", detail);
    }
    PQclear(res);

    const char *p[1] = {oids};
    res = q(conn, Q_LOCKS, 1, p);
    if (!ok(res)) {
        add_query_failure(r, "locks on tables", conn, res);
    } else if (PQntuples(res) == 0) {
        ps_check_add(r, PS_CHECK_PASS, "locks on tables", "no conflicting locks held");
    } else {
        ps_ctl_buf all = {0};
        for (int row = 0; row < PQntuples(res); row++)
            ps_ctl_buf_printf(&all, "%spid %s holds %s on %s", row ? "; " : "",
                              PQgetvalue(res, row, 0), PQgetvalue(res, row, 1),
                              PQgetvalue(res, row, 2));
        ps_check_add(r, PS_CHECK_WARN, "locks on tables",
                     "%s (install waits at most " PS_CTL_LOCK_TIMEOUT " per attempt and retries)",
                     all.data);
        ps_ctl_buf_free(&all);
    }
    PQclear(res);

    res = q(conn, Q_REPLICATION, 0, NULL);
    if (!ok(res)) {
        add_query_failure(r, "replication lag", conn, res);
    } else {
        size_t n = (size_t)PQntuples(res);
        int64_t *lags = calloc(n + 1, sizeof(*lags));
        if (!lags)
            abort();
        for (size_t i = 0; i < n; i++)
            lags[i] = ps_check_replay_lag_ms(PQgetisnull(res, (int)i, 0),
                                             atoll(PQgetvalue(res, (int)i, 0)),
                                             is_true(res, (int)i, 1));
        ps_check_status s = ps_check_decide_replication(
            n, lags, cfg->sync.max_replication_lag_ms, detail, sizeof(detail));
        ps_check_add(r, s, "replication lag", "%s", detail);
        free(lags);
    }
    PQclear(res);
}

/* Host-local when libpq went through a unix socket or to a loopback name. */
static bool same_host(PGconn *conn)
{
    const char *h = PQhost(conn);
    if (!h || !*h || h[0] == '/' || h[0] == '@')
        return true;
    return strcmp(h, "localhost") == 0 || strcmp(h, "127.0.0.1") == 0 || strcmp(h, "::1") == 0;
}

static void check_disk(PGconn *conn, ps_check_report *r, const char *oids)
{
    const char *p[1] = {oids};
    int64_t primary = 0;
    const char *how = "pg_total_relation_size";
    PGresult *res = q(conn, Q_SIZE_EXACT, 1, p);
    if (!ok(res)) {
        /* most likely a lock held on a table: do not queue behind it */
        PQclear(res);
        res = q(conn, Q_SIZE_ESTIMATE, 1, p);
        how = "planner statistics; a table was locked";
    }
    if (!ok(res)) {
        add_query_failure(r, "free disk", conn, res);
        PQclear(res);
        return;
    }
    primary = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    int64_t need = ps_check_estimate_need(primary);

    int64_t free_bytes = -1;
    char where[1200];
    res = q(conn, Q_DATA_DIRECTORY, 0, NULL);
    if (!ok(res)) {
        snprintf(where, sizeof(where), "data_directory not readable by this role");
    } else if (!same_host(conn)) {
        snprintf(where, sizeof(where), "the server is on another host");
    } else {
        struct statvfs sv;
        const char *dir = PQgetvalue(res, 0, 0);
        if (statvfs(dir, &sv) == 0) {
            free_bytes = (int64_t)sv.f_bavail * (int64_t)sv.f_frsize;
            snprintf(where, sizeof(where), "statvfs of %s on this host", dir);
        } else {
            snprintf(where, sizeof(where), "statvfs of %s: %s", dir, strerror(errno));
        }
    }
    PQclear(res);
    char detail[2048], size[32];
    ps_check_status s = ps_check_decide_disk(need, free_bytes, where, detail, sizeof(detail));
    ps_check_format_bytes(primary, size, sizeof(size));
    ps_check_add(r, s, "free disk", "%s; primary tables %s (%s)", detail, size, how);
}

/* install replaces the two dashboard views in public: only its own. */
static void check_views(PGconn *conn, ps_check_report *r)
{
    PGresult *res = q(conn, Q_VIEWS, 0, NULL);
    if (!ok(res)) {
        add_query_failure(r, "dashboard views", conn, res);
        PQclear(res);
        return;
    }
    ps_ctl_buf foreign = {0};
    for (int row = 0; row < PQntuples(res); row++) {
        const char *v = PQgetvalue(res, row, 0);
        bool owned = false;
        if (is_true(res, row, 1)) {
            const char *p[1] = {v};
            PGresult *o = q(conn, Q_VIEW_OWNED, 1, p);
            if (!ok(o)) {
                add_query_failure(r, "dashboard views", conn, o);
                PQclear(o);
                continue;
            }
            owned = is_true(o, 0, 0);
            PQclear(o);
        }
        if (!owned)
            ps_ctl_buf_printf(&foreign, "%s%s", foreign.len ? ", " : "", v);
    }
    PQclear(res);
    if (foreign.len)
        ps_check_add(r, PS_CHECK_FAIL, "dashboard views",
                     "%s already exist%s and %s not created by pgshadow: rename or drop, then install",
                     foreign.data, strchr(foreign.data, ',') ? "" : "s",
                     strchr(foreign.data, ',') ? "were" : "was");
    else
        ps_check_add(r, PS_CHECK_PASS, "dashboard views",
                     "public.shadow_migration_dashboard, public.migration_success_metrics: absent "
                     "or pgshadow's own");
    ps_ctl_buf_free(&foreign);
}

static void check_settings(PGconn *conn, ps_check_report *r)
{
    char detail[256];
    PGresult *res = q(conn, Q_SETTINGS, 0, NULL);
    if (!ok(res)) {
        add_query_failure(r, "archive mode", conn, res);
        PQclear(res);
        return;
    }
    ps_check_status s = ps_check_decide_archive_mode(PQgetvalue(res, 0, 0), detail, sizeof(detail));
    ps_check_add(r, s, "archive mode", "%s", detail);
    s = ps_check_decide_wal_level(PQgetvalue(res, 0, 1), detail, sizeof(detail));
    ps_check_add(r, s, "wal level", "%s", detail);
    PQclear(res);
}

int ps_check_run(PGconn *conn, const ps_config *cfg, ps_check_report *r)
{
    char detail[256];
    ps_check_status s = ps_check_decide_server_version(PQserverVersion(conn), detail,
                                                       sizeof(detail));
    ps_check_add(r, s, "server version", "%s", detail);
    if (s == PS_CHECK_FAIL)
        return 0;

    /* a preflight must not itself queue behind the locks it reports */
    PQclear(PQexec(conn, "SET lock_timeout = '1s'"));

    table_info *ti = calloc(cfg->migration.n_tables + 1, sizeof(*ti));
    if (!ti)
        abort();
    check_tables(conn, cfg, r, ti);
    size_t n_missing = 0;
    check_rules(conn, cfg, r, ti, &n_missing);
    check_privileges(conn, cfg, r, ti, n_missing);

    ps_ctl_buf oids = {0};
    ps_ctl_buf_puts(&oids, "{");
    for (size_t i = 0; i < cfg->migration.n_tables; i++)
        if (ti[i].oid[0])
            ps_ctl_buf_printf(&oids, "%s%s", oids.len > 1 ? "," : "", ti[i].oid);
    ps_ctl_buf_puts(&oids, "}");
    check_activity(conn, cfg, r, oids.data);
    check_disk(conn, r, oids.data);
    check_settings(conn, r);
    check_views(conn, r);
    ps_ctl_buf_free(&oids);

    free(ti);
    PQclear(PQexec(conn, "RESET lock_timeout"));
    return 0;
}
