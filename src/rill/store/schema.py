"""The tables, in their latest shape (a fresh database is created from these; an older one is
brought here by migrations.py). Times are Unix seconds as floats; JSON columns hold what the
API sends and receives. Tags and metadata are also kept as (key, value) rows so that filters are
plain indexed joins on SQLite and Postgres alike."""

from __future__ import annotations

from sqlalchemy import (JSON, BigInteger, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table,
                        Text)

metadata = MetaData()

# An autoincrementing key on both: SQLite only autoincrements an INTEGER PRIMARY KEY.
Sequence = BigInteger().with_variant(Integer(), "sqlite")

OWNER = 64  # an API key's id, or "" when the server has no keys

stored_completions = Table(
    "stored_completions", metadata,
    Column("seq", Sequence, primary_key=True, autoincrement=True),  # list order and cursors
    Column("id", String(64), nullable=False, unique=True),
    Column("owner", String(OWNER), nullable=False),
    Column("created", Float, nullable=False),
    Column("model", Text, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("completion", JSON, nullable=False),  # the chat.completion object as returned
    Column("messages", JSON, nullable=False),  # the request's input messages
    Index("ix_stored_completions_owner_seq", "owner", "seq"),
)

completion_metadata = Table(
    "completion_metadata", metadata,
    Column("completion_seq", Sequence, ForeignKey("stored_completions.seq", ondelete="CASCADE"),
           primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", String(512), nullable=False),
    Index("ix_completion_metadata_key_value", "key", "value"),
)

migrations = Table(
    "rill_migrations", metadata,
    Column("version", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("applied_at", Float, nullable=False),
)
