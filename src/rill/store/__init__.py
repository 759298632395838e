"""Spans, traces, stored completions and API keys on SQLAlchemy Core: SQLite by default,
Postgres when given a URL. Knows nothing of the engine or of HTTP."""
