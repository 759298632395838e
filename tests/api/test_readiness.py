"""Readiness while a model loads (README, docs/faults.md): /health, HEAD /health, /v1/models and
every route that needs a model answer 503 with Retry-After, in OpenAI's error shape, until the
model is loaded; never a 200 with an empty or partial model list. Here one local model loads
(its loader blocks until the test lets it go) beside an upstream model that is ready at once."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from rill.api.app import create_app
from rill.backends.fake import FakeBackend
from rill.config import ModelConfig, ServerConfig, UpstreamConfig
from tests.api.conftest import (CHAT_URL, MODEL, assert_error, chat, fake_loader, parse_sse, stream_text,
                                wait_until)
from tests.api.mock_pool import MockPool

UP = "up"
RETRY_AFTER = "5"


def upstream_answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={
        "id": "x", "object": "chat.completion", "created": 1, "model": "remote",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "from upstream"},
                     "finish_reason": "stop"}]})


@pytest.fixture
async def loading(tmp_path):
    """(app, client, release): the app while its local model loads; release() lets it load."""
    release = threading.Event()
    load_fake = fake_loader(FakeBackend())

    def slow_load(router) -> None:
        release.wait(30)  # bounded, so that a broken test cannot hang the loader for ever
        load_fake(router)

    config = ServerConfig(models=(ModelConfig(name=MODEL),
                                  UpstreamConfig(name=UP, base_url="http://up.test/v1", model="remote", retries=0)),
                          database_url=f"sqlite:///{tmp_path / 'rill.db'}")
    app = create_app(config, slow_load, expected_models=(MODEL,), exit_on_load_failure=False,
                     upstream_pool=MockPool(upstream_answer))
    async with app.router.lifespan_context(app):
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rill.test") as c:
                async def released() -> None:
                    release.set()
                    assert await asyncio.to_thread(app.state.loaded.wait, 10)
                    assert app.state.load_error is None

                yield app, c, released
        finally:
            release.set()


def assert_loading(r: httpx.Response) -> dict:
    err = assert_error(r, 503, type="server_error", code="model_loading")
    assert r.headers["retry-after"] == RETRY_AFTER
    return err


async def test_everything_that_needs_the_loading_model_is_503_with_retry_after(loading):
    app, c, released = loading
    r = await c.get("/health")
    assert r.status_code == 503 and r.json() == {"status": "loading"} and r.headers["retry-after"] == RETRY_AFTER
    assert (await c.head("/health")).status_code == 503

    # the list is refused while it would be partial (the upstream is there, the local model is not)
    err = assert_loading(await c.get("/v1/models"))
    assert MODEL in err["message"]
    assert_loading(await c.get(f"/v1/models/{MODEL}"))
    # an alias (or any name) might be the loading model's: not a 404 yet
    assert_loading(await c.get("/v1/models/echo"))
    assert_loading(await c.post("/tokenize", json={"model": MODEL, "content": "hi"}))
    assert_loading(await c.post("/detokenize", json={"model": MODEL, "tokens": [104]}))
    assert_loading(await c.post("/tokenize", json={"content": "hi"}))  # the default model: the local one
    for body in (chat("hi"), chat("hi", stream=True), {"messages": [{"role": "user", "content": "hi"}]}):
        assert_loading(await c.post(CHAT_URL, json=body))

    # what is ready serves meanwhile: the upstream model, and its card
    r = await c.post(CHAT_URL, json={"model": UP, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "from upstream"
    card = (await c.get(f"/v1/models/{UP}")).json()
    assert card["id"] == UP and card["owned_by"] == "upstream"

    await released()
    assert (await c.get("/health")).json() == {"status": "ok"}
    assert (await c.head("/health")).status_code == 200
    assert {m["id"] for m in (await c.get("/v1/models")).json()["data"]} == {MODEL, UP}
    assert (await c.get("/v1/models/echo")).json()["id"] == MODEL
    assert_error(await c.get("/v1/models/nope"), 404, code="model_not_found")  # now a name is known or not
    r = await c.post(CHAT_URL, json=chat("loaded", stream=True, temperature=0))
    assert stream_text(parse_sse(r.text)) == "loaded"


async def test_the_model_list_is_never_partial_while_polled_through_loading(loading):
    """A client polling /v1/models while the model loads sees 503s, then the whole list."""
    app, c, released = loading
    seen = []

    async def poll() -> None:
        while True:
            r = await c.get("/v1/models")
            seen.append(r.status_code)
            if r.status_code == 200:
                assert {m["id"] for m in r.json()["data"]} == {MODEL, UP}
                return
            assert_loading(r)
            await asyncio.sleep(0)

    poller = asyncio.create_task(poll())
    await wait_until(lambda: len(seen) >= 3 or poller.done(), what="the poller has asked three times")
    assert not poller.done(), poller.result()  # (raises what the poller found)
    await released()
    await asyncio.wait_for(poller, 10)
    assert seen[0] == 503 and seen[-1] == 200 and set(seen) == {503, 200}


async def test_a_failed_load_says_so_on_health(tmp_path):
    def broken(router) -> None:
        raise RuntimeError("the model file is corrupt")

    config = ServerConfig(database_url=f"sqlite:///{tmp_path / 'rill.db'}")
    app = create_app(config, broken, expected_models=(MODEL,), exit_on_load_failure=False)
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(app.state.loaded.wait, 10)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rill.test") as c:
            r = await c.get("/health")
            assert r.status_code == 503 and r.json()["status"] == "failed"
            assert "corrupt" in r.json()["message"]
