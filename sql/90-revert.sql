-- 90-revert.sql: reverse sync after a promote, and revert (docs/promote.md
-- "Revert").
--
-- Owns: the registry's reverse_map (migration.tables[].reverse_columns) and
-- reverse_sync (promote set up reverse sync for the table) columns,
-- set_reverse_columns (install), _reverse_columns (where each legacy column
-- comes from), _reverse_apply (change log -> legacy table, called by
-- apply_batch for a promoted migration), revert_plan and revert (the swap
-- back, through 88-promote.sql's _swap).
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list. Idempotent. Plain SQL and PL/pgSQL only.
--
-- With reverse sync (promote's default; `promote --without-revert` or
-- `cutover.promote.keep_legacy: false` turns it off), promote installs
-- pgshadow's capture on the new table t (the former shadow), and every
-- change to it reaches the change log under the table's own id; the daemon's
-- apply_batch then writes t_legacy from t, each legacy column from its
-- source (_reverse_columns), as the table's owner. So t_legacy holds every
-- row of t, in the old schema, and revert swaps back with nothing written
-- in between lost. A row the legacy table rejects is quarantined as in the
-- forward direction (pgshadowctl quarantine), and revert refuses while
-- there is one.
--
-- Invariants:
--  * reverse sync is state-based, like apply: an entry names a key, and
--    the legacy row is made what t's row is when the entry is applied (or
--    deleted when t has none), so entries applied late or twice are
--    harmless;
--  * never a silent lossy revert: a legacy column without a source (a
--    columns: mapping that is not a plain copy, a column the new schema
--    dropped) makes the table not revertable; promote refuses it unless
--    told to promote without revert (docs/promote.md);
--  * no code a table owner controls runs with more rights than the owner:
--    every read of t and write of t_legacy goes through the owner's
--    function (40-trust.sql), as apply's do; the legacy table's own
--    triggers are disabled while reverse sync writes it (promote) and
--    enabled again by revert, so the application's trigger effects are not
--    doubled.

ALTER TABLE pgshadow.tables ADD COLUMN IF NOT EXISTS reverse_map jsonb NOT NULL DEFAULT '{}';
ALTER TABLE pgshadow.tables ADD COLUMN IF NOT EXISTS reverse_sync boolean NOT NULL DEFAULT false;

