"""Token bytes -> text deltas that are safe to show: whole UTF-8 characters only, and never any
part of a stop string (a possible prefix of one is held back until it is ruled out)."""

from __future__ import annotations

import codecs



def held_prefix(text: str, marker: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of marker: what a stream
    must hold back until it knows whether the marker follows."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0

class StopMatcher:
    """Holds back text that could be the start of a stop string; reports the first full match.

    With `until`, stop strings are only looked for in the text before the first occurrence of
    that marker: what follows it (tool-call markup, whose shape the grammar owns) passes as is."""

    __slots__ = ("_stops", "_until", "_held", "_passing", "matched")

    def __init__(self, stops: tuple[str, ...], until: str | None = None):
        self._stops = tuple(s for s in stops if s)
        self.matched: str | None = None  # the stop string that ended the text (Messages' stop_sequence)
        self._until = until if self._stops else None
        self._held = ""
        self._passing = not self._stops  # nothing to look for (any more)

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit, whether a stop string matched).

        On a match the emitted text is everything before the earliest stop string and the
        rest is dropped."""
        if self._passing:
            return text, False
        buf = self._held + text
        marker = buf.find(self._until) if self._until else -1
        hits = [i for i in (buf.find(s) for s in self._stops) if 0 <= i and (marker < 0 or i < marker)]
        if hits:
            self._held = ""
            at = min(hits)
            self.matched = next(s for s in self._stops if buf.find(s) == at)
            return buf[:at], True
        if marker >= 0:
            self._held, self._passing = "", True
            return buf, False
        keep = self._longest_partial(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """At the end of generation with no match: the held text was not a stop after all."""
        held, self._held = self._held, ""
        return held

    def _longest_partial(self, buf: str) -> int:
        best = 0
        for stop in (*self._stops, self._until) if self._until else self._stops:
            for k in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:k]):
                    best = k
                    break
        return best


class Detokenizer:
    """Incremental bytes -> str. A character split across tokens comes out whole, once its last
    byte arrives; bytes that can never form valid UTF-8 become U+FFFD instead of breaking text."""

    __slots__ = ("_decoder", "_stops")

    def __init__(self, stops: tuple[str, ...] = (), stops_until: str | None = None):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = StopMatcher(stops, stops_until)

    def push(self, piece: bytes) -> tuple[str, bool]:
        return self._stops.push(self._decoder.decode(piece))

    @property
    def matched_stop(self) -> str | None:
        return self._stops.matched

    def finish(self) -> str:
        """The remaining text when generation ends without a stop-string match. A character cut
        off by the end of generation (its first bytes only) is dropped, not shown as U+FFFD, so
        a shorter completion stays a prefix of a longer one."""
        self._decoder.reset()
        return self._stops.flush()
