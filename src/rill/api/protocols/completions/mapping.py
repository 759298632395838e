"""The legacy completions request -> what the adapter does itself (Options: choices, best_of,
logprobs, echo, streaming) and one protocol-neutral GenerationRequest per prompt. Fields that
contradict each other, or ask for what Rill cannot do, are a 400 here, before any work."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from rill.api.core.request import GenerationRequest
from rill.api.protocols.completions.prompts import ReadyPrompt
from rill.api.protocols.completions.schemas import CompletionRequest
from rill.errors import InvalidRequest

log = logging.getLogger("rill.api")

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for legacy completions

@dataclass(frozen=True, slots=True)
class Options:
    """What the adapter does around the engine for every prompt of the request."""

    n: int  # choices returned per prompt
    best_of: int  # choices generated per prompt (the best n by mean token logprob are returned)
    logprobs: int | None  # None: no logprobs; k: each token's and the k likeliest
    echo: bool
    stream: bool
    include_usage: bool
    max_tokens: int

    @property
    def ranks(self) -> bool:
        """Whether choices are generated to be ranked (best_of > n)."""
        return self.best_of > self.n

    @property
    def scores_prompt(self) -> bool:
        """`echo` with `logprobs`: the echoed prompt's tokens carry logprobs too (the first null)."""
        return self.echo and self.logprobs is not None


@functools.lru_cache(maxsize=256)
def _note_unknown_field(name: str) -> None:
    log.debug("ignoring unknown completions field %r (logged once)", name)


def options(body: CompletionRequest) -> Options:
    """The request's own rules, whichever model serves it."""
    for name in body.model_extra or {}:
        _note_unknown_field(name)
    n = body.n or 1
    best_of = n if body.best_of is None else body.best_of
    if best_of < n:
        raise InvalidRequest(f"`best_of` ({best_of}) must be at least `n` ({n}): it is how many completions "
                             "are generated to return the best `n` of.", param="best_of")
    if body.stream and best_of > n:
        raise InvalidRequest("`best_of` greater than `n` cannot be streamed: the best completions are known "
                             "only once all have finished.", param="best_of")
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest("`stream_options` is only allowed with `stream: true`.", param="stream_options")
    return Options(n=n, best_of=best_of, logprobs=body.logprobs, echo=bool(body.echo), stream=bool(body.stream),
                   include_usage=bool(body.stream_options and body.stream_options.include_usage),
                   max_tokens=DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens)


def engine_logprobs(opts: Options) -> int | None:
    """The top_logprobs to ask of the engine: the client's, or 0 to rank best_of's choices."""
    if opts.logprobs is not None:
        return opts.logprobs
    return 0 if opts.ranks else None


def generation_request(body: CompletionRequest, opts: Options, prompt: ReadyPrompt) -> GenerationRequest:
    """One prompt's request to the core: the raw tokens, no template, `best_of` choices."""
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return GenerationRequest(
        model=body.model,
        prompt_tokens=prompt.tokens,
        temperature=body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        frequency_penalty=body.frequency_penalty or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        logit_bias=body.logit_bias or None,
        stop=stop,
        max_tokens=opts.max_tokens,
        max_tokens_where="max_tokens",
        messages_where=prompt.where,
        n=opts.best_of,
        top_logprobs=engine_logprobs(opts),
        prompt_logprobs=opts.logprobs if opts.scores_prompt else None,
        stream=opts.stream,
    )
