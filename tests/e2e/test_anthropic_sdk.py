"""Anthropic's Messages API on a real `rill serve` (SmolLM2) through the official `anthropic` SDK:
messages.create, messages.stream, a forced tool_use whose input follows the schema, the
tool_result round trip, count_tokens against the usage, the beta endpoint with its headers, keys
as x-api-key or Bearer, and the SDK's error classes for 400, 401 and 404."""

from __future__ import annotations

import re
from typing import Iterator

import anthropic
import jsonschema
import pytest

from tests.e2e.support import CLIENT_TIMEOUT_S, MODEL

pytestmark = pytest.mark.e2e

WEATHER = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
           "properties": {"city": {"type": "string", "maxLength": 20},
                          "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [{"name": "get_weather", "description": "The current weather in a city", "input_schema": WEATHER}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
KEY = "e2e-anthropic-key-0123456789"
# The SDK no longer has `temperature` (Anthropic's newest models fixed it); the API still reads it
GREEDY = {"temperature": 0}


def sdk(root: str, **auth: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=root, max_retries=0, timeout=CLIENT_TIMEOUT_S,
                               **(auth or {"api_key": "unused"}))


@pytest.fixture(scope="module")
def claude(root: str) -> Iterator[anthropic.Anthropic]:
    client = sdk(root)
    yield client
    client.close()


def prompt_tokens(usage: anthropic.types.Usage) -> int:
    """The whole prompt, as Anthropic splits it: tokens read from the cache and the rest."""
    return usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)


def test_create(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model=MODEL, max_tokens=20, extra_body=GREEDY, system="Answer briefly.",
                                     messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == MODEL
    assert [b.type for b in message.content] == ["text"] and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert 0 < message.usage.output_tokens <= 20 and prompt_tokens(message.usage) > 10
    assert message._request_id and message._request_id.startswith("req_")


def test_max_tokens_beyond_the_context_is_clamped(claude: anthropic.Anthropic) -> None:
    """Claude Code sends 32,000 for a model it does not know; the context is smaller. (A stop
    sequence ends the answer early: the clamped cap would let it run to the context's end.)"""
    message = claude.messages.create(model=MODEL, max_tokens=32000, extra_body=GREEDY,
                                     stop_sequences=[" ", "\n", ".", ",", "!"],
                                     messages=[{"role": "user", "content": "Say hello."}])
    assert message.content and message.stop_reason in ("end_turn", "stop_sequence")
    if message.stop_reason == "stop_sequence":
        assert message.stop_sequence in (" ", "\n", ".", ",", "!")


def test_stream(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model=MODEL, max_tokens=30, extra_body=GREEDY,
                                messages=[{"role": "user", "content": "Name three colours."}]) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text and message.content[0].text == text
    assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.output_tokens > 0
    # the same request answered whole gives the same text (greedy)
    whole = claude.messages.create(model=MODEL, max_tokens=30, extra_body=GREEDY,
                                   messages=[{"role": "user", "content": "Name three colours."}])
    assert whole.content[0].text == text and whole.usage.output_tokens == message.usage.output_tokens


def test_raw_stream_events(claude: anthropic.Anthropic) -> None:
    events = list(claude.messages.create(model=MODEL, max_tokens=12, extra_body=GREEDY, stream=True,
                                         messages=[{"role": "user", "content": "Hi!"}]))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "ping" not in kinds  # the SDK swallows pings
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert deltas and all(e.delta.type == "text_delta" for e in deltas)
    assert events[0].message.usage.input_tokens > 0 and 0 < events[-2].usage.output_tokens <= 12


@pytest.mark.parametrize("streamed", [False, True])
def test_forced_tool_use_follows_the_schema(claude: anthropic.Anthropic, streamed: bool) -> None:
    fields = dict(model=MODEL, max_tokens=100, extra_body=GREEDY, messages=ASK, tools=TOOLS,
                  tool_choice={"type": "tool", "name": "get_weather"})
    if streamed:
        with claude.messages.stream(**fields) as stream:  # type: ignore[arg-type]
            partial = [e.partial_json for e in stream if e.type == "input_json"]
            message = stream.get_final_message()
        assert partial  # the input arrived as input_json_delta pieces
    else:
        message = claude.messages.create(**fields)  # type: ignore[arg-type]
    assert message.stop_reason == "tool_use"
    [call] = [b for b in message.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    jsonschema.validate(call.input, WEATHER)


def test_tool_result_round_trip(claude: anthropic.Anthropic) -> None:
    first = claude.messages.create(model=MODEL, max_tokens=100, extra_body=GREEDY, messages=ASK, tools=TOOLS,
                                   tool_choice={"type": "any", "disable_parallel_tool_use": True})
    [call] = [b for b in first.content if b.type == "tool_use"]  # one call: parallel calls are off
    history = [*ASK, {"role": "assistant", "content": first.content},  # the SDK's blocks sent back as they came
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                             "content": "Sunny, 21 degrees celsius.",
                                             "cache_control": {"type": "ephemeral"}}]}]
    answer = claude.messages.create(model=MODEL, max_tokens=30, extra_body=GREEDY, messages=history, tools=TOOLS)
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert answer.content
    # a failed tool (is_error) and block content are read too
    history[-1]["content"][0] = {"type": "tool_result", "tool_use_id": call.id, "is_error": True,
                                 "content": [{"type": "text", "text": "This command requires approval"}]}
    failed = claude.messages.create(model=MODEL, max_tokens=10, extra_body=GREEDY, messages=history, tools=TOOLS)
    assert failed.content and prompt_tokens(failed.usage) > prompt_tokens(answer.usage) - 10


