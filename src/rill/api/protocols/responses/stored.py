"""Stored responses: what a response keeps (`store`, true by default as on OpenAI), the
conversation `previous_response_id` continues, and the routes that read and delete them:
`GET /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`, `DELETE /v1/responses/{id}`.

Each response belongs to the API key that made it (an admin key sees all), as stored chat
completions do; another key's id is not found. `store: false` keeps nothing, so such a response
cannot be retrieved or continued (404). Input items are kept as given, each with an `id` (the
client's own, or one made here), a message's string content as its one text part.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal, Sequence

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from rill.api.admin.list_params import Limit, id_param
from rill.api.http.auth import scope_of
from rill.api.http.errors import JSONResponse
from rill.api.http.response import sse
from rill.api.protocols.responses import schemas as w
from rill.api.protocols.responses.events import replay
from rill.api.protocols.responses.mapping import history_items
from rill.errors import InvalidRequest, NotFound
from rill.store.responses import ChainTooLong, ResponseStore, UnknownCursor

router = APIRouter()

# an input item's id prefix, by type, for items sent without one
_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "custom_tool_call": "ctc",
             "custom_tool_call_output": "ctco", "reasoning": "rs", "tool_search_call": "tsc",
             "tool_search_output": "tso", "web_search_call": "ws"}


def _store(request: Request) -> ResponseStore:
    return request.app.state.responses


def missing(response_id: str, param: str = "response_id") -> NotFound:
    return NotFound(f"No response found with id '{response_id}'.", param=param)


def input_items(raw_input: Any, items: Sequence[w.InputItem]) -> list[dict[str, Any]]:
    """This request's input items as they are kept: as sent, with ids, a message's string content as
    one `input_text` (an assistant's: `output_text`) part."""
    if isinstance(raw_input, str):
        return [{"id": _new_id("msg"), "type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": raw_input}]}]
    out = []
    for item in items:
        kept = item.model_dump(mode="json", exclude_none=True, by_alias=True)
        if isinstance(item, w.MessageItem):
            kept["type"] = "message"
            if isinstance(item.content, str):
                part = "output_text" if item.role == "assistant" else "input_text"
                kept["content"] = [{"type": part, "text": item.content,
                                    **({"annotations": []} if part == "output_text" else {})}]
        if not isinstance(kept.get("id"), str):
            kept = {"id": _new_id(_PREFIXES.get(kept.get("type", ""), "item")), **kept}
        out.append(kept)
    return out


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


async def conversation(request: Request, response_id: str) -> list[w.InputItem]:
    """The items `previous_response_id` continues, oldest first: 404 when there is no such stored
    response for this key (or one before it is gone), 400 past the store's chain bound."""
    try:
        found = await _store(request).conversation(scope_of(request), response_id)
    except ChainTooLong as exc:
        raise InvalidRequest(f"`previous_response_id`: {exc}.", param="previous_response_id") from None
    if found is None:
        raise missing(response_id, "previous_response_id")
    return history_items(found)


# ---- routes -----------------------------------------------------------------------------------


@router.get("/v1/responses/{response_id}", summary="Retrieve a stored response",
            responses={200: {"description": "The `response` object, or with `stream=true` its events again.",
                             "content": {"application/json": {}, "text/event-stream": {}}}})
async def retrieve_response(request: Request, response_id: str,
                            include: list[str] | None = Query(default=None, alias="include[]"),
                            stream: bool = False, starting_after: Annotated[int, Query(ge=0)] | None = None,
                            include_obfuscation: bool = True) -> Response:
    """The response as it was returned. `include[]` is accepted (what it asks for was kept, or
    could not be produced). `stream=true` sends its events again (each item's content as one
    delta), after `starting_after` when given; `include_obfuscation` is accepted."""
    id_param("response_id", response_id)
    found = await _store(request).get(scope_of(request), response_id)
    if found is None:
        raise missing(response_id)
    if stream:
        body = b"".join(sse(event, event["type"]) for event in replay(found, starting_after))
        return Response(body, media_type="text/event-stream", headers={"cache-control": "no-cache"})
    return JSONResponse(found)


@router.get("/v1/responses/{response_id}/input_items", summary="List a stored response's input items")
async def list_input_items(request: Request, response_id: str, after: str | None = None, limit: Limit = 20,
                           order: Literal["asc", "desc"] = "desc",
                           include: list[str] | None = Query(default=None, alias="include[]")) -> JSONResponse:
    """The input items of a stored response, the last first by default (OpenAI's order), paged by
    item id with `after` and `limit`."""
    id_param("response_id", response_id)
    if after is not None:
        id_param("after", after)
    try:
        page = await _store(request).input_items(scope_of(request), response_id, after=after, limit=limit,
                                                 order=order)
    except UnknownCursor:
        raise NotFound(f"No input item '{after}' in response '{response_id}'.", param="after") from None
    if page is None:
        raise missing(response_id)
    data, has_more = page
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": has_more})


@router.delete("/v1/responses/{response_id}", summary="Delete a stored response")
async def delete_response(request: Request, response_id: str) -> JSONResponse:
    id_param("response_id", response_id)
    if not await _store(request).delete(scope_of(request), response_id):
        raise missing(response_id)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})
