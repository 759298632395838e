"""The core's events -> the Responses stream: the full event sequence with increasing
sequence_number, deltas that concatenate to the done texts, items as Codex takes them from
output_item.done, namespaced and custom calls named as the client knows them, usage, and the
incomplete and failed endings; every stream's last event carries the same response a
non-streamed request gets."""

from __future__ import annotations

import random

import pytest

from rill.api.core.events import CallEnd, CallInput, CallStart, Finish, ReasoningOut, TextOut, Usage
from rill.api.protocols.responses.events import ResponseBuilder, item_for_search, usage_json
from rill.api.protocols.responses.tools import Names, WireTool
from rill.engine.types import TokenLogprob
from rill.errors import EngineError
from rill.search.context import Source

USAGE = Usage(prompt_tokens=10, completion_tokens=5, cached_tokens=4, reasoning_tokens=2)


def builder(names: Names | None = None, **kwargs) -> ResponseBuilder:
    response = {"id": "resp_1", "object": "response", "status": "in_progress", "output": [], "usage": None,
                "error": None, "incomplete_details": None}
    return ResponseBuilder(response, names or Names(), **kwargs)


def run(b: ResponseBuilder, events, finish=Finish(0, "stop", USAGE)) -> list[dict]:
    out = b.start()
    for event in events:
        out += b.feed(event)
    out += b.finish(finish) if isinstance(finish, Finish) else b.fail(finish)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def types(events) -> list[str]:
    return [e["type"] for e in events]


def test_a_text_answer_streams_the_whole_sequence():
    events = run(builder(), [TextOut(0, "Hel"), TextOut(0, "lo")])
    assert types(events) == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    done = events[6]
    assert "".join(deltas) == done["text"] == "Hello"
    item = events[8]["item"]
    assert item["type"] == "message" and item["role"] == "assistant" and item["status"] == "completed"
    assert item["content"] == [{"type": "output_text", "annotations": [], "logprobs": [], "text": "Hello"}]
    assert {e["item_id"] for e in events[3:8]} == {item["id"]} and item["id"].startswith("msg_")
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"] == [item]
    assert final["usage"] == {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 5,
                              "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 15}


def test_a_call_whose_arguments_stream_in_pieces():
    names = Names({"ns.spawn": WireTool("function", "spawn", "ns")})
    events = run(builder(names), [TextOut(0, "Calling."), CallStart(0, 0, "call_a", "ns.spawn"),
                                  CallInput(0, 0, '{"ta'), CallInput(0, 0, 'sk":"x"'), CallInput(0, 0, "}"),
                                  CallEnd(0, 0, '{"task":"x"}'), CallStart(0, 1, "call_b", "ns.spawn"),
                                  CallInput(0, 1, "{}"), CallEnd(0, 1, "{}")],
                 Finish(0, "tool_calls", USAGE))
    assert types(events)[8:] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    added = events[8]["item"]
    assert added == {"id": added["id"], "type": "function_call", "call_id": "call_a", "name": "spawn",
                     "arguments": "", "status": "in_progress", "namespace": "ns"}
    assert "".join(e["delta"] for e in events[9:12]) == events[12]["arguments"] == '{"task":"x"}'
    done = events[13]["item"]
    assert done == {**added, "arguments": '{"task":"x"}', "status": "completed"} and events[13]["output_index"] == 1
    assert events[17]["output_index"] == 2
    assert [i["type"] for i in events[-1]["response"]["output"]] == ["message", "function_call", "function_call"]


def test_a_custom_call_streams_its_input():
    names = Names({"apply_patch": WireTool("custom", "apply_patch")})
    events = run(builder(names), [CallStart(0, 0, "call_p", "apply_patch", custom=True),
                                  CallInput(0, 0, "*** Begin"), CallInput(0, 0, " Patch\n"),
                                  CallEnd(0, 0, "*** Begin Patch\n")], Finish(0, "tool_calls", USAGE))
    assert types(events)[2:-1] == [
        "response.output_item.added", "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done", "response.output_item.done"]
    assert events[5]["input"] == "*** Begin Patch\n"
    item = events[6]["item"]
    assert item == {"id": item["id"], "type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch",
                    "input": "*** Begin Patch\n"} and item["id"].startswith("ctc_")


def test_a_tool_search_call_carries_its_arguments_as_an_object():
    names = Names({"tool_search": WireTool("tool_search", "tool_search")})
    events = run(builder(names), [CallStart(0, 0, "call_s", "tool_search"), CallInput(0, 0, '{"query":"w"}'),
                                  CallEnd(0, 0, '{"query":"w"}')], Finish(0, "tool_calls", USAGE))
    item = events[-2]["item"]
    assert item["type"] == "tool_search_call" and item["arguments"] == {"query": "w"}
    assert item["execution"] == "client" and item["call_id"] == "call_s" and item["status"] == "completed"


def test_reasoning_then_text():
    events = run(builder(), [ReasoningOut(0, "thinking "), ReasoningOut(0, "hard"), TextOut(0, "42")])
    assert types(events)[2:9] == [
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
        "response.reasoning_text.delta", "response.reasoning_text.done", "response.content_part.done",
        "response.output_item.done"]
    reasoning = events[8]["item"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"] == []
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "thinking hard"}]
    assert [i["type"] for i in events[-1]["response"]["output"]] == ["reasoning", "message"]


