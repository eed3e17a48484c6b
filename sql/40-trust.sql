-- 40-trust.sql: who runs what as whom (docs/database.md "Trust"): the key rules of privileged code, and the functions that run statements as a table's owner
--
-- Owns: _key_spec, the pgshadow_apply schema and its functions (one per
-- table owner, owned by it), _owner_fn, _sync_run.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- ---------------------------------------------------------------------------
-- Keys: how privileged code may handle them (docs/database.md, "Trust").
-- ---------------------------------------------------------------------------

-- One row per key column of p_rel, in key order, saying how pgshadow's own
-- (privileged) code parses, groups and compares that column's values:
--   typ   the type to cast key text to: the column's type with every domain
--         stripped (also an array's element domain), schema-qualified and
--         without a type modifier, so a domain CHECK (user code) never runs
--         and a widened varchar(5) -> varchar(20) key is never cut;
--   coll  the column's collation as a COLLATE clause, so grouping and
--         comparing follow it (a nondeterministic collation merges keys);
--   eq, lt, le, gt  the operators of the type's default btree operator class,
--         schema-qualified (OPERATOR(public.=) for citext): with search_path
--         pinned to pg_catalog an unqualified = would pick text's
--         case-sensitive = for a citext key through its implicit cast;
--   ns    the operators' schema (one schema for all columns: row comparisons);
--   datetime  the text form depends on DateStyle/IntervalStyle;
--   problem   why this column cannot be a key, or NULL.
-- Refused: floating-point and money (text form depends on the session),
-- composite and range types, and any type owned by a role that is not a
-- superuser (an enum's owner can CREATE CAST from text to it and would have
-- its function run by every privileged parse).
CREATE OR REPLACE FUNCTION pgshadow._key_spec(p_rel regclass, p_cols text[])
RETURNS TABLE (o integer, col text, typ text, coll text, eq text, lt text, le text, gt text, ns text,
               datetime boolean, problem text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_typ    oid;
    v_coll   oid;
    v_base   oid;
    v_elem   oid;
    v_t      oid;
    v_fam    oid;
    v_intype oid;
    r        record;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_cols), 0) LOOP
        o := i; col := p_cols[i]; typ := NULL; coll := ''; eq := NULL; lt := NULL; le := NULL; gt := NULL;
        ns := NULL; datetime := false; problem := NULL;
        SELECT a.atttypid, a.attcollation INTO v_typ, v_coll
        FROM pg_attribute a WHERE a.attrelid = p_rel AND a.attname = p_cols[i] AND a.attnum > 0
                                AND NOT a.attisdropped;
        IF NOT FOUND THEN
            problem := 'no such column';
            RETURN NEXT; CONTINUE;
        END IF;
        v_base := v_typ;
        LOOP
            SELECT t.typtype, t.typbasetype INTO r FROM pg_type t WHERE t.oid = v_base;
            EXIT WHEN r.typtype <> 'd';
            v_base := r.typbasetype;
        END LOOP;
        v_elem := NULL;
        SELECT t.typelem INTO v_t FROM pg_type t
        WHERE t.oid = v_base AND t.typelem <> 0 AND t.typsubscript = 'array_subscript_handler'::regproc;
        IF v_t IS NOT NULL THEN
            v_elem := v_t;
            LOOP
                SELECT t.typtype, t.typbasetype INTO r FROM pg_type t WHERE t.oid = v_elem;
                EXIT WHEN r.typtype <> 'd';
                v_elem := r.typbasetype;
            END LOOP;
            IF v_elem <> v_t THEN
                SELECT t.typarray INTO v_base FROM pg_type t WHERE t.oid = v_elem;
            END IF;
        END IF;
        FOR r IN
            SELECT t.oid, t.typtype, t.typcategory, format_type(t.oid, NULL) AS name,
                   coalesce(ro.rolsuper, false) AS su, ro.rolname
            FROM pg_type t LEFT JOIN pg_roles ro ON ro.oid = t.typowner
            WHERE t.oid IN (v_base, v_elem)
        LOOP
            IF r.oid IN ('real'::regtype, 'double precision'::regtype) THEN
                problem := format('is a floating-point type (%s): its text form depends on the writing session (extra_float_digits)', r.name);
            ELSIF r.oid = 'money'::regtype THEN
                problem := 'is of type money: its text form depends on the session (lc_monetary)';
            ELSIF r.typtype = 'c' THEN
                problem := format('is of composite type %s', r.name);
            ELSIF r.typtype IN ('r', 'm') THEN
                problem := format('is of range type %s', r.name);
            ELSIF r.typtype = 'p' THEN
                problem := format('is of pseudo-type %s', r.name);
            ELSIF NOT r.su THEN
                problem := format('is of type %s, owned by role %s, not a superuser: pgshadow parses keys with '
                                  'more rights than that role, and the owner of a type can attach code to its casts',
                                  r.name, coalesce(quote_ident(r.rolname), '?'));
            END IF;
            IF r.typcategory IN ('D', 'T') THEN
                datetime := true;
            END IF;
        END LOOP;
        SELECT format('%I.%I', n.nspname, t.typname) INTO typ
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = v_base;
        IF v_coll <> 0 THEN
            SELECT format(' COLLATE %I.%I', n.nspname, c.collname) INTO coll
            FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace WHERE c.oid = v_coll;
        END IF;
        v_fam := NULL;
        SELECT opc.opcfamily, opc.opcintype INTO v_fam, v_intype
        FROM pg_opclass opc JOIN pg_am am ON am.oid = opc.opcmethod
        WHERE am.amname = 'btree' AND opc.opcdefault
          AND (opc.opcintype = v_base
               OR opc.opcintype IN (SELECT c.casttarget FROM pg_cast c
                                    WHERE c.castsource = v_base AND c.castmethod = 'b')
               OR (opc.opcintype = 'anyarray'::regtype AND v_elem IS NOT NULL)
               OR (opc.opcintype = 'anyenum'::regtype
                   AND (SELECT t.typtype FROM pg_type t WHERE t.oid = v_base) = 'e'))
        ORDER BY opc.opcintype = v_base DESC, opc.oid
        LIMIT 1;
        IF v_fam IS NULL THEN
            problem := coalesce(problem, format('has no default btree operator class (type %s)', typ));
        ELSE
            SELECT max(format('OPERATOR(%I.%s)', n.nspname, op.oprname)) FILTER (WHERE a.amopstrategy = 3),
                   max(format('OPERATOR(%I.%s)', n.nspname, op.oprname)) FILTER (WHERE a.amopstrategy = 1),
                   max(format('OPERATOR(%I.%s)', n.nspname, op.oprname)) FILTER (WHERE a.amopstrategy = 2),
                   max(format('OPERATOR(%I.%s)', n.nspname, op.oprname)) FILTER (WHERE a.amopstrategy = 5),
                   max(n.nspname::text) FILTER (WHERE a.amopstrategy = 3)
            INTO eq, lt, le, gt, ns
            FROM pg_amop a JOIN pg_operator op ON op.oid = a.amopopr
            JOIN pg_namespace n ON n.oid = op.oprnamespace
            WHERE a.amopfamily = v_fam AND a.amoplefttype = v_intype AND a.amoprighttype = v_intype
              AND a.amopstrategy IN (1, 2, 3, 5);
            IF eq IS NULL OR lt IS NULL OR le IS NULL OR gt IS NULL THEN
                problem := coalesce(problem, format('has no btree <, = and > operators (type %s)', typ));
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;

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
               AND p.prosrc LIKE '%pgshadow_apply body 2%') THEN
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
    IF v_role <> current_user THEN
        -- A non-superuser may give an object to a role only if that role
        -- may create in its schema: for the length of this transaction.
        IF NOT v_super THEN
            EXECUTE format('GRANT CREATE ON SCHEMA pgshadow_apply TO %I', v_role);
        END IF;
        EXECUTE format('ALTER FUNCTION pgshadow_apply.%I(text, text[], text[]) OWNER TO %I', v_name, v_role);
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


-- Privileges
REVOKE ALL ON FUNCTION pgshadow._key_spec(regclass, text[]),
                       pgshadow._owner_fn(oid),
                       pgshadow._sync_run(oid, text, text[], text[])
       FROM PUBLIC;
