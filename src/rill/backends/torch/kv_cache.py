"""The paged KV cache's memory: keys and values of every layer in one preallocated pool of
blocks, as the BlockManager hands them out.

Each layer's keys are [blocks, key heads, block_size, head_dim]: one block's positions of one
head lie together (block_size * head_dim values, 2 KB in bf16 for SmolLM2), so decode attention
gathers a sequence's keys a whole block-head at a time, straight into the [sequence, head,
position, dim] order its matmuls want, and a token's key is written at row
(block * heads + head) * block_size + offset of the layer viewed as [rows, head_dim].
"""

from __future__ import annotations

import numpy as np
import torch

from rill.backends.torch.blocks import BlockManager
from rill.backends.torch.weights import ModelSpec


class KVCache:
    def __init__(self, spec: ModelSpec, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device):
        shape = (spec.num_layers, num_blocks, spec.num_kv_heads, block_size, spec.head_dim)
        # empty, not zeros: blocks cost no memory until used (zero_touched zeroes them then)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.blocks = BlockManager(num_blocks, block_size)
        self.block_size = block_size
        self.num_heads = spec.num_kv_heads
        self._num_zeroed = 0

    @property
    def bytes_per_token(self) -> int:
        layers, _, heads, _, dim = self.k.shape
        return 2 * layers * heads * dim * self.k.element_size()

    def write_rows(self, slots: np.ndarray) -> np.ndarray:
        """Rows of a layer viewed as [rows, head_dim] where the tokens at these slots put their
        keys, token by token, head by head (the order of k.reshape(tokens * heads, head_dim))."""
        block, offset = np.divmod(slots, self.block_size)
        heads = np.arange(self.num_heads, dtype=np.int64)
        return ((block[:, None] * self.num_heads + heads) * self.block_size + offset[:, None]).reshape(-1)

    def block_rows(self, table: np.ndarray) -> np.ndarray:
        """Rows of a layer viewed as [block-heads, block_size * head_dim] holding these blocks
        ([..., num_blocks]), head-major: [..., heads, num_blocks] flattened."""
        heads = np.arange(self.num_heads, dtype=np.int64)[:, None]
        return (table[..., None, :] * self.num_heads + heads).reshape(-1)

    def prepare(self) -> None:
        """Before a step: zero blocks handed out for the first time, make the block copies
        copy-on-write asked for (in every layer at once)."""
        touched = self.blocks.num_touched
        if touched > self._num_zeroed:
            self.k[:, self._num_zeroed : touched].zero_()
            self.v[:, self._num_zeroed : touched].zero_()
            self._num_zeroed = touched
        copies, self.blocks.copies = self.blocks.copies, []
        if copies:
            src = torch.tensor([s for s, _ in copies], device=self.k.device)
            dst = torch.tensor([d for _, d in copies], device=self.k.device)
            self.k[:, dst] = self.k[:, src]
            self.v[:, dst] = self.v[:, src]
