"""The paged KV cache's memory: keys and values of every layer in one preallocated pool of
blocks, as the BlockManager hands them out.

A layer's values are [blocks, key heads, block_size, head_dim] and its keys [blocks, key heads,
head_dim, block_size]: one block's positions of one head lie together (block_size * head_dim
values, 2 KB in bf16 for SmolLM2), so attention reads a sequence's keys a whole block-head at a
time. Keys are dim-major inside their block: the scores of a block's 16 keys are then head_dim
vector multiply-adds with a key in each lane (kernels.cpp), and a token's key is one column of
its block. A token's value is row (block * heads + head) * block_size + offset of the layer
viewed as [rows, head_dim].
"""

from __future__ import annotations

import mmap
import math

import numpy as np
import torch

from rill.backends.torch.blocks import BlockManager
from rill.backends.torch.weights import ModelSpec


class KVCache:
    def __init__(self, spec: ModelSpec, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device):
        layers, heads, dim = spec.num_layers, spec.num_kv_heads, spec.head_dim
        # one block more than the manager hands out: the scratch block, where the padding rows
        # of a CUDA graph's fixed-size step write and read (backend.py's _place)
        self.scratch_block = num_blocks
        self.k = zeroed((layers, num_blocks + 1, heads, dim, block_size), dtype, device)
        self.v = zeroed((layers, num_blocks + 1, heads, block_size, dim), dtype, device)
        self.blocks = BlockManager(num_blocks, block_size)
        self.block_size = block_size
        self.num_heads = spec.num_kv_heads

    @property
    def bytes_per_token(self) -> int:
        layers, _, heads, _, dim = self.v.shape
        return 2 * layers * heads * dim * self.v.element_size()

    def value_rows(self, slots: np.ndarray) -> np.ndarray:
        """Rows of a layer's values viewed as [rows, head_dim] where the tokens at these slots
        put theirs, token by token, head by head (the order of v.reshape(tokens * heads, dim))."""
        block, offset = np.divmod(slots, self.block_size)
        heads = np.arange(self.num_heads, dtype=np.int64)
        return ((block[:, None] * self.num_heads + heads) * self.block_size + offset[:, None]).reshape(-1)

    def key_index(self, slots: np.ndarray) -> np.ndarray:
        """Elements of a layer's keys, flattened, where the tokens at these slots put theirs, in
        the order of k.reshape(-1) for k [tokens, heads, head_dim]."""
        block, offset = np.divmod(slots, self.block_size)
        heads = np.arange(self.num_heads, dtype=np.int64)[:, None]
        dims = np.arange(self.v.shape[-1], dtype=np.int64)
        columns = (block[:, None, None] * self.num_heads + heads) * self.v.shape[-1] + dims  # [N, KVH, D]
        return (columns * self.block_size + offset[:, None, None]).reshape(-1)

    def block_rows(self, table: np.ndarray) -> np.ndarray:
        """Rows of a layer viewed as [block-heads, block_size * head_dim] holding these blocks
        ([..., num_blocks]), head-major: [..., heads, num_blocks] flattened."""
        heads = np.arange(self.num_heads, dtype=np.int64)[:, None]
        return (table[..., None, :] * self.num_heads + heads).reshape(-1)

    def prepare(self) -> None:
        """Before a step: make the block copies copy-on-write asked for (in every layer at once)."""
        copies, self.blocks.copies = self.blocks.copies, []
        if copies:
            src = torch.tensor([s for s, _ in copies], device=self.k.device)
            dst = torch.tensor([d for _, d in copies], device=self.k.device)
            self.k[:, dst] = self.k[:, src]
            self.v[:, dst] = self.v[:, src]


def zeroed(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A tensor of zeros. On the CPU its memory is committed as blocks are first written, not
    at start-up: an anonymous mapping reads as zeros by definition (attention reads whole
    blocks and masks their unwritten tail, and 0 * NaN would not be 0), and the kernel backs it
    with 2 MB pages where it may, so a first write costs one fault per 2 MB (~5 GB/s of zeroing
    here) rather than one per 4 KB page. An idle server holds only the blocks it has used (a
    default SmolLM2 server: ~0.8 GB resident instead of 2.3 GB); under varied traffic the prefix
    cache keeps blocks named, new prompts take never-used blocks first, and the whole cache
    becomes resident, as llama.cpp's and vLLM's are from the start."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        memory.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(memory, dtype=dtype).view(shape)  # the tensor keeps the mapping alive
