"""The Hugging Face Hub's local cache (`$HF_HOME/hub`, or `$HF_HUB_CACHE`), read without any
request: the snapshot a spec's revision points to and the files in it (offline serving), and what
`rill models` lists. The layout is huggingface_hub's documented one:
`models--ORG--REPO/{refs/REVISION, snapshots/COMMIT/FILES -> ../../blobs/HASH}`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from rill.hub.pick import Candidate, candidates
from rill.hub.spec import HubSpec

_COMMIT = re.compile(r"[0-9a-f]{40}")


def cache_root(cache_dir: Path | None = None) -> Path:
    """Where huggingface_hub keeps downloads: cache_dir, else $HF_HUB_CACHE, else $HF_HOME/hub."""
    if cache_dir is not None:
        return cache_dir
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo_id: str, cache_dir: Path | None = None) -> Path:
    return cache_root(cache_dir) / ("models--" + repo_id.replace("/", "--"))


@dataclass(frozen=True, slots=True)
class Snapshot:
    folder: Path  # snapshots/COMMIT
    commit: str
    files: dict[str, int]  # repo path -> size in bytes, for every file downloaded into it


def cached_snapshot(spec: HubSpec, cache_dir: Path | None = None) -> Snapshot | None:
    """The snapshot spec's revision (a branch or tag as last seen online, or a commit) has in the
    cache, or None."""
    storage = repo_folder(spec.repo_id, cache_dir)
    revision = spec.revision or "main"
    commit = None
    ref = storage / "refs" / revision
    if ref.is_file():
        commit = ref.read_text("utf-8").strip()
    elif _COMMIT.fullmatch(revision):
        commit = revision
    elif len(revision) >= 7 and all(c in "0123456789abcdef" for c in revision) and (storage / "snapshots").is_dir():
        matches = [p.name for p in (storage / "snapshots").iterdir() if p.name.startswith(revision)]
        commit = matches[0] if len(matches) == 1 else None  # a short commit, if it names one snapshot
    if commit is None or not (storage / "snapshots" / commit).is_dir():
        return None
    folder = storage / "snapshots" / commit
    return Snapshot(folder, commit, snapshot_files(folder))


def snapshot_files(folder: Path) -> dict[str, int]:
    """A snapshot's files (symlinks into blobs/, or copies where symlinks are not supported) and
    their sizes; a link whose blob is gone is not a file."""
    out: dict[str, int] = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            try:
                size = path.stat().st_size
            except OSError:
                continue
            out[path.relative_to(folder).as_posix()] = size
    return out


@dataclass(frozen=True, slots=True)
class CachedModel:
    """One row of `rill models`: a model in a cached snapshot."""
    spec: str  # what --model takes to serve it
    kind: str  # gguf | safetensors | other (a repo with neither)
    size: int  # bytes on disk (a split GGUF's shards together)
    revision: str  # the refs pointing at the snapshot (main, a tag), or its short commit
    path: Path  # the file to load, or the folder


def cached_models(cache_dir: Path | None = None) -> list[CachedModel]:
    """Every model repo's snapshots in the cache, one row per servable model in each, from
    huggingface_hub's scan_cache_dir (no request)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_root(cache_dir))
    except CacheNotFound:
        return []
    rows: list[CachedModel] = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: -r.last_modified):
            refs = sorted(revision.refs)
            at = "" if "main" in refs else "@" + (refs[0] if refs else revision.commit_hash)
            label = ", ".join(refs) or revision.commit_hash[:8]
            files = {f.file_path.relative_to(revision.snapshot_path).as_posix(): f.size_on_disk for f in revision.files}
            found = [c for c in candidates(files) if c.complete]
            for c in found:
                spec = f"hf:{repo.repo_id}{at}" + (f":{c.files[0]}" if c.kind == "gguf" else "")
                if c.kind != "gguf" and any(other.kind == "gguf" for other in found):
                    spec += ":safetensors"
                rows.append(CachedModel(spec, c.kind, c.size or 0, label, _load_path(revision.snapshot_path, c)))
            if not found:
                rows.append(CachedModel(f"hf:{repo.repo_id}{at}", "other", revision.size_on_disk, label,
                                        revision.snapshot_path))
    return rows


def _load_path(folder: Path, candidate: Candidate) -> Path:
    return folder / candidate.files[0] if candidate.kind == "gguf" else folder


def snapshot_repo_name(path: Path) -> str | None:
    """REPO for a folder snapshots/COMMIT of models--ORG--REPO (the name a safetensors model from
    the Hub goes by, not its commit), else None."""
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--") and path.is_dir():
        return path.parent.parent.name.split("--")[-1]
    return None
