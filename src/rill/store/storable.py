"""A span the database refused, made writable: what the writer tries before it gives a span up.

Each JSON field that cannot be written (json_codec refuses it: nested too deep, not JSON) is
replaced by a note saying why, and text that Postgres cannot hold (NUL characters, text longer
than its column) is mended, so the span is kept with everything else it recorded, and says what
it lost. `describe` gives an exception's reason in one short line that cannot itself fail.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rill.store import json_codec
from rill.store.schema import spans
from rill.store.span_record import SpanRecord

NOT_STORED = "rill_not_stored"  # the key of the note that replaces a field: {NOT_STORED: why}
JSON_FIELDS = ("input", "output", "meta", "tags", "usage", "timings")
TEXT_FIELDS = ("name", "type", "model", "user", "error", "finish_reason")
_LENGTHS = {name: getattr(spans.c[name].type, "length", None) for name in TEXT_FIELDS}


def storable_copy(record: SpanRecord) -> tuple[SpanRecord, list[str]]:
    """The record with what cannot be written replaced or mended, and the fields changed (none:
    the record itself, nothing to mend)."""
    changes: dict[str, Any] = {}
    for name in JSON_FIELDS:
        value = getattr(record, name)
        try:
            json_codec.dumps(value)
        except json_codec.UnstorableValue as exc:
            changes[name] = {NOT_STORED: str(exc)}
    for name in TEXT_FIELDS:
        value = getattr(record, name)
        if isinstance(value, str):
            mended = value.replace("\0", "\ufffd")[:_LENGTHS[name]]
            if mended != value:
                changes[name] = mended
    if not changes:
        return record, []
    return dataclasses.replace(record, **changes), sorted(changes)


def describe(exc: BaseException, limit: int = 300) -> str:
    """`Type: message`, the message's first line, cut at `limit` characters. SQLAlchemy's
    errors are described by the driver's error they wrap: their own text repeats the statement
    and its parameters, whose repr fails for a value nested a thousand levels deep."""
    cause = getattr(exc, "orig", None) or exc
    try:
        text = next(iter(str(cause).strip().splitlines()), "")
    except Exception:  # its message could not be made
        text = "(no message)"
    out = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return out if len(out) <= limit else out[:limit - 1] + "…"
