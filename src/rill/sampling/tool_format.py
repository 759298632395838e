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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from rill.sampling.closed_objects import closed

OPEN = "<tool_call>\n"
CLOSE = "\n</tool_call>"
SEPARATOR = "\n"  # between two calls
TAG = "<tool_call>"  # free text may not contain it: it would start a call

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


def system_prompt(tools: list[ToolSpec]) -> str:
    """The tools section of the system prompt, for chat templates that have none of their own."""
    signatures = "\n".join(json.dumps({"type": "function", "function": function_json(t)}, ensure_ascii=False)
                           for t in tools)
    return ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n"
            f"<tools>\n{signatures}\n</tools>\n\n"
            "For each function call, return a json object with function name and arguments within "
            "<tool_call></tool_call> XML tags:\n"
            '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def function_json(tool: ToolSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["parameters"] = tool.parameters
    return out


def call_text(name: str, arguments: Any) -> str:
    """One call as the model writes it (for replaying an earlier turn's calls in the prompt)."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False, separators=(",", ":"))
    return OPEN + body + CLOSE


def response_text(content: str) -> str:
    return f"<tool_response>\n{content}\n</tool_response>"


def call_schema(tools: list[ToolSpec]) -> dict[str, Any]:
    """The JSON inside one call's markup: the name of one of tools and arguments valid for it."""
    return {"x-guidance": _COMPACT, "anyOf": [{
        "type": "object",
        "properties": {"name": {"const": t.name}, "arguments": closed(t.parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    } for t in tools]}


def grammar(tools: list[ToolSpec], mode: Mode, *, parallel: bool, answer: dict[str, Any] | None = None) -> str:
    """The llguidance (Lark) grammar for the model's turn.

    - `none`: an answer with no call.
    - `required`: calls only, one or (with parallel) more.
    - `auto`: an answer, or calls, which may follow some text (a model may say what it is about to do).
    The answer is free text without the call tag, or, with `answer` (response_format's schema), one
    JSON value valid against it. Object schemas with `properties` allow no other keys unless they
    say so (closed_objects.py), in the answer and in every call's arguments."""
    lines: list[str] = []
    answer_rule = "%json " + json.dumps({"x-guidance": _COMPACT, **closed(answer)}) if answer is not None else "TEXT"
    more = "(SEP call)*" if parallel else ""
    if mode == "none":
        lines.append(f"start: {answer_rule}")
    elif mode == "required":
        lines.append(f"start: call {more}")
    else:
        # With free text, a call may follow text: the lazy `head` ends at the first tag. With a
        # JSON answer, a call must come first (no text can precede JSON).
        first = "head" if answer is None else "OPEN"
        lines += [f"start: {answer_rule} | {first} body CLOSE {more}",
                  f"head[lazy]: TEXT {json.dumps(OPEN)}"]
    lines += ["call: OPEN body CLOSE",
              f"OPEN: {json.dumps(OPEN)}",
              f"CLOSE: {json.dumps(CLOSE)}",
              f"SEP: {json.dumps(SEPARATOR)}",
              "body: %json " + json.dumps(call_schema(tools)),
              _TEXT]
    return "\n".join(lines) + "\n"
