"""OpenAI's stored-completions API over the store: list, retrieve, messages, update metadata,
delete. (Creating one is `store: true` on a chat completion: see chat.py.) Each call sees only
the calling key's completions (an admin key: everyone's); another key's id is not found."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from rill.api.auth import scope_of
from rill.api.chat import read_body
from rill.api.errors import JSONResponse
from rill.api.schemas import UpdateStoredCompletion
from rill.errors import InvalidRequest, NotFound
from rill.store.completions import CompletionStore

router = APIRouter()

Limit = Annotated[int, Query(ge=1, le=100)]
Order = Literal["asc", "desc"]


def _store(request: Request) -> CompletionStore:
    return request.app.state.completions


def _missing(completion_id: str) -> NotFound:
    return NotFound(f"No stored chat completion found with id '{completion_id}'.", param="completion_id")


def _page(data: list[dict[str, Any]], has_more: bool) -> JSONResponse:
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": has_more})


def _metadata_filter(request: Request) -> dict[str, str]:
    """`metadata[key]=value` query parameters (as the openai client sends a metadata filter)."""
    out = {}
    for name, value in request.query_params.multi_items():
        if name.startswith("metadata[") and name.endswith("]"):
            out[name[len("metadata["):-1]] = value
        elif name.startswith("metadata"):
            raise InvalidRequest("Filter by metadata as `metadata[key]=value`.", param=name)
    return out


@router.get("/v1/chat/completions", summary="List stored chat completions")
async def list_stored(request: Request, after: str | None = None, limit: Limit = 20, order: Order = "asc",
                      model: str | None = None) -> JSONResponse:
    page = await _store(request).list(scope_of(request), after=after, limit=limit, order=order, model=model,
                                      metadata=_metadata_filter(request))
    if page is None:
        raise _missing(after or "")
    return _page(*page)


@router.get("/v1/chat/completions/{completion_id}", summary="Retrieve a stored chat completion")
async def retrieve_stored(request: Request, completion_id: str) -> JSONResponse:
    found = await _store(request).get(scope_of(request), completion_id)
    if found is None:
        raise _missing(completion_id)
    return JSONResponse(found)


@router.get("/v1/chat/completions/{completion_id}/messages", summary="The messages of a stored chat completion")
async def stored_messages(request: Request, completion_id: str, after: str | None = None, limit: Limit = 20,
                          order: Order = "asc") -> JSONResponse:
    messages = await _store(request).messages(scope_of(request), completion_id)
    if messages is None:
        raise _missing(completion_id)
    if order == "desc":
        messages.reverse()
    if after is not None:
        ids = [m["id"] for m in messages]
        if after not in ids:
            raise NotFound(f"No message '{after}' in chat completion '{completion_id}'.", param="after")
        messages = messages[ids.index(after) + 1:]
    return _page(messages[:limit], len(messages) > limit)


@router.post("/v1/chat/completions/{completion_id}", summary="Update a stored chat completion's metadata",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/UpdateStoredCompletion"}}}}})
async def update_stored(request: Request, completion_id: str) -> JSONResponse:
    body = await read_body(request, UpdateStoredCompletion)
    updated = await _store(request).update_metadata(scope_of(request), completion_id, body.metadata or {})
    if updated is None:
        raise _missing(completion_id)
    return JSONResponse(updated)


@router.delete("/v1/chat/completions/{completion_id}", summary="Delete a stored chat completion")
async def delete_stored(request: Request, completion_id: str) -> JSONResponse:
    if not await _store(request).delete(scope_of(request), completion_id):
        raise _missing(completion_id)
    return JSONResponse({"object": "chat.completion.deleted", "id": completion_id, "deleted": True})
