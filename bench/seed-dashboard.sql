-- bench/seed-dashboard.sql - the seed's counting dashboard (seed doc section
-- 3.2.1), the contexts arm of its UNION, created under another name in a
-- scratch schema so it sits beside pgshadow's public.shadow_migration_dashboard.
-- Every poll counts both tables (five scans): its cost grows with table size.
CREATE SCHEMA IF NOT EXISTS seed_bench;
CREATE OR REPLACE VIEW seed_bench.shadow_migration_dashboard AS
SELECT
  'contexts' as table_name,
  (SELECT COUNT(*) FROM public.contexts) as primary_count,
  (SELECT COUNT(*) FROM public.contexts_shadow) as shadow_count,
  (SELECT COUNT(*) FROM public.contexts_shadow WHERE _shadow_sync_status = 'synced') as synced_count,
  (SELECT COUNT(*) FROM public.contexts_shadow WHERE _shadow_sync_status = 'diverged') as diverged_count,
  (SELECT AVG(EXTRACT(EPOCH FROM (CURRENT_TIMESTAMP - _shadow_last_sync))) FROM public.contexts_shadow) as avg_sync_lag_seconds;
