-- uninstall.sql: the last step of `pgshadowctl uninstall`, run right after
-- `SELECT pgshadow.uninstall_migration(<drop shadow>, <migration id>);` (or
-- `pgshadow.uninstall(<drop shadow>)`) in the same transaction. When other
-- migrations stay installed it does nothing.
--
-- pgshadow.uninstall() has already refused if any object outside pgshadow
-- depends on pgshadow's (a user view calling read_from_shadow(), a column
-- default calling read_percent(), ...), removed every trigger running a
-- pgshadow function (wherever it is) and the partition event trigger,
-- revoked the privileges install granted on objects outside the pgshadow
-- schema and, when asked, dropped the shadow tables. What is left is
-- pgshadow's own: the dashboard views it created and the pgshadow schema.
--
-- No CASCADE anywhere: the objects are dropped by name, and the schema last
-- with RESTRICT, so anything unexpected stops the uninstall with the
-- server's list instead of vanishing with it.
--
-- The roles pgshadow_operator, pgshadow_viewer and pgshadow_daemon are
-- cluster-wide (other databases may use them) and are left in place; drop
-- them by hand with DROP ROLE once no database uses pgshadow.
DO $uninstall$
DECLARE
    v_list text;
BEGIN
    -- pgshadow.uninstall_migration let one migration go and kept the rest.
    IF current_setting('pgshadow.uninstall_partial', true) = 'on' THEN
        RETURN;
    END IF;
    -- Only the views install created (recorded in pgshadow.meta); a view of
    -- the same name that was there before pgshadow is not pgshadow's.
    IF EXISTS (SELECT 1 FROM pgshadow.meta WHERE key = 'created_view:public.migration_success_metrics') THEN
        DROP VIEW IF EXISTS public.migration_success_metrics;
    END IF;
    IF EXISTS (SELECT 1 FROM pgshadow.meta WHERE key = 'created_view:public.shadow_migration_dashboard') THEN
        DROP VIEW IF EXISTS public.shadow_migration_dashboard;
    END IF;
    -- Views, then tables (one statement: their foreign keys, triggers,
    -- owned sequences and row types go with them), then sequences left,
    -- then functions.
    SELECT string_agg(c.oid::regclass::text, ', ' ORDER BY c.oid) INTO v_list
    FROM pg_class c WHERE c.relnamespace = 'pgshadow'::regnamespace AND c.relkind IN ('v', 'm');
    IF v_list IS NOT NULL THEN
        EXECUTE 'DROP VIEW ' || v_list;
    END IF;
    SELECT string_agg(c.oid::regclass::text, ', ' ORDER BY c.oid) INTO v_list
    FROM pg_class c WHERE c.relnamespace = 'pgshadow'::regnamespace AND c.relkind IN ('r', 'p')
      AND NOT c.relispartition;
    IF v_list IS NOT NULL THEN
        EXECUTE 'DROP TABLE ' || v_list;
    END IF;
    SELECT string_agg(c.oid::regclass::text, ', ' ORDER BY c.oid) INTO v_list
    FROM pg_class c WHERE c.relnamespace = 'pgshadow'::regnamespace AND c.relkind = 'S';
    IF v_list IS NOT NULL THEN
        EXECUTE 'DROP SEQUENCE ' || v_list;
    END IF;
    SELECT string_agg(p.oid::regprocedure::text, ', ' ORDER BY p.oid) INTO v_list
    FROM pg_proc p WHERE p.pronamespace = 'pgshadow'::regnamespace;
    IF v_list IS NOT NULL THEN
        EXECUTE 'DROP ROUTINE ' || v_list;
    END IF;
    -- The functions that ran statements as each table owner.
    IF to_regnamespace('pgshadow_apply') IS NOT NULL THEN
        SELECT string_agg(p.oid::regprocedure::text, ', ' ORDER BY p.oid) INTO v_list
        FROM pg_proc p WHERE p.pronamespace = 'pgshadow_apply'::regnamespace;
        IF v_list IS NOT NULL THEN
            EXECUTE 'DROP ROUTINE ' || v_list;
        END IF;
        DROP SCHEMA pgshadow_apply RESTRICT;
    END IF;
    DROP SCHEMA pgshadow RESTRICT;
END
$uninstall$;
