-- example-aidis.sql: the seed's five AIDIS tables as an example schema.
--
-- The primary tables (projects, sessions, contexts, analytics_events, tasks)
-- with the seed's "original columns" and loose constraints, and their
-- *_shadow tables with the seed's stricter constraints (unique names, CHECKs,
-- foreign keys between shadows) plus the seven tracking columns. Rows the
-- primaries accept and the shadows reject end in pgshadow's quarantine.
--
-- contexts.embedding is vector(1536) where the pgvector extension is
-- available (it is created here), else real[] with a length check.
-- Idempotent (IF NOT EXISTS); uses gen_random_uuid() (built in since PG 13).
-- Matching configuration:
--   migration: { id: p2_3_shadow_migration, tables: [ {name: projects},
--     {name: sessions}, {name: contexts}, {name: analytics_events}, {name: tasks} ] }

DO $vec$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        CREATE EXTENSION IF NOT EXISTS vector;
    END IF;
END
$vec$;

-- ---------------------------------------------------------------------------
-- Primary tables (as in production: loose)
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.projects (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name VARCHAR(255) NOT NULL,
    description TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    status VARCHAR(50) DEFAULT 'active',
    git_repo_url TEXT,
    root_directory TEXT,
    metadata JSONB DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS public.sessions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id UUID REFERENCES public.projects (id) ON DELETE SET NULL,
    agent_type VARCHAR(100) NOT NULL,
    started_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    ended_at TIMESTAMP WITH TIME ZONE,
    context_summary TEXT,
    tokens_used INTEGER DEFAULT 0,
    metadata JSONB DEFAULT '{}',
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    active_branch VARCHAR(255),
    working_commit_sha VARCHAR(40),
    commits_contributed INTEGER DEFAULT 0,
    pattern_preferences JSONB DEFAULT '{}',
    insights_generated INTEGER DEFAULT 0,
    last_pattern_analysis TIMESTAMP WITH TIME ZONE,
    title VARCHAR(255),
    description TEXT
);

DO $contexts$
DECLARE
    v_emb text := CASE WHEN EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')
                       THEN 'vector(1536)' ELSE 'real[]' END;
BEGIN
    EXECUTE format($t$
        CREATE TABLE IF NOT EXISTS public.contexts (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            project_id UUID REFERENCES public.projects (id) ON DELETE CASCADE,
            session_id UUID REFERENCES public.sessions (id) ON DELETE SET NULL,
            context_type VARCHAR(100) NOT NULL,
            content TEXT NOT NULL,
            embedding %s,
            created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
            relevance_score DOUBLE PRECISION,
            tags TEXT[] DEFAULT '{}',
            metadata JSONB DEFAULT '{}',
            related_commit_sha VARCHAR(40),
            commit_context_type VARCHAR(100),
            pattern_session_id UUID,
            related_insights TEXT[] DEFAULT '{}',
            pattern_relevance_score NUMERIC(5,4)
        )$t$, v_emb);
END
$contexts$;

