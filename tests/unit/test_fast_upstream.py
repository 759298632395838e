"""benchmarks/fast_upstream.py, in-process on a free port: a stream parses into the right chunks
and [DONE] (with httpx and Rill's own SSE parser), max_tokens caps it, usage comes when asked,
the JSON answer and the model list, and keep-alive carries many requests over one connection."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import httpx
import pytest

from rill.bench.sse import SSEParser

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "fast_upstream.py"
_spec = importlib.util.spec_from_file_location("fast_upstream", _PATH)
fast_upstream = importlib.util.module_from_spec(_spec)
sys.modules["fast_upstream"] = fast_upstream
_spec.loader.exec_module(fast_upstream)


@pytest.fixture
async def upstream():
    server = fast_upstream.FastUpstream(chunks=16)
    port = await server.start("127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield server, client
    await server.close()


async def _stream(client: httpx.AsyncClient, body: dict) -> tuple[list[dict], bool, httpx.Response]:
    parser = SSEParser()
    events: list[dict] = []
    done = False
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        async for part in r.aiter_bytes():
            for data in parser.feed(part):
                if data == "[DONE]":
                    done = True
                else:
                    assert not done, "an event after [DONE]"
                    events.append(json.loads(data))
    return events, done, r


def _content(events: list[dict]) -> list[str]:
    return [c["delta"]["content"] for e in events for c in e["choices"] if c["delta"].get("content")]


async def test_a_stream_has_its_chunks_a_finish_usage_and_done(upstream):
    _, client = upstream
    events, done, r = await _stream(client, {"model": "fast", "stream": True, "messages": [
        {"role": "user", "content": "three words here"}], "stream_options": {"include_usage": True}})
    assert done
    assert r.headers["transfer-encoding"] == "chunked"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert _content(events) == fast_upstream.answer(16)
    assert all(a != b for a, b in zip(_content(events), _content(events)[1:]))
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == "fast" for e in events)
    assert len({e["id"] for e in events}) == 1
    finishes = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
    assert finishes == ["stop"]
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 16, "total_tokens": 19}


async def test_max_tokens_caps_the_stream_and_usage_comes_only_when_asked(upstream):
    _, client = upstream
    events, done, _ = await _stream(client, {"model": "m", "stream": True, "max_tokens": 5, "messages": []})
    assert done
    assert _content(events) == ["tok ", "ken ", "word ", "more ", "text "]
    assert all("usage" not in e for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["model"] == "m"  # the request's model name is echoed


async def test_keep_alive_carries_many_requests_over_one_connection(upstream):
    server, client = upstream
    for _ in range(5):
        events, done, _ = await _stream(client, {"stream": True, "messages": []})
        assert done and len(_content(events)) == 16
    r = await client.get("/v1/models")
    assert r.json()["data"][0]["id"] == "fast"
    assert (server.connections, server.requests) == (1, 6)


async def test_the_json_answer_and_errors(upstream):
    _, client = upstream
    r = await client.post("/v1/chat/completions", json={"messages": [], "max_tokens": 3})
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "tok ken word "}
    assert body["usage"]["completion_tokens"] == 3
    r = await client.post("/v1/chat/completions", content=b"[1,")
    assert r.status_code == 400 and "error" in r.json()
    assert (await client.get("/nowhere")).status_code == 404
    assert (await client.get("/v1/chat/completions")).status_code == 405


async def test_a_chunked_request_body_and_connection_close(upstream):
    server, client = upstream

    async def body():
        yield b'{"max_tokens": 2, '
        yield b'"messages": []}'

    r = await client.post("/v1/chat/completions", content=body(), headers={"connection": "close"})
    assert r.status_code == 200 and r.headers["connection"] == "close"
    assert r.json()["choices"][0]["message"]["content"] == "tok ken "
    r = await client.get("/v1/models")  # a new connection: the last one was closed
    assert r.status_code == 200
    assert server.connections == 2
