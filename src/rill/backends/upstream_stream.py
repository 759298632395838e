"""One streamed upstream answer: its SSE events read ahead by a task, handed over in batches,
and the body drained past `[DONE]` so the connection goes back to the pool."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import httpcore
import orjson

from rill.backends.upstream_errors import (NETWORK_ERRORS, TIMEOUTS, UpstreamBroken, UpstreamError, UpstreamStalled,
                                         chunk_problem, error_fields)

if TYPE_CHECKING:
    from rill.backends.upstream import Upstream, _Slot

log = logging.getLogger("rill.upstream")

READ_AHEAD = 8  # batches a stream's reader may be ahead of the client
FIRST_OUTPUT_WAIT_S = 0.02  # a role-only first event waits this long for the first token to join it
DRAIN_S = 0.5  # after [DONE], how long the rest of the body may take before the connection is dropped


class UpstreamStream:
    """The events (parsed `data:` JSON objects) of one streamed answer, up to `[DONE]`, in
    batches. A reader task reads ahead (a few batches at most) while the relay sends, and
    next_batch() joins what has arrived, so the cost goes per write, not per event. After
    `[DONE]` the reader reads the body to its end, so the connection goes back to the pool."""

    def __init__(self, upstream: Upstream, response: httpcore.Response, slot: _Slot):
        self._upstream = upstream
        self._response = response
        self._slot = slot
        self._events = self._read()
        self._queue: asyncio.Queue[list[dict[str, Any]] | UpstreamBroken | None] = asyncio.Queue(READ_AHEAD)
        self._reader: asyncio.Task[None] | None = None
        self._first: list[dict[str, Any]] | None = None
        self._last: UpstreamBroken | None = None  # the end (None) or the failure, once reached
        self._ended = False
        self._closed = False
        self.usage: dict[str, Any] | None = None  # the answer's usage, once an event carried it
        # called once on close with the usage and whether the stream broke (a ReplicaSet's ticket)
        self.on_end: Callable[[dict[str, Any] | None, bool], None] | None = None

    async def start(self) -> None:
        """Read the first batch here: until it has come, a failure is still an UpstreamError."""
        try:
            self._first = await anext(self._events)
        except StopAsyncIteration:
            raise UpstreamError(f"upstream {self._upstream.name} ended its stream before any event", status=502,
                                retryable=True, code="upstream_error") from None
        except UpstreamStalled as exc:  # the head came, then nothing: a timeout, as one before the head
            raise UpstreamError(str(exc), status=504, retryable=True, code="upstream_timeout") from None
        except UpstreamBroken as exc:
            raise UpstreamError(str(exc), status=502, retryable=True, code="upstream_error") from None
        if self._first is None:
            raise UpstreamError(f"upstream {self._upstream.name} ended its stream before any event", status=502,
                                retryable=True, code="upstream_error")
        head = self._first[0]
        if "error" in head and not head.get("choices"):
            message, type_, code, param = error_fields(orjson.dumps(head))
            raise UpstreamError(f"upstream {self._upstream.name}: {message}", status=502, retryable=True,
                                type=type_, code=code, param=param)
        pending = None
        if not any(_has_output(event) for event in self._first):
            # Often the first event is the role alone and the first token follows at once: wait
            # a moment for it, so that both go out in one write.
            pending = asyncio.ensure_future(anext(self._events))
            try:
                await asyncio.wait((pending,), timeout=FIRST_OUTPUT_WAIT_S)
            except BaseException:
                pending.cancel()
                await asyncio.wait((pending,))
                raise
            if pending.done():
                try:
                    more = pending.result()
                except StopAsyncIteration:
                    more = None
                except UpstreamBroken as exc:
                    more = exc
                pending = None
                if isinstance(more, list):
                    self._first.extend(more)
                else:
                    self._queue.put_nowait(more)  # the end, or the failure: after the first batch
        self._reader = asyncio.create_task(self._read_ahead(pending), name=f"rill-upstream-{self._upstream.name}")

    async def next_batch(self) -> list[dict[str, Any]] | None:
        """The events that arrived since the last call (waiting for at least one), or None at
        `[DONE]`; raises UpstreamBroken when the stream failed. Safe to cancel (a timeout)."""
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self._ended:
            return self._end()
        item = await self._queue.get()
        batch: list[dict[str, Any]] = []
        while True:
            if not isinstance(item, list):
                self._ended, self._last = True, item
                return batch or self._end()
            batch.extend(item)
            if self._queue.empty():
                return batch
            item = self._queue.get_nowait()

    def _end(self) -> None:
        if self._last is not None:
            raise self._last
        return None

    async def aclose(self) -> None:
        """Close the upstream connection (a client that left closes it too) and free the slot."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._reader is not None:
                if self._ended and self._last is None:  # it is reading the body's end: let it, briefly
                    await asyncio.wait((self._reader,), timeout=DRAIN_S)
                self._reader.cancel()
                await asyncio.wait((self._reader,))
            await self._events.aclose()
            await self._response.aclose()
        finally:
            await self._slot.__aexit__(None, None, None)
            if self.on_end is not None:
                on_end, self.on_end = self.on_end, None
                on_end(self.usage, self._last is not None)

    async def _read_ahead(self, pending: asyncio.Future[Any] | None) -> None:
        try:
            if pending is not None:  # start()'s read of the second batch, still on its way
                try:
                    await self._queue.put(await pending)
                except StopAsyncIteration:
                    return
            async for batch in self._events:
                await self._queue.put(batch)
        except UpstreamBroken as exc:
            await self._queue.put(exc)

    def _note_usage(self, batch: list[dict[str, Any]]) -> None:
        for event in batch:
            usage = event.get("usage")
            if isinstance(usage, dict):
                self.usage = usage

    async def _read(self) -> AsyncIterator[list[dict[str, Any]] | None]:
        """Batches of events; None once at `[DONE]`, after which the body is read to its end."""
        name = self._upstream.name
        buffer = b""
        done = False
        try:
            async for data in self._response.aiter_stream():
                if done:
                    continue  # the body's last bytes (the chunked encoding's end)
                buffer += data
                if b"\r" in buffer:
                    buffer = buffer.replace(b"\r\n", b"\n")
                blocks = buffer.split(b"\n\n")
                buffer = blocks.pop()  # the unfinished event, if any
                batch, done, broken = _events(blocks, name)
                if batch:
                    self._note_usage(batch)
                    yield batch
                if broken is not None:
                    raise broken
                if done:
                    yield None
        except TIMEOUTS:
            if done:
                return
            raise UpstreamStalled(f"upstream {name} sent nothing for {self._upstream.config.timeout:g} s") from None
        except NETWORK_ERRORS as exc:
            if done:
                return
            raise UpstreamBroken(f"upstream {name}'s stream broke: {exc or type(exc).__name__}") from None
        if done:
            return
        batch, done, broken = _events([buffer], name)  # a last event without its blank line
        if batch:
            self._note_usage(batch)
            yield batch
        if broken is not None:
            raise broken
        if not done:
            raise UpstreamBroken(f"upstream {name} ended its stream without [DONE]")
        yield None


