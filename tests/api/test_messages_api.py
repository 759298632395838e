"""POST /v1/messages and /v1/messages/count_tokens on the fake model (which echoes the last user
message under greedy decoding): whole messages and Anthropic's event streams, tools, stop
sequences, clamped max_tokens, thinking, the system-role message, count_tokens against the
usage, spans and metrics, and every failure in Anthropic's error shape."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from rill.sampling.template import CHATML
from rill.sampling.tool_format import call_text
from tests.api.conftest import CHAT_URL, MODEL, GatedBackend, assert_error, chatml_prompt_tokens, engine_of, wait_until
from tests.api.test_metrics import sample, scrape

URL = "/v1/messages"
COUNT_URL = "/v1/messages/count_tokens"
CLAUDE_CODE_HEADERS = {
    "anthropic-version": "2023-06-01", "x-app": "cli", "anthropic-dangerous-direct-browser-access": "true",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27",
    "accept": "application/json"}  # Claude Code asks for JSON while streaming
WEATHER = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
           "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1}},
           "required": ["city", "days"], "additionalProperties": False}
TOOLS = [{"name": "get_weather", "description": "Weather forecast", "input_schema": WEATHER}]
PARIS = call_text("get_weather", {"city": "Paris", "days": 2})


def ask(content: Any = "hello there", **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 200, "temperature": 0, "messages": [{"role": "user", "content": content}],
            **fields}


def parse_events(text: str) -> list[tuple[str, dict]]:
    """Strictly parse Anthropic's SSE body: `event: <name>` then `data: <json>` whose type is the name."""
    assert text.endswith("\n\n"), text[-80:]
    out = []
    for raw in text[:-2].split("\n\n"):
        lines = raw.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), raw
        name, data = lines[0][len("event: "):], json.loads(lines[1][len("data: "):])
        assert data["type"] == name, raw
        out.append((name, data))
    return out


def anthropic_error(r, status: int, kind: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["message"]


def assemble(events: list[tuple[str, dict]]) -> dict[str, Any]:
    """The message a client builds from the stream, checking the order rules on the way."""
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"], names
    message = events[0][1]["message"]
    assert message["content"] == [] and message["stop_reason"] is None
    open_block: int | None = None
    partial: dict[int, str] = {}
    for name, data in events[1:-2]:
        if name == "content_block_start":
            assert open_block is None and data["index"] == len(message["content"])
            open_block = data["index"]
            message["content"].append(data["content_block"])
        elif name == "content_block_delta":
            assert data["index"] == open_block
            block, delta = message["content"][open_block], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            else:
                assert delta["type"] == "input_json_delta" and block["type"] == "tool_use"
                partial[open_block] = partial.get(open_block, "") + delta["partial_json"]
        elif name == "content_block_stop":
            assert data["index"] == open_block
            if open_block in partial:
                message["content"][open_block]["input"] = json.loads(partial[open_block])
            open_block = None
        else:
            assert name == "ping", name
    assert open_block is None
    delta = events[-2][1]
    message.update(delta["delta"])
    message["usage"].update(delta["usage"])
    return message


async def test_a_message_is_answered_whole(client):
    r = await client.post(URL, json=ask())
    assert r.status_code == 200, r.text
    message = r.json()
    assert message["id"].startswith("msg_") and message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == MODEL
    assert message["content"] == [{"type": "text", "text": "hello there"}]
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)
    usage = message["usage"]
    prompt = chatml_prompt_tokens([{"role": "user", "content": "hello there"}])
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == prompt
    assert usage["output_tokens"] == len("hello there")  # one byte a token; the end token is not counted
    assert r.headers["x-rill-span-id"] and r.headers["request-id"].startswith("req_")


