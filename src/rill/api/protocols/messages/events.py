"""The core's events -> Anthropic's stream events, and the whole message they add up to.

A stream is `message_start`, `ping`, then per content block `content_block_start`, its
`content_block_delta`s and `content_block_stop`, then `message_delta` (stop_reason, stop_sequence,
cumulative usage) and `message_stop`. Blocks are `thinking` (a thinking model's reasoning, with
`thinking_delta`s), `text` (`text_delta`) and `tool_use` (starting with `input: {}`, its arguments
following as `input_json_delta` pieces). A failure after the first byte is one `error` event.
The non-streamed answer is the message these events build (Claude Code falls back to it).

Usage as Anthropic counts it: `input_tokens` are the prompt tokens not read from the prefix
cache, `cache_read_input_tokens` those that were (their sum is the prompt, as count_tokens counts
it); `message_start` carries the whole prompt as `input_tokens` (the cache's share is known at
the end), `message_delta` the final split and the output tokens so far.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import orjson

from rill.api.core.events import CallEnd, CallInput, CallStart, Failure, Finish, OutEvent, ReasoningOut, TextOut, Usage
from rill.api.protocols.messages.errors import error_body

STOP_REASONS = {"stop": "end_turn", "stop_sequence": "stop_sequence", "length": "max_tokens", "tool_calls": "tool_use"}

Event = tuple[str, dict[str, Any]]  # (SSE event name, data)


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def tool_use_id(call_id: str) -> str:
    """A call's id as Anthropic spells them (`toolu_...`); the core's `call_...` ids keep their suffix."""
    if call_id.startswith("toolu_"):
        return call_id
    return "toolu_" + (call_id[5:] if call_id.startswith("call_") else call_id)


def sse(event: Event) -> bytes:
    name, data = event
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def usage_of(usage: Usage) -> dict[str, int]:
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    return {"input_tokens": usage.prompt_tokens - cached, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached, "output_tokens": usage.completion_tokens}


def _arguments(text: str) -> dict[str, Any]:
    """A call's whole arguments as the `input` object; {} when they do not parse (cut short)."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class MessageEvents:
    """Feed the core's events in order; each call returns the wire events it makes. `message()`
    is the whole message so far (the non-streamed answer once the Finish is in)."""

    def __init__(self, message_id: str, model: str, input_tokens: int, *, show_thinking: bool = True):
        self.id, self.model = message_id, model
        self._input_tokens = input_tokens
        self._show_thinking = show_thinking
        self.content: list[dict[str, Any]] = []
        self._open: str | None = None  # the type of the block now open (the last one), if any
        self._calls: dict[int, int] = {}  # the core's call number -> its block's index
        self._arguments: dict[int, list[str]] = {}  # block index -> argument pieces so far
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.usage: dict[str, int] = {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                                      "cache_read_input_tokens": 0, "output_tokens": 0}
        self.finished = False

    def start(self) -> list[Event]:
        return [("message_start", {"type": "message_start", "message": self._message([])}),
                ("ping", {"type": "ping"})]

    def feed(self, event: OutEvent | Finish) -> list[Event]:
        if isinstance(event, TextOut):
            return self._delta("text", {"type": "text_delta", "text": event.text}, event.text)
        if isinstance(event, ReasoningOut):
            if not self._show_thinking:
                return []
            return self._delta("thinking", {"type": "thinking_delta", "thinking": event.text}, event.text)
        if isinstance(event, CallStart):
            out = self._close()
            index = len(self.content)
            block = {"type": "tool_use", "id": tool_use_id(event.id), "name": event.name, "input": {}}
            self.content.append(block)
            self._calls[event.call] = index
            self._arguments[index] = []
            self._open = "tool_use"
            out.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": dict(block)}))
            return out
        if isinstance(event, CallInput):
            index = self._calls[event.call]
            if not event.text:
                return []
            self._arguments[index].append(event.text)
            return [("content_block_delta", {"type": "content_block_delta", "index": index,
                                             "delta": {"type": "input_json_delta", "partial_json": event.text}})]
        if isinstance(event, CallEnd):
            index = self._calls[event.call]
            self.content[index]["input"] = _arguments(event.arguments)
            self._arguments.pop(index, None)
            return self._close() if index == len(self.content) - 1 else []
        if isinstance(event, Finish):
            return self.finish(event)
        raise TypeError(f"not a core event: {event!r}")  # pragma: no cover

    def finish(self, event: Finish) -> list[Event]:
        out = self._close()
        self.stop_reason = STOP_REASONS[event.reason]
        self.stop_sequence = event.stop_sequence if event.reason == "stop_sequence" else None
        self.usage = usage_of(event.usage)
        self.finished = True
        out.append(("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence},
                                      "usage": dict(self.usage)}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out

    def message(self) -> dict[str, Any]:
        return self._message(self.content)

    def _message(self, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [dict(b) for b in content], "stop_reason": self.stop_reason,
                "stop_sequence": self.stop_sequence, "usage": dict(self.usage)}

    def _delta(self, kind: str, delta: dict[str, Any], text: str) -> list[Event]:
        if not text:
            return []
        out: list[Event] = []
        if self._open != kind:
            out = self._close()
            block: dict[str, Any] = {"type": "text", "text": ""} if kind == "text" else {
                "type": "thinking", "thinking": "", "signature": ""}
            self.content.append(block)
            self._open = kind
            out.append(("content_block_start", {"type": "content_block_start", "index": len(self.content) - 1,
                                                "content_block": dict(block)}))
        index = len(self.content) - 1
        self.content[index][kind] += text
        out.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        return out

    def _close(self) -> list[Event]:
        """Stop the open block (a call's that never ended keeps the arguments it got, if whole)."""
        if self._open is None:
            return []
        index = len(self.content) - 1
        pieces = self._arguments.pop(index, None)
        if pieces is not None:
            self.content[index]["input"] = _arguments("".join(pieces))
        self._open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]


def error_event(failure: Failure) -> Event:
    return "error", error_body(failure.error)
