-- uninstall.sql: the last step of `pgshadowctl uninstall`, run right after
-- `SELECT pgshadow.uninstall(<drop shadow>);` in the same transaction.
--
-- pgshadow.uninstall() has already removed the capture triggers and their
-- functions, revoked the privileges install granted on objects outside the
-- pgshadow schema and, when asked, dropped the shadow tables. What is left
-- is pgshadow's own: the two views in public and the pgshadow schema.
--
-- The roles pgshadow_operator, pgshadow_viewer and pgshadow_daemon are
-- cluster-wide (other databases may use them) and are left in place; drop
-- them by hand with DROP ROLE once no database uses pgshadow.
DROP VIEW IF EXISTS public.migration_success_metrics;
DROP VIEW IF EXISTS public.shadow_migration_dashboard;
-- CASCADE: also removes any capture trigger a partial uninstall left behind
-- (they depend on functions in this schema).
DROP SCHEMA IF EXISTS pgshadow CASCADE;
