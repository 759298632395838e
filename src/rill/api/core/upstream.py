"""Requests on upstream models, for every protocol: the tries over a request's candidate models
(fallbacks and retries before the first byte, as docs/gateway.md describes), and the bridge that
sends a GenerationRequest to an upstream's `/chat/completions` and turns its chunks back into the
core's events. A Responses or Messages request on an upstream model goes through here unless
the upstream serves that protocol itself (`supports` in rill.toml)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from typing import Any, AsyncIterator, Iterator

from starlette.requests import Request

from rill.api.core import run
from rill.api.core.assemble import ChunkAssembler
from rill.api.core.messages import ERROR_PREFIX
from rill.api.core.events import CallEnd, CallInput, CallStart, Failure, Finish, FinishReason, ReasoningOut, TextOut, Usage
from rill.api.core.request import CustomTool, GenerationRequest, Message
from rill.api.core.run import CLIENT_LEFT, Event, Generation
from rill.api.core.tracing import ChatSpan
from rill.api.http.response import KEEPALIVE_SECONDS
from rill.backends.upstream_errors import UpstreamBroken, UpstreamError
from rill.backends.upstream_stream import UpstreamStream
from rill.errors import InvalidRequest, NotReady, RateLimited, RillError
from rill.router import LocalModel, Model, UpstreamModel

log = logging.getLogger("rill.gateway")

MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 0.05  # the n-th retry waits up to base * 2**n (full jitter), capped
BACKOFF_CAP_S = 1.0


class UpstreamFailed(RillError):
    status = 502
    type = "server_error"
    code = "upstream_error"


def attempts(candidates: list[Model]) -> list[Model]:
    """The tries in order: each model (an upstream as often as its retries allow), bounded."""
    out: list[Model] = []
    for model in candidates:
        tries = 1 + model.upstream.config.retries if isinstance(model, UpstreamModel) else 1
        out.extend([model] * tries)
    return out[:MAX_ATTEMPTS]


def backoff(retry: int, retry_after: float | None) -> float:
    if retry_after is not None and retry_after <= BACKOFF_CAP_S:
        return retry_after
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** retry))


def upstream_error(exc: UpstreamError) -> RillError:
    """An upstream's refusal in OpenAI's shape, with its type/code/param where it gave them."""
    err = UpstreamFailed(exc.message, param=exc.param)
    err.status = exc.status
    if exc.type:
        err.type = exc.type
    elif 400 <= exc.status < 500:
        err.type = "invalid_request_error" if exc.status != 429 else "rate_limit_error"
    err.code = exc.code or ("upstream_error" if exc.status >= 500 else None)
    return err


def event_message(event: dict[str, Any]) -> str:
    err = event.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


# ---- GenerationRequest -> an upstream's chat completion request ---------------------------------

def _chat_message(msg: Message) -> dict[str, Any]:
    if msg.role == "tool":
        out: dict[str, Any] = {"role": "tool", "content": (ERROR_PREFIX + msg.text) if msg.is_error else msg.text,
                               "tool_call_id": msg.call_id or ""}
        return out
    out = {"role": msg.role, "content": msg.text}
    if msg.name is not None:
        out["name"] = msg.name
    if msg.role == "assistant" and msg.calls:
        out["content"] = msg.text or None
        out["tool_calls"] = [{"id": c.id or f"call_{i}", "type": "function",
                              "function": {"name": c.name, "arguments": c.arguments}} for i, c in enumerate(msg.calls)]
    return out


def chat_body(gen: GenerationRequest, remote_model: str) -> dict[str, Any]:
    """The request as Chat Completions says it (streamed, with usage); what it cannot say is a 400."""
    if gen.prompt_tokens is not None or gen.prompt_text is not None:
        raise InvalidRequest("A raw prompt cannot be bridged to an upstream's chat completions.", param="prompt")
    body: dict[str, Any] = {"model": remote_model, "messages": [_chat_message(m) for m in gen.messages],
                            "stream": True, "stream_options": {"include_usage": True}}
    if gen.tools:
        for tool in gen.tools:
            if isinstance(tool, CustomTool):
                raise InvalidRequest(f"The custom tool `{tool.name}` cannot be bridged to an upstream's chat "
                                     "completions (it takes JSON function tools only); declare the upstream's "
                                     "native protocol with `supports` in rill.toml.", param=tool.where)
        body["tools"] = [{"type": "function", "function": {"name": t.name, "parameters": t.parameters,
                                                            **({"description": t.description} if t.description else {})}}
                         for t in gen.tools]
        choice = gen.tool_choice
        if choice.allowed is not None and len(choice.allowed) == 1 and choice.mode == "required":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.allowed[0]}}
        elif choice.allowed is not None:
            body["tool_choice"] = {"type": "allowed_tools", "allowed_tools": {
                "mode": choice.mode, "tools": [{"type": "function", "function": {"name": n}} for n in choice.allowed]}}
        else:
            body["tool_choice"] = choice.mode
        body["parallel_tool_calls"] = gen.parallel_tool_calls
    if gen.answer_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": gen.answer_schema}}
    if gen.temperature is not None:
        body["temperature"] = gen.temperature
    if gen.top_p != 1.0:
        body["top_p"] = gen.top_p
    for key in ("seed", "logit_bias"):
        if getattr(gen, key) is not None:
            body[key] = getattr(gen, key)
    for key in ("frequency_penalty", "presence_penalty"):
        if getattr(gen, key):
            body[key] = getattr(gen, key)
    if gen.top_k:
        body["top_k"] = gen.top_k  # vLLM and llama-server read it; OpenAI refuses it
    if gen.stop:
        body["stop"] = list(gen.stop)
    if gen.max_tokens is not None:
        body["max_tokens"] = gen.max_tokens
    if gen.n != 1:
        body["n"] = gen.n
    if gen.top_logprobs is not None:
        body["logprobs"], body["top_logprobs"] = True, gen.top_logprobs
    return body


_REASONS: dict[str, FinishReason] = {"length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"}


def _usage(raw: Any, choice_tokens: int) -> Usage:
    if not isinstance(raw, dict):
        return Usage(0, choice_tokens)
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0),
                 int(prompt_details.get("cached_tokens") or 0) if isinstance(prompt_details, dict) else 0,
                 int(completion_details.get("reasoning_tokens") or 0) if isinstance(completion_details, dict) else 0)


class UpstreamGeneration:
    """An upstream's streamed chat completion as the core's events (the same interface as
    run.Generation): Finish events come once the stream has ended, with the upstream's usage."""

    def __init__(self, model: UpstreamModel, stream: UpstreamStream, span: ChatSpan, n: int):
        self.model, self._stream, self._span, self._n = model, stream, span, n
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.num_prompt_tokens = 0  # known only from the usage at the end
        self.created = int(time.time())
        self._started = False

    def close(self) -> None:
        """Close an answer whose events were never read (the client left first); idempotent."""
        if not self._started:
            self._started = True
            self._span.record_outcome([], None, None, error=CLIENT_LEFT)
            asyncio.ensure_future(self._stream.aclose())

    async def events(self) -> AsyncIterator[Event]:
        if self._started:
            raise RuntimeError("a generation's events are read once")
        self._started = True
        assembler = ChunkAssembler()
        calls: dict[tuple[int, int], list[str]] = {}  # (choice, call) -> [id, name, arguments]
        reasons: dict[int, str] = {}
        error: str | None = CLIENT_LEFT
        try:
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        batch = await self._stream.next_batch()
                except TimeoutError:
                    yield None
                    continue
                if batch is None:
                    break
                for chunk in batch:
                    if "error" in chunk and not chunk.get("choices"):
                        raise UpstreamBroken(f"upstream {self.model.id}: {event_message(chunk)}")
                    try:
                        assembler.add(chunk)
                        out = list(self._chunk_events(chunk, calls, reasons))
                    except (AttributeError, TypeError, ValueError, KeyError) as exc:
                        raise UpstreamBroken(f"upstream {self.model.id} sent a chunk Rill cannot read: {exc!r}") from None
                    if any(isinstance(e, TextOut | CallInput) for e in out):
                        self._span.tokens(1)
                    for event in out:
                        yield event
            usage = _usage(assembler.usage, 0)
            self.num_prompt_tokens = usage.prompt_tokens
            for index in range(max(self._n, len(reasons))):
                for (choice, call), (_, _, arguments) in sorted(calls.items()):
                    if choice == index:
                        yield CallEnd(index, call, arguments)
                reason: FinishReason = _REASONS.get(reasons.get(index, "stop"), "stop")
                share = usage if index == 0 else Usage(usage.prompt_tokens, 0, usage.cached_tokens)
                yield Finish(index, reason, share)
            error = None
        except UpstreamBroken as exc:
            log.error("request %s: %s", self.id, exc)
            error = str(exc)
            yield Failure(UpstreamFailed(str(exc)))
        finally:
            self._span.record_outcome(assembler.messages(), assembler.span_usage(), assembler.finish_reasons(),
                                      error=error, n=assembler.num_choices)
            await asyncio.shield(asyncio.ensure_future(self._stream.aclose()))

    @staticmethod
    def _chunk_events(chunk: dict[str, Any], calls: dict[tuple[int, int], list[str]],
                      reasons: dict[int, str]) -> Iterator[Any]:
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                yield ReasoningOut(index, delta["reasoning_content"])
            if delta.get("content"):
                yield TextOut(index, delta["content"])
            for fragment in delta.get("tool_calls") or ():
                k = fragment.get("index", 0)
                function = fragment.get("function") or {}
                if (index, k) not in calls:
                    call_id = fragment.get("id") or f"call_{uuid.uuid4().hex[:24]}"
                    calls[(index, k)] = [call_id, function.get("name") or "", ""]
                    yield CallStart(index, k, call_id, calls[(index, k)][1])
                if function.get("arguments"):
                    calls[(index, k)][2] += function["arguments"]
                    yield CallInput(index, k, function["arguments"])
            if choice.get("finish_reason"):
                reasons[index] = choice["finish_reason"]


