"""A request's conversation as one text, the key prefix routing matches on.

The whole conversation counts (tools, system prompt, every message, in the order a chat template
renders them), never the first message alone: two agent loops that share a system prompt differ
only further on, and a conversation's next turn extends its last one's text, so the replica that
served the last turn holds most of this one. Chat Completions, Responses, Messages and legacy
completions bodies all render the same way: the same conversation gives the same text.
"""

from __future__ import annotations

from typing import Any

import orjson

RECORD = "\x1e"  # between turns
UNIT = "\x1f"  # between a turn's role and its content


def conversation_text(body: dict[str, Any]) -> tuple[str, int, int]:
    """The rendered conversation, the length of its stable head (through the first user turn:
    it never changes as the conversation grows, so every turn of it hashes alike) and the length
    of what comes before that turn (tools and system prompt: what conversations may share)."""
    parts: list[tuple[str, Any]] = []
    if body.get("tools"):
        parts.append(("tools", body["tools"]))
    for key in ("instructions", "system"):  # Responses, Messages
        if body.get(key):
            parts.append(("system", body[key]))
    for key in ("messages", "input"):
        value = body.get(key)
        if isinstance(value, str):
            parts.append(("user", value))
        elif isinstance(value, list):
            parts.extend((_role(item), item) for item in value)
    if "prompt" in body:  # legacy completions
        parts.append(("user", body["prompt"]))
    text, head, shared = "", 0, 0
    for role, content in parts:
        if not head and role == "user":
            shared = len(text)
        text += RECORD + role + UNIT + _content(content)
        if not head and role == "user":
            head = len(text)
    return text, head or len(text), shared if head else len(text)


def _role(item: Any) -> str:
    if isinstance(item, dict):
        role = item.get("role") or item.get("type")
        if isinstance(role, str):
            return role
    return "item"


def _content(value: Any) -> str:
    """A message's text parts as they are, anything else (tool calls, images, structured parts)
    as sorted JSON, so that equal content renders equally."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        keys = [k for k in value if k not in ("role", "id")]  # ids differ between equal messages
        if keys == ["content"] or keys == ["type", "content"]:
            return _content(value["content"])
        if set(keys) <= {"type", "text"} and isinstance(value.get("text"), str):
            return value["text"]
        value = {k: value[k] for k in keys}
    if isinstance(value, list):
        return "".join(_content(part) for part in value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
