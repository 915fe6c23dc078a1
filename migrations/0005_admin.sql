-- The admin console (issue 16).
-- Per-stage latency of a reply up to the transcript stage: [[stage name, milliseconds], ...]
-- in pipeline order.
ALTER TABLE messages ADD COLUMN stage_ms jsonb NOT NULL DEFAULT '[]';

-- The conversation list (bot/admin/queries.py) pages by (last_message_at, id), newest first
-- (keyset pagination), and narrows by platform and channel. Its message filters are
-- semi-joins: probes per conversation while walking the newest first, or (for rare matches)
-- the matching rows collected from these partial indexes. Kept: the indexes bench/admin.py
-- saw the planner use at 1 million transcript rows.
CREATE INDEX conversations_recent ON conversations (last_message_at DESC, id DESC);
CREATE INDEX conversations_platform_recent
    ON conversations (platform, last_message_at DESC, id DESC);
CREATE INDEX conversations_channel_recent
    ON conversations (channel, last_message_at DESC, id DESC);
CREATE INDEX messages_user ON messages (user_id, conversation_id) WHERE user_id IS NOT NULL;
CREATE INDEX messages_feedback ON messages (feedback, conversation_id)
    WHERE feedback IS NOT NULL;
CREATE INDEX messages_error ON messages (conversation_id) WHERE error IS NOT NULL;
CREATE INDEX messages_action ON messages (conversation_id) WHERE action IS NOT NULL;
CREATE INDEX messages_blocked ON messages (conversation_id)
    WHERE verdicts @> '[{"action": "block"}]';
CREATE INDEX messages_latency ON messages (latency_ms, conversation_id)
    WHERE direction = 'out' AND latency_ms IS NOT NULL;
-- Full-text search over messages reads a stored vector: recomputing it for each candidate row
-- made a phrase of common words take 0.5 s at 1 million rows (44 ms stored). Adding the
-- column rewrites the table once.
ALTER TABLE messages ADD COLUMN tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('english', text)) STORED;
CREATE INDEX messages_text_search ON messages USING gin (tsv);
-- The overview (bot/admin/overview.py) reads a range of UTC days of one direction.
CREATE INDEX messages_day ON messages (((created_at AT TIME ZONE 'UTC')::date), direction);
-- One conversation's action runs, by the inbound message they ran for.
CREATE INDEX action_runs_message ON action_runs (message_id);

-- Review state of a conversation, written by the console only (bot/admin/reviews.py).
CREATE TABLE conversation_reviews (
    conversation_id text PRIMARY KEY REFERENCES conversations(id) ON DELETE CASCADE,
    tags            text[] NOT NULL DEFAULT '{}',
    reviewed_at     timestamptz,
    reviewed_by     text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversation_reviews_tags ON conversation_reviews USING gin (tags);

-- One row per admin action (bot/admin/audit.py): who, what, on what, from where.
CREATE TABLE admin_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    role        text NOT NULL,
    action      text NOT NULL,
    target      text,
    detail      jsonb NOT NULL DEFAULT '{}',
    remote_addr text
);
CREATE INDEX admin_audit_at ON admin_audit (at DESC);
