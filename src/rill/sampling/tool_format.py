"""The tool-call format: how the model is told about tools, how it writes a call, and the grammar
that makes it write calls exactly so.

The format is Hermes/Qwen's, which many open models were trained on:

    <tool_call>
    {"name":"get_weather","arguments":{"city":"Paris"}}
    </tool_call>

several calls separated by a newline; results come back to the model as
`<tool_response>\\n...\\n</tool_response>` in a user turn. The JSON inside the markup is compact
(no optional whitespace), with `name` before `arguments`: the grammar forces that shape, so the
delta builder (`api/core/tool_calls.py`) can stream it without guessing.

A freeform (custom) tool's call is its name on the first line, then its input as it is, not JSON:

    <tool_call>
    apply_patch
    *** Begin Patch
    ...
    </tool_call>

The input ends at the first closing tag (so it cannot contain one). A tool with a grammar gets
its input constrained by it: a regular expression is inlined, a Lark grammar is embedded as a
grammar of its own (llguidance's `@name` reference), so its rule names cannot clash with ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import llguidance

from rill.sampling.closed_objects import closed

OPEN = "<tool_call>\n"
CLOSE = "\n</tool_call>"
SEPARATOR = "\n"  # between two calls
TAG = "<tool_call>"  # free text may not contain it: it would start a call
CUSTOM_HEAD_END = "\n"  # a custom call's name line ends here; its input follows

Mode = Literal["none", "auto", "required"]

# Any text that does not contain the call tag (llguidance's `&` and `~` on terminals).
_TEXT = r"TEXT: /(?s:.*)/ & ~/(?s:.*)<tool_call>(?s:.*)/"
_COMPACT = {"whitespace_flexible": False}
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str | None
    parameters: dict[str, Any]  # a JSON schema for the arguments object
    # a freeform (custom) tool: its input is text, following this grammar when it has one
    custom: bool = False
    syntax: Literal["lark", "regex"] | None = None
    definition: str | None = None


def system_prompt(tools: list[ToolSpec]) -> str:
    """The tools section of the system prompt, for chat templates that have none of their own."""
    signatures = "\n".join(json.dumps(tool_json(t), ensure_ascii=False) for t in tools)
    out = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
           "You are provided with function signatures within <tools></tools> XML tags:\n"
           f"<tools>\n{signatures}\n</tools>")
    if any(not t.custom for t in tools):
        out += ("\n\nFor each function call, return a json object with function name and arguments within "
                "<tool_call></tool_call> XML tags:\n"
                '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')
    if any(t.custom for t in tools):
        out += "\n\n" + CUSTOM_NOTE
    return out


# How the model is told to call a freeform tool (also for templates with a tools section of their own).
CUSTOM_NOTE = ("A tool of type custom takes free-form text, not JSON: to call one, write its name on the "
               "first line within <tool_call></tool_call> XML tags, then its input exactly as the tool "
               "expects it (following its grammar, if it has one):\n"
               "<tool_call>\n<tool-name>\n<input>\n</tool_call>")


def tool_json(tool: ToolSpec) -> dict[str, Any]:
    """A tool's signature line in the system prompt (OpenAI's shapes: a function, or a custom tool)."""
    if tool.custom:
        return {"type": "custom", "custom": function_json(tool)}
    return {"type": "function", "function": function_json(tool)}


def custom_format(tool: ToolSpec) -> dict[str, Any]:
    """A custom tool's input format, as OpenAI writes it."""
    if tool.syntax is None:
        return {"type": "text"}
    return {"type": "grammar", "syntax": tool.syntax, "definition": tool.definition or ""}


def function_json(tool: ToolSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    if tool.custom:
        out["format"] = custom_format(tool)
    else:
        out["parameters"] = tool.parameters
    return out


def call_text(name: str, arguments: Any, *, custom: bool = False) -> str:
    """One call as the model writes it (for replaying an earlier turn's calls in the prompt); a
    custom tool's `arguments` is its input text."""
    if custom:
        return OPEN + name + CUSTOM_HEAD_END + str(arguments) + CLOSE
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False, separators=(",", ":"))
    return OPEN + body + CLOSE


