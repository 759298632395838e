"""The tool-call delta builder: for any split of the model's output into pieces, the deltas give
the same content and the same calls, with id/type/name only in each call's first fragment; the
per-choice output gives content deltas the logprobs of exactly their tokens."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rill.api.core.events import CallEnd, CallInput, CallStart, TextOut
from rill.api.core.output import ToolCallOutput, chat_message
from rill.api.core.tool_calls import ToolCallStreamer
from rill.api.protocols.chat import deltas
from rill.engine.types import Finished, FinishReason, TokenLogprob
from rill.sampling.tool_format import OPEN, SEPARATOR, call_text

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
# no call repeats an earlier one: a repeat ends the turn and is dropped (test_repeated_calls.py)
_calls = st.lists(st.tuples(st.from_regex(r"[a-zA-Z0-9_-]{1,12}", fullmatch=True),
                            st.dictionaries(st.text(max_size=8), _json, max_size=4)), max_size=3,
                  unique_by=lambda call: json.dumps(call, separators=(",", ":")))
_text = st.text(max_size=30).filter(lambda t: "<tool_call>" not in t)
SPACE = " \t\r\n"


def render(text: str, calls: list[tuple[str, dict]]) -> str:
    """A turn as the grammar lets the model write it: text, then calls separated by newlines."""
    markup = SEPARATOR.join(call_text(name, args) for name, args in calls)
    return text + ("\n" if text and calls else "") + markup


def split(output: str, cuts: list[int]) -> list[str]:
    bounds = sorted({c % (len(output) + 1) for c in cuts} | {0, len(output)})
    return [output[a:b] for a, b in zip(bounds, bounds[1:])]


def run(pieces: list[str]) -> tuple[str, list[dict], ToolCallStreamer]:
    ids = (f"call_{i}" for i in itertools.count())
    streamer = ToolCallStreamer(make_id=lambda: next(ids))
    pairs = [d for p in pieces for d in streamer.feed(p)] + streamer.finish()
    output = "".join(pieces)
    for delta, end in pairs:  # a content delta is the generated text just before its end offset
        if "content" in delta:
            assert output[end - len(delta["content"]) : end] == delta["content"]
    deltas = [d for d, _ in pairs]
    return "".join(d.get("content", "") for d in deltas), deltas, streamer


@settings(max_examples=300, deadline=None)
@given(text=_text, calls=_calls, cuts=st.lists(st.integers(0, 400), max_size=30))
def test_any_split_gives_the_same_content_and_calls(text, calls, cuts):
    content, deltas, streamer = run(split(render(text, calls), cuts))
    # whitespace just before a call is markup, not content
    assert content == (text.rstrip(SPACE) if calls else text)
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in streamer.calls] == calls
    assert not streamer.in_call
    seen: set[int] = set()
    for d in deltas:
        assert set(d) in ({"content"}, {"tool_calls"})
        for frag in d.get("tool_calls", []):
            i = frag["index"]
            if i not in seen:  # the first fragment names the call
                seen.add(i)
                assert frag["id"] == f"call_{i}" and frag["type"] == "function"
                assert frag["function"] == {"name": calls[i][0], "arguments": ""}
            else:
                assert set(frag) == {"index", "function"} and set(frag["function"]) == {"arguments"}
    assert seen == set(range(len(calls)))
    for i, (_, args) in enumerate(calls):  # fragments of each call's arguments concatenate to its JSON
        pieces_i = [f["function"]["arguments"] for d in deltas for f in d.get("tool_calls", []) if f["index"] == i]
        assert json.loads("".join(pieces_i)) == args


def test_markup_inside_an_argument_string_does_not_end_the_call():
    args = {"note": "}\n</tool_call>\n<tool_call>\n", "n": [1, {"x": 'a "quoted" \\ }]'}]}
    output = call_text("echo", args)
    for size in (1, 2, 5, len(output)):
        content, _, streamer = run([output[i:i + size] for i in range(0, len(output), size)])
        assert content == "" and json.loads(streamer.calls[0]["function"]["arguments"]) == args


def test_text_that_only_looks_like_the_start_of_markup_is_released():
    content, _, streamer = run(["a <tool", "_ca", "t> b <", "tool_call>x"])
    assert content == "a <tool_cat> b <tool_call>x" and not streamer.calls


def test_whitespace_is_content_unless_a_call_follows():
    assert run(["one \n", "\n"])[0] == "one \n\n"
    assert run(["one \n", "\n" + OPEN[:3]])[0] == "one \n\n<to"


def test_a_tag_cut_short_after_a_call_is_not_content():
    content, _, streamer = run([call_text("f", {}) + SEPARATOR + OPEN[:5]])
    assert content == "" and len(streamer.calls) == 1 and not streamer.in_call


def test_a_cut_off_call_passes_on_its_partial_arguments():
    _, _, streamer = run([OPEN + '{"name":"f","arguments":{"a":1'])
    assert streamer.calls[0]["function"]["arguments"] == '{"a":1' and streamer.in_call


def test_malformed_markup_is_an_error():
    with pytest.raises(ValueError):
        run([OPEN + '{"nom":"f"}'])


# ---- one choice's output: logprobs, finish reason, message, the legacy form -------------------


def entry(text: str) -> TokenLogprob:
    return TokenLogprob(token=0, text=text, logprob=-1.0, top=())


class ChatOutput:
    """A ToolCallOutput's events as Chat Completions sends them (protocols/chat/deltas.py)."""

    def __init__(self, *, legacy: bool):
        self.output, self.legacy = ToolCallOutput(), legacy
        self.events: list = []

    def feed(self, text, logprobs=()):
        events = self.output.feed(text, logprobs)
        self.events += events
        return deltas.pieces(events, self.legacy)

    def finish(self):
        events = self.output.finish()
        self.events += events
        return deltas.pieces(events, self.legacy)

    def finish_reason(self, reason: FinishReason, stop_sequence: str | None = None) -> str:
        return deltas.choice_finish_reason(self.output, Finished(reason, 0, 0, stop_sequence=stop_sequence),
                                           self.legacy)

    def message(self):
        return chat_message(self.output, self.legacy)