async def test_a_stream_as_claude_code_reads_it(client):
    """`?beta=true`, the anthropic-* headers and `Accept: application/json`: an event stream anyway."""
    r = await client.post(URL + "?beta=true", json=ask(stream=True), headers=CLAUDE_CODE_HEADERS)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_events(r.text)
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    prompt = chatml_prompt_tokens([{"role": "user", "content": "hello there"}])
    assert start["usage"]["input_tokens"] == prompt and start["usage"]["output_tokens"] == 0
    assert events[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    message = assemble(events)
    assert message["content"] == [{"type": "text", "text": "hello there"}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    # message_delta's usage is cumulative and whole: the prompt split by the cache, the output
    usage = events[-2][1]["usage"]
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == prompt
    assert usage["output_tokens"] == len("hello there")


BASH_SCHEMA = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
               "properties": {"command": {"type": "string"}, "timeout": {"type": "number"},
                              "description": {"type": "string"}, "dangerouslyDisableSandbox": {"type": "boolean"}},
               "required": ["command"], "additionalProperties": False}


@pytest.mark.parametrize("tools", [[{"name": "Bash", "description": "Run a command", "input_schema": BASH_SCHEMA},
                                    {"name": "DeferredToolPlaceholder", "description": "d", "defer_loading": True,
                                     "input_schema": {"type": "object", "properties": {}}}], []])
async def test_claude_codes_request_as_recorded(client, tools):
    """Every top-level field Claude Code 2.1.328 sends (shared/AGENT-CLIENTS.md section 2)."""
    body = {
        "model": MODEL, "max_tokens": 32000, "stream": True, "tools": tools,
        "system": [{"type": "text",
                    "text": "x-anthropic-billing-header: cc_version=2.1.328.593; cc_entrypoint=sdk-cli;"},
                   {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
                    "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nAttribution\n</system-reminder>\n"},
            {"type": "text", "text": "say hi", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "# Environment\nYou have been invoked in: /tmp"}],
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "metadata": {"user_id": '{"device_id":"ab12","account_uuid":"","session_id":"5e1c"}'},
        "temperature": 0}
    r = await client.post(URL + "?beta=true", json=body, headers={"x-api-key": "any", **CLAUDE_CODE_HEADERS})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    message = assemble(parse_events(r.text))
    assert message["stop_reason"] == "end_turn" and message["content"][0]["type"] == "text"
    # the billing block is not prompt; the system-role message is a system turn where it stands
    counted = (await client.post(COUNT_URL, json={k: body[k] for k in ("model", "system", "messages")})).json()
    expected = chatml_prompt_tokens([
        {"role": "system", "content": "You are a Claude agent, built on Anthropic's Claude Agent SDK.\n\nBe brief."},
        {"role": "user", "content": "<system-reminder>\nAttribution\n</system-reminder>\n\nsay hi"},
        {"role": "system", "content": "# Environment\nYou have been invoked in: /tmp"}])
    assert counted == {"input_tokens": expected}


async def test_the_non_streamed_message_is_what_the_stream_builds(client):
    whole = (await client.post(URL, json=ask("same answer twice"))).json()
    streamed = assemble(parse_events((await client.post(URL, json=ask("same answer twice", stream=True))).text))
    for key in ("type", "role", "model", "content", "stop_reason", "stop_sequence"):
        assert whole[key] == streamed[key], key
    assert whole["usage"]["output_tokens"] == streamed["usage"]["output_tokens"]


async def test_max_tokens_far_beyond_the_context_is_clamped_to_the_room_left(client):
    # the fake's context is 2,048 tokens; Claude Code sends 32,000 for a model it does not know
    r = await client.post(URL, json=ask(max_tokens=32000))
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"] == "hello there"
    r = await client.post(URL, json=ask(max_tokens=3))
    message = r.json()
    assert message["content"] == [{"type": "text", "text": "hel"}] and message["stop_reason"] == "max_tokens"
    assert message["usage"]["output_tokens"] == 3


@pytest.mark.parametrize("stream", [False, True])
async def test_a_stop_sequence_is_named(client, stream):
    r = await client.post(URL, json=ask("one two three four", stop_sequences=["four", "three"], stream=stream))
    message = assemble(parse_events(r.text)) if stream else r.json()
    assert message["content"] == [{"type": "text", "text": "one two "}]
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "three")


@pytest.mark.parametrize("choice", [{"type": "tool", "name": "get_weather"}, {"type": "any"}, {"type": "auto"}])
async def test_a_tool_call_streams_its_input_in_pieces(client, choice):
    r = await client.post(URL, json=ask(PARIS, tools=TOOLS, tool_choice=choice, stream=True))
    assert r.status_code == 200, r.text
    events = parse_events(r.text)
    starts = [d for n, d in events if n == "content_block_start"]
    assert len(starts) == 1
    block = starts[0]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "get_weather" and block["input"] == {}
    assert block["id"].startswith("toolu_")
    pieces = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta"]
    assert len(pieces) > 1 and all(pieces)  # the arguments arrive in pieces
    assert json.loads("".join(pieces)) == {"city": "Paris", "days": 2}
    message = assemble(events)
    assert message["stop_reason"] == "tool_use"
    assert message["content"] == [{**block, "input": {"city": "Paris", "days": 2}}]


