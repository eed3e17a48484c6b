-- 86-sampling.sql: shadow-read sampling (issue #13 item 6): a few random keys per table, read from the primary and from the shadow, compared and timed
--
-- Owns: pgshadow.read_samples (one row per sampling round per table, pruned
-- to a window), pgshadow.sample_reads (the leading daemon calls it every
-- verify.sample_interval), _sample_read, and the view pgshadow.read_sampling
-- (the window per table and per migration: the gate inputs of
-- cutover.gates.max_sample_mismatches and max_latency_ratio).
--
-- Invariants:
--  * every statement that touches a primary or shadow table runs as that
--    table's owner through pgshadow._sync_run (40-trust.sql); pgshadow's own
--    code here only reads pgshadow's tables and casts keys to trusted base
--    types with their own btree operators (pgshadow._key_spec), as
--    defer_sql does (80-sync-plan.sql);
--  * the sample never reads a whole big table: TABLESAMPLE SYSTEM of about
--    2 x p_keys pages; only a table of at most max(64, 2 x p_keys) pages is
--    read whole (ORDER BY random());
--  * a key is a mismatch only when the primary row's mapped values (the
--    canonical row hash, hash_expr over p) and the shadow row's columns
--    (shadow_hash_expr over s) differ in the timed reads AND again on one
--    snapshot that also finds no pending change_log entry of the key and
--    no quarantine of it: apply has not caught up with such a key, which
--    is lag, not a wrong shadow;
--  * read_samples keeps at most one hour and at most 360 rounds per table
--    (pruned at every round); the view counts only the last hour;
--  * every identifier reaches dynamic SQL through format('%I') / a regclass,
--    every value through a parameter;
--  * the function pins the settings the row hash and the key text depend on
--    (TimeZone, DateStyle, IntervalStyle, extra_float_digits, bytea_output),
--    as apply_batch does, so results never depend on the caller's session.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- ---------------------------------------------------------------------------
-- The rounds
-- ---------------------------------------------------------------------------
-- Here rather than in 00-schema.sql: the table, its writer, its pruning and
-- its view are one concern, and this file is the whole of it (a refresh of
-- an older install gets it from here too).
CREATE TABLE IF NOT EXISTS pgshadow.read_samples (
    sample_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    table_id       integer NOT NULL REFERENCES pgshadow.tables ON DELETE CASCADE,
    keys           integer NOT NULL,            -- keys read from both sides (and timed)
    mismatches     integer NOT NULL,            -- of those, keys whose values differ
    skipped        integer NOT NULL,            -- differing, but pending in the change log or quarantined
    mismatch_keys  text[] NOT NULL DEFAULT '{}', -- the first 10 mismatching keys, each the text of a text[]
    primary_p50_ms float8,
    primary_p99_ms float8,
    shadow_p50_ms  float8,
    shadow_p99_ms  float8,
    -- every key's read time, in sampling order (both sides at the same
    -- index): the view's percentiles over the window are exact, not
    -- percentiles of per-round percentiles. At most 1000 keys x 360 rounds.
    primary_ms     float8[] NOT NULL DEFAULT '{}',
    shadow_ms      float8[] NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS read_samples_table_idx ON pgshadow.read_samples (table_id, sample_id);

-- ---------------------------------------------------------------------------
-- One timed read
-- ---------------------------------------------------------------------------
-- Run p_sql (one row of {hash}, or none) as p_owner for key p_key; the hash
-- (NULL when the row is not there) and the milliseconds of the _sync_run
-- call alone. Both sides go through this very path (the owner function,
-- one EXECUTE, one index lookup, one row hash), so pgshadow's own overhead
-- is the same on both and cancels in the ratio, which it also dampens:
-- absolute times include it.
CREATE OR REPLACE FUNCTION pgshadow._sample_read(p_owner oid, p_sql text, p_key text[],
                                                 OUT hash text, OUT ms float8)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_t0 timestamptz;
BEGIN
    v_t0 := clock_timestamp();
    SELECT x[1] INTO hash FROM pgshadow._sync_run(p_owner, p_sql, p_key) x;
    ms := extract(epoch FROM clock_timestamp() - v_t0)::float8 * 1000;
END
$fn$;

