"""SpanStore on SQLite and Postgres: traces as trees, their aggregates, scoping by owner,
filters and pagination, updates, deletes and retention."""

from __future__ import annotations

import pytest

from rill.store.spans import SpanExists, SpanPlace, SpanRecord, SpanStore, SpanTimeError, TraceFilter

A, B = "key_a", "key_b"
T0 = 1_800_000_000.0


def span(id: str, trace: str, *, parent: str | None = None, owner: str = A, start: float = T0,
         end: float | None = None, **fields) -> SpanRecord:
    return SpanRecord(id=id, trace_id=trace, parent_id=parent, owner=owner, name=fields.pop("name", id),
                      start_time=start, end_time=end, **fields)


@pytest.fixture
def store(engine) -> SpanStore:
    return SpanStore(engine)


async def workflow(store: SpanStore) -> None:
    """t1: root (open) > chat1 (done, 30 tokens) > tool (done); root > chat2 (done, 12 tokens)."""
    await store.insert(span("root", "t1", start=T0, name="workflow", tags={"env": "prod"}))
    await store.insert_many([
        span("chat1", "t1", parent="root", start=T0 + 1, end=T0 + 2, model="m1", user="u1", total_tokens=30,
             completion_id="chatcmpl-1", tags={"step": 1}),
        span("tool", "t1", parent="chat1", start=T0 + 1.5, end=T0 + 1.8),
        span("chat2", "t1", parent="root", start=T0 + 3, end=T0 + 4, model="m2", total_tokens=12),
    ])


async def test_trace_is_a_tree_with_aggregates(store):
    await workflow(store)
    trace = await store.trace(A, "t1")
    assert [(s["id"], s["depth"]) for s in trace["spans"]] == [
        ("root", 0), ("chat1", 1), ("tool", 2), ("chat2", 1)]
    assert trace["root_span_id"] == "root" and trace["name"] == "workflow"
    assert trace["num_spans"] == 4 and trace["total_tokens"] == 42
    assert trace["status"] == "running" and trace["end_time"] is None  # the root is still open
    assert trace["start_time"] == "2027-01-15T08:00:00Z"


async def test_closing_the_root_ends_the_trace_and_an_error_marks_it(store):
    await workflow(store)
    updated = await store.update(A, "root", {"end_time": T0 + 5, "output": {"answer": 42}})
    assert updated["status"] == "ok" and updated["duration_ms"] == 5000
    trace = await store.trace(A, "t1")
    assert trace["status"] == "ok" and trace["duration_ms"] == 5000 and trace["output"] == '{"answer": 42}'
    await store.update(A, "chat2", {"error": "boom"})
    assert (await store.trace(A, "t1"))["status"] == "error"
    await store.update(A, "chat2", {"error": None})
    assert (await store.trace(A, "t1"))["status"] == "ok"


async def test_a_span_is_found_by_its_completion_id(store):
    await workflow(store)
    assert (await store.get(A, "chatcmpl-1"))["id"] == "chat1"
    assert await store.locate(A, "chatcmpl-1") == SpanPlace("chat1", "t1", A)


async def test_other_owners_see_nothing(store):
    await workflow(store)
    assert await store.get(B, "chat1") is None
    assert await store.locate(B, "root") is None
    assert await store.trace(B, "t1") is None
    assert await store.update(B, "root", {"name": "mine"}) is None
    assert await store.delete(B, "root") is False
    assert (await store.list_traces(B))[0] == []
    assert await store.get(None, "chat1") is not None  # an admin sees it
    assert (await store.trace(A, "t1"))["name"] == "workflow"  # untouched


async def test_list_filters(store):
    await workflow(store)
    await store.insert(span("solo", "t2", start=T0 + 10, end=T0 + 11, model="m2", user="u2", error="bad",
                            tags={"env": "dev"}))
    await store.insert(span("other", "t3", owner=B, start=T0 + 20, model="m1"))

    async def ids(scope=A, **where) -> list[str]:
        page, _, total = await store.list_traces(scope, TraceFilter(**where))
        assert total == len(page)
        return [t["id"] for t in page]

    assert await ids() == ["t2", "t1"]  # newest first
    assert await ids(None) == ["t3", "t2", "t1"]
    assert await ids(tags=(("env", "prod"),)) == ["t1"]
    assert await ids(tags=(("step", "1"),)) == ["t1"]  # a number tag compares as its JSON text
    assert await ids(tags=(("env", "prod"), ("step", "2"))) == []
    assert await ids(model="m2") == ["t2", "t1"]
    assert await ids(model="m1") == ["t1"]
    assert await ids(user="u2") == ["t2"]
    assert await ids(name="workflow") == ["t1"]
    assert await ids(status="error") == ["t2"]
    assert await ids(status="running") == ["t1"]
    assert await ids(status="ok") == []
    assert await ids(since=T0 + 5) == ["t2"]
    assert await ids(until=T0 + 5) == ["t1"]


