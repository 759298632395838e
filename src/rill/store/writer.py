"""The background span writer: request handlers hand finished spans to a bounded queue and go
on; one task writes them in batches (it waits BATCH_WINDOW_S after a span for others to join,
so that under load a transaction carries many spans and costs the event loop little). Decoding
never waits for the database. When the queue is full (the database is down or far slower than
the traffic) a span is dropped, counted in `num_dropped` (exported as
rill_trace_records_dropped_total) and logged.

A batch the database refuses is written span by span, so one bad span costs only itself; a span
refused alone is written once more with what could not be stored replaced by a note (storable.py:
counted in `num_degraded`, logged with its id); one refused even so is dropped, counted and logged
with its id. No span is lost without a log line naming it.

Spans still in the queue are findable (`pending`), so a request may nest under the span of a
completion that finished a moment ago, before that span reached the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from rill.store.spans import SpanRecord, SpanStore
from rill.store.storable import describe, storable_copy

log = logging.getLogger("rill.store")

MAX_QUEUE = 10_000
MAX_BATCH = 256  # spans per transaction
BATCH_WINDOW_S = 0.1  # after a span arrives, wait this long for more: one transaction for them all
DROP_LOG_SECONDS = 10.0  # at most one "queue full" warning per this interval
MAX_IDS_LOGGED = 200  # ids named in one "dropped" line


class SpanWriter:
    def __init__(self, store: SpanStore, *, max_queue: int = MAX_QUEUE, max_batch: int = MAX_BATCH,
                 window: float = BATCH_WINDOW_S):
        self.store = store
        self.num_dropped = 0
        self.num_written = 0
        self.num_degraded = 0  # written with notes in place of what the database refused
        self._queue: asyncio.Queue[SpanRecord] = asyncio.Queue(max_queue)
        self._max_batch = max_batch
        self._pending: dict[str, SpanRecord] = {}  # queued or being written, by span id
        self._by_completion: dict[str, SpanRecord] = {}  # the same, by the completion they record
        self._task: asyncio.Task[None] | None = None
        self._last_drop_log = -DROP_LOG_SECONDS
        self._window = window
        self._idle = asyncio.Event()
        self._idle.set()
        self._hurry = asyncio.Event()  # flush() asked: write now, without waiting for the window

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def pending(self, span_id: str) -> SpanRecord | None:
        """A span not written yet, by its id or its completion's id (as GET /v1/spans/{id} takes).
        The writer carries completions' spans, whose ids the server made (random, so unique
        across owners); the caller checks that the span is visible to it."""
        return self._pending.get(span_id) or self._by_completion.get(span_id)

    def submit(self, record: SpanRecord) -> bool:
        """Queue a span for writing; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self._queue_full()
            return False
        self._pending[record.id] = record
        if record.completion_id:
            self._by_completion[record.completion_id] = record
        self._idle.clear()
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rill-span-writer")

    async def flush(self) -> None:
        """Write what is queued now and wait until it is written (or dropped)."""
        if not self._idle.is_set():
            self._hurry.set()
        await self._idle.wait()

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most `timeout` seconds), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._pending:
            self._dropped(list(self._pending.values()), "the server stopped before they were written")
            self._pending.clear()
            self._by_completion.clear()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._queue.qsize() < self._max_batch - 1 and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._window):
                        await self._hurry.wait()
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)
            for record in batch:
                self._pending.pop(record.id, None)
                if record.completion_id:
                    self._by_completion.pop(record.completion_id, None)
            if self._queue.empty():
                self._hurry.clear()
                self._idle.set()

    async def _write(self, batch: list[SpanRecord]) -> None:
        if len(batch) > 1:
            try:
                await self.store.insert_many(batch)
            except Exception as exc:
                log.warning("writing a batch of %d spans failed (%s): writing them one by one", len(batch),
                            describe(exc))
            else:
                self.num_written += len(batch)
                return
        failed = [(record, why) for record in batch if (why := await self._write_one(record)) is not None]
        if failed and len(failed) == len(batch) > 1:  # the database itself, most likely: one line
            self._dropped([record for record, _ in failed], f"writing them failed ({failed[0][1]})")
        else:
            for record, why in failed:
                self._dropped([record], f"writing it failed ({why})")

    async def _write_one(self, record: SpanRecord) -> str | None:
        """Write one span, mended if the database refuses it as it is; None when written, else
        why not."""
        try:
            await self.store.insert_many([record])
        except Exception as exc:
            why = describe(exc)
        else:
            self.num_written += 1
            return None
        mended, changed = storable_copy(record)
        if not changed:
            return why
        try:
            await self.store.insert_many([mended])
        except Exception as exc:
            return f"{why}; mended, {describe(exc)}"
        self.num_written += 1
        self.num_degraded += 1
        log.warning("span %s (trace %s) written with %s replaced or mended: %s", record.id, record.trace_id,
                    ", ".join(changed), why)
        return None

    def _dropped(self, records: list[SpanRecord], why: str) -> None:
        """Spans given up: counted, and logged in one line with their ids (the first
        MAX_IDS_LOGGED of them: a queue given up at shutdown holds up to 10,000)."""
        self.num_dropped += len(records)
        named = ", ".join(f"{r.id} (trace {r.trace_id})" for r in records[:MAX_IDS_LOGGED])
        more = f" and {len(records) - MAX_IDS_LOGGED} more" if len(records) > MAX_IDS_LOGGED else ""
        log.error("dropped %d span(s): %s (%d dropped since start); ids: %s%s", len(records), why, self.num_dropped,
                  named, more)

    def _queue_full(self) -> None:
        """A span refused at the door: counted, and logged at most every DROP_LOG_SECONDS (a
        full queue means a flood; the count tells how many)."""
        self.num_dropped += 1
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_SECONDS:
            self._last_drop_log = now
            log.warning("dropped a span: the span queue is full (%d dropped since start)", self.num_dropped)
