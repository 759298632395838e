"""Tools on the fake model. Its logits know nothing of tools: greedy decoding echoes the last user
message, so a user message that is call markup makes it "decide" to call, and under `required`
every valid call is the grammar's doing."""

from __future__ import annotations

import json

import jsonschema
import pytest

from rill.sampling.tool_format import call_text
from tests.api.conftest import CHAT_URL, PANICS, assert_error, chat, chunks_of, parse_sse

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "days"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"zone": {"enum": ["utc", "cet"]}}, "required": ["zone"],
        "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
                                            "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": TIME}}]
PARAMS = {"get_weather": WEATHER, "get_time": TIME}
FUNCTIONS = [t["function"] for t in TOOLS]
PARIS = call_text("get_weather", {"city": "Paris", "days": 2})
UTC = call_text("get_time", {"zone": "utc"})


def calls_of(events: list) -> dict[int, dict]:
    """The streamed calls, by index, checked against OpenAI's fragment rules."""
    calls: dict[int, dict] = {}
    for chunk in chunks_of(events):
        for choice in chunk["choices"]:
            for frag in choice["delta"].get("tool_calls") or []:
                assert "content" not in choice["delta"] and choice["logprobs"] is None
                if frag["index"] not in calls:
                    assert frag["id"].startswith("call_") and frag["type"] == "function"
                    assert frag["function"]["arguments"] == "" and frag["function"]["name"]
                    calls[frag["index"]] = {"id": frag["id"], "name": frag["function"]["name"], "arguments": ""}
                else:
                    assert set(frag) == {"index", "function"} and set(frag["function"]) == {"arguments"}
                    calls[frag["index"]]["arguments"] += frag["function"]["arguments"]
    return calls


def finish_reasons(events: list) -> list[str]:
    return [c["finish_reason"] for chunk in chunks_of(events) for c in chunk["choices"] if c["finish_reason"]]


def content_of(events: list) -> str:
    return "".join(c["delta"].get("content") or "" for chunk in chunks_of(events) for c in chunk["choices"])


def assert_valid(call: dict) -> None:
    jsonschema.validate(json.loads(call["arguments"]), PARAMS[call["name"]])


@pytest.mark.parametrize("seed", range(3))
async def test_required_streams_a_valid_call_whatever_the_model_wanted(client, seed):
    r = await client.post(CHAT_URL, json=chat("just chatting", stream=True, temperature=1.0, seed=seed,
                                              max_tokens=300, tools=TOOLS, tool_choice="required"))
    events = parse_sse(r.text)
    calls = calls_of(events)
    assert calls and finish_reasons(events) == ["tool_calls"]
    for call in calls.values():
        assert_valid(call)
    assert content_of(events) == ""


async def test_required_without_streaming_gives_the_message_with_tool_calls(client):
    r = await client.post(CHAT_URL, json=chat("hi", temperature=0, max_tokens=300, tools=TOOLS,
                                              tool_choice="required", parallel_tool_calls=False))
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and len(message["tool_calls"]) == 1
    call = message["tool_calls"][0]
    assert call["id"].startswith("call_") and call["type"] == "function" and set(call) == {"id", "type", "function"}
    assert_valid(call["function"])


async def test_a_named_tool_is_the_one_called(client):
    r = await client.post(CHAT_URL, json=chat(PARIS, stream=True, temperature=0, max_tokens=300, tools=TOOLS,
                                              tool_choice={"type": "function", "function": {"name": "get_time"}}))
    calls = calls_of(parse_sse(r.text))
    assert [c["name"] for c in calls.values()] == ["get_time"]
    assert_valid(calls[0])


async def test_auto_lets_the_model_call(client):
    r = await client.post(CHAT_URL, json=chat(PARIS, stream=True, temperature=0, max_tokens=300, tools=TOOLS))
    events = parse_sse(r.text)
    calls = calls_of(events)
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == \
        [("get_weather", {"city": "Paris", "days": 2})]
    assert finish_reasons(events) == ["tool_calls"] and content_of(events) == ""


async def test_auto_lets_the_model_answer(client):
    r = await client.post(CHAT_URL, json=chat("no tools needed", temperature=0, tools=TOOLS, tool_choice="auto"))
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "no tools needed" and "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"


