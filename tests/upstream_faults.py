"""A real OpenAI-compatible upstream on a loopback port that fails on request (docs/faults.md),
for the gateway's fault tests in-process (tests/api) and end to end (tests/e2e).

It runs its own asyncio loop on a thread of its own, speaks HTTP/1.1 with keep-alive, and takes
the behaviour from the request's `model` (what a rill.toml's `model` key sends):

    ok               a stream of "Hello", " world", finish, usage, [DONE] (or the JSON answer)
    http-500         500 with an OpenAI-shaped error body
    http-503         503 with Retry-After: 0
    stall-head       reads the request and sends nothing until the client gives up
    stall-first      sends the head of a stream (200, text/event-stream), then nothing
    stall-body       sends the head and the first event (JSON: part of the body), then nothing
    malformed-first  a first event that is not JSON
    malformed        the first event, then one that is not JSON
    misshapen-first  a first event (JSON: an answer) whose `delta` (`message`) is not an object
    misshapen        the first event, then one whose `tool_calls` is a string
    reset-head       reads the request and resets the connection (RST) without answering
    reset-body       sends the head and the first event, then resets the connection

A port nobody listens on (refused connections) comes from `closed_port()`. The server counts the
requests of each mode and the connections stalled now; `stop()` releases every stall.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import struct
import threading
from typing import Any

MODES = ("ok", "http-500", "http-503", "stall-head", "stall-first", "stall-body", "malformed-first", "malformed",
         "misshapen-first", "misshapen", "reset-head", "reset-body")
FIRST = {"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": "faulty",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}, "finish_reason": None}]}
REST = [
    {**FIRST, "choices": [{"index": 0, "delta": {"content": " world"}, "finish_reason": None}]},
    {**FIRST, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {**FIRST, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
]
ANSWER = {"id": "up-1", "object": "chat.completion", "created": 1, "model": "faulty",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
TEXT = "Hello world"
MISSHAPEN_FIRST = {**FIRST, "choices": [{"index": 0, "delta": "Hello", "finish_reason": None}]}
MISSHAPEN = {**FIRST, "choices": [{"index": 0, "delta": {"tool_calls": "oops"}, "finish_reason": None}]}
MISSHAPEN_ANSWER = {**ANSWER, "choices": [{"index": 0, "message": "Hello world", "finish_reason": "stop"}]}


def closed_port() -> int:
    """A loopback port with nobody listening (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _event(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class FaultyUpstream:
    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.stalled = 0  # connections held in a stall now
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="faulty-upstream", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultyUpstream:
        self._thread.start()
        assert self._started.wait(10), "the faulty upstream did not start"
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> FaultyUpstream:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        handlers: set[asyncio.Task] = set()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await self._connection(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                handlers.discard(task)
                writer.close()
                try:
                    await writer.wait_closed()
                except (ConnectionError, OSError):
                    pass

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(handlers):
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # keep-alive: one request after another on the connection
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed the connection
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = json.loads(await reader.readexactly(length)) if length else {}
            mode = body.get("model", "ok")
            self.requests[mode] += 1
            if not await self._answer(mode, bool(body.get("stream")), reader, writer):
                return

    async def _answer(self, mode: str, stream: bool, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must end."""
        if mode not in MODES or mode.startswith("http-"):  # an unknown mode is the test's mistake: a 400
            status = int(mode[5:]) if mode in MODES else 400
            body = json.dumps({"error": {"message": f"injected {status}", "type": "server_error",
                                         "param": None, "code": None}}).encode()
            extra = b"retry-after: 0\r\n" if status == 503 else b""
            writer.write(f"HTTP/1.1 {status} Injected\r\ncontent-type: application/json\r\n".encode() + extra
                         + f"content-length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            return True
        if mode == "stall-head":
            await self._stall(reader)
            return False
        if mode == "reset-head":
            _reset(writer)
            return False
        if not stream:
            body = json.dumps(MISSHAPEN_ANSWER if mode == "misshapen-first" else ANSWER).encode()
            if mode == "stall-body":
                writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
                             "\r\n\r\n".encode() + body[:20])
                await writer.drain()
                await self._stall(reader)
                return False
            if mode == "reset-body":
                writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
                             "\r\n\r\n".encode() + body[:20])
                await writer.drain()
                _reset(writer)
                return False
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
                         "\r\n\r\n".encode() + body)
            await writer.drain()
            return True
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        if mode == "stall-first":
            await writer.drain()
            await self._stall(reader)
            return False
        if mode in ("malformed-first", "misshapen-first"):
            first = b"data: {not json\n\n" if mode == "malformed-first" else _event(MISSHAPEN_FIRST)
            writer.write(_chunk(first) + b"0\r\n\r\n")
            await writer.drain()
            return True
        writer.write(_chunk(_event(FIRST)))
        await writer.drain()
        if mode == "stall-body":
            await self._stall(reader)
            return False
        if mode == "reset-body":
            _reset(writer)
            return False
        if mode == "malformed":
            writer.write(_chunk(b"data: {not json\n\n") + b"0\r\n\r\n")
        elif mode == "misshapen":
            writer.write(_chunk(_event(MISSHAPEN)) + b"0\r\n\r\n")
        else:
            writer.write(b"".join(_chunk(_event(e)) for e in REST) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _stall(self, reader: asyncio.StreamReader) -> None:
        """Send nothing until the client closes the connection (or the server stops)."""
        self.stalled += 1
        try:
            while await reader.read(1024):
                pass
        finally:
            self.stalled -= 1


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed server or a middlebox does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
