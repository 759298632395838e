"""What speculative decoding can gain on this machine: the time of one forward() over k tokens of
one sequence with logits at every position (a verification of k - 1 draft tokens), against k = 1
(a plain decode step), at a context of ~350 tokens. k / (time(k) / time(1)) is the speed-up of
a step whose whole draft is kept: the ceiling for `prediction`.

    .venv/bin/python benchmarks/verify_cost.py [--sizes 1,2,4,8,16,32] [--repeats 7] [--model PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from rill.backends.base import BatchItem
from rill.backends.local import LlamaBackend
from rill.cli import embedded_model_path
from rill.config import ModelConfig

CONTEXT = 350


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,2,4,8,16,32")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    backend = LlamaBackend(args.model or embedded_model_path(), ModelConfig(n_ctx=2048, parallel=1),
                           name="m", on_progress=lambda _: None)
    text = "The river runs past the old mill and on to the sea, where the boats wait. " * 40
    tokens = backend.tokenize(text, add_bos=False)[: CONTEXT + max(sizes)]
    backend.forward([BatchItem(0, tokens[:CONTEXT], 0, num_logits=0)])
    medians = {}
    for k in sizes:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            backend.forward([BatchItem(0, tokens[CONTEXT : CONTEXT + k], CONTEXT, num_logits=k)])
            times.append(time.perf_counter() - start)
            backend.truncate(0, CONTEXT)
        medians[k] = statistics.median(times)
    base = medians.get(1) or medians[min(medians)]
    print(f"{'k':>3}  {'ms':>7}  {'ms/token':>8}  {'x time(1)':>9}  {'speed-up if all kept':>20}")
    for k, t in medians.items():
        print(f"{k:>3}  {t * 1000:7.1f}  {t * 1000 / k:8.2f}  {t / base:9.2f}  {k / (t / base):20.2f}")
    backend.close()


if __name__ == "__main__":
    main()
