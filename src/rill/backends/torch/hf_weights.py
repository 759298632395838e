"""Llama-family weights from a Hugging Face model folder (config.json and *.safetensors, one file
or shards listed in model.safetensors.index.json), in Rill's own naming, as GGUFWeights gives
them: one tensor at a time, float32 numpy in PyTorch's [out, in] layout, q/k/v and gate/up fused.

Hugging Face keeps q and k in the half-split rotary layout Rill uses, so nothing is permuted.
Llama 3.1's long-context scaling (rope_scaling.rope_type "llama3") becomes per-frequency
divisors exactly as llama.cpp's converter computes them for GGUF's rope_freqs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rill.backends.base import BackendError
from rill.backends.hf_vocab import read_json
from rill.backends.torch.weights import ModelSpec, llama_tensors

# config.json model_type -> (q/k/v have biases, q and k are RMS-normed per head)
HF_ARCHS = {"llama": (False, False), "mistral": (False, False), "qwen2": (True, False), "qwen3": (False, True)}


# Where each of Rill's tensors lies in a checkpoint (as weights.GGUF_NAMES for GGUF files)
HF_NAMES = {
    "embed": "model.embed_tokens.weight", "norm": "model.norm.weight", "lm_head": "lm_head.weight",
    **{x: f"model.layers.{{i}}.self_attn.{x}_proj.weight" for x in "qkv"},
    **{f"{x}_bias": f"model.layers.{{i}}.self_attn.{x}_proj.bias" for x in "qkv"},
    "q_norm": "model.layers.{i}.self_attn.q_norm.weight", "k_norm": "model.layers.{i}.self_attn.k_norm.weight",
    "wo": "model.layers.{i}.self_attn.o_proj.weight", "attn_norm": "model.layers.{i}.input_layernorm.weight",
    "ffn_norm": "model.layers.{i}.post_attention_layernorm.weight",
    "gate": "model.layers.{i}.mlp.gate_proj.weight", "up": "model.layers.{i}.mlp.up_proj.weight",
    "down": "model.layers.{i}.mlp.down_proj.weight",
}


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


class HFWeights:
    def __init__(self, folder: Path):
        self.folder = folder
        config = read_json(folder / "config.json")
        arch = config.get("model_type")
        if arch not in HF_ARCHS:
            raise BackendError(f"{folder.name}: the torch backend serves {', '.join(HF_ARCHS)} models, "
                               f"not model_type {arch!r}")
        qkv_bias, qk_norm = HF_ARCHS[arch]
        heads = int(config["num_attention_heads"])
        dim = int(config["hidden_size"])
        context = int(config.get("max_position_embeddings", 4096))
        window = config.get("sliding_window")
        if window and config.get("use_sliding_window", arch == "mistral") and int(window) < context:
            # attention over the whole context would differ from the model's past its window:
            # serve only as much as the window holds
            context = int(window)
        scaling = config.get("rope_scaling") or {}
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind not in (None, "default", "llama3"):
            raise BackendError(f"{folder.name}: rope_scaling {kind!r} is not supported by the torch backend "
                               "(llama3 scaling is; serve a GGUF of the model with --backend llamacpp)")
        self._scaling = scaling if kind == "llama3" else None
        self.spec = ModelSpec(
            arch=arch,
            num_layers=int(config["num_hidden_layers"]),
            dim=dim,
            ffn_dim=int(config["intermediate_size"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or dim // heads),
            vocab_size=int(config["vocab_size"]),
            rope_theta=float(config.get("rope_theta", 10000.0)),
            rms_eps=float(config.get("rms_norm_eps", 1e-6)),
            context_length=context,
            qkv_bias=qkv_bias or bool(config.get("attention_bias", False)),
            qk_norm=qk_norm,
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            rope_factors=self._scaling is not None,
        )
        self._where = self._index()

    def _index(self) -> dict[str, Path]:
        """Tensor name -> the safetensors file holding it."""
        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            return {name: self.folder / file for name, file in read_json(index)["weight_map"].items()}
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise BackendError(f"{self.folder} holds no *.safetensors weights")
        from safetensors import safe_open

        where = {}
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                where |= {name: file for name in f.keys()}
        return where

    def _array(self, name: str) -> np.ndarray:
        from safetensors import safe_open

        file = self._where.get(name)
        if file is None:
            raise BackendError(f"{self.folder.name}: no tensor {name!r} in its safetensors files")
        with safe_open(str(file), framework="pt") as f:  # torch: numpy has no bfloat16
            return f.get_tensor(name).float().numpy()

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        s = self.spec
        yield from llama_tensors(s, self._array, HF_NAMES)
        if self._scaling is not None:
            yield "rope_factors", llama3_rope_factors(self._scaling, s.rope_theta, s.head_dim)


def llama3_rope_factors(scaling: dict[str, Any], theta: float, head_dim: int) -> np.ndarray:
    """Llama 3.1's per-frequency divisors, as convert_hf_to_gguf.py writes rope_freqs: long
    wavelengths slowed by `factor`, short ones kept, those between blended smoothly."""
    factor = float(scaling.get("factor", 8.0))
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_context = float(scaling.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            out.append(1.0)
        elif wavelen > old_context / low:
            out.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, np.float32)
