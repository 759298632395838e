"""The legacy `logprobs` object of a choice: parallel lists `tokens`, `token_logprobs`,
`top_logprobs` (one dict per token: token string -> logprob) and `text_offset`.

A token's string is its own text, a control token's its name, and a token that is not whole
UTF-8 (a piece of a multi-byte character) `bytes:` and its bytes escaped (`bytes:\\xe2\\x80`), as
OpenAI writes them; so the tokens join to the choice's `text` except where a character is split
across tokens, and the sampled token's string is its key in `top_logprobs` (clients compare the
two to tell a greedy token). `text_offset[i]` is where the text token i adds starts in the
choice's `text`, in characters (after the prompt when `echo` prepends it; a character split
across tokens starts where its first token does). `top_logprobs[i]` holds the `logprobs`
likeliest tokens, best first, and always the sampled token too, so it has up to `logprobs` + 1
entries, as OpenAI documents; where two tokens have the same string the likelier one is kept.
The numbers are the model's own distribution (before penalties, bias, temperature and top-p),
as for chat completions."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from rill.engine.types import TokenLogprob

KEYS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


def token_string(data: bytes) -> str:
    """A token's bytes as the legacy API names the token."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in data)


def empty() -> dict[str, list[Any]]:
    return {key: [] for key in KEYS}


class LegacyLogprobs:
    """One choice's logprobs as its text grows: `add` gives the object for the next piece of text
    (a stream chunk's), `whole` all of them (the non-streamed choice's)."""

    def __init__(self, top: int, key: Callable[[int], str], offset: int = 0):
        self._top = top
        self._key = key  # a token id -> its string (token_string of its bytes)
        self.offset = offset  # where the next token's text starts in the choice's text
        self._all = empty()

    def add(self, entries: Sequence[TokenLogprob]) -> dict[str, list[Any]]:
        out = empty()
        for entry in entries:
            top: dict[str, float] = {}
            for token, logprob in entry.top[: self._top]:
                top.setdefault(self._key(token), logprob)
            name = self._key(entry.token)
            top.setdefault(name, entry.logprob)
            out["tokens"].append(name)
            out["token_logprobs"].append(entry.logprob)
            out["top_logprobs"].append(top)
            out["text_offset"].append(self.offset)
            self.offset += len(entry.text)
        for key in KEYS:
            self._all[key].extend(out[key])
        return out

    def add_prompt(self, entries: Sequence[TokenLogprob]) -> dict[str, list[Any]]:
        """The echoed prompt's tokens (`echo` with `logprobs`): the first has no logprob, so its
        `token_logprobs` and `top_logprobs` entries are null, as OpenAI gives them."""
        if not entries:
            return empty()
        first = entries[0]
        out: dict[str, list[Any]] = {"tokens": [self._key(first.token)], "token_logprobs": [None],
                                     "top_logprobs": [None], "text_offset": [self.offset]}
        self.offset += len(first.text)
        for key in KEYS:
            self._all[key].extend(out[key])
        rest = self.add(entries[1:])
        return {key: out[key] + rest[key] for key in KEYS}

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
