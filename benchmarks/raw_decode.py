"""The bindings' ceiling: batched `llama_decode` through Rill's LlamaBackend with no server around
it. Prefills B short prompts, then times greedy decode steps of B tokens (one per sequence), and
times the prefill of one ~500-token prompt.

    .venv/bin/python benchmarks/raw_decode.py [--batch 1,16] [--steps 64] [--model PATH] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from rill.backends.base import BatchItem
from rill.backends.local import LlamaBackend
from rill.cli import embedded_model_path
from rill.config import ModelConfig


def chat_prompt(backend: LlamaBackend, text: str) -> list[int]:
    return backend.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n", add_bos=False)


def decode_rate(backend: LlamaBackend, batch: int, steps: int) -> float:
    prompts = [chat_prompt(backend, f"Write a short poem about the number {i}.") for i in range(batch)]
    last = []
    for seq, prompt in enumerate(prompts):
        last.append(int(np.argmax(backend.forward([BatchItem(seq, prompt, 0)])[0])))
    positions = [len(p) for p in prompts]
    start = time.perf_counter()
    for _ in range(steps):
        logits = backend.forward([BatchItem(s, (last[s],), positions[s]) for s in range(batch)])
        last = [int(t) for t in logits.argmax(axis=1)]
        positions = [p + 1 for p in positions]
    elapsed = time.perf_counter() - start
    for seq in range(batch):
        backend.release(seq)
    return steps * batch / elapsed


def prefill_rate(backend: LlamaBackend) -> tuple[int, float]:
    tokens = chat_prompt(backend, "Summarise this. " + "The river runs past the old mill and on to the sea. " * 40)
    start = time.perf_counter()
    for at in range(0, len(tokens), backend.max_batch_tokens):
        chunk = tokens[at : at + backend.max_batch_tokens]
        backend.forward([BatchItem(0, chunk, at, num_logits=int(at + len(chunk) == len(tokens)))])
    elapsed = time.perf_counter() - start
    backend.release(0)
    return len(tokens), len(tokens) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", default="1,16")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0, help="compute threads [one per core]")
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    config = ModelConfig(parallel=max(batches), n_ctx=2048, n_threads=args.threads)
    backend = LlamaBackend(args.model or embedded_model_path(), config, name="raw", on_progress=lambda _: None)
    n, rate = prefill_rate(backend)
    print(f"prefill: {n} tokens at {rate:.0f} tokens/s")
    for batch in batches:
        print(f"decode B={batch:<3d} {decode_rate(backend, batch, args.steps):6.1f} tokens/s")
    backend.close()


if __name__ == "__main__":
    main()
