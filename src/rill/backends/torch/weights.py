"""Llama-family weights from a GGUF file (dequantized with the `gguf` package), in Rill's own
naming, with q/k/v and gate/up fused into single matrices.

Tensors come out one at a time as float32 numpy arrays in PyTorch's [out, in] layout, so the
model can convert each to its dtype as it arrives and a large model is never whole in float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rill.backends.base import BackendError

# GGUF architectures this loader reads: llama (Llama 2/3, SmolLM2, Mistral), qwen2, qwen3.
# llama.cpp's converter permutes a llama's q and k rows for its interleaved rotary embedding;
# the others keep Hugging Face's half-split layout, which Rill's rotary embedding uses.
GGUF_ARCHS = {"llama": True, "qwen2": False, "qwen3": False}  # arch -> q/k rows are permuted


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A Llama-family transformer's shape."""

    arch: str
    num_layers: int
    dim: int
    ffn_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rope_theta: float
    rms_eps: float
    context_length: int
    qkv_bias: bool = False  # Qwen2
    qk_norm: bool = False  # Qwen3: RMSNorm of every head's q and k before the rotation
    tied_embeddings: bool = False  # the output projection is the token embedding
    rope_factors: bool = False  # Llama 3.1: per-frequency divisors (tensor "rope_factors")

    @property
    def qkv_dim(self) -> int:
        return (self.num_heads + 2 * self.num_kv_heads) * self.head_dim


def unpermute(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's permutation of q/k rows (convert_hf_to_gguf's LlamaModel.permute):
    each head's rows go back from interleaved pairs to Hugging Face's two halves."""
    rows = w.shape[0]
    return w.reshape(num_heads, rows // num_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFWeights:
    def __init__(self, path: Path):
        from gguf import GGUFReader

        self.path = path
        try:
            self._reader = GGUFReader(str(path))
        except Exception as exc:  # the gguf package raises ValueError, struct errors, ...
            raise BackendError(f"{path} is not a readable GGUF file: {exc}") from exc
        self._tensors = {t.name: t for t in self._reader.tensors}
        arch = str(self._field("general.architecture"))
        if arch not in GGUF_ARCHS:
            raise BackendError(f"{path.name}: the torch backend serves {', '.join(GGUF_ARCHS)} models, "
                               f"not {arch!r} (serve it with --backend llamacpp)")
        self._permuted = GGUF_ARCHS[arch]
        heads = int(self._field(f"{arch}.attention.head_count"))
        dim = int(self._field(f"{arch}.embedding_length"))
        vocab = self._tensors["token_embd.weight"].shape[-1]
        self.spec = ModelSpec(
            arch=arch,
            num_layers=int(self._field(f"{arch}.block_count")),
            dim=dim,
            ffn_dim=int(self._field(f"{arch}.feed_forward_length")),
            num_heads=heads,
            num_kv_heads=int(self._field(f"{arch}.attention.head_count_kv", heads)),
            head_dim=int(self._field(f"{arch}.attention.key_length", dim // heads)),
            vocab_size=int(vocab),
            rope_theta=float(self._field(f"{arch}.rope.freq_base", 10000.0)),
            rms_eps=float(self._field(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
            context_length=int(self._field(f"{arch}.context_length", 4096)),
            qkv_bias="blk.0.attn_q.bias" in self._tensors,
            qk_norm="blk.0.attn_q_norm.weight" in self._tensors,
            tied_embeddings="output.weight" not in self._tensors,
            rope_factors="rope_freqs.weight" in self._tensors,
        )

    def _field(self, key: str, default: object = None) -> object:
        field = self._reader.fields.get(key)
        if field is None:
            if default is None:
                raise BackendError(f"{self.path.name} has no {key!r} in its metadata")
            return default
        return field.contents()

    def _array(self, name: str) -> np.ndarray:
        from gguf.quants import dequantize

        t = self._tensors[name]
        return np.asarray(dequantize(t.data, t.tensor_type), np.float32)

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        s = self.spec
        yield "embed", self._array("token_embd.weight")
        for i in range(s.num_layers):
            p = f"blk.{i}."
            q, k = self._array(p + "attn_q.weight"), self._array(p + "attn_k.weight")
            if self._permuted:
                q, k = unpermute(q, s.num_heads), unpermute(k, s.num_kv_heads)
            yield f"layers.{i}.wqkv", np.concatenate([q, k, self._array(p + "attn_v.weight")])
            if s.qkv_bias:
                yield f"layers.{i}.bqkv", np.concatenate([self._array(p + f"attn_{x}.bias") for x in "qkv"])
            if s.qk_norm:
                yield f"layers.{i}.q_norm", self._array(p + "attn_q_norm.weight")
                yield f"layers.{i}.k_norm", self._array(p + "attn_k_norm.weight")
            yield f"layers.{i}.wo", self._array(p + "attn_output.weight")
            yield f"layers.{i}.attn_norm", self._array(p + "attn_norm.weight")
            yield f"layers.{i}.ffn_norm", self._array(p + "ffn_norm.weight")
            yield f"layers.{i}.w_gate_up", np.concatenate([self._array(p + "ffn_gate.weight"),
                                                           self._array(p + "ffn_up.weight")])
            yield f"layers.{i}.w_down", self._array(p + "ffn_down.weight")
        yield "norm", self._array("output_norm.weight")
        if not s.tied_embeddings:
            yield "lm_head", self._array("output.weight")
        if s.rope_factors:
            yield "rope_factors", self._array("rope_freqs.weight")
