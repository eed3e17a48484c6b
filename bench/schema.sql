-- bench/schema.sql - the AIDIS `contexts` shape for the benchmarks, and its
-- shadow as the seed designs it (primary columns + the seven tracking columns).
-- Tables only: bench/indexes.sql adds keys and indexes after the bulk load,
-- which is how anyone loads a large table and keeps generation fast.
CREATE TABLE public.contexts (
    id                      uuid NOT NULL,
    project_id              uuid,
    session_id              uuid,
    context_type            varchar(100) NOT NULL,
    content                 text NOT NULL,
    embedding               real[],
    created_at              timestamptz DEFAULT CURRENT_TIMESTAMP,
    relevance_score         double precision,
    tags                    text[] DEFAULT '{}',
    metadata                jsonb DEFAULT '{}',
    related_commit_sha      varchar(40),
    commit_context_type     varchar(100),
    pattern_session_id      uuid,
    related_insights        text[] DEFAULT '{}',
    pattern_relevance_score numeric(5,4)
);

CREATE TABLE public.contexts_shadow (
    id                      uuid NOT NULL,
    project_id              uuid,
    session_id              uuid,
    context_type            varchar(100) NOT NULL,
    content                 text NOT NULL,
    embedding               real[],
    created_at              timestamptz DEFAULT CURRENT_TIMESTAMP,
    relevance_score         double precision,
    tags                    text[] DEFAULT '{}',
    metadata                jsonb DEFAULT '{}',
    related_commit_sha      varchar(40),
    commit_context_type     varchar(100),
    pattern_session_id      uuid,
    related_insights        text[] DEFAULT '{}',
    pattern_relevance_score numeric(5,4),
    _shadow_version         integer DEFAULT 1,
    _shadow_created_at      timestamptz DEFAULT CURRENT_TIMESTAMP,
    _shadow_source_table    varchar(50) DEFAULT 'contexts',
    _shadow_migration_id    varchar(100) DEFAULT 'bench',
    _shadow_sync_status     varchar(20) DEFAULT 'pending',
    _shadow_last_sync       timestamptz,
    _shadow_validation_hash varchar(64)
);
