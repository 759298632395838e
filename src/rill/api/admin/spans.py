"""The span and trace API (Opper's shapes, so the `opperai` SDK's spans/traces calls work with
its server_url at Rill's `<root>/v1`): open a workflow span, nest completions under it with
`parent_span_id`, close it, and browse traces.

Ids are per API key: a key's `nightly-42` is its own, and another key's `nightly-42` is another
span (or trace) that neither learns of. A span created with an `id` or a `trace_id` (and no
parent) is in the creating key's own namespace, an admin's too; an admin reading, changing or
nesting under an id gets its own object of that id if it has one, else the first one written
(docs/store.md)."""

from __future__ import annotations

import datetime
import math
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from starlette.responses import Response

from rill.api.http.auth import owner_of, scope_of
from rill.api.http.body import read_body
from rill.api.http.errors import JSONResponse
from rill.api.admin.list_params import Limit, Offset, count_filters, filter_pair, id_param, text_param
from rill.api.admin.schemas import CreateSpan, UpdateSpan
from rill.api.core.tracing import find_parent, new_span_id
from rill.errors import InvalidRequest, NotFound
from rill.store.json_codec import UnstorableValue
from rill.store.span_shapes import span_object
from rill.store.spans import SpanExists, SpanRecord, SpanStore, SpanTimeError, TraceFilter
from rill.store.writer import SpanWriter

router = APIRouter()


def _store(request: Request) -> SpanStore:
    return request.app.state.spans


def _writer(request: Request) -> SpanWriter:
    return request.app.state.span_writer


