-- bench/apply-ceiling.sql - the apply-throughput ceiling: one set-based upsert
-- of every primary row into a shadow that already holds them (so every row
-- takes the ON CONFLICT DO UPDATE path, as applying a backlog of changes to
-- existing rows does), with the SHA-256 validation hash computed per row
-- (built-in sha256(), no pgcrypto). Run with \timing by bench/run.
INSERT INTO public.contexts_shadow AS s
    (id, project_id, session_id, context_type, content, embedding, created_at,
     relevance_score, tags, metadata, related_commit_sha, commit_context_type,
     pattern_session_id, related_insights, pattern_relevance_score,
     _shadow_version, _shadow_created_at, _shadow_source_table, _shadow_migration_id,
     _shadow_sync_status, _shadow_last_sync, _shadow_validation_hash)
SELECT p.id, p.project_id, p.session_id, p.context_type, p.content, p.embedding, p.created_at,
       p.relevance_score, p.tags, p.metadata, p.related_commit_sha, p.commit_context_type,
       p.pattern_session_id, p.related_insights, p.pattern_relevance_score,
       1, now(), 'contexts', 'bench', 'synced', now(),
       encode(sha256(convert_to(p::text, 'UTF8')), 'hex')
FROM public.contexts p
ON CONFLICT (id) DO UPDATE SET
    project_id = EXCLUDED.project_id, session_id = EXCLUDED.session_id,
    context_type = EXCLUDED.context_type, content = EXCLUDED.content,
    embedding = EXCLUDED.embedding, created_at = EXCLUDED.created_at,
    relevance_score = EXCLUDED.relevance_score, tags = EXCLUDED.tags,
    metadata = EXCLUDED.metadata, related_commit_sha = EXCLUDED.related_commit_sha,
    commit_context_type = EXCLUDED.commit_context_type,
    pattern_session_id = EXCLUDED.pattern_session_id,
    related_insights = EXCLUDED.related_insights,
    pattern_relevance_score = EXCLUDED.pattern_relevance_score,
    _shadow_version = s._shadow_version + 1,
    _shadow_sync_status = 'synced',
    _shadow_last_sync = EXCLUDED._shadow_last_sync,
    _shadow_validation_hash = EXCLUDED._shadow_validation_hash;
