"""Upstream models and fallbacks: a request goes to its model, then to that model's fallbacks in
order, while nothing has reached the client: a connect error, a timeout, a full concurrency
limit, 429 or 5xx (or, for a local model, a full queue) moves on after a jittered backoff,
within MAX_ATTEMPTS tries. Once the first byte is out, a failure is an in-stream error event.

An upstream gets the request as the client sent it (every field goes through), with its own
model name, `stream_options.include_usage` added when streaming (usage is recorded on the span
either way) and the fields Rill handles itself removed (store, metadata, tags, parent_span_id).
What comes back is normalised to Rill's contract: Rill's completion id, created time and model
id on every chunk, a role on each choice's first delta, `usage` only in a final chunk with
`choices: []` when the client asked, the upstream's errors in OpenAI's shape, `[DONE]`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable


from rill.api.core.assemble import ChunkAssembler
from rill.api.metrics.requests import RequestMetrics
from rill.api.core.run import CLIENT_LEFT
from rill.api.http.response import KEEPALIVE, KEEPALIVE_SECONDS, Outcome, sse
from rill.api.protocols.chat.stream import DONE, Saver, store_failure
from rill.api.core.tracing import ChatSpan
from rill.api.core.upstream import UpstreamFailed, attempts, backoff, event_message, upstream_error
from rill.backends.upstream_errors import UpstreamBroken, UpstreamError
from rill.backends.upstream_stream import UpstreamStream
from rill.errors import NotReady, RateLimited, RillError, error_body
from rill.router import LocalModel, Model, UpstreamModel

log = logging.getLogger("rill.gateway")

RILL_FIELDS = ("store", "metadata", "tags", "parent_span_id")  # handled here, not sent on

# A local model's try: its SSE stream, or its JSON answer (see chat.local_start)
LocalStart = Callable[[LocalModel], Awaitable[Outcome | AsyncIterator[bytes]]]


def upstream_body(raw: dict[str, Any], model: UpstreamModel, *, stream: bool) -> dict[str, Any]:
    body = {k: v for k, v in raw.items() if k not in RILL_FIELDS}
    body["model"] = model.upstream.config.remote_model
    if stream:
        body["stream_options"] = {**(raw.get("stream_options") or {}), "include_usage": True}
    return body


class Gateway:
    """One request's tries over its candidate models."""

    def __init__(self, *, raw: dict[str, Any], span: ChatSpan, completion_id: str, save: Saver | None,
                 local_start: LocalStart, metrics: RequestMetrics | None = None):
        self.raw = raw
        self.span = span
        self.completion_id = completion_id
        self.created = int(time.time())
        self.save = save
        self.local_start = local_start
        self.metrics = metrics
        self.stream = bool(raw.get("stream"))
        self.include_usage = bool(self.stream and (raw.get("stream_options") or {}).get("include_usage"))

    async def run(self, candidates: list[Model]) -> Outcome | AsyncIterator[bytes]:
        last: RillError | UpstreamError | None = None
        tries = attempts(candidates)
        for i, model in enumerate(tries):
            if i:
                await asyncio.sleep(backoff(i - 1, getattr(last, "retry_after", None)))
            self.span.record.model = model.id
            try:
                if isinstance(model, LocalModel):
                    return await self.local_start(model)
                return await self._upstream(model)
            except UpstreamError as exc:
                self._note(model, exc.status, exc.message)
                if not exc.retryable:
                    return self._fail(exc.status, upstream_error(exc))
                last = exc
            except (RateLimited, NotReady) as exc:
                self._note(model, exc.status, exc.message)
                last = exc
            except RillError as exc:  # the request's own fault (a 400 planning it): no retry helps
                return self._fail(exc.status, exc, exc.headers())
            log.warning("request %s: %s failed (%s); %s", self.completion_id, model.id, last.message,
                        "trying again" if i + 1 < len(tries) else "giving up")
        assert last is not None
        if isinstance(last, UpstreamError):
            return self._fail(last.status if last.status in (429, 503, 504) else 502, upstream_error(last),
                              {"Retry-After": str(max(1, round(last.retry_after or 1)))} if last.status == 429 else None)
        return self._fail(last.status, last, last.headers())

    def _note(self, model: Model, status: int, message: str) -> None:
        """A failed try: on the span (meta["attempts"], its OpenTelemetry span) and in the metrics."""
        self.span.attempt_failed(model.id, status, message)
        if self.metrics is not None:
            self.metrics.observe_failed_try(model.id, status)

    def _fail(self, status: int, exc: RillError, headers: dict[str, str] | None = None) -> Outcome:
        """No model took the request: an error answer, recorded on the span."""
        self.span.record_outcome([], None, None, error=exc.message)
        body = error_body(exc)
        return (status, body, headers) if headers else (status, body)

    async def _upstream(self, model: UpstreamModel) -> Outcome | AsyncIterator[bytes]:
        self.span.record.completion_id = self.completion_id
        body = upstream_body(self.raw, model, stream=self.stream)
        self.span.attempt(model.id, model.upstream.config.remote_model)
        if self.stream:
            return self._relay(model, await model.upstream.stream(body))
        result = await model.upstream.complete(body)
        assembler = ChunkAssembler.from_completion(result)
        completion = assembler.completion(self.completion_id, self.created, model.id)
        self.span.tokens(0)  # the whole answer arrived at once: that is its first token
        if self.save is not None:
            err = await store_failure(self.completion_id, self.save, completion)
            if err is not None:
                self._record(assembler, err.message)
                return err.status, error_body(err)
        self._record(assembler, None)
        return 200, completion

    def _normalise(self, event: dict[str, Any], started: set[int], base: dict[str, Any]) -> int:
        """One upstream chunk in Rill's shape, in place (Rill's id, model, created; a role on each
        choice's first delta; usage kept for the end); how many content pieces it holds."""
        tokens = 0
        for choice in event["choices"]:
            delta = choice.get("delta")
            if delta is None:
                choice["delta"] = delta = {}
            index = choice.get("index", 0)
            if index not in started:
                started.add(index)
                delta.setdefault("role", "assistant")
            if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
                tokens += 1
        event.update(base)
        if self.include_usage:
            event["usage"] = None
        else:
            event.pop("usage", None)
        return tokens

    def _record(self, assembler: ChunkAssembler, error: str | None) -> None:
        self.span.record_outcome(assembler.messages(), assembler.span_usage(), assembler.finish_reasons(),
                                 error=error, n=assembler.num_choices)

    async def _relay(self, model: UpstreamModel, upstream: UpstreamStream) -> AsyncIterator[bytes]:
        """The upstream's events as Rill's chunks, each network read's events sent together."""
        base = {"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created,
                "model": model.id}
        assembler = ChunkAssembler()
        started: set[int] = set()  # choices whose first delta went out
        error: str | None = CLIENT_LEFT
        try:
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        batch = await upstream.next_batch()
                except TimeoutError:
                    yield KEEPALIVE  # the upstream is quiet (queued): keep proxies from closing us
                    continue
                if batch is None:
                    break
                out = []
                tokens = 0
                broken = None
                for event in batch:
                    if "error" in event and not event.get("choices"):
                        broken = UpstreamBroken(f"upstream {model.id}: {event_message(event)}")
                        break
                    try:
                        assembler.add(event)
                        if not event.get("choices"):
                            continue  # the usage event (or an empty one): usage goes out at the end
                        tokens += self._normalise(event, started, base)
                    except (AttributeError, TypeError, ValueError, KeyError) as exc:  # a shape not checked for
                        broken = UpstreamBroken(f"upstream {model.id} sent a chunk Rill cannot read: {exc!r}")
                        break
                    out.append(sse(event))
                if tokens:
                    self.span.tokens(tokens)
                if out:
                    yield b"".join(out)
                if broken is not None:
                    raise broken
            if self.save is not None:
                err = await store_failure(self.completion_id, self.save,
                                          assembler.completion(self.completion_id, self.created, model.id))
                if err is not None:
                    error = err.message
                    yield sse(error_body(err))
                    return
            error = None
            usage = sse({**base, "choices": [], "usage": assembler.usage}) if self.include_usage else b""
            yield usage + DONE
        except UpstreamBroken as exc:
            log.error("request %s: %s", self.completion_id, exc)
            error = str(exc)
            yield sse(error_body(UpstreamFailed(str(exc))))
        finally:
            self.span.record_outcome(assembler.messages(), assembler.span_usage(), assembler.finish_reasons(),
                                     error=error, n=assembler.num_choices)
            # shielded: when the client left this runs cancelled; the close then finishes on its own
            await asyncio.shield(asyncio.ensure_future(upstream.aclose()))
