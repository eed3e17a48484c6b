-- 70-dashboard.sql: the two dashboard views in public (shadow_migration_dashboard, migration_success_metrics)
--
-- Owns: the views pgshadow created (recorded in pgshadow.meta) and _estimate_rows.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- ---------------------------------------------------------------------------
-- Dashboard (public). One poll costs O(registered tables), never O(rows):
-- counts come from the registry (maintained by the daemon) or pg_class
-- estimates; lag from the oldest change_log entry via its primary key;
-- pending and quarantined counts are capped at 10001.
-- ---------------------------------------------------------------------------
-- SECURITY DEFINER: called from the dashboard view by roles that have no
-- USAGE on the primary tables' schema (functions in a view run as the caller).
CREATE OR REPLACE FUNCTION pgshadow._estimate_rows(p_schema text, p_name text)
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(sum(greatest(c.reltuples, 0))::bigint, 0)
    FROM pgshadow._rel_tree(to_regclass(format('%I.%I', p_schema, p_name))) pt
    JOIN pg_class c ON c.oid = pt.relid
    WHERE pt.isleaf
$fn$;

-- Capped counts of a table's pending changes and quarantined keys: exact up
-- to 10000, 10001 meaning "more". Functions, not subqueries of the view,
-- with JIT off: inlined, a backlog's row estimates pushed the whole poll's
-- cost over jit_above_cost and JIT compilation took ~210 ms of a ~230 ms
-- poll (docs/benchmarks.md); 10001 index entries each keep a poll with a
-- backlog well under 10 ms. SECURITY DEFINER: viewers have no access to the
-- change log itself.
CREATE OR REPLACE FUNCTION pgshadow._pending_changes(p_table_id integer)
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS $fn$
    SELECT count(*) FROM (SELECT 1 FROM pgshadow.change_log l WHERE l.table_id = p_table_id LIMIT 10001) x
$fn$;

CREATE OR REPLACE FUNCTION pgshadow._quarantined_count(p_table_id integer)
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS $fn$
    SELECT count(*) FROM (SELECT 1 FROM pgshadow.quarantine q WHERE q.table_id = p_table_id LIMIT 10001) x
$fn$;

-- The two views live in public, where a database may already have views of
-- these names (the seed's own). pgshadow replaces and drops only views it
-- created itself, as recorded in pgshadow.meta ('created_view:<name>').
DO $views$
DECLARE
    v text;
BEGIN
    FOREACH v IN ARRAY ARRAY['public.shadow_migration_dashboard', 'public.migration_success_metrics'] LOOP
        IF to_regclass(v) IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM pgshadow.meta WHERE key = 'created_view:' || v) THEN
            RAISE EXCEPTION 'pgshadow: % already exists and was not created by pgshadow', v
                USING ERRCODE = 'duplicate_table',
                      HINT = 'Rename or drop it (pgshadow would replace it), then install again.';
        END IF;
        INSERT INTO pgshadow.meta (key, value) VALUES ('created_view:' || v, 'install')
        ON CONFLICT (key) DO NOTHING;
    END LOOP;
END
$views$;

CREATE OR REPLACE VIEW public.shadow_migration_dashboard AS
SELECT d.table_name,
       d.primary_count,
       d.shadow_count,
       d.synced_count,
       d.diverged_count,
       -- A table whose backfill has not finished is never reported as
       -- synced, whatever the (possibly stale) estimates say: before the
       -- first chunk 0, while copying the copied share (capped below 100).
       CASE WHEN d.backfill_state = 'pending' THEN 0.00
            WHEN d.backfill_state <> 'done' THEN
                 CASE WHEN coalesce(d.backfill_total, 0) = 0 THEN 0.00
                      ELSE round(least(99.99, d.backfill_rows * 100.0 / d.backfill_total), 2) END
            WHEN d.primary_count = 0 THEN 100.00
            ELSE round(least(100, d.shadow_count * 100.0 / d.primary_count), 2)
       END::numeric(5,2) AS sync_percentage,
       d.sync_lag_seconds,
       d.pending_changes,
       d.quarantined_count,
       CASE WHEN NOT d.capture_enabled THEN 'capture_off'
            WHEN d.backfill_state <> 'done' THEN 'backfill_' || d.backfill_state
            WHEN d.quarantined_count > 0 THEN 'quarantine'
            WHEN d.diverged_count > 0 THEN 'diverged'
            WHEN d.pending_changes > 0 THEN 'syncing'
            ELSE 'in_sync'
       END AS status,
       d.count_source,
       d.schema_name,
       d.shadow_name,
       d.migration_id,
       d.backfill_state,
       d.backfill_rows,
       d.read_percent,
       d.last_applied_at,
       d.last_verify_at,
       d.capture_enabled
