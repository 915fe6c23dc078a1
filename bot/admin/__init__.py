"""The admin console: conversations, overview, knowledge base, dead letters (docs/admin.md)."""
