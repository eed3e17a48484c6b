-- 30-commands.sql: the command queue: pgshadowctl inserts, the daemon executes
--
-- Owns: the NOTIFY trigger on pgshadow.commands and enqueue_command.
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


-- Privileges
REVOKE ALL ON FUNCTION pgshadow._notify_control(),
                       pgshadow.enqueue_command(text, jsonb, text)
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.enqueue_command(text, jsonb, text) TO pgshadow_operator;
