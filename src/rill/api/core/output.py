"""One choice's generated text -> the core's events (core/events.py) and, at the end, its message.

`ChoiceOutput` passes text through. `ToolCallOutput` (a request that offers tools) splits it into
text and calls with `ToolCallStreamer`, gives each text event the logprobs of exactly its tokens,
and names the finish `tool_calls` when the turn ended with complete calls. Streamed and
collected answers use the same objects, so an answer is the concatenation of its events.
"""

from __future__ import annotations

import collections
from typing import Any, Callable

from rill.api.core.events import CallEnd, CallInput, CallStart, FinishReason, OutEvent, ReasoningOut, TextOut
from rill.api.core.tool_calls import Delta, ToolCallStreamer, new_call_id
from rill.engine.types import Finished, TokenLogprob
from rill.engine.types import FinishReason as EngineReason


class ChoiceOutput:
    def __init__(self, index: int = 0) -> None:
        self.index = index
        self._content: list[str] = []
        self._reasoning: list[str] = []

    def reason(self, text: str) -> list[OutEvent]:
        """A thinking model's reasoning (never content; no logprobs)."""
        self._reasoning.append(text)
        return [ReasoningOut(self.index, text)]

    def feed(self, text: str, logprobs: tuple[TokenLogprob, ...] = ()) -> list[OutEvent]:
        self._content.append(text)
        return [TextOut(self.index, text, logprobs)]

    def finish(self) -> list[OutEvent]:
        return []

    def finish_reason(self, event: Finished) -> FinishReason:
        if event.reason is EngineReason.LENGTH:
            return "length"
        return "stop_sequence" if event.stop_sequence is not None else "stop"

    @property
    def text(self) -> str:
        return "".join(self._content)

    @property
    def reasoning(self) -> str:
        return "".join(self._reasoning)

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The turn's calls: {id, name, arguments, custom}."""
        return []

    def message(self) -> dict[str, Any]:
        """The answer as a Chat Completions message's `content`, `tool_calls` (and a thinking
        model's `reasoning_content`): what spans record, whichever protocol served it."""
        reasoning = {"reasoning_content": self.reasoning} if self._reasoning else {}
        return {"content": self.text, **reasoning}


class ToolCallOutput(ChoiceOutput):
    def __init__(self, index: int = 0, *, make_id: Callable[[], str] = new_call_id):
        super().__init__(index)
        self._streamer = ToolCallStreamer(make_id)
        self._tokens: collections.deque[tuple[int, TokenLogprob]] = collections.deque()  # (offset, entry)
        self._num_token_chars = 0
        self._num_ended = 0  # calls whose CallEnd was sent

    def feed(self, text: str, logprobs: tuple[TokenLogprob, ...] = ()) -> list[OutEvent]:
        for entry in logprobs:
            self._tokens.append((self._num_token_chars, entry))
            self._num_token_chars += len(entry.text)
        return self._events(self._streamer.feed(text))

    def finish(self) -> list[OutEvent]:
        return self._events(self._streamer.finish(), final=True)

    def _events(self, deltas: list[tuple[Delta, int]], final: bool = False) -> list[OutEvent]:
        out: list[OutEvent] = []
        for delta, end in deltas:
            if "content" in delta:
                out.append(self._text(delta["content"], end))
                continue
            fragment = delta["tool_calls"][0]
            self._end_calls(out, fragment["index"])  # a new call closes the one before
            if "id" in fragment:
                call = self._streamer.calls[fragment["index"]]
                out.append(CallStart(self.index, fragment["index"], fragment["id"], fragment["function"]["name"],
                                     custom=bool(call.get("custom"))))
            if fragment["function"].get("arguments"):
                out.append(CallInput(self.index, fragment["index"], fragment["function"]["arguments"]))
        # a call is whole once the markup after it is read; one cut short by the end is not
        self._end_calls(out, len(self._streamer.calls) - (1 if self._streamer.in_call else 0))
        return out

    def _end_calls(self, out: list[OutEvent], upto: int) -> None:
        calls = self._streamer.calls
        while self._num_ended < min(upto, len(calls)):
            call = calls[self._num_ended]
            out.append(CallEnd(self.index, self._num_ended, call["function"]["arguments"]))
            self._num_ended += 1

    def _text(self, text: str, end: int) -> TextOut:
        self._content.append(text)
        # a token goes with the text that completes it; tokens wholly before this text's start
        # were markup and carry no text
        start = end - len(text)
        while self._tokens and self._tokens[0][0] < start and self._token_end(0) <= start:
            self._tokens.popleft()
        mine = []
        while self._tokens and self._token_end(0) <= end:
            mine.append(self._tokens.popleft()[1])
        return TextOut(self.index, text, tuple(mine))

    def _token_end(self, i: int) -> int:
        start, entry = self._tokens[i]
        return start + len(entry.text)

    def finish_reason(self, event: Finished) -> FinishReason:
        if event.reason is EngineReason.STOP and self._streamer.calls and not self._streamer.in_call:
            return "tool_calls"
        return super().finish_reason(event)

    @property
    def calls(self) -> list[dict[str, Any]]:
        return [{"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"],
                 "custom": bool(c.get("custom"))} for c in self._streamer.calls]

    def message(self) -> dict[str, Any]:
        calls = [{"id": c["id"], "type": "function", "function": dict(c["function"])} for c in self._streamer.calls]
        out: dict[str, Any] = {"content": self.text or (None if calls else "")}
        if calls:
            out["tool_calls"] = calls
        if self._reasoning:
            out["reasoning_content"] = self.reasoning
        return out


# Spans record every answer as a Chat Completions message, whichever protocol served it.

def chat_message(output: ChoiceOutput, legacy: bool = False) -> dict[str, Any]:
    """A choice's message fields; `legacy` (the deprecated `functions`): its call as `function_call`."""
    out = output.message()
    if legacy and out.get("tool_calls"):
        out["function_call"] = out.pop("tool_calls")[0]["function"]
    return out


def chat_finish_reason(reason: FinishReason, legacy: bool = False) -> str:
    if reason == "stop_sequence":
        return "stop"
    return "function_call" if legacy and reason == "tool_calls" else reason
