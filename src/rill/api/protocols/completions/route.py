"""POST /v1/completions (OpenAI's legacy completions): a raw prompt, no chat template, on a local
model. Validate -> prepare every prompt's tokens (off the event loop) -> start the first window
of prompts (every error so far is a 400/4xx before the first byte) -> stream `text_completion`
chunks then `data: [DONE]`, or collect one `text_completion`. An upstream (gateway) model that
serves legacy completions itself (`supports = ["completions"]`) gets the body as sent
(core/passthrough.py); other upstream models are not bridged yet: a 400 naming the limitation."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter
from starlette.requests import Request
from starlette.routing import Route

from rill.api.core import run
from rill.api.core.events import Failure
from rill.api.core.passthrough import native_upstream, relay, relayed
from rill.api.core.tracing import nest
from rill.api.http.body import read_json, validated
from rill.api.http.offload import off_loop
from rill.api.http.response import KEEPALIVE, EngineResponse, Outcome, sse
from rill.api.http.wire import ErrorResponse
from rill.api.protocols.completions.batch import Batch
from rill.api.protocols.completions.limits import check_choices, window
from rill.api.protocols.completions.logprobs import token_string
from rill.api.protocols.completions.mapping import generation_request, options
from rill.api.protocols.completions.objects import TextCompletion
from rill.api.protocols.completions.prompts import prepare, split_prompts
from rill.api.protocols.completions.schemas import CompletionRequest
from rill.api.protocols.completions.tracing import PromptSpan, record
from rill.errors import UnsupportedParameter, error_body
from rill.router import LocalModel, Model

PATH = "/v1/completions"
PROTOCOL = "completions"
DONE = b"data: [DONE]\n\n"

router = APIRouter()

# what the span keeps elsewhere (input, model, user, tags, parent) or not at all
_NOT_PARAMS = {"prompt", "model", "user", "tags", "parent_span_id"}


def _local(model: Model) -> LocalModel:
    if not isinstance(model, LocalModel):
        raise UnsupportedParameter(
            f"`model`: `{model.id}` is an upstream (gateway) model that does not serve legacy completions itself "
            "(`supports = [\"completions\"]` in rill.toml passes them through), and this server does not bridge "
            "them to its Chat Completions yet; use a local model, or Chat Completions for this one.",
            param="model")
    return model


def _key(model: LocalModel) -> Callable[[int], str]:
    """A token id -> its string in the legacy logprobs (a control token by its name)."""
    return lambda token: token_string(model.prompts.spelling(token))


async def create_completion(request: Request) -> EngineResponse:
    """Create a completion. `stream: true` answers with server-sent events (`text_completion`
    objects, then `data: [DONE]`), otherwise one `text_completion`. The response's
    `x-rill-span-id` header names the span that records it."""
    raw = await read_json(request)
    body = validated(raw, CompletionRequest)
    state = request.app.state
    candidates = state.router.candidates(body.model)
    span = run.open_span(request, protocol=PROTOCOL, model_id=candidates[0].id, input=raw["prompt"],
                         params={k: v for k, v in raw.items() if k not in _NOT_PARAMS and v is not None},
                         user=body.user, tags=body.tags)
    if body.parent_span_id is not None:
        await nest(request, span.record, body.parent_span_id, "parent_span_id")
    upstream = native_upstream(PROTOCOL, candidates)
    if upstream is not None:  # it serves legacy completions itself: the body goes through as sent
        answer = await relay(request, PROTOCOL, raw, upstream, span, last_resort=True)
        assert answer is not None  # the last resort raises rather than give up
        return relayed(answer, span.headers)
    opts = options(body)  # what Rill refuses itself; an upstream above decides for itself
    model = _local(candidates[0])
    check_choices(opts, model, state.config.max_n)
    raws = split_prompts(body.prompt)
    # tokenizing a long prompt (or 2,048 of them) takes a while: off the event loop
    prepared = await off_loop(request, lambda cancelled: [
        prepare(model, p, max_tokens=opts.max_tokens, suffix=body.suffix, cancelled=cancelled) for p in raws])
    completion_id = f"cmpl-{uuid.uuid4().hex[:24]}"
    completion = TextCompletion(id=completion_id, created=int(time.time()), model=model.id,
                                fingerprint=model.info.fingerprint, opts=opts, echoes=[p.echo for p in prepared],
                                key=_key(model))
    shared = PromptSpan(span)
    batch = Batch(request, model, [generation_request(body, opts, p) for p in prepared], [shared] * len(prepared),
                  window(opts, model, state.config.max_n))
    await batch.begin()
    span.record.completion_id = completion_id
    # however the response ends (a client gone before the first read included): the batch stops
    def stop() -> None:
        asyncio.ensure_future(batch.close())

    if opts.stream:
        return EngineResponse(stream=_stream(batch, completion, span), headers=span.headers, on_close=stop)
    return EngineResponse(collect=lambda: _collect(batch, completion, span), headers=span.headers, on_close=stop)


async def _stream(batch: Batch, completion: TextCompletion, span: Any) -> AsyncIterator[bytes]:
    error: str | None = run.CLIENT_LEFT  # until the stream ends on its own
    try:
        async for prompt, event in batch.events():
            if event is None:  # 15 s without an event (queued, or a long prompt): keep proxies from closing
                yield KEEPALIVE
            elif isinstance(event, Failure):
                error = event.error.message
                yield sse(error_body(event.error))
                return
            else:
                for chunk in completion.event(prompt, event):
                    yield sse(chunk)
        if completion.opts.include_usage:
            yield sse(completion.usage_chunk())
        error = None
        yield DONE
    finally:
        await batch.close()
        record(span, completion, error)


async def _collect(batch: Batch, completion: TextCompletion, span: Any) -> Outcome:
    error: str | None = run.CLIENT_LEFT
    try:
        async for prompt, event in batch.events():
            if isinstance(event, Failure):
                error = event.error.message
                return event.error.status, error_body(event.error), event.error.headers()
            if event is not None:
                completion.event(prompt, event)
        error = None
        return 200, completion.completion()
    finally:
        await batch.close()
        record(span, completion, error)


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "A `text_completion` object, or with `stream: true` an SSE stream of `text_completion` "
                         "objects ending in `data: [DONE]`.",
          "content": {"application/json": {}, "text/event-stream": {}}},
    **{code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 503)},
}
_REQUEST_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/CompletionRequest"}}}}}

# Served by a plain Starlette route (app.py puts it first, as chat's: see protocols/chat/route.py);
# the FastAPI route is the same handler, there for the OpenAPI document.
fast_routes = [Route(PATH, create_completion, methods=["POST"])]
router.add_api_route(PATH, create_completion, methods=["POST"], responses=_RESPONSES, openapi_extra=_REQUEST_BODY,
                     summary="Create a completion (legacy)", operation_id="createCompletion")
