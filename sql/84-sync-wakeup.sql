-- 84-sync-wakeup.sql: the wake-up flag, quarantine retry, replication lag
--
-- Owns: pgshadow.wakeup_arm, quarantine_retry, replication_lag_ms, and what
-- the daemon reads by name: sync_probe, registry_rows.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- ---------------------------------------------------------------------------
-- wakeup_arm
-- ---------------------------------------------------------------------------

-- Arm the migration's wake-up flag: from this commit on, capture triggers
-- NOTIFY pgshadow_changes again (pgshadow--1.sql, pgshadow.wakeup). The
-- daemon calls it when an apply round found the change log empty, and then
-- runs one more apply round: a writer that read "disarmed" before this
-- commit and committed since is caught by that round; one that commits
-- after it is caught by the next NOTIFY of any later write, or at the latest
-- by catchup_interval (docs/sync.md). A finalized migration (89-finalize.sql)
-- has no capture left: its row, which finalize deleted, is not made again.
CREATE OR REPLACE FUNCTION pgshadow.wakeup_arm(p_migration_id text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    INSERT INTO pgshadow.wakeup AS w (migration_id, armed)
    SELECT p_migration_id, true
    WHERE NOT EXISTS (SELECT 1 FROM pgshadow.cutover c
                      WHERE c.migration_id = p_migration_id AND c.status = 'finalized')
    ON CONFLICT (migration_id) DO UPDATE SET armed = true WHERE NOT w.armed
$fn$;

-- ---------------------------------------------------------------------------
-- quarantine_retry, replication_lag_ms
-- ---------------------------------------------------------------------------

-- Re-queue quarantined keys (all when NULL) as 'D' entries ('D' means
-- "check both ways": upsert when the primary row exists, delete when it is
-- gone; an 'I'/'U' entry is never a reason to delete); the next
-- apply_batch re-reads them and removes them from the quarantine when they
-- apply. Returns how many keys were queued; an id that is not quarantined
-- is an error (P0002), so a mistyped id is said, not silently ignored.
CREATE OR REPLACE FUNCTION pgshadow.quarantine_retry(p_quarantine_id bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n integer;
BEGIN
    WITH q AS (
        UPDATE pgshadow.quarantine q SET retry_requested = true
        WHERE p_quarantine_id IS NULL OR q.quarantine_id = p_quarantine_id
        RETURNING q.quarantine_id, q.table_id, q.key
    ), ins AS (
        INSERT INTO pgshadow.change_log (table_id, op, key)
        SELECT q.table_id, 'D', q.key FROM q ORDER BY q.quarantine_id
        RETURNING 1
    )
    SELECT count(*) INTO n FROM ins;
    IF n = 0 AND p_quarantine_id IS NOT NULL THEN
        RAISE EXCEPTION 'pgshadow: no quarantined key %', p_quarantine_id
            USING ERRCODE = 'no_data_found', HINT = 'pgshadowctl quarantine list shows the quarantine ids.';
    END IF;
    IF n > 0 THEN
        INSERT INTO pgshadow.events (what, why, after)
        VALUES ('quarantine_retry', CASE WHEN p_quarantine_id IS NULL THEN 'all' ELSE p_quarantine_id::text END,
                jsonb_build_object('queued', n));
        PERFORM pg_notify('pgshadow_changes', '');
    END IF;
    RETURN n;
END
$fn$;

-- Replay lag of the physical standbys in ms (the largest), 0 without one;
-- NULL when pg_stat_replication hides the lag from this function's owner.
-- Logical walsenders (active on a logical slot) are not standbys.
CREATE OR REPLACE FUNCTION pgshadow.replication_lag_ms()
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE
             WHEN count(*) = 0 THEN 0::bigint
             WHEN bool_and(r.state IS NULL) THEN NULL::bigint
             ELSE coalesce(max(floor(extract(epoch FROM r.replay_lag) * 1000))::bigint, 0)
           END
    FROM pg_stat_replication r
    WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots s
                      WHERE s.active_pid = r.pid AND s.slot_type = 'logical')
$fn$;



-- ---------------------------------------------------------------------------
-- What the daemon reads (src/sync/): its queries live here, the C side calls
-- them by name.
-- ---------------------------------------------------------------------------

-- The replication lag of the standbys (replication_lag_ms) and the age in
-- seconds of the oldest pending change of the migration's tables (NULL when
-- none), via the change log's primary key (table_id, seq): O(tables), never
-- a scan of the log.
CREATE OR REPLACE FUNCTION pgshadow.sync_probe(p_migration_id text)
RETURNS TABLE (replication_lag_ms bigint, oldest_change_age_s float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pgshadow.replication_lag_ms(),
           (SELECT extract(epoch FROM clock_timestamp() - min(l.logged_at))::float8
            FROM pgshadow.tables t
            CROSS JOIN LATERAL (SELECT c.logged_at FROM pgshadow.change_log c
                                WHERE c.table_id = t.table_id ORDER BY c.seq LIMIT 1) l
            WHERE t.migration_id = p_migration_id)
$fn$;

-- The registry of a migration flattened to rows, for the daemon's config vs
-- installed comparison (src/sync/registry.c): kind 'k' a key column, 'p' a
-- column of the primary's current primary key, 'c' a column_map entry with
-- the default expression register_table would store for it; grouped by
-- table, in order. A finalized migration (89-finalize.sql: no table left,
-- by design) is one row of kind 'f', every other column NULL.
CREATE OR REPLACE FUNCTION pgshadow.registry_rows(p_migration_id text)
RETURNS TABLE (schema_name text, table_name text, kind text, name text, expr text, dflt text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT r.schema_name, r.table_name, r.kind, r.name, r.expr, r.dflt FROM (
        SELECT t.schema_name, t.table_name, x.kind, x.o, x.name, x.expr, x.dflt
        FROM pgshadow.tables t CROSS JOIN LATERAL (
            SELECT 'k'::text, u.o, u.k, NULL::text, NULL::text
            FROM unnest(t.key_columns) WITH ORDINALITY u(k, o)
            UNION ALL
            SELECT 'p', k.o, a.attname::text, NULL, NULL
            FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, o)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = to_regclass(format('%I.%I', t.schema_name, t.table_name))
              AND i.indisprimary
            UNION ALL
            SELECT 'c', m.o, m.e ->> 'shadow', m.e ->> 'expr', format('p.%I', m.e ->> 'shadow')
            FROM jsonb_array_elements(t.column_map) WITH ORDINALITY m(e, o)
        ) x(kind, o, name, expr, dflt)
        WHERE t.migration_id = p_migration_id
        UNION ALL
        SELECT NULL, NULL, 'f', 0, NULL, NULL, NULL
        WHERE EXISTS (SELECT 1 FROM pgshadow.cutover c
                      WHERE c.migration_id = p_migration_id AND c.status = 'finalized')
    ) r
    ORDER BY r.schema_name, r.table_name, r.kind, r.o
$fn$;

-- Privileges
REVOKE ALL ON FUNCTION pgshadow.wakeup_arm(text),
                       pgshadow.quarantine_retry(bigint),
                       pgshadow.replication_lag_ms(),
                       pgshadow.sync_probe(text),
                       pgshadow.registry_rows(text)
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.quarantine_retry(bigint), pgshadow.replication_lag_ms(),
                          pgshadow.wakeup_arm(text)
      TO pgshadow_daemon;
GRANT EXECUTE ON FUNCTION pgshadow.quarantine_retry(bigint) TO pgshadow_operator;
GRANT EXECUTE ON FUNCTION pgshadow.replication_lag_ms() TO pgshadow_viewer;
GRANT EXECUTE ON FUNCTION pgshadow.sync_probe(text), pgshadow.registry_rows(text) TO pgshadow_daemon;
