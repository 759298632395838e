"""Which device and dtype the torch backend computes on: settings, never assumptions."""

from __future__ import annotations

from pathlib import Path

import torch

from rill.backends.base import BackendError
from rill.cpu_flags import cpu_flags

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
          "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16}
# CPU features with native bf16 arithmetic (oneDNN then multiplies bf16 faster than fp32)
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def resolve_device(name: str) -> torch.device:
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise BackendError(f"--device must be cpu or cuda (or cuda:N), not {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"--device {name}: this torch build sees no CUDA GPU "
                           f"(torch {torch.__version__}, CUDA {torch.version.cuda or 'not built in'})")
    return torch.device(name)


def cpu_has_native_bf16(cpuinfo: Path | None = None) -> bool:
    return not cpu_flags(cpuinfo).isdisjoint(BF16_CPU_FLAGS)


def resolve_weights(name: str, device: torch.device, dtype: str = "auto", native: bool = True) -> str:
    """'auto': int8 on a CPU (Rill's kernels: the fastest here from one stream to many, and
    batch-invariant; docs/torch-backend.md) unless a --dtype asks for float weights in it, or
    the kernels did not build; float weights on a GPU."""
    if name in ("int8", "int4") and device.type != "cpu":
        raise BackendError(f"--weights {name} runs Rill's CPU kernels: on a GPU use --weights float")
    if name == "auto":
        return "int8" if device.type == "cpu" and dtype == "auto" and native else "float"
    return name


def resolve_dtype(name: str, device: torch.device, weights: str = "float") -> torch.dtype:
    """'auto': float32 beside int8/int4 weights (the kernels compute in it), else bf16 on a GPU
    and on a CPU with native bf16 (AMX or AVX512-BF16), else fp32."""
    if name == "auto" and weights in ("int8", "int4"):
        return torch.float32
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if name not in DTYPES:
        raise BackendError(f"--dtype must be auto, bf16, fp16 or fp32, not {name!r}")
    dtype = DTYPES[name]
    if dtype is torch.float16 and device.type == "cpu":
        raise BackendError("--dtype fp16 is for GPUs: on a CPU use bf16 or fp32")
    return dtype
