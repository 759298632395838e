"""The protocol-neutral generation request: what every protocol's adapter (Chat Completions,
Responses, Messages, legacy completions) maps its wire request to, and the only thing the core
plans from. Field names say what they do, not what any one protocol calls them; `where` strings
name a field as the client wrote it, so the core's 400s point at the client's own field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "developer", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the assistant made earlier (sent back in the history)."""

    id: str | None
    name: str
    arguments: str  # a function's arguments as JSON text; a custom tool's raw input
    custom: bool = False  # a freeform (custom) tool's call: `arguments` is its input text


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the conversation, as plain text (adapters refuse the parts a model cannot read)."""

    role: Role
    text: str = ""
    name: str | None = None  # a participant's name; for role "tool", the called tool's name if known
    reasoning: str = ""  # an assistant's reasoning, sent back (thinking models' templates render it)
    calls: tuple[ToolCall, ...] = ()  # an assistant's calls
    call_id: str | None = None  # role "tool": the call this is the result of
    is_error: bool = False  # role "tool": the tool failed (Messages' `is_error`)


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str | None
    parameters: dict[str, Any]  # a JSON schema of the arguments object
    where: str = "tools"  # the client's field, for a 400 about this tool


@dataclass(frozen=True, slots=True)
class CustomTool:
    """A freeform tool: its input is text, constrained by a grammar when it has one."""

    name: str
    description: str | None
    syntax: Literal["lark", "regex"] | None = None  # None: any text
    definition: str | None = None
    where: str = "tools"


Tool = FunctionTool | CustomTool

# A reasoning effort, as every protocol names one (Chat's `reasoning_effort`, Responses'
# `reasoning.effort`, Messages' `output_config.effort`) -> the thinking tokens before Rill closes
# the section itself (docs/features.md); none and minimal turn thinking off, max leaves it unbounded.
EFFORT_BUDGETS: dict[str, int | None] = {"none": 0, "minimal": 0, "low": 512, "medium": 2048, "high": 8192,
                                         "xhigh": 16384, "max": None}


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: Literal["none", "auto", "required"] = "auto"
    # the tools the model may call (a named choice: one; `allowed_tools`: a subset); None: all
    allowed: tuple[str, ...] | None = None
    where: str = "tool_choice"


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    model: str | None
    messages: tuple[Message, ...] = ()
    # a raw prompt (legacy completions): the model sees exactly these tokens or this text, no template
    prompt_tokens: tuple[int, ...] | None = None
    prompt_text: str | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    legacy_functions: bool = False  # Chat Completions' deprecated `functions`: one call, function_call deltas
    answer_schema: dict[str, Any] | None = None  # the answer must be JSON following this schema
    answer_schema_where: str = "response_format"
    # sampling
    temperature: float | None = None  # None: the model's default (--temperature), else 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None  # token id (as a string) -> bias
    stop: tuple[str, ...] = ()
    # limits
    max_tokens: int | None = None  # None: the model's default cap (--max-tokens), else the room left
    max_tokens_where: str = "max_tokens"
    clamp_max_tokens: bool = False  # a cap beyond the room left is lowered to it (Messages), not a 400
    messages_where: str = "messages"  # the field a too-long prompt is blamed on
    n: int = 1
    top_logprobs: int | None = None  # None: no logprobs; k >= 0: each token's and its k best
    prompt_logprobs: int | None = None  # the prompt's tokens' logprobs too (legacy echo), k best each
    reasoning_budget: int | None = None  # thinking tokens before Rill closes the section; 0 = off
    verbosity: Literal["low", "medium", "high"] | None = None
    prediction: str | None = None  # predicted output (speculative drafts)
    priority_tier: str = "default"  # service tier: priority/scale, default, flex
    stream: bool = False
