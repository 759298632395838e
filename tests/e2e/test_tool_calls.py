"""Tool calls on the real model through the official openai client: streamed fragments exactly as
OpenAI sends them, arguments that always parse and validate, each tool_choice, legacy functions,
and a conversation that goes on after tool results.

SmolLM2-135M was not trained on tool use: left alone under `auto` it answers in text. To see it
choose a call under `auto`, a test nudges the first token of the call tag with `logit_bias`;
the grammar then allows only a well-formed call, as it would for a model that chose one itself."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from hypothesis import HealthCheck, given, settings

from tests.e2e.schemas import object_schemas
from tests.e2e.support import MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 30}},
        "required": ["timezone"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
                                            "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "description": "Get the current time in a timezone",
                                            "parameters": TIME}}]
PARAMS = {"get_weather": WEATHER, "get_time": TIME}
ASK_WEATHER = [{"role": "user", "content": "What's the weather like in Paris?"}]
ASK_JOKE = [{"role": "user", "content": "Tell me a joke."}]


def collect_stream(stream: Any) -> tuple[str, dict[int, dict[str, str]], list[str]]:
    """(content, calls by index, finish reasons) of a streamed completion, checking every tool-call
    fragment against OpenAI's rules on the way."""
    content, calls, reasons = "", {}, []
    for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            for frag in delta.tool_calls or []:
                if frag.index not in calls:  # the first fragment: id, type, name, empty arguments
                    assert frag.id.startswith("call_") and frag.type == "function"
                    assert frag.function.name in PARAMS and frag.function.arguments == ""
                    calls[frag.index] = {"name": frag.function.name, "arguments": ""}
                else:  # then arguments only
                    assert frag.id is None and frag.type is None and frag.function.name is None
                    calls[frag.index]["arguments"] += frag.function.arguments
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    return content, calls, reasons


def assert_valid(call: dict[str, str]) -> None:
    jsonschema.validate(json.loads(call["arguments"]), PARAMS[call["name"]])


@pytest.fixture(scope="module")
def call_tag_bias(root: str) -> dict[str, int]:
    """A nudge towards the first token of `<tool_call>` (see the module docstring)."""
    first = httpx.post(root + "/tokenize", json={"content": "<tool_call>"}).json()["tokens"][0]["id"]
    return {str(first): 5}


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_time"}}, "auto"],
                         ids=["required", "named", "auto"])
def test_streamed_calls_come_in_openai_fragments(client: openai.OpenAI, call_tag_bias: dict[str, int],
                                                 tool_choice: Any) -> None:
    extra = {"logit_bias": call_tag_bias} if tool_choice == "auto" else {}
    stream = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=TOOLS, tool_choice=tool_choice,
                                            parallel_tool_calls=False, temperature=0, max_tokens=200, stream=True,
                                            **extra)
    content, calls, reasons = collect_stream(stream)
    assert content == "" and reasons == ["tool_calls"] and list(calls) == [0]
    assert_valid(calls[0])
    if isinstance(tool_choice, dict):
        assert calls[0]["name"] == "get_time"


def test_parallel_calls_each_validate(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=TOOLS, tool_choice="required",
                                            temperature=0, max_tokens=300, stream=True)
    _, calls, reasons = collect_stream(stream)
    assert reasons == ["tool_calls"] and len(calls) >= 2  # SmolLM2 calls both tools here
    for call in calls.values():
        assert_valid(call)


@pytest.mark.parametrize("tool_choice", ["auto", "none"])
def test_an_answer_in_text_carries_no_markup(client: openai.OpenAI, tool_choice: str) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=ASK_JOKE, tools=TOOLS, tool_choice=tool_choice,
                                            temperature=0, max_tokens=60, stream=True)
    content, calls, reasons = collect_stream(stream)
    assert content and not calls and "<tool_call>" not in content and reasons[0] in ("stop", "length")


def test_none_keeps_a_nudged_model_from_calling(client: openai.OpenAI, call_tag_bias: dict[str, int]) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=TOOLS, tool_choice="none",
                                       logit_bias=call_tag_bias, temperature=0, max_tokens=60)
    message = r.choices[0].message
    assert message.tool_calls is None and "<tool_call>" not in message.content


def test_non_streamed_tool_calls(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, temperature=0, max_tokens=200)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert_valid({"name": call.function.name, "arguments": call.function.arguments})


def test_legacy_functions_stream_function_call(client: openai.OpenAI) -> None:
    functions = [t["function"] for t in TOOLS]
    stream = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, functions=functions,
                                            function_call={"name": "get_weather"}, temperature=0, max_tokens=200,
                                            stream=True)
    frags, reasons = [], []
    for chunk in stream:
        for choice in chunk.choices:
            assert choice.delta.tool_calls is None and not choice.delta.content
            if choice.delta.function_call:
                frags.append(choice.delta.function_call)
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    assert frags[0].name == "get_weather" and frags[0].arguments == ""
    assert all(f.name is None for f in frags[1:])
    assert_valid({"name": "get_weather", "arguments": "".join(f.arguments for f in frags)})
    assert reasons == ["function_call"]


def test_seeded_calls_repeat_and_each_choice_has_its_own(client: openai.OpenAI) -> None:
    def calls() -> list[list[tuple[str, str]]]:
        r = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=TOOLS, tool_choice="required",
                                           n=2, temperature=1.0, seed=11, max_tokens=300)
        assert [c.finish_reason for c in r.choices] == ["tool_calls"] * 2
        return [[(t.function.name, t.function.arguments) for t in c.message.tool_calls] for c in r.choices]

    first = calls()
    assert calls() == first
    for choice in first:
        for name, arguments in choice:
            assert_valid({"name": name, "arguments": arguments})


def test_the_model_answers_from_tool_results(client: openai.OpenAI) -> None:
    messages = [*ASK_WEATHER,
                {"role": "assistant", "content": None, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21, "conditions": "sunny"}'}]
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, temperature=0, max_tokens=60)
    choice = r.choices[0]
    # a 135M model answers by quoting the result rather than in prose, but the number is the tool's
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None and "21" in choice.message.content


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(parameters=object_schemas)
def test_arguments_validate_for_generated_parameter_schemas(client: openai.OpenAI, parameters: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "record", "description": "Record the details",
                                                "parameters": parameters}}]
    r = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=tools, tool_choice="required",
                                       parallel_tool_calls=False, temperature=0.7, seed=1, max_tokens=400)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    jsonschema.validate(json.loads(choice.message.tool_calls[0].function.arguments), parameters)
