"""Streamed text -> pieces worth speaking: whole sentences, as soon as each one ends.

Speaking sentence by sentence is what lets the first audio arrive while the model is still
writing; a piece must also be long enough to sound natural (a lone "Yes." or "Dr." merges with
what follows) and short enough that a run-on sentence does not hold the audio back.
"""

from __future__ import annotations

import re

MIN_CHARS = 12  # a shorter "sentence" waits for more text
MAX_CHARS = 240  # a longer run without an end is cut at its last comma (else space)

# a sentence end: terminal punctuation (and closing quotes/brackets) then whitespace, or a line break
_END = re.compile(r"[.!?…:;。！？]+[\"')\]»”’]*(?=\s)|\n+")
_SOFT = re.compile(r"[,–—]\s|\s")


class SentenceSplitter:
    def __init__(self, *, min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS):
        self._buffer = ""
        self._min, self._max = min_chars, max_chars

    def feed(self, text: str) -> list[str]:
        """The pieces that this text completes, in order."""
        self._buffer += text
        out = []
        while True:
            piece = self._take()
            if piece is None:
                return out
            if piece.strip():
                out.append(piece)

    def finish(self) -> str | None:
        """Whatever is left once the text has ended."""
        rest, self._buffer = self._buffer, ""
        return rest if rest.strip() else None

    def _take(self) -> str | None:
        for match in _END.finditer(self._buffer):
            if len(self._buffer[:match.end()].strip()) >= self._min:
                return self._cut(match.end())
        if len(self._buffer) > self._max:
            window = self._buffer[:self._max]
            soft = [m.end() for m in _SOFT.finditer(window) if m.end() >= self._min]
            commas = [m.end() for m in re.finditer(r"[,–—]\s", window) if m.end() >= self._min]
            return self._cut((commas or soft or [self._max])[-1])
        return None

    def _cut(self, end: int) -> str:
        piece, self._buffer = self._buffer[:end], self._buffer[end:]
        return piece