-- ---------------------------------------------------------------------------
-- The window, per table and per migration
-- ---------------------------------------------------------------------------
-- In schema pgshadow, not in public beside the seed's two dashboard views:
-- public holds only the names the seed gave (which applications already
-- query); a view pgshadow adds there could collide with a user's object
-- and would need the created_view bookkeeping of 70-dashboard.sql, while a
-- view in pgshadow is pgshadow's by construction and leaves with the
-- schema at uninstall. Rows with table_name NULL are the migration as a
-- whole (GROUPING SETS). Ratios are shadow / primary of the percentiles
-- over every key read in the window; NULL while the primary's is 0.
CREATE OR REPLACE VIEW pgshadow.read_sampling AS
WITH w AS (
    SELECT t.migration_id, t.table_name, r.*
    FROM pgshadow.read_samples r
    JOIN pgshadow.tables t ON t.table_id = r.table_id
    WHERE r.at > now() - interval '1 hour'
), rounds AS (
    SELECT w.migration_id, w.table_name,
           count(*) AS rounds,
           sum(w.keys)::bigint AS keys_sampled,
           sum(w.mismatches)::bigint AS mismatches,
           sum(w.skipped)::bigint AS skipped,
           max(w.at) AS last_sampled_at
    FROM w
    GROUP BY GROUPING SETS ((w.migration_id, w.table_name), (w.migration_id))
), lat AS (
    SELECT w.migration_id, w.table_name,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY l.p) AS primary_p50_ms,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY l.p) AS primary_p99_ms,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY l.s) AS shadow_p50_ms,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY l.s) AS shadow_p99_ms
    FROM w
    CROSS JOIN LATERAL unnest(w.primary_ms, w.shadow_ms) AS l(p, s)
    GROUP BY GROUPING SETS ((w.migration_id, w.table_name), (w.migration_id))
)
SELECT r.migration_id,
       r.table_name,
       r.rounds,
       r.keys_sampled,
       r.mismatches,
       r.skipped,
       round(l.primary_p50_ms::numeric, 3) AS primary_p50_ms,
       round(l.primary_p99_ms::numeric, 3) AS primary_p99_ms,
       round(l.shadow_p50_ms::numeric, 3) AS shadow_p50_ms,
       round(l.shadow_p99_ms::numeric, 3) AS shadow_p99_ms,
       round((l.shadow_p50_ms / nullif(l.primary_p50_ms, 0))::numeric, 3) AS p50_ratio,
       round((l.shadow_p99_ms / nullif(l.primary_p99_ms, 0))::numeric, 3) AS p99_ratio,
       r.last_sampled_at
FROM rounds r
LEFT JOIN lat l ON l.migration_id = r.migration_id AND l.table_name IS NOT DISTINCT FROM r.table_name;

-- ---------------------------------------------------------------------------
-- sample_reads
-- ---------------------------------------------------------------------------
-- One sampling round of migration p_migration_id: for every table whose
-- backfill is done, up to p_keys random keys of the primary, each read from
-- the primary (its mapped values: hash_expr over p) and from the shadow
-- (its columns: shadow_hash_expr over s) with the same query shape, both
-- timed; a row of read_samples per table, pruned to the window. Returns a
-- row per table sampled (the round's figures, and the table's window), and
-- one with table_name NULL: the migration's round and window (its
-- window_mismatches and window_p99_ratio are the gate inputs). Keys are
-- sampled from the primary, so a shadow row whose key the primary lacks is
-- not seen here (verify finds those).
CREATE OR REPLACE FUNCTION pgshadow.sample_reads(p_migration_id text, p_keys integer)
RETURNS TABLE (table_name text, keys integer, mismatches integer, skipped integer, mismatch_keys text[],
               primary_p50_ms float8, primary_p99_ms float8, shadow_p50_ms float8, shadow_p99_ms float8,
               window_mismatches bigint, window_p99_ratio numeric)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex'
