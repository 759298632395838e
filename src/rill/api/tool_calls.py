"""Generated text -> OpenAI's streamed `tool_calls` deltas (not wired to requests yet: issue 5).

The model writes tool calls as `<tool_call>{"name":"NAME","arguments":ARGS}</tool_call>`
(compact JSON: the grammar forces it), possibly after some plain text. The streamer turns text
deltas, split anywhere, into the deltas OpenAI streams: plain text as `content`; for each call a
first fragment with `index`, `id`, `type` and `function.name` (and `arguments: ""`), then
fragments carrying only pieces of `arguments`, which concatenate to ARGS. Text that could still
turn out to be markup is held back until it is known not to be.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Callable

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
_HEAD = '{"name":'
_ARGS = ',"arguments":'
_TAIL = "}" + CLOSE  # what follows ARGS: the call object's brace, then the closing tag


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _held_prefix(text: str, marker: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of marker."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class ToolCallStreamer:
    def __init__(self, make_id: Callable[[], str] = new_call_id):
        self._make_id = make_id
        self._buf = ""
        self._state = "text"  # text -> head -> args -> tail -> text ...
        self._depth, self._in_string, self._escape = 0, False, False  # the ARGS scanner
        self.calls: list[dict[str, Any]] = []  # the finished calls, OpenAI-shaped

    def feed(self, text: str) -> list[dict[str, Any]]:
        """Deltas for this piece of generated text (possibly none yet)."""
        self._buf += text
        out: list[dict[str, Any]] = []
        while True:
            if self._state == "text":
                at = self._buf.find(OPEN)
                if at < 0:
                    keep = _held_prefix(self._buf, OPEN)
                    self._emit_content(out, self._buf[: len(self._buf) - keep])
                    self._buf = self._buf[len(self._buf) - keep :]
                    return out
                self._emit_content(out, self._buf[:at])
                self._buf = self._buf[at + len(OPEN) :]
                self._state = "head"
            elif self._state == "head":
                # {"name":"NAME","arguments":  -- wait until the whole head has arrived (tool
                # names are [A-Za-z0-9_-], so the name cannot contain the separator)
                if not (self._buf.startswith(_HEAD) or _HEAD.startswith(self._buf)):
                    raise ValueError(f"malformed tool call head: {self._buf[:40]!r}")
                at = self._buf.find(_ARGS)
                if at < 0:
                    return out
                name = json.loads(self._buf[len(_HEAD) : at])
                self._buf = self._buf[at + len(_ARGS) :]
                call = {"index": len(self.calls), "id": self._make_id(), "type": "function",
                        "function": {"name": name, "arguments": ""}}
                self.calls.append(call)
                out.append({"tool_calls": [{"index": call["index"], "id": call["id"], "type": "function",
                                            "function": {"name": name, "arguments": ""}}]})
                self._state = "args"
            elif self._state == "args":  # stream ARGS up to where the JSON value ends
                end = self._scan_args()
                if end < 0:
                    self._emit_args(out, self._buf)
                    self._buf = ""
                    return out
                self._emit_args(out, self._buf[:end])
                self._buf = self._buf[end:]
                self._state = "tail"
            else:  # tail: the call object's closing brace and the closing tag
                if len(self._buf) < len(_TAIL):
                    if not _TAIL.startswith(self._buf):
                        raise ValueError(f"malformed tool call end: {self._buf!r}")
                    return out
                if not self._buf.startswith(_TAIL):
                    raise ValueError(f"malformed tool call end: {self._buf[:20]!r}")
                self._buf = self._buf[len(_TAIL) :]
                self._state = "text"

    def _scan_args(self) -> int:
        """Advance the JSON scanner over the buffer; the index just past the ARGS value, or -1."""
        for i, ch in enumerate(self._buf):
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
                    if self._depth == 0:  # a bare string value
                        return self._reset_scan(i + 1)
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return self._reset_scan(i + 1)
            elif self._depth == 0 and ch in ",}" :
                return self._reset_scan(i)
        return -1

    def _reset_scan(self, end: int) -> int:
        self._depth, self._in_string, self._escape = 0, False, False
        return end

    def finish(self) -> list[dict[str, Any]]:
        """Deltas for whatever is still held back when generation ends."""
        out: list[dict[str, Any]] = []
        if self._state == "text":
            self._emit_content(out, self._buf)
        elif self._state == "args":
            self._emit_args(out, self._buf)  # cut short (max_tokens): pass on what there is
        self._buf = ""
        return out

    def _emit_content(self, out: list[dict[str, Any]], text: str) -> None:
        if text:
            out.append({"content": text})

    def _emit_args(self, out: list[dict[str, Any]], text: str) -> None:
        if text:
            call = self.calls[-1]
            call["function"]["arguments"] += text
            out.append({"tool_calls": [{"index": call["index"], "function": {"arguments": text}}]})
