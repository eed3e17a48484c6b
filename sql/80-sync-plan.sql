-- 80-sync-plan.sql: the sync engine's plan: foreign-key order, the statement texts apply and backfill run, the sync lock, which errors are transient, the registry refresh
--
-- The sync engine's database half (docs/sync.md): 80-sync-plan.sql (the
-- statements and the sync lock), 81-sync-quarantine.sql, 82-sync-apply.sql,
-- 83-sync-backfill.sql, 84-sync-wakeup.sql.
--
-- Invariants:
--  * apply never trusts the change log for data: it re-reads the primary row
--    by key, so applying an entry twice, late or out of order is harmless;
--  * take, apply and delete of change_log rows happen in the caller's one
--    transaction, so a crash anywhere loses nothing and duplicates nothing;
--  * apply and backfill of a migration run one at a time (_sync_lock), each
--    statement on a snapshot taken after the lock (READ COMMITTED, checked),
--    so whatever one writes is at least as new as what the other wrote
--    before: backfill may upsert, and a row it reads is never older than
--    the shadow row it replaces;
--  * every statement that touches a primary or shadow table runs as that
--    table's owner (pgshadow._owner_fn, via _sync_run): no code the owner
--    controls runs with pgshadow's rights. pgshadow's own code here only
--    reads pgshadow's tables and parses keys as trusted base types with
--    their own btree operators (pgshadow._key_spec);
--  * keys are grouped and compared with the key type's own equality and
--    the column's collation, never through a cast to text;
--  * a change log entry whose key cannot be parsed, or a row the shadow
--    rejects, is quarantined: it never stops the batch or other tables;
--  * every identifier reaches dynamic SQL through format('%I') / quote_ident,
--    every value through a parameter or %L;
--  * every function pins the settings the row hash and the key text depend
--    on (TimeZone, DateStyle, IntervalStyle, extra_float_digits,
--    bytea_output), so results never depend on the caller's session.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- Helpers of an earlier layout of this file (a refresh of such an install).
SELECT pgshadow._drop_functions(ARRAY['pgshadow._sync_unstick_sql(integer)',
                                      'pgshadow._sync_apply_keys(integer, text, text, text, bigint[])',
                                      'pgshadow._sync_halt_reason(integer, text, text, text, bigint[], text, text)',
                                      'pgshadow._sync_fk_depth(text)']);

-- ---------------------------------------------------------------------------
-- Plan: the tables of a migration in foreign-key order, with the statement
-- texts apply and backfill execute for each. Built once per call.
-- ---------------------------------------------------------------------------

-- A registered table whose primary, shadow or (after promote) legacy table
-- has FORCE ROW LEVEL SECURITY now. Install refuses it (05-rules.sql), but an
-- owner may set it later: then the owner's policies hide rows from the
-- owner's own reads, through which apply and reverse sync copy and delete:
-- a hidden row's change is missed (an UPDATE lost, seen in
-- test_revert_needs_reverse) or the row deleted from the other side. Apply and reverse
-- sync hold such a table's entries back (the other tables go on), promote
-- and revert refuse it.
CREATE OR REPLACE FUNCTION pgshadow._rls_forced(p_table_id integer)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT EXISTS (SELECT 1 FROM pgshadow.tables x
                   CROSS JOIN LATERAL (VALUES (x.table_name), (x.shadow_name), (x.legacy_name)) n(nm)
                   JOIN pg_class cl ON cl.oid = CASE WHEN n.nm IS NOT NULL
                                                     THEN to_regclass(format('%I.%I', x.schema_name, n.nm)) END
                   WHERE x.table_id = p_table_id AND cl.relforcerowsecurity)
$fn$;

