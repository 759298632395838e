"""A Responses or Messages request on an upstream that serves that protocol itself (`supports` in
rill.toml): the body goes through as the client sent it (the model renamed, Rill's own fields
removed) and the answer comes back as the upstream wrote it, already in the protocol's shape.
Retries as for chat; when they are spent, the remaining candidates (fallbacks) get the request
through the bridge."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

import orjson
from starlette.requests import Request

from rill.api.core.tracing import ChatSpan
from rill.api.core.upstream import attempts, backoff, upstream_error
from rill.api.http.response import EngineResponse, Outcome
from rill.backends.upstream import Relayed
from rill.backends.upstream_errors import UpstreamBroken, UpstreamError
from rill.config import NATIVE_PROTOCOLS
from rill.router import Model, UpstreamModel

log = logging.getLogger("rill.gateway")

MAX_JSON_ANSWER = 16 * 1024 * 1024  # a non-streamed answer is read whole; beyond this it is cut off
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta", "openai-beta")
RILL_FIELDS = ("tags", "parent_span_id")  # Rill's own, not the upstream's


def native_upstream(protocol: str, candidates: list[Model]) -> UpstreamModel | None:
    """The first candidate, when it is an upstream that serves `protocol` itself."""
    first = candidates[0]
    if isinstance(first, UpstreamModel) and protocol in first.upstream.config.supports:
        return first
    return None


async def relay(request: Request, protocol: str, raw: dict[str, Any], model: UpstreamModel, span: ChatSpan,
                *, last_resort: bool, path: str | None = None) -> Outcome | AsyncIterator[bytes] | None:
    """The upstream's answer (a JSON outcome, or its SSE bytes), or None when its tries failed in a
    way a fallback may mend and `last_resort` is false; otherwise the failure raises (a RillError).
    `path`: under base_url, when not the protocol's own (Messages' count_tokens)."""
    body = {k: v for k, v in raw.items() if k not in RILL_FIELDS}
    body["model"] = model.upstream.config.remote_model
    headers = [(name.encode(), value.encode()) for name in FORWARDED_HEADERS
               if (value := request.headers.get(name)) is not None]
    tries = attempts([model])
    for i in range(len(tries)):
        if i:
            await asyncio.sleep(backoff(i - 1, None))
        try:
            span.attempt(model.id, model.upstream.config.remote_model)
            answer = await model.upstream.relay(path or NATIVE_PROTOCOLS[protocol], body, headers)
            break
        except UpstreamError as exc:
            span.attempt_failed(model.id, exc.status, exc.message)
            if i + 1 < len(tries):
                continue
            if not last_resort:
                return None
            err = upstream_error(exc)
            span.record_outcome([], None, None, error=err.message)
            raise err from None
    span.record.model = model.id
    if answer.content_type.startswith("text/event-stream"):
        return _stream(answer, span)
    return await _whole(answer, span)


async def _whole(answer: Relayed, span: ChatSpan) -> Outcome:
    raw = b""
    try:
        async for part in answer.chunks():
            raw += part
            if len(raw) > MAX_JSON_ANSWER:
                break
    except UpstreamBroken as exc:
        span.record_outcome([], None, None, error=str(exc))
        raise upstream_error(UpstreamError(str(exc), status=502, retryable=False)) from None
    finally:
        await asyncio.shield(asyncio.ensure_future(answer.aclose()))
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = {"error": {"message": raw[:2000].decode("utf-8", "replace"), "type": "upstream_error"}}
    span.tokens(0)
    span.record_outcome([body] if answer.status < 400 else [], _usage(body), None,
                        error=None if answer.status < 400 else f"upstream answered HTTP {answer.status}")
    return answer.status, body


async def _stream(answer: Relayed, span: ChatSpan) -> AsyncIterator[bytes]:
    error: str | None = "cancelled: the client disconnected"
    try:
        async for part in answer.chunks():
            span.tokens(1)
            yield part
        error = None
    except UpstreamBroken as exc:
        error = str(exc)  # the stream just ends: the client sees it cut short
    finally:
        span.record_outcome([], None, None, error=error)
        await asyncio.shield(asyncio.ensure_future(answer.aclose()))


def _usage(body: Any) -> dict[str, int] | None:
    """A span's usage from a Responses or Messages answer (input/output tokens)."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "cached_tokens": 0}


async def ready(outcome: Outcome) -> Outcome:
    """An answer already in hand, as EngineResponse's `collect`."""
    return outcome


def relayed(answer: Outcome | AsyncIterator[bytes], headers: dict[str, str]) -> EngineResponse:
    """The response that sends a relayed answer on: its JSON, or its stream of bytes."""
    if isinstance(answer, tuple):
        return EngineResponse(collect=lambda: ready(answer), headers=headers)
    return EngineResponse(stream=answer, headers=headers)
