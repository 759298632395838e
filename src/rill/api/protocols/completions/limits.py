"""How much of the engine one legacy completions request may hold.

A prompt's choices (`best_of` of them, else `n`) are decoded together from one prefill, so they
must fit in the engine's batch at once, as chat's `n` must: at most the server's `max_n` and
`--parallel`. A list of prompts runs as one engine request per prompt, at most `window` of them
at a time (together within the same bound); the next starts as soon as one ends. A batch of
prompts thus never holds more of the engine than one request with the largest `n` could, and
waits its turn in the queue like any other request."""

from __future__ import annotations

from rill.api.protocols.completions.mapping import Options
from rill.errors import InvalidRequest
from rill.router import LocalModel


def choice_limit(model: LocalModel, max_n: int) -> int:
    return min(max_n, model.engine.max_sequences)


def check_choices(opts: Options, model: LocalModel, max_n: int) -> None:
    limit = choice_limit(model, max_n)
    if opts.best_of > limit:
        param = "best_of" if opts.ranks else "n"
        raise InvalidRequest(f"`{param}` must be at most {limit} on this server (the configured maximum is "
                             f"{max_n}; --parallel is {model.engine.max_sequences}): a prompt's choices are "
                             "decoded together.", param=param)


def window(opts: Options, model: LocalModel, max_n: int) -> int:
    """How many of the request's prompts run at once."""
    return max(1, choice_limit(model, max_n) // opts.best_of)
