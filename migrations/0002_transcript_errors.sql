-- A reply written when no language model answered carries the failure and the trace id the
-- user was shown (issue 5: "the failure is in the transcript").
ALTER TABLE messages ADD COLUMN error text;
ALTER TABLE messages ADD COLUMN trace_id text;
