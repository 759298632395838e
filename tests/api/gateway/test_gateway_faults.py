"""The gateway against a real upstream that fails on request (tests/upstream_faults.py), over the
real network pool (httpcore on loopback): refused connections, 5xx, stalls before and after the
first byte, malformed SSE, resets. Before the first byte the client gets a 502/503/504 in OpenAI's
shape after the documented retries, or a fallback's answer; after it, one error event and the end.
Nothing hangs beyond the upstream's timeout, no connection or concurrency slot is left behind,
and the next request is served."""

from __future__ import annotations

import asyncio
from typing import Iterator

import httpx
import pytest

from rill.api.core import upstream as core_upstream
from rill.api.app import create_app
from rill.config import ServerConfig, UpstreamConfig
from tests.api.conftest import CHAT_URL, DONE, StreamingASGITransport, assert_error, parse_sse, wait_until
from tests.upstream_faults import TEXT, FaultyUpstream, closed_port

ASK = [{"role": "user", "content": "hi"}]
TIMEOUT_S = 0.5  # each upstream's: to connect, to the first byte, between chunks
RETRIES = 1
# before the first byte: (model, status, code) when every try failed
BEFORE = [
    ("refused", 502, "upstream_unreachable"),
    ("http-500", 502, "upstream_error"),
    ("http-503", 503, "upstream_error"),
    ("stall-head", 504, "upstream_timeout"),
    ("stall-first", 504, "upstream_timeout"),
    ("reset-head", 502, "upstream_unreachable"),
    ("malformed-first", 502, "upstream_error"),
    ("misshapen-first", 502, "upstream_error"),
]
SSE_ONLY = ("stall-first", "malformed-first")  # faults of a stream: the JSON answer is well formed
CASES = [(*case, stream) for case in BEFORE for stream in (True, False) if stream or case[0] not in SSE_ONLY]
CASE_IDS = [f"{model}-{'stream' if stream else 'json'}" for model, _, _, stream in CASES]
AFTER = ["stall-body", "malformed", "misshapen", "reset-body"]  # streams that break after their first event


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as server:
        yield server


def models(server: FaultyUpstream) -> tuple[UpstreamConfig, ...]:
    """Each fault as a model of its own (`<mode>`), and again with the healthy upstream as its
    fallback (`<mode>+fb`); `refused` points at a port nobody listens on. The stalls also with a
    long timeout (`<mode>+patient`)."""
    out = [UpstreamConfig(name="ok", base_url=server.base_url, model="ok", timeout=TIMEOUT_S, retries=RETRIES)]
    refused = f"http://127.0.0.1:{closed_port()}/v1"
    for mode in [m for m, _, _ in BEFORE] + AFTER:
        url = refused if mode == "refused" else server.base_url
        for name, fallbacks in ((mode, ()), (f"{mode}+fb", ("ok",))):
            out.append(UpstreamConfig(name=name, base_url=url, model=mode, timeout=TIMEOUT_S, retries=RETRIES,
                                      fallbacks=fallbacks, max_concurrency=2))
    for mode in ("stall-head", "stall-first", "stall-body"):  # only a client leaving can end these soon
        out.append(UpstreamConfig(name=f"{mode}+patient", base_url=server.base_url, model=mode, timeout=60))
    return tuple(out)


@pytest.fixture
async def app(upstream: FaultyUpstream, tmp_path, monkeypatch):
    monkeypatch.setattr(core_upstream, "BACKOFF_BASE_S", 0.001)
    upstream.requests.clear()
    config = ServerConfig(models=models(upstream), database_url=f"sqlite:///{tmp_path / 'rill.db'}")
    app = create_app(config, lambda router: None, exit_on_load_failure=False)  # upstream models only
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(app.state.loaded.wait, 10)
        yield app


async def ask(client: httpx.AsyncClient, model: str, *, stream: bool) -> httpx.Response:
    # the bound is a guard against a hang (each try is bounded by the upstream's timeout), not a timing check
    return await asyncio.wait_for(client.post(CHAT_URL, json={"model": model, "messages": ASK, "stream": stream}), 20)


def text_of(r: httpx.Response) -> str:
    if not r.headers["content-type"].startswith("text/event-stream"):
        return r.json()["choices"][0]["message"]["content"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in parse_sse(r.text)
                   if c != DONE and c.get("choices"))


