"""The core's events -> Anthropic's stream events and the whole message (protocols/messages/events.py),
on synthetic events; and Rill's errors in Anthropic's shape (protocols/messages/errors.py)."""

from __future__ import annotations

import json

import orjson
import pytest

from rill.api.core.events import CallEnd, CallInput, CallStart, Failure, Finish, ReasoningOut, TextOut, Usage
from rill.api.protocols.messages.errors import error_body
from rill.api.protocols.messages.events import MessageEvents, error_event, sse, tool_use_id
from rill.errors import (AuthenticationError, ContextLengthExceeded, EngineError, InvalidRequest, ModelNotFound,
                         NotReady, PayloadTooLarge, RateLimited, RillError)


def run(events: list, *, show_thinking: bool = True) -> tuple[MessageEvents, list[tuple[str, dict]]]:
    builder = MessageEvents("msg_1", "fake-echo", 12, show_thinking=show_thinking)
    out = builder.start()
    for event in events:
        out += builder.feed(event)
    return builder, out


def names(out: list[tuple[str, dict]]) -> list[str]:
    return [name for name, _ in out]


def test_text_answer_stream_and_message() -> None:
    builder, out = run([TextOut(0, "Hel"), TextOut(0, ""), TextOut(0, "lo"),
                        Finish(0, "stop", Usage(12, 3, cached_tokens=8))])
    assert names(out) == ["message_start", "ping", "content_block_start", "content_block_delta",
                          "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    start = out[0][1]["message"]
    assert start == {"id": "msg_1", "type": "message", "role": "assistant", "model": "fake-echo", "content": [],
                     "stop_reason": None, "stop_sequence": None,
                     "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                               "output_tokens": 0}}
    assert out[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert out[3][1] == {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}
    assert out[5][1] == {"type": "content_block_stop", "index": 0}
    # usage as Anthropic counts it: input_tokens + cache_read_input_tokens is the whole prompt
    assert out[6][1] == {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                         "usage": {"input_tokens": 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 8,
                                   "output_tokens": 3}}
    message = builder.message()
    assert message["content"] == [{"type": "text", "text": "Hello"}]
    assert (message["stop_reason"], message["usage"]["output_tokens"]) == ("end_turn", 3)


def test_tool_call_whose_arguments_stream_in_pieces() -> None:
    builder, out = run([
        TextOut(0, "Let me check."),
        CallStart(0, 0, "call_abc", "Bash"), CallInput(0, 0, '{"comm'), CallInput(0, 0, 'and": "l'),
        CallInput(0, 0, 's"}'), CallEnd(0, 0, '{"command": "ls"}'),
        CallStart(0, 1, "call_def", "Bash"), CallInput(0, 1, '{"command": "pwd"}'), CallEnd(0, 1, '{"command": "pwd"}'),
        Finish(0, "tool_calls", Usage(12, 20))])
    assert names(out)[2:] == (["content_block_start", "content_block_delta", "content_block_stop",
                               "content_block_start"] + ["content_block_delta"] * 3
                              + ["content_block_stop", "content_block_start", "content_block_delta",
                                 "content_block_stop", "message_delta", "message_stop"])
    # a tool_use block starts with input {} and its arguments follow as input_json_delta pieces
    assert out[5][1] == {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_abc", "name": "Bash", "input": {}}}
    pieces = [data["delta"]["partial_json"] for name, data in out if name == "content_block_delta"
              and data["index"] == 1]
    assert pieces == ['{"comm', 'and": "l', 's"}'] and json.loads("".join(pieces)) == {"command": "ls"}
    assert out[9][1] == {"type": "content_block_stop", "index": 1}
    assert out[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert builder.message()["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_abc", "name": "Bash", "input": {"command": "ls"}},
        {"type": "tool_use", "id": "toolu_def", "name": "Bash", "input": {"command": "pwd"}}]


def test_call_cut_short_by_max_tokens_closes_its_block() -> None:
    builder, out = run([CallStart(0, 0, "call_x", "f"), CallInput(0, 0, '{"a": 1, "b'),
                        Finish(0, "length", Usage(12, 8))])
    assert names(out)[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert out[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert builder.message()["content"] == [{"type": "tool_use", "id": "toolu_x", "name": "f", "input": {}}]


def test_stop_sequence_is_named() -> None:
    builder, out = run([TextOut(0, "one two"), Finish(0, "stop_sequence", Usage(12, 2), stop_sequence="three")])
    assert out[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "three"}
    assert (builder.message()["stop_reason"], builder.message()["stop_sequence"]) == ("stop_sequence", "three")


def test_thinking_block_then_text() -> None:
    builder, out = run([ReasoningOut(0, "hmm, "), ReasoningOut(0, "2+2=4"), TextOut(0, "4"),
                        Finish(0, "stop", Usage(12, 9))])
    assert out[2][1] == {"type": "content_block_start", "index": 0,
                         "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
    assert out[3][1]["delta"] == {"type": "thinking_delta", "thinking": "hmm, "}
    assert [n for n, _ in out][5:8] == ["content_block_stop", "content_block_start", "content_block_delta"]
    assert builder.message()["content"] == [{"type": "thinking", "thinking": "hmm, 2+2=4", "signature": ""},
                                            {"type": "text", "text": "4"}]
    # display "omitted": the thinking is not sent at all
    builder, out = run([ReasoningOut(0, "secret"), TextOut(0, "4"), Finish(0, "stop", Usage(12, 9))],
                       show_thinking=False)
    assert builder.message()["content"] == [{"type": "text", "text": "4"}]
    assert "secret" not in json.dumps(out)


def test_empty_answer_has_no_blocks() -> None:
    builder, out = run([Finish(0, "stop", Usage(12, 0))])
    assert names(out) == ["message_start", "ping", "message_delta", "message_stop"]
    assert builder.message()["content"] == []


def test_sse_framing_names_the_event() -> None:
    assert sse(("ping", {"type": "ping"})) == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_tool_use_ids() -> None:
    assert tool_use_id("call_0123") == "toolu_0123"
    assert tool_use_id("toolu_x") == "toolu_x"
    assert tool_use_id("abc") == "toolu_abc"


@pytest.mark.parametrize(("error", "status", "kind"), [
    (InvalidRequest("bad"), 400, "invalid_request_error"),
    (AuthenticationError("no key"), 401, "authentication_error"),
    (ModelNotFound("no such model"), 404, "not_found_error"),
    (PayloadTooLarge("too big"), 413, "request_too_large"),
    (RateLimited("slow down"), 429, "rate_limit_error"),
    (NotReady("loading"), 503, "overloaded_error"),
    (EngineError("boom"), 500, "api_error"),
    (RillError("internal"), 500, "api_error"),
])
def test_errors_in_anthropics_shape(error: RillError, status: int, kind: str) -> None:
    assert error.status == status
    assert error_body(error) == {"type": "error", "error": {"type": kind, "message": error.message}}


@pytest.mark.parametrize("message", [
    "This model's maximum context length is 8192 tokens. However, your messages resulted in 13022 tokens, "
    "leaving no room for a completion. Please shorten the messages.",
    "This model's maximum context length is 8192 tokens. However, your messages resulted in at least 13022 "
    "tokens, leaving no room for a completion. Please shorten the messages.",
])
def test_prompt_too_long_reads_as_anthropics(message: str) -> None:
    body = error_body(ContextLengthExceeded(message, param="messages"))
    assert body["error"] == {"type": "invalid_request_error",
                             "message": "prompt is too long: 13022 tokens > 8192 maximum"}


def test_prompt_too_long_from_the_errors_numbers() -> None:
    err = ContextLengthExceeded("whatever the wording", param="messages")
    err.tokens, err.limit = 9000, 8192  # type: ignore[attr-defined]
    assert error_body(err)["error"]["message"] == "prompt is too long: 9000 tokens > 8192 maximum"


def test_failure_is_an_error_event() -> None:
    name, data = error_event(Failure(NotReady("the engine stalled")))
    assert name == "error"
    assert orjson.loads(sse((name, data))[len(b"event: error\ndata: "):]) == {
        "type": "error", "error": {"type": "overloaded_error", "message": "the engine stalled"}}
