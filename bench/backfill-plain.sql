-- bench/backfill-plain.sql - the backfill baseline: one plain INSERT ... SELECT
-- of every primary row into the (emptied) shadow, tracking columns at their
-- defaults plus the migration id. Run with \timing by bench/run.
INSERT INTO public.contexts_shadow
    (id, project_id, session_id, context_type, content, embedding, created_at,
     relevance_score, tags, metadata, related_commit_sha, commit_context_type,
     pattern_session_id, related_insights, pattern_relevance_score,
     _shadow_sync_status, _shadow_last_sync)
SELECT p.id, p.project_id, p.session_id, p.context_type, p.content, p.embedding, p.created_at,
       p.relevance_score, p.tags, p.metadata, p.related_commit_sha, p.commit_context_type,
       p.pattern_session_id, p.related_insights, p.pattern_relevance_score,
       'synced', now()
FROM public.contexts p;