SET lock_timeout = '5s'
AS $fn$
#variable_conflict use_column
DECLARE
    t          pgshadow.tables;
    st         record;
    v_prel     regclass;
    v_primary  text;
    v_shadow   text;
    v_pkey     text;     -- ARRAY[(p.<key>)::text, ...]: the encoded key of primary row p
    v_peq      text;     -- p.<key> = ($1[i])::type
    v_seq      text;     -- s.<key> = ($1[i])::type
    v_ceq      text;     -- (c.key[i])::type = ($2[i])::type, change_log entry c
    v_qeq      text;     -- the same for quarantine row q
    v_n        integer;
    v_pages    float8;
    v_pct      float8;
    v_sample   text;
    v_pread    text;
    v_sread    text;
    v_pending  text;
    v_judge    text;     -- both sides and v_pending, on one snapshot
    v_differs  boolean;
    v_keys     text[];   -- the sample: encoded keys
    v_key      text[];
    v_p        record;
    v_s        record;
    v_excused  boolean;
    v_pms      float8[];
    v_sms      float8[];
    v_mism     integer;
    v_skip     integer;
    v_mkeys    text[];
    v_total_k  integer := 0;
    v_total_m  integer := 0;
    v_total_s  integer := 0;
    v_done     integer[] := '{}';
