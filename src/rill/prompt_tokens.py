"""A rendered prompt -> its tokens, in time linear in its length, and a cheap bound that refuses a
prompt that cannot fit before any of it is tokenized.

llama.cpp looks for control-token text (`<|im_start|>`) by searching the rest of the whole input
for each control token in turn, once per piece of text between those already found: with many
messages that is quadratic (40,000 short messages took 26.6 s to tokenize, 0.41 s without control
tokens parsed). Its tokenizer treats the text between two control tokens as a piece of its own,
so the prompt is tokenized in groups that start at a control token the template wrote, each
short enough to be cheap: the tokens are the same as for the whole prompt in one call. (10,000
messages, 424 KB: 3.3 s in one call, 0.86 s in groups of 4 KB, 0.26 s as plain text; each call
costs ~70 us, so much smaller groups cost more again.)

Work is bounded by the limit it is given: a prompt whose length alone needs more tokens is
refused before any is tokenized, and tokenizing stops at the group that passes the limit.

Control-token text inside a message is never parsed (a user who types `<|im_end|>` must not end
their turn): then the template's parts and the messages' texts are tokenized apart.
"""

from __future__ import annotations

import math
import re
from typing import Callable

from rill.backends.base import Backend

Parts = list[tuple[str, bool]]  # (text, is_message_text), as ChatTemplate.render_parts gives them
GROUP_BYTES = 4096  # a group tokenized in one call ends at the first control token past this many characters


class PromptTokenizer:
    def __init__(self, backend: Backend):
        self._backend = backend
        specials = backend.control_tokens()
        # longest first, as llama.cpp matches them
        self._control = re.compile("|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True))) \
            if specials else None
        # control token id -> its text, for showing it (what each text tokenizes to)
        self._control_text = {ids[0]: t.encode() for t in specials
                              if len(ids := backend.tokenize(t, add_bos=False)) == 1}
        self._longest = max([*(len(t.encode()) for t in specials),
                             *(len(backend.token_bytes(t)) for t in range(backend.info.n_vocab))], default=1)

    def spelling(self, token: int) -> bytes:
        """What a token spells: its bytes, or a control token's text."""
        return self._backend.token_bytes(token) or self._control_text.get(token, b"")

    def min_tokens(self, text: str) -> int:
        """No tokenization of `text` has fewer tokens: each covers at most the longest token's
        bytes. (A vocabulary that lacks some byte values drops them, so text made mostly of
        such characters could beat it; no real prompt is.)"""
        return math.ceil(len(text.encode("utf-8", "surrogatepass")) / max(self._longest, 1))

    def tokenize(self, parts: Parts, *, add_bos: bool, limit: int | None = None,
                 cancelled: Callable[[], bool] = lambda: False) -> list[int]:
        """The parts' tokens, BOS first when add_bos. Control-token text counts only where the
        template wrote it. More than `limit` tokens raise TooLong as soon as that is certain
        (from the length alone when it can be, else after the piece that passed it); `cancelled`
        is asked between pieces, and True stops the work (Cancelled)."""
        prompt = "".join(text for text, _ in parts)
        counter = _Counter(self, limit, cancelled)
        counter.check(prompt, add_bos)
        if self._control is None:  # the backend cannot say which texts are control tokens
            if any(is_message and self._has_control_text(text) for text, is_message in parts):
                return self._by_parts(parts, add_bos, counter)
            return counter.add(self._backend.tokenize(prompt, add_bos=add_bos))
        starts = self._template_controls(prompt, parts)
        if starts is None:
            return self._by_parts(parts, add_bos, counter)
        begin = 0
        for start in [*starts, len(prompt)]:
            if start - begin >= GROUP_BYTES or start == len(prompt):
                group = prompt[begin:start]
                counter.check(group, add_bos and begin == 0)
                counter.add(self._backend.tokenize(group, add_bos=add_bos and begin == 0))
                begin = start
        return counter.tokens

    def _template_controls(self, prompt: str, parts: Parts) -> list[int] | None:
        """Where control-token text starts in the prompt, if the template wrote all of it; None
        when some is inside (or across the edge of) a message's text."""
        assert self._control is not None
        ends, messages = [], []
        pos = 0
        for text, is_message in parts:
            pos += len(text)
            ends.append(pos)
            messages.append(is_message)
        starts: list[int] = []
        i = 0
        for match in self._control.finditer(prompt):
            while ends[i] <= match.start():
                i += 1
            if messages[i] or match.end() > ends[i]:
                return None
            starts.append(match.start())
        return starts

    def _has_control_text(self, text: str) -> bool:
        backend = self._backend
        return backend.tokenize(text, add_bos=False) != backend.tokenize(text, add_bos=False, parse_special=False)

    def _by_parts(self, parts: Parts, add_bos: bool, counter: _Counter) -> list[int]:
        """Message texts as plain text, the template's parts with their control tokens."""
        for i, (text, is_message) in enumerate(parts):
            counter.check(text, add_bos and i == 0)
            counter.add(self._backend.tokenize(text, add_bos=add_bos and i == 0, parse_special=not is_message))
        return counter.tokens


class _Counter:
    """One tokenization's tokens so far, against its limit and its cancellation."""

    def __init__(self, owner: PromptTokenizer, limit: int | None, cancelled: Callable[[], bool]):
        self.tokens: list[int] = []
        self._owner, self._limit, self._cancelled = owner, limit, cancelled

    def check(self, text: str, add_bos: bool) -> None:
        """Before tokenizing text: stop if nobody waits, or if it cannot fit."""
        if self._cancelled():
            raise Cancelled
        if self._limit is not None:
            at_least = len(self.tokens) + self._owner.min_tokens(text) + add_bos
            if at_least > self._limit:
                raise TooLong(at_least)

    def add(self, tokens: list[int]) -> list[int]:
        self.tokens += tokens
        if self._limit is not None and len(self.tokens) > self._limit:
            raise TooLong(len(self.tokens))
        return self.tokens


class TooLong(Exception):
    """The prompt has more tokens than the limit: at least `at_least`."""

    def __init__(self, at_least: int):
        super().__init__(f"at least {at_least} tokens")
        self.at_least = at_least


class Cancelled(Exception):
    """The work was stopped: nobody waits for its result any more."""
