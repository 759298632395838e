"""`--retention-days N`: traces (with their spans) that started, and stored completions and
stored responses created, more than N days ago are deleted, at start-up and then hourly. Without
it everything is kept.

Several servers may share one Postgres database: a pass runs under an advisory lock
(RETENTION_LOCK_ID), so one server prunes at a time and the others skip that pass rather than
delete (and count) the same rows again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Callable

from rill.store.completions import CompletionStore
from rill.store.database import advisory_lock
from rill.store.responses import ResponseStore
from rill.store.spans import SpanStore

log = logging.getLogger("rill.store")

INTERVAL_S = 3600.0
DAY_S = 86_400.0
RETENTION_LOCK_ID = 0x5249_4C52  # "RILR"; migrations take 0x5249_4C4C ("RILL")


async def prune(completions: CompletionStore, spans: SpanStore, days: float, *, responses: ResponseStore | None = None,
                now: Callable[[], float] = time.time) -> tuple[int, int, int] | None:
    """Delete what is older than `days`; (stored completions, traces, stored responses) deleted,
    or None when another server sharing the database is pruning it now."""
    async with advisory_lock(completions.engine, RETENTION_LOCK_ID) as held:
        if not held:
            return None
        return await _delete_old(completions, spans, responses, now() - days * DAY_S)


async def _delete_old(completions: CompletionStore, spans: SpanStore, responses: ResponseStore | None,
                      cutoff: float) -> tuple[int, int, int]:
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
                self._report(await prune(self._completions, self._spans, self._days, responses=self._responses))
            except Exception:  # the database may be down for a while: try again next time
                log.exception("retention: deleting old records failed")
            await asyncio.sleep(self._interval)

    def _report(self, deleted: tuple[int, int, int] | None) -> None:
        if deleted is None:
            log.debug("retention: another server sharing the database is pruning it; skipped this pass")
        elif any(deleted):
            log.info("retention (%g days): deleted %d stored completions, %d traces and %d stored responses",
                     self._days, *deleted)
