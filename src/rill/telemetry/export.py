"""A batch span processor whose losses are counted: ended spans wait in a bounded queue and a
background thread exports them in batches, so a slow or dead collector never blocks a stream.
The SDK's BatchSpanProcessor does the same but only logs what it drops; /metrics needs the count
(rill_otel_spans_dropped_total)."""

from __future__ import annotations

import collections
import logging
import threading
from typing import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("rill.telemetry")


class CountedBatchProcessor(SpanProcessor):
    def __init__(self, exporter: SpanExporter, *, max_queue: int = 2048, max_batch: int = 512,
                 delay_s: float = 1.0):
        self.exporter = exporter
        self.max_queue, self.max_batch, self.delay_s = max_queue, max_batch, delay_s
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._flushed = threading.Condition(self._lock)
        self._exporting = 0  # spans taken from the queue, not yet exported
        self._stopping = False
        self.exported = 0
        self.dropped_queue_full = 0
        self.dropped_export_failed = 0
        self._thread = threading.Thread(target=self._run, name="rill-otel-export", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        """Called on the thread that ended the span (the event loop's): never blocks."""
        if not span.context.trace_flags.sampled:
            return
        with self._lock:
            if self._stopping or len(self._queue) >= self.max_queue:
                self.dropped_queue_full += 1
                return
            self._queue.append(span)
            if len(self._queue) >= self.max_batch:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue and not self._stopping:
                    self._wake.wait(self.delay_s)
                if not self._queue:
                    self._flushed.notify_all()
                    if self._stopping:
                        return
                    continue
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
                self._exporting = len(batch)
            self._export(batch)
            with self._lock:
                self._exporting = 0
                if not self._queue:
                    self._flushed.notify_all()

    def _export(self, batch: Sequence[ReadableSpan]) -> None:
        try:
            result = self.exporter.export(batch)
        except Exception:  # an exporter bug must not kill the thread
            log.exception("exporting %d spans failed", len(batch))
            result = SpanExportResult.FAILURE
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(batch)
            else:
                self.dropped_export_failed += len(batch)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export what is queued now; False if that took longer than the timeout."""
        with self._lock:
            self._wake.notify()
            return self._flushed.wait_for(lambda: not self._queue and not self._exporting, timeout_millis / 1000)

    def shutdown(self) -> None:
        """Export what is queued (within a few seconds), then stop the thread and the exporter."""
        self.force_flush(5_000)
        with self._lock:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=5)
        self.exporter.shutdown()