async def assert_all_let_go(app, upstream: FaultyUpstream, client: httpx.AsyncClient) -> None:
    """No concurrency slot held, no stalled connection left open, and the next request served."""
    upstreams = [m.upstream for m in app.state.router.models() if hasattr(m, "upstream")]
    await wait_until(lambda: all(u.in_flight == 0 for u in upstreams), what="every concurrency slot is free")
    await wait_until(lambda: upstream.stalled == 0, what="the gateway closed the stalled connections")
    r = await ask(client, "ok", stream=True)
    assert r.status_code == 200 and text_of(r) == TEXT


@pytest.mark.parametrize("model, status, code, stream", CASES, ids=CASE_IDS)
async def test_a_failure_before_the_first_byte_is_retried_then_an_error_status(
        app, client, upstream, model, status, code, stream):
    r = await ask(client, model, stream=stream)
    err = assert_error(r, status, type="server_error", code=code)
    assert f"upstream {model} " in err["message"]  # names the upstream that failed
    if model != "refused":
        assert upstream.requests[model] == 1 + RETRIES  # tried, then retried as configured
    await assert_all_let_go(app, upstream, client)


@pytest.mark.parametrize("model, status, code, stream", CASES, ids=CASE_IDS)
async def test_a_failure_before_the_first_byte_falls_back(app, client, upstream, model, status, code, stream):
    r = await ask(client, f"{model}+fb", stream=stream)
    assert r.status_code == 200 and text_of(r) == TEXT
    served_by = parse_sse(r.text)[0]["model"] if stream else r.json()["model"]
    assert served_by == "ok"
    await assert_all_let_go(app, upstream, client)


@pytest.mark.parametrize("model", AFTER)
async def test_a_stream_broken_after_the_first_byte_ends_with_one_error_event(app, client, upstream, model):
    r = await ask(client, f"{model}+fb", stream=True)  # a fallback is configured: too late for it
    assert r.status_code == 200
    events = parse_sse(r.text)
    assert DONE not in events
    assert events[0]["choices"][0]["delta"]["content"] == "Hello" and events[0]["model"] == f"{model}+fb"
    errors = [e for e in events if "error" in e]
    assert errors == [events[-1]] and set(events[-1]["error"]) == {"message", "type", "param", "code"}
    assert events[-1]["error"]["code"] == "upstream_error" and events[-1]["error"]["type"] == "server_error"
    assert upstream.requests[model] == 1 and upstream.requests["ok"] == 0  # no retry, no fallback
    await assert_all_let_go(app, upstream, client)


@pytest.mark.parametrize("model, status, code", [("stall-body", 504, "upstream_timeout"),
                                                 ("reset-body", 502, "upstream_unreachable")])
async def test_a_json_answer_broken_midway_is_an_error_status(app, client, upstream, model, status, code):
    r = await ask(client, model, stream=False)
    assert_error(r, status, type="server_error", code=code)
    await assert_all_let_go(app, upstream, client)


async def test_the_healthy_upstream_streams_and_answers(app, client, upstream):
    r = await ask(client, "ok", stream=True)
    events = parse_sse(r.text)
    assert events[-1] == DONE and text_of(r) == TEXT
    r = await ask(client, "ok", stream=False)
    assert r.json()["model"] == "ok" and text_of(r) == TEXT and r.json()["usage"]["total_tokens"] == 5


@pytest.mark.parametrize("model", ["stall-head", "stall-first", "stall-body"])
async def test_a_client_that_leaves_a_stalled_upstream_frees_its_connection(app, upstream, model):
    """The client gives up long before the upstream's timeout (60 s): the gateway closes the
    upstream connection and frees the concurrency slot at once."""
    model = f"{model}+patient"
    async with httpx.AsyncClient(transport=StreamingASGITransport(app), base_url="http://rill.test") as live:
        leaving = asyncio.create_task(live.post(CHAT_URL, json={"model": model, "messages": ASK, "stream": True}))
        await wait_until(lambda: upstream.stalled == 1, what="the upstream holds the request")
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
    up = app.state.router.resolve(model).upstream
    await wait_until(lambda: upstream.stalled == 0, what="the gateway closed the upstream connection")
    await wait_until(lambda: up.in_flight == 0, what="the concurrency slot is free")
