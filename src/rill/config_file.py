"""`rill.toml`: the models one server serves (local GGUF files and upstream servers), read into the
config dataclasses. Every mistake is a ConfigError that says which file, which model and which key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Callable

from rill.config import EMBEDDED_ID, AnyModelConfig, ModelConfig, ReplicaConfig, UpstreamConfig, _check_names
from rill.errors import ConfigError
from rill.hub import is_hub_spec, resolve_model_fields

EMBEDDED_PATH = "embedded"  # `path = "embedded"` (or no path): the SmolLM2 shipped with Rill
TOP_LEVEL_KEYS = ("default_model", "models", "audio", "search")  # the last two: config_sections.py


class _Wrong(Exception):
    """A value of the wrong type; carries what was expected."""


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _Wrong("a string")


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):  # bool is an int in Python, not in TOML
        return value
    raise _Wrong("an integer")


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise _Wrong("a number")


def _urls(value: Any) -> tuple[str, ...]:
    if isinstance(value, list) and value and all(isinstance(url, str) and url for url in value):
        return tuple(value)
    raise _Wrong('an array of URLs, e.g. ["http://a:8000/v1", "http://b:8000/v1"]')


REPLICA_KEYS = ("url", "weight", "api_key_env")


def _replicas(value: Any) -> tuple[ReplicaConfig, ...]:
    """`replicas = [{url = "...", weight = 2, api_key_env = "B_KEY"}, ...]`."""
    if not isinstance(value, list) or not value or not all(isinstance(r, dict) for r in value):
        raise _Wrong('an array of tables, e.g. [{url = "http://a:8000/v1"}, {url = "http://b:8000/v1", weight = 2}]')
    out = []
    for n, table in enumerate(value, 1):
        unknown = [key for key in table if key not in REPLICA_KEYS]
        if unknown:
            raise _Wrong(f"tables of the keys {', '.join(REPLICA_KEYS)} (replica #{n} has {unknown[0]!r})")
        try:
            out.append(ReplicaConfig(url=_string(table.get("url")), weight=_number(table.get("weight", 1.0)),
                                     api_key_env=_string(table["api_key_env"]) if "api_key_env" in table else None))
        except _Wrong as wrong:
            raise _Wrong(f"tables with a url string, a weight number and an api_key_env string (replica #{n}: "
                         f"not {wrong})") from None
    return tuple(out)


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(name, str) and name for name in value):
        return tuple(value)
    raise _Wrong('an array of model names, e.g. ["a", "b"]')


Converter = Callable[[Any], Any]

# file key -> (dataclass field, converter)
LOCAL_KEYS: dict[str, tuple[str, Converter]] = {
    "name": ("name", _string), "path": ("path", _string),
    "aliases": ("aliases", _names), "fallbacks": ("fallbacks", _names),
    "ctx": ("n_ctx", _integer), "parallel": ("parallel", _integer), "threads": ("n_threads", _integer),
    "batch_tokens": ("n_batch", _integer), "max_stall": ("max_stall", _number),
    "backend": ("backend", _string), "device": ("device", _string), "dtype": ("dtype", _string),
    "weights": ("weights", _string),
    "temperature": ("temperature", _number), "max_tokens": ("max_tokens", _integer),
}
UPSTREAM_KEYS: dict[str, tuple[str, Converter]] = {
    "name": ("name", _string), "base_url": ("base_url", _string), "model": ("model", _string),
    "api_key_env": ("api_key_env", _string), "timeout": ("timeout", _number),
    "max_concurrency": ("max_concurrency", _integer), "retries": ("retries", _integer),
    "aliases": ("aliases", _names), "fallbacks": ("fallbacks", _names), "supports": ("supports", _names),
    "base_urls": ("base_urls", _urls), "replicas": ("replicas", _replicas), "routing": ("routing", _string),
    "balance_abs_threshold": ("balance_abs_threshold", _integer),
    "balance_rel_threshold": ("balance_rel_threshold", _number), "cache_threshold": ("cache_threshold", _number),
    "health_path": ("health_path", _string), "health_interval": ("health_interval", _number),
    "eject_after": ("eject_after", _integer), "eject_seconds": ("eject_seconds", _number),
}
UPSTREAM_MARKS = ("base_url", "base_urls", "replicas")  # the keys that make a model an upstream
# ModelConfig's messages speak of flags; in a file they are keys
FLAG_TO_KEY = {"--batch-tokens": "batch_tokens", "--ctx": "ctx", "--parallel": "parallel",
               "--max-stall": "max_stall", "--threads": "threads", "--backend": "backend",
               "--device": "device", "--dtype": "dtype", "--weights": "weights", "--temperature": "temperature",
               "--max-tokens": "max_tokens"}


def load_config_file(path: Path) -> tuple[AnyModelConfig, ...]:
    """The models listed in `path`, the default model first."""
    data = _read(path)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{path}: unknown top-level key {key!r} (the keys: {', '.join(TOP_LEVEL_KEYS)}; "
                              "models are [[models]] tables)")
    entries = data.get("models", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: models must be an array of tables: write each model as a [[models]] table")
    if not entries:
        raise ConfigError(f"{path}: no models: add at least one [[models]] table")
    labels = [_label(n, entry) for n, entry in enumerate(entries, 1)]
    models = tuple(_model(path, label, entry) for label, entry in zip(labels, entries))
    try:
        _check_names(models, labels)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}") from exc
    return _default_first(path, models, data.get("default_model"))


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:  # its message has the line and column
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc


def _label(n: int, entry: Any) -> str:
    """`model #2 ('remote')`: the entry's place in the file and, where it can tell, its id."""
    if not isinstance(entry, dict):
        return f"model #{n}"
    name, where = entry.get("name"), entry.get("path", EMBEDDED_PATH)
    if "name" not in entry and not any(k in entry for k in UPSTREAM_MARKS) and isinstance(where, str):
        # a local model's default id (a Hub model's is known once its file is picked: its spec stands in)
        name = EMBEDDED_ID if where == EMBEDDED_PATH else where if is_hub_spec(where) else Path(where).stem
    return f"model #{n} ({name!r})" if isinstance(name, str) and name else f"model #{n}"


