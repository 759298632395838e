"""`hf:ORG/REPO[@REVISION][:QUANT or FILE]`: a model named by its Hugging Face Hub repository,
parsed (no network). docs/models.md describes the grammar."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rill.errors import ConfigError

PREFIX = "hf:"
FORM = "hf:ORG/REPO[@REVISION][:QUANT or :FILE.gguf], e.g. hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
# The Hub's repository names: letters, digits, '-', '_', '.'; no '--' or '..', no leading/trailing '-' or '.'
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")
_REVISION = re.compile(r"[A-Za-z0-9_.\-/]{1,200}")  # a branch, tag, commit or refs/pr/N (git refs have no ':')


@dataclass(frozen=True, slots=True)
class HubSpec:
    repo_id: str  # ORG/REPO
    revision: str | None = None  # None: the repository's default branch (main)
    selector: str | None = None  # a quantization name (Q4_K_M) or a file in the repo (ends in .gguf)

    @property
    def repo_name(self) -> str:
        return self.repo_id.split("/", 1)[1]

    @property
    def names_file(self) -> bool:
        return self.selector is not None and self.selector.lower().endswith(".gguf")

    def __str__(self) -> str:
        return (PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")
                + (f":{self.selector}" if self.selector else ""))


def is_hub_spec(value: object) -> bool:
    """Whether a --model value or rill.toml path names a Hub model (a local path never starts with
    `hf:`; write `./hf:x` for a file that does)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def parse_spec(text: str) -> HubSpec:
    """`hf:ORG/REPO[@REVISION][:SELECTOR]` -> HubSpec; anything else is a ConfigError naming the form."""
    if not is_hub_spec(text):
        raise ConfigError(f"{text!r} is not a Hub model: expected {FORM}")
    body = text[len(PREFIX):]
    repo_part, colon, selector = body.partition(":")
    repo_id, at, revision = repo_part.partition("@")
    parts = repo_id.split("/")
    problem = None
    if len(parts) != 2 or not all(_NAME.fullmatch(p) and "--" not in p and ".." not in p for p in parts):
        problem = f"{repo_id!r} is not a repository id ORG/REPO"
    elif at and not (_REVISION.fullmatch(revision) and ".." not in revision):
        problem = f"{revision!r} is not a revision (a branch, tag or commit)"
    elif colon and (not selector or "\\" in selector or selector.startswith("/") or ".." in selector.split("/")):
        problem = f"{selector!r} is not a quantization name or a file in the repository"
    if problem:
        raise ConfigError(f"bad Hub model {text!r}: {problem}; expected {FORM}")
    return HubSpec(repo_id=repo_id, revision=revision or None, selector=selector or None)
