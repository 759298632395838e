"""The torch backend on a tiny randomly initialised Llama built here: its logits equal a plain dense
reference implementation's, however the tokens are batched, chunked, shared or copied; a full
paged cache fails cleanly; device and dtype are settings whose shapes and types hold on the CPU.
Every test runs twice: on the compiled CPU kernels and on their PyTorch equivalents (kernels.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from rill.backends.base import BackendError, BatchItem, KVCacheFull
from rill.backends.torch.backend import TorchBackend
from rill.backends.torch.device import cpu_has_native_bf16, resolve_device, resolve_dtype, resolve_weights
from rill.backends.torch.kernels import TorchOps
from rill.backends.torch.model import LlamaModel
from rill.backends.torch.weights import ModelSpec, unpermute
from rill.config import ModelConfig
from tests.unit.test_torch_kernels import native_ops

SPEC = ModelSpec(arch="llama", num_layers=2, dim=64, ffn_dim=96, num_heads=4, num_kv_heads=2, head_dim=16,
                 vocab_size=300, rope_theta=10000.0, rms_eps=1e-5, context_length=512)
TOL = 2e-5  # float32 on different kernel paths


class ByteVocab:
    """Bytes as tokens (and 44 more that spell nothing, filling the tiny model's 300), no
    specials: enough for the backend's protocol methods."""

    n_vocab = 300
    chat_template = None
    bos_token = eos_token = ""
    add_bos = False

    def tokenize(self, text, *, add_bos, parse_special=True):
        return list(text.encode())

    def token_bytes(self, token):
        return bytes([token]) if token < 256 else b""

    def is_end_of_generation(self, token):
        return False

    def guidance_tokenizer(self):
        raise NotImplementedError

    def close(self):
        pass


def random_weights(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    out = {"embed": w(spec.vocab_size, spec.dim, scale=1.0), "norm": 1 + w(spec.dim, scale=0.1),
           "lm_head": w(spec.vocab_size, spec.dim)}
    for i in range(spec.num_layers):
        out |= {f"layers.{i}.wqkv": w(spec.qkv_dim, spec.dim), f"layers.{i}.wo": w(spec.dim, spec.dim),
                f"layers.{i}.attn_norm": 1 + w(spec.dim, scale=0.1), f"layers.{i}.ffn_norm": 1 + w(spec.dim, scale=0.1),
                f"layers.{i}.w_gate_up": w(2 * spec.ffn_dim, spec.dim), f"layers.{i}.w_down": w(spec.dim, spec.ffn_dim)}
    return out


WEIGHTS = random_weights(SPEC)


OPS = [TorchOps()]


@pytest.fixture(autouse=True, params=["native", "pytorch"])
def ops(request):
    """The operations every backend of the test is built with."""
    OPS[0] = native_ops() if request.param == "native" else TorchOps()
    return OPS[0]


def make_backend(*, dtype=torch.float32, parallel=4, n_ctx=256, **config) -> TorchBackend:
    model = LlamaModel(SPEC, WEIGHTS.items(), dtype=dtype, device=torch.device("cpu"), max_positions=n_ctx,
                       ops=OPS[0])
    return TorchBackend(model, ByteVocab(), ModelConfig(n_ctx=n_ctx, parallel=parallel, **config),
                        name="tiny", fingerprint="fp_tiny")


def reference_logits(tokens: list[int], kv_dtype: torch.dtype | None = None,
                     bf16_inputs: frozenset[str] = frozenset()) -> np.ndarray:
    """A dense, unpaged Llama forward written the plain way (Hugging Face's formulation); keys
    and values rounded to kv_dtype, if given, as a cache of that dtype holds them, and the inputs
    of the linears named in bf16_inputs ("wqkv", "lm_head", ...) rounded to bf16, as int8's do."""
    s, w = SPEC, {k: torch.from_numpy(v) for k, v in WEIGHTS.items()}

    def linear(t, name):
        role = name.split(".")[-1]
        return (t.to(torch.bfloat16).float() if role in bf16_inputs else t) @ w[name].T
    x = w["embed"][torch.tensor(tokens)]
    n = len(tokens)
    inv = 1.0 / s.rope_theta ** (torch.arange(0, s.head_dim, 2, dtype=torch.float64) / s.head_dim)
    ang = torch.outer(torch.arange(n, dtype=torch.float64), inv).float()
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

    def rope(t):  # [heads, n, d]
        half = t.shape[-1] // 2
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin

    def norm(t, g):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + s.rms_eps) * g

    causal = torch.ones(n, n).tril().bool()
    for i in range(s.num_layers):
        p = f"layers.{i}."
        qkv = linear(norm(x, w[p + "attn_norm"]), p + "wqkv")
        q, k, v = qkv.split([s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim, s.num_kv_heads * s.head_dim], -1)
        q = rope(q.view(n, s.num_heads, s.head_dim).transpose(0, 1))
        k = rope(k.view(n, s.num_kv_heads, s.head_dim).transpose(0, 1))
        v = v.view(n, s.num_kv_heads, s.head_dim).transpose(0, 1)
        if kv_dtype is not None:
            k, v = k.to(kv_dtype).float(), v.to(kv_dtype).float()
        group = s.num_heads // s.num_kv_heads
        k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
        scores = (q @ k.transpose(1, 2)) / s.head_dim**0.5
        attn = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1) @ v
        x = x + linear(attn.transpose(0, 1).reshape(n, -1), p + "wo")
        gate, up = linear(norm(x, w[p + "ffn_norm"]), p + "w_gate_up").chunk(2, -1)
        x = x + linear(torch.nn.functional.silu(gate) * up, p + "w_down")
    return linear(norm(x, w["norm"]), "lm_head").numpy()


