-- Actions (issue 6): one audit row per invocation. `call_id` is unique per invocation and
-- stable across its retries, so a retried message finds its run instead of running it again.
CREATE TABLE action_runs (
    id           bigserial PRIMARY KEY,
    call_id      text NOT NULL UNIQUE,
    message_id   text NOT NULL,
    action       text NOT NULL,
    via          text NOT NULL CHECK (via IN ('command', 'button', 'tool')),
    platform     text NOT NULL,
    workspace    text,
    channel      text NOT NULL,
    thread       text,
    user_id      text NOT NULL,
    args         jsonb NOT NULL DEFAULT '{}',
    status       text NOT NULL,
    reply        text,
    result       text,
    error        text,
    trace_id     text NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    duration_ms  integer,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

CREATE INDEX action_runs_caller ON action_runs (platform, user_id, started_at);
CREATE INDEX action_runs_action ON action_runs (action, started_at);

-- A reply that an action wrote (not the model) names it; `sources` and `feedback` look for
-- the last reply without one.
ALTER TABLE messages ADD COLUMN action text;
