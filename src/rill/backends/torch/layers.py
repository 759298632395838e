"""The pieces of a Llama block as functions of plain tensors: RMSNorm, the rotary embedding, and
attention over a ragged batch read from the paged KV cache.

A step's tokens are one flat [N, ...] batch for every matmul. Attention alone needs to know
whose keys a token sees: the one-token items (decoding sequences) share one SDPA call over their
keys gathered from the cache and padded to the longest; each multi-token item (a prefill chunk,
a verification of predicted tokens) gets a call of its own with a causal mask offset by what the
sequence already holds. So a mixed step computes no padded queries at all, and pads keys only
among the decoding sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


class Linear:
    """y = x W^T (+ b). On a CPU with oneDNN, W is packed once into oneDNN's blocked layout:
    1.3-2.5x faster than F.linear at the few rows of a decode step (measured on 2 cores:
    docs/torch-backend.md)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.bias = bias
        self.out_features = weight.shape[0]
        self.packed = None
        self.weight: torch.Tensor | None = weight
        if (weight.device.type == "cpu" and torch.backends.mkldnn.is_available()
                and weight.dtype in (torch.float32, torch.bfloat16)):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 16)  # 16: a rows hint
            self.weight = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension: PyTorch's fused kernel, which accumulates in float32 and
    rounds once, whatever x's dtype (closer to a float64 reference in bf16 than normalising and
    weighting in two roundings)."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


class Rotary:
    """Rotary position embedding, Hugging Face's half-split form, tables for every position:
    x' = x * cos + roll(x, D/2) * sin', with the tables already repeated over both halves and
    sin' negated on the first, so a rotation is two multiplies and a roll."""

    def __init__(self, head_dim: int, theta: float, max_positions: int, device: torch.device,
                 factors: torch.Tensor | None = None):
        inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        if factors is not None:  # Llama 3.1's long-context scaling, as GGUF's rope_freqs stores it
            inv = inv / factors.double().cpu()
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv)
        self.cos = torch.cat([angles.cos(), angles.cos()], -1).float().to(device)
        self.sin = torch.cat([-angles.sin(), angles.sin()], -1).float().to(device)

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin' at each token's position, shaped to broadcast over heads: [N, 1, D]."""
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [N, heads, D] rotated by the tables (in float32, back in x's dtype)."""
    xf = x.float()
    return torch.addcmul(xf * cos, xf.roll(x.shape[-1] // 2, -1), sin).to(x.dtype)


@dataclass(frozen=True, slots=True)
class Span:
    """A multi-token item: its rows of the flat batch and the keys its queries see."""

    first: int
    last: int  # one past its last row
    key_rows: torch.Tensor  # the block-head rows of the sequence's blocks (KVCache.block_rows)
    num_keys: int  # L: its positions 0..L-1
    mask: torch.Tensor | None  # [T, L] bool, True where a query sees a key; None: plain causal (T == L)


@dataclass(frozen=True, slots=True)
class AttentionBatch:
    """Where one step's tokens write their keys and values, and which ones each token reads."""

    write_rows: torch.Tensor  # [N * KVH] where every computed token's keys go (KVCache.write_rows)
    num_decode: int  # the first num_decode rows are one-token items
    decode_rows: torch.Tensor | None  # [B * KVH * nb] their blocks' block-head rows, padded to nb each
    decode_bias: torch.Tensor | None  # [B, 1, 1, nb * block_size] float32: 0 on keys, -inf past them
    spans: tuple[Span, ...]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
              v_cache: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
    """Write k and v ([N, KVH, D]) to the layer's cache ([blocks, KVH, block_size, D]), then
    attend: q [N, H, D] -> [N, H, D]. Grouped-query heads: each key head serves H / KVH query
    heads."""
    _, kvh, block_size, d = k_cache.shape
    k_cache.view(-1, d).index_copy_(0, batch.write_rows, k.reshape(-1, d))
    v_cache.view(-1, d).index_copy_(0, batch.write_rows, v.reshape(-1, d))
    outs = []
    if batch.num_decode:
        b = batch.num_decode
        outs.append(_decode_attention(q[:b], _gather(k_cache, batch.decode_rows).view(b, kvh, -1, d),
                                      _gather(v_cache, batch.decode_rows).view(b, kvh, -1, d), batch.decode_bias))
    for span in batch.spans:
        keys = _gather(k_cache, span.key_rows).view(1, kvh, -1, d)[:, :, : span.num_keys]  # [1, KVH, L, D]
        values = _gather(v_cache, span.key_rows).view(1, kvh, -1, d)[:, :, : span.num_keys]
        queries = q[span.first : span.last].transpose(0, 1).unsqueeze(0)  # [1, H, T, D]
        o = F.scaled_dot_product_attention(queries, keys, values, attn_mask=span.mask,
                                           is_causal=span.mask is None, enable_gqa=True)
        outs.append(o[0].transpose(0, 1))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _gather(cache: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Whole block-heads of a layer's cache, in the order of rows: [len(rows), block_size * D]."""
    blocks, kvh, block_size, d = cache.shape
    return cache.view(blocks * kvh, block_size * d).index_select(0, rows)


def _decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                      bias: torch.Tensor) -> torch.Tensor:
    """One query per sequence: q [B, H, D], keys and values [B, KVH, L, D] (contiguous, as
    gathered) -> [B, H, D], as two batched matmuls. (SDPA's CPU flash kernel, built for long
    queries, took ~0.8 ms a layer for 16 one-token queries of ~50 keys; this takes a fraction.)"""
    b, h, d = q.shape
    kvh = keys.shape[1]
    queries = q.view(b, kvh, h // kvh, d)  # the query heads each key head serves
    scores = torch.matmul(queries, keys.transpose(-1, -2)).float() * d**-0.5  # [B, KVH, G, L]
    weights = torch.softmax(scores + bias, dim=-1).to(values.dtype)
    return torch.matmul(weights, values).reshape(b, h, d)
