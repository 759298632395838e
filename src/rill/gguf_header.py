"""A GGUF file's architecture, read from its header without numpy or the gguf package: what
`--backend auto` needs to know before choosing an engine (a few hundred bytes, not the file)."""

from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

# GGUF value types -> the size of one fixed-width value (8: string, 9: array)
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


@lru_cache(maxsize=64)
def gguf_architecture(path: Path) -> str | None:
    """`general.architecture` of a GGUF file, or None when the file is not GGUF or lacks it."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None
            version, _tensors, count = struct.unpack("<IQQ", f.read(20))
            if version < 2:
                return None
            for _ in range(count):
                key = _string(f)
                kind = struct.unpack("<I", f.read(4))[0]
                if key == "general.architecture" and kind == _STRING:
                    return _string(f)
                _skip(f, kind)
    except (OSError, struct.error, UnicodeDecodeError, ValueError):
        return None
    return None


def _string(f: BinaryIO) -> str:
    (size,) = struct.unpack("<Q", f.read(8))
    if size > 1 << 20:
        raise ValueError("not a GGUF key")
    return f.read(size).decode()


def _skip(f: BinaryIO, kind: int) -> None:
    if kind in _FIXED:
        f.seek(_FIXED[kind], 1)
    elif kind == _STRING:
        f.seek(struct.unpack("<Q", f.read(8))[0], 1)
    elif kind == _ARRAY:
        item, count = struct.unpack("<IQ", f.read(12))
        if item in _FIXED:
            f.seek(_FIXED[item] * count, 1)
        else:
            for _ in range(count):
                _skip(f, item)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")
