"""`--retention-days N`: traces (with their spans) that started, and stored completions and
stored responses created, more than N days ago are deleted, at start-up and then hourly. Without
it everything is kept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Callable

from rill.store.completions import CompletionStore
from rill.store.responses import ResponseStore
from rill.store.spans import SpanStore

log = logging.getLogger("rill.store")

INTERVAL_S = 3600.0
DAY_S = 86_400.0


async def prune(completions: CompletionStore, spans: SpanStore, days: float, *,
                responses: ResponseStore | None = None, now: Callable[[], float] = time.time) -> tuple[int, int, int]:
    """Delete what is older than `days`; (stored completions, traces, stored responses) deleted."""
    cutoff = now() - days * DAY_S
    pruned = await completions.delete_before(cutoff), await spans.delete_before(cutoff)
    return (*pruned, 0 if responses is None else await responses.delete_before(cutoff))


class Retention:
    def __init__(self, completions: CompletionStore, spans: SpanStore, days: float, *,
                 responses: ResponseStore | None = None, interval: float = INTERVAL_S):
        self._completions, self._spans, self._days, self._interval = completions, spans, days, interval
        self._responses = responses
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rill-retention")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                completions, traces, responses = await prune(self._completions, self._spans, self._days,
                                                             responses=self._responses)
                if completions or traces or responses:
                    log.info("retention (%g days): deleted %d stored completions, %d traces and %d stored responses",
                             self._days, completions, traces, responses)
            except Exception:  # the database may be down for a while: try again next time
                log.exception("retention: deleting old records failed")
            await asyncio.sleep(self._interval)
