"""The admin APIs' request bodies: spans (Opper's shapes) and stored-completion updates."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from rill.api.http.wire import MetadataKey, MetadataValue, SpanId, StrictModel, Tags


SpanTime = Annotated[datetime.datetime, Field(strict=False)]
SpanName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
SpanType = Annotated[str, StringConstraints(max_length=64)]


class _SpanFields(StrictModel):
    """What a span carries besides its name and place in a trace (Opper's span fields + tags)."""

    type: SpanType | None = None
    start_time: SpanTime | None = None
    end_time: SpanTime | None = None
    input: Any = None
    output: Any = None
    error: str | None = None
    meta: dict[str, Any] | None = None
    score: int | None = None
    tags: Tags | None = None


class CreateSpan(_SpanFields):
    """POST /v1/spans: open (or record) a span. With `parent_id` it joins the parent's trace;
    without, it starts a trace (`trace_id` names it, or one is made)."""

    name: SpanName
    id: SpanId | None = None
    trace_id: SpanId | None = None
    parent_id: SpanId | None = None


class UpdateSpan(_SpanFields):
    """PATCH /v1/spans/{id}: the fields sent are changed (null clears one); e.g. `end_time`
    and `output` to close a workflow span, `error` to mark it failed."""

    name: SpanName | None = None


class UpdateStoredCompletion(StrictModel):
    """POST /v1/chat/completions/{id}: the new metadata (null clears it)."""

    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)] | None
