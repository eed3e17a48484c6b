-- 87-cutover.sql: the cutover's one write path (issue #14): state, read percent and event in ONE transaction
--
-- Owns: pgshadow.cutover_write, the only writer of pgshadow.cutover rows
-- after install (the daemon has SELECT on the table, no UPDATE), and the
-- read_from_shadow_<table> flags of the migration's tables while a
-- cutover runs.
--
-- The leading pgshadowd decides (src/cutover/machine.c, pure) and calls
-- this with the state it decided, the revision it decided on, the gate
-- values it saw, and the event (what, why, who). Invariants:
--  * one percent for the migration: every table of the migration gets the
--    same read_from_shadow_<table> value in the transaction that records
--    the state, so applications never see tables of one migration at
--    different percents once it commits (reads that follow foreign keys
--    see one side);
--  * compare-and-set on rev: a decision made on an older state (a second
--    daemon, a command decided while a tick's write was in flight) fails
--    with serialization_failure and changes nothing; the caller reads the
--    state again and decides again;
--  * an event for every decision with a reason: what = 'cutover <what>',
--    who = the role that queued the command being carried out (read from
--    pgshadow.commands, never passed in: the daemon cannot put words in an
--    operator's mouth), else session_user (the daemon, for gate decisions),
--    before and after = the state's words; a write without a reason (hold
--    and failure counts, gate values) writes no event.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- p_state: {"status", "stage", "percent", "hold_earned_ms", "hold_extra_ms",
-- "failures", "last_good"}. Returns the new rev.
CREATE OR REPLACE FUNCTION pgshadow.cutover_write(p_migration_id text, p_rev bigint, p_state jsonb,
                                                  p_gates jsonb DEFAULT NULL, p_what text DEFAULT NULL,
                                                  p_why text DEFAULT NULL, p_command_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    o pgshadow.cutover;
    n pgshadow.cutover;
    t record;
    v_who text;
    v_reason text;
BEGIN
    SELECT * INTO o FROM pgshadow.cutover WHERE migration_id = p_migration_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgshadow: migration % has no cutover row (not installed?)', p_migration_id
            USING ERRCODE = 'undefined_object';
    END IF;
    IF o.rev <> p_rev THEN
        RAISE EXCEPTION 'pgshadow: the cutover state of % changed while this was decided (rev % is now %)',
                        p_migration_id, p_rev, o.rev
            USING ERRCODE = 'serialization_failure';
    END IF;
    UPDATE pgshadow.cutover c SET
        status          = p_state ->> 'status',
        stage           = (p_state ->> 'stage')::integer,
        percent         = (p_state ->> 'percent')::integer,
        hold_earned     = make_interval(secs => (p_state ->> 'hold_earned_ms')::float8 / 1000),
        hold_extra      = make_interval(secs => (p_state ->> 'hold_extra_ms')::float8 / 1000),
        hold_counted_at = CASE WHEN (p_state ->> 'hold_earned_ms')::bigint
                                    <> (extract(epoch FROM o.hold_earned) * 1000)::bigint
                               THEN now() ELSE c.hold_counted_at END,
        failures        = (p_state ->> 'failures')::integer,
        last_good_stage = (p_state ->> 'last_good')::integer,
        since           = CASE WHEN (p_state ->> 'stage')::integer IS DISTINCT FROM o.stage
                                 OR p_state ->> 'status' IS DISTINCT FROM o.status
                               THEN now() ELSE c.since END,
        reason          = coalesce(p_why, c.reason),
        gates           = coalesce(p_gates, c.gates),
        gates_at        = CASE WHEN p_gates IS NULL THEN c.gates_at ELSE now() END,
        rev             = c.rev + 1,
        updated_at      = now()
    WHERE c.migration_id = p_migration_id
    RETURNING c.* INTO n;
    IF n.percent <> o.percent THEN
        FOR t IN SELECT table_name FROM pgshadow.tables WHERE migration_id = p_migration_id ORDER BY table_id LOOP
            PERFORM pgshadow._set_flag('read_from_shadow_' || t.table_name, n.percent::text,
                                       'cutover ' || coalesce(p_what, 'write'));
        END LOOP;
    END IF;
    IF p_what IS NOT NULL THEN
        SELECT requested_by, args ->> 'reason' INTO v_who, v_reason FROM pgshadow.commands
        WHERE command_id = p_command_id AND state = 'running';
        INSERT INTO pgshadow.events (migration_id, who, what, why, before, after)
        VALUES (p_migration_id, coalesce(v_who, session_user), 'cutover ' || p_what,
                p_why || coalesce(' (reason: ' || v_reason || ')', ''),
                jsonb_build_object('status', o.status, 'stage', o.stage, 'percent', o.percent),
                jsonb_build_object('status', n.status, 'stage', n.stage, 'percent', n.percent,
                                   'gates', p_gates));
    END IF;
    RETURN n.rev;
END
$fn$;

-- Privileges: the daemon alone writes the cutover (operators command it
-- through the queue, which the daemon checks against the state and the
-- gates).
REVOKE ALL ON FUNCTION pgshadow.cutover_write(text, bigint, jsonb, jsonb, text, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.cutover_write(text, bigint, jsonb, jsonb, text, text, bigint) TO pgshadow_daemon;
