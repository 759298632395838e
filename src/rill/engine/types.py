"""What goes into the engine and what comes out of it; no behaviour."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from rill.engine.reasoning import ThinkingMarks
from rill.sampling.grammar import Grammar


class FinishReason(enum.StrEnum):
    STOP = "stop"
    LENGTH = "length"


class Status(enum.Enum):
    WAITING = "waiting"
    PREFILLING = "prefilling"
    DECODING = "decoding"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # only the k most likely tokens (0: all); Messages' top_k
    seed: int | None = None  # None: a fresh random seed per request
    frequency_penalty: float = 0.0  # minus this per time a token was generated (OpenAI's formula)
    presence_penalty: float = 0.0  # minus this once a token was generated at all
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit)


@dataclass(frozen=True, slots=True)
class Request:
    id: str
    prompt_tokens: tuple[int, ...]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    priority: int = 1  # admission order: lower first (0 priority, 1 default, 2 flex); FIFO within
    n: int = 1  # choices, decoded in parallel from one prefill of the prompt
    top_logprobs: int | None = None  # None: no logprobs; k: each token's logprob and the k best
    grammar: Grammar | None = None  # a compiled grammar the output must follow (response_format, tools)
    stops_until: str | None = None  # stop strings are not looked for from this marker on (tool calls)
    prediction: tuple[int, ...] = ()  # the predicted output's tokens: draft tokens (speculation.py)
    thinking: ThinkingMarks | None = None  # a thinking model: its reasoning is split off (reasoning.py)
    # k: each prompt token's logprob (from the second on) and its k best, as one PromptLogprobs
    # event before any text; the whole prompt is computed (no prefix reuse). None: not asked
    prompt_logprobs: int | None = None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token under the model's own distribution (log-softmax of the raw logits,
    before penalties, bias, temperature and top-p). `text` is what the token adds to the content
    ("" for a token ending inside a UTF-8 character; the character goes with its last byte)."""

    token: int
    text: str
    logprob: float
    top: tuple[tuple[int, float], ...]  # the most likely tokens, best first


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New text for the client; `num_tokens` tokens were generated since the previous delta."""

    text: str
    num_tokens: int
    index: int = 0  # the choice
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens of this text, when the request asked
    reasoning: str = ""  # a thinking model's reasoning, generated before `text`


@dataclass(frozen=True, slots=True)
class PromptLogprobs:
    """The prompt's tokens under the model (Request.prompt_logprobs), one entry per token: each
    given the tokens before it, but the first, which has no logprob (0.0 and no alternatives
    stand in). Sent once, before any text."""

    entries: tuple[TokenLogprob, ...]
    index: int = 0


@dataclass(frozen=True, slots=True)
class Finished:
    reason: FinishReason
    num_prompt_tokens: int
    num_completion_tokens: int
    index: int = 0  # the choice that finished (a request ends when all of its n choices have)
    num_cached_prompt_tokens: int = 0  # prompt tokens taken from the prefix cache
    queue_seconds: float = 0.0  # from submission to admission into the batch
    num_accepted_prediction_tokens: int = 0  # predicted tokens verified and kept in the output
    num_rejected_prediction_tokens: int = 0  # predicted tokens verified and not kept
    num_reasoning_tokens: int = 0  # completion tokens of the thinking section (markers included)
    stop_sequence: str | None = None  # the request's stop string that ended the text, if one did


@dataclass(frozen=True, slots=True)
class Failed:
    message: str
    shutting_down: bool = False  # the server is stopping: the client may retry elsewhere/later
    unavailable: bool = False  # the engine stalled or died (docs/faults.md): 503, retry elsewhere/later


Event = TextDelta | PromptLogprobs | Finished | Failed
