-- Generated AIDIS data for the demo, reproducible (setseed + md5-derived values).
-- Every value fits the stricter *_shadow constraints but one session whose
-- tokens_used -5 the shadow's CHECK (tokens_used >= 0) rejects: it shows the
-- quarantine (the demo's write load never touches sessions, so it stays there).
SELECT setseed(0.42);
INSERT INTO projects (name, description, status)
  SELECT 'project-' || g, 'demo project ' || g, 'active' FROM generate_series(1, 50) g;
CREATE TEMP TABLE p AS SELECT id, row_number() OVER (ORDER BY name) AS n FROM projects;
INSERT INTO sessions (project_id, agent_type, title, tokens_used)
  SELECT p.id, 'claude', 'session ' || g, g % 5000
  FROM generate_series(1, 500) g JOIN p ON p.n = 1 + g % 50;
INSERT INTO contexts (project_id, context_type, content, relevance_score, tags, metadata)
  SELECT p.id, (ARRAY['code', 'decision', 'error', 'planning'])[1 + g % 4],
         repeat(md5(g::text), 24), (g % 100) / 100.0, ARRAY['demo', 't' || (g % 7)],
         jsonb_build_object('n', g, 'src', 'demo')
  FROM generate_series(1, :contexts) g JOIN p ON p.n = 1 + g % 50;
INSERT INTO analytics_events (actor, project_id, event_type, payload, duration_ms)
  SELECT 'agent-' || (g % 13), p.id, 'context_stored', jsonb_build_object('g', g), g % 900
  FROM generate_series(1, :events) g JOIN p ON p.n = 1 + g % 50;
INSERT INTO tasks (project_id, title, type, status, priority, progress)
  SELECT p.id, 'task ' || g, 'feature', 'pending', 'medium', g % 101
  FROM generate_series(1, 5000) g JOIN p ON p.n = 1 + g % 50;
-- the poison row: the primary accepts -5, sessions_shadow does not
INSERT INTO sessions (project_id, agent_type, title, tokens_used)
  SELECT id, 'claude', 'a token count the new schema refuses', -5 FROM p WHERE n = 1;
ANALYZE;
