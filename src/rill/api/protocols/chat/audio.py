"""Audio output (`modalities: ["text", "audio"]`, `audio: {voice, format}`): the checks that make a
request a 400 before the first byte, and one choice's AudioTrack, which speaks the answer's text
sentence by sentence while the model is still writing it.

The text stays in `content` (the contract: the text is *also* spoken) and is repeated as
`audio.transcript`; OpenAI's audio models leave content null. docs/audio.md has the wire shapes.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import numpy as np

from rill.api.protocols.chat.schemas import AssistantMessage, ChatCompletionRequest
from rill.errors import EngineError, InvalidRequest, UnsupportedParameter
from rill.speech.encode import ENCODED, STREAMABLE, StreamEncoder, encode
from rill.speech.sentences import SentenceSplitter
from rill.speech.service import SpeechService
from rill.speech.speaker import Speech
from rill.speech.voices import VoiceFile

log = logging.getLogger("rill.api")

AUDIO_TTL_SECONDS = 3600  # how long an answer's audio id stands for its transcript (expires_at)

# Keeps a transcript for multi-turn audio: (audio id, transcript, expires_at)
TranscriptSaver = Callable[[str, str, float], Awaitable[None]]
# The unexpired transcripts among these audio ids that the caller may see
TranscriptLookup = Callable[[list[str]], Awaitable[dict[str, str]]]


@dataclass(frozen=True, slots=True)
class AudioPlan:
    voice: VoiceFile
    format: str


def wants_audio(body: ChatCompletionRequest) -> bool:
    return bool(body.modalities and "audio" in body.modalities)


def plan_audio(body: ChatCompletionRequest, speech: SpeechService | None, unavailable: str) -> AudioPlan | None:
    """The request's audio output, checked; None for text only. `unavailable` says why a server
    without `speech` cannot speak."""
    if body.modalities == []:
        raise InvalidRequest("`modalities` must name at least one output: [\"text\"] or [\"text\", \"audio\"].",
                             param="modalities")
    if not wants_audio(body):
        if body.audio is not None:
            raise InvalidRequest('`audio` sets up audio output: send it with `modalities: ["text", "audio"]`.',
                                 param="audio")
        return None
    if body.audio is None:
        raise InvalidRequest('`modalities` asks for audio: send `audio: {"voice": ..., "format": ...}` with it.',
                             param="audio")
    if speech is None:
        raise UnsupportedParameter(f"`modalities`: audio output is not available on this server: {unavailable}",
                                   param="modalities")
    voice = speech.catalog.resolve(body.audio.voice)
    if voice is None:
        raise InvalidRequest(f"`audio.voice` {body.audio.voice!r} is not a voice of this server "
                             f"(the voices: {', '.join(speech.catalog.names())}).", param="audio.voice")
    fmt = body.audio.format
    if fmt not in ENCODED:
        raise UnsupportedParameter(f"`audio.format` {fmt!r} is not available: no well-kept encoder for it "
                                   f"is installed (the formats: {', '.join(ENCODED)}).", param="audio.format")
    if body.stream and fmt not in STREAMABLE:
        raise InvalidRequest(f"`audio.format` {fmt!r} cannot be streamed: with `stream: true` use "
                             f"{' or '.join(STREAMABLE)} ({fmt} is encoded whole: send `stream: false`).",
                             param="audio.format")
    return AudioPlan(voice, fmt)


def new_audio_id() -> str:
    return f"audio_{uuid.uuid4().hex[:24]}"


class AudioTrack:
    """One choice's speech. `transcript()` takes each content delta (and returns the delta's
    `audio` part); complete sentences are synthesised on the speech service's threads, in order;
    `ready()` gives the audio of those finished so far, `finish()` the rest once the text ended."""

    def __init__(self, speech: SpeechService, plan: AudioPlan, *, stream: bool,
                 save: TranscriptSaver | None = None):
        self.id = new_audio_id()
        self.expires_at = int(time.time()) + AUDIO_TTL_SECONDS
        self._speech, self._plan, self._save = speech, plan, save
        self._splitter = SentenceSplitter()
        self._pending: collections.deque[asyncio.Future[Speech]] = collections.deque()
        self._encoder = StreamEncoder(plan.format) if stream else None
        self._samples: list[np.ndarray] = []  # the whole answer's, for a non-streamed message
        self._text: list[str] = []
        self._submitted = False  # the first piece goes to the urgent queue
        self.num_tokens = 0

    @property
    def transcript_text(self) -> str:
        return "".join(self._text)

    def transcript(self, text: str) -> dict[str, Any]:
        """The `audio` part of the delta that carries this content; the id goes out once, with the
        first transcript."""
        part = {"transcript": text} if self._text else {"id": self.id, "transcript": text}
        self._text.append(text)
        for piece in self._splitter.feed(text):
            self._submit(piece)
        return part

    def _submit(self, piece: str) -> None:
        urgent = not self._submitted  # the first piece is what the listener waits for
        self._submitted = True
        self._pending.append(asyncio.wrap_future(self._speech.speak(self._plan.voice, piece, urgent=urgent)))

    @property
    def next_ready(self) -> asyncio.Future[Speech] | None:
        """The synthesis the next audio waits for, if any."""
        return self._pending[0] if self._pending else None

    def ready(self) -> list[dict[str, Any]]:
        """The deltas of the audio synthesised since the last call (streamed answers)."""
        data = b""
        while self._pending and self._pending[0].done():
            data += self._take(self._pending.popleft())
        return [{"audio": {"data": base64.b64encode(data).decode()}}] if data else []

    async def finish(self) -> AsyncIterator[dict[str, Any]]:
        """Speak what is left; the last deltas: each remaining piece's audio as it is ready, then
        the id's expiry."""
        rest = self._splitter.finish()
        if rest is not None:
            self._submit(rest)
        while self._pending:
            await asyncio.wait({self._pending[0]})  # its failure is _take's to report
            data = self._take(self._pending.popleft())
            if data:
                yield {"audio": {"data": base64.b64encode(data).decode()}}
        if not self._text:
            return  # nothing was said (an answer of tool calls only): no audio
        await self._keep()
        data = self._encoder.finish() if self._encoder is not None else b""
        if data:
            yield {"audio": {"data": base64.b64encode(data).decode()}}
        yield {"audio": {"expires_at": self.expires_at}}

    def _take(self, done: asyncio.Future[Speech]) -> bytes:
        try:
            speech = done.result()
        except Exception as exc:
            raise EngineError(f"speaking the answer failed: {exc}") from exc
        self.num_tokens += speech.num_tokens
        if self._encoder is None:
            self._samples.append(speech.samples)
            return b""
        return self._encoder.add(speech.samples)

    async def _keep(self) -> None:
        """Keep the transcript for the next turn. The answer is whole without it: when the store
        fails, the id is refused later with a clear 400 rather than the answer now."""
        if self._save is None:
            return
        try:
            await asyncio.shield(self._save(self.id, self.transcript_text, self.expires_at))
        except Exception:
            log.exception("keeping the transcript of %s failed", self.id)

    def message(self) -> dict[str, Any] | None:
        """The non-streamed message's `audio` (None when nothing was said)."""
        if not self._text:
            return None
        samples = np.concatenate(self._samples) if self._samples else np.zeros(0, np.int16)
        return {"id": self.id, "data": base64.b64encode(encode(samples, self._plan.format)).decode(),
                "expires_at": self.expires_at, "transcript": self.transcript_text}

    def summary(self) -> dict[str, Any]:
        """What a span and a stored completion keep of the audio: everything but the samples."""
        return {"id": self.id, "expires_at": self.expires_at, "transcript": self.transcript_text,
                "format": self._plan.format, "voice": self._plan.voice.name}

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()


