-- Knowledge base: documents and their chunks, with an HNSW index over the embeddings and a GIN
-- index over the full-text vectors. {{embedding_dim}} is the embedder's vector length.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE documents (
    id             bigserial PRIMARY KEY,
    source_uri     text NOT NULL UNIQUE,
    title          text NOT NULL,
    mime_type      text NOT NULL,
    version        integer NOT NULL DEFAULT 1,
    content_sha256 text NOT NULL,
    tags           text[] NOT NULL DEFAULT '{}',
    metadata       jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz
);

CREATE TABLE chunks (
    id             bigserial PRIMARY KEY,
    document_id    bigint NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal        integer NOT NULL,
    section        text NOT NULL DEFAULT '',
    page           integer,
    text           text NOT NULL,
    token_count    integer NOT NULL,
    content_sha256 text NOT NULL,
    embedding      vector({{embedding_dim}}) NOT NULL,
    tsv            tsvector GENERATED ALWAYS AS
                   (to_tsvector('english', section || ' ' || text)) STORED,
    UNIQUE (document_id, content_sha256)
);

CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops);
CREATE INDEX chunks_tsv_gin ON chunks USING gin (tsv);
CREATE INDEX chunks_document ON chunks (document_id, ordinal);

-- Transcript: every inbound message and every reply.
CREATE TABLE conversations (
    id              text PRIMARY KEY,
    platform        text NOT NULL,
    workspace       text,
    channel         text NOT NULL,
    thread          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_message_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE messages (
    id              bigserial PRIMARY KEY,
    conversation_id text NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    direction       text NOT NULL CHECK (direction IN ('in', 'out')),
    message_id      text NOT NULL,
    user_id         text,
    text            text NOT NULL,
    sources         jsonb NOT NULL DEFAULT '[]',
    verdicts        jsonb NOT NULL DEFAULT '[]',
    model           text,
    latency_ms      integer,
    tokens_in       integer,
    tokens_out      integer,
    feedback        smallint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (message_id, direction)
);

CREATE INDEX messages_conversation ON messages (conversation_id, created_at);
