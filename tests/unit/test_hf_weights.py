"""Hugging Face model folders for the torch backend: the tiny random Llama of the backend tests
written as a Hub checkpoint (one file, or shards with an index) loads into the same model and
gives the dense reference's logits; Qwen2's biases and Qwen3's q/k norms are found; Llama 3.1's
rope scaling becomes llama.cpp's rope_freqs; what cannot be served is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rill.backends.base import BackendError, BatchItem
from rill.backends.torch.backend import TorchBackend
from rill.backends.torch.hf_weights import HFWeights, is_hf_folder, llama3_rope_factors
from rill.backends.torch.model import LlamaModel
from rill.config import ModelConfig
from rill.errors import ConfigError
from tests.unit.test_torch_backend import PROMPT, SPEC, TOL, WEIGHTS, ByteVocab, reference_logits


def hf_names(weights: dict[str, np.ndarray], spec=SPEC) -> dict[str, np.ndarray]:
    """The backend tests' weights under Hugging Face's names, q/k/v and gate/up apart again."""
    q, kv = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    out = {"model.embed_tokens.weight": weights["embed"], "model.norm.weight": weights["norm"],
           "lm_head.weight": weights["lm_head"]}
    for i in range(spec.num_layers):
        p, w = f"model.layers.{i}.", lambda name: weights[f"layers.{i}.{name}"]
        for proj, rows in zip("qkv", np.split(w("wqkv"), [q, q + kv])):
            out[p + f"self_attn.{proj}_proj.weight"] = rows
        gate, up = np.split(w("w_gate_up"), 2)
        out |= {p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up, p + "mlp.down_proj.weight": w("w_down"),
                p + "self_attn.o_proj.weight": w("wo"), p + "input_layernorm.weight": w("attn_norm"),
                p + "post_attention_layernorm.weight": w("ffn_norm")}
    return out


def config_json(**extra) -> dict:
    s = SPEC
    return {"model_type": "llama", "hidden_size": s.dim, "intermediate_size": s.ffn_dim, "num_attention_heads": s.num_heads,
            "num_key_value_heads": s.num_kv_heads, "num_hidden_layers": s.num_layers, "vocab_size": s.vocab_size,
            "rope_theta": s.rope_theta, "rms_norm_eps": s.rms_eps, "max_position_embeddings": s.context_length,
            "tie_word_embeddings": False, **extra}


def write_folder(folder: Path, tensors: dict[str, np.ndarray], *, shards: int = 1, **config) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config_json(**config)))
    names = sorted(tensors)
    parts = [names[i::shards] for i in range(shards)]
    index = {}
    for n, part in enumerate(parts):
        file = "model.safetensors" if shards == 1 else f"model-{n + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: torch.from_numpy(np.ascontiguousarray(tensors[k])) for k in part}, str(folder / file))
        index |= {k: file for k in part}
    if shards > 1:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))
    return folder


@pytest.mark.parametrize("shards", [1, 3])
def test_a_hub_checkpoint_loads_into_the_same_model_as_the_reference(tmp_path, shards):
    folder = write_folder(tmp_path / "tiny", hf_names(WEIGHTS), shards=shards)
    assert is_hf_folder(folder) and not is_hf_folder(tmp_path)
    weights = HFWeights(folder)
    assert weights.spec == SPEC
    model = LlamaModel(weights.spec, weights.tensors(), dtype=torch.float32, device=torch.device("cpu"),
                       max_positions=256)
    backend = TorchBackend(model, ByteVocab(), ModelConfig(n_ctx=256, parallel=2), name="tiny", fingerprint="fp")
    out = backend.forward([BatchItem(0, PROMPT, 0, num_logits=len(PROMPT))])
    np.testing.assert_allclose(out, reference_logits(PROMPT), atol=TOL, rtol=TOL)


def test_qwen2_biases_and_qwen3_norms_are_read(tmp_path):
    tensors = hf_names(WEIGHTS)
    rng = np.random.default_rng(1)
    for i in range(SPEC.num_layers):
        for proj, rows in zip("qkv", (SPEC.num_heads * SPEC.head_dim, *[SPEC.num_kv_heads * SPEC.head_dim] * 2)):
            tensors[f"model.layers.{i}.self_attn.{proj}_proj.bias"] = rng.standard_normal(rows).astype(np.float32)
    qwen2 = HFWeights(write_folder(tmp_path / "qwen2", tensors, model_type="qwen2"))
    assert qwen2.spec.qkv_bias and not qwen2.spec.qk_norm
    fused = dict(qwen2.tensors())["layers.1.bqkv"]
    np.testing.assert_array_equal(fused, np.concatenate([tensors[f"model.layers.1.self_attn.{x}_proj.bias"]
                                                         for x in "qkv"]))
    tensors = hf_names(WEIGHTS) | {f"model.layers.{i}.self_attn.{x}_norm.weight": np.ones(SPEC.head_dim, np.float32)
                                   for i in range(SPEC.num_layers) for x in "qk"}
    qwen3 = HFWeights(write_folder(tmp_path / "qwen3", tensors, model_type="qwen3", head_dim=SPEC.head_dim))
    assert qwen3.spec.qk_norm and {"layers.0.q_norm", "layers.0.k_norm"} <= set(dict(qwen3.tensors()))


def test_llama3_rope_scaling_becomes_per_frequency_divisors(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    factors = llama3_rope_factors(scaling, 500000.0, 128)
    assert factors.shape == (64,) and factors[0] == 1.0 and factors[-1] == 8.0  # short waves kept, long slowed
    assert np.all(np.diff(factors) >= 0) and 1.0 < factors[32] < 8.0  # blended between
    weights = HFWeights(write_folder(tmp_path / "l3", hf_names(WEIGHTS), rope_scaling=scaling))
    assert weights.spec.rope_factors and dict(weights.tensors())["rope_factors"].shape == (SPEC.head_dim // 2,)


@pytest.mark.parametrize("config, message", [
    ({"model_type": "gpt2"}, "not model_type 'gpt2'"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling 'yarn'"),
])
def test_what_cannot_be_served_is_refused_by_name(tmp_path, config, message):
    with pytest.raises(BackendError, match=message):
        HFWeights(write_folder(tmp_path / "m", hf_names(WEIGHTS), **config))


def test_a_sliding_window_caps_the_context_and_missing_weights_are_named(tmp_path):
    mistral = HFWeights(write_folder(tmp_path / "mistral", hf_names(WEIGHTS), model_type="mistral", sliding_window=128))
    assert mistral.spec.context_length == 128
    qwen = HFWeights(write_folder(tmp_path / "qwen", hf_names(WEIGHTS), model_type="qwen2", sliding_window=128,
                                  use_sliding_window=False, attention_bias=False))
    assert qwen.spec.context_length == SPEC.context_length
    tensors = hf_names(WEIGHTS)
    del tensors["model.layers.1.mlp.down_proj.weight"]
    with pytest.raises(BackendError, match="down_proj"):
        list(HFWeights(write_folder(tmp_path / "broken", tensors)).tensors())


def test_a_folder_is_for_the_torch_backend_and_must_hold_a_config(tmp_path):
    folder = write_folder(tmp_path / "Qwen2.5-0.5B-Instruct", hf_names(WEIGHTS))
    assert ModelConfig(path=folder, backend="torch").id == "Qwen2.5-0.5B-Instruct"
    with pytest.raises(ConfigError, match="--backend torch"):
        ModelConfig(path=folder, backend="llamacpp")
    auto = ModelConfig(path=folder)  # --backend auto: the torch backend reads folders
    assert auto.backend == "torch" and "folder" in auto.backend_reason
    with pytest.raises(ConfigError, match="without config.json"):
        ModelConfig(path=tmp_path, backend="torch")
