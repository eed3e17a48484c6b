-- 05-rules.sql: what install accepts: the rules a table, its key and its
-- shadow must meet, as functions that only read the catalog and report
-- (register_table raises the first problem; `pgshadowctl check` prints them
-- all, before anything is installed).
--
-- Owns: _has_unique_on, _key_spec (how privileged code may handle a key),
-- _table_key, _table_problems, _shadow_problems, _raise_problem,
-- preflight_table.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.
--
-- Also loaded ALONE (with 40-trust.sql, the files install.list marks
-- "preflight") by `pgshadowctl check`, in a transaction it rolls back: so
-- check applies exactly the rules install applies, also to a database
-- pgshadow is not installed in yet. Hence the CREATE SCHEMA below (00-schema
-- has not run then), and pgshadow.tables is read only where it exists.
--
-- Invariants: nothing here writes, except the columns: expression check,
-- which plans each expression as the table's owner (_sync_run, 40-trust);
-- messages carry no "pgshadow: " prefix (the caller adds it) and name the
-- schema-qualified, quoted table.

CREATE SCHEMA IF NOT EXISTS pgshadow;

-- The tracking columns install adds to a shadow it creates (60-registry.sql)
-- and promote removes from the new table (88-promote.sql).
CREATE OR REPLACE FUNCTION pgshadow._tracking_columns()
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT ARRAY['_shadow_version', '_shadow_created_at', '_shadow_source_table', '_shadow_migration_id',
                 '_shadow_sync_status', '_shadow_last_sync', '_shadow_validation_hash']
$fn$;

-- The tracking columns' definitions (type and default), in
-- _tracking_columns' order: register_table creates a shadow with them,
-- revert (88-promote.sql) adds them back to the shadow. The CHECK of
-- _shadow_sync_status is _tracking_status_check().
CREATE OR REPLACE FUNCTION pgshadow._tracking_column_defs(p_source text, p_migration_id text)
RETURNS TABLE (col text, def text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT c, d FROM unnest(pgshadow._tracking_columns(),
                            ARRAY['integer DEFAULT 1', 'timestamptz DEFAULT CURRENT_TIMESTAMP',
                                  format('text DEFAULT %L', p_source), format('text DEFAULT %L', p_migration_id),
                                  'varchar(20) DEFAULT ''pending''', 'timestamptz', 'varchar(64)']) u(c, d)
$fn$;

CREATE OR REPLACE FUNCTION pgshadow._tracking_status_check()
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT '_shadow_sync_status IN (''pending'', ''synced'', ''diverged'')'
$fn$;

-- The columns of a unique, valid, non-partial index on p_rel whose column
-- set is exactly p_cols (any order): true when one exists.
CREATE OR REPLACE FUNCTION pgshadow._has_unique_on(p_rel oid, p_cols text[])
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT EXISTS (
        SELECT 1 FROM pg_index i
        WHERE i.indrelid = p_rel AND i.indisunique AND i.indpred IS NULL
          AND i.indexprs IS NULL
          AND i.indnkeyatts = cardinality(p_cols)
          AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
               FROM pg_attribute a
               WHERE a.attrelid = p_rel AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1]))
              = (SELECT array_agg(c ORDER BY c COLLATE "C") FROM unnest(p_cols) c)::text[]
    )
$fn$;

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

-- The effective key of p_rel: p_key when configured, else the primary key's
-- columns in index order; NULL when there is neither.
CREATE OR REPLACE FUNCTION pgshadow._table_key(p_rel oid, p_key text[])
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE WHEN coalesce(cardinality(p_key), 0) > 0 THEN p_key
           ELSE (SELECT array_agg(a.attname::text ORDER BY k.o)
                 FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, o)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE i.indrelid = p_rel AND i.indisprimary)
           END
$fn$;

-- Why register_table would refuse this table, before it touches anything:
-- one row per problem (an SQLSTATE condition name, the message, detail and
-- hint), in the order register_table meets them; no row when it is fine.
-- A problem that makes the later rules meaningless (no such table, not a
-- table, bad arguments) is reported alone; the others are all reported, so
-- the preflight shows every one at once. The shadow's columns are
-- _shadow_problems' business.
CREATE OR REPLACE FUNCTION pgshadow._table_problems(p_schema text, p_table text, p_key text[],
                                                    p_shadow_suffix text, p_migration_id text,
                                                    p_columns jsonb)
RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_rel      oid;
    v_kind     "char";
    v_qual     text;
    v_key      text[];
    v_cols     jsonb := coalesce(p_columns, '{}');
    v_owner    oid;
    v_shadow   text;
    v_srel     oid;
    v_k        text;
    v_cols_ok  boolean := true;
    v_registry boolean := to_regclass('pgshadow.tables') IS NOT NULL;
    v_tracking constant text[] := pgshadow._tracking_columns();
    r          record;
BEGIN
    -- The arguments (the config's values; pgshadowctl checks them first).
    detail := NULL; hint := NULL;
    code := 'invalid_parameter_value';
    IF p_schema IS NULL OR p_table IS NULL OR p_table = '' THEN
        message := 'register_table needs a schema and a table name';
    ELSIF p_migration_id IS NULL OR p_migration_id = '' THEN
        message := format('table %I.%I: migration id is empty', p_schema, p_table);
    ELSIF p_shadow_suffix IS NULL OR p_shadow_suffix = '' THEN
        message := format('table %I.%I: shadow suffix is empty', p_schema, p_table);
    ELSIF jsonb_typeof(v_cols) <> 'object'
          OR EXISTS (SELECT 1 FROM jsonb_each(v_cols) e WHERE jsonb_typeof(e.value) <> 'string') THEN
        message := format('table %I.%I: columns must map shadow column names to SQL expression strings',
                          p_schema, p_table);
    END IF;
    IF message IS NOT NULL THEN
        RETURN NEXT; RETURN;
    END IF;
    v_qual := format('%I.%I', p_schema, p_table);

    -- The table itself.
    SELECT c.oid, c.relkind, c.relowner INTO v_rel, v_kind, v_owner
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = p_schema AND c.relname = p_table;
    IF v_rel IS NULL THEN
        code := 'undefined_table'; message := format('table %s does not exist', v_qual);
        hint := 'Check migration.schema and the table names in the configuration.';
    ELSIF v_kind NOT IN ('r', 'p') THEN
        code := 'wrong_object_type'; message := format('%s is not a table (relkind %s)', v_qual, v_kind);
    ELSIF EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = v_rel) THEN
        code := 'wrong_object_type';
        message := format('%s is a partition or inheritance child; register its root table', v_qual);
    END IF;
    IF message IS NOT NULL THEN
        RETURN NEXT; RETURN;
    END IF;

    -- Flag names come from the contract: shadow_writes_<table> for a table
    -- named "enabled" would be the master switch shadow_writes_enabled.
    IF p_table = 'enabled' THEN
        RETURN QUERY SELECT 'invalid_name',
            format('table %s cannot be registered: its flag shadow_writes_enabled would be the master switch', v_qual),
            NULL::text, 'Rename the table (flags are named shadow_writes_<table>).';
    END IF;
    IF v_registry THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM pgshadow.tables WHERE table_name = $1 AND schema_name <> $2)'
            INTO r USING p_table, p_schema;
        IF r.exists THEN
            RETURN QUERY SELECT 'duplicate_object',
                format('a table named "%s" is already registered in another schema', p_table),
                'Flags are named after the table (shadow_writes_<table>), so names must be unique.', NULL::text;
        END IF;
    END IF;

    -- The key: configured, or the primary key. Every column present, NOT
    -- NULL, listed once, and exactly the column set of a unique index.
    v_key := pgshadow._table_key(v_rel, p_key);
    IF v_key IS NULL THEN
        v_cols_ok := false;
        RETURN QUERY SELECT 'invalid_table_definition',
            format('table %s has no primary key and no key is configured', v_qual), NULL::text,
            'Add "key: [column, ...]" naming unique, not-null columns to this table in the configuration.';
    ELSIF coalesce(cardinality(p_key), 0) > 0 THEN
        FOR v_k IN SELECT k FROM unnest(v_key) k
                   WHERE NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = v_rel AND attname = k
                                     AND attnum > 0 AND NOT attisdropped) LOOP
            v_cols_ok := false;
            RETURN QUERY SELECT 'undefined_column',
                format('key column %s does not exist in table %s', quote_ident(v_k), v_qual), NULL::text, NULL::text;
        END LOOP;
        FOR v_k IN SELECT k FROM unnest(v_key) k
                   WHERE EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = v_rel AND attname = k
                                 AND attnum > 0 AND NOT attisdropped AND NOT attnotnull) LOOP
            RETURN QUERY SELECT 'invalid_table_definition',
                format('key column %s of table %s is nullable', quote_ident(v_k), v_qual), NULL::text,
                'Key columns must be NOT NULL: ALTER TABLE ... ALTER COLUMN ... SET NOT NULL.';
        END LOOP;
        IF (SELECT count(DISTINCT k) FROM unnest(v_key) k) <> cardinality(v_key) THEN
            v_cols_ok := false;
            RETURN QUERY SELECT 'invalid_parameter_value',
                format('table %s: key lists a column twice', v_qual), NULL::text, NULL::text;
        ELSIF v_cols_ok AND NOT pgshadow._has_unique_on(v_rel, v_key) THEN
            RETURN QUERY SELECT 'invalid_table_definition',
                format('key (%s) of table %s is not backed by a unique index',
                       array_to_string(ARRAY(SELECT quote_ident(k) FROM unnest(v_key) k), ', '), v_qual),
                NULL::text, 'The key must identify one row: create a unique index on exactly these columns.';
        END IF;
    END IF;
    IF v_cols_ok THEN
        -- The change log carries keys as text, which pgshadow's own code
        -- parses back, groups and compares: _key_spec says how, and what it
        -- refuses (session-dependent text such as float, composite and range
        -- types, types owned by non-superusers).
        RETURN QUERY SELECT 'invalid_table_definition',
            format('key column %s of table %s %s', quote_ident(ks.col), v_qual, ks.problem), NULL::text,
            'Use a key of exact built-in or extension types (integer, bigint, numeric, text, uuid, citext, ...).'
        FROM pgshadow._key_spec(v_rel, v_key) ks WHERE ks.problem IS NOT NULL ORDER BY ks.o;
        -- A key column is the row's identity in both tables: apply finds
        -- the shadow row of a logged key by that very value, so the shadow's
        -- key column must hold the primary's value, not an expression of it
        -- (with id: "p.id + 3", a delete of id 4 removed the shadow row of id 1).
        RETURN QUERY SELECT 'invalid_table_definition',
            format('table %s: key column %s cannot be mapped by columns:', v_qual, quote_ident(k)), NULL::text,
            'The key is copied as it is; map the other columns only.'
        FROM unnest(v_key) k WHERE v_cols ? k;
    END IF;

    -- Who may act for the table: pgshadow copies rows as its owner.
    IF (SELECT relforcerowsecurity FROM pg_class WHERE oid = v_rel) THEN
        RETURN QUERY SELECT 'invalid_table_definition',
            format('table %s has FORCE ROW LEVEL SECURITY', v_qual),
            'pgshadow copies rows as the table owner; forced policies would hide rows from the copy.',
            'ALTER TABLE ... NO FORCE ROW LEVEL SECURITY while the migration runs.';
    END IF;
    -- Whoever installs must be able to act for the owner: the statements
    -- that write the shadow run as that owner (_owner_fn).
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, v_owner, 'MEMBER') THEN
        RETURN QUERY SELECT 'insufficient_privilege',
            format('table %s is owned by %s; %s is neither a superuser nor a member of that role',
                   v_qual, (SELECT quote_ident(rolname) FROM pg_roles WHERE oid = v_owner), quote_ident(current_user)),
            NULL::text, NULL::text;
    END IF;
    -- One migration per table: another migration's registration is not
    -- taken over silently (its capture and pending changes would go).
    IF v_registry THEN
        EXECUTE 'SELECT migration_id FROM pgshadow.tables WHERE schema_name = $1 AND table_name = $2'
                ' AND migration_id <> $3'
            INTO v_k USING p_schema, p_table, p_migration_id;
        IF v_k IS NOT NULL THEN
            RETURN QUERY SELECT 'duplicate_object',
                format('table %s is registered by migration %s', v_qual, quote_literal(v_k)), NULL::text,
                'A table belongs to one migration; remove it from the other migration''s configuration and install that one first.';
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = v_rel AND attnum > 0 AND NOT attisdropped
               AND attname = ANY (v_tracking)) THEN
        RETURN QUERY SELECT 'duplicate_column',
            format('table %s has a column named like a shadow tracking column (_shadow_*)', v_qual),
            NULL::text, NULL::text;
    END IF;

    -- The shadow, when it exists already: owned by the primary's owner (its
    -- triggers and constraints run as that owner, with rights its own owner
    -- may lack) and without forced row security.
    v_shadow := p_table || p_shadow_suffix;
    IF octet_length(v_shadow) > 63 THEN
        RETURN QUERY SELECT 'name_too_long',
            format('shadow table name %s is longer than 63 bytes', quote_ident(v_shadow)), NULL::text, NULL::text;
        RETURN;
    END IF;
    SELECT c.oid INTO v_srel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = p_schema AND c.relname = v_shadow AND c.relkind IN ('r', 'p');
    IF v_srel IS NOT NULL AND (SELECT relowner FROM pg_class WHERE oid = v_srel) <> v_owner THEN
        RETURN QUERY SELECT 'invalid_table_definition',
            format('shadow table %I.%I is owned by %s, table %s by %s', p_schema, v_shadow,
                   (SELECT quote_ident(rolname) FROM pg_roles ro JOIN pg_class c ON c.relowner = ro.oid WHERE c.oid = v_srel),
                   v_qual, (SELECT quote_ident(rolname) FROM pg_roles WHERE oid = v_owner)),
            NULL::text, 'ALTER TABLE ... OWNER TO the primary table''s owner.';
    END IF;
    IF v_srel IS NOT NULL AND (SELECT relforcerowsecurity FROM pg_class WHERE oid = v_srel) THEN
        RETURN QUERY SELECT 'invalid_table_definition',
            format('shadow table %I.%I has FORCE ROW LEVEL SECURITY', p_schema, v_shadow), NULL::text,
            'ALTER TABLE ... NO FORCE ROW LEVEL SECURITY while the migration runs.';
    END IF;
