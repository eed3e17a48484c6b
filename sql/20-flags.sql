-- 20-flags.sql: the flags applications read and the capture switch: disable_writes, enable_writes, set_read_percent
--
-- Owns: the flags functions and the trigger keeping capture_switch in step.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- ---------------------------------------------------------------------------
-- Flags
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgshadow._refresh_capture_switch()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    INSERT INTO pgshadow.capture_switch AS cs (table_id, enabled)
    SELECT t.table_id,
           coalesce(m.value, 'on') = 'on' AND coalesce(f.value, 'on') = 'on'
    FROM pgshadow.tables t
    LEFT JOIN pgshadow.flags f ON f.name = 'shadow_writes_' || t.table_name
    LEFT JOIN pgshadow.flags m ON m.name = 'shadow_writes_enabled'
    ON CONFLICT (table_id) DO UPDATE SET enabled = EXCLUDED.enabled
        WHERE cs.enabled IS DISTINCT FROM EXCLUDED.enabled;
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE TRIGGER flags_refresh_capture_switch
    AFTER INSERT OR UPDATE OR DELETE ON pgshadow.flags
    FOR EACH STATEMENT EXECUTE FUNCTION pgshadow._refresh_capture_switch();

-- Set one flag and record the change in the event log.
CREATE OR REPLACE FUNCTION pgshadow._set_flag(p_name text, p_value text, p_why text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_old text;
    v_table_id integer;
BEGIN
    SELECT value INTO v_old FROM pgshadow.flags WHERE name = p_name FOR UPDATE;
    IF v_old IS NOT DISTINCT FROM p_value THEN
        RETURN;
    END IF;
    SELECT table_id INTO v_table_id FROM pgshadow.tables
    WHERE p_name IN ('shadow_writes_' || table_name, 'read_from_shadow_' || table_name);
    INSERT INTO pgshadow.flags (name, value, table_id, updated_at, updated_by)
    VALUES (p_name, p_value, v_table_id, now(), session_user)
    ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at,
                                     updated_by = EXCLUDED.updated_by;
    INSERT INTO pgshadow.events (what, why, before, after, table_name)
    VALUES ('flag', p_why, jsonb_build_object(p_name, v_old), jsonb_build_object(p_name, p_value),
            (SELECT table_name FROM pgshadow.tables WHERE table_id = v_table_id));
END
$fn$;

CREATE OR REPLACE FUNCTION pgshadow._require_table(p_table text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pgshadow.tables WHERE table_name = p_table) THEN
        RAISE EXCEPTION 'pgshadow: table "%" is not registered', p_table
            USING ERRCODE = 'undefined_table';
    END IF;
END
$fn$;

-- Stop capture: the master switch (NULL) or one table. Takes effect for the
-- next statement in every session; no lock on any primary table.
CREATE OR REPLACE FUNCTION pgshadow.disable_writes(p_table text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_table IS NULL THEN
        PERFORM pgshadow._set_flag('shadow_writes_enabled', 'off', 'disable-writes');
    ELSE
        PERFORM pgshadow._require_table(p_table);
        PERFORM pgshadow._set_flag('shadow_writes_' || p_table, 'off', 'disable-writes');
    END IF;
END
$fn$;

-- Turning capture back on: every table whose capture goes from off to on
-- missed the writes made while it was off, so it gets a 'T' entry (the
-- daemon empties its shadow and backfills it again) in this same
-- transaction, and a 'resync' event.
CREATE OR REPLACE FUNCTION pgshadow.enable_writes(p_table text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_off integer[];
    v_n   integer;
BEGIN
    IF p_table IS NOT NULL THEN
        PERFORM pgshadow._require_table(p_table);
    END IF;
    SELECT coalesce(array_agg(table_id), '{}') INTO v_off FROM pgshadow.capture_switch WHERE NOT enabled;
    IF p_table IS NULL THEN
        PERFORM pgshadow._set_flag('shadow_writes_enabled', 'on', 'enable-writes');
    ELSE
        PERFORM pgshadow._set_flag('shadow_writes_' || p_table, 'on', 'enable-writes');
    END IF;
    INSERT INTO pgshadow.change_log (table_id, op, key)
    SELECT cs.table_id, 'T', NULL FROM pgshadow.capture_switch cs
    WHERE cs.enabled AND cs.table_id = ANY (v_off)
    ORDER BY cs.table_id;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n > 0 THEN
        INSERT INTO pgshadow.events (migration_id, table_name, what, why)
        SELECT t.migration_id, t.table_name, 'resync',
               'capture re-enabled: writes made while it was off were not captured; full resync'
        FROM pgshadow.capture_switch cs JOIN pgshadow.tables t USING (table_id)
        WHERE cs.enabled AND cs.table_id = ANY (v_off)
        ORDER BY t.table_id;
        PERFORM pg_notify('pgshadow_changes', '');
    END IF;
END
$fn$;

-- The cutover moves reads: read_from_shadow_<table> := p_percent.
CREATE OR REPLACE FUNCTION pgshadow.set_read_percent(p_table text, p_percent integer, p_why text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM pgshadow._require_table(p_table);
    IF p_percent IS NULL OR p_percent < 0 OR p_percent > 100 THEN
        RAISE EXCEPTION 'pgshadow: read percent for "%" must be 0..100, not %', p_table, p_percent
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pgshadow._set_flag('read_from_shadow_' || p_table, p_percent::text, p_why);
END
$fn$;


-- Privileges
REVOKE ALL ON FUNCTION pgshadow._refresh_capture_switch(),
                       pgshadow._set_flag(text, text, text),
                       pgshadow._require_table(text),
                       pgshadow.disable_writes(text),
                       pgshadow.enable_writes(text),
                       pgshadow.set_read_percent(text, integer, text)
       FROM PUBLIC;
-- operator: switch capture. Reads move only through the command queue (the
-- daemon checks the gates): set_read_percent is the daemon's and the
-- owner's, not the operator's.
GRANT EXECUTE ON FUNCTION pgshadow.disable_writes(text), pgshadow.enable_writes(text) TO pgshadow_operator;
REVOKE EXECUTE ON FUNCTION pgshadow.set_read_percent(text, integer, text) FROM pgshadow_operator;
GRANT EXECUTE ON FUNCTION pgshadow.set_read_percent(text, integer, text),
                          pgshadow.disable_writes(text), pgshadow.enable_writes(text)
      TO pgshadow_daemon;
