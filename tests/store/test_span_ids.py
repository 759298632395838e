"""Span and trace ids are unique per owner, on SQLite and Postgres: two owners' `nightly-42` are
two objects, each owner reaches its own, an admin (scope None) its own first and else the first
written; ids are unique within a trace too; a version-3 database (global ids) is migrated with
its spans, tags and mixed-owner traces intact (and takes longer finish reasons)."""

from __future__ import annotations

import pytest
from sqlalchemy import (JSON, BigInteger, Column, Connection, Float, ForeignKey, Index, Integer, MetaData, String,
                        Table, Text, inspect, text)

from rill.store import schema
from rill.store.migrations import MIGRATIONS, migrate
from rill.store.spans import SpanExists, SpanPlace, SpanRecord, SpanStore, TraceFilter

A, B, ADMIN = "key_a", "key_b", "key_admin"
T0 = 1_800_000_000.0


def span(id: str, trace: str, *, owner: str, parent: str | None = None, start: float = T0, **fields) -> SpanRecord:
    return SpanRecord(id=id, trace_id=trace, parent_id=parent, owner=owner, name=fields.pop("name", f"{owner}:{id}"),
                      start_time=start, **fields)


@pytest.fixture
def store(engine) -> SpanStore:
    return SpanStore(engine)


async def nightly(store: SpanStore, owner: str, start: float = T0) -> None:
    """owner's trace nightly-42: root nightly-42 > step (tag run=nightly)."""
    await store.insert(span("nightly-42", "nightly-42", owner=owner, start=start))
    await store.insert(span("step", "nightly-42", owner=owner, parent="nightly-42", start=start + 1,
                            tags={"run": "nightly"}, total_tokens=5))


async def test_two_owners_use_the_same_ids_apart(store):
    await nightly(store, A)
    await nightly(store, B, start=T0 + 10)
    for owner in (A, B):
        assert (await store.get(owner, "step"))["name"] == f"{owner}:step"
        assert await store.locate(owner, "step") == SpanPlace("step", "nightly-42", owner)
        trace = await store.trace(owner, "nightly-42")
        assert [s["name"] for s in trace["spans"]] == [f"{owner}:nightly-42", f"{owner}:step"]
        assert trace["num_spans"] == 2 and trace["total_tokens"] == 5
        page, _, total = await store.list_traces(owner, TraceFilter(tags=(("run", "nightly"),)))
        assert total == 1 and page[0]["name"] == f"{owner}:nightly-42"
    await store.update(B, "step", {"error": "failed"})
    assert (await store.trace(A, "nightly-42"))["status"] == "running"
    assert (await store.trace(B, "nightly-42"))["status"] == "error"
    assert await store.delete(B, "nightly-42")
    assert await store.trace(B, "nightly-42") is None
    assert (await store.trace(A, "nightly-42"))["num_spans"] == 2


async def test_an_id_is_unique_for_its_owner_and_within_its_trace(store):
    await nightly(store, A)
    with pytest.raises(SpanExists) as own:
        await store.insert(span("step", "elsewhere", owner=A))
    assert not own.value.in_trace
    # an admin's span in A's trace may not take an id A's trace has: a parent id names one span
    with pytest.raises(SpanExists) as in_trace:
        await store.insert(span("step", "nightly-42", owner=ADMIN, trace_owner=A, parent="nightly-42"))
    assert in_trace.value.in_trace
    await store.insert(span("check", "nightly-42", owner=ADMIN, trace_owner=A, parent="step"))
    trace = await store.trace(A, "nightly-42")
    assert [(s["id"], s["depth"]) for s in trace["spans"]] == [("nightly-42", 0), ("step", 1), ("check", 2)]
    assert await store.get(A, "check") is None  # the admin's, in A's trace
    await store.update(ADMIN, "check", {"end_time": T0 + 3, "error": "late"})
    assert (await store.trace(A, "nightly-42"))["status"] == "error"
    assert await store.delete(A, "step")  # its subtree goes, the admin's span included
    assert await store.get(None, "check") is None
    assert (await store.trace(A, "nightly-42"))["num_spans"] == 1


