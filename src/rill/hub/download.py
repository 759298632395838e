"""A Hub spec -> a local GGUF file or safetensors folder: the repo's listing from the Hub, the pick,
the download into huggingface_hub's cache (resumable; progress bars on a terminal), or, offline or
with the Hub unreachable, the cached snapshot with no request at all."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rill.errors import ConfigError
from rill.hub.cache import cache_root, cached_snapshot
from rill.hub.errors import hub_error, unreachable
from rill.hub.pick import SAFETENSORS, Candidate, format_size, pick
from rill.hub.spec import HubSpec

log = logging.getLogger("rill.hub")


@dataclass(frozen=True, slots=True)
class HubModel:
    path: Path  # the GGUF file to load (a split's first shard), or the safetensors folder
    name: str  # the served id by default: the GGUF's stem, or the repo's name for a folder
    kind: str  # gguf | safetensors
    split: bool = False  # a GGUF in several shards (llama.cpp finds the others beside the first)


def fetch(spec: HubSpec, *, endpoint: str | None = None, cache_dir: Path | None = None,
          offline: bool | None = None) -> HubModel:
    """The model spec names, downloaded unless cached. endpoint and cache_dir default to
    huggingface_hub's (HF_ENDPOINT, HF_HOME / HF_HUB_CACHE), offline to HF_HUB_OFFLINE."""
    from huggingface_hub import HfApi, constants

    _route_logs()
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    if offline is None:
        offline = constants.HF_HUB_OFFLINE
    if offline:
        return _from_cache(spec, cache_dir, "HF_HUB_OFFLINE is set", None)
    try:  # one request, never retried: an unreachable Hub falls back to the cache at once
        info = HfApi(endpoint=endpoint).model_info(spec.repo_id, revision=spec.revision, files_metadata=True)
    except Exception as exc:
        if unreachable(exc):
            return _from_cache(spec, cache_dir, f"the Hub at {endpoint} could not be reached", exc)
        raise hub_error(spec, exc, endpoint) from exc
    listing = {s.rfilename: s.size for s in info.siblings or ()}
    chosen = pick(spec, listing, where=f"{spec.repo_id} on {endpoint}")
    return _download(spec, chosen, endpoint, cache_dir)


def _route_logs() -> None:
    """huggingface_hub's warnings (a resumed download, a retry) printed once, through the app's
    logging rather than also by its own handler; httpx2's line per request only at debug level."""
    hub = logging.getLogger("huggingface_hub")
    for handler in list(hub.handlers):
        hub.removeHandler(handler)
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("httpx2").setLevel(logging.WARNING)


def _download(spec: HubSpec, chosen: Candidate, endpoint: str, cache_dir: Path | None) -> HubModel:
    """Each file by hf_hub_download, one after the other on this thread: Ctrl-C stops at once (a
    thread pool, as snapshot_download's, finishes the file first), keeping the files finished (the
    file cut short starts over on the next run with huggingface_hub 2); the bar (on a terminal)
    names the file."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    root = cache_root(cache_dir)
    size = f" ({format_size(chosen.size)})" if chosen.size is not None else ""
    log.info("%s: %s%s from %s, cached in %s", spec, _what(chosen), size, endpoint, root)
    paths = []
    for file in chosen.files:
        if not isinstance(try_to_load_from_cache(spec.repo_id, file, cache_dir=root, revision=spec.revision), str):
            log.info("downloading %s", file)
        try:
            paths.append(Path(hf_hub_download(spec.repo_id, file, revision=spec.revision, cache_dir=root,
                                              endpoint=endpoint)))
        except Exception as exc:
            raise hub_error(spec, exc, endpoint) from exc
    folders = {path.parents[len(Path(file).parts) - 1] for path, file in zip(paths, chosen.files)}
    if len(folders) > 1:  # the branch moved on between two files
        raise ConfigError(f"{spec}: the repository changed during the download; run it again, or pin a commit "
                          "with @REVISION")
    model = _model(spec, chosen, folders.pop())
    log.info("%s: %s", spec, model.path)
    return model


def _from_cache(spec: HubSpec, cache_dir: Path | None, why: str, error: Exception | None) -> HubModel:
    """The cached snapshot's model, picked among the files it holds; no request."""
    snapshot = cached_snapshot(spec, cache_dir)
    if snapshot is None:
        reason = f" ({type(error).__name__}: {error})" if error is not None else ""
        raise ConfigError(f"{spec} is not in the Hugging Face cache ({cache_root(cache_dir)}) and {why}{reason}: "
                          f"download it where the Hub can be reached with `rill pull {spec}` (the cache is "
                          "$HF_HOME/hub, or $HF_HUB_CACHE)")
    chosen = pick(spec, snapshot.files, where=f"the cache ({why})")
    if chosen.kind == SAFETENSORS:
        _check_folder(spec, snapshot.folder, snapshot.files, why)
    model = _model(spec, chosen, snapshot.folder)
    log.info("%s: %s; using the cached %s (commit %s)", spec, why, model.path, snapshot.commit[:8])
    return model


def _check_folder(spec: HubSpec, folder: Path, files: dict[str, int], why: str) -> None:
    """A sharded safetensors folder has every shard its index lists (an interrupted pull may not)."""
    import json

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            wanted = set(json.loads(index.read_text("utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{spec}: the cached {index} is not a safetensors index ({exc})") from exc
        missing = sorted(wanted - set(files))
        if missing:
            raise ConfigError(f"{spec}: the cached copy lacks {', '.join(missing)} and {why}: run "
                              f"`rill pull {spec}` where the Hub can be reached")


def _model(spec: HubSpec, chosen: Candidate, folder: Path) -> HubModel:
    if chosen.kind == SAFETENSORS:
        return HubModel(folder, spec.repo_name, SAFETENSORS)
    return HubModel(folder / chosen.files[0], chosen.name, "gguf", split=len(chosen.files) > 1)


def _what(chosen: Candidate) -> str:
    if chosen.kind == SAFETENSORS:
        return f"the safetensors model's {len(chosen.files)} files"
    return chosen.files[0] if len(chosen.files) == 1 else f"{chosen.files[0]} and {len(chosen.files) - 1} more shards"
