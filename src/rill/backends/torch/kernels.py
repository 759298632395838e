"""The work between a layer's matmuls, as four operations: rotate q and k and store k and v in the
paged cache, decode attention over the cache, residual add + RMSNorm, SiLU-gated product.

Two implementations of each: `TorchOps`, written in PyTorch (any device; the reference), and
`NativeOps`, kernels.cpp compiled once per machine with the C++ compiler PyTorch's extensions use
(on a CPU: one pass each, no gathered copy of the keys, float32 inside). `load_ops` gives the
native ones on a CPU when they build and the PyTorch ones otherwise, saying why.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger("rill.torch")

# the operations between the matmuls, and the int8/int4 weight matmuls (quant.py)
SOURCES = (Path(__file__).with_name("kernels.cpp"), Path(__file__).with_name("quant_matmul.cpp"))
# RILL_TORCH_KERNELS=0 keeps the PyTorch implementations (to compare, or where building fails)
ENV_SWITCH = "RILL_TORCH_KERNELS"


class TorchOps:
    """The four operations in PyTorch: the reference, and what runs off the CPU. Step-wide index
    tensors come precomputed in the AttentionBatch (key_index, value_rows, decode_rows,
    decode_bias)."""

    native = False

    @staticmethod
    def rope_store(qkv, rotary, positions, batch, k_cache, v_cache, num_heads, q_norm, k_norm, eps):
        """qkv [N, (H + 2 KVH) * D] -> the rotated queries and keys [N, H + KVH, D]; the keys
        and the values also go to the cache at the tokens' slots (see kv_cache.py's layout).
        Rotation: x * cos + roll(x, D/2) * sin, in float32 (the tables' sin is negated on the
        first half)."""
        _, kvh, _, d = v_cache.shape
        n = qkv.shape[0]
        qk = qkv[:, : (num_heads + kvh) * d].view(n, num_heads + kvh, d)
        if q_norm is not None:
            q, k = qk.split([num_heads, kvh], dim=1)
            qk = torch.cat([F.rms_norm(q, (d,), q_norm, eps), F.rms_norm(k, (d,), k_norm, eps)], dim=1)
        xf = qk.float()
        c, s = rotary.cos[positions].unsqueeze(1), rotary.sin[positions].unsqueeze(1)
        rotated = torch.addcmul(xf * c, xf.roll(d // 2, -1), s).to(qkv.dtype)
        k_cache.view(-1).index_copy_(0, batch.key_index, rotated[:, num_heads:].reshape(-1))
        v_cache.view(-1, d).index_copy_(0, batch.value_rows, qkv[:, (num_heads + kvh) * d :].reshape(n * kvh, d))
        return rotated

    @staticmethod
    def decode_attention(q, k_cache, v_cache, batch, scale):
        """One query per sequence: q [B, H, D] -> [B, H, D]. Each sequence's blocks are gathered
        whole, a block-head at a time: values straight into [B, KVH, W * block_size, D], keys
        into [B, KVH, D, W * block_size] (one more copy: they are dim-major per block); the
        positions past its end are masked by decode_bias."""
        blocks, kvh, block_size, d = v_cache.shape
        b, h, _ = q.shape
        keys_t = (k_cache.view(blocks * kvh, d * block_size).index_select(0, batch.decode_rows)
                  .view(b, kvh, -1, d, block_size).transpose(2, 3).reshape(b, kvh, d, -1))
        values = v_cache.view(blocks * kvh, block_size * d).index_select(0, batch.decode_rows).view(b, kvh, -1, d)
        queries = q.view(b, kvh, h // kvh, d)  # the query heads each key head serves
        scores = torch.matmul(queries, keys_t).float() * scale  # [B, KVH, G, L]
        weights = torch.softmax(scores + batch.decode_bias, dim=-1).to(values.dtype)
        return torch.matmul(weights, values).reshape(b, h, d)

    @staticmethod
    def add_rms_norm(h, x, weight, eps):
        """h += x in place; returns RMSNorm(h) * weight."""
        h.add_(x)
        return F.rms_norm(h, (h.shape[-1],), weight, eps)

    @staticmethod
    def silu_mul(gate_up):
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up


class NativeOps:
    """kernels.cpp's operations (torch.ops.rill_kernels), called as TorchOps' are."""

    native = True

    def __init__(self):
        self._ops = torch.ops.rill_kernels
        self.add_rms_norm = self._ops.add_rms_norm
        self.silu_mul = self._ops.silu_mul

    def rope_store(self, qkv, rotary, positions, batch, k_cache, v_cache, num_heads, q_norm, k_norm, eps):
        return self._ops.rope_store(qkv, rotary.cos, rotary.sin, positions, batch.slots, k_cache, v_cache,
                                    num_heads, q_norm, k_norm, eps)

    def decode_attention(self, q, k_cache, v_cache, batch, scale):
        return self._ops.decode_attention(q, k_cache, v_cache, batch.decode_tables, batch.decode_lengths, scale)


_native: NativeOps | None = None


def load_ops(device: torch.device) -> TorchOps | NativeOps:
    """The native kernels for a CPU, built on first use (about 30 s, then cached); the PyTorch
    ones for other devices, with RILL_TORCH_KERNELS=0, or when the build fails."""
    global _native
    if device.type != "cpu" or os.environ.get(ENV_SWITCH, "1") == "0":
        return TorchOps()
    if _native is None:
        try:
            _build()
        except Exception as exc:  # no compiler, no headers, no ninja: slower, but it runs
            log.warning("Rill's CPU kernels could not be built, using PyTorch's ops (slower): %s",
                        str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__)
            return TorchOps()
        _native = NativeOps()
    return _native


def _build() -> None:
    """Compile kernels.cpp and quant_matmul.cpp (once per source, flags and CPU: the build directory is named by
    their hash, so a home directory shared by machines of other CPUs never loads a foreign
    build) and register its operations."""
    from torch.utils import cpp_extension

    name = build_name()
    directory = Path(cpp_extension._get_build_directory(name, verbose=False))
    cached = directory / f"{name}.so"
    # A finished build is loaded as it is: PyTorch's loader would take the directory's lock file
    # and run ninja on every start, and a lock left by a process killed mid-build makes it wait forever.
    if cached.exists():
        try:
            torch.ops.load_library(str(cached))
            return
        except OSError as exc:  # a link cut short: build it again
            log.warning("Rill's CPU kernels at %s did not load (%s); building them again", cached, exc)
            cached.unlink(missing_ok=True)
    _clear_stale_lock(directory / "lock")
    log.info("building Rill's CPU kernels (once per machine, about 30 s)")
    with _ninja_on_path():
        cpp_extension.load(name=name, sources=[str(source) for source in SOURCES], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"],
                           is_python_module=False, verbose=False)


# -fopenmp: ATen's parallel_for is inline code over OpenMP, serial without it
FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno", "-fopenmp"]


def build_name() -> str:
    code = b"".join(source.read_bytes() for source in SOURCES)
    key = hashlib.sha256(code + " ".join(FLAGS).encode() + _cpu_model().encode()).hexdigest()[:12]
    return f"rill_kernels_{key}"


# a build takes about 30 s on two cores; a lock much older was left by a process that died building
STALE_LOCK_SECONDS = 600


def _clear_stale_lock(lock: Path) -> None:
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_SECONDS:
        log.warning("removing %s, left %.0f s ago by a build that did not finish", lock, age)
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def _ninja_on_path():
    """PyTorch runs `ninja` from PATH; the `ninja` package (the torch extra) installs it beside
    the interpreter, which a server started as .venv/bin/rill does not have on its PATH."""
    saved = os.environ.get("PATH", "")
    if shutil.which("ninja") is None:
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + saved
        except ImportError:
            pass  # PyTorch then says that ninja is missing, and the PyTorch ops are used
    try:
        yield
    finally:
        os.environ["PATH"] = saved


def _cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((line for line in info.splitlines() if line.startswith("flags")), "")
