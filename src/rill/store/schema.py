"""The tables, in their latest shape (a fresh database is created from these; an older one is
brought here by migrations.py). Times are Unix seconds as floats; JSON columns hold what the
API sends and receives. Tags and metadata are also kept as (key, value) rows so that filters are
plain indexed joins on SQLite and Postgres alike.

Span and trace ids are unique per owner, not globally: a client chooses its own (`nightly-42`),
and another key's same id is another object that neither key learns of."""

from __future__ import annotations

from sqlalchemy import (JSON, BigInteger, Boolean, Column, Float, ForeignKey, Index, Integer, MetaData, String,
                        Table, Text, UniqueConstraint)

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
    Index("ix_stored_completions_created", "created"),  # retention
)

completion_metadata = Table(
    "completion_metadata", metadata,
    Column("completion_seq", Sequence, ForeignKey("stored_completions.seq", ondelete="CASCADE"),
           primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", String(512), nullable=False),
    Index("ix_completion_metadata_key_value", "key", "value"),
)

# A trace is the tree of spans under one root; this row keeps what lists and filters need without
# grouping spans (the writer updates it as spans arrive).
traces = Table(
    "traces", metadata,
    Column("seq", Sequence, primary_key=True, autoincrement=True),  # list order and cursors
    Column("id", String(64), nullable=False),
    Column("owner", String(OWNER), nullable=False),
    Column("root_span_id", String(64)),  # None until the root span arrives (a span of this trace)
    Column("name", Text),  # the root span's name
    Column("start_time", Float, nullable=False),  # the earliest span's start
    Column("end_time", Float),  # the latest span's end; None while the root is open
    Column("num_spans", Integer, nullable=False, default=0),
    Column("num_open", Integer, nullable=False, default=0),  # spans without an end time
    Column("num_errors", Integer, nullable=False, default=0),
    Column("total_tokens", BigInteger, nullable=False, default=0),
    UniqueConstraint("id", "owner", name="uq_traces_id_owner"),  # id first: an admin looks up by id alone
    Index("ix_traces_owner_seq", "owner", "seq"),
    Index("ix_traces_owner_start", "owner", "start_time"),
    Index("ix_traces_start", "start_time"),  # retention
)

spans = Table(
    "spans", metadata,
    Column("seq", Sequence, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False),
    Column("trace_id", String(64), nullable=False),
    # the trace's owner: the span's own, except where an admin key nested it under another key's span
    Column("trace_owner", String(OWNER), nullable=False),
    Column("parent_id", String(64)),  # a span of the same trace
    Column("owner", String(OWNER), nullable=False),
    Column("name", Text, nullable=False),
    Column("type", String(64)),  # "chat.completion" for Rill's own; anything for clients'
    Column("start_time", Float, nullable=False),
    Column("end_time", Float),  # None while open
    Column("model", Text),
    Column("user", Text),
    Column("completion_id", String(64)),  # the chat completion this span recorded
    Column("input", JSON),
    Column("output", JSON),
    Column("error", Text),
    Column("meta", JSON),
    Column("tags", JSON, nullable=False),
    Column("score", Integer),
    Column("usage", JSON),  # OpenAI's usage object
    Column("timings", JSON),  # queue_ms, ttft_ms, total_ms, tokens_per_second
    Column("finish_reason", Text),  # one per choice, joined by commas where they differ
    Column("total_tokens", Integer, nullable=False, default=0),
    UniqueConstraint("id", "owner", name="uq_spans_id_owner"),
    # ids are also unique within a trace (whatever their owners), so a parent id names one span there;
    # and this is how a trace's spans are found
    UniqueConstraint("trace_owner", "trace_id", "id", name="uq_spans_trace_id"),
    Index("ix_spans_completion_id", "completion_id"),
    Index("ix_spans_owner_start", "owner", "start_time"),
)

# Scalar tag values as text, for indexed `tag=key:value` filters.
span_tags = Table(
    "span_tags", metadata,
    Column("span_seq", Sequence, ForeignKey("spans.seq", ondelete="CASCADE"), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", String(512), nullable=False),
    Index("ix_span_tags_key_value", "key", "value"),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(32), primary_key=True),  # what spans and completions are owned by
    Column("name", Text, nullable=False),
    Column("hash", String(64), nullable=False, unique=True),  # sha256 hex of the secret
    Column("prefix", String(16), nullable=False),  # the secret's first characters, for display
    Column("admin", Boolean, nullable=False, default=False),  # sees every key's objects
    Column("created", Float, nullable=False),
    Column("revoked", Float),  # when revoked; revoked keys are refused
)

# A spoken answer's transcript, by its audio id: a later request's assistant message may be just
# {"audio": {"id"}} (OpenAI's multi-turn audio), which stands for this text until expires_at.
audio_transcripts = Table(
    "audio_transcripts", metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(OWNER), nullable=False),
    Column("transcript", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_audio_transcripts_expires_at", "expires_at"),
)

# A stored response (OpenAI's Responses API): the response object as returned, and what it
# continues from. Its input items are rows of their own so that a page of them is a range read.
# The id is the server's (`resp_...`), so it is unique across owners, unlike span and trace ids.
stored_responses = Table(
    "stored_responses", metadata,
    Column("seq", Sequence, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("owner", String(OWNER), nullable=False),
    Column("created", Float, nullable=False),  # the response's created_at
    Column("model", Text, nullable=False),
    Column("previous_response_id", String(64)),  # the response this one continues; it may be gone since
    Column("response", JSON, nullable=False),  # the response object as returned
    Index("ix_stored_responses_created", "created"),  # retention
)

# A response's input items, in the order given. item_id is the item's own id (a client may send
# its own, so it is neither unique nor bounded in length); cursors name items by it.
response_input_items = Table(
    "response_input_items", metadata,
    Column("response_seq", Sequence, ForeignKey("stored_responses.seq", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("item_id", Text, nullable=False),
    Column("item", JSON, nullable=False),
    Index("ix_response_input_items_item_id", "response_seq", "item_id"),
)

migrations = Table(
    "rill_migrations", metadata,
    Column("version", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("applied_at", Float, nullable=False),
)
