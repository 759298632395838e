"""OpenAI's stored-completions API over the store: list, retrieve, messages, update metadata,
delete. (Creating one is `store: true` on a chat completion: see protocols/chat/route.py.) Each call sees only
the calling key's completions (an admin key: everyone's); another key's id is not found."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request

from rill.api.http.auth import scope_of
from rill.api.http.body import read_body
from rill.api.http.errors import JSONResponse
from rill.api.admin.list_params import Limit, count_filters, filter_pair, id_param, text_param
from rill.api.admin.schemas import UpdateStoredCompletion
from rill.errors import InvalidRequest, NotFound
from rill.store.completions import CompletionStore

router = APIRouter()

Order = Literal["asc", "desc"]


def _store(request: Request) -> CompletionStore:
    return request.app.state.completions


def _missing(completion_id: str) -> NotFound:
    return NotFound(f"No stored chat completion found with id '{completion_id}'.", param="completion_id")


def _page(data: list[dict[str, Any]], has_more: bool) -> JSONResponse:
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": has_more})


def _metadata_filter(request: Request) -> dict[str, str]:
    """`metadata[key]=value` query parameters (as the openai client sends a metadata filter); at
    most MAX_FILTERS."""
    out = {}
    count = 0
    for name, value in request.query_params.multi_items():
        if name.startswith("metadata[") and name.endswith("]"):
            key, value = filter_pair("metadata", name[len("metadata["):-1], value)
            out[key] = value
            count += 1
            count_filters("metadata", count)
        elif name.startswith("metadata"):
            raise InvalidRequest("Filter by metadata as `metadata[key]=value`.", param=name[:80])
    return out


@router.get("/v1/chat/completions", summary="List stored chat completions")
async def list_stored(request: Request, after: str | None = None, limit: Limit = 20, order: Order = "asc",
                      model: str | None = None) -> JSONResponse:
    if after is not None:
        id_param("after", after)
    page = await _store(request).list(scope_of(request), after=after, limit=limit, order=order,
                                      model=text_param("model", model), metadata=_metadata_filter(request))
    if page is None:
        raise _missing(after or "")
    return _page(*page)


@router.get("/v1/chat/completions/{completion_id}", summary="Retrieve a stored chat completion")
async def retrieve_stored(request: Request, completion_id: str) -> JSONResponse:
    id_param("completion_id", completion_id)
    found = await _store(request).get(scope_of(request), completion_id)
    if found is None:
        raise _missing(completion_id)
    return JSONResponse(found)


@router.get("/v1/chat/completions/{completion_id}/messages", summary="The messages of a stored chat completion")
async def stored_messages(request: Request, completion_id: str, after: str | None = None, limit: Limit = 20,
                          order: Order = "asc") -> JSONResponse:
    id_param("completion_id", completion_id)
    messages = await _store(request).messages(scope_of(request), completion_id)
    if messages is None:
        raise _missing(completion_id)
    if order == "desc":
        messages.reverse()
    if after is not None:
        text_param("after", after, max_length=128)
        ids = [m["id"] for m in messages]
        if after not in ids:
            raise NotFound(f"No message '{after}' in chat completion '{completion_id}'.", param="after")
        messages = messages[ids.index(after) + 1:]
    return _page(messages[:limit], len(messages) > limit)


@router.post("/v1/chat/completions/{completion_id}", summary="Update a stored chat completion's metadata",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/UpdateStoredCompletion"}}}}})
async def update_stored(request: Request, completion_id: str) -> JSONResponse:
    id_param("completion_id", completion_id)
    body = await read_body(request, UpdateStoredCompletion)
    updated = await _store(request).update_metadata(scope_of(request), completion_id, body.metadata or {})
    if updated is None:
        raise _missing(completion_id)
    return JSONResponse(updated)


@router.delete("/v1/chat/completions/{completion_id}", summary="Delete a stored chat completion")
async def delete_stored(request: Request, completion_id: str) -> JSONResponse:
    id_param("completion_id", completion_id)
    if not await _store(request).delete(scope_of(request), completion_id):
        raise _missing(completion_id)
    return JSONResponse({"object": "chat.completion.deleted", "id": completion_id, "deleted": True})
