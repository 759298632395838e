"""Query and path values of the span, trace and stored-completion endpoints, checked before they
reach the database. A value the database would fail on (a NUL character, which Postgres's text
cannot hold; an integer beyond 64 bits) or that can match nothing (an id not of ids' form, text
longer than any stored value), and more than MAX_FILTERS filters, are 400s naming the parameter
(they were 500s and 503s)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Query

from rill.errors import InvalidRequest

MAX_FILTERS = 32  # tag= / tags[k]= on traces, metadata[k]= on stored completions (together, per request)
MAX_OFFSET = 2**63 - 1  # the databases' BIGINT
MAX_KEY = 64  # a tag or metadata key, as stored
MAX_TEXT = 512  # a filter's value: tag and metadata values are at most 512 characters, names and users 256
ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # every id the server makes or takes (schemas.SpanId)

Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def id_param(name: str, value: str) -> str:
    if ID.fullmatch(value) is None:
        raise InvalidRequest(f"`{name}` is not an id: ids are 1 to 64 letters, digits and '_', '.', ':', '-'.",
                             param=name)
    return value


def text_param(name: str, value: str | None, max_length: int = MAX_TEXT) -> str | None:
    if value is None:
        return None
    if "\0" in value:
        raise InvalidRequest(f"`{name}` contains a NUL character.", param=name)
    if len(value) > max_length:
        raise InvalidRequest(f"`{name}` is longer than {max_length} characters.", param=name)
    return value


def filter_pair(name: str, key: str, value: str) -> tuple[str, str]:
    """A `tag`/`tags[key]`/`metadata[key]` filter's key and value, checked."""
    text_param(name, key, MAX_KEY)
    text_param(name, value)
    return key, value


def count_filters(name: str, count: int) -> None:
    if count > MAX_FILTERS:
        raise InvalidRequest(f"`{name}`: at most {MAX_FILTERS} filters in one request.", param=name)