async def test_text_before_a_call_is_content(client):
    r = await client.post(CHAT_URL, json=chat("Let me look.\n" + PARIS, temperature=0, tools=TOOLS))
    message = r.json()["choices"][0]["message"]
    assert message["content"] == "Let me look." and message["tool_calls"][0]["function"]["name"] == "get_weather"


async def test_parallel_calls_and_parallel_tool_calls_false(client):
    both = PARIS + "\n" + UTC
    r = await client.post(CHAT_URL, json=chat(both, temperature=0, tools=TOOLS))
    assert [c["function"]["name"] for c in r.json()["choices"][0]["message"]["tool_calls"]] == ["get_weather", "get_time"]
    ids = [c["id"] for c in r.json()["choices"][0]["message"]["tool_calls"]]
    assert len(set(ids)) == 2
    r = await client.post(CHAT_URL, json=chat(both, temperature=0, tools=TOOLS, parallel_tool_calls=False))
    choice = r.json()["choices"][0]
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["get_weather"]
    assert choice["finish_reason"] == "tool_calls"


async def test_none_never_calls_and_no_markup_reaches_the_content(client):
    for stream in (False, True):
        r = await client.post(CHAT_URL, json=chat(PARIS, stream=stream, temperature=0, max_tokens=100,
                                                  tools=TOOLS, tool_choice="none"))
        if stream:
            events = parse_sse(r.text)
            assert not calls_of(events)
            content, reasons = content_of(events), finish_reasons(events)
        else:
            choice = r.json()["choices"][0]
            assert "tool_calls" not in choice["message"]
            content, reasons = choice["message"]["content"], [choice["finish_reason"]]
        assert "<tool_call>" not in content and reasons[0] in ("stop", "length")


async def test_arguments_that_do_not_match_the_parameters_cannot_be_written(client):
    bad = call_text("get_weather", {"city": "Paris", "days": 99})  # days > 7
    r = await client.post(CHAT_URL, json=chat(bad, temperature=0, max_tokens=300, tools=TOOLS))
    message = r.json()["choices"][0]["message"]
    for call in message.get("tool_calls", []):
        assert_valid(call["function"])


async def test_legacy_functions_stream_function_call(client):
    r = await client.post(CHAT_URL, json=chat(PARIS, stream=True, temperature=0, functions=FUNCTIONS))
    events = parse_sse(r.text)
    frags = [c["delta"]["function_call"] for chunk in chunks_of(events) for c in chunk["choices"]
             if c["delta"].get("function_call")]
    assert frags[0] == {"name": "get_weather", "arguments": ""}
    assert all(set(f) == {"arguments"} for f in frags[1:])
    assert json.loads("".join(f["arguments"] for f in frags)) == {"city": "Paris", "days": 2}
    assert finish_reasons(events) == ["function_call"]
    assert all("tool_calls" not in c["delta"] for chunk in chunks_of(events) for c in chunk["choices"])


async def test_legacy_named_function_without_streaming(client):
    r = await client.post(CHAT_URL, json=chat("hi", temperature=0, max_tokens=300, functions=FUNCTIONS,
                                              function_call={"name": "get_time"}))
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "function_call" and choice["message"]["content"] is None
    assert choice["message"]["function_call"]["name"] == "get_time"
    jsonschema.validate(json.loads(choice["message"]["function_call"]["arguments"]), TIME)


@pytest.mark.parametrize("engine_slots", [3], indirect=True)
async def test_each_of_n_choices_has_its_own_calls(client):
    r = await client.post(CHAT_URL, json=chat("x", n=3, temperature=1.0, seed=4, max_tokens=300, tools=TOOLS,
                                              tool_choice="required"))
    choices = r.json()["choices"]
    assert len(choices) == 3
    ids = [call["id"] for c in choices for call in c["message"]["tool_calls"]]
    assert len(ids) == len(set(ids))
    for c in choices:
        assert c["finish_reason"] == "tool_calls"
        for call in c["message"]["tool_calls"]:
            assert_valid(call["function"])


async def test_logprobs_cover_the_content_and_not_the_calls(client):
    r = await client.post(CHAT_URL, json=chat("Sure.\n" + PARIS, temperature=0, logprobs=True, tools=TOOLS))
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "Sure."
    assert "".join(e["token"] for e in choice["logprobs"]["content"]) == "Sure."


