"""A Llama-family decoder (Llama 2/3, SmolLM2, Mistral, Qwen2/2.5, Qwen3) as a forward function
over one flat batch of tokens, in the spirit of gpt-fast and nano-vllm: weights are plain
tensors, one dict per layer, so the whole model reads top to bottom in one screen."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from rill.backends.base import BackendError
from rill.backends.torch.kernels import NativeOps, TorchOps, load_ops
from rill.backends.torch.kv_cache import KVCache
from rill.backends.torch.layers import AttentionBatch, Linear, Rotary, attention
from rill.backends.torch.quant import QuantLinear
from rill.backends.torch.weights import ModelSpec


class LlamaModel:
    def __init__(self, spec: ModelSpec, tensors: Iterable[tuple[str, np.ndarray]], *,
                 dtype: torch.dtype, device: torch.device, max_positions: int,
                 ops: TorchOps | NativeOps | None = None, weights: str = "float"):
        """weights: "float" keeps the linears' weights in dtype; "int8"/"int4" quantizes them
        (quant.py; the native CPU kernels must have built). Embeddings and norms stay in dtype."""
        self.spec, self.dtype, self.device, self.max_positions = spec, dtype, device, max_positions
        self.ops = ops or load_ops(device)
        self.weights = weights
        if weights != "float" and not self.ops.native:
            raise BackendError(f"--weights {weights} needs Rill's CPU kernels, which are not available here "
                               "(the log says why; RILL_TORCH_KERNELS=0 turns them off)")
        bits = {"float": 0, "int8": 8, "int4": 4}[weights]

        def linear(weight: torch.Tensor, bias: torch.Tensor | None = None):
            return QuantLinear(weight, bias, bits) if bits else Linear(weight, bias)

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
            w["qkv"] = linear(w.pop("wqkv"), w.pop("bqkv", None))
            for name in ("wo", "w_gate_up", "w_down"):
                w[name] = linear(w[name])
        # the output head stays int8 under int4 layers, as llama.cpp's 4-bit files keep it at 8 bits:
        # at 4 bits its rounding moved SmolLM2's argmax on a fifth of the positions (docs/torch-backend.md)
        self.output = QuantLinear(lm_head, None, 8) if bits == 4 else linear(lm_head)
        if weights:
            raise ValueError(f"unused weights: {sorted(weights)[:5]}")
        self.rotary = Rotary(spec.head_dim, spec.rope_theta, max_positions, device, factors)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, batch: AttentionBatch,
                cache: KVCache, logit_rows: torch.Tensor) -> torch.Tensor:
        """Run tokens [N] at positions [N]; float32 logits [len(logit_rows), vocab] of the rows
        asked for. h is the residual stream; each add_rms_norm adds a block's output to it and
        normalises it for the next block in one pass."""
        s, ops = self.spec, self.ops
        n, eps = tokens.shape[0], s.rms_eps
        h = self.embed[tokens]  # a copy: the residual stream is updated in place
        x = F.rms_norm(h, (s.dim,), self.layers[0]["attn_norm"], eps)
        for i, w in enumerate(self.layers):
            qkv = w["qkv"](x)
            qk = ops.rope_store(qkv, self.rotary, positions, batch, cache.k[i], cache.v[i], s.num_heads,
                                w.get("q_norm"), w.get("k_norm"), eps)
            o = attention(qk, qkv, cache.k[i], cache.v[i], batch, ops)
            x = ops.add_rms_norm(h, w["wo"](o.reshape(n, s.num_heads * s.head_dim)), w["ffn_norm"], eps)
            following = self.layers[i + 1]["attn_norm"] if i + 1 < len(self.layers) else self.norm
            x = ops.add_rms_norm(h, w["w_down"](ops.silu_mul(w["w_gate_up"](x))), following, eps)
        return self.output(x[logit_rows]).float()