END
$fn$;

-- Whether the shadow p_shadow_rel fits table p_rel and the columns: mapping:
-- every unmapped primary column present with the same type or a domain over
-- it; every mapped column present, not generated, not a tracking column,
-- its expression ONE expression that plans (as the table's owner: planning
-- folds immutable calls, i.e. runs them) and casts to the column's type;
-- every tracking column present; a unique index on exactly the key; no NOT
-- NULL column that nothing writes. At most one row, naming every problem at
-- once (register_table raises it). With p_standin the shadow does not exist
-- yet and p_shadow_rel is the primary itself, which is what install would
-- create it from (LIKE, plus the tracking columns): the preflight's case.
CREATE OR REPLACE FUNCTION pgshadow._shadow_problems(p_schema text, p_shadow text, p_rel oid,
                                                     p_shadow_rel oid, p_key text[], p_columns jsonb,
                                                     p_standin boolean)
RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_errors   text[] := '{}';
    v_cols     jsonb := coalesce(p_columns, '{}');
    v_owner    oid := (SELECT relowner FROM pg_class WHERE oid = p_rel);
    v_qual     text := p_rel::regclass::text;
    v_squal    text := format('%I.%I', p_schema, p_shadow);
    v_k        text;
    v_tracking constant text[] := pgshadow._tracking_columns();
    r          record;