@settings(max_examples=200, deadline=None)
@given(text=_text, calls=_calls, cuts=st.lists(st.integers(0, 60), max_size=10), data=st.data())
def test_content_deltas_carry_exactly_their_tokens(text, calls, cuts, data):
    """Tokens that split content from markup exactly: the content's tokens are reported, in order,
    each once, with the delta that completes its text; no token of the markup is reported."""
    content = text.rstrip(SPACE) if calls else text
    content_tokens = split(content, cuts)
    markup = render(text, calls)[len(content):]
    tokens = content_tokens + split(markup, data.draw(st.lists(st.integers(0, 400), max_size=20)))
    output = ChatOutput(legacy=False)
    pieces = [p for t in tokens for p in output.feed(t, (entry(t),))] + output.finish()
    sent = ""
    for delta, entries in pieces:
        sent += delta.get("content", "")
        assert entries == () or "content" in delta
        assert content.startswith(sent)
    assert [e.text for _, es in pieces for e in es] == [t for t in content_tokens if t]
    reason = output.finish_reason(FinishReason.STOP)
    assert reason == ("tool_calls" if calls else "stop")
    message = output.message()
    assert message["content"] == (content if content or not calls else None)
    assert [c["function"]["name"] for c in message.get("tool_calls", [])] == [name for name, _ in calls]


def test_a_call_cut_by_max_tokens_finishes_with_length():
    output = ChatOutput(legacy=False)
    output.feed(OPEN + '{"name":"f","arguments":{"a"')
    output.finish()
    assert output.finish_reason(FinishReason.LENGTH) == "length"
    assert output.finish_reason(FinishReason.STOP) == "stop"  # a stop string inside the call


def test_the_legacy_form_streams_function_call_fragments():
    output = ChatOutput(legacy=True)
    text = call_text("lookup", {"q": "x"})
    pieces = [p for ch in text for p in output.feed(ch)] + output.finish()
    deltas = [d for d, _ in pieces]
    assert deltas[0] == {"function_call": {"name": "lookup", "arguments": ""}}
    assert all(set(d) == {"function_call"} and set(d["function_call"]) == {"arguments"} for d in deltas[1:])
    assert json.loads("".join(d["function_call"]["arguments"] for d in deltas)) == {"q": "x"}
    assert output.finish_reason(FinishReason.STOP) == "function_call"
    assert output.message() == {"content": None, "function_call": {"name": "lookup", "arguments": '{"q":"x"}'}}


@settings(max_examples=200, deadline=None)
@given(text=_text, calls=_calls, data=st.data())
def test_the_core_events_open_grow_and_close_each_call(text, calls, data):
    """Split anywhere, a turn's events are its text, then per call a CallStart, CallInputs that
    concatenate to its arguments and one CallEnd with them whole, calls numbered in order."""
    content = text.rstrip(SPACE) if calls else text
    output = ChatOutput(legacy=False)
    for piece in split(render(text, calls), data.draw(st.lists(st.integers(0, 400), max_size=20))):
        output.feed(piece)
    output.finish()
    events = output.events
    assert "".join(e.text for e in events if isinstance(e, TextOut)) == content
    starts = [e for e in events if isinstance(e, CallStart)]
    ends = [e for e in events if isinstance(e, CallEnd)]
    assert [(e.call, e.name) for e in starts] == [(i, name) for i, (name, _) in enumerate(calls)]
    assert [e.call for e in ends] == list(range(len(calls)))
    for i, (_, arguments) in enumerate(calls):
        pieces = "".join(e.text for e in events if isinstance(e, CallInput) and e.call == i)
        assert pieces == ends[i].arguments and json.loads(pieces) == arguments
        # each call's events lie between its start and its end
        at = [k for k, e in enumerate(events) if getattr(e, "call", None) == i]
        assert isinstance(events[at[0]], CallStart) and isinstance(events[at[-1]], CallEnd)


def test_a_call_cut_short_gets_no_end():
    output = ChatOutput(legacy=False)
    output.feed(OPEN + '{"name":"f","arguments":{"a"')
    output.finish()
    assert [type(e) for e in output.events] == [CallStart, CallInput]


def test_a_stop_string_is_the_core_s_stop_sequence_and_chat_s_stop():
    output = ToolCallOutput()
    output.feed("some text")
    stopped = Finished(FinishReason.STOP, 3, 2, stop_sequence="###")
    assert output.finish_reason(stopped) == "stop_sequence"
    assert deltas.choice_finish_reason(output, stopped) == "stop"
