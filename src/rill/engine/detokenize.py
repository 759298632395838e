"""Token bytes -> text deltas that are safe to show: whole UTF-8 characters only, and never any
part of a stop string (a possible prefix of one is held back until it is ruled out)."""

from __future__ import annotations

import codecs


class StopMatcher:
    """Holds back text that could be the start of a stop string; reports the first full match."""

    __slots__ = ("_stops", "_held")

    def __init__(self, stops: tuple[str, ...]):
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit, whether a stop string matched).

        On a match the emitted text is everything before the earliest stop string and the
        rest is dropped."""
        if not self._stops:
            return text, False
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._held = ""
            return buf[: min(hits)], True
        keep = self._longest_partial(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """At the end of generation with no match: the held text was not a stop after all."""
        held, self._held = self._held, ""
        return held

    def _longest_partial(self, buf: str) -> int:
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:k]):
                    best = k
                    break
        return best


class Detokenizer:
    """Incremental bytes -> str. A character split across tokens comes out whole, once its last
    byte arrives; bytes that can never form valid UTF-8 become U+FFFD instead of breaking text."""

    __slots__ = ("_decoder", "_stops")

    def __init__(self, stops: tuple[str, ...] = ()):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = StopMatcher(stops)

    def push(self, piece: bytes) -> tuple[str, bool]:
        return self._stops.push(self._decoder.decode(piece))

    def finish(self) -> str:
        """The remaining text when generation ends without a stop-string match. A character cut
        off by the end of generation (its first bytes only) is dropped, not shown as U+FFFD, so
        a shorter completion stays a prefix of a longer one."""
        self._decoder.reset()
        return self._stops.flush()
