"""Write a GGUF model as a Hugging Face model folder, the way its checkpoint on the Hub is laid out:
bf16 safetensors under Hugging Face's tensor names, config.json, and the tokenizer files that
transformers makes from the GGUF file's vocabulary. For serving the same weights with vLLM (the
side-by-side in docs/benchmarks.md) and for the torch backend's folder tests. Needs transformers.

    .venv/bin/python benchmarks/gguf_to_hf.py OUT_DIR [--gguf PATH]   # default: the embedded SmolLM2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rill.backends.torch.hf_weights import HF_NAMES
from rill.backends.torch.weights import GGUFWeights


def write_hf_folder(gguf: Path, out: Path) -> None:
    """SmolLM2 as its Hub checkpoint is laid out, from the GGUF file."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    weights = GGUFWeights(gguf)
    s = weights.spec
    q_rows, kv_rows = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    tensors: dict[str, torch.Tensor] = {}

    def put(name: str, array: np.ndarray) -> None:
        tensors[name] = torch.from_numpy(np.array(array, np.float32)).to(torch.bfloat16)  # a copy: GGUF F32 is mmapped

    for name, array in weights.tensors():  # Rill's fused tensors, split back into the Hub's
        if name in ("embed", "norm"):
            put(HF_NAMES[name], array)
            continue
        _, i, part = name.split(".")
        if part == "wqkv":
            pieces = zip("qkv", np.split(array, [q_rows, q_rows + kv_rows]))
        elif part == "w_gate_up":
            pieces = zip(("gate", "up"), np.split(array, 2))
        else:
            pieces = [({"w_down": "down"}.get(part, part), array)]
        for role, rows in pieces:
            put(HF_NAMES[role].format(i=i), rows)
    out.mkdir(parents=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": s.dim,
        "intermediate_size": s.ffn_dim, "num_attention_heads": s.num_heads, "num_key_value_heads": s.num_kv_heads,
        "num_hidden_layers": s.num_layers, "vocab_size": s.vocab_size, "rope_theta": s.rope_theta,
        "rms_norm_eps": s.rms_eps, "max_position_embeddings": s.context_length, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16"}))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(str(out))
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": tokenizer.eos_token_id}))


def main() -> None:
    from rill.cli import embedded_model_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--gguf", type=Path, default=None)
    args = parser.parse_args()
    write_hf_folder(args.gguf or embedded_model_path(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
