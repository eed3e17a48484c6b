-- 60-registry.sql: the registry: register_table, finish_install, uninstall
--
-- Owns: what install and uninstall do to a table (the checks, the shadow
-- table install creates, the grants it records), and their helpers.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- ---------------------------------------------------------------------------
-- Install helpers
-- ---------------------------------------------------------------------------

-- Grant p_privs on a table to a role unless the role already has them;
-- record what was granted so uninstall revokes exactly that.
CREATE OR REPLACE FUNCTION pgshadow._grant_table(p_rel regclass, p_privs text[], p_role text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_priv text;
BEGIN
    FOREACH v_priv IN ARRAY p_privs LOOP
        IF NOT has_table_privilege(p_role, p_rel, v_priv) THEN
            EXECUTE format('GRANT %s ON TABLE %s TO %I', v_priv, p_rel, p_role);
            INSERT INTO pgshadow.grants_added VALUES ('TABLE', p_rel::text, v_priv, p_role)
            ON CONFLICT DO NOTHING;
        END IF;
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION pgshadow._grant_schema_usage(p_schema text, p_role text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT has_schema_privilege(p_role, p_schema, 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', p_schema, p_role);
        INSERT INTO pgshadow.grants_added VALUES ('SCHEMA', quote_ident(p_schema), 'USAGE', p_role)
        ON CONFLICT DO NOTHING;
    END IF;
END
$fn$;

-- ---------------------------------------------------------------------------
-- register_table
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgshadow.register_table(p_schema text, p_table text, p_key text[],
                                                   p_shadow_suffix text, p_migration_id text,
                                                   p_columns jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_rel        oid;
    v_kind       "char";
    v_qual       text;
    v_key        text[];
    v_key_types  text[];
    v_shadow     text;
    v_shadow_rel oid;
    v_created    boolean := false;
    v_cols       jsonb := coalesce(p_columns, '{}');
    v_map        jsonb;
    v_hash       text;
    v_shash      text;
    v_mode       text;
    v_id         integer;
    v_old        pgshadow.tables;
    v_tracking   constant text[] := pgshadow._tracking_columns();
    r            record;
    v_owner      oid;
BEGIN
    -- Every rule a table must meet lives in 05-rules.sql, where the
    -- preflight (pgshadowctl check) applies the very same functions: the
    -- first problem found stops the install.
    SELECT * INTO r FROM pgshadow._table_problems(p_schema, p_table, p_key, p_shadow_suffix,
                                                  p_migration_id, p_columns) LIMIT 1;
    IF FOUND THEN
        PERFORM pgshadow._raise_problem(r.code, r.message, r.detail, r.hint);
    END IF;
    v_qual := format('%I.%I', p_schema, p_table);
    -- The partition DDL event trigger stays out of install's own DDL.
    PERFORM set_config('pgshadow.installing', 'on', true);

    SELECT c.oid, c.relkind, c.relowner INTO v_rel, v_kind, v_owner
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = p_schema AND c.relname = p_table;
    v_key := pgshadow._table_key(v_rel, p_key);
    SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY u.o) INTO v_key_types
    FROM unnest(v_key) WITH ORDINALITY u(k, o)
    JOIN pg_attribute a ON a.attrelid = v_rel AND a.attname = u.k;

    v_shadow := p_table || p_shadow_suffix;
    SELECT c.oid INTO v_shadow_rel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = p_schema AND c.relname = v_shadow AND c.relkind IN ('r', 'p');

    SELECT * INTO v_old FROM pgshadow.tables WHERE schema_name = p_schema AND table_name = p_table;

    IF v_shadow_rel IS NULL THEN
        -- Create it from the primary: columns, defaults, NOT NULL/CHECK,
        -- indexes, generated columns; identity columns become plain columns
        -- (the daemon writes explicit values). Foreign keys: finish_install.
        EXECUTE format(
            'CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES '
            'INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMPRESSION INCLUDING COMMENTS, %s, CHECK (%s))',
            p_schema, v_shadow, p_schema, p_table,
            (SELECT string_agg(format('%I %s', c.col, c.def), ', ')
             FROM pgshadow._tracking_column_defs(p_table, p_migration_id) c),
            pgshadow._tracking_status_check());
        EXECUTE format('COMMENT ON TABLE %I.%I IS %L', p_schema, v_shadow,
                       format('pgshadow shadow of %s (migration %s)', v_qual, p_migration_id));
        SELECT c.oid INTO STRICT v_shadow_rel
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = p_schema AND c.relname = v_shadow;
        -- The shadow belongs to the primary's owner: it becomes the
        -- primary at promote, and its constraints run as that owner.
        IF v_owner <> (SELECT oid FROM pg_roles WHERE rolname = current_user) THEN
            EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', p_schema, v_shadow,
                           (SELECT rolname FROM pg_roles WHERE oid = v_owner));
        END IF;
        v_created := true;
    ELSE
        v_created := coalesce(v_old.shadow_created, false);
    END IF;
    PERFORM pgshadow._owner_fn(v_owner);

    -- Check the shadow (also the one just created: the columns: mapping
    -- must name its columns), every problem at once.
    SELECT * INTO r FROM pgshadow._shadow_problems(p_schema, v_shadow, v_rel, v_shadow_rel, v_key,
                                                   v_cols, false);
    IF FOUND THEN
        PERFORM pgshadow._raise_problem(r.code, r.message, r.detail, r.hint);
    END IF;

    -- The column map in shadow column order: every shadow column that is
    -- written (not generated, not tracking) with its source expression.
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'shadow', s.attname::text,
               'expr', CASE WHEN v_cols ? s.attname::text THEN v_cols ->> s.attname::text
                            ELSE format('p.%I', s.attname) END,
               'type', format_type(s.atttypid, s.atttypmod)) ORDER BY s.attnum), '[]'::jsonb)
    INTO v_map
    FROM pg_attribute s
    WHERE s.attrelid = v_shadow_rel AND s.attnum > 0 AND NOT s.attisdropped AND s.attgenerated = ''
      AND NOT (s.attname::text = ANY (v_tracking))
      AND (v_cols ? s.attname::text
           OR EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = v_rel AND a.attname = s.attname
                      AND a.attnum > 0 AND NOT a.attisdropped));

    -- Canonical row hash (docs/database.md): sha256 of the text of the row
    -- of the mapped values, in shadow column order, under TimeZone UTC.
    SELECT 'encode(sha256(convert_to((ROW('
           || string_agg(format('(%s)::%s', m ->> 'expr', m ->> 'type'), ', ' ORDER BY o)
           || '))::text, ''UTF8'')), ''hex'')',
           'encode(sha256(convert_to((ROW('
           || string_agg(format('s.%I', m ->> 'shadow'), ', ' ORDER BY o)
           || '))::text, ''UTF8'')), ''hex'')'
    INTO v_hash, v_shash
    FROM jsonb_array_elements(v_map) WITH ORDINALITY AS x(m, o);

    SELECT value INTO v_mode FROM pgshadow.meta WHERE key = 'capture_mode';
    v_mode := coalesce(v_mode, 'row');
    IF v_mode NOT IN ('row', 'statement') THEN
        RAISE EXCEPTION 'pgshadow: meta capture_mode is %, not row or statement', v_mode
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Statement triggers on a partitioned table do not fire for writes made
    -- directly to a partition; only cloned row triggers catch those.
    IF v_kind = 'p' THEN
        v_mode := 'row';
    END IF;

    INSERT INTO pgshadow.tables AS t (schema_name, table_name, shadow_name, migration_id, key_columns, key_types,
                                      column_map, hash_expr, shadow_hash_expr, capture_mode, shadow_created,
                                      partitioned)
    VALUES (p_schema, p_table, v_shadow, p_migration_id, v_key, v_key_types, v_map, v_hash, v_shash,
            v_mode, v_created, v_kind = 'p')
    ON CONFLICT (schema_name, table_name) DO UPDATE
        SET shadow_name = EXCLUDED.shadow_name, migration_id = EXCLUDED.migration_id,
            key_columns = EXCLUDED.key_columns, key_types = EXCLUDED.key_types,
            column_map = EXCLUDED.column_map, hash_expr = EXCLUDED.hash_expr,
            shadow_hash_expr = EXCLUDED.shadow_hash_expr, capture_mode = EXCLUDED.capture_mode,
            partitioned = EXCLUDED.partitioned
    RETURNING table_id INTO v_id;

    INSERT INTO pgshadow.flags (name, value, table_id) VALUES
        ('shadow_writes_' || p_table, 'on', v_id),
        ('read_from_shadow_' || p_table, '0', v_id)
    ON CONFLICT (name) DO NOTHING;
    -- (the flags trigger refreshed capture_switch; do it again in case the
    -- flags already existed)
    INSERT INTO pgshadow.capture_switch (table_id, enabled)
    SELECT v_id, coalesce((SELECT value FROM pgshadow.flags WHERE name = 'shadow_writes_enabled'), 'on') = 'on'
                 AND coalesce((SELECT value FROM pgshadow.flags WHERE name = 'shadow_writes_' || p_table), 'on') = 'on'
    ON CONFLICT (table_id) DO UPDATE SET enabled = EXCLUDED.enabled;

    PERFORM pgshadow._install_capture(v_id);
    -- finish_install unregisters the tables this install did not register.
    PERFORM set_config('pgshadow.install_registered',
                       coalesce(nullif(current_setting('pgshadow.install_registered', true), ''), '') || v_id || ',',
                       true);

    -- The daemon's role needs nothing on the table pair: every statement
    -- that touches it runs as its owner (_owner_fn). What an earlier
    -- release granted it there is taken back (least privilege: a shadow
    -- trigger must never run with the daemon's rights).
    FOR r IN
        SELECT g.* FROM pgshadow.grants_added g
        WHERE g.grantee = 'pgshadow_daemon' AND g.object_kind = 'TABLE'
          AND to_regclass(g.object_name) IN (v_rel::regclass, v_shadow_rel::regclass)
    LOOP
        EXECUTE format('REVOKE %s ON TABLE %s FROM %I', r.privilege, r.object_name, r.grantee);
        DELETE FROM pgshadow.grants_added g
        WHERE (g.object_kind, g.object_name, g.privilege, g.grantee) = (r.object_kind, r.object_name, r.privilege, r.grantee);
    END LOOP;

    IF v_old.table_id IS NULL THEN
        INSERT INTO pgshadow.events (migration_id, table_name, what, why, after)
        VALUES (p_migration_id, p_table, 'register_table', 'install',
                jsonb_build_object('schema', p_schema, 'shadow', v_shadow, 'key', to_jsonb(v_key),
                                   'shadow_created', v_created, 'capture_mode', v_mode));
    END IF;
END
$fn$;

-- After every register_table of an install: foreign keys between shadow
-- tables install created (mirroring the primaries' foreign keys when both
-- ends are registered), and the cutover row.
CREATE OR REPLACE FUNCTION pgshadow.finish_install(p_migration_id text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT con.conname, c.schema_name AS cs, c.shadow_name AS cshadow, pt.schema_name AS ps,
               pt.shadow_name AS pshadow,
               (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.o)
                FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
                JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n) AS cols,
               (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.o)
                FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
                JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n) AS refcols,
               con.confupdtype, con.confdeltype, con.confmatchtype, con.condeferrable, con.condeferred
        FROM pgshadow.tables c
        JOIN pg_constraint con ON con.conrelid = format('%I.%I', c.schema_name, c.table_name)::regclass
                               AND con.contype = 'f' AND con.conparentid = 0
        JOIN pgshadow.tables pt ON con.confrelid = format('%I.%I', pt.schema_name, pt.table_name)::regclass
        WHERE c.shadow_created AND pt.shadow_created AND c.migration_id = p_migration_id
        ORDER BY c.table_id, con.conname
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = format('%I.%I', r.cs, r.cshadow)::regclass
                       AND conname = r.conname) THEN
            EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I FOREIGN KEY (%s) REFERENCES %I.%I (%s)%s ON UPDATE %s ON DELETE %s%s',
                r.cs, r.cshadow, r.conname, r.cols, r.ps, r.pshadow, r.refcols,
                CASE r.confmatchtype WHEN 'f' THEN ' MATCH FULL' ELSE '' END,
                CASE r.confupdtype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL' WHEN 'd' THEN 'SET DEFAULT'
                                   WHEN 'r' THEN 'RESTRICT' ELSE 'NO ACTION' END,
                CASE r.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL' WHEN 'd' THEN 'SET DEFAULT'
                                   WHEN 'r' THEN 'RESTRICT' ELSE 'NO ACTION' END,
                CASE WHEN r.condeferred THEN ' DEFERRABLE INITIALLY DEFERRED'
                     WHEN r.condeferrable THEN ' DEFERRABLE' ELSE '' END);
        END IF;
    END LOOP;

    -- Tables registered by an earlier install of this migration but not by
    -- this one are no longer in its configuration (another migration's
    -- tables are not this install's business): stop capturing them (triggers and capture
    -- function go, the shadow table stays), forget their state and pending
    -- changes, and say so.
    FOR r IN
        SELECT t.* FROM pgshadow.tables t
        WHERE t.migration_id = p_migration_id
          AND NOT (t.table_id::text = ANY (string_to_array(
                  coalesce(current_setting('pgshadow.install_registered', true), ''), ',')))
        ORDER BY t.table_id
    LOOP
        IF to_regclass(format('%I.%I', r.schema_name, r.table_name)) IS NOT NULL THEN
            PERFORM pgshadow._drop_triggers(format('%I.%I', r.schema_name, r.table_name)::regclass);
        END IF;
        EXECUTE format('DROP FUNCTION IF EXISTS pgshadow.%I()', 'capture_' || r.table_id);
        DELETE FROM pgshadow.change_log WHERE table_id = r.table_id;
        DELETE FROM pgshadow.flags WHERE table_id = r.table_id;
        DELETE FROM pgshadow.tables WHERE table_id = r.table_id;
        INSERT INTO pgshadow.events (migration_id, table_name, what, why, before)
        VALUES (r.migration_id, r.table_name, 'unregister_table', 'not in the configuration of this install',
                jsonb_build_object('schema', r.schema_name, 'shadow', r.shadow_name));
        RAISE NOTICE 'pgshadow: table %.% is no longer in the configuration: capture removed, shadow table %.% kept',
            quote_ident(r.schema_name), quote_ident(r.table_name), quote_ident(r.schema_name), quote_ident(r.shadow_name);
    END LOOP;

    -- A finalized migration installed again (its tables registered anew)
    -- starts a cutover afresh; any other state is kept.
    INSERT INTO pgshadow.cutover AS c (migration_id) VALUES (p_migration_id)
    ON CONFLICT (migration_id) DO UPDATE
        SET status = 'not_started', stage = 0, percent = 0, since = now(), hold_earned = '0', hold_extra = '0',
            hold_counted_at = NULL, failures = 0, last_good_stage = NULL,
            reason = 'installed again after finalize', updated_at = now(), rev = c.rev + 1, gates = NULL,
            gates_at = NULL
        WHERE c.status = 'finalized';
    INSERT INTO pgshadow.events (migration_id, what, why, after)
    VALUES (p_migration_id, 'install', 'pgshadowctl install',
            jsonb_build_object('schema_version', (SELECT value FROM pgshadow.meta WHERE key = 'schema_version'),
                               'tables', (SELECT jsonb_agg(format('%I.%I', schema_name, table_name) ORDER BY table_id)
                                          FROM pgshadow.tables WHERE migration_id = p_migration_id)));
