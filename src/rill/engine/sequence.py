"""One request's state inside the engine thread."""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from rill.engine.detokenize import Detokenizer
from rill.engine.reasoning import ThinkingSplitter
from rill.engine.speculation import Draft
from rill.engine.types import Event, Request, Status, TokenLogprob
from rill.sampling.grammar import Constraint


@dataclass(slots=True)
class Sequence:
    request: Request
    publish: Callable[[list[Event]], None]  # hands events to the request's stream (thread-safe)
    rng: np.random.Generator
    detok: Detokenizer
    index: int = 0  # which of the request's n choices
    forks: list[Sequence] = field(default_factory=list)  # choices 1..n-1, forked after prefill
    seq_id: int = -1
    status: Status = Status.WAITING
    num_cached: int = 0  # tokens of this sequence in the KV cache (= the next token's position)
    num_reused: int = 0  # prompt tokens found in the prefix cache at admission, not prefilled
    num_prefilled: int = 0  # cache positions written by prefill when it completed (see reusable)
    generated: list[int] = field(default_factory=list)
    num_unreported: int = 0  # tokens generated since the last TextDelta
    num_preemptions: int = 0
    outbox: list[Event] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of tokens not reported yet
    utf8: codecs.IncrementalDecoder | None = None  # token texts for logprobs
    prompt_logprobs: list[TokenLogprob] | None = None  # while prompt logprobs are gathered; None once sent
    constraint: Constraint | None = None  # the grammar state, for constrained output
    draft: Draft | None = None  # the request's prediction, as draft tokens
    thinking: ThinkingSplitter | None = None  # a thinking model's reasoning/content split
    forced: list[int] = field(default_factory=list)  # tokens to emit next instead of sampling
    submitted_at: float = field(default_factory=time.monotonic)
    queued_at: float = 0.0  # when the engine thread put it in the waiting line (its clock)
    admitted_at: float = 0.0  # monotonic time of its first admission into the batch

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.request.prompt_tokens)

    @property
    def num_generated(self) -> int:
        return len(self.generated)

    @property
    def num_to_prefill(self) -> int:
        """Tokens to put in the cache before decoding: the prompt, plus, for a sequence preempted
        mid-generation, all it generated but the last token (which the next decode step feeds)."""
        return self.num_prompt_tokens + max(0, self.num_generated - 1)

    def prefill_tokens(self, start: int, stop: int) -> list[int]:
        prompt = self.request.prompt_tokens
        if stop <= len(prompt):
            return list(prompt[start:stop])
        return [*prompt[start:], *self.generated[max(0, start - len(prompt)) : stop - len(prompt)]]

    def cache_tokens(self, stop: int | None = None) -> np.ndarray:
        """The tokens at cache positions 0..stop-1 (default: all it has cached), as int32."""
        stop = self.num_cached if stop is None else stop
        return np.asarray(self.prefill_tokens(0, stop), np.int32)

    def num_reusable(self, exact: bool = False) -> int:
        """Cache positions another prompt may reuse bit for bit. On an `exact` backend (one whose
        logits do not depend on batching: Backend.batch_invariant) all it has cached. Otherwise
        only those written by prefill chunks: llama.cpp with llamafile's kernels computes
        attention for a lone token per sequence (decode) in another order than for several
        (prefill), so the cache of generated tokens differs in the last bits from what
        prefilling the same text writes, and reusing it could change greedy output."""
        if exact or self.status is Status.PREFILLING:
            return self.num_cached
        return min(self.num_cached, self.num_prefilled)

    @property
    def is_done(self) -> bool:
        return self.status in (Status.FINISHED, Status.ABORTED)
