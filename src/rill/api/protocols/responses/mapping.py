"""A Responses request -> the core's GenerationRequest: instructions and input items to messages,
tools and tool choice (tools.py), text format, reasoning, sampling and limits. Every field either
shapes the request or is refused here by name, before the first byte; hosted tools Rill cannot run
are accepted only where leaving them out changes nothing the client asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from dataclasses import dataclass
from typing import Any, Sequence

from pydantic import TypeAdapter, ValidationError

from rill.api.core import messages as core_messages
from rill.api.core.request import EFFORT_BUDGETS, GenerationRequest, Message, ToolCall
from rill.api.http.errors import invalid_body
from rill.api.protocols.responses import schemas as w
from rill.api.protocols.responses.tools import (TOOL_SEARCH, Names, Search, flat, offered_tools,
                                                tool_choice)
from rill.errors import InvalidRequest, UnsupportedParameter

log = logging.getLogger("rill.api")

LOGPROBS = "message.output_text.logprobs"

_ITEMS = TypeAdapter(list[w.InputItem])
_TOOLS = TypeAdapter(list[w.ToolParam])


@dataclass
class Mapped:
    gen: GenerationRequest
    names: Names
    search: Search | None = None
    logprobs: bool = False  # include message.output_text.logprobs


@functools.lru_cache(maxsize=256)
def _note_unknown_field(name: str) -> None:
    log.debug("responses: ignoring unknown request field %r (logged once)", name)


def check_request(body: w.ResponseRequest) -> None:
    """Fields refused whatever the model: what Rill does not keep or run."""
    for name in body.model_extra or {}:
        _note_unknown_field(name)
    if body.background:
        raise UnsupportedParameter("`background`: this server runs every response in the foreground while the "
                                   "request is open; send `background: false` or leave it out.", param="background")
    if body.prompt is not None:
        raise UnsupportedParameter("`prompt`: saved prompts are not available on this server; send the "
                                   "instructions and input themselves.", param="prompt")
    if body.conversation is not None:
        raise UnsupportedParameter("`conversation`: the Conversations API is not available on this server; "
                                   "continue a response with `previous_response_id`.", param="conversation")
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest("`stream_options` is only allowed with `stream: true`.", param="stream_options")
    if body.input is None and body.previous_response_id is None:
        raise InvalidRequest("`input` is required (unless the response continues one with "
                             "`previous_response_id`).", param="input")


def history_items(stored: list[dict[str, Any]]) -> list[w.InputItem]:
    """A stored conversation's items (Rill's own input and output items) as input items."""
    try:
        return _ITEMS.validate_python(stored)
    except ValidationError as exc:  # an item stored by an older Rill that this one cannot read
        raise InvalidRequest(f"The response named by `previous_response_id` cannot be continued: {exc}",
                             param="previous_response_id") from None


def map_request(body: w.ResponseRequest, history: Sequence[w.InputItem] = (), *,
                search_configured: bool = False) -> Mapped:
    """`history`: the conversation `previous_response_id` continues (its items, oldest first)."""
    check_request(body)
    own: list[w.InputItem] = ([w.MessageItem(role="user", content=body.input)] if isinstance(body.input, str)
                              else list(body.input or []))
    builder = _Messages(history)
    tools, names, search = offered_tools(body, _searched_tools(builder, own), search_configured)
    messages: list[Message] = []
    if body.instructions:
        messages.append(Message("system", body.instructions))
    messages += builder.messages(history, "previous_response_id")
    messages += builder.messages(own, "input" if not isinstance(body.input, str) else None)
    if not messages or all(m.role in ("system", "developer") for m in messages):
        raise InvalidRequest("`input` holds nothing for the model to answer.", param="input")
    include = set(body.include or ())
    logprobs = LOGPROBS in include
    text = body.text or w.TextConfig()
    answer, answer_where = _answer_schema(text)
    effort = body.reasoning.effort if body.reasoning is not None else None
    tier = body.service_tier if body.service_tier not in (None, "auto") else "default"
    gen = GenerationRequest(
        model=body.model,
        messages=tuple(messages),
        tools=tuple(tools),
        tool_choice=tool_choice(body, tools, names),
        parallel_tool_calls=body.parallel_tool_calls is not False,
        answer_schema=answer,
        answer_schema_where=answer_where,
        temperature=body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        max_tokens=body.max_output_tokens,
        max_tokens_where="max_output_tokens",
        messages_where="input",
        top_logprobs=(body.top_logprobs or 0) if logprobs else None,
        reasoning_budget=EFFORT_BUDGETS[effort] if effort is not None else None,
        verbosity=text.verbosity,
        priority_tier=tier,
        stream=bool(body.stream),
    )
    return Mapped(gen, names, search, logprobs)


def _answer_schema(text: w.TextConfig) -> tuple[dict[str, Any] | None, str]:
    fmt = text.format
    if isinstance(fmt, w.JsonObjectFormat):
        return {"type": "object"}, "text.format"
    if isinstance(fmt, w.JsonSchemaFormat):
        return fmt.schema_, "text.format.schema"
    return None, "text.format"


# ---- input items -> messages -------------------------------------------------------------------------


def _part_text(content: w.Content, where: str | None, *, assistant: bool = False) -> str:
    """A message's (or a tool output's) content as one string: text parts only."""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        here = f"{where}[{j}]" if where else None
        if part.type in ("input_text", "output_text", "text"):
            if part.text is None:
                raise InvalidRequest(f"`{here}.text` is required for a `{part.type}` part.",
                                     param=f"{here}.text" if here else None)
            texts.append(part.text)
        elif part.type == "refusal" and assistant and part.refusal is not None:
            texts.append(part.refusal)
        else:
            raise InvalidRequest(f"`{here or 'content'}`: content parts of type `{part.type}` are not supported "
                                 "by this model (it reads text only).", param=f"{here}.type" if here else None)
    return "".join(texts)


class _Messages:
    """Items -> messages: an assistant's message, reasoning and calls that follow one another are
    one assistant turn; each call's output a tool message (naming the tool the call called)."""

    def __init__(self, history: Sequence[w.InputItem]):
        self.by_id: dict[str, w.InputItem] = {}  # what item_reference may name
        for item in history:
            item_id = getattr(item, "id", None)
            if isinstance(item_id, str):
                self.by_id[item_id] = item
        self.call_names: dict[str, str] = {}  # call_id -> the model's name of the tool called
        self.loaded_tools: list[tuple[w.ToolParam, str]] = []  # tools a client's tool search found

    def messages(self, items: Sequence[w.InputItem], field_name: str | None) -> list[Message]:
        out: list[Message] = []
        turn: dict[str, Any] | None = None  # the assistant turn being gathered

        def close_turn() -> None:
            nonlocal turn
            if turn is not None:
                out.append(Message("assistant", "\n".join(turn["text"]), reasoning="\n".join(turn["reasoning"]),
                                   calls=tuple(turn["calls"])))
                turn = None

        def assistant() -> dict[str, Any]:
            nonlocal turn
            if turn is None:
                turn = {"text": [], "reasoning": [], "calls": []}
            return turn

        for i, item in enumerate(items):
            where = f"{field_name}[{i}]" if field_name == "input" else None
            if isinstance(item, w.ItemReference):
                found = self.by_id.get(item.id)
                if found is None:
                    raise InvalidRequest(f"`{where or field_name}`: no item '{item.id}' in the conversation "
                                         "`previous_response_id` continues.", param=f"{where}.id" if where else None)
                item = found
            if isinstance(item, w.MessageItem):
                content_where = f"{where}.content" if where else None
                if item.role == "assistant":
                    text = _part_text(item.content, content_where, assistant=True)
                    if text:
                        assistant()["text"].append(text)
                    continue
                close_turn()
                out.append(Message(item.role, _part_text(item.content, content_where)))
            elif isinstance(item, w.ReasoningItem):
                text = "".join(c.text or "" for c in item.content or () if c.type == "reasoning_text")
                if text:
                    assistant()["reasoning"].append(text)
            elif isinstance(item, (w.FunctionCallItem, w.CustomToolCallItem)):
                custom = isinstance(item, w.CustomToolCallItem)
                name = flat(item.name, item.namespace)
                self.call_names[item.call_id] = name
                arguments = item.input if isinstance(item, w.CustomToolCallItem) else item.arguments
                assistant()["calls"].append(ToolCall(item.call_id, name, arguments, custom=custom))
            elif isinstance(item, w.ToolSearchCallItem):
                call_id = item.call_id or item.id or ""
                self.call_names[call_id] = TOOL_SEARCH
                arguments = item.arguments if isinstance(item.arguments, str) else json.dumps(item.arguments or {})
                assistant()["calls"].append(ToolCall(call_id, TOOL_SEARCH, arguments))
            elif isinstance(item, (w.FunctionCallOutputItem, w.CustomToolCallOutputItem)):
                close_turn()
                text = _part_text(item.output, f"{where}.output" if where else None)
                out.append(Message("tool", text, name=self.call_names.get(item.call_id), call_id=item.call_id))
            elif isinstance(item, w.ToolSearchOutputItem):
                close_turn()
                found = self._load(item, where)
                out.append(Message("tool", json.dumps(found, ensure_ascii=False), name=TOOL_SEARCH,
                                   call_id=item.call_id))
            elif isinstance(item, w.WebSearchCallItem):
                continue  # the search an earlier response made; its answer follows
            else:
                raise UnsupportedParameter(f"`{where or field_name}`: input items of type `{item.type}` are not "
                                           "supported by this server.", param=f"{where}.type" if where else None)
        close_turn()
        return out

    def _load(self, item: w.ToolSearchOutputItem, where: str | None) -> list[dict[str, Any]]:
        """A tool search's result: its tools are offered from now on; the model reads their names
        and descriptions."""
        try:
            tools = _TOOLS.validate_python(item.tools)
        except ValidationError as exc:
            raise invalid_body(exc.errors(), item.tools) from None
        listed = []
        for j, tool in enumerate(tools):
            self.loaded_tools.append((tool, f"{where}.tools[{j}]" if where else "previous_response_id"))
            listed.append({k: v for k, v in {"type": tool.type, "name": getattr(tool, "name", None),
                                            "description": getattr(tool, "description", None)}.items() if v})
        return listed


def _searched_tools(builder: _Messages, own: Sequence[w.InputItem]) -> list[tuple[w.ToolParam, str]]:
    """The tools a client's tool search loaded (this request's input or the conversation before it)."""
    scratch = _Messages(())
    for item in list(builder.by_id.values()) + list(own):
        if isinstance(item, w.ToolSearchOutputItem):
            scratch._load(item, None)
    return scratch.loaded_tools


def with_system_text(gen: GenerationRequest, text: str) -> GenerationRequest:
    """The request with `text` added to its system prompt (web search results)."""
    return dataclasses.replace(gen, messages=core_messages.with_system_text(gen.messages, text))