-- Install: the configured reverse expressions of one table
-- (migration.tables[].reverse_columns: legacy column -> SQL expression over
-- the promoted row "p"). Checked here for names; whether they plan is
-- checked by promote_plan, on the tables as they are then.
CREATE OR REPLACE FUNCTION pgshadow.set_reverse_columns(p_schema text, p_table text, p_map jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_rel oid := to_regclass(format('%I.%I', p_schema, p_table));
    k     text;
BEGIN
    IF jsonb_typeof(coalesce(p_map, '{}')) <> 'object' THEN
        RAISE EXCEPTION 'pgshadow: reverse_columns of %.% must be a mapping', p_schema, p_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR k IN SELECT jsonb_object_keys(coalesce(p_map, '{}')) LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = v_rel AND a.attname = k
                       AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') THEN
            RAISE EXCEPTION 'pgshadow: reverse_columns of %.%: % is not a written column of the table', p_schema,
                            p_table, k USING ERRCODE = 'undefined_column';
        END IF;
        IF k = ANY (SELECT unnest(t.key_columns) FROM pgshadow.tables t
                    WHERE t.schema_name = p_schema AND t.table_name = p_table) THEN
            RAISE EXCEPTION 'pgshadow: reverse_columns of %.%: % is a key column (the key is the row''s identity on '
                            'both sides)', p_schema, p_table, k USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    UPDATE pgshadow.tables t SET reverse_map = coalesce(p_map, '{}')
    WHERE t.schema_name = p_schema AND t.table_name = p_table AND t.promoted_at IS NULL;
END
$fn$;

-- A type with its domains stripped.
CREATE OR REPLACE FUNCTION pgshadow._reverse_base_type(p_type oid)
RETURNS oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH RECURSIVE d (oid, base) AS (
        SELECT t.oid, t.typbasetype FROM pg_type t WHERE t.oid = p_type
        UNION ALL
        SELECT t.oid, t.typbasetype FROM d JOIN pg_type t ON t.oid = d.base WHERE d.base <> 0
    )
    SELECT d.oid FROM d WHERE d.base = 0
$fn$;

-- Where each written column of the legacy table p_legacy comes from, over
-- the new table's row p (p_new): the configured reverse expression; else
-- the new column a plain copy filled from it (columns: absent or
-- "p.<column>"); else nothing, and problem says why. Generated columns are
-- computed by the legacy table itself.
CREATE OR REPLACE FUNCTION pgshadow._reverse_columns(p_table_id integer, p_legacy oid, p_new oid)
RETURNS TABLE (col text, expr text, plain boolean, problem text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT a.attname::text,
           coalesce(t.reverse_map ->> a.attname::text, f.src),
           t.reverse_map ->> a.attname::text IS NULL AND f.src IS NOT NULL,
           CASE WHEN t.reverse_map ? a.attname::text OR f.src IS NOT NULL THEN NULL
                WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(t.column_map) e
                             JOIN pg_attribute n ON n.attrelid = p_new AND n.attname = e ->> 'shadow'
                                                AND NOT n.attisdropped
                             WHERE e ->> 'expr' = format('p.%I', a.attname))
                THEN format('column %I: the new column is %s, the legacy one %s: a value may not come back '
                            'unchanged: give reverse_columns.%s', a.attname,
                            (SELECT format_type(n.atttypid, n.atttypmod) FROM jsonb_array_elements(t.column_map) e
                             JOIN pg_attribute n ON n.attrelid = p_new AND n.attname = e ->> 'shadow'
                                                AND NOT n.attisdropped
                             WHERE e ->> 'expr' = format('p.%I', a.attname) LIMIT 1),
                            format_type(a.atttypid, a.atttypmod), a.attname)
                WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(t.column_map) e
                             WHERE e ->> 'shadow' = a.attname::text)
                THEN format('column %I: the new column is %s, not a plain copy: give reverse_columns.%s',
                            a.attname, (SELECT e ->> 'expr' FROM jsonb_array_elements(t.column_map) e
                                        WHERE e ->> 'shadow' = a.attname::text LIMIT 1), a.attname)
                ELSE format('column %I: the new table has no plain copy of it: give reverse_columns.%s',
                            a.attname, a.attname) END
    FROM pgshadow.tables t
    JOIN pg_attribute a ON a.attrelid = p_legacy AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
    LEFT JOIN LATERAL (
        SELECT format('p.%I', e ->> 'shadow') AS src
        FROM jsonb_array_elements(t.column_map) e
        JOIN pg_attribute n ON n.attrelid = p_new AND n.attname = e ->> 'shadow' AND NOT n.attisdropped
        WHERE e ->> 'expr' = format('p.%I', a.attname)
          -- a copy back only when no value can change on the way: the same
          -- type (a domain over it on the new side is fine), and the legacy
          -- column no narrower (numeric(12,4) -> numeric(10,2) rounds,
          -- timestamp(6) -> timestamp(0) too, silently)
          AND pgshadow._reverse_base_type(n.atttypid) = pgshadow._reverse_base_type(a.atttypid)
          AND (a.atttypmod = -1 OR a.atttypmod = n.atttypmod)
        ORDER BY (e ->> 'shadow') = a.attname::text DESC
        LIMIT 1) f ON true
    WHERE t.table_id = p_table_id
    ORDER BY a.attnum
$fn$;

