"""Running an engine request as an HTTP response: SSE framing with keep-alives, or one JSON body;
either way a client disconnect cancels the response, which aborts the request in the engine."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rill.api.protocols.chat.audio import AudioTrack, next_item
from rill.api.protocols.chat.chunks import ChunkBuilder, annotations, completion
from rill.api.core.output import ChoiceOutput, Piece, ToolCallOutput
from rill.api.core.plan import Plan
from rill.api.core.tracing import ChatSpan
from rill.engine.engine import RequestStream
from rill.engine.types import Failed, Finished, TextDelta, TokenLogprob
from rill.errors import EngineError, EngineUnavailable, RillError, ShuttingDown, StoreFailed, error_body

log = logging.getLogger("rill.api")

KEEPALIVE_SECONDS = 15.0
DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
CLIENT_LEFT = "cancelled: the client disconnected"  # a span's error when the response was cut short


def failure(event: Failed) -> RillError:
    if event.unavailable:  # the engine stalled or died: 503, as a new request would get
        return EngineUnavailable(event.message)
    return ShuttingDown(event.message) if event.shutting_down else EngineError(event.message)


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def choice_outputs(plan: Plan) -> list[ChoiceOutput]:
    """One output per choice: plain text, or, with tools offered, content and calls."""
    if plan.tools is None:
        return [ChoiceOutput() for _ in range(plan.request.n)]
    return [ToolCallOutput(legacy=plan.tools.legacy) for _ in range(plan.request.n)]


# Keeps a finished chat.completion (store: true); raises if it could not.
Saver = Callable[[dict[str, Any]], Awaitable[None]]


async def store_failure(request_id: str, save: Saver, body: dict[str, Any]) -> StoreFailed | None:
    """Save the completion; the error to send instead of it when that failed. Shielded: a client
    that leaves during the write does not cancel it."""
    try:
        await asyncio.shield(save(body))
    except Exception as exc:
        log.exception("request %s: storing the completion failed", request_id)
        return StoreFailed(f"the completion could not be stored: {exc}")
    return None


def pieces(output: ChoiceOutput, event: TextDelta, track: AudioTrack | None = None) -> list[Piece]:
    """A delta's chunks: its reasoning (a thinking model's), then its text."""
    out = output.reason(event.reasoning) if event.reasoning else []
    if event.text:
        out += spoken(output.feed(event.text, event.logprobs), track)
    return out


def spoken(out: list[Piece], track: AudioTrack | None) -> list[Piece]:
    """With audio output, each piece of content is also the transcript of what will be spoken."""
    if track is None:
        return out
    return [({**delta, "audio": track.transcript(delta["content"])}, entries) if delta.get("content")
            else (delta, entries) for delta, entries in out]


def audio_summaries(tracks: list[AudioTrack]) -> list[dict[str, Any] | None] | None:
    return [t.summary() if t.transcript_text else None for t in tracks] if tracks else None


async def _next_event(stream: RequestStream) -> Any:
    """The engine's next event, or None after KEEPALIVE_SECONDS without one."""
    try:
        async with asyncio.timeout(KEEPALIVE_SECONDS):
            return await anext(stream)
    except TimeoutError:
        return None


