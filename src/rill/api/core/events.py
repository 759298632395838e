"""What the core yields while a request runs, the same for every protocol: per choice, text and
reasoning deltas, tool calls opening, growing and closing, then a Finish with usage; or one
Failure. Each protocol's adapter turns these, and nothing else, into its wire events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rill.engine.types import TokenLogprob
from rill.errors import RillError


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens read from the prefix cache
    reasoning_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


@dataclass(frozen=True, slots=True)
class TextOut:
    index: int  # the choice
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # exactly this text's tokens, when asked for


@dataclass(frozen=True, slots=True)
class ReasoningOut:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class PromptOut:
    """The prompt's tokens with their logprobs (GenerationRequest.prompt_logprobs), once, before
    any text: entries[0] is the first token, which has no logprob (0.0 stands in)."""

    entries: tuple[TokenLogprob, ...]


@dataclass(frozen=True, slots=True)
class CallStart:
    index: int
    call: int  # the call's position in the choice's turn, from 0
    id: str
    name: str
    custom: bool = False  # a freeform tool's call: its input is text, not JSON


@dataclass(frozen=True, slots=True)
class CallInput:
    """The next piece of a call's arguments (JSON text) or custom input; the pieces concatenate."""

    index: int
    call: int
    text: str


@dataclass(frozen=True, slots=True)
class CallEnd:
    index: int
    call: int
    arguments: str  # the whole arguments (or input)


# stop: the model ended its turn; stop_sequence: a stop string ended it; length: the token cap;
# tool_calls: the turn ended with complete calls
FinishReason = Literal["stop", "stop_sequence", "length", "tool_calls"]


@dataclass(frozen=True, slots=True)
class Finish:
    index: int
    reason: FinishReason
    usage: Usage  # this choice's completion tokens; the prompt's, counted once per request
    stop_sequence: str | None = None
    queue_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Failure:
    """The request failed after it started; `error` has the status and message to report."""

    error: RillError


OutEvent = TextOut | ReasoningOut | CallStart | CallInput | CallEnd | PromptOut


def total_usage(finishes: list[Finish]) -> Usage:
    """A request's usage: the prompt once, the choices' completions summed."""
    first = finishes[0].usage
    return Usage(first.prompt_tokens, sum(f.usage.completion_tokens for f in finishes), first.cached_tokens,
                 sum(f.usage.reasoning_tokens for f in finishes),
                 sum(f.usage.accepted_prediction_tokens for f in finishes),
                 sum(f.usage.rejected_prediction_tokens for f in finishes))
