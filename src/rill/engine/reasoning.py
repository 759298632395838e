"""A thinking model's output split into reasoning and content: the text between `<think>` and
`</think>` streams as `reasoning_content`, never as `content`.

The split works on text as it is generated, in pieces cut anywhere (a marker may arrive a
character at a time): a piece that could still be the start of a marker is held back until it
is known. The markers themselves go to neither side, nor does the whitespace between the
closing marker and the answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from rill.engine.detokenize import held_prefix

OPEN, CLOSE = "<think>", "</think>"


@dataclass(frozen=True, slots=True)
class ThinkingMarks:
    """How a model marks its thinking section, and whether its prompt already opened it (a
    template that ends the generation prompt with `<think>`)."""

    open: str = OPEN
    close: str = CLOSE
    starts_inside: bool = False
    budget: int | None = None  # reasoning tokens allowed before Rill closes the section itself


class _State(enum.Enum):
    BEFORE = "before"  # nothing but whitespace yet: the answer may open a thinking section
    INSIDE = "inside"  # in the thinking section
    AFTER = "after"  # just closed it: whitespace before the answer is dropped
    CONTENT = "content"  # the answer


class ThinkingSplitter:
    def __init__(self, marks: ThinkingMarks):
        self.marks = marks
        self._state = _State.INSIDE if marks.starts_inside else _State.BEFORE
        self._held = ""
        self.closed = False  # the thinking section has ended (or never opened)
        self.num_tokens = 0  # tokens of the thinking section, markers included (count_token)
        self._pending = 0  # tokens while it is not yet known whether a section opens
        self._closed_now = False
        self.closing = False  # Rill is feeding the closing marker (the budget ran out)

    def must_close(self) -> bool:
        """The section is open, its budget is spent, and its closing is not under way yet."""
        budget = self.marks.budget
        return (budget is not None and not self.closing and self._state is _State.INSIDE
                and self.num_tokens + self._pending >= budget)

    @property
    def in_reasoning(self) -> bool:
        """Whether text fed now would be reasoning (or may be: a section may still open)."""
        return self._state in (_State.BEFORE, _State.INSIDE)

    def count_token(self) -> None:
        """One generated token's text was fed: count it if it belongs to the thinking section
        (text held back by the detokenizer is counted with the token that releases it)."""
        if self._state is _State.BEFORE:
            self._pending += 1
        elif self._state is _State.INSIDE or self._closed_now:
            self.num_tokens += self._pending + 1
            self._pending = 0
        else:
            self._pending = 0
        self._closed_now = False

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, content) of the next piece of generated text."""
        text = self._held + text
        self._held = ""
        reasoning = content = ""
        while text:
            state = self._state
            if state is _State.BEFORE:
                stripped = text.lstrip()
                if stripped.startswith(self.marks.open):
                    self._state, text = _State.INSIDE, stripped[len(self.marks.open):]
                elif not stripped or self.marks.open.startswith(stripped):
                    self._held = text  # whitespace, or the marker so far
                    return reasoning, content
                else:
                    self._state, self.closed = _State.CONTENT, True
            elif state is _State.INSIDE:
                at = text.find(self.marks.close)
                if at >= 0:
                    reasoning += text[:at]
                    self._state, self.closed, text = _State.AFTER, True, text[at + len(self.marks.close):]
                    self._closed_now = True
                    continue
                keep = held_prefix(text, self.marks.close)
                reasoning += text[: len(text) - keep]
                self._held = text[len(text) - keep:]
                return reasoning, content
            elif state is _State.AFTER:
                text = text.lstrip()
                if text:
                    self._state = _State.CONTENT
            else:
                content += text
                text = ""
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        """What is held back when generation ends: an unfinished marker is text after all."""
        held, self._held = self._held, ""
        if self._state is _State.INSIDE:
            return held, ""
        if self._state is _State.BEFORE:
            return "", held.strip() and held
        return "", ""
