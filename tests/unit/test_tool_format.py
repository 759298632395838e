"""rill.sampling.tool_format: the grammar of a turn with tools, per tool_choice mode, checked
byte by byte against llguidance on the fake vocabulary (one token per byte)."""

from __future__ import annotations

import json

import pytest

from rill.backends.fake import FakeBackend
from rill.sampling.grammar import Grammar, Grammars
from rill.sampling.tool_format import EMPTY_PARAMETERS, ToolSpec, call_text, grammar, system_prompt

TOOLS = [ToolSpec("f", None, {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"],
                              "additionalProperties": False}),
         ToolSpec("g", "does g", EMPTY_PARAMETERS)]
F, G = call_text("f", {"x": 1}), call_text("g", {})
TEXTS = {
    "text": "hello", "call": F, "two calls": F + "\n" + G, "text then call": "hmm " + F, "json": '{"a":1}',
    "bad arguments": call_text("f", {"x": "one"}), "unknown tool": call_text("h", {}), "text after a call": F + " x",
    "tag in text": "a <tool_call> b", "spaced JSON": '<tool_call>\n{"name": "f"',
}


def outcome(compiled: Grammar, text: str) -> str:
    """accepted (could end here), prefix (valid so far, must go on) or rejected."""
    constraint = compiled.constraint()
    matcher = constraint._matcher
    for byte in text.encode():
        if not matcher.consume_token(byte) or matcher.is_error():
            return "rejected"
    return "accepted" if matcher.is_accepting() else "prefix"


def accepted(mode, *, parallel=True, answer=None, tools=TOOLS) -> set[str]:
    grammars = Grammars(FakeBackend().guidance_tokenizer(), 258)
    compiled = grammars.lark(grammar(tools, mode, parallel=parallel, answer=answer))
    return {name for name, text in TEXTS.items() if outcome(compiled, text) == "accepted"}


@pytest.mark.parametrize("mode, parallel, answer, expected", [
    ("none", True, None, {"text", "json"}),
    ("none", True, {"type": "object"}, {"json"}),
    ("auto", True, None, {"text", "json", "call", "two calls", "text then call"}),
    ("auto", False, None, {"text", "json", "call", "text then call"}),
    ("auto", True, {"type": "object"}, {"json", "call", "two calls"}),
    ("required", True, None, {"call", "two calls"}),
    ("required", False, None, {"call"}),
])
def test_each_mode_allows_exactly_its_turns(mode, parallel, answer, expected):
    assert accepted(mode, parallel=parallel, answer=answer) == expected


def test_a_named_tool_is_the_only_one_callable():
    assert accepted("required", tools=[TOOLS[1]]) == set()  # F is not g's
    grammars = Grammars(FakeBackend().guidance_tokenizer(), 258)
    assert outcome(grammars.lark(grammar([TOOLS[1]], "required", parallel=False)), G) == "accepted"


def test_the_system_prompt_lists_every_tool_as_a_signature():
    prompt = system_prompt(TOOLS)
    lines = prompt.split("<tools>\n")[1].split("\n</tools>")[0].split("\n")
    assert [json.loads(line) for line in lines] == [
        {"type": "function", "function": {"name": "f", "parameters": TOOLS[0].parameters}},
        {"type": "function", "function": {"name": "g", "description": "does g", "parameters": EMPTY_PARAMETERS}}]
    assert "<tool_call>\n" in prompt and "</tool_call>" in prompt
