"""POST /v1/responses (OpenAI's Responses API) on a local model, and the stored responses'
routes (stored.py).

A request is validated (schemas.py), continued from its stored conversation when it names
`previous_response_id` (stored.py), mapped to the core's GenerationRequest (mapping.py), searched
first when it offers web search and a provider is configured, cut to fit with `truncation: auto`,
then run (core/run.py); the core's events become the Responses events (events.py), streamed or
assembled into one response. With `store` (the default), the finished response is kept before its
last event is sent, so a client that saw `response.completed` can retrieve and continue it.
An upstream (gateway) model gets the request bridged to its /chat/completions (core/upstream.py),
or passed through when it serves the Responses API itself (docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import APIRouter
from starlette.requests import Request
from starlette.routing import Route

from rill.api.core import run
from rill.api.core.events import Failure, Finish
from rill.api.core.request import CustomTool, GenerationRequest
from rill.api.core.passthrough import native_upstream, relay, relayed
from rill.api.core import web_search
from rill.api.core.tracing import nest
from rill.api.core.upstream import AnyGeneration, start_any
from rill.api.http.auth import owner_of
from rill.api.http.body import read_json, validated
from rill.api.http.offload import off_loop
from rill.api.http.response import KEEPALIVE, EngineResponse, Outcome, sse
from rill.api.http.wire import ErrorResponse
from rill.api.protocols.responses import stored
from rill.api.protocols.responses.events import ResponseBuilder, WireEvent, item_for_search, new_id, new_response
from rill.api.protocols.responses.mapping import check_request, map_request, with_system_text
from rill.api.protocols.responses.tools import Search
from rill.api.protocols.responses.schemas import ResponseRequest
from rill.errors import InvalidRequest, RillError, StoreFailed, UnsupportedParameter, error_body
from rill.router import LocalModel, UpstreamModel
from rill.sampling import tool_format
from rill.sampling.grammar import GrammarError
from rill.search.context import Source
from rill.search.providers import SearchProvider

log = logging.getLogger("rill.api")

RESPONSES_PATH = "/v1/responses"
PROTOCOL = "responses"

router = APIRouter()
router.include_router(stored.router)

Saver = Callable[[dict[str, Any]], Awaitable[None]]


def _for_bridge(body: ResponseRequest, gen: GenerationRequest, model: UpstreamModel) -> None:
    """What needs this server's own model, refused by name for an upstream one bridged to its
    chat completions (its context and tokenizer are not known here)."""
    if body.truncation == "auto":
        raise UnsupportedParameter(
            f"`truncation`: `auto` cuts the input with the model's tokenizer, and `{model.id}` is an upstream "
            "model bridged to its chat completions; send `truncation: disabled`, or declare supports = "
            "[\"responses\"] for it in rill.toml if it serves the Responses API itself.", param="truncation")
    if gen.top_logprobs is not None:
        raise UnsupportedParameter(
            f"`include`: logprobs are not bridged from the upstream model `{model.id}`'s chat completions.",
            param="include")


def _span_input(raw: dict[str, Any]) -> list[Any]:
    """The conversation as the client sent it, the instructions first (as the trace browser shows chat's)."""
    given = raw.get("input")
    items = [{"role": "user", "content": given}] if isinstance(given, str) else list(given or [])
    instructions = raw.get("instructions")
    return [{"role": "system", "content": instructions}, *items] if instructions else items


# kept as the span's input, model, user and tags, or (metadata) with the stored response
_NOT_PARAMS = {"input", "instructions", "model", "user", "tags", "parent_span_id", "metadata"}


async def create_response(request: Request) -> EngineResponse:
    """Create a model response. With `stream: true`, server-sent events (`response.created` ...
    `response.completed`), else the `response` object. The `x-rill-span-id` header names the span
    that records it."""
    raw = await read_json(request)
    body = validated(raw, ResponseRequest)
    check_request(body)
    state = request.app.state
    candidates = state.router.candidates(body.model)
    span = run.open_span(request, protocol=PROTOCOL, model_id=candidates[0].id, input=_span_input(raw),
                         params={k: v for k, v in raw.items() if k not in _NOT_PARAMS and v is not None},
                         user=body.user or body.safety_identifier, tags=body.tags)
    if body.parent_span_id is not None:
        await nest(request, span.record, body.parent_span_id, "parent_span_id")
    native = native_upstream(PROTOCOL, candidates)
    if native is not None:  # it serves the Responses API itself: passed through, its store its own
        answer = await relay(request, PROTOCOL, raw, native, span, last_resort=len(candidates) == 1)
        if answer is not None:
            return relayed(answer, span.headers)
        candidates = candidates[1:]  # its tries failed: the fallbacks, bridged
    model = candidates[0]
    history = await stored.conversation(request, body.previous_response_id) if body.previous_response_id else []
    mapped = map_request(body, history, search_configured=state.search is not None)
    own_items = [] if isinstance(body.input, str) or body.input is None else body.input
    keep = body.store is not False
    response_id = new_id("resp")
    response = new_response(body, response_id=response_id, model_id=model.id, store=keep)
    gen = mapped.gen
    sources: tuple[Source, ...] = ()
    if mapped.search is not None:
        gen, sources, item, record = await _search(state.search, mapped.search, gen)
        response["output"].append(item)
        span.record.meta["web_search"] = record
    if isinstance(model, LocalModel):
        await _check_custom_grammars(request, gen, model)
        if body.truncation == "auto":
            gen = await _truncated(request, gen, model)
    else:
        _for_bridge(body, gen, model)
    generation = await start_any(request, gen, candidates, span)
    if isinstance(generation, run.Generation):  # the temperature used (the model's default, if none was sent)
        response["temperature"] = generation.plan.request.sampling.temperature
    response["model"] = generation.model.id
    span.record.completion_id = response_id
    token_bytes = generation.model.token_bytes if isinstance(generation.model, LocalModel) else None
    builder = ResponseBuilder(response, mapped.names, logprobs=mapped.logprobs, token_bytes=token_bytes,
                              sources=sources, obfuscate=bool(body.stream) and not (
                                  body.stream_options and body.stream_options.include_obfuscation is False))
    save: Saver | None = None
    if keep:
        kept_items = stored.input_items(body.input, own_items)
        store = state.responses
        owner = owner_of(request)

        async def save(obj: dict[str, Any]) -> None:
            await store.save(owner, obj, kept_items, previous_response_id=body.previous_response_id)

    if gen.stream:
        return EngineResponse(stream=_stream(generation, builder, save), headers=span.headers,
                              on_close=generation.close)
    return EngineResponse(collect=lambda: _collect(generation, builder, save), headers=span.headers,
                          on_close=generation.close)


def _event(event: WireEvent) -> bytes:
    return sse(event, event["type"])


async def _saved(builder: ResponseBuilder, save: Saver | None) -> StoreFailed | None:
    """Keep the finished response; the error to send instead when that failed. Shielded: a client
    that leaves during the write does not cancel it."""
    if save is None:
        return None
    try:
        await asyncio.shield(save(builder.response))
    except Exception as exc:
        log.exception("response %s: storing it failed", builder.response["id"])
        return StoreFailed(f"the response could not be stored: {exc}")
    return None


async def _stream(generation: AnyGeneration, builder: ResponseBuilder, save: Saver | None) -> AsyncIterator[bytes]:
    events = generation.events()
    try:
        for event in builder.start():
            yield _event(event)
        async for out in events:
            if out is None:  # 15 s without an event (queued, or a long prompt): keep proxies from closing
                yield KEEPALIVE
            elif isinstance(out, Failure):
                for event in builder.fail(out.error):
                    yield _event(event)
                return
            elif isinstance(out, Finish):
                for event in builder.close(out):
                    yield _event(event)
                failed = await _saved(builder, save)
                for event in builder.fail(failed) if failed is not None else [builder.final()]:
                    yield _event(event)
                return
            else:
                for event in builder.feed(out):
                    yield _event(event)
    finally:
        await events.aclose()  # leaving early (the client went) aborts the engine request


async def _collect(generation: AnyGeneration, builder: ResponseBuilder, save: Saver | None) -> Outcome:
    events = generation.events()
    try:
        async for out in events:
            if isinstance(out, Failure):
                return out.error.status, error_body(out.error), out.error.headers()
            if isinstance(out, Finish):
                builder.close(out)
                failed = await _saved(builder, save)
                if failed is not None:
                    return failed.status, error_body(failed)
                return 200, builder.response
            if out is not None:
                builder.feed(out)
    finally:
        await events.aclose()
    raise RillError("the request ended without an answer")  # pragma: no cover


# ---- before generating ------------------------------------------------------------------------


async def _check_custom_grammars(request: Request, gen: GenerationRequest, model: LocalModel) -> None:
    """A custom tool's grammar that cannot be compiled is a 400 naming that tool's definition
    (compiled off the event loop; the grammar cache keeps it for the turn's grammar)."""
    customs = [t for t in gen.tools if isinstance(t, CustomTool) and t.syntax is not None]
    if not customs:
        return
    grammars = model.engine.grammars

    def check(cancelled: Callable[[], bool]) -> None:
        for tool in customs:
            if cancelled():
                return
            try:
                if tool.syntax == "lark":
                    source = tool.definition or ""
                else:
                    source = "start: " + tool_format.regex_literal(tool.definition or "") + "\n"
                grammars.lark(source)
            except (GrammarError, ValueError, AssertionError) as exc:
                raise InvalidRequest(f"The {tool.syntax} grammar of the custom tool `{tool.name}` cannot be used: "
                                     f"{exc}", param=f"{tool.where}.format.definition") from None

    await off_loop(request, check)


def _groups(gen: GenerationRequest) -> list[list[int]]:
    """The messages truncation may drop, oldest first, a turn at a time: a user message with the
    answers, calls and tool results that follow it (so what is left still begins with a user
    turn, and no result loses its call). System and developer messages (the instructions) are
    kept, and so is the last turn."""
    groups: list[list[int]] = []
    for i, message in enumerate(gen.messages):
        if message.role in ("system", "developer"):
            continue
        if message.role == "user" or not groups:
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups[:-1]


async def _truncated(request: Request, gen: GenerationRequest, model: LocalModel) -> GenerationRequest:
    """`truncation: auto`: when the input does not leave the answer its room, the oldest items
    are dropped until it does, as OpenAI documents (it keeps the model's output allowance free:
    here `max_output_tokens`, and at least a quarter of the context). What still does not fit is
    the core's 400 (context_length_exceeded, param `input`)."""
    n_ctx = model.info.n_ctx
    limit = n_ctx - max(gen.max_tokens or 0, n_ctx // 4)
    if limit < 1 or await run.count_tokens(request, gen, model) <= limit:
        return gen
    groups = _groups(gen)

    def without(k: int) -> GenerationRequest:
        dropped = {i for group in groups[:k] for i in group}
        return dataclasses.replace(gen, messages=tuple(m for i, m in enumerate(gen.messages) if i not in dropped))

    if not groups:
        return gen
    low, high = 1, len(groups)  # the fewest groups to drop so that the rest fits: in [low, high]
    if await run.count_tokens(request, without(high), model) > limit:
        return without(high)
    while low < high:
        middle = (low + high) // 2
        if await run.count_tokens(request, without(middle), model) <= limit:
            high = middle
        else:
            low = middle + 1
    return without(low)


async def _search(provider: SearchProvider, search: Search, gen: GenerationRequest
                  ) -> tuple[GenerationRequest, tuple[Source, ...], dict[str, Any], dict[str, Any]]:
    """One search of the last user message: the request with the results in its system prompt, the
    sources the answer may cite, the web_search_call item, and what the span records."""
    found = await web_search.search(provider, gen.messages, param="input", place=search.location, size=search.size)
    return (with_system_text(gen, found.text), found.sources, item_for_search(new_id("ws"), found.query, found.sources),
            found.record)


# ---- routes -----------------------------------------------------------------------------------

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 503)}

# Served by a plain Starlette route (app.py puts them first, as chat's: see protocols/chat/route.py);
# the FastAPI route is the same handler, there for the OpenAPI document.
fast_routes = [Route(RESPONSES_PATH, create_response, methods=["POST"])]
router.add_api_route(
    RESPONSES_PATH, create_response, methods=["POST"],
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ResponseRequest"}}}}},
    responses={200: {"description": "A `response` object, or with `stream: true` an SSE stream of Responses events "
                                    "(`response.created` ... `response.completed`).",
                     "content": {"application/json": {}, "text/event-stream": {}}}, **_ERRORS},
    summary="Create a model response (OpenAI's Responses API)", operation_id="createResponse")
