"""rill.api.core.upstream's bridge: a GenerationRequest in Chat Completions' terms for an upstream,
and the upstream's streamed chunks back as the core's events (on a scripted upstream behind the
connection-pool interface, tests/api/mock_pool.py)."""

from __future__ import annotations

import json

import httpx
import pytest

from rill.api.core.events import CallEnd, CallInput, CallStart, Failure, Finish, ReasoningOut, TextOut
from rill.api.core.request import CustomTool, FunctionTool, GenerationRequest, Message, ToolCall, ToolChoice
from rill.api.core.tracing import ChatSpan
from rill.api.core.upstream import UpstreamGeneration, chat_body
from rill.backends.upstream import Upstream
from rill.config import UpstreamConfig
from rill.errors import InvalidRequest
from rill.router import UpstreamModel
from rill.store.spans import SpanRecord
from tests.api.mock_pool import MockPool

TOOL = FunctionTool("lookup", "Look it up", {"type": "object", "properties": {"q": {"type": "string"}}})


def test_the_conversation_and_tools_go_as_chat_completions_says_them():
    gen = GenerationRequest(
        model="up", messages=(Message("system", "Be brief."), Message("user", "find x"),
                              Message("assistant", "", calls=(ToolCall("call_1", "lookup", '{"q":"x"}'),)),
                              Message("tool", "x is 4", call_id="call_1"),
                              Message("tool", "boom", call_id="call_2", is_error=True)),
        tools=(TOOL,), tool_choice=ToolChoice("required", ("lookup",)), parallel_tool_calls=False,
        temperature=0.2, top_k=5, stop=("###",), max_tokens=50, top_logprobs=2,
        answer_schema={"type": "object"})
    body = chat_body(gen, "remote")
    assert body["model"] == "remote" and body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "find x"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}]},
        {"role": "tool", "content": "x is 4", "tool_call_id": "call_1"},
        {"role": "tool", "content": "Error: boom", "tool_call_id": "call_2"}]
    assert body["tools"] == [{"type": "function", "function": {"name": "lookup", "parameters": TOOL.parameters,
                                                               "description": "Look it up"}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert body["parallel_tool_calls"] is False
    assert (body["temperature"], body["top_k"], body["stop"], body["max_tokens"]) == (0.2, 5, ["###"], 50)
    assert (body["logprobs"], body["top_logprobs"]) == (True, 2)
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert "top_p" not in body and "seed" not in body  # defaults are the upstream's own


def test_what_chat_completions_cannot_say_is_a_400_naming_it():
    custom = CustomTool("apply_patch", None, "lark", "start: /x/", where="tools[0]")
    with pytest.raises(InvalidRequest) as err:
        chat_body(GenerationRequest(model="up", messages=(Message("user", "hi"),), tools=(custom,)), "remote")
    assert err.value.param == "tools[0]" and "apply_patch" in err.value.message
    with pytest.raises(InvalidRequest):
        chat_body(GenerationRequest(model="up", prompt_text="raw"), "remote")


def chunk(delta: dict | None = None, finish: str | None = None, index: int = 0, usage: dict | None = None) -> dict:
    out = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "remote",
           "choices": [] if delta is None else [{"index": index, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        out["usage"] = usage
    return out


class Writer:
    def __init__(self) -> None:
        self.spans: list[SpanRecord] = []

    def submit(self, record: SpanRecord) -> None:
        self.spans.append(record)


async def events_of(*chunks: dict | str, n: int = 1) -> tuple[list, Writer]:
    body = "".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n" for c in chunks).encode()
    upstream = Upstream(UpstreamConfig(name="up", base_url="http://up.test/v1", retries=0),
                        pool=MockPool(lambda request: httpx.Response(200, content=body,
                                                                      headers={"content-type": "text/event-stream"})))
    writer = Writer()
    span = ChatSpan(writer, None, SpanRecord(id="s", trace_id="t", owner="", name="responses", type="responses",
                                             start_time=0.0))
    model = UpstreamModel(id="up", upstream=upstream)
    generation = UpstreamGeneration(model, await upstream.stream({"model": "remote", "stream": True}), span, n)
    return [e async for e in generation.events() if e is not None], writer


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
         "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 1}}


async def test_text_reasoning_and_usage_come_back_as_core_events():
    events, writer = await events_of(chunk({"role": "assistant", "reasoning_content": "hm"}), chunk({"content": "Hel"}),
                                     chunk({"content": "lo"}), chunk({}, "stop"), chunk(usage=USAGE), "[DONE]")
    assert events[:3] == [ReasoningOut(0, "hm"), TextOut(0, "Hel"), TextOut(0, "lo")]
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == "stop"
    assert (finish.usage.prompt_tokens, finish.usage.completion_tokens, finish.usage.cached_tokens,
            finish.usage.reasoning_tokens) == (7, 3, 4, 1)
    assert writer.spans[0].output["content"] == "Hello" and writer.spans[0].error is None


async def test_a_call_streamed_in_pieces_opens_grows_and_closes():
    events, _ = await events_of(
        chunk({"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                               "function": {"name": "lookup", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}),
        chunk({}, "tool_calls"), chunk(usage=USAGE), "[DONE]")
    assert events == [CallStart(0, 0, "call_9", "lookup"), CallInput(0, 0, '{"q":'), CallInput(0, 0, '"x"}'),
                      CallEnd(0, 0, '{"q":"x"}'), events[-1]]
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool_calls"


async def test_a_stream_that_breaks_is_a_failure_event():
    events, writer = await events_of(chunk({"content": "Hi"}), {"error": {"message": "overloaded"}})
    assert events[0] == TextOut(0, "Hi") and isinstance(events[-1], Failure)
    assert "overloaded" in events[-1].error.message and writer.spans[0].error