BEGIN
    FOR r IN
        SELECT a.attname::text AS col, a.atttypid, format_type(a.atttypid, a.atttypmod) AS typ,
               s.attname::text AS scol, s.atttypid AS stypid, format_type(s.atttypid, s.atttypmod) AS styp
        FROM pg_attribute a
        LEFT JOIN pg_attribute s ON s.attrelid = p_shadow_rel AND s.attname = a.attname
                                 AND s.attnum > 0 AND NOT s.attisdropped
        WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped
          AND NOT v_cols ? a.attname::text
        ORDER BY a.attnum
    LOOP
        IF r.scol IS NULL THEN
            v_errors := v_errors || format('column %s: missing in the shadow table', quote_ident(r.col));
        ELSIF r.stypid <> r.atttypid
              AND NOT EXISTS (SELECT 1 FROM pg_type t WHERE t.oid = r.stypid AND t.typtype = 'd'
                              AND t.typbasetype = r.atttypid) THEN
            v_errors := v_errors || format('column %s: type %s in the shadow table, %s in the primary',
                                           quote_ident(r.col), r.styp, r.typ);
        END IF;
    END LOOP;
    FOR r IN
        SELECT e.key AS col, e.value #>> '{}' AS expr, s.attname::text AS scol, s.attgenerated AS sgen,
               format_type(s.atttypid, s.atttypmod) AS styp
        FROM jsonb_each(v_cols) e
        LEFT JOIN pg_attribute s ON s.attrelid = p_shadow_rel AND s.attname = e.key
                                 AND s.attnum > 0 AND NOT s.attisdropped
        ORDER BY e.key
    LOOP
        IF r.col = ANY (v_tracking) THEN
            v_errors := v_errors || format('column %s (columns: mapping): tracking columns are set by pgshadow',
                                           quote_ident(r.col));
        ELSIF r.scol IS NULL THEN
            v_errors := v_errors || format('column %s (columns: mapping): missing in the shadow table',
                                           quote_ident(r.col));
        ELSIF r.sgen <> '' THEN
            v_errors := v_errors || format('column %s (columns: mapping): is a generated column in the shadow table',
                                           quote_ident(r.col));
        ELSIF position(';' IN r.expr) > 0 THEN
            -- Without a ';' the text below is one statement, whatever it holds.
            v_errors := v_errors || format('column %s (columns: mapping): expression %s: must be one SQL expression; '
                                           '";" is not allowed (write chr(59) for a literal semicolon)',
                                           quote_ident(r.col), r.expr);
        ELSE
            BEGIN
                -- Planned as the table's owner: planning folds immutable
                -- calls with constant arguments, i.e. runs them.
                PERFORM pgshadow._sync_run(v_owner, format(
                    'SELECT ARRAY[CAST((%s) AS %s)::text] FROM %s AS p WHERE false', r.expr, r.styp, v_qual));
                -- ... and ONE expression: RETURN takes an expression, never
                -- a query, so "x) FROM t p UNION SELECT (y" fails here.
                EXECUTE format('CREATE FUNCTION pg_temp.pgshadow_expr_check(p %s) RETURNS %s LANGUAGE sql RETURN (%s)',
                               v_qual, r.styp, r.expr);
                DROP FUNCTION pg_temp.pgshadow_expr_check;
            EXCEPTION WHEN OTHERS THEN
                v_errors := v_errors || format('column %s (columns: mapping): expression %s: %s',
                                               quote_ident(r.col), r.expr, SQLERRM);
            END;
        END IF;
    END LOOP;
    IF NOT p_standin THEN
        FOREACH v_k IN ARRAY v_tracking LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = p_shadow_rel AND attname = v_k
                           AND attnum > 0 AND NOT attisdropped) THEN
                v_errors := v_errors || format('column %s: tracking column missing in the shadow table', v_k);
            END IF;
        END LOOP;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM unnest(p_key) k WHERE v_cols ? k)
       AND NOT EXISTS (SELECT 1 FROM unnest(p_key) k
                       WHERE NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = p_shadow_rel
                                         AND attname = k AND attnum > 0 AND NOT attisdropped))
       AND NOT pgshadow._has_unique_on(p_shadow_rel, p_key) THEN
        v_errors := v_errors || format('key (%s): no unique index on exactly these columns in the shadow table',
                                       array_to_string(ARRAY(SELECT quote_ident(k) FROM unnest(p_key) k), ', '));
    END IF;
    -- A NOT NULL shadow column nothing writes and no default fills.
    FOR r IN
        SELECT s.attname::text AS col
        FROM pg_attribute s
        WHERE s.attrelid = p_shadow_rel AND s.attnum > 0 AND NOT s.attisdropped AND s.attnotnull
          AND s.attgenerated = '' AND NOT s.atthasdef
          AND NOT (s.attname::text = ANY (v_tracking)) AND NOT v_cols ? s.attname::text
          AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = p_rel AND a.attname = s.attname
                          AND a.attnum > 0 AND NOT a.attisdropped)
        ORDER BY s.attnum
    LOOP
        v_errors := v_errors || format('column %s: NOT NULL without a default in the shadow table, and nothing maps to it',
                                       quote_ident(r.col));
    END LOOP;
    IF cardinality(v_errors) > 0 THEN
        code := 'invalid_table_definition';
        message := format('shadow table %s%s does not match table %s (%s problems)', v_squal,
                          CASE WHEN p_standin THEN ', as install would create it,' ELSE '' END,
                          v_qual, cardinality(v_errors));
        detail := 'table ' || v_squal || ': ' || array_to_string(v_errors, E'\n' || 'table ' || v_squal || ': ');
        hint := CASE WHEN p_standin THEN 'Fix the columns: mapping in the configuration.'
                     ELSE 'Fix the shadow table, or drop it and let install create it from the primary.' END;
        RETURN NEXT;
    END IF;
