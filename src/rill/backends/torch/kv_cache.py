"""The paged KV cache's memory: keys and values of every layer in one preallocated pool of
blocks, addressed by slot (block * block_size + offset) as the BlockManager hands them out."""

from __future__ import annotations

import torch

from rill.backends.torch.blocks import BlockManager
from rill.backends.torch.weights import ModelSpec


class KVCache:
    def __init__(self, spec: ModelSpec, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device):
        shape = (spec.num_layers, num_blocks * block_size, spec.num_kv_heads, spec.head_dim)
        # empty, not zeros: untouched blocks cost no memory until used (and are never read)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.blocks = BlockManager(num_blocks, block_size)
        self.block_size = block_size

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.k[0, 0].numel() * self.k.element_size() * self.k.shape[0]

    def apply_copies(self) -> None:
        """Make the block copies copy-on-write asked for, in every layer at once."""
        copies, self.blocks.copies = self.blocks.copies, []
        if not copies:
            return
        offsets = torch.arange(self.block_size)
        src = torch.tensor([s for s, _ in copies])[:, None] * self.block_size + offsets
        dst = torch.tensor([d for _, d in copies])[:, None] * self.block_size + offsets
        src, dst = src.reshape(-1).to(self.k.device), dst.reshape(-1).to(self.k.device)
        self.k[:, dst] = self.k[:, src]
        self.v[:, dst] = self.v[:, src]