async def test_stop_strings_end_the_text_but_never_cut_a_call(client):
    # "\n" is in the markup itself (after the tag, between calls): a call must come out whole
    r = await client.post(CHAT_URL, json=chat(PARIS + "\n" + UTC, temperature=0, tools=TOOLS, stop=["\n", "Paris"]))
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert [json.loads(c["function"]["arguments"]) for c in choice["message"]["tool_calls"]] == \
        [{"city": "Paris", "days": 2}, {"zone": "utc"}]
    r = await client.post(CHAT_URL, json=chat("Let me look.\n" + PARIS, temperature=0, tools=TOOLS, stop=["look"]))
    choice = r.json()["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Let me ", "refusal": None, "annotations": []}
    assert choice["finish_reason"] == "stop"


async def test_response_format_shapes_the_answer_alternative(client):
    r = await client.post(CHAT_URL, json=chat("plain words", temperature=0, max_tokens=200, tools=TOOLS,
                                              response_format={"type": "json_object"}))
    message = r.json()["choices"][0]["message"]
    if message.get("tool_calls"):
        assert message["content"] is None and all(assert_valid(c["function"]) is None for c in message["tool_calls"])
    else:
        assert isinstance(json.loads(message["content"]), dict)
    r = await client.post(CHAT_URL, json=chat(PARIS, temperature=0, tools=TOOLS, response_format={"type": "json_object"}))
    assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


async def test_a_conversation_continues_after_tool_results(client):
    messages = [{"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city":"Paris","days":2}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    r = await client.post(CHAT_URL, json={"model": "fake-echo", "messages": messages, "tools": TOOLS,
                                          "temperature": 0})
    # the fake echoes the last user turn: the tool result, as the fallback format renders it
    assert r.json()["choices"][0]["message"]["content"] == "<tool_response>\nsunny, 21 C\n</tool_response>"


async def test_the_prompt_carries_the_tools_the_calls_and_the_results(client):
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo","days":1}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"zone":"cet"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "snow"},
                {"role": "tool", "tool_call_id": "call_2", "content": "09:00"}]
    tokens = (await client.post("/tokenize", json={"messages": messages, "tools": TOOLS})).json()["tokens"]
    prompt = bytes(b for t in tokens for b in t["bytes"]).decode()
    signature = json.dumps({"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
                                                             "parameters": WEATHER}})
    assert prompt.startswith("system\n# Tools\n")  # the control tokens carry no bytes
    assert f"<tools>\n{signature}\n" in prompt
    assert ("assistant\nChecking.\n" + call_text("get_weather", {"city": "Oslo", "days": 1}) + "\n"
            + call_text("get_time", {"zone": "cet"})) in prompt
    assert "user\n<tool_response>\nsnow\n</tool_response>\n<tool_response>\n09:00\n</tool_response>" in prompt
    chat_usage = (await client.post(CHAT_URL, json={"model": "fake-echo", "messages": messages, "tools": TOOLS,
                                                    "max_tokens": 1})).json()["usage"]
    assert chat_usage["prompt_tokens"] == len(tokens)


# ---- refused before the first byte ------------------------------------------------------------


def tool(name: str, parameters: dict | None = None) -> dict:
    return {"type": "function", "function": {"name": name, **({"parameters": parameters} if parameters else {})}}


@pytest.mark.parametrize("fields, param", [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name"),
    ({"functions": FUNCTIONS, "function_call": {"name": "nope"}}, "function_call.name"),
    ({"tools": TOOLS, "functions": FUNCTIONS}, "functions"),
    ({"tools": []}, "tools"),
    ({"tools": [tool("a"), tool("b"), tool("a")]}, "tools[2].function.name"),
    ({"tools": [tool("a"), tool("b", {"type": "nonsense"})]}, "tools[1].function.parameters"),
    ({"functions": [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"$ref": "#/no"}}}}]},
     "functions[0].parameters"),
    ({"tools": [tool("a", PANICS)]}, "tools[0].function.parameters"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ({"tools": [tool("has space")]}, "tools[0].function.name"),
])
@pytest.mark.parametrize("stream", [False, True])
async def test_bad_tool_fields_are_400s_naming_them(client, fields, param, stream):
    r = await client.post(CHAT_URL, json=chat("x", stream=stream, **fields))
    assert_error(r, 400, type="invalid_request_error", param=param)
