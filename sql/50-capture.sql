-- 50-capture.sql: capture: the generated trigger functions and triggers on the registered tables, and the partition DDL event trigger
--
-- Owns: _install_capture, _drop_triggers, _rel_tree, _on_partition_ddl and
-- the event trigger pgshadow_partition_ddl (superuser installs only).
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- The table itself and, when partitioned, every partition below it
-- (pg_partition_tree() returns nothing for a plain table).
CREATE OR REPLACE FUNCTION pgshadow._rel_tree(p_rel regclass)
RETURNS TABLE (relid regclass, isleaf boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT p_rel, true WHERE NOT EXISTS (SELECT 1 FROM pg_partition_tree(p_rel))
    UNION ALL
    SELECT pt.relid, pt.isleaf FROM pg_partition_tree(p_rel) pt
$fn$;


-- (Re)generate the capture function of a table and, unless already in
-- place, its triggers (ENABLE ALWAYS). Row mode: one FOR EACH ROW trigger,
-- which PostgreSQL clones onto every partition, so writes made directly to
-- a partition are captured too. Statement mode: one statement trigger per
-- event with transition tables. Both: a TRUNCATE statement trigger on the
-- table and on each of its partitions (TRUNCATE triggers are not cloned).
CREATE OR REPLACE FUNCTION pgshadow._install_capture(p_table_id integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t        pgshadow.tables;
    v_rel    regclass;
    v_fn     text := 'capture_' || p_table_id;
    v_new    text;
    v_old    text;
    v_snew   text;
    v_sold   text;
    v_set    text := '';
    v_body   text;
    v_part   regclass;
    v_need   text[];
BEGIN
    SELECT * INTO STRICT t FROM pgshadow.tables WHERE table_id = p_table_id;
    v_rel := format('%I.%I', t.schema_name, t.table_name)::regclass;

    -- Key text through the type's output function (format's %s), never a
    -- cast to text: this function runs with pgshadow's rights in every
    -- writer's session, and a type's owner can CREATE CAST (t AS text) WITH
    -- FUNCTION of its own (an output function is always built-in C).
    SELECT 'ARRAY[' || string_agg(format('pg_catalog.format(''%%s'', NEW.%I)', k), ', ' ORDER BY o) || ']',
           'ARRAY[' || string_agg(format('pg_catalog.format(''%%s'', OLD.%I)', k), ', ' ORDER BY o) || ']'
    INTO v_new, v_old
    FROM unnest(t.key_columns) WITH ORDINALITY AS u(k, o);
    -- In SQL inside a trigger function NEW/OLD are the plpgsql row
    -- variables (NULL in a statement trigger): transition tables get
    -- other aliases.
    SELECT 'ARRAY[' || string_agg(format('pg_catalog.format(''%%s'', n.%I)', k), ', ' ORDER BY o) || ']',
           'ARRAY[' || string_agg(format('pg_catalog.format(''%%s'', o.%I)', k), ', ' ORDER BY o) || ']'
    INTO v_snew, v_sold
    FROM unnest(t.key_columns) WITH ORDINALITY AS u(k, o);

    -- Keys of date/time types (also through domains and arrays) print
    -- according to DateStyle/IntervalStyle: pin them so the daemon can
    -- always read the key text back (a writer's DateStyle = German logged
    -- '01.02.2024', which no ISO reader parses).
    IF EXISTS (SELECT 1 FROM pgshadow._key_spec(v_rel, t.key_columns) ks WHERE ks.datetime) THEN
        v_set := ' SET DateStyle = ''ISO, YMD'' SET IntervalStyle = ''postgres''';
    END IF;

    IF t.capture_mode = 'row' THEN
        -- One statement reads both switches (the per-table enable flag and
        -- the migration's wake-up flag): a NULL armed (no row) notifies.
        v_body := format($b$
DECLARE
    v_on    boolean;
    v_armed boolean;
BEGIN
    SELECT cs.enabled, w.armed INTO v_on, v_armed
    FROM pgshadow.capture_switch cs LEFT JOIN pgshadow.wakeup w ON w.migration_id = %4$L
    WHERE cs.table_id = %1$s;
    -- Skip only on a visible 'off': a transaction whose snapshot predates
    -- the install does not see the switch row at all, and must log.
    IF v_on IS FALSE THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pgshadow.change_log (table_id, op, key) VALUES (%1$s, 'I', %2$s);
    ELSIF TG_OP = 'UPDATE' THEN
        IF %3$s IS DISTINCT FROM %2$s THEN
            INSERT INTO pgshadow.change_log (table_id, op, key) VALUES (%1$s, 'D', %3$s), (%1$s, 'I', %2$s);
        ELSE
            INSERT INTO pgshadow.change_log (table_id, op, key) VALUES (%1$s, 'U', %2$s);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO pgshadow.change_log (table_id, op, key) VALUES (%1$s, 'D', %3$s);
    ELSE
        INSERT INTO pgshadow.change_log (table_id, op, key) VALUES (%1$s, 'T', NULL);
    END IF;
    IF v_armed IS NOT FALSE THEN
        PERFORM pg_catalog.pg_notify('pgshadow_changes', '');
    END IF;
    RETURN NULL;
END
$b$, p_table_id, v_new, v_old, t.migration_id);
    ELSE
        v_body := format($b$
DECLARE
    n       bigint;
    v_on    boolean;
    v_armed boolean;
BEGIN
    SELECT cs.enabled, w.armed INTO v_on, v_armed
    FROM pgshadow.capture_switch cs LEFT JOIN pgshadow.wakeup w ON w.migration_id = %4$L
    WHERE cs.table_id = %1$s;
    -- Skip only on a visible 'off': a transaction whose snapshot predates
    -- the install does not see the switch row at all, and must log.
    IF v_on IS FALSE THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pgshadow.change_log (table_id, op, key) SELECT %1$s, 'I', %2$s FROM pgshadow_new AS n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO pgshadow.change_log (table_id, op, key)
        SELECT %1$s, 'U', k FROM (SELECT %3$s AS k FROM pgshadow_old AS o
                                  UNION SELECT %2$s FROM pgshadow_new AS n) s;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO pgshadow.change_log (table_id, op, key) SELECT %1$s, 'D', %3$s FROM pgshadow_old AS o;
    ELSE
        INSERT INTO pgshadow.change_log (table_id, op, key) VALUES (%1$s, 'T', NULL);
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 AND v_armed IS NOT FALSE THEN
        PERFORM pg_catalog.pg_notify('pgshadow_changes', '');
    END IF;
    RETURN NULL;
END
$b$, p_table_id, v_snew, v_sold, t.migration_id);
    END IF;

    INSERT INTO pgshadow.wakeup (migration_id) VALUES (t.migration_id) ON CONFLICT DO NOTHING;

    EXECUTE format('CREATE OR REPLACE FUNCTION pgshadow.%I() RETURNS trigger LANGUAGE plpgsql '
                   'SECURITY DEFINER SET search_path = pg_catalog, pg_temp%s AS %L',
                   v_fn, v_set, v_body);
    EXECUTE format('REVOKE ALL ON FUNCTION pgshadow.%I() FROM PUBLIC', v_fn);

    -- The triggers this mode needs; existing ones are kept (no lock taken).
    IF t.capture_mode = 'row' THEN
        v_need := ARRAY['pgshadow_capture', 'pgshadow_capture_truncate'];
    ELSE
        v_need := ARRAY['pgshadow_capture_ins', 'pgshadow_capture_upd', 'pgshadow_capture_del',
                        'pgshadow_capture_truncate'];
    END IF;
    -- Triggers of the other mode go.
    PERFORM pgshadow._drop_triggers(v_rel, v_need);

    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = v_rel AND tgname = 'pgshadow_capture_truncate') THEN
        EXECUTE format('CREATE TRIGGER pgshadow_capture_truncate AFTER TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION pgshadow.%I()', v_rel, v_fn);
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER pgshadow_capture_truncate', v_rel);
    END IF;
    IF t.capture_mode = 'row' THEN
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = v_rel AND tgname = 'pgshadow_capture') THEN
            EXECUTE format('CREATE TRIGGER pgshadow_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                           'FOR EACH ROW EXECUTE FUNCTION pgshadow.%I()', v_rel, v_fn);
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER pgshadow_capture', v_rel);
        END IF;
    ELSE
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = v_rel AND tgname = 'pgshadow_capture_ins') THEN
            EXECUTE format('CREATE TRIGGER pgshadow_capture_ins AFTER INSERT ON %s '
                           'REFERENCING NEW TABLE AS pgshadow_new '
                           'FOR EACH STATEMENT EXECUTE FUNCTION pgshadow.%I()', v_rel, v_fn);
            EXECUTE format('CREATE TRIGGER pgshadow_capture_upd AFTER UPDATE ON %s '
                           'REFERENCING OLD TABLE AS pgshadow_old NEW TABLE AS pgshadow_new '
                           'FOR EACH STATEMENT EXECUTE FUNCTION pgshadow.%I()', v_rel, v_fn);
            EXECUTE format('CREATE TRIGGER pgshadow_capture_del AFTER DELETE ON %s '
                           'REFERENCING OLD TABLE AS pgshadow_old '
                           'FOR EACH STATEMENT EXECUTE FUNCTION pgshadow.%I()', v_rel, v_fn);
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER pgshadow_capture_ins', v_rel);
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER pgshadow_capture_upd', v_rel);
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER pgshadow_capture_del', v_rel);
        END IF;
    END IF;

    -- Partitions: TRUNCATE triggers are not cloned, and the cloned row
    -- trigger must fire ALWAYS there too (checked, not assumed).
    FOR v_part IN SELECT relid FROM pgshadow._rel_tree(v_rel) WHERE relid <> v_rel LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = v_part AND tgname = 'pgshadow_capture_truncate') THEN
            EXECUTE format('CREATE TRIGGER pgshadow_capture_truncate AFTER TRUNCATE ON %s '
                           'FOR EACH STATEMENT EXECUTE FUNCTION pgshadow.%I()', v_part, v_fn);
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER pgshadow_capture_truncate', v_part);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = v_part AND tgname = 'pgshadow_capture'
                   AND tgenabled <> 'A') THEN
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER pgshadow_capture', v_part);
        END IF;
    END LOOP;
