"""The gateway in-process: upstream models behind a scripted upstream (httpx-style handlers behind
httpcore's pool interface: tests/api/mock_pool.py), the fake local model as a fallback. What the
client gets is Rill's contract whatever the upstream sends; fallbacks happen only before the
first byte; spans, store and keys apply."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Callable

import httpx
import pytest

from rill.api.core import upstream as core_upstream
from rill.api.protocols.chat import gateway
from rill.api.app import create_app
from rill.config import ModelConfig, ServerConfig
from tests.api.conftest import MODEL, assert_error, fake_loader, parse_sse, wait_until
from tests.api.gateway.fake_upstream import USAGE, chunk, sse_body, status, streamed, upstream
from tests.api.mock_pool import MockPool

CHAT_URL = "/v1/chat/completions"
ASK = [{"role": "user", "content": "hi"}]
Reply = Callable[[httpx.Request], Any]


def content_of(events: list) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                   if isinstance(e, dict) and e.get("choices"))


async def test_a_stream_comes_back_in_rills_shape(client, fake):
    fake.script("up.test", streamed(chunk("Hel"), chunk("lo"), chunk(finish="stop"), chunk(choices=False, usage=USAGE)))
    r = await client.post(CHAT_URL, json={"model": "up", "messages": ASK, "stream": True, "temperature": 0.5,
                                          "stream_options": {"include_usage": True}, "x_vendor": {"a": 1},
                                          "tags": {"t": 1}, "store": True, "prediction": {"type": "content",
                                                                                          "content": "x"}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    chunks = events[:-1]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["id"].startswith("chatcmpl-")
    assert {c["model"] for c in chunks} == {"up"} and {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"content": "Hel", "role": "assistant"}
    assert content_of(events) == "Hello"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE
    assert all(c["usage"] is None for c in chunks[:-1])
    (sent,) = fake.bodies("up.test")
    assert sent["model"] == "remote-name" and sent["temperature"] == 0.5 and sent["x_vendor"] == {"a": 1}
    assert sent["prediction"] == {"type": "content", "content": "x"}  # passed on: the upstream does what it does with it
    assert sent["stream_options"] == {"include_usage": True}
    assert not {"tags", "store", "metadata", "parent_span_id"} & set(sent)


async def test_usage_is_asked_for_and_kept_off_the_stream_unless_wanted(client, fake, app):
    # this upstream puts usage in its finish chunk instead of a chunk of its own
    fake.script("up.test", streamed(chunk("a"), chunk(finish="stop", usage=USAGE)))
    r = await client.post(CHAT_URL, json={"model": "up", "messages": ASK, "stream": True})
    events = parse_sse(r.text)
    assert all("usage" not in c for c in events[:-1]) and events[-1] == "[DONE]"
    assert fake.bodies("up.test")[0]["stream_options"] == {"include_usage": True}
    await app.state.span_writer.flush()
    span = (await client.get(f"/v1/spans/{r.headers['x-rill-span-id']}")).json()
    assert span["model"] == "up" and span["usage"]["total_tokens"] == 10 and span["finish_reason"] == "stop"
    assert span["output"] == {"role": "assistant", "content": "a"} and span["timings"]["ttft_ms"] >= 0


async def test_usage_chunk_when_asked_even_if_the_upstream_sends_it_inside_a_choice_chunk(client, fake):
    fake.script("up.test", streamed(chunk("a"), chunk(finish="stop", usage=USAGE)))
    r = await client.post(CHAT_URL, json={"model": "up", "messages": ASK, "stream": True,
                                          "stream_options": {"include_usage": True}})
    chunks = parse_sse(r.text)[:-1]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["usage"] is None


async def test_a_json_answer_is_normalised_and_stored(client, fake, app):
    answer = {"id": "up-9", "object": "chat.completion", "created": 5, "model": "remote-name", "usage": USAGE,
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hey"}, "finish_reason": "stop"}]}
    fake.script("up.test", lambda request: httpx.Response(200, json=answer))
    r = await client.post(CHAT_URL, json={"model": "up", "messages": ASK, "store": True, "metadata": {"k": "v"}})
    body = r.json()
    assert r.status_code == 200 and body["id"].startswith("chatcmpl-") and body["model"] == "up"
    assert body["choices"][0]["message"]["content"] == "hey" and body["usage"] == USAGE
    stored = (await client.get(f"{CHAT_URL}/{body['id']}")).json()
    assert stored["choices"][0]["message"]["content"] == "hey" and stored["metadata"] == {"k": "v"}
    assert "stream_options" not in fake.bodies("up.test")[0]


async def test_a_streamed_upstream_answer_is_stored_assembled(client, fake):
    calls = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\""}},
             {"index": 0, "function": {"arguments": ": 1}"}}]
    fake.script("up.test", streamed(chunk(tool_calls=[calls[0]]), chunk(tool_calls=[calls[1]]),
                                    chunk(finish="tool_calls"), chunk(choices=False, usage=USAGE)))
    r = await client.post(CHAT_URL, json={"model": "up", "messages": ASK, "stream": True, "store": True})
    completion_id = parse_sse(r.text)[0]["id"]
    stored = (await client.get(f"{CHAT_URL}/{completion_id}")).json()
    message = stored["choices"][0]["message"]
    assert message["content"] is None and stored["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]
    assert stored["usage"] == USAGE


async def test_an_upstream_4xx_comes_back_as_is_and_is_not_retried(client, fake):
    fake.script("up.test", status(400, {"error": {"message": "max_tokens is too large", "type": "invalid_request_error",
                                                  "param": "max_tokens", "code": "bad_max"}}))
    r = await client.post(CHAT_URL, json={"model": "up", "messages": ASK, "stream": True})
    err = assert_error(r, 400, type="invalid_request_error", param="max_tokens", code="bad_max")
    assert err["message"] == "max_tokens is too large"
    assert len(fake.requests) == 1  # a 400 is the request's fault: the local fallback is not tried


@pytest.mark.parametrize("models", [(upstream("up", retries=1, fallbacks=(MODEL,)), ModelConfig(name=MODEL))],
                         indirect=True)
async def test_5xx_is_retried_then_the_fallback_serves(client, fake, app, monkeypatch):
    monkeypatch.setattr(core_upstream, "BACKOFF_BASE_S", 0.001)
    fake.script("up.test", status(503))
    r = await client.post(CHAT_URL, json={"model": "up", "messages": ASK, "stream": True, "temperature": 0})
    events = parse_sse(r.text)
    assert r.status_code == 200 and events[0]["model"] == MODEL and content_of(events) == "hi"
    assert len(fake.requests) == 2  # the try and one retry
    await app.state.span_writer.flush()
    span = (await client.get(f"/v1/spans/{r.headers['x-rill-span-id']}")).json()
    assert span["model"] == MODEL and span["status"] == "ok"
    assert [a["status"] for a in span["meta"]["attempts"]] == [503, 503]
    from tests.api.test_metrics import sample, scrape
    text = await scrape(client)
    assert sample(text, "rill_gateway_failed_tries_total", model="up", status="503") == 2
    assert sample(text, "rill_upstream_in_flight", model="up") == 0
    assert sample(text, "rill_upstream_max_concurrency", model="up") == 64


@pytest.mark.parametrize("models", [(upstream("up"), ModelConfig(name=MODEL))], indirect=True)
async def test_429_without_fallback_is_a_429_with_retry_after(client, fake):
    fake.script("up.test", status(429, {"error": {"message": "slow down", "type": "rate_limit_error"}},
                                  **{"retry-after": "7"}))
    r = await client.post(CHAT_URL, json={"model": "up", "messages": ASK})
    assert_error(r, 429, type="rate_limit_error")
    assert r.headers["retry-after"] == "7"


@pytest.mark.parametrize("models", [(upstream("a", fallbacks=("b",)), upstream("b"), ModelConfig(name=MODEL))],
                         indirect=True)
async def test_a_connect_error_moves_to_the_next_upstream(client, fake, monkeypatch):
    monkeypatch.setattr(core_upstream, "BACKOFF_BASE_S", 0.001)

    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    fake.script("a.test", refuse)
    fake.script("b.test", streamed(chunk("from b"), chunk(finish="stop")))
    r = await client.post(CHAT_URL, json={"model": "a", "messages": ASK, "stream": True})
    events = parse_sse(r.text)
    assert content_of(events) == "from b" and events[0]["model"] == "b"


@pytest.mark.parametrize("models", [(upstream("up"), ModelConfig(name=MODEL))], indirect=True)
async def test_all_tries_failing_is_a_502_naming_the_upstream(client, fake, app):
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    fake.script("up.test", refuse)
    r = await client.post(CHAT_URL, json={"model": "up", "messages": ASK, "stream": True})
    err = assert_error(r, 502, type="server_error", code="upstream_unreachable")
    assert "up" in err["message"]
    await app.state.span_writer.flush()
    span = (await client.get(f"/v1/spans/{r.headers['x-rill-span-id']}")).json()
    assert span["status"] == "error" and "unreachable" in span["error"]


async def broken_stream(request) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        yield sse_body(chunk("one"), done=False)
        raise httpx.ReadError("connection reset")

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


@pytest.mark.parametrize("reply, message", [
    (broken_stream, "broke"),
    (streamed(chunk("one"), {"error": {"message": "model crashed"}}), "model crashed"),
    (streamed(chunk("one"), done=False), "without [DONE]"),
    (streamed(chunk("one"), "not json"), "not JSON"),
])
async def test_a_stream_broken_after_the_first_byte_ends_in_an_error_event(client, fake, app, reply, message):
    fake.script("up.test", reply)
    r = await client.post(CHAT_URL, json={"model": "up", "messages": ASK, "stream": True})
    events = [json.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: {")]
    assert "data: [DONE]" not in r.text
    assert events[0]["choices"][0]["delta"]["content"] == "one"  # no fallback once bytes went out
    assert events[-1]["error"]["code"] == "upstream_error" and message in events[-1]["error"]["message"]
    assert len(fake.requests) == 1
    await app.state.span_writer.flush()
    span = (await client.get(f"/v1/spans/{r.headers['x-rill-span-id']}")).json()
    assert span["status"] == "error" and message in span["error"]


async def test_a_client_that_leaves_closes_the_upstream_connection(app, fake):
    closed, sent = asyncio.Event(), asyncio.Event()

    async def endless(request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            try:
                yield sse_body(chunk("tick"), done=False)
                sent.set()
                await asyncio.Event().wait()  # a hung upstream
            finally:
                closed.set()

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    fake.script("up.test", endless)
    from tests.api.conftest import StreamingASGITransport
    async with httpx.AsyncClient(transport=StreamingASGITransport(app), base_url="http://rill.test") as live:
        async with live.stream("POST", CHAT_URL, json={"model": "up", "messages": ASK, "stream": True}) as r:
            async for line in r.aiter_lines():
                if "tick" in line:
                    break
    await wait_until(closed.is_set, what="the upstream stream is closed")
    up = app.state.router.resolve("up").upstream
    await wait_until(lambda: up.in_flight == 0, what="the concurrency slot is free")


@pytest.mark.parametrize("models", [(upstream("up", max_concurrency=1, timeout=0.2), ModelConfig(name=MODEL))],
                         indirect=True)
async def test_a_hung_upstream_holds_its_own_slots_only(client, fake, app):
    release = asyncio.Event()

    async def hung(request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield sse_body(chunk("x"), done=False)
            await release.wait()
            yield b"data: [DONE]\n\n"

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    fake.script("up.test", hung)
    first = asyncio.create_task(client.post(CHAT_URL, json={"model": "up", "messages": ASK, "stream": True}))
    up = app.state.router.resolve("up").upstream
    await wait_until(lambda: up.in_flight == 1, what="the first request holds the only slot")
    # the local model answers meanwhile, and a second request to the full upstream gives up after its timeout
    local = await client.post(CHAT_URL, json={"model": MODEL, "messages": ASK, "temperature": 0})
    assert local.status_code == 200 and local.json()["choices"][0]["message"]["content"] == "hi"
    assert_error(await client.post(CHAT_URL, json={"model": "up", "messages": ASK}), 503, code="upstream_busy")
    release.set()
    assert (await first).status_code == 200


async def test_a_quiet_upstream_gets_keepalives(client, fake, monkeypatch):
    monkeypatch.setattr(gateway, "KEEPALIVE_SECONDS", 0.01)

    async def slow(request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield sse_body(chunk("a"), done=False)
            await asyncio.sleep(0.1)
            yield sse_body(chunk(finish="stop"))

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    fake.script("up.test", slow)
    r = await client.post(CHAT_URL, json={"model": "up", "messages": ASK, "stream": True})
    assert ": keep-alive" in r.text and r.text.endswith("data: [DONE]\n\n")


async def test_a_completion_nests_under_a_span_and_lists_with_its_tags(client, fake, app):
    fake.script("up.test", streamed(chunk("a"), chunk(finish="stop")))
    root = (await client.post("/v1/spans", json={"name": "flow"})).json()
    r = await client.post(CHAT_URL, json={"model": "up", "messages": ASK, "stream": True, "tags": {"team": "x"},
                                          "parent_span_id": root["id"]})
    assert r.status_code == 200
    await app.state.span_writer.flush()
    trace = (await client.get(f"/v1/traces/{root['trace_id']}")).json()
    assert [s["model"] for s in trace["spans"]] == [None, "up"]
    assert trace["spans"][1]["tags"] == {"team": "x"}
    assert_error(await client.post(CHAT_URL, json={"model": "up", "messages": ASK, "parent_span_id": "nope"}),
                 400, param="parent_span_id")


async def test_models_lists_upstreams_and_tokenize_refuses_them(client):
    cards = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
    assert cards["up"]["owned_by"] == "upstream" and cards["up"]["fallbacks"] == [MODEL]
    assert cards[MODEL]["owned_by"] == "rill"
    assert_error(await client.post("/tokenize", json={"model": "up", "content": "x"}), 400, param="model")


@pytest.mark.parametrize("models", [lambda: (upstream("up", api_key_env="RILL_TEST_UPSTREAM_KEY"),
                                             ModelConfig(name=MODEL))], indirect=True)
async def test_the_upstream_key_is_sent(client, fake, monkeypatch):
    fake.script("up.test", streamed(chunk("a"), chunk(finish="stop")))
    await client.post(CHAT_URL, json={"model": "up", "messages": ASK, "stream": True})
    assert fake.requests[0].headers["authorization"] == "Bearer sk-upstream"


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch):
    monkeypatch.setenv("RILL_TEST_UPSTREAM_KEY", "sk-upstream")


@pytest.mark.parametrize("models", [(upstream("up"), ModelConfig(name=MODEL))], indirect=True)
async def test_the_first_configured_model_is_the_default(client, fake):
    fake.script("up.test", streamed(chunk("a"), chunk(finish="stop")))
    r = await client.post(CHAT_URL, json={"messages": ASK, "stream": True})
    assert parse_sse(r.text)[0]["model"] == "up"


async def test_a_full_local_queue_falls_back_to_an_upstream(fake, tmp_path):
    from tests.api.conftest import GatedBackend

    backend = GatedBackend()
    config = ServerConfig(models=(ModelConfig(name=MODEL, fallbacks=("up",)), upstream("up")),
                          database_url=f"sqlite:///{tmp_path / 'rill.db'}")
    load_fake = fake_loader(backend, max_queue=1)

    def load(router) -> None:  # as `rill serve` does: the local model with its configured fallbacks
        load_fake(router)
        router.resolve(MODEL).fallbacks = ("up",)

    app = create_app(config, load, expected_models=(MODEL,),
                     exit_on_load_failure=False, upstream_pool=MockPool(fake.handle))
    fake.script("up.test", streamed(chunk("from upstream"), chunk(finish="stop")))
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(app.state.loaded.wait, 10)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rill.test") as client:
            body = {"model": MODEL, "messages": ASK, "stream": True}
            engine = app.state.router.resolve(MODEL).engine
            try:
                running = asyncio.create_task(client.post(CHAT_URL, json=body))  # takes the only slot
                await wait_until(lambda: engine.num_running == 1, what="the first request runs")
                waiting = asyncio.create_task(client.post(CHAT_URL, json=body))  # fills the waiting line
                await wait_until(lambda: engine.num_waiting == 1, what="the second request waits")
                r = await client.post(CHAT_URL, json=body)
                events = parse_sse(r.text)
                assert events[0]["model"] == "up" and content_of(events) == "from upstream"
            finally:
                backend.gate.set()
            assert (await running).status_code == 200 and (await waiting).status_code == 200
