"""A prompt's linears: Rill's int8 kernel against torch's float32 and bf16 matmuls (oneDNN, which
uses AMX tiles where the CPU has them) at prefill's row counts, and whether oneDNN's bf16 rows
depend on the batch (a row computed in a batch against the same row alone).

    .venv/bin/python benchmarks/prefill_matmul.py [--rows 470] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from rill.backends.torch.kernels import load_ops
from rill.backends.torch.quant import QuantLinear

SHAPES = ((576, 3072), (1536, 576), (576, 576), (576, 49152))  # SmolLM2: MLP up+gate, down, attention, head


def timed(f, reps: int = 20) -> float:
    f()
    began = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - began) / reps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=470)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_ops(torch.device("cpu"))  # Rill's kernels, built once per machine
    rows = args.rows
    for k, n in SHAPES:
        w = torch.randn(n, k) * 0.02
        x = torch.randn(rows, k)
        int8, wb, xb = QuantLinear(w, None, 8), w.bfloat16(), x.bfloat16()
        flops = 2 * rows * k * n
        line = [f"{k:>5} -> {n:<6}"]
        for name, f in (("int8 kernel", lambda: int8(x)), ("fp32 matmul", lambda: x @ w.t()),
                        ("bf16 matmul", lambda: xb @ wb.t())):
            ms = timed(f)
            line.append(f"{name} {ms:6.2f} ms ({flops / ms / 1e6:6.0f} GFLOP/s)")
        sample = range(0, rows, 7)
        alone = torch.cat([xb[i:i + 1] @ wb.t() for i in sample])
        batched = (xb @ wb.t())[0:rows:7]
        line.append(f"bf16 rows unlike alone: {int((batched != alone).any(dim=1).sum())} of {len(sample)}")
        print("  ".join(line))


if __name__ == "__main__":
    main()
