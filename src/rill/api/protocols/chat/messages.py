"""Wire messages (and offered tools) -> what the chat template renders.

A template that knows the Hermes tool format (`<tool_call>`, a `tools` variable: Qwen2.5, Qwen3,
Hermes, ...) gets the tools and the history's calls and results as it expects them. Any other
template (SmolLM2's has no tools section) gets plain messages in the documented fallback format
of `sampling/tool_format.py`: the tools in the system prompt, earlier calls as their markup in
the assistant's text, and results as `<tool_response>` blocks in a user turn.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from rill.api.protocols.chat.schemas import (AssistantMessage, ChatCompletionRequest, ContentPart, DeveloperMessage, FunctionMessage,
                              SystemMessage, ToolMessage)
from rill.errors import InvalidRequest
from rill.sampling import tool_format
from rill.sampling.tool_format import ToolSpec

Messages = list[dict[str, Any]]


def _text(content: str | list[ContentPart] | None, param: str, *, refusals: bool = False) -> str:
    """A message's content as one string; non-text parts are refused by type, but for an
    assistant's `refusal` parts (`refusals`), which are its text."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for i, part in enumerate(content):
        if refusals and part.type == "refusal" and isinstance((part.model_extra or {}).get("refusal"), str):
            texts.append(part.model_extra["refusal"])
            continue
        if part.type != "text":
            raise InvalidRequest(
                f"`{param}[{i}]`: content parts of type `{part.type}` are not supported by this "
                "model (it reads text only).", param=f"{param}[{i}].type")
        if part.text is None:
            raise InvalidRequest(f"`{param}[{i}].text` is required for a text part.", param=f"{param}[{i}].text")
        texts.append(part.text)
    return "".join(texts)


def _arguments(raw: str) -> Any:
    """A replayed call's arguments as JSON when they parse (templates write them with tojson)."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _calls(msg: AssistantMessage) -> list[dict[str, Any]]:
    """An assistant message's calls as {id, name, arguments}; a legacy function_call is one call."""
    if msg.tool_calls:
        return [{"id": c.id, "name": c.function.name, "arguments": _arguments(c.function.arguments)}
                for c in msg.tool_calls]
    if msg.function_call is not None:
        return [{"id": None, "name": msg.function_call.name, "arguments": _arguments(msg.function_call.arguments)}]
    return []


def render_messages(body: ChatCompletionRequest, tools: Sequence[ToolSpec] = (), *,
                    native_tools: bool = False) -> Messages:
    """Wire messages -> the plain dicts chat templates expect ({role, content: str, ...})."""
    out: Messages = []
    call_names: dict[str, str] = {}  # tool_call_id -> function name, for templates that show it
    results_turn: dict[str, Any] | None = None  # the fallback's user turn of tool results
    for i, msg in enumerate(body.messages):
        param = f"messages[{i}]"
        if isinstance(msg, AssistantMessage):
            if msg.audio is not None:  # protocols/chat/audio.py's with_transcripts replaces it by its text first
                raise InvalidRequest(f"`{param}.audio`: an earlier answer's audio must be resolved to its "
                                     "transcript before rendering.", param=f"{param}.audio")
            text = _text(msg.content, f"{param}.content", refusals=True) or (msg.refusal or "")
            calls = _calls(msg)
            call_names.update({c["id"]: c["name"] for c in calls if c["id"]})
            # a thinking model's templates render it (Qwen3's, for the turns after the last question)
            reasoning = {"reasoning_content": msg.reasoning_content} if msg.reasoning_content else {}
            if native_tools:
                entry: dict[str, Any] = {"role": "assistant", "content": text, **reasoning}
                if calls:
                    entry["tool_calls"] = [{"id": c["id"], "type": "function", "function": {
                        "name": c["name"], "arguments": c["arguments"]}} for c in calls]
                out.append(entry)
            else:
                markup = tool_format.SEPARATOR.join(tool_format.call_text(c["name"], c["arguments"]) for c in calls)
                out.append({"role": "assistant", "content": "\n".join(t for t in (text, markup) if t), **reasoning})
        elif isinstance(msg, (ToolMessage, FunctionMessage)):
            text = (msg.content or "") if isinstance(msg, FunctionMessage) else _text(msg.content, f"{param}.content")
            name = msg.name if isinstance(msg, FunctionMessage) else call_names.get(msg.tool_call_id)
            if native_tools:
                entry = {"role": "tool", "content": text}
                if isinstance(msg, ToolMessage):
                    entry["tool_call_id"] = msg.tool_call_id
                if name:
                    entry["name"] = name
                out.append(entry)
            elif out and out[-1] is results_turn:  # consecutive results share one user turn
                results_turn["content"] += "\n" + tool_format.response_text(text)
            else:
                results_turn = {"role": "user", "content": tool_format.response_text(text)}
                out.append(results_turn)
        else:
            entry = {"role": msg.role, "content": _text(msg.content, f"{param}.content")}
            if msg.name is not None:
                entry["name"] = msg.name
            out.append(entry)
    if tools and not native_tools:
        _offer(out, tools)
    return out


def _offer(messages: Messages, tools: Sequence[ToolSpec]) -> None:
    """The fallback format tells the model about tools at the end of the system prompt."""
    section = tool_format.system_prompt(list(tools))
    if messages and messages[0]["role"] in ("system", "developer"):
        messages[0] = {**messages[0], "content": messages[0]["content"] + "\n\n" + section}
    else:
        messages.insert(0, {"role": "system", "content": section})


def template_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tools as a Hermes-style template's `tools` variable expects them (OpenAI's shape)."""
    return [{"type": "function", "function": tool_format.function_json(t)} for t in tools]


def with_system_text(body: ChatCompletionRequest, text: str) -> ChatCompletionRequest:
    """The body with `text` added to its system prompt: joined to the first system (or developer)
    message, else opening the conversation as one (many chat templates accept a system message
    only in first place)."""
    messages = list(body.messages)
    first = messages[0]
    if isinstance(first, (SystemMessage, DeveloperMessage)):
        content = first.content
        if isinstance(content, str):
            merged: Any = f"{content}\n\n{text}" if content else text
        else:
            merged = [*content, ContentPart(type="text", text="\n\n" + text)]
        messages[0] = first.model_copy(update={"content": merged})
    else:
        messages.insert(0, SystemMessage(role="system", content=text))
    return body.model_copy(update={"messages": messages})
