"""Text -> speech samples with Piper (ONNX, offline), resampled to encode.SAMPLE_RATE.

Piper is the `audio` extra (`pip install 'rill-server[audio]'`): missing() says what is not installed, so
a request for audio can be refused with the command that enables it.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rill.speech.encode import SAMPLE_RATE
from rill.speech.voices import VoiceFile

EXTRA = "pip install 'rill-server[audio]'"
_MODULES = {"piper": "piper-tts", "soxr": "soxr", "soundfile": "soundfile"}
PAUSE_SECONDS = 0.2  # silence after each spoken piece: sentences joined without it sound rushed
# markdown that would be read out or mangled (emphasis, headings, code fences, table rules, quotes)
# and a web-searched answer's citation markers, [1] or [1, 3]
_MARKUP = re.compile(r"[*_`#|~]+|^\s*>+\s?|\[\d+(?:\s*,\s*\d+)*\]", re.MULTILINE)
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")  # [text](url): say the text


@dataclass(frozen=True, slots=True)
class Speech:
    samples: np.ndarray  # int16, mono, SAMPLE_RATE
    num_tokens: int  # phoneme ids the voice model read: the audio "tokens" of usage


class Speaker(Protocol):
    def speak(self, text: str) -> Speech: ...


def missing() -> list[str]:
    """The audio extra's packages that are not installed."""
    return [package for module, package in _MODULES.items() if importlib.util.find_spec(module) is None]


def spoken(text: str) -> str:
    """What to say for a piece of markdown answer: the words, not the markup."""
    return _MARKUP.sub(" ", _LINK.sub(r"\1", text))


class PiperSpeaker:
    """One Piper voice. Thread-safe (onnxruntime sessions are); `threads` bounds the CPU one
    synthesis takes, so speech does not starve the model's own decoding."""

    def __init__(self, voice: VoiceFile, *, threads: int = 1):
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        with voice.config.open(encoding="utf-8") as file:
            config = PiperConfig.from_dict(json.load(file))
        session = onnxruntime.InferenceSession(str(voice.model), sess_options=options,
                                               providers=["CPUExecutionProvider"])
        self._voice = PiperVoice(config=config, session=session)
        self._rate = config.sample_rate

    def speak(self, text: str) -> Speech:
        import soxr

        parts, tokens = [], 0
        words = spoken(text)
        for phonemes in self._voice.phonemize(words):  # piper locks its one espeak state
            if not phonemes:
                continue
            ids = self._voice.phonemes_to_ids(phonemes)
            tokens += len(ids)
            parts.append(np.asarray(self._voice.phoneme_ids_to_audio(ids), dtype=np.float32).reshape(-1))
        if not parts:
            return Speech(np.zeros(0, np.int16), 0)
        audio = np.concatenate(parts)
        peak = float(np.max(np.abs(audio)))
        if peak > 1e-8:
            audio = audio / peak  # Piper's own default: each piece at full scale
        audio = soxr.resample(audio, self._rate, SAMPLE_RATE) if self._rate != SAMPLE_RATE else audio
        pause = np.zeros(int(PAUSE_SECONDS * SAMPLE_RATE), np.float32)
        audio = np.concatenate([audio, pause])
        return Speech((np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16), tokens)
