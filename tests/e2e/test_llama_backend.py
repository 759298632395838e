"""LlamaBackend on the embedded model, without a server: the properties the engine relies on."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest

from rill.backends.base import BatchItem
from rill.backends.local import LlamaBackend
from rill.cli import embedded_model_path
from rill.config import ModelConfig

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaBackend]:
    b = LlamaBackend(embedded_model_path(), ModelConfig(n_ctx=1024, parallel=4), name="m",
                     on_progress=lambda _: None)
    yield b
    b.close()


def prompt(backend: LlamaBackend, text: str) -> list[int]:
    return backend.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n", add_bos=False)


def fresh(backend: LlamaBackend) -> None:
    for seq_id in range(backend.max_sequences):
        backend.release(seq_id)


def test_logits_rows_come_back_in_batch_order_whatever_the_seq_ids(backend: LlamaBackend) -> None:
    prompts = [prompt(backend, f"Tell me about the number {i}.") for i in range(3)]
    fresh(backend)
    alone = [backend.forward([BatchItem(i, p, 0)])[0] for i, p in enumerate(prompts)]
    fresh(backend)
    # seq_ids out of order, and an item that wants no logits in the middle
    batch = [BatchItem(2, prompts[2], 0), BatchItem(3, prompts[0], 0, want_logits=False),
             BatchItem(0, prompts[0], 0), BatchItem(1, prompts[1], 0)]
    rows = backend.forward(batch)
    assert rows.shape == (3, backend.info.n_vocab)
    for row, expected in zip(rows, [alone[2], alone[0], alone[1]]):
        assert np.array_equal(row, expected)


def test_prefill_chunking_does_not_change_the_numbers(backend: LlamaBackend) -> None:
    """What prefix reuse relies on: a prompt prefilled in one go, or in chunks of two or more
    tokens, gives bit-identical logits."""
    tokens = prompt(backend, "The river runs past the old mill and on to the sea. " * 16)
    assert len(tokens) > 150
    n = len(tokens)

    def logits(chunks: list[int]) -> np.ndarray:
        fresh(backend)
        at = 0
        for size in chunks:
            out = backend.forward([BatchItem(0, tokens[at:at + size], at, want_logits=at + size == n)])
            at += size
        return out[0]

    whole = logits([n])
    for chunks in ([n - 2, 2], [64, 64, n - 128], [7, n - 7]):
        assert np.array_equal(logits(chunks), whole), chunks


def test_a_prompt_prefilled_next_to_decoding_streams_gets_the_same_numbers(backend: LlamaBackend) -> None:
    """A prefill chunk in the same forward() as one-token decode items of neighbouring seq_ids
    is computed exactly as alone (llama.cpp would otherwise give the chunk's first token to the
    decode pass), and so are the tokens decoded after it."""
    tokens = prompt(backend, "Write one sentence about each of the numbers from one to twenty. " * 4)

    def generate(split: int, neighbours: bool) -> list[np.ndarray]:
        fresh(backend)
        others = [prompt(backend, f"Count to {i}.") for i in (0, 2)] if neighbours else []
        positions = {}
        for seq_id, p in zip((0, 2), others):
            backend.forward([BatchItem(seq_id, p, 0)])
            positions[seq_id] = len(p)
        backend.forward([BatchItem(1, tokens[:split], 0, want_logits=False)])  # a first chunk alone
        out, last, pos = [], None, len(tokens)
        for step in range(6):
            decoding = [BatchItem(s, (7,), positions[s]) for s in positions]
            mine = BatchItem(1, tokens[split:], split) if step == 0 else BatchItem(1, (last,), pos)
            pos += step > 0
            rows = backend.forward([*decoding, mine])
            out.append(rows[-1])
            last = int(rows[-1].argmax())
            positions = {s: p + 1 for s, p in positions.items()}
        return out

    for split in range(20, 60, 4):
        alone, together = generate(split, False), generate(split, True)
        assert all(np.array_equal(a, b) for a, b in zip(alone, together)), split
