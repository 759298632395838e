"""The speech package's pure parts: sentence splitting of streamed text, encodings, voice names,
markup stripped before speaking; and setting speech up without the extra."""

from __future__ import annotations

import base64
import io
import struct
import wave
from pathlib import Path

import numpy as np
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
    assert service is None and "pip install 'rill-server[audio]'" in why and "piper-tts" in why


def test_with_the_extra_the_bundled_voice_is_the_default():
    service, why = speech_setup.open_speech(AudioConfig())
    try:
        assert why == "" and service.catalog.default == "joe" and service.catalog.resolve("alloy").model.is_file()
    finally:
        service.close()


def test_citation_markers_are_not_read_out():
    assert "[" not in spoken("Paris is large [1]. It is old [2, 3].") and "Paris is large" in spoken("Paris is large [1].")


async def test_an_answers_first_piece_is_urgent_and_the_rest_is_spoken_ahead(tmp_path: Path):
    import concurrent.futures

    from rill.api.protocols.chat.audio import AudioPlan, AudioTrack
    from rill.speech.speaker import Speech

    class Recorder:
        def __init__(self):
            self.asked: list[tuple[str, bool]] = []

        def speak(self, voice, text, *, urgent=False):
            self.asked.append((text, urgent))
            future = concurrent.futures.Future()
            future.set_result(Speech(np.ones(30, np.int16), 1))
            return future

    speech = Recorder()
    track = AudioTrack(speech, AudioPlan(VoiceFile("joe", tmp_path / "joe.onnx"), "pcm16"), stream=True)
    assert "id" in track.transcript("The first sentence is here. ") and "id" not in track.transcript("A second one. ")
    track.transcript("And a third one, unfinished")
    deltas = [d async for d in track.finish()]
    assert [urgent for _, urgent in speech.asked] == [True, False, False]
    assert deltas[-1] == {"audio": {"expires_at": track.expires_at}} and track.num_tokens == 3
