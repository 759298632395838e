"""Audio output end to end: `rill serve` on the real SmolLM2 with the real Piper voice, through the
official `openai` client, streamed and not. The answer's text is spoken into decodable audio whose
transcript is the content."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import openai
import pytest

from tests.e2e.support import MODEL

pytestmark = pytest.mark.e2e

ASK = [{"role": "user", "content": "Describe the water cycle in two sentences."}]


def test_the_openai_client_gets_a_spoken_answer(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=40, temperature=0,
                                       modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})
    message = r.choices[0].message
    assert message.audio is not None and message.audio.transcript == message.content
    with wave.open(io.BytesIO(base64.b64decode(message.audio.data))) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        assert w.getframerate() == 24_000
    assert samples.size / 24_000 > 1.0 and np.abs(samples.astype(np.int32)).max() > 3000
    assert r.usage.completion_tokens_details.audio_tokens > 0
    # the next turn may stand for the answer by its audio id
    again = client.chat.completions.create(model=MODEL, max_tokens=8, messages=[
        *ASK, {"role": "assistant", "audio": {"id": message.audio.id}}, {"role": "user", "content": "Shorter."}])
    assert again.choices[0].message.content


def test_the_openai_client_streams_pcm16_with_the_transcript(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=40, temperature=0, stream=True,
        modalities=["text", "audio"], audio={"voice": "nova", "format": "pcm16"}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    audio = [d.audio for d in deltas if d.audio is not None]  # the SDK's ChoiceDeltaAudio
    content = "".join(d.content or "" for d in deltas)
    assert content and "".join(a.transcript or "" for a in audio) == content
    assert len([a.id for a in audio if a.id]) == 1 and audio[-1].expires_at
    pcm = base64.b64decode("".join(a.data or "" for a in audio))
    samples = np.frombuffer(pcm, dtype="<i2")
    assert samples.size / 24_000 > 1.0 and np.abs(samples.astype(np.int32)).max() > 3000
