-- bench/drop-notify.sql - diagnostic only (BENCH_DIAG=1): rewrite the
-- installed capture function(s) without the pg_notify call, to price the
-- wake-up apart from the change-log insert. Never part of a real install.
DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'pgshadow' AND p.proname ~ '^capture_[0-9]+$' LOOP
        IF position('pg_notify' IN f.prosrc) = 0 THEN
            RAISE EXCEPTION 'bench: no pg_notify in pgshadow.%', f.proname;
        END IF;
        EXECUTE format('CREATE OR REPLACE FUNCTION pgshadow.%I() RETURNS trigger LANGUAGE plpgsql '
                       'SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS %L',
                       f.proname,
                       regexp_replace(f.prosrc, 'PERFORM pg_catalog\.pg_notify\([^;]*\);', 'NULL;', 'g'));
    END LOOP;
END
$$;