BEGIN
    IF pgshadow._promoted(p_migration_id) THEN
        RETURN;   -- promoted: its names mean the new tables now (88-promote.sql)
    END IF;
    IF p_keys IS NULL OR p_keys < 1 OR p_keys > 1000 THEN
        RAISE EXCEPTION 'pgshadow: sample keys must be 1..1000, not %', p_keys
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR t IN SELECT r.* FROM pgshadow.tables r
             WHERE r.migration_id = p_migration_id AND r.backfill_state = 'done'
             ORDER BY r.table_id LOOP
        -- owner (and the check that the shadow has the same one) and the
        -- live row hash, as apply builds them
        SELECT * INTO st FROM pgshadow._sync_statements(t.table_id);
        v_primary := format('%I.%I', t.schema_name, t.table_name);
        v_shadow := format('%I.%I', t.schema_name, t.shadow_name);
        v_prel := to_regclass(v_primary);
        SELECT 'ARRAY[' || string_agg(format('(p.%I)::text', ks.col), ', ' ORDER BY ks.o) || ']',
               string_agg(format('p.%I %s ($1[%s])::%s%s', ks.col, ks.eq, ks.o, ks.typ, ks.coll), ' AND ' ORDER BY ks.o),
               string_agg(format('s.%I %s ($1[%s])::%s%s', ks.col, ks.eq, ks.o, ks.typ, ks.coll), ' AND ' ORDER BY ks.o),
               string_agg(format('(c.key[%s])::%s%s %s ($2[%s])::%s%s', ks.o, ks.typ, ks.coll, ks.eq, ks.o, ks.typ, ks.coll),
                          ' AND ' ORDER BY ks.o),
               string_agg(format('(q.key[%s])::%s%s %s ($2[%s])::%s%s', ks.o, ks.typ, ks.coll, ks.eq, ks.o, ks.typ, ks.coll),
                          ' AND ' ORDER BY ks.o),
               count(*)
        INTO v_pkey, v_peq, v_seq, v_ceq, v_qeq, v_n
        FROM pgshadow._key_spec(v_prel, t.key_columns) ks;
        -- The same shape on both sides: one row by key, its canonical hash.
        v_pread := format('SELECT ARRAY[%s] FROM %s AS p WHERE %s', st.hash_expr, v_primary, v_peq);
        v_sread := format('SELECT ARRAY[%s] FROM %s AS s WHERE %s', t.shadow_hash_expr, v_shadow, v_seq);
        -- pgshadow's own code: a pending change of the key (a 'T' entry,
        -- key NULL, covers every key), or the key quarantined
        v_pending := format('SELECT EXISTS (SELECT 1 FROM pgshadow.change_log c WHERE c.table_id = $1 '
                            'AND (c.key IS NULL OR (cardinality(c.key) = %s AND array_position(c.key, NULL) IS NULL '
                            'AND %s))) OR EXISTS (SELECT 1 FROM pgshadow.quarantine q WHERE q.table_id = $1 '
                            'AND q.phase IS DISTINCT FROM ''parse'' AND cardinality(q.key) = %s '
                            'AND array_position(q.key, NULL) IS NULL AND %s)',
                            v_n, v_ceq, v_n, v_qeq);
        -- One statement, so one snapshot (_sync_read is STABLE: it reads
        -- on the statement's): $1 table_id, $2 key, $3 owner, $4/$5 the reads.
        v_judge := format('SELECT (SELECT x[1] FROM pgshadow._sync_read($3, $4, $2) x) IS DISTINCT FROM '
                          '(SELECT x[1] FROM pgshadow._sync_read($3, $5, $2) x), (%s)', v_pending);

        -- The sample. Pages from the files themselves (cheap, right even
        -- when the table was never analyzed); a partitioned table's are its
        -- leaves'. SYSTEM reads whole pages, about 2 x p_keys of them, and
        -- ORDER BY random() spreads the keys over them; BERNOULLI would read
        -- every page. Taken again at 8 x the fraction when too few came back.
        SELECT coalesce(sum(pg_relation_size(pt.relid)), 0) / current_setting('block_size')::float8
        INTO v_pages
        FROM pgshadow._rel_tree(v_prel) pt WHERE pt.isleaf;
        IF v_pages <= greatest(64, 2 * p_keys) THEN
            v_sample := format('SELECT %s FROM %s AS p ORDER BY random() LIMIT ($1[1])::integer', v_pkey, v_primary);
            SELECT array_agg(x::text) INTO v_keys
            FROM pgshadow._sync_run(st.owner, v_sample, ARRAY[p_keys::text]) x;
        ELSE
            v_sample := format('SELECT %s FROM %s AS p TABLESAMPLE SYSTEM (($1[2])::float8) '
                               'ORDER BY random() LIMIT ($1[1])::integer', v_pkey, v_primary);
            v_pct := least(100.0, 100.0 * 2 * p_keys / v_pages);
            FOR attempt IN 1 .. 2 LOOP
                SELECT array_agg(x::text) INTO v_keys
                FROM pgshadow._sync_run(st.owner, v_sample, ARRAY[p_keys::text, v_pct::text]) x;
                EXIT WHEN coalesce(cardinality(v_keys), 0) >= p_keys OR v_pct >= 100;
                v_pct := least(100.0, v_pct * 8);
            END LOOP;
        END IF;
        v_keys := coalesce(v_keys, '{}');

        v_pms := '{}'; v_sms := '{}'; v_mism := 0; v_skip := 0; v_mkeys := '{}';
        FOR i IN 1 .. cardinality(v_keys) LOOP
            v_key := v_keys[i]::text[];
            -- Alternate which side is read first, key by key: the first
            -- read of a key pays for what the second may find warm (the
            -- owner function's lookup, the catalog and plan caches, CPU
            -- caches, a shared heap page of a TOASTed value), so always
            -- reading one side first would bias the comparison toward the
            -- other; alternating puts that cost on each side for half the
            -- keys, and it cancels in the percentiles.
            IF i % 2 = 1 THEN
                SELECT * INTO v_p FROM pgshadow._sample_read(st.owner, v_pread, v_key);
                SELECT * INTO v_s FROM pgshadow._sample_read(st.owner, v_sread, v_key);
            ELSE
                SELECT * INTO v_s FROM pgshadow._sample_read(st.owner, v_sread, v_key);
                SELECT * INTO v_p FROM pgshadow._sample_read(st.owner, v_pread, v_key);
            END IF;
            v_pms := v_pms || v_p.ms;
            v_sms := v_sms || v_s.ms;
            CONTINUE WHEN v_p.hash IS NOT DISTINCT FROM v_s.hash;
            -- Different. Each read above had its own snapshot: a write and
            -- its apply may have committed between them (or between a
            -- second pair of reads and a look at the change log after
            -- them: apply deletes the entry it applied). So both sides and
            -- the key's pending entry are looked at again on ONE snapshot,
            -- untimed: a write commits with its change log entry, and apply
            -- writes the shadow and deletes the entry in one transaction,
            -- so there a key that differs with nothing pending is a wrong
            -- shadow. A key apply has not caught up with is lag; a
            -- quarantined key is reported as such already; a change log
            -- key that does not parse (quarantined by the next apply)
            -- excuses the key too.
            BEGIN
                EXECUTE v_judge INTO v_differs, v_excused USING t.table_id, v_key, st.owner, v_pread, v_sread;
            EXCEPTION WHEN data_exception THEN
                v_differs := true;
                v_excused := true;
            END;
            CONTINUE WHEN NOT v_differs;
            IF v_excused THEN
                v_skip := v_skip + 1;
            ELSE
                v_mism := v_mism + 1;
                IF cardinality(v_mkeys) < 10 THEN
                    v_mkeys := v_mkeys || v_keys[i];
                END IF;
            END IF;
        END LOOP;

        INSERT INTO pgshadow.read_samples (table_id, keys, mismatches, skipped, mismatch_keys,
                                           primary_p50_ms, primary_p99_ms, shadow_p50_ms, shadow_p99_ms,
                                           primary_ms, shadow_ms)
        SELECT t.table_id, cardinality(v_keys), v_mism, v_skip, v_mkeys,
               (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM unnest(v_pms) x),
               (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY x) FROM unnest(v_pms) x),
               (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM unnest(v_sms) x),
               (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY x) FROM unnest(v_sms) x),
               v_pms, v_sms;
        -- The window: the last hour, and at most 360 rounds of the table
        -- (an hour at the default 10 s interval).
        DELETE FROM pgshadow.read_samples r
        WHERE r.table_id = t.table_id
          AND (r.at < clock_timestamp() - interval '1 hour'
               OR r.sample_id <= (SELECT x.sample_id FROM pgshadow.read_samples x WHERE x.table_id = t.table_id
                                  ORDER BY x.sample_id DESC OFFSET 360 LIMIT 1));
        v_done := v_done || t.table_id;
        v_total_k := v_total_k + cardinality(v_keys);
        v_total_m := v_total_m + v_mism;
        v_total_s := v_total_s + v_skip;
    END LOOP;

    RETURN QUERY
    SELECT t.table_name, r.keys, r.mismatches, r.skipped, r.mismatch_keys,
           r.primary_p50_ms, r.primary_p99_ms, r.shadow_p50_ms, r.shadow_p99_ms,
           v.mismatches, v.p99_ratio
    FROM pgshadow.tables t
    JOIN LATERAL (SELECT x.* FROM pgshadow.read_samples x WHERE x.table_id = t.table_id
                  ORDER BY x.sample_id DESC LIMIT 1) r ON true
    LEFT JOIN pgshadow.read_sampling v ON v.migration_id = t.migration_id AND v.table_name = t.table_name
    WHERE t.table_id = ANY (v_done)
    ORDER BY t.table_id;
    RETURN QUERY
    SELECT NULL::text, v_total_k, v_total_m, v_total_s, NULL::text[],
           NULL::float8, NULL::float8, NULL::float8, NULL::float8,
           coalesce(v.mismatches, 0), v.p99_ratio
    FROM (SELECT 1) one
    LEFT JOIN pgshadow.read_sampling v ON v.migration_id = p_migration_id AND v.table_name IS NULL;
