"""Custom (freeform) tools: their call markup, the grammar that constrains their input (free
text, a regular expression, or a client's Lark grammar embedded as a grammar of its own) and the
streamer that turns such a call into `custom` call fragments, checked byte by byte against
llguidance on the fake vocabulary (one token per byte)."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rill.api.core.tool_calls import ToolCallStreamer
from rill.backends.fake import FakeBackend
from rill.sampling.grammar import Grammar, GrammarError, Grammars
from rill.sampling.tool_format import SEPARATOR, ToolSpec, call_text, grammar, system_prompt

# Codex CLI's apply_patch tool (codex-rs/core/assets/tools/apply_patch.lark), as it sends it.
APPLY_PATCH = """start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?

hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?

filename: /(.+)/
add_line: "+" /(.*)/ LF -> line

change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF

%import common.LF
"""
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+Hello\n+world\n*** End Patch"
UPDATE = "*** Begin Patch\n*** Update File: a.py\n@@ def f():\n-    return 1\n+    return 2\n*** End Patch\n"

F = ToolSpec("f", None, {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]})
PATCHER = ToolSpec("apply_patch", "edit files", {}, custom=True, syntax="lark", definition=APPLY_PATCH)
FREE = ToolSpec("note", None, {}, custom=True)
DIGITS = ToolSpec("digits", None, {}, custom=True, syntax="regex", definition=r"[0-9]+(/[0-9]+)?")
# a client grammar whose rule and terminal names are ours too: they must not meet
CLASH = ToolSpec("clash", None, {}, custom=True, syntax="lark",
                 definition='start: OPEN body\nOPEN: "("\nbody: TEXT ")"\nTEXT: /[a-z]+/\n')


def compiled(tools, mode="auto", parallel=True, answer=None) -> Grammar:
    grammars = Grammars(FakeBackend().guidance_tokenizer(), 258)
    return grammars.lark(grammar(tools, mode, parallel=parallel, answer=answer))


def outcome(g: Grammar, text: str) -> str:
    """accepted (could end here), prefix (valid so far, must go on) or rejected."""
    matcher = g.constraint()._matcher
    for byte in text.encode():
        if not matcher.consume_token(byte) or matcher.is_error():
            return "rejected"
    return "accepted" if matcher.is_accepting() else "prefix"


def custom(name: str, text: str) -> str:
    return call_text(name, text, custom=True)


def test_a_custom_call_is_its_name_line_then_the_raw_input():
    assert custom("apply_patch", PATCH) == "<tool_call>\napply_patch\n" + PATCH + "\n</tool_call>"


@pytest.mark.parametrize("text, expected", [
    (custom("apply_patch", PATCH), "accepted"),
    (custom("apply_patch", UPDATE), "accepted"),  # its optional final LF, then our closing tag
    (custom("apply_patch", PATCH) + SEPARATOR + custom("apply_patch", UPDATE), "accepted"),
    (custom("apply_patch", "*** Begin Patch\n*** End Patch"), "rejected"),  # hunk+ needs one
    (custom("apply_patch", "hello"), "rejected"),
    (custom("apply_patch", PATCH)[:-3], "prefix"),
    (call_text("apply_patch", {"input": PATCH}), "rejected"),  # not as a JSON call
    ("Here is the patch: " + custom("apply_patch", PATCH), "accepted"),
    ("plain text", "accepted"),
])
def test_a_lark_tool_s_input_follows_its_grammar(text, expected):
    assert outcome(compiled([PATCHER]), text) == expected


def test_a_client_grammar_s_names_cannot_meet_ours():
    g = compiled([CLASH, F], mode="required")
    assert outcome(g, custom("clash", "(abc)")) == "accepted"
    assert outcome(g, custom("clash", "abc")) == "rejected"
    assert outcome(g, call_text("f", {"x": 1})) == "accepted"  # our OPEN/body still ours


@pytest.mark.parametrize("text, expected", [
    (custom("digits", "123"), "accepted"),
    (custom("digits", "12/34"), "accepted"),  # a `/` in the pattern is escaped for Lark
    (custom("digits", "12a"), "rejected"),
    (custom("digits", ""), "rejected"),
    (custom("note", "any text\nat all, even {json}"), "accepted"),
    (custom("note", ""), "accepted"),
    (custom("note", "a\n</tool_call> b"), "rejected"),  # the input ends at the first closing tag
    (custom("note", "x") + SEPARATOR + custom("digits", "7"), "accepted"),
    (call_text("f", {"x": 1}) + SEPARATOR + custom("note", "x"), "accepted"),
    (call_text("f", {"x": "1"}), "rejected"),
])
def test_regex_and_plain_text_tools(text, expected):
    assert outcome(compiled([F, FREE, DIGITS], mode="required"), text) == expected


def test_modes_and_choices_with_custom_tools():
    assert outcome(compiled([FREE], mode="none"), custom("note", "x")) == "rejected"
    assert outcome(compiled([FREE], mode="none"), "hello") == "accepted"
    assert outcome(compiled([FREE], mode="required"), "hello") == "rejected"
    one = compiled([DIGITS], mode="required", parallel=False)
    assert outcome(one, custom("digits", "1")) == "accepted"
    assert outcome(one, custom("digits", "1") + SEPARATOR + custom("digits", "2")) == "rejected"
    json_answer = compiled([FREE], mode="auto", answer={"type": "object"})
    assert outcome(json_answer, '{"a":1}') == "accepted"
    assert outcome(json_answer, custom("note", "x")) == "accepted"


def test_a_bad_client_grammar_fails_to_compile():
    bad = ToolSpec("bad", None, {}, custom=True, syntax="lark", definition="start: missing_rule\n")
    with pytest.raises(GrammarError):
        compiled([bad])


def test_the_system_prompt_shows_custom_tools_and_how_to_call_them():
    prompt = system_prompt([F, PATCHER])
    lines = prompt.split("<tools>\n")[1].split("\n</tools>")[0].split("\n")
    assert json.loads(lines[1]) == {"type": "custom", "custom": {
        "name": "apply_patch", "description": "edit files",
        "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH}}}
    assert '{"name": <function-name>' in prompt and "<tool-name>\n<input>" in prompt
    only_custom = system_prompt([FREE])
    assert '{"name": <function-name>' not in only_custom and json.loads(
        only_custom.split("<tools>\n")[1].split("\n</tools>")[0]) == {
        "type": "custom", "custom": {"name": "note", "format": {"type": "text"}}}


# ---- the streamer ------------------------------------------------------------------------------

def _clean(text: str) -> str:
    """An input the grammar allows: no closing tag inside."""
    return text.replace("</tool_call>", "")


def run(pieces: list[str]):
    ids = (f"call_{i}" for i in itertools.count())
    streamer = ToolCallStreamer(make_id=lambda: next(ids))
    deltas = [d for p in pieces for d, _ in streamer.feed(p)] + [d for d, _ in streamer.finish()]
    return deltas, streamer


def split(output: str, cuts: list[int]) -> list[str]:
    bounds = sorted({c % (len(output) + 1) for c in cuts} | {0, len(output)})
    return [output[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=20).filter(lambda t: "<tool_call>" not in t),
       calls=st.lists(st.tuples(st.sampled_from(["note", "apply_patch", "f"]), st.text(max_size=30).map(_clean)),
                      min_size=1, max_size=3),
       cuts=st.lists(st.integers(0, 300), max_size=30))
def test_any_split_streams_the_same_custom_calls(text, calls, cuts):
    markup = SEPARATOR.join(call_text(name, {"x": len(arg)}) if name == "f" else custom(name, arg)
                            for name, arg in calls)
    output = text + ("\n" if text else "") + markup
    deltas, streamer = run(split(output, cuts))
    expected = [(name, json.dumps({"x": len(arg)}, separators=(",", ":")) if name == "f" else arg, name != "f")
                for name, arg in calls]
    # a function call the same as an earlier one is dropped (the grammar ends the turn there)
    expected = [c for i, c in enumerate(expected) if c[2] or c not in expected[:i]]
    assert streamer.repeated == (len(expected) < len(calls))
    assert [(c["function"]["name"], c["function"]["arguments"], bool(c.get("custom"))) for c in streamer.calls] \
        == expected
    assert not streamer.in_call
    # the fragments concatenate to the same calls; only the first of each names it (and says custom)
    rebuilt: dict[int, dict] = {}
    for delta in deltas:
        if "tool_calls" not in delta:
            continue
        fragment = delta["tool_calls"][0]
        if "id" in fragment:
            assert fragment["index"] not in rebuilt
            rebuilt[fragment["index"]] = {"name": fragment["function"]["name"], "arguments": "",
                                          "custom": fragment.get("custom", False)}
        else:
            assert set(fragment) == {"index", "function"}
        rebuilt[fragment["index"]]["arguments"] += fragment["function"]["arguments"]
    assert [(c["name"], c["arguments"], c["custom"]) for c in rebuilt.values()] == expected
    assert "".join(d.get("content", "") for d in deltas) == text.rstrip(" \t\r\n")


def test_the_input_streams_as_it_comes_holding_back_a_possible_closing_tag():
    ids = iter(["call_a"])
    streamer = ToolCallStreamer(make_id=lambda: next(ids))
    assert streamer.feed("<tool_call>\nnote") == []  # the name is not whole yet
    first = streamer.feed("\nline one\n</tool")
    assert [d for d, _ in first] == [
        {"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "note", "arguments": ""},
                         "custom": True}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "line one"}}]}]
    assert streamer.in_call
    # not the closing tag after all: what was held back is input
    assert [d for d, _ in streamer.feed("box>\n</tool_call>")] == [
        {"tool_calls": [{"index": 0, "function": {"arguments": "\n</toolbox>"}}]}]
    assert not streamer.in_call and streamer.calls[0]["function"]["arguments"] == "line one\n</toolbox>"


def test_a_custom_call_cut_short_passes_on_what_there_is():
    streamer = ToolCallStreamer()
    streamer.feed("<tool_call>\nnote\nabc\n</tool")
    assert [d for d, _ in streamer.finish()] == [{"tool_calls": [{"index": 0, "function": {"arguments": "\n</tool"}}]}]
    assert streamer.in_call and streamer.calls[0]["function"]["arguments"] == "abc\n</tool"


def test_a_template_with_its_own_tools_section_is_told_how_to_call_a_custom_tool():
    from rill.api.core.messages import render
    from rill.api.core.request import Message, ToolCall
    from rill.sampling.tool_format import CUSTOM_NOTE
    messages = [Message("user", "patch it"),
                Message("assistant", "", calls=(ToolCall("c1", "apply_patch", PATCH, custom=True),))]
    native = render(messages, [F, PATCHER], native_tools=True)
    assert native[0] == {"role": "system", "content": CUSTOM_NOTE}
    assert render(messages[:1], [F], native_tools=True) == [{"role": "user", "content": "patch it"}]
    # the fallback format replays the call in its own markup
    fallback = render(messages, [F, PATCHER])
    assert fallback[-1]["content"] == custom("apply_patch", PATCH)
    assert CUSTOM_NOTE in fallback[0]["content"]
