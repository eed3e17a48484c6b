-- 40-trust.sql: who runs what as whom (docs/database.md "Trust"): the functions that run statements as a table's owner (the key rules of privileged code are 05-rules.sql's _key_spec)
--
-- Owns: the pgshadow_apply schema and its functions (one per
-- table owner, owned by it: as_<oid> and its read-only twin read_<oid>),
-- _owner_fn, _sync_run, _sync_read.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- User-controlled code (the shadow's CHECK constraints, triggers, index
-- expressions, generated columns, domain checks, the columns: mapping's
-- functions) must never run with more rights than its owner has. Every
-- statement that reads or writes a primary or shadow table therefore runs
-- inside pgshadow_apply.as_<owner oid>(sql, a, b): SECURITY DEFINER, owned
-- by the table's owner, so what runs there runs as that owner (PostgreSQL
-- 16's logical replication applies changes as the table owner for the same
-- reason). The table owner has no USAGE on schema pgshadow_apply, so it can
-- neither call, nor replace, nor ALTER ... SECURITY INVOKER its function;
-- inside a SECURITY DEFINER function SET ROLE is refused, and the SET
-- clauses below confine what the owner's code may SET LOCAL to this call
-- (search_path above all: pgshadow's own code runs right after it).
-- Statements starting with '!' return no rows (TRUNCATE); with '#' the
-- function returns {the statement's row count} (an INSERT or DELETE without
-- RETURNING: cheaper than counting returned rows); any other returns its
-- rows (text[]).
--
-- Its twin pgshadow_apply.read_<owner oid>(sql, a, b) is the same, STABLE:
-- PostgreSQL refuses any write inside it, and its statement runs on the
-- snapshot of the statement that called it (a non-volatile function takes
-- no snapshot of its own). Verify (85-verify.sql) reads a primary and its
-- shadow through it and, in the SAME statement, pgshadow's change log, so
-- "differs" and "has a pending change" are judged on one snapshot.
CREATE SCHEMA IF NOT EXISTS pgshadow_apply;
COMMENT ON SCHEMA pgshadow_apply IS 'pgshadow: one function per table owner, running apply and backfill statements as that owner';
REVOKE ALL ON SCHEMA pgshadow_apply FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgshadow._owner_fn(p_owner oid)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_name  text := 'as_' || p_owner;
    v_role  text;
    v_super boolean;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = 'pgshadow_apply'::regnamespace
               AND p.proname = v_name AND p.prosecdef AND p.proowner = p_owner
               AND p.prosrc LIKE '%pgshadow_apply body 2%')
       AND EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = 'pgshadow_apply'::regnamespace
                   AND p.proname = 'read_' || p_owner AND p.prosecdef AND p.proowner = p_owner
                   AND p.provolatile = 's' AND p.prosrc LIKE '%pgshadow_apply read 1%') THEN
        RETURN v_name;
    END IF;
    SELECT rolname INTO v_role FROM pg_roles WHERE oid = p_owner;
    IF v_role IS NULL THEN
        RAISE EXCEPTION 'pgshadow: role % does not exist', p_owner USING ERRCODE = 'undefined_object';
    END IF;
    SELECT rolsuper INTO v_super FROM pg_roles WHERE rolname = current_user;
    IF NOT v_super AND NOT pg_has_role(current_user, p_owner, 'MEMBER') THEN
        RAISE EXCEPTION 'pgshadow: role % cannot act for role %, the owner of a registered table', current_user, v_role
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Install as a superuser or as a member of the table owner''s role.';
    END IF;
    EXECUTE format('DROP FUNCTION IF EXISTS pgshadow_apply.%I(text, text[], text[])', v_name);
    EXECUTE format($f$CREATE FUNCTION pgshadow_apply.%I(p_sql text, p_a text[], p_b text[])
RETURNS SETOF text[]
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex' SET lock_timeout = '5s'
AS $b$
DECLARE
    n bigint;
BEGIN
    -- pgshadow_apply body 2 ('!': no result; '#': {row count})
    IF left(p_sql, 1) = '!' THEN
        EXECUTE substr(p_sql, 2);
        RETURN;
    ELSIF left(p_sql, 1) = '#' THEN
        EXECUTE substr(p_sql, 2) USING p_a, p_b;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN NEXT ARRAY[n::text];
        RETURN;
    END IF;
    RETURN QUERY EXECUTE p_sql USING p_a, p_b;
END
$b$$f$, v_name);
    EXECUTE format('REVOKE ALL ON FUNCTION pgshadow_apply.%I(text, text[], text[]) FROM PUBLIC', v_name);
    EXECUTE format('DROP FUNCTION IF EXISTS pgshadow_apply.%I(text, text[], text[])', 'read_' || p_owner);
    EXECUTE format($f$CREATE FUNCTION pgshadow_apply.%I(p_sql text, p_a text[], p_b text[])
RETURNS SETOF text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex' SET lock_timeout = '5s'
AS $b$
BEGIN
    -- pgshadow_apply read 1 (STABLE: reads only, on the caller's snapshot)
    RETURN QUERY EXECUTE p_sql USING p_a, p_b;
END
$b$$f$, 'read_' || p_owner);
    EXECUTE format('REVOKE ALL ON FUNCTION pgshadow_apply.%I(text, text[], text[]) FROM PUBLIC', 'read_' || p_owner);
    IF v_role <> current_user THEN
        -- A non-superuser may give an object to a role only if that role
        -- may create in its schema: for the length of this transaction.
        IF NOT v_super THEN
            EXECUTE format('GRANT CREATE ON SCHEMA pgshadow_apply TO %I', v_role);
        END IF;
        EXECUTE format('ALTER FUNCTION pgshadow_apply.%I(text, text[], text[]) OWNER TO %I', v_name, v_role);
        EXECUTE format('ALTER FUNCTION pgshadow_apply.%I(text, text[], text[]) OWNER TO %I', 'read_' || p_owner, v_role);
        IF NOT v_super THEN
            EXECUTE format('REVOKE CREATE ON SCHEMA pgshadow_apply FROM %I', v_role);
        END IF;
    END IF;
    RETURN v_name;
END
$fn$;

-- Run one statement (sync--1.sql's _sync_statements, register_table's
-- expression checks) as the table's owner through _owner_fn: rows of text[]. Whatever the
-- owner's code did to the constraint mode is undone: apply checks
-- constraints at once, inside its own error handlers.
CREATE OR REPLACE FUNCTION pgshadow._sync_run(p_owner oid, p_sql text, p_a text[] DEFAULT NULL,
                                              p_b text[] DEFAULT NULL)
RETURNS SETOF text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN QUERY EXECUTE format('SELECT * FROM pgshadow_apply.%I($1, $2, $3)', pgshadow._owner_fn(p_owner))
        USING p_sql, p_a, p_b;
    SET CONSTRAINTS ALL IMMEDIATE;
END
$fn$;

-- Run one read-only statement as the table's owner on the caller's
-- snapshot (read_<owner>, above). The owner's functions must exist: a
-- caller runs _owner_fn (which may create them) in an earlier statement,
-- since a STABLE function cannot create anything.
CREATE OR REPLACE FUNCTION pgshadow._sync_read(p_owner oid, p_sql text, p_a text[] DEFAULT NULL,
                                               p_b text[] DEFAULT NULL)
RETURNS SETOF text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN QUERY EXECUTE format('SELECT * FROM pgshadow_apply.%I($1, $2, $3)', 'read_' || p_owner)
        USING p_sql, p_a, p_b;
END
$fn$;

-- Privileges
REVOKE ALL ON FUNCTION pgshadow._owner_fn(oid),
                       pgshadow._sync_run(oid, text, text[], text[]),
                       pgshadow._sync_read(oid, text, text[], text[])
       FROM PUBLIC;
