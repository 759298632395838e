"""Chat Completions' wire messages -> the core's messages (core/request.py), text only: other
content parts are refused by type, and an earlier answer's audio must have been resolved to
its transcript first (protocols/chat/audio.py's with_transcripts)."""

from __future__ import annotations

from rill.api.core.request import Message, ToolCall
from rill.api.protocols.chat.schemas import (AssistantMessage, ChatCompletionRequest, ContentPart, DeveloperMessage,
                                             FunctionMessage, SystemMessage, ToolMessage)
from rill.errors import InvalidRequest


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


def _calls(msg: AssistantMessage) -> tuple[ToolCall, ...]:
    """An assistant message's calls; a legacy function_call is one call."""
    if msg.tool_calls:
        return tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in msg.tool_calls)
    if msg.function_call is not None:
        return (ToolCall(None, msg.function_call.name, msg.function_call.arguments),)
    return ()


def core_messages(body: ChatCompletionRequest) -> tuple[Message, ...]:
    out: list[Message] = []
    for i, msg in enumerate(body.messages):
        param = f"messages[{i}]"
        if isinstance(msg, AssistantMessage):
            if msg.audio is not None:
                raise InvalidRequest(f"`{param}.audio`: an earlier answer's audio must be resolved to its "
                                     "transcript before rendering.", param=f"{param}.audio")
            text = _text(msg.content, f"{param}.content", refusals=True) or (msg.refusal or "")
            out.append(Message("assistant", text, reasoning=msg.reasoning_content or "", calls=_calls(msg)))
        elif isinstance(msg, ToolMessage):
            out.append(Message("tool", _text(msg.content, f"{param}.content"), call_id=msg.tool_call_id))
        elif isinstance(msg, FunctionMessage):
            out.append(Message("tool", msg.content or "", name=msg.name))
        else:
            out.append(Message(msg.role, _text(msg.content, f"{param}.content"), name=msg.name))
    return tuple(out)


def with_system_text(body: ChatCompletionRequest, text: str) -> ChatCompletionRequest:
    """The body with `text` added to its system prompt: joined to the first system (or developer)
    message, else opening the conversation as one."""
    messages = list(body.messages)
    first = messages[0]
    if isinstance(first, (SystemMessage, DeveloperMessage)):
        content = first.content
        if isinstance(content, str):
            merged: object = f"{content}\n\n{text}" if content else text
        else:
            merged = [*content, ContentPart(type="text", text="\n\n" + text)]
        messages[0] = first.model_copy(update={"content": merged})
    else:
        messages.insert(0, SystemMessage(role="system", content=text))
    return body.model_copy(update={"messages": messages})