async def test_a_forced_tool_call_answered_whole(client):
    r = await client.post(URL, json=ask("just chatting", tools=TOOLS, tool_choice={"type": "any"}))
    message = r.json()
    assert message["stop_reason"] == "tool_use", message
    [block] = [b for b in message["content"] if b["type"] == "tool_use"]
    assert block["name"] == "get_weather" and set(block["input"]) == {"city", "days"}
    assert isinstance(block["input"]["city"], str) and len(block["input"]["city"]) <= 12


async def test_tool_choice_none_answers_in_text(client):
    r = await client.post(URL, json=ask("plain words", tools=TOOLS, tool_choice={"type": "none"}))
    assert r.json()["content"] == [{"type": "text", "text": "plain words"}]
    assert r.json()["stop_reason"] == "end_turn"


async def test_tool_results_go_back_to_the_model(client):
    """Claude Code's round trip: the assistant's tool_use, then the user's tool_result (a string
    with is_error, or text blocks), with cache_control on the last block."""
    history = [
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                          {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                                           "input": {"city": "Paris", "days": 2}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01",
                                      "content": "This command requires approval", "is_error": True,
                                      "cache_control": {"type": "ephemeral"}}]},
    ]
    body = ask(tools=TOOLS) | {"messages": history}
    r = await client.post(URL, json=body)
    assert r.status_code == 200, r.text
    # the fallback format shows results as a user turn, which the fake echoes: the failure is marked
    text = r.json()["content"][0]["text"]
    assert "<tool_response>" in text and "Error: This command requires approval" in text
    history[2]["content"][0] = {"type": "tool_result", "tool_use_id": "toolu_01",
                                "content": [{"type": "text", "text": "sunny"}, {"type": "text", "text": "21C"}]}
    text = (await client.post(URL, json=body | {"messages": history})).json()["content"][0]["text"]
    assert "sunny\n21C" in text and "Error" not in text


async def test_count_tokens_counts_the_prompt_the_model_gets(client):
    messages = [{"role": "user", "content": [{"type": "text", "text": "say hi"}]},
                {"role": "system", "content": [{"type": "text", "text": "# Environment\ncwd: /tmp"}]}]
    body = {"model": MODEL, "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": messages}
    r = await client.post(COUNT_URL, json=body)
    assert r.status_code == 200, r.text
    # the system-role message is a system turn where it stands
    expected = chatml_prompt_tokens([{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "say hi"},
                                     {"role": "system", "content": "# Environment\ncwd: /tmp"}])
    assert r.json() == {"input_tokens": expected}
    message = (await client.post(URL, json=body | {"max_tokens": 5, "temperature": 0})).json()
    assert message["usage"]["input_tokens"] + message["usage"]["cache_read_input_tokens"] == expected
    # tools are part of the prompt
    with_tools = (await client.post(COUNT_URL, json=body | {"tools": TOOLS})).json()["input_tokens"]
    assert with_tools > expected + len("get_weather")


async def test_a_repeated_prompt_reads_the_cache(client):
    body = ask("a prompt long enough to be cached " * 8, max_tokens=4)
    await client.post(URL, json=body)
    usage = (await client.post(URL, json=body)).json()["usage"]
    assert usage["cache_read_input_tokens"] > 0
    total = (await client.post(COUNT_URL, json={k: body[k] for k in ("model", "messages")})).json()["input_tokens"]
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == total


THINKS = CHATML.replace(
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}")


@pytest.mark.parametrize("backend", [{"chat_template": THINKS}], indirect=True)
async def test_a_thinking_model_sends_a_thinking_block(client):
    said = "<think>\nBlue is safe.\n</think>\n\nBlue."
    thinking = {"type": "enabled", "budget_tokens": 1024}
    events = parse_events((await client.post(URL, json=ask(said, thinking=thinking, stream=True))).text)
    message = assemble(events)
    assert [b["type"] for b in message["content"]] == ["thinking", "text"]
    assert "Blue is safe." in message["content"][0]["thinking"] and message["content"][1]["text"] == "Blue."
    deltas = {d["delta"]["type"] for n, d in events if n == "content_block_delta"}
    assert deltas == {"thinking_delta", "text_delta"}
    whole = (await client.post(URL, json=ask(said, thinking=thinking))).json()
    assert [b["type"] for b in whole["content"]] == ["thinking", "text"]
    # Claude Code's `display: "omitted"`: no thinking is sent
    omitted = (await client.post(URL, json=ask(said, thinking={"type": "adaptive", "display": "omitted"}))).json()
    assert [b["type"] for b in omitted["content"]] == ["text"]


