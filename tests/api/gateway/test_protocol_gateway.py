"""The Messages, Responses and legacy completions protocols on upstream models, in-process behind a
scripted upstream (tests/api/gateway/conftest.py): bridged to its /chat/completions (the request in
Chat Completions' terms, its chunks back in the client's protocol), passed through when it serves
the protocol itself (`supports`), and falling back to the local model before the first byte."""

from __future__ import annotations

import json

import httpx
import pytest

from rill.api.core import upstream as core_upstream
from rill.config import ModelConfig
from tests.api.conftest import MODEL
from tests.api.gateway.fake_upstream import USAGE, chunk, status, streamed, upstream
from tests.api.test_messages_api import anthropic_error, parse_events

MESSAGES = "/v1/messages"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def ask(model: str = "up", **fields) -> dict:
    return {"model": model, "max_tokens": 64, "system": "Be brief.",
            "messages": [{"role": "user", "content": "hi"}], **fields}


async def test_a_messages_stream_is_bridged_to_the_upstream_s_chat_completions(client, fake):
    fake.script("up.test", streamed(chunk("Hel", role="assistant"), chunk("lo"), chunk(finish="stop"),
                                    chunk(choices=False, usage=USAGE)))
    r = await client.post(MESSAGES, json=ask(stream=True, top_k=5, stop_sequences=["###"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_events(r.text)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "Hello"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] == 3
    [sent] = fake.bodies("up.test")
    assert sent["model"] == "remote-name" and sent["stream"] is True and sent["max_tokens"] == 64
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert (sent["top_k"], sent["stop"]) == (5, ["###"])
    assert fake.requests[0].url.path == "/v1/chat/completions"


async def test_a_bridged_tool_call_is_a_tool_use_block(client, fake):
    fake.script("up.test", streamed(
        chunk(tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}]),
        chunk(finish="tool_calls"), chunk(choices=False, usage=USAGE)))
    r = await client.post(MESSAGES, json=ask(tools=[{"name": "get_weather", "input_schema": WEATHER}],
                                             tool_choice={"type": "tool", "name": "get_weather"}))
    assert r.status_code == 200, r.text
    message = r.json()
    assert message["stop_reason"] == "tool_use"
    [block] = [b for b in message["content"] if b["type"] == "tool_use"]
    assert block["name"] == "get_weather" and block["input"] == {"city": "Paris"}
    [sent] = fake.bodies("up.test")
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["tools"][0]["function"]["parameters"]["properties"] == WEATHER["properties"]


async def test_an_upstream_s_refusal_comes_back_in_anthropic_s_shape(client, fake):
    fake.script("up.test", status(400, {"error": {"message": "max_tokens is too large",
                                                  "type": "invalid_request_error"}}))
    message = anthropic_error(await client.post(MESSAGES, json=ask()), 400, "invalid_request_error")
    assert "max_tokens is too large" in message


@pytest.mark.parametrize("models", [(upstream("up", retries=1, fallbacks=(MODEL,)), ModelConfig(name=MODEL))],
                         indirect=True)
async def test_a_failing_upstream_falls_back_to_the_local_model(client, fake, monkeypatch):
    monkeypatch.setattr(core_upstream, "BACKOFF_BASE_S", 0.001)
    fake.script("up.test", status(503))
    r = await client.post(MESSAGES, json=ask(temperature=0))
    assert r.status_code == 200, r.text
    assert r.json()["model"] == MODEL and r.json()["content"][0]["text"]
    assert len(fake.requests) == 2  # the upstream, tried again once, then the fallback


