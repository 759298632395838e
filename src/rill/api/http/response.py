"""An answer as an ASGI response: SSE framing with keep-alives, or one JSON body; either way a
client disconnect cancels the producer, whose `finally` aborts the engine request (or closes the
upstream connection)."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

KEEPALIVE_SECONDS = 15.0
KEEPALIVE = b": keep-alive\n\n"


def sse(obj: dict[str, Any], event: str | None = None) -> bytes:
    """One server-sent event; `event` names its type (Responses and Messages name theirs)."""
    data = b"data: " + orjson.dumps(obj) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + data if event else data


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
                 headers: dict[str, str] | None = None, on_close: Callable[[], None] | None = None):
        super().__init__(status_code=200)
        self._stream = stream
        self._collect = collect
        self._start = start
        self._headers = headers or {}
        # run however the response ends: a stream the client left before its first read never
        # runs its own `finally` (an async generator not yet started), so the engine request
        # it would have aborted is aborted here
        self._on_close = on_close

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
            if self._on_close is not None:
                self._on_close()
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
