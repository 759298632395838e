"""The core's events -> Chat Completions' deltas and finish reasons (its messages: core/output.py's
chat_message, what spans record for every protocol). With the
deprecated `functions` (legacy), one call streams as `delta.function_call`."""

from __future__ import annotations

from typing import Any

from rill.api.core.events import CallInput, CallStart, OutEvent, ReasoningOut, TextOut
from rill.api.core.output import ChoiceOutput, chat_finish_reason
from rill.engine.types import Finished, TokenLogprob

Delta = dict[str, Any]
Piece = tuple[Delta, tuple[TokenLogprob, ...]]  # a chunk's delta and the logprobs it carries


def piece(event: OutEvent, legacy: bool = False) -> Piece | None:
    """A chunk's delta for one event; None for events Chat Completions does not send (CallEnd)."""
    if isinstance(event, TextOut):
        return {"content": event.text}, event.logprobs
    if isinstance(event, ReasoningOut):
        return {"reasoning_content": event.text}, ()
    if isinstance(event, CallStart):
        if legacy:
            return {"function_call": {"name": event.name, "arguments": ""}}, ()
        return {"tool_calls": [{"index": event.call, "id": event.id, "type": "function",
                                "function": {"name": event.name, "arguments": ""}}]}, ()
    if isinstance(event, CallInput):
        if legacy:
            return {"function_call": {"arguments": event.text}}, ()
        return {"tool_calls": [{"index": event.call, "function": {"arguments": event.text}}]}, ()
    return None


def pieces(events: list[OutEvent], legacy: bool = False) -> list[Piece]:
    return [p for p in (piece(e, legacy) for e in events) if p is not None]


def choice_finish_reason(output: ChoiceOutput, event: Finished, legacy: bool = False) -> str:
    return chat_finish_reason(output.finish_reason(event), legacy)
