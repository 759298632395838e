"""The pieces of a Llama block that are not kernels.py's operations: oneDNN-packed linears, the
rotary tables, and attention over a ragged batch read from the paged KV cache.

A step's tokens are one flat [N, ...] batch for every matmul. Attention alone needs to know
whose keys a token sees: the one-token items (decoding sequences) share one decode-attention
call over their block tables; each multi-token item (a prefill chunk, a verification of
predicted tokens) gets an SDPA call of its own with a causal mask offset by what the sequence
already holds. So a mixed step computes no padded queries at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F


@cache
def _packable(dtype: torch.dtype) -> bool:
    """Whether oneDNN packs weights of this dtype here: bf16 needs AVX512 (BW, VL, DQ) or
    AVX-NE-CONVERT; an AVX2-only CPU multiplies bf16 through PyTorch's own, unpacked path."""
    if not torch.backends.mkldnn.is_available():
        return False
    return dtype is torch.float32 or (dtype is torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Linear:
    """y = x W^T (+ b). On a CPU with oneDNN, W is packed once into oneDNN's blocked layout:
    1.2-1.7x faster than F.linear at the 16 rows of a decode step and up to 1.2x at the 480 of
    a prompt, on 2 cores with AMX (docs/torch-backend.md). The packing's rows hint of 1 was the
    fastest for both: packed for 16 rows, the 576-wide outputs took 1.4x as long at 480."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.bias = bias
        self.out_features = weight.shape[0]
        self.packed = None
        self.weight: torch.Tensor | None = weight
        if weight.device.type == "cpu" and _packable(weight.dtype):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)
            self.weight = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


class Rotary:
    """Rotary position embedding tables, Hugging Face's half-split form, for every position:
    x' = x * cos + roll(x, D/2) * sin', the tables repeated over both halves and sin' negated on
    the first, so a rotation is two multiplies and a roll (kernels.py's rope_store)."""

    def __init__(self, head_dim: int, theta: float, max_positions: int, device: torch.device,
                 factors: torch.Tensor | None = None):
        inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        if factors is not None:  # Llama 3.1's long-context scaling, as GGUF's rope_freqs stores it
            inv = inv / factors.double().cpu()
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv)
        self.cos = torch.cat([angles.cos(), angles.cos()], -1).float().to(device)
        self.sin = torch.cat([-angles.sin(), angles.sin()], -1).float().to(device)


@dataclass(frozen=True, slots=True)
class Span:
    """A multi-token item: its rows of the flat batch and the keys its queries see."""

    first: int
    last: int  # one past its last row
    key_rows: torch.Tensor  # the block-head rows of the sequence's blocks (KVCache.block_rows)
    num_keys: int  # L: its positions 0..L-1
    mask: torch.Tensor | None  # [T, L] added to the scores: 0 where a query sees a key, else -inf; None: causal (T == L)


@dataclass(frozen=True, slots=True)
class AttentionBatch:
    """Where one step's tokens write their keys and values, and which ones each token reads. The
    native kernels take slots, block tables and lengths; the PyTorch ops the rows and bias made
    from them (kernels.py), so each field the other kind needs is None."""

    slots: torch.Tensor | None  # [N] the cache slot of every computed token (block * block_size + offset)
    key_index: torch.Tensor | None  # [N * KVH * D] the same as elements of a layer's flattened keys
    value_rows: torch.Tensor | None  # [N * KVH] and as rows of a layer's values viewed as [rows, D]
    num_decode: int  # the first num_decode rows are one-token items
    decode_tables: torch.Tensor | None  # [B, W] their block tables, padded with block 0
    decode_lengths: torch.Tensor | None  # [B] their numbers of keys
    decode_rows: torch.Tensor | None  # [B * KVH * W] the tables' block-head rows
    decode_bias: torch.Tensor | None  # [B, 1, 1, W * block_size] float32: 0 on keys, -inf past them
    spans: tuple[Span, ...]


def attention(qk: torch.Tensor, qkv: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              batch: AttentionBatch, ops) -> torch.Tensor:
    """The step's rotated queries and keys qk [N, H + KVH, D] (the values are the last KVH * D
    columns of qkv) over the layer's cache (kv_cache.py's layout), which already holds them ->
    [N, H, D]. The decoding sequences in one call of the ops' decode attention; each
    multi-token item (a prefill chunk, a verification of predicted tokens) in an SDPA call of
    its own, with a causal mask offset by what its sequence already holds: a mixed step
    computes no padded query rows. A prompt computed whole in this step reads its keys and
    values from the step's own rows, not back from the cache. Grouped-query heads: each key
    head serves H / KVH query heads."""
    _, kvh, block_size, d = v_cache.shape
    h = qk.shape[1] - kvh
    scale = d**-0.5
    outs = []
    if batch.num_decode:
        outs.append(ops.decode_attention(qk[: batch.num_decode, :h], k_cache, v_cache, batch, scale))
    for span in batch.spans:
        if span.num_keys == span.last - span.first:  # the whole sequence is in this step
            rows = slice(span.first, span.last)
            keys = qk[rows, h:].transpose(0, 1).unsqueeze(0)  # [1, KVH, L, D]
            values = qkv[rows, (h + kvh) * d :].view(-1, kvh, d).transpose(0, 1).unsqueeze(0)
        else:
            keys = (_gather(k_cache, span.key_rows).view(kvh, -1, d, block_size).transpose(2, 3)  # dim-major blocks
                    .reshape(1, kvh, -1, d)[:, :, : span.num_keys])  # [1, KVH, L, D]
            values = _gather(v_cache, span.key_rows).view(1, kvh, -1, d)[:, :, : span.num_keys]
        queries = qk[span.first : span.last, :h].transpose(0, 1).unsqueeze(0)  # [1, H, T, D]
        o = F.scaled_dot_product_attention(queries, keys, values, attn_mask=span.mask,
                                           is_causal=span.mask is None, enable_gqa=True)
        outs.append(o[0].transpose(0, 1))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _gather(cache: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Whole block-heads of a layer's keys or values, in the order of rows: [len(rows), block_size * D]."""
    blocks, kvh = cache.shape[:2]
    return cache.view(blocks * kvh, -1).index_select(0, rows)
