"""Fault injection on the engine, in-process (docs/faults.md): a backend that raises on step N, a
loop that crashes, a step that hangs past the watchdog's timeout. Several requests go through each
fault; every one in flight ends with exactly one error (a stream: one error event in OpenAI's
shape, then the end; a JSON request: a 5xx), the engine lets go of everything, /health and
/metrics say what happened, and the next request is served (or, for a dead engine, refused at
once). The fake backend's knobs: fail_on_forward, fault, hang_on_forward, hanging, unhang."""

from __future__ import annotations

import asyncio
import httpx
import pytest

from rill.api.app import create_app
from rill.backends.base import BackendError
from rill.backends.fake import FakeBackend
from rill.cli import build_parser, config_from_args
from rill.config import ModelConfig, ServerConfig, UpstreamConfig
from rill.engine.engine import Engine
from rill.errors import ConfigError
from rill.router import LocalModel, Router
from rill.sampling.template import ChatTemplate
from tests.api.conftest import (CHAT_URL, DONE, MODEL, assert_error, chat, engine_idle, engine_of, parse_sse,
                                stream_text, wait_until)
from tests.api.mock_pool import MockPool
from tests.api.test_metrics import sample, scrape

# long enough that no request ends on its own while the test holds the engine
LONG = "the quick brown fox jumps over the lazy dog " * 4


class CrashingBackend(FakeBackend):
    """release() raises once `crash` is set: a fault outside any step (in admission, or in the
    clean-up after a failed step), which ends the engine's loop."""

    crash = False

    def release(self, seq_id: int) -> None:
        if self.crash:
            raise RuntimeError("release failed")
        super().release(seq_id)


@pytest.fixture
def step_timeout(request) -> float:
    """The watchdog's timeout (0: none); parametrize indirectly."""
    return getattr(request, "param", 0.0)


