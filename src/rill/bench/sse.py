"""An incremental Server-Sent Events parser: feed it bytes as they arrive, split anywhere (inside
a line, between \\r and \\n, inside a multi-byte UTF-8 character); it returns each complete
event's data. Only the `data` field matters for the OpenAI streaming format; comments
(`: keep-alive`) and other fields are skipped."""

from __future__ import annotations


class SSEParser:
    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._pending_cr = False  # the last byte fed was \r: a following \n belongs to it

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event completed by `chunk` (multi-line data joined with \\n)."""
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = False
        self._buf += chunk
        events: list[str] = []
        while True:
            cut = _line_end(self._buf)
            if cut is None:
                break
            end, nxt = cut
            line = self._buf[:end]
            if nxt == len(self._buf) and self._buf.endswith(b"\r"):
                self._pending_cr = True
            self._buf = self._buf[nxt:]
            event = self._line(line.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[str]:
        """End of stream: an event not terminated by a blank line is dropped, per the SSE spec."""
        self._buf = b""
        self._data = []
        return []

    def _line(self, line: str) -> str | None:
        if line == "":
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        if line.startswith(":"):
            return None
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        return None


def _line_end(buf: bytes) -> tuple[int, int] | None:
    """(end of the first line, start of the next) or None when no line is complete. A \\r at
    the very end of `buf` ends a line; a \\n that may follow it is skipped by feed()."""
    i_n = buf.find(b"\n")
    i_r = buf.find(b"\r")
    if i_r != -1 and (i_n == -1 or i_r < i_n):
        if i_r + 1 < len(buf) and buf[i_r + 1 : i_r + 2] == b"\n":
            return i_r, i_r + 2
        return i_r, i_r + 1
    if i_n != -1:
        return i_n, i_n + 1
    return None