@pytest.mark.parametrize("models", [(upstream("up", supports=("messages",)),)], indirect=True)
async def test_an_upstream_that_serves_messages_gets_them_passed_through(client, fake):
    answer = {"id": "msg_up", "type": "message", "role": "assistant", "model": "remote-name",
              "content": [{"type": "text", "text": "from upstream"}], "stop_reason": "end_turn",
              "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 2}}
    fake.script("up.test", lambda request: httpx.Response(200, json=answer))
    r = await client.post(MESSAGES, json=ask(tags={"a": 1}), headers={"anthropic-version": "2023-06-01",
                                                                   "anthropic-beta": "x-2025"})
    assert r.status_code == 200 and r.json() == answer
    [request] = fake.requests
    assert request.url.path == "/v1/messages"
    assert request.headers["anthropic-version"] == "2023-06-01" and request.headers["anthropic-beta"] == "x-2025"
    sent = json.loads(request.content)
    assert sent["model"] == "remote-name" and "tags" not in sent and sent["system"] == "Be brief."


@pytest.mark.parametrize("models", [(upstream("up", supports=("messages",)),)], indirect=True)
async def test_a_passed_through_stream_and_error_are_the_upstream_s_own(client, fake):
    body = b'event: message_start\ndata: {"type":"message_start"}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'
    fake.script("up.test", lambda request: httpx.Response(200, content=body,
                                                           headers={"content-type": "text/event-stream"}),
                lambda request: httpx.Response(400, json={"type": "error", "error": {
                    "type": "invalid_request_error", "message": "upstream says no"}}))
    r = await client.post(MESSAGES, json=ask(stream=True))
    assert r.status_code == 200 and r.content == body
    r = await client.post(MESSAGES, json=ask())
    assert anthropic_error(r, 400, "invalid_request_error") == "upstream says no"


@pytest.mark.parametrize("models", [(upstream("up", supports=("messages",)),)], indirect=True)
async def test_count_tokens_goes_to_an_upstream_that_serves_messages(client, fake):
    fake.script("up.test", lambda request: httpx.Response(200, json={"input_tokens": 11}))
    r = await client.post(MESSAGES + "/count_tokens", json={"model": "up", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.json() == {"input_tokens": 11}
    assert fake.requests[0].url.path == "/v1/messages/count_tokens"


async def test_count_tokens_on_a_bridged_upstream_is_a_400_naming_the_model(client):
    r = await client.post(MESSAGES + "/count_tokens", json={"model": "up", "messages": [{"role": "user", "content": "hi"}]})
    assert "tokenizer" in anthropic_error(r, 400, "invalid_request_error")


# ---- the Responses API ---------------------------------------------------------------------------

RESPONSES = "/v1/responses"


def parse_response_events(text: str) -> list[dict]:
    return [json.loads(line[len("data: "):]) for line in text.splitlines() if line.startswith("data: ")]


async def test_a_responses_stream_is_bridged_with_its_whole_event_sequence(client, fake):
    fake.script("up.test", streamed(chunk("Hel", role="assistant"), chunk("lo"), chunk(finish="stop"),
                                    chunk(choices=False, usage=USAGE)))
    r = await client.post(RESPONSES, json={"model": "up", "input": "hi", "instructions": "Be brief.", "stream": True,
                                           "store": False})
    assert r.status_code == 200, r.text
    events = parse_response_events(r.text)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_item.done" in kinds
    assert [e["sequence_number"] for e in events] == sorted({e["sequence_number"] for e in events})
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hello"
    done = events[-1]["response"]
    assert done["model"] == "up" and done["output"][0]["content"][0]["text"] == "Hello"
    assert (done["usage"]["input_tokens"], done["usage"]["output_tokens"]) == (7, 3)
    [sent] = fake.bodies("up.test")
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


async def test_a_bridged_function_call_is_a_function_call_item(client, fake):
    fake.script("up.test", streamed(
        chunk(tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]),
        chunk(finish="tool_calls"), chunk(choices=False, usage=USAGE)))
    r = await client.post(RESPONSES, json={"model": "up", "input": "weather?", "store": False, "tools": [
        {"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": False}]})
    assert r.status_code == 200, r.text
    [item] = [o for o in r.json()["output"] if o["type"] == "function_call"]
    assert item["name"] == "get_weather" and json.loads(item["arguments"]) == {"city": "Paris"}


async def test_what_a_bridge_cannot_carry_is_a_400_naming_it(client, fake):
    r = await client.post(RESPONSES, json={"model": "up", "input": "hi", "truncation": "auto"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "truncation"
    r = await client.post(RESPONSES, json={"model": "up", "input": "hi", "tools": [
        {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "regex", "definition": "x+"}}]})
    assert r.status_code == 400 and "apply_patch" in r.json()["error"]["message"]
    assert fake.requests == []


@pytest.mark.parametrize("models", [(upstream("up", supports=("responses",)),)], indirect=True)
async def test_an_upstream_that_serves_responses_gets_them_passed_through(client, fake):
    answer = {"id": "resp_up", "object": "response", "status": "completed", "output": [],
              "usage": {"input_tokens": 4, "output_tokens": 1, "total_tokens": 5}}
    fake.script("up.test", lambda request: httpx.Response(200, json=answer))
    r = await client.post(RESPONSES, json={"model": "up", "input": "hi", "previous_response_id": "resp_old"})
    assert r.status_code == 200 and r.json() == answer
    [request] = fake.requests
    assert request.url.path == "/v1/responses"
    sent = json.loads(request.content)
    assert sent["model"] == "remote-name" and sent["previous_response_id"] == "resp_old"  # its own store's


@pytest.mark.parametrize("models", [(upstream("up", retries=0, supports=("responses",), fallbacks=(MODEL,)),
                                     ModelConfig(name=MODEL))], indirect=True)
async def test_a_failing_pass_through_falls_back_to_the_local_model(client, fake):
    fake.script("up.test", status(503))
    r = await client.post(RESPONSES, json={"model": "up", "input": "hi", "temperature": 0, "store": False})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == MODEL and r.json()["status"] == "completed"
    assert [q.url.path for q in fake.requests] == ["/v1/responses"]
