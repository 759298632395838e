"""POST /v1/chat/completions (and the Opper SDK's paths): validate -> plan -> stream or collect."""

from __future__ import annotations

import functools

import anyio.to_thread
from fastapi import APIRouter, Request

from rill.api.plan import plan_chat
from rill.api.schemas import ChatCompletionRequest, ErrorResponse
from rill.api.stream import EngineResponse, collect, sse_events

router = APIRouter()

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


async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> EngineResponse:
    """Create a chat completion. `stream: true` answers with server-sent events
    (`chat.completion.chunk` objects, then `data: [DONE]`), otherwise one `chat.completion`."""
    state = request.app.state
    model = state.router.resolve(body.model)
    # Rendering and tokenizing a long prompt takes milliseconds: keep it off the event loop.
    plan = await anyio.to_thread.run_sync(functools.partial(plan_chat, body, model, max_n=state.config.max_n))
    stream = model.engine.submit(plan.request)
    if plan.stream:
        return EngineResponse(stream=sse_events(plan, stream))
    return EngineResponse(collect=lambda: collect(plan, stream))


for _i, _path in enumerate(CHAT_PATHS):
    router.add_api_route(
        _path, create_chat_completion, methods=["POST"], responses=_RESPONSES,
        include_in_schema=_i == 0, summary="Create a chat completion",
        operation_id="createChatCompletion" if _i == 0 else f"createChatCompletion{_i}",
    )
