"""Speech samples (16-bit mono at SAMPLE_RATE) -> the bytes of an `audio.format`.

`wav` and `pcm16` are written here; `mp3`, `opus` (in Ogg) and `flac` by libsndfile through the
`soundfile` package. Only `wav` and `pcm16` can be streamed (OpenAI streams only pcm16): a
streamed WAV is a header whose sizes say "unknown" (0xFFFFFFFF, as streaming encoders write)
followed by the raw samples.
"""

from __future__ import annotations

import io
import struct

import numpy as np

SAMPLE_RATE = 24_000  # what OpenAI's audio is, so clients that assume it play ours right
ENCODED = ("wav", "pcm16", "mp3", "opus", "flac")
STREAMABLE = ("wav", "pcm16")
MIME_TYPES = {"wav": "audio/wav", "pcm16": "audio/L16", "mp3": "audio/mpeg", "opus": "audio/ogg",
              "flac": "audio/flac"}
_SOUNDFILE = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS"), "flac": ("FLAC", "PCM_16")}
_UNKNOWN = 0xFFFF_FFFF


def wav_header(num_samples: int | None) -> bytes:
    """A 44-byte PCM WAV header; None: a stream of unknown length."""
    data = _UNKNOWN if num_samples is None else num_samples * 2
    riff = _UNKNOWN if num_samples is None else 36 + data
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
            + b"data" + struct.pack("<I", data))


def encode(samples: np.ndarray, fmt: str) -> bytes:
    """A whole answer's audio as one file of this format."""
    pcm = samples.astype("<i2").tobytes()
    if fmt == "pcm16":
        return pcm
    if fmt == "wav":
        return wav_header(len(samples)) + pcm
    import soundfile  # in the audio extra, as piper is

    container, subtype = _SOUNDFILE[fmt]
    out = io.BytesIO()
    soundfile.write(out, samples.astype(np.int16), SAMPLE_RATE, format=container, subtype=subtype)
    return out.getvalue()


class StreamEncoder:
    """Samples as they are spoken -> the bytes to send now. Every piece but the last is a
    multiple of 3 bytes long, so each piece's base64 has no padding and the concatenation of the
    pieces' base64 decodes to the whole stream (clients that join `data` strings get it right)."""

    def __init__(self, fmt: str):
        assert fmt in STREAMABLE, fmt
        self._held = wav_header(None) if fmt == "wav" else b""

    def add(self, samples: np.ndarray) -> bytes:
        self._held += samples.astype("<i2").tobytes()
        cut = len(self._held) - len(self._held) % 3
        out, self._held = self._held[:cut], self._held[cut:]
        return out

    def finish(self) -> bytes:
        out, self._held = self._held, b""
        return out