async def test_an_admin_gets_its_own_then_the_first_written(store):
    await nightly(store, B)  # written first
    await nightly(store, A, start=T0 + 10)
    assert (await store.get(None, "step", own=ADMIN))["name"] == f"{B}:step"
    assert (await store.trace(None, "nightly-42", own=ADMIN))["name"] == f"{B}:nightly-42"
    assert (await store.locate(None, "step", own=ADMIN)).trace_owner == B
    assert (await store.trace(None, "nightly-42", own=A))["name"] == f"{A}:nightly-42"  # an admin's own first
    await nightly(store, ADMIN, start=T0 + 20)
    assert (await store.get(None, "step", own=ADMIN))["name"] == f"{ADMIN}:step"
    assert (await store.update(None, "step", {"score": 3}, own=ADMIN))["name"] == f"{ADMIN}:step"
    page, _, total = await store.list_traces(None, own=ADMIN)
    assert total == 3 and [t["name"] for t in page] == [f"{o}:nightly-42" for o in (ADMIN, A, B)]
    page, _, _ = await store.list_traces(None, after="nightly-42", own=ADMIN)  # the admin's is the cursor
    assert [t["name"] for t in page] == [f"{o}:nightly-42" for o in (A, B)]
    assert await store.delete(None, "nightly-42", own=ADMIN)
    assert (await store.trace(None, "nightly-42", own=ADMIN))["name"] == f"{B}:nightly-42"
    # a span id is found before a span whose completion had that id
    await store.insert(span("s1", "t9", owner=A, completion_id="chatcmpl-x"))
    await store.insert(span("chatcmpl-x", "t9", owner=A))
    assert (await store.get(A, "chatcmpl-x"))["id"] == "chatcmpl-x"


async def test_retention_takes_each_owners_old_trace_alone(store):
    await nightly(store, A)
    await nightly(store, B, start=T0 + 100)
    assert await store.delete_before(T0 + 50) == 1
    assert await store.trace(A, "nightly-42") is None and await store.get(A, "step") is None
    assert (await store.trace(B, "nightly-42"))["num_spans"] == 2
    page, _, _ = await store.list_traces(B, TraceFilter(tags=(("run", "nightly"),)))
    assert [t["id"] for t in page] == ["nightly-42"]  # B's tags kept


# ---- migration from version 3, where ids were global -----------------------------------------

V3 = MetaData()
Seq = BigInteger().with_variant(Integer(), "sqlite")
Table("traces", V3, Column("seq", Seq, primary_key=True, autoincrement=True),
      Column("id", String(64), nullable=False, unique=True), Column("owner", String(64), nullable=False),
      Column("root_span_id", String(64)), Column("name", Text), Column("start_time", Float, nullable=False),
      Column("end_time", Float), Column("num_spans", Integer, nullable=False, default=0),
      Column("num_open", Integer, nullable=False, default=0), Column("num_errors", Integer, nullable=False, default=0),
      Column("total_tokens", BigInteger, nullable=False, default=0),
      Index("ix_traces_owner_seq", "owner", "seq"), Index("ix_traces_owner_start", "owner", "start_time"),
      Index("ix_traces_start", "start_time"))
Table("spans", V3, Column("seq", Seq, primary_key=True, autoincrement=True),
      Column("id", String(64), nullable=False, unique=True), Column("trace_id", String(64), nullable=False),
      Column("parent_id", String(64)), Column("owner", String(64), nullable=False), Column("name", Text, nullable=False),
      Column("type", String(64)), Column("start_time", Float, nullable=False), Column("end_time", Float),
      Column("model", Text), Column("user", Text), Column("completion_id", String(64)), Column("input", JSON),
      Column("output", JSON), Column("error", Text), Column("meta", JSON), Column("tags", JSON, nullable=False),
      Column("score", Integer), Column("usage", JSON), Column("timings", JSON), Column("finish_reason", String(32)),
      Column("total_tokens", Integer, nullable=False, default=0),
      Index("ix_spans_trace_start", "trace_id", "start_time"), Index("ix_spans_completion_id", "completion_id"),
      Index("ix_spans_owner_start", "owner", "start_time"))
