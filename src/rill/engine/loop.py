"""The engine thread: drain inbox and aborts -> schedule -> forward -> sample -> postprocess -> publish.

Only this thread touches the backend, so llama.cpp's compute threads are started from one place.
What fails is contained (docs/faults.md): a step that raises fails the sequences in it; a step
that stalls past the watchdog's timeout fails everything the engine holds until it returns
(check_stall, called from the watchdog's thread); a crash of the loop itself fails everything
for good (die, called by the thread as it ends).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

import numpy as np

from rill.backends.base import Backend, BackendError, BatchItem, KVCacheFull
from rill.engine.events import emit_text, finished_event
from rill.engine.pacing import PrefillPacer
from rill.engine.picker import TokenPicker
from rill.engine.placement import Placement
from rill.engine.prompt_scoring import restart_scoring, score_prompt
from rill.engine.schedule import plan_step
from rill.engine.sequence import Sequence
from rill.engine.slots import SlotPool
from rill.engine.speculation import DraftCost
from rill.engine.types import Failed, FinishReason, Finished, PromptLogprobs, Status

log = logging.getLogger("rill.engine")

SHUTTING_DOWN = Failed("the server is shutting down; retry the request", shutting_down=True)
# A request that has waited this long is admitted next whatever its tier, so a steady flow of
# `priority` requests cannot starve a `flex` one for ever.
MAX_WAIT_S = 30.0


class CleanupFailed(Exception):
    """Freeing the sequences of a failed step failed: the slots and caches are in doubt."""


class EngineLoop:
    """Owns the backend and every Sequence; all methods but the inbox ones run on the engine thread."""

    def __init__(self, backend: Backend, *, max_running: int = 1, max_stall: float = 2.0,
                 clock: Callable[[], float] = time.perf_counter, draft_cost: float | None = None):
        self.backend = backend
        self.max_running = min(max_running, backend.max_sequences)
        self.pacer = PrefillPacer(backend.max_batch_tokens, max_stall)
        self.draft_cost = DraftCost(self.pacer, fixed=draft_cost)
        self._clock = clock
        self._lock = threading.Condition()
        self._inbox: list[Sequence] = []
        # every request given and not ended, by id (its first choice): a fault that strikes while
        # a sequence is between the lists (being placed or freed) must still reach its client
        self._requests: dict[str, Sequence] = {}
        self._aborts: set[str] = set()
        self._stopping = False
        self._stalled = False  # the watchdog failed everything while a step was running (under _lock)
        self.dead = False  # the loop crashed: nothing will be served again
        # Why the engine cannot take requests (stalled or dead), or None. Read by other threads.
        self.unavailable: str | None = None
        self.step_started = 0.0  # the running step's start on self._clock; 0.0 between steps
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []
        self.placement = Placement(backend, SlotPool(self.max_running))
        self.picker = TokenPicker(backend)
        self.slots = self.placement.slots
        # What other threads may read for /health, metrics and tests (ints: atomic to read).
        self.num_waiting = 0
        self.num_running = 0
        self.num_kv_tokens = 0  # cache cells the running sequences hold
        self.num_preemptions = 0
        self.num_steps = 0
        self.num_cached_tokens = 0  # cells idle slots keep for prefix reuse
        self.num_prediction_accepted = 0  # draft tokens verified and kept, all requests
        self.num_prediction_rejected = 0
        self.busy_seconds = 0.0  # engine thread time in steps: scheduling, forward, sampling, ...
        self.forward_seconds = 0.0  # ... of which inside backend.forward (the rest is Python)
        self.num_failed_steps = 0  # steps that raised, or stalled past the watchdog's timeout

    # -- called from other threads ------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        with self._lock:
            if self._stopping:
                seq.publish([SHUTTING_DOWN])
                return
            if self.unavailable is not None:  # raced with Engine.submit's check
                seq.publish([Failed(self.unavailable, unavailable=True)])
                return
            self._inbox.append(seq)
            self._requests[seq.request.id] = seq
            self.num_waiting += 1
            self._lock.notify()

    def abort(self, request_id: str) -> None:
        with self._lock:
            self._aborts.add(request_id)
            self._lock.notify()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()

    def check_stall(self, timeout: float) -> str | None:
        """The watchdog's check (its own thread): if the running step started more than
        `timeout` seconds ago, the engine is unavailable until the step returns, and every
        request it holds gets an error now rather than waiting for ever; the reason, when so.
        The stuck thread owns the sequences, so they are only told (their streams end at the
        first Failed); the thread frees them if the step returns (_recover)."""
        with self._lock:
            started = self.step_started
            if not started or self.unavailable is not None or self._stopping:
                return None
            elapsed = self._clock() - started
            if elapsed < timeout:
                return None
            self.unavailable = (f"the engine is stalled: a step has not returned for {elapsed:.1f} s "
                                f"(the watchdog's timeout is {timeout:g} s); retry later or elsewhere")
            self._stalled = True
            self.num_failed_steps += 1
            victims = self._everyone()  # the engine thread is inside the step, not touching them
            self._inbox.clear()
            self.num_waiting = len(self.waiting)
            reason = self.unavailable
        log.error("%s; failing its %d requests", reason, len({seq.request.id for seq in victims}))
        _tell(victims, Failed(reason, unavailable=True))
        return reason

    def die(self, reason: str) -> None:
        """The loop crashed (a bug outside a step, or a failure while cleaning up after one):
        every request it held or was sent gets an error, and every later one at once."""
        with self._lock:
            self.unavailable = reason
            self.dead = True
            victims = self._everyone()
            self._inbox.clear()
            self.num_running = self.num_waiting = 0  # nothing is being served any more
        _tell(victims, Failed(reason, unavailable=True))

    def _everyone(self) -> list[Sequence]:
        """Every sequence of every request not ended (list copies are atomic: the engine thread
        may be writing to them when the watchdog asks)."""
        return [*list(self._requests.values()), *self._inbox, *list(self.waiting), *list(self.running)]

    # -- the engine thread ----------------------------------------------------------------------

    def run(self) -> None:
        while self._drain():
            started = self.step_started = self._clock()  # read by the watchdog
            self._tick()
            self.busy_seconds += self._clock() - started
            if self._end_step():
                self._recover(self._clock() - started)
        with self._lock:
            self.waiting.extend(self._inbox)
            self._inbox.clear()
        for seq in [*self.waiting, *self.running]:
            self._finish(seq, SHUTTING_DOWN)
            self._flush(seq)

    def _tick(self) -> None:
        """One round of work after draining the inbox: admit, compact, step."""
        self._admit()
        self.placement.compact(self.running)
        if self.running:
            try:
                self._step()
            except CleanupFailed:
                raise  # the slots and caches are in doubt: the loop cannot go on
            except Exception as exc:  # a bug must fail these requests, not hang the server
                log.exception("engine step failed")
                self.num_failed_steps += 1
                self._fail_running(f"internal engine error: {exc}")

    def _end_step(self) -> bool:
        """Whether the watchdog declared the step that just ended stalled."""
        with self._lock:
            self.step_started = 0.0
            return self._stalled

    def _recover(self, elapsed: float) -> None:
        """A stalled step returned: its results are dropped (the watchdog failed every request
        already), every sequence and its cache is freed, and the engine takes requests again."""
        log.warning("the stalled engine step returned after %.1f s; freeing its requests and serving again", elapsed)
        self._fail_running("the engine stalled")
        for seq in list(self.waiting):
            self._finish(seq, Failed("the engine stalled", unavailable=True))
            self._flush(seq)
        with self._lock:
            self._requests.clear()  # those the watchdog took from the inbox (add() refused new ones)
            self._stalled = False
            self.unavailable = None
        self._update_counts()

    def _drain(self) -> bool:
        """Take new requests and aborts; sleep while there is nothing to do. False: stop."""
        with self._lock:
            while not (self._inbox or self._aborts or self._stopping or self.waiting or self.running):
                self._lock.wait()
            if self._stopping:
                return False
            for seq in self._inbox:
                self._enqueue(seq)
            self._inbox.clear()
            aborts, self._aborts = self._aborts, set()
        if aborts:
            for seq in [s for s in (*self.waiting, *self.running) if s.request.id in aborts]:
                log.debug("request %s aborted", seq.request.id)
                self._release(seq, Status.ABORTED)
        return True

    def _enqueue(self, seq: Sequence) -> None:
        """Into the waiting line behind every request of the same or a higher priority."""
        seq.queued_at = self._clock()
        at = len(self.waiting)
        while at > 0 and self.waiting[at - 1].request.priority > seq.request.priority:
            at -= 1
        self.waiting.insert(at, seq)

    def _admit(self) -> None:
        """Admission in waiting-line order into free sequence slots, while the KV cache has room
        for the whole prefill (so a long prompt is not admitted only to be preempted at once)."""
        while self.waiting:
            seq = self._next_waiting()
            if self.slots.num_free < 1 + len(seq.forks):  # n choices need n slots
                break
            if self.running and self._kv_committed() + seq.num_to_prefill + 1 > self.backend.kv_capacity:
                break
            self.waiting.remove(seq)
            self.placement.place(seq, self.running, self.waiting)
            if not seq.admitted_at:  # a preempted sequence's wait was counted the first time
                seq.admitted_at = time.monotonic()
                for fork in seq.forks:
                    fork.admitted_at = seq.admitted_at
            seq.status = Status.PREFILLING
            self.running.append(seq)
            if self._kv_committed() + self.slots.num_cached_tokens > self.backend.kv_capacity:
                keep = self.placement.wanted(self.waiting)
                while self._kv_committed() + self.slots.num_cached_tokens > self.backend.kv_capacity:
                    if not self.placement.evict_idle(keep):
                        break
            self._update_counts()

    def _next_waiting(self) -> Sequence:
        """The head of the waiting line, unless a request further back has waited MAX_WAIT_S."""
        oldest = min(self.waiting, key=lambda seq: seq.queued_at)
        if oldest is not self.waiting[0] and self._clock() - oldest.queued_at > MAX_WAIT_S:
            return oldest
        return self.waiting[0]

    def _kv_committed(self) -> int:
        """Cache cells the running sequences hold or will hold once their prefill is done, plus
        the one each needs for its next token."""
        return sum(max(seq.num_cached, seq.num_to_prefill) + 1 for seq in self.running)

    def _step(self) -> None:
        plan, mapped_by_seq = plan_step(self.running, self.backend, self.pacer, self.draft_cost)
        num_decoding = sum(1 for seq, _ in plan if seq.status is Status.DECODING)
        started = self._clock()
        try:
            logits = self.backend.forward([item for _, item in plan])
        except KVCacheFull:
            if self.placement.evict_idle(self.placement.wanted(self.waiting)):  # idle caches go first, then sequences
                return
            if len(self.running) > 1:
                self._preempt(self.running[-1])
                return
            self._fail_running("the sequence does not fit in the KV cache")
            return
        except BackendError as exc:
            log.error("forward failed: %s", exc)
            self.num_failed_steps += 1
            self._fail_running(f"inference failed: {exc}")
            return
        elapsed = self._clock() - started
        self.forward_seconds += elapsed
        if all(seq.status is Status.DECODING for seq, _ in plan):
            self.draft_cost.observe(elapsed, len(plan), sum(item.num_logits - 1 for _, item in plan))
        # draft tokens are computed like prompt tokens (several of one sequence): paced as such
        computed = sum(len(item.tokens) for _, item in plan) - num_decoding - sum(mapped_by_seq.values())
        self.pacer.observe(elapsed, num_decoding, computed)
        self.num_steps += 1
        row = 0
        for seq, item in plan:
            if seq.status is Status.DECODING and item.num_logits > 1:
                self._verify(seq, item, logits[row : row + item.num_logits])
                row += item.num_logits
                continue
            if seq.status is Status.PREFILLING and seq.prompt_logprobs is not None:
                score_prompt(seq, item, logits[row : row + item.num_logits], self.backend.token_bytes)
                row += item.num_logits - 1  # the last row, at the prompt's end, is the next token's
            seq.num_cached += len(item.tokens)
            if seq.status is Status.PREFILLING:
                if seq.num_preemptions == 0:  # reported as usage.prompt_tokens_details.cached_tokens
                    seq.num_reused += mapped_by_seq.get(seq.seq_id, 0)
                if seq.num_cached < seq.num_to_prefill:
                    if seq.prompt_logprobs is not None:
                        row += 1
                    continue
                seq.status = Status.DECODING
                seq.num_prefilled = seq.num_cached
                if seq.prompt_logprobs is not None:
                    seq.outbox.append(PromptLogprobs(tuple(seq.prompt_logprobs)))
                    seq.prompt_logprobs = None
                if not item.num_logits:  # resumed after preemption: decode from its last token
                    continue
            for choice in self._fork(seq):
                if choice.request.max_tokens == 0:  # the prompt scored, nothing generated
                    self._finish(choice, finished_event(choice, FinishReason.LENGTH))
                else:
                    self._accept(choice, self.picker.next_token(choice, logits[row]))
                self._flush(choice)
            row += 1
        self._update_counts()

    def _verify(self, seq: Sequence, item: BatchItem, rows: np.ndarray) -> None:
        """A sequence's last token and draft went through in one item: sample each position as
        a one-token step would have (same logits, same RNG draw, same penalties so far) and keep
        the draft tokens that equal what was sampled. Sampling and then comparing is the
        speculative acceptance rule for a draft that is certain of its token (accept with
        probability p(draft), else draw from p without it), so the output is distributed, and
        with a seed or greedy is, exactly as without the prediction. Positions after the first
        disagreement are dropped from the cache."""
        draft = item.tokens[1:]
        seq.draft.verifying(len(draft))
        accepted = 0
        for j in range(rows.shape[0]):
            token = self.picker.next_token(seq, rows[j])
            kept = j < len(draft) and token == draft[j]
            if kept:  # counted before _accept, whose Finished event reports the counts
                seq.draft.kept()
                accepted += 1
            self._accept(seq, token)
            if not kept or seq.is_done:
                break
        seq.num_cached += 1 + accepted
        self.num_prediction_accepted += accepted
        self.num_prediction_rejected += len(draft) - accepted
        if accepted < len(draft) and not seq.is_done:  # a finished sequence's cache was released already
            self.backend.truncate(seq.seq_id, seq.num_cached)
        self._flush(seq)

    def _fork(self, seq: Sequence) -> list[Sequence]:
        """At the end of a prompt's prefill, its other choices take a copy of its cache and
        sample their first tokens from the same logits, each with its own RNG."""
        forks, seq.forks = seq.forks, []
        for fork in forks:
            self.backend.copy(seq.seq_id, fork.seq_id)
            fork.num_cached = seq.num_cached
            fork.num_reused, fork.num_prefilled = seq.num_reused, seq.num_prefilled
            fork.status = Status.DECODING
            self.running.append(fork)
        if forks:
            self._update_counts()
        return [seq, *forks]

    def _vacate(self, seq: Sequence, *, keep_cache: bool) -> None:
        """Take a running sequence out of the batch (see Placement.free)."""
        self.running.remove(seq)
        self.placement.free(seq, keep_cache=keep_cache)

    def _preempt(self, seq: Sequence) -> None:
        """The KV cache is full: free the newest sequence and queue it first. It keeps what it
        generated (and its RNG and detokenizer), and recomputes its cache when readmitted, so
        its client sees the same stream, only later."""
        log.info("%s preempted: KV cache full (%d running)", seq.request.id, len(self.running))
        self._vacate(seq, keep_cache=False)
        seq.status = Status.WAITING
        seq.num_cached = 0
        seq.num_preemptions += 1
        if seq.prompt_logprobs is not None:  # not sent yet: the prompt is scored again from its start
            restart_scoring(seq)
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        self._update_counts()

    def _fail_running(self, message: str) -> None:
        """A failed step leaves the caches in doubt: none is kept. Every client is told before
        anything is freed, so that a failure while freeing (which ends the loop) leaves none
        of them without its error."""
        failing = list(self.running)
        for seq in failing:
            seq.outbox.append(Failed(message))
            self._flush(seq)
        try:
            for seq in failing:
                self._vacate(seq, keep_cache=False)
                self._release(seq, Status.FINISHED)
        except Exception as exc:
            raise CleanupFailed(f"freeing a failed step's sequences failed: {exc}") from exc

    def _accept(self, seq: Sequence, token: int) -> None:
        """Postprocess one sampled token: end of generation, stop strings, length."""
        req = seq.request
        if self.backend.is_end_of_generation(token):
            emit_text(seq, seq.detok.finish(), final=True)
            self._finish(seq, finished_event(seq, FinishReason.STOP))
            return
        seq.generated.append(token)
        seq.num_unreported += 1
        if seq.draft is not None:
            seq.draft.observe(token)
        text, matched = seq.detok.push(self.backend.token_bytes(token))
        emit_text(seq, text)
        if seq.thinking is not None:
            seq.thinking.count_token()
        if matched or (seq.constraint is not None and seq.constraint.done):
            # the grammar is complete (nothing may follow), or a stop string matched
            emit_text(seq, "" if matched else seq.detok.finish(), final=True)
            self._finish(seq, finished_event(seq, FinishReason.STOP))
        elif seq.num_generated >= req.max_tokens:
            emit_text(seq, seq.detok.finish(), final=True)
            self._finish(seq, finished_event(seq, FinishReason.LENGTH))

    def _finish(self, seq: Sequence, event: Finished | Failed) -> None:
        seq.outbox.append(event)
        if isinstance(event, Finished):
            elapsed = time.monotonic() - seq.submitted_at
            log.info("%s: %s after %d prompt + %d completion tokens in %.2f s",
                     seq.request.id, event.reason.value, event.num_prompt_tokens,
                     event.num_completion_tokens, elapsed)
        self._release(seq, Status.FINISHED)

    def _release(self, seq: Sequence, status: Status) -> None:
        """Free the sequence's slot and KV cache now, so the next request can use them."""
        if seq.is_done:
            return
        if seq in self.running:
            self._vacate(seq, keep_cache=True)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.status = status
        if seq.index == 0:  # its other choices, if running, are in self.running
            self._requests.pop(seq.request.id, None)
        self._update_counts()

    def _update_counts(self) -> None:
        with self._lock:
            self.num_running = len(self.running)
            self.num_waiting = len(self.waiting) + len(self._inbox)
            self.num_kv_tokens = sum(seq.num_cached for seq in self.running)
            self.num_cached_tokens = self.slots.num_cached_tokens

    @staticmethod
    def _flush(seq: Sequence) -> None:
        if seq.outbox:
            seq.publish(seq.outbox)
            seq.outbox = []


def _tell(victims: list[Sequence], event: Failed) -> None:
    """One error per request (its choices share one stream, which ends at the first)."""
    for seq in {seq.request.id: seq for seq in victims}.values():
        seq.publish([event])
