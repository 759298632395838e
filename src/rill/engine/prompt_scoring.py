"""A prompt's own logprobs (Request.prompt_logprobs: legacy completions' `echo` with `logprobs`):
the rows of logits a prefill chunk returns for every one of its tokens, read as the probability
of each next prompt token. The engine computes such a prompt whole (no prefix reuse, no mapped
blocks: reused cells have no logits) and sends the entries once, as PromptLogprobs."""

from __future__ import annotations

import codecs
from typing import Callable

import numpy as np

from rill.backends.base import BatchItem
from rill.engine.sequence import Sequence
from rill.engine.types import TokenLogprob
from rill.sampling.sampler import token_logprobs


def score_prompt(seq: Sequence, item: BatchItem, rows: np.ndarray, token_bytes: Callable[[int], bytes]) -> None:
    """The logprobs of the prompt tokens this prefill chunk's rows predict: row i (position
    start + i) gives the token at start + i + 1, while that is still the prompt's. The first
    token comes first, with no logprob of its own (0.0 and no alternatives stand in)."""
    assert seq.prompt_logprobs is not None
    prompt = seq.request.prompt_tokens
    k = seq.request.prompt_logprobs or 0
    if seq.utf8 is None:
        seq.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    if item.start == 0:
        seq.prompt_logprobs.append(TokenLogprob(prompt[0], seq.utf8.decode(token_bytes(prompt[0])), 0.0, ()))
    for i in range(len(rows)):
        position = item.start + i + 1
        if position >= len(prompt):
            break
        token = prompt[position]
        logprob, top = token_logprobs(rows[i], token, k)
        seq.prompt_logprobs.append(TokenLogprob(token, seq.utf8.decode(token_bytes(token)), logprob, top))


def restart_scoring(seq: Sequence) -> None:
    """A sequence preempted before its entries were sent recomputes its prompt from the start."""
    assert seq.prompt_logprobs is not None
    seq.prompt_logprobs.clear()
    seq.utf8 = None
