"""The Responses API end to end on the real SmolLM2 model, with the official clients: the `openai`
SDK's `responses.create`, `responses.stream`, `responses.parse` (a pydantic model), a forced
function tool round trip with `function_call_output`, `previous_response_id`, retrieve, input
items and delete, a forced custom tool with Codex's apply_patch Lark grammar; and `openai-agents`
with its default Responses model and a function tool."""

from __future__ import annotations

import json
from typing import Any, Literal

import openai
import pytest
from pydantic import BaseModel, Field

from rill.backends.fake import FakeBackend
from rill.sampling.grammar import Grammars
from tests.e2e.support import CLIENT_TIMEOUT_S, MODEL
from tests.unit.test_responses_custom_tools import APPLY_PATCH

pytestmark = [pytest.mark.e2e]

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "London"]},
                                                           "unit": {"type": "string", "enum": ["c", "f"]}},
                          "required": ["city", "unit"], "additionalProperties": False}}


def create(client: openai.OpenAI, **kw: Any):
    kw.setdefault("max_output_tokens", 24)
    kw.setdefault("temperature", 0)
    return client.responses.create(model=MODEL, **kw)


def test_create(client: openai.OpenAI) -> None:
    r = create(client, input="What is the capital of France?", instructions="Answer in one sentence.")
    assert r.object == "response" and r.id.startswith("resp_") and r.model == MODEL
    assert r.status in ("completed", "incomplete") and r.output_text.strip()
    assert r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.usage.input_tokens > 10 and 0 < r.usage.output_tokens <= 24
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.instructions == "Answer in one sentence." and r.store is True


def test_stream(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Say hello.", max_output_tokens=16, temperature=0) as stream:
        events = list(stream)
    final = events[-1].response  # get_final_response() wants response.completed, not incomplete
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and text == final.output_text
    assert "response.output_item.done" in kinds and final.usage.output_tokens > 0
    # the streamed response is the stored one
    assert client.responses.retrieve(final.id).output_text == text


def test_the_token_cap_is_incomplete(client: openai.OpenAI) -> None:
    r = create(client, input="Tell me a long story about a dragon.", max_output_tokens=5)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 5


class City(BaseModel):
    name: str = Field(max_length=24)
    country: Literal["France", "Germany", "Italy"]
    capital: bool


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    r = client.responses.parse(model=MODEL, input="Describe Paris as JSON.", text_format=City,
                               max_output_tokens=80, temperature=0)
    assert isinstance(r.output_parsed, City)
    assert City.model_validate_json(r.output_text) == r.output_parsed


def test_a_forced_function_tool_round_trip(client: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = create(client, input=question, tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"},
                   max_output_tokens=64)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    arguments = json.loads(call.arguments)
    assert arguments["city"] in ("Paris", "London") and arguments["unit"] in ("c", "f")
    # the whole history sent back, as a stateless client does
    second = create(client, input=[*question, call.model_dump(exclude_none=True),
                                   {"type": "function_call_output", "call_id": call.call_id,
                                    "output": json.dumps({"temperature": 21, "unit": arguments["unit"]})}],
                    tools=[WEATHER], max_output_tokens=32)
    assert second.status in ("completed", "incomplete") and second.output
    # or only the output, continuing the stored response
    third = create(client, previous_response_id=first.id, tools=[WEATHER], max_output_tokens=32,
                   input=[{"type": "function_call_output", "call_id": call.call_id, "output": "21 degrees"}])
    assert third.previous_response_id == first.id and third.output
    assert third.usage.input_tokens > first.usage.input_tokens


def test_previous_response_id_retrieve_input_items_and_delete(client: openai.OpenAI) -> None:
    first = create(client, input="My name is Ada.", max_output_tokens=12)
    second = create(client, input="What is my name?", previous_response_id=first.id, max_output_tokens=12)
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert client.responses.retrieve(second.id).model_dump() == second.model_dump()
    items = client.responses.input_items.list(second.id)
    assert [i.content[0].text for i in items.data] == ["What is my name?"]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):  # its continuation lost its history
        create(client, input="And now?", previous_response_id=second.id)
    unkept = create(client, input="Hi.", store=False, max_output_tokens=4)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)


def test_errors_are_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        create(client, input="x" * 40_000)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "input"
    with pytest.raises(openai.BadRequestError) as caught:
        create(client, input="hi", tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
    assert caught.value.param == "tools[0].type"


def test_a_forced_custom_tool_with_codex_s_lark_grammar(client: openai.OpenAI) -> None:
    patcher = {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch.",
               "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH}}
    with client.responses.stream(model=MODEL, input="Create the file hello.txt with the line Hello.",
                                 tools=[patcher], tool_choice={"type": "custom", "name": "apply_patch"},
                                 max_output_tokens=400, temperature=0) as stream:
        events = list(stream)
    final = events[-1].response
    assert final.status == "completed", final
    [call] = final.output
    assert call.type == "custom_tool_call" and call.name == "apply_patch"
    assert "".join(e.delta for e in events if e.type == "response.custom_tool_call_input.delta") == call.input
    matcher = Grammars(FakeBackend().guidance_tokenizer(), 258).lark(APPLY_PATCH).constraint()._matcher
    assert all(matcher.consume_token(b) for b in call.input.encode()) and matcher.is_accepting(), call.input


async def test_openai_agents_with_its_default_responses_model_and_a_function_tool(root: str) -> None:
    agents = pytest.importorskip("agents")
    from agents import Agent, ModelSettings, Runner, function_tool, set_tracing_disabled

    client = openai.AsyncOpenAI(base_url=root + "/v1", api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT_S)
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_default_openai_api("responses")
    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_weather(city: Literal["Paris", "London"]) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"Sunny in {city}."

    try:
        agent = Agent(name="Weather", instructions="Use the tool to answer.", model=MODEL, tools=[get_weather],
                      model_settings=ModelSettings(tool_choice="required", parallel_tool_calls=False,
                                                   max_tokens=96, temperature=0),
                      tool_use_behavior="stop_on_first_tool")
        result = await Runner.run(agent, "What is the weather in Paris?")
        assert calls and result.final_output == f"Sunny in {calls[0]}."
        assert type(result.raw_responses[0]).__name__ == "ModelResponse"
        # room to finish: an incomplete answer is an error to the Agents SDK
        chat = Agent(name="Chat", instructions="Answer briefly.", model=MODEL,
                     model_settings=ModelSettings(max_tokens=200, temperature=0))
        answered = await Runner.run(chat, "Say hello.")
        assert isinstance(answered.final_output, str) and answered.final_output.strip()
    finally:
        await client.close()
