"""The CPU's feature flags, from /proc/cpuinfo (empty where there is none): read without torch,
so that `--backend auto` (config.py) and the torch backend (backends/torch/device.py) judge the
same flags the same way."""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str]:
    """The first processor's `flags` line (x86; an Arm cpuinfo has `Features` and gets none), from
    cpuinfo or else CPUINFO, looked up when called."""
    try:
        text = (cpuinfo or CPUINFO).read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())
