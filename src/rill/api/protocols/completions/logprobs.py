"""The legacy `logprobs` object of a choice: parallel lists `tokens`, `token_logprobs`,
`top_logprobs` (one dict per token: token text -> logprob) and `text_offset`.

`tokens[i]` is the text token i adds to the choice's `text`, so the tokens join to the text (a
token that ends inside a multi-byte character adds "", and the character goes with the token
that completes it). `text_offset[i]` is where that text starts in the choice's `text`, in
characters (after the prompt when `echo` prepends it). `top_logprobs[i]` holds the `logprobs`
likeliest tokens, best first, keyed by their own text (a control token by its name), and always
the sampled token too, so it has up to `logprobs` + 1 entries, as OpenAI documents; where two
tokens have the same text the likelier one is kept. The numbers are the model's own distribution
(before penalties, bias, temperature and top-p), as for chat completions."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from rill.engine.types import TokenLogprob

KEYS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


def empty() -> dict[str, list[Any]]:
    return {key: [] for key in KEYS}


class LegacyLogprobs:
    """One choice's logprobs as its text grows: `add` gives the object for the next piece of text
    (a stream chunk's), `whole` all of them (the non-streamed choice's)."""

    def __init__(self, top: int, key: Callable[[int], str], offset: int = 0):
        self._top = top
        self._key = key  # a token id -> its text as a key of top_logprobs
        self.offset = offset  # where the next token's text starts in the choice's text
        self._all = empty()

    def add(self, entries: Sequence[TokenLogprob]) -> dict[str, list[Any]]:
        out = empty()
        for entry in entries:
            top: dict[str, float] = {}
            for token, logprob in entry.top[: self._top]:
                top.setdefault(self._key(token), logprob)
            top.setdefault(self._key(entry.token), entry.logprob)
            out["tokens"].append(entry.text)
            out["token_logprobs"].append(entry.logprob)
            out["top_logprobs"].append(top)
            out["text_offset"].append(self.offset)
            self.offset += len(entry.text)
        for key in KEYS:
            self._all[key].extend(out[key])
        return out

    def skip(self, text: str) -> None:
        """Text without logprobs (the echoed prompt) moves the offsets on."""
        self.offset += len(text)

    def whole(self) -> dict[str, list[Any]]:
        return self._all


def mean_logprob(entries: Sequence[TokenLogprob]) -> float:
    """A choice's mean token logprob, how `best_of` ranks choices; a choice without tokens (its
    first token ended the text) ranks last."""
    if not entries:
        return float("-inf")
    return sum(e.logprob for e in entries) / len(entries)