PROMPT = list(range(10, 50))  # 40 tokens: two full 16-token blocks and a partial one


def test_a_prompt_in_one_step_matches_the_dense_reference():
    logits = make_backend().forward([BatchItem(0, PROMPT, 0, num_logits=len(PROMPT))])
    assert logits.shape == (len(PROMPT), SPEC.vocab_size) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, reference_logits(PROMPT), atol=TOL, rtol=TOL)


def test_chunked_prefill_then_decoding_sees_the_same_keys():
    backend = make_backend()
    rows = [backend.forward([BatchItem(0, PROMPT[:13], 0, num_logits=13)])]
    rows.append(backend.forward([BatchItem(0, PROMPT[13:30], 13, num_logits=17)]))
    for pos in range(30, 40):
        rows.append(backend.forward([BatchItem(0, [PROMPT[pos]], pos)]))
    np.testing.assert_allclose(np.concatenate(rows), reference_logits(PROMPT), atol=TOL, rtol=TOL)


def test_a_mixed_step_gives_each_sequence_its_own_logits():
    backend = make_backend()
    a, b, c = PROMPT[:25], list(range(100, 107)), list(range(200, 240))
    backend.forward([BatchItem(0, a, 0, num_logits=0), BatchItem(1, b, 0, num_logits=0)])
    # two decoding sequences of different lengths (padded keys), a prefill chunk, a verification
    out = backend.forward([BatchItem(0, [a[-1] + 1], 25), BatchItem(2, c, 0, num_logits=1),
                           BatchItem(1, [7, 8, 9], 7, num_logits=3)])
    assert out.shape == (5, SPEC.vocab_size)
    np.testing.assert_allclose(out[0], reference_logits([*a, a[-1] + 1])[-1], atol=TOL, rtol=TOL)
    np.testing.assert_allclose(out[1], reference_logits(c)[-1], atol=TOL, rtol=TOL)
    np.testing.assert_allclose(out[2:], reference_logits([*b, 7, 8, 9])[-3:], atol=TOL, rtol=TOL)


