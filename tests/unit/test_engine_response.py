"""rill.api.http.response.EngineResponse: a client that leaves before the stream's first read
still gets its producer's request aborted (on_close), since an async generator that never
started never runs its own `finally`."""

from __future__ import annotations

import asyncio

from rill.api.http.response import EngineResponse


async def test_on_close_runs_when_the_client_leaves_before_the_first_read():
    started, closed = [], []

    async def stream():
        started.append(True)
        try:
            yield b"data: x\n\n"
        finally:
            closed.append("generator")

    head_sent = asyncio.Event()

    async def send(message):
        if message["type"] == "http.response.start":
            head_sent.set()
            await asyncio.Event().wait()  # the socket blocks: the client is gone

    async def receive():
        await head_sent.wait()
        return {"type": "http.disconnect"}

    response = EngineResponse(stream=stream(), on_close=lambda: closed.append("on_close"))
    await asyncio.wait_for(response({"type": "http"}, receive, send), 5)
    assert started == [] and closed == ["on_close"]


async def test_on_close_runs_after_a_whole_answer_too():
    closed, sent = [], []

    async def stream():
        yield b"data: x\n\n"

    async def send(message):
        sent.append(message)

    async def receive():
        await asyncio.Event().wait()

    await EngineResponse(stream=stream(), on_close=lambda: closed.append(True))({"type": "http"}, receive, send)
    assert closed == [True] and sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
