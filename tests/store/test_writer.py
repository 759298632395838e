"""The background span writer: batches reach the database, queued spans are findable, a full
queue drops and counts, one bad span does not cost its batch, close drains."""

from __future__ import annotations

import asyncio

import pytest

from rill.store.spans import SpanRecord, SpanStore
from rill.store.writer import SpanWriter


def span(id: str, trace: str = "t") -> SpanRecord:
    return SpanRecord(id=id, trace_id=trace, owner="", name=id, start_time=1_800_000_000.0,
                      end_time=1_800_000_001.0, total_tokens=1)


@pytest.fixture
def store(engine) -> SpanStore:
    return SpanStore(engine)


async def test_spans_are_written_in_batches_and_findable_until_then(store):
    writer = SpanWriter(store, max_batch=3)
    for i in range(7):
        assert writer.submit(span(f"s{i}"))
    assert writer.queue_depth == 7 and writer.pending("s3").id == "s3"  # not started: all queued
    writer.start()
    await writer.flush()
    assert writer.queue_depth == 0 and writer.pending("s3") is None
    assert writer.num_written == 7 and writer.num_dropped == 0
    assert (await store.trace("", "t"))["num_spans"] == 7
    await writer.close()


async def test_a_full_queue_drops_and_counts(store):
    writer = SpanWriter(store, max_queue=2)
    assert writer.submit(span("a")) and writer.submit(span("b"))
    assert not writer.submit(span("c"))
    assert writer.num_dropped == 1 and writer.pending("c") is None
    writer.start()
    await writer.close()
    assert writer.num_written == 2
    assert await store.get("", "c") is None


async def test_one_bad_span_does_not_cost_the_batch(store):
    await store.insert(span("taken"))
    writer = SpanWriter(store)
    for record in (span("x"), span("taken"), span("y")):  # "taken" violates the unique id
        writer.submit(record)
    writer.start()
    await writer.flush()
    assert writer.num_written == 2 and writer.num_dropped == 1
    assert await store.get("", "x") is not None and await store.get("", "y") is not None
    await writer.close()


async def test_close_writes_what_is_queued(store):
    writer = SpanWriter(store)
    writer.start()
    for i in range(50):
        writer.submit(span(f"s{i}"))
    await writer.close()
    assert writer.num_written == 50 and writer.queue_depth == 0
    assert (await store.trace("", "t"))["num_spans"] == 50


async def test_close_gives_up_on_a_stuck_database_and_counts_the_rest(store):
    class Stuck(SpanStore):
        async def insert_many(self, records):
            await asyncio.Event().wait()  # never returns

    writer = SpanWriter(Stuck(store._engine))
    writer.start()
    writer.submit(span("a"))
    writer.submit(span("b"))
    await writer.close(timeout=0.05)
    assert writer.num_dropped == 2 and writer.queue_depth == 0


async def test_a_queued_span_is_found_by_its_completion_id(store):
    writer = SpanWriter(store)
    record = span("s")
    record.completion_id = "chatcmpl-1"
    writer.submit(record)
    assert writer.pending("chatcmpl-1") is record and writer.pending("s") is record
    writer.start()
    await writer.close()
    assert writer.pending("chatcmpl-1") is None and (await store.get("", "chatcmpl-1"))["id"] == "s"
