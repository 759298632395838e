"""Odd values in the store, on SQLite and Postgres: JSON nested beyond orjson's 254 levels is
written and read back; a span the database refuses costs only itself, is written with a note
where a field could not be stored (or else dropped, counted and logged with its id), and never
silently; NUL characters, which Postgres's text cannot hold, neither lose a span nor fail a
stored completion."""

from __future__ import annotations

import logging

import pytest

from rill.store import json_codec
from rill.store.completions import CompletionStore
from rill.store.spans import SpanRecord, SpanStore, TraceFilter
from rill.store.storable import NOT_STORED, describe
from rill.store.writer import SpanWriter

T0 = 1_800_000_000.0


def deep(levels: int) -> object:
    value: object = "leaf"
    for i in range(levels):
        value = {"x": value} if i % 2 else [value]
    return value


def span(id: str, **fields) -> SpanRecord:
    return SpanRecord(id=id, trace_id=fields.pop("trace_id", "t"), owner="", name=id, start_time=T0,
                      end_time=T0 + 1, **fields)


@pytest.fixture
def store(engine) -> SpanStore:
    return SpanStore(engine)


def test_the_codec_writes_what_orjson_refuses_and_reads_it_back():
    for value in (deep(300), {"big": 2**70}):
        assert json_codec.loads(json_codec.dumps(value)) == value
    with pytest.raises(json_codec.UnstorableValue, match="nested too deeply"):
        json_codec.dumps(deep(5000))
    with pytest.raises(json_codec.UnstorableValue):
        json_codec.dumps({"lone": "\ud800"})  # would fail in the driver
    assert json_codec.loads('{"a": NaN}')["a"] != 0  # what the standard library wrote before


async def test_deeper_than_orjson_is_stored_and_read_back(store, engine):
    await store.insert(span("s", input=deep(300), meta={"m": deep(260)}))
    got = await store.get("", "s")
    assert got["input"] == deep(300) and got["meta"] == {"m": deep(260)}
    completions = CompletionStore(engine)
    await completions.save("", {"id": "chatcmpl-1", "created": 1, "model": "m"},
                           [{"role": "user", "content": [{"type": "text", "text": "x", "extra": deep(300)}]}], {})
    assert (await completions.messages("", "chatcmpl-1"))[0]["content"][0]["extra"] == deep(300)


async def test_a_span_that_cannot_be_stored_whole_is_kept_with_a_note(store, caplog):
    writer = SpanWriter(store)
    for record in (span("a"), span("deep", input=deep(5000), output={"kept": True}), span("b")):
        writer.submit(record)
    writer.start()
    with caplog.at_level(logging.WARNING, logger="rill.store"):
        await writer.flush()
    await writer.close()
    assert writer.num_written == 3 and writer.num_degraded == 1 and writer.num_dropped == 0
    kept = await store.get("", "deep")
    assert kept["input"] == {NOT_STORED: "nested too deeply to store as JSON"} and kept["output"] == {"kept": True}
    assert (await store.trace("", "t"))["num_spans"] == 3
    assert any("span deep (trace t) written with input replaced" in r.getMessage() for r in caplog.records)


async def test_a_span_the_database_refuses_is_dropped_counted_and_named(store, caplog):
    await store.insert(span("taken", trace_id="t0"))
    writer = SpanWriter(store)
    for record in (span("x"), span("taken", trace_id="t0"), span("y")):  # "taken" is in t0 already
        writer.submit(record)
    writer.start()
    with caplog.at_level(logging.WARNING, logger="rill.store"):
        await writer.flush()
    await writer.close()
    assert writer.num_written == 2 and writer.num_dropped == 1
    dropped = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(dropped) == 1 and "taken (trace t0)" in dropped[0] and "unique" in dropped[0].lower()


async def test_a_batch_the_database_refuses_whole_is_one_line_naming_every_span(store, caplog):
    class Down(SpanStore):
        async def insert_many(self, records):
            raise ConnectionRefusedError("connection refused")

    writer = SpanWriter(Down(store._engine))
    for name in ("a", "b", "c"):
        writer.submit(span(name))
    writer.start()
    with caplog.at_level(logging.WARNING, logger="rill.store"):
        await writer.flush()
    await writer.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert writer.num_dropped == 3 and len(errors) == 1
    assert "ConnectionRefusedError: connection refused" in errors[0]
    assert all(f"{name} (trace t)" in errors[0] for name in "abc")


async def test_nul_characters_lose_no_span_and_fail_no_stored_completion(store, engine, database):
    writer = SpanWriter(store)
    writer.submit(span("chat", user="ana\0", tags={"team": "a\0b", "env": "prod"}, error="bad\0byte",
                       input=[{"role": "user", "content": "nul \0 inside JSON"}]))
    writer.start()
    await writer.close()
    assert writer.num_written == 1 and writer.num_dropped == 0
    got = await store.get("", "chat")
    assert got["input"][0]["content"] == "nul \0 inside JSON" and got["tags"] == {"team": "a\0b", "env": "prod"}
    # Postgres's text cannot hold NUL: the span is written again with it mended (SQLite keeps it)
    assert got["user"] == ("ana\ufffd" if "postgres" in database.url else "ana\0")
    page, _, _ = await store.list_traces("", TraceFilter(tags=(("env", "prod"),)))
    assert [t["id"] for t in page] == ["t"]

    completions = CompletionStore(engine)
    await completions.save("", {"id": "chatcmpl-nul", "created": 1, "model": "m"}, [{"role": "user", "content": "x"}],
                           {"team": "a\0b", "env": "prod"})
    assert (await completions.get("", "chatcmpl-nul"))["metadata"] == {"team": "a\0b", "env": "prod"}
    listed, _ = await completions.list("", metadata={"env": "prod"})
    assert [c["id"] for c in listed] == ["chatcmpl-nul"]
    updated = await completions.update_metadata("", "chatcmpl-nul", {"k\0": "v"})
    assert updated["metadata"] == {"k\0": "v"}


async def test_a_failure_on_a_deep_value_is_described_in_one_short_line(store):
    with pytest.raises(json_codec.UnstorableValue) as raised:
        await store.insert(span("s", input=deep(5000)))
    assert str(raised.value) == "nested too deeply to store as JSON"
    try:
        await store.insert_many([span("s2", input=deep(5000))])
    except Exception as exc:  # SQLAlchemy's own text would repeat the 5,000-deep value
        assert describe(exc) == "UnstorableValue: nested too deeply to store as JSON"
    else:
        pytest.fail("the write did not fail")
