-- 85-verify.sql: verify and repair: primary against shadow, chunk by chunk
-- and key by key, both sides digested in the database
--
-- Owns: the tables verify_settings, verify_passes, verify_ranges,
-- verify_queue, divergence and their rows; verify_configure, verify_start,
-- verify_step, verify_recheck (the daemon's verifier calls them);
-- validate_shadow_consistency and validate_record_hash (people at psql).
--
-- Over 800 lines because it is one concern whose parts share their rules:
-- the pass, the second look that judges the pass's suspects, the repair
-- and the psql checks all read through the same statement texts and the
-- same one-snapshot rule; split, each file would restate them.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.
--
-- How (docs/verify.md):
--  * a pass cuts every table into key ranges (_sync_cut_keys, as the
--    backfill does) and the daemon's verify workers take chunks of them
--    (verify_step): per chunk ONE statement digests both sides, count and
--    sum of a 64-bit hash per row (a sum, not an XOR: equal rows in pairs
--    do not cancel), the primary's row from its mapped columns cast to the
--    shadow's types, the shadow's from its own columns (a row edited by
--    hand is caught whatever its stored _shadow_validation_hash says);
--  * only a chunk whose digests differ is compared row by row, and each
--    differing key is queued (verify_queue) with what it looked like;
--  * "differs" is judged together with "has a pending change" on ONE
--    snapshot: the owner's read runs through _sync_read (STABLE, the
--    caller's snapshot) inside the statement that also reads the change
--    log. In any snapshot a key without a pending entry (and not
--    quarantined) has shadow = mapped primary; a key with one is left to
--    apply and looked at again after it;
--  * no key is reported on first sight: verify_recheck looks again, on a
--    new snapshot, at least PS_RECHECK (1 s) later; only a key that still
--    differs with nothing pending is a divergence. Keys apply wrote are
--    queued too (incremental verify, Ghostferry's reverify set), so the
--    cost after N changes grows with N, not with the table;
--  * repair queues the key into the change log ('D': apply deletes or
--    upserts it, whichever the primary says) - apply is the one write
--    path - and looks again after it; three repairs that do not hold and
--    the key is reported (event, warning) and left alone.
--
-- Invariants:
--  * every statement on a primary or shadow runs as its owner
--    (_sync_run / _sync_read); the reads cannot write (STABLE);
--  * the row digest is exact: record_send's binary image of the row, so
--    citext 'A' vs 'a', numeric 1.0 vs 1.00, float -0 vs 0 differ, and it
--    does not depend on the session's DateStyle or TimeZone;
--  * verify never writes a shadow column but _shadow_sync_status, and
--    that only on a row still as it was seen.

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

-- Per migration, what the daemon configured: apply queues the keys it
-- writes for another look only while incremental is on (verify.interval > 0).
CREATE TABLE IF NOT EXISTS pgshadow.verify_settings (
    migration_id text PRIMARY KEY,
    incremental  boolean NOT NULL DEFAULT false,
    repair       boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per pass; at most one open (finished_at NULL) per migration.
CREATE TABLE IF NOT EXISTS pgshadow.verify_passes (
    pass_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    migration_id text NOT NULL,
    table_name   text,                        -- NULL: every table of the migration
    requested_by text NOT NULL,               -- 'interval' or the role that asked (pgshadowctl verify)
    command_ids  bigint[] NOT NULL DEFAULT '{}',  -- the verify commands this pass answers
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,
    skipped      text[] NOT NULL DEFAULT '{}',    -- tables left out: their backfill is not done
    result       jsonb,
    summary      text
);
CREATE UNIQUE INDEX IF NOT EXISTS verify_passes_open ON pgshadow.verify_passes (migration_id)
    WHERE finished_at IS NULL;

-- A pass's key ranges (lo, hi] (NULL: open end), each with its cursor.
CREATE TABLE IF NOT EXISTS pgshadow.verify_ranges (
    pass_id       bigint NOT NULL REFERENCES pgshadow.verify_passes ON DELETE CASCADE,
    table_id      integer NOT NULL REFERENCES pgshadow.tables ON DELETE CASCADE,
    range_no      integer NOT NULL,
    lo            text[],
    hi            text[],
    cursor        text[],
    done          boolean NOT NULL DEFAULT false,
    rows          bigint NOT NULL DEFAULT 0,
    chunks        integer NOT NULL DEFAULT 0,
    chunks_differ integer NOT NULL DEFAULT 0,
    suspects      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (pass_id, table_id, range_no)
);

-- Keys to look at (again): found differing by a pass, written by apply,
-- repaired. UNLOGGED: a crash of the server empties it, and the next pass
-- finds again whatever it held (apply's keys are only a shortcut).
-- No unique key: a key queued twice is looked at twice, never lost.
CREATE UNLOGGED TABLE IF NOT EXISTS pgshadow.verify_queue (
    entry_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_id integer NOT NULL,
    key      text[] NOT NULL,
    source   text NOT NULL CHECK (source IN ('pass', 'apply', 'repair', 'diverged')),
    pass_id  bigint,
    looks    integer NOT NULL DEFAULT 0,   -- consecutive looks that found it differing, nothing pending
    tries    integer NOT NULL DEFAULT 0,   -- looks that found a change pending
    due      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS verify_queue_due ON pgshadow.verify_queue (due);

-- Every key found diverged: why, since when, how often repaired.
CREATE TABLE IF NOT EXISTS pgshadow.divergence (
    divergence_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_id      integer NOT NULL REFERENCES pgshadow.tables ON DELETE CASCADE,
    key           text[] NOT NULL,
    reason        text NOT NULL CHECK (reason IN ('value_differs', 'missing_in_shadow', 'extra_in_shadow')),
    state         text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'repaired', 'unrepaired')),
    found_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_seen     timestamptz NOT NULL DEFAULT clock_timestamp(),
    found_by      text NOT NULL,         -- 'pass', 'apply', 'repair', 'diverged' (the queue's source)
    pass_id       bigint,
    repairs       integer NOT NULL DEFAULT 0,
    resolved_at   timestamptz,
    UNIQUE (table_id, key)
);

-- ---------------------------------------------------------------------------
-- Statement texts
-- ---------------------------------------------------------------------------

-- The row digest of a row as verify sees it: hash_record_extended, a
-- 64-bit value, over the row's columns in column_map order: for the primary
-- (alias p) the mapped columns cast to the shadow's column types, for the
-- shadow (alias s) its own columns. A column is hashed as itself when its
-- type's hash is exact (equal hashes input only for identical values:
-- integers, oid, bool, date, time, timestamps, uuid, bytea; text and
-- varchar in the C collation, which hashes their bytes, whatever collation
-- either side's column has); every other column (numeric,
-- floats, jsonb, intervals, citext, char(n), arrays, domains, ...) through
-- its binary image (record_send, one bytea for all of them), so that values
-- its type's equality calls equal but that differ (1.0 and 1.00, -0 and 0,
-- 'A' and 'a' in citext) differ here. A type without a binary output
-- function is hashed by its text, in the C collation. Several times cheaper
-- than the canonical sha256 of the row's text (docs/verify.md).
CREATE OR REPLACE FUNCTION pgshadow._verify_digest(p_srel regclass, p_map jsonb, p_primary boolean)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH c AS (
        SELECT o, CASE WHEN p_primary THEN format('(%s)::%s', m ->> 'expr', format_type(a.atttypid, a.atttypmod))
                       ELSE format('s.%I', m ->> 'shadow') END AS v,
               CASE WHEN a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'oid'::regtype,
                                        'bool'::regtype, 'date'::regtype, 'time'::regtype, 'timestamp'::regtype,
                                        'timestamptz'::regtype, 'uuid'::regtype, 'bytea'::regtype)
                    THEN 'exact'
                    WHEN a.atttypid IN ('text'::regtype, 'varchar'::regtype) THEN 'exact text'
                    WHEN ty.typsend <> 0 THEN 'send'
                    ELSE 'text' END AS how
        FROM jsonb_array_elements(p_map) WITH ORDINALITY AS x(m, o)
        JOIN pg_attribute a ON a.attrelid = p_srel AND a.attname = m ->> 'shadow' AND a.attnum > 0
                           AND NOT a.attisdropped
        JOIN pg_type ty ON ty.oid = a.atttypid
    )
    SELECT format('hash_record_extended(ROW(%s), 0)',
                  concat_ws(', ',
                            string_agg(CASE WHEN c.how = 'exact' THEN c.v ELSE format('(%s COLLATE "C")', c.v) END,
                                       ', ' ORDER BY o) FILTER (WHERE c.how LIKE 'exact%'),
                            'record_send(ROW(' || string_agg(c.v, ', ' ORDER BY o) FILTER (WHERE c.how = 'send') || '))',
                            string_agg(format('((%s)::text COLLATE "C")', c.v), ', ' ORDER BY o)
                                FILTER (WHERE c.how = 'text'),
                            -- a row of one type only still hashes a constant with it
                            '0'))
    FROM c
$fn$;

-- The statement texts verify runs as the owner of table p_table_id (all
-- reads, through _sync_read; mark_sql through _sync_run). Each row they
-- return is {reason, the shadow row's digest (NULL: none), encoded key}
-- for a key whose two sides differ; reason is value_differs,
-- missing_in_shadow or extra_in_shadow.
--   bound_sql  ($1 cursor, $2 {n}) the n-th key after the cursor (backfill's)
--   digest_sql ($1 lo, $2 hi) {primary "count:sum", shadow "count:sum"} of (lo, hi]
--   diff_sql   ($1 lo, $2 hi) the differing keys of (lo, hi]
--   check_sql  ($1 encoded keys) the differing keys among them
--   mark_sql   ($1 encoded keys, $2 their shadow digests) sets
--              _shadow_sync_status = 'diverged' on those shadow rows still
--              as they were seen -> {rows}
CREATE OR REPLACE FUNCTION pgshadow._verify_sql(p_table_id integer,
    OUT owner oid, OUT bound_sql text, OUT digest_sql text, OUT diff_sql text, OUT check_sql text,
    OUT mark_sql text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t        pgshadow.tables;
    st       record;
    v_prel   regclass;
    v_srel   regclass;
    v_pdig   text; v_sdig text;
    v_pk     text; v_sk text; v_penc text; v_senc text; v_on text;
    v_bk     text; v_pjoin text; v_sjoin text;
    v_pl     text[]; v_sl text[]; v_cur text[]; v_bnd text[];
    v_gt     text[]; v_lt text[]; v_le text[]; v_eq text[]; v_ns text[];
    v_prange text; v_srange text; v_reason text;
BEGIN
    SELECT * INTO STRICT t FROM pgshadow.tables WHERE table_id = p_table_id;
    -- (refuses a table or shadow gone, or owned by two roles; the column
    -- map with the shadow's types as they are now)
    SELECT * INTO st FROM pgshadow._sync_statements(p_table_id);
    owner := st.owner;
    bound_sql := st.bf_bound_sql;
    v_prel := to_regclass(format('%I.%I', t.schema_name, t.table_name));
    v_srel := to_regclass(format('%I.%I', t.schema_name, t.shadow_name));
    v_pdig := pgshadow._verify_digest(v_srel, st.column_map, true);
    v_sdig := pgshadow._verify_digest(v_srel, st.column_map, false);

    SELECT string_agg(format('p.%I AS k%s', ks.col, ks.o), ', ' ORDER BY ks.o),
           string_agg(format('s.%I AS k%s', ks.col, ks.o), ', ' ORDER BY ks.o),
           '(ARRAY[' || string_agg(format('(p.%I)::text', ks.col), ', ' ORDER BY ks.o) || '])::text',
           '(ARRAY[' || string_agg(format('(s.%I)::text', ks.col), ', ' ORDER BY ks.o) || '])::text',
           string_agg(format('p.k%s %s s.k%s', ks.o, ks.eq, ks.o), ' AND ' ORDER BY ks.o),
           string_agg(format('((u.x::text[])[%s])::%s%s AS k%s', ks.o, ks.typ, ks.coll, ks.o), ', ' ORDER BY ks.o),
           string_agg(format('p.%I %s b.k%s', ks.col, ks.eq, ks.o), ' AND ' ORDER BY ks.o),
           string_agg(format('s.%I %s b.k%s', ks.col, ks.eq, ks.o), ' AND ' ORDER BY ks.o),
           array_agg(format('p.%I', ks.col) ORDER BY ks.o),
           array_agg(format('s.%I', ks.col) ORDER BY ks.o),
           array_agg(format('($1[%s])::%s%s', ks.o, ks.typ, ks.coll) ORDER BY ks.o),
           array_agg(format('($2[%s])::%s%s', ks.o, ks.typ, ks.coll) ORDER BY ks.o),
           array_agg(ks.gt ORDER BY ks.o), array_agg(ks.lt ORDER BY ks.o), array_agg(ks.le ORDER BY ks.o),
           array_agg(ks.eq ORDER BY ks.o), array_agg(ks.ns ORDER BY ks.o)
    INTO v_pk, v_sk, v_penc, v_senc, v_on, v_bk, v_pjoin, v_sjoin, v_pl, v_sl, v_cur, v_bnd,
         v_gt, v_lt, v_le, v_eq, v_ns
    FROM pgshadow._key_spec(v_prel, t.key_columns) ks;
    v_prange := format('($1 IS NULL OR %s) AND ($2 IS NULL OR %s)',
                       pgshadow._sync_cmp(v_pl, v_cur, v_gt, v_gt, v_eq, v_ns),
                       pgshadow._sync_cmp(v_pl, v_bnd, v_lt, v_le, v_eq, v_ns));
    v_srange := format('($1 IS NULL OR %s) AND ($2 IS NULL OR %s)',
                       pgshadow._sync_cmp(v_sl, v_cur, v_gt, v_gt, v_eq, v_ns),
                       pgshadow._sync_cmp(v_sl, v_bnd, v_lt, v_le, v_eq, v_ns));
    v_reason := 'CASE WHEN p.h IS NULL THEN ''extra_in_shadow'' WHEN s.h IS NULL THEN ''missing_in_shadow'' '
                'ELSE ''value_differs'' END';

    digest_sql := format('SELECT ARRAY[(SELECT count(*)::text || '':'' || coalesce(sum(%s), 0)::text FROM %s AS p WHERE %s), '
                         '(SELECT count(*)::text || '':'' || coalesce(sum(%s), 0)::text FROM %s AS s WHERE %s)]',
                         v_pdig, v_prel, v_prange, v_sdig, v_srel, v_srange);
    diff_sql := format('SELECT ARRAY[%s, s.h::text, coalesce(p.enc, s.enc)] '
                       'FROM (SELECT %s, %s AS enc, %s AS h FROM %s AS p WHERE %s) p '
                       'FULL JOIN (SELECT %s, %s AS enc, %s AS h FROM %s AS s WHERE %s) s ON %s '
                       'WHERE p.h IS DISTINCT FROM s.h',
                       v_reason, v_pk, v_penc, v_pdig, v_prel, v_prange,
                       v_sk, v_senc, v_sdig, v_srel, v_srange, v_on);
    check_sql := format('WITH b AS (SELECT u.x AS enc, %s FROM unnest($1) AS u(x)) '
                        'SELECT ARRAY[%s, s.h::text, b.enc] FROM b '
                        'LEFT JOIN LATERAL (SELECT %s AS h FROM %s AS p WHERE %s) p ON true '
                        'LEFT JOIN LATERAL (SELECT %s AS h FROM %s AS s WHERE %s) s ON true '
                        'WHERE p.h IS DISTINCT FROM s.h',
                        v_bk, v_reason, v_pdig, v_prel, v_pjoin, v_sdig, v_srel, v_sjoin);
    mark_sql := format('#WITH b AS (SELECT %s, u.h FROM unnest($1, $2) AS u(x, h)) '
                       'UPDATE %s AS s SET _shadow_sync_status = ''diverged'' FROM b WHERE %s AND (%s)::text = b.h',
                       v_bk, v_srel, v_sjoin, v_sdig);
END
$fn$;

-- The differing keys one owner read (p_sql: diff_sql or check_sql, with its
-- parameters) returns, each with whether a change of it is pending in the
-- change log (a 'T' entry makes every key pending) and whether it is
-- quarantined: ONE statement, so the owner's read (on this statement's
-- snapshot, _sync_read) and the change log are seen at the same instant.
-- Keys are compared by their text: a key written with another spelling
-- (citext 'A' for 'a') is not seen as pending, and the second look, after
-- apply, clears it.
CREATE OR REPLACE FUNCTION pgshadow._verify_differ(p_table_id integer, p_owner oid, p_sql text,
                                                   p_a text[], p_b text[])
RETURNS TABLE (reason text, shadow_digest text, key text[], pending boolean, quarantined boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT d[1], d[2], d[3]::text[],
           EXISTS (SELECT 1 FROM pgshadow.change_log c
                   WHERE c.table_id = p_table_id AND (c.key IS NULL OR c.key = d[3]::text[])),
           EXISTS (SELECT 1 FROM pgshadow.quarantine q WHERE q.table_id = p_table_id AND q.key = d[3]::text[])
    FROM pgshadow._sync_read(p_owner, p_sql, p_a, p_b) AS d
$fn$;

-- ---------------------------------------------------------------------------
-- The daemon's calls
-- ---------------------------------------------------------------------------
-- Verify waits while apply is behind: a key with a change pending is only
-- queued to be looked at again, so a chunk or a second look made while the
-- change log holds a backlog is mostly wasted, and it takes cores and I/O
-- from apply. Behind: the oldest pending change of a table of the
-- migration was written more than 5 s ago (one index probe per table).
CREATE OR REPLACE FUNCTION pgshadow._verify_hold(p_migration_id text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT EXISTS (SELECT 1 FROM pgshadow.tables t
                   WHERE t.migration_id = p_migration_id
                     AND (SELECT c.logged_at FROM pgshadow.change_log c WHERE c.table_id = t.table_id
                          ORDER BY c.seq LIMIT 1) < clock_timestamp() - interval '5 seconds')
$fn$;


-- What the daemon runs with (on leadership and reload).
CREATE OR REPLACE FUNCTION pgshadow.verify_configure(p_migration_id text, p_incremental boolean,
                                                     p_repair boolean)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    INSERT INTO pgshadow.verify_settings AS v (migration_id, incremental, repair)
    VALUES (p_migration_id, p_incremental, p_repair)
    ON CONFLICT (migration_id) DO UPDATE SET incremental = EXCLUDED.incremental, repair = EXCLUDED.repair,
                                             updated_at = now()
    WHERE (v.incremental, v.repair) IS DISTINCT FROM (EXCLUDED.incremental, EXCLUDED.repair)
$fn$;

-- Start a pass over every table of the migration (p_table NULL) or one, cut
-- into p_ranges ranges a table, and return its id. A pass already open is
-- returned instead (a command joins it: p_command_id is recorded there).
-- p_every (the timer): NULL when the last pass started less than p_every
-- ago, so the schedule survives restarts, or while a table's backfill is
-- not done (the first timed pass follows the whole copy). Tables whose backfill is not
-- done are skipped (said in the pass). By p_who (a role, or 'interval').
CREATE OR REPLACE FUNCTION pgshadow.verify_start(p_migration_id text, p_table text, p_ranges integer,
                                                 p_command_id bigint, p_every interval,
                                                 p_who text DEFAULT 'interval')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex'
SET lock_timeout = '5s'
AS $fn$
DECLARE
    v_pass bigint;
    v_keys text[];
    v_skip text[] := '{}';
    r      record;
BEGIN
    IF pgshadow._promoted(p_migration_id) THEN
        IF p_who = 'interval' THEN
            RETURN NULL;   -- the timer's pass: nothing to do, nothing to say
        END IF;
        RAISE EXCEPTION 'pgshadow: migration % is promoted: there is no shadow left to verify', p_migration_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF p_ranges IS NULL OR p_ranges < 1 OR p_ranges > 1024 THEN
        RAISE EXCEPTION 'pgshadow: verify ranges must be 1..1024, not %', p_ranges
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_table IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pgshadow.tables t WHERE t.migration_id = p_migration_id
                                           AND t.table_name = p_table) THEN
        RAISE EXCEPTION 'pgshadow: table % is not part of migration %', p_table, p_migration_id
            USING ERRCODE = 'undefined_table';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('pgshadow:verify:' || p_migration_id, 0));
    SELECT v.pass_id INTO v_pass FROM pgshadow.verify_passes v
    WHERE v.migration_id = p_migration_id AND v.finished_at IS NULL;
    IF v_pass IS NOT NULL THEN
        IF p_command_id IS NOT NULL THEN
            UPDATE pgshadow.verify_passes v SET command_ids = v.command_ids || p_command_id
            WHERE v.pass_id = v_pass;
        END IF;
        RETURN v_pass;
    END IF;
    IF p_every IS NOT NULL AND EXISTS (SELECT 1 FROM pgshadow.verify_passes v
                                       WHERE v.migration_id = p_migration_id
                                         AND v.started_at > clock_timestamp() - p_every) THEN
        RETURN NULL;
    END IF;
    IF p_every IS NOT NULL AND EXISTS (SELECT 1 FROM pgshadow.tables t WHERE t.migration_id = p_migration_id
                                       AND t.backfill_state <> 'done') THEN
        RETURN NULL;   -- the timer waits for every table's copy (a pass skips tables not copied)
    END IF;
    INSERT INTO pgshadow.verify_passes (migration_id, table_name, requested_by, command_ids)
    VALUES (p_migration_id, p_table, coalesce(p_who, 'interval'),
            CASE WHEN p_command_id IS NULL THEN '{}' ELSE ARRAY[p_command_id] END)
    RETURNING pass_id INTO v_pass;
    FOR r IN SELECT t.* FROM pgshadow.tables t
             WHERE t.migration_id = p_migration_id AND (p_table IS NULL OR t.table_name = p_table)
             ORDER BY t.table_id LOOP
        IF r.backfill_state <> 'done' THEN
            v_skip := v_skip || r.table_name;
            CONTINUE;
        END IF;
        v_keys := pgshadow._sync_cut_keys(r.table_id, (pgshadow._verify_sql(r.table_id)).owner, p_ranges,
                                          coalesce(r.primary_rows, pgshadow._estimate_rows(r.schema_name, r.table_name)));
        INSERT INTO pgshadow.verify_ranges (pass_id, table_id, range_no, lo, hi)
        SELECT v_pass, r.table_id, o::integer,
               CASE WHEN o > 1 THEN (v_keys[o - 1])::text[] END,
               CASE WHEN o <= cardinality(v_keys) THEN (v_keys[o])::text[] END
        FROM generate_series(1, cardinality(v_keys) + 1) o;
    END LOOP;
    UPDATE pgshadow.verify_passes v SET skipped = v_skip WHERE v.pass_id = v_pass;
    -- the daemon's idle verify workers start at this commit, not at their
    -- next look (payload 'verify': the command queue ignores it)
    PERFORM pg_notify('pgshadow_control', 'verify');
    INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
    VALUES (p_migration_id, p_table, 'pgshadowd', 'verify_started',
            CASE WHEN p_who = 'interval' THEN 'verify.interval' ELSE 'pgshadowctl verify by ' || p_who END,
            jsonb_build_object('pass_id', v_pass, 'skipped', to_jsonb(v_skip)));
    RETURN v_pass;
END
$fn$;

-- A table's count of open (and unrepaired) divergences into the registry,
-- where the dashboard reads it (diverged_count).
--
-- The registry row is locked first, in a statement of its own, and counted
-- in the next one. Two workers recount the same table at once when both
-- judged keys of it; in one UPDATE the count's snapshot is taken before the
-- row lock is waited for, so the second worker wrote a count that missed
-- what the first had just committed (repaired rows left in diverged_rows,
-- a red 'diverged' gate with nothing diverged). Counted after the lock, the
-- last writer counts everything committed before it.
CREATE OR REPLACE FUNCTION pgshadow._verify_recount(p_table_id integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM 1 FROM pgshadow.tables t WHERE t.table_id = p_table_id FOR NO KEY UPDATE;
    UPDATE pgshadow.tables t
    SET diverged_rows = (SELECT count(*) FROM pgshadow.divergence d
                         WHERE d.table_id = p_table_id AND d.state <> 'repaired')
    WHERE t.table_id = p_table_id;
END
$fn$;

-- Finish pass p_pass once every range is done and no key it queued is
-- left to look at; its result and one event. True when this call finished it.
CREATE OR REPLACE FUNCTION pgshadow._verify_finish(p_pass bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v    pgshadow.verify_passes;
    agg  record;
    v_d  record;
BEGIN
    SELECT x.* INTO v FROM pgshadow.verify_passes x WHERE x.pass_id = p_pass AND x.finished_at IS NULL
    FOR UPDATE SKIP LOCKED;
    IF v.pass_id IS NULL
       OR EXISTS (SELECT 1 FROM pgshadow.verify_ranges r WHERE r.pass_id = p_pass AND NOT r.done)
       OR EXISTS (SELECT 1 FROM pgshadow.verify_queue q WHERE q.pass_id = p_pass) THEN
        RETURN false;
    END IF;
    SELECT count(DISTINCT r.table_id) AS tables, coalesce(sum(r.rows), 0) AS rows,
           coalesce(sum(r.chunks), 0) AS chunks, coalesce(sum(r.chunks_differ), 0) AS chunks_differ,
           coalesce(sum(r.suspects), 0) AS suspects
    INTO agg FROM pgshadow.verify_ranges r WHERE r.pass_id = p_pass;
    SELECT count(*) AS diverged, count(*) FILTER (WHERE d.state = 'repaired') AS repaired,
           count(*) FILTER (WHERE d.state = 'unrepaired') AS unrepaired
    INTO v_d FROM pgshadow.divergence d WHERE d.pass_id = p_pass;
    v.result := jsonb_build_object('tables', agg.tables, 'rows', agg.rows, 'chunks', agg.chunks,
                                   'chunks_differ', agg.chunks_differ, 'suspects', agg.suspects,
                                   'diverged', v_d.diverged, 'repaired', v_d.repaired,
                                   'unrepaired', v_d.unrepaired, 'skipped', to_jsonb(v.skipped),
                                   'seconds', round(extract(epoch FROM clock_timestamp() - v.started_at)::numeric, 3));
    v.summary := format('verified %s rows of %s table(s) in %s s: %s diverged (%s repaired, %s unrepaired)%s',
                        agg.rows, agg.tables, v.result ->> 'seconds', v_d.diverged, v_d.repaired, v_d.unrepaired,
                        CASE WHEN cardinality(v.skipped) > 0
                             THEN format('; skipped (backfill not done): %s', array_to_string(v.skipped, ', '))
                             ELSE '' END);
    UPDATE pgshadow.verify_passes x SET finished_at = clock_timestamp(), result = v.result, summary = v.summary
    WHERE x.pass_id = p_pass;
    UPDATE pgshadow.tables t
    SET last_verify_at = clock_timestamp(),
        last_verify_result = format('pass %s: %s diverged', p_pass,
                                    (SELECT count(*) FROM pgshadow.divergence d
                                     WHERE d.pass_id = p_pass AND d.table_id = t.table_id))
    WHERE t.table_id IN (SELECT r.table_id FROM pgshadow.verify_ranges r WHERE r.pass_id = p_pass);
    INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
    VALUES (v.migration_id, v.table_name, 'pgshadowd', 'verify_finished', v.summary,
            v.result || jsonb_build_object('pass_id', p_pass));
    RETURN true;
END
$fn$;

-- One chunk of the open pass (none while apply is behind, _verify_hold):
-- the next p_rows keys of a range not done
-- (SKIP LOCKED: concurrent workers take different ranges), both sides
-- digested in one statement; when the digests differ, the differing keys
-- are queued for a second look (those with a change pending as well,
-- those quarantined not: the quarantine reports them). No row when no
-- pass is open or none of its ranges is free; pass_done when this call
-- finished the pass; writes when apply wrote in the last 2 s.
CREATE OR REPLACE FUNCTION pgshadow.verify_step(p_migration_id text, p_rows integer)
RETURNS TABLE (pass_id bigint, table_name text, checked bigint, differs boolean, suspects integer,
               pass_done boolean, summary text, writes boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex'
SET lock_timeout = '5s'
AS $fn$
#variable_conflict use_column
DECLARE
    v_pass  bigint;
    g       pgshadow.verify_ranges;
    t       pgshadow.tables;
    vs      record;
    v_from  text[];
    v_bound text[];
    v_dig   text[];
    v_n     bigint;
    v_sus   integer := 0;
    v_done  boolean;
BEGIN
    IF pgshadow._promoted(p_migration_id) THEN
        RETURN;   -- promoted: its names mean the new tables now (88-promote.sql)
    END IF;
    IF p_rows IS NULL OR p_rows < 1 THEN
        RAISE EXCEPTION 'pgshadow: verify chunk must be positive, not %', p_rows
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT v.pass_id INTO v_pass FROM pgshadow.verify_passes v
    WHERE v.migration_id = p_migration_id AND v.finished_at IS NULL;
    IF v_pass IS NULL OR pgshadow._verify_hold(p_migration_id) THEN
        RETURN;
    END IF;
    SELECT r.* INTO g FROM pgshadow.verify_ranges r
    WHERE r.pass_id = v_pass AND NOT r.done
    ORDER BY r.table_id, r.range_no LIMIT 1
    FOR UPDATE SKIP LOCKED;
    IF g.pass_id IS NULL THEN
        IF pgshadow._verify_finish(v_pass) THEN
            RETURN QUERY SELECT v_pass, NULL::text, 0::bigint, false, 0, true,
                                (SELECT v.summary FROM pgshadow.verify_passes v WHERE v.pass_id = v_pass), false;
        END IF;
        RETURN;
    END IF;
    SELECT r.* INTO t FROM pgshadow.tables r WHERE r.table_id = g.table_id;
    IF t.backfill_state <> 'done' THEN
        -- a resync started since the pass began: this table is copied again
        UPDATE pgshadow.verify_ranges r SET done = true
        WHERE r.pass_id = v_pass AND r.table_id = g.table_id;
        UPDATE pgshadow.verify_passes v SET skipped = v.skipped || t.table_name
        WHERE v.pass_id = v_pass AND NOT t.table_name = ANY (v.skipped);
        RETURN QUERY SELECT v_pass, t.table_name, 0::bigint, false, 0, false, NULL::text, false;
        RETURN;
    END IF;
    SELECT * INTO vs FROM pgshadow._verify_sql(g.table_id);
    PERFORM pgshadow._owner_fn(vs.owner);   -- its read_ twin exists before the STABLE reads below

    v_from := coalesce(g.cursor, g.lo);
    v_bound := pgshadow._sync_chunk_bound(g.table_id, vs.owner, vs.bound_sql, v_from, g.hi, p_rows);
    SELECT x INTO v_dig FROM pgshadow._sync_read(vs.owner, vs.digest_sql, v_from, v_bound) x;
    v_n := split_part(v_dig[1], ':', 1)::bigint;
    differs := v_dig[1] IS DISTINCT FROM v_dig[2];
    IF differs THEN
        INSERT INTO pgshadow.verify_queue (table_id, key, source, pass_id, looks, tries, due)
        SELECT g.table_id, d.key, 'pass', v_pass, CASE WHEN d.pending THEN 0 ELSE 1 END,
               CASE WHEN d.pending THEN 1 ELSE 0 END, clock_timestamp() + interval '1 second'
        FROM pgshadow._verify_differ(g.table_id, vs.owner, vs.diff_sql, v_from, v_bound) d
        WHERE NOT d.quarantined;
        GET DIAGNOSTICS v_sus = ROW_COUNT;
    END IF;
    v_done := v_bound IS NULL OR (g.hi IS NOT NULL AND v_bound = g.hi);
    UPDATE pgshadow.verify_ranges r
    SET cursor = v_bound, done = v_done, rows = r.rows + v_n, chunks = r.chunks + 1,
        chunks_differ = r.chunks_differ + differs::integer, suspects = r.suspects + v_sus
    WHERE r.pass_id = g.pass_id AND r.table_id = g.table_id AND r.range_no = g.range_no;
    pass_done := v_done AND pgshadow._verify_finish(v_pass);
    -- applications are writing (apply wrote in the last 2 s): the daemon
    -- paces its workers so verification leaves cores to them
    RETURN QUERY SELECT v_pass, t.table_name, v_n, differs, v_sus, pass_done,
                        CASE WHEN pass_done THEN (SELECT v.summary FROM pgshadow.verify_passes v
                                                  WHERE v.pass_id = v_pass) END,
                        EXISTS (SELECT 1 FROM pgshadow.tables x WHERE x.migration_id = p_migration_id
                                AND x.last_applied_at > clock_timestamp() - interval '2 seconds');
END
$fn$;

-- Look again at up to p_limit queued keys that are due, table by table,
-- on one snapshot each (_verify_differ):
--   equal now              -> leaves the queue (an open divergence of it
--                             is repaired);
--   differs, change pending -> looked at again in a second (after apply),
--                             at most 30 times (a key rewritten all the
--                             time is left to the next pass);
--   differs, quarantined   -> leaves the queue (the quarantine reports it);
--   differs, nothing pending, first look -> looked at again in a second;
--   differs, nothing pending, second look -> a divergence: recorded, the
--                             shadow row marked 'diverged', and, with
--                             repair on, re-queued into the change log
--                             for apply ('D': delete or upsert, as the
--                             primary says) and looked at after it; after
--                             3 repairs that did not hold, 'unrepaired':
--                             reported, and left alone.
-- One row per table looked at, with what happened; the newly diverged and
-- unrepaired keys (at most 10) in text for the daemon's log. A pass whose
-- last queued key this was is finished here: a row with table_name NULL
-- and the pass's summary in keys.
CREATE OR REPLACE FUNCTION pgshadow.verify_recheck(p_migration_id text, p_limit integer)
RETURNS TABLE (table_name text, checked integer, cleared integer, pending integer, diverged integer,
               repaired integer, unrepaired integer, keys text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex'
SET lock_timeout = '5s'
AS $fn$
#variable_conflict use_column
DECLARE
    v_repair boolean;
    v_tid    integer;
    v_ids    bigint[];
    vs       record;
    t        pgshadow.tables;
    v_keys   text[];
    v_passes bigint[];
    v_pass   bigint;
    v_list   text[];
    v_now    timestamptz;
    v_queued boolean := false;
    v_count_again boolean;
    v_n      bigint;
    st       record;
    dv       pgshadow.divergence;
    r        record;
BEGIN
    IF pgshadow._promoted(p_migration_id) THEN
        RETURN;   -- promoted: its names mean the new tables now (88-promote.sql)
    END IF;
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'pgshadow: verify recheck limit must be positive, not %', p_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_repair := coalesce((SELECT s.repair FROM pgshadow.verify_settings s WHERE s.migration_id = p_migration_id),
                         false);
    -- nothing due (the usual idle call: one index probe), or apply behind
    IF pgshadow._verify_hold(p_migration_id) OR NOT EXISTS (SELECT 1 FROM pgshadow.verify_queue q
                   WHERE q.due <= clock_timestamp()
                     AND q.table_id IN (SELECT x.table_id FROM pgshadow.tables x
                                        WHERE x.migration_id = p_migration_id)) THEN
        RETURN;
    END IF;
    -- take: due entries of this migration's tables, locked (SKIP LOCKED:
    -- two workers take different ones). The session's two work tables are
    -- created once and emptied at every commit (no catalog churn per call).
    IF to_regclass('pg_temp.verify_took') IS NULL THEN
        CREATE TEMP TABLE verify_took (entry_id bigint, table_id integer, key text[], source text,
                                       pass_id bigint, looks integer, tries integer) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE verify_seen (reason text, shadow_digest text, key text[], pending boolean,
                                       quarantined boolean) ON COMMIT DELETE ROWS;
    END IF;
    DELETE FROM pg_temp.verify_took;
    INSERT INTO pg_temp.verify_took
    SELECT q.entry_id, q.table_id, q.key, q.source, q.pass_id, q.looks, q.tries
    FROM pgshadow.verify_queue q
    WHERE q.due <= clock_timestamp()
      AND q.table_id IN (SELECT x.table_id FROM pgshadow.tables x WHERE x.migration_id = p_migration_id)
    ORDER BY q.due LIMIT p_limit
    FOR UPDATE OF q SKIP LOCKED;

    FOR v_tid IN SELECT DISTINCT k.table_id FROM pg_temp.verify_took k ORDER BY 1 LOOP
        SELECT x.* INTO t FROM pgshadow.tables x WHERE x.table_id = v_tid;
        table_name := t.table_name;
        SELECT count(*) INTO checked FROM pg_temp.verify_took k WHERE k.table_id = v_tid;
        IF t.table_id IS NULL THEN
            -- gone
            DELETE FROM pgshadow.verify_queue q USING pg_temp.verify_took k
            WHERE k.table_id = v_tid AND q.entry_id = k.entry_id;
            cleared := checked; pending := 0; diverged := 0; repaired := 0; unrepaired := 0; keys := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF t.backfill_state <> 'done' THEN
            -- Copied again (a resync): looked at once the copy is done, out
            -- of any pass (a pass does not wait for a copy). Dropped here,
            -- a key with an open divergence was never looked at again: a
            -- full pass queues only keys whose digests differ, so after the
            -- copy had made it equal its divergence stayed open and counted
            -- (the 'diverged' gate red, READY_FOR_CUTOVER withheld) for good.
            UPDATE pgshadow.verify_queue q SET pass_id = NULL, source = 'diverged',
                                               due = clock_timestamp() + interval '10 seconds'
            FROM pg_temp.verify_took k
            WHERE k.table_id = v_tid AND q.entry_id = k.entry_id;
            cleared := 0; pending := checked; diverged := 0; repaired := 0; unrepaired := 0; keys := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT * INTO vs FROM pgshadow._verify_sql(v_tid);
        PERFORM pgshadow._owner_fn(vs.owner);
        SELECT array_agg(DISTINCT k.key::text) INTO v_keys FROM pg_temp.verify_took k WHERE k.table_id = v_tid;
        DELETE FROM pg_temp.verify_seen;
        INSERT INTO pg_temp.verify_seen SELECT * FROM pgshadow._verify_differ(v_tid, vs.owner, vs.check_sql, v_keys, NULL);

        -- equal now: out of the queue; their open divergences are repaired
        WITH eq AS (
            DELETE FROM pgshadow.verify_queue q USING pg_temp.verify_took k
            WHERE k.table_id = v_tid AND q.entry_id = k.entry_id
              AND NOT EXISTS (SELECT 1 FROM pg_temp.verify_seen s WHERE s.key = k.key)
            RETURNING k.key
        ), fixed AS (
            UPDATE pgshadow.divergence d SET state = 'repaired', resolved_at = clock_timestamp()
            FROM (SELECT DISTINCT key FROM eq) e
            WHERE d.table_id = v_tid AND d.key = e.key AND d.state <> 'repaired'
            RETURNING d.key
        )
        SELECT (SELECT count(*) FROM eq), (SELECT count(*) FROM fixed) INTO cleared, repaired;
        -- quarantined: the quarantine reports it
        DELETE FROM pgshadow.verify_queue q USING pg_temp.verify_took k, pg_temp.verify_seen s
        WHERE k.table_id = v_tid AND q.entry_id = k.entry_id AND s.key = k.key AND s.quarantined;
        -- pending: again after apply, at most 30 times
        UPDATE pgshadow.verify_queue q SET tries = q.tries + 1, looks = 0,
                                           due = clock_timestamp() + interval '1 second'
        FROM pg_temp.verify_took k, pg_temp.verify_seen s
        WHERE k.table_id = v_tid AND q.entry_id = k.entry_id AND s.key = k.key AND s.pending
          AND NOT s.quarantined;
        GET DIAGNOSTICS pending = ROW_COUNT;
        DELETE FROM pgshadow.verify_queue q USING pg_temp.verify_took k
        WHERE k.table_id = v_tid AND q.entry_id = k.entry_id AND q.tries > 30;
        -- first look that found it differing with nothing pending: once more
        UPDATE pgshadow.verify_queue q SET looks = 1, due = clock_timestamp() + interval '1 second'
        FROM pg_temp.verify_took k, pg_temp.verify_seen s
        WHERE k.table_id = v_tid AND q.entry_id = k.entry_id AND s.key = k.key
          AND NOT s.pending AND NOT s.quarantined AND k.looks = 0;

        -- second look: a divergence (new, or again after a repair that
        -- did not hold; one that comes back over a minute after its repair
        -- counts as new)
        diverged := 0; unrepaired := 0; v_list := '{}'; v_now := clock_timestamp(); v_count_again := false;
        FOR r IN SELECT DISTINCT ON (s.key) s.key, s.reason, s.shadow_digest, k.source, k.pass_id
                 FROM pg_temp.verify_took k JOIN pg_temp.verify_seen s ON s.key = k.key
                 WHERE k.table_id = v_tid AND NOT s.pending AND NOT s.quarantined AND k.looks >= 1
                 ORDER BY s.key, k.pass_id NULLS LAST LOOP
            INSERT INTO pgshadow.divergence AS d (table_id, key, reason, found_by, pass_id, found_at, last_seen)
            VALUES (v_tid, r.key, r.reason, r.source, r.pass_id, v_now, v_now)
            ON CONFLICT (table_id, key) DO UPDATE
            SET reason = EXCLUDED.reason, last_seen = v_now, resolved_at = NULL,
                state = CASE WHEN d.state = 'repaired' THEN 'open' ELSE d.state END,
                repairs = CASE WHEN d.state = 'repaired' AND d.resolved_at < v_now - interval '1 minute'
                               THEN 0 ELSE d.repairs END,
                found_at = CASE WHEN d.state = 'repaired' AND d.resolved_at < v_now - interval '1 minute'
                                THEN v_now ELSE d.found_at END,
                found_by = CASE WHEN d.state = 'repaired' AND d.resolved_at < v_now - interval '1 minute'
                                THEN EXCLUDED.found_by ELSE d.found_by END,
                pass_id = coalesce(EXCLUDED.pass_id, d.pass_id)
            RETURNING d.* INTO dv;
            IF dv.found_at = v_now THEN
                diverged := diverged + 1;
                v_list := v_list || format('%s (%s)', dv.key, dv.reason);
                INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
                VALUES (t.migration_id, t.table_name, 'pgshadowd', 'divergence_found', dv.reason,
                        jsonb_build_object('key', to_jsonb(dv.key), 'found_by', dv.found_by, 'pass_id', dv.pass_id));
            END IF;
            v_count_again := v_count_again OR dv.reason <> 'value_differs';
            PERFORM pgshadow._sync_run(vs.owner, vs.mark_sql, ARRAY[r.key::text], ARRAY[r.shadow_digest]);
            IF v_repair AND dv.state = 'open' AND dv.repairs < 3 THEN
                UPDATE pgshadow.divergence d SET repairs = d.repairs + 1 WHERE d.divergence_id = dv.divergence_id;
                INSERT INTO pgshadow.change_log (table_id, op, key) VALUES (v_tid, 'D', r.key);
                v_queued := true;
                UPDATE pgshadow.verify_queue q SET source = 'repair', looks = 0, tries = 0,
                                                   due = clock_timestamp() + interval '1 second'
                FROM pg_temp.verify_took k
                WHERE k.table_id = v_tid AND q.entry_id = k.entry_id AND k.key = r.key;
            ELSE
                IF v_repair AND dv.state = 'open' THEN
                    UPDATE pgshadow.divergence d SET state = 'unrepaired' WHERE d.divergence_id = dv.divergence_id;
                    unrepaired := unrepaired + 1;
                    v_list := v_list || format('%s (%s, unrepaired after 3 repairs)', dv.key, dv.reason);
                    INSERT INTO pgshadow.events (migration_id, table_name, who, what, why, after)
                    VALUES (t.migration_id, t.table_name, 'pgshadowd', 'divergence_unrepaired',
                            format('%s: still differs after 3 repairs; left alone', dv.reason),
                            jsonb_build_object('key', to_jsonb(dv.key), 'repairs', dv.repairs));
                END IF;
                -- no repair (or given up): looked at now and then, so a
                -- fix by hand or by a later write is seen
                UPDATE pgshadow.verify_queue q SET source = 'diverged', looks = 1, pass_id = NULL,
                                                   due = clock_timestamp() + interval '10 seconds'
                FROM pg_temp.verify_took k
                WHERE k.table_id = v_tid AND q.entry_id = k.entry_id AND k.key = r.key;
            END IF;
        END LOOP;
        keys := nullif(array_to_string(v_list[1:10], ', ')
                       || CASE WHEN cardinality(v_list) > 10 THEN format(' and %s more', cardinality(v_list) - 10)
                               ELSE '' END, '');
        IF diverged > 0 OR repaired > 0 OR unrepaired > 0 THEN
            PERFORM pgshadow._verify_recount(v_tid);
        END IF;
        -- A row missing in the shadow, or there in excess, means the
        -- maintained counts (backfill's count plus apply's deltas) may be
        -- off: whether they included that row is not known. The shadow is
        -- counted again now, under the sync lock (no apply between the count
        -- and the write of it), before the repair is applied: apply's delta
        -- for the repair then lands on a true count.
        IF v_count_again AND t.shadow_rows IS NOT NULL THEN
            PERFORM pgshadow._sync_lock(p_migration_id);
            SELECT * INTO st FROM pgshadow._sync_statements(v_tid);   -- built once, both texts used
            SELECT x[1]::bigint INTO v_n FROM pgshadow._sync_run(vs.owner, st.count_shadow_sql) x;
            UPDATE pgshadow.tables x
            SET shadow_rows = v_n, synced_rows = v_n, counted_at = clock_timestamp(),
                primary_rows = pgshadow._sync_primary_rows(v_tid, vs.owner, st.qcount_sql, v_n)
            WHERE x.table_id = v_tid;
        END IF;
        RETURN NEXT;
    END LOOP;
    IF v_queued THEN
        PERFORM pg_notify('pgshadow_changes', '');   -- repairs for apply
    END IF;
    -- passes whose last queued key was just looked at
    -- (a row with no table_name for each, its summary in keys)
    SELECT array_agg(DISTINCT k.pass_id) INTO v_passes FROM pg_temp.verify_took k WHERE k.pass_id IS NOT NULL;
    FOREACH v_pass IN ARRAY coalesce(v_passes, '{}') LOOP
        IF pgshadow._verify_finish(v_pass) THEN
            table_name := NULL; checked := 0; cleared := 0; pending := 0; diverged := 0; repaired := 0;
            unrepaired := 0;
            SELECT format('pass %s finished: %s', v.pass_id, v.summary) INTO keys
            FROM pgshadow.verify_passes v WHERE v.pass_id = v_pass;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$fn$;

-- ---------------------------------------------------------------------------
-- At a psql prompt (the seed's checks)
-- ---------------------------------------------------------------------------

-- Table p_table of any migration, whole, compared now: counts and the
-- differing keys by reason; apart: pending (a change of the key not applied
-- yet) and quarantined (the shadow refused it: pgshadow.quarantine says why).
CREATE OR REPLACE FUNCTION pgshadow.validate_shadow_consistency(p_table text)
RETURNS TABLE (table_name text, primary_count bigint, shadow_count bigint, missing_in_shadow bigint,
               extra_in_shadow bigint, value_differs bigint, pending bigint, quarantined bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex'
AS $fn$
#variable_conflict use_column
DECLARE
    t   pgshadow.tables;
    vs  record;
    v_d text[];
BEGIN
    SELECT x.* INTO t FROM pgshadow.tables x WHERE x.table_name = p_table ORDER BY x.table_id LIMIT 1;
    IF t.table_id IS NULL THEN
        RAISE EXCEPTION 'pgshadow: % is not a registered table', p_table USING ERRCODE = 'undefined_table';
    END IF;
    SELECT * INTO vs FROM pgshadow._verify_sql(t.table_id);
    PERFORM pgshadow._owner_fn(vs.owner);
    SELECT x INTO v_d FROM pgshadow._sync_read(vs.owner, vs.digest_sql, NULL, NULL) x;
    RETURN QUERY
    SELECT t.table_name, split_part(v_d[1], ':', 1)::bigint, split_part(v_d[2], ':', 1)::bigint,
           count(*) FILTER (WHERE d.reason = 'missing_in_shadow' AND NOT d.pending AND NOT d.quarantined),
           count(*) FILTER (WHERE d.reason = 'extra_in_shadow' AND NOT d.pending AND NOT d.quarantined),
           count(*) FILTER (WHERE d.reason = 'value_differs' AND NOT d.pending AND NOT d.quarantined),
           count(*) FILTER (WHERE d.pending),
           count(*) FILTER (WHERE d.quarantined AND NOT d.pending)
    FROM pgshadow._verify_differ(t.table_id, vs.owner, vs.diff_sql, NULL, NULL) d;
END
$fn$;

-- One key of table p_table (its key columns' values as text, in key
-- order): true when the shadow row equals the mapped primary row (or
-- neither has the key).
CREATE OR REPLACE FUNCTION pgshadow.validate_record_hash(p_table text, p_key text[])
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 SET bytea_output = 'hex'
AS $fn$
DECLARE
    t  pgshadow.tables;
    vs record;
BEGIN
    SELECT x.* INTO t FROM pgshadow.tables x WHERE x.table_name = p_table ORDER BY x.table_id LIMIT 1;
    IF t.table_id IS NULL THEN
        RAISE EXCEPTION 'pgshadow: % is not a registered table', p_table USING ERRCODE = 'undefined_table';
    END IF;
    IF cardinality(p_key) IS DISTINCT FROM cardinality(t.key_columns) OR array_position(p_key, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'pgshadow: table % has a key of % column(s) (%), not %', p_table,
            cardinality(t.key_columns), array_to_string(t.key_columns, ', '), p_key
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO vs FROM pgshadow._verify_sql(t.table_id);
    PERFORM pgshadow._owner_fn(vs.owner);
    RETURN NOT EXISTS (SELECT 1 FROM pgshadow._sync_read(vs.owner, vs.check_sql, ARRAY[p_key::text], NULL));
END
$fn$;

CREATE OR REPLACE FUNCTION pgshadow.validate_record_hash(p_table text, p_key text)
RETURNS boolean
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pgshadow.validate_record_hash(p_table, ARRAY[p_key])
$fn$;

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE ALL ON pgshadow.verify_settings, pgshadow.verify_passes, pgshadow.verify_ranges,
              pgshadow.verify_queue, pgshadow.divergence FROM PUBLIC;
GRANT SELECT ON pgshadow.verify_settings, pgshadow.verify_passes, pgshadow.verify_ranges,
                pgshadow.divergence TO pgshadow_viewer, pgshadow_daemon;
REVOKE ALL ON FUNCTION pgshadow._verify_hold(text),
                       pgshadow._verify_digest(regclass, jsonb, boolean),
                       pgshadow._verify_sql(integer),
                       pgshadow._verify_differ(integer, oid, text, text[], text[]),
                       pgshadow._verify_recount(integer),
                       pgshadow._verify_finish(bigint),
                       pgshadow.verify_configure(text, boolean, boolean),
                       pgshadow.verify_start(text, text, integer, bigint, interval, text),
                       pgshadow.verify_step(text, integer),
                       pgshadow.verify_recheck(text, integer),
                       pgshadow.validate_shadow_consistency(text),
                       pgshadow.validate_record_hash(text, text[]),
                       pgshadow.validate_record_hash(text, text)
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.verify_configure(text, boolean, boolean),
                          pgshadow.verify_start(text, text, integer, bigint, interval, text),
                          pgshadow.verify_step(text, integer),
                          pgshadow.verify_recheck(text, integer)
      TO pgshadow_daemon;
GRANT EXECUTE ON FUNCTION pgshadow.validate_shadow_consistency(text),
                          pgshadow.validate_record_hash(text, text[]),
                          pgshadow.validate_record_hash(text, text)
      TO pgshadow_operator;
