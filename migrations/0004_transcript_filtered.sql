-- What the passage rails kept from the model for a reply (issue 13: "visible, never silent"):
-- one object per retrieved passage cut or dropped, {"uri", "reason", "score", "removed_chars"}.
ALTER TABLE messages ADD COLUMN filtered jsonb NOT NULL DEFAULT '[]';
