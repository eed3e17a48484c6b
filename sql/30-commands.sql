-- 30-commands.sql: the command queue: pgshadowctl inserts, the daemon executes
--
-- Owns: the NOTIFY trigger on pgshadow.commands, enqueue_command (an
-- operator queues), command_claim / command_finish (the leading daemon takes
-- one and records its outcome and an event, in one transaction),
-- command_cancel (pgshadowctl withdraws what no daemon took in time).
--
-- The path of a command (docs/database.md "Commands"): pgshadowctl, as the
-- operator's own role, calls enqueue_command, whose row NOTIFYs
-- pgshadow_control; the leading pgshadowd, in ONE transaction, claims the
-- oldest pending command of its migration (FOR UPDATE SKIP LOCKED, so two
-- daemons never take one twice), runs the handler registered for its name,
-- and calls command_finish, which writes the outcome and the event (who =
-- the role that asked, never the daemon). A crash before COMMIT leaves the
-- command pending, to be taken again. pgshadowctl waits for the outcome.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- ---------------------------------------------------------------------------
-- Commands
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgshadow._notify_control()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM pg_notify('pgshadow_control', NEW.command_id::text);
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE TRIGGER commands_notify AFTER INSERT ON pgshadow.commands
    FOR EACH ROW EXECUTE FUNCTION pgshadow._notify_control();

CREATE OR REPLACE FUNCTION pgshadow.enqueue_command(p_command text, p_args jsonb DEFAULT '{}',
                                                    p_migration_id text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO pgshadow.commands (migration_id, command, args, requested_by)
    VALUES (p_migration_id, p_command, coalesce(p_args, '{}'), session_user)
    RETURNING command_id INTO v_id;
    RETURN v_id;
END
$fn$;

-- The oldest pending command for this migration (or for any migration:
-- migration_id NULL), marked running, its row locked until the caller's
-- transaction ends; none when there is none or another daemon holds it.
CREATE OR REPLACE FUNCTION pgshadow.command_claim(p_migration_id text)
RETURNS TABLE (command_id bigint, command text, args jsonb, requested_by text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    UPDATE pgshadow.commands c SET state = 'running', started_at = clock_timestamp()
    WHERE c.command_id = (SELECT x.command_id FROM pgshadow.commands x
                          WHERE x.state = 'pending'
                            AND (x.migration_id IS NULL OR x.migration_id = p_migration_id)
                          ORDER BY x.command_id
                          FOR UPDATE SKIP LOCKED
                          LIMIT 1)
    RETURNING c.command_id, c.command, c.args, c.requested_by
$fn$;

-- The outcome of a claimed command ('done', 'failed', 'refused' with the
-- reason) and its event, in the claimer's transaction. SECURITY DEFINER:
-- the event's `who` is the role that asked, which the daemon cannot write.
CREATE OR REPLACE FUNCTION pgshadow.command_finish(p_command_id bigint, p_state text, p_result text,
                                                   p_before jsonb DEFAULT NULL, p_after jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c pgshadow.commands;
BEGIN
    IF p_state IS NULL OR p_state NOT IN ('done', 'failed', 'refused') THEN
        RAISE EXCEPTION 'pgshadow: a command ends done, failed or refused, not %', p_state
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE pgshadow.commands x SET state = p_state, finished_at = clock_timestamp(), result = p_result
    WHERE x.command_id = p_command_id AND x.state = 'running'
    RETURNING x.* INTO c;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgshadow: command % is not running', p_command_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO pgshadow.events (migration_id, who, what, why, before, after)
    VALUES (c.migration_id, c.requested_by, 'command ' || c.command || ' ' || p_state,
            coalesce(c.args ->> 'reason', p_result), p_before,
            jsonb_build_object('command_id', c.command_id, 'args', c.args, 'result', p_result)
            || coalesce(p_after, '{}'));
END
$fn$;

-- pgshadowctl's withdrawal of its own command that no daemon took in time
-- (true when it was still pending): a command is never carried out long
-- after the operator was told it was not.
CREATE OR REPLACE FUNCTION pgshadow.command_cancel(p_command_id bigint)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    UPDATE pgshadow.commands c
    SET state = 'refused', finished_at = clock_timestamp(),
        result = 'withdrawn by ' || session_user || ': no pgshadowd took it in time'
    WHERE c.command_id = p_command_id AND c.state = 'pending' AND c.requested_by = session_user;
    RETURN FOUND;
END
$fn$;

-- Privileges
REVOKE ALL ON FUNCTION pgshadow._notify_control(),
                       pgshadow.enqueue_command(text, jsonb, text),
                       pgshadow.command_claim(text),
                       pgshadow.command_finish(bigint, text, text, jsonb, jsonb),
                       pgshadow.command_cancel(bigint)
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.enqueue_command(text, jsonb, text),
                          pgshadow.command_cancel(bigint)
      TO pgshadow_operator;
GRANT EXECUTE ON FUNCTION pgshadow.command_claim(text),
                          pgshadow.command_finish(bigint, text, text, jsonb, jsonb)
      TO pgshadow_daemon;
