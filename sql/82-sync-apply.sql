-- 82-sync-apply.sql: apply_batch: change log -> shadow
--
-- Owns: pgshadow.apply_batch (the daemon calls it).
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- ---------------------------------------------------------------------------
-- apply_batch
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgshadow.apply_batch(p_migration_id text, p_limit integer,
                                                p_on_error text DEFAULT 'quarantine')
RETURNS TABLE (taken integer, upserted integer, deleted integer, quarantined integer,
               truncated integer, halted text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex'
SET lock_timeout = '5s'
AS $fn$
#variable_conflict use_column
DECLARE
    v_ids      integer[];   -- the migration's tables, parents first
    v_rowmode  boolean[];
    v_tids     integer[];   -- taken entries: table_id[i], seq[i]
    v_seqs     bigint[];
    v_in       integer[];   -- tables with entries in the batch
    v_trunc    integer[];   -- tables with a 'T' entry
    -- per table position (statements and keys of the tables in the batch)
    v_owner    oid[];
    v_del      text[];
    v_ups      text[];
    v_unstick  text[];
    v_qclear   text[];
    v_qcount   text[];
    v_all      text[];      -- encoded keys of every group, as text of a text[]
    v_maydel   text[];      -- those that may have vanished
    v_halted   integer[] := '{}';
    v_why      text[] := '{}';
    v_failed   text[];      -- quarantined encoded keys, as text of a text[]
    v_dn       integer[];   -- shadow rows deleted
    v_un       integer[];   -- rows upserted
    v_in_n     integer[];   -- rows inserted (for the counts)
    v_keys     text[];
    v_defer    integer[];   -- table positions whose delete failed: retried after the upserts
    v_written  integer[];   -- tables with shadow rows written by this batch
    v_deferred bigint[] := '{}';  -- taken entries left in the log: a chunk is copying their key
    v_live     bigint[];
    v_parse_q  integer := 0;
    v_state    text;
    v_msg      text;
    v_n0       bigint;
    v_incr     boolean;
    v_o        oid;
    v_csql     text;
    v_qsql     text;
    i          integer;
    n          integer;
    ins        integer;
    r          record;
BEGIN
    IF pgshadow._promoted(p_migration_id) THEN
        -- promoted: its names mean the new tables now (88-promote.sql), and
        -- the change log holds their changes for reverse sync to the legacy
        -- tables (90-revert.sql; nothing when promoted without it). One row
        -- (the daemon reads exactly one).
        RETURN QUERY SELECT * FROM pgshadow._reverse_apply(p_migration_id, p_limit);
        RETURN;
    END IF;
    IF p_on_error IS NULL OR p_on_error NOT IN ('quarantine', 'halt') THEN
        RAISE EXCEPTION 'pgshadow: on_apply_error must be quarantine or halt, not %', p_on_error
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'pgshadow: apply_batch limit must be positive, not %', p_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT array_agg(t.table_id ORDER BY d.depth, t.table_id),
           array_agg(t.capture_mode = 'row' ORDER BY d.depth, t.table_id)
    INTO v_ids, v_rowmode
    FROM pgshadow.tables t JOIN pgshadow._sync_fk_depth(p_migration_id) d USING (table_id)
    WHERE t.migration_id = p_migration_id
      AND NOT pgshadow._rls_forced(t.table_id);   -- held back (05-rules.sql): the others go on
    IF v_ids IS NULL THEN
        RETURN QUERY SELECT 0, 0, 0, 0, 0, NULL::text;
        RETURN;
    END IF;

    -- Deferred foreign keys (finish_install copies DEFERRABLE INITIALLY
    -- DEFERRED ones) would be checked at COMMIT, outside every handler: a
    -- child taken without its parent would fail the whole call, every time.
    -- Checked at once, the row is rejected inside its sub-transaction.
    SET CONSTRAINTS ALL IMMEDIATE;
    PERFORM pgshadow._sync_lock(p_migration_id);

    -- Take: the oldest p_limit entries of the migration's tables, by seq.
    -- Each table's prefix comes from its (table_id, seq) index; the merge
    -- keeps the global order, so a transaction's entries that a parent row
    -- needs (its insert, a child's delete) come no later than the child's.
    -- No row locks: _sync_lock already makes this the only applier.
    WITH took AS (
        SELECT x.table_id, x.seq, x.op
        FROM unnest(v_ids) AS t(id)
        CROSS JOIN LATERAL (SELECT c.table_id, c.seq, c.op FROM pgshadow.change_log c
                            WHERE c.table_id = t.id ORDER BY c.seq LIMIT p_limit) x
        ORDER BY x.seq LIMIT p_limit
    )
    SELECT coalesce(array_agg(took.table_id), '{}'), coalesce(array_agg(took.seq), '{}'),
           coalesce(array_agg(DISTINCT took.table_id), '{}'),
           coalesce(array_agg(DISTINCT took.table_id) FILTER (WHERE took.op = 'T'), '{}')
    INTO v_tids, v_seqs, v_in, v_trunc
    FROM took;

    taken := cardinality(v_seqs);
    upserted := 0;
    deleted := 0;
    quarantined := 0;
    truncated := 0;
    IF taken = 0 THEN
        RETURN QUERY SELECT 0, 0, 0, 0, 0, NULL::text;
        RETURN;
    END IF;
    -- The daemon is draining: until it finds the log empty and re-arms
    -- (wakeup_arm), writers need not NOTIFY. Written only when armed, so a
    -- steady drain does not update this row batch after batch.
    UPDATE pgshadow.wakeup w SET armed = false WHERE w.migration_id = p_migration_id AND w.armed;

    -- Per table: its statements and its keys, grouped with the key type's
    -- own equality. A table whose statements cannot be built (its key type
    -- or its owner changed into something pgshadow refuses) has its
    -- entries quarantined with the reason, like entries it cannot parse.
    v_owner := array_fill(NULL::oid, ARRAY[cardinality(v_ids)]);
    v_all := array_fill(NULL::text, ARRAY[cardinality(v_ids)]);
    v_maydel := v_all; v_del := v_all; v_ups := v_all; v_unstick := v_all; v_qclear := v_all; v_qcount := v_all;
    FOR i IN 1 .. cardinality(v_ids) LOOP
        CONTINUE WHEN NOT v_ids[i] = ANY (v_in);
        BEGIN
            SELECT s.* INTO r FROM pgshadow._sync_statements(v_ids[i]) s;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            IF pgshadow._sync_transient(v_state) THEN
                RAISE;
            END IF;
            PERFORM pgshadow._sync_quarantine(v_ids[i], c.key, v_state, v_msg, NULL, 'parse')
            FROM pgshadow.change_log c
            WHERE c.table_id = v_ids[i] AND c.seq = ANY (v_seqs) AND c.key IS NOT NULL;
            GET DIAGNOSTICS n = ROW_COUNT;
            v_parse_q := v_parse_q + n;
            CONTINUE;
        END;
        PERFORM pgshadow._sync_refresh(v_ids[i], r.hash_expr, r.column_map, r.key_types);
        -- Entries whose key lies in an interval a backfill chunk is copying
        -- now stay in the log until it commits (83-sync-backfill.sql): the
        -- chunk's snapshot may predate them, and what it writes must not be
        -- the last word. Read after the take, so a registration that
        -- predates an entry taken here is seen.
        v_live := v_seqs;
        IF EXISTS (SELECT 1 FROM pgshadow.backfill_ranges b WHERE b.table_id = v_ids[i] AND b.inflight) THEN
            v_deferred := v_deferred || pgshadow._sync_deferred(v_ids[i], (pgshadow._sync_chunk_sql(v_ids[i])).defer_sql,
                                                                  v_seqs);
            v_live := ARRAY(SELECT x FROM unnest(v_seqs) x WHERE NOT x = ANY (v_deferred));
        END IF;
        v_owner[i] := r.owner; v_del[i] := r.del_sql; v_ups[i] := r.ups_sql; v_unstick[i] := r.unstick_sql;
        v_qclear[i] := r.qclear_sql; v_qcount[i] := r.qcount_sql;
        SELECT p.all_keys::text, p.maydel_keys::text, p.n_bad INTO v_csql, v_qsql, n
        FROM pgshadow._sync_parse(v_ids[i], r.parse_sql, v_live, v_rowmode[i]) p;
        v_all[i] := v_csql;
        v_maydel[i] := v_qsql;
        v_parse_q := v_parse_q + n;
    END LOOP;

    -- Resync ('T': a TRUNCATE of the primary, capture switched back on,
    -- partitions attached or detached): the table is copied again, and the
    -- copy removes the shadow rows the primary no longer has. The shadow
    -- is not emptied here: reads may be routed to it, and other tables
    -- (also outside pgshadow) may reference it. The copy starts once every
    -- transaction older than this one has ended (see _sync_old_xacts).
    -- The batch's other entries of those tables are still applied below.
    IF cardinality(v_trunc) > 0 THEN
        -- (a chunk of it being copied now finds its claim gone and does nothing)
        DELETE FROM pgshadow.backfill_ranges b WHERE b.table_id = ANY (v_trunc);
        UPDATE pgshadow.tables t
        SET backfill_state = 'pending', backfill_cursor = NULL, backfill_rows = 0, backfill_total = NULL,
            backfill_started_at = NULL, backfill_done_at = NULL,
            primary_rows = NULL, shadow_rows = NULL, synced_rows = NULL, counted_at = NULL,
            backfill_reconcile = true, backfill_wait_xid = pg_snapshot_xmax(pg_current_snapshot())
        WHERE t.table_id = ANY (v_trunc);
        INSERT INTO pgshadow.events (migration_id, table_name, who, what, why)
        SELECT t.migration_id, t.table_name, 'pgshadowd', 'backfill_reset',
               'TRUNCATE, capture re-enabled or partitions moved: the table is copied again and the shadow reconciled'
        FROM pgshadow.tables t WHERE t.table_id = ANY (v_trunc);
        truncated := cardinality(v_trunc);
    END IF;

    -- Apply. In halt mode a table that fails is left out and everything
    -- else is done again (its sub-transaction undone), so a halted table
    -- gets nothing of this batch.
    <<attempt>>
    LOOP
        v_failed := array_fill(NULL::text, ARRAY[cardinality(v_ids)]);
        v_dn := array_fill(0, ARRAY[cardinality(v_ids)]);
        v_un := array_fill(0, ARRAY[cardinality(v_ids)]);
        v_in_n := array_fill(0, ARRAY[cardinality(v_ids)]);
        v_defer := '{}';
        BEGIN
            -- deletes, children first
            FOR i IN REVERSE cardinality(v_ids) .. 1 LOOP
                CONTINUE WHEN coalesce(cardinality(v_maydel[i]::text[]), 0) = 0 OR v_ids[i] = ANY (v_halted);
                BEGIN
                    SELECT x[1]::integer INTO n FROM pgshadow._sync_run(v_owner[i], v_del[i], v_maydel[i]::text[]) x;
                    v_dn[i] := n;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
                    IF pgshadow._sync_transient(v_state) THEN
                        RAISE;
                    END IF;
                    -- Typically 23503: shadow children still point at some
                    -- row, and the batch's upserts may re-point them (a key
                    -- change followed by ON UPDATE CASCADE, children moved
                    -- then the parent deleted). Delete now, key by key, what
                    -- can be deleted (so an upsert that reuses a unique value
                    -- of a deleted row does not collide with it), and run the
                    -- table's delete again after the upserts: it is idempotent,
                    -- and only what fails then is quarantined (or halts).
                    SELECT k.n_rows INTO n
                    FROM pgshadow._sync_apply_keys(v_ids[i], v_owner[i], 'delete', v_del[i],
                                                   v_maydel[i]::text[], NULL) k;
                    v_dn[i] := n;
                    v_defer := v_defer || i;
                END;
            END LOOP;
            -- upserts, parents first
            FOR i IN 1 .. cardinality(v_ids) LOOP
                CONTINUE WHEN coalesce(cardinality(v_all[i]::text[]), 0) = 0 OR v_ids[i] = ANY (v_halted);
                BEGIN
                    SELECT x[1]::integer, x[2]::integer INTO n, ins
                    FROM pgshadow._sync_run(v_owner[i], v_ups[i], v_all[i]::text[]) x;
                    v_un[i] := n;
                    v_in_n[i] := ins;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
                    IF pgshadow._sync_transient(v_state) THEN
                        RAISE;
                    END IF;
                    IF p_on_error = 'halt' THEN
                        v_halted := v_halted || v_ids[i];
                        v_why := v_why || pgshadow._sync_halt_reason(v_ids[i], v_owner[i], v_ups[i], 'upsert',
                                                                     v_all[i]::text[], v_state, v_msg);
                        RAISE EXCEPTION USING ERRCODE = 'PSHLT';
                    END IF;
                    SELECT k.n_rows, k.n_inserted, k.failed INTO n, ins, v_keys
                    FROM pgshadow._sync_apply_keys(v_ids[i], v_owner[i], 'upsert', v_ups[i], v_all[i]::text[],
                                                   v_unstick[i]) k;
                    v_failed[i] := (coalesce(v_failed[i]::text[], '{}') || v_keys)::text;
                    v_un[i] := n;
                    v_in_n[i] := ins;
                END;
            END LOOP;
            -- the deletes set aside, children first (v_defer is in that
            -- order); only what fails now is quarantined (or halts)
            FOREACH i IN ARRAY v_defer LOOP
                BEGIN
                    SELECT x[1]::integer INTO n FROM pgshadow._sync_run(v_owner[i], v_del[i], v_maydel[i]::text[]) x;
                    v_dn[i] := v_dn[i] + n;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
                    IF pgshadow._sync_transient(v_state) THEN
                        RAISE;
                    END IF;
                    IF p_on_error = 'halt' THEN
                        v_halted := v_halted || v_ids[i];
                        v_why := v_why || pgshadow._sync_halt_reason(v_ids[i], v_owner[i], v_del[i], 'delete',
                                                                     v_maydel[i]::text[], v_state, v_msg);
                        RAISE EXCEPTION USING ERRCODE = 'PSHLT';
                    END IF;
                    SELECT k.n_rows, k.failed INTO n, v_keys
                    FROM pgshadow._sync_apply_keys(v_ids[i], v_owner[i], 'delete', v_del[i],
                                                   v_maydel[i]::text[], NULL) k;
                    v_dn[i] := v_dn[i] + n;
                    v_failed[i] := (coalesce(v_failed[i]::text[], '{}') || v_keys)::text;
                END;
            END LOOP;
            EXIT attempt;
        EXCEPTION WHEN SQLSTATE 'PSHLT' THEN
            NULL;   -- v_halted grew: do it again without that table
        END;
    END LOOP;

    quarantined := v_parse_q;
    -- Deferred entries were not taken, as far as the caller is concerned: a
    -- batch of nothing else reports 0, and the daemon waits for the chunk.
    taken := taken - cardinality(v_deferred);
    v_incr := coalesce((SELECT v.incremental FROM pgshadow.verify_settings v WHERE v.migration_id = p_migration_id),
                       false);
    -- Bookkeeping per table that was applied.
    FOR i IN 1 .. cardinality(v_ids) LOOP
        CONTINUE WHEN NOT v_ids[i] = ANY (v_in) OR v_ids[i] = ANY (v_halted) OR v_owner[i] IS NULL;
        upserted := upserted + v_un[i];
        deleted := deleted + v_dn[i];
        quarantined := quarantined + coalesce(cardinality(v_failed[i]::text[]), 0);
        -- The batch's keys that applied leave the quarantine (compared with
        -- the key's own equality; by text if a stored key no longer parses).
        IF EXISTS (SELECT 1 FROM pgshadow.quarantine q WHERE q.table_id = v_ids[i]) THEN
            v_keys := ARRAY(SELECT x FROM unnest(v_all[i]::text[]) x
                            WHERE NOT x = ANY (coalesce(v_failed[i]::text[], '{}')));
            BEGIN
                EXECUTE v_qclear[i] USING v_ids[i], v_keys;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
                IF pgshadow._sync_transient(v_state) THEN
                    RAISE;
                END IF;
                DELETE FROM pgshadow.quarantine q
                WHERE q.table_id = v_ids[i] AND q.phase IS DISTINCT FROM 'parse' AND q.key::text = ANY (v_keys);
            END;
        END IF;
        -- shadow_rows: a count at the end of the backfill plus the rows
        -- this batch inserted and deleted (cascades: below); primary_rows
        -- is derived from it (_sync_primary_rows, docs/sync.md "Counts").
        -- Relative to the row as the UPDATE finds it, never read before:
        -- a backfill chunk finishing the table concurrently (no sync lock
        -- between them) sets the count, and an UPDATE waiting for it
        -- re-evaluates these expressions on the new row (READ COMMITTED).
        UPDATE pgshadow.tables t
        SET applied_total = t.applied_total + (SELECT count(*) FROM unnest(v_tids, v_seqs) x(id, seq)
                                               WHERE x.id = v_ids[i] AND NOT x.seq = ANY (v_deferred)),
            last_applied_at = now(),
            shadow_rows = t.shadow_rows + v_in_n[i] - v_dn[i],
            synced_rows = t.synced_rows + v_in_n[i] - v_dn[i],
            primary_rows = pgshadow._sync_primary_rows(v_ids[i], v_owner[i], v_qcount[i],
                                                       t.shadow_rows + v_in_n[i] - v_dn[i])
        WHERE t.table_id = v_ids[i];
        IF v_un[i] + v_dn[i] > 0 THEN
            v_written := coalesce(v_written, '{}') || v_ids[i];
        END IF;
        -- Incremental verify (85-verify.sql): the keys written are looked
        -- at again once this commits, while verify runs (and the table is
        -- copied: before that, the backfill's end is what counts).
        IF v_incr AND EXISTS (SELECT 1 FROM pgshadow.tables t WHERE t.table_id = v_ids[i]
                                                                AND t.backfill_state = 'done') THEN
            INSERT INTO pgshadow.verify_queue (table_id, key, source, due)
            SELECT v_ids[i], x::text[], 'apply', clock_timestamp() + interval '1 second'
            FROM unnest(v_all[i]::text[]) x
            WHERE NOT x = ANY (coalesce(v_failed[i]::text[], '{}'));
        END IF;
    END LOOP;

    -- Rows the shadows' own ON DELETE CASCADE removed are in no statement's
    -- row count: recount the shadows such a cascade can reach from a shadow
    -- this batch deleted from (only then, so the usual batch pays nothing).
    IF EXISTS (SELECT 1 FROM unnest(v_dn) x WHERE x > 0) THEN
        FOR r IN
            WITH RECURSIVE root AS (
                SELECT to_regclass(format('%I.%I', t.schema_name, t.shadow_name)) AS rel
                FROM pgshadow.tables t JOIN unnest(v_ids, v_dn) AS x(id, dn) ON x.id = t.table_id
                WHERE x.dn > 0 AND NOT t.table_id = ANY (v_halted)
            ), c (rel) AS (
                SELECT con.conrelid::regclass FROM root
                JOIN pg_constraint con ON con.confrelid = root.rel AND con.contype = 'f' AND con.confdeltype = 'c'
                UNION
                SELECT con.conrelid::regclass FROM c
                JOIN pg_constraint con ON con.confrelid = c.rel AND con.contype = 'f' AND con.confdeltype = 'c'
            )
            SELECT t.table_id
            FROM pgshadow.tables t
            WHERE t.migration_id = p_migration_id AND t.shadow_rows IS NOT NULL
              AND to_regclass(format('%I.%I', t.schema_name, t.shadow_name)) IN (SELECT c.rel FROM c)
        LOOP
            BEGIN
                SELECT s.owner, s.count_shadow_sql, s.qcount_sql INTO v_o, v_csql, v_qsql
                FROM pgshadow._sync_statements(r.table_id) s;
                SELECT x[1]::bigint INTO v_n0 FROM pgshadow._sync_run(v_o, v_csql) x;
                UPDATE pgshadow.tables t
                SET synced_rows = t.synced_rows + (v_n0 - t.shadow_rows), shadow_rows = v_n0,
                    primary_rows = pgshadow._sync_primary_rows(r.table_id, v_o, v_qsql, v_n0)
                WHERE t.table_id = r.table_id;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
                IF pgshadow._sync_transient(v_state) THEN
                    RAISE;
                END IF;
                UPDATE pgshadow.tables t SET shadow_rows = NULL, synced_rows = NULL, primary_rows = NULL
                WHERE t.table_id = r.table_id;   -- not known: estimates
            END;
        END LOOP;
    END IF;
    -- Keys rejected earlier for a foreign key (23503) may apply now that a
    -- table they reference, or that references them, got rows: a child
    -- whose parent arrived in a later batch (a transaction split by the
    -- take, a deferred foreign key), a parent delete whose children were
    -- re-pointed later. Re-queued as 'D' ("check both ways"), each at most
    -- once per rejection (retry_requested is cleared when it fails again),
    -- never one rejected by this very batch: no busy loop, and only while
    -- other rows are being written. The first three retries are at once
    -- (the common case: the parent is in the next batches); a key that keeps
    -- failing (a true orphan) then waits 2, 4, 8 s ... (at most ~2 h) since
    -- it last failed, so a backlog drained in full batches does not re-queue
    -- every orphan in every batch. A batch that took less than its limit
    -- (the log is drained, as far as this batch could see) re-queues them
    -- all, backoff or not: otherwise a key whose backoff was running when
    -- the last related write was applied stayed quarantined after the
    -- writes stopped, although it would now apply (seen in the chaos test).
    IF v_written IS NOT NULL THEN
        WITH w AS (
            SELECT to_regclass(format('%I.%I', t.schema_name, t.shadow_name)) AS rel
            FROM pgshadow.tables t WHERE t.table_id = ANY (v_written)
        ), rel AS (
            SELECT con.conrelid AS rel FROM pg_constraint con JOIN w ON con.confrelid = w.rel
            WHERE con.contype = 'f'
            UNION
            SELECT con.confrelid FROM pg_constraint con JOIN w ON con.conrelid = w.rel
            WHERE con.contype = 'f'
        ), q AS (
            UPDATE pgshadow.quarantine q SET retry_requested = true
            FROM pgshadow.tables t
            WHERE t.table_id = q.table_id AND t.migration_id = p_migration_id
              AND q.sqlstate = '23503' AND NOT q.retry_requested
              AND q.last_seen < now()
              AND (q.attempts <= 3 OR taken < p_limit
                   OR q.last_seen < now() - interval '1 second' * power(2, least(q.attempts - 3, 13)))
              AND NOT t.table_id = ANY (v_halted)
              AND to_regclass(format('%I.%I', t.schema_name, t.shadow_name)) IN (SELECT rel.rel FROM rel)
            RETURNING q.quarantine_id, q.table_id, q.key
        )
        INSERT INTO pgshadow.change_log (table_id, op, key)
        SELECT q.table_id, 'D', q.key FROM q ORDER BY q.quarantine_id;
    END IF;

    -- Done: exactly the taken entries go, except those of halted tables and
    -- the deferred ones.
    -- (seqs are unique across tables: one sequence; the range and the
    -- table list let this read the (table_id, seq) index, see _sync_taken)
    DELETE FROM pgshadow.change_log c
    WHERE c.table_id = ANY (v_in) AND NOT c.table_id = ANY (v_halted)
      AND c.seq BETWEEN (SELECT min(x) FROM unnest(v_seqs) x) AND (SELECT max(x) FROM unnest(v_seqs) x)
      AND c.seq = ANY (v_seqs) AND NOT c.seq = ANY (v_deferred);

    halted := CASE WHEN cardinality(v_why) > 0 THEN array_to_string(v_why, '; ') END;
    RETURN QUERY SELECT taken, upserted, deleted, quarantined, truncated, halted;
END
$fn$;


-- Privileges
REVOKE ALL ON FUNCTION pgshadow.apply_batch(text, integer, text)
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.apply_batch(text, integer, text) TO pgshadow_daemon;
