"""The next token of a sequence from its row of logits: sampled (penalties, bias, grammar mask,
temperature, top-p, the sequence's RNG; logprobs when asked), or written by Rill itself (the
closing marker of a thinking section whose budget is spent)."""

from __future__ import annotations

import codecs

import numpy as np

from rill.backends.base import Backend
from rill.engine.sequence import Sequence
from rill.engine.types import TokenLogprob
from rill.sampling.sampler import adjust_logits, sample, token_logprobs


class TokenPicker:
    def __init__(self, backend: Backend):
        self.backend = backend

    def next_token(self, seq: Sequence, row: np.ndarray) -> int:
        """The sampled token, unless Rill must write the next ones itself: the closing marker of
        a thinking section whose budget (`reasoning_effort`) is spent."""
        thinking = seq.thinking
        if thinking is not None and not seq.forced and thinking.must_close():
            thinking.closing = True
            seq.forced = self.backend.tokenize(f"\n{thinking.marks.close}\n\n", add_bos=False)
        if seq.forced:
            return seq.forced.pop(0)
        return self.sample(seq, row)

    def sample(self, seq: Sequence, row: np.ndarray) -> int:
        params = seq.request.sampling
        adjusted = adjust_logits(row, seq.generated, frequency_penalty=params.frequency_penalty,
                                 presence_penalty=params.presence_penalty, logit_bias=params.logit_bias)
        if seq.constraint is not None:
            adjusted = seq.constraint.mask(adjusted)
        token = sample(adjusted, params.temperature, params.top_p, seq.rng, params.top_k)
        if seq.constraint is not None:
            seq.constraint.advance(token)
        k = seq.request.top_logprobs
        if k is not None and not self.backend.is_end_of_generation(token):
            if seq.utf8 is None:
                seq.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
            logprob, top = token_logprobs(row, token, k)
            text = seq.utf8.decode(self.backend.token_bytes(token))
            seq.logprobs.append(TokenLogprob(token, text, logprob, top))
        return token