def response_text(content: str) -> str:
    return f"<tool_response>\n{content}\n</tool_response>"


def call_schema(tools: list[ToolSpec]) -> dict[str, Any]:
    """The JSON inside one function call's markup: the name of one of tools and arguments valid for it."""
    return {"x-guidance": _COMPACT, "anyOf": [{
        "type": "object",
        "properties": {"name": {"const": t.name}, "arguments": closed(t.parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    } for t in tools if not t.custom]}


def regex_literal(pattern: str) -> str:
    """A regular expression as a Lark `/.../` literal (llguidance's own escaping of `/`)."""
    lark = json.loads(llguidance.LLMatcher.grammar_from_regex(pattern))["grammars"][0]["lark_grammar"]
    assert lark.startswith("start: /") and lark.endswith("/"), lark
    return lark[len("start: "):]


def custom_grammar_name(i: int) -> str:
    """The name of the i-th custom tool's embedded Lark grammar (referenced as `@name`)."""
    return f"custom_input_{i}"


def grammar(tools: list[ToolSpec], mode: Mode, *, parallel: bool, answer: dict[str, Any] | None = None) -> str:
    """The llguidance grammar for the model's turn: Lark text, or, when a custom tool brings a Lark
    grammar, llguidance's JSON of several grammars (the first ours, referencing each client
    grammar as `@custom_input_<i>`).

    - `none`: an answer with no call.
    - `required`: calls only, one or (with parallel) more.
    - `auto`: an answer, or calls, which may follow some text (a model may say what it is about to do).
    The answer is free text without the call tag, or, with `answer` (response_format's schema), one
    JSON value valid against it. Object schemas with `properties` allow no other keys unless they
    say so (closed_objects.py), in the answer and in every call's arguments. A custom tool's input
    is any text without the closing tag, or follows its regular expression or Lark grammar."""
    answer_rule = "%json " + json.dumps({"x-guidance": _COMPACT, **closed(answer)}) if answer is not None else "TEXT"
    if mode == "none":
        return f"start: {answer_rule}\n{_TEXT}\n"
    more = "(SEP call)*" if parallel else ""
    if mode == "required":
        lines = [f"start: call {more}"]
    else:
        # With free text, a call may follow text: the lazy `head` ends at the first tag. With a
        # JSON answer, a call must come first (no text can precede JSON).
        first = "head rest" if answer is None else "call"
        lines = [f"start: {answer_rule} | {first} {more}", f"head[lazy]: TEXT {json.dumps(OPEN)}"]
    subgrammars: list[dict[str, str]] = []
    alternatives: list[str] = []
    if any(not t.custom for t in tools):
        alternatives.append("body CLOSE")
        lines.append("body: %json " + json.dumps(call_schema(tools)))
    for i, tool in enumerate(t for t in tools if t.custom):
        name = json.dumps(tool.name + CUSTOM_HEAD_END)
        alternatives.append(f"custom_{i}")
        if tool.syntax == "lark":
            # its own grammar, so that its rules (`start`, `LF`, ...) cannot meet ours
            subgrammars.append({"name": custom_grammar_name(i), "lark_grammar": tool.definition or ""})
            lines.append(f"custom_{i}: {name} @{custom_grammar_name(i)} CLOSE")
        else:
            # one lazy lexeme up to and including the first closing tag
            pattern = regex_literal(tool.definition or "") if tool.syntax == "regex" else "/(?s:.*)/"
            lines += [f"custom_{i}: {name} custom_input_{i}",
                      f"custom_input_{i}[lazy]: {pattern} {json.dumps(CLOSE)}"]
    lines += ["call: OPEN rest",
              "rest: " + " | ".join(alternatives),
              f"OPEN: {json.dumps(OPEN)}",
              f"CLOSE: {json.dumps(CLOSE)}",
              f"SEP: {json.dumps(SEPARATOR)}",
              _TEXT]
    source = "\n".join(lines) + "\n"
    if not subgrammars:
        return source
    return json.dumps({"grammars": [{"lark_grammar": source}, *subgrammars]})