async def sse_events(plan: Plan, stream: RequestStream, save: Saver | None = None,
                     span: ChatSpan | None = None, tracks: list[AudioTrack] | None = None) -> AsyncIterator[bytes]:
    """The contract's stream: a role chunk per choice, content or tool-call chunks (interleaved
    by `index` when n > 1), a finish chunk per choice, [the usage chunk], [DONE]. An engine
    failure after the first byte becomes one error event, then the stream closes. With `save`,
    [DONE] is sent only once the assembled completion is stored: a client that saw it can
    retrieve it, whatever happens to the server next. `span` is told of every delta and, when
    the stream ends (a client leaving included), of the outcome. `tracks` (audio output, one per
    choice) add transcripts to content deltas and audio deltas as sentences are spoken."""
    chunks = ChunkBuilder(plan)
    outputs = choice_outputs(plan)
    tracks = tracks or []
    # the stored completion needs the logprobs again; a plain stream forgets them once sent
    logprobs: list[list[TokenLogprob]] | None = [[] for _ in outputs] if save is not None else None
    for index in range(len(outputs)):
        yield sse(chunks.role(index))
    finished: list[Finished] = []
    error: str | None = CLIENT_LEFT  # until the stream ends on its own
    pending: asyncio.Future | None = None  # the engine's next event, while audio is also awaited
    try:
        while True:
            if tracks:
                pending, happened = await next_item(stream, pending, tracks, KEEPALIVE_SECONDS)
                for i, track in enumerate(tracks):
                    for delta in track.ready():
                        yield sse(chunks.delta(delta, i))
                if not pending.done():
                    if not happened:
                        yield KEEPALIVE
                    continue
                event, pending = pending.result(), None
            else:
                event = await _next_event(stream)
                if event is None:
                    yield KEEPALIVE  # keeps proxies from closing a stream that waits in the queue
                    continue
            if isinstance(event, TextDelta):
                if span is not None:
                    span.text(event)
                track = tracks[event.index] if tracks else None
                for delta, entries in pieces(outputs[event.index], event, track):
                    if logprobs is not None:
                        logprobs[event.index].extend(entries)
                    yield sse(chunks.delta(delta, event.index, entries))
            elif isinstance(event, Finished):
                output = outputs[event.index]
                track = tracks[event.index] if tracks else None
                for delta, entries in spoken(output.finish(), track):
                    if logprobs is not None:
                        logprobs[event.index].extend(entries)
                    yield sse(chunks.delta(delta, event.index, entries))
                if track is not None:
                    async for delta in track.finish():
                        yield sse(chunks.delta(delta, event.index))
                cited = annotations(plan, output.message().get("content"))
                if cited:
                    yield sse(chunks.delta({"annotations": cited}, event.index))
                yield sse(chunks.finish(event, output.finish_reason(event.reason)))
                finished.append(event)
                if len(finished) < len(outputs):
                    continue
                audio_tokens = sum(t.num_tokens for t in tracks)
                if plan.include_usage:
                    yield sse(chunks.usage(finished, audio_tokens))
                if save is not None:
                    body = completion(plan, finished, outputs, logprobs, audio_summaries(tracks), audio_tokens)
                    err = await store_failure(plan.id, save, body)
                    if err is not None:
                        error = err.message
                        yield sse(error_body(err))
                        return
                error = None
                yield DONE
                return
            elif isinstance(event, Failed):
                log.error("request %s failed mid-stream: %s", plan.id, event.message)
                error = event.message
                yield sse(error_body(failure(event)))
                return
    except EngineError as exc:  # speech synthesis failed
        log.error("request %s failed mid-stream: %s", plan.id, exc.message)
        error = exc.message
        yield sse(error_body(exc))
    finally:
        if pending is not None:
            pending.cancel()
        for track in tracks:
            track.close()
        stream.close()
        if span is not None:
            span.end(outputs, finished, error, audio_summaries(tracks))