-- Depth of each shadow table in the foreign-key graph among the migration's
-- shadow tables (0 = references no other registered shadow). Parents have a
-- smaller depth than their children; cycles are cut. p_of_tables: the graph
-- among the tables themselves (reverse sync after a promote, 90-revert.sql,
-- where the registry's names mean the new tables and its shadow names the
-- compatibility views).
CREATE OR REPLACE FUNCTION pgshadow._sync_fk_depth(p_migration_id text, p_of_tables boolean DEFAULT false)
RETURNS TABLE (table_id integer, depth integer)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH RECURSIVE t AS (
        SELECT r.table_id, to_regclass(format('%I.%I', r.schema_name,
                                              CASE WHEN p_of_tables THEN r.table_name ELSE r.shadow_name END)) AS rel
        FROM pgshadow.tables r
        WHERE r.migration_id = p_migration_id
    ), e AS (
        SELECT DISTINCT c.table_id AS child, p.table_id AS parent
        FROM pg_constraint con
        JOIN t c ON con.conrelid = c.rel
        JOIN t p ON con.confrelid = p.rel
        WHERE con.contype = 'f' AND c.table_id <> p.table_id
    ), d (table_id, depth, path) AS (
        SELECT t.table_id, 0, ARRAY[t.table_id] FROM t
        UNION ALL
        SELECT e.child, d.depth + 1, d.path || e.child
        FROM d JOIN e ON e.parent = d.table_id
        WHERE e.child <> ALL (d.path)
    )
    SELECT d.table_id, max(d.depth)::integer FROM d GROUP BY d.table_id
$fn$;