CREATE TABLE IF NOT EXISTS public.analytics_events (
    event_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    timestamp TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    actor VARCHAR(255) NOT NULL,
    project_id UUID REFERENCES public.projects (id) ON DELETE SET NULL,
    session_id UUID REFERENCES public.sessions (id) ON DELETE SET NULL,
    context_id UUID REFERENCES public.contexts (id) ON DELETE SET NULL,
    event_type VARCHAR(100) NOT NULL,
    payload JSONB DEFAULT '{}',
    status VARCHAR(50),
    duration_ms INTEGER,
    tags TEXT[] DEFAULT '{}',
    ai_model_used VARCHAR(100),
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    feedback INTEGER,
    metadata JSONB DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS public.tasks (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id UUID NOT NULL REFERENCES public.projects (id) ON DELETE CASCADE,
    title VARCHAR(255) NOT NULL,
    description TEXT,
    type VARCHAR(100) NOT NULL,
    status VARCHAR(50) NOT NULL DEFAULT 'pending',
    priority VARCHAR(20) NOT NULL DEFAULT 'medium',
    assigned_to VARCHAR(255),
    dependencies UUID[] DEFAULT '{}',
    tags TEXT[] DEFAULT '{}',
    metadata JSONB DEFAULT '{}',
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    progress INTEGER DEFAULT 0,
    started_at TIMESTAMP WITH TIME ZONE,
    completed_at TIMESTAMP WITH TIME ZONE,
    created_by VARCHAR(255)
);

-- ---------------------------------------------------------------------------
-- Shadow tables (the new, stricter schema)
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.projects_shadow (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name VARCHAR(255) NOT NULL,
    description TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    status VARCHAR(50) DEFAULT 'active',
    git_repo_url TEXT,
    root_directory TEXT,
    metadata JSONB DEFAULT '{}',

    _shadow_version INTEGER DEFAULT 1,
    _shadow_created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    _shadow_source_table VARCHAR(50) DEFAULT 'projects',
    _shadow_migration_id VARCHAR(100) DEFAULT 'p2_3_shadow_migration',
    _shadow_sync_status VARCHAR(20) DEFAULT 'pending',
    _shadow_last_sync TIMESTAMP WITH TIME ZONE,
    _shadow_validation_hash VARCHAR(64),

    CONSTRAINT projects_shadow_name_unique UNIQUE (name),
    CONSTRAINT projects_shadow_status_check CHECK (status IN ('active', 'archived', 'suspended')),
    CONSTRAINT projects_shadow_sync_status_check CHECK (_shadow_sync_status IN ('pending', 'synced', 'diverged'))
);
CREATE INDEX IF NOT EXISTS idx_projects_shadow_status ON public.projects_shadow (status);

CREATE TABLE IF NOT EXISTS public.sessions_shadow (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id UUID,
    agent_type VARCHAR(100) NOT NULL,
    started_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    ended_at TIMESTAMP WITH TIME ZONE,
    context_summary TEXT,
    tokens_used INTEGER DEFAULT 0,
    metadata JSONB DEFAULT '{}',
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    active_branch VARCHAR(255),
    working_commit_sha VARCHAR(40),
    commits_contributed INTEGER DEFAULT 0,
    pattern_preferences JSONB DEFAULT '{}',
    insights_generated INTEGER DEFAULT 0,
    last_pattern_analysis TIMESTAMP WITH TIME ZONE,
    title VARCHAR(255),
    description TEXT,

    _shadow_version INTEGER DEFAULT 1,
    _shadow_created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    _shadow_source_table VARCHAR(50) DEFAULT 'sessions',
    _shadow_migration_id VARCHAR(100) DEFAULT 'p2_3_shadow_migration',
    _shadow_sync_status VARCHAR(20) DEFAULT 'pending',
    _shadow_last_sync TIMESTAMP WITH TIME ZONE,
    _shadow_validation_hash VARCHAR(64),

    CONSTRAINT sessions_shadow_project_fk FOREIGN KEY (project_id) REFERENCES public.projects_shadow (id) ON DELETE SET NULL,
    CONSTRAINT sessions_shadow_sha_format CHECK (working_commit_sha IS NULL OR working_commit_sha ~ '^[a-f0-9]{40}$'),
    CONSTRAINT sessions_shadow_tokens_positive CHECK (tokens_used >= 0),
    CONSTRAINT sessions_shadow_sync_status_check CHECK (_shadow_sync_status IN ('pending', 'synced', 'diverged'))
);
CREATE INDEX IF NOT EXISTS idx_sessions_shadow_project_id ON public.sessions_shadow (project_id);
CREATE INDEX IF NOT EXISTS idx_sessions_shadow_started_at ON public.sessions_shadow (started_at);

DO $contexts_shadow$
DECLARE
    v_vector boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector');
BEGIN
    EXECUTE format($t$
        CREATE TABLE IF NOT EXISTS public.contexts_shadow (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            project_id UUID,
            session_id UUID,
            context_type VARCHAR(100) NOT NULL,
            content TEXT NOT NULL,
            embedding %s,
            created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
            relevance_score DOUBLE PRECISION,
            tags TEXT[] DEFAULT '{}',
            metadata JSONB DEFAULT '{}',
            related_commit_sha VARCHAR(40),
            commit_context_type VARCHAR(100),
            pattern_session_id UUID,
            related_insights TEXT[] DEFAULT '{}',
            pattern_relevance_score NUMERIC(5,4),

            _shadow_version INTEGER DEFAULT 1,
            _shadow_created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
            _shadow_source_table VARCHAR(50) DEFAULT 'contexts',
            _shadow_migration_id VARCHAR(100) DEFAULT 'p2_3_shadow_migration',
            _shadow_sync_status VARCHAR(20) DEFAULT 'pending',
            _shadow_last_sync TIMESTAMP WITH TIME ZONE,
            _shadow_validation_hash VARCHAR(64),
            _shadow_embedding_regenerated BOOLEAN DEFAULT FALSE,

            CONSTRAINT contexts_shadow_project_fk FOREIGN KEY (project_id) REFERENCES public.projects_shadow (id) ON DELETE CASCADE,
            CONSTRAINT contexts_shadow_session_fk FOREIGN KEY (session_id) REFERENCES public.sessions_shadow (id) ON DELETE SET NULL,
            CONSTRAINT contexts_shadow_embedding_dimension CHECK (%s),
            CONSTRAINT contexts_shadow_relevance_range CHECK (relevance_score IS NULL OR (relevance_score >= 0 AND relevance_score <= 1)),
            CONSTRAINT contexts_shadow_pattern_relevance_range CHECK (pattern_relevance_score IS NULL OR (pattern_relevance_score >= 0 AND pattern_relevance_score <= 1)),
            CONSTRAINT contexts_shadow_sha_format CHECK (related_commit_sha IS NULL OR related_commit_sha ~ '^[a-f0-9]{40}$'),
            CONSTRAINT contexts_shadow_sync_status_check CHECK (_shadow_sync_status IN ('pending', 'synced', 'diverged'))
        )$t$,
        CASE WHEN v_vector THEN 'vector(1536)' ELSE 'real[]' END,
        CASE WHEN v_vector THEN 'embedding IS NULL OR vector_dims(embedding) = 1536'
             ELSE 'embedding IS NULL OR cardinality(embedding) = 1536' END);
END
$contexts_shadow$;
CREATE INDEX IF NOT EXISTS idx_contexts_shadow_project_id ON public.contexts_shadow (project_id);
CREATE INDEX IF NOT EXISTS idx_contexts_shadow_session_id ON public.contexts_shadow (session_id);
CREATE INDEX IF NOT EXISTS idx_contexts_shadow_created_at ON public.contexts_shadow (created_at);

CREATE TABLE IF NOT EXISTS public.analytics_events_shadow (
    event_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    timestamp TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    actor VARCHAR(255) NOT NULL,
    project_id UUID,
    session_id UUID,
    context_id UUID,
    event_type VARCHAR(100) NOT NULL,
    payload JSONB DEFAULT '{}',
    status VARCHAR(50),
    duration_ms INTEGER,
    tags TEXT[] DEFAULT '{}',
    ai_model_used VARCHAR(100),
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    feedback INTEGER,
    metadata JSONB DEFAULT '{}',

    _shadow_version INTEGER DEFAULT 1,
    _shadow_created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    _shadow_source_table VARCHAR(50) DEFAULT 'analytics_events',
    _shadow_migration_id VARCHAR(100) DEFAULT 'p2_3_shadow_migration',
    _shadow_sync_status VARCHAR(20) DEFAULT 'pending',
    _shadow_last_sync TIMESTAMP WITH TIME ZONE,
    _shadow_validation_hash VARCHAR(64),

    CONSTRAINT analytics_events_shadow_project_fk FOREIGN KEY (project_id) REFERENCES public.projects_shadow (id) ON DELETE SET NULL,
    CONSTRAINT analytics_events_shadow_session_fk FOREIGN KEY (session_id) REFERENCES public.sessions_shadow (id) ON DELETE SET NULL,
    CONSTRAINT analytics_events_shadow_context_fk FOREIGN KEY (context_id) REFERENCES public.contexts_shadow (id) ON DELETE SET NULL,
    CONSTRAINT analytics_events_shadow_duration_positive CHECK (duration_ms IS NULL OR duration_ms >= 0),
    CONSTRAINT analytics_events_shadow_tokens_positive CHECK (prompt_tokens IS NULL OR prompt_tokens >= 0),
    CONSTRAINT analytics_events_shadow_completion_tokens_positive CHECK (completion_tokens IS NULL OR completion_tokens >= 0),
    CONSTRAINT analytics_events_shadow_feedback_range CHECK (feedback IS NULL OR (feedback >= 1 AND feedback <= 5)),
    CONSTRAINT analytics_events_shadow_sync_status_check CHECK (_shadow_sync_status IN ('pending', 'synced', 'diverged'))
);
CREATE INDEX IF NOT EXISTS idx_analytics_events_shadow_timestamp ON public.analytics_events_shadow (timestamp);
CREATE INDEX IF NOT EXISTS idx_analytics_events_shadow_project_id ON public.analytics_events_shadow (project_id);
CREATE INDEX IF NOT EXISTS idx_analytics_events_shadow_event_type ON public.analytics_events_shadow (event_type);

CREATE TABLE IF NOT EXISTS public.tasks_shadow (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id UUID NOT NULL,
    title VARCHAR(255) NOT NULL,
    description TEXT,
    type VARCHAR(100) NOT NULL,
    status VARCHAR(50) NOT NULL DEFAULT 'pending',
    priority VARCHAR(20) NOT NULL DEFAULT 'medium',
    assigned_to VARCHAR(255),
    dependencies UUID[] DEFAULT '{}',
    tags TEXT[] DEFAULT '{}',
    metadata JSONB DEFAULT '{}',
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    progress INTEGER DEFAULT 0,
    started_at TIMESTAMP WITH TIME ZONE,
    completed_at TIMESTAMP WITH TIME ZONE,
    created_by VARCHAR(255),

    _shadow_version INTEGER DEFAULT 1,
    _shadow_created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    _shadow_source_table VARCHAR(50) DEFAULT 'tasks',
    _shadow_migration_id VARCHAR(100) DEFAULT 'p2_3_shadow_migration',
    _shadow_sync_status VARCHAR(20) DEFAULT 'pending',
    _shadow_last_sync TIMESTAMP WITH TIME ZONE,
    _shadow_validation_hash VARCHAR(64),

    CONSTRAINT tasks_shadow_project_fk FOREIGN KEY (project_id) REFERENCES public.projects_shadow (id) ON DELETE CASCADE,
    CONSTRAINT tasks_shadow_status_check CHECK (status IN ('pending', 'in_progress', 'completed', 'cancelled', 'blocked')),
    CONSTRAINT tasks_shadow_priority_check CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    CONSTRAINT tasks_shadow_progress_range CHECK (progress >= 0 AND progress <= 100),
    CONSTRAINT tasks_shadow_sync_status_check CHECK (_shadow_sync_status IN ('pending', 'synced', 'diverged'))
);
CREATE INDEX IF NOT EXISTS idx_tasks_shadow_project_id ON public.tasks_shadow (project_id);
CREATE INDEX IF NOT EXISTS idx_tasks_shadow_status ON public.tasks_shadow (status);
CREATE INDEX IF NOT EXISTS idx_tasks_shadow_created_at ON public.tasks_shadow (created_at);
