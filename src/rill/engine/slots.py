"""The backend's sequence slots (seq_ids): which are in use, and what each idle one still holds.

A sequence that ends leaves its prompt's KV cache in its slot. The next prompt that starts with
the same tokens (a shared system prompt, the previous turn of the same chat) reuses that cache
and skips prefilling them. Idle caches are dropped least recently used first, when a slot or
cache memory is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EMPTY = np.zeros(0, np.int32)


def shared_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens two int32 arrays have in common (vectorised)."""
    n = min(a.size, b.size)
    if n == 0:
        return 0
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


@dataclass(slots=True)
class IdleSlot:
    seq_id: int
    tokens: np.ndarray  # what the backend's cache holds for seq_id, positions 0..len-1
    last_used: int  # a tick of the pool's clock: higher is more recent


class SlotPool:
    def __init__(self, size: int):
        self._idle = {i: IdleSlot(i, _EMPTY, 0) for i in range(size)}
        self._clock = 0

    @property
    def num_free(self) -> int:
        return len(self._idle)

    @property
    def num_cached_tokens(self) -> int:
        """Cache cells the idle slots still hold."""
        return sum(slot.tokens.size for slot in self._idle.values())

    @property
    def num_cached_slots(self) -> int:
        return sum(1 for slot in self._idle.values() if slot.tokens.size)

    def cached(self) -> dict[int, list[int]]:
        """What each idle slot's cache holds, for slots holding anything (inspection, tests)."""
        return {s.seq_id: s.tokens.tolist() for s in self._idle.values() if s.tokens.size}

    def lowest_free(self, avoid: frozenset[int] = frozenset(), above: int = -1) -> int:
        """The lowest free slot above `above` not in `avoid`; the lowest above `above` when all
        are avoided (-1: none free there)."""
        free = [i for i in self._idle if i > above]
        return min((i for i in free if i not in avoid), default=min(free, default=-1))

    def holds(self, seq_id: int) -> int:
        """How many tokens idle slot seq_id's cache holds."""
        return self._idle[seq_id].tokens.size

    def match(self, seq_id: int, prompt: np.ndarray) -> int:
        """How many leading tokens of prompt idle slot seq_id's cache holds."""
        return shared_prefix(self._idle[seq_id].tokens, prompt)

    def best_match(self, prompt: np.ndarray) -> tuple[int, int]:
        """The idle slot whose cache shares the longest prefix with prompt, and that length;
        (-1, 0) when none shares any. Among equals the least recently used is taken, since what
        its cache holds past the shared part is lost."""
        best, best_len = -1, 0
        for slot in self._idle.values():
            n = shared_prefix(slot.tokens, prompt)
            if n > best_len or (n == best_len and n and slot.last_used < self._idle[best].last_used):
                best, best_len = slot.seq_id, n
        return best, best_len

    def take(self, seq_id: int) -> np.ndarray:
        """Mark seq_id in use; returns what its cache holds (the caller trims what it doesn't need)."""
        return self._idle.pop(seq_id).tokens

    def victim(self, exclude: tuple[int, ...] = ()) -> int | None:
        """The idle slot whose cache is worth least: an empty one, else the least recently used."""
        candidates = [s for s in self._idle.values() if s.seq_id not in exclude]
        if not candidates:
            return None
        return min(candidates, key=lambda s: (s.tokens.size > 0, s.last_used)).seq_id

    def worth_less(self, a: int, b: int) -> bool:
        """Whether idle slot a's cache is worth less than idle slot b's (empty, or older)."""
        sa, sb = self._idle[a], self._idle[b]
        return (sa.tokens.size > 0, sa.last_used) < (sb.tokens.size > 0, sb.last_used)

    def copied(self, src: int, dst: int) -> None:
        """The backend copied idle slot src's cache into idle slot dst."""
        s = self._idle[src]
        self._idle[dst] = IdleSlot(dst, s.tokens, s.last_used)

    def moved(self, src: int, dst: int) -> None:
        """Idle slot src's cache now lies in slot dst, which a running sequence left for src:
        src is in use, dst idle, and the cache keeps its age."""
        s = self._idle.pop(src)
        self._idle[dst] = IdleSlot(dst, s.tokens, s.last_used)

    def give_back(self, seq_id: int, tokens: np.ndarray = _EMPTY) -> None:
        """seq_id is free again; its cache holds `tokens` (empty: the caller released it)."""
        self._clock += 1
        self._idle[seq_id] = IdleSlot(seq_id, tokens, self._clock)

    def evict_lru(self, keep: frozenset[int] = frozenset()) -> int | None:
        """Forget the least recently used idle cache, one not in `keep` while there is such;
        returns its seq_id for the backend to release, or None when no idle slot holds anything."""
        cached = [s for s in self._idle.values() if s.tokens.size]
        if not cached:
            return None
        slot = min(cached, key=lambda s: (s.seq_id in keep, s.last_used))
        slot.tokens = _EMPTY
        return slot.seq_id