def test_what_lies_past_a_sequence_in_its_last_block_never_reaches_the_logits():
    # attention reads whole blocks and masks the tail: zeros in a fresh cache (0 * NaN would
    # not be 0), another sequence's stale keys in a reused block
    backend = make_backend()
    assert not backend.cache.k.any() and not backend.cache.v.any()
    backend.forward([BatchItem(0, list(range(60, 92)), 0, num_logits=0)])  # two full blocks, unnamed once cut
    backend.truncate(0, 3)
    backend.release(0)
    a, b = PROMPT[:21], PROMPT[:5]  # partial blocks over the stale ones
    backend.forward([BatchItem(0, a, 0, num_logits=0), BatchItem(1, b, 0, num_logits=0)])
    out = backend.forward([BatchItem(0, [3], 21), BatchItem(1, [4], 5)])
    np.testing.assert_allclose(out[0], reference_logits([*a, 3])[-1], atol=TOL, rtol=TOL)
    np.testing.assert_allclose(out[1], reference_logits([*b, 4])[-1], atol=TOL, rtol=TOL)


def test_a_shared_prefix_is_mapped_not_recomputed_and_changes_nothing():
    backend = make_backend()
    backend.forward([BatchItem(0, PROMPT, 0)])
    other = [*PROMPT[:35], 99, 98]
    assert backend.mapped_prefix(1, other, 0) == 32  # foretold for the engine's pacing
    assert backend.mapped_prefix(2, [99, *PROMPT[1:]], 0) == 0
    out = backend.forward([BatchItem(1, other, 0, num_logits=2)])
    assert backend.cache.blocks.num_hits == 2  # the two full blocks
    assert backend.cache.blocks.seqs[1].blocks[:2] == backend.cache.blocks.seqs[0].blocks[:2]
    np.testing.assert_allclose(out, reference_logits(other)[-2:], atol=TOL, rtol=TOL)


def test_a_prompt_resumed_inside_a_block_still_maps_its_cached_whole_blocks():
    # the engine kept 5 tokens another prompt began with: the rest is not block-aligned, so the
    # backend starts again at position 0 and finds this prompt's two whole blocks by name
    backend = make_backend()
    backend.forward([BatchItem(0, PROMPT, 0)])
    backend.forward([BatchItem(1, PROMPT[:5], 0, num_logits=0)])
    hits = backend.cache.blocks.num_hits
    assert backend.mapped_prefix(1, PROMPT[5:], 5) == 32 - 5  # of the tokens the engine sends
    out = backend.forward([BatchItem(1, PROMPT[5:], 5, num_logits=2)])
    assert backend.cache.blocks.num_hits - hits == 2
    assert backend.cache.blocks.seqs[1].blocks[:2] == backend.cache.blocks.seqs[0].blocks[:2]
    np.testing.assert_allclose(out, reference_logits(PROMPT)[-2:], atol=TOL, rtol=TOL)


def test_copies_share_blocks_and_diverge_by_copy_on_write():
    backend = make_backend()
    backend.forward([BatchItem(0, PROMPT[:20], 0)])
    backend.copy(0, 1)
    a = backend.forward([BatchItem(0, [1], 20), BatchItem(1, [2], 20)])
    b = backend.forward([BatchItem(0, [3], 21), BatchItem(1, [4], 21)])
    np.testing.assert_allclose(a[0], reference_logits([*PROMPT[:20], 1])[-1], atol=TOL, rtol=TOL)
    np.testing.assert_allclose(b[1], reference_logits([*PROMPT[:20], 2, 4])[-1], atol=TOL, rtol=TOL)
    np.testing.assert_allclose(b[0], reference_logits([*PROMPT[:20], 1, 3])[-1], atol=TOL, rtol=TOL)


def test_truncate_then_new_tokens_are_as_if_fresh():
    backend = make_backend()
    backend.forward([BatchItem(0, PROMPT, 0)])
    assert backend.truncate(0, 18)
    out = backend.forward([BatchItem(0, [5, 6, 7], 18, num_logits=3)])
    np.testing.assert_allclose(out, reference_logits([*PROMPT[:18], 5, 6, 7])[-3:], atol=TOL, rtol=TOL)


def test_a_full_cache_raises_kv_cache_full_and_the_step_can_be_retried():
    backend = make_backend(parallel=1, n_ctx=256, n_batch=512)  # 16 blocks of 16
    backend.forward([BatchItem(0, list(range(200)), 0, num_logits=0)])
    before = backend.cache.blocks.num_available
    with pytest.raises(KVCacheFull):
        backend.forward([BatchItem(1, list(range(1, 100)), 0)])
    assert backend.cache.blocks.num_available == before and backend.cache.blocks.length(1) == 0
    backend.release(0)
    out = backend.forward([BatchItem(1, list(range(1, 100)), 0)])
    np.testing.assert_allclose(out[0], reference_logits(list(range(1, 100)))[-1], atol=TOL, rtol=TOL)