FROM (
    SELECT t.table_name,
           t.schema_name,
           t.shadow_name,
           t.migration_id,
           t.backfill_state,
           t.backfill_rows,
           t.backfill_total,
           t.last_applied_at,
           t.last_verify_at,
           coalesce(t.primary_rows, pgshadow._estimate_rows(t.schema_name, t.table_name)) AS primary_count,
           coalesce(t.shadow_rows, pgshadow._estimate_rows(t.schema_name, t.shadow_name)) AS shadow_count,
           coalesce(t.synced_rows, 0) AS synced_count,
           t.diverged_rows AS diverged_count,
           CASE WHEN t.primary_rows IS NOT NULL AND t.shadow_rows IS NOT NULL
                THEN 'exact' ELSE 'estimate' END AS count_source,
           -- Age of the oldest pending change: its commit time when
           -- track_commit_timestamp is on, else the time it was written
           -- (docs/database.md: a long transaction shows its age at commit).
           coalesce(round(greatest(0, extract(epoch FROM clock_timestamp() -
               (SELECT coalesce(CASE WHEN current_setting('track_commit_timestamp') = 'on'
                                     THEN pg_xact_commit_timestamp(l.xmin) END, l.logged_at)
                FROM pgshadow.change_log l
                WHERE l.table_id = t.table_id ORDER BY l.seq LIMIT 1)))::numeric, 3), 0) AS sync_lag_seconds,
pgshadow._pending_changes(t.table_id) AS pending_changes,
           pgshadow._quarantined_count(t.table_id) AS quarantined_count,
           coalesce((SELECT cs.enabled FROM pgshadow.capture_switch cs WHERE cs.table_id = t.table_id), false)
               AS capture_enabled,
           pgshadow.read_percent(t.table_name) AS read_percent
    FROM pgshadow.tables t
) d;

-- The seed's success metrics and thresholds over the dashboard, one row per
-- migration (GROUP BY migration_id): two migrations in one database each get
-- their own verdict, never one over the other's tables. With one migration
-- this is the seed's single row. A migration with no registered table has no
-- row. The columns after count_source are pgshadow's, appended so the seed's
-- stay where they were: the migration, whether every table's backfill is
-- done and its capture on, and how many tables the row covers. Whoever
-- needs one migration's verdict filters on migration_id (pgshadowd does,
-- src/monitor/poller.c); the filter reaches pgshadow.tables, so a poll
-- still costs O(that migration's tables).
CREATE OR REPLACE VIEW public.migration_success_metrics AS
SELECT round(avg(sync_percentage), 2) AS avg_sync_percentage,
       round(avg(sync_lag_seconds), 3) AS avg_sync_lag_seconds,
       sum(diverged_count)::bigint AS total_diverged_records,
       CASE
         -- capture off: the shadow is going stale, whatever the counts say
         WHEN NOT bool_and(capture_enabled)
           THEN 'ROLLBACK_RECOMMENDED'
         WHEN avg(sync_percentage) >= 99 AND avg(sync_lag_seconds) <= 30 AND sum(diverged_count) <= 5
              AND bool_and(backfill_state = 'done') AND sum(quarantined_count) = 0
           THEN 'READY_FOR_CUTOVER'
         -- quarantined rows are not in the shadow: look at them first
         WHEN sum(quarantined_count) > 0
           THEN 'MONITORING_REQUIRED'
         -- a backfill still copying is work in progress, not a reason to roll back
         WHEN avg(sync_percentage) >= 95 OR bool_or(backfill_state <> 'done')
           THEN 'MONITORING_REQUIRED'
         ELSE 'ROLLBACK_RECOMMENDED'
       END AS migration_status,
       clock_timestamp() AS last_updated,
       max(sync_lag_seconds) AS max_sync_lag_seconds,
       sum(pending_changes)::bigint AS total_pending_changes,
       sum(quarantined_count)::bigint AS total_quarantined,
       min(sync_percentage) AS min_sync_percentage,
       CASE WHEN bool_and(count_source = 'exact') THEN 'exact' ELSE 'estimate' END AS count_source,
       migration_id,
       bool_and(backfill_state = 'done') AS all_backfill_done,
       bool_and(capture_enabled) AS all_capture_enabled,
       count(*)::integer AS table_count
FROM public.shadow_migration_dashboard
GROUP BY migration_id;

-- Privileges
REVOKE ALL ON FUNCTION pgshadow._estimate_rows(text, text),
                       pgshadow._pending_changes(integer),
                       pgshadow._quarantined_count(integer)
       FROM PUBLIC;
GRANT SELECT ON public.shadow_migration_dashboard, public.migration_success_metrics
      TO pgshadow_viewer, pgshadow_daemon;
GRANT EXECUTE ON FUNCTION pgshadow._estimate_rows(text, text), pgshadow._pending_changes(integer),
                          pgshadow._quarantined_count(integer)
      TO pgshadow_viewer, pgshadow_daemon;