async def next_item(stream: Any, pending_event: asyncio.Future | None, tracks: list[AudioTrack],
                    timeout: float) -> tuple[asyncio.Future, bool]:
    """Wait for the engine's next event or a track's next audio, whichever comes first;
    (the event future, still pending or done; whether anything happened before the timeout)."""
    if pending_event is None:
        pending_event = asyncio.ensure_future(anext(stream))
    waits = {pending_event, *(t.next_ready for t in tracks if t.next_ready is not None)}
    done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    return pending_event, bool(done)


async def with_transcripts(body: ChatCompletionRequest, lookup: TranscriptLookup) -> ChatCompletionRequest:
    """Multi-turn audio: an assistant message whose `audio` is `{"id"}` stands for the text its
    answer spoke; the body with those messages' content set to their transcripts. A message that
    has its text already (an answer sent back whole: `content` or `audio.transcript`) needs no
    lookup; the kept transcript wins over a sent one. An id with neither is a 400 (unknown,
    expired, or another key's)."""
    refs = {i: m.audio for i, m in enumerate(body.messages) if isinstance(m, AssistantMessage) and m.audio is not None}
    if not refs:
        return body
    wanted = [audio.id for i, audio in refs.items() if body.messages[i].content is None]
    found = await lookup(wanted) if wanted else {}
    messages = list(body.messages)
    for i, audio in refs.items():
        message = body.messages[i]
        assert isinstance(message, AssistantMessage)
        text = message.content if message.content is not None else found.get(audio.id, audio.transcript)
        if text is None:
            raise InvalidRequest(f"No audio with id {audio.id!r}: it is unknown, expired (ids last "
                                 f"{AUDIO_TTL_SECONDS // 60} minutes) or another key's; send the transcript "
                                 "as the message's content instead.", param=f"messages[{i}].audio.id")
        messages[i] = message.model_copy(update={"audio": None, "content": text})
    return body.model_copy(update={"messages": messages})
