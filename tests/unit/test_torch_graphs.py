"""CUDA graphs for decode steps, their shape and dtype logic on the CPU: steps padded to a bucket
give the unpadded step's logits for the real sequences, the padding rows stay in the scratch
block, one set of buffers serves every step of a bucket, prompts run eagerly. On a machine with
a GPU the same checks run on captured graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rill.backends.base import BatchItem
from rill.backends.torch.backend import TorchBackend
from rill.backends.torch.graphs import CudaReplay, EagerReplay, row_bucket, width_bucket
from rill.backends.torch.kernels import TorchOps
from rill.backends.torch.model import LlamaModel
from rill.config import ModelConfig
from tests.unit.test_torch_backend import PROMPT, SPEC, TOL, WEIGHTS, ByteVocab


def backend(graphs: str | None, *, dtype=torch.float32, device: str = "cpu") -> TorchBackend:
    # the PyTorch ops: what a GPU runs
    model = LlamaModel(SPEC, WEIGHTS.items(), dtype=dtype, device=torch.device(device), max_positions=256,
                       ops=TorchOps())
    return TorchBackend(model, ByteVocab(), ModelConfig(n_ctx=256, parallel=8), name="tiny", fingerprint="fp",
                        graphs=graphs)


def decode_run(b: TorchBackend, prompts: list[list[int]], steps: int) -> list[np.ndarray]:
    """Prefill each prompt, then greedy decode all of them together; every step's logits."""
    b.forward([BatchItem(i, p, 0, num_logits=0) for i, p in enumerate(prompts)])
    last = [p[-1] for p in prompts]
    out = []
    for step in range(steps):
        logits = b.forward([BatchItem(i, [last[i]], len(p) + step) for i, p in enumerate(prompts)])
        out.append(logits)
        last = [int(t) % 256 for t in logits.argmax(axis=1)]
    return out


def test_buckets():
    assert [row_bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17, 33)] == [1, 2, 4, 4, 8, 8, 16, 16, 24, 40]
    assert [width_bucket(n) for n in (1, 8, 9, 16, 17, 100)] == [8, 8, 16, 16, 32, 128]


def test_padded_replays_give_the_unpadded_steps_logits():
    prompts = [PROMPT[:7], PROMPT, list(range(100, 123))]  # three rows: a bucket of four
    plain = decode_run(backend(None), prompts, 12)
    graphed_backend = backend("eager")
    graphed = decode_run(graphed_backend, prompts, 12)
    for a, b in zip(plain, graphed):
        assert b.shape == a.shape == (3, SPEC.vocab_size)
        np.testing.assert_allclose(b, a, atol=TOL, rtol=TOL)
    # positions 7..52 fit 4 blocks: one bucket, one set of buffers for all twelve steps
    assert list(graphed_backend.graphs.graphs) == [(4, 8)]


def test_the_buffers_have_the_steps_shapes_and_types_and_padding_stays_in_the_scratch_block():
    b = backend("eager", dtype=torch.bfloat16)
    b.forward([BatchItem(0, PROMPT, 0, num_logits=0)])
    logits = b.forward([BatchItem(0, [5], len(PROMPT))])
    assert logits.dtype == np.float32 and logits.shape == (1, SPEC.vocab_size)
    (bucket, graph), = b.graphs.graphs.items()
    assert bucket == (1, 8)
    step = graph.inputs
    assert step.tokens.dtype == torch.int64 and step.tokens.shape == (1,)
    assert step.attention.decode_bias.dtype == torch.float32 and step.attention.decode_bias.shape == (1, 1, 1, 128)
    assert step.attention.decode_rows.shape == (SPEC.num_kv_heads * 8,)
    # two sequences: a bucket of two, no padding; three: four rows, one padded into the scratch block
    b.forward([BatchItem(1, PROMPT[:5], 0, num_logits=0)])
    b.forward([BatchItem(0, [6], len(PROMPT) + 1), BatchItem(1, [7], 5)])
    b.forward([BatchItem(2, [1, 2, 3], 0, num_logits=0)])
    kept = b.cache.k[:, : b.cache.scratch_block].clone()
    b.forward([BatchItem(0, [8], len(PROMPT) + 2), BatchItem(1, [9], 6), BatchItem(2, [4], 3)])
    assert set(b.graphs.graphs) == {(1, 8), (2, 8), (4, 8)}
    changed = (b.cache.k[:, : b.cache.scratch_block] != kept).any(dim=(0, 2, 3, 4)).nonzero().flatten().tolist()
    owned = {blk for s in (0, 1, 2) for blk in b.cache.blocks.block_table(s)}
    assert set(changed) <= owned  # only the real sequences' blocks were written


def test_steps_with_prompt_tokens_run_eagerly():
    b = backend("eager")
    b.forward([BatchItem(0, PROMPT, 0)])
    b.forward([BatchItem(0, [1], len(PROMPT)), BatchItem(1, PROMPT[:9], 0)])  # decode + prefill: eager
    assert not b.graphs.graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: the capture itself needs one")
def test_captured_graphs_on_a_gpu_give_the_eager_logits():
    prompts = [PROMPT[:7], PROMPT, list(range(100, 123))]
    plain = decode_run(backend(None, device="cuda"), prompts, 12)
    graphed_backend = backend("cuda", device="cuda")
    graphed = decode_run(graphed_backend, prompts, 12)
    assert isinstance(next(iter(graphed_backend.graphs.graphs.values())), CudaReplay)
    for a, b in zip(plain, graphed):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)


def test_eager_replay_is_what_the_cpu_gets():
    assert isinstance(backend("eager").graphs.replay, type) and backend("eager").graphs.replay is EagerReplay
    assert backend(None).graphs is None  # on the CPU no graphs unless asked
