-- sync--1.sql: the database half of the sync engine, schema version 1.
--
-- Run right after pgshadow--1.sql in the same install transaction (no
-- BEGIN/COMMIT here). Idempotent: CREATE OR REPLACE only. See docs/sync.md.
--
-- Owns: pgshadow.apply_batch (change log -> shadow), pgshadow.backfill_step
-- (existing rows -> shadow, resumable, reconciling), pgshadow.wakeup_arm
-- (the capture triggers' NOTIFY switch), pgshadow.quarantine_retry,
-- pgshadow.replication_lag_ms and their private helpers (pgshadow._sync_*).
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
-- Helpers of an earlier layout of this file (a refresh of such an install).
DO $old$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['pgshadow._sync_unstick_sql(integer)',
                             'pgshadow._sync_apply_keys(integer, text, text, text, bigint[])',
                             'pgshadow._sync_halt_reason(integer, text, text, text, bigint[], text, text)'] LOOP
        IF to_regprocedure(f) IS NOT NULL THEN
            EXECUTE 'DROP FUNCTION ' || f;
        END IF;
    END LOOP;
END
$old$;

-- ---------------------------------------------------------------------------
-- Plan: the tables of a migration in foreign-key order, with the statement
-- texts apply and backfill execute for each. Built once per call.
-- ---------------------------------------------------------------------------

-- Depth of each shadow table in the foreign-key graph among the migration's
-- shadow tables (0 = references no other registered shadow). Parents have a
-- smaller depth than their children; cycles are cut.
CREATE OR REPLACE FUNCTION pgshadow._sync_fk_depth(p_migration_id text)
RETURNS TABLE (table_id integer, depth integer)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH RECURSIVE t AS (
        SELECT r.table_id, to_regclass(format('%I.%I', r.schema_name, r.shadow_name)) AS rel
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
--   ups_sql     ($1 keys) upsert shadow rows from the primary -> {rows, inserted}
--   unstick_sql ($1 keys) delete their shadow rows (unique-swap repair);
--               NULL when a foreign key cascades from the shadow
--   qcount_sql  ($1 keys) {in primary only, in shadow only}
--   exists_sql, truncate_sql, count_primary_sql, count_shadow_sql
--   bf_bound_sql ($1 cursor, $2 {chunk}) key of the chunk-th row after the cursor
--   bf_copy_sql  ($1 cursor, $2 bound) upsert (cursor, bound] -> {rows, inserted}
--   bf_keys_sql  ($1 cursor, $2 bound) keys of (cursor, bound], one per row
--   bf_row_sql   ($1 key) upsert one row -> {rows, inserted}
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
    SELECT ks.col || ' ' || ks.problem INTO v_why
    FROM pgshadow._key_spec(v_prel, t.key_columns) ks WHERE ks.problem IS NOT NULL ORDER BY ks.o LIMIT 1;
    IF v_why IS NOT NULL THEN
        RAISE EXCEPTION 'pgshadow: table %: key column %', v_primary, v_why
            USING ERRCODE = 'invalid_table_definition';
    END IF;
    v_n := cardinality(t.key_columns);

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
           array_agg(ks.eq ORDER BY ks.o), array_agg(ks.ns ORDER BY ks.o)
    INTO v_b, v_join, v_sjoin, v_kcols, v_pcols, v_pkey, v_skey, v_psjoin, v_eqcur, v_qeq, v_parse, v_group,
         v_pl, v_sl, v_cur, v_bnd, v_gt, v_lt, v_le, v_eq, v_ns
    FROM pgshadow._key_spec(v_prel, t.key_columns) ks;
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

    del_sql := format('WITH b AS (%s), d AS (DELETE FROM %s AS s USING b WHERE %s '
                      'AND NOT EXISTS (SELECT 1 FROM %s AS p WHERE %s) RETURNING 1) '
                      'SELECT ARRAY[count(*)::text] FROM d',
                      v_b, v_shadow, v_sjoin, v_primary, v_join);
    -- xmax = 0 in RETURNING tells an inserted row from an updated one.
    ups_sql := format('WITH b AS (%s), u AS (INSERT INTO %s AS s (%s) SELECT %s FROM %s AS p JOIN b ON %s '
                      'ON CONFLICT (%s) DO UPDATE SET %s RETURNING (s.xmax = 0) AS ins) '
                      'SELECT ARRAY[count(*)::text, (count(*) FILTER (WHERE ins))::text] FROM u',
                      v_b, v_shadow, v_cols, v_sel, v_primary, v_join, v_kcols, v_set);
    IF NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.contype = 'f' AND con.confrelid = v_srel
                   AND con.confdeltype IN ('c', 'n', 'd')) THEN
        unstick_sql := format('WITH b AS (%s), d AS (DELETE FROM %s AS s USING b WHERE %s RETURNING 1) '
                              'SELECT ARRAY[count(*)::text] FROM d', v_b, v_shadow, v_sjoin);
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
    bf_copy_sql := format('WITH u AS (INSERT INTO %s AS s (%s) SELECT %s FROM %s AS p '
                          'WHERE ($1 IS NULL OR %s) AND ($2 IS NULL OR %s) '
                          'ON CONFLICT (%s) DO UPDATE SET %s WHERE %s IS DISTINCT FROM EXCLUDED._shadow_validation_hash '
                          'RETURNING (s.xmax = 0) AS ins) '
                          'SELECT ARRAY[count(*)::text, (count(*) FILTER (WHERE ins))::text] FROM u',
                          v_shadow, v_cols, v_sel, v_primary, v_gtp, v_lep, v_kcols, v_set, t.shadow_hash_expr);
    bf_keys_sql := format('SELECT %s FROM %s AS p WHERE ($1 IS NULL OR %s) AND ($2 IS NULL OR %s) ORDER BY %s',
                          v_pkey, v_primary, v_gtp, v_lep, v_pcols);
    bf_row_sql := format('WITH u AS (INSERT INTO %s AS s (%s) SELECT %s FROM %s AS p WHERE %s '
                         'ON CONFLICT (%s) DO UPDATE SET %s WHERE %s IS DISTINCT FROM EXCLUDED._shadow_validation_hash '
                         'RETURNING (s.xmax = 0) AS ins) '
                         'SELECT ARRAY[count(*)::text, (count(*) FILTER (WHERE ins))::text] FROM u',
                         v_shadow, v_cols, v_sel, v_primary, v_eqcur, v_kcols, v_set, t.shadow_hash_expr);
    bf_extra_sql := format('SELECT %s FROM %s AS s WHERE ($1 IS NULL OR %s) AND ($2 IS NULL OR %s) '
                           'AND NOT EXISTS (SELECT 1 FROM %s AS p WHERE %s)',
                           v_skey, v_shadow,
                           pgshadow._sync_cmp(v_sl, v_cur, v_gt, v_gt, v_eq, v_ns),
                           pgshadow._sync_cmp(v_sl, v_bnd, v_lt, v_le, v_eq, v_ns),
                           v_primary, v_psjoin);
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
CREATE OR REPLACE FUNCTION pgshadow._sync_lock(p_migration_id text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pg_advisory_xact_lock(hashtextextended('pgshadow:sync:' || p_migration_id, 0))
$fn$;

-- ---------------------------------------------------------------------------
-- Quarantine
-- ---------------------------------------------------------------------------

-- Record (or refresh) a rejected key with the error it got now (a key that
-- failed a CHECK and then a foreign key carries 23503, which the re-queue
-- of apply_batch looks for); an event for a key not quarantined before.
-- Returns true when the key is new in the quarantine.
CREATE OR REPLACE FUNCTION pgshadow._sync_quarantine(p_table_id integer, p_key text[], p_sqlstate text,
                                                     p_message text, p_detail text, p_phase text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_new boolean;
BEGIN
    INSERT INTO pgshadow.quarantine AS q (table_id, key, sqlstate, message, detail, phase)
    VALUES (p_table_id, p_key, p_sqlstate, p_message, p_detail, p_phase)
    ON CONFLICT (table_id, key) DO UPDATE
        SET sqlstate = EXCLUDED.sqlstate, message = EXCLUDED.message, detail = EXCLUDED.detail,
            phase = EXCLUDED.phase, last_seen = now(), attempts = q.attempts + 1, retry_requested = false
    RETURNING (q.xmax = 0) INTO v_new;
    IF v_new THEN
        INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
        SELECT t.migration_id, t.table_name, 'pgshadowd', 'quarantine', p_message,
               jsonb_build_object('key', to_jsonb(p_key), 'sqlstate', p_sqlstate, 'message', p_message,
                                  'detail', p_detail, 'phase', p_phase)
        FROM pgshadow.tables t WHERE t.table_id = p_table_id;
    END IF;
    RETURN v_new;
END
$fn$;

-- The entries among p_seqs (of table p_table_id) that p_sql ($1 table_id,
-- $2 seqs: parse_sql) cannot read, with the error each got: found by
-- bisection, each half in its own sub-transaction, so k bad entries among
-- n cost O(k log n) sub-transactions.
CREATE OR REPLACE FUNCTION pgshadow._sync_bad_entries(p_table_id integer, p_sql text, p_seqs bigint[])
RETURNS TABLE (seq bigint, state text, message text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_mine  bigint[];
    v_lo    integer[];
    v_hi    integer[];
    lo      integer;
    hi      integer;
    mid     integer;
    e_state text;
    e_msg   text;
BEGIN
    v_mine := ARRAY(SELECT c.seq FROM pgshadow.change_log c
                    WHERE c.table_id = p_table_id AND c.seq = ANY (p_seqs) ORDER BY c.seq);
    v_lo := ARRAY[1];
    v_hi := ARRAY[cardinality(v_mine)];
    WHILE cardinality(v_lo) > 0 AND cardinality(v_mine) > 0 LOOP
        lo := v_lo[cardinality(v_lo)];
        hi := v_hi[cardinality(v_hi)];
        v_lo := v_lo[1:cardinality(v_lo) - 1];
        v_hi := v_hi[1:cardinality(v_hi) - 1];
        BEGIN
            EXECUTE 'SELECT count(*) FROM (' || p_sql || ') x' USING p_table_id, v_mine[lo:hi];
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_msg = MESSAGE_TEXT;
            IF pgshadow._sync_transient(e_state) THEN
                RAISE;
            END IF;
            IF lo = hi THEN
                seq := v_mine[lo]; state := e_state; message := e_msg;
                RETURN NEXT;
            ELSE
                mid := (lo + hi) / 2;
                v_lo := v_lo || ARRAY[mid + 1, lo];
                v_hi := v_hi || ARRAY[hi, mid];
            END IF;
        END;
    END LOOP;
END
$fn$;

-- The batch's entries of one table grouped by key with the key type's own
-- equality (p_sql: parse_sql). Entries that cannot be read as a key of the
-- table (malformed, or text its key type does not parse: a writer's
-- DateStyle, a key type changed since) are quarantined with phase 'parse'
-- and their raw text, and the rest are grouped again without them: one bad
-- entry never stops its table, nor the others. Returns the encoded keys of
-- the groups (all_keys), those that may have vanished (maydel_keys: any
-- entry other than an I/U in row mode; every key in statement mode) and
-- how many entries were quarantined.
CREATE OR REPLACE FUNCTION pgshadow._sync_parse(p_table_id integer, p_sql text, p_seqs bigint[], p_rowmode boolean,
                                                OUT all_keys text[], OUT maydel_keys text[], OUT n_bad integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_seqs  bigint[] := p_seqs;
    v_bad   bigint[];
    v_total integer := 0;   -- entries quarantined by earlier rounds
    r       record;
    e_state text;
BEGIN
    LOOP
        BEGIN
            n_bad := v_total;
            all_keys := '{}';
            maydel_keys := '{}';
            FOR r IN EXECUTE p_sql USING p_table_id, v_seqs LOOP
                IF r.nk IS NULL THEN
                    PERFORM pgshadow._sync_quarantine(p_table_id, c.key, '22P02',
                                                      format('malformed change log entry: key %s', c.key::text),
                                                      NULL, 'parse')
                    FROM pgshadow.change_log c WHERE c.table_id = p_table_id AND c.seq = ANY (r.seqs);
                    n_bad := n_bad + cardinality(r.seqs);
                ELSE
                    all_keys := all_keys || r.nk;
                    IF r.maydel OR NOT p_rowmode THEN
                        maydel_keys := maydel_keys || r.nk;
                    END IF;
                END IF;
            END LOOP;
            RETURN;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE;
            IF pgshadow._sync_transient(e_state) THEN
                RAISE;
            END IF;
        END;
        -- (the block's quarantine rows went with it: written again next round)
        v_bad := '{}';
        FOR r IN SELECT b.seq, b.state, b.message FROM pgshadow._sync_bad_entries(p_table_id, p_sql, v_seqs) b LOOP
            PERFORM pgshadow._sync_quarantine(p_table_id, c.key, r.state,
                                              format('change log entry not readable as a key of the table: %s', r.message),
                                              NULL, 'parse')
            FROM pgshadow.change_log c WHERE c.table_id = p_table_id AND c.seq = r.seq;
            v_bad := v_bad || r.seq;
        END LOOP;
        IF cardinality(v_bad) = 0 THEN
            -- the whole set failed but no entry alone does: give up loudly
            RAISE EXCEPTION 'pgshadow: the change log entries of table % cannot be grouped', p_table_id;
        END IF;
        v_seqs := ARRAY(SELECT x FROM unnest(v_seqs) x WHERE NOT x = ANY (v_bad));
        v_total := v_total + cardinality(v_bad);
    END LOOP;
END
$fn$;

-- Fallback of one apply phase ('delete' or 'upsert') of one table whose
-- statement failed for the whole batch: find the keys it rejects by
-- bisection (each half of the failing set in its own sub-transaction,
-- recursively), so k bad keys among n cost O(k log n) sub-transactions,
-- not n (one per key would overflow the 64-entry subxact cache and slow
-- every snapshot in the cluster). Keys that failed are tried again while
-- the previous round made progress (a parent and its child in one table),
-- at most 3 rounds. Upsert keys still failing with a unique violation
-- (23505), two or more, are then deleted from the shadow (p_unstick) and
-- re-inserted together in one sub-transaction: two rows that swapped a
-- unique value apply only together. What still fails is quarantined, with
-- the error it got. p_keys are encoded keys (_sync_statements); every
-- statement runs as the table's owner. Returns the rows written, the rows
-- inserted (net of the swap's deletes) and the keys quarantined.
CREATE OR REPLACE FUNCTION pgshadow._sync_apply_keys(p_table_id integer, p_owner oid, p_phase text, p_sql text,
                                                     p_keys text[], p_unstick text,
                                                     OUT n_rows integer, OUT n_inserted integer,
                                                     OUT failed text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_state  text[] := '{}';
    v_msg    text[] := '{}';
    v_detail text[] := '{}';
    v_todo   integer[];        -- key positions to try in this round
    v_next   integer[];        -- positions that failed in this round, ascending
    v_lo     integer[];        -- stack of [lo, hi] ranges over v_todo
    v_hi     integer[];
    v_sub    text[];
    v_swap   integer[];
    v_progress boolean;
    v_round  integer := 0;
    e_state  text;
    e_msg    text;
    e_detail text;
    lo       integer;
    hi       integer;
    mid      integer;
    n        integer;
    ins      integer;
    d        integer;
BEGIN
    n_rows := 0;
    n_inserted := 0;
    failed := '{}';
    v_todo := ARRAY(SELECT generate_series(1, coalesce(cardinality(p_keys), 0)));
    v_next := '{}';
    LOOP
        EXIT WHEN cardinality(v_todo) = 0;
        v_round := v_round + 1;
        v_next := '{}';
        v_progress := false;
        -- The caller saw the whole set fail: start with its halves.
        IF v_round = 1 AND cardinality(v_todo) > 1 THEN
            mid := cardinality(v_todo) / 2;
            v_lo := ARRAY[mid + 1, 1];
            v_hi := ARRAY[cardinality(v_todo), mid];
        ELSE
            v_lo := ARRAY[1];
            v_hi := ARRAY[cardinality(v_todo)];
        END IF;
        WHILE cardinality(v_lo) > 0 LOOP
            lo := v_lo[cardinality(v_lo)];
            hi := v_hi[cardinality(v_hi)];
            v_lo := v_lo[1:cardinality(v_lo) - 1];
            v_hi := v_hi[1:cardinality(v_hi) - 1];
            v_sub := ARRAY(SELECT p_keys[g] FROM unnest(v_todo[lo:hi]) AS g);
            BEGIN
                SELECT x[1]::integer, coalesce(x[2]::integer, 0) INTO n, ins
                FROM pgshadow._sync_run(p_owner, p_sql, v_sub) x;
                n_rows := n_rows + n;
                n_inserted := n_inserted + ins;
                v_progress := true;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_msg = MESSAGE_TEXT,
                                        e_detail = PG_EXCEPTION_DETAIL;
                IF pgshadow._sync_transient(e_state) THEN
                    RAISE;
                END IF;
                IF lo = hi THEN
                    v_next := v_next || v_todo[lo];
                    v_state[v_todo[lo]] := e_state;
                    v_msg[v_todo[lo]] := e_msg;
                    v_detail[v_todo[lo]] := e_detail;
                ELSE
                    -- the lower half is popped (tried) first, so v_next stays ascending
                    mid := (lo + hi) / 2;
                    v_lo := v_lo || ARRAY[mid + 1, lo];
                    v_hi := v_hi || ARRAY[hi, mid];
                END IF;
            END;
        END LOOP;
        EXIT WHEN cardinality(v_next) = 0 OR NOT v_progress OR v_round >= 3;
        v_todo := v_next;
    END LOOP;

    -- A unique value swapped between keys of the batch: each key alone
    -- collides with the other's old shadow row.
    IF p_phase = 'upsert' AND p_unstick IS NOT NULL THEN
        v_swap := ARRAY(SELECT i FROM unnest(v_next) AS i WHERE v_state[i] = '23505');
        IF cardinality(v_swap) > 1 THEN
            v_sub := ARRAY(SELECT p_keys[g] FROM unnest(v_swap) AS g);
            BEGIN
                SELECT x[1]::integer INTO d FROM pgshadow._sync_run(p_owner, p_unstick, v_sub) x;
                SELECT x[1]::integer, x[2]::integer INTO n, ins FROM pgshadow._sync_run(p_owner, p_sql, v_sub) x;
                n_rows := n_rows + n;
                n_inserted := n_inserted + ins - d;
                v_next := ARRAY(SELECT i FROM unnest(v_next) AS i WHERE NOT i = ANY (v_swap));
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE;
                IF pgshadow._sync_transient(e_state) THEN
                    RAISE;
                END IF;
                -- undone; they are quarantined below
            END;
        END IF;
    END IF;

    FOREACH lo IN ARRAY v_next LOOP
        PERFORM pgshadow._sync_quarantine(p_table_id, p_keys[lo]::text[], v_state[lo], v_msg[lo],
                                          nullif(v_detail[lo], ''), p_phase);
        failed := failed || p_keys[lo];
    END LOOP;
END
$fn$;

-- Halt mode: the first key of the table's batch the phase statement rejects,
-- found by trying key by key inside a sub-transaction that is always undone.
-- Returns '<table>: <SQLSTATE> <message> (key ...)'.
CREATE OR REPLACE FUNCTION pgshadow._sync_halt_reason(p_table_id integer, p_owner oid, p_sql text, p_phase text,
                                                      p_keys text[], p_state text, p_msg text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_name  text;
    v_why   text;
    v_key   text;
    e_state text;
BEGIN
    -- the bare table name, as in the flags (names are unique across schemas)
    SELECT table_name INTO v_name FROM pgshadow.tables WHERE table_id = p_table_id;
    BEGIN
        FOREACH v_key IN ARRAY coalesce(p_keys, '{}') LOOP
            BEGIN
                PERFORM pgshadow._sync_run(p_owner, p_sql, ARRAY[v_key]);
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE;
                IF pgshadow._sync_transient(e_state) THEN
                    RAISE;
                END IF;
                v_why := format('%s: %s %s (key %s)', v_name, SQLSTATE, SQLERRM, v_key);
                EXIT;
            END;
        END LOOP;
        RAISE EXCEPTION USING ERRCODE = 'PSUND';   -- undo whatever the probes wrote
    EXCEPTION WHEN SQLSTATE 'PSUND' THEN
        NULL;
    END;
    RETURN coalesce(v_why, format('%s: %s %s (%s of the batch)', v_name, p_state, p_msg, p_phase));
END
$fn$;

-- The primary's row count derived from the shadow's: shadow rows, plus
-- quarantined keys the primary has and the shadow lacks (a rejected insert),
-- minus those the shadow has and the primary lacks (a rejected delete). A
-- rejected update of a row the shadow already holds counts once, not twice.
-- Exact whenever the change log of the table is drained. NULL in, NULL out.
CREATE OR REPLACE FUNCTION pgshadow._sync_primary_rows(p_table_id integer, p_owner oid, p_qcount_sql text,
                                                       p_shadow_rows bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_keys  text[];
    v_adj   text[];
    e_state text;
BEGIN
    IF p_shadow_rows IS NULL THEN
        RETURN NULL;
    END IF;
    v_keys := ARRAY(SELECT q.key::text FROM pgshadow.quarantine q
                    WHERE q.table_id = p_table_id AND q.phase IS DISTINCT FROM 'parse');
    IF cardinality(v_keys) = 0 THEN
        RETURN p_shadow_rows;
    END IF;
    BEGIN
        SELECT x INTO v_adj FROM pgshadow._sync_run(p_owner, p_qcount_sql, v_keys) x;
        RETURN p_shadow_rows + v_adj[1]::bigint - v_adj[2]::bigint;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE;
        IF pgshadow._sync_transient(e_state) THEN
            RAISE;
        END IF;
        RETURN NULL;   -- not known: the dashboard shows an estimate
    END;
END
$fn$;

-- A backend of this database holding a snapshot or a transaction older than
-- p_xid (NULL when there is none), as 'pid N (role)'. A resync (capture
-- switched back on, partitions moved) waits for them: a writer whose
-- snapshot still said "capture off" logs nothing, and its rows must be
-- committed (or gone) before the copy reads them.
CREATE OR REPLACE FUNCTION pgshadow._sync_old_xacts(p_xid xid8)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_dist bigint;
    v_who  text;
BEGIN
    IF p_xid IS NULL THEN
        RETURN NULL;
    END IF;
    -- xids older than p_xid are those whose age exceeds (next xid - p_xid)
    v_dist := pg_snapshot_xmax(pg_current_snapshot())::text::bigint - p_xid::text::bigint;
    SELECT format('pid %s (%s)', a.pid, coalesce(quote_ident(a.usename::text), '?')) INTO v_who
    FROM pg_stat_activity a
    WHERE a.pid <> pg_backend_pid()
      AND a.datid = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
      AND a.backend_type IS DISTINCT FROM 'autovacuum worker'
      AND ((a.backend_xmin IS NOT NULL AND age(a.backend_xmin) > v_dist)
           OR (a.backend_xid IS NOT NULL AND age(a.backend_xid) > v_dist))
    ORDER BY a.pid LIMIT 1;
    IF v_who IS NULL THEN
        SELECT format('prepared transaction %L', p.gid) INTO v_who
        FROM pg_prepared_xacts p
        WHERE p.database = current_database() AND age(p.transaction) > v_dist
        LIMIT 1;
    END IF;
    RETURN v_who;
END
$fn$;

-- ---------------------------------------------------------------------------
-- apply_batch
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgshadow.apply_batch(p_migration_id text, p_limit integer,
                                                p_on_error text DEFAULT 'quarantine')
RETURNS TABLE (taken integer, upserted integer, deleted integer, quarantined integer,
               truncated integer, halted text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex'
SET lock_timeout = '5s'
AS $fn$
#variable_conflict use_column
DECLARE
    v_ids      integer[];   -- the migration's tables, parents first
    v_rowmode  boolean[];
    v_tids     integer[];   -- taken entries: table_id[i], seq[i]
    v_seqs     bigint[];
    v_in       integer[];   -- tables with entries in the batch
    v_trunc    integer[];   -- tables with a 'T' entry
    -- per table position (statements and keys of the tables in the batch)
    v_owner    oid[];
    v_del      text[];
    v_ups      text[];
    v_unstick  text[];
    v_qclear   text[];
    v_qcount   text[];
    v_all      text[];      -- encoded keys of every group, as text of a text[]
    v_maydel   text[];      -- those that may have vanished
    v_halted   integer[] := '{}';
    v_why      text[] := '{}';
    v_failed   text[];      -- quarantined encoded keys, as text of a text[]
    v_dn       integer[];   -- shadow rows deleted
    v_un       integer[];   -- rows upserted
    v_in_n     integer[];   -- rows inserted (for the counts)
    v_keys     text[];
    v_defer    integer[];   -- table positions whose delete failed: retried after the upserts
    v_written  integer[];   -- tables with shadow rows written by this batch
    v_parse_q  integer := 0;
    v_state    text;
    v_msg      text;
    v_n0       bigint;
    v_o        oid;
    v_csql     text;
    v_qsql     text;
    i          integer;
    n          integer;
    ins        integer;
    r          record;
BEGIN
    IF p_on_error IS NULL OR p_on_error NOT IN ('quarantine', 'halt') THEN
        RAISE EXCEPTION 'pgshadow: on_apply_error must be quarantine or halt, not %', p_on_error
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'pgshadow: apply_batch limit must be positive, not %', p_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Reading the primary after _sync_lock needs a snapshot taken after it.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'pgshadow: apply_batch must run in a READ COMMITTED transaction, not %',
            current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    END IF;

    SELECT array_agg(t.table_id ORDER BY d.depth, t.table_id),
           array_agg(t.capture_mode = 'row' ORDER BY d.depth, t.table_id)
    INTO v_ids, v_rowmode
    FROM pgshadow.tables t JOIN pgshadow._sync_fk_depth(p_migration_id) d USING (table_id)
    WHERE t.migration_id = p_migration_id;
    IF v_ids IS NULL THEN
        RETURN QUERY SELECT 0, 0, 0, 0, 0, NULL::text;
        RETURN;
    END IF;

    -- Deferred foreign keys (finish_install copies DEFERRABLE INITIALLY
    -- DEFERRED ones) would be checked at COMMIT, outside every handler: a
    -- child taken without its parent would fail the whole call, every time.
    -- Checked at once, the row is rejected inside its sub-transaction.
    SET CONSTRAINTS ALL IMMEDIATE;
    PERFORM pgshadow._sync_lock(p_migration_id);

    -- Take: the oldest p_limit entries of the migration's tables, by seq.
    -- Each table's prefix comes from its (table_id, seq) index; the merge
    -- keeps the global order, so a transaction's entries that a parent row
    -- needs (its insert, a child's delete) come no later than the child's.
    -- No row locks: _sync_lock already makes this the only applier.
    WITH took AS (
        SELECT x.table_id, x.seq, x.op
        FROM unnest(v_ids) AS t(id)
        CROSS JOIN LATERAL (SELECT c.table_id, c.seq, c.op FROM pgshadow.change_log c
                            WHERE c.table_id = t.id ORDER BY c.seq LIMIT p_limit) x
        ORDER BY x.seq LIMIT p_limit
    )
    SELECT coalesce(array_agg(took.table_id), '{}'), coalesce(array_agg(took.seq), '{}'),
           coalesce(array_agg(DISTINCT took.table_id), '{}'),
           coalesce(array_agg(DISTINCT took.table_id) FILTER (WHERE took.op = 'T'), '{}')
    INTO v_tids, v_seqs, v_in, v_trunc
    FROM took;

    taken := cardinality(v_seqs);
    upserted := 0;
    deleted := 0;
    quarantined := 0;
    truncated := 0;
    IF taken = 0 THEN
        RETURN QUERY SELECT 0, 0, 0, 0, 0, NULL::text;
        RETURN;
    END IF;
    -- The daemon is draining: until it finds the log empty and re-arms
    -- (wakeup_arm), writers need not NOTIFY. Written only when armed, so a
    -- steady drain does not update this row batch after batch.
    UPDATE pgshadow.wakeup w SET armed = false WHERE w.migration_id = p_migration_id AND w.armed;

    -- Per table: its statements and its keys, grouped with the key type's
    -- own equality. A table whose statements cannot be built (its key type
    -- or its owner changed into something pgshadow refuses) has its
    -- entries quarantined with the reason, like entries it cannot parse.
    v_owner := array_fill(NULL::oid, ARRAY[cardinality(v_ids)]);
    v_all := array_fill(NULL::text, ARRAY[cardinality(v_ids)]);
    v_maydel := v_all; v_del := v_all; v_ups := v_all; v_unstick := v_all; v_qclear := v_all; v_qcount := v_all;
    FOR i IN 1 .. cardinality(v_ids) LOOP
        CONTINUE WHEN NOT v_ids[i] = ANY (v_in);
        BEGIN
            SELECT s.* INTO r FROM pgshadow._sync_statements(v_ids[i]) s;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            IF pgshadow._sync_transient(v_state) THEN
                RAISE;
            END IF;
            PERFORM pgshadow._sync_quarantine(v_ids[i], c.key, v_state, v_msg, NULL, 'parse')
            FROM pgshadow.change_log c
            WHERE c.table_id = v_ids[i] AND c.seq = ANY (v_seqs) AND c.key IS NOT NULL;
            GET DIAGNOSTICS n = ROW_COUNT;
            v_parse_q := v_parse_q + n;
            CONTINUE;
        END;
        PERFORM pgshadow._sync_refresh(v_ids[i], r.hash_expr, r.column_map, r.key_types);
        v_owner[i] := r.owner; v_del[i] := r.del_sql; v_ups[i] := r.ups_sql; v_unstick[i] := r.unstick_sql;
        v_qclear[i] := r.qclear_sql; v_qcount[i] := r.qcount_sql;
        SELECT p.all_keys::text, p.maydel_keys::text, p.n_bad INTO v_csql, v_qsql, n
        FROM pgshadow._sync_parse(v_ids[i], r.parse_sql, v_seqs, v_rowmode[i]) p;
        v_all[i] := v_csql;
        v_maydel[i] := v_qsql;
        v_parse_q := v_parse_q + n;
    END LOOP;

    -- Resync ('T': a TRUNCATE of the primary, capture switched back on,
    -- partitions attached or detached): the table is copied again, and the
    -- copy removes the shadow rows the primary no longer has. The shadow
    -- is not emptied here: reads may be routed to it, and other tables
    -- (also outside pgshadow) may reference it. The copy starts once every
    -- transaction older than this one has ended (see _sync_old_xacts).
    -- The batch's other entries of those tables are still applied below.
    IF cardinality(v_trunc) > 0 THEN
        UPDATE pgshadow.tables t
        SET backfill_state = 'pending', backfill_cursor = NULL, backfill_rows = 0, backfill_total = NULL,
            backfill_started_at = NULL, backfill_done_at = NULL,
            primary_rows = NULL, shadow_rows = NULL, synced_rows = NULL, counted_at = NULL,
            backfill_reconcile = true, backfill_wait_xid = pg_snapshot_xmax(pg_current_snapshot())
        WHERE t.table_id = ANY (v_trunc);
        INSERT INTO pgshadow.events (migration_id, table_name, who, what, why)
        SELECT t.migration_id, t.table_name, 'pgshadowd', 'backfill_reset',
               'TRUNCATE, capture re-enabled or partitions moved: the table is copied again and the shadow reconciled'
        FROM pgshadow.tables t WHERE t.table_id = ANY (v_trunc);
        truncated := cardinality(v_trunc);
    END IF;

    -- Apply. In halt mode a table that fails is left out and everything
    -- else is done again (its sub-transaction undone), so a halted table
    -- gets nothing of this batch.
    <<attempt>>
    LOOP
        v_failed := array_fill(NULL::text, ARRAY[cardinality(v_ids)]);
        v_dn := array_fill(0, ARRAY[cardinality(v_ids)]);
        v_un := array_fill(0, ARRAY[cardinality(v_ids)]);
        v_in_n := array_fill(0, ARRAY[cardinality(v_ids)]);
        v_defer := '{}';
        BEGIN
            -- deletes, children first
            FOR i IN REVERSE cardinality(v_ids) .. 1 LOOP
                CONTINUE WHEN coalesce(cardinality(v_maydel[i]::text[]), 0) = 0 OR v_ids[i] = ANY (v_halted);
                BEGIN
                    SELECT x[1]::integer INTO n FROM pgshadow._sync_run(v_owner[i], v_del[i], v_maydel[i]::text[]) x;
                    v_dn[i] := n;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
                    IF pgshadow._sync_transient(v_state) THEN
                        RAISE;
                    END IF;
                    -- Typically 23503: shadow children still point at some
                    -- row, and the batch's upserts may re-point them (a key
                    -- change followed by ON UPDATE CASCADE, children moved
                    -- then the parent deleted). Delete now, key by key, what
                    -- can be deleted (so an upsert that reuses a unique value
                    -- of a deleted row does not collide with it), and run the
                    -- table's delete again after the upserts: it is idempotent,
                    -- and only what fails then is quarantined (or halts).
                    SELECT k.n_rows INTO n
                    FROM pgshadow._sync_apply_keys(v_ids[i], v_owner[i], 'delete', v_del[i],
                                                   v_maydel[i]::text[], NULL) k;
                    v_dn[i] := n;
                    v_defer := v_defer || i;
                END;
            END LOOP;
            -- upserts, parents first
            FOR i IN 1 .. cardinality(v_ids) LOOP
                CONTINUE WHEN coalesce(cardinality(v_all[i]::text[]), 0) = 0 OR v_ids[i] = ANY (v_halted);
                BEGIN
                    SELECT x[1]::integer, x[2]::integer INTO n, ins
                    FROM pgshadow._sync_run(v_owner[i], v_ups[i], v_all[i]::text[]) x;
                    v_un[i] := n;
                    v_in_n[i] := ins;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
                    IF pgshadow._sync_transient(v_state) THEN
                        RAISE;
                    END IF;
                    IF p_on_error = 'halt' THEN
                        v_halted := v_halted || v_ids[i];
                        v_why := v_why || pgshadow._sync_halt_reason(v_ids[i], v_owner[i], v_ups[i], 'upsert',
                                                                     v_all[i]::text[], v_state, v_msg);
                        RAISE EXCEPTION USING ERRCODE = 'PSHLT';
                    END IF;
                    SELECT k.n_rows, k.n_inserted, k.failed INTO n, ins, v_keys
                    FROM pgshadow._sync_apply_keys(v_ids[i], v_owner[i], 'upsert', v_ups[i], v_all[i]::text[],
                                                   v_unstick[i]) k;
                    v_failed[i] := (coalesce(v_failed[i]::text[], '{}') || v_keys)::text;
                    v_un[i] := n;
                    v_in_n[i] := ins;
                END;
            END LOOP;
            -- the deletes set aside, children first (v_defer is in that
            -- order); only what fails now is quarantined (or halts)
            FOREACH i IN ARRAY v_defer LOOP
                BEGIN
                    SELECT x[1]::integer INTO n FROM pgshadow._sync_run(v_owner[i], v_del[i], v_maydel[i]::text[]) x;
                    v_dn[i] := v_dn[i] + n;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
                    IF pgshadow._sync_transient(v_state) THEN
                        RAISE;
                    END IF;
                    IF p_on_error = 'halt' THEN
                        v_halted := v_halted || v_ids[i];
                        v_why := v_why || pgshadow._sync_halt_reason(v_ids[i], v_owner[i], v_del[i], 'delete',
                                                                     v_maydel[i]::text[], v_state, v_msg);
                        RAISE EXCEPTION USING ERRCODE = 'PSHLT';
                    END IF;
                    SELECT k.n_rows, k.failed INTO n, v_keys
                    FROM pgshadow._sync_apply_keys(v_ids[i], v_owner[i], 'delete', v_del[i],
                                                   v_maydel[i]::text[], NULL) k;
                    v_dn[i] := v_dn[i] + n;
                    v_failed[i] := (coalesce(v_failed[i]::text[], '{}') || v_keys)::text;
                END;
            END LOOP;
            EXIT attempt;
        EXCEPTION WHEN SQLSTATE 'PSHLT' THEN
            NULL;   -- v_halted grew: do it again without that table
        END;
    END LOOP;

    quarantined := v_parse_q;
    -- Bookkeeping per table that was applied.
    FOR i IN 1 .. cardinality(v_ids) LOOP
        CONTINUE WHEN NOT v_ids[i] = ANY (v_in) OR v_ids[i] = ANY (v_halted) OR v_owner[i] IS NULL;
        upserted := upserted + v_un[i];
        deleted := deleted + v_dn[i];
        quarantined := quarantined + coalesce(cardinality(v_failed[i]::text[]), 0);
        -- The batch's keys that applied leave the quarantine (compared with
        -- the key's own equality; by text if a stored key no longer parses).
        IF EXISTS (SELECT 1 FROM pgshadow.quarantine q WHERE q.table_id = v_ids[i]) THEN
            v_keys := ARRAY(SELECT x FROM unnest(v_all[i]::text[]) x
                            WHERE NOT x = ANY (coalesce(v_failed[i]::text[], '{}')));
            BEGIN
                EXECUTE v_qclear[i] USING v_ids[i], v_keys;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
                IF pgshadow._sync_transient(v_state) THEN
                    RAISE;
                END IF;
                DELETE FROM pgshadow.quarantine q
                WHERE q.table_id = v_ids[i] AND q.phase IS DISTINCT FROM 'parse' AND q.key::text = ANY (v_keys);
            END;
        END IF;
        -- shadow_rows: a count at the end of the backfill plus the rows
        -- this batch inserted and deleted (cascades: below); primary_rows
        -- is derived from it (_sync_primary_rows, docs/sync.md "Counts").
        SELECT t.shadow_rows + v_in_n[i] - v_dn[i] INTO v_n0 FROM pgshadow.tables t WHERE t.table_id = v_ids[i];
        UPDATE pgshadow.tables t
        SET applied_total = t.applied_total + (SELECT count(*) FROM unnest(v_tids) x WHERE x = v_ids[i]),
            last_applied_at = now(),
            shadow_rows = v_n0,
            synced_rows = t.synced_rows + v_in_n[i] - v_dn[i],
            primary_rows = pgshadow._sync_primary_rows(v_ids[i], v_owner[i], v_qcount[i], v_n0)
        WHERE t.table_id = v_ids[i];
        IF v_un[i] + v_dn[i] > 0 THEN
            v_written := coalesce(v_written, '{}') || v_ids[i];
        END IF;
    END LOOP;

    -- Rows the shadows' own ON DELETE CASCADE removed are in no statement's
    -- row count: recount the shadows such a cascade can reach from a shadow
    -- this batch deleted from (only then, so the usual batch pays nothing).
    IF EXISTS (SELECT 1 FROM unnest(v_dn) x WHERE x > 0) THEN
        FOR r IN
            WITH RECURSIVE root AS (
                SELECT to_regclass(format('%I.%I', t.schema_name, t.shadow_name)) AS rel
                FROM pgshadow.tables t JOIN unnest(v_ids, v_dn) AS x(id, dn) ON x.id = t.table_id
                WHERE x.dn > 0 AND NOT t.table_id = ANY (v_halted)
            ), c (rel) AS (
                SELECT con.conrelid::regclass FROM root
                JOIN pg_constraint con ON con.confrelid = root.rel AND con.contype = 'f' AND con.confdeltype = 'c'
                UNION
                SELECT con.conrelid::regclass FROM c
                JOIN pg_constraint con ON con.confrelid = c.rel AND con.contype = 'f' AND con.confdeltype = 'c'
            )
            SELECT t.table_id
            FROM pgshadow.tables t
            WHERE t.migration_id = p_migration_id AND t.shadow_rows IS NOT NULL
              AND to_regclass(format('%I.%I', t.schema_name, t.shadow_name)) IN (SELECT c.rel FROM c)
        LOOP
            BEGIN
                SELECT s.owner, s.count_shadow_sql, s.qcount_sql INTO v_o, v_csql, v_qsql
                FROM pgshadow._sync_statements(r.table_id) s;
                SELECT x[1]::bigint INTO v_n0 FROM pgshadow._sync_run(v_o, v_csql) x;
                UPDATE pgshadow.tables t
                SET synced_rows = t.synced_rows + (v_n0 - t.shadow_rows), shadow_rows = v_n0,
                    primary_rows = pgshadow._sync_primary_rows(r.table_id, v_o, v_qsql, v_n0)
                WHERE t.table_id = r.table_id;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
                IF pgshadow._sync_transient(v_state) THEN
                    RAISE;
                END IF;
                UPDATE pgshadow.tables t SET shadow_rows = NULL, synced_rows = NULL, primary_rows = NULL
                WHERE t.table_id = r.table_id;   -- not known: estimates
            END;
        END LOOP;
    END IF;
    -- Keys rejected earlier for a foreign key (23503) may apply now that a
    -- table they reference, or that references them, got rows: a child
    -- whose parent arrived in a later batch (a transaction split by the
    -- take, a deferred foreign key), a parent delete whose children were
    -- re-pointed later. Re-queued as 'D' ("check both ways"), each at most
    -- once per rejection (retry_requested is cleared when it fails again),
    -- never one rejected by this very batch: no busy loop, and only while
    -- other rows are being written. The first three retries are at once
    -- (the common case: the parent is in the next batches); a key that keeps
    -- failing (a true orphan) then waits 2, 4, 8 s ... (at most ~2 h) since
    -- it last failed, so a backlog drained in full batches does not re-queue
    -- every orphan in every batch. A batch that took less than its limit
    -- (the log is drained, as far as this batch could see) re-queues them
    -- all, backoff or not: otherwise a key whose backoff was running when
    -- the last related write was applied stayed quarantined after the
    -- writes stopped, although it would now apply (seen in the chaos test).
    IF v_written IS NOT NULL THEN
        WITH w AS (
            SELECT to_regclass(format('%I.%I', t.schema_name, t.shadow_name)) AS rel
            FROM pgshadow.tables t WHERE t.table_id = ANY (v_written)
        ), rel AS (
            SELECT con.conrelid AS rel FROM pg_constraint con JOIN w ON con.confrelid = w.rel
            WHERE con.contype = 'f'
            UNION
            SELECT con.confrelid FROM pg_constraint con JOIN w ON con.conrelid = w.rel
            WHERE con.contype = 'f'
        ), q AS (
            UPDATE pgshadow.quarantine q SET retry_requested = true
            FROM pgshadow.tables t
            WHERE t.table_id = q.table_id AND t.migration_id = p_migration_id
              AND q.sqlstate = '23503' AND NOT q.retry_requested
              AND q.last_seen < now()
              AND (q.attempts <= 3 OR taken < p_limit
                   OR q.last_seen < now() - interval '1 second' * power(2, least(q.attempts - 3, 13)))
              AND NOT t.table_id = ANY (v_halted)
              AND to_regclass(format('%I.%I', t.schema_name, t.shadow_name)) IN (SELECT rel.rel FROM rel)
            RETURNING q.quarantine_id, q.table_id, q.key
        )
        INSERT INTO pgshadow.change_log (table_id, op, key)
        SELECT q.table_id, 'D', q.key FROM q ORDER BY q.quarantine_id;
    END IF;

    -- Done: exactly the taken entries go, except those of halted tables.
    -- (seqs are unique across tables: one sequence; the range and the
    -- table list let this read the (table_id, seq) index, see _sync_taken)
    DELETE FROM pgshadow.change_log c
    WHERE c.table_id = ANY (v_in) AND NOT c.table_id = ANY (v_halted)
      AND c.seq BETWEEN (SELECT min(x) FROM unnest(v_seqs) x) AND (SELECT max(x) FROM unnest(v_seqs) x)
      AND c.seq = ANY (v_seqs);

    halted := CASE WHEN cardinality(v_why) > 0 THEN array_to_string(v_why, '; ') END;
    RETURN QUERY SELECT taken, upserted, deleted, quarantined, truncated, halted;
END
$fn$;

-- ---------------------------------------------------------------------------
-- backfill_step
-- ---------------------------------------------------------------------------
-- One chunk of the first table (parents first) whose copy is not done:
-- upsert the next p_chunk primary rows in key order into the shadow, as
-- apply writes them (a row already there and equal is left alone), and
-- persist the cursor in the same transaction. A table whose shadow held
-- rows when its copy started (a resync, a shadow left from an earlier
-- install) is also reconciled: the shadow keys of each chunk's range that
-- the primary lacks are queued as 'D' entries, which apply deletes (with
-- its foreign-key ordering and quarantine). When no reads are routed to it
-- such a shadow is emptied first if it can be (no foreign key points at
-- it, its lock is free), which is cheaper than deleting row by row.
-- A resync waits, copying nothing, while a transaction older than it is
-- open (_sync_old_xacts): it returns the table with copied 0.
CREATE OR REPLACE FUNCTION pgshadow.backfill_step(p_migration_id text, p_chunk integer)
RETURNS TABLE (table_name text, copied integer, done boolean, rows_done bigint, rows_total bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex'
SET lock_timeout = '5s'
AS $fn$
#variable_conflict use_column
DECLARE
    t        pgshadow.tables;
    st       record;
    v_bound  text[];
    v_key    text[];
    v_res    text[];
    n        integer;
    v_n      integer;
    v_state  text;
    v_msg    text;
    v_detail text;
    v_prim   bigint;
    v_shad   bigint;
    v_who    text;
    v_rec    boolean;
    v_emptied boolean := false;
BEGIN
    IF p_chunk IS NULL OR p_chunk < 1 THEN
        RAISE EXCEPTION 'pgshadow: backfill chunk must be positive, not %', p_chunk
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'pgshadow: backfill_step must run in a READ COMMITTED transaction, not %',
            current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    END IF;
    SET CONSTRAINTS ALL IMMEDIATE;   -- a rejected row is quarantined, never a failed COMMIT

    -- The first table not done, parents first. A resync that must wait does
    -- so here, before the sync lock, so apply goes on meanwhile.
    SELECT r.* INTO t
    FROM pgshadow.tables r JOIN pgshadow._sync_fk_depth(p_migration_id) d USING (table_id)
    WHERE r.migration_id = p_migration_id AND r.backfill_state <> 'done'
    ORDER BY d.depth, r.table_id
    LIMIT 1;
    IF t.table_id IS NULL THEN
        RETURN;
    END IF;
    v_who := pgshadow._sync_old_xacts(t.backfill_wait_xid);
    IF v_who IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pgshadow.events e WHERE e.what = 'resync_waiting'
                       AND e.table_name = t.table_name AND e.migration_id = t.migration_id
                       AND e.after ->> 'wait_xid' = t.backfill_wait_xid::text) THEN
            INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
            VALUES (t.migration_id, t.table_name, 'pgshadowd', 'resync_waiting',
                    format('waiting for %s, older than the resync, to end', v_who),
                    jsonb_build_object('wait_xid', t.backfill_wait_xid::text, 'blocker', v_who));
        END IF;
        PERFORM pg_sleep(0.05);   -- the daemon calls again at once; apply goes first
        table_name := t.table_name; copied := 0; done := false;
        rows_done := t.backfill_rows; rows_total := t.backfill_total;
        RETURN NEXT;
        RETURN;
    END IF;

    PERFORM pgshadow._sync_lock(p_migration_id);
    SELECT r.* INTO t FROM pgshadow.tables r WHERE r.table_id = t.table_id;
    IF t.backfill_state = 'done' THEN
        -- done by another caller meanwhile: nothing copied by this call
        table_name := t.table_name; copied := 0; done := true;
        rows_done := t.backfill_rows; rows_total := t.backfill_total;
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO st FROM pgshadow._sync_statements(t.table_id);
    PERFORM pgshadow._sync_refresh(t.table_id, st.hash_expr, st.column_map, st.key_types);

    IF t.backfill_state = 'pending' OR t.backfill_started_at IS NULL THEN
        t.backfill_total := pgshadow._estimate_rows(t.schema_name, t.table_name);
        IF t.backfill_total = 0 THEN
            -- never analyzed (or empty): a count is cheap either way
            SELECT x[1]::bigint INTO t.backfill_total FROM pgshadow._sync_run(st.owner, st.count_primary_sql) x;
        END IF;
        -- A shadow that already holds rows is reconciled, not trusted.
        v_rec := t.backfill_reconcile;
        IF NOT v_rec THEN
            SELECT x[1]::boolean INTO v_rec FROM pgshadow._sync_run(st.owner, st.exists_sql) x;
        END IF;
        IF v_rec AND pgshadow.read_percent(t.table_name) = 0 THEN
            BEGIN
                PERFORM pgshadow._sync_run(st.owner, st.truncate_sql);
                v_rec := false;
                v_emptied := true;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
                IF left(v_state, 2) IN ('08', '57', 'XX') THEN
                    RAISE;
                END IF;
                -- referenced by a foreign key, lock not free, ...: reconcile row by row
            END;
        END IF;
        t.backfill_reconcile := v_rec;
        t.backfill_started_at := now();
        t.backfill_cursor := NULL;
        t.backfill_rows := 0;
        INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
        VALUES (t.migration_id, t.table_name, 'pgshadowd', 'backfill_started', NULL,
                jsonb_build_object('estimated_rows', t.backfill_total, 'chunk', p_chunk,
                                   'reconcile', v_rec, 'shadow_emptied', v_emptied));
    END IF;

    -- (cursor, bound] holds p_chunk rows; no bound: the rest of the table.
    SELECT x INTO v_bound FROM pgshadow._sync_run(st.owner, st.bf_bound_sql, t.backfill_cursor,
                                                  ARRAY[p_chunk::text]) x;
    BEGIN
        SELECT x[1]::integer INTO n FROM pgshadow._sync_run(st.owner, st.bf_copy_sql, t.backfill_cursor, v_bound) x;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
        IF pgshadow._sync_transient(v_state) THEN
            RAISE;
        END IF;
        -- one row at a time; rejected rows go to the quarantine
        n := 0;
        FOR v_key IN SELECT x FROM pgshadow._sync_run(st.owner, st.bf_keys_sql, t.backfill_cursor, v_bound) x LOOP
            BEGIN
                SELECT x[1]::integer INTO v_n FROM pgshadow._sync_run(st.owner, st.bf_row_sql, v_key) x;
                n := n + v_n;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT,
                                        v_detail = PG_EXCEPTION_DETAIL;
                IF pgshadow._sync_transient(v_state) THEN
                    RAISE;
                END IF;
                PERFORM pgshadow._sync_quarantine(t.table_id, v_key, v_state, v_msg, nullif(v_detail, ''),
                                                  'backfill');
            END;
        END LOOP;
    END;
    -- Reconcile: the shadow keys of this range the primary does not have.
    IF t.backfill_reconcile THEN
        INSERT INTO pgshadow.change_log (table_id, op, key)
        SELECT t.table_id, 'D', x FROM pgshadow._sync_run(st.owner, st.bf_extra_sql, t.backfill_cursor, v_bound) x;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        IF v_n > 0 THEN
            PERFORM pg_notify('pgshadow_changes', '');
        END IF;
    END IF;

    copied := n;
    table_name := t.table_name;
    IF v_bound IS NOT NULL THEN
        t.backfill_rows := t.backfill_rows + p_chunk;
        UPDATE pgshadow.tables r
        SET backfill_state = 'running', backfill_cursor = v_bound, backfill_rows = t.backfill_rows,
            backfill_total = greatest(t.backfill_total, t.backfill_rows),
            backfill_started_at = t.backfill_started_at, backfill_reconcile = t.backfill_reconcile
        WHERE r.table_id = t.table_id;
        done := false;
        rows_done := t.backfill_rows;
        rows_total := greatest(t.backfill_total, t.backfill_rows);
    ELSE
        -- Finished: count the shadow (apply keeps the count exact from
        -- here with the rows it inserts and deletes). The primary's count
        -- is derived, not counted (_sync_primary_rows): a count of the
        -- primary now would include changes apply has yet to make, which
        -- its deltas would then count a second time; derived, it is exact
        -- whenever the change log is drained.
        SELECT x[1]::bigint INTO v_shad FROM pgshadow._sync_run(st.owner, st.count_shadow_sql) x;
        v_prim := pgshadow._sync_primary_rows(t.table_id, st.owner, st.qcount_sql, v_shad);
        UPDATE pgshadow.tables r
        SET backfill_state = 'done', backfill_rows = coalesce(v_prim, v_shad),
            backfill_total = coalesce(v_prim, v_shad),
            backfill_started_at = t.backfill_started_at, backfill_done_at = now(),
            primary_rows = v_prim, shadow_rows = v_shad, synced_rows = v_shad, counted_at = now(),
            backfill_reconcile = false, backfill_wait_xid = NULL
        WHERE r.table_id = t.table_id;
        INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
        VALUES (t.migration_id, t.table_name, 'pgshadowd', 'backfill_done', NULL,
                jsonb_build_object('primary_rows', v_prim, 'shadow_rows', v_shad,
                                   'seconds', round(extract(epoch FROM now() - t.backfill_started_at)::numeric, 3)));
        -- Children applied while this parent was still being copied may
        -- have been rejected for a missing parent row: try them again; and
        -- every key this table has in the quarantine, whatever its error:
        -- the copy may have written rows rejected before it (a resync), and
        -- apply clears those it can write now.
        INSERT INTO pgshadow.change_log (table_id, op, key)
        SELECT q.table_id, 'D', q.key FROM pgshadow.quarantine q
        JOIN pgshadow.tables r ON r.table_id = q.table_id
        WHERE r.migration_id = p_migration_id
          AND (q.sqlstate = '23503' OR q.table_id = t.table_id)
        ORDER BY q.quarantine_id;
        IF FOUND THEN
            PERFORM pg_notify('pgshadow_changes', '');
        END IF;
        done := true;
        rows_done := coalesce(v_prim, v_shad);
        rows_total := coalesce(v_prim, v_shad);
    END IF;
    RETURN NEXT;
END
$fn$;
-- ---------------------------------------------------------------------------
-- wakeup_arm
-- ---------------------------------------------------------------------------

-- Arm the migration's wake-up flag: from this commit on, capture triggers
-- NOTIFY pgshadow_changes again (pgshadow--1.sql, pgshadow.wakeup). The
-- daemon calls it when an apply round found the change log empty, and then
-- runs one more apply round: a writer that read "disarmed" before this
-- commit and committed since is caught by that round; one that commits
-- after it is caught by the next NOTIFY of any later write, or at the latest
-- by catchup_interval (docs/sync.md).
CREATE OR REPLACE FUNCTION pgshadow.wakeup_arm(p_migration_id text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    INSERT INTO pgshadow.wakeup AS w (migration_id, armed) VALUES (p_migration_id, true)
    ON CONFLICT (migration_id) DO UPDATE SET armed = true WHERE NOT w.armed
$fn$;

-- ---------------------------------------------------------------------------
-- quarantine_retry, replication_lag_ms
-- ---------------------------------------------------------------------------

-- Re-queue quarantined keys (all when NULL) as 'D' entries ('D' means
-- "check both ways": upsert when the primary row exists, delete when it is
-- gone; an 'I'/'U' entry is never a reason to delete); the next
-- apply_batch re-reads them and removes them from the quarantine when they
-- apply. Returns how many keys were queued.
CREATE OR REPLACE FUNCTION pgshadow.quarantine_retry(p_quarantine_id bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n integer;
BEGIN
    WITH q AS (
        UPDATE pgshadow.quarantine q SET retry_requested = true
        WHERE p_quarantine_id IS NULL OR q.quarantine_id = p_quarantine_id
        RETURNING q.quarantine_id, q.table_id, q.key
    ), ins AS (
        INSERT INTO pgshadow.change_log (table_id, op, key)
        SELECT q.table_id, 'D', q.key FROM q ORDER BY q.quarantine_id
        RETURNING 1
    )
    SELECT count(*) INTO n FROM ins;
    IF n > 0 THEN
        INSERT INTO pgshadow.events (what, why, after)
        VALUES ('quarantine_retry', CASE WHEN p_quarantine_id IS NULL THEN 'all' ELSE p_quarantine_id::text END,
                jsonb_build_object('queued', n));
        PERFORM pg_notify('pgshadow_changes', '');
    END IF;
    RETURN n;
END
$fn$;

-- Replay lag of the physical standbys in ms (the largest), 0 without one;
-- NULL when pg_stat_replication hides the lag from this function's owner.
-- Logical walsenders (active on a logical slot) are not standbys.
CREATE OR REPLACE FUNCTION pgshadow.replication_lag_ms()
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE
             WHEN count(*) = 0 THEN 0::bigint
             WHEN bool_and(r.state IS NULL) THEN NULL::bigint
             ELSE coalesce(max(floor(extract(epoch FROM r.replay_lag) * 1000))::bigint, 0)
           END
    FROM pg_stat_replication r
    WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots s
                      WHERE s.active_pid = r.pid AND s.slot_type = 'logical')
$fn$;


-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE ALL ON FUNCTION pgshadow._sync_lock(text), pgshadow._sync_fk_depth(text), pgshadow._sync_statements(integer),
                       pgshadow._sync_cmp(text[], text[], text[], text[], text[], text[]),
                       pgshadow._sync_transient(text),
                       pgshadow._sync_refresh(integer, text, jsonb, text[]),
                       pgshadow._sync_quarantine(integer, text[], text, text, text, text),
                       pgshadow._sync_bad_entries(integer, text, bigint[]),
                       pgshadow._sync_parse(integer, text, bigint[], boolean),
                       pgshadow._sync_apply_keys(integer, oid, text, text, text[], text),
                       pgshadow._sync_halt_reason(integer, oid, text, text, text[], text, text),
                       pgshadow._sync_primary_rows(integer, oid, text, bigint),
                       pgshadow._sync_old_xacts(xid8),
                       pgshadow.apply_batch(text, integer, text), pgshadow.backfill_step(text, integer),
                       pgshadow.quarantine_retry(bigint), pgshadow.replication_lag_ms(),
                       pgshadow.wakeup_arm(text)
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.apply_batch(text, integer, text), pgshadow.backfill_step(text, integer),
                          pgshadow.quarantine_retry(bigint), pgshadow.replication_lag_ms(),
                          pgshadow.wakeup_arm(text)
      TO pgshadow_daemon;
GRANT EXECUTE ON FUNCTION pgshadow.quarantine_retry(bigint) TO pgshadow_operator;
GRANT EXECUTE ON FUNCTION pgshadow.replication_lag_ms() TO pgshadow_viewer;
