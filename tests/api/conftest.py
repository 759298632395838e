"""In-process API tests: the real app and engine thread over the deterministic fake backend."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable

import httpx
import pytest

from rill.api.app import create_app
from rill.backends.fake import FakeBackend
from rill.config import ServerConfig
from rill.engine.engine import Engine
from rill.router import LocalModel, Router
from rill.sampling.template import ChatTemplate

MODEL = "fake-echo"


def fake_loader(backend: FakeBackend, *, max_queue: int = 256) -> Callable[[Router], None]:
    def load(router: Router) -> None:
        info = backend.info
        engine = Engine(backend, max_queue=max_queue)
        engine.start()
        template = ChatTemplate(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
        router.add(LocalModel(id=MODEL, engine=engine, template=template, aliases=frozenset({"echo"})))

    return load


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def config() -> ServerConfig:
    return ServerConfig(max_body_bytes=64 * 1024)


@pytest.fixture
async def app(backend: FakeBackend, config: ServerConfig):
    app = create_app(config, fake_loader(backend), expected_models=(MODEL,), exit_on_load_failure=False)
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(app.state.loaded.wait, 10)
        if app.state.load_error:
            raise app.state.load_error
        yield app


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rill.test") as c:
        yield c


def chat(content: str, **fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}
