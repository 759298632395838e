"""A tool turn ends at a call that repeats an earlier one: the grammar's constraint says it is
done there (sampling/repeated_calls.py), and the streamer holds a possible repeat back and drops
it (api/core/tool_calls.py), so a client never sees it. On the fake vocabulary (a token a byte)."""

from __future__ import annotations

import itertools

import pytest

from rill.api.core.tool_calls import ToolCallStreamer
from rill.backends.fake import FakeBackend
from rill.sampling.grammar import Grammars
from rill.sampling.repeated_calls import RepeatedCalls
from rill.sampling.tool_format import CLOSE, EMPTY_PARAMETERS, OPEN, SEPARATOR, ToolSpec, call_text, grammar

TOOLS = [ToolSpec("f", None, {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"],
                              "additionalProperties": False}),
         ToolSpec("g", "does g", EMPTY_PARAMETERS)]
F1, F2, G = call_text("f", {"x": 1}), call_text("f", {"x": 12}), call_text("g", {})


def turn(*calls: str) -> str:
    return SEPARATOR.join(calls)


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
def test_the_watcher_flags_the_first_repeat_however_the_text_is_split(size):
    text = turn(F1, G, F2, F1).encode()
    watcher = RepeatedCalls(OPEN, CLOSE)
    flagged_at = None
    for i in range(0, len(text), size):
        watcher.observe(text[i : i + size])
        if watcher.repeated and flagged_at is None:
            flagged_at = min(i + size, len(text))
    assert flagged_at == len(text)  # not before the repeat's closing tag, and then
    fresh = RepeatedCalls(OPEN, CLOSE)
    fresh.observe(turn(F1, G, F2).encode())
    assert not fresh.repeated  # f again, with other arguments, is a new call


def test_a_custom_tools_input_may_come_twice():
    watcher = RepeatedCalls(OPEN, CLOSE)
    custom = f"{OPEN}apply_patch\n*** same patch{CLOSE}"
    watcher.observe(turn(custom, custom).encode())
    assert not watcher.repeated


def test_the_tool_grammars_constraint_is_done_at_a_repeat_and_only_with_parallel_calls():
    grammars = Grammars(FakeBackend().guidance_tokenizer(), 258)
    source = grammar(TOOLS, "required", parallel=True)
    guarded = grammars.lark(source, call_marks=(OPEN, CLOSE)).constraint()
    plain = grammars.lark(source).constraint()
    done_at = []
    for i, byte in enumerate(turn(F1, G, F1).encode()):
        for constraint in (guarded, plain):
            constraint.advance(byte)
        if guarded.done and not done_at:
            done_at.append(i + 1)
    assert done_at == [len(turn(F1, G, F1).encode())]
    assert not plain.done  # the grammar alone allows more calls


def stream(text: str, size: int):
    ids = (f"call_{i}" for i in itertools.count())
    streamer = ToolCallStreamer(make_id=lambda: next(ids))
    deltas = [d for i in range(0, len(text), size) for d, _ in streamer.feed(text[i : i + size])]
    deltas += [d for d, _ in streamer.finish()]
    return deltas, streamer


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_a_repeated_call_is_never_streamed_and_a_call_that_differs_late_streams_whole(size):
    deltas, streamer = stream(turn(F1, G, F2, F1), size)
    assert streamer.repeated and not streamer.in_call
    calls = [(c["function"]["name"], c["function"]["arguments"]) for c in streamer.calls]
    assert calls == [("f", '{"x":1}'), ("g", "{}"), ("f", '{"x":12}')]
    fragments = [f for d in deltas for f in d.get("tool_calls", [])]
    assert max(f["index"] for f in fragments) == 2  # nothing of a fourth call
    starts = [f for f in fragments if "id" in f]
    assert [(f["index"], f["function"]["name"]) for f in starts] == [(0, "f"), (1, "g"), (2, "f")]
    third = "".join(f["function"]["arguments"] for f in fragments if f["index"] == 2)
    assert third == '{"x":12}'  # held while it read as {"x":1, then announced with all it had


def test_a_held_call_cut_short_by_the_end_is_passed_on():
    text = turn(F1, G, F1)[: -len('}' + CLOSE) - 2]  # the third call stops inside its arguments
    deltas, streamer = stream(text, 4)
    assert not streamer.repeated and streamer.in_call
    cut = text.rsplit(',"arguments":', 1)[1]
    assert cut and '{"x":1}'.startswith(cut)  # it was held: it still read as the first call
    assert [c["function"]["arguments"] for c in streamer.calls] == ['{"x":1}', "{}", cut]
