"""Where one decode step of the torch backend goes, with no server around it: prefills B short
prompts, then times greedy decode steps of B tokens (forward alone, and forward plus the engine's
own sampling of every row), and breaks one step down by operator with torch.profiler (matmuls,
attention, the rest) against the matmul-only ceiling.

    .venv/bin/python benchmarks/torch_step.py [--batch 1,16,32] [--steps 32] [--dtype auto] [--weights float] [--profile 16]
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np
import torch

from rill.backends.base import BatchItem
from rill.backends.torch.backend import TorchBackend
from rill.cli import embedded_model_path
from rill.config import ModelConfig
from rill.sampling.sampler import sample

# operator name -> the kind it counts as
_KINDS = {
    "matmuls": ("mkldnn::_linear_pointwise", "aten::linear", "aten::addmm", "aten::mm", "rill_kernels::quant_linear"),
    "attention": ("rill_kernels::decode_attention", "aten::bmm", "aten::matmul", "aten::_softmax",
                  "aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::index_select"),
    "rope, norms, SiLU": ("rill_kernels::rope_store", "rill_kernels::add_rms_norm", "rill_kernels::silu_mul",
                          "aten::rms_norm", "aten::_fused_rms_norm", "aten::silu", "aten::addcmul", "aten::roll"),
}


def chat_prompt(backend: TorchBackend, text: str) -> list[int]:
    return backend.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n", add_bos=False)


CONTEXT = 100  # tokens each sequence holds when the timed steps start (--context)


def prefill(backend: TorchBackend, batch: int) -> tuple[list[int], list[int]]:
    """B prompts of CONTEXT tokens each, prefilled in one step; their first tokens and lengths."""
    words = " ".join(f"word{j}" for j in range(CONTEXT))
    prompts = [chat_prompt(backend, f"Write a short poem about the number {i}: {words}")[:CONTEXT] for i in range(batch)]
    logits = backend.forward([BatchItem(s, p, 0) for s, p in enumerate(prompts)])
    return [int(t) for t in logits.argmax(axis=1)], [len(p) for p in prompts]


def decode(backend: TorchBackend, batch: int, steps: int, *, sampled: bool) -> float:
    """Seconds per decode step of `batch` sequences."""
    last, positions = prefill(backend, batch)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        logits = backend.forward([BatchItem(s, (last[s],), positions[s]) for s in range(batch)])
        if sampled:  # what the engine does per row at temperature 1: softmax, cumsum, draw
            last = [sample(row, 1.0, 1.0, rng) for row in logits]
        else:
            last = [int(t) for t in logits.argmax(axis=1)]
        positions = [p + 1 for p in positions]
    elapsed = time.perf_counter() - start
    for seq in range(batch):
        backend.release(seq)
    return elapsed / steps


def breakdown(backend: TorchBackend, batch: int, steps: int = 8) -> dict[str, float]:
    """Milliseconds of one decode step by kind of operator (torch.profiler's self CPU times), and
    the rest of the unprofiled step's wall time: Python, dispatch, small ops."""
    wall = min(decode(backend, batch, steps, sampled=False) for _ in range(3)) * 1e3
    last, positions = prefill(backend, batch)
    totals: dict[str, float] = collections.defaultdict(float)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            backend.forward([BatchItem(s, (last[s],), positions[s]) for s in range(batch)])
            positions = [p + 1 for p in positions]
    for event in prof.key_averages():
        kind = next((k for k, names in _KINDS.items() if event.key in names), None)
        if kind:
            totals[kind] += event.self_cpu_time_total / 1e3 / steps
    for seq in range(batch):
        backend.release(seq)
    totals["the rest (Python, dispatch, small ops)"] = max(0.0, wall - sum(totals.values()))
    totals["step (wall, unprofiled)"] = wall
    return dict(totals)


def matmul_ceiling(backend: TorchBackend, batch: int, steps: int = 32) -> float:
    """Seconds for every linear of one step alone (all layers and the output head at `batch` rows)."""
    model = backend.model
    x = torch.randn(batch, model.spec.dim, dtype=backend.dtype)
    ffn = torch.randn(batch, model.spec.ffn_dim, dtype=backend.dtype)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(steps):
            for w in model.layers:
                w["qkv"](x), w["wo"](x), w["w_gate_up"](x), w["w_down"](ffn)
            model.output(x)
    return (time.perf_counter() - start) / steps


def main() -> None:
    global CONTEXT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", default="1,16,32")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--weights", default="float", choices=["float", "int8", "int4"])
    parser.add_argument("--profile", type=int, default=16, help="batch size to break down (0: none)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--context", type=int, default=CONTEXT, help="tokens each sequence holds [100]")
    args = parser.parse_args()
    sizes = [int(b) for b in args.batch.split(",")]
    CONTEXT = args.context
    config = ModelConfig(n_ctx=1024, parallel=max(sizes + [args.profile]), n_batch=max(sizes) * (args.context + 8),
                         n_threads=args.threads)
    backend = TorchBackend.load(embedded_model_path(), config, name="bench", dtype=args.dtype,
                                weights=args.weights)
    print(f"torch {torch.__version__}, {backend.dtype}, {args.weights} weights, {torch.get_num_threads()} threads, "
          f"{CONTEXT} tokens of context per sequence")
    decode(backend, max(sizes), 4, sampled=False)  # warm-up: oneDNN primitives for each shape
    print("batch  forward ms  tok/s (forward)  + sampling ms  tok/s (sampled)  matmuls alone ms")
    for b in sizes:  # the best of three runs: this machine's neighbours come and go
        fwd = min(decode(backend, b, args.steps, sampled=False) for _ in range(3))
        smp = min(decode(backend, b, args.steps, sampled=True) for _ in range(3))
        mm = min(matmul_ceiling(backend, b) for _ in range(3))
        print(f"{b:5d}  {fwd * 1e3:10.1f}  {b / fwd:15.1f}  {(smp - fwd) * 1e3:13.1f}  {b / smp:15.1f}  {mm * 1e3:16.1f}")
    if args.profile:
        print(f"\none decode step of {args.profile} sequences ({type(backend.model.ops).__name__}), ms:")
        for kind, ms in breakdown(backend, args.profile).items():
            print(f"  {kind:24s} {ms:7.2f}")


if __name__ == "__main__":
    main()