def test_count_tokens_is_the_prompt_the_usage_reports(claude: anthropic.Anthropic) -> None:
    fields = dict(model=MODEL, system=[{"type": "text", "text": "You are terse.",
                                        "cache_control": {"type": "ephemeral"}}],
                  messages=[{"role": "user", "content": "How many legs does a spider have?"}], tools=TOOLS)
    counted = claude.messages.count_tokens(**fields)  # type: ignore[arg-type]
    message = claude.messages.create(max_tokens=5, extra_body=GREEDY, **fields)  # type: ignore[arg-type]
    # Anthropic's usage splits the prompt into tokens read from the cache and the rest
    assert counted.input_tokens == prompt_tokens(message.usage)
    bare = claude.messages.count_tokens(model=MODEL, messages=fields["messages"])  # type: ignore[arg-type]
    assert bare.input_tokens < counted.input_tokens  # the tools and system prompt count


def test_the_beta_endpoint_and_headers(claude: anthropic.Anthropic) -> None:
    """What Claude Code uses: /v1/messages?beta=true, anthropic-beta, role-system messages."""
    message = claude.beta.messages.create(
        model=MODEL, max_tokens=20,
        betas=["claude-code-20250219", "interleaved-thinking-2025-05-14", "context-management-2025-06-27"],
        messages=[{"role": "user", "content": [{"type": "text", "text": "say hi"}]},
                  {"role": "system", "content": [{"type": "text", "text": "# Environment\ncwd: /tmp"}]}],
        metadata={"user_id": '{"device_id":"ab12","account_uuid":"","session_id":"s-1"}'},
        extra_body={**GREEDY, "thinking": {"type": "adaptive", "display": "omitted"},
                    "output_config": {"effort": "high"},
                    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}})
    assert message.content and message.content[0].type == "text"


def test_error_classes(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}])
    assert bad.value.status_code == 400 and bad.value.body["error"]["type"] == "invalid_request_error"
    assert "`image`" in bad.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="claude-opus-5-5", max_tokens=10, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as too_long:
        claude.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "word " * 12000}])
    found = re.fullmatch(r"prompt is too long: (\d+) tokens > (\d+) maximum", too_long.value.body["error"]["message"])
    assert found is not None and int(found.group(1)) > int(found.group(2)) >= 2048, too_long.value.body
    with pytest.raises(anthropic.BadRequestError) as streamed:  # before the first byte of a stream too
        with claude.messages.stream(model=MODEL, max_tokens=10,
                                    messages=[{"role": "user", "content": "word " * 12000}]):
            pass
    assert streamed.value.body["error"]["message"].startswith("prompt is too long")


def test_keys_as_x_api_key_or_bearer(rill_factory) -> None:
    server = rill_factory("--api-key", KEY)
    for auth in ({"api_key": KEY}, {"auth_token": KEY}):
        with sdk(server.url, **auth) as client:
            assert client.messages.create(model=MODEL, max_tokens=5, messages=ASK).content
            assert client.messages.count_tokens(model=MODEL, messages=ASK).input_tokens > 0
    with sdk(server.url, api_key="wrong-key-0123456789") as wrong, pytest.raises(anthropic.AuthenticationError) as no:
        wrong.messages.create(model=MODEL, max_tokens=5, messages=ASK)
    assert no.value.status_code == 401 and no.value.body["error"]["type"] == "authentication_error"