async def test_pagination_by_cursor_and_offset(store):
    for i in range(5):
        await store.insert(span(f"s{i}", f"t{i}", start=T0 + i, end=T0 + i + 1))
    page, more, total = await store.list_traces(A, limit=2)
    assert [t["id"] for t in page] == ["t4", "t3"] and more and total == 5
    page, more, _ = await store.list_traces(A, after="t3", limit=2)
    assert [t["id"] for t in page] == ["t2", "t1"] and more
    page, more, _ = await store.list_traces(A, after="t1", limit=2)
    assert [t["id"] for t in page] == ["t0"] and not more
    page, more, _ = await store.list_traces(A, offset=3, limit=10)
    assert [t["id"] for t in page] == ["t1", "t0"] and not more
    assert await store.list_traces(A, after="nope") is None
    assert await store.list_traces(B, after="t3") is None  # another key's trace is no cursor


async def test_deleting_a_span_takes_its_subtree_and_recounts(store):
    await workflow(store)
    assert await store.delete(A, "chat1")
    trace = await store.trace(A, "t1")
    assert [s["id"] for s in trace["spans"]] == ["root", "chat2"]
    assert trace["num_spans"] == 2 and trace["total_tokens"] == 12
    assert await store.get(A, "tool") is None
    assert await store.delete(A, "root")
    assert await store.trace(A, "t1") is None
    assert (await store.list_traces(A))[0] == []


async def test_update_checks_times_and_replaces_tags(store):
    await workflow(store)
    with pytest.raises(SpanTimeError):
        await store.update(A, "chat1", {"end_time": T0})
    await store.update(A, "chat1", {"tags": {"step": "final"}})
    assert (await store.get(A, "chat1"))["tags"] == {"step": "final"}
    page, _, _ = await store.list_traces(A, TraceFilter(tags=(("step", "final"),)))
    assert [t["id"] for t in page] == ["t1"]
    assert (await store.list_traces(A, TraceFilter(tags=(("step", "1"),))))[0] == []


async def test_unfilterable_tags_are_kept(store):
    await store.insert(span("s", "t", tags={"nested": {"a": 1}, "long": "x" * 600, "ok": True}))
    assert (await store.get(A, "s"))["tags"] == {"nested": {"a": 1}, "long": "x" * 600, "ok": True}
    page, _, _ = await store.list_traces(A, TraceFilter(tags=(("ok", "true"),)))
    assert [t["id"] for t in page] == ["t"]


async def test_a_span_id_is_unique(store):
    await store.insert(span("s", "t"))
    with pytest.raises(SpanExists):
        await store.insert(span("s", "t2"))


async def test_a_second_parentless_span_does_not_take_over_the_root(store):
    await store.insert(span("first", "t", name="first"))
    await store.insert(span("second", "t", start=T0 + 1, name="second"))
    trace = await store.trace(A, "t")
    assert trace["root_span_id"] == "first" and trace["name"] == "first"
    await store.update(A, "first", {"name": "renamed"})
    await store.update(A, "second", {"name": "not the root"})
    assert (await store.trace(A, "t"))["name"] == "renamed"


async def test_retention_deletes_old_traces_whole(store):
    await workflow(store)
    await store.insert(span("new", "t2", start=T0 + 100))
    assert await store.delete_before(T0 + 50) == 1
    assert await store.trace(A, "t1") is None and await store.get(A, "chat1") is None
    assert (await store.trace(A, "t2"))["num_spans"] == 1


async def test_reopened_database_keeps_spans(database):
    engine = await database.open()
    await SpanStore(engine).insert(span("s", "t", end=T0 + 1, total_tokens=3))
    await engine.dispose()
    engine = await database.open()
    try:
        assert (await SpanStore(engine).trace(A, "t"))["total_tokens"] == 3
    finally:
        await engine.dispose()