AnyGeneration = Generation | UpstreamGeneration


async def start_any(request: Request, gen: GenerationRequest, candidates: list[Model], span: ChatSpan) -> AnyGeneration:
    """The first candidate that takes the request (local models planned and submitted, upstream
    ones bridged), with retries and fallbacks while nothing has been sent; the last failure is
    raised as a RillError in OpenAI's terms (adapters reshape it)."""
    last: RillError | UpstreamError | None = None
    for i, model in enumerate(attempts(candidates)):
        if i:
            await asyncio.sleep(backoff(i - 1, getattr(last, "retry_after", None)))
        span.record.model = model.id
        try:
            if isinstance(model, LocalModel):
                return await run.start(request, gen, model, span)
            body = chat_body(gen, model.upstream.config.remote_model)
            span.attempt(model.id, model.upstream.config.remote_model)
            stream = await model.upstream.stream(body)
            return UpstreamGeneration(model, stream, span, gen.n)
        except UpstreamError as exc:
            span.attempt_failed(model.id, exc.status, exc.message)
            if not exc.retryable:
                err = upstream_error(exc)
                span.record_outcome([], None, None, error=err.message)
                raise err from None
            last = exc
        except (RateLimited, NotReady) as exc:
            span.attempt_failed(model.id, exc.status, exc.message)
            last = exc
    assert last is not None
    if isinstance(last, UpstreamError):
        err = upstream_error(last)
        if err.status not in (429, 503, 504):
            err.status = 502
        last = err
    span.record_outcome([], None, None, error=last.message)  # no model took it: recorded as failed
    raise last

