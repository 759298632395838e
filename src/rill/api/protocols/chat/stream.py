"""A local chat completion's answer: its stream of `chat.completion.chunk`s, or its collected
`chat.completion`, from the engine's events through the core's outputs (with audio output's
speech interleaved, and the stored completion kept before [DONE])."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

from rill.api.protocols.chat.audio import AudioTrack, next_item
from rill.api.protocols.chat.chunks import ChunkBuilder, annotations, completion
from rill.api.core.output import ChoiceOutput
from rill.api.protocols.chat import deltas
from rill.api.protocols.chat.deltas import Piece
from rill.api.core.plan import Plan
from rill.api.core.tracing import ChatSpan
from rill.engine.engine import RequestStream
from rill.engine.types import Failed, Finished, TextDelta, TokenLogprob
from rill.api.core.run import CLIENT_LEFT, failure, next_event, outputs_for
from rill.api.http.response import KEEPALIVE, KEEPALIVE_SECONDS, sse
from rill.errors import EngineError, RillError, StoreFailed, error_body

log = logging.getLogger("rill.api")

DONE = b"data: [DONE]\n\n"



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


def pieces(plan: Plan, output: ChoiceOutput, event: TextDelta, track: AudioTrack | None = None) -> list[Piece]:
    """A delta's chunks: its reasoning (a thinking model's), then its text."""
    out = deltas.pieces(output.reason(event.reasoning)) if event.reasoning else []
    if event.text:
        out += spoken(deltas.pieces(output.feed(event.text, event.logprobs), plan.legacy_functions), track)
    return out


def spoken(out: list[Piece], track: AudioTrack | None) -> list[Piece]:
    """With audio output, each piece of content is also the transcript of what will be spoken."""
    if track is None:
        return out
    return [({**delta, "audio": track.transcript(delta["content"])}, entries) if delta.get("content")
            else (delta, entries) for delta, entries in out]


def audio_summaries(tracks: list[AudioTrack]) -> list[dict[str, Any] | None] | None:
    return [t.summary() if t.transcript_text else None for t in tracks] if tracks else None


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
    outputs = outputs_for(plan)
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
                event = await next_event(stream)
                if event is None:
                    yield KEEPALIVE  # keeps proxies from closing a stream that waits in the queue
                    continue
            if isinstance(event, TextDelta):
                if span is not None:
                    span.text(event)
                track = tracks[event.index] if tracks else None
                for delta, entries in pieces(plan, outputs[event.index], event, track):
                    if logprobs is not None:
                        logprobs[event.index].extend(entries)
                    yield sse(chunks.delta(delta, event.index, entries))
            elif isinstance(event, Finished):
                output = outputs[event.index]
                track = tracks[event.index] if tracks else None
                for delta, entries in spoken(deltas.pieces(output.finish(), plan.legacy_functions), track):
                    if logprobs is not None:
                        logprobs[event.index].extend(entries)
                    yield sse(chunks.delta(delta, event.index, entries))
                if track is not None:
                    async for delta in track.finish():
                        yield sse(chunks.delta(delta, event.index))
                cited = annotations(plan, output.message().get("content"))
                if cited:
                    yield sse(chunks.delta({"annotations": cited}, event.index))
                yield sse(chunks.finish(event, deltas.choice_finish_reason(output, event, plan.legacy_functions)))
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
            span.end(outputs, finished, error, audio_summaries(tracks), legacy=plan.legacy_functions)


async def collect(plan: Plan, stream: RequestStream, save: Saver | None = None,
                  span: ChatSpan | None = None, tracks: list[AudioTrack] | None = None) -> tuple[int, dict[str, Any]]:
    """Run the request to the end; (status, body) of the `chat.completion` or the error. The
    message is what the stream would have sent, assembled (with `tracks`, its audio too)."""
    outputs = outputs_for(plan)
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
                for _, entries in pieces(plan, outputs[event.index], event, track):
                    logprobs[event.index].extend(entries)
            elif isinstance(event, Finished):
                for _, entries in spoken(deltas.pieces(outputs[event.index].finish(), plan.legacy_functions), track):
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
            span.end(outputs, finished, error, audio_summaries(tracks), legacy=plan.legacy_functions)
    raise RillError("the engine ended a request without finishing it")  # pragma: no cover
