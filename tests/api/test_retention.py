"""`retention_days` (--retention-days): a server started on a database with old records deletes
them at start-up and keeps the recent ones."""

from __future__ import annotations

import asyncio
import time

import pytest

from rill.api.app import create_app
from rill.config import ServerConfig
from rill.errors import ConfigError
from rill.store.completions import CompletionStore
from rill.store.database import open_database
from rill.store.retention import DAY_S
from rill.store.spans import SpanRecord, SpanStore
from tests.api.conftest import MODEL, fake_loader


async def test_old_records_go_at_start_up(tmp_path, backend):
    url = f"sqlite:///{tmp_path / 'rill.db'}"
    engine = await open_database(url)
    now = time.time()
    for name, age in (("old", 30), ("new", 1)):
        await CompletionStore(engine).save("", {"id": f"chatcmpl-{name}", "object": "chat.completion",
                                                "created": now - age * DAY_S, "model": MODEL, "choices": []}, [], {})
        await SpanStore(engine).insert(SpanRecord(id=f"span-{name}", trace_id=f"trace-{name}", owner="",
                                                  name=name, start_time=now - age * DAY_S))
    await engine.dispose()

    app = create_app(ServerConfig(database_url=url, retention_days=7), fake_loader(backend),
                     expected_models=(MODEL,), exit_on_load_failure=False)
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(app.state.loaded.wait, 10)
        store = app.state.completions

        async def gone() -> bool:
            return (await store.get(None, "chatcmpl-old") is None
                    and await app.state.spans.get(None, "span-old") is None)

        deadline = time.monotonic() + 10
        while not await gone():
            assert time.monotonic() < deadline, "the old completion and trace were not deleted"
            await asyncio.sleep(0.01)
        assert await store.get(None, "chatcmpl-new") is not None
        assert await app.state.spans.get(None, "span-new") is not None


@pytest.mark.parametrize("days", [0, -1])
def test_retention_must_be_positive(days):
    with pytest.raises(ConfigError, match="retention-days"):
        ServerConfig(retention_days=days)
