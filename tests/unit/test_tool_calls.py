"""The tool-call delta builder: for any split of the model's output into pieces, the deltas give
the same content and the same calls, with id/type/name only in each call's first fragment."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rill.api.tool_calls import CLOSE, OPEN, ToolCallStreamer

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
_calls = st.lists(st.tuples(st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
                            st.dictionaries(st.text(max_size=8), _json, max_size=4)), max_size=3)
_text = st.text(max_size=30).filter(lambda t: "<tool_call>" not in t)


def render(text: str, calls: list[tuple[str, dict]]) -> str:
    body = "".join(OPEN + json.dumps({"name": name, "arguments": args}, separators=(",", ":"))
                   + CLOSE for name, args in calls)
    return text + body


def run(pieces: list[str]) -> tuple[str, list[dict], list[dict]]:
    ids = (f"call_{i}" for i in itertools.count())
    streamer = ToolCallStreamer(make_id=lambda: next(ids))
    deltas = [d for p in pieces for d in streamer.feed(p)] + streamer.finish()
    content = "".join(d.get("content", "") for d in deltas)
    return content, deltas, streamer.calls


@settings(max_examples=300, deadline=None)
@given(text=_text, calls=_calls, cuts=st.lists(st.integers(0, 400), max_size=30))
def test_any_split_gives_the_same_content_and_calls(text, calls, cuts):
    output = render(text, calls)
    bounds = sorted({c % (len(output) + 1) for c in cuts} | {0, len(output)})
    pieces = [output[a:b] for a, b in zip(bounds, bounds[1:])]
    content, deltas, finished = run(pieces)
    assert content == text
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in finished] == \
        [(name, args) for name, args in calls]
    seen: set[int] = set()
    for d in deltas:
        for frag in d.get("tool_calls", []):
            i = frag["index"]
            if i not in seen:  # the first fragment names the call
                seen.add(i)
                assert frag["id"] == f"call_{i}" and frag["type"] == "function"
                assert frag["function"]["arguments"] == "" and frag["function"]["name"] == calls[i][0]
            else:
                assert set(frag) == {"index", "function"} and set(frag["function"]) == {"arguments"}
    # fragments of each call's arguments concatenate to its JSON
    for i, (_, args) in enumerate(calls):
        pieces_i = [f["function"]["arguments"] for d in deltas for f in d.get("tool_calls", []) if f["index"] == i]
        assert json.loads("".join(pieces_i)) == args


def test_markup_inside_an_argument_string_does_not_end_the_call():
    args = {"note": "}</tool_call><tool_call>", "n": [1, {"x": 'a "quoted" \\ }]'}]}
    output = render("", [("echo", args)]) + "after"
    for size in (1, 2, 5, len(output)):
        content, _, calls = run([output[i:i + size] for i in range(0, len(output), size)])
        assert content == "after" and json.loads(calls[0]["function"]["arguments"]) == args


def test_text_that_only_looks_like_the_start_of_markup_is_released():
    content, deltas, calls = run(["a <tool", "_ca", "t> b <"])
    assert content == "a <tool_cat> b <" and not calls


def test_a_cut_off_call_passes_on_its_partial_arguments():
    content, deltas, calls = run([OPEN + '{"name":"f","arguments":{"a":1'])
    assert calls[0]["function"]["arguments"] == '{"a":1'


def test_malformed_markup_is_an_error():
    with pytest.raises(ValueError):
        run([OPEN + '{"nom":"f"}'])
