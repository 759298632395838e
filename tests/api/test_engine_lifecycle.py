"""A request's life in the engine as seen on the wire: disconnects abort and free resources, the
queue is FIFO and bounded (429), engine failures end streams with an error event, and the
server answers 503 while the model loads."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from rill.api.app import create_app
from tests.api.conftest import (
    CHAT_URL,
    DONE,
    MODEL,
    GatedBackend,
    assert_error,
    chat,
    engine_idle,
    engine_of,
    fake_loader,
    parse_sse,
    stream_text,
    wait_until,
)

SLOW = pytest.mark.parametrize("backend", [{"step_delay": 0.01}], indirect=True)
GATED = pytest.mark.parametrize("backend", [{"cls": GatedBackend}], indirect=True)
LONG = "a long reply that the client will not wait for. " * 20  # ~1000 tokens: ~10 s at 10 ms a step


async def echo(client: httpx.AsyncClient, content: str) -> str:
    r = await client.post(CHAT_URL, json=chat(content, temperature=0))
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


# ---- client disconnects --------------------------------------------------------------------------

@SLOW
async def test_disconnect_mid_stream_aborts_and_frees_the_request(app, backend, live_client, client):
    async with live_client.stream("POST", CHAT_URL, json=chat(LONG, stream=True, temperature=0)) as r:
        assert r.status_code == 200
        received = b""
        async for piece in r.aiter_raw():
            received += piece
            if received.count(b"data: ") >= 4:  # role chunk + 3 content chunks
                break
    assert LONG.startswith(stream_text(parse_sse(received.decode())))

    await wait_until(lambda: engine_idle(app, backend),
                     what="the engine has no running or waiting request and the backend no sequence")
    assert backend.num_forwards < len(LONG) // 4, "generation went on after the client left"
    assert await echo(client, "still serving") == "still serving"


@SLOW
async def test_disconnect_while_waiting_for_a_non_streamed_reply_aborts(app, backend, live_client, client):
    task = asyncio.create_task(live_client.post(CHAT_URL, json=chat(LONG, temperature=0)))
    await wait_until(lambda: backend.num_forwards >= 3, what="generation started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: engine_idle(app, backend), what="the aborted request was freed")
    assert backend.num_forwards < len(LONG) // 4
    assert await echo(client, "next one") == "next one"


@SLOW
async def test_disconnect_while_queued_leaves_the_queue(app, backend, live_client):
    engine = engine_of(app)
    async with live_client.stream("POST", CHAT_URL, json=chat(LONG, stream=True, temperature=0)) as running:
        await wait_until(lambda: engine.num_running == 1, what="the first request runs")
        async with live_client.stream("POST", CHAT_URL, json=chat("queued", stream=True, temperature=0)) as queued:
            assert queued.status_code == 200
            await wait_until(lambda: engine.num_waiting == 1, what="the second request waits")
        # the second client left while the first still runs: its request must leave the queue now
        await wait_until(lambda: engine.num_waiting == 0, what="the queued request was dropped")
        assert engine.num_running == 1
        assert running.status_code == 200
    await wait_until(lambda: engine_idle(app, backend), what="everything was freed")


# ---- the queue -----------------------------------------------------------------------------------

@GATED
async def test_queued_requests_finish_in_submission_order(app, client, gate):
    engine = engine_of(app)
    finished: list[str] = []

    async def run(name: str) -> None:
        r = await client.post(CHAT_URL, json=chat(f"request {name}", stream=True, temperature=0))
        events = parse_sse(r.text)
        assert events[-1] == DONE and stream_text(events) == f"request {name}"
        finished.append(name)

    tasks = [asyncio.create_task(run("first"))]
    await wait_until(lambda: engine.num_running == 1 and engine.num_waiting == 0, what="the first request runs")
    names = ["second", "third", "fourth", "fifth"]
    for i, name in enumerate(names, start=1):
        tasks.append(asyncio.create_task(run(name)))
        await wait_until(lambda i=i: engine.num_waiting == i, what=f"{name} is queued")
    gate.set()
    await asyncio.gather(*tasks)
    assert finished == ["first", *names]


@GATED
@pytest.mark.parametrize("config", [{"max_queue": 1}], indirect=True)
async def test_full_queue_answers_429_with_retry_after(app, client, gate):
    engine = engine_of(app)
    first = asyncio.create_task(client.post(CHAT_URL, json=chat("first", temperature=0)))
    await wait_until(lambda: engine.num_running == 1 and engine.num_waiting == 0, what="the first request runs")
    second = asyncio.create_task(client.post(CHAT_URL, json=chat("second", temperature=0)))
    await wait_until(lambda: engine.num_waiting == 1, what="the second request waits")

    for stream in (False, True):
        # bounded: a server that queued this request would hold it until the gate opens
        r = await asyncio.wait_for(client.post(CHAT_URL, json=chat("third", stream=stream, temperature=0)), 10)
        assert_error(r, 429, type="rate_limit_error")
        assert int(r.headers["retry-after"]) >= 1

    gate.set()
    for task, text in ((first, "first"), (second, "second")):
        r = await task
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == text
    assert await echo(client, "room again") == "room again"


async def test_concurrent_requests_each_get_their_own_reply(client):
    async def one(i: int) -> tuple[str, str]:
        message = f"request number {i} " + "é" * i
        if i % 2:
            r = await client.post(CHAT_URL, json=chat(message, stream=True, temperature=0))
            return message, stream_text(parse_sse(r.text))
        return message, await echo(client, message)

    for sent, got in await asyncio.gather(*(one(i) for i in range(16))):
        assert got == sent


# ---- engine failures -----------------------------------------------------------------------------

async def test_engine_failure_mid_stream_sends_one_error_event_and_no_done(client):
    r = await client.post(CHAT_URL, json=chat("FAIL after two tokens", stream=True, temperature=0))
    assert r.status_code == 200  # the stream had begun
    events = parse_sse(r.text)
    assert DONE not in events
    errors = [e for e in events if "error" in e]
    assert errors == [events[-1]], "exactly one error event, and it is the last"
    err = events[-1]["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "server_error" and err["message"]
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks), "no finish chunk after a failure"
    assert "FAIL after two tokens".startswith(stream_text(chunks))


async def test_engine_failure_without_streaming_is_a_500(client):
    r = await client.post(CHAT_URL, json=chat("FAIL please", temperature=0))
    assert_error(r, 500, type="server_error")


async def test_engine_serves_again_after_a_failure(app, backend, client):
    await client.post(CHAT_URL, json=chat("FAIL first", stream=True, temperature=0))
    await wait_until(lambda: engine_idle(app, backend), what="the failed request was freed")
    assert await echo(client, "recovered") == "recovered"


# ---- loading -------------------------------------------------------------------------------------

async def test_health_and_chat_answer_503_until_the_model_is_loaded(backend, config):
    release = threading.Event()
    load = fake_loader(backend)

    def slow_load(router) -> None:
        release.wait(30)  # bounded so a broken test cannot hang the loader thread forever
        load(router)

    app = create_app(config, slow_load, expected_models=(MODEL,), exit_on_load_failure=False)
    async with app.router.lifespan_context(app):
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://rill.test") as c:
                r = await c.get("/health")
                assert r.status_code == 503
                for body in (chat("hi"), {"messages": [{"role": "user", "content": "hi"}]},
                             chat("hi", stream=True)):
                    assert_error(await c.post(CHAT_URL, json=body), 503, type="server_error")

                release.set()
                assert await asyncio.to_thread(app.state.loaded.wait, 10)
                assert app.state.load_error is None
                r = await c.get("/health")
                assert r.status_code == 200
                assert await echo(c, "loaded") == "loaded"
        finally:
            release.set()


async def test_failed_load_keeps_health_unavailable(backend, config):
    def broken_load(router) -> None:
        raise RuntimeError("the model file is corrupt")

    app = create_app(config, broken_load, expected_models=(MODEL,), exit_on_load_failure=False)
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(app.state.loaded.wait, 10)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rill.test") as c:
            r = await c.get("/health")
            assert r.status_code == 503, r.text