def test_the_token_cap_makes_the_response_incomplete():
    events = run(builder(), [TextOut(0, "a b")], Finish(0, "length", USAGE))
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"
    # a call cut short ends incomplete, with the arguments there are
    names = Names({"f": WireTool("function", "f")})
    events = run(builder(names), [CallStart(0, 0, "c", "f"), CallInput(0, 0, '{"a":')], Finish(0, "length", USAGE))
    assert events[-3]["type"] == "response.function_call_arguments.done" and events[-3]["arguments"] == '{"a":'
    assert events[-2]["item"]["status"] == "incomplete"


def test_a_failure_is_an_error_event_then_response_failed():
    events = run(builder(), [TextOut(0, "par")], EngineError("the model failed"))
    assert types(events)[-5:] == ["response.output_text.done", "response.content_part.done",
                                  "response.output_item.done", "error", "response.failed"]
    error = next(e for e in events if e["type"] == "error")
    assert error["message"] == "the model failed" and error["code"] == "engine_error"
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": "the model failed"}


def test_logprobs_when_asked():
    entry = TokenLogprob(token=104, text="h", logprob=-0.5, top=((104, -0.5), (105, -1.5)))
    events = run(builder(logprobs=True, token_bytes=lambda t: bytes([t])), [TextOut(0, "h", (entry,))])
    expected = [{"token": "h", "bytes": [104], "logprob": -0.5, "top_logprobs": [
        {"token": "h", "bytes": [104], "logprob": -0.5}, {"token": "i", "bytes": [105], "logprob": -1.5}]}]
    delta = next(e for e in events if e["type"] == "response.output_text.delta")
    assert delta["logprobs"] == expected
    assert events[-1]["response"]["output"][0]["content"][0]["logprobs"] == expected
    plain = run(builder(), [TextOut(0, "h", (entry,))])
    assert next(e for e in plain if e["type"] == "response.output_text.delta")["logprobs"] == []


def test_obfuscation_pads_deltas_only():
    events = run(builder(obfuscate=True, rand=random.Random(1)), [TextOut(0, "x")])
    assert [e["type"] for e in events if "obfuscation" in e] == ["response.output_text.delta"]


def test_a_web_search_is_an_item_before_the_answer_and_citations_are_annotations():
    sources = (Source(1, "Rill", "https://rill.example/"),)
    b = builder(sources=sources)
    b.output.append(item_for_search("ws_1", "what is rill", sources))
    events = run(b, [TextOut(0, "Rill serves models [1].")])
    assert types(events)[2:7] == ["response.output_item.added", "response.web_search_call.in_progress",
                                  "response.web_search_call.searching", "response.web_search_call.completed",
                                  "response.output_item.done"]
    annotation = {"type": "url_citation", "url": "https://rill.example/", "title": "Rill", "start_index": 19,
                  "end_index": 22}
    added = next(e for e in events if e["type"] == "response.output_text.annotation.added")
    assert added["annotation"] == annotation and added["output_index"] == 1
    assert events[-1]["response"]["output"][1]["content"][0]["annotations"] == [annotation]


@pytest.mark.parametrize("usage", [None, USAGE])
def test_usage_json(usage):
    out = usage_json(usage)
    assert out is None if usage is None else out["total_tokens"] == 15
