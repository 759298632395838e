"""What the span store takes and gives: one span as stored (SpanRecord), a trace query's filter,
where a span is (SpanPlace), and the store's refusals. Plain data: no database here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TraceStatus = Literal["ok", "error", "running"]


@dataclass(slots=True)
class SpanRecord:
    """One span as stored. Times are Unix seconds."""

    id: str
    trace_id: str
    owner: str
    name: str
    start_time: float
    parent_id: str | None = None
    trace_owner: str | None = None  # None: the span's owner (set so in __post_init__)
    type: str | None = None
    end_time: float | None = None
    model: str | None = None
    user: str | None = None
    completion_id: str | None = None
    input: Any = None
    output: Any = None
    error: str | None = None
    meta: dict[str, Any] | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    score: int | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, float] | None = None
    finish_reason: str | None = None
    total_tokens: int = 0

    def __post_init__(self) -> None:
        if self.trace_owner is None:
            self.trace_owner = self.owner

    def trace_of(self) -> str:
        """The owner of this span's trace."""
        return self.owner if self.trace_owner is None else self.trace_owner


# PATCH-able fields (Opper's UpdateSpanRequest); the trace row follows end_time, error, name
UPDATABLE = frozenset({"name", "type", "start_time", "end_time", "input", "output", "error", "meta", "score",
                       "tags"})


@dataclass(frozen=True, slots=True)
class TraceFilter:
    """A trace matches when one of its spans has each of tag/model/user (not necessarily the
    same span for each), its status is `status`, and it started in [since, until)."""

    tags: tuple[tuple[str, str], ...] = ()
    model: str | None = None
    user: str | None = None
    name: str | None = None  # the root span's name
    status: TraceStatus | None = None
    since: float | None = None
    until: float | None = None


class SpanExists(Exception):
    """A span with this id exists already: the owner's own, or (in_trace) one in the trace the
    new span joins."""

    def __init__(self, span_id: str, *, in_trace: bool = False):
        super().__init__(span_id)
        self.in_trace = in_trace


@dataclass(frozen=True, slots=True)
class SpanPlace:
    """Where a span is: its id, and its trace's id and owner (what a child span needs)."""

    span_id: str
    trace_id: str
    trace_owner: str


class SpanTimeError(ValueError):
    """A span would end before it starts."""
