-- 83-sync-backfill.sql: the backfill: existing rows -> shadow, in key-range
-- chunks that several connections copy at once, resumable, reconciling
--
-- Owns: pgshadow.backfill_ranges' rows, backfill_plan, backfill_claim,
-- backfill_chunk (the daemon's worker pool calls them), backfill_step (one
-- connection: plan, claim and copy in one call), and their helpers.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.
--
-- Why chunks may run beside apply without the sync lock (docs/sync.md
-- "Backfill"): a chunk first registers the key interval it is about to copy
-- (backfill_claim, committed), then copies it in a second transaction whose
-- snapshot is therefore newer than the registration (backfill_chunk), which
-- ends the registration in the same commit. apply_batch leaves in the change
-- log every entry whose key lies in a registered interval (it takes its
-- entries first, then reads the registrations), so no change newer than a
-- chunk's snapshot is consumed before that chunk commits: whatever a chunk
-- writes stale, a later apply overwrites. Chunks of one table copy disjoint
-- intervals. Writers are never blocked: no row of the primary is locked.

-- ---------------------------------------------------------------------------
-- Starting a table's copy, and finishing it
-- ---------------------------------------------------------------------------

-- Where to cut table p_table_id (owner p_owner, about p_total rows) into
-- p_ranges key ranges for the chunk engine (the backfill's copy and verify's
-- passes): the cut keys, ascending in the key's own order (encoded keys, as
-- text of a text[]); none for under 100 rows a range (one range then). The
-- sample: every row of a table under 100,000 rows (cheap, and exact
-- quantiles); else TABLESAMPLE SYSTEM (whole pages, not the table read
-- twice) of enough pages for about 64 rows a range AND at least 16 pages a
-- range, since the rows of one page are neighbours and a few pages give
-- clustered cut points; taken again at ten times the fraction when it came
-- back too small (a sample is random). Range i is (key i-1, key i].
CREATE OR REPLACE FUNCTION pgshadow._sync_cut_keys(p_table_id integer, p_owner oid, p_ranges integer,
                                                   p_total bigint)
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t        pgshadow.tables;
    v_sample text[];
    v_keys   text[] := '{}';
    v_n      integer;
    v_lo     text;
    v_pct    float8;
BEGIN
    SELECT r.* INTO t FROM pgshadow.tables r WHERE r.table_id = p_table_id;
    IF p_ranges <= 1 OR coalesce(p_total, 0) < 100::bigint * p_ranges THEN
        RETURN v_keys;
    END IF;
    IF p_total < 100000 THEN
        v_pct := 100;
    ELSE
        v_pct := least(100.0, greatest(
            100.0 * 64 * p_ranges / p_total,
            100.0 * 16 * p_ranges / greatest(1, (SELECT c.relpages FROM pg_class c
                                                 WHERE c.oid = to_regclass(format('%I.%I', t.schema_name, t.table_name)))),
            0.01));
    END IF;
    FOR attempt IN 1 .. 2 LOOP
        SELECT array_agg(x::text ORDER BY o) INTO v_sample
        FROM pgshadow._sync_run(p_owner, (pgshadow._sync_chunk_sql(t.table_id)).bf_sample_sql,
                                ARRAY[v_pct::text]) WITH ORDINALITY AS s(x, o);
        v_n := coalesce(cardinality(v_sample), 0);
        EXIT WHEN v_n >= 2 * p_ranges OR v_pct >= 100;
        v_pct := least(100.0, v_pct * 10);
    END LOOP;
    IF v_n >= 2 * p_ranges THEN
        FOR i IN 1 .. p_ranges - 1 LOOP
            v_lo := v_sample[(i::bigint * v_n / p_ranges)::integer];
            IF NOT v_lo = ANY (v_keys) THEN
                v_keys := v_keys || v_lo;
            END IF;
        END LOOP;
    END IF;
    RETURN v_keys;
END
$fn$;

