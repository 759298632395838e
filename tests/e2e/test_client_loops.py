"""What real client code does with Rill's answers, on the real model through the official openai
client: the documented tool loop that appends the response message to the history as it came,
the SDK's stream and parse helpers whose results go back the same way, and tool schemas as
LangChain's `bind_tools` and hand-written tools send them (no `additionalProperties`)."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from tests.e2e.support import MODEL

pytestmark = [pytest.mark.e2e]

# LangChain's convert_to_openai_tool for a function `get_weather(city: str)` with a docstring:
# property descriptions, `required`, no `additionalProperties`.
LANGCHAIN_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a given city.",
    "parameters": {"properties": {"city": {"description": "The city, e.g. Paris", "type": "string"}},
                   "required": ["city"], "type": "object"}}}
# The openai SDK's README tool: a plain JSON schema, also without additionalProperties.
PLAIN_TOOL = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]


@pytest.mark.parametrize("tool", [LANGCHAIN_TOOL, PLAIN_TOOL], ids=["langchain", "openai"])
@pytest.mark.parametrize("choice", ["required", NAMED], ids=["required", "named"])
def test_forced_tools_without_additional_properties_end_in_calls(client: openai.OpenAI, tool, choice) -> None:
    """A schema that says nothing of other keys gets none: SmolLM2 given the freedom wrote extra
    keys (`description`, `temperature`, ...) until it happened to stop or hit max_tokens."""
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[tool], tool_choice=choice,
                                       temperature=0, max_tokens=300)
    choice_out = r.choices[0]
    assert choice_out.finish_reason == "tool_calls", choice_out
    properties = tool["function"]["parameters"]["properties"]
    for call in choice_out.message.tool_calls:
        arguments = json.loads(call.function.arguments)
        assert set(arguments) <= set(properties), arguments
        assert "city" in arguments


def test_the_tool_loop_sends_the_response_message_back_as_it_came(client: openai.OpenAI) -> None:
    """The openai SDK's documented loop: `messages.append(completion.choices[0].message)`, the
    tool's result, and the next turn (Rill's message carries `annotations: []` and `refusal`)."""
    messages: list = list(ASK)
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=[PLAIN_TOOL], tool_choice="required",
                                           temperature=0, max_tokens=60)
    message = first.choices[0].message
    messages.append(message)  # the pydantic object itself, as the SDK's examples do
    for call in message.tool_calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 18})})
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[PLAIN_TOOL], temperature=0,
                                            max_tokens=30)
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")
    messages.append(second.choices[0].message)
    messages.append({"role": "user", "content": "Thanks."})
    third = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=10)
    assert third.choices[0].message.content


def test_the_stream_helpers_final_message_goes_back_too(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model=MODEL, messages=ASK, tools=[PLAIN_TOOL], tool_choice="required",
                                        parallel_tool_calls=False, temperature=0, max_tokens=100) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.tool_calls  # assembled from the stream's fragments
    messages = [*ASK, message, *({"role": "tool", "tool_call_id": c.id, "content": "18 C"} for c in message.tool_calls)]
    r = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=10)
    assert r.choices[0].finish_reason in ("stop", "length")


class City(BaseModel):
    name: str
    country: str


def test_a_parsed_answer_goes_back_with_its_parsed_field(client: openai.OpenAI) -> None:
    """chat.completions.parse adds `parsed` to the message (and `parsed_arguments` to calls)."""
    parsed = client.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": "Name a city."}],
                                           response_format=City, temperature=0, max_tokens=60)
    message = parsed.choices[0].message
    assert isinstance(message.parsed, City)
    # the SDK cannot send the parsed message object itself (its generic `parsed` fails to
    # serialise): a client sends its dump
    sent_back = message.model_dump(mode="json", warnings=False)
    assert sent_back["parsed"] == message.parsed.model_dump()
    r = client.chat.completions.create(model=MODEL, messages=[
        {"role": "user", "content": "Name a city."}, sent_back, {"role": "user", "content": "Another one."}],
        temperature=0, max_tokens=10)
    assert r.choices[0].message.content
