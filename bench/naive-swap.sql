-- bench/naive-swap.sql: the naive swap bench/run promote compares promote
-- with (pg-osc's way): one transaction, every primary and shadow locked
-- ACCESS EXCLUSIVE by one LOCK TABLE without lock_timeout, the renames,
-- COMMIT. The tables are locked children first (a write locks its own table
-- before the parents its foreign keys check, so that order cannot deadlock
-- with the load); the shadows, which nothing else touches here, after them.
-- Prints "naive T0 T1 T2": before the LOCK, when it returned, and before
-- the COMMIT (epoch seconds, clock_timestamp()): lock wait T1 - T0, locks
-- held up to the commit T2 - T1.
BEGIN;
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
LOCK TABLE public.analytics_events, public.contexts, public.tasks, public.sessions, public.projects,
           public.analytics_events_shadow, public.contexts_shadow, public.tasks_shadow,
           public.sessions_shadow, public.projects_shadow
  IN ACCESS EXCLUSIVE MODE;
SELECT extract(epoch FROM clock_timestamp()) AS t1 \gset
ALTER TABLE public.projects RENAME TO projects_legacy;
ALTER TABLE public.projects_shadow RENAME TO projects;
ALTER TABLE public.sessions RENAME TO sessions_legacy;
ALTER TABLE public.sessions_shadow RENAME TO sessions;
ALTER TABLE public.contexts RENAME TO contexts_legacy;
ALTER TABLE public.contexts_shadow RENAME TO contexts;
ALTER TABLE public.analytics_events RENAME TO analytics_events_legacy;
ALTER TABLE public.analytics_events_shadow RENAME TO analytics_events;
ALTER TABLE public.tasks RENAME TO tasks_legacy;
ALTER TABLE public.tasks_shadow RENAME TO tasks;
SELECT extract(epoch FROM clock_timestamp()) AS t2 \gset
COMMIT;
\echo naive :t0 :t1 :t2
