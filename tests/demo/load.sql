-- pgbench script for the demo's write load: what an application does while
-- the migration runs. Rows are picked by a random uuid through the key index.
\set kind random(1, 10)
BEGIN;
INSERT INTO contexts (project_id, context_type, content, relevance_score, tags)
  SELECT id, 'code', md5(random()::text) || repeat('x', 500), random(), ARRAY['load']
  FROM projects WHERE id >= (SELECT gen_random_uuid()) ORDER BY id LIMIT 1;
UPDATE contexts SET relevance_score = random(), metadata = jsonb_build_object('touched', now())
  WHERE id = (SELECT id FROM contexts WHERE id >= (SELECT gen_random_uuid()) ORDER BY id LIMIT 1);
DELETE FROM analytics_events
  WHERE event_id = (SELECT event_id FROM analytics_events WHERE event_id >= (SELECT gen_random_uuid()) ORDER BY event_id LIMIT 1);
UPDATE tasks SET progress = (random() * 100)::int, status = 'in_progress'
  WHERE id = (SELECT id FROM tasks WHERE id >= (SELECT gen_random_uuid()) ORDER BY id LIMIT 1);
END;