-- The statements reverse sync runs for one table, as its owner
-- (_sync_run), built from the catalog each call: $1 the keys (each a
-- text[] of the key's column texts, as the change log has them, printed
-- as text); NULL: every row (a TRUNCATE of t).
--   ups: t's rows of those keys into t_legacy (ON CONFLICT on the key);
--   del: t_legacy's rows of those keys that t does not have.
--   unstick: delete t_legacy's rows of those keys (a unique value swapped
--            between keys of a batch: _sync_apply_keys deletes them, then
--            upserts them together); NULL when a foreign key cascades from
--            t_legacy (the delete would reach other rows);
--   keys: every key of t and of t_legacy, as the change log writes them (a
--         TRUNCATE of t whose whole-table write failed is logged again key
--         by key).
-- (Its result row grew: a refresh drops the earlier one. Its callers are
-- PL/pgSQL, nothing depends on it.)
DROP FUNCTION IF EXISTS pgshadow._reverse_sql(integer);
CREATE OR REPLACE FUNCTION pgshadow._reverse_sql(p_table_id integer, OUT ups text, OUT del text,
                                                 OUT unstick text, OUT keys text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t       pgshadow.tables;
    v_new   regclass;
    v_leg   regclass;
    v_cols  text;
    v_exprs text;
    v_set   text;
    v_key   text;
    v_kp    text;   -- p's key = the entry's key
    v_kl    text;   -- l's key = the entry's key
    v_pl    text;   -- p's key = l's key
    v_over  text := '';
BEGIN
    SELECT * INTO STRICT t FROM pgshadow.tables x WHERE x.table_id = p_table_id;
    v_new := format('%I.%I', t.schema_name, t.table_name)::regclass;
    v_leg := format('%I.%I', t.schema_name, t.legacy_name)::regclass;
    -- Every column in the SET, the key columns included: a key can change
    -- spelling without changing identity (numeric 1.0 -> 1.00, 'Alice' ->
    -- 'alice' in a citext key), and the legacy row takes the new one (as
    -- apply does, 80-sync-plan.sql). Not an identity column GENERATED
    -- ALWAYS: an UPDATE may only set it to DEFAULT, and naming it fails
    -- every upsert of the table (it is written on insert, OVERRIDING
    -- SYSTEM VALUE).
    SELECT string_agg(format('%I', r.col), ', '), string_agg(format('(%s)', r.expr), ', '),
           string_agg(format('%1$I = EXCLUDED.%1$I', r.col), ', ') FILTER (WHERE a.attidentity <> 'a')
    INTO v_cols, v_exprs, v_set
    FROM pgshadow._reverse_columns(p_table_id, v_leg, v_new) r
    JOIN pg_attribute a ON a.attrelid = v_leg AND a.attname = r.col;
    IF EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = v_leg AND a.attidentity = 'a' AND NOT a.attisdropped) THEN
        v_over := ' OVERRIDING SYSTEM VALUE';
    END IF;
    SELECT string_agg(format('%I', k.col), ', ' ORDER BY k.o),
           string_agg(format('p.%I %s (k.k[%s])::%s%s', k.col, k.eq, k.o, k.typ, k.coll), ' AND ' ORDER BY k.o),
           string_agg(format('l.%I %s (k.k[%s])::%s%s', k.col, k.eq, k.o, k.typ, k.coll), ' AND ' ORDER BY k.o),
           string_agg(format('p.%1$I %2$s l.%1$I', k.col, k.eq), ' AND ' ORDER BY k.o)
    INTO v_key, v_kp, v_kl, v_pl
    FROM pgshadow._key_spec(v_leg, t.key_columns) k;
    ups := format('#INSERT INTO %s AS l (%s)%s SELECT %s FROM %s AS p WHERE $1 IS NULL OR EXISTS '
                  '(SELECT 1 FROM (SELECT x::text[] AS k FROM unnest($1) x) k WHERE %s) ON CONFLICT (%s) DO %s',
                  v_leg, v_cols, v_over, v_exprs, v_new, v_kp, v_key,
                  CASE WHEN v_set IS NULL THEN 'NOTHING' ELSE 'UPDATE SET ' || v_set END);
    del := format('#DELETE FROM %s AS l WHERE ($1 IS NULL OR EXISTS '
                  '(SELECT 1 FROM (SELECT x::text[] AS k FROM unnest($1) x) k WHERE %s)) '
                  'AND NOT EXISTS (SELECT 1 FROM %s AS p WHERE %s)',
                  v_leg, v_kl, v_new, v_pl);
    IF NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.contype = 'f' AND con.confrelid = v_leg
                   AND con.confdeltype IN ('c', 'n', 'd')) THEN
        unstick := format('#DELETE FROM %s AS l WHERE EXISTS '
                          '(SELECT 1 FROM (SELECT x::text[] AS k FROM unnest($1) x) k WHERE %s)', v_leg, v_kl);
    END IF;
    -- key text through the output function (format's %s), as capture
    -- writes it (50-capture.sql)
    SELECT format('SELECT ARRAY[%1$s] FROM %3$s AS p UNION SELECT ARRAY[%2$s] FROM %4$s AS l',
                  string_agg(format('pg_catalog.format(''%%s'', p.%I)', k.col), ', ' ORDER BY k.o),
                  string_agg(format('pg_catalog.format(''%%s'', l.%I)', k.col), ', ' ORDER BY k.o), v_new, v_leg)
    INTO keys
    FROM pgshadow._key_spec(v_leg, t.key_columns) k;
END
$fn$;

-- Reverse sync, one batch: up to p_limit change log entries of the
-- migration's reverse-synced tables, applied to the legacy tables. Called
-- by apply_batch for a promoted migration (the daemon calls nothing else),
-- with apply_batch's result row. Per table, deletes first (children
-- first), then upserts (parents first), then the deletes that failed
-- again (a parent whose children the upserts moved away); a statement that
-- fails is done again one key at a time, and a key that fails alone is
-- quarantined (phase upsert or delete) while the others go on. The
-- quarantine's retry (pgshadowctl quarantine retry) logs the key again.
CREATE OR REPLACE FUNCTION pgshadow._reverse_apply(p_migration_id text, p_limit integer)
RETURNS TABLE (taken integer, upserted integer, deleted integer, quarantined integer,
               truncated integer, halted text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_ids    integer[];
    v_owner  oid;
    v_sql    record;
    v_keys   text[];
    v_all    boolean;
    v_n      integer := 0;
    v_up     integer := 0;
    v_del    integer := 0;
    v_q      integer := 0;
    v_tr     integer := 0;
    v_pass   integer;
    v_tid    integer;
    v_redo   integer[] := '{}';   -- tables whose deletes failed in pass 1
    v_relog  integer[] := '{}';   -- tables whose TRUNCATE was logged again key by key
    v_failed text[];
    c        bigint;
BEGIN
    -- one applier at a time, as apply (_sync_lock, 80-sync-plan.sql): two
    -- batches on different snapshots could write a key's older state last
    PERFORM pgshadow._sync_lock(p_migration_id);
    SET CONSTRAINTS ALL IMMEDIATE;
    -- the tables, parents first (their foreign keys between the new
    -- tables). Not one whose new or legacy table has FORCE ROW LEVEL
    -- SECURITY: its policies would hide rows of t from the owner, and
    -- reverse sync would delete them from t_legacy; its entries wait in the
    -- log (revert_plan refuses, saying why) while the other tables go on.
    SELECT array_agg(x.table_id ORDER BY d.depth, x.table_id) INTO v_ids
    FROM pgshadow.tables x JOIN pgshadow._sync_fk_depth(p_migration_id, true) d USING (table_id)
    WHERE x.migration_id = p_migration_id AND x.reverse_sync AND NOT pgshadow._rls_forced(x.table_id);
    IF v_ids IS NULL THEN
        RETURN QUERY SELECT 0, 0, 0, 0, 0, NULL::text;
        RETURN;
    END IF;
    -- a retry asked for: the key goes through the log again
    WITH q AS (DELETE FROM pgshadow.quarantine q WHERE q.table_id = ANY (v_ids) AND q.retry_requested
               RETURNING q.table_id, q.key)
    INSERT INTO pgshadow.change_log (table_id, op, key) SELECT q.table_id, 'U', q.key FROM q;

    CREATE TEMP TABLE IF NOT EXISTS reverse_taken (table_id integer, op text, key text[]) ON COMMIT DROP;
    TRUNCATE pg_temp.reverse_taken;
    WITH x AS (
        SELECT l.table_id, l.seq FROM pgshadow.change_log l
        WHERE l.table_id = ANY (v_ids) ORDER BY l.seq LIMIT p_limit FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM pgshadow.change_log l USING x WHERE l.table_id = x.table_id AND l.seq = x.seq
        RETURNING l.table_id, l.op, l.key
    )
    INSERT INTO pg_temp.reverse_taken SELECT * FROM gone;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n = 0 THEN
        RETURN QUERY SELECT 0, 0, 0, 0, 0, NULL::text;
        RETURN;
    END IF;
    -- the daemon drains by itself while there is something (82-sync-apply.sql)
    UPDATE pgshadow.wakeup w SET armed = false WHERE w.migration_id = p_migration_id AND w.armed;

    -- pass 1: deletes, children first; 2: upserts, parents first; 3: the
    -- deletes again
    FOR v_pass IN 1 .. 3 LOOP
        FOR i IN 1 .. cardinality(v_ids) LOOP
            v_tid := CASE WHEN v_pass = 2 THEN v_ids[i] ELSE v_ids[cardinality(v_ids) + 1 - i] END;
            v_all := EXISTS (SELECT 1 FROM pg_temp.reverse_taken x WHERE x.table_id = v_tid AND x.op = 'T');
            SELECT array_agg(DISTINCT x.key::text) INTO v_keys FROM pg_temp.reverse_taken x
            WHERE x.table_id = v_tid AND x.op <> 'T';
            CONTINUE WHEN v_keys IS NULL AND NOT v_all;
            CONTINUE WHEN v_pass = 3 AND v_tid <> ALL (v_redo);
            CONTINUE WHEN v_tid = ANY (v_relog);
            IF v_all THEN
                v_keys := NULL;
                v_tr := v_tr + CASE WHEN v_pass = 1 THEN 1 ELSE 0 END;
            END IF;
            SELECT relowner INTO v_owner FROM pg_class
            WHERE oid = (SELECT format('%I.%I', x.schema_name, x.table_name)::regclass FROM pgshadow.tables x
                         WHERE x.table_id = v_tid);
            PERFORM pgshadow._owner_fn(v_owner);
            SELECT * INTO v_sql FROM pgshadow._reverse_sql(v_tid);
            BEGIN
                SELECT x[1]::bigint INTO c FROM pgshadow._sync_run(v_owner, CASE WHEN v_pass = 2 THEN v_sql.ups
                                                                                ELSE v_sql.del END, v_keys) x;
                IF v_pass = 2 THEN v_up := v_up + c; ELSE v_del := v_del + c; END IF;
                IF v_pass >= 2 THEN
                    DELETE FROM pgshadow.quarantine q WHERE q.table_id = v_tid
                      AND (v_keys IS NULL OR q.key::text = ANY (v_keys));
                END IF;
            EXCEPTION WHEN lock_not_available OR query_canceled OR deadlock_detected OR admin_shutdown
                           OR serialization_failure OR insufficient_resources OR program_limit_exceeded THEN
                RAISE;   -- not the rows': the daemon retries the batch
            WHEN OTHERS THEN
                IF v_pass = 1 THEN
                    v_redo := v_redo || v_tid;   -- pass 3 does them again, after the upserts
                    CONTINUE;
                END IF;
                IF v_keys IS NULL THEN
                    -- a TRUNCATE of t whose whole-table write a row fails:
                    -- every key of both tables goes through the log again,
                    -- so the one that fails is set apart alone (raising
                    -- here failed every batch of the migration, forever)
                    INSERT INTO pgshadow.change_log (table_id, op, key)
                    SELECT v_tid, 'U', x FROM pgshadow._sync_run(v_owner, v_sql.keys) x;
                    v_relog := v_relog || v_tid;
                    CONTINUE;
                END IF;
                -- key by key (halves first, a few rounds, so a key whose
                -- parent row of the same table came later in the batch gets
                -- it; a unique value swapped between keys is repaired): the
                -- one that fails alone is the row's, and is quarantined
                SELECT k.n_rows, k.failed INTO c, v_failed
                FROM pgshadow._sync_apply_keys(v_tid, v_owner, CASE WHEN v_pass = 2 THEN 'upsert' ELSE 'delete' END,
                                               CASE WHEN v_pass = 2 THEN v_sql.ups ELSE v_sql.del END, v_keys,
                                               CASE WHEN v_pass = 2 THEN v_sql.unstick END) k;
                IF v_pass = 2 THEN v_up := v_up + c; ELSE v_del := v_del + c; END IF;
                v_q := v_q + cardinality(v_failed);
                DELETE FROM pgshadow.quarantine q WHERE q.table_id = v_tid AND q.key::text = ANY (v_keys)
                  AND NOT q.key::text = ANY (v_failed) AND q.phase IS DISTINCT FROM 'parse';
                UPDATE pgshadow.quarantine q SET message = 'reverse sync to the legacy table: ' || q.message
                WHERE q.table_id = v_tid AND q.key::text = ANY (v_failed)
                  AND q.message NOT LIKE 'reverse sync to the legacy table: %';
            END;
        END LOOP;
    END LOOP;
    UPDATE pgshadow.tables x SET applied_total = x.applied_total + (SELECT count(*) FROM pg_temp.reverse_taken r
                                                                    WHERE r.table_id = x.table_id),
                                 last_applied_at = now()
    WHERE x.table_id = ANY (v_ids) AND EXISTS (SELECT 1 FROM pg_temp.reverse_taken r WHERE r.table_id = x.table_id);
    RETURN QUERY SELECT v_n, v_up, v_del, v_q, v_tr, NULL::text;
END
$fn$;

-- What revert does with every object: the swap's plan read the other way
-- (88-promote.sql, _swap_plan), one row per object, ok = false for a
-- blocker. `pgshadowctl revert` prints it and refuses on a blocker.
CREATE OR REPLACE FUNCTION pgshadow.revert_plan(p_migration_id text)
RETURNS TABLE (table_name text, kind text, object text, action text, ok boolean)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT * FROM pgshadow._swap_plan(p_migration_id, true, false)
$fn$;

-- Revert a promote (docs/promote.md "Revert"): the same attempts, bounded
-- lock waits and moves as promote (88-promote.sql, _swap), the other way:
-- the reverse change log drained, t -> t_shadow, t_legacy -> t, what
-- depends on t follows it back, the legacy tables' own triggers enabled as
-- they were, pgshadow's tracking columns back on the shadow, forward
-- capture on t again; the cutover row rolled_back at 0%, one event
-- 'cutover reverted'. Forward sync resumes from there: the shadow holds
-- every row (reverse sync kept the legacy tables whole), verify checks it.
CREATE OR REPLACE FUNCTION pgshadow.revert(p_migration_id text, p_rev bigint, p_lock_timeout_ms integer,
                                           p_attempts integer, p_command_id bigint DEFAULT NULL)
RETURNS text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pgshadow._swap(p_migration_id, p_rev, p_lock_timeout_ms, p_attempts, p_command_id, 100, true, false)
$fn$;

REVOKE ALL ON FUNCTION pgshadow.set_reverse_columns(text, text, jsonb),
                       pgshadow._reverse_base_type(oid),
                       pgshadow._reverse_columns(integer, oid, oid),
                       pgshadow._reverse_sql(integer),
                       pgshadow._reverse_apply(text, integer),
                       pgshadow.revert_plan(text),
                       pgshadow.revert(text, bigint, integer, integer, bigint)
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.revert(text, bigint, integer, integer, bigint) TO pgshadow_daemon;
GRANT EXECUTE ON FUNCTION pgshadow.revert_plan(text) TO pgshadow_viewer, pgshadow_operator, pgshadow_daemon;
