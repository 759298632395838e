"""Engine.submit(request) -> async iterator of events; Engine.abort(id). Owns one thread.

The event loop never blocks on inference: the engine thread hands events over with
`call_soon_threadsafe`, and a stream that is closed early (client gone) aborts its request.
An engine whose step stalls past `step_timeout` (watchdog.py), or whose thread crashed, is
unavailable: `unavailable` says why, and submit() refuses with a 503 (docs/faults.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading

import numpy as np

from rill.backends.base import Backend
from rill.engine.detokenize import Detokenizer
from rill.engine.loop import EngineLoop
from rill.engine.sequence import Sequence
from rill.engine.reasoning import ThinkingSplitter
from rill.engine.speculation import Draft
from rill.engine.types import Event, Failed, Finished, Request
from rill.engine.watchdog import Watchdog
from rill.errors import EngineUnavailable, RateLimited
from rill.sampling.grammar import Grammars
from rill.sampling.sampler import new_rng

log = logging.getLogger("rill.engine")


class RequestStream:
    """The events of one request, as an async iterator. Closing it before the end aborts it."""

    def __init__(self, engine: Engine, request_id: str, n: int = 1):
        self._engine = engine
        self.request_id = request_id
        self._unfinished = n  # choices still generating
        self._queue: asyncio.Queue[list[Event]] = asyncio.Queue()
        self._pending: list[Event] = []
        self._done = False

    def _deliver(self, events: list[Event]) -> None:  # on the event loop thread
        self._queue.put_nowait(events)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Event:
        if not self._pending:
            if self._done:
                raise StopAsyncIteration
            self._pending = await self._queue.get()
            self._pending.reverse()
        event = self._pending.pop()
        if isinstance(event, Finished):
            self._unfinished -= 1
        if isinstance(event, Failed) or self._unfinished == 0:
            self._done = True
        return event

    @property
    def done(self) -> bool:
        """It ended (all its events read) or was closed."""
        return self._done

    def close(self) -> None:
        """Abort the request unless it already ended; safe to call more than once."""
        if not self._done:
            self._done = True
            self._engine.abort(self.request_id)


class Engine:
    def __init__(self, backend: Backend, *, max_queue: int = 256, max_running: int = 1,
                 max_stall: float = 2.0, draft_cost: float | None = None, step_timeout: float = 0.0):
        """`step_timeout`: seconds a step may run before the watchdog declares the engine
        stalled (0: no watchdog; `rill serve` sets --step-timeout)."""
        self.backend = backend
        self.max_queue = max_queue
        self._loop = EngineLoop(backend, max_running=max_running, max_stall=max_stall, draft_cost=draft_cost)
        self._thread = threading.Thread(target=self._run, name="rill-engine", daemon=True)
        self.watchdog = Watchdog(self._loop, step_timeout) if step_timeout > 0 else None

    @functools.cached_property
    def grammars(self) -> Grammars:
        """Grammar compilation for this model's vocabulary (its tokenizer is built on first use)."""
        return Grammars(self.backend.guidance_tokenizer(), self.backend.info.n_vocab)

    @property
    def num_waiting(self) -> int:
        return self._loop.num_waiting

    @property
    def num_running(self) -> int:
        return self._loop.num_running

    @property
    def unavailable(self) -> str | None:
        """Why the engine cannot serve (a stalled step, a crashed thread), or None: healthy."""
        return self._loop.unavailable

    @property
    def max_sequences(self) -> int:
        """Choices of one request must fit in the batch together."""
        return self._loop.max_running

    def stats(self) -> dict[str, float]:
        """Gauges and counters for /metrics (plain ints written by the engine thread)."""
        loop = self._loop
        return {
            "running_sequences": loop.num_running,
            "waiting_requests": loop.num_waiting,
            "kv_cache_used_tokens": loop.num_kv_tokens,
            "kv_cache_capacity_tokens": self.backend.kv_capacity,
            "max_sequences": loop.max_running,
            "preemptions_total": loop.num_preemptions,
            "steps_total": loop.num_steps,
            "prefix_cache_tokens": loop.num_cached_tokens,
            "prefix_cache_hits_total": loop.placement.num_prefix_hits,
            "prefix_cache_reused_tokens_total": loop.placement.num_prefix_tokens_reused,
            "prediction_accepted_tokens_total": loop.num_prediction_accepted,
            "prediction_rejected_tokens_total": loop.num_prediction_rejected,
            "busy_seconds_total": round(loop.busy_seconds, 6),
            "forward_seconds_total": round(loop.forward_seconds, 6),
            "healthy": int(loop.unavailable is None),
            "failed_steps_total": loop.num_failed_steps,
        }

    def start(self) -> None:
        self._thread.start()
        if self.watchdog is not None:
            self.watchdog.start()

    def _run(self) -> None:
        try:
            self._loop.run()
        except BaseException as exc:  # a bug in the loop must not leave clients hanging
            log.exception("engine thread crashed; the engine serves nothing more (restart the server)")
            self._loop.die(f"the engine crashed ({type(exc).__name__}: {exc}); the server must be restarted")

    def stop(self, timeout: float = 10.0) -> None:
        self._loop.stop()
        if self.watchdog is not None:
            self.watchdog.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():  # never free the model under a running step
            log.error("engine thread did not stop within %.0f s; leaving the model loaded", timeout)
            return
        self.backend.close()

    def submit(self, request: Request) -> RequestStream:
        """Queue a request; raises RateLimited when the waiting queue is full, EngineUnavailable
        when the engine stalled or crashed."""
        if (reason := self._loop.unavailable) is not None:
            raise EngineUnavailable(reason)
        # requests that will find a free slot at the engine's next step are not queued ones
        free_slots = self._loop.max_running - self._loop.num_running
        if self._loop.num_waiting - max(free_slots, 0) >= self.max_queue:
            raise RateLimited(f"the server has {self.max_queue} requests waiting; retry shortly")
        loop = asyncio.get_running_loop()
        stream = RequestStream(self, request.id, request.n)

        def publish(events: list[Event]) -> None:
            try:
                loop.call_soon_threadsafe(stream._deliver, events)
            except RuntimeError:  # the event loop has closed: nobody is listening any more
                pass

        seed = request.sampling.seed
        choices = [Sequence(request=request, publish=publish, index=i,
                            detok=Detokenizer(request.stop, request.stops_until),
                            rng=new_rng(seed if i == 0 or seed is None else (seed, i)),
                            constraint=request.grammar.constraint() if request.grammar else None,
                            draft=Draft(np.asarray(request.prediction, np.int32)) if request.prediction else None,
                            thinking=ThinkingSplitter(request.thinking) if request.thinking else None,
                            prompt_logprobs=[] if request.prompt_logprobs is not None and i == 0 else None)
                   for i in range(request.n)]
        choices[0].forks = choices[1:]
        self._loop.add(choices[0])
        return stream

    def abort(self, request_id: str) -> None:
        self._loop.abort(request_id)
