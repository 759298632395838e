"""The server's speech: voices loaded once (on first use), synthesis on its own worker threads so
that neither the event loop nor the engine's thread waits for it."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from typing import Callable

from rill.speech.speaker import PiperSpeaker, Speaker, Speech
from rill.speech.voices import VoiceCatalog, VoiceFile

log = logging.getLogger("rill.speech")

SpeakerFactory = Callable[[VoiceFile], Speaker]


class SpeechService:
    def __init__(self, catalog: VoiceCatalog, *, workers: int = 1,
                 make_speaker: SpeakerFactory | None = None, threads: int = 1):
        self.catalog = catalog
        self._make = make_speaker or (lambda voice: PiperSpeaker(voice, threads=threads))
        self._speakers: dict[str, Speaker] = {}
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="rill-speech")

    def speak(self, voice: VoiceFile, text: str) -> concurrent.futures.Future[Speech]:
        """Synthesis of one piece, queued behind the pieces asked for before it."""
        return self._pool.submit(lambda: self._speaker(voice).speak(text))

    def _speaker(self, voice: VoiceFile) -> Speaker:
        with self._lock:  # one load per voice, however many requests ask at once
            speaker = self._speakers.get(str(voice.model))
            if speaker is None:
                log.info("loading voice %s from %s", voice.name, voice.model)
                speaker = self._speakers[str(voice.model)] = self._make(voice)
            return speaker

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
