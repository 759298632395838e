"""Pydantic models of the Responses API's wire format (`POST /v1/responses`): the request, its
input items, tools and options. Validation only: what each valid field does (or why it is
refused) is decided in request.py. Every optional field accepts an explicit null, as SDKs send one.

Input items and their content parts accept keys beyond the ones read here, so that a client can
send back what a response gave it (`status`, `annotations`, `logprobs`, `phase`, `caller`, ...);
a top-level field Rill does not know is accepted and logged once, as on Chat Completions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Discriminator, Field, StringConstraints, Tag

from rill.api.http.wire import MetadataKey, MetadataValue, SpanId, StrictModel, Tags, WireModel

# Tool, namespace and custom tool names: as for Chat Completions' functions. A namespace's tools
# are offered to the model as `<namespace>.<name>`, which no plain name can be.
ToolName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class LooseModel(WireModel):
    """Strict types for the fields read; other keys accepted (what a response item carries)."""

    model_config = ConfigDict(strict=True, extra="allow")


# ---- input items ----------------------------------------------------------------------------------


class InputContentPart(LooseModel):
    """A message's content part: `input_text`, `output_text` (an assistant's, sent back), `refusal`.
    Other types (`input_image`, `input_file`, `input_audio`, ...) validate here and are refused by
    name when mapped: the model reads text only."""

    type: str
    text: str | None = None
    refusal: str | None = None


Content = Union[list[InputContentPart], str]  # the list first: its errors name the part


class MessageItem(LooseModel):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Content
    id: str | None = None
    status: str | None = None


class FunctionCallItem(LooseModel):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    namespace: str | None = None
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(LooseModel):
    type: Literal["function_call_output"]
    call_id: str
    output: Content
    id: str | None = None
    status: str | None = None


class CustomToolCallItem(LooseModel):
    type: Literal["custom_tool_call"]
    call_id: str
    name: str
    input: str
    namespace: str | None = None
    id: str | None = None


class CustomToolCallOutputItem(LooseModel):
    type: Literal["custom_tool_call_output"]
    call_id: str
    output: Content
    id: str | None = None


class ReasoningText(LooseModel):
    type: str
    text: str | None = None


class ReasoningItem(LooseModel):
    """An earlier turn's reasoning. Its `encrypted_content` is OpenAI's and means nothing here;
    its `content` text (Rill's own reasoning items carry it) goes back to thinking templates."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[ReasoningText] | None = None
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None


class ToolSearchCallItem(LooseModel):
    """A call of a `tool_search` tool the client runs (`execution: "client"`)."""

    type: Literal["tool_search_call"]
    arguments: Any = None
    call_id: str | None = None
    id: str | None = None


class ToolSearchOutputItem(LooseModel):
    """The tools a client's tool search found: they are offered from then on."""

    type: Literal["tool_search_output"]
    tools: list[dict[str, Any]]
    call_id: str | None = None
    id: str | None = None


class WebSearchCallItem(LooseModel):
    """A web search an earlier response made (Rill's, sent back): its results are gone, and the
    answer that used them follows it."""

    type: Literal["web_search_call"]
    id: str | None = None


class ItemReference(LooseModel):
    type: Literal["item_reference"]
    id: str


class OtherItem(LooseModel):
    """An item type Rill cannot read (computer calls, images, MCP, ...): refused by name."""

    type: str


_ITEM_TYPES = {"message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output",
               "reasoning", "tool_search_call", "tool_search_output", "web_search_call", "item_reference"}


def _item_kind(value: Any) -> str:
    if isinstance(value, dict):
        kind = value.get("type", "message")  # an easy input message has no type
        return kind if isinstance(kind, str) and kind in _ITEM_TYPES else "other"
    return "message"  # validates as one, and fails naming what is wrong


InputItem = Annotated[
    Union[Annotated[MessageItem, Tag("message")], Annotated[FunctionCallItem, Tag("function_call")],
          Annotated[FunctionCallOutputItem, Tag("function_call_output")],
          Annotated[CustomToolCallItem, Tag("custom_tool_call")],
          Annotated[CustomToolCallOutputItem, Tag("custom_tool_call_output")],
          Annotated[ReasoningItem, Tag("reasoning")], Annotated[ToolSearchCallItem, Tag("tool_search_call")],
          Annotated[ToolSearchOutputItem, Tag("tool_search_output")],
          Annotated[WebSearchCallItem, Tag("web_search_call")], Annotated[ItemReference, Tag("item_reference")],
          Annotated[OtherItem, Tag("other")]],
    Discriminator(_item_kind),
]

# ---- tools ----------------------------------------------------------------------------------------


class FunctionTool(StrictModel):
    type: Literal["function"]
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    defer_loading: bool | None = None  # accepted: every tool is offered from the start
    allowed_callers: list[str] | None = None
    output_schema: dict[str, Any] | None = None


class TextFormat(StrictModel):
    type: Literal["text"]


class GrammarFormat(StrictModel):
    type: Literal["grammar"]
    syntax: Literal["lark", "regex"]
    definition: str


class CustomTool(StrictModel):
    type: Literal["custom"]
    name: ToolName
    description: str | None = None
    format: Annotated[Union[TextFormat, GrammarFormat], Field(discriminator="type")] | None = None
    defer_loading: bool | None = None
    allowed_callers: list[str] | None = None


class NamespaceTool(StrictModel):
    type: Literal["namespace"]
    name: ToolName
    description: str | None = None
    tools: Annotated[list[Annotated[Union[FunctionTool, CustomTool], Field(discriminator="type")]],
                     Field(min_length=1)]


class WebSearchTool(LooseModel):
    type: Literal["web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11"]
    external_web_access: bool | None = None
    search_context_size: Literal["low", "medium", "high"] | None = None
    user_location: dict[str, Any] | None = None


class ToolSearchTool(StrictModel):
    type: Literal["tool_search"]
    execution: Literal["server", "client"] | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None


class HostedTool(LooseModel):
    """A tool OpenAI's servers run (file_search, code_interpreter, computer_use, image_generation,
    mcp, ...) or one of its special client tools (local_shell, shell, apply_patch): accepted only
    where leaving it out changes nothing (request.py), else a 400 naming it."""

    type: str


_TOOL_TYPES = {"function", "custom", "namespace", "tool_search", "web_search", "web_search_2025_08_26",
               "web_search_preview", "web_search_preview_2025_03_11"}


def _tool_kind(value: Any) -> str:
    if isinstance(value, dict):
        kind = value.get("type")
        if isinstance(kind, str) and kind in _TOOL_TYPES:
            return "web_search" if kind.startswith("web_search") else kind
        return "hosted"
    return "function"


ToolParam = Annotated[
    Union[Annotated[FunctionTool, Tag("function")], Annotated[CustomTool, Tag("custom")],
          Annotated[NamespaceTool, Tag("namespace")], Annotated[ToolSearchTool, Tag("tool_search")],
          Annotated[WebSearchTool, Tag("web_search")], Annotated[HostedTool, Tag("hosted")]],
    Discriminator(_tool_kind),
]


class NamedTool(StrictModel):
    """tool_choice naming a function or custom tool (a namespaced one as `<namespace>.<name>`,
    or by its own name where that is unambiguous)."""

    type: Literal["function", "custom"]
    name: str


class AllowedTools(StrictModel):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class HostedChoice(LooseModel):
    """tool_choice forcing a hosted tool (`{"type": "web_search_preview"}`, `mcp`, ...)."""

    type: str


def _choice_kind(value: Any) -> str:
    if isinstance(value, str):
        return "mode"
    if isinstance(value, dict):
        kind = value.get("type")
        if not isinstance(kind, str):
            return "hosted"  # fails there, naming `type`
        if kind in ("function", "custom"):
            return "named"
        if kind == "allowed_tools":
            return "allowed"
        return "hosted"
    return "mode"


ToolChoice = Annotated[
    Union[Annotated[Literal["none", "auto", "required"], Tag("mode")], Annotated[NamedTool, Tag("named")],
          Annotated[AllowedTools, Tag("allowed")], Annotated[HostedChoice, Tag("hosted")]],
    Discriminator(_choice_kind),
]

# ---- options --------------------------------------------------------------------------------------


class JsonObjectFormat(StrictModel):
    type: Literal["json_object"]


class JsonSchemaFormat(StrictModel):
    type: Literal["json_schema"]
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


class TextConfig(StrictModel):
    format: Annotated[Union[TextFormat, JsonObjectFormat, JsonSchemaFormat], Field(discriminator="type")] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(StrictModel):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None
    context: Literal["auto", "current_turn", "all_turns"] | None = None
    mode: str | None = None


class ResponseStreamOptions(StrictModel):
    include_obfuscation: bool | None = None


# `include` values OpenAI documents; the ones Rill cannot produce are accepted and produce nothing
Includable = Literal["file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
                     "message.input_image.image_url", "computer_call_output.output.image_url",
                     "code_interpreter_call.outputs", "reasoning.encrypted_content", "message.output_text.logprobs"]

# ---- the request ----------------------------------------------------------------------------------


class ResponseRequest(WireModel):
    # Unknown top-level fields are accepted (clients send vendor extras) and logged once.
    model_config = ConfigDict(strict=True, extra="allow")

    model: str | None = None
    input: Union[list[InputItem], str] | None = None  # the list first: its errors name the item
    instructions: str | None = None
    stream: bool | None = None
    stream_options: ResponseStreamOptions | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: Annotated[int, Field(ge=0)] | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    include: list[Includable] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    store: bool | None = None
    previous_response_id: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    background: bool | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)] | None = None
    user: Annotated[str, StringConstraints(max_length=256)] | None = None
    safety_identifier: Annotated[str, StringConstraints(max_length=256)] | None = None
    prompt_cache_key: Annotated[str, StringConstraints(max_length=1024)] | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    client_metadata: Annotated[dict[str, Any], Field(max_length=64)] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    # refused when set (request.py says why): no saved prompts or conversations here
    prompt: dict[str, Any] | None = None
    conversation: Union[str, dict[str, Any]] | None = None
    # Rill's own, as on Chat Completions: stored on the request's span / the span to nest it under
    tags: Tags | None = None
    parent_span_id: SpanId | None = None
