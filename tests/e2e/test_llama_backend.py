"""LlamaBackend on the embedded model, without a server: the properties the engine relies on."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest

from rill.backends.base import BatchItem
from rill.backends.local import LlamaBackend, row_order_flash_attention
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
    batch = [BatchItem(2, prompts[2], 0), BatchItem(3, prompts[0], 0, num_logits=0),
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
            out = backend.forward([BatchItem(0, tokens[at:at + size], at, num_logits=int(at + size == n))])
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
        backend.forward([BatchItem(1, tokens[:split], 0, num_logits=0)])  # a first chunk alone
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


def test_the_build_is_batch_invariant(backend: LlamaBackend) -> None:
    """`make` builds llama.cpp without llamafile's kernels (scripts/install-llama-cpp.sh); a wheel
    built otherwise would make `prediction` lossy at near-ties."""
    assert backend.batch_invariant, "llama-cpp-python has llamafile's kernels: reinstall it with `make clean install`"


def test_the_build_has_row_order_flash_attention(backend: LlamaBackend) -> None:
    """`make` patches ggml's flash attention so that rows are summed alone, and the backend runs
    with flash attention only on that build (scripts/install-llama-cpp.sh)."""
    assert row_order_flash_attention(), "llama-cpp-python is not Rill's build: reinstall it with `make clean install`"


def test_a_steps_prefill_chunks_go_in_one_call(backend: LlamaBackend, monkeypatch) -> None:
    """On a batch-invariant build the chunks of several prompts share one llama_decode (chunks of
    equal length on consecutive seq_ids then share a pass), next to the decode items' own call."""
    fresh(backend)
    backend.forward([BatchItem(3, prompt(backend, "Hi."), 0, num_logits=0)])
    calls: list[list[int]] = []
    decode = backend._decode
    monkeypatch.setattr(backend, "_decode", lambda items: calls.append([i.seq_id for i in items]) or decode(items))
    tokens = [prompt(backend, f"Count to {n}.") for n in range(3)]
    rows = backend.forward([BatchItem(2, tokens[2], 0), BatchItem(0, tokens[0], 0), BatchItem(1, tokens[1], 0),
                            BatchItem(3, (7,), len(prompt(backend, "Hi.")))])
    assert calls == [[3], [0, 1, 2]]
    assert rows.shape == (4, backend.info.n_vocab)
    fresh(backend)


# A short prompt and draft; then a context past 512 cells with a draft of 64 tokens or more,
# where llama.cpp's stock flash attention splits a lone token's keys over threads and tiles
# many query rows, each summed in another order than one row at a time (Rill's build does not).
@pytest.mark.parametrize("text, draft_len", [("Name five rivers and the seas they flow into.", 17),
                                             ("Summarise: " + "The river runs past the old mill. " * 60, 70)])
def test_a_verification_gives_the_logits_of_decoding_one_token_at_a_time(backend: LlamaBackend, text: str,
                                                                          draft_len: int) -> None:
    """What makes `prediction` lossless: the logits at every position of one item of several
    tokens equal, bit for bit, those of feeding the tokens one by one, next to other decoding
    sequences or not; after dropping a verification's tail, decoding goes on as if it never ran."""
    tokens = prompt(backend, text)
    n = len(tokens)
    fresh(backend)
    first = backend.forward([BatchItem(0, tokens, 0)])[0]
    generated, one_by_one = [int(first.argmax())], []
    for i in range(draft_len + 7):
        row = backend.forward([BatchItem(0, (generated[-1],), n + i)])[0]
        one_by_one.append(row)
        generated.append(int(row.argmax()))

    for neighbours in (False, True):
        fresh(backend)
        backend.forward([BatchItem(0, tokens, 0, num_logits=0)])
        others = {s: prompt(backend, f"Count to {s}.") for s in (1, 2)} if neighbours else {}
        for s, p in others.items():
            backend.forward([BatchItem(s, p, 0, num_logits=0)])
        draft = generated[:draft_len]
        batch = [BatchItem(0, draft, n, num_logits=len(draft)),
                 *(BatchItem(s, (7,), len(p)) for s, p in others.items())]
        rows = backend.forward(batch)
        assert rows.shape == (len(draft) + len(others), backend.info.n_vocab)
        for j in range(len(draft)):
            assert np.array_equal(rows[j], one_by_one[j]), (neighbours, j)
        assert backend.truncate(0, n + 10)  # keep 10 of the draft's positions
        again = backend.forward([BatchItem(0, (generated[10],), n + 10)])[0]
        assert np.array_equal(again, one_by_one[10]), neighbours


def test_swap_exchanges_two_caches_bit_for_bit(backend: LlamaBackend) -> None:
    """Compaction's exchange of a running sequence and an idle cache: each continues, in the
    other's slot, with the numbers it would have had where it was."""
    a, b = prompt(backend, "Name three rivers."), prompt(backend, "What is the capital of France? " * 3)
    fresh(backend)
    backend.forward([BatchItem(0, a, 0, num_logits=0)])
    backend.forward([BatchItem(2, b, 0, num_logits=0)])
    expected = backend.forward([BatchItem(0, [42], len(a)), BatchItem(2, [42], len(b))])
    fresh(backend)
    backend.forward([BatchItem(0, a, 0, num_logits=0)])
    backend.forward([BatchItem(2, b, 0, num_logits=0)])
    backend.swap(0, 2)
    swapped = backend.forward([BatchItem(2, [42], len(a)), BatchItem(0, [42], len(b))])
    assert np.array_equal(swapped, expected)
    backend.swap(1, 3)  # two empty slots: nothing to move, nothing breaks
    assert backend.forward([BatchItem(1, a, 0)]).shape == (1, backend.info.n_vocab)
    fresh(backend)
