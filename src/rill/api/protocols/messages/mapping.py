"""A Messages request (validated) -> the core's GenerationRequest, or a 400 naming the field.

- `system`: a string or text blocks (joined by blank lines). The block Claude Code opens with,
  `x-anthropic-billing-header: ...`, is Anthropic's billing metadata, not prompt: it is dropped
  (it also changes between versions, and would be the first thing a reused prefix compares).
- `messages`: text blocks are the turn's text; an assistant's `tool_use` blocks are its calls; a
  user's `tool_result` blocks are tool turns (string or text-block content, `is_error`), in the
  order given; `thinking` / `redacted_thinking` are dropped. Consecutive turns of one role are
  joined into one turn, as Anthropic does. A `role: "system"` message is a system turn at that
  point (joined to the system prompt when no turn precedes it); a template that cannot render a
  system turn there answers 400, on which Claude Code sends its text as user-turn reminders.
- Anything a text model cannot read (`image`, `document`, server-tool results) is a 400 naming
  the block, and so is a final assistant turn (prefill: Rill always starts a new turn).
- `tools`: client tools (`type` absent or "custom") with their `input_schema`; a tool with
  `defer_loading: true` is not shown to the model (nothing here can load it later) unless
  `tool_choice` names it; `web_search_*` is run by Rill's [search] provider (see route.py); every
  other typed tool is a 400 naming it.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, replace
from typing import Any, Sequence

from rill.api.core.request import EFFORT_BUDGETS, FunctionTool, GenerationRequest, Message, ToolCall, ToolChoice
from rill.api.protocols.messages.schemas import (AnthropicInputMessage, AnthropicPromptFields,
                                                 AnthropicRedactedThinkingBlock, AnthropicTextBlock,
                                                 AnthropicThinkingBlock, AnthropicTool, AnthropicToolResultBlock,
                                                 AnthropicToolUseBlock, CountMessageTokensRequest, MessagesRequest)
from rill.errors import InvalidRequest, UnsupportedParameter

log = logging.getLogger("rill.api")

BILLING_HEADER = "x-anthropic-billing-header:"



@dataclass(frozen=True, slots=True)
class WebSearch:
    """A `web_search_*` tool Rill runs before generating (with a [search] provider)."""

    where: str
    max_uses: int | None
    user_location: dict[str, Any] | None
    allowed_domains: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Mapped:
    request: GenerationRequest
    web_search: WebSearch | None = None
    show_thinking: bool = True  # `thinking.display: "omitted"`: thinking is not sent
    user: str | None = None  # metadata.user_id


@functools.lru_cache(maxsize=256)
def _note_unknown_field(name: str) -> None:
    log.debug("messages: ignoring unknown request field %r (logged once)", name)


def map_request(body: MessagesRequest | CountMessageTokensRequest, *, search_configured: bool = False) -> Mapped:
    """The GenerationRequest (for count_tokens: the prompt alone), and what the route does besides."""
    for name in body.model_extra or {}:
        _note_unknown_field(name)
    if body.mcp_servers:
        raise UnsupportedParameter("`mcp_servers`: this server connects to no MCP servers; call the tools "
                                   "yourself and send their results as `tool_result` blocks.", param="mcp_servers")
    tools, search = _tools(body.tools or [], body, search_configured)
    choice, parallel = _tool_choice(body, tools)
    messages = _messages(body)
    budget = _thinking_budget(body)
    answer = None
    if body.output_config is not None and body.output_config.format is not None:
        answer = body.output_config.format.schema_
    common: dict[str, Any] = dict(
        model=body.model, messages=tuple(messages), tools=tuple(tools), tool_choice=choice,
        parallel_tool_calls=parallel, answer_schema=answer, answer_schema_where="output_config.format.schema",
        reasoning_budget=budget, messages_where="messages")
    show_thinking = not (body.thinking is not None and body.thinking.display == "omitted")
    if isinstance(body, CountMessageTokensRequest):
        return Mapped(GenerationRequest(**common), search, show_thinking)
    for i, stop in enumerate(body.stop_sequences or ()):
        if not stop:
            raise InvalidRequest(f"`stop_sequences[{i}]` is empty; each stop sequence needs some text.",
                                 param=f"stop_sequences[{i}]")
    request = GenerationRequest(
        **common,
        temperature=body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        stop=tuple(body.stop_sequences or ()),
        max_tokens=body.max_tokens, max_tokens_where="max_tokens", clamp_max_tokens=True,
        stream=bool(body.stream))
    user = body.metadata.user_id if body.metadata is not None else None
    return Mapped(request, search, show_thinking, user)


# ---- tools ------------------------------------------------------------------------------------


def _tools(tools: Sequence[AnthropicTool], body: AnthropicPromptFields,
           search_configured: bool) -> tuple[list[FunctionTool], WebSearch | None]:
    named = body.tool_choice.name if body.tool_choice is not None and body.tool_choice.type == "tool" else None
    out: list[FunctionTool] = []
    search: WebSearch | None = None
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if tool.name in seen:
            raise InvalidRequest(f"Two tools are named `{tool.name}`; names must be unique.", param=f"{where}.name")
        seen.add(tool.name)
        if tool.type in (None, "custom"):
            if tool.input_schema is None:
                raise InvalidRequest(f"`{where}.input_schema` is required for a client tool.",
                                     param=f"{where}.input_schema")
            extra = tool.model_extra or {}
            if extra.get("defer_loading") is True and tool.name != named:
                continue  # loaded on demand by a tool search Rill does not run: never in the prompt
            schema = {k: v for k, v in tool.input_schema.items() if k != "$schema"}
            out.append(FunctionTool(tool.name, tool.description, schema, where=where))
        elif tool.type.startswith("web_search_"):
            if not search_configured:
                raise UnsupportedParameter(
                    f"`{where}`: the server tool `{tool.type}` needs web search, which is not configured "
                    'on this server: add a [search] table to rill.toml (provider = "searxng", "brave" or '
                    '"tavily"); see docs/web-search.md.', param=f"{where}.type")
            if search is not None:
                raise InvalidRequest("Only one web search tool may be given.", param=f"{where}.type")
            search = _web_search(tool, where)
        else:
            raise UnsupportedParameter(_unsupported_tool(tool.type), param=f"{where}.type")
    return out, search


def _unsupported_tool(kind: str) -> str:
    client_run = ("bash_", "text_editor_", "computer_", "memory_")
    if kind.startswith(client_run):
        return (f"Anthropic's built-in tool `{kind}` is not supported here: its input schema is known only to "
                "Anthropic's models. Define it as a client tool with an `input_schema` instead.")
    return (f"The server tool `{kind}` is not supported: this server cannot run it (only `web_search_*`, "
            "with a [search] provider). Leave it out, or define a client tool and run it yourself.")


def _web_search(tool: AnthropicTool, where: str) -> WebSearch:
    extra = tool.model_extra or {}

    def domains(key: str) -> tuple[str, ...]:
        value = extra.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
            raise InvalidRequest(f"`{where}.{key}` must be a list of domain names.", param=f"{where}.{key}")
        return tuple(d.lower() for d in value)

    max_uses = extra.get("max_uses")
    if max_uses is not None and (not isinstance(max_uses, int) or isinstance(max_uses, bool) or max_uses < 1):
        raise InvalidRequest(f"`{where}.max_uses` must be a positive integer.", param=f"{where}.max_uses")
    location = extra.get("user_location")
    if location is not None and not isinstance(location, dict):
        raise InvalidRequest(f"`{where}.user_location` must be an object.", param=f"{where}.user_location")
    return WebSearch(where, max_uses, location, domains("allowed_domains"), domains("blocked_domains"))


def _tool_choice(body: AnthropicPromptFields, tools: Sequence[FunctionTool]) -> tuple[ToolChoice, bool]:
    choice = body.tool_choice
    if choice is None:
        return ToolChoice("auto"), True
    parallel = not choice.disable_parallel_tool_use
    if choice.type in ("any", "tool") and not tools:
        raise InvalidRequest(f"`tool_choice` of type `{choice.type}` needs `tools` to choose from.",
                             param="tool_choice.type")
    if choice.type == "tool":
        if choice.name is None:
            raise InvalidRequest("`tool_choice.name` is required for a choice of type `tool`.",
                                 param="tool_choice.name")
        if all(t.name != choice.name for t in tools):
            raise InvalidRequest(f"`tool_choice.name` names `{choice.name}`, which is not among the tools "
                                 f"({', '.join(t.name for t in tools)}).", param="tool_choice.name")
        return ToolChoice("required", (choice.name,)), False
    if choice.name is not None:
        raise InvalidRequest(f"`tool_choice.name` is only for a choice of type `tool`, not `{choice.type}`.",
                             param="tool_choice.name")
    mode = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    return ToolChoice(mode), parallel  # type: ignore[arg-type]


# ---- thinking ---------------------------------------------------------------------------------


def _thinking_budget(body: AnthropicPromptFields) -> int | None:
    """Thinking tokens before Rill closes the section (0: off; None: no limit). Models without a
    thinking section ignore it. No `thinking`, as on Anthropic: no thinking."""
    thinking = body.thinking
    effort = body.output_config.effort if body.output_config is not None else None
    if thinking is None:
        return 0 if effort is None else EFFORT_BUDGETS[effort]
    if thinking.type == "disabled":
        return 0
    if thinking.type == "enabled":
        if thinking.budget_tokens is None:
            raise InvalidRequest("`thinking.budget_tokens` is required when `thinking.type` is `enabled`.",
                                 param="thinking.budget_tokens")
        return thinking.budget_tokens
    return None if effort is None else EFFORT_BUDGETS[effort]  # adaptive


# ---- messages ---------------------------------------------------------------------------------


def _unreadable(block_type: str, where: str) -> InvalidRequest:
    return InvalidRequest(f"`{where}`: content blocks of type `{block_type}` are not supported by this model "
                          "(it reads text only).", param=f"{where}.type")


def _system_text(system: str | list[AnthropicTextBlock] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "\n\n".join(b.text for b in system if not b.text.startswith(BILLING_HEADER))


def _text_of(content: str | list[Any], where: str) -> str:
    """A system message's or a tool result's content: a string, or text blocks."""
    if isinstance(content, str):
        return content
    texts = []
    for j, block in enumerate(content):
        if block.type != "text":
            raise _unreadable(block.type, f"{where}[{j}]")
        text = getattr(block, "text", None)
        if not isinstance(text, str):
            raise InvalidRequest(f"`{where}[{j}].text` is required for a text block.", param=f"{where}[{j}].text")
        texts.append(text)
    return "\n".join(texts)


def _messages(body: AnthropicPromptFields) -> list[Message]:
    if not body.messages:
        raise InvalidRequest("`messages` must hold at least one message.", param="messages")
    out: list[Message] = []
    system = _system_text(body.system)
    if system:
        out.append(Message("system", system))
    call_names: dict[str, str] = {}  # tool_use id -> tool name
    for i, msg in enumerate(body.messages):
        for turn in _turns(msg, f"messages[{i}]", call_names):
            _append(out, turn)
    last = body.messages[-1]
    if last.role == "assistant":
        where = f"messages[{len(body.messages) - 1}]"
        raise InvalidRequest(f"`{where}`: the last message is an assistant turn; prefilling (continuing an "
                             "assistant turn) is not supported. End with a user message.", param=where)
    return out


def _turns(msg: AnthropicInputMessage, where: str, call_names: dict[str, str]) -> list[Message]:
    content = msg.content
    if msg.role == "system":
        return [Message("system", _text_of(content, f"{where}.content"))]
    if isinstance(content, str):
        return [Message(msg.role, content)]
    texts: list[str] = []
    if msg.role == "assistant":
        calls: list[ToolCall] = []
        for j, block in enumerate(content):
            at = f"{where}.content[{j}]"
            if isinstance(block, AnthropicTextBlock):
                texts.append(block.text)
            elif isinstance(block, AnthropicToolUseBlock):
                calls.append(ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False)))
                call_names[block.id] = block.name
            elif isinstance(block, (AnthropicThinkingBlock, AnthropicRedactedThinkingBlock)):
                continue  # dropped: its signature cannot be checked, and it is not shown again
            elif isinstance(block, AnthropicToolResultBlock):
                raise InvalidRequest(f"`{at}`: a `tool_result` block belongs in a user message.", param=f"{at}.type")
            else:
                raise _unreadable(block.type, at)
        return [Message("assistant", "\n".join(texts), calls=tuple(calls))]
    turns: list[Message] = []
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        if isinstance(block, AnthropicTextBlock):
            texts.append(block.text)
        elif isinstance(block, AnthropicToolResultBlock):
            if texts:
                turns.append(Message("user", "\n".join(texts)))
                texts = []
            text = "" if block.content is None else _text_of(block.content, f"{at}.content")
            turns.append(Message("tool", text, name=call_names.get(block.tool_use_id), call_id=block.tool_use_id,
                                 is_error=bool(block.is_error)))
        elif isinstance(block, (AnthropicThinkingBlock, AnthropicRedactedThinkingBlock)):
            continue
        elif isinstance(block, AnthropicToolUseBlock):
            raise InvalidRequest(f"`{at}`: a `tool_use` block belongs in an assistant message.", param=f"{at}.type")
        else:
            raise _unreadable(block.type, at)
    if texts or not turns:
        turns.append(Message("user", "\n".join(texts)))
    return turns


def _append(out: list[Message], turn: Message) -> None:
    """Consecutive user turns, assistant turns, or system turns before any other are one turn."""
    if out:
        prev = out[-1]
        joins = (prev.role == turn.role and turn.role in ("user", "assistant")) or (
            turn.role == "system" and all(m.role == "system" for m in out))
        if joins:
            text = "\n\n".join(t for t in (prev.text, turn.text) if t)
            out[-1] = replace(prev, text=text, calls=prev.calls + turn.calls)
            return
    out.append(turn)
