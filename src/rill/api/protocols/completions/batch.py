"""A request's prompts as engine generations (core/run.py): at most `window` of them running at
once (limits.py), the next started as soon as one ends, their events merged in the order they
arrive as (prompt, event).

The first window is started by begin(), before the first byte: every error a prompt can have was
checked already (prompts.py), so what begin() raises is the request's own (a logit_bias key,
a full queue), answered as an error. A later prompt that cannot start (the queue filled up
meanwhile) ends the answer with a Failure. close() aborts whatever still runs."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Sequence

from starlette.requests import Request

from rill.api.core import run
from rill.api.core.events import Failure
from rill.api.core.request import GenerationRequest
from rill.errors import RillError
from rill.router import LocalModel

_ENDED = object()  # a prompt's generation has no more events


class Batch:
    def __init__(self, request: Request, model: LocalModel, gens: Sequence[GenerationRequest],
                 spans: Sequence[Any], window: int):
        """`spans[p]`: what prompt p's generation reports its timing to (tracing.py)."""
        self._request, self._model, self._gens, self._spans = request, model, gens, spans
        self._window = max(1, window)
        self._next = 0  # the next prompt to start
        self._queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        self._running: dict[int, run.Generation] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pumping: set[int] = set()  # prompts whose events are being read (closing them aborts)

    async def _start(self, prompt: int) -> None:
        generation = await run.start(self._request, self._gens[prompt], self._model, self._spans[prompt])
        self._running[prompt] = generation
        self._tasks.append(asyncio.ensure_future(self._pump(prompt, generation)))

    async def _pump(self, prompt: int, generation: run.Generation) -> None:
        self._pumping.add(prompt)
        events = generation.events()
        try:
            async for event in events:
                self._queue.put_nowait((prompt, event))
        finally:
            await events.aclose()  # leaving early aborts the engine request
            self._queue.put_nowait((prompt, _ENDED))

    async def begin(self) -> None:
        """Start the first window of prompts; an error raises (and aborts those started)."""
        try:
            while self._next < min(self._window, len(self._gens)):
                self._next += 1
                await self._start(self._next - 1)
        except BaseException:
            await self.close()
            raise

    async def events(self) -> AsyncIterator[tuple[int, Any]]:
        """(prompt, event) until every prompt's generation has ended, or the first Failure. An
        event is None when a generation waited KEEPALIVE_SECONDS without one."""
        running = len(self._running)
        while running:
            prompt, event = await self._queue.get()
            if event is _ENDED:
                running -= 1
                if self._next < len(self._gens):
                    self._next += 1
                    try:
                        await self._start(self._next - 1)
                    except RillError as exc:
                        yield self._next - 1, Failure(exc)
                        return
                    running += 1
                continue
            yield prompt, event
            if isinstance(event, Failure):
                return

    async def close(self) -> None:
        """Stop every generation still running (their engine requests are aborted)."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for prompt, generation in self._running.items():
            if prompt not in self._pumping:  # cancelled before its first step: nobody read its events
                self._model.engine.abort(generation.plan.request.id)