END
$fn$;

-- Objects that are not pgshadow's own but depend on something in the
-- pgshadow schema (a user view over pgshadow.flags or calling
-- read_from_shadow(), a column default calling read_percent(), ...):
-- uninstall would take them with it, so it refuses while any exists.
-- pgshadow's own: objects in the schema, triggers and event triggers whose
-- function is pgshadow's, and the dashboard views install created.
CREATE OR REPLACE FUNCTION pgshadow._foreign_dependents()
RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = 'pgshadow'),
    own_views AS (
        SELECT to_regclass(substr(m.key, length('created_view:') + 1)) AS rel
        FROM pgshadow.meta m WHERE m.key LIKE 'created\_view:%'
    ),
    mine AS (
        SELECT 'pg_class'::regclass AS classid, c.oid AS objid FROM pg_class c, ns WHERE c.relnamespace = ns.oid
        UNION ALL SELECT 'pg_proc'::regclass, p.oid FROM pg_proc p, ns WHERE p.pronamespace = ns.oid
        UNION ALL SELECT 'pg_type'::regclass, t.oid FROM pg_type t, ns WHERE t.typnamespace = ns.oid
        UNION ALL SELECT 'pg_constraint'::regclass, c.oid FROM pg_constraint c, ns WHERE c.connamespace = ns.oid
        UNION ALL SELECT 'pg_trigger'::regclass, tg.oid FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid, ns
                  WHERE p.pronamespace = ns.oid
        UNION ALL SELECT 'pg_event_trigger'::regclass, e.oid FROM pg_event_trigger e JOIN pg_proc p ON p.oid = e.evtfoid, ns
                  WHERE p.pronamespace = ns.oid
        UNION ALL SELECT 'pg_rewrite'::regclass, rw.oid FROM pg_rewrite rw JOIN pg_class c ON c.oid = rw.ev_class, ns
                  WHERE c.relnamespace = ns.oid OR rw.ev_class IN (SELECT rel FROM own_views)
        UNION ALL SELECT 'pg_class'::regclass, rel FROM own_views WHERE rel IS NOT NULL
        UNION ALL SELECT 'pg_attrdef'::regclass, ad.oid FROM pg_attrdef ad JOIN pg_class c ON c.oid = ad.adrelid, ns
                  WHERE c.relnamespace = ns.oid
    ),
    theirs AS (
        SELECT 'pg_class'::regclass AS classid, c.oid AS objid FROM pg_class c, ns WHERE c.relnamespace = ns.oid
        UNION ALL SELECT 'pg_proc'::regclass, p.oid FROM pg_proc p, ns WHERE p.pronamespace = ns.oid
        UNION ALL SELECT 'pg_type'::regclass, t.oid FROM pg_type t, ns WHERE t.typnamespace = ns.oid
        UNION ALL SELECT 'pg_namespace'::regclass, ns.oid FROM ns
    )
    SELECT DISTINCT CASE WHEN d.classid = 'pg_rewrite'::regclass
                         THEN pg_describe_object('pg_class'::regclass,
                                                 (SELECT rw.ev_class FROM pg_rewrite rw WHERE rw.oid = d.objid), 0)
                         ELSE pg_describe_object(d.classid, d.objid, d.objsubid) END
                    || ' (uses ' || pg_describe_object(d.refclassid, d.refobjid, 0) || ')'
    FROM pg_depend d
    JOIN theirs x ON x.classid = d.refclassid AND x.objid = d.refobjid
    WHERE d.deptype IN ('n', 'a')
      AND NOT EXISTS (SELECT 1 FROM mine m WHERE m.classid = d.classid AND m.objid = d.objid)
    ORDER BY 1
