"""The gateway tests' app: the configured models (an upstream behind a scripted FakeUpstream, the
fake local model as a fallback by default; parametrize `models` indirectly) in-process."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from rill.api.app import create_app
from rill.backends.fake import FakeBackend
from rill.config import ModelConfig, ServerConfig
from tests.api.conftest import MODEL, fake_loader
from tests.api.gateway.fake_upstream import FakeUpstream, upstream
from tests.api.mock_pool import MockPool


@pytest.fixture
def fake() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def models(request) -> tuple:
    """The configured models; parametrize indirectly. The fake local model is `fake-echo`."""
    models = getattr(request, "param", (upstream("up", fallbacks=(MODEL,)), ModelConfig(name=MODEL)))
    return models() if callable(models) else models


@pytest.fixture
async def app(fake, models, tmp_path):
    config = ServerConfig(models=models, database_url=f"sqlite:///{tmp_path / 'rill.db'}")
    app = create_app(config, fake_loader(FakeBackend()), expected_models=(MODEL,), exit_on_load_failure=False,
                     upstream_pool=MockPool(fake.handle))
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(app.state.loaded.wait, 10)
        yield app


@pytest.fixture
async def client(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rill.test") as c:
        yield c
