"""Retrieval-augmented knowledge: load, chunk, embed and store documents in Postgres/pgvector,
and retrieve passages by embedding, full-text search, or a weighted fusion of both."""
