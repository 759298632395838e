"""The paged KV cache's bookkeeping: which cache blocks hold which sequence's positions.

The cache is a pool of fixed-size blocks (as in vLLM's PagedAttention and nano-vllm's block
manager); each sequence has a block table, the blocks its positions 0, 1, 2... live in. A block
that fills up is named by a hash of every token up to its end, so a later sequence whose prompt
starts the same way maps the same blocks instead of computing them again (prefix sharing).
Blocks are reference-counted: `copy` (a second choice of `n > 1`, a cache moved between slots)
shares all of them, and the first write into a shared block copies it first (copy-on-write).
A block nobody references keeps its contents while it is named, for a later prompt to reuse, and
is evicted (least recently freed first) only when no unnamed block is left.

This module knows nothing of tensors: it hands out slot numbers (block * block_size + offset)
and the copies to make; the backend moves the data.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from rill.backends.base import KVCacheFull, swap_entries

BLOCK_SIZE = 16  # positions per block: vLLM's default, small enough that sharing wastes little


def block_hash(previous: bytes, tokens: np.ndarray) -> bytes:
    """A block's name: the hash of its tokens chained to the previous block's name, so it
    names the whole prefix up to the block's end."""
    return hashlib.blake2b(previous + tokens.astype(np.int32).tobytes(), digest_size=16).digest()


@dataclass(slots=True)
class SequenceBlocks:
    blocks: list[int] = field(default_factory=list)  # the block table
    tokens: list[int] = field(default_factory=list)  # the token at every cached position
    hashes: list[bytes] = field(default_factory=list)  # names of the full blocks, in order


