"""Llama-family weights from a GGUF file (dequantized with the `gguf` package), in Rill's own
naming, with q/k/v and gate/up fused into single matrices.

Tensors come out one at a time as float32 numpy arrays in PyTorch's [out, in] layout, so the
model can convert each to its dtype as it arrives and a large model is never whole in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
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


# Where each of Rill's tensors lies in a file, by role ({i}: the layer); each format names them its own way
GGUF_NAMES = {
    "embed": "token_embd.weight", "norm": "output_norm.weight", "lm_head": "output.weight",
    "q": "blk.{i}.attn_q.weight", "k": "blk.{i}.attn_k.weight", "v": "blk.{i}.attn_v.weight",
    "q_bias": "blk.{i}.attn_q.bias", "k_bias": "blk.{i}.attn_k.bias", "v_bias": "blk.{i}.attn_v.bias",
    "q_norm": "blk.{i}.attn_q_norm.weight", "k_norm": "blk.{i}.attn_k_norm.weight",
    "wo": "blk.{i}.attn_output.weight", "attn_norm": "blk.{i}.attn_norm.weight",
    "ffn_norm": "blk.{i}.ffn_norm.weight", "gate": "blk.{i}.ffn_gate.weight", "up": "blk.{i}.ffn_up.weight",
    "down": "blk.{i}.ffn_down.weight",
}


def llama_tensors(spec: ModelSpec, read: Callable[[str], np.ndarray], names: Mapping[str, str],
                  fix_qk: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
                  ) -> Iterator[tuple[str, np.ndarray]]:
    """Rill's tensors, one at a time, read by `names` (a role -> tensor name table such as
    GGUF_NAMES), with q/k/v and gate/up fused; fix_qk rewrites each layer's q and k first."""
    yield "embed", read(names["embed"])
    for i in range(spec.num_layers):
        def layer(role: str) -> np.ndarray:
            return read(names[role].format(i=i))

        q, k = layer("q"), layer("k")
        if fix_qk is not None:
            q, k = fix_qk(q, k)
        yield f"layers.{i}.wqkv", np.concatenate([q, k, layer("v")])
        if spec.qkv_bias:
            yield f"layers.{i}.bqkv", np.concatenate([layer("q_bias"), layer("k_bias"), layer("v_bias")])
        if spec.qk_norm:
            yield f"layers.{i}.q_norm", layer("q_norm")
            yield f"layers.{i}.k_norm", layer("k_norm")
        yield f"layers.{i}.wo", layer("wo")
        yield f"layers.{i}.attn_norm", layer("attn_norm")
        yield f"layers.{i}.ffn_norm", layer("ffn_norm")
        yield f"layers.{i}.w_gate_up", np.concatenate([layer("gate"), layer("up")])
        yield f"layers.{i}.w_down", layer("down")
    yield "norm", read(names["norm"])
    if not spec.tied_embeddings:
        yield "lm_head", read(names["lm_head"])


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
        fix = (lambda q, k: (unpermute(q, s.num_heads), unpermute(k, s.num_kv_heads))) if self._permuted else None
        yield from llama_tensors(s, self._array, GGUF_NAMES, fix)
        if s.rope_factors:
            yield "rope_factors", self._array("rope_freqs.weight")
