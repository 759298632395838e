"""Generated text -> OpenAI's streamed `tool_calls` deltas (or legacy `function_call` ones).

The model writes calls in `sampling/tool_format.py`'s markup, possibly after some plain text;
the grammar makes the JSON compact with `name` first. `ToolCallStreamer` turns text deltas, split
anywhere, into what OpenAI streams: plain text as `content`; for each call a first fragment with
`index`, `id`, `type` and `function.name` (and `arguments: ""`), then fragments carrying only
pieces of `arguments`, which concatenate to the arguments JSON. Text that could still turn out
to be markup is held back until it is known not to be, and the whitespace just before a call
(or between two) is markup, not content.

A custom (freeform) tool's call, its name on a line then its raw input up to the closing tag,
streams the same way: its first fragment also says `"custom": True`, and its input comes as
`arguments` pieces (the tail that could be the start of the closing tag held back).
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Callable

from rill.engine.detokenize import held_prefix
from rill.sampling.tool_format import CLOSE, CUSTOM_HEAD_END, OPEN

_HEAD = '{"name":'
_ARGS = ',"arguments":'
_TAIL = "}" + CLOSE  # what follows the arguments: the call object's brace, then the closing tag
_SPACE = " \t\r\n"

Delta = dict[str, Any]


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


class ToolCallStreamer:
    """feed() and finish() return (delta, end) pairs: `end` is the offset in the generated text
    up to which the delta accounts for it (a content delta is the text just before `end`)."""

    def __init__(self, make_id: Callable[[], str] = new_call_id):
        self._make_id = make_id
        self._buf = ""
        self._pos = 0  # offset of _buf in the generated text
        self._state = "text"  # text -> head -> args -> tail -> text ..., or head -> input -> text
        self._depth, self._in_string, self._escape = 0, False, False  # the arguments scanner
        self.calls: list[dict[str, Any]] = []  # OpenAI-shaped, arguments growing as they stream
        # a function call named as an earlier one is held back while its arguments still match
        # that call's: a repeat is dropped (the grammar's constraint ends the turn there:
        # sampling/repeated_calls.py), anything else is announced as soon as it differs
        self._pending: str | None = None
        self._held = ""
        self.repeated = False  # a repeated call was dropped

    @property
    def in_call(self) -> bool:
        """Generation stopped inside a call's markup (cut short by max_tokens or a stop string)."""
        return self._state != "text"

    def feed(self, text: str) -> list[tuple[Delta, int]]:
        """Deltas for this piece of generated text (possibly none yet)."""
        self._buf += text
        out: list[tuple[Delta, int]] = []
        while True:
            if self._state == "text":
                at = self._buf.find(OPEN)
                # whitespace just before a call is markup; a tag's first characters may be one
                held = held_prefix(self._buf, OPEN) if at < 0 else len(self._buf) - at
                text_end = len(self._buf[: len(self._buf) - held].rstrip(_SPACE))
                self._content(out, text_end)
                if at < 0:
                    return out
                self._take(at - text_end + len(OPEN))
                self._state = "head"
            elif self._state == "head":
                if self._buf and not self._buf.startswith("{"):  # a custom tool's name line
                    end = self._buf.find(CUSTOM_HEAD_END)
                    if end < 0:
                        return out
                    name = self._take(end)
                    self._take(len(CUSTOM_HEAD_END))
                    self._start_call(out, name, custom=True)
                    self._state = "input"
                    continue
                # {"name":"NAME","arguments":  -- wait for the whole head (tool names are
                # [A-Za-z0-9_-], so a name cannot contain the separator)
                if not (self._buf.startswith(_HEAD) or _HEAD.startswith(self._buf)):
                    raise ValueError(f"malformed tool call head: {self._buf[:40]!r}")
                at = self._buf.find(_ARGS)
                if at < 0:
                    return out
                name = json.loads(self._buf[len(_HEAD) : at])
                self._take(at + len(_ARGS))
                if self._earlier_arguments(name):
                    self._pending, self._held = name, ""
                else:
                    self._start_call(out, name)
                self._state = "args"
            elif self._state == "input":  # a custom call's input, up to the closing tag
                at = self._buf.find(CLOSE)
                self._arguments(out, len(self._buf) - held_prefix(self._buf, CLOSE) if at < 0 else at)
                if at < 0:
                    return out
                self._take(len(CLOSE))
                self._state = "text"
            elif self._state == "args":  # stream the arguments up to where the JSON value ends
                end = self._scan_args()
                self._arguments(out, len(self._buf) if end < 0 else end)
                if end < 0:
                    return out
                if self._pending is not None:  # the arguments are whole and still match
                    if self._held in self._earlier_arguments(self._pending):
                        self._pending, self.repeated = None, True
                    else:
                        self._announce(out)
                self._state = "tail"
            else:  # tail: the call object's closing brace and the closing tag
                if not (self._buf.startswith(_TAIL) or _TAIL.startswith(self._buf)):
                    raise ValueError(f"malformed tool call end: {self._buf[:20]!r}")
                if len(self._buf) < len(_TAIL):
                    return out
                self._take(len(_TAIL))
                self._state = "text"

    def finish(self) -> list[tuple[Delta, int]]:
        """Deltas for whatever is still held back when generation ends."""
        out: list[tuple[Delta, int]] = []
        if self._state == "text" and not self.calls:
            self._content(out, len(self._buf))
        # after a call only another may follow: held text (a separator, a tag cut short) is markup
        elif self._state in ("args", "input"):
            self._arguments(out, len(self._buf))  # cut short: pass on what there is
            if self._pending is not None:
                self._announce(out)
        self._take(len(self._buf))
        return out

    def _start_call(self, out: list[tuple[Delta, int]], name: str, *, custom: bool = False) -> None:
        call: dict[str, Any] = {"index": len(self.calls), "id": self._make_id(), "type": "function",
                                "function": {"name": name, "arguments": ""}}
        fragment: dict[str, Any] = {"index": call["index"], "id": call["id"], "type": "function",
                                    "function": {"name": name, "arguments": ""}}
        if custom:
            call["custom"] = fragment["custom"] = True
        self.calls.append(call)
        out.append(({"tool_calls": [fragment]}, self._pos))

    def _take(self, n: int) -> str:
        taken, self._buf = self._buf[:n], self._buf[n:]
        self._pos += n
        return taken

    def _content(self, out: list[tuple[Delta, int]], n: int) -> None:
        text = self._take(n)
        if text:
            out.append(({"content": text}, self._pos))

    def _earlier_arguments(self, name: str) -> list[str]:
        return [c["function"]["arguments"] for c in self.calls if c["function"]["name"] == name and not c.get("custom")]

    def _announce(self, out: list[tuple[Delta, int]]) -> None:
        """The held call differs from every earlier one: its first fragment, then what it has."""
        name, held = self._pending, self._held
        self._pending, self._held = None, ""
        self._start_call(out, name)
        if held:
            call = self.calls[-1]
            call["function"]["arguments"] = held
            out.append(({"tool_calls": [{"index": call["index"], "function": {"arguments": held}}]}, self._pos))

    def _arguments(self, out: list[tuple[Delta, int]], n: int) -> None:
        text = self._take(n)
        if text and self._pending is not None:
            self._held += text
            if not any(earlier.startswith(self._held) for earlier in self._earlier_arguments(self._pending)):
                self._announce(out)
            return
        if text:
            call = self.calls[-1]
            call["function"]["arguments"] += text
            out.append(({"tool_calls": [{"index": call["index"], "function": {"arguments": text}}]}, self._pos))

    def _scan_args(self) -> int:
        """Advance the JSON scanner over the buffer; the index just past the arguments, or -1."""
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
            elif self._depth == 0 and ch in ",}":
                return self._reset_scan(i)
        return -1

    def _reset_scan(self, end: int) -> int:
        self._depth, self._in_string, self._escape = 0, False, False
        return end
