"""Retention: what is older than N days goes (stored completions, whole traces), the rest stays."""

from __future__ import annotations

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
