"""Weight-only int8/int4 linears (quant.py, quant_matmul.cpp): the packed weights hold what the
quantization promises, the kernel multiplies by exactly those values, and a row's result is the
same bits whatever else is in the call; through the backend, a token's logits are the same bits
alone, chunked, or amid other sequences (Backend.batch_invariant)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rill.backends.base import BackendError, BatchItem
from rill.backends.torch.backend import TorchBackend
from rill.backends.torch.model import LlamaModel
from rill.backends.torch.quant import QuantLinear
from rill.config import ModelConfig
from tests.unit.test_torch_backend import SPEC, WEIGHTS, ByteVocab, reference_logits
from tests.unit.test_torch_kernels import native_ops

BITS = [8, 4]


@pytest.fixture(autouse=True)
def kernels():
    return native_ops()  # builds them (or skips where no compiler is at hand)


def weight(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05


@pytest.mark.parametrize("bits", BITS)
def test_quantized_weights_are_within_half_a_step_of_the_originals(bits):
    w = weight(70, 96)  # 70 outputs: two whole tiles of 32 and a padded one
    layer = QuantLinear(w, None, bits)
    wq = layer.dequantized()
    assert wq.shape == w.shape
    group = 96 if bits == 8 else 32
    grouped = w.view(70, -1, group)
    if bits == 8:  # symmetric: absmax / 127
        step = grouped.abs().amax(-1) / 127
    else:  # min to max in 15 steps
        step = (grouped.amax(-1) - grouped.amin(-1)) / 15
    step = step.repeat_interleave(group, 1)
    assert bool(((wq - w).abs() <= step / 2 * 1.001 + 1e-7).all())
    padded = 96 * 96  # the outputs padded to 3 tiles of 32
    assert layer.nbytes == padded * bits // 8 + 96 * (96 // group) * 4 * (1 if bits == 8 else 2)  # + scales, mins


def test_int4_keeps_weights_already_on_a_4_bit_grid():
    """A Q4_1 file's weights (scale * q + min, q in 0..15 spanning the group) come back as they were."""
    g = torch.Generator().manual_seed(3)
    q = torch.randint(0, 16, (64, 64), generator=g).float()
    q[:, ::32], q[:, 1::32] = 0, 15  # each group spans the grid, as llama.cpp's quantizer makes it
    scale = torch.rand(64, 2, 1, generator=g) * 0.01 + 0.001
    low = torch.randn(64, 2, 1, generator=g) * 0.05
    w = (q.view(64, 2, 32) * scale + low).view(64, 64)
    torch.testing.assert_close(QuantLinear(w, None, 4).dequantized(), w, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 17])
def test_the_kernel_multiplies_by_the_dequantized_weights(bits, rows):
    w = weight(100, 576, seed=1)  # K over two 256-row chunks
    bias = torch.randn(100)
    layer = QuantLinear(w, bias, bits)
    x = torch.randn(rows, 576)
    if bits == 8:  # int8 rounds the activations to bf16 (the dot-product instruction's input)
        x = x.to(torch.bfloat16).float()
    expected = torch.nn.functional.linear(x.double(), layer.dequantized().double(), bias.double()).float()
    torch.testing.assert_close(layer(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("k", [320, 33])
def test_a_rows_result_is_the_same_bits_whatever_else_is_in_the_call(bits, k):
    """Alone, a row runs float32 chains; int8 with 4 rows or more runs AVX512-BF16's dot product
    where the CPU has it (an odd K pairs its last value with a zero): the same bits, tiny and huge
    activations included."""
    if bits == 4 and k % 32:
        pytest.skip("int4 rows divide into groups of 32")
    layer = QuantLinear(weight(96, k, seed=2), None, bits)
    x = torch.randn(20, k) * torch.logspace(-36, 36, 20).unsqueeze(1)
    x[0, 0], x[1, :3], x[2, 1] = 1e-35, 0.0, -0.0
    alone = torch.cat([layer(x[i : i + 1]) for i in range(20)])
    for rows in (2, 3, 4, 7, 8, 9, 20):
        together = torch.cat([layer(x[i : i + rows]) for i in range(0, 20, rows)])
        assert torch.equal(together.view(torch.int32), alone.view(torch.int32)), rows


def test_bf16_activations_come_back_in_bf16():
    layer = QuantLinear(weight(64, 64), None, 8)
    x = torch.randn(3, 64)
    y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), layer(x.bfloat16().float()).bfloat16().float())


