"""JSON for the store's columns (the engines' json_serializer and json_deserializer).

orjson writes and reads, for speed, but it writes at most 254 levels of nesting and integers
within 64 bits; what it refuses goes through the standard library, which nests as far as
Python's recursion limit allows (973 levels measured through SpanStore.insert). A value neither
can write raises UnstorableValue with a short reason, never the value itself: the repr of a value
nested a thousand levels deep fails too, and a failure that cannot be described is a silent one.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class UnstorableValue(ValueError):
    """A value the store cannot write as JSON (nested too deep, not JSON at all)."""


def dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        pass
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        text.encode()  # lone surrogates (orjson refuses them too) would fail in the driver
    except RecursionError:
        raise UnstorableValue("nested too deeply to store as JSON") from None
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise UnstorableValue(f"not storable as JSON ({type(exc).__name__})") from None
    return text


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # deeper than orjson's 1,024 levels, or NaN that an older Rill wrote
        return json.loads(text)


def unwrapped(exc: Exception) -> Exception:
    """The UnstorableValue that an SQLAlchemy error wraps (its own text repeats the statement's
    parameters, whose repr fails for the deepest values), or the error itself."""
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, UnstorableValue) else exc