async def test_output_config_format_constrains_the_answer(client):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    r = await client.post(URL, json=ask("not json at all", output_config={"format": {"type": "json_schema",
                                                                                   "schema": schema}}))
    assert r.status_code == 200, r.text
    assert set(json.loads(r.json()["content"][0]["text"])) == {"n"}


async def test_the_request_is_a_span(client, app):
    r = await client.post(URL, json=ask(system="Be brief.", metadata={"user_id": "dev-1"}, stream=True))
    assert r.status_code == 200
    await app.state.span_writer.flush()
    span = (await client.get(f"/v1/spans/{r.headers['x-rill-span-id']}")).json()
    assert span["type"] == "messages" and span["status"] == "ok" and span["user"] == "dev-1"
    assert span["model"] == MODEL
    assert span["input"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
    assert span["output"]["content"] == "hello there"
    assert span["meta"]["protocol"] == "messages" and span["meta"]["params"]["max_tokens"] == 200
    assert span["usage"]["completion_tokens"] == len("hello there")


async def test_requests_are_counted_by_route(client):
    await client.post(URL, json=ask())
    await client.post(URL, json=ask(stream=True))
    await client.post(COUNT_URL, json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    await client.post(URL, json={"model": MODEL})
    text = await scrape(client)
    assert sample(text, "rill_http_requests_total", route=URL, method="POST", status="200") == 2
    assert sample(text, "rill_http_requests_total", route=URL, method="POST", status="400") == 1
    assert sample(text, "rill_http_requests_total", route=COUNT_URL, method="POST", status="200") == 1


# ---- errors, in Anthropic's shape ---------------------------------------------------------------


@pytest.mark.parametrize(("body", "words"), [
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    (ask(temperature=2), "temperature"),
    (ask([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}]), "`image`"),
    (ask([{"type": "document", "source": {"type": "text", "data": "x"}}]), "`document`"),
    (ask(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "web_search_20250305"),
    (ask(tools=[{"type": "bash_20250124", "name": "bash"}]), "bash_20250124"),
    (ask(tools=TOOLS, tool_choice={"type": "tool", "name": "nope"}), "`nope`"),
    (ask(tools=[{"name": "f", "input_schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}],
         tool_choice={"type": "any"}), "`f`"),
    (ask() | {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A"}]}, "prefill"),
])
@pytest.mark.parametrize("stream", [False, True])
async def test_bad_requests_are_invalid_request_errors(client, body, words, stream):
    message = anthropic_error(await client.post(URL, json=body | {"stream": stream}), 400, "invalid_request_error")
    assert words in message


async def test_plumbing_errors_are_in_anthropics_shape(client):
    assert "not valid JSON" in anthropic_error(await client.post(URL, content=b"{bad"), 400, "invalid_request_error")
    assert "empty" in anthropic_error(await client.post(COUNT_URL, content=b""), 400, "invalid_request_error")
    # the body limit (64 KiB in these tests), before the body is read
    big = ask("x" * 70_000)
    anthropic_error(await client.post(URL, json=big), 413, "request_too_large")
    anthropic_error(await client.get(URL), 405, "invalid_request_error")
    anthropic_error(await client.post(URL + "/nowhere", json=ask()), 404, "not_found_error")
    # other routes keep OpenAI's shape
    assert_error(await client.post(CHAT_URL, content=b"{bad"), 400, type="invalid_request_error")


async def test_an_unknown_model_is_not_found(client):
    message = anthropic_error(await client.post(URL, json=ask() | {"model": "claude-opus-5-5"}), 404,
                              "not_found_error")
    assert "claude-opus-5-5" in message
    anthropic_error(await client.post(COUNT_URL, json={"model": "claude-opus-5-5", "messages": [
        {"role": "user", "content": "hi"}]}), 404, "not_found_error")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_prompt_over_the_context_is_anthropics_prompt_too_long(client, stream):
    r = await client.post(URL, json=ask("y" * 2100, stream=stream))
    message = anthropic_error(r, 400, "invalid_request_error")
    assert message.startswith("prompt is too long: ") and message.endswith(" tokens > 2048 maximum"), message
    tokens = int(message.split(": ")[1].split(" ")[0])
    assert tokens > 2048


@pytest.mark.parametrize("stream", [False, True])
async def test_an_engine_failure(client, stream):
    """The fake fails two tokens into an answer to FAIL: before the first byte of a whole message
    a 500 api_error; in a stream that has begun, an `error` event, then the end."""
    r = await client.post(URL, json=ask("FAIL now", stream=stream))
    if not stream:
        anthropic_error(r, 500, "api_error")
        return
    events = parse_events(r.text)
    assert events[0][0] == "message_start" and events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error" and events[-1][1]["error"]["message"]
    assert "message_stop" not in [n for n, _ in events]


GATED = pytest.mark.parametrize("backend", [{"cls": GatedBackend}], indirect=True)


@GATED
@pytest.mark.parametrize("config", [{"max_queue": 1}], indirect=True)
async def test_a_full_queue_is_a_rate_limit_error(app, client, gate):
    engine = engine_of(app)
    first = asyncio.create_task(client.post(URL, json=ask("first")))
    await wait_until(lambda: engine.num_running == 1, what="the first request runs")
    second = asyncio.create_task(client.post(URL, json=ask("second")))
    await wait_until(lambda: engine.num_waiting == 1, what="the second request waits")
    r = await asyncio.wait_for(client.post(URL, json=ask("third", stream=True)), 10)
    anthropic_error(r, 429, "rate_limit_error")
    assert int(r.headers["retry-after"]) >= 1
    gate.set()
    assert [(await t).status_code for t in (first, second)] == [200, 200]


@pytest.mark.parametrize("backend", [{"step_delay": 0.02}], indirect=True)
async def test_a_client_that_leaves_mid_stream_stops_the_generation(app, live_client, client, backend):
    # the whole echo would take 400 steps of 20 ms: 8 s, past wait_until's 5 s
    async with live_client.stream("POST", URL, json=ask("z" * 400, max_tokens=1000, stream=True)) as r:
        assert r.status_code == 200
        span_id = r.headers["x-rill-span-id"]
        seen = ""
        async for chunk in r.aiter_text():
            seen += chunk
            if "content_block_delta" in seen:
                break
    engine = engine_of(app)
    await wait_until(lambda: engine.num_running == 0 and engine.num_waiting == 0, what="the engine is idle")
    assert backend.num_forwards < 200
    await app.state.span_writer.flush()
    span = (await client.get(f"/v1/spans/{span_id}")).json()
    assert "client disconnected" in span["error"]


# ---- keys: x-api-key or Bearer ------------------------------------------------------------------

KEY = "operator-secret-0123456789"
KEYED = pytest.mark.parametrize("config", [{"api_keys": (KEY,)}], indirect=True)


@KEYED
async def test_x_api_key_or_bearer(client):
    for headers in ({"x-api-key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"x-api-key": KEY, **CLAUDE_CODE_HEADERS}):
        r = await client.post(URL, json=ask(), headers=headers)
        assert r.status_code == 200, r.text
    assert (await client.post(COUNT_URL, json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
                              headers={"x-api-key": KEY})).status_code == 200
    # the header works on every route, as the Bearer token does
    assert (await client.get("/v1/models", headers={"x-api-key": KEY})).status_code == 200


@KEYED
@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong-key-0123456789"}, {"x-api-key": ""},
                                     {"Authorization": "Bearer wrong-key-0123456789"},
                                     {"Authorization": f"Basic {KEY}"}])
async def test_a_missing_or_wrong_key_is_an_authentication_error(client, headers):
    r = await client.post(URL, json=ask(), headers=headers)
    message = anthropic_error(r, 401, "authentication_error")
    assert ("x-api-key" in message) == (not any(headers.values()) or "Basic" in str(headers.values())), message
    anthropic_error(await client.post(COUNT_URL, json={}, headers=headers), 401, "authentication_error")
    # other routes keep OpenAI's shape
    assert_error(await client.get("/v1/models", headers=headers), 401, type="authentication_error")
