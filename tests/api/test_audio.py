"""Audio output on the fake model (which echoes the prompt) with the real Piper voice: the answer's
text is spoken sentence by sentence into decodable audio, streamed and not; the transcript is the
content; formats, voices, multi-turn audio ids and the 400s before the first byte."""

from __future__ import annotations

import asyncio
import concurrent.futures
import base64
import io
import json
import threading
import wave

import numpy as np
import pytest
import soundfile

from rill.backends.fake import _ASSISTANT, FakeBackend, _last_index  # the fake's own parsing
from rill.speech.encode import SAMPLE_RATE
from tests.api.conftest import CHAT_URL, MODEL, assert_error, chat, chunks_of, parse_sse, stream_text

SHORT = "Hello there, my friend."
LONG = ("Hello there, my friend. The weather today is sunny and warm. We could walk along the river "
        "and watch the boats. Later we might eat dinner at the small cafe near the bridge.")
AUDIO = {"modalities": ["text", "audio"]}


def audio_of(voice: str = "alloy", fmt: str = "wav") -> dict:
    return {**AUDIO, "audio": {"voice": voice, "format": fmt}}


def wav_samples(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def assert_speech(samples: np.ndarray) -> float:
    """Audible speech, not silence; its duration in seconds."""
    assert samples.size > SAMPLE_RATE // 4
    assert np.abs(samples.astype(np.int32)).max() > 3000
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 300
    return samples.size / SAMPLE_RATE


async def test_a_non_streamed_answer_carries_its_audio_as_a_wav_file(client):
    body = (await client.post(CHAT_URL, json=chat(SHORT, temperature=0, **audio_of()))).json()
    message = body["choices"][0]["message"]
    assert message["content"] == SHORT
    audio = message["audio"]
    assert audio["id"].startswith("audio_") and audio["transcript"] == SHORT
    assert audio["expires_at"] > body["created"]
    assert_speech(wav_samples(base64.b64decode(audio["data"])))
    assert body["usage"]["completion_tokens_details"]["audio_tokens"] > len(SHORT) // 2


async def test_a_longer_answer_speaks_longer(client):
    short, long = [
        wav_samples(base64.b64decode((await client.post(CHAT_URL, json=chat(text, temperature=0, **audio_of())))
                                     .json()["choices"][0]["message"]["audio"]["data"]))
        for text in (SHORT, LONG)]
    assert assert_speech(long) > 3 * assert_speech(short)


def audio_deltas(events: list) -> list[dict]:
    return [c["choices"][0]["delta"]["audio"] for c in chunks_of(events)
            if c.get("choices") and "audio" in c["choices"][0]["delta"]]


@pytest.mark.parametrize("fmt", ["pcm16", "wav"])
async def test_a_streamed_answer_sends_transcript_and_audio_deltas(client, fmt):
    r = await client.post(CHAT_URL, json=chat(LONG, temperature=0, stream=True, **audio_of("nova", fmt),
                                              stream_options={"include_usage": True}))
    assert r.status_code == 200, r.text
    events = parse_sse(r.text)
    audio = audio_deltas(events)
    assert stream_text(events) == LONG
    assert "".join(a.get("transcript", "") for a in audio) == LONG
    ids = [a["id"] for a in audio if "id" in a]
    assert len(ids) == 1 and ids[0].startswith("audio_")  # once: clients that merge deltas join strings
    assert [a for a in audio if "expires_at" in a] == [audio[-1]]  # the expiry closes the audio
    datas = [a["data"] for a in audio if "data" in a]
    assert len(datas) >= 2  # sentence by sentence, not one blob at the end
    # each piece decodes alone, and the pieces' base64 joined decodes to the same bytes
    raw = b"".join(base64.b64decode(d) for d in datas)
    assert base64.b64decode("".join(datas)) == raw
    samples = wav_samples(raw) if fmt == "wav" else np.frombuffer(raw, dtype="<i2")
    assert assert_speech(samples) > 4
    finish_at = next(i for i, c in enumerate(chunks_of(events)) if c.get("choices") and c["choices"][0]["finish_reason"])
    last_audio_at = max(i for i, c in enumerate(chunks_of(events)) if c.get("choices") and "audio" in c["choices"][0]["delta"])
    assert last_audio_at < finish_at
    assert chunks_of(events)[-1]["usage"]["completion_tokens_details"]["audio_tokens"] > len(LONG) // 2


@pytest.mark.parametrize("fmt, container", [("mp3", "MP3"), ("opus", "OGG"), ("flac", "FLAC")])
async def test_encoded_formats_decode_to_the_same_speech(client, fmt, container):
    body = (await client.post(CHAT_URL, json=chat(SHORT, temperature=0, **audio_of("alloy", fmt)))).json()
    data = base64.b64decode(body["choices"][0]["message"]["audio"]["data"])
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    assert soundfile.info(io.BytesIO(data)).format == container
    assert rate == SAMPLE_RATE
    reference = (await client.post(CHAT_URL, json=chat(SHORT, temperature=0, **audio_of()))).json()
    duration = assert_speech(wav_samples(base64.b64decode(reference["choices"][0]["message"]["audio"]["data"])))
    assert abs(assert_speech(samples) - duration) < 0.2  # codec padding aside, the same length


class PausingBackend(FakeBackend):
    """Stops generating (blocks the engine) after `pause_at` bytes of answer until `resume` is set."""

    def __init__(self, pause_at: int, **kwargs):
        super().__init__(**kwargs)
        self.pause_at = pause_at
        self.resume = threading.Event()

    def _logits(self, seq):
        if len(seq) - _last_index(seq, _ASSISTANT) >= self.pause_at:  # the answer so far
            self.resume.wait(30)
        return super()._logits(seq)


@pytest.mark.parametrize("backend", [{"cls": PausingBackend, "pause_at": len(LONG) // 2}], indirect=True)
async def test_the_first_audio_arrives_while_the_text_is_still_being_written(app, live_client, backend):
    seen = ""
    try:
        async with live_client.stream("POST", CHAT_URL, json=chat(LONG, temperature=0, stream=True,
                                                                   **audio_of("alloy", "pcm16"))) as r:
            async def first_audio() -> None:
                nonlocal seen
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        delta = json.loads(line[6:])["choices"][0]["delta"]
                        seen += delta.get("content") or ""
                        if delta.get("audio", {}).get("data"):
                            return
            await asyncio.wait_for(first_audio(), 30)  # a guard against a hang, not a timing check
            # the model is held halfway through, so this audio was spoken from a part of the text
            assert 0 < len(seen) <= len(LONG) // 2
    finally:
        backend.resume.set()


@pytest.mark.parametrize("body, param", [
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "audio"),
    ({"modalities": []}, "modalities"),
    (audio_of("nobody"), "audio.voice"),
    (audio_of("alloy", "aac"), "audio.format"),
    ({**audio_of("alloy", "mp3"), "stream": True}, "audio.format"),
])
async def test_bad_audio_requests_are_400s_naming_the_field(client, body, param):
    r = await client.post(CHAT_URL, json=chat(SHORT, **body))
    assert_error(r, 400, type="invalid_request_error", param=param)


async def test_a_server_without_text_to_speech_says_how_to_enable_it(app, client):
    app.state.speech, app.state.no_speech = None, "text-to-speech is not installed: pip install 'rill-server[audio]'"
    err = assert_error(await client.post(CHAT_URL, json=chat(SHORT, **audio_of())), 400, param="modalities")
    assert "pip install 'rill-server[audio]'" in err["message"]


async def test_an_audio_id_stands_for_its_transcript_in_the_next_turn(client):
    first = (await client.post(CHAT_URL, json=chat(SHORT, temperature=0, **audio_of()))).json()
    audio_id = first["choices"][0]["message"]["audio"]["id"]

    def turn(assistant: dict) -> dict:
        return {"model": MODEL, "temperature": 0, "messages": [
            {"role": "user", "content": SHORT}, {"role": "assistant", **assistant},
            {"role": "user", "content": "Again."}]}

    by_id = (await client.post(CHAT_URL, json=turn({"audio": {"id": audio_id}}))).json()
    by_text = (await client.post(CHAT_URL, json=turn({"content": SHORT}))).json()
    assert by_id["usage"]["prompt_tokens"] == by_text["usage"]["prompt_tokens"]
    r = await client.post(CHAT_URL, json=turn({"audio": {"id": "audio_unknown"}}))
    assert_error(r, 400, param="messages[1].audio.id")


@pytest.mark.parametrize("config", [{"max_body_bytes": 8 << 20}], indirect=True)  # the audio's data goes too
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_spoken_answer_goes_back_whole(client, stream):
    """The message sent back as it came (audio with its data and transcript, the text as content);
    a whole audio object whose id is unknown (expired) stands for its transcript."""
    r = await client.post(CHAT_URL, json=chat(SHORT, temperature=0, stream=stream, **audio_of("alloy", "pcm16"
                                                                                            if stream else "wav")))
    if stream:
        deltas = [c["choices"][0]["delta"] for c in chunks_of(parse_sse(r.text)) if c.get("choices")]
        pieces = [d["audio"] for d in deltas if "audio" in d]
        message = {"role": "assistant", "content": "".join(d.get("content") or "" for d in deltas),
                   "audio": {"id": next(a["id"] for a in pieces if "id" in a),
                             "data": "".join(a.get("data", "") for a in pieces),
                             "transcript": "".join(a.get("transcript", "") for a in pieces),
                             "expires_at": next(a["expires_at"] for a in pieces if "expires_at" in a)}}
    else:
        message = r.json()["choices"][0]["message"]
    assert message["audio"]["transcript"] == SHORT

    def turn(assistant: dict) -> dict:
        return {"model": MODEL, "temperature": 0, "max_tokens": 5, "messages": [
            {"role": "user", "content": SHORT}, assistant, {"role": "user", "content": "Again."}]}

    by_text = (await client.post(CHAT_URL, json=turn({"role": "assistant", "content": SHORT}))).json()
    for sent in (message, {"role": "assistant", "audio": {**message["audio"], "id": "audio_expired"}}):
        r = await client.post(CHAT_URL, json=turn(sent))
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == by_text["usage"]["prompt_tokens"]


@pytest.mark.parametrize("engine_slots", [2], indirect=True)
async def test_n_choices_each_speak_with_their_own_audio(client):
    r = await client.post(CHAT_URL, json=chat(SHORT, temperature=0, n=2, stream=True, **audio_of("alloy", "pcm16")))
    by_choice: dict[int, list] = {0: [], 1: []}
    for c in chunks_of(parse_sse(r.text)):
        if c.get("choices") and "audio" in c["choices"][0]["delta"]:
            by_choice[c["choices"][0]["index"]].append(c["choices"][0]["delta"]["audio"])
    ids = [[a["id"] for a in audio if "id" in a] for audio in by_choice.values()]
    assert len(ids[0]) == len(ids[1]) == 1 and ids[0] != ids[1]
    for audio in by_choice.values():
        assert "".join(a.get("transcript", "") for a in audio) == SHORT
        assert_speech(np.frombuffer(base64.b64decode("".join(a.get("data", "") for a in audio)), dtype="<i2"))


async def test_a_stored_spoken_completion_keeps_the_transcript_not_the_samples(client):
    body = (await client.post(CHAT_URL, json=chat(SHORT, temperature=0, store=True, **audio_of()))).json()
    stored = (await client.get(f"/v1/chat/completions/{body['id']}")).json()
    audio = stored["choices"][0]["message"]["audio"]
    assert audio["id"] == body["choices"][0]["message"]["audio"]["id"]
    assert audio["transcript"] == SHORT and "data" not in audio


async def test_a_voice_that_fails_mid_stream_ends_the_stream_with_an_error_event(app, client, monkeypatch):
    def broken(voice, text, *, urgent=False):
        future = concurrent.futures.Future()
        future.set_exception(RuntimeError("the voice file is damaged"))
        return future

    monkeypatch.setattr(app.state.speech, "speak", broken)
    r = await client.post(CHAT_URL, json=chat(LONG, stream=True, **audio_of("alloy", "pcm16")))
    events = chunks_of(parse_sse(r.text))
    assert "the voice file is damaged" in events[-1]["error"]["message"]
    plain = await client.post(CHAT_URL, json=chat(SHORT, **audio_of()))
    assert_error(plain, 500, code="engine_error")


async def test_an_answer_is_whole_when_its_transcript_cannot_be_kept(app, client, monkeypatch):
    async def down(*args):
        raise ConnectionError("the database is down")

    monkeypatch.setattr(app.state.transcripts, "save", down)
    body = (await client.post(CHAT_URL, json=chat(SHORT, temperature=0, **audio_of()))).json()
    assert body["choices"][0]["message"]["audio"]["transcript"] == SHORT
