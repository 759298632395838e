"""Spans and traces as the API returns them: Opper's span and trace models (its SDK parses
them), plus Rill's fields. Pure functions of stored records."""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rill.store.span_record import SpanRecord


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _ms(start: float | None, end: float | None) -> int | None:
    return None if start is None or end is None else round((end - start) * 1000)


def _text(value: Any) -> str | None:
    """Opper's trace models type input/output as strings: JSON for anything else."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def span_object(r: SpanRecord) -> dict[str, Any]:
    return {
        "object": "span", "id": r.id, "trace_id": r.trace_id, "parent_id": r.parent_id, "name": r.name,
        "type": r.type, "start_time": iso(r.start_time), "end_time": iso(r.end_time),
        "duration_ms": _ms(r.start_time, r.end_time),
        "status": "error" if r.error is not None else "running" if r.end_time is None else "ok",
        "input": r.input, "output": r.output, "error": r.error, "meta": r.meta, "score": r.score,
        "tags": r.tags, "model": r.model, "user": r.user, "completion_id": r.completion_id,
        "usage": r.usage, "timings": r.timings, "finish_reason": r.finish_reason,
        # Opper's trace tree reads these from `data`
        "data": {"input": _text(r.input), "output": _text(r.output), "total_tokens": r.total_tokens,
                 "model": r.model},
    }


def trace_object(row: Any, roots: list[SpanRecord]) -> dict[str, Any]:
    root = next((r for r in roots if r.id == row.root_span_id), None)
    status = "error" if row.num_errors else "running" if row.num_open else "ok"
    return {
        "object": "trace", "id": row.id, "name": row.name, "root_span_id": row.root_span_id,
        "start_time": iso(row.start_time), "end_time": iso(row.end_time) if not row.num_open else None,
        "duration_ms": _ms(row.start_time, row.end_time) if not row.num_open else None,
        "status": status, "num_spans": row.num_spans, "num_errors": row.num_errors,
        "total_tokens": row.total_tokens,
        "input": _text(root.input) if root else None, "output": _text(root.output) if root else None,
        "tags": root.tags if root else {}, "model": root.model if root else None,
        "user": root.user if root else None,
    }