END
$fn$;

-- Drop the pgshadow capture triggers on a table and its partitions, except
-- those named in p_keep. Cloned (child) triggers go with their parent.
CREATE OR REPLACE FUNCTION pgshadow._drop_triggers(p_rel regclass, p_keep text[] DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT tg.tgrelid::regclass AS rel, tg.tgname
        FROM pg_trigger tg
        JOIN pg_proc p ON p.oid = tg.tgfoid
        WHERE tg.tgrelid IN (SELECT relid FROM pgshadow._rel_tree(p_rel))
          AND p.pronamespace = 'pgshadow'::regnamespace
          AND tg.tgparentid = 0 AND NOT tg.tgisinternal
          AND tg.tgname <> ALL (p_keep)
        ORDER BY tg.tgrelid, tg.tgname
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
    END LOOP;
END
$fn$;

-- ---------------------------------------------------------------------------
-- Partitions: ATTACH / DETACH PARTITION move rows in or out of a registered
-- partitioned table without any row trigger firing. An event trigger
-- (created only when the installing role is a superuser: only superusers may
-- create event triggers) notices, after an ALTER TABLE or CREATE TABLE on a
-- partitioned table or a partition, that a registered table's partition set
-- changed: a partition without pgshadow's TRUNCATE trigger was added, or a
-- relation carrying one is no longer in the tree. It then installs the
-- TRUNCATE trigger on the new partition (and the cloned row trigger ENABLE
-- ALWAYS), drops pgshadow's triggers from the detached one, and, for an
-- ALTER TABLE (ATTACH or DETACH: rows moved), logs a 'T' entry for the table
-- (full resync) and an event. CREATE TABLE ... PARTITION OF moves no rows.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgshadow._on_partition_ddl()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t       record;
    r       record;
    v_rel   regclass;
    v_fn    text;
    v_moved boolean;
BEGIN
    IF current_setting('pgshadow.installing', true) = 'on' THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() cmd
                   JOIN pg_class c ON c.oid = cmd.objid
                   WHERE cmd.classid = 'pg_class'::regclass
                     AND (c.relkind = 'p' OR c.relispartition)) THEN
        RETURN;
    END IF;
    FOR t IN SELECT * FROM pgshadow.tables WHERE partitioned ORDER BY table_id LOOP
        v_rel := to_regclass(format('%I.%I', t.schema_name, t.table_name));
        CONTINUE WHEN v_rel IS NULL;
        v_fn := 'capture_' || t.table_id;
        CONTINUE WHEN to_regprocedure(format('pgshadow.%I()', v_fn)) IS NULL;
        v_moved := false;
        -- new partitions (anywhere in the tree)
        FOR r IN
            SELECT pt.relid FROM pgshadow._rel_tree(v_rel) pt
            WHERE pt.relid <> v_rel
              AND NOT EXISTS (SELECT 1 FROM pg_trigger tg WHERE tg.tgrelid = pt.relid
                              AND tg.tgname = 'pgshadow_capture_truncate')
        LOOP
            EXECUTE format('CREATE TRIGGER pgshadow_capture_truncate AFTER TRUNCATE ON %s '
                           'FOR EACH STATEMENT EXECUTE FUNCTION pgshadow.%I()', r.relid, v_fn);
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER pgshadow_capture_truncate', r.relid);
            v_moved := true;
        END LOOP;
        FOR r IN
            SELECT tg.tgrelid::regclass AS relid FROM pg_trigger tg
            WHERE tg.tgname = 'pgshadow_capture' AND tg.tgenabled <> 'A'
              AND tg.tgrelid IN (SELECT relid FROM pgshadow._rel_tree(v_rel))
        LOOP
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER pgshadow_capture', r.relid);
        END LOOP;
        -- detached partitions: they carry this table's triggers but are
        -- outside its tree
        FOR r IN
            SELECT tg.tgrelid::regclass AS relid, tg.tgname FROM pg_trigger tg
            WHERE tg.tgfoid = format('pgshadow.%I()', v_fn)::regprocedure
              AND tg.tgparentid = 0 AND NOT tg.tgisinternal
              AND tg.tgrelid NOT IN (SELECT relid FROM pgshadow._rel_tree(v_rel))
        LOOP
            EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.relid);
            v_moved := true;
        END LOOP;
        IF v_moved AND tg_tag = 'ALTER TABLE' THEN
            INSERT INTO pgshadow.change_log (table_id, op, key) VALUES (t.table_id, 'T', NULL);
            INSERT INTO pgshadow.events (migration_id, table_name, what, why)
            VALUES (t.migration_id, t.table_name, 'resync',
                    'partition attached or detached: rows moved without row triggers; full resync');
            PERFORM pg_notify('pgshadow_changes', '');
        END IF;
    END LOOP;
END
$fn$;

DO $evt$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgshadow_partition_ddl') THEN
        CREATE EVENT TRIGGER pgshadow_partition_ddl ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE')
            EXECUTE FUNCTION pgshadow._on_partition_ddl();
    END IF;
END
$evt$;


-- Privileges
REVOKE ALL ON FUNCTION pgshadow._rel_tree(regclass),
                       pgshadow._install_capture(integer),
                       pgshadow._drop_triggers(regclass, text[]),
                       pgshadow._on_partition_ddl()
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow._rel_tree(regclass) TO pgshadow_viewer, pgshadow_daemon;
