"""The speech package's pure parts: sentence splitting of streamed text, encodings, voice names,
markup stripped before speaking; and setting speech up without the extra."""

from __future__ import annotations

import base64
import io
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rill.api import speech_setup
from rill.config import AudioConfig
from rill.speech.encode import SAMPLE_RATE, StreamEncoder, encode, wav_header
from rill.speech.sentences import MAX_CHARS, SentenceSplitter
from rill.speech.speaker import spoken
from rill.speech.voices import OPENAI_VOICES, VoiceCatalog, VoiceFile


def split(text: str, step: int = 1) -> list[str]:
    splitter = SentenceSplitter()
    out = []
    for i in range(0, len(text), step):
        out += splitter.feed(text[i:i + step])
    rest = splitter.finish()
    return out + ([rest] if rest else [])


def test_sentences_come_out_as_soon_as_they_end():
    splitter = SentenceSplitter()
    assert splitter.feed("The sky is blue. The gra") == ["The sky is blue."]
    assert splitter.feed("ss is green!\nAnd") == [" The grass is green!"]
    assert splitter.finish() == "\nAnd"


def test_short_sentences_and_decimals_do_not_split():
    assert split("Yes. It costs 3.50 dollars today. Fine.") == ["Yes. It costs 3.50 dollars today.", " Fine."]


def test_a_run_on_sentence_is_cut_at_a_comma():
    text = ("word " * 30 + ", ") * 3
    pieces = split(text)
    assert len(pieces) > 1 and all(len(p) <= MAX_CHARS for p in pieces)
    assert pieces[0].endswith(", ")


@given(st.text(alphabet=st.sampled_from("ab .!?,\n"), max_size=600), st.integers(1, 7))
def test_splitting_keeps_every_word_in_order(text, step):
    """Only pieces of nothing but whitespace (nothing to say) are dropped."""
    pieces = split(text, step)
    assert all(p.strip() for p in pieces)
    assert "".join(pieces).split() == text.split()


def test_markup_is_not_read_out():
    assert "*" not in spoken("**Bold** and `code` # heading") and "Bold" in spoken("**Bold**")
    assert "https" not in spoken("See [the docs](https://example.com/x).")


def test_a_wav_file_and_a_streamed_wav_decode():
    samples = (np.sin(np.arange(SAMPLE_RATE) / 5) * 10000).astype(np.int16)
    with wave.open(io.BytesIO(encode(samples, "wav"))) as w:
        assert w.getframerate() == SAMPLE_RATE and w.getnframes() == SAMPLE_RATE
    assert struct.unpack("<I", wav_header(None)[40:44])[0] == 0xFFFFFFFF  # "length unknown"
    encoder = StreamEncoder("wav")
    pieces = [encoder.add(samples[:1001]), encoder.add(samples[1001:]), encoder.finish()]
    assert all(len(p) % 3 == 0 for p in pieces[:-1])
    joined = base64.b64decode("".join(base64.b64encode(p).decode() for p in pieces))
    assert joined == wav_header(None) + samples.astype("<i2").tobytes()


def test_openai_voice_names_speak_with_the_default_unless_mapped(tmp_path: Path):
    joe = VoiceFile("joe", tmp_path / "joe.onnx")
    amy = tmp_path / "en_US-amy-medium.onnx"
    catalog = VoiceCatalog({"nova": amy}, None, joe)
    assert catalog.resolve("alloy") == joe and catalog.resolve("joe") == joe
    assert catalog.resolve("nova").model == amy and catalog.resolve("en_US-amy-medium").model == amy
    assert catalog.resolve("nobody") is None
    assert catalog.names()[:len(OPENAI_VOICES)] == list(OPENAI_VOICES)
    assert VoiceCatalog({"amy": amy}, "amy", joe).resolve("alloy").model == amy


def test_without_the_extra_speech_is_off_and_says_how_to_enable_it(monkeypatch):
    monkeypatch.setattr(speech_setup, "missing", lambda: ["piper-tts"])
    service, why = speech_setup.open_speech(AudioConfig())
    assert service is None and "pip install 'rill[audio]'" in why and "piper-tts" in why


def test_with_the_extra_the_bundled_voice_is_the_default():
    service, why = speech_setup.open_speech(AudioConfig())
    try:
        assert why == "" and service.catalog.default == "joe" and service.catalog.resolve("alloy").model.is_file()
    finally:
        service.close()
