"""Pydantic models of Anthropic's Messages API on the wire (named Anthropic*, as the OpenAPI
document's components are one namespace for every protocol): the `POST /v1/messages` and
`POST /v1/messages/count_tokens` requests, the message and error they answer with (for the
OpenAPI document). Validation only; what each valid field does is decided in mapping.py.

Blocks and the request take unknown keys (newer SDKs and Claude Code's betas add fields); the
known ones are typed strictly, so `"max_tokens": "5"` is a 400 as on Anthropic's API. Block types
Rill cannot read (`image`, `document`, ...) validate here and are refused in mapping.py by name."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from rill.api.http.wire import WireModel


class AnthropicBlock(WireModel):
    model_config = ConfigDict(strict=True, extra="allow")
    cache_control: dict[str, Any] | None = None  # accepted anywhere: prefix reuse is automatic


class AnthropicTextBlock(AnthropicBlock):
    type: Literal["text"]
    text: str
    citations: list[Any] | None = None  # accepted, not read


# Block types Anthropic documents that a text model cannot read, or that only Anthropic's own
# server tools produce: they validate, and mapping.py refuses them by name.
UNREADABLE = ("image", "document", "search_result", "server_tool_use", "web_search_tool_result",
              "web_fetch_tool_result", "code_execution_tool_result", "bash_code_execution_tool_result",
              "text_editor_code_execution_tool_result", "mcp_tool_use", "mcp_tool_result", "container_upload",
              "tool_reference")


class AnthropicUnreadableBlock(AnthropicBlock):
    type: Literal[UNREADABLE]  # type: ignore[valid-type]


class AnthropicToolUseBlock(AnthropicBlock):
    """An assistant's earlier call, sent back in the history."""

    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


ToolResultContent = Annotated[Union[AnthropicTextBlock, AnthropicUnreadableBlock], Field(discriminator="type")]


class AnthropicToolResultBlock(AnthropicBlock):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ToolResultContent] | None = None  # text blocks (anything else is refused by type)
    is_error: bool | None = None


class AnthropicThinkingBlock(AnthropicBlock):
    """An earlier answer's thinking: accepted and dropped (its signature cannot be checked)."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class AnthropicRedactedThinkingBlock(AnthropicBlock):
    type: Literal["redacted_thinking"]
    data: str


ContentBlock = Annotated[Union[AnthropicTextBlock, AnthropicToolUseBlock, AnthropicToolResultBlock,
                               AnthropicThinkingBlock, AnthropicRedactedThinkingBlock, AnthropicUnreadableBlock],
                         Field(discriminator="type")]


class AnthropicInputMessage(WireModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    # "system": Claude Code's mid-conversation system message (folded into the prompt there)
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


ToolName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]+$")]


class AnthropicTool(WireModel):
    """A client tool (`type` absent or "custom", with `input_schema`), or one of Anthropic's
    typed tools (`web_search_20250305`, `bash_20250124`, ...), told apart in mapping.py."""

    model_config = ConfigDict(strict=True, extra="allow")  # defer_loading, strict, input_examples, ...
    type: str | None = None
    name: ToolName
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    cache_control: dict[str, Any] | None = None


class AnthropicToolChoice(WireModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None  # type "tool": the tool to call
    disable_parallel_tool_use: bool | None = None


class AnthropicThinking(WireModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Annotated[int, Field(ge=1)] | None = None  # type "enabled"
    display: str | None = None  # "summarized" / "omitted"


class AnthropicOutputFormat(WireModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class AnthropicOutputConfig(WireModel):
    model_config = ConfigDict(strict=True, extra="allow")
    effort: Literal["low", "medium", "high", "max"] | None = None
    format: AnthropicOutputFormat | None = None


class AnthropicMetadata(WireModel):
    model_config = ConfigDict(strict=True, extra="allow")
    user_id: Annotated[str, StringConstraints(max_length=512)] | None = None


class AnthropicPromptFields(WireModel):
    """What both endpoints read to build the prompt."""

    model_config = ConfigDict(strict=True, extra="allow")  # unknown fields: accepted, logged once
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    messages: list[AnthropicInputMessage]
    system: str | list[AnthropicTextBlock] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    thinking: AnthropicThinking | None = None
    output_config: AnthropicOutputConfig | None = None
    mcp_servers: list[Any] | None = None  # Rill connects to no MCP server: a non-empty list is refused
    context_management: dict[str, Any] | None = None  # accepted without effect


class MessagesRequest(AnthropicPromptFields):
    max_tokens: Annotated[int, Field(ge=1)]
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    metadata: AnthropicMetadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    container: Any = None  # accepted without effect (Anthropic's code execution containers)


class CountMessageTokensRequest(AnthropicPromptFields):
    pass


# ---- answers (for the OpenAPI document) ------------------------------------------------------


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class AnthropicMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[dict[str, Any]]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None
    usage: AnthropicUsage


class AnthropicTokenCount(BaseModel):
    input_tokens: int


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    type: Literal["error"] = "error"
    error: AnthropicErrorDetail
