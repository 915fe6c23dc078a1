"""Guardrails: input and output rails that allow, redact or block a message (issue 5)."""
