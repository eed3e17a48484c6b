-- bench/indexes.sql - keys and indexes, built after the bulk load. The primary
-- gets what an application table of this shape has; the shadow gets the
-- seed's indexes (section 1.3 of the seed doc, minus the pgvector one).
ALTER TABLE public.contexts ADD PRIMARY KEY (id);
CREATE INDEX idx_contexts_project_id ON public.contexts (project_id);
CREATE INDEX idx_contexts_created_at ON public.contexts (created_at);

ALTER TABLE public.contexts_shadow ADD PRIMARY KEY (id);
ALTER TABLE public.contexts_shadow ADD CONSTRAINT contexts_shadow_sync_status_check
    CHECK (_shadow_sync_status IN ('pending', 'synced', 'diverged'));
CREATE INDEX idx_contexts_shadow_project_id ON public.contexts_shadow (project_id);
CREATE INDEX idx_contexts_shadow_session_id ON public.contexts_shadow (session_id);
CREATE INDEX idx_contexts_shadow_context_type ON public.contexts_shadow (context_type);
CREATE INDEX idx_contexts_shadow_created_at ON public.contexts_shadow (created_at);
CREATE INDEX idx_contexts_shadow_sync_status ON public.contexts_shadow (_shadow_sync_status);
ANALYZE public.contexts;
ANALYZE public.contexts_shadow;
