"""What each replica's prefix cache probably holds: the chained hashes of the conversation blocks
routed to it lately, in a bounded LRU per replica.

A block is BLOCK_CHARS characters of the conversation text (routing_key.py), about 16 tokens; its
hash covers every block before it, so a replica "holds" a request's first n blocks when it holds
its n-th. Blocks are stored last to first, so that eviction drops a conversation's tail before its
head, as an engine's LRU prefix cache does. Each replica's index starts at MAX_BLOCKS and learns
the replica's real size from what the replica reports (`cached_tokens`): a predicted hit that
did not happen shrinks it, hits as predicted let it grow back (learn()).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

BLOCK_CHARS = 64
MAX_BLOCKS = 16_384  # per replica: 1 MiB of text, ~260k tokens (a CPU replica's KV cache is less)
MIN_BLOCKS = 256
SHRINK, GROW = 0.7, 1.02  # the index's size after a miss / a hit as predicted


def block_hashes(text: str) -> list[bytes]:
    """The chained hash of every whole block of text (a partial last block is not cached whole
    by the engine either)."""
    out: list[bytes] = []
    previous = b""
    data = text.encode("utf-8", "surrogatepass")
    for start in range(0, len(data) - BLOCK_CHARS + 1, BLOCK_CHARS):
        previous = hashlib.blake2b(previous + data[start:start + BLOCK_CHARS], digest_size=8).digest()
        out.append(previous)
    return out


class ReplicaIndex:
    """One replica's blocks, least recently routed first."""

    def __init__(self, max_blocks: int = MAX_BLOCKS):
        self._blocks: OrderedDict[bytes, None] = OrderedDict()
        self.max_blocks = max_blocks
        self.capacity = float(max_blocks)  # learned: what the replica seems to keep

    def __len__(self) -> int:
        return len(self._blocks)

    def match(self, hashes: list[bytes]) -> int:
        """How many leading blocks of hashes this replica holds."""
        n = 0
        for h in hashes:
            if h not in self._blocks:
                break
            n += 1
        return n

    def has(self, key: bytes) -> bool:
        return key in self._blocks

    def insert(self, hashes: list[bytes], head: bytes = b"") -> None:
        """A request's blocks, and its conversation's head_key (routing.py), as most recent."""
        blocks = self._blocks
        for h in (*reversed(hashes), *((head,) if head else ())):  # the start ends most recent: evicted last
            blocks[h] = None
            blocks.move_to_end(h)
        self._evict()

    def learn(self, predicted: int, held: int) -> None:
        """The replica held `held` of the `predicted` blocks the index said it would: fewer means
        it evicts sooner than the index does."""
        if held < predicted:
            self.capacity = max(MIN_BLOCKS, min(self.capacity, len(self._blocks)) * SHRINK)
            self._evict()
        elif predicted:
            self.capacity = min(self.max_blocks, self.capacity * GROW)

    def clear(self) -> None:
        self._blocks.clear()

    def _evict(self) -> None:
        blocks, limit = self._blocks, int(self.capacity)
        while len(blocks) > limit:
            blocks.popitem(last=False)
