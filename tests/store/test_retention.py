"""Retention: what is older than N days goes (stored completions, whole traces), the rest stays;
servers sharing a Postgres database prune it one at a time."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from rill.store.completions import CompletionStore
from rill.store.retention import DAY_S, prune
from rill.store.spans import SpanRecord, SpanStore

NOW = 1_800_000_000.0


def completion(id: str, created: float) -> dict:
    return {"id": id, "object": "chat.completion", "created": created, "model": "m", "choices": [], "usage": {}}


async def test_prune_deletes_only_what_is_older(engine):
    completions, spans = CompletionStore(engine), SpanStore(engine)
    for i, age_days in enumerate([10, 8, 6, 1]):
        await completions.save("", completion(f"c{i}", NOW - age_days * DAY_S), [], {"k": "v"})
        start = NOW - age_days * DAY_S
        await spans.insert(SpanRecord(id=f"root{i}", trace_id=f"t{i}", owner="", name="r", start_time=start))
        # a child that started after the cutoff still goes with its old trace
        await spans.insert(SpanRecord(id=f"child{i}", trace_id=f"t{i}", parent_id=f"root{i}", owner="",
                                      name="c", start_time=NOW, tags={"x": "y"}))
    assert await prune(completions, spans, 7, now=lambda: NOW) == (2, 2, 0)
    page, _ = await completions.list(None)
    assert [c["id"] for c in page] == ["c2", "c3"]
    traces, _, total = await spans.list_traces(None)
    assert [t["id"] for t in traces] == ["t3", "t2"] and total == 2
    assert await spans.get(None, "child0") is None
    assert await prune(completions, spans, 7, now=lambda: NOW) == (0, 0, 0)


async def test_prune_works_in_batches(engine):
    completions = CompletionStore(engine)
    for i in range(7):
        await completions.save("", completion(f"c{i}", NOW - 30 * DAY_S), [], {})
    assert await completions.delete_before(NOW, batch=3) == 7
    assert (await completions.list(None))[0] == []


class HeldCompletions(CompletionStore):
    """Its delete_before says it has begun (`inside`), then waits for `go`: a pass held midway."""

    def __init__(self, engine: AsyncEngine):
        super().__init__(engine)
        self.inside, self.go = asyncio.Event(), asyncio.Event()

    async def delete_before(self, cutoff: float, *, batch: int = 500) -> int:
        self.inside.set()
        await self.go.wait()
        return await super().delete_before(cutoff, batch=batch)


async def test_servers_pruning_one_postgres_at_once_delete_each_record_once(postgres):
    ours, theirs = await postgres.open(), await postgres.open()  # two engines: two servers' pools
    try:
        for i in range(3):
            await CompletionStore(ours).save("", completion(f"c{i}", NOW - 30 * DAY_S), [], {})
            await SpanStore(ours).insert(SpanRecord(id=f"s{i}", trace_id=f"t{i}", owner="", name="r",
                                                    start_time=NOW - 30 * DAY_S))
        held = HeldCompletions(ours)
        first = asyncio.create_task(prune(held, SpanStore(ours), 7, now=lambda: NOW))
        async with asyncio.timeout(10):
            await held.inside.wait()
        # the other server's pass, while the first holds the lock: skipped, not a second delete
        assert await prune(CompletionStore(theirs), SpanStore(theirs), 7, now=lambda: NOW) is None
        held.go.set()
        assert await first == (3, 3, 0)
        # the lock went with the first pass: the next one runs (and finds nothing left)
        assert await prune(CompletionStore(theirs), SpanStore(theirs), 7, now=lambda: NOW) == (0, 0, 0)
    finally:
        await ours.dispose()
        await theirs.dispose()