def _body(model: type) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _seconds(value: datetime.datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # a zone-less time is UTC
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()


def _check_range(start: float, end: float | None) -> None:
    if end is not None and end < start:
        raise InvalidRequest("`end_time` is before `start_time`.", param="end_time")


def _missing_span(span_id: str) -> NotFound:
    return NotFound(f"No span found with id '{span_id}'.", param="span_id")


def _check_text_fields(values: dict[str, Any]) -> None:
    """Postgres's text columns cannot hold a NUL character: a 400 on both databases."""
    for name in ("name", "type", "error"):
        if "\0" in (values.get(name) or ""):
            raise InvalidRequest(f"`{name}` contains a NUL character.", param=name)


def _unstorable(exc: UnstorableValue) -> InvalidRequest:
    return InvalidRequest(f"The span cannot be stored: a field is {exc}.")


async def _settled(request: Request, span_id: str) -> None:
    """A span still in the writer's queue is written before it is changed."""
    if _writer(request).pending(span_id) is not None:
        await _writer(request).flush()


async def _all_settled(request: Request) -> None:
    """Traces are read from the database: what the writer holds goes there first, so a trace
    read right after a completion shows its span."""
    if _writer(request).queue_depth:
        await _writer(request).flush()


@router.post("/v1/spans", summary="Create a span", openapi_extra=_body(CreateSpan))
async def create_span(request: Request) -> JSONResponse:
    body = await read_body(request, CreateSpan)
    _check_text_fields(body.model_dump(include={"name", "type", "error"}))
    owner = owner_of(request)
    if body.parent_id is not None:
        parent = await find_parent(request, body.parent_id, "parent_id")
        if body.trace_id is not None and body.trace_id != parent.trace_id:
            raise InvalidRequest(f"`trace_id`: the parent span is in trace '{parent.trace_id}'.", param="trace_id")
        parent_id, trace_id, trace_owner = parent.span_id, parent.trace_id, parent.trace_owner
    else:  # a root, or a span beside the root of one of the key's own traces (an admin's too)
        parent_id, trace_id, trace_owner = None, body.trace_id or new_span_id(), owner
    start = _seconds(body.start_time) or time.time()
    end = _seconds(body.end_time)
    _check_range(start, end)
    record = SpanRecord(id=body.id or new_span_id(), trace_id=trace_id, trace_owner=trace_owner,
                        parent_id=parent_id, owner=owner, name=body.name, type=body.type, start_time=start,
                        end_time=end, input=body.input, output=body.output, error=body.error, meta=body.meta,
                        score=body.score, tags=body.tags or {})
    queued = _writer(request).pending(record.id)
    if queued is not None and queued.owner == owner:
        raise InvalidRequest(f"`id`: a span with id '{record.id}' exists already.", param="id")
    try:
        await _store(request).insert(record)
    except SpanExists as exc:
        where = f" in trace '{trace_id}'" if exc.in_trace else ""
        raise InvalidRequest(f"`id`: a span with id '{record.id}' exists already{where}.", param="id") from None
    except UnstorableValue as exc:
        raise _unstorable(exc) from None
    return JSONResponse(span_object(record))


@router.get("/v1/spans/{span_id}", summary="Retrieve a span (by its id or its chat completion's id)")
async def get_span(request: Request, span_id: str) -> JSONResponse:
    id_param("span_id", span_id)
    scope = scope_of(request)
    queued = _writer(request).pending(span_id)
    if queued is not None and (scope is None or queued.owner == scope):
        return JSONResponse(span_object(queued))
    found = await _store(request).get(scope, span_id, own=owner_of(request))
    if found is None:
        raise _missing_span(span_id)
    return JSONResponse(found)


@router.patch("/v1/spans/{span_id}", summary="Update a span (end it, its output, error, meta)",
              openapi_extra=_body(UpdateSpan))
async def update_span(request: Request, span_id: str) -> JSONResponse:
    id_param("span_id", span_id)
    body = await read_body(request, UpdateSpan)
    changes: dict[str, Any] = {name: getattr(body, name) for name in body.model_fields_set}
    _check_text_fields(changes)
    if "name" in changes and changes["name"] is None:
        raise InvalidRequest("`name`: a span's name cannot be null.", param="name")
    for name in ("start_time", "end_time"):
        if name in changes:
            changes[name] = _seconds(changes[name])
    if "start_time" in changes and changes["start_time"] is None:
        raise InvalidRequest("`start_time`: a span's start time cannot be null.", param="start_time")
    if "tags" in changes:
        changes["tags"] = changes["tags"] or {}
    await _settled(request, span_id)
    try:
        updated = await _store(request).update(scope_of(request), span_id, changes, own=owner_of(request))
    except SpanTimeError:
        raise InvalidRequest("`end_time` is before `start_time`.", param="end_time") from None
    except UnstorableValue as exc:
        raise _unstorable(exc) from None
    if updated is None:
        raise _missing_span(span_id)
    return JSONResponse(updated)


@router.delete("/v1/spans/{span_id}", status_code=204, summary="Delete a span and the spans under it")
async def delete_span(request: Request, span_id: str) -> Response:
    id_param("span_id", span_id)
    await _settled(request, span_id)
    if not await _store(request).delete(scope_of(request), span_id, own=owner_of(request)):
        raise _missing_span(span_id)
    return Response(status_code=204)


def _time_param(name: str, value: str | None) -> float | None:
    """ISO 8601 or Unix seconds."""
    if text_param(name, value, max_length=64) is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = _seconds(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            raise InvalidRequest(f"`{name}`: not a time (ISO 8601 or Unix seconds): {value!r}", param=name) from None
    if not math.isfinite(seconds):
        raise InvalidRequest(f"`{name}`: not a time (ISO 8601 or Unix seconds): {value!r}", param=name)
    return seconds


def _tag_filters(request: Request) -> tuple[tuple[str, str], ...]:
    """`tag=key:value` (repeatable) or `tags[key]=value`; at most MAX_FILTERS."""
    out = []
    for name, value in request.query_params.multi_items():
        if name == "tag":
            key, sep, tag_value = value.partition(":")
            if not sep or not key:
                raise InvalidRequest("Filter by tag as `tag=key:value`.", param="tag")
            out.append(filter_pair(name, key, tag_value))
        elif name.startswith("tags[") and name.endswith("]") and len(name) > 6:
            out.append(filter_pair("tags", name[5:-1], value))
        elif name.startswith("tags"):
            raise InvalidRequest("Filter by tag as `tags[key]=value` or `tag=key:value`.", param=name[:80])
        count_filters("tag", len(out))
    return tuple(out)


@router.get("/v1/traces", summary="List traces, newest first")
async def list_traces(request: Request, limit: Limit = 20, offset: Offset = 0, after: str | None = None,
                      name: str | None = None, model: str | None = None, user: str | None = None,
                      status: Literal["ok", "error", "running"] | None = None,
                      since: str | None = None, until: str | None = None) -> JSONResponse:
    where = TraceFilter(tags=_tag_filters(request), model=text_param("model", model),
                        user=text_param("user", user), name=text_param("name", name), status=status,
                        since=_time_param("since", since), until=_time_param("until", until))
    if after is not None:
        id_param("after", after)
    await _all_settled(request)
    page = await _store(request).list_traces(scope_of(request), where, after=after, offset=offset, limit=limit,
                                             own=owner_of(request))
    if page is None:
        raise NotFound(f"No trace found with id '{after}'.", param="after")
    data, has_more, total = page
    return JSONResponse({"object": "list", "data": data, "has_more": has_more,
                         "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
                         "meta": {"total_count": total}})


@router.get("/v1/traces/{trace_id}", summary="A trace with its spans in tree order")
async def get_trace(request: Request, trace_id: str) -> JSONResponse:
    id_param("trace_id", trace_id)
    await _all_settled(request)
    found = await _store(request).trace(scope_of(request), trace_id, own=owner_of(request))
    if found is None:
        raise NotFound(f"No trace found with id '{trace_id}'.", param="trace_id")
    return JSONResponse(found)