def test_an_embedding_padded_past_the_tokenizer_gives_logits_for_its_tokens_only():
    # Qwen's embedding has rows no token names: they must never be sampled
    backend = make_backend()
    backend.n_vocab = 256
    out = backend.forward([BatchItem(0, PROMPT, 0, num_logits=2)])
    assert out.shape == (2, 256)
    np.testing.assert_allclose(out, reference_logits(PROMPT)[-2:, :256], atol=TOL, rtol=TOL)


def test_past_the_context_is_a_backend_error_and_nothing_is_kept():
    backend = make_backend(n_ctx=256)
    with pytest.raises(BackendError):
        backend.forward([BatchItem(0, list(range(257)), 0)])
    assert backend.cache.blocks.length(0) == 0


def test_bf16_gives_float32_logits_of_the_same_shape_close_to_fp32():
    backend = make_backend(dtype=torch.bfloat16)
    assert backend.cache.k.dtype == torch.bfloat16
    out = backend.forward([BatchItem(0, PROMPT, 0, num_logits=4)])
    assert out.dtype == np.float32 and out.shape == (4, SPEC.vocab_size)
    ref = reference_logits(PROMPT)[-4:]
    assert np.abs(out - ref).max() / np.abs(ref).max() < 0.05


def test_unpermute_inverts_llama_cpps_permutation():
    heads, rows = 3, 12  # convert_hf_to_gguf's LlamaModel.permute, as written there
    w = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    permuted = w.reshape(heads, 2, rows // heads // 2, 2).swapaxes(1, 2).reshape(w.shape)
    np.testing.assert_array_equal(unpermute(permuted, heads), w)


def test_device_and_dtype_are_resolved_or_refused_clearly(tmp_path):
    cpu = resolve_device("cpu")
    assert resolve_dtype("fp32", cpu) is torch.float32 and resolve_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(BackendError, match="fp16 is for GPUs"):
        resolve_dtype("fp16", cpu)
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="no CUDA GPU"):
            resolve_device("cuda")
    flags = tmp_path / "cpuinfo"
    flags.write_text("flags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    assert cpu_has_native_bf16(flags)
    flags.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert not cpu_has_native_bf16(flags)
    assert resolve_dtype("auto", cpu) is (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)


def test_auto_weights_are_int8_on_a_cpu_unless_a_dtype_or_the_kernels_say_otherwise():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_weights("auto", cpu) == "int8"
    assert resolve_weights("auto", cpu, "fp32") == "float"  # a --dtype asks for float weights in it
    assert resolve_weights("auto", cpu, native=False) == "float"  # no kernels (RILL_TORCH_KERNELS=0, no compiler)
    assert resolve_weights("auto", gpu) == "float"
    assert resolve_weights("int4", cpu, "fp32") == "int4" and resolve_weights("float", cpu) == "float"
    with pytest.raises(BackendError, match="CPU kernels"):
        resolve_weights("int8", gpu)


def resident_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) * 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the resident size from /proc")
def test_the_cpu_kv_cache_reads_as_zeros_and_is_committed_only_where_written():
    from rill.backends.torch.kv_cache import zeroed

    before = resident_bytes()
    cache = zeroed((8, 4096, 3, 64, 16), torch.bfloat16, torch.device("cpu"))  # 384 MiB
    assert cache.shape == (8, 4096, 3, 64, 16) and cache.dtype == torch.bfloat16 and cache.is_contiguous()
    assert resident_bytes() - before < 64 << 20  # nothing committed yet
    cache[2, 17] = 1.5
    assert resident_bytes() - before < 64 << 20  # one block of one layer: a page or two
    assert torch.count_nonzero(cache[2]).item() == 3 * 64 * 16 and not cache[:2].any() and not cache[3:].any()
