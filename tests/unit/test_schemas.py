"""rill.api.protocols.chat.schemas.ChatCompletionRequest: what the wire contract accepts and rejects."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from rill.api.protocols.chat.schemas import ChatCompletionRequest

MESSAGES = [{"role": "user", "content": "hi"}]
JSON_SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}

# Every request field of the contract table (and the schema's other fields) must exist.
CONTRACT_FIELDS = [
    "messages", "model", "stream", "stream_options", "max_completion_tokens", "max_tokens", "temperature",
    "top_p", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "n", "seed",
    "stop", "response_format", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
    "prediction", "service_tier", "reasoning_effort", "modalities", "audio", "web_search_options", "store",
    "metadata", "user", "tags", "parent_span_id",
]


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": MESSAGES, **fields})


VALID: list[tuple[str, Any]] = [
    ("model", "fake-echo"),
    ("stream", True),
    ("stream", False),
    ("stream_options", {"include_usage": True}),
    ("stream_options", {"include_usage": False, "include_obfuscation": False}),
    ("stream_options", {}),
    ("max_tokens", 1),
    ("max_tokens", 100_000),
    ("max_completion_tokens", 1),
    ("temperature", 0),
    ("temperature", 0.7),
    ("temperature", 2),
    ("top_p", 1e-9),
    ("top_p", 1),
    ("frequency_penalty", -2),
    ("frequency_penalty", 2),
    ("presence_penalty", -2),
    ("presence_penalty", 0.5),
    ("logit_bias", {"50256": -100, "1": 100, "2": 0.5}),
    ("logit_bias", {}),
    ("logprobs", True),
    ("top_logprobs", 0),
    ("top_logprobs", 20),
    ("n", 1),
    ("n", 16),
    ("seed", 0),
    ("seed", -(2**63)),
    ("seed", 2**64 - 1),
    ("stop", "\n"),
    ("stop", ["a"]),
    ("stop", ["a", "ab", "</s>", "ß€😀"]),
    ("response_format", {"type": "text"}),
    ("response_format", {"type": "json_object"}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "Answer_v-1"}}),
    ("response_format", {"type": "json_schema",
                         "json_schema": {"name": "a" * 64, "description": "d", "schema": JSON_SCHEMA, "strict": True}}),
    ("tools", [TOOL]),
    ("tool_choice", "none"),
    ("tool_choice", "auto"),
    ("tool_choice", "required"),
    ("tool_choice", {"type": "function", "function": {"name": "get_weather"}}),
    ("parallel_tool_calls", False),
    ("functions", [{"name": "f", "parameters": {}}]),
    ("function_call", "auto"),
    ("function_call", {"name": "f"}),
    ("prediction", {"type": "content", "content": "draft"}),
    ("prediction", {"type": "content", "content": [{"type": "text", "text": "draft"}]}),
    *[("service_tier", t) for t in ("auto", "default", "flex", "scale", "priority")],
    *[("reasoning_effort", e) for e in ("none", "minimal", "low", "medium", "high")],
    ("modalities", ["text"]),
    ("modalities", ["text", "audio"]),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("audio", {"voice": "x", "format": "pcm16"}),
    ("web_search_options", {}),
    ("web_search_options", {"search_context_size": "low",
                            "user_location": {"type": "approximate", "approximate": {"city": "Oslo"}}}),
    ("store", True),
    ("metadata", {f"k{i}": "v" for i in range(16)}),
    ("metadata", {"k" * 64: "v" * 512}),
    ("user", "u" * 256),
    ("tags", {"team": "search", "n": 3}),
    ("parent_span_id", "span_123"),
]

INVALID: list[tuple[str, Any]] = [
    ("stream_options", {"include_usage": True, "unknown": 1}),
    ("max_tokens", 0),
    ("max_tokens", -1),
    ("max_tokens", 1.5),
    ("max_completion_tokens", 0),
    ("temperature", -0.01),
    ("temperature", 2.01),
    ("temperature", float("nan")),
    ("temperature", float("inf")),
    ("top_p", 0),
    ("top_p", 1.01),
    ("top_p", -0.5),
    ("frequency_penalty", -2.01),
    ("frequency_penalty", 2.01),
    ("presence_penalty", -3),
    ("presence_penalty", 2.5),
    ("logit_bias", {"1": 100.5}),
    ("logit_bias", {"1": -101}),
    ("logit_bias", {"1": "ban"}),
    ("top_logprobs", -1),
    ("top_logprobs", 21),
    ("n", 0),
    ("n", -3),
    ("seed", 2**64),
    ("seed", -(2**63) - 1),
    ("stop", ""),
    ("stop", ["a", ""]),
    ("stop", ["a", "b", "c", "d", "e"]),
    ("stop", 5),
    ("stop", {"a": 1}),
    ("response_format", {"type": "xml"}),
    ("response_format", {"type": "json_schema"}),
    ("response_format", {"type": "json_schema", "json_schema": {"schema": JSON_SCHEMA}}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "has space"}}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": ""}}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "a" * 65}}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "n\u00e9"}}),
    ("response_format", {"type": "json_object", "json_schema": {"name": "x"}}),
    ("tools", [{"type": "function", "function": {"name": "bad name"}}]),
    ("tools", [{"type": "retrieval"}]),
    ("tool_choice", "sometimes"),
    ("tool_choice", {"type": "function"}),
    ("function_call", "required"),
    ("prediction", {"type": "draft", "content": "x"}),
    ("service_tier", "fast"),
    ("service_tier", "Priority"),
    ("reasoning_effort", "max"),
    ("modalities", ["video"]),
    ("modalities", "text"),
    ("audio", {"voice": "alloy"}),
    ("audio", {"voice": "alloy", "format": "ogg"}),
    ("web_search_options", {"search_context_size": "huge"}),
    ("metadata", {f"k{i}": "v" for i in range(17)}),
    ("metadata", {"k" * 65: "v"}),
    ("metadata", {"k": "v" * 513}),
    ("metadata", {"k": 1}),
    ("user", "u" * 257),
    ("tags", ["not", "an", "object"]),
]


@pytest.mark.parametrize(("field", "value"), VALID)
def test_valid_value_is_accepted(field, value):
    assert getattr(request(**{field: value}), field) is not None


@pytest.mark.parametrize(("field", "value"), INVALID)
def test_out_of_bounds_value_is_rejected_naming_the_field(field, value):
    with pytest.raises(ValidationError) as info:
        request(**{field: value})
    assert all(err["loc"][0] == field for err in info.value.errors())


def test_every_contract_field_is_part_of_the_schema():
    assert set(CONTRACT_FIELDS) <= set(ChatCompletionRequest.model_fields)


def test_max_tokens_fields_keep_their_values():
    body = request(max_tokens=10, max_completion_tokens=5)
    assert (body.max_tokens, body.max_completion_tokens) == (10, 5)


@pytest.mark.parametrize("field", [f for f in ChatCompletionRequest.model_fields if f != "messages"])
def test_explicit_null_is_accepted_for_every_optional_field(field):
    body = request(**{field: None})
    assert getattr(body, field) is None
    assert field in body.model_fields_set


def test_unknown_top_level_fields_are_kept_as_extras():
    body = request(vendor_extra={"a": 1}, x_trace=True)
    assert body.model_extra == {"vendor_extra": {"a": 1}, "x_trace": True}


# ---- messages ------------------------------------------------------------------------------------

VALID_MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "s"},
    {"role": "system", "content": "s", "name": "boss"},
    {"role": "developer", "content": "d"},
    {"role": "user", "content": "u", "name": "ann"},
    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]},
    {"role": "user", "content": ""},
    {"role": "assistant", "content": "a"},
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
    {"role": "assistant", "content": None, "refusal": "no"},
    {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    {"role": "tool", "content": [{"type": "text", "text": "42"}], "tool_call_id": "call_1"},
    {"role": "function", "content": "42", "name": "f"},
    {"role": "function", "content": None, "name": "f"},
]

INVALID_MESSAGES: list[dict[str, Any]] = [
    {"role": "tool", "content": "42"},  # tool needs tool_call_id
    {"role": "function", "content": "42"},  # function needs name
    {"role": "user"},
    {"role": "user", "content": None},
    {"role": "system", "content": None},
    {"role": "user", "content": 5},
    {"role": "user", "content": [{"text": "no type"}]},
    {"role": "user", "content": "u", "tool_call_id": "x"},  # fields of other roles are refused
    {"role": "system", "content": "s", "tool_calls": []},
    {"role": "wizard", "content": "x"},
    {"content": "no role"},
    {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}]},
    "just a string",
]


@pytest.mark.parametrize("message", VALID_MESSAGES)
def test_valid_message_is_accepted(message):
    body = ChatCompletionRequest.model_validate({"messages": [message]})
    assert body.messages[0].role == message["role"]


@pytest.mark.parametrize("message", INVALID_MESSAGES)
def test_invalid_message_is_rejected(message):
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({"messages": [message]})
    assert all(err["loc"][:2] == ("messages", 0) for err in info.value.errors())


@pytest.mark.parametrize("body", [{}, {"messages": []}, {"messages": None}, {"messages": "hi"}])
def test_messages_are_required_and_non_empty(body):
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate(body)
    assert info.value.errors()[0]["loc"][0] == "messages"


def test_json_schema_spec_reads_the_schema_alias():
    body = request(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": JSON_SCHEMA}})
    assert body.response_format.json_schema.schema_ == JSON_SCHEMA
