-- bench/promote-reader.sql: the long reader of bench/run promote. In one
-- transaction it reads public.contexts (its ACCESS SHARE lock held to the
-- end), waits until a session queues for an ACCESS EXCLUSIVE lock on that
-- table (the swap, naive or promote: pg_locks looked at every 2 ms, for
-- at most 20 s), then keeps its lock :hold seconds more and commits: each
-- swap is blocked by it for the same time from its first request.
-- Prints "reader SEEN END" (epoch seconds: the request seen, the commit
-- asked) or "reader none".
CREATE FUNCTION pg_temp.hold_after_swap(p_rel oid, p_hold double precision) RETURNS text
LANGUAGE plpgsql AS $fn$
DECLARE
    v_t0   timestamptz := clock_timestamp();
    v_seen timestamptz;
BEGIN
    LOOP
        IF EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'relation' AND l.relation = p_rel
                   AND l.mode = 'AccessExclusiveLock' AND NOT l.granted) THEN
            v_seen := clock_timestamp();
            EXIT;
        END IF;
        IF clock_timestamp() - v_t0 > interval '20 seconds' THEN
            RETURN 'none';
        END IF;
        PERFORM pg_sleep(0.002);
    END LOOP;
    PERFORM pg_sleep(p_hold);
    RETURN extract(epoch FROM v_seen) || ' ' || extract(epoch FROM clock_timestamp());
END
$fn$;
BEGIN;
SELECT count(*) FROM (SELECT 1 FROM public.contexts LIMIT 1) x \gset
SELECT pg_temp.hold_after_swap('public.contexts'::regclass, :hold) AS r \gset
COMMIT;
\echo reader :r