END
$fn$;


-- The cutover's sampling gates (issue #14): one migration's rounds that
-- ended in the last p_window, as one row: rounds, keys read, mismatches,
-- and the shadow/primary p99 ratio over every key read in it (NULL while
-- unknown). A shorter window than the view's hour: a gate must turn green
-- again once a mismatch is repaired, and red at once when one is found.
-- Read by the dashboard poller in its one statement (src/monitor/poller.c).
CREATE OR REPLACE FUNCTION pgshadow.sampling_window(p_migration_id text, p_window interval)
RETURNS TABLE (rounds bigint, keys_sampled bigint, mismatches bigint, p99_ratio float8,
               last_sampled_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH w AS (
        SELECT r.*
        FROM pgshadow.read_samples r
        JOIN pgshadow.tables t ON t.table_id = r.table_id
        WHERE t.migration_id = p_migration_id AND r.at > now() - p_window
    ), lat AS (
        SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY l.p) AS p99p,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY l.s) AS p99s
        FROM w CROSS JOIN LATERAL unnest(w.primary_ms, w.shadow_ms) AS l(p, s)
    )
    SELECT count(*), coalesce(sum(w.keys), 0)::bigint, coalesce(sum(w.mismatches), 0)::bigint,
           (SELECT lat.p99s / nullif(lat.p99p, 0) FROM lat), max(w.at)
    FROM w
$fn$;

-- Privileges
REVOKE ALL ON pgshadow.read_samples FROM PUBLIC;
REVOKE ALL ON pgshadow.read_sampling FROM PUBLIC;
REVOKE ALL ON FUNCTION pgshadow._sample_read(oid, text, text[]),
                       pgshadow.sample_reads(text, integer)
       FROM PUBLIC;
GRANT SELECT ON pgshadow.read_samples, pgshadow.read_sampling TO pgshadow_viewer, pgshadow_daemon;
GRANT EXECUTE ON FUNCTION pgshadow.sample_reads(text, integer) TO pgshadow_daemon;
REVOKE ALL ON FUNCTION pgshadow.sampling_window(text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.sampling_window(text, interval) TO pgshadow_viewer, pgshadow_daemon;
