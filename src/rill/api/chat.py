"""POST /v1/chat/completions (and the Opper SDK's paths): validate -> plan -> stream or collect."""

from __future__ import annotations

import functools
import time
from typing import TypeVar

import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError

from rill.api.errors import invalid_body
from rill.errors import InvalidRequest

from rill.api.plan import plan_chat
from rill.api.schemas import ChatCompletionRequest, ErrorResponse
from rill.api.stream import EngineResponse, collect, sse_events
from rill.api.auth import owner_of, scope_of
from rill.api.tracing import SPAN_TYPE, ChatSpan, locate_parent, new_span_id
from rill.store.spans import SpanRecord

router = APIRouter()
T = TypeVar("T", bound=BaseModel)

CHAT_PATHS = (
    "/v1/chat/completions",
    "/v1/openai/chat/completions",  # the Opper SDK with server_url=<root>/v1
    "/openai/chat/completions",  # the Opper SDK with server_url=<root>
    "/v2/openai/chat/completions",
)

_RESPONSES: dict[int | str, dict] = {
    200: {"description": "A `chat.completion` object, or with `stream: true` an SSE stream of "
                         "`chat.completion.chunk` objects ending in `data: [DONE]`.",
          "content": {"application/json": {}, "text/event-stream": {}}},
    **{code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 503)},
}


# The body is parsed here rather than by FastAPI, so that JSON sent with any Content-Type (as
# `curl -d` does) is read as JSON, and a body over the size limit stays a 413.
_REQUEST_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}}}}


async def read_request(request: Request) -> ChatCompletionRequest:
    return await read_body(request, ChatCompletionRequest)


async def read_body(request: Request, schema: type[T]) -> T:
    """The JSON body validated against schema; any problem is a 400 naming the field."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise invalid_body(exc.errors(), data) from None


async def create_chat_completion(request: Request) -> EngineResponse:
    """Create a chat completion. `stream: true` answers with server-sent events
    (`chat.completion.chunk` objects, then `data: [DONE]`), otherwise one `chat.completion`.
    The response's `x-rill-span-id` header names the span that records it."""
    arrived, arrived_wall = time.monotonic(), time.time()
    body = await read_request(request)
    state = request.app.state
    model = state.router.resolve(body.model)
    # Rendering and tokenizing a long prompt takes milliseconds: keep it off the event loop.
    plan = await anyio.to_thread.run_sync(functools.partial(plan_chat, body, model, max_n=state.config.max_n))
    owner = owner_of(request)
    parent_id, trace_id = None, new_span_id()
    if body.parent_span_id is not None:
        parent_id, trace_id = await locate_parent(request, body.parent_span_id, scope_of(request), "parent_span_id")
    messages = [m.model_dump(mode="json", exclude_none=True) for m in body.messages]
    save = None
    if plan.store:
        save = functools.partial(state.completions.save, owner, messages=messages, metadata=body.metadata or {})
    stream = model.engine.submit(plan.request)
    span = ChatSpan(state.span_writer, getattr(state, "metrics", None), SpanRecord(
        id=new_span_id(), trace_id=trace_id, parent_id=parent_id, owner=owner, name=SPAN_TYPE, type=SPAN_TYPE,
        start_time=arrived_wall, model=model.id, user=body.user, completion_id=plan.id, input=messages,
        tags=body.tags or {}, meta={"params": body.model_dump(mode="json", exclude_none=True, exclude=_NOT_PARAMS)}),
        started=arrived)
    if plan.stream:
        return EngineResponse(stream=sse_events(plan, stream, save, span), headers=span.headers)
    return EngineResponse(collect=lambda: collect(plan, stream, save, span), headers=span.headers)


# what a span keeps elsewhere (input, tags, parent, user, model) or not at all
_NOT_PARAMS = {"messages", "tags", "parent_span_id", "user", "model", "metadata"}


for _i, _path in enumerate(CHAT_PATHS):
    router.add_api_route(
        _path, create_chat_completion, methods=["POST"], responses=_RESPONSES,
        include_in_schema=_i == 0, openapi_extra=_REQUEST_BODY, summary="Create a chat completion",
        operation_id="createChatCompletion" if _i == 0 else f"createChatCompletion{_i}",
    )
