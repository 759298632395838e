"""A thinking model's output split into reasoning and content, however the text is cut."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from rill.engine.reasoning import ThinkingMarks, ThinkingSplitter


def split(pieces: list[str], marks: ThinkingMarks = ThinkingMarks()) -> tuple[str, str]:
    splitter = ThinkingSplitter(marks)
    reasoning = content = ""
    for piece in pieces:
        r, c = splitter.feed(piece)
        reasoning, content = reasoning + r, content + c
    r, c = splitter.finish()
    return reasoning + r, content + c


CASES = [
    ("<think>\nplan it\n</think>\n\nThe answer.", ("\nplan it\n", "The answer.")),
    ("  <think>a</think>b", ("a", "b")),
    ("no section here </think> at all", ("", "no section here </think> at all")),
    ("<think>never closed", ("never closed", "")),
    ("<think>a < b and </thin", ("a < b and </thin", "")),
    ("<thi", ("", "<thi")),  # an unfinished opening marker was text after all
    ("", ("", "")),
    ("<think></think>", ("", "")),
    ("<think>x</think>y <think>z</think>", ("x", "y <think>z</think>")),  # one section only
]


@pytest.mark.parametrize("text, expected", CASES)
def test_whole_text(text, expected):
    assert split([text]) == expected


@pytest.mark.parametrize("text, expected", CASES)
def test_a_character_at_a_time(text, expected):
    assert split(list(text)) == expected


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([t for t, _ in CASES]), st.lists(st.integers(0, 60), max_size=6))
def test_any_cut_gives_the_same_split(text, cuts):
    points = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]
    assert split(pieces) == split([text])


def test_a_prompt_that_opened_the_section_starts_inside():
    assert split(["plan</think>answer"], ThinkingMarks(starts_inside=True)) == ("plan", "answer")


def test_tokens_are_counted_up_to_and_with_the_closing_marker():
    splitter = ThinkingSplitter(ThinkingMarks())
    for piece in ["<", "think", ">", "a", "b", "</", "think", ">", "\n", "x", "y"]:
        splitter.feed(piece)
        splitter.count_token()
    assert splitter.num_tokens == 8  # "<" .. ">" of the closing marker
    plain = ThinkingSplitter(ThinkingMarks())
    for piece in ["  ", "hello", " world"]:
        plain.feed(piece)
        plain.count_token()
    assert plain.num_tokens == 0  # never opened: no reasoning
