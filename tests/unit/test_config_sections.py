"""rill.toml's [audio] and [search] tables: read into AudioConfig and SearchConfig, every mistake a
ConfigError naming the file, the table and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from rill.config import AudioConfig, SearchConfig
from rill.config_sections import load_sections
from rill.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rill.toml"
    path.write_text("[[models]]\npath = \"embedded\"\n" + text)
    return path


def test_no_tables_mean_the_bundled_voice_and_no_search(tmp_path):
    assert load_sections(write(tmp_path, "")) == (AudioConfig(), None)


def test_voices_are_files_relative_to_the_config(tmp_path):
    (tmp_path / "voices").mkdir()
    for name in ("amy.onnx", "amy.onnx.json"):
        (tmp_path / "voices" / name).write_text("{}")
    audio, _ = load_sections(write(tmp_path, '[audio]\ndefault_voice = "amy"\nworkers = 2\n'
                                             '[audio.voices]\namy = "voices/amy.onnx"\n'))
    assert audio == AudioConfig(voices=(("amy", tmp_path / "voices" / "amy.onnx"),), default_voice="amy", workers=2)


def test_a_searxng_search(tmp_path):
    _, search = load_sections(write(tmp_path, '[search]\nprovider = "searxng"\nurl = "http://127.0.0.1:8888"\n'))
    assert search == SearchConfig(provider="searxng", url="http://127.0.0.1:8888")


@pytest.mark.parametrize("text, says", [
    ('[audio]\nvoices = { amy = "missing.onnx" }\n', "voice file not found"),
    ('[audio]\ndefault_voice = "amy"\n', "default_voice 'amy' is not one of"),
    ('[audio]\nspeed = 2\n', "unknown key 'speed'"),
    ('[audio]\nworkers = "two"\n', "workers must be an integer"),
    ('[audio]\nniceness = 25\n', "niceness must be between 0 and 19"),
    ('[search]\nurl = "http://x"\n', "provider is required"),
    ('[search]\nprovider = "google"\n', "provider must be one of"),
    ('[search]\nprovider = "searxng"\n', "needs url"),
    ('[search]\nprovider = "brave"\n', "needs api_key_env"),
    ('[search]\nprovider = "brave"\napi_key_env = "RILL_TEST_UNSET_KEY"\n', "RILL_TEST_UNSET_KEY .api_key_env. is not set"),
    ('[search]\nprovider = "searxng"\nurl = "ftp://x"\n', "must start with http"),
])
def test_mistakes_name_the_table_and_key(tmp_path, text, says):
    with pytest.raises(ConfigError, match=says) as info:
        load_sections(write(tmp_path, text))
    assert str(tmp_path / "rill.toml") in info.value.message
    assert "[audio]" in info.value.message or "[search]" in info.value.message
