"""Which files of a Hub repository a spec means: one GGUF file (or one split GGUF's shards), or a
folder of safetensors with its config.json and tokenizer. Works on a file listing alone, from the
Hub or from the local cache, so online and offline picks follow the same rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from rill.errors import ConfigError
from rill.hub.spec import HubSpec

SAFETENSORS = "safetensors"  # the selector that asks for the safetensors folder of a repo that also has GGUFs
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<n>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
_TOKEN_SEPARATORS = re.compile(r"[-./ ]+")
# a folder's files the torch backend reads (tokenizer.json, tokenizer_config.json, chat_template.jinja, ...)
_FOLDER_SUFFIXES = (".json", ".jinja")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One servable model in a repository."""
    kind: str  # "gguf" or "safetensors"
    files: tuple[str, ...]  # repo paths to download; for a GGUF the first is the one to load
    size: int | None  # bytes, when the listing said
    complete: bool = True  # a split GGUF with every shard listed

    @property
    def label(self) -> str:
        if self.kind == SAFETENSORS:
            return "the safetensors model (config.json and weights)"
        label = self.files[0] if len(self.files) == 1 else f"{self.files[0]} (+{len(self.files) - 1} more shards)"
        return label + (f", {format_size(self.size)}" if self.size is not None else "")

    @property
    def name(self) -> str:
        """The served id a GGUF gets: its file's stem, without a split's -00001-of-00003."""
        base = self.files[0].rsplit("/", 1)[-1]
        split = _SPLIT.match(base)
        return split["stem"] if split else base[: -len(".gguf")]


def candidates(files: Mapping[str, int | None]) -> list[Candidate]:
    """Every model in a listing (repo path -> size in bytes or None): each GGUF file, each split
    GGUF's shards as one, and the safetensors folder. Vision projectors (mmproj) are not models."""
    out: list[Candidate] = []
    shards: dict[tuple[str, str], list[str]] = {}
    for path in sorted(files):
        if not path.lower().endswith(".gguf") or "mmproj" in path.rsplit("/", 1)[-1].lower():
            continue
        split = _SPLIT.match(path)
        if split:
            shards.setdefault((split["stem"], split["total"]), []).append(path)
        else:
            out.append(Candidate("gguf", (path,), files[path]))
    for (_, total), paths in shards.items():
        out.append(Candidate("gguf", tuple(paths), _total(files, paths), complete=len(paths) == int(total)
                             and _SPLIT.match(paths[0])["n"] == "00001"))  # type: ignore[index]
    out.sort(key=lambda c: c.files[0])
    folder = folder_files(files)
    if folder:
        out.append(Candidate(SAFETENSORS, folder, _total(files, folder)))
    return out


def folder_files(files: Mapping[str, int | None]) -> tuple[str, ...]:
    """A repo's top-level config.json, tokenizer and safetensors weights, or () when it has no such
    model. Mistral's consolidated.safetensors repeats the sharded weights: skipped beside them."""
    top = [p for p in sorted(files) if "/" not in p]
    weights = [p for p in top if p.endswith(".safetensors")]
    if "config.json" not in top or not weights:
        return ()
    if len(weights) > 1:
        weights = [p for p in weights if not p.startswith("consolidated")] or weights
    return tuple(p for p in top if p.endswith(_FOLDER_SUFFIXES)) + tuple(weights)


def pick(spec: HubSpec, files: Mapping[str, int | None], *, where: str = "the repository") -> Candidate:
    """The model spec names among a listing's candidates, or a ConfigError saying what there is."""
    found = candidates(files)
    if spec.selector is None:
        chosen = found
    elif spec.selector.lower() == SAFETENSORS:
        chosen = [c for c in found if c.kind == SAFETENSORS]
    elif spec.names_file:
        chosen = [c for c in found if c.kind == "gguf" and _names_file(c, spec.selector)]
        if not chosen and spec.selector in files:  # a file outside the rules above (an mmproj, say): as asked
            chosen = [Candidate("gguf", (spec.selector,), files[spec.selector])]
    else:
        chosen = [c for c in found if c.kind == "gguf" and has_quant(c.files[0], spec.selector)]
    if len(chosen) == 1 and chosen[0].complete:
        return chosen[0]
    if len(chosen) == 1:
        raise ConfigError(f"{spec}: the split GGUF {chosen[0].files[0]} lacks shards in {where} "
                          f"(it has {', '.join(chosen[0].files)})")
    raise ConfigError(_choice_error(spec, files, found, chosen, where))


def has_quant(path: str, quant: str) -> bool:
    """Whether a GGUF's path names the quantization: its tokens (split at '-', '.', '/') hold the
    quant's tokens in a row, case-insensitively. Q4_K_M matches `Qwen-Q4_K_M.gguf`, `q4_k_m/x.gguf`
    and `x.Q4_K_M.gguf`; Q4_K matches none of them (an underscore does not split a token)."""
    split = _SPLIT.match(path)
    stem = split["stem"] if split else path[: -len(".gguf")]
    tokens = [t for t in _TOKEN_SEPARATORS.split(stem.lower()) if t]
    wanted = [t for t in _TOKEN_SEPARATORS.split(quant.lower()) if t]
    return bool(wanted) and any(tokens[i:i + len(wanted)] == wanted for i in range(len(tokens) - len(wanted) + 1))


def _names_file(candidate: Candidate, selector: str) -> bool:
    """A file selector names a candidate by its path or, without folders, by its file name; any
    shard of a split GGUF names the whole set."""
    return any(selector == f or ("/" not in selector and selector == f.rsplit("/", 1)[-1]) for f in candidate.files)


def _choice_error(spec: HubSpec, files: Mapping[str, int | None], found: list[Candidate],
                  chosen: list[Candidate], where: str) -> str:
    if not found:
        listed = sorted(files)
        more = f" and {len(listed) - 20} more" if len(listed) > 20 else ""
        return (f"{spec}: {where} holds no model Rill serves (no .gguf file, no config.json with *.safetensors "
                f"weights); it has: {', '.join(listed[:20]) or 'no files'}{more}")
    if len(chosen) > 1:
        what = "models" if spec.selector is None else f"models match {spec.selector!r}"
        example = next((c for c in chosen if c.kind == "gguf"), chosen[0])
        hint = (f"hf:{spec.repo_id}:{example.files[0]}" if example.kind == "gguf"
                else f"hf:{spec.repo_id}:{SAFETENSORS}")
        return (f"{spec}: {len(chosen)} {what} in {where}; name one with :QUANT or :FILE "
                f"(e.g. {hint}):\n" + "\n".join(f"  {c.label}" for c in chosen))
    has = "\n".join(f"  {c.label}" for c in found)
    return f"{spec}: no model in {where} matches {spec.selector!r}; it has:\n{has}"


def _total(files: Mapping[str, int | None], paths) -> int | None:
    sizes = [files[p] for p in paths]
    return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]


def format_size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")