async def collect(plan: Plan, stream: RequestStream, save: Saver | None = None,
                  span: ChatSpan | None = None, tracks: list[AudioTrack] | None = None) -> tuple[int, dict[str, Any]]:
    """Run the request to the end; (status, body) of the `chat.completion` or the error. The
    message is what the stream would have sent, assembled (with `tracks`, its audio too)."""
    outputs = choice_outputs(plan)
    tracks = tracks or []
    logprobs: list[list[TokenLogprob]] = [[] for _ in outputs]
    finished: list[Finished] = []
    error: str | None = CLIENT_LEFT
    try:
        async for event in stream:
            track = tracks[event.index] if tracks and not isinstance(event, Failed) else None
            if isinstance(event, TextDelta):
                if span is not None:
                    span.text(event)
                for _, entries in pieces(outputs[event.index], event, track):
                    logprobs[event.index].extend(entries)
            elif isinstance(event, Finished):
                for _, entries in spoken(outputs[event.index].finish(), track):
                    logprobs[event.index].extend(entries)
                if track is not None:
                    async for _ in track.finish():
                        pass
                finished.append(event)
                if len(finished) == len(outputs):
                    audio_tokens = sum(t.num_tokens for t in tracks)
                    audio = [t.message() for t in tracks] if tracks else None
                    body = completion(plan, finished, outputs, logprobs, audio, audio_tokens)
                    if save is not None:  # kept without the samples: the transcript is the text
                        kept = completion(plan, finished, outputs, logprobs, audio_summaries(tracks), audio_tokens)
                        err = await store_failure(plan.id, save, kept)
                        if err is not None:
                            error = err.message
                            return err.status, error_body(err)
                    error = None
                    return 200, body
            elif isinstance(event, Failed):
                log.error("request %s failed: %s", plan.id, event.message)
                error = event.message
                err = failure(event)
                return err.status, error_body(err), err.headers()
    except EngineError as exc:  # speech synthesis failed
        log.error("request %s failed: %s", plan.id, exc.message)
        error = exc.message
        return exc.status, error_body(exc)
    finally:
        for track in tracks:
            track.close()
        stream.close()
        if span is not None:
            span.end(outputs, finished, error, audio_summaries(tracks))
    raise RillError("the engine ended a request without finishing it")  # pragma: no cover


# A JSON answer: status, body, and extra headers (Retry-After) if any
Outcome = tuple[int, dict[str, Any]] | tuple[int, dict[str, Any], dict[str, str]]


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EngineResponse(Response):
    """ASGI response that runs a producer while listening for `http.disconnect`; on disconnect
    the producer is cancelled, and its `finally` aborts the engine request (or closes the
    upstream connection). The producer is a stream of SSE bytes, a `collect` giving one JSON
    answer, or a `start` that decides between the two (the gateway's tries: an error answer,
    or the stream of the model that took the request). Streams whatever the Accept header says
    (Opper's SDK asks for JSON even when streaming)."""

    def __init__(self, *, stream: AsyncIterator[bytes] | None = None,
                 collect: Callable[[], Awaitable[Outcome]] | None = None,
                 start: Callable[[], Awaitable[Outcome | AsyncIterator[bytes]]] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(status_code=200)
        self._stream = stream
        self._collect = collect
        self._start = start
        self._headers = headers or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Two plain asyncio tasks rather than an anyio task group: the group's set-up and
        # cancel-scope bookkeeping cost ~0.15 ms per request, a tenth of the gateway's time.
        responding = asyncio.ensure_future(self._respond(send))
        watching = asyncio.ensure_future(_disconnect(receive))
        try:
            await asyncio.wait((responding, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            if not responding.done():  # the client left (or the server is stopping): stop producing
                responding.cancel()
            await asyncio.wait((responding, watching))
        if not responding.cancelled():
            exc = responding.exception()
            if exc is not None and not isinstance(exc, OSError):  # OSError: the socket went away
                raise exc

    async def _respond(self, send: Send) -> None:
        if self._start is not None:
            started = await self._start()
            if isinstance(started, tuple):
                return await self._send_json(send, started)
            self._stream = started
        if self._stream is not None:
            await send(self._head(200, "text/event-stream; charset=utf-8",
                                   {"cache-control": "no-cache", "x-accel-buffering": "no"}))
            try:
                async for data in self._stream:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            finally:
                await self._stream.aclose()  # type: ignore[attr-defined]
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            assert self._collect is not None
            await self._send_json(send, await self._collect())

    async def _send_json(self, send: Send, outcome: Outcome) -> None:
        status, body, *extra = outcome
        await send(self._head(status, "application/json", extra[0] if extra else None))
        await send({"type": "http.response.body", "body": orjson.dumps(body), "more_body": False})

    def _head(self, status: int, content_type: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
        headers = {"content-type": content_type, **(extra or {}), **self._headers}
        return {"type": "http.response.start", "status": status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
