"""What int8 and int4 weights cost in accuracy on the embedded SmolLM2, against the file's own
weights computed exactly (fp32): the worst relative logit error over every position of four
prompts (max |a - b| / max |b| per row), how often the next-token argmax agrees, and how many
greedy tokens each prompt's answer keeps before it parts from fp32's (64 at most).

    .venv/bin/python benchmarks/quant_accuracy.py [--weights int8,int4] [--tokens 64]
"""

from __future__ import annotations

import argparse

import numpy as np

from rill.backends.base import BatchItem
from rill.backends.torch.backend import TorchBackend
from rill.cli import embedded_model_path
from rill.config import ModelConfig

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France, and why is it famous?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWrite a haiku about rivers."
    "<|im_end|>\n<|im_start|>assistant\nWater runs",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "The history of the Roman Empire spans many centuries, beginning with",
]


def prompt_logits(backend: TorchBackend) -> list[np.ndarray]:
    out = []
    for text in PROMPTS:
        tokens = backend.tokenize(text, add_bos=False)
        out.append(backend.forward([BatchItem(0, tokens, 0, num_logits=len(tokens))]))
        backend.release(0)
    return out


def greedy(backend: TorchBackend, n: int) -> list[list[int]]:
    answers = []
    for text in PROMPTS:
        tokens = backend.tokenize(text, add_bos=False)
        logits, answer = backend.forward([BatchItem(0, tokens, 0)]), []
        for i in range(n):
            answer.append(int(logits[-1].argmax()))
            logits = backend.forward([BatchItem(0, [answer[-1]], len(tokens) + i)])
        backend.release(0)
        answers.append(answer)
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="int8,int4")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    path, config = embedded_model_path(), ModelConfig(backend="torch", parallel=1, n_ctx=1024)
    exact = TorchBackend.load(path, config, name="fp32", dtype="fp32", weights="float")
    reference, reference_answers = prompt_logits(exact), greedy(exact, args.tokens)
    for weights in args.weights.split(","):
        backend = TorchBackend.load(path, config, name=weights, weights=weights)
        logits = prompt_logits(backend)
        error = max(float((np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)).max()) for a, b in zip(logits, reference))
        agree = float(np.mean(np.concatenate([a.argmax(1) == b.argmax(1) for a, b in zip(logits, reference)])))
        kept = [next((i for i, (x, y) in enumerate(zip(mine, theirs)) if x != y), len(mine))
                for mine, theirs in zip(greedy(backend, args.tokens), reference_answers)]
        print(f"{weights}: worst relative logit error {error:.2e}, argmax agreement {agree:.1%}, "
              f"greedy tokens equal before parting {kept}")


if __name__ == "__main__":
    main()
