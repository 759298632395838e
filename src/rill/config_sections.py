"""`rill.toml`'s service tables, beside its models: `[audio]` (text-to-speech voices) and `[search]`
(the web search behind web_search_options). Mistakes are ConfigErrors naming the file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rill.config import AudioConfig, SearchConfig
from rill.config_file import Converter, _describe, _integer, _number, _read, _string, _Wrong
from rill.errors import ConfigError

AUDIO_KEYS: dict[str, Converter] = {"default_voice": _string, "workers": _integer, "niceness": _integer,
                                    "voices": lambda v: v}
SEARCH_KEYS: dict[str, Converter] = {"provider": _string, "url": _string, "api_key_env": _string,
                                     "timeout": _number, "max_results": _integer}


def load_sections(path: Path) -> tuple[AudioConfig, SearchConfig | None]:
    data = _read(path)
    audio = _table(path, data, "audio", AUDIO_KEYS)
    search = _table(path, data, "search", SEARCH_KEYS)
    try:
        voices = _voices(path, audio.pop("voices", {}))
        audio_config = AudioConfig(voices=voices, **audio)
    except ConfigError as exc:
        raise ConfigError(f"{path}: [audio]: {exc.message.removeprefix('audio ')}") from exc
    if not search:
        return audio_config, None
    if "provider" not in search:
        raise ConfigError(f"{path}: [search]: provider is required ({', '.join(('searxng', 'brave', 'tavily'))})")
    try:
        return audio_config, SearchConfig(**search)
    except ConfigError as exc:
        raise ConfigError(f"{path}: [search]: {exc.message.removeprefix('search ')}") from exc


def _table(path: Path, data: dict[str, Any], name: str, keys: dict[str, Converter]) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {name} must be a table: write it as [{name}]")
    out = {}
    for key, value in table.items():
        if key not in keys:
            raise ConfigError(f"{path}: [{name}]: unknown key {key!r} (the keys: {', '.join(keys)})")
        try:
            out[key] = keys[key](value)
        except _Wrong as wrong:
            raise ConfigError(f"{path}: [{name}]: {key} must be {wrong}, got {_describe(value)}") from None
    return out


def _voices(path: Path, table: Any) -> tuple[tuple[str, Path], ...]:
    """[audio.voices]: name = "file.onnx", relative to the config file's directory."""
    if not isinstance(table, dict):
        raise ConfigError('voices must be a table of name = "voice.onnx"')
    out = []
    for name, value in table.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"voices.{name} must be the path of a Piper .onnx voice, got {_describe(value)}")
        out.append((name, path.resolve().parent / Path(value).expanduser()))
    return tuple(out)