Table("span_tags", V3, Column("span_seq", Seq, ForeignKey("spans.seq", ondelete="CASCADE"), primary_key=True),
      Column("key", String(64), primary_key=True), Column("value", String(512), nullable=False),
      Index("ix_span_tags_key_value", "key", "value"))


def _to_version_3(conn: Connection) -> None:
    """Today's database as version 3 wrote it, holding A's trace with an admin's span in it."""
    for name in ("span_tags", "spans", "traces"):
        conn.execute(text(f"DROP TABLE {name}"))
    V3.create_all(conn)
    conn.execute(schema.migrations.delete().where(schema.migrations.c.version > 3))
    traces, spans_v3, tags = (V3.tables[n] for n in ("traces", "spans", "span_tags"))
    conn.execute(traces.insert(), [{"id": "nightly-42", "owner": A, "root_span_id": "root", "name": "root",
                                    "start_time": T0, "num_spans": 2, "num_open": 2, "total_tokens": 7}])
    conn.execute(spans_v3.insert(), [
        {"id": "root", "trace_id": "nightly-42", "parent_id": None, "owner": A, "name": "root", "start_time": T0,
         "tags": {"env": "ci"}, "input": None, "total_tokens": 0},
        {"id": "check", "trace_id": "nightly-42", "parent_id": "root", "owner": ADMIN, "name": "check",
         "start_time": T0 + 1, "tags": {}, "input": {"deep": [1, [2]]}, "total_tokens": 7}])
    conn.execute(tags.insert(), [{"span_seq": 1, "key": "env", "value": "ci"}])


async def test_a_version_3_database_is_migrated_with_its_spans(database):
    engine = await database.open()
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_to_version_3)
        async with engine.begin() as conn:
            assert await conn.run_sync(migrate) == [m.version for m in MIGRATIONS if m.version >= 4]
            assert await conn.run_sync(migrate) == []
            uniques = await conn.run_sync(lambda c: {u["name"] for u in inspect(c).get_unique_constraints("spans")})
            leftovers = await conn.run_sync(lambda c: [t for t in inspect(c).get_table_names() if t.endswith("_v3")])
        assert {"uq_spans_id_owner", "uq_spans_trace_id"} <= uniques and leftovers == []
        store = SpanStore(engine)
        trace = await store.trace(A, "nightly-42")
        assert [(s["id"], s["depth"]) for s in trace["spans"]] == [("root", 0), ("check", 1)]
        assert trace["num_spans"] == 2 and trace["total_tokens"] == 7
        assert (await store.get(None, "check"))["input"] == {"deep": [1, [2]]}
        assert await store.locate(None, "check") == SpanPlace("check", "nightly-42", A)  # the admin's, in A's trace
        page, _, _ = await store.list_traces(A, TraceFilter(tags=(("env", "ci"),)))
        assert [t["id"] for t in page] == ["nightly-42"], "the tags survived the rebuild"
        await nightly(store, B)  # B may now use A's ids
        reasons = ",".join(["stop", "length"] * 8)  # n choices' finish reasons: Postgres held 32 characters
        await store.insert(span("n8", "t8", owner=A, finish_reason=reasons))
        assert (await store.get(A, "n8"))["finish_reason"] == reasons
        assert (await store.trace(B, "nightly-42"))["num_spans"] == 2
        assert await store.delete(A, "root")  # and deleting still cascades to tags and the subtree
        assert await store.get(None, "check") is None and await store.trace(A, "nightly-42") is None
    finally:
        await engine.dispose()