-- The condition that picks a batch's entries of one table out of the
-- change log ($1 table_id, $2 the batch's seqs), for an alias of
-- pgshadow.change_log. The seq range (from the batch's own seqs) lets every
-- statement read them from the (table_id, seq) index whatever the backlog:
-- `seq = ANY ($2)` alone made the planner scan the whole log once per
-- statement, which grew with the backlog (docs/sync.md, "Apply").
CREATE OR REPLACE FUNCTION pgshadow._sync_taken(p_alias text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT format('%1$I.table_id = $1 AND %1$I.seq = ANY ($2) '
                  'AND %1$I.seq BETWEEN (SELECT min(x) FROM unnest($2) x) AND (SELECT max(x) FROM unnest($2) x)',
                  p_alias)
$fn$;

-- The statement texts of one table. Parameters of the apply statements:
-- $1 table_id, $2 bigint[] of change_log seqs (entries of other tables are

-- Lexicographic comparison of two equally long lists of key expressions
-- with the key's own operators (_key_spec): (l) > (r) with p_strict = p_last
-- = the > operators, (l) <= (r) with p_strict = <, p_last = <=. With one
-- operator schema for every column it is a row comparison, which an index
-- on the key serves; otherwise it is spelled out column by column.
CREATE OR REPLACE FUNCTION pgshadow._sync_cmp(p_l text[], p_r text[], p_strict text[], p_last text[],
                                              p_eqs text[], p_ns text[])
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n     integer := cardinality(p_l);
    v_out text;
BEGIN
    IF n = 1 THEN
        RETURN format('(%s %s %s)', p_l[1], p_last[1], p_r[1]);
    END IF;
    IF (SELECT count(DISTINCT x) FROM unnest(p_ns) x) = 1 THEN
        RETURN format('(ROW(%s) %s ROW(%s))', array_to_string(p_l, ', '), p_last[1], array_to_string(p_r, ', '));
    END IF;
    -- l1 <strict> r1 OR (l1 = r1 AND (... ln <last> rn))
    v_out := format('(%s %s %s)', p_l[n], p_last[n], p_r[n]);
    FOR i IN REVERSE n - 1 .. 1 LOOP
        v_out := format('(%s %s %s OR (%s %s %s AND %s))', p_l[i], p_strict[i], p_r[i], p_l[i], p_eqs[i], p_r[i], v_out);
    END LOOP;
    RETURN v_out;
END
$fn$;

-- The statement texts of one table, built from the live catalog on every
-- call (a widened key column, int -> bigint or varchar(5) -> varchar(20),
-- is read as it is now). Keys travel as "encoded keys": the text of a
-- text[] of the key's column values, one element per key column.
--
-- Run by pgshadow's own code (apply_batch, as its owner):
--   parse_sql   ($1 table_id, $2 seqs) the batch's entries of the table,
--               grouped by the typed key: (nk encoded key or NULL for a
--               malformed entry, maydel, seqs);
--   qclear_sql  ($1 table_id, $2 encoded keys) delete their quarantine rows.
-- Run as the table owner through _sync_run ($1, $2 text[]; each returns
-- text[] rows):
--   del_sql     ($1 keys) delete shadow rows whose primary row is gone -> {n}
--               (a leading '#': the owner function returns the row count)
--   ups_sql     ($1 keys) upsert shadow rows from the primary -> {rows, inserted}
--   unstick_sql ($1 keys) delete their shadow rows (unique-swap repair);
--               NULL when a foreign key cascades from the shadow
--   qcount_sql  ($1 keys) {in primary only, in shadow only}
--   exists_sql, truncate_sql, count_primary_sql, count_shadow_sql
--   bf_bound_sql ($1 cursor, $2 {chunk}) key of the chunk-th row after the cursor
--   bf_copy_sql  ($1 cursor, $2 bound) upsert (cursor, bound] -> {rows}
--   bf_keys_sql  ($1 cursor, $2 bound) keys of (cursor, bound], one per row
--   bf_row_sql   ($1 key) upsert one row -> {rows}
--   bf_extra_sql ($1 cursor, $2 bound) shadow keys in (cursor, bound] the
--                primary does not have
-- A cursor or bound is a text[] of column values (NULL: open end).
CREATE OR REPLACE FUNCTION pgshadow._sync_statements(
    p_table_id integer,
    OUT owner oid,
    OUT parse_sql text, OUT qclear_sql text,
    OUT del_sql text, OUT ups_sql text, OUT unstick_sql text, OUT qcount_sql text,
    OUT exists_sql text, OUT truncate_sql text, OUT count_primary_sql text, OUT count_shadow_sql text,
    OUT bf_bound_sql text, OUT bf_copy_sql text, OUT bf_keys_sql text, OUT bf_row_sql text,
    OUT bf_extra_sql text,
    OUT hash_expr text, OUT column_map jsonb, OUT key_types text[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t          pgshadow.tables;
    v_prel     regclass;
    v_srel     regclass;
    v_primary  text;
    v_shadow   text;
    v_n        integer;
    v_why      text;
    v_cols     text;
    v_sel      text;
    v_set      text;
    v_src      text;
    v_b        text;     -- owner side: the $1 encoded keys as typed columns k1..kn
    v_join     text;     -- p.<key> = b.kN
    v_sjoin    text;     -- s.<key> = b.kN
    v_kcols    text;
    v_pcols    text;     -- p.<key>, ... (ORDER BY)
    v_pkey     text;     -- key text[] of primary row p
    v_skey     text;     -- key text[] of shadow row s
    v_psjoin   text;     -- p.<key> = s.<key>
    v_eqcur    text;     -- p.<key> = $1[i]
    v_qeq      text;     -- quarantine key = b.kN
    v_parse    text;     -- typed c.key[i]
    v_group    text;
    v_ok       text;
    v_pl       text[]; v_sl text[]; v_cur text[]; v_bnd text[];
    v_gt       text[]; v_lt text[]; v_le text[]; v_eq text[]; v_ns text[];
    v_gtp      text;     -- p > cursor
    v_lep      text;     -- p <= bound
BEGIN
    SELECT * INTO STRICT t FROM pgshadow.tables WHERE table_id = p_table_id;
    v_primary := format('%I.%I', t.schema_name, t.table_name);
    v_shadow := format('%I.%I', t.schema_name, t.shadow_name);
    v_prel := to_regclass(v_primary);
    v_srel := to_regclass(v_shadow);
    IF v_prel IS NULL OR v_srel IS NULL THEN
        RAISE EXCEPTION 'pgshadow: table % or its shadow % no longer exists', v_primary, v_shadow
            USING ERRCODE = 'undefined_table';
    END IF;
    SELECT c.relowner INTO owner FROM pg_class c WHERE c.oid = v_prel;
    IF (SELECT c.relowner FROM pg_class c WHERE c.oid = v_srel) <> owner THEN
        RAISE EXCEPTION 'pgshadow: shadow table % is not owned by the owner of %', v_shadow, v_primary
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'ALTER TABLE ... OWNER TO the primary table''s owner.';
    END IF;

    SELECT string_agg(format('((u.x::text[])[%s])::%s%s AS k%s', ks.o, ks.typ, ks.coll, ks.o), ', ' ORDER BY ks.o),
           string_agg(format('p.%I %s b.k%s', ks.col, ks.eq, ks.o), ' AND ' ORDER BY ks.o),
           string_agg(format('s.%I %s b.k%s', ks.col, ks.eq, ks.o), ' AND ' ORDER BY ks.o),
           string_agg(format('%I', ks.col), ', ' ORDER BY ks.o),
           string_agg(format('p.%I', ks.col), ', ' ORDER BY ks.o),
           'ARRAY[' || string_agg(format('(p.%I)::text', ks.col), ', ' ORDER BY ks.o) || ']',
           'ARRAY[' || string_agg(format('(s.%I)::text', ks.col), ', ' ORDER BY ks.o) || ']',
           string_agg(format('p.%I %s s.%I', ks.col, ks.eq, ks.col), ' AND ' ORDER BY ks.o),
           string_agg(format('p.%I %s ($1[%s])::%s%s', ks.col, ks.eq, ks.o, ks.typ, ks.coll), ' AND ' ORDER BY ks.o),
           string_agg(format('(q.key[%s])::%s%s %s b.k%s', ks.o, ks.typ, ks.coll, ks.eq, ks.o), ' AND ' ORDER BY ks.o),
           string_agg(format('CASE WHEN ok THEN (c.key[%s])::%s%s END AS k%s', ks.o, ks.typ, ks.coll, ks.o), ', ' ORDER BY ks.o),
           string_agg(format('k%s', ks.o), ', ' ORDER BY ks.o),
           array_agg(format('p.%I', ks.col) ORDER BY ks.o),
           array_agg(format('s.%I', ks.col) ORDER BY ks.o),
           array_agg(format('($1[%s])::%s%s', ks.o, ks.typ, ks.coll) ORDER BY ks.o),
           array_agg(format('($2[%s])::%s%s', ks.o, ks.typ, ks.coll) ORDER BY ks.o),
           array_agg(ks.gt ORDER BY ks.o), array_agg(ks.lt ORDER BY ks.o), array_agg(ks.le ORDER BY ks.o),
           array_agg(ks.eq ORDER BY ks.o), array_agg(ks.ns ORDER BY ks.o),
           (array_agg(ks.col || ' ' || ks.problem ORDER BY ks.o) FILTER (WHERE ks.problem IS NOT NULL))[1]
    INTO v_b, v_join, v_sjoin, v_kcols, v_pcols, v_pkey, v_skey, v_psjoin, v_eqcur, v_qeq, v_parse, v_group,
         v_pl, v_sl, v_cur, v_bnd, v_gt, v_lt, v_le, v_eq, v_ns, v_why
    FROM pgshadow._key_spec(v_prel, t.key_columns) ks;
    -- (one pass over the key spec: a problem makes the texts above unusable)
    IF v_why IS NOT NULL THEN
        RAISE EXCEPTION 'pgshadow: table %: key column %', v_primary, v_why
            USING ERRCODE = 'invalid_table_definition';
    END IF;
    v_b := format('SELECT %s FROM unnest($1) AS u(x)', v_b);
    v_gtp := pgshadow._sync_cmp(v_pl, v_cur, v_gt, v_gt, v_eq, v_ns);
    v_lep := pgshadow._sync_cmp(v_pl, v_bnd, v_lt, v_le, v_eq, v_ns);

    -- Every column the shadow takes, the key columns included: a key can
    -- change spelling without changing identity (numeric 1.0 -> 1.00, or
    -- 'Alice' -> 'alice' in a citext key), and the shadow takes the new one.
    -- The shadow's column types as they are now (a column widened since
    -- install, varchar(5) -> varchar(20), must not be cut to the old
    -- width). The values are cast to the bare type (schema-qualified, no
    -- type modifier) and the column's own assignment applies its modifier:
    -- an explicit cast to varchar(n) would cut a too long value silently,
    -- the assignment rejects it (quarantined). The canonical hash casts to
    -- the full type, as the stored value is (docs/database.md).
    SELECT string_agg(format('%I', m ->> 'shadow'), ', ' ORDER BY o),
           string_agg(format('(%s)::%I.%I', m ->> 'expr', tn.nspname, ty.typname), ', ' ORDER BY o),
           string_agg(format('%I = EXCLUDED.%I', m ->> 'shadow', m ->> 'shadow'), ', ' ORDER BY o),
           'encode(sha256(convert_to((ROW('
           || string_agg(format('(%s)::%s', m ->> 'expr', format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY o)
           || '))::text, ''UTF8'')), ''hex'')',
           jsonb_agg(jsonb_set(m, '{type}', to_jsonb(format_type(a.atttypid, a.atttypmod))) ORDER BY o),
           count(*)
    INTO v_cols, v_sel, v_set, hash_expr, column_map, v_n
    FROM jsonb_array_elements(t.column_map) WITH ORDINALITY AS x(m, o)
    JOIN pg_attribute a ON a.attrelid = v_srel AND a.attname = m ->> 'shadow' AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type ty ON ty.oid = a.atttypid
    JOIN pg_namespace tn ON tn.oid = ty.typnamespace;
    IF v_n <> jsonb_array_length(t.column_map) THEN
        RAISE EXCEPTION 'pgshadow: shadow table % lacks a column it had at install', v_shadow
            USING ERRCODE = 'undefined_column', HINT = 'Run pgshadowctl install again.';
    END IF;
    v_n := cardinality(t.key_columns);
    SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY u.o) INTO key_types
    FROM unnest(t.key_columns) WITH ORDINALITY u(k, o)
    JOIN pg_attribute a ON a.attrelid = v_prel AND a.attname = u.k AND a.attnum > 0 AND NOT a.attisdropped;
    v_cols := v_cols || ', _shadow_version, _shadow_sync_status, _shadow_last_sync, '
                        '_shadow_validation_hash, _shadow_source_table, _shadow_migration_id';
    v_src := format('%L, %L', t.table_name, t.migration_id);
    v_sel := v_sel || ', 1, ''synced'', now(), ' || hash_expr || ', ' || v_src;
    v_set := coalesce(v_set || ', ', '')
          || '_shadow_version = coalesce(s._shadow_version, 0) + 1, _shadow_sync_status = ''synced'', '
             '_shadow_last_sync = EXCLUDED._shadow_last_sync, '
             '_shadow_validation_hash = EXCLUDED._shadow_validation_hash';

    -- A malformed entry (wrong number of key values, a NULL one) groups
    -- under ok = false with nk NULL, and is quarantined by the caller.
    v_ok := format('(cardinality(c.key) = %s AND array_position(c.key, NULL) IS NULL)', v_n);
    parse_sql := format('SELECT CASE WHEN ok THEN (ARRAY[%s])::text END AS nk, '
                        'bool_or(op NOT IN (''I'', ''U'')) AS maydel, array_agg(seq ORDER BY seq) AS seqs '
                        'FROM (SELECT c.seq, c.op, %s AS ok, %s FROM pgshadow.change_log c WHERE %s '
                        'AND c.key IS NOT NULL) x GROUP BY ok, %s ORDER BY min(seq)',
                        (SELECT string_agg(format('(k%s)::text', i), ', ' ORDER BY i) FROM generate_series(1, v_n) i),
                        v_ok, replace(v_parse, 'WHEN ok', 'WHEN ' || v_ok), pgshadow._sync_taken('c'), v_group);
    qclear_sql := format('DELETE FROM pgshadow.quarantine q USING (%s) b WHERE q.table_id = $1 '
                         'AND q.phase IS DISTINCT FROM ''parse'' AND cardinality(q.key) = %s AND %s',
                         replace(v_b, '$1', '$2'), v_n, v_qeq);

    del_sql := format('#WITH b AS (%s) DELETE FROM %s AS s USING b WHERE %s '
                      'AND NOT EXISTS (SELECT 1 FROM %s AS p WHERE %s)',
                      v_b, v_shadow, v_sjoin, v_primary, v_join);
    -- xmax = 0 in RETURNING tells an inserted row from an updated one.
    -- Apply and the backfill's chunks write shadow rows in key order (ORDER
    -- BY the key): two writers that take their row locks in one order
    -- cannot deadlock (a chunk and an apply batch may meet on keys claimed
    -- after apply looked at the registrations).
    ups_sql := format('WITH b AS (%s), u AS (INSERT INTO %s AS s (%s) SELECT %s FROM %s AS p JOIN b ON %s '
                      'ORDER BY %s ON CONFLICT (%s) DO UPDATE SET %s RETURNING (s.xmax = 0) AS ins) '
                      'SELECT ARRAY[count(*)::text, (count(*) FILTER (WHERE ins))::text] FROM u',
                      v_b, v_shadow, v_cols, v_sel, v_primary, v_join, v_pcols, v_kcols, v_set);
    IF NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.contype = 'f' AND con.confrelid = v_srel
                   AND con.confdeltype IN ('c', 'n', 'd')) THEN
        unstick_sql := format('#WITH b AS (%s) DELETE FROM %s AS s USING b WHERE %s', v_b, v_shadow, v_sjoin);
    END IF;
    qcount_sql := format('WITH b AS (%s) SELECT ARRAY[(count(*) FILTER (WHERE ip AND NOT iss))::text, '
                         '(count(*) FILTER (WHERE iss AND NOT ip))::text] FROM (SELECT '
                         'EXISTS (SELECT 1 FROM %s AS p WHERE %s) AS ip, EXISTS (SELECT 1 FROM %s AS s WHERE %s) AS iss '
                         'FROM b) x', v_b, v_primary, v_join, v_shadow, v_sjoin);
    exists_sql := format('SELECT ARRAY[(EXISTS (SELECT 1 FROM %s))::text]', v_shadow);
    truncate_sql := format('!TRUNCATE %s', v_shadow);
    count_primary_sql := format('SELECT ARRAY[count(*)::text] FROM %s', v_primary);
    count_shadow_sql := format('SELECT ARRAY[count(*)::text] FROM %s', v_shadow);

    bf_bound_sql := format('SELECT %s FROM %s AS p WHERE $1 IS NULL OR %s ORDER BY %s OFFSET ($2[1])::bigint - 1 LIMIT 1',
                           v_pkey, v_primary, v_gtp, v_pcols);
    bf_copy_sql := format('#INSERT INTO %s AS s (%s) SELECT %s FROM %s AS p '
                          'WHERE ($1 IS NULL OR %s) AND ($2 IS NULL OR %s) ORDER BY %s '
                          'ON CONFLICT (%s) DO UPDATE SET %s WHERE %s IS DISTINCT FROM EXCLUDED._shadow_validation_hash',
                          v_shadow, v_cols, v_sel, v_primary, v_gtp, v_lep, v_pcols, v_kcols, v_set,
                          t.shadow_hash_expr);
    bf_keys_sql := format('SELECT %s FROM %s AS p WHERE ($1 IS NULL OR %s) AND ($2 IS NULL OR %s) ORDER BY %s',
                          v_pkey, v_primary, v_gtp, v_lep, v_pcols);
    bf_row_sql := format('#INSERT INTO %s AS s (%s) SELECT %s FROM %s AS p WHERE %s '
                         'ON CONFLICT (%s) DO UPDATE SET %s WHERE %s IS DISTINCT FROM EXCLUDED._shadow_validation_hash',
                         v_shadow, v_cols, v_sel, v_primary, v_eqcur, v_kcols, v_set, t.shadow_hash_expr);
    bf_extra_sql := format('SELECT %s FROM %s AS s WHERE ($1 IS NULL OR %s) AND ($2 IS NULL OR %s) '
                           'AND NOT EXISTS (SELECT 1 FROM %s AS p WHERE %s)',
                           v_skey, v_shadow,
                           pgshadow._sync_cmp(v_sl, v_cur, v_gt, v_gt, v_eq, v_ns),
                           pgshadow._sync_cmp(v_sl, v_bnd, v_lt, v_le, v_eq, v_ns),
                           v_primary, v_psjoin);
END
$fn$;


-- The chunk engine's statement texts of one table (83-sync-backfill.sql),
-- apart from _sync_statements so apply's every batch does not build them:
--   bf_sample_sql  (as the owner; $1 {percent of the pages}) a sample of the
--                  primary's keys in key order: where the ranges are cut;
--   key_le_sql     (pgshadow's own code; $1, $2 encoded keys) $1 <= $2 as
--                  the key's type;
--   defer_sql      (pgshadow's own code; $1 table_id, $2 seqs) the batch's
--                  entries whose key lies in an interval a chunk is copying
--                  now (apply_batch leaves those in the log).
CREATE OR REPLACE FUNCTION pgshadow._sync_chunk_sql(p_table_id integer, OUT bf_sample_sql text,
                                                    OUT key_le_sql text, OUT defer_sql text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t       pgshadow.tables;
    v_prel  regclass;
    v_n     integer;
    v_pkey  text; v_pcols text;
    v_a     text[]; v_b text[]; v_ck text[]; v_lo text[]; v_hi text[];
    v_gt    text[]; v_lt text[]; v_le text[]; v_eq text[]; v_ns text[];
BEGIN
    SELECT * INTO STRICT t FROM pgshadow.tables WHERE table_id = p_table_id;
    v_prel := to_regclass(format('%I.%I', t.schema_name, t.table_name));
    SELECT 'ARRAY[' || string_agg(format('(p.%I)::text', ks.col), ', ' ORDER BY ks.o) || ']',
           string_agg(format('p.%I', ks.col), ', ' ORDER BY ks.o),
           array_agg(format('($1[%s])::%s%s', ks.o, ks.typ, ks.coll) ORDER BY ks.o),
           array_agg(format('($2[%s])::%s%s', ks.o, ks.typ, ks.coll) ORDER BY ks.o),
           array_agg(format('(c.key[%s])::%s%s', ks.o, ks.typ, ks.coll) ORDER BY ks.o),
           array_agg(format('(b.inflight_lo[%s])::%s%s', ks.o, ks.typ, ks.coll) ORDER BY ks.o),
           array_agg(format('(b.inflight_hi[%s])::%s%s', ks.o, ks.typ, ks.coll) ORDER BY ks.o),
           array_agg(ks.gt ORDER BY ks.o), array_agg(ks.lt ORDER BY ks.o), array_agg(ks.le ORDER BY ks.o),
           array_agg(ks.eq ORDER BY ks.o), array_agg(ks.ns ORDER BY ks.o), count(*)
    INTO v_pkey, v_pcols, v_a, v_b, v_ck, v_lo, v_hi, v_gt, v_lt, v_le, v_eq, v_ns, v_n
    FROM pgshadow._key_spec(v_prel, t.key_columns) ks;
    bf_sample_sql := format('SELECT %s FROM %s AS p TABLESAMPLE SYSTEM ((($1[1])::float8)) ORDER BY %s',
                            v_pkey, v_prel, v_pcols);
    key_le_sql := format('SELECT %s', pgshadow._sync_cmp(v_a, v_b, v_lt, v_le, v_eq, v_ns));
    defer_sql := format('SELECT c.seq FROM pgshadow.change_log c JOIN pgshadow.backfill_ranges b '
                        'ON b.table_id = c.table_id AND b.inflight WHERE %s AND c.key IS NOT NULL '
                        'AND cardinality(c.key) = %s AND array_position(c.key, NULL) IS NULL '
                        'AND (b.inflight_lo IS NULL OR %s) AND (b.inflight_hi IS NULL OR %s)',
                        pgshadow._sync_taken('c'), v_n,
                        pgshadow._sync_cmp(v_ck, v_lo, v_gt, v_gt, v_eq, v_ns),
                        pgshadow._sync_cmp(v_ck, v_hi, v_lt, v_le, v_eq, v_ns));
END
$fn$;

-- Errors that say nothing about a row: a lost connection, a cancel or
-- timeout, a lock not granted in time, a deadlock or serialization failure,
-- resources, internal errors. They end the call (the daemon retries the
-- whole batch); every other error is the row's (or the entry's) and is
-- quarantined.
CREATE OR REPLACE FUNCTION pgshadow._sync_transient(p_state text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT left(p_state, 2) IN ('08', '40', '53', '57', '58', 'XX')
           OR p_state IN ('55P03', '55006', 'PSHLT', 'PSUND')
$fn$;

-- The registry follows the catalog: a key or shadow column whose type was
-- changed since install (widened, typically) gets its new type in
-- key_types, column_map and the row hash, once, with an event.
CREATE OR REPLACE FUNCTION pgshadow._sync_refresh(p_table_id integer, p_hash text, p_map jsonb, p_key_types text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t pgshadow.tables;
BEGIN
    SELECT * INTO t FROM pgshadow.tables WHERE table_id = p_table_id;
    IF t.hash_expr IS DISTINCT FROM p_hash OR t.key_types IS DISTINCT FROM p_key_types THEN
        UPDATE pgshadow.tables SET hash_expr = p_hash, column_map = p_map, key_types = p_key_types
        WHERE table_id = p_table_id;
        INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, before, after)
        VALUES (t.migration_id, t.table_name, 'pgshadowd', 'registry_refreshed',
                'column types changed since install',
                jsonb_build_object('key_types', t.key_types, 'column_map', t.column_map),
                jsonb_build_object('key_types', p_key_types, 'column_map', p_map));
    END IF;
END
$fn$;
-- apply_batch and backfill_step of one migration run one at a time, whoever
-- calls them: a transaction-level advisory lock (released at commit), so a
-- second caller waits for the first to commit (up to the callers' 5 s
-- lock_timeout; then it fails with 55P03 and is retried) and then reads the
-- primary rows at least as new as the first did. Without it two appliers could
-- write the same shadow row from snapshots taken in the opposite order.
-- (A different key from the daemon's leader lock, 'pgshadow:' || id.)
-- "At least as new" holds only when each statement after the lock takes a
-- new snapshot: READ COMMITTED, refused otherwise (checked here, where the
-- lock is taken, for every caller).
CREATE OR REPLACE FUNCTION pgshadow._sync_lock(p_migration_id text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM pgshadow._sync_read_committed();
    PERFORM pg_advisory_xact_lock(hashtextextended('pgshadow:sync:' || p_migration_id, 0));
END
$fn$;

-- Refuse any isolation but READ COMMITTED: apply, and a backfill chunk that
-- runs without the sync lock, need each statement's snapshot newer than
-- what committed before it (the sync lock's grant; a chunk's registration).
CREATE OR REPLACE FUNCTION pgshadow._sync_read_committed()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'pgshadow: apply and backfill must run in a READ COMMITTED transaction, not %',
            current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    END IF;
END
$fn$;



-- Privileges
REVOKE ALL ON FUNCTION pgshadow._rls_forced(integer),
                       pgshadow._sync_fk_depth(text, boolean),
                       pgshadow._sync_taken(text),
                       pgshadow._sync_cmp(text[], text[], text[], text[], text[], text[]),
                       pgshadow._sync_statements(integer),
                       pgshadow._sync_chunk_sql(integer),
                       pgshadow._sync_transient(text),
                       pgshadow._sync_refresh(integer, text, jsonb, text[]),
                       pgshadow._sync_lock(text),
                       pgshadow._sync_read_committed()
       FROM PUBLIC;
