-- 88-promote.sql: promote by table swap (docs/promote.md): every table of a
-- migration at once, in one transaction, with a bounded stall.
--
-- Over 800 lines: the plan and the swap must read the catalog the same way
-- (what depends on a table, what moves, what is refused), and splitting the
-- two across files would let them drift.
--
-- Owns: pgshadow.promote_moves (what a promote moved, for validation and the
-- later revert and finalize), promote_plan, promote, promote_validate,
-- _promoted, _promote_holders; it sets the registry's promoted_at and legacy_name
-- (00-schema.sql).
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list. Idempotent. Plain SQL and PL/pgSQL only.
--
-- The swap, per table t with shadow t_shadow:  t -> t_legacy,
-- t_shadow -> t, and what depended on t follows it to the new t:
-- sequences (OWNED BY, and identity), views (re-created from their own
-- definition, so they read the new table), foreign keys of tables outside
-- the migration (re-pointed NOT VALID, validated after the commit),
-- grants, row level security and policies, the user's triggers, comments,
-- publication membership. t_shadow becomes a view of the new t, so code
-- that read the shadow because routing said so keeps working; routing
-- answers 'primary' from the commit on (every read_from_shadow_<t> flag
-- is 0). What cannot be moved is refused by promote_plan before any lock.
--
-- Nothing here runs code a table owner controls: renames, LOCK, grants,
-- CREATE VIEW / POLICY / TRIGGER and ADD CONSTRAINT ... NOT VALID parse but
-- run nothing of the owner's; the one read of a table (the highest key, for
-- a sequence) goes through the owner's own function (40-trust.sql), and
-- VALIDATE CONSTRAINT runs after the commit, as the referencing table's
-- owner.

-- Signatures of an earlier release (a call would be ambiguous beside the
-- ones below)
SELECT pgshadow._drop_functions(ARRAY['pgshadow.promote(text, bigint, integer, integer, bigint, integer)',
                                      'pgshadow.promote_plan(text)', 'pgshadow._promote_collect(integer)']);

