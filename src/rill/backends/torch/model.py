"""A Llama-family decoder (Llama 2/3, SmolLM2, Mistral, Qwen2/2.5, Qwen3) as a forward function
over one flat batch of tokens, in the spirit of gpt-fast and nano-vllm: weights are plain
tensors, one dict per layer, so the whole model reads top to bottom in one screen."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from rill.backends.torch.kv_cache import KVCache
from rill.backends.torch.layers import AttentionBatch, Linear, Rotary, attention, rms_norm, rotate
from rill.backends.torch.weights import ModelSpec


class LlamaModel:
    def __init__(self, spec: ModelSpec, tensors: Iterable[tuple[str, np.ndarray]], *,
                 dtype: torch.dtype, device: torch.device, max_positions: int):
        self.spec, self.dtype, self.device, self.max_positions = spec, dtype, device, max_positions
        weights: dict[str, torch.Tensor] = {}
        for name, array in tensors:  # converted one by one: never the whole model in float32
            writable = array if array.flags.writeable else array.copy()  # GGUF F32 tensors are memory-mapped
            weights[name] = torch.from_numpy(writable).to(device=device, dtype=dtype)
        factors = weights.pop("rope_factors", None)
        self.embed = weights.pop("embed")
        lm_head = weights.pop("lm_head", self.embed)
        self.norm = weights.pop("norm")
        self.layers = [{key.split(".", 2)[2]: weights.pop(key) for key in list(weights)
                        if key.startswith(f"layers.{i}.")} for i in range(spec.num_layers)]
        for w in self.layers:
            w["qkv"] = Linear(w.pop("wqkv"), w.pop("bqkv", None))
            for name in ("wo", "w_gate_up", "w_down"):
                w[name] = Linear(w[name])
        self.output = Linear(lm_head)
        if weights:
            raise ValueError(f"unused weights: {sorted(weights)[:5]}")
        self.rotary = Rotary(spec.head_dim, spec.rope_theta, max_positions, device, factors)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, batch: AttentionBatch,
                cache: KVCache, logit_rows: torch.Tensor) -> torch.Tensor:
        """Run tokens [N] at positions [N]; float32 logits [len(logit_rows), vocab] of the rows
        asked for."""
        s = self.spec
        n = tokens.shape[0]
        q_dim, kv_dim = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        cos, sin = self.rotary.tables(positions)
        h = self.embed[tokens]
        for i, w in enumerate(self.layers):
            qkv = w["qkv"](rms_norm(h, w["attn_norm"], s.rms_eps))
            v = qkv[:, q_dim + kv_dim :].view(n, s.num_kv_heads, s.head_dim)
            qk = qkv[:, : q_dim + kv_dim].view(n, s.num_heads + s.num_kv_heads, s.head_dim)
            if s.qk_norm:
                q, k = qk.split([s.num_heads, s.num_kv_heads], dim=1)
                qk = torch.cat([rms_norm(q, w["q_norm"], s.rms_eps), rms_norm(k, w["k_norm"], s.rms_eps)], dim=1)
            q, k = rotate(qk, cos, sin).split([s.num_heads, s.num_kv_heads], dim=1)  # both in one rotation
            o = attention(q, k, v, cache.k[i], cache.v[i], batch)
            h = h + w["wo"](o.reshape(n, q_dim))
            gate, up = w["w_gate_up"](rms_norm(h, w["ffn_norm"], s.rms_eps)).chunk(2, dim=-1)
            h = h + w["w_down"](F.silu(gate) * up)
        out = rms_norm(h[logit_rows], self.norm, s.rms_eps)
        return self.output(out).float()