def _model(path: Path, label: str, entry: Any) -> AnyModelConfig:
    where = f"{path}: {label}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table: write each model as a [[models]] table")
    upstream = any(key in entry for key in UPSTREAM_MARKS)
    keys = UPSTREAM_KEYS if upstream else LOCAL_KEYS
    for key in entry:
        if key not in keys:
            raise ConfigError(f"{where}: unknown key {key!r} {_unknown_key_hint(key, upstream)}")
    fields: dict[str, Any] = {}
    for key, value in entry.items():
        field, convert = keys[key]
        try:
            fields[field] = convert(value)
        except _Wrong as wrong:
            raise ConfigError(f"{where}: {key} must be {wrong}, got {_describe(value)}") from None
    if "name" in fields and not fields["name"].strip():
        raise ConfigError(f"{where}: name must not be empty")
    if upstream and "name" not in fields:
        raise ConfigError(f"{where}: an upstream model needs a name (the id clients send)")
    try:
        if upstream:
            return UpstreamConfig(**fields)
        if is_hub_spec(fields.get("path")):  # `path = "hf:ORG/REPO:Q4_K_M"`: downloaded (or found cached) here
            return ModelConfig(**resolve_model_fields(fields))
        fields["path"] = _model_path(path, fields.get("path", EMBEDDED_PATH))
        return ModelConfig(**fields)
    except ConfigError as exc:
        message = exc.message.removeprefix(f"model {fields.get('name')!r}: ")  # the label says which
        for flag, key in FLAG_TO_KEY.items():
            message = message.replace(flag, key)
        raise ConfigError(f"{where}: {message}") from exc


def _model_path(config_path: Path, value: str) -> Path | None:
    """None for the embedded model; else the file, relative to the config file's directory."""
    if value == EMBEDDED_PATH:
        return None
    return config_path.resolve().parent / Path(value).expanduser()


def _unknown_key_hint(key: str, upstream: bool) -> str:
    if not upstream and key in UPSTREAM_KEYS:
        return "for a local model (an upstream model is one with a base_url, base_urls or replicas)"
    if upstream and key in LOCAL_KEYS:
        return "for an upstream model (it has a base_url; only local GGUF models take it)"
    return f"(the keys: {', '.join(UPSTREAM_KEYS if upstream else LOCAL_KEYS)})"


def _describe(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "a table"}
    text = repr(value)
    return f"{kinds.get(type(value), 'a date/time')} {text if len(text) <= 60 else text[:57] + '...'}"


def _default_first(path: Path, models: tuple[AnyModelConfig, ...], default: Any) -> tuple[AnyModelConfig, ...]:
    if default is None:
        return models
    if not isinstance(default, str):
        raise ConfigError(f"{path}: default_model must be a string (a model's name or alias), "
                          f"got {_describe(default)}")
    for model in models:
        if default in (model.id, *model.aliases):
            return (model, *(m for m in models if m is not model))
    names = ", ".join(name for m in models for name in (m.id, *m.aliases))
    raise ConfigError(f"{path}: default_model {default!r} names no model (the names: {names})")
