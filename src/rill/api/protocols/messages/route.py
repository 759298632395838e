"""POST /v1/messages and /v1/messages/count_tokens (Anthropic's Messages API) on a local model.

Claude Code posts to `/v1/messages?beta=true` with `anthropic-version` / `anthropic-beta`
headers: the query and the headers are accepted and change nothing. The key comes as `x-api-key`
or a Bearer token (http/auth.py). Every error under /v1/messages leaves in Anthropic's shape
(errors.py, registered with http/errors.py below), those of the shared plumbing included (401,
413, bad JSON). A stream is sent as text/event-stream whatever the Accept header says (Claude
Code asks for JSON while streaming). An upstream (gateway) model gets the request bridged to its
/chat/completions, or passed through when it serves the Messages API itself (docs/gateway.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from fastapi import APIRouter
from starlette.requests import Request
from starlette.routing import Route

from rill.api.core import run
from rill.api.core.events import Failure, Finish
from rill.api.core import web_search
from rill.api.core.messages import with_system_text
from rill.api.core.passthrough import native_upstream, relay, relayed
from rill.api.core.upstream import AnyGeneration, start_any
from rill.api.http.body import read_json, validated
from rill.api.http.errors import ERROR_SHAPES, JSONResponse
from rill.api.http.response import EngineResponse, Outcome
from rill.api.protocols.messages.errors import PATH_PREFIX, error_body
from rill.api.protocols.messages.events import MessageEvents, error_event, sse
from rill.api.protocols.messages.mapping import WebSearch, map_request
from rill.api.protocols.messages.schemas import (AnthropicError, AnthropicMessage, AnthropicTokenCount,
                                                 CountMessageTokensRequest, MessagesRequest)
from rill.errors import InvalidRequest, UnsupportedParameter
from rill.router import LocalModel
from rill.search.providers import SearchProvider, SearchResult

MESSAGES_PATH = PATH_PREFIX
COUNT_TOKENS_PATH = PATH_PREFIX + "/count_tokens"
PROTOCOL = "messages"

ERROR_SHAPES[PATH_PREFIX] = error_body  # every answer under /v1/messages: Anthropic's error shape

router = APIRouter()



def _local(request: Request, name: str) -> LocalModel:
    """The local model `name` names, for counting tokens (an upstream's tokenizer is not known
    here: a 400, unless it serves the Messages API itself)."""
    model = request.app.state.router.candidates(name)[0]
    if not isinstance(model, LocalModel):
        raise UnsupportedParameter(
            f"`model`: `{model.id}` is an upstream (gateway) model whose tokenizer this server does not have; "
            "count_tokens is answered for local models, and for upstreams that serve the Messages API "
            "themselves (supports = [\"messages\"] in rill.toml).", param="model")
    return model


def _span_input(raw: dict[str, Any]) -> list[Any]:
    """The conversation as the client sent it, its system prompt first (as the trace browser shows chat's)."""
    messages = raw.get("messages")
    messages = list(messages) if isinstance(messages, list) else []
    system = raw.get("system")
    return [{"role": "system", "content": system}, *messages] if system else messages


_NOT_PARAMS = {"messages", "system", "model", "metadata"}  # kept as the span's input, model and user


async def create_message(request: Request) -> EngineResponse:
    """Create a Message. With `stream: true`, server-sent events as Anthropic sends them
    (`message_start`, `content_block_*`, `message_delta`, `message_stop`; `ping`s), else the
    whole `message`. The `x-rill-span-id` header names the span that records it."""
    raw = await read_json(request)
    body = validated(raw, MessagesRequest)
    state = request.app.state
    mapped = map_request(body, search_configured=state.search is not None)
    candidates = state.router.candidates(body.model)
    span = run.open_span(request, protocol=PROTOCOL, model_id=candidates[0].id, input=_span_input(raw),
                         params={k: v for k, v in raw.items() if k not in _NOT_PARAMS and v is not None},
                         user=mapped.user)
    native = native_upstream(PROTOCOL, candidates)
    if native is not None:  # it serves the Messages API itself: passed through
        answer = await relay(request, PROTOCOL, raw, native, span, last_resort=len(candidates) == 1)
        if answer is not None:
            return relayed(answer, span.headers)
        candidates = candidates[1:]  # its tries failed: the fallbacks, bridged
    gen = mapped.request
    if mapped.web_search is not None:
        text, record = await _search(state.search, mapped.web_search, gen.messages)
        gen = dataclasses.replace(gen, messages=with_system_text(gen.messages, text))
        span.record.meta["web_search"] = record
    generation = await start_any(request, gen, candidates, span)
    builder = MessageEvents(_message_id(generation.id), generation.model.id, generation.num_prompt_tokens,
                            show_thinking=mapped.show_thinking)
    headers = {**span.headers, "request-id": "req_" + span.record.id.replace("-", "")}
    if gen.stream:
        return EngineResponse(stream=_stream(generation, builder), headers=headers, on_close=generation.close)
    return EngineResponse(collect=lambda: _collect(generation, builder), headers=headers, on_close=generation.close)


async def count_message_tokens(request: Request) -> JSONResponse:
    """Count the tokens of a Message's prompt: exactly what the model would be sent (system
    prompt, messages, tools, as the chat template renders them)."""
    raw = await read_json(request)
    body = validated(raw, CountMessageTokensRequest)
    mapped = map_request(body, search_configured=True)  # the search's results are not counted
    candidates = request.app.state.router.candidates(body.model)
    native = native_upstream(PROTOCOL, candidates)
    if native is not None:
        span = run.open_span(request, protocol=PROTOCOL, model_id=native.id, input=_span_input(raw), params={})
        answer = await relay(request, PROTOCOL, raw, native, span, last_resort=True, path="messages/count_tokens")
        assert isinstance(answer, tuple)  # a JSON answer
        return JSONResponse(answer[1], status_code=answer[0])
    model = _local(request, body.model)
    return JSONResponse({"input_tokens": await run.count_tokens(request, mapped.request, model)})


def _message_id(generation_id: str) -> str:
    return "msg_" + generation_id.rsplit("-", 1)[-1]


async def _stream(generation: AnyGeneration, builder: MessageEvents) -> AsyncIterator[bytes]:
    events = generation.events()
    try:
        for event in builder.start():
            yield sse(event)
        async for out in events:
            if out is None:  # 15 s without an event (queued, or a long prompt): keep proxies from closing
                yield sse(("ping", {"type": "ping"}))
            elif isinstance(out, Failure):
                yield sse(error_event(out))
                return
            else:
                for event in builder.feed(out):
                    yield sse(event)
                if isinstance(out, Finish):
                    return
    finally:
        await events.aclose()  # leaving early (the client went) aborts the engine request


async def _collect(generation: AnyGeneration, builder: MessageEvents) -> Outcome:
    events = generation.events()
    try:
        async for out in events:
            if isinstance(out, Failure):
                return out.error.status, error_body(out.error), out.error.headers()
            if out is not None:
                builder.feed(out)
                if isinstance(out, Finish):
                    return 200, builder.message()
    finally:
        await events.aclose()
    raise InvalidRequest("the request ended without an answer")  # pragma: no cover


# ---- web search -------------------------------------------------------------------------------


def _allowed(result: SearchResult, search: WebSearch) -> bool:
    host = (urlsplit(result.url).hostname or "").lower()

    def under(domain: str) -> bool:
        return host == domain or host.endswith("." + domain)

    if search.allowed_domains and not any(under(d) for d in search.allowed_domains):
        return False
    return not any(under(d) for d in search.blocked_domains)


async def _search(provider: SearchProvider, search: WebSearch, messages: tuple) -> tuple[str, dict[str, Any]]:
    """One search of the last user message; the results (within the medium context budget) as
    system text, and what the span records of it."""
    found = await web_search.search(provider, messages, param="messages", place=search.user_location,
                                    keep=lambda result: _allowed(result, search))
    return found.text, found.record


# ---- routes -----------------------------------------------------------------------------------

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": AnthropicError}
                                            for code in (400, 401, 404, 413, 429, 503)}


def _body(schema: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema}"}}}}}


# Served by plain Starlette routes (app.py puts them first, as chat's: see protocols/chat/route.py);
# the FastAPI routes are the same handlers, there for the OpenAPI document.
fast_routes = [Route(MESSAGES_PATH, create_message, methods=["POST"]),
               Route(COUNT_TOKENS_PATH, count_message_tokens, methods=["POST"])]
router.add_api_route(MESSAGES_PATH, create_message, methods=["POST"], openapi_extra=_body("MessagesRequest"),
                     responses={200: {"model": AnthropicMessage, "description": "A `message`, or with `stream: true` "
                                      "an SSE stream of Anthropic's events (`message_start` ... `message_stop`).",
                                      "content": {"application/json": {}, "text/event-stream": {}}}, **_ERRORS},
                     summary="Create a Message (Anthropic's Messages API)", operation_id="createMessage")
router.add_api_route(COUNT_TOKENS_PATH, count_message_tokens, methods=["POST"],
                     openapi_extra=_body("CountMessageTokensRequest"),
                     responses={200: {"model": AnthropicTokenCount}, **_ERRORS},
                     summary="Count the tokens of a Message's prompt", operation_id="countMessageTokens")
