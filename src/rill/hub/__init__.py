"""Models named by their Hugging Face Hub repository (`--model hf:ORG/REPO[:QUANT]`, rill.toml's
`path`, `rill pull`, `rill models`): docs/models.md.

    spec.py      `hf:ORG/REPO[@REVISION][:QUANT or :FILE]` parsed
    pick.py      a repo's file listing -> the GGUF file (or split set) or safetensors folder meant
    download.py  listing, pick and download into huggingface_hub's cache; offline: the cached snapshot
    cache.py     the cache read without requests: a revision's snapshot, `rill models`' rows
    errors.py    huggingface_hub's errors -> ConfigErrors saying what to do

huggingface_hub is imported only when a spec is resolved: a server of local files never loads it.
"""

from __future__ import annotations

from typing import Any

from rill.errors import ConfigError
from rill.hub.spec import HubSpec, is_hub_spec, parse_spec

__all__ = ["HubSpec", "is_hub_spec", "parse_spec", "resolve_model_fields"]

SPLIT_REASON = "a split GGUF: llama.cpp loads its shards (the torch backend reads one file)"


def resolve_model_fields(fields: dict[str, Any], **hub: Any) -> dict[str, Any]:
    """ModelConfig's fields with an `hf:` path replaced by the downloaded (or cached) file or
    folder, before ModelConfig checks that it exists. Without a name, the model is served as the
    GGUF file's stem or the repository's name (not the snapshot's commit folder). Other paths
    pass through unchanged. `hub`: fetch()'s endpoint and cache_dir (default: huggingface_hub's)."""
    where = fields.get("path")
    if where is None or not is_hub_spec(str(where)):
        return fields
    from rill.hub.download import fetch

    spec = parse_spec(str(where))
    model = fetch(spec, **hub)
    out = {**fields, "path": model.path}
    if not out.get("name"):
        out["name"] = model.name
    if model.split:
        backend = out.get("backend") or "auto"
        if backend == "torch":
            raise ConfigError(f"{spec} is a split GGUF ({model.path.name} and more shards): the torch backend "
                              "reads one file; serve it with --backend llamacpp")
        if backend == "auto":
            out.update(backend="llamacpp", backend_reason=SPLIT_REASON)
    return out
