-- 81-sync-quarantine.sql: rows and change log entries the shadow or the parser rejects: recorded, bisected, retried
--
-- Owns: _sync_quarantine, _sync_bad_entries, _sync_parse, _sync_apply_keys,
-- _sync_halt_reason, _sync_primary_rows, _sync_old_xacts, _sync_deferred.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

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


-- The entries among p_seqs (of table p_table_id) whose key lies in an
-- interval a backfill chunk is copying (p_sql: _sync_chunk_sql's defer_sql).
-- An entry whose key does not parse is not deferred (apply quarantines it):
-- found entry by entry, only when the whole set fails to parse.
CREATE OR REPLACE FUNCTION pgshadow._sync_deferred(p_table_id integer, p_sql text, p_seqs bigint[])
RETURNS bigint[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_out   bigint[] := '{}';
    v_seq   bigint;
    v_one   bigint[];
    e_state text;
BEGIN
    BEGIN
        EXECUTE format('SELECT coalesce(array_agg(DISTINCT seq), ''{}'') FROM (%s) d', p_sql)
            INTO v_out USING p_table_id, p_seqs;
        RETURN v_out;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE;
        IF pgshadow._sync_transient(e_state) THEN
            RAISE;
        END IF;
    END;
    v_out := '{}';
    FOR v_seq IN SELECT c.seq FROM pgshadow.change_log c WHERE c.table_id = p_table_id AND c.seq = ANY (p_seqs) LOOP
        BEGIN
            EXECUTE format('SELECT coalesce(array_agg(seq), ''{}'') FROM (%s) d', p_sql)
                INTO v_one USING p_table_id, ARRAY[v_seq];
            v_out := v_out || v_one;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE;
            IF pgshadow._sync_transient(e_state) THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    RETURN v_out;
END
$fn$;

-- Privileges
REVOKE ALL ON FUNCTION pgshadow._sync_quarantine(integer, text[], text, text, text, text),
                       pgshadow._sync_bad_entries(integer, text, bigint[]),
                       pgshadow._sync_parse(integer, text, bigint[], boolean),
                       pgshadow._sync_apply_keys(integer, oid, text, text, text[], text),
                       pgshadow._sync_halt_reason(integer, oid, text, text, text[], text, text),
                       pgshadow._sync_primary_rows(integer, oid, text, bigint),
                       pgshadow._sync_old_xacts(xid8),
                       pgshadow._sync_deferred(integer, text, bigint[])
       FROM PUBLIC;
