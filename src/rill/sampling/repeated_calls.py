"""A tool turn ends at a call that repeats an earlier one.

A small model given room for parallel calls fills it: greedy SmolLM2 wrote `get_time` with the
same arguments again and again until max_tokens. A call the same as an earlier one in the turn
(name and arguments, byte for byte) asks for nothing new, so the turn ends there: the grammar's
constraint reports itself done (the engine stops the sequence as at the grammar's end), and the
API layer drops the repeat (core/tool_calls.py holds back a call while it still matches an
earlier one, so nothing of it is streamed). Function calls only: a custom tool's raw input may
legitimately be sent twice."""

from __future__ import annotations


class RepeatedCalls:
    """Watches a turn's text as the model writes it, call markup included."""

    def __init__(self, open_mark: str, close_mark: str):
        self._open, self._close = open_mark.encode(), close_mark.encode()
        self._text = bytearray()
        self._searched = 0  # where the next closing tag may start
        self._calls: set[bytes] = set()
        self.repeated = False  # the last call closed repeats an earlier one

    def observe(self, piece: bytes) -> None:
        self._text += piece
        while True:
            end = self._text.find(self._close, self._searched)
            if end < 0:
                self._searched = max(self._searched, len(self._text) - len(self._close) + 1)
                return
            self._searched = end + len(self._close)
            start = self._text.rfind(self._open, 0, end)
            if start < 0:
                continue
            call = bytes(self._text[start + len(self._open) : end])
            if not call.startswith(b"{"):  # a custom tool's input
                continue
            if call in self._calls:
                self.repeated = True
                return
            self._calls.add(call)
