"""Pydantic models of the wire format: the chat-completion request (the union of the OpenAI request,
Opper's `ChatCompletionStreaming` and Atoma's `CreateChatCompletionStreamRequest`) and the error
body. Validation only; whether a valid field is *built* is decided in `api/plan.py`.
Every optional field accepts an explicit null, as the SDKs send one for unset values."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# ---- messages ---------------------------------------------------------------------------------


class _Wire(BaseModel):
    # Strict types: `"stream": "yes"` or `"max_tokens": "5"` is a 400, as on OpenAI, not a guess.
    model_config = ConfigDict(strict=True)


class _Strict(_Wire):
    model_config = ConfigDict(strict=True, extra="forbid")


class ContentPart(_Wire):
    """A content part. Only `text` parts can be rendered for a text model; other known types
    (image_url, input_audio, file, refusal) validate here and are refused in planning by name."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: str
    text: str | None = None


Content = Union[str, list[ContentPart]]


class FunctionCall(_Wire):
    name: str
    arguments: str


class ToolCall(_Wire):
    # other keys are ignored: a call assembled from stream deltas keeps its `index`, and the
    # openai SDK's parse() helper adds `function.parsed_arguments`
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Strict):
    role: Literal["system"]
    content: Content
    name: str | None = None


class DeveloperMessage(_Strict):
    role: Literal["developer"]
    content: Content
    name: str | None = None


class UserMessage(_Strict):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantAudio(_Wire):
    """An earlier answer's audio: `{"id"}` (OpenAI's multi-turn audio), or the whole object a
    response carried (`data`, `transcript`, `expires_at` beside the id) sent back as it came."""

    id: str
    transcript: str | None = None
    data: str | None = None
    expires_at: int | None = None


class AssistantMessage(_Strict):
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


class ToolMessage(_Strict):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


class FunctionMessage(_Strict):
    role: Literal["function"]
    content: str | None
    name: str


Message = Annotated[
    Union[SystemMessage, DeveloperMessage, UserMessage, AssistantMessage, ToolMessage, FunctionMessage],
    Field(discriminator="role"),
]

# ---- options ------------------------------------------------------------------------------------


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class JsonSchemaSpec(_Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


class ResponseFormatText(_Strict):
    type: Literal["text"]


class ResponseFormatJsonObject(_Strict):
    type: Literal["json_object"]


class ResponseFormatJsonSchema(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    Union[ResponseFormatText, ResponseFormatJsonObject, ResponseFormatJsonSchema],
    Field(discriminator="type"),
]


class FunctionDefinition(_Wire):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Wire):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Wire):
    name: str


class NamedToolChoice(_Wire):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Union[Literal["none", "auto", "required"], NamedToolChoice]
FunctionCallChoice = Union[Literal["none", "auto"], NamedFunction]


class Prediction(_Strict):
    type: Literal["content"]
    content: Content


class AudioParams(_Strict):
    voice: str
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]


class ApproximateLocation(_Wire):
    city: str | None = None
    country: str | None = None
    region: str | None = None
    timezone: str | None = None


class UserLocation(_Wire):
    type: Literal["approximate"]
    approximate: ApproximateLocation


class WebSearchOptions(_Strict):
    search_context_size: Literal["low", "medium", "high"] | None = None
    user_location: UserLocation | None = None


MetadataKey = Annotated[str, StringConstraints(max_length=64)]
# Opper's tags: any JSON values; keys are filterable names
Tags = Annotated[dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], Any], Field(max_length=64)]
SpanId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
StopString = Annotated[str, StringConstraints(min_length=1)]

# ---- the request --------------------------------------------------------------------------------


class ChatCompletionRequest(_Wire):
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
SpanTime = Annotated[datetime.datetime, Field(strict=False)]
SpanName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
SpanType = Annotated[str, StringConstraints(max_length=64)]


class _SpanFields(_Strict):
    """What a span carries besides its name and place in a trace (Opper's span fields + tags)."""

    type: SpanType | None = None
    start_time: SpanTime | None = None
    end_time: SpanTime | None = None
    input: Any = None
    output: Any = None
    error: str | None = None
    meta: dict[str, Any] | None = None
    score: int | None = None
    tags: Tags | None = None


class CreateSpan(_SpanFields):
    """POST /v1/spans: open (or record) a span. With `parent_id` it joins the parent's trace;
    without, it starts a trace (`trace_id` names it, or one is made)."""

    name: SpanName
    id: SpanId | None = None
    trace_id: SpanId | None = None
    parent_id: SpanId | None = None


class UpdateSpan(_SpanFields):
    """PATCH /v1/spans/{id}: the fields sent are changed (null clears one); e.g. `end_time`
    and `output` to close a workflow span, `error` to mark it failed."""

    name: SpanName | None = None


# ---- responses (for the OpenAPI document; responses are built as dicts and sent with orjson) ----


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class TokenizeRequest(_Strict):
    """Exactly one of `content` (plain text: special-token text stays text) or `messages` (the
    prompt a chat request with these messages, and `tools`, would send the model, chat template
    included)."""

    model: str | None = None
    content: str | None = None
    messages: Annotated[list[Message], Field(min_length=1)] | None = None
    tools: list[Tool] | None = None


class LlamaServerTokenizeRequest(_Strict):
    """POST /tokenize as llama.cpp's llama-server takes it (told apart from Rill's own by
    `add_special`, `parse_special` or `with_pieces`); answered as llama-server answers."""

    model: str | None = None
    content: str
    add_special: bool = False  # BOS first, where the model has one
    parse_special: bool = True  # control-token text becomes the control token
    with_pieces: bool = False  # [{id, piece}] rather than [id]


class VllmTokenizeRequest(_Strict):
    """POST /tokenize as vLLM takes a text (told apart by `prompt`); answered as vLLM answers."""

    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class VllmChatTokenizeRequest(_Strict):
    """POST /tokenize as vLLM takes a chat (`messages` with one of vLLM's own fields)."""

    model: str | None = None
    messages: Annotated[list[Message], Field(min_length=1)]
    tools: list[Tool] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    return_token_strs: bool | None = False
    # accepted only as "not used": Rill renders every chat with the model's own template
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None


class DetokenizeRequest(_Strict):
    """Rill's, llama-server's ({tokens}) and vLLM's ({model, tokens}) shape alike."""

    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0)]]


class UpdateStoredCompletion(_Strict):
    """POST /v1/chat/completions/{id}: the new metadata (null clears it)."""

    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)] | None
