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