-- What a promote moved, one row per object: the statement that moved it
-- (for the record), and its state ('done'; a foreign key re-pointed NOT
-- VALID is 'to_validate' until promote_validate validated it).
CREATE TABLE IF NOT EXISTS pgshadow.promote_moves (
    move_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    migration_id text NOT NULL,
    table_id     integer REFERENCES pgshadow.tables ON DELETE CASCADE,
    kind         text NOT NULL,
    object       text NOT NULL,
    statement    text,
    state        text NOT NULL DEFAULT 'done' CHECK (state IN ('done', 'to_validate', 'invalid')),
    detail       text,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The legacy table promote left (its oid): finalize drops that table and
-- no other of its name (89-finalize.sql).
ALTER TABLE pgshadow.tables ADD COLUMN IF NOT EXISTS legacy_oid oid;

-- A migration whose tables were promoted: apply, backfill, verify and
-- sampling leave it alone (its registry names now resolve to the new
-- tables and the compatibility views). Also once it is finalized
-- (89-finalize.sql: no table is registered any more; an install of it
-- again starts its cutover afresh, and this is false again).
CREATE OR REPLACE FUNCTION pgshadow._promoted(p_migration_id text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT EXISTS (SELECT 1 FROM pgshadow.tables t
                   WHERE t.migration_id = p_migration_id AND t.promoted_at IS NOT NULL)
        OR EXISTS (SELECT 1 FROM pgshadow.cutover c
                   WHERE c.migration_id = p_migration_id AND c.status = 'finalized')
$fn$;

-- The legacy name of a table: <t>_legacy, cut to fit 63 bytes.
CREATE OR REPLACE FUNCTION pgshadow._legacy_name(p_table text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT left(p_table, 56) || '_legacy'
$fn$;

-- Every relation of the migration's tables by name: each table, its shadow
-- (after promote: the compatibility view) and its legacy table (after
-- promote), those that exist. What the plan treats as the migration's own
-- (a view or foreign key between them is left alone) and what the plan's
-- catalog digest covers (_swap_fingerprint).
CREATE OR REPLACE FUNCTION pgshadow._swap_rels(p_migration_id text)
RETURNS oid[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(array_agg(DISTINCT r.oid), '{}')
    FROM pgshadow.tables x
    CROSS JOIN LATERAL (VALUES (x.table_name), (x.shadow_name), (x.legacy_name)) n(nm)
    CROSS JOIN LATERAL (SELECT CASE WHEN n.nm IS NOT NULL
                                    THEN to_regclass(format('%I.%I', x.schema_name, n.nm))::oid END AS oid) r
    WHERE x.migration_id = p_migration_id AND r.oid IS NOT NULL
$fn$;

-- The names of columns p_cols of p_rel, sorted: a foreign key or an index
-- of the primary is matched on the shadow by its column names.
CREATE OR REPLACE FUNCTION pgshadow._colnames(p_rel oid, p_cols int2[])
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
    WHERE a.attrelid = p_rel AND a.attnum = ANY (p_cols)
$fn$;

-- The primary's foreign keys the shadow has none of (none on the same
-- columns): promote adds them to the new table (nm: the name there).
CREATE OR REPLACE FUNCTION pgshadow._promote_fks_out(p_primary oid, p_shadow oid)
RETURNS TABLE (oid oid, conname text, nm text, confrelid oid, convalidated boolean, def text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT k.oid, k.conname::text,
           CASE WHEN EXISTS (SELECT 1 FROM pg_constraint x WHERE x.conrelid = p_shadow AND x.conname = k.conname)
                THEN left(k.conname, 55) || '_legacy' ELSE k.conname::text END,
           k.confrelid, k.convalidated, pg_get_constraintdef(k.oid)
    FROM pg_constraint k
    WHERE k.contype = 'f' AND k.conrelid = p_primary
      AND NOT EXISTS (SELECT 1 FROM pg_constraint x
                      WHERE x.contype = 'f' AND x.conrelid = p_shadow
                        AND pgshadow._colnames(p_shadow, x.conkey) = pgshadow._colnames(p_primary, k.conkey))
$fn$;

-- ---------------------------------------------------------------------------
-- The plan
-- ---------------------------------------------------------------------------

-- What promote will do with every object that depends on the migration's
-- primary tables, and what it refuses: one row per object, ok = false for
-- a blocker (promote refuses to start while there is one). Catalog reads
-- only: `pgshadowctl promote --dry-run` prints it. p_reverse: promote
-- sets up reverse sync (90-revert.sql), so every table must be revertable.
CREATE OR REPLACE FUNCTION pgshadow.promote_plan(p_migration_id text, p_reverse boolean DEFAULT true)
RETURNS TABLE (table_name text, kind text, object text, action text, ok boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN QUERY SELECT * FROM pgshadow._swap_plan(p_migration_id, false, p_reverse);
END
$fn$;

-- The plan of a swap: promote's (p_revert false: the primary t gives way
-- to its shadow) or revert's (true: the new t gives way to t_legacy, the
-- table it replaced; 90-revert.sql). One reading of the catalog for both,
-- so what moves one way moves back the other.
CREATE OR REPLACE FUNCTION pgshadow._swap_plan(p_migration_id text, p_revert boolean, p_reverse boolean)
RETURNS TABLE (table_name text, kind text, object text, action text, ok boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t      record;
    d      record;
    v_p    oid;      -- the table that gives way (promote: the primary; revert: the new table)
    v_s    oid;      -- the one that takes its name (promote: the shadow; revert: the legacy table)
    v_v    oid;
    v_in   text;     -- the name of v_s
    v_out  text;     -- the name v_p takes
    v_rel  oid[];
    v_bad  text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pgshadow.tables x WHERE x.migration_id = p_migration_id) THEN
        RAISE EXCEPTION 'pgshadow: migration % has no tables', p_migration_id USING ERRCODE = 'undefined_object';
    END IF;
    v_rel := pgshadow._swap_rels(p_migration_id);
    FOR t IN SELECT x.* FROM pgshadow.tables x WHERE x.migration_id = p_migration_id ORDER BY x.table_id LOOP
        v_p := to_regclass(format('%I.%I', t.schema_name, t.table_name));
        IF p_revert THEN
            IF t.promoted_at IS NULL THEN
                RETURN QUERY SELECT t.table_name, 'table', t.table_name, 'refused: not promoted', false;
                CONTINUE;
            END IF;
            IF NOT t.reverse_sync THEN
                RETURN QUERY SELECT t.table_name, 'table', t.legacy_name,
                                    'refused: promoted without reverse sync (promote --without-revert or keep_legacy: '
                                    'false): the legacy table misses every write since the promote', false;
                CONTINUE;
            END IF;
            v_in := t.legacy_name;
            v_out := t.shadow_name;
        ELSE
            IF t.promoted_at IS NOT NULL THEN
                RETURN QUERY SELECT t.table_name, 'table', t.table_name, 'already promoted', false;
                CONTINUE;
            END IF;
            v_in := t.shadow_name;
            v_out := pgshadow._legacy_name(t.table_name);
        END IF;
        v_s := to_regclass(format('%I.%I', t.schema_name, v_in));
        IF v_p IS NULL OR v_s IS NULL OR (SELECT relkind FROM pg_class WHERE oid = v_s) <> 'r' THEN
            RETURN QUERY SELECT t.table_name, 'table', v_in,
                                format('refused: %I or %I is missing, or %I is not a plain table', t.table_name, v_in,
                                       v_in), false;
            CONTINUE;
        END IF;
        RETURN QUERY SELECT t.table_name, 'table', format('%I.%I', t.schema_name, t.table_name),
                            format('rename to %I; %I renamed to %I', v_out, v_in, t.table_name), true;
        IF p_revert THEN
            v_v := to_regclass(format('%I.%I', t.schema_name, t.shadow_name));
            IF v_v IS NOT NULL AND (SELECT relkind FROM pg_class WHERE oid = v_v) <> 'v' THEN
                RETURN QUERY SELECT t.table_name, 'table', t.shadow_name,
                                    'refused: the name is taken by something other than promote''s compatibility view', false;
            ELSIF v_v IS NOT NULL THEN
                RETURN QUERY
                SELECT t.table_name, 'compatibility view', format('%I.%I', t.schema_name, t.shadow_name),
                       coalesce('refused: ' || string_agg(DISTINCT c.oid::regclass::text, ', ') || ' read it',
                                'dropped (the shadow table takes its name back)'),
                       count(c.oid) = 0
                FROM pg_depend dp JOIN pg_rewrite r ON r.oid = dp.objid JOIN pg_class c ON c.oid = r.ev_class
                WHERE dp.classid = 'pg_rewrite'::regclass AND dp.refobjid = v_v AND c.oid <> v_v;
            END IF;
            IF pgshadow._rls_forced(t.table_id) THEN
                RETURN QUERY SELECT t.table_name, 'reverse sync', t.legacy_name,
                                    'refused: stopped while the table or its legacy table has FORCE ROW LEVEL SECURITY '
                                    '(its policies would hide rows from the owner): ALTER TABLE ... NO FORCE ROW '
                                    'LEVEL SECURITY, and reverse sync catches up', false;
            END IF;
            IF EXISTS (SELECT 1 FROM pgshadow.quarantine q WHERE q.table_id = t.table_id) THEN
                RETURN QUERY SELECT t.table_name, 'quarantine', t.legacy_name,
                                    format('refused: %s key(s) the legacy table rejected would be lost '
                                           '(pgshadowctl quarantine)',
                                           (SELECT count(*) FROM pgshadow.quarantine q WHERE q.table_id = t.table_id)),
                                    false;
            END IF;
        ELSE
            IF to_regclass(format('%I.%I', t.schema_name, v_out)) IS NOT NULL THEN
                RETURN QUERY SELECT t.table_name, 'table', v_out, 'refused: the name is taken', false;
            END IF;
            IF pgshadow._rls_forced(t.table_id) THEN
                RETURN QUERY SELECT t.table_name, 'sync', t.table_name,
                                    'refused: the table or its shadow has FORCE ROW LEVEL SECURITY: apply holds its '
                                    'changes back (the owner''s policies would hide rows from it): ALTER TABLE ... NO '
                                    'FORCE ROW LEVEL SECURITY, let verify check it, then promote', false;
            END IF;
            IF p_reverse THEN
                -- every legacy column needs a source in the new table
                SELECT string_agg(r.problem, '; ') INTO v_bad FROM pgshadow._reverse_columns(t.table_id, v_p, v_s) r
                WHERE r.problem IS NOT NULL;
                RETURN QUERY SELECT t.table_name, 'reverse sync', pgshadow._legacy_name(t.table_name),
                    coalesce('refused: not revertable: ' || v_bad || ' (or promote --without-revert: no way back)',
                             'kept, reverse-synced from the new table'
                             || coalesce(' (' || (SELECT string_agg(format('%I <- %s', r.col, r.expr), ', ')
                                                  FROM pgshadow._reverse_columns(t.table_id, v_p, v_s) r
                                                  WHERE NOT r.plain) || ')', '')
                             || ': revert loses nothing'), v_bad IS NULL;
                RETURN QUERY SELECT t.table_name, 'trigger', g.tgname::text,
                                    'disabled on the legacy table while reverse sync writes it; revert enables it again',
                                    true
                             FROM pg_trigger g
                             WHERE g.tgrelid = v_p AND NOT g.tgisinternal AND g.tgname !~ '^pgshadow_'
                               AND g.tgenabled <> 'D';
            ELSE
                RETURN QUERY SELECT t.table_name, 'reverse sync', pgshadow._legacy_name(t.table_name),
                                    'none: the legacy table is kept as of the promote; revert is refused', true;
            END IF;
        END IF;
        IF t.partitioned OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid IN (v_p, v_s)
                                    OR i.inhparent IN (v_p, v_s)) THEN
            RETURN QUERY SELECT t.table_name, 'table', t.table_name,
                                'refused: promote of partitioned or inherited tables is not built', false;
        END IF;
        IF (SELECT relowner FROM pg_class WHERE oid = v_p) <> (SELECT relowner FROM pg_class WHERE oid = v_s) THEN
            RETURN QUERY SELECT t.table_name, 'owner', t.shadow_name,
                                format('owner set to %s, the primary''s', (SELECT relowner::regrole FROM pg_class WHERE oid = v_p)),
                                true;
        END IF;
        -- sequences: a default that calls nextval keeps calling it (the
        -- shadow was made LIKE ... INCLUDING DEFAULTS, or has its own);
        -- one owned by a primary column is owned by the new column
        FOR d IN SELECT a.attname, a.attidentity, s.oid AS seq,
                        (SELECT pg_get_expr(ad.adbin, ad.adrelid) FROM pg_attrdef ad
                         WHERE ad.adrelid = v_p AND ad.adnum = a.attnum) AS def,
                        (SELECT sa.attidentity FROM pg_attribute sa WHERE sa.attrelid = v_s
                         AND sa.attname = a.attname AND NOT sa.attisdropped) AS s_ident,
                        EXISTS (SELECT 1 FROM pg_attribute sa WHERE sa.attrelid = v_s AND sa.attname = a.attname
                                AND NOT sa.attisdropped) AS in_shadow
                 FROM pg_attribute a
                 LEFT JOIN pg_depend dp ON dp.refclassid = 'pg_class'::regclass AND dp.refobjid = v_p
                      AND dp.refobjsubid = a.attnum AND dp.classid = 'pg_class'::regclass AND dp.deptype IN ('a', 'i')
                 LEFT JOIN pg_class s ON s.oid = dp.objid AND s.relkind = 'S'
                 WHERE a.attrelid = v_p AND a.attnum > 0 AND NOT a.attisdropped
                   AND (s.oid IS NOT NULL OR a.attidentity <> '') LOOP
            IF NOT d.in_shadow THEN
                RETURN QUERY SELECT t.table_name, 'sequence', d.seq::regclass::text,
                                    format('refused: column %I feeds from it and the shadow has no column %I',
                                           d.attname, d.attname), false;
            ELSIF d.attidentity <> '' AND coalesce(d.s_ident, '') = '' THEN
                RETURN QUERY SELECT t.table_name, 'identity', format('%I.%I', t.table_name, d.attname),
                                    'the new column becomes an identity column, above every key of both tables', true;
            ELSE
                RETURN QUERY SELECT t.table_name, 'sequence', d.seq::regclass::text,
                                    format('owned by the new %I.%I, set above every key', t.table_name, d.attname), true;
            END IF;
        END LOOP;
        -- every other object that depends on the primary
        FOR d IN SELECT dp.classid, dp.objid FROM pg_depend dp
                 WHERE dp.refclassid = 'pg_class'::regclass AND dp.refobjid = v_p AND dp.deptype IN ('n', 'a')
                 UNION
                 SELECT dp.classid, dp.objid FROM pg_depend dp
                 WHERE dp.refclassid = 'pg_type'::regclass
                   AND dp.refobjid = (SELECT reltype FROM pg_class WHERE oid = v_p) AND dp.deptype = 'n' LOOP
            IF d.classid = 'pg_rewrite'::regclass THEN
                RETURN QUERY
                SELECT v.table_name, v.kind, v.object, v.action, v.action !~ '^refused' FROM (
                SELECT t.table_name, CASE c.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END AS kind,
                       c.oid::regclass::text AS object,
                       CASE WHEN c.relkind <> 'v' THEN 'refused: a materialized view is not moved'
                            WHEN c.oid = ANY (v_rel) THEN 'left alone'
                            WHEN EXISTS (SELECT 1 FROM pg_depend x
                                         WHERE x.objid = d.objid AND x.refobjid = v_p AND x.refobjsubid > 0
                                           AND NOT EXISTS (SELECT 1 FROM pg_attribute sa
                                                           JOIN pg_attribute pa ON pa.attrelid = v_p
                                                            AND pa.attnum = x.refobjsubid
                                                           WHERE sa.attrelid = v_s AND sa.attname = pa.attname
                                                             AND NOT sa.attisdropped))
                            THEN format('refused: it reads a column %s does not have', v_s::regclass)
                            ELSE CASE WHEN p_revert THEN 'recreated from its definition over the legacy table (named t again)'
                                      ELSE 'recreated from its definition over the new table' END END AS action
                FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
                WHERE r.oid = d.objid AND r.ev_class <> v_p) v;
                IF EXISTS (SELECT 1 FROM pg_rewrite r WHERE r.oid = d.objid AND r.ev_class = v_p) THEN
                    RETURN QUERY SELECT t.table_name, 'rule', (SELECT r.rulename::text FROM pg_rewrite r WHERE r.oid = d.objid),
                                        'refused: a rule on the primary is not moved', false;
                END IF;
            ELSIF d.classid = 'pg_constraint'::regclass THEN
                RETURN QUERY
                SELECT t.table_name, 'foreign key', format('%s on %s', k.conname, k.conrelid::regclass),
                       CASE WHEN k.conrelid = ANY (v_rel) THEN 'left alone (between the migration''s tables)'
                            WHEN NOT pgshadow._has_unique_on(v_s, pgshadow._colnames(v_p, k.confkey))
                            THEN format('refused: %s has no unique index on the referenced columns', v_s::regclass)
                            ELSE 'points at the new table (NOT VALID, validated after the commit)' END,
                       k.conrelid = ANY (v_rel) OR pgshadow._has_unique_on(v_s, pgshadow._colnames(v_p, k.confkey))
                FROM pg_constraint k
                WHERE k.oid = d.objid AND k.contype = 'f' AND k.confrelid = v_p AND k.conrelid <> v_p;
            ELSIF d.classid = 'pg_trigger'::regclass THEN
                RETURN QUERY
                SELECT t.table_name, 'trigger', g.tgname::text,
                       CASE WHEN EXISTS (SELECT 1 FROM pg_trigger x WHERE x.tgrelid = v_s AND x.tgname = g.tgname)
                            THEN 'the shadow has its own of that name: kept'
                            ELSE 'recreated on the new table' END, true
                FROM pg_trigger g
                WHERE g.oid = d.objid AND g.tgrelid = v_p AND NOT g.tgisinternal AND g.tgname !~ '^pgshadow_';
            ELSIF d.classid = 'pg_policy'::regclass THEN
                RETURN QUERY
                SELECT t.table_name, 'policy', y.polname::text,
                       CASE WHEN EXISTS (SELECT 1 FROM pg_policy x WHERE x.polrelid = v_s AND x.polname = y.polname)
                            THEN 'the shadow has its own of that name: kept'
                            ELSE 'recreated on the new table' END, true
                FROM pg_policy y WHERE y.oid = d.objid;
            ELSIF d.classid = 'pg_publication_rel'::regclass THEN
                RETURN QUERY
                SELECT t.table_name, 'publication', pb.pubname::text,
                       CASE WHEN pr.prqual IS NOT NULL OR pr.prattrs IS NOT NULL
                            THEN 'refused: a row filter or column list is not moved'
                            ELSE 'the new table joins it, the legacy table leaves it' END,
                       pr.prqual IS NULL AND pr.prattrs IS NULL
                FROM pg_publication_rel pr JOIN pg_publication pb ON pb.oid = pr.prpubid WHERE pr.oid = d.objid;
            ELSIF d.classid = 'pg_proc'::regclass THEN
                RETURN QUERY SELECT t.table_name, 'function', d.objid::regprocedure::text,
                                    'refused: it depends on the primary itself (a SQL-standard body or its row type)', false;
            ELSIF d.classid = 'pg_statistic_ext'::regclass THEN
                RETURN QUERY SELECT t.table_name, 'statistics', (SELECT stxname::text FROM pg_statistic_ext WHERE oid = d.objid),
                                    'left on the legacy table', true;
            ELSIF d.classid = 'pg_class'::regclass THEN
                IF (SELECT relkind FROM pg_class WHERE oid = d.objid) NOT IN ('i', 'I', 'S', 't') THEN
                    RETURN QUERY SELECT t.table_name, 'relation', d.objid::regclass::text,
                                        'refused: it depends on the primary and is not moved', false;
                END IF;
            ELSIF d.classid NOT IN ('pg_attrdef'::regclass, 'pg_type'::regclass) THEN
                RETURN QUERY SELECT t.table_name, d.classid::regclass::text, d.objid::text,
                                    'refused: a dependant promote does not know how to move', false;
            END IF;
        END LOOP;
        IF NOT p_revert THEN
            RETURN QUERY
            SELECT t.table_name, 'foreign key', format('%s on %s', k.conname, v_p::regclass),
                   format('the shadow has none on its columns: added to the new table, pointing at %s '
                          '(NOT VALID, validated after the commit)',
                          CASE WHEN k.confrelid = ANY (v_rel) THEN 'the new ' || k.confrelid::regclass::text
                               ELSE k.confrelid::regclass::text END), true
            FROM pgshadow._promote_fks_out(v_p, v_s) k;
        END IF;
        IF (SELECT relacl FROM pg_class WHERE oid = v_p) IS NOT NULL THEN
            RETURN QUERY SELECT t.table_name, 'grants', t.table_name, 'the new table gets exactly the primary''s', true;
        END IF;
        IF (SELECT relrowsecurity OR relforcerowsecurity FROM pg_class WHERE oid = v_p) THEN
            RETURN QUERY SELECT t.table_name, 'row level security', t.table_name, 'enabled on the new table as on the primary', true;
        END IF;
        IF p_revert THEN
            RETURN QUERY SELECT t.table_name, 'tracking columns', t.shadow_name,
                                'added back to the shadow (metadata only; rows read synced): forward sync resumes', true;
            RETURN QUERY SELECT t.table_name, 'trigger', m.object,
                                CASE WHEN m.kind = 'legacy trigger' THEN 'enabled again on the table, as it was'
                                     ELSE format('dropped from %I (promote made it there)', t.shadow_name) END, true
                         FROM pgshadow.promote_moves m
                         WHERE m.table_id = t.table_id AND (m.kind = 'legacy trigger'
                                                            OR (m.kind = 'trigger' AND m.statement ~ '^CREATE'));
        ELSE
            RETURN QUERY SELECT t.table_name, 'tracking columns', string_agg(a.attname::text, ', ' ORDER BY a.attnum),
                                'dropped from the new table (the application sees the columns it saw)', true
                         FROM pg_attribute a
                         WHERE a.attrelid = v_s AND a.attnum > 0 AND NOT a.attisdropped
                           AND a.attname::text = ANY (pgshadow._tracking_columns())
                           AND NOT EXISTS (SELECT 1 FROM pg_attribute pa WHERE pa.attrelid = v_p
                                           AND pa.attname = a.attname AND NOT pa.attisdropped)
                         HAVING count(*) > 0;
            RETURN QUERY SELECT t.table_name, 'compatibility view', format('%I.%I', t.schema_name, t.shadow_name),
                                'a view of the new table, for code that read the shadow', true;
        END IF;
    END LOOP;
END
$fn$;

-- ---------------------------------------------------------------------------
-- The swap
-- ---------------------------------------------------------------------------

-- The statements that move one table's dependants, built BEFORE the
-- renames: a definition printed now names the primary by its name, so run
-- after the renames it means the new table. Into pg_temp.promote_todo in
-- order (ord): first what must go before the renames (ord < 100), then the
-- rest.
--
-- Revert (p_revert, 90-revert.sql) reads the same way with the roles
-- turned: the new table t gives way (to t_shadow, once the compatibility
-- view is dropped) and t_legacy takes the name back; what promote itself
-- added is undone from its record (promote_moves): the identity it added
-- and the triggers it made on the new table go, the legacy table's own
-- triggers it disabled come back, pgshadow's tracking columns return to the
-- shadow. p_reverse (promote): the legacy table's own triggers are
-- disabled, since reverse sync writes it.
CREATE OR REPLACE FUNCTION pgshadow._promote_collect(p_table_id integer, p_revert boolean DEFAULT false,
                                                     p_reverse boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t     pgshadow.tables;
    v_p   oid;    -- gives way (promote: the primary; revert: the new table)
    v_s   oid;    -- takes its name (promote: the shadow; revert: the legacy table)
    v_pq  text;   -- the table's name, qualified (after the renames: v_s)
    v_lq  text;   -- v_p after the renames, qualified
    v_out text;   -- v_p's name after the renames
    v_in  text;   -- v_s's name before them
    v_own regrole;
    d     record;
    v_rel oid[];
BEGIN
    SELECT * INTO STRICT t FROM pgshadow.tables x WHERE x.table_id = p_table_id;
    v_out := CASE WHEN p_revert THEN t.shadow_name ELSE pgshadow._legacy_name(t.table_name) END;
    v_in := CASE WHEN p_revert THEN t.legacy_name ELSE t.shadow_name END;
    v_p := format('%I.%I', t.schema_name, t.table_name)::regclass;
    v_s := format('%I.%I', t.schema_name, v_in)::regclass;
    v_pq := format('%I.%I', t.schema_name, t.table_name);
    v_lq := format('%I.%I', t.schema_name, v_out);
    v_own := (SELECT relowner FROM pg_class WHERE oid = v_p)::regrole;
    v_rel := pgshadow._swap_rels(t.migration_id);

    IF p_revert AND (SELECT relkind FROM pg_class
                     WHERE oid = to_regclass(format('%I.%I', t.schema_name, t.shadow_name))) = 'v' THEN
        INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql) VALUES
            (p_table_id, 5, 'compatibility view', format('%I.%I', t.schema_name, t.shadow_name),
             format('DROP VIEW %I.%I', t.schema_name, t.shadow_name));
    END IF;
    -- before the renames: pgshadow's capture leaves the table that gives
    -- way (the swap installs it where it is needed after: 88's _swap), and
    -- foreign keys of other tables let go of it
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT p_table_id, 10, 'capture', g.tgname, format('DROP TRIGGER %I ON %s', g.tgname, v_pq)
    FROM pg_trigger g WHERE g.tgrelid = v_p AND g.tgname ~ '^pgshadow_capture';
    FOR d IN SELECT k.oid, k.conname, k.conrelid, k.convalidated, pg_get_constraintdef(k.oid) AS def
             FROM pg_constraint k
             WHERE k.contype = 'f' AND k.confrelid = v_p AND k.conrelid <> ALL (v_rel) LOOP
        INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql) VALUES
            (p_table_id, 20, 'foreign key', format('%s on %s', d.conname, d.conrelid::regclass),
             format('ALTER TABLE %s DROP CONSTRAINT %I', d.conrelid::regclass, d.conname)),
            (p_table_id, 140, 'foreign key', format('%s on %s', d.conname, d.conrelid::regclass),
             format('ALTER TABLE %s ADD CONSTRAINT %I %s%s', d.conrelid::regclass, d.conname, d.def,
                    CASE WHEN d.def ~ 'NOT VALID$' THEN '' ELSE ' NOT VALID' END));
        IF d.convalidated THEN
            INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql, validate) VALUES
                (p_table_id, 999, 'foreign key', format('%s on %s', d.conname, d.conrelid::regclass),
                 format('ALTER TABLE %s VALIDATE CONSTRAINT %I', d.conrelid::regclass, d.conname), true);
        END IF;
    END LOOP;
    -- foreign keys of the primary the shadow does not have (one on the
    -- same columns): added to the new table; one that pointed at a table
    -- of the migration points at its new table (the definition names it).
    -- Not by revert: the legacy table keeps the constraints it had.
    FOR d IN SELECT k.conname, k.convalidated, k.def, k.nm FROM pgshadow._promote_fks_out(v_p, v_s) k
             WHERE NOT p_revert LOOP
        INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql) VALUES
            (p_table_id, 141, 'foreign key', format('%s on %s', d.conname, v_pq),
             format('ALTER TABLE %s ADD CONSTRAINT %I %s%s', v_pq, d.nm, d.def,
                    CASE WHEN d.def ~ 'NOT VALID$' THEN '' ELSE ' NOT VALID' END));
        IF d.convalidated THEN
            INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql, validate) VALUES
                (p_table_id, 999, 'foreign key', format('%s on %s', d.nm, v_pq),
                 format('ALTER TABLE %s VALIDATE CONSTRAINT %I', v_pq, d.nm), true);
        END IF;
    END LOOP;
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql) VALUES
        (p_table_id, 50, 'table', v_pq, format('ALTER TABLE %s RENAME TO %I', v_pq, v_out)),
        (p_table_id, 60, 'table', format('%I.%I', t.schema_name, v_in),
         format('ALTER TABLE %I.%I RENAME TO %I', t.schema_name, v_in, t.table_name));
    IF p_reverse THEN
        -- reverse sync writes the legacy table: the application's triggers
        -- there must not fire for it (they fire on the new table)
        INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql, detail)
        SELECT p_table_id, 65, 'legacy trigger', g.tgname, format('ALTER TABLE %s DISABLE TRIGGER %I', v_lq, g.tgname),
               g.tgenabled::text
        FROM pg_trigger g
        WHERE g.tgrelid = v_p AND NOT g.tgisinternal AND g.tgname !~ '^pgshadow_' AND g.tgenabled <> 'D';
    END IF;
    IF p_revert THEN
        -- what promote added, undone: the identity it added to the new
        -- table, the triggers it made there; the legacy table's triggers it
        -- disabled are enabled as they were
        INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
        SELECT p_table_id, 112, 'identity', m.object,
               format('ALTER TABLE %s ALTER COLUMN %s DROP IDENTITY IF EXISTS', v_lq,
                      substring(m.statement FROM ' ALTER COLUMN (.*) ADD GENERATED '))
        FROM pgshadow.promote_moves m
        WHERE m.table_id = p_table_id AND m.kind = 'identity' AND m.statement ~ ' ADD GENERATED ';
        INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
        SELECT p_table_id, 103, 'trigger', m.object, format('DROP TRIGGER IF EXISTS %I ON %s', m.object, v_lq)
        FROM pgshadow.promote_moves m
        WHERE m.table_id = p_table_id AND m.kind = 'trigger' AND m.statement ~ '^CREATE';
        INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
        SELECT p_table_id, 162, 'legacy trigger', m.object,
               format('ALTER TABLE %s %s TRIGGER %I', v_pq,
                      CASE m.detail WHEN 'A' THEN 'ENABLE ALWAYS' WHEN 'R' THEN 'ENABLE REPLICA' ELSE 'ENABLE' END,
                      m.object)
        FROM pgshadow.promote_moves m
        WHERE m.table_id = p_table_id AND m.kind = 'legacy trigger';
        -- pgshadow's tracking columns back on the shadow, metadata only
        -- (no rewrite, no scan under the locks): the rows read 'synced' (they
        -- are: reverse sync made the legacy table what this one holds), new
        -- rows 'pending'; the CHECK is added NOT VALID
        INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
        SELECT p_table_id, 104, 'tracking column', format('%s.%I', v_lq, c.col),
               format('ALTER TABLE %s ADD COLUMN %I %s', v_lq, c.col,
                      CASE WHEN c.col = '_shadow_sync_status' THEN 'varchar(20) DEFAULT ''synced''' ELSE c.def END)
        FROM pgshadow._tracking_column_defs(t.table_name, t.migration_id) c
        WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = v_p AND a.attname = c.col
                          AND NOT a.attisdropped);
        IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = v_p AND a.attname = '_shadow_sync_status'
                       AND NOT a.attisdropped) THEN
            INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql) VALUES
                (p_table_id, 105, 'tracking column', format('%s._shadow_sync_status', v_lq),
                 format('ALTER TABLE %s ALTER COLUMN _shadow_sync_status SET DEFAULT ''pending''', v_lq)),
                (p_table_id, 106, 'tracking column', format('%s._shadow_sync_status', v_lq),
                 format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (%s) NOT VALID', v_lq,
                        left(t.shadow_name, 40) || '__shadow_sync_status_check', pgshadow._tracking_status_check()));
        END IF;
    END IF;

    -- after the renames
    -- pgshadow's tracking columns leave the new table (the primary had
    -- none): what the application's `SELECT *` returned before promote it
    -- returns after, and a prepared `SELECT *` or `RETURNING *` does not
    -- fail with "cached plan must not change result type". Metadata only.
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT p_table_id, 101, 'tracking column', format('%s.%I', v_pq, a.attname),
           format('ALTER TABLE %s DROP COLUMN %I', v_pq, a.attname)
    FROM pg_attribute a
    WHERE NOT p_revert AND a.attrelid = v_s AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname::text = ANY (pgshadow._tracking_columns())
      AND NOT EXISTS (SELECT 1 FROM pg_attribute pa WHERE pa.attrelid = v_p AND pa.attname = a.attname
                      AND NOT pa.attisdropped);
    IF (SELECT relowner FROM pg_class WHERE oid = v_s) <> v_own THEN
        INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
        VALUES (p_table_id, 100, 'owner', v_pq, format('ALTER TABLE %s OWNER TO %s', v_pq, v_own));
    END IF;
    -- sequences and identity
    FOR d IN SELECT a.attname, a.attidentity, s.oid AS seq,
                    (SELECT sa.attidentity FROM pg_attribute sa WHERE sa.attrelid = v_s
                     AND sa.attname = a.attname AND NOT sa.attisdropped) AS s_ident
             FROM pg_attribute a
             LEFT JOIN pg_depend dp ON dp.refclassid = 'pg_class'::regclass AND dp.refobjid = v_p
                  AND dp.refobjsubid = a.attnum AND dp.classid = 'pg_class'::regclass AND dp.deptype IN ('a', 'i')
             LEFT JOIN pg_class s ON s.oid = dp.objid AND s.relkind = 'S'
             WHERE a.attrelid = v_p AND a.attnum > 0 AND NOT a.attisdropped AND s.oid IS NOT NULL LOOP
        IF d.attidentity <> '' AND p_revert AND coalesce(d.s_ident, '') = '' THEN
            NULL;   -- the new schema's own identity: the legacy column stays as it was
        ELSIF d.attidentity <> '' THEN
            IF coalesce(d.s_ident, '') = '' THEN
                INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql) VALUES
                    (p_table_id, 110, 'identity', format('%s.%I', v_pq, d.attname),
                     format('ALTER TABLE %s ALTER COLUMN %I ADD GENERATED %s AS IDENTITY',
                            v_pq, d.attname, CASE d.attidentity WHEN 'a' THEN 'ALWAYS' ELSE 'BY DEFAULT' END));
            END IF;
            -- above the old identity's last value and every key of the new table
            INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql, setval_col, setval_from) VALUES
                (p_table_id, 111, 'identity', format('%s.%I', v_pq, d.attname), NULL, d.attname, d.seq);
        ELSE
            INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql) VALUES
                (p_table_id, 110, 'sequence', d.seq::regclass::text,
                 format('ALTER SEQUENCE %s OWNED BY %s.%I', d.seq::regclass, v_pq, d.attname));
            INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql, setval_col, setval_from) VALUES
                (p_table_id, 111, 'sequence', d.seq::regclass::text, NULL, d.attname, d.seq);
        END IF;
    END LOOP;
    -- views that read the primary: re-created from their definition (it
    -- names the primary, which is now the new table), options kept
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT DISTINCT ON (c.oid) p_table_id, 120, 'view', c.oid::regclass::text,
           format('CREATE OR REPLACE VIEW %s%s AS %s', c.oid::regclass,
                  CASE WHEN c.reloptions IS NULL THEN ''
                       ELSE format(' WITH (%s)', array_to_string(c.reloptions, ', ')) END,
                  rtrim(pg_get_viewdef(c.oid, false), '; ' || chr(10)))
    FROM pg_depend dp JOIN pg_rewrite r ON r.oid = dp.objid JOIN pg_class c ON c.oid = r.ev_class
    WHERE dp.classid = 'pg_rewrite'::regclass AND dp.refclassid = 'pg_class'::regclass AND dp.refobjid = v_p
      AND c.relkind = 'v' AND c.oid <> ALL (v_rel) AND c.oid <> v_p;
    -- grants: exactly the primary's (the shadow's own are revoked first)
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT p_table_id, 130, 'grants', v_pq,
           format('REVOKE ALL ON %s FROM %s', v_pq,
                  CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(a.grantee::regrole::text) END)
    FROM (SELECT DISTINCT (aclexplode(relacl)).grantee FROM pg_class WHERE oid = v_s) a
    WHERE a.grantee <> (SELECT relowner FROM pg_class WHERE oid = v_s);
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT p_table_id, 131, 'grants', v_pq,
           format('GRANT %s ON %s TO %s%s', a.privilege_type, v_pq,
                  CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(a.grantee::regrole::text) END,
                  CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
    FROM (SELECT (aclexplode(relacl)).* FROM pg_class WHERE oid = v_p) a
    WHERE a.grantee <> v_own;
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT p_table_id, 132, 'grants', format('%s.%I', v_pq, pa.attname),
           format('GRANT %s (%I) ON %s TO %s%s', a.privilege_type, pa.attname, v_pq,
                  CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(a.grantee::regrole::text) END,
                  CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
    FROM pg_attribute pa, LATERAL aclexplode(pa.attacl) a
    WHERE pa.attrelid = v_p AND pa.attacl IS NOT NULL AND NOT pa.attisdropped AND a.grantee <> v_own
      AND EXISTS (SELECT 1 FROM pg_attribute sa WHERE sa.attrelid = v_s AND sa.attname = pa.attname AND NOT sa.attisdropped);
    -- row level security and policies
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT p_table_id, 150, 'row level security', v_pq,
           format('ALTER TABLE %s %s ROW LEVEL SECURITY', v_pq, x.w)
    FROM pg_class c, LATERAL (VALUES (CASE WHEN c.relrowsecurity THEN 'ENABLE' ELSE 'DISABLE' END),
                                     (CASE WHEN c.relforcerowsecurity THEN 'FORCE' ELSE 'NO FORCE' END)) x(w)
    WHERE c.oid = v_p;
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT p_table_id, 151, 'policy', y.polname,
           format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s', y.polname, v_pq,
                  CASE WHEN y.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                  CASE y.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                  (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(r::regrole::text) END, ', ')
                   FROM unnest(y.polroles) r),
                  coalesce(' USING (' || pg_get_expr(y.polqual, y.polrelid) || ')', ''),
                  coalesce(' WITH CHECK (' || pg_get_expr(y.polwithcheck, y.polrelid) || ')', ''))
    FROM pg_policy y
    WHERE y.polrelid = v_p AND NOT EXISTS (SELECT 1 FROM pg_policy x WHERE x.polrelid = v_s AND x.polname = y.polname);
    -- the user's triggers (their definition names the primary), enabled as
    -- they were
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT p_table_id, 160, 'trigger', g.tgname, pg_get_triggerdef(g.oid, false)
    FROM pg_trigger g
    WHERE g.tgrelid = v_p AND NOT g.tgisinternal AND g.tgname !~ '^pgshadow_'
      AND NOT EXISTS (SELECT 1 FROM pg_trigger x WHERE x.tgrelid = v_s AND x.tgname = g.tgname);
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT p_table_id, 161, 'trigger', g.tgname,
           format('ALTER TABLE %s %s TRIGGER %I', v_pq,
                  CASE g.tgenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA' ELSE 'ENABLE ALWAYS' END,
                  g.tgname)
    FROM pg_trigger g
    WHERE g.tgrelid = v_p AND NOT g.tgisinternal AND g.tgname !~ '^pgshadow_' AND g.tgenabled <> 'O'
      AND NOT EXISTS (SELECT 1 FROM pg_trigger x WHERE x.tgrelid = v_s AND x.tgname = g.tgname);
    -- comments: the table's is the primary's, also when that is none (the
    -- shadow's own says 'pgshadow shadow of ...', which is not the new
    -- table's: %L of NULL is NULL, and COMMENT ... IS NULL removes it)
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT p_table_id, 170, 'comment', v_pq, format('COMMENT ON TABLE %s IS %L', v_pq, obj_description(v_p, 'pg_class'))
    WHERE obj_description(v_p, 'pg_class') IS NOT NULL OR obj_description(v_s, 'pg_class') IS NOT NULL;
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT p_table_id, 171, 'comment', format('%s.%I', v_pq, pa.attname),
           format('COMMENT ON COLUMN %s.%I IS %L', v_pq, pa.attname, col_description(v_p, pa.attnum))
    FROM pg_attribute pa
    WHERE pa.attrelid = v_p AND pa.attnum > 0 AND NOT pa.attisdropped AND col_description(v_p, pa.attnum) IS NOT NULL
      AND EXISTS (SELECT 1 FROM pg_attribute sa WHERE sa.attrelid = v_s AND sa.attname = pa.attname AND NOT sa.attisdropped);
    -- publications: the new table joins, the legacy one leaves
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT p_table_id, 180 + x.n, 'publication', pb.pubname,
           format('ALTER PUBLICATION %I %s TABLE %s', pb.pubname, x.w, x.rel)
    FROM pg_publication_rel pr JOIN pg_publication pb ON pb.oid = pr.prpubid,
         LATERAL (VALUES (0, 'ADD', v_pq), (1, 'DROP', v_lq)) x(n, w, rel)
    WHERE pr.prrelid = v_p;
    IF p_revert THEN
        RETURN;
    END IF;
    -- the compatibility view, as the shadow was: same owner, same grants
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql) VALUES
        (p_table_id, 190, 'compatibility view', format('%I.%I', t.schema_name, t.shadow_name),
         format('CREATE VIEW %I.%I AS SELECT * FROM %s', t.schema_name, t.shadow_name, v_pq)),
        (p_table_id, 191, 'compatibility view', format('%I.%I', t.schema_name, t.shadow_name),
         format('ALTER VIEW %I.%I OWNER TO %s', t.schema_name, t.shadow_name, (SELECT relowner FROM pg_class WHERE oid = v_s)::regrole));
    INSERT INTO pg_temp.promote_todo (table_id, ord, kind, object, sql)
    SELECT p_table_id, 192, 'compatibility view', format('%I.%I', t.schema_name, t.shadow_name),
           format('GRANT %s ON %I.%I TO %s', a.privilege_type, t.schema_name, t.shadow_name,
                  CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(a.grantee::regrole::text) END)
    FROM (SELECT (aclexplode(relacl)).* FROM pg_class WHERE oid = v_s) a
    WHERE a.grantee <> (SELECT relowner FROM pg_class WHERE oid = v_s);