END
$fn$;

-- Raise a problem row of _table_problems / _shadow_problems as the error
-- register_table fails with ("pgshadow: " + message, its SQLSTATE, detail
-- and hint when present).
CREATE OR REPLACE FUNCTION pgshadow._raise_problem(p_code text, p_message text, p_detail text, p_hint text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_detail IS NULL AND p_hint IS NULL THEN
        RAISE EXCEPTION USING MESSAGE = 'pgshadow: ' || p_message, ERRCODE = p_code;
    ELSIF p_detail IS NULL THEN
        RAISE EXCEPTION USING MESSAGE = 'pgshadow: ' || p_message, ERRCODE = p_code, HINT = p_hint;
    ELSIF p_hint IS NULL THEN
        RAISE EXCEPTION USING MESSAGE = 'pgshadow: ' || p_message, ERRCODE = p_code, DETAIL = p_detail;
    END IF;
    RAISE EXCEPTION USING MESSAGE = 'pgshadow: ' || p_message, ERRCODE = p_code, DETAIL = p_detail, HINT = p_hint;
END
$fn$;

-- `pgshadowctl check`'s question, per configured table: every reason
-- install would refuse it (_table_problems; then, when those pass,
-- _shadow_problems on the existing shadow or on what install would create).
-- Called in a transaction the preflight rolls back.
CREATE OR REPLACE FUNCTION pgshadow.preflight_table(p_schema text, p_table text, p_key text[],
                                                    p_shadow_suffix text, p_migration_id text,
                                                    p_columns jsonb)
RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_rel  oid;
    v_srel oid;
BEGIN
    RETURN QUERY SELECT * FROM pgshadow._table_problems(p_schema, p_table, p_key, p_shadow_suffix,
                                                        p_migration_id, p_columns);
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT c.oid INTO v_rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = p_schema AND c.relname = p_table;
    SELECT c.oid INTO v_srel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = p_schema AND c.relname = p_table || p_shadow_suffix AND c.relkind IN ('r', 'p');
    RETURN QUERY SELECT * FROM pgshadow._shadow_problems(p_schema, p_table || p_shadow_suffix, v_rel,
                                                         coalesce(v_srel, v_rel),
                                                         pgshadow._table_key(v_rel, p_key), p_columns,
                                                         v_srel IS NULL);
END
$fn$;

-- Privileges
REVOKE ALL ON FUNCTION pgshadow._tracking_columns(),
                       pgshadow._tracking_column_defs(text, text),
                       pgshadow._tracking_status_check(),
                       pgshadow._has_unique_on(oid, text[]),
                       pgshadow._key_spec(regclass, text[]),
                       pgshadow._table_key(oid, text[]),
                       pgshadow._table_problems(text, text, text[], text, text, jsonb),
                       pgshadow._shadow_problems(text, text, oid, oid, text[], jsonb, boolean),
                       pgshadow._raise_problem(text, text, text, text),
                       pgshadow.preflight_table(text, text, text[], text, text, jsonb)
       FROM PUBLIC;
