"""The server's speech: voices loaded once (on first use), synthesis on its own worker threads so
that neither the event loop nor the engine's thread waits for it.

Two queues, because speech is much faster than it is spoken (about ten times, here) but competes
with the model for the same cores: an answer's first piece is urgent (it is what the listener
waits for) and runs at normal priority; the rest, which only has to stay ahead of playback, runs on
threads with a higher niceness, so the model's decoding (everyone's text) keeps most of the CPU.
docs/benchmarks.md has the measurements behind the default.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from typing import Callable

from rill.speech.speaker import PiperSpeaker, Speaker, Speech
from rill.speech.voices import VoiceCatalog, VoiceFile

log = logging.getLogger("rill.speech")

DEFAULT_NICENESS = 10  # of the threads that speak all but an answer's first piece

SpeakerFactory = Callable[[VoiceFile], Speaker]


def _niceness(value: int) -> Callable[[], None]:
    def apply() -> None:
        try:  # Linux: a thread's own niceness
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), value)
        except (AttributeError, OSError) as exc:  # pragma: no cover - other systems
            log.debug("speech threads keep their priority: %s", exc)
    return apply


class SpeechService:
    def __init__(self, catalog: VoiceCatalog, *, workers: int = 1, niceness: int = DEFAULT_NICENESS,
                 make_speaker: SpeakerFactory | None = None, threads: int = 1):
        self.catalog = catalog
        self._make = make_speaker or (lambda voice: PiperSpeaker(voice, threads=threads))
        self._speakers: dict[str, Speaker] = {}
        self._lock = threading.Lock()
        self._urgent = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="rill-speech")
        self._ahead = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="rill-speech-ahead",
                                                            initializer=_niceness(niceness))

    def speak(self, voice: VoiceFile, text: str, *, urgent: bool = False) -> concurrent.futures.Future[Speech]:
        """Synthesis of one piece, queued behind the pieces of its kind asked for before it."""
        pool = self._urgent if urgent else self._ahead
        return pool.submit(lambda: self._speaker(voice).speak(text))

    def _speaker(self, voice: VoiceFile) -> Speaker:
        with self._lock:  # one load per voice, however many requests ask at once
            speaker = self._speakers.get(str(voice.model))
            if speaker is None:
                log.info("loading voice %s from %s", voice.name, voice.model)
                speaker = self._speakers[str(voice.model)] = self._make(voice)
            return speaker

    def close(self) -> None:
        for pool in (self._urgent, self._ahead):
            pool.shutdown(wait=False, cancel_futures=True)
