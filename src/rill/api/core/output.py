"""One choice's generated text -> the deltas of its chunks and, at the end, its message.

`ChoiceOutput` passes text through as `content`. `ToolCallOutput` (a request with tools or
functions) splits it into content and calls with `ToolCallStreamer`, gives each content delta
the logprobs of exactly its tokens, and names the finish `tool_calls` (`function_call`) when the
turn ended with complete calls. Streaming and non-streaming responses use the same objects, so a
completion's message is the concatenation of what its stream would have sent.
"""

from __future__ import annotations

import collections
from typing import Any, Callable

from rill.api.core.tool_calls import Delta, ToolCallStreamer, new_call_id
from rill.engine.types import FinishReason, TokenLogprob

Piece = tuple[Delta, tuple[TokenLogprob, ...]]  # a chunk's delta and the logprobs it carries


class ChoiceOutput:
    def __init__(self) -> None:
        self._content: list[str] = []
        self._reasoning: list[str] = []

    def reason(self, text: str) -> list[Piece]:
        """A thinking model's reasoning: `reasoning_content`, never content (no logprobs)."""
        self._reasoning.append(text)
        return [({"reasoning_content": text}, ())]

    def feed(self, text: str, logprobs: tuple[TokenLogprob, ...] = ()) -> list[Piece]:
        self._content.append(text)
        return [({"content": text}, logprobs)]

    def finish(self) -> list[Piece]:
        return []

    def finish_reason(self, reason: FinishReason) -> str:
        return reason.value

    def message(self) -> dict[str, Any]:
        """The `content` (and call fields, and a thinking model's `reasoning_content`) of the
        non-streamed message."""
        reasoning = {"reasoning_content": "".join(self._reasoning)} if self._reasoning else {}
        return {"content": "".join(self._content), **reasoning}


class ToolCallOutput(ChoiceOutput):
    def __init__(self, *, legacy: bool, make_id: Callable[[], str] = new_call_id):
        super().__init__()
        self._legacy = legacy  # `functions`: one call, as delta.function_call
        self._streamer = ToolCallStreamer(make_id)
        self._tokens: collections.deque[tuple[int, TokenLogprob]] = collections.deque()  # (offset, entry)
        self._num_token_chars = 0

    def feed(self, text: str, logprobs: tuple[TokenLogprob, ...] = ()) -> list[Piece]:
        for entry in logprobs:
            self._tokens.append((self._num_token_chars, entry))
            self._num_token_chars += len(entry.text)
        return self._pieces(self._streamer.feed(text))

    def finish(self) -> list[Piece]:
        return self._pieces(self._streamer.finish())

    def _pieces(self, deltas: list[tuple[Delta, int]]) -> list[Piece]:
        out: list[Piece] = []
        for delta, end in deltas:
            if "content" not in delta:
                out.append((self._function_call(delta) if self._legacy else delta, ()))
                continue
            self._content.append(delta["content"])
            # a token goes with the content that completes it; tokens wholly before this
            # content's start were markup and carry no content
            start = end - len(delta["content"])
            while self._tokens and self._tokens[0][0] < start and self._token_end(0) <= start:
                self._tokens.popleft()
            mine = []
            while self._tokens and self._token_end(0) <= end:
                mine.append(self._tokens.popleft()[1])
            out.append((delta, tuple(mine)))
        return out

    def _token_end(self, i: int) -> int:
        start, entry = self._tokens[i]
        return start + len(entry.text)

    @staticmethod
    def _function_call(delta: Delta) -> Delta:
        """A tool_calls fragment in the legacy shape: {"function_call": {"name"?, "arguments"}}."""
        return {"function_call": dict(delta["tool_calls"][0]["function"])}

    def finish_reason(self, reason: FinishReason) -> str:
        if reason is FinishReason.STOP and self._streamer.calls and not self._streamer.in_call:
            return "function_call" if self._legacy else "tool_calls"
        return reason.value

    def message(self) -> dict[str, Any]:
        calls = [{"id": c["id"], "type": "function", "function": dict(c["function"])} for c in self._streamer.calls]
        out: dict[str, Any] = {"content": "".join(self._content) or (None if calls else "")}
        if self._legacy:
            if calls:
                out["function_call"] = calls[0]["function"]
        elif calls:
            out["tool_calls"] = calls
        if self._reasoning:
            out["reasoning_content"] = "".join(self._reasoning)
        return out