def test_int4_refuses_rows_that_do_not_divide_into_groups():
    with pytest.raises(BackendError, match="multiple of 32"):
        QuantLinear(weight(64, 48), None, 4)


def make_backend(weights: str, parallel=4, n_ctx=256) -> TorchBackend:
    model = LlamaModel(SPEC, WEIGHTS.items(), dtype=torch.float32, device=torch.device("cpu"),
                       max_positions=n_ctx, ops=native_ops(), weights=weights)
    return TorchBackend(model, ByteVocab(), ModelConfig(n_ctx=n_ctx, parallel=parallel), name="tiny",
                        fingerprint="fp_tiny")


PROMPT = list(range(10, 50))
OTHER = list(range(100, 137))


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_logits_are_the_same_bits_alone_chunked_and_amid_other_sequences(weights):
    whole = make_backend(weights)
    assert whole.batch_invariant
    alone = whole.forward([BatchItem(0, PROMPT, 0, num_logits=len(PROMPT))])

    chunked = make_backend(weights)
    rows = [chunked.forward([BatchItem(0, PROMPT[:13], 0, num_logits=13)])]
    rows.append(chunked.forward([BatchItem(0, PROMPT[13:30], 13, num_logits=17)]))
    for pos in range(30, 40):
        rows.append(chunked.forward([BatchItem(0, [PROMPT[pos]], pos)]))
    assert np.array_equal(np.concatenate(rows), alone)

    crowded = make_backend(weights)  # another sequence prefilled, then decoding beside this one
    crowded.forward([BatchItem(1, OTHER[:30], 0)])
    out = crowded.forward([BatchItem(1, [OTHER[30]], 30), BatchItem(0, PROMPT[:20], 0, num_logits=20),
                           BatchItem(2, OTHER[:9], 0)])
    mine = [out[1:21]]
    for pos in range(20, 40):
        step = crowded.forward([BatchItem(0, [PROMPT[pos]], pos), BatchItem(1, [OTHER[pos % 7]], 11 + pos)])
        mine.append(step[:1])
    assert np.array_equal(np.concatenate(mine), alone)


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_the_model_computes_the_dense_reference_over_the_dequantized_weights(weights, monkeypatch):
    logits = make_backend(weights).forward([BatchItem(0, PROMPT, 0, num_logits=len(PROMPT))])
    bits = 8 if weights == "int8" else 4
    for name, value in list(WEIGHTS.items()):  # the reference reads the module's WEIGHTS
        if name.split(".")[-1] in ("wqkv", "wo", "w_gate_up", "w_down", "lm_head"):
            kept = 8 if name == "lm_head" else bits  # int4 layers keep an int8 output head
            monkeypatch.setitem(WEIGHTS, name, QuantLinear(torch.from_numpy(value), None, kept).dequantized().numpy())
    # float32 summed in another order (int4: scale * sum(x q) + min * sum(x), not sum(x w)); the
    # cache holds keys and values in bf16, where that order's last-bit differences can round a
    # value one bf16 step (0.4%) apart: 1e-3 in a logit here. int8's linears round their inputs
    # to bf16 too, at every layer: 2e-2 here (logits up to 6.3; without the rounding in the
    # reference, 5.4e-2)
    int8 = frozenset({"wqkv", "wo", "w_gate_up", "w_down", "lm_head"} if bits == 8 else {"lm_head"})
    reference = reference_logits(PROMPT, kv_dtype=torch.bfloat16, bf16_inputs=int8)
    tolerance = {"atol": 3e-2, "rtol": 0} if bits == 8 else {"atol": 5e-3, "rtol": 5e-3}
    np.testing.assert_allclose(logits, reference, **tolerance)


def test_quantized_weights_keep_a_bf16_cache_and_float_weights_their_dtype():
    assert make_backend("int8").cache.k.dtype == torch.bfloat16
    assert make_backend("float").cache.k.dtype == torch.float32


def test_float_weights_are_not_promised_batch_invariant():
    assert not make_backend("float").batch_invariant
