-- 83-sync-backfill.sql: backfill_step: existing rows -> shadow, resumable, reconciling
--
-- Owns: pgshadow.backfill_step (the daemon calls it).
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- ---------------------------------------------------------------------------
-- backfill_step
-- ---------------------------------------------------------------------------
-- One chunk of the first table (parents first) whose copy is not done:
-- upsert the next p_chunk primary rows in key order into the shadow, as
-- apply writes them (a row already there and equal is left alone), and
-- persist the cursor in the same transaction. A table whose shadow held
-- rows when its copy started (a resync, a shadow left from an earlier
-- install) is also reconciled: the shadow keys of each chunk's range that
-- the primary lacks are queued as 'D' entries, which apply deletes (with
-- its foreign-key ordering and quarantine). When no reads are routed to it
-- such a shadow is emptied first if it can be (no foreign key points at
-- it, its lock is free), which is cheaper than deleting row by row.
-- A resync waits, copying nothing, while a transaction older than it is
-- open (_sync_old_xacts): it returns the table with copied 0.
CREATE OR REPLACE FUNCTION pgshadow.backfill_step(p_migration_id text, p_chunk integer)
RETURNS TABLE (table_name text, copied integer, done boolean, rows_done bigint, rows_total bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex'
SET lock_timeout = '5s'
AS $fn$
#variable_conflict use_column
DECLARE
    t        pgshadow.tables;
    st       record;
    v_bound  text[];
    v_key    text[];
    v_res    text[];
    n        integer;
    v_n      integer;
    v_state  text;
    v_msg    text;
    v_detail text;
    v_prim   bigint;
    v_shad   bigint;
    v_who    text;
    v_rec    boolean;
    v_emptied boolean := false;
BEGIN
    IF p_chunk IS NULL OR p_chunk < 1 THEN
        RAISE EXCEPTION 'pgshadow: backfill chunk must be positive, not %', p_chunk
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SET CONSTRAINTS ALL IMMEDIATE;   -- a rejected row is quarantined, never a failed COMMIT

    -- The first table not done, parents first. A resync that must wait does
    -- so here, before the sync lock, so apply goes on meanwhile.
    SELECT r.* INTO t
    FROM pgshadow.tables r JOIN pgshadow._sync_fk_depth(p_migration_id) d USING (table_id)
    WHERE r.migration_id = p_migration_id AND r.backfill_state <> 'done'
    ORDER BY d.depth, r.table_id
    LIMIT 1;
    IF t.table_id IS NULL THEN
        RETURN;
    END IF;
    v_who := pgshadow._sync_old_xacts(t.backfill_wait_xid);
    IF v_who IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pgshadow.events e WHERE e.what = 'resync_waiting'
                       AND e.table_name = t.table_name AND e.migration_id = t.migration_id
                       AND e.after ->> 'wait_xid' = t.backfill_wait_xid::text) THEN
            INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
            VALUES (t.migration_id, t.table_name, 'pgshadowd', 'resync_waiting',
                    format('waiting for %s, older than the resync, to end', v_who),
                    jsonb_build_object('wait_xid', t.backfill_wait_xid::text, 'blocker', v_who));
        END IF;
        PERFORM pg_sleep(0.05);   -- the daemon calls again at once; apply goes first
        table_name := t.table_name; copied := 0; done := false;
        rows_done := t.backfill_rows; rows_total := t.backfill_total;
        RETURN NEXT;
        RETURN;
    END IF;

    PERFORM pgshadow._sync_lock(p_migration_id);
    SELECT r.* INTO t FROM pgshadow.tables r WHERE r.table_id = t.table_id;
    IF t.backfill_state = 'done' THEN
        -- done by another caller meanwhile: nothing copied by this call
        table_name := t.table_name; copied := 0; done := true;
        rows_done := t.backfill_rows; rows_total := t.backfill_total;
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO st FROM pgshadow._sync_statements(t.table_id);
    PERFORM pgshadow._sync_refresh(t.table_id, st.hash_expr, st.column_map, st.key_types);

    IF t.backfill_state = 'pending' OR t.backfill_started_at IS NULL THEN
        t.backfill_total := pgshadow._estimate_rows(t.schema_name, t.table_name);
        IF t.backfill_total = 0 THEN
            -- never analyzed (or empty): a count is cheap either way
            SELECT x[1]::bigint INTO t.backfill_total FROM pgshadow._sync_run(st.owner, st.count_primary_sql) x;
        END IF;
        -- A shadow that already holds rows is reconciled, not trusted.
        v_rec := t.backfill_reconcile;
        IF NOT v_rec THEN
            SELECT x[1]::boolean INTO v_rec FROM pgshadow._sync_run(st.owner, st.exists_sql) x;
        END IF;
        IF v_rec AND pgshadow.read_percent(t.table_name) = 0 THEN
            BEGIN
                PERFORM pgshadow._sync_run(st.owner, st.truncate_sql);
                v_rec := false;
                v_emptied := true;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
                IF left(v_state, 2) IN ('08', '57', 'XX') THEN
                    RAISE;
                END IF;
                -- referenced by a foreign key, lock not free, ...: reconcile row by row
            END;
        END IF;
        t.backfill_reconcile := v_rec;
        t.backfill_started_at := now();
        t.backfill_cursor := NULL;
        t.backfill_rows := 0;
        INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
        VALUES (t.migration_id, t.table_name, 'pgshadowd', 'backfill_started', NULL,
                jsonb_build_object('estimated_rows', t.backfill_total, 'chunk', p_chunk,
                                   'reconcile', v_rec, 'shadow_emptied', v_emptied));
    END IF;

    -- (cursor, bound] holds p_chunk rows; no bound: the rest of the table.
    SELECT x INTO v_bound FROM pgshadow._sync_run(st.owner, st.bf_bound_sql, t.backfill_cursor,
                                                  ARRAY[p_chunk::text]) x;
    BEGIN
        SELECT x[1]::integer INTO n FROM pgshadow._sync_run(st.owner, st.bf_copy_sql, t.backfill_cursor, v_bound) x;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
        IF pgshadow._sync_transient(v_state) THEN
            RAISE;
        END IF;
        -- one row at a time; rejected rows go to the quarantine
        n := 0;
        FOR v_key IN SELECT x FROM pgshadow._sync_run(st.owner, st.bf_keys_sql, t.backfill_cursor, v_bound) x LOOP
            BEGIN
                SELECT x[1]::integer INTO v_n FROM pgshadow._sync_run(st.owner, st.bf_row_sql, v_key) x;
                n := n + v_n;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT,
                                        v_detail = PG_EXCEPTION_DETAIL;
                IF pgshadow._sync_transient(v_state) THEN
                    RAISE;
                END IF;
                PERFORM pgshadow._sync_quarantine(t.table_id, v_key, v_state, v_msg, nullif(v_detail, ''),
                                                  'backfill');
            END;
        END LOOP;
    END;
    -- Reconcile: the shadow keys of this range the primary does not have.
    IF t.backfill_reconcile THEN
        INSERT INTO pgshadow.change_log (table_id, op, key)
        SELECT t.table_id, 'D', x FROM pgshadow._sync_run(st.owner, st.bf_extra_sql, t.backfill_cursor, v_bound) x;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        IF v_n > 0 THEN
            PERFORM pg_notify('pgshadow_changes', '');
        END IF;
    END IF;

    copied := n;
    table_name := t.table_name;
    IF v_bound IS NOT NULL THEN
        t.backfill_rows := t.backfill_rows + p_chunk;
        UPDATE pgshadow.tables r
        SET backfill_state = 'running', backfill_cursor = v_bound, backfill_rows = t.backfill_rows,
            backfill_total = greatest(t.backfill_total, t.backfill_rows),
            backfill_started_at = t.backfill_started_at, backfill_reconcile = t.backfill_reconcile
        WHERE r.table_id = t.table_id;
        done := false;
        rows_done := t.backfill_rows;
        rows_total := greatest(t.backfill_total, t.backfill_rows);
    ELSE
        -- Finished: count the shadow (apply keeps the count exact from
        -- here with the rows it inserts and deletes). The primary's count
        -- is derived, not counted (_sync_primary_rows): a count of the
        -- primary now would include changes apply has yet to make, which
        -- its deltas would then count a second time; derived, it is exact
        -- whenever the change log is drained.
        SELECT x[1]::bigint INTO v_shad FROM pgshadow._sync_run(st.owner, st.count_shadow_sql) x;
        v_prim := pgshadow._sync_primary_rows(t.table_id, st.owner, st.qcount_sql, v_shad);
        UPDATE pgshadow.tables r
        SET backfill_state = 'done', backfill_rows = coalesce(v_prim, v_shad),
            backfill_total = coalesce(v_prim, v_shad),
            backfill_started_at = t.backfill_started_at, backfill_done_at = now(),
            primary_rows = v_prim, shadow_rows = v_shad, synced_rows = v_shad, counted_at = now(),
            backfill_reconcile = false, backfill_wait_xid = NULL
        WHERE r.table_id = t.table_id;
        INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
        VALUES (t.migration_id, t.table_name, 'pgshadowd', 'backfill_done', NULL,
                jsonb_build_object('primary_rows', v_prim, 'shadow_rows', v_shad,
                                   'seconds', round(extract(epoch FROM now() - t.backfill_started_at)::numeric, 3)));
        -- Children applied while this parent was still being copied may
        -- have been rejected for a missing parent row: try them again; and
        -- every key this table has in the quarantine, whatever its error:
        -- the copy may have written rows rejected before it (a resync), and
        -- apply clears those it can write now.
        INSERT INTO pgshadow.change_log (table_id, op, key)
        SELECT q.table_id, 'D', q.key FROM pgshadow.quarantine q
        JOIN pgshadow.tables r ON r.table_id = q.table_id
        WHERE r.migration_id = p_migration_id
          AND (q.sqlstate = '23503' OR q.table_id = t.table_id)
        ORDER BY q.quarantine_id;
        IF FOUND THEN
            PERFORM pg_notify('pgshadow_changes', '');
        END IF;
        done := true;
        rows_done := coalesce(v_prim, v_shad);
        rows_total := coalesce(v_prim, v_shad);
    END IF;
    RETURN NEXT;
END
$fn$;

-- Privileges
REVOKE ALL ON FUNCTION pgshadow.backfill_step(text, integer)
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.backfill_step(text, integer) TO pgshadow_daemon;
