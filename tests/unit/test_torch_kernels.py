"""kernels.cpp against kernels.py's PyTorch ops, on random data: the same queries and cache
contents, the same attention output (float32 to rounding, bf16 to its precision), for vector and
lane-by-lane paths (head dims of 64, 128 and 16, blocks of 16 and 8, query groups of 1 to 5,
sequences of 1 to 70 keys), with and without Qwen3's q/k norms."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rill.backends.torch import kernels
from rill.backends.torch.kernels import NativeOps, TorchOps
from rill.backends.torch.kv_cache import KVCache
from rill.backends.torch.layers import AttentionBatch, Rotary
from rill.backends.torch.weights import ModelSpec


def native_ops() -> NativeOps:
    """The compiled kernels; a machine with a C++ compiler must build them (a failure is a test
    failure, not a silent fallback)."""
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler: the native kernels cannot be built here")
    kernels._build()
    return NativeOps()


TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 3e-2}


def spec(heads: int, kv_heads: int, head_dim: int) -> ModelSpec:
    return ModelSpec(arch="llama", num_layers=1, dim=heads * head_dim, ffn_dim=64, num_heads=heads,
                     num_kv_heads=kv_heads, head_dim=head_dim, vocab_size=10, rope_theta=10000.0,
                     rms_eps=1e-5, context_length=512)


def filled_cache(s: ModelSpec, dtype, block_size: int, lengths: list[int], seed: int):
    """A cache whose sequences hold random keys and values at the slots the block manager gave
    them (blocks scattered over the pool), and the step layouts both kinds of ops need."""
    cache = KVCache(s, 64, block_size, dtype, torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        cache.k.normal_(generator=gen)
        cache.v.normal_(generator=gen)
    for blocks in range(3):  # some churn, so that tables are not 0, 1, 2...
        cache.blocks.append(100 + blocks, np.arange(block_size * 2, dtype=np.int32), 0)
    cache.blocks.release(101)
    for seq, n in enumerate(lengths):
        cache.blocks.append(seq, np.arange(n, dtype=np.int32) + seq, 0)
    width = max(len(cache.blocks.block_table(i)) for i in range(len(lengths)))
    table = np.zeros((len(lengths), width), np.int64)
    for i in range(len(lengths)):
        t = cache.blocks.block_table(i)
        table[i, : len(t)] = t
    lens = np.asarray(lengths, np.int64)
    bias = np.where(np.arange(width * block_size) < lens[:, None], 0.0, -np.inf).astype(np.float32)
    batch = AttentionBatch(slots=None, key_index=None, value_rows=None, num_decode=len(lengths),
                           decode_tables=torch.from_numpy(table), decode_lengths=torch.from_numpy(lens),
                           decode_rows=torch.from_numpy(cache.block_rows(table)),
                           decode_bias=torch.from_numpy(bias.reshape(len(lengths), 1, 1, -1)), spans=())
    return cache, batch


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("heads, kv_heads, head_dim, block_size", [
    (9, 3, 64, 16),   # SmolLM2: the vector path, three query heads a key head
    (8, 2, 128, 16),  # Llama 3 8B's shape: eight vectors a row, four heads a group
    (5, 1, 64, 16),   # a group of five: four heads, then one
    (4, 4, 16, 16),   # one lane vector a row: the lane-by-lane value path
    (6, 2, 64, 8),    # blocks of 8: the lane-by-lane score path
])
def test_decode_attention_equals_the_pytorch_ops(dtype, heads, kv_heads, head_dim, block_size):
    native = native_ops()
    s = spec(heads, kv_heads, head_dim)
    lengths = [1, 17, 70, 16, 33]
    cache, batch = filled_cache(s, dtype, block_size, lengths, seed=heads * head_dim)
    q = torch.randn(len(lengths), heads, head_dim, generator=torch.Generator().manual_seed(1)).to(dtype)
    scale = head_dim**-0.5
    with torch.inference_mode():
        want = TorchOps.decode_attention(q, cache.k[0], cache.v[0], batch, scale).float()
        got = native.decode_attention(q, cache.k[0], cache.v[0], batch, scale).float()
    assert got.shape == (len(lengths), heads, head_dim)
    torch.testing.assert_close(got, want, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("qk_norm", [False, True], ids=["plain", "qk-norm"])
def test_rope_store_rotates_and_writes_what_the_pytorch_ops_write(dtype, qk_norm):
    native = native_ops()
    heads, kv_heads, d = 4, 2, 64
    s = spec(heads, kv_heads, d)
    gen = torch.Generator().manual_seed(7)
    n = 21
    qkv = torch.randn(n, (heads + 2 * kv_heads) * d, generator=gen).to(dtype)
    positions = torch.arange(40, 40 + n)
    norms = (torch.rand(d, generator=gen).to(dtype) + 0.5, torch.rand(d, generator=gen).to(dtype) + 0.5) if qk_norm else (None, None)
    rotary = Rotary(d, 10000.0, 128, torch.device("cpu"))
    results = []
    for ops in (TorchOps(), native):
        cache = KVCache(s, 8, 16, dtype, torch.device("cpu"))
        with torch.inference_mode():
            cache.k.zero_()
            cache.v.zero_()
        placed = cache.blocks.append(0, np.arange(n, dtype=np.int32), 0)
        batch = AttentionBatch(slots=torch.from_numpy(placed.slots), key_index=torch.from_numpy(cache.key_index(placed.slots)),
                               value_rows=torch.from_numpy(cache.value_rows(placed.slots)), num_decode=0,
                               decode_tables=None, decode_lengths=None, decode_rows=None, decode_bias=None, spans=())
        with torch.inference_mode():
            qk = ops.rope_store(qkv, rotary, positions, batch, cache.k[0], cache.v[0], heads, *norms, 1e-5)
        assert qk.shape == (n, heads + kv_heads, d)
        results.append((qk.float(), cache.k[0].float(), cache.v[0].float()))
    for want, got in zip(results[0], results[1]):
        torch.testing.assert_close(got, want, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])
    assert results[1][2].abs().sum() > 0 and results[1][1].abs().sum() > 0  # something was written


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_add_rms_norm_and_silu_mul_equal_the_pytorch_ops(dtype):
    native = native_ops()
    gen = torch.Generator().manual_seed(3)
    h = (torch.randn(19, 72, generator=gen) * 3).to(dtype)
    x = torch.randn(19, 72, generator=gen).to(dtype)
    w = (torch.rand(72, generator=gen) + 0.5).to(dtype)
    h_native, h_torch = h.clone(), h.clone()
    out_native = native.add_rms_norm(h_native, x, w, 1e-5)
    out_torch = TorchOps.add_rms_norm(h_torch, x, w, 1e-5)
    assert torch.equal(h_native, h_torch)  # the residual, rounded to its dtype alike
    torch.testing.assert_close(out_native.float(), out_torch.float(), atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])
    gu = (torch.randn(19, 2 * 40, generator=gen) * 4).to(dtype)
    torch.testing.assert_close(native.silu_mul(gu).float(), TorchOps.silu_mul(gu).float(),
                               atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])
    big = torch.tensor([[-200.0, -90.0, 0.0, 90.0, 1.0, 2.0]], dtype=torch.float32)  # exp's clamped range
    torch.testing.assert_close(native.silu_mul(big), F.silu(big[:, :3]) * big[:, 3:])


def test_the_pytorch_ops_are_chosen_off_the_cpu_or_when_switched_off(monkeypatch):
    assert not kernels.load_ops(torch.device("meta")).native
    monkeypatch.setenv(kernels.ENV_SWITCH, "0")
    assert not kernels.load_ops(torch.device("cpu")).native


def test_a_finished_build_loads_without_the_build_lock(monkeypatch):
    """A built library is loaded as it is: a lock file in the build folder (a process killed while
    building leaves one, and PyTorch's loader waits on it forever) does not stop a start."""
    native_ops()
    from torch.utils import cpp_extension

    lock = Path(cpp_extension._get_build_directory(kernels.build_name(), verbose=False)) / "lock"
    lock.touch()  # fresh: only a build would wait on it

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the finished build was compiled or checked again")

    monkeypatch.setattr(cpp_extension, "load", no_rebuild)
    try:
        kernels._build()  # returns without calling PyTorch's loader or waiting on the lock
    finally:
        lock.unlink()


def test_a_lock_left_by_a_dead_build_is_removed_and_a_fresh_one_kept(tmp_path):
    lock = tmp_path / "lock"
    lock.touch()
    kernels._clear_stale_lock(lock)
    assert lock.exists()  # another process may be building right now
    stale = time.time() - kernels.STALE_LOCK_SECONDS - 60
    os.utime(lock, (stale, stale))
    kernels._clear_stale_lock(lock)
    assert not lock.exists()
    kernels._clear_stale_lock(lock)  # none: nothing to do


def test_float32_activations_over_a_bf16_cache_read_and_write_it_as_a_float32_one():
    """int8/int4 weights compute in float32 over a bf16 cache: attention reads its values exactly
    (bf16 widens to float32 without error), and rope_store rounds what it stores once."""
    native = native_ops()
    s = spec(9, 3, 64)
    lengths = [1, 17, 70]
    cache, batch = filled_cache(s, torch.bfloat16, 16, lengths, seed=5)
    q = torch.randn(len(lengths), 9, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        mixed = native.decode_attention(q, cache.k[0], cache.v[0], batch, 0.125)
        widened = native.decode_attention(q, cache.k[0].float(), cache.v[0].float(), batch, 0.125)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, widened)

    heads, kv_heads, d, n = 4, 2, 64, 21
    s = spec(heads, kv_heads, d)
    qkv = torch.randn(n, (heads + 2 * kv_heads) * d, generator=torch.Generator().manual_seed(3))
    rotary = Rotary(d, 10000.0, 128, torch.device("cpu"))
    stored = []
    for dtype in (torch.float32, torch.bfloat16):
        cache = KVCache(s, 8, 16, dtype, torch.device("cpu"))
        placed = cache.blocks.append(0, np.arange(n, dtype=np.int32), 0)
        batch = AttentionBatch(slots=torch.from_numpy(placed.slots), key_index=None, value_rows=None, num_decode=0,
                               decode_tables=None, decode_lengths=None, decode_rows=None, decode_bias=None, spans=())
        with torch.inference_mode():
            qk = native.rope_store(qkv, rotary, torch.arange(n), batch, cache.k[0], cache.v[0], heads, None, None, 1e-5)
        stored.append((qk, cache.k[0][:2], cache.v[0][:2]))
    (qk32, k32, v32), (qk16, k16, v16) = stored
    assert torch.equal(qk16, qk32)  # the rotated queries and keys stay float32
    assert torch.equal(k16, k32.bfloat16()) and torch.equal(v16, v32.bfloat16())