END
$fn$;

-- The sessions (pids) holding a lock on relation p_rel now, this one
-- aside: taken right before promote waits for it, so that a timeout names
-- those that held it all along, not those that queued behind promote.
--
-- It first drops this transaction's snapshot of pg_stat_activity, which
-- PostgreSQL takes at the first read in a transaction and keeps to its
-- end (a failed attempt's subtransaction, rolled back, does not refresh
-- it): the caller's next read of that view, after the wait, describes the
-- holders as they are then. Without it, a failed attempt named sessions
-- from a snapshot an earlier read had taken (their state, query and "in
-- transaction N s" from seconds before, the set filtered by a stale
-- xact_start). pg_locks itself is read live.
-- VOLATILE: dropping the snapshot is a side effect.
CREATE OR REPLACE FUNCTION pgshadow._promote_holders(p_rel regclass)
RETURNS integer[]
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pg_stat_clear_snapshot();
    SELECT coalesce(array_agg(DISTINCT l.pid), '{}')
    FROM pg_locks l
    WHERE l.granted AND l.locktype = 'relation' AND l.relation = p_rel
      AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
      AND l.pid <> pg_backend_pid()
$fn$;

-- What the swap's plan (_promote_collect) read of the catalog, as one
-- digest: every catalog row of the relations p_rels and of what depends on
-- them that the plan reads (the relation, its columns and their grants,
-- its dependants in pg_depend: views, foreign keys, triggers, policies,
-- sequences, publications; its triggers, policies, constraints, comments,
-- publication rows), by identity and xmin. A DDL statement that commits in
-- between changes one of those rows (a new version has a new xmin; a new
-- or dropped dependant adds or removes a row). The swap plans before it
-- takes its locks, and plans again under them only when the digest
-- differs: planning under the locks took 34 ms of a 96 ms hold for two
-- tables (test-promote).
CREATE OR REPLACE FUNCTION pgshadow._swap_fingerprint(p_rels oid[])
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT md5(concat_ws('|',
        (SELECT string_agg(c.oid || ':' || c.xmin, ',' ORDER BY c.oid) FROM pg_class c WHERE c.oid = ANY (p_rels)),
        (SELECT string_agg(a.attrelid || '.' || a.attnum || ':' || a.xmin, ',' ORDER BY a.attrelid, a.attnum)
         FROM pg_attribute a WHERE a.attrelid = ANY (p_rels)),
        (SELECT string_agg(concat_ws('.', d.classid, d.objid, d.objsubid, d.refobjid, d.refobjsubid, d.deptype, d.xmin),
                           ',' ORDER BY d.classid, d.objid, d.objsubid, d.refobjid, d.refobjsubid)
         FROM pg_depend d WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY (p_rels)),
        (SELECT string_agg(g.oid || ':' || g.xmin, ',' ORDER BY g.oid) FROM pg_trigger g WHERE g.tgrelid = ANY (p_rels)),
        (SELECT string_agg(y.oid || ':' || y.xmin, ',' ORDER BY y.oid) FROM pg_policy y WHERE y.polrelid = ANY (p_rels)),
        (SELECT string_agg(k.oid || ':' || k.xmin, ',' ORDER BY k.oid) FROM pg_constraint k
         WHERE k.conrelid = ANY (p_rels) OR k.confrelid = ANY (p_rels)),
        (SELECT string_agg(x.objoid || '.' || x.objsubid || ':' || x.xmin, ',' ORDER BY x.objoid, x.objsubid)
         FROM pg_description x WHERE x.classoid = 'pg_class'::regclass AND x.objoid = ANY (p_rels)),
        (SELECT string_agg(r.oid || ':' || r.xmin, ',' ORDER BY r.oid) FROM pg_publication_rel r
         WHERE r.prrelid = ANY (p_rels)),
        (SELECT string_agg(w.oid || ':' || w.xmin, ',' ORDER BY w.oid) FROM pg_rewrite w
         JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid
         WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY (p_rels))))
