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
    """RMSNorm computed in float32 whatever x's dtype, as the reference implementations do."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


class Rotary:
    """Rotary position embedding, Hugging Face's half-split form, tables for every position."""

    def __init__(self, head_dim: int, theta: float, max_positions: int, device: torch.device,
                 factors: torch.Tensor | None = None):
        inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        if factors is not None:  # Llama 3.1's long-context scaling, as GGUF's rope_freqs stores it
            inv = inv / factors.double().cpu()
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv)
        self.cos = angles.cos().float().to(device)
        self.sin = angles.sin().float().to(device)

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin at each token's position, shaped to broadcast over heads: [N, 1, D/2]."""
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [N, heads, D] rotated by the tables (in float32, back in x's dtype)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


@dataclass(frozen=True, slots=True)
class Span:
    """A multi-token item: its rows of the flat batch and the keys its queries see."""

    first: int
    last: int  # one past its last row
    key_slots: torch.Tensor  # [L] cache slots of the sequence's positions 0..L-1
    mask: torch.Tensor | None  # [T, L] bool, True where a query sees a key; None: plain causal (T == L)


@dataclass(frozen=True, slots=True)
class AttentionBatch:
    """Where one step's tokens write their keys and values, and which ones each token reads."""

    slots: torch.Tensor  # [N] the cache slot of every computed token
    num_decode: int  # the first num_decode rows are one-token items
    decode_slots: torch.Tensor | None  # [B, L] their keys' slots, padded to the longest
    decode_bias: torch.Tensor | None  # [B, 1, 1, L] float32: 0 on keys, -inf on padding
    spans: tuple[Span, ...]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
              v_cache: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
    """Write k and v ([N, KVH, D]) to the cache, then attend: q [N, H, D] -> [N, H, D].
    Grouped-query heads are SDPA's enable_gqa (each key head serves H / KVH query heads)."""
    k_cache.index_copy_(0, batch.slots, k)
    v_cache.index_copy_(0, batch.slots, v)
    outs = []
    if batch.num_decode:
        outs.append(_decode_attention(q[: batch.num_decode], k_cache[batch.decode_slots],
                                      v_cache[batch.decode_slots], batch.decode_bias))
    for span in batch.spans:
        keys = k_cache[span.key_slots].transpose(0, 1).unsqueeze(0)  # [1, KVH, L, D]
        values = v_cache[span.key_slots].transpose(0, 1).unsqueeze(0)
        queries = q[span.first : span.last].transpose(0, 1).unsqueeze(0)  # [1, H, T, D]
        o = F.scaled_dot_product_attention(queries, keys, values, attn_mask=span.mask,
                                           is_causal=span.mask is None, enable_gqa=True)
        outs.append(o[0].transpose(0, 1))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                      bias: torch.Tensor) -> torch.Tensor:
    """One query per sequence: q [B, H, D], keys and values [B, L, KVH, D] -> [B, H, D], as two
    batched matmuls. (SDPA's CPU flash kernel, built for long queries, took ~0.8 ms a layer for
    16 one-token queries of ~50 keys; this takes a fraction.)"""
    b, h, d = q.shape
    kvh = keys.shape[2]
    queries = q.view(b, kvh, h // kvh, d)  # the query heads each key head serves
    scores = torch.matmul(queries, keys.permute(0, 2, 3, 1)).float() * d**-0.5  # [B, KVH, G, L]
    weights = torch.softmax(scores + bias, dim=-1).to(values.dtype)
    return torch.matmul(weights, values.transpose(1, 2)).reshape(b, h, d)