$fn$;

-- Remove capture from every registered table, revoke what install granted,
-- and with p_drop_shadow drop the shadow tables. The pgshadow schema itself
-- and the views go with sql/uninstall.sql, run right after in the same
-- transaction. Refuses (nothing changed) while objects that are not
-- pgshadow's depend on pgshadow's (see _foreign_dependents).
CREATE OR REPLACE FUNCTION pgshadow.uninstall(p_drop_shadow boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t      record;
    g      record;
    v_rel  regclass;
    v_drop text[] := '{}';
    v_deps text[];
BEGIN
    IF p_drop_shadow AND EXISTS (SELECT 1 FROM pgshadow.tables x WHERE x.promoted_at IS NOT NULL) THEN
        RAISE EXCEPTION 'pgshadow: uninstall --drop-shadow refused: a migration was promoted, its shadow tables are the primary tables now'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Uninstall without --drop-shadow: the tables stay, the <table>_shadow compatibility views and the <table>_legacy tables too (docs/promote.md).';
    END IF;
    v_deps := ARRAY(SELECT pgshadow._foreign_dependents());
    IF cardinality(v_deps) > 0 THEN
        RAISE EXCEPTION 'pgshadow: uninstall refused: % object(s) outside pgshadow depend on it and would be dropped with it',
            cardinality(v_deps)
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = array_to_string(v_deps, E'\n'),
                  HINT = 'Drop or change these objects first, then run uninstall again.';
    END IF;
    -- The partition DDL event trigger (superuser installs only).
    IF EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgshadow_partition_ddl') THEN
        DROP EVENT TRIGGER pgshadow_partition_ddl;
    END IF;
    -- Every trigger running a pgshadow function, wherever it is: also on a
    -- partition detached from a registered table, or on a table no longer
    -- registered. Cloned (child) triggers go with their parent.
    FOR g IN
        SELECT tg.tgrelid::regclass AS rel, tg.tgname
        FROM pg_trigger tg
        JOIN pg_proc p ON p.oid = tg.tgfoid
        JOIN pg_class c ON c.oid = tg.tgrelid
        WHERE p.pronamespace = 'pgshadow'::regnamespace
          AND c.relnamespace <> 'pgshadow'::regnamespace
          AND tg.tgparentid = 0 AND NOT tg.tgisinternal
        ORDER BY tg.tgrelid, tg.tgname
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', g.tgname, g.rel);
    END LOOP;
    FOR t IN SELECT * FROM pgshadow.tables ORDER BY table_id LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS pgshadow.%I()', 'capture_' || t.table_id);
        IF p_drop_shadow AND to_regclass(format('%I.%I', t.schema_name, t.shadow_name)) IS NOT NULL THEN
            v_drop := v_drop || format('%I.%I', t.schema_name, t.shadow_name);
        END IF;
    END LOOP;
    FOR g IN SELECT * FROM pgshadow.grants_added ORDER BY object_kind DESC, object_name LOOP
        IF g.object_kind = 'TABLE' THEN
            IF to_regclass(g.object_name) IS NOT NULL
               AND NOT (g.object_name = ANY (v_drop)) THEN
                EXECUTE format('REVOKE %s ON TABLE %s FROM %I', g.privilege, g.object_name, g.grantee);
            END IF;
        ELSIF to_regnamespace(g.object_name) IS NOT NULL THEN
            EXECUTE format('REVOKE %s ON SCHEMA %s FROM %I', g.privilege, g.object_name, g.grantee);
        END IF;
    END LOOP;
    DELETE FROM pgshadow.grants_added;
    IF cardinality(v_drop) > 0 THEN
        -- One statement, so foreign keys among the shadows do not matter.
        EXECUTE 'DROP TABLE ' || array_to_string(v_drop, ', ');
    END IF;
END
$fn$;

-- Uninstall one migration: pgshadowctl uninstall calls this. When no other
-- migration has tables here it is pgshadow.uninstall (the whole of
-- pgshadow goes, with sql/uninstall.sql). Otherwise only this migration's
-- tables are let go, as finish_install unregisters a table (triggers and
-- capture functions dropped, the grants install made on them revoked, their
-- registry rows, flags, quarantine, pending changes, cutover and wake-up
-- rows deleted; with p_drop_shadow their shadows dropped), the schema stays
-- for the others, and sql/uninstall.sql, run next, does nothing (the
-- transaction-local setting pgshadow.uninstall_partial says so). Installing
-- a second migration never touched the first; removing it must not either.
CREATE OR REPLACE FUNCTION pgshadow.uninstall_migration(p_drop_shadow boolean, p_migration_id text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t      record;
    g      record;
    v_drop text[] := '{}';
    v_rels regclass[];
    v_rest text;
BEGIN
    SELECT string_agg(DISTINCT quote_literal(migration_id), ', ') INTO v_rest
    FROM pgshadow.tables WHERE migration_id IS DISTINCT FROM p_migration_id;
    IF v_rest IS NULL THEN
        PERFORM pgshadow.uninstall(p_drop_shadow);
        RETURN;
    END IF;
    IF p_drop_shadow AND EXISTS (SELECT 1 FROM pgshadow.tables x WHERE x.promoted_at IS NOT NULL AND x.migration_id = p_migration_id) THEN
        RAISE EXCEPTION 'pgshadow: uninstall --drop-shadow refused: a migration was promoted, its shadow tables are the primary tables now'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Uninstall without --drop-shadow: the tables stay, the <table>_shadow compatibility views and the <table>_legacy tables too (docs/promote.md).';
    END IF;

    FOR t IN SELECT * FROM pgshadow.tables WHERE migration_id = p_migration_id ORDER BY table_id LOOP
        v_rels := ARRAY[to_regclass(format('%I.%I', t.schema_name, t.table_name)),
                        to_regclass(format('%I.%I', t.schema_name, t.shadow_name))];
        IF v_rels[1] IS NOT NULL THEN
            PERFORM pgshadow._drop_triggers(v_rels[1]);
        END IF;
        EXECUTE format('DROP FUNCTION IF EXISTS pgshadow.%I()', 'capture_' || t.table_id);
        FOR g IN SELECT * FROM pgshadow.grants_added WHERE object_kind = 'TABLE'
                 AND to_regclass(object_name) = ANY (v_rels) LOOP
            EXECUTE format('REVOKE %s ON TABLE %s FROM %I', g.privilege, g.object_name, g.grantee);
            DELETE FROM pgshadow.grants_added a
            WHERE (a.object_kind, a.object_name, a.privilege, a.grantee) = (g.object_kind, g.object_name, g.privilege, g.grantee);
        END LOOP;
        IF p_drop_shadow AND v_rels[2] IS NOT NULL THEN
            v_drop := v_drop || v_rels[2]::text;
        END IF;
        DELETE FROM pgshadow.change_log WHERE table_id = t.table_id;
        DELETE FROM pgshadow.flags WHERE table_id = t.table_id;
        DELETE FROM pgshadow.tables WHERE table_id = t.table_id;
    END LOOP;
    DELETE FROM pgshadow.cutover WHERE migration_id = p_migration_id;
    DELETE FROM pgshadow.wakeup WHERE migration_id = p_migration_id;
    INSERT INTO pgshadow.events (migration_id, what, why)
    VALUES (p_migration_id, 'uninstall', 'pgshadowctl uninstall (other migrations stay installed)');
    IF cardinality(v_drop) > 0 THEN
        EXECUTE 'DROP TABLE ' || array_to_string(v_drop, ', ');
    END IF;
    PERFORM set_config('pgshadow.uninstall_partial', 'on', true);
    RAISE NOTICE 'pgshadow: migration % uninstalled; migration(s) % stay installed, and the pgshadow schema with them',
        quote_literal(p_migration_id), v_rest;
END
$fn$;


-- Privileges
REVOKE ALL ON FUNCTION pgshadow._grant_table(regclass, text[], text),
                       pgshadow._grant_schema_usage(text, text),
                       pgshadow.register_table(text, text, text[], text, text, jsonb),
                       pgshadow.finish_install(text),
                       pgshadow._foreign_dependents(),
                       pgshadow.uninstall(boolean),
                       pgshadow.uninstall_migration(boolean, text)
       FROM PUBLIC;