-- The end of the next chunk of a range (p_from, p_hi] (NULL: open) of
-- table p_table_id: the p_rows-th key after p_from (p_bound_sql, its
-- bf_bound_sql, run as p_owner), or p_hi when that comes first or the range
-- has fewer keys left; NULL: to the table's end. The backfill's claims and
-- verify's chunks.
CREATE OR REPLACE FUNCTION pgshadow._sync_chunk_bound(p_table_id integer, p_owner oid, p_bound_sql text,
                                                      p_from text[], p_hi text[], p_rows integer)
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_bound text[];
    v_le    boolean;
BEGIN
    SELECT x INTO v_bound FROM pgshadow._sync_run(p_owner, p_bound_sql, p_from, ARRAY[p_rows::text]) x;
    IF p_hi IS NOT NULL THEN
        IF v_bound IS NOT NULL THEN
            EXECUTE (pgshadow._sync_chunk_sql(p_table_id)).key_le_sql INTO v_le USING v_bound, p_hi;
        END IF;
        IF v_bound IS NULL OR NOT v_le THEN
            v_bound := p_hi;
        END IF;
    END IF;
    RETURN v_bound;
END
$fn$;

-- The first step of table p_table_id's copy (the caller holds the sync
-- lock): the estimate, the reconcile decision (a shadow that already holds
-- rows is reconciled, or emptied when no reads are routed to it), and the
-- key ranges: p_ranges ranges cut at keys sampled from the primary
-- (TABLESAMPLE SYSTEM, so the table is not read twice), one range for a
-- small table or p_ranges = 1. A table whose copy was running before ranges
-- existed (an older release's single cursor) gets one range from its cursor.
-- Returns false, changing nothing, while a resync waits for transactions
-- older than it (_sync_old_xacts; one resync_waiting event).
CREATE OR REPLACE FUNCTION pgshadow._backfill_begin(p_table_id integer, p_ranges integer)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t         pgshadow.tables;
    st        record;
    v_who     text;
    v_rec     boolean;
    v_emptied boolean := false;
    v_state   text;
    v_keys    text[];
BEGIN
    SELECT r.* INTO t FROM pgshadow.tables r WHERE r.table_id = p_table_id FOR UPDATE;
    IF t.backfill_state = 'done'
       OR EXISTS (SELECT 1 FROM pgshadow.backfill_ranges b WHERE b.table_id = p_table_id) THEN
        RETURN true;
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
        RETURN false;
    END IF;
    SELECT * INTO st FROM pgshadow._sync_statements(t.table_id);
    PERFORM pgshadow._sync_refresh(t.table_id, st.hash_expr, st.column_map, st.key_types);

    IF t.backfill_state = 'running' AND t.backfill_started_at IS NOT NULL THEN
        -- an older release's copy in progress: one range from its cursor
        INSERT INTO pgshadow.backfill_ranges (table_id, range_no, lo, hi, rows)
        VALUES (t.table_id, 1, t.backfill_cursor, NULL, t.backfill_rows);
        RETURN true;
    END IF;

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

    -- The ranges (_sync_cut_keys): one more than the cut keys.
    v_keys := pgshadow._sync_cut_keys(t.table_id, st.owner, p_ranges, t.backfill_total);
    INSERT INTO pgshadow.backfill_ranges (table_id, range_no, lo, hi)
    SELECT t.table_id, o::integer,
           CASE WHEN o > 1 THEN (v_keys[o - 1])::text[] END,
           CASE WHEN o <= cardinality(v_keys) THEN (v_keys[o])::text[] END
    FROM generate_series(1, cardinality(v_keys) + 1) o;

    UPDATE pgshadow.tables r
    SET backfill_state = 'running', backfill_total = t.backfill_total, backfill_reconcile = v_rec,
        backfill_started_at = now(), backfill_cursor = NULL, backfill_rows = 0
    WHERE r.table_id = t.table_id;
    INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
    VALUES (t.migration_id, t.table_name, 'pgshadowd', 'backfill_started', NULL,
            jsonb_build_object('estimated_rows', t.backfill_total, 'ranges', cardinality(v_keys) + 1,
                               'reconcile', v_rec, 'shadow_emptied', v_emptied));
    RETURN true;
END
$fn$;

-- Finish table p_table_id once its last range is copied: count the shadow
-- (apply keeps the count exact from here with the rows it inserts and
-- deletes); the primary's count is derived, not counted (_sync_primary_rows:
-- a count now would include changes apply has yet to make, which its deltas
-- would then count a second time). The table's quarantined keys, and every
-- 23503 key of the migration, are queued again: a child rejected for a
-- missing parent may apply now, and a row rejected before a resync and
-- written by it leaves the quarantine. Returns (rows, seconds) or NULLs when
-- another caller finished it first.
CREATE OR REPLACE FUNCTION pgshadow._backfill_finish(p_table_id integer, OUT n_rows bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t      pgshadow.tables;
    st     record;
    v_prim bigint;
    v_shad bigint;
BEGIN
    SELECT r.* INTO t FROM pgshadow.tables r WHERE r.table_id = p_table_id FOR UPDATE;
    IF t.backfill_state = 'done' OR EXISTS (SELECT 1 FROM pgshadow.backfill_ranges b
                                           WHERE b.table_id = p_table_id AND NOT b.done) THEN
        n_rows := NULL;
        RETURN;
    END IF;
    SELECT * INTO st FROM pgshadow._sync_statements(t.table_id);
    SELECT x[1]::bigint INTO v_shad FROM pgshadow._sync_run(st.owner, st.count_shadow_sql) x;
    v_prim := pgshadow._sync_primary_rows(t.table_id, st.owner, st.qcount_sql, v_shad);
    UPDATE pgshadow.tables r
    SET backfill_state = 'done', backfill_rows = coalesce(v_prim, v_shad),
        backfill_total = coalesce(v_prim, v_shad), backfill_cursor = NULL, backfill_done_at = now(),
        primary_rows = v_prim, shadow_rows = v_shad, synced_rows = v_shad, counted_at = now(),
        backfill_reconcile = false, backfill_wait_xid = NULL
    WHERE r.table_id = t.table_id;
    DELETE FROM pgshadow.backfill_ranges b WHERE b.table_id = t.table_id;
    INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
    VALUES (t.migration_id, t.table_name, 'pgshadowd', 'backfill_done', NULL,
            jsonb_build_object('primary_rows', v_prim, 'shadow_rows', v_shad,
                               'seconds', round(extract(epoch FROM now() - t.backfill_started_at)::numeric, 3)));
    INSERT INTO pgshadow.change_log (table_id, op, key)
    SELECT q.table_id, 'D', q.key FROM pgshadow.quarantine q
    JOIN pgshadow.tables r ON r.table_id = q.table_id
    WHERE r.migration_id = t.migration_id
      AND (q.sqlstate = '23503' OR q.table_id = t.table_id)
    ORDER BY q.quarantine_id;
    IF FOUND THEN
        PERFORM pg_notify('pgshadow_changes', '');
    END IF;
    n_rows := coalesce(v_prim, v_shad);
END
$fn$;

-- ---------------------------------------------------------------------------
-- The engine's three calls
-- ---------------------------------------------------------------------------

-- Start the copy of every table of the migration that has none yet (under
-- the sync lock, briefly: a shadow may be emptied). One row per table not
-- done: 'waiting' (a resync waits for older transactions), 'running'.
-- Cheap when there is nothing to start: the daemon calls it before claiming.
CREATE OR REPLACE FUNCTION pgshadow.backfill_plan(p_migration_id text, p_ranges integer)
RETURNS TABLE (table_name text, state text, rows_done bigint, rows_total bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex'
SET lock_timeout = '5s'
AS $fn$
#variable_conflict use_column
DECLARE
    r record;
    v_waiting integer[] := '{}';
BEGIN
    IF pgshadow._promoted(p_migration_id) THEN
        RETURN;   -- promoted: its names mean the new tables now (88-promote.sql)
    END IF;
    IF p_ranges IS NULL OR p_ranges < 1 OR p_ranges > 1024 THEN
        RAISE EXCEPTION 'pgshadow: backfill ranges must be 1..1024, not %', p_ranges
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM pgshadow.tables t WHERE t.migration_id = p_migration_id
               AND t.backfill_state <> 'done'
               AND NOT EXISTS (SELECT 1 FROM pgshadow.backfill_ranges b WHERE b.table_id = t.table_id)) THEN
        PERFORM pgshadow._sync_lock(p_migration_id);
        FOR r IN SELECT t.table_id FROM pgshadow.tables t
                 WHERE t.migration_id = p_migration_id AND t.backfill_state <> 'done'
                   AND NOT EXISTS (SELECT 1 FROM pgshadow.backfill_ranges b WHERE b.table_id = t.table_id)
                 ORDER BY t.table_id LOOP
            IF NOT pgshadow._backfill_begin(r.table_id, p_ranges) THEN
                v_waiting := v_waiting || r.table_id;
            END IF;
        END LOOP;
    END IF;
    RETURN QUERY
    SELECT t.table_name, CASE WHEN t.table_id = ANY (v_waiting) THEN 'waiting' ELSE 'running' END,
           t.backfill_rows, greatest(t.backfill_total, t.backfill_rows)
    FROM pgshadow.tables t
    WHERE t.migration_id = p_migration_id AND t.backfill_state <> 'done'
    ORDER BY t.table_id;
END
$fn$;

-- Claim the next chunk: a range not done and not being copied (or whose
-- copier's session is gone), of a table at the smallest foreign-key depth
-- not done (parents first: a child copied before its parent would be
-- rejected row by row), locked with SKIP LOCKED so concurrent callers take
-- different ranges. Its interval (cursor, bound] of about p_rows rows (the
-- bound is the p_rows-th key after the cursor, or the range's end) is
-- registered as in flight for this session. The caller COMMITS, then calls
-- backfill_chunk in a new transaction (see the head of this file). No row
-- when nothing is claimable now (all in flight, a parent waiting, done).
CREATE OR REPLACE FUNCTION pgshadow.backfill_claim(p_migration_id text, p_rows integer)
RETURNS TABLE (table_id integer, range_no integer, table_name text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex'
SET lock_timeout = '5s'
AS $fn$
#variable_conflict use_column
DECLARE
    b       pgshadow.backfill_ranges;
    st      record;
    v_from  text[];
    v_bound text[];
BEGIN
    IF pgshadow._promoted(p_migration_id) THEN
        RETURN;   -- promoted: its names mean the new tables now (88-promote.sql)
    END IF;
    IF p_rows IS NULL OR p_rows < 1 THEN
        RAISE EXCEPTION 'pgshadow: backfill chunk must be positive, not %', p_rows
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the migration's tables not done with their depth, computed once
    WITH d AS MATERIALIZED (
        SELECT t.table_id, t.backfill_state, fd.depth
        FROM pgshadow.tables t JOIN pgshadow._sync_fk_depth(p_migration_id) fd USING (table_id)
        WHERE t.migration_id = p_migration_id AND t.backfill_state <> 'done'
    )
    SELECT x.* INTO b
    FROM pgshadow.backfill_ranges x
    JOIN d ON d.table_id = x.table_id
    WHERE d.backfill_state = 'running' AND d.depth = (SELECT min(depth) FROM d)
      AND NOT x.done
      AND (NOT x.inflight OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = x.inflight_pid
                                                                       AND a.backend_start <= x.claimed_at))
    -- a dead session's claim first (apply leaves its keys' entries until it
    -- is copied), then one table after the other, its ranges in order
    ORDER BY x.inflight DESC, x.table_id, x.range_no
    LIMIT 1
    FOR UPDATE OF x SKIP LOCKED;
    IF b.table_id IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO st FROM pgshadow._sync_statements(b.table_id);
    v_from := coalesce(b.cursor, b.lo);
    v_bound := pgshadow._sync_chunk_bound(b.table_id, st.owner, st.bf_bound_sql, v_from, b.hi, p_rows);
    UPDATE pgshadow.backfill_ranges x
    SET inflight = true, inflight_lo = v_from, inflight_hi = v_bound, inflight_pid = pg_backend_pid(),
        claimed_at = clock_timestamp()
    WHERE x.table_id = b.table_id AND x.range_no = b.range_no;
    RETURN QUERY SELECT b.table_id, b.range_no, t.table_name FROM pgshadow.tables t WHERE t.table_id = b.table_id;
END
$fn$;

-- Copy the interval this session claimed (backfill_claim, committed
-- before): upsert the primary rows of (lo, hi] into the shadow as apply
-- writes them (a row already there and equal is left alone), queue a 'D'
-- for every shadow key there the primary lacks when the table reconciles,
-- move the range's cursor and end the registration, all in this one
-- transaction. Rows the shadow rejects: the chunk is redone row by row and
-- the rejected rows are quarantined (phase backfill). copied = -1 when the
-- claim is no longer this session's (the table was reset by a resync, or
-- the claim was taken over): nothing was done.
CREATE OR REPLACE FUNCTION pgshadow.backfill_chunk(p_table_id integer, p_range_no integer)
RETURNS TABLE (table_name text, copied integer, range_done boolean, table_done boolean,
               rows_done bigint, rows_total bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex'
SET lock_timeout = '5s'
AS $fn$
#variable_conflict use_column
DECLARE
    b     pgshadow.backfill_ranges;
    t     pgshadow.tables;
    n     integer;
    v_fin bigint;
BEGIN
    PERFORM pgshadow._sync_read_committed();
    SET CONSTRAINTS ALL IMMEDIATE;   -- a rejected row is quarantined, never a failed COMMIT
    SELECT x.* INTO b FROM pgshadow.backfill_ranges x
    WHERE x.table_id = p_table_id AND x.range_no = p_range_no FOR UPDATE;
    SELECT r.* INTO t FROM pgshadow.tables r WHERE r.table_id = p_table_id;
    IF b.table_id IS NULL OR NOT b.inflight OR b.inflight_pid <> pg_backend_pid() THEN
        RETURN QUERY SELECT t.table_name, -1, false, false, t.backfill_rows, t.backfill_total;
        RETURN;
    END IF;
    n := pgshadow._backfill_copy(p_table_id, b.inflight_lo, b.inflight_hi);
    range_done := b.inflight_hi IS NULL OR (b.hi IS NOT NULL AND b.inflight_hi = b.hi);
    UPDATE pgshadow.backfill_ranges x
    SET cursor = b.inflight_hi, rows = x.rows + n, done = range_done, inflight = false,
        inflight_lo = NULL, inflight_hi = NULL, inflight_pid = NULL
    WHERE x.table_id = b.table_id AND x.range_no = b.range_no;
    UPDATE pgshadow.tables r SET backfill_rows = r.backfill_rows + n,
                                 backfill_total = greatest(r.backfill_total, r.backfill_rows + n)
    WHERE r.table_id = p_table_id
    RETURNING r.backfill_rows, r.backfill_total INTO rows_done, rows_total;
    table_done := false;
    IF range_done THEN
        v_fin := pgshadow._backfill_finish(p_table_id);
        IF v_fin IS NOT NULL THEN
            table_done := true;
            rows_done := v_fin;
            rows_total := v_fin;
        END IF;
    END IF;
    table_name := t.table_name;
    copied := n;
    RETURN NEXT;
END
$fn$;

-- The copy of (p_lo, p_hi] of table p_table_id (NULL: unbounded), as
-- described above: the upsert, its row-by-row fallback, and the reconcile.
CREATE OR REPLACE FUNCTION pgshadow._backfill_copy(p_table_id integer, p_lo text[], p_hi text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t        pgshadow.tables;
    st       record;
    n        integer;
    v_n      integer;
    v_key    text[];
    v_state  text;
    v_msg    text;
    v_detail text;
BEGIN
    SELECT r.* INTO t FROM pgshadow.tables r WHERE r.table_id = p_table_id;
    SELECT * INTO st FROM pgshadow._sync_statements(t.table_id);
    BEGIN
        SELECT x[1]::integer INTO n FROM pgshadow._sync_run(st.owner, st.bf_copy_sql, p_lo, p_hi) x;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
        IF pgshadow._sync_transient(v_state) THEN
            RAISE;
        END IF;
        -- one row at a time; rejected rows go to the quarantine
        n := 0;
        FOR v_key IN SELECT x FROM pgshadow._sync_run(st.owner, st.bf_keys_sql, p_lo, p_hi) x LOOP
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
    -- Reconcile: the shadow keys of this interval the primary does not have.
    IF t.backfill_reconcile THEN
        INSERT INTO pgshadow.change_log (table_id, op, key)
        SELECT t.table_id, 'D', x FROM pgshadow._sync_run(st.owner, st.bf_extra_sql, p_lo, p_hi) x;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        IF v_n > 0 THEN
            PERFORM pg_notify('pgshadow_changes', '');
        END IF;
    END IF;
    RETURN n;
END
$fn$;

-- ---------------------------------------------------------------------------
-- backfill_step: the same on ONE connection, in one call
-- ---------------------------------------------------------------------------
-- Plan (one range per table), claim and copy one chunk of p_chunk rows in
-- this one transaction, holding the sync lock like apply, so no
-- registration is needed (apply waits for it instead). The first table not
-- done, parents first. A resync waiting for older transactions returns its
-- table with copied 0 after 50 ms, before the sync lock, so apply goes on;
-- no row when every table is done.
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
    p record;
    c record;
    k record;
BEGIN
    IF pgshadow._promoted(p_migration_id) THEN
        RETURN;   -- promoted: its names mean the new tables now (88-promote.sql)
    END IF;
    IF p_chunk IS NULL OR p_chunk < 1 THEN
        RAISE EXCEPTION 'pgshadow: backfill chunk must be positive, not %', p_chunk
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO p FROM pgshadow.backfill_plan(p_migration_id, 1) x LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM pgshadow._sync_lock(p_migration_id);
    SELECT * INTO c FROM pgshadow.backfill_claim(p_migration_id, p_chunk);
    IF NOT FOUND THEN
        -- nothing claimable: the first table waits for older transactions
        PERFORM pg_sleep(0.05);   -- the daemon calls again at once; apply goes first
        table_name := p.table_name; copied := 0; done := false;
        rows_done := p.rows_done; rows_total := p.rows_total;
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO k FROM pgshadow.backfill_chunk(c.table_id, c.range_no);
    table_name := k.table_name; copied := greatest(k.copied, 0); done := k.table_done;
    rows_done := k.rows_done; rows_total := k.rows_total;
    RETURN NEXT;
END
$fn$;

-- Privileges
REVOKE ALL ON FUNCTION pgshadow._sync_cut_keys(integer, oid, integer, bigint),
                       pgshadow._sync_chunk_bound(integer, oid, text, text[], text[], integer),
                       pgshadow._backfill_begin(integer, integer),
                       pgshadow._backfill_finish(integer),
                       pgshadow._backfill_copy(integer, text[], text[]),
                       pgshadow.backfill_plan(text, integer),
                       pgshadow.backfill_claim(text, integer),
                       pgshadow.backfill_chunk(integer, integer),
                       pgshadow.backfill_step(text, integer)
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.backfill_plan(text, integer),
                          pgshadow.backfill_claim(text, integer),
                          pgshadow.backfill_chunk(integer, integer),
                          pgshadow.backfill_step(text, integer)
      TO pgshadow_daemon;
