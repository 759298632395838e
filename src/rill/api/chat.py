"""POST /v1/chat/completions (and the Opper SDK's paths): validate -> plan -> stream or collect."""

from __future__ import annotations

import functools
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
from rill.store.completions import OPEN_OWNER

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
    (`chat.completion.chunk` objects, then `data: [DONE]`), otherwise one `chat.completion`."""
    body = await read_request(request)
    state = request.app.state
    model = state.router.resolve(body.model)
    # Rendering and tokenizing a long prompt takes milliseconds: keep it off the event loop.
    plan = await anyio.to_thread.run_sync(functools.partial(plan_chat, body, model, max_n=state.config.max_n))
    save = None
    if plan.store:
        messages = [m.model_dump(mode="json", exclude_none=True) for m in body.messages]
        save = functools.partial(state.completions.save, OPEN_OWNER, messages=messages, metadata=body.metadata or {})
    stream = model.engine.submit(plan.request)
    if plan.stream:
        return EngineResponse(stream=sse_events(plan, stream, save))
    return EngineResponse(collect=lambda: collect(plan, stream, save))


for _i, _path in enumerate(CHAT_PATHS):
    router.add_api_route(
        _path, create_chat_completion, methods=["POST"], responses=_RESPONSES,
        include_in_schema=_i == 0, openapi_extra=_REQUEST_BODY, summary="Create a chat completion",
        operation_id="createChatCompletion" if _i == 0 else f"createChatCompletion{_i}",
    )
