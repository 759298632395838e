"""The core's messages (and offered tools) -> what the chat template renders.

A template that knows the Hermes tool format (`<tool_call>`, a `tools` variable: Qwen2.5, Qwen3,
Hermes, ...) gets the tools and the history's calls and results as it expects them. Any other
template (SmolLM2's has no tools section) gets plain messages in the documented fallback format
of `sampling/tool_format.py`: the tools in the system prompt, earlier calls as their markup in
the assistant's text, and results as `<tool_response>` blocks in a user turn.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

from rill.api.core.request import Message, ToolCall
from rill.sampling import tool_format
from rill.sampling.tool_format import ToolSpec

Rendered = list[dict[str, Any]]

ERROR_PREFIX = "Error: "  # a failed tool's result, as the model reads it


def _arguments(call: ToolCall) -> Any:
    """A replayed call's arguments as JSON when they parse (templates write them with tojson)."""
    if call.custom:
        return call.arguments
    try:
        return json.loads(call.arguments)
    except ValueError:
        return call.arguments


def render(messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *, native_tools: bool = False) -> Rendered:
    """Messages -> the plain dicts chat templates expect ({role, content: str, ...})."""
    out: Rendered = []
    call_names: dict[str, str] = {}  # call id -> tool name, for templates that show it
    results_turn: dict[str, Any] | None = None  # the fallback's user turn of tool results
    for msg in messages:
        if msg.role == "assistant":
            call_names.update({c.id: c.name for c in msg.calls if c.id})
            # a thinking model's templates render it (Qwen3's, for the turns after the last question)
            reasoning = {"reasoning_content": msg.reasoning} if msg.reasoning else {}
            if native_tools:
                entry: dict[str, Any] = {"role": "assistant", "content": msg.text, **reasoning}
                if msg.calls:
                    entry["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                        "name": c.name, "arguments": _arguments(c)}} for c in msg.calls]
                out.append(entry)
            else:
                markup = tool_format.SEPARATOR.join(tool_format.call_text(c.name, _arguments(c), custom=c.custom)
                                                    for c in msg.calls)
                out.append({"role": "assistant", "content": "\n".join(t for t in (msg.text, markup) if t), **reasoning})
        elif msg.role == "tool":
            text = ERROR_PREFIX + msg.text if msg.is_error else msg.text
            name = msg.name or (call_names.get(msg.call_id) if msg.call_id else None)
            if native_tools:
                entry = {"role": "tool", "content": text}
                if msg.call_id is not None:
                    entry["tool_call_id"] = msg.call_id
                if name:
                    entry["name"] = name
                out.append(entry)
            elif out and out[-1] is results_turn:  # consecutive results share one user turn
                results_turn["content"] += "\n" + tool_format.response_text(text)
            else:
                results_turn = {"role": "user", "content": tool_format.response_text(text)}
                out.append(results_turn)
        else:
            entry = {"role": msg.role, "content": msg.text}
            if msg.name is not None:
                entry["name"] = msg.name
            out.append(entry)
    if tools and not native_tools:
        _offer(out, tool_format.system_prompt(list(tools)))
    elif any(t.custom for t in tools):  # the template's own tools section knows JSON calls only
        _offer(out, tool_format.CUSTOM_NOTE)
    return out


def _offer(messages: Rendered, section: str) -> None:
    """The fallback format tells the model about tools at the end of the system prompt."""
    if messages and messages[0]["role"] in ("system", "developer"):
        messages[0] = {**messages[0], "content": messages[0]["content"] + "\n\n" + section}
    else:
        messages.insert(0, {"role": "system", "content": section})


def template_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tools as a Hermes-style template's `tools` variable expects them (OpenAI's shape)."""
    return [{"type": "function", "function": tool_format.function_json(t)} for t in tools]


def with_system_text(messages: Sequence[Message], text: str) -> tuple[Message, ...]:
    """`text` added to the system prompt: joined to the first system (or developer) message,
    else opening the conversation as one (many chat templates accept a system message only in
    first place)."""
    if messages and messages[0].role in ("system", "developer"):
        first = messages[0]
        merged = f"{first.text}\n\n{text}" if first.text else text
        return (dataclasses.replace(first, text=merged), *messages[1:])
    return (Message("system", text), *messages)
