-- 89-finalize.sql: finalize a promoted migration (docs/promote.md
-- "Finalize"): drop what promote left behind, when the operator is sure.
--
-- Owns: finalize_plan (what finalize drops, one row per object, and the
-- plan's digest), finalize (drops exactly that, records one event), the
-- cutover status 'finalized' (00-schema.sql's CHECK; src/cutover/machine.c).
--
-- Its own file, not 88-promote.sql: finalize shares no catalog reading with
-- the swap (it reads what promote recorded, pgshadow's registry and the
-- legacy tables' own dependants), and 88 is long already for a reason of
-- its own (its plan and its swap must read the catalog alike).
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.
--
-- What finalize drops, per table t of the migration (t_legacy the old
-- table, t the former shadow, t_shadow the compatibility view): any
-- trigger still calling pgshadow's capture function, the view t_shadow,
-- the table t_legacy (with what is part of it: indexes, constraints, its
-- own triggers and policies, its TOAST table; the plan lists the sequences
-- and statistics objects that go with it by name), pgshadow's capture
-- function of t, the routing flags read_from_shadow_t and shadow_writes_t,
-- t's registry row (with what hangs on it: capture switch, backfill and
-- verify ranges, divergence, read samples, quarantine), its change log and
-- verify queue entries, what promote recorded (promote_moves), the
-- migration's wake-up row. Kept: the new tables and their data, every
-- event and command, the verify passes; the cutover row, whose status
-- becomes 'finalized' (final: the daemon leaves the migration alone).
--
-- Invariants:
--  * by name, no CASCADE: anything that still depends on an object
--    finalize drops (a user's view of t_legacy, a foreign key to it, code
--    naming t_shadow in a view) stops it with the server's list, nothing
--    dropped;
--  * finalize drops what the plan the operator confirmed lists, or nothing:
--    pgshadowctl passes the plan's digest with the command, and finalize
--    refuses when its own plan (read in its transaction) differs;
--  * no code a table owner controls runs with more rights than the owner:
--    the row counts read the legacy tables through the owner's read
--    function (40-trust.sql); DROP runs none of the owner's code (no
--    trigger fires on DROP, event triggers are a superuser's), so the drops
--    run as the installer, who is the owner or a member of its role, as
--    promote's renames do.

-- ---------------------------------------------------------------------------
-- The plan
-- ---------------------------------------------------------------------------

-- The owner's read function (40-trust.sql) when it is in place: a plan is
-- read-only (a viewer reads it), so it does not create one.
CREATE OR REPLACE FUNCTION pgshadow._finalize_can_count(p_owner oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = to_regnamespace('pgshadow_apply')
                   AND p.proname = 'read_' || p_owner AND p.prosecdef AND p.proowner = p_owner
                   AND p.provolatile = 's' AND p.prosrc LIKE '%pgshadow_apply read 1%')
$fn$;

-- What finalize drops, in the order it drops it: one row per object (kind,
-- object, detail), and on every row the digest of the whole plan (what
-- pgshadowctl passes with the command it confirmed). Refuses (SQLSTATE
-- 55000) unless the migration is promoted, every foreign key promote
-- re-pointed is validated or marked invalid, and each <t>_shadow is still
-- the compatibility view promote made. Reads only: pgshadowctl finalize
-- prints it before it asks; a viewer may read it.
CREATE OR REPLACE FUNCTION pgshadow.finalize_plan(p_migration_id text)
RETURNS TABLE (kind text, object text, detail text, digest text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_status text;
    v_rows   jsonb := '[]';
    v_list   text;
    t        record;
    d        record;
    v_l      regclass;   -- the legacy table
    v_n      regclass;   -- the new table
    v_v      regclass;   -- the compatibility view
    v_count  text;
    v_fns    oid[] := '{}';
    v_tables integer[];
    v_n1     bigint;
BEGIN
    SELECT c.status INTO v_status FROM pgshadow.cutover c WHERE c.migration_id = p_migration_id;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'pgshadow: migration % has no cutover row (not installed?)', p_migration_id
            USING ERRCODE = 'undefined_object';
    END IF;
    IF v_status = 'finalized' THEN
        RAISE EXCEPTION 'pgshadow: finalize refused: migration % is finalized already', p_migration_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF v_status <> 'promoted' THEN
        RAISE EXCEPTION 'pgshadow: finalize refused: the cutover of % is %: finalize follows a promote',
                        p_migration_id, v_status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT string_agg(x.table_name, ', ' ORDER BY x.table_id) INTO v_list
    FROM pgshadow.tables x WHERE x.migration_id = p_migration_id AND (x.promoted_at IS NULL OR x.legacy_name IS NULL);
    IF v_list IS NOT NULL OR NOT EXISTS (SELECT 1 FROM pgshadow.tables x WHERE x.migration_id = p_migration_id) THEN
        RAISE EXCEPTION 'pgshadow: finalize refused: not every table of % is promoted (%)', p_migration_id,
                        coalesce(v_list, 'no table registered')
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT string_agg(m.object, ', ' ORDER BY m.move_id) INTO v_list
    FROM pgshadow.promote_moves m WHERE m.migration_id = p_migration_id AND m.state = 'to_validate';
    IF v_list IS NOT NULL THEN
        RAISE EXCEPTION 'pgshadow: finalize refused: foreign keys promote re-pointed are not validated yet: %', v_list
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'The leading pgshadowd validates them after the promote (pgshadowctl events says when); then finalize again.';
    END IF;
    SELECT array_agg(x.table_id ORDER BY x.table_id) INTO v_tables
    FROM pgshadow.tables x WHERE x.migration_id = p_migration_id;

    FOR t IN SELECT x.* FROM pgshadow.tables x WHERE x.table_id = ANY (v_tables) ORDER BY x.table_id LOOP
        v_n := to_regclass(format('%I.%I', t.schema_name, t.table_name));
        v_v := to_regclass(format('%I.%I', t.schema_name, t.shadow_name));
        IF v_v IS NOT NULL AND ((SELECT relkind FROM pg_class WHERE oid = v_v) <> 'v'
                                OR EXISTS (SELECT 1 FROM pg_rewrite r JOIN pg_depend dp
                                             ON dp.classid = 'pg_rewrite'::regclass AND dp.objid = r.oid
                                           WHERE r.ev_class = v_v AND dp.refclassid = 'pg_class'::regclass
                                             AND dp.refobjid NOT IN (v_v, v_n))) THEN
            RAISE EXCEPTION 'pgshadow: finalize refused: %.% is not the compatibility view promote made (a view of %.% alone)',
                            quote_ident(t.schema_name), quote_ident(t.shadow_name),
                            quote_ident(t.schema_name), quote_ident(t.table_name)
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Rename it, or drop it yourself, then finalize again.';
        END IF;
        v_l := to_regclass(format('%I.%I', t.schema_name, t.legacy_name));
        IF v_l IS NOT NULL AND t.legacy_oid IS NOT NULL AND v_l::oid <> t.legacy_oid THEN
            RAISE EXCEPTION 'pgshadow: finalize refused: %.% is not the legacy table promote left (that one was '
                            'dropped and this one made since)', quote_ident(t.schema_name), quote_ident(t.legacy_name)
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Rename it, or drop it yourself, then finalize again.';
        END IF;
        IF to_regprocedure(format('pgshadow.%I()', 'capture_' || t.table_id)) IS NOT NULL THEN
            v_fns := v_fns || to_regprocedure(format('pgshadow.%I()', 'capture_' || t.table_id))::oid;
        END IF;
    END LOOP;

    -- 10: pgshadow's triggers left anywhere: on a relation of the
    -- migration (promote dropped capture from the primary; the shadow never
    -- had it), or calling one of its capture functions (a partition
    -- detached, a table renamed)
    FOR d IN SELECT DISTINCT g.oid, g.tgname, g.tgrelid
             FROM pg_trigger g JOIN pg_proc p ON p.oid = g.tgfoid
             WHERE g.tgparentid = 0 AND NOT g.tgisinternal
               AND (g.tgfoid = ANY (v_fns)
                    OR (p.pronamespace = 'pgshadow'::regnamespace
                        AND g.tgrelid IN (SELECT to_regclass(format('%I.%I', x.schema_name, y.n))
                                          FROM pgshadow.tables x,
                                               LATERAL (VALUES (x.table_name), (x.legacy_name)) y(n)
                                          WHERE x.table_id = ANY (v_tables))))
             ORDER BY g.tgrelid, g.tgname LOOP
        v_rows := v_rows || jsonb_build_object('ord', 10, 'kind', 'pgshadow trigger',
                                               'object', format('%I on %s', d.tgname, d.tgrelid::regclass),
                                               'detail', CASE WHEN EXISTS (SELECT 1 FROM pgshadow.tables x
                                                                          WHERE x.table_id = ANY (v_tables)
                                                                            AND x.reverse_sync)
                                                              THEN 'reverse sync''s capture: revert is gone with it'
                                                              ELSE 'capture left behind' END);
    END LOOP;

    FOR t IN SELECT x.* FROM pgshadow.tables x WHERE x.table_id = ANY (v_tables) ORDER BY x.table_id LOOP
        v_n := to_regclass(format('%I.%I', t.schema_name, t.table_name));
        v_v := to_regclass(format('%I.%I', t.schema_name, t.shadow_name));
        v_l := to_regclass(format('%I.%I', t.schema_name, t.legacy_name));
        -- 20: the compatibility view
        IF v_v IS NOT NULL THEN
            v_rows := v_rows || jsonb_build_object('ord', 20, 'kind', 'compatibility view', 'object', v_v::text,
                'detail', format('a view of %s: code that still names %s fails after finalize', v_n, v_v));
        END IF;
        -- 30: the legacy table, its rows counted as its owner
        IF v_l IS NOT NULL THEN
            IF pgshadow._finalize_can_count((SELECT relowner FROM pg_class WHERE oid = v_l)) THEN
                SELECT x[1] INTO v_count FROM pgshadow._sync_read((SELECT relowner FROM pg_class WHERE oid = v_l),
                                                                 format('SELECT ARRAY[count(*)::text] FROM %s', v_l)) x;
                v_count := v_count || ' rows';
            ELSE
                v_count := format('about %s rows (its owner''s read function is not in place: not counted)',
                                  (SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = v_l));
            END IF;
            SELECT count(*) INTO v_n1 FROM pg_constraint c WHERE c.conrelid = v_l;
            v_rows := v_rows || jsonb_build_object('ord', 30, 'kind', 'legacy table', 'object', v_l::text,
                'volatile', t.reverse_sync,
                'detail', format('%s%s; with it its %s index(es), %s constraint(s), %s trigger(s), %s policy(ies)',
                                 v_count, CASE WHEN t.reverse_sync THEN ' now (reverse-synced: they follow the writes)'
                                               ELSE '' END,
                                 (SELECT count(*) FROM pg_index i WHERE i.indrelid = v_l),
                                 v_n1,
                                 (SELECT count(*) FROM pg_trigger g WHERE g.tgrelid = v_l AND NOT g.tgisinternal),
                                 (SELECT count(*) FROM pg_policy y WHERE y.polrelid = v_l)));
            -- 31: what goes with it that has a name of its own: the
            -- sequences its columns own (an identity's), statistics objects
            FOR d IN SELECT s.oid::regclass AS seq, a.attname
                     FROM pg_depend dp
                     JOIN pg_class s ON s.oid = dp.objid AND s.relkind = 'S'
                     JOIN pg_attribute a ON a.attrelid = v_l AND a.attnum = dp.refobjsubid
                     WHERE dp.classid = 'pg_class'::regclass AND dp.refclassid = 'pg_class'::regclass
                       AND dp.refobjid = v_l AND dp.deptype IN ('a', 'i')
                     ORDER BY s.oid LOOP
                v_rows := v_rows || jsonb_build_object('ord', 31, 'kind', 'sequence', 'object', d.seq::text,
                    'detail', format('owned by %s.%I: goes with it', v_l, d.attname));
            END LOOP;
            FOR d IN SELECT x.oid, format('%I.%I', x.stxnamespace::regnamespace, x.stxname) AS nm
                     FROM pg_statistic_ext x WHERE x.stxrelid = v_l ORDER BY x.oid LOOP
                v_rows := v_rows || jsonb_build_object('ord', 32, 'kind', 'statistics', 'object', d.nm,
                    'detail', format('on %s: goes with it', v_l));
            END LOOP;
        END IF;
        -- 40: pgshadow's capture function of the table
        IF to_regprocedure(format('pgshadow.%I()', 'capture_' || t.table_id)) IS NOT NULL THEN
            v_rows := v_rows || jsonb_build_object('ord', 40, 'kind', 'capture function',
                'object', to_regprocedure(format('pgshadow.%I()', 'capture_' || t.table_id))::text,
                'detail', format('capture of %I.%I, unused since the promote', t.schema_name, t.table_name));
        END IF;
        -- 50: its routing flags (read_from_shadow answers 0, the new
        -- table, without them)
        FOR d IN SELECT f.name, f.value FROM pgshadow.flags f
                 WHERE f.table_id = t.table_id
                    OR f.name IN ('read_from_shadow_' || t.table_name, 'shadow_writes_' || t.table_name)
                 ORDER BY f.name LOOP
            v_rows := v_rows || jsonb_build_object('ord', 50, 'kind', 'routing flag', 'object', d.name,
                'detail', format('value %s', d.value));
        END LOOP;
        -- 60: the registry row, with what hangs on it
        v_rows := v_rows || jsonb_build_object('ord', 60, 'kind', 'registry row',
            'object', format('pgshadow.tables %I.%I', t.schema_name, t.table_name),
            'detail', format('table_id %s; with it its capture switch, backfill and verify ranges, '
                             'divergence, read samples, %s quarantined key(s)',
                             t.table_id, (SELECT count(*) FROM pgshadow.quarantine q WHERE q.table_id = t.table_id)));
        -- 70: pending entries (none after a promote, unless written since by hand)
        SELECT count(*) INTO v_n1 FROM pgshadow.change_log l WHERE l.table_id = t.table_id;
        IF v_n1 > 0 THEN
            v_rows := v_rows || jsonb_build_object('ord', 70, 'kind', 'change log', 'volatile', t.reverse_sync,
                'object', format('pgshadow.change_log %I.%I', t.schema_name, t.table_name),
                'detail', format('%s entries', v_n1));
        END IF;
        SELECT count(*) INTO v_n1 FROM pgshadow.verify_queue q WHERE q.table_id = t.table_id;
        IF v_n1 > 0 THEN
            v_rows := v_rows || jsonb_build_object('ord', 71, 'kind', 'verify queue',
                'object', format('pgshadow.verify_queue %I.%I', t.schema_name, t.table_name),
                'detail', format('%s entries', v_n1));
        END IF;
    END LOOP;
    -- 80: what promote recorded, the wake-up row; 90: the cutover row stays
    SELECT count(*) INTO v_n1 FROM pgshadow.promote_moves m WHERE m.migration_id = p_migration_id;
    IF v_n1 > 0 THEN
        v_rows := v_rows || jsonb_build_object('ord', 80, 'kind', 'promote record', 'object', 'pgshadow.promote_moves',
            'detail', format('%s row(s): the statements promote ran (its event keeps the summary)', v_n1));
    END IF;
    IF EXISTS (SELECT 1 FROM pgshadow.wakeup w WHERE w.migration_id = p_migration_id) THEN
        v_rows := v_rows || jsonb_build_object('ord', 81, 'kind', 'wake-up row', 'object', 'pgshadow.wakeup',
            'detail', format('of %s', p_migration_id));
    END IF;
    v_rows := v_rows || jsonb_build_object('ord', 90, 'kind', 'cutover', 'object', p_migration_id,
        'detail', 'kept: promoted -> finalized; every event and command kept');

    -- The digest: the plan as printed, but for what reverse sync changes
    -- with every write (a reverse-synced legacy table's row count, its
    -- pending entries): the objects stay, their counts move
    RETURN QUERY
    SELECT e ->> 'kind', e ->> 'object', e ->> 'detail',
           md5((SELECT coalesce(jsonb_agg(CASE WHEN (y.e ->> 'volatile')::boolean THEN y.e - 'detail' ELSE y.e END
                                          ORDER BY y.o), '[]')
                FROM jsonb_array_elements(v_rows) WITH ORDINALITY y(e, o)
                WHERE NOT (y.e ->> 'ord' = '70' AND (y.e ->> 'volatile')::boolean))::text)
    FROM jsonb_array_elements(v_rows) WITH ORDINALITY x(e, o)
    ORDER BY (e ->> 'ord')::integer, x.o;
END
$fn$;

-- ---------------------------------------------------------------------------
-- Finalize
-- ---------------------------------------------------------------------------

-- Drop what finalize_plan lists, in the command's transaction, called by
-- the leading daemon for `pgshadowctl finalize` with the cutover's rev it
-- decided on and the command (whose args carry the digest of the plan the
-- operator confirmed: {"plan": "<digest>"}). Each lock is waited for at
-- most p_lock_timeout_ms (a busy one fails the call, naming the sessions
-- that hold it; nothing is dropped). By name and without
-- CASCADE: pgshadow's triggers, the compatibility views, the legacy tables
-- (one statement: their foreign keys to each other), the capture
-- functions, and pgshadow's rows; the cutover row becomes 'finalized' and
-- one event 'cutover finalized' lists every object dropped. Returns a
-- summary.
CREATE OR REPLACE FUNCTION pgshadow.finalize(p_migration_id text, p_rev bigint, p_command_id bigint,
                                             p_lock_timeout_ms integer DEFAULT 2000)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c        pgshadow.cutover;
    v_who    text;
    v_args   jsonb;
    v_plan   jsonb;
    v_digest text;
    v_list   text;
    v_holders integer[];
    v_msg    text;
    v_detail text;
    v_lt     text;
    v_pids   text;
    v_tables integer[];
    v_sum    text;
    v_stmts  text[];
    v_stmt   text;
    v_rels   regclass[];
    v_lk     record;
    v_dl_ms  double precision;
    v_budget double precision;
    v_start  timestamptz;
    v_t0     timestamptz;
BEGIN
    IF p_lock_timeout_ms IS NULL OR p_lock_timeout_ms < 1 THEN
        RAISE EXCEPTION 'pgshadow: finalize needs a lock_timeout > 0' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO c FROM pgshadow.cutover x WHERE x.migration_id = p_migration_id FOR UPDATE;
    IF c.rev IS DISTINCT FROM p_rev THEN
        RAISE EXCEPTION 'pgshadow: the cutover state of % changed while this was decided (rev % is now %)',
                        p_migration_id, p_rev, c.rev USING ERRCODE = 'serialization_failure';
    END IF;
    SELECT x.requested_by, x.args INTO v_who, v_args FROM pgshadow.commands x
    WHERE x.command_id = p_command_id AND x.state = 'running' AND x.command = 'finalize'
      AND x.migration_id IS NOT DISTINCT FROM p_migration_id;
    IF v_who IS NULL THEN
        RAISE EXCEPTION 'pgshadow: finalize runs for a running finalize command of % (command % is not one)',
                        p_migration_id, p_command_id USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- the plan, as the operator saw it or not at all
    SELECT jsonb_agg(jsonb_build_object('kind', p.kind, 'object', p.object, 'detail', p.detail) ORDER BY p.o),
           min(p.digest)
    INTO v_plan, v_digest FROM pgshadow.finalize_plan(p_migration_id) WITH ORDINALITY p(kind, object, detail, digest, o);
    IF v_args ->> 'plan' IS NULL THEN
        RAISE EXCEPTION 'pgshadow: finalize refused: the command does not say which plan was confirmed'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Use pgshadowctl finalize: it shows the plan and sends the one confirmed.';
    END IF;
    IF v_args ->> 'plan' <> v_digest THEN
        RAISE EXCEPTION 'pgshadow: finalize refused, nothing dropped: the plan changed since it was confirmed'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'pgshadowctl finalize shows the plan as it is now.';
    END IF;
    SELECT array_agg(x.table_id ORDER BY x.table_id) INTO v_tables
    FROM pgshadow.tables x WHERE x.migration_id = p_migration_id;

    -- the drops, by name, no CASCADE, in attempts within p_lock_timeout_ms
    -- (LOCK TABLE is not used: on a view it would lock the new table under
    -- it too, and the application with it; DROP VIEW locks the view
    -- alone). With reverse sync its capture triggers are on the new tables,
    -- which the application writes: an attempt's lock waits together last
    -- at most 80% of deadlock_timeout, so a session that queues behind a
    -- lock it holds (it began waiting after the attempt began) has its
    -- deadlock check only after the attempt gave up: finalize never ends
    -- an application transaction in a deadlock (as promote, 88-promote.sql).
    -- A busy relation past p_lock_timeout_ms fails it all, naming the
    -- sessions that held it from before; what still depends on an object
    -- stops it all, with the server's list.
    SELECT coalesce(array_agg(DISTINCT h), '{}') INTO v_holders
    FROM jsonb_array_elements(v_plan) p, unnest(pgshadow._promote_holders((p ->> 'object')::regclass)) h
    WHERE p ->> 'kind' IN ('compatibility view', 'legacy table');
    SELECT array_agg(x.sql ORDER BY x.o) INTO v_stmts FROM (
        SELECT 'DROP TRIGGER ' || (p ->> 'object') AS sql, o   -- "%I on <regclass>", as the plan printed it
        FROM jsonb_array_elements(v_plan) WITH ORDINALITY y(p, o) WHERE p ->> 'kind' = 'pgshadow trigger'
        UNION ALL
        SELECT 'DROP VIEW ' || string_agg(p ->> 'object', ', '), 1000000
        FROM jsonb_array_elements(v_plan) p WHERE p ->> 'kind' = 'compatibility view' HAVING count(*) > 0
        UNION ALL   -- one statement: the legacy tables' foreign keys to each other
        SELECT 'DROP TABLE ' || string_agg(p ->> 'object', ', '), 1000001
        FROM jsonb_array_elements(v_plan) p WHERE p ->> 'kind' = 'legacy table' HAVING count(*) > 0
        UNION ALL
        SELECT 'DROP FUNCTION ' || string_agg(p ->> 'object', ', '), 1000002
        FROM jsonb_array_elements(v_plan) p WHERE p ->> 'kind' = 'capture function' HAVING count(*) > 0) x;
    -- what the drops lock first, all or none (88-promote.sql's _lock_all):
    -- the legacy tables, and with reverse sync the new tables its capture
    -- triggers are on (the application's: never waited for while holding)
    SELECT array_agg(DISTINCT x.rel) INTO v_rels FROM (
        SELECT (p ->> 'object')::regclass AS rel FROM jsonb_array_elements(v_plan) p
        WHERE p ->> 'kind' = 'legacy table'
        UNION ALL
        SELECT to_regclass(format('%I.%I', t.schema_name, t.table_name)) FROM pgshadow.tables t
        WHERE t.table_id = ANY (v_tables) AND t.reverse_sync) x;
    v_lt := current_setting('lock_timeout');
    v_dl_ms := extract(epoch FROM current_setting('deadlock_timeout')::interval) * 1000;
    v_start := clock_timestamp();
    LOOP
        v_budget := least(p_lock_timeout_ms - extract(epoch FROM clock_timestamp() - v_start) * 1000, v_dl_ms * 0.8);
        v_t0 := clock_timestamp();
        BEGIN
            SELECT * INTO v_lk FROM pgshadow._lock_all(v_rels, NULL, v_t0 + make_interval(secs => v_budget / 1000));
            IF v_lk.busy IS NOT NULL THEN
                RAISE EXCEPTION 'pgshadow: finalize: % was not granted in time', v_lk.busy
                    USING ERRCODE = CASE WHEN v_lk.deadlock THEN '40P01' ELSE '55P03' END;
            END IF;
            FOREACH v_stmt IN ARRAY coalesce(v_stmts, '{}') LOOP
                PERFORM set_config('lock_timeout',
                                   greatest((v_budget - extract(epoch FROM clock_timestamp() - v_t0) * 1000)::bigint, 1)
                                   || 'ms', true);
                EXECUTE v_stmt;
            END LOOP;
            EXIT;
        EXCEPTION
        WHEN lock_not_available OR deadlock_detected THEN
            -- this attempt's locks are released: who holds one of these
            -- now, and held it before (not those that queued behind the drop)
            IF clock_timestamp() - v_start + interval '50 ms' < make_interval(secs => p_lock_timeout_ms / 1000.0) THEN
                PERFORM pg_sleep(0.02 + 0.03 * random());
                CONTINUE;
            END IF;
            PERFORM pg_stat_clear_snapshot();
            SELECT string_agg(format('pid %s (%s, %s, in transaction %s s): %s', a.pid, a.usename, a.state,
                                     round(extract(epoch FROM clock_timestamp() - a.xact_start)::numeric, 1),
                                     left(a.query, 100)), '; ' ORDER BY a.pid)
            INTO v_pids FROM pg_stat_activity a
            WHERE a.pid = ANY (v_holders)
              AND EXISTS (SELECT 1 FROM pg_locks l, jsonb_array_elements(v_plan) p
                          WHERE l.pid = a.pid AND l.granted AND l.locktype = 'relation'
                            AND p ->> 'kind' IN ('compatibility view', 'legacy table')
                            AND l.relation = (p ->> 'object')::regclass);
            RAISE EXCEPTION 'pgshadow: finalize gave up, nothing dropped: a lock was not granted within % ms%',
                            p_lock_timeout_ms, coalesce('; held by ' || v_pids, '')
                USING ERRCODE = 'lock_not_available',
                      HINT = 'Who still reads a legacy table or a compatibility view? End or wait out the sessions named, then finalize again.';
        WHEN dependent_objects_still_exist THEN
            GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
            RAISE EXCEPTION 'pgshadow: finalize stopped, nothing dropped: %: %', v_msg,
                            replace(coalesce(nullif(v_detail, ''), '?'), E'\n', '; ')
                USING ERRCODE = 'dependent_objects_still_exist',
                      HINT = 'Drop or change what depends on it (or keep it, and do not finalize), then finalize again.';
        END;
    END LOOP;

    PERFORM set_config('lock_timeout', v_lt, true);

    -- pgshadow's own rows: the flags (read_from_shadow_<t> gone answers 0:
    -- the primary, which is the new table), the registry rows and what
    -- hangs on them, pending entries, what promote recorded
    DELETE FROM pgshadow.flags f
    WHERE f.name IN (SELECT p ->> 'object' FROM jsonb_array_elements(v_plan) p WHERE p ->> 'kind' = 'routing flag');
    DELETE FROM pgshadow.change_log l WHERE l.table_id = ANY (v_tables);
    DELETE FROM pgshadow.verify_queue q WHERE q.table_id = ANY (v_tables);
    DELETE FROM pgshadow.promote_moves m WHERE m.migration_id = p_migration_id;
    DELETE FROM pgshadow.tables x WHERE x.table_id = ANY (v_tables);
    DELETE FROM pgshadow.wakeup w WHERE w.migration_id = p_migration_id;

    SELECT string_agg(format('%s %s', n, CASE WHEN n = 1 THEN k ELSE k || 's' END), ', ' ORDER BY o)
    INTO v_sum
    FROM (SELECT p ->> 'kind' AS k, count(*) AS n, min(o) AS o
          FROM jsonb_array_elements(v_plan) WITH ORDINALITY x(p, o)
          WHERE p ->> 'kind' <> 'cutover' GROUP BY p ->> 'kind') s;
    v_sum := format('finalized %s: dropped %s', p_migration_id, coalesce(v_sum, 'nothing'));
    -- the state (no event of cutover_write's: the one event is below, with
    -- the list), compare-and-set on the rev read above
    PERFORM pgshadow.cutover_write(p_migration_id, p_rev,
        jsonb_build_object('status', 'finalized', 'stage', c.stage, 'percent', c.percent,
                           'hold_earned_ms', (extract(epoch FROM c.hold_earned) * 1000)::bigint,
                           'hold_extra_ms', (extract(epoch FROM c.hold_extra) * 1000)::bigint,
                           'failures', 0, 'last_good', coalesce(c.last_good_stage, 0)),
        NULL, NULL, v_sum, p_command_id);
    INSERT INTO pgshadow.events (migration_id, who, what, why, before, after)
    VALUES (p_migration_id, v_who, 'cutover finalized',
            v_sum || coalesce(' (reason: ' || (v_args ->> 'reason') || ')', ''),
            jsonb_build_object('status', c.status, 'stage', c.stage, 'percent', c.percent),
            jsonb_build_object('status', 'finalized', 'stage', c.stage, 'percent', c.percent,
                               'command_id', p_command_id, 'plan', v_digest,
                               'dropped', (SELECT jsonb_agg(p) FROM jsonb_array_elements(v_plan) p
                                           WHERE p ->> 'kind' <> 'cutover')));
    RETURN v_sum;
END
$fn$;

-- Privileges: the daemon finalizes (operators ask through the queue);
-- everyone who may read the status may read the plan.
REVOKE ALL ON FUNCTION pgshadow._finalize_can_count(oid),
                       pgshadow.finalize_plan(text),
                       pgshadow.finalize(text, bigint, bigint, integer)
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.finalize(text, bigint, bigint, integer) TO pgshadow_daemon;
GRANT EXECUTE ON FUNCTION pgshadow.finalize_plan(text) TO pgshadow_viewer, pgshadow_operator, pgshadow_daemon;