def _has_output(event: dict[str, Any]) -> bool:
    """Whether an event carries something for the reader (content, a tool call, a refusal)."""
    for choice in event.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        if delta.get("content") or delta.get("tool_calls") or delta.get("refusal") or delta.get("function_call"):
            return True
    return False


def _events(blocks: list[bytes], name: str) -> tuple[list[dict[str, Any]], bool, UpstreamBroken | None]:
    """SSE event blocks -> their data objects, whether `[DONE]` came, and what broke the
    stream, if something did (the events before it still count)."""
    out: list[dict[str, Any]] = []
    for block in blocks:
        data = [line[6:] if line.startswith(b"data: ") else line[5:]
                for line in block.split(b"\n") if line.startswith(b"data:")]
        if not data:  # comments (`: keep-alive`), `event:`/`id:` only
            continue
        payload = b"\n".join(data)
        if payload.strip() == b"[DONE]":
            return out, True, None
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return out, False, UpstreamBroken(f"upstream {name} sent an event that is not JSON: {payload[:200]!r}")
        if not isinstance(event, dict):
            return out, False, UpstreamBroken(f"upstream {name} sent an event that is not an object")
        problem = chunk_problem(event)
        if problem is not None:
            return out, False, UpstreamBroken(f"upstream {name} sent a chunk Rill cannot read: {problem}")
        out.append(event)
    return out, False, None
