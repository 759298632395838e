"""Which slot (seq_id) a sequence runs in and which cached prefix it starts from.

Two things decide it. llama.cpp decodes split caches in one pass per run of consecutive seq_ids,
so running sequences should sit on the lowest ones, without gaps. And a new prompt should start
from the longest cached prefix there is: an idle slot's, or a running sequence's. Caches move
between slots by copying (bit for bit, ~7 ms for 4,096 cells of SmolLM2), so both can hold.
"""

from __future__ import annotations

import logging

from rill.backends.base import Backend
from rill.engine.sequence import Sequence
from rill.engine.slots import SlotPool, shared_prefix
from rill.engine.types import Status

log = logging.getLogger("rill.engine")

# Another slot's cache is copied for a new prompt only when that saves at least this many tokens
# of prefill (a copy moves a whole sequence's cache buffer: about three prefill tokens' time).
MIN_COPY_GAIN = 8
# Prefill chunks hold at least this many tokens of a sequence, so that every prefilled position is
# computed by the same (multi-token) kernels whatever the chunking: see Sequence.num_reusable.
MIN_PREFILL_CHUNK = 2


class Placement:
    def __init__(self, backend: Backend, slots: SlotPool):
        self.backend = backend
        self.slots = slots
        # a batch-invariant backend's decoded cells equal prefilled ones: answers are kept too
        self.exact = bool(getattr(backend, "batch_invariant", False))
        self.num_prefix_hits = 0  # admissions that reused a cached prefix
        self.num_prefix_tokens_reused = 0

    def place(self, seq: Sequence, running: list[Sequence]) -> None:
        """Give seq the lowest free slot, so that running sequences sit on consecutive seq_ids
        (llama.cpp decodes split caches in one pass only for consecutive ones), and reuse the
        longest cached prefix of what it must prefill: the slot's own cache, or a copy of another
        idle slot's or a running sequence's when that saves MIN_COPY_GAIN more tokens. The last
        two tokens are always computed: the last one's logits are needed, and a one-token
        prefill chunk would be computed like a decode step (see Sequence.num_reusable)."""
        tokens = seq.cache_tokens(seq.num_to_prefill)
        # a prompt whose logprobs are asked is computed whole: reused cells have no logits
        limit = 0 if seq.prompt_logprobs is not None else max(0, seq.num_to_prefill - MIN_PREFILL_CHUNK)
        target = self.slots.lowest_free()
        reuse = min(self.slots.match(target, tokens), limit)
        source, source_reuse = target, reuse
        idle_id, n = self.slots.best_match(tokens)
        if min(n, limit) > source_reuse:
            source, source_reuse = idle_id, min(n, limit)
        for other in running:
            reusable = other.num_reusable(self.exact)
            if reusable > source_reuse:
                n = min(shared_prefix(other.cache_tokens(reusable), tokens), limit)
                if n > source_reuse:
                    source, source_reuse = other.seq_id, n
        copy = source != target and source_reuse >= reuse + MIN_COPY_GAIN
        if copy or self.slots.holds(target) > reuse:  # what the target holds beyond the reuse
            self._keep_elsewhere(target, avoid=source)
        if copy:
            self.backend.copy(source, target)
            reuse = source_reuse
        self.slots.take(target)
        if not (reuse and self.backend.truncate(target, reuse)):
            reuse = 0
            self.backend.release(target)
        seq.seq_id, seq.num_cached = target, reuse
        if seq.num_preemptions == 0:
            seq.num_reused = reuse
        if reuse:
            self.num_prefix_hits += 1
            self.num_prefix_tokens_reused += reuse
            log.debug("%s reuses %d cached tokens of %d", seq.request.id, reuse, tokens.size)
        for fork in seq.forks:  # reserved now, used when the prompt is in the cache
            fork.seq_id = self.slots.lowest_free()
            self._keep_elsewhere(fork.seq_id)
            self._take_empty(fork.seq_id)

    def compact(self, running: list[Sequence]) -> None:
        """Close a gap in the running seq_ids, one sequence per step: the highest decoding one
        moves into the lowest free slot below it. llama.cpp decodes each run of consecutive
        seq_ids in a pass of its own (16 streams with one gap: 20% slower); a move copies one
        cache buffer, bit for bit, which costs about one decode step."""
        if not running or not self.slots.num_free:
            return
        low = self.slots.lowest_free()
        top = max(running, key=lambda seq: seq.seq_id)
        if top.seq_id < low or top.status is not Status.DECODING:
            return
        self._keep_elsewhere(low)
        self.slots.take(low)
        self.backend.copy(top.seq_id, low)
        self.backend.release(top.seq_id)
        self.slots.give_back(top.seq_id)
        top.seq_id = low

    def _keep_elsewhere(self, seq_id: int, avoid: int = -1) -> None:
        """Idle slot seq_id is about to be overwritten: move its cache to the free slot whose
        cache is worth least, if that one's is worth less (so eviction stays least recently used)."""
        spare = self.slots.victim(exclude=(seq_id, avoid))
        if spare is not None and self.slots.holds(seq_id) and self.slots.worth_less(spare, seq_id):
            self.backend.copy(seq_id, spare)
            self.slots.copied(seq_id, spare)

    def _take_empty(self, seq_id: int) -> None:
        self.slots.take(seq_id)
        self.backend.release(seq_id)

    def evict_idle(self) -> bool:
        """Drop the least recently used idle cache; False when there is none."""
        seq_id = self.slots.evict_lru()
        if seq_id is None:
            return False
        self.backend.release(seq_id)
        return True

    def free(self, seq: Sequence, *, keep_cache: bool) -> None:
        """seq left the batch: its slot, and the slots held for its choices not forked yet, are
        free again. With keep_cache its prompt's cache stays for prefix reuse."""
        keep = seq.num_reusable(self.exact) if keep_cache else 0
        if keep and self.backend.truncate(seq.seq_id, keep):
            self.slots.give_back(seq.seq_id, seq.cache_tokens(keep))
        else:
            self.backend.release(seq.seq_id)
            self.slots.give_back(seq.seq_id)
        for fork in seq.forks:
            self.slots.give_back(fork.seq_id)
            fork.seq_id = -1