$fn$;

-- Every relation of p_rels in ACCESS EXCLUSIVE mode, and then the row
-- locks of p_rows_sql (a SELECT ... FOR UPDATE, or NULL), all or none,
-- before p_deadline: each is taken NOWAIT, relations in oid order; when one
-- is busy, every lock taken is released (the block's subtransaction) and
-- that one alone is waited for, within what is left, then the others are
-- tried again. So the caller never waits while it holds one of them: no
-- fixed order is safe (a view's reader locks the view, then its tables in
-- the view's order; a transaction writes its tables in its own order), and
-- waiting while holding made a deadlock with nearly every reader of a view
-- under load. All held: busy NULL, busy_rows false (the locks stay with the
-- caller's transaction). Not: none held, and busy (or busy_rows) says what
-- did not come, holders who held it when the wait began (wait_at),
-- deadlock whether the wait ended in one. Used by the swap (promote,
-- revert) and by finalize (89-finalize.sql).
CREATE OR REPLACE FUNCTION pgshadow._lock_all(p_rels regclass[], p_rows_sql text, p_deadline timestamptz,
                                              OUT busy regclass, OUT busy_rows boolean, OUT holders integer[],
                                              OUT wait_at timestamptz, OUT deadlock boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_next  regclass;             -- the busy relation, waited for alone
    v_rows  boolean := false;     -- the rows are the busy ones
    v_cur   regclass;             -- what is being taken (NULL: the rows)
    v_timed boolean;
    r       regclass;
BEGIN
    busy_rows := false;
    deadlock := false;
    wait_at := clock_timestamp();
    LOOP
        IF clock_timestamp() >= p_deadline THEN
            busy := v_next;
            busy_rows := v_rows;
            RETURN;
        END IF;
        v_timed := false;
        BEGIN
            PERFORM set_config('lock_timeout',
                               greatest((extract(epoch FROM p_deadline - clock_timestamp()) * 1000)::bigint, 1) || 'ms',
                               true);
            wait_at := clock_timestamp();
            v_timed := true;
            IF v_rows THEN
                v_cur := NULL;
                EXECUTE p_rows_sql;
            ELSIF v_next IS NOT NULL THEN
                v_cur := v_next;
                holders := pgshadow._promote_holders(v_next);
                EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_next);
            END IF;
            v_timed := false;
            FOR r IN SELECT u FROM unnest(p_rels) u WHERE u IS NOT NULL ORDER BY u::oid LOOP
                CONTINUE WHEN r = v_next;
                v_cur := r;
                EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE NOWAIT', r);
            END LOOP;
            v_cur := NULL;
            IF p_rows_sql IS NOT NULL AND NOT v_rows THEN
                EXECUTE p_rows_sql || ' NOWAIT';
            END IF;
            busy := NULL;
            busy_rows := false;
            holders := NULL;
            RETURN;   -- all held: the block's subtransaction commits into the caller's
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            IF v_timed OR SQLSTATE = '40P01' THEN
                -- the one waited for did not come in time (or a deadlock)
                busy := v_cur;
                busy_rows := v_cur IS NULL;
                deadlock := SQLSTATE = '40P01';
                RETURN;
            END IF;
            v_next := v_cur;
            v_rows := v_cur IS NULL;
            holders := CASE WHEN v_cur IS NOT NULL THEN pgshadow._promote_holders(v_cur) END;
        END;
    END LOOP;
END
$fn$;

-- Promote every table of the migration, at once (docs/promote.md). Called
-- by the leading daemon for `pgshadowctl promote` (or finally: promote) in
-- the command's transaction, with the cutover's rev it decided on.
--
--  1. promote_plan: any blocker refuses, before any lock.
--  2. Drain the change log outside any lock until at most p_drain_rows
--     entries are left (or 30 s have gone), so the drain under the locks
--     is short.
--  3. Up to p_attempts attempts, each a subtransaction: take the sync lock
--     and every lock the swap needs, all or none (NOWAIT; a busy one is
--     waited for alone, holding none of the others), within a budget (the
--     attempt's lock_timeout, ramped up from a quarter of
--     p_lock_timeout_ms to all of it, as pg_repack ramps): each wait lasts
--     only what is left of the budget, so one attempt stalls other
--     sessions by at most the budget, however many tables it locks. A
--     lock not granted rolls the attempt back (its locks released), the
--     holders are named, and the next attempt comes after a backoff.
--     Never does promote cancel or kill another session, and a deadlock
--     with one ends the attempt, not the other session's transaction: the
--     budget is at most 80% of deadlock_timeout (a session that waits for
--     a lock the attempt holds began waiting after the attempt began, so
--     its deadlock check comes after the attempt gave up), and promote's
--     own deadlock_timeout is 20ms when its owner may set it (a cycle
--     promote closes is found by promote first); a deadlock is a failed
--     attempt like a lock timeout.
--  4. Under the locks: drain the rest, check nothing is pending, run the
--     moves (_promote_collect), set every read_from_shadow_<t> flag to 0,
--     mark the tables promoted, write the cutover row (promoted) and one
--     event with the lock wait and the hold measured up to here.
-- Nothing changes unless it all commits; a failure raises with the reason
-- (for a lock: who held it, doing what, for how long).
--
-- p_reverse: reverse sync from the commit on (90-revert.sql): pgshadow's
-- capture on the new tables, the legacy tables' own triggers disabled; every
-- table must be revertable (promote_plan). False (promote --without-revert,
-- or keep_legacy: false): the legacy tables are kept as of the promote.
CREATE OR REPLACE FUNCTION pgshadow.promote(p_migration_id text, p_rev bigint, p_lock_timeout_ms integer,
                                            p_attempts integer, p_command_id bigint DEFAULT NULL,
                                            p_drain_rows integer DEFAULT 100, p_reverse boolean DEFAULT true)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN pgshadow._swap(p_migration_id, p_rev, p_lock_timeout_ms, p_attempts, p_command_id, p_drain_rows,
                          false, p_reverse);
END
$fn$;

-- The swap of promote, and of revert (p_revert: 90-revert.sql), as above.
-- Revert's differences: its plan (_swap_plan), its drain is reverse sync
-- (apply_batch of a promoted migration), the legacy tables are locked and
-- take the names back (_promote_collect), and at the end forward capture is
-- on the tables again, promote's record is deleted, the cutover row is
-- rolled_back at 0% with one event 'cutover reverted'.
CREATE OR REPLACE FUNCTION pgshadow._swap(p_migration_id text, p_rev bigint, p_lock_timeout_ms integer,
                                          p_attempts integer, p_command_id bigint, p_drain_rows integer,
                                          p_revert boolean, p_reverse boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD'
AS $fn$
DECLARE
    v_verb     text := CASE WHEN p_revert THEN 'revert' ELSE 'promote' END;
    v_first    bigint;       -- the last move of the promote a revert undoes
    v_start    timestamptz := clock_timestamp();
    v_budget   interval;     -- for the whole call: below the caller's statement_timeout
    v_blockers text := '';
    v_refused  text;
    v_rels     regclass[];
    v_tables   integer[];
    v_names    text;
    v_pending  bigint;
    v_prev_pending bigint;   -- the log's length before the last drain round (NULL: none yet)
    v_budget_ms double precision;
    v_t0       timestamptz;
    v_locked   timestamptz;
    v_drained  timestamptz;  -- under the locks: the drain done
    v_fp       text;         -- the catalog as the plan read it (_swap_fingerprint)
    v_fp_rels  oid[];
    v_replanned integer := 0;
    v_planned  timestamptz;  -- and the plan made
    v_wait_ms  double precision;
    v_hold_ms  double precision;
    v_attempt  integer := 0;
    v_done     boolean := false;
    v_why      jsonb;
    v_rev      bigint;
    v_state    jsonb;
    r          record;
    v_max      text;
    v_last     text;
    v_owner    oid;
    v_waiting  regclass;     -- the relation the attempt is waiting for (NULL: none)
    v_wait_at  timestamptz;
    v_pids     text;
    v_held     jsonb := '{}';  -- pid -> what it was doing, for the final error
    v_dl_ms    double precision;
    v_lk       record;       -- _lock_all's answer
    v_next_rows boolean := false;  -- the registry rows were the busy ones
    v_holders  integer[];    -- who held v_waiting when the wait began
BEGIN
    PERFORM pgshadow._sync_read_committed();
    IF p_attempts < 1 OR p_lock_timeout_ms < 1 THEN
        RAISE EXCEPTION 'pgshadow: % needs attempts >= 1 and lock_timeout > 0', v_verb USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_revert THEN
        IF NOT EXISTS (SELECT 1 FROM pgshadow.cutover c WHERE c.migration_id = p_migration_id AND c.status = 'promoted') THEN
            RAISE EXCEPTION 'pgshadow: revert refused: the cutover of % is not promoted', p_migration_id
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        SELECT c.rev, jsonb_build_object('status', 'rolled_back', 'stage', 0, 'percent', 0, 'hold_earned_ms', 0,
                                         'hold_extra_ms', 0, 'failures', 0, 'last_good', 0)
        INTO v_rev, v_state FROM pgshadow.cutover c WHERE c.migration_id = p_migration_id;
    ELSE
        SELECT c.rev, jsonb_build_object('status', 'promoted', 'stage', c.stage, 'percent', c.percent,
                                         'hold_earned_ms', (extract(epoch FROM c.hold_earned) * 1000)::bigint,
                                         'hold_extra_ms', (extract(epoch FROM c.hold_extra) * 1000)::bigint,
                                         'failures', 0, 'last_good', coalesce(c.last_good_stage, 0))
        INTO v_rev, v_state FROM pgshadow.cutover c WHERE c.migration_id = p_migration_id;
    END IF;
    IF v_rev IS DISTINCT FROM p_rev THEN
        RAISE EXCEPTION 'pgshadow: the cutover state of % changed while this was decided (rev % is now %)',
                        p_migration_id, p_rev, v_rev USING ERRCODE = 'serialization_failure';
    END IF;
    SELECT string_agg(format('%s: %s %s: %s', p.table_name, p.kind, p.object, p.action), '; ')
    INTO v_refused FROM pgshadow._swap_plan(p_migration_id, p_revert, p_reverse) p WHERE NOT p.ok;
    IF v_refused IS NOT NULL THEN
        RAISE EXCEPTION 'pgshadow: % refused: %', v_verb, v_refused USING ERRCODE = 'object_not_in_prerequisite_state',
              HINT = format('pgshadowctl %s --dry-run lists what %s does with every dependant.', v_verb, v_verb);
    END IF;
    -- the caller's statement_timeout bounds the whole call; attempts that
    -- cannot finish inside it are not started
    v_budget := CASE WHEN current_setting('statement_timeout') IN ('0', '0ms') THEN interval '1 hour'
                     ELSE current_setting('statement_timeout')::interval - interval '5 seconds' END;

    SELECT array_agg(x.table_id ORDER BY x.table_id),
           string_agg(x.table_name, ', ' ORDER BY x.table_id)
    INTO v_tables, v_names FROM pgshadow.tables x WHERE x.migration_id = p_migration_id;

    -- 2. drain outside the locks, until at most p_drain_rows are left, or
    -- until a round no longer shrinks the log by a tenth: under a steady
    -- write load the log does not fall below what is written during one
    -- round, and draining on would only delay the swap
    LOOP
        SELECT count(*) INTO v_pending FROM (SELECT 1 FROM pgshadow.change_log l WHERE l.table_id = ANY (v_tables)
                                             LIMIT 100001) x;
        EXIT WHEN v_pending <= p_drain_rows OR v_pending > v_prev_pending * 0.9
                  OR clock_timestamp() - v_start > least(interval '30 seconds', v_budget / 4);
        v_prev_pending := v_pending;
        PERFORM * FROM pgshadow.apply_batch(p_migration_id, 5000);
    END LOOP;

    -- what the swap locks: the tables, their shadows (revert: the
    -- compatibility views) and legacy tables, the views it re-creates and
    -- the tables whose foreign keys it re-points
    SELECT array_agg(DISTINCT r2.rel) INTO v_rels FROM (
        SELECT format('%I.%I', x.schema_name, x.table_name)::regclass AS rel, x.table_id AS ord
        FROM pgshadow.tables x WHERE x.table_id = ANY (v_tables)
        UNION ALL
        SELECT to_regclass(format('%I.%I', x.schema_name, x.legacy_name)), x.table_id
        FROM pgshadow.tables x WHERE x.table_id = ANY (v_tables) AND p_revert AND x.legacy_name IS NOT NULL
        UNION ALL
        SELECT format('%I.%I', x.schema_name, x.shadow_name)::regclass, x.table_id
        FROM pgshadow.tables x WHERE x.table_id = ANY (v_tables)
        UNION ALL
        SELECT c.oid::regclass, 1000000
        FROM pgshadow.tables x
        JOIN pg_depend dp ON dp.refclassid = 'pg_class'::regclass
                         AND dp.refobjid = format('%I.%I', x.schema_name, x.table_name)::regclass
        JOIN pg_rewrite rw ON dp.classid = 'pg_rewrite'::regclass AND rw.oid = dp.objid
        JOIN pg_class c ON c.oid = rw.ev_class AND c.relkind = 'v'
        WHERE x.table_id = ANY (v_tables)
        UNION ALL
        SELECT k.conrelid::regclass, 1000001
        FROM pgshadow.tables x JOIN pg_constraint k
             ON k.contype = 'f' AND k.confrelid = format('%I.%I', x.schema_name, x.table_name)::regclass
        WHERE x.table_id = ANY (v_tables)) r2;

    v_fp_rels := pgshadow._swap_rels(p_migration_id);

    -- 3. the attempts. A deadlock must end the attempt, never the other
    -- session (see above): promote's own checks come after 20ms of waiting
    -- (only a superuser, or a role granted SET on it, may lower it), and a
    -- budget never reaches the deadlock_timeout of the others (the server's,
    -- as this session read it before lowering its own).
    v_dl_ms := extract(epoch FROM current_setting('deadlock_timeout')::interval) * 1000;
    BEGIN
        PERFORM set_config('deadlock_timeout', '20ms', true);
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;   -- the budget cap alone
    END;
    -- the plan, before any lock (made again under the locks only if the
    -- catalog changed meanwhile: _swap_fingerprint)
    CREATE TEMP TABLE IF NOT EXISTS promote_todo (
        table_id integer, ord integer, kind text, object text, sql text, detail text,
        setval_col name, setval_from oid, validate boolean NOT NULL DEFAULT false) ON COMMIT DROP;
    TRUNCATE pg_temp.promote_todo;
    PERFORM pgshadow._promote_collect(x, p_revert, p_reverse) FROM unnest(v_tables) x;
    v_fp := pgshadow._swap_fingerprint(v_fp_rels);
    WHILE NOT v_done AND v_attempt < p_attempts LOOP
        v_attempt := v_attempt + 1;
        v_budget_ms := greatest(least(p_lock_timeout_ms::double precision,
                                      p_lock_timeout_ms * power(2, v_attempt - 1) / 4,
                                      v_dl_ms * 0.8), 10);
        IF clock_timestamp() - v_start + make_interval(secs => v_budget_ms * 2 / 1000) > v_budget THEN
            v_blockers := v_blockers || format('; attempt %s not started: the call''s time is up', v_attempt);
            EXIT;
        END IF;
        BEGIN
            v_t0 := clock_timestamp();
            v_locked := NULL;
            v_waiting := NULL;
            v_holders := NULL;
            v_wait_at := v_t0;
            v_next_rows := false;
            PERFORM set_config('lock_timeout', greatest(v_budget_ms::bigint, 1) || 'ms', true);
            PERFORM pgshadow._sync_lock(p_migration_id);
            -- Every lock of the swap, or none (_lock_all): the attempt never
            -- waits while it holds one. The registry rows come last (verify
            -- workers lock them while they hold the tables), also NOWAIT.
            SELECT * INTO v_lk FROM pgshadow._lock_all(
                v_rels, format('SELECT 1 FROM pgshadow.tables x WHERE x.table_id = ANY (%L::integer[]) FOR UPDATE',
                               v_tables),
                v_t0 + make_interval(secs => v_budget_ms / 1000));
            IF v_lk.busy IS NOT NULL OR v_lk.busy_rows THEN
                v_waiting := v_lk.busy;
                v_next_rows := v_lk.busy_rows;
                v_holders := v_lk.holders;
                v_wait_at := v_lk.wait_at;
                RAISE EXCEPTION 'pgshadow: %: a lock was not granted within the attempt''s budget', v_verb
                    USING ERRCODE = CASE WHEN v_lk.deadlock THEN '40P01' ELSE '55P03' END;
            END IF;
            v_waiting := NULL;
            v_locked := clock_timestamp();
            -- Under the locks every other session that needs these tables
            -- waits: what the attempt still waits for here (a sequence whose
            -- owner it changes, while an idle transaction holds a value of
            -- it; the cutover row) is bounded by what is left of the budget,
            -- not apply's 5 s (apply_batch keeps its own), which stalled
            -- every writer 5 s per attempt
            PERFORM set_config('lock_timeout',
                               greatest((v_budget_ms - extract(epoch FROM clock_timestamp() - v_t0) * 1000)::bigint, 10)
                               || 'ms', true);
            -- 4. under the locks: nothing writes these tables now
            LOOP
                SELECT count(*) INTO v_pending FROM pgshadow.change_log l WHERE l.table_id = ANY (v_tables);
                EXIT WHEN v_pending = 0;
                PERFORM * FROM pgshadow.apply_batch(p_migration_id, 50000);
                IF clock_timestamp() - v_locked > interval '60 seconds' THEN
                    RAISE EXCEPTION 'pgshadow: %: the change log did not drain under the locks (% left)', v_verb, v_pending;
                END IF;
            END LOOP;
            v_drained := clock_timestamp();
            IF EXISTS (SELECT 1 FROM pgshadow.quarantine q WHERE q.table_id = ANY (v_tables)) THEN
                RAISE EXCEPTION 'pgshadow: % refused: quarantined keys would be lost (pgshadowctl quarantine)', v_verb
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            IF pgshadow._swap_fingerprint(v_fp_rels) IS DISTINCT FROM v_fp THEN
                -- a DDL statement committed since the plan was made: again,
                -- under the locks now (this attempt's; a failed attempt
                -- rolls it back, and the next one compares again)
                TRUNCATE pg_temp.promote_todo;
                PERFORM pgshadow._promote_collect(x, p_revert, p_reverse) FROM unnest(v_tables) x;
                v_replanned := v_replanned + 1;
            END IF;
            v_planned := clock_timestamp();
            SELECT max(m.move_id) INTO v_first FROM pgshadow.promote_moves m WHERE m.migration_id = p_migration_id;
            FOR r IN SELECT * FROM pg_temp.promote_todo ORDER BY ord, table_id LOOP
                -- a sequence is the one thing here another session may hold
                -- (nextval in an open transaction): named if it times out
                v_waiting := CASE WHEN r.kind = 'sequence' AND r.setval_col IS NULL THEN to_regclass(r.object) END;
                v_wait_at := clock_timestamp();
                IF v_waiting IS NOT NULL THEN
                    v_holders := pgshadow._promote_holders(v_waiting);
                END IF;
                IF r.validate THEN
                    INSERT INTO pgshadow.promote_moves (migration_id, table_id, kind, object, statement, state)
                    VALUES (p_migration_id, r.table_id, r.kind, r.object, r.sql, 'to_validate');
                    CONTINUE;
                END IF;
                IF r.setval_col IS NOT NULL THEN
                    -- the highest key, read as the table's owner (its type's
                    -- operators are the owner's code), and the old sequence's
                    SELECT relowner INTO v_owner FROM pg_class
                    WHERE oid = (SELECT format('%I.%I', x.schema_name, x.table_name)::regclass
                                 FROM pgshadow.tables x WHERE x.table_id = r.table_id);
                    PERFORM pgshadow._owner_fn(v_owner);
                    SELECT x[1] INTO v_max FROM pgshadow._sync_run(v_owner,
                        format('SELECT ARRAY[max(%I)::text] FROM %s', r.setval_col,
                               (SELECT format('%I.%I', x.schema_name, x.table_name) FROM pgshadow.tables x
                                WHERE x.table_id = r.table_id))) x;
                    EXECUTE format('SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END::text FROM %s',
                                   r.setval_from::regclass) INTO v_last;
                    IF r.kind = 'identity' THEN
                        r.sql := format('ALTER TABLE %s ALTER COLUMN %I RESTART WITH %s',
                                        (SELECT format('%I.%I', x.schema_name, x.table_name) FROM pgshadow.tables x
                                         WHERE x.table_id = r.table_id), r.setval_col,
                                        greatest(coalesce(v_max::numeric + 1, 1), v_last::numeric));
                    ELSE
                        r.sql := format('SELECT setval(%L, %s, false)', r.setval_from::regclass::text,
                                        greatest(coalesce(v_max::numeric + 1, 1), v_last::numeric));
                    END IF;
                END IF;
                EXECUTE r.sql;
                INSERT INTO pgshadow.promote_moves (migration_id, table_id, kind, object, statement, detail)
                VALUES (p_migration_id, r.table_id, r.kind, r.object, r.sql, r.detail);
            END LOOP;
            -- still in the attempt: a lock waited for here (a row of
            -- cutover or flags) that ends in a deadlock ends the attempt,
            -- and the next one tries again. The verify queue is emptied by
            -- promote_validate, after the commit: verify workers hold its
            -- rows while they read the tables.
            v_waiting := NULL;
            IF p_revert THEN
                -- the names mean the tables of the old schema again, and
                -- their shadows; promote's record is history (the event of
                -- the promote keeps its summary); forward capture resumes
                UPDATE pgshadow.tables x SET promoted_at = NULL, legacy_name = NULL, legacy_oid = NULL,
                                             reverse_sync = false
                WHERE x.table_id = ANY (v_tables);
                DELETE FROM pgshadow.promote_moves m WHERE m.migration_id = p_migration_id AND m.move_id <= v_first;
                PERFORM pgshadow._install_capture(x) FROM unnest(v_tables) x;
            ELSE
                UPDATE pgshadow.tables x SET promoted_at = now(), legacy_name = pgshadow._legacy_name(x.table_name),
                                             legacy_oid = to_regclass(format('%I.%I', x.schema_name,
                                                                             pgshadow._legacy_name(x.table_name))),
                                             reverse_sync = p_reverse
                WHERE x.table_id = ANY (v_tables);
                IF p_reverse THEN
                    -- reverse sync: pgshadow's capture on the new tables
                    -- (the registry's names mean them now), under the same
                    -- table ids (90-revert.sql)
                    PERFORM pgshadow._install_capture(x) FROM unnest(v_tables) x;
                END IF;
            END IF;
            v_wait_ms := extract(epoch FROM v_locked - v_t0) * 1000;
            v_hold_ms := extract(epoch FROM clock_timestamp() - v_locked) * 1000;
            PERFORM pgshadow.cutover_write(p_migration_id, p_rev, v_state, NULL,
                CASE WHEN p_revert THEN 'reverted' ELSE 'promoted' END,
                format('%s %s (attempt %s of %s): lock wait %s ms, locks held %s ms up to the commit (of which the '
                       'drain %s ms, the plan %s ms, the moves %s ms)%s%s%s',
                       CASE WHEN p_revert THEN 'reverted' ELSE 'promoted' END,
                       v_names, v_attempt, p_attempts, round(v_wait_ms::numeric, 1), round(v_hold_ms::numeric, 1),
                       round((extract(epoch FROM v_drained - v_locked) * 1000)::numeric, 1),
                       round((extract(epoch FROM v_planned - v_drained) * 1000)::numeric, 1),
                       round((extract(epoch FROM clock_timestamp() - v_planned) * 1000)::numeric, 1),
                       CASE WHEN v_replanned > 0 THEN '; planned again under the locks: the catalog changed meanwhile'
                            ELSE '' END,
                       CASE WHEN p_revert THEN '; reads on the old tables, forward sync resumes'
                            WHEN p_reverse THEN '; the legacy tables are reverse-synced (revert loses nothing)'
                            ELSE '; the legacy tables are kept as of now, not reverse-synced' END,
                       CASE WHEN v_blockers <> '' THEN '; earlier attempts' || v_blockers ELSE '' END),
                p_command_id);
            -- routing answers 'primary' (the new table) from this commit on
            PERFORM pgshadow._set_flag('read_from_shadow_' || x.table_name, '0', 'promote')
            FROM pgshadow.tables x WHERE x.table_id = ANY (v_tables);
            v_done := true;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            -- who held the relation this attempt waited for (the attempt's
            -- own locks are gone with its subtransaction): the sessions
            -- holding it now that held it when the wait began, not the ones
            -- that queued behind the attempt and got it just now
            PERFORM pg_stat_clear_snapshot();   -- pg_stat_activity as it is now, not as first read
            SELECT string_agg(a.pid::text, ', ' ORDER BY a.pid),
                   coalesce(jsonb_object_agg(a.pid::text, format('pid %s (%s, %s, in transaction %s s): %s', a.pid,
                                             a.usename, a.state,
                                             round(extract(epoch FROM clock_timestamp() - a.xact_start)::numeric, 1),
                                             left(a.query, 100))), '{}')
            INTO v_pids, v_why
            FROM (SELECT DISTINCT l.pid FROM pg_locks l
                  WHERE l.granted AND l.locktype = 'relation' AND l.relation = v_waiting
                    AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
                    AND l.pid <> pg_backend_pid()) l
            JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE a.xact_start <= v_wait_at AND l.pid = ANY (coalesce(v_holders, '{}'));
            v_held := v_held || v_why;
            v_blockers := v_blockers || format('; attempt %s (%s ms): %s %s', v_attempt, round(v_budget_ms),
                CASE WHEN SQLSTATE = '40P01' THEN 'a deadlock, waiting for' ELSE 'timed out waiting for' END,
                CASE WHEN v_waiting IS NOT NULL
                     THEN v_waiting::text || ' (held by ' || coalesce('pid ' || v_pids, 'no one now') || ')'
                     WHEN v_next_rows AND v_locked IS NULL THEN 'the migration''s rows of pgshadow.tables'
                     ELSE 'a lock under the swap''s locks (' || SQLERRM || ')' END);
            PERFORM pg_sleep(least(0.05 * power(2, v_attempt - 1), 2) * (0.5 + random()));
            -- what was written during the failed attempt and the backoff,
            -- applied now, outside the locks (the attempt's are gone with
            -- its subtransaction): the next attempt drains less under them
            BEGIN
                PERFORM * FROM pgshadow.apply_batch(p_migration_id, 5000);
            EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
                NULL;   -- the next attempt drains under its locks instead
            END;
        END;
    END LOOP;
    IF NOT v_done THEN
        -- who held the locks first (the message may be cut where it is
        -- stored), then each attempt
        RAISE EXCEPTION 'pgshadow: % gave up after % attempt(s), nothing changed%', v_verb, v_attempt,
                        coalesce('; the locks were held by ' || (SELECT string_agg(value, '; ' ORDER BY key::integer)
                                                                 FROM jsonb_each_text(v_held)), '')
                        || v_blockers
            USING ERRCODE = 'lock_not_available',
                  HINT = format('End or wait out the sessions named, then %s again; %s never cancels them.', v_verb, v_verb);
    END IF;

    RETURN format('%s %s: lock wait %s ms, locks held %s ms (attempt %s of %s)%s',
                  CASE WHEN p_revert THEN 'reverted' ELSE 'promoted' END, v_names,
                  round(v_wait_ms::numeric, 1), round(v_hold_ms::numeric, 1), v_attempt, p_attempts,
                  CASE WHEN EXISTS (SELECT 1 FROM pgshadow.promote_moves m WHERE m.migration_id = p_migration_id
                                    AND m.state = 'to_validate')
                       THEN '; foreign keys to validate: pgshadowd does it next' ELSE '' END);
END
$fn$;

-- After the commit of a promote: validate the foreign keys it re-pointed
-- NOT VALID (a SHARE UPDATE EXCLUSIVE lock: writes go on meanwhile), one
-- per call, as the referencing table's owner. Returns what it did, NULL
-- when nothing is left. A key that does not validate is marked 'invalid'
-- with the error, and an event says so: the constraint stays NOT VALID,
-- enforced for new rows.
CREATE OR REPLACE FUNCTION pgshadow.promote_validate(p_migration_id text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    m     pgshadow.promote_moves;
    v_rel regclass;
    v_own oid;
BEGIN
    -- what verify queued for the promoted tables is moot (verify leaves a
    -- promoted migration alone); promote did not wait for the queue's rows
    DELETE FROM pgshadow.verify_queue q USING pgshadow.tables t
    WHERE q.table_id = t.table_id AND t.migration_id = p_migration_id AND t.promoted_at IS NOT NULL;
    SELECT * INTO m FROM pgshadow.promote_moves x
    WHERE x.migration_id = p_migration_id AND x.state = 'to_validate' ORDER BY x.move_id LIMIT 1
    FOR UPDATE SKIP LOCKED;
    IF m.move_id IS NULL THEN
        RETURN NULL;
    END IF;
    v_rel := substring(m.object FROM ' on (.*)$')::regclass;
    v_own := (SELECT relowner FROM pg_class WHERE oid = v_rel);
    PERFORM pgshadow._owner_fn(v_own);
    BEGIN
        PERFORM pgshadow._sync_run(v_own, '!' || m.statement);
        UPDATE pgshadow.promote_moves SET state = 'done', detail = 'validated', at = clock_timestamp()
        WHERE move_id = m.move_id;
        RETURN format('validated foreign key %s', m.object);
    EXCEPTION WHEN lock_not_available OR query_canceled OR deadlock_detected THEN
        RAISE;   -- the daemon tries again later
    WHEN OTHERS THEN
        UPDATE pgshadow.promote_moves SET state = 'invalid', detail = SQLERRM, at = clock_timestamp()
        WHERE move_id = m.move_id;
        INSERT INTO pgshadow.events (migration_id, who, what, why)
        VALUES (p_migration_id, 'pgshadowd', 'promote_fk_invalid',
                format('foreign key %s does not validate: %s (it stays NOT VALID: new rows are checked)', m.object, SQLERRM));
        RETURN format('foreign key %s does not validate: %s', m.object, SQLERRM);
    END;
END
$fn$;

-- Privileges: the daemon promotes (operators ask through the queue);
-- everyone who may read the status may read the plan.
REVOKE ALL ON FUNCTION pgshadow.promote(text, bigint, integer, integer, bigint, integer, boolean),
                       pgshadow._swap(text, bigint, integer, integer, bigint, integer, boolean, boolean),
                       pgshadow._swap_plan(text, boolean, boolean),
                       pgshadow.promote_validate(text),
                       pgshadow.promote_plan(text, boolean),
                       pgshadow._promote_collect(integer, boolean, boolean),
                       pgshadow._promote_holders(regclass),
                       pgshadow._lock_all(regclass[], text, timestamptz),
                       pgshadow._swap_fingerprint(oid[]),
                       pgshadow._swap_rels(text),
                       pgshadow._promoted(text),
                       pgshadow._legacy_name(text),
                       pgshadow._colnames(oid, int2[]),
                       pgshadow._promote_fks_out(oid, oid)
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.promote(text, bigint, integer, integer, bigint, integer, boolean),
                          pgshadow.promote_validate(text) TO pgshadow_daemon;
GRANT EXECUTE ON FUNCTION pgshadow.promote_plan(text, boolean) TO pgshadow_viewer, pgshadow_operator, pgshadow_daemon;
REVOKE ALL ON pgshadow.promote_moves FROM PUBLIC;
GRANT SELECT ON pgshadow.promote_moves TO pgshadow_viewer, pgshadow_daemon;
