-- sync--1.sql: the database half of the sync engine, schema version 1.
--
-- Run right after pgshadow--1.sql in the same install transaction (no
-- BEGIN/COMMIT here). Idempotent: CREATE OR REPLACE only. See docs/sync.md.
--
-- Owns: pgshadow.apply_batch (change log -> shadow), pgshadow.backfill_step
-- (existing rows -> shadow, resumable), pgshadow.wakeup_arm (the capture
-- triggers' NOTIFY switch), pgshadow.quarantine_retry,
-- pgshadow.replication_lag_ms and their private helpers (pgshadow._sync_*).
--
-- Invariants:
--  * apply never trusts the change log for data: it re-reads the primary row
--    by key, so applying an entry twice, late or out of order is harmless;
--  * take, apply and delete of change_log rows happen in the caller's one
--    transaction, so a crash anywhere loses nothing and duplicates nothing;
--  * backfill only ever INSERTs ... ON CONFLICT DO NOTHING, so it can never
--    overwrite a newer row apply wrote; its cursor is persisted in the same
--    transaction as the rows it copied;
--  * every identifier reaches dynamic SQL through format('%I') / quote_ident,
--    every value through a parameter or %L;
--  * every function pins the settings the row hash and the key text depend
--    on (TimeZone, DateStyle, IntervalStyle, extra_float_digits,
--    bytea_output), so results never depend on the caller's session.

-- ---------------------------------------------------------------------------
-- Plan: the tables of a migration in foreign-key order, with the statement
-- texts apply and backfill execute for each. Built once per call.
-- ---------------------------------------------------------------------------

-- Depth of each shadow table in the foreign-key graph among the migration's
-- shadow tables (0 = references no other registered shadow). Parents have a
-- smaller depth than their children; cycles are cut.
CREATE OR REPLACE FUNCTION pgshadow._sync_fk_depth(p_migration_id text)
RETURNS TABLE (table_id integer, depth integer)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH RECURSIVE t AS (
        SELECT r.table_id, to_regclass(format('%I.%I', r.schema_name, r.shadow_name)) AS rel
        FROM pgshadow.tables r
        WHERE r.migration_id = p_migration_id
    ), e AS (
        SELECT DISTINCT c.table_id AS child, p.table_id AS parent
        FROM pg_constraint con
        JOIN t c ON con.conrelid = c.rel
        JOIN t p ON con.confrelid = p.rel
        WHERE con.contype = 'f' AND c.table_id <> p.table_id
    ), d (table_id, depth, path) AS (
        SELECT t.table_id, 0, ARRAY[t.table_id] FROM t
        UNION ALL
        SELECT e.child, d.depth + 1, d.path || e.child
        FROM d JOIN e ON e.parent = d.table_id
        WHERE e.child <> ALL (d.path)
    )
    SELECT d.table_id, max(d.depth)::integer FROM d GROUP BY d.table_id
$fn$;

-- The condition that picks a batch's entries of one table out of the
-- change log ($1 table_id, $2 the batch's seqs), for an alias of
-- pgshadow.change_log. The seq range (from the batch's own seqs) lets every
-- statement read them from the (table_id, seq) index whatever the backlog:
-- `seq = ANY ($2)` alone made the planner scan the whole log once per
-- statement, which grew with the backlog (docs/sync.md, "Apply").
CREATE OR REPLACE FUNCTION pgshadow._sync_taken(p_alias text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT format('%1$I.table_id = $1 AND %1$I.seq = ANY ($2) '
                  'AND %1$I.seq BETWEEN (SELECT min(x) FROM unnest($2) x) AND (SELECT max(x) FROM unnest($2) x)',
                  p_alias)
$fn$;

-- The statement texts of one table. Parameters of the apply statements:
-- $1 table_id, $2 bigint[] of change_log seqs (entries of other tables are
-- ignored by the table_id condition). Key columns are read back from the
-- change log's text with key_types, and matched by name in primary and shadow.
CREATE OR REPLACE FUNCTION pgshadow._sync_statements(
    p_table_id integer,
    OUT del_sql text,       -- delete shadow rows whose primary row is gone
    OUT ups_sql text,       -- upsert shadow rows from the primary; returns (rows, inserted)
    OUT groups_sql text,    -- (normalised key, seqs) per key of the batch, oldest change first
    OUT qclear_sql text,    -- clear quarantine rows of the batch's keys ($3: keys that failed)
    OUT bf_bound_sql text,  -- backfill: key of the p_chunk-th row after the cursor
    OUT bf_copy_sql text,   -- backfill: copy (cursor, bound], DO NOTHING
    OUT bf_keys_sql text,   -- backfill: the keys of (cursor, bound], for the per-row fallback
    OUT bf_row_sql text,    -- backfill: copy one key
    OUT count_primary_sql text,
    OUT count_shadow_sql text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t          pgshadow.tables;
    v_primary  text;
    v_shadow   text;
    v_b        text;   -- distinct batch keys, typed, as b.k1..kn
    v_join     text;   -- p.<key> = b.kN
    v_sjoin    text;   -- s.<key> = b.kN
    v_norm     text;   -- normalised key text[] from c.key
    v_pkey     text;   -- key text[] of primary row p
    v_kcols    text;   -- quoted key column list
    v_pcols    text;   -- p.<key>, ... (ORDER BY / row comparison)
    v_cur      text;   -- typed key from $1 text[]
    v_bound    text;   -- typed key from $2 text[]
    v_eq       text;   -- p.<key> = $1[i]::type
    v_cols     text;
    v_sel      text;
    v_set      text;
    v_src      text;   -- _shadow_source_table / _shadow_migration_id literals
BEGIN
    SELECT * INTO STRICT t FROM pgshadow.tables WHERE table_id = p_table_id;
    v_primary := format('%I.%I', t.schema_name, t.table_name);
    v_shadow := format('%I.%I', t.schema_name, t.shadow_name);

    SELECT string_agg(format('(c.key[%s])::%s AS k%s', o, ty, o), ', ' ORDER BY o),
           string_agg(format('p.%I = b.k%s', k, o), ' AND ' ORDER BY o),
           string_agg(format('s.%I = b.k%s', k, o), ' AND ' ORDER BY o),
           'ARRAY[' || string_agg(format('((c.key[%s])::%s)::text', o, ty), ', ' ORDER BY o) || ']::text[]',
           'ARRAY[' || string_agg(format('(p.%I)::text', k), ', ' ORDER BY o) || ']::text[]',
           string_agg(format('%I', k), ', ' ORDER BY o),
           string_agg(format('p.%I', k), ', ' ORDER BY o),
           string_agg(format('($1[%s])::%s', o, ty), ', ' ORDER BY o),
           string_agg(format('($2[%s])::%s', o, ty), ', ' ORDER BY o),
           string_agg(format('p.%I = ($1[%s])::%s', k, o, ty), ' AND ' ORDER BY o)
    INTO v_b, v_join, v_sjoin, v_norm, v_pkey, v_kcols, v_pcols, v_cur, v_bound, v_eq
    FROM unnest(t.key_columns, t.key_types) WITH ORDINALITY AS u(k, ty, o);

    SELECT string_agg(format('%I', m ->> 'shadow'), ', ' ORDER BY o),
           string_agg(format('(%s)::%s', m ->> 'expr', m ->> 'type'), ', ' ORDER BY o),
           string_agg(format('%I = EXCLUDED.%I', m ->> 'shadow', m ->> 'shadow'), ', ' ORDER BY o)
               FILTER (WHERE NOT (m ->> 'shadow') = ANY (t.key_columns))
    INTO v_cols, v_sel, v_set
    FROM jsonb_array_elements(t.column_map) WITH ORDINALITY AS x(m, o);

    v_cols := v_cols || ', _shadow_version, _shadow_sync_status, _shadow_last_sync, '
                        '_shadow_validation_hash, _shadow_source_table, _shadow_migration_id';
    v_src := format('%L, %L', t.table_name, t.migration_id);
    v_sel := v_sel || ', 1, ''synced'', now(), ' || t.hash_expr || ', ' || v_src;
    v_set := coalesce(v_set || ', ', '')
          || '_shadow_version = coalesce(s._shadow_version, 0) + 1, _shadow_sync_status = ''synced'', '
             '_shadow_last_sync = EXCLUDED._shadow_last_sync, '
             '_shadow_validation_hash = EXCLUDED._shadow_validation_hash';

    -- (no ORDER BY: the statements append conditions to this text)
    v_b := format('SELECT DISTINCT %s FROM pgshadow.change_log c WHERE %s AND c.key IS NOT NULL',
                  v_b, pgshadow._sync_taken('c'));

    -- Row capture logs a 'D' in the same transaction as every delete and
    -- key change, so only keys with a 'D' (or any other op than I/U) in the
    -- batch can have vanished; a vanished key whose 'D' is not in this
    -- batch yet is deleted by the batch that takes it. Statement capture
    -- logs the old key of a key change as 'U': there every key is checked.
    del_sql := format('WITH b AS (%s%s) DELETE FROM %s AS s USING b WHERE %s '
                      'AND NOT EXISTS (SELECT 1 FROM %s AS p WHERE %s)',
                      v_b, CASE WHEN t.capture_mode = 'row' THEN ' AND c.op NOT IN (''I'', ''U'')' ELSE '' END,
                      v_shadow, v_sjoin, v_primary, v_join);
    -- xmax = 0 in RETURNING tells an inserted row from an updated one.
    ups_sql := format('WITH b AS (%s), u AS (INSERT INTO %s AS s (%s) SELECT %s FROM %s AS p JOIN b ON %s '
                      'ON CONFLICT (%s) DO UPDATE SET %s RETURNING (s.xmax = 0) AS ins) '
                      'SELECT count(*)::integer, (count(*) FILTER (WHERE ins))::integer FROM u',
                      v_b, v_shadow, v_cols, v_sel, v_primary, v_join, v_kcols, v_set);
    groups_sql := format('SELECT %s AS nk, array_agg(c.seq) AS seqs FROM pgshadow.change_log c '
                         'WHERE %s AND c.key IS NOT NULL GROUP BY 1 ORDER BY min(c.seq)',
                         v_norm, pgshadow._sync_taken('c'));
    qclear_sql := format('DELETE FROM pgshadow.quarantine q WHERE q.table_id = $1 AND q.key IN '
                         '(SELECT %s FROM pgshadow.change_log c WHERE %s '
                         'AND c.key IS NOT NULL) AND NOT (q.key::text = ANY ($3))', v_norm, pgshadow._sync_taken('c'));

    bf_bound_sql := format('SELECT %s FROM %s AS p WHERE $1::text[] IS NULL OR (%s) > (%s) '
                           'ORDER BY %s OFFSET $2 - 1 LIMIT 1',
                           v_pkey, v_primary, v_pcols, v_cur, v_pcols);
    -- $1 cursor (exclusive, NULL = from the start), $2 bound (inclusive, NULL = to the end)
    bf_copy_sql := format('INSERT INTO %s AS s (%s) SELECT %s FROM %s AS p '
                          'WHERE ($1::text[] IS NULL OR (%s) > (%s)) AND ($2::text[] IS NULL OR (%s) <= (%s)) '
                          'ON CONFLICT (%s) DO NOTHING',
                          v_shadow, v_cols, v_sel, v_primary, v_pcols, v_cur, v_pcols, v_bound, v_kcols);
    bf_keys_sql := format('SELECT %s FROM %s AS p '
                          'WHERE ($1::text[] IS NULL OR (%s) > (%s)) AND ($2::text[] IS NULL OR (%s) <= (%s)) '
                          'ORDER BY %s',
                          v_pkey, v_primary, v_pcols, v_cur, v_pcols, v_bound, v_pcols);
    bf_row_sql := format('INSERT INTO %s AS s (%s) SELECT %s FROM %s AS p WHERE %s ON CONFLICT (%s) DO NOTHING',
                         v_shadow, v_cols, v_sel, v_primary, v_eq, v_kcols);
    count_primary_sql := format('SELECT count(*) FROM %s', v_primary);
    count_shadow_sql := format('SELECT count(*) FROM %s', v_shadow);
END
$fn$;

-- apply_batch and backfill_step of one migration run one at a time, whoever
-- calls them: a transaction-level advisory lock (released at commit), so a
-- second caller waits for the first to commit (up to the callers' 5 s
-- lock_timeout; then it fails with 55P03 and is retried) and then reads the
-- primary rows at least as new as the first did. Without it two appliers could
-- write the same shadow row from snapshots taken in the opposite order.
-- (A different key from the daemon's leader lock, 'pgshadow:' || id.)
CREATE OR REPLACE FUNCTION pgshadow._sync_lock(p_migration_id text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pg_advisory_xact_lock(hashtextextended('pgshadow:sync:' || p_migration_id, 0))
$fn$;

-- ---------------------------------------------------------------------------
-- Quarantine
-- ---------------------------------------------------------------------------

-- Record (or refresh) a rejected key; an event for a key not quarantined
-- before. Returns true when the key is new in the quarantine.
CREATE OR REPLACE FUNCTION pgshadow._sync_quarantine(p_table_id integer, p_key text[], p_sqlstate text,
                                                     p_message text, p_detail text, p_phase text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_new boolean;
BEGIN
    INSERT INTO pgshadow.quarantine AS q (table_id, key, sqlstate, message, detail)
    VALUES (p_table_id, p_key, p_sqlstate, p_message, p_detail)
    ON CONFLICT (table_id, key) DO UPDATE
        SET sqlstate = EXCLUDED.sqlstate, message = EXCLUDED.message, detail = EXCLUDED.detail,
            last_seen = now(), attempts = q.attempts + 1, retry_requested = false
    RETURNING (q.xmax = 0) INTO v_new;
    IF v_new THEN
        INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
        SELECT t.migration_id, t.table_name, 'pgshadowd', 'quarantine', p_message,
               jsonb_build_object('key', to_jsonb(p_key), 'sqlstate', p_sqlstate, 'message', p_message,
                                  'detail', p_detail, 'phase', p_phase)
        FROM pgshadow.tables t WHERE t.table_id = p_table_id;
    END IF;
    RETURN v_new;
END
$fn$;

-- The statement that deletes the shadow rows of a set of batch keys ($1
-- table_id, $2 seqs), for the unique-swap repair of _sync_apply_keys; NULL
-- when deleting a shadow row could remove or change other shadow rows (a
-- referencing foreign key with ON DELETE CASCADE / SET NULL / SET DEFAULT),
-- so the repair is never tried there.
CREATE OR REPLACE FUNCTION pgshadow._sync_unstick_sql(p_table_id integer)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t      pgshadow.tables;
    v_rel  regclass;
    v_b    text;
    v_join text;
BEGIN
    SELECT * INTO STRICT t FROM pgshadow.tables WHERE table_id = p_table_id;
    v_rel := to_regclass(format('%I.%I', t.schema_name, t.shadow_name));
    IF EXISTS (SELECT 1 FROM pg_constraint con WHERE con.contype = 'f' AND con.confrelid = v_rel
               AND con.confdeltype IN ('c', 'n', 'd')) THEN
        RETURN NULL;
    END IF;
    SELECT string_agg(format('(c.key[%s])::%s AS k%s', o, ty, o), ', ' ORDER BY o),
           string_agg(format('s.%I = b.k%s', k, o), ' AND ' ORDER BY o)
    INTO v_b, v_join
    FROM unnest(t.key_columns, t.key_types) WITH ORDINALITY AS u(k, ty, o);
    RETURN format('WITH b AS (SELECT DISTINCT %s FROM pgshadow.change_log c WHERE %s '
                  'AND c.key IS NOT NULL) DELETE FROM %I.%I AS s USING b WHERE %s',
                  v_b, pgshadow._sync_taken('c'), t.schema_name, t.shadow_name, v_join);
END
$fn$;

-- Fallback of one apply phase ('delete' or 'upsert') of one table whose
-- statement failed for the whole batch: find the keys it rejects by
-- bisection (each half of the failing set in its own sub-transaction,
-- recursively), so k bad keys among n cost O(k log n) sub-transactions,
-- not n (one per key would overflow the 64-entry subxact cache and slow
-- every snapshot in the cluster). Keys that failed are tried again while
-- the previous round made progress (a parent and its child in one table),
-- at most PS_ROUNDS = 3 rounds. Upsert keys still failing with a unique
-- violation (23505), two or more, are then deleted from the shadow and
-- re-inserted together in one sub-transaction: two rows that swapped a
-- unique value apply only together. What still fails is quarantined.
-- Returns the rows written, the rows inserted (net of the swap's deletes)
-- and the keys quarantined (as key::text, to skip them when the quarantine
-- is cleared).
CREATE OR REPLACE FUNCTION pgshadow._sync_apply_keys(p_table_id integer, p_phase text, p_sql text,
                                                     p_groups_sql text, p_seqs bigint[],
                                                     OUT n_rows integer, OUT n_inserted integer,
                                                     OUT failed text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_keys   text[] := '{}';   -- key::text per group
    v_seqs   text[] := '{}';   -- seqs::text per group (arrays of arrays of varying length)
    v_state  text[] := '{}';
    v_msg    text[] := '{}';
    v_detail text[] := '{}';
    v_todo   integer[];        -- groups to try in this round
    v_next   integer[];        -- groups that failed in this round, ascending
    v_lo     integer[];        -- stack of [lo, hi] ranges over v_todo
    v_hi     integer[];
    v_all    bigint[];
    v_swap   integer[];
    v_unstick text;
    v_progress boolean;
    v_round  integer := 0;
    e_state  text;
    e_msg    text;
    e_detail text;
    r        record;
    lo       integer;
    hi       integer;
    mid      integer;
    n        integer;
    ins      integer;
    d        integer;
BEGIN
    n_rows := 0;
    n_inserted := 0;
    failed := '{}';
    FOR r IN EXECUTE p_groups_sql USING p_table_id, p_seqs LOOP
        v_keys := v_keys || r.nk::text;
        v_seqs := v_seqs || r.seqs::text;
    END LOOP;
    v_todo := ARRAY(SELECT generate_series(1, cardinality(v_keys)));
    v_next := '{}';
    LOOP
        EXIT WHEN cardinality(v_todo) = 0;
        v_round := v_round + 1;
        v_next := '{}';
        v_progress := false;
        -- The caller saw the whole set fail: start with its halves.
        IF v_round = 1 AND cardinality(v_todo) > 1 THEN
            mid := cardinality(v_todo) / 2;
            v_lo := ARRAY[mid + 1, 1];
            v_hi := ARRAY[cardinality(v_todo), mid];
        ELSE
            v_lo := ARRAY[1];
            v_hi := ARRAY[cardinality(v_todo)];
        END IF;
        WHILE cardinality(v_lo) > 0 LOOP
            lo := v_lo[cardinality(v_lo)];
            hi := v_hi[cardinality(v_hi)];
            v_lo := v_lo[1:cardinality(v_lo) - 1];
            v_hi := v_hi[1:cardinality(v_hi) - 1];
            v_all := ARRAY(SELECT x FROM unnest(v_todo[lo:hi]) AS g(i),
                                         LATERAL unnest(v_seqs[g.i]::bigint[]) AS x);
            BEGIN
                IF p_phase = 'delete' THEN
                    EXECUTE p_sql USING p_table_id, v_all;
                    GET DIAGNOSTICS n = ROW_COUNT;
                    ins := 0;
                ELSE
                    EXECUTE p_sql INTO n, ins USING p_table_id, v_all;
                END IF;
                n_rows := n_rows + n;
                n_inserted := n_inserted + ins;
                v_progress := true;
            EXCEPTION WHEN integrity_constraint_violation OR data_exception OR raise_exception THEN
                IF lo = hi THEN
                    v_next := v_next || v_todo[lo];
                    GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_msg = MESSAGE_TEXT,
                                            e_detail = PG_EXCEPTION_DETAIL;
                    v_state[v_todo[lo]] := e_state;
                    v_msg[v_todo[lo]] := e_msg;
                    v_detail[v_todo[lo]] := e_detail;
                ELSE
                    -- the lower half is popped (tried) first, so v_next stays ascending
                    mid := (lo + hi) / 2;
                    v_lo := v_lo || ARRAY[mid + 1, lo];
                    v_hi := v_hi || ARRAY[hi, mid];
                END IF;
            END;
        END LOOP;
        EXIT WHEN cardinality(v_next) = 0 OR NOT v_progress OR v_round >= 3;
        v_todo := v_next;
    END LOOP;

    -- A unique value swapped between keys of the batch: each key alone
    -- collides with the other's old shadow row.
    IF p_phase = 'upsert' THEN
        v_swap := ARRAY(SELECT i FROM unnest(v_next) AS i WHERE v_state[i] = '23505');
        IF cardinality(v_swap) > 1 THEN
            v_unstick := pgshadow._sync_unstick_sql(p_table_id);
        END IF;
        IF v_unstick IS NOT NULL THEN
            v_all := ARRAY(SELECT x FROM unnest(v_swap) AS g(i), LATERAL unnest(v_seqs[g.i]::bigint[]) AS x);
            BEGIN
                EXECUTE v_unstick USING p_table_id, v_all;
                GET DIAGNOSTICS d = ROW_COUNT;
                EXECUTE p_sql INTO n, ins USING p_table_id, v_all;
                n_rows := n_rows + n;
                n_inserted := n_inserted + ins - d;
                v_next := ARRAY(SELECT i FROM unnest(v_next) AS i WHERE NOT i = ANY (v_swap));
            EXCEPTION WHEN integrity_constraint_violation OR data_exception OR raise_exception THEN
                NULL;   -- undone; they are quarantined below
            END;
        END IF;
    END IF;

    FOREACH lo IN ARRAY v_next LOOP
        PERFORM pgshadow._sync_quarantine(p_table_id, v_keys[lo]::text[], v_state[lo], v_msg[lo],
                                          nullif(v_detail[lo], ''), p_phase);
        failed := failed || v_keys[lo];
    END LOOP;
END
$fn$;

-- Halt mode: the first key of the table's batch the phase statement rejects,
-- found by trying key by key inside a sub-transaction that is always undone.
-- Returns '<table>: <SQLSTATE> <message> (key ...)'.
CREATE OR REPLACE FUNCTION pgshadow._sync_halt_reason(p_table_id integer, p_sql text, p_phase text,
                                                      p_groups_sql text, p_seqs bigint[],
                                                      p_state text, p_msg text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r      record;
    v_name text;
    v_why  text;
BEGIN
    -- the bare table name, as in the flags (names are unique across schemas)
    SELECT table_name INTO v_name FROM pgshadow.tables WHERE table_id = p_table_id;
    BEGIN
        FOR r IN EXECUTE p_groups_sql USING p_table_id, p_seqs LOOP
            BEGIN
                EXECUTE p_sql USING p_table_id, r.seqs;
            EXCEPTION WHEN integrity_constraint_violation OR data_exception OR raise_exception THEN
                v_why := format('%s: %s %s (key %s)', v_name, SQLSTATE, SQLERRM, r.nk::text);
                EXIT;
            END;
        END LOOP;
        RAISE EXCEPTION USING ERRCODE = 'PSUND';   -- undo whatever the probes wrote
    EXCEPTION WHEN SQLSTATE 'PSUND' THEN
        NULL;
    END;
    RETURN coalesce(v_why, format('%s: %s %s (%s of the batch)', v_name, p_state, p_msg, p_phase));
END
$fn$;

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
    v_del      text[];
    v_ups      text[];
    v_groups   text[];
    v_qclear   text[];
    v_rowmode  boolean[];
    v_tids     integer[];   -- taken entries: table_id[i], seq[i]
    v_seqs     bigint[];
    v_in       integer[];   -- tables with entries in the batch
    v_trunc    integer[];   -- tables with a 'T' entry
    v_maydel   integer[];   -- tables with an entry other than I/U (see _sync_statements)
    v_reset    integer[];   -- shadows emptied (truncated + cascaded)
    v_halted   integer[] := '{}';
    v_why      text[] := '{}';
    v_failed   text[];      -- per table position: quarantined keys, as text of a text[] of key::text
    v_dn       integer[];   -- per table position: shadow rows deleted
    v_un       integer[];   -- rows upserted
    v_in_n     integer[];   -- rows inserted (for the counts)
    v_keys     text[];
    v_defer    integer[];   -- table positions whose delete hit 23503: retried after the upserts
    v_written  integer[];   -- tables with shadow rows written by this batch
    v_state    text;
    v_msg      text;
    i          integer;
    n          integer;
    ins        integer;
    r          record;
    v_rels     text;
BEGIN
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
    WHERE t.migration_id = p_migration_id;
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
           coalesce(array_agg(DISTINCT took.table_id) FILTER (WHERE took.op = 'T'), '{}'),
           coalesce(array_agg(DISTINCT took.table_id) FILTER (WHERE took.op NOT IN ('I', 'U')), '{}')
    INTO v_tids, v_seqs, v_in, v_trunc, v_maydel
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

    v_del := '{}'; v_ups := '{}'; v_groups := '{}'; v_qclear := '{}';
    FOR i IN 1 .. cardinality(v_ids) LOOP
        IF v_ids[i] = ANY (v_in) THEN
            SELECT s.del_sql, s.ups_sql, s.groups_sql, s.qclear_sql INTO r
            FROM pgshadow._sync_statements(v_ids[i]) s;
            v_del[i] := r.del_sql; v_ups[i] := r.ups_sql; v_groups[i] := r.groups_sql; v_qclear[i] := r.qclear_sql;
        END IF;
    END LOOP;

    -- Truncates: empty the shadow (and, as TRUNCATE ... CASCADE does, every
    -- shadow that references it) and copy the table again from scratch. The
    -- batch's other entries of those tables are still applied below.
    IF cardinality(v_trunc) > 0 THEN
        WITH RECURSIVE s AS (
            SELECT to_regclass(format('%I.%I', t.schema_name, t.shadow_name)) AS rel
            FROM pgshadow.tables t WHERE t.table_id = ANY (v_trunc)
            UNION
            SELECT con.conrelid::regclass FROM s JOIN pg_constraint con ON con.confrelid = s.rel AND con.contype = 'f'
        )
        SELECT array_agg(t.table_id), string_agg(format('%I.%I', t.schema_name, t.shadow_name), ', ')
        INTO v_reset, v_rels
        FROM pgshadow.tables t
        WHERE to_regclass(format('%I.%I', t.schema_name, t.shadow_name)) IN (SELECT s.rel FROM s);
        EXECUTE 'TRUNCATE ' || v_rels || ' CASCADE';
        UPDATE pgshadow.tables t
        SET backfill_state = 'pending', backfill_cursor = NULL, backfill_rows = 0, backfill_total = NULL,
            backfill_started_at = NULL, backfill_done_at = NULL,
            primary_rows = NULL, shadow_rows = NULL, synced_rows = NULL, counted_at = NULL
        WHERE t.table_id = ANY (v_reset);
        DELETE FROM pgshadow.quarantine q WHERE q.table_id = ANY (v_reset);
        INSERT INTO pgshadow.events (migration_id, table_name, who, what, why)
        SELECT t.migration_id, t.table_name, 'pgshadowd', 'backfill_reset',
               CASE WHEN t.table_id = ANY (v_trunc) THEN 'TRUNCATE of the primary table'
                    ELSE 'shadow emptied by TRUNCATE ... CASCADE of a referenced shadow' END
        FROM pgshadow.tables t WHERE t.table_id = ANY (v_reset);
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
                CONTINUE WHEN NOT v_ids[i] = ANY (v_in) OR v_ids[i] = ANY (v_halted)
                              OR (v_rowmode[i] AND NOT v_ids[i] = ANY (v_maydel));
                BEGIN
                    EXECUTE v_del[i] USING v_ids[i], v_seqs;
                    GET DIAGNOSTICS n = ROW_COUNT;
                    v_dn[i] := n;
                EXCEPTION WHEN integrity_constraint_violation OR data_exception OR raise_exception THEN
                    -- Typically 23503: shadow children still point at some
                    -- row, and the batch's upserts may re-point them (a key
                    -- change followed by ON UPDATE CASCADE, children moved
                    -- then the parent deleted). Delete now, key by key, what
                    -- can be deleted (so an upsert that reuses a unique value
                    -- of a deleted row does not collide with it), and run the
                    -- table's delete again after the upserts: it is idempotent,
                    -- and only what fails then is quarantined (or halts).
                    SELECT k.n_rows INTO n
                    FROM pgshadow._sync_apply_keys(v_ids[i], 'delete', v_del[i], v_groups[i], v_seqs) k;
                    v_dn[i] := n;
                    v_defer := v_defer || i;
                END;
            END LOOP;
            -- upserts, parents first
            FOR i IN 1 .. cardinality(v_ids) LOOP
                CONTINUE WHEN NOT v_ids[i] = ANY (v_in) OR v_ids[i] = ANY (v_halted);
                BEGIN
                    EXECUTE v_ups[i] INTO n, ins USING v_ids[i], v_seqs;
                    v_un[i] := n;
                    v_in_n[i] := ins;
                EXCEPTION WHEN integrity_constraint_violation OR data_exception OR raise_exception THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
                    IF p_on_error = 'halt' THEN
                        v_halted := v_halted || v_ids[i];
                        v_why := v_why || pgshadow._sync_halt_reason(v_ids[i], v_ups[i], 'upsert', v_groups[i],
                                                                     v_seqs, v_state, v_msg);
                        RAISE EXCEPTION USING ERRCODE = 'PSHLT';
                    END IF;
                    SELECT k.n_rows, k.n_inserted, k.failed INTO n, ins, v_keys
                    FROM pgshadow._sync_apply_keys(v_ids[i], 'upsert', v_ups[i], v_groups[i], v_seqs) k;
                    v_failed[i] := (coalesce(v_failed[i]::text[], '{}') || v_keys)::text;
                    v_un[i] := n;
                    v_in_n[i] := ins;
                END;
            END LOOP;
            -- the deletes set aside, children first (v_defer is in that
            -- order); only what fails now is quarantined (or halts)
            FOREACH i IN ARRAY v_defer LOOP
                BEGIN
                    EXECUTE v_del[i] USING v_ids[i], v_seqs;
                    GET DIAGNOSTICS n = ROW_COUNT;
                    v_dn[i] := v_dn[i] + n;
                EXCEPTION WHEN integrity_constraint_violation OR data_exception OR raise_exception THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
                    IF p_on_error = 'halt' THEN
                        v_halted := v_halted || v_ids[i];
                        v_why := v_why || pgshadow._sync_halt_reason(v_ids[i], v_del[i], 'delete', v_groups[i],
                                                                     v_seqs, v_state, v_msg);
                        RAISE EXCEPTION USING ERRCODE = 'PSHLT';
                    END IF;
                    SELECT k.n_rows, k.failed INTO n, v_keys
                    FROM pgshadow._sync_apply_keys(v_ids[i], 'delete', v_del[i], v_groups[i], v_seqs) k;
                    v_dn[i] := v_dn[i] + n;
                    v_failed[i] := (coalesce(v_failed[i]::text[], '{}') || v_keys)::text;
                END;
            END LOOP;
            EXIT attempt;
        EXCEPTION WHEN SQLSTATE 'PSHLT' THEN
            NULL;   -- v_halted grew: do it again without that table
        END;
    END LOOP;

    -- Bookkeeping per table that was applied.
    FOR i IN 1 .. cardinality(v_ids) LOOP
        CONTINUE WHEN NOT v_ids[i] = ANY (v_in) OR v_ids[i] = ANY (v_halted);
        upserted := upserted + v_un[i];
        deleted := deleted + v_dn[i];
        quarantined := quarantined + coalesce(cardinality(v_failed[i]::text[]), 0);
        IF EXISTS (SELECT 1 FROM pgshadow.quarantine q WHERE q.table_id = v_ids[i]) THEN
            EXECUTE v_qclear[i] USING v_ids[i], v_seqs, coalesce(v_failed[i]::text[], '{}');
        END IF;
        -- shadow_rows: a count at the end of the backfill plus the rows
        -- this batch inserted and deleted (cascades: below); primary_rows
        -- is derived from it (see backfill_step and docs/sync.md "Counts").
        UPDATE pgshadow.tables t
        SET applied_total = t.applied_total + (SELECT count(*) FROM unnest(v_tids) x WHERE x = v_ids[i]),
            last_applied_at = now(),
            shadow_rows = t.shadow_rows + v_in_n[i] - v_dn[i],
            synced_rows = t.synced_rows + v_in_n[i] - v_dn[i],
            primary_rows = t.shadow_rows + v_in_n[i] - v_dn[i]
                           + (SELECT count(*) FROM pgshadow.quarantine q WHERE q.table_id = v_ids[i])
        WHERE t.table_id = v_ids[i];
        IF v_un[i] + v_dn[i] > 0 THEN
            v_written := coalesce(v_written, '{}') || v_ids[i];
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
            SELECT t.table_id, format('%I.%I', t.schema_name, t.shadow_name) AS shadow
            FROM pgshadow.tables t
            WHERE t.migration_id = p_migration_id AND t.shadow_rows IS NOT NULL
              AND to_regclass(format('%I.%I', t.schema_name, t.shadow_name)) IN (SELECT c.rel FROM c)
        LOOP
            EXECUTE format('SELECT count(*) FROM %s', r.shadow) INTO n;  -- r.shadow: built with %I.%I
            UPDATE pgshadow.tables t
            SET synced_rows = t.synced_rows + (n - t.shadow_rows), shadow_rows = n,
                primary_rows = n + (SELECT count(*) FROM pgshadow.quarantine q WHERE q.table_id = r.table_id)
            WHERE t.table_id = r.table_id;
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

    -- Done: exactly the taken entries go, except those of halted tables.
    -- (seqs are unique across tables: one sequence; the range and the
    -- table list let this read the (table_id, seq) index, see _sync_taken)
    DELETE FROM pgshadow.change_log c
    WHERE c.table_id = ANY (v_in) AND NOT c.table_id = ANY (v_halted)
      AND c.seq BETWEEN (SELECT min(x) FROM unnest(v_seqs) x) AND (SELECT max(x) FROM unnest(v_seqs) x)
      AND c.seq = ANY (v_seqs);

    halted := CASE WHEN cardinality(v_why) > 0 THEN array_to_string(v_why, '; ') END;
    RETURN QUERY SELECT taken, upserted, deleted, quarantined, truncated, halted;
END
$fn$;

-- ---------------------------------------------------------------------------
-- backfill_step
-- ---------------------------------------------------------------------------
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
    n        integer;
    v_state  text;
    v_msg    text;
    v_detail text;
    v_prim   bigint;
    v_shad   bigint;
BEGIN
    IF p_chunk IS NULL OR p_chunk < 1 THEN
        RAISE EXCEPTION 'pgshadow: backfill chunk must be positive, not %', p_chunk
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SET CONSTRAINTS ALL IMMEDIATE;   -- a rejected row is quarantined, never a failed COMMIT
    PERFORM pgshadow._sync_lock(p_migration_id);
    -- The first table not done, parents first.
    SELECT r.* INTO t
    FROM pgshadow.tables r JOIN pgshadow._sync_fk_depth(p_migration_id) d USING (table_id)
    WHERE r.migration_id = p_migration_id AND r.backfill_state <> 'done'
    ORDER BY d.depth, r.table_id
    LIMIT 1;
    IF t.table_id IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO st FROM pgshadow._sync_statements(t.table_id);

    IF t.backfill_state = 'pending' OR t.backfill_started_at IS NULL THEN
        t.backfill_total := pgshadow._estimate_rows(t.schema_name, t.table_name);
        IF t.backfill_total = 0 THEN
            -- never analyzed (or empty): a count is cheap either way
            EXECUTE st.count_primary_sql INTO t.backfill_total;
        END IF;
        t.backfill_started_at := now();
        t.backfill_cursor := NULL;
        t.backfill_rows := 0;
        INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
        VALUES (t.migration_id, t.table_name, 'pgshadowd', 'backfill_started', NULL,
                jsonb_build_object('estimated_rows', t.backfill_total, 'chunk', p_chunk));
    END IF;

    -- (cursor, bound] holds p_chunk rows; no bound: the rest of the table.
    EXECUTE st.bf_bound_sql INTO v_bound USING t.backfill_cursor, p_chunk;
    BEGIN
        EXECUTE st.bf_copy_sql USING t.backfill_cursor, v_bound;
        GET DIAGNOSTICS n = ROW_COUNT;
    EXCEPTION WHEN integrity_constraint_violation OR data_exception OR raise_exception THEN
        -- one row at a time; rejected rows go to the quarantine
        n := 0;
        FOR v_key IN EXECUTE st.bf_keys_sql USING t.backfill_cursor, v_bound LOOP
            BEGIN
                EXECUTE st.bf_row_sql USING v_key;
                GET DIAGNOSTICS v_prim = ROW_COUNT;
                n := n + v_prim::integer;
            EXCEPTION WHEN integrity_constraint_violation OR data_exception OR raise_exception THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT,
                                        v_detail = PG_EXCEPTION_DETAIL;
                PERFORM pgshadow._sync_quarantine(t.table_id, v_key, v_state, v_msg, nullif(v_detail, ''),
                                                  'backfill');
            END;
        END LOOP;
    END;

    copied := n;
    table_name := t.table_name;
    IF v_bound IS NOT NULL THEN
        t.backfill_rows := t.backfill_rows + p_chunk;
        UPDATE pgshadow.tables r
        SET backfill_state = 'running', backfill_cursor = v_bound, backfill_rows = t.backfill_rows,
            backfill_total = greatest(t.backfill_total, t.backfill_rows),
            backfill_started_at = t.backfill_started_at
        WHERE r.table_id = t.table_id;
        done := false;
        rows_done := t.backfill_rows;
        rows_total := greatest(t.backfill_total, t.backfill_rows);
    ELSE
        -- Finished: count the shadow (apply keeps the count exact from
        -- here with the rows it inserts and deletes). The primary's count
        -- is derived, not counted: shadow rows plus quarantined keys. A
        -- count of the primary now would include changes apply has yet to
        -- make, which its deltas would then count a second time; derived,
        -- it is exact whenever the change log is drained.
        EXECUTE st.count_shadow_sql INTO v_shad;
        v_prim := v_shad + (SELECT count(*) FROM pgshadow.quarantine q WHERE q.table_id = t.table_id);
        UPDATE pgshadow.tables r
        SET backfill_state = 'done', backfill_rows = v_prim, backfill_total = v_prim,
            backfill_started_at = t.backfill_started_at, backfill_done_at = now(),
            primary_rows = v_prim, shadow_rows = v_shad, synced_rows = v_shad, counted_at = now()
        WHERE r.table_id = t.table_id;
        INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
        VALUES (t.migration_id, t.table_name, 'pgshadowd', 'backfill_done', NULL,
                jsonb_build_object('primary_rows', v_prim, 'shadow_rows', v_shad,
                                   'seconds', round(extract(epoch FROM now() - t.backfill_started_at)::numeric, 3)));
        -- Children applied while this parent was still being copied may
        -- have been rejected for a missing parent row: try them again.
        INSERT INTO pgshadow.change_log (table_id, op, key)
        SELECT q.table_id, 'D', q.key FROM pgshadow.quarantine q
        JOIN pgshadow.tables r ON r.table_id = q.table_id
        WHERE r.migration_id = p_migration_id AND q.sqlstate = '23503'
        ORDER BY q.quarantine_id;
        IF FOUND THEN
            PERFORM pg_notify('pgshadow_changes', '');
        END IF;
        done := true;
        rows_done := v_prim;
        rows_total := v_prim;
    END IF;
    RETURN NEXT;
END
$fn$;

-- ---------------------------------------------------------------------------
-- wakeup_arm
-- ---------------------------------------------------------------------------

-- Arm the migration's wake-up flag: from this commit on, capture triggers
-- NOTIFY pgshadow_changes again (pgshadow--1.sql, pgshadow.wakeup). The
-- daemon calls it when an apply round found the change log empty, and then
-- runs one more apply round: a writer that read "disarmed" before this
-- commit and committed since is caught by that round; one that commits
-- after it is caught by the next NOTIFY of any later write, or at the latest
-- by catchup_interval (docs/sync.md).
CREATE OR REPLACE FUNCTION pgshadow.wakeup_arm(p_migration_id text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    INSERT INTO pgshadow.wakeup AS w (migration_id, armed) VALUES (p_migration_id, true)
    ON CONFLICT (migration_id) DO UPDATE SET armed = true WHERE NOT w.armed
$fn$;

-- ---------------------------------------------------------------------------
-- quarantine_retry, replication_lag_ms
-- ---------------------------------------------------------------------------

-- Re-queue quarantined keys (all when NULL) as 'D' entries ('D' means
-- "check both ways": upsert when the primary row exists, delete when it is
-- gone; an 'I'/'U' entry is never a reason to delete); the next
-- apply_batch re-reads them and removes them from the quarantine when they
-- apply. Returns how many keys were queued.
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
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE ALL ON FUNCTION pgshadow._sync_lock(text), pgshadow._sync_fk_depth(text), pgshadow._sync_statements(integer),
                       pgshadow._sync_quarantine(integer, text[], text, text, text, text),
                       pgshadow._sync_apply_keys(integer, text, text, text, bigint[]),
                       pgshadow._sync_unstick_sql(integer),
                       pgshadow._sync_halt_reason(integer, text, text, text, bigint[], text, text),
                       pgshadow.apply_batch(text, integer, text), pgshadow.backfill_step(text, integer),
                       pgshadow.quarantine_retry(bigint), pgshadow.replication_lag_ms(),
                       pgshadow.wakeup_arm(text)
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.apply_batch(text, integer, text), pgshadow.backfill_step(text, integer),
                          pgshadow.quarantine_retry(bigint), pgshadow.replication_lag_ms(),
                          pgshadow.wakeup_arm(text)
      TO pgshadow_daemon;
GRANT EXECUTE ON FUNCTION pgshadow.quarantine_retry(bigint) TO pgshadow_operator;
GRANT EXECUTE ON FUNCTION pgshadow.replication_lag_ms() TO pgshadow_viewer;