@dataclass(frozen=True, slots=True)
class Placed:
    """Where one append's tokens go: the first `num_reused` were found cached (shared blocks,
    nothing to compute); the rest are written at `slots`."""

    num_reused: int
    slots: np.ndarray  # int64 cache slots of tokens[num_reused:]


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int = BLOCK_SIZE):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.refs = np.zeros(num_blocks, np.int32)
        # Released blocks that hold no name, reused last freed first: likeliest still in the
        # CPU's caches
        self._free: list[int] = []
        self._cached: OrderedDict[int, None] = OrderedDict()  # named, unreferenced: evictable, LRU first
        self._name: dict[int, bytes] = {}  # block -> its name, for named blocks
        self._by_name: dict[bytes, int] = {}
        self.seqs: dict[int, SequenceBlocks] = {}
        self.copies: list[tuple[int, int]] = []  # (src, dst) block copies the backend must make first
        self.num_hits = 0  # blocks found by name instead of computed
        # Blocks 0..num_touched-1 have been handed out at least once; the rest never were, and
        # are taken in order only when no released block is left
        self.num_touched = 0

    # ---- queries -------------------------------------------------------------------------------

    @property
    def num_available(self) -> int:
        """Blocks an allocation may take: never-named ones and evictable named ones."""
        return len(self._free) + self.num_blocks - self.num_touched + len(self._cached)

    def length(self, seq_id: int) -> int:
        seq = self.seqs.get(seq_id)
        return len(seq.tokens) if seq else 0

    def slots(self, seq_id: int, length: int | None = None) -> np.ndarray:
        """The cache slots of a sequence's positions 0..length-1 (default: all), int64."""
        seq = self.seqs[seq_id]
        n = len(seq.tokens) if length is None else length
        blocks = np.asarray(seq.blocks[: -(-n // self.block_size)], np.int64)
        offsets = np.arange(self.block_size, dtype=np.int64)
        return (blocks[:, None] * self.block_size + offsets).reshape(-1)[:n]

    def block_table(self, seq_id: int) -> list[int]:
        """The blocks a sequence's positions live in, in order (the last maybe part full)."""
        return self.seqs[seq_id].blocks

    def blocks_needed(self, seq_id: int, start: int, num_tokens: int) -> int:
        """An upper bound on the blocks appending num_tokens at start takes (no prefix found)."""
        seq = self.seqs.get(seq_id)
        bs = self.block_size
        held = min(len(seq.blocks), -(-start // bs)) if seq else 0  # what it holds up to start
        needed = max(0, -(-(start + num_tokens) // bs) - held)
        if seq and start % bs and self._copied_on_write(seq.blocks[start // bs]):
            needed += 1  # the copy of the block the first token goes into
        return needed

    def mappable(self, seq_id: int, tokens: np.ndarray, start: int, reusable: int) -> int:
        """How many leading tokens append(seq_id, tokens, start, reusable=reusable) would map
        from named blocks, changing nothing."""
        bs = self.block_size
        seq = self.seqs.get(seq_id)
        hashes = seq.hashes[: start // bs] if seq is not None and start <= len(seq.tokens) else []
        if start % bs or reusable < bs or len(hashes) != start // bs:
            return 0
        mapped = 0
        previous = hashes[-1] if hashes else b""
        while mapped + bs <= reusable:
            name = block_hash(previous, tokens[mapped : mapped + bs])
            if name not in self._by_name:
                break
            previous = name
            mapped += bs
        return mapped

    # ---- changes -------------------------------------------------------------------------------

    def append(self, seq_id: int, tokens: np.ndarray, start: int, *, reusable: int = 0) -> Placed:
        """Give tokens (at positions start...) their cache slots. The first `reusable` of them may
        be taken from named blocks instead (whole blocks only, from a block boundary on).
        Raises KVCacheFull, changing nothing, when the pool cannot hold them. Once the tokens
        are computed, `computed` names the blocks they filled."""
        seq = self.seqs.setdefault(seq_id, SequenceBlocks())
        if start != len(seq.tokens):
            if start > len(seq.tokens):
                raise ValueError(f"sequence {seq_id} holds {len(seq.tokens)} positions, cannot append at {start}")
            self.truncate(seq_id, start)
        if self.blocks_needed(seq_id, start, len(tokens)) > self.num_available:
            raise KVCacheFull(f"no free KV blocks for {len(tokens)} more tokens")
        reused = self._reuse(seq, tokens, reusable)
        bs = self.block_size
        out = np.empty(len(tokens) - reused, np.int64)
        for i, pos in enumerate(range(start + reused, start + len(tokens))):
            index, offset = divmod(pos, bs)
            if index == len(seq.blocks):
                seq.blocks.append(self._take())
            elif i == 0:
                self._own(seq, index)  # the first write lands in a block the sequence holds
            out[i] = seq.blocks[index] * bs + offset
        seq.tokens.extend(tokens[reused:].tolist())
        return Placed(reused, out)

    def computed(self, seq_id: int) -> None:
        """The sequence's appended positions hold their keys and values now: name its full
        blocks, so later prompts can share them (never before: a failed step would leave
        names on garbage)."""
        seq = self.seqs.get(seq_id)
        if seq is not None:
            self._name_full_blocks(seq)

    def copy(self, src: int, dst: int) -> None:
        """dst holds what src holds, sharing every block."""
        self.release(dst)
        source = self.seqs.get(src)
        if source is None:
            return
        for b in source.blocks:
            self._ref(b)
        self.seqs[dst] = SequenceBlocks(list(source.blocks), list(source.tokens), list(source.hashes))

    def swap(self, a: int, b: int) -> None:
        """a and b exchange their blocks (tables only: nothing is copied)."""
        swap_entries(self.seqs, a, b)

    def truncate(self, seq_id: int, keep: int) -> None:
        """Keep positions 0..keep-1. A block cut in two stays as it is, name and all, for other
        prompts that begin as it does: the next write into it copies it first (as into a shared
        block), so a prompt that took an idle slot's cache and rewrote its tail does not break
        the chain of names of the prompt that was there."""
        seq = self.seqs.get(seq_id)
        if seq is None or keep >= len(seq.tokens):
            return
        bs = self.block_size
        num_blocks = -(-keep // bs)
        for b in seq.blocks[num_blocks:]:
            self._unref(b)
        del seq.blocks[num_blocks:]
        del seq.tokens[keep:]
        del seq.hashes[keep // bs :]

    def release(self, seq_id: int) -> None:
        seq = self.seqs.pop(seq_id, None)
        if seq is not None:
            for b in seq.blocks:
                self._unref(b)

    # ---- internals -----------------------------------------------------------------------------

    def _reuse(self, seq: SequenceBlocks, tokens: np.ndarray, reusable: int) -> int:
        """Map named blocks for the leading whole blocks of tokens; how many tokens that covers."""
        bs = self.block_size
        start = len(seq.tokens)
        if start % bs or reusable < bs or len(seq.hashes) != start // bs:
            return 0
        reused = 0
        previous = seq.hashes[-1] if seq.hashes else b""
        while reused + bs <= reusable:
            name = block_hash(previous, tokens[reused : reused + bs])
            block = self._by_name.get(name)
            if block is None:
                break
            self._ref(block)
            seq.blocks.append(block)
            seq.hashes.append(name)
            seq.tokens.extend(tokens[reused : reused + bs].tolist())
            previous = name
            reused += bs
            self.num_hits += 1
        return reused

    def _name_full_blocks(self, seq: SequenceBlocks) -> None:
        bs = self.block_size
        while len(seq.hashes) < len(seq.tokens) // bs:
            i = len(seq.hashes)
            previous = seq.hashes[-1] if seq.hashes else b""
            name = block_hash(previous, np.asarray(seq.tokens[i * bs : (i + 1) * bs], np.int32))
            seq.hashes.append(name)
            block = seq.blocks[i]
            if name not in self._by_name and block not in self._name:
                self._by_name[name] = block
                self._name[block] = name

    def _copied_on_write(self, block: int) -> bool:
        """Whether a write into this block goes to a copy: it is shared, or it is named (a full
        block the sequence was truncated into) and others may still map it."""
        return self.refs[block] > 1 or block in self._name

    def _own(self, seq: SequenceBlocks, index: int) -> None:
        """Before writing into block `index`: a shared or named block is copied first."""
        block = seq.blocks[index]
        if self._copied_on_write(block):
            fresh = self._take()
            self.copies.append((block, fresh))
            self._unref(block)
            seq.blocks[index] = fresh

    def _take(self) -> int:
        if self._free:
            block = self._free.pop()
        elif self.num_touched < self.num_blocks:
            block = self.num_touched
            self.num_touched += 1
        else:
            block, _ = self._cached.popitem(last=False)  # evict the least recently freed
            self._forget_name(block)
        self.refs[block] = 1
        return block

    def _ref(self, block: int) -> None:
        if self.refs[block] == 0:
            self._cached.pop(block, None)
        self.refs[block] += 1

    def _unref(self, block: int) -> None:
        self.refs[block] -= 1
        if self.refs[block] == 0:
            if block in self._name:
                self._cached[block] = None
            else:
                self._free.append(block)

    def _forget_name(self, block: int) -> None:
        name = self._name.pop(block, None)
        if name is not None and self._by_name.get(name) == block:
            del self._by_name[name]
