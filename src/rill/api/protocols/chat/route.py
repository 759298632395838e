"""POST /v1/chat/completions (and the Opper SDK's paths): validate -> a local model (plan -> stream or
collect), or the gateway (upstream models, fallbacks)."""

from __future__ import annotations

import functools
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, Request
from starlette.routing import Route

from rill.api.protocols.chat.audio import AudioTrack, with_transcripts
from rill.api.http.auth import owner_of, scope_of
from rill.api.core.run import CLIENT_LEFT
from rill.api.http.body import read_json, validated
from rill.api.protocols.chat.gateway import Gateway
from rill.api.http.offload import off_loop
from rill.api.protocols.chat.plan import check_request, new_completion_id, plan_chat
from rill.api.http.wire import ErrorResponse
from rill.api.protocols.chat.schemas import ChatCompletionRequest
from rill.api.http.response import EngineResponse, Outcome
from rill.api.protocols.chat.stream import Saver, collect, sse_events
from rill.api.core.tracing import SPAN_TYPE, ChatSpan, nest, new_span_id
from rill.api.protocols.chat.web_search import with_search
from rill.router import LocalModel
from rill.store.span_record import SpanRecord

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


# The body is parsed here rather than by FastAPI, so that JSON sent with any Content-Type (as
# `curl -d` does) is read as JSON, and a body over the size limit stays a 413.
_REQUEST_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}}}}


async def read_request(request: Request) -> ChatCompletionRequest:
    return (await read_request_raw(request))[1]


async def read_request_raw(request: Request) -> tuple[dict[str, Any], ChatCompletionRequest]:
    """The body as sent (what an upstream model gets) and validated."""
    data = await read_json(request)
    return data, validated(data, ChatCompletionRequest)


class ChatRequest:
    """One chat request on its way to a model: its body, owner, span and stored-completion saver."""

    def __init__(self, request: Request, raw: dict[str, Any], body: ChatCompletionRequest, span: ChatSpan):
        self.request, self.raw, self.body, self.span = request, raw, body, span
        self.state = request.app.state
        self.owner = span.record.owner
        self.messages: list[dict[str, Any]] = span.record.input
        self.engine_streams: list[Any] = []  # the local engine requests it started

    def close(self) -> None:
        """However the response ended: abort an engine request nobody read (the client left before
        the first read, so the stream's own `finally` never ran) and record the span."""
        for stream in self.engine_streams:
            if not stream.done:
                stream.close()
                self.span.record_outcome([], None, None, error=CLIENT_LEFT)

    def saver(self) -> Saver | None:
        if not self.body.store:
            return None
        return functools.partial(self.state.completions.save, self.owner, messages=self.messages,
                                 metadata=self.body.metadata or {})

    async def local_start(self, model: LocalModel) -> AsyncIterator[bytes] | Callable[[], Awaitable[Outcome]]:
        """Plan and submit to a local model (a 400 for the request, 429 for a full queue, raised
        before anything is sent); its SSE stream, or the collector of its JSON answer."""
        self.span.attempt(model.id)
        body = await with_transcripts(self.body, functools.partial(self.state.transcripts.get,
                                                                   scope_of(self.request)))
        body, sources, searched = await with_search(body, self.state.search)
        if searched is not None:
            self.span.record.meta["web_search"] = searched
        speech = self.state.speech
        # Rendering and tokenizing a long prompt, and compiling a grammar, take milliseconds to a
        # second: off the event loop, and stopped if the client leaves meanwhile.
        plan = await off_loop(self.request, lambda cancelled: plan_chat(
            body, model, max_n=self.state.config.max_n, speech=speech, no_speech=self.state.no_speech,
            sources=sources, cancelled=cancelled))
        save, span = self.saver(), self.span
        keep = functools.partial(self.state.transcripts.save, self.owner)
        tracks = [AudioTrack(speech, plan.audio, stream=plan.stream, save=keep)
                  for _ in range(plan.request.n)] if plan.audio is not None else None
        stream = model.engine.submit(plan.request)
        self.engine_streams.append(stream)
        span.record.model, span.record.completion_id = model.id, plan.id
        if plan.stream:
            return sse_events(plan, stream, save, span, tracks)
        return lambda: collect(plan, stream, save, span, tracks)

    async def local_answer(self, model: LocalModel) -> Outcome | AsyncIterator[bytes]:
        started = await self.local_start(model)
        return await started() if callable(started) else started


async def create_chat_completion(request: Request) -> EngineResponse:
    """Create a chat completion. `stream: true` answers with server-sent events
    (`chat.completion.chunk` objects, then `data: [DONE]`), otherwise one `chat.completion`.
    The response's `x-rill-span-id` header names the span that records it."""
    arrived, arrived_wall = time.monotonic(), time.time()
    raw, body = await read_request_raw(request)
    check_request(body)
    state = request.app.state
    candidates = state.router.candidates(body.model)
    owner = owner_of(request)
    span = ChatSpan.for_request(request, SpanRecord(
        id=new_span_id(), trace_id=new_span_id(), owner=owner, name=SPAN_TYPE, type=SPAN_TYPE,
        start_time=arrived_wall, model=candidates[0].id, user=body.user,
        input=raw["messages"], tags=body.tags or {},  # the messages and fields as the client sent them
        meta={"params": {k: v for k, v in raw.items() if k not in _NOT_PARAMS and v is not None}}), started=arrived)
    await _nest(request, body, span)
    chat = ChatRequest(request, raw, body, span)
    if len(candidates) == 1 and isinstance(candidates[0], LocalModel):  # no fallback: errors raise here
        started = await chat.local_start(candidates[0])
        if callable(started):
            return EngineResponse(collect=started, headers=span.headers, on_close=chat.close)
        return EngineResponse(stream=started, headers=span.headers, on_close=chat.close)
    gateway = Gateway(raw=raw, span=span, completion_id=new_completion_id(), save=chat.saver(),
                      local_start=chat.local_answer, metrics=getattr(state, "metrics", None))
    return EngineResponse(start=lambda: gateway.run(candidates), headers=span.headers, on_close=chat.close)


async def _nest(request: Request, body: ChatCompletionRequest, span: ChatSpan) -> None:
    """`parent_span_id`: the span joins its parent's trace (a 400 if there is no such span), which
    may be another key's when an admin key nests it."""
    if body.parent_span_id is not None:
        await nest(request, span.record, body.parent_span_id, "parent_span_id")


# what a span keeps elsewhere (input, tags, parent, user, model) or not at all
_NOT_PARAMS = {"messages", "tags", "parent_span_id", "user", "model", "metadata"}


# The route that serves: plain Starlette routes, ahead of FastAPI's (app.py puts them first).
# FastAPI's per-request dependency solving cost about a tenth of a gateway request's time in
# Rill, and this handler takes only the Request. The FastAPI route below is the same handler,
# there for the OpenAPI document (requests never reach it).
fast_routes = [Route(path, create_chat_completion, methods=["POST"]) for path in CHAT_PATHS]
router.add_api_route(CHAT_PATHS[0], create_chat_completion, methods=["POST"], responses=_RESPONSES,
                     openapi_extra=_REQUEST_BODY, summary="Create a chat completion",
                     operation_id="createChatCompletion")
