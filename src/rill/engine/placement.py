"""Which slot (seq_id) a sequence runs in and which cached prefix it starts from.

Two things decide it. llama.cpp decodes split caches in one pass per run of consecutive seq_ids,
so running sequences should sit on the lowest ones, without gaps. And a new prompt should start
from the longest cached prefix there is: an idle slot's, or a running sequence's. Caches move
between slots by copying (bit for bit, ~7 ms for 4,096 cells of SmolLM2), so both can hold.
"""

from __future__ import annotations

import itertools
import logging
from typing import Iterable

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

    def place(self, seq: Sequence, running: list[Sequence], waiting: Iterable[Sequence] = ()) -> None:
        """Give seq the idle slot that holds its prompt's longest cached prefix (at least
        MIN_COPY_GAIN tokens), else the lowest free slot, so that running sequences sit on
        consecutive seq_ids where they can (llama.cpp decodes split caches in one pass only for
        consecutive ones; compact() closes gaps later), and reuse the longest cached prefix of
        what it must prefill: the slot's own cache, or a copy of a running sequence's when that
        saves MIN_COPY_GAIN more tokens. The last
        two tokens are always computed: the last one's logits are needed, and a one-token
        prefill chunk would be computed like a decode step (see Sequence.num_reusable). The idle
        caches that `waiting` prompts will reuse are kept: the slot taken is the lowest free one
        no other waiting prompt wants (its own cached prompt's, if need be), and a displaced
        cache never overwrites a wanted one."""
        tokens = seq.cache_tokens(seq.num_to_prefill)
        # a prompt whose logprobs are asked is computed whole: reused cells have no logits
        limit = 0 if seq.prompt_logprobs is not None else max(0, seq.num_to_prefill - MIN_PREFILL_CHUNK)
        wanted = self.wanted(waiting, but=seq)
        own, own_reuse = self.slots.best_match(tokens)
        own_cache = own >= 0 and own_reuse >= min(self.slots.holds(own), tokens.size) - MIN_COPY_GAIN
        if own_cache and min(own_reuse, limit) >= MIN_COPY_GAIN:
            # its own cached prompt is taken where it lies (the same prompt again, or an earlier
            # turn of its conversation: the match runs to the end of one of the two): copying it
            # to a lower slot would push that slot's cache onto a third, whose prompt may be
            # arriving right behind this one. A cache that shares only a beginning with this
            # prompt (a system prompt, a document) is another prompt's, and stays: that beginning
            # is copied instead
            target = own
        else:
            target = self.slots.lowest_free(avoid=wanted)
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
            # its own prompt's cache, mostly reused: the rest (an earlier answer's last tokens) is
            # kept only where nothing else is lost
            self._keep_elsewhere(target, avoid=(source, *wanted), only_empty=own_cache and target == own and not copy)
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
            fork.seq_id = self.slots.lowest_free(avoid=wanted)
            self._keep_elsewhere(fork.seq_id, avoid=tuple(wanted))
            self._take_empty(fork.seq_id)

    def wanted(self, waiting: Iterable[Sequence], but: Sequence | None = None) -> frozenset[int]:
        """The idle slots whose caches the next waiting prompts (as many as there are slots;
        not `but`) would reuse, at least MIN_COPY_GAIN tokens of."""
        out = set()
        for other in itertools.islice(waiting, self.backend.max_sequences):
            if other is but or other.prompt_logprobs is not None:
                continue
            seq_id, n = self.slots.best_match(other.cache_tokens(other.num_to_prefill))
            if n >= MIN_COPY_GAIN:
                out.add(seq_id)
        return frozenset(out)

    def compact(self, running: list[Sequence]) -> None:
        """Close a gap in the running seq_ids, one sequence per step: the highest decoding one
        and the lowest free slot between the running ones exchange caches, so the idle cache
        there (a prompt that may come back) is kept, in the slot the sequence left. llama.cpp
        decodes each run of consecutive seq_ids in a pass of its own, and each pass reads every
        weight: 16 streams in 4 runs take 30% longer a step than in one, in 8 runs twice as
        long; an exchange costs llama.cpp three cache copies (~20 ms for SmolLM2's 4,096-cell
        caches), the torch backend nothing. Running sequences that already form one run stay
        where they are, wherever that is."""
        if not running or not self.slots.num_free:
            return
        ids = sorted(seq.seq_id for seq in running)
        if ids[-1] - ids[0] + 1 == len(ids):
            return
        low = self.slots.lowest_free(above=ids[0])
        top = max(running, key=lambda seq: seq.seq_id)
        if not 0 <= low < top.seq_id or top.status is not Status.DECODING:
            return
        self.backend.swap(low, top.seq_id)
        self.slots.moved(low, top.seq_id)
        top.seq_id = low

    def _keep_elsewhere(self, seq_id: int, avoid: tuple[int, ...] = (), only_empty: bool = False) -> None:
        """Idle slot seq_id is about to be overwritten: move its cache to the free slot whose
        cache is worth least, if that one's is worth less (so eviction stays least recently used),
        never onto the `avoid` slots (a cache being copied from, or wanted by a waiting prompt);
        with `only_empty`, only to an empty slot."""
        spare = self.slots.victim(exclude=(seq_id, *avoid))
        if only_empty and spare is not None and self.slots.holds(spare):
            return
        if spare is not None and self.slots.holds(seq_id) and self.slots.worth_less(spare, seq_id):
            self.backend.copy(seq_id, spare)
            self.slots.copied(seq_id, spare)

    def _take_empty(self, seq_id: int) -> None:
        self.slots.take(seq_id)
        self.backend.release(seq_id)

    def evict_idle(self, keep: frozenset[int] = frozenset()) -> bool:
        """Drop the least recently used idle cache, one not in `keep` (wanted by a waiting
        prompt) if there is such; False when there is none."""
        seq_id = self.slots.evict_lru(keep)
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
