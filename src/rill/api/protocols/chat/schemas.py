"""Pydantic models of the wire format: the chat-completion request (the union of the OpenAI request,
Opper's `ChatCompletionStreaming` and Atoma's `CreateChatCompletionStreamRequest`) and the error
request. Validation only; whether a valid field is *built* is decided in planning.
Every optional field accepts an explicit null, as the SDKs send one for unset values."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, StringConstraints

from rill.api.http.wire import MetadataKey, MetadataValue, SpanId, StrictModel, Tags, WireModel

# ---- messages ---------------------------------------------------------------------------------


class ContentPart(WireModel):
    """A content part. Only `text` parts can be rendered for a text model; other known types
    (image_url, input_audio, file, refusal) validate here and are refused in planning by name."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: str
    text: str | None = None


Content = Union[str, list[ContentPart]]


class FunctionCall(WireModel):
    name: str
    arguments: str


class ToolCall(WireModel):
    # other keys are ignored: a call assembled from stream deltas keeps its `index`, and the
    # openai SDK's parse() helper adds `function.parsed_arguments`
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(StrictModel):
    role: Literal["system"]
    content: Content
    name: str | None = None


class DeveloperMessage(StrictModel):
    role: Literal["developer"]
    content: Content
    name: str | None = None


class UserMessage(StrictModel):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantAudio(WireModel):
    """An earlier answer's audio: `{"id"}` (OpenAI's multi-turn audio), or the whole object a
    response carried (`data`, `transcript`, `expires_at` beside the id) sent back as it came."""

    id: str
    transcript: str | None = None
    data: str | None = None
    expires_at: int | None = None


class AssistantMessage(StrictModel):
    """An assistant turn of the history. Every field a chat.completion's message carries is
    accepted, so that a client can send Rill's (or OpenAI's) answer back as it came: the loop
    `messages.append(completion.choices[0].message)`. What the prompt cannot use (`annotations`,
    the SDK's `parsed`) is accepted and not rendered; `reasoning_content` goes to templates that
    render it."""

    role: Literal["assistant"]
    content: Content | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None
    audio: AssistantAudio | None = None
    reasoning_content: str | None = None
    annotations: list[dict[str, Any]] | None = None  # url_citation: where the answer's text came from
    parsed: Any = None  # the openai SDK's parse() helper adds the content's parsed JSON


class ToolMessage(StrictModel):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


class FunctionMessage(StrictModel):
    role: Literal["function"]
    content: str | None
    name: str


Message = Annotated[
    Union[SystemMessage, DeveloperMessage, UserMessage, AssistantMessage, ToolMessage, FunctionMessage],
    Field(discriminator="role"),
]

# ---- options ------------------------------------------------------------------------------------


class StreamOptions(StrictModel):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class JsonSchemaSpec(StrictModel):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


class ResponseFormatText(StrictModel):
    type: Literal["text"]


class ResponseFormatJsonObject(StrictModel):
    type: Literal["json_object"]


class ResponseFormatJsonSchema(StrictModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    Union[ResponseFormatText, ResponseFormatJsonObject, ResponseFormatJsonSchema],
    Field(discriminator="type"),
]


class FunctionDefinition(WireModel):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(WireModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(WireModel):
    name: str


class NamedToolChoice(WireModel):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Union[Literal["none", "auto", "required"], NamedToolChoice]
FunctionCallChoice = Union[Literal["none", "auto"], NamedFunction]


class Prediction(StrictModel):
    type: Literal["content"]
    content: Content


class AudioParams(StrictModel):
    voice: str
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]


class ApproximateLocation(WireModel):
    city: str | None = None
    country: str | None = None
    region: str | None = None
    timezone: str | None = None


class UserLocation(WireModel):
    type: Literal["approximate"]
    approximate: ApproximateLocation


class WebSearchOptions(StrictModel):
    search_context_size: Literal["low", "medium", "high"] | None = None
    user_location: UserLocation | None = None


StopString = Annotated[str, StringConstraints(min_length=1)]

# ---- the request --------------------------------------------------------------------------------


class ChatCompletionRequest(WireModel):
    # Unknown top-level fields are accepted (clients send vendor extras) and logged once.
    model_config = ConfigDict(strict=True, extra="allow")

    messages: Annotated[list[Message], Field(min_length=1)]
    model: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**64 - 1)] | None = None
    stop: StopString | Annotated[list[StopString], Field(max_length=4)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = None
    function_call: FunctionCallChoice | None = None
    prediction: Prediction | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioParams | None = None
    web_search_options: WebSearchOptions | None = None
    store: bool | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)] | None = None
    user: Annotated[str, StringConstraints(max_length=256)] | None = None
    safety_identifier: Annotated[str, StringConstraints(max_length=256)] | None = None
    prompt_cache_key: Annotated[str, StringConstraints(max_length=1024)] | None = None
    tags: Tags | None = None
    parent_span_id: SpanId | None = None


# ---- spans (Opper's CreateSpanRequest / UpdateSpanRequest, plus tags) ----

# ISO 8601 (a zone-less time is UTC) or Unix seconds