@pytest.fixture
async def app(backend: FakeBackend, config, engine_slots: int, step_timeout: float):
    def load(router: Router) -> None:
        engine = Engine(backend, max_queue=config.max_queue, max_running=engine_slots, step_timeout=step_timeout)
        engine.start()
        info = backend.info
        template = ChatTemplate(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
        router.add(LocalModel(id=MODEL, engine=engine, template=template))

    app = create_app(config, load, expected_models=(MODEL,), exit_on_load_failure=False)
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(app.state.loaded.wait, 10)
        try:
            yield app
        finally:
            backend.unhang.set()  # never leave the engine thread stuck for the app's shutdown


def ask(index: int, *, stream: bool = True) -> dict:
    return chat(f"{index} {LONG}", stream=stream, temperature=0)


def outcome(r: httpx.Response, index: int, *, in_flight_code: str) -> str:
    """'served' (the whole echo) or 'failed' (exactly one error in OpenAI's shape, `code`
    in_flight_code); anything else fails the test."""
    expected = f"{index} {LONG}"
    if r.headers["content-type"].startswith("application/json"):
        if r.status_code == 200:
            assert r.json()["choices"][0]["message"]["content"] == expected
            return "served"
        assert_error(r, 503 if in_flight_code == "engine_unavailable" else 500, type="server_error",
                     code=in_flight_code)
        return "failed"
    assert r.status_code == 200
    events = parse_sse(r.text)
    errors = [e for e in events if e != DONE and "error" in e]
    if not errors:
        assert events[-1] == DONE and stream_text(events) == expected
        return "served"
    assert errors == [events[-1]], "one error event, and it ends the stream (no [DONE])"
    error = events[-1]
    assert set(error) == {"error"} and set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["type"] == "server_error" and error["error"]["code"] == in_flight_code
    assert expected.startswith(stream_text(events))  # what came before the error was right
    return "failed"


async def hold_first_step(client: httpx.AsyncClient, backend: FakeBackend, app, *, more: int,
                          stream_first: bool = True) -> tuple[asyncio.Task, list[asyncio.Task]]:
    """Request 0 alone in a step that hangs; then `more` requests (every other one a JSON
    request), queued behind it. Returns the first's task and the others'."""
    backend.hang_on_forward = 1
    first = asyncio.create_task(client.post(CHAT_URL, json=ask(0, stream=stream_first)))
    await wait_until(backend.hanging.is_set, what="the first step hangs")
    rest = [asyncio.create_task(client.post(CHAT_URL, json=ask(i, stream=i % 2 == 1))) for i in range(1, more + 1)]
    await wait_until(lambda: engine_of(app).num_waiting == more, what="the other requests wait")
    return first, rest


# ---- a step that raises --------------------------------------------------------------------------


@pytest.mark.parametrize("engine_slots", [1, 3], indirect=True)
@pytest.mark.parametrize("fault", [BackendError("the device fell off the bus"), RuntimeError("a bug in a kernel")],
                         ids=["backend-error", "unexpected-error"])
@pytest.mark.parametrize("stream_first", [True, False], ids=["stream", "json"])
async def test_a_step_that_raises_fails_the_requests_in_flight_and_serves_the_next(
        app, backend, client, engine_slots, fault, stream_first):
    first, rest = await hold_first_step(client, backend, app, more=engine_slots, stream_first=stream_first)
    backend.fault, backend.fail_on_forward = fault, 2  # the step after the hung one: every admitted request is in it
    backend.unhang.set()
    responses = await asyncio.wait_for(asyncio.gather(first, *rest), 30)  # a guard against a hang
    outcomes = [outcome(r, i, in_flight_code="engine_error") for i, r in enumerate(responses)]
    # the first `engine_slots` to arrive were in the failed step; the one that waited is served
    assert outcomes[0] == "failed" and outcomes.count("failed") == engine_slots, outcomes
    assert outcomes.count("served") == 1

    await wait_until(lambda: engine_idle(app, backend), what="the engine let go of every sequence")
    assert (await client.get("/health")).json() == {"status": "ok"}
    text = await scrape(client)
    assert sample(text, "rill_engine_running_sequences", model=MODEL) == 0
    assert sample(text, "rill_engine_waiting_requests", model=MODEL) == 0
    assert sample(text, "rill_engine_kv_cache_used_tokens", model=MODEL) == 0
    assert sample(text, "rill_engine_failed_steps_total", model=MODEL) == 1
    assert sample(text, "rill_engine_healthy", model=MODEL) == 1
    r = await client.post(CHAT_URL, json=chat("next", temperature=0))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "next"


# ---- the loop itself crashes ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", [{"cls": CrashingBackend}], indirect=True)
@pytest.mark.parametrize("engine_slots", [1, 3], indirect=True)
async def test_a_crashed_engine_loop_fails_everything_and_says_so(app, backend, client, engine_slots):
    # the step fails, and freeing its sequences fails too: the loop cannot go on
    first, rest = await hold_first_step(client, backend, app, more=engine_slots)
    backend.crash, backend.fail_on_forward = True, 1
    backend.unhang.set()
    responses = await asyncio.wait_for(asyncio.gather(first, *rest), 30)
    # the request in the failed step gets its step's error; those waiting, the dead engine's (503)
    assert outcome(responses[0], 0, in_flight_code="engine_error") == "failed"
    assert [outcome(r, i, in_flight_code="engine_unavailable") for i, r in enumerate(responses) if i] == \
        ["failed"] * engine_slots

    health = await client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert "crashed" in health.json()["models"][MODEL]
    for body in (chat("after"), chat("after", stream=True)):  # refused at once, not queued for ever
        r = await asyncio.wait_for(client.post(CHAT_URL, json=body), 10)
        assert_error(r, 503, type="server_error", code="engine_unavailable")
        assert r.headers["retry-after"] == "5"
    text = await scrape(client)
    assert sample(text, "rill_engine_healthy", model=MODEL) == 0
    assert sample(text, "rill_engine_running_sequences", model=MODEL) == 0
    assert sample(text, "rill_engine_waiting_requests", model=MODEL) == 0


@pytest.mark.parametrize("backend", [{"cls": CrashingBackend}], indirect=True)
async def test_a_crash_while_admitting_fails_the_request(app, backend, client):
    backend.crash = True  # the first admission frees the slot's old cache: raises
    r = await asyncio.wait_for(client.post(CHAT_URL, json=chat("hi")), 10)
    assert_error(r, 503, type="server_error", code="engine_unavailable")
    assert (await client.get("/health")).status_code == 503


# ---- a step that hangs: the watchdog -------------------------------------------------------------


def watch(app, timeout: float) -> None:
    """Shorten the watchdog's timeout now that the test has set the scene (the app starts with
    one long enough that it cannot fire while requests are still being queued)."""
    engine_of(app).watchdog.timeout = timeout


@pytest.mark.parametrize("step_timeout", [60.0], indirect=True)
@pytest.mark.parametrize("engine_slots", [1, 3], indirect=True)
async def test_a_hung_step_fails_every_request_and_the_engine_recovers_when_it_returns(
        app, backend, client, engine_slots):
    # request 0 (a JSON one) in flight in the hung step; the others (streams, and a JSON one with
    # 3 slots) in the inbox, which the stuck thread never reads
    first, rest = await hold_first_step(client, backend, app, more=engine_slots, stream_first=False)
    watch(app, 0.2)
    # the step never returns by itself: the watchdog ends every request while it is still stuck
    responses = await asyncio.wait_for(asyncio.gather(first, *rest), 30)
    assert backend.hanging.is_set()
    assert [outcome(r, i, in_flight_code="engine_unavailable") for i, r in enumerate(responses)] == \
        ["failed"] * (1 + engine_slots)
    json_failures = [r for r in responses if r.headers["content-type"].startswith("application/json")]
    assert json_failures and all(r.headers["retry-after"] == "5" for r in json_failures)

    health = await client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    reason = health.json()["models"][MODEL]
    assert "stalled" in reason and "timeout is 0.2 s" in reason
    assert (await client.head("/health")).status_code == 503
    assert_error(await client.post(CHAT_URL, json=chat("meanwhile", stream=True)), 503, code="engine_unavailable")
    text = await scrape(client)
    assert sample(text, "rill_engine_healthy", model=MODEL) == 0
    assert sample(text, "rill_engine_failed_steps_total", model=MODEL) == 1

    backend.unhang.set()  # the step returns after all: its requests are freed, and the engine serves again
    await wait_until(lambda: engine_of(app).unavailable is None, what="the engine recovered")
    await wait_until(lambda: engine_idle(app, backend), what="the engine let go of every sequence")
    assert (await client.get("/health")).json() == {"status": "ok"}
    r = await client.post(CHAT_URL, json=chat("again", stream=True, temperature=0))
    assert stream_text(parse_sse(r.text)) == "again"


@pytest.mark.parametrize("step_timeout", [60.0], indirect=True)
async def test_a_slow_step_within_the_timeout_is_not_a_stall(app, backend, client):
    """A step that takes long but returns before the timeout changes nothing."""
    backend.hang_on_forward = 1
    task = asyncio.create_task(client.post(CHAT_URL, json=chat("slow", temperature=0)))
    await wait_until(backend.hanging.is_set, what="the step is running")
    await wait_until(lambda: engine_of(app)._loop.step_started > 0, what="the step's start is recorded")
    backend.unhang.set()
    r = await asyncio.wait_for(task, 30)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "slow"
    assert engine_of(app).unavailable is None and (await client.get("/health")).status_code == 200


# ---- a model whose engine is unavailable falls back ------------------------------------------------


@pytest.mark.parametrize("backend", [{"cls": CrashingBackend}], indirect=True)
async def test_a_dead_engine_fails_over_to_the_fallback(backend, tmp_path):
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "x", "object": "chat.completion", "created": 1, "model": "r",
                                         "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": "from up"}}]})

    def load(router: Router) -> None:
        info = backend.info
        engine = Engine(backend)
        engine.start()
        router.add(LocalModel(id=MODEL, engine=engine, fallbacks=("up",), template=ChatTemplate(
            info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)))

    config = ServerConfig(models=(ModelConfig(name=MODEL, fallbacks=("up",)),
                                  UpstreamConfig(name="up", base_url="http://up.test/v1", retries=0)),
                          database_url=f"sqlite:///{tmp_path / 'rill.db'}")
    app = create_app(config, load, expected_models=(MODEL,), exit_on_load_failure=False,
                     upstream_pool=MockPool(answer))
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(app.state.loaded.wait, 10)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rill.test") as c:
            backend.crash = True
            first = await asyncio.wait_for(c.post(CHAT_URL, json=chat("hi")), 10)  # taken, then the engine died
            assert_error(first, 503, code="engine_unavailable")
            r = await asyncio.wait_for(c.post(CHAT_URL, json=chat("hi")), 10)  # refused at once: the fallback serves
            assert r.status_code == 200 and r.json()["model"] == "up"
            assert r.json()["choices"][0]["message"]["content"] == "from up"


def test_the_watchdog_timeout_is_a_flag_and_an_environment_variable(monkeypatch):
    def timeout_of(*flags: str) -> float:
        return config_from_args(build_parser().parse_args(["serve", *flags])).step_timeout

    assert timeout_of() == 120.0
    assert timeout_of("--step-timeout", "0") == 0.0  # no watchdog
    monkeypatch.setenv("RILL_STEP_TIMEOUT", "300")
    assert timeout_of() == 300.0 and timeout_of("--step-timeout", "30") == 30.0  # the flag wins
    with pytest.raises(ConfigError, match="--step-timeout"):
        timeout_of("--step-timeout", "-1")
