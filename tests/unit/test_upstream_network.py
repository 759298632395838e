"""rill.backends.upstream over a real socket (benchmarks/fast_upstream.py in-process, and the
asyncio network backend): streams and JSON answers parse, connections are reused across
requests (the body is read past [DONE]), an unreachable upstream is a retryable 502."""

from __future__ import annotations

import socket

import pytest

from rill.backends.upstream import Upstream
from rill.backends.upstream_errors import UpstreamError
from rill.config import UpstreamConfig
from tests.unit.test_fast_upstream import fast_upstream

BODY = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture
async def served():
    server = fast_upstream.FastUpstream(chunks=16)
    port = await server.start("127.0.0.1", 0)
    upstream = Upstream(UpstreamConfig(name="fast", base_url=f"http://127.0.0.1:{port}/v1", timeout=5))
    yield server, upstream
    await upstream.aclose()
    await server.close()


async def read_all(upstream: Upstream, body: dict) -> list[dict]:
    stream = await upstream.stream(body)
    events: list[dict] = []
    try:
        while (batch := await stream.next_batch()) is not None:
            events.extend(batch)
    finally:
        await stream.aclose()
    return events


async def test_streams_parse_and_reuse_one_connection(served):
    server, upstream = served
    for _ in range(5):
        events = await read_all(upstream, {**BODY, "stream": True, "stream_options": {"include_usage": True}})
        content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
        assert len(content.split()) == 5 and events[-1]["usage"]["completion_tokens"] == 5
    assert server.requests == 5 and server.connections == 1
    assert upstream.in_flight == 0


async def test_a_json_answer_uses_the_same_pool(served):
    server, upstream = served
    for _ in range(3):
        answer = await upstream.complete(BODY)
        assert answer["choices"][0]["message"]["content"]
    await read_all(upstream, {**BODY, "stream": True})
    assert server.connections == 1


async def test_an_unreachable_upstream_is_a_retryable_502():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    upstream = Upstream(UpstreamConfig(name="gone", base_url=f"http://127.0.0.1:{port}/v1", timeout=2))
    try:
        with pytest.raises(UpstreamError) as e:
            await upstream.stream({**BODY, "stream": True})
        assert e.value.retryable and e.value.status == 502 and e.value.code == "upstream_unreachable"
        assert upstream.in_flight == 0
    finally:
        await upstream.aclose()
